// overrides.h — changes to a model's attention config asked for on the command line (bounded or not,
// ring / bank / block sizes, candidates per block and their order, RoPE base, initial bank contents),
// and loading a model directory (config.json + safetensors) into the fp32 CPU reference with them.
// Used by infer_coda, the needle test (needle.h) and the tests.
#pragma once
#include "cpu/reference.h"
#include "hf_model.h"

typedef struct {
    int bounded;          // -1: keep the config's
    int window, n_exact, n_summary, block_size;  // -1: keep
    int exact_cands, summary_cands;              // candidates per block (-1: keep)
    double rope_theta;    // > 0: RoPE base override (rope_theta_override)
    int mem_init;         // -1: keep; else MemInit
    int candidate_order;  // -1: keep; else CandidateOrder
} ConfigOverrides;

static inline ConfigOverrides overrides_none(void) {
    ConfigOverrides o;
    o.bounded = o.window = o.n_exact = o.n_summary = o.block_size = o.mem_init = o.exact_cands = o.summary_cands = -1;
    o.candidate_order = -1;
    o.rope_theta = 0.0;
    return o;
}

// The bank/block/RoPE overrides (all but `bounded`, which only a loaded model may change).
static inline void overrides_apply(ModelConfig* c, const ConfigOverrides* ov) {
    if (!ov) return;
    if (ov->window >= 0) c->window = ov->window;
    if (ov->n_exact >= 0) c->n_exact = ov->n_exact;
    if (ov->n_summary >= 0) c->n_summary = ov->n_summary;
    if (ov->block_size >= 0) c->block_size = ov->block_size;
    if (ov->exact_cands >= 0) c->exact_candidates_per_block = ov->exact_cands;
    if (ov->summary_cands >= 0) c->summary_candidates_per_block = ov->summary_cands;
    if (ov->rope_theta > 0) c->rope_theta_override = ov->rope_theta;
    if (ov->mem_init >= 0) c->mem_init = (MemInit)ov->mem_init;
    if (ov->candidate_order >= 0) c->candidate_order = (CandidateOrder)ov->candidate_order;
}

// Whether the config.json at path states a bounded state's sizes: a "coda" object with "window" (every
// config coda.c writes has one; a Hugging Face base model's has none). Read errors count as no.
static inline int config__has_state_sizes(const char* path) {
    JsonValue* root = NULL;
    CodaError e;
    if (json_parse_file(path, &root, &e) != 0) return 0;
    const JsonValue* coda = json_get(root, "coda");
    const int has = coda && json_get(coda, "window") != NULL;
    json_free(root);
    return has;
}

// Reads DIR/config.json into *c with the overrides applied (ov may be NULL; `bounded` too, as a loaded
// model may change it) and validates the result, naming the overrides when they made it invalid.
// Switching a model to bounded needs the state's sizes, from its config's "coda" object or a flag for
// at least one of W, Me, Ms: coda.c's defaults are not silently taken for a model (a Hugging Face base)
// whose config never named a state.
// The one config path of every evaluation loader (reference_load_dir here, gpu_eval_model_load).
static inline int config_load_with_overrides(const char* dir, const ConfigOverrides* ov, ModelConfig* c, CodaError* err) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (config_read_hf(path, c, err) != 0) return -1;
    if (ov && ov->bounded == 1 && !c->bounded && ov->window < 0 && ov->n_exact < 0 && ov->n_summary < 0 && !config__has_state_sizes(path))
        return coda_errorf(err, "%s: --bounded 1 on a model whose config names no bounded state needs its sizes: --bounded-config "
                                "tiny|medium|large|window-only, or --window W --exact Me --summary Ms (the paper's medium state: 256 / 64 / 64)",
                           path);
    if (ov && ov->bounded >= 0) c->bounded = ov->bounded;
    overrides_apply(c, ov);
    CodaError inner;
    if (config_validate(c, &inner) != 0) return coda_errorf(err, "%s (after command-line overrides): %s", path, inner.msg);
    return 0;
}

// Loads DIR (config.json with the overrides, see config_load_with_overrides) into the fp32 CPU
// model and loads the weights. CoDA tensors the checkpoint lacks (e.g. write gate and eta when a
// Phase-1 unbounded checkpoint is run bounded) keep their initial values; tensors the config does
// not use (e.g. those of a bounded checkpoint run unbounded) are skipped. *report (may be NULL)
// counts both.
static inline int reference_load_dir(const char* dir, const ConfigOverrides* ov, Model_f32* m, HfLoadReport* report,
                                     CodaError* err) {
    ModelConfig c;
    if (config_load_with_overrides(dir, ov, &c, err) != 0) return -1;
    model_init_f32(m, &c, 1234);  // values for CoDA tensors the checkpoint may lack
    if (hf_load_params(dir, &m->table, m->params, DT_F32, report, err) != 0) { model_free_f32(m); return -1; }
    return 0;
}
