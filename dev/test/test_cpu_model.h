// test_cpu_model.h — the CPU reference model: finite-difference gradient checks (fp64 build) for
// every parameter kind in every attention variant, and the properties docs/spec.md §7 asks for
// (bounded == unbounded when nothing is evicted, decode == prefill, summary LF band stays zero,
// deterministic decisions), plus a tiny training run whose loss falls.
#pragma once
#include "../../llmc/cpu/reference.h"
#include "model_helpers.h"

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
        // docs/spec.md §4: with detached evictions the write gate gets exactly zero gradient; without, it gets some.
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

// ---------------------------------------------------------------------------------------------
// Properties (docs/spec.md §7 "worth adding")

static double max_rel_diff_f32(const float* a, const float* b, size_t n) {
    double mx = 0, scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)b[i]));
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)a[i] - (double)b[i]));
    return mx / (scale > 0 ? scale : 1);
}

// Logits of a training-mode forward (bounded layers: fresh zero state per row).
static float* forward_logits_f32(Model_f32* m, const int* tok, int B, int T) {
    model_forward_f32(m, tok, NULL, B, T, NULL);
    size_t n = (size_t)B * T * m->cfg.vocab_size;
    float* out = (float*)malloc(sizeof(float) * n);
    memcpy(out, m->logits, sizeof(float) * n);
    return out;
}

TEST(bounded_equals_unbounded_without_evictions) {
    // docs/spec.md §2.3: with L <= W (any block size) or L <= block (any W) nothing is evicted before a block
    // needs it, so bounded attention is exactly causal attention.
    int B = 2, T = 16;
    int tok[32];
    random_tokens(tok, B * T, 29, 5);
    ModelConfig cu = tiny_config(1, 0);
    Model_f32 mu;
    model_init_f32(&mu, &cu, 21);
    perturb_params_f32(&mu, 22, 0.3);
    float* ref = forward_logits_f32(&mu, tok, B, T);
    struct { int W, block; } cases[] = {{16, 1}, {16, 3}, {16, 5}, {16, 16}, {20, 32}, {2, 16}, {1, 32}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ModelConfig cb = cu;
        cb.bounded = 1; cb.window = cases[i].W; cb.block_size = cases[i].block;
        Model_f32 mb;
        model_init_f32(&mb, &cb, 99);
        CHECK(model_copy_matching_f32(&mb, &mu) == mu.table.n, "every unbounded tensor copied");
        float* got = forward_logits_f32(&mb, tok, B, T);
        double d = max_rel_diff_f32(got, ref, (size_t)B * T * cu.vocab_size);
        CHECK(d <= 1e-6, "W=%d block=%d: max rel diff %.3g", cases[i].W, cases[i].block, d);
        free(got);
        model_free_f32(&mb);
    }
    // and with evictions they do differ (the property is not vacuous)
    ModelConfig cb = cu;
    cb.bounded = 1; cb.window = 4; cb.block_size = 4;
    Model_f32 mb;
    model_init_f32(&mb, &cb, 99);
    model_copy_matching_f32(&mb, &mu);
    float* got = forward_logits_f32(&mb, tok, B, T);
    CHECK(max_rel_diff_f32(got, ref, (size_t)B * T * cu.vocab_size) > 1e-4, "evictions must change the output");
    free(got);
    model_free_f32(&mb);
    free(ref);
    model_free_f32(&mu);
}

TEST(decode_step_equals_prefill_for_first_window) {
    // docs/spec.md §7: for positions < W, decoding token by token (write, then attend) equals prefilling the
    // same tokens: no token has been evicted yet, so both attend to the whole causal prefix.
    ModelConfig c = tiny_config(1, 1);
    c.window = 12; c.block_size = 5; c.head_norm = HEAD_NORM_FULL;
    Model_f32 m;
    model_init_f32(&m, &c, 31);
    perturb_params_f32(&m, 32, 0.3);
    int B = 2, T = 12, tok[24];
    random_tokens(tok, B * T, c.vocab_size, 33);
    int L = c.n_layers;
    BankState_f32* st = (BankState_f32*)calloc((size_t)L * B, sizeof(BankState_f32));
    for (int i = 0; i < L * B; i++) { bank_alloc_f32(&st[i], &c); bank_reset_f32(&st[i], MEM_INIT_RANDOM_NORMAL, 7 + i); }
    model_forward_f32(&m, tok, NULL, B, T, st);
    float* prefill = (float*)malloc(sizeof(float) * B * T * c.vocab_size);
    memcpy(prefill, m.logits, sizeof(float) * B * T * c.vocab_size);
    for (int i = 0; i < L * B; i++) bank_reset_f32(&st[i], MEM_INIT_RANDOM_NORMAL, 7 + i);
    float* step = (float*)malloc(sizeof(float) * B * c.vocab_size);
    for (int t = 0; t < T; t++) {
        int tb[2] = {tok[t], tok[T + t]};
        model_step_f32(&m, st, tb, B, step);
        for (int b = 0; b < B; b++) {
            double d = max_rel_diff_f32(step + (size_t)b * c.vocab_size, prefill + ((size_t)b * T + t) * c.vocab_size, c.vocab_size);
            CHECK(d <= 1e-5, "row %d position %d: max rel diff %.3g", b, t, d);
        }
    }
    CHECK(st[0].pos == T && st[0].recent_filled == T, "pos %lld filled %d", (long long)st[0].pos, st[0].recent_filled);
    for (int i = 0; i < L * B; i++) bank_free_f32(&st[i]);
    free(st); free(prefill); free(step);
    model_free_f32(&m);
}

TEST(training_forward_keeps_summary_lf_band_zero_and_is_deterministic) {
    ModelConfig c = tiny_config(1, 1);
    c.n_summary = 3;
    Model_f32 m;
    model_init_f32(&m, &c, 41);
    perturb_params_f32(&m, 42, 0.3);
    int B = 2, T = 29, tok[58];
    random_tokens(tok, B * T, c.vocab_size, 43);
    float* a = forward_logits_f32(&m, tok, B, T);
    int lf = c.head_dim / 2, s0 = c.window + c.n_exact, used = 0;
    for (int l = 0; l < c.n_layers; l++)
        for (int i = 0; i < B * m.attn[l].n_blocks; i++) {
            const BankState_f32* s = &m.attn[l].snap[i];
            for (int g = 0; g < c.n_kv_heads; g++)
                for (int k = 0; k < c.n_summary; k++) {
                    used += s->allowed[s0 + k];
                    for (int d = 0; d < lf; d++) CHECK(bank_k_f32(s, g, s0 + k)[d] == 0.0f, "summary key dim %d not zero", d);
                }
        }
    CHECK(used > 0, "summary bank never used");
    float* b = forward_logits_f32(&m, tok, B, T);
    CHECK(memcmp(a, b, sizeof(float) * B * T * c.vocab_size) == 0, "two identical forwards differ");
    free(a); free(b);
    model_free_f32(&m);
}

TEST(coda_with_zero_lambda_and_theta_equals_gqa) {
    // The Phase-1 swap (docs/protocol.md §1.2): q/k/v/o copied from a GQA model, theta = 0 (noise query =
    // signal query) and lambda ~ 0 reproduce the GQA model, bounded or not (the 2x2's "GQA" cells).
    for (int bounded = 0; bounded <= 1; bounded++) {
        ModelConfig cg = tiny_config(0, bounded), cc = tiny_config(1, bounded);
        cc.theta_init = 0.0f; cc.lambda_init_bias = -40.0f;  // sigmoid(-40) ~ 4e-18
        Model_f32 mg, mc;
        model_init_f32(&mg, &cg, 51);
        perturb_params_f32(&mg, 52, 0.3);
        model_init_f32(&mc, &cc, 53);
        model_copy_matching_f32(&mc, &mg);
        int B = 2, T = 15, tok[30];
        random_tokens(tok, B * T, cg.vocab_size, 54);
        float* lg = forward_logits_f32(&mg, tok, B, T);
        float* lc = forward_logits_f32(&mc, tok, B, T);
        double d = max_rel_diff_f32(lc, lg, (size_t)B * T * cg.vocab_size);
        CHECK(d <= 1e-6, "bounded=%d: max rel diff %.3g", bounded, d);
        free(lg); free(lc);
        model_free_f32(&mg);
        model_free_f32(&mc);
    }
}

TEST(fp32_and_fp64_builds_agree) {
    ModelConfig c = tiny_config(1, 1);
    c.head_norm = HEAD_NORM_FULL; c.detach_evicted = 0;
    Model_f32 m32;
    Model_f64 m64;
    model_init_f32(&m32, &c, 61);
    perturb_params_f32(&m32, 62, 0.3);
    model_init_f64(&m64, &c, 61);
    for (size_t i = 0; i < m32.table.total; i++) m64.params[i] = m32.params[i];
    int B = 2, T = 13, tok[26], tgt[26];
    random_tokens(tok, B * T, c.vocab_size, 63);
    random_tokens(tgt, B * T, c.vocab_size, 64);
    double l32 = model_forward_f32(&m32, tok, tgt, B, T, NULL), l64 = model_forward_f64(&m64, tok, tgt, B, T, NULL);
    CHECK_CLOSE(l32, l64, 0, 1e-5);
    model_zero_grad_f32(&m32);
    model_zero_grad_f64(&m64);
    model_backward_f32(&m32, 1.0f);
    model_backward_f64(&m64, 1.0);
    double gmax = 0, dmax = 0;
    for (size_t i = 0; i < m32.table.total; i++) {
        gmax = fmax(gmax, fabs(m64.grads[i]));
        dmax = fmax(dmax, fabs(m32.grads[i] - m64.grads[i]));
    }
    CHECK(dmax <= 1e-4 * gmax, "gradient max diff %.3g (max grad %.3g)", dmax, gmax);
    model_free_f32(&m32);
    model_free_f64(&m64);
}

// ---------------------------------------------------------------------------------------------
// Optimizer and training

static AdamWConfig test_adamw(void) {
    AdamWConfig o;
    memset(&o, 0, sizeof(o));
    for (int g = 0; g < GROUP_COUNT; g++) { o.lr[g] = 1e-2; o.weight_decay[g] = 0.0; }
    o.lr[GROUP_CODA] = 3e-2;
    o.weight_decay[GROUP_ATTN_PROJ] = 0.1;
    o.beta1 = 0.9; o.beta2 = 0.999; o.eps = 1e-8; o.grad_clip = 0;
    return o;
}

TEST(adamw_groups_frozen_and_clipping) {
    ModelConfig c = tiny_config(1, 0);
    Model_f64 m;
    model_init_f64(&m, &c, 71);
    param_table_set_trainable(&m.table, TRAIN_ATTENTION);
    Rng r;
    rng_seed(&r, 72);
    for (size_t i = 0; i < m.table.total; i++) m.grads[i] = rng_normal(&r);
    double* before = (double*)malloc(sizeof(double) * m.table.total);
    memcpy(before, m.params, sizeof(double) * m.table.total);
    AdamWConfig o = test_adamw();
    double norm = model_adamw_step_f64(&m, &o, 0.5);
    CHECK(norm > 0, "");
    for (int i = 0; i < m.table.n; i++) {
        const ParamTensor* t = &m.table.tensors[i];
        size_t j = t->offset;
        if (!t->trainable) { CHECK(m.params[j] == before[j], "frozen %s changed", t->name); continue; }
        // first step: m_hat = g, v_hat = g^2  =>  p' = p (1 - lr wd) - lr * g / (|g| + eps)
        ParamGroup grp = PARAM_KINDS[t->kind].group;
        double lr = o.lr[grp] * 0.5, g = m.grads[j];
        double want = before[j] * (1 - lr * o.weight_decay[grp]) - lr * g / (fabs(g) + o.eps);
        CHECK_CLOSE(m.params[j], want, 1e-12, 1e-9);
    }
    // clipping: a clipped step equals an unclipped step on gradients pre-scaled by clip / (norm + 1e-6).
    // Two steps, because Adam's first step does not depend on the gradient scale.
    Model_f64 a, b;
    model_init_f64(&a, &c, 73);
    model_init_f64(&b, &c, 73);
    AdamWConfig oc = test_adamw();
    oc.grad_clip = 0.01;
    for (int step = 0; step < 2; step++) {
        for (size_t i = 0; i < a.table.total; i++) a.grads[i] = b.grads[i] = rng_normal(&r) * (step + 1);
        double na = model_grad_norm_f64(&a);
        CHECK(na > oc.grad_clip, "gradient norm %g must exceed the clip", na);
        for (size_t i = 0; i < b.table.total; i++) b.grads[i] *= oc.grad_clip / (na + 1e-6);
        CHECK_CLOSE(model_adamw_step_f64(&a, &oc, 1.0), na, 0, 1e-12);
        model_adamw_step_f64(&b, &o, 1.0);
    }
    double d = 0;
    for (size_t i = 0; i < a.table.total; i++) d = fmax(d, fabs(a.params[i] - b.params[i]));
    CHECK(d < 1e-12, "clipped and pre-scaled steps differ by %g", d);
    free(before);
    model_free_f64(&m);
    model_free_f64(&a);
    model_free_f64(&b);
}

// Trains on a fixed periodic token stream; the loss must fall well below its start.
static void train_tiny(ModelConfig c, int steps, double* first, double* last) {
    Model_f32 m;
    model_init_f32(&m, &c, 81);
    AdamWConfig o = test_adamw();
    int B = 4, T = 24, period = 7, tok[96], tgt[96];
    int cycle[7];
    random_tokens(cycle, period, c.vocab_size, 82);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            tok[b * T + t] = cycle[(b * 3 + t) % period];
            tgt[b * T + t] = cycle[(b * 3 + t + 1) % period];
        }
    for (int s = 0; s < steps; s++) {
        model_zero_grad_f32(&m);
        double loss = model_forward_f32(&m, tok, tgt, B, T, NULL);
        model_backward_f32(&m, 1.0f);
        model_adamw_step_f32(&m, &o, 1.0);
        if (s == 0) *first = loss;
        *last = loss;
    }
    model_free_f32(&m);
}

TEST(tiny_training_loss_falls) {
    double first, last;
    train_tiny(tiny_config(0, 0), 60, &first, &last);
    CHECK(last < 0.25 * first, "GQA: loss %.3f -> %.3f", first, last);
    ModelConfig c = tiny_config(1, 1);
    c.detach_evicted = 0;
    train_tiny(c, 60, &first, &last);
    CHECK(last < 0.25 * first, "CoDA bounded: loss %.3f -> %.3f", first, last);
}

// ---------------------------------------------------------------------------------------------
// RoPE conventions and the reference-defect switches (docs/spec.md §1.3, docs/protocol.md §8.1-8.2)

TEST(rope_layouts_match_their_definitions) {
    int Dh = 8, half = 4, T = 3;
    float cs[12], sn[12];
    rope_tables_f32(cs, sn, 5, T, Dh, 10000.0, 0);
    for (int i = 0; i < half; i++) {  // inv_freq = base^(-2i/Dh) in fp32, angle = position * inv_freq
        float f = 1.0f / powf(10000.0f, (float)(2 * i) / Dh);
        CHECK(cs[half + i] == cosf(6.0f * f) && sn[half + i] == sinf(6.0f * f), "table at position 6, pair %d", i);
    }
    Rng r;
    rng_seed(&r, 3);
    float x[8], hs[8], il[8];
    for (int d = 0; d < Dh; d++) x[d] = hs[d] = il[d] = (float)rng_normal(&r);
    rope_apply_f32(hs, cs, sn, 1, 1, Dh, ROPE_HALF_SPLIT, +1);
    rope_apply_f32(il, cs, sn, 1, 1, Dh, ROPE_INTERLEAVED, +1);
    for (int d = 0; d < Dh; d++) {
        // HF: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x[half:], x[:half]]
        float rot = d < half ? -x[d + half] : x[d - half];
        CHECK_CLOSE(hs[d], x[d] * cs[d % half] + rot * sn[d % half], 1e-6, 1e-6);
        // interleaved: pairs (2i, 2i+1)
        int i = d / 2;
        float want = d % 2 == 0 ? x[d] * cs[i] - x[d + 1] * sn[i] : x[d - 1] * sn[i] + x[d] * cs[i];
        CHECK_CLOSE(il[d], want, 1e-6, 1e-6);
    }
    rope_apply_f32(hs, cs, sn, 1, 1, Dh, ROPE_HALF_SPLIT, -1);  // the backward rotation undoes it
    for (int d = 0; d < Dh; d++) CHECK_CLOSE(hs[d], x[d], 1e-6, 1e-6);
}

TEST(rope_bf16_positions_and_base_override_reproduce_reference_defects) {
    // bf16 holds integers exactly only up to 256: positions 256 and 257 get the same angles.
    int Dh = 8;
    float c0[4], s0[4], c1[4], s1[4];
    rope_tables_f32(c0, s0, 256, 1, Dh, 1e6, 1);
    rope_tables_f32(c1, s1, 257, 1, Dh, 1e6, 1);
    CHECK(memcmp(c0, c1, sizeof(c0)) == 0 && memcmp(s0, s1, sizeof(s0)) == 0, "bf16 positions 256/257 must coincide");
    rope_tables_f32(c0, s0, 256, 1, Dh, 1e6, 0);
    rope_tables_f32(c1, s1, 257, 1, Dh, 1e6, 0);
    CHECK(c0[0] != c1[0], "fp32 positions must differ");
    // the override replaces the config's base (the reference's hard-coded 10,000 for bounded layers)
    ModelConfig c = config_default();
    CHECK(config_rope_base(&c) == 1e6, "");
    c.rope_theta_override = 10000.0;
    CHECK(config_rope_base(&c) == 10000.0, "");
    // and it reaches the model: same weights, different base -> different logits
    ModelConfig a = tiny_config(1, 0), b = a;
    b.rope_theta_override = 500000.0;
    Model_f32 ma, mb;
    model_init_f32(&ma, &a, 91);
    model_init_f32(&mb, &b, 91);
    int tok[16];
    random_tokens(tok, 16, a.vocab_size, 92);
    float* la = forward_logits_f32(&ma, tok, 1, 16);
    float* lb = forward_logits_f32(&mb, tok, 1, 16);
    CHECK(max_rel_diff_f32(la, lb, (size_t)16 * a.vocab_size) > 1e-6, "the RoPE base must change the output");
    free(la); free(lb);
    model_free_f32(&ma);
    model_free_f32(&mb);
}
