// ppl_gpu.cuh — the GPU backend of the perplexity procedures (ppl.h's PplScorer) on the one GPU
// model (model.cuh): a window is one forward of B = 1 row through every layer, unbounded or bounded
// (the bounded forward is the chunked prefill of docs/spec.md §2.3 from an empty state, i.e.
// scan-then-attend, the same kernels as phase-2 training). Windows shorter than the allocated T are
// padded after their end: attention is causal and a block never sees a later block's write, so the
// padding changes nothing before it (its targets are -1).
//
// Bounded models start each window from an empty state whose bank contents follow the config's
// mem_init, drawn exactly as the CPU reference draws them (layer l from seed + l, bank_reset), so the
// GPU and CPU scorers see the same state. The streaming procedure (§3.2c: one state carried across
// windows) needs the state after a window as the start of the next; the GPU model does not carry it
// yet, so the GPU scorer refuses it (the CPU scorer runs it).
#pragma once
#include "checkpoint.cuh"
#include "cpu/reference.h"
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
    GpuModel* m;       // activations for B = 1 and the longest window
    int* tok;          // [T] host: the window, padded
    int* tgt;          // [T] host: its targets (-1: not scored)
    int fresh;         // bounded: the state has been reset since the last window
} GpuScorer;

static inline void gpu_scorer__reset(void* ctx) { ((GpuScorer*)ctx)->fresh = 1; }

static inline int gpu_scorer__score(void* ctx, const int* tok, int len, int first, PplResult* r, CodaError* err) {
    GpuScorer* g = (GpuScorer*)ctx;
    GpuModel* m = g->m;
    if (m->cfg.bounded && !g->fresh)
        return coda_errorf(err, "the GPU model does not carry a bounded state from one window to the next yet (the streaming "
                                "procedure); run it with --device cpu, or use --procedure chunked / sliding");
    if (len > m->T) return coda_errorf(err, "a window of %d tokens is longer than the %d the GPU model was set up for", len, m->T);
    g->fresh = 0;
    if (first >= len) return 0;  // nothing to score (and no state to advance: the next window resets it)
    for (int i = 0; i < m->T; i++) {
        g->tok[i] = tok[i < len ? i : len - 1];
        g->tgt[i] = (i + 1 < len && i + 1 >= first) ? tok[i + 1] : -1;
    }
    int scored = 0;
    double sum = gpu_model_forward(m, g->tok, g->tgt, 0.0f, &scored);
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
    gpu_model_alloc_acts(m, 1, max_len, 0, chunk_rows);
    gpu_model_bank_init_like_cpu(m, seed);
    g->tok = (int*)coda_malloc_or_die(sizeof(int) * 2 * (size_t)max_len, "window tokens");
    g->tgt = g->tok + max_len;
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
    free(g->tok);
    memset(g, 0, sizeof(*g));
}
