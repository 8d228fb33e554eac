// test_coda.cu — the GPU test suite (nvcc): kernels, attention, the whole GPU model, checkpoints.
// GPU tests run only when a CUDA device is present and are reported as SKIPPED otherwise; the CPU
// tests live in test_cpu.cpp (host compiler only). `make test` runs both. Usage: ./test_coda
// [name-filter]. Ends with "N passed, M failed, K skipped".
#include <cuda_runtime.h>
#include "dev/test/harness.h"
// GPU test files, one #include each (new ones go at the end of this list).
#include "dev/test/test_gpu_kernels.cuh"
#include "dev/test/test_gpu_attention.cuh"
#include "dev/test/test_gpu_banks.cuh"  // llmc/bank_scan.cuh: the bank scan vs the CPU reference
#include "dev/test/test_gpu_model.cuh"
#include "dev/test/test_gpu_bounded.cuh"
#include "dev/test/test_gpu_infer.cuh"
#include "dev/test/test_gpu_decode.cuh"  // llmc/decode.cuh: GPU decode, KV cache, state files vs the CPU reference
#include "dev/test/test_gpu_nccl.cuh"  // llmc/nccl.cuh: the communicator and collectives with one rank

// Probes for a usable GPU. Any error (no driver, no device) means "no GPU": CI machines have none.
static int gpu_available(char* reason, size_t len) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    const char* no_gpu = cuda_no_gpu_message(e);  // llmc/cuda_common.cuh: "no CUDA GPU or driver found"
    if (no_gpu) { snprintf(reason, len, "%s", no_gpu); return 0; }
    if (e != cudaSuccess) { snprintf(reason, len, "cudaGetDeviceCount: %s", cudaGetErrorString(e)); return 0; }
    if (n == 0) { snprintf(reason, len, "no CUDA device"); return 0; }
    return 1;
}

int main(int argc, char** argv) {
    test_help_if_asked(argc, argv, "the GPU tests (each SKIPs without a GPU)");
    const char* filter = argc > 1 ? argv[1] : NULL;
    char reason[256] = "";
    int have_gpu = gpu_available(reason, sizeof(reason));
    if (have_gpu) {
        cudaDeviceProp prop;
        cudaGetDeviceProperties(&prop, 0);
        printf("GPU: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    } else {
        printf("no GPU (%s): GPU tests will be SKIPPED\n", reason);
    }
    int failed = run_tests(filter, have_gpu, reason);
    return failed ? 1 : 0;
}
