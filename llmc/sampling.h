// sampling.h — the next token from a row of logits: greedy (argmax), or a draw at a temperature from
// the top-k and / or top-p (nucleus) set, with the seeded RNG of rand.h. Plain C, no model: the
// generation loop (session.h) owns the RNG, so a saved state continues the same draws.
#pragma once
#include <math.h>
#include "common.h"
#include "rand.h"

typedef struct {
    double temperature;  // 0: greedy (argmax, lowest id on ties)
    double top_p;        // nucleus: smallest set of most likely tokens with mass >= top_p (1: no limit)
    int top_k;           // keep only the k most likely tokens (0: no limit); applied before top_p
} Sampling;

static inline int sample_argmax(const float* x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

typedef struct { float p; int id; } SampleProb;
// Descending probability, ties by ascending id (a total order: the draw does not depend on qsort).
static inline int sample_prob_desc(const void* a, const void* b) {
    const SampleProb *x = (const SampleProb*)a, *y = (const SampleProb*)b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

// Draws the next token from logits [V]: one uniform draw from rng per sampled token, none if greedy.
// The kept set is the top_k most likely tokens (all if 0), then of those the smallest prefix whose
// share of the kept mass reaches top_p; the token is drawn in proportion to exp(logit / T) within it.
static inline int sample_token(const float* logits, int V, const Sampling* smp, Rng* rng) {
    if (smp->temperature <= 0) return sample_argmax(logits, V);
    SampleProb* p = (SampleProb*)coda_malloc_or_die(sizeof(SampleProb) * (size_t)V, "sampling");
    float mx = logits[sample_argmax(logits, V)];
    double sum = 0;
    for (int i = 0; i < V; i++) {
        p[i].p = (float)exp(((double)logits[i] - mx) / smp->temperature);
        p[i].id = i;
        sum += p[i].p;
    }
    qsort(p, (size_t)V, sizeof(SampleProb), sample_prob_desc);
    int keep = V;
    if (smp->top_k > 0 && smp->top_k < V) {
        keep = smp->top_k;
        sum = 0;
        for (int i = 0; i < keep; i++) sum += p[i].p;
    }
    if (smp->top_p < 1.0) {
        double acc = 0;
        for (int i = 0; i < keep; i++) {
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
