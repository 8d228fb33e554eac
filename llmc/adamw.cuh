// adamw.cuh — AdamW update of one trainable tensor (or a contiguous run of tensors sharing lr/wd),
// PyTorch semantics exactly as llmc/cpu/model.h model_adamw_step:
//   g = grad * grad_scale                       (grad_scale folds in clipping and 1/accumulation)
//   m = beta1*m + (1-beta1)*g ; v = beta2*v + (1-beta2)*g^2
//   p = master * (1 - lr*wd)                    (decoupled weight decay)
//   p -= lr * (m / (1-beta1^step)) / (sqrt(v / (1-beta2^step)) + eps)
//   master = p (fp32) ; param = p rounded to floatX (round to nearest even)
// step counts from 1. fp32 state and arithmetic (the bias corrections are computed on the host in
// double, then rounded); element-wise, hence deterministic.
// param may be NULL (no floatX copy, e.g. a rank that only holds the shard's master). master and
// param may not alias.
//
// No stochastic rounding: the fp32 master keeps every update, so rounding the bf16 copy to nearest
// loses nothing across steps (its error is bounded by half a bf16 ulp of the current master and
// never accumulates). Round-to-nearest also keeps the bf16 weights a pure function of the master
// (no RNG state), so a resumed run can rebuild them with float_to_floatX and stay bitwise identical.
// (llm.c's stochastic rounding matters when the bf16 copy *is* the state; coda.c never does that.)
//
// Two launchers with the same per-element arithmetic (adamw_elems below, shared so they cannot drift
// apart: the table update is bitwise the per-tensor one):
//   adamw_update        one tensor (or any contiguous range) per launch: the reference, version 1
//   adamw_table_update  every segment of a step in one launch, over a table built once
//                       (adamw_table.h: the model's whole compact layout, or a ZeRO rank's slice)
// At 7B phase 1 the step is 224 tensors (q/k/v/o, theta, lambda of 32 layers); one launch each costs
// a launch gap and a partial last wave per tensor, the table pays them once.
// A faster version would also fuse the grad-norm pass of the next step.
#pragma once
#include <math.h>
#include "adamw_table.h"
#include "cuda_common.cuh"
#include "vec128.cuh"

struct AdamWArgs {
    float lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2;
};

// W consecutive elements: master[0..W), grad, m, v and their floatX copy param[pi..pi+W) (param NULL:
// none). W = 4 needs 16-byte aligned fp32 pointers and param + pi aligned to 4 floatX. One body for
// both kernels, so nvcc's FMA contraction sees the same expressions in both (adamw_kernel's PTX is
// what it was before the table kernel shared this). It contracts W = 4 and W = 1 differently in the
// v update, though, so which path an element takes is part of its result (adamw_table_kernel).
template <int W>
__device__ __forceinline__ void adamw_elems(float* master, floatX* param, size_t pi, const float* grad, float* m, float* v,
                                            const AdamWArgs& a) {
    float p[W], g[W], mm[W], vv[W];
    load_f<W>(p, master);
    load_f<W>(g, grad);
    load_f<W>(mm, m);
    load_f<W>(vv, v);
#pragma unroll
    for (int k = 0; k < W; k++) {
        float gk = g[k] * a.grad_scale;
        mm[k] = a.beta1 * mm[k] + (1.0f - a.beta1) * gk;
        vv[k] = a.beta2 * vv[k] + (1.0f - a.beta2) * gk * gk;
        float pk = p[k] * (1.0f - a.lr * a.weight_decay);
        pk -= a.lr * (mm[k] / a.bc1) / (sqrtf(vv[k] / a.bc2) + a.eps);
        p[k] = pk;
    }
    store_f<W>(m, mm);
    store_f<W>(v, vv);
    store_f<W>(master, p);
    if (param) {
        if constexpr (W == 4 && sizeof(floatX) == 2) {  // 8-byte store of 4 bf16
            __nv_bfloat162 lo = __floats2bfloat162_rn(p[0], p[1]), hi = __floats2bfloat162_rn(p[2], p[3]);
            uint2 u;
            u.x = *reinterpret_cast<uint32_t*>(&lo);
            u.y = *reinterpret_cast<uint32_t*>(&hi);
            *reinterpret_cast<uint2*>(param + pi) = u;
        } else {
            store_f<W>(param + pi, p);
        }
    }
}

template <int W>
__global__ void adamw_kernel(float* master, floatX* param, const float* grad, float* m, float* v, size_t n,
                             const AdamWArgs a) {
    size_t stride = (size_t)gridDim.x * blockDim.x * W;
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * W; i < n; i += stride)
        adamw_elems<W>(master + i, param, i, grad + i, m + i, v + i, a);
}

static void adamw_update(const GpuContext* ctx, float* master, floatX* param, const float* grad, float* m, float* v,
                         size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                         int step) {
    if (n == 0) return;
    if (step < 1) { fprintf(stderr, "adamw_update: step must be >= 1 (got %d)\n", step); exit(1); }
    AdamWArgs a;
    a.lr = lr; a.beta1 = beta1; a.beta2 = beta2; a.eps = eps; a.weight_decay = weight_decay; a.grad_scale = grad_scale;
    a.bc1 = (float)(1.0 - pow((double)beta1, (double)step));
    a.bc2 = (float)(1.0 - pow((double)beta2, (double)step));
    const int block = 256;
    int vec = n % 4 == 0 && is_aligned16(master) && is_aligned16(grad) && is_aligned16(m) && is_aligned16(v) &&
              (!param || ((uintptr_t)param % (4 * sizeof(floatX))) == 0);
    if (vec) adamw_kernel<4><<<grid_for(n / 4, block, ctx), block, 0, ctx->stream>>>(master, param, grad, m, v, n, a);
    else adamw_kernel<1><<<grid_for(n, block, ctx), block, 0, ctx->stream>>>(master, param, grad, m, v, n, a);
    cudaCheckLaunch("adamw_kernel");
}

// ---------------------------------------------------------------- the whole step in one launch
// The table on the device (adamw_table_create): built once, reused by every step's launch.
typedef struct {
    int n_seg;
    size_t n_elems;             // the fp32 buffers' length the segments were checked against
    size_t n_updated;           // elements the segments cover (sum of their lengths), for GB/s
    size_t n_chunks;            // CTAs of one launch
    AdamWSegment* seg;          // host copy [n_seg] (adamw_table_update_per_segment, tests)
    AdamWSegment* d_seg;        // device [n_seg]
    size_t* d_chunk_start;      // device [n_seg + 1]: first CTA of each segment (adamw_chunk_starts)
} AdamWTable;

// What one step changes, by value: per-group lr (schedule applied) and weight decay, and the rest of
// AdamWArgs (whose lr / weight_decay fields the kernel fills from the segment's group).
typedef struct {
    float lr[GROUP_COUNT], weight_decay[GROUP_COUNT];
    AdamWArgs a;
} AdamWStepArgs;

#define ADAMW_TABLE_BLOCK 256

// One CTA = one chunk of one segment (adamw_table.h). A fixed partition rather than a grid-stride
// loop over chunks: no per-CTA loop state, the last wave is one of ~1,200 at 7B, and every element's
// CTA is a pure function of the table. The per-element arithmetic is adamw_elems, as in adamw_kernel.
//
// The 4-wide or scalar path is chosen per segment by adamw_update's own rule (length a multiple of 4,
// master/grad/m/v + begin 16-byte aligned, param + param_offset aligned to 4 floatX), not per element
// (a vector body with a scalar head and tail): nvcc contracts the v update differently in the two
// instantiations of adamw_elems (W = 4: fma(gk, (1-beta2)*gk, beta2*v); W = 1: fma(beta2, v,
// gk*((1-beta2)*gk)), seen in the PTX), so the path decides the last bit of v, and only the same
// choice per segment makes the table bitwise the per-tensor launches (a ZeRO piece can be told to
// stay scalar: AdamWSegment.scalar). Every trainable tensor of the model is 64-element aligned, so
// only lengths that are not a multiple of 4 (biases, tiny test tensors) take the scalar path; any
// begin/end works.
__global__ void __launch_bounds__(ADAMW_TABLE_BLOCK) adamw_table_kernel(float* master, floatX* param, const float* grad, float* m, float* v,
                                                                        const AdamWSegment* seg, const size_t* chunk_start, int n_seg,
                                                                        const AdamWStepArgs s) {
    const size_t c = blockIdx.x;
    // this CTA's segment: the last one whose first chunk is <= c (every thread runs the same ~8-step
    // search; after the first warp its loads hit L1)
    int lo = 0, hi = n_seg - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (chunk_start[mid] <= c) lo = mid;
        else hi = mid - 1;
    }
    const AdamWSegment sg = seg[lo];
    size_t b, e;
    adamw_chunk_range(&sg, c - chunk_start[lo], &b, &e);
    // the group's lr and weight decay, selected with constant indices (a dynamic index into the
    // by-value arrays would copy them to local memory)
    AdamWArgs a = s.a;
#pragma unroll
    for (int g = 0; g < GROUP_COUNT; g++)
        if (g == sg.group) { a.lr = s.lr[g]; a.weight_decay = s.weight_decay[g]; }
    floatX* px = sg.param_offset >= 0 ? param : NULL;
    const long long pd = sg.param_offset - (long long)sg.begin;  // fp32 element i's floatX copy is px[i + pd]
    const int vec = !sg.scalar && (sg.end - sg.begin) % 4 == 0 && ((uintptr_t)(master + sg.begin) & 15) == 0 && ((uintptr_t)(grad + sg.begin) & 15) == 0 &&
                    ((uintptr_t)(m + sg.begin) & 15) == 0 && ((uintptr_t)(v + sg.begin) & 15) == 0 &&
                    (!px || ((uintptr_t)(px + sg.param_offset) % (4 * sizeof(floatX))) == 0);
    if (vec) {  // b is begin + a multiple of ADAMW_CHUNK and e - b a multiple of 4: whole aligned vectors
        for (size_t i = b + 4 * (size_t)threadIdx.x; i < e; i += 4 * (size_t)blockDim.x)
            adamw_elems<4>(master + i, px, (size_t)((long long)i + pd), grad + i, m + i, v + i, a);
    } else {
        for (size_t i = b + threadIdx.x; i < e; i += blockDim.x)
            adamw_elems<1>(master + i, px, (size_t)((long long)i + pd), grad + i, m + i, v + i, a);
    }
}

// Uploads a segment table (checked by adamw_segments_check against fp32 buffers of n_elems).
static void adamw_table_create(AdamWTable* t, const AdamWSegment* seg, int n, size_t n_elems) {
    memset(t, 0, sizeof(*t));
    CodaError err;
    if (adamw_segments_check(seg, n, n_elems, &err) != 0) coda_fatal("adamw_table_create: %s", err.msg);
    t->n_seg = n;
    t->n_elems = n_elems;
    t->seg = (AdamWSegment*)coda_malloc_or_die(sizeof(AdamWSegment) * (size_t)(n ? n : 1), "AdamW segments");
    size_t* starts = (size_t*)coda_malloc_or_die(sizeof(size_t) * (size_t)(n + 1), "AdamW chunk starts");
    if (n) memcpy(t->seg, seg, sizeof(AdamWSegment) * (size_t)n);
    t->n_chunks = adamw_chunk_starts(seg, n, starts);
    if (t->n_chunks > (size_t)INT32_MAX) coda_fatal("adamw_table_create: %zu chunks exceed the grid's %d CTAs", t->n_chunks, INT32_MAX);
    for (int i = 0; i < n; i++) t->n_updated += seg[i].end - seg[i].begin;
    t->d_seg = (AdamWSegment*)cuda_malloc_or_die(sizeof(AdamWSegment) * (size_t)(n ? n : 1), "AdamW segments");
    t->d_chunk_start = (size_t*)cuda_malloc_or_die(sizeof(size_t) * (size_t)(n + 1), "AdamW chunk starts");
    if (n) cudaCheck(cudaMemcpy(t->d_seg, seg, sizeof(AdamWSegment) * (size_t)n, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(t->d_chunk_start, starts, sizeof(size_t) * (size_t)(n + 1), cudaMemcpyHostToDevice));
    free(starts);
}
static void adamw_table_free(AdamWTable* t) {
    free(t->seg);
    if (t->d_seg) cudaCheck(cudaFree(t->d_seg));
    if (t->d_chunk_start) cudaCheck(cudaFree(t->d_chunk_start));
    memset(t, 0, sizeof(*t));
}

// One step over every segment of t in one launch. master, grad, m, v: the fp32 buffers the ranges
// index (t->n_elems long); param: the floatX buffer the param_offsets index, or NULL (no floatX copy
// at all); lr, weight_decay: [GROUP_COUNT], this step's. Same arguments as adamw_update otherwise.
static void adamw_table_update(const GpuContext* ctx, const AdamWTable* t, float* master, floatX* param, const float* grad, float* m, float* v,
                               const float* lr, const float* weight_decay, float beta1, float beta2, float eps, float grad_scale, int step) {
    if (t->n_seg == 0) return;
    if (step < 1) { fprintf(stderr, "adamw_table_update: step must be >= 1 (got %d)\n", step); exit(1); }
    AdamWStepArgs s;
    for (int g = 0; g < GROUP_COUNT; g++) { s.lr[g] = lr[g]; s.weight_decay[g] = weight_decay[g]; }
    // the scalars exactly as adamw_update computes them (the per-group lr/wd replace a.lr, a.weight_decay)
    s.a.lr = 0.0f; s.a.beta1 = beta1; s.a.beta2 = beta2; s.a.eps = eps; s.a.weight_decay = 0.0f; s.a.grad_scale = grad_scale;
    s.a.bc1 = (float)(1.0 - pow((double)beta1, (double)step));
    s.a.bc2 = (float)(1.0 - pow((double)beta2, (double)step));
    adamw_table_kernel<<<(unsigned)t->n_chunks, ADAMW_TABLE_BLOCK, 0, ctx->stream>>>(master, param, grad, m, v, t->d_seg, t->d_chunk_start,
                                                                                     t->n_seg, s);
    cudaCheckLaunch("adamw_table_kernel");
}

// The same step as one adamw_update launch per segment (version 1; the reference of the tests). A
// segment marked scalar is not forced here (adamw_update has no such switch): for tables without
// such segments (adamw_segments_from_table's) the two launchers agree bit for bit.
static void adamw_table_update_per_segment(const GpuContext* ctx, const AdamWTable* t, float* master, floatX* param, const float* grad,
                                           float* m, float* v, const float* lr, const float* weight_decay, float beta1, float beta2,
                                           float eps, float grad_scale, int step) {
    for (int k = 0; k < t->n_seg; k++) {
        const AdamWSegment* s = &t->seg[k];
        floatX* px = param && s->param_offset >= 0 ? param + s->param_offset : NULL;
        adamw_update(ctx, master + s->begin, px, grad + s->begin, m + s->begin, v + s->begin, s->end - s->begin, lr[s->group], beta1,
                     beta2, eps, weight_decay[s->group], grad_scale, step);
    }
}
