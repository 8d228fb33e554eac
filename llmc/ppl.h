// ppl.h — perplexity on a token sequence with the paper's three procedures (docs/protocol.md §3):
//   sliding    §3.1   windows of ctx with a stride; the first window scores all its targets, each
//                     later one only its last `stride` targets (unbounded or bounded model);
//   chunked    §3.2b  non-overlapping chunks of ctx, only full chunks, state reset per chunk, all
//                     ctx-1 targets scored (keep_partial: also the last partial chunk, which is
//                     §3.2a, the training loop's sequential eval);
//   streaming  §3.2c  chunks through ONE persistent state per layer, no reset: positions accumulate
//                     and the banks persist (bounded models only).
// The procedures only decide which tokens go through the model together and which targets count;
// the model is behind PplScorer (reset the state, score one window continuing it), so any backend
// can plug in. The one backend today is the fp32 CPU reference (CpuScorer, at the end).
#pragma once
#include <math.h>
#include "session.h"

typedef enum { PPL_SLIDING = 0, PPL_CHUNKED = 1, PPL_STREAMING = 2 } PplProcedure;
static const char* const PPL_PROCEDURE_NAMES[] = {"sliding", "chunked", "streaming", NULL};

typedef struct {
    int64_t n_scored;   // targets scored
    double nll_sum;     // their total negative log-likelihood (nats)
    int n_forwards;     // windows / chunks scored
} PplResult;

static inline double ppl_mean_nll(const PplResult* r) { return r->n_scored ? r->nll_sum / (double)r->n_scored : NAN; }
static inline double ppl_value(const PplResult* r) { return exp(ppl_mean_nll(r)); }

typedef struct {
    void* ctx;          // the backend's own data
    int vocab_size;     // every token is checked against it before the first window
    int has_state;      // 1: a bounded model, whose fixed-size state `score` continues until `reset`
    // Empties the state (positions restart at 0, banks at their initial contents). Unbounded: nothing.
    void (*reset)(void* ctx);
    // Runs tok[0, len) through the model, continuing the state (an unbounded model sees only this
    // window), and adds to r->nll_sum / r->n_scored the NLL of the targets at window positions
    // [first, len): target i is tok[i], predicted from position i-1. 1 <= first <= len; first == len
    // scores nothing and only advances the state.
    int (*score)(void* ctx, const int* tok, int len, int first, PplResult* r, CodaError* err);
    // Optional (may be NULL): told after each window how many of the n tokens are done.
    void (*progress)(const char* procedure, int64_t done, int64_t total);
} PplScorer;

static inline void ppl__progress(const PplScorer* s, const char* what, int64_t done, int64_t total) {
    if (s->progress) s->progress(what, done, total);
}
static inline int ppl__score(PplScorer* s, const int* tok, int len, int first, PplResult* r, CodaError* err) {
    if (s->score(s->ctx, tok, len, first, r, err) != 0) return -1;
    r->n_forwards++;
    return 0;
}

// §3.1: windows [b, min(b+ctx, n)) for b = 0, stride, 2·stride, ... until a window reaches the end
// (Hugging Face's recipe, as eval_llm.py / train_coda.py use it). A window scores the targets at
// absolute positions [max(prev_end, b+1), end): the first window all its ctx-1 targets, a later full
// window its last `stride` (so every token from 1 on is scored exactly once when stride < ctx; with
// stride == ctx each window scores its ctx-1 targets, i.e. chunked evaluation). Bounded models start
// every window from an empty state.
static inline int ppl_sliding(PplScorer* s, const int* tok, int64_t n, int ctx, int stride, PplResult* r, CodaError* err) {
    memset(r, 0, sizeof(*r));
    if (ctx < 2) return coda_errorf(err, "sliding window: --ctx must be >= 2 (got %d)", ctx);
    if (stride < 1 || stride > ctx) return coda_errorf(err, "sliding window: --stride must be in [1, ctx=%d] (got %d)", ctx, stride);
    if (n < 2) return coda_errorf(err, "sliding window: need at least 2 tokens (got %lld)", (long long)n);
    if (tokens_check(tok, n, s->vocab_size, err) != 0) return -1;
    int64_t prev_end = 0;
    for (int64_t b = 0; b < n; b += stride) {
        int64_t e = b + ctx < n ? b + ctx : n;
        int64_t first_abs = prev_end > b + 1 ? prev_end : b + 1;
        s->reset(s->ctx);
        if (first_abs < e && ppl__score(s, tok + b, (int)(e - b), (int)(first_abs - b), r, err) != 0) return -1;
        prev_end = e;
        ppl__progress(s, "sliding", e, n);
        if (e == n) break;
    }
    return 0;
}

// §3.2b: chunks [k·ctx, (k+1)·ctx), state reset before each, all ctx-1 targets scored, only full
// chunks. keep_partial = 1: also the last partial chunk if it has a target (§3.2a).
static inline int ppl_chunked(PplScorer* s, const int* tok, int64_t n, int ctx, int keep_partial, PplResult* r, CodaError* err) {
    memset(r, 0, sizeof(*r));
    if (ctx < 2) return coda_errorf(err, "chunked: --ctx must be >= 2 (got %d)", ctx);
    if (!keep_partial && n < ctx)
        return coda_errorf(err, "chunked: the text has %lld tokens, fewer than one full chunk of ctx=%d", (long long)n, ctx);
    if (tokens_check(tok, n, s->vocab_size, err) != 0) return -1;
    for (int64_t b = 0; b < n; b += ctx) {
        int64_t len = n - b < ctx ? n - b : ctx;
        if (len < ctx && (!keep_partial || len < 2)) break;
        s->reset(s->ctx);
        if (ppl__score(s, tok + b, (int)len, 1, r, err) != 0) return -1;
        ppl__progress(s, "chunked", b + len, n);
    }
    return 0;
}

// §3.2c: chunks of `chunk` tokens (the last may be shorter) through ONE persistent state from an
// empty start: positions accumulate, banks persist. Each chunk scores its own targets (the first
// token of a chunk has no prediction inside it, as in eval_llm.py). The backend prefills each chunk
// in blocks counted from the chunk's start. The final state stays in the scorer.
static inline int ppl_streaming(PplScorer* s, const int* tok, int64_t n, int chunk, PplResult* r, CodaError* err) {
    memset(r, 0, sizeof(*r));
    if (!s->has_state)
        return coda_errorf(err, "streaming needs a bounded model (an unbounded model has no fixed-size state to carry; "
                                "use --procedure sliding, or --bounded 1)");
    if (chunk < 2) return coda_errorf(err, "streaming: --chunk must be >= 2 (got %d)", chunk);
    if (n < 2) return coda_errorf(err, "streaming: need at least 2 tokens (got %lld)", (long long)n);
    if (tokens_check(tok, n, s->vocab_size, err) != 0) return -1;
    s->reset(s->ctx);
    for (int64_t b = 0; b < n; b += chunk) {
        int64_t len = n - b < chunk ? n - b : chunk;
        if (len < 2) {  // a lone last token has no target: still feed it so the state covers the text
            if (s->score(s->ctx, tok + b, (int)len, (int)len, r, err) != 0) return -1;
            break;
        }
        if (ppl__score(s, tok + b, (int)len, 1, r, err) != 0) return -1;
        ppl__progress(s, "streaming", b + len, n);
    }
    return 0;
}

// The sliding-window stride when none is given: 512, or ctx if that is smaller.
static inline int ppl_default_stride(int ctx) { return ctx < 512 ? ctx : 512; }

// The procedure p with its own arguments (ctx and stride: sliding; ctx and keep_partial: chunked;
// chunk: streaming).
static inline int ppl_run(PplScorer* s, PplProcedure p, const int* tok, int64_t n, int ctx, int stride, int chunk, int keep_partial,
                          PplResult* r, CodaError* err) {
    switch (p) {
        case PPL_SLIDING: return ppl_sliding(s, tok, n, ctx, stride, r, err);
        case PPL_CHUNKED: return ppl_chunked(s, tok, n, ctx, keep_partial, r, err);
        case PPL_STREAMING: return ppl_streaming(s, tok, n, chunk, r, err);
    }
    return coda_errorf(err, "unknown perplexity procedure %d", (int)p);
}

// The context-length sweep of docs/protocol.md §3.3: §3.2b (chunks of ctx, state reset per chunk, only
// full chunks) at each of the paper's lengths that fits the text at least once. results[i] gets
// length PPL_SWEEP_CTX[i]; n_forwards == 0 marks a length longer than the text (not run).
#define PPL_SWEEP_N 5
static const int PPL_SWEEP_CTX[PPL_SWEEP_N] = {512, 1024, 2048, 4096, 8192};
static inline int ppl_context_sweep(PplScorer* s, const int* tok, int64_t n, PplResult results[PPL_SWEEP_N], CodaError* err) {
    int ran = 0;
    for (int i = 0; i < PPL_SWEEP_N; i++) {
        memset(&results[i], 0, sizeof(results[i]));
        if (PPL_SWEEP_CTX[i] > n) continue;
        if (ppl_chunked(s, tok, n, PPL_SWEEP_CTX[i], 0, &results[i], err) != 0) return -1;
        ran++;
    }
    if (!ran) return coda_errorf(err, "context sweep: the text has %lld tokens, fewer than the shortest length %d", (long long)n, PPL_SWEEP_CTX[0]);
    return 0;
}

// ---- the fp32 CPU reference as a PplScorer ----
// Bounded models keep one state per layer (reset: empty, mem_init drawn from seed + layer);
// unbounded models run each window on its own.

typedef struct {
    Model_f32* m;
    BankState_f32* states;  // bounded: [L]; NULL for an unbounded model
    int* targets;           // [cap] scratch for one window's targets
    int cap;
    uint64_t seed;
} CpuScorer;

static inline void cpu_scorer__reset(void* ctx) {
    CpuScorer* c = (CpuScorer*)ctx;
    if (c->states) layer_states_reset(c->states, &c->m->cfg, c->seed);
}
static inline int cpu_scorer__score(void* ctx, const int* tok, int len, int first, PplResult* r, CodaError* err) {
    (void)err;
    CpuScorer* c = (CpuScorer*)ctx;
    if (first >= len) {  // nothing to score: advance the state only
        model_forward_f32(c->m, tok, NULL, 1, len, c->states);
        return 0;
    }
    if (len > c->cap) {
        free(c->targets);
        c->cap = len;
        c->targets = (int*)coda_malloc_or_die(sizeof(int) * (size_t)len, "targets");
    }
    int* targets = c->targets;
    for (int i = 0; i < len; i++) targets[i] = (i + 1 < len && i + 1 >= first) ? tok[i + 1] : -1;
    model_forward_f32(c->m, tok, targets, 1, len, c->states);
    for (int i = 0; i < len; i++)
        if (targets[i] >= 0) { r->nll_sum += (double)c->m->losses[i]; r->n_scored++; }
    return 0;
}

// The scorer of model m; seed: the initial bank contents of each reset. Free with cpu_scorer_free.
static inline PplScorer cpu_scorer(CpuScorer* c, Model_f32* m, uint64_t seed) {
    memset(c, 0, sizeof(*c));
    c->m = m;
    c->seed = seed;
    if (m->cfg.bounded) c->states = layer_states_alloc(&m->cfg);
    PplScorer s;
    memset(&s, 0, sizeof(s));
    s.ctx = c;
    s.vocab_size = m->cfg.vocab_size;
    s.has_state = m->cfg.bounded;
    s.reset = cpu_scorer__reset;
    s.score = cpu_scorer__score;
    return s;
}
static inline void cpu_scorer_free(CpuScorer* c) {
    layer_states_free(c->states, &c->m->cfg);
    free(c->targets);
    memset(c, 0, sizeof(*c));
}
