// adamw_table.h — the segment table of the one-launch AdamW update (adamw.cuh adamw_table_update),
// host side: which element ranges of the fp32 buffers (master, grad, adam_m, adam_v) one step
// updates, with which optimizer group's lr and weight decay, and where each range's floatX copy lies
// in the parameter buffer. No CUDA here, so test_cpu tests the builders (dev/test/test_zero.h).
//
// The table describes the layout only: it is built once (at model creation, or from a ZeRO rank's
// slice plan) and reused every step. What changes per step (the lr schedule, the bias corrections,
// the clipping scale) travels by value with the launch, each segment naming its group by index.
//
// Two builders: the whole compact layout of param_compact_offsets (one segment per trainable tensor,
// ranges = train_offset), and one ZeRO rank's slice (one segment per zero_pieces piece, ranges
// relative to the slice's lo, because that rank's fp32 buffers hold only [lo, hi)). The floatX
// offsets are into the whole parameter buffer of the ParamTable's layout, or (a slice's
// ADAMW_PARAM_COMPACT table, llmc/ddp.cuh) into the rank's part of a compact floatX staging buffer,
// where the updated values wait for the all-gather: there the offset is the range's own.
//
// Chunks: the kernel gives every CTA ADAMW_CHUNK elements of one segment, counted from the segment's
// begin (ADAMW_CHUNK is a multiple of 4, so a segment that takes the 16-byte path, which needs an
// aligned begin and a length that is a multiple of 4, has aligned chunks of whole vectors).
#pragma once
#include "params.h"
#include "zero.h"

#ifdef __CUDACC__
#define ADAMW_HD __host__ __device__
#else
#define ADAMW_HD
#endif

// 8192 fp32 elements per CTA: 256 threads x 8 float4s each. The Phase-1 table of Mistral-7B
// (1.35 G elements) is ~164K CTAs, ~1,200 waves of 132 SMs x 8 CTAs: the last wave is noise, each
// CTA's segment look-up (a binary search over ~224 prefix sums, L1 hits) is paid once per 240 KB of
// traffic, and the one-segment-per-CTA rule wastes at most one partial chunk per segment.
#define ADAMW_CHUNK ((size_t)8192)

typedef struct {
    size_t begin, end;       // elements [begin, end) of the fp32 buffers the launch is given (begin < end)
    long long param_offset;  // element of the floatX buffer that `begin` maps to (the range is contiguous
                             // there too), or -1: this segment has no floatX copy
    int group;               // optimizer group (ParamGroup): index into the launch's per-group lr / wd
    int scalar;              // 1: always the scalar path (a ZeRO piece of a tensor that the whole update
                             // runs on the scalar path; see adamw_segments_from_slice)
} AdamWSegment;

// Chunks (CTAs) of a segment, and the element range [*lo, *hi) of its chunk k < adamw_segment_chunks.
static inline ADAMW_HD size_t adamw_segment_chunks(const AdamWSegment* s) { return (s->end - s->begin + ADAMW_CHUNK - 1) / ADAMW_CHUNK; }
static inline ADAMW_HD void adamw_chunk_range(const AdamWSegment* s, size_t k, size_t* lo, size_t* hi) {
    *lo = s->begin + k * ADAMW_CHUNK;
    *hi = *lo + ADAMW_CHUNK < s->end ? *lo + ADAMW_CHUNK : s->end;
}

// chunk_start[i] = first chunk of segment i (prefix sums; chunk_start[n] = all chunks, returned).
static inline size_t adamw_chunk_starts(const AdamWSegment* seg, int n, size_t* chunk_start) {
    size_t c = 0;
    for (int i = 0; i < n; i++) {
        chunk_start[i] = c;
        c += adamw_segment_chunks(&seg[i]);
    }
    chunk_start[n] = c;
    return c;
}

// The whole compact layout: one segment per trainable, non-empty tensor, in buffer order; returns
// how many there are (all of them, even beyond cap: one per table tensor always suffices).
// Alignment gaps belong to no segment (they are never updated, as with one launch per tensor).
static inline int adamw_segments_from_table(const ParamTable* t, const long long* train_offset, AdamWSegment* out, int cap) {
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        if (train_offset[i] < 0 || t->tensors[i].numel == 0) continue;
        if (n < cap) {
            out[n].begin = (size_t)train_offset[i];
            out[n].end = (size_t)train_offset[i] + t->tensors[i].numel;
            out[n].param_offset = (long long)t->tensors[i].offset;
            out[n].group = (int)PARAM_KINDS[t->tensors[i].kind].group;
            out[n].scalar = 0;  // the kernel's own rule, as adamw_update on the whole tensor
        }
        n++;
    }
    return n;
}

// Where a slice table's floatX copies go (AdamWSegment.param_offset).
typedef enum {
    ADAMW_PARAM_TABLE = 0,    // the whole parameter buffer, at the tensor's ParamTable offset
    ADAMW_PARAM_COMPACT = 1,  // this rank's part of a compact staging buffer: element i of the slice
                              // (compact position lo + i) at i, so param_offset = begin
} AdamWParamDst;

// ZeRO rank s->rank's part: one segment per piece of zero_pieces, ranges relative to s->lo (index 0
// = the slice's first element), floatX offsets by dst. Returns the count (all of them, even beyond
// cap; one per table tensor always suffices).
// Bitwise the whole table's update, rank by rank on the rank's own (16-byte aligned) slice buffers:
// slices and tensors start on 64-element boundaries (in the parameter buffer and in the compact
// layout alike), so a piece of a tensor whose length is a multiple of 4 is aligned whole vectors,
// like the tensor; a tensor of any other length takes the scalar path in the whole update
// (adamw_update's rule), and its pieces are marked scalar, because the 16-byte and the scalar path
// may round the v update differently (adamw_table_kernel).
static inline int adamw_segments_from_slice_to(const ParamTable* t, const long long* train_offset, const ZeroSlice* s, AdamWParamDst dst,
                                               AdamWSegment* out, int cap) {
    ZeroPiece* p = (ZeroPiece*)coda_malloc_or_die(sizeof(ZeroPiece) * (size_t)(t->n ? t->n : 1), "ZeRO pieces");
    const int np = zero_pieces(t, train_offset, s, p, t->n);
    for (int k = 0; k < np && k < cap; k++) {
        const int i = p[k].tensor;
        out[k].begin = p[k].lo - s->lo;
        out[k].end = p[k].hi - s->lo;
        out[k].param_offset = dst == ADAMW_PARAM_COMPACT ? (long long)out[k].begin
                                                         : (long long)(t->tensors[i].offset + (p[k].lo - (size_t)train_offset[i]));
        out[k].group = (int)PARAM_KINDS[t->tensors[i].kind].group;
        out[k].scalar = t->tensors[i].numel % 4 != 0;
    }
    free(p);
    return np;
}
// The floatX copies straight into the whole parameter buffer.
static inline int adamw_segments_from_slice(const ParamTable* t, const long long* train_offset, const ZeroSlice* s, AdamWSegment* out,
                                            int cap) {
    return adamw_segments_from_slice_to(t, train_offset, s, ADAMW_PARAM_TABLE, out, cap);
}

// 0 if the table can be launched: every segment non-empty and inside [0, n_elems), in increasing
// order without overlap (CTAs of different segments must not write the same element), a group in
// [0, GROUP_COUNT), param_offset >= -1.
static inline int adamw_segments_check(const AdamWSegment* seg, int n, size_t n_elems, CodaError* err) {
    for (int i = 0; i < n; i++) {
        const AdamWSegment* s = &seg[i];
        if (s->begin >= s->end || s->end > n_elems)
            return coda_errorf(err, "AdamW segment %d: range [%zu, %zu) is empty or outside the %zu elements", i, s->begin, s->end, n_elems);
        if (i > 0 && s->begin < seg[i - 1].end)
            return coda_errorf(err, "AdamW segment %d: [%zu, %zu) overlaps or precedes segment %d's [%zu, %zu)", i, s->begin, s->end, i - 1,
                               seg[i - 1].begin, seg[i - 1].end);
        if (s->group < 0 || s->group >= GROUP_COUNT) return coda_errorf(err, "AdamW segment %d: group %d outside [0, %d)", i, s->group, (int)GROUP_COUNT);
        if (s->param_offset < -1) return coda_errorf(err, "AdamW segment %d: param_offset %lld", i, s->param_offset);
    }
    return 0;
}
