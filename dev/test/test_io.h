// test_io.h — file formats: the JSON reader/writer, safetensors, Hugging Face config.json and
// (sharded) weight directories. Every error path asserts the specific text of its message.
#pragma once
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../../llmc/json.h"

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
