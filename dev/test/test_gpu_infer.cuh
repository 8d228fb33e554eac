// test_gpu_infer.cuh — the GPU perplexity backend (llmc/ppl_gpu.cuh) against the CPU reference's
// (ppl.h's CpuScorer) on the same weights and tokens: the sliding-window (docs/protocol.md §3.1) and
// chunked (§3.2a/b) procedures, unbounded and bounded (random-normal bank init, as at inference), and
// for bounded models the streaming procedure (§3.2c: every chunk continues the state the one before
// left; chunks shorter than the window, longer than a block, and a short last one).
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
    const int chunks[] = {50, 10, 64, 100};  // W = 24 or 40, block 32: a chunk below W (the ring not yet full), one block + a part
    for (int ch : chunks) {
        if (!c.bounded) break;
        PplResult rc, rg;
        CHECK(ppl_run(&sc, PPL_STREAMING, tok, n, 0, 0, ch, 0, &rc, &err) == 0, "CPU streaming %d: %s", ch, err.msg);
        CHECK(ppl_run(&sg, PPL_STREAMING, tok, n, 0, 0, ch, 0, &rg, &err) == 0, "GPU streaming %d: %s", ch, err.msg);
        const double mc = ppl_mean_nll(&rc), mg = ppl_mean_nll(&rg), rel = fabs(mg - mc) / fabs(mc);
        printf("    %s bounded streaming %d: %lld targets in %d chunks, mean NLL CPU %.7f GPU %.7f (rel %.2e)\n", PRECISION_NAME, ch,
               (long long)rg.n_scored, rg.n_forwards, mc, mg, rel);
        CHECK(rg.n_scored == rc.n_scored && rg.n_forwards == rc.n_forwards, "streaming %d: scored %lld / %lld, chunks %d / %d", ch,
              (long long)rg.n_scored, (long long)rc.n_scored, rg.n_forwards, rc.n_forwards);
        CHECK(rel <= GPU_PPL_TOL, "streaming %d: mean NLL rel diff %.3g > %.1g", ch, rel, GPU_PPL_TOL);
#if defined(ENABLE_FP32)
        // the final states: the same decisions (every slot's source and flag) and counters
        BankState_f32* gst = layer_states_alloc(&c);
        gpu_decode_state_to_host(&gs.st, gst);
        int diff = 0;
        for (int l = 0; l < c.n_layers; l++) {
            for (int i = 0; i < gst[l].slots; i++) diff += gst[l].src[i] != cs.states[l].src[i] || gst[l].allowed[i] != cs.states[l].allowed[i];
            diff += gst[l].pos != cs.states[l].pos || gst[l].recent_filled != cs.states[l].recent_filled;
            for (int i = 0; i < c.n_exact; i++) diff += gst[l].last_exact[i] != cs.states[l].last_exact[i];
        }
        layer_states_free(gst, &c);
        CHECK(diff == 0, "streaming %d: %d slot sources / flags / stamps / counters of the final state differ from the CPU's", ch, diff);
#endif
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
    c.window = 40;  // W > block: a carried-in ring reaches past the first block's window start
    c.mask_unused_memory = 0;  // and the empty ring slots of a young state are attended
    gpu_ppl_vs_cpu(c, 72);
}
