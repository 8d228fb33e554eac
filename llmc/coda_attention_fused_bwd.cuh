// coda_attention_fused_bwd.cuh — v5 of the attention backward (issue 15): one warp-specialized Hopper
// kernel forms dK, dV and dQ in a single pass over the (key block, query tile) pairs of the causal key
// set at Dh 128. Bounded key sets and Dh 64 keep the two-pass wgmma backward of coda_attention_wgmma.cuh.
//
// Why: the wgmma backward runs a dK/dV kernel (per key tile: S^T = K Q^T, dP^T = V dO^T, dV += P^T dO,
// dK += dS^T Q) and then a dQ kernel that forms S and dP again to get dQ = dS K: with CoDA's two streams
// 13 products of (64 keys x 32 queries x 128) per step, 4 of them recomputation. Here dQ is taken from
// the dS the dK/dV pass already holds: 9 products, and dQ's partial sums go through L2 instead.
// Measured (H200, 7B head shape, dev/PERF.md sessions 10-12): CoDA backward 7.3 ms against the wgmma
// backward's 7.9 at T = 8192, but 0.74 against 0.64 at T = 2048, and slower for GQA (5.1 against 4.8 at
// 8K): AUTO takes it for CoDA above T = 4096 (ca_use_fused_bwd).
//
// Shape legend: BKV = 128 keys per block (two consumer warpgroups of 64), BQ = 32 queries per step,
// DH = 128, NS streams (2: CoDA's signal and noise queries, 1: GQA).
//
// Roles (block of 384 threads; grid: ca_fb_block_coords, below: the (batch row, query head) pairs in
// groups of CA_FB_GROUP_ROWS / T, and within a group every head's key block 0, then every one's key
// block 1, ..; key block n sees nq - 4n query tiles, so each group launches its heaviest blocks first and
// its light ones fill the gaps (list scheduling, longest first). Why groups: a head's query tiles and dq
// accumulators are read and added to by all its blocks, so blocks of few heads at a time keep them in L2.
// Measured (H200, dev/PERF.md session 14): the first form, each head's blocks lightest first, made the
// kernel 1.2x longer than its work at T = 2048 (512 blocks on 132 SMs: its last heavy blocks ran alone
// at the end); every head's key block 0 first fixed that but at 8K read 2.5x the DRAM bytes (L2 hits 90
// -> 78%) and gained 2.6% where the schedule alone promised 7%; the groups keep the schedule and take
// L2 hits to 97% (8K: 0.85 GB of DRAM traffic where the first form had 2.6): kernel 6.52 -> 6.09 ms):
//   warp 0      loader: the block's K and V rows once, then per step the NS query tiles and the d o
//               tile by TMA (lane 0: ca_tma_load_tile, the bytes counted on the stage's full barrier;
//               with two streams the query tiles are the two 32-row halves of one [2][64][64] tile)
//               and the per-query scalars (lse, delta, -lambda; every lane) into a ring of ST stages
//               (full[st] / empty[st] mbarriers as in coda_attention_ws.cuh). Warps 1 and 2 are idle:
//               the first form loaded by cp.async from warps 0-2, 16 bytes a thread at a time.
//   warp 3      dQ writer: adds the step's fp32 dQ staging tiles to the global accumulators dq_acc with
//               cp.reduce.async.bulk (one 16 KB reduction per stream), in the deterministic order below;
//               key block 0, the first in that order, stores them instead (cp.async.bulk)
//   warpgroup 1+w, w = 0, 1: consumer of keys 64w .. 64w+63 of the block: the wgmma dK/dV kernel's step
//               (dP^T once for both streams, S^T for both streams as one m64n64 product over the stacked
//               query tile, then per stream P, dS, dV += P^T dO, dK += dS^T Q); it also
//               writes dS of its keys as bf16 (stmatrix .trans) into a shared tile of the step's queries x
//               the block's 128 keys, with both streams' 32 queries stacked into its 64 rows; once both
//               warpgroups have (named barrier 1), warpgroup w forms head-dim columns 64w .. 64w+63 of
//               dQ = dS K for all 64 (stream, query) rows over the 128 keys, and stores them into the
//               staging tile. Stacking the streams gives the 64 rows a wgmma needs (one stream's 32 queries
//               are too few): one m64n64 product per 16 keys where the per-stream form, dQ^T = K^T dS^T
//               with the operands swapped, took two m64n32 ones and read a third more shared memory.
//               GQA's one stream keeps that form (CA_FB_DQ_STACKED 0 gives it to CoDA too). The same
//               stacking for S^T (CA_FB_S_STACKED): the ring's two query tiles land as one 64-row tile.
//               Measured (H200, dev/PERF.md session 13): both together 1.5-2% at T = 8192.
//
// Deterministic dQ: query tile m gets its partial sums from key blocks 0 .. n_max(m)-1, and they add in
// the order 0, 1, .., n_max(m)-1: block n waits until the counter sem[b][h][m] equals n, adds, and once
// its additions are complete increments the counter (release / acquire at GPU scope; the writer checks
// completion when the next staging tile arrives, so that wait overlaps a step). The order, so every fp32
// sum, is fixed: two runs give the same bits. A block waits only for blocks of its head with a smaller
// n, which have smaller block indices: with blocks starting in index order the lowest unfinished one
// never waits for a block that has not started, so there is no deadlock at any T. Every block walks its
// query tiles from the last one down to the diagonal, so the blocks of a head that start together
// start on the same tile and follow one another by the latency of one addition; a block that starts
// later finds the tiles it reaches already added by the blocks before it.
//
// The dQ^T staging tile of a stream is [BQ queries][DH] fp32 with the columns of each row swizzled
// (ca_fb_swz: bank-conflict-free stores from the accumulator layout without padding), and dq_acc keeps
// the same swizzle, so the writer adds a whole tile with one bulk reduction per stream: 16 KB each.
// (The first form padded the rows to DH + 4 floats and added them one 512-byte row per lane, 64 bulk
// operations a step, which the TMA unit takes one at a time: ncu showed the consumers waiting for the
// writer to hand back the staging a quarter of their time.) A finishing kernel turns dq_acc into dq (bf16,
// dq_sig + R_theta^T dq_noise, scaled by 1/sqrt(Dh)) and the theta partials.
#pragma once
// CA_FB_DQ_STACKED 1 (two streams): dQ = dS K with both streams' 32 queries stacked into the 64 rows of
// one product per warpgroup (m64n64, a head-dim half each) instead of dQ^T = K^T dS^T per stream
// (m64n32 twice); 0: the per-stream form (GQA always takes it: its 32 queries are too few rows).
#ifndef CA_FB_DQ_STACKED
#define CA_FB_DQ_STACKED 1
#endif
// CA_FB_S_STACKED 1 (two streams): S^T = K [Q_0; Q_1]^T as one m64n64 product per warpgroup (the ring's
// query tiles stacked into one [2][64][64] tile; K read once for both streams) instead of two m64n32.
#ifndef CA_FB_S_STACKED
#define CA_FB_S_STACKED 1
#endif
// A/B switch for measurements only: CA_FB_UNORDERED 1 adds in arrival order (no waiting for the turn;
// the results are then not deterministic). dev/PERF.md gives what the order costs.
#ifndef CA_FB_UNORDERED
#define CA_FB_UNORDERED 0
#endif

// ---------------------------------------------------------------------------------------------
// PTX wrappers (sm_90a; elsewhere the kernels trap and are never launched)

// Four 8x8 bf16 matrices from the accumulator fragment layout (register i: matrix i, lane 4g + t holds
// row g, columns 2t, 2t+1) stored transposed: lanes 8i .. 8i+7 give the addresses of matrix i's
// columns 0 .. 7 (16 bytes each) in shared memory.
__device__ __forceinline__ void ca_stsm_x4_trans(const void* p, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(ca_smem_u32(p)), "r"(r0), "r"(r1),
                 "r"(r2), "r"(r3)
                 : "memory");
#else
    __trap();
#endif
}
// d[64 rows][32] += A (shared, MN-major: the descriptor's tile is A^T) * B (shared, K-major), one k-step
__device__ __forceinline__ void ca_wgmma_ss32_ta(float (*d)[4], uint64_t da, uint64_t db) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, 1, 1, 1, 1, 0;\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),
                   "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),
                   "+f"(d[3][2]), "+f"(d[3][3])
                 : "l"(da), "l"(db));
#else
    __trap();
#endif
}
// global[0 .. bytes) += shared[0 .. bytes) as fp32, by the TMA unit (async proxy), in this thread's bulk group
__device__ __forceinline__ void ca_bulk_reduce_add_f32(float* gdst, const float* ssrc, uint32_t bytes) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(gdst), "r"(ca_smem_u32(ssrc)),
                 "r"(bytes)
                 : "memory");
#endif
}
// global[0 .. bytes) = shared[0 .. bytes), by the TMA unit (async proxy), in this thread's bulk group
__device__ __forceinline__ void ca_bulk_store(void* gdst, const void* ssrc, uint32_t bytes) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(gdst), "r"(ca_smem_u32(ssrc)), "r"(bytes)
                 : "memory");
#endif
}
__device__ __forceinline__ void ca_bulk_commit() {
#ifdef CA_WGMMA_DEVICE
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
// this thread's bulk groups have read their shared-memory sources (the staging may be rewritten)
__device__ __forceinline__ void ca_bulk_wait_read0() {
#ifdef CA_WGMMA_DEVICE
    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}
// ... and their writes to global memory are complete
__device__ __forceinline__ void ca_bulk_wait0() {
#ifdef CA_WGMMA_DEVICE
    asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}
// order this thread's generic-proxy accesses (shared and global) against its async-proxy ones
__device__ __forceinline__ void ca_fence_proxy_async_all() {
#ifdef CA_WGMMA_DEVICE
    asm volatile("fence.proxy.async;\n" ::: "memory");
#endif
}
__device__ __forceinline__ int ca_ld_acquire_gpu(const int* p) {
    int v = 0;
#ifdef CA_WGMMA_DEVICE
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
#endif
    return v;
}
__device__ __forceinline__ void ca_red_release_gpu_add(int* p, int v) {
#ifdef CA_WGMMA_DEVICE
    asm volatile("red.release.gpu.global.add.s32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
#endif
}

// ---------------------------------------------------------------------------------------------
// sizes (host and device)

#define CA_FB_BKV 128
#define CA_FB_BQ 32
#define CA_FB_ST 3                      // ring stages of query tiles
#ifndef CA_FB_PRODUCER_REGS
#define CA_FB_PRODUCER_REGS 56          // 128 * (56 + 2 * 224) <= 65536 (24 and 240 spill ~100 bytes in the producer)
#define CA_FB_CONSUMER_REGS 224
#endif

// Where column c (of DH = 128) of query row r lies in a dQ staging tile and in dq_acc: bits 3-4 of c
// XORed with two bits of r, chosen for the stores of the form that writes them, so that each store
// instruction's wavefronts hit 32 different banks, and a pair of columns 2p, 2p + 1 stays adjacent for
// the finishing kernel. Stacked (float2 stores: a half-warp writes rows r0 .. r0+3, 8 columns each):
// bits 0-1 of r. Per stream (scalar stores: lane 4g + t writes column base + g of row 2t + const):
// bits 1-2 of r.
template <int NS>
__host__ __device__ __forceinline__ int ca_fb_swz(int r, int c) {
    return NS == 2 && CA_FB_DQ_STACKED ? c ^ ((r & 3) << 3) : c ^ (((r >> 1) & 3) << 3);
}
// The stacked form's staging stores: consumer thread (warp wi of warpgroup w, lane 4g + tq) holds dQ
// rows 16 wi + g (+8 hr) = stream wi / 2, query 16 (wi & 1) + g (+8 hr), columns 64w + 8j + 2tq (+1).
// The swizzle XORs column bits 3-4 with the query's bits 0-1, which are g & 3: column group j lands at
// 4 (j / 4) + (j % 4 ^ (g & 3)). So the float offset of the pair (j, hr) in the [NS * BQ][DH] tile is
// the thread's row pointer + a group offset (one per j % 4) + an immediate (j / 4, hr): four pointers
// address all 16 stores (formed per store, ptxas kept 13 addresses and spilled them). Checked against
// ca_fb_swz, with its bank pattern, by the CPU test fb_staging_stores_follow_the_swizzle.
__host__ __device__ __forceinline__ float* ca_fb_stk_rowp(float* stg, int wi, int w, int g, int tq) {
    return stg + ((wi >> 1) * CA_FB_BQ + 16 * (wi & 1) + g) * 128 + w * 64 + 2 * tq;
}
__host__ __device__ __forceinline__ float* ca_fb_stk_groupp(float* rowp, int g, int k) { return rowp + 8 * (k ^ (g & 3)); }
__host__ __device__ __forceinline__ float* ca_fb_stk_pairp(float* groupp, int jh, int hr) { return groupp + 32 * jh + 8 * 128 * hr; }
__host__ __device__ __forceinline__ int ca_fb_rows(int T) { return (T + CA_FB_BQ - 1) / CA_FB_BQ * CA_FB_BQ; }
__host__ __device__ __forceinline__ int ca_fb_nkb(int T) { return (T + CA_FB_BKV - 1) / CA_FB_BKV; }
// Block index -> (key block n, batch row x query head bh). Heads go in groups of G = CA_FB_GROUP_ROWS / T
// (at least 1): within group g (heads gG .., the last group may be smaller) block index gG nkb + n gsize + i
// is key block n of head gG + i. Block (bh, n) waits only for (bh, n - 1), which has a smaller index
// (the deadlock argument below); CA_FB_GROUP_ROWS = 16384: the group's Q, noise Q, d o tiles and fp32 dq
// accumulators (1.75 KB a query row with two streams: ~29 MB) fit in an H100's 50 MB of L2 (H200: 60),
// and by a simulation of the schedule (dev/cuda/fb_schedule.py; 132 SMs, 32 heads) groups of 16384 rows
// finish within 0.3% of the work / SMs at T >= 4096 and 3% at 2048.
#ifndef CA_FB_GROUP_ROWS
#define CA_FB_GROUP_ROWS 16384
#endif
__host__ __device__ __forceinline__ void ca_fb_block_coords(int idx, int T, int BH, int* n, int* bh) {
    const int nkb = ca_fb_nkb(T), G = max(1, min(BH, CA_FB_GROUP_ROWS / T)), g = idx / (G * nkb);
    const int gsize = min(G, BH - g * G), r = idx - g * G * nkb;
    *n = r / gsize;
    *bh = g * G + r % gsize;
}
template <int NS>
constexpr int ca_fb_smem() {
    constexpr int DH = 128, BQ = CA_FB_BQ, NSC = 2 * NS + 1;
    return 2 * CA_FB_BKV * DH * 2                     // K, V: [2 halves][64][DH] each
           + CA_FB_ST * (NS + 1) * BQ * DH * 2         // ring: Q [NS][BQ][DH], d o [BQ][DH]
           + 2 * NS * BQ * CA_FB_BKV * 2               // dS^T [2 step parities][NS][BQ][128 keys]
           + NS * BQ * DH * 4                          // dQ^T staging [NS][BQ][DH] fp32, swizzled
           + CA_FB_ST * NSC * BQ * 4                   // scalars [ST][NSC][BQ]
           + 1024;                                     // alignment slack
}

// the dQ writer's end of a turn: this warp's additions are complete (every lane's bulk groups), then
// the counter of their query tile goes up (release at GPU scope: the next block in the order may add)
__device__ __forceinline__ void ca_fb_retire(int* cnt, int lane) {
    ca_bulk_wait0();
    ca_fence_proxy_async_all();
    __syncwarp();
    if (lane == 0) {
        __threadfence();
        ca_red_release_gpu_add(cnt, 1);
    }
}

// ---------------------------------------------------------------------------------------------
// the fused kernel. dk_part / dv_part: fp32 partials per query head (as the wgmma dK/dV kernel);
// dq_acc: [NS][B][H][ca_fb_rows(T)][DH] fp32 (columns swizzled: ca_fb_swz), any contents on entry: key
// block 0, first in every query tile's order and the one block that sees them all, stores its partial
// sums where the others add theirs (no memset of 2 x 32 MB at T = 2048, 2 x 128 MB at 8K);
// sem: [B][H][ca_fb_rows(T) / 32] int, zero.

template <int NS>
__global__ void __launch_bounds__(384, 1)
ca_fb_backward_kernel(CodaAttnShape sh, float* dk_part, float* dv_part, float* dq_acc, int* sem, const float* lse, const float* delta,
                      const bf16* lam_logit, const __grid_constant__ CaTmaMaps tm) {
    constexpr int DH = 128, BKV = CA_FB_BKV, HK = 64, BQ = CA_FB_BQ, ST = CA_FB_ST, NSC = 2 * NS + 1;
    constexpr bool STACK = NS == 2 && CA_FB_DQ_STACKED;  // dS^T tiles: STACK [2 key halves][NS * BQ][64], else per stream
    constexpr bool QSTACK = NS == 2 && CA_FB_S_STACKED;  // a stage's query tiles: QSTACK [2][NS * BQ][64], else per stream
    static_assert(128 * (CA_FB_PRODUCER_REGS + 2 * CA_FB_CONSUMER_REGS) <= 65536, "register file");
    __shared__ __align__(8) uint64_t bar_full[ST], bar_empty[ST], bar_stg_full, bar_stg_empty;
    bf16* Ks = ca_wg_smem();                            // [2][HK][DH]: keys 0-63, 64-127 of the block
    bf16* Vs = Ks + BKV * DH;                           // [2][HK][DH]
    bf16* Ring = Vs + BKV * DH;                         // [ST][NS + 1][BQ][DH]: Q_0 (, Q_1: stacked, QSTACK), d o
    bf16* dSs = Ring + ST * (NS + 1) * BQ * DH;         // [2 step parities][NS][BQ][BKV] (STACK: [2][NS * BQ][BKV])
    float* stg = (float*)(dSs + 2 * NS * BQ * BKV);     // [NS][BQ][DH], swizzled (ca_fb_swz)
    float* Sc = stg + NS * BQ * DH;                     // [ST][NSC][BQ]
    const int T = sh.T, H = sh.H, nq = ca_fb_rows(T) / BQ;
    int n, bh;
    ca_fb_block_coords(blockIdx.x, T, sh.B * H, &n, &bh);
    const int h = bh % H, b = bh / H;
    // step i: query tile nq - 1 - i (rows q0 = that * BQ), down to the tile of the block's first key
    const int kvh = h / (H / sh.Hkv), k0 = n * BKV, nsteps = nq - k0 / BQ;
    if (threadIdx.x == 0) {
        for (int st = 0; st < ST; st++) {
            ca_mbar_init(&bar_full[st], 32);  // the loader warp's lanes (the tiles' bytes come on top)
            ca_mbar_init(&bar_empty[st], 256);
        }
        ca_mbar_init(&bar_stg_full, 256);
        ca_mbar_init(&bar_stg_empty, 1);
    }
    __syncthreads();

    if (threadIdx.x < 128) {  // ---- producer warpgroup
        ca_setmaxnreg_dec<CA_FB_PRODUCER_REGS>();
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        if (warp == 0) {  // loader: the tiles by TMA (lane 0), the per-query scalars by plain loads (all lanes)
            for (int i = 0; i < nsteps; i++) {
                const int st = i % ST, q0 = (nq - 1 - i) * BQ;
                if (i >= ST) ca_mbar_wait(&bar_empty[st], (i / ST - 1) & 1);
                if (lane == 0) {
                    bf16* stage = Ring + st * (NS + 1) * BQ * DH;
                    ca_mbar_expect_tx(&bar_full[st], ((NS + 1) * BQ + (i == 0 ? 2 * BKV : 0)) * DH * 2);
                    if (i == 0)
                        for (int half = 0; half < 2; half++) {
                            ca_tma_load_tile<DH, HK>(Ks + half * HK * DH, &tm.k, k0 + half * HK, kvh, b, &bar_full[st]);
                            ca_tma_load_tile<DH, HK>(Vs + half * HK * DH, &tm.v, k0 + half * HK, kvh, b, &bar_full[st]);
                        }
                    for (int s = 0; s < NS; s++)
                        ca_tma_load_tile<DH, BQ>(stage + s * BQ * (QSTACK ? 64 : DH), s ? &tm.qn : &tm.q, q0, h, b, &bar_full[st],
                                                 (QSTACK ? NS : 1) * BQ * 64);
                    ca_tma_load_tile<DH, BQ>(stage + NS * BQ * DH, &tm.dO, q0, h, b, &bar_full[st]);
                }
                float pre[NSC];
                ca_dkdv_load_scalars<NS, BQ>(pre, sh, lse, delta, lam_logit, q0, k0, T, h, b);
                ca_dkdv_store_scalars<NSC, BQ>(Sc + st * NSC * BQ, pre, 0);
                ca_mbar_arrive(&bar_full[st]);  // release: the scalars are visible with the phase
            }
        } else if (warp == 3) {  // dQ writer
            // Step i: wait for the staging tile, retire step i-1 (its additions complete -> release its
            // counter: a step late, so the wait for completion overlaps the consumers' step), take tile
            // m's turn, add, and hand the staging back as soon as the bulk reads are done.
            int* prev = NULL;
            for (int i = 0; i < nsteps; i++) {
                const int m = nq - 1 - i;
                int* cnt = sem + (size_t)bh * nq + m;
                ca_mbar_wait(&bar_stg_full, i & 1);
                if (prev) ca_fb_retire(prev, lane);
                if (lane == 0) {
#if !CA_FB_UNORDERED
                    while (ca_ld_acquire_gpu(cnt) != n) {}  // blocks 0 .. n-1 have added tile m
#endif
                }
                __syncwarp();
                ca_fence_proxy_async_all();  // the staging stores and the earlier blocks' additions come before ours
                if (lane == 0) {  // one bulk operation per stream: the tile's rows are contiguous in both
                    for (int s = 0; s < NS; s++) {
                        float* dst = dq_acc + ((((size_t)s * sh.B + b) * H + h) * (size_t)nq + m) * BQ * DH;
                        if (n == 0) ca_bulk_store(dst, stg + s * BQ * DH, BQ * DH * 4);  // the first partial sum
                        else ca_bulk_reduce_add_f32(dst, stg + s * BQ * DH, BQ * DH * 4);
                    }
                    ca_bulk_commit();
                    ca_bulk_wait_read0();
                }
                __syncwarp();
                if (lane == 0) ca_mbar_arrive(&bar_stg_empty);
                prev = cnt;
            }
            ca_fb_retire(prev, lane);
        }
        return;  // warps 1 and 2 have nothing to do
    }

    // ---- consumer warpgroup w: keys k0 + 64w ..
    ca_setmaxnreg_inc<CA_FB_CONSUMER_REGS>();
    const int ct = threadIdx.x - 128, w = ct / 128, wi = (ct / 32) % 4, lane = ct % 32, g = lane >> 2, tq = lane & 3;
    const int wk = wi * 16, k0w = k0 + w * HK, keys[2] = {k0w + wk + g, k0w + wk + g + 8};
    const bf16* Kw = Ks + w * HK * DH;
    const bf16* Vw = Vs + w * HK * DH;
    const float scale = 1.0f / sqrtf((float)DH), sl2 = scale * CA_LOG2E;
    float dka[DH / 8][4], dva[DH / 8][4];
    ca_zero_acc<DH>(dka);
    ca_zero_acc<DH>(dva);
    for (int i = 0; i < nsteps; i++) {
        const int st = i % ST, q0 = (nq - 1 - i) * BQ;
        const bf16* stage = Ring + st * (NS + 1) * BQ * DH;
        const bf16* Ot = stage + NS * BQ * DH;
        const float* sc_ = Sc + st * NSC * BQ;
        bf16* dsb = dSs + (i & 1) * NS * BQ * BKV;
        ca_mbar_wait(&bar_full[st], (i / ST) & 1);
        float dpt[BQ / 8][4];  // dP^T = V dO^T: [64 keys][BQ queries], both streams
        ca_zero_acc<BQ>(dpt);
        const bool mask = q0 < k0w + HK;  // queries before keys
        using Frag = uint32_t[BQ / 16][4];  // (a named type: cudafe++ 13.0 crashes on the dependent array type in a lambda)
        // stream s's P (packed to pa, for dV) and dS (dsa, for dK) from S^T in stt; dS^T of this warp's 16
        // keys also into the stream's [BQ queries][128 keys] tile (128-byte swizzle, K-major for the dQ^T
        // product): matrix (key half kh, query block jq) is dsa[jq / 2][kh + 2 (jq & 1)]
        auto form = [&](int s, float (*stt)[4], Frag& pa, Frag& dsa) {
            float ds[BQ / 8][4];
            ca_dkdv_p_ds<NS, BQ>(stt, ds, dpt, sc_, s, q0, keys, mask, tq, sl2);
            ca_acc_to_a<BQ>(pa, stt);
            ca_acc_to_a<BQ>(dsa, ds);
            const int mi = lane >> 3, c = lane & 7;  // the matrix and column this lane addresses
#pragma unroll
            for (int kh = 0; kh < 2; kh++) {
                const int key = w * HK + wk + 8 * kh, qrow = 8 * mi + c;
                bf16* dst = STACK ? dsb + ca_wsw<NS * BQ>(s * BQ + qrow, key) : dsb + s * BQ * BKV + ca_wsw<BQ>(qrow, key);
                ca_stsm_x4_trans(dst, dsa[0][kh], dsa[0][kh + 2], dsa[1][kh], dsa[1][kh + 2]);
            }
            ca_wg_pin_a<BQ / 16>(pa);
            ca_wg_pin_a<BQ / 16>(dsa);
        };
        // dV += P^T dO, dK += dS^T Q_s, issued (not waited for). The streams run one after the other: issuing
        // both S^T together, with stream 1's soft-max under stream 0's dV, dK products, measured equal (PERF).
        auto issue_dkdv = [&](int s, Frag& pa, Frag& dsa) {
            ca_wg_fence();
            ca_wg_mm_rs<DH, BQ, BQ>(dva, pa, Ot);
            if constexpr (QSTACK) ca_wg_mm_rs<DH, BQ, NS * BQ>(dka, dsa, stage + s * BQ * 64);  // rows 32s .. of the stacked tile
            else ca_wg_mm_rs<DH, BQ, BQ>(dka, dsa, stage + s * BQ * DH);
            ca_wg_commit();
        };
        // stream s's P and dS (from its S^T columns stt) and their dV, dK products, waited for
        auto stream_dkdv = [&](int s, float (*stt)[4]) {
            Frag pa, dsa;
            form(s, stt, pa, dsa);
            issue_dkdv(s, pa, dsa);
            ca_wg_wait<0>();
            ca_wg_pin<DH>(dva);
            ca_wg_pin<DH>(dka);
            ca_wg_pin_a<BQ / 16>(pa);
            ca_wg_pin_a<BQ / 16>(dsa);
        };
        if constexpr (QSTACK) {
            float stt[NS * BQ / 8][4];  // S^T = K [Q_0; Q_1]^T: stream s's queries are columns 32s .. 32s+31
            ca_zero_acc<NS * BQ>(stt);
            ca_wg_fence();
            ca_wg_mm_ss<DH, BQ, HK>(dpt, Vw, Ot);
            ca_wg_mm_ss<DH, NS * BQ, HK>(stt, Kw, stage);
            ca_wg_commit();
            ca_wg_wait<0>();
            ca_wg_pin<BQ>(dpt);
            ca_wg_pin<NS * BQ>(stt);
#pragma unroll
            for (int s = 0; s < NS; s++) stream_dkdv(s, stt + s * (BQ / 8));
        } else {
#pragma unroll
            for (int s = 0; s < NS; s++) {
                float stt[BQ / 8][4];  // S^T = K Q^T
                ca_zero_acc<BQ>(stt);
                ca_wg_fence();
                if (s == 0) ca_wg_mm_ss<DH, BQ, HK>(dpt, Vw, Ot);
                ca_wg_mm_ss<DH, BQ, HK>(stt, Kw, stage + s * BQ * DH);
                ca_wg_commit();
                ca_wg_wait<0>();
                ca_wg_pin<BQ>(dpt);
                ca_wg_pin<BQ>(stt);
                stream_dkdv(s, stt);
            }
        }
        ca_mbar_arrive(&bar_empty[st]);  // every product reading the stage is done
        ca_fence_proxy_async();          // the stmatrix writes -> the tensor cores
        ca_named_sync(1, 256);           // both warpgroups' dS^T are in place
        if constexpr (STACK) {
            // dQ rows (stream, query) 0 .. 63 x head-dim columns 64w .. 64w+63 = dS (the stacked [64][128 keys]
            // tile) times K (its [keys][head dim] rows as the MN-major B operand), over the block's 128 keys
            float dq[HK / 8][4];
            ca_zero_acc<HK>(dq);
            ca_wg_fence();
#pragma unroll
            for (int kk = 0; kk < BKV / 16; kk++)
                ca_wgmma_ss64_tb(dq, ca_desc_k<NS * BQ>(dsb, kk), ca_desc_mn<HK>(Ks + (kk >> 2) * HK * DH, kk & 3, w));
            ca_wg_commit();
            ca_wg_wait<0>();
            ca_wg_pin<HK>(dq);
            if (i > 0) ca_mbar_wait(&bar_stg_empty, (i - 1) & 1);  // the writer has read the last step's staging
            // column group j = 4 jh + k, row half hr: ca_fb_stk_* (four pointers, immediate offsets)
            float* rowp = ca_fb_stk_rowp(stg, wi, w, g, tq);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float* p = ca_fb_stk_groupp(rowp, g, k);
#pragma unroll
                for (int jh = 0; jh < 2; jh++)
#pragma unroll
                    for (int hr = 0; hr < 2; hr++)
                        *(float2*)ca_fb_stk_pairp(p, jh, hr) = make_float2(dq[4 * jh + k][2 * hr], dq[4 * jh + k][2 * hr + 1]);
            }
        } else {
            // dQ^T rows 64w .. 64w+63 (head dim) x BQ queries, over the block's 128 keys
            float dq[NS][BQ / 8][4];
#pragma unroll
            for (int s = 0; s < NS; s++) ca_zero_acc<BQ>(dq[s]);
            ca_wg_fence();
#pragma unroll
            for (int s = 0; s < NS; s++)
#pragma unroll
                for (int kk = 0; kk < BKV / 16; kk++)
                    ca_wgmma_ss32_ta(dq[s], ca_desc_mn<HK>(Ks + (kk >> 2) * HK * DH, kk & 3, w),
                                     ca_desc_k<BQ>(dsb + s * BQ * BKV, kk));
            ca_wg_commit();
            ca_wg_wait<0>();
#pragma unroll
            for (int s = 0; s < NS; s++) ca_wg_pin<BQ>(dq[s]);
            if (i > 0) ca_mbar_wait(&bar_stg_empty, (i - 1) & 1);  // the writer has read the last step's staging
            // accumulator row = head-dim index 64w + wk + g (+8), column = query 8j + 2tq (+1)
#pragma unroll
            for (int s = 0; s < NS; s++)
#pragma unroll
                for (int j = 0; j < BQ / 8; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        stg[(s * BQ + 8 * j + 2 * tq + (e & 1)) * DH +
                            ca_fb_swz<NS>(8 * j + 2 * tq + (e & 1), w * HK + wk + g + 8 * (e >> 1))] = dq[s][j][e];
        }
        ca_fence_proxy_async();         // the staging stores -> the writer's bulk reads (async proxy)
        ca_mbar_arrive(&bar_stg_full);
    }
    ca_dkdv_store_partials<DH>(sh, dk_part, dv_part, dka, dva, keys, (size_t)b * T, T, h, scale);
}

// dq = (dq_sig + R_theta^T dq_noise) / sqrt(Dh) in bf16 and the theta partials of the query tile of 64
// at blockIdx.x (the wgmma dQ kernel's layout, [B * n_qtiles(64)][H][Dh / 2]), from the accumulators.
// Grid (n_qtiles(64), H, B) of 256 threads: thread t owns pair p = t % 64 of rows t / 64 + 4i.
template <int NS>
__global__ void __launch_bounds__(256)
ca_fb_dq_finish_kernel(CodaAttnShape sh, bf16* dq, float* dtheta_part, const float* dq_acc, const bf16* q, const bf16* theta) {
    constexpr int DH = 128, NP = DH / 2, RSTEP = 256 / NP;
    __shared__ float red[RSTEP][NP];
    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, T = sh.T, H = sh.H, nqt = gridDim.x;
    const int p = threadIdx.x % NP, r0 = threadIdx.x / NP;
    const size_t rows = (size_t)ca_fb_rows(T);
    const float* sig = dq_acc + ((size_t)b * H + h) * rows * DH;
    const float* noi = dq_acc + (((size_t)sh.B + b) * H + h) * rows * DH;
    const float scale = 1.0f / sqrtf((float)DH);
    float cs = 1.f, sn = 0.f, dth = 0.f;
    if (NS == 2) sincosf(__bfloat162float(theta[(size_t)h * NP + p]), &sn, &cs);
    for (int r = r0; r < 64; r += RSTEP) {
        const int row = qt * 64 + r;
        if (row >= T) break;
        const int col = ca_fb_swz<NS>(row, 2 * p);  // the accumulators' swizzle (rows of a tile: row % 32, same bits)
        const float2 a = *(const float2*)(sig + (size_t)row * DH + col);
        const size_t o = ((size_t)b * T + row) * H * DH + (size_t)h * DH + 2 * p;
        if (NS == 1) {
            *(uint32_t*)(dq + o) = ca_pack_bf16(a.x * scale, a.y * scale);
            continue;
        }
        const float2 nr = *(const float2*)(noi + (size_t)row * DH + col);
        const float nx = nr.x * scale, ny = nr.y * scale;
        const __nv_bfloat162 x = *(const __nv_bfloat162*)(q + o);
        const float x0 = __low2float(x), x1 = __high2float(x);
        *(uint32_t*)(dq + o) = ca_pack_bf16(a.x * scale + (nx * cs + ny * sn), a.y * scale + (ny * cs - nx * sn));
        dth += nx * (-x0 * sn - x1 * cs) + ny * (x0 * cs - x1 * sn);
    }
    if (NS == 1) return;
    red[r0][p] = dth;
    __syncthreads();
    if (r0 == 0) {
        float t = 0.f;
        for (int i = 0; i < RSTEP; i++) t += red[i][p];
        dtheta_part[(((size_t)b * nqt + qt) * H + h) * NP + p] = t;
    }
}
