// coda_attention.cuh — CoDA two-stream attention (docs/spec.md §1), unbounded (causal) and bounded (the
// key set of docs/spec.md §2.3's chunked prefill, all blocks in one launch), forward and backward, for B rows x
// T tokens, in three implementations of the same math (CodaAttnShape.impl): tiled fp32-FMA kernels on
// CUDA cores (this file; the FP32 build's exact path and the benchmarks' baseline),
// FlashAttention-2-style tensor-core kernels on mma.sync (coda_attention_mma.cuh; ~13x faster) and
// their Hopper versions on wgmma (coda_attention_wgmma.cuh; another 1.3x: what the BF16 build runs
// on an H100/H200). All share the combine kernels below. Everything is deterministic (no floating-point
// atomics): two runs on the same inputs give the same bits.
//
// Math (docs/spec.md §1.4, §1.5), per token t, query head h, KV head g = h / G:
//   qn      = R_theta[h](q)            rotation of interleaved pairs (2j, 2j+1) by theta[h, j]
//   A_sig   = softmax(q  K^T / sqrt(Dh) + mask) V
//   A_noise = softmax(qn K^T / sqrt(Dh) + mask) V         (differential only; same K/V tile)
//   lam     = sigmoid(lam_logit[t, h])
//   o       = A_sig - lam * A_noise    (A_sig when !differential)
//   out     = o * rsqrt(mean(o^2) + eps) * head_norm    when differential && head_norm_full
//             o                                         otherwise (as the CPU reference)
//
// Key sets ("mask"). Unbounded (block == 0): query i sees keys 0..i of its row. Bounded (block S > 0;
// docs/design.md §5, "scan-then-attend"): query i of block j = i / S sees
//   * its row's own keys [max(0, jS - W), i]: the ring as the write of block j-1 left it (the last
//     min(W, jS) tokens before the block, docs/spec.md §3.1 step 4) followed by block j causally, and
//   * the allowed slots of the bank block j attends to (exact + summary slots, CodaAttnBank: the bank
//     scan's snapshot of the state before block j's write, llmc/bank_scan.cuh),
//   * with mask_unused_memory off (unmasked_memory) also the W - min(W, jS) empty ring slots: zero
//     keys and values, i.e. score 0 and nothing added; they enter only the softmax's normaliser,
//     which the forward starts at (max 0, sum n_empty), and the backward reads through the lse.
// Query tiles never straddle blocks (tile = (block, tile within block)), so a tile has one key set;
// every kernel walks the bank's tiles first, then the sequence tiles from max(0, jS - W). The backward
// gives dq, dk, dv for the sequence and dbank (fp32 gradients of the bank slots as attended, per
// block), which the reverse bank scan sends on to the evicted tokens and eta (docs/spec.md §4). With
// cross_block_grad off (grad_cut) block j's queries pass no gradient to keys before (j-1)S: the state
// is cut at every block boundary (the CPU reference's state_grad_flows).
//
// Kernel structure of the FMA path (the tensor-core path mirrors it):
//   forward  block = (query tile, head h, batch row b); 512 threads = 128 (query, stream) rows x 4
//            lanes, each lane owning Dh/4 dims (float4 chunks, interleaved so smem reads are
//            conflict-free broadcasts). BOTH streams of a query tile run in the same block against the
//            same K/V tile (loaded once into smem, fp32); the noise query is computed on the fly from
//            q and theta. Online softmax in fp32 (exp2 domain); lse saved per stream.
//   combine  one warp per (token, head): o, head norm, out; rstd saved.
//   backward (FlashAttention-2 style recompute from lse)
//            combine-backward: warp per (token, head): d o (through the head norm), d lam_logit,
//              delta_s = rowsum(dA_s * A_s); head-norm weight partials per block (fixed order).
//            dQ: same tiling as the forward; both streams of a query are neighbouring lane groups, so
//              dq = dq_sig + R_theta^T dq_noise and the theta partials are formed in registers
//              (one shuffle); theta partials per (query tile, head) reduced in a fixed order.
//            dK/dV: block = (key tile of 64, KV head g, b); loops over the query tiles that see its
//              keys and the G query heads x 2 streams of the group, accumulating dK, dV in registers:
//              no atomics. Bounded: the same kernel once more over the bank slots of every block.
//   The fixed-order column sums make dtheta / dhead_norm bitwise reproducible.
//
// Layouts (row-major, token-major like the projection outputs; t = b*T + i):
//   q, dq, out, a_sig, a_noise [B*T, H*Dh];  k, v, dk, dv [B*T, Hkv*Dh];  theta [H, Dh/2];
//   lam_logit, dlam_logit [B*T, H];  head_norm [Dh];  lse [2, B, H, T] fp32 natural-log LSE of
//   stream s (s = 0 signal, 1 noise);  hn_rstd [B*T*H] fp32 (1.0 when no head norm);
//   bank k, v [B][n_blocks][Hkv][bank_slots][Dh], allowed [B][n_blocks][bank_slots];
//   dbank_k, dbank_v [B][n_blocks][Hkv][bank_slots][Dh] fp32 (overwritten);
//   dtheta [H*Dh/2] fp32 and dhead_norm [Dh] fp32 are ACCUMULATED (+=); dq, dk, dv, dlam_logit are
//   overwritten. Pointers must be 16-byte aligned (cudaMalloc'd bases; row strides are multiples of Dh).
//
// Saved tensors: exactly those of CodaAttnSaved (a_sig, a_noise, lse, hn_rstd); o is recomputed from
// a_sig/a_noise/lam in the backward. With !differential and no head norm, out may alias a_sig (the
// copy is then skipped); a_noise / theta / lam_logit / dlam_logit may be NULL when !differential,
// hn_rstd may be NULL when there is no head norm, dhead_norm / dtheta NULL = frozen.
// Supported: Dh in {64, 128}, H % Hkv == 0, any T >= 1, any block >= 1, bank_slots <= CA_MAX_BANK_SLOTS.
#pragma once
#include <math.h>
#include <algorithm>
#include <type_traits>
#include "cuda_common.cuh"
#include "vec128.cuh"

// Which kernels run the attention (the math is the same): AUTO = tensor cores in the BF16 build
// (wgmma on Hopper when the binary has sm_90a code, else mma.sync), fp32 FMA on CUDA cores in the
// FP32 build (exact tests); any implementation can be forced (benchmarks compare them; tests check
// each against the CPU reference).
// CA_IMPL_WS: the wgmma kernels with the warp-specialized forward of coda_attention_ws.cuh (AUTO uses it
// for CoDA's two streams on Hopper). CA_IMPL_FUSED: AUTO's forward with the one-pass backward of
// coda_attention_fused_bwd.cuh where it applies (causal key sets at Dh 128), the wgmma backward elsewhere.
typedef enum { CA_IMPL_AUTO = 0, CA_IMPL_FMA = 1, CA_IMPL_MMA = 2, CA_IMPL_WGMMA = 3, CA_IMPL_WS = 4, CA_IMPL_FUSED = 5 } CodaAttnImpl;

typedef struct {
    int B, T, H, Hkv, Dh;
    int differential;
    int head_norm_full;
    float head_norm_eps;
    CodaAttnImpl impl;    // zero-initialised = AUTO
    // bounded key set (zero-initialised = unbounded causal attention)
    int block;            // S: blocks of the chunked prefill (0 = unbounded)
    int window;           // W: ring slots
    int bank_slots;       // Me + Ms: bank slots per block in CodaAttnBank (0: window only)
    int unmasked_memory;  // mask_unused_memory off: empty ring slots are attended (bank: the scan allows every slot)
    int grad_cut;         // cross_block_grad off: no gradient from block j's queries to keys before (j-1)S
    int hist;             // a continued forward (inference, B = 1, forward only): rows [-hist, 0) of k and v hold
                          // the ring keys carried in from the state (0..W), which the first blocks' windows reach
} CodaAttnShape;

// The bank each block attends to: bank_scan.cuh's BankTape (k, v, allowed), read-only here.
typedef struct {
    const floatX* k;                // [B][n_blocks][Hkv][bank_slots][Dh]
    const floatX* v;                // [B][n_blocks][Hkv][bank_slots][Dh]
    const unsigned char* allowed;   // [B][n_blocks][bank_slots]
} CodaAttnBank;

typedef struct {
    const floatX *q, *k, *v;        // after RoPE (q, k)
    const floatX* theta;            // differential
    const floatX* lam_logit;        // differential
    const floatX* head_norm;        // head_norm_full
    CodaAttnBank bank;              // bounded
} CodaAttnInputs;

// What the forward writes; all but out are read by the backward.
typedef struct {
    floatX* out;
    floatX *a_sig, *a_noise;
    float *lse, *hn_rstd;
} CodaAttnSaved;

typedef struct {
    floatX *dq, *dk, *dv, *dlam_logit;  // overwritten
    float *dtheta, *dhead_norm;          // accumulated (+=); NULL = frozen
    float *dbank_k, *dbank_v;            // bounded with bank_slots > 0: overwritten
} CodaAttnGrads;

#define CA_MAX_BANK_SLOTS 1024  // bank slots per block the kernels stage as a bitmask (Me + Ms; paper: <= 256)

#define CA_LOG2E 1.4426950408889634f
#define CA_LN2 0.6931471805599453f

// ---------------------------------------------------------------------------------------------
// small device helpers

__device__ __forceinline__ float4 ca_ld4(const float* p) { return *(const float4*)p; }
__device__ __forceinline__ float4 ca_ld4(const __nv_bfloat16* p) {
    uint2 u = *(const uint2*)p;
    __nv_bfloat162 a = *(const __nv_bfloat162*)&u.x, b = *(const __nv_bfloat162*)&u.y;
    float2 fa = __bfloat1622float2(a), fb = __bfloat1622float2(b);
    return make_float4(fa.x, fa.y, fb.x, fb.y);
}
__device__ __forceinline__ void ca_st4(float* p, float4 v) { *(float4*)p = v; }
__device__ __forceinline__ void ca_st4(__nv_bfloat16* p, float4 v) {
    __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
    uint2 u;
    u.x = *(const unsigned*)&a;
    u.y = *(const unsigned*)&b;
    *(uint2*)p = u;
}
__device__ __forceinline__ float ca_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
// Rounds to floatX and back (what a consumer of a stored floatX value sees).
__device__ __forceinline__ float ca_roundX(float x) { return to_float(from_float<floatX>(x)); }
// Sum over groups of L consecutive lanes (L = 4 or 8); every lane of the group gets the same bits.
template <int L>
__device__ __forceinline__ float ca_group_sum(float v) {
#pragma unroll
    for (int o = 1; o < L; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Loads rows r0 .. r0+BK-1 of a K and a V matrix (row r at kb + r * stride, already offset to the
// batch row and KV head) into fp32 smem tiles [BK][DH]; rows >= nrows, and rows < lo (a continued
// forward's carried-in ring rows start at -hist), are zero.
template <int DH, int BK, int THREADS>
__device__ __forceinline__ void ca_load_kv_rows(float* Ks, float* Vs, const floatX* kb, const floatX* vb, size_t stride, int r0,
                                                int nrows, int lo = 0) {
    for (int idx = threadIdx.x; idx < BK * DH / 4; idx += THREADS) {
        int jj = idx / (DH / 4), d = (idx % (DH / 4)) * 4, j = r0 + jj;
        float4 kk = make_float4(0.f, 0.f, 0.f, 0.f), vv = kk;
        if (j < nrows && j >= lo) {
            ptrdiff_t off = (ptrdiff_t)j * (ptrdiff_t)stride + d;
            kk = ca_ld4(kb + off);
            vv = ca_ld4(vb + off);
        }
        ca_st4(Ks + jj * DH + d, kk);
        ca_st4(Vs + jj * DH + d, vv);
    }
}

// ---------------------------------------------------------------------------------------------
// Key sets (see the header): query tiles, bank offsets, the bounded masks

// floor(a / b) for b > 0 (C's division truncates towards zero; key tiles before row 0 need the floor)
__host__ __device__ __forceinline__ int ca_floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
__host__ __device__ __forceinline__ int ca_n_blocks(const CodaAttnShape& s) { return s.block > 0 ? (s.T + s.block - 1) / s.block : 1; }
// Query tiles of bq rows over all blocks (an unbounded launch is one block of T rows).
__host__ __device__ __forceinline__ int ca_n_qtiles(const CodaAttnShape& s, int bq) {
    const int S = s.block > 0 ? s.block : s.T;
    return ca_n_blocks(s) * ((S + bq - 1) / bq);
}
// Query tile qt of bq rows: its block j, first row q0, the end of its block's rows (rows >= qend are
// computed on a clamped row and never stored) and the first sequence key the block sees.
typedef struct { int j, q0, qend, klo; } CaQTile;
__device__ __forceinline__ CaQTile ca_qtile(const CodaAttnShape& s, int qt, int bq) {
    const int S = s.block > 0 ? s.block : s.T, tpb = (S + bq - 1) / bq;
    CaQTile t;
    t.j = qt / tpb;
    t.q0 = t.j * S + (qt % tpb) * bq;
    t.qend = min(s.T, (t.j + 1) * S);
    t.klo = s.block > 0 ? max(-s.hist, t.j * S - s.window) : 0;  // the window reaches carried-in rows
    return t;
}
// The first key query i passes gradient to (bounded): its block's window start, or with grad_cut the
// previous block's start if that is later (keys older than block j-1 came through the cut state).
__device__ __forceinline__ int ca_grad_lo(const CodaAttnShape& s, int i) {
    const int j = i / s.block, lo = max(0, j * s.block - s.window);
    return s.grad_cut ? max(lo, (j - 1) * s.block) : lo;
}
// One past the last query whose key set holds sequence key p (bounded): block j sees p iff jS - W <= p.
__device__ __forceinline__ int ca_query_end(const CodaAttnShape& s, int p) {
    return min(s.T, ((p + s.window) / s.block + 1) * s.block);
}
// Empty ring slots block j attends to when unmasked_memory (the ring before block j holds
// min(W, hist + jS) tokens; training starts empty, hist = 0).
__device__ __forceinline__ int ca_empty_ring(const CodaAttnShape& s, int j) {
    return s.unmasked_memory ? max(0, s.window - s.hist - j * s.block) : 0;
}
// Element offset of the bank rows [bank_slots][Dh] of (batch row b, block j, KV head g) in
// CodaAttnBank.k / .v; the allowed flags of (b, j) start at ca_bank_row(s, b, j) * bank_slots.
__device__ __forceinline__ size_t ca_bank_row(const CodaAttnShape& s, int b, int j) { return (size_t)b * ca_n_blocks(s) + j; }
__device__ __forceinline__ size_t ca_bank_off(const CodaAttnShape& s, int b, int j, int g) {
    return (ca_bank_row(s, b, j) * s.Hkv + g) * (size_t)s.bank_slots * s.Dh;
}
// Stages the allowed flags of one (b, j) as a bitmask (bit m of words[m / 32], zero-filled to whole
// 64-slot tiles) and returns one past the last allowed slot (0: nothing to attend), the same in every
// thread. Ends with a barrier.
__device__ __forceinline__ int ca_stage_bank_bits(const CodaAttnShape& s, const unsigned char* allowed, uint32_t* words) {
    __shared__ int extent;
    if (threadIdx.x == 0) extent = 0;
    __syncthreads();
    int last = 0;
    for (int w = threadIdx.x; w < 2 * ((s.bank_slots + 63) / 64); w += blockDim.x) {  // whole 64-slot tiles

        uint32_t bits = 0;
        for (int i = 0; i < 32; i++) {
            const int m = 32 * w + i;
            if (m < s.bank_slots && allowed[m]) { bits |= 1u << i; last = m + 1; }
        }
        words[w] = bits;
    }
    if (last) atomicMax(&extent, last);  // integer max: the same result in any order
    __syncthreads();
    return extent;
}

// Rotation of the two pairs (x.x, x.y), (x.z, x.w) by theta[pair0], theta[pair0 + 1] (docs/spec.md §1.4).
// sign = -1: the inverse (transpose) rotation.
__device__ __forceinline__ float4 ca_rotate4(float4 x, const floatX* theta_h, int pair0, float sign) {
    float s0, c0, s1, c1;
    sincosf(to_float(theta_h[pair0]), &s0, &c0);
    sincosf(to_float(theta_h[pair0 + 1]), &s1, &c1);
    s0 *= sign; s1 *= sign;
    return make_float4(x.x * c0 - x.y * s0, x.x * s0 + x.y * c0, x.z * c1 - x.w * s1, x.z * s1 + x.w * c1);
}

// ---------------------------------------------------------------------------------------------
// forward: attention of both streams. Grid (n_qtiles, H, B), 512 threads. BND: the bounded key set.

template <int DH, int NS, bool BND>
__global__ void __launch_bounds__(512, 1)
ca_forward_kernel(CodaAttnShape sh, CodaAttnBank bank, floatX* a_sig, floatX* a_noise, float* lse, const floatX* q,
                  const floatX* k, const floatX* v, const floatX* theta) {
    constexpr int THREADS = 512, L = 4, ROWS = THREADS / L, BQ = ROWS / NS, BK = 32, NC = DH / (4 * L);
    __shared__ __align__(16) float Ks[BK * DH];
    __shared__ __align__(16) float Vs[BK * DH];
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv, G = H / Hkv;
    const CaQTile tl = ca_qtile(sh, gridDim.x - 1 - blockIdx.x, BQ);  // heaviest (last) query tiles first
    if (tl.q0 >= tl.qend) return;  // a tile past the end of a short last block
    const int h = blockIdx.y, b = blockIdx.z, g = h / G;
    const int tid = threadIdx.x, lane = tid % L, row = tid / L;
    const int ql = NS == 2 ? row >> 1 : row, s = NS == 2 ? (row & 1) : 0;
    const int q0 = tl.q0, i = q0 + ql, ie = min(i, tl.qend - 1);  // rows past the block compute row qend-1, store nothing
    const float sl2 = (1.0f / sqrtf((float)DH)) * CA_LOG2E;

    float qr[4 * NC], acc[4 * NC];
    const floatX* qrow = q + ((size_t)b * T + ie) * ((size_t)H * DH) + (size_t)h * DH;
#pragma unroll
    for (int c = 0; c < NC; c++) {
        int d = 4 * lane + 4 * L * c;
        float4 x = ca_ld4(qrow + d);
        if (NS == 2 && s == 1) x = ca_rotate4(x, theta + (size_t)h * (DH / 2), d / 2, 1.0f);
        qr[4 * c] = x.x * sl2; qr[4 * c + 1] = x.y * sl2; qr[4 * c + 2] = x.z * sl2; qr[4 * c + 3] = x.w * sl2;
        acc[4 * c] = acc[4 * c + 1] = acc[4 * c + 2] = acc[4 * c + 3] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    if (BND && ca_empty_ring(sh, tl.j) > 0) { m = 0.f; l = (float)ca_empty_ring(sh, tl.j); }  // zero keys: score 0, value 0
    // One K/V tile (rows r0.. of kb/vb, keys visible(jj) to this row): online-softmax update.
    auto attend_tile = [&](const floatX* kb, const floatX* vb, size_t stride, int r0, int nrows, int lo, auto visible) {
        __syncthreads();
        ca_load_kv_rows<DH, BK, THREADS>(Ks, Vs, kb, vb, stride, r0, nrows, lo);
        __syncthreads();
        float sc[BK];
        float mt = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < BK; jj++) {
            const float* kr = Ks + jj * DH + 4 * lane;
            float d = 0.f;
#pragma unroll
            for (int c = 0; c < NC; c++) {
                float4 kk = ca_ld4(kr + 4 * L * c);
                d = fmaf(qr[4 * c], kk.x, d); d = fmaf(qr[4 * c + 1], kk.y, d);
                d = fmaf(qr[4 * c + 2], kk.z, d); d = fmaf(qr[4 * c + 3], kk.w, d);
            }
            d = ca_group_sum<L>(d);
            sc[jj] = visible(jj) ? d : -INFINITY;
            mt = fmaxf(mt, sc[jj]);
        }
        const float mn = fmaxf(m, mt);
        // unbounded: finite (key 0 is in the first tile, visible to every row); bounded: a bank tile
        // may hide every key, so the exponents use 0 while the row has seen nothing
        const float ms = (BND && mn == -INFINITY) ? 0.f : mn;
        const float alpha = exp2f(m - ms);
        l *= alpha;
#pragma unroll
        for (int e = 0; e < 4 * NC; e++) acc[e] *= alpha;
#pragma unroll
        for (int jj = 0; jj < BK; jj++) {
            const float p = exp2f(sc[jj] - ms);
            l += p;
            const float* vr = Vs + jj * DH + 4 * lane;
#pragma unroll
            for (int c = 0; c < NC; c++) {
                float4 vv = ca_ld4(vr + 4 * L * c);
                acc[4 * c] = fmaf(p, vv.x, acc[4 * c]); acc[4 * c + 1] = fmaf(p, vv.y, acc[4 * c + 1]);
                acc[4 * c + 2] = fmaf(p, vv.z, acc[4 * c + 2]); acc[4 * c + 3] = fmaf(p, vv.w, acc[4 * c + 3]);
            }
        }
        m = mn;
    };
    if (BND && sh.bank_slots > 0) {  // the bank block j attends to
        const size_t off = ca_bank_off(sh, b, tl.j, g);
        const unsigned char* al = bank.allowed + ca_bank_row(sh, b, tl.j) * sh.bank_slots;
        for (int k0 = 0; k0 < sh.bank_slots; k0 += BK)
            attend_tile(bank.k + off, bank.v + off, DH, k0, sh.bank_slots, 0,
                        [&](int jj) { return k0 + jj < sh.bank_slots && al[k0 + jj]; });
    }
    const size_t stride = (size_t)Hkv * DH, kvb = (size_t)b * T * stride + (size_t)g * DH;
    const int kend = min(q0 + BQ, tl.qend);
    for (int k0 = ca_floor_div(tl.klo, BK) * BK; k0 < kend; k0 += BK)
        attend_tile(k + kvb, v + kvb, stride, k0, T, -sh.hist, [&](int jj) { return k0 + jj <= ie && (!BND || k0 + jj >= tl.klo); });
    if (i < tl.qend) {
        const float inv = 1.0f / l;
        floatX* dst = (s ? a_noise : a_sig) + ((size_t)b * T + i) * ((size_t)H * DH) + (size_t)h * DH;
#pragma unroll
        for (int c = 0; c < NC; c++)
            ca_st4(dst + 4 * lane + 4 * L * c,
                   make_float4(acc[4 * c] * inv, acc[4 * c + 1] * inv, acc[4 * c + 2] * inv, acc[4 * c + 3] * inv));
        if (lane == 0) lse[(((size_t)s * sh.B + b) * H + h) * T + i] = (m + log2f(l)) * CA_LN2;
    }
}

// ---------------------------------------------------------------------------------------------
// combine forward: one warp per (token, head) row; 8 warps per block.

template <int DH>
__global__ void __launch_bounds__(256)
ca_combine_forward_kernel(CodaAttnShape sh, floatX* out, float* hn_rstd, const floatX* a_sig, const floatX* a_noise,
                          const floatX* lam_logit, const floatX* w) {
    constexpr int VPL = DH / 32;
    const size_t nrows = (size_t)sh.B * sh.T * sh.H;
    const size_t row = (size_t)blockIdx.x * 8 + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= nrows) return;
    const int norm = sh.differential && sh.head_norm_full;
    const float lam = sh.differential ? ca_sigmoid(to_float(lam_logit[row])) : 0.f;
    float o[VPL], an[VPL], y[VPL];  // one access per lane and tensor (8 bytes at Dh 128 in bf16)
    float ss = 0.f;
    load_f<VPL>(o, a_sig + row * DH + lane * VPL);
    if (sh.differential) load_f<VPL>(an, a_noise + row * DH + lane * VPL);
#pragma unroll
    for (int e = 0; e < VPL; e++) {
        if (sh.differential) o[e] -= lam * an[e];
        ss += o[e] * o[e];
    }
    float r = 1.0f;
    if (norm) r = 1.0f / sqrtf(warp_sum(ss) / DH + sh.head_norm_eps);
#pragma unroll
    for (int e = 0; e < VPL; e++) y[e] = norm ? o[e] * r * to_float(w[lane * VPL + e]) : o[e];
    store_f<VPL>(out + row * DH + lane * VPL, y);
    if (hn_rstd && lane == 0) hn_rstd[row] = r;
}

// ---------------------------------------------------------------------------------------------
// combine backward: one warp per (token, head), 4 rows per warp, 32 rows per block (fixed, so the
// head-norm weight partials are the same on every GPU). Each row is a chain of dependent warp sums,
// so the kernel is latency-bound: few rows per warp and many warps in flight (with 32 rows per warp
// it took 55 us for only 6,400 rows on an H200; dev/PERF.md). One access per lane and tensor (8 bytes
// at Dh 128 in bf16). Issuing a warp's loads of all four rows before the first row's sums was slower
// (45.7 against 35.6 us at the 7B shape, T = 2048: the registers cost warps in flight; PERF session 14).

#define CA_CB_ROWS_PER_BLOCK 32

template <int DH>
__global__ void __launch_bounds__(256)
ca_combine_backward_kernel(CodaAttnShape sh, floatX* dO, float* delta, floatX* dlam_logit, float* dw_part,
                           const floatX* dout, const floatX* a_sig, const floatX* a_noise, const float* hn_rstd,
                           const floatX* lam_logit, const floatX* w) {
    constexpr int VPL = DH / 32;
    __shared__ float red[8 * DH];
    const int H = sh.H, T = sh.T;
    const size_t nrows = (size_t)sh.B * T * H;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int norm = sh.differential && sh.head_norm_full;
    float dwacc[VPL];
#pragma unroll
    for (int e = 0; e < VPL; e++) dwacc[e] = 0.f;
    for (int rr = 0; rr < CA_CB_ROWS_PER_BLOCK / 8; rr++) {
        const size_t row = (size_t)blockIdx.x * CA_CB_ROWS_PER_BLOCK + warp * (CA_CB_ROWS_PER_BLOCK / 8) + rr;
        if (row >= nrows) break;  // warp-uniform
        const size_t t = row / H, idx = row * DH + lane * VPL;
        const int h = (int)(row % H), b = (int)(t / T), i = (int)(t % T);
        const float lam = sh.differential ? ca_sigmoid(to_float(lam_logit[row])) : 0.f;
        float as[VPL], an[VPL], go[VPL], d_o[VPL];
        load_f<VPL>(as, a_sig + idx);
        if (sh.differential) load_f<VPL>(an, a_noise + idx);
        else
#pragma unroll
            for (int e = 0; e < VPL; e++) an[e] = 0.f;
        load_f<VPL>(go, dout + idx);
        if (norm) {
            const float r = hn_rstd[row];
            float nv[VPL], dn[VPL], dot = 0.f;
#pragma unroll
            for (int e = 0; e < VPL; e++) {
                int d = lane * VPL + e;
                nv[e] = (as[e] - lam * an[e]) * r;
                dn[e] = go[e] * to_float(w[d]);
                dot += dn[e] * nv[e];
                dwacc[e] += go[e] * nv[e];
            }
            dot = warp_sum(dot) / DH;
#pragma unroll
            for (int e = 0; e < VPL; e++) d_o[e] = r * (dn[e] - nv[e] * dot);
        } else {
#pragma unroll
            for (int e = 0; e < VPL; e++) d_o[e] = go[e];
        }
        float ds = 0.f, dn_ = 0.f, dl = 0.f;
        store_f<VPL>(dO + row * DH + lane * VPL, d_o);
#pragma unroll
        for (int e = 0; e < VPL; e++) {
            float dr = ca_roundX(d_o[e]);  // what the attention kernels will read
            ds += dr * as[e];
            dn_ += dr * an[e];
            dl += d_o[e] * an[e];
        }
        ds = warp_sum(ds);
        if (lane == 0) delta[((size_t)b * H + h) * T + i] = ds;
        if (sh.differential) {
            dn_ = warp_sum(dn_);
            dl = warp_sum(dl);
            if (lane == 0) {
                delta[(((size_t)sh.B + b) * H + h) * T + i] = -lam * dn_;
                if (dlam_logit) dlam_logit[row] = from_float<floatX>(-dl * lam * (1.0f - lam));
            }
        }
    }
    if (norm && dw_part) {
#pragma unroll
        for (int e = 0; e < VPL; e++) red[warp * DH + lane * VPL + e] = dwacc[e];
        __syncthreads();
        for (int d = threadIdx.x; d < DH; d += blockDim.x) {
            float sum = 0.f;
            for (int wi = 0; wi < 8; wi++) sum += red[wi * DH + d];
            dw_part[(size_t)blockIdx.x * DH + d] = sum;
        }
    }
}

__global__ void ca_fill_kernel(float* x, float val, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = val;
}

// out[c] += sum_r part[r*C + c], r in [0, R): one block per column, a fixed summation order.
__global__ void __launch_bounds__(256) ca_colsum_kernel(float* out, const float* part, int R, int C) {
    __shared__ float red[256];
    const int c = blockIdx.x;
    float s = 0.f;
    for (int r = threadIdx.x; r < R; r += 256) s += part[(size_t)r * C + c];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int o = 128; o > 0; o >>= 1) {
        if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[c] += red[0];
}

// ---------------------------------------------------------------------------------------------
// backward dQ (+ noise-rotation backward and theta partials). Grid (n_qtiles, H, B), 512 threads,
// same tiling as the forward.

template <int DH, int NS, bool BND>
__global__ void __launch_bounds__(512, 1)
ca_dq_kernel(CodaAttnShape sh, CodaAttnBank bank, floatX* dq, float* dtheta_part, const floatX* dO, const float* lse,
             const float* delta, const floatX* q, const floatX* k, const floatX* v, const floatX* theta, const floatX* lam_logit) {
    // DH/16 lanes per row (16 dims each: q, dA and dq slices stay in registers without spills)
    constexpr int THREADS = 512, L = DH / 16, ROWS = THREADS / L, BQ = ROWS / NS, BK = 32, NC = DH / (4 * L);
    static_assert(BQ * (DH / 2) <= 2 * BK * DH, "theta partials must fit the K/V tile buffer");
    __shared__ __align__(16) float smem[2 * BK * DH];
    float* Ks = smem;
    float* Vs = smem + BK * DH;
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv, G = H / Hkv;
    const int nqt = gridDim.x, qt = nqt - 1 - blockIdx.x;
    const int h = blockIdx.y, b = blockIdx.z, g = h / G;
    const int tid = threadIdx.x, lane = tid % L, row = tid / L;
    const CaQTile tl = ca_qtile(sh, qt, BQ);
    if (tl.q0 >= tl.qend) {  // a tile past the end of a short last block: its theta partials are zero
        if (NS == 2)
            for (int pr = tid; pr < DH / 2; pr += THREADS) dtheta_part[(((size_t)b * nqt + qt) * H + h) * (DH / 2) + pr] = 0.f;
        return;
    }
    const int ql = NS == 2 ? row >> 1 : row, s = NS == 2 ? (row & 1) : 0;
    const int q0 = tl.q0, i = q0 + ql, ie = min(i, tl.qend - 1);
    const float scale = 1.0f / sqrtf((float)DH), sl2 = scale * CA_LOG2E;
    const size_t qoff = ((size_t)b * T + ie) * ((size_t)H * DH) + (size_t)h * DH;
    const float lam = (NS == 2 && s == 1) ? ca_sigmoid(to_float(lam_logit[((size_t)b * T + ie) * H + h])) : 0.f;
    const float fa = s == 1 ? -lam : 1.0f;  // dA_noise = -lam * d o

    float qr[4 * NC], da[4 * NC], acc[4 * NC];
#pragma unroll
    for (int c = 0; c < NC; c++) {
        int d = 4 * lane + 4 * L * c;
        float4 x = ca_ld4(q + qoff + d);
        if (NS == 2 && s == 1) x = ca_rotate4(x, theta + (size_t)h * (DH / 2), d / 2, 1.0f);
        float4 y = ca_ld4(dO + qoff + d);
        qr[4 * c] = x.x * sl2; qr[4 * c + 1] = x.y * sl2; qr[4 * c + 2] = x.z * sl2; qr[4 * c + 3] = x.w * sl2;
        da[4 * c] = y.x * fa; da[4 * c + 1] = y.y * fa; da[4 * c + 2] = y.z * fa; da[4 * c + 3] = y.w * fa;
        acc[4 * c] = acc[4 * c + 1] = acc[4 * c + 2] = acc[4 * c + 3] = 0.f;
    }
    const size_t li = (((size_t)s * sh.B + b) * H + h) * T + ie;
    const float lse2 = lse[li] * CA_LOG2E, dl = delta[li];
    // One K/V tile (rows r0.. of kb/vb, keys visible(jj) to this row): dS K into acc.
    auto tile = [&](const floatX* kb, const floatX* vb, size_t stride, int r0, int nrows, auto visible) {
        __syncthreads();
        ca_load_kv_rows<DH, BK, THREADS>(Ks, Vs, kb, vb, stride, r0, nrows);
        __syncthreads();
#pragma unroll 4
        for (int jj = 0; jj < BK; jj++) {
            const float* kr = Ks + jj * DH + 4 * lane;
            const float* vr = Vs + jj * DH + 4 * lane;
            float sd = 0.f, pd = 0.f;
#pragma unroll
            for (int c = 0; c < NC; c++) {
                float4 kk = ca_ld4(kr + 4 * L * c), vv = ca_ld4(vr + 4 * L * c);
                sd = fmaf(qr[4 * c], kk.x, sd); sd = fmaf(qr[4 * c + 1], kk.y, sd);
                sd = fmaf(qr[4 * c + 2], kk.z, sd); sd = fmaf(qr[4 * c + 3], kk.w, sd);
                pd = fmaf(da[4 * c], vv.x, pd); pd = fmaf(da[4 * c + 1], vv.y, pd);
                pd = fmaf(da[4 * c + 2], vv.z, pd); pd = fmaf(da[4 * c + 3], vv.w, pd);
            }
            sd = ca_group_sum<L>(sd);
            pd = ca_group_sum<L>(pd);
            const float p = visible(jj) ? exp2f(sd - lse2) : 0.f;
            const float dsv = p * (pd - dl);
#pragma unroll
            for (int c = 0; c < NC; c++) {
                float4 kk = ca_ld4(kr + 4 * L * c);
                acc[4 * c] = fmaf(dsv, kk.x, acc[4 * c]); acc[4 * c + 1] = fmaf(dsv, kk.y, acc[4 * c + 1]);
                acc[4 * c + 2] = fmaf(dsv, kk.z, acc[4 * c + 2]); acc[4 * c + 3] = fmaf(dsv, kk.w, acc[4 * c + 3]);
            }
        }
    };
    if (BND && sh.bank_slots > 0) {
        const size_t off = ca_bank_off(sh, b, tl.j, g);
        const unsigned char* al = bank.allowed + ca_bank_row(sh, b, tl.j) * sh.bank_slots;
        for (int k0 = 0; k0 < sh.bank_slots; k0 += BK)
            tile(bank.k + off, bank.v + off, DH, k0, sh.bank_slots, [&](int jj) { return k0 + jj < sh.bank_slots && al[k0 + jj]; });
    }
    const size_t stride = (size_t)Hkv * DH, kvb = (size_t)b * T * stride + (size_t)g * DH;
    const int kend = min(q0 + BQ, tl.qend);
    for (int k0 = (tl.klo / BK) * BK; k0 < kend; k0 += BK)
        tile(k + kvb, v + kvb, stride, k0, T, [&](int jj) { return k0 + jj <= ie && (!BND || k0 + jj >= tl.klo); });
#pragma unroll
    for (int e = 0; e < 4 * NC; e++) acc[e] *= scale;
    floatX* dqrow = dq + ((size_t)b * T + i) * ((size_t)H * DH) + (size_t)h * DH;
    if constexpr (NS == 1) {
        if (i < tl.qend)
#pragma unroll
            for (int c = 0; c < NC; c++)
                ca_st4(dqrow + 4 * lane + 4 * L * c, make_float4(acc[4 * c], acc[4 * c + 1], acc[4 * c + 2], acc[4 * c + 3]));
    } else {
    // NS == 2: the noise row of this query sits L lanes up. dq = dq_sig + R^T dq_noise;
    // dtheta[h, j] += dqn[2j] * (-x0 sin - x1 cos) + dqn[2j+1] * (x0 cos - x1 sin), x = RoPE'd q.
    float dn[4 * NC];
#pragma unroll
    for (int e = 0; e < 4 * NC; e++) dn[e] = __shfl_xor_sync(0xffffffffu, acc[e], L);
    __syncthreads();  // smem is reused for the theta partials
    float* dth = smem;  // [BQ][DH/2]
    if (s == 0) {
        const floatX* th = theta + (size_t)h * (DH / 2);
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = 4 * lane + 4 * L * c;
            float4 x = ca_ld4(q + qoff + d);
            float xs[4] = {x.x, x.y, x.z, x.w}, out[4];
#pragma unroll
            for (int pp = 0; pp < 2; pp++) {
                float sn, cs;
                sincosf(to_float(th[d / 2 + pp]), &sn, &cs);
                float x0 = xs[2 * pp], x1 = xs[2 * pp + 1], n0 = dn[4 * c + 2 * pp], n1 = dn[4 * c + 2 * pp + 1];
                out[2 * pp] = acc[4 * c + 2 * pp] + (n0 * cs + n1 * sn);
                out[2 * pp + 1] = acc[4 * c + 2 * pp + 1] + (n1 * cs - n0 * sn);
                float dt = n0 * (-x0 * sn - x1 * cs) + n1 * (x0 * cs - x1 * sn);
                dth[ql * (DH / 2) + d / 2 + pp] = i < tl.qend ? dt : 0.f;
            }
            if (i < tl.qend) ca_st4(dqrow + d, make_float4(out[0], out[1], out[2], out[3]));
        }
    }
    __syncthreads();
    for (int pr = tid; pr < DH / 2; pr += THREADS) {
        float sum = 0.f;
        for (int qq = 0; qq < BQ; qq++) sum += dth[qq * (DH / 2) + pr];
        dtheta_part[(((size_t)b * nqt + qt) * H + h) * (DH / 2) + pr] = sum;
    }
    }  // NS == 2
}

// ---------------------------------------------------------------------------------------------
// backward dK, dV. Grid (n_ktiles, Hkv, B); 64 keys x (DH/16) lanes per block. Each block walks the
// query tiles that see its keys, for the G heads of its KV head and both streams; dK/dV stay in
// registers: no atomics. BANK (bounded): the keys are the bank slots of one block j instead
// (grid z = b * n_blocks + j), the queries that block's rows, the output fp32 dbank.

template <int DH, int NS, bool BND, bool BANK>
__global__ void __launch_bounds__(64 * (DH / 16), 1)
ca_dkdv_kernel(CodaAttnShape sh, CodaAttnBank bank, floatX* dk, floatX* dv, float* dbank_k, float* dbank_v, const floatX* dO,
               const float* lse, const float* delta, const floatX* q, const floatX* k, const floatX* v, const floatX* theta,
               const floatX* lam_logit) {
    static_assert(BND || !BANK, "bank keys exist only in the bounded key set");
    constexpr int L = DH / 16, BKV = 64, THREADS = BKV * L, BQ = 32, NC = DH / (4 * L);  // NC = 4
    __shared__ __align__(16) float Qs[BQ * DH];
    __shared__ __align__(16) float As[BQ * DH];
    __shared__ float Ls[BQ], Ds[BQ];
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv, G = H / Hkv;
    const int kt = blockIdx.x, g = blockIdx.y;  // low kt = most work: launched first
    const int b = BANK ? blockIdx.z / ca_n_blocks(sh) : blockIdx.z, jb = BANK ? blockIdx.z % ca_n_blocks(sh) : 0;
    const int tid = threadIdx.x, lane = tid % L, kr_ = tid / L;
    const int k0 = kt * BKV, j = k0 + kr_;
    const int nkeys = BANK ? sh.bank_slots : T, je = min(j, nkeys - 1);
    const float sl2 = (1.0f / sqrtf((float)DH)) * CA_LOG2E;
    // this thread's key row, the queries that see it: [qbeg, qstop)
    const floatX *krow, *vrow;
    int qbeg, qstop;
    bool key_ok = j < nkeys;
    if (BANK) {
        const size_t off = ca_bank_off(sh, b, jb, g) + (size_t)je * DH;
        krow = bank.k + off; vrow = bank.v + off;
        key_ok = key_ok && bank.allowed[ca_bank_row(sh, b, jb) * sh.bank_slots + je];
        qbeg = jb * sh.block; qstop = min(T, qbeg + sh.block);
    } else {
        const size_t off = ((size_t)b * T + je) * ((size_t)Hkv * DH) + (size_t)g * DH;
        krow = k + off; vrow = v + off;
        qbeg = k0; qstop = BND ? ca_query_end(sh, min(k0 + BKV, T) - 1) : T;
    }
    // query i passes gradient to this key: causal (and the bounded window) or, for a bank slot, allowed
    auto passes = [&](int i) {
        if (BANK) return key_ok && i >= qbeg && i < qstop;
        return i < T && i >= j && (!BND || j >= ca_grad_lo(sh, i));
    };

    float kr[4 * NC], vr[4 * NC], dka[4 * NC], dva[4 * NC];
#pragma unroll
    for (int c = 0; c < NC; c++) {
        int d = 4 * lane + 4 * L * c;
        float4 x = ca_ld4(krow + d), y = ca_ld4(vrow + d);
        kr[4 * c] = x.x; kr[4 * c + 1] = x.y; kr[4 * c + 2] = x.z; kr[4 * c + 3] = x.w;
        vr[4 * c] = y.x; vr[4 * c + 1] = y.y; vr[4 * c + 2] = y.z; vr[4 * c + 3] = y.w;
#pragma unroll
        for (int e = 0; e < 4; e++) dka[4 * c + e] = dva[4 * c + e] = 0.f;
    }
    for (int q0 = (qbeg / BQ) * BQ; q0 < qstop; q0 += BQ) {
        for (int hh = 0; hh < G; hh++) {
            const int h = g * G + hh;
            for (int s = 0; s < NS; s++) {
                __syncthreads();
                // stage the query tile of (h, s): scaled (noise-rotated) q, dA, lse, delta
                for (int idx = tid; idx < BQ * DH / 2; idx += THREADS) {
                    int qi = idx / (DH / 2), pr = idx % (DH / 2), i = q0 + qi;
                    float x0 = 0.f, x1 = 0.f, o0 = 0.f, o1 = 0.f;
                    if (i < T) {
                        size_t off = ((size_t)b * T + i) * ((size_t)H * DH) + (size_t)h * DH + 2 * pr;
                        x0 = to_float(q[off]); x1 = to_float(q[off + 1]);
                        o0 = to_float(dO[off]); o1 = to_float(dO[off + 1]);
                        if (s == 1) {
                            float sn, cs;
                            sincosf(to_float(theta[(size_t)h * (DH / 2) + pr]), &sn, &cs);
                            float r0 = x0 * cs - x1 * sn, r1 = x0 * sn + x1 * cs;
                            x0 = r0; x1 = r1;
                            float f = -ca_sigmoid(to_float(lam_logit[((size_t)b * T + i) * H + h]));
                            o0 *= f; o1 *= f;
                        }
                    }
                    Qs[qi * DH + 2 * pr] = x0 * sl2; Qs[qi * DH + 2 * pr + 1] = x1 * sl2;
                    As[qi * DH + 2 * pr] = o0; As[qi * DH + 2 * pr + 1] = o1;
                }
                for (int qi = tid; qi < BQ; qi += THREADS) {
                    int i = q0 + qi;
                    size_t li = (((size_t)s * sh.B + b) * H + h) * T + (i < T ? i : 0);
                    Ls[qi] = i < T ? lse[li] * CA_LOG2E : 0.f;
                    Ds[qi] = i < T ? delta[li] : 0.f;
                }
                __syncthreads();
#pragma unroll 2
                for (int ii = 0; ii < BQ; ii++) {
                    const int i = q0 + ii;
                    const float* qs = Qs + ii * DH + 4 * lane;
                    const float* as = As + ii * DH + 4 * lane;
                    float sd = 0.f, pd = 0.f;
#pragma unroll
                    for (int c = 0; c < NC; c++) {
                        float4 xq = ca_ld4(qs + 4 * L * c), xa = ca_ld4(as + 4 * L * c);
                        sd = fmaf(xq.x, kr[4 * c], sd); sd = fmaf(xq.y, kr[4 * c + 1], sd);
                        sd = fmaf(xq.z, kr[4 * c + 2], sd); sd = fmaf(xq.w, kr[4 * c + 3], sd);
                        pd = fmaf(xa.x, vr[4 * c], pd); pd = fmaf(xa.y, vr[4 * c + 1], pd);
                        pd = fmaf(xa.z, vr[4 * c + 2], pd); pd = fmaf(xa.w, vr[4 * c + 3], pd);
                    }
                    sd = ca_group_sum<L>(sd);
                    pd = ca_group_sum<L>(pd);
                    const float p = passes(i) ? exp2f(sd - Ls[ii]) : 0.f;
                    const float dsv = p * (pd - Ds[ii]);
#pragma unroll
                    for (int c = 0; c < NC; c++) {
                        float4 xq = ca_ld4(qs + 4 * L * c), xa = ca_ld4(as + 4 * L * c);
                        dva[4 * c] = fmaf(p, xa.x, dva[4 * c]); dva[4 * c + 1] = fmaf(p, xa.y, dva[4 * c + 1]);
                        dva[4 * c + 2] = fmaf(p, xa.z, dva[4 * c + 2]); dva[4 * c + 3] = fmaf(p, xa.w, dva[4 * c + 3]);
                        dka[4 * c] = fmaf(dsv, xq.x, dka[4 * c]); dka[4 * c + 1] = fmaf(dsv, xq.y, dka[4 * c + 1]);
                        dka[4 * c + 2] = fmaf(dsv, xq.z, dka[4 * c + 2]); dka[4 * c + 3] = fmaf(dsv, xq.w, dka[4 * c + 3]);
                    }
                }
            }
        }
    }
    if (j < nkeys) {
        // Qs held q * scale * log2(e): dK = sum ds * q * scale = dka * ln 2
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = 4 * lane + 4 * L * c;
            const float4 gk = make_float4(dka[4 * c] * CA_LN2, dka[4 * c + 1] * CA_LN2, dka[4 * c + 2] * CA_LN2, dka[4 * c + 3] * CA_LN2);
            const float4 gv = make_float4(dva[4 * c], dva[4 * c + 1], dva[4 * c + 2], dva[4 * c + 3]);
            if (BANK) {
                const size_t off = ca_bank_off(sh, b, jb, g) + (size_t)j * DH + d;
                *(float4*)(dbank_k + off) = gk;
                *(float4*)(dbank_v + off) = gv;
            } else {
                const size_t off = ((size_t)b * T + j) * ((size_t)Hkv * DH) + (size_t)g * DH + d;
                ca_st4(dk + off, gk);
                ca_st4(dv + off, gv);
            }
        }
    }
}

#if !defined(ENABLE_FP32)
#include "coda_attention_mma.cuh"
#include "coda_attention_wgmma.cuh"
#include "coda_attention_ws.cuh"
#include "coda_attention_fused_bwd.cuh"
#endif

// ---------------------------------------------------------------------------------------------
// host side

static inline void ca_check_shape(const CodaAttnShape* s) {
    if (s->B < 1 || s->T < 1 || s->H < 1 || s->Hkv < 1 || s->H % s->Hkv != 0 || (s->Dh != 64 && s->Dh != 128)) {
        fprintf(stderr, "coda_attention: unsupported shape B=%d T=%d H=%d Hkv=%d Dh=%d (need Dh 64 or 128, H %% Hkv == 0)\n",
                s->B, s->T, s->H, s->Hkv, s->Dh);
        exit(1);
    }
    if (s->block < 0 || (s->block > 0 && (s->window < 1 || s->bank_slots < 0 || s->bank_slots > CA_MAX_BANK_SLOTS))) {
        fprintf(stderr, "coda_attention: unsupported bounded key set block=%d window=%d bank_slots=%d (need block >= 0; bounded: "
                        "window >= 1, 0 <= bank slots <= %d)\n", s->block, s->window, s->bank_slots, CA_MAX_BANK_SLOTS);
        exit(1);
    }
    if (s->hist < 0 || (s->hist > 0 && (s->block < 1 || s->hist > s->window || s->B != 1))) {
        fprintf(stderr, "coda_attention: carried-in ring rows hist=%d need a bounded key set, hist <= window (%d) and B = 1 "
                        "(B=%d)\n", s->hist, s->window, s->B);
        exit(1);
    }
}
static inline int ca_bounded(const CodaAttnShape* s) { return s->block > 0; }
static inline int ca_has_bank(const CodaAttnShape* s) { return s->block > 0 && s->bank_slots > 0; }
// Calls f(DH, NS, BND) with the shape's head dim (64, 128), stream count (2 differential, else 1) and
// key set (bounded or causal) as std::integral_constant, so `decltype(dh)::value` picks the kernel
// template: one place instead of an eight-way if in every launcher.
template <typename F>
static void ca_dispatch(const CodaAttnShape* s, F&& f) {
    using I64 = std::integral_constant<int, 64>;
    using I128 = std::integral_constant<int, 128>;
    using S1 = std::integral_constant<int, 1>;
    using S2 = std::integral_constant<int, 2>;
    using Y = std::true_type;
    using N = std::false_type;
    auto with_bnd = [&](auto dh, auto ns) { ca_bounded(s) ? f(dh, ns, Y{}) : f(dh, ns, N{}); };
    if (s->Dh == 128) s->differential ? with_bnd(I128{}, S2{}) : with_bnd(I128{}, S1{});
    else s->differential ? with_bnd(I64{}, S2{}) : with_bnd(I64{}, S1{});
}
#define CA_DH decltype(dh)::value
#define CA_NS decltype(ns)::value
#define CA_BND decltype(bnd)::value

#if !defined(ENABLE_FP32)
// Whether this binary carries sm_90a code for the current device (wgmma exists only there): asked
// once of the device itself, since only device code sees which target it was compiled for.
__global__ void ca_wgmma_probe_kernel(int* ok) {
#ifdef CA_WGMMA_DEVICE
    *ok = 1;
#else
    *ok = 0;
#endif
}
static int ca_wgmma_available() {
    static int avail = -1;
    if (avail < 0) {
        int* d = NULL;
        cudaCheck(cudaMalloc(&d, sizeof(int)));
        ca_wgmma_probe_kernel<<<1, 1>>>(d);
        cudaCheckLaunch("ca_wgmma_probe_kernel");
        cudaCheck(cudaMemcpy(&avail, d, sizeof(int), cudaMemcpyDeviceToHost));
        cudaCheck(cudaFree(d));
    }
    return avail;
}
#endif
// Tensor cores in the BF16 build unless FMA is asked for; the FP32 build has only the FMA kernels.
static inline int ca_use_mma(const CodaAttnShape* s) {
#if defined(ENABLE_FP32)
    if (s->impl == CA_IMPL_MMA || s->impl == CA_IMPL_WGMMA || s->impl == CA_IMPL_WS || s->impl == CA_IMPL_FUSED) {
        fprintf(stderr, "coda_attention: the tensor-core kernels need the BF16 build\n");
        exit(1);
    }
    return 0;
#else
    return s->impl != CA_IMPL_FMA;
#endif
}
// Among the tensor-core kernels: wgmma when asked for (an error where the binary or device lacks
// sm_90a) or, for AUTO, where available; mma.sync otherwise.
static inline int ca_use_wgmma(const CodaAttnShape* s) {
#if defined(ENABLE_FP32)
    (void)s;
    return 0;
#else
    const int asked = s->impl == CA_IMPL_WGMMA || s->impl == CA_IMPL_WS || s->impl == CA_IMPL_FUSED;
    if (asked && !ca_wgmma_available()) {
        fprintf(stderr, "coda_attention: the wgmma kernels need an sm_90 device and a binary built for sm_90a (GPU_ARCH=90a)\n");
        exit(1);
    }
    return (asked || s->impl == CA_IMPL_AUTO) && ca_wgmma_available();
#endif
}
// The forward on the warp-specialized kernel (coda_attention_ws.cuh): asked for by CA_IMPL_WS, and AUTO's
// choice for CoDA's two streams (measured faster, dev/PERF.md); one stream (GQA) stays on the wgmma kernel,
// which fits two blocks per SM where the warp-specialized one fits one.
static inline int ca_use_ws(const CodaAttnShape* s) {
    return ca_use_wgmma(s) && (s->impl == CA_IMPL_WS || ((s->impl == CA_IMPL_AUTO || s->impl == CA_IMPL_FUSED) && s->differential));
}
// The one-pass backward (coda_attention_fused_bwd.cuh): causal key sets at Dh 128, asked for by
// CA_IMPL_FUSED, or AUTO's choice where it is the faster one (CA_FUSED_BWD_AUTO 0 turns that off).
// Measured at the 7B head shape (H200, dev/PERF.md session 14): CoDA 0.59 ms against the two-pass
// 0.65 at T = 2048 and 6.52 against 8.13 at 8192 (the final launch order); with the first heaviest-first
// order 1.93 against 2.17 at 4096, 0.23 against 0.22 at 1024 and equal at 512. GQA keeps the two-pass
// backward at every length (0.41 against 0.40 at 2048). So AUTO takes it for CoDA above T = 1024.
#ifndef CA_FUSED_BWD_AUTO
#define CA_FUSED_BWD_AUTO 1
#endif
#define CA_FUSED_BWD_AUTO_ABOVE_T 1024
static inline int ca_use_fused_bwd(const CodaAttnShape* s) {
    const int auto_pick = CA_FUSED_BWD_AUTO && s->differential && s->T > CA_FUSED_BWD_AUTO_ABOVE_T;
    return ca_use_wgmma(s) && s->Dh == 128 && !ca_bounded(s) &&
           (s->impl == CA_IMPL_FUSED || (s->impl == CA_IMPL_AUTO && auto_pick));
}
static inline const char* ca_impl_name(const CodaAttnShape* s) {
    return !ca_use_mma(s)  ? "fp32-FMA"
           : ca_use_fused_bwd(s) ? (ca_use_ws(s) ? "tensor-core (wgmma, warp-specialized forward, one-pass backward)"
                                                 : "tensor-core (wgmma, one-pass backward)")
           : ca_use_ws(s)  ? "tensor-core (wgmma, warp-specialized forward)"
           : ca_use_wgmma(s) ? "tensor-core (wgmma)"
                             : "tensor-core (mma.sync)";
}
// query tile of the dQ kernel: 512 threads / (Dh/16 lanes) rows, over the streams (FMA); 64 (MMA)
static inline int ca_dq_bq(const CodaAttnShape* s) {
    return ca_use_mma(s) ? 64 : (512 / (s->Dh / 16)) / (s->differential ? 2 : 1);
}
static inline size_t ca_align256(size_t x) { return (x + 255) & ~(size_t)255; }
static inline size_t ca_bank_elems(const CodaAttnShape* s) {  // [B][n_blocks][Hkv][bank_slots][Dh]
    return ca_has_bank(s) ? (size_t)s->B * ca_n_blocks(*s) * s->Hkv * s->bank_slots * s->Dh : 0;
}

// The one-pass backward's dq accumulators [NS][B][H][ca_fb_rows(T)][Dh] fp32 and its ordering counters
// [B][H][ca_fb_rows(T) / 32] int (0 bytes where it does not run).
#if !defined(ENABLE_FP32)
static inline size_t ca_fb_acc_bytes(const CodaAttnShape* s) {
    return (size_t)(s->differential ? 2 : 1) * s->B * s->H * ca_fb_rows(s->T) * s->Dh * sizeof(float);
}
static inline size_t ca_fb_sem_bytes(const CodaAttnShape* s) { return (size_t)s->B * s->H * (ca_fb_rows(s->T) / CA_FB_BQ) * sizeof(int); }
static inline size_t ca_fb_scratch_bytes(const CodaAttnShape* s) {
    return ca_use_fused_bwd(s) ? ca_align256(ca_fb_acc_bytes(s)) + ca_align256(ca_fb_sem_bytes(s)) : 0;
}
#else
static inline size_t ca_fb_scratch_bytes(const CodaAttnShape*) { return 0; }
#endif

// Scratch of the backward: d o [B*T, H*Dh] floatX | delta [2, B, H, T] fp32 | theta partials
// [B * n_qtiles, H, Dh/2] fp32 | head-norm partials [ceil(B*T*H / 256), Dh] fp32; tensor-core path
// also: qn [B*T, H*Dh] floatX | dk, dv partials per query head [B*T, H, Dh] fp32 each | with a bank:
// dbank partials per query head [B * n_blocks * bank_slots, H, Dh] fp32 each | one-pass backward: its
// dq accumulators and counters (ca_fb_scratch_bytes).
size_t coda_attention_scratch_bytes(const CodaAttnShape* s) {
    ca_check_shape(s);
    size_t BT = (size_t)s->B * s->T, nqt = (size_t)ca_n_qtiles(*s, ca_dq_bq(s));
    size_t ncb = ceil_div_sz(BT * s->H, CA_CB_ROWS_PER_BLOCK);
    size_t bytes = ca_align256(BT * s->H * s->Dh * sizeof(floatX)) + ca_align256(2 * BT * s->H * sizeof(float)) +
                   ca_align256((size_t)s->B * nqt * s->H * (s->Dh / 2) * sizeof(float)) + ca_align256(ncb * s->Dh * sizeof(float));
    if (ca_use_mma(s)) {
        bytes += ca_align256(BT * s->H * s->Dh * sizeof(floatX)) + 2 * ca_align256(BT * s->H * s->Dh * sizeof(float));
        bytes += 2 * ca_align256(ca_bank_elems(s) / s->Hkv * s->H * sizeof(float));
        bytes += ca_fb_scratch_bytes(s);
    }
    return bytes;
}

#if !defined(ENABLE_FP32)
// Kernels that take more than 48 KB of dynamic shared memory must say so once per kernel.
template <typename K>
static void ca_mma_launch_prep(K kernel, int smem, const char* name) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) {
        fprintf(stderr, "coda_attention: %s needs %d bytes of shared memory: %s\n", name, smem, cudaGetErrorString(e));
        exit(1);
    }
}
static void ca_noise_query(const GpuContext* ctx, const CodaAttnShape* s, floatX* qn, const floatX* q, const floatX* theta) {
    const int W = s->H * s->Dh;  // a multiple of 8 (Dh is 64 or 128): whole 16-byte chunks
    const size_t rows = (size_t)s->B * s->T;
    const unsigned gx = (unsigned)ceil_div(W / 8, 256), gy = (unsigned)std::min<size_t>(rows, std::max(1u, 1056u / gx));  // ~8 blocks an SM
    ca_noise_query_kernel<<<dim3(gx, gy), 256, 0, ctx->stream>>>(qn, q, theta, W, rows);
    cudaCheckLaunch("ca_noise_query_kernel");
}
// The TMA maps of a launch (CaTmaMaps, coda_attention_ws.cuh): q (qn with ns = 2 streams, d o where
// given) with boxes of qrows rows, k and v with boxes of krows rows
static CaTmaMaps ca_tma_maps(const CodaAttnShape* s, const CodaAttnInputs* in, int ns, const floatX* qn, const floatX* dO, int qrows,
                             int krows) {
    CaTmaMaps tm;
    memset(&tm, 0, sizeof(tm));
    tm.q = ca_tma_map_heads(in->q, s->B, s->T, s->H, s->Dh, qrows);
    if (ns == 2) tm.qn = ca_tma_map_heads(qn, s->B, s->T, s->H, s->Dh, qrows);
    if (dO) tm.dO = ca_tma_map_heads(dO, s->B, s->T, s->H, s->Dh, qrows);
    tm.k = ca_tma_map_heads(in->k, s->B, s->T, s->Hkv, s->Dh, krows);
    tm.v = ca_tma_map_heads(in->v, s->B, s->T, s->Hkv, s->Dh, krows);
    return tm;
}
template <int DH, int NS, bool BND>
static void ca_mma_forward_launch(const GpuContext* ctx, const CodaAttnShape* s, const CodaAttnInputs* in, const CodaAttnSaved* sv,
                                  const floatX* qn) {
    unsigned blocks = (unsigned)ca_n_qtiles(*s, 64) * s->H * s->B;
    if (ca_use_ws(s)) {
        const int smem = ca_ws_fwd_smem<DH, NS, BND>();
        ca_mma_launch_prep(ca_ws_forward_kernel<DH, NS, BND>, smem, "ca_ws_forward_kernel");
        CaTmaMaps tm;  // the kernel's TMA loads (causal key sets): its query tiles of 64 rows, its key tiles
        memset(&tm, 0, sizeof(tm));
        if (CA_WS_TMA && !BND) tm = ca_tma_maps(s, in, NS, qn, NULL, 64, ca_ws_bk<BND>());
        ca_ws_forward_kernel<DH, NS, BND><<<blocks, 128 * (NS + 1), smem, ctx->stream>>>(*s, in->bank, sv->a_sig, sv->a_noise, sv->lse,
                                                                                        in->q, qn, in->k, in->v, tm);
        cudaCheckLaunch("ca_ws_forward_kernel");
    } else if (ca_use_wgmma(s)) {
        const int smem = ca_wg_fwd_smem<DH, NS>();
        ca_mma_launch_prep(ca_wg_forward_kernel<DH, NS, BND>, smem, "ca_wg_forward_kernel");
        ca_wg_forward_kernel<DH, NS, BND><<<blocks, 128 * NS, smem, ctx->stream>>>(*s, in->bank, sv->a_sig, sv->a_noise, sv->lse, in->q,
                                                                                  qn, in->k, in->v);
        cudaCheckLaunch("ca_wg_forward_kernel");
    } else {
        const int smem = ca_mma_fwd_smem<DH, NS>();
        ca_mma_launch_prep(ca_mma_forward_kernel<DH, NS, BND>, smem, "ca_mma_forward_kernel");
        ca_mma_forward_kernel<DH, NS, BND><<<blocks, 128 * NS, smem, ctx->stream>>>(*s, in->bank, sv->a_sig, sv->a_noise, sv->lse, in->q,
                                                                                   qn, in->k, in->v);
        cudaCheckLaunch("ca_mma_forward_kernel");
    }
}
// dK/dV of one key source (BANK: the bank slots of every block) into fp32 partials per query head
template <int DH, int NS, bool BND, bool BANK>
static void ca_mma_dkdv_launch(const GpuContext* ctx, const CodaAttnShape* s, const CodaAttnInputs* in, float* pk, float* pv,
                               const floatX* dO, const float* lse, const float* delta, const floatX* qn) {
    constexpr bool GLO = BND && !BANK;
    const int nkt = BANK ? ceil_div(s->bank_slots, 64) : ceil_div(s->T, 64), nz = BANK ? s->B * ca_n_blocks(*s) : s->B;
    const unsigned blocks = (unsigned)nkt * s->H * nz;
    if (ca_use_wgmma(s)) {
        const int smem = ca_wg_dkdv_smem<DH, NS, GLO>();
        ca_mma_launch_prep(ca_wg_dkdv_kernel<DH, NS, BND, BANK>, smem, "ca_wg_dkdv_kernel");
        ca_wg_dkdv_kernel<DH, NS, BND, BANK><<<blocks, 128, smem, ctx->stream>>>(*s, in->bank, pk, pv, dO, lse, delta, in->q, qn, in->k,
                                                                                in->v, in->lam_logit);
        cudaCheckLaunch("ca_wg_dkdv_kernel");
    } else {
        const int smem = ca_mma_dkdv_smem<DH, NS, GLO>();
        ca_mma_launch_prep(ca_mma_dkdv_kernel<DH, NS, BND, BANK>, smem, "ca_mma_dkdv_kernel");
        ca_mma_dkdv_kernel<DH, NS, BND, BANK><<<blocks, 128, smem, ctx->stream>>>(*s, in->bank, pk, pv, dO, lse, delta, in->q, qn, in->k,
                                                                                 in->v, in->lam_logit);
        cudaCheckLaunch("ca_mma_dkdv_kernel");
    }
}
// dk, dv: the partials per query head summed over each KV head's group
static void ca_mma_dkdv_reduce_launch(const GpuContext* ctx, const CodaAttnShape* s, const CodaAttnGrads* gr, const float* dk_part,
                                      const float* dv_part) {
    size_t n4 = (size_t)s->B * s->T * s->Hkv * s->Dh / 4;
    ca_mma_dkdv_reduce_kernel<<<(unsigned)ceil_div_sz(n4, 256), 256, 0, ctx->stream>>>(gr->dk, gr->dv, dk_part, dv_part, s->H, s->Hkv,
                                                                                        s->Dh, n4);
    cudaCheckLaunch("ca_mma_dkdv_reduce_kernel");
}
// the one-pass backward: zeroed counters (the accumulators need no zeroing), the fused kernel, then dq and
// the theta partials
template <int NS>
static void ca_fb_backward_launch(const GpuContext* ctx, const CodaAttnShape* s, const CodaAttnInputs* in, const CodaAttnGrads* gr,
                                  float* dth_part, float* dk_part, float* dv_part, const floatX* dO, const float* lse,
                                  const float* delta, const floatX* qn, void* fb_scratch) {
    float* dq_acc = (float*)fb_scratch;
    int* sem = (int*)((char*)fb_scratch + ca_align256(ca_fb_acc_bytes(s)));
    cudaCheck(cudaMemsetAsync(sem, 0, ca_fb_sem_bytes(s), ctx->stream));
    const int smem = ca_fb_smem<NS>();
    ca_mma_launch_prep(ca_fb_backward_kernel<NS>, smem, "ca_fb_backward_kernel");
    const unsigned blocks = (unsigned)(ca_fb_nkb(s->T) * s->H * s->B);
    const CaTmaMaps tm = ca_tma_maps(s, in, NS, qn, dO, CA_FB_BQ, 64);  // query tiles of CA_FB_BQ rows, key halves of 64
    ca_fb_backward_kernel<NS><<<blocks, 384, smem, ctx->stream>>>(*s, dk_part, dv_part, dq_acc, sem, lse, delta, in->lam_logit, tm);
    cudaCheckLaunch("ca_fb_backward_kernel");
    ca_fb_dq_finish_kernel<NS><<<dim3(ca_n_qtiles(*s, 64), s->H, s->B), 256, 0, ctx->stream>>>(*s, gr->dq, dth_part, dq_acc, in->q,
                                                                                              in->theta);
    cudaCheckLaunch("ca_fb_dq_finish_kernel");
}
template <int DH, int NS, bool BND>
static void ca_mma_backward_launch(const GpuContext* ctx, const CodaAttnShape* s, const CodaAttnInputs* in, const CodaAttnGrads* gr,
                                   float* dth_part, float* dk_part, float* dv_part, float* db_part_k, float* db_part_v,
                                   const floatX* dO, const float* lse, const float* delta, const floatX* qn, void* fb_scratch) {
    unsigned blocks = (unsigned)ca_n_qtiles(*s, 64) * s->H * s->B;
    if constexpr (DH == 128 && !BND) {
        if (ca_use_fused_bwd(s)) {
            ca_fb_backward_launch<NS>(ctx, s, in, gr, dth_part, dk_part, dv_part, dO, lse, delta, qn, fb_scratch);
            ca_mma_dkdv_reduce_launch(ctx, s, gr, dk_part, dv_part);
            return;
        }
    }
    if (ca_use_wgmma(s)) {
        const int sq = ca_wg_dq_smem<DH, NS>();
        ca_mma_launch_prep(ca_wg_dq_kernel<DH, NS, BND>, sq, "ca_wg_dq_kernel");
        ca_wg_dq_kernel<DH, NS, BND><<<blocks, 128 * NS, sq, ctx->stream>>>(*s, in->bank, gr->dq, dth_part, dO, lse, delta, in->q, qn,
                                                                           in->k, in->v, in->theta, in->lam_logit);
        cudaCheckLaunch("ca_wg_dq_kernel");
    } else {
        const int sq = ca_mma_dq_smem<DH, NS>();
        ca_mma_launch_prep(ca_mma_dq_kernel<DH, NS, BND>, sq, "ca_mma_dq_kernel");
        ca_mma_dq_kernel<DH, NS, BND><<<blocks, 128 * NS, sq, ctx->stream>>>(*s, in->bank, gr->dq, dth_part, dO, lse, delta, in->q, qn,
                                                                            in->k, in->v, in->theta, in->lam_logit);
        cudaCheckLaunch("ca_mma_dq_kernel");
    }
    ca_mma_dkdv_launch<DH, NS, BND, false>(ctx, s, in, dk_part, dv_part, dO, lse, delta, qn);
    ca_mma_dkdv_reduce_launch(ctx, s, gr, dk_part, dv_part);
    if constexpr (BND) {
        if (ca_has_bank(s)) {
            ca_mma_dkdv_launch<DH, NS, true, true>(ctx, s, in, db_part_k, db_part_v, dO, lse, delta, qn);
            size_t nb4 = ca_bank_elems(s) / 4;
            ca_dbank_reduce_kernel<<<(unsigned)ceil_div_sz(nb4, 256), 256, 0, ctx->stream>>>(gr->dbank_k, gr->dbank_v, db_part_k, db_part_v,
                                                                                             s->H, s->Hkv, s->bank_slots, s->Dh, nb4);
            cudaCheckLaunch("ca_dbank_reduce_kernel");
        }
    }
}
#endif

static void ca_check_io(const CodaAttnShape* s, const CodaAttnInputs* in, const char* who) {
    const char* missing = !in->q || !in->k || !in->v ? "q/k/v"
                          : s->differential && (!in->theta || !in->lam_logit) ? "theta/lam_logit"
                          : s->differential && s->head_norm_full && !in->head_norm ? "head_norm"
                          : ca_has_bank(s) && (!in->bank.k || !in->bank.v || !in->bank.allowed) ? "bank k/v/allowed" : NULL;
    if (missing) { fprintf(stderr, "%s: %s missing\n", who, missing); exit(1); }
}

void coda_attention_forward(const GpuContext* ctx, const CodaAttnShape* s, const CodaAttnInputs* in, const CodaAttnSaved* sv) {
    ca_check_shape(s);
    ca_check_io(s, in, "coda_attention_forward");
    if (s->differential && (sv->out == sv->a_sig || sv->out == sv->a_noise)) {
        fprintf(stderr, "coda_attention_forward: with two streams out must not alias a_sig or a_noise\n");
        exit(1);
    }
    if (ca_use_mma(s)) {
#if !defined(ENABLE_FP32)
        // The noise query lives in `out` until the combine overwrites it: out is written only there,
        // so the forward needs no scratch.
        floatX* qn = s->differential ? sv->out : NULL;
        if (qn) ca_noise_query(ctx, s, qn, in->q, in->theta);
        ca_dispatch(s, [&](auto dh, auto ns, auto bnd) { ca_mma_forward_launch<CA_DH, CA_NS, CA_BND>(ctx, s, in, sv, qn); });
#endif
    } else {
        ca_dispatch(s, [&](auto dh, auto ns, auto bnd) {
            dim3 grid(ca_n_qtiles(*s, 128 / CA_NS), s->H, s->B);
            ca_forward_kernel<CA_DH, CA_NS, CA_BND><<<grid, 512, 0, ctx->stream>>>(*s, in->bank, sv->a_sig, sv->a_noise, sv->lse, in->q,
                                                                                  in->k, in->v, in->theta);
        });
        cudaCheckLaunch("ca_forward_kernel");
    }
    if (!s->differential && sv->out == sv->a_sig) {  // GQA without head norm: out is a_sig, nothing to combine
        if (sv->hn_rstd) {
            size_t n = (size_t)s->B * s->T * s->H;
            ca_fill_kernel<<<(unsigned)ceil_div_sz(n, 256), 256, 0, ctx->stream>>>(sv->hn_rstd, 1.0f, n);
            cudaCheckLaunch("ca_fill_kernel");
        }
        return;
    }
    size_t rows = (size_t)s->B * s->T * s->H;
    dim3 grid((unsigned)ceil_div_sz(rows, 8));
    ca_dispatch(s, [&](auto dh, auto ns, auto bnd) {
        ca_combine_forward_kernel<CA_DH><<<grid, 256, 0, ctx->stream>>>(*s, sv->out, sv->hn_rstd, sv->a_sig, sv->a_noise, in->lam_logit,
                                                                        in->head_norm);
    });
    cudaCheckLaunch("ca_combine_forward_kernel");
}

void coda_attention_backward(const GpuContext* ctx, const CodaAttnShape* s, const CodaAttnInputs* in, const CodaAttnSaved* sv,
                             const floatX* dout, const CodaAttnGrads* gr, void* scratch, size_t scratch_bytes) {
    ca_check_shape(s);
    ca_check_io(s, in, "coda_attention_backward");
    if (s->hist != 0) {
        fprintf(stderr, "coda_attention_backward: a continued forward (hist=%d carried-in rows) is inference only\n", s->hist);
        exit(1);
    }
    size_t need = coda_attention_scratch_bytes(s);
    if (scratch_bytes < need || !scratch) {
        fprintf(stderr, "coda_attention_backward: scratch of %zu bytes given, %zu needed\n", scratch_bytes, need);
        exit(1);
    }
    if (ca_has_bank(s) && (!gr->dbank_k || !gr->dbank_v)) {
        fprintf(stderr, "coda_attention_backward: a bounded key set with bank slots needs dbank_k/dbank_v\n");
        exit(1);
    }
    const int norm = s->differential && s->head_norm_full;
    const size_t BT = (size_t)s->B * s->T, rows = BT * s->H;
    const int bq = ca_dq_bq(s), nqt = ca_n_qtiles(*s, bq), ncb = (int)ceil_div_sz(rows, CA_CB_ROWS_PER_BLOCK);
    char* p = (char*)scratch;
    floatX* dO = (floatX*)p;       p += ca_align256(rows * s->Dh * sizeof(floatX));
    float* delta = (float*)p;      p += ca_align256(2 * rows * sizeof(float));
    float* dth_part = (float*)p;   p += ca_align256((size_t)s->B * nqt * s->H * (s->Dh / 2) * sizeof(float));
    float* dw_part = (float*)p;    p += ca_align256(ncb * s->Dh * sizeof(float));
    // 1. head norm / stream combination backward
    ca_dispatch(s, [&](auto dh, auto ns, auto bnd) {
        ca_combine_backward_kernel<CA_DH><<<ncb, 256, 0, ctx->stream>>>(*s, dO, delta, gr->dlam_logit, dw_part, dout, sv->a_sig,
                                                                        sv->a_noise, sv->hn_rstd, in->lam_logit, in->head_norm);
    });
    cudaCheckLaunch("ca_combine_backward_kernel");
    if (norm && gr->dhead_norm) {
        ca_colsum_kernel<<<s->Dh, 256, 0, ctx->stream>>>(gr->dhead_norm, dw_part, ncb, s->Dh);
        cudaCheckLaunch("ca_colsum_kernel(dhead_norm)");
    }
    if (ca_use_mma(s)) {
#if !defined(ENABLE_FP32)
        // 2+3. tensor cores: dq (+ theta partials), then dk/dv (and dbank) partials per query head and their sums
        const size_t nbp = ca_bank_elems(s) / s->Hkv * s->H;
        floatX* qn = (floatX*)p;      p += ca_align256(rows * s->Dh * sizeof(floatX));
        float* dk_part = (float*)p;   p += ca_align256(rows * s->Dh * sizeof(float));
        float* dv_part = (float*)p;   p += ca_align256(rows * s->Dh * sizeof(float));
        float* db_part_k = (float*)p; p += ca_align256(nbp * sizeof(float));
        float* db_part_v = (float*)p; p += ca_align256(nbp * sizeof(float));
        void* fb_scratch = p;  // ca_fb_scratch_bytes
        if (s->differential) ca_noise_query(ctx, s, qn, in->q, in->theta);
        else qn = NULL;
        ca_dispatch(s, [&](auto dh, auto ns, auto bnd) {
            ca_mma_backward_launch<CA_DH, CA_NS, CA_BND>(ctx, s, in, gr, dth_part, dk_part, dv_part, db_part_k, db_part_v, dO, sv->lse,
                                                         delta, qn, fb_scratch);
        });
#endif
    } else {
        // 2. dq (+ noise rotation backward, theta partials); 3. dk, dv (and the bank slots' gradients)
        ca_dispatch(s, [&](auto dh, auto ns, auto bnd) {
            constexpr int DH = CA_DH, NS = CA_NS;
            constexpr bool BND = CA_BND;
            ca_dq_kernel<DH, NS, BND><<<dim3(nqt, s->H, s->B), 512, 0, ctx->stream>>>(*s, in->bank, gr->dq, dth_part, dO, sv->lse, delta,
                                                                                      in->q, in->k, in->v, in->theta, in->lam_logit);
            cudaCheckLaunch("ca_dq_kernel");
            ca_dkdv_kernel<DH, NS, BND, false><<<dim3(ceil_div(s->T, 64), s->Hkv, s->B), 64 * (DH / 16), 0, ctx->stream>>>(
                *s, in->bank, gr->dk, gr->dv, NULL, NULL, dO, sv->lse, delta, in->q, in->k, in->v, in->theta, in->lam_logit);
            cudaCheckLaunch("ca_dkdv_kernel");
            if constexpr (BND) {
                if (ca_has_bank(s)) {
                    dim3 grid(ceil_div(s->bank_slots, 64), s->Hkv, s->B * ca_n_blocks(*s));
                    ca_dkdv_kernel<DH, NS, true, true><<<grid, 64 * (DH / 16), 0, ctx->stream>>>(
                        *s, in->bank, NULL, NULL, gr->dbank_k, gr->dbank_v, dO, sv->lse, delta, in->q, in->k, in->v, in->theta,
                        in->lam_logit);
                    cudaCheckLaunch("ca_dkdv_kernel(bank)");
                }
            }
        });
    }
    // theta: the per-(query tile, head) partials of either path, summed in a fixed order
    if (s->differential && gr->dtheta) {
        ca_colsum_kernel<<<s->H * (s->Dh / 2), 256, 0, ctx->stream>>>(gr->dtheta, dth_part, s->B * nqt, s->H * (s->Dh / 2));
        cudaCheckLaunch("ca_colsum_kernel(dtheta)");
    }
}

#undef CA_DH
#undef CA_NS
#undef CA_BND
