// test_gpu_bounded.cuh — the whole GPU model with bounded attention layers (phase 2: write gate, bank
// scan, bounded attention, reverse scan) against the CPU reference's training forward and backward
// (a fresh zero state per row, docs/spec.md §2.5): logits, loss and every parameter gradient, with
// detach_evicted on (the paper) and off, the cross-block cut, unused memory attended, GQA and CoDA,
// recompute; and the property that a bounded model on a sequence no longer than its window is the
// unbounded model (nothing is ever evicted), bit for bit.
#pragma once
#include "../../llmc/needle_gpu.cuh"
#include "test_gpu_model.cuh"

// A small bounded config whose blocks evict into both banks within T = 100: W = 24, block 32 (W is
// not a multiple of the block), Me = Ms = 8, 4 exact / 8 summary candidates per block.
static ModelConfig gpu_bounded_config(int differential, int detach, int cross_block) {
    ModelConfig c = gpu_test_config(differential, 0);
    c.bounded = 1;
    c.window = 24; c.block_size = 32; c.n_exact = 8; c.n_summary = 8;
    c.exact_candidates_per_block = 4; c.summary_candidates_per_block = 8;
    c.detach_evicted = detach; c.cross_block_grad = cross_block;
    c.eta_init_logit = -1.0f;
    return c;
}

GPU_TEST(gpu_bounded_coda_detached_matches_cpu_reference) { gpu_vs_cpu(gpu_bounded_config(1, 1, 1), 2, 100, 0); }
GPU_TEST(gpu_bounded_coda_through_banks_matches_cpu_reference) { gpu_vs_cpu(gpu_bounded_config(1, 0, 1), 2, 100, 0); }
GPU_TEST(gpu_bounded_coda_cut_between_blocks_matches_cpu_reference) {
    ModelConfig c = gpu_bounded_config(1, 0, 0);
    c.window = 40;  // W > block: the cut hides ring keys older than the previous block
    gpu_vs_cpu(c, 2, 100, 0);
}
GPU_TEST(gpu_bounded_gqa_unmasked_memory_matches_cpu_reference) {
    ModelConfig c = gpu_bounded_config(0, 1, 1);
    c.mask_unused_memory = 0;
    gpu_vs_cpu(c, 2, 90, 0);
}
GPU_TEST(gpu_bounded_coda_recompute_matches_cpu_reference) {
    ModelConfig c = gpu_bounded_config(1, 0, 1);
    c.head_norm = HEAD_NORM_FULL; c.rope_layout = ROPE_INTERLEAVED;
    c.candidate_order = CAND_ORDER_REFERENCE;
    gpu_vs_cpu(c, 3, 70, 1);
}

// T <= W: no token is ever evicted, so every block sees its whole causal prefix and the banks stay
// empty: the bounded model's loss and logits equal the unbounded model's on the same weights, bit for
// bit (both run the same arithmetic: the bounded kernels walk the same tiles from key 0).
GPU_TEST(gpu_bounded_equals_unbounded_within_the_window) {
    ModelConfig u = gpu_test_config(1, 0);
    ModelConfig bnd = u;
    bnd.bounded = 1; bnd.window = 64; bnd.block_size = 16; bnd.n_exact = 8; bnd.n_summary = 8;
    const int B = 2, T = 64, n = B * T;
    GpuModel gu, gb;
    gpu_model_create(&gu, &u, TRAIN_ALL);
    gpu_model_create(&gb, &bnd, TRAIN_ALL);
    gpu_model_init_random(&gu, 5, 0);
    gpu_model_init_random(&gb, 5, 0);
    // the shared tensors get the unbounded model's values (the bounded table has write gate and eta too)
    for (int i = 0; i < gu.table.n; i++) {
        const ParamTensor* t = &gu.table.tensors[i];
        const ParamTensor* tb = param_find(&gb.table, t->kind, t->layer);
        cudaCheck(cudaMemcpy(gb.params + tb->offset, gu.params + t->offset, t->numel * sizeof(floatX), cudaMemcpyDeviceToDevice));
    }
    gpu_model_alloc_acts(&gu, B, T, 0, 0);
    gpu_model_alloc_acts(&gb, B, T, 0, 0);
    int tok[128], tgt[128];
    random_tokens(tok, n, u.vocab_size, 31);
    random_tokens(tgt, n, u.vocab_size, 32);
    double lu = gpu_model_forward(&gu, tok, tgt, 0.0f, NULL), lb = gpu_model_forward(&gb, tok, tgt, 0.0f, NULL);
    CHECK(lu == lb, "loss sums differ: unbounded %.9g, bounded %.9g", lu, lb);
    size_t nl = (size_t)n * u.vocab_size;
    floatX* a = (floatX*)malloc(nl * sizeof(floatX));
    floatX* b = (floatX*)malloc(nl * sizeof(floatX));
    cudaCheck(cudaMemcpy(a, gu.logits, nl * sizeof(floatX), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(b, gb.logits, nl * sizeof(floatX), cudaMemcpyDeviceToHost));
    CHECK(memcmp(a, b, nl * sizeof(floatX)) == 0, "logits differ");
    free(a); free(b);
    gpu_model_free(&gu);
    gpu_model_free(&gb);
}

// The needle demo (docs/protocol.md §4) through the GPU kernels in the build's precision, at the demo's
// 256, 1K, 4K and 16K tokens (the needle at 64 has left the W = 128 ring at every length): with
// coda.c's candidate order the exact bank holds it; with the reference's literal
// order the FP32 build loses it as the reference loses it in fp32 (the BF16 result is printed: coda.c's
// gates are fp32 in both builds, so they do not tie as the reference's bf16 gates do).
GPU_TEST(gpu_needle_demo_candidate_orders) {
    GpuContext ctx;
    gpu_context_init(&ctx);
    ConfigOverrides ov = overrides_none();
    ModelConfig c = needle_config(&ov);
    const int lengths[] = {256, 1024, 4096, 16384};
    for (int order = 0; order < 2; order++) {
        c.candidate_order = order ? CAND_ORDER_REFERENCE : CAND_ORDER_BY_GATE;
        for (int i = 0; i < 4; i++) {
            NeedleResult r;
            CodaError err;
            CHECK(needle_run_gpu(&ctx, &c, lengths[i], 64, 5.0, 0, &r, &err) == 0, "%s", err.msg);
            printf("    %s %-9s length %5d: %s (best cosine %.6f, slot %d holding %lld, needle gate %.4f, exact slots used %d/%d)\n",
                   PRECISION_NAME, order ? "reference" : "by_gate", lengths[i], r.retained ? "retained" : "LOST", r.best_cos, r.slot,
                   (long long)r.slot_src, r.needle_gate, r.exact_used, c.n_exact);
            if (!order)
                CHECK(r.retained && r.where == 2 && r.slot_src == 64 && r.exact_used == 1, "by_gate, length %d: retained %d where %d src %lld",
                      lengths[i], r.retained, r.where, (long long)r.slot_src);
            else if (sizeof(floatX) == 4)
                CHECK(!r.retained && r.exact_used == 0, "reference order (FP32), length %d: retained %d, %d exact slots used", lengths[i],
                      r.retained, r.exact_used);
        }
    }
    gpu_context_free(&ctx);
}
