// span.h — the needle in real text (docs/protocol.md §4, second part): with a bounded model coda.c
// trained, is a marked span put early into real text still in the state N tokens later?
//
// The haystack is a token sequence (a shard of real text). A span = cue ++ answer (token ids, e.g.
// " The passphrase is" and " violet falcon 4271.") replaces nothing: it is inserted at position P,
// and the text runs on until the sequence is N tokens long. After the chunked prefill of those N
// tokens (from an empty state, as at inference), two things are read:
//   where    per layer, how many of the span's positions [P, P + len) a ring slot holds and how many
//            an exact-bank slot holds (slot sources are absolute positions, docs/spec.md §2.1); the
//            summary bank keeps blends, not tokens, so nothing is attributed to it;
//   recall   the cue is fed again after the N tokens and the model continues greedily for as many
//            tokens as the answer has: how many of them, from the first, equal the answer.
// Both are reported whatever they show: an untrained or briefly trained model is not expected to
// recall anything; the bank bookkeeping says whether the tokens were there to be found.
#pragma once
#include <stdint.h>
#include "cpu/reference.h"
#include "common.h"
#include "config.h"
#include "session.h"  // TokenFn, Sampling

// The sequence: haystack[0, P) ++ span ++ haystack[P, ...) cut at n tokens. haystack must hold at
// least n - span_len tokens. out: [n].
static inline int span_build_sequence(const int* haystack, int64_t n_hay, const int* span, int span_len, int P, int n, int* out,
                                      CodaError* err) {
    if (span_len < 1) return coda_errorf(err, "the span is empty");
    if (P < 0 || (int64_t)P + span_len > n)
        return coda_errorf(err, "a span of %d tokens at position %d does not fit a sequence of %d tokens", span_len, P, n);
    if (n_hay < (int64_t)n - span_len)
        return coda_errorf(err, "%d tokens of text with the span need %d tokens of haystack; the file has %lld", n, n - span_len, (long long)n_hay);
    for (int i = 0; i < P; i++) out[i] = haystack[i];
    for (int i = 0; i < span_len; i++) out[P + i] = span[i];
    for (int i = P + span_len; i < n; i++) out[i] = haystack[i - span_len];
    return 0;
}

// Per layer l: ring[l] / exact[l] = positions in [p0, p0 + len) held by an allowed ring / exact slot.
static inline void span_locate(const BankState_f32* states, const ModelConfig* c, int64_t p0, int len, int* ring, int* exact) {
    for (int l = 0; l < c->n_layers; l++) {
        const BankState_f32* st = &states[l];
        ring[l] = exact[l] = 0;
        for (int s = 0; s < st->W + st->Me; s++) {
            const int64_t p = st->src[s];
            if (!st->allowed[s] || p < p0 || p >= p0 + len) continue;
            if (s < st->W) ring[l]++;
            else exact[l]++;
        }
    }
}

// How many of got[0, n), from the first, equal want[0, n).
static inline int span_recall_prefix(const int* got, const int* want, int n) {
    int k = 0;
    while (k < n && got[k] == want[k]) k++;
    return k;
}

// The model a span run drives: the CPU session or the GPU decoder (infer_coda builds one from its
// GenSession). states: every layer's bounded state on the host (the session's own, or copied into
// scratch); generate: as session_generate.
typedef struct {
    void* s;
    void (*reset)(void* s);
    int (*prefill)(void* s, const int* ids, int n, CodaError* err);
    const BankState_f32* (*states)(void* s, BankState_f32* scratch);
    int (*generate)(void* s, int max_new, const Sampling* smp, int eos_id, int* out, TokenFn on_token, void* cb, int* n_out,
                    CodaError* err);
} SpanBackend;

typedef struct {
    int layers_holding;  // layers whose ring or exact bank holds at least one span token
    int layers_exact;    // layers whose exact bank holds at least one
    int ring_total, exact_total;  // span tokens held, summed over layers
    int recall;          // answer tokens the greedy continuation of the cue reproduces, from the first
} SpanResult;

// One length: the empty state, the chunked prefill of seq[0, n) (the span at p0, span_len tokens),
// where the span is (ring[l], exact[l] per layer: arrays of n_layers), then the cue and the greedy
// continuation of n_ans tokens against ans. scratch: layer_states_alloc'd by the caller.
static inline int span_measure(const SpanBackend* be, const ModelConfig* c, const int* seq, int n, int p0, int span_len, const int* cue,
                               int n_cue, const int* ans, int n_ans, BankState_f32* scratch, int* ring, int* exact, SpanResult* r,
                               CodaError* err) {
    memset(r, 0, sizeof(*r));
    if (!c->bounded) return coda_errorf(err, "the span check needs a bounded model");
    be->reset(be->s);
    if (be->prefill(be->s, seq, n, err) != 0) return -1;
    span_locate(be->states(be->s, scratch), c, p0, span_len, ring, exact);
    for (int l = 0; l < c->n_layers; l++) {
        r->layers_exact += exact[l] > 0;
        r->layers_holding += exact[l] + ring[l] > 0;
        r->ring_total += ring[l];
        r->exact_total += exact[l];
    }
    if (be->prefill(be->s, cue, n_cue, err) != 0) return -1;
    Sampling greedy;
    memset(&greedy, 0, sizeof(greedy));
    greedy.top_p = 1.0;
    int* got = (int*)coda_malloc_or_die(sizeof(int) * (size_t)n_ans, "span recall");
    int n_out = 0;
    const int rc = be->generate(be->s, n_ans, &greedy, -1, got, NULL, NULL, &n_out, err);
    if (rc == 0) r->recall = span_recall_prefix(got, ans, n_out < n_ans ? n_out : n_ans);
    free(got);
    return rc;
}
