// swiglu.cuh — SwiGLU activation of the MLP, element-wise over n values, matching llmc/cpu/ops.h:
//   forward:  act = silu(gate) * up = gate * sigmoid(gate) * up
//   backward: dup = dact * silu(gate); dgate = dact * up * s * (1 + gate * (1 - s)), s = sigmoid(gate)
//             (both OVERWRITTEN, unlike the CPU reference which accumulates)
// fp32 math (precise expf), floatX in/out, 16-byte accesses when n and the pointers allow.
// A faster version would fuse into the gate/up matmul epilogue (forward) and the down-proj dgrad
// epilogue (backward), or recompute act in the backward instead of storing it.
#pragma once
#include "cuda_common.cuh"
#include "vec128.cuh"

__device__ __forceinline__ float swiglu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <int W>
__global__ void swiglu_forward_kernel(floatX* act, const floatX* gate, const floatX* up, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x * W;
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * W; i < n; i += stride) {
        float g[W], u[W], a[W];
        load_f<W>(g, gate + i);
        load_f<W>(u, up + i);
#pragma unroll
        for (int k = 0; k < W; k++) a[k] = g[k] * swiglu_sigmoid(g[k]) * u[k];
        store_f<W>(act + i, a);
    }
}

template <int W>
__global__ void swiglu_backward_kernel(floatX* dgate, floatX* dup, const floatX* dact, const floatX* gate,
                                       const floatX* up, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x * W;
    for (size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * W; i < n; i += stride) {
        float g[W], u[W], d[W], dg[W], du[W];
        load_f<W>(g, gate + i);
        load_f<W>(u, up + i);
        load_f<W>(d, dact + i);
#pragma unroll
        for (int k = 0; k < W; k++) {
            float s = swiglu_sigmoid(g[k]), silu = g[k] * s;
            du[k] = d[k] * silu;
            dg[k] = d[k] * u[k] * s * (1.0f + g[k] * (1.0f - s));
        }
        store_f<W>(dgate + i, dg);
        store_f<W>(dup + i, du);
    }
}

static void swiglu_forward(const GpuContext* ctx, floatX* act, const floatX* gate, const floatX* up, size_t n) {
    if (n == 0) return;
    const int V = vec16<floatX>(), block = 256;
    if (n % V == 0 && is_aligned16(act) && is_aligned16(gate) && is_aligned16(up))
        swiglu_forward_kernel<vec16<floatX>()><<<grid_for(n / V, block, ctx), block, 0, ctx->stream>>>(act, gate, up, n);
    else
        swiglu_forward_kernel<1><<<grid_for(n, block, ctx), block, 0, ctx->stream>>>(act, gate, up, n);
    cudaCheckLaunch("swiglu_forward_kernel");
}

static void swiglu_backward(const GpuContext* ctx, floatX* dgate, floatX* dup, const floatX* dact, const floatX* gate,
                            const floatX* up, size_t n) {
    if (n == 0) return;
    const int V = vec16<floatX>(), block = 256;
    if (n % V == 0 && is_aligned16(dgate) && is_aligned16(dup) && is_aligned16(dact) && is_aligned16(gate) &&
        is_aligned16(up))
        swiglu_backward_kernel<vec16<floatX>()><<<grid_for(n / V, block, ctx), block, 0, ctx->stream>>>(dgate, dup, dact, gate, up, n);
    else
        swiglu_backward_kernel<1><<<grid_for(n, block, ctx), block, 0, ctx->stream>>>(dgate, dup, dact, gate, up, n);
    cudaCheckLaunch("swiglu_backward_kernel");
}
