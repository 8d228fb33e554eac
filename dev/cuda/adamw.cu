// adamw.cu — llmc/adamw.cuh: CPU check (a loop twin of model_adamw_step), then GB/s at the Phase-1
// trainable size of Mistral-7B (q/k/v/o of 32 layers: 1,342,177,280 fp32 masters) and at 100M.
// Bytes per parameter: read master, grad, m, v (16) + write master, m, v (12) + floatX param.
#include "bench_common.cuh"
#include "llmc/adamw.cuh"

int main() {
    bench_init();
    {
        size_t n = 100003;
        float *p = bench_alloc<float>(n, 1), *g = bench_alloc<float>(n, 2), *m = bench_alloc<float>(n, 3, 0.1f),
              *v = bench_alloc<float>(n, 4, 0.01f, 0.01f);
        floatX* px = bench_alloc<floatX>(n, 5);
        auto hp = bench_host(p, n), hg = bench_host(g, n), hm = bench_host(m, n), hv = bench_host(v, n);
        int step = 3;
        float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.7f;
        double bc1 = 1 - pow((double)b1, step), bc2 = 1 - pow((double)b2, step);
        for (size_t i = 0; i < n; i++) {
            double gg = (double)hg[i] * gs, mm = b1 * (double)hm[i] + (1 - (double)b1) * gg,
                   vv = b2 * (double)hv[i] + (1 - (double)b2) * gg * gg;
            double pp = hp[i] * (1 - (double)lr * wd);
            hp[i] = (float)(pp - lr * (mm / bc1) / (sqrt(vv / bc2) + eps));
        }
        adamw_update(&g_ctx, p, px, g, m, v, n, lr, b1, b2, eps, wd, gs, step);
        bench_validate("master", p, hp.data(), n, 1e-6f);
        bench_validate("param (floatX)", px, hp.data(), n, 1e-6f);
        cudaFree(p); cudaFree(g); cudaFree(m); cudaFree(v); cudaFree(px);
    }
    printf("\n%12s | %9s %8s\n", "n", "ms", "GB/s");
    for (size_t n : {(size_t)100000000, (size_t)1342177280}) {
        float *p = bench_alloc<float>(n, 1), *g = bench_alloc<float>(n, 2), *m = bench_alloc<float>(n, 3, 0.1f),
              *v = bench_alloc<float>(n, 4, 0.01f, 0.01f);
        floatX* px = bench_alloc<floatX>(n, 5);
        int step = 1;
        double t = bench_ms([&] { adamw_update(&g_ctx, p, px, g, m, v, n, 1e-5f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f, ++step); }, 5);
        printf("%12zu | %9.3f %8.0f\n", n, t, (28.0 + sizeof(floatX)) * n / t * 1e-6);
        cudaFree(p); cudaFree(g); cudaFree(m); cudaFree(v); cudaFree(px);
    }
    return 0;
}
