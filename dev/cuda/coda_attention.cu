// coda_attention.cu — benchmark of llmc/coda_attention.cuh (llm.c style: CPU check, then timing).
//   make coda_attention && ./coda_attention [reps] [time the fp32-FMA baseline: 1 (default) / 0] [T,T,..]
//   (the third argument replaces the shapes of 2. and 3. by the Mistral-7B head shape at those lengths:
//   e.g. `./coda_attention 5 0 512,1024,4096` for where AUTO should switch backwards)
// 1. CPU check: one case per implementation and head dim against the fp64 CPU reference chain
//    (dev/test/test_gpu_attention.cuh).
// 2. Timing at the Mistral-7B attention shape (B=1, H=32, Hkv=8, Dh=128), T = 2048 and 8192, and the
//    SmolLM2-135M shape (B=8, T=2048, H=9, Hkv=3, Dh=64); CoDA (differential, head norm) and plain GQA;
//    the fp32-FMA kernels and (BF16 build) the tensor-core kernels (mma.sync; wgmma where the device and
//    the binary have sm_90a) side by side: median ms of forward
//    and backward, TFLOP/s counted the FlashAttention way (forward 4*Dh per visible (query, key) pair
//    per stream and head, backward 2.5x the forward; the two-pass backwards really do 3.5x: S and P
//    are formed in the dK/dV pass and again in the dQ pass; the one-pass backward does the 2.5x).
// 3. Bounded (phase 2, the medium state) next to causal attention at the same shapes, each tensor-core version.
// The versions (CodaAttnImpl), each checked in 1. and timed in 2.:
//   fp32-FMA  CA_IMPL_FMA    CUDA cores, fp32: the exact reference kernels of the FP32 build
//   mma.sync  CA_IMPL_MMA    tensor cores per warp (coda_attention_mma.cuh): any GPU since Ampere
//   wgmma     CA_IMPL_WGMMA  Hopper warpgroup MMA, one warpgroup per stream, software-pipelined within
//                            it; every thread loads the next K/V tile (coda_attention_wgmma.cuh)
//   ws        CA_IMPL_WS     the forward warp-specialized: a producer warpgroup stages Q and K/V through
//                            an mbarrier ring (causal key sets by TMA from one thread), the stream
//                            warpgroups only compute; backward as wgmma (coda_attention_ws.cuh)
//   fused     CA_IMPL_FUSED  ws's forward, the backward in one pass (coda_attention_fused_bwd.cuh): dQ from
//                            the dS the dK/dV pass forms (no recomputed S, dP), added to fp32 accumulators
//                            in L2 in a fixed order; tiles by TMA, CoDA's two streams stacked into the 64
//                            rows of S^T's and dQ's products; causal key sets at Dh 128 (else the wgmma backward)
// The side-by-side baseline, PyTorch's scaled_dot_product_attention at the same shapes in the same
// call: python3 dev/cuda/sdpa_baseline.py (cuDNN and FlashAttention-2 backends); the two outputs into
// dev/cuda/attention_targets.py give issue 15's ratio table (scripts/gpu_checks.sh bench-attention).
#include <algorithm>
#include <vector>
#include "dev/cuda/bench_common.cuh"
#include "dev/test/harness.h"
#include "dev/test/test_gpu_attention.cuh"

int main(int argc, char** argv) {
    const int reps = bench_int_arg(argc, argv, 1, "reps", 5, 1, 100000);
    const int fma_baseline = bench_int_arg(argc, argv, 2, "time the fp32-FMA baseline", 1, 0, 1);  // 0: skip the slow kernels
    int* lens = NULL;  // the third argument: lengths of the 7B head shape instead of the default shapes
    int n_lens = 0;
    CodaError err;
    if (argc > 4 || (argc > 3 && cli_parse_int_list("lengths", argv[3], 1, &lens, &n_lens, &err) != 0)) {
        fprintf(stderr, "coda_attention: %s\nusage: %s [reps] [0|1] [T,T,..]\n", argc > 4 ? "too many arguments" : err.msg, argv[0]);
        return 2;
    }
    bench_init();
    GpuContext* ctx = &g_ctx;
    // 1. CPU check at a small Mistral-like shape, each implementation
    // implementations of this build and device: fp32 FMA; mma.sync and (sm_90a) wgmma in the BF16 build
    std::vector<CodaAttnImpl> impls = {CA_IMPL_FMA};
    if (sizeof(floatX) == 2) {
        impls.push_back(CA_IMPL_MMA);
        CodaAttnShape probe = {1, 1, 1, 1, 64, 0, 0, 0.f, CA_IMPL_AUTO};
        if (ca_use_wgmma(&probe)) {
            impls.push_back(CA_IMPL_WGMMA);
            impls.push_back(CA_IMPL_WS);
            impls.push_back(CA_IMPL_FUSED);
        }
    }
    for (CodaAttnImpl impl : impls)
        for (int Dh : {128, 64}) {
            CodaAttnShape sh = {1, 200, 32, 8, Dh, 1, 1, 1e-6f, impl};
            GaErrors e = ga_check_case(ctx, sh, 4242);
            g_current_failures = 0;
            ga_check_errors(&e, ga_attn_tol(), NULL);
            printf("CPU check %s (%s, Dh %d, tol %.1e): out %.2e dq %.2e dk %.2e dv %.2e dlam %.2e dtheta %.2e dhn %.2e\n",
                   g_current_failures ? "FAILED" : "ok", ca_impl_name(&sh), Dh, ga_attn_tol(), e.out, e.dq, e.dk, e.dv, e.dlam,
                   e.dtheta, e.dhn);
            if (g_current_failures) return 1;
        }
    // 2. timing: every implementation side by side in the same run (tensor cores only in the BF16 build)
    printf("\n| shape | T | attention | kernels | fwd ms | bwd ms | fwd TFLOP/s | bwd TFLOP/s |\n|---|---|---|---|---|---|---|---|\n");
    struct BenchShape { const char* name; int B, T, H, Hkv, Dh; };
    std::vector<BenchShape> shapes = {
        {"Mistral-7B", 1, 2048, 32, 8, 128}, {"Mistral-7B", 1, 8192, 32, 8, 128}, {"SmolLM2-135M", 8, 2048, 9, 3, 64}};
    if (n_lens > 0) {
        shapes.clear();
        for (int i = 0; i < n_lens; i++) shapes.push_back({"Mistral-7B", 1, lens[i], 32, 8, 128});
    }
for (const auto& shp : shapes) {
        for (int diff = 1; diff >= 0; diff--) {
            for (CodaAttnImpl impl : impls) {
                if (impl == CA_IMPL_FMA && fma_baseline == 0) continue;
                CodaAttnShape sh = {shp.B, shp.T, shp.H, shp.Hkv, shp.Dh, diff, diff, 1e-6f, impl};
                GaCase c;
                ga_case_init(&c, sh, 7);
                CodaAttnInputs in = ga_case_inputs(&c);
                CodaAttnSaved sv = {c.out, c.a_sig, c.a_noise, c.lse, c.hn_rstd};
                CodaAttnGrads gr = {c.dq, c.dk, c.dv, c.dlam, c.dtheta, c.dhn, NULL, NULL};
                double fwd = bench_ms([&]() { coda_attention_forward(ctx, &sh, &in, &sv); }, reps);
                double bwd = bench_ms([&]() { coda_attention_backward(ctx, &sh, &in, &sv, c.d_dout, &gr, c.scratch, c.scratch_bytes); }, reps);
                double pairs = (double)sh.B * sh.H * (diff ? 2 : 1) * ((double)sh.T * (sh.T + 1) / 2);
                double ffl = 4.0 * sh.Dh * pairs, bfl = 2.5 * ffl;
                printf("| %s B=%d | %d | %s | %s | %.2f | %.2f | %.1f | %.1f |\n", shp.name, sh.B, sh.T,
                       diff ? "CoDA (2 streams, head norm)" : "GQA (1 stream)", ca_impl_name(&sh), fwd, bwd,
                       ffl / fwd * 1e-9, bfl / bwd * 1e-9);
                fflush(stdout);
                ga_case_free(&c);
            }
        }
    }
    // 3. bounded (phase 2) next to unbounded at the same shape, each tensor-core version (or AUTO): the paper's medium
    // state (W = 256, Me = Ms = 64, block 256); the bank ~60% allowed (none in block 0). TFLOP/s over the
    // (query, key) pairs each really computes: bank slots allowed + its window + its causal block.
    printf("\n| shape | T | key set | kernels | fwd ms | bwd ms | fwd+bwd vs unbounded | fwd TFLOP/s | bwd TFLOP/s |\n|---|---|---|---|---|---|---|---|---|\n");
    std::vector<CodaAttnImpl> bimpls = {CA_IMPL_AUTO};  // the tensor-core versions of this device, else AUTO
    if (impls.size() > 2) bimpls.assign(impls.begin() + 1, impls.end());
    for (const auto& shp : shapes) {
        for (CodaAttnImpl impl : bimpls) {
            double unb = 0;
            for (int bounded = 0; bounded < 2; bounded++) {
                CodaAttnShape sh = {shp.B, shp.T, shp.H, shp.Hkv, shp.Dh, 1, 0, 1e-6f, impl};
                if (bounded) { sh.block = 256; sh.window = 256; sh.bank_slots = 128; }
                GaCase c;
                ga_case_init(&c, sh, 9);
                CodaAttnInputs in = ga_case_inputs(&c);
                CodaAttnSaved sv = {c.out, c.a_sig, c.a_noise, c.lse, c.hn_rstd};
                CodaAttnGrads gr = {c.dq, c.dk, c.dv, c.dlam, c.dtheta, c.dhn, c.dbank_k, c.dbank_v};
                double fwd = bench_ms([&]() { coda_attention_forward(ctx, &sh, &in, &sv); }, reps);
                double bwd = bench_ms([&]() { coda_attention_backward(ctx, &sh, &in, &sv, c.d_dout, &gr, c.scratch, c.scratch_bytes); }, reps);
                double pairs = 0;  // per batch row and head, both streams below
                for (int i = 0; i < sh.T; i++) {
                    if (!bounded) { pairs += i + 1; continue; }
                    const int j = i / sh.block, lo = j * sh.block - sh.window > 0 ? j * sh.block - sh.window : 0;
                    int allowed = 0;
                    for (int m = 0; m < sh.bank_slots; m++) allowed += c.allowed[(size_t)j * sh.bank_slots + m];
                    pairs += allowed + (i - lo + 1);
                }
                pairs *= (double)sh.B * sh.H * 2;
                double ffl = 4.0 * sh.Dh * pairs, bfl = 2.5 * ffl;
                if (!bounded) unb = fwd + bwd;
                printf("| %s B=%d | %d | %s | %s | %.2f | %.2f | %.2fx | %.1f | %.1f |\n", shp.name, sh.B, sh.T,
                       bounded ? "bounded medium (W 256, bank 128, block 256)" : "causal", ca_impl_name(&sh), fwd, bwd, unb / (fwd + bwd),
                       ffl / fwd * 1e-9, bfl / bwd * 1e-9);
                fflush(stdout);
                ga_case_free(&c);
            }
        }
    }
    free(lens);
    return 0;
}
