// adapters.h — a model's CoDA attention adapters in the PyTorch reference's layout (docs/spec.md §5.2),
// out of a coda.c model and back into one:
//   * one group per layer, "layer_{i}", holding the adapter's tensors under the reference's names:
//     "coda." + the part of coda.c's (= Hugging Face's) name after "self_attn." — coda.q_proj.weight,
//     coda.k_proj.weight, coda.v_proj.weight, coda.o_proj.weight, coda.theta, coda.lambda_proj.weight,
//     coda.lambda_proj.bias, coda.head_norm.weight (head norm "full" only), coda.write_proj.weight,
//     coda.write_proj.bias, coda.summary_eta_logit (bounded only); the same shapes as coda.c's tensors
//     ([out, in] matrices as torch's nn.Linear, theta [H, Dh/2], write_proj.weight [1, D]);
//   * the tensors that belong to the adapter are read off the parameter table (per-layer tensors of
//     role ROLE_ATTN_PROJ or ROLE_CODA_NEW), so a new adapter tensor needs no change here;
//   * two files: coda_adapters.pt (torch's zip + pickle, llmc/torch_pt.h: what the reference's
//     Quick Start loads with torch.load and state[f"layer_{i}"]) and a safetensors file with the
//     flattened keys "layer_{i}.coda.q_proj.weight", whose metadata carries the model's attention
//     config (config.json's "coda" object) so that the bounded config travels with the adapters.
// Import overlays such a file on a model's parameter buffer: every tensor in the file must name a
// tensor of the model with the same shape (else the file is refused, naming it, and nothing is
// changed); adapter tensors the file lacks (an unbounded phase-1 file has no write_proj / eta) keep
// what the buffer holds, and are counted.
#pragma once
#include "hf_model.h"
#include "overrides.h"
#include "params.h"
#include "safetensors.h"
#include "torch_pt.h"

#define ADAPTERS_FORMAT "coda_adapters"

// The reference's name of a table tensor ("coda.q_proj.weight"), or 0 if it is not part of the adapter.
static inline int adapter_name(const ParamTensor* t, char* out, size_t n) {
    const ParamKindInfo* k = &PARAM_KINDS[t->kind];
    if (!k->per_layer || (k->role != ROLE_ATTN_PROJ && k->role != ROLE_CODA_NEW)) return 0;
    const char* s = strstr(k->name, "self_attn.");
    if (!s) return 0;
    snprintf(out, n, "coda.%s", s + strlen("self_attn."));
    return 1;
}

// The adapter tensors of (table t, buffer params of dtype src) as PtTensors in out_dtype, converted
// into one malloc'd block (*storage; free it and *out after use). Layers in order, each in table order.
static inline int adapters_collect(const ParamTable* t, const void* params, DType src, DType out_dtype, PtTensor** out, int* n,
                                   void** storage, CodaError* err) {
    if (out_dtype != DT_BF16 && out_dtype != DT_F32) return coda_errorf(err, "adapters: export dtype must be bf16 or fp32");
    size_t bytes = 0;
    int count = 0;
    char name[128];
    for (int i = 0; i < t->n; i++)
        if (adapter_name(&t->tensors[i], name, sizeof(name))) { count++; bytes += t->tensors[i].numel * dtype_size(out_dtype); }
    if (!count) return coda_errorf(err, "adapters: the model has no attention adapter tensors");
    PtTensor* pt = (PtTensor*)coda_calloc_or_die((size_t)count, sizeof(PtTensor), "adapter list");
    char* block = (char*)coda_malloc_or_die(bytes ? bytes : 1, "adapter tensors");
    size_t at = 0;
    int k = 0;
    for (int i = 0; i < t->n; i++) {
        const ParamTensor* p = &t->tensors[i];
        if (!adapter_name(p, name, sizeof(name))) continue;
        PtTensor* e = &pt[k++];
        snprintf(e->group, sizeof(e->group), "layer_%d", p->layer);
        snprintf(e->name, sizeof(e->name), "%s", name);
        e->dtype = out_dtype;
        e->ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) e->shape[d] = p->shape[d];
        e->nbytes = p->numel * dtype_size(out_dtype);
        e->data = block + at;
        convert_floats(e->data, out_dtype, (const char*)params + p->offset * dtype_size(src), src, p->numel);
        at += e->nbytes;
    }
    *out = pt;
    *n = count;
    *storage = block;
    return 0;
}

// coda_adapters.pt: {"layer_0": {"coda.q_proj.weight": tensor, ...}, ...}.
static inline int adapters_write_pt(const char* path, const ParamTable* t, const void* params, DType src, DType out_dtype, CodaError* err) {
    PtTensor* pt;
    int n;
    void* block;
    if (adapters_collect(t, params, src, out_dtype, &pt, &n, &block, err) != 0) return -1;
    int rc = pt_write(path, pt, n, err);
    free(pt);
    free(block);
    return rc;
}

// The flattened safetensors file: "layer_{i}.coda.<name>", metadata format = coda_adapters and
// config = the model's config.json text (its "coda" object holds the attention and bounded config).
static inline int adapters_write_safetensors(const char* path, const ModelConfig* c, const ParamTable* t, const void* params, DType src,
                                             DType out_dtype, CodaError* err) {
    PtTensor* pt;
    int n;
    void* block;
    if (adapters_collect(t, params, src, out_dtype, &pt, &n, &block, err) != 0) return -1;
    StWriteTensor* w = (StWriteTensor*)coda_calloc_or_die((size_t)n, sizeof(StWriteTensor), "adapter list");
    char(*names)[200] = (char(*)[200])coda_malloc_or_die((size_t)n * 200, "adapter names");
    for (int i = 0; i < n; i++) {
        snprintf(names[i], 200, "%s.%s", pt[i].group, pt[i].name);
        w[i].name = names[i]; w[i].dtype = pt[i].dtype; w[i].ndim = pt[i].ndim; w[i].shape = pt[i].shape; w[i].data = pt[i].data;
    }
    JsonBuf jb;
    jbuf_init(&jb);
    int rc = config_to_json(&jb, path, c, out_dtype, err);
    if (rc == 0) {
        StMeta meta[2] = {{"format", ADAPTERS_FORMAT}, {"config", jb.data}};
        rc = st_write(path, w, n, meta, 2, err);
    }
    jbuf_free(&jb);
    free(names);
    free(w);
    free(pt);
    free(block);
    return rc;
}

// Reads a .pt (torch zip) or .safetensors adapter file into PtTensors (group "layer_{i}", name
// "coda...."; free with pt_free). *config_json (may be NULL) gets the safetensors file's config
// metadata, malloc'd, or NULL.
static inline int adapters_read(const char* path, PtTensor** out, int* n, char** config_json, CodaError* err) {
    if (config_json) *config_json = NULL;
    const size_t len = strlen(path);
    if (len < 12 || strcmp(path + len - 12, ".safetensors") != 0) return pt_read(path, out, n, err);
    SafeTensors st;
    if (st_open(&st, path, err) != 0) return -1;
    PtTensor* pt = (PtTensor*)coda_calloc_or_die((size_t)(st.n ? st.n : 1), sizeof(PtTensor), "adapter list");
    for (int i = 0; i < st.n; i++) {
        const StTensor* s = &st.tensors[i];
        const char* dot = strchr(s->name, '.');
        PtTensor* e = &pt[i];
        if (!dot || (size_t)(dot - s->name) >= sizeof(e->group) || strlen(dot + 1) >= sizeof(e->name) || s->ndim > 8) {
            pt_free(pt, i);
            st_close(&st);
            return coda_errorf(err, "%s: tensor '%s' is not named layer_{i}.coda.<name> (an adapters file)", path, s->name);
        }
        memcpy(e->group, s->name, (size_t)(dot - s->name));
        snprintf(e->name, sizeof(e->name), "%s", dot + 1);
        e->dtype = s->dtype;
        e->ndim = s->ndim;
        for (int d = 0; d < s->ndim; d++) e->shape[d] = s->shape[d];
        e->nbytes = s->nbytes;
        e->data = coda_malloc_or_die(s->nbytes ? s->nbytes : 1, "adapter tensor");
        memcpy(e->data, s->data, s->nbytes);
    }
    const char* cfg = st_meta_get(&st, "config");
    if (config_json && cfg) {
        *config_json = (char*)coda_malloc_or_die(strlen(cfg) + 1, "adapter config");
        strcpy(*config_json, cfg);
    }
    *out = pt;
    *n = st.n;
    st_close(&st);
    return 0;
}

typedef struct {
    int n_applied;        // file tensors written into the buffer
    int n_kept;           // adapter tensors of the model the file does not have (kept as they were)
    char kept[4][160];    // the first few of those, "layer_0.coda.write_proj.weight"
} AdapterApplyReport;

// Writes the n adapter tensors a[] into params (table t, elements of dtype dst), converting their
// dtype. Checks everything first: a tensor the model does not have, a shape that differs, a
// duplicate or a non-float dtype is an error naming it, and then nothing is written.
static inline int adapters_apply(const ParamTable* t, void* params, DType dst, const PtTensor* a, int n, const char* what,
                                 AdapterApplyReport* rep, CodaError* err) {
    memset(rep, 0, sizeof(*rep));
    int* target = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(n ? n : 1), "adapter plan");
    unsigned char* hit = (unsigned char*)coda_calloc_or_die((size_t)t->n + 1, 1, "adapter plan");
    char name[128];
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        int layer = -1, used = 0;
        if (sscanf(a[i].group, "layer_%d%n", &layer, &used) != 1 || a[i].group[used] != '\0' || layer < 0) {
            rc = coda_errorf(err, "%s: group '%s' is not layer_{i}", what, a[i].group);
            break;
        }
        target[i] = -1;
        for (int j = 0; j < t->n; j++)
            if (t->tensors[j].layer == layer && adapter_name(&t->tensors[j], name, sizeof(name)) && strcmp(name, a[i].name) == 0) target[i] = j;
        if (target[i] < 0) {
            rc = coda_errorf(err, "%s: %s.%s is not an adapter tensor of this model (%d layers; %s)", what, a[i].group, a[i].name,
                             t->n_layers, layer >= t->n_layers ? "no such layer" : "unknown name, or the config lacks it (bounded? head norm?)");
            break;
        }
        const ParamTensor* p = &t->tensors[target[i]];
        size_t numel = 1;
        for (int d = 0; d < a[i].ndim; d++) numel *= (size_t)a[i].shape[d];
        // a 1-D model tensor [n] and a file tensor [n] or [1, n] ... shapes must match exactly
        int same = a[i].ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = a[i].shape[d] == p->shape[d];
        if (!same) {
            char fs[64], ms[64];
            hf__format_shape(fs, sizeof(fs), a[i].ndim, a[i].shape);
            hf__format_shape(ms, sizeof(ms), p->ndim, p->shape);
            rc = coda_errorf(err, "%s: %s.%s has shape %s, the model's %s", what, a[i].group, a[i].name, fs, ms);
            break;
        }
        if (!hf__is_float(a[i].dtype) || a[i].nbytes != numel * dtype_size(a[i].dtype)) {
            rc = coda_errorf(err, "%s: %s.%s: %s tensor of %zu bytes for %zu elements", what, a[i].group, a[i].name, dtype_name(a[i].dtype),
                             a[i].nbytes, numel);
            break;
        }
        if (hit[target[i]]) { rc = coda_errorf(err, "%s: %s.%s appears twice", what, a[i].group, a[i].name); break; }
        hit[target[i]] = 1;
    }
    if (rc == 0) {
        for (int i = 0; i < n; i++) {
            const ParamTensor* p = &t->tensors[target[i]];
            convert_floats((char*)params + p->offset * dtype_size(dst), dst, a[i].data, a[i].dtype, p->numel);
            rep->n_applied++;
        }
        for (int j = 0; j < t->n; j++)
            if (!hit[j] && adapter_name(&t->tensors[j], name, sizeof(name))) {
                if (rep->n_kept < 4) snprintf(rep->kept[rep->n_kept], sizeof(rep->kept[0]), "layer_%d.%s", t->tensors[j].layer, name);
                rep->n_kept++;
            }
    }
    free(target);
    free(hit);
    return rc == 0 ? 0 : -1;
}

// ---------------------------------------------------------------------------------------------
// Export and import between a model directory (HF layout, coda.c checkpoint) and an adapters file

static inline int adapters__is_pt(const char* path) {
    const size_t n = strlen(path);
    return n >= 3 && strcmp(path + n - 3, ".pt") == 0;
}
static inline int adapters__is_safetensors(const char* path) {
    const size_t n = strlen(path);
    return n >= 12 && strcmp(path + n - 12, ".safetensors") == 0;
}

// The adapters of the CoDA model in model_dir (config.json + safetensors) into out_path (.pt or
// .safetensors by its suffix), tensors in out_dtype. The whole model is read into host memory in
// out_dtype (Mistral-7B in bf16: 14.5 GB) and the adapter tensors written from it.
static inline int adapters_export(const char* model_dir, const char* out_path, DType out_dtype, CodaError* err) {
    if (!adapters__is_pt(out_path) && !adapters__is_safetensors(out_path))
        return coda_errorf(err, "%s: the adapters file must end in .pt (torch) or .safetensors", out_path);
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", model_dir);
    ModelConfig c;
    if (config_read_hf(path, &c, err) != 0) return -1;
    if (!c.differential)
        return coda_errorf(err, "%s: not a CoDA model (its attention is standard GQA): it has no adapters to export", model_dir);
    ParamTable t;
    param_table_build(&t, &c, out_dtype);
    void* buf = coda_calloc_or_die(t.total, dtype_size(out_dtype), "model parameters");
    HfLoadReport rep;
    int rc = hf_load_params(model_dir, &t, buf, out_dtype, &rep, err);
    if (rc == 0 && rep.n_coda_missing)
        rc = coda_errorf(err, "%s: %d CoDA tensor(s) of its config are not in its files: not a trained CoDA checkpoint", model_dir,
                         rep.n_coda_missing);
    if (rc == 0)
        rc = adapters__is_pt(out_path) ? adapters_write_pt(out_path, &t, buf, out_dtype, out_dtype, err)
                                       : adapters_write_safetensors(out_path, &c, &t, buf, out_dtype, out_dtype, err);
    free(buf);
    param_table_free(&t);
    return rc;
}

// The config of base + adapters: the base's config.json with CoDA attention on, then the adapter
// file's own attention config when it carries one (the safetensors metadata: every field of the
// "coda" object), else what the tensors say (bounded iff write_proj is present, head norm "full" iff
// head_norm is; the other fields keep coda.c's defaults), then the command-line overrides (ov may be
// NULL). A file config of another architecture (layers, width, heads) is refused.
static inline int adapters_import_config(const char* base_dir, const PtTensor* a, int n, const char* file_config, const char* what,
                                         const ConfigOverrides* ov, ModelConfig* c, CodaError* err) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", base_dir);
    if (config_read_hf(path, c, err) != 0) return -1;
    c->differential = 1;
    if (file_config) {
        ModelConfig f;
        if (config_read_hf_text(what, file_config, strlen(file_config), &f, err) != 0) return -1;
        if (f.n_layers != c->n_layers || f.dim != c->dim || f.n_heads != c->n_heads || f.n_kv_heads != c->n_kv_heads ||
            f.head_dim != c->head_dim)
            return coda_errorf(err, "%s was exported from a model of %d layers, D=%d, H=%d, Hkv=%d, Dh=%d; the base %s has %d, %d, %d, %d, %d",
                               what, f.n_layers, f.dim, f.n_heads, f.n_kv_heads, f.head_dim, base_dir, c->n_layers, c->dim, c->n_heads,
                               c->n_kv_heads, c->head_dim);
        for (int i = 0; i < HF_N_CODA_FIELDS; i++) {
            const HfField* fl = &HF_CODA_FIELDS[i];
            const size_t sz = fl->type == HF_DOUBLE ? sizeof(double) : fl->type == HF_FLOAT ? sizeof(float) : sizeof(int);
            memcpy((char*)c + fl->offset, (const char*)&f + fl->offset, sz);
        }
    } else {
        int bounded = 0, head_norm = 0;
        for (int i = 0; i < n; i++) {
            bounded |= strcmp(a[i].name, "coda.write_proj.weight") == 0;
            head_norm |= strcmp(a[i].name, "coda.head_norm.weight") == 0;
        }
        c->bounded = bounded;
        c->head_norm = head_norm ? HEAD_NORM_FULL : HEAD_NORM_IDENTITY;
    }
    if (ov && ov->bounded >= 0) c->bounded = ov->bounded;
    overrides_apply(c, ov);
    CodaError inner;
    if (config_validate(c, &inner) != 0) return coda_errorf(err, "%s + %s: %s", base_dir, what, inner.msg);
    return 0;
}

typedef struct {
    ModelConfig cfg;            // the model written
    AdapterApplyReport apply;
    HfLoadReport base;
} AdapterImportReport;

// A coda.c checkpoint directory out_dir (config.json + safetensors in dtype) from the base model in
// base_dir and the adapters in adapters_path (.pt from the reference or from adapters_export, or
// .safetensors): base weights, CoDA tensors at their initial values, then the adapters over them
// (adapters_import_config says which config). out_dir must not be base_dir. init_seed: the initial
// values of adapter tensors the file lacks.
static inline int adapters_import(const char* base_dir, const char* adapters_path, const ConfigOverrides* ov, const char* out_dir,
                                  DType dtype, uint64_t init_seed, AdapterImportReport* rep, CodaError* err) {
    memset(rep, 0, sizeof(*rep));
    if (strcmp(base_dir, out_dir) == 0) return coda_errorf(err, "%s: the output directory must not be the base model's", out_dir);
    PtTensor* a = NULL;
    int n = 0;
    char* file_config = NULL;
    if (adapters_read(adapters_path, &a, &n, &file_config, err) != 0) return -1;
    int rc = adapters_import_config(base_dir, a, n, file_config, adapters_path, ov, &rep->cfg, err);
    free(file_config);
    if (rc != 0) { pt_free(a, n); return -1; }
    ParamTable t;
    param_table_build(&t, &rep->cfg, dtype);
    void* buf = coda_calloc_or_die(t.total, dtype_size(dtype), "model parameters");
    size_t maxn = 1;
    for (int i = 0; i < t.n; i++) maxn = t.tensors[i].numel > maxn ? t.tensors[i].numel : maxn;
    float* tmp = (float*)coda_malloc_or_die(sizeof(float) * maxn, "init buffer");
    for (int i = 0; i < t.n; i++) {  // the CoDA tensors a base lacks start at their initial values
        const ParamTensor* p = &t.tensors[i];
        if (PARAM_KINDS[p->kind].role != ROLE_CODA_NEW) continue;
        param_init_fill(&rep->cfg, p, i, init_seed, tmp);
        convert_floats((char*)buf + p->offset * dtype_size(dtype), dtype, tmp, DT_F32, p->numel);
    }
    free(tmp);
    rc = hf_load_params(base_dir, &t, buf, dtype, &rep->base, err);
    if (rc == 0) rc = adapters_apply(&t, buf, dtype, a, n, adapters_path, &rep->apply, err);
    if (rc == 0) rc = hf_save_params(out_dir, &t, buf, dtype, dtype, HF_DEFAULT_SHARD_BYTES, err);
    if (rc == 0) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/config.json", out_dir);
        rc = config_write_hf_dtype(path, &rep->cfg, dtype, err);
    }
    free(buf);
    param_table_free(&t);
    pt_free(a, n);
    return rc;
}
