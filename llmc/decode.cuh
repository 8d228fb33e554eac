// decode.cuh — single-token decode on the GPU (B = 1): the per-layer state, the step kernels, one
// step of the whole model captured as a CUDA graph, the prompt prefill that fills the state, and a
// generation session over them.
//
// Two kinds of state, one per attention kind of the model:
//   bounded   (docs/spec.md §2.1) the fixed-size state of every layer: W ring slots, Me exact and Ms
//             summary bank slots, K/V in fp32, so that it is exactly the CPU reference's BankState and
//             a state file saved here loads there and back (llmc/state_file.h). Its size does not
//             depend on the number of tokens seen.
//   unbounded an ordinary KV cache of max_len tokens per layer, floatX, token-major: the baseline.
//
// One decode step (docs/spec.md §2.4; the CPU's model_step), per layer l:
//   hn = rmsnorm(x); q, k, v, lam = hn·W (one gemv_batch launch, llmc/gemv.cuh); g = write gate (bounded)
//   RoPE q and k at p = pos[l] (read on the device, so the step is the same graph at every position)
//   bounded: write_one(state_l, k, v, g) (docs/spec.md §3.2: write first, may evict the oldest ring token
//            into the banks, §3.5 and §3.6); unbounded: append k, v at row p; then pos[l] = p + 1
//   attention of the one query (both streams) over the state's slots / the cache's p + 1 rows
//   out = combine (lam, head norm); x += out·Wo; x += down(swiglu(gate, up)(rmsnorm(x)))  (gemv, fused)
// then the final norm and the LM head give the next-token logits (fp32 on the host).
//
// Kernels (each with a CPU check in dev/test/test_gpu_decode.cuh and timed in dev/cuda/decode.cu):
//   decode_rope_kernel      one thread per rotation pair, every q and k head; position from pos[l]
//   decode_score_kernel     one CTA per bank slot: the evicted token's routing score against it
//   decode_write_kernel     one CTA: the eviction decisions of docs/spec.md §3.5/§3.6 (a warp each,
//                           lane-parallel reductions that pick the slots llmc/cpu/banks.h's loops pick)
//                           and the writes, formed exactly as banks.h forms them (sequential fp32 sums
//                           without FMA, bank_scan.cuh's sigmoid): from the same inputs both builds
//                           reach the CPU's state bit for bit
//   decode_append_kernel    the KV cache row of this token
//   decode_attention_kernel split-K ("flash decoding"): grid (KV head, split); each CTA stages a tile
//                           of 32 keys in shared memory once for all G query heads x 2 streams of its
//                           KV head (the noise query is a rotation of the signal one), online softmax
//                           in fp32; partial (max, sum, acc) per split
//   decode_combine_kernel   one CTA per query head: the splits merged in a fixed order (deterministic),
//                           then o = A_sig - sigmoid(lam) A_noise and the head norm
// The split count is fixed when the graph is built (from the longest context it must serve: one
// tile a split, at most ~4 CTAs per SM); each split takes ceil(tiles / splits) tiles of the keys
// present, counted on the device.
//
// The fast step (GpuDecoder's switches, each leaving every result the same bits):
//   use_fused    bit 1: the RMSNorms inside the following gemv (gemv.cuh's GemvOpts.norm_w: q/k/v/lambda, the
//                MLP's gate+up, the LM head); bit 2: RoPE + write gate + routing scores in one launch
//                (decode_rope_gate_score_kernel: the scores read only the state as the previous step
//                left it, so they need not wait for this token's k): 8 launches a layer instead of 12;
//                bit 4 (with 2, bounded): the write in the last CTA of that launch to finish (a ticket),
//                bit 8: the combine in the last split CTA of each KV head (a ticket per KV head):
//                6 launches a layer with all four bits. Measured slower (dev/PERF.md, v5): off by default.
//                bit 16 (with 2, not 4, bounded): the write split in two (docs/spec.md §3.2's write_one
//                decides and evicts from the state the previous step left; only the new token's slot
//                needs its k, v and gate): the routing scores and decode_evict_kernel of every layer run
//                on a second stream from the step's start, overlapped with the main chain, and the RoPE
//                launch puts the token into the slot they chose; the single-CTA write (9.5 us a layer)
//                leaves the critical path. On by default (v7)
//                bit 32 (with 1, gemv path, sm_90): the gemvs from each layer's o-proj to the next
//                layer's q/k/v/lambda (or the LM head) as the four phases of one persistent launch whose
//                weights stream through shared memory (gemv.cuh's gemv_chain, v9). Measured 4% slower
//                than the launches it replaces (dev/PERF.md, v9): off by default, kept (tested bitwise)
//                as the base of the persistent step
//   use_pdl      every launch of the step with Programmatic Dependent Launch (gemv.cuh's pdl_launch): each
//                kernel's CTAs are placed while the one before drains and wait (griddepcontrol.wait) only
//                before their first read of its results; the gemvs load weights before that wait
//   l2_prefetch_o  the attention kernel prefetches the layer's o-proj weights into L2 while it runs (HBM
//                is otherwise idle from the write to the combine), so the o-proj gemv reads them from L2
//   gemv_l2_ahead  the gemvs' L2 prefetch distance in load steps (GemvOpts.l2_ahead)
//   gemv_preload   the gemvs load a step's weights one step ahead, step 0's before the PDL wait
//   gemv_rows    rows per warp of the q/k/v/lambda, o-proj, gate+up and down gemvs (0: gemv_rows_for); the
//                q/k/v/lambda launch takes 1 by default: with the fused norm 2 rows cost 102 registers, two
//                CTAs an SM and a second wave; 1 row, 80 and three (v7: 0.07 ms a token faster)
//   chain_stages, chain_chunk, chain_poll_ns  bit 32's slots a warp, elements a slot, barrier polling
// Environment overrides for A/B runs: CODA_DECODE_PDL, CODA_DECODE_FUSED, CODA_DECODE_L2_O,
// CODA_GEMV_L2_AHEAD, CODA_GEMV_PRELOAD, CODA_GEMV_ROWS_QKV / _O / _MLP / _DOWN, CODA_CHAIN_STAGES,
// CODA_CHAIN_CHUNK (in units of 256 elements), CODA_CHAIN_POLL_NS (integers). Measured
// (dev/PERF.md, v4, v5 and v7): fusions 1, 2 and 16 and PDL pay; the tickets (fusions 4 and 8), the two
// L2 prefetches and the preload loop do not (off by default).
#pragma once
#include "bank_scan.cuh"
#include "coda_attention.cuh"
#include "gemv.cuh"
#include "cpu/reference.h"
#include "model.cuh"
#include "rope.cuh"
#include "sampling.h"
#include "session.h"
#include "state_file.h"

#define DEC_TILE 32        // keys per shared-memory tile
#define DEC_THREADS 256
#define DEC_MAXQ 16        // queries per KV head a CTA serves: G query heads x (1 or 2) streams
static_assert(DEC_TILE == 32, "the decode attention's softmax gives each lane of a warp one key of the tile");

// ---------------------------------------------------------------------------------------------
// The state

// Layout of the one allocation (no padding: every field's size keeps the next one aligned):
//   bounded:   k, v [L][Hkv][slots][Dh] f32 | src [L][slots] i64 | last_exact [L][Me] i64 | pos [L] i64 |
//              g_ring [L][W] f32 | ring [L][2] i32 (recent_idx, recent_filled) | allowed [L][slots] u8
//   unbounded: cache_k, cache_v [L][max_len][Hkv*Dh] floatX | pos [L] i64
// slots = W + Me + Ms: ring [0, W), exact bank [W, W+Me), summary bank [W+Me, slots), as the CPU's.
typedef struct {
    int bounded, L, W, Me, Ms, slots, Hkv, Dh, max_len;
    float *k, *v;
    long long *src, *last_exact, *pos;
    float* g_ring;
    int* ring;
    unsigned char* allowed;
    floatX *cache_k, *cache_v;
    void* mem;
    size_t bytes;          // of the allocation: exactly the sum of the fields
} GpuDecodeState;

// Bytes of one layer's state by field, as allocated (docs/spec.md §6's terms for what coda.c keeps).
typedef struct { size_t kv, mask, gates, lru, src, counters, total; } DecodeStateBytes;
static inline DecodeStateBytes decode_state_bytes_per_layer(const ModelConfig* c, int max_len) {
    DecodeStateBytes b;
    memset(&b, 0, sizeof(b));
    const size_t kvd = (size_t)c->n_kv_heads * c->head_dim;
    if (c->bounded) {
        const size_t slots = (size_t)config_state_slots(c);
        b.kv = 2 * kvd * slots * sizeof(float);
        b.mask = slots;
        b.gates = (size_t)c->window * sizeof(float);
        b.lru = (size_t)c->n_exact * sizeof(long long);
        b.src = slots * sizeof(long long);
        b.counters = sizeof(long long) + 2 * sizeof(int);
    } else {
        b.kv = 2 * kvd * (size_t)max_len * sizeof(floatX);
        b.counters = sizeof(long long);
    }
    b.total = b.kv + b.mask + b.gates + b.lru + b.src + b.counters;
    return b;
}

static inline size_t decode__carve(char** at, size_t bytes) {
    *at += bytes;
    return bytes;
}
// max_len: the unbounded cache's capacity in tokens (ignored when bounded).
static void gpu_decode_state_alloc(GpuDecodeState* s, const ModelConfig* c, int max_len) {
    memset(s, 0, sizeof(*s));
    s->bounded = c->bounded; s->L = c->n_layers; s->Hkv = c->n_kv_heads; s->Dh = c->head_dim;
    s->W = c->window; s->Me = c->n_exact; s->Ms = c->n_summary; s->slots = c->bounded ? config_state_slots(c) : 0;
    s->max_len = c->bounded ? 0 : max_len;
    if (!c->bounded && max_len < 1) coda_fatal("gpu_decode_state_alloc: an unbounded KV cache needs max_len >= 1");
    const size_t L = (size_t)s->L, kvd = (size_t)s->Hkv * s->Dh, slots = (size_t)s->slots;
    s->bytes = L * decode_state_bytes_per_layer(c, max_len).total;
    s->mem = cuda_malloc_or_die(s->bytes, c->bounded ? "bounded decode state" : "KV cache");
    char* at = (char*)s->mem;
    size_t used = 0;
    if (c->bounded) {
        s->k = (float*)at;              used += decode__carve(&at, L * kvd * slots * sizeof(float));
        s->v = (float*)at;              used += decode__carve(&at, L * kvd * slots * sizeof(float));
        s->src = (long long*)at;        used += decode__carve(&at, L * slots * sizeof(long long));
        s->last_exact = (long long*)at; used += decode__carve(&at, L * s->Me * sizeof(long long));
        s->pos = (long long*)at;        used += decode__carve(&at, L * sizeof(long long));
        s->g_ring = (float*)at;         used += decode__carve(&at, L * s->W * sizeof(float));
        s->ring = (int*)at;             used += decode__carve(&at, L * 2 * sizeof(int));
        s->allowed = (unsigned char*)at; used += decode__carve(&at, L * slots);
    } else {
        s->cache_k = (floatX*)at;       used += decode__carve(&at, L * (size_t)max_len * kvd * sizeof(floatX));
        s->cache_v = (floatX*)at;       used += decode__carve(&at, L * (size_t)max_len * kvd * sizeof(floatX));
        s->pos = (long long*)at;        used += decode__carve(&at, L * sizeof(long long));
    }
    if (used != s->bytes) coda_fatal("gpu_decode_state_alloc: carved %zu bytes of %zu (accounting bug)", used, s->bytes);
    cudaCheck(cudaMemset(s->mem, 0, s->bytes));
}
static void gpu_decode_state_free(GpuDecodeState* s) {
    cudaCheck(cudaFree(s->mem));
    memset(s, 0, sizeof(*s));
}

// Host copies in the CPU reference's layout (llmc/cpu/banks.h): one BankState_f32 per layer.
static void gpu_decode_state_to_host(const GpuDecodeState* s, BankState_f32* host) {
    const size_t kv = (size_t)s->Hkv * s->slots * s->Dh;
    for (int l = 0; l < s->L; l++) {
        BankState_f32* h = &host[l];
        int ring[2];
        long long pos, *src = (long long*)coda_malloc_or_die(sizeof(long long) * (s->slots + s->Me + 1), "state copy");
        cudaCheck(cudaMemcpy(h->k, s->k + l * kv, kv * sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(h->v, s->v + l * kv, kv * sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(h->allowed, s->allowed + (size_t)l * s->slots, s->slots, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(h->g_ring, s->g_ring + (size_t)l * s->W, s->W * sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(src, s->src + (size_t)l * s->slots, s->slots * sizeof(long long), cudaMemcpyDeviceToHost));
        if (s->Me) cudaCheck(cudaMemcpy(src + s->slots, s->last_exact + (size_t)l * s->Me, s->Me * sizeof(long long), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(ring, s->ring + 2 * l, sizeof(ring), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(&pos, s->pos + l, sizeof(pos), cudaMemcpyDeviceToHost));
        for (int i = 0; i < s->slots; i++) h->src[i] = src[i];
        for (int i = 0; i < s->Me; i++) h->last_exact[i] = src[s->slots + i];
        h->recent_idx = ring[0]; h->recent_filled = ring[1]; h->pos = pos;
        free(src);
    }
}
static void gpu_decode_state_from_host(GpuDecodeState* s, const BankState_f32* host) {
    const size_t kv = (size_t)s->Hkv * s->slots * s->Dh;
    for (int l = 0; l < s->L; l++) {
        const BankState_f32* h = &host[l];
        int ring[2] = {h->recent_idx, h->recent_filled};
        long long pos = h->pos, *src = (long long*)coda_malloc_or_die(sizeof(long long) * (s->slots + s->Me + 1), "state copy");
        for (int i = 0; i < s->slots; i++) src[i] = h->src[i];
        for (int i = 0; i < s->Me; i++) src[s->slots + i] = h->last_exact[i];
        cudaCheck(cudaMemcpy(s->k + l * kv, h->k, kv * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(s->v + l * kv, h->v, kv * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(s->allowed + (size_t)l * s->slots, h->allowed, s->slots, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(s->g_ring + (size_t)l * s->W, h->g_ring, s->W * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(s->src + (size_t)l * s->slots, src, s->slots * sizeof(long long), cudaMemcpyHostToDevice));
        if (s->Me) cudaCheck(cudaMemcpy(s->last_exact + (size_t)l * s->Me, src + s->slots, s->Me * sizeof(long long), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(s->ring + 2 * l, ring, sizeof(ring), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(s->pos + l, &pos, sizeof(pos), cudaMemcpyHostToDevice));
        free(src);
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels

// RoPE of one token's q [H*Dh] and k [Hkv*Dh] at position *pos (rope.cuh's arithmetic: the same bits
// as the training forward at that position).
__global__ void decode_rope_kernel(floatX* q, floatX* k, const long long* pos, int H, int Hkv, int Dh, int interleaved,
                                   int bf16_positions, const RopeFreqs freqs) {
    const int half = Dh / 2;
    pdl_wait();
    pdl_trigger();
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float c, s;
        rope_cos_sin(*pos, freqs.inv_freq[i], bf16_positions, 1.0f, c, s);
        const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        for (int h = 0; h < H; h++) rope_rotate(q[h * Dh + a], q[h * Dh + b], c, s);
        for (int h = 0; h < Hkv; h++) rope_rotate(k[h * Dh + a], k[h * Dh + b], c, s);
    }
}

// The unbounded cache: row pos of layer l's cache = this token's k, v; then pos += 1.
__global__ void decode_append_kernel(floatX* cache_k, floatX* cache_v, long long* pos, const floatX* k, const floatX* v, int kvd) {
    pdl_wait();
    pdl_trigger();
    const long long p = *pos;
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
        cache_k[p * kvd + i] = k[i];
        cache_v[p * kvd + i] = v[i];
    }
    __syncthreads();  // every thread has read pos
    if (threadIdx.x == 0) *pos = p + 1;
}

// docs/spec.md §3.2 write_one, with §3.5 (exact) and §3.6 (summary), for one layer's state.
typedef struct {
    float *k, *v;                 // [Hkv][slots][Dh]
    unsigned char* allowed;       // [slots]
    float* g_ring;                // [W]
    long long *src, *last_exact;  // [slots], [Me]
    int* ring;                    // [2] recent_idx, recent_filled
    long long* pos;
    const floatX *k_new, *v_new;  // [Hkv*Dh] the token (k RoPE'd)
    const float* gate;            // [1] its write gate (1 with write policy none)
    const floatX* eta_logit;      // [Hkv]
    float* scores;                // [Me + Ms] scratch: the evicted token's routing score against each bank slot
    long long* ins;               // [2] (p, slot) of this token, published by decode_evict_kernel (bit 16)
    int W, Me, Ms, Hkv, Dh;
    int policy_none, refresh_on_hit, overwrite_on_insert;
    float thr_e, thr_s, match_thr, novelty_thr;
} DecodeWriteArgs;

// Element offset of KV head g's row in slot `slot` of a layer's k or v ([Hkv][slots][Dh]).
__device__ __forceinline__ size_t decode__row(const DecodeWriteArgs& a, int g, int slot) {
    return ((size_t)g * (a.W + a.Me + a.Ms) + slot) * a.Dh;
}

// cos(a, b) over n dims as llmc/cpu/banks.h's cosine(): three sums in index order, no FMA.
__device__ __forceinline__ float decode_cosine(const float* a, const float* b, int n) {
    float aa = 0.f, bb = 0.f, ab = 0.f;
    for (int i = 0; i < n; i++) {
        aa = __fadd_rn(aa, __fmul_rn(a[i], a[i]));
        bb = __fadd_rn(bb, __fmul_rn(b[i], b[i]));
        ab = __fadd_rn(ab, __fmul_rn(a[i], b[i]));
    }
    float na = __fsqrt_rn(aa), nb = __fsqrt_rn(bb);
    na = na > 1e-6f ? na : 1e-6f;
    nb = nb > 1e-6f ? nb : 1e-6f;
    return __fdiv_rn(ab, __fmul_rn(na, nb));
}

// A CTA's loop over n items that loads, then stores: each thread loads DEC_STAGE items (ld(i)) before it
// stores any (st(i, value)), so that its loads are in flight together. Written as one load-store loop
// the compiler keeps them in order (a store to global memory may alias the next load): one dependent
// round trip per pass, ~1 us each at the 7B shape.
#define DEC_STAGE 4
template <typename Ld, typename St>
__device__ __forceinline__ void decode__staged(int n, Ld ld, St st) {
    for (int i0 = threadIdx.x; i0 < n; i0 += blockDim.x * DEC_STAGE) {
        decltype(ld(0)) v[DEC_STAGE];
#pragma unroll
        for (int u = 0; u < DEC_STAGE; u++)
            if (i0 + u * (int)blockDim.x < n) v[u] = ld(i0 + u * (int)blockDim.x);
#pragma unroll
        for (int u = 0; u < DEC_STAGE; u++)
            if (i0 + u * (int)blockDim.x < n) st(i0 + u * (int)blockDim.x, v[u]);
    }
}

// Routing scores, one CTA per bank slot m (grid Me + Ms; nothing to do unless the ring is full and
// this write evicts): the slot's operand rows and the evicted token's are staged in shared memory
// (coalesced), then thread g forms head g's cosine sequentially and thread 0 the head mean in head
// order — llmc/cpu/banks.h's exact_score (values, all Dh dims) and summary_score (keys, dims [lf, Dh)).
// Formed by one thread per slot straight from global memory they took ~100 us per layer at the 7B
// shape (a chain of dependent-latency loads); staged, a few.
// (The body is a device function: decode_rope_gate_score_kernel runs it in its CTAs 1..Me+Ms.)
__device__ __forceinline__ void decode_score_slot(const DecodeWriteArgs& a, int m, float* sm) {
    const int tid = threadIdx.x, Dh = a.Dh, Hkv = a.Hkv, W = a.W, Me = a.Me;
    const int lf = Dh / 2, exact = m < Me;
    if (a.ring[1] < W) return;  // the ring is not full: nothing is evicted
    if (exact && !a.allowed[W + m]) return;  // an unused exact slot is not scored
    const int slot = a.ring[0], d0 = exact ? 0 : lf, n = Dh - d0, bslot = W + m;
    const float* src_tok = exact ? a.v : a.k;  // exact: value routing; summary: LF-key routing
    float *tok = sm, *row = tok + Hkv * n, *cs = row + Hkv * n;
    decode__staged(
        Hkv * n,
        [&](int i) {
            const int g = i / n, d = d0 + i % n;
            return make_float2(src_tok[decode__row(a, g, slot) + d], src_tok[decode__row(a, g, bslot) + d]);
        },
        [&](int i, float2 x) { tok[i] = x.x; row[i] = x.y; });
    __syncthreads();
    if (tid < Hkv) cs[tid] = decode_cosine(tok + tid * n, row + tid * n, n);
    __syncthreads();
    if (tid == 0) {
        float s = 0.f;
        for (int g = 0; g < Hkv; g++) s = __fadd_rn(s, cs[g]);
        a.scores[m] = __fdiv_rn(s, (float)Hkv);
    }
}
__global__ void __launch_bounds__(DEC_THREADS) decode_score_kernel(DecodeWriteArgs a) {
    extern __shared__ float sm[];
    pdl_wait();
    pdl_trigger();
    decode_score_slot(a, blockIdx.x, sm);
}
static inline size_t decode_score_smem(int Hkv, int Dh) { return sizeof(float) * (2 * (size_t)Hkv * Dh + Hkv); }

// The eviction decisions reduce over the bank slots in parallel, one warp each (warp 0: §3.5's exact
// bank, warp 1: §3.6's summary bank; they read and write disjoint slots), while the other warps stage
// the evicted token. A sequential scan by one thread — llmc/cpu/banks.h's loops, one dependent global
// load per slot — took 19.5 us a layer at the 7B shape (H200, ncu); the lane-parallel reductions below
// choose the same slots: a first-index argmax (strict > over slots in order keeps the first of equal
// maxima, NaN never wins), a first-index argmin for the LRU slot, the first free slot.
// Best (value, index) of two candidates: the larger value, the smaller index among equal values; an
// index < 0 is no candidate.
__device__ __forceinline__ void decode__better(float& best, int& idx, float ob, int oi) {
    if (oi >= 0 && (idx < 0 || ob > best || (ob == best && oi < idx))) { best = ob; idx = oi; }
}
__device__ __forceinline__ void decode__warp_argmax(float& best, int& idx) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        decode__better(best, idx, ob, oi);
    }
}
// §3.5 by one warp: which exact slot the evicted token (source position ep, gate eg) routes to, and
// whether it is written; lane 0 updates the slot's counters. Returns (in every lane) idx | write << 30.
__device__ __forceinline__ int decode__exact_decision(const DecodeWriteArgs& a, float eg, long long ep) {
    const int lane = threadIdx.x & 31, Me = a.Me, W = a.W;
    const unsigned char* used = a.allowed + W;
    int any_used = 0, free_slot = INT_MAX, bidx = -1, lru = -1;
    float best = -1e9f;  // the sequential scan's start: a score must exceed it to count
    long long lru_t = LLONG_MAX;
    for (int m = lane; m < Me; m += 32) {  // every load independent of the others
        const int u = used[m];
        const float s = __ldcg(a.scores + m);  // stale for an unused slot: not read then
        const long long t = a.last_exact[m];
        any_used |= u;
        if (!u && m < free_slot) free_slot = m;
        if (u && s > best) { best = s; bidx = m; }
        if (t < lru_t) { lru_t = t; lru = m; }
    }
    any_used = __any_sync(0xffffffffu, any_used);
    decode__warp_argmax(best, bidx);
    for (int o = 16; o > 0; o >>= 1) {
        free_slot = min(free_slot, __shfl_xor_sync(0xffffffffu, free_slot, o));
        const long long ot = __shfl_xor_sync(0xffffffffu, lru_t, o);
        const int oi = __shfl_xor_sync(0xffffffffu, lru, o);
        if (oi >= 0 && (lru < 0 || ot < lru_t || (ot == lru_t && oi < lru))) { lru_t = ot; lru = oi; }
    }
    if (bidx < 0) bidx = 0;
    const int keep = a.policy_none || eg >= a.thr_e;
    const int novel = !any_used || best < a.novelty_thr, hit = any_used && best >= a.match_thr;
    const int idx = novel ? (free_slot < INT_MAX ? free_slot : lru) : bidx;
    const int write = (novel || (a.refresh_on_hit && hit)) && keep;
    if (lane == 0) {
        if (write) { a.allowed[W + idx] = 1; a.src[W + idx] = ep; }
        if (keep) a.last_exact[idx] = ep;
    }
    return idx | write << 30;
}
// §3.6's routing by one warp: the summary slot with the best score (the sequential scan starts from
// slot 0 whatever its score, so a NaN there keeps slot 0). Returns idx | is_new << 30.
__device__ __forceinline__ int decode__summary_decision(const DecodeWriteArgs& a) {
    const int lane = threadIdx.x & 31, s0 = a.W + a.Me;
    float best = -INFINITY;
    int bidx = -1;
    for (int m = lane; m < a.Ms; m += 32) {
        const float s = __ldcg(a.scores + a.Me + m);
        if (s == s && (bidx < 0 || s > best)) { best = s; bidx = m; }
    }
    decode__warp_argmax(best, bidx);
    const float first = __ldcg(a.scores + a.Me);
    const int idx = first != first || bidx < 0 ? 0 : bidx;
    const int is_new = a.overwrite_on_insert && !a.allowed[s0 + idx];
    return idx | is_new << 30;
}

// Dynamic smem: ek, ev [Hkv*Dh] (the evicted token).
static inline size_t decode_write_smem(int Hkv, int Dh) { return sizeof(float) * 2 * (size_t)Hkv * Dh; }
// The half of write_one that does not depend on this token: which slot the token takes (the oldest
// ring slot, or the next free one), and, when the ring is full, the evicted token's routing into the
// exact bank (§3.5) and its EMA into a summary slot (§3.6). It reads only the state the previous step
// left and the routing scores (formed from that state as well). Every thread returns with the slot
// and the position p; every thread has read the counters and the evicted token when it returns.
// (In the write body, or on its own in decode_evict_kernel, a step ahead of this token's k and v.)
__device__ __forceinline__ int decode_evict_body(const DecodeWriteArgs& a, float* sm, long long* p_out) {
    static_assert(DEC_THREADS >= 64, "the write's two decisions take a warp each");
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, Dh = a.Dh, Hkv = a.Hkv, W = a.W, Me = a.Me, Ms = a.Ms, kvd = Hkv * Dh;
    const int lf = Dh / 2, s0 = W + Me;
    float *ek = sm, *ev = ek + kvd;
    __shared__ int sh_exact, sh_summary;
    const int filled = a.ring[1], oldest = a.ring[0];
    *p_out = *a.pos;
    auto K = [&](int g, int slot) { return a.k + decode__row(a, g, slot); };
    auto V = [&](int g, int slot) { return a.v + decode__row(a, g, slot); };
    const int evict = filled >= W;
    const int slot = evict ? oldest : filled;
    if (evict) {
        const float eg = a.g_ring[slot];
        if (warp == 0 && Me > 0) {
            const int r = decode__exact_decision(a, eg, a.src[slot]);
            if (lane == 0) sh_exact = r;
        } else if (warp == 1 && Ms > 0) {
            const int r = decode__summary_decision(a);
            if (lane == 0) sh_summary = r;
        }
        decode__staged(
            kvd, [&](int i) { return make_float2(K(i / Dh, slot)[i % Dh], V(i / Dh, slot)[i % Dh]); },
            [&](int i, float2 x) { ek[i] = x.x; ev[i] = x.y; });
        __syncthreads();
        if (Me > 0 && (sh_exact >> 30)) {  // §3.5: the evicted token into the exact slot
            const int idx = sh_exact & ((1 << 30) - 1);
            for (int i = tid; i < kvd; i += blockDim.x) { K(i / Dh, W + idx)[i % Dh] = ek[i]; V(i / Dh, W + idx)[i % Dh] = ev[i]; }
        }
        if (Ms > 0) {  // §3.6: EMA into the summary slot with eta * gate
            const int idx = sh_summary & ((1 << 30) - 1), is_new = sh_summary >> 30, keep = a.policy_none || eg >= a.thr_s;
            const float escale = __fsqrt_rn(__fdiv_rn((float)Dh, (float)(Dh - lf)));
            decode__staged(
                kvd, [&](int i) { return make_float2(K(i / Dh, s0 + idx)[i % Dh], V(i / Dh, s0 + idx)[i % Dh]); },
                [&](int i, float2 m) {
                    const int g = i / Dh, d = i % Dh;
                    float eta = __fmul_rn(bs_sigmoid(to_float(a.eta_logit[g])), a.policy_none ? 1.0f : eg);
                    if (is_new) eta = 1.0f;
                    if (!keep) eta = 0.0f;
                    if (d >= lf) K(g, s0 + idx)[d] = __fadd_rn(m.x, __fmul_rn(eta, __fsub_rn(__fmul_rn(escale, ek[i]), m.x)));
                    V(g, s0 + idx)[d] = __fadd_rn(m.y, __fmul_rn(eta, __fsub_rn(ev[i], m.y)));
                });
            if (tid == 0 && keep) a.allowed[s0 + idx] = 1;
        }
    }
    __syncthreads();  // every thread has read the counters and the evicted token
    return slot;
}
// The slot's bookkeeping for the token at position p (thread 0, after decode_evict_body): the slot in
// use, its source position, the counters advanced. The gate goes into g_ring[slot] by whoever has it.
__device__ __forceinline__ void decode__take_slot(const DecodeWriteArgs& a, int slot, long long p) {
    a.allowed[slot] = 1;
    a.src[slot] = p;
    *a.pos = p + 1;
    if (a.ring[1] >= a.W) a.ring[0] = (slot + 1) % a.W;
    else a.ring[1] = a.ring[1] + 1;
}
// The whole write_one (its own kernel, or the last CTA of decode_rope_gate_score_kernel to finish:
// then the scores, the gate and the rotated k are other CTAs' stores of the same grid, read through
// L2, __ldcg, never a stale L1 line).
__device__ __forceinline__ void decode_write_body(const DecodeWriteArgs& a, float* sm) {
    const int tid = threadIdx.x, Dh = a.Dh, kvd = a.Hkv * Dh;
    long long p;
    const int slot = decode_evict_body(a, sm, &p);
    decode__staged(
        kvd, [&](int i) { return make_float2(to_float(__ldcg(a.k_new + i)), to_float(__ldcg(a.v_new + i))); },
        [&](int i, float2 x) {
            a.k[decode__row(a, i / Dh, slot) + i % Dh] = x.x;
            a.v[decode__row(a, i / Dh, slot) + i % Dh] = x.y;
        });
    if (tid == 0) {
        a.g_ring[slot] = __ldcg(a.gate);
        decode__take_slot(a, slot, p);
    }
}
__global__ void __launch_bounds__(DEC_THREADS) decode_write_kernel(DecodeWriteArgs a) {
    extern __shared__ float sm[];
    pdl_wait();
    pdl_trigger();
    decode_write_body(a, sm);
}
// The token-independent half on its own (use_fused bit 16): run on a second stream while the step
// computes this token's k and v; it publishes (p, slot) in a.ins for the RoPE kernel, which writes
// the token's k, v and gate into the slot (decode_rope_gate_score_kernel with ins).
__global__ void __launch_bounds__(DEC_THREADS) decode_evict_kernel(DecodeWriteArgs a) {
    extern __shared__ float sm[];
    pdl_wait();
    long long p;
    const int slot = decode_evict_body(a, sm, &p);
    if (threadIdx.x == 0) {
        a.ins[0] = p;
        a.ins[1] = slot;
        decode__take_slot(a, slot, p);
    }
}

// The write of one token into layer l's state (k_new RoPE'd, gate on the device).
// scores: [Me + Ms] floats of scratch.
static DecodeWriteArgs decode_write_args(const GpuDecodeState* st, const ModelConfig* c, int l, const floatX* k_new, const floatX* v_new,
                                         const float* gate, const floatX* eta_logit, float* scores) {
    const size_t kv = (size_t)st->Hkv * st->slots * st->Dh;
    DecodeWriteArgs w;
    w.k = st->k + l * kv; w.v = st->v + l * kv; w.allowed = st->allowed + (size_t)l * st->slots;
    w.g_ring = st->g_ring + (size_t)l * st->W; w.src = st->src + (size_t)l * st->slots;
    w.last_exact = st->last_exact + (size_t)l * st->Me; w.ring = st->ring + 2 * l; w.pos = st->pos + l;
    w.k_new = k_new; w.v_new = v_new; w.gate = gate; w.eta_logit = eta_logit; w.scores = scores;
    w.W = st->W; w.Me = st->Me; w.Ms = st->Ms; w.Hkv = st->Hkv; w.Dh = st->Dh;
    w.policy_none = c->write_policy == WRITE_POLICY_NONE; w.refresh_on_hit = c->exact_refresh_on_hit;
    w.overwrite_on_insert = c->summary_overwrite_on_insert;
    w.thr_e = c->gate_threshold_exact; w.thr_s = c->gate_threshold_summary;
    w.match_thr = c->exact_match_threshold; w.novelty_thr = c->exact_novelty_threshold;
    return w;
}
// pdl: both launches with Programmatic Dependent Launch. scores_done: the scores are already formed
// (decode_rope_gate_score_kernel): only the write.
static void decode_write_one(const GpuContext* ctx, const DecodeWriteArgs* w, int pdl = 0, int scores_done = 0) {
    if (w->Me + w->Ms > 0 && !scores_done)
        pdl_launch(pdl, decode_score_kernel, w->Me + w->Ms, DEC_THREADS, decode_score_smem(w->Hkv, w->Dh), ctx->stream, "decode_score_kernel",
                   *w);
    pdl_launch(pdl, decode_write_kernel, 1, DEC_THREADS, decode_write_smem(w->Hkv, w->Dh), ctx->stream, "decode_write_kernel", *w);
}

// RoPE of q and k, the write gate and the routing scores of one layer in one launch (the fused step),
// and with a ticket the write itself. CTAs by role:
//   0                   the write gate, by warp 0 as write_gate_forward_kernel forms it (lane-strided fp32
//                       sums in index order, warp_sum, the same sigmoid: the same bits). All 256 threads
//                       first stage DEC_GATE_CHUNK elements of x and w in shared memory with 16-byte
//                       loads, so a 4096-wide gate is one round trip to memory, not the D/32 / 16 = 8
//                       of one warp's 2-byte loads (the slowest CTA of the launch when it was)
//   1 .. n_rope         RoPE, one rotation pair per thread, each as decode_rope_kernel rotates it
//                       (rope_cos_sin, rope_rotate: which thread does a pair changes nothing)
//   then n_score        decode_score_slot: it reads only the state that the previous step left (the
//                       slot this token evicts, the bank rows), never this token's k or v
// ins (bounded, use_fused bit 16, or NULL): decode_evict_kernel has already made the write's
// token-independent half on the second stream and published (p, slot); this launch then also writes
// the token into that slot (the gate CTA its gate, each k-head rotation pair its k and v, in fp32 as
// decode_write_body converts them), and takes p from ins (pos[l] is already p + 1). No scores then.
// ticket (bounded, or NULL): every CTA counts itself in when done; the last one runs decode_write_body
// (which reads the others' results) and resets the ticket for the next layer: one launch fewer a layer.
#define DEC_GATE_CHUNK 4096  // elements of x and of w staged per pass (16 KB of bf16, 32 KB of fp32)
typedef struct {
    floatX *q, *k;             // [H*Dh], [Hkv*Dh] rotated in place
    const long long* pos;
    int H, Hkv, Dh, interleaved, bf16_positions;
    float* gate;               // [1], or NULL: no write gate (unbounded)
    const floatX *hn, *gate_w, *gate_b;  // the normed input [D], write_proj [D], its bias [1]
    int D, gated, n_score;     // n_score: Me + Ms score CTAs after the RoPE CTAs (0: none)
    unsigned* ticket;          // [1], zero between launches, or NULL: the write is a launch of its own
    const long long* ins;      // [2] (p, slot) from decode_evict_kernel, or NULL (see above)
} DecodeRopeGateArgs;
__host__ __device__ inline int decode_rope_ctas(int H, int Hkv, int Dh) { return ((H + Hkv) * (Dh / 2) + DEC_THREADS - 1) / DEC_THREADS; }
__global__ void __launch_bounds__(DEC_THREADS) decode_rope_gate_score_kernel(const DecodeRopeGateArgs a, const DecodeWriteArgs w,
                                                                             const RopeFreqs freqs) {
    extern __shared__ float sm[];
    pdl_wait();
    pdl_trigger();
    const int tid = threadIdx.x, lane = tid % 32, half = a.Dh / 2, n_rope = decode_rope_ctas(a.H, a.Hkv, a.Dh);
    if (blockIdx.x == 0) {
        if (a.gate) {
            __shared__ __align__(16) floatX gx[DEC_GATE_CHUNK], gw[DEC_GATE_CHUNK];
            constexpr int V = 16 / (int)sizeof(floatX);
            const int vec = a.D % V == 0 && ((uintptr_t)a.hn | (uintptr_t)a.gate_w) % 16 == 0;
            float s = 0.f;
            for (int c0 = 0; a.gated && c0 < a.D; c0 += DEC_GATE_CHUNK) {  // chunks: a multiple of 32, so each
                const int n = min(DEC_GATE_CHUNK, a.D - c0);                 // element keeps its lane and order
                if (vec) {
#pragma unroll 4
                    for (int j = tid * V; j < n; j += DEC_THREADS * V) {
                        store128(gx + j, load128(a.hn + c0 + j));
                        store128(gw + j, load128(a.gate_w + c0 + j));
                    }
                } else {
                    for (int j = tid; j < n; j += DEC_THREADS) gx[j] = a.hn[c0 + j], gw[j] = a.gate_w[c0 + j];
                }
                __syncthreads();
                if (tid < 32)
                    for (int j = lane; j < n; j += 32) s += to_float(gx[j]) * to_float(gw[j]);
                __syncthreads();  // before the next chunk overwrites gx, gw
            }
            if (tid < 32) {
                s = warp_sum(s);
                if (lane == 0) {
                    const float g = a.gated ? 1.0f / (1.0f + expf(-(s + to_float(a.gate_b[0])))) : 1.0f;
                    a.gate[0] = g;
                    if (a.ins) w.g_ring[a.ins[1]] = g;
                }
            }
        }
    } else if (blockIdx.x <= n_rope) {
        const int item = (blockIdx.x - 1) * DEC_THREADS + tid, h = item / half, i = item % half;
        if (h < a.H + a.Hkv) {
            float c, s;
            rope_cos_sin(a.ins ? a.ins[0] : *a.pos, freqs.inv_freq[i], a.bf16_positions, 1.0f, c, s);
            const int ia = a.interleaved ? 2 * i : i, ib = a.interleaved ? 2 * i + 1 : i + half;
            floatX* row = h < a.H ? a.q + h * a.Dh : a.k + (h - a.H) * a.Dh;
            rope_rotate(row[ia], row[ib], c, s);
            if (a.ins && h >= a.H) {  // this pair of the token's k (rotated) and v into its slot
                const int g = h - a.H;
                const size_t at = decode__row(w, g, (int)a.ins[1]);
                const floatX* vrow = w.v_new + g * a.Dh;
                w.k[at + ia] = to_float(row[ia]);
                w.k[at + ib] = to_float(row[ib]);
                w.v[at + ia] = to_float(vrow[ia]);
                w.v[at + ib] = to_float(vrow[ib]);
            }
        }
    } else {
        decode_score_slot(w, blockIdx.x - 1 - n_rope, sm);
    }
    if (!a.ticket) return;
    __shared__ int last;
    __syncthreads();  // this CTA's stores are issued
    if (tid == 0) {
        __threadfence();  // ... and visible to the whole GPU before the CTA counts itself in
        last = atomicAdd(a.ticket, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    decode_write_body(w, sm);
    if (tid == 0) *a.ticket = 0u;
}
static inline size_t decode_rope_gate_score_smem(const DecodeRopeGateArgs* a) {
    size_t s = a->n_score ? decode_score_smem(a->Hkv, a->Dh) : 0, wsm = decode_write_smem(a->Hkv, a->Dh);
    return a->ticket && wsm > s ? wsm : s;
}

// The merge of the attention's splits for one query head (both streams), then o = A_sig - sigmoid(lam)
// A_noise and the head norm: run by decode_combine_kernel (one CTA per head) or, with a ticket, by the
// last of a KV head's split CTAs to finish (its G heads). Either way each output is formed by the same
// arithmetic, the splits in a fixed order (deterministic). The partials are read through L2 (__ldcg:
// other CTAs' stores). Up to DEC_COMBINE_HELD splits (the bounded states; 12 for the medium one at
// the 7B shape) every load of both streams is issued at once; beyond, each split's three loads are
// issued before its branch, so that the loop is not a chain of dependent round trips (11 us a layer
// at the 7B shape when it was).
typedef struct {
    const float* part;
    const floatX* lam_logit;   // [H] (differential)
    const floatX* head_norm;   // [Dh] or NULL
    float head_norm_eps;
    floatX* out;               // [H*Dh]
    int H, Hkv, differential, splits;
} DecodeCombineArgs;

// One split's share of the merge (skipped when it saw no key), by both paths below: the same bits.
__device__ __forceinline__ void decode__merge_split(float M, float mp, float lp, float xp, float& L, float& x) {
    if (mp == -INFINITY) return;
    const float w = exp2f(mp - M);
    L += w * lp;
    x += w * xp;
}
#define DEC_COMBINE_HELD 16  // splits whose partials a thread loads all at once (more: the loop below)
// HOLD: the held path is compiled in. Only the combine kernel takes it: its 96 registers, inlined into
// the attention kernel for the ticket path, cut that kernel's occupancy and slowed the KV-cache
// decode's attention by 20-25% at 32K-128K keys (H200, decode v6).
template <int DH, bool HOLD>
__device__ __forceinline__ float decode_combine_value(const DecodeCombineArgs& a, int h, int d) {
    const int G = a.H / a.Hkv, g = h / G, NS = a.differential ? 2 : 1, nq = G * NS;
    const size_t split_stride = (size_t)nq * (DH + 2);
    float o[2] = {0.f, 0.f};
    if (HOLD && a.splits <= DEC_COMBINE_HELD) {
        // Every partial of both streams is loaded before any is used: one round trip, not one per
        // group of splits per stream. The arithmetic below is the loop's (max, then the splits
        // added in order, empty ones skipped), so the bits are the same whichever path runs.
        float mp[2][DEC_COMBINE_HELD], lp[2][DEC_COMBINE_HELD], xp[2][DEC_COMBINE_HELD];
#pragma unroll
        for (int s = 0; s < 2; s++) {
            const float* p0 = a.part + ((size_t)g * a.splits * nq + s * G + h % G) * (DH + 2);
#pragma unroll
            for (int sp = 0; sp < DEC_COMBINE_HELD; sp++) {
                const bool on = s < NS && sp < a.splits;
                const float* pp = p0 + sp * split_stride;
                mp[s][sp] = on ? __ldcg(pp + DH) : -INFINITY;
                lp[s][sp] = on ? __ldcg(pp + DH + 1) : 0.f;
                xp[s][sp] = on ? __ldcg(pp + d) : 0.f;
            }
        }
#pragma unroll
        for (int s = 0; s < 2; s++) {
            float M = -INFINITY, L = 0.f, x = 0.f;
#pragma unroll
            for (int sp = 0; sp < DEC_COMBINE_HELD; sp++) M = fmaxf(M, mp[s][sp]);
            if (M == -INFINITY) continue;  // nothing to attend to (or no second stream): zeros
#pragma unroll
            for (int sp = 0; sp < DEC_COMBINE_HELD; sp++) decode__merge_split(M, mp[s][sp], lp[s][sp], xp[s][sp], L, x);
            o[s] = x / L;
        }
        return a.differential ? o[0] - ca_sigmoid(to_float(a.lam_logit[h])) * o[1] : o[0];
    }
    for (int s = 0; s < NS; s++) {
        const int qi = s * G + h % G;
        const float* p0 = a.part + ((size_t)g * a.splits * nq + qi) * (DH + 2);
        float M = -INFINITY;
#pragma unroll 4
        for (int sp = 0; sp < a.splits; sp++) M = fmaxf(M, __ldcg(p0 + sp * split_stride + DH));
        if (M == -INFINITY) continue;  // nothing to attend to: zeros (docs/spec.md §2.4)
        float L = 0.f, x = 0.f;
#pragma unroll 4
        for (int sp = 0; sp < a.splits; sp++) {
            const float* pp = p0 + sp * split_stride;
            decode__merge_split(M, __ldcg(pp + DH), __ldcg(pp + DH + 1), __ldcg(pp + d), L, x);
        }
        o[s] = x / L;
    }
    return a.differential ? o[0] - ca_sigmoid(to_float(a.lam_logit[h])) * o[1] : o[0];
}
// Heads [h0, h0 + nh) by this CTA: thread t serves dim t % DH of every (blockDim / DH)-th head from
// t / DH. red: blockDim / 32 floats of shared scratch. Every thread of the CTA must call it.
template <int DH, bool HOLD>
__device__ __forceinline__ void decode_combine_heads(const DecodeCombineArgs& a, int h0, int nh, float* red) {
    const int groups = blockDim.x / DH, j = threadIdx.x / DH, d = threadIdx.x % DH;
    for (int base = 0; base < nh; base += groups) {
        const int hi = base + j, active = j < groups && hi < nh;
        float y = active ? decode_combine_value<DH, HOLD>(a, h0 + hi, d) : 0.f;
        if (a.head_norm) {  // the head's DH/32 warp sums added in warp order
            float ss = warp_sum(y * y);
            if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
            __syncthreads();
            ss = 0.f;
            for (int w = 0; w < DH / 32; w++) ss += red[j * (DH / 32) + w];
            if (active) y = y * (1.0f / sqrtf(ss / DH + a.head_norm_eps)) * to_float(a.head_norm[d]);
            __syncthreads();  // before the next heads reuse red
        }
        if (active) a.out[(h0 + hi) * DH + d] = from_float<floatX>(y);
    }
}
template <int DH>
__global__ void __launch_bounds__(DH) decode_combine_kernel(DecodeCombineArgs a) {
    __shared__ float red[DH / 32];
    pdl_wait();
    pdl_trigger();
    decode_combine_heads<DH, true>(a, blockIdx.x, 1, red);
}

// Attention of one token's query (both streams) over n keys.
typedef struct {
    const floatX* q;                 // [H*Dh] RoPE'd
    const floatX* theta;             // [H][Dh/2] (differential)
    const void *k, *v;               // key j of KV head g at k + g*head_stride + j*key_stride (elements)
    size_t head_stride, key_stride;
    const unsigned char* allowed;    // [n] or NULL: every key
    const long long* n_dev;          // the number of keys on the device (unbounded: pos), or NULL: n_fixed
    int n_fixed;
    int H, Hkv, differential, splits;
    float* part;                     // [Hkv][splits][nq][Dh + 2]: acc (unnormalised), max (log2 domain), sum
    const void* l2_prefetch;         // bytes to pull into L2 while the attention runs (the o-proj weights), or NULL
    size_t l2_prefetch_bytes;
    unsigned* combine_ticket;        // [Hkv], zero between launches: the last split CTA of a KV head combines
                                     // its G heads (decode_combine_heads); or NULL: decode_combine_kernel does
} DecodeAttnArgs;

template <int DH, typename KT>
__global__ void __launch_bounds__(DEC_THREADS) decode_attention_kernel(DecodeAttnArgs a, DecodeCombineArgs cb) {
    constexpr int C4 = DH / 4;                                      // float4 chunks of a row
    constexpr int R = (DEC_MAXQ * C4 + DEC_THREADS - 1) / DEC_THREADS;  // accumulator chunks per thread
    __shared__ float qs[DEC_MAXQ][DH];
    __shared__ float Ks[DEC_TILE][DH + 1];
    __shared__ __align__(16) float Vs[DEC_TILE][DH];
    __shared__ float P[DEC_MAXQ][DEC_TILE];
    __shared__ float m_s[DEC_MAXQ], l_s[DEC_MAXQ], alpha_s[DEC_MAXQ];
    const int g = blockIdx.x, sp = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int G = a.H / a.Hkv, NS = a.differential ? 2 : 1, nq = G * NS;
    if (a.l2_prefetch) {  // this CTA's share of the lines, before the wait (no kernel of the step writes weights)
        const size_t lines = (a.l2_prefetch_bytes + 127) / 128, ctas = (size_t)gridDim.x * gridDim.y;
        const size_t per = (lines + ctas - 1) / ctas, l0 = ((size_t)sp * gridDim.x + g) * per;
        for (size_t i = l0 + tid; i < l0 + per && i < lines; i += DEC_THREADS) prefetch_l2((const char*)a.l2_prefetch + i * 128);
    }
    pdl_wait();
    pdl_trigger();
    const int n = a.n_dev ? (int)*a.n_dev : a.n_fixed;
    const int tiles = (n + DEC_TILE - 1) / DEC_TILE, per = (tiles + a.splits - 1) / a.splits;
    const int t0 = sp * per, t1 = min(tiles, t0 + per);
    // queries: qi < G signal of head g*G + qi, qi >= G noise of head g*G + qi - G; scaled into the exp2 domain
    const float qscale = rsqrtf((float)DH) * CA_LOG2E;
    for (int i = tid; i < nq * (DH / 2); i += DEC_THREADS) {
        const int qi = i / (DH / 2), j = i % (DH / 2), h = g * G + qi % G;
        float x0 = to_float(a.q[h * DH + 2 * j]), x1 = to_float(a.q[h * DH + 2 * j + 1]);
        if (qi >= G) {
            float s, c;
            sincosf(to_float(a.theta[h * (DH / 2) + j]), &s, &c);
            const float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
            x0 = y0; x1 = y1;
        }
        qs[qi][2 * j] = x0 * qscale;
        qs[qi][2 * j + 1] = x1 * qscale;
    }
    if (tid < DEC_MAXQ) { m_s[tid] = -INFINITY; l_s[tid] = 0.f; }
    float4 acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = make_float4(0.f, 0.f, 0.f, 0.f);
    const KT* kb = (const KT*)a.k + (size_t)g * a.head_stride;
    const KT* vb = (const KT*)a.v + (size_t)g * a.head_stride;
    __syncthreads();
    for (int t = t0; t < t1; t++) {
        const int j0 = t * DEC_TILE;
        for (int i = tid; i < DEC_TILE * C4; i += DEC_THREADS) {  // stage K and V rows (zeros past n)
            const int r = i / C4, c = i % C4;
            float4 kx = make_float4(0.f, 0.f, 0.f, 0.f), vx = kx;
            if (j0 + r < n) {
                kx = ca_ld4(kb + (size_t)(j0 + r) * a.key_stride + 4 * c);
                vx = ca_ld4(vb + (size_t)(j0 + r) * a.key_stride + 4 * c);
            }
            Ks[r][4 * c] = kx.x; Ks[r][4 * c + 1] = kx.y; Ks[r][4 * c + 2] = kx.z; Ks[r][4 * c + 3] = kx.w;
            *(float4*)&Vs[r][4 * c] = vx;
        }
        __syncthreads();
        for (int i = tid; i < nq * DEC_TILE; i += DEC_THREADS) {  // scores (a warp: one query, 32 keys)
            const int qi = i / DEC_TILE, j = i % DEC_TILE, key = j0 + j;
            float s = -INFINITY;
            if (key < n && (!a.allowed || a.allowed[key])) {
                s = 0.f;
#pragma unroll 8
                for (int d = 0; d < DH; d++) s += qs[qi][d] * Ks[j][d];
            }
            P[qi][j] = s;
        }
        __syncthreads();
        for (int qi = warp; qi < nq; qi += DEC_THREADS / 32) {  // online softmax, one warp per query
            const float s = P[qi][lane];
            float mt = s;
            for (int o = 16; o > 0; o >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, o));
            const float m_old = m_s[qi], m_new = fmaxf(m_old, mt);
            const float pr = m_new == -INFINITY ? 0.f : exp2f(s - m_new);
            const float alpha = m_new == -INFINITY ? 1.f : exp2f(m_old - m_new);
            const float sum = warp_sum(pr);
            P[qi][lane] = pr;
            if (lane == 0) { m_s[qi] = m_new; l_s[qi] = l_s[qi] * alpha + sum; alpha_s[qi] = alpha; }
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < R; r++) {  // acc = alpha acc + P V
            const int item = tid + r * DEC_THREADS, qi = item / C4, c = item % C4;
            if (qi >= nq) continue;
            const float al = alpha_s[qi];
            float4 x = make_float4(acc[r].x * al, acc[r].y * al, acc[r].z * al, acc[r].w * al);
            for (int j = 0; j < DEC_TILE; j++) {
                const float pj = P[qi][j];
                const float4 vv = *(const float4*)&Vs[j][4 * c];
                x.x += pj * vv.x; x.y += pj * vv.y; x.z += pj * vv.z; x.w += pj * vv.w;
            }
            acc[r] = x;
        }
        __syncthreads();  // before the next tile overwrites K, V and P
    }
    float* out = a.part + ((size_t)g * a.splits + sp) * nq * (DH + 2);
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int item = tid + r * DEC_THREADS, qi = item / C4, c = item % C4;
        if (qi < nq) {
            float* o = out + (size_t)qi * (DH + 2) + 4 * c;
            o[0] = acc[r].x; o[1] = acc[r].y; o[2] = acc[r].z; o[3] = acc[r].w;
        }
    }
    if (tid < nq) { out[(size_t)tid * (DH + 2) + DH] = m_s[tid]; out[(size_t)tid * (DH + 2) + DH + 1] = l_s[tid]; }
    if (!a.combine_ticket) return;
    __shared__ int last;
    __syncthreads();  // this CTA's partials are issued
    if (tid == 0) {
        __threadfence();  // ... and visible to the whole GPU before it counts itself in
        last = atomicAdd(a.combine_ticket + g, 1u) == gridDim.y - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    __shared__ float red[DEC_THREADS / 32];
    decode_combine_heads<DH, false>(cb, g * G, G, red);
    if (tid == 0) a.combine_ticket[g] = 0u;
}

// Split count for up to max_keys keys: one tile a split (the CTA's tile loop is latency-bound: a
// bounded state of 384 slots in 4-tile splits took 30 us a layer on an H200), at most about four CTAs
// per SM, so that long caches keep enough loads in flight.
static inline int decode_attention_splits(int max_keys, int Hkv, int sm_count) {
    int tiles = (max_keys + DEC_TILE - 1) / DEC_TILE, s = tiles, cap = 4 * (sm_count > 0 ? sm_count : 132) / Hkv;
    if (s > cap) s = cap;
    return s < 1 ? 1 : s;
}

// pdl: the launches with Programmatic Dependent Launch; a->combine_ticket: the combine inside the attention.
static void decode_attention(const GpuContext* ctx, const DecodeAttnArgs* a, const DecodeCombineArgs* c, int Dh, int keys_fp32, int pdl = 0) {
    dim3 grid(a->Hkv, a->splits);
    const char* an = "decode_attention_kernel";
    if (Dh == 128) {
        if (keys_fp32) pdl_launch(pdl, decode_attention_kernel<128, float>, grid, DEC_THREADS, 0, ctx->stream, an, *a, *c);
        else pdl_launch(pdl, decode_attention_kernel<128, floatX>, grid, DEC_THREADS, 0, ctx->stream, an, *a, *c);
        if (!a->combine_ticket) pdl_launch(pdl, decode_combine_kernel<128>, a->H, 128, 0, ctx->stream, "decode_combine_kernel", *c);
    } else {
        if (keys_fp32) pdl_launch(pdl, decode_attention_kernel<64, float>, grid, DEC_THREADS, 0, ctx->stream, an, *a, *c);
        else pdl_launch(pdl, decode_attention_kernel<64, floatX>, grid, DEC_THREADS, 0, ctx->stream, an, *a, *c);
        if (!a->combine_ticket) pdl_launch(pdl, decode_combine_kernel<64>, a->H, 64, 0, ctx->stream, "decode_combine_kernel", *c);
    }
}

// ---------------------------------------------------------------------------------------------
// The decoder: state + one-row activations + the step graph

typedef struct {
    floatX *x, *hn, *q, *k, *v, *lam, *attn_out, *mid, *fg, *fu, *fa, *hf, *logits;  // one token's rows
    float *rstd, *gate, *logits_f32, *part, *scores;
    long long* ins;    // [L][2] (p, slot) of this token per layer, from decode_evict_kernel (use_fused bit 16)
    int* token;
    unsigned* ticket;  // [1 + Hkv] the fused kernels' "last CTA" counters (the write's, then one per KV head for
                       // the combine), zero between launches
    unsigned* chain_bar;  // [GEMV_CHAIN_BAR] gemv_chain's barrier counters (use_fused bit 32), zero between launches
} DecodeActs;

typedef struct {
    GpuModel* m;
    GpuDecodeState st;
    DecodeActs a;
    int splits, use_graph, n_steps;
    int use_cublas;       // the step's matmuls on cuBLASLt instead of gemv.cuh (the benchmark's baseline)
    int use_fused;        // bits (gemv path only): 1 the norms fused into the gemvs, 2 RoPE + write gate + scores in one kernel,
                          // 4 the write in that kernel's last CTA, 8 the combine in the attention's last split CTAs,
                          // 16 (with 2, not 4, bounded) the write's token-independent half a step ahead on `side`
    cudaStream_t side;    // bounded: the second stream of bit 16 (scores + evictions of every layer)
    cudaEvent_t fork;     // recorded on the model's stream where the step starts; `side` waits on it
    cudaEvent_t* evicted; // [L]: layer l's eviction done; the model's stream waits on it before layer l's RoPE
    int use_pdl;          // the step's kernels with Programmatic Dependent Launch
    int l2_prefetch_o;    // the attention kernel prefetches the o-proj weights into L2
    int gemv_l2_ahead;    // the gemvs' L2 prefetch distance (load steps; 0: none)
    int gemv_preload;     // the gemvs load a step's weights one step ahead, step 0's before the PDL wait (GemvOpts.preload)
    int gemv_rows[4];     // rows per warp of the q/k/v/lambda, o-proj, gate+up and down gemvs (0: by shape)
    int chain_stages;     // bit 32: the chain's shared-memory slots a warp, 1-16 (0: gemv.cuh's default, as many as fit)
    int chain_chunk;      // bit 32: the elements of a slot (0: gemv.cuh's default)
    int chain_poll_ns;    // bit 32: the chain's barrier polls its counter every that many ns (0: a tight loop)
    int chained;          // the last step enqueued ran the gemv chain (bit 32 set and every phase able to)
    long long pos;        // tokens held (the device's pos[l] of every layer, mirrored)
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    int* token_host;      // pinned
    float* logits_host;   // pinned [V]
} GpuDecoder;

static int decode__env_int(const char* name, int dflt) {
    const char* v = getenv(name);
    if (!v || !*v) return dflt;
    char* end = NULL;
    const long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1000) coda_fatal("%s=%s: expected an integer in [0, 1000]", name, v);
    return (int)x;
}

// max_len: tokens the decoder must hold (unbounded: the KV cache's capacity; bounded: unused).
// use_graph: replay the step as a CUDA graph (after one eager step has set up the matmul plans).
static void gpu_decoder_init(GpuDecoder* d, GpuModel* m, int max_len, int use_graph) {
    const ModelConfig* c = &m->cfg;
    memset(d, 0, sizeof(*d));
    d->m = m;
    d->use_graph = use_graph;
    // the fast step's switches (read when a step is enqueued: set them before the first step to A/B a decoder)
    d->use_fused = decode__env_int("CODA_DECODE_FUSED", 19);
    d->use_pdl = decode__env_int("CODA_DECODE_PDL", 1);
    // measured on an H200 (dev/PERF.md, v4): neither L2 prefetch pays, so both are off by default
    d->l2_prefetch_o = decode__env_int("CODA_DECODE_L2_O", 0);
    d->gemv_l2_ahead = decode__env_int("CODA_GEMV_L2_AHEAD", 0);
    d->gemv_preload = decode__env_int("CODA_GEMV_PRELOAD", 0);  // measured slower too (v4c)
    const char* rows_env[4] = {"CODA_GEMV_ROWS_QKV", "CODA_GEMV_ROWS_O", "CODA_GEMV_ROWS_MLP", "CODA_GEMV_ROWS_DOWN"};
    for (int j = 0; j < 4; j++) d->gemv_rows[j] = decode__env_int(rows_env[j], j == 0 ? 1 : 0);
    d->chain_stages = decode__env_int("CODA_CHAIN_STAGES", 0);
    d->chain_chunk = decode__env_int("CODA_CHAIN_CHUNK", 0) * 256;  // in 256-element units (bf16: 512 bytes)
    d->chain_poll_ns = decode__env_int("CODA_CHAIN_POLL_NS", 0);
    {
        int dev = 0, major = 0;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        if (major < 9) d->use_pdl = 0;  // griddepcontrol is sm_90+
    }
    if (c->head_dim != 64 && c->head_dim != 128) coda_fatal("GPU decode: head_dim %d (the kernels take 64 and 128)", c->head_dim);
    const int G = c->n_heads / c->n_kv_heads, nq = G * (c->differential ? 2 : 1);
    if (nq > DEC_MAXQ)
        coda_fatal("GPU decode: %d query heads per KV head x %d streams = %d queries per KV head; the decode attention takes at most %d",
                   G, c->differential ? 2 : 1, nq, DEC_MAXQ);
    gpu_decode_state_alloc(&d->st, c, max_len);
    const int keys = c->bounded ? config_state_slots(c) : max_len;
    d->splits = decode_attention_splits(keys, c->n_kv_heads, m->ctx.sm_count);
    const size_t D = c->dim, F = c->ffn_dim, QD = config_qdim(c), KVD = config_kvdim(c), V = c->vocab_size;
    DecodeActs* a = &d->a;
    const char* w = "decode activations";
    a->x = (floatX*)cuda_malloc_or_die(sizeof(floatX) * D, w);
    a->hn = (floatX*)cuda_malloc_or_die(sizeof(floatX) * D, w);
    a->hf = (floatX*)cuda_malloc_or_die(sizeof(floatX) * D, w);
    a->mid = (floatX*)cuda_malloc_or_die(sizeof(floatX) * D, w);
    a->q = (floatX*)cuda_malloc_or_die(sizeof(floatX) * QD, w);
    a->attn_out = (floatX*)cuda_malloc_or_die(sizeof(floatX) * QD, w);
    a->k = (floatX*)cuda_malloc_or_die(sizeof(floatX) * KVD, w);
    a->v = (floatX*)cuda_malloc_or_die(sizeof(floatX) * KVD, w);
    a->lam = (floatX*)cuda_malloc_or_die(sizeof(floatX) * c->n_heads, w);
    a->fg = (floatX*)cuda_malloc_or_die(sizeof(floatX) * F, w);
    a->fu = (floatX*)cuda_malloc_or_die(sizeof(floatX) * F, w);
    a->fa = (floatX*)cuda_malloc_or_die(sizeof(floatX) * F, w);
    a->logits = (floatX*)cuda_malloc_or_die(sizeof(floatX) * V, w);
    a->logits_f32 = (float*)cuda_malloc_or_die(sizeof(float) * V, w);
    a->rstd = (float*)cuda_malloc_or_die(sizeof(float) * 2, w);
    a->gate = (float*)cuda_malloc_or_die(sizeof(float) * 2, w);
    a->part = (float*)cuda_malloc_or_die(sizeof(float) * c->n_kv_heads * d->splits * nq * (c->head_dim + 2), w);
    a->token = (int*)cuda_malloc_or_die(sizeof(int), w);
    a->ticket = (unsigned*)cuda_malloc_or_die(sizeof(unsigned) * (1 + c->n_kv_heads), w);
    cudaCheck(cudaMemset(a->ticket, 0, sizeof(unsigned) * (1 + c->n_kv_heads)));
    a->chain_bar = (unsigned*)cuda_malloc_or_die(sizeof(unsigned) * GEMV_CHAIN_BAR, w);
    cudaCheck(cudaMemset(a->chain_bar, 0, sizeof(unsigned) * GEMV_CHAIN_BAR));
    a->scores = (float*)cuda_malloc_or_die(sizeof(float) * (c->n_exact + c->n_summary + 1), w);
    if (c->bounded) {
        a->ins = (long long*)cuda_malloc_or_die(sizeof(long long) * 2 * c->n_layers, w);
        cudaCheck(cudaStreamCreateWithFlags(&d->side, cudaStreamNonBlocking));
        cudaCheck(cudaEventCreateWithFlags(&d->fork, cudaEventDisableTiming));
        d->evicted = (cudaEvent_t*)malloc(sizeof(cudaEvent_t) * c->n_layers);
        if (!d->evicted) coda_fatal("GPU decode: out of host memory");
        for (int l = 0; l < c->n_layers; l++) cudaCheck(cudaEventCreateWithFlags(&d->evicted[l], cudaEventDisableTiming));
    }
    cudaCheck(cudaMallocHost((void**)&d->token_host, sizeof(int)));
    cudaCheck(cudaMallocHost((void**)&d->logits_host, sizeof(float) * V));
}

static void gpu_decoder_free(GpuDecoder* d) {
    if (d->exec) cudaCheck(cudaGraphExecDestroy(d->exec));
    if (d->graph) cudaCheck(cudaGraphDestroy(d->graph));
    DecodeActs* a = &d->a;
    void* ptrs[] = {a->x, a->hn, a->hf, a->mid, a->q, a->attn_out, a->k, a->v, a->lam, a->fg, a->fu, a->fa, a->logits, a->logits_f32,
                    a->rstd, a->gate, a->part, a->token, a->scores, a->ins, a->ticket, a->chain_bar};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) cudaCheck(cudaFree(ptrs[i]));
    if (d->side) {
        for (int l = 0; l < d->m->cfg.n_layers; l++) cudaCheck(cudaEventDestroy(d->evicted[l]));
        free(d->evicted);
        cudaCheck(cudaEventDestroy(d->fork));
        cudaCheck(cudaStreamDestroy(d->side));
    }
    cudaCheck(cudaFreeHost(d->token_host));
    cudaCheck(cudaFreeHost(d->logits_host));
    gpu_decode_state_free(&d->st);
    memset(d, 0, sizeof(*d));
}

// The gemv options of this decoder's step (norm_w: the RMSNorm fused into the gemv, or NULL).
static GemvOpts decoder__gemv_opts(const GpuDecoder* d, const floatX* norm_w, floatX* norm_out, int rows = 0) {
    GemvOpts o;
    memset(&o, 0, sizeof(o));
    o.pdl = d->use_pdl;
    o.l2_ahead = d->gemv_l2_ahead;
    o.preload = d->gemv_preload;
    o.norm_w = norm_w;
    o.norm_eps = d->m->cfg.norm_eps;
    o.norm_out = norm_out;
    o.rows = rows;
    return o;
}

// out = (res ? res : 0) + x · Wᵀ (+ bias) for one row: gemv.cuh, or cuBLASLt (+ a residual add).
static void decoder__linear(const GpuDecoder* d, floatX* out, const floatX* x, const floatX* W, const floatX* bias, const floatX* res, int I,
                            int O, int rows = 0) {
    const GpuContext* ctx = &d->m->ctx;
    if (!d->use_cublas) {
        const GemvOpts o = decoder__gemv_opts(d, NULL, NULL, rows);
        gemv_forward(ctx, out, x, W, bias, res, I, O, &o);
        return;
    }
    matmul_forward(ctx, out, x, W, bias, 1, I, O);
    if (res) residual_add(ctx, out, out, res, O);
}

// The final norm and the LM head over one hidden row -> a->logits_f32 (head_done: a->logits is already
// formed, by the last layer's gemv chain).
static void decoder__logits(GpuDecoder* d, const floatX* hidden, int head_done) {
    GpuModel* m = d->m;
    const ModelConfig* c = &m->cfg;
    const GpuContext* ctx = &m->ctx;
    if (head_done) {
        // the chain's last phase formed a->logits (and a->hf)
    } else if ((d->use_fused & 1) && !d->use_cublas) {  // the norm inside the LM head's gemv
        const GemvOpts o = decoder__gemv_opts(d, gm_param(m, PK_FINAL_NORM, 0), d->a.hf);
        gemv_forward(ctx, d->a.logits, hidden, gm_head(m), NULL, NULL, c->dim, c->vocab_size, &o);
    } else {
        rmsnorm_forward(ctx, d->a.hf, d->a.rstd, hidden, gm_param(m, PK_FINAL_NORM, 0), 1, c->dim, c->norm_eps);
        decoder__linear(d, d->a.logits, d->a.hf, gm_head(m), NULL, NULL, c->dim, c->vocab_size);
    }
    floatX_to_float(ctx, d->a.logits_f32, d->a.logits, c->vocab_size);
}

// The q/k/v (and lambda) projections of layer l as one batch of matrices (out, W, bias, O).
static GemvBatch decoder__qkv_batch(const GpuDecoder* d, int l) {
    const GpuModel* m = d->m;
    const ModelConfig* c = &m->cfg;
    GemvBatch bt;
    memset(&bt, 0, sizeof(bt));
    floatX* outs[4] = {d->a.q, d->a.k, d->a.v, d->a.lam};
    const ParamKind kinds[4] = {PK_Q, PK_K, PK_V, PK_LAMBDA_W};
    const int Os[4] = {config_qdim(c), config_kvdim(c), config_kvdim(c), c->n_heads};
    bt.n = c->differential ? 4 : 3;
    for (int j = 0; j < bt.n; j++) { bt.out[j] = outs[j]; bt.W[j] = gm_param(m, kinds[j], l); bt.O[j] = Os[j]; }
    if (c->differential) bt.bias[3] = gm_param(m, PK_LAMBDA_B, l);
    return bt;
}

// use_fused bit 32: layer l's gemvs after the attention as one chain (gemv.cuh's gemv_chain):
//   mid = x + o_proj(attn_out);  fa = swiglu(gate, up)(rmsnorm(mid));  x = mid + down(fa);
//   then layer l + 1's q, k, v, lambda of rmsnorm(x), or, after the last layer, the LM head of the final norm.
// Returns 0 when a phase cannot take the chain's vector path (the step then launches the gemvs one by one).
static int decoder__chain(const GpuDecoder* d, int l, GemvChain* ch) {
    GpuModel* m = d->m;
    const ModelConfig* c = &m->cfg;
    const DecodeActs* a = &d->a;
    memset(ch, 0, sizeof(*ch));
    ch->n = 4;
    ch->norm_eps = c->norm_eps;
    ch->bar = a->chain_bar;
    ch->poll_ns = d->chain_poll_ns;
    auto plain = [&](GemvPhase* ph, floatX* out, const floatX* W, int O, const floatX* x, int I, const floatX* res) {
        ph->bt.n = 1; ph->bt.out[0] = out; ph->bt.W[0] = W; ph->bt.O[0] = O; ph->x = x; ph->I = I; ph->res = res;
    };
    GemvPhase* ph = ch->ph;
    plain(&ph[0], a->mid, gm_param(m, PK_O, l), c->dim, a->attn_out, config_qdim(c), a->x);
    plain(&ph[1], a->fa, gm_param(m, PK_GATE, l), c->ffn_dim, a->mid, c->dim, NULL);
    ph[1].W2 = gm_param(m, PK_UP, l); ph[1].norm_w = gm_param(m, PK_MLP_NORM, l); ph[1].norm_out = a->hn;
    plain(&ph[2], a->x, gm_param(m, PK_DOWN, l), c->dim, a->fa, c->ffn_dim, a->mid);
    if (l + 1 < c->n_layers) {
        ph[3].bt = decoder__qkv_batch(d, l + 1); ph[3].x = a->x; ph[3].I = c->dim;
        ph[3].norm_w = gm_param(m, PK_ATTN_NORM, l + 1); ph[3].norm_out = a->hn;
    } else {
        plain(&ph[3], a->logits, gm_head(m), c->vocab_size, a->x, c->dim, NULL);
        ph[3].norm_w = gm_param(m, PK_FINAL_NORM, 0); ph[3].norm_out = a->hf;
    }
    return gemv_chain_stages(ch, d->chain_stages, d->chain_chunk) > 0;
}

// One step's kernels on the model's stream, the token read from a.token (the body of the graph).
// Per layer, gemv path: 12 launches, 8 with use_fused = 3 (bit 1: the norms in the gemvs; bit 2: RoPE,
// write gate and scores in one kernel), 6 with 15 (bits 4 and 8: the write and the combine folded into
// the launches before them); use_pdl launches them all with Programmatic Dependent Launch.
static void decoder__enqueue_step(GpuDecoder* d) {
    GpuModel* m = d->m;
    const ModelConfig* c = &m->cfg;
    const GpuContext* ctx = &m->ctx;
    DecodeActs* a = &d->a;
    GpuDecodeState* st = &d->st;
    const int D = c->dim, F = c->ffn_dim, QD = config_qdim(c), KVD = config_kvdim(c), H = c->n_heads, Dh = c->head_dim;
    const RopeFreqs fr = rope_freqs(Dh, config_rope_base(c), c->rope_bf16_positions);
    const int fused = (d->use_fused & 1) && !d->use_cublas, fused_rope = (d->use_fused & 2) && !d->use_cublas;
    const int pdl = d->use_pdl && !d->use_cublas;
    const int write_fused = c->bounded && fused_rope && (d->use_fused & 4);  // the write in the last CTA of the RoPE launch
    const int write_ahead = c->bounded && fused_rope && !write_fused && (d->use_fused & 16);
    int chain = fused && (d->use_fused & 32);  // the gemvs after each layer's attention in one launch
    for (int l = 0; chain && l < c->n_layers; l++) {
        GemvChain ch;
        chain = decoder__chain(d, l, &ch);
    }
    d->chained = chain;
    if (write_ahead) {  // every layer's scores and eviction on `side`, from the state the previous step left
        cudaCheck(cudaEventRecord(d->fork, ctx->stream));
        cudaCheck(cudaStreamWaitEvent(d->side, d->fork, 0));
        for (int l = 0; l < c->n_layers; l++) {
            DecodeWriteArgs w = decode_write_args(st, c, l, a->k, a->v, a->gate, gm_param(m, PK_ETA, l), a->scores);
            w.ins = a->ins + 2 * l;
            // without PDL: a launch placed early would hold SMs while it waits, under the step's gemvs
            if (st->Me + st->Ms > 0)
                pdl_launch(0, decode_score_kernel, st->Me + st->Ms, DEC_THREADS, decode_score_smem(w.Hkv, w.Dh), d->side, "decode_score_kernel", w);
            pdl_launch(0, decode_evict_kernel, 1, DEC_THREADS, decode_write_smem(w.Hkv, w.Dh), d->side, "decode_evict_kernel", w);
            cudaCheck(cudaEventRecord(d->evicted[l], d->side));
        }
    }
    encoder_forward(ctx, a->x, a->token, gm_param(m, PK_EMBED, 0), 1, D);
    for (int l = 0; l < c->n_layers; l++) {
        // attention: q, k, v (and lam) of the normed input, RoPE at pos[l]
        if (!fused) rmsnorm_forward(ctx, a->hn, a->rstd, a->x, gm_param(m, PK_ATTN_NORM, l), 1, D, c->norm_eps);
        if (d->use_cublas) {
            decoder__linear(d, a->q, a->hn, gm_param(m, PK_Q, l), NULL, NULL, D, QD);
            decoder__linear(d, a->k, a->hn, gm_param(m, PK_K, l), NULL, NULL, D, KVD);
            decoder__linear(d, a->v, a->hn, gm_param(m, PK_V, l), NULL, NULL, D, KVD);
            if (c->differential) decoder__linear(d, a->lam, a->hn, gm_param(m, PK_LAMBDA_W, l), gm_param(m, PK_LAMBDA_B, l), NULL, D, H);
        } else if (!chain || l == 0) {  // one launch for the four projections (fused: of rmsnorm(x), hn stored for the write gate)
            GemvBatch bt = decoder__qkv_batch(d, l);
            const GemvOpts o = decoder__gemv_opts(d, fused ? gm_param(m, PK_ATTN_NORM, l) : NULL, a->hn, d->gemv_rows[0]);
            gemv_batch(ctx, &bt, fused ? a->x : a->hn, D, &o);
        }
        long long* pos = st->pos + l;
        DecodeWriteArgs w;
        memset(&w, 0, sizeof(w));
        if (c->bounded) w = decode_write_args(st, c, l, a->k, a->v, a->gate, gm_param(m, PK_ETA, l), a->scores);
        if (fused_rope) {  // RoPE + write gate + the routing scores
            DecodeRopeGateArgs rg;
            memset(&rg, 0, sizeof(rg));
            rg.q = a->q; rg.k = a->k; rg.pos = pos; rg.H = H; rg.Hkv = c->n_kv_heads; rg.Dh = Dh;
            rg.interleaved = c->rope_layout == ROPE_INTERLEAVED; rg.bf16_positions = c->rope_bf16_positions;
            if (c->bounded) {
                rg.gate = a->gate; rg.hn = a->hn; rg.gate_w = gm_param(m, PK_WRITE_W, l); rg.gate_b = gm_param(m, PK_WRITE_B, l);
                rg.D = D; rg.gated = c->write_policy == WRITE_POLICY_GATED; rg.n_score = write_ahead ? 0 : st->Me + st->Ms;
            }
            if (write_fused) rg.ticket = a->ticket;
            if (write_ahead) {  // the slot is chosen and the banks written: this launch puts the token in
                rg.ins = a->ins + 2 * l;
                cudaCheck(cudaStreamWaitEvent(ctx->stream, d->evicted[l], 0));
            }
            pdl_launch(pdl, decode_rope_gate_score_kernel, 1 + decode_rope_ctas(H, c->n_kv_heads, Dh) + rg.n_score, DEC_THREADS,
                       decode_rope_gate_score_smem(&rg), ctx->stream, "decode_rope_gate_score_kernel", rg, w, fr);
        } else {
            pdl_launch(pdl, decode_rope_kernel, 1, 64, 0, ctx->stream, "decode_rope_kernel", a->q, a->k, (const long long*)pos, H, c->n_kv_heads,
                       Dh, (int)(c->rope_layout == ROPE_INTERLEAVED), c->rope_bf16_positions, fr);
        }
        // the token into the state (bounded: write first, docs/spec.md §2.4) or the cache; then the key set
        DecodeAttnArgs at;
        memset(&at, 0, sizeof(at));
        at.q = a->q; at.theta = c->differential ? gm_param(m, PK_THETA, l) : NULL;
        at.H = H; at.Hkv = c->n_kv_heads; at.differential = c->differential; at.splits = d->splits; at.part = a->part;
        if ((d->use_fused & 8) && !d->use_cublas) at.combine_ticket = a->ticket + 1;
        if (d->l2_prefetch_o && !d->use_cublas) { at.l2_prefetch = gm_param(m, PK_O, l); at.l2_prefetch_bytes = (size_t)QD * D * sizeof(floatX); }
        if (c->bounded) {
            if (!fused_rope)
                write_gate_forward(ctx, a->gate, a->hn, gm_param(m, PK_WRITE_W, l), gm_param(m, PK_WRITE_B, l), 1, D,
                                   c->write_policy == WRITE_POLICY_GATED);
            if (!write_fused && !write_ahead) decode_write_one(ctx, &w, pdl, fused_rope);
            at.k = w.k; at.v = w.v; at.head_stride = (size_t)st->slots * Dh; at.key_stride = Dh;
            at.allowed = c->mask_unused_memory ? w.allowed : NULL;
            at.n_fixed = st->slots;
        } else {
            const size_t off = (size_t)l * st->max_len * KVD;
            pdl_launch(pdl, decode_append_kernel, 1, DEC_THREADS, 0, ctx->stream, "decode_append_kernel", st->cache_k + off, st->cache_v + off, pos,
                       (const floatX*)a->k, (const floatX*)a->v, KVD);
            at.k = st->cache_k + off; at.v = st->cache_v + off; at.head_stride = Dh; at.key_stride = KVD;
            at.n_dev = pos;
        }
        DecodeCombineArgs cb = {a->part, c->differential ? a->lam : NULL,
                                c->differential && c->head_norm == HEAD_NORM_FULL ? gm_param(m, PK_HEAD_NORM, l) : NULL,
                                c->head_norm_eps, a->attn_out, H, c->n_kv_heads, c->differential, d->splits};
        decode_attention(ctx, &at, &cb, Dh, c->bounded, pdl);
        if (chain) {  // o-proj, MLP, and the next layer's q/k/v/lambda (or the LM head) in one launch
            GemvChain ch;
            decoder__chain(d, l, &ch);
            gemv_chain(ctx, &ch, d->chain_stages, d->chain_chunk, pdl);
            continue;
        }
        decoder__linear(d, a->mid, a->attn_out, gm_param(m, PK_O, l), NULL, a->x, QD, D, d->gemv_rows[1]);  // mid = x + o_proj(attention)
        // MLP: x = mid + down(swiglu(gate, up)(rmsnorm(mid)))
        if (!fused) rmsnorm_forward(ctx, a->hn, a->rstd, a->mid, gm_param(m, PK_MLP_NORM, l), 1, D, c->norm_eps);
        if (d->use_cublas) {
            matmul_forward(ctx, a->fg, a->hn, gm_param(m, PK_GATE, l), NULL, 1, D, F);
            matmul_forward(ctx, a->fu, a->hn, gm_param(m, PK_UP, l), NULL, 1, D, F);
            swiglu_forward(ctx, a->fa, a->fg, a->fu, F);
        } else {
            const GemvOpts o = decoder__gemv_opts(d, fused ? gm_param(m, PK_MLP_NORM, l) : NULL, a->hn, d->gemv_rows[2]);
            gemv_swiglu(ctx, a->fa, fused ? a->mid : a->hn, gm_param(m, PK_GATE, l), gm_param(m, PK_UP, l), D, F, &o);
        }
        decoder__linear(d, a->x, a->fa, gm_param(m, PK_DOWN, l), NULL, a->mid, F, D, d->gemv_rows[3]);
    }
    decoder__logits(d, a->x, chain);
}

// Feeds one token: the next-token logits land in d->logits_host (fp32, [V]). The first step runs
// eagerly (it creates the matmul plans); with use_graph the later ones replay its capture.
static int gpu_decoder_step(GpuDecoder* d, int token, CodaError* err) {
    GpuModel* m = d->m;
    const ModelConfig* c = &m->cfg;
    cudaStream_t stream = m->ctx.stream;
    if (token < 0 || token >= c->vocab_size) return coda_errorf(err, "token %d is outside the model's vocabulary [0, %d)", token, c->vocab_size);
    if (!c->bounded && d->pos >= d->st.max_len)
        return coda_errorf(err, "the KV cache is full (%d tokens): give a larger capacity", d->st.max_len);
    *d->token_host = token;
    cudaCheck(cudaMemcpyAsync(d->a.token, d->token_host, sizeof(int), cudaMemcpyHostToDevice, stream));
    if (d->use_graph && d->n_steps >= 1 && !d->exec) {
        cudaCheck(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        decoder__enqueue_step(d);
        cudaCheck(cudaStreamEndCapture(stream, &d->graph));
        cudaCheck(cudaGraphInstantiate(&d->exec, d->graph, 0));
    }
    if (d->exec) cudaCheck(cudaGraphLaunch(d->exec, stream));
    else decoder__enqueue_step(d);
    cudaCheck(cudaMemcpyAsync(d->logits_host, d->a.logits_f32, sizeof(float) * c->vocab_size, cudaMemcpyDeviceToHost, stream));
    cudaCheck(cudaStreamSynchronize(stream));
    d->n_steps++;
    d->pos++;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Prefill: the prompt through the training forward (one row; bounded = the chunked prefill of
// docs/spec.md §2.3, the scan-then-attend kernels), continuing the state the decoder holds (empty or
// not: model.cuh's GpuCarry). Per bounded layer, the carry's fill copies the state in (the ring
// into the rows in front of the layer's k/v/gates, the banks and flags into the scan's start), and
// the layer hook copies the state after the forward out, while the layer's activations are live.
// The unbounded KV cache is filled from an empty cache only.

// Layer l's state into a continued forward: ring tokens oldest first (the ring starts at recent_idx
// when full, else at slot 0) into rows [-hist, 0) of k, v (floatX: the values a forward produced, so
// the round trip is exact) and gate; bank slots into bank_k/bank_v [Hkv][Mb][Dh]; flags in
// BankScanInit's layout. Grid hist + 1: block i < hist one ring token, the last block the flags.
__global__ void decode_export_kernel(floatX* seq_k, floatX* seq_v, float* gate, float* bank_k, float* bank_v, int* flags,
                                     const float* k, const float* v, const unsigned char* allowed, const float* g_ring,
                                     const long long* src, const long long* last_exact, const int* ring, int hist, int W, int Me,
                                     int Ms, int Hkv, int Dh) {
    const int slots = W + Me + Ms, Mb = Me + Ms, kvd = Hkv * Dh, i = blockIdx.x;
    if (i < hist) {
        const int first = ring[1] == W ? ring[0] : 0, slot = (first + i) % W;
        const long long row = (long long)(i - hist) * kvd;
        for (int e = threadIdx.x; e < kvd; e += blockDim.x) {
            const int g = e / Dh, d = e % Dh;
            seq_k[row + e] = from_float<floatX>(k[((size_t)g * slots + slot) * Dh + d]);
            seq_v[row + e] = from_float<floatX>(v[((size_t)g * slots + slot) * Dh + d]);
        }
        if (threadIdx.x == 0) gate[i - hist] = g_ring[slot];
        return;
    }
    for (int e = threadIdx.x; e < Hkv * Mb * Dh; e += blockDim.x) {
        const int g = e / (Mb * Dh), m = (e / Dh) % Mb, d = e % Dh;
        bank_k[e] = k[((size_t)g * slots + W + m) * Dh + d];
        bank_v[e] = v[((size_t)g * slots + W + m) * Dh + d];
    }
    for (int m = threadIdx.x; m < Me; m += blockDim.x) {
        flags[m] = allowed[W + m];
        flags[Me + m] = (int)last_exact[m];
        flags[2 * Me + m] = (int)src[W + m];
    }
    for (int m = threadIdx.x; m < Ms; m += blockDim.x) flags[3 * Me + m] = allowed[W + Me + m];
}

// One layer's state after the scan (bounded) from the scan scratch, the layer's k, v, gates: the
// ring holds the last keep = min(W, hist + T) tokens oldest first (what bank_write_block leaves; rows
// before 0 are the carried-in ones), row t at position pos0 + t.
__global__ void decode_import_kernel(float* k, float* v, unsigned char* allowed, float* g_ring, long long* src, long long* last_exact,
                                     int* ring, long long* pos, const floatX* seq_k, const floatX* seq_v, const float* gate,
                                     const int* final_e, const int* final_s, int T, int hist, long long pos0, int W, int Me, int Ms,
                                     int Hkv, int Dh) {
    const int slots = W + Me + Ms, keep = hist + T < W ? hist + T : W, i = blockIdx.x, kvd = Hkv * Dh;
    if (i < W) {  // ring slot i
        const long long t = (long long)T - keep + i;
        for (int e = threadIdx.x; e < kvd; e += blockDim.x) {
            const int g = e / Dh, d = e % Dh;
            k[((size_t)g * slots + i) * Dh + d] = i < keep ? to_float(seq_k[t * kvd + e]) : 0.f;
            v[((size_t)g * slots + i) * Dh + d] = i < keep ? to_float(seq_v[t * kvd + e]) : 0.f;
        }
        if (threadIdx.x == 0) {
            allowed[i] = i < keep;
            g_ring[i] = i < keep ? gate[t] : 0.f;
            src[i] = i < keep ? pos0 + t : -1;
        }
        return;
    }
    for (int m = threadIdx.x; m < Me; m += blockDim.x) {  // the flags block
        allowed[W + m] = (unsigned char)final_e[m];
        last_exact[m] = final_e[Me + m];
        src[W + m] = final_e[2 * Me + m];
    }
    for (int m = threadIdx.x; m < Ms; m += blockDim.x) { allowed[W + Me + m] = (unsigned char)final_s[m]; src[W + Me + m] = -1; }
    if (threadIdx.x == 0) { ring[0] = 0; ring[1] = keep; *pos = pos0 + T; }
}

// GpuCarry.fill over a GpuDecodeState (ctx): layer l's state into the forward.
static void decode_state_carry_fill(GpuModel* m, int l, void* ctx_) {
    const GpuDecodeState* st = (const GpuDecodeState*)ctx_;
    const LayerActs* a = gm_layer_acts(m, l);
    const size_t kv = (size_t)st->Hkv * st->slots * st->Dh;
    decode_export_kernel<<<m->carry.hist + 1, 256, 0, m->ctx.stream>>>(
        a->k, a->v, a->wgate, m->carry_bank_k, m->carry_bank_v, m->carry_flags, st->k + l * kv, st->v + l * kv,
        st->allowed + (size_t)l * st->slots, st->g_ring + (size_t)l * st->W, st->src + (size_t)l * st->slots,
        st->last_exact + (size_t)l * st->Me, st->ring + 2 * l, m->carry.hist, st->W, st->Me, st->Ms, st->Hkv, st->Dh);
    cudaCheckLaunch("decode_export_kernel");
}

// GpuModel.layer_hook over a GpuDecodeState (ctx): layer l's state after the forward out of it
// (bounded), or its k/v rows into the KV cache (unbounded, from row 0).
static void decode_state_layer_hook(GpuModel* m, int l, void* ctx_) {
    GpuDecodeState* st = (GpuDecodeState*)ctx_;
    const ModelConfig* c = &m->cfg;
    const GpuContext* ctx = &m->ctx;
    const LayerActs* a = gm_layer_acts(m, l);
    const int T = m->T, KVD = config_kvdim(c), Dh = c->head_dim;
    if (!c->bounded) {
        const size_t off = (size_t)l * st->max_len * KVD;
        cudaCheck(cudaMemcpyAsync(st->cache_k + off, a->k, sizeof(floatX) * T * KVD, cudaMemcpyDeviceToDevice, ctx->stream));
        cudaCheck(cudaMemcpyAsync(st->cache_v + off, a->v, sizeof(floatX) * T * KVD, cudaMemcpyDeviceToDevice, ctx->stream));
        return;
    }
    const BankScanShape bs = gm_scan_shape(m);
    BankScratch w;
    bank_scan_carve_scratch(&w, m->scan_scratch, &bs);
    const int Mb = st->Me + st->Ms;
    const size_t kv = (size_t)st->Hkv * st->slots * Dh;
    float *k = st->k + l * kv, *v = st->v + l * kv;
    if (Mb > 0) {  // the banks: [Hkv][Mb][Dh] of the scan scratch into slots [W, W+Mb) of each head
        const size_t dp = (size_t)st->slots * Dh * sizeof(float), sp = (size_t)Mb * Dh * sizeof(float);
        cudaCheck(cudaMemcpy2DAsync(k + (size_t)st->W * Dh, dp, w.state_k, sp, sp, st->Hkv, cudaMemcpyDeviceToDevice, ctx->stream));
        cudaCheck(cudaMemcpy2DAsync(v + (size_t)st->W * Dh, dp, w.state_v, sp, sp, st->Hkv, cudaMemcpyDeviceToDevice, ctx->stream));
    }
    decode_import_kernel<<<st->W + 1, 256, 0, ctx->stream>>>(k, v, st->allowed + (size_t)l * st->slots, st->g_ring + (size_t)l * st->W,
                                                           st->src + (size_t)l * st->slots, st->last_exact + (size_t)l * st->Me,
                                                           st->ring + 2 * l, st->pos + l, a->k, a->v, a->wgate, w.final_e, w.final_s, T,
                                                           bs.hist, bs.pos0, st->W, st->Me, st->Ms, st->Hkv, Dh);
    cudaCheckLaunch("decode_import_kernel");
}

// One forward of the m->T tokens tok (targets as gpu_model_forward's, may be NULL; activations from
// gpu_model_alloc_acts_carry), continuing the bounded state st that holds `held` tokens (0: empty,
// its banks at their initial contents) and leaving in st the state after the last token; an
// unbounded model's KV cache (held = 0 only) gets the T rows. Returns the sum of the scored targets'
// losses, as gpu_model_forward.
static double gpu_model_forward_state(GpuModel* m, GpuDecodeState* st, long long held, const int* tok, const int* targets,
                                      int* n_scored) {
    const ModelConfig* c = &m->cfg;
    if (c->bounded) {
        GpuCarry cy = {decode_state_carry_fill, st, (int)(held < c->window ? held : c->window), (int)held};
        gpu_model_set_carry(m, &cy);
    } else if (held != 0) {
        coda_fatal("gpu_model_forward_state: the unbounded KV cache is filled from an empty cache only (it holds %lld tokens)", held);
    }
    m->layer_hook = decode_state_layer_hook;
    m->hook_ctx = st;
    double sum = gpu_model_forward(m, tok, targets, 0.0f, n_scored);
    m->layer_hook = NULL;
    m->hook_ctx = NULL;
    gpu_model_set_carry(m, NULL);
    return sum;
}

__global__ void decode_set_pos_kernel(long long* pos, int L, long long value) {
    for (int l = threadIdx.x; l < L; l += blockDim.x) pos[l] = value;
}

// Feeds ids[0, n) into the decoder with one forward of the model (whose activations are set up here
// for one row of n tokens and freed again; recompute and the logits' chunking bound the memory of
// long prompts), continuing its state: empty after gpu_decoder_reset, or what earlier prompts,
// steps or a loaded state file left (bounded; the KV cache must be empty). The next-token logits land
// in d->logits_host.
static int gpu_decoder_prefill(GpuDecoder* d, const int* ids, int n, int recompute, CodaError* err) {
    GpuModel* m = d->m;
    const ModelConfig* c = &m->cfg;
    if (n < 1) return coda_errorf(err, "the prompt is empty");
    if (!c->bounded && d->pos != 0)
        return coda_errorf(err, "the GPU KV cache holds %lld tokens; an unbounded prompt prefill starts from an empty cache (feed "
                                "further tokens one at a time, or reset)", d->pos);
    if (!c->bounded && n > d->st.max_len) return coda_errorf(err, "a prompt of %d tokens does not fit the KV cache of %d", n, d->st.max_len);
    if (d->pos + n > (long long)INT_MAX) return coda_errorf(err, "positions past 2^31 tokens are not supported (%lld held + %d)", d->pos, n);
    if (tokens_check(ids, n, c->vocab_size, err) != 0) return -1;
    gpu_model_alloc_acts_carry(m, n, recompute, n > 4096 ? 4096 : 0);
    gpu_model_forward_state(m, &d->st, d->pos, ids, NULL, NULL);
    if (!c->bounded) {
        decode_set_pos_kernel<<<1, 256, 0, m->ctx.stream>>>(d->st.pos, c->n_layers, n);
        cudaCheckLaunch("decode_set_pos_kernel");
    }
    decoder__logits(d, m->resid + ((size_t)c->n_layers * n + (n - 1)) * c->dim, 0);
    cudaCheck(cudaMemcpyAsync(d->logits_host, d->a.logits_f32, sizeof(float) * c->vocab_size, cudaMemcpyDeviceToHost, m->ctx.stream));
    cudaCheck(cudaStreamSynchronize(m->ctx.stream));
    gpu_model_free_acts(m);
    d->pos += n;
    return 0;
}

// Resets the decoder to an empty state (bounded: the banks' mem_init contents drawn from bank_seed,
// layer l from bank_seed + l, as the CPU's layer_states_reset).
static void gpu_decoder_reset(GpuDecoder* d, uint64_t bank_seed) {
    const ModelConfig* c = &d->m->cfg;
    cudaCheck(cudaMemset(d->st.mem, 0, d->st.bytes));
    d->pos = 0;
    if (!c->bounded) return;
    BankState_f32* h = layer_states_alloc(c);
    layer_states_reset(h, c, bank_seed);
    gpu_decode_state_from_host(&d->st, h);
    layer_states_free(h, c);
}

// ---------------------------------------------------------------------------------------------
// A generation session on the GPU: the decoder, the next-token logits, the sampling RNG; the same
// generation loop (session.h's generate_tokens) and state files (state_file.h) as the CPU session.

typedef struct {
    GpuDecoder dec;
    int64_t n_fed;
    int has_logits;
    Rng rng;
    uint64_t seed;
    int recompute;
} GpuSession;

// max_len: an unbounded model's KV cache capacity (prompt + new tokens); ignored when bounded.
static void gpu_session_init(GpuSession* s, GpuModel* m, int max_len, uint64_t seed) {
    memset(s, 0, sizeof(*s));
    gpu_decoder_init(&s->dec, m, max_len, 1);
    s->seed = seed;
    gpu_decoder_reset(&s->dec, seed);
    rng_seed(&s->rng, seed);
}
static void gpu_session_free(GpuSession* s) { gpu_decoder_free(&s->dec); }
// Back to the empty state of gpu_session_init (the sampling RNG runs on): nothing fed, no logits.
static void gpu_session_reset(GpuSession* s) {
    gpu_decoder_reset(&s->dec, s->seed);
    s->n_fed = 0;
    s->has_logits = 0;
}

static int gpu_session_prefill(GpuSession* s, const int* ids, int n, CodaError* err) {
    if (gpu_decoder_prefill(&s->dec, ids, n, s->recompute, err) != 0) return -1;
    s->n_fed += n;
    s->has_logits = 1;
    return 0;
}
static int gpu_session__feed(void* ctx, int token, CodaError* err) {
    GpuSession* s = (GpuSession*)ctx;
    if (gpu_decoder_step(&s->dec, token, err) != 0) return -1;
    s->n_fed++;
    s->has_logits = 1;
    return 0;
}
static int gpu_session_generate(GpuSession* s, int max_new, const Sampling* smp, int eos_id, int* out, TokenFn on_token, void* cb_ctx,
                                int* n_out, CodaError* err) {
    const ModelConfig* c = &s->dec.m->cfg;
    Generator g = {s, gpu_session__feed, s->dec.logits_host, &s->has_logits, &s->rng, c->vocab_size, c->bounded};
    return generate_tokens(&g, max_new, smp, eos_id, out, on_token, cb_ctx, n_out, err);
}

// Which model a state belongs to, as state_file_weights computes it for the CPU model: the checksum
// of the parameters widened to fp32, in the table's layout (the same element offsets in both
// precisions), streamed from the device in pieces.
static uint64_t gpu_model_weights_checksum(const GpuModel* m) {
    const size_t total = m->table.total, piece = (size_t)1 << 26;
    float* host = (float*)coda_malloc_or_die(sizeof(float) * (total < piece ? total : piece), "weights checksum");
    Checksum cs;
    checksum_init(&cs);
    for (size_t at = 0; at < total; at += piece) {
        const size_t n = total - at < piece ? total - at : piece;
        floatX_to_host(host, m->params + at, n);
        checksum_update(&cs, host, n * sizeof(float));
    }
    free(host);
    return checksum_final(&cs);
}

// The session's state on the host for state_file.h (host_states: layer_states_alloc'd by the caller).
static StateView gpu_session_state_view(GpuSession* s, BankState_f32* host_states, uint64_t weights) {
    StateView v = {&s->dec.m->cfg, weights, host_states, &s->n_fed, s->dec.logits_host, &s->has_logits, &s->rng};
    return v;
}
static int gpu_session_save_state(GpuSession* s, const char* path, CodaError* err) {
    const ModelConfig* c = &s->dec.m->cfg;
    if (!c->bounded) return coda_errorf(err, "%s: only a bounded model has a state to save (this model is unbounded)", path);
    BankState_f32* h = layer_states_alloc(c);
    gpu_decode_state_to_host(&s->dec.st, h);
    StateView v = gpu_session_state_view(s, h, gpu_model_weights_checksum(s->dec.m));
    int rc = state_file_save_view(path, &v, err);
    layer_states_free(h, c);
    return rc;
}
// On error the session is untouched.
static int gpu_session_load_state(GpuSession* s, const char* path, int keep_rng, CodaError* err) {
    const ModelConfig* c = &s->dec.m->cfg;
    if (!c->bounded) return coda_errorf(err, "%s: a bounded state cannot be loaded into an unbounded model", path);
    BankState_f32* h = layer_states_alloc(c);
    float* logits = (float*)coda_malloc_or_die(sizeof(float) * c->vocab_size, "state logits");
    int64_t n_fed = 0;
    int has_logits = 0;
    Rng rng = s->rng;
    StateView v = {c, gpu_model_weights_checksum(s->dec.m), h, &n_fed, logits, &has_logits, &rng};
    int rc = state_file_load_view(path, &v, keep_rng, err);
    if (rc == 0) {
        gpu_decode_state_from_host(&s->dec.st, h);
        s->dec.pos = n_fed;
        memcpy(s->dec.logits_host, logits, sizeof(float) * c->vocab_size);
        s->n_fed = n_fed;
        s->has_logits = has_logits;
        s->rng = rng;
    }
    free(logits);
    layer_states_free(h, c);
    return rc;
}
