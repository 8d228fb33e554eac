// json.h — a small JSON reader (whole document into a tree of JsonValue) and writer helpers.
// Plain C that also compiles as C++ (nvcc). Linear time: one pass over the text, strings decoded
// in place into one allocation each, arrays and objects grown by doubling. Used for config.json,
// safetensors headers, index.json and the 1.8 MB tokenizer.json.
//
// Accepts RFC 8259 JSON, plus NaN / Infinity / -Infinity as Python's json module writes them
// (so a config written by Python with a non-finite float still loads). Escapes decode to UTF-8;
// \u surrogate pairs combine, an unpaired surrogate is an error (it has no UTF-8 form). Raw bytes
// of the text are copied through unchecked. Errors name the line and column (1-based; the column
// counts bytes) and what was expected there.
#pragma once
#include <errno.h>
#include <math.h>
#include "common.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct JsonValue JsonValue;
struct JsonValue {
    JsonType type;
    int boolean;                // JSON_BOOL
    double number;              // JSON_NUMBER (always set, also for integer literals)
    int is_int;                 // JSON_NUMBER: an integer literal (no '.', no exponent) that fits in int64
    int64_t integer;            // JSON_NUMBER: its exact value when is_int
    char* string;               // JSON_STRING: NUL-terminated, may contain NULs (see string_len)
    size_t string_len;
    size_t count;               // ARRAY elements or OBJECT members
    JsonValue* items;           // ARRAY elements or OBJECT values
    char** keys;                // OBJECT keys (NUL-terminated), same order as in the text
    size_t* key_lens;
};

// Deeper nesting than this is refused instead of overflowing the C stack (the parser recurses).
#define JSON_MAX_DEPTH 1000

static inline const char* json_type_name(JsonType t) {
    switch (t) {
        case JSON_NULL: return "null";
        case JSON_BOOL: return "boolean";
        case JSON_NUMBER: return "number";
        case JSON_STRING: return "string";
        case JSON_ARRAY: return "array";
        case JSON_OBJECT: return "object";
    }
    return "?";
}

// ---------------------------------------------------------------------------------------------
// Reader

typedef struct {
    const char* text;
    size_t len;
    size_t pos;
    int depth;
    CodaError* err;
} JsonParser;

// Allocation failure is fatal, as everywhere in coda.c (the sizes here are bounded by the text).
static inline void* json__realloc(void* p, size_t bytes) {
    void* q = realloc(p, bytes ? bytes : 1);
    if (!q) coda_fatal("out of host memory allocating %zu bytes while parsing JSON", bytes);
    return q;
}

// Describes the byte at `at` for an error message: 'x', end of input, or a hex byte.
static inline void json__describe(const JsonParser* p, size_t at, char* buf, size_t n) {
    if (at >= p->len) snprintf(buf, n, "end of input");
    else {
        unsigned char c = (unsigned char)p->text[at];
        if (c >= 0x20 && c < 0x7f) snprintf(buf, n, "'%c'", c);
        else snprintf(buf, n, "byte 0x%02x", c);
    }
}

// Reports "JSON parse error at line L:C: <message>" for the byte offset `at`. Counting lines only
// happens on this error path, so the parse itself stays a single pass.
static inline int json__fail(JsonParser* p, size_t at, const char* fmt, ...) {
    if (!p->err) return -1;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    int line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < at && i < p->len; i++)
        if (p->text[i] == '\n') { line++; line_start = i + 1; }
    return coda_errorf(p->err, "JSON parse error at line %d:%zu: %s", line, at - line_start + 1, what);
}

static inline void json__skip_ws(JsonParser* p) {
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

// Frees what a value owns (not the value itself).
static inline void json__free_contents(JsonValue* v) {
    if (v->type == JSON_STRING) free(v->string);
    if (v->type == JSON_ARRAY || v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->count; i++) json__free_contents(&v->items[i]);
        free(v->items);
    }
    if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->count; i++) free(v->keys[i]);
        free(v->keys);
        free(v->key_lens);
    }
    memset(v, 0, sizeof(*v));
}

static inline int json__hex4(const char* s, unsigned* out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static inline size_t json__put_utf8(char* dst, unsigned cp) {
    if (cp < 0x80) { dst[0] = (char)cp; return 1; }
    if (cp < 0x800) { dst[0] = (char)(0xc0 | (cp >> 6)); dst[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        dst[0] = (char)(0xe0 | (cp >> 12)); dst[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        dst[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    dst[0] = (char)(0xf0 | (cp >> 18)); dst[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); dst[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

// Parses the string starting at the opening quote. Two passes over its bytes: find the closing
// quote (the raw length bounds the decoded length: every escape shrinks), then decode.
static inline int json__parse_string(JsonParser* p, char** out, size_t* out_len) {
    size_t start = p->pos + 1, i = start;
    int has_escape = 0;
    for (;;) {
        if (i >= p->len) return json__fail(p, p->pos, "unterminated string (no closing '\"')");
        unsigned char c = (unsigned char)p->text[i];
        if (c == '"') break;
        if (c == '\\') { has_escape = 1; i += 2; continue; }
        if (c < 0x20) return json__fail(p, i, "control character 0x%02x inside a string (must be escaped)", c);
        i++;
    }
    size_t end = i, raw = end - start;
    char* s = (char*)json__realloc(NULL, raw + 1);
    size_t n = 0;
    if (!has_escape) {
        memcpy(s, p->text + start, raw);
        n = raw;
    } else {
        for (i = start; i < end;) {
            char c = p->text[i];
            if (c != '\\') { s[n++] = c; i++; continue; }
            char e = p->text[i + 1];
            switch (e) {
                case '"': s[n++] = '"'; break;
                case '\\': s[n++] = '\\'; break;
                case '/': s[n++] = '/'; break;
                case 'b': s[n++] = '\b'; break;
                case 'f': s[n++] = '\f'; break;
                case 'n': s[n++] = '\n'; break;
                case 'r': s[n++] = '\r'; break;
                case 't': s[n++] = '\t'; break;
                case 'u': {
                    unsigned cp, lo;
                    if (i + 6 > end || json__hex4(p->text + i + 2, &cp) != 0) {
                        free(s);
                        return json__fail(p, i, "expected 4 hex digits after \\u");
                    }
                    if (cp >= 0xdc00 && cp <= 0xdfff) {
                        free(s);
                        return json__fail(p, i, "unpaired UTF-16 low surrogate \\u%04x", cp);
                    }
                    if (cp >= 0xd800 && cp <= 0xdbff) {
                        if (i + 12 > end || p->text[i + 6] != '\\' || p->text[i + 7] != 'u' ||
                            json__hex4(p->text + i + 8, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff) {
                            free(s);
                            return json__fail(p, i, "unpaired UTF-16 high surrogate \\u%04x (expected a low surrogate \\udc00-\\udfff next)", cp);
                        }
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        i += 6;
                    }
                    n += json__put_utf8(s + n, cp);
                    i += 4;  // the 4 hex digits; the "\u" is skipped below
                    break;
                }
                default:
                    free(s);
                    if ((unsigned char)e >= 0x20 && (unsigned char)e < 0x7f)
                        return json__fail(p, i, "invalid escape '\\%c' in string", e);
                    return json__fail(p, i, "invalid escape in string (byte 0x%02x after '\\')", (unsigned char)e);
            }
            i += 2;
        }
    }
    s[n] = '\0';
    *out = s;
    *out_len = n;
    p->pos = end + 1;
    return 0;
}

static inline int json__is_digit(char c) { return c >= '0' && c <= '9'; }

// number = -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? ; also NaN, Infinity, -Infinity.
static inline int json__parse_number(JsonParser* p, JsonValue* v) {
    const char* t = p->text;
    size_t i = p->pos, start = p->pos;
    int negative = 0;
    if (t[i] == '-') { negative = 1; i++; }
    if (i + 8 <= p->len && memcmp(t + i, "Infinity", 8) == 0) {
        v->type = JSON_NUMBER;
        v->number = negative ? -INFINITY : INFINITY;
        p->pos = i + 8;
        return 0;
    }
    if (i >= p->len || !json__is_digit(t[i]))
        return json__fail(p, i, "expected a digit after '-'");
    // Integer part, accumulated exactly as a magnitude; overflow past 2^63 just clears is_int.
    uint64_t mag = 0;
    int overflow = 0;
    if (t[i] == '0') {
        i++;
        if (i < p->len && json__is_digit(t[i])) return json__fail(p, i - 1, "leading zeros are not allowed in numbers");
    } else {
        while (i < p->len && json__is_digit(t[i])) {
            unsigned d = (unsigned)(t[i] - '0');
            if (mag > (UINT64_MAX - d) / 10) overflow = 1;
            else mag = mag * 10 + d;
            i++;
        }
    }
    int is_int = 1;
    if (i < p->len && t[i] == '.') {
        is_int = 0;
        i++;
        if (i >= p->len || !json__is_digit(t[i])) return json__fail(p, i, "expected a digit after the decimal point");
        while (i < p->len && json__is_digit(t[i])) i++;
    }
    if (i < p->len && (t[i] == 'e' || t[i] == 'E')) {
        is_int = 0;
        i++;
        if (i < p->len && (t[i] == '+' || t[i] == '-')) i++;
        if (i >= p->len || !json__is_digit(t[i])) return json__fail(p, i, "expected a digit in the exponent");
        while (i < p->len && json__is_digit(t[i])) i++;
    }
    // strtod needs a NUL-terminated copy (the text need not be terminated). The grammar above has
    // already been checked, so strtod consumes exactly this token (the C locale is assumed).
    v->type = JSON_NUMBER;
    if (is_int && !overflow && mag <= ((uint64_t)1 << 53)) {  // exact as a double: skip strtod
        v->number = negative ? -(double)mag : (double)mag;
        v->is_int = 1;
        v->integer = negative ? -(int64_t)mag : (int64_t)mag;
        p->pos = i;
        return 0;
    }
    size_t n = i - start;
    char small[64];
    char* buf = n < sizeof(small) ? small : (char*)json__realloc(NULL, n + 1);
    memcpy(buf, t + start, n);
    buf[n] = '\0';
    v->number = strtod(buf, NULL);
    if (buf != small) free(buf);
    if (is_int && !overflow) {
        if (!negative && mag <= (uint64_t)INT64_MAX) { v->is_int = 1; v->integer = (int64_t)mag; }
        else if (negative && mag <= (uint64_t)INT64_MAX + 1) { v->is_int = 1; v->integer = (int64_t)(0 - mag); }
    }
    p->pos = i;
    return 0;
}

static inline int json__parse_value(JsonParser* p, JsonValue* v);

static inline int json__parse_array(JsonParser* p, JsonValue* v) {
    size_t open = p->pos, cap = 0;
    if (++p->depth > JSON_MAX_DEPTH) return json__fail(p, open, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    v->type = JSON_ARRAY;
    p->pos++;
    json__skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == ']') { p->pos++; p->depth--; return 0; }
    for (;;) {
        if (v->count == cap) {
            cap = cap ? 2 * cap : 8;
            v->items = (JsonValue*)json__realloc(v->items, cap * sizeof(JsonValue));
        }
        JsonValue* item = &v->items[v->count];
        memset(item, 0, sizeof(*item));
        if (json__parse_value(p, item) != 0) { json__free_contents(v); return -1; }
        v->count++;
        json__skip_ws(p);
        if (p->pos < p->len && p->text[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->text[p->pos] == ']') { p->pos++; break; }
        char found[32];
        json__describe(p, p->pos, found, sizeof(found));
        size_t element = v->count - 1;
        json__free_contents(v);
        return json__fail(p, p->pos, "expected ',' or ']' after array element %zu, found %s", element, found);
    }
    v->items = (JsonValue*)json__realloc(v->items, v->count * sizeof(JsonValue));  // give back the slack
    p->depth--;
    return 0;
}

static inline int json__parse_object(JsonParser* p, JsonValue* v) {
    size_t open = p->pos, cap = 0;
    if (++p->depth > JSON_MAX_DEPTH) return json__fail(p, open, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    v->type = JSON_OBJECT;
    p->pos++;
    json__skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == '}') { p->pos++; p->depth--; return 0; }
    char found[32];
    for (;;) {
        json__skip_ws(p);
        if (p->pos >= p->len || p->text[p->pos] != '"') {
            json__describe(p, p->pos, found, sizeof(found));
            json__free_contents(v);
            return json__fail(p, p->pos, "expected '\"' to start an object key, found %s", found);
        }
        if (v->count == cap) {
            cap = cap ? 2 * cap : 8;
            v->items = (JsonValue*)json__realloc(v->items, cap * sizeof(JsonValue));
            v->keys = (char**)json__realloc(v->keys, cap * sizeof(char*));
            v->key_lens = (size_t*)json__realloc(v->key_lens, cap * sizeof(size_t));
        }
        char* key;
        size_t key_len;
        if (json__parse_string(p, &key, &key_len) != 0) { json__free_contents(v); return -1; }
        json__skip_ws(p);
        if (p->pos >= p->len || p->text[p->pos] != ':') {
            json__describe(p, p->pos, found, sizeof(found));
            int rc = json__fail(p, p->pos, "expected ':' after object key \"%.64s\", found %s", key, found);
            free(key);
            json__free_contents(v);
            return rc;
        }
        p->pos++;
        JsonValue* item = &v->items[v->count];
        memset(item, 0, sizeof(*item));
        if (json__parse_value(p, item) != 0) { free(key); json__free_contents(v); return -1; }
        v->keys[v->count] = key;
        v->key_lens[v->count] = key_len;
        v->count++;
        json__skip_ws(p);
        if (p->pos < p->len && p->text[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->text[p->pos] == '}') { p->pos++; break; }
        json__describe(p, p->pos, found, sizeof(found));
        json__free_contents(v);
        return json__fail(p, p->pos, "expected ',' or '}' after object member, found %s", found);
    }
    v->items = (JsonValue*)json__realloc(v->items, v->count * sizeof(JsonValue));
    v->keys = (char**)json__realloc(v->keys, v->count * sizeof(char*));
    v->key_lens = (size_t*)json__realloc(v->key_lens, v->count * sizeof(size_t));
    p->depth--;
    return 0;
}

// Literal words: true, false, null, and Python's NaN / Infinity.
static inline int json__parse_word(JsonParser* p, JsonValue* v, const char* word) {
    size_t n = strlen(word);
    if (p->pos + n > p->len || memcmp(p->text + p->pos, word, n) != 0)
        return json__fail(p, p->pos, "invalid literal: expected '%s'", word);
    p->pos += n;
    return 0;
}

// On failure the value owns nothing (no allocation survives): every level frees its own
// partial work, so callers only free what they completed.
static inline int json__parse_value(JsonParser* p, JsonValue* v) {
    json__skip_ws(p);
    if (p->pos >= p->len) return json__fail(p, p->pos, "expected a JSON value, found end of input");
    char c = p->text[p->pos];
    switch (c) {
        case '{': return json__parse_object(p, v);
        case '[': return json__parse_array(p, v);
        case '"':
            if (json__parse_string(p, &v->string, &v->string_len) != 0) return -1;
            v->type = JSON_STRING;
            return 0;
        case 't': v->boolean = 1; v->type = JSON_BOOL; return json__parse_word(p, v, "true");
        case 'f': v->boolean = 0; v->type = JSON_BOOL; return json__parse_word(p, v, "false");
        case 'n': v->type = JSON_NULL; return json__parse_word(p, v, "null");
        case 'N': v->type = JSON_NUMBER; v->number = NAN; return json__parse_word(p, v, "NaN");
        case 'I': v->type = JSON_NUMBER; v->number = INFINITY; return json__parse_word(p, v, "Infinity");
        default:
            if (c == '-' || json__is_digit(c)) return json__parse_number(p, v);
    }
    char found[32];
    json__describe(p, p->pos, found, sizeof(found));
    return json__fail(p, p->pos, "expected a JSON value (object, array, string, number, true, false or null), found %s", found);
}

// Parses text[0..len) (need not be NUL-terminated). On success *out is a tree owned by the caller
// (free with json_free); on failure *out is NULL and err says where and what.
static inline int json_parse(const char* text, size_t len, JsonValue** out, CodaError* err) {
    *out = NULL;
    JsonParser p;
    p.text = text;
    p.len = len;
    p.pos = 0;
    p.depth = 0;
    p.err = err;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) p.pos = 3;  // UTF-8 byte-order mark
    JsonValue* root = (JsonValue*)json__realloc(NULL, sizeof(JsonValue));
    memset(root, 0, sizeof(*root));
    if (json__parse_value(&p, root) != 0) { free(root); return -1; }
    json__skip_ws(&p);
    if (p.pos != len) {
        char found[32];
        json__describe(&p, p.pos, found, sizeof(found));
        json__free_contents(root);
        free(root);
        return json__fail(&p, p.pos, "unexpected %s after the end of the JSON value", found);
    }
    *out = root;
    return 0;
}

// Frees a tree returned by json_parse / json_parse_file (only the root, never a member of it).
static inline void json_free(JsonValue* v) {
    if (!v) return;
    json__free_contents(v);
    free(v);
}

// Reads a whole file into a malloc'd buffer (NUL-terminated for convenience). Message names the file.
static inline int json__read_file(const char* path, char** out, size_t* out_len, CodaError* err) {
    FILE* f = fopen(path, "rb");
    if (!f) return coda_errorf(err, "%s: cannot open: %s", path, strerror(errno));
    char* buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {  // read in growing chunks: works for pipes and files alike
        if (cap - len < 65536) {
            cap = cap ? 2 * cap : 1 << 20;
            buf = (char*)json__realloc(buf, cap + 1);
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int failed = ferror(f), e = errno;
    fclose(f);
    if (failed) { free(buf); return coda_errorf(err, "%s: read error: %s", path, strerror(e)); }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}

static inline int json_parse_file(const char* path, JsonValue** out, CodaError* err) {
    *out = NULL;
    char* text = NULL;
    size_t len = 0;
    if (json__read_file(path, &text, &len, err) != 0) return -1;
    CodaError inner;
    int rc = json_parse(text, len, out, &inner);
    free(text);
    if (rc != 0) return coda_errorf(err, "%s: %s", path, inner.msg);
    return 0;
}

// Member `key` of an object; NULL if absent or obj is not an object. With duplicate keys the last
// one wins, as in Python's json and serde_json.
static inline const JsonValue* json_get(const JsonValue* obj, const char* key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = obj->count; i-- > 0;)
        if (obj->key_lens[i] == n && memcmp(obj->keys[i], key, n) == 0) return &obj->items[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Writer: a growable text buffer and the few JSON encoders the file writers need.

typedef struct {
    char* data;   // NUL-terminated at all times once anything was appended
    size_t len;
    size_t cap;
} JsonBuf;

static inline void jbuf_init(JsonBuf* b) { b->data = NULL; b->len = 0; b->cap = 0; }
static inline void jbuf_free(JsonBuf* b) { free(b->data); jbuf_init(b); }

static inline void jbuf_append(JsonBuf* b, const char* s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->data = (char*)json__realloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}
static inline void jbuf_puts(JsonBuf* b, const char* s) { jbuf_append(b, s, strlen(s)); }

static inline void jbuf_printf(JsonBuf* b, const char* fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof(small)) { jbuf_append(b, small, (size_t)n); return; }
    char* big = (char*)json__realloc(NULL, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    jbuf_append(b, big, (size_t)n);
    free(big);
}

// A quoted JSON string. Bytes >= 0x80 pass through (UTF-8 stays UTF-8); control characters and
// NUL are escaped, so any byte string round-trips through json_parse.
static inline void json_write_string(JsonBuf* b, const char* s, size_t n) {
    jbuf_append(b, "\"", 1);
    size_t run = 0;  // copy unescaped runs in one go
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char* esc = NULL;
        char hex[8];
        switch (c) {
            case '"': esc = "\\\""; break;
            case '\\': esc = "\\\\"; break;
            case '\n': esc = "\\n"; break;
            case '\r': esc = "\\r"; break;
            case '\t': esc = "\\t"; break;
            case '\b': esc = "\\b"; break;
            case '\f': esc = "\\f"; break;
            default:
                if (c < 0x20) { snprintf(hex, sizeof(hex), "\\u%04x", c); esc = hex; }
        }
        if (!esc) continue;
        jbuf_append(b, s + run, i - run);
        jbuf_puts(b, esc);
        run = i + 1;
    }
    jbuf_append(b, s + run, n - run);
    jbuf_append(b, "\"", 1);
}
static inline void json_write_cstr(JsonBuf* b, const char* s) { json_write_string(b, s, strlen(s)); }

// Non-finite values as Python's json writes them (json_parse reads them back).
static inline int json__write_nonfinite(JsonBuf* b, double v) {
    if (isnan(v)) { jbuf_puts(b, "NaN"); return 1; }
    if (isinf(v)) { jbuf_puts(b, v > 0 ? "Infinity" : "-Infinity"); return 1; }
    return 0;
}

// %g can print a large integral value with neither '.' nor exponent ("12345678901234562"), which
// every reader (json_parse, Python) takes for an integer: append ".0" so it stays a float.
static inline void json__puts_float_literal(JsonBuf* b, const char* s) {
    jbuf_puts(b, s);
    if (!strpbrk(s, ".eE")) jbuf_puts(b, ".0");
}

// The shortest decimal that reads back as exactly `v`; integral values keep a ".0" so that
// Python reads them as floats (1000000.0, not 1e+06).
static inline void json_write_double(JsonBuf* b, double v) {
    if (json__write_nonfinite(b, v)) return;
    if (v == floor(v) && fabs(v) < 1e16) { jbuf_printf(b, "%.1f", v); return; }
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    json__puts_float_literal(b, buf);
}
// Same for a float: the shortest decimal that reads back as the same float (1e-05, not 9.99999975e-06).
static inline void json_write_float(JsonBuf* b, float v) {
    if (json__write_nonfinite(b, v)) return;
    if (v == floorf(v) && fabsf(v) < 1e7f) { jbuf_printf(b, "%.1f", (double)v); return; }
    char buf[40];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    json__puts_float_literal(b, buf);
}
