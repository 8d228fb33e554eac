// rope.cu — llmc/rope.cuh: CPU check, then GB/s (read + write of x) for q (H = 32) and k (H = 8) at
// Dh = 128, N = 2048 / 8192, both layouts, base 1e6.
#include "bench_common.cuh"
#include "llmc/rope.cuh"

static void check(int T, long long pos0, int H, int Dh, RopeLayout layout) {
    size_t n = (size_t)T * H * Dh;
    floatX* x = bench_alloc<floatX>(n, 1);
    auto hx = bench_host(x, n);
    std::vector<float> c((size_t)T * Dh / 2), s((size_t)T * Dh / 2);
    rope_tables_f32(c.data(), s.data(), pos0, T, Dh, 1e6, 0);
    rope_apply_f32(hx.data(), c.data(), s.data(), T, H, Dh, layout, 1);
    rope_apply(&g_ctx, x, T, T, pos0, H, Dh, layout, 1e6, 0, 1);
    bench_validate(layout == ROPE_INTERLEAVED ? "rope interleaved" : "rope half-split", x, hx.data(), n, 1e-5f);
    cudaFree(x);
}

int main() {
    bench_init();
    check(300, 8000, 8, 128, ROPE_HALF_SPLIT);
    check(77, 0, 4, 64, ROPE_INTERLEAVED);
    printf("\n%6s %4s %4s %-11s | %9s %8s\n", "N", "H", "Dh", "layout", "us", "GB/s");
    for (int N : {2048, 8192})
        for (int H : {32, 8})
            for (int L = 0; L < 2; L++) {
                int Dh = 128;
                size_t n = (size_t)N * H * Dh;
                floatX* x = bench_alloc<floatX>(n, 2);
                double t = bench_ms([&] { rope_apply(&g_ctx, x, N, N, 0, H, Dh, (RopeLayout)L, 1e6, 0, 1); });
                printf("%6d %4d %4d %-11s | %9.1f %8.0f\n", N, H, Dh, L ? "interleaved" : "half-split", t * 1e3,
                       2.0 * n * sizeof(floatX) / t * 1e-6);
                cudaFree(x);
            }
    return 0;
}
