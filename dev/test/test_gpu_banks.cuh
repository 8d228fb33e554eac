// test_gpu_banks.cuh — GPU tests of llmc/bank_scan.cuh (the bounded state's bank scan, forward and
// reverse) against the CPU reference, included by test_coda.cu (and by dev/cuda/bank_scan.cu for its
// CPU check).
//
// Forward oracle: llmc/cpu/banks.h's bank_write_block, block by block per batch row from a fresh state
// (zeros, or the inference init's random contents), as attn_row_forward runs it: the state before
// each write is the snapshot that block attends to, each write's WriteLog its summary record.
// Checked exactly, in both builds: every decision (candidate tokens and their order, routes, weights,
// slot totals, active/new flags, exact-slot sources, allowed flags). The GPU's live state is fp32 and
// forms every number as the CPU does, so on the same (floatX-valued) inputs it IS the CPU's state;
// snapshot contents are compared within 1e-6 relative in FP32 (expected: exact) and within bf16
// rounding in BF16 (the snapshots are floatX), the live state after the last write (scratch) within
// 1e-6 relative in both builds.
// Backward oracle: the CPU's summary_write_backward and keyset_scatter (restricted to the bank slots of
// the key set: the allowed ones, or all without mask_unused_memory), block by block in reverse as
// attn_backward runs them, on random slot gradients and random prior accumulator contents (the GPU
// accumulates); dk, dv, dgate, deta compared as relative L2 error of the increments.
// Every case asserts that it exercised what it is in the grid for (GbCase.need, counted on the CPU run).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "../../llmc/bank_scan.cuh"
#include "../../llmc/cpu/reference.h"
#include "harness.h"

static const int gb_is_bf16 = sizeof(floatX) == 2;

static uint64_t gb_next(uint64_t* s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float gb_uniform(uint64_t* s, float lo, float hi) { return lo + (hi - lo) * (float)((gb_next(s) >> 40) * (1.0 / 16777216.0)); }
static float gb_fx(float x) { return gb_is_bf16 ? round_bf16(x) : x; }  // a value floatX holds exactly

// ---------------------------------------------------------------------------------------------
// The case grid

// U(0,1); all sigmoid(-2) (init); {0.04, 0.3, 0.7}; U(0, 2e-7) with both gate thresholds 0 (slot totals
// below the 1e-6 clamp of docs/spec.md §3.4)
enum { GB_GATES_UNIFORM = 0, GB_GATES_EQUAL, GB_GATES_LEVELS, GB_GATES_TINY };
enum { GB_VALUES_RANDOM = 0, GB_VALUES_REPEAT };                  // U(-1,1); repeats and near-repeats of 5 prototypes

// What a case must exercise (counted on the CPU run), one bit each.
enum {
    GB_EVICT = 1 << 0,    // a write evicted tokens
    GB_INSERT = 1 << 1,   // an exact slot received a token
    GB_REPLACE = 1 << 2,  // ... replacing another one (LRU victim of a full bank, or refresh)
    GB_TOUCH = 1 << 3,    // an exact slot's LRU stamp moved without a write (kept hit / "between" token)
    GB_HIT = 1 << 4,      // a kept exact candidate scored >= exact_match_threshold against a used slot
    GB_BETWEEN = 1 << 5,  // ... novelty <= score < match
    GB_EMA = 1 << 6,      // a summary slot was blended (used before, eta < 1)
    GB_NEW = 1 << 7,      // a summary slot was filled for the first time (eta = 1)
    GB_DROP = 1 << 8,     // a summary candidate had weight 0 (gate below the summary threshold)
    GB_TIE = 1 << 9,      // gates tied at the candidate cut (the T-th largest evicted gate occurs twice)
    GB_ORDER = 1 << 10,   // the two candidate orders give different lists
    GB_CLAMP = 1 << 11,   // an active summary slot's total weight was below 1e-6 (clamped)
    GB_N_NEED = 12
};
static const char* gb_need_name[GB_N_NEED] = {"evictions", "exact inserts", "exact replacements", "exact touches",
                                              "exact hits", "'between' tokens", "summary EMA updates", "new summary slots",
                                              "weight-0 summary candidates", "gate ties at the cut", "order differences",
                                              "clamped slot totals"};

typedef struct {
    const char* name;
    int B, T, S, W, Me, Ms, Hkv, Dh, te, ts;  // te/ts: exact/summary candidates per block
    int gates, values;
    CandidateOrder order;
    int policy_none, refresh, mask_off, init_random, no_overwrite;
    unsigned need;
} GbCase;

#define GB_BASE_NEED (GB_EVICT | GB_INSERT | GB_REPLACE | GB_EMA | GB_NEW)
static const GbCase gb_forward_cases[] = {
    // name                   B   T    S    W   Me  Ms Hkv  Dh  te  ts  gates              values            order                 none refr mask init nowr need
    {"base",                  2, 192,  32,  64,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"exact_bank_only",       2, 192,  32,  64,  8,  0,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_EVICT | GB_INSERT | GB_REPLACE},
    {"summary_bank_only",     2, 192,  32,  64,  0,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_EVICT | GB_EMA | GB_NEW},
    {"no_banks",              2, 192,  32,  64,  0,  0,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_EVICT},
    {"window_1",              2, 100,  16,   1,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"window_below_block",    2, 192,  32,  20,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"window_not_multiple",   2, 192,  32,  40,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"block_above_T",         2, 150, 256,  30,  8,  6,  2, 32,  6, 40, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_EVICT | GB_INSERT | GB_NEW},
    {"T_not_multiple",        2, 201,  32,  48,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"batch_4",               4, 160,  32,  32,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"exact_hits",            2, 320,  16,  16,  8,  6,  2, 64,  8,  8, GB_GATES_UNIFORM, GB_VALUES_REPEAT, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED | GB_HIT | GB_BETWEEN | GB_TOUCH},
    {"exact_refresh_on_hit",  2, 320,  16,  16,  8,  6,  2, 64,  8,  8, GB_GATES_UNIFORM, GB_VALUES_REPEAT, CAND_ORDER_BY_GATE,   0, 1, 0, 0, 0, GB_BASE_NEED | GB_HIT | GB_BETWEEN},
    {"gates_equal_by_gate",   2, 192,  32,  32,  8,  6,  2, 32,  4, 12, GB_GATES_EQUAL,   GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED | GB_TIE},
    {"gates_equal_reference", 2, 192,  32,  32,  8,  6,  2, 32,  4, 12, GB_GATES_EQUAL,   GB_VALUES_RANDOM, CAND_ORDER_REFERENCE, 0, 0, 0, 0, 0, GB_BASE_NEED | GB_TIE},
    {"gates_levels_by_gate",  2, 192,  32,  32,  8,  6,  2, 32,  4, 32, GB_GATES_LEVELS,  GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED | GB_TIE | GB_DROP | GB_ORDER},
    {"gates_levels_reference",2, 192,  32,  32,  8,  6,  2, 32,  4, 32, GB_GATES_LEVELS,  GB_VALUES_RANDOM, CAND_ORDER_REFERENCE, 0, 0, 0, 0, 0, GB_BASE_NEED | GB_TIE | GB_DROP | GB_ORDER},
    {"reference_order",       2, 192,  32,  32,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_REFERENCE, 0, 0, 0, 0, 0, GB_BASE_NEED | GB_ORDER},
    {"write_policy_none",     2, 192,  32,  32,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   1, 0, 0, 0, 0, GB_BASE_NEED | GB_TIE},
    {"mask_unused_off",       2, 192,  32,  32,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 1, 0, 0, GB_BASE_NEED},
    {"init_random",           2, 192,  32,  32,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 1, 0, GB_BASE_NEED},
    {"no_overwrite_on_insert",2, 192,  32,  32,  8,  6,  2, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 1, GB_EVICT | GB_INSERT | GB_EMA},
    {"odd_sizes",             2, 211,  37,  45, 13,  7,  3, 34,  5, 23, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"many_candidates",       1, 384,  64,  64, 40, 37,  2, 32, 64, 64, GB_GATES_UNIFORM, GB_VALUES_REPEAT, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED | GB_HIT},
    {"one_kv_head",           2, 192,  32,  32,  8,  6,  1, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"heads_12_uneven",       1, 256,  32,  32,  8,  6, 12, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"heads_16",              1, 256,  32,  32,  8,  6, 16, 32,  4, 12, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"smollm2_135m_shape",    2, 1024, 256, 256, 64, 64, 3, 64,  8, 64, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_EVICT | GB_INSERT | GB_EMA | GB_NEW},
    {"mistral_7b_shape",      1, 1536, 256, 256, 64, 64, 8, 128, 8, 64, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_EVICT | GB_INSERT | GB_EMA | GB_NEW},
};

// Backward cases: W < S, so that tokens of block j leave in block j's own write and some bank gradient
// reaches tokens even with cross_block_grad off; each runs with detach_evicted and cross_block_grad
// on and off.
static const GbCase gb_backward_cases[] = {
    {"bwd_hits",              2, 256,  32,  20,  6,  5,  2, 32,  4, 32, GB_GATES_UNIFORM, GB_VALUES_REPEAT, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED | GB_HIT | GB_DROP},
    {"bwd_policy_none_unmasked", 2, 256, 32, 20,  6,  5,  2, 32,  4, 10, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   1, 0, 1, 0, 0, GB_BASE_NEED},
    {"bwd_init_random",       1, 256,  32,  24,  6,  5,  3, 34,  4, 10, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_REFERENCE, 0, 0, 0, 1, 0, GB_BASE_NEED},
    {"bwd_mistral_heads",     1, 640, 128,  96, 16, 16,  8, 128, 8, 32, GB_GATES_UNIFORM, GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED},
    {"bwd_tiny_gates",        2, 256,  32,  20,  6,  5,  2, 32,  4, 10, GB_GATES_TINY,    GB_VALUES_RANDOM, CAND_ORDER_BY_GATE,   0, 0, 0, 0, 0, GB_BASE_NEED | GB_CLAMP},
};

static ModelConfig gb_config(const GbCase* k) {
    ModelConfig c = config_default();
    c.bounded = 1; c.differential = 1;
    c.n_heads = k->Hkv; c.n_kv_heads = k->Hkv; c.head_dim = k->Dh; c.dim = k->Hkv * k->Dh;
    c.window = k->W; c.n_exact = k->Me; c.n_summary = k->Ms; c.block_size = k->S;
    c.exact_candidates_per_block = k->te; c.summary_candidates_per_block = k->ts;
    c.candidate_order = k->order;
    c.write_policy = k->policy_none ? WRITE_POLICY_NONE : WRITE_POLICY_GATED;
    c.exact_refresh_on_hit = k->refresh;
    c.mask_unused_memory = !k->mask_off;
    c.summary_overwrite_on_insert = !k->no_overwrite;
    if (k->gates == GB_GATES_TINY) c.gate_threshold_exact = c.gate_threshold_summary = 0.0f;
    return c;
}

// An eta logit near -3 + 0.44 g whose sigmoid the GPU forms bit-identically to the CPU's sigmoid_f32:
// the GPU rounds exp through double, the CPU uses the C library's expf; they differ for rare
// arguments, and then the summary contents would differ by an ulp (the decisions could amplify it).
static float gb_eta_logit(int g) {
    for (int i = 0; i < 64; i++) {
        float x = gb_fx(-3.0f + 0.4375f * (float)(g % 8) + 0.0625f * (float)i);
        float e = (float)exp(-(double)x), gpu = 1.0f / (1.0f + e);
        if (gpu == sigmoid_f32(x)) return x;
    }
    return NAN;
}

// ---------------------------------------------------------------------------------------------
// One case: inputs, the CPU run, the GPU run

typedef struct {
    GbCase cs;
    ModelConfig c;
    BankScanShape sh;
    int nb, Mb, kvd, slots;
    size_t BT, n_bank, n_state;    // B*T; tape k elements; live-state elements
    float *k, *v, *gate, *eta;     // host inputs, floatX-valued (gates fp32)
    float *init_k, *init_v;        // [B][Hkv][Mb][Dh] or NULL (zeros)
    BankState_f32* snap;           // [B][nb] the state block j attends to
    WriteLog_f32* wlog;            // [B][nb] what block j's write did
    BankState_f32* fin;            // [B] the state after the last write
    floatX *d_k, *d_v, *d_eta;
    float *d_gate, *d_init_k, *d_init_v;
    void *d_tape, *d_scratch;
    size_t tape_bytes, scratch_bytes;
    BankTape tape;
    // the GPU tape and final state, on the host
    float *g_k, *g_v, *g_cw, *g_cnt, *g_sk, *g_sv;
    unsigned char *g_allowed, *g_act, *g_new;
    int *g_src, *g_nc, *g_ctok, *g_cslot;
} GbRun;

static void gb_wlog_alloc(WriteLog_f32* w, int ts, int Ms) {
    int n = ts > 0 ? ts : 1, m = Ms > 0 ? Ms : 1;
    w->n_cand = 0;
    w->cand_pos = (int64_t*)coda_calloc_or_die((size_t)n, sizeof(int64_t), "write log");
    w->cand_slot = (int*)coda_calloc_or_die((size_t)n, sizeof(int), "write log");
    w->cand_w = (float*)coda_calloc_or_die((size_t)n, sizeof(float), "write log");
    w->slot_active = (unsigned char*)coda_calloc_or_die((size_t)m, 1, "write log");
    w->slot_new = (unsigned char*)coda_calloc_or_die((size_t)m, 1, "write log");
    w->slot_cnt = (float*)coda_calloc_or_die((size_t)m, sizeof(float), "write log");
}
static void gb_wlog_free(WriteLog_f32* w) {
    free(w->cand_pos); free(w->cand_slot); free(w->cand_w); free(w->slot_active); free(w->slot_new); free(w->slot_cnt);
}

// Inputs and the CPU reference run (no GPU needed).
static void gb_setup(GbRun* R, const GbCase* cs, uint64_t seed) {
    memset(R, 0, sizeof(*R));
    R->cs = *cs;
    R->c = gb_config(cs);
    R->sh.cfg = R->c; R->sh.B = cs->B; R->sh.T = cs->T; R->sh.n_blocks = (cs->T + cs->S - 1) / cs->S;
    R->nb = R->sh.n_blocks; R->Mb = cs->Me + cs->Ms; R->kvd = cs->Hkv * cs->Dh; R->slots = cs->W + R->Mb;
    R->BT = (size_t)cs->B * cs->T;
    R->n_bank = (size_t)cs->B * R->nb * cs->Hkv * R->Mb * cs->Dh;
    R->n_state = (size_t)cs->B * cs->Hkv * R->Mb * cs->Dh;
    const size_t n = R->BT * R->kvd;
    uint64_t s = seed;
    R->k = (float*)coda_malloc_or_die(n * sizeof(float), "test keys");
    R->v = (float*)coda_malloc_or_die(n * sizeof(float), "test values");
    R->gate = (float*)coda_malloc_or_die(R->BT * sizeof(float), "test gates");
    R->eta = (float*)coda_malloc_or_die((size_t)cs->Hkv * sizeof(float), "test eta");
    for (size_t i = 0; i < n; i++) R->k[i] = gb_fx(gb_uniform(&s, -1.f, 1.f));
    if (cs->values == GB_VALUES_RANDOM) {
        for (size_t i = 0; i < n; i++) R->v[i] = gb_fx(gb_uniform(&s, -1.f, 1.f));
    } else {  // 35% exact repeats of a prototype (hits), 25% prototype + 0.75 x noise (cosine ~0.8), 40% fresh
        const int P = 5;
        float* proto = (float*)coda_malloc_or_die((size_t)P * R->kvd * sizeof(float), "prototypes");
        for (size_t i = 0; i < (size_t)P * R->kvd; i++) proto[i] = gb_fx(gb_uniform(&s, -1.f, 1.f));
        for (size_t t = 0; t < R->BT; t++) {
            const float u = gb_uniform(&s, 0.f, 1.f);
            const float* pr = proto + (size_t)(gb_next(&s) % P) * R->kvd;
            for (int e = 0; e < R->kvd; e++) {
                const float x = gb_uniform(&s, -1.f, 1.f);
                R->v[t * R->kvd + e] = u < 0.35f ? pr[e] : gb_fx(u < 0.6f ? pr[e] + 0.75f * x : x);
            }
        }
        free(proto);
    }
    static const float levels[3] = {0.04f, 0.3f, 0.7f};
    for (size_t t = 0; t < R->BT; t++) {
        float g = cs->gates == GB_GATES_EQUAL ? sigmoid_f32(-2.0f)
                  : cs->gates == GB_GATES_LEVELS ? levels[gb_next(&s) % 3]
                  : cs->gates == GB_GATES_TINY ? gb_uniform(&s, 0.f, 2e-7f) : gb_uniform(&s, 0.f, 1.f);
        R->gate[t] = cs->policy_none ? 1.0f : g;  // the caller's convention for write policy none
    }
    for (int g = 0; g < cs->Hkv; g++) R->eta[g] = gb_eta_logit(g);
    // the CPU reference, row by row, block by block
    const ModelConfig* c = &R->c;
    const size_t per_row = (size_t)cs->Hkv * R->Mb * cs->Dh;
    if (cs->init_random) {
        R->init_k = (float*)coda_malloc_or_die(R->n_state * sizeof(float) + 4, "init keys");
        R->init_v = (float*)coda_malloc_or_die(R->n_state * sizeof(float) + 4, "init values");
    }
    R->snap = (BankState_f32*)coda_calloc_or_die((size_t)cs->B * R->nb, sizeof(BankState_f32), "snapshots");
    R->wlog = (WriteLog_f32*)coda_calloc_or_die((size_t)cs->B * R->nb, sizeof(WriteLog_f32), "write logs");
    R->fin = (BankState_f32*)coda_calloc_or_die((size_t)cs->B, sizeof(BankState_f32), "final states");
    for (int b = 0; b < cs->B; b++) {
        BankState_f32* st = &R->fin[b];
        bank_alloc_f32(st, c);
        bank_reset_f32(st, cs->init_random ? MEM_INIT_RANDOM_NORMAL : MEM_INIT_ZEROS, seed + 101 * b);
        if (cs->init_random)
            for (int g = 0; g < cs->Hkv; g++)
                for (int m = 0; m < R->Mb; m++)
                    for (int d = 0; d < cs->Dh; d++) {
                        size_t o = b * per_row + ((size_t)g * R->Mb + m) * cs->Dh + d;
                        R->init_k[o] = bank_k_f32(st, g, cs->W + m)[d];
                        R->init_v[o] = bank_v_f32(st, g, cs->W + m)[d];
                    }
        for (int j = 0; j < R->nb; j++) {
            const size_t bj = (size_t)b * R->nb + j;
            const int t0 = j * cs->S, len = cs->T - t0 < cs->S ? cs->T - t0 : cs->S;
            bank_alloc_f32(&R->snap[bj], c);
            bank_copy_f32(&R->snap[bj], st);
            gb_wlog_alloc(&R->wlog[bj], cs->ts, cs->Ms);
            const size_t r0 = (size_t)b * cs->T + t0;
            bank_write_block_f32(st, c, R->k + r0 * R->kvd, R->v + r0 * R->kvd, R->gate + r0, t0, len, R->eta, &R->wlog[bj], NULL);
        }
    }
}

static float* gb_upload_f32(const float* x, size_t n) {
    float* d = (float*)cuda_malloc_or_die(n * sizeof(float) + 16, "bank test tensor");
    cudaCheck(cudaMemcpy(d, x, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static floatX* gb_upload_x(const float* x, size_t n) {
    floatX* d = (floatX*)cuda_malloc_or_die(n * sizeof(floatX) + 16, "bank test tensor");
    host_to_floatX(d, x, n);
    return d;
}
static void* gb_download(const void* d, size_t bytes) {
    void* h = coda_malloc_or_die(bytes + 16, "bank test download");
    cudaCheck(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
    return h;
}

// The GPU forward scan on the case's inputs; the tape and the final state are downloaded into g_*.
// The tape and scratch are first filled with 0x7f bytes, so an entry the scan forgets to write shows
// up as a mismatch (0x7f7f7f7f is no token, slot or flag; 3.4e38 no weight).
static void gb_gpu_forward(GbRun* R, const GpuContext* ctx) {
    const GbCase* cs = &R->cs;
    const size_t n = R->BT * R->kvd, bn = (size_t)cs->B * R->nb;
    if (!R->d_k) {
        R->d_k = gb_upload_x(R->k, n);
        R->d_v = gb_upload_x(R->v, n);
        R->d_eta = gb_upload_x(R->eta, cs->Hkv);
        R->d_gate = gb_upload_f32(R->gate, R->BT);
        if (R->init_k) { R->d_init_k = gb_upload_f32(R->init_k, R->n_state); R->d_init_v = gb_upload_f32(R->init_v, R->n_state); }
        R->tape_bytes = bank_tape_bytes(&R->sh);
        R->scratch_bytes = bank_scan_scratch_bytes(&R->sh);
        R->d_tape = cuda_malloc_or_die(R->tape_bytes, "bank tape");
        R->d_scratch = cuda_malloc_or_die(R->scratch_bytes, "bank scan scratch");
        bank_tape_carve(&R->tape, R->d_tape, &R->sh);
    }
    cudaCheck(cudaMemset(R->d_tape, 0x7f, R->tape_bytes));
    cudaCheck(cudaMemset(R->d_scratch, 0x7f, R->scratch_bytes));
    const BankScanInit init = {R->d_init_k, R->d_init_v, NULL, NULL};
    bank_scan_forward(ctx, &R->sh, R->d_k, R->d_v, R->d_gate, R->d_eta, &init, &R->tape, R->d_scratch);
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    free(R->g_k); free(R->g_v); free(R->g_allowed); free(R->g_src); free(R->g_nc); free(R->g_ctok); free(R->g_cslot);
    free(R->g_cw); free(R->g_act); free(R->g_new); free(R->g_cnt); free(R->g_sk); free(R->g_sv);
    R->g_k = (float*)coda_malloc_or_die(R->n_bank * sizeof(float) + 4, "tape keys");
    R->g_v = (float*)coda_malloc_or_die(R->n_bank * sizeof(float) + 4, "tape values");
    floatX_to_host(R->g_k, R->tape.k, R->n_bank);
    floatX_to_host(R->g_v, R->tape.v, R->n_bank);
    R->g_allowed = (unsigned char*)gb_download(R->tape.allowed, bn * R->Mb);
    R->g_src = (int*)gb_download(R->tape.src, bn * cs->Me * sizeof(int));
    R->g_nc = (int*)gb_download(R->tape.n_cand, bn * sizeof(int));
    R->g_ctok = (int*)gb_download(R->tape.cand_tok, bn * cs->ts * sizeof(int));
    R->g_cslot = (int*)gb_download(R->tape.cand_slot, bn * cs->ts * sizeof(int));
    R->g_cw = (float*)gb_download(R->tape.cand_w, bn * cs->ts * sizeof(float));
    R->g_act = (unsigned char*)gb_download(R->tape.slot_active, bn * cs->Ms);
    R->g_new = (unsigned char*)gb_download(R->tape.slot_new, bn * cs->Ms);
    R->g_cnt = (float*)gb_download(R->tape.slot_cnt, bn * cs->Ms * sizeof(float));
    BankScratch w;
    bank_scan_carve_scratch(&w, R->d_scratch, &R->sh);
    R->g_sk = (float*)gb_download(w.state_k, R->n_state * sizeof(float));
    R->g_sv = (float*)gb_download(w.state_v, R->n_state * sizeof(float));
}

static void gb_free(GbRun* R) {
    for (int b = 0; R->snap && b < R->cs.B; b++) {
        for (int j = 0; j < R->nb; j++) { bank_free_f32(&R->snap[(size_t)b * R->nb + j]); gb_wlog_free(&R->wlog[(size_t)b * R->nb + j]); }
        bank_free_f32(&R->fin[b]);
    }
    free(R->snap); free(R->wlog); free(R->fin);
    free(R->k); free(R->v); free(R->gate); free(R->eta); free(R->init_k); free(R->init_v);
    free(R->g_k); free(R->g_v); free(R->g_allowed); free(R->g_src); free(R->g_nc); free(R->g_ctok); free(R->g_cslot);
    free(R->g_cw); free(R->g_act); free(R->g_new); free(R->g_cnt); free(R->g_sk); free(R->g_sv);
    if (R->d_k) {
        cudaCheck(cudaFree(R->d_k)); cudaCheck(cudaFree(R->d_v)); cudaCheck(cudaFree(R->d_eta)); cudaCheck(cudaFree(R->d_gate));
        if (R->d_init_k) { cudaCheck(cudaFree(R->d_init_k)); cudaCheck(cudaFree(R->d_init_v)); }
        cudaCheck(cudaFree(R->d_tape)); cudaCheck(cudaFree(R->d_scratch));
    }
    memset(R, 0, sizeof(*R));
}

// ---------------------------------------------------------------------------------------------
// Forward comparison

typedef struct {
    long decisions, decision_bad;  // compared decision values (tokens, slots, weights, flags) / mismatches
    long contents, content_bad;    // snapshot elements / out of tolerance
    long state_bad;                // final live-state elements out of tolerance
    long content_inexact;          // snapshot elements not bitwise equal to the (floatX-rounded) CPU value
    double content_err, state_err; // max |gpu - cpu| / (1e-6 + |cpu|)
} GbForward;

static void gb_bad(long* count, const char* fmt, ...) {
    if (++*count > 6) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "      mismatch: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static GbForward gb_compare_forward(const GbRun* R) {
    const GbCase* cs = &R->cs;
    const int W = cs->W, Me = cs->Me, Ms = cs->Ms, Mb = R->Mb, Dh = cs->Dh, Hkv = cs->Hkv, ts = cs->ts;
    GbForward f;
    memset(&f, 0, sizeof(f));
    const double rel = gb_is_bf16 ? 1.0 / 256 : 1e-6;  // bf16 rounds to 2^-9 relative
#define GB_DECIDE(ok, ...) do { f.decisions++; if (!(ok)) gb_bad(&f.decision_bad, __VA_ARGS__); } while (0)
    for (int b = 0; b < cs->B; b++)
        for (int j = 0; j < R->nb; j++) {
            const size_t bj = (size_t)b * R->nb + j;
            const BankState_f32* st = &R->snap[bj];
            const WriteLog_f32* lg = &R->wlog[bj];
            for (int m = 0; m < Mb; m++) {
                const int want = R->c.mask_unused_memory ? st->allowed[W + m] : 1, got = R->g_allowed[bj * Mb + m];
                GB_DECIDE(got == want, "b=%d block %d slot %d: allowed %d, CPU %d", b, j, m, got, want);
            }
            for (int m = 0; m < Me; m++) {
                const long long want = st->src[W + m], got = R->g_src[bj * Me + m];
                GB_DECIDE(got == want, "b=%d block %d exact slot %d: source token %lld, CPU %lld", b, j, m, got, want);
            }
            for (int g = 0; g < Hkv; g++)
                for (int m = 0; m < Mb; m++)
                    for (int d = 0; d < Dh; d++)
                        for (int kv = 0; kv < 2; kv++) {
                            const float ref = (kv ? bank_v_f32(st, g, W + m) : bank_k_f32(st, g, W + m))[d];
                            const float got = (kv ? R->g_v : R->g_k)[((bj * Hkv + g) * Mb + m) * Dh + d];
                            const double err = fabs((double)got - ref) / (1e-6 + fabs((double)ref));
                            f.contents++;
                            if (err > f.content_err || got != got) f.content_err = got != got ? INFINITY : err;
                            if (got != gb_fx(ref)) f.content_inexact++;
                            if (!(err <= rel)) gb_bad(&f.content_bad, "b=%d block %d head %d slot %d dim %d %s: %.9g, CPU %.9g", b, j,
                                                      g, m, d, kv ? "v" : "k", got, ref);
                        }
            // the summary record of block j's write
            const int nc = R->g_nc[bj];
            GB_DECIDE(nc == lg->n_cand, "b=%d block %d: %d summary candidates, CPU %d", b, j, nc, lg->n_cand);
            for (int t = 0; t < lg->n_cand && nc == lg->n_cand; t++) {
                const size_t o = bj * ts + t;
                GB_DECIDE(R->g_ctok[o] == (int)lg->cand_pos[t], "b=%d block %d candidate %d: token %d, CPU %lld", b, j, t,
                          R->g_ctok[o], (long long)lg->cand_pos[t]);
                GB_DECIDE(R->g_cslot[o] == lg->cand_slot[t], "b=%d block %d candidate %d: slot %d, CPU %d", b, j, t, R->g_cslot[o],
                          lg->cand_slot[t]);
                GB_DECIDE(R->g_cw[o] == lg->cand_w[t], "b=%d block %d candidate %d: weight %.9g, CPU %.9g", b, j, t, R->g_cw[o],
                          lg->cand_w[t]);
            }
            for (int m = 0; m < Ms; m++) {
                const size_t o = bj * Ms + m;
                const int wa = lg->n_cand ? lg->slot_active[m] : 0, wn = lg->n_cand ? lg->slot_new[m] : 0;
                const float wc = lg->n_cand ? lg->slot_cnt[m] : 0.f;
                GB_DECIDE(R->g_act[o] == wa && R->g_new[o] == wn && R->g_cnt[o] == wc,
                          "b=%d block %d summary slot %d: active %d new %d weight %.9g, CPU %d %d %.9g", b, j, m, R->g_act[o],
                          R->g_new[o], R->g_cnt[o], wa, wn, wc);
            }
        }
    // the live state after the last write (the last write's decisions are visible only here)
    for (int b = 0; b < cs->B; b++)
        for (int g = 0; g < Hkv; g++)
            for (int m = 0; m < Mb; m++)
                for (int d = 0; d < Dh; d++)
                    for (int kv = 0; kv < 2; kv++) {
                        const float ref = (kv ? bank_v_f32(&R->fin[b], g, W + m) : bank_k_f32(&R->fin[b], g, W + m))[d];
                        const float got = (kv ? R->g_sv : R->g_sk)[(((size_t)b * Hkv + g) * Mb + m) * Dh + d];
                        const double err = fabs((double)got - ref) / (1e-6 + fabs((double)ref));
                        if (err > f.state_err || got != got) f.state_err = got != got ? INFINITY : err;
                        if (!(err <= 1e-6)) gb_bad(&f.state_bad, "b=%d final state head %d slot %d dim %d %s: %.9g, CPU %.9g", b, g, m,
                                                   d, kv ? "v" : "k", got, ref);
                    }
#undef GB_DECIDE
    return f;
}

// ---------------------------------------------------------------------------------------------
// What the CPU run exercised (GbCase.need bits), counted from its snapshots, logs and inputs.

static void gb_tally(const GbRun* R, long* cnt) {
    const GbCase* cs = &R->cs;
    const ModelConfig* c = &R->c;
    const int W = cs->W, Me = cs->Me, Ms = cs->Ms;
    memset(cnt, 0, sizeof(long) * GB_N_NEED);
    float* cg = (float*)coda_malloc_or_die(sizeof(float) * (size_t)(cs->S + 1), "tally gates");
    int* l1 = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(cs->S + 1) * 3, "tally lists");
    int *l2 = l1 + cs->S + 1, *lc = l2 + cs->S + 1;
    for (int b = 0; b < cs->B; b++)
        for (int j = 0; j < R->nb; j++) {
            const size_t bj = (size_t)b * R->nb + j;
            const BankState_f32* st = &R->snap[bj];
            const BankState_f32* after = j + 1 < R->nb ? &R->snap[bj + 1] : &R->fin[b];
            const WriteLog_f32* lg = &R->wlog[bj];
            const int t0 = j * cs->S, len = cs->T - t0 < cs->S ? cs->T - t0 : cs->S, Lr = st->recent_filled;
            const int evict = Lr + len - W > 0 ? Lr + len - W : 0, first = t0 - Lr;
            if (evict > 0) cnt[0]++;
            for (int m = 0; m < Me; m++) {
                const int64_t s0 = st->src[W + m], s1 = after->src[W + m];
                if (s0 != s1) { cnt[1]++; if (s0 >= 0) cnt[2]++; }
                else if (st->last_exact[m] != after->last_exact[m]) cnt[3]++;
            }
            const int Te = Me > 0 && cs->te > 0 ? (cs->te < evict ? cs->te : evict) : 0;
            const int Ts = Ms > 0 && cs->ts > 0 ? (cs->ts < evict ? cs->ts : evict) : 0, Tn = Te > Ts ? Te : Ts;
            if (Tn > 0) {
                for (int i = 0; i < evict; i++) cg[i] = R->gate[(size_t)b * cs->T + first + i];
                topk_reference_order_f32(cg, evict, Tn, l1);
                topk_by_gate_f32(cg, evict, Tn, l2);
                if (memcmp(l1, l2, sizeof(int) * Tn) != 0) cnt[10]++;
                const float vstar = cg[l2[Tn - 1]];  // the Tn-th largest gate
                int same = 0;
                for (int i = 0; i < evict; i++) same += cg[i] == vstar;
                if (same > 1) cnt[9]++;
                topk_candidates_f32(c, cg, evict, Tn, lc);
                int any_used = 0;
                for (int m = 0; m < Me; m++) any_used |= st->allowed[W + m];
                for (int t = 0; t < Te && any_used; t++) {
                    const size_t row = (size_t)b * cs->T + first + lc[t];
                    Evicted_f32 e = {R->k + row * R->kvd, R->v + row * R->kvd, cg[lc[t]], first + lc[t]};
                    if (!keeps_f32(c, e.g, c->gate_threshold_exact)) continue;
                    float best = -1e9f;
                    for (int m = 0; m < Me; m++)
                        if (st->allowed[W + m]) { float sc = exact_score_f32(st, &e, m); best = sc > best ? sc : best; }
                    if (best >= c->exact_match_threshold) cnt[4]++;
                    else if (best >= c->exact_novelty_threshold) cnt[5]++;
                }
            }
            for (int m = 0; m < Ms && lg->n_cand > 0; m++) {
                if (lg->slot_active[m] && !lg->slot_new[m]) cnt[6]++;
                if (lg->slot_new[m]) cnt[7]++;
                if (lg->slot_active[m] && lg->slot_cnt[m] <= 1e-6f) cnt[11]++;
            }
            for (int t = 0; t < lg->n_cand; t++) cnt[8] += lg->cand_w[t] == 0.f;
        }
    free(cg);
    free(l1);
}

// CHECKs that the case exercised what it is there for; prints the counts.
static void gb_check_need(const GbRun* R) {
    long cnt[GB_N_NEED];
    gb_tally(R, cnt);
    printf("      exercised:");
    for (int i = 0; i < GB_N_NEED; i++) printf(" %s %ld%s", gb_need_name[i], cnt[i], i + 1 < GB_N_NEED ? "," : "\n");
    for (int i = 0; i < GB_N_NEED; i++)
        if (R->cs.need & (1u << i)) CHECK(cnt[i] > 0, "case %s was meant to exercise %s but has none", R->cs.name, gb_need_name[i]);
}

// One forward case end to end; returns the number of failed checks it added.
static int gb_forward_case(const GbCase* cs, const GpuContext* ctx, uint64_t seed) {
    const int before = g_current_failures;
    GbRun R;
    gb_setup(&R, cs, seed);
    for (int g = 0; g < cs->Hkv; g++) CHECK(R.eta[g] == R.eta[g], "no eta logit with a bit-identical sigmoid found for head %d", g);
    gb_gpu_forward(&R, ctx);
    GbForward f = gb_compare_forward(&R);
    printf("    %-24s B=%d T=%-4d S=%-3d W=%-3d Me=%-2d Ms=%-2d Hkv=%-2d Dh=%-3d: %ld decisions, %ld wrong; contents max rel "
           "err %.2e (%ld of %ld not bitwise), final state %.2e\n", cs->name, cs->B, cs->T, cs->S, cs->W, cs->Me, cs->Ms,
           cs->Hkv, cs->Dh, f.decisions, f.decision_bad, f.content_err, f.content_inexact, f.contents, f.state_err);
    CHECK(f.decision_bad == 0, "%s: %ld of %ld decisions differ from the CPU reference", cs->name, f.decision_bad, f.decisions);
    CHECK(f.content_bad == 0, "%s: %ld snapshot elements out of tolerance (max rel err %.3g)", cs->name, f.content_bad, f.content_err);
    CHECK(f.state_bad == 0, "%s: %ld final-state elements out of tolerance (max rel err %.3g)", cs->name, f.state_bad, f.state_err);
    gb_check_need(&R);
    gb_free(&R);
    return g_current_failures - before;
}

GPU_TEST(bank_scan_forward_vs_cpu_reference) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    const int n = (int)(sizeof(gb_forward_cases) / sizeof(gb_forward_cases[0]));
    for (int i = 0; i < n; i++) gb_forward_case(&gb_forward_cases[i], &ctx, 7001 + 31 * i);
    gpu_context_free(&ctx);
}

// ---------------------------------------------------------------------------------------------
// Backward

// attn_backward's bounded loop restricted to the banks: per row, for j = last..0, the summary
// write's backward (dsum = dL/d(summary bank after write j) -> before it), then block j's slot
// gradients scattered by the CPU's own keyset_scatter over a key set of the bank slots block j saw.
static void gb_cpu_backward(const GbRun* R, const ModelConfig* c, const float* dbk, const float* dbv, float* dk, float* dv,
                            float* dgate, float* deta) {
    const GbCase* cs = &R->cs;
    const int W = cs->W, Mb = R->Mb, Dh = cs->Dh, Hkv = cs->Hkv, Ms1 = cs->Ms > 0 ? cs->Ms : 1;
    const size_t ns = (size_t)Hkv * Ms1 * Dh;
    float* dsum = (float*)coda_malloc_or_die(2 * ns * sizeof(float), "summary gradients");
    float* dK = (float*)coda_malloc_or_die(2 * (size_t)Hkv * (Mb + 1) * Dh * sizeof(float), "slot gradients");
    int* slot = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(Mb + 1), "key set");
    for (int b = 0; b < cs->B; b++) {
        memset(dsum, 0, 2 * ns * sizeof(float));
        const size_t r0 = (size_t)b * cs->T;
        const float *kb = R->k + r0 * R->kvd, *vb = R->v + r0 * R->kvd;
        float *dkb = dk + r0 * R->kvd, *dvb = dv + r0 * R->kvd, *dgb = dgate + r0;
        for (int j = R->nb - 1; j >= 0; j--) {
            const size_t bj = (size_t)b * R->nb + j;
            const BankState_f32* st = &R->snap[bj];
            if (cs->Ms > 0)
                summary_write_backward_f32(c, st, &R->wlog[bj], j, 0, kb, vb, R->eta, dsum, dsum + ns, dkb, dvb, dgb, deta);
            KeySet_f32 ks;
            memset(&ks, 0, sizeof(ks));
            ks.slot = slot;
            for (int s = W; s < W + Mb; s++)
                if (st->allowed[s] || !c->mask_unused_memory) ks.slot[ks.P++] = s;
            float* dV = dK + (size_t)Hkv * ks.P * Dh;
            for (int g = 0; g < Hkv; g++)
                for (int i = 0; i < ks.P; i++)
                    for (int d = 0; d < Dh; d++) {
                        const size_t src = ((bj * Hkv + g) * Mb + (ks.slot[i] - W)) * Dh + d;
                        dK[((size_t)g * ks.P + i) * Dh + d] = dbk[src];
                        dV[((size_t)g * ks.P + i) * Dh + d] = dbv[src];
                    }
            keyset_scatter_f32(c, &ks, st, j, j * cs->S, 0, dK, dV, dkb, dvb, dsum, dsum + ns);
        }
    }
    free(dsum); free(dK); free(slot);
}

// ||gpu - cpu|| / ||cpu - before||: the error relative to what was added (before = the prior contents).
static double gb_inc_err(const float* gpu, const float* cpu, const float* before, size_t n, double* added) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)gpu[i] - cpu[i], a = (double)cpu[i] - before[i];
        if (gpu[i] != gpu[i]) return INFINITY;
        num += e * e;
        den += a * a;
    }
    *added = sqrt(den);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

typedef struct { double dk, dv, dgate, deta; } GbBackward;

// One (detach_evicted, cross_block_grad) setting of a case whose forward ran (R->tape on the GPU).
// null_tokens: pass NULL for dk_acc/dv_acc/dgate (allowed with detach_evicted).
static GbBackward gb_backward_flags(GbRun* R, const GpuContext* ctx, int detach, int cross, int null_tokens, uint64_t seed) {
    const GbCase* cs = &R->cs;
    ModelConfig c = R->c;
    c.detach_evicted = detach;
    c.cross_block_grad = cross;
    BankScanShape sh = R->sh;
    sh.cfg = c;
    const size_t nt = R->BT * R->kvd;
    uint64_t s = seed;
    float* dbk = (float*)coda_malloc_or_die(2 * R->n_bank * sizeof(float) + 4, "slot gradients");
    float* dbv = dbk + R->n_bank;
    for (size_t i = 0; i < 2 * R->n_bank; i++) dbk[i] = gb_uniform(&s, -1.f, 1.f);
    // prior accumulator contents (the GPU adds to them), then the CPU's result on top of a copy
    float* before = (float*)coda_malloc_or_die((2 * nt + R->BT + cs->Hkv) * sizeof(float), "accumulators");
    for (size_t i = 0; i < 2 * nt + R->BT + cs->Hkv; i++) before[i] = gb_uniform(&s, -0.5f, 0.5f);
    float* cpu = (float*)coda_malloc_or_die((2 * nt + R->BT + cs->Hkv) * sizeof(float), "CPU gradients");
    memcpy(cpu, before, (2 * nt + R->BT + cs->Hkv) * sizeof(float));
    gb_cpu_backward(R, &c, dbk, dbv, cpu, cpu + nt, cpu + 2 * nt, cpu + 2 * nt + R->BT);
    float* d_acc = gb_upload_f32(before, 2 * nt + R->BT + cs->Hkv);
    float* d_db = gb_upload_f32(dbk, 2 * R->n_bank);
    float *gdk = d_acc, *gdv = d_acc + nt, *gdg = d_acc + 2 * nt, *gde = d_acc + 2 * nt + R->BT;
    bank_scan_backward(ctx, &sh, &R->tape, d_db, d_db + R->n_bank, R->d_k, R->d_v, R->d_eta, null_tokens ? NULL : gdk,
                       null_tokens ? NULL : gdv, null_tokens ? NULL : gdg, gde, R->d_scratch);
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    float* gpu = (float*)gb_download(d_acc, (2 * nt + R->BT + cs->Hkv) * sizeof(float));
    GbBackward e;
    double added[4];
    e.dk = gb_inc_err(gpu, cpu, before, nt, &added[0]);
    e.dv = gb_inc_err(gpu + nt, cpu + nt, before + nt, nt, &added[1]);
    e.dgate = gb_inc_err(gpu + 2 * nt, cpu + 2 * nt, before + 2 * nt, R->BT, &added[2]);
    e.deta = gb_inc_err(gpu + 2 * nt + R->BT, cpu + 2 * nt + R->BT, before + 2 * nt + R->BT, cs->Hkv, &added[3]);
    printf("      detach %d cross %d%s: rel err dk %.2e dv %.2e dgate %.2e deta %.2e (|added| %.3g %.3g %.3g %.3g)\n", detach, cross,
           null_tokens ? " (NULL token grads)" : "", e.dk, e.dv, e.dgate, e.deta, added[0], added[1], added[2], added[3]);
    // the case exercises what the flags promise
    const int gated = !cs->policy_none;
    if (detach) {
        CHECK(memcmp(gpu, before, (2 * nt + R->BT) * sizeof(float)) == 0, "%s: detach_evicted, yet token gradients changed", cs->name);
        CHECK(added[0] == 0 && added[2] == 0, "%s: the CPU reference moved token gradients with detach_evicted", cs->name);
    } else {
        CHECK(added[0] > 0 && added[1] > 0, "%s detach 0 cross %d: no gradient reached the evicted tokens", cs->name, cross);
        if (gated) CHECK(added[2] > 0, "%s detach 0 cross %d: no gate gradient", cs->name, cross);
    }
    if (!gated) CHECK(memcmp(gpu + 2 * nt, before + 2 * nt, R->BT * sizeof(float)) == 0, "%s: write policy none, yet dgate changed", cs->name);
    CHECK(added[3] > 0, "%s: no eta gradient", cs->name);
    cudaCheck(cudaFree(d_acc));
    cudaCheck(cudaFree(d_db));
    free(dbk); free(before); free(cpu); free(gpu);
    return e;
}

GPU_TEST(bank_scan_backward_vs_cpu_reference) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    const double tol_tok = 2e-5, tol_eta = gb_is_bf16 ? 3e-2 : 1e-4;  // BF16: eta's "old" term reads the bf16 snapshot
    const int n = (int)(sizeof(gb_backward_cases) / sizeof(gb_backward_cases[0]));
    for (int i = 0; i < n; i++) {
        const GbCase* cs = &gb_backward_cases[i];
        GbRun R;
        gb_setup(&R, cs, 9001 + 17 * i);
        gb_gpu_forward(&R, &ctx);
        GbForward f = gb_compare_forward(&R);
        printf("    %-24s B=%d T=%-4d S=%-3d W=%-3d Me=%-2d Ms=%-2d Hkv=%-2d Dh=%-3d: forward %ld decisions, %ld wrong\n", cs->name,
               cs->B, cs->T, cs->S, cs->W, cs->Me, cs->Ms, cs->Hkv, cs->Dh, f.decisions, f.decision_bad);
        CHECK(f.decision_bad == 0 && f.content_bad == 0, "%s: the forward the backward replays is wrong", cs->name);
        gb_check_need(&R);
        static const int flags[5][3] = {{1, 1, 1}, {1, 0, 0}, {0, 1, 0}, {0, 0, 0}, {1, 1, 0}};  // detach, cross, NULL grads
        for (int q = 0; q < 5; q++) {
            GbBackward e = gb_backward_flags(&R, &ctx, flags[q][0], flags[q][1], flags[q][2], 555 + 13 * q + i);
            CHECK(e.dk <= tol_tok && e.dv <= tol_tok && e.dgate <= tol_tok, "%s detach %d cross %d: token gradients rel err "
                  "%.3g %.3g %.3g > %.1e", cs->name, flags[q][0], flags[q][1], e.dk, e.dv, e.dgate, tol_tok);
            CHECK(e.deta <= tol_eta, "%s detach %d cross %d: deta rel err %.3g > %.1e", cs->name, flags[q][0], flags[q][1], e.deta, tol_eta);
        }
        gb_free(&R);
    }
    gpu_context_free(&ctx);
}

// Two runs of the forward and of the backward give the same bits (no atomics, fixed orders).
GPU_TEST(bank_scan_deterministic) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    GbRun R;
    GbCase cs = gb_backward_cases[0];
    gb_setup(&R, &cs, 4242);
    gb_gpu_forward(&R, &ctx);
    void* first = gb_download(R.d_tape, R.tape_bytes);
    gb_gpu_forward(&R, &ctx);
    void* second = gb_download(R.d_tape, R.tape_bytes);
    // padding between the carved buffers keeps the 0x7f fill in both runs
    CHECK(memcmp(first, second, R.tape_bytes) == 0, "two forward scans wrote different tapes");
    ModelConfig c = R.c;
    c.detach_evicted = 0;
    BankScanShape sh = R.sh;
    sh.cfg = c;
    const size_t nt = R.BT * R.kvd, nacc = 2 * nt + R.BT + cs.Hkv;
    float* db = (float*)coda_malloc_or_die(2 * R.n_bank * sizeof(float) + 4, "slot gradients");
    uint64_t s = 99;
    for (size_t i = 0; i < 2 * R.n_bank; i++) db[i] = gb_uniform(&s, -1.f, 1.f);
    float* d_db = gb_upload_f32(db, 2 * R.n_bank);
    float* out[2];
    for (int run = 0; run < 2; run++) {
        float* d_acc = (float*)cuda_malloc_or_die(nacc * sizeof(float), "accumulators");
        cudaCheck(cudaMemset(d_acc, 0, nacc * sizeof(float)));
        bank_scan_backward(&ctx, &sh, &R.tape, d_db, d_db + R.n_bank, R.d_k, R.d_v, R.d_eta, d_acc, d_acc + nt, d_acc + 2 * nt,
                           d_acc + 2 * nt + R.BT, R.d_scratch);
        cudaCheck(cudaStreamSynchronize(ctx.stream));
        out[run] = (float*)gb_download(d_acc, nacc * sizeof(float));
        cudaCheck(cudaFree(d_acc));
    }
    CHECK(memcmp(out[0], out[1], nacc * sizeof(float)) == 0, "two reverse scans gave different gradients");
    free(first); free(second); free(out[0]); free(out[1]); free(db);
    cudaCheck(cudaFree(d_db));
    gb_free(&R);
    gpu_context_free(&ctx);
}
