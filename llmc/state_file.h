// state_file.h — a generation session's bounded state as a file: every layer's banks, the tokens
// fed, the next-token logits and the sampling RNG, so that a loaded session continues exactly as
// the uninterrupted one would have.
//
// Layout, little-endian (the hosts we run on), version 1:
//   char[8]  "CODASTAT"
//   uint32   version (1)
//   int32[9] fingerprint: W, Me, Ms, Hkv, Dh, n_layers, vocab_size, dim, element bytes (4: fp32)
//   int64    tokens fed
//   int32    has_logits
//   uint64   sampling RNG state; int32 has_spare; float64 spare
//   per layer l = 0..n_layers-1:
//     int32 recent_idx, int32 recent_filled, int64 pos,
//     f32 k[Hkv][slots][Dh], f32 v[Hkv][slots][Dh], u8 allowed[slots], f32 g_ring[W],
//     int64 src[slots], int64 last_exact[Me]
//   f32 logits[vocab_size]   (only if has_logits)
// The size follows from the header, so a truncated or over-long file is caught before any field is
// used. Files are written to a temporary name and renamed (a crash never leaves half a state).
// state_file_parse reads an image from memory (the file readers and fuzzers share it).
#pragma once
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include "session.h"

#define STATE_FILE_MAGIC "CODASTAT"
#define STATE_FILE_VERSION 1u
#define STATE_FILE_N_FP 9
static const char* const STATE_FILE_FP_NAMES[STATE_FILE_N_FP] = {"W (window)", "Me (exact bank)", "Ms (summary bank)",
                                                                 "Hkv (KV heads)", "Dh (head dim)", "n_layers", "vocab_size", "dim",
                                                                 "element bytes"};

static inline void state_file_fingerprint(const ModelConfig* c, int32_t fp[STATE_FILE_N_FP]) {
    fp[0] = c->window; fp[1] = c->n_exact; fp[2] = c->n_summary; fp[3] = c->n_kv_heads; fp[4] = c->head_dim;
    fp[5] = c->n_layers; fp[6] = c->vocab_size; fp[7] = c->dim; fp[8] = (int32_t)sizeof(float);
}

static inline size_t state_file_layer_bytes(const ModelConfig* c) {
    size_t slots = (size_t)config_state_slots(c), kv = (size_t)c->n_kv_heads * slots * c->head_dim;
    return 4 + 4 + 8 + 2 * kv * sizeof(float) + slots + (size_t)c->window * sizeof(float) + slots * 8 + (size_t)c->n_exact * 8;
}
static inline size_t state_file_header_bytes(void) { return 8 + 4 + 4 * STATE_FILE_N_FP + 8 + 4 + 8 + 4 + 8; }

typedef struct { char* p; size_t n, cap; } StateFileBuf;
static inline void state_file__put(StateFileBuf* b, const void* src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = (char*)realloc(b->p, b->cap);
        if (!b->p) coda_fatal("out of host memory writing a state file");
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

// The file image of session s (malloc'd into *bytes, *n bytes). Only a bounded model has a state.
static inline int state_file_encode(const Session* s, void** bytes, size_t* n, CodaError* err) {
    const ModelConfig* c = &s->m->cfg;
    *bytes = NULL;
    *n = 0;
    if (!c->bounded) return coda_errorf(err, "only a bounded model has a state to save (this model is unbounded)");
    StateFileBuf b = {NULL, 0, 0};
    int32_t fp[STATE_FILE_N_FP];
    state_file_fingerprint(c, fp);
    uint32_t version = STATE_FILE_VERSION;
    int32_t has_logits = s->has_logits, has_spare = s->rng.has_spare;
    state_file__put(&b, STATE_FILE_MAGIC, 8);
    state_file__put(&b, &version, 4);
    state_file__put(&b, fp, sizeof(fp));
    state_file__put(&b, &s->n_fed, 8);
    state_file__put(&b, &has_logits, 4);
    state_file__put(&b, &s->rng.state, 8);
    state_file__put(&b, &has_spare, 4);
    state_file__put(&b, &s->rng.spare, 8);
    for (int l = 0; l < c->n_layers; l++) {
        const BankState_f32* st = &s->states[l];
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
    if (s->has_logits) state_file__put(&b, s->logits, (size_t)c->vocab_size * sizeof(float));
    *bytes = b.p;
    *n = b.n;
    return 0;
}

// Writes session s's state to path (through path.tmp.PID, renamed into place).
static inline int state_file_save(const char* path, const Session* s, CodaError* err) {
    void* bytes;
    size_t n;
    CodaError inner;
    if (state_file_encode(s, &bytes, &n, &inner) != 0) return coda_errorf(err, "%s: %s", path, inner.msg);
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

typedef struct { const char* p; size_t n, at; } StateFileReader;
static inline void state_file__get(StateFileReader* r, void* dst, size_t n) {  // sizes are checked up front
    memcpy(dst, r->p + r->at, n);
    r->at += n;
}

// Parses a state file image (bytes[0, n); `name` is what messages call it, e.g. the path) into a
// session of the same model: the session's states and pending logits are replaced, its RNG too
// unless keep_rng. Checks magic, version, fingerprint, exact size and the counters' ranges; on error
// the session is untouched.
static inline int state_file_parse(const void* bytes, size_t size, const char* name, Session* s, int keep_rng, CodaError* err) {
    const ModelConfig* c = &s->m->cfg;
    const char* path = name;
    if (!c->bounded) return coda_errorf(err, "%s: a bounded state cannot be loaded into an unbounded model", path);
    int rc = -1;
    StateFileReader r = {(const char*)bytes, size, 0};
    char magic[8];
    uint32_t version;
    int32_t fp[STATE_FILE_N_FP], want[STATE_FILE_N_FP], has_logits, has_spare;
    int64_t n_fed;
    uint64_t rng_state;
    double spare;
    size_t expect;
    BankState_f32* st = NULL;
    if (size < 12) {
        coda_errorf(err, "%s: not a coda.c state file: truncated (%zu bytes, shorter than the %zu-byte header)", path, size,
                    state_file_header_bytes());
        goto done;
    }
    state_file__get(&r, magic, 8);
    if (memcmp(magic, STATE_FILE_MAGIC, 8) != 0) {
        coda_errorf(err, "%s: not a coda.c state file (wrong magic; expected \"%s\")", path, STATE_FILE_MAGIC);
        goto done;
    }
    state_file__get(&r, &version, 4);
    if (version != STATE_FILE_VERSION) {
        coda_errorf(err, "%s: state file version %u is not supported (this build reads version %u)", path, version, STATE_FILE_VERSION);
        goto done;
    }
    if (size < state_file_header_bytes()) {
        coda_errorf(err, "%s: truncated state file (%zu bytes, shorter than the %zu-byte header)", path, size, state_file_header_bytes());
        goto done;
    }
    state_file__get(&r, fp, sizeof(fp));
    state_file_fingerprint(c, want);
    for (int i = 0; i < STATE_FILE_N_FP; i++)
        if (fp[i] != want[i]) {
            coda_errorf(err, "%s: state shape does not match the model: the file has %s = %d, the model %d "
                        "(file: W=%d Me=%d Ms=%d Hkv=%d Dh=%d layers=%d vocab=%d dim=%d; model: W=%d Me=%d Ms=%d Hkv=%d Dh=%d layers=%d vocab=%d dim=%d)",
                        path, STATE_FILE_FP_NAMES[i], fp[i], want[i], fp[0], fp[1], fp[2], fp[3], fp[4], fp[5], fp[6], fp[7], want[0], want[1],
                        want[2], want[3], want[4], want[5], want[6], want[7]);
            goto done;
        }
    state_file__get(&r, &n_fed, 8);
    state_file__get(&r, &has_logits, 4);
    state_file__get(&r, &rng_state, 8);
    state_file__get(&r, &has_spare, 4);
    state_file__get(&r, &spare, 8);
    if (has_logits != 0 && has_logits != 1) { coda_errorf(err, "%s: corrupt state file (has_logits = %d)", path, has_logits); goto done; }
    expect = state_file_header_bytes() + (size_t)c->n_layers * state_file_layer_bytes(c) + (has_logits ? (size_t)c->vocab_size * 4 : 0);
    if (size < expect) { coda_errorf(err, "%s: truncated state file (%zu of %zu bytes)", path, size, expect); goto done; }
    if (size > expect) { coda_errorf(err, "%s: state file has %zu unexpected trailing bytes (expected %zu bytes)", path, size - expect, expect); goto done; }
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
        if (rf < 0 || rf > b->W || ri < 0 || ri >= b->W || b->pos != n_fed) {
            coda_errorf(err, "%s: corrupt state file: layer %d has recent_idx=%d recent_filled=%d pos=%lld (W=%d, tokens fed %lld)", path,
                        l, ri, rf, (long long)b->pos, b->W, (long long)n_fed);
            goto done;
        }
        for (int k = 0; k < b->slots; k++)
            if (b->allowed[k] > 1) { coda_errorf(err, "%s: corrupt state file: layer %d slot %d mask byte %d", path, l, k, b->allowed[k]); goto done; }
    }
    if (has_logits) state_file__get(&r, s->logits, (size_t)c->vocab_size * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) bank_copy_f32(&s->states[l], &st[l]);
    s->n_fed = n_fed;
    s->has_logits = has_logits;
    if (!keep_rng) {
        s->rng.state = rng_state;
        s->rng.has_spare = has_spare;
        s->rng.spare = spare;
    }
    rc = 0;
done:
    layer_states_free(st, c);
    return rc;
}

// Loads the state file at path into session s (see state_file_parse).
static inline int state_file_load(const char* path, Session* s, int keep_rng, CodaError* err) {
    if (!s->m->cfg.bounded) return coda_errorf(err, "%s: a bounded state cannot be loaded into an unbounded model", path);
    FILE* f = fopen(path, "rb");
    if (!f) return coda_errorf(err, "%s: cannot open state file: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) { fclose(f); return coda_errorf(err, "%s: cannot stat: %s", path, strerror(errno)); }
    size_t size = (size_t)sb.st_size;
    char* data = (char*)coda_malloc_or_die(size ? size : 1, "state file");
    size_t got = fread(data, 1, size, f);
    fclose(f);
    int rc = got == size ? state_file_parse(data, size, path, s, keep_rng, err)
                         : coda_errorf(err, "%s: read %zu of %zu bytes", path, got, size);
    free(data);
    return rc;
}
