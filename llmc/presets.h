// presets.h — the model architectures train_coda knows by name (phase 0 from scratch, or a random
// phase-1 base for benchmarks); anything else is read from a Hugging Face config.json.
#pragma once
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

// The paper's bounded states (PROTOCOL §1.9; eval_llm's window-only): ring W, exact bank Me, summary
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
