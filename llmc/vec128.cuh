// vec128.cuh — small device helpers shared by the element-wise / reduction kernels of llmc/:
// 16-byte packed loads and stores (llm.c's Packed128), W-wide float loads that pick the 16-byte
// path at compile time, and deterministic warp/block sums (fixed reduction trees, no atomics).
#pragma once
#include <stdint.h>
#include <type_traits>
#include "cuda_common.cuh"

// 16 bytes of T, loaded/stored with one 128-bit instruction (LDG.128 / STG.128).
template <class T>
struct alignas(16) Packed128 {
    static constexpr int size = 16 / (int)sizeof(T);
    T v[size];
    __device__ __forceinline__ T& operator[](int i) { return v[i]; }
    __device__ __forceinline__ const T& operator[](int i) const { return v[i]; }
};
template <class T>
__device__ __forceinline__ Packed128<T> load128(const T* p) {
    Packed128<T> r;
    *reinterpret_cast<int4*>(&r) = *reinterpret_cast<const int4*>(p);
    return r;
}
// Streaming (evict-first) variants for data read or written exactly once.
template <class T>
__device__ __forceinline__ Packed128<T> load128cs(const T* p) {
    Packed128<T> r;
    *reinterpret_cast<int4*>(&r) = __ldcs(reinterpret_cast<const int4*>(p));
    return r;
}
template <class T>
__device__ __forceinline__ void store128(T* p, const Packed128<T>& v) {
    *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(&v);
}
template <class T>
__device__ __forceinline__ void store128cs(T* p, const Packed128<T>& v) {
    __stcs(reinterpret_cast<int4*>(p), *reinterpret_cast<const int4*>(&v));
}

// W consecutive elements of T as floats. W * sizeof(T) == 16, 8 or 4 uses one 128-, 64- or 32-bit
// access (p must be aligned to that size); any other W uses scalar accesses.
template <int W, class T>
__device__ __forceinline__ void load_f(float (&f)[W], const T* p) {
    if constexpr (W * sizeof(T) == 16) {
        Packed128<T> v = load128(p);
#pragma unroll
        for (int k = 0; k < W; k++) f[k] = to_float(v[k]);
    } else if constexpr (W * sizeof(T) == 8 || W * sizeof(T) == 4) {
        using V = typename std::conditional<W * sizeof(T) == 8, uint2, uint32_t>::type;
        union { V v; T e[W]; } u;
        u.v = *reinterpret_cast<const V*>(p);
#pragma unroll
        for (int k = 0; k < W; k++) f[k] = to_float(u.e[k]);
    } else {
#pragma unroll
        for (int k = 0; k < W; k++) f[k] = to_float(p[k]);
    }
}
template <int W, class T>
__device__ __forceinline__ void store_f(T* p, const float (&f)[W]) {
    if constexpr (W * sizeof(T) == 16) {
        Packed128<T> v;
#pragma unroll
        for (int k = 0; k < W; k++) v[k] = from_float<T>(f[k]);
        store128(p, v);
    } else if constexpr (W * sizeof(T) == 8 || W * sizeof(T) == 4) {
        using V = typename std::conditional<W * sizeof(T) == 8, uint2, uint32_t>::type;
        union { V v; T e[W]; } u;
#pragma unroll
        for (int k = 0; k < W; k++) u.e[k] = from_float<T>(f[k]);
        *reinterpret_cast<V*>(p) = u.v;
    } else {
#pragma unroll
        for (int k = 0; k < W; k++) p[k] = from_float<T>(f[k]);
    }
}

// Elements per 16 bytes of T (8 for bf16, 4 for fp32).
template <class T>
constexpr int vec16() { return 16 / (int)sizeof(T); }

static inline int is_aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }

// Butterfly warp sum: a fixed tree, so bitwise reproducible run to run.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// Block sum in a fixed order (warp sums, then warp 0 sums the per-warp values); every thread gets
// the result. smem: >= 32 floats. blockDim.x must be a multiple of 32. Ends with a barrier, so
// smem can be reused right after.
__device__ __forceinline__ float block_sum(float v, float* smem) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nwarps ? smem[lane] : 0.0f;
        t = warp_sum(t);
        if (lane == 0) smem[32] = t;
    }
    __syncthreads();
    float r = smem[32];
    __syncthreads();
    return r;
}

// Grid size for a grid-stride loop over `work` items with `block` threads: enough blocks to fill the
// GPU a few times, never more than needed.
static inline int grid_for(size_t work, int block, const GpuContext* ctx) {
    size_t need = ceil_div_sz(work ? work : 1, (size_t)block);
    size_t cap = (size_t)(ctx->sm_count > 0 ? ctx->sm_count : 132) * 16;
    return (int)(need < cap ? need : cap);
}
