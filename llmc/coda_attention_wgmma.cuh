// coda_attention_wgmma.cuh — Hopper (sm_90a) versions of the three tensor-core attention kernels of
// coda_attention_mma.cuh: the same blocks, tiles, math, saved tensors and outputs, with the matrix
// products on wgmma (warpgroup MMA) instead of per-warp mma.sync.
//
// Why: with mma.sync every warp owns 16 rows and loads each shared K/V (or Q/dO) fragment itself, so
// the kernels of coda_attention_mma.cuh are bound by shared-memory bandwidth (~150-210 TFLOP/s on an
// H100). A warpgroup (4 consecutive warps, 128 threads) issues one m64nNk16 product whose B operand
// (and A, when it is in shared memory) the tensor cores read from shared memory once for all 64 rows.
//
// Mapping: in both the forward and the dQ kernel a warpgroup is one stream's 64 query rows (warp w of
// the group owns rows 16w..16w+15 exactly as in the mma.sync kernels, so the soft-max, masking and
// epilogue code is unchanged); in the dK/dV kernel the single warpgroup is the block's 64 keys. The
// first product of each step reads both operands from shared memory (S = Q K^T, dP = dO V^T,
// S^T = K Q^T, dP^T = V dO^T: "K-major", the head dim contiguous); the second one takes the
// probabilities / dS from registers (the accumulator layout of a warp's 16 rows is the A-fragment
// layout, as with mma.sync) and its B operand "MN-major" from the same tiles (V, K, dO, Q stored
// [rows][head dim]: N contiguous, the transpose bit set).
//
// Shared-memory tiles use the layout the wgmma descriptors call 128-byte swizzle: a [R][DH] tile is
// DH/64 column blocks of [R][64] (128-byte rows), and the 16-byte chunk c of row r sits at chunk
// c ^ (r & 7). Tiles start at 1024-byte boundaries (the swizzle pattern repeats every 8 rows).
// K-major descriptors step through the head dim 32 bytes at a time inside a column block; MN-major
// ones step 16 rows (2048 bytes) and name the next column block as the leading-dimension offset.
//
// The forward and the dQ kernel are software-pipelined within the warpgroup (FlashAttention-3's
// intra-warpgroup overlap): the CUDA-core work on key tile t runs while the tensor cores finish the
// second product of tile t-1, with three K/V stages in shared memory.
//
// Every async product is fenced as the PTX ISA asks: wgmma.fence after ordinary writes to the
// accumulator / A registers, fence.proxy.async after the cp.async writes of a tile and before the
// barrier that publishes it, commit + wait before the accumulators are read.
#pragma once

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define CA_WGMMA_DEVICE 1
#endif

// ---------------------------------------------------------------------------------------------
// tiles and descriptors

template <int R>
__device__ __forceinline__ int ca_wsw(int r, int c) {  // element (r, c) of a [R][DH] wgmma tile
    return (c >> 6) * (R * 64) + r * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7);
}
// rows r0 .. r0+ROWS-1 of a [T][stride] global matrix into a wgmma tile (rows >= T, and rows < lo,
// are zero; lo < 0: a continued forward's carried-in ring rows)
template <int DH, int ROWS, int THREADS>
__device__ __forceinline__ void ca_wload_tile(bf16* tile, const bf16* src, size_t stride, int r0, int T, int lo = 0) {
    constexpr int CH = DH / 8, RSTEP = THREADS / CH;  // 16-byte chunks per row; rows per pass of all threads
    if constexpr (THREADS % CH == 0 && RSTEP % 8 == 0 && ROWS % RSTEP == 0) {
        // A thread keeps its chunk column and steps by RSTEP rows, a multiple of 8, so its swizzle
        // (row & 7) and shared-memory offset are fixed up to + RSTEP rows a pass: the address arithmetic
        // once, not per chunk (in the warp-specialized forward the producer's loads were 35% of all
        // issued instructions, in the issue slots the consumers need; dev/PERF.md session 12).
        const int rb = threadIdx.x / CH, c = (threadIdx.x % CH) * 8;
        bf16* dst = tile + ca_wsw<ROWS>(rb, c);
        const bf16* col = src + c;
#pragma unroll
        for (int i = 0; i < ROWS / RSTEP; i++) {
            const int gr = r0 + rb + i * RSTEP;
            const bool ok = gr < T && gr >= lo;
            ca_cp_async16(dst + i * RSTEP * 64, col + (ptrdiff_t)(ok ? gr : 0) * (ptrdiff_t)stride, ok);
        }
    } else {
        for (int idx = threadIdx.x; idx < ROWS * CH; idx += THREADS) {
            const int r = idx / CH, c = (idx % CH) * 8, gr = r0 + r;
            const bool ok = gr < T && gr >= lo;
            ca_cp_async16(tile + ca_wsw<ROWS>(r, c), src + (ptrdiff_t)(ok ? gr : 0) * (ptrdiff_t)stride + c, ok);
        }
    }
}
// the K and V rows of one key tile (CaKvTile, coda_attention_mma.cuh) into stage `stage` of the
// [stages][BK][DH] K and V buffers
template <int DH, int BK, int THREADS>
__device__ __forceinline__ void ca_wload_kv(bf16* Ks, bf16* Vs, const CaKvTile& src, int stage) {
    ca_wload_tile<DH, BK, THREADS>(Ks + stage * BK * DH, src.k, src.stride, src.row0, src.nrows, src.lo);
    ca_wload_tile<DH, BK, THREADS>(Vs + stage * BK * DH, src.v, src.stride, src.row0, src.nrows, src.lo);
}
// the block's dynamic shared memory, rounded up to a 1024-byte boundary (launches ask for 1 KB more)
__device__ __forceinline__ bf16* ca_wg_smem() {
    extern __shared__ __align__(16) unsigned char ca_wsmem[];  // no stronger promise: the rounding below must stay
    const uint32_t a = ca_smem_u32(ca_wsmem);
    return (bf16*)(ca_wsmem + ((1024u - (a & 1023u)) & 1023u));
}
__device__ __forceinline__ uint64_t ca_wg_desc(const bf16* p, uint32_t lead_bytes, uint32_t stride_bytes) {
    const uint32_t a = ca_smem_u32(p);
    return (uint64_t)((a & 0x3FFFFu) >> 4) | ((uint64_t)(lead_bytes >> 4) << 16) | ((uint64_t)(stride_bytes >> 4) << 32) |
           (1ull << 62);  // 128-byte swizzle
}
// K-major operand: the 16 head-dim columns of k-step kk, all rows of an R-row tile (8-row groups 1 KB apart)
template <int R>
__device__ __forceinline__ uint64_t ca_desc_k(const bf16* tile, int kk) {
    return ca_wg_desc(tile + (kk >> 2) * (R * 64) + (kk & 3) * 16, 16, 1024);
}
// MN-major B operand: rows 16kk .. 16kk+15 of an R-row tile (the k dimension), columns 64nb .. 64nb+63
template <int R>
__device__ __forceinline__ uint64_t ca_desc_mn(const bf16* tile, int kk, int nb) {
    return ca_wg_desc(tile + nb * (R * 64) + kk * 16 * 64, R * 128, 1024);
}

// ---------------------------------------------------------------------------------------------
// PTX wrappers (sm_90a only; elsewhere the kernels trap, and the host never launches them there)

__device__ __forceinline__ void ca_wg_fence() {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void ca_wg_commit() {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// wait until at most N committed groups of this warpgroup's products are still running
template <int N>
__device__ __forceinline__ void ca_wg_wait() {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Pin accumulator registers in place around the async products: the compiler must neither read them
// before the wait nor move writes to them past the fence.
template <int N>
__device__ __forceinline__ void ca_wg_pin(float (*d)[4]) {
#pragma unroll
    for (int j = 0; j < N / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) asm volatile("" : "+f"(d[j][e])::"memory");
}

// the same for A fragments made by ordinary instructions: they must exist before the wgmma.fence
template <int KS>
__device__ __forceinline__ void ca_wg_pin_a(uint32_t (*a)[4]) {
#pragma unroll
    for (int j = 0; j < KS; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) asm volatile("" : "+r"(a[j][e])::"memory");
}

#define CA_F8(i) "+f"(d[(i) / 4][(i) % 4]), "+f"(d[(i + 1) / 4][(i + 1) % 4]), "+f"(d[(i + 2) / 4][(i + 2) % 4]), \
                 "+f"(d[(i + 3) / 4][(i + 3) % 4]), "+f"(d[(i + 4) / 4][(i + 4) % 4]), "+f"(d[(i + 5) / 4][(i + 5) % 4]), \
                 "+f"(d[(i + 6) / 4][(i + 6) % 4]), "+f"(d[(i + 7) / 4][(i + 7) % 4])
#define CA_R16 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}"
#define CA_R32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define CA_R64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"

// d[64 rows][N] += A (shared, K-major) * B (shared, K-major), one k-step of 16
template <int N>
__device__ __forceinline__ void ca_wgmma_ss(float (*d)[4], uint64_t da, uint64_t db);
template <>
__device__ __forceinline__ void ca_wgmma_ss<32>(float (*d)[4], uint64_t da, uint64_t db) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 " CA_R16 ", %16, %17, 1, 1, 1, 0, 0;\n"
                 : CA_F8(0), CA_F8(8) : "l"(da), "l"(db));
#else
    __trap();
#endif
}
template <>
__device__ __forceinline__ void ca_wgmma_ss<64>(float (*d)[4], uint64_t da, uint64_t db) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " CA_R32 ", %32, %33, 1, 1, 1, 0, 0;\n"
                 : CA_F8(0), CA_F8(8), CA_F8(16), CA_F8(24) : "l"(da), "l"(db));
#else
    __trap();
#endif
}
template <>
__device__ __forceinline__ void ca_wgmma_ss<128>(float (*d)[4], uint64_t da, uint64_t db) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " CA_R64 ", %64, %65, 1, 1, 1, 0, 0;\n"
                 : CA_F8(0), CA_F8(8), CA_F8(16), CA_F8(24), CA_F8(32), CA_F8(40), CA_F8(48), CA_F8(56)
                 : "l"(da), "l"(db));
#else
    __trap();
#endif
}
// d[64 rows][64] += A (registers: this warp's 16 x 16 fragment) * B (shared, MN-major), one k-step
__device__ __forceinline__ void ca_wgmma_rs64_t(float (*d)[4], const uint32_t a[4], uint64_t db) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " CA_R32 ", {%32,%33,%34,%35}, %36, 1, 1, 1, 1;\n"
                 : CA_F8(0), CA_F8(8), CA_F8(16), CA_F8(24)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
#else
    __trap();
#endif
}
// d[64 rows][64] += A (shared, K-major) * B (shared, MN-major: the descriptor's tile is B^T), one k-step
__device__ __forceinline__ void ca_wgmma_ss64_tb(float (*d)[4], uint64_t da, uint64_t db) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " CA_R32 ", %32, %33, 1, 1, 1, 0, 1;\n"
                 : CA_F8(0), CA_F8(8), CA_F8(16), CA_F8(24) : "l"(da), "l"(db));
#else
    __trap();
#endif
}
// d[64 rows][128] += A (registers) * B (shared, MN-major: two 64-column blocks, the second at the
// descriptor's leading-dimension offset), one k-step: one instruction where two of N = 64 were
#ifndef CA_WG_MN128
#define CA_WG_MN128 1
#endif
__device__ __forceinline__ void ca_wgmma_rs128_t(float (*d)[4], const uint32_t a[4], uint64_t db) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " CA_R64 ", {%64,%65,%66,%67}, %68, 1, 1, 1, 1;\n"
                 : CA_F8(0), CA_F8(8), CA_F8(16), CA_F8(24), CA_F8(32), CA_F8(40), CA_F8(48), CA_F8(56)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
#else
    __trap();
#endif
}
#undef CA_F8
#undef CA_R16
#undef CA_R32
#undef CA_R64

// acc[64][DH] += A (registers, K / 16 k-steps) * tile[K rows][DH] (MN-major): O = P V, dQ = dS K,
// dV = P^T dO, dK = dS^T Q
template <int DH, int K, int R>
__device__ __forceinline__ void ca_wg_mm_rs(float (*acc)[4], const uint32_t (*a)[4], const bf16* tile) {
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) {
        if constexpr (DH == 128 && CA_WG_MN128) {
            ca_wgmma_rs128_t(acc, a[kk], ca_desc_mn<R>(tile, kk, 0));
        } else {
#pragma unroll
            for (int nb = 0; nb < DH / 64; nb++) ca_wgmma_rs64_t(acc + nb * 8, a[kk], ca_desc_mn<R>(tile, kk, nb));
        }
    }
}
// acc[64][N] += A tile[64 rows][DH] * B tile[N rows][DH]^T (both K-major): S = Q K^T and friends
template <int DH, int N, int RA>
__device__ __forceinline__ void ca_wg_mm_ss(float (*acc)[4], const bf16* ta, const bf16* tb) {
#pragma unroll
    for (int kk = 0; kk < DH / 16; kk++) ca_wgmma_ss<N>(acc, ca_desc_k<RA>(ta, kk), ca_desc_k<N>(tb, kk));
}

// zeroed accumulators, pinned: the zeros are written before the next wgmma.fence (otherwise the
// compiler sinks the moves between fence and product, and ptxas must add a fence of its own)
template <int N>
__device__ __forceinline__ void ca_zero_acc(float (*d)[4]) {
#pragma unroll
    for (int j = 0; j < N / 8; j++) d[j][0] = d[j][1] = d[j][2] = d[j][3] = 0.f;
    ca_wg_pin<N>(d);
}

// Runs step(kt, regs, regs_prev, last) for kt = 0 .. nkt-1: the two register sets of the pipelined
// kernels alternate (regs is formed while the products reading regs_prev may still run), and `last`
// (std::true_type on the final step) drops the next tile's first product. Each call site is its own
// compile-time copy, so ptxas sees which registers every product reads. At the end every product is
// done: the accumulator acc[NJ][4] may be read and the register sets reused.
template <typename Step, int KS, int NJ>
__device__ __forceinline__ void ca_wg_pipeline(int nkt, Step&& step, uint32_t (&ra)[KS][4], uint32_t (&rb)[KS][4],
                                               float (&acc)[NJ][4]) {
    using Y = std::true_type;
    using N = std::false_type;
    int kt = 0;
    for (; kt + 2 < nkt; kt += 2) {
        step(kt, ra, rb, N{});
        step(kt + 1, rb, ra, N{});
    }
    if (kt + 1 < nkt) {
        step(kt, ra, rb, N{});
        step(kt + 1, rb, ra, Y{});
    } else {
        step(kt, ra, rb, Y{});
    }
    ca_wg_wait<0>();
    ca_wg_pin<8 * NJ>(acc);
    ca_wg_pin_a<KS>(ra);
    ca_wg_pin_a<KS>(rb);
}

// ---------------------------------------------------------------------------------------------
// forward. Grid: n_qtiles(64) * H * B blocks of 128 * NS threads (warpgroup s = stream s).
// Software-pipelined as FlashAttention-3 does within a warpgroup: while the soft-max of key tile t
// runs on the CUDA cores, the tensor cores work on P_{t-1} V_{t-1}; S_{t+1} = Q K_{t+1}^T and
// P_t V_t are issued together at the end of step t. K/V tiles are staged three deep (tile t+2 is
// loaded while t is used and t+1 waits), and P alternates between two register sets because P_t is
// still being read by the tensor cores while P_{t+1} is formed.

// The online soft-max of key tile kt in the forward kernels (wgmma and warp-specialized), this thread's
// two rows: new row maxima m, the factors alpha that rescale O and l, then exp2 of the scores in place
// (masked keys: 0). Bounded: the bank tile's allowed flags or the window; causal: only the diagonal
// tile and the end of the sequence are masked.
template <int BK, bool BND, typename Keys>
__device__ __forceinline__ void ca_fwd_softmax_tile(float (*sc)[4], float* m, float* l, float* alpha, const Keys& keys, int kt,
                                                    const uint32_t* bank_bits, const CaQTile& tl, int wr, int row0, int row1,
                                                    int tq, float sl2) {
    if constexpr (BND) {
        const bool bank_tile = kt < keys.nbt;
        ca_softmax_bounded<BK>(sc, m, l, alpha, bank_tile, bank_tile ? ca_bank_tile_bits(bank_bits, kt) : 0ull, keys.seq_key0(kt),
                               tl.klo, row0, row1, keys.T, tq, sl2);
        ca_softmax_exp_masked<BK>(sc, m, l);
    } else {
        const int k0 = kt * BK;
        const bool mask = k0 + BK - 1 > tl.q0 + wr || k0 + BK > keys.T;
        ca_softmax_max<BK>(sc, m, l, alpha, k0, mask, row0, row1, keys.T, tq, sl2);
        ca_softmax_exp<BK>(sc, m, l);
    }
}

template <int DH, int NS>
constexpr int ca_wg_fwd_smem() { return (NS * 64 + 6 * 64) * DH * 2 + 1024; }

template <int DH, int NS, bool BND>
__global__ void __launch_bounds__(128 * NS, 1)
ca_wg_forward_kernel(CodaAttnShape sh, CodaAttnBank bank, bf16* a_sig, bf16* a_noise, float* lse, const bf16* q,
                     const bf16* qn, const bf16* k, const bf16* v) {
    constexpr int BQ = 64, BK = 64, THREADS = 128 * NS, ST = 3;
    __shared__ uint32_t bank_bits[BND ? CA_MAX_BANK_SLOTS / 32 : 1];
    bf16* Qs = ca_wg_smem();       // [NS][BQ][DH]
    bf16* Ks = Qs + NS * BQ * DH;  // [ST][BK][DH]
    bf16* Vs = Ks + ST * BK * DH;  // [ST][BK][DH]
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv;
    int qt, h, b;
    ca_block_coords(ca_n_qtiles(sh, BQ), H, sh.B, 1, &qt, &h, &b);
    const CaQTile tl = ca_qtile(sh, qt, BQ);
    if (tl.q0 >= tl.qend) return;  // a tile past the end of a short last block
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, s = warp / 4, wr = (warp % 4) * 16;
    const int g = lane >> 2, tq = lane & 3;
    const int q0 = tl.q0, row0 = q0 + wr + g, row1 = row0 + 8;
    const size_t qstride = (size_t)H * DH;
    const CaKeyTiles<DH, BK, BND> keys(sh, bank, k, v, tl, BQ, b, h / (H / Hkv), bank_bits);
    const int nkt = keys.nkt;
    auto load_kv = [&](int t) { ca_wload_kv<DH, BK, THREADS>(Ks, Vs, keys.tile(t), t % ST); };
    for (int ss = 0; ss < NS; ss++)
        ca_wload_tile<DH, BQ, THREADS>(Qs + ss * BQ * DH, (ss ? qn : q) + (size_t)b * T * qstride + (size_t)h * DH, qstride, q0, T);
    load_kv(0);
    ca_cp_async_commit();
    if (nkt > 1) load_kv(1);
    ca_cp_async_commit();
    ca_cp_async_wait<1>();
    ca_fence_proxy_async();
    __syncthreads();
    const bf16* Qt = Qs + s * BQ * DH;

    const float sl2 = (1.0f / sqrtf((float)DH)) * CA_LOG2E;
    float o[DH / 8][4], sc[BK / 8][4];
    ca_zero_acc<DH>(o);
    ca_zero_acc<BK>(sc);
    ca_wg_fence();
    ca_wg_mm_ss<DH, BK, BQ>(sc, Qt, Ks);  // S_0
    ca_wg_commit();
    ca_wg_commit();  // an empty group in place of "P_{-1} V_{-1}", so every step waits the same way
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    if (BND) ca_softmax_init(m, l, ca_empty_ring(sh, tl.j), tq);
    uint32_t pfa[BK / 16][4], pfb[BK / 16][4];
    auto step = [&](int kt, uint32_t (&pf)[BK / 16][4], uint32_t (&pf_prev)[BK / 16][4], auto last) {
        ca_wg_wait<1>();  // S_kt is done (P_{kt-1} V_{kt-1} may still run)
        ca_wg_pin<BK>(sc);
        float alpha[2];
        ca_fwd_softmax_tile<BK, BND>(sc, m, l, alpha, keys, kt, bank_bits, tl, wr, row0, row1, tq, sl2);
        ca_acc_to_a<BK>(pf, sc);
        ca_wg_wait<0>();  // P_{kt-1} V_{kt-1} is done: o may be rescaled, its K/V buffer refilled
        ca_wg_pin<DH>(o);
        ca_wg_pin_a<BK / 16>(pf_prev);  // ... and only now may pf_prev's registers be reused
        ca_rescale_rows<DH>(o, alpha);
        ca_cp_async_wait<0>();  // tile kt+1 has landed (this thread's part)
        ca_fence_proxy_async();
        __syncthreads();        // ... everyone's part; and no warpgroup reads tile kt-1's buffer any more
        if (kt + 2 < nkt) load_kv(kt + 2);
        ca_cp_async_commit();
        ca_zero_acc<BK>(sc);
        ca_wg_pin<DH>(o);
        ca_wg_pin_a<BK / 16>(pf);
        ca_wg_fence();
        if (!decltype(last)::value) ca_wg_mm_ss<DH, BK, BQ>(sc, Qt, Ks + ((kt + 1) % ST) * BK * DH);
        ca_wg_commit();
        ca_wg_mm_rs<DH, BK, BK>(o, pf, Vs + (kt % ST) * BK * DH);
        ca_wg_commit();
    };
    ca_wg_pipeline(nkt, step, pfa, pfb, o);
    ca_forward_store<DH>(sh, s ? a_noise : a_sig, lse, o, m, l, row0, row1, tl.qend, tq, s, h, b);
}

// ---------------------------------------------------------------------------------------------
// backward dQ (+ noise-rotation backward and theta partials): the mma.sync kernel's blocks and
// epilogue, key tiles of 64, pipelined like the forward (dS_t is formed while dS_{t-1} K_{t-1} runs;
// S_{t+1}, dP_{t+1} and dS_t K_t are issued together; three K/V stages, two dS register sets).
// Grid: n_qtiles(64) * H * B blocks of 128 * NS threads.

template <int DH, int NS>
constexpr int ca_wg_dq_smem() { return (NS * 64 + 64 + 6 * 64) * DH * 2 + DH * 4 * 2 + 1024; }

template <int DH, int NS, bool BND>
__global__ void __launch_bounds__(128 * NS, 1)
ca_wg_dq_kernel(CodaAttnShape sh, CodaAttnBank bank, bf16* dq, float* dtheta_part, const bf16* dO, const float* lse,
                const float* delta, const bf16* q, const bf16* qn, const bf16* k, const bf16* v, const bf16* theta,
                const bf16* lam_logit) {
    constexpr int BQ = 64, BK = 64, THREADS = 128 * NS, ST = 3;
    __shared__ uint32_t bank_bits[BND ? CA_MAX_BANK_SLOTS / 32 : 1];
    bf16* Qs = ca_wg_smem();        // [NS][BQ][DH]
    bf16* dOs = Qs + NS * BQ * DH;  // [BQ][DH]
    bf16* Ks = dOs + BQ * DH;       // [ST][BK][DH]
    bf16* Vs = Ks + ST * BK * DH;   // [ST][BK][DH]
    float* rot = (float*)(Vs + ST * BK * DH);  // [2][DH/2]: cos, sin of theta[h]
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv, nqt = ca_n_qtiles(sh, BQ);
    int qt, h, b;
    ca_block_coords(nqt, H, sh.B, 1, &qt, &h, &b);
    const CaQTile tl = ca_qtile(sh, qt, BQ);
    if (tl.q0 >= tl.qend) {  // a tile past the end of a short last block: its theta partials are zero
        if (NS == 2)
            for (int p = threadIdx.x; p < DH / 2; p += THREADS) dtheta_part[(((size_t)b * nqt + qt) * H + h) * (DH / 2) + p] = 0.f;
        return;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, s = warp / 4, wr = (warp % 4) * 16;
    const int g = lane >> 2, tq = lane & 3;
    const int q0 = tl.q0, rows[2] = {q0 + wr + g, q0 + wr + g + 8};
    const size_t qstride = (size_t)H * DH;
    const CaKeyTiles<DH, BK, BND> keys(sh, bank, k, v, tl, BQ, b, h / (H / Hkv), bank_bits);
    const int nbt = keys.nbt, nkt = keys.nkt;
    auto load_kv = [&](int t) { ca_wload_kv<DH, BK, THREADS>(Ks, Vs, keys.tile(t), t % ST); };
    for (int ss = 0; ss < NS; ss++)
        ca_wload_tile<DH, BQ, THREADS>(Qs + ss * BQ * DH, (ss ? qn : q) + (size_t)b * T * qstride + (size_t)h * DH, qstride, q0, T);
    ca_wload_tile<DH, BQ, THREADS>(dOs, dO + (size_t)b * T * qstride + (size_t)h * DH, qstride, q0, T);
    load_kv(0);
    ca_cp_async_commit();
    if (nkt > 1) load_kv(1);
    ca_cp_async_commit();
    if (NS == 2)
        for (int p = threadIdx.x; p < DH / 2; p += THREADS) sincosf(__bfloat162float(theta[(size_t)h * (DH / 2) + p]), &rot[DH / 2 + p], &rot[p]);
    float lse2[2], dl[2], f[2];
    ca_dq_row_scalars(sh, lse, delta, lam_logit, rows, tl.qend, s, h, b, lse2, dl, f);
    ca_cp_async_wait<1>();
    ca_fence_proxy_async();
    __syncthreads();
    const bf16* Qt = Qs + s * BQ * DH;
    const float scale = 1.0f / sqrtf((float)DH), sl2 = scale * CA_LOG2E;
    float acc[DH / 8][4], sc[BK / 8][4], dp[BK / 8][4];
    ca_zero_acc<DH>(acc);
    ca_zero_acc<BK>(sc);
    ca_zero_acc<BK>(dp);
    ca_wg_fence();
    ca_wg_mm_ss<DH, BK, BQ>(sc, Qt, Ks);  // S_0, dP_0
    ca_wg_mm_ss<DH, BK, BQ>(dp, dOs, Vs);
    ca_wg_commit();
    ca_wg_commit();  // empty: stands for dS_{-1} K_{-1}
    uint32_t dsa[BK / 16][4], dsb[BK / 16][4];
    auto step = [&](int kt, uint32_t (&dsf)[BK / 16][4], uint32_t (&dsf_prev)[BK / 16][4], auto last) {
        ca_wg_wait<1>();  // S_kt, dP_kt are done
        ca_wg_pin<BK>(sc);
        ca_wg_pin<BK>(dp);
        if constexpr (BND) {
            const bool bank_tile = kt < nbt;
            ca_dq_ds_bounded<BK>(sc, dp, bank_tile, bank_tile ? ca_bank_tile_bits(bank_bits, kt) : 0ull, keys.seq_key0(kt),
                                 tl.klo, rows, tq, sl2, lse2, dl, f);
        } else {
            const int k0 = kt * BK;
            const bool mask = k0 + BK - 1 > q0 + wr || k0 + BK > T;
            ca_dq_ds<BK>(sc, dp, k0, mask, rows, T, tq, sl2, lse2, dl, f);
        }
        ca_acc_to_a<BK>(dsf, sc);
        ca_wg_wait<0>();        // dS_{kt-1} K_{kt-1} is done: its K/V buffer may be refilled
        ca_wg_pin<DH>(acc);
        ca_wg_pin_a<BK / 16>(dsf_prev);
        ca_cp_async_wait<0>();  // tile kt+1 has landed (this thread's part)
        ca_fence_proxy_async();
        __syncthreads();
        if (kt + 2 < nkt) load_kv(kt + 2);
        ca_cp_async_commit();
        ca_zero_acc<BK>(sc);
        ca_zero_acc<BK>(dp);
        ca_wg_pin_a<BK / 16>(dsf);
        ca_wg_fence();
        if (!decltype(last)::value) {
            ca_wg_mm_ss<DH, BK, BQ>(sc, Qt, Ks + ((kt + 1) % ST) * BK * DH);
            ca_wg_mm_ss<DH, BK, BQ>(dp, dOs, Vs + ((kt + 1) % ST) * BK * DH);
        }
        ca_wg_commit();
        ca_wg_mm_rs<DH, BK, BK>(acc, dsf, Ks + (kt % ST) * BK * DH);
        ca_wg_commit();
    };
    ca_wg_pipeline(nkt, step, dsa, dsb, acc);
    __syncthreads();  // both warpgroups are done with the K/V tiles the epilogue writes over
    ca_dq_epilogue<DH, NS>(sh, dq, dtheta_part, q, acc, Qs, Ks, rot, q0, tl.qend, qt, nqt, h, b);
}

// ---------------------------------------------------------------------------------------------
// backward dK, dV: the mma.sync kernel's blocks (64 keys = one warpgroup, one query head), query
// tiles of 32 (Dh 128) or 64 (Dh 64), dP^T computed once for both streams. Writes fp32 partials.
// Not pipelined: a version that issued the noise stream's S^T before the signal stream's dS^T and
// let stream 0's dV/dK products run during stream 1's soft-max (one register set per stream) ran
// 20% slower on an H200 (0.48 vs 0.40 ms at the 7B shape, T=2048; dev/PERF.md); two blocks per SM
// already overlap one block's CUDA-core work with the other's products.

template <int DH, int NS, bool GLO = false>
constexpr int ca_wg_dkdv_smem() {
    return (2 * 64 + 2 * (NS + 1) * ca_mma_dkdv_bq<DH>()) * DH * 2 + 2 * (2 * NS + 1 + GLO) * ca_mma_dkdv_bq<DH>() * 4 + 1024;
}

template <int DH, int NS, bool BND, bool BANK>
__global__ void __launch_bounds__(128, 2)
ca_wg_dkdv_kernel(CodaAttnShape sh, CodaAttnBank bank, float* dk_part, float* dv_part, const bf16* dO, const float* lse,
                  const float* delta, const bf16* q, const bf16* qn, const bf16* k, const bf16* v, const bf16* lam_logit) {
    constexpr bool GLO = BND && !BANK;  // per-query first gradient key staged with the scalars
    constexpr int BKV = 64, BQ = ca_mma_dkdv_bq<DH>(), THREADS = 128, NSC = 2 * NS + 1 + GLO;
    bf16* Ks = ca_wg_smem();            // [BKV][DH]
    bf16* Vs = Ks + BKV * DH;           // [BKV][DH]
    bf16* Qs = Vs + BKV * DH;           // [2 buffers][NS][BQ][DH]
    bf16* dOs = Qs + 2 * NS * BQ * DH;  // [2][BQ][DH]
    float* Sc = (float*)(dOs + 2 * BQ * DH);  // [2][NSC][BQ]: lse*log2(e) per stream, delta per stream, -lam (, glo)
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv;
    const CaKeyBlock<BND, BANK> kb_(sh, BKV);
    const int h = kb_.h, b = kb_.b, kvh = h / (H / Hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, tq = lane & 3;
    const int k0 = kb_.kt * BKV, wk = warp * 16, keys[2] = {k0 + wk + g, k0 + wk + g + 8};
    const size_t qstride = (size_t)H * DH;
    const size_t qoff = (size_t)b * T * qstride + (size_t)h * DH;
    const CaKvTile src = kb_.source(sh, bank, k, v, kvh, k0);
    bool key_ok[2] = {true, true};  // BANK: the slot is allowed (others get no gradient)
    if (BANK && !ca_dkdv_bank_keys_ok<DH>(key_ok, sh, bank, kb_, keys, dk_part, dv_part, h)) return;
    const int qt_first = kb_.qbeg / BQ, nsteps = (kb_.qstop + BQ - 1) / BQ - qt_first;

    auto stage_tiles = [&](int i) {
        const int bf = i & 1, q0 = (qt_first + i) * BQ;
        ca_wload_tile<DH, BQ, THREADS>(Qs + (bf * NS) * BQ * DH, q + qoff, qstride, q0, T);
        if (NS == 2) ca_wload_tile<DH, BQ, THREADS>(Qs + (bf * NS + 1) * BQ * DH, qn + qoff, qstride, q0, T);
        ca_wload_tile<DH, BQ, THREADS>(dOs + bf * BQ * DH, dO + qoff, qstride, q0, T);
    };
    float pre[NSC];
    auto load_scalars = [&](int i) {
        ca_dkdv_load_scalars<NS, BQ, GLO>(pre, sh, lse, delta, lam_logit, (qt_first + i) * BQ, kb_.qbeg, kb_.qstop, h, b);
    };
    auto store_scalars = [&](int i) { ca_dkdv_store_scalars<NSC, BQ>(Sc, pre, i); };
    ca_wload_kv<DH, BKV, THREADS>(Ks, Vs, src, 0);
    stage_tiles(0);
    ca_cp_async_commit();
    load_scalars(0);
    store_scalars(0);
    if (nsteps > 1) load_scalars(1);

    const float scale = 1.0f / sqrtf((float)DH), sl2 = scale * CA_LOG2E;
    float dka[DH / 8][4], dva[DH / 8][4];
    ca_zero_acc<DH>(dka);
    ca_zero_acc<DH>(dva);
    for (int i = 0; i < nsteps; i++) {
        const int bf = i & 1, q0 = (qt_first + i) * BQ;
        if (i + 1 < nsteps) stage_tiles(i + 1);
        ca_cp_async_commit();
        ca_cp_async_wait<1>();
        ca_fence_proxy_async();
        __syncthreads();
        const bf16* Ot = dOs + bf * BQ * DH;
        const float* sc_ = Sc + bf * NSC * BQ;
        float dpt[BQ / 8][4];  // dP^T = V dO^T: [64 keys][BQ queries], both streams
        ca_zero_acc<BQ>(dpt);
        const bool mask = q0 < k0 + BKV;  // queries before keys (rows past T have lse = +inf)
#pragma unroll
        for (int s = 0; s < NS; s++) {
            const bf16* Qt = Qs + (bf * NS + s) * BQ * DH;
            float st[BQ / 8][4];  // S^T = K Q^T
            ca_zero_acc<BQ>(st);
            ca_wg_fence();
            if (s == 0) ca_wg_mm_ss<DH, BQ, BKV>(dpt, Vs, Ot);
            ca_wg_mm_ss<DH, BQ, BKV>(st, Ks, Qt);
            ca_wg_commit();
            ca_wg_wait<0>();
            ca_wg_pin<BQ>(dpt);
            ca_wg_pin<BQ>(st);
            float ds[BQ / 8][4];
            if constexpr (BANK)
                ca_dkdv_p_ds_masked<NS, BQ>(st, ds, dpt, sc_, s, tq, sl2, [&](int c, int r) { return !key_ok[r]; });
            else if constexpr (BND)
                ca_dkdv_p_ds_masked<NS, BQ>(st, ds, dpt, sc_, s, tq, sl2, [&](int c, int r) {
                    return (q0 + c < keys[r]) | (keys[r] < (int)sc_[(2 * NS + 1) * BQ + c]);
                });
            else
                ca_dkdv_p_ds<NS, BQ>(st, ds, dpt, sc_, s, q0, keys, mask, tq, sl2);
            uint32_t pa[BQ / 16][4], dsa[BQ / 16][4];
            ca_acc_to_a<BQ>(pa, st);
            ca_acc_to_a<BQ>(dsa, ds);
            ca_wg_pin_a<BQ / 16>(pa);
            ca_wg_pin_a<BQ / 16>(dsa);
            ca_wg_fence();
            ca_wg_mm_rs<DH, BQ, BQ>(dva, pa, Ot);
            ca_wg_mm_rs<DH, BQ, BQ>(dka, dsa, Qt);
            ca_wg_commit();
            ca_wg_wait<0>();
            ca_wg_pin<DH>(dva);
            ca_wg_pin<DH>(dka);
            ca_wg_pin_a<BQ / 16>(pa);  // the A registers stay reserved until their products are done
            ca_wg_pin_a<BQ / 16>(dsa);
        }
        if (i + 1 < nsteps) {
            store_scalars(i + 1);  // its buffer was last read in step i - 1, before this step's barrier
            if (i + 2 < nsteps) load_scalars(i + 2);
        }
        __syncthreads();
    }
    ca_dkdv_store_partials<DH>(sh, dk_part, dv_part, dka, dva, keys, kb_.rowbase, kb_.nkeys, h, scale);
}
