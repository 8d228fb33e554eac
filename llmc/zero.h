// zero.h — ZeRO-1 sharding of the optimizer state across data-parallel ranks, the host-side half of
// multi-GPU training (the NCCL/MPI side is not here yet): which slice of the compact fp32 buffers
// (master weights, gradients, AdamW moments: the trainable tensors laid out by param_compact_offsets)
// each rank owns, the pieces of trainable tensors inside a slice (each updated with its own tensor's
// group lr and weight decay), and reading one rank's slice of a train_state.bin. The file keeps the
// whole compact layout whatever the number of ranks, so a run resumes with any N: each rank reads
// its own slice of it ("re-slicing" is only another slice plan).
//
// Slices: shard = ceil(n_train / world) rounded up to ZERO_ALIGN elements, so that every slice starts
// on a 256-byte boundary of the fp32 buffers and a reduce-scatter gets equal counts over a buffer
// padded to padded = world * shard; rank r owns [min(r*shard, n_train), min((r+1)*shard, n_train)):
// the last ranks may own less than a shard, or nothing (a tiny model on many ranks).
#pragma once
#include <errno.h>
#include <stdio.h>
#include "common.h"
#include "params.h"
#include "train_state.h"

#define ZERO_ALIGN 64  // elements (256 bytes of fp32)

typedef struct {
    int rank, world;
    size_t n_train;  // trainable elements, alignment gaps included (param_compact_offsets)
    size_t shard;    // elements per rank in the padded buffer
    size_t padded;   // world * shard >= n_train
    size_t lo, hi;   // this rank's elements [lo, hi) of the compact buffers
} ZeroSlice;

static inline int zero_slice(size_t n_train, int rank, int world, ZeroSlice* s, CodaError* err) {
    memset(s, 0, sizeof(*s));
    if (world < 1) return coda_errorf(err, "ZeRO: world size %d (must be >= 1)", world);
    if (rank < 0 || rank >= world) return coda_errorf(err, "ZeRO: rank %d outside [0, %d)", rank, world);
    s->rank = rank;
    s->world = world;
    s->n_train = n_train;
    const size_t per = (n_train + (size_t)world - 1) / (size_t)world;
    s->shard = (per + ZERO_ALIGN - 1) / ZERO_ALIGN * ZERO_ALIGN;
    s->padded = s->shard * (size_t)world;
    const size_t lo = s->shard * (size_t)rank, hi = lo + s->shard;
    s->lo = lo < n_train ? lo : n_train;
    s->hi = hi < n_train ? hi : n_train;
    return 0;
}

// A trainable tensor's part inside a slice: compact elements [lo, hi) of table tensor `tensor`.
typedef struct {
    int tensor;
    size_t lo, hi;
} ZeroPiece;

// The pieces of the trainable tensors (train_offset[i] >= 0) that lie in slice s, in buffer order,
// into out (cap entries); returns how many there are (all of them, even beyond cap, so a caller can
// size the array: one per trainable tensor always suffices). Alignment gaps belong to no piece.
static inline int zero_pieces(const ParamTable* t, const long long* train_offset, const ZeroSlice* s, ZeroPiece* out, int cap) {
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        if (train_offset[i] < 0) continue;
        const size_t b = (size_t)train_offset[i], e = b + t->tensors[i].numel;
        const size_t lo = b > s->lo ? b : s->lo, hi = e < s->hi ? e : s->hi;
        if (lo >= hi) continue;
        if (n < cap) { out[n].tensor = i; out[n].lo = lo; out[n].hi = hi; }
        n++;
    }
    return n;
}

// Rank s->rank's slices of master, adam_m and adam_v (each [hi - lo] floats) from a train state
// opened by train_state_open (f positioned anywhere: this seeks), for a file of n_train values.
static inline int zero_read_train_state_slice(FILE* f, const char* path, int64_t n_train, const ZeroSlice* s, float* master, float* m,
                                              float* v, CodaError* err) {
    if ((int64_t)s->n_train != n_train)
        return coda_errorf(err, "%s holds %lld trainable values, the slice plan %zu", path, (long long)n_train, s->n_train);
    const size_t n = s->hi - s->lo;
    float* dst[3] = {master, m, v};
    for (int a = 0; a < 3; a++) {
        const long long at = (long long)sizeof(TrainStateHeader) + 4LL * ((long long)a * n_train + (long long)s->lo);
        if (fseeko(f, (off_t)at, SEEK_SET) != 0) return coda_errorf(err, "%s: cannot seek to byte %lld: %s", path, at, strerror(errno));
        if (n && fread(dst[a], sizeof(float), n, f) != n)
            return coda_errorf(err, "%s: short read of rank %d's slice [%zu, %zu)", path, s->rank, s->lo, s->hi);
    }
    return 0;
}
