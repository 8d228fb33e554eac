// infer_coda.cu — evaluation and generation with a coda.c / Hugging Face Mistral model: the command
// line, the printing and the main loop over the library:
//   * perplexity on a token shard with the paper's three procedures (llmc/ppl.h);
//   * generation (greedy, temperature, top-k / top-p) with a constant-size bounded state, or by
//     re-running the forward for an unbounded model (llmc/session.h, llmc/sampling.h);
//   * bounded-state save/load (llmc/state_file.h): resuming from a saved state continues exactly as
//     the uninterrupted run would have;
//   * needle-in-a-haystack (llmc/needle.h): the reference demo's synthetic single-layer test of the
//     bank bookkeeping (--needle; needs no model).
// THIS VERSION RUNS ON THE CPU REFERENCE MODEL (llmc/cpu/, fp32). It is built with nvcc like the
// other binaries, but touches no GPU; the GPU inference path is a later issue. Expect tiny and small
// models to be practical, not 7B.
#include <errno.h>
#include <math.h>
#include <unistd.h>
#include "llmc/needle.h"
#include "llmc/overrides.h"
#include "llmc/ppl.h"
#include "llmc/sampling.h"
#include "llmc/session.h"
#include "llmc/shard.h"
#include "llmc/state_file.h"
#include "llmc/tokenizer.h"

// ---------------------------------------------------------------------------------------------
// Command line

typedef struct {
    const char* model_dir;
    ConfigOverrides ov;
    uint64_t seed;
    int seed_given;
    // perplexity
    const char* ppl_path;
    int64_t max_tokens;
    PplProcedure procedure;
    int ctx, stride, chunk, partial_chunk, json;
    // generation
    const char* tokenizer_path;
    const char* prompt;
    const char* prompt_ids;
    int max_new, ignore_eos;
    Sampling smp;
    const char* save_state;
    const char* load_state;
    // needle-in-a-haystack (synthetic single-layer test, no model)
    int needle, needle_pos;
    const char* needle_lengths;
} InferOptions;

static InferOptions infer_default_options(void) {
    InferOptions o;
    memset(&o, 0, sizeof(o));
    o.ov = overrides_none();
    o.seed = 42;
    o.procedure = PPL_SLIDING;
    o.ctx = 2048; o.stride = 0; o.chunk = 512;  // stride 0: 512, or ctx if smaller
    o.max_new = 64;
    o.smp.temperature = 0.0; o.smp.top_p = 1.0;
    o.needle_pos = 64; o.needle_lengths = "256,1024,4096,16384";
    return o;
}

static const char* infer_usage_text(void) {
    return "usage: infer_coda --model DIR [options]\n"
           "  Runs on the CPU reference model (fp32) in this version; the GPU inference path is a later issue.\n"
           "  --model DIR             config.json + model.safetensors[.index.json] (HF layout; coda.c checkpoints too)\n"
           "attention config (defaults: the config's \"coda\" object, else W=256 Me=64 Ms=64 block 256):\n"
           "  --bounded 0|1           unbounded causal attention or the fixed-size state\n"
           "  --window W --exact Me --summary Ms --block S   ring slots, exact bank, summary bank, prefill block\n"
           "  --exact-candidates N --summary-candidates N    bank candidates per block write (config; paper 8, 64)\n"
           "  --candidate-order by_gate|reference   which evicted tokens each bank gets (default by_gate: its highest\n"
           "                          gates; reference: the reference's index-ordered top-k list, SPEC §3.1)\n"
           "  --rope-theta X          RoPE base override (the reference's bounded layers used 10000)\n"
           "  --mem-init zeros|random initial bank contents of an empty state (default: config, random_normal)\n"
           "  --seed N                mem-init and sampling seed (42); layer l's banks use seed + l\n"
           "perplexity (PROTOCOL.md §3):\n"
           "  --ppl FILE.bin          token shard (tokenize_coda)\n"
           "  --max-tokens N          use the first N tokens (0 = all)\n"
           "  --procedure sliding|chunked|streaming   (sliding)\n"
           "      sliding   §3.1:  windows of --ctx, step --stride; first window scores all targets, later ones the last stride\n"
           "      chunked   §3.2b: chunks of --ctx, state reset per chunk, only full chunks (--partial-chunk 1: §3.2a, keep the last)\n"
           "      streaming §3.2c: chunks of --chunk through one persistent state, no reset (bounded models only)\n"
           "  --ctx N --stride N --chunk N   (2048, min(512, ctx), 512)\n"
           "  --json                  also print one JSON line with the result\n"
           "generation:\n"
           "  --tokenizer FILE        tokenizer.json (needed for --prompt and to print text)\n"
           "  --prompt TEXT | --prompt-ids 1,2,3   prompt (BOS added to a text prompt unless a state is loaded)\n"
           "  --max-new N --temperature T --top-p P   (64, 0 = greedy, 1.0)\n"
           "  --ignore-eos            do not stop at the EOS token\n"
           "      bounded: chunked prefill of the prompt (blocks of --block), then one decode step per token on a\n"
           "      constant-size state; unbounded: the forward re-runs over the whole context per token (correct, slow)\n"
           "  --save-state FILE       after the prompt/generation, write the bounded state (+ next-token logits, sampling RNG)\n"
           "  --load-state FILE       start from a saved state; without a prompt, continue generating exactly where it\n"
           "                          stopped (the saved RNG continues unless --seed is given)\n"
           "needle-in-a-haystack (PROTOCOL.md §4; no --model: the reference demo's synthetic single random layer,\n"
           "D=512 H=8 Hkv=2, W=128 Me=32 Ms=32 block 256 unless overridden; tests bank bookkeeping, not retrieval):\n"
           "  --needle                run it; retained = the needle's key has cosine > 0.999 with a ring or exact-bank slot\n"
           "  --needle-lengths L,...  sequence lengths (256,1024,4096,16384)\n"
           "  --needle-pos P          needle position (64)\n";
}

static void infer_usage(void) {
    fputs(infer_usage_text(), stderr);
    exit(1);
}

static int infer_parse_int(const char* flag, const char* v, int lo, int* out, CodaError* err) {
    char* end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > INT32_MAX) return coda_errorf(err, "%s: expected an integer >= %d, got '%s'", flag, lo, v);
    *out = (int)x;
    return 0;
}
static int infer_parse_double(const char* flag, const char* v, double* out, CodaError* err) {
    char* end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x)) return coda_errorf(err, "%s: expected a number, got '%s'", flag, v);
    *out = x;
    return 0;
}

// Parses argv into o (starting from infer_default_options). Returns -1 with a message on any error.
static int infer_parse_options(InferOptions* o, int argc, char** argv, CodaError* err) {
    *o = infer_default_options();
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
#define INFER_IS(name) (strcmp(a, name) == 0)
#define INFER_NEED() do { if (!v) return coda_errorf(err, "%s needs a value", a); i++; } while (0)
#define INFER_INT(dst, lo) do { INFER_NEED(); if (infer_parse_int(a, v, lo, &(dst), err) != 0) return -1; } while (0)
        if (INFER_IS("--model")) { INFER_NEED(); o->model_dir = v; }
        else if (INFER_IS("--bounded")) { INFER_INT(o->ov.bounded, 0); if (o->ov.bounded > 1) return coda_errorf(err, "--bounded: 0 or 1"); }
        else if (INFER_IS("--window")) INFER_INT(o->ov.window, 1);
        else if (INFER_IS("--exact")) INFER_INT(o->ov.n_exact, 0);
        else if (INFER_IS("--summary")) INFER_INT(o->ov.n_summary, 0);
        else if (INFER_IS("--block")) INFER_INT(o->ov.block_size, 1);
        else if (INFER_IS("--exact-candidates")) INFER_INT(o->ov.exact_cands, 0);
        else if (INFER_IS("--summary-candidates")) INFER_INT(o->ov.summary_cands, 0);
        else if (INFER_IS("--candidate-order")) {
            INFER_NEED();
            if (strcmp(v, "by_gate") == 0) o->ov.candidate_order = CAND_ORDER_BY_GATE;
            else if (strcmp(v, "reference") == 0) o->ov.candidate_order = CAND_ORDER_REFERENCE;
            else return coda_errorf(err, "--candidate-order: by_gate or reference, not '%s'", v);
        }
        else if (INFER_IS("--rope-theta")) {
            INFER_NEED();
            if (infer_parse_double(a, v, &o->ov.rope_theta, err) != 0) return -1;
            if (o->ov.rope_theta <= 0) return coda_errorf(err, "--rope-theta must be > 0");
        } else if (INFER_IS("--mem-init")) {
            INFER_NEED();
            if (strcmp(v, "zeros") == 0) o->ov.mem_init = MEM_INIT_ZEROS;
            else if (strcmp(v, "random") == 0 || strcmp(v, "random_normal") == 0) o->ov.mem_init = MEM_INIT_RANDOM_NORMAL;
            else return coda_errorf(err, "--mem-init: zeros or random, got '%s'", v);
        } else if (INFER_IS("--seed")) {
            INFER_NEED();
            char* end;
            errno = 0;
            unsigned long long x = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') return coda_errorf(err, "--seed: expected a non-negative integer, got '%s'", v);
            o->seed = x;
            o->seed_given = 1;
        } else if (INFER_IS("--ppl")) { INFER_NEED(); o->ppl_path = v; }
        else if (INFER_IS("--max-tokens")) {
            INFER_NEED();
            char* end;
            errno = 0;
            long long x = strtoll(v, &end, 10);
            if (errno || end == v || *end || x < 0) return coda_errorf(err, "--max-tokens: expected an integer >= 0, got '%s'", v);
            o->max_tokens = x;
        } else if (INFER_IS("--procedure")) {
            INFER_NEED();
            int found = -1;
            for (int k = 0; k < 3; k++) if (strcmp(v, PPL_PROCEDURE_NAMES[k]) == 0) found = k;
            if (found < 0) return coda_errorf(err, "--procedure: sliding, chunked or streaming, got '%s'", v);
            o->procedure = (PplProcedure)found;
        } else if (INFER_IS("--ctx")) INFER_INT(o->ctx, 2);
        else if (INFER_IS("--stride")) INFER_INT(o->stride, 1);
        else if (INFER_IS("--chunk")) INFER_INT(o->chunk, 2);
        else if (INFER_IS("--partial-chunk")) { INFER_INT(o->partial_chunk, 0); if (o->partial_chunk > 1) return coda_errorf(err, "--partial-chunk: 0 or 1"); }
        else if (INFER_IS("--json")) o->json = 1;
        else if (INFER_IS("--tokenizer")) { INFER_NEED(); o->tokenizer_path = v; }
        else if (INFER_IS("--prompt")) { INFER_NEED(); o->prompt = v; }
        else if (INFER_IS("--prompt-ids")) { INFER_NEED(); o->prompt_ids = v; }
        else if (INFER_IS("--max-new")) INFER_INT(o->max_new, 0);
        else if (INFER_IS("--temperature")) {
            INFER_NEED();
            if (infer_parse_double(a, v, &o->smp.temperature, err) != 0) return -1;
            if (o->smp.temperature < 0) return coda_errorf(err, "--temperature must be >= 0");
        } else if (INFER_IS("--top-p")) {
            INFER_NEED();
            if (infer_parse_double(a, v, &o->smp.top_p, err) != 0) return -1;
            if (!(o->smp.top_p > 0 && o->smp.top_p <= 1)) return coda_errorf(err, "--top-p must be in (0, 1]");
        } else if (INFER_IS("--ignore-eos")) o->ignore_eos = 1;
        else if (INFER_IS("--save-state")) { INFER_NEED(); o->save_state = v; }
        else if (INFER_IS("--load-state")) { INFER_NEED(); o->load_state = v; }
        else if (INFER_IS("--needle")) o->needle = 1;
        else if (INFER_IS("--needle-lengths")) { INFER_NEED(); o->needle_lengths = v; }
        else if (INFER_IS("--needle-pos")) INFER_INT(o->needle_pos, 0);
        else if (INFER_IS("-h") || INFER_IS("--help")) return coda_errorf(err, "help");
        else return coda_errorf(err, "unknown option '%s'", a);
#undef INFER_IS
#undef INFER_NEED
#undef INFER_INT
    }
    if (o->needle) return 0;  // synthetic: needs no model
    if (!o->model_dir) return coda_errorf(err, "--model DIR is required");
    if (o->stride == 0) o->stride = o->ctx < 512 ? o->ctx : 512;
    if (o->prompt && o->prompt_ids) return coda_errorf(err, "give --prompt or --prompt-ids, not both");
    if (o->prompt && !o->tokenizer_path) return coda_errorf(err, "--prompt needs --tokenizer tokenizer.json (or use --prompt-ids)");
    if (!o->ppl_path && !o->prompt && !o->prompt_ids && !o->load_state) return coda_errorf(err, "nothing to do: give --ppl, --prompt/--prompt-ids or --load-state");
    return 0;
}

// "1, 2,3" -> ids (malloc'd).
static int infer_parse_ids(const char* s, int** ids, int* n, CodaError* err) {
    int cap = 16, k = 0;
    int* out = (int*)coda_malloc_or_die(sizeof(int) * cap, "prompt ids");
    const char* p = s;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        char* end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || x < 0 || x > INT32_MAX) { free(out); return coda_errorf(err, "--prompt-ids: bad id at '%.20s'", p); }
        if (k == cap) { cap *= 2; out = (int*)realloc(out, sizeof(int) * cap); if (!out) coda_fatal("out of memory"); }
        out[k++] = (int)x;
        p = end;
        if (*p && *p != ',' && *p != ' ') { free(out); return coda_errorf(err, "--prompt-ids: bad character at '%.20s'", p); }
    }
    if (k == 0) { free(out); return coda_errorf(err, "--prompt-ids: no ids in '%s'", s); }
    *ids = out;
    *n = k;
    return 0;
}

// Progress of a perplexity run on stderr, when it is a terminal.
static void print_progress(const char* what, int64_t done, int64_t total) {
    if (!isatty(2)) return;
    fprintf(stderr, "\r%s: %lld / %lld tokens", what, (long long)done, (long long)total);
    if (done >= total) fprintf(stderr, "\n");
}

static void print_model_config(const ModelConfig* c, const HfLoadReport* rep) {
    printf("model: %d layers, D=%d, H=%d, Hkv=%d, Dh=%d, V=%d; attention %s, %s; RoPE base %g\n", c->n_layers, c->dim, c->n_heads,
           c->n_kv_heads, c->head_dim, c->vocab_size, c->differential ? "CoDA differential" : "GQA",
           c->bounded ? "bounded" : "unbounded", config_rope_base(c));
    if (c->bounded) {
        StateBytes s32 = state_bytes(c, 4), s16 = state_bytes(c, 2);
        printf("bounded state: W=%d Me=%d Ms=%d block=%d mem_init=%s\n", c->window, c->n_exact, c->n_summary, c->block_size,
               c->mem_init == MEM_INIT_ZEROS ? "zeros" : "random_normal");
        printf("state bytes per layer (SPEC §6 formula, coda.c's own state): K/V 2*Hkv*(W+Me+Ms)*Dh*4 = %zu + gates 4*W = %zu"
               " + mask (W+Me+Ms) = %zu + LRU 8*Me = %zu = %zu B (fp32, this CPU path; %zu B with bf16 K/V);"
               " x %d layers = %zu B. Constant in sequence length. Not counted: per-slot source positions"
               " (8*(W+Me+Ms) B, training bookkeeping) and 3 scalar counters; no norm caches are kept.\n",
               s32.kv, s32.gates, s32.mask, s32.lru, s32.total, s16.total, c->n_layers, s32.total * (size_t)c->n_layers);
    }
    if (rep->n_coda_missing)
        printf("note: %d CoDA tensor(s) absent from the checkpoint keep their initial values (write gate bias %g, eta logit %g, ...)\n",
               rep->n_coda_missing, c->write_gate_init_bias, c->eta_init_logit);
    if (rep->n_unexpected)
        printf("note: %d tensor(s) of the checkpoint are not used by this config (e.g. '%s')\n", rep->n_unexpected, rep->unexpected[0]);
}

typedef struct { const Tokenizer* tok; int* ids; int n, cap; size_t printed; } TokenPrinter;
static void print_token(int token, void* ctx) {
    TokenPrinter* p = (TokenPrinter*)ctx;
    if (p->n == p->cap) { p->cap = p->cap ? 2 * p->cap : 64; p->ids = (int*)realloc(p->ids, sizeof(int) * p->cap); if (!p->ids) coda_fatal("out of memory"); }
    p->ids[p->n++] = token;
    if (!p->tok) { printf("%s%d", p->n > 1 ? " " : "", token); fflush(stdout); return; }
    char* text;
    size_t len;
    CodaError err;
    if (tokenizer_decode(p->tok, (const int32_t*)p->ids, (size_t)p->n, &text, &len, &err) != 0) coda_fatal("%s", err.msg);
    if (len > p->printed) { fwrite(text + p->printed, 1, len - p->printed, stdout); p->printed = len; }
    fflush(stdout);
    free(text);
}

static int infer_main(int argc, char** argv) {
    InferOptions o;
    CodaError err;
    setvbuf(stdout, NULL, _IOLBF, 0);  // results and errors (stderr) in order, also through a pipe
    if (infer_parse_options(&o, argc, argv, &err) != 0) {
        if (strcmp(err.msg, "help") != 0) fprintf(stderr, "error: %s\n", err.msg);
        infer_usage();
    }
    if (o.needle) {
        int* lens;
        int n_lens, n_ok = 0;
        if (infer_parse_ids(o.needle_lengths, &lens, &n_lens, &err) != 0) coda_fatal("--needle-lengths: %s", err.msg);
        ModelConfig nc = needle_config(&o.ov);
        printf("needle (PROTOCOL 4): one random CoDA layer D=%d H=%d Hkv=%d, W=%d Me=%d Ms=%d block %d, needle at %d\n", nc.dim,
               nc.n_heads, nc.n_kv_heads, nc.window, nc.n_exact, nc.n_summary, nc.block_size, o.needle_pos);
        for (int i = 0; i < n_lens; i++) {
            NeedleResult r;
            if (needle_run(&nc, lens[i], o.needle_pos, 5.0, o.seed, &r, &err) != 0) coda_fatal("%s", err.msg);
            n_ok += r.retained;
            printf("  length %6d: %s (best cosine %.6f, %s slot %d holding position %lld; needle gate %.4f; exact slots used %d/%d)\n",
                   r.length, r.retained ? "retained" : "LOST", r.best_cos, r.slot < 0 ? "no" : r.slot < nc.window ? "ring" : "exact-bank",
                   r.slot, (long long)r.slot_src, r.needle_gate, r.exact_used, nc.n_exact);
            if (o.json)
                printf("{\"needle_length\": %d, \"needle_pos\": %d, \"retained\": %s, \"best_cos\": %.9g, \"where\": \"%s\", "
                       "\"slot\": %d, \"slot_src\": %lld, \"exact_used\": %d}\n", r.length, r.pos, r.retained ? "true" : "false",
                       r.best_cos, r.where == 1 ? "ring" : r.where == 2 ? "exact" : "none", r.slot, (long long)r.slot_src, r.exact_used);
        }
        printf("retention %d/%d (%.0f%%)\n", n_ok, n_lens, 100.0 * n_ok / n_lens);
        free(lens);
        return n_ok == n_lens ? 0 : 2;
    }
    Model_f32 m;
    HfLoadReport rep;
    if (reference_load_dir(o.model_dir, &o.ov, &m, &rep, &err) != 0) coda_fatal("%s", err.msg);
    const ModelConfig* c = &m.cfg;
    print_model_config(c, &rep);
    if (!c->bounded && (o.save_state || o.load_state))
        coda_fatal("--save-state / --load-state need a bounded model (this one is unbounded: use --bounded 1)");

    if (o.ppl_path) {
        ShardHeader h;
        int32_t* tokens;
        if (shard_load(o.ppl_path, &h, &tokens, &err) != 0) coda_fatal("%s", err.msg);
        if (h.vocab_size > c->vocab_size)
            fprintf(stderr, "warning: %s was written for a vocabulary of %d ids, the model has %d (ids are checked as used)\n", o.ppl_path,
                    h.vocab_size, c->vocab_size);
        int64_t n = h.n_tokens;
        if (o.max_tokens > 0 && o.max_tokens < n) n = o.max_tokens;
        PplResult r;
        CpuScorer cs;
        PplScorer scorer = cpu_scorer(&cs, &m, o.seed);
        scorer.progress = print_progress;
        if (ppl_run(&scorer, o.procedure, (const int*)tokens, n, o.ctx, o.stride, o.chunk, o.partial_chunk, &r, &err) != 0)
            coda_fatal("%s", err.msg);
        cpu_scorer_free(&cs);
        const char* pname = PPL_PROCEDURE_NAMES[o.procedure];
        printf("ppl %s (%s): %lld tokens, ", pname, o.procedure == PPL_SLIDING ? "PROTOCOL 3.1" : o.procedure == PPL_CHUNKED ?
               (o.partial_chunk ? "PROTOCOL 3.2a" : "PROTOCOL 3.2b") : "PROTOCOL 3.2c", (long long)n);
        if (o.procedure == PPL_SLIDING) printf("ctx %d stride %d, %d windows", o.ctx, o.stride, r.n_forwards);
        else if (o.procedure == PPL_CHUNKED) printf("ctx %d, %d chunks", o.ctx, r.n_forwards);
        else printf("chunk %d, %d chunks", o.chunk, r.n_forwards);
        printf("\ntokens scored %lld  mean NLL %.6f  PPL %.4f\n", (long long)r.n_scored, ppl_mean_nll(&r), ppl_value(&r));
        if (o.json) {
            printf("{\"procedure\": \"%s\", \"shard\": \"%s\", \"tokens\": %lld, ", pname, o.ppl_path, (long long)n);
            if (o.procedure == PPL_SLIDING) printf("\"ctx\": %d, \"stride\": %d, ", o.ctx, o.stride);
            else if (o.procedure == PPL_CHUNKED) printf("\"ctx\": %d, \"partial_chunk\": %d, ", o.ctx, o.partial_chunk);
            else printf("\"chunk\": %d, ", o.chunk);
            printf("\"bounded\": %d, \"differential\": %d, ", c->bounded, c->differential);
            if (c->bounded)
                printf("\"window\": %d, \"n_exact\": %d, \"n_summary\": %d, \"block_size\": %d, \"mem_init\": \"%s\", \"seed\": %llu, ",
                       c->window, c->n_exact, c->n_summary, c->block_size, c->mem_init == MEM_INIT_ZEROS ? "zeros" : "random_normal",
                       (unsigned long long)o.seed);
            printf("\"forwards\": %d, \"tokens_scored\": %lld, \"mean_nll\": %.9g, \"ppl\": %.9g}\n", r.n_forwards,
                   (long long)r.n_scored, ppl_mean_nll(&r), ppl_value(&r));
        }
        free(tokens);
    }

    if (o.prompt || o.prompt_ids || o.load_state) {
        Tokenizer tk;
        memset(&tk, 0, sizeof(tk));
        int have_tok = 0;
        if (o.tokenizer_path) {
            if (tokenizer_load(&tk, o.tokenizer_path, &err) != 0) coda_fatal("%s", err.msg);
            have_tok = 1;
            if (tokenizer_vocab_size(&tk) > c->vocab_size)
                coda_fatal("%s has %d ids but the model's vocabulary is %d", o.tokenizer_path, tokenizer_vocab_size(&tk), c->vocab_size);
        }
        Session s;
        session_init(&s, &m, o.seed);
        if (o.load_state) {
            if (state_file_load(o.load_state, &s, o.seed_given, &err) != 0) coda_fatal("%s", err.msg);
            printf("loaded state %s: %lld tokens fed, %s\n", o.load_state, (long long)s.n_fed,
                   s.has_logits ? "continuing from its next-token logits" : "no pending logits");
        }
        int* ids = NULL;
        int n_ids = 0;
        if (o.prompt) {
            int32_t* enc;
            size_t n_enc;
            int bos = !o.load_state && tokenizer_bos_id(&tk) >= 0;
            if (tokenizer_encode(&tk, o.prompt, strlen(o.prompt), bos, &enc, &n_enc, &err) != 0) coda_fatal("%s", err.msg);
            ids = (int*)enc;
            n_ids = (int)n_enc;
        } else if (o.prompt_ids) {
            if (infer_parse_ids(o.prompt_ids, &ids, &n_ids, &err) != 0) coda_fatal("%s", err.msg);
        }
        if (n_ids > 0) {
            printf("prompt: %d tokens (%s)\n", n_ids, c->bounded ? "chunked prefill" : "full forward");
            if (session_prefill(&s, ids, n_ids, &err) != 0) coda_fatal("%s", err.msg);
        }
        if (!c->bounded && o.max_new > 0) printf("(unbounded model: every new token re-runs the forward over the whole context; correct, slow)\n");
        TokenPrinter pr;
        memset(&pr, 0, sizeof(pr));
        pr.tok = have_tok ? &tk : NULL;
        if (have_tok && o.prompt && !o.load_state) {  // print the prompt text as the tokenizer sees it, then the continuation
            pr.ids = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(n_ids + 64), "printer");
            pr.cap = n_ids + 64;
            memcpy(pr.ids, ids, sizeof(int) * (size_t)n_ids);
            pr.n = n_ids;
            char* text;
            size_t len;
            if (tokenizer_decode(&tk, (const int32_t*)ids, (size_t)n_ids, &text, &len, &err) != 0) coda_fatal("%s", err.msg);
            fwrite(text, 1, len, stdout);
            pr.printed = len;
            free(text);
        } else if (have_tok) {
            // A continuation (loaded state, or a state-less id prompt): decode behind a one-character
            // piece so that the decoder's strip of one leading space does not eat the first word's space.
            int anchor = tokenizer_piece_to_id(&tk, "a", 1);
            if (anchor >= 0) {
                pr.ids = (int*)coda_malloc_or_die(sizeof(int) * 64, "printer");
                pr.cap = 64;
                pr.ids[pr.n++] = anchor;
                pr.printed = 1;
            }
        }
        int* out = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(o.max_new + 1), "generated tokens");
        int n_out = 0;
        int eos = o.ignore_eos ? -1 : (have_tok ? tokenizer_eos_id(&tk) : c->eos_id);
        if (o.max_new > 0 && s.has_logits) {
            if (session_generate(&s, o.max_new, &o.smp, eos, out, print_token, &pr, &n_out, &err) != 0) coda_fatal("%s", err.msg);
            printf("\n[%d new tokens; %lld tokens in the %s]\n", n_out, (long long)s.n_fed, c->bounded ? "state" : "context");
        } else if (o.max_new > 0) {
            coda_fatal("nothing to continue from: the loaded state has no pending logits; give --prompt or --prompt-ids");
        }
        if (o.save_state) {
            if (state_file_save(o.save_state, &s, &err) != 0) coda_fatal("%s", err.msg);
            printf("saved state to %s (%lld tokens fed)\n", o.save_state, (long long)s.n_fed);
        }
        free(out);
        free(pr.ids);
        free(ids);
        session_free(&s);
        if (have_tok) tokenizer_free(&tk);
    }
    model_free_f32(&m);
    return 0;
}

#ifndef TESTING
int main(int argc, char** argv) { return infer_main(argc, argv); }
#endif
