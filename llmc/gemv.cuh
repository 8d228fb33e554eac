// gemv.cuh — matrix times one vector, for the decode step (B = 1), where every weight is read once
// per token and the matmul is pure bandwidth:
//   out[o] = res[o] + bias[o] + sum_i W[o][i] x[i]          (res, bias optional)
//   out[o] = silu(W[o]·x) * (W2[o]·x)                       (gemv_swiglu: the MLP's gate and up)
//   out_j = W_j · x (+ bias_j) for up to 4 matrices         (gemv_batch: q, k, v, lambda in one launch)
//   up to 4 of these in order in one persistent launch      (gemv_chain: the weights streamed through
//                                                            shared memory by bulk copies; sm_90a)
// W is [O][I] row-major (the layout matmul_forward's weight has: out = inp · Wᵀ), floatX; sums in
// fp32, one rounding of the result to floatX. Why not cuBLASLt at N = 1: on an H200 its kernels for
// one row read a 7B layer's weights at about half the copy bandwidth (dev/PERF.md); here each warp
// owns ROWS output rows and streams them with 16-byte loads, U loads per row in flight per lane, so
// that enough bytes are in flight per SM to cover the memory latency; ROWS is chosen per shape so
// that the grid has at least two CTAs per SM. The residual add and the SwiGLU are fused into the
// epilogue (each a launch and a round trip of a vector less).
// Vector path: I a multiple of 16 / sizeof(floatX) and 16-byte aligned rows and x; otherwise a
// scalar path (any I). Deterministic: every output is one warp's fixed-order sum.
//
// Options (GemvOpts, all off = the v3 kernels' behaviour; every option leaves each output's sum and
// rounding as they were, so the results are the same bits with or without them):
//   pdl       launched with Programmatic Dependent Launch (cudaLaunchAttributeProgrammaticStreamSerialization,
//             kept as a programmatic edge when captured in a graph): the kernel lets its successor be
//             placed at once (griddepcontrol.launch_dependents) and issues its first weight loads (and
//             the L2 prefetches) before griddepcontrol.wait: the weights are never written by a
//             predecessor, so the ramp of a gemv's loads overlaps the tail of the kernel before it.
//             The device instructions are there in every launch; without the attribute they are no-ops.
//   preload   a step's weights are loaded during the step before (step 0's before the PDL wait);
//             off: the v3 loop, x and the weights of a step loaded together, but step 0's weights
//             before the PDL wait and the fused norm (decode v6: they waited behind the norm's loads)
//   l2_ahead  each warp prefetches its rows into L2 (prefetch.global.L2) that many load steps ahead of
//             its demand loads: bytes in flight that cost no registers (the 4096-row matmuls were
//             latency-bound at ~2 TB/s with U = 4 loads a lane in flight)
//   Measured on an H200 (dev/PERF.md, decode v4): pdl and norm_w pay in the decode step; preload and
//   l2_ahead are slower (the decoder leaves them off; they stay for the benchmark's A/B rows).
//   norm_w    the RMSNorm of x fused in (x is then the raw residual row): each CTA forms the normed row in
//             shared memory exactly as rmsnorm_forward does (one warp's sum of squares in its lane order,
//             the double-precision rsqrt, x * rstd * w rounded to floatX), so the products see the same
//             bits as after a separate rmsnorm_forward; CTA 0 also stores it to norm_out (for the write
//             gate). A launch and a vector round trip less. Vector path only (else a separate norm).
#pragma once
#include <utility>
#include "cuda_common.cuh"
#include "hopper.cuh"
#include "rmsnorm.cuh"
#include "vec128.cuh"

#define GEMV_WARPS 8
#define GEMV_U 4  // 16-byte loads in flight per row and lane

// Programmatic Dependent Launch, device side (sm_90+; elsewhere no-ops, and the host never sets the
// attribute there). wait: every write of the kernel before this one is visible (a no-op when launched
// without the attribute); launch_dependents: this CTA no longer holds back the launch of the next kernel.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// A kernel launch, with the PDL attribute when pdl (the kernel must then pdl_wait() before it reads
// anything an earlier kernel wrote, in every CTA, and before any CTA returns: a kernel that cannot end
// before its predecessor keeps the chain of waits transitive).
template <typename... KArgs, typename... Args>
static void pdl_launch(int pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const char* name,
                       Args&&... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid; cfg.blockDim = block; cfg.dynamicSmemBytes = smem; cfg.stream = stream;
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    cuda_check_impl(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), name, __FILE__, __LINE__);
}

typedef struct {
    int pdl;               // launch with Programmatic Dependent Launch
    int preload;           // a step's weights are loaded at the end of the step before (step 0's before the PDL
                           // wait); 0: with the step's x, as the v3 kernels did
    int l2_ahead;          // L2 prefetch distance in load steps (0: none)
    const floatX* norm_w;  // [I] fused RMSNorm weight, or NULL: x is used as it is
    float norm_eps;
    floatX* norm_out;      // [I] the normed row (stored by CTA 0), or NULL
    int rows;              // output rows per warp: 1, 2 or 4; 0: by shape (gemv_rows_for)
} GemvOpts;

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

// The fused norm's part of a CTA: xs = rmsnorm(x) * w as rmsnorm_forward_kernel<V> forms it (warp 0
// sums the squares lane by lane in that kernel's order), every thread then forms its share of the row.
// All threads first copy x into xs and load their first GEMV_NORM_HELD chunks of w, so the norm costs
// one round trip to memory; warp 0's sum then reads shared memory (decode v6: it was three).
#define GEMV_NORM_HELD 4  // chunks of w a thread holds in registers (the rest are loaded in the scale pass)
// tid, nt: this thread among the nt threads that run it (warp 0's lanes are tids 0-31); sync(): their
// barrier; gout: where the normed row is stored too, or NULL.
template <int V, class Sync>
__device__ __forceinline__ void gemv_norm_to_smem(floatX* xs, const floatX* x, const GemvOpts& op, int I, int tid, int nt, floatX* gout,
                                                  Sync&& sync) {
    __shared__ float r_s;
    Packed128<floatX> wr[GEMV_NORM_HELD];  // raw: 16 bytes of registers a chunk, converted when used
#pragma unroll
    for (int k = 0; k < GEMV_NORM_HELD; k++) {
        const int c = (tid + k * nt) * V;
        if (c < I) {
            store128(xs + c, load128(x + c));
            wr[k] = load128(op.norm_w + c);
        }
    }
    for (int c = (tid + GEMV_NORM_HELD * nt) * V; c < I; c += nt * V) store128(xs + c, load128(x + c));
    sync();
    if (tid < 32) {
        float ss = 0.0f;
#pragma unroll 8
        for (int c = tid * V; c < I; c += 32 * V) {
            float f[V];
            load_f<V>(f, xs + c);
#pragma unroll
            for (int k = 0; k < V; k++) ss += f[k] * f[k];
        }
        ss = warp_sum(ss);
        const float t = ss / (float)I + op.norm_eps;
        if (tid == 0) r_s = (float)(1.0 / sqrt((double)t));
    }
    sync();
    const float r = r_s;
    auto scale = [&](int c, const Packed128<floatX>& w) {
        float f[V];
        load_f<V>(f, xs + c);
#pragma unroll
        for (int k = 0; k < V; k++) f[k] = f[k] * r * to_float(w[k]);
        store_f<V>(xs + c, f);
        if (gout) store_f<V>(gout + c, f);
    };
#pragma unroll
    for (int k = 0; k < GEMV_NORM_HELD; k++)
        if ((tid + k * nt) * V < I) scale((tid + k * nt) * V, wr[k]);
    for (int c = (tid + GEMV_NORM_HELD * nt) * V; c < I; c += nt * V) {
        scale(c, load128(op.norm_w + c));
    }
    sync();
}

__device__ __forceinline__ float gemv_silu(float g) { return g / (1.0f + expf(-g)); }

// Rows [o0, o0 + ROWS) of one matrix, by one warp. VEC: 16-byte loads (else one element per lane and
// step). SWIGLU: W2 is the up matrix. Every warp of the CTA must call this (the fused norm has CTA-wide
// barriers), also one whose rows are past O. The sums: per lane over its elements in index order, then
// warp_sum: the same with every option.
template <int ROWS, bool VEC, bool SWIGLU, bool NORM>
__device__ __forceinline__ void gemv_rows(floatX* out, const floatX* x, const floatX* W, const floatX* W2, const floatX* bias,
                                          const floatX* res, int I, int O, int o0, const GemvOpts& op) {
    constexpr int V = VEC ? 16 / (int)sizeof(floatX) : 1;
    constexpr int NM = SWIGLU ? 2 : 1;
    constexpr int U = SWIGLU ? GEMV_U / 2 : GEMV_U;  // two matrices: half the depth, the same bytes in flight
    static_assert(!NORM || VEC, "the fused norm takes the vector path");
    extern __shared__ __align__(16) unsigned char gemv_smem[];
    const int lane = threadIdx.x % 32;
    const bool active = o0 < O;
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
    constexpr int LINES = STEP * (int)sizeof(floatX) / 128;  // 128-byte lines of one row's step (VEC: >= 4)
    // L2 prefetch of step s of every row: the warp's rows are consecutive, NM * ROWS * LINES lines a step,
    // lane l takes lines l, l + 32, ... (a clamped row prefetches the last row again)
    auto prefetch_step = [&](int s) {
        if constexpr (VEC) {
            constexpr int PER = ROWS * LINES;
            const size_t b0 = (size_t)s * STEP * sizeof(floatX);
#pragma unroll
            for (int m = 0; m < NM; m++) {
                const char* base = (const char*)(m == 0 ? W : W2);
#pragma unroll
                for (int e = lane; e < PER; e += 32) {
                    const int o = min(o0 + e / LINES, O - 1);
                    prefetch_l2(base + (size_t)o * I * sizeof(floatX) + b0 + (e % LINES) * 128);
                }
            }
        }
    };
    const int n_steps = I / STEP, ahead = op.l2_ahead;
    floatX wv[NM][ROWS][U][V];  // the current step's weights
    auto load_w = [&](int i0) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int m = 0; m < NM; m++)
#pragma unroll
                for (int r = 0; r < ROWS; r++) gemv_load<V>(rows[m][r] + i0 + (u * 32 + lane) * V, wv[m][r][u]);
    };
    pdl_trigger();  // the next kernel's CTAs may take the SMs our CTAs leave (it waits for our end itself)
    // before the wait: only weights (no kernel writes them). Step 0 by demand loads, steps 1..ahead by prefetch.
    const bool preload = op.preload;  // else the v3 loop: each step's weights loaded with its x
    const bool v3 = !preload && ahead == 0;
    // step 0's weights before the wait (and the fused norm) in the preload and the v3 loops
    if (active && n_steps > 0 && (preload || v3)) load_w(0);
    if (active)
        for (int t = 1; t <= ahead && t < n_steps; t++) prefetch_step(t);
    pdl_wait();
    if constexpr (NORM) {
        floatX* xs = (floatX*)gemv_smem;
        gemv_norm_to_smem<V>(xs, x, op, I, threadIdx.x, blockDim.x, blockIdx.x == 0 ? op.norm_out : NULL, [] { __syncthreads(); });
        x = xs;
    }
    if (!active) return;
    int i0 = 0;
    if (v3) {
        // the v3 loop: per step, x and the weights loaded together, then the products; on an H200 the
        // faster of the two (dev/PERF.md, decode v4: the down projection 40-50 us against 54)
        for (; i0 + STEP <= I; i0 += STEP) {
            floatX xv[U][V];
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int i = i0 + (u * 32 + lane) * V;
                gemv_load<V>(x + i, xv[u]);
                if (i0 > 0)  // step 0's came before the wait
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
    } else {
        for (int s = 0; s < n_steps; s++, i0 += STEP) {  // full steps: the weights are loaded, then x, then the products
            if (!preload) load_w(i0);
            floatX xv[U][V];
#pragma unroll
            for (int u = 0; u < U; u++) gemv_load<V>(x + i0 + (u * 32 + lane) * V, xv[u]);
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
            if (preload && s + 1 < n_steps) {  // the next step's weights (step 0's were loaded before the wait)
                if (ahead > 0 && s + 1 + ahead < n_steps) prefetch_step(s + 1 + ahead);
                load_w(i0 + STEP);
            }
        }
    }
    for (int i = i0 + lane * V; i < I; i += 32 * V) {  // the tail
        floatX xv[V];
        gemv_load<V>(x + i, xv);
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                floatX wt[V];
                gemv_load<V>(rows[m][r] + i, wt);
#pragma unroll
                for (int k = 0; k < V; k++) acc[m][r] += to_float(wt[k]) * to_float(xv[k]);
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

template <int ROWS, bool VEC, bool SWIGLU, bool NORM>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(floatX* out, const floatX* x, const floatX* W, const floatX* W2,
                                                             const floatX* bias, const floatX* res, int I, int O, const GemvOpts op) {
    gemv_rows<ROWS, VEC, SWIGLU, NORM>(out, x, W, W2, bias, res, I, O, (blockIdx.x * GEMV_WARPS + threadIdx.x / 32) * ROWS, op);
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

template <int ROWS, bool VEC, bool NORM>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_batch_kernel(const GemvBatch bt, const floatX* x, int I, const GemvOpts op) {
    int j = 0;
    while (j + 1 < bt.n && (int)blockIdx.x >= bt.block0[j + 1]) j++;
    const int o0 = ((blockIdx.x - bt.block0[j]) * GEMV_WARPS + threadIdx.x / 32) * ROWS;
    gemv_rows<ROWS, VEC, false, NORM>(bt.out[j], x, bt.W[j], NULL, bt.bias[j], NULL, I, bt.O[j], o0, op);
}

static inline int gemv_rows_for(const GpuContext* ctx, int O) {  // at least ~2 CTAs per SM
    const int min_ctas = 2 * (ctx->sm_count > 0 ? ctx->sm_count : 132);
    return O >= min_ctas * GEMV_WARPS * 4 ? 4 : O >= min_ctas * GEMV_WARPS * 2 ? 2 : 1;
}

// The rows per warp of a launch: opts->rows, or by shape when opts is NULL or leaves it 0.
static inline int gemv__rows(const GpuContext* ctx, const GemvOpts* opts, int O) {
    const int r = opts ? opts->rows : 0;
    if (r == 0) return gemv_rows_for(ctx, O);
    if (r != 1 && r != 2 && r != 4) coda_fatal("gemv: %d rows per warp (1, 2 or 4)", r);
    return r;
}

// The options as the kernels take them: the fused norm only where the vector path runs and the row fits
// in the default shared memory; otherwise the norm runs first (rmsnorm_forward into op->norm_out, which
// must then be given) and the gemv reads that. Returns the x the kernel reads; *norm: fused.
static const floatX* gemv__prepare(const GpuContext* ctx, const GemvOpts* in, GemvOpts* op, int* norm, int vec, const floatX* x, int I) {
    memset(op, 0, sizeof(*op));
    if (in) *op = *in;
    *norm = 0;
    if (!op->norm_w) return x;
    if (vec && is_aligned16(op->norm_w) && (!op->norm_out || is_aligned16(op->norm_out)) && (size_t)I * sizeof(floatX) <= 48 * 1024) {
        *norm = 1;
        return x;
    }
    if (!op->norm_out) coda_fatal("gemv: a norm that cannot be fused needs norm_out");
    rmsnorm_forward(ctx, op->norm_out, NULL, x, op->norm_w, 1, I, op->norm_eps);
    return op->norm_out;
}

template <bool SWIGLU>
static void gemv_launch(const GpuContext* ctx, floatX* out, const floatX* x, const floatX* W, const floatX* W2, const floatX* bias,
                        const floatX* res, int I, int O, const GemvOpts* opts, const char* name) {
    if (O <= 0) return;
    const int V = 16 / (int)sizeof(floatX);
    const int vec = I % V == 0 && is_aligned16(x) && is_aligned16(W) && (!SWIGLU || is_aligned16(W2));
    GemvOpts op;
    int norm;
    x = gemv__prepare(ctx, opts, &op, &norm, vec, x, I);
    const int rows = gemv__rows(ctx, opts, O);
    const unsigned grid = (unsigned)ceil_div(O, GEMV_WARPS * rows);
    const size_t smem = norm ? (size_t)I * sizeof(floatX) : 0;
#define GEMV_GO(R, VC, NR) \
    pdl_launch(op.pdl, gemv_kernel<R, VC, SWIGLU, NR>, grid, GEMV_WARPS * 32, smem, ctx->stream, name, out, x, W, W2, bias, res, I, O, op)
    if (norm) {
        if (rows == 4) GEMV_GO(4, true, true); else if (rows == 2) GEMV_GO(2, true, true); else GEMV_GO(1, true, true);
    } else if (vec) {
        if (rows == 4) GEMV_GO(4, true, false); else if (rows == 2) GEMV_GO(2, true, false); else GEMV_GO(1, true, false);
    } else {
        if (rows == 4) GEMV_GO(4, false, false); else if (rows == 2) GEMV_GO(2, false, false); else GEMV_GO(1, false, false);
    }
#undef GEMV_GO
}

// out[O] = (res ? res : 0) + (bias ? bias : 0) + W[O][I] · x[I]. out may be res (element-wise in place).
// opts: NULL = none (see GemvOpts); with opts->norm_w, x is the raw row and W multiplies rmsnorm(x) * norm_w.
static void gemv_forward(const GpuContext* ctx, floatX* out, const floatX* x, const floatX* W, const floatX* bias, const floatX* res, int I,
                         int O, const GemvOpts* opts = NULL) {
    gemv_launch<false>(ctx, out, x, W, NULL, bias, res, I, O, opts, "gemv_kernel");
}
// out[O] = silu(Wg · x) * (Wu · x): the MLP's gate, up and SwiGLU in one pass over both matrices.
static void gemv_swiglu(const GpuContext* ctx, floatX* out, const floatX* x, const floatX* Wg, const floatX* Wu, int I, int O,
                        const GemvOpts* opts = NULL) {
    gemv_launch<true>(ctx, out, x, Wg, Wu, NULL, NULL, I, O, opts, "gemv_kernel(swiglu)");
}

// out[j] = W[j] · x (+ bias[j]) for the n <= 4 matrices of bt (out, W, bias, O set; block0 is filled here).
static void gemv_batch(const GpuContext* ctx, GemvBatch* bt, const floatX* x, int I, const GemvOpts* opts = NULL) {
    const int V = 16 / (int)sizeof(floatX);
    int total = 0, vec = I % V == 0 && is_aligned16(x);
    for (int j = 0; j < bt->n; j++) { total += bt->O[j]; vec &= is_aligned16(bt->W[j]); }
    const int rows = gemv__rows(ctx, opts, total);
    bt->block0[0] = 0;
    for (int j = 0; j < bt->n; j++) bt->block0[j + 1] = bt->block0[j] + ceil_div(bt->O[j], GEMV_WARPS * rows);
    const unsigned grid = (unsigned)bt->block0[bt->n];
    if (grid == 0) return;
    GemvOpts op;
    int norm;
    x = gemv__prepare(ctx, opts, &op, &norm, vec, x, I);
    const size_t smem = norm ? (size_t)I * sizeof(floatX) : 0;
#define GEMV_GO(R, VC, NR) \
    pdl_launch(op.pdl, gemv_batch_kernel<R, VC, NR>, grid, GEMV_WARPS * 32, smem, ctx->stream, "gemv_batch_kernel", *bt, x, I, op)
    if (norm) {
        if (rows == 4) GEMV_GO(4, true, true); else if (rows == 2) GEMV_GO(2, true, true); else GEMV_GO(1, true, true);
    } else if (vec) {
        if (rows == 4) GEMV_GO(4, true, false); else if (rows == 2) GEMV_GO(2, true, false); else GEMV_GO(1, true, false);
    } else {
        if (rows == 4) GEMV_GO(4, false, false); else if (rows == 2) GEMV_GO(2, false, false); else GEMV_GO(1, false, false);
    }
#undef GEMV_GO
}

// ---------------------------------------------------------------------------------------------
// A chain of gemvs in one persistent launch, the weights streamed through shared memory (decode v9:
// each layer's o-proj, the MLP's gate + up + SwiGLU, the down projection and the next layer's
// q/k/v/lambda, or the LM head, as the phases of one kernel; sm_90a).
// Why: each gemv launch pays a ramp (its CTAs dispatched, the first loads' latency) and a drain (the
// last warps' tail), and HBM idles between launches and through the attention's small kernels
// (dev/PERF.md, decode v7: a 34 MB read alone reaches only ~2.3 TB/s). Here the weights wait for
// nothing: each warp streams its own rows of every phase into shared memory by bulk copies
// (cp.async.bulk, counted on an mbarrier), starting before the phase's input is ready (before the PDL
// wait, before the grid-wide barrier), and the bytes in flight cost shared memory, not registers
// (decode v8, the same chain with register loads, ran at 2 CTAs an SM and was slower than the
// launches it replaced).
// Layout: grid = one CTA per SM of GEMV_STREAM_WARPS warps. Phase p's rows are numbered over its
// matrices in order and cut into gridDim.x contiguous slices, one per CTA; warp w takes its CTA's rows
// w, w + GEMV_STREAM_WARPS, ... . A row is streamed as chunks of ch.chunk elements (a SwiGLU
// row: gate chunk c, then up chunk c); a warp's chunks, over all phases, go round its own ring of
// `stages` slots, and lane 0 issues chunk k + stages as soon as the warp has read chunk k (so a slot
// is never two uses ahead of its reader, where an mbarrier's parity could not tell them apart):
//   ring   [GEMV_STREAM_WARPS][stages][chunk] floatX
//   xs     [max I] floatX          the phase's input row (normed when norm_w is set)
//   full   [GEMV_STREAM_WARPS][stages] mbarrier   lane 0's arrival + the chunk's bytes landed
// Sums: lane l adds elements l*V .. l*V+V-1 of every 32*V-element block of the row, blocks in order,
// then warp_sum: exactly the order of gemv_rows (its steps and its tail visit the same blocks in the same
// order), so each output is the bits of the launched gemv, and the fused norm is gemv_norm_to_smem.
// The grid barrier between phases: bar[p] counts the CTAs that have finished phase p - 1 (after their
// stores and a fence); bar[GEMV_CHAIN_MAX] counts the CTAs that are done, and the last one zeroes the
// counters for the next launch. Every CTA must be resident at once: one per SM, and the kernel lets its
// PDL successor launch only after the first barrier.
#define GEMV_CHAIN_MAX 4
#define GEMV_CHAIN_BAR (GEMV_CHAIN_MAX + 1)  // unsigned counters gemv_chain needs (zero before the first launch)
#define GEMV_STREAM_WARPS 8                  // warps a CTA
#define GEMV_STREAM_CHUNK 4096               // the default elements a slot, and the most
#define GEMV_STREAM_STAGES 2                 // the default slots a warp (bf16: 16 x 8 KB a CTA; dev/PERF.md, decode v9)
#define GEMV_STREAM_MAX_STAGES 16
typedef struct {
    GemvBatch bt;           // the phase's matrices: out, W, bias, O (n = 1 for a plain or a SwiGLU gemv)
    const floatX* W2;       // SwiGLU: the up matrix (bt.W[0] is the gate); NULL: a plain gemv
    const floatX* res;      // a plain gemv with n = 1: the residual row (may be bt.out[0]), or NULL
    const floatX* x;        // [I] the input row (the raw row when norm_w is set)
    const floatX* norm_w;   // [I] the fused RMSNorm's weight, or NULL
    floatX* norm_out;       // [I] the normed row, stored once (CTA 0), or NULL
    int I;
    int rows;               // filled by gemv_chain: rows over all matrices
    int row0[GEMV_MAX_BATCH + 1];
} GemvPhase;
typedef struct {
    int n;
    float norm_eps;
    unsigned* bar;  // [GEMV_CHAIN_BAR]
    int poll_ns;    // the barrier's wait between two reads of its counter (__nanosleep; 0: none)
    int stages;     // the slots of a warp's ring (filled by gemv_chain)
    int chunk;      // the elements of a slot: a multiple of 32 * 16 bytes, at most GEMV_STREAM_CHUNK (filled by gemv_chain)
    int max_I;      // filled by gemv_chain: xs's elements
    GemvPhase ph[GEMV_CHAIN_MAX];
} GemvChain;

__device__ __forceinline__ unsigned gemv__load_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
// The matrix j of a phase's global row (static indices into the parameters).
__device__ __forceinline__ int gemv__matrix_of(const GemvPhase& ph, int row) {
    int j = 0;
#pragma unroll
    for (int k = 1; k < GEMV_MAX_BATCH; k++) j += k < ph.bt.n && row >= ph.row0[k];
    return j;
}
template <class T, int N>
__device__ __forceinline__ T gemv__pick(const T (&a)[N], int j) {  // a[j], j < GEMV_MAX_BATCH
    T v = a[0];
#pragma unroll
    for (int k = 1; k < GEMV_MAX_BATCH; k++)
        if (j == k) v = a[k];
    return v;
}
__device__ __forceinline__ int gemv__slice(int rows, int b, int G) { return (int)((long long)rows * b / G); }

// A warp's position in its sequence of chunks: phase p, its local row lr (w, w + warps, ...), chunk c,
// matrix m (SwiGLU: 0 gate, 1 up). Lane 0 keeps one, `stages` chunks ahead of what the warp reads.
struct GemvCursor {
    int p, lr, c, m;
    // the first chunk at or after (p, lr) that exists (a phase where this warp has no row is skipped)
    __device__ __forceinline__ void settle(const GemvChain& ch, int w) {
        while (p < ch.n) {
            const GemvPhase& ph = ch.ph[p];
            if (lr < gemv__slice(ph.rows, blockIdx.x + 1, gridDim.x) - gemv__slice(ph.rows, blockIdx.x, gridDim.x)) return;
            p++; lr = w; c = 0; m = 0;
        }
    }
    __device__ __forceinline__ void next(const GemvChain& ch, int w) {
        const GemvPhase& ph = ch.ph[p];
        if (++m < (ph.W2 ? 2 : 1)) return;
        m = 0;
        if (++c < (ph.I + ch.chunk - 1) / ch.chunk) return;
        c = 0;
        lr += GEMV_STREAM_WARPS;
        settle(ch, w);
    }
    // issue this chunk into slot (one thread): the mbarrier expects its bytes, the copy engine brings them
    __device__ __forceinline__ void issue(const GemvChain& ch, floatX* slot, uint64_t* bar) const {
        const GemvPhase& ph = ch.ph[p];
        const int row = gemv__slice(ph.rows, blockIdx.x, gridDim.x) + lr, j = gemv__matrix_of(ph, row), o = row - gemv__pick(ph.row0, j);
        const floatX* W = m ? ph.W2 : gemv__pick(ph.bt.W, j);
        const int len = min(ch.chunk, ph.I - c * ch.chunk);
        const uint32_t bytes = (uint32_t)(len * sizeof(floatX));
        ca_mbar_arrive_expect_tx(bar, bytes);
        ca_bulk_load(slot, W + (size_t)o * ph.I + (size_t)c * ch.chunk, bytes, bar);
    }
};

__global__ void __launch_bounds__(GEMV_STREAM_WARPS * 32, 1) gemv_chain_kernel(const __grid_constant__ GemvChain ch) {
    constexpr int V = 16 / (int)sizeof(floatX), NT = GEMV_STREAM_WARPS * 32;
    const int CH = ch.chunk;
    extern __shared__ __align__(128) unsigned char gemv_stream_smem[];
    const int SW = ch.stages;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, G = gridDim.x, b = blockIdx.x;
    floatX* ring = (floatX*)gemv_stream_smem + (size_t)warp * SW * CH;  // this warp's slots
    floatX* xs = (floatX*)gemv_stream_smem + (size_t)GEMV_STREAM_WARPS * SW * CH;
    uint64_t* full = (uint64_t*)(xs + ((ch.max_I + 7) / 8) * 8) + warp * SW;
    GemvCursor ahead = {0, warp, 0, 0};  // the next chunk lane 0 issues
    if (lane == 0) {
        for (int i = 0; i < SW; i++) ca_mbar_init(&full[i], 1);
        ahead.settle(ch, warp);
        for (int i = 0; i < SW && ahead.p < ch.n; i++, ahead.next(ch, warp)) ahead.issue(ch, ring + (size_t)i * CH, &full[i]);
    }
    __syncwarp();
    int k = 0;  // chunks this warp has read (chunk k sits in slot k % SW, its round k / SW)
    for (int p = 0; p < ch.n; p++) {
        const GemvPhase& ph = ch.ph[p];
        const int nm = ph.W2 ? 2 : 1, nch = (ph.I + CH - 1) / CH, I = ph.I;
        const int r0 = gemv__slice(ph.rows, b, G), nloc = gemv__slice(ph.rows, b + 1, G) - r0;
        if (p == 0) {
            pdl_wait();  // the input of the first phase comes from the kernel before
        } else {
            if (threadIdx.x == 0) {
                while (gemv__load_acquire(ch.bar + p) < (unsigned)G)
                    if (ch.poll_ns) __nanosleep(ch.poll_ns);
                __threadfence();
            }
            __syncthreads();
            if (p == 1) pdl_trigger();  // every CTA has reached the first barrier: all are resident
        }
        if (ph.norm_w) {
            GemvOpts op = {};
            op.norm_w = ph.norm_w; op.norm_eps = ch.norm_eps;
            gemv_norm_to_smem<V>(xs, ph.x, op, I, threadIdx.x, NT, b == 0 ? ph.norm_out : NULL, [] { __syncthreads(); });
        } else {
            for (int c = threadIdx.x * V; c < I; c += NT * V) store128(xs + c, load128(ph.x + c));
            __syncthreads();
        }
        for (int lr = warp; lr < nloc; lr += GEMV_STREAM_WARPS) {
            const int row = r0 + lr, j = gemv__matrix_of(ph, row), o = row - gemv__pick(ph.row0, j);
            float acc[2] = {0.f, 0.f};
            for (int c = 0; c < nch; c++) {
                const int len = min(CH, I - c * CH);
                const floatX* xc = xs + (size_t)c * CH;
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    if (m >= nm) break;
                    const int slot = k % SW;
                    ca_mbar_wait(&full[slot], (k / SW) & 1);
                    const floatX* wc = ring + (size_t)slot * CH;
                    for (int e = lane * V; e < len; e += 32 * V) {
                        const Packed128<floatX> w = load128(wc + e), xv = load128(xc + e);
#pragma unroll
                        for (int kk = 0; kk < V; kk++) {
                            const float xk = to_float(xv[kk]);
                            acc[m] += to_float(w[kk]) * xk;
                        }
                    }
                    __syncwarp();  // every lane has read the slot: chunk k + SW may land in it
                    if (lane == 0 && ahead.p < ch.n) {
                        ca_fence_proxy_async();
                        ahead.issue(ch, ring + (size_t)slot * CH, &full[slot]);
                        ahead.next(ch, warp);
                    }
                    k++;
                }
            }
            const float a = warp_sum(acc[0]);
            const float g = nm == 2 ? warp_sum(acc[1]) : 0.f;
            if (lane == 0) {
                float y;
                if (nm == 2) {
                    y = gemv_silu(a) * g;
                } else {
                    y = a;
                    const floatX* bias = gemv__pick(ph.bt.bias, j);
                    if (bias) y += to_float(bias[o]);
                    if (ph.res) y += to_float(ph.res[o]);
                }
                gemv__pick(ph.bt.out, j)[o] = from_float<floatX>(y);
            }
        }
        __syncthreads();  // this CTA's outputs of phase p are stored, and xs is free
        if (threadIdx.x == 0 && p + 1 < ch.n) {
            __threadfence();
            atomicAdd(ch.bar + p + 1, 1u);
        }
    }
    if (ch.n == 1) pdl_trigger();
    if (threadIdx.x == 0 && atomicAdd(ch.bar + GEMV_CHAIN_MAX, 1u) == (unsigned)G - 1) {
        // every CTA has passed every barrier: the counters are free for the next launch
        for (int p = 1; p < ch.n; p++) ch.bar[p] = 0;
        ch.bar[GEMV_CHAIN_MAX] = 0;
        __threadfence();
    }
}

// Whether gemv_chain can run phase ph: 16-byte aligned rows and input (I a multiple of 16 bytes).
static int gemv_phase_ok(const GemvPhase* ph) {
    const int V = 16 / (int)sizeof(floatX);
    int ok = ph->bt.n >= 1 && ph->bt.n <= GEMV_MAX_BATCH && ph->I > 0 && ph->I % V == 0 && is_aligned16(ph->x);
    for (int j = 0; j < ph->bt.n; j++) ok &= is_aligned16(ph->bt.W[j]) && ph->bt.O[j] > 0;
    if (ph->W2) ok &= ph->bt.n == 1 && is_aligned16(ph->W2) && !ph->res && !ph->bt.bias[0];
    if (ph->res) ok &= ph->bt.n == 1;
    if (ph->norm_w) ok &= is_aligned16(ph->norm_w) && (!ph->norm_out || is_aligned16(ph->norm_out));
    return ok;
}
// The dynamic shared memory of a chain with `stages` slots of `chunk` elements a warp.
static size_t gemv_chain_smem(const GemvChain* ch, int stages, int chunk) {
    int max_I = 0;
    for (int p = 0; p < ch->n; p++) max_I = ch->ph[p].I > max_I ? ch->ph[p].I : max_I;
    const size_t S = (size_t)GEMV_STREAM_WARPS * stages;
    return sizeof(floatX) * (S * chunk + (size_t)(max_I + 7) / 8 * 8) + sizeof(uint64_t) * S;
}
// The slots a warp gemv_chain runs ch with, `chunk` elements each (0: GEMV_STREAM_CHUNK): `stages` (0:
// the most up to GEMV_STREAM_STAGES that fit), or 0 where it cannot run it (not sm_90, a phase not ok, a
// chunk not a multiple of 16 bytes x 32 lanes, or the ring and the input row do not fit the shared
// memory of a CTA).
static int gemv_chain_stages(const GemvChain* ch, int stages, int chunk) {
    const int C = chunk > 0 ? chunk : GEMV_STREAM_CHUNK;
    if (C > GEMV_STREAM_CHUNK || C % (32 * (16 / (int)sizeof(floatX))) != 0) return 0;
    if (ch->n < 1 || ch->n > GEMV_CHAIN_MAX) return 0;
    for (int p = 0; p < ch->n; p++)
        if (!gemv_phase_ok(&ch->ph[p])) return 0;
    int dev = 0, major = 0, optin = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    cudaCheck(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (major != 9) return 0;
    if (stages > 0) return stages <= GEMV_STREAM_MAX_STAGES && gemv_chain_smem(ch, stages, C) <= (size_t)optin ? stages : 0;
    for (int S = GEMV_STREAM_STAGES; S >= 1; S--)
        if (gemv_chain_smem(ch, S, C) <= (size_t)optin) return S;
    return 0;
}

// Runs the n phases of ch, in order, in one launch (PDL when pdl; ch->bar zeroed before the first launch
// and left zeroed; gemv_chain_stages(ch, stages, chunk) must be > 0). stages: the slots of each warp's
// ring (0: as many as fit, up to GEMV_STREAM_STAGES); chunk: the elements of a slot (0: GEMV_STREAM_CHUNK).
static void gemv_chain(const GpuContext* ctx, GemvChain* ch, int stages, int chunk, int pdl) {
    ch->stages = gemv_chain_stages(ch, stages, chunk);
    ch->chunk = chunk > 0 ? chunk : GEMV_STREAM_CHUNK;
    if (!ch->stages) coda_fatal("gemv_chain: the phases cannot take the chain (sm_90, alignment, %d stages of %d)", stages, chunk);
    ch->max_I = 0;
    for (int p = 0; p < ch->n; p++) {
        GemvPhase* ph = &ch->ph[p];
        ph->row0[0] = 0;
        for (int j = 0; j < GEMV_MAX_BATCH; j++) ph->row0[j + 1] = ph->row0[j] + (j < ph->bt.n ? ph->bt.O[j] : 0);
        ph->rows = ph->row0[ph->bt.n];
        if (ph->I > ch->max_I) ch->max_I = ph->I;
    }
    const size_t smem = gemv_chain_smem(ch, ch->stages, ch->chunk);
    static size_t smem_set = 0;  // the kernel's dynamic shared memory limit, raised once per size
    if (smem > 48 * 1024 && smem > smem_set) {
        cudaCheck(cudaFuncSetAttribute(gemv_chain_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        smem_set = smem;
    }
    const unsigned grid = (unsigned)(ctx->sm_count > 0 ? ctx->sm_count : 1);
    pdl_launch(pdl, gemv_chain_kernel, grid, GEMV_STREAM_WARPS * 32, smem, ctx->stream, "gemv_chain_kernel", *ch);
}
