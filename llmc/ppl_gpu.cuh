// ppl_gpu.cuh — the GPU backend of the perplexity procedures (ppl.h's PplScorer) on the one GPU
// model (model.cuh): a window is one forward of B = 1 row through every layer, unbounded or bounded
// (the bounded forward is the chunked prefill of docs/spec.md §2.3 from an empty state, i.e.
// scan-then-attend, the same kernels as phase-2 training). Windows shorter than the allocated T are
// run at their own length on the activations of the longest (one row: every layout is a prefix).
//
// Bounded models start each window after a reset from an empty state whose bank contents follow the
// config's mem_init, drawn exactly as the CPU reference draws them (layer l from seed + l,
// bank_reset), so the GPU and CPU scorers see the same state. Each window's final state is kept (in
// the decoder's state layout, llmc/decode.cuh), and a window without a reset before it continues it
// (model.cuh's GpuCarry): the streaming procedure (§3.2c) on the GPU.
#pragma once
#include "checkpoint.cuh"
#include "cpu/reference.h"
#include "decode.cuh"
#include "model.cuh"
#include "overrides.h"
#include "ppl.h"

// Loads DIR (config.json + weights; coda.c checkpoint or HF Mistral directory) into a GPU model for
// evaluation, with the command-line attention overrides applied as for the CPU model
// (config_load_with_overrides; CoDA tensors the checkpoint lacks keep their initial values). Nothing
// trains.
static inline int gpu_eval_model_load(GpuModel* m, const char* dir, const ConfigOverrides* ov, HfLoadReport* rep, CodaError* err) {
    ModelConfig c;
    if (config_load_with_overrides(dir, ov, &c, err) != 0) return -1;
    gpu_model_create(m, &c, TRAIN_NONE);
    gpu_model_init_random(m, 1234, 1);  // the CoDA tensors a checkpoint may lack; the load supplies the rest
    if (checkpoint_load_weights(m, dir, rep, err) != 0) { gpu_model_free(m); return -1; }
    return 0;
}

// Every bounded layer's initial bank contents into m->bank_init ([L][2][B][Hkv][Me+Ms][Dh] fp32, k
// then v; allocated once), drawn as layer_states_reset draws them on the CPU. mem_init zeros: NULL.
static void gpu_model_bank_init_like_cpu(GpuModel* m, uint64_t seed) {
    const ModelConfig* c = &m->cfg;
    if (!c->bounded || c->mem_init == MEM_INIT_ZEROS || c->n_exact + c->n_summary == 0) return;
    const int Hkv = c->n_kv_heads, Dh = c->head_dim, W = c->window, Mb = c->n_exact + c->n_summary, L = c->n_layers;
    const size_t per = (size_t)m->B * Hkv * Mb * Dh;
    float* host = (float*)coda_malloc_or_die(sizeof(float) * 2 * per * L, "bank init");
    BankState_f32 st;
    bank_alloc_f32(&st, c);
    for (int l = 0; l < L; l++) {
        bank_reset_f32(&st, c->mem_init, seed + (uint64_t)l);
        for (int kv = 0; kv < 2; kv++)
            for (int b = 0; b < m->B; b++)  // every row starts from the same contents, as the CPU's reset gives each row
                for (int g = 0; g < Hkv; g++)
                    for (int s = 0; s < Mb; s++)
                        memcpy(host + (size_t)l * 2 * per + kv * per + (((size_t)b * Hkv + g) * Mb + s) * Dh,
                               (kv ? bank_v_f32(&st, g, W + s) : bank_k_f32(&st, g, W + s)), sizeof(float) * Dh);
    }
    bank_free_f32(&st);
    if (!m->bank_init) m->bank_init = (float*)cuda_malloc_or_die(sizeof(float) * 2 * per * L, "bank init");
    cudaCheck(cudaMemcpy(m->bank_init, host, sizeof(float) * 2 * per * L, cudaMemcpyHostToDevice));
    free(host);
}

typedef struct {
    GpuModel* m;       // activations for B = 1 and the longest window (bounded: with carried-in rows)
    int* tgt;          // [T] host: the window's targets (-1: not scored)
    int fresh;         // bounded: the state has been reset since the last window
    GpuDecodeState st; // bounded: the state after the last window
    long long held;    // tokens st holds
} GpuScorer;

static inline void gpu_scorer__reset(void* ctx) { ((GpuScorer*)ctx)->fresh = 1; }

static inline int gpu_scorer__score(void* ctx, const int* tok, int len, int first, PplResult* r, CodaError* err) {
    GpuScorer* g = (GpuScorer*)ctx;
    GpuModel* m = g->m;
    const int bounded = m->cfg.bounded, carry = bounded && !g->fresh;
    if (len > m->T_alloc)
        return coda_errorf(err, "a window of %d tokens is longer than the %d the GPU model was set up for", len, m->T_alloc);
    if (carry && g->held + len > (long long)INT_MAX) return coda_errorf(err, "streaming past 2^31 tokens is not supported");
    gpu_model_set_len(m, len);
    for (int i = 0; i < len; i++) g->tgt[i] = (i + 1 < len && i + 1 >= first) ? tok[i + 1] : -1;
    int scored = 0;
    double sum;
    if (!bounded) {
        sum = gpu_model_forward(m, tok, g->tgt, 0.0f, &scored);
    } else if (!carry) {  // from the empty state (m->bank_init), keeping the final state in st
        m->layer_hook = decode_state_layer_hook;
        m->hook_ctx = &g->st;
        sum = gpu_model_forward(m, tok, g->tgt, 0.0f, &scored);
        m->layer_hook = NULL;
        m->hook_ctx = NULL;
    } else {  // continuing st
        sum = gpu_model_forward_state(m, &g->st, g->held, tok, g->tgt, &scored);
    }
    if (bounded) g->held = (carry ? g->held : 0) + len;
    g->fresh = 0;
    r->nll_sum += sum;
    r->n_scored += scored;
    return 0;
}

// The scorer of GPU model m, whose activations are allocated here for windows of up to max_len
// tokens (B = 1, no recompute, logits in chunks of chunk_rows; 0 = all). seed: the initial bank
// contents of each reset (bounded; as cpu_scorer's). Free with gpu_scorer_free.
static inline PplScorer gpu_scorer(GpuScorer* g, GpuModel* m, int max_len, int chunk_rows, uint64_t seed) {
    memset(g, 0, sizeof(*g));
    g->m = m;
    gpu_model_alloc_acts_carry(m, max_len, 0, chunk_rows);
    gpu_model_bank_init_like_cpu(m, seed);
    if (m->cfg.bounded) gpu_decode_state_alloc(&g->st, &m->cfg, 0);
    g->tgt = (int*)coda_malloc_or_die(sizeof(int) * (size_t)max_len, "window targets");
    g->fresh = 1;
    PplScorer s;
    memset(&s, 0, sizeof(s));
    s.ctx = g;
    s.vocab_size = m->cfg.vocab_size;
    s.has_state = m->cfg.bounded;
    s.reset = gpu_scorer__reset;
    s.score = gpu_scorer__score;
    return s;
}
static inline void gpu_scorer_free(GpuScorer* g) {
    if (g->st.mem) gpu_decode_state_free(&g->st);
    free(g->tgt);
    memset(g, 0, sizeof(*g));
}
