// elementwise.cu — llmc/global_norm.cuh and llmc/elementwise.cuh: CPU check, then GB/s of the
// squared-norm reduction (Phase-1 trainable size and 100M), residual add and the conversions at
// N = 8192, C = 4096.
#include "bench_common.cuh"
#include "llmc/elementwise.cuh"
#include "llmc/global_norm.cuh"

int main() {
    bench_init();
    float* scalar = (float*)cuda_malloc_or_die(4, "scalar");
    {
        size_t n = 1000003;
        float* x = bench_alloc<float>(n, 1);
        auto h = bench_host(x, n);
        double ss = 0;
        for (float v : h) ss += (double)v * v;
        global_norm_squared(&g_ctx, scalar, x, n, 0);
        float g = global_norm_read(&g_ctx, scalar);
        printf("check global_norm: %.9g vs %.9g %s\n", g, ss, fabs(g - ss) <= 1e-5 * ss ? "ok" : "FAIL");
        if (!(fabs(g - ss) <= 1e-5 * ss)) return 1;
        floatX *a = bench_alloc<floatX>(n, 2), *b = bench_alloc<floatX>(n, 3), *o = bench_alloc<floatX>(n, 4);
        auto ha = bench_host(a, n), hb = bench_host(b, n);
        std::vector<float> r(n);
        for (size_t i = 0; i < n; i++) r[i] = sizeof(floatX) == 2 ? round_bf16(ha[i] + hb[i]) : ha[i] + hb[i];
        residual_add(&g_ctx, o, a, b, n);
        bench_validate("residual_add", o, r.data(), n, 0.0f);
        cudaFree(x); cudaFree(a); cudaFree(b); cudaFree(o);
    }
    printf("\n%-20s %12s | %9s %8s\n", "kernel", "n", "us", "GB/s");
    for (size_t n : {(size_t)100000000, (size_t)1342177280}) {
        float* x = bench_alloc<float>(n, 1);
        double t = bench_ms([&] { global_norm_squared(&g_ctx, scalar, x, n, 0); }, 10);
        printf("%-20s %12zu | %9.1f %8.0f\n", "global_norm_squared", n, t * 1e3, 4.0 * n / t * 1e-6);
        cudaFree(x);
    }
    size_t n = (size_t)8192 * 4096;
    floatX *a = bench_alloc<floatX>(n, 2), *b = bench_alloc<floatX>(n, 3);
    float* f = bench_alloc<float>(n, 4);
    double t = bench_ms([&] { residual_add(&g_ctx, a, a, b, n); });
    printf("%-20s %12zu | %9.1f %8.0f\n", "residual_add", n, t * 1e3, 3.0 * n * sizeof(floatX) / t * 1e-6);
    t = bench_ms([&] { floatX_to_float(&g_ctx, f, a, n); });
    printf("%-20s %12zu | %9.1f %8.0f\n", "floatX_to_float", n, t * 1e3, (4.0 + sizeof(floatX)) * n / t * 1e-6);
    t = bench_ms([&] { float_to_floatX(&g_ctx, a, f, n); });
    printf("%-20s %12zu | %9.1f %8.0f\n", "float_to_floatX", n, t * 1e3, (4.0 + sizeof(floatX)) * n / t * 1e-6);
    t = bench_ms([&] { fill_zero_float(&g_ctx, f, n); });
    printf("%-20s %12zu | %9.1f %8.0f\n", "fill_zero_float", n, t * 1e3, 4.0 * n / t * 1e-6);
    return 0;
}
