// elementwise.cuh — small element-wise launchers: residual add, floatX <-> fp32 copies, zero fill.
// All element-wise (deterministic), 16-byte accesses when n and the pointers allow.
#pragma once
#include "cuda_common.cuh"
#include "vec128.cuh"

template <int W>
__global__ void residual_add_kernel(floatX* out, const floatX* a, const floatX* b, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x * W;
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * W; i < n; i += stride) {
        float fa[W], fb[W];
        load_f<W>(fa, a + i);
        load_f<W>(fb, b + i);
#pragma unroll
        for (int k = 0; k < W; k++) fa[k] += fb[k];
        store_f<W>(out + i, fa);
    }
}
// out = a + b (fp32 add, rounded to floatX). out may alias a or b (each element is read before it
// is written by the same thread).
static void residual_add(const GpuContext* ctx, floatX* out, const floatX* a, const floatX* b, size_t n) {
    if (n == 0) return;
    const int V = vec16<floatX>(), block = 256;
    if (n % V == 0 && is_aligned16(out) && is_aligned16(a) && is_aligned16(b))
        residual_add_kernel<vec16<floatX>()><<<grid_for(n / V, block, ctx), block, 0, ctx->stream>>>(out, a, b, n);
    else
        residual_add_kernel<1><<<grid_for(n, block, ctx), block, 0, ctx->stream>>>(out, a, b, n);
    cudaCheckLaunch("residual_add_kernel");
}

template <int W, class TIn, class TOut>
__global__ void convert_kernel(TOut* dst, const TIn* src, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x * W;
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * W; i < n; i += stride) {
        float f[W];
        load_f<W>(f, src + i);
        store_f<W>(dst + i, f);
    }
}
template <class TIn, class TOut>
static void convert_launch(const GpuContext* ctx, TOut* dst, const TIn* src, size_t n) {
    if (n == 0) return;
    const int block = 256;
    if (n % 4 == 0 && is_aligned16(dst) && is_aligned16(src) && (sizeof(TIn) == 4 || ((uintptr_t)src & 7) == 0) &&
        (sizeof(TOut) == 4 || ((uintptr_t)dst & 7) == 0))
        convert_kernel<4, TIn, TOut><<<grid_for(n / 4, block, ctx), block, 0, ctx->stream>>>(dst, src, n);
    else
        convert_kernel<1, TIn, TOut><<<grid_for(n, block, ctx), block, 0, ctx->stream>>>(dst, src, n);
    cudaCheckLaunch("convert_kernel");
}
// dst (fp32) = src (floatX), exact.
static void floatX_to_float(const GpuContext* ctx, float* dst, const floatX* src, size_t n) {
    convert_launch<floatX, float>(ctx, dst, src, n);
}
// dst (floatX) = src (fp32), round to nearest even (no stochastic rounding).
static void float_to_floatX(const GpuContext* ctx, floatX* dst, const float* src, size_t n) {
    convert_launch<float, floatX>(ctx, dst, src, n);
}
// x[0..n) = 0.0f (all-zero bits).
static void fill_zero_float(const GpuContext* ctx, float* x, size_t n) {
    if (n) cudaCheck(cudaMemsetAsync(x, 0, n * sizeof(float), ctx->stream));
}
