// matmul.cu — llmc/matmul.cuh (cuBLASLt): CPU check, then TFLOP/s of forward, backward-input and
// backward-weight (fp32 dW, beta = 1) at the Mistral-7B projection shapes, N = 2048 and 8192 tokens.
// Ceiling: ~790-800 TFLOP/s, the rate of an 8192^3 bf16 cuBLAS product on the H100/H200s of dev/PERF.md.
#include "bench_common.cuh"
#include "llmc/matmul.cuh"

static void check(int N, int I, int O) {
    size_t nx = (size_t)N * I, nw = (size_t)O * I, ny = (size_t)N * O;
    floatX *x = bench_alloc<floatX>(nx, 1), *w = bench_alloc<floatX>(nw, 2, 0.05f), *b = bench_alloc<floatX>(O, 3),
           *y = bench_alloc<floatX>(ny, 4), *dx = bench_alloc<floatX>(nx, 5);
    float *dw = bench_alloc<float>(nw, 6, 0.0f), *db = bench_alloc<float>(O, 7, 0.0f);
    std::vector<float> hx = bench_host(x, nx), hw = bench_host(w, nw), hb = bench_host(b, O), hdy = bench_host(y, ny);
    std::vector<float> ref(ny), rdx(nx, 0.0f), rdw(nw, 0.0f), rdb(O, 0.0f);
    // backward first (y holds dy), then forward overwrites y
    matmul_backward_f32(rdx.data(), rdw.data(), rdb.data(), hdy.data(), hx.data(), hw.data(), N, I, O);
    matmul_backward_input(&g_ctx, dx, y, w, N, I, O, 0);
    matmul_backward_weight(&g_ctx, dw, db, y, x, N, I, O, 1);
    bench_validate("backward_input", dx, rdx.data(), nx, 1e-2f);
    bench_validate("backward_weight dW", dw, rdw.data(), nw, 1e-2f);
    bench_validate("backward_weight dbias", db, rdb.data(), O, 1e-2f);
    matmul_forward_f32(ref.data(), hx.data(), hw.data(), hb.data(), N, I, O);
    matmul_forward(&g_ctx, y, x, w, b, N, I, O);
    bench_validate("forward (+bias)", y, ref.data(), ny, 1e-2f);
    cudaFree(x); cudaFree(w); cudaFree(b); cudaFree(y); cudaFree(dx); cudaFree(dw); cudaFree(db);
}

int main() {
    bench_init();
    check(67, 512, 320);
    struct { const char* name; int I, O; } shapes[] = {
        {"q / o proj", 4096, 4096}, {"k / v proj", 4096, 1024}, {"gate / up", 4096, 14336},
        {"down", 14336, 4096}, {"lm head", 4096, 32000},
    };
    printf("\n%-12s %6s %6s %6s | %9s %8s | %9s %8s | %9s %8s\n", "shape", "N", "I", "O", "fwd ms", "TFLOP/s", "dinp ms",
           "TFLOP/s", "dW ms", "TFLOP/s");
    for (int N : {2048, 8192}) {
        for (auto& s : shapes) {
            size_t nx = (size_t)N * s.I, nw = (size_t)s.O * s.I, ny = (size_t)N * s.O;
            floatX *x = bench_alloc<floatX>(nx, 11), *w = bench_alloc<floatX>(nw, 12, 0.02f), *y = bench_alloc<floatX>(ny, 13),
                   *dx = bench_alloc<floatX>(nx, 14);
            float* dw = bench_alloc<float>(nw, 15, 0.0f);
            double flop = 2.0 * N * s.I * s.O;
            double tf = bench_ms([&] { matmul_forward(&g_ctx, y, x, w, NULL, N, s.I, s.O); }, 10);
            double tb = bench_ms([&] { matmul_backward_input(&g_ctx, dx, y, w, N, s.I, s.O, 0); }, 10);
            double tw = bench_ms([&] { matmul_backward_weight(&g_ctx, dw, NULL, y, x, N, s.I, s.O, 1); }, 10);
            printf("%-12s %6d %6d %6d | %9.3f %8.1f | %9.3f %8.1f | %9.3f %8.1f\n", s.name, N, s.I, s.O, tf,
                   flop / tf * 1e-9, tb, flop / tb * 1e-9, tw, flop / tw * 1e-9);
            cudaFree(x); cudaFree(w); cudaFree(y); cudaFree(dx); cudaFree(dw);
        }
    }
    // pointer alignment: the same q-proj forward with the weight at an element offset (a tensor of a
    // parameter table whose earlier tensors have odd sizes)
    for (int off : {0, 1, 4, 8, 128}) {
        int N = 8192, I = 4096, O = 4096;
        floatX *x = bench_alloc<floatX>((size_t)N * I, 11), *wb = bench_alloc<floatX>((size_t)O * I + off, 12, 0.02f),
               *y = bench_alloc<floatX>((size_t)N * O, 13);
        double t = bench_ms([&] { matmul_forward(&g_ctx, y, x, wb + off, NULL, N, I, O); }, 10);
        printf("q proj fwd N=%d, weight offset %3d elements (%3d-byte aligned): %.3f ms, %.1f TFLOP/s\n", N, off,
               matmul_ptr_align(wb + off), t, 2.0 * N * I * O / t * 1e-9);
        cudaFree(x); cudaFree(wb); cudaFree(y);
    }
    // bias-gradient reduction alone (lambda projection: O = n_heads; and a wide one)
    for (int O : {32, 4096}) {
        int N = 8192;
        floatX* dy = bench_alloc<floatX>((size_t)N * O, 21);
        float* db = bench_alloc<float>(O, 22, 0.0f);
        double t = bench_ms([&] { matmul_backward_weight(&g_ctx, NULL, db, dy, NULL, N, 0, O, 1); }, 20);
        printf("dbias only N=%d O=%d: %.3f ms, %.0f GB/s\n", N, O, t, (double)N * O * sizeof(floatX) / t * 1e-6);
        cudaFree(dy); cudaFree(db);
    }
    return 0;
}
