// params.h — the parameter table: every tensor of the model described by one data-driven list
// (name, shape, dtype, trainable, group, init, offset into one flat buffer). No code anywhere
// indexes tensors by position: it asks the table for (kind, layer).
//
// Names are Hugging Face Mistral names; CoDA adds theta, lambda_proj, head_norm, write_proj and
// summary_eta_logit under self_attn. Layout of the flat buffer: tensors in table order, each
// contiguous, row-major [rows, cols] like torch's nn.Linear.weight [out_features, in_features].
#pragma once
#include "common.h"
#include "config.h"
#include <math.h>

typedef enum {
    PK_EMBED,        // model.embed_tokens.weight              [V, D]
    PK_ATTN_NORM,    // input_layernorm.weight                 [D]
    PK_Q,            // self_attn.q_proj.weight                [H*Dh, D]
    PK_K,            // self_attn.k_proj.weight                [Hkv*Dh, D]
    PK_V,            // self_attn.v_proj.weight                [Hkv*Dh, D]
    PK_O,            // self_attn.o_proj.weight                [D, H*Dh]
    PK_THETA,        // self_attn.theta                        [H, Dh/2]   differential only
    PK_LAMBDA_W,     // self_attn.lambda_proj.weight           [H, D]      differential only
    PK_LAMBDA_B,     // self_attn.lambda_proj.bias             [H]         differential only
    PK_HEAD_NORM,    // self_attn.head_norm.weight             [Dh]        differential, head_norm full
    PK_WRITE_W,      // self_attn.write_proj.weight            [1, D]      bounded only
    PK_WRITE_B,      // self_attn.write_proj.bias              [1]         bounded only
    PK_ETA,          // self_attn.summary_eta_logit            [Hkv]       bounded only
    PK_MLP_NORM,     // post_attention_layernorm.weight        [D]
    PK_GATE,         // mlp.gate_proj.weight                   [F, D]
    PK_UP,           // mlp.up_proj.weight                     [F, D]
    PK_DOWN,         // mlp.down_proj.weight                   [D, F]
    PK_FINAL_NORM,   // model.norm.weight                      [D]
    PK_LM_HEAD,      // lm_head.weight                         [V, D]      untied only
    PK_COUNT
} ParamKind;

// Symbolic sizes, resolved against a config.
typedef enum { SZ_NONE, SZ_ONE, SZ_V, SZ_D, SZ_F, SZ_QD, SZ_KVD, SZ_H, SZ_HKV, SZ_DH, SZ_DH2 } SizeSym;
// When a tensor exists.
typedef enum { WHEN_ALWAYS, WHEN_UNTIED, WHEN_DIFF, WHEN_HEAD_NORM, WHEN_BOUNDED } Presence;
// How a fresh tensor is initialised (matrices: normal(0, init_std) as HF Mistral does).
typedef enum { INIT_NORMAL, INIT_ONES, INIT_ZEROS, INIT_FANIN_UNIFORM, INIT_THETA, INIT_LAMBDA_BIAS,
               INIT_WRITE_BIAS, INIT_ETA } InitKind;
// Optimizer groups: each gets its own lr and weight decay (docs/protocol.md §1.4).
typedef enum { GROUP_MATRIX, GROUP_NORM, GROUP_ATTN_PROJ, GROUP_CODA, GROUP_COUNT } ParamGroup;
// What a tensor is, for trainability policies: base model vs. attention adapter (copied q/k/v/o
// and the new CoDA tensors).
typedef enum { ROLE_BASE, ROLE_ATTN_PROJ, ROLE_CODA_NEW } ParamRole;

typedef struct {
    ParamKind kind;
    const char* name;   // full name, "%d" = layer index for per-layer tensors
    int per_layer;
    SizeSym rows, cols; // cols = SZ_NONE for 1-D tensors
    Presence presence;
    InitKind init;
    ParamGroup group;
    ParamRole role;
} ParamKindInfo;

// The table. Order = order in the flat buffer and in exported files.
static const ParamKindInfo PARAM_KINDS[PK_COUNT] = {
    {PK_EMBED, "model.embed_tokens.weight", 0, SZ_V, SZ_D, WHEN_ALWAYS, INIT_NORMAL, GROUP_MATRIX, ROLE_BASE},
    {PK_ATTN_NORM, "model.layers.%d.input_layernorm.weight", 1, SZ_D, SZ_NONE, WHEN_ALWAYS, INIT_ONES, GROUP_NORM, ROLE_BASE},
    {PK_Q, "model.layers.%d.self_attn.q_proj.weight", 1, SZ_QD, SZ_D, WHEN_ALWAYS, INIT_NORMAL, GROUP_ATTN_PROJ, ROLE_ATTN_PROJ},
    {PK_K, "model.layers.%d.self_attn.k_proj.weight", 1, SZ_KVD, SZ_D, WHEN_ALWAYS, INIT_NORMAL, GROUP_ATTN_PROJ, ROLE_ATTN_PROJ},
    {PK_V, "model.layers.%d.self_attn.v_proj.weight", 1, SZ_KVD, SZ_D, WHEN_ALWAYS, INIT_NORMAL, GROUP_ATTN_PROJ, ROLE_ATTN_PROJ},
    {PK_O, "model.layers.%d.self_attn.o_proj.weight", 1, SZ_D, SZ_QD, WHEN_ALWAYS, INIT_NORMAL, GROUP_ATTN_PROJ, ROLE_ATTN_PROJ},
    {PK_THETA, "model.layers.%d.self_attn.theta", 1, SZ_H, SZ_DH2, WHEN_DIFF, INIT_THETA, GROUP_CODA, ROLE_CODA_NEW},
    {PK_LAMBDA_W, "model.layers.%d.self_attn.lambda_proj.weight", 1, SZ_H, SZ_D, WHEN_DIFF, INIT_FANIN_UNIFORM, GROUP_CODA, ROLE_CODA_NEW},
    {PK_LAMBDA_B, "model.layers.%d.self_attn.lambda_proj.bias", 1, SZ_H, SZ_NONE, WHEN_DIFF, INIT_LAMBDA_BIAS, GROUP_CODA, ROLE_CODA_NEW},
    {PK_HEAD_NORM, "model.layers.%d.self_attn.head_norm.weight", 1, SZ_DH, SZ_NONE, WHEN_HEAD_NORM, INIT_ONES, GROUP_CODA, ROLE_CODA_NEW},
    // write gate and eta sit in the projection group, as in the reference's optimizer (docs/spec.md §5.2)
    {PK_WRITE_W, "model.layers.%d.self_attn.write_proj.weight", 1, SZ_ONE, SZ_D, WHEN_BOUNDED, INIT_ZEROS, GROUP_ATTN_PROJ, ROLE_CODA_NEW},
    {PK_WRITE_B, "model.layers.%d.self_attn.write_proj.bias", 1, SZ_ONE, SZ_NONE, WHEN_BOUNDED, INIT_WRITE_BIAS, GROUP_ATTN_PROJ, ROLE_CODA_NEW},
    {PK_ETA, "model.layers.%d.self_attn.summary_eta_logit", 1, SZ_HKV, SZ_NONE, WHEN_BOUNDED, INIT_ETA, GROUP_ATTN_PROJ, ROLE_CODA_NEW},
    {PK_MLP_NORM, "model.layers.%d.post_attention_layernorm.weight", 1, SZ_D, SZ_NONE, WHEN_ALWAYS, INIT_ONES, GROUP_NORM, ROLE_BASE},
    {PK_GATE, "model.layers.%d.mlp.gate_proj.weight", 1, SZ_F, SZ_D, WHEN_ALWAYS, INIT_NORMAL, GROUP_MATRIX, ROLE_BASE},
    {PK_UP, "model.layers.%d.mlp.up_proj.weight", 1, SZ_F, SZ_D, WHEN_ALWAYS, INIT_NORMAL, GROUP_MATRIX, ROLE_BASE},
    {PK_DOWN, "model.layers.%d.mlp.down_proj.weight", 1, SZ_D, SZ_F, WHEN_ALWAYS, INIT_NORMAL, GROUP_MATRIX, ROLE_BASE},
    {PK_FINAL_NORM, "model.norm.weight", 0, SZ_D, SZ_NONE, WHEN_ALWAYS, INIT_ONES, GROUP_NORM, ROLE_BASE},
    {PK_LM_HEAD, "lm_head.weight", 0, SZ_V, SZ_D, WHEN_UNTIED, INIT_NORMAL, GROUP_MATRIX, ROLE_BASE},
};

typedef struct {
    char name[96];
    ParamKind kind;
    int layer;          // -1 for global tensors
    int ndim;           // 1 or 2
    int64_t shape[2];   // shape[1] = 1 for 1-D tensors
    size_t numel;
    size_t offset;      // in elements, into the flat buffer
    DType dtype;        // element type of the flat buffer this table describes
    int trainable;
} ParamTensor;

// Every tensor starts at a multiple of this many elements (128 bytes in bf16, 256 in fp32): cuBLASLt
// runs up to 10x slower on operands that are not 16-byte aligned, and vector loads need alignment.
#define PARAM_ALIGN_ELEMS 64
static inline size_t param_align(size_t n) { return (n + PARAM_ALIGN_ELEMS - 1) / PARAM_ALIGN_ELEMS * PARAM_ALIGN_ELEMS; }

typedef struct {
    ParamTensor* tensors;
    int n;
    size_t total;       // elements of the flat buffer, alignment padding included
    int n_layers;
    int* index;         // [(n_layers + 1) * PK_COUNT]: tensor index of (layer, kind) or -1; row n_layers = globals
} ParamTable;

static inline int64_t param_size(const ModelConfig* c, SizeSym s) {
    switch (s) {
        case SZ_NONE: case SZ_ONE: return 1;
        case SZ_V: return c->vocab_size;
        case SZ_D: return c->dim;
        case SZ_F: return c->ffn_dim;
        case SZ_QD: return (int64_t)c->n_heads * c->head_dim;
        case SZ_KVD: return (int64_t)c->n_kv_heads * c->head_dim;
        case SZ_H: return c->n_heads;
        case SZ_HKV: return c->n_kv_heads;
        case SZ_DH: return c->head_dim;
        case SZ_DH2: return c->head_dim / 2;
    }
    return 0;
}

static inline int param_present(const ModelConfig* c, Presence p) {
    switch (p) {
        case WHEN_ALWAYS: return 1;
        case WHEN_UNTIED: return !c->tie_embeddings;
        case WHEN_DIFF: return c->differential;
        case WHEN_HEAD_NORM: return c->differential && c->head_norm == HEAD_NORM_FULL;
        case WHEN_BOUNDED: return c->bounded;
    }
    return 0;
}

// Appends one tensor (if the config has it) at the end of the flat buffer.
static inline void param_table_add(ParamTable* t, const ModelConfig* c, ParamKind k, int layer, DType dtype) {
    const ParamKindInfo* info = &PARAM_KINDS[k];
    if (!param_present(c, info->presence)) return;
    ParamTensor* p = &t->tensors[t->n];
    if (info->per_layer) snprintf(p->name, sizeof(p->name), info->name, layer);
    else snprintf(p->name, sizeof(p->name), "%s", info->name);
    p->kind = k;
    p->layer = info->per_layer ? layer : -1;
    p->ndim = info->cols == SZ_NONE ? 1 : 2;
    p->shape[0] = param_size(c, info->rows);
    p->shape[1] = param_size(c, info->cols);
    p->numel = (size_t)(p->shape[0] * p->shape[1]);
    p->offset = t->total;
    p->dtype = dtype;
    p->trainable = 1;
    t->total = param_align(t->total + p->numel);
    t->index[(info->per_layer ? layer : t->n_layers) * PK_COUNT + k] = t->n;
    t->n++;
}

// Builds the table for a config, in HF order: embeddings, layer 0..L-1, final norm, lm_head.
// Every tensor is trainable until a policy says otherwise.
static inline void param_table_build(ParamTable* t, const ModelConfig* c, DType dtype) {
    memset(t, 0, sizeof(*t));
    t->tensors = (ParamTensor*)coda_calloc_or_die((size_t)(c->n_layers + 1) * PK_COUNT, sizeof(ParamTensor), "parameter table");
    t->n_layers = c->n_layers;
    t->index = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(c->n_layers + 1) * PK_COUNT, "parameter index");
    for (int i = 0; i < (c->n_layers + 1) * PK_COUNT; i++) t->index[i] = -1;
    param_table_add(t, c, PK_EMBED, -1, dtype);
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < PK_COUNT; k++)
            if (PARAM_KINDS[k].per_layer) param_table_add(t, c, (ParamKind)k, l, dtype);
    for (int k = 0; k < PK_COUNT; k++)
        if (!PARAM_KINDS[k].per_layer && k != PK_EMBED) param_table_add(t, c, (ParamKind)k, -1, dtype);
}

// The compact layout of the trainable tensors (the GPU model's fp32 master / gradient / AdamW
// buffers, train_state.bin, ZeRO's slices): out[i] = offset of tensor i, or -1 if it is frozen; each
// trainable tensor starts aligned like the parameters. Returns the buffers' length in elements.
static inline size_t param_compact_offsets(const ParamTable* t, long long* out) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++) {
        out[i] = t->tensors[i].trainable ? (long long)n : -1;
        if (t->tensors[i].trainable) n = param_align(n + t->tensors[i].numel);
    }
    return n;
}

static inline void param_table_free(ParamTable* t) {
    free(t->tensors);
    free(t->index);
    memset(t, 0, sizeof(*t));
}

// Tensor of (kind, layer); layer is ignored for global kinds. NULL if absent in this config.
static inline const ParamTensor* param_find(const ParamTable* t, ParamKind k, int layer) {
    int row = PARAM_KINDS[k].per_layer ? layer : t->n_layers;
    int i = t->index[row * PK_COUNT + k];
    return i < 0 ? NULL : &t->tensors[i];
}
static inline const ParamTensor* param_find_by_name(const ParamTable* t, const char* name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->tensors[i].name, name) == 0) return &t->tensors[i];
    return NULL;
}

// Trainability policies (docs/protocol.md §1.3): everything (phase 0), the attention adapters (q/k/v/o and
// the new CoDA tensors; phases 1 and 2), or only the new CoDA tensors.
// Which tensors train: everything (phase 0); the attention adapters (phases 1 and 2: copied q/k/v/o and
// the CoDA tensors); the adapters without theta and lambda (the 2x2's "GQA" arm, docs/protocol.md §5: the
// differential stream stays at lambda ~ 0); the CoDA tensors alone; nothing.
typedef enum { TRAIN_ALL, TRAIN_ATTENTION, TRAIN_ATTENTION_NO_DIFF, TRAIN_CODA_ONLY, TRAIN_NONE } TrainPolicy;
static inline void param_table_set_trainable(ParamTable* t, TrainPolicy policy) {
    for (int i = 0; i < t->n; i++) {
        ParamRole role = PARAM_KINDS[t->tensors[i].kind].role;
        int on = 0;
        switch (policy) {
            case TRAIN_ALL: on = 1; break;
            case TRAIN_ATTENTION: on = role != ROLE_BASE; break;
            case TRAIN_ATTENTION_NO_DIFF: {
                ParamKind k = t->tensors[i].kind;
                on = role != ROLE_BASE && k != PK_THETA && k != PK_LAMBDA_W && k != PK_LAMBDA_B;
                break;
            }
            case TRAIN_CODA_ONLY: on = role == ROLE_CODA_NEW; break;
            case TRAIN_NONE: on = 0; break;
        }
        t->tensors[i].trainable = on;
    }
}
// Which of a layer's forward intermediates its backward reads. Three are read only to form the
// gradient of a weight they are the input of: the attention's normed input hn1 (q, k, v, lambda; and
// the write gate's backward, which runs whenever gradients reach the gate), the MLP's normed input hn2
// (gate, up) and the SwiGLU output (down). Where those weights are frozen (phases 1 and 2 freeze the
// MLP) the layer need not keep them past its forward: at Mistral-7B, T = 8192, that is 288 MiB a layer.
typedef struct { int hn1, hn2, mlp_act; } LayerKeeps;
static inline int param_trainable_at(const ParamTable* t, ParamKind k, int layer) {
    const ParamTensor* p = param_find(t, k, layer);
    return p && p->trainable;
}
static inline LayerKeeps param_layer_keeps(const ParamTable* t, const ModelConfig* c, int layer) {
    LayerKeeps k;
    k.hn1 = config_write_gate_backward(c) || param_trainable_at(t, PK_Q, layer) || param_trainable_at(t, PK_K, layer) ||
            param_trainable_at(t, PK_V, layer) || param_trainable_at(t, PK_LAMBDA_W, layer);
    k.hn2 = param_trainable_at(t, PK_GATE, layer) || param_trainable_at(t, PK_UP, layer);
    k.mlp_act = param_trainable_at(t, PK_DOWN, layer);
    return k;
}
// Parameters of the model (padding excluded).
static inline size_t param_table_count(const ParamTable* t) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++) n += t->tensors[i].numel;
    return n;
}
static inline size_t param_table_trainable_count(const ParamTable* t) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++) n += t->tensors[i].trainable ? t->tensors[i].numel : 0;
    return n;
}

// Value a freshly created tensor element gets for the constant init kinds.
static inline double param_init_constant(const ModelConfig* c, InitKind k) {
    switch (k) {
        case INIT_ONES: return 1.0;
        case INIT_THETA: return c->theta_init;
        case INIT_LAMBDA_BIAS: return c->lambda_init_bias;
        case INIT_WRITE_BIAS: return c->write_gate_init_bias;
        case INIT_ETA: return c->eta_init_logit;
        default: return 0.0;
    }
}

// Initial value of the next element of tensor t (HF Mistral: matrices ~ N(0, init_std), norms 1; CoDA:
// theta, lambda bias, write bias, eta logit constants from the config; lambda weight uniform
// +-1/sqrt(fan_in) like nn.Linear's default). Draws from rng only for the random kinds, so a
// tensor-by-tensor walk in table order is deterministic in the seed.
#include "rand.h"
static inline double param_init_value(const ModelConfig* c, const ParamTensor* t, Rng* rng) {
    InitKind k = PARAM_KINDS[t->kind].init;
    if (k == INIT_NORMAL) return c->init_std * rng_normal(rng);
    if (k == INIT_FANIN_UNIFORM) return (2.0 * rng_uniform(rng) - 1.0) / sqrt((double)t->shape[1]);
    return param_init_constant(c, k);
}

// All values of tensor number `index` of a table (t = &table->tensors[index]) into out[0..numel), in
// parallel: every block of PARAM_INIT_BLOCK values has its own generator seeded by (seed, index,
// block), so the values do not depend on the thread count or on which tensors are drawn (the GPU
// model draws a 7B model tensor by tensor in seconds; new_only draws only the new CoDA tensors).
// Not the same values as the single-stream walk of param_init_value (the CPU reference's model_init).
#define PARAM_INIT_BLOCK ((size_t)1 << 16)
static inline void param_init_fill(const ModelConfig* c, const ParamTensor* t, int index, uint64_t seed, float* out) {
    const long long nblocks = (long long)((t->numel + PARAM_INIT_BLOCK - 1) / PARAM_INIT_BLOCK);
#pragma omp parallel for schedule(static)
    for (long long bi = 0; bi < nblocks; bi++) {
        Rng rng;
        rng_seed(&rng, seed * 0x100000001B3ull + ((uint64_t)(index + 1) << 32) + (uint64_t)bi);
        const size_t j0 = (size_t)bi * PARAM_INIT_BLOCK, j1 = j0 + PARAM_INIT_BLOCK < t->numel ? j0 + PARAM_INIT_BLOCK : t->numel;
        for (size_t j = j0; j < j1; j++) out[j] = (float)param_init_value(c, t, &rng);
    }
}
