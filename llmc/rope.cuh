// rope.cuh — rotary position embedding, in place on x[N, n_heads*Dh]; row n has position
// pos0 + n % T (rows are T-token sequences laid end to end). Matches llmc/cpu/ops.h rope_tables +
// rope_apply:
//   inv_freq[i] = 1.0f / powf((float)base, (float)(2i)/(float)Dh)     (fp32, computed on the host
//                  with the same libm call as the CPU reference, passed to the kernel by value)
//   ang = (float)pos * inv_freq[i], cos/sin with the precise cosf/sinf (never __sinf/__cosf: angles
//   reach 8192 rad and more; the fast intrinsics lose all accuracy there). Do not build with
//   --use_fast_math.
//   bf16_positions = 1 emulates the reference's defect (PROTOCOL §8.2): position, inv_freq (from a
//   double pow), the angle and the cos/sin tables rounded to bf16.
//   x[a] = xa*c - xb*s, x[b] = xb*c + xa*s with s = sign*sin; sign = -1 is the backward (the inverse
//   rotation, applied to the gradient).
// Pairs: ROPE_HALF_SPLIT (i, i+Dh/2) as HF Llama/Mistral, ROPE_INTERLEAVED (2i, 2i+1).
// One thread per (row, pair i): it computes cos/sin once and rotates that pair in every head.
// Element-wise, hence deterministic. In the BF16 build the rotation is computed in fp32 and rounded.
// A faster version would: handle 4-8 pairs per thread with 16-byte accesses, fuse q and k (one
// sincos for both), or fuse RoPE into the QKV matmul epilogue / the attention kernel's Q/K loads.
#pragma once
#include <math.h>
#include "cuda_common.cuh"
#include "config.h"

#define ROPE_MAX_HALF 256  // Dh <= 512

typedef struct {
    float inv_freq[ROPE_MAX_HALF];
} RopeFreqs;

__device__ __forceinline__ float rope_round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

__global__ void rope_kernel(floatX* x, int N, int T, long long pos0, int n_heads, int Dh, int interleaved,
                            int bf16_positions, float sign, const RopeFreqs freqs) {
    int half = Dh >> 1;
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)N * half) return;
    int n = (int)(idx / half), i = (int)(idx % half);
    long long pos = pos0 + (long long)(n % T);
    float f = freqs.inv_freq[i], c, s;
    if (bf16_positions) {
        float p = rope_round_bf16((float)pos);
        float ang = rope_round_bf16(p * f);
        c = rope_round_bf16(cosf(ang));
        s = rope_round_bf16(sinf(ang));
    } else {
        float ang = __fmul_rn((float)pos, f);
        c = cosf(ang);
        s = sinf(ang);
    }
    s = sign * s;
    int a = interleaved ? 2 * i : i;
    int b = interleaved ? 2 * i + 1 : i + half;
    floatX* row = x + (size_t)n * n_heads * Dh;
    for (int h = 0; h < n_heads; h++) {
        floatX* xh = row + (size_t)h * Dh;
        float xa = to_float(xh[a]), xb = to_float(xh[b]);
        // __fmul_rn keeps the compiler from contracting into FMAs: same rounding as the CPU reference.
        xh[a] = from_float<floatX>(__fmul_rn(xa, c) - __fmul_rn(xb, s));
        xh[b] = from_float<floatX>(__fmul_rn(xb, c) + __fmul_rn(xa, s));
    }
}

static void rope_apply(const GpuContext* ctx, floatX* x, int N, int T, long long pos0, int n_heads, int Dh,
                       RopeLayout layout, double base, int bf16_positions, int sign) {
    if (N <= 0 || n_heads <= 0) return;
    if (Dh <= 0 || Dh % 2 || Dh / 2 > ROPE_MAX_HALF || T <= 0) {
        fprintf(stderr, "rope_apply: unsupported Dh=%d / T=%d (Dh even, <= %d)\n", Dh, T, 2 * ROPE_MAX_HALF);
        exit(1);
    }
    RopeFreqs fr;
    int half = Dh / 2;
    for (int i = 0; i < half; i++) {
        if (bf16_positions) fr.inv_freq[i] = round_bf16((float)(1.0 / pow(base, (double)(2 * i) / Dh)));
        else fr.inv_freq[i] = 1.0f / powf((float)base, (float)(2 * i) / (float)Dh);
    }
    for (int i = half; i < ROPE_MAX_HALF; i++) fr.inv_freq[i] = 0.0f;
    long long total = (long long)N * half;
    int block = 256;
    unsigned grid = (unsigned)((total + block - 1) / block);
    rope_kernel<<<grid, block, 0, ctx->stream>>>(x, N, T, pos0, n_heads, Dh, layout == ROPE_INTERLEAVED,
                                                 bf16_positions, sign < 0 ? -1.0f : 1.0f, fr);
    cudaCheckLaunch("rope_kernel");
}
