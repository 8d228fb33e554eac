// matmul.cuh — the linear layers, through cuBLASLt, in nn.Linear's row-major convention:
//   matmul_forward:         out[N,O]  = inp[N,I] · weight[O,I]ᵀ (+ bias[O], cuBLASLt BIAS epilogue)
//   matmul_backward_input:  dinp[N,I] = (accumulate ? dinp : 0) + dout[N,O] · weight[O,I]
//   matmul_backward_weight: dweight[O,I] (+)= dout[N,O]ᵀ · inp[N,I] (fp32 C/D, floatX A/B, beta 1 or 0);
//                           dbias[O] += Σ_n dout[n,O] (fp32; deterministic two-pass column sum)
// Frozen weights need only matmul_backward_input (no wgrad).
//
// Row-major X[R,C] is column-major Xᵀ (C×R, ld = C), so every call is written in column-major terms:
//   forward:  outᵀ (O×N)  = op_T(weightᵀ as I×O) · inpᵀ (I×N)         m=O, n=N, k=I
//   dinput:   dinpᵀ (I×N) = weightᵀ (I×O) · doutᵀ (O×N)               m=I, n=N, k=O
//   dweight:  dweightᵀ (I×O) = inpᵀ (I×N) · op_T(doutᵀ as O×N)        m=I, n=O, k=N
//
// Precision: compute type CUBLAS_COMPUTE_32F in both builds (fp32 accumulation). In the FP32 build
// that is true fp32 (TF32 is only used with CUBLAS_COMPUTE_32F_FAST_TF32, which we never ask for),
// so results match the CPU reference to ~1e-6 relative.
//
// Split-K: candidates that would add split-K partial sums in bf16 (INPLACE / OUTPUT_TYPE reduction
// schemes with a bf16 output) are skipped, so accumulation stays fp32 (seen on H100: such kernels, picked
// for small or badly aligned shapes, were off by several bf16 ulps).
//
// Determinism: cuBLASLt gives bitwise-identical results for the same algorithm, shape, pointers'
// alignment, toolkit and GPU (cuBLAS docs, "Results reproducibility"); the algorithm is picked once
// per plan (shape + alignment) by the heuristic and cached, so it never changes within a run. The
// heuristic may still pick differently on another GPU model or cuBLAS version.
//
// Pointer alignment: the heuristic is told each call's real alignment (part of the plan key), so
// tensor slices at any element offset work, but cuBLASLt's fast kernels want 16-byte (ideally 256-byte)
// aligned A/B/C/D: keep parameter-table offsets and activation buffers aligned. A bias pointer that
// is not 16-byte aligned is added by a small kernel instead of the epilogue.
//
// Plans (descriptor, 4 layouts, up to 16 candidate algorithms) are cached per (kind, N, I, O, bias, alignment, handle,
// workspace) in a small table with round-robin eviction; building one costs ~10-50 us of host time.
// The table belongs to the GpuContext (ctx->matmul_plans, made on its first matmul, freed by
// gpu_context_free), not to the process: a plan's algorithm is the heuristic's choice for that
// context's handle and device, and with one context per rank/device none may use another's.
// Not thread-safe (one host thread drives a context in coda.c).
//
// Workspace: ctx->workspace is cuBLASLt's; matmul_backward_weight's dbias pass reuses it afterwards
// for its partial sums (stream-ordered, so safe as long as one ctx is used by one stream).
//
// A faster version would: fuse dbias into the wgrad matmul (CUBLASLT_EPILOGUE_BGRADB, which however
// sums in bf16-output order we don't control), fuse SwiGLU/RMSNorm into epilogues/prologues, use FP8.
#pragma once
#include <stdint.h>
#include "cuda_common.cuh"
#include "vec128.cuh"

#if defined(ENABLE_FP32)
#define MATMUL_FLOATX_CUDA CUDA_R_32F
#else
#define MATMUL_FLOATX_CUDA CUDA_R_16BF
#endif

enum { MATMUL_FWD = 0, MATMUL_BWD_INPUT = 1, MATMUL_BWD_WEIGHT = 2 };
#define MATMUL_MAX_ALGOS 16

typedef struct {
    int used;
    int kind, N, I, O, has_bias, align;
    cublasLtHandle_t lt;
    size_t workspace_size;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc, ld;
    cublasLtMatmulAlgo_t algos[MATMUL_MAX_ALGOS];  // heuristic's candidates, best first
    int n_algos, chosen;                          // chosen: the first one cuBLASLt accepted
} MatmulPlan;

#define MATMUL_PLAN_CACHE_SIZE 128
struct MatmulPlanCache {  // one per GpuContext (declared in cuda_common.cuh)
    MatmulPlan plans[MATMUL_PLAN_CACHE_SIZE];
    int next;  // round-robin eviction cursor
};

// Largest power of two (<= 256) dividing the address; cuBLASLt's heuristic needs the real alignment.
static inline int matmul_ptr_align(const void* p) {
    if (!p) return 256;
    uintptr_t u = (uintptr_t)p;
    int a = 256;
    while (a > 1 && (u % (uintptr_t)a)) a >>= 1;
    return a;
}

static void matmul_plan_destroy(MatmulPlan* p) {
    if (!p->used) return;
    cublasCheck(cublasLtMatrixLayoutDestroy(p->la));
    cublasCheck(cublasLtMatrixLayoutDestroy(p->lb));
    cublasCheck(cublasLtMatrixLayoutDestroy(p->lc));
    cublasCheck(cublasLtMatrixLayoutDestroy(p->ld));
    cublasCheck(cublasLtMatmulDescDestroy(p->desc));
    memset(p, 0, sizeof(*p));
}

// Destroys every plan of a context's cache and the cache (GpuContext.matmul_plans_free: gpu_context_free
// calls it before destroying the cuBLASLt handle).
static void matmul_plan_cache_free(struct MatmulPlanCache* c) {
    for (int i = 0; i < MATMUL_PLAN_CACHE_SIZE; i++) matmul_plan_destroy(&c->plans[i]);
    free(c);
}

// The context's plan cache, made on first use. The launchers take const GpuContext*; the cache
// pointer is the one field they set (a cache, like each plan's `chosen`), through a cast, which is
// defined because every GpuContext is a non-const object set up by gpu_context_init.
static struct MatmulPlanCache* matmul_plan_cache(const GpuContext* ctx) {
    if (!ctx->matmul_plans) {
        GpuContext* mctx = (GpuContext*)ctx;
        mctx->matmul_plans = (struct MatmulPlanCache*)coda_calloc_or_die(1, sizeof(struct MatmulPlanCache), "matmul plans");
        mctx->matmul_plans_free = matmul_plan_cache_free;
    }
    return ctx->matmul_plans;
}

static MatmulPlan* matmul_get_plan(const GpuContext* ctx, int kind, int N, int I, int O, int has_bias, int align) {
    struct MatmulPlanCache* c = matmul_plan_cache(ctx);
    for (int i = 0; i < MATMUL_PLAN_CACHE_SIZE; i++) {
        MatmulPlan* p = &c->plans[i];
        if (p->used && p->kind == kind && p->N == N && p->I == I && p->O == O && p->has_bias == has_bias &&
            p->align == align && p->lt == ctx->lt && p->workspace_size == ctx->workspace_size)
            return p;
    }
    MatmulPlan* p = &c->plans[c->next];
    c->next = (c->next + 1) % MATMUL_PLAN_CACHE_SIZE;
    matmul_plan_destroy(p);
    p->kind = kind; p->N = N; p->I = I; p->O = O; p->has_bias = has_bias; p->align = align;
    p->lt = ctx->lt; p->workspace_size = ctx->workspace_size;

    cublasOperation_t ta, tb;
    int m, n;
    cudaDataType_t cd_type = MATMUL_FLOATX_CUDA;
    if (kind == MATMUL_FWD) {
        ta = CUBLAS_OP_T; tb = CUBLAS_OP_N; m = O; n = N;
        cublasCheck(cublasLtMatrixLayoutCreate(&p->la, MATMUL_FLOATX_CUDA, I, O, I));  // weight (pre-op)
        cublasCheck(cublasLtMatrixLayoutCreate(&p->lb, MATMUL_FLOATX_CUDA, I, N, I));  // inp
    } else if (kind == MATMUL_BWD_INPUT) {
        ta = CUBLAS_OP_N; tb = CUBLAS_OP_N; m = I; n = N;
        cublasCheck(cublasLtMatrixLayoutCreate(&p->la, MATMUL_FLOATX_CUDA, I, O, I));  // weight
        cublasCheck(cublasLtMatrixLayoutCreate(&p->lb, MATMUL_FLOATX_CUDA, O, N, O));  // dout
    } else {
        ta = CUBLAS_OP_N; tb = CUBLAS_OP_T; m = I; n = O;
        cd_type = CUDA_R_32F;
        cublasCheck(cublasLtMatrixLayoutCreate(&p->la, MATMUL_FLOATX_CUDA, I, N, I));  // inp
        cublasCheck(cublasLtMatrixLayoutCreate(&p->lb, MATMUL_FLOATX_CUDA, O, N, O));  // dout (pre-op)
    }
    cublasCheck(cublasLtMatrixLayoutCreate(&p->lc, cd_type, m, n, m));
    cublasCheck(cublasLtMatrixLayoutCreate(&p->ld, cd_type, m, n, m));

    cublasCheck(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (has_bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = MATMUL_FLOATX_CUDA;
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    }

    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = ctx->workspace_size;
    uint32_t al = (uint32_t)align;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof(al)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof(al)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof(al)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof(al)));
    cublasLtMatmulHeuristicResult_t heur[MATMUL_MAX_ALGOS];
    int returned = 0;
    cublasCheck(cublasLtMatmulAlgoGetHeuristic(ctx->lt, p->desc, p->la, p->lb, p->lc, p->ld, pref, MATMUL_MAX_ALGOS, heur,
                                               &returned));
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    if (returned == 0) {
        static const char* names[3] = {"matmul_forward", "matmul_backward_input", "matmul_backward_weight"};
        fprintf(stderr, "cuBLASLt has no algorithm for %s N=%d I=%d O=%d bias=%d alignment=%d workspace=%zu\n",
                names[kind], N, I, O, has_bias, align, ctx->workspace_size);
        exit(1);
    }
    // fp32 accumulation everywhere: when the output is floatX = bf16 (forward, dinput in the BF16
    // build), drop split-K candidates whose partial sums are added in the output type (INPLACE,
    // OUTPUT_TYPE reduction schemes: bf16 partials, seen to cost several bf16 ulps on small shapes).
    // Keep the heuristic's order; if nothing is left, keep every candidate.
    int kept = 0;
    for (int i = 0; i < returned; i++) {
        int bf16_partials = 0;
        if (cd_type != CUDA_R_32F) {
            int32_t splitk = 1;
            uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
            size_t wr = 0;
            cublasCheck(cublasLtMatmulAlgoConfigGetAttribute(&heur[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                                             sizeof(splitk), &wr));
            cublasCheck(cublasLtMatmulAlgoConfigGetAttribute(&heur[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                                             &scheme, sizeof(scheme), &wr));
            bf16_partials = splitk > 1 && (scheme & (CUBLASLT_REDUCTION_SCHEME_INPLACE | CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE));
        }
        if (!bf16_partials) p->algos[kept++] = heur[i].algo;
    }
    if (kept == 0) {
        static int warned = 0;
        if (!warned++)
            fprintf(stderr, "warning: matmul kind=%d N=%d I=%d O=%d alignment=%d: only split-K algorithms with bf16 "
                            "partial sums available (accuracy ~ a few bf16 ulps); further such warnings suppressed\n",
                    kind, N, I, O, align);
        for (int i = 0; i < returned; i++) p->algos[i] = heur[i].algo;
        kept = returned;
    }
    p->n_algos = kept;
    p->chosen = 0;
    p->used = 1;
    return p;
}

// Runs the plan's chosen algorithm. If cuBLASLt refuses it (CUBLAS_STATUS_NOT_SUPPORTED is returned
// before anything is launched, e.g. for a pointer alignment the heuristic did not anticipate), the
// next candidate is tried and kept: the choice depends only on the plan's key, so it is stable.
static inline void matmul_run(const GpuContext* ctx, MatmulPlan* p, const void* A, const void* B, void* D,
                              float beta, const void* bias) {
    float alpha = 1.0f;
    if (p->has_bias)
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    for (;;) {
        cublasStatus_t st = cublasLtMatmul(ctx->lt, p->desc, &alpha, A, p->la, B, p->lb, &beta, D, p->lc, D, p->ld,
                                           &p->algos[p->chosen], ctx->workspace, ctx->workspace_size, ctx->stream);
        if (st == CUBLAS_STATUS_NOT_SUPPORTED && p->chosen + 1 < p->n_algos) { p->chosen++; continue; }
        if (st != CUBLAS_STATUS_SUCCESS)
            fprintf(stderr, "matmul kind=%d N=%d I=%d O=%d bias=%d alignment=%d: algorithm %d of %d refused\n", p->kind,
                    p->N, p->I, p->O, p->has_bias, p->align, p->chosen, p->n_algos);
        cublasCheck(st);
        return;
    }
}

// out[n, o] += bias[o] (fp32 add, rounded to floatX): the forward's bias when the bias pointer is
// not 16-byte aligned, which the cuBLASLt BIAS epilogue does not accept.
__global__ void matmul_bias_add_kernel(floatX* out, const floatX* bias, int N, int O) {
    size_t total = (size_t)N * O, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride)
        out[i] = from_float<floatX>(to_float(out[i]) + to_float(bias[i % O]));
}

static inline int matmul_min4(int a, int b, int c, int d) {
    int m = a < b ? a : b;
    m = m < c ? m : c;
    return m < d ? m : d;
}

// out[N,O] = inp[N,I] · weight[O,I]ᵀ (+ bias[O] if bias != NULL).
// BF16 note: with the bias epilogue (and with accumulate in matmul_backward_input), some cuBLASLt
// kernels round the product to bf16 before adding the bias (or C) and round again: the error is then
// up to half a bf16 ulp of each term, not of the result. Tests allow for that.
static void matmul_forward(const GpuContext* ctx, floatX* out, const floatX* inp, const floatX* weight,
                           const floatX* bias, int N, int I, int O) {
    if (N <= 0 || O <= 0) return;
    int epilogue_bias = bias != NULL && is_aligned16(bias);
    int align = matmul_min4(matmul_ptr_align(out), matmul_ptr_align(inp), matmul_ptr_align(weight), 256);
    MatmulPlan* p = matmul_get_plan(ctx, MATMUL_FWD, N, I, O, epilogue_bias, align);
    matmul_run(ctx, p, weight, inp, out, 0.0f, bias);
    if (bias && !epilogue_bias) {
        matmul_bias_add_kernel<<<grid_for((size_t)N * O, 256, ctx), 256, 0, ctx->stream>>>(out, bias, N, O);
        cudaCheckLaunch("matmul_bias_add_kernel");
    }
}

// dinp[N,I] = (accumulate ? dinp : 0) + dout[N,O] · weight[O,I].
static void matmul_backward_input(const GpuContext* ctx, floatX* dinp, const floatX* dout, const floatX* weight,
                                  int N, int I, int O, int accumulate) {
    if (N <= 0 || I <= 0) return;
    if (O <= 0) {  // empty sum
        if (!accumulate) cudaCheck(cudaMemsetAsync(dinp, 0, (size_t)N * I * sizeof(floatX), ctx->stream));
        return;
    }
    int align = matmul_min4(matmul_ptr_align(dinp), matmul_ptr_align(dout), matmul_ptr_align(weight), 256);
    MatmulPlan* p = matmul_get_plan(ctx, MATMUL_BWD_INPUT, N, I, O, 0, align);
    matmul_run(ctx, p, weight, dout, dinp, accumulate ? 1.0f : 0.0f, NULL);
}

// Bias gradient, pass 1: block (bx, by) sums rows [by*rows_per, ...) of 32 columns into
// partial[by, col]; threads (tx, ty) stride rows by 8 and the 8 partial sums are added in ty order.
__global__ void matmul_dbias_partial_kernel(float* partial, const floatX* dout, int N, int O, int rows_per) {
    __shared__ float sm[8][33];
    int col = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rows_per, r1 = min(N, r0 + rows_per);
    float acc = 0.0f;
    if (col < O)
        for (int r = r0 + threadIdx.y; r < r1; r += 8) acc += to_float(dout[(size_t)r * O + col]);
    sm[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < O) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) s += sm[k][threadIdx.x];
        partial[(size_t)blockIdx.y * O + col] = s;
    }
}
// Pass 2: dbias[col] += Σ_chunk partial[chunk, col], chunks in order.
__global__ void matmul_dbias_final_kernel(float* dbias, const float* partial, int O, int nchunks) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= O) return;
    float s = 0.0f;
    for (int c = 0; c < nchunks; c++) s += partial[(size_t)c * O + col];
    dbias[col] += s;
}

// dbias[O] += Σ_n dout[n, O], deterministically (the split depends only on N and O).
static void matmul_dbias(const GpuContext* ctx, float* dbias, const floatX* dout, int N, int O) {
    if (N <= 0 || O <= 0) return;
    int nchunks = ceil_div(N, 64);
    if (nchunks > 32) nchunks = 32;
    while (nchunks > 1 && (size_t)nchunks * O * sizeof(float) > ctx->workspace_size) nchunks--;
    if ((size_t)O * sizeof(float) > ctx->workspace_size) {
        fprintf(stderr, "matmul_dbias: O=%d needs %zu bytes of workspace, have %zu\n", O, (size_t)O * 4, ctx->workspace_size);
        exit(1);
    }
    int rows_per = ceil_div(N, nchunks);
    float* partial = (float*)ctx->workspace;
    dim3 grid(ceil_div(O, 32), nchunks), block(32, 8);
    matmul_dbias_partial_kernel<<<grid, block, 0, ctx->stream>>>(partial, dout, N, O, rows_per);
    cudaCheckLaunch("matmul_dbias_partial_kernel");
    matmul_dbias_final_kernel<<<ceil_div(O, 256), 256, 0, ctx->stream>>>(dbias, partial, O, nchunks);
    cudaCheckLaunch("matmul_dbias_final_kernel");
}

// dweight[O,I] = (accumulate ? dweight : 0) + dout[N,O]ᵀ · inp[N,I] (fp32; overwriting spares the
// trainer a pass that zeroes the gradients); dbias[O] += Σ_n dout[n,O] (fp32, always accumulated) when
// dbias != NULL. dweight may be NULL (bias-only gradient).
static void matmul_backward_weight(const GpuContext* ctx, float* dweight, float* dbias, const floatX* dout,
                                   const floatX* inp, int N, int I, int O, int accumulate) {
    if (N <= 0 || O <= 0) return;
    if (dweight && I > 0) {
        int align = matmul_min4(matmul_ptr_align(dweight), matmul_ptr_align(dout), matmul_ptr_align(inp), 256);
        MatmulPlan* p = matmul_get_plan(ctx, MATMUL_BWD_WEIGHT, N, I, O, 0, align);
        matmul_run(ctx, p, inp, dout, dweight, accumulate ? 1.0f : 0.0f, NULL);
    }
    if (dbias) matmul_dbias(ctx, dbias, dout, N, O);
}
