// classifier.cuh — fused softmax cross-entropy over the vocabulary, in place on the logits, so fp32
// logits for all tokens x vocab never exist: the trainer runs the lm_head matmul and this kernel on
// chunks of rows. Deterministic (fixed-order block reductions, no atomics).
//
//   crossentropy_fused(ctx, logits [n, V] floatX, losses [n] fp32, targets [n], n, V, dloss_scale)
//     losses[r] = logsumexp(logits[r]) - logits[r, targets[r]]       (fp32 max / sum-exp)
//                 0 where targets[r] < 0 (ignored position)
//     if dloss_scale != 0: logits[r] is overwritten with
//                 dlogits[r] = dloss_scale * (softmax(logits[r]) - onehot(targets[r]))
//                 (all zeros for ignored rows); with dloss_scale == 0 the logits are left untouched.
//     Targets must be < V. One block per row; 16-byte vector loads when V is a multiple of the vector
//     width and the base is 16-byte aligned, scalar otherwise (odd V).
//   sum_losses(ctx, out_scalar (device fp32), losses [n], n): out = sum of losses, fixed order.
#pragma once
#include <math.h>
#include <stdint.h>
#include "cuda_common.cuh"

#define CE_THREADS 512

// (m, s) pairs of an online log-sum-exp: s = sum exp(x - m).
__device__ __forceinline__ void ce_merge(float& m, float& s, float m2, float s2) {
    float M = fmaxf(m, m2);
    if (M == -INFINITY) { m = M; s = 0.f; return; }
    s = s * expf(m - M) + s2 * expf(m2 - M);
    m = M;
}

template <int VEC>
__global__ void __launch_bounds__(CE_THREADS)
crossentropy_fused_kernel(floatX* logits, float* losses, const int* targets, int V, float dloss_scale) {
    __shared__ float red_m[CE_THREADS / 32], red_s[CE_THREADS / 32];
    __shared__ float sh_lse, sh_xt;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    floatX* x = logits + (size_t)blockIdx.x * V;
    const int tgt = targets[blockIdx.x];
    if (tgt < 0) {  // ignored: zero loss, zero gradient
        if (tid == 0) losses[blockIdx.x] = 0.f;
        if (dloss_scale != 0.f)
            for (int i = tid; i < V; i += CE_THREADS) x[i] = from_float<floatX>(0.f);
        return;
    }
    if (tid == 0) sh_xt = to_float(x[tgt]);  // read before any thread overwrites the row
    float m = -INFINITY, s = 0.f;
    if (VEC > 1) {
        const int nv = V / VEC;
        for (int iv = tid; iv < nv; iv += CE_THREADS) {
            int4 raw = ((const int4*)x)[iv];
            const floatX* e = (const floatX*)&raw;
            float lm = -INFINITY;
#pragma unroll
            for (int k = 0; k < VEC; k++) lm = fmaxf(lm, to_float(e[k]));
            float ls = 0.f;
#pragma unroll
            for (int k = 0; k < VEC; k++) ls += expf(to_float(e[k]) - lm);
            ce_merge(m, s, lm, ls);
        }
    } else {
        for (int i = tid; i < V; i += CE_THREADS) ce_merge(m, s, to_float(x[i]), 1.f);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        ce_merge(m, s, m2, s2);
    }
    if (lane == 0) { red_m[warp] = m; red_s[warp] = s; }
    __syncthreads();
    if (tid == 0) {
        float M = red_m[0], S = red_s[0];
        for (int w = 1; w < CE_THREADS / 32; w++) ce_merge(M, S, red_m[w], red_s[w]);
        float lse = M + logf(S);
        sh_lse = lse;
        losses[blockIdx.x] = lse - sh_xt;
    }
    __syncthreads();
    if (dloss_scale == 0.f) return;
    const float lse = sh_lse;
    if (VEC > 1) {
        const int nv = V / VEC;
        for (int iv = tid; iv < nv; iv += CE_THREADS) {
            int4 raw = ((const int4*)x)[iv];
            floatX* e = (floatX*)&raw;
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                int i = iv * VEC + k;
                float p = expf(to_float(e[k]) - lse);
                e[k] = from_float<floatX>(dloss_scale * (p - (i == tgt ? 1.f : 0.f)));
            }
            ((int4*)x)[iv] = raw;
        }
    } else {
        for (int i = tid; i < V; i += CE_THREADS) {
            float p = expf(to_float(x[i]) - lse);
            x[i] = from_float<floatX>(dloss_scale * (p - (i == tgt ? 1.f : 0.f)));
        }
    }
}

void crossentropy_fused(const GpuContext* ctx, floatX* logits, float* losses, const int* targets, int n, int V,
                        float dloss_scale) {
    if (n <= 0) return;
    constexpr int VEC = 16 / sizeof(floatX);
    if (V % VEC == 0 && ((uintptr_t)logits % 16) == 0)
        crossentropy_fused_kernel<VEC><<<n, CE_THREADS, 0, ctx->stream>>>(logits, losses, targets, V, dloss_scale);
    else
        crossentropy_fused_kernel<1><<<n, CE_THREADS, 0, ctx->stream>>>(logits, losses, targets, V, dloss_scale);
    cudaCheckLaunch("crossentropy_fused_kernel");
}

__global__ void __launch_bounds__(1024) sum_losses_kernel(float* out, const float* losses, int n) {
    __shared__ float red[1024];
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += 1024) s += losses[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int o = 512; o > 0; o >>= 1) {
        if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = red[0];
}

// *out_scalar (device) = sum of losses[0..n), in a fixed order (bitwise reproducible).
void sum_losses(const GpuContext* ctx, float* out_scalar, const float* losses, int n) {
    sum_losses_kernel<<<1, 1024, 0, ctx->stream>>>(out_scalar, losses, n);
    cudaCheckLaunch("sum_losses_kernel");
}
