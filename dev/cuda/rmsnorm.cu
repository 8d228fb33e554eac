// rmsnorm.cu — llmc/rmsnorm.cuh: CPU check, then GB/s (bytes that must move: inputs read once,
// outputs written once) at C = 4096, N = 2048 / 8192. Ceiling ~3.0 TB/s (H100) / ~4.3 TB/s (H200),
// the device-to-device copy rates measured on the H100 / H200 machines of dev/PERF.md.
#include "bench_common.cuh"
#include "llmc/rmsnorm.cuh"

static void check(int N, int C) {
    size_t n = (size_t)N * C;
    floatX *x = bench_alloc<floatX>(n, 1, 2.0f), *w = bench_alloc<floatX>(C, 2, 0.2f, 1.0f), *y = bench_alloc<floatX>(n, 3),
           *dy = bench_alloc<floatX>(n, 4), *dx = bench_alloc<floatX>(n, 5);
    float *rstd = bench_alloc<float>(N, 6), *dw = bench_alloc<float>(C, 7, 0.0f);
    auto hx = bench_host(x, n), hw = bench_host(w, C), hdy = bench_host(dy, n), hdx = bench_host(dx, n);
    std::vector<float> ry(n), rr(N), rdw(C, 0.0f);
    rmsnorm_forward_f32(ry.data(), rr.data(), hx.data(), hw.data(), N, C, 1e-5f);
    rmsnorm_backward_f32(hdx.data(), rdw.data(), hdy.data(), hx.data(), hw.data(), rr.data(), N, C);
    rmsnorm_forward(&g_ctx, y, rstd, x, w, N, C, 1e-5f);
    rmsnorm_backward(&g_ctx, dx, dw, dy, x, w, rstd, N, C);
    bench_validate("forward", y, ry.data(), n, 1e-4f);
    bench_validate("rstd", rstd, rr.data(), N, 1e-6f);
    bench_validate("backward dinp (+=)", dx, hdx.data(), n, 1e-3f);
    bench_validate("backward dweight", dw, rdw.data(), C, 1e-3f);
    cudaFree(x); cudaFree(w); cudaFree(y); cudaFree(dy); cudaFree(dx); cudaFree(rstd); cudaFree(dw);
}

int main() {
    bench_init();
    check(97, 4096);
    printf("\n%6s %6s | %9s %8s | %9s %8s\n", "N", "C", "fwd us", "GB/s", "bwd us", "GB/s");
    for (int N : {2048, 8192}) {
        int C = 4096;
        size_t n = (size_t)N * C;
        floatX *x = bench_alloc<floatX>(n, 1), *w = bench_alloc<floatX>(C, 2, 0.1f, 1.0f), *y = bench_alloc<floatX>(n, 3),
               *dy = bench_alloc<floatX>(n, 4), *dx = bench_alloc<floatX>(n, 5);
        float *rstd = bench_alloc<float>(N, 6), *dw = bench_alloc<float>(C, 7, 0.0f);
        double tf = bench_ms([&] { rmsnorm_forward(&g_ctx, y, rstd, x, w, N, C, 1e-5f); });
        double tb = bench_ms([&] { rmsnorm_backward(&g_ctx, dx, dw, dy, x, w, rstd, N, C); });
        double bf = 2.0 * n * sizeof(floatX) + N * 4.0 + C * sizeof(floatX);
        double bb = 4.0 * n * sizeof(floatX) + N * 4.0 + C * (sizeof(floatX) + 8.0);  // dy, x, dx r+w
        printf("%6d %6d | %9.1f %8.0f | %9.1f %8.0f\n", N, C, tf * 1e3, bf / tf * 1e-6, tb * 1e3, bb / tb * 1e-6);
        cudaFree(x); cudaFree(w); cudaFree(y); cudaFree(dy); cudaFree(dx); cudaFree(rstd); cudaFree(dw);
    }
    return 0;
}
