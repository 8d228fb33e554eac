// presets.h — the model architectures train_coda knows by name (phase 0 from scratch, or a random
// phase-1 base for benchmarks); anything else is read from a Hugging Face config.json.
#pragma once
#include "cli.h"
#include "hf_model.h"

typedef struct {
    const char* name;
    int vocab, dim, ffn, layers, heads, kv_heads, head_dim, tie;
    double rope_theta;
} ModelPreset;
static const ModelPreset MODEL_PRESETS[] = {
    {"tiny", 32768, 256, 768, 4, 4, 2, 64, 1, 1e6},
    {"smollm2-135m", 49152, 576, 1536, 30, 9, 3, 64, 1, 1e5},
    {"mistral-7b", 32768, 4096, 14336, 32, 32, 8, 128, 0, 1e6},
};
#define N_MODEL_PRESETS ((int)(sizeof(MODEL_PRESETS) / sizeof(MODEL_PRESETS[0])))

// "tiny, smollm2-135m, mistral-7b": for usage texts.
static inline const char* model_preset_names(void) {
    static char names[256];
    if (!names[0])
        for (int i = 0; i < N_MODEL_PRESETS; i++)
            snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "", MODEL_PRESETS[i].name);
    return names;
}

// The config of a preset (config_default() with the preset's architecture), or of the config.json
// at name_or_file when no preset has that name.
static inline int model_config_from(const char* name_or_file, ModelConfig* c, CodaError* err) {
    *c = config_default();
    for (int i = 0; i < N_MODEL_PRESETS; i++) {
        const ModelPreset* p = &MODEL_PRESETS[i];
        if (strcmp(name_or_file, p->name) != 0) continue;
        c->vocab_size = p->vocab; c->dim = p->dim; c->ffn_dim = p->ffn; c->n_layers = p->layers;
        c->n_heads = p->heads; c->n_kv_heads = p->kv_heads; c->head_dim = p->head_dim; c->tie_embeddings = p->tie;
        c->rope_theta = p->rope_theta;
        return 0;
    }
    return config_read_hf(name_or_file, c, err);
}

// The paper's bounded states (docs/protocol.md §1.9; eval_llm's window-only): ring W, exact bank Me, summary
// bank Ms. Phase 2 trains with one of them (medium by default); the block is separate (--block, 256).
typedef struct {
    const char* name;
    int window, n_exact, n_summary;
} BoundedPreset;
static const BoundedPreset BOUNDED_PRESETS[] = {
    {"tiny", 128, 32, 32},
    {"medium", 256, 64, 64},
    {"large", 512, 128, 128},
    {"window-only", 256, 0, 0},
};
#define N_BOUNDED_PRESETS ((int)(sizeof(BOUNDED_PRESETS) / sizeof(BOUNDED_PRESETS[0])))

// The presets as command-line choices (--bounded-config of train_coda and infer_coda).
static inline const CliChoice* bounded_preset_choices(void) {
    static CliChoice ch[N_BOUNDED_PRESETS + 1];
    for (int i = 0; i < N_BOUNDED_PRESETS; i++) { ch[i].name = BOUNDED_PRESETS[i].name; ch[i].value = i; }
    ch[N_BOUNDED_PRESETS].name = NULL;
    ch[N_BOUNDED_PRESETS].value = 0;
    return ch;
}

// Phase 2's surgery on a phase-1 config (docs/protocol.md §1.9): the bounded state (a preset, each size
// overridable; -1 = the preset's, block -1 = 256), the training switches, and an empty zero state per
// sequence. The write gate and eta keep their config's init values (docs/spec.md §5). A config that is not
// CoDA (a base or phase-0 model, or any model that did not go through phase 1) is refused, naming
// `from`: phase 2 continues a phase-1 run.
typedef struct {
    int preset;                              // index into BOUNDED_PRESETS
    int window, n_exact, n_summary, block;   // -1: the preset's (block: 256)
    int detach_evicted, cross_block_grad, mask_unused_memory;
    CandidateOrder candidate_order;
} BoundedOptions;

static inline int phase2_config(ModelConfig* c, const BoundedOptions* b, const char* from, CodaError* err) {
    if (!c->differential)
        return coda_errorf(err, "--phase 2: %s is not a phase-1 (CoDA) checkpoint: its attention is standard GQA; run --phase 1 on it first",
                           from);
    if (b->preset < 0 || b->preset >= N_BOUNDED_PRESETS) return coda_errorf(err, "--phase 2: no bounded preset %d", b->preset);
    const BoundedPreset* p = &BOUNDED_PRESETS[b->preset];
    c->bounded = 1;
    c->window = b->window > 0 ? b->window : p->window;
    c->n_exact = b->n_exact >= 0 ? b->n_exact : p->n_exact;
    c->n_summary = b->n_summary >= 0 ? b->n_summary : p->n_summary;
    c->block_size = b->block > 0 ? b->block : 256;
    c->detach_evicted = b->detach_evicted;
    c->cross_block_grad = b->cross_block_grad;
    c->mask_unused_memory = b->mask_unused_memory;
    c->candidate_order = b->candidate_order;
    c->mem_init = MEM_INIT_ZEROS;  // training: every sequence starts from an empty zero state (docs/spec.md §2.5)
    return config_validate(c, err);
}

