// test_io.h — file formats: the JSON reader/writer, safetensors, Hugging Face config.json and
// (sharded) weight directories. Every error path asserts the specific text of its message.
#pragma once
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../../llmc/json.h"
#include "../../llmc/safetensors.h"
#include "../../llmc/hf_model.h"
#include "../../llmc/rand.h"

// ---- helpers ----

// Parses a NUL-terminated literal; returns the tree or NULL (message in err).
static JsonValue* io_parse(const char* text, CodaError* err) {
    JsonValue* v = NULL;
    err->msg[0] = '\0';
    json_parse(text, strlen(text), &v, err);
    return v;
}

// Expects `text` to fail with a message containing both `where` (e.g. "line 2:7") and `what`.
static void io_expect_json_error(const char* text, const char* where, const char* what) {
    CodaError err;
    JsonValue* v = io_parse(text, &err);
    CHECK(v == NULL, "accepted malformed JSON: %s", text);
    json_free(v);
    CHECK(strstr(err.msg, where) != NULL, "input %s: expected position '%s' in: %s", text, where, err.msg);
    CHECK(strstr(err.msg, what) != NULL, "input %s: expected '%s' in: %s", text, what, err.msg);
}

// ---- JSON ----

TEST(json_values_nesting_and_key_order) {
    CodaError err;
    JsonValue* v = io_parse(" { \"b\": [1, 2.5, -3e2, true, false, null, \"x\", [], {}],\n \"a\": {\"c\": {\"d\": []}}, \"e\": \"\" } ", &err);
    CHECK(v != NULL, "%s", err.msg);
    if (!v) return;
    CHECK(v->type == JSON_OBJECT && v->count == 3, "");
    CHECK(strcmp(v->keys[0], "b") == 0 && strcmp(v->keys[1], "a") == 0 && strcmp(v->keys[2], "e") == 0,
          "keys keep text order");
    const JsonValue* b = json_get(v, "b");
    CHECK(b && b->type == JSON_ARRAY && b->count == 9, "");
    if (b && b->count == 9) {
        CHECK(b->items[0].type == JSON_NUMBER && b->items[0].is_int && b->items[0].integer == 1, "");
        CHECK(b->items[1].number == 2.5 && !b->items[1].is_int, "");
        CHECK(b->items[2].number == -300.0 && !b->items[2].is_int, "exponent literal is not an integer literal");
        CHECK(b->items[3].type == JSON_BOOL && b->items[3].boolean == 1, "");
        CHECK(b->items[4].type == JSON_BOOL && b->items[4].boolean == 0, "");
        CHECK(b->items[5].type == JSON_NULL, "");
        CHECK(b->items[6].type == JSON_STRING && strcmp(b->items[6].string, "x") == 0, "");
        CHECK(b->items[7].type == JSON_ARRAY && b->items[7].count == 0, "");
        CHECK(b->items[8].type == JSON_OBJECT && b->items[8].count == 0, "");
    }
    const JsonValue* d = json_get(json_get(json_get(v, "a"), "c"), "d");
    CHECK(d && d->type == JSON_ARRAY && d->count == 0, "");
    const JsonValue* e = json_get(v, "e");
    CHECK(e && e->type == JSON_STRING && e->string_len == 0 && e->string[0] == '\0', "");
    CHECK(json_get(v, "zz") == NULL, "absent key");
    CHECK(json_get(b, "b") == NULL, "json_get on an array");
    CHECK(json_get(NULL, "b") == NULL, "");
    json_free(v);
    // duplicate keys: all kept in order, json_get answers the last (Python's behaviour)
    v = io_parse("{\"k\": 1, \"k\": 2}", &err);
    CHECK(v && v->count == 2 && json_get(v, "k")->integer == 2, "%s", err.msg);
    json_free(v);
    // scalars at top level
    v = io_parse("  42 ", &err);
    CHECK(v && v->type == JSON_NUMBER && v->integer == 42, "%s", err.msg);
    json_free(v);
}

TEST(json_string_escapes_and_unicode) {
    CodaError err;
    JsonValue* v = io_parse("[\"q\\\"b\\\\s\\/b\\bf\\fn\\nr\\rt\\t\", \"\\u00e9\\u20AC\\ud83d\\ude00\", "
                            "\"caf\xc3\xa9 \xf0\x9f\x98\x80\", \"a\\u0000b\", \"\\u0041\\u007f\"]", &err);
    CHECK(v != NULL, "%s", err.msg);
    if (!v) return;
    CHECK(strcmp(v->items[0].string, "q\"b\\s/b\bf\fn\nr\rt\t") == 0, "simple escapes: %s", v->items[0].string);
    // é = C3 A9, € = E2 82 AC, U+1F600 (surrogate pair) = F0 9F 98 80
    CHECK(strcmp(v->items[1].string, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") == 0, "\\u escapes to UTF-8");
    CHECK(v->items[1].string_len == 9, "len %zu", v->items[1].string_len);
    CHECK(strcmp(v->items[2].string, "caf\xc3\xa9 \xf0\x9f\x98\x80") == 0, "raw UTF-8 passes through");
    CHECK(v->items[3].string_len == 3 && memcmp(v->items[3].string, "a\0b", 4) == 0, "embedded NUL kept, len 3");
    CHECK(strcmp(v->items[4].string, "A\x7f") == 0, "");
    json_free(v);
    // object keys decode escapes too
    v = io_parse("{\"k\\u00e9y\\n\": 1}", &err);
    CHECK(v && v->key_lens[0] == 5 && strcmp(v->keys[0], "k\xc3\xa9y\n") == 0 && json_get(v, "k\xc3\xa9y\n"), "%s", err.msg);
    json_free(v);
}

TEST(json_numbers) {
    CodaError err;
    JsonValue* v = io_parse("[0, -0, 9223372036854775807, -9223372036854775808, 9223372036854775808, 1.5e3, "
                            "-2.5E-3, 0.1, 123456789012, 1e400, 18446744073709551616, NaN, -Infinity]", &err);
    CHECK(v && v->count == 13, "%s", err.msg);
    if (!v || v->count != 13) { json_free(v); return; }
    JsonValue* x = v->items;
    CHECK(x[0].is_int && x[0].integer == 0 && x[0].number == 0.0, "");
    CHECK(x[1].is_int && x[1].integer == 0 && signbit(x[1].number), "-0 keeps its sign as a double");
    CHECK(x[2].is_int && x[2].integer == INT64_MAX, "");
    CHECK(x[3].is_int && x[3].integer == INT64_MIN, "");
    CHECK(!x[4].is_int && x[4].number == 9223372036854775808.0, "2^63 does not fit int64");
    CHECK(!x[5].is_int && x[5].number == 1500.0, "");
    CHECK(x[6].number == -2.5e-3, "%.17g", x[6].number);
    CHECK(x[7].number == 0.1, "correctly rounded");
    CHECK(x[8].is_int && x[8].integer == 123456789012ll, "");
    CHECK(isinf(x[9].number), "overflow to inf like Python");
    CHECK(!x[10].is_int && x[10].number == 18446744073709551616.0, "");
    CHECK(isnan(x[11].number), "");
    CHECK(isinf(x[12].number) && x[12].number < 0, "");
    json_free(v);
}

TEST(json_errors_name_line_column_and_expectation) {
    io_expect_json_error("{\"a\": 1,\n  \"b\" 2}", "line 2:7", "expected ':' after object key \"b\", found '2'");
    io_expect_json_error("[1, 2", "line 1:6", "expected ',' or ']' after array element 1, found end of input");
    io_expect_json_error("[1,\n\n]", "line 3:1", "expected a JSON value (object, array, string, number, true, false or null), found ']'");
    io_expect_json_error("{\"a\": tru}", "line 1:7", "invalid literal: expected 'true'");
    io_expect_json_error("{\"a\": 1 \"b\": 2}", "line 1:9", "expected ',' or '}' after object member, found '\"'");
    io_expect_json_error("{\"a\": 1, }", "line 1:10", "expected '\"' to start an object key, found '}'");
    io_expect_json_error("\n  \"abc", "line 2:3", "unterminated string");
    io_expect_json_error("[012]", "line 1:2", "leading zeros are not allowed");
    io_expect_json_error("[1.]", "line 1:4", "expected a digit after the decimal point");
    io_expect_json_error("[1e+]", "line 1:5", "expected a digit in the exponent");
    io_expect_json_error("[-]", "line 1:3", "expected a digit after '-'");
    io_expect_json_error("[\"a\\x\"]", "line 1:4", "invalid escape '\\x' in string");
    io_expect_json_error("[\"\\u12G4\"]", "line 1:3", "expected 4 hex digits after \\u");
    io_expect_json_error("[\"\\ud83d x\"]", "line 1:3", "unpaired UTF-16 high surrogate \\ud83d");
    io_expect_json_error("[\"\\ude00\"]", "line 1:3", "unpaired UTF-16 low surrogate \\ude00");
    io_expect_json_error("[\"a\tb\"]", "line 1:4", "control character 0x09 inside a string");
    io_expect_json_error("{} x", "line 1:4", "unexpected 'x' after the end of the JSON value");
    io_expect_json_error("   ", "line 1:4", "expected a JSON value, found end of input");
    io_expect_json_error("[\x01]", "line 1:2", "found byte 0x01");
    // nesting past the limit is refused, not a stack overflow
    size_t deep = JSON_MAX_DEPTH + 5;
    char* text = (char*)malloc(2 * deep + 1);
    for (size_t i = 0; i < deep; i++) { text[i] = '['; text[2 * deep - 1 - i] = ']'; }
    text[2 * deep] = '\0';
    char where[32];
    snprintf(where, sizeof(where), "line 1:%d", JSON_MAX_DEPTH + 1);
    io_expect_json_error(text, where, "nesting deeper than 1000 levels");
    free(text);
    CodaError err;  // the allowed depth itself parses
    char ok[2 * JSON_MAX_DEPTH + 1];
    for (int i = 0; i < JSON_MAX_DEPTH; i++) { ok[i] = '['; ok[2 * JSON_MAX_DEPTH - 1 - i] = ']'; }
    ok[2 * JSON_MAX_DEPTH] = '\0';
    JsonValue* v = io_parse(ok, &err);
    CHECK(v != NULL, "depth %d must parse: %s", JSON_MAX_DEPTH, err.msg);
    json_free(v);
}

// Builds a tokenizer.json-shaped document: {"vocab": {n_keys string keys}, "merges": [n_items strings]}.
static void io_build_big_json(JsonBuf* b, int n_keys, int n_items) {
    jbuf_puts(b, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
    char s[64];
    for (int i = 0; i < n_keys; i++) {
        snprintf(s, sizeof(s), "tok\\u00e9%d\\n", i);
        jbuf_printf(b, "%s\"%s\": %d", i ? ", " : "", s, i);
    }
    jbuf_puts(b, "}, \"merges\": [");
    for (int i = 0; i < n_items; i++) jbuf_printf(b, "%s\"a%d b%d\"", i ? ",\n" : "", i, i + 1);
    jbuf_puts(b, "]}}");
}

static double io_time_parse(const JsonBuf* b, int n_keys, int n_items) {
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        CodaError err;
        JsonValue* v = NULL;
        double t0 = now_seconds();
        int rc = json_parse(b->data, b->len, &v, &err);
        double dt = now_seconds() - t0;
        best = dt < best ? dt : best;
        CHECK(rc == 0, "%s", err.msg);
        const JsonValue* vocab = json_get(json_get(v, "model"), "vocab");
        const JsonValue* merges = json_get(json_get(v, "model"), "merges");
        CHECK(vocab && vocab->count == (size_t)n_keys, "");
        CHECK(merges && merges->count == (size_t)n_items, "");
        if (vocab && vocab->count == (size_t)n_keys && n_keys > 0) {
            size_t last = (size_t)n_keys - 1;
            char expect[64];
            snprintf(expect, sizeof(expect), "tok\xc3\xa9%d\n", n_keys - 1);
            CHECK(strcmp(vocab->keys[last], expect) == 0 && vocab->items[last].integer == n_keys - 1, "");
        }
        json_free(v);
    }
    return best;
}

TEST(json_big_document_parses_in_linear_time) {
    // 1x: about the size of Mistral's tokenizer.json (32k vocab entries, 59k merges); 8x: 8 times that.
    JsonBuf small, big;
    jbuf_init(&small);
    jbuf_init(&big);
    io_build_big_json(&small, 32000, 59000);
    io_build_big_json(&big, 8 * 32000, 8 * 59000);
    double t1 = io_time_parse(&small, 32000, 59000);
    double t8 = io_time_parse(&big, 8 * 32000, 8 * 59000);
    printf("    json: %.1f MB in %.1f ms (%.0f MB/s); %.1f MB in %.1f ms\n", small.len / 1e6, t1 * 1e3,
           small.len / 1e6 / t1, big.len / 1e6, t8 * 1e3);
    // linear: ~8x; quadratic would be ~64x. Generous bound for noisy machines.
    CHECK(t8 < 24.0 * t1 + 0.05, "8x the input took %.1fx the time", t8 / t1);
    CHECK(t1 < 1.0, "%.2fs for a tokenizer-sized document", t1);
    jbuf_free(&small);
    jbuf_free(&big);
}

TEST(json_writer_round_trips_strings_and_numbers) {
    JsonBuf b;
    jbuf_init(&b);
    char all[256];
    for (int i = 0; i < 256; i++) all[i] = (char)i;  // every byte, including NUL and controls
    jbuf_puts(&b, "[");
    json_write_string(&b, all, sizeof(all));
    jbuf_puts(&b, ", ");
    json_write_float(&b, 1e-5f);
    jbuf_puts(&b, ", ");
    json_write_double(&b, 1e6);
    jbuf_puts(&b, ", ");
    json_write_double(&b, 0.1);
    jbuf_puts(&b, ", ");
    json_write_float(&b, -6.0f);
    jbuf_puts(&b, ", ");
    json_write_float(&b, 0.119f);
    jbuf_puts(&b, ", ");
    json_write_double(&b, INFINITY);
    jbuf_puts(&b, ", ");
    json_write_double(&b, 1.0 / 3.0);
    jbuf_puts(&b, "]");
    CHECK(strstr(b.data, ", 1e-05, 1000000.0, 0.1, -6.0, 0.119, Infinity, ") != NULL, "shortest forms: %s", strstr(b.data, "\", "));
    CodaError err;
    JsonValue* v = NULL;
    CHECK(json_parse(b.data, b.len, &v, &err) == 0, "%s", err.msg);
    if (v) {
        CHECK(v->items[0].string_len == 256 && memcmp(v->items[0].string, all, 256) == 0, "all bytes round-trip");
        CHECK((float)v->items[1].number == 1e-5f, "");
        CHECK(v->items[2].number == 1e6 && !v->items[2].is_int, "written as a float literal");
        CHECK(v->items[3].number == 0.1, "");
        CHECK((float)v->items[5].number == 0.119f, "");
        CHECK(isinf(v->items[6].number), "");
        CHECK(v->items[7].number == 1.0 / 3.0, "17 digits when needed");
    }
    json_free(v);
    jbuf_free(&b);
}

// Found by fuzzing (dev/test/fixtures/fuzz/json/): %.17g prints a large integral double with neither
// '.' nor exponent, which reads back as an integer. The writers keep such values float literals.
TEST(json_writer_keeps_large_integral_floats_floats) {
    const double d[3] = {12345678901234562.0, 1e16, -9.5e18};
    const float f[2] = {123456792.0f, 3e9f};
    for (int i = 0; i < 5; i++) {
        JsonBuf b;
        jbuf_init(&b);
        if (i < 3) json_write_double(&b, d[i]); else json_write_float(&b, f[i - 3]);
        CodaError err;
        JsonValue* v = io_parse(b.data, &err);
        CHECK(v && v->type == JSON_NUMBER && !v->is_int, "%s reads back as an integer", b.data);
        CHECK(v && (i < 3 ? v->number == d[i] : (float)v->number == f[i - 3]), "%s reads back as another value", b.data);
        json_free(v);
        jbuf_free(&b);
    }
}

TEST(json_parse_file_names_the_file) {
    char dir[] = "/tmp/coda_json_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof(path), "%s/bad.json", dir);
    FILE* f = fopen(path, "wb");
    fputs("{\n  \"a\": [1, 2,]\n}\n", f);
    fclose(f);
    CodaError err;
    JsonValue* v = NULL;
    CHECK(json_parse_file(path, &v, &err) != 0 && v == NULL, "");
    CHECK(strstr(err.msg, path) && strstr(err.msg, "line 2:14") && strstr(err.msg, "found ']'"), "%s", err.msg);
    f = fopen(path, "wb");
    fputs("{\"ok\": true}", f);
    fclose(f);
    CHECK(json_parse_file(path, &v, &err) == 0 && json_get(v, "ok")->boolean == 1, "%s", err.msg);
    json_free(v);
    unlink(path);
    snprintf(path, sizeof(path), "%s/missing.json", dir);
    CHECK(json_parse_file(path, &v, &err) != 0 && strstr(err.msg, path) && strstr(err.msg, "cannot open"), "%s", err.msg);
    rmdir(dir);
}

// ---- file helpers for the safetensors / HF tests ----

static int io_count_files(const char* dir) {
    DIR* d = opendir(dir);
    int n = 0;
    struct dirent* e;
    while (d && (e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}
static void io_write_bytes(const char* path, const void* bytes, size_t n) {
    FILE* f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, n, f) != n) { perror(path); exit(2); }
    fclose(f);
}
static void io_write_text(const char* path, const char* text) { io_write_bytes(path, text, strlen(text)); }
// A raw safetensors file: the given header length (or its true length when hlen < 0), header, data.
static void io_write_raw_st(const char* path, const char* header, long long hlen, const void* data, size_t n) {
    size_t h = strlen(header);
    uint64_t len = hlen < 0 ? (uint64_t)h : (uint64_t)hlen;
    uint8_t* bytes = (uint8_t*)malloc(8 + h + n + 1);
    for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)(len >> (8 * i));
    memcpy(bytes + 8, header, h);
    if (n) memcpy(bytes + 8 + h, data, n);
    io_write_bytes(path, bytes, 8 + h + n);
    free(bytes);
}
// Opens a file that must be rejected; checks the message names the file and contains `what`.
static void io_expect_st_error(const char* path, const char* what) {
    SafeTensors st;
    CodaError err;
    err.msg[0] = '\0';
    CHECK(st_open(&st, path, &err) != 0, "accepted a bad file (expected: %s)", what);
    CHECK(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    CHECK(strstr(err.msg, what) != NULL, "expected '%s' in: %s", what, err.msg);
}

// ---- safetensors ----

TEST(safetensors_round_trip_all_dtypes_exact) {
    char dir[64], path[128];
    test_mkdtemp(dir, sizeof(dir), "io");
    snprintf(path, sizeof(path), "%s/t.safetensors", dir);
    float f32[6] = {1.0f, -2.5f, 3.14159274f, 1e-30f, -0.0f, 65504.0f};
    // bf16 bit patterns: 1, -0, smallest subnormal, +inf, a NaN with payload, max finite, 0.1-ish
    uint16_t bf16[7] = {0x3f80, 0x8000, 0x0001, 0x7f80, 0x7fc1, 0x7f7f, 0x3dcd};
    uint16_t f16[3] = {0x3c00, 0x0001, 0xfbff};
    double f64[2] = {0.1, -1e300};
    int64_t i64[2] = {INT64_MIN, 42};
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    float scalar = 7.0f;
    int64_t s_f32[2] = {2, 3}, s_bf16[1] = {7}, s_f16[1] = {3}, s_f64[1] = {2}, s_i64[1] = {2}, s_u8[1] = {5}, s_empty[2] = {0, 3};
    StWriteTensor ts[8] = {
        {"a.f32", DT_F32, 2, s_f32, f32}, {"b.bf16", DT_BF16, 1, s_bf16, bf16}, {"c.f16", DT_F16, 1, s_f16, f16},
        {"d.u8", DT_U8, 1, s_u8, u8},  // odd size: the tensors after it are misaligned in the file
        {"e.f64", DT_F64, 1, s_f64, f64}, {"f.i64", DT_I64, 1, s_i64, i64}, {"g.scalar", DT_F32, 0, NULL, &scalar},
        {"h.empty", DT_F32, 2, s_empty, NULL},
    };
    StMeta meta[2] = {{"format", "pt"}, {"note", "a \"quoted\" caf\xc3\xa9\n"}};
    CodaError err;
    CHECK(st_write(path, ts, 8, meta, 2, &err) == 0, "%s", err.msg);
    CHECK(io_count_files(dir) == 1, "temporary file left behind");
    SafeTensors st;
    CHECK(st_open(&st, path, &err) == 0, "%s", err.msg);
    if (st.file) {
        CHECK((8 + st.header_len) % 8 == 0, "header padded to 8 bytes: %zu", st.header_len);
        CHECK(st.n == 8, "%d tensors", st.n);
        for (int i = 0; i < 8; i++) {
            const StTensor* t = st_find(&st, ts[i].name);
            CHECK(t != NULL, "%s missing", ts[i].name);
            if (!t) continue;
            CHECK(t->dtype == ts[i].dtype && t->ndim == ts[i].ndim, "%s", ts[i].name);
            size_t numel = 1;
            for (int d = 0; d < t->ndim; d++) { CHECK(t->shape[d] == ts[i].shape[d], "%s dim %d", ts[i].name, d); numel *= (size_t)ts[i].shape[d]; }
            CHECK(t->numel == numel && t->nbytes == numel * dtype_size(ts[i].dtype), "%s", ts[i].name);
            if (numel) CHECK(memcmp(t->data, ts[i].data, t->nbytes) == 0, "%s bytes differ", ts[i].name);
        }
        CHECK(st_find(&st, "nope") == NULL, "");
        CHECK(st.n_meta == 2 && strcmp(st_meta_get(&st, "format"), "pt") == 0, "");
        CHECK(st_meta_get(&st, "note") && strcmp(st_meta_get(&st, "note"), meta[1].value) == 0, "metadata escapes round-trip");
        st_close(&st);
    }
    test_rmtree(dir);
}

TEST(safetensors_rejects_every_kind_of_bad_file) {
    char dir[64], p[128];
    test_mkdtemp(dir, sizeof(dir), "io");
    snprintf(p, sizeof(p), "%s/bad.safetensors", dir);
    float data[4] = {1, 2, 3, 4};
    io_write_bytes(p, "\x05\0\0\0\0", 5);
    io_expect_st_error(p, "file is too short to be safetensors (5 bytes");
    // header (its length field, -1 = the true one), bytes of data after it (from `data`), the error expected
    static const struct { const char* header; long long hlen; size_t nbytes; const char* expect; } bad[] = {
        {"{}", 1000, 0,
         "header length 1000 runs past the end of the file (2 bytes after the 8-byte length"},
        {"{\"w\": {\"dtype\": \"F32\",}}", -1, 4,
         "malformed safetensors header: JSON parse error at line 1:23: expected '\"' to start an object key"},
        {"[1, 2]", -1, 0,
         "safetensors header must be a JSON object, found array"},
        {"{\"w\": {\"dtype\": \"Q7\", \"shape\": [1], \"data_offsets\": [0, 4]}}", -1, 4,
         "tensor 'w': unknown or unsupported dtype 'Q7'"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [-2, 1], \"data_offsets\": [0, 8]}}", -1, 8,
         "tensor 'w': negative dimension shape[0] = -2"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", -1, 4,
         "tensor 'w': shape[0] is not an integer"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", -1, 12,
         "tensor 'w': data_offsets [0, 16] run past the end of the data section (12 bytes"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", -1, 16,
         "tensor 'w': data_offsets [0, 8] span 8 bytes but shape x F32 needs 12"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}", -1, 16,
         "tensor 'w': data_offsets [8, 4] end before they begin"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
         "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", -1, 16,
         "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", -1, 4,
         "tensor 'w': \"data_offsets\" must be an array [begin, end]"},
        {"{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", -1, 4,
         "tensor 'w': missing or non-string \"dtype\""},
        {"{\"w\": 3}", -1, 4,
         "tensor 'w': header entry must be an object, found number"},
        {"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
         "\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", -1, 8,
         "tensor 'w' appears twice"},
        {"{\"__metadata__\": {\"n\": 1}}", -1, 0,
         "__metadata__ value of 'n' must be a string, found number"},
        // found reading the code while writing the fuzz targets: a second __metadata__ object
        // replaced the first list (leaking it) and wrote past the end of the new, smaller one
        {"{\"__metadata__\": {\"a\": \"1\", \"b\": \"2\"}, \"__metadata__\": {\"c\": \"3\"}}", -1, 0,
         "__metadata__ appears twice in the header"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        io_write_raw_st(p, bad[i].header, bad[i].hlen, bad[i].nbytes ? data : NULL, bad[i].nbytes);
        io_expect_st_error(p, bad[i].expect);
    }
    // a good file cut short in its data section: the last tensor runs past the end
    float big[64] = {0};
    int64_t shape[1] = {64};
    StWriteTensor ts[2] = {{"first", DT_F32, 1, shape, big}, {"second.weight", DT_F32, 1, shape, big}};
    CodaError err;
    CHECK(st_write(p, ts, 2, NULL, 0, &err) == 0, "%s", err.msg);
    SafeTensors st;
    CHECK(st_open(&st, p, &err) == 0, "%s", err.msg);
    st_close(&st);
    struct stat sb;
    stat(p, &sb);
    CHECK(truncate(p, sb.st_size - 4) == 0, "truncate");
    io_expect_st_error(p, "tensor 'second.weight': data_offsets [256, 512] run past the end of the data section (508 bytes");
    snprintf(p, sizeof(p), "%s/absent.safetensors", dir);
    io_expect_st_error(p, "cannot open");
    test_rmtree(dir);
}

// ---- Hugging Face config.json ----

// Every CoDA option at a value different from config_default(), on a tiny architecture.
static ModelConfig io_tiny_config(void) {
    ModelConfig c = config_default();
    c.vocab_size = 64; c.dim = 16; c.ffn_dim = 32; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 4;
    c.max_seq_len = 1024; c.norm_eps = 1e-6f; c.rope_theta = 500000.0; c.tie_embeddings = 0; c.init_std = 0.01f;
    c.bos_id = 5; c.eos_id = 6;
    c.differential = 1; c.bounded = 1; c.rope_layout = ROPE_INTERLEAVED; c.rope_theta_override = 10000.0;
    c.rope_bf16_positions = 1; c.head_norm = HEAD_NORM_FULL; c.head_norm_eps = 1e-5f; c.theta_init = 1.5707964f;
    c.lambda_init_bias = -5.5f; c.window = 64; c.n_exact = 16; c.n_summary = 8; c.block_size = 32;
    c.write_policy = WRITE_POLICY_NONE; c.write_gate_init_bias = -1.5f; c.gate_threshold_exact = 0.2f;
    c.gate_threshold_summary = 0.07f; c.exact_match_threshold = 0.85f; c.exact_novelty_threshold = 0.6f;
    c.exact_refresh_on_hit = 1; c.exact_candidates_per_block = 4; c.summary_candidates_per_block = 32; c.candidate_order = CAND_ORDER_REFERENCE;
    c.eta_init_logit = -2.5f; c.summary_overwrite_on_insert = 0; c.mem_init = MEM_INIT_ZEROS;
    c.mask_unused_memory = 0; c.detach_evicted = 0; c.cross_block_grad = 0;
    return c;
}

// Field-by-field comparison written out by hand (not through HF_CODA_FIELDS, which it checks).
static void io_check_config_equal(const ModelConfig* a, const ModelConfig* b) {
#define SAME(f) CHECK(a->f == b->f, "field " #f " differs: %g vs %g", (double)a->f, (double)b->f)
    SAME(vocab_size); SAME(dim); SAME(ffn_dim); SAME(n_layers); SAME(n_heads); SAME(n_kv_heads); SAME(head_dim);
    SAME(max_seq_len); SAME(norm_eps); SAME(rope_theta); SAME(tie_embeddings); SAME(init_std); SAME(bos_id); SAME(eos_id);
    SAME(differential); SAME(bounded); SAME(rope_layout); SAME(rope_theta_override); SAME(rope_bf16_positions);
    SAME(head_norm); SAME(head_norm_eps); SAME(theta_init); SAME(lambda_init_bias); SAME(window); SAME(n_exact);
    SAME(n_summary); SAME(block_size); SAME(write_policy); SAME(write_gate_init_bias); SAME(gate_threshold_exact);
    SAME(gate_threshold_summary); SAME(exact_match_threshold); SAME(exact_novelty_threshold); SAME(exact_refresh_on_hit);
    SAME(exact_candidates_per_block); SAME(summary_candidates_per_block); SAME(candidate_order); SAME(eta_init_logit);
    SAME(summary_overwrite_on_insert); SAME(mem_init); SAME(mask_unused_memory); SAME(detach_evicted); SAME(cross_block_grad);
#undef SAME
}

TEST(hf_config_round_trip_keeps_every_coda_option) {
    char dir[64], path[128];
    test_mkdtemp(dir, sizeof(dir), "io");
    snprintf(path, sizeof(path), "%s/config.json", dir);
    ModelConfig c = io_tiny_config(), back;
    memset(&back, 0, sizeof(back));
    CodaError err;
    CHECK(HF_N_CODA_FIELDS == 29, "every CoDA option of ModelConfig has a row (%d)", HF_N_CODA_FIELDS);
    CHECK(config_write_hf_dtype(path, &c, DT_F32, &err) == 0, "%s", err.msg);
    CHECK(config_read_hf(path, &back, &err) == 0, "%s", err.msg);
    io_check_config_equal(&c, &back);
    // what transformers needs to see, and keys sorted like save_pretrained
    JsonValue* j = NULL;
    CHECK(json_parse_file(path, &j, &err) == 0, "%s", err.msg);
    if (j) {
        CHECK(strcmp(json_get(j, "model_type")->string, "mistral") == 0, "");
        CHECK(strcmp(json_get(j, "architectures")->items[0].string, "MistralForCausalLM") == 0, "");
        CHECK(strcmp(json_get(j, "torch_dtype")->string, "float32") == 0, "");
        CHECK((float)json_get(j, "rms_norm_eps")->number == 1e-6f, "shortest float form read back");
        CHECK(json_get(j, "head_dim")->integer == 4 && json_get(j, "tie_word_embeddings")->boolean == 0, "");
        CHECK(strcmp(json_get(json_get(j, "coda"), "rope_layout")->string, "interleaved") == 0, "");
        for (size_t i = 1; i < j->count; i++) CHECK(strcmp(j->keys[i - 1], j->keys[i]) < 0, "key order %s %s", j->keys[i - 1], j->keys[i]);
    }
    json_free(j);
    // default options survive too, and config_write_hf records bf16 weights
    ModelConfig d = config_default();
    CHECK(config_write_hf(path, &d, &err) == 0, "%s", err.msg);
    CHECK(config_read_hf(path, &back, &err) == 0, "%s", err.msg);
    io_check_config_equal(&d, &back);
    CHECK(json_parse_file(path, &j, &err) == 0 && strcmp(json_get(j, "torch_dtype")->string, "bfloat16") == 0, "");
    json_free(j);
    CHECK(io_count_files(dir) == 1, "no temporary file left");
    test_rmtree(dir);
}

// config.json of Mistral-7B-v0.3 as transformers 4.x writes it.
static const char* IO_MISTRAL_CONFIG =
    "{\n  \"architectures\": [\n    \"MistralForCausalLM\"\n  ],\n  \"attention_dropout\": 0.0,\n  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n  \"head_dim\": null,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": 4096,\n"
    "  \"initializer_range\": 0.02,\n  \"intermediate_size\": 14336,\n  \"max_position_embeddings\": 32768,\n"
    "  \"model_type\": \"mistral\",\n  \"num_attention_heads\": 32,\n  \"num_hidden_layers\": 32,\n"
    "  \"num_key_value_heads\": 8,\n  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 1000000.0,\n  \"sliding_window\": null,\n"
    "  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"bfloat16\",\n  \"transformers_version\": \"4.42.0.dev0\",\n"
    "  \"use_cache\": true,\n  \"vocab_size\": 32768\n}\n";

// The same in transformers-5 style: rope_parameters, explicit head_dim, "dtype", an eos list.
static const char* IO_MISTRAL_CONFIG_V5 =
    "{\"architectures\": [\"MistralForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": [2, 7], \"head_dim\": 128,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 5120, \"intermediate_size\": 14336, \"max_position_embeddings\": 131072,"
    " \"model_type\": \"mistral\", \"num_attention_heads\": 32, \"num_hidden_layers\": 40, \"num_key_value_heads\": 8,"
    " \"rms_norm_eps\": 1e-05, \"rope_parameters\": {\"rope_theta\": 1000000.0, \"rope_type\": \"default\"},"
    " \"sliding_window\": null, \"tie_word_embeddings\": false, \"dtype\": \"bfloat16\", \"vocab_size\": 131072,"
    " \"coda\": {\"differential\": true, \"window\": 128}}";

TEST(hf_config_reads_mistral_as_transformers_writes_it) {
    char dir[64], path[128];
    test_mkdtemp(dir, sizeof(dir), "io");
    snprintf(path, sizeof(path), "%s/config.json", dir);
    io_write_text(path, IO_MISTRAL_CONFIG);
    ModelConfig c;
    CodaError err;
    CHECK(config_read_hf(path, &c, &err) == 0, "%s", err.msg);
    CHECK(c.dim == 4096 && c.ffn_dim == 14336 && c.n_layers == 32 && c.n_heads == 32 && c.n_kv_heads == 8, "");
    CHECK(c.head_dim == 128, "head_dim null -> hidden/heads = %d", c.head_dim);
    CHECK(c.vocab_size == 32768 && c.max_seq_len == 32768 && c.rope_theta == 1e6 && c.norm_eps == 1e-5f, "");
    CHECK(c.init_std == 0.02f && c.bos_id == 1 && c.eos_id == 2 && c.tie_embeddings == 0, "");
    ModelConfig d = config_default();  // absent "coda": every option at its default
    CHECK(c.differential == d.differential && c.bounded == d.bounded && c.window == d.window &&
          c.lambda_init_bias == d.lambda_init_bias && c.mem_init == d.mem_init, "");
    io_write_text(path, IO_MISTRAL_CONFIG_V5);
    CHECK(config_read_hf(path, &c, &err) == 0, "%s", err.msg);
    CHECK(c.dim == 5120 && c.head_dim == 128, "explicit head_dim %d (not hidden/heads = 160)", c.head_dim);
    CHECK(c.rope_theta == 1e6, "rope_parameters.rope_theta: %g", c.rope_theta);
    CHECK(c.eos_id == 2, "first of an eos list");
    CHECK(c.differential == 1 && c.window == 128 && c.bounded == 0 && c.n_exact == d.n_exact, "partial coda object");
    test_rmtree(dir);
}

// Writes `text` as config.json and expects config_read_hf to fail naming the file and saying `what`.
static void io_expect_config_error(const char* path, const char* text, const char* what) {
    io_write_text(path, text);
    ModelConfig c;
    CodaError err;
    err.msg[0] = '\0';
    CHECK(config_read_hf(path, &c, &err) != 0, "accepted a bad config (expected: %s)", what);
    CHECK(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    CHECK(strstr(err.msg, what) != NULL, "expected '%s' in: %s", what, err.msg);
}

// IO_MISTRAL_CONFIG with the first occurrence of `from` replaced by `to`.
static void io_expect_config_edit_error(const char* path, const char* from, const char* to, const char* what) {
    const char* at = strstr(IO_MISTRAL_CONFIG, from);
    CHECK(at != NULL, "test bug: '%s' not in the config", from);
    if (!at) return;
    char text[4096];
    snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - IO_MISTRAL_CONFIG), IO_MISTRAL_CONFIG, to, at + strlen(from));
    io_expect_config_error(path, text, what);
}

TEST(hf_config_rejects_malformed_and_wrong_fields) {
    char dir[64], path[128];
    test_mkdtemp(dir, sizeof(dir), "io");
    snprintf(path, sizeof(path), "%s/config.json", dir);
    io_expect_config_edit_error(path, "\"hidden_size\": 4096,", "\"hidden_size\": 4096", "JSON parse error at line 11:3: expected ',' or '}'");
    io_expect_config_edit_error(path, "\"hidden_size\": 4096,", "", "missing required field 'hidden_size'");
    io_expect_config_edit_error(path, "\"num_key_value_heads\": 8,", "", "missing required field 'num_key_value_heads'");
    io_expect_config_edit_error(path, "\"hidden_size\": 4096", "\"hidden_size\": \"4096\"", "field 'hidden_size' must be an integer, found string \"4096\"");
    io_expect_config_edit_error(path, "\"num_hidden_layers\": 32", "\"num_hidden_layers\": 32.5", "field 'num_hidden_layers' must be an integer, found 32.5");
    io_expect_config_edit_error(path, "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": 0", "field 'tie_word_embeddings' must be true or false, found 0");
    io_expect_config_edit_error(path, "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": null", "required field 'rms_norm_eps' is null");
    io_expect_config_edit_error(path, "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": [1]", "field 'rms_norm_eps' must be a number, found array");
    io_expect_config_edit_error(path, "\"rope_theta\": 1000000.0,", "", "missing required field 'rope_theta'");
    io_expect_config_edit_error(path, "\"rope_theta\": 1000000.0,", "\"rope_parameters\": {\"rope_theta\": \"big\"},",
                                "field 'rope_parameters.rope_theta' must be a number, found string \"big\"");
    io_expect_config_edit_error(path, "\"sliding_window\": null,", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0},",
                                "rope_scaling.rope_type = string \"llama3\" is not supported");
    io_expect_config_edit_error(path, "\"model_type\": \"mistral\"", "\"model_type\": \"qwen2\"", "model_type = string \"qwen2\" is not supported");
    io_expect_config_edit_error(path, "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act = string \"gelu\" is not supported");
    io_expect_config_edit_error(path, "\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5",
                                "num_attention_heads (32) must be a multiple of num_key_value_heads (5)");
    io_expect_config_edit_error(path, "\"num_attention_heads\": 32", "\"num_attention_heads\": 3",
                                "head_dim is not given and hidden_size (4096) is not a multiple of num_attention_heads (3)");
    io_expect_config_edit_error(path, "\"use_cache\": true,", "\"coda\": [1],", "field 'coda' must be an object, found array");
    io_expect_config_edit_error(path, "\"use_cache\": true,", "\"coda\": {\"windw\": 64},", "unknown CoDA option 'coda.windw'");
    io_expect_config_edit_error(path, "\"use_cache\": true,", "\"coda\": {\"rope_layout\": \"rotated\"},",
                                "field 'coda.rope_layout' must be one of \"half_split\", \"interleaved\", found string \"rotated\"");
    io_expect_config_edit_error(path, "\"use_cache\": true,", "\"coda\": {\"bounded\": \"yes\"},",
                                "field 'coda.bounded' must be true or false, found string \"yes\"");
    io_expect_config_edit_error(path, "\"use_cache\": true,", "\"coda\": {\"bounded\": true, \"window\": 0},",
                                "coda.window (W) must be in [1, 1048576] (got 0)");
    // regression: a window this large overflowed W + Me + Ms; bounded or not, it is refused by name
    io_expect_config_edit_error(path, "\"use_cache\": true,", "\"coda\": {\"window\": 2147483647},",
                                "coda.window (W) must be in [1, 1048576] (got 2147483647)");
    // regression: Infinity was accepted and printed as "RoPE base inf"; NaN thresholds too
    io_expect_config_edit_error(path, "\"rope_theta\": 1000000.0", "\"rope_theta\": Infinity", "rope_theta must be a finite number (got inf)");
    io_expect_config_edit_error(path, "\"use_cache\": true,", "\"coda\": {\"gate_threshold_exact\": NaN},",
                                "coda.gate_threshold_exact must be a finite number");
    io_expect_config_edit_error(path, "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -Infinity", "rms_norm_eps must be a finite number");
    io_expect_config_edit_error(path, "\"vocab_size\": 32768", "\"vocab_size\": 20000000", "vocab_size must be in [1, 16777216]");
    io_expect_config_error(path, "[]", "config must be a JSON object, found array");
    ModelConfig c;
    CodaError err;
    snprintf(path, sizeof(path), "%s/absent.json", dir);
    CHECK(config_read_hf(path, &c, &err) != 0 && strstr(err.msg, path) && strstr(err.msg, "cannot open"), "%s", err.msg);
    test_rmtree(dir);
}

// ---- Hugging Face weight directories ----

// A table and an F32 buffer with distinct random values.
static float* io_random_params(const ModelConfig* c, ParamTable* t, uint64_t seed) {
    param_table_build(t, c, DT_F32);
    float* p = (float*)malloc(t->total * sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < t->total; i++) p[i] = (float)rng_normal(&r);
    return p;
}

// Writes model.safetensors (F32) with the table's tensors, except those named like an extra (the
// extra replaces them) or equal to `drop`, then the extras.
static void io_write_model_file(const char* path, const ParamTable* t, const float* buf, const char* drop,
                                const StWriteTensor* extra, int n_extra) {
    StWriteTensor* ts = (StWriteTensor*)calloc((size_t)(t->n + n_extra), sizeof(StWriteTensor));
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        const ParamTensor* p = &t->tensors[i];
        int replaced = drop && strcmp(drop, p->name) == 0;
        for (int k = 0; k < n_extra; k++) replaced |= strcmp(extra[k].name, p->name) == 0;
        if (replaced) continue;
        StWriteTensor w = {p->name, DT_F32, p->ndim, p->shape, buf + p->offset};
        ts[n++] = w;
    }
    for (int k = 0; k < n_extra; k++) ts[n++] = extra[k];
    CodaError err;
    if (st_write(path, ts, n, NULL, 0, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(2); }
    free(ts);
}

// Equal over every tensor's elements (the flat buffers' alignment padding is not part of the model).
static int io_tensors_equal(const ParamTable* t, const void* a, const void* b, size_t elem_size) {
    for (int i = 0; i < t->n; i++) {
        size_t off = t->tensors[i].offset * elem_size, len = t->tensors[i].numel * elem_size;
        if (memcmp((const char*)a + off, (const char*)b + off, len) != 0) return 0;
    }
    return 1;
}

TEST(hf_params_sharded_and_single_round_trip) {
    char dir[64], model[128], path[256];
    test_mkdtemp(dir, sizeof(dir), "io");
    snprintf(model, sizeof(model), "%s/out/model", dir);  // save creates the directories
    ModelConfig c = io_tiny_config();
    ParamTable t;
    float* src = io_random_params(&c, &t, 1);
    float* back = (float*)malloc(t.total * sizeof(float));
    CodaError err;
    HfLoadReport rep;
    // 4 KiB shards: the embedding (64x16 f32 = 4 KiB) fills one alone; many shards in all
    CHECK(hf_save_params(model, &t, src, DT_F32, DT_F32, 4096, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof(path), "%s/" HF_INDEX_NAME, model);
    JsonValue* index = NULL;
    CHECK(json_parse_file(path, &index, &err) == 0, "%s", err.msg);
    int n_shards = 0;
    if (index) {
        const JsonValue* wm = json_get(index, "weight_map");
        CHECK(json_get(json_get(index, "metadata"), "total_size")->integer == (int64_t)(param_table_count(&t) * 4), "total_size");
        CHECK(wm && wm->count == (size_t)t.n, "weight_map has every tensor");
        for (size_t i = 1; wm && i < wm->count; i++) CHECK(strcmp(wm->keys[i - 1], wm->keys[i]) < 0, "weight_map sorted");
        const char* of = wm ? strstr(wm->items[0].string, "-of-") : NULL;
        n_shards = of ? atoi(of + 4) : 0;
        CHECK(n_shards > 3, "%d shards", n_shards);
        for (size_t i = 0; wm && i < wm->count; i++) {
            snprintf(path, sizeof(path), "%s/%s", model, wm->items[i].string);
            CHECK(hf__exists(path), "%s", path);
        }
    }
    json_free(index);
    CHECK(io_count_files(model) == n_shards + 1, "shards + index only, no temporaries: %d files", io_count_files(model));
    memset(back, 0xff, t.total * sizeof(float));
    CHECK(hf_load_params(model, &t, back, DT_F32, &rep, &err) == 0, "%s", err.msg);
    CHECK(io_tensors_equal(&t, back, src, sizeof(float)), "sharded F32 round trip is exact");
    CHECK(rep.n_loaded == t.n && rep.n_files == n_shards && rep.n_coda_missing == 0 && rep.n_unexpected == 0, "");
    // Re-save unsharded as bf16 over the same directory: the stale shards and index must go.
    CHECK(hf_save_params(model, &t, src, DT_F32, DT_BF16, HF_DEFAULT_SHARD_BYTES, &err) == 0, "%s", err.msg);
    CHECK(io_count_files(model) == 1, "only model.safetensors left: %d files", io_count_files(model));
    CHECK(hf_load_params(model, &t, back, DT_F32, &rep, &err) == 0, "%s", err.msg);
    int same = 1;
    for (int k = 0; k < t.n; k++)
        for (size_t i = t.tensors[k].offset; i < t.tensors[k].offset + t.tensors[k].numel; i++) same &= back[i] == round_bf16(src[i]);
    CHECK(same && rep.n_files == 1, "bf16 file holds the rounded values");
    // bf16 -> bf16 keeps every bit, in both directions
    uint16_t* b16 = (uint16_t*)malloc(t.total * 2);
    uint16_t* b16_back = (uint16_t*)malloc(t.total * 2);
    for (size_t i = 0; i < t.total; i++) b16[i] = (uint16_t)(f32_to_bf16(src[i]) ^ (i & 1));  // odd mantissa bits too
    CHECK(hf_save_params(model, &t, b16, DT_BF16, DT_BF16, 2048, &err) == 0, "%s", err.msg);
    CHECK(hf_load_params(model, &t, b16_back, DT_BF16, &rep, &err) == 0, "%s", err.msg);
    CHECK(io_tensors_equal(&t, b16, b16_back, 2) && rep.n_files > 1, "bf16 bits preserved through shards");
    snprintf(path, sizeof(path), "%s/" HF_SINGLE_NAME, model);
    CHECK(!hf__exists(path), "stale single file removed when sharding");
    free(b16);
    free(b16_back);
    free(src);
    free(back);
    param_table_free(&t);
    test_rmtree(dir);
}

TEST(hf_params_plain_mistral_into_coda_table_leaves_new_tensors) {
    char dir[64];
    test_mkdtemp(dir, sizeof(dir), "io");
    ModelConfig coda = io_tiny_config(), plain = coda;
    plain.differential = 0; plain.bounded = 0;
    ParamTable tp, tc;
    float* src = io_random_params(&plain, &tp, 2);
    param_table_build(&tc, &coda, DT_F32);
    CodaError err;
    CHECK(hf_save_params(dir, &tp, src, DT_F32, DT_F32, 0, &err) == 0, "%s", err.msg);
    float* dst = (float*)malloc(tc.total * sizeof(float));
    for (size_t i = 0; i < tc.total; i++) dst[i] = 7.0f;  // what "the caller initialised" them to
    HfLoadReport rep;
    CHECK(hf_load_params(dir, &tc, dst, DT_F32, &rep, &err) == 0, "%s", err.msg);
    // 7 new tensors per layer: theta, lambda_proj w/b, head_norm, write_proj w/b, eta
    CHECK(rep.n_coda_missing == 7 * coda.n_layers, "%d missing", rep.n_coda_missing);
    CHECK(rep.n_loaded == tp.n && rep.n_unexpected == 0, "");
    for (int i = 0; i < tc.n; i++) {
        const ParamTensor* p = &tc.tensors[i];
        const ParamTensor* q = param_find_by_name(&tp, p->name);
        int ok = 1;
        for (size_t k = 0; k < p->numel; k++) ok &= q ? dst[p->offset + k] == src[q->offset + k] : dst[p->offset + k] == 7.0f;
        CHECK(ok, "%s %s", p->name, q ? "not loaded" : "overwritten");
    }
    free(src);
    free(dst);
    param_table_free(&tp);
    param_table_free(&tc);
    test_rmtree(dir);
}

TEST(hf_params_report_unexpected_and_ignore_buffers) {
    char dir[64], path[128];
    test_mkdtemp(dir, sizeof(dir), "io");
    ModelConfig c = io_tiny_config();
    c.tie_embeddings = 1;  // table has no lm_head; a file that has one is fine (HF ignores it)
    ParamTable t;
    float* src = io_random_params(&c, &t, 3);
    float junk[64] = {0};
    int64_t s64[1] = {64}, s2[1] = {2};
    StWriteTensor extra[7] = {
        {"lm_head.weight", DT_F32, 1, s64, junk}, {"model.layers.0.self_attn.rotary_emb.inv_freq", DT_F32, 1, s2, junk},
        {"extra.a", DT_F32, 1, s2, junk}, {"extra.b", DT_F32, 1, s2, junk}, {"extra.c", DT_F32, 1, s2, junk},
        {"extra.d", DT_F32, 1, s2, junk}, {"extra.e", DT_I64, 1, s2, junk},
    };
    snprintf(path, sizeof(path), "%s/" HF_SINGLE_NAME, dir);
    io_write_model_file(path, &t, src, NULL, extra, 7);
    float* dst = (float*)malloc(t.total * sizeof(float));
    HfLoadReport rep;
    CodaError err;
    CHECK(hf_load_params(dir, &t, dst, DT_F32, &rep, &err) == 0, "%s", err.msg);
    CHECK(io_tensors_equal(&t, dst, src, sizeof(float)), "");
    CHECK(rep.n_ignored == 2, "lm_head (tied) and inv_freq ignored: %d", rep.n_ignored);
    CHECK(rep.n_unexpected == 5, "%d unexpected", rep.n_unexpected);
    CHECK(strcmp(rep.unexpected[0], "extra.a") == 0 && strcmp(rep.unexpected[HF_REPORT_NAMES - 1], "extra.d") == 0, "");
    free(src);
    free(dst);
    param_table_free(&t);
    test_rmtree(dir);
}

// Expects hf_load_params on dir to fail with a message containing each of what1 and what2.
static void io_expect_load_error(const char* dir, const ParamTable* t, const char* what1, const char* what2) {
    float* dst = (float*)malloc(t->total * sizeof(float));
    HfLoadReport rep;
    CodaError err;
    err.msg[0] = '\0';
    CHECK(hf_load_params(dir, t, dst, DT_F32, &rep, &err) != 0, "accepted a bad model (expected: %s)", what1);
    CHECK(strstr(err.msg, what1) != NULL, "expected '%s' in: %s", what1, err.msg);
    CHECK(strstr(err.msg, what2) != NULL, "expected '%s' in: %s", what2, err.msg);
    free(dst);
}

TEST(hf_params_reject_bad_checkpoints_naming_file_and_tensor) {
    char dir[64], path[256], shard2[256], index_path[256];
    test_mkdtemp(dir, sizeof(dir), "io");
    ModelConfig c = io_tiny_config();
    ParamTable t;
    float* src = io_random_params(&c, &t, 4);
    snprintf(path, sizeof(path), "%s/" HF_SINGLE_NAME, dir);
    snprintf(index_path, sizeof(index_path), "%s/" HF_INDEX_NAME, dir);
    io_expect_load_error(dir, &t, dir, "no model.safetensors or model.safetensors.index.json");
    // dtype: an integer tensor under a parameter's name
    int64_t ids[64 * 16] = {0};
    int64_t s_embed[2] = {64, 16};
    StWriteTensor bad_dtype = {"model.embed_tokens.weight", DT_I64, 2, s_embed, ids};
    io_write_model_file(path, &t, src, NULL, &bad_dtype, 1);
    io_expect_load_error(dir, &t, path, "tensor 'model.embed_tokens.weight' has dtype I64; parameters must be F32, F64, BF16 or F16");
    // shape: k_proj as if the file had 4 KV heads
    float kbig[16 * 16] = {0};
    int64_t s_k[2] = {16, 16};
    StWriteTensor bad_shape = {"model.layers.1.self_attn.k_proj.weight", DT_F32, 2, s_k, kbig};
    io_write_model_file(path, &t, src, NULL, &bad_shape, 1);
    io_expect_load_error(dir, &t, path, "tensor 'model.layers.1.self_attn.k_proj.weight' has shape [16, 16] but the config expects [8, 16]");
    int64_t s_flat[1] = {8 * 16};
    StWriteTensor bad_rank = {"model.layers.0.self_attn.k_proj.weight", DT_F32, 1, s_flat, kbig};
    io_write_model_file(path, &t, src, NULL, &bad_rank, 1);
    io_expect_load_error(dir, &t, path, "has shape [128] but the config expects [8, 16]");
    // a required (base) tensor missing; a missing CoDA tensor alone would be fine
    io_write_model_file(path, &t, src, "model.layers.1.mlp.up_proj.weight", NULL, 0);
    io_expect_load_error(dir, &t, path, "missing tensor 'model.layers.1.mlp.up_proj.weight' that the config requires (1 required tensor missing");
    // a truncated single file
    io_write_model_file(path, &t, src, NULL, NULL, 0);
    struct stat sb;
    stat(path, &sb);
    CHECK(truncate(path, sb.st_size - 1) == 0, "truncate");
    io_expect_load_error(dir, &t, path, "lm_head.weight': data_offsets");
    // sharded: a shard the index points to is gone
    CodaError err;
    CHECK(hf_save_params(dir, &t, src, DT_F32, DT_F32, 4096, &err) == 0, "%s", err.msg);
    JsonValue* index = NULL;
    CHECK(json_parse_file(index_path, &index, &err) == 0, "%s", err.msg);
    char shard1_name[64] = "";
    if (index) {
        const char* first = json_get(json_get(index, "weight_map"), "model.embed_tokens.weight")->string;
        snprintf(shard1_name, sizeof(shard1_name), "%s", first);
        snprintf(shard2, sizeof(shard2), "%s/model-00002-of-%.5s.safetensors", dir, strstr(first, "-of-") + 4);
    }
    json_free(index);
    char moved[300];
    snprintf(moved, sizeof(moved), "%s.moved", shard2);
    CHECK(rename(shard2, moved) == 0, "%s", shard2);
    io_expect_load_error(dir, &t, index_path, "in shard 'model-00002-of-");
    io_expect_load_error(dir, &t, shard2, "does not exist");
    CHECK(rename(moved, shard2) == 0, "");
    // the index promises a tensor its shard does not hold
    char* text = NULL;
    size_t len = 0;
    CHECK(json__read_file(index_path, &text, &len, &err) == 0, "%s", err.msg);
    char* entry = strstr(text, "\"model.layers.0.input_layernorm.weight\": \"model-");
    CHECK(entry != NULL, "");
    if (entry) {
        char* shard_digit = entry + strlen("\"model.layers.0.input_layernorm.weight\": \"model-0000");
        char keep = *shard_digit;
        *shard_digit = keep == '1' ? '3' : '1';  // send it to a different (existing) shard
        io_write_text(index_path, text);
        io_expect_load_error(dir, &t, "weight_map puts tensor 'model.layers.0.input_layernorm.weight' in", "that file has no such tensor");
        *shard_digit = keep;
        io_write_text(index_path, text);
    }
    free(text);
    // malformed index files
    io_write_text(index_path, "{\"metadata\": {}, \"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\",}}");
    io_expect_load_error(dir, &t, index_path, "JSON parse error at line 1:");
    io_write_text(index_path, "{\"metadata\": {\"total_size\": 1}}");
    io_expect_load_error(dir, &t, index_path, "malformed index: missing \"weight_map\" object");
    io_write_text(index_path, "{\"weight_map\": {\"model.norm.weight\": 3}}");
    io_expect_load_error(dir, &t, index_path, "malformed index: weight_map[\"model.norm.weight\"] must be a shard file name, found 3");
    io_write_text(index_path, "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}");
    io_expect_load_error(dir, &t, index_path, "must be a shard file name");
    // an index with only some shards listed: the tensors of the others are missing
    char partial[256];
    snprintf(partial, sizeof(partial), "{\"weight_map\": {\"model.embed_tokens.weight\": \"%s\"}}", shard1_name);
    io_write_text(index_path, partial);
    io_expect_load_error(dir, &t, index_path, "missing tensor 'model.layers.0.input_layernorm.weight'");
    free(src);
    param_table_free(&t);
    test_rmtree(dir);
}

// A weights file that is a directory or a pipe is refused at once (open() on a pipe blocks forever);
// the same bytes read from memory (st_open_memory, what the fuzzers use) give the same tensors.
TEST(safetensors_refuses_non_regular_files_and_reads_from_memory) {
    char dir[64], p[128], fifo[128];
    test_mkdtemp(dir, sizeof(dir), "io");
    snprintf(fifo, sizeof(fifo), "%s/pipe.safetensors", dir);
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo");
    io_expect_st_error(fifo, "not a regular file (a pipe)");
    io_expect_st_error(dir, "not a regular file (a directory)");
    snprintf(p, sizeof(p), "%s/m.safetensors", dir);
    float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    StWriteTensor ts[2] = {{"zeta", DT_F32, 2, shape, a}, {"alpha", DT_F32, 1, shape + 1, a + 3}};
    CodaError err;
    CHECK(st_write(p, ts, 2, NULL, 0, &err) == 0, "%s", err.msg);
    FILE* f = fopen(p, "rb");
    uint8_t bytes[512];
    size_t n = f ? fread(bytes, 1, sizeof(bytes), f) : 0;
    if (f) fclose(f);
    SafeTensors st;
    CHECK(st_open_memory(&st, "in-memory", bytes, n, &err) == 0, "%s", err.msg);
    const StTensor* t = st_find(&st, "alpha");
    CHECK(st.n == 2 && t && t->numel == 3 && memcmp(t->data, a + 3, 12) == 0, "");
    CHECK(st_find(&st, "zeta") == &st.tensors[0] && st_find(&st, "beta") == NULL, "binary search by name");
    st_close(&st);
    CHECK(st_open_memory(&st, "in-memory", bytes, 7, &err) != 0 && strstr(err.msg, "in-memory: file is too short"), "%s", err.msg);
    test_rmtree(dir);
}

// Regression: a model whose weights hold a NaN or an infinity loaded and evaluated to "ppl nan"
// with exit code 0. The loader names the first non-finite tensor and element and refuses, unless
// HfLoadOptions.allow_nonfinite; a finite value that overflows the buffer's narrower type is refused too.
TEST(hf_params_refuse_non_finite_weights_unless_allowed) {
    char dir[64], path[256];
    test_mkdtemp(dir, sizeof(dir), "io");
    snprintf(path, sizeof(path), "%s/" HF_SINGLE_NAME, dir);
    ModelConfig c = io_tiny_config();
    ParamTable t;
    float* src = io_random_params(&c, &t, 9);
    float* dst = (float*)malloc(t.total * sizeof(float));
    const ParamTensor* down = param_find(&t, PK_DOWN, 1);
    HfLoadReport rep;
    CodaError err;
    // F32 NaN and -Inf, BF16 +Inf: each named with its element index
    const float bad_f32[2] = {NAN, -INFINITY};
    const char* bad_name[2] = {"element 5 is nan", "element 5 is -inf"};
    for (int k = 0; k < 2; k++) {
        src[down->offset + 5] = bad_f32[k];
        io_write_model_file(path, &t, src, NULL, NULL, 0);
        err.msg[0] = 0;
        CHECK(hf_load_params(dir, &t, dst, DT_F32, &rep, &err) != 0, "non-finite weights accepted");
        CHECK(strstr(err.msg, path) && strstr(err.msg, "tensor 'model.layers.1.mlp.down_proj.weight'") && strstr(err.msg, bad_name[k]) &&
              strstr(err.msg, "allow_nonfinite"), "%s", err.msg);
        HfLoadOptions allow;
        memset(&allow, 0, sizeof(allow));
        allow.allow_nonfinite = 1;
        CHECK(hf_load_params_opts(dir, &t, dst, DT_F32, &allow, &rep, &err) == 0, "%s", err.msg);
        CHECK(memcmp(&dst[down->offset + 5], &bad_f32[k], 4) == 0, "allowed: loaded as it is");
    }
    src[down->offset + 5] = 0.5f;
    uint16_t* b16 = (uint16_t*)malloc(down->numel * 2);
    for (size_t i = 0; i < down->numel; i++) b16[i] = f32_to_bf16(src[down->offset + i]);
    b16[77] = 0x7f80;  // +inf
    StWriteTensor as_bf16 = {down->name, DT_BF16, down->ndim, down->shape, b16};
    io_write_model_file(path, &t, src, NULL, &as_bf16, 1);
    CHECK(hf_load_params(dir, &t, dst, DT_F32, &rep, &err) != 0 && strstr(err.msg, "element 77 is inf"), "%s", err.msg);
    // F64 1e300 is finite in the file but not as F32 or BF16
    double* f64 = (double*)malloc(down->numel * 8);
    for (size_t i = 0; i < down->numel; i++) f64[i] = src[down->offset + i];
    f64[3] = 1e300;
    StWriteTensor as_f64 = {down->name, DT_F64, down->ndim, down->shape, f64};
    io_write_model_file(path, &t, src, NULL, &as_f64, 1);
    CHECK(hf_load_params(dir, &t, dst, DT_F32, &rep, &err) != 0 && strstr(err.msg, "element 3 = 1e+300 (F64) overflows F32"), "%s", err.msg);
    f64[3] = 0.25;
    io_write_model_file(path, &t, src, NULL, &as_f64, 1);
    CHECK(hf_load_params(dir, &t, dst, DT_F32, &rep, &err) == 0 && dst[down->offset + 3] == 0.25f, "%s", err.msg);
    // sharded: the message names the shard that holds it
    unlink(path);
    src[param_find(&t, PK_FINAL_NORM, 0)->offset + 2] = NAN;
    CHECK(hf_save_params(dir, &t, src, DT_F32, DT_F32, 4096, &err) == 0, "%s", err.msg);
    CHECK(hf_load_params(dir, &t, dst, DT_F32, &rep, &err) != 0 && strstr(err.msg, "-of-") &&
          strstr(err.msg, "tensor 'model.norm.weight' element 2 is nan"), "%s", err.msg);
    free(f64); free(b16); free(dst); free(src);
    param_table_free(&t);
    test_rmtree(dir);
}

// ---- fuzz inputs (dev/fuzz/, `make fuzz`) ----
// Every committed seed must still be accepted by its target (a seed that stops being accepted means
// a format or a harness changed: rerun dev/fuzz/make_corpus.c), and every input a fuzzer ever
// saved under dev/test/fixtures/fuzz/<target>/ (crashes, leaks, timeouts found and fixed since)
// must go through the same entry point cleanly: accepted, or refused with a message.
#include "../fuzz/fuzz_targets.h"

// Runs every file of dir through target t: counts them; *bad counts the ones that fail `want`
// (FUZZ_ACCEPTED only, or anything clean), each reported. Returns -1 when dir does not exist.
static int io_replay_dir(const FuzzTarget* t, const char* dir, int must_accept, int* bad) {
    DIR* d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE* f = fopen(path, "rb");
        if (!f) continue;
        uint8_t* data = NULL;
        size_t len = 0, cap = 0;
        for (;;) {  // exact-size copy: a read past the input is a read past the buffer
            if (len == cap) { cap = cap ? 2 * cap : 4096; data = (uint8_t*)realloc(data, cap); }
            size_t got = fread(data + len, 1, cap - len, f);
            len += got;
            if (got == 0) break;
        }
        fclose(f);
        uint8_t* exact = (uint8_t*)malloc(len ? len : 1);
        if (len) memcpy(exact, data, len);
        free(data);
        CodaError err;
        err.msg[0] = 0;
        int rc = t->fn(exact, len, &err);
        free(exact);
        int ok = must_accept ? rc == FUZZ_ACCEPTED : (rc == FUZZ_ACCEPTED || (rc == FUZZ_REFUSED && err.msg[0]));
        if (!ok) {
            (*bad)++;
            CHECK(0, "%s: target %s %s: %s", path, t->name,
                  rc == FUZZ_BROKEN ? "broke an invariant" : rc == FUZZ_REFUSED ? "refused it" : "accepted it", err.msg[0] ? err.msg : "(no message)");
        }
        n++;
    }
    closedir(d);
    return n;
}

TEST(fuzz_inputs_replay_cleanly) {
    int seeds = 0, saved = 0, bad = 0;
    for (int i = 0; i < FUZZ_N_TARGETS; i++) {
        const FuzzTarget* t = &FUZZ_TARGETS[i];
        char dir[256];
        snprintf(dir, sizeof(dir), "dev/fuzz/corpus/%s", t->name);
        int n = io_replay_dir(t, dir, 1, &bad);
        CHECK(n > 0, "%s: no seed inputs (the suite runs from the repository root)", dir);
        seeds += n > 0 ? n : 0;
        snprintf(dir, sizeof(dir), "dev/test/fixtures/fuzz/%s", t->name);
        n = io_replay_dir(t, dir, 0, &bad);
        saved += n > 0 ? n : 0;
    }
    // a fixture directory must belong to a target (a renamed target would silently stop its replays)
    DIR* d = opendir("dev/test/fixtures/fuzz");
    struct dirent* e;
    while (d && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') CHECK(fuzz_target_find(e->d_name) != NULL, "dev/test/fixtures/fuzz/%s: no such fuzz target", e->d_name);
    if (d) closedir(d);
    printf("    %d seed inputs and %d saved fuzz findings over %d targets, %d bad\n", seeds, saved, FUZZ_N_TARGETS, bad);
}
