// safetensors.h — read and write the safetensors format (Hugging Face weights files).
//
// Layout: u64 little-endian N | N bytes of JSON header | data section. The header is
//   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [b, e]}, ...}
// with offsets relative to the start of the data section. The reader maps the file read-only and
// validates everything before handing out a pointer; every message names the file and, where one is
// involved, the tensor. The writer streams tensor bytes to a temporary file in the target's directory
// and renames it into place, so a crash never leaves a half-written file under the real name.
#pragma once
#include <sys/stat.h>
#include <unistd.h>
#include "json.h"

#define ST_MAX_DIMS 8

typedef struct {
    char* name;
    DType dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    size_t offset;      // bytes from the start of the data section
    const void* data;   // into the mapped file; alignment follows the file (check before casting)
} StTensor;

typedef struct {
    const char* key;
    const char* value;
} StMeta;

typedef struct {
    char* path;
    uint8_t* file;      // the mapping made by st_open (NULL for st_open_memory, or once unmapped)
    size_t file_size;
    size_t header_len;  // N
    const uint8_t* data_section;
    size_t data_len;
    StTensor* tensors;  // in header order
    int n;
    const StTensor** by_name;  // [n]: the tensors sorted by name (st_find's binary search)
    StMeta* meta;       // __metadata__ (key/value strings owned by the SafeTensors)
    int n_meta;
} SafeTensors;

// Validates one header entry and fills t (name already set). Messages name file and tensor.
static inline int st__parse_entry(const char* path, const char* name, const JsonValue* e, size_t data_len,
                                  StTensor* t, CodaError* err) {
    if (e->type != JSON_OBJECT)
        return coda_errorf(err, "%s: tensor '%s': header entry must be an object, found %s", path, name, json_type_name(e->type));
    const JsonValue* dt = json_get(e, "dtype");
    const JsonValue* shape = json_get(e, "shape");
    const JsonValue* offs = json_get(e, "data_offsets");
    if (!dt || dt->type != JSON_STRING)
        return coda_errorf(err, "%s: tensor '%s': missing or non-string \"dtype\"", path, name);
    if (!shape || shape->type != JSON_ARRAY)
        return coda_errorf(err, "%s: tensor '%s': missing or non-array \"shape\"", path, name);
    if (!offs || offs->type != JSON_ARRAY || offs->count != 2)
        return coda_errorf(err, "%s: tensor '%s': \"data_offsets\" must be an array [begin, end]", path, name);
    if (dtype_from_name(dt->string, &t->dtype) != 0)
        return coda_errorf(err, "%s: tensor '%s': unknown or unsupported dtype '%s' (supported: F32 F64 BF16 F16 I32 I64 U8 U16 U32 BOOL)",
                           path, name, dt->string);
    if (shape->count > ST_MAX_DIMS)
        return coda_errorf(err, "%s: tensor '%s': %zu dimensions (at most %d supported)", path, name, shape->count, ST_MAX_DIMS);
    t->ndim = (int)shape->count;
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        const JsonValue* s = &shape->items[d];
        if (s->type != JSON_NUMBER || !s->is_int)
            return coda_errorf(err, "%s: tensor '%s': shape[%d] is not an integer", path, name, d);
        if (s->integer < 0)
            return coda_errorf(err, "%s: tensor '%s': negative dimension shape[%d] = %lld", path, name, d, (long long)s->integer);
        t->shape[d] = s->integer;
        if (!size_mul_ok(numel, (size_t)s->integer, &numel))
            return coda_errorf(err, "%s: tensor '%s': shape overflows size_t", path, name);
    }
    for (int i = 0; i < 2; i++)
        if (offs->items[i].type != JSON_NUMBER || !offs->items[i].is_int || offs->items[i].integer < 0)
            return coda_errorf(err, "%s: tensor '%s': data_offsets[%d] is not a non-negative integer", path, name, i);
    uint64_t begin = (uint64_t)offs->items[0].integer, end = (uint64_t)offs->items[1].integer;
    if (begin > end)
        return coda_errorf(err, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path, name,
                           (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return coda_errorf(err, "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data section (%zu bytes; file truncated?)",
                           path, name, (unsigned long long)begin, (unsigned long long)end, data_len);
    size_t esize = dtype_size(t->dtype), nbytes;
    if (!size_mul_ok(numel, esize, &nbytes)) return coda_errorf(err, "%s: tensor '%s': byte size overflows size_t", path, name);
    if (end - begin != nbytes)
        return coda_errorf(err, "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes but shape x %s needs %zu",
                           path, name, (unsigned long long)begin, (unsigned long long)end,
                           (unsigned long long)(end - begin), dtype_name(t->dtype), nbytes);
    t->numel = numel;
    t->nbytes = nbytes;
    t->offset = (size_t)begin;
    return 0;
}

static inline int st__cmp_offset(const void* a, const void* b) {
    const StTensor* x = *(const StTensor* const*)a;
    const StTensor* y = *(const StTensor* const*)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset ? 1 : (x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes);
}

static inline int st__cmp_name(const void* a, const void* b) {
    return strcmp((*(const StTensor* const*)a)->name, (*(const StTensor* const*)b)->name);
}

static inline void st_close(SafeTensors* st) {
    coda_unmap_file(st->file, st->file_size);
    for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->by_name);
    for (int i = 0; i < st->n_meta; i++) { free((void*)st->meta[i].key); free((void*)st->meta[i].value); }
    free(st->meta);
    free(st->path);
    memset(st, 0, sizeof(*st));
}

// Builds tensors/meta from the parsed header, then checks that no name appears twice and that no
// two tensors share bytes. Both checks sort (n log n): a header may list a million entries.
static inline int st__load_header(SafeTensors* st, const JsonValue* h, CodaError* err) {
    const char* path = st->path;
    if (h->type != JSON_OBJECT)
        return coda_errorf(err, "%s: safetensors header must be a JSON object, found %s", path, json_type_name(h->type));
    st->tensors = (StTensor*)coda_calloc_or_die(h->count, sizeof(StTensor), "safetensors tensor list");
    for (size_t i = 0; i < h->count; i++) {
        const char* key = h->keys[i];
        const JsonValue* e = &h->items[i];
        if (strlen(key) != h->key_lens[i]) return coda_errorf(err, "%s: a tensor name contains a NUL byte", path);
        if (strcmp(key, "__metadata__") == 0) {
            if (st->meta) return coda_errorf(err, "%s: __metadata__ appears twice in the header", path);
            if (e->type != JSON_OBJECT)
                return coda_errorf(err, "%s: __metadata__ must be an object of strings, found %s", path, json_type_name(e->type));
            st->meta = (StMeta*)coda_calloc_or_die(e->count, sizeof(StMeta), "safetensors metadata");
            for (size_t m = 0; m < e->count; m++) {
                if (e->items[m].type != JSON_STRING)
                    return coda_errorf(err, "%s: __metadata__ value of '%s' must be a string, found %s", path, e->keys[m],
                                       json_type_name(e->items[m].type));
                st->meta[st->n_meta].key = strdup(e->keys[m]);
                st->meta[st->n_meta].value = strdup(e->items[m].string);
                st->n_meta++;
            }
            continue;
        }
        StTensor* t = &st->tensors[st->n];
        t->name = strdup(key);
        st->n++;
        if (st__parse_entry(path, key, e, st->data_len, t, err) != 0) return -1;
        t->data = st->data_section + t->offset;
    }
    // Duplicate names: adjacent once sorted. The sorted list stays for st_find.
    st->by_name = (const StTensor**)coda_malloc_or_die(sizeof(StTensor*) * (size_t)(st->n + 1), "safetensors name index");
    for (int i = 0; i < st->n; i++) st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, (size_t)st->n, sizeof(*st->by_name), st__cmp_name);
    for (int i = 1; i < st->n; i++)
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0)
            return coda_errorf(err, "%s: tensor '%s' appears twice in the header", path, st->by_name[i]->name);
    // Overlap check: sort by offset; each non-empty tensor must begin at or after the previous end.
    // (Gaps are tolerated: harmless to a reader, though the Python writer never leaves any.)
    const StTensor** order = (const StTensor**)coda_malloc_or_die(sizeof(StTensor*) * (size_t)(st->n + 1), "offset order");
    for (int i = 0; i < st->n; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->n, sizeof(*order), st__cmp_offset);
    const StTensor* prev = NULL;
    for (int i = 0; i < st->n; i++) {
        const StTensor* t = order[i];
        if (t->nbytes == 0) continue;
        if (prev && t->offset < prev->offset + prev->nbytes) {
            int rc = coda_errorf(err, "%s: tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap in the data section", path,
                                 prev->name, prev->offset, prev->offset + prev->nbytes, t->name, t->offset, t->offset + t->nbytes);
            free(order);
            return rc;
        }
        prev = t;
    }
    free(order);
    return 0;
}

// Parses and validates file bytes [0, size) that st->path / st->file already describe (the
// mapping of st_open, or the caller's memory for st_open_memory). On failure st is closed.
static inline int st__parse(SafeTensors* st, const uint8_t* bytes, size_t size, CodaError* err) {
    const char* path = st->path;
    st->file_size = size;
    if (size < 8) {
        int rc = coda_errorf(err, "%s: file is too short to be safetensors (%zu bytes; the header length alone takes 8)", path, size);
        st_close(st);
        return rc;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];  // little-endian regardless of host
    if (n > size - 8) {
        int rc = coda_errorf(err, "%s: header length %llu runs past the end of the file (%zu bytes after the 8-byte length; truncated or not safetensors)",
                             path, (unsigned long long)n, size - 8);
        st_close(st);
        return rc;
    }
    st->header_len = (size_t)n;
    st->data_section = bytes + 8 + n;
    st->data_len = size - 8 - (size_t)n;
    JsonValue* h = NULL;
    CodaError inner;
    if (json_parse((const char*)bytes + 8, (size_t)n, &h, &inner) != 0) {
        int rc = coda_errorf(err, "%s: malformed safetensors header: %s", path, inner.msg);
        st_close(st);
        return rc;
    }
    int rc = st__load_header(st, h, err);
    json_free(h);
    if (rc != 0) st_close(st);
    return rc;
}

// Opens and validates a safetensors file. On failure st is left closed (nothing to free).
static inline int st_open(SafeTensors* st, const char* path, CodaError* err) {
    memset(st, 0, sizeof(*st));
    void* map;
    size_t size;
    if (coda_map_file(path, "safetensors file", &map, &size, err) != 0) return -1;
    if (size < 8) {
        coda_unmap_file(map, size);
        return coda_errorf(err, "%s: file is too short to be safetensors (%zu bytes; the header length alone takes 8)", path, size);
    }
    st->path = strdup(path);
    st->file = (uint8_t*)map;
    return st__parse(st, st->file, size, err);
}

// The same for file bytes already in memory (`name` only labels messages). Tensor data points into
// `bytes`, which must outlive st; st_close frees only what the reader allocated.
static inline int st_open_memory(SafeTensors* st, const char* name, const void* bytes, size_t size, CodaError* err) {
    memset(st, 0, sizeof(*st));
    st->path = strdup(name);
    return st__parse(st, (const uint8_t*)bytes, size, err);
}

static inline const StTensor* st_find(const SafeTensors* st, const char* name) {
    int lo = 0, hi = st->n;  // binary search over by_name: [lo, hi) may hold it
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(st->by_name[mid]->name, name);
        if (c == 0) return st->by_name[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}
static inline const char* st_meta_get(const SafeTensors* st, const char* key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Writer. The header is fixed up front (names, dtypes, shapes, hence offsets), then tensor bytes
// are streamed in the same order: a caller converting a 7B model never holds more than one
// converted chunk. st_write() is the all-in-memory convenience on top.

typedef struct {
    const char* name;
    DType dtype;
    int ndim;
    const int64_t* shape;
    const void* data;   // used by st_write(); ignored by st_writer_open()
} StWriteTensor;

typedef struct {
    FILE* f;
    char* path;
    char* tmp_path;
    size_t expected;    // data-section bytes promised by the header
    size_t written;
} StWriter;

static inline void st_writer_abort(StWriter* w) {
    if (w->f) fclose(w->f);
    if (w->tmp_path) unlink(w->tmp_path);
    free(w->path);
    free(w->tmp_path);
    memset(w, 0, sizeof(*w));
}

// The 8-byte length and the JSON header for tensors in this order (data back to back, offsets from
// the shapes), padded to 8 bytes as the Python writer does, into b; *data_bytes gets the size of
// the data section the header promises. Sizes are checked: a shape whose byte size overflows is an error.
static inline int st__build_header(JsonBuf* b, const char* path, const StWriteTensor* tensors, int n, const StMeta* meta,
                                   int n_meta, size_t* data_bytes, CodaError* err) {
    JsonBuf h;
    jbuf_init(&h);
    jbuf_puts(&h, "{");
    if (n_meta > 0) {
        jbuf_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) jbuf_puts(&h, ",");
            json_write_cstr(&h, meta[i].key);
            jbuf_puts(&h, ":");
            json_write_cstr(&h, meta[i].value);
        }
        jbuf_puts(&h, "}");
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        const StWriteTensor* t = &tensors[i];
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS || dtype_size(t->dtype) == 0) {
            jbuf_free(&h);
            return coda_errorf(err, "%s: tensor '%s': bad dtype or ndim %d", path, t->name, t->ndim);
        }
        size_t nbytes = dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) { jbuf_free(&h); return coda_errorf(err, "%s: tensor '%s': negative dimension", path, t->name); }
            if (!size_mul_ok(nbytes, (size_t)t->shape[d], &nbytes)) {
                jbuf_free(&h);
                return coda_errorf(err, "%s: tensor '%s': byte size overflows size_t", path, t->name);
            }
        }
        size_t end;
        if (!size_add_ok(offset, nbytes, &end)) { jbuf_free(&h); return coda_errorf(err, "%s: data section overflows size_t", path); }
        if (i || n_meta > 0) jbuf_puts(&h, ",");
        json_write_cstr(&h, t->name);
        jbuf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) jbuf_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        jbuf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", offset, end);
        offset = end;
    }
    jbuf_puts(&h, "}");
    while (h.len % 8) jbuf_puts(&h, " ");  // the data section starts 8-byte aligned, as the Python writer does
    char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (char)(uint8_t)((uint64_t)h.len >> (8 * i));
    jbuf_append(b, len8, 8);
    jbuf_append(b, h.data, h.len);
    jbuf_free(&h);
    *data_bytes = offset;
    return 0;
}

static inline int st_writer_open(StWriter* w, const char* path, const StWriteTensor* tensors, int n,
                                 const StMeta* meta, int n_meta, CodaError* err) {
    memset(w, 0, sizeof(*w));
    JsonBuf h;
    jbuf_init(&h);
    if (st__build_header(&h, path, tensors, n, meta, n_meta, &w->expected, err) != 0) return -1;
    w->path = strdup(path);
    size_t tl = strlen(path) + 64;
    w->tmp_path = (char*)coda_malloc_or_die(tl, "temp path");
    w->f = coda_create_temp_beside(path, w->tmp_path, tl, err);
    if (!w->f) {
        jbuf_free(&h);
        free(w->tmp_path); w->tmp_path = NULL;  // nothing to unlink
        st_writer_abort(w);
        return -1;
    }
    int ok = fwrite(h.data, 1, h.len, w->f) == h.len;
    jbuf_free(&h);
    if (!ok) {
        int rc = coda_errorf(err, "%s: write error: %s", w->tmp_path, strerror(errno));
        st_writer_abort(w);
        return rc;
    }
    return 0;
}

// Appends the next bytes of the data section (tensors in header order, back to back).
static inline int st_writer_put(StWriter* w, const void* bytes, size_t n, CodaError* err) {
    if (n > w->expected - w->written) {
        int rc = coda_errorf(err, "%s: more tensor bytes written (%zu + %zu) than the header declares (%zu)", w->path, w->written, n, w->expected);
        st_writer_abort(w);
        return rc;
    }
    if (n && fwrite(bytes, 1, n, w->f) != n) {
        int rc = coda_errorf(err, "%s: write error: %s", w->tmp_path, strerror(errno));
        st_writer_abort(w);
        return rc;
    }
    w->written += n;
    return 0;
}

// Checks completeness, flushes to disk and renames the temporary file onto the final name.
static inline int st_writer_commit(StWriter* w, CodaError* err) {
    if (w->written != w->expected) {
        int rc = coda_errorf(err, "%s: %zu tensor bytes written but the header declares %zu", w->path, w->written, w->expected);
        st_writer_abort(w);
        return rc;
    }
    int ok = fflush(w->f) == 0 && fsync(fileno(w->f)) == 0;
    ok = (fclose(w->f) == 0) && ok;
    w->f = NULL;
    if (!ok) {
        int rc = coda_errorf(err, "%s: write error: %s", w->tmp_path, strerror(errno));
        st_writer_abort(w);
        return rc;
    }
    if (rename(w->tmp_path, w->path) != 0) {
        int rc = coda_errorf(err, "%s: cannot rename %s into place: %s", w->path, w->tmp_path, strerror(errno));
        st_writer_abort(w);
        return rc;
    }
    free(w->tmp_path);
    w->tmp_path = NULL;  // renamed: nothing left to unlink
    st_writer_abort(w);
    return 0;
}

// Writes n tensors (data in memory) and optional metadata atomically.
static inline int st_write(const char* path, const StWriteTensor* tensors, int n, const StMeta* meta, int n_meta, CodaError* err) {
    StWriter w;
    if (st_writer_open(&w, path, tensors, n, meta, n_meta, err) != 0) return -1;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= (size_t)tensors[i].shape[d];
        if (st_writer_put(&w, tensors[i].data, numel * dtype_size(tensors[i].dtype), err) != 0) return -1;
    }
    return st_writer_commit(&w, err);
}
