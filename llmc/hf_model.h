// hf_model.h — Hugging Face model directories: config.json <-> ModelConfig, and the weights
// (model.safetensors, or model-0000i-of-0000N.safetensors + model.safetensors.index.json) <-> one
// flat parameter buffer described by a ParamTable. Table names ARE the HF names, so tensors map by
// name; nothing here knows a tensor by position.
//
// CoDA options travel in config.json as one extra object "coda": {...}. transformers keeps unknown
// config keys as attributes, so the file still loads as a MistralConfig.
#pragma once
#include <dirent.h>
#include <stddef.h>
#include "config.h"
#include "params.h"
#include "safetensors.h"

// ---------------------------------------------------------------------------------------------
// config.json

typedef enum {
    HF_INT,       // JSON integer -> int
    HF_TOKEN_ID,  // integer, null (keep default) or a list of integers (the first is used: eos lists)
    HF_BOOL,      // true/false -> int 0/1
    HF_FLOAT,     // number -> float
    HF_DOUBLE,    // number -> double
    HF_ENUM,      // string, one of `names` -> the enum's int value (index in names)
} HfFieldType;

typedef struct {
    const char* key;          // JSON key
    HfFieldType type;
    size_t offset;            // offsetof(ModelConfig, field)
    const char* const* names; // HF_ENUM: names by value, NULL-terminated
    int required;             // absent (or null) is an error
} HfField;

static const char* const HF_ROPE_LAYOUT_NAMES[] = {"half_split", "interleaved", NULL};
static const char* const HF_HEAD_NORM_NAMES[] = {"identity", "full", NULL};
static const char* const HF_WRITE_POLICY_NAMES[] = {"gated", "none", NULL};
static const char* const HF_MEM_INIT_NAMES[] = {"random_normal", "zeros", NULL};
static const char* const HF_CANDIDATE_ORDER_NAMES[] = {"by_gate", "reference", NULL};

// Enum fields are written through an int: make sure that is their size.
typedef char hf_enum_is_int_check[(sizeof(RopeLayout) == sizeof(int) && sizeof(HeadNormMode) == sizeof(int) &&
                                   sizeof(WritePolicy) == sizeof(int) && sizeof(MemInit) == sizeof(int) &&
                                   sizeof(CandidateOrder) == sizeof(int)) ? 1 : -1];

#define HF_OFF(field) offsetof(ModelConfig, field)
// Mistral/Llama fields that map one-to-one. head_dim and rope_theta need logic (null / derived /
// nested) and are handled in config_read_hf itself.
static const HfField HF_ARCH_FIELDS[] = {
    {"vocab_size", HF_INT, HF_OFF(vocab_size), NULL, 1},
    {"hidden_size", HF_INT, HF_OFF(dim), NULL, 1},
    {"intermediate_size", HF_INT, HF_OFF(ffn_dim), NULL, 1},
    {"num_hidden_layers", HF_INT, HF_OFF(n_layers), NULL, 1},
    {"num_attention_heads", HF_INT, HF_OFF(n_heads), NULL, 1},
    {"num_key_value_heads", HF_INT, HF_OFF(n_kv_heads), NULL, 1},
    {"rms_norm_eps", HF_FLOAT, HF_OFF(norm_eps), NULL, 1},
    {"max_position_embeddings", HF_INT, HF_OFF(max_seq_len), NULL, 0},
    {"initializer_range", HF_FLOAT, HF_OFF(init_std), NULL, 0},
    {"tie_word_embeddings", HF_BOOL, HF_OFF(tie_embeddings), NULL, 0},
    {"bos_token_id", HF_TOKEN_ID, HF_OFF(bos_id), NULL, 0},
    {"eos_token_id", HF_TOKEN_ID, HF_OFF(eos_id), NULL, 0},
};
// Every CoDA option of ModelConfig, under "coda" with the field's own name.
static const HfField HF_CODA_FIELDS[] = {
    {"differential", HF_BOOL, HF_OFF(differential), NULL, 0},
    {"bounded", HF_BOOL, HF_OFF(bounded), NULL, 0},
    {"rope_layout", HF_ENUM, HF_OFF(rope_layout), HF_ROPE_LAYOUT_NAMES, 0},
    {"rope_theta_override", HF_DOUBLE, HF_OFF(rope_theta_override), NULL, 0},
    {"rope_bf16_positions", HF_BOOL, HF_OFF(rope_bf16_positions), NULL, 0},
    {"head_norm", HF_ENUM, HF_OFF(head_norm), HF_HEAD_NORM_NAMES, 0},
    {"head_norm_eps", HF_FLOAT, HF_OFF(head_norm_eps), NULL, 0},
    {"theta_init", HF_FLOAT, HF_OFF(theta_init), NULL, 0},
    {"lambda_init_bias", HF_FLOAT, HF_OFF(lambda_init_bias), NULL, 0},
    {"window", HF_INT, HF_OFF(window), NULL, 0},
    {"n_exact", HF_INT, HF_OFF(n_exact), NULL, 0},
    {"n_summary", HF_INT, HF_OFF(n_summary), NULL, 0},
    {"block_size", HF_INT, HF_OFF(block_size), NULL, 0},
    {"write_policy", HF_ENUM, HF_OFF(write_policy), HF_WRITE_POLICY_NAMES, 0},
    {"write_gate_init_bias", HF_FLOAT, HF_OFF(write_gate_init_bias), NULL, 0},
    {"gate_threshold_exact", HF_FLOAT, HF_OFF(gate_threshold_exact), NULL, 0},
    {"gate_threshold_summary", HF_FLOAT, HF_OFF(gate_threshold_summary), NULL, 0},
    {"exact_match_threshold", HF_FLOAT, HF_OFF(exact_match_threshold), NULL, 0},
    {"exact_novelty_threshold", HF_FLOAT, HF_OFF(exact_novelty_threshold), NULL, 0},
    {"exact_refresh_on_hit", HF_BOOL, HF_OFF(exact_refresh_on_hit), NULL, 0},
    {"exact_candidates_per_block", HF_INT, HF_OFF(exact_candidates_per_block), NULL, 0},
    {"summary_candidates_per_block", HF_INT, HF_OFF(summary_candidates_per_block), NULL, 0},
    {"candidate_order", HF_ENUM, HF_OFF(candidate_order), HF_CANDIDATE_ORDER_NAMES, 0},
    {"eta_init_logit", HF_FLOAT, HF_OFF(eta_init_logit), NULL, 0},
    {"summary_overwrite_on_insert", HF_BOOL, HF_OFF(summary_overwrite_on_insert), NULL, 0},
    {"mem_init", HF_ENUM, HF_OFF(mem_init), HF_MEM_INIT_NAMES, 0},
    {"mask_unused_memory", HF_BOOL, HF_OFF(mask_unused_memory), NULL, 0},
    {"detach_evicted", HF_BOOL, HF_OFF(detach_evicted), NULL, 0},
    {"cross_block_grad", HF_BOOL, HF_OFF(cross_block_grad), NULL, 0},
};
#undef HF_OFF
#define HF_N_ARCH_FIELDS ((int)(sizeof(HF_ARCH_FIELDS) / sizeof(HF_ARCH_FIELDS[0])))
#define HF_N_CODA_FIELDS ((int)(sizeof(HF_CODA_FIELDS) / sizeof(HF_CODA_FIELDS[0])))

// An integer JSON number that fits in int (an integral float such as 4096.0 is accepted too).
static inline int hf__as_int(const JsonValue* v, int* out) {
    if (v->type != JSON_NUMBER) return -1;
    double d = v->is_int ? (double)v->integer : v->number;
    if (!(d == floor(d)) || d < -2147483648.0 || d > 2147483647.0) return -1;
    *out = (int)d;
    return 0;
}

static inline void hf__describe(const JsonValue* v, char* buf, size_t n) {
    if (v->type == JSON_NUMBER) snprintf(buf, n, "%.17g", v->number);
    else if (v->type == JSON_STRING) snprintf(buf, n, "string \"%.40s\"", v->string);
    else snprintf(buf, n, "%s", json_type_name(v->type));
}

// Stores JSON value v into the config field f. `prefix` is "" or "coda." for messages.
static inline int hf__set_field(const char* path, const char* prefix, const HfField* f, const JsonValue* v,
                                ModelConfig* cfg, CodaError* err) {
    char* base = (char*)cfg + f->offset;
    char found[96];
    hf__describe(v, found, sizeof(found));
    if (v->type == JSON_NULL) {
        if (f->required) return coda_errorf(err, "%s: required field '%s%s' is null", path, prefix, f->key);
        return 0;  // null = not given: keep the default
    }
    switch (f->type) {
        case HF_TOKEN_ID:
            if (v->type == JSON_ARRAY) {  // e.g. "eos_token_id": [128001, 128009]: the first is the canonical one
                if (v->count == 0) return 0;
                v = &v->items[0];
                hf__describe(v, found, sizeof(found));
            }
            // fall through
        case HF_INT:
            if (hf__as_int(v, (int*)base) != 0)
                return coda_errorf(err, "%s: field '%s%s' must be an integer, found %s", path, prefix, f->key, found);
            return 0;
        case HF_BOOL:
            if (v->type != JSON_BOOL)
                return coda_errorf(err, "%s: field '%s%s' must be true or false, found %s", path, prefix, f->key, found);
            *(int*)base = v->boolean;
            return 0;
        case HF_FLOAT:
        case HF_DOUBLE:
            if (v->type != JSON_NUMBER)
                return coda_errorf(err, "%s: field '%s%s' must be a number, found %s", path, prefix, f->key, found);
            if (f->type == HF_FLOAT) *(float*)base = (float)v->number;
            else *(double*)base = v->number;
            return 0;
        case HF_ENUM: {
            char allowed[160] = "";
            for (int i = 0; f->names[i]; i++) {
                if (v->type == JSON_STRING && strcmp(v->string, f->names[i]) == 0) { *(int*)base = i; return 0; }
                snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed), "%s\"%s\"", i ? ", " : "", f->names[i]);
            }
            return coda_errorf(err, "%s: field '%s%s' must be one of %s, found %s", path, prefix, f->key, allowed, found);
        }
    }
    return coda_errorf(err, "%s: field '%s%s': bad field type", path, prefix, f->key);
}

// A string field that, when present and non-null, must equal one of the accepted values.
static inline int hf__check_string(const char* path, const JsonValue* root, const char* key, const char* const* accepted,
                                   const char* why, CodaError* err) {
    const JsonValue* v = json_get(root, key);
    if (!v || v->type == JSON_NULL) return 0;
    for (int i = 0; accepted[i]; i++)
        if (v->type == JSON_STRING && strcmp(v->string, accepted[i]) == 0) return 0;
    char found[96];
    hf__describe(v, found, sizeof(found));
    return coda_errorf(err, "%s: %s = %s is not supported (%s)", path, key, found, why);
}

// A RoPE scaling description (rope_scaling, or transformers-5 rope_parameters) must be plain RoPE.
static inline int hf__check_rope_type(const char* path, const char* key, const JsonValue* r, CodaError* err) {
    if (!r || r->type == JSON_NULL) return 0;
    if (r->type != JSON_OBJECT) return coda_errorf(err, "%s: field '%s' must be an object or null", path, key);
    const JsonValue* t = json_get(r, "rope_type");
    if (!t) t = json_get(r, "type");
    if (t && !(t->type == JSON_STRING && strcmp(t->string, "default") == 0)) {
        char found[96];
        hf__describe(t, found, sizeof(found));
        return coda_errorf(err, "%s: %s.rope_type = %s is not supported (coda.c implements plain RoPE only)", path, key, found);
    }
    if (!t && strcmp(key, "rope_scaling") == 0)
        return coda_errorf(err, "%s: rope_scaling without a rope_type is not supported (coda.c implements plain RoPE only)", path);
    return 0;
}

// Reads a parsed Mistral/Llama config.json (plus the optional "coda" object) into cfg; `path`
// only names the source in messages. cfg is written only on success.
static inline int config_from_json(const JsonValue* root, const char* path, ModelConfig* cfg, CodaError* err) {
    ModelConfig c = config_default();
    int rc = -1;
    static const char* const MODEL_TYPES[] = {"mistral", "llama", NULL};
    static const char* const ACTIVATIONS[] = {"silu", NULL};
    const JsonValue *v, *coda, *rope_params;
    if (root->type != JSON_OBJECT) {
        coda_errorf(err, "%s: config must be a JSON object, found %s", path, json_type_name(root->type));
        goto done;
    }
    if (hf__check_string(path, root, "model_type", MODEL_TYPES, "expected \"mistral\" or \"llama\"", err) != 0) goto done;
    if (hf__check_string(path, root, "hidden_act", ACTIVATIONS, "the MLP is SwiGLU with SiLU", err) != 0) goto done;
    {
        static const char* const BIAS_KEYS[] = {"attention_bias", "mlp_bias"};
        for (int i = 0; i < 2; i++) {
            v = json_get(root, BIAS_KEYS[i]);
            if (v && v->type == JSON_BOOL && v->boolean) {
                coda_errorf(err, "%s: %s = true is not supported (Mistral has no biases in these layers)", path, BIAS_KEYS[i]);
                goto done;
            }
        }
    }
    for (int i = 0; i < HF_N_ARCH_FIELDS; i++) {
        const HfField* f = &HF_ARCH_FIELDS[i];
        v = json_get(root, f->key);
        if (!v) {
            if (f->required) { coda_errorf(err, "%s: missing required field '%s'", path, f->key); goto done; }
            continue;
        }
        if (hf__set_field(path, "", f, v, &c, err) != 0) goto done;
    }
    // head_dim: explicit when present and non-null (Mistral Nemo: 128 with hidden 5120 / 32 heads),
    // else hidden_size / num_attention_heads as transformers derives it.
    v = json_get(root, "head_dim");
    if (v && v->type != JSON_NULL) {
        static const HfField head_dim = {"head_dim", HF_INT, offsetof(ModelConfig, head_dim), NULL, 0};
        if (hf__set_field(path, "", &head_dim, v, &c, err) != 0) goto done;
    } else {
        if (c.n_heads <= 0 || c.dim % c.n_heads != 0) {
            coda_errorf(err, "%s: head_dim is not given and hidden_size (%d) is not a multiple of num_attention_heads (%d)",
                        path, c.dim, c.n_heads);
            goto done;
        }
        c.head_dim = c.dim / c.n_heads;
    }
    // rope_theta: top level (transformers 4.x) or inside rope_parameters (transformers 5).
    if (hf__check_rope_type(path, "rope_scaling", json_get(root, "rope_scaling"), err) != 0) goto done;
    rope_params = json_get(root, "rope_parameters");
    if (hf__check_rope_type(path, "rope_parameters", rope_params, err) != 0) goto done;
    {
        static const HfField theta = {"rope_theta", HF_DOUBLE, offsetof(ModelConfig, rope_theta), NULL, 1};
        v = json_get(root, "rope_theta");
        const char* prefix = "";
        if ((!v || v->type == JSON_NULL) && rope_params && rope_params->type == JSON_OBJECT) {
            v = json_get(rope_params, "rope_theta");
            prefix = "rope_parameters.";
        }
        if (!v) {
            coda_errorf(err, "%s: missing required field 'rope_theta' (nor rope_parameters.rope_theta)", path);
            goto done;
        }
        if (hf__set_field(path, prefix, &theta, v, &c, err) != 0) goto done;
    }
    coda = json_get(root, "coda");
    if (coda && coda->type != JSON_NULL) {
        if (coda->type != JSON_OBJECT) {
            coda_errorf(err, "%s: field 'coda' must be an object, found %s", path, json_type_name(coda->type));
            goto done;
        }
        for (size_t k = 0; k < coda->count; k++) {
            const HfField* f = NULL;
            for (int i = 0; i < HF_N_CODA_FIELDS && !f; i++)
                if (strcmp(HF_CODA_FIELDS[i].key, coda->keys[k]) == 0) f = &HF_CODA_FIELDS[i];
            if (!f) {  // a typo must not silently fall back to a default
                coda_errorf(err, "%s: unknown CoDA option 'coda.%s'", path, coda->keys[k]);
                goto done;
            }
            if (hf__set_field(path, "coda.", f, &coda->items[k], &c, err) != 0) goto done;
        }
    }
    {
        CodaError inner;
        if (config_validate(&c, &inner) != 0) { coda_errorf(err, "%s: %s", path, inner.msg); goto done; }
    }
    *cfg = c;
    rc = 0;
done:
    return rc;
}

// config.json text already in memory (fuzzing, tests); `path` names it in messages.
static inline int config_read_hf_text(const char* path, const char* text, size_t len, ModelConfig* cfg, CodaError* err) {
    JsonValue* root = NULL;
    CodaError inner;
    if (json_parse(text, len, &root, &inner) != 0) return coda_errorf(err, "%s: %s", path, inner.msg);
    int rc = config_from_json(root, path, cfg, err);
    json_free(root);
    return rc;
}

// Reads a Mistral/Llama config.json file (plus the optional "coda" object) into cfg.
static inline int config_read_hf(const char* config_json_path, ModelConfig* cfg, CodaError* err) {
    JsonValue* root = NULL;
    if (json_parse_file(config_json_path, &root, err) != 0) return -1;
    int rc = config_from_json(root, config_json_path, cfg, err);
    json_free(root);
    return rc;
}

// Writes bytes to path atomically (temp file in the same directory, fsync, rename).
static inline int hf__write_file_atomic(const char* path, const char* data, size_t len, CodaError* err) {
    size_t tl = strlen(path) + 64;
    char* tmp = (char*)coda_malloc_or_die(tl, "temp path");
    FILE* f = coda_create_temp_beside(path, tmp, tl, err);
    if (!f) { free(tmp); return -1; }
    int ok = fwrite(data, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int rc = coda_errorf(err, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    return 0;
}

static inline const char* hf__torch_dtype_name(DType t) {
    switch (t) {
        case DT_F32: return "float32";
        case DT_F64: return "float64";
        case DT_BF16: return "bfloat16";
        case DT_F16: return "float16";
        default: return NULL;
    }
}

// Appends `"key": value` for one table field (indent = leading spaces).
static inline void hf__write_field(JsonBuf* b, const HfField* f, const ModelConfig* cfg, int indent, int last) {
    const char* base = (const char*)cfg + f->offset;
    jbuf_printf(b, "%*s", indent, "");
    json_write_cstr(b, f->key);
    jbuf_puts(b, ": ");
    switch (f->type) {
        case HF_INT: case HF_TOKEN_ID: jbuf_printf(b, "%d", *(const int*)base); break;
        case HF_BOOL: jbuf_puts(b, *(const int*)base ? "true" : "false"); break;
        case HF_FLOAT: json_write_float(b, *(const float*)base); break;
        case HF_DOUBLE: json_write_double(b, *(const double*)base); break;
        case HF_ENUM: json_write_cstr(b, f->names[*(const int*)base]); break;
    }
    jbuf_puts(b, last ? "\n" : ",\n");
}

// config.json text that transformers loads as MistralConfig (keys sorted, indent 2, like
// save_pretrained), with the weights' dtype recorded as torch_dtype, plus the "coda" object, into b
// (initialised by the caller). `path` names the destination in messages.
static inline int config_to_json(JsonBuf* b, const char* path, const ModelConfig* cfg, DType weights_dtype, CodaError* err) {
    const char* torch_dtype = hf__torch_dtype_name(weights_dtype);
    if (!torch_dtype) return coda_errorf(err, "%s: weights dtype %s has no torch float dtype", path, dtype_name(weights_dtype));
    CodaError inner;
    if (config_validate(cfg, &inner) != 0) return coda_errorf(err, "%s: refusing to write an invalid config: %s", path, inner.msg);
    jbuf_puts(b, "{\n  \"architectures\": [\n    \"MistralForCausalLM\"\n  ],\n  \"attention_dropout\": 0.0,\n");
    jbuf_printf(b, "  \"bos_token_id\": %d,\n  \"coda\": {\n", cfg->bos_id);
    for (int i = 0; i < HF_N_CODA_FIELDS; i++) hf__write_field(b, &HF_CODA_FIELDS[i], cfg, 4, i == HF_N_CODA_FIELDS - 1);
    jbuf_printf(b, "  },\n  \"eos_token_id\": %d,\n  \"head_dim\": %d,\n  \"hidden_act\": \"silu\",\n", cfg->eos_id, cfg->head_dim);
    jbuf_printf(b, "  \"hidden_size\": %d,\n  \"initializer_range\": ", cfg->dim);
    json_write_float(b, cfg->init_std);
    jbuf_printf(b, ",\n  \"intermediate_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"model_type\": \"mistral\",\n",
                cfg->ffn_dim, cfg->max_seq_len);
    jbuf_printf(b, "  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_key_value_heads\": %d,\n",
                cfg->n_heads, cfg->n_layers, cfg->n_kv_heads);
    jbuf_puts(b, "  \"rms_norm_eps\": ");
    json_write_float(b, cfg->norm_eps);
    jbuf_puts(b, ",\n  \"rope_theta\": ");
    json_write_double(b, cfg->rope_theta);
    jbuf_printf(b, ",\n  \"sliding_window\": null,\n  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n",
                cfg->tie_embeddings ? "true" : "false", torch_dtype);
    jbuf_printf(b, "  \"use_cache\": true,\n  \"vocab_size\": %d\n}\n", cfg->vocab_size);
    return 0;
}

// Writes config_to_json's text to path atomically.
static inline int config_write_hf_dtype(const char* path, const ModelConfig* cfg, DType weights_dtype, CodaError* err) {
    JsonBuf b;
    jbuf_init(&b);
    int rc = config_to_json(&b, path, cfg, weights_dtype, err);
    if (rc == 0) rc = hf__write_file_atomic(path, b.data, b.len, err);
    jbuf_free(&b);
    return rc;
}
static inline int config_write_hf(const char* path, const ModelConfig* cfg, CodaError* err) {
    return config_write_hf_dtype(path, cfg, DT_BF16, err);
}

// ---------------------------------------------------------------------------------------------
// Weights

#define HF_INDEX_NAME "model.safetensors.index.json"
#define HF_SINGLE_NAME "model.safetensors"
#define HF_DEFAULT_SHARD_BYTES 5000000000ull  // transformers' max_shard_size="5GB"
#define HF_REPORT_NAMES 4

typedef struct {
    int n_files;            // safetensors files read
    int n_loaded;           // table tensors filled from the files
    int n_coda_missing;     // ROLE_CODA_NEW tensors not in the files: left as the caller initialised them
    int n_ignored;          // skipped on purpose: rotary inv_freq buffers, lm_head of a tied model
    int n_unexpected;       // tensors in the files that the table does not have
    char unexpected[HF_REPORT_NAMES][128];  // the first few of those
} HfLoadReport;

// Options of hf_load_params_opts; all zero = the defaults (what hf_load_params uses).
typedef struct {
    int allow_nonfinite;    // 1: load NaN/Inf weights as they are. Default: refuse the file, naming the
                            // first such tensor and element (a model with them evaluates to ppl nan)
} HfLoadOptions;

static inline int hf__is_float(DType t) { return t == DT_F32 || t == DT_F64 || t == DT_BF16 || t == DT_F16; }

// Can a finite value of type src become infinite as dst? (F16 holds less range than BF16, which holds
// as much as F32 less rounding at the very top.)
static inline int hf__may_overflow(DType src, DType dst) {
    if (dst == DT_F16) return src != DT_F16;
    if (dst == DT_BF16) return src == DT_F32 || src == DT_F64;
    if (dst == DT_F32) return src == DT_F64;
    return 0;
}

// One element of a float-like buffer as a double (for messages).
static inline double hf__element(const void* p, DType t, size_t i) {
    double v = 0;
    unsigned char tmp[8];
    memcpy(tmp, (const char*)p + i * dtype_size(t), dtype_size(t));
    convert_floats(&v, DT_F64, tmp, t, 1);
    return v;
}

static inline int hf__ends_with(const char* s, const char* suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

// dir/name into out. A result longer than out (n >= PATH_MAX here) could never be opened; it is
// left empty rather than truncated, so the caller's open fails instead of finding a wrong file.
static inline void hf__join(char* out, size_t n, const char* dir, const char* name) {
    size_t dl = strlen(dir);
    if ((size_t)snprintf(out, n, "%s%s%s", dir, (dl && dir[dl - 1] == '/') ? "" : "/", name) >= n) out[0] = '\0';
}

static inline int hf__exists(const char* path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static inline void hf__format_shape(char* buf, size_t n, int ndim, const int64_t* shape) {
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && at < n; d++) at += (size_t)snprintf(buf + at, n - at, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

// State of one load: which table tensors are filled, and from which file.
typedef struct {
    const ParamTable* table;
    void* dst;
    DType dst_dtype;
    const char** source;    // [table->n]: file the tensor came from, NULL until loaded
    HfLoadReport* report;
    HfLoadOptions opt;
} HfLoad;

// Copies every tensor of one open file that the table knows into the buffer.
static inline int hf__load_file(HfLoad* L, const SafeTensors* st, CodaError* err) {
    const ParamTable* t = L->table;
    size_t dsize = dtype_size(L->dst_dtype);
    for (int i = 0; i < st->n; i++) {
        const StTensor* s = &st->tensors[i];
        if (hf__ends_with(s->name, "rotary_emb.inv_freq")) { L->report->n_ignored++; continue; }
        const ParamTensor* p = param_find_by_name(t, s->name);
        if (!p) {
            if (strcmp(s->name, PARAM_KINDS[PK_LM_HEAD].name) == 0) { L->report->n_ignored++; continue; }  // tied: HF ignores it too
            HfLoadReport* r = L->report;
            if (r->n_unexpected < HF_REPORT_NAMES) snprintf(r->unexpected[r->n_unexpected], sizeof(r->unexpected[0]), "%s", s->name);
            r->n_unexpected++;
            continue;
        }
        int idx = (int)(p - t->tensors);
        if (L->source[idx]) return coda_errorf(err, "%s: tensor '%s' was already loaded from %s", st->path, s->name, L->source[idx]);
        if (!hf__is_float(s->dtype))
            return coda_errorf(err, "%s: tensor '%s' has dtype %s; parameters must be F32, F64, BF16 or F16", st->path, s->name,
                               dtype_name(s->dtype));
        int same = s->ndim == p->ndim;
        for (int d = 0; d < p->ndim && same; d++) same = s->shape[d] == p->shape[d];
        if (!same) {
            char want[64], got[160];
            hf__format_shape(want, sizeof(want), p->ndim, p->shape);
            hf__format_shape(got, sizeof(got), s->ndim, s->shape);
            return coda_errorf(err, "%s: tensor '%s' has shape %s but the config expects %s", st->path, s->name, got, want);
        }
        size_t bad = L->opt.allow_nonfinite ? s->numel : floats_first_nonfinite(s->data, s->dtype, s->numel);
        if (bad < s->numel)
            return coda_errorf(err, "%s: tensor '%s' element %zu is %g: refusing a model with non-finite weights "
                               "(it would evaluate to NaN; HfLoadOptions.allow_nonfinite loads it anyway)", st->path, s->name, bad,
                               hf__element(s->data, s->dtype, bad));
        char* out = (char*)L->dst + p->offset * dsize;
        size_t ssize = dtype_size(s->dtype);
        if ((uintptr_t)s->data % ssize == 0) {
            convert_floats(out, L->dst_dtype, s->data, s->dtype, s->numel);
        } else {  // a misaligned tensor in the file: go through an aligned copy, chunk by chunk
            double tmp[4096];
            size_t per = sizeof(tmp) / ssize;
            for (size_t at = 0; at < s->numel; at += per) {
                size_t k = s->numel - at < per ? s->numel - at : per;
                memcpy(tmp, (const char*)s->data + at * ssize, k * ssize);
                convert_floats(out + at * dsize, L->dst_dtype, tmp, s->dtype, k);
            }
        }
        // A finite value can still overflow a narrower buffer type (an F64 1e300 as F32 or BF16).
        bad = L->opt.allow_nonfinite || !hf__may_overflow(s->dtype, L->dst_dtype) ? s->numel
                                                                                   : floats_first_nonfinite(out, L->dst_dtype, s->numel);
        if (bad < s->numel)
            return coda_errorf(err, "%s: tensor '%s' element %zu = %g (%s) overflows %s, the type it is loaded into", st->path,
                               s->name, bad, hf__element(s->data, s->dtype, bad), dtype_name(s->dtype), dtype_name(L->dst_dtype));
        L->source[idx] = st->path;
        L->report->n_loaded++;
    }
    return 0;
}

// Shard file names of an index, in order of first appearance, checked for existence. Returns the
// weight_map object (owned by `index`).
static inline const JsonValue* hf__read_index(const char* index_path, const char* model_dir, const JsonValue* index,
                                              char*** shards_out, int* n_out, CodaError* err) {
    *shards_out = NULL;
    *n_out = 0;
    if (index->type != JSON_OBJECT) {
        coda_errorf(err, "%s: malformed index: expected a JSON object, found %s", index_path, json_type_name(index->type));
        return NULL;
    }
    const JsonValue* wm = json_get(index, "weight_map");
    if (!wm || wm->type != JSON_OBJECT) {
        coda_errorf(err, "%s: malformed index: missing \"weight_map\" object", index_path);
        return NULL;
    }
    char** shards = (char**)coda_calloc_or_die(wm->count, sizeof(char*), "shard list");
    int n = 0;
    for (size_t i = 0; i < wm->count; i++) {
        const JsonValue* f = &wm->items[i];
        if (f->type != JSON_STRING || f->string_len == 0 || strchr(f->string, '/') || strlen(f->string) != f->string_len) {
            char found[96];
            hf__describe(f, found, sizeof(found));
            coda_errorf(err, "%s: malformed index: weight_map[\"%s\"] must be a shard file name, found %s", index_path, wm->keys[i], found);
            for (int k = 0; k < n; k++) free(shards[k]);
            free(shards);
            return NULL;
        }
        int seen = 0;
        for (int k = 0; k < n && !seen; k++) seen = strcmp(shards[k], f->string) == 0;
        if (seen) continue;
        char full[4096];
        hf__join(full, sizeof(full), model_dir, f->string);
        if (!hf__exists(full)) {
            coda_errorf(err, "%s: weight_map puts tensor '%s' in shard '%s', but %s does not exist", index_path, wm->keys[i], f->string, full);
            for (int k = 0; k < n; k++) free(shards[k]);
            free(shards);
            return NULL;
        }
        shards[n++] = strdup(f->string);
    }
    *shards_out = shards;
    *n_out = n;
    return wm;
}

// Loads the tensors of a HF model directory into dst (laid out by t, elements of dst_dtype).
// Tensors of role ROLE_CODA_NEW that the files lack keep whatever the caller put there.
// opt may be NULL (defaults: NaN/Inf weights are refused).
static inline int hf_load_params_opts(const char* model_dir, const ParamTable* t, void* dst, DType dst_dtype,
                                      const HfLoadOptions* opt, HfLoadReport* report, CodaError* err) {
    HfLoadReport local;
    if (!report) report = &local;
    memset(report, 0, sizeof(*report));
    if (!hf__is_float(dst_dtype)) return coda_errorf(err, "%s: cannot load parameters into a %s buffer", model_dir, dtype_name(dst_dtype));
    char index_path[4096], single_path[4096], where[4096];
    hf__join(index_path, sizeof(index_path), model_dir, HF_INDEX_NAME);
    hf__join(single_path, sizeof(single_path), model_dir, HF_SINGLE_NAME);
    HfLoad L;
    L.table = t;
    L.dst = dst;
    L.dst_dtype = dst_dtype;
    L.report = report;
    memset(&L.opt, 0, sizeof(L.opt));
    if (opt) L.opt = *opt;
    L.source = (const char**)coda_calloc_or_die((size_t)t->n + 1, sizeof(char*), "load sources");
    SafeTensors* open_files = NULL;  // kept open until the end: L.source points at their paths
    int n_open = 0, rc = -1;
    JsonValue* index = NULL;
    char** shards = NULL;
    int n_shards = 0;
    if (hf__exists(index_path)) {
        snprintf(where, sizeof(where), "%s", index_path);
        if (json_parse_file(index_path, &index, err) != 0) goto done;
        const JsonValue* wm = hf__read_index(index_path, model_dir, index, &shards, &n_shards, err);
        if (!wm) goto done;
        open_files = (SafeTensors*)coda_calloc_or_die((size_t)n_shards, sizeof(SafeTensors), "shard files");
        for (int s = 0; s < n_shards; s++) {
            char full[4096];
            hf__join(full, sizeof(full), model_dir, shards[s]);
            if (st_open(&open_files[s], full, err) != 0) goto done;
            n_open++;
            report->n_files++;
            if (hf__load_file(&L, &open_files[s], err) != 0) goto done;
            // The index must not promise tensors that its shard lacks (transformers would fail on them).
            for (size_t i = 0; i < wm->count; i++)
                if (strcmp(wm->items[i].string, shards[s]) == 0 && !st_find(&open_files[s], wm->keys[i])) {
                    coda_errorf(err, "%s: weight_map puts tensor '%s' in %s, but that file has no such tensor", index_path, wm->keys[i], full);
                    goto done;
                }
            // Free the mapping now (7B shards are GBs) but keep the path the sources point at.
            munmap(open_files[s].file, open_files[s].file_size);
            open_files[s].file = NULL;
        }
    } else if (hf__exists(single_path)) {
        snprintf(where, sizeof(where), "%s", single_path);
        open_files = (SafeTensors*)coda_calloc_or_die(1, sizeof(SafeTensors), "model file");
        if (st_open(&open_files[0], single_path, err) != 0) goto done;
        n_open = 1;
        report->n_files = 1;
        if (hf__load_file(&L, &open_files[0], err) != 0) goto done;
    } else {
        coda_errorf(err, "%s: no %s or %s in this directory", model_dir, HF_SINGLE_NAME, HF_INDEX_NAME);
        goto done;
    }
    {
        int n_missing = 0;
        const char* first_missing = NULL;
        for (int i = 0; i < t->n; i++) {
            if (L.source[i]) continue;
            if (PARAM_KINDS[t->tensors[i].kind].role == ROLE_CODA_NEW) { report->n_coda_missing++; continue; }
            if (!first_missing) first_missing = t->tensors[i].name;
            n_missing++;
        }
        if (n_missing) {
            coda_errorf(err, "%s: missing tensor '%s' that the config requires (%d required tensor%s missing in all)", where,
                        first_missing, n_missing, n_missing > 1 ? "s" : "");
            goto done;
        }
    }
    rc = 0;
done:
    for (int s = 0; s < n_open; s++) st_close(&open_files[s]);
    free(open_files);
    for (int s = 0; s < n_shards; s++) free(shards[s]);
    free(shards);
    json_free(index);
    free(L.source);
    return rc;
}

// hf_load_params_opts with the default options.
static inline int hf_load_params(const char* model_dir, const ParamTable* t, void* dst, DType dst_dtype,
                                 HfLoadReport* report, CodaError* err) {
    return hf_load_params_opts(model_dir, t, dst, dst_dtype, NULL, report, err);
}

// mkdir -p.
static inline int hf__mkdirs(const char* dir, CodaError* err) {
    char buf[4096];
    if ((size_t)snprintf(buf, sizeof(buf), "%s", dir) >= sizeof(buf)) return coda_errorf(err, "%s: path too long", dir);
    for (char* p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return coda_errorf(err, "%s: cannot create directory %s: %s", dir, buf, strerror(errno));
            *p = saved;
            if (!saved) break;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return coda_errorf(err, "%s: not a directory", dir);
    return 0;
}

// "model-00001-of-00002.safetensors", the shard names save_pretrained uses.
static inline int hf__is_shard_name(const char* s) {
    if (strlen(s) != 32 || strncmp(s, "model-", 6) != 0 || strncmp(s + 11, "-of-", 4) != 0 || strcmp(s + 20, ".safetensors") != 0) return 0;
    for (int i = 0; i < 5; i++)
        if (s[6 + i] < '0' || s[6 + i] > '9' || s[15 + i] < '0' || s[15 + i] > '9') return 0;
    return 1;
}

static inline int hf__cmp_str(const void* a, const void* b) { return strcmp(*(const char* const*)a, *(const char* const*)b); }

// Removes weight files a previous save left in the directory that the new layout does not use, so
// a stale index.json can never point the loader at old shards (transformers cleans up the same way).
static inline void hf__remove_stale(const char* model_dir, int n_shards) {
    char path[4096];
    if (n_shards == 1) {
        hf__join(path, sizeof(path), model_dir, HF_INDEX_NAME);
        unlink(path);
    } else {
        hf__join(path, sizeof(path), model_dir, HF_SINGLE_NAME);
        unlink(path);
    }
    DIR* d = opendir(model_dir);
    if (!d) return;
    struct dirent* e;
    char expect_total[16];
    snprintf(expect_total, sizeof(expect_total), "%05d", n_shards);
    while ((e = readdir(d)) != NULL) {
        if (!hf__is_shard_name(e->d_name)) continue;
        if (n_shards > 1 && strncmp(e->d_name + 15, expect_total, 5) == 0 && atoi(e->d_name + 6) >= 1 && atoi(e->d_name + 6) <= n_shards)
            continue;  // one of ours
        hf__join(path, sizeof(path), model_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

// Saves the buffer as a HF model directory: one model.safetensors when everything fits in
// max_shard_bytes (0 = no limit), else shards + index, split like save_pretrained (tensors in table
// order, a new shard when the next tensor would overflow; a tensor larger than the limit alone).
static inline int hf_save_params(const char* model_dir, const ParamTable* t, const void* src, DType src_dtype, DType out_dtype,
                                 size_t max_shard_bytes, CodaError* err) {
    if (!hf__is_float(src_dtype) || !hf__is_float(out_dtype))
        return coda_errorf(err, "%s: can only save float parameters (got %s -> %s)", model_dir, dtype_name(src_dtype), dtype_name(out_dtype));
    if (hf__mkdirs(model_dir, err) != 0) return -1;
    size_t osize = dtype_size(out_dtype), isize = dtype_size(src_dtype);
    int* shard_of = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(t->n + 1), "shard plan");
    int n_shards = 0;
    size_t current = 0, total_bytes = 0;
    for (int i = 0; i < t->n; i++) {
        size_t bytes = t->tensors[i].numel * osize;
        if (n_shards == 0 || (max_shard_bytes && current > 0 && current + bytes > max_shard_bytes)) { n_shards++; current = 0; }
        shard_of[i] = n_shards - 1;
        current += bytes;
        total_bytes += bytes;
    }
    char** names = (char**)coda_calloc_or_die((size_t)n_shards + 1, sizeof(char*), "shard names");
    for (int s = 0; s < n_shards; s++) {
        names[s] = (char*)coda_malloc_or_die(48, "shard name");
        if (n_shards == 1) snprintf(names[s], 48, "%s", HF_SINGLE_NAME);
        else snprintf(names[s], 48, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
    }
    StWriteTensor* wt = (StWriteTensor*)coda_calloc_or_die((size_t)t->n + 1, sizeof(StWriteTensor), "shard header");
    size_t chunk = 1 << 20;
    void* buf = coda_malloc_or_die(chunk * osize, "conversion buffer");
    static const StMeta meta[1] = {{"format", "pt"}};  // transformers refuses safetensors without it
    int rc = -1;
    for (int s = 0, first = 0; s < n_shards; s++) {
        int n = 0;
        while (first + n < t->n && shard_of[first + n] == s) {
            const ParamTensor* p = &t->tensors[first + n];
            wt[n].name = p->name;
            wt[n].dtype = out_dtype;
            wt[n].ndim = p->ndim;
            wt[n].shape = p->shape;
            wt[n].data = NULL;
            n++;
        }
        char path[4096];
        hf__join(path, sizeof(path), model_dir, names[s]);
        StWriter w;
        if (st_writer_open(&w, path, wt, n, meta, 1, err) != 0) goto done;
        for (int i = first; i < first + n; i++) {
            const ParamTensor* p = &t->tensors[i];
            const char* in = (const char*)src + p->offset * isize;
            for (size_t at = 0; at < p->numel; at += chunk) {
                size_t k = p->numel - at < chunk ? p->numel - at : chunk;
                convert_floats(buf, out_dtype, in + at * isize, src_dtype, k);
                if (st_writer_put(&w, buf, k * osize, err) != 0) goto done;
            }
        }
        if (st_writer_commit(&w, err) != 0) goto done;
        first += n;
    }
    if (n_shards > 1) {  // index.json exactly as save_pretrained writes it: sorted keys, indent 2
        const char** order = (const char**)coda_malloc_or_die(sizeof(char*) * (size_t)(t->n + 1), "index order");
        int* which = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(t->n + 1), "index shard");
        for (int i = 0; i < t->n; i++) order[i] = t->tensors[i].name;
        qsort(order, (size_t)t->n, sizeof(*order), hf__cmp_str);
        for (int i = 0; i < t->n; i++) which[i] = shard_of[param_find_by_name(t, order[i]) - t->tensors];
        JsonBuf b;
        jbuf_init(&b);
        jbuf_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %zu\n  },\n  \"weight_map\": {\n", total_bytes);
        for (int i = 0; i < t->n; i++) {
            jbuf_puts(&b, "    ");
            json_write_cstr(&b, order[i]);
            jbuf_puts(&b, ": ");
            json_write_cstr(&b, names[which[i]]);
            jbuf_puts(&b, i + 1 < t->n ? ",\n" : "\n");
        }
        jbuf_puts(&b, "  }\n}\n");
        char path[4096];
        hf__join(path, sizeof(path), model_dir, HF_INDEX_NAME);
        int wrc = hf__write_file_atomic(path, b.data, b.len, err);
        jbuf_free(&b);
        free(order);
        free(which);
        if (wrc != 0) goto done;
    }
    hf__remove_stale(model_dir, n_shards);
    rc = 0;
done:
    free(buf);
    free(wt);
    for (int s = 0; s < n_shards; s++) free(names[s]);
    free(names);
    free(shard_of);
    return rc;
}
