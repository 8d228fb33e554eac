// infer_coda.cu — evaluation and generation with a coda.c / Hugging Face Mistral model: the command
// line, the printing and the main loop over the library:
//   * perplexity on a token shard with the paper's three procedures (llmc/ppl.h);
//   * generation (greedy, temperature, top-k / top-p) with a constant-size bounded state, or by
//     re-running the forward for an unbounded model (llmc/session.h, llmc/sampling.h);
//   * bounded-state save/load (llmc/state_file.h): resuming from a saved state continues exactly as
//     the uninterrupted run would have;
//   * needle-in-a-haystack (llmc/needle.h): the reference demo's synthetic single-layer test of the
//     bank bookkeeping (--needle; needs no model).
// With a GPU (--device auto, the default) perplexity runs on the GPU model (llmc/ppl_gpu.cuh: the
// trainer's forward, bf16, or fp32 in the FP32 build; streaming continues one state from chunk to
// chunk), and generation on the GPU decoder (llmc/decode.cuh: prefill by the same forward,
// continuing the state it holds, then one CUDA-graph step per token on the constant-size state, or on
// a KV cache for an unbounded model), with state files in the CPU's format. --device cpu runs all of
// it on the CPU reference model (llmc/cpu/, fp32): practical for small models, not 7B.
#include <errno.h>
#include <math.h>
#include <unistd.h>
#include "llmc/cli.h"
#include "llmc/decode.cuh"
#include "llmc/needle.h"
#include "llmc/needle_gpu.cuh"
#include "llmc/overrides.h"
#include "llmc/ppl.h"
#include "llmc/ppl_gpu.cuh"
#include "llmc/presets.h"
#include "llmc/sampling.h"
#include "llmc/session.h"
#include "llmc/shard.h"
#include "llmc/span.h"
#include "llmc/state_file.h"
#include "llmc/tokenizer.h"

// ---------------------------------------------------------------------------------------------
// Printing

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
        printf("state bytes per layer (docs/spec.md §6 formula, coda.c's own state): K/V 2*Hkv*(W+Me+Ms)*Dh*4 = %zu + gates 4*W = %zu"
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

// ---------------------------------------------------------------------------------------------
// Command line (llmc/cli.h)

typedef struct {
    const char* model_dir;
    ConfigOverrides ov;
    uint64_t seed;
    int seed_given;
    // perplexity
    const char* ppl_path;
    int64_t max_tokens;
    int procedure;  // PplProcedure
    int ctx, stride, chunk, partial_chunk, json, context_sweep;
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
    // the needle in real text (llmc/span.h): a marked span in a shard, with a trained bounded model
    const char* span_path;
    const char* span_cue;
    const char* span_answer;
    int span_pos;
    const char* span_lengths;
    int device;  // Device
    int bounded_preset;  // --bounded-config: index into BOUNDED_PRESETS, -1 none
    int allow_long_context;
} Options;
typedef enum { DEVICE_AUTO = 0, DEVICE_CPU = 1, DEVICE_GPU = 2 } Device;
static const CliChoice DEVICE_CHOICES[] = {{"auto", DEVICE_AUTO}, {"cpu", DEVICE_CPU}, {"gpu", DEVICE_GPU}, {NULL, 0}};

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int gpu_present(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// The JSON line of a perplexity result (procedure, tokens scored, mean NLL, PPL, model, config).
static void print_ppl_json(const Options* o, const ModelConfig* c, const PplResult* r, int64_t n, const char* device, double seconds) {
    const char* pname = PPL_PROCEDURE_NAMES[o->procedure];
    printf("{\"procedure\": \"%s\", \"shard\": \"%s\", \"tokens\": %lld, \"device\": \"%s\", \"model\": \"%s\", ", pname, o->ppl_path,
           (long long)n, device, o->model_dir);
    if (o->procedure == PPL_SLIDING) printf("\"ctx\": %d, \"stride\": %d, ", o->ctx, o->stride);
    else if (o->procedure == PPL_CHUNKED) printf("\"ctx\": %d, \"partial_chunk\": %d, ", o->ctx, o->partial_chunk);
    else printf("\"chunk\": %d, ", o->chunk);
    printf("\"bounded\": %d, \"differential\": %d, ", c->bounded, c->differential);
    if (c->bounded)
        printf("\"window\": %d, \"n_exact\": %d, \"n_summary\": %d, \"block_size\": %d, \"mem_init\": \"%s\", \"seed\": %llu, ",
               c->window, c->n_exact, c->n_summary, c->block_size, c->mem_init == MEM_INIT_ZEROS ? "zeros" : "random_normal",
               (unsigned long long)o->seed);
    printf("\"forwards\": %d, \"tokens_scored\": %lld, \"mean_nll\": %.9g, \"ppl\": %.9g", r->n_forwards, (long long)r->n_scored,
           ppl_mean_nll(r), ppl_value(r));
    if (seconds > 0) printf(", \"seconds\": %.4f, \"scored_tok_s\": %.1f", seconds, r->n_scored / seconds);
    printf("}\n");
}
// Prints (and, with json, one JSON line) the result of a perplexity run over n tokens of path.
static void print_ppl(const Options* o, const ModelConfig* c, const PplResult* r, int64_t n, const char* device, double seconds) {
    const char* pname = PPL_PROCEDURE_NAMES[o->procedure];
    printf("ppl %s (%s) on the %s: %lld tokens, ", pname, o->procedure == PPL_SLIDING ? "docs/protocol.md §3.1" : o->procedure == PPL_CHUNKED ?
           (o->partial_chunk ? "docs/protocol.md §3.2a" : "docs/protocol.md §3.2b") : "docs/protocol.md §3.2c", device, (long long)n);
    if (o->procedure == PPL_SLIDING) printf("ctx %d stride %d, %d windows", o->ctx, o->stride, r->n_forwards);
    else if (o->procedure == PPL_CHUNKED) printf("ctx %d, %d chunks", o->ctx, r->n_forwards);
    else printf("chunk %d, %d chunks", o->chunk, r->n_forwards);
    printf("\ntokens scored %lld  mean NLL %.6f  PPL %.4f  (%.2f s, %.0f scored tokens/s)\n", (long long)r->n_scored, ppl_mean_nll(r),
           ppl_value(r), seconds, r->n_scored / (seconds > 0 ? seconds : 1e-9));
    if (o->json) print_ppl_json(o, c, r, n, device, seconds);
}

// Runs the perplexity of --ppl with `scorer` (one procedure, or the context sweep) and prints it.
static void run_ppl(Options* o, PplScorer* scorer, const ModelConfig* c, const int32_t* tokens, int64_t n, const char* device) {
    CodaError err;
    if (o->context_sweep) {
        PplResult res[PPL_SWEEP_N];
        const double t0 = now_seconds();
        if (ppl_context_sweep(scorer, (const int*)tokens, n, res, &err) != 0) coda_fatal("%s", err.msg);
        printf("context sweep (docs/protocol.md §3.3; chunked §3.2b, full chunks, state reset per chunk) on the %s, %lld tokens, %.1f s:\n",
               device, (long long)n, now_seconds() - t0);
        printf("| ctx | chunks | tokens scored | mean NLL | PPL |\n|---|---|---|---|---|\n");
        const int saved_ctx = o->ctx, saved_proc = o->procedure, saved_json = o->json;
        for (int i = 0; i < PPL_SWEEP_N; i++) {
            if (!res[i].n_forwards) { printf("| %d | - | - | - | (text shorter than one chunk) |\n", PPL_SWEEP_CTX[i]); continue; }
            printf("| %d | %d | %lld | %.6f | %.4f |\n", PPL_SWEEP_CTX[i], res[i].n_forwards, (long long)res[i].n_scored,
                   ppl_mean_nll(&res[i]), ppl_value(&res[i]));
        }
        if (saved_json) {  // one JSON line per length, as a single chunked run prints it
            o->procedure = PPL_CHUNKED;
            for (int i = 0; i < PPL_SWEEP_N; i++) {
                if (!res[i].n_forwards) continue;
                o->ctx = PPL_SWEEP_CTX[i];
                print_ppl_json(o, c, &res[i], n, device, 0.0);
            }
        }
        o->ctx = saved_ctx; o->procedure = saved_proc; o->json = saved_json;
        return;
    }
    PplResult r;
    const double t0 = now_seconds();
    if (ppl_run(scorer, (PplProcedure)o->procedure, (const int*)tokens, n, o->ctx, o->stride, o->chunk, o->partial_chunk, &r, &err) != 0)
        coda_fatal("%s", err.msg);
    print_ppl(o, c, &r, n, device, now_seconds() - t0);
}

// Loads the shard of --ppl (its first --max-tokens); the tokens are checked against the model later.
static int32_t* load_ppl_tokens(const Options* o, int vocab_size, int64_t* n) {
    ShardHeader h;
    int32_t* tokens;
    CodaError err;
    if (shard_load(o->ppl_path, &h, &tokens, &err) != 0) coda_fatal("%s", err.msg);
    if (h.vocab_size > vocab_size)
        fprintf(stderr, "warning: %s was written for a vocabulary of %d ids, the model has %d (ids are checked as used)\n", o->ppl_path,
                h.vocab_size, vocab_size);
    *n = h.n_tokens;
    if (o->max_tokens > 0 && o->max_tokens < *n) *n = o->max_tokens;
    return tokens;
}

// ---------------------------------------------------------------------------------------------
// Generation, on the GPU decoder (llmc/decode.cuh) or the CPU reference's session (llmc/session.h),
// through one flow: load a state, prefill the prompt, generate, save the state.

typedef struct {
    const char* where;
    const ModelConfig* cfg;
    void* s;
    int (*load)(void* s, const char* path, int keep_rng, CodaError* err);
    int (*prefill)(void* s, const int* ids, int n, CodaError* err);
    int (*generate)(void* s, int max_new, const Sampling* smp, int eos_id, int* out, TokenFn on_token, void* cb, int* n_out, CodaError* err);
    int (*save)(void* s, const char* path, CodaError* err);
    void (*reset)(void* s);  // an empty state (bounded: the banks' mem_init contents), nothing fed
    // every layer's bounded state on the host: the session's own, or copied into scratch
    const BankState_f32* (*states)(void* s, BankState_f32* scratch);
    int64_t* n_fed;
    int* has_logits;
} GenSession;

static GenSession cpu_gen_session(Session* s) {
    GenSession g = {"fp32 CPU reference", &s->m->cfg, s,
                    [](void* x, const char* p, int k, CodaError* e) { return state_file_load(p, (Session*)x, k, e); },
                    [](void* x, const int* ids, int n, CodaError* e) { return session_prefill((Session*)x, ids, n, e); },
                    [](void* x, int mx, const Sampling* sm, int eos, int* out, TokenFn f, void* cb, int* no, CodaError* e) {
                        return session_generate((Session*)x, mx, sm, eos, out, f, cb, no, e);
                    },
                    [](void* x, const char* p, CodaError* e) { return state_file_save(p, (const Session*)x, e); },
                    [](void* x) {
                        Session* ss = (Session*)x;
                        session_reset(ss);
                    },
                    [](void* x, BankState_f32*) { return (const BankState_f32*)((Session*)x)->states; }, &s->n_fed, &s->has_logits};
    return g;
}
static GenSession gpu_gen_session(GpuSession* s) {
    GenSession g = {PRECISION_NAME " GPU decoder", &s->dec.m->cfg, s,
                    [](void* x, const char* p, int k, CodaError* e) { return gpu_session_load_state((GpuSession*)x, p, k, e); },
                    [](void* x, const int* ids, int n, CodaError* e) { return gpu_session_prefill((GpuSession*)x, ids, n, e); },
                    [](void* x, int mx, const Sampling* sm, int eos, int* out, TokenFn f, void* cb, int* no, CodaError* e) {
                        return gpu_session_generate((GpuSession*)x, mx, sm, eos, out, f, cb, no, e);
                    },
                    [](void* x, const char* p, CodaError* e) { return gpu_session_save_state((GpuSession*)x, p, e); },
                    [](void* x) { gpu_session_reset((GpuSession*)x); },
                    [](void* x, BankState_f32* scratch) {
                        gpu_decode_state_to_host(&((GpuSession*)x)->dec.st, scratch);
                        return (const BankState_f32*)scratch;
                    },
                    &s->n_fed, &s->has_logits};
    return g;
}

// The generation's input, read once: the tokenizer (--tokenizer; checked against the model's
// vocabulary) and the prompt's ids (NULL, 0 without a prompt). BOS is added to a text prompt unless a
// state is loaded (the text then continues it).
typedef struct {
    Tokenizer tk;
    int have_tok;
    int* ids;
    int n_ids;
} GenPrompt;
static void gen_prompt_load(const CliSpec* cli, const Options* o, int vocab_size, GenPrompt* p) {
    CodaError err;
    memset(p, 0, sizeof(*p));
    if (o->tokenizer_path) {
        if (tokenizer_load(&p->tk, o->tokenizer_path, &err) != 0) coda_fatal("%s", err.msg);
        p->have_tok = 1;
        if (tokenizer_vocab_size(&p->tk) > vocab_size)
            coda_fatal("%s has %d ids but the model's vocabulary is %d", o->tokenizer_path, tokenizer_vocab_size(&p->tk), vocab_size);
    }
    if (o->prompt) {
        int32_t* enc;
        size_t n_enc;
        int bos = !o->load_state && tokenizer_bos_id(&p->tk) >= 0;
        if (tokenizer_encode(&p->tk, o->prompt, strlen(o->prompt), bos, &enc, &n_enc, &err) != 0) coda_fatal("%s", err.msg);
        p->ids = (int*)enc;
        p->n_ids = (int)n_enc;
    } else if (o->prompt_ids && cli_parse_int_list("--prompt-ids", o->prompt_ids, 0, &p->ids, &p->n_ids, &err) != 0) {
        cli_fail(cli, "%s", err.msg);
    }
}
static void gen_prompt_free(GenPrompt* p) {
    free(p->ids);
    if (p->have_tok) tokenizer_free(&p->tk);
    memset(p, 0, sizeof(*p));
}

static void check_state_flags(const Options* o, const ModelConfig* c) {
    if (!c->bounded && (o->save_state || o->load_state))
        coda_fatal("--save-state / --load-state need a bounded model (this one is unbounded: --bounded-config medium, or --bounded 1 with the sizes)");
}

static int run_generation(const Options* o, const GenPrompt* in, GenSession* g) {
    const ModelConfig* c = g->cfg;
    CodaError err;
    check_state_flags(o, c);
    const Tokenizer* tk = &in->tk;
    const int have_tok = in->have_tok, n_ids = in->n_ids;
    const int* ids = in->ids;
    if (o->load_state) {
        if (g->load(g->s, o->load_state, o->seed_given, &err) != 0) coda_fatal("%s", err.msg);
        printf("loaded state %s: %lld tokens fed, %s\n", o->load_state, (long long)*g->n_fed,
               *g->has_logits ? "continuing from its next-token logits" : "no pending logits");
    }
    if (config_check_positions(c, (long long)*g->n_fed + n_ids + o->max_new, "the prompt and --max-new", o->allow_long_context, &err) != 0)
        coda_fatal("%s", err.msg);
    const double t0 = now_seconds();
    if (n_ids > 0) {
        printf("prompt: %d tokens (%s on the %s)\n", n_ids, c->bounded ? "chunked prefill" : "full forward", g->where);
        if (g->prefill(g->s, ids, n_ids, &err) != 0) coda_fatal("%s", err.msg);
    }
    const double t_prefill = now_seconds() - t0;
    TokenPrinter pr;
    memset(&pr, 0, sizeof(pr));
    pr.tok = have_tok ? tk : NULL;
    if (have_tok && o->prompt && !o->load_state) {  // print the prompt text as the tokenizer sees it, then the continuation
        pr.ids = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(n_ids + 64), "printer");
        pr.cap = n_ids + 64;
        memcpy(pr.ids, ids, sizeof(int) * (size_t)n_ids);
        pr.n = n_ids;
        char* text;
        size_t len;
        if (tokenizer_decode(tk, (const int32_t*)ids, (size_t)n_ids, &text, &len, &err) != 0) coda_fatal("%s", err.msg);
        fwrite(text, 1, len, stdout);
        pr.printed = len;
        free(text);
    } else if (have_tok) {
        // A continuation (loaded state, or a state-less id prompt): decode behind a one-character
        // piece so that the decoder's strip of one leading space does not eat the first word's space.
        int anchor = tokenizer_piece_to_id(tk, "a", 1);
        if (anchor >= 0) {
            pr.ids = (int*)coda_malloc_or_die(sizeof(int) * 64, "printer");
            pr.cap = 64;
            pr.ids[pr.n++] = anchor;
            pr.printed = 1;
        }
    }
    int* out = (int*)coda_malloc_or_die(sizeof(int) * (size_t)(o->max_new + 1), "generated tokens");
    int n_out = 0;
    int eos = o->ignore_eos ? -1 : (have_tok ? tokenizer_eos_id(tk) : c->eos_id);
    if (o->max_new > 0 && *g->has_logits) {
        const double t1 = now_seconds();
        if (g->generate(g->s, o->max_new, &o->smp, eos, out, print_token, &pr, &n_out, &err) != 0) coda_fatal("%s", err.msg);
        const double t_gen = now_seconds() - t1;
        printf("\n[%d new tokens; %lld tokens in the %s; %s: prefill %.3f s, generation %.3f s = %.1f tokens/s]\n", n_out,
               (long long)*g->n_fed, c->bounded ? "state" : "context", g->where, t_prefill, t_gen, n_out / (t_gen > 0 ? t_gen : 1e-9));
    } else if (o->max_new > 0) {
        coda_fatal("nothing to continue from: the loaded state has no pending logits; give --prompt or --prompt-ids");
    }
    if (o->save_state) {
        if (g->save(g->s, o->save_state, &err) != 0) coda_fatal("%s", err.msg);
        printf("saved state to %s (%lld tokens fed)\n", o->save_state, (long long)*g->n_fed);
    }
    free(out);
    free(pr.ids);
    return 0;
}

// Generation on the GPU: a bounded model decodes on its constant-size state, an unbounded one on a
// KV cache sized for the prompt and --max-new.
static int run_generation_gpu(const Options* o, const GenPrompt* in, GpuModel* gm) {
    const ModelConfig* c = &gm->cfg;
    const int n_prompt = in->n_ids;  // the KV cache's capacity, and whether the prefill recomputes
    const long long cap = (long long)n_prompt + o->max_new + 1;
    if (!c->bounded && cap > INT_MAX) coda_fatal("a KV cache of %lld tokens is too large", cap);
    GpuSession s;
    gpu_session_init(&s, gm, (int)cap, o->seed);
    s.recompute = n_prompt > 8192;  // long prompts: one layer's activations at a time
    const DecodeStateBytes b = decode_state_bytes_per_layer(c, (int)cap);
    if (c->bounded)
        printf("GPU state (docs/spec.md §6, as allocated): per layer K/V %zu (fp32) + mask %zu + ring gates %zu + LRU %zu + slot sources %zu"
               " + counters %zu = %zu B; x %d layers = %zu B (%.2f MiB), constant in the number of tokens\n",
               b.kv, b.mask, b.gates, b.lru, b.src, b.counters, b.total, c->n_layers, s.dec.st.bytes, s.dec.st.bytes / 1048576.0);
    else
        printf("GPU KV cache: %d tokens x %d layers x 2 x %d x %s = %zu B (%.2f MiB), grows with the text\n", (int)cap, c->n_layers,
               config_kvdim(c), PRECISION_NAME, s.dec.st.bytes, s.dec.st.bytes / 1048576.0);
    GenSession g = gpu_gen_session(&s);
    int rc = run_generation(o, in, &g);
    gpu_session_free(&s);
    return rc;
}

// The needle in real text (llmc/span.h): per length N, the span at --span-pos of the --span shard's
// text, the chunked prefill of N tokens from an empty state, where the span's tokens are (ring /
// exact bank, per layer), then the cue again and the greedy continuation against the answer.
static int run_span(const Options* o, GenSession* g, const Tokenizer* tk) {
    const ModelConfig* c = g->cfg;
    CodaError err;
    if (!c->bounded) coda_fatal("--span needs a bounded model (--bounded-config medium, or --bounded 1 with the sizes)");
    if (!g->reset || !g->states) coda_fatal("--span: this session cannot reset or show its state");
    int *lens, n_lens;
    if (cli_parse_int_list("--span-lengths", o->span_lengths, 1, &lens, &n_lens, &err) != 0) coda_fatal("%s", err.msg);
    int32_t *cue, *ans;
    size_t n_cue, n_ans;
    if (tokenizer_encode(tk, o->span_cue, strlen(o->span_cue), 0, &cue, &n_cue, &err) != 0) coda_fatal("--span-cue: %s", err.msg);
    if (tokenizer_encode(tk, o->span_answer, strlen(o->span_answer), 0, &ans, &n_ans, &err) != 0) coda_fatal("--span-answer: %s", err.msg);
    if (n_cue < 1 || n_ans < 1) coda_fatal("--span-cue and --span-answer must each encode to at least one token");
    const int span_len = (int)(n_cue + n_ans);
    int* span = (int*)coda_malloc_or_die(sizeof(int) * span_len, "span");
    for (size_t i = 0; i < n_cue; i++) span[i] = cue[i];
    for (size_t i = 0; i < n_ans; i++) span[n_cue + i] = ans[i];
    ShardHeader h;
    int32_t* hay;
    if (shard_load(o->span_path, &h, &hay, &err) != 0) coda_fatal("%s", err.msg);
    int max_len = 0;
    for (int i = 0; i < n_lens; i++) max_len = lens[i] > max_len ? lens[i] : max_len;
    if (config_check_positions(c, (long long)max_len + span_len, "--span-lengths (with the cue and the answer)", o->allow_long_context, &err) != 0)
        coda_fatal("%s", err.msg);
    int* seq = (int*)coda_malloc_or_die(sizeof(int) * (size_t)max_len, "span sequence");
    int *ring = (int*)coda_malloc_or_die(sizeof(int) * 2 * c->n_layers, "span counts"), *exact = ring + c->n_layers;
    BankState_f32* scratch = layer_states_alloc(c);
    printf("span (docs/protocol.md §4, real text) on the %s: cue %zu + answer %zu tokens at position %d of %s; W=%d Me=%d Ms=%d, %d layers\n",
           g->where, n_cue, n_ans, o->span_pos, o->span_path, c->window, c->n_exact, c->n_summary, c->n_layers);
    const SpanBackend be = {g->s, g->reset, g->prefill, g->states, g->generate};
    for (int i = 0; i < n_lens; i++) {
        const int N = lens[i];
        SpanResult r;
        if (span_build_sequence((const int*)hay, (int64_t)h.n_tokens, span, span_len, o->span_pos, N, seq, &err) != 0 ||
            span_measure(&be, c, seq, N, o->span_pos, span_len, (const int*)cue, (int)n_cue, (const int*)ans, (int)n_ans, scratch, ring,
                         exact, &r, &err) != 0)
            coda_fatal("%s", err.msg);
        printf("  length %6d: span tokens held exactly in %d/%d layers (exact bank %d, ring %d token-layers of %d x %d); recall %d/%zu answer tokens\n",
               N, r.layers_holding, c->n_layers, r.exact_total, r.ring_total, span_len, c->n_layers, r.recall, n_ans);
        printf("    exact bank per layer:");
        for (int l = 0; l < c->n_layers; l++) printf(" %d", exact[l]);
        printf("\n");
        if (o->json)
            printf("{\"span_length\": %d, \"span_pos\": %d, \"span_tokens\": %d, \"layers\": %d, \"layers_holding\": %d, "
                   "\"layers_exact\": %d, \"exact_token_layers\": %d, \"ring_token_layers\": %d, \"recall\": %d, \"answer_tokens\": %zu}\n",
                   N, o->span_pos, span_len, c->n_layers, r.layers_holding, r.layers_exact, r.exact_total, r.ring_total, r.recall, n_ans);
    }
    layer_states_free(scratch, c);
    free(ring); free(seq); free(span); free(hay); free(cue); free(ans); free(lens);
    return 0;
}

// The furthest position a perplexity run puts a token at: the window / chunk length, the longest
// swept length the text holds, or (streaming) the whole text; past the model's positions only with
// --allow-long-context.
static void check_ppl_positions(const Options* o, const ModelConfig* c, int64_t n) {
    long long reach = o->procedure == PPL_STREAMING ? n : (o->ctx < n ? o->ctx : n);
    const char* what = o->procedure == PPL_STREAMING ? "the streaming procedure (one state through the whole text)" : "--ctx";
    if (o->context_sweep) {
        reach = 0;
        for (int i = 0; i < PPL_SWEEP_N; i++) if (PPL_SWEEP_CTX[i] <= n) reach = PPL_SWEEP_CTX[i];
        what = "--context-sweep";
    }
    CodaError err;
    if (config_check_positions(c, reach, what, o->allow_long_context, &err) != 0) coda_fatal("%s", err.msg);
}

static const CliChoice PROCEDURE_CHOICES[] = {{"sliding", PPL_SLIDING}, {"chunked", PPL_CHUNKED}, {"streaming", PPL_STREAMING}, {NULL, 0}};
static const CliChoice MEM_INIT_CHOICES[] = {{"zeros", MEM_INIT_ZEROS}, {"random", MEM_INIT_RANDOM_NORMAL},
                                             {"random_normal", MEM_INIT_RANDOM_NORMAL}, {NULL, 0}};
static const CliChoice CANDIDATE_ORDER_CHOICES[] = {{"by_gate", CAND_ORDER_BY_GATE}, {"reference", CAND_ORDER_REFERENCE}, {NULL, 0}};

int main(int argc, char** argv) {
    Options o;
    memset(&o, 0, sizeof(o));
    o.ov = overrides_none();
    o.bounded_preset = -1;
    o.seed = 42;
    o.procedure = PPL_SLIDING;
    o.ctx = 2048; o.stride = 0; o.chunk = 512;  // stride 0: ppl_default_stride(ctx)
    o.max_new = 64;
    o.smp.temperature = 0.0; o.smp.top_p = 1.0; o.smp.top_k = 0;
    o.needle_pos = 64; o.needle_lengths = "256,1024,4096,16384";
    o.span_cue = " The secret passphrase is"; o.span_answer = " violet falcon 4271.";
    o.span_pos = 100; o.span_lengths = "1024,4096,16384";
    const CliFlag flags[] = {
        cli_string("--model", &o.model_dir, "DIR", "config.json + model.safetensors[.index.json] (HF layout; coda.c checkpoints too)"),
        cli_section("attention config (defaults: the config's \"coda\" object, else W=256 Me=64 Ms=64 block 256):"),
        cli_int("--bounded", &o.ov.bounded, 0, 1, "0|1", "unbounded causal attention or the fixed-size state (a model whose config names\n"
                "no state also needs its sizes: --bounded-config or --window/--exact/--summary)"),
        cli_enum("--bounded-config", &o.bounded_preset, bounded_preset_choices(),
                 "--bounded 1 with a preset state: W / Me / Ms = 128/32/32, 256/64/64, 512/128/128, 256/0/0\n"
                 "(--window/--exact/--summary override its sizes)"),
        cli_int("--window", &o.ov.window, 1, INT_MAX, "W", "recent ring slots"),
        cli_int("--exact", &o.ov.n_exact, 0, INT_MAX, "Me", "exact bank slots"),
        cli_int("--summary", &o.ov.n_summary, 0, INT_MAX, "Ms", "summary bank slots"),
        cli_int("--block", &o.ov.block_size, 1, INT_MAX, "S", "prefill block"),
        cli_int("--exact-candidates", &o.ov.exact_cands, 0, INT_MAX, "N", "exact-bank candidates per block write (paper 8)"),
        cli_int("--summary-candidates", &o.ov.summary_cands, 0, INT_MAX, "N", "summary-bank candidates per block write (paper 64)"),
        cli_enum("--candidate-order", &o.ov.candidate_order, CANDIDATE_ORDER_CHOICES,
                 "which evicted tokens each bank gets (the config's, by_gate unless set: its\n"
                 "highest gates; reference: the reference's index-ordered top-k list, docs/spec.md §3.1)"),
        cli_double_in("--rope-theta", &o.ov.rope_theta, 0, HUGE_VAL, "(]", "X", "RoPE base override (the reference's bounded layers used 10000)"),
        cli_enum("--mem-init", &o.ov.mem_init, MEM_INIT_CHOICES, "initial bank contents of an empty state (the config's, random_normal unless set)"),
        cli_given(cli_uint64("--seed", &o.seed, "N", "mem-init and sampling seed; layer l's banks use seed + l"), &o.seed_given),
        cli_section("perplexity (docs/protocol.md §3):"),
        cli_string("--ppl", &o.ppl_path, "FILE.bin", "token shard (tokenize_coda)"),
        cli_int64("--max-tokens", &o.max_tokens, 0, INT64_MAX, "N", "use the first N tokens (0 = all)"),
        cli_enum("--procedure", &o.procedure, PROCEDURE_CHOICES,
                 "sliding   §3.1:  windows of --ctx, step --stride; the first window scores\n"
                 "                 all its targets, later ones the last stride\n"
                 "chunked   §3.2b: chunks of --ctx, state reset per chunk, only full chunks\n"
                 "                 (--partial-chunk 1: §3.2a, keep the last)\n"
                 "streaming §3.2c: chunks of --chunk through one persistent state, no reset\n"
                 "                 (bounded models only)"),
        cli_int("--ctx", &o.ctx, 2, INT_MAX, "N", "window / chunk length of sliding and chunked"),
        cli_int("--stride", &o.stride, 1, INT_MAX, "N", "sliding window step (default min(512, ctx))"),
        cli_int("--chunk", &o.chunk, 2, INT_MAX, "N", "streaming chunk length"),
        cli_int("--partial-chunk", &o.partial_chunk, 0, 1, "0|1", "chunked: also score the last partial chunk (§3.2a)"),
        cli_switch("--json", &o.json, "also print one JSON line with the result"),
        cli_switch("--context-sweep", &o.context_sweep,
                   "§3.3: the chunked procedure (§3.2b) at ctx 512, 1024, 2048, 4096 and 8192 in one call\n"
                   "(the lengths the text holds at least once); a table, and JSON lines with --json"),
        cli_section("generation:"),
        cli_string("--tokenizer", &o.tokenizer_path, "FILE", "tokenizer.json (needed for --prompt and to print text)"),
        cli_string("--prompt", &o.prompt, "TEXT", "text prompt (BOS added unless a state is loaded)"),
        cli_string("--prompt-ids", &o.prompt_ids, "1,2,3", "prompt as token ids"),
        cli_int("--max-new", &o.max_new, 0, INT_MAX, "N", "tokens to generate"),
        cli_double("--temperature", &o.smp.temperature, 0, HUGE_VAL, "T", "0 = greedy"),
        cli_int("--top-k", &o.smp.top_k, 0, INT_MAX, "K", "sample from the K most likely tokens (0 = all)"),
        cli_double_in("--top-p", &o.smp.top_p, 0, 1, "(]", "P", "nucleus: the smallest set of most likely tokens with mass >= P"),
        cli_switch("--ignore-eos", &o.ignore_eos,
                   "do not stop at the EOS token\n"
                   "bounded: chunked prefill of the prompt (blocks of --block), then one decode\n"
                   "step per token on a constant-size state; unbounded: the forward re-runs over\n"
                   "the whole context per token (correct, slow)"),
        cli_string("--save-state", &o.save_state, "FILE", "after the prompt/generation, write the bounded state (+ next-token logits,\nsampling RNG)"),
        cli_string("--load-state", &o.load_state, "FILE",
                   "start from a saved state; without a prompt, continue generating exactly\n"
                   "where it stopped (the saved RNG continues unless --seed is given)"),
        cli_section("needle-in-a-haystack (docs/protocol.md §4; no --model: the reference demo's synthetic single random layer,\n"
                    "on the GPU kernels when a GPU is present (--device), lengths then multiples of the block;\n"
                    "D=512 H=8 Hkv=2, W=128 Me=32 Ms=32 block 256 unless overridden; tests bank bookkeeping, not retrieval):"),
        cli_switch("--needle", &o.needle, "run it; retained = the needle's key has cosine > 0.999 with a ring or\nexact-bank slot"),
        cli_string("--needle-lengths", &o.needle_lengths, "L,...", "sequence lengths"),
        cli_int("--needle-pos", &o.needle_pos, 0, INT_MAX, "P", "needle position"),
        cli_section("the needle in real text (llmc/span.h; a trained bounded model, --tokenizer):"),
        cli_string("--span", &o.span_path, "FILE.bin", "token shard of real text: a marked span is put into it at --span-pos; after N\n"
                   "tokens, per layer, does the ring or the exact bank still hold it, and does the\n"
                   "model continue the cue with the answer (greedy)?"),
        cli_string("--span-cue", &o.span_cue, "TEXT", "the span's first part, fed again as the question"),
        cli_string("--span-answer", &o.span_answer, "TEXT", "the span's second part, the expected continuation"),
        cli_int("--span-pos", &o.span_pos, 0, INT_MAX, "P", "position of the span"),
        cli_string("--span-lengths", &o.span_lengths, "N,N,...", "sequence lengths (text and span) before the question"),
        cli_switch("--allow-long-context", &o.allow_long_context,
                   "run past the model's max_position_embeddings (a window, the streamed text, a prompt\n"
                   "and its continuation); refused otherwise"),
        cli_section("where it runs:"),
        cli_enum("--device", &o.device, DEVICE_CHOICES,
                 "perplexity and generation on the GPU model when a GPU is present (auto), always\n"
                 "(gpu), or on the fp32 CPU reference (cpu)"),
    };
    const CliSpec cli = {"infer_coda", "infer_coda --model DIR [options]",
                         "  Perplexity and generation run on the GPU when one is present (--device), else on the\n"
                         "  CPU reference (fp32).", flags,
                         (int)(sizeof(flags) / sizeof(flags[0]))};
    cli_parse_or_exit(&cli, argc, argv);
    if (o.bounded_preset >= 0) {  // a preset state: bounded, with its sizes unless given
        const BoundedPreset* bp = &BOUNDED_PRESETS[o.bounded_preset];
        if (o.ov.bounded == 0) cli_fail(&cli, "--bounded-config with --bounded 0");
        o.ov.bounded = 1;
        if (o.ov.window < 0) o.ov.window = bp->window;
        if (o.ov.n_exact < 0) o.ov.n_exact = bp->n_exact;
        if (o.ov.n_summary < 0) o.ov.n_summary = bp->n_summary;
    }
    if (!o.needle) {  // the needle test is synthetic: it needs no model
        if (!o.model_dir) cli_fail(&cli, "--model DIR is required");
        if (o.prompt && o.prompt_ids) cli_fail(&cli, "give --prompt or --prompt-ids, not both");
        if (o.prompt && !o.tokenizer_path) cli_fail(&cli, "--prompt needs --tokenizer tokenizer.json (or use --prompt-ids)");
        if (o.span_path && !o.tokenizer_path) cli_fail(&cli, "--span needs --tokenizer tokenizer.json (the cue and the answer are text)");
        if (o.span_path && (o.ppl_path || o.prompt || o.prompt_ids || o.load_state || o.save_state))
            cli_fail(&cli, "--span runs on its own (not with --ppl, a prompt or state files)");
        if (!o.span_path && !o.ppl_path && !o.prompt && !o.prompt_ids && !o.load_state)
            cli_fail(&cli, "nothing to do: give --ppl, --prompt/--prompt-ids, --load-state or --span");
    }
    if (o.stride == 0) o.stride = ppl_default_stride(o.ctx);
    setvbuf(stdout, NULL, _IOLBF, 0);  // results and errors (stderr) in order, also through a pipe
    CodaError err;
    if (o.needle) {
        int* lens;
        int n_lens, n_ok = 0;
        if (cli_parse_int_list("--needle-lengths", o.needle_lengths, 1, &lens, &n_lens, &err) != 0) cli_fail(&cli, "%s", err.msg);
        ModelConfig nc = needle_config(&o.ov);
        const int on_gpu = o.device == DEVICE_GPU || (o.device == DEVICE_AUTO && gpu_present());
        printf("needle (docs/protocol.md §4) on the %s: one random CoDA layer D=%d H=%d Hkv=%d, W=%d Me=%d Ms=%d block %d, needle at %d\n",
               on_gpu ? PRECISION_NAME " GPU kernels (llmc/needle_gpu.cuh)" : "fp32 CPU reference", nc.dim, nc.n_heads, nc.n_kv_heads,
               nc.window, nc.n_exact, nc.n_summary, nc.block_size, o.needle_pos);
        GpuContext gctx;
        if (on_gpu) gpu_context_init(&gctx);
        for (int i = 0; i < n_lens; i++) {
            NeedleResult r;
            const double t0 = now_seconds();
            if ((on_gpu ? needle_run_gpu(&gctx, &nc, lens[i], o.needle_pos, 5.0, o.seed, &r, &err)
                        : needle_run(&nc, lens[i], o.needle_pos, 5.0, o.seed, &r, &err)) != 0)
                coda_fatal("%s", err.msg);
            const double dt = now_seconds() - t0;
            n_ok += r.retained;
            printf("  length %6d: %s (best cosine %.6f, %s slot %d holding position %lld; needle gate %.4f; exact slots used %d/%d; %.2f s)\n",
                   r.length, r.retained ? "retained" : "LOST", r.best_cos, r.slot < 0 ? "no" : r.slot < nc.window ? "ring" : "exact-bank",
                   r.slot, (long long)r.slot_src, r.needle_gate, r.exact_used, nc.n_exact, dt);
            if (o.json)
                printf("{\"needle_length\": %d, \"needle_pos\": %d, \"retained\": %s, \"best_cos\": %.9g, \"where\": \"%s\", "
                       "\"slot\": %d, \"slot_src\": %lld, \"exact_used\": %d}\n", r.length, r.pos, r.retained ? "true" : "false",
                       r.best_cos, r.where == 1 ? "ring" : r.where == 2 ? "exact" : "none", r.slot, (long long)r.slot_src, r.exact_used);
        }
        printf("retention %d/%d (%.0f%%)\n", n_ok, n_lens, 100.0 * n_ok / n_lens);
        if (on_gpu) gpu_context_free(&gctx);
        free(lens);
        return n_ok == n_lens ? 0 : 2;
    }
    const int want_gen = o.prompt || o.prompt_ids || o.load_state;
    const int gpu_ok = o.device == DEVICE_GPU || (o.device == DEVICE_AUTO && gpu_present());
    if (o.span_path) {  // the needle in real text, on the GPU decoder or the CPU session
        Tokenizer tk;
        if (tokenizer_load(&tk, o.tokenizer_path, &err) != 0) coda_fatal("%s", err.msg);
        int ret = 0;
        if (gpu_ok) {
            GpuModel gm;
            HfLoadReport grep_;
            if (gpu_eval_model_load(&gm, o.model_dir, &o.ov, &grep_, &err) != 0) coda_fatal("%s", err.msg);
            print_model_config(&gm.cfg, &grep_);
            if (tokenizer_vocab_size(&tk) > gm.cfg.vocab_size) coda_fatal("%s has more ids than the model's vocabulary", o.tokenizer_path);
            GpuSession s;
            gpu_session_init(&s, &gm, 1, o.seed);
            s.recompute = 1;  // forward only: one layer's activations at a time
            GenSession g = gpu_gen_session(&s);
            ret = run_span(&o, &g, &tk);
            gpu_session_free(&s);
            gpu_model_free(&gm);
        } else {
            Model_f32 m;
            HfLoadReport rep;
            if (reference_load_dir(o.model_dir, &o.ov, &m, &rep, &err) != 0) coda_fatal("%s", err.msg);
            print_model_config(&m.cfg, &rep);
            if (tokenizer_vocab_size(&tk) > m.cfg.vocab_size) coda_fatal("%s has more ids than the model's vocabulary", o.tokenizer_path);
            Session s;
            session_init(&s, &m, o.seed);
            GenSession g = cpu_gen_session(&s);
            ret = run_span(&o, &g, &tk);
            session_free(&s);
            model_free_f32(&m);
        }
        tokenizer_free(&tk);
        return ret;
    }
    const int gpu_ppl = o.ppl_path && gpu_ok, gpu_gen = want_gen && gpu_ok;
    int ret = 0;
    if (gpu_ppl || gpu_gen) {  // the GPU model, loaded once for both
        GpuModel gm;
        HfLoadReport grep_;
        if (gpu_eval_model_load(&gm, o.model_dir, &o.ov, &grep_, &err) != 0) coda_fatal("%s", err.msg);
        print_model_config(&gm.cfg, &grep_);
        if (want_gen) check_state_flags(&o, &gm.cfg);  // before any perplexity work
        if (gpu_ppl) {
            int64_t n;
            int32_t* tokens = load_ppl_tokens(&o, gm.cfg.vocab_size, &n);
            check_ppl_positions(&o, &gm.cfg, n);
            GpuScorer gs;
            int max_len = o.context_sweep ? PPL_SWEEP_CTX[PPL_SWEEP_N - 1] : o.procedure == PPL_STREAMING ? o.chunk : o.ctx;
            if (max_len > n) max_len = (int)n;
            PplScorer scorer = gpu_scorer(&gs, &gm, max_len, 0, o.seed);
            scorer.progress = print_progress;
            run_ppl(&o, &scorer, &gm.cfg, tokens, n, PRECISION_NAME " GPU model");
            gpu_scorer_free(&gs);
            gpu_model_free_acts(&gm);
            free(tokens);
            o.ppl_path = NULL;  // done
        }
        if (gpu_gen) {
            GenPrompt in;
            gen_prompt_load(&cli, &o, gm.cfg.vocab_size, &in);
            ret = run_generation_gpu(&o, &in, &gm);
            gen_prompt_free(&in);
        }
        gpu_model_free(&gm);
        if (!o.ppl_path && !(want_gen && !gpu_gen)) return ret;
    }
    Model_f32 m;
    HfLoadReport rep;
    if (reference_load_dir(o.model_dir, &o.ov, &m, &rep, &err) != 0) coda_fatal("%s", err.msg);
    const ModelConfig* c = &m.cfg;
    print_model_config(c, &rep);
    if (want_gen && !gpu_gen) check_state_flags(&o, c);
    if (o.ppl_path) {
        int64_t n;
        int32_t* tokens = load_ppl_tokens(&o, c->vocab_size, &n);
        check_ppl_positions(&o, c, n);
        CpuScorer cs;
        PplScorer scorer = cpu_scorer(&cs, &m, o.seed);
        scorer.progress = print_progress;
        run_ppl(&o, &scorer, c, tokens, n, "fp32 CPU reference");
        cpu_scorer_free(&cs);
        free(tokens);
    }
    if (want_gen && !gpu_gen) {
        Session s;
        session_init(&s, &m, o.seed);
        GenSession gs = cpu_gen_session(&s);
        GenPrompt in;
        gen_prompt_load(&cli, &o, c->vocab_size, &in);
        ret = run_generation(&o, &in, &gs);
        gen_prompt_free(&in);
        session_free(&s);
    }
    model_free_f32(&m);
    return ret;
}
