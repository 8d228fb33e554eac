// test_adapters.h — llmc/adapters.h: a CoDA checkpoint's adapters out (torch .pt and flattened
// safetensors, the reference's key names and shapes, docs/spec.md §5.2) and back in over a base model
// (the checkpoint's adapter tensors bit for bit, the base's other tensors untouched, the config
// carried by the safetensors file or inferred from a .pt), and the refusals.
#pragma once
#include "../../llmc/adapters.h"
#include "test_data.h"      // dt_run_captured: the program as a user runs it
#include "test_torch_pt.h"  // ptt_run: the python checks

// A tiny Mistral-shaped config; differential/bounded as asked.
static ModelConfig ad_config(int differential, int bounded) {
    ModelConfig c = config_default();
    c.vocab_size = 64; c.dim = 32; c.ffn_dim = 48; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8;
    c.differential = differential;
    if (bounded) { c.bounded = 1; c.window = 24; c.n_exact = 4; c.n_summary = 4; c.block_size = 16; }
    return c;
}

// Writes a model directory of config c whose every tensor is random (bf16-representable values).
static void ad_write_model(const char* dir, const ModelConfig* c, uint64_t seed, ParamTable* t, uint16_t** buf) {
    param_table_build(t, c, DT_BF16);
    *buf = (uint16_t*)calloc(t->total, 2);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < t->total; i++) (*buf)[i] = f32_to_bf16((float)(0.1 * rng_normal(&r)));
    CodaError err;
    char path[4200];
    CHECK(hf_save_params(dir, t, *buf, DT_BF16, DT_BF16, 0, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    CHECK(config_write_hf_dtype(path, c, DT_BF16, &err) == 0, "%s", err.msg);
}

// The tensor (kind, layer) of buffer buf laid out by t.
static const uint16_t* ad_tensor(const ParamTable* t, const uint16_t* buf, ParamKind k, int layer, size_t* numel) {
    const ParamTensor* p = param_find(t, k, layer);
    *numel = p ? p->numel : 0;
    return p ? buf + p->offset : NULL;
}

// The two models every import test starts from, in one temporary directory: a GQA base (its MLP,
// norms and embeddings must survive an import) and a trained bounded CoDA checkpoint (its adapters
// must arrive), seeds `seed` and seed + 1.
typedef struct {
    char dir[256], base[300], ck[300];
    ParamTable tb, tc;
    uint16_t *bb, *bc;
} AdPair;
static void ad_pair_make(AdPair* p, const char* tag, uint64_t seed) {
    test_mkdtemp(p->dir, sizeof(p->dir), tag);
    snprintf(p->base, sizeof(p->base), "%s/base", p->dir);
    snprintf(p->ck, sizeof(p->ck), "%s/ckpt", p->dir);
    ModelConfig cb = ad_config(0, 0), cc = ad_config(1, 1);
    ad_write_model(p->base, &cb, seed, &p->tb, &p->bb);
    ad_write_model(p->ck, &cc, seed + 1, &p->tc, &p->bc);
}
static void ad_pair_free(AdPair* p) {
    free(p->bb); free(p->bc);
    param_table_free(&p->tb); param_table_free(&p->tc);
    test_rmtree(p->dir);
}
// A path inside the pair's directory, into buf.
static char* ad_in(const AdPair* p, const char* name, char* buf, size_t n) {
    snprintf(buf, n, "%s/%s", p->dir, name);
    return buf;
}
// A model directory read back: its config's table and its parameters in bf16 (free both).
static void ad_read_model(const char* dir, ParamTable* t, uint16_t** buf) {
    ModelConfig c;
    CodaError err;
    char path[400];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    CHECK(config_read_hf(path, &c, &err) == 0, "%s", err.msg);
    param_table_build(t, &c, DT_BF16);
    *buf = (uint16_t*)calloc(t->total, 2);
    HfLoadReport lr;
    CHECK(hf_load_params(dir, t, *buf, DT_BF16, &lr, &err) == 0 && lr.n_coda_missing == 0, "%s: %s", dir, err.msg);
}

TEST(adapters_export_names_shapes_and_round_trip) {
    char dir[256], ck[300], pt[300], sf[300];
    test_mkdtemp(dir, sizeof(dir), "adapters");
    snprintf(ck, sizeof(ck), "%s/ckpt", dir);
    snprintf(pt, sizeof(pt), "%s/coda_adapters.pt", dir);
    snprintf(sf, sizeof(sf), "%s/adapters.safetensors", dir);
    ModelConfig c = ad_config(1, 1);
    c.head_norm = HEAD_NORM_FULL;
    ParamTable t;
    uint16_t* buf;
    ad_write_model(ck, &c, 1, &t, &buf);
    CodaError err;
    CHECK(adapters_export(ck, pt, DT_BF16, &err) == 0, "%s", err.msg);
    CHECK(adapters_export(ck, sf, DT_BF16, &err) == 0, "%s", err.msg);
    const char* expect[] = {"coda.q_proj.weight", "coda.k_proj.weight", "coda.v_proj.weight", "coda.o_proj.weight", "coda.theta",
                            "coda.lambda_proj.weight", "coda.lambda_proj.bias", "coda.head_norm.weight", "coda.write_proj.weight",
                            "coda.write_proj.bias", "coda.summary_eta_logit"};
    const int n_expect = (int)(sizeof(expect) / sizeof(expect[0]));
    for (int f = 0; f < 2; f++) {
        PtTensor* a;
        int n;
        char* cfg;
        CHECK(adapters_read(f ? sf : pt, &a, &n, &cfg, &err) == 0, "%s", err.msg);
        CHECK(n == n_expect * c.n_layers, "%s: %d tensors, expected %d", f ? "safetensors" : "pt", n, n_expect * c.n_layers);
        int bad = 0;
        for (int i = 0; i < n && i < n_expect * c.n_layers; i++) {
            char group[16];
            snprintf(group, sizeof(group), "layer_%d", i / n_expect);
            bad += strcmp(a[i].group, group) != 0 || strcmp(a[i].name, expect[i % n_expect]) != 0 || a[i].dtype != DT_BF16;
            // the same bytes as the checkpoint's tensor
            for (int j = 0; j < t.n; j++) {
                char name[128];
                if (t.tensors[j].layer != i / n_expect || !adapter_name(&t.tensors[j], name, sizeof(name)) || strcmp(name, a[i].name)) continue;
                bad += a[i].nbytes != t.tensors[j].numel * 2 || memcmp(a[i].data, buf + t.tensors[j].offset, a[i].nbytes) != 0;
                bad += a[i].ndim != t.tensors[j].ndim || a[i].shape[0] != t.tensors[j].shape[0];
            }
        }
        CHECK(bad == 0, "%s: %d names, dtypes, shapes or values differ from the checkpoint's", f ? "safetensors" : "pt", bad);
        // write_proj.weight is [1, D] and theta [H, Dh/2], as the reference's
        const PtTensor* w = NULL;
        for (int i = 0; i < n; i++) if (!strcmp(a[i].name, "coda.write_proj.weight")) w = &a[i];
        CHECK(w && w->ndim == 2 && w->shape[0] == 1 && w->shape[1] == c.dim, "write_proj.weight shape");
        CHECK(f ? cfg != NULL && strstr(cfg, "\"window\": 24") : cfg == NULL, "the safetensors file carries the config (and only it)");
        free(cfg);
        pt_free(a, n);
    }
    free(buf);
    param_table_free(&t);
    test_rmtree(dir);
}

TEST(adapters_import_over_a_base_model) {
    AdPair P;
    ad_pair_make(&P, "adapters_import", 2);
    char pt[400], sf[400], out1[400], out2[400], out3[400];
    ad_in(&P, "coda_adapters.pt", pt, sizeof(pt));
    ad_in(&P, "adapters.safetensors", sf, sizeof(sf));
    ad_in(&P, "from_pt", out1, sizeof(out1));
    ad_in(&P, "from_safetensors", out2, sizeof(out2));
    ad_in(&P, "unbounded", out3, sizeof(out3));
    CodaError err;
    CHECK(adapters_export(P.ck, pt, DT_BF16, &err) == 0 && adapters_export(P.ck, sf, DT_BF16, &err) == 0, "%s", err.msg);
    AdapterImportReport rep;
    CHECK(adapters_import(P.base, pt, NULL, out1, DT_BF16, 9, &rep, &err) == 0, "%s", err.msg);
    CHECK(rep.cfg.differential && rep.cfg.bounded && rep.apply.n_kept == 0, "a .pt with write_proj: CoDA bounded, nothing kept (%d)",
          rep.apply.n_kept);
    CHECK(rep.cfg.window != 24, "a .pt carries no config: coda.c's default window, not the checkpoint's 24");
    CHECK(adapters_import(P.base, sf, NULL, out2, DT_BF16, 9, &rep, &err) == 0, "%s", err.msg);
    CHECK(rep.cfg.bounded && rep.cfg.window == 24 && rep.cfg.n_exact == 4 && rep.cfg.block_size == 16, "the safetensors file's config");
    // the imported model: adapters = the checkpoint's, the rest = the base's
    ParamTable tg;
    uint16_t* bg;
    ad_read_model(out2, &tg, &bg);
    int bad = 0;
    for (int i = 0; i < tg.n; i++) {
        const ParamTensor* p = &tg.tensors[i];
        char name[128];
        const int adapter = adapter_name(p, name, sizeof(name));
        size_t ne;
        const uint16_t* want = ad_tensor(adapter ? &P.tc : &P.tb, adapter ? P.bc : P.bb, p->kind, p->layer, &ne);
        bad += !want || ne != p->numel || memcmp(want, bg + p->offset, 2 * ne) != 0;
    }
    CHECK(bad == 0, "%d tensors of the imported model differ from the checkpoint's adapters / the base", bad);
    // an unbounded import of the bounded file: write_proj / eta are not in an unbounded model: refused
    ConfigOverrides ov = overrides_none();
    ov.bounded = 0;
    CHECK(adapters_import(P.base, pt, &ov, out3, DT_BF16, 9, &rep, &err) != 0 && strstr(err.msg, "write_proj") &&
              strstr(err.msg, "not an adapter tensor"), "%s", err.msg);
    free(bg);
    param_table_free(&tg);
    ad_pair_free(&P);
}

TEST(adapters_refusals) {
    char dir[256], base[300], small[300], ck[300], pt[300], out[300];
    test_mkdtemp(dir, sizeof(dir), "adapters_bad");
    snprintf(base, sizeof(base), "%s/base", dir);
    snprintf(small, sizeof(small), "%s/small", dir);
    snprintf(ck, sizeof(ck), "%s/ckpt", dir);
    snprintf(pt, sizeof(pt), "%s/a.pt", dir);
    snprintf(out, sizeof(out), "%s/out", dir);
    ModelConfig cb = ad_config(0, 0), cc = ad_config(1, 0), cs = ad_config(0, 0);
    cs.dim = 16;  // another width: every projection has another shape
    ParamTable tb, tc, ts;
    uint16_t *bb, *bc, *bs;
    ad_write_model(base, &cb, 2, &tb, &bb);
    ad_write_model(ck, &cc, 3, &tc, &bc);
    ad_write_model(small, &cs, 4, &ts, &bs);
    CodaError err;
    AdapterImportReport rep;
    CHECK(adapters_export(base, pt, DT_BF16, &err) != 0 && strstr(err.msg, "not a CoDA model"), "%s", err.msg);
    CHECK(adapters_export(ck, "/tmp/adapters.bin", DT_BF16, &err) != 0 && strstr(err.msg, ".pt"), "%s", err.msg);
    CHECK(adapters_export(ck, pt, DT_BF16, &err) == 0, "%s", err.msg);
    CHECK(adapters_import(small, pt, NULL, out, DT_BF16, 9, &rep, &err) != 0 && strstr(err.msg, "has shape"), "%s", err.msg);
    CHECK(adapters_import(base, pt, NULL, base, DT_BF16, 9, &rep, &err) != 0 && strstr(err.msg, "must not be"), "%s", err.msg);
    ModelConfig one = cb;
    one.n_layers = 1;  // a 1-layer base: layer_1 of the file has nowhere to go
    ParamTable t1;
    uint16_t* b1;
    char base1[300];
    snprintf(base1, sizeof(base1), "%s/base1", dir);
    ad_write_model(base1, &one, 5, &t1, &b1);
    CHECK(adapters_import(base1, pt, NULL, out, DT_BF16, 9, &rep, &err) != 0 && strstr(err.msg, "no such layer"), "%s", err.msg);
    CHECK(adapters_import(base, "/nonexistent/a.pt", NULL, out, DT_BF16, 9, &rep, &err) != 0, "a missing file");
    struct stat sb;
    CHECK(stat(out, &sb) != 0, "nothing was written by the refused imports");
    free(bb); free(bc); free(bs); free(b1);
    param_table_free(&tb); param_table_free(&tc); param_table_free(&ts); param_table_free(&t1);
    test_rmtree(dir);
}

// With a real torch (/usr/bin/python3, or the interpreter CODA_TORCH_PYTHON names, with torch; else SKIP): torch.load(weights_only=True) reads the
// exported .pt, bitwise equal to the safetensors export, and the reference's Quick Start
// (load_state_dict(state["layer_i"], strict=True)) takes it; then a file torch itself saved the
// reference's way (module state_dicts, changed values) imports over a base model bit for bit.
#define AD_TORCH_CHECK_PY "dev/test/adapters_torch_check.py"
TEST(adapters_pt_with_real_torch_both_directions) {
    char out[4096];
    const char* python = ptt_python();
    const char* probe[4] = {python, "-c", "import torch", NULL};
    if (access(probe[0], X_OK) != 0 || ptt_run(probe, out, sizeof(out)) != 0) {
        test_skip("no torch to check the adapters file with (/usr/bin/python3, or the python CODA_TORCH_PYTHON names, cannot import torch)");
        return;
    }
    AdPair P;
    ad_pair_make(&P, "adapters_torch", 12);
    char pt[400], sf[400], ref[400], expect[400], outdir[400];
    ad_in(&P, "coda_adapters.pt", pt, sizeof(pt));
    ad_in(&P, "adapters.safetensors", sf, sizeof(sf));
    ad_in(&P, "reference_adapters.pt", ref, sizeof(ref));
    ad_in(&P, "expected.safetensors", expect, sizeof(expect));
    ad_in(&P, "imported", outdir, sizeof(outdir));
    CodaError err;
    CHECK(adapters_export(P.ck, pt, DT_BF16, &err) == 0 && adapters_export(P.ck, sf, DT_BF16, &err) == 0, "%s", err.msg);
    const char* py[7] = {python, AD_TORCH_CHECK_PY, pt, sf, ref, expect, NULL};
    const int rc = ptt_run(py, out, sizeof(out));
    printf("    %s", out);
    CHECK(rc == 0, "the torch check failed:\n%s", out);
    if (rc == 0) {
        AdapterImportReport rep;
        CHECK(adapters_import(P.base, ref, NULL, outdir, DT_BF16, 9, &rep, &err) == 0, "importing torch's file: %s", err.msg);
        PtTensor* e;
        int n;
        CHECK(adapters_read(expect, &e, &n, NULL, &err) == 0, "%s", err.msg);
        ParamTable tg;
        uint16_t* bg;
        ad_read_model(outdir, &tg, &bg);
        int bad = 0, seen = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < tg.n; j++) {
                char name[128], group[16];
                snprintf(group, sizeof(group), "layer_%d", tg.tensors[j].layer);
                if (!adapter_name(&tg.tensors[j], name, sizeof(name)) || strcmp(name, e[i].name) || strcmp(group, e[i].group)) continue;
                seen++;
                bad += e[i].nbytes != tg.tensors[j].numel * 2 || memcmp(e[i].data, bg + tg.tensors[j].offset, e[i].nbytes) != 0;
            }
        CHECK(seen == n && n == 2 * 10 && bad == 0, "imported from torch's file: %d of %d tensors found, %d differ", seen, n, bad);
        free(bg);
        param_table_free(&tg);
        pt_free(e, n);
    }
    ad_pair_free(&P);
}

// The program as a user runs it (`make test` builds it first): help, usage errors, export, import,
// and a refusal's exit status and message.
TEST(coda_adapters_command_line) {
    const char* prog = "./coda_adapters";
    if (!dt_exists(prog)) { CHECK(0, "%s is not built: make coda_adapters", prog); return; }
    char out[4096], errs[4096], pt[400], dst[400];
    const char* help[3] = {prog, "--help", NULL};
    CHECK(dt_run_captured(help, out, sizeof(out), errs, sizeof(errs)) == 0 && strstr(out, "usage:") == out, "--help: '%.80s'", out);
    const char* none[2] = {prog, NULL};
    CHECK(dt_run_captured(none, out, sizeof(out), errs, sizeof(errs)) == 2 && strstr(errs, "usage:"), "no command: '%.80s'", errs);
    const char* half[4] = {prog, "import", "--base", NULL};
    CHECK(dt_run_captured(half, out, sizeof(out), errs, sizeof(errs)) == 2 && strstr(errs, "--base"), "'%.120s'", errs);
    AdPair P;
    ad_pair_make(&P, "adapters_cli", 22);
    ad_in(&P, "coda_adapters.pt", pt, sizeof(pt));
    ad_in(&P, "imported", dst, sizeof(dst));
    const char* ex_argv[7] = {prog, "export", "--model", P.ck, "--out", pt, NULL};
    CHECK(dt_run_captured(ex_argv, out, sizeof(out), errs, sizeof(errs)) == 0 && strstr(out, "wrote the adapters"), "export: %s%s", out, errs);
    const char* im[9] = {prog, "import", "--base", P.base, "--adapters", pt, "--out", dst, NULL};
    CHECK(dt_run_captured(im, out, sizeof(out), errs, sizeof(errs)) == 0 && strstr(out, "CoDA bounded") && strstr(out, "20 adapter tensors"),
          "import: %s%s", out, errs);
    char cfg[420];
    snprintf(cfg, sizeof(cfg), "%s/config.json", dst);
    CHECK(dt_exists(cfg), "%s written", cfg);
    const char* bad[7] = {prog, "export", "--model", P.base, "--out", pt, NULL};
    CHECK(dt_run_captured(bad, out, sizeof(out), errs, sizeof(errs)) == 1 && strstr(errs, "not a CoDA model"), "'%s'", errs);
    ad_pair_free(&P);
}
