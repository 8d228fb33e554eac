// needle_gpu.cuh — the needle demo (needle.h; docs/protocol.md §4) on the GPU, in the build's precision: the
// same layer weights and inputs as the CPU run (needle_inputs), the keys, values and write gates
// computed by the GPU kernels the trainer uses (cuBLASLt projections, RoPE, write_gate.cuh), then the
// bank scan (bank_scan.cuh) over the whole sequence in blocks. The scan's tape holds the bank each
// block attends to, i.e. the state BEFORE a block's write; the state after the last write is read as
// the snapshot of one extra block of background tokens appended to the sequence (its own tokens are
// never seen: a snapshot is taken before the block's write). The sequence length must therefore be a
// multiple of the block (the demo's 256, 1K, 4K, 16K ... are).
//
// Retained = the needle's key (its RoPE'd k row) has cosine > 0.999 with a slot of the final ring
// (the last W tokens: the key itself when pos >= T - W) or an allowed exact-bank slot, max over KV
// heads — as needle_run decides it on the CPU.
#pragma once
#include "bank_scan.cuh"
#include "matmul.cuh"
#include "needle.h"
#include "rope.cuh"
#include "write_gate.cuh"

static inline int needle_run_gpu(const GpuContext* ctx, const ModelConfig* cfg, int length, int pos, double needle_scale, uint64_t seed,
                                 NeedleResult* r, CodaError* err) {
    memset(r, 0, sizeof(*r));
    r->length = length;
    r->pos = pos;
    ModelConfig c = *cfg;
    if (length % c.block_size != 0)
        return coda_errorf(err, "needle (GPU): the length %d must be a multiple of the block %d", length, c.block_size);
    NeedleInputs in;
    if (needle_inputs(&c, length, pos, needle_scale, seed, &in, err) != 0) return -1;
    const int D = c.dim, Dh = c.head_dim, Hkv = c.n_kv_heads, kvd = config_kvdim(&c), Me = c.n_exact, Mb = c.n_exact + c.n_summary;
    const int T = length + c.block_size;  // one more block: its snapshot is the final state
    const size_t TD = (size_t)T * D;
    float* x = (float*)coda_malloc_or_die(sizeof(float) * TD, "needle inputs");
    memcpy(x, in.x, sizeof(float) * (size_t)length * D);
    for (size_t i = (size_t)length * D; i < TD; i++) x[i] = x[i - D];  // background: copies of the last token
    floatX* d_x = (floatX*)cuda_malloc_or_die(sizeof(floatX) * TD, "needle inputs");
    floatX* d_w = (floatX*)cuda_malloc_or_die(sizeof(floatX) * (2 * (size_t)kvd * D + D + 1 + Hkv), "needle weights");
    floatX *d_wk = d_w, *d_wv = d_wk + (size_t)kvd * D, *d_u = d_wv + (size_t)kvd * D, *d_b = d_u + D, *d_eta = d_b + 1;
    host_to_floatX(d_x, x, TD);
    host_to_floatX(d_wk, in.w.wk, (size_t)kvd * D);
    host_to_floatX(d_wv, in.w.wv, (size_t)kvd * D);
    host_to_floatX(d_u, in.w.write_w, D);
    host_to_floatX(d_b, in.w.write_b, 1);
    host_to_floatX(d_eta, in.w.eta, Hkv);
    floatX* d_k = (floatX*)cuda_malloc_or_die(sizeof(floatX) * (size_t)T * kvd * 2, "needle keys");
    floatX* d_v = d_k + (size_t)T * kvd;
    float* d_gate = (float*)cuda_malloc_or_die(sizeof(float) * T, "needle gates");
    matmul_forward(ctx, d_k, d_x, d_wk, NULL, T, D, kvd);
    matmul_forward(ctx, d_v, d_x, d_wv, NULL, T, D, kvd);
    rope_apply(ctx, d_k, T, T, 0, Hkv, Dh, c.rope_layout, config_rope_base(&c), c.rope_bf16_positions, +1);
    write_gate_forward(ctx, d_gate, d_x, d_u, d_b, T, D, c.write_policy == WRITE_POLICY_GATED);
    BankScanShape bs;
    memset(&bs, 0, sizeof(bs));
    bs.cfg = c; bs.B = 1; bs.T = T; bs.n_blocks = T / c.block_size;
    void* tape_mem = cuda_malloc_or_die(bank_tape_bytes(&bs), "needle bank tape");
    void* scratch = cuda_malloc_or_die(bank_scan_scratch_bytes(&bs), "needle bank scratch");
    BankTape tape;
    bank_tape_carve(&tape, tape_mem, &bs);
    bank_scan_forward(ctx, &bs, d_k, d_v, d_gate, d_eta, NULL, &tape, scratch);
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    // the needle's key and gate, the final ring (last W of the first `length` tokens) and exact bank
    const int last = bs.n_blocks - 1;
    float* kn = (float*)coda_malloc_or_die(sizeof(float) * kvd, "needle key");
    floatX_to_host(kn, d_k + (size_t)pos * kvd, kvd);
    float g = 0;
    cudaCheck(cudaMemcpy(&g, d_gate + pos, sizeof(float), cudaMemcpyDeviceToHost));
    r->needle_gate = g;
    r->best_cos = -2;
    r->slot = -1;
    const int ring0 = length - c.window > 0 ? length - c.window : 0;
    if (pos >= ring0) {  // still in the ring: the slot holds the needle's own key
        r->best_cos = 1.0;
        r->slot = pos - ring0;
        r->slot_src = pos;
    }
    if (Me > 0) {
        unsigned char* allowed = (unsigned char*)coda_malloc_or_die((size_t)Mb, "needle allowed");
        int* src = (int*)coda_malloc_or_die(sizeof(int) * Me, "needle sources");
        float* bk = (float*)coda_malloc_or_die(sizeof(float) * (size_t)Hkv * Mb * Dh, "needle bank keys");
        cudaCheck(cudaMemcpy(allowed, tape.allowed + (size_t)last * Mb, Mb, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(src, tape.src + (size_t)last * Me, sizeof(int) * Me, cudaMemcpyDeviceToHost));
        floatX_to_host(bk, tape.k + (size_t)last * Hkv * Mb * Dh, (size_t)Hkv * Mb * Dh);
        for (int m = 0; m < Me; m++) {
            if (!allowed[m]) continue;
            r->exact_used++;
            for (int h = 0; h < Hkv; h++) {
                double cosv = cosine_f32(kn + (size_t)h * Dh, bk + ((size_t)h * Mb + m) * Dh, Dh);
                if (cosv > r->best_cos) { r->best_cos = cosv; r->slot = c.window + m; r->slot_src = src[m]; }
            }
        }
        free(allowed); free(src); free(bk);
    }
    r->retained = r->best_cos > 0.999;
    r->where = r->retained ? (r->slot < c.window ? 1 : 2) : 0;
    free(kn);
    free(x);
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_k)); cudaCheck(cudaFree(d_gate));
    cudaCheck(cudaFree(tape_mem)); cudaCheck(cudaFree(scratch));
    needle_inputs_free(&in);
    return 0;
}
