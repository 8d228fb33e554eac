// bank_scan.cuh — the bounded state's bank scan on the GPU (bounded "phase 2" training, scan-then-attend):
// per layer, once q/k/v and the write gates of the whole sequence exist, walk the blocks of every
// sequence once, apply each block's evictions and bank updates exactly as the CPU reference's
// bank_write_block does (docs/spec.md §3.1 with §3.3 exact and §3.4 summary bank), and keep per block the bank
// state that block attends to; one attention launch then serves all blocks. The backward is the
// reverse scan (docs/spec.md §4): bank-slot gradients go to the evicted tokens' k, v and gates and to eta.
// The oracle is llmc/cpu/banks.h + the bounded loops of llmc/cpu/attention.h; every decision (which
// token goes to which slot, every flag, the candidate lists) is bit-identical to it in both builds
// (see "Numerics" below).
//
// Shape legend: B batch rows, T tokens per row, S = block_size, nb = n_blocks = ceil(T / S), block j =
// tokens [jS, min(T, jS + S)); W ring, Me exact slots, Ms summary slots, Mb = Me + Ms, Hkv KV heads, Dh
// head dim, lf = Dh / 2 (summary keys route and blend on dims [lf, Dh)); Ts_max =
// summary_candidates_per_block. Token (b, t) is row b*T + t; t is also its position (training starts at 0).
//
// Inputs:  k, v [B*T][Hkv*Dh] floatX (RoPE'd keys);  gate [B*T] fp32 (after the sigmoid; 1 with write
//          policy none);  eta_logit [Hkv] floatX;  init_k, init_v [B][Hkv][Mb][Dh] fp32 or NULL (zeros).
// Tape (bank_tape_bytes, one allocation carved by bank_tape_carve, each buffer 256-byte aligned):
//   k, v         [B][nb][Hkv][Mb][Dh] floatX  bank as block j attends to it: before block j's write
//   allowed      [B][nb][Mb] u8               1 = attendable (used slot; every slot when !mask_unused_memory)
//   src          [B][nb][Me] int              token an exact slot holds, -1 none
//   n_cand       [B][nb] int                  summary candidates Ts of block j's write (0: no summary update)
//   cand_tok     [B][nb][Ts_max] int          their tokens, in candidate order
//   cand_slot    [B][nb][Ts_max] int          summary slot each was routed to
//   cand_w       [B][nb][Ts_max] fp32         averaging weight (gate if kept else 0; 1 with policy none)
//   slot_active, slot_new [B][nb][Ms] u8      slot got weight > 0 / was unused and is overwritten (eta 1)
//   slot_cnt     [B][nb][Ms] fp32             its total weight
//   (the ring is not stored: after block j-1's write it holds exactly tokens [max(0, jS-W), jS) of the
//   row, which the attention reads from k/v directly; the write log entries exist for every block,
//   all zero when the write evicted nothing into the summary bank)
// Scratch (bank_scan_scratch_bytes, carved by bank_scan_carve_scratch):
//   state_k, state_v [B][Hkv][Mb][Dh] fp32    the live state; after the forward: the state after the
//                                             last block's write (what a prefill would continue from)
//   final_e [B][3][Me] int, final_s [B][Ms] int   after the forward: the exact slots' used flags, LRU
//                                             stamps and sources, the summary slots' used flags
//   cand   [B][nb][t_cap] int                 candidate list of each write (both banks take a prefix)
//   cand_g [B][nb][t_cap] fp32                their gates
//   dw     [B][nb][Hkv][Ts_max] fp32          backward: per-head gate gradient of each candidate
//   deta_part [B][Hkv][Ms] fp32               backward: eta gradient per (row, head, slot)
// Backward inputs: d_bank_k, d_bank_v [B][nb][Hkv][Mb][Dh] fp32 = dL/d(tape k/v of block j) as block
// j's attention used them; outputs accumulated (+=): dk_acc, dv_acc [B*T][Hkv*Dh] fp32 (NULL allowed
// with detach_evicted), dgate [B*T] fp32 (d loss / d gate value, before the sigmoid; NULL allowed with
// detach_evicted or policy none), deta [Hkv] fp32 (NULL = frozen).
//
// Why snapshots and not a compact decision log that the attention replays: an exact slot is a copy of
// one token and could be named by its index, but a summary slot is an EMA blend over every earlier
// write, so rebuilding the bank of block j from a log means re-running j blocks of the scan — inside
// every attention tile, or in a second pass that materialises the same snapshots anyway. Stored
// snapshots make the bank one contiguous [Mb][Dh] K/V tile per (b, j, head): the attention treats it
// like any other key tile, its backward writes dbank in the same layout, and the reverse scan reads
// the pre-write summary contents it needs (the EMA's "old" term) from the same place. Cost: B*nb*Hkv*
// Mb*Dh*4 bytes per layer in bf16, half the sequence's own k/v at the 7B shape (W = S = 256,
// Mb = 128): 16.8 MB per layer at T = 8192.
//
// Kernels.
//   Candidates: grid (nb, B), every write's candidate list at once (gates only, no state): the stable
//     ranks of the evicted gates give the by-gate order (highest first, ties by index) and the
//     reference's PyTorch-CUDA top-k order (above the T-th largest in index order, then its ties).
//   Forward scan: one thread-block cluster of C = min(Hkv, 8) CTAs per batch row (C = 1 on pre-Hopper
//     binaries), CTA r owning KV heads [r*Hkv/C, (r+1)*Hkv/C) of the live state; 512 threads. Per write:
//     A. each CTA stages the candidates' k/v rows and scores them against the slots for its heads
//        (per-head cosines, in smem; with C = 1 the head sum is formed here, in head order);
//     B1. cluster barrier; CTA r sums the heads (DSMEM, head order 0..Hkv-1) for candidates t = r mod C
//         and takes the argmaxes (exact best/bidx, summary route);
//     B2. cluster barrier; every CTA gathers all of them and takes the remaining decisions (novelty,
//         LRU victims, caps, stamps, weights, per-slot totals) redundantly and identically;
//     C. each CTA updates its heads' slots (exact copies, summary EMA), writes the next snapshot and
//        prefetches the next write's candidate list.
//     Resident mode (one head per CTA and its state fits in smem: the 7B and SmolLM2 shapes on an
//     H100) keeps the head's live state in shared memory for the whole scan; staged mode keeps it in
//     the global scratch and stages each head's slot operands before scoring (bs_smem_layout).
//     The cosines are the work (Ts*Ms*Dh/2 + Te*Me*Dh products per head and write, with no FMA): one
//     head per SM keeps a 7B write at a few microseconds.
//   Reverse scan: (1) grid (Ms, Hkv, B), one CTA per summary slot and head: the slot's gradient lives in
//     registers (one thread per dim) and walks the writes backwards through the EMA; (2) grid (Me,
//     Hkv, B): exact-slot gradients to the tokens they copy (a token lives in one slot, so each token's
//     sum is formed by one thread); (3) the per-head gate gradients summed in head order; (4) eta's
//     per-(row, slot) parts summed in a fixed order. No floating-point atomics anywhere: every output
//     is bitwise reproducible.
//
// Numerics. Decisions must equal the CPU's bit for bit, so every routing number is formed exactly as
// llmc/cpu/banks.h forms it in fp32: cosine = (sum_d a*b, d ascending) / (max(sqrt(sum a*a), 1e-6) *
// max(sqrt(sum b*b), 1e-6)), the head mean = ((0 + cos_0) + cos_1 ...) / Hkv, with __fmul_rn / __fadd_rn
// so nvcc cannot contract to FMA; argmaxes take the first maximum. The live state is fp32 and its
// updates use the CPU's expressions in the CPU's order (candidate order for the per-slot sums), so the
// state is the CPU's state bit for bit in the FP32 build, and equally in the BF16 build relative to
// the CPU run on the same (bf16-valued) inputs: only the snapshots are rounded to bf16. The one
// library function on the path is exp in sigmoid(eta_logit), here formed correctly rounded through
// double; glibc's expf agrees for all but rare arguments, where the state then differs by an ulp.
#pragma once
#include <limits.h>
#include <math.h>
#include <string.h>
#include "cuda_common.cuh"
#include "config.h"
#if defined(__CUDACC__)
#include <cooperative_groups.h>
#endif

// Shapes of one layer's scan; cfg is a copy of the model config (n_blocks = ceil(T / block_size)).
// A forward that continues a state (inference, B = 1: a prompt after a loaded state, the streaming
// perplexity's next chunk) has the ring's `hist` tokens (0..W, oldest first) at rows [-hist, 0) of
// k, v and gate, in front of the sequence, and row 0 at absolute position pos0 (LRU stamps and slot
// sources are absolute positions); training starts empty: hist = pos0 = 0, which every
// zero-initialised shape has.
typedef struct {
    ModelConfig cfg;
    int B, T, n_blocks;
    int hist, pos0;
} BankScanShape;

// Where a forward starts: the banks' contents and flags before its first write (NULL pointers: zero
// contents, nothing used; a NULL BankScanInit: both).
typedef struct {
    const float *k, *v;          // [B][Hkv][Mb][Dh] fp32
    const int *e, *s;            // [B][3][Me] exact used / LRU stamp / source, [B][Ms] summary used (final_e / final_s)
} BankScanInit;

typedef struct {
    floatX* k;                   // [B][n_blocks][Hkv][Mb][Dh]  slots [0,Me) exact, [Me,Mb) summary
    floatX* v;                   // same
    unsigned char* allowed;      // [B][n_blocks][Mb]
    int* src;                    // [B][n_blocks][Me]
    int* n_cand;                 // [B][n_blocks]
    int* cand_tok;               // [B][n_blocks][Ts_max]
    int* cand_slot;              // [B][n_blocks][Ts_max]
    float* cand_w;               // [B][n_blocks][Ts_max]
    unsigned char* slot_active;  // [B][n_blocks][Ms]
    unsigned char* slot_new;     // [B][n_blocks][Ms]
    float* slot_cnt;             // [B][n_blocks][Ms]
} BankTape;

// The scratch buffers (layout above). Exposed so that a caller may read the final state after a
// forward (state_k/state_v and the final_* flags: what a decode continues from, llmc/decode.cuh);
// nothing in it survives between calls otherwise.
typedef struct {
    float *state_k, *state_v;    // [B][Hkv][Mb][Dh]
    int* final_e;                // [B][3][Me] after the last write: exact slot used (0/1), LRU stamp, source token (-1 none)
    int* final_s;                // [B][Ms] after the last write: summary slot used (0/1)
    int* cand;                   // [B][n_blocks][t_cap]
    float* cand_g;               // [B][n_blocks][t_cap] their gates
    float* dw;                   // [B][n_blocks][Hkv][Ts_max]
    float* deta_part;            // [B][Hkv][Ms]
} BankScratch;

// ---------------------------------------------------------------------------------------------
// Derived sizes, shared by host and device

__host__ __device__ __forceinline__ int bs_min(int a, int b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int bs_max(int a, int b) { return a > b ? a : b; }
__host__ __device__ __forceinline__ int bs_cdiv(int a, int b) { return (a + b - 1) / b; }

typedef struct {
    int B, T, nb, S, W, Me, Ms, Mb, Hkv, Dh, lf, kvd;
    int hist, pos0;              // continuation (BankScanShape): ring rows before row 0, position of row 0
    int te_cpb, ts_cpb;          // candidates per block offered to each bank (0 when the bank has no slots)
    int te_cap, ts_cap, t_cap;   // most candidates a write can have: a write evicts at most S tokens
    int ts_stride;               // Ts_max: the tape's candidate row (summary_candidates_per_block)
} BankDims;

static inline BankDims bank_dims(const BankScanShape* s) {
    const ModelConfig* c = &s->cfg;
    BankDims d;
    memset(&d, 0, sizeof(d));
    d.B = s->B; d.T = s->T; d.nb = s->n_blocks; d.S = c->block_size; d.W = c->window;
    d.Me = c->n_exact; d.Ms = c->n_summary; d.Mb = d.Me + d.Ms; d.Hkv = c->n_kv_heads; d.Dh = c->head_dim;
    d.lf = d.Dh / 2; d.kvd = d.Hkv * d.Dh;
    d.hist = s->hist; d.pos0 = s->pos0;
    d.te_cpb = d.Me > 0 ? c->exact_candidates_per_block : 0;
    d.ts_cpb = d.Ms > 0 ? c->summary_candidates_per_block : 0;
    d.te_cap = bs_min(d.te_cpb, d.S);
    d.ts_cap = bs_min(d.ts_cpb, d.S);
    d.t_cap = bs_max(d.te_cap, d.ts_cap);
    d.ts_stride = c->summary_candidates_per_block;
    return d;
}

// The tokens block j's write evicts: [e0, e0 + n) of its row (docs/spec.md §3.1: the ring held the last
// min(W, hist + jS) tokens before the block, carried-in rows counting; the oldest beyond W of ring +
// block go), and how many of them each bank is offered (Te, Ts; the candidate list is max(Te, Ts)
// long, each bank takes a prefix). e0 < 0: carried-in ring rows.
__host__ __device__ __forceinline__ void bs_block_evict(const BankDims* d, int j, int* e0, int* n, int* Te, int* Ts) {
    int t0 = j * d->S, len = bs_min(d->S, d->T - t0);
    int a = bs_max(-d->hist, t0 - d->W), e1 = bs_max(a, t0 + len - d->W);
    *e0 = a;
    *n = e1 - a;
    *Te = bs_min(d->te_cpb, *n);
    *Ts = bs_min(d->ts_cpb, *n);
}

// Carves `bytes` at the next 256-byte boundary of base (NULL base: sizes only).
static inline size_t bs_carve(void** p, size_t off, size_t bytes, char* base) {
    off = (off + 255) & ~(size_t)255;
    *p = base ? (void*)(base + off) : NULL;
    return off + bytes;
}

static inline size_t bank_tape_layout(BankTape* t, char* base, const BankScanShape* s) {
    BankDims d = bank_dims(s);
    size_t bn = (size_t)d.B * d.nb, kv = bn * d.Hkv * d.Mb * d.Dh, off = 0;
    void* p;
    off = bs_carve(&p, off, kv * sizeof(floatX), base); t->k = (floatX*)p;
    off = bs_carve(&p, off, kv * sizeof(floatX), base); t->v = (floatX*)p;
    off = bs_carve(&p, off, bn * d.Mb, base); t->allowed = (unsigned char*)p;
    off = bs_carve(&p, off, bn * d.Me * sizeof(int), base); t->src = (int*)p;
    off = bs_carve(&p, off, bn * sizeof(int), base); t->n_cand = (int*)p;
    off = bs_carve(&p, off, bn * d.ts_stride * sizeof(int), base); t->cand_tok = (int*)p;
    off = bs_carve(&p, off, bn * d.ts_stride * sizeof(int), base); t->cand_slot = (int*)p;
    off = bs_carve(&p, off, bn * d.ts_stride * sizeof(float), base); t->cand_w = (float*)p;
    off = bs_carve(&p, off, bn * d.Ms, base); t->slot_active = (unsigned char*)p;
    off = bs_carve(&p, off, bn * d.Ms, base); t->slot_new = (unsigned char*)p;
    off = bs_carve(&p, off, bn * d.Ms * sizeof(float), base); t->slot_cnt = (float*)p;
    return off;
}
static inline size_t bank_tape_bytes(const BankScanShape* s) {
    BankTape t;
    return bank_tape_layout(&t, NULL, s);
}
static inline void bank_tape_carve(BankTape* t, void* mem, const BankScanShape* s) { bank_tape_layout(t, (char*)mem, s); }

static inline size_t bank_scratch_layout(BankScratch* w, char* base, const BankScanShape* s) {
    BankDims d = bank_dims(s);
    size_t st = (size_t)d.B * d.Hkv * d.Mb * d.Dh, bn = (size_t)d.B * d.nb, off = 0;
    void* p;
    off = bs_carve(&p, off, st * sizeof(float), base); w->state_k = (float*)p;
    off = bs_carve(&p, off, st * sizeof(float), base); w->state_v = (float*)p;
    off = bs_carve(&p, off, (size_t)d.B * 3 * d.Me * sizeof(int), base); w->final_e = (int*)p;
    off = bs_carve(&p, off, (size_t)d.B * d.Ms * sizeof(int), base); w->final_s = (int*)p;
    off = bs_carve(&p, off, bn * d.t_cap * sizeof(int), base); w->cand = (int*)p;
    off = bs_carve(&p, off, bn * d.t_cap * sizeof(float), base); w->cand_g = (float*)p;
    off = bs_carve(&p, off, bn * d.Hkv * d.ts_stride * sizeof(float), base); w->dw = (float*)p;
    off = bs_carve(&p, off, (size_t)d.B * d.Hkv * d.Ms * sizeof(float), base); w->deta_part = (float*)p;
    return off;
}
static inline size_t bank_scan_scratch_bytes(const BankScanShape* s) {
    BankScratch w;
    return bank_scratch_layout(&w, NULL, s);
}
static inline void bank_scan_carve_scratch(BankScratch* w, void* mem, const BankScanShape* s) {
    bank_scratch_layout(w, (char*)mem, s);
}

// Everything a kernel of this file reads (one struct by value; the pointers a kernel does not use are NULL).
typedef struct {
    BankDims d;
    int C, hpc;                   // forward: CTAs per row (cluster), most KV heads one CTA owns
    int policy_none, refresh_on_hit, overwrite_on_insert, mask_unused, order_ref, detach, cross;
    float thr_e, thr_s, match_thr, novelty_thr;
    const floatX *k, *v, *eta_logit;
    const float *gate, *init_k, *init_v;
    const int *init_e, *init_s;   // BankScanInit's flags (NULL: nothing used)
    BankTape tape;
    BankScratch w;
    const float *d_bank_k, *d_bank_v;
    float *dk_acc, *dv_acc, *dgate, *deta;
} BankScanParams;

// ---------------------------------------------------------------------------------------------
// Device helpers

#define BS_THREADS 512          // forward scan CTA
#define BS_WARPS (BS_THREADS / 32)
#define BS_MAX_CLUSTER 8        // portable cluster size
#define BS_CAND_THREADS 256

// Cluster primitives. Pre-Hopper binaries launch clusters of one CTA, where a peer is the CTA itself.
template <class P>
__device__ __forceinline__ P* bs_peer(P* p, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    return cooperative_groups::this_cluster().map_shared_rank(p, (unsigned)rank);
#else
    (void)rank;
    return p;
#endif
}
__device__ __forceinline__ void bs_cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cooperative_groups::this_cluster().sync();
#else
    __syncthreads();
#endif
}

// sigmoid as the CPU reference forms it in fp32: 1 / (1 + e^-x) with e^-x rounded to fp32 (here
// correctly rounded through double) and IEEE + and /.
__device__ __forceinline__ float bs_sigmoid(float x) {
    float e = (float)exp(-(double)x);
    return __fdiv_rn(1.0f, __fadd_rn(1.0f, e));
}

// max(||x||, 1e-6) over n dims, the sum of squares in index order (the CPU's cosine()).
__device__ __forceinline__ float bs_norm(const float* x, int n) {
    float s = 0.f;
    for (int i = 0; i < n; i++) s = __fadd_rn(s, __fmul_rn(x[i], x[i]));
    float r = __fsqrt_rn(s);
    return r > 1e-6f ? r : 1e-6f;
}

// One register tile of dot products: out[t * ldo + m] = sum_d A[t][d] * Bm[m][d], d ascending, for
// the TT rows t = tg*TT + i of A and the TM rows m = mg + i*n_mg of Bm (strided, so the lanes of a
// warp read consecutive padded Bm rows: no bank conflicts; A rows are warp broadcasts). Tile index
// `tile` = tg * n_mg + mg. Sums of products without FMA: the CPU's dot product bit for bit.
template <int TT, int TM>
__device__ __forceinline__ void bs_dot_tile(const float* A, int lda, int nA, const float* Bm, int ldb, int nB, int n,
                                            int tile, float* out, int ldo) {
    const int n_mg = bs_cdiv(nB, TM), tg = tile / n_mg, mg = tile - tg * n_mg;
    const float* ar[TT];
    const float* br[TM];
#pragma unroll
    for (int i = 0; i < TT; i++) ar[i] = A + (size_t)bs_min(tg * TT + i, nA - 1) * lda;
#pragma unroll
    for (int i = 0; i < TM; i++) br[i] = Bm + (size_t)bs_min(mg + i * n_mg, nB - 1) * ldb;
    float acc[TT][TM];
#pragma unroll
    for (int i = 0; i < TT; i++)
#pragma unroll
        for (int q = 0; q < TM; q++) acc[i][q] = 0.f;
    for (int d = 0; d < n; d++) {
        float a[TT], bv[TM];
#pragma unroll
        for (int i = 0; i < TT; i++) a[i] = ar[i][d];
#pragma unroll
        for (int q = 0; q < TM; q++) bv[q] = br[q][d];
#pragma unroll
        for (int i = 0; i < TT; i++)
#pragma unroll
            for (int q = 0; q < TM; q++) acc[i][q] = __fadd_rn(acc[i][q], __fmul_rn(a[i], bv[q]));
    }
#pragma unroll
    for (int i = 0; i < TT; i++)
#pragma unroll
        for (int q = 0; q < TM; q++) {
            int t = tg * TT + i, m = mg + q * n_mg;
            if (t < nA && m < nB) out[(size_t)t * ldo + m] = acc[i][q];
        }
}

// The forward scan's shared memory, in 4-byte words (ints and floats). Rows of slots and candidates
// are padded to ldx = Dh + 1 floats (ld_s = lf + 1 for staged summary keys), so that the lanes of a
// warp reading consecutive rows hit distinct banks.
//   Resident mode (a CTA owns one head and it fits: the 7B and SmolLM2 shapes on an H100): the live
//   state of the head is st_k/st_v in shared memory, the slot operands of the cosines are read from it
//   directly and the global scratch state is written once, at the end.
//   Staged mode (several heads per CTA, or too big): the live state stays in global scratch; per head,
//   the slot operands (exact values ev, summary keys sk dims lf..) are staged before scoring.
typedef struct {
    int resident;
    int part_head;                       // words of one head's scores: exact [te_cap][Me], then summary [ts_cap][Ms]
    int part;                            // clusters: [hpc][part_head] per-head cosines of this CTA's heads (read by
                                         // peers); one CTA per row (C = 1): [2][part_head] the dot products of the
                                         // head being scored, and the running head sum ((0 + cos_0) + cos_1) ...
    int st_k, st_v;                      // resident: the head's live state [Mb][ldx]
    int ev, sk;                          // staged: exact slot values [Me][ldx], summary slot keys [Ms][ld_s] (dims lf..)
    int cand_k, cand_v;                  // the write's candidates' rows for the head being processed [t_cap][ldx]
    int nse, nss, nce, ncs;              // norms: exact slots, summary slots, exact candidates, summary candidates
    int b1;                              // head-mean scores of the candidates this CTA reduces (C = 1: over part[0])
    int best, bidx, route;               // per candidate: exact best score and slot, summary route (read by peers)
    int tok, gate, w;                    // per candidate: token, gate, summary weight
    int order, target, flags;            // exact: LRU victims [Me], per candidate target slot and decision bits
    int writer, used_e, last_e, src_e;   // per exact slot: token written this block (-1), used, LRU stamp, source
    int used_s, cnt, sflag, bstart, bucket;  // per summary slot: used, weight, active|new bits, bucket start [Ms+1];
                                             // candidates sorted by (route, index) [ts_cap]
    int words;
} BsSmem;

__host__ __device__ __forceinline__ BsSmem bs_smem_layout(const BankDims* d, int C, int hpc, int resident) {
    BsSmem L;
    const int ldx = d->Dh + 1, ld_s = d->lf + 1;
    int o = 0;
    L.resident = resident;
    L.part_head = d->te_cap * d->Me + d->ts_cap * d->Ms;
    L.part = o; o += (C == 1 ? 2 : hpc) * L.part_head;
    L.st_k = o; o += resident ? d->Mb * ldx : 0;
    L.st_v = o; o += resident ? d->Mb * ldx : 0;
    L.ev = o; o += !resident && d->te_cap > 0 ? d->Me * ldx : 0;
    L.sk = o; o += !resident && d->ts_cap > 0 ? d->Ms * ld_s : 0;
    L.cand_k = o; o += d->t_cap * ldx;
    L.cand_v = o; o += d->t_cap * ldx;
    L.nse = o; o += d->Me;
    L.nss = o; o += d->Ms;
    L.nce = o; o += d->te_cap;
    L.ncs = o; o += d->ts_cap;
    L.b1 = o; o += C == 1 ? 0 : bs_cdiv(d->te_cap, C) * d->Me + bs_cdiv(d->ts_cap, C) * d->Ms;
    if (C == 1) L.b1 = L.part;  // the dot products' space, free once the head sums are formed
    L.best = o; o += d->te_cap;
    L.bidx = o; o += d->te_cap;
    L.route = o; o += d->ts_cap;
    L.tok = o; o += d->t_cap;
    L.gate = o; o += d->t_cap;
    L.w = o; o += d->ts_cap;
    L.order = o; o += d->Me;
    L.target = o; o += d->te_cap;
    L.flags = o; o += d->te_cap;
    L.writer = o; o += d->Me;
    L.used_e = o; o += d->Me;
    L.last_e = o; o += d->Me;
    L.src_e = o; o += d->Me;
    L.used_s = o; o += d->Ms;
    L.cnt = o; o += d->Ms;
    L.sflag = o; o += d->Ms;
    L.bstart = o; o += d->Ms + 1;
    L.bucket = o; o += d->ts_cap;
    L.words = o;
    return L;
}

// exact-candidate decision bits (flags[t])
#define BS_KEEP 1
#define BS_NOVEL 2
#define BS_HIT 4
#define BS_TOUCH 8
#define BS_OVERWRITE 16

// Copies n values, index i -> load(i) -> store(i, x), with BS_BATCH loads in flight per thread: a loop
// that waited for each load before issuing the next would pay the memory latency once per element.
#define BS_BATCH 16
template <class Load, class Store>
__device__ __forceinline__ void bs_copy(int n, Load load, Store store) {
    for (int i0 = threadIdx.x; i0 < n; i0 += BS_BATCH * BS_THREADS) {
        float x[BS_BATCH];
#pragma unroll
        for (int u = 0; u < BS_BATCH; u++) { const int i = i0 + u * BS_THREADS; x[u] = i < n ? load(i) : 0.f; }
#pragma unroll
        for (int u = 0; u < BS_BATCH; u++) { const int i = i0 + u * BS_THREADS; if (i < n) store(i, x[u]); }
    }
}

// Two consecutive floatX (an even element index: 4- or 8-byte aligned) in one store.
__device__ __forceinline__ void bs_store_pair(floatX* p, float a, float b) {
#if defined(ENABLE_FP32)
    *(float2*)p = make_float2(a, b);
#else
    *(__nv_bfloat162*)p = __floats2bfloat162_rn(a, b);
#endif
}

// ---------------------------------------------------------------------------------------------
// Candidates of every write: grid (nb, B). cand[b][j][0..max(Te, Ts)) = token indices in candidate
// order (docs/spec.md §3.1, llmc/cpu/banks.h topk_candidates): by gate, the stable descending ranks; the
// reference's order, with v* the gate of stable rank T-1: gates > v* by index, then gates == v* by
// index until T are taken.

__global__ void __launch_bounds__(BS_CAND_THREADS) bank_candidates_kernel(BankScanParams p) {
    const BankDims& D = p.d;
    const int j = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
    int e0, n, Te, Ts;
    bs_block_evict(&D, j, &e0, &n, &Te, &Ts);
    const int Tn = bs_max(Te, Ts);
    if (Tn == 0) return;
    const float* g = p.gate + (size_t)b * D.T + e0;
    int* out = p.w.cand + ((size_t)b * D.nb + j) * D.t_cap;
    float* out_g = p.w.cand_g + ((size_t)b * D.nb + j) * D.t_cap;
    __shared__ float vstar;
    __shared__ int n_gt;
    for (int i = tid; i < n; i += BS_CAND_THREADS) {
        const float gi = g[i];
        int rank = 0;
        for (int u = 0; u < n; u++) {
            const float gu = g[u];
            rank += gu > gi || (gu == gi && u < i);
        }
        if (!p.order_ref) { if (rank < Tn) { out[rank] = e0 + i; out_g[rank] = gi; } }
        else if (rank == Tn - 1) vstar = gi;
    }
    if (!p.order_ref) return;
    if (tid == 0) n_gt = 0;
    __syncthreads();
    const float vs = vstar;
    for (int i = tid; i < n; i += BS_CAND_THREADS) {
        if (!(g[i] > vs)) continue;
        int before = 0;  // fewer than Tn tokens are above the Tn-th largest gate
        for (int u = 0; u < i; u++) before += g[u] > vs;
        out[before] = e0 + i;
        out_g[before] = g[i];
        atomicAdd(&n_gt, 1);  // an integer count: order-independent
    }
    __syncthreads();
    const int above = n_gt;
    for (int i = tid; i < n; i += BS_CAND_THREADS) {
        if (!(g[i] == vs)) continue;
        int at = above;
        for (int u = 0; u < i; u++) at += g[u] == vs;
        if (at < Tn) { out[at] = e0 + i; out_g[at] = g[i]; }
    }
}

// ---------------------------------------------------------------------------------------------
// Forward scan: grid (C, B), cluster (C, 1, 1), BS_THREADS threads, dynamic smem bs_smem_layout.

__global__ void __launch_bounds__(BS_THREADS, 1) bank_scan_kernel(BankScanParams p, int resident) {
    extern __shared__ float smem[];
    const BankDims& D = p.d;
    const int r = blockIdx.x, b = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, C = p.C;
    const int Me = D.Me, Ms = D.Ms, Mb = D.Mb, Dh = D.Dh, lf = D.lf, Hkv = D.Hkv, kvd = D.kvd, nb = D.nb;
    const int h0 = r * Hkv / C, h1 = (r + 1) * Hkv / C, ldx = Dh + 1, ld_s = lf + 1;
    const BsSmem L = bs_smem_layout(&D, C, p.hpc, resident);
    float* F = smem;
    int* I = (int*)smem;
    float *part = F + L.part, *st_k = F + L.st_k, *st_v = F + L.st_v, *ev = F + L.ev, *sk = F + L.sk;
    float *cand_k = F + L.cand_k, *cand_v = F + L.cand_v;
    float *nse = F + L.nse, *nss = F + L.nss, *nce = F + L.nce, *ncs = F + L.ncs, *b1 = F + L.b1;
    float *best = F + L.best, *gate = F + L.gate, *w = F + L.w, *cnt = F + L.cnt;
    int *bidx = I + L.bidx, *route = I + L.route, *tok = I + L.tok, *order = I + L.order, *target = I + L.target;
    int *flags = I + L.flags, *writer = I + L.writer, *used_e = I + L.used_e, *last_e = I + L.last_e, *src_e = I + L.src_e;
    int *used_s = I + L.used_s, *sflag = I + L.sflag, *bstart = I + L.bstart, *bucket = I + L.bucket;
    const size_t row0 = (size_t)b * D.T;  // this row's first token row
    const float escale = __fsqrt_rn(__fdiv_rn((float)Dh, (float)(Dh - lf)));
    const size_t head_elems = (size_t)Mb * Dh;
    // The live state of head g: element (slot m, dim d) at S[m * ld + d] (resident: this CTA's one
    // head, in smem; staged: the global scratch).
    const int ld = resident ? ldx : Dh;
    auto state_k = [&](int g) { return resident ? st_k : p.w.state_k + ((size_t)b * Hkv + g) * head_elems; };
    auto state_v = [&](int g) { return resident ? st_v : p.w.state_v + ((size_t)b * Hkv + g) * head_elems; };
    // the candidates' k and v rows of head g (all Dh dims), fp32
    auto stage_candidates = [&](int g, int Tn) {
        const floatX* kx = p.k + row0 * kvd + (size_t)g * Dh;
        const floatX* vx = p.v + row0 * kvd + (size_t)g * Dh;
        bs_copy(Tn * Dh, [&](int i) { return to_float(kx[(size_t)tok[i / Dh] * kvd + i % Dh]); },
                [&](int i, float x) { cand_k[(i / Dh) * ldx + i % Dh] = x; });
        bs_copy(Tn * Dh, [&](int i) { return to_float(vx[(size_t)tok[i / Dh] * kvd + i % Dh]); },
                [&](int i, float x) { cand_v[(i / Dh) * ldx + i % Dh] = x; });
    };

    // The candidates of write jj (entries from `first` on; the first BS_THREADS are prefetched, one per
    // thread, while the previous write finishes).
    auto candidate_count = [&](int jj) {
        int e0_, n_, te_, ts_;
        bs_block_evict(&D, jj, &e0_, &n_, &te_, &ts_);
        return bs_max(te_, ts_);
    };
    auto load_candidates = [&](int jj, int first) {
        const size_t o = ((size_t)b * nb + jj) * D.t_cap;
        for (int t = first + tid; t < candidate_count(jj); t += BS_THREADS) { tok[t] = p.w.cand[o + t]; gate[t] = p.w.cand_g[o + t]; }
    };

    // ---- initial state: init contents (or zeros) and flags (or nothing used); snapshot 0 ----
    for (int m = tid; m < Me; m += BS_THREADS) {
        const int* e = p.init_e ? p.init_e + (size_t)b * 3 * Me : NULL;
        used_e[m] = e ? e[m] : 0; last_e[m] = e ? e[Me + m] : 0; src_e[m] = e ? e[2 * Me + m] : -1;
    }
    for (int m = tid; m < Ms; m += BS_THREADS) used_s[m] = p.init_s ? p.init_s[(size_t)b * Ms + m] : 0;
    for (int g = h0; g < h1; g++) {
        const size_t so = ((size_t)b * Hkv + g) * head_elems, to = ((size_t)b * nb * Hkv + g) * head_elems;
        float *Sk = state_k(g), *Sv = state_v(g);
        for (int i = tid; i < Mb * Dh; i += BS_THREADS) {
            const float x = p.init_k ? p.init_k[so + i] : 0.f, y = p.init_v ? p.init_v[so + i] : 0.f;
            const int m = i / Dh, d = i - m * Dh;
            Sk[m * ld + d] = x; Sv[m * ld + d] = y;
            p.tape.k[to + i] = from_float<floatX>(x); p.tape.v[to + i] = from_float<floatX>(y);
        }
    }
    __syncthreads();  // the flags above are read by other threads below
    if (r == 0) {
        const size_t bj = (size_t)b * nb;
        for (int m = tid; m < Mb; m += BS_THREADS)
            p.tape.allowed[bj * Mb + m] = (unsigned char)(p.mask_unused ? (m < Me ? used_e[m] : used_s[m - Me]) : 1);
        for (int m = tid; m < Me; m += BS_THREADS) p.tape.src[bj * Me + m] = src_e[m];
    }
    load_candidates(0, 0);
    __syncthreads();

    for (int j = 0; j < nb; j++) {
        int e0, n_ev, Te, Ts;
        bs_block_evict(&D, j, &e0, &n_ev, &Te, &Ts);
        const int Tn = bs_max(Te, Ts);
        const size_t bj = (size_t)b * nb + j;
        if (Tn > 0) {
            if (j > 0 && Tn > BS_THREADS) {  // beyond what the previous write prefetched
                load_candidates(j, BS_THREADS);
                __syncthreads();
            }
            // ---- A. per-head cosines of this CTA's heads ----
            for (int g = h0; g < h1; g++) {
                float* pe = part + (C == 1 ? 0 : g - h0) * L.part_head;  // exact [Te][Me]
                float* ps = pe + D.te_cap * Me;                          // summary [Ts][Ms]
                float* sum_e = part + L.part_head;                       // C = 1: the head sums
                float* sum_s = sum_e + D.te_cap * Me;
                // slot operands: exact values (rows [0, Me)), summary keys dims [lf, Dh)
                const float *op_e = st_v, *op_s = st_k + (size_t)Me * ldx + lf;
                int ld_e = ldx, ld_ks = ldx;
                if (!resident) {
                    const float *Sk = state_k(g), *Sv = state_v(g);
                    if (Te > 0) bs_copy(Me * Dh, [&](int i) { return Sv[i]; }, [&](int i, float x) { ev[(i / Dh) * ldx + i % Dh] = x; });
                    if (Ts > 0)
                        bs_copy(Ms * lf, [&](int i) { return Sk[(size_t)(Me + i / lf) * Dh + lf + i % lf]; },
                                [&](int i, float x) { sk[(i / lf) * ld_s + i % lf] = x; });
                    op_e = ev; op_s = sk; ld_ks = ld_s;
                }
                stage_candidates(g, Tn);
                __syncthreads();
                // tasks: summary dot tiles, exact dot tiles, then the norms (short; they fill the tail)
                const int ns_tiles = Ts > 0 ? bs_cdiv(Ts, 4) * bs_cdiv(Ms, 4) : 0;
                const int ne_tiles = Te > 0 ? bs_cdiv(Te, 2) * bs_cdiv(Me, 2) : 0;
                const int nn_e = Te > 0 ? Me + Te : 0, nn_s = Ts > 0 ? Ms + Ts : 0;
                for (int q = tid; q < ns_tiles + ne_tiles + nn_e + nn_s; q += BS_THREADS) {
                    int x = q;
                    if (x < ns_tiles) { bs_dot_tile<4, 4>(cand_k + lf, ldx, Ts, op_s, ld_ks, Ms, Dh - lf, x, ps, Ms); continue; }
                    x -= ns_tiles;
                    if (x < ne_tiles) { bs_dot_tile<2, 2>(cand_v, ldx, Te, op_e, ld_e, Me, Dh, x, pe, Me); continue; }
                    x -= ne_tiles;
                    if (x < nn_e) {
                        if (x < Me) nse[x] = bs_norm(op_e + (size_t)x * ld_e, Dh);
                        else nce[x - Me] = bs_norm(cand_v + (x - Me) * ldx, Dh);
                        continue;
                    }
                    x -= nn_e;
                    if (x < Ms) nss[x] = bs_norm(op_s + (size_t)x * ld_ks, Dh - lf);
                    else ncs[x - Ms] = bs_norm(cand_k + (x - Ms) * ldx + lf, Dh - lf);
                }
                __syncthreads();
                // cos = dot / (|token| * |slot|); with C = 1 added to the head sum at once (heads in order)
                for (int i = tid; i < Te * Me; i += BS_THREADS) {
                    const int t = i / Me, m = i - t * Me;
                    const float c = __fdiv_rn(pe[i], __fmul_rn(nce[t], nse[m]));
                    if (C == 1) sum_e[i] = __fadd_rn(g == 0 ? 0.f : sum_e[i], c);
                    else pe[i] = c;
                }
                for (int i = tid; i < Ts * Ms; i += BS_THREADS) {
                    const int t = i / Ms, m = i - t * Ms;
                    const float c = __fdiv_rn(ps[i], __fmul_rn(ncs[t], nss[m]));
                    if (C == 1) sum_s[i] = __fadd_rn(g == 0 ? 0.f : sum_s[i], c);
                    else ps[i] = c;
                }
                __syncthreads();
            }
            bs_cluster_sync();  // every head's cosines are in place
            // ---- B1. head means and argmaxes of the candidates t = r (mod C) ----
            const int ne_loc = Te > r ? bs_cdiv(Te - r, C) : 0, ns_loc = Ts > r ? bs_cdiv(Ts - r, C) : 0;
            for (int q = tid; q < ne_loc * Me + ns_loc * Ms; q += BS_THREADS) {
                const int is_e = q < ne_loc * Me, qq = is_e ? q : q - ne_loc * Me, M = is_e ? Me : Ms;
                const int t = r + (qq / M) * C, m = qq % M;
                if (is_e && !used_e[m]) { b1[q] = 0.f; continue; }  // not a candidate slot: never read
                const int off = is_e ? t * Me + m : D.te_cap * Me + t * Ms + m;
                float s = 0.f;
                if (C == 1) {
                    s = part[L.part_head + off];  // summed in phase A
                } else {
                    for (int g0 = 0; g0 < Hkv; g0 += 8) {  // eight remote loads in flight, then the sum in head order
                        float x[8];
#pragma unroll
                        for (int u = 0; u < 8; u++) {
                            const int g = g0 + u, rg = ((g + 1) * C - 1) / Hkv;  // the CTA owning head g
                            x[u] = g < Hkv ? bs_peer(part, rg)[(g - rg * Hkv / C) * L.part_head + off] : 0.f;
                        }
#pragma unroll
                        for (int u = 0; u < 8; u++)
                            if (g0 + u < Hkv) s = __fadd_rn(s, x[u]);
                    }
                }
                b1[q] = __fdiv_rn(s, (float)Hkv);
            }
            __syncthreads();
            for (int cl = warp; cl < ne_loc + ns_loc; cl += BS_WARPS) {  // one warp per candidate
                const int is_e = cl < ne_loc, ci = is_e ? cl : cl - ne_loc, M = is_e ? Me : Ms, t = r + ci * C;
                const float* row = b1 + (is_e ? ci * Me : ne_loc * Me + ci * Ms);
                // exact: first maximum over used slots, (-1e9, slot 0) when none is used (the CPU's
                // initial values); summary: first maximum over all slots
                float bv = is_e ? -1e9f : -INFINITY;
                int bi = is_e ? 0 : INT_MAX;
                for (int m = lane; m < M; m += 32) {
                    if (is_e && !used_e[m]) continue;
                    if (row[m] > bv) { bv = row[m]; bi = m; }
                }
                for (int o = 16; o > 0; o >>= 1) {
                    const float ov = __shfl_down_sync(0xffffffffu, bv, o);
                    const int oi = __shfl_down_sync(0xffffffffu, bi, o);
                    if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
                }
                if (lane == 0) {
                    if (is_e) { best[t] = bv; bidx[t] = bi; }
                    else route[t] = bi;
                }
            }
            bs_cluster_sync();  // every candidate's argmax is in place (in its owner's smem)
            // ---- B2. all decisions, identically in every CTA ----
            // Gather the other CTAs' candidates into this CTA's arrays: this CTA writes only indices it
            // does not own, and peers read only the indices it owns, so nothing races.
            for (int t = tid; t < Ts; t += BS_THREADS) {
                if (t % C != r) route[t] = bs_peer(route, t % C)[t];
                w[t] = p.policy_none ? 1.f : (gate[t] >= p.thr_s ? gate[t] : 0.f);
            }
            for (int t = tid; t < Te; t += BS_THREADS)
                if (t % C != r) { best[t] = bs_peer(best, t % C)[t]; bidx[t] = bs_peer(bidx, t % C)[t]; }
            int u_any = 0;
            for (int m = tid; m < Me; m += BS_THREADS) u_any |= used_e[m];
            const int any_used = __syncthreads_or(u_any);
            // exact: LRU victim order (free slots first by index, then used slots by oldest stamp)
            for (int m = tid; m < Me; m += BS_THREADS) {
                const int key = used_e[m] ? last_e[m] : INT_MIN;
                int rk = 0;
                for (int o = 0; o < Me; o++) {
                    const int ko = used_e[o] ? last_e[o] : INT_MIN;
                    rk += ko < key || (ko == key && o < m);
                }
                order[rk] = m;
            }
            for (int t = tid; t < Te; t += BS_THREADS) {
                const int keep = p.policy_none || gate[t] >= p.thr_e;
                const int novel = !any_used || best[t] < p.novelty_thr;
                const int hit = any_used && best[t] >= p.match_thr;
                flags[t] = (keep ? BS_KEEP : 0) | (novel ? BS_NOVEL : 0) | (hit ? BS_HIT : 0);
            }
            // summary: per-slot total weight (candidate order), activity, first fill; buckets by slot
            for (int m = tid; m <= Ms; m += BS_THREADS) {
                float c = 0.f;
                int before = 0;
                for (int t = 0; t < Ts; t++) {
                    before += route[t] < m;
                    if (route[t] == m) c = __fadd_rn(c, w[t]);
                }
                bstart[m] = before;
                if (m < Ms) {
                    const int act = c > 0.f, is_new = act && p.overwrite_on_insert && !used_s[m];
                    cnt[m] = c;
                    sflag[m] = act | (is_new << 1);
                    if (act) used_s[m] = 1;
                }
            }
            for (int t = tid; t < Ts; t += BS_THREADS) {
                const int rt = route[t];
                int pos = 0;
                for (int u = 0; u < Ts; u++) pos += route[u] < rt || (route[u] == rt && u < t);
                bucket[pos] = t;
            }
            __syncthreads();
            if (tid == 0) {  // exact: novel kept candidates take the LRU victims in candidate order (docs/spec.md §3.3)
                const int n_lru = bs_min(Te, Me);
                int n_nk = 0;
                for (int t = 0; t < Te; t++) {
                    const int f = flags[t], keep = f & BS_KEEP, novel = f & BS_NOVEL, hit = f & BS_HIT;
                    const int nk = novel && keep, rank = nk ? n_nk++ : -1, cap = nk && rank < n_lru;
                    target[t] = cap ? order[rank] : bidx[t];
                    const int touch = keep && (!novel || cap), ow = cap || (p.refresh_on_hit && keep && hit);
                    flags[t] = f | (touch ? BS_TOUCH : 0) | (ow ? BS_OVERWRITE : 0);
                }
            }
            __syncthreads();
            for (int m = tid; m < Me; m += BS_THREADS) {  // stamps: newest touching token; the newest writer wins
                int stamp = INT_MIN, wt = -1;
                for (int t = 0; t < Te; t++) {
                    if (target[t] != m) continue;
                    const int f = flags[t];
                    if ((f & BS_TOUCH) && tok[t] > stamp) stamp = tok[t];
                    if ((f & BS_OVERWRITE) && (wt < 0 || tok[t] > tok[wt])) wt = t;
                }
                writer[m] = wt;  // the candidate (index into tok) written to slot m, -1 none
                // stamps and sources are absolute positions (row + pos0; rows are positions in training)
                if (wt >= 0) { used_e[m] = 1; src_e[m] = D.pos0 + tok[wt]; }
                if (stamp != INT_MIN) last_e[m] = D.pos0 + stamp;
            }
        } else {  // nothing evicted into a bank: the state carries over
            Te = Ts = 0;
            for (int m = tid; m < Me; m += BS_THREADS) writer[m] = -1;
            for (int m = tid; m < Ms; m += BS_THREADS) { sflag[m] = 0; cnt[m] = 0.f; }
        }
        // write log of block j (summary part, for the backward)
        if (r == 0) {
            if (tid == 0) p.tape.n_cand[bj] = Ts;
            for (int t = tid; t < Ts; t += BS_THREADS) {
                const size_t o = bj * D.ts_stride + t;
                p.tape.cand_tok[o] = tok[t]; p.tape.cand_slot[o] = route[t]; p.tape.cand_w[o] = w[t];
            }
            for (int m = tid; m < Ms; m += BS_THREADS) {
                const size_t o = bj * Ms + m;
                p.tape.slot_active[o] = (unsigned char)(sflag[m] & 1);
                p.tape.slot_new[o] = (unsigned char)((sflag[m] >> 1) & 1);
                p.tape.slot_cnt[o] = cnt[m];
            }
        }
        __syncthreads();
        // ---- C. this CTA's heads: exact copies, summary EMA (docs/spec.md §3.4 step 4), snapshot j + 1 ----
        const bool snap = j + 1 < nb;
        // prefetch the next write's first candidates (their loads overlap this phase)
        const int Tn_next = snap ? candidate_count(j + 1) : 0;
        int pre_tok = 0;
        float pre_gate = 0.f;
        if (tid < Tn_next) {
            pre_tok = p.w.cand[(bj + 1) * D.t_cap + tid];
            pre_gate = p.w.cand_g[(bj + 1) * D.t_cap + tid];
        }
        for (int g = h0; g < h1; g++) {
            if (Tn > 0 && !resident && h1 - h0 > 1) {  // the candidate rows of this head (resident: still staged)
                __syncthreads();
                stage_candidates(g, Tn);
                __syncthreads();
            }
            const float eta_g = Ms > 0 ? bs_sigmoid(to_float(p.eta_logit[g])) : 0.f;
            float *Sk = state_k(g), *Sv = state_v(g);
            floatX* Tk = snap ? p.tape.k + ((bj + 1) * Hkv + g) * head_elems : NULL;
            floatX* Tv = snap ? p.tape.v + ((bj + 1) * Hkv + g) * head_elems : NULL;
            const int hd = Dh / 2;
            for (int i2 = tid; i2 < Mb * hd; i2 += BS_THREADS) {  // two dims (d, d + 1) of one slot per step
                const int m = i2 / hd, d = 2 * (i2 - m * hd);
                float* sk_ = Sk + (size_t)m * ld + d;
                float* sv_ = Sv + (size_t)m * ld + d;
                float kk[2] = {sk_[0], sk_[1]}, vv[2] = {sv_[0], sv_[1]};
                if (m < Me) {
                    const int wt = writer[m];
                    if (wt >= 0) {
                        for (int e = 0; e < 2; e++) {
                            kk[e] = cand_k[wt * ldx + d + e]; vv[e] = cand_v[wt * ldx + d + e];
                            sk_[e] = kk[e]; sv_[e] = vv[e];
                        }
                    }
                } else {
                    const int ms = m - Me, fl = sflag[ms];
                    if (fl & 1) {
                        const float c = cnt[ms], denom = c > 1e-6f ? c : 1e-6f, eta = (fl & 2) ? 1.f : eta_g;
                        float sumk[2] = {0.f, 0.f}, sumv[2] = {0.f, 0.f};
                        for (int q = bstart[ms]; q < bstart[ms + 1]; q++) {
                            const int t = bucket[q];
                            for (int e = 0; e < 2; e++) {
                                sumk[e] = __fadd_rn(sumk[e], __fmul_rn(w[t], cand_k[t * ldx + d + e]));
                                sumv[e] = __fadd_rn(sumv[e], __fmul_rn(w[t], cand_v[t * ldx + d + e]));
                            }
                        }
                        for (int e = 0; e < 2; e++) {
                            if (d + e >= lf) kk[e] = __fadd_rn(kk[e], __fmul_rn(eta, __fsub_rn(__fdiv_rn(__fmul_rn(escale, sumk[e]), denom), kk[e])));
                            vv[e] = __fadd_rn(vv[e], __fmul_rn(eta, __fsub_rn(__fdiv_rn(sumv[e], denom), vv[e])));
                            sk_[e] = kk[e]; sv_[e] = vv[e];
                        }
                    }
                }
                if (snap) {
                    bs_store_pair(Tk + (size_t)m * Dh + d, kk[0], kk[1]);
                    bs_store_pair(Tv + (size_t)m * Dh + d, vv[0], vv[1]);
                }
            }
        }
        if (tid < Tn_next) { tok[tid] = pre_tok; gate[tid] = pre_gate; }  // tok is not read after the staging above
        if (r == 0 && snap) {
            const size_t bn = bj + 1;
            for (int m = tid; m < Me; m += BS_THREADS) {
                p.tape.allowed[bn * Mb + m] = (unsigned char)(p.mask_unused ? used_e[m] : 1);
                p.tape.src[bn * Me + m] = src_e[m];
            }
            for (int m = tid; m < Ms; m += BS_THREADS) p.tape.allowed[bn * Mb + Me + m] = (unsigned char)(p.mask_unused ? used_s[m] : 1);
        }
        __syncthreads();  // the state and flags are final for the next write
    }
    if (r == 0) {  // the final flags (every CTA holds the same ones)
        for (int m = tid; m < Me; m += BS_THREADS) {
            p.w.final_e[((size_t)b * 3 + 0) * Me + m] = used_e[m];
            p.w.final_e[((size_t)b * 3 + 1) * Me + m] = last_e[m];
            p.w.final_e[((size_t)b * 3 + 2) * Me + m] = src_e[m];
        }
        for (int m = tid; m < Ms; m += BS_THREADS) p.w.final_s[(size_t)b * Ms + m] = used_s[m];
    }
    if (resident)  // the final state to the global scratch
        for (int g = h0; g < h1; g++) {
            const size_t so = ((size_t)b * Hkv + g) * head_elems;
            for (int i = tid; i < Mb * Dh; i += BS_THREADS) {
                const int m = i / Dh, d = i - m * Dh;
                p.w.state_k[so + i] = st_k[m * ldx + d];
                p.w.state_v[so + i] = st_v[m * ldx + d];
            }
        }
    bs_cluster_sync();  // no CTA may leave while a peer can still read its shared memory
}

// ---------------------------------------------------------------------------------------------
// Reverse scan (docs/spec.md §4; the CPU's summary_write_backward and keyset_scatter, block by block in
// reverse). A summary slot's gradient dn = dL/d(slot after write j) enters write j's backward:
//   avg = sum_t w_t x_t / max(cnt, 1e-6) over the slot's candidates, new = old + eta (escale avg - old)
//   (keys, dims >= lf) resp. old + eta (avg - old) (values);
//   d eta_logit += eta (1 - eta) sum_d dn (escale avg - old | avg - old)       (not for a new slot)
//   d x_t += w_t / max(cnt, 1e-6) * eta escale dn       (keys; values without escale), and
//   d w_t = sum_d d avg * (x_t - avg) / cnt (x_t / 1e-6 when the count is clamped)   — when the
//   token may receive gradient: !detach_evicted and (cross_block_grad or the token is in block j);
//   dn <- (1 - eta) dn (key dims < lf pass unchanged), cut to 0 without cross_block_grad,
//   then + block j's own attention gradient on the slot (where block j's key set held it).

// Sum of v over the CTA's warps, lane partials reduced in a fixed tree: warp w's sum lands in red[w * stride].
__device__ __forceinline__ void bs_warp_sum(float v, float* red, int stride) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) red[(threadIdx.x >> 5) * stride] = v;
}

// grid (Ms, Hkv, B), blockDim = Dh rounded up to whole warps; thread d owns dimension d of slot
// (b, g, m)'s gradient. Smem: the write's candidates, this slot's (weighted) ones, warp partials.
__global__ void bank_summary_backward_kernel(BankScanParams p) {
    extern __shared__ float smem[];
    const BankDims& D = p.d;
    const int m = blockIdx.x, g = blockIdx.y, b = blockIdx.z, d = threadIdx.x, nw = blockDim.x >> 5;
    const int Ms = D.Ms, Me = D.Me, Mb = D.Mb, Dh = D.Dh, lf = D.lf, cap = D.ts_cap, rs = 1 + cap;
    const bool valid = d < Dh, to_tokens = !p.detach, gated = !p.policy_none;
    int* c_slot = (int*)smem;
    float* c_w = smem + cap;
    int* c_tok = (int*)(smem + 2 * cap);
    int* l_t = (int*)(smem + 3 * cap);
    int* l_tok = (int*)(smem + 4 * cap);
    float* l_w = smem + 5 * cap;
    float* red = smem + 6 * cap;  // [nw][1 + cap]: slot 0 = d eta term, 1 + q = d w of listed candidate q
    __shared__ int s_nl;
    const float eta_g = bs_sigmoid(to_float(p.eta_logit[g]));
    const float escale = __fsqrt_rn(__fdiv_rn((float)Dh, (float)(Dh - lf)));
    float dnk = 0.f, dnv = 0.f, deta_acc = 0.f;
    for (int j = D.nb - 1; j >= 0; j--) {
        const size_t bj = (size_t)b * D.nb + j;
        const size_t so = ((bj * D.Hkv + g) * Mb + Me + m) * Dh + (valid ? d : 0);  // slot row, dim d
        float gk = 0.f, gv = 0.f;  // block j's attention gradient on the slot: added after the write's backward
        if (valid && p.tape.allowed[bj * Mb + Me + m]) { gk = p.d_bank_k[so]; gv = p.d_bank_v[so]; }
        if (p.tape.slot_active[bj * Ms + m]) {
            const float cnt = p.tape.slot_cnt[bj * Ms + m], denom = cnt > 1e-6f ? cnt : 1e-6f;
            const int is_new = p.tape.slot_new[bj * Ms + m];
            const float eta = is_new ? 1.f : eta_g;
            const int nc = p.tape.n_cand[bj];
            const float oldk = valid ? to_float(p.tape.k[so]) : 0.f, oldv = valid ? to_float(p.tape.v[so]) : 0.f;
            for (int t = d; t < nc; t += blockDim.x) {
                const size_t o = bj * D.ts_stride + t;
                c_slot[t] = p.tape.cand_slot[o]; c_w[t] = p.tape.cand_w[o]; c_tok[t] = p.tape.cand_tok[o];
            }
            __syncthreads();
            if (d < 32) {  // this slot's candidates with a weight, in candidate order
                int nl = 0;
                for (int base = 0; base < nc; base += 32) {
                    const int t = base + d;
                    const bool in = t < nc && c_slot[t] == m && c_w[t] != 0.f;
                    const unsigned bal = __ballot_sync(0xffffffffu, in);
                    if (in) {
                        const int q = nl + __popc(bal & ((1u << d) - 1u));
                        l_t[q] = t; l_tok[q] = c_tok[t]; l_w[q] = c_w[t];
                    }
                    nl += __popc(bal);
                }
                if (d == 0) s_nl = nl;
            }
            __syncthreads();
            const int nl = s_nl;
            const size_t col = (size_t)g * Dh + (valid ? d : 0);
            float avgk = 0.f, avgv = 0.f;
            if (valid)
                for (int q = 0; q < nl; q++) {
                    const size_t row = ((size_t)b * D.T + l_tok[q]) * D.kvd + col;
                    avgk += l_w[q] * to_float(p.k[row]) / denom;
                    avgv += l_w[q] * to_float(p.v[row]) / denom;
                }
            const float davk = d >= lf ? eta * escale * dnk : 0.f, davv = eta * dnv;
            const float de = valid ? (d >= lf ? dnk * (escale * avgk - oldk) : 0.f) + dnv * (avgv - oldv) : 0.f;
            bs_warp_sum(de, red, rs);
            for (int q = 0; q < nl; q++) {
                const int tk = l_tok[q];
                if (!(to_tokens && (p.cross || tk >= j * D.S))) continue;  // the same for every thread
                float dw = 0.f;
                if (valid) {
                    const size_t row = ((size_t)b * D.T + tk) * D.kvd + col;
                    const float xk = to_float(p.k[row]), xv = to_float(p.v[row]), f = l_w[q] / denom;
                    p.dk_acc[row] += f * davk;
                    p.dv_acc[row] += f * davv;
                    dw = davk * (cnt > 1e-6f ? xk - avgk : xk) / denom + davv * (cnt > 1e-6f ? xv - avgv : xv) / denom;
                }
                if (gated) bs_warp_sum(dw, red + 1 + q, rs);
            }
            __syncthreads();
            if (d == 0 && !is_new) {
                float s = 0.f;
                for (int ww = 0; ww < nw; ww++) s += red[ww * rs];
                deta_acc += s * eta * (1.f - eta);
            }
            for (int q = d; q < nl; q += blockDim.x) {
                const int tk = l_tok[q];
                if (!(to_tokens && gated && (p.cross || tk >= j * D.S))) continue;
                float s = 0.f;
                for (int ww = 0; ww < nw; ww++) s += red[ww * rs + 1 + q];
                p.w.dw[(bj * D.Hkv + g) * D.ts_stride + l_t[q]] = s;
            }
            if (d >= lf) dnk = (1.f - eta) * dnk;
            dnv = (1.f - eta) * dnv;
            __syncthreads();  // the next write's staging overwrites the candidate lists and partials
        }
        if (!p.cross) { dnk = 0.f; dnv = 0.f; }
        dnk += gk;
        dnv += gv;
    }
    if (d == 0) p.w.deta_part[((size_t)b * D.Hkv + g) * Ms + m] = deta_acc;
}

// grid (Me, Hkv, B), blockDim = Dh in whole warps: exact slot m's gradient of every block whose key
// set held it goes to the token it copies (docs/spec.md §4: d copy / d token = 1), where state_grad_flows:
// cross_block_grad, or the token belongs to block j-1 or later. A token lives in one slot over a run
// of consecutive snapshots, so each token's sum is formed here, by one thread per dim, and added once.
__global__ void bank_exact_backward_kernel(BankScanParams p) {
    const BankDims& D = p.d;
    const int m = blockIdx.x, g = blockIdx.y, b = blockIdx.z, d = threadIdx.x;
    if (d >= D.Dh) return;
    float ak = 0.f, av = 0.f;
    int cur = -1, any = 0;
    for (int j = D.nb - 1; j >= -1; j--) {
        const size_t bj = (size_t)b * D.nb + (j >= 0 ? j : 0);
        const int src = j >= 0 ? p.tape.src[bj * D.Me + m] : -1;  // j = -1: flush the last run
        if (src != cur) {
            if (any) {
                const size_t row = ((size_t)b * D.T + cur) * D.kvd + (size_t)g * D.Dh + d;
                p.dk_acc[row] += ak;
                p.dv_acc[row] += av;
            }
            cur = src; ak = av = 0.f; any = 0;
        }
        if (src >= 0 && p.tape.allowed[bj * D.Mb + m] && (p.cross || src >= (j - 1) * D.S)) {
            const size_t o = ((bj * D.Hkv + g) * D.Mb + m) * D.Dh + d;
            ak += p.d_bank_k[o];
            av += p.d_bank_v[o];
            any = 1;
        }
    }
}

// grid (nb, B): each summary candidate's gate gradient = its per-head parts summed in head order (a
// token is a candidate of one write at most, so one thread adds to its dgate).
__global__ void bank_dgate_kernel(BankScanParams p) {
    const BankDims& D = p.d;
    const int j = blockIdx.x, b = blockIdx.y;
    const size_t bj = (size_t)b * D.nb + j;
    const int nc = p.tape.n_cand[bj];
    for (int t = threadIdx.x; t < nc; t += blockDim.x) {
        const size_t o = bj * D.ts_stride + t;
        const int tk = p.tape.cand_tok[o];
        if (p.tape.cand_w[o] == 0.f || !(p.cross || tk >= j * D.S)) continue;
        float s = 0.f;
        for (int g = 0; g < D.Hkv; g++) s += p.w.dw[(bj * D.Hkv + g) * D.ts_stride + t];
        p.dgate[(size_t)b * D.T + tk] += s;
    }
}

// <<<1, 256>>>: deta[g] += sum over rows b and slots m (in that order) of the per-slot parts.
__global__ void bank_deta_kernel(BankScanParams p) {
    const BankDims& D = p.d;
    for (int g = threadIdx.x; g < D.Hkv; g += blockDim.x) {
        float s = 0.f;
        for (int b = 0; b < D.B; b++)
            for (int m = 0; m < D.Ms; m++) s += p.w.deta_part[((size_t)b * D.Hkv + g) * D.Ms + m];
        p.deta[g] += s;
    }
}

// ---------------------------------------------------------------------------------------------
// Host side

static inline void bank_scan_check_shape(const BankScanShape* s, const char* who) {
    const ModelConfig* c = &s->cfg;
    const char* bad = NULL;
    if (s->B < 1 || s->T < 1) bad = "B and T must be >= 1";
    else if (c->block_size < 1 || c->window < 1) bad = "block_size and window (W) must be >= 1";
    else if (s->n_blocks != (s->T + c->block_size - 1) / c->block_size) bad = "n_blocks must be ceil(T / block_size)";
    else if (c->n_exact < 0 || c->n_summary < 0) bad = "n_exact (Me) and n_summary (Ms) must be >= 0";
    else if (c->exact_candidates_per_block < 0 || c->summary_candidates_per_block < 0) bad = "candidates per block must be >= 0";
    else if (c->n_kv_heads < 1 || c->head_dim < 2 || c->head_dim % 2) bad = "n_kv_heads must be >= 1 and head_dim even and >= 2";
    else if ((size_t)s->B * s->T > (size_t)INT_MAX) bad = "B * T must fit an int";
    else if (s->hist < 0 || s->hist > c->window || s->pos0 < 0 || s->hist > s->pos0) bad = "continuation: need 0 <= hist <= min(W, pos0)";
    else if (s->hist > 0 && s->B != 1) bad = "a continued forward (hist > 0) takes one row";
    else if ((long long)s->pos0 + s->T > (long long)INT_MAX) bad = "positions (pos0 + T) must fit an int";
    else if (c->head_dim > 1024) bad = "head_dim must be <= 1024 (one thread per dimension in the reverse scan)";
    if (bad) {
        fprintf(stderr, "%s: bad shape B=%d T=%d n_blocks=%d block_size=%d window=%d n_exact=%d n_summary=%d "
                        "candidates=%d/%d n_kv_heads=%d head_dim=%d: %s\n", who, s->B, s->T, s->n_blocks, c->block_size,
                c->window, c->n_exact, c->n_summary, c->exact_candidates_per_block, c->summary_candidates_per_block,
                c->n_kv_heads, c->head_dim, bad);
        exit(1);
    }
}

static inline BankScanParams bank_scan_params(const BankScanShape* s, const BankTape* tape, void* scratch) {
    const ModelConfig* c = &s->cfg;
    BankScanParams p;
    memset(&p, 0, sizeof(p));
    p.d = bank_dims(s);
    p.policy_none = c->write_policy == WRITE_POLICY_NONE;
    p.refresh_on_hit = c->exact_refresh_on_hit;
    p.overwrite_on_insert = c->summary_overwrite_on_insert;
    p.mask_unused = c->mask_unused_memory;
    p.order_ref = c->candidate_order == CAND_ORDER_REFERENCE;
    p.detach = c->detach_evicted;
    p.cross = c->cross_block_grad;
    p.thr_e = c->gate_threshold_exact;
    p.thr_s = c->gate_threshold_summary;
    p.match_thr = c->exact_match_threshold;
    p.novelty_thr = c->exact_novelty_threshold;
    p.tape = *tape;
    bank_scan_carve_scratch(&p.w, scratch, s);
    return p;
}

// What the launcher asks of a device once (per device of the process): whether the binary and the
// device have thread-block clusters (sm_90; without them the scan runs one CTA per batch row, C = 1,
// which then owns every KV head), the shared memory a CTA may opt into, the dynamic shared memory
// the scan kernel has been allowed so far, and per cluster size the most shared memory per CTA
// verified to fit (cudaOccupancyMaxActiveClusters).
typedef struct {
    int known, clusters, smem_max, smem_attr;
    size_t fit_smem[BS_MAX_CLUSTER + 1];
} BankScanDevice;

static inline BankScanDevice* bank_scan_device(void) {
    static BankScanDevice devices[64];
    int dev = 0, cluster_launch = 0;
    cudaCheck(cudaGetDevice(&dev));
    BankScanDevice* d = &devices[dev & 63];
    if (!d->known) {
        cudaFuncAttributes fa;
        cudaCheck(cudaFuncGetAttributes(&fa, bank_scan_kernel));
        cudaCheck(cudaDeviceGetAttribute(&cluster_launch, cudaDevAttrClusterLaunch, dev));
        cudaCheck(cudaDeviceGetAttribute(&d->smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        d->clusters = fa.binaryVersion >= 90 && cluster_launch;
        d->known = 1;
    }
    return d;
}

// How the forward scan runs on this device: CTAs per row (cluster size), most KV heads per CTA,
// resident or staged state, shared memory per CTA (benchmarks print it).
typedef struct {
    int clusters, C, hpc, resident;
    size_t smem;
} BankScanPlan;

static inline BankScanPlan bank_scan_plan(const BankScanShape* s) {
    const BankDims D = bank_dims(s);
    BankScanPlan pl;
    const BankScanDevice* dev = bank_scan_device();
    const int smem_max = dev->smem_max;
    pl.clusters = dev->clusters;
    pl.C = pl.clusters ? bs_min(D.Hkv, BS_MAX_CLUSTER) : 1;
    pl.hpc = bs_cdiv(D.Hkv, pl.C);
    // resident when a CTA owns one head and its state fits in shared memory, else staged
    pl.resident = pl.hpc == 1 && (size_t)bs_smem_layout(&D, pl.C, pl.hpc, 1).words * 4 <= (size_t)smem_max;
    pl.smem = (size_t)bs_smem_layout(&D, pl.C, pl.hpc, pl.resident).words * 4;
    if (pl.smem > (size_t)smem_max) {
        fprintf(stderr, "bank_scan_forward: n_exact=%d n_summary=%d head_dim=%d candidates=%d/%d (block_size %d) with %d KV "
                        "heads per CTA need %zu bytes of shared memory, the device allows %d\n", D.Me, D.Ms, D.Dh, D.te_cap,
                D.ts_cap, D.S, pl.hpc, pl.smem, smem_max);
        exit(1);
    }
    return pl;
}

// init: the state before the first write (NULL: zero contents, nothing used). With s->hist > 0, k, v
// and gate point at row 0 of buffers that hold the carried-in ring rows in front of it.
static void bank_scan_forward(const GpuContext* ctx, const BankScanShape* s, const floatX* k, const floatX* v,
                              const float* gate, const floatX* eta_logit, const BankScanInit* init, BankTape* tape, void* scratch) {
    bank_scan_check_shape(s, "bank_scan_forward");
    BankScanParams p = bank_scan_params(s, tape, scratch);
    p.k = k; p.v = v; p.gate = gate; p.eta_logit = eta_logit;
    if (init) { p.init_k = init->k; p.init_v = init->v; p.init_e = init->e; p.init_s = init->s; }
    const BankDims& D = p.d;
    if (D.t_cap > 0) {
        bank_candidates_kernel<<<dim3(D.nb, D.B), BS_CAND_THREADS, 0, ctx->stream>>>(p);
        cudaCheckLaunch("bank_candidates_kernel");
    }
    const BankScanPlan pl = bank_scan_plan(s);
    const int clusters = pl.clusters, resident = pl.resident;
    const size_t smem = pl.smem;
    p.C = pl.C;
    p.hpc = pl.hpc;
    BankScanDevice* dev = bank_scan_device();
    if ((int)smem > dev->smem_attr) {
        cudaCheck(cudaFuncSetAttribute(bank_scan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        dev->smem_attr = (int)smem;
    }
    cudaLaunchConfig_t lc = {};
    lc.gridDim = dim3(p.C, D.B, 1);
    lc.blockDim = dim3(BS_THREADS, 1, 1);
    lc.dynamicSmemBytes = smem;
    lc.stream = ctx->stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = p.C;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    lc.attrs = attr;
    lc.numAttrs = clusters ? 1 : 0;  // sm_90 code always runs in a cluster (possibly of one CTA)
    if (clusters && smem > dev->fit_smem[p.C]) {  // not yet verified for this size
        int n_clusters = 0;
        cudaCheck(cudaOccupancyMaxActiveClusters(&n_clusters, bank_scan_kernel, &lc));
        if (n_clusters < 1) {
            fprintf(stderr, "bank_scan_forward: a cluster of %d CTAs with %zu bytes of shared memory each does not fit "
                            "this device\n", p.C, smem);
            exit(1);
        }
        dev->fit_smem[p.C] = smem;
    }
    cudaCheck(cudaLaunchKernelEx(&lc, bank_scan_kernel, p, resident));
    cudaCheckLaunch("bank_scan_kernel");
}

static void bank_scan_backward(const GpuContext* ctx, const BankScanShape* s, const BankTape* tape, const float* d_bank_k,
                               const float* d_bank_v, const floatX* k, const floatX* v, const floatX* eta_logit, float* dk_acc,
                               float* dv_acc, float* dgate, float* deta, void* scratch) {
    bank_scan_check_shape(s, "bank_scan_backward");
    if (s->hist != 0 || s->pos0 != 0) {
        fprintf(stderr, "bank_scan_backward: a continued forward (hist=%d, pos0=%d) is inference only\n", s->hist, s->pos0);
        exit(1);
    }
    BankScanParams p = bank_scan_params(s, tape, scratch);
    p.k = k; p.v = v; p.eta_logit = eta_logit; p.d_bank_k = d_bank_k; p.d_bank_v = d_bank_v;
    p.dk_acc = dk_acc; p.dv_acc = dv_acc; p.dgate = dgate; p.deta = deta;
    const BankDims& D = p.d;
    if (!p.detach && D.Mb > 0 && (!dk_acc || !dv_acc || (D.Ms > 0 && !p.policy_none && !dgate))) {
        fprintf(stderr, "bank_scan_backward: without detach_evicted the token gradients dk_acc, dv_acc (and, gated, dgate) "
                        "are needed\n");
        exit(1);
    }
    const int threads = bs_cdiv(D.Dh, 32) * 32;
    if (D.Ms > 0) {
        const size_t smem = (6 * (size_t)D.ts_cap + (size_t)(threads / 32) * (1 + D.ts_cap)) * 4;
        cudaCheck(cudaFuncSetAttribute(bank_summary_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        bank_summary_backward_kernel<<<dim3(D.Ms, D.Hkv, D.B), threads, smem, ctx->stream>>>(p);
        cudaCheckLaunch("bank_summary_backward_kernel");
        if (!p.detach && !p.policy_none) {
            bank_dgate_kernel<<<dim3(D.nb, D.B), 64, 0, ctx->stream>>>(p);
            cudaCheckLaunch("bank_dgate_kernel");
        }
        if (deta) {
            bank_deta_kernel<<<1, 256, 0, ctx->stream>>>(p);
            cudaCheckLaunch("bank_deta_kernel");
        }
    }
    if (D.Me > 0 && !p.detach) {
        bank_exact_backward_kernel<<<dim3(D.Me, D.Hkv, D.B), threads, 0, ctx->stream>>>(p);
        cudaCheckLaunch("bank_exact_backward_kernel");
    }
}
