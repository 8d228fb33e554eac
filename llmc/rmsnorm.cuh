// rmsnorm.cuh — RMSNorm over the last dim C, matching llmc/cpu/ops.h:
//   forward:  rstd[n] = 1 / sqrt(mean(x[n]^2) + eps) (fp32, saved), out = x * rstd * w
//   backward: with nv = x * rstd, dn = dy * w:
//             dinp += rstd * (dn - nv * mean(dn * nv))   (ACCUMULATES into the residual gradient)
//             dweight += Σ_n dy * nv                       (fp32; NULL = frozen weight)
// weight may be NULL (no scale). All statistics in fp32. Deterministic: fixed reduction trees and a
// two-pass dweight reduction (per-block partial rows in ctx->workspace, then a column sum in block
// order); the split depends only on N, C and the workspace size.
//
// Layout of the work: forward = one warp per row (16-byte loads when C and the pointers allow);
// backward = one block of 256 threads per chunk of rows, each thread owning fixed columns so that
// its dweight partial sums live in shared memory without any atomics.
// A faster version would: keep the row in registers between the two passes for C <= 8192 (one read
// of x/dy instead of two), fuse the residual add into the forward (llm.c's fused_residual_forward),
// and fuse the dweight column sum into the last block (threadfence + counter).
#pragma once
#include "cuda_common.cuh"
#include "vec128.cuh"

template <int W>
__global__ void rmsnorm_forward_kernel(floatX* out, float* rstd, const floatX* inp, const floatX* weight, int N, int C,
                                       float eps) {
    int warps = blockDim.x >> 5;
    int row = blockIdx.x * warps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    const floatX* x = inp + (size_t)row * C;
    float ss = 0.0f;
    for (int c = lane * W; c < C; c += 32 * W) {
        float f[W];
        load_f<W>(f, x + c);
#pragma unroll
        for (int k = 0; k < W; k++) ss += f[k] * f[k];
    }
    ss = warp_sum(ss);
    // Same arithmetic as the CPU reference: float mean + eps, then 1/sqrt in double, rounded to float.
    float t = ss / (float)C + eps;
    float r = (float)(1.0 / sqrt((double)t));
    if (lane == 0 && rstd) rstd[row] = r;
    floatX* o = out + (size_t)row * C;
    for (int c = lane * W; c < C; c += 32 * W) {
        float f[W], w[W];
        load_f<W>(f, x + c);
        if (weight) load_f<W>(w, weight + c);
#pragma unroll
        for (int k = 0; k < W; k++) f[k] = f[k] * r * (weight ? w[k] : 1.0f);
        store_f<W>(o + c, f);
    }
}

// out[N,C] = RMSNorm(inp) * weight; rstd[N] (fp32) may be NULL (inference).
static void rmsnorm_forward(const GpuContext* ctx, floatX* out, float* rstd, const floatX* inp, const floatX* weight,
                            int N, int C, float eps) {
    if (N <= 0) return;
    const int block = 256, rows_per_block = block / 32;
    const int V = vec16<floatX>();
    int grid = ceil_div(N, rows_per_block);
    if (C % V == 0 && is_aligned16(out) && is_aligned16(inp) && (!weight || is_aligned16(weight)))
        rmsnorm_forward_kernel<vec16<floatX>()><<<grid, block, 0, ctx->stream>>>(out, rstd, inp, weight, N, C, eps);
    else
        rmsnorm_forward_kernel<1><<<grid, block, 0, ctx->stream>>>(out, rstd, inp, weight, N, C, eps);
    cudaCheckLaunch("rmsnorm_forward_kernel");
}

// One block per chunk of rows [blockIdx.x*rows_per, ...). Thread t owns columns
// c = (t + k*blockDim.x)*W .. +W-1, and accumulates dweight for them in dw_smem (C floats),
// which is written to partial[blockIdx.x, :] at the end (if partial != NULL).
template <int W>
__global__ void rmsnorm_backward_kernel(floatX* dinp, float* partial, const floatX* dout, const floatX* inp,
                                        const floatX* weight, const float* rstd, int N, int C, int rows_per) {
    extern __shared__ float dw_smem[];  // [C] when partial != NULL
    __shared__ float red[33];
    int r0 = blockIdx.x * rows_per, r1 = min(N, r0 + rows_per);
    if (partial)
        for (int c = threadIdx.x * W; c < C; c += blockDim.x * W)
#pragma unroll
            for (int k = 0; k < W; k++) dw_smem[c + k] = 0.0f;
    for (int row = r0; row < r1; row++) {
        const floatX* x = inp + (size_t)row * C;
        const floatX* dy = dout + (size_t)row * C;
        floatX* dx = dinp + (size_t)row * C;
        float r = rstd[row];
        float dot = 0.0f;
        for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
            float fx[W], fdy[W], fw[W];
            load_f<W>(fx, x + c);
            load_f<W>(fdy, dy + c);
            if (weight) load_f<W>(fw, weight + c);
#pragma unroll
            for (int k = 0; k < W; k++) {
                float nv = fx[k] * r, dn = fdy[k] * (weight ? fw[k] : 1.0f);
                dot += dn * nv;
            }
        }
        dot = block_sum(dot, red) / (float)C;
        for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
            float fx[W], fdy[W], fw[W], fdx[W];
            load_f<W>(fx, x + c);
            load_f<W>(fdy, dy + c);
            load_f<W>(fdx, dx + c);
            if (weight) load_f<W>(fw, weight + c);
#pragma unroll
            for (int k = 0; k < W; k++) {
                float nv = fx[k] * r, dn = fdy[k] * (weight ? fw[k] : 1.0f);
                fdx[k] += r * (dn - nv * dot);
                if (partial) dw_smem[c + k] += fdy[k] * nv;
            }
            store_f<W>(dx + c, fdx);
        }
    }
    if (partial)
        for (int c = threadIdx.x * W; c < C; c += blockDim.x * W)
#pragma unroll
            for (int k = 0; k < W; k++) partial[(size_t)blockIdx.x * C + c + k] = dw_smem[c + k];
}

// dweight[c] += Σ_b partial[b, c], blocks in order.
__global__ void rmsnorm_dweight_final_kernel(float* dweight, const float* partial, int C, int nblocks) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int b = 0; b < nblocks; b++) s += partial[(size_t)b * C + c];
    dweight[c] += s;
}

// dinp[N,C] += RMSNorm backward; dweight[C] += (fp32, NULL = frozen). Uses ctx->workspace for the
// dweight partials (nblocks * C floats, nblocks <= 1024 shrunk to fit).
static void rmsnorm_backward(const GpuContext* ctx, floatX* dinp, float* dweight, const floatX* dout, const floatX* inp,
                             const floatX* weight, const float* rstd, int N, int C) {
    if (N <= 0) return;
    const int block = 256;
    int nblocks = ceil_div(N, 4);  // >= 4 rows per block (a block does one row at a time)
    if (nblocks > 1024) nblocks = 1024;
    float* partial = NULL;
    if (dweight) {
        while (nblocks > 1 && (size_t)nblocks * C * sizeof(float) > ctx->workspace_size) nblocks--;
        if ((size_t)C * sizeof(float) > ctx->workspace_size) {
            fprintf(stderr, "rmsnorm_backward: C=%d needs %zu bytes of workspace\n", C, (size_t)C * 4);
            exit(1);
        }
        partial = (float*)ctx->workspace;
    }
    int rows_per = ceil_div(N, nblocks);
    nblocks = ceil_div(N, rows_per);
    size_t smem = dweight ? (size_t)C * sizeof(float) : 0;
    const int V = vec16<floatX>();
    int vec = C % V == 0 && is_aligned16(dinp) && is_aligned16(dout) && is_aligned16(inp) &&
              (!weight || is_aligned16(weight));
    if (vec) {
        auto k = rmsnorm_backward_kernel<vec16<floatX>()>;
        if (smem > 48 * 1024) cudaCheck(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        k<<<nblocks, block, smem, ctx->stream>>>(dinp, partial, dout, inp, weight, rstd, N, C, rows_per);
    } else {
        auto k = rmsnorm_backward_kernel<1>;
        if (smem > 48 * 1024) cudaCheck(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        k<<<nblocks, block, smem, ctx->stream>>>(dinp, partial, dout, inp, weight, rstd, N, C, rows_per);
    }
    cudaCheckLaunch("rmsnorm_backward_kernel");
    if (dweight) {
        rmsnorm_dweight_final_kernel<<<ceil_div(C, 256), 256, 0, ctx->stream>>>(dweight, partial, C, nblocks);
        cudaCheckLaunch("rmsnorm_dweight_final_kernel");
    }
}
