// test_gpu_model.cuh — the whole GPU model against the CPU reference on the same weights and batch:
// logits, loss and every parameter gradient; ten AdamW steps whose losses track the CPU's; and
// resume-equals-continue through real checkpoint files. Tolerances: the FP32 build must agree to
// about 1e-4 relative (only summation order differs); the BF16 build to bf16 precision.
#pragma once
#include "../../llmc/checkpoint.cuh"
#include "../../llmc/cpu/reference.h"
#include "../../llmc/model.cuh"
#include "model_helpers.h"

#if defined(ENABLE_FP32)
static const double GPU_REL_TOL = 2e-4, GPU_LOSS_TOL = 1e-5;
#else
static const double GPU_REL_TOL = 6e-2, GPU_LOSS_TOL = 2e-2;
#endif

// cos(a, b) over n values (1 when both are zero).
static double cosine_sim(const float* a, const float* b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
    return (aa == 0 && bb == 0) ? 1.0 : ab / sqrt(aa * bb + 1e-300);
}

static ModelConfig gpu_test_config(int differential, int head_norm_full) {
    ModelConfig c = config_default();
    c.vocab_size = 301; c.dim = 96; c.ffn_dim = 160; c.n_layers = 2;
    c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 64;  // the GPU attention kernel takes Dh 64 or 128
    c.rope_theta = 10000.0; c.norm_eps = 1e-5f;
    c.differential = differential;
    c.head_norm = head_norm_full ? HEAD_NORM_FULL : HEAD_NORM_IDENTITY;
    c.lambda_init_bias = 0.0f;
    return c;
}

// max |a - b| / max |b| over n values.
static double rel_err(const float* a, const float* b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) { d = fmax(d, fabs((double)a[i] - b[i])); s = fmax(s, fabs((double)b[i])); }
    return d / (s > 0 ? s : 1);
}

static void gpu_vs_cpu(ModelConfig c, int B, int T, int recompute) {
    Model_f32 cpu;
    model_init_f32(&cpu, &c, 101);
    perturb_params_f32(&cpu, 102, 0.3);
    GpuModel g;
    gpu_model_create(&g, &c, TRAIN_ALL);
    CHECK(g.table.total == cpu.table.total, "tables differ");
    gpu_model_load_host(&g, cpu.params);
#if !defined(ENABLE_FP32)
    // the GPU holds bf16 weights: give the CPU the same rounded values
    gpu_model_read_host(&g, cpu.params);
#endif
    gpu_model_alloc_acts(&g, B, T, recompute, 0);
    int n = B * T;
    int* tok = (int*)malloc(sizeof(int) * n * 2);
    int* tgt = tok + n;
    random_tokens(tok, n, c.vocab_size, 103);
    random_tokens(tgt, n, c.vocab_size, 104);
    tgt[3] = -1;
    // logits and loss
    double cpu_loss = model_forward_f32(&cpu, tok, tgt, B, T, NULL);
    int scored = 0;
    double gpu_sum = gpu_model_forward(&g, tok, tgt, 0.0f, &scored);
    CHECK(scored == cpu.n_targets, "scored %d vs %d", scored, cpu.n_targets);
    CHECK_CLOSE(gpu_sum / scored, cpu_loss, 0, GPU_LOSS_TOL);
    float* logits = (float*)malloc(sizeof(float) * n * c.vocab_size);
    floatX_to_host(logits, g.logits, (size_t)n * c.vocab_size);
    double e = rel_err(logits, cpu.logits, (size_t)n * c.vocab_size);
    CHECK(e <= GPU_REL_TOL, "logits rel err %.3g", e);
    // every gradient
    model_zero_grad_f32(&cpu);
    model_backward_f32(&cpu, 1.0f);
    gpu_model_zero_grad(&g);
    gpu_model_forward(&g, tok, tgt, 1.0f / scored, NULL);
    gpu_model_backward(&g);
    float* grad = (float*)malloc(sizeof(float) * g.n_train);
    cudaCheck(cudaMemcpy(grad, g.grad, sizeof(float) * g.n_train, cudaMemcpyDeviceToHost));
    for (int i = 0; i < g.table.n; i++) {
        const ParamTensor* t = &g.table.tensors[i];
        const float *gg = grad + g.train_offset[i], *gc = cpu.grads + t->offset;
#if defined(ENABLE_FP32)
        double err = rel_err(gg, gc, t->numel);
        CHECK(err <= GPU_REL_TOL * 2, "%s: gradient rel err %.3g", t->name, err);
#else
        // bf16 activations: compare directions. The lambda gradient is -sum(do * A_noise) of nearly
        // cancelling terms (A_noise ~ A_sig), so bf16 rounding of the streams shows most there.
        int is_lambda = t->kind == PK_LAMBDA_W || t->kind == PK_LAMBDA_B;
        double cs = cosine_sim(gg, gc, t->numel);
        CHECK(cs >= (is_lambda ? 0.9 : 0.99), "%s: gradient cosine %.4f (rel err %.3g)", t->name, cs, rel_err(gg, gc, t->numel));
#endif
    }
    free(grad); free(logits); free(tok);
    gpu_model_free(&g);
    model_free_f32(&cpu);
}

GPU_TEST(gpu_model_gqa_matches_cpu_reference) { gpu_vs_cpu(gpu_test_config(0, 0), 2, 37, 0); }
GPU_TEST(gpu_model_coda_matches_cpu_reference) { gpu_vs_cpu(gpu_test_config(1, 0), 2, 37, 0); }
GPU_TEST(gpu_model_coda_headnorm_recompute_matches_cpu_reference) {
    ModelConfig c = gpu_test_config(1, 1);
    c.rope_layout = ROPE_INTERLEAVED; c.tie_embeddings = 1;
    gpu_vs_cpu(c, 3, 20, 1);
}

static AdamWConfig gpu_test_adamw(void) {
    AdamWConfig o;
    memset(&o, 0, sizeof(o));
    for (int g = 0; g < GROUP_COUNT; g++) { o.lr[g] = 3e-3; o.weight_decay[g] = 0.01; }
    o.lr[GROUP_CODA] = 1e-2; o.weight_decay[GROUP_CODA] = 0; o.weight_decay[GROUP_NORM] = 0;
    o.beta1 = 0.9; o.beta2 = 0.999; o.eps = 1e-8; o.grad_clip = 1.0;
    return o;
}

GPU_TEST(gpu_ten_adamw_steps_track_cpu_reference) {
    ModelConfig c = gpu_test_config(1, 0);
    Model_f32 cpu;
    model_init_f32(&cpu, &c, 111);
    param_table_set_trainable(&cpu.table, TRAIN_ATTENTION);  // the Phase-1 policy
    GpuModel g;
    gpu_model_create(&g, &c, TRAIN_ATTENTION);
    gpu_model_load_host(&g, cpu.params);
#if !defined(ENABLE_FP32)
    gpu_model_read_host(&g, cpu.params);
#endif
    int B = 2, T = 32, n = B * T;
    gpu_model_alloc_acts(&g, B, T, 0, 0);
    int tok[64], tgt[64];
    random_tokens(tok, n, c.vocab_size, 112);
    random_tokens(tgt, n, c.vocab_size, 113);
    AdamWConfig o = gpu_test_adamw();
    for (int s = 0; s < 10; s++) {
        model_zero_grad_f32(&cpu);
        double lc = model_forward_f32(&cpu, tok, tgt, B, T, NULL);
        model_backward_f32(&cpu, 1.0f);
        model_adamw_step_f32(&cpu, &o, 1.0);
        gpu_model_zero_grad(&g);
        double lg = gpu_model_forward(&g, tok, tgt, 1.0f / n, NULL) / n;
        gpu_model_backward(&g);
        gpu_model_update(&g, &o, 1.0);
        CHECK_CLOSE(lg, lc, 0, GPU_LOSS_TOL * 2);
        if (s == 9) CHECK(lg < 0.9 * log((double)c.vocab_size), "loss did not fall: %f", lg);
    }
    // frozen tensors did not move
    float* host = (float*)malloc(sizeof(float) * g.table.total);
    gpu_model_read_host(&g, host);
    const ParamTensor* up = param_find(&g.table, PK_UP, 1);
    float want[8];
    for (int i = 0; i < 8; i++) want[i] = cpu.params[up->offset + i];
#if !defined(ENABLE_FP32)
    for (int i = 0; i < 8; i++) want[i] = round_bf16(want[i]);
#endif
    CHECK(memcmp(host + up->offset, want, sizeof(want)) == 0, "a frozen tensor changed");
    free(host);
    gpu_model_free(&g);
    model_free_f32(&cpu);
}

// Phase 1 freezes the MLP, so without recompute the layers share one buffer for the MLP's normed input
// and SwiGLU output (param_layer_keeps) and keep their own attention input; the gradients are the
// same bits as with recompute (one set that keeps everything, rebuilt per layer) and as with every
// intermediate kept (keep_all_acts).
GPU_TEST(gpu_phase1_shared_forward_buffers_same_gradients) {
    ModelConfig c = gpu_test_config(1, 1);
    c.n_layers = 3;
    const int B = 2, T = 48, n = B * T;
    int tok[96], tgt[96];
    random_tokens(tok, n, c.vocab_size, 131);
    random_tokens(tgt, n, c.vocab_size, 132);
    float* grads[3];
    size_t nt = 0;
    for (int r = 0; r < 3; r++) {  // shared buffers, recompute, everything kept
        GpuModel g;
        gpu_model_create(&g, &c, TRAIN_ATTENTION);
        gpu_model_init_random(&g, 133, 0);
        g.keep_all_acts = r == 2;
        gpu_model_alloc_acts(&g, B, T, r == 1, 0);
        if (r == 0) {
            CHECK(g.fwd_hn && g.fwd_act, "no shared forward buffers");
            for (int l = 0; l < c.n_layers; l++) {
                const LayerActs* a = &g.layers[l];
                CHECK(a->hn2 == g.fwd_hn && a->mlp_act == g.fwd_act && a->hn1 != g.fwd_hn, "layer %d: hn1 %p hn2 %p act %p", l,
                      (void*)a->hn1, (void*)a->hn2, (void*)a->mlp_act);
            }
        } else {
            CHECK(!g.fwd_hn && !g.fwd_act, "run %d allocated shared buffers", r);
        }
        gpu_model_zero_grad(&g);
        gpu_model_forward(&g, tok, tgt, 1.0f / n, NULL);
        gpu_model_backward(&g);
        nt = g.n_train;
        grads[r] = (float*)coda_malloc_or_die(sizeof(float) * nt, "gradients");
        cudaCheck(cudaMemcpy(grads[r], g.grad, sizeof(float) * nt, cudaMemcpyDeviceToHost));
        gpu_model_free(&g);
    }
    double nonzero = 0;
    for (size_t i = 0; i < nt; i++) nonzero += grads[0][i] != 0.f;
    CHECK(nonzero > 0.5 * nt, "only %.0f of %zu gradients are non-zero", nonzero, nt);
    CHECK(memcmp(grads[0], grads[1], sizeof(float) * nt) == 0, "shared buffers vs recompute: gradients differ");
    CHECK(memcmp(grads[0], grads[2], sizeof(float) * nt) == 0, "shared buffers vs everything kept: gradients differ");
    for (int r = 0; r < 3; r++) free(grads[r]);
}

// Trains `steps` updates on fixed batches (a different batch per update), returning the losses.
static void gpu_train_steps(GpuModel* g, int first, int steps, double* losses) {
    AdamWConfig o = gpu_test_adamw();
    int B = g->B, T = g->T, n = B * T;
    int* tok = (int*)malloc(sizeof(int) * n * 2);
    int* tgt = tok + n;
    for (int s = first; s < first + steps; s++) {
        random_tokens(tok, n, g->cfg.vocab_size, 200 + s);
        random_tokens(tgt, n, g->cfg.vocab_size, 300 + s);
        gpu_model_zero_grad(g);
        losses[s - first] = gpu_model_forward(g, tok, tgt, 1.0f / n, NULL) / n;
        gpu_model_backward(g);
        gpu_model_update(g, &o, lr_schedule(s, 12, 3, 0.1));
    }
    free(tok);
}

// Gradient accumulation over micro-batches with the zero-free first backward (gpu_model_zero_grad
// leaves the matmul weight gradients to be overwritten): A then B accumulated equals A + B, and a
// fresh update's gradient carries nothing over from the previous one (bit-equal to the first run).
// Phase-0-like (everything trainable, tied head: the embedding gets a matmul and a scatter-add) and
// phase 1 (attention adapters).
GPU_TEST(gpu_grad_accumulation_sums_micro_batches) {
    for (int variant = 0; variant < 2; variant++) {
        ModelConfig c = variant ? gpu_test_config(1, 1) : gpu_test_config(0, 0);
        c.tie_embeddings = !variant;
        GpuModel g;
        gpu_model_create(&g, &c, variant ? TRAIN_ATTENTION : TRAIN_ALL);
        gpu_model_init_random(&g, 11 + variant, 0);
        const int B = 2, T = 32, n = B * T;
        gpu_model_alloc_acts(&g, B, T, 0, 0);
        int tok[2][64], tgt[2][64];
        for (int k = 0; k < 2; k++) {
            random_tokens(tok[k], n, c.vocab_size, 500 + 2 * k);
            random_tokens(tgt[k], n, c.vocab_size, 501 + 2 * k);
        }
        const size_t nt = g.n_train;
        float* gr[4];  // A, B, A then B, B again
        const int runs[4][2] = {{0, -1}, {1, -1}, {0, 1}, {1, -1}};
        for (int r = 0; r < 4; r++) {
            gpu_model_zero_grad(&g);
            for (int k = 0; k < 2 && runs[r][k] >= 0; k++) {
                gpu_model_forward(&g, tok[runs[r][k]], tgt[runs[r][k]], 1.0f / n, NULL);
                gpu_model_backward(&g);
            }
            gr[r] = (float*)coda_malloc_or_die(sizeof(float) * nt, "gradients");
            cudaCheck(cudaMemcpy(gr[r], g.grad, sizeof(float) * nt, cudaMemcpyDeviceToHost));
        }
        float* sum = (float*)coda_malloc_or_die(sizeof(float) * nt, "sum");
        double nonzero = 0;
        for (size_t i = 0; i < nt; i++) { sum[i] = gr[0][i] + gr[1][i]; nonzero += gr[0][i] != 0.f; }
        CHECK(nonzero > 0.5 * nt, "variant %d: only %.0f of %zu gradients are non-zero", variant, nonzero, nt);
        double e = rel_err(gr[2], sum, nt);
        CHECK(e <= 1e-5, "variant %d: accumulated gradient vs the sum of the two: rel err %.3g", variant, e);
        CHECK(memcmp(gr[3], gr[1], sizeof(float) * nt) == 0, "variant %d: a fresh update's gradient kept something of the last", variant);
        for (int r = 0; r < 4; r++) free(gr[r]);
        free(sum);
        gpu_model_free(&g);
    }
}

GPU_TEST(gpu_resume_from_checkpoint_equals_continuing) {
    ModelConfig c = gpu_test_config(1, 1);
    char dir[64];
    test_mkdtemp(dir, sizeof(dir), "resume");
    const TrainRun run = {5, 2, 24, 1};  // seed, B, T, accum
    CodaError err;
    GpuModel a, b;
    gpu_model_create(&a, &c, TRAIN_ATTENTION);
    gpu_model_init_random(&a, 7, 0);
    gpu_model_alloc_acts(&a, run.B, run.T, 0, 0);
    double la[6], lb[3];
    gpu_train_steps(&a, 0, 3, la);
    DataPosition pos = {2, 17};
    CHECK(checkpoint_save(&a, dir, 3, &run, pos, &err) == 0, "%s", err.msg);
    gpu_train_steps(&a, 3, 3, la + 3);
    char latest[4200];
    CHECK(ckpt_latest_read(dir, latest, sizeof(latest), &err) == 0, "no LATEST");
    gpu_model_create(&b, &c, TRAIN_ATTENTION);
    gpu_model_init_random(&b, 999, 0);  // different init: everything must come from the checkpoint
    DataPosition got = {0, 0};
    HfLoadReport rep;
    int step = -1;
    CHECK(checkpoint_resume(&b, latest, &run, &rep, &step, &got, &err) == 0, "%s", err.msg);
    CHECK(step == 3 && got.epoch == 2 && got.index == 17, "step %d position %llu/%llu", step,
          (unsigned long long)got.epoch, (unsigned long long)got.index);
    gpu_model_alloc_acts(&b, run.B, run.T, 0, 0);
    gpu_train_steps(&b, 3, 3, lb);
    CHECK(memcmp(la + 3, lb, sizeof(lb)) == 0, "losses after resume differ: %.9g vs %.9g", la[5], lb[2]);
    size_t bytes = sizeof(floatX) * a.table.total;
    void* pa = malloc(bytes);
    void* pb = malloc(bytes);
    cudaCheck(cudaMemcpy(pa, a.params, bytes, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(pb, b.params, bytes, cudaMemcpyDeviceToHost));
    CHECK(memcmp(pa, pb, bytes) == 0, "parameters after resume differ");
    free(pa); free(pb);
    gpu_model_free(&a);
    gpu_model_free(&b);
    test_rmtree(dir);
}

// One update of `g` (the timer, if given, brackets it); returns the mean token loss.
static double gpu_timed_update(GpuModel* g, StepTimer* timer, const int* tok, const int* tgt) {
    AdamWConfig o = gpu_test_adamw();
    int n = g->B * g->T;
    if (timer) {
        g->timer = timer;
        step_timer_begin_update(timer);
    }
    gpu_model_zero_grad(g);
    double loss = gpu_model_forward(g, tok, tgt, 1.0f / n, NULL) / n;
    gpu_model_backward(g);
    gpu_model_update(g, &o, 1.0);
    if (timer) {
        step_timer_end_update(timer);
        g->timer = NULL;
    }
    return loss;
}

// --timing's breakdown (step_timer.cuh) of one update after a warm-up one: the kernels every update
// runs have time, the timed ops (disjoint intervals of one stream) fit inside the update's wall
// time and cover a fair part of it, and timing changes nothing: a twin updated untimed ends bit-equal.
GPU_TEST(gpu_step_timer_breaks_down_an_update) {
    ModelConfig c = gpu_test_config(1, 0);
    int B = 4, T = 128, n = B * T;
    GpuModel a, b;  // a is timed in its second update, b never
    GpuModel* both[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        gpu_model_create(both[i], &c, TRAIN_ALL);  // every weight gradient and the embedding backward run
        gpu_model_init_random(both[i], 21, 0);
        gpu_model_alloc_acts(both[i], B, T, 0, 0);
    }
    int* tok = (int*)malloc(sizeof(int) * n * 2);
    int* tgt = tok + n;
    random_tokens(tok, n, c.vocab_size, 22);
    random_tokens(tgt, n, c.vocab_size, 23);
    StepTimer timer;
    step_timer_init(&timer, a.ctx.stream);
    double la[2], lb[2];
    for (int s = 0; s < 2; s++) {  // update 0 warms up (cuBLASLt plans), update 1 is timed
        la[s] = gpu_timed_update(&a, s == 1 ? &timer : NULL, tok, tgt);
        lb[s] = gpu_timed_update(&b, NULL, tok, tgt);
    }
    step_timer_collect(&timer);
    step_timer_print(&timer, stdout, "    ");
    const StepCategory must[] = {ST_MATMUL_FWD, ST_ATTENTION_FWD, ST_ATTENTION_BWD, ST_NORM, ST_OPTIMIZER};
    for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
        CHECK(timer.ms[must[i]] > 0, "%s: %.6f ms", STEP_CATEGORIES[must[i]].name, timer.ms[must[i]]);
    for (int k = 0; k < ST_COUNT; k++)  // every category but the bounded layers' (unbounded model) and the collectives' (one GPU)
        if (k != ST_BANK && k != ST_COMM) CHECK(timer.ops[k] > 0, "%s: no op timed", STEP_CATEGORIES[k].name);
    CHECK(timer.ops[ST_COMM] == 0, "a one-GPU update timed %d collectives", timer.ops[ST_COMM]);
    CHECK(timer.ops[ST_BANK] == 0, "an unbounded model timed %d bank ops", timer.ops[ST_BANK]);
    CHECK(timer.ops[ST_ATTENTION_FWD] == c.n_layers && timer.ops[ST_ATTENTION_BWD] == c.n_layers, "attention ops %d fwd, %d bwd",
          timer.ops[ST_ATTENTION_FWD], timer.ops[ST_ATTENTION_BWD]);
    double sum = 0;
    for (int k = 0; k < ST_COUNT; k++) sum += timer.ms[k];
    CHECK_CLOSE(sum, timer.sum_ms, 1e-9, 1e-9);
    CHECK(timer.wall_ms > 0 && sum <= 1.05 * timer.wall_ms && sum >= 0.3 * timer.wall_ms, "ops %.3f ms, update wall %.3f ms", sum,
          timer.wall_ms);
    // numerics: same losses and bit-equal parameters and masters with and without the timer
    CHECK(memcmp(la, lb, sizeof(la)) == 0, "losses %.9g vs %.9g", la[1], lb[1]);
    size_t bytes = sizeof(floatX) * a.table.total;
    void* pa = malloc(bytes);
    void* pb = malloc(bytes);
    cudaCheck(cudaMemcpy(pa, a.params, bytes, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(pb, b.params, bytes, cudaMemcpyDeviceToHost));
    CHECK(memcmp(pa, pb, bytes) == 0, "parameters differ after a timed update");
    free(pa); free(pb);
    bytes = sizeof(float) * a.n_train;
    pa = malloc(bytes);
    pb = malloc(bytes);
    cudaCheck(cudaMemcpy(pa, a.master, bytes, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(pb, b.master, bytes, cudaMemcpyDeviceToHost));
    CHECK(memcmp(pa, pb, bytes) == 0, "fp32 masters differ after a timed update");
    free(pa); free(pb);
    // a second timed update reuses the event pool
    int pool = timer.capacity;
    gpu_timed_update(&a, &timer, tok, tgt);
    step_timer_collect(&timer);
    CHECK(timer.capacity == pool && timer.ops[ST_ATTENTION_FWD] == c.n_layers, "pool %d -> %d, %d attention ops", pool,
          timer.capacity, timer.ops[ST_ATTENTION_FWD]);
    step_timer_free(&timer);
    free(tok);
    gpu_model_free(&a);
    gpu_model_free(&b);
}

// Parity with Hugging Face transformers: each directory written by scripts/hf_parity.py (a random
// Mistral saved by save_pretrained + transformers' logits and loss) must load in coda.c and give the
// same logits and loss. Measures: relative L2 error ||a - b|| / ||b|| over all logits (the bar) and
// max |a - b| / max |b| (printed: it tells a localised bug from rounding noise spread everywhere).
// Bars (hf_parity_check): loss within 1e-5 (FP32 build) / 2e-2 (BF16) relative, and logits rel L2
// within the same against transformers -- or, when parity.bin carries the truth (the same weights one
// precision up: fp32 for a bf16 model, fp64 for an fp32 one), coda.c's rel L2 error against the truth
// at most 1.25x transformers' own: coda.c must be as accurate as transformers, which a direct
// comparison of two roundings cannot tell at depth (both round, differently, in every layer).

// parity.bin as scripts/hf_parity.py writes it (little-endian): int32 B, T, V; int32 tokens [B*T];
// float32 logits [B*T*V]; float64 loss; then, from format version 2, int32 2, float32 logits [B*T*V]
// and float64 loss of the truth. Older files end after the first loss.
#define HF_PARITY_TRUTH_VERSION 2
typedef struct {
    int B, T, V;
    int* tok;       // [B*T]
    float* logits;  // [B*T*V] transformers, in the model's dtype
    double loss;
    float* truth;   // [B*T*V] the same weights one precision up (fp32 / fp64 truth), or NULL (older files)
    double truth_loss;
} HfParityRef;

static void hf_parity_ref_free(HfParityRef* r) {
    free(r->tok); free(r->logits); free(r->truth);
    memset(r, 0, sizeof(*r));
}

// Reads parity.bin at `path` into r. Returns 0, or -1 with the reason in msg (r left empty).
static int hf_parity_read(const char* path, HfParityRef* r, char* msg, size_t msg_n) {
    memset(r, 0, sizeof(*r));
    FILE* f = fopen(path, "rb");
    if (!f) { snprintf(msg, msg_n, "%s: cannot open", path); return -1; }
    const char* why = NULL;
    int hdr[3], tag = 0;
    if (fread(hdr, sizeof(int), 3, f) != 3) why = "truncated header";
    else if (hdr[0] <= 0 || hdr[1] <= 0 || hdr[2] <= 0 || (double)hdr[0] * hdr[1] * hdr[2] > 4e9) why = "bad header (B, T, V)";
    else {
        r->B = hdr[0]; r->T = hdr[1]; r->V = hdr[2];
        size_t n = (size_t)r->B * r->T, nv = n * r->V;
        r->tok = (int*)malloc(sizeof(int) * n);
        r->logits = (float*)malloc(sizeof(float) * nv);
        if (!r->tok || !r->logits) why = "out of memory";
        else if (fread(r->tok, sizeof(int), n, f) != n || fread(r->logits, sizeof(float), nv, f) != nv ||
                 fread(&r->loss, sizeof(double), 1, f) != 1) why = "truncated";
        else {
            size_t got = fread(&tag, 1, sizeof(int), f);  // 0 bytes: an older file, or an fp32 model
            if (got != 0 && got != sizeof(int)) why = "truncated section tag";
            else if (got && tag != HF_PARITY_TRUTH_VERSION) why = "unknown section tag (newer script?)";
            else if (got) {
                r->truth = (float*)malloc(sizeof(float) * nv);
                if (!r->truth) why = "out of memory";
                else if (fread(r->truth, sizeof(float), nv, f) != nv || fread(&r->truth_loss, sizeof(double), 1, f) != 1)
                    why = "truncated truth";
            }
            if (!why && fgetc(f) != EOF) why = "trailing bytes";
        }
    }
    fclose(f);
    if (why) { snprintf(msg, msg_n, "%s: %s", path, why); hf_parity_ref_free(r); return -1; }
    return 0;
}

typedef struct { double l2, max; } HfParityErr;
// ||a - b||2 / ||b||2 and max |a - b| / max |b| over n values.
static HfParityErr hf_parity_err(const float* a, const float* b, size_t n) {
    double dd = 0, bb = 0, dm = 0, bm = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        dd += d * d; bb += (double)b[i] * b[i];
        dm = fmax(dm, fabs(d)); bm = fmax(bm, fabs((double)b[i]));
    }
    HfParityErr e = {sqrt(dd / (bb > 0 ? bb : 1)), dm / (bm > 0 ? bm : 1)};
    return e;
}

TEST(hf_parity_reader_reads_old_and_truth_files_and_refuses_damaged_ones) {
    char dir[64], path[128], msg[256];
    test_mkdtemp(dir, sizeof(dir), "hfparity");
    snprintf(path, sizeof(path), "%s/parity.bin", dir);
    const int B = 2, T = 3, V = 5, n = B * T;
    int tok[n];
    float lg[n * V], tr[n * V];
    for (int i = 0; i < n; i++) tok[i] = i % V;
    for (int i = 0; i < n * V; i++) { lg[i] = 0.25f * i - 3; tr[i] = lg[i] + 1e-3f * (i % 7); }
    const double loss = 1.625, truth_loss = 1.5;
    const int tag = HF_PARITY_TRUTH_VERSION, bad_tag = 3;
    for (int form = 0; form < 6; form++) {  // old, truth, truncated, bad tag, trailing byte, truncated truth
        FILE* f = fopen(path, "wb");
        int hdr[3] = {B, T, V};
        fwrite(hdr, sizeof(int), 3, f); fwrite(tok, sizeof(int), n, f); fwrite(lg, sizeof(float), n * V, f);
        if (form != 2) fwrite(&loss, sizeof(double), 1, f);
        if (form == 1 || form == 5) { fwrite(&tag, sizeof(int), 1, f); fwrite(tr, sizeof(float), n * V - (form == 5), f); }
        if (form == 1) fwrite(&truth_loss, sizeof(double), 1, f);
        if (form == 3) { fwrite(&bad_tag, sizeof(int), 1, f); fwrite(tr, sizeof(float), n * V, f); fwrite(&truth_loss, sizeof(double), 1, f); }
        if (form == 4) fputc(0, f);
        fclose(f);
        HfParityRef r;
        int rc = hf_parity_read(path, &r, msg, sizeof(msg));
        if (form >= 2) { CHECK(rc != 0 && r.tok == NULL, "damaged form %d was accepted", form); continue; }
        CHECK(rc == 0, "form %d: %s", form, msg);
        if (rc != 0) continue;
        CHECK(r.B == B && r.T == T && r.V == V && r.loss == loss, "form %d header/loss", form);
        CHECK(memcmp(r.tok, tok, sizeof(tok)) == 0 && memcmp(r.logits, lg, sizeof(lg)) == 0, "form %d tokens/logits", form);
        if (form == 0) CHECK(r.truth == NULL, "an old file has no truth");
        else CHECK(r.truth && memcmp(r.truth, tr, sizeof(tr)) == 0 && r.truth_loss == truth_loss, "truth section");
        hf_parity_ref_free(&r);
    }
    HfParityErr e = hf_parity_err(tr, lg, n * V), z = hf_parity_err(lg, lg, n * V);
    CHECK(e.l2 > 0 && e.l2 < e.max * 2 && e.max > 0 && z.l2 == 0 && z.max == 0, "err measures %g %g", e.l2, e.max);
    test_rmtree(dir);
}

// Layer-wise diagnostics: acts.bin, written next to parity.bin by `scripts/hf_parity.py --dump-acts`
// (little-endian): char[8] "CODAACTS"; int32 version 1; int32 count; then count entries of char[32]
// name (NUL-terminated, NUL-padded); int64 n; float32 [n] transformers bf16; float32 [n] fp32 truth.
// Names: "L<l>.<kind>" (kinds in hf_acts_coda) and "final_norm"; each is a [B*T, width] row-major
// activation. When present, hf_parity_check prints one line per entry (coda.c and transformers vs the
// truth): diagnostic only, no bar; a malformed file fails the test.
#define HF_ACTS_MAGIC "CODAACTS"
#define HF_ACTS_VERSION 1
#define HF_ACTS_NAME 32
typedef struct {
    char name[HF_ACTS_NAME];
    size_t n;
    float *hf, *truth;  // [n] each
} HfActEntry;
typedef struct {
    int count;
    HfActEntry* e;
} HfActs;

static void hf_acts_free(HfActs* a) {
    for (int i = 0; i < a->count; i++) { free(a->e[i].hf); free(a->e[i].truth); }
    free(a->e);
    memset(a, 0, sizeof(*a));
}

// Reads acts.bin at `path` into a. Returns 0, or -1 with the reason in msg (a left empty).
static int hf_acts_read(const char* path, HfActs* a, char* msg, size_t msg_n) {
    memset(a, 0, sizeof(*a));
    FILE* f = fopen(path, "rb");
    if (!f) { snprintf(msg, msg_n, "%s: cannot open", path); return -1; }
    const char* why = NULL;
    char magic[8];
    int hdr[2];
    int bad = -1;         // the entry a failure is in, or -1
    long long left = -1;  // bytes after the header, to refuse sizes the file cannot hold before allocating
    if (fseek(f, 0, SEEK_END) == 0) { left = ftell(f); fseek(f, 0, SEEK_SET); }
    if (fread(magic, 1, 8, f) != 8 || fread(hdr, sizeof(int), 2, f) != 2) why = "truncated header";
    else if (memcmp(magic, HF_ACTS_MAGIC, 8) != 0) why = "not an acts.bin (bad magic)";
    else if (hdr[0] != HF_ACTS_VERSION) why = "unknown version (newer script?)";
    else if (hdr[1] <= 0 || hdr[1] > 1000000) why = "bad entry count";
    else {
        left -= 16;
        a->e = (HfActEntry*)calloc((size_t)hdr[1], sizeof(HfActEntry));
        if (!a->e) why = "out of memory";
        for (int i = 0; !why && i < hdr[1]; i++) {
            HfActEntry* e = &a->e[i];
            bad = i;
            long long n = 0;
            if (fread(e->name, 1, HF_ACTS_NAME, f) != HF_ACTS_NAME || fread(&n, sizeof(n), 1, f) != 1) { why = "truncated entry header"; break; }
            a->count = i + 1;  // from here on e's buffers belong to a (freed on failure)
            left -= HF_ACTS_NAME + (long long)sizeof(n);
            if (memchr(e->name, 0, HF_ACTS_NAME) == NULL || e->name[0] == 0) { why = "entry name not NUL-terminated or empty"; break; }
            if (n <= 0 || (left >= 0 && n > left / 8)) { why = "bad entry size (<= 0 or past the end of the file)"; break; }
            e->n = (size_t)n;
            e->hf = (float*)malloc(sizeof(float) * e->n);
            e->truth = (float*)malloc(sizeof(float) * e->n);
            if (!e->hf || !e->truth) { why = "out of memory"; break; }
            if (fread(e->hf, sizeof(float), e->n, f) != e->n || fread(e->truth, sizeof(float), e->n, f) != e->n) { why = "truncated entry data"; break; }
            left -= 8 * n;
            bad = -1;
        }
        if (!why && fgetc(f) != EOF) why = "trailing bytes";
    }
    fclose(f);
    if (why) {
        if (bad >= 0) snprintf(msg, msg_n, "%s: %s (entry %d)", path, why, bad);
        else snprintf(msg, msg_n, "%s: %s", path, why);
        hf_acts_free(a);
        return -1;
    }
    return 0;
}

TEST(hf_acts_reader_reads_good_files_and_refuses_damaged_ones) {
    char dir[64], path[128], msg[512];
    test_mkdtemp(dir, sizeof(dir), "hfacts");
    snprintf(path, sizeof(path), "%s/acts.bin", dir);
    const int count = 2;
    const long long ns[2] = {6, 3};
    float v[12];
    for (int i = 0; i < 12; i++) v[i] = 0.5f * i - 2;
    // 0 good; 1 bad magic; 2 bad version; 3 count 0; 4 name without NUL; 5 n past the end; 6 truncated; 7 trailing byte
    for (int form = 0; form < 8; form++) {
        FILE* f = fopen(path, "wb");
        fwrite(form == 1 ? "CODAACTZ" : HF_ACTS_MAGIC, 1, 8, f);
        int hdr[2] = {form == 2 ? 2 : HF_ACTS_VERSION, form == 3 ? 0 : count};
        fwrite(hdr, sizeof(int), 2, f);
        for (int i = 0; i < count; i++) {
            char name[HF_ACTS_NAME];
            memset(name, form == 4 && i == 1 ? 'x' : 0, sizeof(name));
            if (!(form == 4 && i == 1)) snprintf(name, sizeof(name), i ? "final_norm" : "L0.resid_in");
            long long n = form == 5 && i == 1 ? 1000 : ns[i];
            fwrite(name, 1, HF_ACTS_NAME, f); fwrite(&n, sizeof(n), 1, f);
            fwrite(v, sizeof(float), ns[i], f); fwrite(v + 6, sizeof(float), ns[i] - (form == 6 && i == 1), f);
        }
        if (form == 7) fputc(0, f);
        fclose(f);
        HfActs a;
        int rc = hf_acts_read(path, &a, msg, sizeof(msg));
        if (form > 0) { CHECK(rc != 0 && a.e == NULL && a.count == 0, "damaged form %d was accepted", form); continue; }
        CHECK(rc == 0, "%s", msg);
        if (rc != 0) continue;
        CHECK(a.count == 2 && strcmp(a.e[0].name, "L0.resid_in") == 0 && strcmp(a.e[1].name, "final_norm") == 0, "names");
        CHECK(a.e[0].n == 6 && a.e[1].n == 3 && memcmp(a.e[0].hf, v, 6 * sizeof(float)) == 0 &&
              memcmp(a.e[1].truth, v + 6, 3 * sizeof(float)) == 0, "sizes/values");
        hf_acts_free(&a);
    }
    test_rmtree(dir);
}

// coda.c's copy of activation `name` (see acts.bin above) after gpu_model_forward (recompute off), on
// the device; *n its element count. NULL for a name this model has no such activation for. RoPE works
// in place on q and k, so q_pre_rope / k_pre_rope recompute the projection (the same matmul) into scratch
// (room for B*T*H*Dh values).
static const floatX* hf_acts_coda(GpuModel* g, const char* name, floatX* scratch, size_t* n) {
    const ModelConfig* c = &g->cfg;
    size_t N = (size_t)g->B * g->T, D = c->dim, F = c->ffn_dim, QD = config_qdim(c), KVD = config_kvdim(c);
    if (strcmp(name, "final_norm") == 0) { *n = N * D; return g->hf; }
    int l = -1;
    char kind[HF_ACTS_NAME] = "", canon[2 * HF_ACTS_NAME];
    if (sscanf(name, "L%d.%31s", &l, kind) != 2 || l < 0 || l >= c->n_layers || g->recompute) return NULL;
    snprintf(canon, sizeof(canon), "L%d.%s", l, kind);
    if (strcmp(canon, name) != 0) return NULL;
    LayerActs* a = gm_layer_acts(g, l);
    floatX* x = g->resid + (size_t)l * N * D;
    if (strcmp(kind, "resid_in") == 0) { *n = N * D; return x; }
    if (strcmp(kind, "attn_norm") == 0) { *n = N * D; return a->hn1; }
    if (strcmp(kind, "q_pre_rope") == 0) {
        matmul_forward(&g->ctx, scratch, a->hn1, gm_param(g, PK_Q, l), NULL, (int)N, (int)D, (int)QD);
        *n = N * QD; return scratch;
    }
    if (strcmp(kind, "k_pre_rope") == 0) {
        matmul_forward(&g->ctx, scratch, a->hn1, gm_param(g, PK_K, l), NULL, (int)N, (int)D, (int)KVD);
        *n = N * KVD; return scratch;
    }
    if (strcmp(kind, "v") == 0) { *n = N * KVD; return a->v; }
    if (strcmp(kind, "attn_pre_o") == 0) { *n = N * QD; return a->attn_out; }
    if (strcmp(kind, "resid_mid") == 0) { *n = N * D; return a->resid_mid; }
    if (strcmp(kind, "mlp_norm") == 0) { *n = N * D; return a->hn2; }
    if (strcmp(kind, "gate") == 0) { *n = N * F; return a->mlp_gate; }
    if (strcmp(kind, "up") == 0) { *n = N * F; return a->mlp_up; }
    if (strcmp(kind, "mlp_act") == 0) { *n = N * F; return a->mlp_act; }
    if (strcmp(kind, "resid_out") == 0) { *n = N * D; return x + N * D; }
    return NULL;
}

// Prints, for each activation in acts.bin, coda.c's and transformers bf16's rel L2 error against the
// fp32 truth (and their ratio) and coda.c vs transformers. Call after gpu_model_forward with recompute off.
static void hf_acts_report(GpuModel* g, const char* dir, const char* path) {
    char msg[4600];
    HfActs acts;
    if (hf_acts_read(path, &acts, msg, sizeof(msg)) != 0) { CHECK(0, "%s", msg); return; }
    CHECK(!g->recompute, "layer activations need recompute off");
    size_t N = (size_t)g->B * g->T;
    size_t cap = N * (size_t)(config_qdim(&g->cfg) > g->cfg.ffn_dim ? config_qdim(&g->cfg) : g->cfg.ffn_dim);
    floatX* scratch = (floatX*)cuda_malloc_or_die(sizeof(floatX) * N * config_qdim(&g->cfg), "acts scratch");
    float* host = (float*)malloc(sizeof(float) * cap);
    printf("acts | %s | activation | n | rel L2 coda~truth | rel L2 HF~truth | ratio | rel L2 coda~HF | max coda~truth | max HF~truth |\n", dir);
    for (int i = 0; i < acts.count; i++) {
        HfActEntry* e = &acts.e[i];
        size_t n = 0;
        const floatX* d = hf_acts_coda(g, e->name, scratch, &n);
        if (!d) { printf("acts | %s | %s | %zu | (no coda.c counterpart: skipped) |\n", dir, e->name, e->n); continue; }
        if (n != e->n || n > cap) {
            CHECK(0, "%s: %s has %zu values, coda.c's has %zu (acts.bin from another shape?)", path, e->name, e->n, n);
            continue;
        }
        cudaCheck(cudaStreamSynchronize(g->ctx.stream));
        floatX_to_host(host, d, n);
        HfParityErr ct = hf_parity_err(host, e->truth, n), ht = hf_parity_err(e->hf, e->truth, n), ch = hf_parity_err(host, e->hf, n);
        printf("acts | %s | %s | %zu | %.3e | %.3e | %.2f | %.3e | %.3e | %.3e |\n", dir, e->name, n, ct.l2, ht.l2,
               ct.l2 / fmax(ht.l2, 1e-30), ch.l2, ct.max, ht.max);
    }
    free(host);
    cudaCheck(cudaFree(scratch));
    hf_acts_free(&acts);
}

static void hf_parity_check(const char* dir) {
    char path[4300], msg[4400];
    snprintf(path, sizeof(path), "%s/parity.bin", dir);
    HfParityRef r;
    if (hf_parity_read(path, &r, msg, sizeof(msg)) != 0) { CHECK(0, "%s", msg); return; }
    int T = r.T, V = r.V, n = r.B * r.T;
    size_t nv = (size_t)n * V;
    int* tgt = (int*)malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) tgt[i] = (i % T == T - 1) ? -1 : r.tok[i + 1];  // HF shifts labels inside the model
    CodaError err;
    ModelConfig c;
    snprintf(path, sizeof(path), "%s/config.json", dir);
    CHECK(config_read_hf(path, &c, &err) == 0, "%s", err.msg);
    CHECK(c.vocab_size == V, "%s: config vocab %d, parity.bin V %d", dir, c.vocab_size, V);
    GpuModel g;
    gpu_model_create(&g, &c, TRAIN_NONE);
    HfLoadReport rep;
    CHECK(checkpoint_load_weights(&g, dir, &rep, &err) == 0, "%s", err.msg);
    g.keep_all_acts = 1;  // hf_acts_report reads every layer's normed inputs and SwiGLU output
    gpu_model_alloc_acts(&g, r.B, T, 0, 0);
    int scored = 0;
    double loss = gpu_model_forward(&g, r.tok, tgt, 0.0f, &scored) / scored;
    float* logits = (float*)malloc(sizeof(float) * nv);
    floatX_to_host(logits, g.logits, nv);
#if defined(ENABLE_FP32)
    const double tol = 1e-5;
    const char* build = "FP32";
#else
    const double tol = 2e-2;
    const char* build = "BF16";
#endif
    // Pass: the loss within tol, and the logits within tol of transformers' -- or, when the file has the
    // truth (the same weights one precision up), coda.c at least as accurate as transformers:
    // its rel-L2 error vs the truth at most truth_ratio_bar x transformers' own. Two independent
    // roundings, each e from the truth, differ by ~1.4 e; past ~tol/1.4 no implementation can meet the
    // direct bar (a 32-layer random bf16 Mistral-7B is ~6% from its fp32 truth in transformers
    // itself), so there the truth decides. The 1.25 leaves room for a different but equally good
    // summation order (measured: 0.93 in bf16 at 2, 8 and 32 layers, dev/test/GPU_RESULTS.md).
    const double truth_ratio_bar = 1.25;
    HfParityErr vs_hf = hf_parity_err(logits, r.logits, nv);
    double loss_rel = fabs(loss - r.loss) / fmax(fabs(r.loss), 1e-30);
    const char* truth_name = sizeof(floatX) == 2 ? "fp32" : "fp64";
    printf("    %s: loss coda.c %.7f vs transformers %.7f (rel diff %.2e)", dir, loss, r.loss, loss_rel);
    if (r.truth) printf(", %s truth %.7f", truth_name, r.truth_loss);
    printf("\n    %s: logits coda.c vs transformers: rel L2 err %.3g, max|diff|/max|logit| %.3g\n", dir, vs_hf.l2, vs_hf.max);
    char tcols[256] = "- | - | - | - | -";
    int as_accurate = 0;
    if (r.truth) {
        HfParityErr ct = hf_parity_err(logits, r.truth, nv), ht = hf_parity_err(r.logits, r.truth, nv);
        const double ratio = ct.l2 / fmax(ht.l2, 1e-30);
        as_accurate = ct.l2 <= truth_ratio_bar * ht.l2;
        printf("    %s: vs the %s truth: coda.c rel L2 err %.3g, max %.3g; transformers rel L2 err %.3g, max %.3g; "
               "ratio %.2f (bar %.2f)\n", dir, truth_name, ct.l2, ct.max, ht.l2, ht.max, ratio, truth_ratio_bar);
        snprintf(tcols, sizeof(tcols), "%.2e | %.2e | %.2f | %.2e | %.2e", ct.l2, ht.l2, ratio, ct.max, ht.max);
    }
    const int logits_ok = vs_hf.l2 <= tol || as_accurate, ok = logits_ok && loss_rel <= tol;
    // one row for scripts/gpu_checks.sh's table (stage parity-7b-sweep)
    printf("parity-row | %s | %s | %d | %.2e | %.2e | %.2e | %s | %s |\n", dir, build, c.n_layers, loss_rel, vs_hf.l2,
           vs_hf.max, tcols, ok ? "pass" : "FAIL");
    CHECK(logits_ok, "%s: logits rel L2 err %.3g vs transformers > %.0e and %s", dir, vs_hf.l2, tol,
          r.truth ? "coda.c is less accurate than transformers vs the truth (ratio above the bar)" : "no truth in the file");
    CHECK_CLOSE(loss, r.loss, 0, tol);
    snprintf(path, sizeof(path), "%s/acts.bin", dir);  // layer-wise diagnostics, when the script wrote them
    FILE* af = fopen(path, "rb");
    if (af) { fclose(af); hf_acts_report(&g, dir, path); }
    free(logits); free(tgt);
    hf_parity_ref_free(&r);
    gpu_model_free(&g);
}

GPU_TEST(gpu_hf_parity) {
    // Directories from `scripts/hf_parity.py` for this build's precision (see dev/test/GPU_RESULTS.md),
    // or exactly those listed, colon-separated, in CODA_HF_PARITY_DIRS (then a missing one fails).
    const char* only = getenv("CODA_HF_PARITY_DIRS");
    if (only && only[0]) {
        char list[8192], *save = NULL;
        snprintf(list, sizeof(list), "%s", only);
        for (char* d = strtok_r(list, ":", &save); d; d = strtok_r(NULL, ":", &save)) hf_parity_check(d);
        return;
    }
#if defined(ENABLE_FP32)
    const char* dirs[] = {"data/hf_parity/tiny_fp32", "data/hf_parity/mistral7b_fp32"};
#else
    const char* dirs[] = {"data/hf_parity/tiny_bf16", "data/hf_parity/mistral7b_bf16"};
#endif
    int found = 0;
    for (int i = 0; i < 2; i++) {
        char p[4300];
        snprintf(p, sizeof(p), "%s/parity.bin", dirs[i]);
        FILE* f = fopen(p, "rb");
        if (!f) continue;
        fclose(f);
        found++;
        hf_parity_check(dirs[i]);
    }
    if (!found) test_skip("no data/hf_parity/* directories: run scripts/hf_parity.py first (needs torch + transformers)");
}
