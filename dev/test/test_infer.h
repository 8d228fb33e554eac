// test_infer.h — the inference library (llmc/ppl.h, session.h, sampling.h, state_file.h, needle.h,
// overrides.h) on tiny models written to a temporary HF directory (CPU only, well under a second each):
//   * sliding window with stride == ctx is chunked evaluation (unbounded and bounded), stride < ctx
//     scores every token exactly once;
//   * bounded chunked PPL == unbounded chunked PPL when ctx <= W (and differs when ctx > W);
//   * streaming carries one state across chunks: it equals one whole-text prefill scored per chunk,
//     and differs from chunked-with-reset once the text exceeds W;
//   * a saved state, loaded into a fresh model, continues generation exactly (greedy and sampled);
//   * unbounded generation (re-run forward) == bounded decode while nothing is evicted;
//   * state-file errors: missing, wrong magic, wrong version, truncated anywhere, trailing bytes, a
//     byte flipped anywhere (checksum), counts that would wrap, another shape, other weights;
//   * config overrides reach the loaded model; docs/spec.md §6 state bytes;
//   * the synthetic needle test: retained in the ring, then in the exact bank; a background-gated
//     "needle" is not (negative control);
//   * the needle in real text (span.h): the sequence, where the span is, the recall count; reset;
//   * make demo's report script: its table, the 2x2 arithmetic and its PNGs.
#pragma once
#include <dirent.h>
#include <vector>
#include <sys/stat.h>
#include <unistd.h>
#include "../../llmc/needle.h"
#include "../../llmc/overrides.h"
#include "../../llmc/ppl.h"
#include "../../llmc/session.h"
#include "../../llmc/span.h"
#include "../../llmc/state_file.h"
#include "test_cpu_model.h"
#include "test_torch_pt.h"  // ptt_run: a program's exit status and output
#ifdef _OPENMP
#include <omp.h>
#endif

// These models are tiny: OpenMP threads only add fork/join cost, and on a loaded machine (more busy
// threads than cores) spinning workers make a 0.2 s test take 30 s. Each test runs single-threaded
// and restores the thread count when it returns.
struct InferTestOneThread {
    int saved;
#ifdef _OPENMP
    InferTestOneThread() { saved = omp_get_max_threads(); omp_set_num_threads(1); }
    ~InferTestOneThread() { omp_set_num_threads(saved); }
#else
    InferTestOneThread() : saved(1) {}
#endif
};


// Writes a tiny model (random init, then every parameter perturbed off its init) as a HF directory.
static void infer_test_write_model(const char* dir, const ModelConfig* c, uint64_t seed) {
    Model_f32 m;
    model_init_f32(&m, c, seed);
    perturb_params_f32(&m, seed + 1, 0.3);
    CodaError err;
    CHECK(hf_save_params(dir, &m.table, m.params, DT_F32, DT_F32, 0, &err) == 0, "%s", err.msg);
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    CHECK(config_write_hf(path, c, &err) == 0, "%s", err.msg);
    model_free_f32(&m);
}

static void infer_test_load(const char* dir, const ConfigOverrides* ov, Model_f32* m) {
    CodaError err;
    if (reference_load_dir(dir, ov, m, NULL, &err) != 0) {
        fprintf(stderr, "    reference_load_dir: %s\n", err.msg);
        exit(2);
    }
}

// A bounded tiny model (W=4, Me=3, Ms=2, block 4) whose write gates admit tokens to the banks.
static ModelConfig infer_test_config(int bounded) {
    ModelConfig c = tiny_config(1, bounded);
    c.write_gate_init_bias = 0.0f;  // gate ~ 0.5: well above both keep thresholds
    return c;
}

TEST(infer_sliding_stride_equal_ctx_is_chunked) {
    InferTestOneThread one_thread;
    char dir[64];
    test_mkdtemp(dir, sizeof(dir), "infer");
    ModelConfig c = infer_test_config(0);
    infer_test_write_model(dir, &c, 101);
    int N = 36, ctx = 12, tok[36];
    random_tokens(tok, N, c.vocab_size, 102);
    for (int bounded = 0; bounded <= 1; bounded++) {
        ConfigOverrides ov = overrides_none();
        ov.bounded = bounded;
        Model_f32 m;
        infer_test_load(dir, &ov, &m);
        CpuScorer cs;
        PplScorer sc_m = cpu_scorer(&cs, &m, 7);
        PplResult s, k, s4;
        CodaError err;
        CHECK(ppl_sliding(&sc_m, tok, N, ctx, ctx, &s, &err) == 0, "%s", err.msg);
        CHECK(ppl_chunked(&sc_m, tok, N, ctx, 0, &k, &err) == 0, "%s", err.msg);
        CHECK(s.n_scored == 3 * (ctx - 1) && k.n_scored == s.n_scored, "bounded=%d scored %lld vs %lld", bounded, (long long)s.n_scored,
              (long long)k.n_scored);
        CHECK(s.n_forwards == 3 && k.n_forwards == 3, "windows %d chunks %d", s.n_forwards, k.n_forwards);
        CHECK_CLOSE(s.nll_sum, k.nll_sum, 0.0, 1e-12);
        // stride < ctx: every token from index 1 on is scored exactly once, with more context
        CHECK(ppl_sliding(&sc_m, tok, N, ctx, 4, &s4, &err) == 0, "%s", err.msg);
        CHECK(s4.n_scored == N - 1, "stride 4: scored %lld of %d", (long long)s4.n_scored, N - 1);
        CHECK(fabs(ppl_mean_nll(&s4) - ppl_mean_nll(&k)) > 1e-6, "more context must change the mean NLL");
        // argument errors
        CHECK(ppl_sliding(&sc_m, tok, N, ctx, ctx + 1, &s, &err) != 0 && strstr(err.msg, "--stride"), "stride > ctx refused");
        CHECK(ppl_chunked(&sc_m, tok, 5, ctx, 0, &k, &err) != 0 && strstr(err.msg, "fewer than one full chunk"), "%s", err.msg);
        // --partial-chunk 1 (§3.2a) keeps the last partial chunk: 40 tokens = 3 chunks + 4 tokens (3 targets)
        int tok40[40];
        random_tokens(tok40, 40, c.vocab_size, 103);
        CHECK(ppl_chunked(&sc_m, tok40, 40, ctx, 1, &k, &err) == 0 && k.n_scored == 3 * 11 + 3, "partial: %lld",
              (long long)k.n_scored);
        CHECK(ppl_chunked(&sc_m, tok40, 40, ctx, 0, &k, &err) == 0 && k.n_scored == 3 * 11, "full only: %lld", (long long)k.n_scored);
        cpu_scorer_free(&cs);
        model_free_f32(&m);
    }
    test_rmtree(dir);
}

TEST(infer_bounded_chunked_equals_unbounded_when_ctx_le_window) {
    InferTestOneThread one_thread;
    char dir[64];
    test_mkdtemp(dir, sizeof(dir), "infer");
    ModelConfig c = infer_test_config(1);
    c.window = 16; c.block_size = 5;
    infer_test_write_model(dir, &c, 201);
    int N = 64, tok[64];
    random_tokens(tok, N, c.vocab_size, 202);
    ConfigOverrides ub = overrides_none();
    ub.bounded = 0;  // the same checkpoint, unbounded (its write_proj / eta tensors are unused)
    Model_f32 mb, mu;
    infer_test_load(dir, NULL, &mb);
    infer_test_load(dir, &ub, &mu);
    CHECK(mb.cfg.bounded == 1 && mu.cfg.bounded == 0, "override");
    CpuScorer csb, csu;
    PplScorer sc_mb = cpu_scorer(&csb, &mb, 3), sc_mu = cpu_scorer(&csu, &mu, 3);
    CodaError err;
    for (int mem = 0; mem < 2; mem++) {
        mb.cfg.mem_init = mem ? MEM_INIT_ZEROS : MEM_INIT_RANDOM_NORMAL;  // never attended: must not matter
        PplResult b, u;
        CHECK(ppl_chunked(&sc_mb, tok, N, 16, 0, &b, &err) == 0, "%s", err.msg);
        CHECK(ppl_chunked(&sc_mu, tok, N, 16, 0, &u, &err) == 0, "%s", err.msg);
        CHECK(b.n_scored == u.n_scored && b.n_scored == 4 * 15, "scored %lld vs %lld", (long long)b.n_scored, (long long)u.n_scored);
        CHECK_CLOSE(b.nll_sum, u.nll_sum, 0.0, 1e-6);
    }
    // ctx > W: tokens are evicted inside a chunk and the two differ (the property above is not vacuous)
    PplResult b, u;
    CHECK(ppl_chunked(&sc_mb, tok, N, 32, 0, &b, &err) == 0, "%s", err.msg);
    CHECK(ppl_chunked(&sc_mu, tok, N, 32, 0, &u, &err) == 0, "%s", err.msg);
    CHECK(fabs(b.nll_sum - u.nll_sum) > 1e-5 * fabs(u.nll_sum), "ctx 32 > W 16: %.9g vs %.9g", b.nll_sum, u.nll_sum);
    // with zero-initialised banks the inference path (persistent states, reset per chunk) is the
    // training forward (a fresh zero state per row), evictions and all
    mb.cfg.mem_init = MEM_INIT_ZEROS;
    CHECK(ppl_chunked(&sc_mb, tok, N, 32, 0, &b, &err) == 0, "%s", err.msg);
    double train_sum = 0;
    int targets[32];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 32; i++) targets[i] = i + 1 < 32 ? tok[32 * k + i + 1] : -1;
        train_sum += model_forward_f32(&mb, tok + 32 * k, targets, 1, 32, NULL) * 31;
    }
    CHECK_CLOSE(b.nll_sum, train_sum, 0.0, 1e-5);
    cpu_scorer_free(&csb);
    cpu_scorer_free(&csu);
    model_free_f32(&mb);
    model_free_f32(&mu);
    test_rmtree(dir);
}

TEST(infer_streaming_carries_one_state_across_chunks) {
    InferTestOneThread one_thread;
    char dir[64];
    test_mkdtemp(dir, sizeof(dir), "infer");
    ModelConfig c = infer_test_config(1);  // W=4, Me=3, Ms=2, block 4
    infer_test_write_model(dir, &c, 301);
    int N = 42, chunk = 8, tok[42];
    random_tokens(tok, N, c.vocab_size, 302);
    Model_f32 m;
    infer_test_load(dir, NULL, &m);
    CpuScorer cs;
    PplScorer sc_m = cpu_scorer(&cs, &m, 5);
    CodaError err;
    PplResult st, ck;
    CHECK(ppl_streaming(&sc_m, tok, N, chunk, &st, &err) == 0, "%s", err.msg);
    const BankState_f32* fin = cs.states;  // the final state stays in the scorer
    // 5 full chunks of 7 targets + a last chunk of 2 tokens (1 target)
    CHECK(st.n_scored == 5 * 7 + 1 && st.n_forwards == 6, "scored %lld in %d chunks", (long long)st.n_scored, st.n_forwards);
    CHECK(fin && fin[0].pos == N && fin[1].pos == N, "positions accumulate: %lld", fin ? (long long)fin[0].pos : -1LL);
    int bank_used = 0;
    for (int l = 0; fin && l < c.n_layers; l++)
        for (int k = c.window; k < config_state_slots(&c); k++) bank_used += fin[l].allowed[k];
    CHECK(bank_used > 0, "the banks were written (the state carries more than the ring)");
    // One whole-text prefill from the same empty state, scoring the same targets, is the same
    // computation when the chunk is a multiple of the block (same block boundaries).
    BankState_f32* one = layer_states_alloc(&m.cfg);
    layer_states_reset(one, &m.cfg, 5);
    int targets[42];
    for (int i = 0; i < N; i++) targets[i] = (i + 1 < N && (i + 1) % chunk != 0) ? tok[i + 1] : -1;
    model_forward_f32(&m, tok, targets, 1, N, one);
    double whole = 0;
    int64_t n_whole = 0;
    for (int i = 0; i < N; i++) if (targets[i] >= 0) { whole += m.losses[i]; n_whole++; }
    CHECK(n_whole == st.n_scored, "%lld vs %lld", (long long)n_whole, (long long)st.n_scored);
    CHECK_CLOSE(st.nll_sum, whole, 0.0, 1e-5);
    layer_states_free(one, &m.cfg);
    // Chunked with a reset per chunk scores the same targets of the first 5 chunks but each from an
    // empty state: once the text exceeds W the results differ.
    PplResult st40;
    CHECK(ppl_streaming(&sc_m, tok, 40, chunk, &st40, &err) == 0, "%s", err.msg);
    CHECK(ppl_chunked(&sc_m, tok, 40, chunk, 0, &ck, &err) == 0, "%s", err.msg);
    CHECK(ck.n_scored == st40.n_scored && ck.n_scored == 35, "%lld vs %lld", (long long)ck.n_scored, (long long)st40.n_scored);
    CHECK(fabs(ck.nll_sum - st40.nll_sum) > 1e-4 * fabs(ck.nll_sum), "streaming %.9g vs chunked %.9g", st40.nll_sum, ck.nll_sum);
    // ... and on a text that fits one chunk they are the same thing
    CHECK(ppl_streaming(&sc_m, tok, chunk, chunk, &st40, &err) == 0, "%s", err.msg);
    CHECK(ppl_chunked(&sc_m, tok, chunk, chunk, 0, &ck, &err) == 0, "%s", err.msg);
    CHECK(st40.nll_sum == ck.nll_sum && st40.n_scored == ck.n_scored, "single chunk: %.9g vs %.9g", st40.nll_sum, ck.nll_sum);
    cpu_scorer_free(&cs);
    model_free_f32(&m);
    // an unbounded model has no state to stream
    ConfigOverrides ub = overrides_none();
    ub.bounded = 0;
    infer_test_load(dir, &ub, &m);
    sc_m = cpu_scorer(&cs, &m, 5);
    CHECK(ppl_streaming(&sc_m, tok, N, chunk, &st, &err) != 0 && strstr(err.msg, "bounded"), "unbounded refused");
    cpu_scorer_free(&cs);
    model_free_f32(&m);
    test_rmtree(dir);
}

static int infer_test_states_equal(const BankState_f32* a, const BankState_f32* b, int L) {
    for (int l = 0; l < L; l++) {
        const BankState_f32 *x = &a[l], *y = &b[l];
        size_t kv = (size_t)x->Hkv * x->slots * x->Dh;
        if (x->pos != y->pos || x->recent_idx != y->recent_idx || x->recent_filled != y->recent_filled) return 0;
        if (memcmp(x->k, y->k, kv * sizeof(float)) || memcmp(x->v, y->v, kv * sizeof(float))) return 0;
        if (memcmp(x->allowed, y->allowed, (size_t)x->slots) || memcmp(x->g_ring, y->g_ring, sizeof(float) * x->W)) return 0;
        if (memcmp(x->src, y->src, 8 * (size_t)x->slots) || memcmp(x->last_exact, y->last_exact, 8 * (size_t)x->Me)) return 0;
    }
    return 1;
}

TEST(infer_state_save_load_continues_generation_exactly) {
    InferTestOneThread one_thread;
    char dir[64], state[128];
    test_mkdtemp(dir, sizeof(dir), "infer");
    snprintf(state, sizeof(state), "%s/state.bin", dir);
    ModelConfig c = infer_test_config(1);
    infer_test_write_model(dir, &c, 401);
    int prompt[9];
    random_tokens(prompt, 9, c.vocab_size, 402);
    const int total = 30, first = 11;
    Sampling modes[2] = {{0.0, 1.0}, {0.9, 0.95}};
    for (int mi = 0; mi < 2; mi++) {
        CodaError err;
        // uninterrupted
        Model_f32 m;
        infer_test_load(dir, NULL, &m);
        Session a;
        session_init(&a, &m, 17);
        int ref[30], n = 0;
        CHECK(session_prefill(&a, prompt, 9, &err) == 0, "%s", err.msg);
        CHECK(session_generate(&a, total, &modes[mi], -1, ref, NULL, NULL, &n, &err) == 0 && n == total, "%s", err.msg);
        int distinct = 0;
        for (int i = 0; i < total; i++) distinct += i == 0 || ref[i] != ref[i - 1];
        CHECK(distinct > 1, "mode %d: the generated tokens vary (%d runs)", mi, distinct);
        // interrupted: generate `first`, save, free everything
        Session b;
        session_init(&b, &m, 17);
        int got[30];
        CHECK(session_prefill(&b, prompt, 9, &err) == 0, "%s", err.msg);
        CHECK(session_generate(&b, first, &modes[mi], -1, got, NULL, NULL, &n, &err) == 0 && n == first, "%s", err.msg);
        CHECK(state_file_save(state, &b, &err) == 0, "%s", err.msg);
        CHECK(b.states[0].pos == 9 + first, "every generated token is in the state: pos %lld", (long long)b.states[0].pos);
        session_free(&b);
        // resume in a fresh model and session (other mem-init seed: the loaded state replaces it)
        Model_f32 m2;
        infer_test_load(dir, NULL, &m2);
        Session r;
        session_init(&r, &m2, 999);
        CHECK(state_file_load(state, &r, 0, &err) == 0, "%s", err.msg);
        CHECK(r.n_fed == 9 + first && r.has_logits, "fed %lld", (long long)r.n_fed);
        CHECK(session_generate(&r, total - first, &modes[mi], -1, got + first, NULL, NULL, &n, &err) == 0 && n == total - first, "%s", err.msg);
        int same = 1;
        for (int i = 0; i < total; i++) same &= got[i] == ref[i];
        CHECK(same, "mode %d: resumed generation differs from the uninterrupted one", mi);
        CHECK(infer_test_states_equal(a.states, r.states, c.n_layers), "mode %d: final states differ", mi);
        int bank_used = 0;
        for (int k = c.window; k < config_state_slots(&c); k++) bank_used += r.states[0].allowed[k];
        CHECK(bank_used > 0 && r.states[0].pos > c.window + c.n_exact + c.n_summary, "evictions into the banks happened");
        session_free(&a);
        session_free(&r);
        model_free_f32(&m);
        model_free_f32(&m2);
    }
    test_rmtree(dir);
}

TEST(infer_unbounded_generation_matches_bounded_decode_before_evictions) {
    InferTestOneThread one_thread;
    char dir[64];
    test_mkdtemp(dir, sizeof(dir), "infer");
    ModelConfig c = infer_test_config(1);
    c.window = 32; c.block_size = 3;
    infer_test_write_model(dir, &c, 501);
    ConfigOverrides ub = overrides_none();
    ub.bounded = 0;
    Model_f32 mb, mu;
    infer_test_load(dir, NULL, &mb);
    infer_test_load(dir, &ub, &mu);
    int prompt[7], gb[16], gu[16], gp[16], nb, nu, np;
    random_tokens(prompt, 7, c.vocab_size, 502);
    Sampling greedy = {0.0, 1.0}, tiny_p = {1.0, 1e-6};
    Session sb, su, sp;
    CodaError err;
    session_init(&sb, &mb, 1);
    session_init(&su, &mu, 1);
    session_init(&sp, &mb, 1);
    CHECK(session_prefill(&sb, prompt, 7, &err) == 0 && session_prefill(&su, prompt, 7, &err) == 0 &&
              session_prefill(&sp, prompt, 7, &err) == 0, "%s", err.msg);
    CHECK(session_generate(&sb, 16, &greedy, -1, gb, NULL, NULL, &nb, &err) == 0, "%s", err.msg);
    CHECK(session_generate(&su, 16, &greedy, -1, gu, NULL, NULL, &nu, &err) == 0, "%s", err.msg);
    CHECK(session_generate(&sp, 16, &tiny_p, -1, gp, NULL, NULL, &np, &err) == 0, "%s", err.msg);
    int same = nb == 16 && nu == 16 && np == 16;
    for (int i = 0; i < 16 && same; i++) same = gb[i] == gu[i] && gp[i] == gb[i];
    CHECK(same, "bounded decode (7 + 16 <= W=32), unbounded re-forward and top-p 1e-6 sampling agree");
    CHECK(su.n_ctx == 7 + 15, "unbounded context: %lld", (long long)su.n_ctx);
    CodaError e2;
    CHECK(state_file_save("/tmp/never_written", &su, &e2) != 0 && strstr(e2.msg, "unbounded"), "unbounded state save refused");
    // stop at EOS: make the first greedy token the EOS id
    Session se;
    session_init(&se, &mb, 1);
    CHECK(session_prefill(&se, prompt, 7, &err) == 0, "%s", err.msg);
    int ge[16], ne;
    CHECK(session_generate(&se, 16, &greedy, gb[0], ge, NULL, NULL, &ne, &err) == 0 && ne == 1 && ge[0] == gb[0], "stopped after EOS: %d", ne);
    session_free(&se);
    session_free(&sb);
    session_free(&su);
    session_free(&sp);
    model_free_f32(&mb);
    model_free_f32(&mu);
    test_rmtree(dir);
}

static void infer_test_write_bytes(const char* path, const void* p, size_t n) {
    FILE* f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    fwrite(p, 1, n, f);
    fclose(f);
}

TEST(infer_state_load_errors) {
    InferTestOneThread one_thread;
    char dir[64], good[128], bad[128];
    test_mkdtemp(dir, sizeof(dir), "infer");
    snprintf(good, sizeof(good), "%s/good.bin", dir);
    snprintf(bad, sizeof(bad), "%s/bad.bin", dir);
    ModelConfig c = infer_test_config(1);
    infer_test_write_model(dir, &c, 601);
    Model_f32 m;
    infer_test_load(dir, NULL, &m);
    Session s;
    session_init(&s, &m, 3);
    int prompt[6];
    random_tokens(prompt, 6, c.vocab_size, 602);
    CodaError err;
    CHECK(session_prefill(&s, prompt, 6, &err) == 0, "%s", err.msg);
    CHECK(state_file_save(good, &s, &err) == 0, "%s", err.msg);
    FILE* f = fopen(good, "rb");
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char* bytes = (char*)malloc(n + 16);
    CHECK(fread(bytes, 1, n, f) == n, "read back");
    fclose(f);
    int32_t fp[STATE_FILE_N_FP];
    state_file_fingerprint(&c, fp);
    uint64_t size_from_fp = 0;
    CHECK(state_file_bytes(fp, 1, &size_from_fp) == 0 && size_from_fp == n, "size %zu, from the fingerprint %llu", n,
          (unsigned long long)size_from_fp);
    // a fresh session (other seed) that a failed load must leave untouched
    Session t;
    session_init(&t, &m, 4);
    CHECK(session_prefill(&t, prompt, 3, &err) == 0, "%s", err.msg);
    // Damaged files: `len` bytes of the good file, an int32 patched at `patch_at` (-1: none), then
    // re-sealed with a matching checksum when `seal` (so that the check behind the checksum speaks).
    const int FP_AT = STATE_FILE_CHECKSUM_AT + 8, LAYER0 = STATE_FILE_HEADER_BYTES;
    struct { const char* what; size_t len; int patch_at; int32_t patch; int seal; const char* expect; } cases[] = {
        {"wrong magic", n, 0, 0x41414141, 0, "wrong magic"},
        {"version 1", n, 8, 1, 0, "version 1 is not supported (this build reads version 2; version 1 had no checksum"},
        {"version 3", n, 8, 3, 0, "version 3 is not supported"},
        {"truncated body", n - 10, -1, 0, 0, "truncated state file"},
        {"truncated by one", n - 1, -1, 0, 0, "truncated state file"},
        {"truncated header", 20, -1, 0, 0, "truncated state file"},
        {"tiny file", 5, -1, 0, 0, "truncated"},
        {"empty file", 0, -1, 0, 0, "truncated"},
        {"trailing bytes", n + 3, -1, 0, 0, "3 unexpected trailing bytes"},
        {"flipped body byte", n, LAYER0 + 40, 0x01020304, 0, "checksum mismatch"},
        {"flipped last byte", n, (int)n - 4, 0x7f7f7f7f, 0, "checksum mismatch"},
        {"flipped checksum", n, STATE_FILE_CHECKSUM_AT, 12345, 0, "checksum mismatch"},
        {"reserved field", n, 12, 1, 1, "corrupt state file header"},
        {"negative count", n, FP_AT + 3 * 4, -2, 1, "gives no valid size"},
        {"huge counts", n, FP_AT + 4 * 4, INT32_MAX, 1, "truncated state file"},  // Hkv * slots * Dh * 8: a valid, huge size
        {"window at INT32_MAX", n, FP_AT + 0 * 4, INT32_MAX, 1, "truncated state file"},
        {"another shape, same size", n, FP_AT + 7 * 4, 999, 1, "the file has dim = 999, the model 16"},
        {"another model's weights", n, FP_AT + 4 * STATE_FILE_N_FP, 777, 1, "another model's weights"},
        {"corrupt counter", n, LAYER0 + 4, 99, 1, "corrupt state file: layer 0 has recent_idx"},
        {"corrupt position", n, LAYER0 + 8, 5, 1, "corrupt state file: layer 0"},
        {"corrupt mask byte", n, LAYER0 + 16 + 2 * 2 * 9 * 8 * 4, 7, 1, "mask byte 7"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char* b = (char*)calloc(cases[i].len + 16, 1);
        memcpy(b, bytes, cases[i].len < n ? cases[i].len : n);
        if (cases[i].patch_at >= 0) memcpy(b + cases[i].patch_at, &cases[i].patch, 4);
        if (cases[i].seal) state_file_seal(b, cases[i].len);
        infer_test_write_bytes(bad, b, cases[i].len);
        err.msg[0] = 0;
        CHECK(state_file_load(bad, &t, 0, &err) != 0, "%s accepted", cases[i].what);
        CHECK(strstr(err.msg, cases[i].expect) && strstr(err.msg, bad), "%s: message '%s'", cases[i].what, err.msg);
        CHECK(t.n_fed == 3 && t.states[0].pos == 3, "%s: failed load changed the session", cases[i].what);
        err.msg[0] = 0;  // the reader from memory says the same
        CHECK(state_file_parse(b, cases[i].len, "mem.bin", &t, 0, &err) != 0 && strstr(err.msg, cases[i].expect), "%s, from memory: '%s'",
              cases[i].what, err.msg);
        free(b);
    }
    // a byte flipped anywhere is refused
    int n_accepted = 0;
    for (size_t i = 0; i < n; i++) {
        bytes[i] ^= 0x20;
        n_accepted += state_file_parse(bytes, n, "flip.bin", &t, 0, &err) == 0;
        bytes[i] ^= 0x20;
    }
    CHECK(n_accepted == 0 && t.n_fed == 3, "%d of %zu single-byte flips accepted", n_accepted, n);
    // counts whose size would wrap 64 bits (W, Me, Ms and Hkv at INT32_MAX): refused as such, not
    // wrapped into a small size that might match the file
    int32_t wrap[STATE_FILE_N_FP];
    memcpy(wrap, fp, sizeof(wrap));
    for (int i = 0; i < 4; i++) wrap[i] = INT32_MAX;
    uint64_t wrapped = 0;
    CHECK(state_file_bytes(wrap, 1, &wrapped) != 0, "a size beyond 64 bits is refused, not wrapped (%llu)", (unsigned long long)wrapped);
    memcpy(bytes + FP_AT, wrap, sizeof(wrap));
    state_file_seal(bytes, n);
    infer_test_write_bytes(bad, bytes, n);
    CHECK(state_file_load(bad, &t, 0, &err) != 0 && strstr(err.msg, "gives no valid size") && strstr(err.msg, bad), "%s", err.msg);
    memcpy(bytes + FP_AT, fp, sizeof(fp));
    state_file_seal(bytes, n);
    CHECK(state_file_load("/nonexistent/state.bin", &t, 0, &err) != 0 && strstr(err.msg, "cannot open"), "%s", err.msg);
    // wrong shape: the same file into a model with another window / layer count
    ConfigOverrides ov = overrides_none();
    ov.window = 5;
    Model_f32 m5;
    infer_test_load(dir, &ov, &m5);
    Session u;
    session_init(&u, &m5, 3);
    CHECK(state_file_load(good, &u, 0, &err) != 0 && strstr(err.msg, "W (window) = 4, the model 5"), "%s", err.msg);
    session_free(&u);
    model_free_f32(&m5);
    ov = overrides_none();
    ov.n_summary = 0;
    infer_test_load(dir, &ov, &m5);
    session_init(&u, &m5, 3);
    CHECK(state_file_load(good, &u, 0, &err) != 0 && strstr(err.msg, "Ms (summary bank) = 2, the model 0"), "%s", err.msg);
    session_free(&u);
    model_free_f32(&m5);
    // the same shape with other weights (another checkpoint of the same config)
    char dir2[64];
    test_mkdtemp(dir2, sizeof(dir2), "infer");
    infer_test_write_model(dir2, &c, 603);
    infer_test_load(dir2, NULL, &m5);
    session_init(&u, &m5, 3);
    CHECK(state_file_load(good, &u, 0, &err) != 0 && strstr(err.msg, "another model's weights") && strstr(err.msg, good), "%s", err.msg);
    session_free(&u);
    model_free_f32(&m5);
    test_rmtree(dir2);
    // an unbounded model has no state
    ov = overrides_none();
    ov.bounded = 0;
    infer_test_load(dir, &ov, &m5);
    session_init(&u, &m5, 3);
    CHECK(state_file_load(good, &u, 0, &err) != 0 && strstr(err.msg, "unbounded"), "%s", err.msg);
    session_free(&u);
    model_free_f32(&m5);
    // and the good file still loads, equal to what was saved
    CHECK(state_file_load(good, &t, 0, &err) == 0, "%s", err.msg);
    CHECK(infer_test_states_equal(t.states, s.states, c.n_layers) && memcmp(t.logits, s.logits, sizeof(float) * c.vocab_size) == 0,
          "round trip");
    free(bytes);
    session_free(&s);
    session_free(&t);
    model_free_f32(&m);
    test_rmtree(dir);
}

TEST(infer_overrides_reach_the_config_and_state_bytes) {
    InferTestOneThread one_thread;
    CodaError err;
    ModelConfig cc;
    CHECK(ppl_default_stride(2048) == 512 && ppl_default_stride(256) == 256, "stride: 512, or ctx if smaller");
    // overrides reach the model config; an override that breaks the config is refused with the path
    char dir[64];
    test_mkdtemp(dir, sizeof(dir), "infer");
    ModelConfig c = infer_test_config(0);
    infer_test_write_model(dir, &c, 701);
    ConfigOverrides ov = overrides_none();
    ov.bounded = 1; ov.window = 6; ov.n_exact = 2; ov.n_summary = 1; ov.block_size = 2; ov.rope_theta = 500; ov.mem_init = MEM_INIT_ZEROS;
    ov.exact_cands = 3; ov.summary_cands = 5; ov.candidate_order = CAND_ORDER_REFERENCE;
    Model_f32 m;
    HfLoadReport rep;
    CHECK(reference_load_dir(dir, &ov, &m, &rep, &err) == 0, "%s", err.msg);
    CHECK(m.cfg.bounded && m.cfg.window == 6 && m.cfg.n_exact == 2 && m.cfg.n_summary == 1 && m.cfg.block_size == 2 &&
              config_rope_base(&m.cfg) == 500 && m.cfg.mem_init == MEM_INIT_ZEROS && m.cfg.exact_candidates_per_block == 3 &&
              m.cfg.summary_candidates_per_block == 5 && m.cfg.candidate_order == CAND_ORDER_REFERENCE, "overrides applied");
    CHECK(rep.n_coda_missing == 3 * c.n_layers, "write_proj w/b and eta are new in a bounded run of an unbounded checkpoint: %d",
          rep.n_coda_missing);
    model_free_f32(&m);
    // docs/spec.md §6 table, bench model (Hkv=2, Dh=64), medium 256/64/64, minus the two norm-cache terms coda.c does not keep
    ModelConfig bench = config_default();
    bench.n_kv_heads = 2; bench.head_dim = 64;
    StateBytes sb = state_bytes(&bench, 2);
    CHECK(sb.total == 223104 - 2 * 64 * 64 * 2 - 2 * 64 * 32 * 2, "medium bench state: %zu", sb.total);
    // a config without a "coda" object (a Hugging Face base) switched to bounded without any size:
    // refused, naming the flags; one size given: the others are coda.c's defaults, as documented
    char path[200];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE* f = fopen(path, "w");
    CHECK(f != NULL, "rewrite %s", path);
    if (f) {
        fprintf(f, "{\"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
                   "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, \"rms_norm_eps\": 1e-5, "
                   "\"rope_theta\": 10000.0, \"tie_word_embeddings\": %s}", c.vocab_size, c.dim, c.ffn_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim,
                c.tie_embeddings ? "true" : "false");
        fclose(f);
    }
    ov = overrides_none();
    ov.bounded = 1;
    CHECK(config_load_with_overrides(dir, &ov, &cc, &err) != 0 && strstr(err.msg, "--bounded-config") && strstr(err.msg, "--window"), "%s",
          err.msg);
    ov.n_summary = 8;
    CHECK(config_load_with_overrides(dir, &ov, &cc, &err) == 0 && cc.bounded && cc.n_summary == 8, "%s", err.msg);
    ov.n_summary = -1;
    ov.bounded = -1;
    CHECK(config_load_with_overrides(dir, &ov, &cc, &err) == 0 && !cc.bounded, "%s", err.msg);
    infer_test_write_model(dir, &c, 701);  // back to coda.c's own config (it names a state: --bounded 1 alone is fine)
    ov.bounded = 1;
    CHECK(config_load_with_overrides(dir, &ov, &cc, &err) == 0 && cc.bounded && cc.window == c.window, "%s", err.msg);
    ov = overrides_none();
    ov.bounded = 1; ov.window = 0;
    // window 0 via the struct (the CLI refuses it earlier): config_validate names the field
    CHECK(reference_load_dir(dir, &ov, &m, NULL, &err) != 0 && strstr(err.msg, "window") && strstr(err.msg, "overrides"), "%s", err.msg);
    test_rmtree(dir);
}

// The demo's candidate counts (8 exact, 64 summary): the candidate order decides retention (docs/spec.md §3.1,
// §11.16). coda.c's default hands the needle to the exact bank; the reference's literal order gives
// the exact bank the 8 oldest background tokens and loses the needle in fp32, as the reference does.
TEST(infer_needle_candidate_order_decides_retention) {
    InferTestOneThread one_thread;
    ConfigOverrides ov = overrides_none();
    ov.window = 32; ov.n_exact = 8; ov.n_summary = 8; ov.block_size = 128;  // demo: 8 / 64 candidates
    ModelConfig c = needle_config(&ov);
    c.dim = 128; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 32;
    CHECK(c.exact_candidates_per_block == 8 && c.summary_candidates_per_block == 64 && c.candidate_order == CAND_ORDER_BY_GATE,
          "defaults %d/%d order %d", c.exact_candidates_per_block, c.summary_candidates_per_block, (int)c.candidate_order);
    CodaError err;
    int lengths[] = {256, 1024};
    for (int i = 0; i < 2; i++) {
        NeedleResult r;
        c.candidate_order = CAND_ORDER_BY_GATE;
        CHECK(needle_run(&c, lengths[i], 40, 5.0, 11, &r, &err) == 0, "%s", err.msg);
        CHECK(r.retained && r.where == 2 && r.slot_src == 40 && r.exact_used == 1, "by_gate, length %d: retained %d where %d src %lld used %d",
              lengths[i], r.retained, r.where, (long long)r.slot_src, r.exact_used);
        c.candidate_order = CAND_ORDER_REFERENCE;
        CHECK(needle_run(&c, lengths[i], 40, 5.0, 11, &r, &err) == 0, "%s", err.msg);
        CHECK(!r.retained && r.exact_used == 0, "reference order, length %d: retained %d (cos %.6f), exact used %d", lengths[i], r.retained,
              r.best_cos, r.exact_used);
    }
}

TEST(infer_needle_retained_by_ring_and_exact_bank) {
    InferTestOneThread one_thread;
    // docs/protocol.md §4's synthetic needle test, scaled down (D=128, W=32, Me=Ms=8, block 64). The exact and
    // summary banks get the same number of candidates (8), so the candidate list is the top-8 by gate
    // and always holds the needle (see infer_needle's comment on the demo's 8 / 64).
    ConfigOverrides ov = overrides_none();
    ov.window = 32; ov.n_exact = 8; ov.n_summary = 8; ov.block_size = 64; ov.exact_cands = 8; ov.summary_cands = 8;
    ModelConfig c = needle_config(&ov);
    c.dim = 128; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 32;
    CodaError err;
    int lengths[] = {24, 256, 600};
    for (int i = 0; i < 3; i++) {
        NeedleResult r;
        CHECK(needle_run(&c, lengths[i], 10, 5.0, 11, &r, &err) == 0, "%s", err.msg);
        CHECK(r.retained && r.slot_src == 10 && r.best_cos > 0.999999, "length %d: cos %.7f slot %d holds %lld", lengths[i], r.best_cos,
              r.slot, (long long)r.slot_src);
        CHECK(r.where == (lengths[i] <= c.window ? 1 : 2), "length %d: found in %d", lengths[i], r.where);
        CHECK(r.needle_gate > 0.99, "needle gate %.4f", r.needle_gate);
        CHECK(r.exact_used == (lengths[i] <= c.window ? 0 : 1), "length %d: only the needle enters the exact bank (%d used)", lengths[i],
              r.exact_used);
    }
    // negative control: a "needle" like the background (gate ~ 0.007) is never admitted and is lost
    // once it leaves the ring
    NeedleResult r;
    CHECK(needle_run(&c, 256, 10, -5.0, 11, &r, &err) == 0, "%s", err.msg);
    CHECK(!r.retained && r.exact_used == 0 && r.best_cos < 0.99, "background token retained? cos %.6f, %d exact used", r.best_cos,
          r.exact_used);
    CHECK(needle_run(&c, 256, 300, 5.0, 11, &r, &err) != 0 && strstr(err.msg, "outside"), "%s", err.msg);
}

// sample_token (llmc/sampling.h) on a fixed row of logits: greedy is the argmax (lowest id on ties);
// top-k draws only among the k most likely, top-p only within the nucleus, top-k = 1 is greedy at
// any temperature; draws at a high temperature cover the whole kept set and follow the seed.
TEST(sampling_greedy_top_k_top_p_and_the_seed) {
    const float logits[8] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 0.0f, 1.0f, -2.0f};  // order: 1 = 3 > 4 > 6 > 0 > 5 > 2 > 7
    Rng rng;
    rng_seed(&rng, 1);
    Sampling greedy = {0.0, 1.0, 0};
    uint64_t before = rng.state;
    CHECK(sample_token(logits, 8, &greedy, &rng) == 1, "greedy: the lowest id among the tied maxima");
    CHECK(rng.state == before, "greedy draws nothing from the RNG");
    struct { Sampling s; int allowed[8]; } cases[] = {
        {{5.0, 1.0, 1}, {0, 1, 0, 0, 0, 0, 0, 0}},     // top-k 1: greedy
        {{5.0, 1.0, 3}, {0, 1, 0, 1, 1, 0, 0, 0}},     // the three most likely
        {{5.0, 0.3, 0}, {0, 1, 0, 1, 0, 0, 0, 0}},     // nucleus 0.3 at T=5: ids 1 and 3 (2 x ~0.17 of the mass)
        {{5.0, 0.99, 2}, {0, 1, 0, 1, 0, 0, 0, 0}},    // top-k before top-p
        {{100.0, 1.0, 0}, {1, 1, 1, 1, 1, 1, 1, 1}},   // everything, nearly uniform
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        int seen[8] = {0};
        rng_seed(&rng, 7);
        for (int i = 0; i < 2000; i++) seen[sample_token(logits, 8, &cases[c].s, &rng)]++;
        for (int id = 0; id < 8; id++)
            CHECK(cases[c].allowed[id] ? seen[id] > 0 : seen[id] == 0, "case %zu: id %d drawn %d times (allowed %d)", c, id, seen[id],
                  cases[c].allowed[id]);
    }
    // the same seed, the same draws; another seed, other draws
    Sampling s = {1.5, 0.95, 5};
    int a[64], b[64], d[64], same = 1, differ = 0;
    Rng r1, r2, r3;
    rng_seed(&r1, 11); rng_seed(&r2, 11); rng_seed(&r3, 12);
    for (int i = 0; i < 64; i++) {
        a[i] = sample_token(logits, 8, &s, &r1);
        b[i] = sample_token(logits, 8, &s, &r2);
        d[i] = sample_token(logits, 8, &s, &r3);
        same &= a[i] == b[i];
        differ |= a[i] != d[i];
    }
    CHECK(same && differ, "seeded: same %d, another seed differs %d", same, differ);
}

// docs/protocol.md §3.3's context sweep: §3.2b at each length that fits the text, the same numbers as
// a chunked run at that length; lengths longer than the text are marked as not run.
TEST(infer_context_sweep_is_chunked_at_each_length) {
    InferTestOneThread one_thread;
    ModelConfig c = infer_test_config(1);
    Model_f32 m;
    model_init_f32(&m, &c, 131);
    perturb_params_f32(&m, 132, 0.3);
    const int N = 1100;  // two chunks of 512, one of 1024, none of 2048 and up
    int* tok = (int*)malloc(sizeof(int) * N);
    random_tokens(tok, N, c.vocab_size, 133);
    CpuScorer cs;
    PplScorer sc = cpu_scorer(&cs, &m, 9);
    PplResult res[PPL_SWEEP_N], k;
    CodaError err;
    CHECK(ppl_context_sweep(&sc, tok, N, res, &err) == 0, "%s", err.msg);
    CHECK(res[0].n_forwards == 2 && res[0].n_scored == 2 * 511 && res[1].n_forwards == 1 && res[1].n_scored == 1023, "512: %d/%lld 1024: %d/%lld",
          res[0].n_forwards, (long long)res[0].n_scored, res[1].n_forwards, (long long)res[1].n_scored);
    for (int i = 2; i < PPL_SWEEP_N; i++) CHECK(res[i].n_forwards == 0 && res[i].n_scored == 0, "length %d ran", PPL_SWEEP_CTX[i]);
    CHECK(ppl_chunked(&sc, tok, N, 1024, 0, &k, &err) == 0, "%s", err.msg);
    CHECK(k.nll_sum == res[1].nll_sum && k.n_scored == res[1].n_scored, "sweep 1024 %.9g vs chunked %.9g", res[1].nll_sum, k.nll_sum);
    CHECK(ppl_context_sweep(&sc, tok, 300, res, &err) != 0 && strstr(err.msg, "512"), "%s", err.msg);
    cpu_scorer_free(&cs);
    free(tok);
    model_free_f32(&m);
}

// The needle in real text (llmc/span.h): the sequence is the haystack with the span inserted; the
// span is found in the ring while it is among the last W tokens, and nowhere once it has left a
// state with no exact bank; a reset session equals a fresh one.
TEST(span_sequence_location_and_session_reset) {
    InferTestOneThread one_thread;
    CodaError err;
    int hay[64], span[3] = {1, 2, 3}, seq[64];  // ids below the tiny model's vocabulary of 29
    for (int i = 0; i < 64; i++) hay[i] = 4 + i % 25;
    CHECK(span_build_sequence(hay, 64, span, 3, 5, 12, seq, &err) == 0, "%s", err.msg);
    const int want[12] = {4, 5, 6, 7, 8, 1, 2, 3, 9, 10, 11, 12};
    for (int i = 0; i < 12; i++) CHECK(seq[i] == want[i], "seq[%d] = %d, want %d", i, seq[i], want[i]);
    CHECK(span_build_sequence(hay, 64, span, 3, 10, 12, seq, &err) != 0 && strstr(err.msg, "does not fit"), "%s", err.msg);
    CHECK(span_build_sequence(hay, 8, span, 3, 0, 12, seq, &err) != 0 && strstr(err.msg, "haystack"), "%s", err.msg);
    CHECK(span_build_sequence(hay, 64, span, 0, 0, 12, seq, &err) != 0 && strstr(err.msg, "empty"), "%s", err.msg);
    const int got[4] = {1, 2, 9, 3};
    CHECK(span_recall_prefix(got, span, 3) == 2 && span_recall_prefix(got + 2, span, 2) == 0, "recall counts the matching prefix");

    ModelConfig c = infer_test_config(1);  // W=4, Me=3, Ms=2, block 4
    Model_f32 m;
    model_init_f32(&m, &c, 811);
    perturb_params_f32(&m, 812, 0.3);
    int ring[8], exact[8];
    Session s;
    session_init(&s, &m, 5);
    CHECK(span_build_sequence(hay, 64, span, 3, 1, 4, seq, &err) == 0, "%s", err.msg);
    CHECK(session_prefill(&s, seq, 4, &err) == 0, "%s", err.msg);  // 4 tokens, W = 4: all in the ring
    span_locate(s.states, &c, 1, 3, ring, exact);
    for (int l = 0; l < c.n_layers; l++) CHECK(ring[l] == 3 && exact[l] == 0, "layer %d: ring %d exact %d (want 3, 0)", l, ring[l], exact[l]);
    std::vector<float> first(s.logits, s.logits + c.vocab_size);
    CHECK(span_build_sequence(hay, 64, span, 3, 1, 40, seq, &err) == 0, "%s", err.msg);
    CHECK(session_prefill(&s, seq + 4, 36, &err) == 0, "%s", err.msg);
    span_locate(s.states, &c, 1, 3, ring, exact);
    int held = 0;
    for (int l = 0; l < c.n_layers; l++) {
        CHECK(ring[l] == 0 && exact[l] <= 3, "layer %d after 40 tokens: ring %d exact %d", l, ring[l], exact[l]);
        held += exact[l];
    }
    printf("    span of 3 at position 1, 40 tokens later: exact-bank token-layers %d (W=4, Me=3)\n", held);
    session_reset(&s);
    CHECK(s.n_fed == 0 && !s.has_logits && s.states[0].pos == 0, "reset: nothing fed");
    CHECK(session_prefill(&s, seq, 4, &err) == 0, "%s", err.msg);
    CHECK(memcmp(first.data(), s.logits, sizeof(float) * c.vocab_size) == 0, "a reset session prefills exactly as a fresh one");
    // span_measure over the CPU session: the span (cue 1 token + answer 2) inside the ring at n = 4,
    // the same result twice (it resets the state first), and the recall equal to a direct greedy run
    const SpanBackend be = {&s, [](void* x) { session_reset((Session*)x); },
                            [](void* x, const int* ids, int n, CodaError* e) { return session_prefill((Session*)x, ids, n, e); },
                            [](void* x, BankState_f32*) { return (const BankState_f32*)((Session*)x)->states; },
                            [](void* x, int mx, const Sampling* sm, int eos, int* o, TokenFn f, void* cb, int* no, CodaError* e) {
                                return session_generate((Session*)x, mx, sm, eos, o, f, cb, no, e);
                            }};
    BankState_f32* scratch = layer_states_alloc(&c);
    SpanResult r1, r2;
    CHECK(span_measure(&be, &c, seq, 4, 1, 3, span, 1, span + 1, 2, scratch, ring, exact, &r1, &err) == 0, "%s", err.msg);
    CHECK(span_measure(&be, &c, seq, 4, 1, 3, span, 1, span + 1, 2, scratch, ring, exact, &r2, &err) == 0, "%s", err.msg);
    CHECK(r1.layers_holding == c.n_layers && r1.ring_total == 3 * c.n_layers && r1.exact_total == 0 && r1.layers_exact == 0,
          "span in the ring: holding %d ring %d exact %d", r1.layers_holding, r1.ring_total, r1.exact_total);
    CHECK(memcmp(&r1, &r2, sizeof(r1)) == 0 && r1.recall >= 0 && r1.recall <= 2, "span_measure repeats (recall %d / %d)", r1.recall, r2.recall);
    session_reset(&s);
    int direct[2], nd = 0;
    Sampling greedy = {0.0, 1.0};
    CHECK(session_prefill(&s, seq, 4, &err) == 0 && session_prefill(&s, span, 1, &err) == 0 &&
              session_generate(&s, 2, &greedy, -1, direct, NULL, NULL, &nd, &err) == 0 && nd == 2, "%s", err.msg);
    CHECK(r1.recall == span_recall_prefix(direct, span + 1, 2), "recall %d, the direct greedy run gives %d", r1.recall,
          span_recall_prefix(direct, span + 1, 2));
    layer_states_free(scratch, &c);
    session_free(&s);
    ModelConfig c0 = c;  // no exact bank: once out of the ring, the span is held nowhere
    c0.n_exact = 0;
    Model_f32 m0;
    model_init_f32(&m0, &c0, 813);
    session_init(&s, &m0, 5);
    CHECK(session_prefill(&s, seq, 40, &err) == 0, "%s", err.msg);
    span_locate(s.states, &c0, 1, 3, ring, exact);
    for (int l = 0; l < c0.n_layers; l++) CHECK(ring[l] == 0 && exact[l] == 0, "Me=0 layer %d: ring %d exact %d", l, ring[l], exact[l]);
    session_free(&s);
    model_free_f32(&m0);
    model_free_f32(&m);
}

// A report checker (dev/test/*_check.py, standard-library Python) run by /usr/bin/python3: it prints
// "ok: ..." and exits 0, or a reason and exits 1; skipped where python3 does not run.
static void run_report_check(const char* script) {
    const char* argv[] = {"/usr/bin/python3", script, NULL};
    char out[8192];
    const int rc = ptt_run(argv, out, sizeof(out));
    if (rc < 0) { test_skip("/usr/bin/python3 did not run"); return; }
    printf("    %s", out);
    CHECK(rc == 0, "%s: %s", script, out);
}

// make demo's report (scripts/demo_report.py, scripts/pngplot.py) on a synthetic demo directory:
// dev/test/demo_report_check.py checks the table's numbers, the 2x2 arithmetic and both PNGs.
TEST(demo_report_tables_and_pngs) { run_report_check("dev/test/demo_report_check.py"); }

// the study's report over seeds (scripts/study_report.py): dev/test/study_report_check.py checks the
// means, sample deviations and ranges, the per-seed 2x2, the verdict, the sweep, the stage times, the PNG.
TEST(study_report_over_seeds) { run_report_check("dev/test/study_report_check.py"); }

// issue 15's attention targets from one GPU call's tables (dev/cuda/attention_targets.py):
// dev/test/attention_targets_check.py checks the fastest versions, the ratios, the verdicts, bad input.
TEST(attention_targets_from_one_calls_tables) { run_report_check("dev/test/attention_targets_check.py"); }

// the one-launch profiling helpers (dev/cuda/ncu_profile.py): dev/test/ncu_profile_check.py checks the
// launch pick by name and grid, the stall ranking and totals, and the refusals, on ncu-format files.
TEST(ncu_profile_pick_and_stalls) { run_report_check("dev/test/ncu_profile_check.py"); }
