// fuzz_targets.h — one entry point per reader of coda.c, each taking raw bytes: what libFuzzer
// drives (dev/fuzz/fuzz_main.c, `make fuzz`) and what the CPU test suite replays (every file under
// dev/fuzz/corpus/<target>/ and dev/test/fixtures/fuzz/<target>/, test "fuzz_inputs_replay_cleanly").
// Plain C (also compiles as C++: test_cpu includes it). README: dev/fuzz/README.md.
//
// An entry returns
//   FUZZ_ACCEPTED  the reader took the input (and every check on what it produced held),
//   FUZZ_REFUSED   the reader refused it with a message in err (a refusal without one is a bug),
//   FUZZ_BROKEN    an invariant failed: a round trip changed something, a reader accepted what its
//                  own writer cannot reproduce, ... (err says what). The fuzzer aborts on it.
// Crashes, hangs, leaks and undefined behaviour are caught by the sanitizers, not here.
//
// Readers that only take a path get the bytes through one scratch file per target in a private
// temporary directory (fz_scratch_path), rewritten for every input; the others read from memory
// (st_open_memory, config_read_hf_text, tokenizer_load_json, state_file_parse, pt_parse).
#pragma once
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "llmc/common.h"
#include "llmc/json.h"
#include "llmc/config.h"
#include "llmc/params.h"
#include "llmc/safetensors.h"
#include "llmc/hf_model.h"
#include "llmc/shard.h"
#include "llmc/dataloader.h"
#include "llmc/tokenizer.h"
#include "llmc/train_state.h"
#include "llmc/state_file.h"
#include "llmc/torch_pt.h"

enum { FUZZ_ACCEPTED = 0, FUZZ_REFUSED = -1, FUZZ_BROKEN = 1 };

typedef int (*FuzzEntry)(const uint8_t* data, size_t size, CodaError* err);

static inline int fz_broken(CodaError* err, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return FUZZ_BROKEN;
}

// ---------------------------------------------------------------------------------------------
// Scratch files: one private directory per process, removed at exit.

static char fz_dir[512];

static inline void fz__rmtree(const char* path) {
    DIR* d = opendir(path);
    if (!d) { unlink(path); return; }
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char child[1300];  // the scratch tree is two levels deep under a path < 512 bytes
        snprintf(child, sizeof(child), "%.1000s/%.255s", path, e->d_name);
        fz__rmtree(child);
    }
    closedir(d);
    rmdir(path);
}
static inline void fz__cleanup(void) { if (fz_dir[0]) fz__rmtree(fz_dir); }

// dir/name inside the scratch directory (created on first use under $TMPDIR or /tmp).
static inline const char* fz_scratch_path(const char* name, char* out, size_t n) {
    if (!fz_dir[0]) {
        const char* base = getenv("TMPDIR");
        snprintf(fz_dir, sizeof(fz_dir), "%s/coda_fuzz_XXXXXX", base && base[0] ? base : "/tmp");
        if (!mkdtemp(fz_dir)) { perror("fuzz: mkdtemp"); abort(); }
        atexit(fz__cleanup);
    }
    snprintf(out, n, "%s/%s", fz_dir, name);
    return out;
}

static inline void fz_write_file(const char* path, const void* data, size_t size) {
    FILE* f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) { perror(path); abort(); }
}

// Reads bytes from the fuzz input, yielding zeros once it is used up (structure-aware targets).
typedef struct {
    const uint8_t* d;
    size_t n, at;
} FzBytes;
static inline unsigned fz_u8(FzBytes* b) { return b->at < b->n ? b->d[b->at++] : 0; }

// ---------------------------------------------------------------------------------------------
// json: parse; what parses must write back (json.h's writers) to text that parses to the same tree.

static inline void fz__json_write(JsonBuf* b, const JsonValue* v) {
    switch (v->type) {
        case JSON_NULL: jbuf_puts(b, "null"); break;
        case JSON_BOOL: jbuf_puts(b, v->boolean ? "true" : "false"); break;
        case JSON_NUMBER:
            if (v->is_int) jbuf_printf(b, "%lld", (long long)v->integer);
            else json_write_double(b, v->number);
            break;
        case JSON_STRING: json_write_string(b, v->string, v->string_len); break;
        case JSON_ARRAY:
            jbuf_puts(b, "[");
            for (size_t i = 0; i < v->count; i++) { if (i) jbuf_puts(b, ","); fz__json_write(b, &v->items[i]); }
            jbuf_puts(b, "]");
            break;
        case JSON_OBJECT:
            jbuf_puts(b, "{");
            for (size_t i = 0; i < v->count; i++) {
                if (i) jbuf_puts(b, ",");
                json_write_string(b, v->keys[i], v->key_lens[i]);
                jbuf_puts(b, ":");
                fz__json_write(b, &v->items[i]);
            }
            jbuf_puts(b, "}");
            break;
    }
}

// Same tree? Integers compare exactly, other numbers by bits (NaN equals NaN: both read as NaN).
static inline int fz__json_equal(const JsonValue* a, const JsonValue* b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
        case JSON_NULL: return 1;
        case JSON_BOOL: return a->boolean == b->boolean;
        case JSON_NUMBER:
            if (a->is_int != b->is_int) return 0;
            if (a->is_int) return a->integer == b->integer;
            return (isnan(a->number) && isnan(b->number)) || memcmp(&a->number, &b->number, sizeof(double)) == 0;
        case JSON_STRING: return a->string_len == b->string_len && memcmp(a->string, b->string, a->string_len) == 0;
        case JSON_ARRAY:
        case JSON_OBJECT:
            if (a->count != b->count) return 0;
            for (size_t i = 0; i < a->count; i++) {
                if (a->type == JSON_OBJECT &&
                    (a->key_lens[i] != b->key_lens[i] || memcmp(a->keys[i], b->keys[i], a->key_lens[i]) != 0))
                    return 0;
                if (!fz__json_equal(&a->items[i], &b->items[i])) return 0;
            }
            return 1;
    }
    return 0;
}

static inline int fuzz_json(const uint8_t* data, size_t size, CodaError* err) {
    JsonValue* v = NULL;
    if (json_parse((const char*)data, size, &v, err) != 0) return FUZZ_REFUSED;
    JsonBuf b;
    jbuf_init(&b);
    fz__json_write(&b, v);
    JsonValue* w = NULL;
    CodaError inner;
    int rc = FUZZ_ACCEPTED;
    if (json_parse(b.data, b.len, &w, &inner) != 0) rc = fz_broken(err, "json: the written tree does not parse: %s", inner.msg);
    else if (!fz__json_equal(v, w)) rc = fz_broken(err, "json: the written tree parses to a different tree");
    json_free(w);
    json_free(v);
    jbuf_free(&b);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// config: config.json -> ModelConfig (+ config_validate); an accepted config builds its parameter
// table and survives config_to_json -> read unchanged.

static inline int fuzz_config(const uint8_t* data, size_t size, CodaError* err) {
    ModelConfig c;
    if (config_read_hf_text("config.json", (const char*)data, size, &c, err) != 0) return FUZZ_REFUSED;
    ParamTable t;
    param_table_build(&t, &c, DT_BF16);
    size_t total = param_table_count(&t);
    param_table_free(&t);
    if (total == 0) return fz_broken(err, "config: an accepted config has no parameters");
    // Written, read back and written again, the text must not change: every field is in the text
    // (floats as their shortest exact decimal), so equal texts mean equal configs.
    JsonBuf b, b2;
    jbuf_init(&b);
    jbuf_init(&b2);
    CodaError inner;
    int rc = FUZZ_ACCEPTED;
    ModelConfig back;
    if (config_to_json(&b, "config.json", &c, DT_BF16, &inner) != 0)
        rc = fz_broken(err, "config: an accepted config cannot be written: %s", inner.msg);
    else if (config_read_hf_text("config.json (rewritten)", b.data, b.len, &back, &inner) != 0)
        rc = fz_broken(err, "config: the rewritten config is refused: %s", inner.msg);
    else if (config_to_json(&b2, "config.json", &back, DT_BF16, &inner) != 0 || b2.len != b.len || memcmp(b.data, b2.data, b.len) != 0)
        rc = fz_broken(err, "config: the rewritten config reads back different");
    jbuf_free(&b);
    jbuf_free(&b2);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// safetensors: raw file bytes. What is accepted must describe tensors inside the data section
// (every byte is read, so the address sanitizer sees any that is not) that st_find finds by name.

static volatile unsigned fz_sink;  // where touched bytes go, so that the reads are not optimised away

static inline int fz__check_safetensors(const SafeTensors* st, CodaError* err) {
    unsigned sum = 0;
    for (int i = 0; i < st->n; i++) {
        const StTensor* t = &st->tensors[i];
        if (t->offset > st->data_len || t->nbytes > st->data_len - t->offset)
            return fz_broken(err, "safetensors: tensor '%s' [%zu, +%zu) lies outside the %zu-byte data section", t->name, t->offset,
                             t->nbytes, st->data_len);
        for (size_t k = 0; k < t->nbytes; k++) sum += ((const uint8_t*)t->data)[k];
        if (st_find(st, t->name) != t) return fz_broken(err, "safetensors: st_find does not find tensor '%s'", t->name);
    }
    for (int i = 0; i < st->n_meta; i++)
        if (!st_meta_get(st, st->meta[i].key)) return fz_broken(err, "safetensors: metadata key '%s' not found", st->meta[i].key);
    fz_sink += sum;
    return FUZZ_ACCEPTED;
}

static inline int fuzz_safetensors(const uint8_t* data, size_t size, CodaError* err) {
    SafeTensors st;
    if (st_open_memory(&st, "model.safetensors", data, size, err) != 0) return FUZZ_REFUSED;
    int rc = fz__check_safetensors(&st, err);
    st_close(&st);
    return rc;
}

// safetensors_struct: the input bytes describe a file (tensors with dtypes, shapes, names and data;
// metadata) that st__build_header writes; that file must read back exactly. Then the remaining
// bytes corrupt it (a header byte, the length field, a truncation, a byte in the data section) and
// the corrupt file must be refused cleanly or read within bounds.
static inline int fuzz_safetensors_struct(const uint8_t* data, size_t size, CodaError* err) {
    static const char NAME_CHARS[] = "abz.0_\"\\/\x01\xC3\xA9 ";
    FzBytes in = {data, size, 0};
    enum { MAX_T = 6 };
    StWriteTensor wt[MAX_T];
    int64_t shapes[MAX_T][4];
    char names[MAX_T][24];
    int n = (int)(fz_u8(&in) % (MAX_T + 1));
    for (int i = 0; i < n; i++) {
        wt[i].dtype = (DType)(fz_u8(&in) % DT_COUNT);
        wt[i].ndim = (int)(fz_u8(&in) % 4);
        for (int d = 0; d < wt[i].ndim; d++) shapes[i][d] = fz_u8(&in) % 5;
        wt[i].shape = shapes[i];
        wt[i].data = NULL;
        int len = snprintf(names[i], sizeof(names[i]), "t%d", i);  // distinct by construction
        for (unsigned k = fz_u8(&in) % 4; k > 0; k--) names[i][len++] = NAME_CHARS[fz_u8(&in) % (sizeof(NAME_CHARS) - 1)];
        names[i][len] = 0;
        wt[i].name = names[i];
    }
    StMeta meta[2];
    char meta_text[2][2][16];
    int n_meta = (int)(fz_u8(&in) % 3);
    for (int m = 0; m < n_meta; m++) {
        snprintf(meta_text[m][0], sizeof(meta_text[m][0]), "k%d", m);
        snprintf(meta_text[m][1], sizeof(meta_text[m][1]), "v%u", fz_u8(&in));
        meta[m].key = meta_text[m][0];
        meta[m].value = meta_text[m][1];
    }
    JsonBuf file;
    jbuf_init(&file);
    size_t data_bytes = 0;
    if (st__build_header(&file, "struct.safetensors", wt, n, meta, n_meta, &data_bytes, err) != 0) {
        jbuf_free(&file);
        return fz_broken(err, "safetensors_struct: the writer refused a valid description: %s", err->msg);
    }
    size_t header_end = file.len;
    for (size_t k = 0; k < data_bytes; k++) { char c = (char)fz_u8(&in); jbuf_append(&file, &c, 1); }
    // 1. the file as written reads back exactly
    SafeTensors st;
    CodaError inner;
    int rc = FUZZ_ACCEPTED;
    if (st_open_memory(&st, "struct.safetensors", file.data, file.len, &inner) != 0) {
        rc = fz_broken(err, "safetensors_struct: a file from the writer is refused: %s", inner.msg);
    } else {
        if (st.n != n || st.n_meta != n_meta) rc = fz_broken(err, "safetensors_struct: %d tensors / %d metadata read back as %d / %d", n, n_meta, st.n, st.n_meta);
        for (int i = 0; i < n && rc == FUZZ_ACCEPTED; i++) {
            const StTensor* t = st_find(&st, names[i]);
            int same = t && t->dtype == wt[i].dtype && t->ndim == wt[i].ndim;
            for (int d = 0; same && d < wt[i].ndim; d++) same = t->shape[d] == shapes[i][d];
            if (!same) rc = fz_broken(err, "safetensors_struct: tensor '%s' reads back with another name, dtype or shape", names[i]);
        }
        for (int m = 0; m < n_meta && rc == FUZZ_ACCEPTED; m++) {
            const char* v = st_meta_get(&st, meta[m].key);
            if (!v || strcmp(v, meta[m].value) != 0) rc = fz_broken(err, "safetensors_struct: metadata '%s' reads back different", meta[m].key);
        }
        if (rc == FUZZ_ACCEPTED && (st.data_len != data_bytes || memcmp(st.data_section, file.data + header_end, data_bytes) != 0))
            rc = fz_broken(err, "safetensors_struct: the data section reads back different");
        st_close(&st);
    }
    // 2. corruptions, applied one after another, each file read from an exact-size copy
    for (unsigned k = fz_u8(&in) % 5; k > 0 && rc == FUZZ_ACCEPTED; k--) {
        unsigned kind = fz_u8(&in) % 4, a = fz_u8(&in), b = fz_u8(&in);
        size_t at = ((size_t)a << 8 | b);
        switch (kind) {
            case 0: if (file.len > 8) file.data[8 + at % (file.len - 8)] = (char)fz_u8(&in); break;      // a header or data byte
            case 1: if (file.len > a % 8) file.data[a % 8] = (char)b; break;                               // the length field
            case 2: file.len = at % (file.len + 1); break;                                                 // truncated
            case 3: { char c = (char)a; jbuf_append(&file, &c, 1); break; }                                // one byte longer
        }
        uint8_t* copy = (uint8_t*)coda_malloc_or_die(file.len, "fuzz copy");
        if (file.len) memcpy(copy, file.data, file.len);
        CodaError e2;
        if (st_open_memory(&st, "corrupt.safetensors", copy, file.len, &e2) == 0) {
            rc = fz__check_safetensors(&st, err);
            st_close(&st);
        } else if (!e2.msg[0]) {
            rc = fz_broken(err, "safetensors_struct: a corrupt file was refused without a message");
        }
        free(copy);
    }
    jbuf_free(&file);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// index: the bytes are model.safetensors.index.json of a model directory whose shards (a tiny
// model saved in several files) are made once; hf_load_params reads through it.

typedef struct {
    int ready;
    char dir[600];
    ModelConfig cfg;
    ParamTable table;
    float* want;          // the saved values
    float* got;
} FzModelDir;
static FzModelDir fz_model;

static inline ModelConfig fz_tiny_config(void) {
    ModelConfig c = config_default();
    c.vocab_size = 8; c.dim = 4; c.ffn_dim = 8; c.n_layers = 1; c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 2;
    c.max_seq_len = 64;
    return c;
}

static inline FzModelDir* fz_model_dir(void) {
    FzModelDir* m = &fz_model;
    if (m->ready) return m;
    fz_scratch_path("model", m->dir, sizeof(m->dir));
    m->cfg = fz_tiny_config();
    param_table_build(&m->table, &m->cfg, DT_F32);
    m->want = (float*)coda_calloc_or_die(m->table.total, sizeof(float), "fuzz model");
    m->got = (float*)coda_calloc_or_die(m->table.total, sizeof(float), "fuzz model");
    for (size_t i = 0; i < m->table.total; i++) m->want[i] = (float)i * 0.25f - 3.0f;
    CodaError err;
    // 100-byte shards: the tiny model's nine tensors land in several files, with an index
    if (hf_save_params(m->dir, &m->table, m->want, DT_F32, DT_F32, 100, &err) != 0) { fprintf(stderr, "%s\n", err.msg); abort(); }
    m->ready = 1;
    return m;
}

static inline int fuzz_index(const uint8_t* data, size_t size, CodaError* err) {
    FzModelDir* m = fz_model_dir();
    char path[sizeof(m->dir) + 64];
    snprintf(path, sizeof(path), "%.600s/%s", m->dir, HF_INDEX_NAME);
    fz_write_file(path, data, size);
    memset(m->got, 0, m->table.total * sizeof(float));
    HfLoadReport rep;
    if (hf_load_params(m->dir, &m->table, m->got, DT_F32, &rep, err) != 0) return FUZZ_REFUSED;
    for (int i = 0; i < m->table.n; i++) {  // every tensor came from the file that holds it
        const ParamTensor* p = &m->table.tensors[i];
        if (memcmp(m->got + p->offset, m->want + p->offset, p->numel * sizeof(float)) != 0)
            return fz_broken(err, "index: tensor '%s' loaded with other values than were saved", p->name);
    }
    return FUZZ_ACCEPTED;
}

// ---------------------------------------------------------------------------------------------
// shard: the bytes are a token shard file. shard_load must agree with the dataloader: both accept
// or refuse it, and each batch row is the tokens the whole-file load has at that row.

static inline int fuzz_shard(const uint8_t* data, size_t size, CodaError* err) {
    char path[600];
    fz_scratch_path("shard.bin", path, sizeof(path));
    fz_write_file(path, data, size);
    ShardHeader h;
    int32_t* ids = NULL;
    int loaded = shard_load(path, &h, &ids, err) == 0;
    if (!loaded && !err->msg[0]) return fz_broken(err, "shard: shard_load refused without a message");
    for (int64_t i = 0; loaded && i < h.n_tokens; i++)
        if (ids[i] < 0 || ids[i] >= h.vocab_size) { free(ids); return fz_broken(err, "shard: token %lld = %d is outside the vocab", (long long)i, ids[i]); }
    static const int SHAPES[][3] = {{1, 1, 0}, {2, 3, 1}, {1, 7, 1}};  // B, T, shuffle
    int rc = loaded ? FUZZ_ACCEPTED : FUZZ_REFUSED;
    for (int s = 0; s < 3 && rc != FUZZ_BROKEN; s++) {
        const int B = SHAPES[s][0], T = SHAPES[s][1];
        DataLoader dl;
        CodaError e2;
        e2.msg[0] = 0;
        if (dataloader_init(&dl, path, B, T, 0, 1, 42, SHAPES[s][2], &e2) != 0) {
            if (!e2.msg[0]) rc = fz_broken(err, "shard: dataloader_init refused without a message");
            continue;
        }
        if (!loaded) { dataloader_free(&dl); rc = fz_broken(err, "shard: the dataloader accepts a shard that shard_load refuses"); break; }
        for (int step = 0; step < 4 && rc != FUZZ_BROKEN; step++) {
            if (step == 2) {  // resume at the start of epoch 1, as a checkpoint would
                DataPosition p = {1, 0};
                if (dataloader_seek(&dl, p, &e2) != 0) { rc = fz_broken(err, "shard: seek to epoch 1 failed: %s", e2.msg); break; }
            }
            if (dataloader_next(&dl, &e2) != 0) { rc = fz_broken(err, "shard: dataloader_next failed on a valid shard: %s", e2.msg); break; }
            for (int b = 0; b < B && rc != FUZZ_BROKEN; b++) {
                const int32_t* row = ids + dl.batch_rows[b] * (uint64_t)T;
                if (memcmp(dl.inputs + (size_t)b * T, row, (size_t)T * 4) != 0 || memcmp(dl.targets + (size_t)b * T, row + 1, (size_t)T * 4) != 0)
                    rc = fz_broken(err, "shard: batch row %llu differs from the loaded tokens", (unsigned long long)dl.batch_rows[b]);
            }
        }
        dataloader_free(&dl);
    }
    free(ids);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// tokenizer: the bytes are a tokenizer.json. What loads must be consistent: every piece maps back
// to an id with the same bytes, and sample texts encode to in-range ids that decode.

static inline int fz__exercise_tokenizer(const Tokenizer* t, CodaError* err) {
    for (int id = 0; id < t->vocab_size; id++) {
        size_t n;
        const char* p = tokenizer_piece(t, id, &n);
        int back = tokenizer_piece_to_id(t, p, n);
        size_t m = 0;
        const char* q = back >= 0 ? tokenizer_piece(t, back, &m) : NULL;
        if (!q || m != n || memcmp(p, q, n) != 0) return fz_broken(err, "tokenizer: piece %d does not map back to an id with its bytes", id);
    }
    static const char* const TEXTS[] = {"", " ", "hello world", "  a\tb\n\nc", "</s><s>[INST] x", "\xE2\x96\x81\xC3\xA9\xFF\xF0\x9F\x98\x80"};
    static const int FLAGS[] = {0, TOKENIZER_ADD_BOS, TOKENIZER_PARSE_SPECIAL};
    for (size_t k = 0; k < sizeof(TEXTS) / sizeof(TEXTS[0]); k++)
        for (int f = 0; f < 3; f++) {
            int32_t* ids;
            size_t n;
            CodaError e2;
            e2.msg[0] = 0;
            if (tokenizer_encode_flags(t, TEXTS[k], strlen(TEXTS[k]), FLAGS[f], &ids, &n, &e2) != 0) {
                if (!e2.msg[0]) return fz_broken(err, "tokenizer: encode refused without a message");
                continue;
            }
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= t->vocab_size) { free(ids); return fz_broken(err, "tokenizer: encode gave id %d", ids[i]); }
            char* text;
            size_t len;
            int drc = tokenizer_decode_flags(t, ids, n, f == 2, &text, &len, &e2);
            free(ids);
            if (drc != 0) return fz_broken(err, "tokenizer: decoding in-range ids failed: %s", e2.msg);
            free(text);
        }
    return FUZZ_ACCEPTED;
}

static inline int fuzz_tokenizer(const uint8_t* data, size_t size, CodaError* err) {
    JsonValue* root = NULL;
    CodaError inner;
    if (json_parse((const char*)data, size, &root, &inner) != 0) return coda_errorf(err, "tokenizer.json: %s", inner.msg);
    Tokenizer t;
    int rc = tokenizer_load_json(&t, root, "tokenizer.json", err) == 0 ? FUZZ_ACCEPTED : FUZZ_REFUSED;
    json_free(root);
    if (rc == FUZZ_ACCEPTED) rc = fz__exercise_tokenizer(&t, err);
    tokenizer_free(&t);
    return rc;
}

// tokenizer_roundtrip: bytes -> ids -> bytes must give the same bytes, through two small
// SentencePiece-style tokenizers built here: one whose merges never cross a word start (encoding
// takes the word shortcut) and one with a merge that does (whole-text BPE). Texts containing "▁"
// itself are encoded and decoded but not compared: " " and "▁" are one piece (tokenizer.h).

// Writes a Mistral-form tokenizer.json: <unk> <s> </s>, the 256 byte pieces, single characters,
// then one piece per merge (a, b) -> ab, in merge order.
static inline void fz__toy_tokenizer_json(JsonBuf* b, int cross_word_merge) {
    static const char* const CHARS[] = {"\xE2\x96\x81", "a", "b", "c", "d", "e", "h", "i", "l", "n", "o", "r", "s", "t", "w",
                                        "T", ".", ",", "\n", "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x98\x80"};
    static const char* const MERGES[][2] = {
        {"t", "h"}, {"h", "e"}, {"th", "e"}, {"\xE2\x96\x81", "t"}, {"\xE2\x96\x81t", "he"}, {"i", "n"}, {"in", "e"},
        {"e", "r"}, {"\xE2\x96\x81", "a"}, {"o", "n"}, {"\xE2\x96\x81", "\xE2\x96\x81"},
        {"\xE2\x96\x81\xE2\x96\x81", "\xE2\x96\x81\xE2\x96\x81"}, {"l", "l"}, {"e", "ll"}, {"h", "ell"}, {"w", "o"},
        {"\xC3\xA9", "\xC3\xA9"}, {"\xE2\x96\x81", "\xE2\x96\x81\xE2\x96\x81"}};
    const int n_chars = (int)(sizeof(CHARS) / sizeof(CHARS[0])), n_merges = (int)(sizeof(MERGES) / sizeof(MERGES[0]));
    jbuf_puts(b, "{\"version\":\"1.0\",\"added_tokens\":[");
    static const char* const SPECIAL[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++)
        jbuf_printf(b, "%s{\"id\":%d,\"content\":\"%s\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                    "\"normalized\":false,\"special\":true}", i ? "," : "", i, SPECIAL[i]);
    jbuf_puts(b, "],\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
                 "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},\"pre_tokenizer\":null,"
                 "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
                 "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],"
                 "\"tokens\":[\"<s>\"]}}},\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
                 "{\"String\":\"\xE2\x96\x81\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
                 "\"content\":\" \",\"start\":1,\"stop\":0}]},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\","
                 "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":true,\"byte_fallback\":true,\"vocab\":{"
                 "\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    for (int i = 0; i < 256; i++) jbuf_printf(b, ",\"<0x%02X>\":%d", i, 3 + i);
    int id = 259;
    for (int i = 0; i < n_chars; i++) { jbuf_puts(b, ","); json_write_cstr(b, CHARS[i]); jbuf_printf(b, ":%d", id++); }
    for (int i = 0; i < n_merges + cross_word_merge; i++) {
        char joined[64];
        if (i < n_merges) snprintf(joined, sizeof(joined), "%s%s", MERGES[i][0], MERGES[i][1]);
        else snprintf(joined, sizeof(joined), "e\xE2\x96\x81");  // "e" + "▁": joins a word's end to the next word's start
        jbuf_puts(b, ",");
        json_write_cstr(b, joined);
        jbuf_printf(b, ":%d", id++);
    }
    jbuf_puts(b, "},\"merges\":[");
    for (int i = 0; i < n_merges + cross_word_merge; i++) {
        jbuf_puts(b, i ? ",[" : "[");
        json_write_cstr(b, i < n_merges ? MERGES[i][0] : "e");
        jbuf_puts(b, ",");
        json_write_cstr(b, i < n_merges ? MERGES[i][1] : "\xE2\x96\x81");
        jbuf_puts(b, "]");
    }
    jbuf_puts(b, "]}}");
}

static Tokenizer fz_toys[2];
static int fz_toys_ready = 0;

static inline const Tokenizer* fz_toy_tokenizer(int which) {
    if (!fz_toys_ready) {
        for (int k = 0; k < 2; k++) {
            JsonBuf b;
            jbuf_init(&b);
            fz__toy_tokenizer_json(&b, k);
            JsonValue* root;
            CodaError err;
            if (json_parse(b.data, b.len, &root, &err) != 0 || tokenizer_load_json(&fz_toys[k], root, k ? "toy-cross.json" : "toy.json", &err) != 0) {
                fprintf(stderr, "fuzz: toy tokenizer %d: %s\n", k, err.msg);
                abort();
            }
            if (fz_toys[k].words_independent != !k) { fprintf(stderr, "fuzz: toy tokenizer %d: wrong word plan\n", k); abort(); }
            json_free(root);
            jbuf_free(&b);
        }
        fz_toys_ready = 1;
    }
    return &fz_toys[which];
}

static inline int fuzz_tokenizer_roundtrip(const uint8_t* data, size_t size, CodaError* err) {
    const char* text = (const char*)data;
    int has_meta = 0;
    for (size_t i = 0; i + 3 <= size && !has_meta; i++) has_meta = memcmp(text + i, "\xE2\x96\x81", 3) == 0;
    for (int k = 0; k < 2; k++) {
        const Tokenizer* t = fz_toy_tokenizer(k);
        for (int bos = 0; bos < 2; bos++) {
            int32_t* ids;
            size_t n;
            if (tokenizer_encode(t, text, size, bos, &ids, &n, err) != 0) return FUZZ_REFUSED;
            char* back;
            size_t len;
            CodaError inner;
            int drc = tokenizer_decode(t, ids, n, &back, &len, &inner);
            free(ids);
            if (drc != 0) return fz_broken(err, "tokenizer_roundtrip: %s: decode failed: %s", t->path, inner.msg);
            int same = len == size && memcmp(back, text, size) == 0;
            free(back);
            if (!same && !has_meta)
                return fz_broken(err, "tokenizer_roundtrip: %s: %zu bytes decode back as %zu different bytes", t->path, size, len);
        }
    }
    return FUZZ_ACCEPTED;
}

// ---------------------------------------------------------------------------------------------
// train_state: the bytes are train_state.bin (llmc/train_state.h) of a checkpoint for a model with
// FZ_TRAIN_N trainable values resumed with FZ_TRAIN_RUN. Each input is parsed as it is (so a damaged
// file meets the checksum) and once more sealed with a matching checksum (so that mutations also
// reach the checks behind it), each time without and with a model to match. What is accepted must
// have exactly the size its header announces.

#define FZ_TRAIN_N 6
static const TrainRun FZ_TRAIN_RUN = {1, 2, 8, 1};  // seed, B, T, accum

static inline int fuzz_train_state(const uint8_t* data, size_t size, CodaError* err) {
    TrainStateExpect expect;
    memset(&expect, 0, sizeof(expect));
    expect.n_train = FZ_TRAIN_N;
    expect.run = FZ_TRAIN_RUN;
    uint8_t* sealed = (uint8_t*)coda_malloc_or_die(size ? size : 1, "fuzz copy");
    if (size) memcpy(sealed, data, size);
    train_state_seal(sealed, size);
    int rc = FUZZ_REFUSED;
    for (int k = 0; k < 4 && rc != FUZZ_BROKEN; k++) {
        const uint8_t* bytes = k < 2 ? data : sealed;
        TrainStateHeader h;
        CodaError e2;
        e2.msg[0] = 0;
        if (train_state_parse(bytes, size, "train_state.bin", k % 2 ? &expect : NULL, &h, &e2) != 0) {
            if (!e2.msg[0]) rc = fz_broken(err, "train_state: refused without a message");
            else if (k == 0) snprintf(err->msg, sizeof(err->msg), "%s", e2.msg);
            continue;
        }
        if (train_state_file_bytes(h.n_train) != size)
            rc = fz_broken(err, "train_state: accepted %zu bytes for %lld trainable values", size, (long long)h.n_train);
        else if (k % 2 && h.n_train != FZ_TRAIN_N)
            rc = fz_broken(err, "train_state: accepted %lld trainable values for a model with %d", (long long)h.n_train, FZ_TRAIN_N);
        else if (k == 0)
            rc = FUZZ_ACCEPTED;  // the input as given
    }
    free(sealed);
    return rc;
}

// bounded_state: the bytes are a generation session's state file (llmc/state_file.h) for a tiny
// bounded CoDA model made once. Each input is parsed as it is and once more sealed with a matching
// checksum (so that mutations also reach the checks behind it). What loads must save back to the
// same bytes, and the session must take a decode step from it.

typedef struct {
    int ready;
    Model_f32 m;
} FzBoundedModel;
static FzBoundedModel fz_bounded;

static inline ModelConfig fz_bounded_config(void) {
    ModelConfig c = fz_tiny_config();
    c.vocab_size = 16; c.dim = 8; c.ffn_dim = 16; c.n_layers = 2; c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 4;
    c.differential = 1; c.bounded = 1; c.window = 4; c.n_exact = 2; c.n_summary = 2; c.block_size = 4;
    c.exact_candidates_per_block = 2; c.summary_candidates_per_block = 2; c.write_gate_init_bias = 0.0f;
    return c;
}

static inline Model_f32* fz_bounded_model(void) {
    if (!fz_bounded.ready) {
        ModelConfig c = fz_bounded_config();
        model_init_f32(&fz_bounded.m, &c, 7);
        fz_bounded.ready = 1;
    }
    return &fz_bounded.m;
}

static inline int fuzz_bounded_state(const uint8_t* data, size_t size, CodaError* err) {
    uint8_t* sealed = (uint8_t*)coda_malloc_or_die(size ? size : 1, "fuzz copy");
    if (size) memcpy(sealed, data, size);
    state_file_seal(sealed, size);
    int rc = FUZZ_REFUSED;
    for (int k = 0; k < 2 && rc != FUZZ_BROKEN; k++) {
        const uint8_t* bytes = k ? sealed : data;
        Session s;
        session_init(&s, fz_bounded_model(), 3);  // a fresh session per parse: no state carries over
        CodaError e2;
        e2.msg[0] = 0;
        if (state_file_parse(bytes, size, "state.bin", &s, 0, &e2) != 0) {
            if (!e2.msg[0]) rc = fz_broken(err, "bounded_state: refused without a message");
            else if (k == 0) snprintf(err->msg, sizeof(err->msg), "%s", e2.msg);
        } else {
            void* back = NULL;
            size_t n = 0;
            if (state_file_encode(&s, &back, &n, &e2) != 0) rc = fz_broken(err, "bounded_state: a loaded state cannot be saved: %s", e2.msg);
            else if (n != size || memcmp(back, bytes, size) != 0) rc = fz_broken(err, "bounded_state: the loaded state saves as different bytes");
            else if (session_step(&s, 1, &e2) != 0) rc = fz_broken(err, "bounded_state: a decode step after loading failed: %s", e2.msg);
            else if (k == 0) rc = FUZZ_ACCEPTED;  // the input as given
            free(back);
        }
        session_free(&s);
    }
    free(sealed);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// torch_pt: a torch.save file ({group: {name: tensor}}, llmc/torch_pt.h pt_parse), parsed as it is
// and once more with every entry's CRC-32 recomputed (so that mutations of the pickle reach the
// pickle machine behind the CRC check). What is accepted has the bytes its shapes promise (every
// byte is read) and writes back (pt__write_stream, in memory) to a file that reads back to the same
// tensors, bit for bit.

static inline int fz__pt_same(const PtTensor* a, int na, const PtTensor* b, int nb) {
    if (na != nb) return 0;
    for (int i = 0; i < na; i++) {
        if (strcmp(a[i].group, b[i].group) || strcmp(a[i].name, b[i].name) || a[i].dtype != b[i].dtype || a[i].ndim != b[i].ndim ||
            a[i].nbytes != b[i].nbytes || (a[i].nbytes && memcmp(a[i].data, b[i].data, a[i].nbytes)))
            return 0;
        for (int d = 0; d < a[i].ndim; d++)
            if (a[i].shape[d] != b[i].shape[d]) return 0;
    }
    return 1;
}

// Recomputes the CRC of every entry whose sizes and offset are plain 32-bit fields, into both headers.
static inline void fz__pt_seal(uint8_t* b, size_t n) {
    PtZip z;
    CodaError e;
    if (pt__zip_open(&z, b, n, "seal", &e) == 0) {
        PtCrc* crc = (PtCrc*)coda_malloc_or_die(sizeof(PtCrc), "CRC tables");
        pt__crc_init(crc);
        uint8_t* p = b + z.cd_offset;
        for (size_t i = 0; i < z.ne; i++) {
            uint64_t size = pt__rd32(p + 20), local = pt__rd32(p + 42);
            if (size != 0xFFFFFFFFu && local != 0xFFFFFFFFu && local + 30 <= z.cd_offset) {
                uint64_t start = local + 30 + pt__rd16(b + local + 26) + pt__rd16(b + local + 28);
                if (start <= z.cd_offset && size <= z.cd_offset - start) {
                    uint32_t c = pt__crc(crc, 0, b + start, size);
                    for (int k = 0; k < 4; k++) p[16 + k] = b[local + 14 + k] = (uint8_t)(c >> (8 * k));
                }
            }
            p += 46 + pt__rd16(p + 28) + pt__rd16(p + 30) + pt__rd16(p + 32);
        }
        free(crc);
    }
    pt__zip_free(&z);
}

static inline int fz__torch_pt_one(const uint8_t* data, size_t size, CodaError* err) {
    PtTensor* t = NULL;
    int n = 0;
    if (pt_parse(data, size, "coda_adapters.pt", &t, &n, err) != 0) return err->msg[0] ? FUZZ_REFUSED : fz_broken(err, "torch_pt: refused without a message");
    int rc = FUZZ_ACCEPTED;
    unsigned sum = 0;
    for (int i = 0; i < n && rc == FUZZ_ACCEPTED; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        if (t[i].nbytes != numel * dtype_size(t[i].dtype))
            rc = fz_broken(err, "torch_pt: tensor '%s/%s' has %zu bytes for %zu elements", t[i].group, t[i].name, t[i].nbytes, numel);
        for (size_t k = 0; k < t[i].nbytes; k++) sum += ((const uint8_t*)t[i].data)[k];
    }
    fz_sink += sum;
    char* buf = NULL;
    size_t len = 0;
    FILE* f = rc == FUZZ_ACCEPTED ? open_memstream(&buf, &len) : NULL;
    if (f) {
        PtWriteOpts o;
        memset(&o, 0, sizeof(o));
        CodaError inner;
        int wrc = pt__write_stream(f, "rewritten.pt", t, n, &o, &inner);
        fclose(f);
        PtTensor* u = NULL;
        int m = 0;
        if (wrc != 0) rc = fz_broken(err, "torch_pt: an accepted file cannot be written back: %s", inner.msg);
        else if (pt_parse(buf, len, "rewritten.pt", &u, &m, &inner) != 0) rc = fz_broken(err, "torch_pt: the rewritten file is refused: %s", inner.msg);
        else if (!fz__pt_same(t, n, u, m)) rc = fz_broken(err, "torch_pt: the rewritten file reads back different tensors");
        pt_free(u, m);
    }
    free(buf);
    pt_free(t, n);
    return rc;
}

static inline int fuzz_torch_pt(const uint8_t* data, size_t size, CodaError* err) {
    int rc = fz__torch_pt_one(data, size, err);
    if (rc == FUZZ_BROKEN) return rc;
    uint8_t* sealed = (uint8_t*)coda_malloc_or_die(size ? size : 1, "fuzz copy");
    if (size) memcpy(sealed, data, size);
    fz__pt_seal(sealed, size);
    CodaError e2;
    e2.msg[0] = 0;
    if (fz__torch_pt_one(sealed, size, &e2) == FUZZ_BROKEN) rc = fz_broken(err, "%s (the input with its CRCs recomputed)", e2.msg);
    free(sealed);
    return rc;  // the input as given decides between accepted and refused
}

// ---------------------------------------------------------------------------------------------
// The table: name (= corpus and fixture directory name), entry, what it reads.

typedef struct {
    const char* name;
    FuzzEntry fn;
    const char* what;
} FuzzTarget;

static const FuzzTarget FUZZ_TARGETS[] = {
    {"json", fuzz_json, "json_parse, and the tree written back parses to the same tree"},
    {"config", fuzz_config, "config.json -> ModelConfig + config_validate, parameter table, write/read round trip"},
    {"safetensors", fuzz_safetensors, "safetensors file bytes (st_open_memory)"},
    {"safetensors_struct", fuzz_safetensors_struct, "valid safetensors built from the bytes, read back, then corrupted"},
    {"index", fuzz_index, "model.safetensors.index.json over a sharded tiny model (hf_load_params)"},
    {"shard", fuzz_shard, "token shard file: shard_load and the dataloader (init, next, seek)"},
    {"tokenizer", fuzz_tokenizer, "tokenizer.json -> tokenizer_load_json, then encode/decode samples"},
    {"tokenizer_roundtrip", fuzz_tokenizer_roundtrip, "bytes -> ids -> bytes through two toy tokenizers"},
    {"train_state", fuzz_train_state, "train_state.bin (train_state_parse), as given and sealed with a valid checksum"},
    {"bounded_state", fuzz_bounded_state, "a session's bounded-state file (state_file_parse), as given and sealed; saved back, one decode step"},
    {"torch_pt", fuzz_torch_pt, "torch.save zip of {group: {name: tensor}} (pt_parse); written back, read back the same"},
};
#define FUZZ_N_TARGETS ((int)(sizeof(FUZZ_TARGETS) / sizeof(FUZZ_TARGETS[0])))

static inline const FuzzTarget* fuzz_target_find(const char* name) {
    for (int i = 0; i < FUZZ_N_TARGETS; i++)
        if (strcmp(FUZZ_TARGETS[i].name, name) == 0) return &FUZZ_TARGETS[i];
    return NULL;
}
