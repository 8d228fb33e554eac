// dataloader.h — batches of fixed-length rows from one token shard (llmc/shard.h), shuffled by a
// seeded permutation, sliced per data-parallel rank, resumable. Plain C (also compiles as C++).
//
// Rows. The shard is a stream of N tokens. Row i is the T+1 tokens starting at token i*T: the
// first T are the inputs, the last T (shifted by one) the targets. Consecutive rows share one token
// (row i's last target is row i+1's first input), as in llm.c: the targets of rows 0..n_rows-1 are
// tokens 1..n_rows*T, each exactly once. n_rows = (N - 1) / T; a tail too short for a row is unused. No row gets its own BOS: the shard's packing decides where BOS tokens are.
//
// Order. In shuffle mode, epoch e visits the rows in a permutation drawn from (seed, e) alone, so
// every rank and every rerun derives the same order without communicating, and a resumed run derives
// the same permutation it would have had. Sequential mode (evaluation) visits rows 0, 1, 2, ...
//
// Ranks. A global batch is n_ranks * B consecutive entries of the permutation; rank r takes entries
// r*B .. r*B+B-1 of it. So the ranks of one step partition the global batch. An epoch ends when
// fewer than n_ranks * B entries are left; the leftover rows are skipped in that epoch (a different
// permutation next epoch skips different ones; sequential mode always skips the same final rows).
//
// Position. {epoch, index}: index = permutation entries consumed in this epoch (a multiple of the
// global batch when the world size does not change). It is all a checkpoint must store:
// dataloader_seek(position) then dataloader_next() yields exactly what the uninterrupted run did.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "rand.h"
#include "shard.h"

typedef struct {
    uint64_t epoch;
    uint64_t index;  // permutation entries already consumed in this epoch (all ranks together)
} DataPosition;

typedef struct {
    // configuration
    char path[4096];
    int B, T;
    int rank, n_ranks;
    uint64_t seed;
    int shuffle;  // 1: seeded permutation per epoch; 0: sequential rows (evaluation)
    // the shard
    FILE* file;
    ShardHeader header;
    uint64_t n_rows;            // rows of T+1 tokens in the shard
    uint64_t batches_per_epoch; // global batches per epoch
    // state
    DataPosition pos;           // where the next call to dataloader_next starts
    uint64_t perm_epoch;        // the epoch `perm` was drawn for
    uint64_t* perm;             // n_rows entries: the visiting order of this epoch
    // the current batch (filled by dataloader_next); row b of this rank is inputs[b*T .. b*T+T-1]
    int32_t* inputs;            // B*T
    int32_t* targets;           // B*T
    uint64_t* batch_rows;       // B: which shard rows this batch holds (for logging and tests)
    int32_t* row_buf;           // T+1
    void* scratch;              // (T+1) * token_bytes
} DataLoader;

// The permutation seed of an epoch: a splitmix64 hash of (seed, epoch), so that nearby seeds and
// nearby epochs give unrelated streams.
static inline uint64_t dataloader_epoch_seed(uint64_t seed, uint64_t epoch) {
    Rng r;
    rng_seed(&r, seed);
    uint64_t a = rng_u64(&r);
    rng_seed(&r, a ^ (epoch * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull));
    return rng_u64(&r);
}

static inline void dataloader_fill_perm(DataLoader* dl, uint64_t epoch) {
    for (uint64_t i = 0; i < dl->n_rows; i++) dl->perm[i] = i;
    if (dl->shuffle) {  // Fisher-Yates, unbiased via rng_below
        Rng r;
        rng_seed(&r, dataloader_epoch_seed(dl->seed, epoch));
        for (uint64_t i = dl->n_rows - 1; i > 0; i--) {
            uint64_t j = rng_below(&r, i + 1);
            uint64_t t = dl->perm[i]; dl->perm[i] = dl->perm[j]; dl->perm[j] = t;
        }
    }
    dl->perm_epoch = epoch;
}

static inline void dataloader_free(DataLoader* dl) {
    if (dl->file) fclose(dl->file);
    free(dl->perm); free(dl->inputs); free(dl->targets); free(dl->batch_rows); free(dl->row_buf); free(dl->scratch);
    memset(dl, 0, sizeof(*dl));
}

// Opens the shard, validates it completely (header, size, every token id), and positions the loader
// at the start of epoch 0. Errors: unreadable/bad shard (see shard.h), fewer tokens than one row,
// fewer rows than one global batch, bad B/T/rank arguments.
static inline int dataloader_init(DataLoader* dl, const char* path, int B, int T, int rank, int n_ranks, uint64_t seed,
                                  int shuffle, CodaError* err) {
    memset(dl, 0, sizeof(*dl));
    if (B <= 0 || T <= 0) return coda_errorf(err, "%s: dataloader needs B >= 1 and T >= 1 (got B=%d, T=%d)", path, B, T);
    if (n_ranks <= 0 || rank < 0 || rank >= n_ranks)
        return coda_errorf(err, "%s: dataloader rank %d is not in [0, %d)", path, rank, n_ranks);
    if (strlen(path) >= sizeof(dl->path)) return coda_errorf(err, "%s: path too long", path);
    snprintf(dl->path, sizeof(dl->path), "%s", path);
    dl->B = B; dl->T = T; dl->rank = rank; dl->n_ranks = n_ranks; dl->seed = seed; dl->shuffle = shuffle ? 1 : 0;
    if (shard_open(path, &dl->header, &dl->file, err) != 0) return -1;
    const ShardHeader* h = &dl->header;
    if (h->n_tokens < (int64_t)T + 1) {
        int64_t n = h->n_tokens;
        dataloader_free(dl);
        return coda_errorf(err, "%s: too few tokens: %lld, but one row needs T+1 = %d", path, (long long)n, T + 1);
    }
    if (shard_validate_ids(dl->file, h, path, err) != 0) { dataloader_free(dl); return -1; }
    dl->n_rows = (uint64_t)(h->n_tokens - 1) / (uint64_t)T;
    uint64_t global = (uint64_t)B * (uint64_t)n_ranks;
    dl->batches_per_epoch = dl->n_rows / global;
    if (dl->batches_per_epoch == 0) {
        uint64_t rows = dl->n_rows;
        dataloader_free(dl);
        return coda_errorf(err, "%s: too few tokens: %llu rows of T+1 = %d tokens, but one global batch needs "
                           "n_ranks*B = %llu rows", path, (unsigned long long)rows, T + 1, (unsigned long long)global);
    }
    // Sizes: n_rows <= n_tokens, which shard_open checked against the file size, and B*T < 2^62
    // (both are ints), so none of these products can wrap.
    const size_t perm_bytes = dl->n_rows * sizeof(uint64_t), batch_bytes = (size_t)B * (size_t)T * sizeof(int32_t);
    const size_t row_bytes = ((size_t)T + 1) * sizeof(int32_t), scratch_bytes = ((size_t)T + 1) * (size_t)h->token_bytes;
    dl->perm = (uint64_t*)malloc(perm_bytes);
    dl->inputs = (int32_t*)malloc(batch_bytes);
    dl->targets = (int32_t*)malloc(batch_bytes);
    dl->batch_rows = (uint64_t*)malloc((size_t)B * sizeof(uint64_t));
    dl->row_buf = (int32_t*)malloc(row_bytes);
    dl->scratch = malloc(scratch_bytes);
    if (!dl->perm || !dl->inputs || !dl->targets || !dl->batch_rows || !dl->row_buf || !dl->scratch) {
        dataloader_free(dl);
        return coda_errorf(err, "%s: out of host memory for the dataloader (B=%d, T=%d): %zu bytes of row order, "
                           "2 x %zu bytes of batch, %zu + %zu bytes of row buffers", path, B, T, perm_bytes, batch_bytes,
                           row_bytes, scratch_bytes);
    }
    dataloader_fill_perm(dl, 0);
    dl->pos.epoch = 0;
    dl->pos.index = 0;
    return 0;
}

static inline DataPosition dataloader_position(const DataLoader* dl) { return dl->pos; }

// Moves to a saved position (from dataloader_position of a run with the same shard and seed).
static inline int dataloader_seek(DataLoader* dl, DataPosition p, CodaError* err) {
    if (p.index > dl->n_rows)
        return coda_errorf(err, "%s: cannot resume at row index %llu: the shard has only %llu rows of T+1 = %d tokens "
                           "(different shard or T?)", dl->path, (unsigned long long)p.index,
                           (unsigned long long)dl->n_rows, dl->T + 1);
    dl->pos = p;
    if (dl->perm_epoch != p.epoch) dataloader_fill_perm(dl, p.epoch);
    return 0;
}

// Back to the first row of epoch 0 (an evaluation pass starts here each time).
static inline void dataloader_reset(DataLoader* dl) {
    DataPosition p = {0, 0};
    dataloader_seek(dl, p, NULL);
}

// Loads this rank's next B rows into inputs/targets and advances the position by one global batch.
static inline int dataloader_next(DataLoader* dl, CodaError* err) {
    uint64_t global = (uint64_t)dl->B * (uint64_t)dl->n_ranks;
    if (dl->pos.index + global > dl->n_rows) {  // not enough rows left for a full global batch
        dl->pos.epoch++;
        dl->pos.index = 0;
    }
    if (dl->perm_epoch != dl->pos.epoch) dataloader_fill_perm(dl, dl->pos.epoch);
    const int T = dl->T;
    for (int b = 0; b < dl->B; b++) {
        uint64_t row = dl->perm[dl->pos.index + (uint64_t)dl->rank * dl->B + (uint64_t)b];
        dl->batch_rows[b] = row;
        if (shard_read_tokens(dl->file, &dl->header, dl->path, (int64_t)(row * (uint64_t)T), (size_t)T + 1,
                              dl->row_buf, dl->scratch, err) != 0)
            return -1;
        memcpy(dl->inputs + (size_t)b * T, dl->row_buf, (size_t)T * sizeof(int32_t));
        memcpy(dl->targets + (size_t)b * T, dl->row_buf + 1, (size_t)T * sizeof(int32_t));
    }
    dl->pos.index += global;
    return 0;
}
