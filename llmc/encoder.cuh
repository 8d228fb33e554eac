// encoder.cuh — token embedding lookup and its deterministic backward.
//   encoder_forward:  out[n, :] = emb[tokens[n], :]                    (tokens must be in [0, V))
//   encoder_backward: demb[v, :] += Σ_{n : tokens[n] = v} dout[n, :]   (fp32, no atomics)
// The backward sorts (token, row) pairs on the GPU with CUB's stable radix sort (so rows of each
// token come out in increasing n), then one block per distinct token sums its rows in that order
// in fp32 and adds the sum into demb once. Same inputs, same bits.
// Scratch (caller-provided, encoder_backward_scratch_bytes(N, V) bytes): row ids in/out, sorted
// tokens, CUB's temporary storage.
// A faster version would: split very frequent tokens' row lists into fixed-size chunks summed by
// several blocks (a second deterministic pass), and skip the sort when N is tiny.
#pragma once
#include <cub/cub.cuh>
#include "cuda_common.cuh"
#include "vec128.cuh"

template <int W>
__global__ void encoder_forward_kernel(floatX* out, const int* tokens, const floatX* emb, int N, int C) {
    int cw = C / W;  // W-chunks per row
    size_t total = (size_t)N * cw, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        int n = (int)(idx / cw), c = (int)(idx % cw) * W;
        const floatX* src = emb + (size_t)tokens[n] * C + c;
        floatX* dst = out + (size_t)n * C + c;
        if constexpr (W * sizeof(floatX) == 16) store128(dst, load128(src));
        else
#pragma unroll
            for (int k = 0; k < W; k++) dst[k] = src[k];
    }
}

static void encoder_forward(const GpuContext* ctx, floatX* out, const int* tokens, const floatX* emb, int N, int C) {
    if (N <= 0 || C <= 0) return;
    const int V = vec16<floatX>(), block = 256;
    if (C % V == 0 && is_aligned16(out) && is_aligned16(emb))
        encoder_forward_kernel<vec16<floatX>()><<<grid_for((size_t)N * C / V, block, ctx), block, 0, ctx->stream>>>(out, tokens, emb, N, C);
    else
        encoder_forward_kernel<1><<<grid_for((size_t)N * C, block, ctx), block, 0, ctx->stream>>>(out, tokens, emb, N, C);
    cudaCheckLaunch("encoder_forward_kernel");
}

static inline int encoder_key_bits(int V) {
    int bits = 1;
    while (bits < 31 && (1LL << bits) < (long long)V) bits++;
    return bits;
}
static inline size_t encoder_align256(size_t x) { return (x + 255) & ~(size_t)255; }

// Bytes of scratch encoder_backward needs for N tokens over a vocabulary of V.
static size_t encoder_backward_scratch_bytes(int N, int V) {
    size_t temp = 0;
    cudaCheck(cub::DeviceRadixSort::SortPairs(NULL, temp, (const int*)NULL, (int*)NULL, (const int*)NULL, (int*)NULL,
                                              N > 0 ? N : 1, 0, encoder_key_bits(V)));
    size_t ids = encoder_align256((size_t)(N > 0 ? N : 1) * sizeof(int));
    return 3 * ids + encoder_align256(temp);
}

__global__ void encoder_iota_kernel(int* x, int N) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) x[i] = i;
}

// Block b handles sorted position b if it starts a run of equal tokens: it sums dout rows of the
// run in order (W columns per thread per step) and adds the sums into demb[token].
template <int W>
__global__ void encoder_backward_kernel(float* demb, const floatX* dout, const int* sorted_tok, const int* sorted_row,
                                        int N, int C) {
    int p = blockIdx.x;
    int v = sorted_tok[p];
    if (p > 0 && sorted_tok[p - 1] == v) return;  // not the head of a run
    int end = p + 1;
    while (end < N && sorted_tok[end] == v) end++;
    float* dst = demb + (size_t)v * C;
    for (int c = threadIdx.x * W; c < C; c += blockDim.x * W) {
        float acc[W];
#pragma unroll
        for (int k = 0; k < W; k++) acc[k] = 0.0f;
        for (int q = p; q < end; q++) {
            float f[W];
            load_f<W>(f, dout + (size_t)sorted_row[q] * C + c);
#pragma unroll
            for (int k = 0; k < W; k++) acc[k] += f[k];
        }
#pragma unroll
        for (int k = 0; k < W; k++) dst[c + k] += acc[k];
    }
}

static void encoder_backward(const GpuContext* ctx, float* demb, const floatX* dout, const int* tokens, int N, int C,
                             int V, void* scratch, size_t scratch_bytes) {
    if (N <= 0 || C <= 0) return;
    size_t need = encoder_backward_scratch_bytes(N, V);
    if (!scratch || scratch_bytes < need) {
        fprintf(stderr, "encoder_backward: scratch of %zu bytes given, %zu needed (N=%d V=%d)\n", scratch_bytes, need, N, V);
        exit(1);
    }
    size_t ids = encoder_align256((size_t)N * sizeof(int));
    char* s = (char*)scratch;
    int* rows_in = (int*)s;
    int* rows_out = (int*)(s + ids);
    int* toks_out = (int*)(s + 2 * ids);
    void* temp = s + 3 * ids;
    size_t temp_bytes = need - 3 * ids;
    encoder_iota_kernel<<<ceil_div(N, 256), 256, 0, ctx->stream>>>(rows_in, N);
    cudaCheckLaunch("encoder_iota_kernel");
    cudaCheck(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, tokens, toks_out, rows_in, rows_out, N, 0,
                                              encoder_key_bits(V), ctx->stream));
    const int block = 256;
    if (C % vec16<floatX>() == 0 && is_aligned16(dout))
        encoder_backward_kernel<vec16<floatX>()><<<N, block, 0, ctx->stream>>>(demb, dout, toks_out, rows_out, N, C);
    else
        encoder_backward_kernel<1><<<N, block, 0, ctx->stream>>>(demb, dout, toks_out, rows_out, N, C);
    cudaCheckLaunch("encoder_backward_kernel");
}
