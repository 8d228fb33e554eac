// coda_attention_mma.cuh — the tensor-core kernels of CoDA two-stream causal attention (BF16 build).
// Same math, inputs, outputs and saved tensors as the fp32-FMA kernels of coda_attention.cuh (which
// includes this file and chooses between them, CodaAttnShape.impl); read the math and the layouts
// there. This file only holds the three attention kernels that do the O(T^2) work, on mma.sync
// (m16n8k16, bf16 inputs, fp32 accumulation), FlashAttention-2 style:
//
//   forward  block = (query tile of 64, head h, batch row b); 4 warps per stream, 16 query rows each.
//            BOTH streams run in the block (8 warps) against the same K/V tile, which is staged once
//            in shared memory (cp.async, double-buffered). Online softmax in fp32 (exp2 domain); the
//            probabilities are rounded to bf16 for the P.V product, the row sums use the fp32 values.
//   dQ       block = (query tile of 64, h, b), both streams (8 warps), key tiles of 32 (Dh 128) or 64
//            (Dh 64): S and dP recomputed from lse; dS.K accumulated in registers; at the end the
//            noise warps hand dq_noise to the signal
//            warps through shared memory, which add R_theta^T dq_noise and form the theta partials
//            (fixed-order sums: bitwise reproducible).
//   dK/dV    block = (key tile of 64, QUERY head h, b), 4 warps x 16 keys; walks the query tiles
//            (32 queries at Dh 128, 64 at Dh 64) at or after its keys, both streams of h per tile
//            (dP^T = V dO^T computed once for the two); dK, dV stay in registers. Each block writes
//            an fp32 partial for its query head; a small kernel sums the G = H/Hkv partials of a KV
//            head in a fixed order (no atomics). One block per query head (instead of per KV head) gives
//            G times more blocks, which evens out the causal triangle's unequal work per key tile.
//
// The noise query qn = R_theta(q) is formed once per pass by ca_noise_query_kernel and rounded to
// bf16 (the tensor cores take bf16): the forward and the backward use the same bits. The noise
// stream's d A = -lam * d o is never rounded: lam scales dP (per query) and P (for dV) in fp32.
// Blocks are numbered heaviest tile first (causal: late query tiles / early key tiles do the most).
//
// Shared-memory tiles are [rows][DH] bf16 with the 16-byte chunks of a row XOR-swizzled by (row & 7),
// so that the 8 row addresses of every ldmatrix hit 8 different bank groups.
//
// Speed (dev/PERF.md): 130-210 TFLOP/s on H100/H200, ~13x the FMA kernels. Every warp owns 16 rows,
// so each ldmatrix.x4 of a shared K/V (or Q/dO) fragment feeds only two mma.sync: the kernels are
// bound by shared-memory bandwidth, not by the tensor cores. More rows per warp does not fit the
// register file at Dh 128. On Hopper (sm_90a) coda_attention_wgmma.cuh runs the same blocks on
// warpgroup MMA, which reads shared-memory operands once per 64 rows; this file is the path for
// other GPUs and for builds without sm_90a.
#pragma once
#include <stdint.h>
#include <cuda_bf16.h>
#include "hopper.cuh"  // defines: ca_smem_u32

typedef __nv_bfloat16 bf16;

// ---------------------------------------------------------------------------------------------
// PTX wrappers


// 16 bytes global -> shared, asynchronously; zero-fills when !valid (the source is then not read).
__device__ __forceinline__ void ca_cp_async16(void* smem, const void* gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(ca_smem_u32(smem)), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void ca_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void ca_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ca_ldsm_x4(uint32_t r[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ca_smem_u32(p)));
}
__device__ __forceinline__ void ca_ldsm_x4_trans(uint32_t r[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ca_smem_u32(p)));
}
// c (16x8 fp32) += a (16x16 bf16, row-major) * b (16x8 bf16, column-major)
__device__ __forceinline__ void ca_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t ca_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // lo -> the lower address / lower k index
    return *(uint32_t*)&v;
}

// ---------------------------------------------------------------------------------------------
// Shared-memory tiles and fragments. Fragment layouts of m16n8k16 (g = lane / 4, t = lane % 4):
//   A a[0..3]: (row g, k 2t..2t+1), (row g+8, k 2t..), (row g, k 2t+8..), (row g+8, k 2t+8..)
//   B b[0..1]: (k 2t..2t+1, col g), (k 2t+8.., col g)
//   C c[0..3]: (row g, col 2t), (row g, col 2t+1), (row g+8, col 2t), (row g+8, col 2t+1)

template <int DH>
__device__ __forceinline__ int ca_swz(int r, int c) {  // element (r, c) of a swizzled [rows][DH] tile
    return r * DH + ((((c >> 3) ^ (r & 7))) << 3) + (c & 7);
}

// Rows r0 .. r0+ROWS-1 of a [T][stride] global matrix (already offset to batch row and head) into a
// tile; rows >= T, and rows < lo, are zero (lo < 0: a continued forward's carried-in ring rows).
template <int DH, int ROWS, int THREADS>
__device__ __forceinline__ void ca_load_tile(bf16* tile, const bf16* src, size_t stride, int r0, int T, int lo = 0) {
    constexpr int CH = DH / 8;
    for (int idx = threadIdx.x; idx < ROWS * CH; idx += THREADS) {
        const int r = idx / CH, c = (idx % CH) * 8, gr = r0 + r;
        const bool ok = gr < T && gr >= lo;
        ca_cp_async16(tile + ca_swz<DH>(r, c), src + (ptrdiff_t)(ok ? gr : 0) * (ptrdiff_t)stride + c, ok);
    }
}

// A fragment of rows r0..r0+15, k = k0..k0+15 of a row-major tile. The same addressing with .trans
// gives the B fragments of a tile stored [k][n] (rows = k): n-tiles n0 (b[0], b[1]) and n0+8 (b[2], b[3]).
template <int DH>
__device__ __forceinline__ void ca_frag_a(uint32_t a[4], const bf16* tile, int r0, int k0) {
    const int l = threadIdx.x & 31;
    ca_ldsm_x4(a, tile + ca_swz<DH>(r0 + (l & 15), k0 + ((l >> 4) << 3)));
}
template <int DH>
__device__ __forceinline__ void ca_frag_b_kn(uint32_t b[4], const bf16* tile, int k0, int n0) {
    const int l = threadIdx.x & 31;
    ca_ldsm_x4_trans(b, tile + ca_swz<DH>(k0 + (l & 15), n0 + ((l >> 4) << 3)));
}
// B fragments of a tile stored [n][k] (rows = n, e.g. K for S = Q K^T): n-tiles n0 and n0+8, k0..k0+15.
template <int DH>
__device__ __forceinline__ void ca_frag_b_nk(uint32_t b[4], const bf16* tile, int n0, int k0) {
    const int l = threadIdx.x & 31;
    ca_ldsm_x4(b, tile + ca_swz<DH>(n0 + (l & 7) + ((l >> 4) << 3), k0 + (((l >> 3) & 1) << 3)));
}

// acc[16 rows][N] += A (16 x DH, fragments in registers) * tile[N rows][DH]^T   (S = Q K^T)
template <int DH, int N>
__device__ __forceinline__ void ca_mm_abt(float acc[][4], const uint32_t a[][4], const bf16* tile) {
#pragma unroll
    for (int kk = 0; kk < DH / 16; kk++)
#pragma unroll
        for (int np = 0; np < N / 16; np++) {
            uint32_t b[4];
            ca_frag_b_nk<DH>(b, tile, np * 16, kk * 16);
            ca_mma(acc[2 * np], a[kk], b[0], b[1]);
            ca_mma(acc[2 * np + 1], a[kk], b[2], b[3]);
        }
}
// The same with A = rows a0..a0+15 of a [rows][DH] tile, each k-step's fragment loaded when used
// (dK/dV: S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys)
template <int DH, int N>
__device__ __forceinline__ void ca_mm_abt_sa(float acc[][4], const bf16* ta, int a0, const bf16* tb) {
#pragma unroll
    for (int kk = 0; kk < DH / 16; kk++) {
        uint32_t a[4];
        ca_frag_a<DH>(a, ta, a0, kk * 16);
#pragma unroll
        for (int np = 0; np < N / 16; np++) {
            uint32_t b[4];
            ca_frag_b_nk<DH>(b, tb, np * 16, kk * 16);
            ca_mma(acc[2 * np], a, b[0], b[1]);
            ca_mma(acc[2 * np + 1], a, b[2], b[3]);
        }
    }
}
// acc[16 rows][DH] += A (16 x K, fragments) * tile[K rows][DH]   (O = P V)
template <int DH, int K>
__device__ __forceinline__ void ca_mm_ab(float acc[][4], const uint32_t a[][4], const bf16* tile) {
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++)
#pragma unroll
        for (int np = 0; np < DH / 16; np++) {
            uint32_t b[4];
            ca_frag_b_kn<DH>(b, tile, kk * 16, np * 16);
            ca_mma(acc[2 * np], a[kk], b[0], b[1]);
            ca_mma(acc[2 * np + 1], a[kk], b[2], b[3]);
        }
}
// The accumulator of a 16 x N product as A fragments (k = its N columns) after f(value, col): the
// FlashAttention register trick (C of n-tiles 2kk, 2kk+1 = A of k-step kk).
template <int N>
__device__ __forceinline__ void ca_acc_to_a(uint32_t a[][4], const float c[][4]) {
#pragma unroll
    for (int j = 0; j < N / 8; j++) {
        a[j / 2][2 * (j & 1)] = ca_pack_bf16(c[j][0], c[j][1]);
        a[j / 2][2 * (j & 1) + 1] = ca_pack_bf16(c[j][2], c[j][3]);
    }
}

// Block index -> (tile, head, batch row), heaviest tile first. reverse: tile = ntiles-1-major index.
__device__ __forceinline__ void ca_block_coords(int ntiles, int H, int B, int reverse, int* tile, int* h, int* b) {
    const int major = blockIdx.x / (H * B), rest = blockIdx.x % (H * B);
    *tile = reverse ? ntiles - 1 - major : major;
    *h = rest % H;
    *b = rest / H;
}

// ---------------------------------------------------------------------------------------------
// qn = R_theta[h](q): rotation of interleaved pairs (docs/spec.md §1.4), rounded to bf16. Layout: q, qn
// [rows = B T][W = H Dh], theta [H][Dh / 2] = the pair index within a row. Thread t of block (x, y)
// owns the 16-byte chunk c = 256 x + t of every row (4 pairs: its cos / sin once, in registers) and walks
// rows y, y + gridDim.y, .. with 16-byte loads and stores, four rows in flight. (The first form, one
// thread per pair with a 4-byte access and a sincosf each, ran at ~1.8 TB/s on an H200: 18 us of every
// forward and backward at the 7B shape and T = 2048; dev/PERF.md session 14.) Same arithmetic per pair.
__global__ void __launch_bounds__(256) ca_noise_query_kernel(bf16* qn, const bf16* q, const bf16* theta, int W, size_t rows) {
    const int c = blockIdx.x * 256 + threadIdx.x;  // chunk of 8 values = pairs 4c .. 4c + 3
    if (c >= W / 8) return;
    float cs[4], sn[4];
#pragma unroll
    for (int i = 0; i < 4; i++) sincosf(__bfloat162float(theta[4 * c + i]), &sn[i], &cs[i]);
    const uint4* src = (const uint4*)q + c;
    uint4* dst = (uint4*)qn + c;
    const size_t stride = (size_t)W / 8;  // uint4s per row
    for (size_t r0 = blockIdx.y; r0 < rows; r0 += 4 * (size_t)gridDim.y) {
        uint4 x[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const size_t r = r0 + (size_t)u * gridDim.y;
            if (r < rows) x[u] = src[r * stride];
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const size_t r = r0 + (size_t)u * gridDim.y;
            if (r >= rows) continue;
            uint32_t* w = (uint32_t*)&x[u];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const __nv_bfloat162 v = *(const __nv_bfloat162*)&w[i];
                const float x0 = __low2float(v), x1 = __high2float(v);
                const __nv_bfloat162 o = __floats2bfloat162_rn(x0 * cs[i] - x1 * sn[i], x0 * sn[i] + x1 * cs[i]);
                w[i] = *(const uint32_t*)&o;
            }
            dst[r * stride] = x[u];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-thread pieces of both kernel families (mma.sync here, wgmma in coda_attention_wgmma.cuh): warp w
// of a stream owns 16 rows, a thread rows g and g + 8 of them, i.e. elements e = 0, 1 and e = 2, 3 of
// every 8-column accumulator tile j, at column 8j + 2tq + (e & 1).

// 2^x as the SFU computes it, denormal results flushed to 0. exp2f() is the same MUFU.EX2 (the same
// bits for x >= -126) wrapped in a range test and two predicated multiplies that get denormal results
// right; in the warp-specialized forward those three per score were a sixth of the consumers'
// instructions (ncu SASS, dev/PERF.md session 12), spent on probabilities below 1e-38.
__device__ __forceinline__ float ca_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// body(std::true_type) where a tile needs masking, body(std::false_type) elsewhere: masking costs
// compares and selects per score, and only the causal diagonal and the sequence's end need it, so the
// common tile gets a copy of the loop without them (mask is uniform across the warp: no divergence).
template <typename Body>
__device__ __forceinline__ void ca_if_masked(bool mask, Body&& body) {
    if (mask)
        body(std::true_type{});
    else
        body(std::false_type{});
}

// Forward, online soft-max of one key tile starting at key k0, first half: to the exp2 domain, keys
// past the row masked (the causal diagonal, the end of the sequence), new row maxima m; alpha rescales
// the running sums l (done here) and the output accumulator (ca_rescale_rows, by the caller).
template <int BK>
__device__ __forceinline__ void ca_softmax_max(float (*sc)[4], float* m, float* l, float* alpha, int k0, bool mask, int row0,
                                               int row1, int T, int tq, float sl2) {
    float mx[2] = {m[0], m[1]};
    ca_if_masked(mask, [&](auto masked) {
#pragma unroll
        for (int j = 0; j < BK / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = sc[j][e] * sl2;
                const int key = k0 + 8 * j + 2 * tq + (e & 1);
                if (decltype(masked)::value && ((key > (e < 2 ? row0 : row1)) | (key >= T))) x = -INFINITY;
                sc[j][e] = x;
                mx[e >> 1] = fmaxf(mx[e >> 1], x);
            }
    });
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        alpha[r] = ca_exp2(m[r] - mx[r]);  // finite mx: key 0 (first tile) is visible to every row
        m[r] = mx[r];
        l[r] *= alpha[r];
    }
}
// ... second half: the probabilities and their row sums
template <int BK>
__device__ __forceinline__ void ca_softmax_exp(float (*sc)[4], const float* m, float* l) {
#pragma unroll
    for (int j = 0; j < BK / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            sc[j][e] = ca_exp2(sc[j][e] - m[e >> 1]);
            l[e >> 1] += sc[j][e];
        }
}
// Bounded versions of the two halves: keys hidden by invalid(c, r) (column c of the tile, row r = 0
// for row0, 1 for row1: bank slots not allowed, keys before the window, past the diagonal), and a
// row that has seen no key yet (a bank tile may hide every key) keeps max -inf without a NaN.
template <int BK, typename Invalid>
__device__ __forceinline__ void ca_softmax_max_masked(float (*sc)[4], float* m, float* l, float* alpha, int tq, float sl2,
                                                      Invalid invalid) {
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < BK / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float x = sc[j][e] * sl2;
            if (invalid(8 * j + 2 * tq + (e & 1), e >> 1)) x = -INFINITY;
            sc[j][e] = x;
            mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        alpha[r] = mx[r] == -INFINITY ? 1.f : ca_exp2(m[r] - mx[r]);
        m[r] = mx[r];
        l[r] *= alpha[r];
    }
}
template <int BK>
__device__ __forceinline__ void ca_softmax_exp_masked(float (*sc)[4], const float* m, float* l) {
    const float ms[2] = {m[0] == -INFINITY ? 0.f : m[0], m[1] == -INFINITY ? 0.f : m[1]};
#pragma unroll
    for (int j = 0; j < BK / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            sc[j][e] = ca_exp2(sc[j][e] - ms[e >> 1]);
            l[e >> 1] += sc[j][e];
        }
}
// Bounded forward, one key tile: the bank's tiles come first (t < nbank; bits = the tile's 64
// allowed flags), then sequence tiles starting at key k0 (window start klo, the row's own position).
template <int BK>
__device__ __forceinline__ void ca_softmax_bounded(float (*sc)[4], float* m, float* l, float* alpha, bool bank_tile, uint64_t bits,
                                                   int k0, int klo, int row0, int row1, int T, int tq, float sl2) {
    if (bank_tile)
        ca_softmax_max_masked<BK>(sc, m, l, alpha, tq, sl2, [&](int c, int r) { return ((bits >> c) & 1ull) == 0; });
    else
        ca_softmax_max_masked<BK>(sc, m, l, alpha, tq, sl2, [&](int c, int r) {
            const int key = k0 + c;
            return (key > (r ? row1 : row0)) | (key >= T) | (key < klo);
        });
}
// The 64 allowed flags of bank tile t from the staged words
__device__ __forceinline__ uint64_t ca_bank_tile_bits(const uint32_t* words, int t) {
    return (uint64_t)words[2 * t] | ((uint64_t)words[2 * t + 1] << 32);
}
// Initial soft-max state of a row: empty (max -inf, sum 0), or with n_empty zero keys (score 0)
// counted once per row (by the quad's first thread: the sums are reduced over the quad at the end).
__device__ __forceinline__ void ca_softmax_init(float* m, float* l, int n_empty, int tq) {
    m[0] = m[1] = n_empty > 0 ? 0.f : -INFINITY;
    l[0] = l[1] = (n_empty > 0 && tq == 0) ? (float)n_empty : 0.f;
}

template <int DH>
__device__ __forceinline__ void ca_rescale_rows(float (*o)[4], const float* alpha) {
#pragma unroll
    for (int j = 0; j < DH / 8; j++) {
        o[j][0] *= alpha[0]; o[j][1] *= alpha[0];
        o[j][2] *= alpha[1]; o[j][3] *= alpha[1];
    }
}
// Forward, the end: rows (< qend, the end of the tile's block) of stream s's output o / l (bf16) and
// lse (natural log) of head h, row b
template <int DH>
__device__ __forceinline__ void ca_forward_store(const CodaAttnShape& sh, bf16* dst, float* lse, const float (*o)[4], const float* m,
                                                 float* l, int row0, int row1, int qend, int tq, int s, int h, int b) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        const int row = r ? row1 : row0;
        if (row < qend) {
            const float inv = 1.0f / l[r];
            bf16* drow = dst + ((size_t)b * sh.T + row) * sh.H * DH + (size_t)h * DH + 2 * tq;
#pragma unroll
            for (int j = 0; j < DH / 8; j++) *(uint32_t*)(drow + 8 * j) = ca_pack_bf16(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
            if (tq == 0) lse[(((size_t)s * sh.B + b) * sh.H + h) * sh.T + row] = (m[r] + log2f(l[r])) * CA_LN2;
        }
    }
}

// dQ, per-row scalars of this thread's rows: lse in the exp2 domain (+inf past the tile's block, qend:
// P = 0), delta, and the stream factor (1 for the signal, -lam for the noise stream)
__device__ __forceinline__ void ca_dq_row_scalars(const CodaAttnShape& sh, const float* lse, const float* delta,
                                                  const bf16* lam_logit, const int* rows, int qend, int s, int h, int b,
                                                  float* lse2, float* dl, float* f) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const bool ok = rows[r] < qend;
        const size_t li = (((size_t)s * sh.B + b) * sh.H + h) * sh.T + (ok ? rows[r] : 0);
        lse2[r] = ok ? lse[li] * CA_LOG2E : INFINITY;
        dl[r] = ok ? delta[li] : 0.f;
        f[r] = (s == 0) ? 1.0f : (ok ? -ca_sigmoid(__bfloat162float(lam_logit[((size_t)b * sh.T + rows[r]) * sh.H + h])) : 0.f);
    }
}
// dQ, one key tile at k0: dS = P (f dP - delta) (natural-log units), over S in sc
template <int BK>
__device__ __forceinline__ void ca_dq_ds(float (*sc)[4], const float (*dp)[4], int k0, bool mask, const int* rows, int T, int tq,
                                         float sl2, const float* lse2, const float* dl, const float* f) {
    ca_if_masked(mask, [&](auto masked) {
#pragma unroll
        for (int j = 0; j < BK / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1, key = k0 + 8 * j + 2 * tq + (e & 1);
                float p = ca_exp2(sc[j][e] * sl2 - lse2[r]);
                if (decltype(masked)::value && (key > rows[r] || key >= T)) p = 0.f;
                sc[j][e] = p * (dp[j][e] * f[r] - dl[r]);
            }
    });
}
// ... bounded: keys hidden by invalid(c, r) (bank slots not allowed; keys outside [klo, row])
template <int BK, typename Invalid>
__device__ __forceinline__ void ca_dq_ds_masked(float (*sc)[4], const float (*dp)[4], int tq, float sl2, const float* lse2,
                                                const float* dl, const float* f, Invalid invalid) {
#pragma unroll
    for (int j = 0; j < BK / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int r = e >> 1;
            float p = ca_exp2(sc[j][e] * sl2 - lse2[r]);
            if (invalid(8 * j + 2 * tq + (e & 1), r)) p = 0.f;
            sc[j][e] = p * (dp[j][e] * f[r] - dl[r]);
        }
}
template <int BK>
__device__ __forceinline__ void ca_dq_ds_bounded(float (*sc)[4], const float (*dp)[4], bool bank_tile, uint64_t bits, int k0, int klo,
                                                 const int* rows, int tq, float sl2, const float* lse2, const float* dl, const float* f) {
    if (bank_tile)
        ca_dq_ds_masked<BK>(sc, dp, tq, sl2, lse2, dl, f, [&](int c, int r) { return ((bits >> c) & 1ull) == 0; });
    else
        ca_dq_ds_masked<BK>(sc, dp, tq, sl2, lse2, dl, f, [&](int c, int r) {
            const int key = k0 + c;
            return (key > rows[r]) | (key < klo);
        });
}
// dK/dV, stream s of the query tile at q0 (keys[] this thread's keys, sc_ the tile's scalars of
// ca_dkdv_load_scalars): P' = (factor * P)^T over S^T in st (for dV), dS^T in ds (for dK)
template <int NS, int BQ>
__device__ __forceinline__ void ca_dkdv_p_ds(float (*st)[4], float (*ds)[4], const float (*dpt)[4], const float* sc_, int s,
                                             int q0, const int* keys, bool mask, int tq, float sl2) {
    ca_if_masked(mask, [&](auto masked) {
#pragma unroll
        for (int j = 0; j < BQ / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = 8 * j + 2 * tq + (e & 1);
                float p = ca_exp2(st[j][e] * sl2 - sc_[s * BQ + c]);
                if (decltype(masked)::value && q0 + c < keys[e >> 1]) p = 0.f;
                const float fq = s == 0 ? 1.0f : sc_[2 * NS * BQ + c];
                st[j][e] = p * fq;
                ds[j][e] = p * (dpt[j][e] * fq - sc_[(NS + s) * BQ + c]);
            }
    });
}
// ... bounded: query column c passes no gradient to the thread's key row r where invalid(c, r)
template <int NS, int BQ, typename Invalid>
__device__ __forceinline__ void ca_dkdv_p_ds_masked(float (*st)[4], float (*ds)[4], const float (*dpt)[4], const float* sc_, int s,
                                                    int tq, float sl2, Invalid invalid) {
#pragma unroll
    for (int j = 0; j < BQ / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int c = 8 * j + 2 * tq + (e & 1);
            float p = ca_exp2(st[j][e] * sl2 - sc_[s * BQ + c]);
            if (invalid(c, e >> 1)) p = 0.f;
            const float fq = s == 0 ? 1.0f : sc_[2 * NS * BQ + c];
            st[j][e] = p * fq;
            ds[j][e] = p * (dpt[j][e] * fq - sc_[(NS + s) * BQ + c]);
        }
}

// ---------------------------------------------------------------------------------------------
// The key tiles of the forward and dQ kernels (mma.sync here, wgmma in coda_attention_wgmma.cuh)

// Where one K/V tile's rows come from: rows row0.. of a source of nrows rows (rows past its end, and
// rows before lo, load as zeros), stride elements apart.
typedef struct { const bf16 *k, *v; size_t stride; int row0, nrows, lo; } CaKvTile;

// The K and V rows of one key tile into buffer `buf` of the [buffers][BK][DH] K and V tiles.
template <int DH, int BK, int THREADS>
__device__ __forceinline__ void ca_load_kv(bf16* Ks, bf16* Vs, const CaKvTile& src, int buf) {
    ca_load_tile<DH, BK, THREADS>(Ks + buf * BK * DH, src.k, src.stride, src.row0, src.nrows, src.lo);
    ca_load_tile<DH, BK, THREADS>(Vs + buf * BK * DH, src.v, src.stride, src.row0, src.nrows, src.lo);
}

// The key tiles one query tile visits, in order: nbt tiles of its block's bank (bounded: up to the
// last allowed slot, whose flags are left in bank_bits), then the sequence tiles from its block's
// window start (0 unbounded) through the tile's last row. Every thread constructs it (the bank
// staging has barriers).
template <int DH, int BK, bool BND>
struct CaKeyTiles {
    const bf16 *k, *v;            // the sequence keys of (b, kvh) [T][Hkv * DH]
    const bf16 *bank_k, *bank_v;  // the bank rows of (b, j, kvh) [bank_slots][DH] (nbt > 0)
    size_t kvstride;
    int T, bank_slots, nbt, kt_lo, nkt;  // kt_lo: the first sequence tile; nkt: bank + sequence tiles
    int hist;                            // rows [-hist, 0) of k/v: carried-in ring keys (continued forward)
    __device__ __forceinline__ CaKeyTiles(const CodaAttnShape& sh, const CodaAttnBank& bank, const bf16* k_all,
                                          const bf16* v_all, const CaQTile& tl, int bq, int b, int kvh, uint32_t* bank_bits) {
        T = sh.T;
        hist = sh.hist;
        bank_slots = sh.bank_slots;
        kvstride = (size_t)sh.Hkv * DH;
        k = k_all + (size_t)b * T * kvstride + (size_t)kvh * DH;
        v = v_all + (size_t)b * T * kvstride + (size_t)kvh * DH;
        nbt = 0;
        bank_k = bank_v = NULL;
        if (BND && sh.bank_slots > 0) {
            nbt = (ca_stage_bank_bits(sh, bank.allowed + ca_bank_row(sh, b, tl.j) * sh.bank_slots, bank_bits) + BK - 1) / BK;
            bank_k = bank.k + ca_bank_off(sh, b, tl.j, kvh);
            bank_v = bank.v + ca_bank_off(sh, b, tl.j, kvh);
        }
        kt_lo = ca_floor_div(tl.klo, BK);  // klo < 0: carried-in ring rows
        nkt = nbt + (min(tl.q0 + bq, tl.qend) + BK - 1) / BK - kt_lo;
    }
    // The sequence position of tile t's first key (t >= nbt).
    __device__ __forceinline__ int seq_key0(int t) const { return (kt_lo + t - nbt) * BK; }
    __device__ __forceinline__ CaKvTile tile(int t) const {
        if (BND && t < nbt) return CaKvTile{bank_k, bank_v, (size_t)DH, t * BK, bank_slots, 0};
        return CaKvTile{k, v, kvstride, seq_key0(t), T, -hist};
    }
};

// ---------------------------------------------------------------------------------------------
// forward. Grid: n_qtiles * H * B blocks of 128 * NS threads; dynamic smem ca_mma_fwd_smem<DH, NS>().

template <int DH, int NS>
constexpr int ca_mma_fwd_smem() { return (NS * 64 + 4 * 64) * DH * 2; }

template <int DH, int NS, bool BND>
__global__ void __launch_bounds__(128 * NS, 1)
ca_mma_forward_kernel(CodaAttnShape sh, CodaAttnBank bank, bf16* a_sig, bf16* a_noise, float* lse, const bf16* q,
                      const bf16* qn, const bf16* k, const bf16* v) {
    constexpr int BQ = 64, BK = 64, THREADS = 128 * NS;
    extern __shared__ __align__(128) unsigned char ca_smem[];
    __shared__ uint32_t bank_bits[BND ? CA_MAX_BANK_SLOTS / 32 : 1];
    bf16* Qs = (bf16*)ca_smem;     // [NS][BQ][DH]
    bf16* Ks = Qs + NS * BQ * DH;  // [2][BK][DH]
    bf16* Vs = Ks + 2 * BK * DH;   // [2][BK][DH]
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv;
    int qt, h, b;
    ca_block_coords(ca_n_qtiles(sh, BQ), H, sh.B, 1, &qt, &h, &b);
    const CaQTile tl = ca_qtile(sh, qt, BQ);
    if (tl.q0 >= tl.qend) return;  // a tile past the end of a short last block
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, s = warp / 4, wr = (warp % 4) * 16;
    const int g = lane >> 2, tq = lane & 3;
    const int q0 = tl.q0, row0 = q0 + wr + g, row1 = row0 + 8;
    const size_t qstride = (size_t)H * DH;
    const CaKeyTiles<DH, BK, BND> keys(sh, bank, k, v, tl, BQ, b, h / (H / Hkv), bank_bits);
    const int nbt = keys.nbt, nkt = keys.nkt;
    auto load_kv = [&](int t, int buf) { ca_load_kv<DH, BK, THREADS>(Ks, Vs, keys.tile(t), buf); };
    for (int ss = 0; ss < NS; ss++)
        ca_load_tile<DH, BQ, THREADS>(Qs + ss * BQ * DH, (ss ? qn : q) + (size_t)b * T * qstride + (size_t)h * DH, qstride, q0, T);
    load_kv(0, 0);
    ca_cp_async_commit();
    ca_cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[DH / 16][4];
#pragma unroll
    for (int kk = 0; kk < DH / 16; kk++) ca_frag_a<DH>(qf[kk], Qs + s * BQ * DH, wr, kk * 16);

    const float sl2 = (1.0f / sqrtf((float)DH)) * CA_LOG2E;
    float o[DH / 8][4];
#pragma unroll
    for (int j = 0; j < DH / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    if (BND) ca_softmax_init(m, l, ca_empty_ring(sh, tl.j), tq);
    for (int kt = 0; kt < nkt; kt++) {
        const int buf = kt & 1;
        if (kt + 1 < nkt) load_kv(kt + 1, buf ^ 1);
        ca_cp_async_commit();
        ca_cp_async_wait<1>();
        __syncthreads();
        float sc[BK / 8][4];
#pragma unroll
        for (int j = 0; j < BK / 8; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
        ca_mm_abt<DH, BK>(sc, qf, Ks + buf * BK * DH);
        float alpha[2];
        if (BND) {
            const bool bank_tile = kt < nbt;
            ca_softmax_bounded<BK>(sc, m, l, alpha, bank_tile, bank_tile ? ca_bank_tile_bits(bank_bits, kt) : 0ull,
                                   keys.seq_key0(kt), tl.klo, row0, row1, T, tq, sl2);
            ca_rescale_rows<DH>(o, alpha);
            ca_softmax_exp_masked<BK>(sc, m, l);
        } else {
            const int k0 = kt * BK;
            const bool mask = k0 + BK - 1 > q0 + wr || k0 + BK > T;  // the diagonal or the end of the row
            ca_softmax_max<BK>(sc, m, l, alpha, k0, mask, row0, row1, T, tq, sl2);
            ca_rescale_rows<DH>(o, alpha);
            ca_softmax_exp<BK>(sc, m, l);
        }
        uint32_t pf[BK / 16][4];
        ca_acc_to_a<BK>(pf, sc);
        ca_mm_ab<DH, BK>(o, pf, Vs + buf * BK * DH);
        __syncthreads();  // everyone is done with this buffer before it is refilled
    }
    ca_forward_store<DH>(sh, s ? a_noise : a_sig, lse, o, m, l, row0, row1, tl.qend, tq, s, h, b);
}

// The end of both dQ kernels (mma.sync and wgmma; warp w of stream s owns rows 16(w % 4).. of the
// query tile): scale dS.K; with two streams the noise warps hand dq_noise over through shared memory
// (xch, over the K/V buffers: >= 64 x DH floats, no longer read) and the signal warps add
// R_theta^T dq_noise and form the theta partials, reduced over the 4 warps in red (over the Q tiles).
template <int DH, int NS>
__device__ __forceinline__ void ca_dq_epilogue(const CodaAttnShape& sh, bf16* dq, float* dtheta_part, const bf16* q,
                                               const float (*acc)[4], void* red_area, void* xch_area, const float* rot,
                                               int q0, int qend, int qt, int nqt, int h, int b) {
    constexpr int THREADS = 128 * NS;
    const int H = sh.H;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, s = warp / 4, wr = (warp % 4) * 16;
    const int g = lane >> 2, tq = lane & 3;
    const int rows[2] = {q0 + wr + g, q0 + wr + g + 8};
    const size_t qstride = (size_t)H * DH;
    const float scale = 1.0f / sqrtf((float)DH);
    const size_t qoff = (size_t)b * sh.T * qstride + (size_t)h * DH + 2 * tq;
    if (NS == 1) {
#pragma unroll
        for (int r = 0; r < 2; r++)
            if (rows[r] < qend)
#pragma unroll
                for (int j = 0; j < DH / 8; j++)
                    *(uint32_t*)(dq + qoff + (size_t)rows[r] * qstride + 8 * j) = ca_pack_bf16(acc[j][2 * r] * scale, acc[j][2 * r + 1] * scale);
        return;
    }
    float* xch = (float*)xch_area;  // [64 rows][DH]
    if (s == 1)
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int j = 0; j < DH / 8; j++)
                *(float2*)(xch + (wr + g + 8 * r) * DH + 8 * j + 2 * tq) = make_float2(acc[j][2 * r] * scale, acc[j][2 * r + 1] * scale);
    __syncthreads();
    float* red = (float*)red_area;  // [4 warps][DH/2] theta partials
    if (s == 0) {
        float dth[DH / 8];
#pragma unroll
        for (int j = 0; j < DH / 8; j++) dth[j] = 0.f;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const bool ok = rows[r] < qend;
            const bf16* qrow = q + qoff + (size_t)(ok ? rows[r] : 0) * qstride;
#pragma unroll
            for (int j = 0; j < DH / 8; j++) {
                const int pr = 4 * j + tq;  // this thread's interleaved pair (2 pr, 2 pr + 1)
                const float cs = rot[pr], sn = rot[DH / 2 + pr];
                const float2 n = *(const float2*)(xch + (wr + g + 8 * r) * DH + 2 * pr);
                __nv_bfloat162 x = *(const __nv_bfloat162*)(qrow + 8 * j);
                const float x0 = __low2float(x), x1 = __high2float(x);
                if (ok) {
                    *(uint32_t*)(dq + qoff + (size_t)rows[r] * qstride + 8 * j) =
                        ca_pack_bf16(acc[j][2 * r] * scale + (n.x * cs + n.y * sn), acc[j][2 * r + 1] * scale + (n.y * cs - n.x * sn));
                    dth[j] += n.x * (-x0 * sn - x1 * cs) + n.y * (x0 * cs - x1 * sn);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < DH / 8; j++) {
            float v_ = dth[j];
            v_ += __shfl_xor_sync(0xffffffffu, v_, 4);
            v_ += __shfl_xor_sync(0xffffffffu, v_, 8);
            v_ += __shfl_xor_sync(0xffffffffu, v_, 16);
            if (g == 0) red[warp * (DH / 2) + 4 * j + tq] = v_;
        }
    }
    __syncthreads();
    for (int p = threadIdx.x; p < DH / 2; p += THREADS) {
        float sum = 0.f;
        for (int w = 0; w < 4; w++) sum += red[w * (DH / 2) + p];
        dtheta_part[(((size_t)b * nqt + qt) * H + h) * (DH / 2) + p] = sum;
    }
}

// ---------------------------------------------------------------------------------------------
// backward dQ (+ noise-rotation backward and theta partials). Grid: n_qtiles(64) * H * B blocks of
// 128 * NS threads. Key tiles of 32 at DH = 128 (register budget), 64 at DH = 64.

template <int DH> __host__ __device__ constexpr int ca_mma_dq_bk() { return DH == 128 ? 32 : 64; }
template <int DH, int NS>
constexpr int ca_mma_dq_smem() { return (NS * 64 + 64 + 4 * ca_mma_dq_bk<DH>()) * DH * 2 + DH * 4 * 2; }

template <int DH, int NS, bool BND>
__global__ void __launch_bounds__(128 * NS, 1)
ca_mma_dq_kernel(CodaAttnShape sh, CodaAttnBank bank, bf16* dq, float* dtheta_part, const bf16* dO, const float* lse,
                 const float* delta, const bf16* q, const bf16* qn, const bf16* k, const bf16* v, const bf16* theta,
                 const bf16* lam_logit) {
    constexpr int BQ = 64, BK = ca_mma_dq_bk<DH>(), THREADS = 128 * NS;
    extern __shared__ __align__(128) unsigned char ca_smem[];
    __shared__ uint32_t bank_bits[BND ? CA_MAX_BANK_SLOTS / 32 : 1];
    bf16* Qs = (bf16*)ca_smem;      // [NS][BQ][DH]
    bf16* dOs = Qs + NS * BQ * DH;  // [BQ][DH]
    bf16* Ks = dOs + BQ * DH;       // [2][BK][DH]
    bf16* Vs = Ks + 2 * BK * DH;    // [2][BK][DH]
    float* rot = (float*)(Vs + 2 * BK * DH);  // [2][DH/2]: cos, sin of theta[h]
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv, nqt = ca_n_qtiles(sh, BQ);
    int qt, h, b;
    ca_block_coords(nqt, H, sh.B, 1, &qt, &h, &b);
    const CaQTile tl = ca_qtile(sh, qt, BQ);
    if (tl.q0 >= tl.qend) {  // a tile past the end of a short last block: its theta partials are zero
        if (NS == 2)
            for (int p = threadIdx.x; p < DH / 2; p += THREADS) dtheta_part[(((size_t)b * nqt + qt) * H + h) * (DH / 2) + p] = 0.f;
        return;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, s = warp / 4, wr = (warp % 4) * 16;
    const int g = lane >> 2, tq = lane & 3;
    const int q0 = tl.q0, rows[2] = {q0 + wr + g, q0 + wr + g + 8};
    const size_t qstride = (size_t)H * DH;
    const CaKeyTiles<DH, BK, BND> keys(sh, bank, k, v, tl, BQ, b, h / (H / Hkv), bank_bits);
    const int nbt = keys.nbt, nkt = keys.nkt;
    auto load_kv = [&](int t, int buf) { ca_load_kv<DH, BK, THREADS>(Ks, Vs, keys.tile(t), buf); };
    for (int ss = 0; ss < NS; ss++)
        ca_load_tile<DH, BQ, THREADS>(Qs + ss * BQ * DH, (ss ? qn : q) + (size_t)b * T * qstride + (size_t)h * DH, qstride, q0, T);
    ca_load_tile<DH, BQ, THREADS>(dOs, dO + (size_t)b * T * qstride + (size_t)h * DH, qstride, q0, T);
    load_kv(0, 0);
    ca_cp_async_commit();
    if (NS == 2)
        for (int p = threadIdx.x; p < DH / 2; p += THREADS) sincosf(__bfloat162float(theta[(size_t)h * (DH / 2) + p]), &rot[DH / 2 + p], &rot[p]);
    // per-row softmax statistics: rows past the block get lse = +inf (P = 0)
    float lse2[2], dl[2], f[2];
    ca_dq_row_scalars(sh, lse, delta, lam_logit, rows, tl.qend, s, h, b, lse2, dl, f);
    ca_cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[DH / 16][4], of[DH / 16][4];
#pragma unroll
    for (int kk = 0; kk < DH / 16; kk++) {
        ca_frag_a<DH>(qf[kk], Qs + s * BQ * DH, wr, kk * 16);
        ca_frag_a<DH>(of[kk], dOs, wr, kk * 16);
    }
    const float scale = 1.0f / sqrtf((float)DH), sl2 = scale * CA_LOG2E;
    float acc[DH / 8][4];
#pragma unroll
    for (int j = 0; j < DH / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    for (int kt = 0; kt < nkt; kt++) {
        const int buf = kt & 1;
        if (kt + 1 < nkt) load_kv(kt + 1, buf ^ 1);
        ca_cp_async_commit();
        ca_cp_async_wait<1>();
        __syncthreads();
        const bf16* Kt = Ks + buf * BK * DH;
        float sc[BK / 8][4], dp[BK / 8][4];
#pragma unroll
        for (int j = 0; j < BK / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) sc[j][e] = dp[j][e] = 0.f;
        ca_mm_abt<DH, BK>(sc, qf, Kt);
        ca_mm_abt<DH, BK>(dp, of, Vs + buf * BK * DH);
        if (BND) {
            // BK may be 32 (Dh 128): bank tile kt covers slots kt*BK.., i.e. half of a 64-bit word pair
            const bool bank_tile = kt < nbt;
            const uint64_t bits = bank_tile ? (ca_bank_tile_bits(bank_bits, (kt * BK) / 64) >> ((kt * BK) % 64)) : 0ull;
            ca_dq_ds_bounded<BK>(sc, dp, bank_tile, bits, keys.seq_key0(kt), tl.klo, rows, tq, sl2, lse2, dl, f);
        } else {
            const int k0 = kt * BK;
            const bool mask = k0 + BK - 1 > q0 + wr || k0 + BK > T;
            ca_dq_ds<BK>(sc, dp, k0, mask, rows, T, tq, sl2, lse2, dl, f);
        }
        uint32_t dsf[BK / 16][4];
        ca_acc_to_a<BK>(dsf, sc);
        ca_mm_ab<DH, BK>(acc, dsf, Kt);
        __syncthreads();
    }
    ca_dq_epilogue<DH, NS>(sh, dq, dtheta_part, q, acc, Qs, Ks, rot, q0, tl.qend, qt, nqt, h, b);
}

// ---------------------------------------------------------------------------------------------
// backward dK, dV. Grid: n_ktiles(64) * H * B blocks of 128 threads (4 warps x 16 keys); writes the
// fp32 partials dk_part, dv_part [B*T][H][DH] of its query head (dk already scaled by 1/sqrt(DH)).
// One step = one query tile, both streams: dP^T = V dO^T is the same product for the two streams
// (d A_noise = -lam d o only scales it per query), so it is computed once per step.

// Per-query scalars of a dK/dV step for this thread's query row q0 + threadIdx.x (threads >= BQ have
// none): lse * log2(e) per stream (+inf outside the queries [qbeg, qstop) that see the keys: P = 0),
// delta per stream, -lam, and (GLO: bounded sequence keys) the first key the query passes gradient
// to. Loaded into registers a step ahead, so their latency hides behind a step of compute; stored to
// shared memory after it.
template <int NS, int BQ, bool GLO = false>
__device__ __forceinline__ void ca_dkdv_load_scalars(float* pre, const CodaAttnShape& sh, const float* lse, const float* delta,
                                                     const bf16* lam_logit, int q0, int qbeg, int qstop, int h, int b) {
    const int r = threadIdx.x, i_ = q0 + r, T = sh.T, H = sh.H;
    if (r >= BQ) return;
    const bool ok = i_ < qstop && i_ >= qbeg;
    if (GLO) pre[2 * NS + 1] = ok ? (float)ca_grad_lo(sh, i_) : 0.f;
#pragma unroll
    for (int s = 0; s < NS; s++) {
        const size_t li = (((size_t)s * sh.B + b) * H + h) * T + (ok ? i_ : 0);
        pre[s] = ok ? lse[li] * CA_LOG2E : INFINITY;
        pre[NS + s] = ok ? delta[li] : 0.f;
    }
    if (NS == 2) pre[2 * NS] = ok ? -ca_sigmoid(__bfloat162float(lam_logit[((size_t)b * T + i_) * H + h])) : 0.f;
}
// ... and into shared-memory buffer i & 1 ([NSC][BQ] floats each)
template <int NSC, int BQ>
__device__ __forceinline__ void ca_dkdv_store_scalars(float* Sc, const float* pre, int i) {
    if (threadIdx.x >= BQ) return;
#pragma unroll
    for (int e = 0; e < NSC; e++) Sc[((i & 1) * NSC + e) * BQ + threadIdx.x] = pre[e];
}
// this thread's rows (keys[0], keys[1]) of the fp32 dK (scaled by 1/sqrt(DH)) and dV partials of head
// h: partial rows [rowbase + key][H][DH] for keys < nkeys (sequence: rowbase b*T; bank: its block's slots)
template <int DH>
__device__ __forceinline__ void ca_dkdv_store_partials(const CodaAttnShape& sh, float* dk_part, float* dv_part,
                                                       const float (*dka)[4], const float (*dva)[4], const int* keys,
                                                       size_t rowbase, int nkeys, int h, float scale) {
    const int tq = threadIdx.x & 3;
#pragma unroll
    for (int r = 0; r < 2; r++)
        if (keys[r] < nkeys) {
            const size_t off = ((rowbase + keys[r]) * sh.H + h) * DH + 2 * tq;
#pragma unroll
            for (int j = 0; j < DH / 8; j++) {
                *(float2*)(dk_part + off + 8 * j) = make_float2(dka[j][2 * r] * scale, dka[j][2 * r + 1] * scale);
                *(float2*)(dv_part + off + 8 * j) = make_float2(dva[j][2 * r], dva[j][2 * r + 1]);
            }
        }
}

template <int DH> __host__ __device__ constexpr int ca_mma_dkdv_bq() { return DH == 128 ? 32 : 64; }
template <int DH, int NS, bool GLO = false>
constexpr int ca_mma_dkdv_smem() {
    return (2 * 64 + 2 * (NS + 1) * ca_mma_dkdv_bq<DH>()) * DH * 2 + 2 * (2 * NS + 1 + GLO) * ca_mma_dkdv_bq<DH>() * 4;
}

// The key rows of one dK/dV block and the queries that see them, for all three kinds of launch:
// unbounded (keys of the sequence, queries from the key tile on), bounded sequence keys (queries up to
// the last block whose window holds a key of the tile) and BANK (the bank slots of block j, seen by
// that block's rows only). Grid x = (key tile, query head, b [* n_blocks + j for BANK]).
template <bool BND, bool BANK>
struct CaKeyBlock {
    int kt, h, b, jb;          // key tile, query head, batch row, block (BANK)
    int nkeys;                 // key rows of the source (T, or bank_slots)
    size_t rowbase;            // partial rows of key 0 (b*T, or the block's first bank slot)
    int qbeg, qstop;           // queries [qbeg, qstop) may see these keys
    __device__ __forceinline__ CaKeyBlock(const CodaAttnShape& sh, int bkv) {
        const int nb = BANK ? ca_n_blocks(sh) : 1, nkt = BANK ? (sh.bank_slots + bkv - 1) / bkv : (sh.T + bkv - 1) / bkv;
        int bz;
        ca_block_coords(nkt, sh.H, sh.B * nb, 0, &kt, &h, &bz);
        b = bz / nb;
        jb = bz % nb;
        nkeys = BANK ? sh.bank_slots : sh.T;
        rowbase = BANK ? ca_bank_row(sh, b, jb) * sh.bank_slots : (size_t)b * sh.T;
        if (BANK) { qbeg = jb * sh.block; qstop = min(sh.T, qbeg + sh.block); }
        else { qbeg = kt * bkv; qstop = BND ? ca_query_end(sh, min(qbeg + bkv, sh.T) - 1) : sh.T; }
    }
    // The K/V rows of this block from key row0 on: the bank rows of (b, jb, kvh) for BANK, else the
    // sequence keys of (b, kvh).
    __device__ __forceinline__ CaKvTile source(const CodaAttnShape& sh, const CodaAttnBank& bank, const bf16* k_all,
                                               const bf16* v_all, int kvh, int row0) const {
        if (BANK) return CaKvTile{bank.k + ca_bank_off(sh, b, jb, kvh), bank.v + ca_bank_off(sh, b, jb, kvh), (size_t)sh.Dh, row0, nkeys, 0};
        const size_t kvstride = (size_t)sh.Hkv * sh.Dh, off = (size_t)b * sh.T * kvstride + (size_t)kvh * sh.Dh;
        return CaKvTile{k_all + off, v_all + off, kvstride, row0, nkeys, 0};
    }
};

// BANK dK/dV: which of this thread's two key rows are allowed slots (key_ok). When no thread of the
// block has one, the block's partials are zeroed (those slots get no gradient) and false comes back:
// the caller returns. A barrier (all threads call it).
template <int DH, bool BND, bool BANK>
__device__ __forceinline__ bool ca_dkdv_bank_keys_ok(bool (&key_ok)[2], const CodaAttnShape& sh, const CodaAttnBank& bank,
                                                     const CaKeyBlock<BND, BANK>& kb, const int (&keys)[2], float* dk_part,
                                                     float* dv_part, int h) {
    const unsigned char* al = bank.allowed + kb.rowbase;
    bool any = false;
#pragma unroll
    for (int r = 0; r < 2; r++) { key_ok[r] = keys[r] < kb.nkeys && al[keys[r]]; any |= key_ok[r]; }
    if (__syncthreads_or(any)) return true;
    const float zero[DH / 8][4] = {};
    ca_dkdv_store_partials<DH>(sh, dk_part, dv_part, zero, zero, keys, kb.rowbase, kb.nkeys, h, 0.f);
    return false;
}

template <int DH, int NS, bool BND, bool BANK>
__global__ void __launch_bounds__(128, 2)
ca_mma_dkdv_kernel(CodaAttnShape sh, CodaAttnBank bank, float* dk_part, float* dv_part, const bf16* dO, const float* lse,
                   const float* delta, const bf16* q, const bf16* qn, const bf16* k, const bf16* v, const bf16* lam_logit) {
    constexpr bool GLO = BND && !BANK;  // per-query first gradient key staged with the scalars
    constexpr int BKV = 64, BQ = ca_mma_dkdv_bq<DH>(), THREADS = 128, NSC = 2 * NS + 1 + GLO;
    static_assert(BQ <= THREADS, "one scalar row per thread");
    extern __shared__ __align__(128) unsigned char ca_smem[];
    bf16* Ks = (bf16*)ca_smem;          // [BKV][DH]
    bf16* Vs = Ks + BKV * DH;           // [BKV][DH]
    bf16* Qs = Vs + BKV * DH;           // [2 buffers][NS][BQ][DH]
    bf16* dOs = Qs + 2 * NS * BQ * DH;  // [2][BQ][DH]
    float* Sc = (float*)(dOs + 2 * BQ * DH);  // [2][NSC][BQ]: lse*log2(e) per stream, delta per stream, -lam (, glo)
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv;
    const CaKeyBlock<BND, BANK> kb_(sh, BKV);
    const int h = kb_.h, b = kb_.b, kvh = h / (H / Hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, tq = lane & 3;
    const int k0 = kb_.kt * BKV, wk = warp * 16, keys[2] = {k0 + wk + g, k0 + wk + g + 8};
    const size_t qstride = (size_t)H * DH;
    const size_t qoff = (size_t)b * T * qstride + (size_t)h * DH;
    const CaKvTile src = kb_.source(sh, bank, k, v, kvh, k0);
    bool key_ok[2] = {true, true};  // BANK: the slot is allowed (others get no gradient)
    if (BANK && !ca_dkdv_bank_keys_ok<DH>(key_ok, sh, bank, kb_, keys, dk_part, dv_part, h)) return;
    const int qt_first = kb_.qbeg / BQ, nsteps = (kb_.qstop + BQ - 1) / BQ - qt_first;

    // tiles of step i (query tile qt_first + i) -> buffer i & 1, asynchronously
    auto stage_tiles = [&](int i) {
        const int bf = i & 1, q0 = (qt_first + i) * BQ;
        ca_load_tile<DH, BQ, THREADS>(Qs + (bf * NS) * BQ * DH, q + qoff, qstride, q0, T);
        if (NS == 2) ca_load_tile<DH, BQ, THREADS>(Qs + (bf * NS + 1) * BQ * DH, qn + qoff, qstride, q0, T);
        ca_load_tile<DH, BQ, THREADS>(dOs + bf * BQ * DH, dO + qoff, qstride, q0, T);
    };
    // per-query scalars of step i for this thread's row (loaded into registers one step ahead, so
    // their latency hides behind a step of compute; stored to shared memory after it)
    float pre[NSC];
    auto load_scalars = [&](int i) {
        ca_dkdv_load_scalars<NS, BQ, GLO>(pre, sh, lse, delta, lam_logit, (qt_first + i) * BQ, kb_.qbeg, kb_.qstop, h, b);
    };
    auto store_scalars = [&](int i) { ca_dkdv_store_scalars<NSC, BQ>(Sc, pre, i); };
    ca_load_kv<DH, BKV, THREADS>(Ks, Vs, src, 0);
    stage_tiles(0);
    ca_cp_async_commit();
    load_scalars(0);
    store_scalars(0);
    if (nsteps > 1) load_scalars(1);

    const float scale = 1.0f / sqrtf((float)DH), sl2 = scale * CA_LOG2E;
    float dka[DH / 8][4], dva[DH / 8][4];
#pragma unroll
    for (int j = 0; j < DH / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[j][e] = dva[j][e] = 0.f;
    for (int i = 0; i < nsteps; i++) {
        const int bf = i & 1, q0 = (qt_first + i) * BQ;
        if (i + 1 < nsteps) stage_tiles(i + 1);
        ca_cp_async_commit();
        ca_cp_async_wait<1>();
        __syncthreads();
        const bf16* Ot = dOs + bf * BQ * DH;
        const float* sc_ = Sc + bf * NSC * BQ;
        float dpt[BQ / 8][4];  // dP^T = V dO^T: [16 keys][BQ queries], both streams
#pragma unroll
        for (int j = 0; j < BQ / 8; j++) dpt[j][0] = dpt[j][1] = dpt[j][2] = dpt[j][3] = 0.f;
        ca_mm_abt_sa<DH, BQ>(dpt, Vs, wk, Ot);
        const bool mask = q0 < k0 + BKV;  // queries before keys (rows past T have lse = +inf)
#pragma unroll
        for (int s = 0; s < NS; s++) {
            const bf16* Qt = Qs + (bf * NS + s) * BQ * DH;
            float st[BQ / 8][4];  // S^T = K Q^T
#pragma unroll
            for (int j = 0; j < BQ / 8; j++) st[j][0] = st[j][1] = st[j][2] = st[j][3] = 0.f;
            ca_mm_abt_sa<DH, BQ>(st, Ks, wk, Qt);
            float ds[BQ / 8][4];
            if (BANK)
                ca_dkdv_p_ds_masked<NS, BQ>(st, ds, dpt, sc_, s, tq, sl2, [&](int c, int r) { return !key_ok[r]; });
            else if (BND)
                ca_dkdv_p_ds_masked<NS, BQ>(st, ds, dpt, sc_, s, tq, sl2, [&](int c, int r) {
                    return (q0 + c < keys[r]) | (keys[r] < (int)sc_[(2 * NS + 1) * BQ + c]);
                });
            else
                ca_dkdv_p_ds<NS, BQ>(st, ds, dpt, sc_, s, q0, keys, mask, tq, sl2);
            uint32_t pa[BQ / 16][4], dsa[BQ / 16][4];
            ca_acc_to_a<BQ>(pa, st);
            ca_acc_to_a<BQ>(dsa, ds);
            ca_mm_ab<DH, BQ>(dva, pa, Ot);
            ca_mm_ab<DH, BQ>(dka, dsa, Qt);
        }
        if (i + 1 < nsteps) {
            store_scalars(i + 1);  // its buffer was last read in step i - 1, before this step's barrier
            if (i + 2 < nsteps) load_scalars(i + 2);
        }
        __syncthreads();
    }
    ca_dkdv_store_partials<DH>(sh, dk_part, dv_part, dka, dva, keys, kb_.rowbase, kb_.nkeys, h, scale);
}

// dk[t, g, :] = sum over the G query heads h of KV head g of dk_part[t, h, :] (fixed order); same for dv.
__global__ void ca_mma_dkdv_reduce_kernel(bf16* dk, bf16* dv, const float* dk_part, const float* dv_part, int H, int Hkv,
                                          int Dh, size_t n4) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;  // index of 4 consecutive outputs
    if (i >= n4) return;
    const int G = H / Hkv, per_t = Hkv * Dh / 4;
    const size_t t = i / per_t;
    const int rem = (int)(i % per_t) * 4, gk = rem / Dh, d = rem % Dh;
    float4 sk = make_float4(0.f, 0.f, 0.f, 0.f), sv = sk;
    for (int hh = 0; hh < G; hh++) {
        const size_t off = (t * H + (size_t)gk * G + hh) * Dh + d;
        float4 a = *(const float4*)(dk_part + off), c = *(const float4*)(dv_part + off);
        sk.x += a.x; sk.y += a.y; sk.z += a.z; sk.w += a.w;
        sv.x += c.x; sv.y += c.y; sv.z += c.z; sv.w += c.w;
    }
    __nv_bfloat162 k01 = __floats2bfloat162_rn(sk.x, sk.y), k23 = __floats2bfloat162_rn(sk.z, sk.w);
    __nv_bfloat162 v01 = __floats2bfloat162_rn(sv.x, sv.y), v23 = __floats2bfloat162_rn(sv.z, sv.w);
    uint2 uk, uv;
    uk.x = *(uint32_t*)&k01; uk.y = *(uint32_t*)&k23;
    uv.x = *(uint32_t*)&v01; uv.y = *(uint32_t*)&v23;
    *(uint2*)(dk + 4 * i) = uk;
    *(uint2*)(dv + 4 * i) = uv;
}

// dbank[bj][g][m][:] = sum over the G query heads of KV head g of the bank partials [bj][m][h][:]
// (bj = b * n_blocks + j; fixed order, fp32).
__global__ void ca_dbank_reduce_kernel(float* dbank_k, float* dbank_v, const float* pk, const float* pv, int H, int Hkv, int Mb,
                                       int Dh, size_t n4) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;  // index of 4 consecutive outputs
    if (i >= n4) return;
    const int G = H / Hkv, d = (int)(i % (Dh / 4)) * 4;
    const size_t r = i / (Dh / 4);  // (bj, g, m)
    const int m = (int)(r % Mb), gk = (int)((r / Mb) % Hkv);
    const size_t bj = r / ((size_t)Mb * Hkv);
    float4 sk = make_float4(0.f, 0.f, 0.f, 0.f), sv = sk;
    for (int hh = 0; hh < G; hh++) {
        const size_t off = ((bj * Mb + m) * H + (size_t)gk * G + hh) * Dh + d;
        float4 a = *(const float4*)(pk + off), c = *(const float4*)(pv + off);
        sk.x += a.x; sk.y += a.y; sk.z += a.z; sk.w += a.w;
        sv.x += c.x; sv.y += c.y; sv.z += c.z; sv.w += c.w;
    }
    *(float4*)(dbank_k + 4 * i) = sk;
    *(float4*)(dbank_v + 4 * i) = sv;
}
