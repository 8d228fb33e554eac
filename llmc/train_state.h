// train_state.h — the optimizer half of a checkpoint, train_state.bin: what a resumed run needs
// besides the weights to continue bit-exactly. Host-only (no CUDA): the GPU trainer writes and reads
// it through checkpoint.cuh; CPU tests and fuzzers reach the format here (train_state_parse reads a
// whole file image from memory).
//
// Layout, little-endian, version 2:
//   TrainStateHeader (16 x int64 = 128 bytes):
//     magic, version, n_train, step, adam_step, data_epoch, data_index, seed, B, T, accum,
//     checksum   checksum_bytes() of the whole file with this field read as 0
//     layout     train_state_layout(): which tensors are trainable, their sizes and order
//     reserved[3] (0)
//   f32 master[n_train]   the fp32 master copy of the trainable tensors (the GPU model's compact layout)
//   f32 adam_m[n_train]
//   f32 adam_v[n_train]
// Version 1 is the same with checksum, layout and reserved all 0; it is still read (without those
// two checks). Every size follows from n_train and is checked against the real file size, for
// overflow first, before anything is allocated or read.
#pragma once
#include <errno.h>
#include <sys/stat.h>
#include "checksum.h"
#include "common.h"
#include "params.h"

#define TRAIN_STATE_MAGIC 20261128
#define TRAIN_STATE_VERSION 2
typedef struct {
    int64_t magic, version, n_train, step, adam_step, data_epoch, data_index, seed, B, T, accum;
    int64_t checksum, layout;
    int64_t reserved[3];
} TrainStateHeader;
typedef char train_state_header_is_128_bytes[sizeof(TrainStateHeader) == 128 ? 1 : -1];

// What a resumed run must share with the run that wrote the state, besides the model: the data
// order (seed) and the batch shape.
typedef struct {
    int seed, B, T, accum;
} TrainRun;

// What a file must match to be resumed into a model and run.
typedef struct {
    int64_t n_train;  // trainable values of the model (each of master, m, v)
    uint64_t layout;  // train_state_layout() of the model (0: not checked)
    TrainRun run;
} TrainStateExpect;

// A fingerprint of the trainable layout: each trainable tensor's name and size in table order, with
// its offset in the compact fp32 buffers. Two models with the same n_train but another phase, config
// or table order differ here.
static inline uint64_t train_state_layout(const ParamTable* t, const long long* train_offset) {
    Checksum c;
    checksum_init(&c);
    for (int i = 0; i < t->n; i++) {
        if (train_offset[i] < 0) continue;
        int64_t numbers[2] = {(int64_t)t->tensors[i].numel, (int64_t)train_offset[i]};
        checksum_update(&c, t->tensors[i].name, strlen(t->tensors[i].name) + 1);
        checksum_update(&c, numbers, sizeof(numbers));
    }
    uint64_t h = checksum_final(&c);
    return h ? h : 1;  // 0 means "not recorded"
}

// The file's size in bytes for n_train values; 0 when n_train is negative or the size would not fit
// in 64 bits.
static inline uint64_t train_state_file_bytes(int64_t n_train) {
    if (n_train < 0 || (uint64_t)n_train > (UINT64_MAX - sizeof(TrainStateHeader)) / 12) return 0;
    return sizeof(TrainStateHeader) + 12 * (uint64_t)n_train;
}

// Starts the checksum of a file with header h: the header with its checksum field as 0. The caller
// then adds the three arrays.
static inline void train_state_checksum_begin(Checksum* c, const TrainStateHeader* h) {
    TrainStateHeader z = *h;
    z.checksum = 0;
    checksum_init(c);
    checksum_update(c, &z, sizeof(z));
}

// Checks a header read from file `name` of file_size bytes: magic, version, counters, the size the
// header implies (overflow-checked) against the real size and, if expect is given, the model and
// run it must match. Does not verify the checksum (that needs the whole file: train_state_parse,
// or the reader that streams it).
static inline int train_state_check_header(const TrainStateHeader* h, uint64_t file_size, const char* name, const TrainStateExpect* expect,
                                           CodaError* err) {
    if (h->magic != TRAIN_STATE_MAGIC) return coda_errorf(err, "%s is not a coda.c training state (wrong magic)", name);
    if (h->version != 1 && h->version != TRAIN_STATE_VERSION)
        return coda_errorf(err, "%s has training-state version %lld; this build reads versions 1 and %d", name, (long long)h->version,
                           TRAIN_STATE_VERSION);
    uint64_t want = train_state_file_bytes(h->n_train);
    if (want == 0) return coda_errorf(err, "%s is damaged: its header counts %lld trainable values", name, (long long)h->n_train);
    if (file_size < want)
        return coda_errorf(err, "%s is truncated: %llu of the %llu bytes its header announces (%lld trainable values)", name,
                           (unsigned long long)file_size, (unsigned long long)want, (long long)h->n_train);
    if (file_size > want)
        return coda_errorf(err, "%s has %llu bytes after the %llu its header announces (damaged, or not one file)", name,
                           (unsigned long long)(file_size - want), (unsigned long long)want);
    if (h->step < 0 || h->adam_step < 0 || h->data_epoch < 0 || h->data_index < 0 || h->B < 1 || h->T < 1 || h->accum < 1 ||
        h->B > INT32_MAX || h->T > INT32_MAX || h->accum > INT32_MAX || h->step > INT32_MAX || h->adam_step > INT32_MAX ||
        h->seed < INT32_MIN || h->seed > INT32_MAX)
        return coda_errorf(err, "%s is damaged: step %lld, adam step %lld, data position %lld/%lld, batch %lld x %lld x %lld, seed %lld", name,
                           (long long)h->step, (long long)h->adam_step, (long long)h->data_epoch, (long long)h->data_index, (long long)h->B,
                           (long long)h->T, (long long)h->accum, (long long)h->seed);
    if (h->reserved[0] || h->reserved[1] || h->reserved[2] || (h->version == 1 && (h->checksum || h->layout)))
        return coda_errorf(err, "%s is damaged: reserved header fields are not zero", name);
    if (!expect) return 0;
    if (h->n_train != expect->n_train)
        return coda_errorf(err, "%s holds %lld trainable values but this model has %lld (another phase or config?)", name,
                           (long long)h->n_train, (long long)expect->n_train);
    if (h->layout && expect->layout && (uint64_t)h->layout != expect->layout)
        return coda_errorf(err, "%s belongs to another model: its trainable tensors (names, sizes or order) differ from this model's", name);
    const TrainRun* r = &expect->run;
    if (h->B != r->B || h->T != r->T || h->accum != r->accum || h->seed != r->seed)
        return coda_errorf(err, "%s was written with --batch %lld --seq %lld --accum %lld --seed %lld; resume with the same values", name,
                           (long long)h->B, (long long)h->T, (long long)h->accum, (long long)h->seed);
    return 0;
}

// Parses a whole train-state file image bytes[0, n) (`name` is what messages call it): the header
// checks above, then, for version 2, the checksum. *out (may be NULL) gets the header (all zero if
// the file is refused); the arrays follow it in bytes. expect may be NULL (no model to match).
static inline int train_state_parse(const void* bytes, size_t n, const char* name, const TrainStateExpect* expect, TrainStateHeader* out,
                                    CodaError* err) {
    if (out) memset(out, 0, sizeof(*out));
    TrainStateHeader h;
    if (n < sizeof(h))
        return coda_errorf(err, "%s is truncated: %zu bytes, shorter than the %zu-byte header", name, n, sizeof(h));
    memcpy(&h, bytes, sizeof(h));
    if (train_state_check_header(&h, n, name, expect, err) != 0) return -1;
    if (h.version >= 2) {
        Checksum c;
        train_state_checksum_begin(&c, &h);
        checksum_update(&c, (const char*)bytes + sizeof(h), n - sizeof(h));
        if (checksum_final(&c) != (uint64_t)h.checksum) return coda_errorf(err, "%s is damaged: checksum mismatch", name);
    }
    if (out) *out = h;
    return 0;
}

// Writes the checksum of a version-2 file image into its header (test and fuzz inputs are crafted,
// then sealed, so that they reach the checks after the checksum).
static inline void train_state_seal(void* bytes, size_t n) {
    TrainStateHeader h;
    if (n < sizeof(h)) return;
    memcpy(&h, bytes, sizeof(h));
    Checksum c;
    train_state_checksum_begin(&c, &h);
    checksum_update(&c, (const char*)bytes + sizeof(h), n - sizeof(h));
    h.checksum = (int64_t)checksum_final(&c);
    memcpy(bytes, &h, sizeof(h));
}

// Reads the header of the file at path and checks it against the file's size (and expect, if
// given); the checksum is not verified. Opens the file for the caller when f is non-NULL (positioned
// after the header), else closes it.
static inline int train_state_open(const char* path, const TrainStateExpect* expect, TrainStateHeader* h, FILE** f, CodaError* err) {
    if (f) *f = NULL;
    if (coda_check_regular_file(path, "train state", err) != 0) return -1;  // a FIFO would block fopen
    FILE* fp = fopen(path, "rb");
    if (!fp) return coda_errorf(err, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    int rc = 0;
    if (fstat(fileno(fp), &sb) != 0) rc = coda_errorf(err, "cannot stat %s: %s", path, strerror(errno));
    else if ((uint64_t)sb.st_size < sizeof(*h))
        rc = coda_errorf(err, "%s is truncated: %llu bytes, shorter than the %zu-byte header", path, (unsigned long long)sb.st_size, sizeof(*h));
    else if (fread(h, sizeof(*h), 1, fp) != 1) rc = coda_errorf(err, "cannot read %s: %s", path, strerror(errno));
    else rc = train_state_check_header(h, (uint64_t)sb.st_size, path, expect, err);
    if (rc != 0 || !f) fclose(fp);
    else *f = fp;
    return rc;
}
