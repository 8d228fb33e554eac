// gemv.cuh — matrix times one vector, for the decode step (B = 1), where every weight is read once
// per token and the matmul is pure bandwidth:
//   out[o] = res[o] + bias[o] + sum_i W[o][i] x[i]          (res, bias optional)
//   out[o] = silu(W[o]·x) * (W2[o]·x)                       (gemv_swiglu: the MLP's gate and up)
//   out_j = W_j · x (+ bias_j) for up to 4 matrices         (gemv_batch: q, k, v, lambda in one launch)
// W is [O][I] row-major (the layout matmul_forward's weight has: out = inp · Wᵀ), floatX; sums in
// fp32, one rounding of the result to floatX. Why not cuBLASLt at N = 1: on an H200 its kernels for
// one row read a 7B layer's weights at about half the copy bandwidth (dev/PERF.md); here each warp
// owns ROWS output rows and streams them with 16-byte loads, U loads per row in flight per lane, so
// that enough bytes are in flight per SM to cover the memory latency; ROWS is chosen per shape so
// that the grid has at least two CTAs per SM. The residual add and the SwiGLU are fused into the
// epilogue (each a launch and a round trip of a vector less).
// Vector path: I a multiple of 16 / sizeof(floatX) and 16-byte aligned rows and x; otherwise a
// scalar path (any I). Deterministic: every output is one warp's fixed-order sum.
#pragma once
#include "cuda_common.cuh"

#define GEMV_WARPS 8
#define GEMV_U 4  // 16-byte loads in flight per row and lane

// N consecutive elements, raw (16 bytes at once when N * sizeof(floatX) == 16): converted at use,
// so that a load in flight costs its 16 bytes of registers, not 32 of fp32.
template <int N>
__device__ __forceinline__ void gemv_load(const floatX* p, floatX (&v)[N]) {
    if constexpr (N * sizeof(floatX) == 16) {
        *(uint4*)v = *(const uint4*)p;
    } else {
#pragma unroll
        for (int k = 0; k < N; k++) v[k] = p[k];
    }
}

__device__ __forceinline__ float gemv_silu(float g) { return g / (1.0f + expf(-g)); }

// Rows [o0, o0 + ROWS) of one matrix, by one warp. VEC: 16-byte loads (else one element per lane and
// step). SWIGLU: W2 is the up matrix.
template <int ROWS, bool VEC, bool SWIGLU>
__device__ __forceinline__ void gemv_rows(floatX* out, const floatX* x, const floatX* W, const floatX* W2, const floatX* bias,
                                          const floatX* res, int I, int O, int o0) {
    constexpr int V = VEC ? 16 / (int)sizeof(floatX) : 1;
    constexpr int NM = SWIGLU ? 2 : 1;
    constexpr int U = SWIGLU ? GEMV_U / 2 : GEMV_U;  // two matrices: half the depth, the same bytes in flight
    const int lane = threadIdx.x % 32;
    if (o0 >= O) return;
    float acc[NM][ROWS];
#pragma unroll
    for (int m = 0; m < NM; m++)
#pragma unroll
        for (int r = 0; r < ROWS; r++) acc[m][r] = 0.f;
    const floatX* rows[NM][ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const int o = o0 + r < O ? o0 + r : O - 1;  // a clamped row is computed and not stored
        rows[0][r] = W + (size_t)o * I;
        if constexpr (SWIGLU) rows[NM - 1][r] = W2 + (size_t)o * I;
    }
    constexpr int STEP = 32 * V * U;
    int i0 = 0;
    for (; i0 + STEP <= I; i0 += STEP) {  // full steps: all loads first, then the products
        floatX xv[U][V], wv[NM][ROWS][U][V];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = i0 + (u * 32 + lane) * V;
            gemv_load<V>(x + i, xv[u]);
#pragma unroll
            for (int m = 0; m < NM; m++)
#pragma unroll
                for (int r = 0; r < ROWS; r++) gemv_load<V>(rows[m][r] + i, wv[m][r][u]);
        }
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int k = 0; k < V; k++) {
                const float xk = to_float(xv[u][k]);
#pragma unroll
                for (int m = 0; m < NM; m++)
#pragma unroll
                    for (int r = 0; r < ROWS; r++) acc[m][r] += to_float(wv[m][r][u][k]) * xk;
            }
    }
    for (int i = i0 + lane * V; i < I; i += 32 * V) {  // the tail
        floatX xv[V];
        gemv_load<V>(x + i, xv);
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                floatX wv[V];
                gemv_load<V>(rows[m][r] + i, wv);
#pragma unroll
                for (int k = 0; k < V; k++) acc[m][r] += to_float(wv[k]) * to_float(xv[k]);
            }
    }
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const float a = warp_sum(acc[0][r]);
        const float b = SWIGLU ? warp_sum(acc[NM - 1][r]) : 0.f;
        const int o = o0 + r;
        if (lane == 0 && o < O) {
            float y;
            if constexpr (SWIGLU) {
                y = gemv_silu(a) * b;
            } else {
                y = a;
                if (bias) y += to_float(bias[o]);
                if (res) y += to_float(res[o]);
            }
            out[o] = from_float<floatX>(y);
        }
    }
}

template <int ROWS, bool VEC, bool SWIGLU>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(floatX* out, const floatX* x, const floatX* W, const floatX* W2,
                                                             const floatX* bias, const floatX* res, int I, int O) {
    gemv_rows<ROWS, VEC, SWIGLU>(out, x, W, W2, bias, res, I, O, (blockIdx.x * GEMV_WARPS + threadIdx.x / 32) * ROWS);
}

// Several matrices times the same vector in one launch (the decode step's q, k, v and lambda
// projections: four small launches were latency-bound, at 1-2 TB/s). CTA b works on the matrix j
// whose block range [block0[j], block0[j+1]) holds b.
#define GEMV_MAX_BATCH 4
typedef struct {
    int n;
    floatX* out[GEMV_MAX_BATCH];
    const floatX* W[GEMV_MAX_BATCH];
    const floatX* bias[GEMV_MAX_BATCH];
    int O[GEMV_MAX_BATCH];
    int block0[GEMV_MAX_BATCH + 1];
} GemvBatch;

template <int ROWS, bool VEC>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_batch_kernel(const GemvBatch bt, const floatX* x, int I) {
    int j = 0;
    while (j + 1 < bt.n && (int)blockIdx.x >= bt.block0[j + 1]) j++;
    const int o0 = ((blockIdx.x - bt.block0[j]) * GEMV_WARPS + threadIdx.x / 32) * ROWS;
    gemv_rows<ROWS, VEC, false>(bt.out[j], x, bt.W[j], NULL, bt.bias[j], NULL, I, bt.O[j], o0);
}

static inline int gemv_rows_for(const GpuContext* ctx, int O) {  // at least ~2 CTAs per SM
    const int min_ctas = 2 * (ctx->sm_count > 0 ? ctx->sm_count : 132);
    return O >= min_ctas * GEMV_WARPS * 4 ? 4 : O >= min_ctas * GEMV_WARPS * 2 ? 2 : 1;
}

template <bool SWIGLU>
static void gemv_launch(const GpuContext* ctx, floatX* out, const floatX* x, const floatX* W, const floatX* W2, const floatX* bias,
                        const floatX* res, int I, int O, const char* name) {
    if (O <= 0) return;
    const int V = 16 / (int)sizeof(floatX);
    const int vec = I % V == 0 && is_aligned16(x) && is_aligned16(W) && (!SWIGLU || is_aligned16(W2));
    const int rows = gemv_rows_for(ctx, O);
    const unsigned grid = (unsigned)ceil_div(O, GEMV_WARPS * rows);
#define GEMV_GO(R, VC) gemv_kernel<R, VC, SWIGLU><<<grid, GEMV_WARPS * 32, 0, ctx->stream>>>(out, x, W, W2, bias, res, I, O)
    if (vec) {
        if (rows == 4) GEMV_GO(4, true); else if (rows == 2) GEMV_GO(2, true); else GEMV_GO(1, true);
    } else {
        if (rows == 4) GEMV_GO(4, false); else if (rows == 2) GEMV_GO(2, false); else GEMV_GO(1, false);
    }
#undef GEMV_GO
    cudaCheckLaunch(name);
}

// out[O] = (res ? res : 0) + (bias ? bias : 0) + W[O][I] · x[I]. out may be res (element-wise in place).
static void gemv_forward(const GpuContext* ctx, floatX* out, const floatX* x, const floatX* W, const floatX* bias, const floatX* res, int I,
                         int O) {
    gemv_launch<false>(ctx, out, x, W, NULL, bias, res, I, O, "gemv_kernel");
}
// out[O] = silu(Wg · x) * (Wu · x): the MLP's gate, up and SwiGLU in one pass over both matrices.
static void gemv_swiglu(const GpuContext* ctx, floatX* out, const floatX* x, const floatX* Wg, const floatX* Wu, int I, int O) {
    gemv_launch<true>(ctx, out, x, Wg, Wu, NULL, NULL, I, O, "gemv_kernel(swiglu)");
}

// out[j] = W[j] · x (+ bias[j]) for the n <= 4 matrices of bt (out, W, bias, O set; block0 is filled here).
static void gemv_batch(const GpuContext* ctx, GemvBatch* bt, const floatX* x, int I) {
    const int V = 16 / (int)sizeof(floatX);
    int total = 0, vec = I % V == 0 && is_aligned16(x);
    for (int j = 0; j < bt->n; j++) { total += bt->O[j]; vec &= is_aligned16(bt->W[j]); }
    const int rows = gemv_rows_for(ctx, total);
    bt->block0[0] = 0;
    for (int j = 0; j < bt->n; j++) bt->block0[j + 1] = bt->block0[j] + ceil_div(bt->O[j], GEMV_WARPS * rows);
    const unsigned grid = (unsigned)bt->block0[bt->n];
    if (grid == 0) return;
#define GEMV_GO(R, VC) gemv_batch_kernel<R, VC><<<grid, GEMV_WARPS * 32, 0, ctx->stream>>>(*bt, x, I)
    if (vec) {
        if (rows == 4) GEMV_GO(4, true); else if (rows == 2) GEMV_GO(2, true); else GEMV_GO(1, true);
    } else {
        if (rows == 4) GEMV_GO(4, false); else if (rows == 2) GEMV_GO(2, false); else GEMV_GO(1, false);
    }
#undef GEMV_GO
    cudaCheckLaunch("gemv_batch_kernel");
}
