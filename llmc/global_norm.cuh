// global_norm.cuh — squared L2 norm of an fp32 gradient buffer into a device scalar, for clipping.
//   global_norm_squared: *out = (accumulate ? *out : 0) + Σ x[i]^2   (fp32)
//   global_norm_read:    copies the device scalar to the host (synchronizes ctx->stream)
// Deterministic two-pass sum: pass 1 gives each of G blocks a fixed grid-stride slice (G depends only
// on n), summed by a fixed tree into partial[block] (in ctx->workspace); pass 2, one block, sums the
// G partials in a fixed tree. Same n, same bits, on any GPU.
// Call it once per tensor with accumulate = 1 after the first (or once over a contiguous gradient
// buffer). Under ZeRO each rank sums its shard, then the scalars are all-reduced.
// A faster version would fuse all tensors into one launch (a table of pointers) and the final pass
// into the last block.
#pragma once
#include "cuda_common.cuh"
#include "vec128.cuh"

#define GLOBAL_NORM_BLOCK 512
#define GLOBAL_NORM_MAX_BLOCKS 1024

__global__ void global_norm_partial_kernel(float* partial, const float* x, size_t n) {
    __shared__ float red[33];
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;  // four independent loads in flight
    for (; i + 3 * stride < n; i += 4 * stride) {
        float v0 = x[i], v1 = x[i + stride], v2 = x[i + 2 * stride], v3 = x[i + 3 * stride];
        a0 += v0 * v0; a1 += v1 * v1; a2 += v2 * v2; a3 += v3 * v3;
    }
    for (; i < n; i += stride) { float v = x[i]; a0 += v * v; }
    float s = block_sum((a0 + a1) + (a2 + a3), red);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void global_norm_final_kernel(float* out, const float* partial, int nparts, int accumulate) {
    __shared__ float red[33];
    float s = 0.0f;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partial[i];
    s = block_sum(s, red);
    if (threadIdx.x == 0) *out = (accumulate ? *out : 0.0f) + s;
}

static void global_norm_squared(const GpuContext* ctx, float* out, const float* x, size_t n, int accumulate) {
    size_t g = ceil_div_sz(n ? n : 1, (size_t)GLOBAL_NORM_BLOCK * 8);
    int nblocks = (int)(g < GLOBAL_NORM_MAX_BLOCKS ? g : GLOBAL_NORM_MAX_BLOCKS);
    float* partial = (float*)ctx->workspace;
    global_norm_partial_kernel<<<nblocks, GLOBAL_NORM_BLOCK, 0, ctx->stream>>>(partial, x, n);
    cudaCheckLaunch("global_norm_partial_kernel");
    global_norm_final_kernel<<<1, 1024, 0, ctx->stream>>>(out, partial, nblocks, accumulate);
    cudaCheckLaunch("global_norm_final_kernel");
}

// Reads a device scalar (e.g. the squared norm) to the host; waits for ctx->stream.
static float global_norm_read(const GpuContext* ctx, const float* dev_scalar) {
    float h = 0.0f;
    cudaCheck(cudaMemcpyAsync(&h, dev_scalar, sizeof(float), cudaMemcpyDeviceToHost, ctx->stream));
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    return h;
}
