// encoder.cu — llmc/encoder.cuh: CPU check, then time of the embedding forward (GB/s of the copy)
// and the deterministic backward (sort + per-token sums) at N = 2048 / 8192, C = 4096, V = 32000,
// with uniform tokens and with half the tokens equal (the worst case for one-block-per-token).
#include "bench_common.cuh"
#include "llmc/encoder.cuh"

static std::vector<int> make_tokens(int N, int V, int skew, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    std::vector<int> t(N);
    for (int i = 0; i < N; i++) t[i] = (skew && rng_uniform(&r) < 0.5) ? 1 : (int)rng_below(&r, V);
    return t;
}

int main() {
    bench_init();
    {
        int N = 513, C = 256, V = 100;
        auto tok = make_tokens(N, V, 1, 1);
        int* dt = (int*)cuda_malloc_or_die(N * 4, "tokens");
        cudaCheck(cudaMemcpy(dt, tok.data(), N * 4, cudaMemcpyHostToDevice));
        floatX *emb = bench_alloc<floatX>((size_t)V * C, 2), *out = bench_alloc<floatX>((size_t)N * C, 3),
               *dout = bench_alloc<floatX>((size_t)N * C, 4);
        float* demb = bench_alloc<float>((size_t)V * C, 5, 0.0f);
        size_t sb = encoder_backward_scratch_bytes(N, V);
        void* scratch = cuda_malloc_or_die(sb, "scratch");
        auto he = bench_host(emb, (size_t)V * C), hd = bench_host(dout, (size_t)N * C);
        std::vector<float> ro((size_t)N * C), rd((size_t)V * C, 0.0f);
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) { ro[(size_t)n * C + c] = he[(size_t)tok[n] * C + c]; rd[(size_t)tok[n] * C + c] += hd[(size_t)n * C + c]; }
        encoder_forward(&g_ctx, out, dt, emb, N, C);
        encoder_backward(&g_ctx, demb, dout, dt, N, C, V, scratch, sb);
        bench_validate("forward", out, ro.data(), ro.size(), 0.0f);
        bench_validate("backward demb", demb, rd.data(), rd.size(), 1e-4f);
        cudaFree(dt); cudaFree(emb); cudaFree(out); cudaFree(dout); cudaFree(demb); cudaFree(scratch);
    }
    printf("\n%6s %6s %6s %5s | %9s %8s | %9s\n", "N", "C", "V", "skew", "fwd us", "GB/s", "bwd us");
    for (int N : {2048, 8192})
        for (int skew = 0; skew < 2; skew++) {
            int C = 4096, V = 32000;
            auto tok = make_tokens(N, V, skew, 7);
            int* dt = (int*)cuda_malloc_or_die(N * 4, "tokens");
            cudaCheck(cudaMemcpy(dt, tok.data(), N * 4, cudaMemcpyHostToDevice));
            floatX *emb = bench_alloc<floatX>((size_t)V * C, 2), *out = bench_alloc<floatX>((size_t)N * C, 3),
                   *dout = bench_alloc<floatX>((size_t)N * C, 4);
            float* demb = bench_alloc<float>((size_t)V * C, 5, 0.0f);
            size_t sb = encoder_backward_scratch_bytes(N, V);
            void* scratch = cuda_malloc_or_die(sb, "scratch");
            double tf = bench_ms([&] { encoder_forward(&g_ctx, out, dt, emb, N, C); });
            double tb = bench_ms([&] { encoder_backward(&g_ctx, demb, dout, dt, N, C, V, scratch, sb); });
            printf("%6d %6d %6d %5d | %9.1f %8.0f | %9.1f\n", N, C, V, skew, tf * 1e3, 2.0 * N * C * sizeof(floatX) / tf * 1e-6,
                   tb * 1e3);
            cudaFree(dt); cudaFree(emb); cudaFree(out); cudaFree(dout); cudaFree(demb); cudaFree(scratch);
        }
    return 0;
}
