// zero.h — ZeRO-1 sharding of the optimizer state across data-parallel ranks, the host-side half of
// multi-GPU training (the GPU and NCCL side is llmc/ddp.cuh): which slice of the compact fp32 buffers
// (master weights, gradients, AdamW moments: the trainable tensors laid out by param_compact_offsets)
// each rank owns, the pieces of trainable tensors inside a slice (each updated with its own tensor's
// group lr and weight decay), and writing and reading one rank's slice of a train_state.bin. The file
// keeps the whole compact layout whatever the number of ranks, so a run resumes with any N: each rank
// reads its own slice of it ("re-slicing" is only another slice plan).
//
// Slices: shard = ceil(n_train / world) rounded up to ZERO_ALIGN elements, so that every slice starts
// on a 256-byte boundary of the fp32 buffers and a reduce-scatter gets equal counts over a buffer
// padded to padded = world * shard; rank r owns [min(r*shard, n_train), min((r+1)*shard, n_train)):
// the last ranks may own less than a shard, or nothing (a tiny model on many ranks).
#pragma once
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
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

// ---------------------------------------------------------------- train_state.bin under ZeRO-1
// Byte offset of element e of array a (0 master, 1 adam_m, 2 adam_v) in a train_state.bin of n_train
// values (train_state.h's layout: the header, then the three arrays of n_train floats).
static inline uint64_t zero_train_state_offset(int64_t n_train, int a, size_t e) {
    return (uint64_t)sizeof(TrainStateHeader) + 4ull * ((uint64_t)a * (uint64_t)n_train + (uint64_t)e);
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
        const long long at = (long long)zero_train_state_offset(n_train, a, s->lo);
        if (fseeko(f, (off_t)at, SEEK_SET) != 0) return coda_errorf(err, "%s: cannot seek to byte %lld: %s", path, at, strerror(errno));
        if (n && fread(dst[a], sizeof(float), n, f) != n)
            return coda_errorf(err, "%s: short read of rank %d's slice [%zu, %zu)", path, s->rank, s->lo, s->hi);
    }
    return 0;
}

// Writing, by all ranks together, on a file system every rank sees (one node's disk; for several
// nodes a shared file system: NFS, Lustre, ...), with a barrier between the steps (llmc/ddp.cuh):
//   1. rank 0   zero_train_state_create: the header (checksum 0) and the file's whole size
//               (ftruncate: the arrays read as zeros until written), synced
//   2. each     zero_train_state_write_slice: its [lo, hi) of master, adam_m and adam_v, pwrite() at
//      rank     zero_train_state_offset, synced. The ranks' byte ranges are disjoint (two may share a
//               page of the file: file systems keep disjoint byte-range writes apart, NFS included)
//   3. rank 0   zero_train_state_finish: the checksum over the whole file, read back (the checksum
//               is a stream that the ranks' pieces cannot be combined into), into the header, synced
// The result is byte for byte what one process writes for the same state (checkpoint_save), so a
// state written by N ranks is read by any number. A rank that dies mid-way leaves the file in the
// checkpoint's .tmp directory, which is never renamed (checkpoint_dir.h).

static inline int zero__pwrite_all(int fd, const void* p, size_t n, uint64_t at, const char* path, CodaError* err) {
    const char* b = (const char*)p;
    while (n) {
        const ssize_t k = pwrite(fd, b, n, (off_t)at);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return coda_errorf(err, "write to %s at byte %llu failed: %s", path, (unsigned long long)at, k < 0 ? strerror(errno) : "no progress");
        b += k; n -= (size_t)k; at += (uint64_t)k;
    }
    return 0;
}
static inline int zero__sync_close(int fd, const char* path, CodaError* err) {
    const int ok = fsync(fd) == 0;
    const int e = errno;
    if (close(fd) != 0 || !ok) return coda_errorf(err, "cannot finish %s: %s", path, strerror(ok ? errno : e));
    return 0;
}

// Step 1 (rank 0): path created (or truncated) with header h, checksum field 0, sized for h->n_train.
static inline int zero_train_state_create(const char* path, const TrainStateHeader* h, CodaError* err) {
    const uint64_t bytes = train_state_file_bytes(h->n_train);
    if (!bytes) return coda_errorf(err, "%s: %lld trainable values", path, (long long)h->n_train);
    const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return coda_errorf(err, "cannot write %s: %s", path, strerror(errno));
    TrainStateHeader z = *h;
    z.checksum = 0;
    if (zero__pwrite_all(fd, &z, sizeof(z), 0, path, err) != 0) { close(fd); return -1; }
    if (ftruncate(fd, (off_t)bytes) != 0) {
        const int e = errno;
        close(fd);
        return coda_errorf(err, "cannot size %s to %llu bytes: %s", path, (unsigned long long)bytes, strerror(e));
    }
    return zero__sync_close(fd, path, err);
}

// A rank's values for step 2: n floats of array a (0 master, 1 adam_m, 2 adam_v) from slice element
// at (0 = the slice's lo) into dst; 0, or -1 with err set. (ddp.cuh: from the device buffers.)
typedef int (*ZeroSliceSource)(void* ctx, int a, size_t at, size_t n, float* dst, CodaError* err);

// Step 2 (every rank): s's slices of the three arrays, from src through a host buffer of chunk
// floats (0: 16 M, 64 MB), into the file rank 0 created (it must exist with its full size).
static inline int zero_train_state_write_slice(const char* path, const ZeroSlice* s, ZeroSliceSource src, void* ctx, size_t chunk,
                                               CodaError* err) {
    const int fd = open(path, O_WRONLY);  // no O_CREAT: a missing file means rank 0's step 1 did not happen
    if (fd < 0) return coda_errorf(err, "rank %d: cannot open %s (rank 0 creates it): %s", s->rank, path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != train_state_file_bytes((int64_t)s->n_train)) {
        close(fd);
        return coda_errorf(err, "rank %d: %s is not the train state of %zu values rank 0 created", s->rank, path, s->n_train);
    }
    const size_t n = s->hi - s->lo;
    if (!chunk) chunk = (size_t)16 << 20;
    float* buf = (float*)coda_malloc_or_die(sizeof(float) * (n < chunk ? (n ? n : 1) : chunk), "train state staging");
    int rc = 0;
    for (int a = 0; a < 3 && rc == 0; a++)
        for (size_t i = 0; i < n && rc == 0; i += chunk) {
            const size_t k = n - i < chunk ? n - i : chunk;
            rc = src(ctx, a, i, k, buf, err);
            if (rc == 0) rc = zero__pwrite_all(fd, buf, sizeof(float) * k, zero_train_state_offset((int64_t)s->n_train, a, s->lo + i), path, err);
        }
    free(buf);
    if (rc != 0) { close(fd); return -1; }
    return zero__sync_close(fd, path, err);
}

// The checksum (checksum.h, as train_state.h defines it: the header with its checksum field as 0,
// then the arrays) of the train state at path, streamed through a 64 MB buffer; *h its header (size
// checked, the checksum itself not). Step 3, and the check of a resumed state (ddp.cuh's rank 0).
static inline int zero_train_state_checksum(const char* path, TrainStateHeader* h, uint64_t* sum, CodaError* err) {
    FILE* f;
    if (train_state_open(path, NULL, h, &f, err) != 0) return -1;
    Checksum c;
    train_state_checksum_begin(&c, h);
    const size_t chunk = (size_t)64 << 20;
    char* buf = (char*)coda_malloc_or_die(chunk, "train state checksum");
    uint64_t left = train_state_file_bytes(h->n_train) - sizeof(TrainStateHeader);
    int rc = 0;
    while (left && rc == 0) {
        const size_t k = left < chunk ? (size_t)left : chunk;
        if (fread(buf, 1, k, f) != k) rc = coda_errorf(err, "cannot read %s: %s", path, ferror(f) ? strerror(errno) : "end of file");
        checksum_update(&c, buf, k);
        left -= k;
    }
    free(buf);
    fclose(f);
    *sum = checksum_final(&c);
    return rc;
}

// Step 3 (rank 0, after every rank's step 2): the checksum into the header.
static inline int zero_train_state_finish(const char* path, CodaError* err) {
    TrainStateHeader h;
    uint64_t sum;
    if (zero_train_state_checksum(path, &h, &sum, err) != 0) return -1;
    h.checksum = (int64_t)sum;
    const int fd = open(path, O_WRONLY);
    if (fd < 0) return coda_errorf(err, "cannot write %s: %s", path, strerror(errno));
    if (zero__pwrite_all(fd, &h, sizeof(h), 0, path, err) != 0) { close(fd); return -1; }
    return zero__sync_close(fd, path, err);
}
