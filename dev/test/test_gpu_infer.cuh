// test_gpu_infer.cuh — the GPU perplexity backend (llmc/ppl_gpu.cuh) against the CPU reference's
// (ppl.h's CpuScorer) on the same weights and tokens: the sliding-window (docs/protocol.md §3.1) and
// chunked (§3.2a/b) procedures, unbounded and bounded (random-normal bank init, as at inference);
// the streaming procedure (§3.2c) is refused on the GPU with a message saying what to do.
#pragma once
#include "../../llmc/ppl_gpu.cuh"
#include "test_gpu_bounded.cuh"

#if defined(ENABLE_FP32)
static const double GPU_PPL_TOL = 2e-5;  // relative, on the mean NLL: only summation order differs
#else
static const double GPU_PPL_TOL = 1e-2;  // bf16 weights and activations
#endif

static void gpu_ppl_vs_cpu(ModelConfig c, uint64_t seed) {
    Model_f32 cpu;
    model_init_f32(&cpu, &c, seed);
    perturb_params_f32(&cpu, seed + 1, 0.3);
    GpuModel g;
    gpu_model_create(&g, &c, TRAIN_NONE);
    gpu_model_load_host(&g, cpu.params);
#if !defined(ENABLE_FP32)
    gpu_model_read_host(&g, cpu.params);  // the CPU gets the same bf16-rounded weights
#endif
    const int n = 300, ctx = 100;
    int* tok = (int*)malloc(sizeof(int) * n);
    random_tokens(tok, n, c.vocab_size, seed + 2);
    CpuScorer cs;
    GpuScorer gs;
    PplScorer sc = cpu_scorer(&cs, &cpu, 42), sg = gpu_scorer(&gs, &g, ctx, 0, 42);
    struct { PplProcedure p; int ctx, stride, partial; const char* name; } procs[] = {
        {PPL_SLIDING, ctx, 30, 0, "sliding 100/30"}, {PPL_CHUNKED, ctx, 0, 0, "chunked 100"}, {PPL_CHUNKED, 64, 0, 1, "chunked 64 + partial"}};
    CodaError err;
    for (const auto& pr : procs) {
        PplResult rc, rg;
        CHECK(ppl_run(&sc, pr.p, tok, n, pr.ctx, pr.stride, 0, pr.partial, &rc, &err) == 0, "CPU %s: %s", pr.name, err.msg);
        CHECK(ppl_run(&sg, pr.p, tok, n, pr.ctx, pr.stride, 0, pr.partial, &rg, &err) == 0, "GPU %s: %s", pr.name, err.msg);
        const double mc = ppl_mean_nll(&rc), mg = ppl_mean_nll(&rg), rel = fabs(mg - mc) / fabs(mc);
        printf("    %s %s%s: %lld targets, mean NLL CPU %.7f GPU %.7f (rel %.2e), ppl %.4f / %.4f\n", PRECISION_NAME, c.bounded ? "bounded " : "",
               pr.name, (long long)rg.n_scored, mc, mg, rel, ppl_value(&rc), ppl_value(&rg));
        CHECK(rg.n_scored == rc.n_scored && rg.n_forwards == rc.n_forwards, "%s: scored %lld / %lld, windows %d / %d", pr.name,
              (long long)rg.n_scored, (long long)rc.n_scored, rg.n_forwards, rc.n_forwards);
        CHECK(rel <= GPU_PPL_TOL, "%s: mean NLL rel diff %.3g > %.1g", pr.name, rel, GPU_PPL_TOL);
    }
    if (c.bounded) {  // one state through every chunk: not on the GPU yet, said so
        PplResult rg;
        CHECK(ppl_run(&sg, PPL_STREAMING, tok, n, ctx, 0, 50, 0, &rg, &err) != 0 && strstr(err.msg, "--device cpu"), "%s", err.msg);
    }
    gpu_scorer_free(&gs);
    cpu_scorer_free(&cs);
    free(tok);
    gpu_model_free(&g);
    model_free_f32(&cpu);
}

GPU_TEST(gpu_ppl_unbounded_coda_matches_cpu_reference) { gpu_ppl_vs_cpu(gpu_test_config(1, 0), 61); }
GPU_TEST(gpu_ppl_bounded_matches_cpu_reference) {
    ModelConfig c = gpu_bounded_config(1, 1, 1);
    c.mem_init = MEM_INIT_RANDOM_NORMAL;  // inference: the summary bank routes against random prototypes
    gpu_ppl_vs_cpu(c, 71);
}
