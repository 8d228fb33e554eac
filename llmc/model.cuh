// model.cuh — the model on one GPU: parameter memory laid out by the ParamTable, activations,
// forward, backward and the AdamW update. Used by train_coda.cu (training, phases 0, 1 and 2) and
// the GPU tests. Every attention kind of the 2x2 is a mode of the same layer: GQA or CoDA, unbounded
// or bounded. A bounded layer (phase 2) trains as the scan-then-attend of docs/design.md §5: the write gate and the
// bank scan over the whole sequence (bank_scan.cuh), then one attention launch over every block's
// key set (coda_attention.cuh), and in the backward the reverse scan into the evicted tokens and eta.
// Each sequence starts from an empty, zero-initialised state (the reference's training forward);
// at inference a forward may continue a state instead (GpuCarry below: a prompt after a loaded state,
// the streaming perplexity's next chunk).
//
// Memory (docs/design.md §3, numerics policy):
//   params   floatX, every tensor, table order (frozen tensors exist only here)
//   master   fp32, trainable tensors only, in a compact layout (train_offset[i] = offset or -1)
//   grad     fp32, same compact layout (weight gradients straight from cuBLASLt in fp32)
//   adam_m/v fp32, same compact layout
// Under ZeRO-1 (llmc/ddp.cuh) grad is padded to the ranks' equal shards and master / adam_m / adam_v
// are NULL: each rank's Ddp holds its slice of them (gpu_model_shard_optimizer).
// Activations are floatX with fp32 norm statistics and log-sum-exps. With recompute on, all layers
// share one set of per-layer activations and the backward re-runs each layer's forward first, so
// only the residual stream entering each layer is kept. Without recompute a layer keeps only what its
// backward reads: the normed inputs and SwiGLU output feed nothing but the gradients of their weights,
// so where those are frozen (phases 1 and 2: the MLP) all layers share one buffer for them
// (param_layer_keeps; 9 GiB less at Mistral-7B phase 1, T = 8192).
//
// Timing (step_timer.cuh): with m->timer set, every GPU op of the forward, backward and update is
// bracketed by events under a category (STEP_TIMED); with it NULL (the default) each hook is a branch.
#pragma once
#include <math.h>
#include "adamw.cuh"
#include "bank_scan.cuh"
#include "classifier.cuh"
#include "coda_attention.cuh"
#include "config.h"
#include "cuda_common.cuh"
#include "elementwise.cuh"
#include "encoder.cuh"
#include "global_norm.cuh"
#include "matmul.cuh"
#include "optim.h"
#include "params.h"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "step_timer.cuh"
#include "swiglu.cuh"
#include "write_gate.cuh"

typedef struct {
    floatX *hn1, *hn2;            // [BT, D] normed inputs of attention and MLP
    float *rstd1, *rstd2;         // [BT]
    floatX *q, *k, *v;            // [BT, H*Dh], [BT, Hkv*Dh] x2 (q, k after RoPE)
    floatX* lam;                  // [BT, H] lambda logits (before the sigmoid)
    floatX *a_sig, *a_noise;      // [BT, H*Dh]
    floatX* attn_out;             // [BT, H*Dh] input of o_proj
    float *lse, *hn_rstd;         // [2*B*H*T], [BT*H]
    floatX* resid_mid;            // [BT, D] residual after attention
    floatX *mlp_gate, *mlp_up, *mlp_act;  // [BT, F]
    // which of hn1, hn2, mlp_act this set owns; the others point into the model's fwd_hn / fwd_act,
    // shared by every layer whose backward does not read them (param_layer_keeps)
    LayerKeeps owns;
    // bounded layers
    float* wgate;                 // [BT] write gate (fp32)
    BankTape tape;                // the bank each block attends to, and the summary writes (bank_scan.cuh)
    void* tape_mem;
} LayerActs;

struct GpuModel;

// A bounded forward that continues a state (inference: one row, no backward), docs/spec.md §2.3 with
// state.pos = pos0: positions start at pos0, block 0's ring is the state's last hist = min(pos0, W)
// tokens, the banks start from the state's contents and flags. The caller owns the state; per layer,
// after q/k/v, RoPE and the write gate and before the scan, fill(m, l, ctx) writes layer l's
// carried-in ring into rows [-hist, 0) of its k, v (RoPE'd, floatX) and wgate (fp32) — the rows
// gpu_model_alloc_acts_carry allocates in front — and the banks into m->carry_bank_k/_v and
// m->carry_flags (BankScanInit's layout); the layer hook then reads the state after the forward.
typedef struct {
    void (*fill)(struct GpuModel* m, int layer, void* ctx);  // NULL: no carry (the forward starts empty)
    void* ctx;
    int hist, pos0;
} GpuCarry;

typedef struct GpuModel {
    ModelConfig cfg;
    ParamTable table;             // dtype = floatX
    GpuContext ctx;
    floatX* params;
    long long* train_offset;      // [table.n] into the fp32 buffers, -1 = frozen
    size_t n_train;               // elements of the fp32 buffers (trainable tensors, each aligned)
    float *master, *grad, *adam_m, *adam_v;
    // the AdamW segment table of the compact layout (one segment per trainable tensor, its group's
    // lr/wd by index): built with the buffers, so a step is one launch (adamw_table_update)
    AdamWTable adamw;
    int adam_step;
    // 1 from gpu_model_zero_grad to the end of the next backward: the weight gradients of matmuls are
    // then written with beta 0 (overwritten), so zero_grad need not clear them (~5 GB at 7B phase 1)
    int grad_fresh;
    // activations for B x T
    int B, T, recompute, chunk_rows;
    int T_alloc;                  // the T the activations were allocated for (gpu_model_set_len may run fewer)
    int *tokens, *targets;        // device [BT]
    floatX* resid;                // [(L+1) * BT * D] residual stream entering each layer; [L] = final
    LayerActs* layers;            // [L], or [1] with recompute
    // forward intermediates no backward reads (param_layer_keeps; NULL if every layer keeps its own):
    // [BT, D] for the normed inputs, [BT, F] for the SwiGLU output. One layer's hn1 and hn2 may both be
    // fwd_hn: hn1's last reader (q/k/v, lambda, the write gate) runs before hn2 is written.
    floatX *fwd_hn, *fwd_act;
    // set before gpu_model_alloc_acts to keep every layer's intermediates whatever trains (diagnostics
    // that read them after the forward, e.g. the per-activation parity report)
    int keep_all_acts;
    floatX* hf;                   // [BT, D] final-normed hidden
    float* rstdf;                 // [BT]
    floatX* logits;               // [chunk_rows, V] logits, then their gradients
    float* losses;                // [BT]
    float* scalar;                // device scalar (loss sum, norm)
    // backward scratch
    floatX *dres, *dmid, *dh, *dhf, *dq, *dk, *dv, *dlam, *dattn, *dact, *dgate, *dup;
    void* scratch;                // attention backward / encoder backward
    size_t scratch_bytes;
    // bounded layers: scan scratch, and the backward's bank-slot and evicted-token gradients
    void* scan_scratch;
    float *dbank_k, *dbank_v;     // [B][n_blocks][Hkv][Me+Ms][Dh]
    float *dk_acc, *dv_acc;       // [BT, Hkv*Dh] token gradients through the banks (detach_evicted off)
    float* dwgate;                // [BT] gradient w.r.t. the write gate (detach_evicted off)
    // bounded layers at inference: each layer's initial bank contents, k then v, [L][2][B][Hkv][Me+Ms][Dh]
    // fp32 (docs/spec.md §2.1 mem_init random_normal), or NULL: an all-zero state (training, §2.5)
    float* bank_init;
    // a continued forward (GpuCarry; gpu_model_alloc_acts_carry): carried-in rows in front of each
    // layer's k, v, wgate, and the layer's bank state before the forward ([Hkv][Me+Ms][Dh] fp32 each;
    // flags [3][Me] exact used / LRU stamp / source then [Ms] summary used)
    int hist_cap;
    GpuCarry carry;
    float *carry_bank_k, *carry_bank_v;
    int* carry_flags;
    StepTimer* timer;             // per-category GPU time of the ops (NULL = off, the default)
    // called at the end of every layer's forward, while that layer's activations and bank scan
    // scratch are live (NULL = none): the decode prefill (decode.cuh) copies each layer's final
    // state out here, which works with recompute and with the one scan scratch all layers share
    void (*layer_hook)(struct GpuModel* m, int layer, void* hook_ctx);
    void* hook_ctx;
} GpuModel;

static inline floatX* gm_param(const GpuModel* m, ParamKind k, int layer) {
    const ParamTensor* t = param_find(&m->table, k, layer);
    return t ? m->params + t->offset : NULL;
}
// fp32 gradient of a tensor, NULL if it is frozen or absent.
static inline float* gm_grad(const GpuModel* m, ParamKind k, int layer) {
    const ParamTensor* t = param_find(&m->table, k, layer);
    if (!t) return NULL;
    long long off = m->train_offset[t - m->table.tensors];
    return off < 0 ? NULL : m->grad + off;
}

// Parameter memory for a config; values are set by gpu_model_init_random / gpu_model_load_host.
static void gpu_model_create(GpuModel* m, const ModelConfig* c, TrainPolicy policy) {
    memset(m, 0, sizeof(*m));
    m->cfg = *c;
    gpu_context_init(&m->ctx);
    param_table_build(&m->table, c, FLOATX_DTYPE);
    param_table_set_trainable(&m->table, policy);
    m->params = (floatX*)cuda_malloc_or_die(sizeof(floatX) * m->table.total, "parameters");
    m->train_offset = (long long*)coda_malloc_or_die(sizeof(long long) * m->table.n, "trainable offsets");
    m->n_train = param_compact_offsets(&m->table, m->train_offset);
    size_t nt = m->n_train ? m->n_train : 1;
    m->master = (float*)cuda_malloc_or_die(sizeof(float) * nt, "fp32 master weights");
    m->grad = (float*)cuda_malloc_or_die(sizeof(float) * nt, "fp32 gradients");
    m->adam_m = (float*)cuda_malloc_or_die(sizeof(float) * nt, "AdamW first moments");
    m->adam_v = (float*)cuda_malloc_or_die(sizeof(float) * nt, "AdamW second moments");
    cudaCheck(cudaMemset(m->master, 0, sizeof(float) * nt));  // the alignment gaps: a checkpoint's bytes are deterministic
    cudaCheck(cudaMemset(m->grad, 0, sizeof(float) * nt));
    cudaCheck(cudaMemset(m->adam_m, 0, sizeof(float) * nt));
    cudaCheck(cudaMemset(m->adam_v, 0, sizeof(float) * nt));
    AdamWSegment* seg = (AdamWSegment*)coda_malloc_or_die(sizeof(AdamWSegment) * (size_t)(m->table.n ? m->table.n : 1), "AdamW segments");
    const int n_seg = adamw_segments_from_table(&m->table, m->train_offset, seg, m->table.n);
    adamw_table_create(&m->adamw, seg, n_seg, m->n_train);
    free(seg);
    m->scalar = (float*)cuda_malloc_or_die(sizeof(float), "scalar");
}

// ZeRO-1 (llmc/ddp.cuh): grad grows to grad_len >= n_train elements, all zero (the reduce-scatter
// sends world equal shards; the padding and the alignment gaps are never written by the backward,
// so they stay zero), and the full-size master / adam_m / adam_v are freed (at Mistral-7B phase 1,
// 16 GB): the rank's Ddp holds its slice of them, and gpu_model_update refuses to run.
static void gpu_model_shard_optimizer(GpuModel* m, size_t grad_len) {
    if (grad_len < m->n_train) coda_fatal("gpu_model_shard_optimizer: %zu gradient elements for %zu trainable", grad_len, m->n_train);
    float* ptrs[] = {m->grad, m->master, m->adam_m, m->adam_v};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) cudaCheck(cudaFree(ptrs[i]));
    m->master = m->adam_m = m->adam_v = NULL;
    const size_t n = grad_len ? grad_len : 1;
    m->grad = (float*)cuda_malloc_or_die(sizeof(float) * n, "fp32 gradients (padded to the ZeRO shards)");
    cudaCheck(cudaMemset(m->grad, 0, sizeof(float) * n));
}

// Masters = the floatX parameters, widened (after init or load). Under ZeRO (no full masters here)
// nothing: ddp_sync_masters widens the rank's slice.
static void gpu_model_sync_masters(GpuModel* m) {
    if (!m->master) return;
    for (int i = 0; i < m->table.n; i++) {
        if (m->train_offset[i] < 0) continue;
        const ParamTensor* t = &m->table.tensors[i];
        floatX_to_float(&m->ctx, m->master + m->train_offset[i], m->params + t->offset, t->numel);
    }
    cudaCheck(cudaStreamSynchronize(m->ctx.stream));
}

// Loads all parameters from a host fp32 buffer laid out by the table (tests, checkpoint import).
static void gpu_model_load_host(GpuModel* m, const float* host) {
    host_to_floatX(m->params, host, m->table.total);
    gpu_model_sync_masters(m);
}
static void gpu_model_read_host(const GpuModel* m, float* host) { floatX_to_host(host, m->params, m->table.total); }

// Init from the table's init kinds, drawn on the host (deterministic in the seed; not the same values
// as the CPU reference's model_init walk). new_only: only the tensors a base checkpoint lacks
// (ROLE_CODA_NEW) get values, the rest stay 0 until the checkpoint is loaded over them.
static void gpu_model_init_random(GpuModel* m, uint64_t seed, int new_only) {
    // Tensor by tensor, so the host holds one tensor, not the model (7B: 29 GB of fp32), drawn in
    // parallel by param_init_fill (same values for any thread count).
    size_t maxn = 1;
    for (int i = 0; i < m->table.n; i++) maxn = m->table.tensors[i].numel > maxn ? m->table.tensors[i].numel : maxn;
    float* host = (float*)coda_malloc_or_die(maxn * sizeof(float), "host init buffer");
    cudaCheck(cudaMemset(m->params, 0, sizeof(floatX) * m->table.total));  // padding, and what a load must supply
    for (int i = 0; i < m->table.n; i++) {
        const ParamTensor* t = &m->table.tensors[i];
        if (new_only && PARAM_KINDS[t->kind].role != ROLE_CODA_NEW) continue;
        param_init_fill(&m->cfg, t, i, seed, host);
        host_to_floatX(m->params + t->offset, host, t->numel);
    }
    free(host);
    gpu_model_sync_masters(m);
}

// hist_cap: rows allocated in front of k, v and wgate for a continued forward's carried-in ring.
// owns: which of hn1, hn2, mlp_act get their own memory; the others are fwd_hn / fwd_act.
static void layer_acts_alloc(LayerActs* a, const ModelConfig* c, size_t BT, int B, int T, const BankScanShape* bs, int hist_cap,
                             LayerKeeps owns, floatX* fwd_hn, floatX* fwd_act) {
    size_t D = c->dim, F = c->ffn_dim, QD = config_qdim(c), KVD = config_kvdim(c), H = c->n_heads;
    const char* w = "activations";
    a->owns = owns;
    a->hn1 = owns.hn1 ? (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * D, w) : fwd_hn;
    a->hn2 = owns.hn2 ? (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * D, w) : fwd_hn;
    a->rstd1 = (float*)cuda_malloc_or_die(sizeof(float) * BT, w);
    a->rstd2 = (float*)cuda_malloc_or_die(sizeof(float) * BT, w);
    a->q = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * QD, w);
    a->k = (floatX*)cuda_malloc_or_die(sizeof(floatX) * (BT + hist_cap) * KVD, w) + (size_t)hist_cap * KVD;
    a->v = (floatX*)cuda_malloc_or_die(sizeof(floatX) * (BT + hist_cap) * KVD, w) + (size_t)hist_cap * KVD;
    a->lam = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * H, w);
    a->a_sig = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * QD, w);
    a->a_noise = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * QD, w);
    a->attn_out = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * QD, w);
    a->lse = (float*)cuda_malloc_or_die(sizeof(float) * 2 * (size_t)B * H * T, w);
    a->hn_rstd = (float*)cuda_malloc_or_die(sizeof(float) * BT * H, w);
    a->resid_mid = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * D, w);
    a->mlp_gate = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * F, w);
    a->mlp_up = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * F, w);
    a->mlp_act = owns.mlp_act ? (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * F, w) : fwd_act;
    if (c->bounded) {
        a->wgate = (float*)cuda_malloc_or_die(sizeof(float) * (BT + hist_cap), w) + hist_cap;
        a->tape_mem = cuda_malloc_or_die(bank_tape_bytes(bs), "bank tape");
        bank_tape_carve(&a->tape, a->tape_mem, bs);
    }
}
static void layer_acts_free(LayerActs* a, const ModelConfig* c, int hist_cap) {
    const size_t KVD = config_kvdim(c);
    void* ptrs[] = {a->owns.hn1 ? a->hn1 : NULL, a->owns.hn2 ? a->hn2 : NULL, a->rstd1, a->rstd2, a->q, a->k - hist_cap * KVD,
                    a->v - hist_cap * KVD, a->lam, a->a_sig, a->a_noise, a->attn_out, a->lse, a->hn_rstd, a->resid_mid,
                    a->mlp_gate, a->mlp_up, a->owns.mlp_act ? a->mlp_act : NULL};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) cudaCheck(cudaFree(ptrs[i]));
    if (a->wgate) cudaCheck(cudaFree(a->wgate - hist_cap));
    cudaCheck(cudaFree(a->tape_mem));
}

static CodaAttnShape gm_attn_shape(const GpuModel* m) {
    const ModelConfig* c = &m->cfg;
    CodaAttnShape s;
    memset(&s, 0, sizeof(s));  // impl = CA_IMPL_AUTO
    s.B = m->B; s.T = m->T; s.H = c->n_heads; s.Hkv = c->n_kv_heads; s.Dh = c->head_dim;
    s.differential = c->differential;
    s.head_norm_full = c->differential && c->head_norm == HEAD_NORM_FULL;
    s.head_norm_eps = c->head_norm_eps;
    if (c->bounded) {
        s.block = c->block_size;
        s.window = c->window;
        s.bank_slots = c->n_exact + c->n_summary;
        s.unmasked_memory = !c->mask_unused_memory;
        s.grad_cut = !c->cross_block_grad;
        s.hist = m->carry.fill ? m->carry.hist : 0;
    }
    return s;
}
static BankScanShape gm_scan_shape(const GpuModel* m) {
    BankScanShape s;
    memset(&s, 0, sizeof(s));
    s.cfg = m->cfg;
    s.B = m->B; s.T = m->T;
    s.n_blocks = (m->T + m->cfg.block_size - 1) / m->cfg.block_size;
    if (m->carry.fill) { s.hist = m->carry.hist; s.pos0 = m->carry.pos0; }
    return s;
}
static CodaAttnInputs gm_attn_inputs(const GpuModel* m, const LayerActs* a, int l) {
    CodaAttnInputs in;
    memset(&in, 0, sizeof(in));
    in.q = a->q; in.k = a->k; in.v = a->v;
    in.theta = gm_param(m, PK_THETA, l);
    in.lam_logit = a->lam;
    in.head_norm = gm_param(m, PK_HEAD_NORM, l);
    in.bank.k = a->tape.k; in.bank.v = a->tape.v; in.bank.allowed = a->tape.allowed;
    return in;
}
static CodaAttnSaved gm_attn_saved(const LayerActs* a) {
    CodaAttnSaved sv = {a->attn_out, a->a_sig, a->a_noise, a->lse, a->hn_rstd};
    return sv;
}

static void gpu_model_free_acts(GpuModel* m);

// Activations for B rows of T tokens (any earlier set is freed first). chunk_rows: rows of logits
// materialised at once (0 = all). hist_cap: carried-in rows in front of k, v, wgate (bounded, B = 1).
static void gpu_model__alloc_acts(GpuModel* m, int B, int T, int recompute, int chunk_rows, int hist_cap) {
    const ModelConfig* c = &m->cfg;
    gpu_model_free_acts(m);  // a model holds one set of activations
    m->hist_cap = hist_cap;
    if (c->head_dim != 64 && c->head_dim != 128)
        coda_fatal("head_dim %d: the GPU attention kernel supports head_dim 64 and 128 (Mistral-7B: 128, SmolLM2: 64)", c->head_dim);
    if (c->bounded && c->n_exact + c->n_summary > CA_MAX_BANK_SLOTS)
        coda_fatal("bounded config: n_exact + n_summary = %d bank slots, the GPU attention takes at most %d per block (the paper's "
                   "large state has 256)", c->n_exact + c->n_summary, CA_MAX_BANK_SLOTS);
    m->B = B; m->T = m->T_alloc = T; m->recompute = recompute;
    size_t BT = (size_t)B * T, D = c->dim, F = c->ffn_dim, QD = config_qdim(c), KVD = config_kvdim(c);
    m->chunk_rows = (chunk_rows <= 0 || (size_t)chunk_rows > BT) ? (int)BT : chunk_rows;
    const char* w = "activations";
    m->tokens = (int*)cuda_malloc_or_die(sizeof(int) * BT, w);
    m->targets = (int*)cuda_malloc_or_die(sizeof(int) * BT, w);
    m->resid = (floatX*)cuda_malloc_or_die(sizeof(floatX) * (c->n_layers + 1) * BT * D, "residual stream");
    int n_sets = recompute ? 1 : c->n_layers;
    m->layers = (LayerActs*)coda_calloc_or_die((size_t)n_sets, sizeof(LayerActs), w);
    const BankScanShape bs = gm_scan_shape(m);
    // With recompute the one set is rebuilt before each layer's backward, so it keeps everything; else
    // each layer keeps what its backward reads, and the rest goes to one buffer the layers share.
    const int keep_all = recompute || m->keep_all_acts;
    const LayerKeeps all = {1, 1, 1};
    for (int l = 0; l < n_sets; l++) {
        const LayerKeeps k = keep_all ? all : param_layer_keeps(&m->table, c, l);
        // the shared buffers exist only once the first layer that gives its own up asks for them
        if ((!k.hn1 || !k.hn2) && !m->fwd_hn) m->fwd_hn = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * D, "forward-only normed inputs");
        if (!k.mlp_act && !m->fwd_act) m->fwd_act = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * F, "forward-only SwiGLU output");
        layer_acts_alloc(&m->layers[l], c, BT, B, T, &bs, hist_cap, k, m->fwd_hn, m->fwd_act);
    }
    m->hf = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * D, w);
    m->rstdf = (float*)cuda_malloc_or_die(sizeof(float) * BT, w);
    m->logits = (floatX*)cuda_malloc_or_die(sizeof(floatX) * (size_t)m->chunk_rows * c->vocab_size, "logits chunk");
    m->losses = (float*)cuda_malloc_or_die(sizeof(float) * BT, w);
    const char* g = "activation gradients";
    m->dres = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * D, g);
    m->dmid = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * D, g);
    m->dh = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * D, g);
    m->dhf = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * D, g);
    m->dq = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * QD, g);
    m->dattn = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * QD, g);
    m->dk = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * KVD, g);
    m->dv = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * KVD, g);
    m->dlam = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * c->n_heads, g);
    m->dact = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * F, g);
    m->dgate = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * F, g);
    m->dup = (floatX*)cuda_malloc_or_die(sizeof(floatX) * BT * F, g);
    CodaAttnShape s = gm_attn_shape(m);
    size_t a = coda_attention_scratch_bytes(&s), e = encoder_backward_scratch_bytes((int)BT, c->vocab_size);
    m->scratch_bytes = a > e ? a : e;
    m->scratch = cuda_malloc_or_die(m->scratch_bytes ? m->scratch_bytes : 1, "backward scratch");
    if (c->bounded) {
        const char* b = "bank gradients";
        size_t sb = bank_scan_scratch_bytes(&bs), wb = write_gate_scratch_bytes((int)BT, c->dim);
        m->scan_scratch = cuda_malloc_or_die(sb > wb ? sb : wb, "bank scan scratch");
        size_t nbank = (size_t)B * bs.n_blocks * KVD * (c->n_exact + c->n_summary);
        if (nbank) {
            m->dbank_k = (float*)cuda_malloc_or_die(sizeof(float) * nbank, b);
            m->dbank_v = (float*)cuda_malloc_or_die(sizeof(float) * nbank, b);
        }
        if (config_grads_through_banks(c)) {
            m->dk_acc = (float*)cuda_malloc_or_die(sizeof(float) * BT * KVD, b);
            m->dv_acc = (float*)cuda_malloc_or_die(sizeof(float) * BT * KVD, b);
            m->dwgate = (float*)cuda_malloc_or_die(sizeof(float) * BT, b);
        }
        if (hist_cap > 0) {
            const size_t nb = (size_t)KVD * (c->n_exact + c->n_summary);
            m->carry_bank_k = (float*)cuda_malloc_or_die(sizeof(float) * (nb ? 2 * nb : 1), "carried-in banks");
            m->carry_bank_v = m->carry_bank_k + nb;
            m->carry_flags = (int*)cuda_malloc_or_die(sizeof(int) * (3 * c->n_exact + c->n_summary + 1), "carried-in bank flags");
        }
    }
}
static void gpu_model_alloc_acts(GpuModel* m, int B, int T, int recompute, int chunk_rows) {
    gpu_model__alloc_acts(m, B, T, recompute, chunk_rows, 0);
}
// Activations for one row of T tokens whose forward may continue a state (GpuCarry): bounded models
// get W carried-in rows in front of every layer's k, v and write gate. recompute: the layers share one
// set of activations (a forward-only run keeps nothing per layer: long prompts in less memory).
static void gpu_model_alloc_acts_carry(GpuModel* m, int T, int recompute, int chunk_rows) {
    gpu_model__alloc_acts(m, 1, T, recompute, chunk_rows, m->cfg.bounded ? m->cfg.window : 0);
}
// The next forwards run T tokens on activations allocated for T_alloc >= T (one row: every buffer's
// layout for T is a prefix of its layout for T_alloc), e.g. a short last window of an evaluation.
static void gpu_model_set_len(GpuModel* m, int T) {
    if (m->B != 1 || T < 1 || T > m->T_alloc)
        coda_fatal("gpu_model_set_len: %d tokens on activations for %d rows of %d (one row, 1 <= T <= %d)", T, m->B, m->T_alloc, m->T_alloc);
    m->T = T;
}
// Sets (fill != NULL) or clears the carry of the next forwards; checks it fits the activations.
static void gpu_model_set_carry(GpuModel* m, const GpuCarry* cy) {
    const ModelConfig* c = &m->cfg;
    if (!cy || !cy->fill) { memset(&m->carry, 0, sizeof(m->carry)); return; }
    if (!c->bounded || m->B != 1 || cy->hist < 0 || cy->hist > m->hist_cap || cy->hist > cy->pos0 || cy->pos0 < 0 ||
        (long long)cy->pos0 + m->T > (long long)INT_MAX)
        coda_fatal("gpu_model_set_carry: a continued forward needs a bounded model, activations from gpu_model_alloc_acts_carry "
                   "(B = 1, %d carried-in rows), 0 <= hist <= min(pos0, W) and pos0 + T < 2^31 (got bounded=%d B=%d hist=%d pos0=%d T=%d)",
                   m->hist_cap, c->bounded, m->B, cy->hist, cy->pos0, m->T);
    m->carry = *cy;
}

static LayerActs* gm_layer_acts(const GpuModel* m, int l) { return &m->layers[m->recompute ? 0 : l]; }

// One transformer layer: resid[l] -> resid[l+1].
static void gpu_layer_forward(GpuModel* m, int l) {
    const ModelConfig* c = &m->cfg;
    const GpuContext* ctx = &m->ctx;
    StepTimer* tm = m->timer;
    LayerActs* a = gm_layer_acts(m, l);
    int N = m->B * m->T, D = c->dim, F = c->ffn_dim, QD = config_qdim(c), KVD = config_kvdim(c);
    floatX* x = m->resid + (size_t)l * N * D;
    floatX* next = x + (size_t)N * D;
    STEP_TIMED(tm, ST_NORM, rmsnorm_forward(ctx, a->hn1, a->rstd1, x, gm_param(m, PK_ATTN_NORM, l), N, D, c->norm_eps));
    STEP_TIMED(tm, ST_MATMUL_FWD, matmul_forward(ctx, a->q, a->hn1, gm_param(m, PK_Q, l), NULL, N, D, QD));
    STEP_TIMED(tm, ST_MATMUL_FWD, matmul_forward(ctx, a->k, a->hn1, gm_param(m, PK_K, l), NULL, N, D, KVD));
    STEP_TIMED(tm, ST_MATMUL_FWD, matmul_forward(ctx, a->v, a->hn1, gm_param(m, PK_V, l), NULL, N, D, KVD));
    if (c->differential)
        STEP_TIMED(tm, ST_MATMUL_FWD, matmul_forward(ctx, a->lam, a->hn1, gm_param(m, PK_LAMBDA_W, l), gm_param(m, PK_LAMBDA_B, l), N, D, c->n_heads));
    double base = config_rope_base(c);
    const GpuCarry* cy = m->carry.fill ? &m->carry : NULL;
    const long long pos0 = cy ? cy->pos0 : 0;  // position of row 0
    STEP_TIMED(tm, ST_ROPE, rope_apply(ctx, a->q, N, m->T, pos0, c->n_heads, c->head_dim, c->rope_layout, base, c->rope_bf16_positions, +1));
    STEP_TIMED(tm, ST_ROPE, rope_apply(ctx, a->k, N, m->T, pos0, c->n_kv_heads, c->head_dim, c->rope_layout, base, c->rope_bf16_positions, +1));
    if (c->bounded) {  // scan: the bank every block attends to, from the RoPE'd keys, values and gates
        const BankScanShape bs = gm_scan_shape(m);
        STEP_TIMED(tm, ST_BANK, write_gate_forward(ctx, a->wgate, a->hn1, gm_param(m, PK_WRITE_W, l), gm_param(m, PK_WRITE_B, l), N, D,
                                                   c->write_policy == WRITE_POLICY_GATED));
        BankScanInit init = {NULL, NULL, NULL, NULL};
        if (cy) {  // the state carried in: ring rows in front of k/v/wgate, banks and flags
            cy->fill(m, l, cy->ctx);
            init.k = m->carry_bank_k; init.v = m->carry_bank_v;
            init.e = m->carry_flags; init.s = m->carry_flags + 3 * c->n_exact;
        } else if (m->bank_init) {  // an empty state with mem_init contents
            const size_t per = (size_t)m->B * KVD * (c->n_exact + c->n_summary);  // one layer's k (or v) init
            init.k = m->bank_init + (size_t)l * 2 * per; init.v = init.k + per;
        }
        STEP_TIMED(tm, ST_BANK, bank_scan_forward(ctx, &bs, a->k, a->v, a->wgate, gm_param(m, PK_ETA, l), &init, &a->tape, m->scan_scratch));
    }
    CodaAttnShape s = gm_attn_shape(m);
    CodaAttnInputs in = gm_attn_inputs(m, a, l);
    CodaAttnSaved sv = gm_attn_saved(a);
    STEP_TIMED(tm, ST_ATTENTION_FWD, coda_attention_forward(ctx, &s, &in, &sv));
    STEP_TIMED(tm, ST_MATMUL_FWD, matmul_forward(ctx, a->resid_mid, a->attn_out, gm_param(m, PK_O, l), NULL, N, QD, D));
    STEP_TIMED(tm, ST_OTHER, residual_add(ctx, a->resid_mid, a->resid_mid, x, (size_t)N * D));
    STEP_TIMED(tm, ST_NORM, rmsnorm_forward(ctx, a->hn2, a->rstd2, a->resid_mid, gm_param(m, PK_MLP_NORM, l), N, D, c->norm_eps));
    STEP_TIMED(tm, ST_MATMUL_FWD, matmul_forward(ctx, a->mlp_gate, a->hn2, gm_param(m, PK_GATE, l), NULL, N, D, F));
    STEP_TIMED(tm, ST_MATMUL_FWD, matmul_forward(ctx, a->mlp_up, a->hn2, gm_param(m, PK_UP, l), NULL, N, D, F));
    STEP_TIMED(tm, ST_SWIGLU, swiglu_forward(ctx, a->mlp_act, a->mlp_gate, a->mlp_up, (size_t)N * F));
    STEP_TIMED(tm, ST_MATMUL_FWD, matmul_forward(ctx, next, a->mlp_act, gm_param(m, PK_DOWN, l), NULL, N, F, D));
    STEP_TIMED(tm, ST_OTHER, residual_add(ctx, next, next, a->resid_mid, (size_t)N * D));
    if (m->layer_hook) m->layer_hook(m, l, m->hook_ctx);
}

static const floatX* gm_head(const GpuModel* m) {
    return m->cfg.tie_embeddings ? gm_param(m, PK_EMBED, 0) : gm_param(m, PK_LM_HEAD, 0);
}
static float* gm_head_grad(const GpuModel* m) {
    return m->cfg.tie_embeddings ? gm_grad(m, PK_EMBED, 0) : gm_grad(m, PK_LM_HEAD, 0);
}

// Forward over tokens/targets (host arrays, B*T; targets < 0 are ignored, targets may be NULL).
// dloss_scale != 0 (training): the classifier also writes the loss gradient, d(dloss_scale * sum of
// token losses), and back-propagates it through the LM head at once (dhf, head weight gradient), chunk
// by chunk, so fp32 logits for every token never exist. Returns the sum of token losses; *n_scored
// (may be NULL) gets the number of targets >= 0.
static double gpu_model_forward(GpuModel* m, const int* tokens, const int* targets, float dloss_scale, int* n_scored) {
    const ModelConfig* c = &m->cfg;
    const GpuContext* ctx = &m->ctx;
    StepTimer* tm = m->timer;
    int N = m->B * m->T, D = c->dim, V = c->vocab_size;
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V) coda_fatal("token id %d at index %d is outside the vocabulary [0, %d)", tokens[i], i, V);
    int* tg = (int*)coda_malloc_or_die(sizeof(int) * N, "targets");
    int scored = 0;
    for (int i = 0; i < N; i++) {
        tg[i] = targets ? targets[i] : -1;
        if (tg[i] >= V) coda_fatal("target id %d at index %d is outside the vocabulary [0, %d)", tg[i], i, V);
        scored += tg[i] >= 0;
    }
    STEP_TIMED(tm, ST_OTHER, cudaCheck(cudaMemcpyAsync(m->tokens, tokens, sizeof(int) * N, cudaMemcpyHostToDevice, ctx->stream)));
    STEP_TIMED(tm, ST_OTHER, cudaCheck(cudaMemcpyAsync(m->targets, tg, sizeof(int) * N, cudaMemcpyHostToDevice, ctx->stream)));
    STEP_TIMED(tm, ST_EMBEDDING, encoder_forward(ctx, m->resid, m->tokens, gm_param(m, PK_EMBED, 0), N, D));
    for (int l = 0; l < c->n_layers; l++) gpu_layer_forward(m, l);
    STEP_TIMED(tm, ST_NORM, rmsnorm_forward(ctx, m->hf, m->rstdf, m->resid + (size_t)c->n_layers * N * D, gm_param(m, PK_FINAL_NORM, 0), N, D, c->norm_eps));
    // the LM head's matmuls are timed as matmuls; "classifier" is the softmax cross-entropy and loss sum
    for (int r0 = 0; r0 < N; r0 += m->chunk_rows) {
        int rows = N - r0 < m->chunk_rows ? N - r0 : m->chunk_rows;
        STEP_TIMED(tm, ST_MATMUL_FWD, matmul_forward(ctx, m->logits, m->hf + (size_t)r0 * D, gm_head(m), NULL, rows, D, V));
        STEP_TIMED(tm, ST_CLASSIFIER, crossentropy_fused(ctx, m->logits, m->losses + r0, m->targets + r0, rows, V, dloss_scale));
        if (dloss_scale != 0.0f) {
            STEP_TIMED(tm, ST_MATMUL_DGRAD, matmul_backward_input(ctx, m->dhf + (size_t)r0 * D, m->logits, gm_head(m), rows, D, V, 0));
            float* gh = gm_head_grad(m);
            if (gh) STEP_TIMED(tm, ST_MATMUL_WGRAD, matmul_backward_weight(ctx, gh, NULL, m->logits, m->hf + (size_t)r0 * D, rows, D, V, r0 > 0 || !m->grad_fresh));
        }
    }
    STEP_TIMED(tm, ST_CLASSIFIER, sum_losses(ctx, m->scalar, m->losses, N));
    float total = 0;
    cudaCheck(cudaMemcpyAsync(&total, m->scalar, sizeof(float), cudaMemcpyDeviceToHost, ctx->stream));
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    free(tg);
    if (n_scored) *n_scored = scored;
    return total;
}

// Backward of the last training forward (which already produced dhf and the LM-head gradient).
// Accumulates into m->grad (trainable tensors only).
static void gpu_model_backward(GpuModel* m) {
    if (m->carry.fill) coda_fatal("gpu_model_backward: the last forward continued a state (GpuCarry), which is inference only");
    const ModelConfig* c = &m->cfg;
    const GpuContext* ctx = &m->ctx;
    StepTimer* tm = m->timer;
    int N = m->B * m->T, D = c->dim, F = c->ffn_dim, QD = config_qdim(c), KVD = config_kvdim(c), H = c->n_heads;
    size_t ND = (size_t)N * D;
    const int acc = !m->grad_fresh;  // weight gradients: accumulate, or overwrite (first micro-batch)
    STEP_TIMED(tm, ST_OTHER, cudaCheck(cudaMemsetAsync(m->dres, 0, sizeof(floatX) * ND, ctx->stream)));
    STEP_TIMED(tm, ST_NORM, rmsnorm_backward(ctx, m->dres, gm_grad(m, PK_FINAL_NORM, 0), m->dhf, m->resid + (size_t)c->n_layers * ND,
                                             gm_param(m, PK_FINAL_NORM, 0), m->rstdf, N, D));
    CodaAttnShape s = gm_attn_shape(m);
    double base = config_rope_base(c);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        if (m->recompute) gpu_layer_forward(m, l);  // rebuild this layer's activations (timed as forward ops)
        LayerActs* a = gm_layer_acts(m, l);
        floatX* x = m->resid + (size_t)l * ND;
        float* g;
        // MLP: next = mid + down(swiglu(gate(hn2), up(hn2)))
        STEP_TIMED(tm, ST_OTHER, cudaCheck(cudaMemcpyAsync(m->dmid, m->dres, sizeof(floatX) * ND, cudaMemcpyDeviceToDevice, ctx->stream)));
        STEP_TIMED(tm, ST_MATMUL_DGRAD, matmul_backward_input(ctx, m->dact, m->dres, gm_param(m, PK_DOWN, l), N, F, D, 0));
        if ((g = gm_grad(m, PK_DOWN, l))) STEP_TIMED(tm, ST_MATMUL_WGRAD, matmul_backward_weight(ctx, g, NULL, m->dres, a->mlp_act, N, F, D, acc));
        STEP_TIMED(tm, ST_SWIGLU, swiglu_backward(ctx, m->dgate, m->dup, m->dact, a->mlp_gate, a->mlp_up, (size_t)N * F));
        STEP_TIMED(tm, ST_MATMUL_DGRAD, matmul_backward_input(ctx, m->dh, m->dgate, gm_param(m, PK_GATE, l), N, D, F, 0));
        STEP_TIMED(tm, ST_MATMUL_DGRAD, matmul_backward_input(ctx, m->dh, m->dup, gm_param(m, PK_UP, l), N, D, F, 1));
        if ((g = gm_grad(m, PK_GATE, l))) STEP_TIMED(tm, ST_MATMUL_WGRAD, matmul_backward_weight(ctx, g, NULL, m->dgate, a->hn2, N, D, F, acc));
        if ((g = gm_grad(m, PK_UP, l))) STEP_TIMED(tm, ST_MATMUL_WGRAD, matmul_backward_weight(ctx, g, NULL, m->dup, a->hn2, N, D, F, acc));
        STEP_TIMED(tm, ST_NORM, rmsnorm_backward(ctx, m->dmid, gm_grad(m, PK_MLP_NORM, l), m->dh, a->resid_mid, gm_param(m, PK_MLP_NORM, l),
                                                 a->rstd2, N, D));
        // attention: mid = x + o_proj(attention(hn1))
        STEP_TIMED(tm, ST_OTHER, cudaCheck(cudaMemcpyAsync(m->dres, m->dmid, sizeof(floatX) * ND, cudaMemcpyDeviceToDevice, ctx->stream)));
        STEP_TIMED(tm, ST_MATMUL_DGRAD, matmul_backward_input(ctx, m->dattn, m->dmid, gm_param(m, PK_O, l), N, QD, D, 0));
        if ((g = gm_grad(m, PK_O, l))) STEP_TIMED(tm, ST_MATMUL_WGRAD, matmul_backward_weight(ctx, g, NULL, m->dmid, a->attn_out, N, QD, D, acc));
        CodaAttnInputs in = gm_attn_inputs(m, a, l);
        CodaAttnSaved sv = gm_attn_saved(a);
        CodaAttnGrads gr = {m->dq, m->dk, m->dv, m->dlam, gm_grad(m, PK_THETA, l), gm_grad(m, PK_HEAD_NORM, l), m->dbank_k, m->dbank_v};
        STEP_TIMED(tm, ST_ATTENTION_BWD, coda_attention_backward(ctx, &s, &in, &sv, m->dattn, &gr, m->scratch, m->scratch_bytes));
        const int through_banks = config_grads_through_banks(c);
        if (c->bounded && (gm_grad(m, PK_ETA, l) || through_banks)) {
            // reverse scan: bank-slot gradients -> eta, and (detach off) the evicted tokens' k, v and gates
            const BankScanShape bs = gm_scan_shape(m);
            if (through_banks) {
                STEP_TIMED(tm, ST_BANK, fill_zero_float(ctx, m->dk_acc, (size_t)N * KVD));
                STEP_TIMED(tm, ST_BANK, fill_zero_float(ctx, m->dv_acc, (size_t)N * KVD));
                STEP_TIMED(tm, ST_BANK, fill_zero_float(ctx, m->dwgate, (size_t)N));
            }
            STEP_TIMED(tm, ST_BANK, bank_scan_backward(ctx, &bs, &a->tape, m->dbank_k, m->dbank_v, a->k, a->v, gm_param(m, PK_ETA, l),
                                                       m->dk_acc, m->dv_acc, m->dwgate, gm_grad(m, PK_ETA, l), m->scan_scratch));
            if (through_banks) {
                STEP_TIMED(tm, ST_BANK, add_float_into_floatX(ctx, m->dk, m->dk_acc, (size_t)N * KVD));
                STEP_TIMED(tm, ST_BANK, add_float_into_floatX(ctx, m->dv, m->dv_acc, (size_t)N * KVD));
            }
        }
        STEP_TIMED(tm, ST_ROPE, rope_apply(ctx, m->dq, N, m->T, 0, H, c->head_dim, c->rope_layout, base, c->rope_bf16_positions, -1));
        STEP_TIMED(tm, ST_ROPE, rope_apply(ctx, m->dk, N, m->T, 0, c->n_kv_heads, c->head_dim, c->rope_layout, base, c->rope_bf16_positions, -1));
        STEP_TIMED(tm, ST_MATMUL_DGRAD, matmul_backward_input(ctx, m->dh, m->dq, gm_param(m, PK_Q, l), N, D, QD, 0));
        STEP_TIMED(tm, ST_MATMUL_DGRAD, matmul_backward_input(ctx, m->dh, m->dk, gm_param(m, PK_K, l), N, D, KVD, 1));
        STEP_TIMED(tm, ST_MATMUL_DGRAD, matmul_backward_input(ctx, m->dh, m->dv, gm_param(m, PK_V, l), N, D, KVD, 1));
        if ((g = gm_grad(m, PK_Q, l))) STEP_TIMED(tm, ST_MATMUL_WGRAD, matmul_backward_weight(ctx, g, NULL, m->dq, a->hn1, N, D, QD, acc));
        if ((g = gm_grad(m, PK_K, l))) STEP_TIMED(tm, ST_MATMUL_WGRAD, matmul_backward_weight(ctx, g, NULL, m->dk, a->hn1, N, D, KVD, acc));
        if ((g = gm_grad(m, PK_V, l))) STEP_TIMED(tm, ST_MATMUL_WGRAD, matmul_backward_weight(ctx, g, NULL, m->dv, a->hn1, N, D, KVD, acc));
        if (config_write_gate_backward(c))  // the write gate's input and weights
            STEP_TIMED(tm, ST_BANK, write_gate_backward(ctx, m->dh, gm_grad(m, PK_WRITE_W, l), gm_grad(m, PK_WRITE_B, l), m->dwgate, a->wgate,
                                                        a->hn1, gm_param(m, PK_WRITE_W, l), N, D, m->scan_scratch));
        if (c->differential) {
            STEP_TIMED(tm, ST_MATMUL_DGRAD, matmul_backward_input(ctx, m->dh, m->dlam, gm_param(m, PK_LAMBDA_W, l), N, D, H, 1));
            if ((g = gm_grad(m, PK_LAMBDA_W, l)))
                STEP_TIMED(tm, ST_MATMUL_WGRAD, matmul_backward_weight(ctx, g, gm_grad(m, PK_LAMBDA_B, l), m->dlam, a->hn1, N, D, H, acc));
        }
        STEP_TIMED(tm, ST_NORM, rmsnorm_backward(ctx, m->dres, gm_grad(m, PK_ATTN_NORM, l), m->dh, x, gm_param(m, PK_ATTN_NORM, l), a->rstd1, N, D));
    }
    float* ge = gm_grad(m, PK_EMBED, 0);
    if (ge) STEP_TIMED(tm, ST_EMBEDDING, encoder_backward(ctx, ge, m->dres, m->tokens, N, D, c->vocab_size, m->scratch, m->scratch_bytes));
    m->grad_fresh = 0;  // the next micro-batch of this update accumulates
}

// Weights whose gradient is written by exactly one matmul_backward_weight per backward, before
// anything else adds to it (the LM head's chunks: the first one), so the first backward of an update
// can overwrite it. Everything else accumulates (norm weights, theta, biases, the embedding's
// scatter-add) and is zeroed. A tied LM head writes into the embedding's gradient, which is zeroed
// anyway: overwriting zeros is harmless, and its scatter-add comes later in the same backward.
static int gm_grad_overwritten_by_matmul(ParamKind k) {
    switch (k) {
        case PK_Q: case PK_K: case PK_V: case PK_O: case PK_LAMBDA_W: case PK_GATE: case PK_UP: case PK_DOWN: case PK_LM_HEAD:
            return 1;
        default:
            return 0;
    }
}

// Zero the gradients that accumulate (one memset per run of adjacent such tensors; the alignment gaps
// between tensors are never written and stay zero from the allocation) and mark the next backward as
// the update's first.
static void gpu_model_zero_grad(GpuModel* m) {
    long long run_begin = -1, run_end = -1;
    auto flush = [&]() {
        if (run_begin >= 0)
            STEP_TIMED(m->timer, ST_OTHER, cudaCheck(cudaMemsetAsync(m->grad + run_begin, 0, sizeof(float) * (run_end - run_begin), m->ctx.stream)));
        run_begin = run_end = -1;
    };
    for (int i = 0; i < m->table.n; i++) {
        const ParamTensor* t = &m->table.tensors[i];
        if (m->train_offset[i] < 0 || gm_grad_overwritten_by_matmul(t->kind)) continue;
        const long long b = m->train_offset[i], e = b + (long long)t->numel;
        if (run_begin >= 0 && b > run_end && b - run_end > 64) flush();  // a matmul weight lies between
        if (run_begin < 0) run_begin = b;
        run_end = e;
    }
    flush();
    m->grad_fresh = 1;
}

// Global L2 norm of the trainable gradients (deterministic).
static float gpu_model_grad_norm(GpuModel* m) {
    if (!m->n_train) return 0.0f;
    STEP_TIMED(m->timer, ST_OPTIMIZER, global_norm_squared(&m->ctx, m->scalar, m->grad, m->n_train, 0));
    return sqrtf(global_norm_read(&m->ctx, m->scalar));  // waits for the GPU: the host needs the norm to clip
}

// The gradient scale of global-norm clipping to opt->grad_clip (1 when off or not needed).
static inline float gpu_model_clip_scale(const AdamWConfig* opt, float norm) {
    return (opt->grad_clip > 0 && norm > opt->grad_clip) ? (float)(opt->grad_clip / (norm + 1e-6)) : 1.0f;
}

// One AdamW step (m->adam_step + 1) over table t, on the fp32 buffers t indexes and the floatX
// buffer its param_offsets index: each group's lr (times lr_scale) and weight decay, the gradients
// times grad_scale. Shared by gpu_model_update (the whole layout) and ddp_update (a ZeRO slice).
static void gpu_model_adamw(GpuModel* m, const AdamWTable* t, float* master, floatX* param, const float* grad, float* mm, float* vv,
                            const AdamWConfig* opt, double lr_scale, float grad_scale) {
    m->adam_step++;
    float lr[GROUP_COUNT], wd[GROUP_COUNT];
    for (int g = 0; g < GROUP_COUNT; g++) {
        lr[g] = (float)(opt->lr[g] * lr_scale);
        wd[g] = (float)opt->weight_decay[g];
    }
    STEP_TIMED(m->timer, ST_OPTIMIZER,
               adamw_table_update(&m->ctx, t, master, param, grad, mm, vv, lr, wd, (float)opt->beta1, (float)opt->beta2, (float)opt->eps,
                                  grad_scale, m->adam_step));
}

// AdamW on every trainable tensor with its group's lr (times lr_scale) and weight decay, after global
// norm clipping to opt->grad_clip, in one launch over m->adamw (bitwise the per-tensor adamw_update
// launches: each group's lr is rounded to float from the same double product). Returns the norm
// before clipping.
static float gpu_model_update(GpuModel* m, const AdamWConfig* opt, double lr_scale) {
    if (!m->master) coda_fatal("gpu_model_update: the optimizer state is sharded (ZeRO-1): update with ddp_update");
    float norm = gpu_model_grad_norm(m);
    gpu_model_adamw(m, &m->adamw, m->master, m->params, m->grad, m->adam_m, m->adam_v, opt, lr_scale, gpu_model_clip_scale(opt, norm));
    return norm;
}

// Frees the activations of gpu_model_alloc_acts (and the bank init), keeping the parameters.
static void gpu_model_free_acts(GpuModel* m) {
    if (!m->layers) return;
    for (int l = 0; l < (m->recompute ? 1 : m->cfg.n_layers); l++) layer_acts_free(&m->layers[l], &m->cfg, m->hist_cap);
    free(m->layers);
    void* ptrs[] = {m->tokens, m->targets, m->resid, m->fwd_hn, m->fwd_act, m->hf, m->rstdf, m->logits, m->losses,
                    m->dres, m->dmid, m->dh, m->dhf, m->dq, m->dk, m->dv, m->dlam, m->dattn, m->dact, m->dgate, m->dup, m->scratch,
                    m->scan_scratch, m->dbank_k, m->dbank_v, m->dk_acc, m->dv_acc, m->dwgate, m->bank_init, m->carry_bank_k,
                    m->carry_flags};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) cudaCheck(cudaFree(ptrs[i]));
    m->layers = NULL;
    m->tokens = m->targets = NULL;
    m->resid = m->fwd_hn = m->fwd_act = m->hf = m->logits = NULL;
    m->dres = m->dmid = m->dh = m->dhf = m->dq = m->dk = m->dv = m->dlam = m->dattn = m->dact = m->dgate = m->dup = NULL;
    m->rstdf = m->losses = m->dbank_k = m->dbank_v = m->dk_acc = m->dv_acc = m->dwgate = m->bank_init = NULL;
    m->scratch = m->scan_scratch = NULL;
    m->carry_bank_k = m->carry_bank_v = NULL;
    m->carry_flags = NULL;
    memset(&m->carry, 0, sizeof(m->carry));
    m->B = m->T = m->T_alloc = m->hist_cap = 0;
}

static void gpu_model_free(GpuModel* m) {
    gpu_model_free_acts(m);
    void* ptrs[] = {m->params, m->master, m->grad, m->adam_m, m->adam_v, m->scalar};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) cudaCheck(cudaFree(ptrs[i]));
    adamw_table_free(&m->adamw);
    free(m->train_offset);
    param_table_free(&m->table);
    gpu_context_free(&m->ctx);
}
