// bank_scan.cu — benchmark of llmc/bank_scan.cuh (llm.c style: CPU check, then timing).
//   make bank_scan && ./bank_scan [reps]
// 1. CPU check: cases of dev/test/test_gpu_banks.cuh's grid (every forward decision exactly, snapshot
//    contents, against llmc/cpu/banks.h; the reverse scan against the CPU's summary_write_backward +
//    keyset_scatter, with detach_evicted off and on).
// 2. Timing per layer at the Mistral-7B shape (B=1, Hkv=8, Dh=128; T=8192 and 2048) and the SmolLM2-135M
//    shape (B=8, T=2048, Hkv=3, Dh=64), both with block 256, W=256, Me=Ms=64, 8 exact / 64 summary
//    candidates per block: forward (candidate lists + scan), reverse scan with detach_evicted on (eta only)
//    and off (tokens, gates, eta). Gates uniform in [0, 1) (a trained write gate) and all equal (at init).
#include <vector>
#include "dev/cuda/bench_common.cuh"
#include "dev/test/harness.h"
#include "dev/test/test_gpu_banks.cuh"

static const GbCase* find_case(const GbCase* cases, int n, const char* name) {
    for (int i = 0; i < n; i++)
        if (strcmp(cases[i].name, name) == 0) return &cases[i];
    fprintf(stderr, "bank_scan: no test case named %s\n", name);
    exit(1);
}

int main(int argc, char** argv) {
    const int reps = bench_int_arg(argc, argv, 1, "reps", 20, 1, 100000);
    bench_init();
    GpuContext* ctx = &g_ctx;

    // 1. CPU check
    const int nf = (int)(sizeof(gb_forward_cases) / sizeof(gb_forward_cases[0]));
    const char* fwd_checks[] = {"base", "exact_hits", "gates_levels_reference", "heads_12_uneven", "smollm2_135m_shape", "mistral_7b_shape"};
    for (const char* name : fwd_checks) {
        g_current_failures = 0;
        gb_forward_case(find_case(gb_forward_cases, nf, name), ctx, 7001);
        printf("CPU check forward %-24s %s\n", name, g_current_failures ? "FAILED" : "ok");
        if (g_current_failures) return 1;
    }
    {
        const GbCase* cs = find_case(gb_backward_cases, (int)(sizeof(gb_backward_cases) / sizeof(gb_backward_cases[0])), "bwd_mistral_heads");
        GbRun R;
        gb_setup(&R, cs, 9001);
        gb_gpu_forward(&R, ctx);
        g_current_failures = 0;
        for (int detach = 0; detach < 2; detach++) {
            GbBackward e = gb_backward_flags(&R, ctx, detach, 1, 0, 555 + detach);
            CHECK(e.dk <= 2e-5 && e.dv <= 2e-5 && e.dgate <= 2e-5 && e.deta <= (gb_is_bf16 ? 3e-2 : 1e-4), "backward rel err");
        }
        printf("CPU check backward %-23s %s\n", cs->name, g_current_failures ? "FAILED" : "ok");
        gb_free(&R);
        if (g_current_failures) return 1;
    }

    // 2. timing
    printf("\n| shape | B | T | gates | CTAs/row, state | smem KB | tape MB | fwd ms | bwd ms (detach) | bwd ms (no detach) |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n");
    struct { const char* name; int B, T, Hkv, Dh; } shapes[] = {
        {"Mistral-7B", 1, 8192, 8, 128}, {"Mistral-7B", 1, 2048, 8, 128}, {"SmolLM2-135M", 8, 2048, 3, 64}};
    for (const auto& shp : shapes)
        for (int equal_gates = 0; equal_gates < 2; equal_gates++) {
            ModelConfig c = config_default();
            c.bounded = 1; c.differential = 1;
            c.n_heads = shp.Hkv; c.n_kv_heads = shp.Hkv; c.head_dim = shp.Dh; c.dim = shp.Hkv * shp.Dh;
            c.window = 256; c.block_size = 256; c.n_exact = 64; c.n_summary = 64;
            c.exact_candidates_per_block = 8; c.summary_candidates_per_block = 64;
            BankScanShape sh = {c, shp.B, shp.T, (shp.T + c.block_size - 1) / c.block_size};
            const size_t BT = (size_t)shp.B * shp.T, kvd = (size_t)shp.Hkv * shp.Dh;
            floatX* k = bench_alloc<floatX>(BT * kvd, 1);
            floatX* v = bench_alloc<floatX>(BT * kvd, 2);
            floatX* eta = bench_alloc<floatX>(shp.Hkv, 3, 0.0f, -3.0f);
            float* gate = equal_gates ? bench_alloc<float>(BT, 4, 0.0f, 0.11920292f) : bench_alloc<float>(BT, 4, 0.5f, 0.5f);
            const size_t tape_bytes = bank_tape_bytes(&sh), n_bank = (size_t)sh.B * sh.n_blocks * shp.Hkv * (c.n_exact + c.n_summary) * shp.Dh;
            void* tape_mem = cuda_malloc_or_die(tape_bytes, "bank tape");
            void* scratch = cuda_malloc_or_die(bank_scan_scratch_bytes(&sh), "bank scan scratch");
            BankTape tape;
            bank_tape_carve(&tape, tape_mem, &sh);
            float* dbank = bench_alloc<float>(2 * n_bank, 5);
            float* dacc = bench_alloc<float>(2 * BT * kvd + BT + shp.Hkv, 6, 0.0f, 0.0f);
            double fwd = bench_ms([&]() { bank_scan_forward(ctx, &sh, k, v, gate, eta, NULL, &tape, scratch); }, reps);
            double bwd[2];
            for (int detach = 1; detach >= 0; detach--) {
                BankScanShape shb = sh;
                shb.cfg.detach_evicted = detach;
                bwd[detach] = bench_ms([&]() {
                    bank_scan_backward(ctx, &shb, &tape, dbank, dbank + n_bank, k, v, eta, dacc, dacc + BT * kvd,
                                       dacc + 2 * BT * kvd, dacc + 2 * BT * kvd + BT, scratch);
                }, reps);
            }
            const BankScanPlan pl = bank_scan_plan(&sh);
            printf("| %s | %d | %d | %s | %d, %s | %.0f | %.1f | %.3f | %.3f | %.3f |\n", shp.name, shp.B, shp.T,
                   equal_gates ? "all equal (init)" : "uniform", pl.C, pl.resident ? "resident" : "staged", pl.smem / 1024.0,
                   tape_bytes / 1048576.0, fwd, bwd[1], bwd[0]);
            fflush(stdout);
            cudaCheck(cudaFree(k)); cudaCheck(cudaFree(v)); cudaCheck(cudaFree(eta)); cudaCheck(cudaFree(gate));
            cudaCheck(cudaFree(tape_mem)); cudaCheck(cudaFree(scratch)); cudaCheck(cudaFree(dbank)); cudaCheck(cudaFree(dacc));
        }
    return 0;
}
