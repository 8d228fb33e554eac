// classifier.cu — benchmark of llmc/classifier.cuh (llm.c style: CPU check, then timing).
//   make classifier && ./classifier
// Fused cross-entropy in place on floatX logits: forward only (losses) and forward + backward
// (losses and dlogits written over the logits); effective bandwidth counts one read of the logits
// (forward) or read, re-read and write (forward + backward).
#include <algorithm>
#include <vector>
#include "dev/cuda/bench_common.cuh"
#include "dev/test/harness.h"
#include "dev/test/test_gpu_attention.cuh"

int main(int argc, char** argv) {
    const int reps = bench_int_arg(argc, argv, 1, "reps", 10, 1, 100000);
    bench_init();
    GpuContext* ctx = &g_ctx;
    {
        double wl = 0, wd = 0;
        g_current_failures = 0;
        gce_check(ctx, 7, 32000, 11, &wl, &wd);
        gce_check(ctx, 5, 32768, 12, &wl, &wd);
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
            bench_fill(logits, nv, 0, 8.0f);
            double f = bench_ms([&]() { crossentropy_fused(ctx, logits, losses, targets, n, V, 0.0f); }, reps);
            // in place: each repetition refills (outside the timing would need separate events; refill is
            // a separate kernel so time fill+ce and subtract the fill)
            double fill = bench_ms([&]() { bench_fill(logits, nv, 0, 8.0f); }, reps);
            double fb = bench_ms([&]() {
                bench_fill(logits, nv, 0, 8.0f);
                crossentropy_fused(ctx, logits, losses, targets, n, V, 1.0f / n);
            }, reps) - fill;
            double bytes = (double)nv * sizeof(floatX);
            printf("| %d | %d | %.3f | %.0f | %.3f | %.0f |\n", n, V, f, bytes / f * 1e-6, fb, 3 * bytes / fb * 1e-6);
            cudaCheck(cudaFree(logits)); cudaCheck(cudaFree(losses)); cudaCheck(cudaFree(targets));
        }
    return 0;
}
