// test_spec_reference.h — the reference implementation's own tests (docs/spec.md §7: test_correctness.py
// 1-12 and 16, test_invariants.py 1-17, test_edge_configs.py incl. the 4 backward tests,
// test_determinism.py 1-6) restated in C against the CPU reference (llmc/cpu/), in the module setting
// §7 describes: one bounded CoDA layer with D=128, H=4, Hkv=2 (Dh=32, G=2), Me=Ms=16 and the module
// defaults of docs/spec.md §1.1, fed N(0,1) inputs. Plus a few properties §7 suggests (summary LF band under
// decode, ring chronology, allowed <= slots, exact-bank LRU against an independent model).
//
// Restatement notes:
//  * Outputs are float32 by construction; "shape" tests check that exactly B*L*D (or B*D) values are
//    written and finite: the output buffer is pre-filled with NaN, followed by a NaN guard region that
//    must stay untouched.
//  * return_outputs=False is y == NULL: the state must advance exactly as with outputs.
//  * The reference's norm caches (_exact_v_norm, _sum_lf_k_norm) are derived data that coda.c does not
//    store (docs/spec.md §2.1): invariant 9 becomes "routing scores are cosines of the current slot contents",
//    invariant 10 becomes the state's slot layout with Me=0 / Ms=0.
//  * Backward tests use a 1-layer Model_f32 through model_forward/model_backward (training path: fresh
//    zero state per row) and assert finite, non-zero input (embedding) gradients.
// All test names start with spec_ (./test_coda spec runs them).
#pragma once
#include "../../llmc/cpu/reference.h"

// ---------------------------------------------------------------------------------------------
// Helper layer: one bounded CoDA attention layer (taken from a 1-layer Model_f32) with prefill/step

#define SR_D 128
#define SR_GUARD 64

typedef struct {
    ModelConfig cfg;   // block_size is set per prefill call
    Model_f32 m;       // n_layers = 1: the layer's weights live here
    AttnWeights_f32 w;
} SrMod;

// docs/spec.md §7 module setting with the §1.1 module defaults set explicitly.
static ModelConfig sr_config(int W) {
    ModelConfig c = config_default();
    c.vocab_size = 64; c.dim = SR_D; c.ffn_dim = 64; c.n_layers = 1;
    c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 32;
    c.tie_embeddings = 0;
    c.init_std = (float)(1.0 / sqrt(3.0 * SR_D));  // variance of nn.Linear's default U(+-1/sqrt(D)) init
    c.differential = 1; c.bounded = 1;
    c.rope_layout = ROPE_INTERLEAVED; c.rope_theta = 1e4; c.rope_theta_override = 0; c.rope_bf16_positions = 0;
    c.head_norm = HEAD_NORM_FULL; c.head_norm_eps = 1e-6f;
    c.theta_init = 1.5707963267948966f; c.lambda_init_bias = -6.0f;
    c.window = W; c.n_exact = 16; c.n_summary = 16; c.block_size = 256;
    c.write_policy = WRITE_POLICY_GATED; c.write_gate_init_bias = -2.0f;
    c.gate_threshold_exact = 0.10f; c.gate_threshold_summary = 0.05f;
    c.exact_match_threshold = 0.90f; c.exact_novelty_threshold = 0.70f;
    c.exact_refresh_on_hit = 0; c.exact_candidates_per_block = 8; c.summary_candidates_per_block = 64;
    c.eta_init_logit = -3.0f; c.summary_overwrite_on_insert = 1;
    c.mem_init = MEM_INIT_RANDOM_NORMAL; c.mask_unused_memory = 1;
    c.detach_evicted = 1; c.cross_block_grad = 1;
    return c;
}

static void sr_init(SrMod* M, const ModelConfig* c, uint64_t seed) {
    CodaError err;
    memset(&err, 0, sizeof(err));
    int rc = config_validate(c, &err);
    CHECK(rc == 0, "config rejected: %s", err.msg);
    M->cfg = *c;
    model_init_f32(&M->m, c, seed);
    M->w = model_attn_weights_f32(&M->m, M->m.params, 0);
}
static void sr_free(SrMod* M) { model_free_f32(&M->m); }

// B persistent inference states, row b initialised with cfg.mem_init and seed + b.
static BankState_f32* sr_states(const SrMod* M, int B, uint64_t seed) {
    BankState_f32* st = (BankState_f32*)calloc((size_t)B, sizeof(BankState_f32));
    for (int b = 0; b < B; b++) {
        bank_alloc_f32(&st[b], &M->cfg);
        bank_reset_f32(&st[b], M->cfg.mem_init, seed + (uint64_t)b);
    }
    return st;
}
static void sr_states_free(BankState_f32* st, int B) {
    for (int b = 0; b < B; b++) bank_free_f32(&st[b]);
    free(st);
}
static BankState_f32 sr_clone(const BankState_f32* s, const ModelConfig* c) {
    BankState_f32 d;
    bank_alloc_f32(&d, c);
    bank_copy_f32(&d, s);
    return d;
}

// Chunked prefill (docs/spec.md §2.3) of x [B*L*D] through states[B]; y [B*L*D] or NULL (no outputs).
static void sr_prefill(SrMod* M, BankState_f32* st, const float* x, int B, int L, int block, int write_cache, float* y) {
    M->cfg.block_size = block;
    AttnActs_f32 a;
    attn_acts_alloc_f32(&a, &M->cfg, B, L, 0);
    attn_forward_f32(&M->w, &M->cfg, &a, x, B, L, st, write_cache, y);
    attn_acts_free_f32(&a);
}
// One decode step (docs/spec.md §2.4) per row: x [B*D] -> y [B*D] (y may be NULL).
static void sr_step(SrMod* M, BankState_f32* st, const float* x, int B, float* y) {
    float tmp[SR_D];
    for (int b = 0; b < B; b++) attn_decode_f32(&M->w, &M->cfg, &st[b], x + (size_t)b * SR_D, y ? y + (size_t)b * SR_D : tmp);
}

static float* sr_randn(size_t n, uint64_t seed) {
    float* x = (float*)malloc(sizeof(float) * (n ? n : 1));
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(&r);
    return x;
}
// An output buffer of n values plus a guard, all NaN.
static float* sr_out(size_t n) {
    float* y = (float*)malloc(sizeof(float) * (n + SR_GUARD));
    for (size_t i = 0; i < n + SR_GUARD; i++) y[i] = NAN;
    return y;
}
// Exactly the first n values written and finite, the guard untouched.
static int sr_out_ok(const float* y, size_t n) {
    for (size_t i = 0; i < n; i++) if (!isfinite(y[i])) return 0;
    for (size_t i = n; i < n + SR_GUARD; i++) if (!isnan(y[i])) return 0;
    return 1;
}
static int sr_all_finite(const float* y, size_t n) {
    for (size_t i = 0; i < n; i++) if (!isfinite(y[i])) return 0;
    return 1;
}
static double sr_max_abs_diff(const float* a, const float* b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}
static size_t sr_kv_numel(const BankState_f32* s) { return (size_t)s->Hkv * s->slots * s->Dh; }
// Every field of two states identical, bit for bit.
static int sr_state_equal(const BankState_f32* a, const BankState_f32* b) {
    if (a->slots != b->slots || a->W != b->W || a->Me != b->Me || a->Ms != b->Ms) return 0;
    if (a->pos != b->pos || a->recent_idx != b->recent_idx || a->recent_filled != b->recent_filled) return 0;
    size_t kv = sr_kv_numel(a);
    return memcmp(a->k, b->k, kv * sizeof(float)) == 0 && memcmp(a->v, b->v, kv * sizeof(float)) == 0 &&
           memcmp(a->allowed, b->allowed, (size_t)a->slots) == 0 &&
           memcmp(a->g_ring, b->g_ring, sizeof(float) * (size_t)a->W) == 0 &&
           memcmp(a->src, b->src, sizeof(int64_t) * (size_t)a->slots) == 0 &&
           memcmp(a->last_exact, b->last_exact, sizeof(int64_t) * (size_t)(a->Me ? a->Me : 1)) == 0;
}
static int sr_count(const unsigned char* f, int n) {
    int c = 0;
    for (int i = 0; i < n; i++) c += f[i] != 0;
    return c;
}
static int sr_allowed(const BankState_f32* s) { return sr_count(s->allowed, s->slots); }
static int sr_allowed_exact(const BankState_f32* s) { return sr_count(s->allowed + s->W, s->Me); }
static int sr_allowed_summary(const BankState_f32* s) { return sr_count(s->allowed + s->W + s->Me, s->Ms); }

// prefill L tokens (x seeded) then `steps` decode steps; B=1. Checks shapes/finiteness/pos (the
// test_edge_configs helper). Returns the state (caller frees) and, if wanted, the outputs.
static BankState_f32* sr_run(SrMod* M, int L, int block, int steps, uint64_t xseed, float** y_out) {
    BankState_f32* st = sr_states(M, 1, 99);
    float* x = sr_randn((size_t)(L + steps) * SR_D, xseed);
    float* y = sr_out((size_t)(L + steps) * SR_D);
    sr_prefill(M, st, x, 1, L, block, 1, y);
    CHECK(sr_out_ok(y, (size_t)L * SR_D), "prefill of %d tokens: output not exactly [1,%d,%d] finite values", L, L, SR_D);
    float* ys = sr_out(SR_D);
    for (int i = 0; i < steps; i++) {
        for (int d = 0; d < SR_D; d++) ys[d] = NAN;
        sr_step(M, st, x + (size_t)(L + i) * SR_D, 1, ys);
        CHECK(sr_out_ok(ys, SR_D), "step %d: output not exactly [1,1,%d] finite values", i, SR_D);
        memcpy(y + (size_t)(L + i) * SR_D, ys, sizeof(float) * SR_D);
    }
    CHECK(st->pos == L + steps, "pos %lld, expected %d", (long long)st->pos, L + steps);
    CHECK(sr_allowed(st) <= st->slots, "");
    free(ys);
    free(x);
    if (y_out) *y_out = y; else free(y);
    return st;
}

// ---------------------------------------------------------------------------------------------
// test_correctness.py (W = 64)

TEST(spec_correctness_01_prefill_output_shape) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(256 * SR_D, 7);
    float* y = sr_out(256 * SR_D);
    sr_prefill(&M, st, x, 1, 256, 256, 1, y);
    CHECK(sr_out_ok(y, 256 * SR_D), "output is not exactly 1x256x128 finite values");
    CHECK(st->pos == 256, "pos %lld", (long long)st->pos);
    free(x); free(y);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_correctness_02_prefill_no_write_output_shape) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    BankState_f32 before = sr_clone(st, &c);
    float* x = sr_randn(256 * SR_D, 7);
    float* y = sr_out(256 * SR_D);
    sr_prefill(&M, st, x, 1, 256, 128, 0, y);
    CHECK(sr_out_ok(y, 256 * SR_D), "output is not exactly 1x256x128 finite values");
    CHECK(st->pos == 0, "pos %lld after write_cache=0", (long long)st->pos);
    CHECK(sr_state_equal(st, &before), "write_cache=0 changed the state");
    bank_free_f32(&before);
    free(x); free(y);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_correctness_03_prefill_return_none) {
    // return_outputs=False: no output is produced (y == NULL), the state advances exactly as with outputs.
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* a = sr_states(&M, 1, 99);
    BankState_f32* b = sr_states(&M, 1, 99);
    float* x = sr_randn(256 * SR_D, 7);
    float* y = sr_out(256 * SR_D);
    sr_prefill(&M, a, x, 1, 256, 128, 1, NULL);
    sr_prefill(&M, b, x, 1, 256, 128, 1, y);
    CHECK(a->pos == 256, "pos %lld", (long long)a->pos);
    CHECK(sr_state_equal(a, b), "state after a prefill without outputs differs from one with outputs");
    CHECK(sr_out_ok(y, 256 * SR_D), "");
    free(x); free(y);
    sr_states_free(a, 1);
    sr_states_free(b, 1);
    sr_free(&M);
}

TEST(spec_correctness_04_decode_step_output_shape) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(33 * SR_D, 7);
    sr_prefill(&M, st, x, 1, 32, 32, 1, NULL);
    float* y = sr_out(SR_D);
    sr_step(&M, st, x + 32 * SR_D, 1, y);
    CHECK(sr_out_ok(y, SR_D), "step output is not exactly 1x1x128 finite values");
    CHECK(st->pos == 33, "pos %lld", (long long)st->pos);
    free(x); free(y);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_correctness_05_prefill_then_decode) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_run(&M, 512, 256, 10, 7, NULL);
    CHECK(st->pos == 522, "pos %lld", (long long)st->pos);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_correctness_06_no_nan_inf_prefill) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_run(&M, 1024, 256, 0, 7, NULL);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_correctness_07_no_nan_inf_decode_long) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_run(&M, 64, 64, 200, 7, NULL);
    CHECK(sr_allowed_exact(st) > 0 && sr_allowed_summary(st) > 0, "200 steps past the window never reached the banks");
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_correctness_08_output_dtype_matches_input) {
    // float32 in, float32 out: the fp32 instantiation computes in float and agrees with the fp64
    // instantiation of the same layer (same weights, inputs and initial state) on prefill 128 (block
    // 64, so the second block sees a full ring) and a decode step that evicts into the banks.
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    Model_f64 m64;
    model_init_f64(&m64, &c, 1);
    for (size_t i = 0; i < M.m.table.total; i++) m64.params[i] = M.m.params[i];
    AttnWeights_f64 w64 = model_attn_weights_f64(&m64, m64.params, 0);
    int L = 128;
    float* x = sr_randn((size_t)(L + 1) * SR_D, 7);
    double* x64 = (double*)malloc(sizeof(double) * (L + 1) * SR_D);
    for (int i = 0; i < (L + 1) * SR_D; i++) x64[i] = x[i];
    BankState_f32* st = sr_states(&M, 1, 99);
    BankState_f64 s64;
    bank_alloc_f64(&s64, &c);
    bank_reset_f64(&s64, MEM_INIT_RANDOM_NORMAL, 99);
    float* y = sr_out((size_t)(L + 1) * SR_D);
    double* y64 = (double*)malloc(sizeof(double) * (L + 1) * SR_D);
    sr_prefill(&M, st, x, 1, L, 64, 1, y);
    ModelConfig c64 = c;
    c64.block_size = 64;
    AttnActs_f64 a64;
    attn_acts_alloc_f64(&a64, &c64, 1, L, 0);
    attn_forward_f64(&w64, &c64, &a64, x64, 1, L, &s64, 1, y64);
    attn_acts_free_f64(&a64);
    sr_step(&M, st, x + (size_t)L * SR_D, 1, y + (size_t)L * SR_D);
    attn_decode_f64(&w64, &c64, &s64, x64 + (size_t)L * SR_D, y64 + (size_t)L * SR_D);
    CHECK(sr_out_ok(y, (size_t)(L + 1) * SR_D), "");
    double dmax = 0, ymax = 0;
    for (int i = 0; i < (L + 1) * SR_D; i++) {
        dmax = fmax(dmax, fabs((double)y[i] - y64[i]));
        ymax = fmax(ymax, fabs(y64[i]));
    }
    CHECK(ymax > 0.05, "outputs are ~0 (max %g): comparison meaningless", ymax);
    CHECK(dmax <= 1e-4 * fmax(1.0, ymax), "fp32 vs fp64 max diff %.3g (max |y| %.3g)", dmax, ymax);
    CHECK(sr_allowed_exact(st) == sr_count(s64.allowed + s64.W, s64.Me), "bank decisions differ between fp32 and fp64");
    bank_free_f64(&s64);
    model_free_f64(&m64);
    free(x); free(x64); free(y); free(y64);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_correctness_09_prefill_various_block_sizes) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    int blocks[] = {64, 128, 256, 512, 1024};
    for (int i = 0; i < 5; i++) {
        BankState_f32* st = sr_run(&M, 1024, blocks[i], 0, 7, NULL);
        sr_states_free(st, 1);
    }
    sr_free(&M);
}

TEST(spec_correctness_10_batch_size_two) {
    // B=2: shapes and pos; and the rows are independent (each equals its own B=1 run, bit for bit).
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    int B = 2, L = 256, S = 5;
    BankState_f32* st = sr_states(&M, B, 99);
    float* x = sr_randn((size_t)B * L * SR_D, 7);
    float* xs = sr_randn((size_t)S * B * SR_D, 8);
    float* y = sr_out((size_t)B * L * SR_D);
    float* ys = sr_out((size_t)S * B * SR_D);
    sr_prefill(&M, st, x, B, L, 128, 1, y);
    CHECK(sr_out_ok(y, (size_t)B * L * SR_D), "prefill output is not exactly 2x256x128 finite values");
    for (int s = 0; s < S; s++) {
        float* yo = sr_out((size_t)B * SR_D);
        sr_step(&M, st, xs + (size_t)s * B * SR_D, B, yo);
        CHECK(sr_out_ok(yo, (size_t)B * SR_D), "step %d output is not exactly 2x1x128 finite values", s);
        memcpy(ys + (size_t)s * B * SR_D, yo, sizeof(float) * B * SR_D);
        free(yo);
    }
    for (int b = 0; b < B; b++) CHECK(st[b].pos == 261, "row %d pos %lld", b, (long long)st[b].pos);
    CHECK(memcmp(y, y + (size_t)L * SR_D, sizeof(float) * L * SR_D) != 0, "both rows gave the same output");
    for (int b = 0; b < B; b++) {
        BankState_f32* one = sr_states(&M, 1, 99);
        bank_reset_f32(one, c.mem_init, 99 + (uint64_t)b);
        float* y1 = sr_out((size_t)L * SR_D);
        sr_prefill(&M, one, x + (size_t)b * L * SR_D, 1, L, 128, 1, y1);
        CHECK(memcmp(y1, y + (size_t)b * L * SR_D, sizeof(float) * L * SR_D) == 0, "row %d prefill differs from its B=1 run", b);
        for (int s = 0; s < S; s++) {
            float yo[SR_D];
            sr_step(&M, one, xs + ((size_t)s * B + b) * SR_D, 1, yo);
            CHECK(memcmp(yo, ys + ((size_t)s * B + b) * SR_D, sizeof(yo)) == 0, "row %d step %d differs from its B=1 run", b, s);
        }
        CHECK(sr_state_equal(one, &st[b]), "row %d state differs from its B=1 run", b);
        free(y1);
        sr_states_free(one, 1);
    }
    free(x); free(xs); free(y); free(ys);
    sr_states_free(st, B);
    sr_free(&M);
}

// Causal two-stream CoDA attention computed independently in double: per query head h the KV head is
// kv_of(h) (repeat-interleave: h / G), sig and noise are separate causal softmax attentions, o = sig -
// lam * noise, then RMS head norm with weight hn.
static void sr_coda_reference(const float* q, const float* qn, const float* k, const float* v, const float* lam,
                              const float* hn, int L, int H, int Hkv, int Dh, int interleave_kv, double* out) {
    int G = H / Hkv;
    double* p = (double*)malloc(sizeof(double) * L);
    double* o = (double*)malloc(sizeof(double) * Dh);
    for (int i = 0; i < L; i++)
        for (int h = 0; h < H; h++) {
            int g = interleave_kv ? h / G : h % Hkv;
            for (int d = 0; d < Dh; d++) o[d] = 0;
            for (int s = 0; s < 2; s++) {
                const float* qh = (s ? qn : q) + ((size_t)i * H + h) * Dh;
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double dot = 0;
                    for (int d = 0; d < Dh; d++) dot += (double)qh[d] * k[((size_t)j * Hkv + g) * Dh + d];
                    p[j] = dot / sqrt((double)Dh);
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j <= i; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
                double coef = s ? -(double)lam[(size_t)i * H + h] : 1.0;
                for (int j = 0; j <= i; j++)
                    for (int d = 0; d < Dh; d++) o[d] += coef * p[j] / sum * v[((size_t)j * Hkv + g) * Dh + d];
            }
            double ms = 0;
            for (int d = 0; d < Dh; d++) ms += o[d] * o[d];
            double r = 1.0 / sqrt(ms / Dh + 1e-6);
            for (int d = 0; d < Dh; d++) out[((size_t)i * H + h) * Dh + d] = o[d] * r * hn[d];
        }
    free(p);
    free(o);
}

TEST(spec_correctness_11_head_stacked_sdpa_matches_separate) {
    // The layer's two-stream attention core (one pass over shared K/V, GQA mapping, CoDA subtraction,
    // head norm) against two separate causal attentions with repeat-interleaved KV: max diff < 1e-4.
    ModelConfig c = sr_config(64);
    int L = 32, H = 4, Hkv = 2, Dh = 32;
    Rng r;
    rng_seed(&r, 42);
    size_t nq = (size_t)L * H * Dh, nk = (size_t)L * Hkv * Dh;
    float* buf = (float*)malloc(sizeof(float) * (6 * nq + 2 * nk + L * H + Dh + L * H));
    float *q = buf, *qn = q + nq, *as = qn + nq, *an = as + nq, *o = an + nq, *out = o + nq, *k = out + nq, *v = k + nk;
    float *lam = v + nk, *hn = lam + L * H, *rstd = hn + Dh;
    for (size_t i = 0; i < nq; i++) q[i] = (float)rng_normal(&r);
    for (size_t i = 0; i < nq; i++) qn[i] = (float)rng_normal(&r);
    for (size_t i = 0; i < nk; i++) k[i] = (float)rng_normal(&r);
    for (size_t i = 0; i < nk; i++) v[i] = (float)rng_normal(&r);
    for (int i = 0; i < L * H; i++) lam[i] = (float)(1.0 / (1.0 + exp(-rng_normal(&r))));
    for (int d = 0; d < Dh; d++) hn[d] = (float)(1.0 + 0.2 * rng_normal(&r));  // not all ones: weight indexing is checked
    KeySet_f32 ks;
    keyset_build_f32(&ks, &c, NULL, k, v, 0, L);
    attend_forward_f32(&c, &ks, q, qn, L, as, an);
    keyset_free_f32(&ks);
    AttnWeights_f32 w;
    memset(&w, 0, sizeof(w));
    w.head_norm = hn;
    combine_forward_f32(&w, &c, as, an, lam, o, rstd, out, L);
    double* ref = (double*)malloc(sizeof(double) * nq);
    sr_coda_reference(q, qn, k, v, lam, hn, L, H, Hkv, Dh, 1, ref);
    double d = 0;
    for (size_t i = 0; i < nq; i++) d = fmax(d, fabs(out[i] - ref[i]));
    CHECK(d < 1e-4, "max |diff| %.3g", d);
    // the comparison can tell a wrong GQA mapping (h mod Hkv) apart
    sr_coda_reference(q, qn, k, v, lam, hn, L, H, Hkv, Dh, 0, ref);
    double dw = 0;
    for (size_t i = 0; i < nq; i++) dw = fmax(dw, fabs(out[i] - ref[i]));
    CHECK(dw > 1e-2, "wrong KV mapping not detected (diff %.3g)", dw);
    free(ref);
    free(buf);
}

TEST(spec_correctness_12_summary_bank_hf_zero) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    int lf = c.head_dim / 2, s0 = c.window + c.n_exact, nz = 0;
    for (int g = 0; g < c.n_kv_heads; g++)
        for (int m = 0; m < c.n_summary; m++)
            for (int d = 0; d < c.head_dim; d++) {
                float x = bank_k_f32(st, g, s0 + m)[d];
                if (d < lf) CHECK(x == 0.0f, "init: summary key head %d slot %d dim %d = %g", g, m, d, x);
                else nz += x != 0.0f;
            }
    CHECK(nz > 0, "random_normal init left the summary LF band zero");
    float* x = sr_randn(512 * SR_D, 7);
    sr_prefill(&M, st, x, 1, 512, 128, 1, NULL);
    CHECK(sr_allowed_summary(st) > 0, "summary bank unused after 512 tokens");
    double mx = 0;
    for (int g = 0; g < c.n_kv_heads; g++)
        for (int m = 0; m < c.n_summary; m++)
            for (int d = 0; d < lf; d++) mx = fmax(mx, fabs(bank_k_f32(st, g, s0 + m)[d]));
    CHECK(mx == 0.0, "summary key dims [0, Dh/2) max |x| = %g after prefill (must stay exactly 0)", mx);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_correctness_16_prefill_causal_mask_correctness) {
    // Block queries see the whole prefix (prefix-causal mask, docs/spec.md §2.3 / §11.11): corrupting the key
    // of the last allowed slot (+100 on all dims of all KV heads) must change query 0's output.
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x1 = sr_randn(64 * SR_D, 42);
    sr_prefill(&M, st, x1, 1, 64, 64, 1, NULL);
    float* x2 = sr_randn(32 * SR_D, 999);
    float* yn = sr_out(32 * SR_D);
    float* yc = sr_out(32 * SR_D);
    sr_prefill(&M, st, x2, 1, 32, 32, 0, yn);
    BankState_f32 cor = sr_clone(st, &c);
    int last = -1;
    for (int s = 0; s < cor.slots; s++) if (cor.allowed[s]) last = s;
    CHECK(last == 63, "last allowed slot %d (expected the ring's slot 63 after 64 tokens)", last);
    if (last >= 0)
        for (int g = 0; g < cor.Hkv; g++)
            for (int d = 0; d < cor.Dh; d++) bank_k_f32(&cor, g, last)[d] += 100.0f;
    sr_prefill(&M, &cor, x2, 1, 32, 32, 0, yc);
    CHECK(sr_out_ok(yn, 32 * SR_D) && sr_out_ok(yc, 32 * SR_D), "");
    double d0 = sr_max_abs_diff(yn, yc, SR_D);
    CHECK(d0 > 0.01, "query 0 output moved by only %.3g: it does not see the whole prefix", d0);
    bank_free_f32(&cor);
    free(x1); free(x2); free(yn); free(yc);
    sr_states_free(st, 1);
    sr_free(&M);
}

// ---------------------------------------------------------------------------------------------
// test_invariants.py (W = 32)

#define SR_W 32

TEST(spec_invariants_01_pos) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(150 * SR_D, 7);
    sr_prefill(&M, st, x, 1, 100, 64, 1, NULL);
    CHECK(st->pos == 100, "pos %lld after prefill 100", (long long)st->pos);
    for (int i = 0; i < 50; i++) sr_step(&M, st, x + (size_t)(100 + i) * SR_D, 1, NULL);
    CHECK(st->pos == 150, "pos %lld after 50 steps", (long long)st->pos);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_invariants_02_recent_filled) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(7 * SR_W * SR_D, 7);
    sr_prefill(&M, st, x, 1, 5 * SR_W, 256, 1, NULL);
    CHECK(st->recent_filled == SR_W, "recent_filled %d after prefill 5W", st->recent_filled);
    for (int i = 0; i < 2 * SR_W; i++) {
        sr_step(&M, st, x + (size_t)(5 * SR_W + i) * SR_D, 1, NULL);
        CHECK(st->recent_filled == SR_W, "recent_filled %d after step %d", st->recent_filled, i);
    }
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_invariants_03_recent_idx_range) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(6 * SR_W * SR_D, 7);
    sr_prefill(&M, st, x, 1, 3 * SR_W, 256, 1, NULL);
    CHECK(st->recent_idx >= 0 && st->recent_idx < SR_W, "recent_idx %d after prefill", st->recent_idx);
    int seen_nonzero = 0;
    for (int i = 0; i < 3 * SR_W; i++) {
        sr_step(&M, st, x + (size_t)(3 * SR_W + i) * SR_D, 1, NULL);
        CHECK(st->recent_idx >= 0 && st->recent_idx < SR_W, "recent_idx %d after step %d", st->recent_idx, i);
        seen_nonzero |= st->recent_idx != 0;
    }
    CHECK(seen_nonzero, "recent_idx never moved");
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_invariants_04_ring_all_allowed) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(2 * SR_W * SR_D, 7);
    sr_prefill(&M, st, x, 1, 2 * SR_W, 256, 1, NULL);
    for (int j = 0; j < SR_W; j++) CHECK(st->allowed[j], "ring slot %d not allowed after prefill 2W", j);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_invariants_05_allowed_count) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    int Lbuf = config_state_slots(&c);
    CHECK(Lbuf == SR_W + 32, "Lbuf %d", Lbuf);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn((size_t)(5 * Lbuf + 100) * SR_D, 7);
    sr_prefill(&M, st, x, 1, Lbuf / 2, 256, 1, NULL);
    CHECK(sr_allowed(st) <= st->pos, "allowed %d > pos %lld", sr_allowed(st), (long long)st->pos);
    sr_states_free(st, 1);
    st = sr_states(&M, 1, 99);
    sr_prefill(&M, st, x, 1, 5 * Lbuf, 256, 1, NULL);
    CHECK(sr_allowed(st) <= Lbuf, "allowed %d > Lbuf %d after prefill 5 Lbuf", sr_allowed(st), Lbuf);
    for (int i = 0; i < 100; i++) {
        sr_step(&M, st, x + (size_t)(5 * Lbuf + i) * SR_D, 1, NULL);
        CHECK(sr_allowed(st) <= Lbuf, "allowed %d > Lbuf %d after step %d", sr_allowed(st), Lbuf, i);
    }
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

// Invariants 6 and 7: a bank has no allowed slot at init and some after a prefill of 4W tokens has
// evicted tokens into it (no write gate).
static void sr_check_bank_used_after_eviction(int (*allowed)(const BankState_f32*), const char* bank) {
    ModelConfig c = sr_config(SR_W);
    c.write_policy = WRITE_POLICY_NONE;
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    CHECK(allowed(st) == 0, "%s slots allowed at init", bank);
    float* x = sr_randn(4 * SR_W * SR_D, 7);
    sr_prefill(&M, st, x, 1, 4 * SR_W, 256, 1, NULL);
    CHECK(allowed(st) > 0, "no %s slot allowed after prefill 4W", bank);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}
TEST(spec_invariants_06_exact_bank_used_after_eviction) { sr_check_bank_used_after_eviction(sr_allowed_exact, "exact"); }
TEST(spec_invariants_07_summary_bank_used_after_eviction) { sr_check_bank_used_after_eviction(sr_allowed_summary, "summary"); }

TEST(spec_invariants_08_lru_timestamps) {
    ModelConfig c = sr_config(SR_W);
    c.write_policy = WRITE_POLICY_NONE;
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(4 * SR_W * SR_D, 7);
    sr_prefill(&M, st, x, 1, 4 * SR_W, 256, 1, NULL);
    int used = 0, unused = 0, positive = 0;
    for (int m = 0; m < c.n_exact; m++) {
        if (st->allowed[c.window + m]) {
            used++;
            positive += st->last_exact[m] > 0;
            CHECK(st->last_exact[m] >= 0, "used slot %d last %lld", m, (long long)st->last_exact[m]);
        } else {
            unused++;
            CHECK(st->last_exact[m] == 0, "unused slot %d has last %lld (must be exactly 0)", m, (long long)st->last_exact[m]);
        }
    }
    CHECK(used > 0 && unused > 0 && positive > 0, "vacuous: %d used (%d stamped > 0), %d unused", used, positive, unused);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

// Independent cosine (docs/spec.md §3): mean over KV heads of <n(a_g[d0:]), n(b_g[d0:])>, n(x) = x / max(|x|, 1e-6).
static double sr_cos_ref(const float* tok, const BankState_f32* st, const float* bank, int slot, int d0) {
    double s = 0;
    for (int g = 0; g < st->Hkv; g++) {
        const float* a = tok + (size_t)g * st->Dh;
        const float* b = bank + ((size_t)g * st->slots + slot) * st->Dh;
        double aa = 0, bb = 0, ab = 0;
        for (int d = d0; d < st->Dh; d++) { aa += (double)a[d] * a[d]; bb += (double)b[d] * b[d]; ab += (double)a[d] * b[d]; }
        s += ab / (fmax(sqrt(aa), 1e-6) * fmax(sqrt(bb), 1e-6));
    }
    return s / st->Hkv;
}
// Gathers the [Hkv][Dh] k or v of slot s.
static void sr_gather(const BankState_f32* st, const float* bank, int s, float* out) {
    for (int g = 0; g < st->Hkv; g++) memcpy(out + (size_t)g * st->Dh, bank + ((size_t)g * st->slots + s) * st->Dh, sizeof(float) * st->Dh);
}

TEST(spec_invariants_09_routing_uses_current_slot_contents) {
    // Reference: the norm caches equal normalize(current bank contents). coda.c has no cache, so: the
    // routing scores the bank updates use are cosines of the current slot contents (exact bank: values
    // over all Dh; summary bank: keys over [Dh/2, Dh)), also right after a slot is modified.
    ModelConfig c = sr_config(SR_W);
    c.write_policy = WRITE_POLICY_NONE;
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(4 * SR_W * SR_D, 7);
    sr_prefill(&M, st, x, 1, 3 * SR_W, 256, 1, NULL);
    for (int i = 0; i < SR_W; i++) sr_step(&M, st, x + (size_t)(3 * SR_W + i) * SR_D, 1, NULL);
    CHECK(sr_allowed_exact(st) > 0 && sr_allowed_summary(st) > 0, "banks unused");
    int kvd = c.n_kv_heads * c.head_dim, lf = c.head_dim / 2, W = c.window, Me = c.n_exact, Ms = c.n_summary;
    float* tk = (float*)malloc(sizeof(float) * 2 * kvd);
    float* tv = tk + kvd;
    double worst = 0;
    for (int probe = 0; probe < 4; probe++) {  // probes: ring tokens (the next evictions)
        sr_gather(st, st->k, probe * 7, tk);
        sr_gather(st, st->v, probe * 7, tv);
        Evicted_f32 e = {tk, tv, 1.0f, 0};
        for (int m = 0; m < Me; m++) worst = fmax(worst, fabs(exact_score_f32(st, &e, m) - sr_cos_ref(tv, st, st->v, W + m, 0)));
        for (int m = 0; m < Ms; m++) worst = fmax(worst, fabs(summary_score_f32(st, &e, m) - sr_cos_ref(tk, st, st->k, W + Me + m, lf)));
    }
    CHECK(worst <= 1e-5, "score vs cosine of the slot contents: max diff %.3g", worst);
    // a slot's own content scores 1 against it
    int me = -1, ms = -1;
    for (int m = 0; m < Me && me < 0; m++) if (st->allowed[W + m]) me = m;
    for (int m = 0; m < Ms && ms < 0; m++) if (st->allowed[W + Me + m]) ms = m;
    if (me >= 0 && ms >= 0) {
        sr_gather(st, st->v, W + me, tv);
        sr_gather(st, st->k, W + Me + ms, tk);
        Evicted_f32 e = {tk, tv, 1.0f, 0};
        CHECK_CLOSE(exact_score_f32(st, &e, me), 1.0, 1e-5, 0);
        CHECK_CLOSE(summary_score_f32(st, &e, ms), 1.0, 1e-5, 0);
        // modify the slots: the scores follow at once (no stale normalised copy)
        for (int g = 0; g < c.n_kv_heads; g++)
            for (int d = 0; d < c.head_dim; d++) {
                bank_v_f32(st, g, W + me)[d] *= -3.0f;
                bank_k_f32(st, g, W + Me + ms)[d] *= -0.5f;
            }
        CHECK_CLOSE(exact_score_f32(st, &e, me), -1.0, 1e-5, 0);
        CHECK_CLOSE(summary_score_f32(st, &e, ms), -1.0, 1e-5, 0);
    }
    // an all-zero slot scores exactly 0 (norm clamped at 1e-6), not NaN
    BankState_f32* z = sr_states(&M, 1, 0);
    bank_reset_f32(z, MEM_INIT_ZEROS, 0);
    Evicted_f32 e = {tk, tv, 1.0f, 0};
    CHECK(summary_score_f32(z, &e, 0) == 0.0f && exact_score_f32(z, &e, 0) == 0.0f, "zero slot score not exactly 0");
    memset(tk, 0, sizeof(float) * 2 * kvd);  // an all-zero token too
    CHECK(summary_score_f32(z, &e, 0) == 0.0f && exact_score_f32(z, &e, 0) == 0.0f, "zero token vs zero slot not exactly 0");
    CHECK(summary_score_f32(st, &e, 0) == 0.0f && exact_score_f32(st, &e, 0) == 0.0f, "zero token score not exactly 0");
    sr_states_free(z, 1);
    free(tk);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_invariants_10_bank_segments_with_me_or_ms_zero) {
    // Reference: norm caches of shape (1,Hkv,Me,Dh) / (1,Hkv,Ms,Dh-lf), None when Me=0 / Ms=0. coda.c
    // has no caches: the state's segments shrink instead (slots = W + Me + Ms), and the remaining bank
    // is used in its own place.
    for (int which = 0; which < 3; which++) {
        ModelConfig c = sr_config(SR_W);
        c.write_policy = WRITE_POLICY_NONE;
        if (which == 1) c.n_exact = 0;
        if (which == 2) c.n_summary = 0;
        SrMod M;
        sr_init(&M, &c, 42);
        BankState_f32* st = sr_states(&M, 1, 99);
        CHECK(st->slots == SR_W + c.n_exact + c.n_summary && st->Me == c.n_exact && st->Ms == c.n_summary,
              "config %d: slots %d Me %d Ms %d", which, st->slots, st->Me, st->Ms);
        float* x = sr_randn(4 * SR_W * SR_D, 7);
        sr_prefill(&M, st, x, 1, 3 * SR_W, 256, 1, NULL);
        for (int i = 0; i < SR_W; i++) sr_step(&M, st, x + (size_t)(3 * SR_W + i) * SR_D, 1, NULL);
        CHECK((sr_allowed_exact(st) > 0) == (c.n_exact > 0), "config %d: exact allowed %d", which, sr_allowed_exact(st));
        CHECK((sr_allowed_summary(st) > 0) == (c.n_summary > 0), "config %d: summary allowed %d", which, sr_allowed_summary(st));
        CHECK(sr_allowed(st) == SR_W + sr_allowed_exact(st) + sr_allowed_summary(st), "config %d: slots outside the segments allowed", which);
        // with Me = 0 the summary bank starts right after the ring: its keys keep the zero HF band
        for (int g = 0; g < c.n_kv_heads; g++)
            for (int m = 0; m < c.n_summary; m++)
                for (int d = 0; d < c.head_dim / 2; d++)
                    CHECK(bank_k_f32(st, g, SR_W + c.n_exact + m)[d] == 0.0f, "config %d: summary slot %d dim %d", which, m, d);
        free(x);
        sr_states_free(st, 1);
        sr_free(&M);
    }
}

TEST(spec_invariants_11_allowed_ring_keys_nonzero) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    int lens[2] = {SR_W / 2, 2 * SR_W};
    for (int i = 0; i < 2; i++) {
        BankState_f32* st = sr_states(&M, 1, 99);
        float* x = sr_randn((size_t)lens[i] * SR_D, 7);
        sr_prefill(&M, st, x, 1, lens[i], 256, 1, NULL);
        int n = 0;
        for (int j = 0; j < SR_W; j++) {
            if (!st->allowed[j]) continue;
            n++;
            double ss = 0;
            for (int g = 0; g < c.n_kv_heads; g++)
                for (int d = 0; d < c.head_dim; d++) ss += fabs(bank_k_f32(st, g, j)[d]);
            CHECK(ss > 0, "allowed ring slot %d has an all-zero key (L=%d)", j, lens[i]);
        }
        CHECK(n == (lens[i] < SR_W ? lens[i] : SR_W), "L=%d: %d ring slots allowed", lens[i], n);
        free(x);
        sr_states_free(st, 1);
    }
    sr_free(&M);
}

TEST(spec_invariants_12_no_write_prefill_keeps_pos) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(250 * SR_D, 7);
    sr_prefill(&M, st, x, 1, 50, 64, 1, NULL);  // a non-empty state, so "unchanged" says something
    BankState_f32 before = sr_clone(st, &c);
    sr_prefill(&M, st, x + 50 * SR_D, 1, 200, 64, 0, NULL);
    CHECK(st->pos == 50, "pos %lld after write_cache=0 prefill of 200", (long long)st->pos);
    CHECK(sr_state_equal(st, &before), "write_cache=0 changed the state");
    bank_free_f32(&before);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_invariants_13_empty_prefill) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    for (int filled = 0; filled < 2; filled++) {
        BankState_f32* st = sr_states(&M, 1, 99);
        float* x = sr_randn(100 * SR_D, 7);
        if (filled) sr_prefill(&M, st, x, 1, 100, 64, 1, NULL);
        BankState_f32 before = sr_clone(st, &c);
        float* y = sr_out(0);
        sr_prefill(&M, st, x, 1, 0, 256, 1, y);
        CHECK(sr_state_equal(st, &before), "empty prefill changed the state (filled=%d)", filled);
        CHECK(sr_out_ok(y, 0), "empty prefill wrote output");
        free(y);
        bank_free_f32(&before);
        free(x);
        sr_states_free(st, 1);
    }
    sr_free(&M);
}

TEST(spec_invariants_14_ring_wrap) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn((size_t)(4 * SR_W + 7) * SR_D, 7);
    sr_prefill(&M, st, x, 1, 3 * SR_W, 256, 1, NULL);
    CHECK(st->recent_idx == 0 && st->recent_filled == SR_W, "after prefill 3W: idx %d filled %d", st->recent_idx, st->recent_filled);
    for (int i = 0; i < SR_W + 7; i++) {
        CHECK(st->recent_idx == i % SR_W, "before step %d: recent_idx %d", i, st->recent_idx);
        sr_step(&M, st, x + (size_t)(3 * SR_W + i) * SR_D, 1, NULL);
    }
    CHECK(st->recent_idx == (SR_W + 7) % SR_W, "final recent_idx %d", st->recent_idx);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_invariants_15_steps_from_empty) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(2 * SR_W * SR_D, 7);
    for (int i = 1; i <= 2 * SR_W; i++) {
        sr_step(&M, st, x + (size_t)(i - 1) * SR_D, 1, NULL);
        CHECK(st->recent_filled == (i < SR_W ? i : SR_W) && st->pos == i, "after %d tokens: filled %d pos %lld", i,
              st->recent_filled, (long long)st->pos);
    }
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_invariants_16_state_after_init) {
    ModelConfig c = sr_config(SR_W);
    SrMod M;
    sr_init(&M, &c, 42);
    int B = 2, W = c.window, Me = c.n_exact, Ms = c.n_summary, Lbuf = W + Me + Ms, lf = c.head_dim / 2;
    BankState_f32* st = sr_states(&M, B, 99);
    for (int b = 0; b < B; b++) {
        const BankState_f32* s = &st[b];
        CHECK(s->slots == Lbuf && s->W == W && s->Me == Me && s->Ms == Ms && s->Hkv == 2 && s->Dh == 32,
              "row %d layout: slots %d W %d Me %d Ms %d Hkv %d Dh %d", b, s->slots, s->W, s->Me, s->Ms, s->Hkv, s->Dh);
        CHECK(s->pos == 0 && s->recent_idx == 0 && s->recent_filled == 0, "row %d counters", b);
        CHECK(sr_allowed(s) == 0, "row %d: slots allowed at init", b);
        for (int j = 0; j < W; j++) CHECK(s->g_ring[j] == 0.0f, "row %d ring gate %d", b, j);
        for (int m = 0; m < Me; m++) CHECK(s->last_exact[m] == 0, "row %d last_exact %d", b, m);
        for (int j = 0; j < Lbuf; j++) CHECK(s->src[j] == -1, "row %d src %d", b, j);
        // random_normal init: ring zero; exact k/v and summary v all dims, summary k dims [lf, Dh) ~ N(0, 0.02^2)
        double ss[5] = {0, 0, 0, 0, 0};
        int n[5] = {0, 0, 0, 0, 0};
        for (int g = 0; g < s->Hkv; g++)
            for (int j = 0; j < Lbuf; j++)
                for (int d = 0; d < s->Dh; d++) {
                    float kk = bank_k_f32(s, g, j)[d], vv = bank_v_f32(s, g, j)[d];
                    if (j < W) { CHECK(kk == 0.0f && vv == 0.0f, "row %d ring slot %d not zero", b, j); continue; }
                    if (j < W + Me) { ss[0] += kk * kk; n[0]++; ss[1] += vv * vv; n[1]++; continue; }
                    if (d < lf) CHECK(kk == 0.0f, "row %d summary key slot %d dim %d", b, j, d);
                    else { ss[2] += kk * kk; n[2]++; }
                    ss[3] += vv * vv; n[3]++;
                }
        for (int i = 0; i < 4; i++) {
            double sd = sqrt(ss[i] / n[i]);
            CHECK(sd > 0.015 && sd < 0.025, "row %d init segment %d: std %.4f, expected 0.02", b, i, sd);
        }
    }
    CHECK(memcmp(st[0].k, st[1].k, sr_kv_numel(&st[0]) * sizeof(float)) != 0, "both rows got the same random init");
    sr_states_free(st, B);
    sr_free(&M);
}

TEST(spec_invariants_17_bank_counts_never_decrease) {
    ModelConfig c = sr_config(SR_W);
    c.write_policy = WRITE_POLICY_NONE;
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(7 * SR_W * SR_D, 7);
    int pe = 0, ps = 0, t = 0, rises = 0;
    for (int i = 0; i < 5; i++, t += SR_W) {
        sr_prefill(&M, st, x + (size_t)t * SR_D, 1, SR_W, 64, 1, NULL);
        CHECK(sr_allowed_exact(st) >= pe && sr_allowed_summary(st) >= ps, "prefill %d: counts %d/%d fell from %d/%d", i,
              sr_allowed_exact(st), sr_allowed_summary(st), pe, ps);
        rises += sr_allowed_exact(st) + sr_allowed_summary(st) > pe + ps;
        pe = sr_allowed_exact(st); ps = sr_allowed_summary(st);
    }
    for (int i = 0; i < 2 * SR_W; i++, t++) {
        sr_step(&M, st, x + (size_t)t * SR_D, 1, NULL);
        CHECK(sr_allowed_exact(st) >= pe && sr_allowed_summary(st) >= ps, "step %d: counts %d/%d fell from %d/%d", i,
              sr_allowed_exact(st), sr_allowed_summary(st), pe, ps);
        pe = sr_allowed_exact(st); ps = sr_allowed_summary(st);
    }
    CHECK(rises >= 2 && pe > 0 && ps > 0, "vacuous: counts rose %d times, end %d/%d", rises, pe, ps);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

// ---------------------------------------------------------------------------------------------
// test_edge_configs.py (W = 64 unless stated): prefill then steps; shape, finite, pos == total.

static void sr_edge(ModelConfig c, int L, int steps, int block) {
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_run(&M, L, block, steps, 7, NULL);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_edge_no_exact_bank) {
    ModelConfig c = sr_config(64);
    c.n_exact = 0;
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_run(&M, 256, 256, 10, 7, NULL);
    CHECK(st->slots == 64 + 16 && sr_allowed_summary(st) > 0, "slots %d, summary used %d", st->slots, sr_allowed_summary(st));
    sr_states_free(st, 1);
    sr_free(&M);
}
TEST(spec_edge_no_summary_bank) {
    ModelConfig c = sr_config(64);
    c.n_summary = 0;
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_run(&M, 256, 256, 10, 7, NULL);
    CHECK(st->slots == 64 + 16 && sr_allowed_exact(st) > 0, "slots %d, exact used %d", st->slots, sr_allowed_exact(st));
    sr_states_free(st, 1);
    sr_free(&M);
}
TEST(spec_edge_no_banks_is_sliding_window) {
    ModelConfig c = sr_config(64);
    c.n_exact = c.n_summary = 0;
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_run(&M, 256, 256, 10, 7, NULL);
    CHECK(st->slots == 64 && sr_allowed(st) == 64, "slots %d allowed %d", st->slots, sr_allowed(st));
    sr_states_free(st, 1);
    sr_free(&M);
}
TEST(spec_edge_window_4) {
    ModelConfig c = sr_config(4);
    sr_edge(c, 64, 20, 256);
}
TEST(spec_edge_window_1) {
    ModelConfig c = sr_config(1);
    sr_edge(c, 32, 10, 256);
}
TEST(spec_edge_write_policy_none) {
    ModelConfig c = sr_config(64);
    c.write_policy = WRITE_POLICY_NONE;
    sr_edge(c, 256, 10, 256);
}
TEST(spec_edge_exact_refresh_on_hit) {
    ModelConfig c = sr_config(64);
    c.exact_refresh_on_hit = 1;
    sr_edge(c, 256, 10, 256);
}
TEST(spec_edge_summary_no_overwrite_on_insert) {
    ModelConfig c = sr_config(64);
    c.summary_overwrite_on_insert = 0;
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_run(&M, 256, 256, 0, 7, NULL);
    // first inserts blend with the random init (eta < 1) instead of replacing it
    SrMod M1;
    ModelConfig c1 = sr_config(64);
    sr_init(&M1, &c1, 42);
    BankState_f32* s1 = sr_run(&M1, 256, 256, 0, 7, NULL);
    CHECK(sr_allowed_summary(st) > 0 && memcmp(st->v, s1->v, sr_kv_numel(st) * sizeof(float)) != 0,
          "summary_overwrite_on_insert=0 had no effect");
    sr_states_free(st, 1);
    sr_states_free(s1, 1);
    sr_free(&M);
    sr_free(&M1);
}
TEST(spec_edge_mem_init_zeros) {
    ModelConfig c = sr_config(64);
    c.mem_init = MEM_INIT_ZEROS;
    sr_edge(c, 256, 10, 256);
}
TEST(spec_edge_mask_unused_memory_off) {
    ModelConfig c = sr_config(64);
    c.mask_unused_memory = 0;
    SrMod M;
    sr_init(&M, &c, 42);
    float *y0, *y1;
    BankState_f32* st = sr_run(&M, 256, 256, 10, 7, &y0);
    M.cfg.mask_unused_memory = 1;
    BankState_f32* s1 = sr_run(&M, 256, 256, 10, 7, &y1);
    CHECK(sr_max_abs_diff(y0, y1, 266 * SR_D) > 1e-4, "attending unused slots did not change the output");
    free(y0); free(y1);
    sr_states_free(st, 1);
    sr_states_free(s1, 1);
    sr_free(&M);
}
TEST(spec_edge_detach_evicted_off_eval) {
    // detach_evicted only concerns gradients: inference outputs and states are bit-identical.
    ModelConfig c = sr_config(64);
    c.detach_evicted = 0;
    SrMod M;
    sr_init(&M, &c, 42);
    float *y0, *y1;
    BankState_f32* st = sr_run(&M, 256, 256, 10, 7, &y0);
    M.cfg.detach_evicted = 1;
    BankState_f32* s1 = sr_run(&M, 256, 256, 10, 7, &y1);
    CHECK(memcmp(y0, y1, sizeof(float) * 266 * SR_D) == 0 && sr_state_equal(st, s1), "detach_evicted changed inference");
    free(y0); free(y1);
    sr_states_free(st, 1);
    sr_states_free(s1, 1);
    sr_free(&M);
}
TEST(spec_edge_single_token_prefill) {
    ModelConfig c = sr_config(64);
    sr_edge(c, 1, 5, 256);
}
TEST(spec_edge_prefill_equals_window) {
    ModelConfig c = sr_config(32);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_run(&M, 32, 256, 5, 7, NULL);
    CHECK(st->recent_filled == 32, "");
    sr_states_free(st, 1);
    sr_free(&M);
}
TEST(spec_edge_prefill_window_plus_one) {
    ModelConfig c = sr_config(32);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(33 * SR_D, 7);
    sr_prefill(&M, st, x, 1, 33, 256, 1, NULL);
    // exactly one token (position 0) evicted; gate 0.119 >= both thresholds: it enters both banks
    CHECK(st->src[0] == 1 && st->src[31] == 32, "ring holds %lld..%lld", (long long)st->src[0], (long long)st->src[31]);
    CHECK(sr_allowed_exact(st) == 1 && st->src[32] == 0 && sr_allowed_summary(st) == 1, "banks after one eviction: %d/%d",
          sr_allowed_exact(st), sr_allowed_summary(st));
    free(x);
    sr_states_free(st, 1);
    sr_edge(c, 33, 5, 256);
    sr_free(&M);
}
TEST(spec_edge_block_larger_than_sequence) {
    ModelConfig c = sr_config(64);
    sr_edge(c, 64, 0, 1024);
}

// Backward (training path, fresh zero state per row, detach_evicted = 0): finite gradients, a
// non-zero gradient into the input (embedding rows), and (d) into write_proj.weight.
static void sr_backward(int W, int Me, int Ms, int B, int L, int block, int want_write_grad) {
    ModelConfig c = sr_config(W);
    c.n_exact = Me; c.n_summary = Ms; c.block_size = block;
    c.detach_evicted = 0; c.mem_init = MEM_INIT_ZEROS;
    Model_f32 m;
    model_init_f32(&m, &c, 42);
    int* tok = (int*)malloc(sizeof(int) * 2 * B * L);
    int* tgt = tok + B * L;
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < 2 * B * L; i++) tok[i] = (int)rng_below(&r, (uint64_t)c.vocab_size);
    model_zero_grad_f32(&m);
    double loss = model_forward_f32(&m, tok, tgt, B, L, NULL);
    CHECK(isfinite(loss), "loss %g", loss);
    model_backward_f32(&m, 1.0f);
    int bad = 0;
    for (size_t i = 0; i < m.table.total; i++) bad += !isfinite(m.grads[i]);
    CHECK(bad == 0, "%d non-finite gradient values", bad);
    const ParamTensor* e = param_find(&m.table, PK_EMBED, 0);
    double ge = 0;
    for (int i = 0; i < B * L; i++)
        for (int d = 0; d < c.dim; d++) ge += fabs(m.grads[e->offset + (size_t)tok[i] * c.dim + d]);
    CHECK(ge > 0, "no gradient reaches the input");
    if (want_write_grad) {
        const ParamTensor* wt = param_find(&m.table, PK_WRITE_W, 0);
        double gw = 0;
        for (size_t j = 0; j < wt->numel; j++) gw += fabs(m.grads[wt->offset + j]);
        CHECK(gw > 0, "write_proj.weight gets no gradient");
    }
    free(tok);
    model_free_f32(&m);
}
TEST(spec_edge_backward_a_small_banks_batch2) { sr_backward(16, 8, 8, 2, 64, 16, 0); }
TEST(spec_edge_backward_b_no_eviction) { sr_backward(64, 16, 16, 1, 32, 256, 0); }
TEST(spec_edge_backward_c_tiny_window_batch2) { sr_backward(8, 4, 4, 2, 48, 8, 0); }
TEST(spec_edge_backward_d_write_gate_receives_gradient) { sr_backward(16, 8, 8, 1, 64, 16, 1); }

// ---------------------------------------------------------------------------------------------
// test_determinism.py (W = 64; seeds: model 42, input 7, state 99)

typedef struct {
    float* y;           // prefill outputs [B*L*D] then step outputs [steps*B*D]
    BankState_f32* st;  // [B]
    int B;
} SrRun;

static SrRun sr_det_run(uint64_t model_seed, int B, int L, int block, int write_cache, int steps) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, model_seed);
    SrRun r;
    r.B = B;
    r.st = sr_states(&M, B, 99);
    r.y = sr_out((size_t)(L + steps) * B * SR_D);
    float* x = sr_randn((size_t)B * L * SR_D, 7);
    sr_prefill(&M, r.st, x, B, L, block, write_cache, r.y);
    for (int i = 0; i < steps; i++) {
        float* xs = sr_randn((size_t)B * SR_D, 1000 + (uint64_t)i);
        sr_step(&M, r.st, xs, B, r.y + ((size_t)B * L + (size_t)i * B) * SR_D);
        free(xs);
    }
    CHECK(sr_out_ok(r.y, (size_t)(L + steps) * B * SR_D), "");
    free(x);
    sr_free(&M);
    return r;
}
static void sr_det_free(SrRun* r) { free(r->y); sr_states_free(r->st, r->B); }
static void sr_det_same(SrRun* a, SrRun* b, size_t n) {
    CHECK(memcmp(a->y, b->y, sizeof(float) * n) == 0, "outputs differ (max %.3g)", sr_max_abs_diff(a->y, b->y, n));
    for (int i = 0; i < a->B; i++) CHECK(sr_state_equal(&a->st[i], &b->st[i]), "row %d states differ", i);
}

TEST(spec_determinism_1_no_write_prefill) {
    SrRun a = sr_det_run(42, 2, 256, 128, 0, 0), b = sr_det_run(42, 2, 256, 128, 0, 0);
    sr_det_same(&a, &b, 2 * 256 * SR_D);
    sr_det_free(&a); sr_det_free(&b);
}
TEST(spec_determinism_2_write_prefill) {
    SrRun a = sr_det_run(42, 2, 256, 128, 1, 0), b = sr_det_run(42, 2, 256, 128, 1, 0);
    sr_det_same(&a, &b, 2 * 256 * SR_D);
    sr_det_free(&a); sr_det_free(&b);
}
TEST(spec_determinism_3_prefill_and_50_steps) {
    SrRun a = sr_det_run(42, 1, 128, 64, 1, 50), b = sr_det_run(42, 1, 128, 64, 1, 50);
    sr_det_same(&a, &b, 178 * SR_D);
    sr_det_free(&a); sr_det_free(&b);
}
TEST(spec_determinism_4_model_seed_matters) {
    SrRun a = sr_det_run(42, 1, 128, 64, 1, 5), b = sr_det_run(123, 1, 128, 64, 1, 5);
    CHECK(sr_max_abs_diff(a.y, b.y, 133 * SR_D) > 1e-3, "model seeds 42 and 123 give the same outputs");
    sr_det_free(&a); sr_det_free(&b);
}
TEST(spec_determinism_5_state_after_identical_prefills) {
    SrRun a = sr_det_run(42, 2, 256, 128, 1, 0), b = sr_det_run(42, 2, 256, 128, 1, 0);
    for (int i = 0; i < 2; i++) {
        const BankState_f32 *p = &a.st[i], *q = &b.st[i];
        CHECK(p->pos == q->pos && p->recent_filled == q->recent_filled && p->recent_idx == q->recent_idx, "row %d counters", i);
        CHECK(memcmp(p->k, q->k, sr_kv_numel(p) * 4) == 0 && memcmp(p->v, q->v, sr_kv_numel(p) * 4) == 0, "row %d k/v", i);
        CHECK(memcmp(p->allowed, q->allowed, p->slots) == 0 && memcmp(p->g_ring, q->g_ring, 4 * p->W) == 0 &&
              memcmp(p->last_exact, q->last_exact, 8 * p->Me) == 0, "row %d allowed/gates/LRU", i);
        CHECK(sr_allowed_exact(p) > 0, "row %d: nothing reached the exact bank", i);
    }
    CHECK(!sr_state_equal(&a.st[0], &a.st[1]), "the two rows have identical states");
    sr_det_free(&a); sr_det_free(&b);
}
TEST(spec_determinism_6_prefill_512_and_20_steps) {
    SrRun a = sr_det_run(42, 1, 512, 256, 1, 20), b = sr_det_run(42, 1, 512, 256, 1, 20);
    sr_det_same(&a, &b, 532 * SR_D);
    CHECK(a.st->pos == 532 && a.st->recent_filled == 64 && a.st->recent_idx == 20, "pos %lld filled %d idx %d",
          (long long)a.st->pos, a.st->recent_filled, a.st->recent_idx);
    sr_det_free(&a); sr_det_free(&b);
}

// ---------------------------------------------------------------------------------------------
// Beyond §7

TEST(spec_extra_summary_hf_band_zero_after_prefill_and_decode) {
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn(662 * SR_D, 7);
    sr_prefill(&M, st, x, 1, 512, 128, 1, NULL);
    int lf = c.head_dim / 2, s0 = c.window + c.n_exact;
    size_t kv = sr_kv_numel(st);
    float* before = (float*)malloc(sizeof(float) * kv);
    memcpy(before, st->k, sizeof(float) * kv);
    for (int i = 0; i < 150; i++) sr_step(&M, st, x + (size_t)(512 + i) * SR_D, 1, NULL);
    int changed = 0;
    for (int g = 0; g < c.n_kv_heads; g++)
        for (int m = 0; m < c.n_summary; m++)
            for (int d = 0; d < c.head_dim; d++) {
                size_t i = ((size_t)g * st->slots + s0 + m) * c.head_dim + d;
                if (d < lf) CHECK(st->k[i] == 0.0f, "summary key head %d slot %d dim %d = %g", g, m, d, st->k[i]);
                else changed += st->k[i] != before[i];
            }
    CHECK(changed > 0, "150 decode steps never updated a summary key");
    free(before);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_extra_decode_equals_prefill_within_window) {
    // docs/spec.md §2.4 write-then-attend: while nothing has been evicted (positions < W) a decode step sees its
    // own key and the whole causal prefix, exactly like chunked prefill of the same tokens.
    ModelConfig c = sr_config(64);
    SrMod M;
    sr_init(&M, &c, 42);
    int L = 48;
    float* x = sr_randn((size_t)L * SR_D, 7);
    BankState_f32* a = sr_states(&M, 1, 99);
    BankState_f32* b = sr_states(&M, 1, 99);
    float* yp = sr_out((size_t)L * SR_D);
    float* yd = sr_out((size_t)L * SR_D);
    sr_prefill(&M, a, x, 1, L, 16, 1, yp);
    for (int t = 0; t < L; t++) sr_step(&M, b, x + (size_t)t * SR_D, 1, yd + (size_t)t * SR_D);
    CHECK(sr_out_ok(yp, (size_t)L * SR_D) && sr_out_ok(yd, (size_t)L * SR_D), "");
    double d = sr_max_abs_diff(yp, yd, (size_t)L * SR_D);
    CHECK(d <= 1e-5, "decode vs prefill max diff %.3g", d);
    CHECK(a->pos == b->pos && a->recent_filled == b->recent_filled, "");
    free(x); free(yp); free(yd);
    sr_states_free(a, 1);
    sr_states_free(b, 1);
    sr_free(&M);
}

// v rows of tokens x [n, D] computed directly (v_proj, no RoPE).
static float* sr_values(const SrMod* M, const float* x, int n) {
    int kvd = config_kvdim(&M->cfg);
    float* v = (float*)malloc(sizeof(float) * (size_t)n * kvd);
    for (int t = 0; t < n; t++) matmul_forward_f32(v + (size_t)t * kvd, x + (size_t)t * SR_D, M->w.wv, NULL, 1, SR_D, kvd);
    return v;
}
// Ring slots in chronological order hold positions pos - filled ... pos - 1, with those tokens' values;
// exact slots hold their source token's value.
static void sr_check_chronology(const BankState_f32* st, const float* vals, int kvd, const char* when) {
    int F = st->recent_filled, W = st->W;
    for (int j = 0; j < F; j++) {
        int s = F == W ? (st->recent_idx + j) % W : j;
        int64_t want = st->pos - F + j;
        CHECK(st->src[s] == want, "%s: ring entry %d (slot %d) holds position %lld, expected %lld", when, j, s,
              (long long)st->src[s], (long long)want);
        if (st->src[s] != want) return;
        for (int g = 0; g < st->Hkv; g++)
            CHECK(memcmp(bank_v_f32(st, g, s), vals + (size_t)want * kvd + g * st->Dh, sizeof(float) * st->Dh) == 0,
                  "%s: ring slot %d value is not token %lld's", when, s, (long long)want);
    }
    for (int m = 0; m < st->Me; m++) {
        int64_t p = st->src[W + m];
        if (!st->allowed[W + m]) continue;
        CHECK(p >= 0 && p < st->pos - F, "%s: exact slot %d source %lld", when, m, (long long)p);
        if (p < 0 || p >= st->pos) continue;
        for (int g = 0; g < st->Hkv; g++)
            CHECK(memcmp(bank_v_f32(st, g, W + m), vals + (size_t)p * kvd + g * st->Dh, sizeof(float) * st->Dh) == 0,
                  "%s: exact slot %d value is not token %lld's", when, m, (long long)p);
    }
}

TEST(spec_extra_ring_chronology) {
    ModelConfig c = sr_config(32);
    SrMod M;
    sr_init(&M, &c, 42);
    int L = 100, S = 45, kvd = config_kvdim(&c);
    BankState_f32* st = sr_states(&M, 1, 99);
    float* x = sr_randn((size_t)(L + S) * SR_D, 7);
    float* vals = sr_values(&M, x, L + S);
    sr_prefill(&M, st, x, 1, L, 48, 1, NULL);
    CHECK(st->recent_filled == 32, "");
    sr_check_chronology(st, vals, kvd, "after prefill");
    char when[64];
    for (int i = 0; i < S; i++) {
        sr_step(&M, st, x + (size_t)(L + i) * SR_D, 1, NULL);
        snprintf(when, sizeof(when), "after step %d", i);
        sr_check_chronology(st, vals, kvd, when);
    }
    // a second prefill on a wrapped ring (recent_idx != 0) reads it in chronological order
    CHECK(st->recent_idx == S % 32, "recent_idx %d", st->recent_idx);
    float* x2 = sr_randn(20 * SR_D, 8);
    float* all = (float*)malloc(sizeof(float) * (size_t)(L + S + 20) * SR_D);
    memcpy(all, x, sizeof(float) * (size_t)(L + S) * SR_D);
    memcpy(all + (size_t)(L + S) * SR_D, x2, sizeof(float) * 20 * SR_D);
    float* vals2 = sr_values(&M, all, L + S + 20);
    sr_prefill(&M, st, x2, 1, 20, 7, 1, NULL);
    sr_check_chronology(st, vals2, kvd, "after second prefill");
    free(x); free(x2); free(all); free(vals); free(vals2);
    sr_states_free(st, 1);
    sr_free(&M);
}

TEST(spec_extra_allowed_never_exceeds_slots) {
    // A long mixed sequence of prefills (various blocks, with and without writes) and steps on a small
    // state: after every operation allowed <= slots, the ring's allowed slots are exactly the filled
    // ones, and each bank's count stays within its size.
    for (int policy = 0; policy < 2; policy++) {
        ModelConfig c = sr_config(8);
        c.n_exact = 4; c.n_summary = 4;
        c.write_policy = policy ? WRITE_POLICY_NONE : WRITE_POLICY_GATED;
        SrMod M;
        sr_init(&M, &c, 42);
        BankState_f32* st = sr_states(&M, 1, 99);
        float* x = sr_randn(400 * SR_D, 7);
        Rng r;
        rng_seed(&r, 5);
        int t = 0, ops = 0;
        while (t < 380) {
            int kind = (int)rng_below(&r, 3);
            if (kind == 0) { sr_step(&M, st, x + (size_t)t * SR_D, 1, NULL); t++; }
            else {
                int L = 1 + (int)rng_below(&r, 19), block = 1 + (int)rng_below(&r, 12), wc = kind == 1;
                sr_prefill(&M, st, x + (size_t)t * SR_D, 1, L, block, wc, NULL);
                t += L;
            }
            ops++;
            // bank entries come from evicted tokens (pos - recent_filled of them), at most one slot per
            // token and bank; a token may sit in both banks, so allowed may exceed pos.
            int a = sr_allowed(st), ring = sr_count(st->allowed, st->W);
            int64_t ev = st->pos - st->recent_filled;
            CHECK(a <= st->slots, "op %d: allowed %d, slots %d", ops, a, st->slots);
            CHECK(ring == st->recent_filled, "op %d: %d ring slots allowed, %d filled", ops, ring, st->recent_filled);
            CHECK(sr_allowed_exact(st) <= st->Me && sr_allowed_exact(st) <= ev, "op %d: %d exact slots, %lld evicted", ops,
                  sr_allowed_exact(st), (long long)ev);
            CHECK(sr_allowed_summary(st) <= st->Ms && sr_allowed_summary(st) <= ev, "op %d: %d summary slots, %lld evicted", ops,
                  sr_allowed_summary(st), (long long)ev);
        }
        CHECK(sr_allowed(st) == st->slots, "policy %d: the state never filled up (%d of %d)", policy, sr_allowed(st), st->slots);
        free(x);
        sr_states_free(st, 1);
        sr_free(&M);
    }
}

// Independent model of the exact bank for tokens that are all novel and all kept (write_policy none):
// decode evictions go to the lowest free slot, else the least recently stamped; a block write gives
// its first Te = min(cpb, evicted) evicted tokens (oldest first: equal gates) ranks, and rank r < Me
// takes the r-th slot of (free slots by index, then used slots by oldest stamp) as of before the block.
typedef struct {
    int Me, W;
    int64_t pos[16], last[16];
    int64_t ring[64];
    int ring_n;
    int64_t inserted[512];
    int n_ins;
} SrLru;
static void sr_lru_put(SrLru* s, int m, int64_t p) { s->pos[m] = p; s->last[m] = p; s->inserted[s->n_ins++] = p; }
static void sr_lru_evict_one(SrLru* s, int64_t p) {
    int m = -1;
    for (int i = 0; i < s->Me && m < 0; i++) if (s->pos[i] < 0) m = i;
    if (m < 0) { m = 0; for (int i = 1; i < s->Me; i++) if (s->last[i] < s->last[m]) m = i; }
    sr_lru_put(s, m, p);
}
static void sr_lru_step(SrLru* s, int64_t p) {
    if (s->ring_n == s->W) {
        sr_lru_evict_one(s, s->ring[0]);
        memmove(s->ring, s->ring + 1, sizeof(int64_t) * (s->W - 1));
        s->ring_n--;
    }
    s->ring[s->ring_n++] = p;
}
static void sr_lru_block(SrLru* s, int64_t p0, int blk, int cpb) {
    int64_t cat[128];
    int n = 0;
    for (int i = 0; i < s->ring_n; i++) cat[n++] = s->ring[i];
    for (int i = 0; i < blk; i++) cat[n++] = p0 + i;
    int keep = n < s->W ? n : s->W, evict = n - keep;
    int Te = evict < cpb ? evict : cpb, n_lru = Te < s->Me ? Te : s->Me;
    int order[16], k = 0;
    for (int i = 0; i < s->Me; i++) if (s->pos[i] < 0) order[k++] = i;
    int nfree = k;
    for (int i = 0; i < s->Me; i++) if (s->pos[i] >= 0) order[k++] = i;
    for (int i = nfree + 1; i < k; i++)  // used slots by stamp (stamps are unique)
        for (int j = i; j > nfree && s->last[order[j - 1]] > s->last[order[j]]; j--) { int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t; }
    for (int r = 0; r < n_lru; r++) sr_lru_put(s, order[r], cat[r]);
    s->ring_n = keep;
    for (int i = 0; i < keep; i++) s->ring[i] = cat[evict + i];
}
static void sr_lru_prefill(SrLru* s, int64_t p0, int L, int block, int cpb) {
    for (int t = 0; t < L; t += block) sr_lru_block(s, p0 + t, L - t < block ? L - t : block, cpb);
}

TEST(spec_extra_exact_bank_lru) {
    // Values are one-hot per KV head (head 0 at t % 32, head 1 at t / 32): any two tokens have mean
    // cosine <= 0.5 < 0.70, so every evicted candidate is novel. With write_policy none every token is
    // kept. The exact bank must then follow the LRU model above, and hold the Me most recently inserted
    // tokens, as exact copies of their values.
    ModelConfig c = sr_config(4);
    c.n_exact = 4;
    c.write_policy = WRITE_POLICY_NONE;
    SrMod M;
    sr_init(&M, &c, 42);
    int kvd = config_kvdim(&c), Dh = c.head_dim, N = 90;
    for (int o = 0; o < kvd; o++)
        for (int i = 0; i < SR_D; i++) M.w.wv[(size_t)o * SR_D + i] = o == i ? 1.0f : 0.0f;
    float* x = sr_randn((size_t)N * SR_D, 7);
    for (int t = 0; t < N; t++) {
        for (int i = 0; i < kvd; i++) x[(size_t)t * SR_D + i] = 0.0f;
        x[(size_t)t * SR_D + t % 32] = 1.0f;
        x[(size_t)t * SR_D + Dh + t / 32] = 1.0f;
    }
    BankState_f32* st = sr_states(&M, 1, 99);
    SrLru sim;
    memset(&sim, 0, sizeof(sim));
    sim.Me = 4; sim.W = 4;
    for (int m = 0; m < 16; m++) sim.pos[m] = -1;
    // ops: prefill (L, block) when L > 0, else -L decode steps
    int ops[][2] = {{10, 3}, {-7, 0}, {13, 5}, {-9, 0}, {20, 20}, {-6, 0}, {11, 2}, {-14, 0}};
    int t = 0, cpb = c.exact_candidates_per_block, full_block_checked = 0;
    for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++) {
        if (ops[o][0] > 0) {
            sr_prefill(&M, st, x + (size_t)t * SR_D, 1, ops[o][0], ops[o][1], 1, NULL);
            sr_lru_prefill(&sim, t, ops[o][0], ops[o][1], cpb);
            t += ops[o][0];
        } else {
            for (int i = 0; i < -ops[o][0]; i++, t++) {
                sr_step(&M, st, x + (size_t)t * SR_D, 1, NULL);
                sr_lru_step(&sim, t);
            }
        }
        for (int m = 0; m < 4; m++) {
            CHECK(st->allowed[4 + m] == (sim.pos[m] >= 0), "op %zu slot %d: allowed %d, model says %lld", o, m, st->allowed[4 + m],
                  (long long)sim.pos[m]);
            CHECK(st->src[4 + m] == sim.pos[m], "op %zu slot %d holds token %lld, model says %lld", o, m, (long long)st->src[4 + m],
                  (long long)sim.pos[m]);
            CHECK(st->last_exact[m] == (sim.pos[m] >= 0 ? sim.last[m] : 0), "op %zu slot %d stamp %lld, model says %lld", o, m,
                  (long long)st->last_exact[m], (long long)sim.last[m]);
            if (sim.pos[m] >= 0)
                for (int g = 0; g < 2; g++)
                    for (int d = 0; d < Dh; d++) {
                        float want = (g == 0 ? d == sim.pos[m] % 32 : d == sim.pos[m] / 32) ? 1.0f : 0.0f;
                        CHECK(bank_v_f32(st, g, 4 + m)[d] == want, "op %zu slot %d value is not token %lld's", o, m, (long long)sim.pos[m]);
                    }
        }
        // the bank = the Me most recently inserted tokens
        int n = sim.n_ins < 4 ? sim.n_ins : 4;
        for (int i = 0; i < n; i++) {
            int64_t p = sim.inserted[sim.n_ins - 1 - i];
            int found = 0;
            for (int m = 0; m < 4; m++) found |= st->allowed[4 + m] && st->src[4 + m] == p;
            CHECK(found, "op %zu: recently inserted token %lld not in the bank", o, (long long)p);
        }
        full_block_checked |= ops[o][0] == 20;
    }
    CHECK(t == N && st->pos == N && sim.n_ins > 12 && full_block_checked, "t %d pos %lld inserts %d", t, (long long)st->pos, sim.n_ins);
    free(x);
    sr_states_free(st, 1);
    sr_free(&M);
}

// docs/spec.md §3.1 / §11.16: the two candidate orders on one list of gates with ties. by_gate: the T highest
// gates, highest first, ties by ascending index; reference: gates above the T-th largest in index
// order, then the ties in index order.
TEST(spec_candidate_orders) {
    const float gates[] = {0.2f, 0.9f, 0.5f, 0.5f, 0.1f, 0.9f, 0.5f, 0.3f};
    ModelConfig c = config_default();
    int out[8];
    topk_candidates_f32(&c, gates, 8, 5, out);
    const int by_gate[5] = {1, 5, 2, 3, 6};
    for (int i = 0; i < 5; i++) CHECK(out[i] == by_gate[i], "by_gate[%d] = %d, want %d", i, out[i], by_gate[i]);
    topk_candidates_f32(&c, gates, 8, 2, out);
    CHECK(out[0] == 1 && out[1] == 5, "by_gate top-2: %d %d", out[0], out[1]);
    topk_candidates_f32(&c, gates, 8, 8, out);
    CHECK(out[5] == 7 && out[6] == 0 && out[7] == 4, "by_gate all: ... %d %d %d", out[5], out[6], out[7]);
    c.candidate_order = CAND_ORDER_REFERENCE;
    topk_candidates_f32(&c, gates, 8, 4, out);  // v* = 0.5: {1, 5} above it, then ties 2, 3
    CHECK(out[0] == 1 && out[1] == 5 && out[2] == 2 && out[3] == 3, "reference: %d %d %d %d", out[0], out[1], out[2], out[3]);
    topk_candidates_f32(&c, gates, 8, 6, out);  // v* = 0.3: above in index order, then the tie 7
    const int ref6[6] = {1, 2, 3, 5, 6, 7};
    for (int i = 0; i < 6; i++) CHECK(out[i] == ref6[i], "reference top-6 [%d] = %d, want %d", i, out[i], ref6[i]);
}
