// infer_coda.cu — evaluation and generation with a coda.c / Hugging Face Mistral model.
//   * perplexity on a token shard with the paper's three procedures (PROTOCOL.md §3):
//       sliding    §3.1   windows of --ctx with --stride; the first window scores all its targets,
//                         each later one only its last `stride` targets (unbounded or bounded model);
//       chunked    §3.2b  non-overlapping chunks of --ctx, only full chunks, state reset per chunk,
//                         all ctx-1 targets scored (--partial-chunk 1: also the last partial chunk,
//                         which is §3.2a, the training loop's sequential eval);
//       streaming  §3.2c  chunks of --chunk through ONE persistent state per layer, no reset:
//                         positions accumulate and the banks persist (bounded models only);
//   * generation (greedy or temperature / top-p) with a constant-size bounded state: the prompt is
//     prefilled in blocks (SPEC §2.3), then one decode step per token (SPEC §2.4). An unbounded
//     model re-runs the forward over the growing context for every token (correct, slow);
//   * bounded-state save/load (a versioned binary, see infer_state_save): resuming from a saved
//     state continues exactly as the uninterrupted run would have.
//   * needle-in-a-haystack (PROTOCOL.md §4): the reference demo's synthetic single-layer test of
//     the bank bookkeeping (--needle; needs no model).
// THIS VERSION RUNS ON THE CPU REFERENCE MODEL (llmc/cpu/, fp32). It is built with nvcc like the
// other binaries, but touches no GPU; the GPU inference path is a later issue. Expect tiny and small
// models to be practical, not 7B.
//
// Every evaluation is a function (infer_*), so the test suite (dev/test/test_infer.h) calls them
// directly: test_coda.cu includes this file with TESTING defined, which leaves out main().
// All file-local names start with infer_ / Infer (this file shares a translation unit with
// train_coda.cu in the test binary).
#include <errno.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>
#include "llmc/cpu/reference.h"
#include "llmc/hf_model.h"
#include "llmc/shard.h"
#include "llmc/tokenizer.h"

// ---------------------------------------------------------------------------------------------
// Model: config.json (+ "coda" object) with command-line overrides of the attention config

typedef struct {
    int bounded;        // -1: keep the config's
    int window, n_exact, n_summary, block_size;  // -1: keep
    int exact_cands, summary_cands;              // candidates per block (-1: keep)
    double rope_theta;  // > 0: RoPE base override (rope_theta_override)
    int mem_init;       // -1: keep; else MemInit
    int candidate_order;  // -1: keep; else CandidateOrder
} InferOverrides;

static InferOverrides infer_no_overrides(void) {
    InferOverrides o;
    o.bounded = o.window = o.n_exact = o.n_summary = o.block_size = o.mem_init = o.exact_cands = o.summary_cands = -1;
    o.candidate_order = -1;
    o.rope_theta = 0.0;
    return o;
}

// The bank/block/RoPE overrides (all but --bounded, which only a loaded model may change).
static void infer_apply_overrides(ModelConfig* c, const InferOverrides* ov) {
    if (!ov) return;
    if (ov->window >= 0) c->window = ov->window;
    if (ov->n_exact >= 0) c->n_exact = ov->n_exact;
    if (ov->n_summary >= 0) c->n_summary = ov->n_summary;
    if (ov->block_size >= 0) c->block_size = ov->block_size;
    if (ov->exact_cands >= 0) c->exact_candidates_per_block = ov->exact_cands;
    if (ov->summary_cands >= 0) c->summary_candidates_per_block = ov->summary_cands;
    if (ov->rope_theta > 0) c->rope_theta_override = ov->rope_theta;
    if (ov->mem_init >= 0) c->mem_init = (MemInit)ov->mem_init;
    if (ov->candidate_order >= 0) c->candidate_order = (CandidateOrder)ov->candidate_order;
}

// Loads DIR/config.json, applies the overrides, builds the fp32 CPU model and loads the weights.
// CoDA tensors the checkpoint lacks (e.g. write gate and eta when a Phase-1 unbounded checkpoint is
// run with --bounded 1) keep their initial values; tensors the config does not use (e.g. those of a
// bounded checkpoint run with --bounded 0) are skipped. *report (may be NULL) counts both.
static int infer_load_model(const char* dir, const InferOverrides* ov, Model_f32* m, HfLoadReport* report, CodaError* err) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    ModelConfig c;
    if (config_read_hf(path, &c, err) != 0) return -1;
    if (ov && ov->bounded >= 0) c.bounded = ov->bounded;
    infer_apply_overrides(&c, ov);
    CodaError inner;
    if (config_validate(&c, &inner) != 0) return coda_errorf(err, "%s (after command-line overrides): %s", path, inner.msg);
    model_init_f32(m, &c, 1234);  // values for CoDA tensors the checkpoint may lack
    if (hf_load_params(dir, &m->table, m->params, DT_F32, report, err) != 0) { model_free_f32(m); return -1; }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Bounded states: one BankState per layer (batch of one row)

static BankState_f32* infer_states_alloc(const ModelConfig* c) {
    BankState_f32* st = (BankState_f32*)coda_calloc_or_die((size_t)c->n_layers, sizeof(BankState_f32), "bounded states");
    for (int l = 0; l < c->n_layers; l++) bank_alloc_f32(&st[l], c);
    return st;
}
static void infer_states_free(BankState_f32* st, const ModelConfig* c) {
    if (!st) return;
    for (int l = 0; l < c->n_layers; l++) bank_free_f32(&st[l]);
    free(st);
}
// Empty state (positions restart at 0, banks empty) with the config's mem_init; layer l draws its
// random bank contents from seed + l.
static void infer_states_reset(BankState_f32* st, const ModelConfig* c, uint64_t seed) {
    for (int l = 0; l < c->n_layers; l++) bank_reset_f32(&st[l], c->mem_init, seed + (uint64_t)l);
}

// Bytes of one layer's bounded state, by SPEC §6's formula applied to what coda.c itself keeps:
// K and V buffers (2·Hkv·slots·Dh·kv_bytes), ring write gates (fp32, 4·W), the attendable mask
// (1 byte per slot) and the exact bank's LRU stamps (int64, 8·Me). coda.c keeps no normalised-vector
// caches (SPEC §2.1: derived data, recomputed), so those terms of the reference's formula are 0.
// Not counted: the per-slot source positions the CPU reference keeps for the training backward
// (8·slots) and the three scalar counters.
typedef struct { size_t kv, gates, mask, lru, total; } InferStateBytes;
static InferStateBytes infer_state_bytes(const ModelConfig* c, size_t kv_bytes) {
    InferStateBytes b;
    size_t slots = (size_t)config_state_slots(c);
    b.kv = 2 * (size_t)c->n_kv_heads * slots * (size_t)c->head_dim * kv_bytes;
    b.gates = 4 * (size_t)c->window;
    b.mask = slots;
    b.lru = 8 * (size_t)c->n_exact;
    b.total = b.kv + b.gates + b.mask + b.lru;
    return b;
}

// ---------------------------------------------------------------------------------------------
// Perplexity (PROTOCOL.md §3)

typedef enum { INFER_SLIDING = 0, INFER_CHUNKED = 1, INFER_STREAMING = 2 } InferProcedure;
static const char* const INFER_PROCEDURE_NAMES[] = {"sliding", "chunked", "streaming"};

typedef struct {
    int64_t n_scored;   // targets scored
    double nll_sum;     // their total negative log-likelihood (nats)
    int n_forwards;     // windows / chunks run
} InferPpl;

static double infer_ppl_mean(const InferPpl* r) { return r->n_scored ? r->nll_sum / (double)r->n_scored : NAN; }
static double infer_ppl_value(const InferPpl* r) { return exp(infer_ppl_mean(r)); }

static int infer_progress_enabled = 1;
static void infer_progress(const char* what, int64_t done, int64_t total) {
    if (!infer_progress_enabled || !isatty(2)) return;
    fprintf(stderr, "\r%s: %lld / %lld tokens", what, (long long)done, (long long)total);
    if (done >= total) fprintf(stderr, "\n");
}

// One forward over tok[0, len): scores the targets at window positions [first, len) (target i is
// tok[i], predicted from position i-1; first >= 1). states: NULL (unbounded model, or a fresh
// training-style state) or the persistent bounded states, continued.
static void infer_score(Model_f32* m, const int* tok, int len, int first, BankState_f32* states, int* targets, InferPpl* r) {
    for (int i = 0; i < len; i++) targets[i] = (i + 1 < len && i + 1 >= first) ? tok[i + 1] : -1;
    model_forward_f32(m, tok, targets, 1, len, states);
    for (int i = 0; i < len; i++)
        if (targets[i] >= 0) { r->nll_sum += (double)m->losses[i]; r->n_scored++; }
    r->n_forwards++;
}

static int infer_check_tokens(const Model_f32* m, const int* tok, int64_t n, CodaError* err) {
    for (int64_t i = 0; i < n; i++)
        if (tok[i] < 0 || tok[i] >= m->cfg.vocab_size)
            return coda_errorf(err, "token %d at index %lld is outside the model's vocabulary [0, %d)", tok[i], (long long)i,
                               m->cfg.vocab_size);
    return 0;
}

// §3.1: windows [b, min(b+ctx, n)) for b = 0, stride, 2·stride, ... until a window reaches the end
// (Hugging Face's recipe, as eval_llm.py / train_coda.py use it). A window scores the targets at
// absolute positions [max(prev_end, b+1), end): the first window all its ctx-1 targets, a later full
// window its last `stride` (so every token from 1 on is scored exactly once when stride < ctx; with
// stride == ctx each window scores its ctx-1 targets, i.e. chunked evaluation). Bounded models start
// every window from an empty state (seeded mem_init).
static int infer_ppl_sliding(Model_f32* m, const int* tok, int64_t n, int ctx, int stride, uint64_t seed, InferPpl* r, CodaError* err) {
    memset(r, 0, sizeof(*r));
    if (ctx < 2) return coda_errorf(err, "sliding window: --ctx must be >= 2 (got %d)", ctx);
    if (stride < 1 || stride > ctx) return coda_errorf(err, "sliding window: --stride must be in [1, ctx=%d] (got %d)", ctx, stride);
    if (n < 2) return coda_errorf(err, "sliding window: need at least 2 tokens (got %lld)", (long long)n);
    if (infer_check_tokens(m, tok, n, err) != 0) return -1;
    const ModelConfig* c = &m->cfg;
    BankState_f32* st = c->bounded ? infer_states_alloc(c) : NULL;
    int* targets = (int*)coda_malloc_or_die(sizeof(int) * (size_t)ctx, "targets");
    int64_t prev_end = 0;
    for (int64_t b = 0; b < n; b += stride) {
        int64_t e = b + ctx < n ? b + ctx : n;
        int64_t first_abs = prev_end > b + 1 ? prev_end : b + 1;
        if (st) infer_states_reset(st, c, seed);
        if (first_abs < e) infer_score(m, tok + b, (int)(e - b), (int)(first_abs - b), st, targets, r);
        prev_end = e;
        infer_progress("sliding", e, n);
        if (e == n) break;
    }
    free(targets);
    infer_states_free(st, c);
    return 0;
}

// §3.2b: chunks [k·ctx, (k+1)·ctx), state reset before each, all ctx-1 targets scored, only full
// chunks. keep_partial = 1: also the last partial chunk if it has a target (§3.2a).
static int infer_ppl_chunked(Model_f32* m, const int* tok, int64_t n, int ctx, int keep_partial, uint64_t seed, InferPpl* r,
                             CodaError* err) {
    memset(r, 0, sizeof(*r));
    if (ctx < 2) return coda_errorf(err, "chunked: --ctx must be >= 2 (got %d)", ctx);
    if (!keep_partial && n < ctx)
        return coda_errorf(err, "chunked: the text has %lld tokens, fewer than one full chunk of ctx=%d", (long long)n, ctx);
    if (infer_check_tokens(m, tok, n, err) != 0) return -1;
    const ModelConfig* c = &m->cfg;
    BankState_f32* st = c->bounded ? infer_states_alloc(c) : NULL;
    int* targets = (int*)coda_malloc_or_die(sizeof(int) * (size_t)ctx, "targets");
    for (int64_t b = 0; b < n; b += ctx) {
        int64_t len = n - b < ctx ? n - b : ctx;
        if (len < ctx && (!keep_partial || len < 2)) break;
        if (st) infer_states_reset(st, c, seed);
        infer_score(m, tok + b, (int)len, 1, st, targets, r);
        infer_progress("chunked", b + len, n);
    }
    free(targets);
    infer_states_free(st, c);
    return 0;
}

// §3.2c: chunks of `chunk` tokens (the last may be shorter) through ONE persistent state per layer
// from an empty (seeded) start: positions accumulate, banks persist. Each chunk scores its own
// targets (the first token of a chunk has no prediction inside it, as in eval_llm.py). Each chunk is
// prefilled in blocks of the config's block_size, counted from the chunk's start. The final
// state is left in *final_states if non-NULL (caller frees with infer_states_free).
static int infer_ppl_streaming(Model_f32* m, const int* tok, int64_t n, int chunk, uint64_t seed, InferPpl* r,
                               BankState_f32** final_states, CodaError* err) {
    memset(r, 0, sizeof(*r));
    if (final_states) *final_states = NULL;
    const ModelConfig* c = &m->cfg;
    if (!c->bounded)
        return coda_errorf(err, "streaming needs a bounded model (an unbounded model has no fixed-size state to carry; "
                                "use --procedure sliding, or --bounded 1)");
    if (chunk < 2) return coda_errorf(err, "streaming: --chunk must be >= 2 (got %d)", chunk);
    if (n < 2) return coda_errorf(err, "streaming: need at least 2 tokens (got %lld)", (long long)n);
    if (infer_check_tokens(m, tok, n, err) != 0) return -1;
    BankState_f32* st = infer_states_alloc(c);
    infer_states_reset(st, c, seed);
    int* targets = (int*)coda_malloc_or_die(sizeof(int) * (size_t)chunk, "targets");
    for (int64_t b = 0; b < n; b += chunk) {
        int64_t len = n - b < chunk ? n - b : chunk;
        if (len < 2) {  // a lone last token has no target: still feed it so the state covers the text
            model_forward_f32(m, tok + b, NULL, 1, (int)len, st);
            break;
        }
        infer_score(m, tok + b, (int)len, 1, st, targets, r);
        infer_progress("streaming", b + len, n);
    }
    free(targets);
    if (final_states) *final_states = st;
    else infer_states_free(st, c);
    return 0;
}

static int infer_ppl(Model_f32* m, InferProcedure p, const int* tok, int64_t n, int ctx, int stride, int chunk, int keep_partial,
                     uint64_t seed, InferPpl* r, CodaError* err) {
    switch (p) {
        case INFER_SLIDING: return infer_ppl_sliding(m, tok, n, ctx, stride, seed, r, err);
        case INFER_CHUNKED: return infer_ppl_chunked(m, tok, n, ctx, keep_partial, seed, r, err);
        case INFER_STREAMING: return infer_ppl_streaming(m, tok, n, chunk, seed, r, NULL, err);
    }
    return coda_errorf(err, "unknown procedure %d", (int)p);
}

// ---------------------------------------------------------------------------------------------
// Needle-in-a-haystack (PROTOCOL.md §4): the reference's examples/needle_demo.py. A synthetic test of
// ONE randomly initialised bounded CoDA layer (not a retrieval test of a trained model): the write
// gate reads a random unit direction u (write_proj weight := u, bias 0); background tokens are
// -5u + N(0, 0.01^2) (gate ~ 0.007, below both keep thresholds: never admitted to a bank), the needle
// at position 64 is +5u + noise (gate ~ 0.993). After a chunked prefill of the whole sequence the
// needle is "retained" when its key (re-projected and RoPE'd at its position) has cosine > 0.999 with
// some valid slot of the recent ring or the exact bank (max over KV heads). It checks the bank
// bookkeeping (eviction, candidate selection, exact-bank admission), not learned retrieval.
//
// With the demo's settings (8 exact / 64 summary candidates per block) the result depends on the
// candidate order (SPEC §3.1, §11.16). coda.c's default (each bank takes its highest-gated candidates)
// hands the needle (gate 0.993) to the exact bank at every length. --candidate-order reference
// reproduces the reference: one top-64 list in index order, of which the exact bank takes the first 8
// -- in fp32 the 8 oldest background tokens (strictly above the 64th-largest gate), rejected by the
// 0.10 threshold -- and the needle is LOST once it leaves the ring, as the reference loses it in fp32
// (it keeps it only in bf16, where the background gates tie).

// The demo's module: D=512, H=8, Hkv=2 (Dh=64), W=128, Me=32, Ms=32, block 256, gated writes with
// thresholds 0.10 / 0.05, RoPE base 10000 (the module's default); attention-config overrides apply.
static ModelConfig infer_needle_config(const InferOverrides* ov) {
    ModelConfig c = config_default();
    c.vocab_size = 2; c.dim = 512; c.ffn_dim = 8; c.n_layers = 1; c.n_heads = 8; c.n_kv_heads = 2; c.head_dim = 64;
    c.rope_theta = 10000.0; c.differential = 1; c.bounded = 1;
    c.window = 128; c.n_exact = 32; c.n_summary = 32; c.block_size = 256;
    infer_apply_overrides(&c, ov);
    return c;
}

typedef struct {
    int length, pos;
    int retained;        // best cosine > 0.999
    int where;           // 0: nowhere, 1: recent ring, 2: exact bank (slot of the best cosine)
    int slot;            // that slot
    int64_t slot_src;    // position of the token the slot holds (bookkeeping witness: == pos)
    double best_cos;
    double needle_gate;  // write gate of the needle token
    int exact_used;      // exact-bank slots in use at the end
} InferNeedle;

// needle_scale: +5 is the demo's needle; a negative control passes -5 (the "needle" is background).
static int infer_needle(const ModelConfig* cfg, int length, int pos, double needle_scale, uint64_t seed, InferNeedle* r, CodaError* err) {
    memset(r, 0, sizeof(*r));
    r->length = length;
    r->pos = pos;
    ModelConfig c = *cfg;
    CodaError inner;
    if (config_validate(&c, &inner) != 0) return coda_errorf(err, "needle: %s", inner.msg);
    if (!c.bounded) return coda_errorf(err, "needle: the test needs a bounded layer");
    if (pos < 0 || pos >= length) return coda_errorf(err, "needle: position %d is outside the sequence of %d tokens", pos, length);
    int D = c.dim, Dh = c.head_dim, Hkv = c.n_kv_heads, kvd = config_kvdim(&c);
    Model_f32 m;
    model_init_f32(&m, &c, seed);
    AttnWeights_f32 w = model_attn_weights_f32(&m, m.params, 0);
    Rng rng;
    rng_seed(&rng, seed + 1);
    float* u = (float*)coda_malloc_or_die(sizeof(float) * D, "needle direction");
    double nrm = 0;
    for (int d = 0; d < D; d++) { u[d] = (float)rng_normal(&rng); nrm += (double)u[d] * u[d]; }
    for (int d = 0; d < D; d++) u[d] = (float)(u[d] / sqrt(nrm));
    memcpy(w.write_w, u, sizeof(float) * D);
    w.write_b[0] = 0.0f;
    float* x = (float*)coda_malloc_or_die(sizeof(float) * (size_t)length * D, "needle inputs");
    for (int t = 0; t < length; t++) {
        double a = t == pos ? needle_scale : -5.0;
        for (int d = 0; d < D; d++) x[(size_t)t * D + d] = (float)(a * u[d] + 0.01 * rng_normal(&rng));
    }
    AttnActs_f32 acts;
    attn_acts_alloc_f32(&acts, &c, 1, length, 0);
    BankState_f32 st;
    bank_alloc_f32(&st, &c);
    bank_reset_f32(&st, c.mem_init, seed + 2);
    attn_forward_f32(&w, &c, &acts, x, 1, length, &st, 1, NULL);
    r->needle_gate = acts.gate[pos];
    // the needle's key, re-projected and RoPE'd at its position
    float* kn = (float*)coda_malloc_or_die(sizeof(float) * (kvd + Dh), "needle key");
    float *cs = kn + kvd, *sn = cs + Dh / 2;
    matmul_forward_f32(kn, x + (size_t)pos * D, w.wk, NULL, 1, D, kvd);
    rope_tables_f32(cs, sn, pos, 1, Dh, config_rope_base(&c), c.rope_bf16_positions);
    rope_apply_f32(kn, cs, sn, 1, Hkv, Dh, c.rope_layout, +1);
    r->best_cos = -2;
    r->slot = -1;
    for (int s = 0; s < c.window + c.n_exact; s++) {
        if (!st.allowed[s]) continue;
        for (int g = 0; g < Hkv; g++) {
            double cosv = cosine_f32(kn + (size_t)g * Dh, bank_k_f32(&st, g, s), Dh);
            if (cosv > r->best_cos) { r->best_cos = cosv; r->slot = s; }
        }
    }
    for (int k = 0; k < c.n_exact; k++) r->exact_used += st.allowed[c.window + k];
    r->retained = r->best_cos > 0.999;
    r->where = r->retained ? (r->slot < c.window ? 1 : 2) : 0;
    r->slot_src = r->slot >= 0 ? st.src[r->slot] : -1;
    free(kn);
    bank_free_f32(&st);
    attn_acts_free_f32(&acts);
    free(x);
    free(u);
    model_free_f32(&m);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Generation

typedef struct {
    Model_f32* m;
    BankState_f32* states;  // bounded: [L] (batch of one)
    int* ctx;               // unbounded: every token fed so far (the forward re-runs over it)
    int64_t n_ctx, cap_ctx;
    int64_t n_fed;          // tokens fed (bounded: == states[0].pos)
    float* logits;          // [V] logits for the next token (valid when has_logits)
    int has_logits;
    Rng rng;                // sampling
} InferSession;

static void infer_session_init(InferSession* s, Model_f32* m, uint64_t seed) {
    memset(s, 0, sizeof(*s));
    s->m = m;
    if (m->cfg.bounded) {
        s->states = infer_states_alloc(&m->cfg);
        infer_states_reset(s->states, &m->cfg, seed);
    }
    s->logits = (float*)coda_calloc_or_die((size_t)m->cfg.vocab_size, sizeof(float), "next-token logits");
    rng_seed(&s->rng, seed);
}

static void infer_session_free(InferSession* s) {
    infer_states_free(s->states, &s->m->cfg);
    free(s->ctx);
    free(s->logits);
    memset(s, 0, sizeof(*s));
}

// Feeds a prompt (any length >= 1): bounded = chunked prefill continuing the state (blocks of
// block_size counted from this call's first token); unbounded = forward over the whole context.
static int infer_session_prefill(InferSession* s, const int* ids, int n, CodaError* err) {
    if (n <= 0) return 0;
    Model_f32* m = s->m;
    if (infer_check_tokens(m, ids, n, err) != 0) return -1;
    int V = m->cfg.vocab_size;
    if (m->cfg.bounded) {
        model_forward_f32(m, ids, NULL, 1, n, s->states);
        memcpy(s->logits, m->logits + (size_t)(n - 1) * V, sizeof(float) * V);
    } else {
        if (s->n_ctx + n > s->cap_ctx) {
            s->cap_ctx = (s->n_ctx + n) * 2;
            s->ctx = (int*)realloc(s->ctx, sizeof(int) * (size_t)s->cap_ctx);
            if (!s->ctx) coda_fatal("out of host memory for the generation context");
        }
        memcpy(s->ctx + s->n_ctx, ids, sizeof(int) * (size_t)n);
        s->n_ctx += n;
        if (s->n_ctx > INT32_MAX) return coda_errorf(err, "context of %lld tokens is too long", (long long)s->n_ctx);
        model_forward_f32(m, s->ctx, NULL, 1, (int)s->n_ctx, NULL);
        memcpy(s->logits, m->logits + (size_t)(s->n_ctx - 1) * V, sizeof(float) * V);
    }
    s->n_fed += n;
    s->has_logits = 1;
    return 0;
}

// Feeds one generated token: bounded = one decode step (SPEC §2.4) on the constant-size state;
// unbounded = the forward over the whole context again.
static int infer_session_step(InferSession* s, int token, CodaError* err) {
    if (!s->m->cfg.bounded) return infer_session_prefill(s, &token, 1, err);
    if (infer_check_tokens(s->m, &token, 1, err) != 0) return -1;
    model_step_f32(s->m, s->states, &token, 1, s->logits);
    s->n_fed++;
    s->has_logits = 1;
    return 0;
}

typedef struct {
    double temperature;  // 0: greedy (argmax, lowest id on ties)
    double top_p;        // nucleus: smallest set of most likely tokens with mass >= top_p (1: all)
} InferSampling;

static int infer_argmax(const float* x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

typedef struct { float p; int id; } InferProb;
static int infer_prob_desc(const void* a, const void* b) {
    const InferProb *x = (const InferProb*)a, *y = (const InferProb*)b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

// Draws the next token from logits [V]; one uniform draw from rng per sampled token (none if greedy).
static int infer_sample(const float* logits, int V, const InferSampling* smp, Rng* rng) {
    if (smp->temperature <= 0) return infer_argmax(logits, V);
    InferProb* p = (InferProb*)coda_malloc_or_die(sizeof(InferProb) * (size_t)V, "sampling");
    float mx = logits[infer_argmax(logits, V)];
    double sum = 0;
    for (int i = 0; i < V; i++) {
        p[i].p = (float)exp(((double)logits[i] - mx) / smp->temperature);
        p[i].id = i;
        sum += p[i].p;
    }
    qsort(p, (size_t)V, sizeof(InferProb), infer_prob_desc);
    int keep = V;
    if (smp->top_p < 1.0) {
        double acc = 0;
        for (int i = 0; i < V; i++) {
            acc += p[i].p / sum;
            if (acc >= smp->top_p) { keep = i + 1; break; }
        }
    }
    double kept = 0;
    for (int i = 0; i < keep; i++) kept += p[i].p;
    double u = rng_uniform(rng) * kept, acc = 0;
    int id = p[keep - 1].id;
    for (int i = 0; i < keep; i++) {
        acc += p[i].p;
        if (u < acc) { id = p[i].id; break; }
    }
    free(p);
    return id;
}

// Generates up to max_new tokens into out (returns how many): sample from the pending logits, then
// feed the token (so the session, and a state saved from it, always holds every token and the
// logits of the next one: a resumed session continues exactly). Stops after eos_id if eos_id >= 0.
// An unbounded model skips the feed of its last token (a whole forward for nothing).
typedef void (*InferTokenFn)(int token, void* ctx);
static int infer_generate(InferSession* s, int max_new, const InferSampling* smp, int eos_id, int* out, InferTokenFn on_token,
                          void* cb_ctx, int* n_out, CodaError* err) {
    *n_out = 0;
    if (max_new <= 0) return 0;
    if (!s->has_logits) return coda_errorf(err, "generation needs a prompt (or a loaded state with pending logits)");
    int V = s->m->cfg.vocab_size;
    for (int i = 0; i < max_new; i++) {
        int tok = infer_sample(s->logits, V, smp, &s->rng);
        out[(*n_out)++] = tok;
        if (on_token) on_token(tok, cb_ctx);
        int last = i + 1 == max_new || (eos_id >= 0 && tok == eos_id);
        if (!last || s->m->cfg.bounded) {
            if (infer_session_step(s, tok, err) != 0) return -1;
        } else {
            s->has_logits = 0;  // the unbounded session stops without feeding its last token
        }
        if (last) break;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Bounded-state files
//
// Layout, little-endian (the hosts we run on), version 1:
//   char[8]  "CODASTAT"
//   uint32   version (1)
//   int32[9] fingerprint: W, Me, Ms, Hkv, Dh, n_layers, vocab_size, dim, element bytes (4: fp32)
//   int64    tokens fed
//   int32    has_logits
//   uint64   sampling RNG state; int32 has_spare; float64 spare
//   per layer l = 0..n_layers-1:
//     int32 recent_idx, int32 recent_filled, int64 pos,
//     f32 k[Hkv][slots][Dh], f32 v[Hkv][slots][Dh], u8 allowed[slots], f32 g_ring[W],
//     int64 src[slots], int64 last_exact[Me]
//   f32 logits[vocab_size]   (only if has_logits)
// The size follows from the header, so a truncated or over-long file is caught before any field is
// used. Files are written to a temporary name and renamed (a crash never leaves half a state).

#define INFER_STATE_MAGIC "CODASTAT"
#define INFER_STATE_VERSION 1u
#define INFER_STATE_N_FP 9
static const char* const INFER_FP_NAMES[INFER_STATE_N_FP] = {"W (window)", "Me (exact bank)", "Ms (summary bank)", "Hkv (KV heads)",
                                                             "Dh (head dim)", "n_layers", "vocab_size", "dim", "element bytes"};

static void infer_state_fingerprint(const ModelConfig* c, int32_t fp[INFER_STATE_N_FP]) {
    fp[0] = c->window; fp[1] = c->n_exact; fp[2] = c->n_summary; fp[3] = c->n_kv_heads; fp[4] = c->head_dim;
    fp[5] = c->n_layers; fp[6] = c->vocab_size; fp[7] = c->dim; fp[8] = (int32_t)sizeof(float);
}

static size_t infer_state_layer_bytes(const ModelConfig* c) {
    size_t slots = (size_t)config_state_slots(c), kv = (size_t)c->n_kv_heads * slots * c->head_dim;
    return 4 + 4 + 8 + 2 * kv * sizeof(float) + slots + (size_t)c->window * sizeof(float) + slots * 8 + (size_t)c->n_exact * 8;
}
static size_t infer_state_header_bytes(void) { return 8 + 4 + 4 * INFER_STATE_N_FP + 8 + 4 + 8 + 4 + 8; }

typedef struct { char* p; size_t n, cap; } InferBuf;
static void infer_put(InferBuf* b, const void* src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = (char*)realloc(b->p, b->cap);
        if (!b->p) coda_fatal("out of host memory writing a state file");
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static int infer_state_save(const char* path, const InferSession* s, CodaError* err) {
    const ModelConfig* c = &s->m->cfg;
    if (!c->bounded) return coda_errorf(err, "%s: only a bounded model has a state to save (this model is unbounded)", path);
    InferBuf b = {NULL, 0, 0};
    int32_t fp[INFER_STATE_N_FP];
    infer_state_fingerprint(c, fp);
    uint32_t version = INFER_STATE_VERSION;
    int32_t has_logits = s->has_logits, has_spare = s->rng.has_spare;
    infer_put(&b, INFER_STATE_MAGIC, 8);
    infer_put(&b, &version, 4);
    infer_put(&b, fp, sizeof(fp));
    infer_put(&b, &s->n_fed, 8);
    infer_put(&b, &has_logits, 4);
    infer_put(&b, &s->rng.state, 8);
    infer_put(&b, &has_spare, 4);
    infer_put(&b, &s->rng.spare, 8);
    for (int l = 0; l < c->n_layers; l++) {
        const BankState_f32* st = &s->states[l];
        size_t kv = (size_t)st->Hkv * st->slots * st->Dh;
        int32_t ri = st->recent_idx, rf = st->recent_filled;
        infer_put(&b, &ri, 4);
        infer_put(&b, &rf, 4);
        infer_put(&b, &st->pos, 8);
        infer_put(&b, st->k, kv * sizeof(float));
        infer_put(&b, st->v, kv * sizeof(float));
        infer_put(&b, st->allowed, (size_t)st->slots);
        infer_put(&b, st->g_ring, (size_t)st->W * sizeof(float));
        infer_put(&b, st->src, (size_t)st->slots * 8);
        infer_put(&b, st->last_exact, (size_t)st->Me * 8);
    }
    if (s->has_logits) infer_put(&b, s->logits, (size_t)c->vocab_size * sizeof(float));
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int rc = -1;
    FILE* f = fopen(tmp, "wb");
    if (!f) { coda_errorf(err, "%s: cannot create: %s", tmp, strerror(errno)); goto done; }
    if (fwrite(b.p, 1, b.n, f) != b.n || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        coda_errorf(err, "%s: write failed: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        goto done;
    }
    if (fclose(f) != 0) { coda_errorf(err, "%s: close failed: %s", tmp, strerror(errno)); unlink(tmp); goto done; }
    if (rename(tmp, path) != 0) { coda_errorf(err, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno)); unlink(tmp); goto done; }
    rc = 0;
done:
    free(b.p);
    return rc;
}

typedef struct { const char* p; size_t n, at; } InferReader;
static void infer_get(InferReader* r, void* dst, size_t n) {  // sizes are checked up front
    memcpy(dst, r->p + r->at, n);
    r->at += n;
}

// Loads a state saved by infer_state_save into a session of the same model (the session's states and
// pending logits are replaced; its RNG too unless keep_rng). Checks magic, version, fingerprint,
// exact size and the counters' ranges; on error the session is untouched.
static int infer_state_load(const char* path, InferSession* s, int keep_rng, CodaError* err) {
    const ModelConfig* c = &s->m->cfg;
    if (!c->bounded) return coda_errorf(err, "%s: a bounded state cannot be loaded into an unbounded model", path);
    FILE* f = fopen(path, "rb");
    if (!f) return coda_errorf(err, "%s: cannot open state file: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) { fclose(f); return coda_errorf(err, "%s: cannot stat: %s", path, strerror(errno)); }
    size_t size = (size_t)sb.st_size;
    char* data = (char*)coda_malloc_or_die(size ? size : 1, "state file");
    size_t got = fread(data, 1, size, f);
    fclose(f);
    int rc = -1;
    InferReader r = {data, size, 0};
    char magic[8];
    uint32_t version;
    int32_t fp[INFER_STATE_N_FP], want[INFER_STATE_N_FP], has_logits, has_spare;
    int64_t n_fed;
    uint64_t rng_state;
    double spare;
    size_t expect;
    BankState_f32* st = NULL;
    if (got != size) { coda_errorf(err, "%s: read %zu of %zu bytes", path, got, size); goto done; }
    if (size < 12) {
        coda_errorf(err, "%s: not a coda.c state file: truncated (%zu bytes, shorter than the %zu-byte header)", path, size,
                    infer_state_header_bytes());
        goto done;
    }
    infer_get(&r, magic, 8);
    if (memcmp(magic, INFER_STATE_MAGIC, 8) != 0) {
        coda_errorf(err, "%s: not a coda.c state file (wrong magic; expected \"%s\")", path, INFER_STATE_MAGIC);
        goto done;
    }
    infer_get(&r, &version, 4);
    if (version != INFER_STATE_VERSION) {
        coda_errorf(err, "%s: state file version %u is not supported (this build reads version %u)", path, version, INFER_STATE_VERSION);
        goto done;
    }
    if (size < infer_state_header_bytes()) {
        coda_errorf(err, "%s: truncated state file (%zu bytes, shorter than the %zu-byte header)", path, size, infer_state_header_bytes());
        goto done;
    }
    infer_get(&r, fp, sizeof(fp));
    infer_state_fingerprint(c, want);
    for (int i = 0; i < INFER_STATE_N_FP; i++)
        if (fp[i] != want[i]) {
            coda_errorf(err, "%s: state shape does not match the model: the file has %s = %d, the model %d "
                        "(file: W=%d Me=%d Ms=%d Hkv=%d Dh=%d layers=%d vocab=%d dim=%d; model: W=%d Me=%d Ms=%d Hkv=%d Dh=%d layers=%d vocab=%d dim=%d)",
                        path, INFER_FP_NAMES[i], fp[i], want[i], fp[0], fp[1], fp[2], fp[3], fp[4], fp[5], fp[6], fp[7], want[0], want[1],
                        want[2], want[3], want[4], want[5], want[6], want[7]);
            goto done;
        }
    infer_get(&r, &n_fed, 8);
    infer_get(&r, &has_logits, 4);
    infer_get(&r, &rng_state, 8);
    infer_get(&r, &has_spare, 4);
    infer_get(&r, &spare, 8);
    if (has_logits != 0 && has_logits != 1) { coda_errorf(err, "%s: corrupt state file (has_logits = %d)", path, has_logits); goto done; }
    expect = infer_state_header_bytes() + (size_t)c->n_layers * infer_state_layer_bytes(c) + (has_logits ? (size_t)c->vocab_size * 4 : 0);
    if (size < expect) { coda_errorf(err, "%s: truncated state file (%zu of %zu bytes)", path, size, expect); goto done; }
    if (size > expect) { coda_errorf(err, "%s: state file has %zu unexpected trailing bytes (expected %zu bytes)", path, size - expect, expect); goto done; }
    st = infer_states_alloc(c);
    for (int l = 0; l < c->n_layers; l++) {
        BankState_f32* b = &st[l];
        size_t kv = (size_t)b->Hkv * b->slots * b->Dh;
        int32_t ri, rf;
        infer_get(&r, &ri, 4);
        infer_get(&r, &rf, 4);
        infer_get(&r, &b->pos, 8);
        infer_get(&r, b->k, kv * sizeof(float));
        infer_get(&r, b->v, kv * sizeof(float));
        infer_get(&r, b->allowed, (size_t)b->slots);
        infer_get(&r, b->g_ring, (size_t)b->W * sizeof(float));
        infer_get(&r, b->src, (size_t)b->slots * 8);
        infer_get(&r, b->last_exact, (size_t)b->Me * 8);
        b->recent_idx = ri;
        b->recent_filled = rf;
        if (rf < 0 || rf > b->W || ri < 0 || ri >= b->W || b->pos != n_fed) {
            coda_errorf(err, "%s: corrupt state file: layer %d has recent_idx=%d recent_filled=%d pos=%lld (W=%d, tokens fed %lld)", path,
                        l, ri, rf, (long long)b->pos, b->W, (long long)n_fed);
            goto done;
        }
        for (int k = 0; k < b->slots; k++)
            if (b->allowed[k] > 1) { coda_errorf(err, "%s: corrupt state file: layer %d slot %d mask byte %d", path, l, k, b->allowed[k]); goto done; }
    }
    if (has_logits) infer_get(&r, s->logits, (size_t)c->vocab_size * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) bank_copy_f32(&s->states[l], &st[l]);
    s->n_fed = n_fed;
    s->has_logits = has_logits;
    if (!keep_rng) {
        s->rng.state = rng_state;
        s->rng.has_spare = has_spare;
        s->rng.spare = spare;
    }
    rc = 0;
done:
    infer_states_free(st, c);
    free(data);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Command line

typedef struct {
    const char* model_dir;
    InferOverrides ov;
    uint64_t seed;
    int seed_given;
    // perplexity
    const char* ppl_path;
    int64_t max_tokens;
    InferProcedure procedure;
    int ctx, stride, chunk, partial_chunk, json;
    // generation
    const char* tokenizer_path;
    const char* prompt;
    const char* prompt_ids;
    int max_new, ignore_eos;
    InferSampling smp;
    const char* save_state;
    const char* load_state;
    // needle-in-a-haystack (synthetic single-layer test, no model)
    int needle, needle_pos;
    const char* needle_lengths;
} InferOptions;

static InferOptions infer_default_options(void) {
    InferOptions o;
    memset(&o, 0, sizeof(o));
    o.ov = infer_no_overrides();
    o.seed = 42;
    o.procedure = INFER_SLIDING;
    o.ctx = 2048; o.stride = 0; o.chunk = 512;  // stride 0: 512, or ctx if smaller
    o.max_new = 64;
    o.smp.temperature = 0.0; o.smp.top_p = 1.0;
    o.needle_pos = 64; o.needle_lengths = "256,1024,4096,16384";
    return o;
}

static const char* infer_usage_text(void) {
    return "usage: infer_coda --model DIR [options]\n"
           "  Runs on the CPU reference model (fp32) in this version; the GPU inference path is a later issue.\n"
           "  --model DIR             config.json + model.safetensors[.index.json] (HF layout; coda.c checkpoints too)\n"
           "attention config (defaults: the config's \"coda\" object, else W=256 Me=64 Ms=64 block 256):\n"
           "  --bounded 0|1           unbounded causal attention or the fixed-size state\n"
           "  --window W --exact Me --summary Ms --block S   ring slots, exact bank, summary bank, prefill block\n"
           "  --exact-candidates N --summary-candidates N    bank candidates per block write (config; paper 8, 64)\n"
           "  --candidate-order by_gate|reference   which evicted tokens each bank gets (default by_gate: its highest\n"
           "                          gates; reference: the reference's index-ordered top-k list, SPEC §3.1)\n"
           "  --rope-theta X          RoPE base override (the reference's bounded layers used 10000)\n"
           "  --mem-init zeros|random initial bank contents of an empty state (default: config, random_normal)\n"
           "  --seed N                mem-init and sampling seed (42); layer l's banks use seed + l\n"
           "perplexity (PROTOCOL.md §3):\n"
           "  --ppl FILE.bin          token shard (tokenize_coda)\n"
           "  --max-tokens N          use the first N tokens (0 = all)\n"
           "  --procedure sliding|chunked|streaming   (sliding)\n"
           "      sliding   §3.1:  windows of --ctx, step --stride; first window scores all targets, later ones the last stride\n"
           "      chunked   §3.2b: chunks of --ctx, state reset per chunk, only full chunks (--partial-chunk 1: §3.2a, keep the last)\n"
           "      streaming §3.2c: chunks of --chunk through one persistent state, no reset (bounded models only)\n"
           "  --ctx N --stride N --chunk N   (2048, min(512, ctx), 512)\n"
           "  --json                  also print one JSON line with the result\n"
           "generation:\n"
           "  --tokenizer FILE        tokenizer.json (needed for --prompt and to print text)\n"
           "  --prompt TEXT | --prompt-ids 1,2,3   prompt (BOS added to a text prompt unless a state is loaded)\n"
           "  --max-new N --temperature T --top-p P   (64, 0 = greedy, 1.0)\n"
           "  --ignore-eos            do not stop at the EOS token\n"
           "      bounded: chunked prefill of the prompt (blocks of --block), then one decode step per token on a\n"
           "      constant-size state; unbounded: the forward re-runs over the whole context per token (correct, slow)\n"
           "  --save-state FILE       after the prompt/generation, write the bounded state (+ next-token logits, sampling RNG)\n"
           "  --load-state FILE       start from a saved state; without a prompt, continue generating exactly where it\n"
           "                          stopped (the saved RNG continues unless --seed is given)\n"
           "needle-in-a-haystack (PROTOCOL.md §4; no --model: the reference demo's synthetic single random layer,\n"
           "D=512 H=8 Hkv=2, W=128 Me=32 Ms=32 block 256 unless overridden; tests bank bookkeeping, not retrieval):\n"
           "  --needle                run it; retained = the needle's key has cosine > 0.999 with a ring or exact-bank slot\n"
           "  --needle-lengths L,...  sequence lengths (256,1024,4096,16384)\n"
           "  --needle-pos P          needle position (64)\n";
}

static void infer_usage(void) {
    fputs(infer_usage_text(), stderr);
    exit(1);
}

static int infer_parse_int(const char* flag, const char* v, int lo, int* out, CodaError* err) {
    char* end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > INT32_MAX) return coda_errorf(err, "%s: expected an integer >= %d, got '%s'", flag, lo, v);
    *out = (int)x;
    return 0;
}
static int infer_parse_double(const char* flag, const char* v, double* out, CodaError* err) {
    char* end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x)) return coda_errorf(err, "%s: expected a number, got '%s'", flag, v);
    *out = x;
    return 0;
}

// Parses argv into o (starting from infer_default_options). Returns -1 with a message on any error.
static int infer_parse_options(InferOptions* o, int argc, char** argv, CodaError* err) {
    *o = infer_default_options();
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
#define INFER_IS(name) (strcmp(a, name) == 0)
#define INFER_NEED() do { if (!v) return coda_errorf(err, "%s needs a value", a); i++; } while (0)
#define INFER_INT(dst, lo) do { INFER_NEED(); if (infer_parse_int(a, v, lo, &(dst), err) != 0) return -1; } while (0)
        if (INFER_IS("--model")) { INFER_NEED(); o->model_dir = v; }
        else if (INFER_IS("--bounded")) { INFER_INT(o->ov.bounded, 0); if (o->ov.bounded > 1) return coda_errorf(err, "--bounded: 0 or 1"); }
        else if (INFER_IS("--window")) INFER_INT(o->ov.window, 1);
        else if (INFER_IS("--exact")) INFER_INT(o->ov.n_exact, 0);
        else if (INFER_IS("--summary")) INFER_INT(o->ov.n_summary, 0);
        else if (INFER_IS("--block")) INFER_INT(o->ov.block_size, 1);
        else if (INFER_IS("--exact-candidates")) INFER_INT(o->ov.exact_cands, 0);
        else if (INFER_IS("--summary-candidates")) INFER_INT(o->ov.summary_cands, 0);
        else if (INFER_IS("--candidate-order")) {
            INFER_NEED();
            if (strcmp(v, "by_gate") == 0) o->ov.candidate_order = CAND_ORDER_BY_GATE;
            else if (strcmp(v, "reference") == 0) o->ov.candidate_order = CAND_ORDER_REFERENCE;
            else return coda_errorf(err, "--candidate-order: by_gate or reference, not '%s'", v);
        }
        else if (INFER_IS("--rope-theta")) {
            INFER_NEED();
            if (infer_parse_double(a, v, &o->ov.rope_theta, err) != 0) return -1;
            if (o->ov.rope_theta <= 0) return coda_errorf(err, "--rope-theta must be > 0");
        } else if (INFER_IS("--mem-init")) {
            INFER_NEED();
            if (strcmp(v, "zeros") == 0) o->ov.mem_init = MEM_INIT_ZEROS;
            else if (strcmp(v, "random") == 0 || strcmp(v, "random_normal") == 0) o->ov.mem_init = MEM_INIT_RANDOM_NORMAL;
            else return coda_errorf(err, "--mem-init: zeros or random, got '%s'", v);
        } else if (INFER_IS("--seed")) {
            INFER_NEED();
            char* end;
            errno = 0;
            unsigned long long x = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') return coda_errorf(err, "--seed: expected a non-negative integer, got '%s'", v);
            o->seed = x;
            o->seed_given = 1;
        } else if (INFER_IS("--ppl")) { INFER_NEED(); o->ppl_path = v; }
        else if (INFER_IS("--max-tokens")) {
            INFER_NEED();
            char* end;
            errno = 0;
            long long x = strtoll(v, &end, 10);
            if (errno || end == v || *end || x < 0) return coda_errorf(err, "--max-tokens: expected an integer >= 0, got '%s'", v);
            o->max_tokens = x;
        } else if (INFER_IS("--procedure")) {
            INFER_NEED();
            int found = -1;
            for (int k = 0; k < 3; k++) if (strcmp(v, INFER_PROCEDURE_NAMES[k]) == 0) found = k;
            if (found < 0) return coda_errorf(err, "--procedure: sliding, chunked or streaming, got '%s'", v);
            o->procedure = (InferProcedure)found;
        } else if (INFER_IS("--ctx")) INFER_INT(o->ctx, 2);
        else if (INFER_IS("--stride")) INFER_INT(o->stride, 1);
        else if (INFER_IS("--chunk")) INFER_INT(o->chunk, 2);
        else if (INFER_IS("--partial-chunk")) { INFER_INT(o->partial_chunk, 0); if (o->partial_chunk > 1) return coda_errorf(err, "--partial-chunk: 0 or 1"); }
        else if (INFER_IS("--json")) o->json = 1;
        else if (INFER_IS("--tokenizer")) { INFER_NEED(); o->tokenizer_path = v; }
        else if (INFER_IS("--prompt")) { INFER_NEED(); o->prompt = v; }
        else if (INFER_IS("--prompt-ids")) { INFER_NEED(); o->prompt_ids = v; }
        else if (INFER_IS("--max-new")) INFER_INT(o->max_new, 0);
        else if (INFER_IS("--temperature")) {
            INFER_NEED();
            if (infer_parse_double(a, v, &o->smp.temperature, err) != 0) return -1;
            if (o->smp.temperature < 0) return coda_errorf(err, "--temperature must be >= 0");
        } else if (INFER_IS("--top-p")) {
            INFER_NEED();
            if (infer_parse_double(a, v, &o->smp.top_p, err) != 0) return -1;
            if (!(o->smp.top_p > 0 && o->smp.top_p <= 1)) return coda_errorf(err, "--top-p must be in (0, 1]");
        } else if (INFER_IS("--ignore-eos")) o->ignore_eos = 1;
        else if (INFER_IS("--save-state")) { INFER_NEED(); o->save_state = v; }
        else if (INFER_IS("--load-state")) { INFER_NEED(); o->load_state = v; }
        else if (INFER_IS("--needle")) o->needle = 1;
        else if (INFER_IS("--needle-lengths")) { INFER_NEED(); o->needle_lengths = v; }
        else if (INFER_IS("--needle-pos")) INFER_INT(o->needle_pos, 0);
        else if (INFER_IS("-h") || INFER_IS("--help")) return coda_errorf(err, "help");
        else return coda_errorf(err, "unknown option '%s'", a);
#undef INFER_IS
#undef INFER_NEED
#undef INFER_INT
    }
    if (o->needle) return 0;  // synthetic: needs no model
    if (!o->model_dir) return coda_errorf(err, "--model DIR is required");
    if (o->stride == 0) o->stride = o->ctx < 512 ? o->ctx : 512;
    if (o->prompt && o->prompt_ids) return coda_errorf(err, "give --prompt or --prompt-ids, not both");
    if (o->prompt && !o->tokenizer_path) return coda_errorf(err, "--prompt needs --tokenizer tokenizer.json (or use --prompt-ids)");
    if (!o->ppl_path && !o->prompt && !o->prompt_ids && !o->load_state) return coda_errorf(err, "nothing to do: give --ppl, --prompt/--prompt-ids or --load-state");
    return 0;
}

// "1, 2,3" -> ids (malloc'd).
static int infer_parse_ids(const char* s, int** ids, int* n, CodaError* err) {
    int cap = 16, k = 0;
    int* out = (int*)coda_malloc_or_die(sizeof(int) * cap, "prompt ids");
    const char* p = s;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        char* end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || x < 0 || x > INT32_MAX) { free(out); return coda_errorf(err, "--prompt-ids: bad id at '%.20s'", p); }
        if (k == cap) { cap *= 2; out = (int*)realloc(out, sizeof(int) * cap); if (!out) coda_fatal("out of memory"); }
        out[k++] = (int)x;
        p = end;
        if (*p && *p != ',' && *p != ' ') { free(out); return coda_errorf(err, "--prompt-ids: bad character at '%.20s'", p); }
    }
    if (k == 0) { free(out); return coda_errorf(err, "--prompt-ids: no ids in '%s'", s); }
    *ids = out;
    *n = k;
    return 0;
}

static void infer_print_config(const ModelConfig* c, const HfLoadReport* rep) {
    printf("model: %d layers, D=%d, H=%d, Hkv=%d, Dh=%d, V=%d; attention %s, %s; RoPE base %g\n", c->n_layers, c->dim, c->n_heads,
           c->n_kv_heads, c->head_dim, c->vocab_size, c->differential ? "CoDA differential" : "GQA",
           c->bounded ? "bounded" : "unbounded", config_rope_base(c));
    if (c->bounded) {
        InferStateBytes s32 = infer_state_bytes(c, 4), s16 = infer_state_bytes(c, 2);
        printf("bounded state: W=%d Me=%d Ms=%d block=%d mem_init=%s\n", c->window, c->n_exact, c->n_summary, c->block_size,
               c->mem_init == MEM_INIT_ZEROS ? "zeros" : "random_normal");
        printf("state bytes per layer (SPEC §6 formula, coda.c's own state): K/V 2*Hkv*(W+Me+Ms)*Dh*4 = %zu + gates 4*W = %zu"
               " + mask (W+Me+Ms) = %zu + LRU 8*Me = %zu = %zu B (fp32, this CPU path; %zu B with bf16 K/V);"
               " x %d layers = %zu B. Constant in sequence length. Not counted: per-slot source positions"
               " (8*(W+Me+Ms) B, training bookkeeping) and 3 scalar counters; no norm caches are kept.\n",
               s32.kv, s32.gates, s32.mask, s32.lru, s32.total, s16.total, c->n_layers, s32.total * (size_t)c->n_layers);
    }
    if (rep->n_coda_missing)
        printf("note: %d CoDA tensor(s) absent from the checkpoint keep their initial values (write gate bias %g, eta logit %g, ...)\n",
               rep->n_coda_missing, c->write_gate_init_bias, c->eta_init_logit);
    if (rep->n_unexpected)
        printf("note: %d tensor(s) of the checkpoint are not used by this config (e.g. '%s')\n", rep->n_unexpected, rep->unexpected[0]);
}

typedef struct { const Tokenizer* tok; int* ids; int n, cap; size_t printed; } InferPrinter;
static void infer_print_token(int token, void* ctx) {
    InferPrinter* p = (InferPrinter*)ctx;
    if (p->n == p->cap) { p->cap = p->cap ? 2 * p->cap : 64; p->ids = (int*)realloc(p->ids, sizeof(int) * p->cap); if (!p->ids) coda_fatal("out of memory"); }
    p->ids[p->n++] = token;
    if (!p->tok) { printf("%s%d", p->n > 1 ? " " : "", token); fflush(stdout); return; }
    char* text;
    size_t len;
    CodaError err;
    if (tokenizer_decode(p->tok, (const int32_t*)p->ids, (size_t)p->n, &text, &len, &err) != 0) coda_fatal("%s", err.msg);
    if (len > p->printed) { fwrite(text + p->printed, 1, len - p->printed, stdout); p->printed = len; }
    fflush(stdout);
    free(text);
}

static int infer_main(int argc, char** argv) {
    InferOptions o;
    CodaError err;
    setvbuf(stdout, NULL, _IOLBF, 0);  // results and errors (stderr) in order, also through a pipe
    if (infer_parse_options(&o, argc, argv, &err) != 0) {
        if (strcmp(err.msg, "help") != 0) fprintf(stderr, "error: %s\n", err.msg);
        infer_usage();
    }
    if (o.needle) {
        int* lens;
        int n_lens, n_ok = 0;
        if (infer_parse_ids(o.needle_lengths, &lens, &n_lens, &err) != 0) coda_fatal("--needle-lengths: %s", err.msg);
        ModelConfig nc = infer_needle_config(&o.ov);
        printf("needle (PROTOCOL 4): one random CoDA layer D=%d H=%d Hkv=%d, W=%d Me=%d Ms=%d block %d, needle at %d\n", nc.dim,
               nc.n_heads, nc.n_kv_heads, nc.window, nc.n_exact, nc.n_summary, nc.block_size, o.needle_pos);
        for (int i = 0; i < n_lens; i++) {
            InferNeedle r;
            if (infer_needle(&nc, lens[i], o.needle_pos, 5.0, o.seed, &r, &err) != 0) coda_fatal("%s", err.msg);
            n_ok += r.retained;
            printf("  length %6d: %s (best cosine %.6f, %s slot %d holding position %lld; needle gate %.4f; exact slots used %d/%d)\n",
                   r.length, r.retained ? "retained" : "LOST", r.best_cos, r.slot < 0 ? "no" : r.slot < nc.window ? "ring" : "exact-bank",
                   r.slot, (long long)r.slot_src, r.needle_gate, r.exact_used, nc.n_exact);
            if (o.json)
                printf("{\"needle_length\": %d, \"needle_pos\": %d, \"retained\": %s, \"best_cos\": %.9g, \"where\": \"%s\", "
                       "\"slot\": %d, \"slot_src\": %lld, \"exact_used\": %d}\n", r.length, r.pos, r.retained ? "true" : "false",
                       r.best_cos, r.where == 1 ? "ring" : r.where == 2 ? "exact" : "none", r.slot, (long long)r.slot_src, r.exact_used);
        }
        printf("retention %d/%d (%.0f%%)\n", n_ok, n_lens, 100.0 * n_ok / n_lens);
        free(lens);
        return n_ok == n_lens ? 0 : 2;
    }
    Model_f32 m;
    HfLoadReport rep;
    if (infer_load_model(o.model_dir, &o.ov, &m, &rep, &err) != 0) coda_fatal("%s", err.msg);
    const ModelConfig* c = &m.cfg;
    infer_print_config(c, &rep);
    if (!c->bounded && (o.save_state || o.load_state))
        coda_fatal("--save-state / --load-state need a bounded model (this one is unbounded: use --bounded 1)");

    if (o.ppl_path) {
        ShardHeader h;
        int32_t* tokens;
        if (shard_load(o.ppl_path, &h, &tokens, &err) != 0) coda_fatal("%s", err.msg);
        if (h.vocab_size > c->vocab_size)
            fprintf(stderr, "warning: %s was written for a vocabulary of %d ids, the model has %d (ids are checked as used)\n", o.ppl_path,
                    h.vocab_size, c->vocab_size);
        int64_t n = h.n_tokens;
        if (o.max_tokens > 0 && o.max_tokens < n) n = o.max_tokens;
        InferPpl r;
        if (infer_ppl(&m, o.procedure, (const int*)tokens, n, o.ctx, o.stride, o.chunk, o.partial_chunk, o.seed, &r, &err) != 0)
            coda_fatal("%s", err.msg);
        const char* pname = INFER_PROCEDURE_NAMES[o.procedure];
        printf("ppl %s (%s): %lld tokens, ", pname, o.procedure == INFER_SLIDING ? "PROTOCOL 3.1" : o.procedure == INFER_CHUNKED ?
               (o.partial_chunk ? "PROTOCOL 3.2a" : "PROTOCOL 3.2b") : "PROTOCOL 3.2c", (long long)n);
        if (o.procedure == INFER_SLIDING) printf("ctx %d stride %d, %d windows", o.ctx, o.stride, r.n_forwards);
        else if (o.procedure == INFER_CHUNKED) printf("ctx %d, %d chunks", o.ctx, r.n_forwards);
        else printf("chunk %d, %d chunks", o.chunk, r.n_forwards);
        printf("\ntokens scored %lld  mean NLL %.6f  PPL %.4f\n", (long long)r.n_scored, infer_ppl_mean(&r), infer_ppl_value(&r));
        if (o.json) {
            printf("{\"procedure\": \"%s\", \"shard\": \"%s\", \"tokens\": %lld, ", pname, o.ppl_path, (long long)n);
            if (o.procedure == INFER_SLIDING) printf("\"ctx\": %d, \"stride\": %d, ", o.ctx, o.stride);
            else if (o.procedure == INFER_CHUNKED) printf("\"ctx\": %d, \"partial_chunk\": %d, ", o.ctx, o.partial_chunk);
            else printf("\"chunk\": %d, ", o.chunk);
            printf("\"bounded\": %d, \"differential\": %d, ", c->bounded, c->differential);
            if (c->bounded)
                printf("\"window\": %d, \"n_exact\": %d, \"n_summary\": %d, \"block_size\": %d, \"mem_init\": \"%s\", \"seed\": %llu, ",
                       c->window, c->n_exact, c->n_summary, c->block_size, c->mem_init == MEM_INIT_ZEROS ? "zeros" : "random_normal",
                       (unsigned long long)o.seed);
            printf("\"forwards\": %d, \"tokens_scored\": %lld, \"mean_nll\": %.9g, \"ppl\": %.9g}\n", r.n_forwards,
                   (long long)r.n_scored, infer_ppl_mean(&r), infer_ppl_value(&r));
        }
        free(tokens);
    }

    if (o.prompt || o.prompt_ids || o.load_state) {
        Tokenizer tk;
        memset(&tk, 0, sizeof(tk));
        int have_tok = 0;
        if (o.tokenizer_path) {
            if (tokenizer_load(&tk, o.tokenizer_path, &err) != 0) coda_fatal("%s", err.msg);
            have_tok = 1;
            if (tokenizer_vocab_size(&tk) > c->vocab_size)
                coda_fatal("%s has %d ids but the model's vocabulary is %d", o.tokenizer_path, tokenizer_vocab_size(&tk), c->vocab_size);
        }
        InferSession s;
        infer_session_init(&s, &m, o.seed);
        if (o.load_state) {
            if (infer_state_load(o.load_state, &s, o.seed_given, &err) != 0) coda_fatal("%s", err.msg);
            printf("loaded state %s: %lld tokens fed, %s\n", o.load_state, (long long)s.n_fed,
                   s.has_logits ? "continuing from its next-token logits" : "no pending logits");
        }
        int* ids = NULL;
        int n_ids = 0;
        if (o.prompt) {
            int32_t* enc;
            size_t n_enc;
            int bos = !o.load_state && tokenizer_bos_id(&tk) >= 0;
            if (tokenizer_encode(&tk, o.prompt, strlen(o.prompt), bos, &enc, &n_enc, &err) != 0) coda_fatal("%s", err.msg);
            ids = (int*)enc;
            n_ids = (int)n_enc;
        } else if (o.prompt_ids) {
            if (infer_parse_ids(o.prompt_ids, &ids, &n_ids, &err) != 0) coda_fatal("%s", err.msg);
        }
        if (n_ids > 0) {
            printf("prompt: %d tokens (%s)\n", n_ids, c->bounded ? "chunked prefill" : "full forward");
            if (infer_session_prefill(&s, ids, n_ids, &err) != 0) coda_fatal("%s", err.msg);
        }
        if (!c->bounded && o.max_new > 0) printf("(unbounded model: every new token re-runs the forward over the whole context; correct, slow)\n");
        InferPrinter pr;
        memset(&pr, 0, sizeof(pr));
        pr.tok = have_tok ? &tk : NULL;
        if (have_tok && o.prompt && !o.load_state) {  // print the prompt text as the tokenizer sees it, then the continuation
            pr.ids = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(n_ids + 64), "printer");
            pr.cap = n_ids + 64;
            memcpy(pr.ids, ids, sizeof(int) * (size_t)n_ids);
            pr.n = n_ids;
            char* text;
            size_t len;
            if (tokenizer_decode(&tk, (const int32_t*)ids, (size_t)n_ids, &text, &len, &err) != 0) coda_fatal("%s", err.msg);
            fwrite(text, 1, len, stdout);
            pr.printed = len;
            free(text);
        } else if (have_tok) {
            // A continuation (loaded state, or a state-less id prompt): decode behind a one-character
            // piece so that the decoder's strip of one leading space does not eat the first word's space.
            int anchor = tokenizer_piece_to_id(&tk, "a", 1);
            if (anchor >= 0) {
                pr.ids = (int*)coda_malloc_or_die(sizeof(int) * 64, "printer");
                pr.cap = 64;
                pr.ids[pr.n++] = anchor;
                pr.printed = 1;
            }
        }
        int* out = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(o.max_new + 1), "generated tokens");
        int n_out = 0;
        int eos = o.ignore_eos ? -1 : (have_tok ? tokenizer_eos_id(&tk) : c->eos_id);
        if (o.max_new > 0 && s.has_logits) {
            if (infer_generate(&s, o.max_new, &o.smp, eos, out, infer_print_token, &pr, &n_out, &err) != 0) coda_fatal("%s", err.msg);
            printf("\n[%d new tokens; %lld tokens in the %s]\n", n_out, (long long)s.n_fed, c->bounded ? "state" : "context");
        } else if (o.max_new > 0) {
            coda_fatal("nothing to continue from: the loaded state has no pending logits; give --prompt or --prompt-ids");
        }
        if (o.save_state) {
            if (infer_state_save(o.save_state, &s, &err) != 0) coda_fatal("%s", err.msg);
            printf("saved state to %s (%lld tokens fed)\n", o.save_state, (long long)s.n_fed);
        }
        free(out);
        free(pr.ids);
        free(ids);
        infer_session_free(&s);
        if (have_tok) tokenizer_free(&tk);
    }
    model_free_f32(&m);
    return 0;
}

#ifndef TESTING
int main(int argc, char** argv) { return infer_main(argc, argv); }
#endif
