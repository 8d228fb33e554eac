// test_gpu_decode.cuh — GPU decode (llmc/decode.cuh) against the CPU reference:
//   * the write of one token (docs/spec.md §3.2, §3.5, §3.6) from the same inputs reaches the CPU's state bit
//     for bit (every decision, every fp32 value), in both builds, under several bank policies;
//   * the model's decode step (prefill, then one token at a time) against the CPU session's: the
//     next-token logits, and in the FP32 build the same exact-bank contents (the same decisions);
//   * unbounded decode with the KV cache against the CPU's forward over the whole context;
//   * decode within the first W tokens equals the chunked prefill (docs/spec.md §2.3: nothing evicted yet);
//   * the CUDA graph replays the eager step bit for bit;
//   * state files: GPU save -> GPU load continues exactly; a GPU state loads into the CPU session
//     and back; a damaged file is refused and leaves the session as it was;
//   * the state's memory accounting (docs/spec.md §6) equals the allocation;
//   * gemv.cuh (the decode step's matmuls) against the CPU's matmul.
#pragma once
#include <vector>
#include "../../llmc/decode.cuh"
#include "test_gpu_bounded.cuh"

#if defined(ENABLE_FP32)
static const double DEC_LOGIT_TOL = 2e-4;  // max |diff| / max |logit|: summation order only
#else
static const double DEC_LOGIT_TOL = 6e-2;  // bf16 activations
#endif

static float dec_bf16_round(float x) {  // a value both builds represent exactly
    uint32_t u;
    memcpy(&u, &x, 4);
    u &= 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

static double dec_max_rel(const float* a, const float* b, int n) {
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / (s > 0 ? s : 1);
}

// Bitwise comparison of two states; returns the number of differing fields and names the first.
static int dec_state_diff(const BankState_f32* a, const BankState_f32* b, char* what, size_t n_what) {
    size_t kv = (size_t)a->Hkv * a->slots * a->Dh;
    int bad = 0;
    auto note = [&](const char* f, long long i) {
        if (!bad++) snprintf(what, n_what, "%s[%lld]", f, i);
    };
    for (size_t i = 0; i < kv; i++) if (memcmp(&a->k[i], &b->k[i], 4)) { note("k", (long long)i); break; }
    for (size_t i = 0; i < kv; i++) if (memcmp(&a->v[i], &b->v[i], 4)) { note("v", (long long)i); break; }
    for (int i = 0; i < a->slots; i++) if (a->allowed[i] != b->allowed[i]) { note("allowed", i); break; }
    for (int i = 0; i < a->slots; i++) if (a->src[i] != b->src[i]) { note("src", i); break; }
    for (int i = 0; i < a->W; i++) if (memcmp(&a->g_ring[i], &b->g_ring[i], 4)) { note("g_ring", i); break; }
    for (int i = 0; i < a->Me; i++) if (a->last_exact[i] != b->last_exact[i]) { note("last_exact", i); break; }
    if (a->recent_idx != b->recent_idx || a->recent_filled != b->recent_filled || a->pos != b->pos) note("counters", 0);
    return bad;
}

// gemv.cuh against the CPU's matmul: plain (with bias and residual), and the fused SwiGLU; shapes
// that take the 16-byte path, the scalar path (I not a multiple of the vector), and every ROWS.
static void dec_gemv_case(int I, int O, int swiglu, uint64_t seed) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    Rng r;
    rng_seed(&r, seed);
    std::vector<float> W((size_t)O * I), W2((size_t)O * I), x(I), b(O), res(O), ref(O), got(O), t1(O), t2(O);
    for (auto* v : {&W, &W2}) for (auto& e : *v) e = dec_bf16_round((float)(0.05 * rng_normal(&r)));
    for (auto* v : {&x, &b, &res}) for (auto& e : *v) e = dec_bf16_round((float)rng_normal(&r));
    floatX *dW = (floatX*)cuda_malloc_or_die(sizeof(floatX) * W.size(), "t"), *dW2 = (floatX*)cuda_malloc_or_die(sizeof(floatX) * W.size(), "t");
    floatX *dx = (floatX*)cuda_malloc_or_die(sizeof(floatX) * I, "t"), *db = (floatX*)cuda_malloc_or_die(sizeof(floatX) * O, "t");
    floatX *dres = (floatX*)cuda_malloc_or_die(sizeof(floatX) * O, "t"), *dout = (floatX*)cuda_malloc_or_die(sizeof(floatX) * O, "t");
    host_to_floatX(dW, W.data(), W.size()); host_to_floatX(dW2, W2.data(), W.size()); host_to_floatX(dx, x.data(), I);
    host_to_floatX(db, b.data(), O); host_to_floatX(dres, res.data(), O);
    matmul_forward_f32(t1.data(), x.data(), W.data(), NULL, 1, I, O);
    if (swiglu) {
        matmul_forward_f32(t2.data(), x.data(), W2.data(), NULL, 1, I, O);
        swiglu_forward_f32(ref.data(), t1.data(), t2.data(), O);
        gemv_swiglu(&ctx, dout, dx, dW, dW2, I, O);
    } else {
        for (int o = 0; o < O; o++) ref[o] = t1[o] + b[o] + res[o];
        gemv_forward(&ctx, dout, dx, dW, db, dres, I, O);
    }
    floatX_to_host(got.data(), dout, O);
    const double rel = dec_max_rel(got.data(), ref.data(), O);
    printf("    gemv%s I=%d O=%d: max rel diff %.2e\n", swiglu ? "_swiglu" : " (+bias +res)", I, O, rel);
    CHECK(rel <= (sizeof(floatX) == 4 ? 1e-5 : 1e-2), "gemv I=%d O=%d swiglu=%d: %.3g", I, O, swiglu, rel);
    for (floatX* p : {dW, dW2, dx, db, dres, dout}) cudaCheck(cudaFree(p));
    gpu_context_free(&ctx);
}
// gemv_batch: three or four matrices of different heights in one launch, each equal to its own gemv_forward.
static void dec_gemv_batch_case(int I, const int* Os, int n) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    GemvBatch bt;
    memset(&bt, 0, sizeof(bt));
    bt.n = n;
    floatX *x = (floatX*)cuda_malloc_or_die(sizeof(floatX) * I, "t"), *ref[4];
    std::vector<float> hx(I);
    Rng r;
    rng_seed(&r, 5 + I);
    for (auto& e : hx) e = (float)rng_normal(&r);
    host_to_floatX(x, hx.data(), I);
    for (int j = 0; j < n; j++) {
        std::vector<float> w((size_t)Os[j] * I), b(Os[j]);
        for (auto& e : w) e = (float)(0.05 * rng_normal(&r));
        for (auto& e : b) e = (float)rng_normal(&r);
        floatX* dw = (floatX*)cuda_malloc_or_die(sizeof(floatX) * w.size(), "t");
        floatX* db = (floatX*)cuda_malloc_or_die(sizeof(floatX) * Os[j], "t");
        host_to_floatX(dw, w.data(), w.size());
        host_to_floatX(db, b.data(), Os[j]);
        bt.W[j] = dw; bt.bias[j] = j == n - 1 ? db : NULL; bt.O[j] = Os[j];
        bt.out[j] = (floatX*)cuda_malloc_or_die(sizeof(floatX) * Os[j], "t");
        ref[j] = (floatX*)cuda_malloc_or_die(sizeof(floatX) * Os[j], "t");
        gemv_forward(&ctx, ref[j], x, dw, bt.bias[j], NULL, I, Os[j]);
        if (!bt.bias[j]) cudaCheck(cudaFree(db));
    }
    gemv_batch(&ctx, &bt, x, I);
    cudaCheck(cudaDeviceSynchronize());
    int same = 1;
    for (int j = 0; j < n; j++) {
        std::vector<floatX> a(Os[j]), b(Os[j]);
        cudaCheck(cudaMemcpy(a.data(), bt.out[j], sizeof(floatX) * Os[j], cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(b.data(), ref[j], sizeof(floatX) * Os[j], cudaMemcpyDeviceToHost));
        same &= memcmp(a.data(), b.data(), sizeof(floatX) * Os[j]) == 0;
        cudaCheck(cudaFree((void*)bt.W[j])); cudaCheck(cudaFree(bt.out[j])); cudaCheck(cudaFree(ref[j]));
        if (bt.bias[j]) cudaCheck(cudaFree((void*)bt.bias[j]));
    }
    printf("    gemv_batch I=%d, %d matrices of %d..%d rows: %s\n", I, n, Os[0], Os[n - 1], same ? "equal to gemv_forward each" : "DIFFERENT");
    CHECK(same, "gemv_batch differs from gemv_forward (I=%d)", I);
    cudaCheck(cudaFree(x));
    gpu_context_free(&ctx);
}
GPU_TEST(gpu_gemv_matches_cpu_matmul) {
    const int shapes[][2] = {{96, 301}, {97, 33}, {256, 5000}, {1024, 9000}, {4096, 40}, {4096, 20000}};
    for (const auto& sh : shapes)
        for (int sw = 0; sw < 2; sw++) dec_gemv_case(sh[0], sh[1], sw, 7 + sh[0] + sh[1]);
    const int small[4] = {256, 128, 128, 4}, big[4] = {4096, 1024, 1024, 32}, odd[3] = {300, 77, 77};
    dec_gemv_batch_case(96, small, 4);
    dec_gemv_batch_case(4096, big, 4);
    dec_gemv_batch_case(97, odd, 3);
}

// One layer's writes, kernel vs bank_write_one_f32, from the same bf16-representable inputs: tokens
// drawn around a few prototypes (so exact hits, novel tokens and LRU evictions all happen) with gates
// on both sides of the thresholds.
static void dec_write_vs_cpu(ModelConfig c, const char* name) {
    c.n_layers = 1;
    const int kvd = c.n_kv_heads * c.head_dim, steps = 5 * (c.window + c.n_exact + c.n_summary);
    GpuContext ctx;
    gpu_context_init(&ctx);
    GpuDecodeState st;
    gpu_decode_state_alloc(&st, &c, 0);
    BankState_f32* cpu = layer_states_alloc(&c);
    layer_states_reset(cpu, &c, 7);
    gpu_decode_state_from_host(&st, cpu);  // the random bank init through the host copy (as the GPU session does)
    float eta_h[16];
    Rng r;
    rng_seed(&r, 99);
    for (int g = 0; g < c.n_kv_heads; g++) eta_h[g] = dec_bf16_round((float)(rng_normal(&r) - 0.5));
    const int n_proto = 5;
    float* proto = (float*)malloc(sizeof(float) * 2 * kvd * n_proto);
    for (int i = 0; i < 2 * kvd * n_proto; i++) proto[i] = (float)rng_normal(&r);
    float *hk = (float*)malloc(sizeof(float) * 2 * kvd), *hv = hk + kvd;
    floatX *dk, *dv, *deta;
    float *dgate, *dscores;
    cudaCheck(cudaMalloc(&dscores, sizeof(float) * (c.n_exact + c.n_summary + 1)));
    cudaCheck(cudaMalloc(&dk, sizeof(floatX) * kvd));
    cudaCheck(cudaMalloc(&dv, sizeof(floatX) * kvd));
    cudaCheck(cudaMalloc(&deta, sizeof(floatX) * 16));
    cudaCheck(cudaMalloc(&dgate, sizeof(float)));
    host_to_floatX(deta, eta_h, c.n_kv_heads);
    BankState_f32* back = layer_states_alloc(&c);
    int mismatches = 0, hits_used = 0;
    char what[64] = "";
    for (int t = 0; t < steps; t++) {
        const int p = (int)(rng_below(&r, n_proto)), fresh = rng_below(&r, 4) == 0;  // 1 in 4: a token near no prototype
        for (int i = 0; i < kvd; i++) {
            hk[i] = dec_bf16_round((float)((fresh ? 0.0 : proto[p * 2 * kvd + i]) + (fresh ? 1.0 : 0.05) * rng_normal(&r)));
            hv[i] = dec_bf16_round((float)((fresh ? 0.0 : proto[p * 2 * kvd + kvd + i]) + (fresh ? 1.0 : 0.05) * rng_normal(&r)));
        }
        float gate = dec_bf16_round((float)rng_uniform(&r));
        host_to_floatX(dk, hk, kvd);
        host_to_floatX(dv, hv, kvd);
        cudaCheck(cudaMemcpy(dgate, &gate, sizeof(float), cudaMemcpyHostToDevice));
        DecodeWriteArgs w = decode_write_args(&st, &c, 0, dk, dv, dgate, deta, dscores);
        decode_write_one(&ctx, &w);
        bank_write_one_f32(cpu, &c, hk, hv, gate, eta_h);
        cudaCheck(cudaDeviceSynchronize());
        gpu_decode_state_to_host(&st, back);
        if (dec_state_diff(back, cpu, what, sizeof(what))) { mismatches++; break; }
    }
    for (int m = 0; m < c.n_exact; m++) hits_used += cpu->allowed[c.window + m];
    printf("    %s: %d writes, exact slots used %d/%d, first difference %s\n", name, steps, hits_used, c.n_exact, mismatches ? what : "none");
    CHECK(mismatches == 0, "%s: GPU state differs from the CPU's at %s", name, what);
    CHECK(c.n_exact == 0 || hits_used > 0, "%s: the exact bank was never written (the test exercises nothing)", name);
    layer_states_free(back, &c);
    layer_states_free(cpu, &c);
    free(hk);
    free(proto);
    cudaCheck(cudaFree(dk)); cudaCheck(cudaFree(dv)); cudaCheck(cudaFree(deta)); cudaCheck(cudaFree(dgate)); cudaCheck(cudaFree(dscores));
    gpu_decode_state_free(&st);
    gpu_context_free(&ctx);
}

static ModelConfig dec_write_config(void) {
    ModelConfig c = gpu_bounded_config(1, 1, 1);
    c.window = 8; c.n_exact = 6; c.n_summary = 5;
    c.mem_init = MEM_INIT_RANDOM_NORMAL;
    return c;
}
GPU_TEST(gpu_decode_write_matches_cpu_bank_write_one) {
    ModelConfig c = dec_write_config();
    dec_write_vs_cpu(c, "gated, defaults");
    c.exact_refresh_on_hit = !c.exact_refresh_on_hit;
    c.summary_overwrite_on_insert = !c.summary_overwrite_on_insert;
    dec_write_vs_cpu(c, "refresh-on-hit and overwrite-on-insert flipped");
    c = dec_write_config();
    c.mem_init = MEM_INIT_ZEROS;
    c.n_summary = 0;
    dec_write_vs_cpu(c, "zero init, exact bank only");
    c = dec_write_config();
    c.n_exact = 0;
    c.head_dim = 128;
    dec_write_vs_cpu(c, "summary bank only, Dh 128");
    c = dec_write_config();  // more slots than a warp's lanes: each lane scans several (the decisions' reductions)
    c.n_exact = 40; c.n_summary = 37;
    dec_write_vs_cpu(c, "banks of 40 and 37 slots");
}

// The GPU model and a CPU model with the same weights (the CPU gets the GPU's rounding in BF16).
static void dec_models(const ModelConfig* c, uint64_t seed, Model_f32* cpu, GpuModel* g) {
    model_init_f32(cpu, c, seed);
    perturb_params_f32(cpu, seed + 1, 0.3);
    gpu_model_create(g, c, TRAIN_NONE);
    gpu_model_load_host(g, cpu->params);
    gpu_model_read_host(g, cpu->params);
}

// Prefill P tokens, then `steps` decode steps, GPU vs the CPU session; logits at every point.
static void dec_model_vs_cpu(ModelConfig c, int P, int steps, uint64_t seed, const char* name) {
    Model_f32 cpu;
    GpuModel g;
    dec_models(&c, seed, &cpu, &g);
    const int V = c.vocab_size;
    int* tok = (int*)malloc(sizeof(int) * (P + steps));
    random_tokens(tok, P + steps, V, seed + 2);
    Session s;
    session_init(&s, &cpu, 42);
    GpuSession gs;
    gpu_session_init(&gs, &g, P + steps, 42);
    CodaError err;
    CHECK(session_prefill(&s, tok, P, &err) == 0, "%s", err.msg);
    CHECK(gpu_session_prefill(&gs, tok, P, &err) == 0, "%s", err.msg);
    const double after_prefill = dec_max_rel(gs.dec.logits_host, s.logits, V);
#if defined(ENABLE_FP32)
    double worst = after_prefill;
#else
    // bf16 rounding can flip a prefill decision (a gate at a threshold, a near tie of two slots),
    // which the FP32 build rules out (its decisions are the CPU's, checked below): here the CPU
    // continues from the GPU's state, so that the steps compare the decode path itself
    double worst = 0;
    if (c.bounded) gpu_decode_state_to_host(&gs.dec.st, s.states);
#endif
    for (int t = 0; t < steps; t++) {
        CHECK(session_step(&s, tok[P + t], &err) == 0, "%s", err.msg);
        CHECK(gpu_session__feed(&gs, tok[P + t], &err) == 0, "%s", err.msg);
        worst = fmax(worst, dec_max_rel(gs.dec.logits_host, s.logits, V));
    }
    int src_diff = 0;
    if (c.bounded) {
        BankState_f32* back = layer_states_alloc(&c);
        gpu_decode_state_to_host(&gs.dec.st, back);
        for (int l = 0; l < c.n_layers; l++) {
            for (int i = 0; i < back[l].slots; i++) src_diff += back[l].src[i] != s.states[l].src[i] || back[l].allowed[i] != s.states[l].allowed[i];
            CHECK(back[l].pos == s.states[l].pos && back[l].recent_idx == s.states[l].recent_idx &&
                      back[l].recent_filled == s.states[l].recent_filled, "%s layer %d counters: GPU pos %lld idx %d filled %d, CPU %lld %d %d",
                  name, l, (long long)back[l].pos, back[l].recent_idx, back[l].recent_filled, (long long)s.states[l].pos, s.states[l].recent_idx,
                  s.states[l].recent_filled);
        }
        layer_states_free(back, &c);
    }
    printf("    %s %s: prefill %d + %d steps, logits max rel diff %.2e (after the prefill %.2e%s), slot sources/flags differing %d\n",
           PRECISION_NAME, name, P, steps, worst, after_prefill, sizeof(floatX) == 4 || !c.bounded ? "" : "; then the GPU's state on both",
           src_diff);
    CHECK(worst <= DEC_LOGIT_TOL, "%s: logits rel diff %.3g > %.1g", name, worst, DEC_LOGIT_TOL);
#if defined(ENABLE_FP32)
    CHECK(src_diff == 0, "%s: %d slot sources or flags differ from the CPU's (other decisions)", name, src_diff);
#endif
    gpu_session_free(&gs);
    session_free(&s);
    free(tok);
    gpu_model_free(&g);
    model_free_f32(&cpu);
}

static ModelConfig dec_bounded_config(void) {
    ModelConfig c = gpu_bounded_config(1, 1, 1);
    c.mem_init = MEM_INIT_RANDOM_NORMAL;  // inference
    return c;
}
GPU_TEST(gpu_decode_bounded_matches_cpu_session) {
    dec_model_vs_cpu(dec_bounded_config(), 70, 50, 81, "CoDA bounded");
    ModelConfig c = dec_bounded_config();
    c.head_norm = HEAD_NORM_FULL; c.rope_layout = ROPE_INTERLEAVED; c.head_dim = 128; c.n_heads = 4; c.n_kv_heads = 1;
    dec_model_vs_cpu(c, 40, 40, 82, "CoDA bounded, head norm, interleaved RoPE, Dh 128, G 4");
    c = gpu_bounded_config(0, 1, 1);
    c.mask_unused_memory = 0;
    dec_model_vs_cpu(c, 33, 40, 83, "GQA bounded, unused memory attended, zero init");
}
GPU_TEST(gpu_decode_unbounded_kv_cache_matches_cpu_forward) {
    dec_model_vs_cpu(gpu_test_config(1, 1), 37, 20, 84, "CoDA unbounded (KV cache)");
    dec_model_vs_cpu(gpu_test_config(0, 0), 5, 20, 85, "GQA unbounded (KV cache)");
}

// The step's switches (GpuDecoder.use_fused, use_pdl) change launches, never results: every variant's
// logits at every step and its final state are the plain step's bits (decode.cuh promises it; the
// tickets of use_fused 4/8 move the write and the combine into the last CTA of another launch; bit 16
// splits the write over a second stream and the RoPE launch).
static void dec_variants_same_bits(ModelConfig c, int P, int steps, uint64_t seed, const char* name) {
    Model_f32 cpu;
    GpuModel g;
    dec_models(&c, seed, &cpu, &g);
    const int V = c.vocab_size;
    int* tok = (int*)malloc(sizeof(int) * (P + steps));
    random_tokens(tok, P + steps, V, seed + 2);
    // rows: the q/k/v/lambda gemv's rows per warp (0: by shape; the decoder's default is 1); bit 32 (the gemv
    // chain): stages the slots of each warp's ring (0: the default)
    const struct { int fused, pdl, graph, rows, stages; } vs[] = {
        {0, 0, 0, 1, 0},  {3, 1, 1, 1, 0},  {7, 1, 1, 1, 0},  {11, 0, 1, 1, 0}, {15, 1, 1, 1, 0}, {15, 0, 0, 1, 0},
        {19, 1, 1, 1, 0}, {19, 0, 0, 1, 0}, {27, 1, 1, 1, 0}, {19, 1, 1, 0, 0}, {19, 1, 1, 4, 0}, {51, 1, 1, 1, 0},
        {51, 0, 0, 1, 1}, {51, 1, 1, 1, 1}, {35, 1, 1, 1, 0}, {59, 1, 1, 1, 0}};
    const int nv = (int)(sizeof(vs) / sizeof(vs[0]));
    float* ref = (float*)malloc(sizeof(float) * V * steps);
    BankState_f32 *ref_st = c.bounded ? layer_states_alloc(&c) : NULL, *st = c.bounded ? layer_states_alloc(&c) : NULL;
    int differing = 0;
    char what[64] = "";
    CodaError err;
    for (int v = 0; v < nv; v++) {
        GpuDecoder d;
        gpu_decoder_init(&d, &g, P + steps + 1, vs[v].graph);
        d.use_fused = vs[v].fused; d.use_pdl = vs[v].pdl; d.gemv_rows[0] = vs[v].rows;
        d.chain_stages = vs[v].stages;
        gpu_decoder_reset(&d, 42);
        CHECK(gpu_decoder_prefill(&d, tok, P, 0, &err) == 0, "%s", err.msg);
        for (int t = 0; t < steps; t++) {
            CHECK(gpu_decoder_step(&d, tok[P + t], &err) == 0, "%s", err.msg);
            // the chain must have run where it was asked for (these models' rows are all aligned; one slot
            // a warp: every chunk waits for the one before; FP32: the default is one slot too)
            CHECK(d.chained == ((vs[v].fused & 33) == 33), "%s: variant %d (fused %d) chained %d", name, v, vs[v].fused, d.chained);
            if (v == 0) memcpy(ref + (size_t)t * V, d.logits_host, sizeof(float) * V);
            else if (memcmp(ref + (size_t)t * V, d.logits_host, sizeof(float) * V) != 0) {
                differing++;
                snprintf(what, sizeof(what), "variant %d (fused %d pdl %d) logits at step %d", v, vs[v].fused, vs[v].pdl, t);
                break;
            }
        }
        if (c.bounded) {
            gpu_decode_state_to_host(&d.st, v == 0 ? ref_st : st);
            for (int l = 0; v > 0 && l < c.n_layers; l++)
                if (dec_state_diff(&st[l], &ref_st[l], what, sizeof(what))) { differing++; break; }
        }
        gpu_decoder_free(&d);
    }
    printf("    %s %s: %d variants x (prefill %d + %d steps), variants differing from the plain step %d%s%s\n", PRECISION_NAME, name, nv, P,
           steps, differing, differing ? ", first at " : "", what);
    CHECK(differing == 0, "%s: a step variant changes results (%s)", name, what);
    if (ref_st) { layer_states_free(ref_st, &c); layer_states_free(st, &c); }
    free(ref);
    free(tok);
    gpu_model_free(&g);
    model_free_f32(&cpu);
}
GPU_TEST(gpu_decode_step_variants_give_the_same_bits) {
    dec_variants_same_bits(dec_bounded_config(), 70, 40, 91, "CoDA bounded");
    ModelConfig c = dec_bounded_config();
    c.head_norm = HEAD_NORM_FULL; c.head_dim = 128; c.n_heads = 4; c.n_kv_heads = 1; c.n_exact = 40; c.n_summary = 37;
    dec_variants_same_bits(c, 50, 80, 92, "CoDA bounded, head norm, Dh 128, G 4, banks of 40 and 37");
    dec_variants_same_bits(gpu_test_config(1, 1), 37, 20, 93, "CoDA unbounded (KV cache)");
}

// Prompts that continue a state (a loaded state file, a follow-up prompt after generated tokens): the
// GPU prefill from a non-empty state (model.cuh's GpuCarry) vs the CPU session's chunked prefill
// from the same state. Stages: prompt, steps, prompt, steps, prompt; logits after every token fed.
static void dec_continue_vs_cpu(ModelConfig c, const int* stages, int n_stages, uint64_t seed, const char* name) {
    Model_f32 cpu;
    GpuModel g;
    dec_models(&c, seed, &cpu, &g);
    const int V = c.vocab_size;
    int total = 0;
    for (int i = 0; i < n_stages; i++) total += stages[i];
    int* tok = (int*)malloc(sizeof(int) * total);
    random_tokens(tok, total, V, seed + 2);
    Session s;
    session_init(&s, &cpu, 42);
    GpuSession gs;
    gpu_session_init(&gs, &g, total, 42);
    CodaError err;
    double worst = 0, worst_prefill = 0;
    int at = 0;
    for (int i = 0; i < n_stages; i++) {
        const int n = stages[i];
        if (i % 2 == 0) {  // a prompt, through the chunked prefill
#if !defined(ENABLE_FP32)
            // bf16 may flip a decision the CPU makes in fp32: both prefill from the GPU's state
            if (i > 0) gpu_decode_state_to_host(&gs.dec.st, s.states);
#endif
            CHECK(session_prefill(&s, tok + at, n, &err) == 0, "%s", err.msg);
            CHECK(gpu_session_prefill(&gs, tok + at, n, &err) == 0, "%s", err.msg);
            const double e = dec_max_rel(gs.dec.logits_host, s.logits, V);
            worst_prefill = fmax(worst_prefill, e);
            worst = fmax(worst, e);
        } else {
            for (int t = 0; t < n; t++) {
                CHECK(session_step(&s, tok[at + t], &err) == 0, "%s", err.msg);
                CHECK(gpu_session__feed(&gs, tok[at + t], &err) == 0, "%s", err.msg);
                worst = fmax(worst, dec_max_rel(gs.dec.logits_host, s.logits, V));
            }
        }
        at += n;
    }
    BankState_f32* back = layer_states_alloc(&c);
    gpu_decode_state_to_host(&gs.dec.st, back);
    int diff = 0;
    for (int l = 0; l < c.n_layers; l++) {
        for (int i = 0; i < back[l].slots; i++) diff += back[l].src[i] != s.states[l].src[i] || back[l].allowed[i] != s.states[l].allowed[i];
        for (int i = 0; i < c.n_exact; i++) diff += back[l].last_exact[i] != s.states[l].last_exact[i];
        CHECK(back[l].pos == total && s.states[l].pos == total && back[l].recent_idx == s.states[l].recent_idx &&
                  back[l].recent_filled == s.states[l].recent_filled, "%s layer %d counters: GPU pos %lld idx %d filled %d, CPU %lld %d %d",
              name, l, (long long)back[l].pos, back[l].recent_idx, back[l].recent_filled, (long long)s.states[l].pos, s.states[l].recent_idx,
              s.states[l].recent_filled);
    }
    layer_states_free(back, &c);
    printf("    %s %s: %d tokens in %d stages, logits max rel diff %.2e (prefills from a held state %.2e), final slot sources / flags / "
           "stamps differing %d\n", PRECISION_NAME, name, total, n_stages, worst, worst_prefill, diff);
    CHECK(worst <= DEC_LOGIT_TOL, "%s: logits rel diff %.3g > %.1g", name, worst, DEC_LOGIT_TOL);
#if defined(ENABLE_FP32)
    CHECK(diff == 0, "%s: %d slot sources, flags or stamps differ from the CPU's (other decisions)", name, diff);
#endif
    gpu_session_free(&gs);
    session_free(&s);
    free(tok);
    gpu_model_free(&g);
    model_free_f32(&cpu);
}
GPU_TEST(gpu_decode_prefill_continues_a_held_state) {
    const int a[] = {30, 5, 45, 3, 7, 2, 70};  // W 24, block 32: the ring full, then blocks crossing the carried ring
    dec_continue_vs_cpu(dec_bounded_config(), a, 7, 86, "CoDA bounded");
    ModelConfig c = dec_bounded_config();
    c.window = 40;
    c.mask_unused_memory = 0;
    const int b[] = {10, 3, 20, 0, 50, 1, 33};  // a young ring (13 of 40 slots) carried in, then 33 of 40, then full
    dec_continue_vs_cpu(c, b, 7, 87, "CoDA bounded, W 40 > block, unused memory attended");
}

// Decode from an empty state, one token at a time, equals the chunked prefill of the same tokens
// (the CPU reference's bounded forward) while nothing has been evicted: the first W tokens.
GPU_TEST(gpu_decode_equals_chunked_prefill_within_the_window) {
    ModelConfig c = dec_bounded_config();
    Model_f32 cpu;
    GpuModel g;
    dec_models(&c, 91, &cpu, &g);
    const int W = c.window, V = c.vocab_size;
    int tok[64];
    random_tokens(tok, W, V, 92);
    GpuSession gs;
    gpu_session_init(&gs, &g, W, 42);
    CodaError err;
    double worst = 0;
    CHECK(gpu_session_prefill(&gs, tok, 1, &err) == 0, "%s", err.msg);
    for (int t = 0; t < W; t++) {
        if (t > 0) CHECK(gpu_session__feed(&gs, tok[t], &err) == 0, "%s", err.msg);
        BankState_f32* st = layer_states_alloc(&c);
        layer_states_reset(st, &c, 42);
        model_forward_f32(&cpu, tok, NULL, 1, t + 1, st);  // chunked prefill of tokens 0..t
        worst = fmax(worst, dec_max_rel(gs.dec.logits_host, cpu.logits + (size_t)t * V, V));
        layer_states_free(st, &c);
    }
    printf("    %s: %d tokens one by one vs the chunked prefill of each prefix: logits max rel diff %.2e\n", PRECISION_NAME, W, worst);
    CHECK(worst <= DEC_LOGIT_TOL, "decode vs chunked prefill within the window: %.3g", worst);
    gpu_session_free(&gs);
    gpu_model_free(&g);
    model_free_f32(&cpu);
}

// The graph replays exactly what the eager step computes.
GPU_TEST(gpu_decode_graph_replay_equals_eager_steps) {
    ModelConfig cs[2] = {dec_bounded_config(), gpu_test_config(1, 1)};
    for (int ci = 0; ci < 2; ci++) {
        const ModelConfig c = cs[ci];
        Model_f32 cpu;
        GpuModel g;
        dec_models(&c, 95, &cpu, &g);
        const int P = 45, N = 30, V = c.vocab_size;
        int tok[80];
        random_tokens(tok, P + N, V, 96);
        GpuSession eager, graph;
        gpu_session_init(&eager, &g, P + N, 42);
        eager.dec.use_graph = 0;
        gpu_session_init(&graph, &g, P + N, 42);
        CodaError err;
        CHECK(gpu_session_prefill(&eager, tok, P, &err) == 0 && gpu_session_prefill(&graph, tok, P, &err) == 0, "%s", err.msg);
        int same = 1;
        for (int t = 0; t < N; t++) {
            CHECK(gpu_session__feed(&eager, tok[P + t], &err) == 0 && gpu_session__feed(&graph, tok[P + t], &err) == 0, "%s", err.msg);
            same &= memcmp(eager.dec.logits_host, graph.dec.logits_host, sizeof(float) * V) == 0;
        }
        CHECK(graph.dec.exec != NULL, "no graph was captured");
        CHECK(same, "%s: graph replay logits differ from the eager steps", c.bounded ? "bounded" : "unbounded");
        if (c.bounded) {
            BankState_f32 *a = layer_states_alloc(&c), *b = layer_states_alloc(&c);
            gpu_decode_state_to_host(&eager.dec.st, a);
            gpu_decode_state_to_host(&graph.dec.st, b);
            char what[64] = "";
            int diff = 0;
            for (int l = 0; l < c.n_layers; l++) diff += dec_state_diff(&a[l], &b[l], what, sizeof(what));
            CHECK(diff == 0, "graph vs eager states differ at %s", what);
            layer_states_free(a, &c);
            layer_states_free(b, &c);
        }
        printf("    %s: %d graph replays equal the eager steps bit for bit\n", c.bounded ? "bounded" : "unbounded", N - 1);
        gpu_session_free(&eager);
        gpu_session_free(&graph);
        gpu_model_free(&g);
        model_free_f32(&cpu);
    }
}

// Saved on the GPU and loaded on the GPU, the generation continues exactly; the file loads into the
// CPU session (the same weights checksum and layout) and the CPU's file loads on the GPU; a
// truncated file is refused and the session keeps its state.
GPU_TEST(gpu_decode_state_files_resume_exactly) {
    ModelConfig c = dec_bounded_config();
    Model_f32 cpu;
    GpuModel g;
    dec_models(&c, 101, &cpu, &g);
    const int P = 50, total = 24, first = 10, V = c.vocab_size;
    int tok[64], ref[32], got[32], n;
    random_tokens(tok, P, V, 102);
    Sampling smp = {0.9, 0.95, 20};
    CodaError err;
    char dir[256], path[320], bad[330];
    test_mkdtemp(dir, sizeof(dir), "gpu_state");
    snprintf(path, sizeof(path), "%s/state.bin", dir);
    snprintf(bad, sizeof(bad), "%s/bad.bin", dir);
    GpuSession a;
    gpu_session_init(&a, &g, 0, 7);
    CHECK(gpu_session_prefill(&a, tok, P, &err) == 0, "%s", err.msg);
    CHECK(gpu_session_generate(&a, total, &smp, -1, ref, NULL, NULL, &n, &err) == 0 && n == total, "%s", err.msg);
    gpu_session_free(&a);
    GpuSession b;
    gpu_session_init(&b, &g, 0, 7);
    CHECK(gpu_session_prefill(&b, tok, P, &err) == 0, "%s", err.msg);
    CHECK(gpu_session_generate(&b, first, &smp, -1, got, NULL, NULL, &n, &err) == 0 && n == first, "%s", err.msg);
    CHECK(gpu_session_save_state(&b, path, &err) == 0, "%s", err.msg);
    gpu_session_free(&b);
    GpuSession r;
    gpu_session_init(&r, &g, 0, 1234);  // another seed: the file's RNG must take over
    CHECK(gpu_session_load_state(&r, path, 0, &err) == 0, "%s", err.msg);
    CHECK(r.n_fed == P + first, "tokens fed after the load: %lld", (long long)r.n_fed);
    CHECK(gpu_session_generate(&r, total - first, &smp, -1, got + first, NULL, NULL, &n, &err) == 0, "%s", err.msg);
    CHECK(memcmp(got, ref, sizeof(int) * total) == 0, "resumed GPU generation differs from the uninterrupted one");
    // the CPU session reads the GPU's file (and its logits are the GPU's), and the GPU reads the CPU's
    Session s;
    session_init(&s, &cpu, 1);
    CHECK(state_file_load(path, &s, 0, &err) == 0, "a GPU state file into the CPU session: %s", err.msg);
    CHECK(s.n_fed == P + first, "CPU n_fed %lld", (long long)s.n_fed);
    CHECK(state_file_save(bad, &s, &err) == 0, "%s", err.msg);
    GpuSession x;
    gpu_session_init(&x, &g, 0, 1);
    CHECK(gpu_session_load_state(&x, bad, 0, &err) == 0, "the CPU's state file on the GPU: %s", err.msg);
    CHECK(x.n_fed == P + first, "GPU n_fed %lld after the CPU's file", (long long)x.n_fed);
    // truncated: refused, and the session keeps what it had
    FILE* f = fopen(bad, "r+b");
    CHECK(f && ftruncate(fileno(f), 100) == 0, "truncate");
    if (f) fclose(f);
    CHECK(gpu_session_load_state(&x, bad, 0, &err) != 0 && strstr(err.msg, "truncated"), "truncated file: %s", err.msg);
    CHECK(x.n_fed == P + first && x.has_logits, "the session changed on a refused load");
    GpuModel u;
    ModelConfig cu = gpu_test_config(1, 0);
    gpu_model_create(&u, &cu, TRAIN_NONE);
    GpuSession y;
    gpu_session_init(&y, &u, 8, 1);
    CHECK(gpu_session_load_state(&y, path, 0, &err) != 0 && strstr(err.msg, "unbounded"), "%s", err.msg);
    CHECK(gpu_session_save_state(&y, bad, &err) != 0 && strstr(err.msg, "unbounded"), "%s", err.msg);
    gpu_session_free(&y);
    gpu_model_free(&u);
    gpu_session_free(&x);
    gpu_session_free(&r);
    session_free(&s);
    test_rmtree(dir);
    gpu_model_free(&g);
    model_free_f32(&cpu);
}

// docs/spec.md §6 for coda.c's GPU state, by field, and the allocation equals the sum (host arithmetic:
// runs without a GPU too).
TEST(decode_state_bytes_match_the_formula) {
    ModelConfig c = config_default();
    c.n_kv_heads = 8; c.head_dim = 128; c.n_layers = 32;
    c.bounded = 1; c.window = 256; c.n_exact = 64; c.n_summary = 64;  // the paper's medium state at the Mistral-7B shape
    DecodeStateBytes b = decode_state_bytes_per_layer(&c, 0);
    CHECK(b.kv == 2ull * 8 * 384 * 128 * 4, "kv %zu", b.kv);
    CHECK(b.total == 3145728ull + 384 + 1024 + 512 + 3072 + 16, "per layer %zu", b.total);
    c.bounded = 0;
    b = decode_state_bytes_per_layer(&c, 131072);
    CHECK(b.kv == 2ull * 1024 * 131072 * sizeof(floatX) && b.total == b.kv + 8, "unbounded %zu", b.total);
}
