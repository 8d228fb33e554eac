// test_torch_pt.h — llmc/torch_pt.h, torch.save's zip format for {group: {name: tensor}}:
//   * pt_write -> pt_read round trips, bit for bit (bf16 / fp32 / fp16 / fp64, 0 to 8 dimensions, empty
//     tensors, many groups given interleaved), data 64-byte aligned; the zip64 fields (forced on small
//     files, and real offsets past 4 GiB in a sparse file);
//   * the file torch 1.13 itself wrote (dev/fuzz/corpus/torch_pt/seed-torch-1.13, made by
//     dev/test/torch_pt_check.py write: OrderedDicts, _metadata, memo, a storage shared by two views)
//     reads back with the values of the pattern both sides compute;
//   * refusals, each with its message: truncation at every length, every byte flipped, a bad CRC,
//     damaged pickles, a non-zip or legacy file, an unknown storage type, a missing or short storage
//     record, non-contiguous tensors, foreign globals, other object structures;
//   * with a real torch (/usr/bin/python3 with torch; else SKIP): torch's file -> pt_read, and pt_write
//     (plain, zip64, past 4 GiB) -> torch.load(weights_only=True), compared bitwise.
#pragma once
#include <sys/wait.h>
#include "../../llmc/json.h"
#include "../../llmc/torch_pt.h"

#define PTT_TORCH_SEED "dev/fuzz/corpus/torch_pt/seed-torch-1.13"
#define PTT_CHECK_PY "dev/test/torch_pt_check.py"
// Appends a string literal's bytes, NULs included.
#define PTT_PUT(b, lit) pt__put((b), (lit), sizeof(lit) - 1)

// Element k of pattern j, as torch_pt_check.py's pattern(): arbitrary bits (NaN payloads included).
static void ptt_fill(void* dst, int j, size_t esize, size_t numel, size_t first) {
    for (size_t k = first; k < first + numel; k++) {
        uint64_t v = (uint64_t)(j + 1) * 0x9E3779B97F4A7C15ull + (uint64_t)k * 0xC2B2AE3D27D4EB4Full + (uint64_t)(k >> 3) * 0x165667B1ull;
        v ^= v >> 29;
        for (size_t b = 0; b < esize; b++) ((uint8_t*)dst)[(k - first) * esize + b] = (uint8_t)(v >> (8 * b));
    }
}
static size_t ptt_numel(const PtTensor* t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}
// A tensor with pattern j's values (data malloc'd).
static PtTensor ptt_make(const char* group, const char* name, DType dt, int ndim, const int64_t* shape, int j) {
    PtTensor t;
    memset(&t, 0, sizeof(t));
    snprintf(t.group, sizeof(t.group), "%s", group);
    snprintf(t.name, sizeof(t.name), "%s", name);
    t.dtype = dt;
    t.ndim = ndim;
    for (int d = 0; d < ndim; d++) t.shape[d] = shape[d];
    t.nbytes = ptt_numel(&t) * dtype_size(dt);
    t.data = malloc(t.nbytes ? t.nbytes : 1);
    ptt_fill(t.data, j, dtype_size(dt), ptt_numel(&t), 0);
    return t;
}
static void ptt_free_made(PtTensor* t, int n) { for (int i = 0; i < n; i++) free(t[i].data); }

// Same tensors in the same order, bit for bit; reports the first difference.
static int ptt_same(const PtTensor* a, int na, const PtTensor* b, int nb, const char* what) {
    if (na != nb) { CHECK(0, "%s: %d tensors, expected %d", what, na, nb); return 0; }
    for (int i = 0; i < na; i++) {
        int same = !strcmp(a[i].group, b[i].group) && !strcmp(a[i].name, b[i].name) && a[i].dtype == b[i].dtype && a[i].ndim == b[i].ndim &&
                   a[i].nbytes == b[i].nbytes;
        for (int d = 0; same && d < a[i].ndim; d++) same = a[i].shape[d] == b[i].shape[d];
        if (same && a[i].nbytes) same = memcmp(a[i].data, b[i].data, a[i].nbytes) == 0;
        if (!same) {
            CHECK(0, "%s: tensor %d is %s/%s %s, expected %s/%s %s (or its shape or bytes differ)", what, i, a[i].group, a[i].name,
                  dtype_name(a[i].dtype), b[i].group, b[i].name, dtype_name(b[i].dtype));
            return 0;
        }
    }
    return 1;
}

static uint8_t* ptt_slurp(const char* path, size_t* n) {
    FILE* f = fopen(path, "rb");
    if (!f) { *n = 0; return NULL; }
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t* b = (uint8_t*)malloc(*n ? *n : 1);
    if (fread(b, 1, *n, f) != *n) { free(b); b = NULL; }
    fclose(f);
    return b;
}

// pt_parse of bytes [0, n) from an exact-size copy must fail with `want` (and the name) in the message.
static void ptt_refused(const uint8_t* bytes, size_t n, const char* want, const char* what) {
    uint8_t* copy = (uint8_t*)malloc(n ? n : 1);
    if (n) memcpy(copy, bytes, n);
    PtTensor* t = NULL;
    int nt = 0;
    CodaError err;
    err.msg[0] = 0;
    int rc = pt_parse(copy, n, "bad.pt", &t, &nt, &err);
    CHECK(rc != 0, "%s: accepted (%d tensors)", what, nt);
    if (rc == 0) pt_free(t, nt);
    else CHECK(strstr(err.msg, "bad.pt") && strstr(err.msg, want), "%s: expected '%s' in: %s", what, want, err.msg);
    free(copy);
}

// An archive of these entries, in memory (malloc'd, *n bytes), through the writer's zip layer.
static uint8_t* ptt_zip(const PtZipIn* in, int n_in, int force_zip64, size_t* n) {
    char* buf = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    PtWriteOpts o;
    memset(&o, 0, sizeof(o));
    o.force_zip64 = force_zip64;
    CodaError err;
    int rc = pt__zip_write(f, "mem.pt", in, n_in, &o, &err);
    fclose(f);
    CHECK(rc == 0, "%s", err.msg);
    *n = len;
    return (uint8_t*)buf;
}
// The file pt__write_stream makes of t, in memory.
static uint8_t* ptt_write_mem(const PtTensor* t, int n, int force_zip64, size_t* len) {
    char* buf = NULL;
    FILE* f = open_memstream(&buf, len);
    PtWriteOpts o;
    memset(&o, 0, sizeof(o));
    o.force_zip64 = force_zip64;
    CodaError err;
    int rc = pt__write_stream(f, "mem.pt", t, n, &o, &err);
    fclose(f);
    CHECK(rc == 0, "%s", err.msg);
    return (uint8_t*)buf;
}

// A tensor the way torch pickles one, with every field chosen by the caller.
static void ptt_pk_tensor(PtBuf* b, const char* cls, const char* key, uint64_t numel, uint64_t offset, int ndim, const int64_t* size,
                          const int64_t* stride) {
    pt__pk_text(b, "ctorch._utils\n_rebuild_tensor_v2\n((");
    pt__pk_str(b, "storage");
    pt__pk_text(b, "ctorch\n"); pt__pk_text(b, cls); pt__pk_text(b, "\n");
    pt__pk_str(b, key);
    pt__pk_str(b, "cpu");
    pt__pk_int(b, numel);
    pt__pk_text(b, "tQ");
    pt__pk_int(b, offset);
    pt__op(b, '(');
    for (int d = 0; d < ndim; d++) pt__pk_int(b, (uint64_t)size[d]);
    pt__pk_text(b, "t(");
    for (int d = 0; d < ndim; d++) pt__pk_int(b, (uint64_t)stride[d]);
    pt__op(b, 't');
    pt__op(b, 0x89);
    pt__pk_ordered_dict(b);
    pt__pk_text(b, "tR");
}
// {"g": {"w": <that tensor>}} with storage record data/0 of `bytes` bytes (pattern 3), as a zip.
static uint8_t* ptt_one_tensor_file(const char* cls, uint64_t numel, uint64_t offset, int ndim, const int64_t* size, const int64_t* stride,
                                    size_t bytes, size_t* n) {
    PtBuf pk = {NULL, 0, 0};
    pt__pk_text(&pk, "\x80\x02}(");
    pt__pk_str(&pk, "g");
    pt__pk_text(&pk, "}(");
    pt__pk_str(&pk, "w");
    ptt_pk_tensor(&pk, cls, "0", numel, offset, ndim, size, stride);
    pt__pk_text(&pk, "uu.");
    uint8_t* data = (uint8_t*)malloc(bytes + 1);
    ptt_fill(data, 3, 1, bytes, 0);
    PtZipIn in[3] = {{"archive/data.pkl", pk.d, pk.n}, {"archive/data/0", data, bytes}, {"archive/version", "3\n", 2}};
    uint8_t* z = ptt_zip(in, 3, 0, n);
    free(pk.d);
    free(data);
    return z;
}

// ---- round trips ----

// Tensors of every dtype, 0 to 4 dimensions (and 8), empty ones, [1, 16] and [3], in 12 groups given
// interleaved (group (5i) mod 12 for the i-th), so group order is by first appearance.
static int ptt_sample(PtTensor* t) {
    static const DType dts[4] = {DT_BF16, DT_F32, DT_F16, DT_F64};
    static const int64_t shapes[9][8] = {{1, 16}, {3}, {4, 8}, {2, 3, 5}, {2, 1, 3, 2}, {0, 5}, {7}, {}, {1, 2, 1, 2, 1, 2, 1, 2}};
    static const int ndims[9] = {2, 1, 2, 3, 4, 2, 1, 0, 8};
    int n = 0;
    for (int i = 0; i < 60; i++) {
        char g[32], nm[64];
        snprintf(g, sizeof(g), "layer_%d", (5 * i) % 12);
        snprintf(nm, sizeof(nm), "coda.t%d.weight", i);
        int s = i % 9;
        t[n++] = ptt_make(g, nm, dts[(i / 9) % 4 == 3 && i % 2 ? 3 : i % 2], ndims[s], shapes[s], i);  // mostly bf16/fp32
    }
    t[n++] = ptt_make("layer_0", "half", DT_F16, 1, shapes[1], 70);
    t[n++] = ptt_make("layer_0", "double", DT_F64, 2, shapes[0], 71);
    return n;
}
// t reordered as the reader returns it: groups by first appearance, each in array order.
static void ptt_expected_order(const PtTensor* t, int n, PtTensor* out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(t[j].group, t[i].group);
        if (seen) continue;
        for (int j = i; j < n; j++)
            if (!strcmp(t[j].group, t[i].group)) out[k++] = t[j];
    }
}

TEST(torch_pt_crc32_known_values) {
    PtCrc c;
    pt__crc_init(&c);
    CHECK(pt__crc(&c, 0, "123456789", 9) == 0xCBF43926u, "crc32(123456789) = %08x", pt__crc(&c, 0, "123456789", 9));
    CHECK(pt__crc(&c, 0, "", 0) == 0, "");
    char buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (char)(i * 31 + 7);
    for (int cut = 0; cut <= 1000; cut += 37)  // resumable in any split (the 8-byte steps and the tail agree)
        CHECK(pt__crc(&c, pt__crc(&c, 0, buf, (uint64_t)cut), buf + cut, (uint64_t)(1000 - cut)) == pt__crc(&c, 0, buf, 1000), "split at %d", cut);
}

TEST(torch_pt_round_trip_every_dtype_dims_and_groups_bitwise) {
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof(dir), "torch_pt");
    snprintf(path, sizeof(path), "%s/coda_adapters.pt", dir);
    PtTensor t[64], want[64];
    int n = ptt_sample(t);
    ptt_expected_order(t, n, want);
    CodaError err;
    CHECK(pt_write(path, t, n, &err) == 0, "%s", err.msg);
    PtTensor* back = NULL;
    int nb = 0;
    CHECK(pt_read(path, &back, &nb, &err) == 0, "%s", err.msg);
    ptt_same(back, nb, want, n, "pt_write -> pt_read");
    pt_free(back, nb);
    // the archive: prefix archive/, the records torch writes, every entry's data 64-byte aligned
    size_t len;
    uint8_t* bytes = ptt_slurp(path, &len);
    PtZip z;
    PtCrc crc;
    pt__crc_init(&crc);
    CHECK(bytes && pt__zip_open(&z, bytes, len, path, &err) == 0, "%s", err.msg);
    z.crc = &crc;
    CHECK(!strcmp(z.prefix, "archive/") && z.ne == (size_t)n + 3, "prefix %s, %zu entries", z.prefix, z.ne);
    const uint8_t* rec = NULL;
    PtZipEntry* e = pt__zip_find(&z, "version");
    CHECK(e && pt__zip_data(&z, e, &rec, &err) == 0 && e->size == 2 && !memcmp(rec, "3\n", 2), "version record");
    e = pt__zip_find(&z, "byteorder");
    CHECK(e && pt__zip_data(&z, e, &rec, &err) == 0 && e->size == 6 && !memcmp(rec, "little", 6), "byteorder record");
    for (size_t i = 0; i < z.ne; i++)
        CHECK(pt__zip_data(&z, &z.e[i], &rec, &err) == 0 && (rec - bytes) % 64 == 0, "entry %.*s at %lld", (int)z.e[i].name_len,
              z.e[i].name, (long long)(rec - bytes));
    pt__zip_free(&z);
    free(bytes);
    // written again onto the same name: replaced, and no temporary file is left beside it
    CHECK(pt_write(path, want, 3, &err) == 0, "%s", err.msg);
    CHECK(pt_read(path, &back, &nb, &err) == 0, "%s", err.msg);
    ptt_same(back, nb, want, 3, "rewritten");
    pt_free(back, nb);
    int files = 0;
    DIR* d = opendir(dir);
    struct dirent* de;
    while (d && (de = readdir(d)) != NULL) files += de->d_name[0] != '.';
    if (d) closedir(d);
    CHECK(files == 1, "%d files in the directory (a temporary file left behind?)", files);
    // an empty dict reads back as no tensors
    CHECK(pt_write(path, NULL, 0, &err) == 0 && pt_read(path, &back, &nb, &err) == 0 && nb == 0, "%s", err.msg);
    pt_free(back, nb);
    ptt_free_made(t, n);
    test_rmtree(dir);
}

TEST(torch_pt_zip64_fields_round_trip) {
    PtTensor t[64], want[64];
    int n = ptt_sample(t);
    ptt_expected_order(t, n, want);
    size_t len;
    uint8_t* b = ptt_write_mem(t, n, 1, &len);  // zip64 extra fields for every entry, sentinels in the end record
    CHECK(len > 22 && pt__rd16(b + len - 22 + 10) == 0xFFFF && pt__rd32(b + len - 22 + 16) == 0xFFFFFFFFu, "end record defers to zip64");
    PtZip z;
    CodaError err;
    CHECK(pt__zip_open(&z, b, len, "z64.pt", &err) == 0, "%s", err.msg);
    const uint8_t* cd = b + z.cd_offset;
    CHECK(pt__rd32(cd + 20) == 0xFFFFFFFFu && pt__rd32(cd + 42) == 0xFFFFFFFFu, "sizes and offset in the zip64 extra field");
    pt__zip_free(&z);
    PtTensor* back = NULL;
    int nb = 0;
    CHECK(pt_parse(b, len, "z64.pt", &back, &nb, &err) == 0, "%s", err.msg);
    ptt_same(back, nb, want, n, "zip64 fields");
    pt_free(back, nb);
    // a zip64 value the directory defers to but no zip64 field holds: rename entry 0's extra field
    size_t x = (size_t)(cd - b) + 46 + pt__rd16(cd + 28);
    b[x] = 0x99;
    ptt_refused(b, len, "lacks the zip64 sizes or offset its header defers to", "zip64 field missing");
    free(b);
    ptt_free_made(t, n);
}

// Offsets past 4 GiB for real: a 4.5 GiB hole after data.pkl (a sparse file: no disk is written).
TEST(torch_pt_zip64_offsets_past_4gib_in_a_sparse_file) {
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof(dir), "torch_pt64");
    snprintf(path, sizeof(path), "%s/probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    int sparse = fd >= 0 && ftruncate(fd, 64 << 20) == 0;
    struct stat sb;
    sparse = sparse && fstat(fd, &sb) == 0 && (long long)sb.st_blocks * 512 < (16 << 20);
    if (fd >= 0) close(fd);
    if (!sparse) { test_skip("the temporary directory's file system has no sparse files"); test_rmtree(dir); return; }
    snprintf(path, sizeof(path), "%s/big.pt", dir);
    PtTensor t[64], want[64];
    int n = ptt_sample(t);
    ptt_expected_order(t, n, want);
    PtWriteOpts o;
    memset(&o, 0, sizeof(o));
    o.gap = 9ull << 29;
    CodaError err;
    CHECK(pt__write_opts(path, t, n, &o, &err) == 0, "%s", err.msg);
    CHECK(stat(path, &sb) == 0 && (uint64_t)sb.st_size > o.gap, "size %lld", (long long)sb.st_size);
    PtTensor* back = NULL;
    int nb = 0;
    CHECK(pt_read(path, &back, &nb, &err) == 0, "%s", err.msg);
    ptt_same(back, nb, want, n, "offsets past 4 GiB");
    pt_free(back, nb);
    ptt_free_made(t, n);
    test_rmtree(dir);
}

TEST(torch_pt_writer_refuses_bad_input) {
    const int64_t s[2] = {2, 3};
    PtTensor t[2] = {ptt_make("g", "a", DT_F32, 2, s, 1), ptt_make("g", "b", DT_BF16, 2, s, 2)};
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof(dir), "torch_ptw");
    snprintf(path, sizeof(path), "%s/x.pt", dir);
    CodaError err;
    struct { const char* want; } cases[6] = {{"is given twice"}, {"nbytes 20, but its shape and dtype need 24"}, {"dtype I32 cannot be written"},
                                             {"9 dimensions"}, {"(and data is NULL)"}, {"not NUL-terminated"}};
    for (int c = 0; c < 6; c++) {
        PtTensor u[2] = {t[0], t[1]};
        if (c == 0) snprintf(u[1].name, sizeof(u[1].name), "a");
        if (c == 1) u[0].nbytes = 20;
        if (c == 2) u[1].dtype = DT_I32;
        if (c == 3) u[1].ndim = 9;
        if (c == 4) u[1].data = NULL;
        if (c == 5) memset(u[0].group, 'x', sizeof(u[0].group));
        err.msg[0] = 0;
        CHECK(pt_write(path, u, 2, &err) != 0 && strstr(err.msg, cases[c].want) && strstr(err.msg, path), "case %d: %s", c, err.msg);
        CHECK(access(path, F_OK) != 0, "case %d: a refused write left a file", c);
    }
    snprintf(path, sizeof(path), "%s/no/such/dir/x.pt", dir);
    CHECK(pt_write(path, t, 2, &err) != 0 && strstr(err.msg, "cannot create temporary file"), "%s", err.msg);
    ptt_free_made(t, 2);
    test_rmtree(dir);
}

// ---- torch's own file ----

// The tensors torch_pt_check.py's Layer(L).state_dict() holds, in state_dict order, with their patterns.
static int ptt_torch_expected(PtTensor* t) {
    static const struct { const char* name; int j; DType dt; int ndim; int64_t shape[4]; size_t first; int layer0_only; } E[11] = {
        {"coda.theta", 4, DT_F32, 1, {3}, 0, 0},          {"coda.cube", 5, DT_BF16, 3, {2, 3, 2}, 0, 0},
        {"coda.quad", 6, DT_F32, 4, {2, 1, 3, 2}, 0, 0},  {"coda.scale", 7, DT_F32, 0, {0}, 0, 0},
        {"coda.view_a", 8, DT_F32, 1, {4}, 2, 0},         {"coda.view_b", 8, DT_F32, 2, {2, 3}, 6, 0},  // views of one storage
        {"coda.h16", 9, DT_F16, 1, {5}, 0, 1},            {"coda.f64", 10, DT_F64, 2, {2, 2}, 0, 1},
        {"coda.q_proj.weight", 1, DT_BF16, 2, {4, 8}, 0, 0}, {"coda.lambda_proj.weight", 2, DT_F32, 2, {1, 16}, 0, 0},
        {"coda.lambda_proj.bias", 3, DT_F32, 1, {1}, 0, 0}};
    int n = 0;
    for (int layer = 0; layer < 2; layer++)
        for (int i = 0; i < 11; i++) {
            if (E[i].layer0_only && layer) continue;
            char g[32];
            snprintf(g, sizeof(g), "layer_%d", layer);
            t[n] = ptt_make(g, E[i].name, E[i].dt, E[i].ndim, E[i].shape, 100 * layer + E[i].j);
            ptt_fill(t[n].data, 100 * layer + E[i].j, dtype_size(E[i].dt), ptt_numel(&t[n]), E[i].first);
            n++;
        }
    return n;
}

TEST(torch_pt_reads_the_file_torch_1_13_wrote) {
    PtTensor* back = NULL;
    int nb = 0;
    CodaError err;
    CHECK(pt_read(PTT_TORCH_SEED, &back, &nb, &err) == 0, "%s (the suite runs from the repository root)", err.msg);
    PtTensor want[32];
    int n = ptt_torch_expected(want);
    ptt_same(back, nb, want, n, PTT_TORCH_SEED);
    pt_free(back, nb);
    // pt_write's file of the same tensors reads back the same
    size_t len;
    uint8_t* b = ptt_write_mem(want, n, 0, &len);
    CHECK(pt_parse(b, len, "rewritten.pt", &back, &nb, &err) == 0, "%s", err.msg);
    ptt_same(back, nb, want, n, "rewritten");
    pt_free(back, nb);
    free(b);
    ptt_free_made(want, n);
}

// What torch may write besides: protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL), memo
// references (BINGET, LONG_BINGET), LONG1, an nn.Parameter (_rebuild_parameter), a BUILD state with
// a list, a float and None, another prefix and .data/version, and two tensors sharing one storage.
TEST(torch_pt_reads_protocol_4_memo_parameters_and_shared_storages) {
    const int64_t s4[1] = {4}, st1[1] = {1};
    PtBuf pk = {NULL, 0, 0};
    PTT_PUT(&pk, "\x80\x04\x95");
    pt__le(&pk, 0, 8);  // the frame's length, set below
    PTT_PUT(&pk, "}\x94(\x8c\x01g\x94\x8c\x0b" "collections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94(");  // memo 4: OrderedDict
    pt__pk_str(&pk, "a");
    ptt_pk_tensor(&pk, "FloatStorage", "0", 10, 0, 1, s4, st1);  // elements 0..3 of storage 0
    pt__pk_str(&pk, "p");  // _rebuild_parameter(_rebuild_tensor_v2(storage 0 on cuda:0, 5, (2, 2), (2, 1), ...), True, OrderedDict())
    pt__pk_text(&pk, "ctorch._utils\n_rebuild_parameter\n(ctorch._utils\n_rebuild_tensor_v2\n((");
    pt__pk_str(&pk, "storage");
    pt__pk_text(&pk, "ctorch\nFloatStorage\n");
    pt__pk_str(&pk, "0");
    pt__pk_str(&pk, "cuda:0");
    PTT_PUT(&pk, "K\x0atQ\x8a\x01\x05(K\x02K\x02t(K\x02K\x01t\x89h\x04)RtR\x88j\x04\x00\x00\x00)RtR");
    PTT_PUT(&pk, "u}(X\x09\x00\x00\x00_metadata](K\x01G\x3f\xf0\x00\x00\x00\x00\x00\x00Neub");  // BUILD: state ignored
    pt__pk_text(&pk, "u.");
    uint64_t frame = pk.n - 11;
    for (int i = 0; i < 8; i++) pk.d[3 + i] = (uint8_t)(frame >> (8 * i));
    float base[10];
    for (int i = 0; i < 10; i++) base[i] = 0.5f * (float)i - 1.0f;
    PtZipIn in[3] = {{"x/data.pkl", pk.d, pk.n}, {"x/data/0", base, sizeof(base)}, {"x/.data/version", "3", 1}};
    size_t len;
    uint8_t* z = ptt_zip(in, 3, 0, &len);
    PtTensor* back = NULL;
    int nb = 0;
    CodaError err;
    CHECK(pt_parse(z, len, "p4.pt", &back, &nb, &err) == 0, "%s", err.msg);
    if (nb == 2) {
        CHECK(!strcmp(back[0].group, "g") && !strcmp(back[0].name, "a") && back[0].ndim == 1 && back[0].shape[0] == 4, "");
        CHECK(!strcmp(back[1].name, "p") && back[1].ndim == 2 && back[1].shape[0] == 2 && back[1].shape[1] == 2, "");
        CHECK(!memcmp(back[0].data, base, 16) && !memcmp(back[1].data, base + 5, 16), "the shared storage's slices");
    } else {
        CHECK(0, "%d tensors", nb);
    }
    pt_free(back, nb);
    free(z);
    free(pk.d);
}

// Offset in the file of entry <prefix>rec's data (its local header's lengths), or 0.
static size_t ptt_data_at(const uint8_t* b, size_t len, const char* rec) {
    PtZip z;
    CodaError err;
    size_t at = 0;
    if (pt__zip_open(&z, b, len, "x", &err) == 0) {
        PtZipEntry* e = pt__zip_find(&z, rec);
        if (e) at = (size_t)e->local + 30 + pt__rd16(b + e->local + 26) + pt__rd16(b + e->local + 28);
    }
    pt__zip_free(&z);
    CHECK(at != 0, "no entry %s", rec);
    return at;
}

// ---- refusals ----

TEST(torch_pt_refuses_truncated_damaged_and_foreign_files) {
    const int64_t s[2] = {2, 3};
    PtTensor t[2] = {ptt_make("layer_0", "coda.q_proj.weight", DT_BF16, 2, s, 1), ptt_make("layer_1", "coda.theta", DT_F32, 1, s, 2)};
    size_t len;
    uint8_t* good = ptt_write_mem(t, 2, 0, &len);
    // truncated at every length
    for (size_t cut = 0; cut < len; cut++) {
        CodaError err;
        PtTensor* back;
        int nb;
        if (pt_parse(good, cut, "bad.pt", &back, &nb, &err) == 0) { CHECK(0, "truncated to %zu bytes: accepted", cut); pt_free(back, nb); }
    }
    ptt_refused(good, len - 1, "zip archive without its end record (truncated", "one byte short");
    ptt_refused(good, 0, "not a torch.save file", "empty");
    // every byte flipped: refused, or (a byte no check covers: padding, times, attributes) the same tensors
    int refused = 0;
    for (size_t at = 0; at < len; at++) {
        good[at] ^= 0xFF;
        CodaError err;
        PtTensor* back;
        int nb;
        if (pt_parse(good, len, "bad.pt", &back, &nb, &err) == 0) { ptt_same(back, nb, t, 2, "a flipped byte"); pt_free(back, nb); }
        else { refused++; CHECK(strstr(err.msg, "bad.pt") != NULL, "%s", err.msg); }
        good[at] ^= 0xFF;
    }
    CHECK(refused > (int)len / 2, "only %d of %zu flipped bytes refused", refused, len);
    // a bad CRC: a byte of data/0, and a byte of the pickle
    size_t at = ptt_data_at(good, len, "data/0");
    good[at] ^= 1;
    ptt_refused(good, len, "entry 'archive/data/0' is damaged: CRC-32", "bad CRC in data/0");
    good[at] ^= 1;
    at = ptt_data_at(good, len, "data.pkl");
    good[at + 3] ^= 1;
    ptt_refused(good, len, "entry 'archive/data.pkl' is damaged: CRC-32", "bad CRC in data.pkl");
    good[at + 3] ^= 1;
    // method 8 (deflate) in the central directory
    size_t cd = 0;
    for (size_t i = 0; i + 4 <= len; i++) if (pt__rd32(good + i) == 0x02014b50u) { cd = i; break; }
    good[cd + 10] = 8;
    ptt_refused(good, len, "is compressed (method 8)", "compressed entry");
    good[cd + 10] = 0;
    // not zip files
    const char* text = "layer_0,coda.theta\n1,2,3\n";
    ptt_refused((const uint8_t*)text, strlen(text), "not a torch.save file (no zip end record", "text");
    const uint8_t legacy[16] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e, 0x00};
    ptt_refused(legacy, sizeof(legacy), "legacy format", "legacy torch.save");
    free(good);
    ptt_free_made(t, 2);
}

TEST(torch_pt_refuses_bad_tensors_and_structures) {
    const int64_t s4[1] = {4}, st1[1] = {1}, s24[2] = {2, 4}, st12[2] = {1, 2}, st41[2] = {4, 1};
    size_t n;
    uint8_t* z;
    z = ptt_one_tensor_file("FloatStorage", 8, 0, 2, s24, st41, 32, &n);  // the good one
    PtTensor* back;
    int nb;
    CodaError err;
    CHECK(pt_parse(z, n, "ok.pt", &back, &nb, &err) == 0 && nb == 1, "%s", err.msg);
    if (nb == 1) pt_free(back, nb);
    free(z);
    z = ptt_one_tensor_file("LongStorage", 4, 0, 1, s4, st1, 32, &n);
    ptt_refused(z, n, "tensor 'g/w': unsupported storage type LongStorage", "unknown storage type");
    free(z);
    z = ptt_one_tensor_file("FloatStorage", 8, 0, 2, s24, st12, 32, &n);
    ptt_refused(z, n, "tensor 'g/w' is not contiguous: dimension 1 has stride 2, 1 expected", "non-contiguous");
    free(z);
    z = ptt_one_tensor_file("FloatStorage", 5, 3, 1, s4, st1, 20, &n);
    ptt_refused(z, n, "elements [3, +4) lie outside its storage of 5", "past the storage");
    free(z);
    z = ptt_one_tensor_file("FloatStorage", 4, 0, 1, s4, st1, 12, &n);
    ptt_refused(z, n, "storage record archive/data/0 holds 12 bytes, not the 4 x 4 bytes", "short record");
    free(z);
    // pickles wrapped in an otherwise valid archive (correct CRCs): what the object machine refuses
#define PTT_PK(lit) lit, sizeof(lit) - 1
    static const struct { const char* pickle; size_t len; const char* want; } P[] = {
        {PTT_PK("\x80\x02]q\x00."), "the pickled object is a list, not a dict of state dicts"},
        {PTT_PK("\x80\x02}(X\x01\x00\x00\x00g}(X\x01\x00\x00\x00wX\x01\x00\x00\x00vuu."), "'g/w' is a str, not a tensor"},
        {PTT_PK("\x80\x02\x63os\nsystem\nX\x02\x00\x00\x00lsR."), "the pickle refers to os.system"},
        {PTT_PK("\x80\x02}(h\x05u."), "memo entry 5 read before it was written"},
        {PTT_PK("\x80\x02}(\xffu."), "unsupported pickle opcode 0xff"},
        {PTT_PK("\x80\x02}("), "truncated pickle: no STOP opcode"},
        {PTT_PK("\x80\x02}.N"), "1 bytes after STOP"},
        {PTT_PK("\x80\x02}(X\x01\x00\x00\x00g}X\x01\x00\x00\x00g}u."), "group name 'g' appears twice"},
        {PTT_PK("\x80\x02}(X\x01\x00\x00\x00g}(X\x01\x00\x00\x00" "aNX\x01\x00\x00\x00" "aNuu."), "tensor name 'a' appears twice in group g"},
        {PTT_PK("\x80\x02}(X\x01\x00\x00\x00gK\x01u."), "group 'g' is an int, not a dict of tensors"},
        {PTT_PK("\x80\x02u."), "no MARK to pop to"},
        {PTT_PK("\x80\x02s."), "pickle stack underflow"},
        {PTT_PK("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00."), "an integer of 9 bytes"},
        {PTT_PK("\x80\x02X\xff\xff\xff\x00" "ab."), "string of 16777215 bytes runs past the pickle"},
        {PTT_PK("\x80\x02}r\xff\xff\xff\x7f."), "memo index 2147483647 is beyond"},
        {PTT_PK("\x80\x06}."), "pickle protocol 6"},
    };
    for (size_t i = 0; i < sizeof(P) / sizeof(P[0]); i++) {
        PtZipIn in[2] = {{"archive/data.pkl", P[i].pickle, P[i].len}, {"archive/version", "3\n", 2}};
        z = ptt_zip(in, 2, 0, &n);
        char what[32];
        snprintf(what, sizeof(what), "pickle %zu", i);
        ptt_refused(z, n, P[i].want, what);
        free(z);
    }
    // a bare state dict: its values are tensors
    {
        PtBuf pk = {NULL, 0, 0};
        pt__pk_text(&pk, "\x80\x02}(");
        pt__pk_str(&pk, "w");
        ptt_pk_tensor(&pk, "FloatStorage", "0", 4, 0, 1, s4, st1);
        pt__pk_text(&pk, "u.");
        float v[4] = {1, 2, 3, 4};
        PtZipIn in[3] = {{"archive/data.pkl", pk.d, pk.n}, {"archive/data/0", v, 16}, {"archive/version", "3\n", 2}};
        z = ptt_zip(in, 3, 0, &n);
        ptt_refused(z, n, "this is a single state dict", "bare state dict");
        free(z);
        // the same tensor in a group, but the archive lacks data/0, or version, or says big-endian
        pk.n = 0;
        pt__pk_text(&pk, "\x80\x02}(");
        pt__pk_str(&pk, "g");
        pt__pk_text(&pk, "}(");
        pt__pk_str(&pk, "w");
        ptt_pk_tensor(&pk, "FloatStorage", "1", 4, 0, 1, s4, st1);
        pt__pk_text(&pk, "uu.");
        PtZipIn in2[4] = {{"archive/data.pkl", pk.d, pk.n}, {"archive/data/0", v, 16}, {"archive/version", "3\n", 2}, {"archive/byteorder", "big", 3}};
        z = ptt_zip(in2, 3, 0, &n);
        ptt_refused(z, n, "tensor 'g/w': its storage record archive/data/1 is missing", "missing data entry");
        free(z);
        in2[1].name = "archive/data/1";
        z = ptt_zip(in2, 2, 0, &n);
        ptt_refused(z, n, "no archive/version record", "no version");
        free(z);
        z = ptt_zip(in2, 4, 0, &n);
        ptt_refused(z, n, "byteorder is 'big': only little-endian", "big-endian");
        free(z);
        in2[2].data = "v3";
        z = ptt_zip(in2, 3, 0, &n);
        ptt_refused(z, n, "version record 'v3' is not a format version number", "bad version");
        free(z);
        PtZipIn flat[2] = {{"data.pkl", pk.d, pk.n}, {"version", "3\n", 2}};
        z = ptt_zip(flat, 2, 0, &n);
        ptt_refused(z, n, "entry 'data.pkl' is not inside a top-level directory", "no top-level directory");
        free(z);
        free(pk.d);
    }
}

// One 64 KiB storage named by 300 tensors through the memo: 19 MB to copy out of a 66 KB file is
// refused (the budget is 8 times the file plus 16 MiB), as a hostile file could ask for terabytes.
TEST(torch_pt_refuses_one_storage_copied_out_too_many_times) {
    const int64_t sz[1] = {16384}, st[1] = {1};
    PtBuf pk = {NULL, 0, 0};
    pt__pk_text(&pk, "\x80\x02}(");
    pt__pk_str(&pk, "g");
    pt__pk_text(&pk, "}(");
    pt__pk_str(&pk, "t0");
    ptt_pk_tensor(&pk, "FloatStorage", "0", 16384, 0, 1, sz, st);
    pt__pk_text(&pk, "q\x01");  // BINPUT 1
    for (int i = 1; i < 300; i++) {
        char nm[16];
        snprintf(nm, sizeof(nm), "t%d", i);
        pt__pk_str(&pk, nm);
        pt__pk_text(&pk, "h\x01");  // BINGET 1
    }
    pt__pk_text(&pk, "uu.");
    uint8_t* data = (uint8_t*)calloc(65536, 1);
    PtZipIn in[3] = {{"archive/data.pkl", pk.d, pk.n}, {"archive/data/0", data, 65536}, {"archive/version", "3\n", 2}};
    size_t n;
    uint8_t* z = ptt_zip(in, 3, 0, &n);
    ptt_refused(z, n, "the tensors name the same storage bytes over and over", "a storage copied out 300 times");
    free(z);
    free(data);
    free(pk.d);
}

// ---- against the real torch ----

// The python with torch the checks run: CODA_TORCH_PYTHON (a path, e.g. the GPU machine's venv), else
// /usr/bin/python3 (Debian's python3-torch).
static const char* ptt_python(void) { return getenv("CODA_TORCH_PYTHON") ? getenv("CODA_TORCH_PYTHON") : "/usr/bin/python3"; }

// Runs argv (argv[0] a path) with stdout and stderr into out (NUL-terminated); returns the exit status, -1 if it did not run.
static int ptt_run(const char* const* argv, char* out, size_t out_n) {
    char path[] = "/tmp/coda_ptt_out_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    unlink(path);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char* const*)argv);
        _exit(127);
    }
    int status = 0, rc = -1;
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) != 127) rc = WEXITSTATUS(status);
    lseek(fd, 0, SEEK_SET);
    ssize_t got = read(fd, out, out_n - 1);
    out[got > 0 ? got : 0] = 0;
    close(fd);
    return rc;
}
// torch_pt_check.py's EXPECTED.json for tensors t.
static int ptt_write_manifest(const char* path, const PtTensor* t, int n) {
    JsonBuf b;
    jbuf_init(&b);
    jbuf_puts(&b, "{\"tensors\": [");
    for (int i = 0; i < n; i++) {
        jbuf_printf(&b, "%s\n{\"group\": ", i ? "," : "");
        json_write_cstr(&b, t[i].group);
        jbuf_puts(&b, ", \"name\": ");
        json_write_cstr(&b, t[i].name);
        jbuf_printf(&b, ", \"dtype\": \"%s\", \"shape\": [", dtype_name(t[i].dtype));
        for (int d = 0; d < t[i].ndim; d++) jbuf_printf(&b, "%s%lld", d ? ", " : "", (long long)t[i].shape[d]);
        jbuf_puts(&b, "], \"hex\": \"");
        for (size_t k = 0; k < t[i].nbytes; k++) jbuf_printf(&b, "%02x", ((const uint8_t*)t[i].data)[k]);
        jbuf_puts(&b, "\"}");
    }
    jbuf_puts(&b, "]}\n");
    FILE* f = fopen(path, "wb");
    int ok = f && fwrite(b.data, 1, b.len, f) == b.len;
    if (f) ok = fclose(f) == 0 && ok;
    jbuf_free(&b);
    return ok ? 0 : -1;
}
// The tensors EXPECTED.json describes (data malloc'd), or -1.
static int ptt_read_manifest(const char* path, PtTensor* t, int cap) {
    JsonValue* v = NULL;
    CodaError err;
    if (json_parse_file(path, &v, &err) != 0) { CHECK(0, "%s", err.msg); return -1; }
    const JsonValue* a = json_get(v, "tensors");
    int n = 0;
    for (size_t i = 0; a && i < a->count && n < cap; i++, n++) {
        const JsonValue* e = &a->items[i];
        PtTensor* x = &t[n];
        memset(x, 0, sizeof(*x));
        snprintf(x->group, sizeof(x->group), "%s", json_get(e, "group")->string);
        snprintf(x->name, sizeof(x->name), "%s", json_get(e, "name")->string);
        dtype_from_name(json_get(e, "dtype")->string, &x->dtype);
        const JsonValue* sh = json_get(e, "shape");
        x->ndim = (int)sh->count;
        for (int d = 0; d < x->ndim; d++) x->shape[d] = sh->items[d].integer;
        const JsonValue* hex = json_get(e, "hex");
        x->nbytes = hex->string_len / 2;
        x->data = malloc(x->nbytes + 1);
        for (size_t k = 0; k < x->nbytes; k++) { unsigned u; sscanf(hex->string + 2 * k, "%2x", &u); ((uint8_t*)x->data)[k] = (uint8_t)u; }
    }
    json_free(v);
    return n;
}

TEST(torch_pt_matches_real_torch_both_directions) {
    char out[4096];
    const char* probe[4] = {ptt_python(), "-c", "import torch", NULL};
    if (access(probe[0], X_OK) != 0 || ptt_run(probe, out, sizeof(out)) != 0) {
        test_skip("/usr/bin/python3 -c 'import torch' fails here: no torch to compare with (torch_pt_reads_the_file_torch_1_13_wrote still ran)");
        return;
    }
    char dir[256], pt[512], js[512];
    test_mkdtemp(dir, sizeof(dir), "torch_ptpy");
    // torch writes -> pt_read
    snprintf(pt, sizeof(pt), "%s/coda_adapters.pt", dir);
    snprintf(js, sizeof(js), "%s/expected.json", dir);
    const char* w[6] = {ptt_python(), PTT_CHECK_PY, "write", pt, js, NULL};
    int rc = ptt_run(w, out, sizeof(out));
    CHECK(rc == 0, "%s write: exit %d: %s", PTT_CHECK_PY, rc, out);
    printf("    %s", out);
    PtTensor want[64];
    int n = rc == 0 ? ptt_read_manifest(js, want, 64) : -1;
    PtTensor* back = NULL;
    int nb = 0;
    CodaError err;
    if (n > 0) {
        CHECK(pt_read(pt, &back, &nb, &err) == 0, "%s", err.msg);
        if (ptt_same(back, nb, want, n, "torch.save -> pt_read")) printf("    pt_read: %d tensors of torch's file bitwise equal\n", nb);
        pt_free(back, nb);
        ptt_free_made(want, n);
    }
    // pt_write (plain, zip64 fields, offsets past 4 GiB) -> torch.load(weights_only=True)
    PtTensor t[64], order[64];
    n = ptt_sample(t);
    ptt_expected_order(t, n, order);
    CHECK(ptt_write_manifest(js, order, n) == 0, "cannot write %s", js);
    for (int mode = 0; mode < 3; mode++) {
        PtWriteOpts o;
        memset(&o, 0, sizeof(o));
        o.force_zip64 = mode == 1;
        o.gap = mode == 2 ? 9ull << 29 : 0;
        snprintf(pt, sizeof(pt), "%s/c%d.pt", dir, mode);
        CHECK(pt__write_opts(pt, t, n, &o, &err) == 0, "%s", err.msg);
        const char* c[6] = {ptt_python(), PTT_CHECK_PY, "check", pt, js, NULL};
        rc = ptt_run(c, out, sizeof(out));
        CHECK(rc == 0 && strstr(out, "bitwise equal"), "%s check (%s): exit %d: %s", PTT_CHECK_PY,
              mode == 0 ? "plain" : mode == 1 ? "zip64 fields" : "past 4 GiB", rc, out);
        printf("    %s", out);
        unlink(pt);
    }
    ptt_free_made(t, n);
    test_rmtree(dir);
}
