// train_coda.cu — the trainer, on one GPU or data parallel over several (one process per GPU).
//   Phase 0: a Mistral-architecture model from random init, standard GQA, all parameters trainable.
//   Phase 1: from a base checkpoint (coda.c's or a Hugging Face Mistral directory), every attention
//            layer becomes CoDA (unbounded): q/k/v/o copied, theta/lambda initialised (docs/spec.md §5,
//            docs/protocol.md §1.2); attention adapters trainable, everything else frozen.
//   Phase 2: from a phase-1 checkpoint, every layer becomes bounded (docs/protocol.md §1.9): a fixed-size
//            state (ring + exact + summary bank; the medium preset by default), write gate and eta
//            initialised (docs/spec.md §5), a fresh optimizer at 0.1x the phase-1 learning rates, 50 warmup
//            updates; trained with scan-then-attend (llmc/model.cuh, bank_scan.cuh).
//   --gqa-arm (phases 1 and 2): the 2x2's "GQA" arm (docs/protocol.md §5): lambda bias -100, theta 0, both frozen.
// Every hyper-parameter is a flag; Phase-1 defaults are the paper's (docs/protocol.md §1.4-1.6).
// Checkpoints (llmc/checkpoint.cuh): OUT/step_NNNNNNNN/{config.json, model.safetensors,
// train_state.bin}, written to a temporary directory and renamed, then OUT/LATEST is replaced
// atomically: a crash never leaves a corrupt latest checkpoint. model.safetensors + config.json is a
// Hugging Face model directory.
// Multi-GPU (llmc/ddp.cuh): one process per GPU, started by `mpirun -np N ./train_coda ...` (MPI only
// shares the NCCL id: llmc/launch_mpi.h; built in when make finds mpicc) or by N processes with
// `--nccl-init file:PATH --rank R --world N` (no MPI: a rendezvous file). Data parallel with ZeRO-1:
// each rank trains on its B rows of every global batch of N x B (--batch is per GPU), the gradients
// are reduce-scattered, each rank updates its slice of the optimizer state, the parameters are
// all-gathered. Rank 0 prints and writes log.txt; validation is split over the ranks (the same rows as
// one GPU when --eval-batches is a multiple of N); checkpoints are the one-GPU format, written by all
// ranks together into --out, which every rank must see (a shared file system across nodes), and
// resume with any N. Without --nccl-init and outside mpirun: one GPU, no NCCL, exactly as before.
// This file is the command line, the printing and the training loop; the rest is in llmc/.
#include <errno.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include "llmc/checkpoint.cuh"
#include "llmc/cli.h"
#include "llmc/dataloader.h"
#include "llmc/ddp.cuh"
#include "llmc/hf_model.h"
#include "llmc/launch.h"
#include "llmc/model.cuh"
#include "llmc/presets.h"
#ifdef CODA_MPI  // the Makefile defines it (and links OpenMPI) when mpicc is there
#include "llmc/launch_mpi.h"
#endif

// Rank 0 prints; the other ranks only report errors (coda_fatal, on stderr).
static int g_rank = 0;
#define printf0(...)                             \
    do {                                         \
        if (g_rank == 0) printf(__VA_ARGS__);    \
    } while (0)

// ---------------------------------------------------------------------------------------------
// Command line (llmc/cli.h)

typedef struct {
    int phase;
    const char* model;        // phase 0: preset name or config.json
    const char* init;         // phase 1: base model directory (HF layout)
    const char* train_path;
    const char* val_path;
    const char* out_dir;
    int B, T, accum, steps, warmup, seed, recompute, chunk_rows;
    int eval_every, eval_batches, save_every, resume, log_every;
    int timing;               // update whose GPU time per op category is printed (1-based; 0 = none)
    int keep_last;            // checkpoints kept after each save (0 = all)
    double lr, lr_coda, weight_decay, min_lr_frac, clip, beta1, beta2, eps;
    // CoDA options applied in phase 1
    double theta_init, lambda_init_bias, rope_theta;
    int head_norm;            // HeadNormMode
    int rope_bf16_positions;
    int gqa_arm;              // phases 1, 2: lambda ~ 0 (bias -100), theta 0, both frozen
    // phase 2: the bounded state and its training switches
    int bounded_preset;       // index into BOUNDED_PRESETS
    int window, n_exact, n_summary, block;  // -1: the preset's (block: 256)
    double lr_scale;          // multiplies --lr and --lr-coda
    int detach_evicted, cross_block_grad, mask_unused_memory, candidate_order;
    int warmup_given, steps_given;
    // multi-GPU (llmc/launch.h): NULL / -1 = not given
    const char* nccl_init;
    int rank, world, local_rank;
} Options;

static const CliChoice HEAD_NORM_CHOICES[] = {{"identity", HEAD_NORM_IDENTITY}, {"full", HEAD_NORM_FULL}, {NULL, 0}};
static const CliChoice CANDIDATE_ORDER_CHOICES[] = {{"by_gate", CAND_ORDER_BY_GATE}, {"reference", CAND_ORDER_REFERENCE}, {NULL, 0}};

// Parses argv into o, defaults first (phase-1 defaults are the paper's); exits on a bad command line.
static void parse_options(Options* o, int argc, char** argv) {
    memset(o, 0, sizeof(*o));
    o->phase = 1; o->model = "tiny"; o->out_dir = "out";
    o->B = 1; o->T = 2048; o->accum = 8; o->steps = 250; o->warmup = 100; o->seed = 42;
    o->eval_every = 25; o->eval_batches = 8; o->save_every = 100; o->log_every = 1;
    o->lr = 5e-5; o->lr_coda = 1e-3; o->weight_decay = 0.01; o->min_lr_frac = 0.0; o->clip = 1.0;
    o->beta1 = 0.9; o->beta2 = 0.999; o->eps = 1e-8;
    o->theta_init = 0.0; o->lambda_init_bias = -6.0; o->rope_theta = 0.0; o->head_norm = HEAD_NORM_IDENTITY;
    o->bounded_preset = 1;  // medium
    o->window = o->n_exact = o->n_summary = o->block = -1;
    o->lr_scale = 0.1; o->detach_evicted = 1; o->cross_block_grad = 1; o->mask_unused_memory = 1;
    o->candidate_order = CAND_ORDER_BY_GATE;
    o->rank = o->world = o->local_rank = -1;
    char model_help[256];
    snprintf(model_help, sizeof(model_help), "phase 0 architecture: a preset (%s) or a config.json", model_preset_names());
    const CliFlag flags[] = {
        cli_int("--phase", &o->phase, 0, 2, "0|1|2",
                "0: GQA from random init, all trainable; 1: CoDA from --init (a base model);\n"
                "2: bounded CoDA from --init (a phase-1 checkpoint)"),
        cli_string("--model", &o->model, "NAME|FILE", model_help),
        cli_string("--init", &o->init, "DIR|random",
                   "phase 1: the base model, phase 2: the phase-1 checkpoint (config.json +\n"
                   "model.safetensors[.index.json]); random: a randomly initialised base of\n"
                   "--model's architecture (benchmarks)"),
        cli_string("--train", &o->train_path, "FILE", "training token shard (tokenize_coda; required)"),
        cli_string("--val", &o->val_path, "FILE", "validation token shard"),
        cli_string("--out", &o->out_dir, "DIR", "checkpoints and log.txt"),
        cli_int("--batch", &o->B, 1, INT_MAX, "B", "micro-batch rows per GPU (the global batch is GPUs x B x accum rows)"),
        cli_int("--seq", &o->T, 1, INT_MAX, "T", "tokens per row"),
        cli_int("--accum", &o->accum, 1, INT_MAX, "N", "micro-batches per update"),
        cli_given(cli_int("--steps", &o->steps, 1, INT_MAX, "N",
                          "optimizer updates (phase 1: 250 = the paper's 2000 micro-batches / 8;\n"
                          "phase 2: 75 = 600 / 8)"), &o->steps_given),
        cli_double("--lr", &o->lr, 0, HUGE_VAL, "X", "peak lr of q/k/v/o (and of all matrices in phase 0)"),
        cli_double("--lr-coda", &o->lr_coda, 0, HUGE_VAL, "X", "peak lr of theta / lambda / head_norm"),
        cli_double("--weight-decay", &o->weight_decay, 0, HUGE_VAL, "X", "on q/k/v/o and matrices; none on norms, theta, lambda"),
        cli_given(cli_int("--warmup", &o->warmup, 0, INT_MAX, "N", "linear warmup updates, then cosine decay (phase 2: 50)"),
                  &o->warmup_given),
        cli_double("--min-lr-frac", &o->min_lr_frac, 0, 1, "X", "the lr at the last update, as a fraction of the peak"),
        cli_double("--clip", &o->clip, 0, HUGE_VAL, "X", "global gradient-norm clip (0 = none)"),
        cli_double_in("--beta1", &o->beta1, 0, 1, "[)", "X", "AdamW beta1"),
        cli_double_in("--beta2", &o->beta2, 0, 1, "[)", "X", "AdamW beta2"),
        cli_double_in("--eps", &o->eps, 0, HUGE_VAL, "(]", "X", "AdamW epsilon"),
        cli_int("--seed", &o->seed, INT_MIN, INT_MAX, "N", "initialisation and data order"),
        cli_int("--recompute", &o->recompute, 0, 1, "0|1", "re-run each layer's forward in the backward (less memory)"),
        cli_int("--chunk-rows", &o->chunk_rows, 0, INT_MAX, "N", "rows of logits computed at once (0 = all)"),
        cli_int("--eval-every", &o->eval_every, 0, INT_MAX, "N", "validation every N updates (0 = never)"),
        cli_int("--eval-batches", &o->eval_batches, 1, INT_MAX, "N", "validation batches per evaluation"),
        cli_int("--save-every", &o->save_every, 0, INT_MAX, "N", "checkpoint every N updates and at the end (0 = never)"),
        cli_int("--keep-last", &o->keep_last, 0, INT_MAX, "N",
                "after each checkpoint, delete the older complete ones beyond the newest N\n"
                "(never the one OUT/LATEST names; 0 = keep all)"),
        cli_int("--log-every", &o->log_every, 1, INT_MAX, "N", "print every N updates"),
        cli_switch("--resume", &o->resume,
                   "continue from OUT/LATEST (bit-exact); if LATEST is missing or unreadable, from\n"
                   "the newest complete checkpoint in OUT"),
        cli_int("--timing", &o->timing, 0, INT_MAX, "N",
                "print and log GPU time per op category (matmul, attention, ...) of update N\n"
                "(0 = off; N >= 2 so that warm-up, e.g. cuBLASLt plan creation, is not timed)"),
        cli_double("--theta-init", &o->theta_init, -HUGE_VAL, HUGE_VAL, "X", "phase-1 CoDA init: noise-rotation angle"),
        cli_double("--lambda-init-bias", &o->lambda_init_bias, -HUGE_VAL, HUGE_VAL, "X", "phase-1 CoDA init: lambda_proj bias"),
        cli_enum("--head-norm", &o->head_norm, HEAD_NORM_CHOICES, "phase-1 CoDA head norm"),
        cli_double("--rope-theta", &o->rope_theta, 0, HUGE_VAL, "X",
                   "override the config's RoPE base (0 = keep it; the reference's bounded layers\n"
                   "used 10000)"),
        cli_switch("--rope-bf16-positions", &o->rope_bf16_positions, "reproduce the reference's bf16 RoPE positions (a defect; for comparisons)"),
        cli_switch("--gqa-arm", &o->gqa_arm,
                   "phases 1, 2: the 2x2's GQA arm: lambda bias -100 and theta 0 at init, both frozen\n"
                   "(pass it in both phases)"),
        cli_section("phase 2 (bounded state; the paper's values by default):"),
        cli_enum("--bounded-config", &o->bounded_preset, bounded_preset_choices(),
                 "state preset: W / Me / Ms = 128/32/32, 256/64/64, 512/128/128, 256/0/0"),
        cli_int("--window", &o->window, 1, CONFIG_MAX_STATE, "W", "ring slots (overrides the preset)"),
        cli_int("--exact", &o->n_exact, 0, CONFIG_MAX_STATE, "Me", "exact-bank slots (overrides the preset)"),
        cli_int("--summary", &o->n_summary, 0, CONFIG_MAX_STATE, "Ms", "summary-bank slots (overrides the preset)"),
        cli_int("--block", &o->block, 1, CONFIG_MAX_STATE, "S", "tokens per block of the chunked prefill (256)"),
        cli_double("--lr-scale", &o->lr_scale, 0, HUGE_VAL, "X", "phase 2 multiplies --lr and --lr-coda by this"),
        cli_int("--detach-evicted", &o->detach_evicted, 0, 1, "0|1",
                "evicted tokens enter the banks as constants (no gradient to the write gate)"),
        cli_int("--cross-block-grad", &o->cross_block_grad, 0, 1, "0|1", "gradients flow through the state across blocks"),
        cli_int("--mask-unused-memory", &o->mask_unused_memory, 0, 1, "0|1", "attend only to filled ring slots and used bank slots"),
        cli_enum("--candidate-order", &o->candidate_order, CANDIDATE_ORDER_CHOICES,
                 "which evicted tokens each bank gets: its highest gates, or the reference's\n"
                 "index-ordered top-k list (docs/spec.md §3.1)"),
        cli_section("multi-GPU (one process per GPU; data parallel, ZeRO-1 optimizer state):"),
        cli_string("--nccl-init", &o->nccl_init, "single|mpi|file:PATH",
                   "how the processes find each other: single = one GPU, no NCCL (the default\n"
                   "outside mpirun); mpi = started by mpirun -np N (the default under mpirun);\n"
                   "file:PATH = rank 0 writes the NCCL id to PATH, on a file system every rank\n"
                   "sees (PATH must not exist yet), with --rank and --world"),
        cli_int("--rank", &o->rank, 0, INT_MAX, "R", "this process's rank (--nccl-init file:PATH)"),
        cli_int("--world", &o->world, 1, INT_MAX, "N", "the number of processes (--nccl-init file:PATH)"),
        cli_int("--local-rank", &o->local_rank, 0, INT_MAX, "L",
                "the GPU of its node this process takes (default: mpirun's local rank, or\n"
                "--rank: one node)"),
    };
    const CliSpec cli = {"train_coda", "train_coda [options]", NULL, flags, (int)(sizeof(flags) / sizeof(flags[0]))};
    cli_parse_or_exit(&cli, argc, argv);
    if (!o->train_path) cli_fail(&cli, "--train FILE is required (a token shard; see dev/data/README.md)");
    if (o->phase == 1 && !o->init && !o->resume) cli_fail(&cli, "--phase 1 needs --init DIR (the base model)");
    if (o->phase == 2 && !o->init && !o->resume) cli_fail(&cli, "--phase 2 needs --init DIR (a phase-1 checkpoint)");
    if (o->phase == 0 && o->gqa_arm) cli_fail(&cli, "--gqa-arm is for phases 1 and 2 (phase 0 trains plain GQA anyway)");
    if (o->phase == 2) {  // the paper's phase 2: 600 micro-batches of 8 (75 updates), 50 of them warmup
        if (!o->steps_given) o->steps = 75;
        if (!o->warmup_given) o->warmup = 50;
    }
}

// Prints what loading a model directory did (hf_load_params' report).
static void print_load_report(const char* dir, const HfLoadReport* rep) {
    printf0("loaded %d tensors from %s (%d files)", rep->n_loaded, dir, rep->n_files);
    if (rep->n_coda_missing) printf0("; %d new CoDA tensors initialised", rep->n_coda_missing);
    if (rep->n_unexpected) printf0("; %d unexpected tensors ignored (e.g. %s)", rep->n_unexpected, rep->unexpected[0]);
    printf0("\n");
}

// ---------------------------------------------------------------------------------------------
// Accounting

// Model FLOPs per token in llm.c's convention (6 per matmul parameter per token, plus attention's
// 6·L·H·Dh·T for causal attention = 12·L·H·Dh per key seen, doubled for CoDA's two streams; a bounded
// layer sees at most its bank, ring and half a block), counted for the full backward whether or not
// weights are frozen.
static double flops_per_token(const GpuModel* m) {
    const ModelConfig* c = &m->cfg;
    double n = 0;
    for (int i = 0; i < m->table.n; i++)
        if (m->table.tensors[i].ndim == 2 && m->table.tensors[i].kind != PK_EMBED) n += (double)m->table.tensors[i].numel;
    if (c->tie_embeddings) n += (double)c->vocab_size * c->dim;
    // keys per query: T / 2 on average when causal; bounded: the bank, the ring and half a block, at most
    double keys = c->bounded ? fmin(m->T / 2.0, c->n_exact + c->n_summary + c->window + c->block_size / 2.0) : m->T / 2.0;
    double attn = 12.0 * c->n_layers * config_qdim(c) * keys * (c->differential ? 2 : 1);
    return 6.0 * n + attn;
}
// This process's GPU (a rank's, under data parallelism: nccl_init set it).
static cudaDeviceProp this_gpu(void) {
    int dev = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, dev));
    return p;
}
// Dense bf16 peak of the card (H100/H200 SXM: 989 TFLOP/s); < 0 if unknown.
static double peak_flops(void) {
    const cudaDeviceProp p = this_gpu();
    if (strstr(p.name, "H100") || strstr(p.name, "H200")) return 989e12;
    return -1;
}

static double wall_seconds(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + 1e-6 * tv.tv_usec;
}

// --timing: the table of one update to stdout and to log.txt (as '#' lines, which plot_log.py skips).
static void report_step_timing(const StepTimer* t, const Options* o, int update, const char* card, FILE* log) {
    FILE* outs[2] = {stdout, log};
    const char* prefixes[2] = {"", "# "};
    for (int i = 0; i < 2; i++) {
        fprintf(outs[i], "%sGPU time by op category, update %d | %s | %s | B %d T %d accum %d | %% sum: share of the timed ops, "
                "%% wall: share of the update\n", prefixes[i], update, card, PRECISION_NAME, o->B, o->T, o->accum);
        step_timer_print(t, outs[i], prefixes[i]);
        double attn = t->ms[ST_ATTENTION_FWD] + t->ms[ST_ATTENTION_BWD];
        fprintf(outs[i], "%sattention kernels (fwd + bwd): %.3f ms = %.1f%% of the update's wall time, %.1f%% of the timed ops\n",
                prefixes[i], attn, 100 * attn / (t->wall_ms > 0 ? t->wall_ms : 1), 100 * attn / (t->sum_ms > 0 ? t->sum_ms : 1));
        fflush(outs[i]);
    }
}

// Mean loss per token over n batches of the (sequential) validation loader. Data parallel (dp): each
// rank scores its B rows of n global batches, and the loss and token sums are added over the ranks.
static double evaluate(GpuModel* m, DataLoader* val, int n_batches, Ddp* dp) {
    dataloader_reset(val);
    double total = 0;
    long long count = 0;
    CodaError err;
    for (int i = 0; i < n_batches; i++) {
        if (dataloader_next(val, &err) != 0) coda_fatal("%s", err.msg);
        int scored = 0;
        total += gpu_model_forward(m, val->inputs, val->targets, 0.0f, &scored);
        count += scored;
    }
    if (dp) {
        double sums[2] = {total, (double)count};
        ddp_sum(dp, sums, 2);
        total = sums[0];
        count = (long long)sums[1];
    }
    return count ? total / count : 0.0;
}

// How rank 0's NCCL id reaches the others (nccl_init's share): the rendezvous file, or MPI under
// mpirun (MPI_Init here), if this build has it.
static NcclShareId launch_share(const LaunchInfo* li, int* argc, char*** argv) {
    if (li->kind == LAUNCH_FILE) return launch_share_id_file;
#ifdef CODA_MPI
    launch_mpi_init(argc, argv);
    return launch_mpi_share_id;
#else
    (void)argc; (void)argv;
    if (li->world > 1)
        coda_fatal("rank %d: started by mpirun with %d processes, but this train_coda was built without MPI (make found no mpicc;\n"
                   "Debian: apt-get install libopenmpi-dev, then rebuild), so the ranks cannot share the NCCL id over MPI.\n"
                   "Without MPI, start one process per GPU with --nccl-init file:PATH --rank R --world N",
                   li->rank, li->world);
    return NULL;  // a world of one needs no sharing
#endif
}

int main(int argc, char** argv) {
    Options o;
    parse_options(&o, argc, argv);
    CodaError err;
    // ---- the processes: one (no NCCL at all), or one per GPU of a data-parallel run ----
    LaunchInfo li;
    if (launch_resolve(o.nccl_init, o.rank, o.world, o.local_rank, &li, &err) != 0) coda_fatal("%s", err.msg);
    Ddp ddp;
    Ddp* dp = NULL;  // NULL: the one-GPU path
    NcclCtx nccl;
    if (li.kind != LAUNCH_SINGLE) {
        NcclShareId share = launch_share(&li, &argc, &argv);
        if (nccl_init(&nccl, &li, share, &err) != 0) coda_fatal("%s", err.msg);  // picks this rank's GPU
        g_rank = li.rank;
        // the communicator exists, so every rank has read the rendezvous file: rank 0 removes it, and
        // the next job may use the same path (launch.h refuses an existing one)
        if (li.kind == LAUNCH_FILE && li.rank == 0 && li.world > 1) unlink(li.path);
    }
    const int lead = li.rank == 0;
    if (ckpt_make_dir(o.out_dir, &err) != 0) coda_fatal("%s", err.msg);
    const TrainRun run = {o.seed, o.B, o.T, o.accum};
    if (lead) {  // only rank 0 removes (the others only ever look at complete checkpoints, not at .tmp ones)
        int n_unfinished;
        char unfinished[2048];
        if (ckpt_remove_unfinished(o.out_dir, &n_unfinished, unfinished, sizeof(unfinished), &err) != 0) coda_fatal("%s", err.msg);
        if (n_unfinished)
            printf("removed %d unfinished checkpoint%s left by an interrupted run: %s\n", n_unfinished, n_unfinished > 1 ? "s" : "", unfinished);
    }

    // ---- model ----
    ModelConfig cfg;
    char resume_dir[4200] = "";
    char resume_note[2048] = "";
    int found = o.resume ? ckpt_find_resume(o.out_dir, resume_dir, sizeof(resume_dir), resume_note, sizeof(resume_note), &err) : 1;
    if (found < 0) coda_fatal("%s", err.msg);
    if (resume_note[0]) printf0("--resume: %s\n", resume_note);
    int resuming = found == 0;
    const int random_base = o.phase >= 1 && !resuming && o.init && strcmp(o.init, "random") == 0;
    if (o.resume && !resuming) printf0("--resume: no checkpoint in %s yet, starting fresh\n", o.out_dir);
    if (resuming) {
        char path[4300];
        snprintf(path, sizeof(path), "%s/config.json", resume_dir);
        if (config_read_hf(path, &cfg, &err) != 0) coda_fatal("%s", err.msg);
    } else if (o.phase == 0) {
        if (model_config_from(o.model, &cfg, &err) != 0) coda_fatal("%s", err.msg);
    } else {
        char path[4300];
        snprintf(path, sizeof(path), "%s/config.json", random_base ? o.model : o.init);
        if (random_base) {
            if (model_config_from(o.model, &cfg, &err) != 0) coda_fatal("%s", err.msg);
        } else {
            if (config_read_hf(path, &cfg, &err) != 0) coda_fatal("%s", err.msg);
        }
        if (o.phase == 1 || random_base) {  // the Phase-1 swap: CoDA attention in every layer
            cfg.differential = 1;
            cfg.bounded = 0;
            cfg.theta_init = o.gqa_arm ? 0.0f : (float)o.theta_init;
            cfg.lambda_init_bias = o.gqa_arm ? -100.0f : (float)o.lambda_init_bias;
            cfg.head_norm = (HeadNormMode)o.head_norm;
        }
        const BoundedOptions bo = {o.bounded_preset, o.window, o.n_exact, o.n_summary, o.block, o.detach_evicted, o.cross_block_grad,
                                   o.mask_unused_memory, (CandidateOrder)o.candidate_order};
        if (o.phase == 2 && phase2_config(&cfg, &bo, random_base ? "the random base" : path, &err) != 0) coda_fatal("%s", err.msg);
    }
    if (o.rope_theta > 0) cfg.rope_theta_override = o.rope_theta;
    if (o.rope_bf16_positions) cfg.rope_bf16_positions = 1;
    if (config_validate(&cfg, &err) != 0) coda_fatal("%s", err.msg);
    GpuModel m;
    gpu_model_create(&m, &cfg, o.phase == 0 ? TRAIN_ALL : o.gqa_arm ? TRAIN_ATTENTION_NO_DIFF : TRAIN_ATTENTION);
    if (li.kind != LAUNCH_SINGLE) {  // ZeRO-1: this rank's slice of the optimizer state, the padded gradient
        ddp_create(&ddp, &m, &nccl);
        dp = &ddp;
    }
    // phase 0 and a random base draw everything; a base / phase-1 checkpoint or a resumed one supplies
    // all but the tensors it lacks (phase 1: theta, lambda; phase 2: write gate, eta)
    gpu_model_init_random(&m, (uint64_t)o.seed, resuming || (o.phase >= 1 && !random_base));
    DataPosition pos = {0, 0};
    int start_step = 0;
    if (resuming) {
        HfLoadReport rep;
        const int rc = dp ? ddp_checkpoint_resume(&m, dp, resume_dir, &run, &rep, &start_step, &pos, &err)
                          : checkpoint_resume(&m, resume_dir, &run, &rep, &start_step, &pos, &err);
        if (rc != 0) coda_fatal("%s", err.msg);
        print_load_report(resume_dir, &rep);
        printf0("resumed from %s at update %d\n", resume_dir, start_step);
    } else {
        if (o.phase >= 1 && !random_base) {  // every rank reads the same files: identical models, no broadcast
            HfLoadReport rep;
            if (checkpoint_load_weights(&m, o.init, &rep, &err) != 0) coda_fatal("%s", err.msg);
            print_load_report(o.init, &rep);
        }
        if (dp) ddp_sync_masters(&m, dp);
        else gpu_model_sync_masters(&m);
    }
    gpu_model_alloc_acts(&m, o.B, o.T, o.recompute, o.chunk_rows);

    // ---- data ----
    // each rank takes its B rows of every global batch of world x B (dataloader.h)
    const int world = li.world;
    DataLoader train, val;
    if (dataloader_init(&train, o.train_path, o.B, o.T, li.rank, world, (uint64_t)o.seed, 1, &err) != 0) coda_fatal("%s", err.msg);
    if (train.header.vocab_size > cfg.vocab_size)
        coda_fatal("%s was tokenized with a vocabulary of %d but the model has %d", o.train_path, train.header.vocab_size, cfg.vocab_size);
    if (dataloader_seek(&train, pos, &err) != 0) coda_fatal("%s", err.msg);
    int have_val = o.val_path != NULL;
    if (have_val && dataloader_init(&val, o.val_path, o.B, o.T, li.rank, world, 0, 0, &err) != 0) coda_fatal("%s", err.msg);
    // validation: --eval-batches batches of B rows in all, split over the ranks (rank r scores rows
    // r*B.. of each global batch), so with a multiple of world they are the one-GPU run's rows
    const int eval_batches = (o.eval_batches + world - 1) / world;

    // ---- optimizer ----
    AdamWConfig opt;
    memset(&opt, 0, sizeof(opt));
    const double lr_mult = o.phase == 2 ? o.lr_scale : 1.0;  // phase 2: a fresh optimizer at 0.1x the rates
    opt.lr[GROUP_MATRIX] = opt.lr[GROUP_NORM] = opt.lr[GROUP_ATTN_PROJ] = o.lr * lr_mult;
    opt.lr[GROUP_CODA] = o.lr_coda * lr_mult;
    opt.weight_decay[GROUP_MATRIX] = opt.weight_decay[GROUP_ATTN_PROJ] = o.weight_decay;
    opt.beta1 = o.beta1; opt.beta2 = o.beta2; opt.eps = o.eps; opt.grad_clip = o.clip;

    double fpt = flops_per_token(&m), peak = peak_flops();
    const cudaDeviceProp prop = this_gpu();
    printf0("coda.c train | phase %d | %s | %s | %d layers d%d | %zu params, %zu trainable | B %d T %d accum %d | %d updates\n",
            o.phase, prop.name, PRECISION_NAME, cfg.n_layers, cfg.dim, m.table.total, m.n_train, o.B, o.T, o.accum, o.steps);
    if (dp) {
        printf0("data parallel: %d GPUs, global batch %d x %d x %d = %lld rows, %lld tokens per update | ZeRO-1: %zu of the %zu "
                "optimizer values per rank | validation: %d x %d rows%s\n",
                world, world, o.B, o.accum, (long long)world * o.B * o.accum, (long long)world * o.B * o.accum * o.T, dp->slice.shard,
                m.n_train, eval_batches * world, o.B, eval_batches * world != o.eval_batches ? " (--eval-batches rounded up to a multiple of the GPUs)" : "");
    }
    if (cfg.bounded)
        printf0("bounded state: W %d, exact %d, summary %d, block %d | detach_evicted %d cross_block_grad %d mask_unused_memory %d | "
               "candidate order %s%s\n", cfg.window, cfg.n_exact, cfg.n_summary, cfg.block_size, cfg.detach_evicted, cfg.cross_block_grad,
               cfg.mask_unused_memory, cfg.candidate_order == CAND_ORDER_REFERENCE ? "reference" : "by_gate", o.gqa_arm ? " | GQA arm" : "");
    char log_path[4200];
    snprintf(log_path, sizeof(log_path), "%s/log.txt", o.out_dir);
    FILE* log = NULL;  // rank 0's
    if (lead) {
        log = fopen(log_path, "a");
        if (!log) coda_fatal("cannot open %s: %s", log_path, strerror(errno));
        fprintf(log, "# phase %d card %s precision %s B %d T %d accum %d start %d\n", o.phase, prop.name, PRECISION_NAME, o.B, o.T, o.accum, start_step);
        if (dp) fprintf(log, "# data parallel: %d GPUs, B %d per GPU, global batch %d rows\n", world, o.B, world * o.B * o.accum);
    }
    int last_saved = resuming ? start_step : -1;
    size_t peak_mem = 0;
    StepTimer timer;  // --timing: set as m.timer for that one update only, so the others pay nothing
    if (o.timing) {
        if (o.timing <= start_step || o.timing > o.steps)
            printf0("--timing %d: this run does updates %d..%d, so nothing will be timed\n", o.timing, start_step + 1, o.steps);
        else if (o.timing == start_step + 1)
            printf0("--timing %d: the first update of a run includes warm-up (cuBLASLt plans); time a later one\n", o.timing);
        step_timer_init(&timer, m.ctx.stream);
    }
    for (int step = start_step; step < o.steps; step++) {
        int timed = o.timing == step + 1;
        double t0 = wall_seconds();
        if (timed) {
            m.timer = &timer;
            step_timer_begin_update(&timer);
        }
        gpu_model_zero_grad(&m);
        double loss_sum = 0;
        long long scored_total = 0;
        for (int micro = 0; micro < o.accum; micro++) {
            if (dataloader_next(&train, &err) != 0) coda_fatal("%s", err.msg);
            int scored = 0;
            for (int i = 0; i < o.B * o.T; i++) scored += train.targets[i] >= 0;
            // the update minimises the mean over micro-batches of each micro-batch's mean token loss
            float dscale = scored ? 1.0f / ((float)scored * o.accum) : 0.0f;
            loss_sum += gpu_model_forward(&m, train.inputs, train.targets, dscale, NULL) / (scored ? scored : 1);
            scored_total += scored;
            gpu_model_backward(&m);
        }
        double loss = loss_sum / o.accum;
        if (dp) loss = ddp_mean(dp, loss);  // the mean over ranks: every rank logs, and stops on, the same value
        if (!isfinite(loss)) {
            char last[4200] = "none";
            if (ckpt_latest_read(o.out_dir, last, sizeof(last), NULL) != 0) snprintf(last, sizeof(last), "none");
            coda_fatal("loss is %f at update %d; stopping. Last good checkpoint: %s", loss, step, last);
        }
        double lr_scale = lr_schedule(step, o.steps, o.warmup, o.min_lr_frac);
        float norm = dp ? ddp_update(&m, dp, &opt, lr_scale) : gpu_model_update(&m, &opt, lr_scale);
        if (timed) {
            step_timer_end_update(&timer);
            m.timer = NULL;  // evaluation and the other updates are not timed
        }
        cudaCheck(cudaStreamSynchronize(m.ctx.stream));
        double dt = wall_seconds() - t0;
        size_t free_b, total_b;
        cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        if (total_b - free_b > peak_mem) peak_mem = total_b - free_b;
        // tokens per second of the whole run (all GPUs); MFU per GPU
        double tok_s = (double)world * o.B * o.T * o.accum / dt, mfu = peak > 0 ? fpt * tok_s / world / peak : -1;
        if (step % o.log_every == 0 || step == o.steps - 1) {
            printf0("step %5d/%d | loss %.4f | lr %.3e | norm %.3f | %.0f ms | %.0f tok/s | MFU %.1f%% | mem %.1f GiB\n", step + 1, o.steps,
                   loss, lr_scale * opt.lr[GROUP_ATTN_PROJ], norm, dt * 1e3, tok_s, mfu * 100, (total_b - free_b) / 1073741824.0);
            fflush(stdout);
        }
        if (log)
            fprintf(log, "step %d loss %.6f lr %.6e norm %.6f ms %.2f tok_s %.1f mfu %.4f mem_gib %.2f\n", step + 1, loss,
                    lr_scale * opt.lr[GROUP_ATTN_PROJ], norm, dt * 1e3, tok_s, mfu, (total_b - free_b) / 1073741824.0);
        if (timed) {
            step_timer_collect(&timer);
            if (lead) report_step_timing(&timer, &o, step + 1, prop.name, log);  // rank 0's update
        }
        if (have_val && o.eval_every > 0 && ((step + 1) % o.eval_every == 0 || step == o.steps - 1)) {
            double vl = evaluate(&m, &val, eval_batches, dp);
            printf0("step %5d | val loss %.4f | val ppl %.3f\n", step + 1, vl, exp(vl));
            if (log) fprintf(log, "step %d val_loss %.6f\n", step + 1, vl);
        }
        if (log) fflush(log);
        if (o.save_every > 0 && ((step + 1) % o.save_every == 0 || step == o.steps - 1)) {
            const int rc = dp ? ddp_checkpoint_save(&m, dp, o.out_dir, step + 1, &run, dataloader_position(&train), &err)
                              : checkpoint_save(&m, o.out_dir, step + 1, &run, dataloader_position(&train), &err);
            if (rc != 0) coda_fatal("%s", err.msg);
            last_saved = step + 1;
            printf0("saved %s/step_%08d\n", o.out_dir, step + 1);
            int n_pruned;
            char pruned[4096];
            if (lead) {  // rank 0 alone deletes
                if (ckpt_prune(o.out_dir, o.keep_last, &n_pruned, pruned, sizeof(pruned), &err) != 0)
                    fprintf(stderr, "warning: --keep-last %d: %s (training goes on)\n", o.keep_last, err.msg);
                else if (n_pruned)
                    printf("deleted %s (--keep-last %d)\n", pruned, o.keep_last);
            }
        }
    }
    printf0("done: peak GPU memory in use %.1f GiB%s; last checkpoint step %d\n", peak_mem / 1073741824.0, dp ? " (rank 0)" : "", last_saved);
    if (log) fclose(log);
    if (o.timing) step_timer_free(&timer);
    dataloader_free(&train);
    if (have_val) dataloader_free(&val);
    if (dp) ddp_free(dp);  // the communicator too
    gpu_model_free(&m);
#ifdef CODA_MPI
    if (li.kind == LAUNCH_MPI) MPI_Finalize();
#endif
    return 0;
}
