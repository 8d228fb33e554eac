// torch_pt.h — read and write PyTorch's torch.save zip format, for a dict of dicts of tensors: the
// "coda_adapters.pt" of the CoDA-GQA-L reference, torch.save({"layer_0": adapter.state_dict(), ...}).
//
// Layout (torch >= 1.6): a ZIP archive, every entry STORED (no compression), all under one top-level
// directory (torch.save names it after the file; torch's reader takes the prefix of the first entry):
//   <p>/data.pkl    the object, pickled (protocol 2); tensors name their storage by a key
//   <p>/byteorder   "little" (torch >= 2.1; older files have none and are little-endian)
//   <p>/data/<key>  one storage's raw bytes, little-endian, element type from the pickle
//   <p>/version     "3\n" (or <p>/.data/version; other small records such as .format_version are ignored)
// The file: per entry a local header (30 bytes + name + extra) then the data (then a data descriptor
// when flag bit 3 is set: torch streams, so its local headers carry zero sizes and the central
// directory is the truth); the central directory (46 bytes + name + extra + comment per entry);
// a zip64 end record (56) and its locator (20), which torch always writes; the end record (22 +
// comment). Sizes or offsets that reach 0xFFFFFFFF live in zip64 extra fields (id 0x0001).
// torch pads each local header's extra field (id 0x4246, 'Z' bytes) so that data starts on a
// 64-byte boundary of the file (it mmaps storages); the writer does the same.
//
// One tensor in the pickle:
//   torch._utils._rebuild_tensor_v2(persistent_load(('storage', torch.FloatStorage, '<key>', 'cpu', numel)),
//                                   storage_offset, (sizes...), (strides...), requires_grad, OrderedDict())
// A state dict is collections.OrderedDict() filled by SETITEMS, its _metadata attached by BUILD.
// The reader runs a small pickle machine over a whitelist of opcodes and globals (the input may be
// hostile: no code runs, everything is bounded, nothing reads outside the buffer), builds a tagged
// object graph in one arena, then walks the one shape it accepts: {str: {str: tensor}}. Tensors must
// be contiguous (any storage offset: two tensors may share a storage); their bytes are copied out,
// at most 8 times the file's size in all (memo references could name one storage without end).
// Storages: Float, BFloat16, Half, Double; anything else is refused. Every record used is checked
// against its CRC-32. Messages name the file and what is wrong.
// The writer: {group: OrderedDict(name: tensor)} with one storage per tensor (archive/data/0, 1, ...
// in pickle order), zip64 fields where needed, only opcodes that torch.load(weights_only=True)
// accepts (checked against torch 1.13 by dev/test/torch_pt_check.py, also past 4 GiB); the whole
// file goes to path.tmp.<pid>.<k> and is renamed into place.
#pragma once
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"

#define PT_MAX_DIMS 8

typedef struct {
    char group[64];        // outer key, e.g. "layer_0"
    char name[128];        // inner key, e.g. "coda.q_proj.weight"
    DType dtype;           // DT_BF16 or DT_F32 (the reader also accepts DT_F16 and DT_F64 storages)
    int ndim;
    int64_t shape[PT_MAX_DIMS];
    void* data;            // reader: malloc'd, numel * element size bytes, little-endian, row-major
                           // writer: caller-owned
    size_t nbytes;
} PtTensor;

static inline void pt_free(PtTensor* t, int n) {
    if (!t) return;
    for (int i = 0; i < n; i++) free(t[i].data);
    free(t);
}

// ---- little-endian fields, CRC-32 ----------------------------------------------------------------

static inline uint32_t pt__rd16(const uint8_t* p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static inline uint32_t pt__rd32(const uint8_t* p) { return pt__rd16(p) | pt__rd16(p + 2) << 16; }
static inline uint64_t pt__rd64(const uint8_t* p) { return (uint64_t)pt__rd32(p) | (uint64_t)pt__rd32(p + 4) << 32; }

// The ZIP CRC (reflected polynomial 0xEDB88320), 8 bytes per step with 8 tables: a 5 GB adapter
// set is checked at memory speed. The tables live in the caller's struct (no shared state).
typedef struct { uint32_t t[8][256]; } PtCrc;
static inline void pt__crc_init(PtCrc* c) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t r = i;
        for (int k = 0; k < 8; k++) r = (r >> 1) ^ (0xEDB88320u & (0u - (r & 1u)));
        c->t[0][i] = r;
    }
    for (int s = 1; s < 8; s++)
        for (int i = 0; i < 256; i++) c->t[s][i] = (c->t[s - 1][i] >> 8) ^ c->t[0][c->t[s - 1][i] & 0xff];
}
static inline uint32_t pt__crc(const PtCrc* c, uint32_t crc, const void* data, uint64_t n) {
    const uint8_t* p = (const uint8_t*)data;
    crc = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t a = pt__rd32(p) ^ crc, b = pt__rd32(p + 4);
        crc = c->t[7][a & 0xff] ^ c->t[6][(a >> 8) & 0xff] ^ c->t[5][(a >> 16) & 0xff] ^ c->t[4][a >> 24] ^
              c->t[3][b & 0xff] ^ c->t[2][(b >> 8) & 0xff] ^ c->t[1][(b >> 16) & 0xff] ^ c->t[0][b >> 24];
    }
    for (; n; n--) crc = (crc >> 8) ^ c->t[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

// ---- ZIP reader -----------------------------------------------------------------------------------

typedef struct {
    const char* name;      // into the central directory (not NUL-terminated)
    size_t name_len;
    uint32_t crc;
    uint64_t size;         // STORED: compressed == uncompressed
    uint64_t local;        // offset of the local header
    int method, flags, checked;
} PtZipEntry;

typedef struct {
    const char* file;      // for messages
    const uint8_t* b;
    uint64_t cd_offset;    // entries' data must end before the central directory
    PtZipEntry* e;         // sorted by name
    size_t ne;
    char prefix[256];      // "<top-level directory>/"
    PtCrc* crc;
} PtZip;

static inline int pt__cmp_entry(const void* a, const void* b) {
    const PtZipEntry *x = (const PtZipEntry*)a, *y = (const PtZipEntry*)b;
    int c = memcmp(x->name, y->name, x->name_len < y->name_len ? x->name_len : y->name_len);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

// Reads a zip64 extra field's values for the 32-bit fields that hold the 0xFFFFFFFF sentinel, in
// the order the format fixes (uncompressed size, compressed size, local header offset; vals[2] may
// be NULL: local headers have no offset). -1 when a value the header defers to is not there.
static inline int pt__zip64_extra(const uint8_t* x, size_t xl, uint64_t* vals[3]) {
    if (*vals[0] != 0xFFFFFFFFu && *vals[1] != 0xFFFFFFFFu && !(vals[2] && *vals[2] == 0xFFFFFFFFu)) return 0;
    for (size_t at = 0; at + 4 <= xl;) {
        size_t id = pt__rd16(x + at), len = pt__rd16(x + at + 2);
        if (len > xl - at - 4) return -1;
        if (id == 1) {
            const uint8_t* v = x + at + 4;
            for (int k = 0; k < 3; k++)
                if (vals[k] && *vals[k] == 0xFFFFFFFFu) {
                    if (len < 8) return -1;
                    *vals[k] = pt__rd64(v);
                    v += 8;
                    len -= 8;
                }
            return 0;
        }
        at += 4 + len;
    }
    return -1;
}

static inline void pt__zip_free(PtZip* z) { free(z->e); z->e = NULL; z->ne = 0; }

// Finds the end records, reads the central directory, sorts it, takes the prefix of the first entry.
static inline int pt__zip_open(PtZip* z, const uint8_t* b, uint64_t n, const char* file, CodaError* err) {
    memset(z, 0, sizeof(*z));
    z->file = file; z->b = b;
    // The end record is the last 22 bytes plus its comment: search back over the longest comment.
    int64_t eocd = -1;
    for (int64_t at = (int64_t)n - 22; at >= 0 && at >= (int64_t)n - 22 - 65535; at--)
        if (pt__rd32(b + at) == 0x06054b50u && (uint64_t)at + 22 + pt__rd16(b + at + 20) == n) { eocd = at; break; }
    if (eocd < 0) {
        if (n >= 2 && b[0] == 0x80 && b[1] <= 5)
            return coda_errorf(err, "%s: not a zip archive but a bare pickle: torch.save's legacy format (torch < 1.6, or "
                               "_use_new_zipfile_serialization=False) is not supported; load and re-save it with a newer torch", file);
        if (n >= 4 && pt__rd32(b) == 0x04034b50u)
            return coda_errorf(err, "%s: zip archive without its end record (truncated: %llu bytes)", file, (unsigned long long)n);
        return coda_errorf(err, "%s: not a torch.save file (no zip end record in its %llu bytes)", file, (unsigned long long)n);
    }
    uint64_t count = pt__rd16(b + eocd + 10), cd_size = pt__rd32(b + eocd + 12), cd_off = pt__rd32(b + eocd + 16);
    uint64_t cd_limit = (uint64_t)eocd;  // the central directory ends before the (zip64) end records
    if (eocd >= 20 && pt__rd32(b + eocd - 20) == 0x07064b50u) {
        uint64_t z64 = pt__rd64(b + eocd - 20 + 8);
        if (z64 > (uint64_t)eocd - 20 || (uint64_t)eocd - 20 - z64 < 56 || pt__rd32(b + z64) != 0x06064b50u)
            return coda_errorf(err, "%s: damaged zip: the zip64 end record locator points at offset %llu, where there is none",
                               file, (unsigned long long)z64);
        uint64_t c64 = pt__rd64(b + z64 + 32), s64 = pt__rd64(b + z64 + 40), o64 = pt__rd64(b + z64 + 48);
        if ((count != 0xFFFF && count != c64) || (cd_size != 0xFFFFFFFFu && cd_size != s64) || (cd_off != 0xFFFFFFFFu && cd_off != o64))
            return coda_errorf(err, "%s: damaged zip: the end record and the zip64 end record disagree", file);
        count = c64; cd_size = s64; cd_off = o64; cd_limit = z64;
    } else if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        return coda_errorf(err, "%s: damaged zip: the end record defers to a zip64 end record that is missing", file);
    }
    if (cd_off > cd_limit || cd_size > cd_limit - cd_off)
        return coda_errorf(err, "%s: damaged zip: central directory [%llu, +%llu) runs past its end at %llu (truncated?)", file,
                           (unsigned long long)cd_off, (unsigned long long)cd_size, (unsigned long long)cd_limit);
    if (count == 0) return coda_errorf(err, "%s: an empty zip archive, not a torch.save file", file);
    if (count > cd_size / 46)
        return coda_errorf(err, "%s: damaged zip: %llu entries cannot fit a %llu-byte central directory", file,
                           (unsigned long long)count, (unsigned long long)cd_size);
    z->cd_offset = cd_off;
    z->e = (PtZipEntry*)coda_calloc_or_die((size_t)count, sizeof(PtZipEntry), "zip directory");
    const uint8_t* p = b + cd_off;
    uint64_t left = cd_size;
    for (uint64_t i = 0; i < count; i++) {
        if (left < 46 || pt__rd32(p) != 0x02014b50u)
            return coda_errorf(err, "%s: damaged zip: central directory entry %llu is not where the directory says", file, (unsigned long long)i);
        size_t nl = pt__rd16(p + 28), xl = pt__rd16(p + 30), cl = pt__rd16(p + 32);
        if (46 + nl + xl + cl > left) return coda_errorf(err, "%s: damaged zip: central directory entry %llu runs past the directory", file, (unsigned long long)i);
        PtZipEntry* e = &z->e[z->ne++];
        e->name = (const char*)p + 46; e->name_len = nl;
        e->flags = (int)pt__rd16(p + 8); e->method = (int)pt__rd16(p + 10); e->crc = pt__rd32(p + 16);
        uint64_t csize = pt__rd32(p + 20), usize = pt__rd32(p + 24), local = pt__rd32(p + 42);
        uint64_t* vals[3] = {&usize, &csize, &local};
        if (pt__zip64_extra(p + 46 + nl, xl, vals) != 0)
            return coda_errorf(err, "%s: damaged zip: entry '%.*s' lacks the zip64 sizes or offset its header defers to", file, (int)nl, e->name);
        if (e->method == 0 && csize != usize)
            return coda_errorf(err, "%s: damaged zip: stored entry '%.*s' has sizes %llu and %llu", file, (int)nl, e->name,
                               (unsigned long long)csize, (unsigned long long)usize);
        e->size = csize; e->local = local;
        p += 46 + nl + xl + cl;
        left -= 46 + nl + xl + cl;
    }
    const char* slash = (const char*)memchr(z->e[0].name, '/', z->e[0].name_len);
    size_t plen = slash ? (size_t)(slash - z->e[0].name) + 1 : 0;
    if (!slash || plen >= sizeof(z->prefix))
        return coda_errorf(err, "%s: entry '%.*s' is not inside a top-level directory (not a torch.save archive)", file,
                           (int)z->e[0].name_len, z->e[0].name);
    memcpy(z->prefix, z->e[0].name, plen);
    z->prefix[plen] = 0;
    qsort(z->e, z->ne, sizeof(PtZipEntry), pt__cmp_entry);
    for (size_t i = 1; i < z->ne; i++)
        if (pt__cmp_entry(&z->e[i - 1], &z->e[i]) == 0)
            return coda_errorf(err, "%s: damaged zip: entry '%.*s' appears twice", file, (int)z->e[i].name_len, z->e[i].name);
    return 0;
}

// The entry <prefix><rec>, or NULL.
static inline PtZipEntry* pt__zip_find(PtZip* z, const char* rec) {
    char full[512];
    if ((size_t)snprintf(full, sizeof(full), "%s%s", z->prefix, rec) >= sizeof(full)) return NULL;
    PtZipEntry key;
    key.name = full; key.name_len = strlen(full);
    return (PtZipEntry*)bsearch(&key, z->e, z->ne, sizeof(PtZipEntry), pt__cmp_entry);
}

// The bytes of an entry: the local header must agree with the directory, the data must lie before
// the central directory, and its CRC must match (checked once per entry).
static inline int pt__zip_data(PtZip* z, PtZipEntry* e, const uint8_t** out, CodaError* err) {
    const char* f = z->file;
    int nl = (int)e->name_len;
    if (e->method != 0) return coda_errorf(err, "%s: entry '%.*s' is compressed (method %d); torch.save stores every entry", f, nl, e->name, e->method);
    if (e->flags & 1) return coda_errorf(err, "%s: entry '%.*s' is encrypted", f, nl, e->name);
    if (e->local > z->cd_offset || z->cd_offset - e->local < 30 || pt__rd32(z->b + e->local) != 0x04034b50u)
        return coda_errorf(err, "%s: damaged zip: no local header for entry '%.*s' at offset %llu", f, nl, e->name, (unsigned long long)e->local);
    const uint8_t* h = z->b + e->local;
    uint64_t ln = pt__rd16(h + 26), lx = pt__rd16(h + 28), start = e->local + 30 + ln + lx;
    if (start > z->cd_offset || e->size > z->cd_offset - start)
        return coda_errorf(err, "%s: damaged zip: entry '%.*s' (%llu bytes at %llu) runs into the central directory (truncated?)", f, nl,
                           e->name, (unsigned long long)e->size, (unsigned long long)start);
    if (ln != e->name_len || memcmp(h + 30, e->name, e->name_len) != 0)
        return coda_errorf(err, "%s: damaged zip: the local header of entry '%.*s' names another entry", f, nl, e->name);
    if (!(pt__rd16(h + 6) & 8)) {  // no data descriptor: the local header repeats CRC and sizes
        uint64_t ls = pt__rd32(h + 18), lu = pt__rd32(h + 22);
        uint64_t* vals[3] = {&lu, &ls, NULL};
        if (pt__zip64_extra(h + 30 + ln, (size_t)lx, vals) != 0 || pt__rd32(h + 14) != e->crc || ls != e->size || lu != e->size)
            return coda_errorf(err, "%s: damaged zip: the local header of entry '%.*s' disagrees with the central directory", f, nl, e->name);
    }
    *out = z->b + start;
    if (!e->checked) {
        uint32_t c = pt__crc(z->crc, 0, *out, e->size);
        if (c != e->crc)
            return coda_errorf(err, "%s: entry '%.*s' is damaged: CRC-32 %08x, the directory says %08x", f, nl, e->name, c, e->crc);
        e->checked = 1;
    }
    return 0;
}

// ---- pickle machine -------------------------------------------------------------------------------

enum { PTO_NONE, PTO_BOOL, PTO_INT, PTO_FLOAT, PTO_STR, PTO_TUPLE, PTO_LIST, PTO_DICT, PTO_GLOBAL, PTO_STORAGE, PTO_TENSOR };
static const char* const PTO_NAMES[] = {"None", "a bool", "an int", "a float", "a str", "a tuple", "a list", "a dict", "a global", "a storage", "a tensor"};

typedef struct {
    int type;
    int dtype;             // STORAGE: the DType of its class, -1 when unsupported
    int64_t i;             // INT/BOOL value; STORAGE numel; TENSOR storage offset
    const char *s, *s2;    // STR bytes; GLOBAL module and name; STORAGE key (s) and class name (s2)
    size_t len, len2;
    int ref[3];            // TENSOR: storage, size tuple, stride tuple
    int* it;               // TUPLE/LIST items; DICT key, value, key, value, ...
    size_t n, cap;
} PtObj;

typedef struct {
    const char* file;
    const uint8_t* p;
    size_t n, pos, op_at;  // op_at: offset of the opcode being run (messages)
    PtObj* o; size_t no, co;
    int* st; size_t nst, cst;
    size_t* mk; size_t nmk, cmk;
    int* memo; size_t nmemo, cmemo, memo_count;
    CodaError* err;
} PtPk;

// p with room for `need` elements (capacity doubles; sizes are bounded by the input's length).
static inline void* pt__grow(void* p, size_t* cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void* q = realloc(p, c * elem);
    if (!q) coda_fatal("out of host memory growing a table to %zu x %zu bytes", c, elem);
    *cap = c;
    return q;
}
static inline int pt__fail(PtPk* m, const char* fmt, ...) {
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return coda_errorf(m->err, "%s: data.pkl offset %zu: %s", m->file, m->op_at, what);
}
static inline int pt__new(PtPk* m, int type) {
    m->o = (PtObj*)pt__grow(m->o, &m->co, m->no + 1, sizeof(PtObj));
    PtObj* x = &m->o[m->no];
    memset(x, 0, sizeof(*x));
    x->type = type;
    x->dtype = -1;
    return (int)m->no++;
}
static inline void pt__add(PtPk* m, int obj, int item) {
    PtObj* x = &m->o[obj];
    x->it = (int*)pt__grow(x->it, &x->cap, x->n + 1, sizeof(int));
    x->it[x->n++] = item;
}
static inline void pt__push(PtPk* m, int obj) {
    m->st = (int*)pt__grow(m->st, &m->cst, m->nst + 1, sizeof(int));
    m->st[m->nst++] = obj;
}
static inline size_t pt__base(const PtPk* m) { return m->nmk ? m->mk[m->nmk - 1] : 0; }
static inline int pt__pop(PtPk* m, int* obj) {
    if (m->nst <= pt__base(m)) return pt__fail(m, "pickle stack underflow (damaged pickle)");
    *obj = m->st[--m->nst];
    return 0;
}
// Items above the last MARK, removed: *first indexes m->st (valid until the next push).
static inline int pt__pop_mark(PtPk* m, size_t* first, size_t* count) {
    if (!m->nmk) return pt__fail(m, "no MARK to pop to (damaged pickle)");
    *first = m->mk[--m->nmk];
    *count = m->nst - *first;
    m->nst = *first;
    return 0;
}
static inline int pt__top(PtPk* m, int type, int* obj, const char* op) {
    if (m->nst <= pt__base(m)) return pt__fail(m, "%s on an empty stack (damaged pickle)", op);
    *obj = m->st[m->nst - 1];
    if (type >= 0 && m->o[*obj].type != type) return pt__fail(m, "%s on %s, not %s", op, PTO_NAMES[m->o[*obj].type], PTO_NAMES[type]);
    return 0;
}
static inline int pt__take(PtPk* m, size_t k, const uint8_t** out) {
    if (k > m->n - m->pos) return pt__fail(m, "truncated pickle: opcode 0x%02x needs %zu more bytes, %zu left", m->p[m->op_at], k, m->n - m->pos);
    *out = m->p + m->pos;
    m->pos += k;
    return 0;
}
static inline int pt__is(const char* s, size_t len, const char* lit) { return len == strlen(lit) && memcmp(s, lit, len) == 0; }

// The globals a dict of state dicts needs; anything else (os.system, a module class...) is refused.
static inline int pt__global(PtPk* m, const char* mod, size_t ml, const char* name, size_t nl) {
    int ok = (pt__is(mod, ml, "collections") && pt__is(name, nl, "OrderedDict")) ||
             (pt__is(mod, ml, "torch._utils") && (pt__is(name, nl, "_rebuild_tensor_v2") || pt__is(name, nl, "_rebuild_parameter"))) ||
             (pt__is(mod, ml, "torch") && nl > 7 && pt__is(name + nl - 7, 7, "Storage"));
    if (!ok) return pt__fail(m, "the pickle refers to %.*s.%.*s, which a dict of tensor state dicts never does", (int)(ml < 200 ? ml : 200),
                             mod, (int)(nl < 200 ? nl : 200), name);
    int g = pt__new(m, PTO_GLOBAL);
    m->o[g].s = mod; m->o[g].len = ml; m->o[g].s2 = name; m->o[g].len2 = nl;
    pt__push(m, g);
    return 0;
}
static inline int pt__is_global(const PtObj* g, const char* mod, const char* name) {
    return g->type == PTO_GLOBAL && pt__is(g->s, g->len, mod) && pt__is(g->s2, g->len2, name);
}

// REDUCE: callable(*args) for the three callables the whitelist lets through.
static inline int pt__reduce(PtPk* m) {
    int args = 0, fn = 0;
    if (pt__pop(m, &args) != 0 || pt__top(m, PTO_GLOBAL, &fn, "REDUCE") != 0) return -1;
    const PtObj* a = &m->o[args];
    if (a->type != PTO_TUPLE) return pt__fail(m, "REDUCE with %s as arguments, not a tuple", PTO_NAMES[a->type]);
    const PtObj* g = &m->o[fn];
    int r;
    if (pt__is_global(g, "collections", "OrderedDict")) {
        if (a->n != 0) return pt__fail(m, "OrderedDict called with %zu arguments (torch.save writes OrderedDict() then SETITEMS)", a->n);
        r = pt__new(m, PTO_DICT);
    } else if (pt__is_global(g, "torch._utils", "_rebuild_tensor_v2")) {
        static const int want[6] = {PTO_STORAGE, PTO_INT, PTO_TUPLE, PTO_TUPLE, PTO_BOOL, PTO_DICT};
        if (a->n != 6 && a->n != 7) return pt__fail(m, "_rebuild_tensor_v2 with %zu arguments (6 or 7 expected)", a->n);
        for (int k = 0; k < 6; k++)
            if (m->o[a->it[k]].type != want[k])
                return pt__fail(m, "_rebuild_tensor_v2 argument %d is %s, not %s", k, PTO_NAMES[m->o[a->it[k]].type], PTO_NAMES[want[k]]);
        const PtObj *size = &m->o[a->it[2]], *stride = &m->o[a->it[3]];
        if (size->n > PT_MAX_DIMS) return pt__fail(m, "tensor with %zu dimensions (at most %d supported)", size->n, PT_MAX_DIMS);
        if (stride->n != size->n) return pt__fail(m, "tensor with %zu sizes but %zu strides", size->n, stride->n);
        for (size_t k = 0; k < 2 * size->n; k++)
            if (m->o[(k < size->n ? size : stride)->it[k % size->n]].type != PTO_INT) return pt__fail(m, "a tensor size or stride is not an int");
        int storage = a->it[0], sz = a->it[2], sd = a->it[3];
        int64_t off = m->o[a->it[1]].i;
        r = pt__new(m, PTO_TENSOR);
        m->o[r].ref[0] = storage; m->o[r].ref[1] = sz; m->o[r].ref[2] = sd; m->o[r].i = off;
    } else if (pt__is_global(g, "torch._utils", "_rebuild_parameter")) {
        if (a->n != 3 || m->o[a->it[0]].type != PTO_TENSOR) return pt__fail(m, "_rebuild_parameter expects (tensor, requires_grad, hooks)");
        r = a->it[0];  // an nn.Parameter is its tensor here
    } else {
        return pt__fail(m, "the pickle calls %.*s.%.*s", (int)g->len, g->s, (int)g->len2, g->s2);
    }
    m->st[m->nst - 1] = r;
    return 0;
}

// BINPERSID: ('storage', torch.XStorage, key, location, numel) -> a storage object.
static inline int pt__persid(PtPk* m) {
    int pid = 0;
    if (pt__pop(m, &pid) != 0) return -1;
    const PtObj* t = &m->o[pid];
    if (t->type != PTO_TUPLE || t->n != 5 || m->o[t->it[0]].type != PTO_STR || !pt__is(m->o[t->it[0]].s, m->o[t->it[0]].len, "storage"))
        return pt__fail(m, "persistent id is not a ('storage', type, key, location, numel) tuple");
    const PtObj *cls = &m->o[t->it[1]], *key = &m->o[t->it[2]], *loc = &m->o[t->it[3]], *numel = &m->o[t->it[4]];
    if (cls->type != PTO_GLOBAL || key->type != PTO_STR || loc->type != PTO_STR || numel->type != PTO_INT || numel->i < 0)
        return pt__fail(m, "persistent id ('storage', %s, %s, %s, %s) is not (a type, a key str, a location str, an int numel >= 0)",
                        PTO_NAMES[cls->type], PTO_NAMES[key->type], PTO_NAMES[loc->type], PTO_NAMES[numel->type]);
    PtObj x = *key;  // copied out: pt__new may move the arena
    x.type = PTO_STORAGE; x.it = NULL; x.n = x.cap = 0;
    x.s2 = cls->s2; x.len2 = cls->len2; x.i = numel->i;
    x.dtype = !pt__is(cls->s, cls->len, "torch")              ? -1
              : pt__is(cls->s2, cls->len2, "FloatStorage")    ? DT_F32
              : pt__is(cls->s2, cls->len2, "BFloat16Storage") ? DT_BF16
              : pt__is(cls->s2, cls->len2, "HalfStorage")     ? DT_F16
              : pt__is(cls->s2, cls->len2, "DoubleStorage")   ? DT_F64 : -1;
    int s = pt__new(m, PTO_STORAGE);
    m->o[s] = x;
    pt__push(m, s);
    return 0;
}

static inline int pt__memo_put(PtPk* m, uint64_t idx) {
    int top = 0;
    if (pt__top(m, -1, &top, "memo put") != 0) return -1;
    // The pickler numbers memo entries 0, 1, 2...: an index beyond the pickle's length is hostile.
    if (idx > m->n) return pt__fail(m, "memo index %llu is beyond any a %zu-byte pickle uses", (unsigned long long)idx, m->n);
    if (idx >= m->nmemo) {
        m->memo = (int*)pt__grow(m->memo, &m->cmemo, (size_t)idx + 1, sizeof(int));
        for (size_t k = m->nmemo; k <= idx; k++) m->memo[k] = -1;
        m->nmemo = (size_t)idx + 1;
    }
    if (m->memo[idx] < 0) m->memo_count++;
    m->memo[idx] = top;
    return 0;
}

// Runs the pickle; *root is the object STOP returns.
static inline int pt__unpickle(PtPk* m, int* root) {
    const uint8_t* a = NULL;
    for (;;) {
        m->op_at = m->pos;
        if (m->pos >= m->n) return pt__fail(m, "truncated pickle: no STOP opcode");
        uint8_t op = m->p[m->pos++];
        int x = 0, y = 0;
        size_t first = 0, count = 0;
        uint64_t len;
        switch (op) {
            case 0x80: if (pt__take(m, 1, &a) != 0) return -1;                                    // PROTO
                if (*a < 2 || *a > 5) return pt__fail(m, "pickle protocol %u (2 to 5 supported)", *a);
                break;
            case 0x95: if (pt__take(m, 8, &a) != 0) return -1;                                    // FRAME: framing only
                if (pt__rd64(a) > m->n - m->pos) return pt__fail(m, "frame of %llu bytes runs past the pickle", (unsigned long long)pt__rd64(a));
                break;
            case '.':                                                                               // STOP
                if (pt__pop(m, root) != 0) return -1;
                if (m->pos != m->n) return pt__fail(m, "%zu bytes after STOP (damaged pickle)", m->n - m->pos);
                return 0;
            case '(': m->mk = (size_t*)pt__grow(m->mk, &m->cmk, m->nmk + 1, sizeof(size_t)); m->mk[m->nmk++] = m->nst; break;
            case '}': pt__push(m, pt__new(m, PTO_DICT)); break;
            case ']': pt__push(m, pt__new(m, PTO_LIST)); break;
            case ')': pt__push(m, pt__new(m, PTO_TUPLE)); break;
            case 'N': pt__push(m, pt__new(m, PTO_NONE)); break;
            case 0x88: case 0x89: x = pt__new(m, PTO_BOOL); m->o[x].i = op == 0x88; pt__push(m, x); break;
            case 't': case 'l': case 'd':                                                           // TUPLE, LIST, DICT
                if (pt__pop_mark(m, &first, &count) != 0) return -1;
                if (op == 'd' && count % 2) return pt__fail(m, "DICT with an odd number of items");
                x = pt__new(m, op == 't' ? PTO_TUPLE : op == 'l' ? PTO_LIST : PTO_DICT);
                for (size_t k = 0; k < count; k++) pt__add(m, x, m->st[first + k]);
                pt__push(m, x);
                break;
            case 0x85: case 0x86: case 0x87: {                                                      // TUPLE1..3
                size_t k = (size_t)(op - 0x84);
                if (m->nst < pt__base(m) + k) return pt__fail(m, "TUPLE%zu with fewer items on the stack (damaged pickle)", k);
                x = pt__new(m, PTO_TUPLE);
                for (size_t j = 0; j < k; j++) pt__add(m, x, m->st[m->nst - k + j]);
                m->nst -= k;
                pt__push(m, x);
                break;
            }
            case 'a': if (pt__pop(m, &y) != 0 || pt__top(m, PTO_LIST, &x, "APPEND") != 0) return -1; pt__add(m, x, y); break;
            case 's': {                                                                             // SETITEM
                int k = 0;
                if (pt__pop(m, &y) != 0 || pt__pop(m, &k) != 0 || pt__top(m, PTO_DICT, &x, "SETITEM") != 0) return -1;
                pt__add(m, x, k); pt__add(m, x, y);
                break;
            }
            case 'e': case 'u':                                                                     // APPENDS, SETITEMS
                if (pt__pop_mark(m, &first, &count) != 0 || pt__top(m, op == 'e' ? PTO_LIST : PTO_DICT, &x, op == 'e' ? "APPENDS" : "SETITEMS") != 0) return -1;
                if (op == 'u' && count % 2) return pt__fail(m, "SETITEMS with an odd number of items");
                for (size_t k = 0; k < count; k++) pt__add(m, x, m->st[first + k]);
                break;
            case 'J': case 'K': case 'M':                                                           // BININT, BININT1, BININT2
                if (pt__take(m, op == 'J' ? 4 : op == 'K' ? 1 : 2, &a) != 0) return -1;
                x = pt__new(m, PTO_INT);
                m->o[x].i = op == 'J' ? (int64_t)(int32_t)pt__rd32(a) : op == 'K' ? (int64_t)a[0] : (int64_t)pt__rd16(a);
                pt__push(m, x);
                break;
            case 0x8a: case 0x8b: {                                                                 // LONG1, LONG4
                if (pt__take(m, op == 0x8a ? 1 : 4, &a) != 0) return -1;
                len = op == 0x8a ? a[0] : pt__rd32(a);
                if (len > 8) return pt__fail(m, "an integer of %llu bytes (at most 8 supported)", (unsigned long long)len);
                if (pt__take(m, (size_t)len, &a) != 0) return -1;
                uint64_t v = 0;
                for (size_t k = 0; k < len; k++) v |= (uint64_t)a[k] << (8 * k);
                if (len && len < 8 && (a[len - 1] & 0x80)) v |= ~0ull << (8 * len);  // two's complement sign
                x = pt__new(m, PTO_INT);
                memcpy(&m->o[x].i, &v, 8);
                pt__push(m, x);
                break;
            }
            case 'G': if (pt__take(m, 8, &a) != 0) return -1; pt__push(m, pt__new(m, PTO_FLOAT)); break;  // BINFLOAT: value unused
            case 'X': case 0x8c: case 0x8d: case 'U': case 'T': {                                   // the string opcodes
                size_t w = op == 'X' || op == 'T' ? 4 : op == 0x8d ? 8 : 1;
                if (pt__take(m, w, &a) != 0) return -1;
                len = w == 4 ? pt__rd32(a) : w == 8 ? pt__rd64(a) : a[0];
                if ((op == 'T' && len > 0x7fffffffu) || len > m->n - m->pos) return pt__fail(m, "string of %llu bytes runs past the pickle", (unsigned long long)len);
                x = pt__new(m, PTO_STR);
                m->o[x].s = (const char*)m->p + m->pos; m->o[x].len = (size_t)len;
                m->pos += (size_t)len;
                pt__push(m, x);
                break;
            }
            case 'c': {                                                                             // GLOBAL "module\nname\n"
                const char* s = (const char*)m->p + m->pos;
                const char* nl1 = (const char*)memchr(s, '\n', m->n - m->pos);
                const char* nl2 = nl1 ? (const char*)memchr(nl1 + 1, '\n', m->n - m->pos - (size_t)(nl1 + 1 - s)) : NULL;
                if (!nl2) return pt__fail(m, "truncated GLOBAL");
                m->pos += (size_t)(nl2 + 1 - s);
                if (pt__global(m, s, (size_t)(nl1 - s), nl1 + 1, (size_t)(nl2 - nl1 - 1)) != 0) return -1;
                break;
            }
            case 0x93:                                                                              // STACK_GLOBAL
                if (pt__pop(m, &y) != 0 || pt__pop(m, &x) != 0) return -1;
                if (m->o[x].type != PTO_STR || m->o[y].type != PTO_STR) return pt__fail(m, "STACK_GLOBAL of non-strings");
                if (pt__global(m, m->o[x].s, m->o[x].len, m->o[y].s, m->o[y].len) != 0) return -1;
                break;
            case 'R': if (pt__reduce(m) != 0) return -1; break;
            case 'b':                                                                               // BUILD: state ignored
                if (pt__pop(m, &y) != 0 || pt__top(m, -1, &x, "BUILD") != 0) return -1;
                if (m->o[x].type != PTO_DICT && m->o[x].type != PTO_TENSOR) return pt__fail(m, "BUILD on %s", PTO_NAMES[m->o[x].type]);
                break;
            case 'Q': if (pt__persid(m) != 0) return -1; break;
            case 'q': case 'r': case 0x94:                                                          // BINPUT, LONG_BINPUT, MEMOIZE
                if (op != 0x94 && pt__take(m, op == 'q' ? 1 : 4, &a) != 0) return -1;
                if (pt__memo_put(m, op == 0x94 ? m->memo_count : op == 'q' ? a[0] : pt__rd32(a)) != 0) return -1;
                break;
            case 'h': case 'j':                                                                     // BINGET, LONG_BINGET
                if (pt__take(m, op == 'h' ? 1 : 4, &a) != 0) return -1;
                len = op == 'h' ? a[0] : pt__rd32(a);
                if (len >= m->nmemo || m->memo[len] < 0) return pt__fail(m, "memo entry %llu read before it was written", (unsigned long long)len);
                pt__push(m, m->memo[len]);
                break;
            default:
                return pt__fail(m, "unsupported pickle opcode 0x%02x (not in what torch.save writes for tensors)", op);
        }
    }
}

static inline void pt__pk_free(PtPk* m) {
    for (size_t i = 0; i < m->no; i++) free(m->o[i].it);
    free(m->o); free(m->st); free(m->mk); free(m->memo);
}

// ---- from the object graph to tensors -------------------------------------------------------------

typedef struct { const char* s; size_t len; } PtKey;
static inline int pt__cmp_key(const void* a, const void* b) {
    const PtKey *x = (const PtKey*)a, *y = (const PtKey*)b;
    int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}
// A dict's keys must be distinct strings without NUL that fit `cap` bytes with their terminator.
static inline int pt__check_keys(PtPk* m, const PtObj* d, size_t cap, const char* what, const char* group) {
    size_t nk = d->n / 2;
    PtKey* k = (PtKey*)coda_malloc_or_die(sizeof(PtKey) * (nk + 1), "pickle keys");
    int rc = 0;
    for (size_t i = 0; i < nk && rc == 0; i++) {
        const PtObj* key = &m->o[d->it[2 * i]];
        if (key->type != PTO_STR) rc = coda_errorf(m->err, "%s: %s%s%s key %zu is %s, not a str", m->file, what, group ? " of " : "", group ? group : "", i, PTO_NAMES[key->type]);
        else if (key->len >= cap || memchr(key->s, 0, key->len))
            rc = coda_errorf(m->err, "%s: %s '%.*s' is %zu bytes or holds a NUL (at most %zu bytes)", m->file, what, (int)(key->len < 200 ? key->len : 200),
                             key->s, key->len, cap - 1);
        else { k[i].s = key->s; k[i].len = key->len; }
    }
    if (rc == 0) qsort(k, nk, sizeof(PtKey), pt__cmp_key);
    for (size_t i = 1; i < nk && rc == 0; i++)
        if (pt__cmp_key(&k[i - 1], &k[i]) == 0)
            rc = coda_errorf(m->err, "%s: %s '%.*s' appears twice%s%s", m->file, what, (int)k[i].len, k[i].s, group ? " in group " : "", group ? group : "");
    free(k);
    return rc;
}

// Fills one PtTensor from a tensor object: dtype, contiguity, bounds, its storage record, bytes.
// *budget: bytes still allowed out (memo references can name one big storage many times over).
static inline int pt__tensor(PtPk* m, PtZip* z, const PtObj* t, PtTensor* out, size_t* budget) {
    const char *f = m->file, *g = out->group, *nm = out->name;
    const PtObj *st = &m->o[t->ref[0]], *size = &m->o[t->ref[1]], *stride = &m->o[t->ref[2]];
    if (st->dtype < 0)
        return coda_errorf(m->err, "%s: tensor '%s/%s': unsupported storage type %.*s (FloatStorage, BFloat16Storage, HalfStorage, DoubleStorage)",
                           f, g, nm, (int)st->len2, st->s2);
    out->dtype = (DType)st->dtype;
    out->ndim = (int)size->n;
    size_t esize = dtype_size(out->dtype), numel = 1, nbytes;
    for (int d = 0; d < out->ndim; d++) {
        int64_t s = m->o[size->it[d]].i;
        if (s < 0) return coda_errorf(m->err, "%s: tensor '%s/%s': negative size %lld in dimension %d", f, g, nm, (long long)s, d);
        out->shape[d] = s;
        if (!size_mul_ok(numel, (size_t)s, &numel)) return coda_errorf(m->err, "%s: tensor '%s/%s': element count overflows", f, g, nm);
    }
    // Row-major contiguous: each stride is the product of the sizes after it (dimensions of size 1
    // may have any stride, as torch's is_contiguous says; an empty tensor is contiguous).
    int64_t want = 1;
    for (int d = out->ndim - 1; d >= 0 && numel > 0; d--) {
        int64_t s = m->o[stride->it[d]].i;
        if (out->shape[d] != 1 && s != want)
            return coda_errorf(m->err, "%s: tensor '%s/%s' is not contiguous: dimension %d has stride %lld, %lld expected "
                               "(save t.contiguous() instead)", f, g, nm, d, (long long)s, (long long)want);
        want *= out->shape[d];
    }
    if (!size_mul_ok(numel, esize, &nbytes)) return coda_errorf(m->err, "%s: tensor '%s/%s': byte size overflows", f, g, nm);
    if (t->i < 0 || (uint64_t)t->i > (uint64_t)st->i || numel > (uint64_t)st->i - (uint64_t)t->i)
        return coda_errorf(m->err, "%s: tensor '%s/%s': elements [%lld, +%zu) lie outside its storage of %lld", f, g, nm, (long long)t->i,
                           numel, (long long)st->i);
    char rec[300];
    snprintf(rec, sizeof(rec), "data/%.*s", (int)(st->len < 256 ? st->len : 256), st->s);
    PtZipEntry* e = st->len < 256 && !memchr(st->s, 0, st->len) ? pt__zip_find(z, rec) : NULL;
    if (!e) return coda_errorf(m->err, "%s: tensor '%s/%s': its storage record %s%s is missing", f, g, nm, z->prefix, rec);
    size_t sbytes;
    if (!size_mul_ok((size_t)st->i, esize, &sbytes) || e->size != sbytes)
        return coda_errorf(m->err, "%s: tensor '%s/%s': storage record %s%s holds %llu bytes, not the %lld x %zu bytes of its %s elements",
                           f, g, nm, z->prefix, rec, (unsigned long long)e->size, (long long)st->i, esize, dtype_name(out->dtype));
    const uint8_t* bytes;
    if (pt__zip_data(z, e, &bytes, m->err) != 0) return -1;
    if (nbytes > *budget)
        return coda_errorf(m->err, "%s: tensor '%s/%s': the tensors name the same storage bytes over and over (more than 8 times the file's size)", f, g, nm);
    *budget -= nbytes;
    out->nbytes = nbytes;
    out->data = coda_malloc_or_die(nbytes, "tensor from a .pt file");
    if (nbytes) memcpy(out->data, bytes + (size_t)t->i * esize, nbytes);
    return 0;
}

// Reads a torch.save file already in memory (`name` labels messages); *out as pt_read.
static inline int pt_parse(const void* bytes, size_t n, const char* name, PtTensor** out, int* n_out, CodaError* err) {
    *out = NULL;
    *n_out = 0;
    PtZip z;
    PtCrc* crc = (PtCrc*)coda_malloc_or_die(sizeof(PtCrc), "CRC tables");
    pt__crc_init(crc);
    PtPk m;
    memset(&m, 0, sizeof(m));
    m.file = name; m.err = err;
    PtTensor* t = NULL;
    int nt = 0, rc = -1, root = 0;
    size_t budget = n < ((size_t)1 << 58) ? 8 * n + ((size_t)1 << 24) : SIZE_MAX;
    const uint8_t* rec;
    PtZipEntry *e_pkl, *e_ver, *e_bo;
    if (pt__zip_open(&z, (const uint8_t*)bytes, n, name, err) != 0) goto done;
    z.crc = crc;
    if (!(e_pkl = pt__zip_find(&z, "data.pkl"))) { coda_errorf(err, "%s: no %sdata.pkl in the archive (not a torch.save file)", name, z.prefix); goto done; }
    e_ver = pt__zip_find(&z, ".data/version");
    if (!e_ver) e_ver = pt__zip_find(&z, "version");
    if (!e_ver) { coda_errorf(err, "%s: no %sversion record in the archive (not a torch.save file)", name, z.prefix); goto done; }
    if (pt__zip_data(&z, e_ver, &rec, err) != 0) goto done;
    {  // a decimal number (torch: stoull, at least 1), maybe followed by a newline
        size_t k = 0;
        uint64_t v = 0;
        while (k < e_ver->size && k < 20 && rec[k] >= '0' && rec[k] <= '9') v = 10 * v + (uint64_t)(rec[k++] - '0');
        if (k == 0 || v < 1 || (k < e_ver->size && !(k + 1 == e_ver->size && rec[k] == '\n'))) {
            coda_errorf(err, "%s: version record '%.*s' is not a format version number", name, (int)(e_ver->size < 16 ? e_ver->size : 16), (const char*)rec);
            goto done;
        }
    }
    if ((e_bo = pt__zip_find(&z, "byteorder")) != NULL) {
        if (pt__zip_data(&z, e_bo, &rec, err) != 0) goto done;
        if (!pt__is((const char*)rec, (size_t)e_bo->size, "little")) {
            coda_errorf(err, "%s: byteorder is '%.*s': only little-endian files are supported", name, (int)(e_bo->size < 16 ? e_bo->size : 16), (const char*)rec);
            goto done;
        }
    }
    if (pt__zip_data(&z, e_pkl, &rec, err) != 0) goto done;
    if (e_pkl->size > ((size_t)1 << 30)) { coda_errorf(err, "%s: data.pkl is %llu bytes: too large for a dict of tensors", name, (unsigned long long)e_pkl->size); goto done; }
    m.p = rec; m.n = (size_t)e_pkl->size;
    if (pt__unpickle(&m, &root) != 0) goto done;
    {
        const PtObj* top = &m.o[root];
        if (top->type != PTO_DICT) { coda_errorf(err, "%s: the pickled object is %s, not a dict of state dicts", name, PTO_NAMES[top->type]); goto done; }
        if (pt__check_keys(&m, top, sizeof(t->group), "group name", NULL) != 0) goto done;
        size_t total = 0;
        for (size_t i = 1; i < top->n; i += 2) {
            const PtObj* v = &m.o[top->it[i]];
            const PtObj* k = &m.o[top->it[i - 1]];
            if (v->type != PTO_DICT) {
                coda_errorf(err, "%s: group '%.*s' is %s, not a dict of tensors%s", name, (int)k->len, k->s, PTO_NAMES[v->type],
                            v->type == PTO_TENSOR ? " (this is a single state dict; this reader takes {group: state_dict, ...})" : "");
                goto done;
            }
            total += v->n / 2;
        }
        if (total > (size_t)1 << 24) { coda_errorf(err, "%s: %zu tensors: more than this reader takes", name, total); goto done; }
        t = (PtTensor*)coda_calloc_or_die(total, sizeof(PtTensor), "tensor list");
        for (size_t i = 1; i < top->n; i += 2) {
            const PtObj *k = &m.o[top->it[i - 1]], *d = &m.o[top->it[i]];
            char group[64];
            memcpy(group, k->s, k->len);
            group[k->len] = 0;
            if (pt__check_keys(&m, d, sizeof(t->name), "tensor name", group) != 0) goto done;
            for (size_t j = 1; j < d->n; j += 2) {
                const PtObj *tk = &m.o[d->it[j - 1]], *tv = &m.o[d->it[j]];
                PtTensor* o = &t[nt];
                memcpy(o->group, group, sizeof(group));
                memcpy(o->name, tk->s, tk->len);
                o->name[tk->len] = 0;
                if (tv->type != PTO_TENSOR) { coda_errorf(err, "%s: '%s/%s' is %s, not a tensor", name, group, o->name, PTO_NAMES[tv->type]); goto done; }
                if (pt__tensor(&m, &z, tv, o, &budget) != 0) goto done;
                nt++;
            }
        }
    }
    rc = 0;
done:
    pt__pk_free(&m);
    pt__zip_free(&z);
    free(crc);
    if (rc != 0) { pt_free(t, nt); return -1; }
    *out = t;
    *n_out = nt;
    return 0;
}

// Reads a torch.save file (see the top of this file for what is accepted).
static inline int pt_read(const char* path, PtTensor** out, int* n, CodaError* err) {
    *out = NULL;
    *n = 0;
    void* map;
    size_t size;
    if (coda_map_file(path, "torch .pt file", &map, &size, err) != 0) return -1;
    if (size < 22) {
        coda_unmap_file(map, size);
        return coda_errorf(err, "%s: %zu bytes: too short to be a torch.save file (truncated?)", path, size);
    }
    int rc = pt_parse(map, size, path, out, n, err);
    coda_unmap_file(map, size);
    return rc;
}

// ---- writer ---------------------------------------------------------------------------------------

typedef struct { uint8_t* d; size_t n, cap; } PtBuf;
static inline void pt__put(PtBuf* b, const void* p, size_t k) {
    b->d = (uint8_t*)pt__grow(b->d, &b->cap, b->n + k, 1);
    if (k) memcpy(b->d + b->n, p, k);
    b->n += k;
}
static inline void pt__le(PtBuf* b, uint64_t v, int bytes) {
    uint8_t x[8];
    for (int i = 0; i < bytes; i++) x[i] = (uint8_t)(v >> (8 * i));
    pt__put(b, x, (size_t)bytes);
}
static inline void pt__op(PtBuf* b, uint8_t op) { pt__put(b, &op, 1); }
static inline void pt__pk_str(PtBuf* b, const char* s) { pt__op(b, 'X'); pt__le(b, strlen(s), 4); pt__put(b, s, strlen(s)); }
static inline void pt__pk_text(PtBuf* b, const char* s) { pt__put(b, s, strlen(s)); }
// The shortest of BININT1 / BININT2 / BININT / LONG1 that holds v >= 0.
static inline void pt__pk_int(PtBuf* b, uint64_t v) {
    if (v < 256) { pt__op(b, 'K'); pt__le(b, v, 1); }
    else if (v < 65536) { pt__op(b, 'M'); pt__le(b, v, 2); }
    else if (v < 0x80000000u) { pt__op(b, 'J'); pt__le(b, v, 4); }
    else {  // LONG1: little-endian two's complement, as few bytes as leave the sign bit clear (v < 2^63)
        int k = 4;
        while (k < 8 && (v >> (8 * k - 1)) != 0) k++;
        pt__op(b, 0x8a); pt__le(b, (uint64_t)k, 1); pt__le(b, v, k);
    }
}
static inline void pt__pk_ordered_dict(PtBuf* b) { pt__pk_text(b, "ccollections\nOrderedDict\n)R"); }

// One tensor: _rebuild_tensor_v2(persistent storage `key`, 0, sizes, row-major strides, False, OrderedDict()).
static inline void pt__pk_tensor(PtBuf* b, const PtTensor* t, int key) {
    static const char* cls[DT_COUNT] = {"FloatStorage", "DoubleStorage", "BFloat16Storage", "HalfStorage"};
    char k[24];
    snprintf(k, sizeof(k), "%d", key);
    pt__pk_text(b, "ctorch._utils\n_rebuild_tensor_v2\n((");  // MARK args, MARK persistent id
    pt__pk_str(b, "storage");
    pt__pk_text(b, "ctorch\n"); pt__pk_text(b, cls[t->dtype]); pt__pk_text(b, "\n");
    pt__pk_str(b, k); pt__pk_str(b, "cpu"); pt__pk_int(b, t->nbytes / dtype_size(t->dtype));
    pt__pk_text(b, "tQ");  // TUPLE, BINPERSID
    pt__pk_int(b, 0);
    pt__op(b, '(');
    for (int d = 0; d < t->ndim; d++) pt__pk_int(b, (uint64_t)t->shape[d]);
    int64_t s[PT_MAX_DIMS], acc = 1;  // torch's contiguous strides count empty dimensions as 1
    for (int d = t->ndim - 1; d >= 0; d--) { s[d] = acc; acc *= t->shape[d] > 1 ? t->shape[d] : 1; }
    pt__pk_text(b, "t(");
    for (int d = 0; d < t->ndim; d++) pt__pk_int(b, (uint64_t)s[d]);
    pt__pk_text(b, "t\x89");  // requires_grad False
    pt__pk_ordered_dict(b);    // backward hooks
    pt__pk_text(b, "tR");
}

typedef struct { const char* name; const void* data; uint64_t size; } PtZipIn;
typedef struct {
    int force_zip64;       // zip64 fields for every entry even when small (tests the zip64 paths)
    uint64_t gap;          // a hole of this many bytes (a multiple of 64) after the first entry (tests)
} PtWriteOpts;

static inline int pt__fwrite(FILE* f, const void* p, uint64_t k, uint64_t* pos, const char* file, CodaError* err) {
    if (k && fwrite(p, 1, (size_t)k, f) != (size_t)k) return coda_errorf(err, "%s: write error: %s", file, strerror(errno));
    *pos += k;
    return 0;
}

// Writes entries as a ZIP archive to f: stored, CRC-32, data 64-byte aligned through a padding extra
// field, zip64 fields wherever a size or offset does not fit 32 bits (or everywhere when forced), and
// the zip64 end records always (as torch does).
static inline int pt__zip_write(FILE* f, const char* file, const PtZipIn* in, int n, const PtWriteOpts* o, CodaError* err) {
    PtCrc* crc = (PtCrc*)coda_malloc_or_die(sizeof(PtCrc), "CRC tables");
    pt__crc_init(crc);
    PtBuf cd = {NULL, 0, 0}, h = {NULL, 0, 0};
    uint64_t pos = 0;
    int rc = 0;
    const uint64_t BIG = 0xFFFFFFFFu;
    for (int i = 0; i < n && rc == 0; i++) {
        size_t nl = strlen(in[i].name);
        uint32_t c = pt__crc(crc, 0, in[i].data, in[i].size);
        int z_size = o->force_zip64 || in[i].size >= BIG, z_off = o->force_zip64 || pos >= BIG;
        uint64_t start0 = pos + 30 + nl + (z_size ? 20 : 0) + 4, pad = (64 - start0 % 64) % 64;
        h.n = 0;
        pt__le(&h, 0x04034b50u, 4); pt__le(&h, z_size ? 45 : 20, 2); pt__le(&h, 0x0800, 2); pt__le(&h, 0, 2);
        pt__le(&h, 0, 2); pt__le(&h, 0x21, 2); pt__le(&h, c, 4);  // time 00:00, date 1980-01-01: reproducible files
        pt__le(&h, z_size ? BIG : in[i].size, 4); pt__le(&h, z_size ? BIG : in[i].size, 4);
        pt__le(&h, nl, 2); pt__le(&h, (z_size ? 20 : 0) + 4 + pad, 2);
        pt__put(&h, in[i].name, nl);
        if (z_size) { pt__le(&h, 1, 2); pt__le(&h, 16, 2); pt__le(&h, in[i].size, 8); pt__le(&h, in[i].size, 8); }
        pt__le(&h, 0x4246, 2); pt__le(&h, pad, 2);
        for (uint64_t k = 0; k < pad; k++) pt__op(&h, 'Z');
        // its central directory entry
        int xn = (z_size ? 16 : 0) + (z_off ? 8 : 0);
        pt__le(&cd, 0x02014b50u, 4); pt__le(&cd, xn ? 45 : 20, 2); pt__le(&cd, xn ? 45 : 20, 2); pt__le(&cd, 0x0800, 2);
        pt__le(&cd, 0, 2); pt__le(&cd, 0, 2); pt__le(&cd, 0x21, 2); pt__le(&cd, c, 4);
        pt__le(&cd, z_size ? BIG : in[i].size, 4); pt__le(&cd, z_size ? BIG : in[i].size, 4);
        pt__le(&cd, nl, 2); pt__le(&cd, xn ? 4 + xn : 0, 2); pt__le(&cd, 0, 2); pt__le(&cd, 0, 2); pt__le(&cd, 0, 2); pt__le(&cd, 0, 4);
        pt__le(&cd, z_off ? BIG : pos, 4);
        pt__put(&cd, in[i].name, nl);
        if (xn) {
            pt__le(&cd, 1, 2); pt__le(&cd, (uint64_t)xn, 2);
            if (z_size) { pt__le(&cd, in[i].size, 8); pt__le(&cd, in[i].size, 8); }
            if (z_off) pt__le(&cd, pos, 8);
        }
        rc = pt__fwrite(f, h.d, h.n, &pos, file, err);
        if (rc == 0) rc = pt__fwrite(f, in[i].data, in[i].size, &pos, file, err);
        if (rc == 0 && i == 0 && o->gap) {
            if (fseeko(f, (off_t)o->gap, SEEK_CUR) != 0) rc = coda_errorf(err, "%s: seek error: %s", file, strerror(errno));
            pos += o->gap;
        }
    }
    if (rc == 0) {  // zip64 end record, its locator, the end record
        uint64_t cd_off = pos, z64 = pos + cd.n;
        int zf = o->force_zip64;
        pt__le(&cd, 0x06064b50u, 4); pt__le(&cd, 44, 8); pt__le(&cd, 45, 2); pt__le(&cd, 45, 2); pt__le(&cd, 0, 4); pt__le(&cd, 0, 4);
        pt__le(&cd, (uint64_t)n, 8); pt__le(&cd, (uint64_t)n, 8); pt__le(&cd, z64 - cd_off, 8); pt__le(&cd, cd_off, 8);
        pt__le(&cd, 0x07064b50u, 4); pt__le(&cd, 0, 4); pt__le(&cd, z64, 8); pt__le(&cd, 1, 4);
        uint64_t cnt = zf || n >= 0xFFFF ? 0xFFFF : (uint64_t)n;
        pt__le(&cd, 0x06054b50u, 4); pt__le(&cd, 0, 2); pt__le(&cd, 0, 2); pt__le(&cd, cnt, 2); pt__le(&cd, cnt, 2);
        pt__le(&cd, zf || z64 - cd_off >= BIG ? BIG : z64 - cd_off, 4); pt__le(&cd, zf || cd_off >= BIG ? BIG : cd_off, 4); pt__le(&cd, 0, 2);
        rc = pt__fwrite(f, cd.d, cd.n, &pos, file, err);
    }
    free(cd.d); free(h.d); free(crc);
    return rc;
}

typedef struct { const PtTensor* t; int idx, first; } PtOrd;
static inline int pt__cmp_gn(const void* a, const void* b) {  // by group, name, index
    const PtOrd *x = (const PtOrd*)a, *y = (const PtOrd*)b;
    int c = strcmp(x->t->group, y->t->group);
    c = c ? c : strcmp(x->t->name, y->t->name);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}
static inline int pt__cmp_out(const void* a, const void* b) {  // groups by first appearance, then array order
    const PtOrd *x = (const PtOrd*)a, *y = (const PtOrd*)b;
    return x->first != y->first ? (x->first > y->first) - (x->first < y->first) : (x->idx > y->idx) - (x->idx < y->idx);
}

// Validates the tensors and writes the archive to f (`file` labels messages).
static inline int pt__write_stream(FILE* f, const char* file, const PtTensor* t, int n, const PtWriteOpts* o, CodaError* err) {
    if (n < 0 || (n > 0 && !t)) return coda_errorf(err, "%s: bad tensor list (%d tensors)", file, n);
    for (int i = 0; i < n; i++) {
        const PtTensor* x = &t[i];
        if (!memchr(x->group, 0, sizeof(x->group)) || !memchr(x->name, 0, sizeof(x->name)))
            return coda_errorf(err, "%s: tensor %d: group or name is not NUL-terminated", file, i);
        if (x->dtype != DT_F32 && x->dtype != DT_BF16 && x->dtype != DT_F16 && x->dtype != DT_F64)
            return coda_errorf(err, "%s: tensor '%s/%s': dtype %s cannot be written (F32, BF16, F16, F64)", file, x->group, x->name, dtype_name(x->dtype));
        if (x->ndim < 0 || x->ndim > PT_MAX_DIMS) return coda_errorf(err, "%s: tensor '%s/%s': %d dimensions (0 to %d)", file, x->group, x->name, x->ndim, PT_MAX_DIMS);
        size_t bytes = dtype_size(x->dtype);
        for (int d = 0; d < x->ndim; d++)
            if (x->shape[d] < 0 || !size_mul_ok(bytes, (size_t)x->shape[d], &bytes))
                return coda_errorf(err, "%s: tensor '%s/%s': bad shape (negative or overflowing)", file, x->group, x->name);
        if (bytes != x->nbytes || (bytes && !x->data))
            return coda_errorf(err, "%s: tensor '%s/%s': nbytes %zu, but its shape and dtype need %zu%s", file, x->group, x->name, x->nbytes, bytes,
                               bytes && !x->data ? " (and data is NULL)" : "");
    }
    PtOrd* ord = (PtOrd*)coda_malloc_or_die(sizeof(PtOrd) * ((size_t)n + 1), "tensor order");
    for (int i = 0; i < n; i++) { ord[i].t = &t[i]; ord[i].idx = i; }
    qsort(ord, (size_t)n, sizeof(PtOrd), pt__cmp_gn);
    for (int i = 0, run = 0; i < n; i++) {  // runs of one group: each gets its smallest index as `first`
        if (i && strcmp(ord[i - 1].t->group, ord[i].t->group) == 0 && strcmp(ord[i - 1].t->name, ord[i].t->name) == 0) {
            int rc = coda_errorf(err, "%s: tensor '%s/%s' is given twice", file, ord[i].t->group, ord[i].t->name);
            free(ord);
            return rc;
        }
        if (i + 1 == n || strcmp(ord[i].t->group, ord[i + 1].t->group) != 0) {
            int first = ord[run].idx;
            for (int k = run; k <= i; k++) first = ord[k].idx < first ? ord[k].idx : first;
            for (int k = run; k <= i; k++) ord[k].first = first;
            run = i + 1;
        }
    }
    qsort(ord, (size_t)n, sizeof(PtOrd), pt__cmp_out);
    // The pickle: {group: OrderedDict({name: tensor, ...}), ...}; storage k is the k-th tensor pickled.
    PtBuf pk = {NULL, 0, 0};
    pt__pk_text(&pk, "\x80\x02}(");
    for (int i = 0; i < n; i++) {
        if (i == 0 || ord[i].first != ord[i - 1].first) {
            if (i) pt__op(&pk, 'u');
            pt__pk_str(&pk, ord[i].t->group);
            pt__pk_ordered_dict(&pk);
            pt__op(&pk, '(');
        }
        pt__pk_str(&pk, ord[i].t->name);
        pt__pk_tensor(&pk, ord[i].t, i);
    }
    pt__pk_text(&pk, n ? "uu." : "u.");
    PtZipIn* in = (PtZipIn*)coda_malloc_or_die(sizeof(PtZipIn) * ((size_t)n + 3), "zip entries");
    char* names = (char*)coda_malloc_or_die(32 * ((size_t)n + 1), "zip entry names");
    in[0].name = "archive/data.pkl"; in[0].data = pk.d; in[0].size = pk.n;
    in[1].name = "archive/byteorder"; in[1].data = "little"; in[1].size = 6;
    for (int i = 0; i < n; i++) {
        snprintf(names + 32 * i, 32, "archive/data/%d", i);
        in[i + 2].name = names + 32 * i; in[i + 2].data = ord[i].t->data; in[i + 2].size = ord[i].t->nbytes;
    }
    in[n + 2].name = "archive/version"; in[n + 2].data = "3\n"; in[n + 2].size = 2;
    int rc = pt__zip_write(f, file, in, n + 3, o, err);
    free(in); free(names); free(pk.d); free(ord);
    return rc;
}

// Internal: pt_write with test options. Writes path.tmp.<pid>.<k>, then renames it onto path.
static inline int pt__write_opts(const char* path, const PtTensor* t, int n, const PtWriteOpts* o, CodaError* err) {
    size_t tl = strlen(path) + 64;
    char* tmp = (char*)coda_malloc_or_die(tl, "temp path");
    FILE* f = coda_create_temp_beside(path, tmp, tl, err);
    if (!f) { free(tmp); return -1; }
    int rc = pt__write_stream(f, path, t, n, o, err);
    if (rc == 0 && (fflush(f) != 0 || fsync(fileno(f)) != 0)) rc = coda_errorf(err, "%s: write error: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && rc == 0) rc = coda_errorf(err, "%s: write error: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0) rc = coda_errorf(err, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (rc != 0) unlink(tmp);
    free(tmp);
    return rc;
}

// Writes {group: {name: tensor, ...}, ...} (groups in order of first appearance in t, tensors in
// array order) as an archive torch.load(path, weights_only=True) reads.
static inline int pt_write(const char* path, const PtTensor* t, int n, CodaError* err) {
    PtWriteOpts o;
    memset(&o, 0, sizeof(o));
    return pt__write_opts(path, t, n, &o, err);
}
