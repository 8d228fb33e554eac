// needle.h — needle-in-a-haystack (docs/protocol.md §4): the reference's examples/needle_demo.py. A
// synthetic test of ONE randomly initialised bounded CoDA layer (not a retrieval test of a trained
// model): the write gate reads a random unit direction u (write_proj weight := u, bias 0); background
// tokens are -5u + N(0, 0.01^2) (gate ~ 0.007, below both keep thresholds: never admitted to a bank),
// the needle at position `pos` is +5u + noise (gate ~ 0.993). After a chunked prefill of the whole
// sequence the needle is "retained" when its key (re-projected and RoPE'd at its position) has
// cosine > 0.999 with some valid slot of the recent ring or the exact bank (max over KV heads). It
// checks the bank bookkeeping (eviction, candidate selection, exact-bank admission), not learned
// retrieval.
//
// With the demo's settings (8 exact / 64 summary candidates per block) the result depends on the
// candidate order (docs/spec.md §3.1, §11.16). coda.c's default (each bank takes its highest-gated candidates)
// hands the needle (gate 0.993) to the exact bank at every length. The reference order (one top-64
// list in index order, of which the exact bank takes the first 8) gives the exact bank, in fp32, the
// 8 oldest background tokens (strictly above the 64th-largest gate), which the 0.10 threshold
// rejects: the needle is LOST once it leaves the ring, as the reference loses it in fp32 (it keeps it
// only in bf16, where the background gates tie).
#pragma once
#include "overrides.h"

// The demo's module: D=512, H=8, Hkv=2 (Dh=64), W=128, Me=32, Ms=32, block 256, gated writes with
// thresholds 0.10 / 0.05, RoPE base 10000 (the module's default); attention-config overrides apply.
static inline ModelConfig needle_config(const ConfigOverrides* ov) {
    ModelConfig c = config_default();
    c.vocab_size = 2; c.dim = 512; c.ffn_dim = 8; c.n_layers = 1; c.n_heads = 8; c.n_kv_heads = 2; c.head_dim = 64;
    c.rope_theta = 10000.0; c.differential = 1; c.bounded = 1;
    c.window = 128; c.n_exact = 32; c.n_summary = 32; c.block_size = 256;
    overrides_apply(&c, ov);
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
} NeedleResult;

// The demo's inputs, shared by the CPU run below and the GPU run (needle_gpu.cuh): the layer's weights
// (a Model_f32 drawn from seed, write_proj := u, bias 0) and the sequence x [length][D].
typedef struct {
    Model_f32 m;
    AttnWeights_f32 w;
    float* x;
} NeedleInputs;

static inline int needle_inputs(const ModelConfig* c, int length, int pos, double needle_scale, uint64_t seed, NeedleInputs* in,
                                CodaError* err) {
    CodaError inner;
    if (config_validate(c, &inner) != 0) return coda_errorf(err, "needle: %s", inner.msg);
    if (!c->bounded) return coda_errorf(err, "needle: the test needs a bounded layer");
    if (pos < 0 || pos >= length) return coda_errorf(err, "needle: position %d is outside the sequence of %d tokens", pos, length);
    const int D = c->dim;
    model_init_f32(&in->m, c, seed);
    in->w = model_attn_weights_f32(&in->m, in->m.params, 0);
    Rng rng;
    rng_seed(&rng, seed + 1);
    float* u = in->w.write_w;  // the gate's direction: a random unit vector
    double nrm = 0;
    for (int d = 0; d < D; d++) { u[d] = (float)rng_normal(&rng); nrm += (double)u[d] * u[d]; }
    for (int d = 0; d < D; d++) u[d] = (float)(u[d] / sqrt(nrm));
    in->w.write_b[0] = 0.0f;
    in->x = (float*)coda_malloc_or_die(sizeof(float) * (size_t)length * D, "needle inputs");
    for (int t = 0; t < length; t++) {
        double a = t == pos ? needle_scale : -5.0;
        for (int d = 0; d < D; d++) in->x[(size_t)t * D + d] = (float)(a * u[d] + 0.01 * rng_normal(&rng));
    }
    return 0;
}
static inline void needle_inputs_free(NeedleInputs* in) {
    free(in->x);
    model_free_f32(&in->m);
}

// One run at sequence length `length` with the needle at `pos`. needle_scale: +5 is the demo's
// needle; a negative control passes -5 (the "needle" is then background).
static inline int needle_run(const ModelConfig* cfg, int length, int pos, double needle_scale, uint64_t seed, NeedleResult* r,
                             CodaError* err) {
    memset(r, 0, sizeof(*r));
    r->length = length;
    r->pos = pos;
    ModelConfig c = *cfg;
    NeedleInputs in;
    if (needle_inputs(&c, length, pos, needle_scale, seed, &in, err) != 0) return -1;
    int D = c.dim, Dh = c.head_dim, Hkv = c.n_kv_heads, kvd = config_kvdim(&c);
    const AttnWeights_f32 w = in.w;
    const float* x = in.x;
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
    needle_inputs_free(&in);
    return 0;
}
