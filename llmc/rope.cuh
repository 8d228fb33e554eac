// rope.cuh — rotary position embedding, in place on x[N, n_heads*Dh]; row n has position
// pos0 + n % T (rows are T-token sequences laid end to end). Matches llmc/cpu/ops.h rope_tables +
// rope_apply:
//   inv_freq[i] = 1.0f / powf((float)base, (float)(2i)/(float)Dh)     (fp32, computed on the host
//                  with the same libm call as the CPU reference, passed to the kernel by value)
//   ang = (float)pos * inv_freq[i], cos/sin with the precise cosf/sinf (never __sinf/__cosf: angles
//   reach 8192 rad and more; the fast intrinsics lose all accuracy there). Do not build with
//   --use_fast_math.
//   bf16_positions = 1 emulates the reference's defect (docs/protocol.md §8.2): position, inv_freq (from a
//   double pow), the angle and the cos/sin tables rounded to bf16.
//   x[a] = xa*c - xb*s, x[b] = xb*c + xa*s with s = sign*sin; sign = -1 is the backward (the inverse
//   rotation, applied to the gradient).
// Pairs: ROPE_HALF_SPLIT (i, i+Dh/2) as HF Llama/Mistral, ROPE_INTERLEAVED (2i, 2i+1).
//
// Vector kernel (rope_kernel_vec). RoPE is pure bandwidth: one read and one write of x. The first
// version (one thread per (row, pair), looping over heads) made 2-byte accesses and reached only
// 665-1365 GB/s on an H100 against a ~3000 GB/s copy ceiling. Here every access is 16 bytes:
//   - the unit of work (an "item") is one 16-byte chunk: for the half-split layout a thread takes
//     chunk j of a head's first half and chunk j of its second half (the pairs (i, i+Dh/2) line up
//     lane for lane, so no shuffles); for the interleaved layout a chunk holds whole (2i, 2i+1) pairs.
//   - a block owns a few whole rows (enough to give each thread up to ROPE_VEC_ITEMS items) and
//     first computes those rows' cos/sin into a shared-memory table, once per (row, pair) as before,
//     so the sincos cost is that of the old kernel, while the threads spread over all heads of the
//     rows (the old kernel's N*Dh/2 threads each walked every head with 2-byte accesses).
//   - the thread issues the loads of its items before it computes the table, so the memory latency
//     overlaps the sincos work, and has several independent 16-byte loads in flight.
// The per-element arithmetic is exactly the old kernel's (the shared rope_cos_sin below, the same
// __fmul_rn products, fp32 add, one round to floatX): results are bitwise identical to it;
// dev/cuda/rope.cu checks that against a verbatim copy of the old kernel.
// Fallback: the old scalar kernel (rope_kernel) still runs wherever 16-byte chunks do not tile the
// head — half-split needs (Dh/2) % (16/sizeof(floatX)) == 0, interleaved Dh % (16/sizeof(floatX))
// == 0 — or x is not 16-byte aligned, so every Dh accepted before still works.
// Element-wise, hence deterministic. In the BF16 build the rotation is computed in fp32 and rounded.
// Further gains need fusion, not a better kernel: q and k in one launch (one sincos for both), or
// RoPE in the QKV matmul epilogue / the attention kernel's Q/K loads.
#pragma once
#include <math.h>
#include "cuda_common.cuh"
#include "config.h"
#include "vec128.cuh"

#define ROPE_MAX_HALF 256  // Dh <= 512
#define ROPE_VEC_BLOCK 256
#define ROPE_VEC_ITEMS 2  // 16-byte items per thread per pass: 2-4 loads of 16 bytes in flight

typedef struct {
    float inv_freq[ROPE_MAX_HALF];
} RopeFreqs;

__device__ __forceinline__ float rope_round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// cos and sign*sin of pair frequency f at position pos; the one definition both kernels use, so
// their tables are the same bits.
__device__ __forceinline__ void rope_cos_sin(long long pos, float f, int bf16_positions, float sign, float& c,
                                             float& s) {
    if (bf16_positions) {
        float p = rope_round_bf16((float)pos);
        float ang = rope_round_bf16(p * f);
        c = rope_round_bf16(cosf(ang));
        s = rope_round_bf16(sinf(ang));
    } else {
        float ang = __fmul_rn((float)pos, f);
        c = cosf(ang);
        s = sinf(ang);
    }
    s = sign * s;
}

// One pair. __fmul_rn keeps the compiler from contracting into FMAs: same rounding as the CPU
// reference.
__device__ __forceinline__ void rope_rotate(floatX& a, floatX& b, float c, float s) {
    float xa = to_float(a), xb = to_float(b);
    a = from_float<floatX>(__fmul_rn(xa, c) - __fmul_rn(xb, s));
    b = from_float<floatX>(__fmul_rn(xb, c) + __fmul_rn(xa, s));
}

// Scalar fallback: one thread per (row, pair i); it computes cos/sin once and rotates that pair in
// every head.
__global__ void rope_kernel(floatX* x, int N, int T, long long pos0, int n_heads, int Dh, int interleaved,
                            int bf16_positions, float sign, const RopeFreqs freqs) {
    int half = Dh >> 1;
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)N * half) return;
    int n = (int)(idx / half), i = (int)(idx % half);
    float c, s;
    rope_cos_sin(pos0 + (long long)(n % T), freqs.inv_freq[i], bf16_positions, sign, c, s);
    int a = interleaved ? 2 * i : i;
    int b = interleaved ? 2 * i + 1 : i + half;
    floatX* row = x + (size_t)n * n_heads * Dh;
    for (int h = 0; h < n_heads; h++) {
        floatX* xh = row + (size_t)h * Dh;
        rope_rotate(xh[a], xh[b], c, s);
    }
}

// P consecutive floats of the shared table; p is aligned to min(P, 4) floats by construction.
template <int P>
__device__ __forceinline__ void rope_lds(float (&d)[P], const float* p) {
    if constexpr (P % 4 == 0) {
#pragma unroll
        for (int q = 0; q < P / 4; q++) {
            float4 t = reinterpret_cast<const float4*>(p)[q];
            d[4 * q] = t.x; d[4 * q + 1] = t.y; d[4 * q + 2] = t.z; d[4 * q + 3] = t.w;
        }
    } else if constexpr (P % 2 == 0) {
#pragma unroll
        for (int q = 0; q < P / 2; q++) {
            float2 t = reinterpret_cast<const float2*>(p)[q];
            d[2 * q] = t.x; d[2 * q + 1] = t.y;
        }
    } else {
#pragma unroll
        for (int q = 0; q < P; q++) d[q] = p[q];
    }
}

// Block b owns rows [b*rows_per_block, ...). Items are numbered head by head over those rows
// (consecutive threads -> consecutive 16-byte chunks, so a warp's accesses are contiguous).
// Dynamic shared memory: 2 * rows_per_block * Dh/2 floats (cos table, then sign*sin table).
template <int INTERLEAVED>
__global__ void __launch_bounds__(ROPE_VEC_BLOCK)
    rope_kernel_vec(floatX* x, int N, int T, long long pos0, int n_heads, int Dh, int rows_per_block,
                    int bf16_positions, float sign, const RopeFreqs freqs) {
    constexpr int V = 16 / (int)sizeof(floatX);  // elements per 16-byte chunk
    constexpr int P = INTERLEAVED ? V / 2 : V;   // pairs per item
    constexpr int U = ROPE_VEC_ITEMS;
    extern __shared__ float4 rope_smem[];  // float4: 16-byte alignment for the table reads
    int half = Dh >> 1;
    float* tc = reinterpret_cast<float*>(rope_smem);
    float* ts = tc + rows_per_block * half;
    int cph = Dh / V / (INTERLEAVED ? 1 : 2);  // items per head
    int r0 = blockIdx.x * rows_per_block;
    int R = min(rows_per_block, N - r0);
    int nitems = R * n_heads * cph;
    floatX* xb = x + (size_t)r0 * n_heads * Dh;
    for (int start = 0; start < nitems; start += U * blockDim.x) {  // one pass unless rows are huge
        Packed128<floatX> va[U], vb[U];
        int off[U], tix[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int it = start + u * blockDim.x + threadIdx.x;
            if (it < nitems) {
                int g = it / cph, j = it - g * cph;  // g: head of the block's rows, j: chunk in head
                off[u] = g * Dh + j * V;
                tix[u] = (g / n_heads) * half + j * P;
                va[u] = load128(xb + off[u]);
                if (!INTERLEAVED) vb[u] = load128(xb + off[u] + half);
            }
        }
        if (start == 0) {  // block-uniform: the table, while the loads above are in flight
            for (int e = threadIdx.x; e < R * half; e += blockDim.x) {
                int r = e / half, i = e - r * half;
                float c, s;
                rope_cos_sin(pos0 + (long long)((r0 + r) % T), freqs.inv_freq[i], bf16_positions, sign, c, s);
                tc[e] = c;
                ts[e] = s;
            }
            __syncthreads();
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int it = start + u * blockDim.x + threadIdx.x;
            if (it < nitems) {
                float c[P], s[P];
                rope_lds<P>(c, tc + tix[u]);
                rope_lds<P>(s, ts + tix[u]);
#pragma unroll
                for (int p = 0; p < P; p++) {
                    if (INTERLEAVED) rope_rotate(va[u][2 * p], va[u][2 * p + 1], c[p], s[p]);
                    else rope_rotate(va[u][p], vb[u][p], c[p], s[p]);
                }
                store128(xb + off[u], va[u]);
                if (!INTERLEAVED) store128(xb + off[u] + half, vb[u]);
            }
        }
    }
}

// Whether rope_apply takes the 16-byte path for this x / Dh / layout (else the scalar kernel).
static int rope_vec_ok(const floatX* x, int Dh, RopeLayout layout) {
    const int V = 16 / (int)sizeof(floatX);
    if (Dh <= 0 || Dh % 2 || !is_aligned16(x)) return 0;
    return layout == ROPE_INTERLEAVED ? Dh % V == 0 : (Dh / 2) % V == 0;
}

// The pair frequencies, on the host, with the CPU reference's libm calls (see the top of the file).
static RopeFreqs rope_freqs(int Dh, double base, int bf16_positions) {
    RopeFreqs fr;
    const int half = Dh / 2;
    for (int i = 0; i < half; i++) {
        if (bf16_positions) fr.inv_freq[i] = round_bf16((float)(1.0 / pow(base, (double)(2 * i) / Dh)));
        else fr.inv_freq[i] = 1.0f / powf((float)base, (float)(2 * i) / (float)Dh);
    }
    for (int i = half; i < ROPE_MAX_HALF; i++) fr.inv_freq[i] = 0.0f;
    return fr;
}

static void rope_apply(const GpuContext* ctx, floatX* x, int N, int T, long long pos0, int n_heads, int Dh,
                       RopeLayout layout, double base, int bf16_positions, int sign) {
    if (N <= 0 || n_heads <= 0) return;
    if (Dh <= 0 || Dh % 2 || Dh / 2 > ROPE_MAX_HALF || T <= 0) {
        fprintf(stderr, "rope_apply: unsupported Dh=%d / T=%d (Dh even, <= %d)\n", Dh, T, 2 * ROPE_MAX_HALF);
        exit(1);
    }
    RopeFreqs fr = rope_freqs(Dh, base, bf16_positions);
    int half = Dh / 2;
    int interleaved = layout == ROPE_INTERLEAVED;
    float fsign = sign < 0 ? -1.0f : 1.0f;
    if (rope_vec_ok(x, Dh, layout)) {
        const int V = 16 / (int)sizeof(floatX);
        int items_per_row = n_heads * (interleaved ? Dh / V : half / V);
        int rows = items_per_row >= ROPE_VEC_ITEMS * ROPE_VEC_BLOCK ? 1 : ROPE_VEC_ITEMS * ROPE_VEC_BLOCK / items_per_row;
        // Short launches (k at small N): fewer rows per block so at least ~2 blocks per SM.
        int min_blocks = 2 * (ctx->sm_count > 0 ? ctx->sm_count : 132);
        while (rows > 1 && (N + rows - 1) / rows < min_blocks) rows >>= 1;
        if (rows > N) rows = N;
        long long per_block = (long long)rows * items_per_row;
        // One item per thread while the block's items fit ROPE_VEC_BLOCK threads (more threads share
        // the table's sincos), up to ROPE_VEC_ITEMS per thread beyond that.
        int block = per_block >= ROPE_VEC_BLOCK ? ROPE_VEC_BLOCK : (int)((per_block + 31) / 32 * 32);
        size_t smem = 2 * (size_t)rows * half * sizeof(float);  // <= 32 KB: rows * half <= 512 * V / n_heads
        unsigned grid = (unsigned)((N + rows - 1) / rows);
        if (interleaved)
            rope_kernel_vec<1><<<grid, block, smem, ctx->stream>>>(x, N, T, pos0, n_heads, Dh, rows, bf16_positions, fsign, fr);
        else
            rope_kernel_vec<0><<<grid, block, smem, ctx->stream>>>(x, N, T, pos0, n_heads, Dh, rows, bf16_positions, fsign, fr);
        cudaCheckLaunch("rope_kernel_vec");
        return;
    }
    long long total = (long long)N * half;
    int block = 256;
    unsigned grid = (unsigned)((total + block - 1) / block);
    rope_kernel<<<grid, block, 0, ctx->stream>>>(x, N, T, pos0, n_heads, Dh, interleaved, bf16_positions, fsign, fr);
    cudaCheckLaunch("rope_kernel");
}
