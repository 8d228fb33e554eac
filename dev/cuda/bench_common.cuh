// bench_common.cuh — shared by the dev/cuda benchmarks: a GpuContext, device-side random fill,
// event timing with an L2 flush before every repetition (median of reps), and result checking
// against the CPU reference in llm.c's validate_result style.
#pragma once
#include <algorithm>
#include <vector>
#include "llmc/cli.h"
#include "llmc/cpu/reference.h"
#include "llmc/cuda_common.cuh"

static GpuContext g_ctx;
static void* g_flush_buf = NULL;
static size_t g_flush_bytes = 256u << 20;  // > L2 of H100 (50 MB) and H200 (60 MB)

// Positional argument i of a benchmark as an integer in [lo, hi], def when absent. Malformed or out of
// range (atoi would have read "1e3" as 1 and "x" as 0) ends the program with llmc/cli.h's message.
static int bench_int_arg(int argc, char** argv, int i, const char* name, int def, long long lo, long long hi) {
    if (argc <= i) return def;
    int v = def;
    const CliFlag f = cli_int(name, &v, lo, hi, "N", "");
    CodaError err;
    if (cli_parse_value(&f, argv[i], &err) != 0) {
        fprintf(stderr, "%s: argument %d (%s)\n", argv[0], i, err.msg);
        exit(2);
    }
    return v;
}

static void bench_init(void) {
    gpu_context_init(&g_ctx);
    g_flush_buf = cuda_malloc_or_die(g_flush_bytes, "L2 flush buffer");
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, 0));
    printf("device: %s, %d SMs, L2 %d MB, precision %s\n", p.name, p.multiProcessorCount, p.l2CacheSize >> 20, PRECISION_NAME);
}

__device__ __forceinline__ uint32_t bench_hash(uint64_t i, uint32_t seed) {
    uint64_t z = i * 0x9E3779B97F4A7C15ull + seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)(z ^ (z >> 31));
}
template <class T>
__global__ void bench_fill_kernel(T* x, size_t n, uint32_t seed, float scale, float offset) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = from_float<T>(offset + scale * ((bench_hash(i, seed) >> 8) * (1.0f / 16777216.0f) - 0.5f) * 2.0f);
}
// Uniform in [offset - scale, offset + scale).
template <class T>
static void bench_fill(T* x, size_t n, uint32_t seed, float scale = 1.0f, float offset = 0.0f) {
    bench_fill_kernel<T><<<1024, 256, 0, g_ctx.stream>>>(x, n, seed, scale, offset);  // on the timed stream
    cudaCheck(cudaGetLastError());
}
template <class T>
static T* bench_alloc(size_t n, uint32_t seed, float scale = 1.0f, float offset = 0.0f) {
    T* p = (T*)cuda_malloc_or_die(n * sizeof(T), "benchmark tensor");
    bench_fill(p, n, seed, scale, offset);
    return p;
}

// Median time in ms of fn() over reps, L2 flushed before each (outside the timed region).
template <class F>
static double bench_ms(F fn, int reps = 20) {
    fn(); fn();  // warm-up: plan creation, heuristics, module load
    cudaCheck(cudaDeviceSynchronize());
    cudaEvent_t a, b;
    cudaCheck(cudaEventCreate(&a));
    cudaCheck(cudaEventCreate(&b));
    std::vector<float> t;
    for (int r = 0; r < reps; r++) {
        cudaCheck(cudaMemsetAsync(g_flush_buf, r & 0xff, g_flush_bytes, g_ctx.stream));
        cudaCheck(cudaEventRecord(a, g_ctx.stream));
        fn();
        cudaCheck(cudaEventRecord(b, g_ctx.stream));
        cudaCheck(cudaEventSynchronize(b));
        float ms;
        cudaCheck(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    cudaCheck(cudaEventDestroy(a));
    cudaCheck(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// Compares a device floatX or fp32 buffer with a host reference: |d| <= tol + eps*|ref| (llm.c's
// validate_result with eps = 2^-8 for bf16, 1e-5 for fp32 outputs). Exits on failure.
template <class T>
static void bench_validate(const char* what, const T* dev, const float* ref, size_t n, float tol) {
    std::vector<float> h(n);
    cudaCheck(cudaDeviceSynchronize());
    if (sizeof(T) == sizeof(float)) cudaCheck(cudaMemcpy(h.data(), dev, n * 4, cudaMemcpyDeviceToHost));
    else floatX_to_host(h.data(), (const floatX*)dev, n);
    double eps = sizeof(T) == 2 ? 1.0 / 256 : 1e-5, maxerr = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)h[i] - ref[i]);
        maxerr = fmax(maxerr, d);
        if (!(d <= tol + eps * fabs((double)ref[i]))) { if (bad < 5) printf("  mismatch %s[%zu]: %g vs %g\n", what, i, h[i], ref[i]); bad++; }
    }
    printf("check %-28s n=%-9zu max|diff|=%.3g %s\n", what, n, maxerr, bad ? "FAIL" : "ok");
    if (bad) exit(1);
}
// Host copy of a device tensor as floats.
template <class T>
static std::vector<float> bench_host(const T* dev, size_t n) {
    std::vector<float> h(n);
    cudaCheck(cudaDeviceSynchronize());
    if (sizeof(T) == sizeof(float)) cudaCheck(cudaMemcpy(h.data(), dev, n * 4, cudaMemcpyDeviceToHost));
    else floatX_to_host(h.data(), (const floatX*)dev, n);
    return h;
}
