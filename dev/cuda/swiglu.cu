// swiglu.cu — llmc/swiglu.cuh: CPU check, then GB/s at n = N * 14336 (Mistral-7B FFN), N = 2048 / 8192.
#include "bench_common.cuh"
#include "llmc/swiglu.cuh"

int main() {
    bench_init();
    {
        size_t n = 3 * 14336 + 8;
        floatX *g = bench_alloc<floatX>(n, 1, 4.0f), *u = bench_alloc<floatX>(n, 2), *a = bench_alloc<floatX>(n, 3),
               *da = bench_alloc<floatX>(n, 4), *dg = bench_alloc<floatX>(n, 5), *du = bench_alloc<floatX>(n, 6);
        auto hg = bench_host(g, n), hu = bench_host(u, n), hda = bench_host(da, n);
        std::vector<float> ra(n), rdg(n, 0.0f), rdu(n, 0.0f);
        swiglu_forward_f32(ra.data(), hg.data(), hu.data(), n);
        swiglu_backward_f32(rdg.data(), rdu.data(), hda.data(), hg.data(), hu.data(), n);
        swiglu_forward(&g_ctx, a, g, u, n);
        swiglu_backward(&g_ctx, dg, du, da, g, u, n);
        bench_validate("forward", a, ra.data(), n, 1e-5f);
        bench_validate("backward dgate", dg, rdg.data(), n, 1e-5f);
        bench_validate("backward dup", du, rdu.data(), n, 1e-5f);
        cudaFree(g); cudaFree(u); cudaFree(a); cudaFree(da); cudaFree(dg); cudaFree(du);
    }
    printf("\n%6s %6s | %9s %8s | %9s %8s\n", "N", "F", "fwd us", "GB/s", "bwd us", "GB/s");
    for (int N : {2048, 8192}) {
        size_t n = (size_t)N * 14336;
        floatX *g = bench_alloc<floatX>(n, 1, 4.0f), *u = bench_alloc<floatX>(n, 2), *a = bench_alloc<floatX>(n, 3),
               *da = bench_alloc<floatX>(n, 4), *dg = bench_alloc<floatX>(n, 5), *du = bench_alloc<floatX>(n, 6);
        double tf = bench_ms([&] { swiglu_forward(&g_ctx, a, g, u, n); });
        double tb = bench_ms([&] { swiglu_backward(&g_ctx, dg, du, da, g, u, n); });
        printf("%6d %6d | %9.1f %8.0f | %9.1f %8.0f\n", N, 14336, tf * 1e3, 3.0 * n * sizeof(floatX) / tf * 1e-6, tb * 1e3,
               5.0 * n * sizeof(floatX) / tb * 1e-6);
        cudaFree(g); cudaFree(u); cudaFree(a); cudaFree(da); cudaFree(dg); cudaFree(du);
    }
    return 0;
}
