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
// A faster version would: update all tensors of a step in one launch (a table of tensor slices with
// their lr/wd), and fuse the grad-norm pass of the next step.
#pragma once
#include <math.h>
#include "cuda_common.cuh"
#include "vec128.cuh"

struct AdamWArgs {
    float lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2;
};

template <int W>
__global__ void adamw_kernel(float* master, floatX* param, const float* grad, float* m, float* v, size_t n,
                             const AdamWArgs a) {
    size_t stride = (size_t)gridDim.x * blockDim.x * W;
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * W; i < n; i += stride) {
        float p[W], g[W], mm[W], vv[W];
        load_f<W>(p, master + i);
        load_f<W>(g, grad + i);
        load_f<W>(mm, m + i);
        load_f<W>(vv, v + i);
#pragma unroll
        for (int k = 0; k < W; k++) {
            float gk = g[k] * a.grad_scale;
            mm[k] = a.beta1 * mm[k] + (1.0f - a.beta1) * gk;
            vv[k] = a.beta2 * vv[k] + (1.0f - a.beta2) * gk * gk;
            float pk = p[k] * (1.0f - a.lr * a.weight_decay);
            pk -= a.lr * (mm[k] / a.bc1) / (sqrtf(vv[k] / a.bc2) + a.eps);
            p[k] = pk;
        }
        store_f<W>(m + i, mm);
        store_f<W>(v + i, vv);
        store_f<W>(master + i, p);
        if (param) {
            if constexpr (W == 4 && sizeof(floatX) == 2) {  // 8-byte store of 4 bf16
                __nv_bfloat162 lo = __floats2bfloat162_rn(p[0], p[1]), hi = __floats2bfloat162_rn(p[2], p[3]);
                uint2 u;
                u.x = *reinterpret_cast<uint32_t*>(&lo);
                u.y = *reinterpret_cast<uint32_t*>(&hi);
                *reinterpret_cast<uint2*>(param + i) = u;
            } else {
                store_f<W>(param + i, p);
            }
        }
    }
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
