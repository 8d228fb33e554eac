// cuda_common.cuh — what every GPU file shares: the activation/weight element type floatX (bf16 or
// fp32 by PRECISION), checked CUDA/cuBLAS calls that name the failing call, device allocation that
// reports the sizes asked for on out-of-memory, and small conversion helpers.
//
// Numerics policy (docs/design.md §3): weights and activations in floatX, accumulation in fp32; norm
// statistics, softmax, losses and routing in fp32; trainable parameters keep fp32 masters, fp32
// gradients and fp32 AdamW moments; frozen parameters exist only in floatX.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include "common.h"

#if defined(ENABLE_FP32)
typedef float floatX;
#define FLOATX_DTYPE DT_F32
#define PRECISION_NAME "FP32"
#else
typedef __nv_bfloat16 floatX;
#define FLOATX_DTYPE DT_BF16
#define PRECISION_NAME "BF16"
#endif

// On a machine without a GPU the runtime's first call fails with cudaErrorInsufficientDriver, whose
// text ("CUDA driver version is insufficient for CUDA runtime version") reads like a version problem.
// Without the NVIDIA kernel driver loaded (no /proc/driver/nvidia/version) it only means "no GPU",
// and that is what we say; with the driver present it is a real version mismatch and keeps CUDA's text.
// Returns NULL for every other error.
static inline const char* cuda_no_gpu_message(cudaError_t e) {
    if (e == cudaErrorNoDevice) return "no CUDA GPU or driver found";
    if (e == cudaErrorInsufficientDriver && access("/proc/driver/nvidia/version", F_OK) != 0) return "no CUDA GPU or driver found";
    return NULL;
}

static inline void cuda_check_impl(cudaError_t e, const char* call, const char* file, int line) {
    if (e != cudaSuccess) {
        const char* no_gpu = cuda_no_gpu_message(e);
        if (no_gpu) fprintf(stderr, "error: %s; this program needs one (%s failed at %s:%d)\n", no_gpu, call, file, line);
        else fprintf(stderr, "CUDA error: %s\n  in %s\n  at %s:%d\n", cudaGetErrorString(e), call, file, line);
        exit(1);
    }
}
#define cudaCheck(call) cuda_check_impl((call), #call, __FILE__, __LINE__)

static inline void cublas_check_impl(cublasStatus_t s, const char* call, const char* file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cuBLAS error %d (%s)\n  in %s\n  at %s:%d\n", (int)s, cublasGetStatusString(s), call, file, line);
        exit(1);
    }
}
#define cublasCheck(call) cublas_check_impl((call), #call, __FILE__, __LINE__)

// Checks the last kernel launch (launch-configuration errors surface here, execution errors at the next sync).
#define cudaCheckLaunch(name) cuda_check_impl(cudaGetLastError(), name, __FILE__, __LINE__)

// Device allocation that says what it was for and how much memory there was when it fails.
static inline void* cuda_malloc_or_die(size_t bytes, const char* what) {
    void* p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        fprintf(stderr, "out of GPU memory: %s asked for %.1f MiB (%zu bytes); %.1f MiB free of %.1f MiB (%s)\n", what,
                bytes / 1048576.0, bytes, free_b / 1048576.0, total_b / 1048576.0, cudaGetErrorString(e));
        exit(1);
    }
    return p;
}

static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
static inline size_t ceil_div_sz(size_t a, size_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// Host-side copies between fp32 host arrays and floatX device arrays (tests, checkpoint I/O).
static inline void host_to_floatX(floatX* dst_dev, const float* src, size_t n) {
    if (sizeof(floatX) == sizeof(float)) { cudaCheck(cudaMemcpy(dst_dev, src, n * sizeof(float), cudaMemcpyHostToDevice)); return; }
    uint16_t* tmp = (uint16_t*)coda_malloc_or_die(n * sizeof(uint16_t), "bf16 staging");
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < (long long)n; i++) tmp[i] = f32_to_bf16(src[i]);
    cudaCheck(cudaMemcpy(dst_dev, tmp, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(tmp);
}
static inline void floatX_to_host(float* dst, const floatX* src_dev, size_t n) {
    if (sizeof(floatX) == sizeof(float)) { cudaCheck(cudaMemcpy(dst, src_dev, n * sizeof(float), cudaMemcpyDeviceToHost)); return; }
    uint16_t* tmp = (uint16_t*)coda_malloc_or_die(n * sizeof(uint16_t), "bf16 staging");
    cudaCheck(cudaMemcpy(tmp, src_dev, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(tmp[i]);
    free(tmp);
}

// matmul.cuh's cache of cuBLASLt plans (descriptors, layouts and the heuristic's algorithm choice).
// Defined there and allocated there on a context's first matmul; only the pointer lives here, so
// this file does not depend on matmul.cuh.
struct MatmulPlanCache;

// Everything a kernel launcher needs besides its tensors: the stream, the cuBLASLt handle and its
// workspace, and the matmul plans made for them. Passed explicitly (no globals) so several
// models/streams/devices can coexist.
typedef struct {
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void* workspace;
    size_t workspace_size;
    int sm_count;
    // Per context, not global: a plan's algorithm was chosen by the heuristic for this context's
    // handle, device and workspace, so with one context per rank/device no context may use
    // another's plans. NULL until the first matmul; gpu_context_free frees it through
    // matmul_plans_free (set by matmul.cuh with it).
    struct MatmulPlanCache* matmul_plans;
    void (*matmul_plans_free)(struct MatmulPlanCache*);
} GpuContext;

static inline void gpu_context_init(GpuContext* ctx) {
    memset(ctx, 0, sizeof(*ctx));
    cudaCheck(cudaStreamCreate(&ctx->stream));
    cublasCheck(cublasLtCreate(&ctx->lt));
    ctx->workspace_size = 32u << 20;  // cuBLASLt's recommendation for Hopper
    ctx->workspace = cuda_malloc_or_die(ctx->workspace_size, "cuBLASLt workspace");
    int dev = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&ctx->sm_count, cudaDevAttrMultiProcessorCount, dev));
}
static inline void gpu_context_free(GpuContext* ctx) {
    if (ctx->matmul_plans) ctx->matmul_plans_free(ctx->matmul_plans);  // before the handle they were made with
    cudaCheck(cudaFree(ctx->workspace));
    cublasCheck(cublasLtDestroy(ctx->lt));
    cudaCheck(cudaStreamDestroy(ctx->stream));
    memset(ctx, 0, sizeof(*ctx));
}
