// decode.cu — benchmark of llmc/decode.cuh (llm.c style: CPU check, then timing).
//   make decode && ./decode [contexts=2048,8192,32768,131072] [steps=64] [step-only]
// step-only: only the default bounded step at each length (no CPU check, gemv table, variants,
// cuBLASLt or unbounded rows), for a per-kernel profile of the step as the graph runs it:
//   ncu --clock-control none --metrics gpu__time_duration.sum -k regex:'gemv|decode_' ./decode 2048 3 step-only > ncu.txt
//   python3 dev/cuda/ncu_table.py ncu.txt
// 1. CPU check: the write kernel against bank_write_one (bitwise), and the whole decode step against
//    the CPU session (dev/test/test_gpu_decode.cuh's cases).
// 2. The card's copy bandwidth (cudaMemcpy device to device of 4 GiB; read + write counted); one row
//    times each Mistral-7B weight shape, gemv.cuh next to cuBLASLt (and the MLP's fused gate+up+SwiGLU
//    next to two matmuls and the SwiGLU kernel), and a plain read of the same bytes (the ceiling of
//    one launch).
// 3. Per context length N, at the Mistral-7B shape (CoDA, B = 1, bf16 weights drawn on the device):
//    * bounded (the paper's medium state W=256 Me=64 Ms=64, block 256): prefill N random tokens
//      through the model (the chunked prefill), then `steps` decode steps (the CUDA graph);
//    * unbounded: a KV cache of N + steps rows whose first N rows are filled with random values
//      (the decode step's cost does not depend on their values; a real 128K-token causal prefill
//      would cost this benchmark ~40 s), then the same steps;
//    * per step: ms, tokens/s, the bytes it must read (weights except the embedding table, plus the
//      state or cache), the HBM bound those bytes give at the measured bandwidth, and the fraction
//      of it reached; the decode attention kernel alone (state vs cache) with its GB/s; at the first
//      length also the bounded step with cuBLASLt matmuls (the baseline of gemv.cuh), and the step's
//      variants in the same call (GpuDecoder's switches, llmc/decode.cuh):
//        v3        use_fused 0, use_pdl 0, l2_prefetch_o 0, gemv_l2_ahead 0, gemv_preload 0 (the 04:27 kernels)
//        v4a       + fused norms / RoPE+gate+scores (use_fused 3)
//        v4b       + Programmatic Dependent Launch (use_pdl)
//        v5a       + the write in the last CTA of the RoPE/gate/score launch (use_fused 7)
//        v5b       + the combine in the last split CTA of each KV head (use_fused 15)
//        v5c       v4b + the combine only (use_fused 11)
//        v7a       v4b + the write's token-independent half (scores, evictions) of every layer on a second
//                  stream from the step's start, the token into its slot in the RoPE launch (use_fused 19)
//        v7        v7a + the q/k/v/lambda gemv at one row a warp (gemv_rows[0] = 1; the defaults)
//        v9..v9g   v7 + each layer's o-proj, gate + up + SwiGLU, down and the next layer's q/k/v/lambda (or the
//                  LM head) as the four phases of one persistent launch whose weights stream through a ring of
//                  shared-memory slots (use_fused 51, gemv.cuh's gemv_chain) of 8, 4 or 2 KB, 2-12 a warp;
//                  v9g without the second stream (use_fused 35)
//        v4c       + the gemvs' weights loaded a step ahead, step 0 before the PDL wait (gemv_preload)
//        v4d       + o-proj weights prefetched into L2 during the attention (l2_prefetch_o)
//        v4e       + the gemvs' L2 prefetch 2 load steps ahead (gemv_l2_ahead)
//      Every variant's logits are compared with v3's (the same bits expected).
#include <string.h>
#include <chrono>
#include <thread>
#include <vector>
#include "dev/cuda/bench_common.cuh"
#include "dev/test/harness.h"
#include "dev/test/test_gpu_decode.cuh"
#include "llmc/cli.h"
#include "llmc/presets.h"

// Bench weights on the device (no host draw of 7B parameters): uniform with std 0.02, norm weights 1,
// the CoDA scalars at their config init values (lambda bias, write gate bias, eta logit).
static void bench_model_init(GpuModel* m, uint32_t seed) {
    const ModelConfig* c = &m->cfg;
    for (int i = 0; i < m->table.n; i++) {
        const ParamTensor* t = &m->table.tensors[i];
        floatX* p = m->params + t->offset;
        switch (t->kind) {
            case PK_ATTN_NORM: case PK_MLP_NORM: case PK_FINAL_NORM: case PK_HEAD_NORM: bench_fill(p, t->numel, 0, 0.0f, 1.0f); break;
            case PK_LAMBDA_B: bench_fill(p, t->numel, 0, 0.0f, c->lambda_init_bias); break;
            case PK_WRITE_B: bench_fill(p, t->numel, 0, 0.0f, c->write_gate_init_bias); break;
            case PK_ETA: bench_fill(p, t->numel, 0, 0.0f, c->eta_init_logit); break;
            default: bench_fill(p, t->numel, seed + i, 0.0346f, 0.0f); break;  // U(+-0.0346): std 0.02
        }
    }
    cudaCheck(cudaDeviceSynchronize());
}

// The ceiling of any kernel that reads n bytes once: a plain read, 16-byte loads, 4 in flight per
// thread, 4 CTAs an SM, the words XOR-folded into a sink (decode v7: each gemv ran at this rate for
// its size, so the gap to the copy-bandwidth bound is in the launches, not in the gemv loops).
__global__ void read_only_kernel(const uint4* __restrict__ p, size_t n16, unsigned* sink) {
    unsigned acc = 0;
    const size_t stride = (size_t)gridDim.x * blockDim.x * 4;
    for (size_t i = (size_t)blockIdx.x * blockDim.x * 4 + threadIdx.x; i < n16; i += stride) {
        uint4 v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) v[u] = i + u * blockDim.x < n16 ? p[i + u * blockDim.x] : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < 4; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    if (acc == 0x9e3779b9u) *sink = acc;  // never in practice; keeps the loads
}
static double read_only_ms(const void* p, size_t bytes, unsigned* sink) {
    const unsigned grid = 4u * (unsigned)(g_ctx.sm_count > 0 ? g_ctx.sm_count : 132);
    return bench_ms([&] {
        read_only_kernel<<<grid, 256, 0, g_ctx.stream>>>((const uint4*)p, bytes / 16, sink);
        cudaCheck(cudaGetLastError());
    });
}

static double copy_bandwidth_gbs(void) {
    const size_t n = (size_t)4 << 30;
    void *a = cuda_malloc_or_die(n, "copy bench"), *b = cuda_malloc_or_die(n, "copy bench");
    cudaCheck(cudaMemset(a, 1, n));
    double ms = bench_ms([&] { cudaCheck(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, g_ctx.stream)); }, 10);
    cudaCheck(cudaFree(a));
    cudaCheck(cudaFree(b));
    return 2.0 * n / (ms * 1e-3) / 1e9;
}

// Median ms per decode step over `steps` steps (each synchronised: what generation sees per token).
// Before a timed row: the device idle for a second. A long prefill (4 s at 128K) runs the card at its
// power cap (H200: SM clocks 1.4-1.8 GHz, clocks_event_reasons sw_power_cap), and the clocks stay
// lower for a few hundred ms after it: the median of 64 steps taken at once fell into that transient
// in some runs and not in others (dev/PERF.md, decode v7: 4.5 or 4.8 ms at 128K, run to run).
static void settle(void) {
    cudaCheck(cudaDeviceSynchronize());
    std::this_thread::sleep_for(std::chrono::seconds(1));
}

static double time_steps(GpuDecoder* d, int steps, uint32_t seed) {
    CodaError err;
    settle();
    std::vector<double> t;
    for (int i = 0; i < steps + 2; i++) {
        const int tok = (int)((seed * 2654435761u + 977u * i) % (uint32_t)d->m->cfg.vocab_size);
        const double t0 = now_seconds();
        if (gpu_decoder_step(d, tok, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
        if (i >= 2) t.push_back((now_seconds() - t0) * 1e3);  // the first two: the eager step and the capture
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// Bytes a decode step reads from HBM: every weight but the embedding table (one row of it), and the
// attention's keys and values.
static double step_bytes(const GpuModel* m, double state_bytes) {
    const ModelConfig* c = &m->cfg;
    double w = (double)m->table.total * sizeof(floatX);
    if (!c->tie_embeddings) w -= (double)c->vocab_size * c->dim * sizeof(floatX) - c->dim * sizeof(floatX);
    return w + state_bytes;
}

// The decode attention kernel + combine alone on layer 0's keys (state or cache of n keys).
static double time_attention(GpuDecoder* d, int n_keys) {
    GpuModel* m = d->m;
    const ModelConfig* c = &m->cfg;
    GpuDecodeState* st = &d->st;
    DecodeAttnArgs at;
    memset(&at, 0, sizeof(at));
    at.q = d->a.q; at.theta = gm_param(m, PK_THETA, 0);
    at.H = c->n_heads; at.Hkv = c->n_kv_heads; at.differential = c->differential; at.splits = d->splits; at.part = d->a.part;
    if (c->bounded) {
        at.k = st->k; at.v = st->v; at.head_stride = (size_t)st->slots * c->head_dim; at.key_stride = c->head_dim;
        at.allowed = st->allowed; at.n_fixed = st->slots;
    } else {
        at.k = st->cache_k; at.v = st->cache_v; at.head_stride = c->head_dim; at.key_stride = config_kvdim(c);
        at.n_fixed = n_keys;
    }
    DecodeCombineArgs cb = {d->a.part, d->a.lam, NULL, c->head_norm_eps, d->a.attn_out, c->n_heads, c->n_kv_heads, c->differential, d->splits};
    return bench_ms([&] { decode_attention(&g_ctx, &at, &cb, c->head_dim, c->bounded); }, 20);
}

int main(int argc, char** argv) {
    const char* ctx_list = argc > 1 ? argv[1] : "2048,8192,32768,131072";
    const int steps = bench_int_arg(argc, argv, 2, "steps", 64, 1, 100000);
    const int step_only = argc > 3 && strcmp(argv[3], "step-only") == 0;
    if (argc > 3 && !step_only) { fprintf(stderr, "decode: the third argument can only be step-only (got %s)\n", argv[3]); return 1; }
    bench_init();

    // 1. CPU check
    g_current_failures = 0;
    if (!step_only) {
    dec_write_vs_cpu(dec_write_config(), "write kernel vs bank_write_one");
    dec_model_vs_cpu(dec_bounded_config(), 70, 40, 81, "bounded decode vs the CPU session");
    dec_model_vs_cpu(gpu_test_config(1, 1), 37, 20, 84, "unbounded decode vs the CPU forward");
    printf("CPU check %s\n", g_current_failures ? "FAILED" : "ok");
    if (g_current_failures) return 1;
    }

    // 2. bandwidth
    const double bw = copy_bandwidth_gbs();
    printf("copy bandwidth (device to device, 4 GiB, read + write): %.0f GB/s\n", bw);

    // 2b. one row times a 7B weight: gemv.cuh vs cuBLASLt, same buffers
    if (!step_only) {
        const int shapes[][2] = {{4096, 4096}, {4096, 1024}, {14336, 4096}, {4096, 14336}, {32768, 4096}};
        printf("\ngemv (one row) vs cuBLASLt matmul_forward at N=1, Mistral-7B weights (O x I), L2 flushed; last: a plain read of the\n"
               "same bytes (read_only_kernel, the ceiling of one launch):\n");
        printf("| O x I | cuBLASLt us | GB/s | gemv (v3 loop) us | GB/s | speedup | preload loop us | GB/s | preload + L2 ahead 2 us | GB/s |"
               " read-only us | GB/s |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        unsigned* sink = (unsigned*)cuda_malloc_or_die(sizeof(unsigned), "read-only sink");
        for (const auto& sh : shapes) {
            const int O = sh[0], I = sh[1];
            floatX *W = bench_alloc<floatX>((size_t)O * I, 5, 0.02f), *x = bench_alloc<floatX>(I, 6), *y = bench_alloc<floatX>(O, 7);
            const double tc = bench_ms([&] { matmul_forward(&g_ctx, y, x, W, NULL, 1, I, O); });
            const double tg = bench_ms([&] { gemv_forward(&g_ctx, y, x, W, NULL, NULL, I, O); });
            GemvOpts pre = {}, ahead = {};
            pre.preload = 1;
            ahead.preload = 1;
            ahead.l2_ahead = 2;
            const double tp = bench_ms([&] { gemv_forward(&g_ctx, y, x, W, NULL, NULL, I, O, &pre); });
            const double ta = bench_ms([&] { gemv_forward(&g_ctx, y, x, W, NULL, NULL, I, O, &ahead); });
            const double tr = read_only_ms(W, (size_t)O * I * sizeof(floatX), sink);
            const double gb = (double)O * I * sizeof(floatX) / 1e9;
            printf("| %d x %d | %.1f | %.0f | %.1f | %.0f | %.2fx | %.1f | %.0f | %.1f | %.0f | %.1f | %.0f |\n", O, I, tc * 1e3, gb / (tc * 1e-3),
                   tg * 1e3, gb / (tg * 1e-3), tc / tg, tp * 1e3, gb / (tp * 1e-3), ta * 1e3, gb / (ta * 1e-3), tr * 1e3, gb / (tr * 1e-3));
            cudaCheck(cudaFree(W)); cudaCheck(cudaFree(x)); cudaCheck(cudaFree(y));
        }
        const int F = 14336, D = 4096;
        floatX *Wg = bench_alloc<floatX>((size_t)F * D, 8, 0.02f), *Wu = bench_alloc<floatX>((size_t)F * D, 9, 0.02f);
        floatX *x = bench_alloc<floatX>(D, 10), *g = bench_alloc<floatX>(F, 11), *u = bench_alloc<floatX>(F, 12), *act = bench_alloc<floatX>(F, 13);
        const double tc = bench_ms([&] {
            matmul_forward(&g_ctx, g, x, Wg, NULL, 1, D, F);
            matmul_forward(&g_ctx, u, x, Wu, NULL, 1, D, F);
            swiglu_forward(&g_ctx, act, g, u, F);
        });
        const double tg = bench_ms([&] { gemv_swiglu(&g_ctx, act, x, Wg, Wu, D, F); });
        const double gb = 2.0 * F * D * sizeof(floatX) / 1e9;
        // the read ceiling of both matrices in one launch: one buffer of their size
        floatX* both = bench_alloc<floatX>((size_t)2 * F * D, 14, 0.02f);
        const double tr = read_only_ms(both, (size_t)2 * F * D * sizeof(floatX), sink);
        cudaCheck(cudaFree(both));
        printf("| MLP gate+up+SwiGLU 2 x %d x %d | %.1f | %.0f | %.1f (fused) | %.0f | %.2fx | - | - | - | - | %.1f | %.0f |\n", F, D, tc * 1e3,
               gb / (tc * 1e-3), tg * 1e3, gb / (tg * 1e-3), tc / tg, tr * 1e3, gb / (tr * 1e-3));
        for (floatX* p : {Wg, Wu, x, g, u, act}) cudaCheck(cudaFree(p));
        // q, k, v, lambda: four launches vs one gemv_batch
        const int Os[4] = {4096, 1024, 1024, 32};
        GemvBatch bt;
        memset(&bt, 0, sizeof(bt));
        bt.n = 4;
        double bytes = 0;
        for (int j = 0; j < 4; j++) {
            bt.W[j] = bench_alloc<floatX>((size_t)Os[j] * D, 20 + j, 0.02f);
            bt.out[j] = bench_alloc<floatX>(Os[j], 30 + j);
            bt.O[j] = Os[j];
            bytes += (double)Os[j] * D * sizeof(floatX);
        }
        floatX* xq = bench_alloc<floatX>(D, 40);
        const double t4 = bench_ms([&] { for (int j = 0; j < 4; j++) gemv_forward(&g_ctx, bt.out[j], xq, bt.W[j], NULL, NULL, D, Os[j]); });
        const double tb = bench_ms([&] { gemv_batch(&g_ctx, &bt, xq, D); });
        printf("| q, k, v, lambda (4096+1024+1024+32) x 4096: 4 gemv launches vs gemv_batch | %.1f | %.0f | %.1f | %.0f | %.2fx |\n",
               t4 * 1e3, bytes / 1e9 / (t4 * 1e-3), tb * 1e3, bytes / 1e9 / (tb * 1e-3), t4 / tb);
        for (int j = 0; j < 4; j++) { cudaCheck(cudaFree((void*)bt.W[j])); cudaCheck(cudaFree(bt.out[j])); }
        cudaCheck(cudaFree(xq));
        cudaCheck(cudaFree(sink));
    }

    // 3. Mistral-7B decode
    ModelConfig base;
    CodaError err;
    if (model_config_from("mistral-7b", &base, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
    base.differential = 1;
    ModelConfig cb = base, cu = base;
    cb.bounded = 1; cb.window = 256; cb.n_exact = 64; cb.n_summary = 64; cb.block_size = 256; cb.mem_init = MEM_INIT_RANDOM_NORMAL;
    GpuModel mb, mu;
    gpu_model_create(&mb, &cb, TRAIN_NONE);
    gpu_model_create(&mu, &cu, TRAIN_NONE);
    bench_model_init(&mb, 11);
    bench_model_init(&mu, 11);
    int* lens = NULL;
    int n_lens = 0;
    if (cli_parse_int_list("contexts", ctx_list, 1, &lens, &n_lens, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
    printf("\nMistral-7B shape, CoDA, B=1, %s weights, %d decode steps per row (median ms per token, CUDA graph);\n"
           "HBM bound = bytes read per token / %.0f GB/s\n", PRECISION_NAME, steps, bw);
    printf("| context | state | prefill s | ms/token | tokens/s | MB read/token | bound ms | of bound | attention us | attn GB/s |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_lens; i++) {
        const int N = lens[i];
        // bounded: a real prefill of N tokens, then the steps
        {
            GpuDecoder d;
            gpu_decoder_init(&d, &mb, 0, 1);
            gpu_decoder_reset(&d, 42);
            std::vector<int> tok(N);
            for (int t = 0; t < N; t++) tok[t] = (int)((1103515245u * (uint32_t)t + 12345u) % (uint32_t)cb.vocab_size);
            const double t0 = now_seconds();
            if (gpu_decoder_prefill(&d, tok.data(), N, N > 8192, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
            const double t_pre = now_seconds() - t0;
            const double ms = time_steps(&d, steps, 1);
            const double sb = (double)d.st.bytes;  // the whole state is read by the attention (and the write)
            const double bytes = step_bytes(&mb, sb), bound = bytes / (bw * 1e9) * 1e3;
            const double att = time_attention(&d, 0);
            const double att_bytes = sb / cb.n_layers;
            if (i == 0 && !step_only) {  // the step's variants, same weights, same prefill, same tokens (see the top of the file)
                struct { const char* name; int fused, pdl, l2o, ahead, preload, qkv_rows, chain_stages, chain_chunk; } vs[] = {
                    {"v3 (no fusion, no PDL, no prefetch, v3 gemv loop)", 0, 0, 0, 0, 0, 0},
                    {"v4a + fused norms, RoPE+gate+scores", 3, 0, 0, 0, 0, 0},
                    {"v4b + PDL", 3, 1, 0, 0, 0, 0},
                    {"v5a + the write in the RoPE launch", 7, 1, 0, 0, 0, 0},
                    {"v5b + the combine in the attention", 15, 1, 0, 0, 0, 0},
                    {"v5c the combine in the attention, not the write", 11, 1, 0, 0, 0, 0},
                    {"v7a + the write's token-independent half ahead on a second stream", 19, 1, 0, 0, 0, 0},
                    {"v7 + the q/k/v/lambda gemv at one row a warp", 19, 1, 0, 0, 0, 1},
                    {"v9 + o-proj .. next q/k/v as one persistent chain, weights streamed through smem (2 x 8 KB a warp)", 51, 1, 0, 0, 0, 1, 0, 0},
                    {"v9b chain, 3 x 8 KB a warp", 51, 1, 0, 0, 0, 1, 3, 4096},
                    {"v9c chain, 4 x 4 KB a warp", 51, 1, 0, 0, 0, 1, 4, 2048},
                    {"v9d chain, 6 x 4 KB a warp", 51, 1, 0, 0, 0, 1, 6, 2048},
                    {"v9e chain, 8 x 2 KB a warp", 51, 1, 0, 0, 0, 1, 8, 1024},
                    {"v9f chain, 12 x 2 KB a warp", 51, 1, 0, 0, 0, 1, 12, 1024},
                    {"v9g chain, 2 x 8 KB, the write inline (no second stream)", 35, 1, 0, 0, 0, 1, 0, 0},
                    {"v4c + gemv preload loop", 3, 1, 0, 0, 1, 0},
                    {"v4d + o-proj L2 prefetch", 3, 1, 1, 0, 1, 0},
                    {"v4e + gemv L2 ahead 2", 3, 1, 0, 2, 1, 0},
                    {"v4f PDL only (unfused, v3 loop)", 0, 1, 0, 0, 0, 0}};
                std::vector<float> ref_logits;
                for (const auto& v : vs) {
                    GpuDecoder e;
                    gpu_decoder_init(&e, &mb, 0, 1);
                    e.use_fused = v.fused; e.use_pdl = v.pdl; e.l2_prefetch_o = v.l2o; e.gemv_l2_ahead = v.ahead; e.gemv_preload = v.preload; e.gemv_rows[0] = v.qkv_rows;
                    e.chain_stages = v.chain_stages; e.chain_chunk = v.chain_chunk;
                    gpu_decoder_reset(&e, 42);
                    if (gpu_decoder_prefill(&e, tok.data(), N, N > 8192, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
                    const double ms_v = time_steps(&e, steps, 1);
                    // the logits of the last step against v3's (same tokens: time_steps feeds the same sequence)
                    std::vector<float> lg(e.logits_host, e.logits_host + cb.vocab_size);
                    if (ref_logits.empty()) ref_logits = lg;
                    const int same = memcmp(lg.data(), ref_logits.data(), sizeof(float) * lg.size()) == 0;
                    printf("| %d | bounded medium, %s | - | %.3f | %.1f | %.0f | %.3f | %.0f%% | logits %s v3's | - |\n", N, v.name, ms_v, 1e3 / ms_v,
                           bytes / 1e6, bound, 100.0 * bound / ms_v, same ? "==" : "!=");
                    gpu_decoder_free(&e);
                }
            }
            if (i == 0 && !step_only) {  // the same decoder with cuBLASLt matmuls: the baseline of gemv.cuh in the whole step
                gpu_decoder_free(&d);
                gpu_decoder_init(&d, &mb, 0, 1);
                d.use_cublas = 1;
                gpu_decoder_reset(&d, 42);
                if (gpu_decoder_prefill(&d, tok.data(), N, N > 8192, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
                const double ms_c = time_steps(&d, steps, 1);
                printf("| %d | bounded medium, cuBLASLt matmuls | - | %.3f | %.1f | %.0f | %.3f | %.0f%% | - | - |\n", N, ms_c, 1e3 / ms_c,
                       bytes / 1e6, bound, 100.0 * bound / ms_c);
            }
            printf("| %d | bounded medium (%.1f MiB) | %.2f | %.3f | %.1f | %.0f | %.3f | %.0f%% | %.1f | %.0f |\n", N, sb / 1048576.0, t_pre, ms,
                   1e3 / ms, bytes / 1e6, bound, 100.0 * bound / ms, att * 1e3, att_bytes / (att * 1e-3) / 1e9);
            gpu_decoder_free(&d);
        }
        // unbounded: a KV cache of N random rows, then the steps
        if (!step_only) {
            GpuDecoder d;
            gpu_decoder_init(&d, &mu, N + steps + 4, 1);
            const size_t kvd = config_kvdim(&cu);
            for (int l = 0; l < cu.n_layers; l++) {
                const size_t off = (size_t)l * d.st.max_len * kvd;
                bench_fill(d.st.cache_k + off, (size_t)N * kvd, 100 + l, 1.0f, 0.0f);
                bench_fill(d.st.cache_v + off, (size_t)N * kvd, 200 + l, 1.0f, 0.0f);
            }
            decode_set_pos_kernel<<<1, 256, 0, mu.ctx.stream>>>(d.st.pos, cu.n_layers, N);
            cudaCheck(cudaDeviceSynchronize());
            d.pos = N;
            const double ms = time_steps(&d, steps, 2);
            const double sb = 2.0 * cu.n_layers * (double)(N + steps / 2) * kvd * sizeof(floatX);
            const double bytes = step_bytes(&mu, sb), bound = bytes / (bw * 1e9) * 1e3;
            const double att = time_attention(&d, N);
            const double att_bytes = 2.0 * N * kvd * sizeof(floatX);
            printf("| %d | unbounded KV cache (%.0f MiB) | - | %.3f | %.1f | %.0f | %.3f | %.0f%% | %.1f | %.0f |\n", N, sb / 1048576.0, ms,
                   1e3 / ms, bytes / 1e6, bound, 100.0 * bound / ms, att * 1e3, att_bytes / (att * 1e-3) / 1e9);
            gpu_decoder_free(&d);
        }
    }
    free(lens);
    gpu_model_free(&mb);
    gpu_model_free(&mu);
    return 0;
}
