// train_state.h — the optimizer half of a checkpoint, train_state.bin: what a resumed run needs
// besides the weights to continue bit-exactly. Host-only (no CUDA): the GPU trainer writes and reads
// it through checkpoint.cuh; CPU tests and fuzzers reach the format here.
//
// Layout, little-endian, version 1:
//   TrainStateHeader (16 x int64 = 128 bytes): magic, version, n_train, step, adam_step,
//                    data_epoch, data_index, seed, B, T, accum, reserved[5] (0)
//   f32 master[n_train]   the fp32 master copy of the trainable tensors (the GPU model's compact layout)
//   f32 adam_m[n_train]
//   f32 adam_v[n_train]
#pragma once
#include "common.h"

#define TRAIN_STATE_MAGIC 20261128
#define TRAIN_STATE_VERSION 1
typedef struct {
    int64_t magic, version, n_train, step, adam_step, data_epoch, data_index, seed, B, T, accum;
    int64_t reserved[5];
} TrainStateHeader;

// What a resumed run must share with the run that wrote the state, besides the model: the data
// order (seed) and the batch shape.
typedef struct {
    int seed, B, T, accum;
} TrainRun;

// Checks a header read from `path` against the model (n_train trainable values) and the run.
static inline int train_state_check(const TrainStateHeader* h, const char* path, size_t n_train, const TrainRun* run, CodaError* err) {
    if (h->magic != TRAIN_STATE_MAGIC) return coda_errorf(err, "%s is not a coda.c training state", path);
    if (h->version != TRAIN_STATE_VERSION)
        return coda_errorf(err, "%s has version %lld, this build reads %d", path, (long long)h->version, TRAIN_STATE_VERSION);
    if (h->n_train != (int64_t)n_train)
        return coda_errorf(err, "%s holds %lld trainable values but this model has %zu (different phase or config?)", path,
                           (long long)h->n_train, n_train);
    if (h->B != run->B || h->T != run->T || h->accum != run->accum || h->seed != run->seed)
        return coda_errorf(err, "%s was written with --batch %lld --seq %lld --accum %lld --seed %lld; resume with the same values", path,
                           (long long)h->B, (long long)h->T, (long long)h->accum, (long long)h->seed);
    return 0;
}
