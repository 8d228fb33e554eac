// state_file.h — a generation session's bounded state as a file: every layer's banks, the tokens
// fed, the next-token logits and the sampling RNG, so that a loaded session continues exactly as
// the uninterrupted one would have.
//
// Layout, little-endian (the hosts we run on), version 2:
//   char[8]  "CODASTAT"
//   uint32   version (2)
//   uint32   0
//   uint64   checksum: checksum_bytes() of every byte after this field
//   int32[9] fingerprint: W, Me, Ms, Hkv, Dh, n_layers, vocab_size, dim, element bytes (4: fp32)
//   uint64   weights: checksum_bytes() of the model's fp32 parameters (a state belongs to one model)
//   int64    tokens fed
//   int32    has_logits
//   uint64   sampling RNG state; int32 has_spare; float64 spare
//   per layer l = 0..n_layers-1:
//     int32 recent_idx, int32 recent_filled, int64 pos,
//     f32 k[Hkv][slots][Dh], f32 v[Hkv][slots][Dh], u8 allowed[slots], f32 g_ring[W],
//     int64 src[slots], int64 last_exact[Me]                  (slots = W + Me + Ms)
//   f32 logits[vocab_size]   (only if has_logits)
// The size follows from the header: it is computed from the file's own fingerprint, checked for
// overflow, and compared with the real size before the checksum, the model or any allocation. A
// damaged file then fails its checksum; a file of another model shape or other weights is refused
// naming what differs. Version 1 (no checksum, no weights) is refused with a message. Files are
// written to a temporary name and renamed (a crash never leaves half a state). state_file_parse
// reads an image from memory (the file reader and the fuzzers share it).
#pragma once
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include "checksum.h"
#include "session.h"

#define STATE_FILE_MAGIC "CODASTAT"
#define STATE_FILE_VERSION 2u
#define STATE_FILE_N_FP 9
#define STATE_FILE_CHECKSUM_AT 16   // byte offset of the checksum field; it covers the bytes from 24 on
#define STATE_FILE_HEADER_BYTES (8 + 4 + 4 + 8 + 4 * STATE_FILE_N_FP + 8 + 8 + 4 + 8 + 4 + 8)
static const char* const STATE_FILE_FP_NAMES[STATE_FILE_N_FP] = {"W (window)", "Me (exact bank)", "Ms (summary bank)",
                                                                 "Hkv (KV heads)", "Dh (head dim)", "n_layers", "vocab_size", "dim",
                                                                 "element bytes"};

static inline void state_file_fingerprint(const ModelConfig* c, int32_t fp[STATE_FILE_N_FP]) {
    fp[0] = c->window; fp[1] = c->n_exact; fp[2] = c->n_summary; fp[3] = c->n_kv_heads; fp[4] = c->head_dim;
    fp[5] = c->n_layers; fp[6] = c->vocab_size; fp[7] = c->dim; fp[8] = (int32_t)sizeof(float);
}

// Which model a state belongs to: a checksum of its fp32 parameters.
static inline uint64_t state_file_weights(const Model_f32* m) { return checksum_bytes(m->params, sizeof(float) * m->table.total); }

// a * b + c into *out unless it overflows 64 bits (all three non-negative).
static inline int state_file__mad(uint64_t a, uint64_t b, uint64_t c, uint64_t* out) {
    if (b && a > (UINT64_MAX - c) / b) return -1;
    *out = a * b + c;
    return 0;
}
// The bytes of a file with fingerprint fp; -1 if a field is negative or the size overflows.
static inline int state_file_bytes(const int32_t fp[STATE_FILE_N_FP], int has_logits, uint64_t* out) {
    for (int i = 0; i < STATE_FILE_N_FP; i++)
        if (fp[i] < 0) return -1;
    uint64_t W = (uint64_t)fp[0], Me = (uint64_t)fp[1], slots = W + Me + (uint64_t)fp[2], kv, layer, all;
    // per layer: 16 bytes of counters, K and V, the mask, the ring gates, src, the LRU stamps
    if (state_file__mad((uint64_t)fp[3] * slots, (uint64_t)fp[4], 0, &kv) != 0) return -1;
    if (state_file__mad(kv, 8, 16 + slots + 4 * W + 8 * slots + 8 * Me, &layer) != 0) return -1;
    if (state_file__mad(layer, (uint64_t)fp[5], STATE_FILE_HEADER_BYTES + (has_logits ? 4 * (uint64_t)fp[6] : 0), &all) != 0) return -1;
    *out = all;
    return 0;
}

typedef struct { char* p; size_t n, cap; } StateFileBuf;
static inline void state_file__put(StateFileBuf* b, const void* src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = (char*)realloc(b->p, b->cap);
        if (!b->p) coda_fatal("out of host memory writing a state file (%zu bytes)", b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

// Writes the checksum of a file image into its place (for the writer, and for test and fuzz inputs
// that are crafted, then sealed, so that they reach the checks after the checksum).
static inline void state_file_seal(void* bytes, size_t n) {
    if (n < STATE_FILE_CHECKSUM_AT + 8) return;
    uint64_t sum = checksum_bytes((const char*)bytes + STATE_FILE_CHECKSUM_AT + 8, n - STATE_FILE_CHECKSUM_AT - 8);
    memcpy((char*)bytes + STATE_FILE_CHECKSUM_AT, &sum, 8);
}

// What a state file holds, wherever it lives: the CPU session's fields (session_state_view) or a host
// copy of the GPU decoder's state (llmc/decode.cuh). The pointers are read by encode and written by parse.
typedef struct {
    const ModelConfig* cfg;
    uint64_t weights;        // state_file_weights of the model's fp32 parameters
    BankState_f32* states;   // [n_layers]
    int64_t* n_fed;
    float* logits;           // [vocab_size]
    int* has_logits;
    Rng* rng;
} StateView;

static inline StateView session_state_view(Session* s) {
    StateView v = {&s->m->cfg, state_file_weights(s->m), s->states, &s->n_fed, s->logits, &s->has_logits, &s->rng};
    return v;
}

// The file image of state view v (malloc'd into *bytes, *n bytes). Only a bounded model has a state.
static inline int state_file_encode_view(const StateView* v, void** bytes, size_t* n, CodaError* err) {
    const ModelConfig* c = v->cfg;
    *bytes = NULL;
    *n = 0;
    if (!c->bounded) return coda_errorf(err, "only a bounded model has a state to save (this model is unbounded)");
    StateFileBuf b = {NULL, 0, 0};
    int32_t fp[STATE_FILE_N_FP];
    state_file_fingerprint(c, fp);
    uint32_t version = STATE_FILE_VERSION, zero = 0;
    uint64_t checksum = 0, weights = v->weights;  // the checksum is filled in at the end
    int32_t has_logits = *v->has_logits, has_spare = v->rng->has_spare;
    state_file__put(&b, STATE_FILE_MAGIC, 8);
    state_file__put(&b, &version, 4);
    state_file__put(&b, &zero, 4);
    state_file__put(&b, &checksum, 8);
    state_file__put(&b, fp, sizeof(fp));
    state_file__put(&b, &weights, 8);
    state_file__put(&b, v->n_fed, 8);
    state_file__put(&b, &has_logits, 4);
    state_file__put(&b, &v->rng->state, 8);
    state_file__put(&b, &has_spare, 4);
    state_file__put(&b, &v->rng->spare, 8);
    for (int l = 0; l < c->n_layers; l++) {
        const BankState_f32* st = &v->states[l];
        size_t kv = (size_t)st->Hkv * st->slots * st->Dh;
        int32_t ri = st->recent_idx, rf = st->recent_filled;
        state_file__put(&b, &ri, 4);
        state_file__put(&b, &rf, 4);
        state_file__put(&b, &st->pos, 8);
        state_file__put(&b, st->k, kv * sizeof(float));
        state_file__put(&b, st->v, kv * sizeof(float));
        state_file__put(&b, st->allowed, (size_t)st->slots);
        state_file__put(&b, st->g_ring, (size_t)st->W * sizeof(float));
        state_file__put(&b, st->src, (size_t)st->slots * 8);
        state_file__put(&b, st->last_exact, (size_t)st->Me * 8);
    }
    if (*v->has_logits) state_file__put(&b, v->logits, (size_t)c->vocab_size * sizeof(float));
    state_file_seal(b.p, b.n);
    *bytes = b.p;
    *n = b.n;
    return 0;
}

static inline int state_file_encode(const Session* s, void** bytes, size_t* n, CodaError* err) {
    StateView v = session_state_view((Session*)s);
    return state_file_encode_view(&v, bytes, n, err);
}

// Writes the state of view v to path (through path.tmp.PID, renamed into place).
static inline int state_file_save_view(const char* path, const StateView* v, CodaError* err) {
    void* bytes;
    size_t n;
    CodaError inner;
    if (state_file_encode_view(v, &bytes, &n, &inner) != 0) return coda_errorf(err, "%s: %s", path, inner.msg);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int rc = -1;
    FILE* f = fopen(tmp, "wb");
    if (!f) { coda_errorf(err, "%s: cannot create: %s", tmp, strerror(errno)); goto done; }
    if (fwrite(bytes, 1, n, f) != n || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        coda_errorf(err, "%s: write failed: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        goto done;
    }
    if (fclose(f) != 0) { coda_errorf(err, "%s: close failed: %s", tmp, strerror(errno)); unlink(tmp); goto done; }
    if (rename(tmp, path) != 0) { coda_errorf(err, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno)); unlink(tmp); goto done; }
    rc = 0;
done:
    free(bytes);
    return rc;
}
static inline int state_file_save(const char* path, const Session* s, CodaError* err) {
    StateView v = session_state_view((Session*)s);
    return state_file_save_view(path, &v, err);
}

typedef struct { const char* p; size_t n, at; } StateFileReader;
static inline void state_file__get(StateFileReader* r, void* dst, size_t n) {  // sizes are checked up front
    memcpy(dst, r->p + r->at, n);
    r->at += n;
}

// The header fields, as read.
typedef struct {
    uint32_t version, zero;
    uint64_t checksum;
    int32_t fp[STATE_FILE_N_FP];
    uint64_t weights;
    int64_t n_fed;
    int32_t has_logits;
    uint64_t rng_state;
    int32_t has_spare;
    double spare;
} StateFileHeader;

// Reads and checks the header of a file of file_size bytes whose first min(file_size, header) bytes
// are at `prefix`: magic, version, and the size the file's own fields imply (overflow-checked)
// against file_size. Needs nothing else of the file: a reader can refuse a wrong size before it
// allocates anything.
static inline int state_file_check_header(const void* prefix, uint64_t file_size, const char* name, StateFileHeader* h, CodaError* err) {
    memset(h, 0, sizeof(*h));
    StateFileReader r = {(const char*)prefix, (size_t)(file_size < STATE_FILE_HEADER_BYTES ? file_size : STATE_FILE_HEADER_BYTES), 0};
    char magic[8];
    if (file_size < 12)
        return coda_errorf(err, "%s: not a coda.c state file: truncated (%llu bytes, shorter than the %d-byte header)", name,
                           (unsigned long long)file_size, STATE_FILE_HEADER_BYTES);
    state_file__get(&r, magic, 8);
    if (memcmp(magic, STATE_FILE_MAGIC, 8) != 0)
        return coda_errorf(err, "%s: not a coda.c state file (wrong magic; expected \"%s\")", name, STATE_FILE_MAGIC);
    state_file__get(&r, &h->version, 4);
    if (h->version != STATE_FILE_VERSION)
        return coda_errorf(err, "%s: state file version %u is not supported (this build reads version %u%s)", name, h->version,
                           STATE_FILE_VERSION, h->version == 1 ? "; version 1 had no checksum: save the state again" : "");
    if (file_size < STATE_FILE_HEADER_BYTES)
        return coda_errorf(err, "%s: truncated state file (%llu bytes, shorter than the %d-byte header)", name, (unsigned long long)file_size,
                           STATE_FILE_HEADER_BYTES);
    state_file__get(&r, &h->zero, 4);
    state_file__get(&r, &h->checksum, 8);
    state_file__get(&r, h->fp, sizeof(h->fp));
    state_file__get(&r, &h->weights, 8);
    state_file__get(&r, &h->n_fed, 8);
    state_file__get(&r, &h->has_logits, 4);
    state_file__get(&r, &h->rng_state, 8);
    state_file__get(&r, &h->has_spare, 4);
    state_file__get(&r, &h->spare, 8);
    if (h->zero != 0 || (h->has_logits != 0 && h->has_logits != 1))
        return coda_errorf(err, "%s: corrupt state file header (reserved %u, has_logits %d)", name, h->zero, h->has_logits);
    const int32_t* fp = h->fp;
    uint64_t expect;
    if (state_file_bytes(fp, h->has_logits, &expect) != 0)
        return coda_errorf(err, "%s: corrupt state file header: its shape W=%d Me=%d Ms=%d Hkv=%d Dh=%d layers=%d vocab=%d gives no valid size",
                           name, fp[0], fp[1], fp[2], fp[3], fp[4], fp[5], fp[6]);
    if (file_size < expect)
        return coda_errorf(err, "%s: truncated state file (%llu of %llu bytes)", name, (unsigned long long)file_size, (unsigned long long)expect);
    if (file_size > expect)
        return coda_errorf(err, "%s: state file has %llu unexpected trailing bytes (expected %llu bytes)", name,
                           (unsigned long long)(file_size - expect), (unsigned long long)expect);
    return 0;
}

// Parses a state file image (bytes[0, n); `name` is what messages call it, e.g. the path) into the
// view of a session of the same model: its states and pending logits are replaced, its RNG too
// unless keep_rng. Checks, in this order: the header (state_file_check_header: magic, version, the
// size its fields imply); the checksum; the shape and the weights against the session's model; the
// counters' ranges. On error the session is untouched.
static inline int state_file_parse_view(const void* bytes, size_t size, const char* name, StateView* v, int keep_rng, CodaError* err) {
    const ModelConfig* c = v->cfg;
    if (!c->bounded) return coda_errorf(err, "%s: a bounded state cannot be loaded into an unbounded model", name);
    int rc = -1;
    StateFileHeader h;
    int32_t want[STATE_FILE_N_FP];
    const int32_t* fp = h.fp;
    BankState_f32* st = NULL;
    StateFileReader r = {(const char*)bytes, size, STATE_FILE_HEADER_BYTES};
    if (state_file_check_header(bytes, size, name, &h, err) != 0) goto done;
    if (checksum_bytes((const char*)bytes + STATE_FILE_CHECKSUM_AT + 8, size - STATE_FILE_CHECKSUM_AT - 8) != h.checksum) {
        coda_errorf(err, "%s: damaged state file: checksum mismatch", name);
        goto done;
    }
    state_file_fingerprint(c, want);
    for (int i = 0; i < STATE_FILE_N_FP; i++)
        if (fp[i] != want[i]) {
            coda_errorf(err, "%s: state shape does not match the model: the file has %s = %d, the model %d "
                        "(file: W=%d Me=%d Ms=%d Hkv=%d Dh=%d layers=%d vocab=%d dim=%d; model: W=%d Me=%d Ms=%d Hkv=%d Dh=%d layers=%d vocab=%d dim=%d)",
                        name, STATE_FILE_FP_NAMES[i], fp[i], want[i], fp[0], fp[1], fp[2], fp[3], fp[4], fp[5], fp[6], fp[7], want[0], want[1],
                        want[2], want[3], want[4], want[5], want[6], want[7]);
            goto done;
        }
    if (h.weights != v->weights) {
        coda_errorf(err, "%s: the state was saved with another model's weights (same shape, other parameters: another checkpoint?)", name);
        goto done;
    }
    st = layer_states_alloc(c);
    for (int l = 0; l < c->n_layers; l++) {
        BankState_f32* b = &st[l];
        size_t kv = (size_t)b->Hkv * b->slots * b->Dh;
        int32_t ri, rf;
        state_file__get(&r, &ri, 4);
        state_file__get(&r, &rf, 4);
        state_file__get(&r, &b->pos, 8);
        state_file__get(&r, b->k, kv * sizeof(float));
        state_file__get(&r, b->v, kv * sizeof(float));
        state_file__get(&r, b->allowed, (size_t)b->slots);
        state_file__get(&r, b->g_ring, (size_t)b->W * sizeof(float));
        state_file__get(&r, b->src, (size_t)b->slots * 8);
        state_file__get(&r, b->last_exact, (size_t)b->Me * 8);
        b->recent_idx = ri;
        b->recent_filled = rf;
        if (rf < 0 || rf > b->W || ri < 0 || ri >= b->W || b->pos != h.n_fed || h.n_fed < 0) {
            coda_errorf(err, "%s: corrupt state file: layer %d has recent_idx=%d recent_filled=%d pos=%lld (W=%d, tokens fed %lld)", name,
                        l, ri, rf, (long long)b->pos, b->W, (long long)h.n_fed);
            goto done;
        }
        for (int k = 0; k < b->slots; k++)
            if (b->allowed[k] > 1) { coda_errorf(err, "%s: corrupt state file: layer %d slot %d mask byte %d", name, l, k, b->allowed[k]); goto done; }
    }
    if (h.has_logits) state_file__get(&r, v->logits, (size_t)c->vocab_size * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) bank_copy_f32(&v->states[l], &st[l]);
    *v->n_fed = h.n_fed;
    *v->has_logits = h.has_logits;
    if (!keep_rng) {
        v->rng->state = h.rng_state;
        v->rng->has_spare = h.has_spare;
        v->rng->spare = h.spare;
    }
    rc = 0;
done:
    layer_states_free(st, c);
    return rc;
}

static inline int state_file_parse(const void* bytes, size_t size, const char* name, Session* s, int keep_rng, CodaError* err) {
    StateView v = session_state_view(s);
    return state_file_parse_view(bytes, size, name, &v, keep_rng, err);
}

// Loads the state file at path into view v (see state_file_parse). The header is checked against
// the file's size before the file is read into memory.
static inline int state_file_load_view(const char* path, StateView* v, int keep_rng, CodaError* err) {
    if (!v->cfg->bounded) return coda_errorf(err, "%s: a bounded state cannot be loaded into an unbounded model", path);
    if (coda_check_regular_file(path, "state file", err) != 0) return -1;  // a FIFO would block fopen
    FILE* f = fopen(path, "rb");
    if (!f) return coda_errorf(err, "%s: cannot open state file: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) { fclose(f); return coda_errorf(err, "%s: cannot stat: %s", path, strerror(errno)); }
    if (!S_ISREG(sb.st_mode)) { fclose(f); return coda_errorf(err, "%s: not a regular file", path); }
    uint64_t size = (uint64_t)sb.st_size;
    char prefix[STATE_FILE_HEADER_BYTES];
    size_t want = size < sizeof(prefix) ? (size_t)size : sizeof(prefix);
    StateFileHeader h;
    if (fread(prefix, 1, want, f) != want) { fclose(f); return coda_errorf(err, "%s: cannot read: %s", path, strerror(errno)); }
    if (state_file_check_header(prefix, size, path, &h, err) != 0) { fclose(f); return -1; }
    char* data = (char*)coda_malloc_or_die((size_t)size, "state file");
    memcpy(data, prefix, want);
    size_t got = fread(data + want, 1, (size_t)size - want, f);
    fclose(f);
    int rc = got == (size_t)size - want ? state_file_parse_view(data, (size_t)size, path, v, keep_rng, err)
                                        : coda_errorf(err, "%s: read %zu of %llu bytes", path, got + want, (unsigned long long)size);
    free(data);
    return rc;
}
static inline int state_file_load(const char* path, Session* s, int keep_rng, CodaError* err) {
    if (!s->m->cfg.bounded) return coda_errorf(err, "%s: a bounded state cannot be loaded into an unbounded model", path);
    StateView v = session_state_view(s);
    return state_file_load_view(path, &v, keep_rng, err);
}
