// classifier.cu — benchmark of llmc/classifier.cuh (llm.c style: CPU check, then timing).
//   make classifier && ./classifier
// Fused cross-entropy in place on floatX logits: forward only (losses) and forward + backward
// (losses and dlogits written over the logits); effective bandwidth counts one read of the logits
// (forward) or read, re-read and write (forward + backward).
#include <algorithm>
#include <vector>
#include "dev/test/harness.h"
#include "dev/test/test_gpu_attention.cuh"

template <class F>
static double ce_bench_ms(cudaStream_t st, F fn, int reps) {
    fn();
    cudaCheck(cudaStreamSynchronize(st));
    cudaEvent_t a, b;
    cudaCheck(cudaEventCreate(&a));
    cudaCheck(cudaEventCreate(&b));
    std::vector<float> t;
    for (int r = 0; r < reps; r++) {
        cudaCheck(cudaEventRecord(a, st));
        fn();
        cudaCheck(cudaEventRecord(b, st));
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

__global__ void ce_bench_fill(floatX* x, size_t n, float scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = i * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        x[i] = from_float<floatX>(scale * (((uint32_t)(z >> 40)) * (1.0f / 16777216.0f) * 2.0f - 1.0f));
    }
}

int main(int argc, char** argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 10;
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, 0));
    printf("device: %s, %d SMs, precision %s\n", p.name, p.multiProcessorCount, PRECISION_NAME);
    GpuContext ctx;
    gpu_context_init(&ctx);
    {
        double wl = 0, wd = 0;
        g_current_failures = 0;
        gce_check(&ctx, 7, 32000, 11, &wl, &wd);
        gce_check(&ctx, 5, 32768, 12, &wl, &wd);
        if (g_current_failures) { printf("CPU check FAILED\n"); return 1; }
        printf("CPU check ok\n");
    }
    printf("\n| rows | V | fwd ms | fwd GB/s | fwd+bwd ms | fwd+bwd GB/s |\n|---|---|---|---|---|---|\n");
    const int rows[2] = {4096, 8192}, Vs[2] = {32000, 32768};
    for (int ri = 0; ri < 2; ri++)
        for (int vi = 0; vi < 2; vi++) {
            int n = rows[ri], V = Vs[vi];
            size_t nv = (size_t)n * V;
            floatX* logits = (floatX*)cuda_malloc_or_die(nv * sizeof(floatX), "logits");
            float* losses = (float*)cuda_malloc_or_die(n * sizeof(float), "losses");
            int* targets = (int*)cuda_malloc_or_die(n * sizeof(int), "targets");
            std::vector<int> ht(n);
            for (int i = 0; i < n; i++) ht[i] = (int)(((uint64_t)i * 2654435761u) % V);
            cudaCheck(cudaMemcpy(targets, ht.data(), n * sizeof(int), cudaMemcpyHostToDevice));
            ce_bench_fill<<<1024, 256>>>(logits, nv, 8.0f);
            cudaCheck(cudaGetLastError());
            double f = ce_bench_ms(ctx.stream, [&]() { crossentropy_fused(&ctx, logits, losses, targets, n, V, 0.0f); }, reps);
            // in place: each repetition refills (outside the timing would need separate events; refill is
            // a separate kernel so time fill+ce and subtract the fill)
            double fill = ce_bench_ms(ctx.stream, [&]() { ce_bench_fill<<<1024, 256, 0, ctx.stream>>>(logits, nv, 8.0f); }, reps);
            double fb = ce_bench_ms(ctx.stream, [&]() {
                ce_bench_fill<<<1024, 256, 0, ctx.stream>>>(logits, nv, 8.0f);
                crossentropy_fused(&ctx, logits, losses, targets, n, V, 1.0f / n);
            }, reps) - fill;
            double bytes = (double)nv * sizeof(floatX);
            printf("| %d | %d | %.3f | %.0f | %.3f | %.0f |\n", n, V, f, bytes / f * 1e-6, fb, 3 * bytes / fb * 1e-6);
            cudaCheck(cudaFree(logits)); cudaCheck(cudaFree(losses)); cudaCheck(cudaFree(targets));
        }
    gpu_context_free(&ctx);
    return 0;
}
