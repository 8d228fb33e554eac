// write_gate.cuh — the bounded layer's write gate (docs/spec.md §1.2): one scalar per token,
//   g[t] = sigmoid(x[t] · w + b)        (write_policy gated)      g[t] = 1   (write_policy none)
// and its backward. x is the attention input (the normed hidden state, [N, D] floatX), w = write_proj
// weight [D] (a [1, D] matrix), b its bias [1]. The gate is kept in fp32 (the bank routing thresholds
// 0.10 / 0.05 compare it, docs/spec.md §3): the dot product is accumulated in fp32 by one warp per token,
// rather than a cuBLASLt product with one output column whose result would be rounded to floatX.
//
// Backward (only needed when gradients reach the gates, i.e. detach_evicted off): with dg[t] the
// gradient w.r.t. g[t] (from the bank scan's reverse pass), dz[t] = dg[t] g[t] (1 - g[t]);
//   dx[t] += dz[t] w          dw += sum_t dz[t] x[t]          db += sum_t dz[t]
// The column sums run over fixed row chunks, then a fixed-order sum: bitwise reproducible.
#pragma once
#include "cuda_common.cuh"
#include "vec128.cuh"

#define WG_ROWS_PER_CHUNK 256  // rows of one dw partial

__global__ void write_gate_forward_kernel(float* gate, const floatX* x, const floatX* w, const floatX* b, int N, int D, int gated) {
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (t >= N) return;
    float s = 0.f;
    if (gated)
        for (int i = lane; i < D; i += 32) s += to_float(x[(size_t)t * D + i]) * to_float(w[i]);
    s = warp_sum(s);
    if (lane == 0) gate[t] = gated ? 1.0f / (1.0f + expf(-(s + to_float(b[0])))) : 1.0f;
}
static void write_gate_forward(const GpuContext* ctx, float* gate, const floatX* x, const floatX* w, const floatX* b, int N, int D,
                               int gated) {
    if (N == 0) return;
    write_gate_forward_kernel<<<(unsigned)ceil_div(N, 8), 256, 0, ctx->stream>>>(gate, x, w, b, N, D, gated);
    cudaCheckLaunch("write_gate_forward_kernel");
}

// dz[t] = dg[t] g (1 - g) in place; dx[t] += dz[t] w.
__global__ void write_gate_dx_kernel(floatX* dx, float* dz, const float* dgate, const float* gate, const floatX* w, int N, int D) {
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (t >= N) return;
    const float g = gate[t], z = dgate[t] * g * (1.0f - g);
    if (lane == 0) dz[t] = z;
    if (dx)
        for (int i = lane; i < D; i += 32) dx[(size_t)t * D + i] = from_float<floatX>(to_float(dx[(size_t)t * D + i]) + z * to_float(w[i]));
}
// part[c][i] = sum over rows of chunk c of dz[t] x[t][i]; part[c][D] = sum of dz over the chunk.
__global__ void write_gate_dw_part_kernel(float* part, const float* dz, const floatX* x, int N, int D) {
    const int c = blockIdx.y, i = blockIdx.x * blockDim.x + threadIdx.x;
    const int t0 = c * WG_ROWS_PER_CHUNK, t1 = min(N, t0 + WG_ROWS_PER_CHUNK);
    if (i > D) return;
    float s = 0.f;
    for (int t = t0; t < t1; t++) s += dz[t] * (i < D ? to_float(x[(size_t)t * D + i]) : 1.0f);
    part[(size_t)c * (D + 1) + i] = s;
}
__global__ void write_gate_dw_sum_kernel(float* dw, float* db, const float* part, int chunks, int D) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i > D) return;
    float s = 0.f;
    for (int c = 0; c < chunks; c++) s += part[(size_t)c * (D + 1) + i];
    if (i < D) { if (dw) dw[i] += s; }
    else if (db) db[0] += s;
}
static size_t write_gate_scratch_bytes(int N, int D) {
    return ((size_t)N + (size_t)ceil_div(N, WG_ROWS_PER_CHUNK) * (D + 1)) * sizeof(float);
}
// dx may be NULL (no input gradient), dw / db NULL (frozen). scratch: write_gate_scratch_bytes.
static void write_gate_backward(const GpuContext* ctx, floatX* dx, float* dw, float* db, const float* dgate, const float* gate,
                                const floatX* x, const floatX* w, int N, int D, void* scratch) {
    if (N == 0) return;
    float* dz = (float*)scratch;
    float* part = dz + N;
    write_gate_dx_kernel<<<(unsigned)ceil_div(N, 8), 256, 0, ctx->stream>>>(dx, dz, dgate, gate, w, N, D);
    cudaCheckLaunch("write_gate_dx_kernel");
    if (!dw && !db) return;
    const int chunks = ceil_div(N, WG_ROWS_PER_CHUNK);
    write_gate_dw_part_kernel<<<dim3(ceil_div(D + 1, 256), chunks), 256, 0, ctx->stream>>>(part, dz, x, N, D);
    cudaCheckLaunch("write_gate_dw_part_kernel");
    write_gate_dw_sum_kernel<<<ceil_div(D + 1, 256), 256, 0, ctx->stream>>>(dw, db, part, chunks, D);
    cudaCheckLaunch("write_gate_dw_sum_kernel");
}

// dst[i] = dst[i] + add[i] (floatX += fp32; the bank scan's token gradients into dk / dv).
__global__ void add_float_into_floatX_kernel(floatX* dst, const float* add, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = from_float<floatX>(to_float(dst[i]) + add[i]);
}
static void add_float_into_floatX(const GpuContext* ctx, floatX* dst, const float* add, size_t n) {
    if (n == 0) return;
    add_float_into_floatX_kernel<<<(unsigned)ceil_div_sz(n, 256), 256, 0, ctx->stream>>>(dst, add, n);
    cudaCheckLaunch("add_float_into_floatX_kernel");
}
