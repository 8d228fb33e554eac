// test_cpu_model.h — the CPU reference model: finite-difference gradient checks (fp64 build) for
// every parameter kind in every attention variant, and the properties SPEC.md §7 asks for
// (bounded == unbounded when nothing is evicted, decode == prefill, summary LF band stays zero,
// deterministic decisions), plus a tiny training run whose loss falls.
#pragma once
#include "../../llmc/cpu/reference.h"

// A tiny model: 2 layers, D=16, H=4 query heads over 2 KV heads of Dh=8 (head_dim != D/H on purpose).
static ModelConfig tiny_config(int differential, int bounded) {
    ModelConfig c = config_default();
    c.vocab_size = 29; c.dim = 16; c.ffn_dim = 24; c.n_layers = 2;
    c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8;
    c.rope_theta = 10000.0; c.norm_eps = 1e-5f;
    c.differential = differential; c.bounded = bounded;
    c.lambda_init_bias = 0.0f;  // lambda ~ 0.5: the noise stream matters in the checks
    c.window = 4; c.n_exact = 3; c.n_summary = 2; c.block_size = 4;
    c.exact_candidates_per_block = 8; c.summary_candidates_per_block = 64;
    return c;
}

// Moves every parameter off its init value (norm weights off 1, theta off 0, write gate weights
// non-zero, ...) so that every gradient path is exercised with generic values.
#define DEFINE_PERTURB(SFX, T)                                                          \
    static void perturb_params##SFX(Model##SFX* m, uint64_t seed, double scale) {      \
        Rng r;                                                                          \
        rng_seed(&r, seed);                                                             \
        for (int i = 0; i < m->table.n; i++) {                                          \
            const ParamTensor* t = &m->table.tensors[i];                                \
            double s = t->ndim == 1 || t->kind == PK_THETA || t->kind == PK_WRITE_W ? scale : scale * 0.1; \
            for (size_t j = 0; j < t->numel; j++) m->params[t->offset + j] += (T)(s * rng_normal(&r)); \
        }                                                                               \
    }
DEFINE_PERTURB(_f32, float)
DEFINE_PERTURB(_f64, double)

static void random_tokens(int* tok, int n, int V, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) tok[i] = (int)rng_below(&r, (uint64_t)V);
}

// A hash of every discrete decision the bounded layers took (slot sources, masks, candidate routes,
// kept/dropped weights, new slots): finite differences are only valid where it does not change.
static uint64_t decision_signature_f64(const Model_f64* m) {
    uint64_t h = 1469598103934665603ull;
#define MIX(x) do { h ^= (uint64_t)(x); h *= 1099511628211ull; } while (0)
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const AttnActs_f64* a = &m->attn[l];
        for (int i = 0; a->snap && i < a->B * a->n_blocks; i++) {
            const BankState_f64* s = &a->snap[i];
            for (int k = 0; k < s->slots; k++) { MIX(s->allowed[k]); MIX(s->src[k]); }
            const WriteLog_f64* w = &a->wlog[i];
            MIX(w->n_cand);
            for (int t = 0; t < w->n_cand; t++) { MIX(w->cand_pos[t]); MIX(w->cand_slot[t]); MIX(w->cand_w[t] > 0); }
            for (int k = 0; k < m->cfg.n_summary; k++) { MIX(w->slot_active[k]); MIX(w->slot_new[k]); }
        }
    }
#undef MIX
    return h;
}

// How much of the bank machinery a training forward exercised (so a gradient check that passes is
// known to have covered it): exact inserts, summary candidates with weight, EMA updates of slots that
// were already in use (the eta path), slots filled for the first time.
typedef struct { int exact_inserts, weighted_candidates, ema_updates, new_slots; } BankActivity;
static BankActivity bank_activity_f64(const Model_f64* m) {
    BankActivity act = {0, 0, 0, 0};
    const ModelConfig* c = &m->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        const AttnActs_f64* a = &m->attn[l];
        for (int i = 0; a->snap && i < a->B * a->n_blocks; i++) {
            const WriteLog_f64* w = &a->wlog[i];
            for (int t = 0; t < w->n_cand; t++) act.weighted_candidates += w->cand_w[t] > 0;
            for (int k = 0; k < c->n_summary; k++) {
                act.ema_updates += w->slot_active[k] && !w->slot_new[k];
                act.new_slots += w->slot_new[k];
            }
            if (i % a->n_blocks == a->n_blocks - 1) continue;  // exact inserts: compare with the next snapshot
            for (int k = 0; k < c->n_exact; k++)
                act.exact_inserts += a->snap[i + 1].src[c->window + k] != a->snap[i].src[c->window + k];
        }
    }
    return act;
}

// Compares analytic gradients with central differences for `per_tensor` elements of every tensor.
// Returns the number of mismatches (each reported).
static int gradcheck_model(const ModelConfig* c, uint64_t seed, int per_tensor, int* n_checked) {
    Model_f64 m;
    model_init_f64(&m, c, seed);
    perturb_params_f64(&m, seed + 1, 0.3);
    int B = 2, T = 13, n = B * T;  // T not a multiple of the block: a short last block
    int* tok = (int*)malloc(sizeof(int) * n * 2);
    int* tgt = tok + n;
    random_tokens(tok, n, c->vocab_size, seed + 2);
    random_tokens(tgt, n, c->vocab_size, seed + 3);
    tgt[5] = -1;  // an ignored target
    model_zero_grad_f64(&m);
    model_forward_f64(&m, tok, tgt, B, T, NULL);
    uint64_t sig = decision_signature_f64(&m);
    model_backward_f64(&m, 1.0);
    if (c->bounded) {
        BankActivity act = bank_activity_f64(&m);
        CHECK(act.exact_inserts > 0 && act.weighted_candidates > 0 && act.ema_updates > 0 && act.new_slots > 0,
              "bank paths not exercised: %d inserts, %d weighted candidates, %d EMA updates, %d new slots",
              act.exact_inserts, act.weighted_candidates, act.ema_updates, act.new_slots);
        // SPEC §4: with detached evictions the write gate gets exactly zero gradient; without, it gets some.
        const ParamTensor* wt = param_find(&m.table, PK_WRITE_W, 0);
        double gsum = 0;
        for (size_t j = 0; j < wt->numel; j++) gsum += fabs(m.grads[wt->offset + j]);
        CHECK(c->detach_evicted ? gsum == 0 : gsum > 0, "write_proj gradient %g with detach_evicted=%d", gsum, c->detach_evicted);
        const ParamTensor* et = param_find(&m.table, PK_ETA, 0);
        CHECK(fabs(m.grads[et->offset]) + fabs(m.grads[et->offset + 1]) > 0, "eta gets no gradient");
    }
    // Detached gradients (detach_evicted, no cross-block gradient) are derivatives of the loss with
    // some values held constant: replay those values from the baseline forward in every perturbed one.
    AttnActs_f64* baseline = m.attn;
    m.attn = NULL;
    m.acts_B = 0;
    model_ensure_acts_f64(&m, B, T, 1);
    for (int l = 0; l < c->n_layers; l++) m.attn[l].stopgrad_ref = &baseline[l];
    int bad = 0;
    Rng r;
    rng_seed(&r, seed + 4);
    const double eps = 1e-5;
    for (int i = 0; i < m.table.n; i++) {
        const ParamTensor* t = &m.table.tensors[i];
        for (int s = 0; s < per_tensor; s++) {
            size_t j = t->offset + (size_t)rng_below(&r, t->numel);
            double p0 = m.params[j];
            m.params[j] = p0 + eps;
            double lp = model_forward_f64(&m, tok, tgt, B, T, NULL);
            uint64_t sp = decision_signature_f64(&m);
            m.params[j] = p0 - eps;
            double lm = model_forward_f64(&m, tok, tgt, B, T, NULL);
            uint64_t sm = decision_signature_f64(&m);
            m.params[j] = p0;
            if (sp != sig || sm != sig) {
                fprintf(stderr, "    %s[%zu]: a discrete bank decision flipped under +-eps; pick another seed\n", t->name, j - t->offset);
                bad++;
                continue;
            }
            double fd = (lp - lm) / (2 * eps), an = m.grads[j];
            (*n_checked)++;
            if (fabs(fd - an) > 1e-7 + 1e-5 * fabs(fd)) {
                fprintf(stderr, "    %s[%zu]: analytic %.10g vs finite difference %.10g\n", t->name, j - t->offset, an, fd);
                bad++;
            }
        }
    }
    free(tok);
    for (int l = 0; l < c->n_layers; l++) attn_acts_free_f64(&baseline[l]);
    free(baseline);
    model_free_f64(&m);
    return bad;
}

static void run_gradcheck(ModelConfig c, uint64_t seed) {
    int checked = 0;
    int bad = gradcheck_model(&c, seed, 3, &checked);
    CHECK(bad == 0, "%d of %d gradient elements disagree", bad, checked);
    CHECK(checked > 0, "nothing checked");
}

TEST(gradcheck_gqa_unbounded) {
    ModelConfig c = tiny_config(0, 0);
    run_gradcheck(c, 11);
}
TEST(gradcheck_coda_unbounded_headnorm_interleaved_tied) {
    ModelConfig c = tiny_config(1, 0);
    c.head_norm = HEAD_NORM_FULL; c.rope_layout = ROPE_INTERLEAVED; c.tie_embeddings = 1;
    run_gradcheck(c, 12);
}
TEST(gradcheck_coda_bounded_detached) {
    ModelConfig c = tiny_config(1, 1);  // T=13, W=4, block 4: evictions in every later block
    run_gradcheck(c, 13);
}
TEST(gradcheck_coda_bounded_through_evictions) {
    ModelConfig c = tiny_config(1, 1);
    c.detach_evicted = 0; c.head_norm = HEAD_NORM_FULL;
    run_gradcheck(c, 14);
}
TEST(gradcheck_coda_bounded_no_cross_block_grad) {
    ModelConfig c = tiny_config(1, 1);
    c.detach_evicted = 0; c.cross_block_grad = 0;
    c.window = 3; c.block_size = 5;  // block > W: a block's own oldest tokens are evicted by its write
    run_gradcheck(c, 15);
}
TEST(gradcheck_gqa_bounded_through_evictions) {
    ModelConfig c = tiny_config(0, 1);
    c.detach_evicted = 0; c.block_size = 3; c.window = 5;
    run_gradcheck(c, 16);
}
