// shard.h — coda.c token shards: a 1024-byte header of 256 int32 slots, then the tokens.
// Plain C (also compiles as C++ under nvcc). No global state; every error names the file.
//
// Layout (all little-endian, as written by the x86/ARM machines we run on):
//   slot 0      magic            SHARD_MAGIC; llm.c's GPT-2 (20240520) and Llama-3 (20240801)
//                                shards have other magics, so the formats cannot be mixed up
//   slot 1      version          SHARD_VERSION
//   slot 2      vocab_size       every token id is < vocab_size
//   slots 3, 4  n_tokens         int64, low 32 bits in slot 3, high 32 bits in slot 4
//   slot 5      token_bytes      2 (uint16) when vocab_size <= 65536, else 4 (uint32)
//   slot 6      bos_id           -1 when the tokenizer has none
//   slot 7      eos_id           -1 when the tokenizer has none
//   slot 8      packing          SHARD_PACK_JOINED: documents joined with "\n\n", tokenized as one
//                                string, one BOS at the very start (docs/protocol.md §2);
//                                SHARD_PACK_BOS_PER_DOC: each document tokenized alone with its BOS
//   slots 9, 10 n_docs           int64, documents packed (informational)
//   slots 11..255                zero (room for later versions)
// The token width follows from vocab_size (not a free choice), so a reader can check that a file's
// size is exactly 1024 + n_tokens * token_bytes: a truncated or over-long shard is caught at open.
#pragma once
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"

#define SHARD_MAGIC 20261127
#define SHARD_VERSION 1
#define SHARD_HEADER_INTS 256
#define SHARD_HEADER_BYTES (SHARD_HEADER_INTS * 4)
#define SHARD_PACK_JOINED 0
#define SHARD_PACK_BOS_PER_DOC 1

typedef struct {
    int32_t magic;
    int32_t version;
    int32_t vocab_size;
    int64_t n_tokens;
    int32_t token_bytes;
    int32_t bos_id;
    int32_t eos_id;
    int32_t packing;
    int64_t n_docs;
} ShardHeader;

static inline int shard_token_bytes_for_vocab(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// Fills a header for a shard about to be written (n_tokens and n_docs start at zero).
static inline void shard_header_init(ShardHeader* h, int32_t vocab_size, int32_t bos_id, int32_t eos_id, int32_t packing) {
    memset(h, 0, sizeof(*h));
    h->magic = SHARD_MAGIC;
    h->version = SHARD_VERSION;
    h->vocab_size = vocab_size;
    h->token_bytes = shard_token_bytes_for_vocab(vocab_size);
    h->bos_id = bos_id;
    h->eos_id = eos_id;
    h->packing = packing;
}

static inline void shard_header_pack(const ShardHeader* h, int32_t out[SHARD_HEADER_INTS]) {
    memset(out, 0, SHARD_HEADER_INTS * sizeof(int32_t));
    out[0] = h->magic;
    out[1] = h->version;
    out[2] = h->vocab_size;
    out[3] = (int32_t)(uint32_t)((uint64_t)h->n_tokens & 0xffffffffu);
    out[4] = (int32_t)(uint32_t)((uint64_t)h->n_tokens >> 32);
    out[5] = h->token_bytes;
    out[6] = h->bos_id;
    out[7] = h->eos_id;
    out[8] = h->packing;
    out[9] = (int32_t)(uint32_t)((uint64_t)h->n_docs & 0xffffffffu);
    out[10] = (int32_t)(uint32_t)((uint64_t)h->n_docs >> 32);
}

// Decodes and validates a header read from `path` (the name is only used in messages).
static inline int shard_header_unpack(const int32_t in[SHARD_HEADER_INTS], ShardHeader* h, const char* path, CodaError* err) {
    memset(h, 0, sizeof(*h));
    h->magic = in[0];
    h->version = in[1];
    if (h->magic != SHARD_MAGIC) {
        if (in[0] == 20240520 || in[0] == 20240801)
            return coda_errorf(err, "%s: this is an llm.c shard (magic %d), not a coda.c token shard (magic %d); "
                               "re-tokenize the text with tokenize_coda", path, (int)in[0], SHARD_MAGIC);
        return coda_errorf(err, "%s: not a coda.c token shard: bad magic %d (expected %d)", path, (int)in[0], SHARD_MAGIC);
    }
    if (h->version != SHARD_VERSION)
        return coda_errorf(err, "%s: unsupported shard version %d (this build reads version %d)", path, (int)in[1], SHARD_VERSION);
    h->vocab_size = in[2];
    h->n_tokens = (int64_t)(((uint64_t)(uint32_t)in[4] << 32) | (uint64_t)(uint32_t)in[3]);
    h->token_bytes = in[5];
    h->bos_id = in[6];
    h->eos_id = in[7];
    h->packing = in[8];
    h->n_docs = (int64_t)(((uint64_t)(uint32_t)in[10] << 32) | (uint64_t)(uint32_t)in[9]);
    if (h->vocab_size <= 0) return coda_errorf(err, "%s: corrupt shard header: vocab size %d", path, (int)h->vocab_size);
    if (h->n_tokens < 0) return coda_errorf(err, "%s: corrupt shard header: token count %lld", path, (long long)h->n_tokens);
    if (h->token_bytes != shard_token_bytes_for_vocab(h->vocab_size))
        return coda_errorf(err, "%s: corrupt shard header: token width %d bytes, but vocab size %d needs %d",
                           path, (int)h->token_bytes, (int)h->vocab_size, shard_token_bytes_for_vocab(h->vocab_size));
    if (h->packing != SHARD_PACK_JOINED && h->packing != SHARD_PACK_BOS_PER_DOC)
        return coda_errorf(err, "%s: corrupt shard header: unknown packing %d", path, (int)h->packing);
    return 0;
}

// Checks a validated header against the real file size: exactly 1024 + n_tokens * token_bytes.
// The product is computed with overflow checks: a header claiming 2^62 + k four-byte tokens would
// otherwise wrap to 4k bytes and pass, and every buffer sized from it would wrap too.
static inline int shard_check_size(const ShardHeader* h, uint64_t file_size, const char* path, CodaError* err) {
    size_t expect;
    if (!size_mul_add_ok((size_t)h->n_tokens, (size_t)h->token_bytes, SHARD_HEADER_BYTES, &expect))
        return coda_errorf(err, "%s: corrupt token shard: header says %lld tokens of %d bytes, which overflows any file size "
                           "(the file has %llu bytes)", path, (long long)h->n_tokens, (int)h->token_bytes, (unsigned long long)file_size);
    if (file_size < (uint64_t)expect)
        return coda_errorf(err, "%s: truncated token shard: header says %lld tokens (%zu bytes) but the file has %llu bytes",
                           path, (long long)h->n_tokens, expect, (unsigned long long)file_size);
    if (file_size > (uint64_t)expect)
        return coda_errorf(err, "%s: corrupt token shard: header says %lld tokens (%zu bytes) but the file has %llu bytes",
                           path, (long long)h->n_tokens, expect, (unsigned long long)file_size);
    return 0;
}

// Opens `path`, reads and validates its header, and checks the file size against the token count.
// On success *out is positioned at the first token (caller closes it; pass NULL to just check).
static inline int shard_open(const char* path, ShardHeader* h, FILE** out, CodaError* err) {
    if (out) *out = NULL;
    if (coda_check_regular_file(path, "token shard", err) != 0) return -1;
    FILE* f = fopen(path, "rb");
    if (!f) return coda_errorf(err, "%s: cannot open token shard: %s", path, strerror(errno));
    int32_t raw[SHARD_HEADER_INTS];
    size_t got = fread(raw, 1, SHARD_HEADER_BYTES, f);
    if (got != SHARD_HEADER_BYTES) {
        fclose(f);
        return coda_errorf(err, "%s: truncated token shard: %zu bytes, shorter than the %d-byte header", path, got, SHARD_HEADER_BYTES);
    }
    if (shard_header_unpack(raw, h, path, err) != 0) { fclose(f); return -1; }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return coda_errorf(err, "%s: cannot stat token shard: %s", path, strerror(errno));
    }
    if (shard_check_size(h, (uint64_t)st.st_size, path, err) != 0) { fclose(f); return -1; }
    if (out) *out = f; else fclose(f);
    return 0;
}

// Converts n tokens of width token_bytes at src to int32, checking each id against the vocab.
// `first` is the index of src[0] in the shard, so the message can say where the bad id is.
static inline int shard_decode_tokens(const void* src, int token_bytes, size_t n, int32_t* dst, const ShardHeader* h,
                                      const char* path, int64_t first, CodaError* err) {
    const unsigned char* b = (const unsigned char*)src;
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        if (token_bytes == 2) { uint16_t u; memcpy(&u, b + 2 * i, 2); v = u; }
        else memcpy(&v, b + 4 * i, 4);
        if (v >= (uint32_t)h->vocab_size)
            return coda_errorf(err, "%s: token id %u at position %lld is >= the vocab size %d",
                               path, v, (long long)(first + (int64_t)i), (int)h->vocab_size);
        dst[i] = (int32_t)v;
    }
    return 0;
}

// Reads tokens [first, first + n) from an open shard into dst (int32), validating each id.
// `scratch` must hold n * token_bytes bytes.
static inline int shard_read_tokens(FILE* f, const ShardHeader* h, const char* path, int64_t first, size_t n,
                                    int32_t* dst, void* scratch, CodaError* err) {
    // first + n <= n_tokens, written so that neither side can overflow
    if (first < 0 || first > h->n_tokens || n > (uint64_t)(h->n_tokens - first))
        return coda_errorf(err, "%s: read of %zu tokens at %lld is outside the shard's %lld tokens", path, n,
                           (long long)first, (long long)h->n_tokens);
    if (fseeko(f, (off_t)SHARD_HEADER_BYTES + (off_t)first * h->token_bytes, SEEK_SET) != 0)
        return coda_errorf(err, "%s: seek failed: %s", path, strerror(errno));
    if (fread(scratch, (size_t)h->token_bytes, n, f) != n)
        return coda_errorf(err, "%s: truncated token shard: read of %zu tokens at %lld failed", path, n, (long long)first);
    return shard_decode_tokens(scratch, h->token_bytes, n, dst, h, path, first, err);
}

// Reads a whole shard into a malloc'd int32 array (*tokens; caller frees), validating every id.
// The sizes cannot overflow: shard_open has checked n_tokens * token_bytes against the file, and
// n_tokens * 4 <= 2 * that.
static inline int shard_load(const char* path, ShardHeader* h, int32_t** tokens, CodaError* err) {
    *tokens = NULL;
    FILE* f;
    if (shard_open(path, h, &f, err) != 0) return -1;
    size_t n = (size_t)h->n_tokens, ids_bytes, raw_bytes;
    if (!size_mul_ok(n, sizeof(int32_t), &ids_bytes) || !size_mul_ok(n, (size_t)h->token_bytes, &raw_bytes)) {
        fclose(f);
        return coda_errorf(err, "%s: %lld tokens do not fit in memory on this machine", path, (long long)h->n_tokens);
    }
    int32_t* t = (int32_t*)malloc(ids_bytes ? ids_bytes : 1);
    void* scratch = malloc(raw_bytes ? raw_bytes : 1);
    int rc = 0;
    if (!t || !scratch)
        rc = coda_errorf(err, "%s: out of host memory loading %lld tokens (%zu + %zu bytes)", path, (long long)h->n_tokens,
                         ids_bytes, raw_bytes);
    else rc = shard_read_tokens(f, h, path, 0, n, t, scratch, err);
    fclose(f);
    free(scratch);
    if (rc != 0) { free(t); return -1; }
    *tokens = t;
    return 0;
}

// Streams over the whole shard in blocks and checks every token id against the vocab, so a bad
// shard fails when it is opened rather than hours into a run. Bounded memory (64K tokens a block).
static inline int shard_validate_ids(FILE* f, const ShardHeader* h, const char* path, CodaError* err) {
    const size_t block = 65536;
    int32_t* ids = (int32_t*)malloc(block * sizeof(int32_t));
    void* scratch = malloc(block * 4);
    if (!ids || !scratch) {
        free(ids); free(scratch);
        return coda_errorf(err, "%s: out of host memory allocating %zu bytes to validate token ids", path, block * 8);
    }
    int rc = 0;
    for (int64_t first = 0; first < h->n_tokens && rc == 0; first += (int64_t)block) {
        size_t n = (size_t)(h->n_tokens - first < (int64_t)block ? h->n_tokens - first : (int64_t)block);
        rc = shard_read_tokens(f, h, path, first, n, ids, scratch, err);
    }
    free(ids);
    free(scratch);
    return rc;
}

// ---- writer: streams tokens into a new temporary file beside `path` (coda_create_temp_beside),
// writes the final header, then renames it onto `path`, so a crash or an error never leaves a file
// at `path` that looks like a finished shard, and an existing `path` stays intact until the end. ----
typedef struct {
    FILE* f;
    ShardHeader h;
    char path[4096];
    char tmp_path[4096 + 32];
    uint8_t buf[1 << 16];  // conversion buffer: ids -> token_bytes-wide little-endian values
} ShardWriter;

static inline int shard_writer_open(ShardWriter* w, const char* path, int32_t vocab_size, int32_t bos_id, int32_t eos_id,
                                    int32_t packing, CodaError* err) {
    memset(w, 0, sizeof(*w));
    if (strlen(path) >= sizeof(w->path)) return coda_errorf(err, "%s: path too long", path);
    if (vocab_size <= 0) return coda_errorf(err, "%s: cannot write a shard with vocab size %d", path, (int)vocab_size);
    snprintf(w->path, sizeof(w->path), "%s", path);
    shard_header_init(&w->h, vocab_size, bos_id, eos_id, packing);
    w->f = coda_create_temp_beside(path, w->tmp_path, sizeof(w->tmp_path), err);
    if (!w->f) { w->tmp_path[0] = 0; return -1; }
    int32_t raw[SHARD_HEADER_INTS];
    shard_header_pack(&w->h, raw);  // placeholder, rewritten with the final counts at close
    if (fwrite(raw, 1, SHARD_HEADER_BYTES, w->f) != SHARD_HEADER_BYTES) {
        fclose(w->f); w->f = NULL; remove(w->tmp_path);
        return coda_errorf(err, "%s: write failed: %s", w->tmp_path, strerror(errno));
    }
    return 0;
}

// Removes the temp file; used on any error after open.
static inline void shard_writer_abort(ShardWriter* w) {
    if (w->f) { fclose(w->f); w->f = NULL; }
    if (w->tmp_path[0]) remove(w->tmp_path);
}

// Appends n ids. An id outside [0, vocab) is an error (and aborts the writer): never write a shard
// that the reader would reject.
static inline int shard_writer_append(ShardWriter* w, const int32_t* ids, size_t n, CodaError* err) {
    if (!w->f) return coda_errorf(err, "%s: shard writer is not open", w->path);
    const size_t per = sizeof(w->buf) / (size_t)w->h.token_bytes;
    for (size_t i = 0; i < n;) {
        size_t k = n - i < per ? n - i : per;
        for (size_t j = 0; j < k; j++) {
            int32_t id = ids[i + j];
            if (id < 0 || id >= w->h.vocab_size) {
                shard_writer_abort(w);
                return coda_errorf(err, "%s: token id %d at position %lld is outside the vocab [0, %d)", w->path,
                                   (int)id, (long long)(w->h.n_tokens + (int64_t)(i + j)), (int)w->h.vocab_size);
            }
            if (w->h.token_bytes == 2) { uint16_t v = (uint16_t)id; memcpy(w->buf + 2 * j, &v, 2); }
            else { uint32_t v = (uint32_t)id; memcpy(w->buf + 4 * j, &v, 4); }
        }
        if (fwrite(w->buf, (size_t)w->h.token_bytes, k, w->f) != k) {
            int e = errno;
            shard_writer_abort(w);
            return coda_errorf(err, "%s: write failed: %s", w->tmp_path, strerror(e));
        }
        i += k;
        w->h.n_tokens += (int64_t)k;
    }
    return 0;
}

// Writes the final header, flushes to disk and renames the temp file onto `path`.
static inline int shard_writer_close(ShardWriter* w, int64_t n_docs, CodaError* err) {
    if (!w->f) return coda_errorf(err, "%s: shard writer is not open", w->path);
    w->h.n_docs = n_docs;
    int32_t raw[SHARD_HEADER_INTS];
    shard_header_pack(&w->h, raw);
    int ok = fseeko(w->f, 0, SEEK_SET) == 0 && fwrite(raw, 1, SHARD_HEADER_BYTES, w->f) == SHARD_HEADER_BYTES &&
             fflush(w->f) == 0 && fsync(fileno(w->f)) == 0;
    int e = errno;
    if (fclose(w->f) != 0 && ok) { ok = 0; e = errno; }
    w->f = NULL;
    if (!ok) { remove(w->tmp_path); return coda_errorf(err, "%s: write failed: %s", w->tmp_path, strerror(e)); }
    if (rename(w->tmp_path, w->path) != 0) {
        e = errno;
        remove(w->tmp_path);
        return coda_errorf(err, "%s: cannot rename %s onto it: %s", w->path, w->tmp_path, strerror(e));
    }
    return 0;
}

// One-call writer for tokens already in memory (tests, small tools).
static inline int shard_write(const char* path, const int32_t* ids, size_t n, int32_t vocab_size, int32_t bos_id,
                              int32_t eos_id, int32_t packing, int64_t n_docs, CodaError* err) {
    ShardWriter* w = (ShardWriter*)malloc(sizeof(ShardWriter));
    if (!w) return coda_errorf(err, "%s: out of memory", path);
    int rc = shard_writer_open(w, path, vocab_size, bos_id, eos_id, packing, err);
    if (rc == 0) rc = shard_writer_append(w, ids, n, err);
    if (rc == 0) rc = shard_writer_close(w, n_docs, err);
    free(w);
    return rc;
}
