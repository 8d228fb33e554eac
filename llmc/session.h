// session.h — generation with the fp32 CPU reference model (llmc/cpu/): the per-layer bounded states,
// a session (model + state + next-token logits + sampling RNG), prompt prefill, one decode step per
// token, and the generation loop. A bounded model keeps a constant-size state: the prompt is prefilled
// in blocks (docs/spec.md §2.3), then one decode step per token (docs/spec.md §2.4). An unbounded model keeps every
// token and re-runs the forward over the growing context for each new one (correct, slow).
// The session's state can be saved and loaded exactly (state_file.h).
#pragma once
#include "cpu/reference.h"
#include "sampling.h"

// ---- bounded states: one BankState per layer (a batch of one row) ----

static inline BankState_f32* layer_states_alloc(const ModelConfig* c) {
    BankState_f32* st = (BankState_f32*)coda_calloc_or_die((size_t)c->n_layers, sizeof(BankState_f32), "bounded states");
    for (int l = 0; l < c->n_layers; l++) bank_alloc_f32(&st[l], c);
    return st;
}
static inline void layer_states_free(BankState_f32* st, const ModelConfig* c) {
    if (!st) return;
    for (int l = 0; l < c->n_layers; l++) bank_free_f32(&st[l]);
    free(st);
}
// Empty state (positions restart at 0, banks empty) with the config's mem_init; layer l draws its
// random bank contents from seed + l.
static inline void layer_states_reset(BankState_f32* st, const ModelConfig* c, uint64_t seed) {
    for (int l = 0; l < c->n_layers; l++) bank_reset_f32(&st[l], c->mem_init, seed + (uint64_t)l);
}

// Bytes of one layer's bounded state, by docs/spec.md §6's formula applied to what coda.c itself keeps:
// K and V buffers (2·Hkv·slots·Dh·kv_bytes), ring write gates (fp32, 4·W), the attendable mask
// (1 byte per slot) and the exact bank's LRU stamps (int64, 8·Me). coda.c keeps no normalised-vector
// caches (docs/spec.md §2.1: derived data, recomputed), so those terms of the reference's formula are 0.
// Not counted: the per-slot source positions the CPU reference keeps for the training backward
// (8·slots) and the three scalar counters.
typedef struct { size_t kv, gates, mask, lru, total; } StateBytes;
static inline StateBytes state_bytes(const ModelConfig* c, size_t kv_bytes) {
    StateBytes b;
    size_t slots = (size_t)config_state_slots(c);
    b.kv = 2 * (size_t)c->n_kv_heads * slots * (size_t)c->head_dim * kv_bytes;
    b.gates = 4 * (size_t)c->window;
    b.mask = slots;
    b.lru = 8 * (size_t)c->n_exact;
    b.total = b.kv + b.gates + b.mask + b.lru;
    return b;
}

// Every id in [0, vocab_size), else an error naming the first one outside.
static inline int tokens_check(const int* tok, int64_t n, int vocab_size, CodaError* err) {
    for (int64_t i = 0; i < n; i++)
        if (tok[i] < 0 || tok[i] >= vocab_size)
            return coda_errorf(err, "token %d at index %lld is outside the model's vocabulary [0, %d)", tok[i], (long long)i, vocab_size);
    return 0;
}

// ---- sessions ----

typedef struct {
    Model_f32* m;
    BankState_f32* states;  // bounded: [L] (batch of one)
    int* ctx;               // unbounded: every token fed so far (the forward re-runs over it)
    int64_t n_ctx, cap_ctx;
    int64_t n_fed;          // tokens fed (bounded: == states[0].pos)
    float* logits;          // [V] logits for the next token (valid when has_logits)
    int has_logits;
    Rng rng;                // sampling
    uint64_t seed;          // the empty state's mem_init contents (layer l from seed + l)
} Session;

// A fresh session: empty state (mem_init from seed), no pending logits, sampling RNG seeded.
static inline void session_init(Session* s, Model_f32* m, uint64_t seed) {
    memset(s, 0, sizeof(*s));
    s->m = m;
    if (m->cfg.bounded) {
        s->states = layer_states_alloc(&m->cfg);
        layer_states_reset(s->states, &m->cfg, seed);
    }
    s->logits = (float*)coda_calloc_or_die((size_t)m->cfg.vocab_size, sizeof(float), "next-token logits");
    rng_seed(&s->rng, seed);
    s->seed = seed;
}

// Back to the empty state of session_init (the sampling RNG runs on): nothing fed, no logits.
static inline void session_reset(Session* s) {
    if (s->states) layer_states_reset(s->states, &s->m->cfg, s->seed);
    s->n_ctx = s->n_fed = 0;
    s->has_logits = 0;
}

static inline void session_free(Session* s) {
    layer_states_free(s->states, &s->m->cfg);
    free(s->ctx);
    free(s->logits);
    memset(s, 0, sizeof(*s));
}

// Feeds a prompt (any length >= 1): bounded = chunked prefill continuing the state (blocks of
// block_size counted from this call's first token); unbounded = forward over the whole context.
static inline int session_prefill(Session* s, const int* ids, int n, CodaError* err) {
    if (n <= 0) return 0;
    Model_f32* m = s->m;
    if (tokens_check(ids, n, m->cfg.vocab_size, err) != 0) return -1;
    int V = m->cfg.vocab_size;
    if (m->cfg.bounded) {
        model_forward_f32(m, ids, NULL, 1, n, s->states);
        memcpy(s->logits, m->logits + (size_t)(n - 1) * V, sizeof(float) * V);
    } else {
        if (s->n_ctx + n > s->cap_ctx) {
            s->cap_ctx = (s->n_ctx + n) * 2;
            s->ctx = (int*)realloc(s->ctx, sizeof(int) * (size_t)s->cap_ctx);
            if (!s->ctx) coda_fatal("out of host memory for the generation context (%zu bytes)", sizeof(int) * (size_t)s->cap_ctx);
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

// Feeds one generated token: bounded = one decode step (docs/spec.md §2.4) on the constant-size state;
// unbounded = the forward over the whole context again.
static inline int session_step(Session* s, int token, CodaError* err) {
    if (!s->m->cfg.bounded) return session_prefill(s, &token, 1, err);
    if (tokens_check(&token, 1, s->m->cfg.vocab_size, err) != 0) return -1;
    model_step_f32(s->m, s->states, &token, 1, s->logits);
    s->n_fed++;
    s->has_logits = 1;
    return 0;
}

// The generation loop over any model that feeds one token at a time: the CPU session below, or the
// GPU decoder (llmc/decode.cuh). feed() runs one token through the model and leaves the logits of the
// next one in logits.
typedef void (*TokenFn)(int token, void* ctx);
typedef struct {
    void* ctx;
    int (*feed)(void* ctx, int token, CodaError* err);
    float* logits;      // [vocab_size] next-token logits, valid when *has_logits
    int* has_logits;
    Rng* rng;           // sampling
    int vocab_size;
    int feed_last;      // also feed the last token (bounded: the state, and a file saved from it, then hold it)
} Generator;

// Generates up to max_new tokens into out (*n_out says how many): sample from the pending logits,
// then feed the token (so a bounded session, and a state saved from it, always holds every token and
// the logits of the next one: a resumed session continues exactly). Stops after eos_id if eos_id >= 0.
// Without feed_last the last token is not fed (an unbounded CPU model would re-run the whole forward
// for nothing). on_token (may be NULL) sees each token as it is drawn.
static inline int generate_tokens(const Generator* g, int max_new, const Sampling* smp, int eos_id, int* out, TokenFn on_token,
                                  void* cb_ctx, int* n_out, CodaError* err) {
    *n_out = 0;
    if (max_new <= 0) return 0;
    if (!*g->has_logits) return coda_errorf(err, "generation needs a prompt (or a loaded state with pending logits)");
    for (int i = 0; i < max_new; i++) {
        int tok = sample_token(g->logits, g->vocab_size, smp, g->rng);
        out[(*n_out)++] = tok;
        if (on_token) on_token(tok, cb_ctx);
        int last = i + 1 == max_new || (eos_id >= 0 && tok == eos_id);
        if (!last || g->feed_last) {
            if (g->feed(g->ctx, tok, err) != 0) return -1;
        } else {
            *g->has_logits = 0;  // stopped without feeding its last token
        }
        if (last) break;
    }
    return 0;
}

static inline int session__feed(void* ctx, int token, CodaError* err) { return session_step((Session*)ctx, token, err); }
static inline int session_generate(Session* s, int max_new, const Sampling* smp, int eos_id, int* out, TokenFn on_token, void* cb_ctx,
                                   int* n_out, CodaError* err) {
    Generator g = {s, session__feed, s->logits, &s->has_logits, &s->rng, s->m->cfg.vocab_size, s->m->cfg.bounded};
    return generate_tokens(&g, max_new, smp, eos_id, out, on_token, cb_ctx, n_out, err);
}
