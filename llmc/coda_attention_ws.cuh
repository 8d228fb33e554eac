// coda_attention_ws.cuh — the warp-specialized Hopper forward (FlashAttention-3's structure, issue 15):
// the wgmma forward of coda_attention_wgmma.cuh with its loads moved out of the consumers' way.
//
// Why: in ca_wg_forward_kernel every thread issues its share of the next K/V tile's cp.async, waits
// for its own copies and then meets every other thread at a __syncthreads, once per key tile of 64:
// the two stream warpgroups advance in lock-step and every step pays the copies' latency tail on the
// critical path (292 TFLOP/s at the 7B shape, T = 8192, H200, where cuDNN reaches ~530). Measured: 1.06-1.09x
// the wgmma forward for CoDA's two streams (AUTO uses it there), slower for one stream (one block per SM
// where the wgmma kernel fits two); the consumers' own chain of waits, not the loads, is what remains.
//
// Roles (block of 128 * (NS + 1) threads, one query tile of 64 rows, NS streams):
//   warpgroup 0      producer: stages the Q tiles, then every K/V tile of the key set in order into
//                    a ring of ST stages: causal key sets by TMA from one thread (CA_WS_TMA), bounded
//                    and continued ones by cp.async of 16 bytes from all 128 (the same tiles and zero
//                    rows as the wgmma kernel: CaKeyTiles covers every key set); gives up its registers
//                    (setmaxnreg.dec) since it only computes addresses
//   warpgroup 1 + s  consumer of stream s: the wgmma kernel's pipelined step (S_{t+1} and P_t V_t
//                    issued together while the soft-max of tile t+1 runs), registers raised
//                    (setmaxnreg.inc); the streams no longer wait for each other
// Hand-off through mbarriers in shared memory, one pair per stage:
//   full[st]   cp.async: 128 arrivals, each producer thread's after its copies of the tile have landed
//              (cp.async.wait_group) and after a proxy fence (fence.proxy.async: generic-proxy writes
//              made visible to the tensor cores' async-proxy reads); TMA: one arrival with the tile's
//              bytes, which the copy engine counts off as they land. Either way a consumer that has
//              seen the phase complete may issue wgmma on the tile
//   empty[st]  128 * NS arrivals: each consumer thread arrives once its products reading the tile
//              are done (wgmma.wait_group 0); the producer waits for it before refilling the stage
// Phases: tile t uses stage t % ST in round t / ST; a wait for round r waits for parity r & 1.
// Deadlock-free for ST >= 3: the producer's last wait before it publishes tile t-1 is for the release
// of tile t-ST, which the consumers make in step t-ST+1 <= t-2, before they wait for tile t-1.
// The math, the saved tensors and the outputs are the wgmma kernel's (the same products in the same
// order per row: the outputs are bitwise those of ca_wg_forward_kernel; tested).
#pragma once
#include <cudaTypedefs.h>  // CUtensorMap, the type of cuTensorMapEncodeTiled (TMA)
#include "hopper.cuh"

// ---------------------------------------------------------------------------------------------
// TMA, the tensor memory accelerator: one thread asks for a whole box of a tensor, the copy engine
// moves it into shared memory, and the destination stage's mbarrier counts the bytes as they land
// (complete_tx), so a phase completes only once its arrivals are in and its expected bytes arrived.
// The tensor-core kernels' tiles are [DH / 64][rows][64] bf16 with each 128-byte row's 16-byte chunks
// XOR-swizzled by the row's index mod 8 (ca_wsw): exactly how a box of {64 columns, rows} lands with
// CU_TENSOR_MAP_SWIZZLE_128B at a 1024-byte aligned address. Rows past the tensor's end land as zeros,
// the zero rows the cp.async loads write. Why: a 128-row K/V step of the forward is 4096 cp.async of 16
// bytes from the producer warpgroup, with their addresses, in the issue slots the consumers need; as
// TMA it is four instructions of one thread (FlashAttention-3's producer).

// The tensor maps of one launch, passed by value (__grid_constant__: the copy engine reads them from
// the kernel's parameter space). A [B][T][heads][DH] bf16 activation is the 4-D tensor {DH, T, heads,
// B} (q, qn, d o: heads = H; k, v: heads = Hkv) with boxes of {64 columns, rows, 1, 1}.
struct CaTmaMaps {
    CUtensorMap q, qn, k, v, dO;  // qn only with two streams, dO only in the backward
};
// A map of `base` with boxes of `rows` rows (the driver's encoder, reached through the runtime: no -lcuda)
static CUtensorMap ca_tma_map_heads(const void* base, int B, int T, int heads, int dh, int rows) {
    static PFN_cuTensorMapEncodeTiled_v12000 encode = NULL;
    if (!encode) {
        void* fn = NULL;
        cudaDriverEntryPointQueryResult found;
        const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
        if (e != cudaSuccess || found != cudaDriverEntryPointSuccess || !fn) {
            fprintf(stderr, "coda_attention: the driver offers no cuTensorMapEncodeTiled (TMA): %s\n", cudaGetErrorString(e));
            exit(1);
        }
        encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    }
    CUtensorMap m;
    const size_t row = (size_t)heads * dh * 2;  // bytes
    const cuuint64_t dims[4] = {(cuuint64_t)dh, (cuuint64_t)T, (cuuint64_t)heads, (cuuint64_t)B};
    const cuuint64_t strides[3] = {row, (cuuint64_t)dh * 2, row * T};  // of dims 1 .. 3
    const cuuint32_t box[4] = {64, (cuuint32_t)rows, 1, 1}, unit[4] = {1, 1, 1, 1};
    const CUresult r = encode(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, (void*)base, dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "coda_attention: cuTensorMapEncodeTiled failed (%d) for a [%d][%d][%d][%d] tensor, boxes of %d rows\n", (int)r, B, T,
                heads, dh, rows);
        exit(1);
    }
    return m;
}
// rows r0 .. r0+ROWS-1 of (head, batch row b) of a CaTmaMaps tensor into a [DH / 64][ROWS][64] tile,
// counted on bar: DH / 64 boxes (cstride: elements from one 64-column block to the next, ROWS * 64 in a
// tile of its own, more where the rows are part of a taller tile)
template <int DH, int ROWS>
__device__ __forceinline__ void ca_tma_load_tile(bf16* tile, const CUtensorMap* map, int r0, int head, int b, uint64_t* bar,
                                                 int cstride = ROWS * 64) {
#ifdef CA_WS_DEVICE
#pragma unroll
    for (int c = 0; c < DH / 64; c++)
        asm volatile(
            "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(
                ca_smem_u32(tile + c * cstride)),
            "l"((uint64_t)map), "r"(c * 64), "r"(r0), "r"(head), "r"(b), "r"(ca_smem_u32(bar))
            : "memory");
#else
    __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// forward. Grid: n_qtiles(64) * H * B blocks of 128 * (NS + 1) threads; dynamic smem ca_ws_fwd_smem.

// Compile-time switches for A/B runs (dev/PERF.md, "Warp-specialized forward": each measured on an H200;
// the defaults are the fastest, the others kept because the next versions build on them):
//   CA_WS_PINGPONG   1: with two streams the consumers take turns to issue their products (named
//                    barrier 1 + s is stream s's turn), FlashAttention-3's ping-pong, so that one's
//                    soft-max runs under the other's products. Measured equal to 0 (within 1%).
//   CA_WS_BK_CAUSAL  key tiles of causal key sets (bounded ones take 64: CaKeyTiles' bank flags come 64
//                    to a tile). 128 would halve the per-key cost of the waits and of the O rescale, but
//                    with ca_wg_pipeline's two steps an iteration ptxas spills (~300 bytes), and a loop of
//                    one step (no spills) is slower still (4.46 ms against 3.51 at the 7B shape, T 8192):
//                    64. With another value the causal and the one-block bounded key sets no longer give
//                    the same bits (kattn_bounded_single_block_equals_unbounded fails, as it should).
//   CA_WS_TMA        1: causal key sets load Q and K/V by TMA (one producer thread; ca_tma_load_tile),
//                    0: by the producer warpgroup's cp.async as bounded key sets do (their tiles come
//                    from the bank, the sequence and carried-in rows, in varying counts).
#ifndef CA_WS_TMA
#define CA_WS_TMA 1
#endif
#ifndef CA_WS_PINGPONG
#define CA_WS_PINGPONG 1
#endif
#ifndef CA_WS_BK_CAUSAL
#define CA_WS_BK_CAUSAL 64
#endif
template <bool BND>
__host__ __device__ constexpr int ca_ws_bk() { return BND ? 64 : CA_WS_BK_CAUSAL; }
// K/V stages: as many as fit in a block's 227 KB of dynamic shared memory (less the Q tiles, the 1 KB
// alignment slack and 2 KB kept for the static barriers and bank flags), at most 4
__host__ __device__ constexpr int ca_ws_stages(int dh, int ns, int bk) {
    return (232448 - 2048 - (ns * 64 * dh * 2 + 1024)) / (2 * bk * dh * 2) < 4 ? (232448 - 2048 - (ns * 64 * dh * 2 + 1024)) / (2 * bk * dh * 2)
                                                                              : 4;
}
template <int DH, int NS, bool BND>
constexpr int ca_ws_fwd_smem() { return (NS * 64 + 2 * ca_ws_stages(DH, NS, ca_ws_bk<BND>()) * ca_ws_bk<BND>()) * DH * 2 + 1024; }
// registers per thread after the hand-over: 128 * (PRODUCER + NS * CONSUMER) <= 65536
#define CA_WS_PRODUCER_REGS 56
#define CA_WS_CONSUMER_REGS(NS) ((NS) == 2 ? 224 : 240)

template <int DH, int NS, bool BND>
__global__ void __launch_bounds__(128 * (NS + 1), 1)
ca_ws_forward_kernel(CodaAttnShape sh, CodaAttnBank bank, bf16* a_sig, bf16* a_noise, float* lse, const bf16* q,
                     const bf16* qn, const bf16* k, const bf16* v, const __grid_constant__ CaTmaMaps tm) {
    constexpr int BQ = 64, BK = ca_ws_bk<BND>(), ST = ca_ws_stages(DH, NS, BK);
    constexpr bool TMA = CA_WS_TMA && !BND;  // tm's boxes: BQ rows of q, qn, BK of k, v (else unused)
    static_assert(ST >= 3, "the hand-off needs three stages or more (see the header)");
    static_assert(128 * (CA_WS_PRODUCER_REGS + NS * CA_WS_CONSUMER_REGS(NS)) <= 65536, "register file");
    __shared__ uint32_t bank_bits[BND ? CA_MAX_BANK_SLOTS / 32 : 1];
    __shared__ __align__(8) uint64_t bar_full[ST], bar_empty[ST], bar_q;
    bf16* Qs = ca_wg_smem();       // [NS][BQ][DH]
    bf16* Ks = Qs + NS * BQ * DH;  // [ST][BK][DH]
    bf16* Vs = Ks + ST * BK * DH;  // [ST][BK][DH]
    const int T = sh.T, H = sh.H, Hkv = sh.Hkv;
    int qt, h, b;
    ca_block_coords(ca_n_qtiles(sh, BQ), H, sh.B, 1, &qt, &h, &b);
    const CaQTile tl = ca_qtile(sh, qt, BQ);
    if (tl.q0 >= tl.qend) return;  // a tile past the end of a short last block (the whole block returns)
    const CaKeyTiles<DH, BK, BND> keys(sh, bank, k, v, tl, BQ, b, h / (H / Hkv), bank_bits);  // every thread
    const int nkt = keys.nkt, q0 = tl.q0;
    if (threadIdx.x == 0) {
        const int loaders = TMA ? 1 : 128;  // arrivals of a full phase
        for (int st = 0; st < ST; st++) {
            ca_mbar_init(&bar_full[st], loaders);
            ca_mbar_init(&bar_empty[st], 128 * NS);
        }
        ca_mbar_init(&bar_q, loaders);
    }
    __syncthreads();  // the barriers are initialised before anyone arrives or waits

    if (threadIdx.x < 128) {  // ---- producer warpgroup
        ca_setmaxnreg_dec<CA_WS_PRODUCER_REGS>();
        if constexpr (TMA) {  // one thread: every stage is one arrival with its bytes, then the boxes
            if (threadIdx.x != 0) return;
            const int kvh = h / (H / Hkv);
            ca_mbar_arrive_expect_tx(&bar_q, NS * BQ * DH * 2);
            for (int ss = 0; ss < NS; ss++) ca_tma_load_tile<DH, BQ>(Qs + ss * BQ * DH, ss ? &tm.qn : &tm.q, q0, h, b, &bar_q);
            for (int t = 0; t < nkt; t++) {
                const int st = t % ST, k0 = keys.tile(t).row0;
                if (t >= ST) ca_mbar_wait(&bar_empty[st], (t / ST - 1) & 1);
                ca_mbar_arrive_expect_tx(&bar_full[st], 2 * BK * DH * 2);
                ca_tma_load_tile<DH, BK>(Ks + st * BK * DH, &tm.k, k0, kvh, b, &bar_full[st]);
                ca_tma_load_tile<DH, BK>(Vs + st * BK * DH, &tm.v, k0, kvh, b, &bar_full[st]);
            }
            return;
        }
        const size_t qstride = (size_t)H * DH;
        for (int ss = 0; ss < NS; ss++)
            ca_wload_tile<DH, BQ, 128>(Qs + ss * BQ * DH, (ss ? qn : q) + (size_t)b * T * qstride + (size_t)h * DH, qstride, q0, T);
        ca_cp_async_commit();
        for (int t = 0; t < nkt; t++) {
            const int st = t % ST;
            if (t >= ST) ca_mbar_wait(&bar_empty[st], (t / ST - 1) & 1);  // round t/ST - 1 released the stage
            ca_wload_kv<DH, BK, 128>(Ks, Vs, keys.tile(t), st);
            ca_cp_async_commit();
            ca_cp_async_wait<1>();  // everything but tile t has landed: the Q tiles (t = 0) or tile t - 1
            ca_fence_proxy_async();
            ca_mbar_arrive(t == 0 ? &bar_q : &bar_full[(t - 1) % ST]);
        }
        ca_cp_async_wait<0>();
        ca_fence_proxy_async();
        ca_mbar_arrive(&bar_full[(nkt - 1) % ST]);
        return;
    }

    // ---- consumer warpgroup of stream s
    ca_setmaxnreg_inc<CA_WS_CONSUMER_REGS(NS)>();
    const int ct = threadIdx.x - 128, warp = ct / 32, lane = ct % 32, s = warp / 4, wr = (warp % 4) * 16;
    const int g = lane >> 2, tq = lane & 3;
    const int row0 = q0 + wr + g, row1 = row0 + 8;
    const bf16* Qt = Qs + s * BQ * DH;
    const float sl2 = (1.0f / sqrtf((float)DH)) * CA_LOG2E;
    float o[DH / 8][4], sc[BK / 8][4];
    ca_zero_acc<DH>(o);
    ca_zero_acc<BK>(sc);
    constexpr bool PINGPONG = CA_WS_PINGPONG && NS == 2;
    if (PINGPONG && s == 1) ca_named_arrive(1, 256);  // stream 0 takes the first turn
    ca_mbar_wait(&bar_q, 0);
    ca_mbar_wait(&bar_full[0], 0);
    ca_wg_fence();
    ca_wg_mm_ss<DH, BK, BQ>(sc, Qt, Ks);  // S_0
    ca_wg_commit();
    ca_wg_commit();  // an empty group in place of "P_{-1} V_{-1}", so every step waits the same way
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    if (BND) ca_softmax_init(m, l, ca_empty_ring(sh, tl.j), tq);
    // One P register set (FlashAttention-3's order): the soft-max of S_kt runs in fp32 in place while
    // P_{kt-1} V_{kt-1} may still run, and P_kt is packed only after that product is done, so the
    // registers of the previous P are reused (with BK = 128 two sets would not fit in a consumer's 224).
    using PFrag = uint32_t[BK / 16][4];  // (a named type: cudafe++ 13.0 crashes on the dependent array type in the lambda)
    PFrag pf;
    auto step = [&](int kt, PFrag& p, PFrag&, auto last) {
        ca_wg_wait<1>();  // S_kt is done (P_{kt-1} V_{kt-1} may still run)
        ca_wg_pin<BK>(sc);
        float alpha[2];
        ca_fwd_softmax_tile<BK, BND>(sc, m, l, alpha, keys, kt, bank_bits, tl, wr, row0, row1, tq, sl2);
        ca_wg_wait<0>();  // P_{kt-1} V_{kt-1} is done: o may be rescaled, p refilled, tile kt-1's stage handed back
        ca_wg_pin<DH>(o);
        ca_wg_pin_a<BK / 16>(p);
        if (kt > 0) ca_mbar_arrive(&bar_empty[(kt - 1) % ST]);
        ca_acc_to_a<BK>(p, sc);
        ca_rescale_rows<DH>(o, alpha);
        if (!decltype(last)::value) ca_mbar_wait(&bar_full[(kt + 1) % ST], ((kt + 1) / ST) & 1);
        ca_zero_acc<BK>(sc);
        ca_wg_pin<DH>(o);
        ca_wg_pin_a<BK / 16>(p);
        if (PINGPONG) ca_named_sync(1 + s, 256);  // this stream's turn
        ca_wg_fence();
        if (!decltype(last)::value) ca_wg_mm_ss<DH, BK, BQ>(sc, Qt, Ks + ((kt + 1) % ST) * BK * DH);
        ca_wg_commit();
        ca_wg_mm_rs<DH, BK, BK>(o, p, Vs + (kt % ST) * BK * DH);
        ca_wg_commit();
        if (PINGPONG) ca_named_arrive(2 - s, 256);  // the other stream's turn
    };
    ca_wg_pipeline(nkt, step, pf, pf, o);
    if (PINGPONG && s == 0) ca_named_sync(1, 256);  // stream 1's last hand-over: every arrival is matched
    ca_forward_store<DH>(sh, s ? a_noise : a_sig, lse, o, m, l, row0, row1, tl.qend, tq, s, h, b);
}
