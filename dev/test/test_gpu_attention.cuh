// test_gpu_attention.cuh — GPU tests of llmc/coda_attention.cuh and llmc/classifier.cuh against the
// CPU reference (llmc/cpu/reference.h), included by test_coda.cu (and by the dev/cuda benchmarks
// for their CPU check).
//
// Attention oracle: the reference's own chain, in fp64 (the *_f64 instantiation, so the measured
// error is the GPU's alone): per batch row noise_rotate -> keyset_build(no prefix, T block keys) ->
// attend_forward; combine_forward (lambda, head RMSNorm); backward rmsnorm_backward -> split into the
// streams (d lambda through the sigmoid) -> attend_backward -> keyset_scatter -> noise-rotation
// backward and d theta, i.e. attn_backward minus projections and RoPE. Inputs are rounded to floatX
// first, so both sides see the same numbers.
//
// Error measure per tensor: ||gpu - ref||_2 / ||ref||_2 (printed for every case); for d lam_logit
// with a floor against exact cancellation (see ga_check_case).
// Tolerances: FP32 build 2e-5 (measured worst 3.1e-6, H100, dev/test/GPU_RESULTS.md);
// BF16 build 2e-2 (measured worst 4.3e-3: bf16 inputs are exact on both sides; the GPU rounds a_sig,
// a_noise, d o and every output to bf16, about 2^-9 relative each).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <vector>
#include "../../llmc/coda_attention.cuh"
#include "../../llmc/classifier.cuh"
#include "../../llmc/cpu/reference.h"
#include "harness.h"

static const int ga_is_bf16 = sizeof(floatX) == 2;

static uint64_t ga_rng_next(uint64_t* s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float ga_uniform(uint64_t* s, float lo, float hi) {
    return lo + (hi - lo) * (float)((ga_rng_next(s) >> 40) * (1.0 / 16777216.0));
}
// Random values, rounded to what floatX can hold.
static void ga_fill(float* x, size_t n, uint64_t* s, float lo, float hi) {
    for (size_t i = 0; i < n; i++) {
        float v = ga_uniform(s, lo, hi);
        x[i] = ga_is_bf16 ? round_bf16(v) : v;
    }
}
static double ga_rel_l2(const float* g, const double* r, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)g[i] - r[i];
        if (g[i] != g[i]) return INFINITY;  // NaN (unwritten output) never passes
        num += d * d;
        den += r[i] * r[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
static double* ga_to_f64(const float* x, size_t n) {
    double* d = (double*)coda_malloc_or_die(n * sizeof(double) + 8, "test f64 copy");
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
static floatX* ga_upload(const float* x, size_t n) {
    floatX* d = (floatX*)cuda_malloc_or_die(n * sizeof(floatX) + 16, "test tensor");
    host_to_floatX(d, x, n);
    return d;
}
static float* ga_download(const floatX* d, size_t n) {
    float* h = (float*)coda_malloc_or_die(n * sizeof(float) + 8, "test download");
    floatX_to_host(h, d, n);
    return h;
}

typedef struct {
    CodaAttnShape sh;
    // host inputs (floatX-representable)
    float *q, *k, *v, *theta, *lam_logit, *hn, *dout;
    // device
    floatX *dq, *dk, *dv, *dlam, *out, *a_sig, *a_noise;
    floatX *d_theta, *d_lam_logit, *d_hn, *d_dout, *d_q, *d_k, *d_v;
    float *lse, *hn_rstd, *dtheta, *dhn;
    void* scratch;
    size_t scratch_bytes;
    // bounded key set with a bank (sh.block > 0, sh.bank_slots > 0): host inputs and device copies
    size_t nbank;                 // elements of bank_k: B * n_blocks * Hkv * bank_slots * Dh
    float *bank_k, *bank_v;       // [B][n_blocks][Hkv][Mb][Dh]
    unsigned char* allowed;       // [B][n_blocks][Mb]
    floatX *d_bank_k, *d_bank_v;
    unsigned char* d_allowed;
    float *dbank_k, *dbank_v;     // outputs, fp32
} GaCase;

static void ga_case_init(GaCase* c, CodaAttnShape sh, uint64_t seed) {
    memset(c, 0, sizeof(*c));
    c->sh = sh;
    size_t BT = (size_t)sh.B * sh.T, qd = (size_t)sh.H * sh.Dh, kvd = (size_t)sh.Hkv * sh.Dh;
    c->q = (float*)coda_malloc_or_die(BT * qd * sizeof(float), "q");
    c->k = (float*)coda_malloc_or_die(BT * kvd * sizeof(float), "k");
    c->v = (float*)coda_malloc_or_die(BT * kvd * sizeof(float), "v");
    c->theta = (float*)coda_malloc_or_die((size_t)sh.H * sh.Dh / 2 * sizeof(float), "theta");
    c->lam_logit = (float*)coda_malloc_or_die(BT * sh.H * sizeof(float), "lam");
    c->hn = (float*)coda_malloc_or_die((size_t)sh.Dh * sizeof(float), "hn");
    c->dout = (float*)coda_malloc_or_die(BT * qd * sizeof(float), "dout");
    uint64_t s = seed;
    ga_fill(c->q, BT * qd, &s, -1.5f, 1.5f);
    ga_fill(c->k, BT * kvd, &s, -1.5f, 1.5f);
    ga_fill(c->v, BT * kvd, &s, -1.f, 1.f);
    ga_fill(c->theta, (size_t)sh.H * sh.Dh / 2, &s, -3.1f, 3.1f);
    ga_fill(c->lam_logit, BT * sh.H, &s, -3.f, 1.f);
    ga_fill(c->hn, sh.Dh, &s, 0.8f, 1.2f);
    ga_fill(c->dout, BT * qd, &s, -1.f, 1.f);
    c->d_q = ga_upload(c->q, BT * qd);
    c->d_k = ga_upload(c->k, BT * kvd);
    c->d_v = ga_upload(c->v, BT * kvd);
    c->d_theta = ga_upload(c->theta, (size_t)sh.H * sh.Dh / 2);
    c->d_lam_logit = ga_upload(c->lam_logit, BT * sh.H);
    c->d_hn = ga_upload(c->hn, sh.Dh);
    c->d_dout = ga_upload(c->dout, BT * qd);
    const char* w = "attention test buffers";
    c->out = (floatX*)cuda_malloc_or_die(BT * qd * sizeof(floatX), w);
    c->a_sig = (floatX*)cuda_malloc_or_die(BT * qd * sizeof(floatX), w);
    c->a_noise = (floatX*)cuda_malloc_or_die(BT * qd * sizeof(floatX), w);
    c->dq = (floatX*)cuda_malloc_or_die(BT * qd * sizeof(floatX), w);
    c->dk = (floatX*)cuda_malloc_or_die(BT * kvd * sizeof(floatX), w);
    c->dv = (floatX*)cuda_malloc_or_die(BT * kvd * sizeof(floatX), w);
    c->dlam = (floatX*)cuda_malloc_or_die(BT * sh.H * sizeof(floatX), w);
    c->lse = (float*)cuda_malloc_or_die(2 * BT * sh.H * sizeof(float), w);
    c->hn_rstd = (float*)cuda_malloc_or_die(BT * sh.H * sizeof(float), w);
    c->dtheta = (float*)cuda_malloc_or_die((size_t)sh.H * sh.Dh / 2 * sizeof(float), w);
    c->dhn = (float*)cuda_malloc_or_die((size_t)sh.Dh * sizeof(float), w);
    c->scratch_bytes = coda_attention_scratch_bytes(&sh);
    c->scratch = cuda_malloc_or_die(c->scratch_bytes, "attention scratch");
    if (ca_has_bank(&sh)) {
        const int nb = ca_n_blocks(sh), Mb = sh.bank_slots;
        c->nbank = (size_t)sh.B * nb * sh.Hkv * Mb * sh.Dh;
        c->bank_k = (float*)coda_malloc_or_die(c->nbank * sizeof(float), "bank k");
        c->bank_v = (float*)coda_malloc_or_die(c->nbank * sizeof(float), "bank v");
        c->allowed = (unsigned char*)coda_malloc_or_die((size_t)sh.B * nb * Mb, "bank allowed");
        ga_fill(c->bank_k, c->nbank, &s, -1.5f, 1.5f);
        ga_fill(c->bank_v, c->nbank, &s, -1.f, 1.f);
        // Allowed slots: none for block 0 (a fresh training state), a random ~60% elsewhere, and for
        // every third block a first 64-slot tile with none at all (a fully masked bank tile); every
        // slot when unused memory is attended (the scan allows them all then).
        for (int b = 0; b < sh.B; b++)
            for (int j = 0; j < nb; j++)
                for (int m = 0; m < Mb; m++) {
                    unsigned char a = j > 0 && ga_uniform(&s, 0.f, 1.f) < 0.6f && !(j % 3 == 2 && m < 64 && Mb > 64);
                    c->allowed[((size_t)b * nb + j) * Mb + m] = sh.unmasked_memory ? 1 : a;
                }
        c->d_bank_k = ga_upload(c->bank_k, c->nbank);
        c->d_bank_v = ga_upload(c->bank_v, c->nbank);
        c->d_allowed = (unsigned char*)cuda_malloc_or_die((size_t)sh.B * nb * Mb, "bank allowed");
        cudaCheck(cudaMemcpy(c->d_allowed, c->allowed, (size_t)sh.B * nb * Mb, cudaMemcpyHostToDevice));
        c->dbank_k = (float*)cuda_malloc_or_die(c->nbank * sizeof(float), w);
        c->dbank_v = (float*)cuda_malloc_or_die(c->nbank * sizeof(float), w);
    }
}

static void ga_case_free(GaCase* c) {
    free(c->q); free(c->k); free(c->v); free(c->theta); free(c->lam_logit); free(c->hn); free(c->dout);
    void* dev[] = {c->d_q, c->d_k, c->d_v, c->d_theta, c->d_lam_logit, c->d_hn, c->d_dout, c->out, c->a_sig, c->a_noise,
                   c->dq, c->dk, c->dv, c->dlam, c->lse, c->hn_rstd, c->dtheta, c->dhn, c->scratch};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) cudaCheck(cudaFree(dev[i]));
    if (c->nbank) {
        free(c->bank_k); free(c->bank_v); free(c->allowed);
        void* bdev[] = {c->d_bank_k, c->d_bank_v, c->d_allowed, c->dbank_k, c->dbank_v};
        for (size_t i = 0; i < sizeof(bdev) / sizeof(bdev[0]); i++) cudaCheck(cudaFree(bdev[i]));
    }
}

static CodaAttnInputs ga_case_inputs(const GaCase* c) {
    CodaAttnInputs in;
    memset(&in, 0, sizeof(in));
    in.q = c->d_q; in.k = c->d_k; in.v = c->d_v;
    in.theta = c->d_theta; in.lam_logit = c->d_lam_logit; in.head_norm = c->d_hn;
    in.bank.k = c->d_bank_k; in.bank.v = c->d_bank_v; in.bank.allowed = c->d_allowed;
    return in;
}

// Poisons every output (NaN bytes), zeroes the accumulated gradients, runs forward + backward.
static void ga_case_run_gpu(GaCase* c, const GpuContext* ctx, int poison) {
    const CodaAttnShape* sh = &c->sh;
    size_t BT = (size_t)sh->B * sh->T, qd = (size_t)sh->H * sh->Dh, kvd = (size_t)sh->Hkv * sh->Dh;
    if (poison) {
        cudaCheck(cudaMemset(c->out, 0xFF, BT * qd * sizeof(floatX)));
        cudaCheck(cudaMemset(c->a_sig, 0xFF, BT * qd * sizeof(floatX)));
        cudaCheck(cudaMemset(c->a_noise, 0xFF, BT * qd * sizeof(floatX)));
        cudaCheck(cudaMemset(c->dq, 0xFF, BT * qd * sizeof(floatX)));
        cudaCheck(cudaMemset(c->dk, 0xFF, BT * kvd * sizeof(floatX)));
        cudaCheck(cudaMemset(c->dv, 0xFF, BT * kvd * sizeof(floatX)));
        cudaCheck(cudaMemset(c->dlam, 0xFF, BT * sh->H * sizeof(floatX)));
        cudaCheck(cudaMemset(c->scratch, 0xFF, c->scratch_bytes));
        cudaCheck(cudaMemset(c->dtheta, 0, (size_t)sh->H * sh->Dh / 2 * sizeof(float)));
        cudaCheck(cudaMemset(c->dhn, 0, (size_t)sh->Dh * sizeof(float)));
    }
    CodaAttnInputs in = ga_case_inputs(c);
    CodaAttnSaved sv = {c->out, c->a_sig, c->a_noise, c->lse, c->hn_rstd};
    CodaAttnGrads gr = {c->dq, c->dk, c->dv, c->dlam, c->dtheta, c->dhn, c->dbank_k, c->dbank_v};
    if (poison && c->nbank) {
        cudaCheck(cudaMemset(c->dbank_k, 0xFF, c->nbank * sizeof(float)));
        cudaCheck(cudaMemset(c->dbank_v, 0xFF, c->nbank * sizeof(float)));
    }
    coda_attention_forward(ctx, sh, &in, &sv);
    coda_attention_backward(ctx, sh, &in, &sv, c->d_dout, &gr, c->scratch, c->scratch_bytes);
    cudaCheck(cudaStreamSynchronize(ctx->stream));
}

typedef struct { double out, dq, dk, dv, dlam, dtheta, dhn, dbank; } GaErrors;

// Bounded (sh.block > 0): the key set of block j of row b as the CPU reference builds it -- prefix =
// the allowed bank slots, the ring tokens [max(0, jS - W), jS) and (unmasked memory) the empty ring
// slots as zero keys; then the block's tokens causally. src[i] says where prefix key i came from:
// >= 0 a token of the row, -1 - m bank slot m, GA_ZERO_KEY an empty ring slot. k, v: the row's
// [T][Hkv*Dh] keys/values (fp64).
#define GA_ZERO_KEY (-1000000)
static void ga_bounded_keyset(const GaCase* c, int b, int j, const double* k, const double* v, KeySet_f64* ks, int* src) {
    const CodaAttnShape* sh = &c->sh;
    const int S = sh->block, W = sh->window, Hkv = sh->Hkv, Dh = sh->Dh, kvd = Hkv * Dh, Mb = c->nbank ? sh->bank_slots : 0;
    const int nb_ = ca_n_blocks(*sh), t0 = j * S, nb = sh->T - t0 < S ? sh->T - t0 : S, lo = t0 - W > 0 ? t0 - W : 0;
    int P = 0;
    for (int m = 0; m < Mb; m++)
        if (c->allowed[((size_t)b * nb_ + j) * Mb + m]) src[P++] = -1 - m;
    for (int p = lo; p < t0; p++) src[P++] = p;
    if (sh->unmasked_memory)
        for (int e = 0; e < W - (t0 < W ? t0 : W); e++) src[P++] = GA_ZERO_KEY;
    ks->P = P; ks->nb = nb;
    ks->slot = (int*)coda_malloc_or_die(sizeof(int) * (P ? P : 1), "key set");
    ks->k = (double*)coda_calloc_or_die((size_t)Hkv * (P + nb) * Dh, sizeof(double), "key set");
    ks->v = (double*)coda_calloc_or_die((size_t)Hkv * (P + nb) * Dh, sizeof(double), "key set");
    for (int i = 0; i < P + nb; i++) {
        const int from = i < P ? src[i] : t0 + i - P;
        if (i < P) ks->slot[i] = from;
        for (int g = 0; g < Hkv; g++) {
            double* dk_ = ks->k + ((size_t)g * (P + nb) + i) * Dh;
            double* dv_ = ks->v + ((size_t)g * (P + nb) + i) * Dh;
            if (from >= 0) {
                for (int d = 0; d < Dh; d++) { dk_[d] = k[(size_t)from * kvd + g * Dh + d]; dv_[d] = v[(size_t)from * kvd + g * Dh + d]; }
            } else if (from != GA_ZERO_KEY) {
                const size_t off = ((((size_t)b * nb_ + j) * Hkv + g) * Mb + (-1 - from)) * Dh;
                for (int d = 0; d < Dh; d++) { dk_[d] = c->bank_k[off + d]; dv_[d] = c->bank_v[off + d]; }
            }
        }
    }
}
// Sends the key-set gradients of block j of row b to their sources: tokens (dk/dv rows of the row;
// ring tokens before (j-1)S only without grad_cut), bank slots (dbank), nothing for zero keys.
static void ga_bounded_scatter(const GaCase* c, int b, int j, const KeySet_f64* ks, const int* src, const double* dK, const double* dV,
                               double* dk, double* dv, double* dbk, double* dbv) {
    const CodaAttnShape* sh = &c->sh;
    const int S = sh->block, Hkv = sh->Hkv, Dh = sh->Dh, kvd = Hkv * Dh, Mb = c->nbank ? sh->bank_slots : 0, nb_ = ca_n_blocks(*sh);
    const int n = ks->P + ks->nb, t0 = j * S;
    for (int i = 0; i < n; i++) {
        const int from = i < ks->P ? src[i] : t0 + i - ks->P;
        if (from == GA_ZERO_KEY) continue;
        if (from >= 0 && sh->grad_cut && from < (j - 1) * S) continue;  // came through the cut state
        for (int g = 0; g < Hkv; g++) {
            const double* gk = dK + ((size_t)g * n + i) * Dh;
            const double* gv = dV + ((size_t)g * n + i) * Dh;
            double *tk, *tv;
            if (from >= 0) { tk = dk + (size_t)from * kvd + g * Dh; tv = dv + (size_t)from * kvd + g * Dh; }
            else {
                const size_t off = ((((size_t)b * nb_ + j) * Hkv + g) * Mb + (-1 - from)) * Dh;
                tk = dbk + off; tv = dbv + off;
            }
            for (int d = 0; d < Dh; d++) { tk[d] += gk[d]; tv[d] += gv[d]; }
        }
    }
}

// The fp64 reference chain of attn_forward/attn_backward without projections and RoPE (bounded: the
// block loop of attn_row_forward / attn_backward over the case's bank). dbk/dbv: the bank slots'
// gradients (bounded with a bank; else unused).
// dlam_abs[t, h] = sum_d |d o * a_noise| * lam (1 - lam): the size of the terms that cancel in dlam.
static void ga_reference(const GaCase* c, double* out, double* dq, double* dk, double* dv, double* dlam, double* dtheta,
                         double* dhn, double* dlam_abs, double* dbk, double* dbv) {
    const CodaAttnShape* sh = &c->sh;
    const int B = sh->B, T = sh->T, H = sh->H, Hkv = sh->Hkv, Dh = sh->Dh;
    const size_t BT = (size_t)B * T, qd = (size_t)H * Dh, kvd = (size_t)Hkv * Dh, n = BT * qd;
    ModelConfig cfg = config_default();
    cfg.n_heads = H; cfg.n_kv_heads = Hkv; cfg.head_dim = Dh; cfg.dim = H * Dh;
    cfg.differential = sh->differential;
    cfg.head_norm = sh->head_norm_full ? HEAD_NORM_FULL : HEAD_NORM_IDENTITY;
    cfg.head_norm_eps = sh->head_norm_eps;
    double *q = ga_to_f64(c->q, n), *k = ga_to_f64(c->k, BT * kvd), *v = ga_to_f64(c->v, BT * kvd);
    double *theta = ga_to_f64(c->theta, (size_t)H * Dh / 2), *hn = ga_to_f64(c->hn, Dh), *dout = ga_to_f64(c->dout, n);
    double* lam = ga_to_f64(c->lam_logit, BT * H);
    for (size_t i = 0; i < BT * H; i++) lam[i] = sigmoid_f64(lam[i]);
    double* buf = (double*)coda_calloc_or_die(9 * n + BT * H, sizeof(double), "reference buffers");
    double *qn = buf, *as = qn + n, *an = as + n, *o = an + n, *d_o = o + n, *dsig = d_o + n, *dnoise = dsig + n;
    double *dqn = dnoise + n, *tmp = dqn + n, *rstd = tmp + n;
    if (sh->differential) noise_rotate_f64(qn, q, theta, (int)BT, H, Dh, +1);
    const int bounded = sh->block > 0, nblk = bounded ? ca_n_blocks(*sh) : 1;
    int* src = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(sh->bank_slots + 2 * sh->window + 1), "key sources");
    for (int b = 0; b < B; b++) {
        size_t r0 = (size_t)b * T;
        for (int j = 0; j < nblk; j++) {
            KeySet_f64 ks;
            const int t0 = bounded ? j * sh->block : 0;
            if (bounded) ga_bounded_keyset(c, b, j, k + r0 * kvd, v + r0 * kvd, &ks, src);
            else keyset_build_f64(&ks, &cfg, NULL, k + r0 * kvd, v + r0 * kvd, 0, T);
            attend_forward_f64(&cfg, &ks, q + (r0 + t0) * qd, qn + (r0 + t0) * qd, ks.nb, as + (r0 + t0) * qd, an + (r0 + t0) * qd);
            keyset_free_f64(&ks);
        }
    }
    AttnWeights_f64 w;
    memset(&w, 0, sizeof(w));
    w.head_norm = hn;
    combine_forward_f64(&w, &cfg, as, an, lam, o, rstd, out, (int)BT);
    // backward
    memset(dhn, 0, sizeof(double) * Dh);
    if (sh->differential && sh->head_norm_full)
        rmsnorm_backward_f64(d_o, dhn, dout, o, hn, rstd, (int)(BT * H), Dh);
    else
        memcpy(d_o, dout, sizeof(double) * n);
    memcpy(dsig, d_o, sizeof(double) * n);
    for (size_t th = 0; th < BT * H; th++) {
        double dl = 0, da = 0;
        for (int e = 0; e < Dh; e++) {
            size_t i = th * Dh + e;
            dnoise[i] = -lam[th] * d_o[i];
            dl -= d_o[i] * an[i];
            da += fabs(d_o[i] * an[i]);
        }
        dlam[th] = sh->differential ? dl * lam[th] * (1 - lam[th]) : 0;
        dlam_abs[th] = sh->differential ? da * lam[th] * (1 - lam[th]) : 0;
    }
    memset(dq, 0, sizeof(double) * n);
    memset(dk, 0, sizeof(double) * BT * kvd);
    memset(dv, 0, sizeof(double) * BT * kvd);
    if (c->nbank) { memset(dbk, 0, sizeof(double) * c->nbank); memset(dbv, 0, sizeof(double) * c->nbank); }
    for (int b = 0; b < B; b++) {
        size_t r0 = (size_t)b * T;
        for (int j = 0; j < nblk; j++) {
            KeySet_f64 ks;
            const int t0 = bounded ? j * sh->block : 0;
            if (bounded) ga_bounded_keyset(c, b, j, k + r0 * kvd, v + r0 * kvd, &ks, src);
            else keyset_build_f64(&ks, &cfg, NULL, k + r0 * kvd, v + r0 * kvd, 0, T);
            size_t nk = (size_t)Hkv * (ks.P + ks.nb) * Dh;
            double* dK = (double*)coda_calloc_or_die(2 * nk, sizeof(double), "reference dK");
            attend_backward_f64(&cfg, &ks, q + (r0 + t0) * qd, qn + (r0 + t0) * qd, ks.nb, dsig + (r0 + t0) * qd, dnoise + (r0 + t0) * qd,
                                dq + (r0 + t0) * qd, dqn + (r0 + t0) * qd, dK, dK + nk);
            if (bounded) ga_bounded_scatter(c, b, j, &ks, src, dK, dK + nk, dk + r0 * kvd, dv + r0 * kvd, dbk, dbv);
            else keyset_scatter_f64(&cfg, &ks, NULL, 0, 0, 0, dK, dK + nk, dk + r0 * kvd, dv + r0 * kvd, NULL, NULL);
            free(dK);
            keyset_free_f64(&ks);
        }
    }
    free(src);
    memset(dtheta, 0, sizeof(double) * H * Dh / 2);
    if (sh->differential) {
        noise_rotate_f64(tmp, dqn, theta, (int)BT, H, Dh, -1);
        for (size_t i = 0; i < n; i++) dq[i] += tmp[i];
        for (size_t t = 0; t < BT; t++)
            for (int h = 0; h < H; h++)
                for (int j = 0; j < Dh / 2; j++) {
                    size_t i = (t * H + h) * Dh + 2 * j;
                    double th = theta[h * (Dh / 2) + j], cs = cos(th), sn = sin(th), x0 = q[i], x1 = q[i + 1];
                    dtheta[h * (Dh / 2) + j] += dqn[i] * (-x0 * sn - x1 * cs) + dqn[i + 1] * (x0 * cs - x1 * sn);
                }
    }
    free(q); free(k); free(v); free(theta); free(hn); free(dout); free(lam); free(buf);
}

// Runs one case on the GPU and the reference; returns the errors (and prints them).
static GaErrors ga_check_case(const GpuContext* ctx, CodaAttnShape sh, uint64_t seed) {
    GaCase c;
    ga_case_init(&c, sh, seed);
    ga_case_run_gpu(&c, ctx, 1);
    const size_t BT = (size_t)sh.B * sh.T, qd = (size_t)sh.H * sh.Dh, kvd = (size_t)sh.Hkv * sh.Dh, nth = (size_t)sh.H * sh.Dh / 2;
    double* ref = (double*)coda_malloc_or_die(sizeof(double) * (2 * BT * qd + 2 * BT * kvd + 2 * BT * sh.H + nth + sh.Dh), "ref");
    double *r_out = ref, *r_dq = r_out + BT * qd, *r_dk = r_dq + BT * qd, *r_dv = r_dk + BT * kvd, *r_dlam = r_dv + BT * kvd;
    double *r_dth = r_dlam + BT * sh.H, *r_dhn = r_dth + nth, *r_dlam_abs = r_dhn + sh.Dh;
    double* r_db = c.nbank ? (double*)coda_malloc_or_die(2 * c.nbank * sizeof(double), "ref dbank") : NULL;
    ga_reference(&c, r_out, r_dq, r_dk, r_dv, r_dlam, r_dth, r_dhn, r_dlam_abs, r_db, r_db ? r_db + c.nbank : NULL);
    float *g_out = ga_download(c.out, BT * qd), *g_dq = ga_download(c.dq, BT * qd), *g_dk = ga_download(c.dk, BT * kvd);
    float *g_dv = ga_download(c.dv, BT * kvd), *g_dlam = ga_download(c.dlam, BT * sh.H);
    float* g_dth = (float*)coda_malloc_or_die(nth * sizeof(float), "dtheta");
    float* g_dhn = (float*)coda_malloc_or_die(sh.Dh * sizeof(float), "dhn");
    cudaCheck(cudaMemcpy(g_dth, c.dtheta, nth * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(g_dhn, c.dhn, sh.Dh * sizeof(float), cudaMemcpyDeviceToHost));
    GaErrors e;
    memset(&e, 0, sizeof(e));
    e.out = ga_rel_l2(g_out, r_out, BT * qd);
    e.dq = ga_rel_l2(g_dq, r_dq, BT * qd);
    e.dk = ga_rel_l2(g_dk, r_dk, BT * kvd);
    e.dv = ga_rel_l2(g_dv, r_dv, BT * kvd);
    if (sh.differential) {
        // dlam is a sum of Dh terms that can cancel almost exactly: with the head norm at T = 1,
        // A_sig == A_noise and the RMSNorm is scale-invariant up to eps, so dlam ~ 1e-5 of its terms.
        // The error is measured against max(||dlam||, 0.01 ||sum of |terms|||): a cancellation floor.
        double nr = 0, na = 0;
        for (size_t i = 0; i < BT * sh.H; i++) { nr += r_dlam[i] * r_dlam[i]; na += r_dlam_abs[i] * r_dlam_abs[i]; }
        nr = sqrt(nr); na = sqrt(na);
        double floor_ = 0.01 * na;
        e.dlam = ga_rel_l2(g_dlam, r_dlam, BT * sh.H) * (nr > 0 ? nr : 1.0) / (nr > floor_ ? nr : (floor_ > 0 ? floor_ : 1.0));
        e.dtheta = ga_rel_l2(g_dth, r_dth, nth);
        if (sh.head_norm_full) e.dhn = ga_rel_l2(g_dhn, r_dhn, sh.Dh);
    }
    if (c.nbank) {  // bank slot gradients, k and v together
        float* g_db = (float*)coda_malloc_or_die(2 * c.nbank * sizeof(float), "dbank");
        cudaCheck(cudaMemcpy(g_db, c.dbank_k, c.nbank * sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(g_db + c.nbank, c.dbank_v, c.nbank * sizeof(float), cudaMemcpyDeviceToHost));
        e.dbank = ga_rel_l2(g_db, r_db, 2 * c.nbank);
        free(g_db);
        free(r_db);
    }
    printf("    B=%d T=%-4d H=%d Hkv=%d Dh=%-3d diff=%d norm=%d", sh.B, sh.T, sh.H, sh.Hkv, sh.Dh, sh.differential, sh.head_norm_full);
    if (sh.block) printf(" S=%d W=%d Mb=%d%s%s", sh.block, sh.window, sh.bank_slots, sh.unmasked_memory ? " unmasked" : "", sh.grad_cut ? " cut" : "");
    printf("  rel err: out %.2e dq %.2e dk %.2e dv %.2e dlam %.2e dtheta %.2e dhn %.2e", e.out, e.dq, e.dk, e.dv, e.dlam, e.dtheta, e.dhn);
    if (c.nbank) printf(" dbank %.2e", e.dbank);
    printf("\n");
    free(ref); free(g_out); free(g_dq); free(g_dk); free(g_dv); free(g_dlam); free(g_dth); free(g_dhn);
    ga_case_free(&c);
    return e;
}

static double ga_attn_tol(void) { return ga_is_bf16 ? 2e-2 : 2e-5; }

static void ga_check_errors(const GaErrors* e, double tol, double* worst) {
    const double v[8] = {e->out, e->dq, e->dk, e->dv, e->dlam, e->dtheta, e->dhn, e->dbank};
    const char* names[8] = {"out", "dq", "dk", "dv", "dlam_logit", "dtheta", "dhead_norm", "dbank"};
    for (int i = 0; i < 8; i++) {
        CHECK(v[i] <= tol, "%s rel err %.3g > tol %.3g", names[i], v[i], tol);
        if (worst && v[i] > worst[i]) worst[i] = v[i];
    }
}

static void ga_run_grid(int differential, int head_norm_full, CodaAttnImpl impl) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    const int Ts[4] = {1, 17, 64, 300}, Gs[2] = {1, 4}, Dhs[2] = {64, 128};
    double worst[8] = {0};
    uint64_t seed = 1234 + 17 * differential + 5 * head_norm_full;
    CodaAttnShape probe = {1, 1, 1, 1, 64, 0, 0, 0.f, impl};
    for (int ti = 0; ti < 4; ti++)
        for (int gi = 0; gi < 2; gi++)
            for (int di = 0; di < 2; di++) {
                CodaAttnShape sh = {2, Ts[ti], 2 * Gs[gi], 2, Dhs[di], differential, head_norm_full, 1e-6f, impl};
                GaErrors e = ga_check_case(&ctx, sh, seed++);
                ga_check_errors(&e, ga_attn_tol(), worst);
            }
    printf("    %s %s worst rel err (tol %.1e): out %.2e dq %.2e dk %.2e dv %.2e dlam %.2e dtheta %.2e dhn %.2e\n", PRECISION_NAME,
           ca_impl_name(&probe), ga_attn_tol(), worst[0], worst[1], worst[2], worst[3], worst[4], worst[5], worst[6]);
    gpu_context_free(&ctx);
}

// AUTO = the kernels the trainer runs (tensor cores in the BF16 build, FMA in the FP32 build).
GPU_TEST(kattn_gqa_vs_cpu_reference) { ga_run_grid(0, 0, CA_IMPL_AUTO); }
GPU_TEST(kattn_coda_headnorm_vs_cpu_reference) { ga_run_grid(1, 1, CA_IMPL_AUTO); }
GPU_TEST(kattn_coda_identity_vs_cpu_reference) { ga_run_grid(1, 0, CA_IMPL_AUTO); }
// The BF16 build also keeps the fp32-FMA kernels checked (the benchmarks' baseline; FP32 build: same as AUTO).
GPU_TEST(kattn_fma_coda_headnorm_vs_cpu_reference) { ga_run_grid(1, 1, CA_IMPL_FMA); }
GPU_TEST(kattn_fma_gqa_vs_cpu_reference) { ga_run_grid(0, 0, CA_IMPL_FMA); }
// ... and the mma.sync kernels, which AUTO replaces by wgmma on Hopper (the tensor-core path of other GPUs).
GPU_TEST(kattn_mma_coda_headnorm_vs_cpu_reference) {
    if (sizeof(floatX) != 2) { test_skip("the tensor-core kernels exist in the BF16 build only"); return; }
    ga_run_grid(1, 1, CA_IMPL_MMA);
}
GPU_TEST(kattn_mma_gqa_vs_cpu_reference) {
    if (sizeof(floatX) != 2) { test_skip("the tensor-core kernels exist in the BF16 build only"); return; }
    ga_run_grid(0, 0, CA_IMPL_MMA);
}

// Bounded key sets (docs/spec.md §2.3, scan-then-attend): each case against the CPU reference's block loop
// over the same bank. The grid covers W < S, W > S, W not a multiple of S, W = 1, S > T, S < the
// query tile (64), T not a multiple of S, a bank of 0 / 24 / 128 / 130 slots (a partial 64-slot
// tile; block 0's bank is empty, some blocks have a fully hidden first tile), unused memory
// attended, the gradient cut between blocks, GQA and CoDA with and without head norm, both head dims.
static void ga_run_bounded_grid(CodaAttnImpl impl) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    struct { int B, T, H, Hkv, Dh, diff, norm, S, W, Mb, unmasked, cut; } cases[] = {
        {2, 300, 4, 2, 64, 1, 1, 64, 50, 24, 0, 0},    {2, 300, 8, 2, 128, 1, 0, 100, 200, 128, 0, 0},
        {2, 200, 4, 2, 64, 1, 1, 256, 64, 128, 0, 0},  {2, 257, 4, 2, 128, 0, 0, 128, 1, 0, 0, 0},
        {2, 300, 4, 2, 64, 1, 0, 64, 64, 130, 1, 0},   {2, 300, 4, 2, 128, 1, 1, 64, 100, 24, 0, 1},
        {1, 1, 4, 2, 64, 1, 1, 64, 16, 24, 0, 0},      {2, 300, 8, 2, 128, 0, 0, 32, 16, 64, 0, 0},
        {1, 333, 4, 4, 64, 1, 1, 96, 40, 64, 1, 1},
    };
    double worst[8] = {0};
    uint64_t seed = 4321;
    CodaAttnShape probe = {1, 1, 1, 1, 64, 0, 0, 0.f, impl};
    for (const auto& k : cases) {
        CodaAttnShape sh = {k.B, k.T, k.H, k.Hkv, k.Dh, k.diff, k.norm, 1e-6f, impl, k.S, k.W, k.Mb, k.unmasked, k.cut};
        GaErrors e = ga_check_case(&ctx, sh, seed++);
        ga_check_errors(&e, ga_attn_tol(), worst);
    }
    printf("    %s %s bounded worst rel err (tol %.1e): out %.2e dq %.2e dk %.2e dv %.2e dlam %.2e dtheta %.2e dhn %.2e dbank %.2e\n",
           PRECISION_NAME, ca_impl_name(&probe), ga_attn_tol(), worst[0], worst[1], worst[2], worst[3], worst[4], worst[5], worst[6],
           worst[7]);
    gpu_context_free(&ctx);
}
GPU_TEST(kattn_bounded_vs_cpu_reference) { ga_run_bounded_grid(CA_IMPL_AUTO); }
GPU_TEST(kattn_fma_bounded_vs_cpu_reference) { ga_run_bounded_grid(CA_IMPL_FMA); }
GPU_TEST(kattn_mma_bounded_vs_cpu_reference) {
    if (sizeof(floatX) != 2) { test_skip("the tensor-core kernels exist in the BF16 build only"); return; }
    ga_run_bounded_grid(CA_IMPL_MMA);
}

// The outputs and gradients of two runs of the same shape, byte for byte (the tensors both key sets
// have: out, the two streams' A, lse, dq, dk, dv).
static void ga_expect_same_bits(const GaCase* a, const GaCase* b, const char* what) {
    const CodaAttnShape& u = a->sh;
    const size_t BT = (size_t)u.B * u.T, qd = (size_t)u.H * u.Dh, kvd = (size_t)u.Hkv * u.Dh;
    struct { const void *x, *y; size_t bytes; const char* name; } outs[] = {
        {a->out, b->out, BT * qd * sizeof(floatX), "out"}, {a->a_sig, b->a_sig, BT * qd * sizeof(floatX), "a_sig"},
        {a->a_noise, b->a_noise, u.differential ? BT * qd * sizeof(floatX) : 0, "a_noise"},
        {a->lse, b->lse, 2 * BT * u.H * sizeof(float), "lse"}, {a->dq, b->dq, BT * qd * sizeof(floatX), "dq"},
        {a->dk, b->dk, BT * kvd * sizeof(floatX), "dk"}, {a->dv, b->dv, BT * kvd * sizeof(floatX), "dv"}};
    for (const auto& o : outs) {
        if (o.bytes == 0) continue;
        unsigned char* x = (unsigned char*)coda_malloc_or_die(o.bytes, "x");
        unsigned char* y = (unsigned char*)coda_malloc_or_die(o.bytes, "y");
        cudaCheck(cudaMemcpy(x, o.x, o.bytes, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(y, o.y, o.bytes, cudaMemcpyDeviceToHost));
        CHECK(memcmp(x, y, o.bytes) == 0, "%s: %s differs", what, o.name);
        free(x); free(y);
    }
}

// Two cases drawn from the same seed (the same inputs), a with a_sh and b with b_sh, run forward and
// backward: the same bits (what names the pair in a failure).
static void ga_expect_runs_same_bits(const GpuContext* ctx, const CodaAttnShape& a_sh, const CodaAttnShape& b_sh, uint64_t seed,
                                     const char* what) {
    GaCase a, b;
    ga_case_init(&a, a_sh, seed);
    ga_case_init(&b, b_sh, seed);
    ga_case_run_gpu(&a, ctx, 1);
    ga_case_run_gpu(&b, ctx, 1);
    ga_expect_same_bits(&a, &b, what);
    ga_case_free(&a);
    ga_case_free(&b);
}

// The warp-specialized forward (coda_attention_ws.cuh; CA_IMPL_WS, the wgmma backward), where the build
// and the device have sm_90a: against the CPU reference, and bitwise the wgmma kernel's outputs.
#ifdef CA_WS_BK_CAUSAL
static const int ga_ws_bk_causal = CA_WS_BK_CAUSAL;
#else
static const int ga_ws_bk_causal = 64;  // the FP32 build has no tensor-core kernels (the tests skip)
#endif
static int ga_skip_without_wgmma(void) {
#if defined(ENABLE_FP32)
    test_skip("the tensor-core kernels exist in the BF16 build only");
    return 1;
#else
    if (!ca_wgmma_available()) { test_skip("no sm_90a device or code: the wgmma kernels cannot run"); return 1; }
    return 0;
#endif
}
GPU_TEST(kattn_ws_coda_headnorm_vs_cpu_reference) { if (!ga_skip_without_wgmma()) ga_run_grid(1, 1, CA_IMPL_WS); }
GPU_TEST(kattn_ws_gqa_vs_cpu_reference) { if (!ga_skip_without_wgmma()) ga_run_grid(0, 0, CA_IMPL_WS); }
GPU_TEST(kattn_ws_bounded_vs_cpu_reference) { if (!ga_skip_without_wgmma()) ga_run_bounded_grid(CA_IMPL_WS); }
GPU_TEST(kattn_ws_forward_bitwise_wgmma_or_itself) {
    if (ga_skip_without_wgmma()) return;
    GpuContext ctx;
    gpu_context_init(&ctx);
    // causal CoDA + head norm (T not a multiple of 64, G 4, more key tiles than stages); GQA; one key
    // tile; bounded with a partial bank tile; a continued forward's carried-in ring is covered by the
    // model tests (CA_IMPL_AUTO)
    struct { int B, T, H, Hkv, Dh, diff, norm, S, W, Mb; } cases[] = {
        {2, 700, 8, 2, 128, 1, 1, 0, 0, 0}, {1, 333, 4, 2, 64, 0, 0, 0, 0, 0}, {2, 40, 4, 4, 128, 1, 0, 0, 0, 0},
        {2, 600, 8, 2, 128, 1, 1, 256, 256, 130}, {1, 300, 4, 2, 64, 1, 0, 64, 50, 24}};
    for (const auto& k : cases) {
        // the same key tiles as the wgmma kernel (64): the same bits; causal tiles of 128 (CA_WS_BK_CAUSAL)
        // rescale every 128 keys, so there the reference is a second warp-specialized run (two runs, the same bits)
        const bool same_tiles = k.S > 0 || ga_ws_bk_causal == 64;
        CodaAttnShape a_sh = {k.B, k.T, k.H, k.Hkv, k.Dh, k.diff, k.norm, 1e-6f, same_tiles ? CA_IMPL_WGMMA : CA_IMPL_WS, k.S, k.W, k.Mb};
        CodaAttnShape b_sh = a_sh;
        b_sh.impl = CA_IMPL_WS;
        char what[96];
        snprintf(what, sizeof what, "T %d Dh %d %s%s: warp-specialized vs %s", k.T, k.Dh, k.diff ? "CoDA" : "GQA",
                 k.S ? " bounded" : "", same_tiles ? "wgmma" : "a second warp-specialized run");
        ga_expect_runs_same_bits(&ctx, a_sh, b_sh, 2024, what);
    }
    gpu_context_free(&ctx);
}

// The one-pass backward (coda_attention_fused_bwd.cuh; CA_IMPL_FUSED: causal key sets at Dh 128, the
// wgmma backward for Dh 64): against the CPU reference (T = 300 has three key blocks of 128, so the
// ordered dq additions of several blocks are in it), and two runs with many key blocks per head and
// more blocks than the device runs at once give the same bits (the order of the additions is fixed);
// the last case has one head of 133 key blocks, more than an H100/H200 holds at once, so blocks wait for
// blocks that started in an earlier wave (a deadlock there would hang the test).
GPU_TEST(kattn_fused_coda_headnorm_vs_cpu_reference) { if (!ga_skip_without_wgmma()) ga_run_grid(1, 1, CA_IMPL_FUSED); }
GPU_TEST(kattn_fused_coda_identity_vs_cpu_reference) { if (!ga_skip_without_wgmma()) ga_run_grid(1, 0, CA_IMPL_FUSED); }
GPU_TEST(kattn_fused_gqa_vs_cpu_reference) { if (!ga_skip_without_wgmma()) ga_run_grid(0, 0, CA_IMPL_FUSED); }
GPU_TEST(kattn_fused_backward_two_runs_same_bits) {
    if (ga_skip_without_wgmma()) return;
    GpuContext ctx;
    gpu_context_init(&ctx);
    struct { int B, T, H, Hkv, diff, norm; } cases[] = {{2, 2100, 16, 4, 1, 1}, {1, 4000, 32, 8, 0, 0}, {1, 17000, 1, 1, 1, 1}};
    for (const auto& k : cases) {
        CodaAttnShape sh = {k.B, k.T, k.H, k.Hkv, 128, k.diff, k.norm, 1e-6f, CA_IMPL_FUSED};
        char what[80];
        snprintf(what, sizeof what, "T %d H %d %s: two one-pass backward runs", k.T, k.H, k.diff ? "CoDA" : "GQA");
        ga_expect_runs_same_bits(&ctx, sh, sh, 555, what);
    }
    gpu_context_free(&ctx);
}

// The one-pass backward's dQ staging layout, on the CPU (no GPU needed): the stacked form's hand-laid
// store addresses (ca_fb_stk_*) put every dQ element where ca_fb_swz, which the finishing kernel reads
// dq_acc with, says, each (row, column pair) exactly once; a pair's two columns stay adjacent; and each
// store instruction is conflict-free: a half-warp's 16 float2 stores (the unit a 64-bit shared store is
// served in) hit 32 different banks, and for the per-stream form (GQA) a warp's 32 scalar stores do.
#if !defined(ENABLE_FP32)  // (the tensor-core kernels exist in the BF16 build only)
TEST(fb_staging_stores_follow_the_swizzle) {
    const int BQ = CA_FB_BQ, DH = 128, HK = 64;
#if CA_FB_DQ_STACKED  // (an A/B build without the stacked form has only the per-stream stores)
    std::vector<int> hits(2 * BQ * DH, 0);
    std::vector<float> hits_f(2 * BQ * DH);  // a tile to point into
    int bad_place = 0, bad_pair = 0, bad_banks = 0;
    for (int w = 0; w < 2; w++)
        for (int wi = 0; wi < 4; wi++)
            for (int j = 0; j < 8; j++)
                for (int hr = 0; hr < 2; hr++)
                    for (int half = 0; half < 2; half++) {  // one store instruction, one half-warp
                        uint32_t banks = 0;
                        int words = 0;
                        for (int g = 4 * half; g < 4 * half + 4; g++)
                            for (int tq = 0; tq < 4; tq++) {
                                const int off = (int)(ca_fb_stk_pairp(ca_fb_stk_groupp(ca_fb_stk_rowp(hits_f.data(), wi, w, g, tq), g, j & 3),
                                                                      j >> 2, hr) - hits_f.data());
                                const int row = (wi >> 1) * BQ + 16 * (wi & 1) + g + 8 * hr, qr = row % BQ, col = w * HK + 8 * j + 2 * tq;
                                bad_place += off != row * DH + ca_fb_swz<2>(qr, col);
                                bad_pair += ca_fb_swz<2>(qr, col + 1) != ca_fb_swz<2>(qr, col) + 1;
                                for (int e = 0; e < 2; e++) {
                                    hits[off + e]++;
                                    banks |= 1u << ((off + e) % 32);
                                    words++;
                                }
                            }
                        bad_banks += words != 32 || banks != 0xffffffffu;
                    }
    int not_once = 0;
    for (int h : hits) not_once += h != 1;
    CHECK(bad_place == 0, "%d stacked stores off ca_fb_swz<2>'s place", bad_place);
    CHECK(bad_pair == 0, "%d column pairs split by the swizzle", bad_pair);
    CHECK(not_once == 0, "%d staging elements not written exactly once", not_once);
    CHECK(bad_banks == 0, "%d half-warp stores with a bank conflict", bad_banks);
#endif
    // per-stream form (one stream): lane 4g + tq stores column 64w + 16wi + g (+8) of query row 8j + 2tq (+1)
    int bad_scalar = 0;
    for (int w = 0; w < 2; w++)
        for (int wi = 0; wi < 4; wi++)
            for (int j = 0; j < BQ / 8; j++)
                for (int e = 0; e < 4; e++) {
                    uint32_t banks = 0;
                    for (int g = 0; g < 8; g++)
                        for (int tq = 0; tq < 4; tq++) {
                            const int r = 8 * j + 2 * tq + (e & 1), c = w * HK + 16 * wi + g + 8 * (e >> 1);
                            banks |= 1u << ((r * DH + ca_fb_swz<1>(r, c)) % 32);
                        }
                    bad_scalar += banks != 0xffffffffu;
                }
    CHECK(bad_scalar == 0, "%d per-stream store instructions with a bank conflict", bad_scalar);
}

// The one-pass backward's launch order (ca_fb_block_coords), on the CPU: every (head, key block) is one
// block index; a head's block n comes after its block n - 1 (the ordered dq additions wait only for
// earlier blocks: no deadlock); within a group of heads the heavy blocks (small n) come first; and a
// group holds CA_FB_GROUP_ROWS / T heads (at least one, the last may be smaller).
TEST(fb_blocks_launch_heaviest_first_in_head_groups) {
    struct { int T, BH; } cases[] = {{2048, 32}, {8192, 32}, {300, 3}, {2100, 32}, {17000, 1}, {4000, 96}, {640, 7}, {100000, 2}};
    for (const auto& c : cases) {
        const int nkb = ca_fb_nkb(c.T), total = nkb * c.BH, G = std::max(1, std::min(c.BH, CA_FB_GROUP_ROWS / c.T));
        std::vector<int> idx_of(total, -1);
        int bad_range = 0, bad_group = 0, bad_heavy = 0, prev_n = 0, prev_group = 0;
        for (int i = 0; i < total; i++) {
            int n = -1, bh = -1;
            ca_fb_block_coords(i, c.T, c.BH, &n, &bh);
            if (n < 0 || n >= nkb || bh < 0 || bh >= c.BH || idx_of[(size_t)bh * nkb + n] >= 0) { bad_range++; continue; }
            idx_of[(size_t)bh * nkb + n] = i;
            const int group = bh / G;
            bad_group += group < prev_group;                    // groups one after the other
            bad_heavy += group == prev_group && n < prev_n;     // within a group, n never decreases
            prev_n = group == prev_group ? n : 0;
            prev_group = group;
        }
        int bad_order = 0, unseen = 0;
        for (int bh = 0; bh < c.BH; bh++)
            for (int n = 0; n < nkb; n++) {
                unseen += idx_of[(size_t)bh * nkb + n] < 0;
                bad_order += n > 0 && idx_of[(size_t)bh * nkb + n] <= idx_of[(size_t)bh * nkb + n - 1];
            }
        CHECK(bad_range == 0 && unseen == 0, "T %d, %d heads: %d indices out of range or repeated, %d blocks never launched", c.T, c.BH,
              bad_range, unseen);
        CHECK(bad_order == 0, "T %d, %d heads: %d blocks launched before the block they wait for", c.T, c.BH, bad_order);
        CHECK(bad_group == 0 && bad_heavy == 0, "T %d, %d heads: %d group and %d heaviest-first violations", c.T, c.BH, bad_group, bad_heavy);
    }
    int n, bh;  // T = 2048: groups of 8 heads, so block 9 is key block 1 of head 1
    ca_fb_block_coords(9, 2048, 32, &n, &bh);
    CHECK(n == 1 && bh == 1, "T 2048: block 9 is (n %d, head %d), expected (1, 1)", n, bh);
    ca_fb_block_coords(16 * 8, 2048, 32, &n, &bh);  // the second group's first block
    CHECK(n == 0 && bh == 8, "T 2048: block 128 is (n %d, head %d), expected (0, 8)", n, bh);
}
#endif

// A bounded key set whose block covers the whole sequence and whose bank is never attended (block 0
// sees an empty bank) is the unbounded causal attention: the two launches give the same bits, on the
// kernels that serve both key sets (the one-pass backward, AUTO's for CoDA beyond 4096 tokens, adds
// dq in another order: not these).
static CodaAttnImpl ga_two_pass_impl(void) {
#if defined(ENABLE_FP32)
    return CA_IMPL_AUTO;
#else
    return ca_wgmma_available() ? CA_IMPL_WS : CA_IMPL_AUTO;
#endif
}
GPU_TEST(kattn_bounded_single_block_equals_unbounded) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    for (int dh = 64; dh <= 128; dh += 64) {
        CodaAttnShape u = {2, 200, 8, 2, dh, 1, 1, 1e-6f, ga_two_pass_impl()};
        CodaAttnShape bnd = u;
        bnd.block = 256; bnd.window = 64; bnd.bank_slots = 24;
        char what[64];
        snprintf(what, sizeof what, "Dh %d, a one-block bounded launch vs the unbounded one", dh);
        ga_expect_runs_same_bits(&ctx, u, bnd, 77, what);  // same seed: the same q/k/v/... (the bank is drawn after them)
    }
    gpu_context_free(&ctx);
}

// Two runs on the same inputs give the same bits (no atomics); a second backward doubles the
// accumulated dtheta / dhead_norm exactly (they are +=).
GPU_TEST(kattn_deterministic_and_accumulating) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    CodaAttnShape sh = {2, 300, 8, 2, 128, 1, 1, 1e-6f};
    GaCase c;
    ga_case_init(&c, sh, 99);
    const size_t BT = (size_t)sh.B * sh.T, qd = (size_t)sh.H * sh.Dh, kvd = (size_t)sh.Hkv * sh.Dh, nth = (size_t)sh.H * sh.Dh / 2;
    struct { void* p; size_t bytes; } outs[] = {
        {c.out, BT * qd * sizeof(floatX)}, {c.a_sig, BT * qd * sizeof(floatX)}, {c.a_noise, BT * qd * sizeof(floatX)},
        {c.lse, 2 * BT * sh.H * sizeof(float)}, {c.hn_rstd, BT * sh.H * sizeof(float)}, {c.dq, BT * qd * sizeof(floatX)},
        {c.dk, BT * kvd * sizeof(floatX)}, {c.dv, BT * kvd * sizeof(floatX)}, {c.dlam, BT * sh.H * sizeof(floatX)},
        {c.dtheta, nth * sizeof(float)}, {c.dhn, sh.Dh * sizeof(float)}};
    const int nout = sizeof(outs) / sizeof(outs[0]);
    unsigned char* first[16];
    ga_case_run_gpu(&c, &ctx, 1);
    for (int i = 0; i < nout; i++) {
        first[i] = (unsigned char*)coda_malloc_or_die(outs[i].bytes, "first run");
        cudaCheck(cudaMemcpy(first[i], outs[i].p, outs[i].bytes, cudaMemcpyDeviceToHost));
    }
    ga_case_run_gpu(&c, &ctx, 1);
    for (int i = 0; i < nout; i++) {
        unsigned char* again = (unsigned char*)coda_malloc_or_die(outs[i].bytes, "second run");
        cudaCheck(cudaMemcpy(again, outs[i].p, outs[i].bytes, cudaMemcpyDeviceToHost));
        CHECK(memcmp(first[i], again, outs[i].bytes) == 0, "output %d differs between two identical runs", i);
        free(again);
    }
    // accumulate: run again without zeroing dtheta/dhead_norm
    ga_case_run_gpu(&c, &ctx, 0);
    float* th1 = (float*)first[9];
    float* hn1 = (float*)first[10];
    float* th2 = (float*)coda_malloc_or_die(nth * sizeof(float), "dtheta");
    float* hn2 = (float*)coda_malloc_or_die(sh.Dh * sizeof(float), "dhn");
    cudaCheck(cudaMemcpy(th2, c.dtheta, nth * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(hn2, c.dhn, sh.Dh * sizeof(float), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (size_t i = 0; i < nth; i++) bad += th2[i] != 2 * th1[i];
    for (int i = 0; i < sh.Dh; i++) bad += hn2[i] != 2 * hn1[i];
    CHECK(bad == 0, "%d accumulated gradients are not exactly doubled", bad);
    for (int i = 0; i < nout; i++) free(first[i]);
    free(th2); free(hn2);
    ga_case_free(&c);
    gpu_context_free(&ctx);
}

// ---------------------------------------------------------------------------------------------
// classifier

// Checks losses, dlogits (in place), ignored rows and the deterministic loss sum for n rows of V.
static void gce_check(const GpuContext* ctx, int n, int V, uint64_t seed, double* worst_loss, double* worst_dlogits) {
    uint64_t s = seed;
    size_t nv = (size_t)n * V;
    float* logits = (float*)coda_malloc_or_die(nv * sizeof(float), "logits");
    ga_fill(logits, nv, &s, -8.f, 8.f);
    int* targets = (int*)coda_malloc_or_die(n * sizeof(int), "targets");
    for (int r = 0; r < n; r++) targets[r] = (r % 3 == 1) ? -1 : (int)(ga_rng_next(&s) % (uint64_t)V);
    targets[0] = V - 1;  // last column
    double* l64 = ga_to_f64(logits, nv);
    double* rl = (double*)coda_calloc_or_die(n, sizeof(double), "ref losses");
    double* rd = (double*)coda_calloc_or_die(nv, sizeof(double), "ref dlogits");
    const float scale = 1.0f / 37.0f;
    crossentropy_forward_f64(rl, l64, targets, n, V);
    crossentropy_backward_f64(rd, l64, targets, n, V, (double)scale);
    floatX* d_logits = ga_upload(logits, nv);
    float* d_losses = (float*)cuda_malloc_or_die(n * sizeof(float), "losses");
    int* d_targets = (int*)cuda_malloc_or_die(n * sizeof(int), "targets");
    float* d_sum = (float*)cuda_malloc_or_die(sizeof(float), "loss sum");
    cudaCheck(cudaMemcpy(d_targets, targets, n * sizeof(int), cudaMemcpyHostToDevice));
    // forward only: logits untouched
    cudaCheck(cudaMemset(d_losses, 0xFF, n * sizeof(float)));
    crossentropy_fused(ctx, d_logits, d_losses, d_targets, n, V, 0.0f);
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    float* back = ga_download(d_logits, nv);
    CHECK(memcmp(back, logits, nv * sizeof(float)) == 0, "dloss_scale == 0 must leave the logits untouched");
    free(back);
    float* gl0 = (float*)coda_malloc_or_die(n * sizeof(float), "losses");
    cudaCheck(cudaMemcpy(gl0, d_losses, n * sizeof(float), cudaMemcpyDeviceToHost));
    // forward + backward in place
    cudaCheck(cudaMemset(d_losses, 0xFF, n * sizeof(float)));
    crossentropy_fused(ctx, d_logits, d_losses, d_targets, n, V, scale);
    sum_losses(ctx, d_sum, d_losses, n);
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    float* gl = (float*)coda_malloc_or_die(n * sizeof(float), "losses");
    cudaCheck(cudaMemcpy(gl, d_losses, n * sizeof(float), cudaMemcpyDeviceToHost));
    float gsum = 0;
    cudaCheck(cudaMemcpy(&gsum, d_sum, sizeof(float), cudaMemcpyDeviceToHost));
    float* gd = ga_download(d_logits, nv);
    CHECK(memcmp(gl, gl0, n * sizeof(float)) == 0, "losses with and without the backward differ");
    double el = ga_rel_l2(gl, rl, n), ed = ga_rel_l2(gd, rd, nv), rsum = 0;
    for (int r = 0; r < n; r++) rsum += rl[r];
    int bad_ignored = 0;
    for (int r = 0; r < n; r++) {
        if (targets[r] >= 0) continue;
        bad_ignored += gl[r] != 0.0f;
        for (int i = 0; i < V; i++) bad_ignored += gd[(size_t)r * V + i] != 0.0f;
    }
    const double tol_l = 1e-5, tol_d = ga_is_bf16 ? 1e-2 : 1e-5;
    CHECK(el <= tol_l, "n=%d V=%d loss rel err %.3g", n, V, el);
    CHECK(ed <= tol_d, "n=%d V=%d dlogits rel err %.3g", n, V, ed);
    CHECK(bad_ignored == 0, "%d nonzero values in ignored rows", bad_ignored);
    CHECK_CLOSE(gsum, rsum, 1e-4, 1e-5);
    printf("    n=%d V=%-6d rel err: losses %.2e dlogits %.2e  loss sum %.6f vs %.6f\n", n, V, el, ed, gsum, rsum);
    if (el > *worst_loss) *worst_loss = el;
    if (ed > *worst_dlogits) *worst_dlogits = ed;
    free(logits); free(targets); free(l64); free(rl); free(rd); free(gl0); free(gl); free(gd);
    cudaCheck(cudaFree(d_logits)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_targets)); cudaCheck(cudaFree(d_sum));
}

GPU_TEST(kce_fused_crossentropy_vs_cpu_reference) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    double wl = 0, wd = 0;
    gce_check(&ctx, 7, 32000, 11, &wl, &wd);
    gce_check(&ctx, 5, 32768, 12, &wl, &wd);
    gce_check(&ctx, 6, 1001, 13, &wl, &wd);
    gce_check(&ctx, 4, 50257, 14, &wl, &wd);
    gce_check(&ctx, 3, 7, 15, &wl, &wd);
    printf("    %s worst rel err: losses %.2e dlogits %.2e\n", PRECISION_NAME, wl, wd);
    gpu_context_free(&ctx);
}

GPU_TEST(kce_deterministic) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    const int n = 64, V = 32000;
    uint64_t s = 77;
    float* logits = (float*)coda_malloc_or_die((size_t)n * V * sizeof(float), "logits");
    ga_fill(logits, (size_t)n * V, &s, -8.f, 8.f);
    int* targets = (int*)coda_malloc_or_die(n * sizeof(int), "targets");
    for (int r = 0; r < n; r++) targets[r] = (int)(ga_rng_next(&s) % V);
    int* d_targets = (int*)cuda_malloc_or_die(n * sizeof(int), "targets");
    cudaCheck(cudaMemcpy(d_targets, targets, n * sizeof(int), cudaMemcpyHostToDevice));
    float* d_losses = (float*)cuda_malloc_or_die(n * sizeof(float), "losses");
    float* d_sum = (float*)cuda_malloc_or_die(sizeof(float), "sum");
    float *res[2], sums[2];
    for (int run = 0; run < 2; run++) {
        floatX* d_logits = ga_upload(logits, (size_t)n * V);
        crossentropy_fused(&ctx, d_logits, d_losses, d_targets, n, V, 0.5f);
        sum_losses(&ctx, d_sum, d_losses, n);
        cudaCheck(cudaStreamSynchronize(ctx.stream));
        res[run] = ga_download(d_logits, (size_t)n * V);
        cudaCheck(cudaMemcpy(&sums[run], d_sum, sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaFree(d_logits));
    }
    CHECK(memcmp(res[0], res[1], (size_t)n * V * sizeof(float)) == 0, "dlogits differ between runs");
    CHECK(memcmp(&sums[0], &sums[1], sizeof(float)) == 0, "loss sums differ between runs");
    free(res[0]); free(res[1]); free(logits); free(targets);
    cudaCheck(cudaFree(d_targets)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_sum));
    gpu_context_free(&ctx);
}
