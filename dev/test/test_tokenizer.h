// test_tokenizer.h — llmc/tokenizer.h against real tokenizers and on its own terms:
//   * the 12 expected-id cases of npm mistral-tokenizer-js (fixtures/mistral_js_cases.txt), v0.1 and v0.3;
//   * every line of Brown and FOLDOC, v0.1 and v0.3, against Hugging Face `tokenizers` (per-line
//     hashes and whole-corpus digests in fixtures/; how they were made: fixtures/README.md);
//   * 618 edge cases with HF's ids and decodes, for v0.1, v0.3 and four Metaspace forms;
//   * round trips of arbitrary bytes, the exactness of the word shortcut, linear-ish time on
//     adversarial inputs, and a toy tokenizer.json for merge order, ties, byte fallback, special
//     tokens, the Metaspace variants and every load error.
// The Mistral files come from `make test`'s dependency on dev/data/fetch_tokenizer.sh, the corpora
// from dev/data/fetch_brown.sh / fetch_foldoc.sh; a test that needs a missing file FAILS and says
// which script to run, so a CI run that could not fetch is never mistaken for a pass.
#pragma once
#include <inttypes.h>
#include <unistd.h>
#include "../../llmc/tokenizer.h"
#include "../../llmc/rand.h"

#define TOKT_V01 "data/tokenizers/mistral-v0.1/tokenizer.json"
#define TOKT_V03 "data/tokenizers/mistral-v0.3/tokenizer.json"
#define TOKT_FIXTURES "dev/test/fixtures/"

// ---- helpers ----

// Reads a whole file (NUL-terminated); NULL if it cannot be read.
static char* tokt_read_file(const char* path, size_t* len) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char* buf = (char*)malloc((size_t)(n < 0 ? 0 : n) + 1);
    if (!buf || n < 0 || fread(buf, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(buf); return NULL; }
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

// Loads a Mistral tokenizer fetched by dev/data/fetch_tokenizer.sh; a failed CHECK if absent.
static int tokt_load_mistral(Tokenizer* t, const char* path) {
    CodaError err;
    if (access(path, R_OK) != 0) {
        CHECK(0, "%s is missing: run dev/data/fetch_tokenizer.sh (make test does; it needs npm once)", path);
        return -1;
    }
    int rc = tokenizer_load(t, path, &err);
    CHECK(rc == 0, "%s", err.msg);
    return rc;
}

// FNV-1a 64 over bytes; the same definition as dev/test/hf_tokenizer_reference.py.
static uint64_t tokt_fnv(uint64_t h, const void* data, size_t n) {
    const unsigned char* p = (const unsigned char*)data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
    return h;
}
#define TOKT_FNV_OFFSET 0xcbf29ce484222325ull
// Ids are hashed as uint32 little-endian.
static uint64_t tokt_fnv_ids(uint64_t h, const int32_t* ids, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char b[4] = {(unsigned char)ids[i], (unsigned char)(ids[i] >> 8), (unsigned char)(ids[i] >> 16), (unsigned char)(ids[i] >> 24)};
        h = tokt_fnv(h, b, 4);
    }
    return h;
}

// encode, then compare with expected ids; prints both on mismatch.
static void tokt_expect_ids(const Tokenizer* t, const char* text, size_t len, int flags, const int32_t* want, size_t n_want, const char* what) {
    int32_t* ids = NULL;
    size_t n = 0;
    CodaError err;
    int rc = tokenizer_encode_flags(t, text, len, flags, &ids, &n, &err);
    CHECK(rc == 0, "%s: %s", what, err.msg);
    int same = rc == 0 && n == n_want && (n == 0 || memcmp(ids, want, n * sizeof(int32_t)) == 0);
    if (!same) {
        char got_s[512] = "", want_s[512] = "";
        for (size_t i = 0; i < n && strlen(got_s) < 480; i++) snprintf(got_s + strlen(got_s), 32, "%d ", ids[i]);
        for (size_t i = 0; i < n_want && strlen(want_s) < 480; i++) snprintf(want_s + strlen(want_s), 32, "%d ", want[i]);
        CHECK(same, "%s: got [%s] want [%s]", what, got_s, want_s);
    }
    free(ids);
}

// decode(encode(text)) must give text back byte for byte.
static int tokt_round_trips(const Tokenizer* t, const char* text, size_t len, int add_bos) {
    int32_t* ids;
    size_t n, out_len;
    char* out;
    CodaError err;
    if (tokenizer_encode(t, text, len, add_bos, &ids, &n, &err) != 0) return 0;
    int ok = tokenizer_decode(t, ids, n, &out, &out_len, &err) == 0 && out_len == len && memcmp(out, text, len) == 0;
    if (ok) free(out);
    free(ids);
    return ok;
}

static int tokt_contains_meta(const char* s, size_t n) {
    for (size_t i = 0; i + 3 <= n; i++)
        if (memcmp(s + i, TOK_META, 3) == 0) return 1;
    return 0;
}

// ---- mistral-tokenizer-js cases ----

// Runs fixtures/mistral_js_cases.txt (v0.1 ids) on t; v03 shifts every id >= 3 by 768.
static void tokt_run_js_cases(const Tokenizer* t, int v03) {
    size_t len;
    char* data = tokt_read_file(TOKT_FIXTURES "mistral_js_cases.txt", &len);
    CHECK(data != NULL, "cannot read " TOKT_FIXTURES "mistral_js_cases.txt");
    if (!data) return;
    int cases = 0;
    for (char* line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char* tab = strchr(line, '\t');
        CHECK(tab != NULL, "malformed fixture line: %s", line);
        if (!tab) continue;
        *tab = 0;
        char text[4096];  // unescape \n \t \\ in place of the fixture text
        size_t n = 0;
        for (char* p = line; *p && n < sizeof(text) - 1; p++) {
            if (*p == '\\' && p[1]) {
                p++;
                text[n++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
            } else text[n++] = *p;
        }
        text[n] = 0;
        int32_t want[1024];
        size_t n_want = 0;
        for (char* q = tab + 1; *q && n_want < 1024;) {
            char* end;
            long id = strtol(q, &end, 10);
            if (end == q) break;
            want[n_want++] = (int32_t)(v03 && id >= 3 ? id + 768 : id);
            q = end;
        }
        tokt_expect_ids(t, text, n, TOKENIZER_ADD_BOS, want, n_want, text);
        CHECK(tokt_round_trips(t, text, n, 1), "decode(encode(x)) != x for %s", text);
        cases++;
    }
    CHECK(cases == 12, "expected the 12 cases of mistral-tokenizer-js, read %d", cases);
    free(data);
}

TEST(tokenizer_mistral_js_cases_v01) {
    Tokenizer t;
    if (tokt_load_mistral(&t, TOKT_V01) != 0) return;
    CHECK(tokenizer_vocab_size(&t) == 32000 && tokenizer_bos_id(&t) == 1 && tokenizer_eos_id(&t) == 2,
          "vocab %d bos %d eos %d", tokenizer_vocab_size(&t), tokenizer_bos_id(&t), tokenizer_eos_id(&t));
    tokt_run_js_cases(&t, 0);
    tokenizer_free(&t);
}

TEST(tokenizer_mistral_js_cases_v03) {
    Tokenizer t;
    if (tokt_load_mistral(&t, TOKT_V03) != 0) return;
    CHECK(tokenizer_vocab_size(&t) == 32768 && tokenizer_bos_id(&t) == 1 && tokenizer_eos_id(&t) == 2,
          "vocab %d bos %d eos %d", tokenizer_vocab_size(&t), tokenizer_bos_id(&t), tokenizer_eos_id(&t));
    tokt_run_js_cases(&t, 1);
    // DATA.md's example: "Hello world!" is 1 22557 1526 28808 in v0.1, each + 768 in v0.3.
    const int32_t hello[] = {1, 23325, 2294, 29576};
    tokt_expect_ids(&t, "Hello world!", 12, TOKENIZER_ADD_BOS, hello, 4, "Hello world! (v0.3)");
    tokenizer_free(&t);
}

// ---- Brown and FOLDOC against Hugging Face tokenizers ----

typedef struct {
    int n_files;
    char file[4][128];
    size_t bytes[4];
    uint64_t fnv[4];
    size_t lines, text_bytes, tokens[2];
    uint64_t digest[2];
} ToktCorpusRef;

// Reads the lines of fixtures/hf_tokenizer_digests.txt that describe `corpus`.
static int tokt_read_ref(const char* corpus, ToktCorpusRef* r) {
    memset(r, 0, sizeof(*r));
    FILE* f = fopen(TOKT_FIXTURES "hf_tokenizer_digests.txt", "r");
    if (!f) return -1;
    char line[512], name[64], ver[16];
    int got = 0;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#' || sscanf(line, "%63s", name) != 1 || strcmp(name, corpus) != 0) continue;
        size_t a, b;
        uint64_t h;
        char file[128];
        if (r->n_files < 4 && sscanf(line, "%*s file %127s bytes %zu fnv64 %" SCNx64, file, &a, &h) == 3) {
            snprintf(r->file[r->n_files], sizeof(r->file[0]), "%s", file);
            r->bytes[r->n_files] = a;
            r->fnv[r->n_files++] = h;
        } else if (sscanf(line, "%*s lines %zu text_bytes %zu", &a, &b) == 2) {
            r->lines = a; r->text_bytes = b; got |= 1;
        } else if (sscanf(line, "%*s %15s tokens %zu digest %" SCNx64, ver, &a, &h) == 3) {
            int v = strcmp(ver, "v0.3") == 0;
            r->tokens[v] = a; r->digest[v] = h; got |= v ? 4 : 2;
        }
    }
    fclose(f);
    return r->n_files > 0 && got == 7 ? 0 : -1;
}

// Encodes every non-empty line of the corpus files (as HF did: no BOS) and compares with HF:
// per line through a 16-bit hash of the v0.1 ids (v0.3 ids are mapped back: id >= 771 -> id - 768,
// which HF itself was checked to satisfy on every line), and exactly through the 64-bit digest of
// all ids. Also checks decode(encode(line)) == line.
static void tokt_check_corpus(const char* corpus, const char* tokenizer_path, int v03) {
    ToktCorpusRef ref;
    CHECK(tokt_read_ref(corpus, &ref) == 0, "cannot read %s's entries in " TOKT_FIXTURES "hf_tokenizer_digests.txt", corpus);
    if (ref.n_files == 0) return;
    char hashes_path[256];
    snprintf(hashes_path, sizeof(hashes_path), TOKT_FIXTURES "hf_line_hashes_%s.bin", corpus);
    size_t hashes_len;
    unsigned char* hashes = (unsigned char*)tokt_read_file(hashes_path, &hashes_len);
    CHECK(hashes && hashes_len == 2 * ref.lines, "%s: missing or not %zu uint16 line hashes", hashes_path, ref.lines);
    if (!hashes || hashes_len != 2 * ref.lines) { free(hashes); return; }

    // The cleaned corpus must be the very text HF encoded; else any difference is the cleaning's.
    char* text = NULL;
    size_t len = 0;
    for (int i = 0; i < ref.n_files; i++) {
        char path[256];
        snprintf(path, sizeof(path), "data/%s", ref.file[i]);
        size_t n;
        char* data = tokt_read_file(path, &n);
        if (!data) {
            CHECK(0, "%s is missing: run dev/data/fetch_%s.sh (make test does)", path, corpus);
            free(text); free(hashes);
            return;
        }
        uint64_t h = tokt_fnv(TOKT_FNV_OFFSET, data, n);
        if (n != ref.bytes[i] || h != ref.fnv[i]) {
            CHECK(0, "%s (%zu bytes, fnv64 %016" PRIx64 ") is not the file the HF fixtures were made from (%zu bytes, fnv64 "
                  "%016" PRIx64 "; sha256 in " TOKT_FIXTURES "hf_tokenizer_digests.txt): the corpus cleaning changed, so this is "
                  "no tokenizer result. Regenerate the fixtures as " TOKT_FIXTURES "README.md says.", path, n, h, ref.bytes[i], ref.fnv[i]);
            free(data); free(text); free(hashes);
            return;
        }
        text = (char*)realloc(text, len + n + 1);
        memcpy(text + len, data, n);
        len += n;
        if (n && text[len - 1] != '\n') text[len++] = '\n';
        free(data);
    }
    Tokenizer t;
    if (tokt_load_mistral(&t, tokenizer_path) != 0) { free(text); free(hashes); return; }

    size_t line_no = 0, tokens = 0, mismatches = 0, round_trip_fail = 0, with_meta = 0;
    uint64_t digest = TOKT_FNV_OFFSET;
    for (size_t i = 0, s = 0; i < len; i++) {
        if (text[i] != '\n') continue;
        size_t n_line = i - s;
        const char* line = text + s;
        s = i + 1;
        if (n_line == 0) continue;
        int32_t* ids;
        size_t n;
        CodaError err;
        if (tokenizer_encode(&t, line, n_line, 0, &ids, &n, &err) != 0) { CHECK(0, "%s", err.msg); break; }
        const uint32_t sep = 0xFFFFFFFFu;
        digest = tokt_fnv(tokt_fnv_ids(digest, ids, n), &sep, 4);
        tokens += n;
        for (size_t k = 0; v03 && k < n; k++) if (ids[k] >= 771) ids[k] -= 768;
        uint64_t h = tokt_fnv_ids(TOKT_FNV_OFFSET, ids, n);
        uint16_t h16 = (uint16_t)(h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48));
        if (line_no < ref.lines && h16 != (uint16_t)(hashes[2 * line_no] | hashes[2 * line_no + 1] << 8)) {
            if (mismatches < 5) CHECK(0, "%s line %zu differs from HF: %.*s", corpus, line_no + 1, (int)(n_line < 200 ? n_line : 200), line);
            mismatches++;
        }
        free(ids);
        if (tokt_contains_meta(line, n_line)) with_meta++;  // "▁" decodes as " ": no exact round trip
        else if (!tokt_round_trips(&t, line, n_line, 0)) round_trip_fail++;
        line_no++;
    }
    CHECK(line_no == ref.lines, "%s: %zu lines, HF had %zu", corpus, line_no, ref.lines);
    CHECK(mismatches == 0, "%s: %zu of %zu lines differ from HF tokenizers", corpus, mismatches, line_no);
    CHECK(tokens == ref.tokens[v03], "%s: %zu tokens, HF %zu", corpus, tokens, ref.tokens[v03]);
    CHECK(digest == ref.digest[v03], "%s: digest of all ids %016" PRIx64 ", HF %016" PRIx64, corpus, digest, ref.digest[v03]);
    CHECK(round_trip_fail == 0, "%s: decode(encode(line)) != line on %zu lines", corpus, round_trip_fail);
    printf("    %s %s: %zu lines, %zu tokens, %zu differ from HF, digest %016" PRIx64 " %s, %zu lines round-trip-checked\n",
           corpus, v03 ? "v0.3" : "v0.1", line_no, tokens, mismatches, digest, digest == ref.digest[v03] ? "= HF" : "!= HF",
           line_no - with_meta);
    tokenizer_free(&t);
    free(text);
    free(hashes);
}

TEST(tokenizer_brown_every_line_equals_hf_v01) { tokt_check_corpus("brown", TOKT_V01, 0); }
TEST(tokenizer_brown_every_line_equals_hf_v03) { tokt_check_corpus("brown", TOKT_V03, 1); }
TEST(tokenizer_foldoc_every_line_equals_hf_v01) { tokt_check_corpus("foldoc", TOKT_V01, 0); }
TEST(tokenizer_foldoc_every_line_equals_hf_v03) { tokt_check_corpus("foldoc", TOKT_V03, 1); }

// ---- edge cases and Metaspace forms against Hugging Face (fixtures/hf_edge_cases.txt) ----

// Undoes the fixture's escaping (\\ \t \n \r \xHH) in place; returns the byte count.
static size_t tokt_unescape(char* s) {
    size_t n = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] != '\\' || !s[i + 1]) { s[n++] = s[i]; continue; }
        char c = s[++i];
        if (c == 'x' && s[i + 1] && s[i + 2]) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            s[n++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else s[n++] = c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c;
    }
    s[n] = 0;
    return n;
}

// Splits a line at tabs into at most max fields (empty fields kept); returns the count.
static int tokt_split_tabs(char* line, char** fields, int max) {
    int n = 0;
    fields[n++] = line;
    for (char* p = line; *p && n < max; p++)
        if (*p == '\t') { *p = 0; fields[n++] = p + 1; }
    return n;
}

#define TOKT_MAX_VARIANTS 8
typedef struct {
    char name[64];
    JsonValue* root;  // the base tokenizer.json with the fixture's members replaced
    Tokenizer tok;
    int loaded;
} ToktVariant;

// Applies "variant NAME BASE KEY JSON": parses BASE once per variant, then swaps member KEY's value
// for the parsed JSON (the old value is freed with the swapped-out tree).
static int tokt_variant_line(ToktVariant* vars, int* n_vars, char** f) {
    int k = 0;
    while (k < *n_vars && strcmp(vars[k].name, f[1]) != 0) k++;
    if (k == *n_vars) {
        if (*n_vars == TOKT_MAX_VARIANTS) return -1;
        ToktVariant* v = &vars[(*n_vars)++];
        memset(v, 0, sizeof(*v));
        snprintf(v->name, sizeof(v->name), "%s", f[1]);
        const char* path = strcmp(f[2], "v0.3") == 0 ? TOKT_V03 : TOKT_V01;
        if (access(path, R_OK) != 0) { CHECK(0, "%s is missing: run dev/data/fetch_tokenizer.sh", path); return -1; }
        CodaError err;
        if (json_parse_file(path, &v->root, &err) != 0) { CHECK(0, "%s", err.msg); return -1; }
    }
    if (strcmp(f[3], "-") == 0) return 0;
    JsonValue* patch = NULL;
    CodaError err;
    if (json_parse(f[4], strlen(f[4]), &patch, &err) != 0) { CHECK(0, "variant %s: %s", f[1], err.msg); return -1; }
    JsonValue* root = vars[k].root;
    for (size_t i = 0; i < root->count; i++)
        if (strcmp(root->keys[i], f[3]) == 0) {
            JsonValue tmp = root->items[i];
            root->items[i] = *patch;
            *patch = tmp;
            json_free(patch);
            return 0;
        }
    json_free(patch);
    CHECK(0, "variant %s: the base has no member %s", f[1], f[3]);
    return -1;
}

TEST(tokenizer_edge_cases_and_metaspace_forms_equal_hf) {
    size_t len;
    char* data = tokt_read_file(TOKT_FIXTURES "hf_edge_cases.txt", &len);
    CHECK(data != NULL, "cannot read " TOKT_FIXTURES "hf_edge_cases.txt");
    if (!data) return;
    ToktVariant vars[TOKT_MAX_VARIANTS];
    int n_vars = 0, cases = 0, failed = 0;
    char* next;
    for (char* line = data; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        char* f[6];
        int nf = tokt_split_tabs(line, f, 6);
        if (line[0] == '#' || nf < 5) continue;
        if (strcmp(f[0], "variant") == 0) {
            if (tokt_variant_line(vars, &n_vars, f) != 0) break;
            continue;
        }
        if (strcmp(f[0], "case") != 0 || nf != 6) { CHECK(0, "malformed fixture line: %s", line); continue; }
        int k = 0;
        while (k < n_vars && strcmp(vars[k].name, f[1]) != 0) k++;
        if (k == n_vars) { CHECK(0, "case for unknown variant %s", f[1]); continue; }
        CodaError err;
        if (!vars[k].loaded) {
            if (tokenizer_load_json(&vars[k].tok, vars[k].root, vars[k].name, &err) != 0) { CHECK(0, "%s", err.msg); break; }
            vars[k].loaded = 1;
        }
        const Tokenizer* t = &vars[k].tok;
        int flags = (strchr(f[2], 'b') ? TOKENIZER_ADD_BOS : 0) | (strchr(f[2], 's') ? TOKENIZER_PARSE_SPECIAL : 0);
        size_t text_len = tokt_unescape(f[3]);
        int32_t want[2048];
        size_t n_want = 0;
        for (char* q = f[4]; *q && n_want < 2048;) {
            char* end;
            long id = strtol(q, &end, 10);
            if (end == q) break;
            want[n_want++] = (int32_t)id;
            q = end;
        }
        int before = g_current_failures;
        char what[160];
        snprintf(what, sizeof(what), "%s flags %s text \"%.100s\"", f[1], f[2], f[3]);
        tokt_expect_ids(t, f[3], text_len, flags, want, n_want, what);
        // HF's decode of HF's ids (special tokens skipped)
        size_t want_len = tokt_unescape(f[5]);
        char* text;
        size_t got_len;
        if (tokenizer_decode(t, want, n_want, &text, &got_len, &err) != 0) CHECK(0, "%s: %s", what, err.msg);
        else {
            CHECK(got_len == want_len && memcmp(text, f[5], want_len) == 0, "%s: decode gave \"%s\", HF \"%s\"", what, text, f[5]);
            free(text);
        }
        failed += g_current_failures != before;
        cases++;
    }
    CHECK(cases > 600 && n_vars == 6, "read %d cases of %d variants", cases, n_vars);
    CHECK(failed == 0, "%d of %d edge cases differ from HF", failed, cases);
    printf("    %d edge cases over %d tokenizer forms, %d differ from HF\n", cases, n_vars, failed);
    for (int k = 0; k < n_vars; k++) {
        if (vars[k].loaded) tokenizer_free(&vars[k].tok);
        json_free(vars[k].root);
    }
    free(data);
}

// ---- properties on the real vocabulary ----

// Random text built to stress the tokenizer: spaces and runs of them, "▁" itself, newlines and
// tabs, ASCII words, multi-byte characters in and out of the vocabulary, NULs and bytes that are
// not UTF-8 (lone continuation bytes, truncated sequences, overlongs, surrogates, 0xFF).
static size_t tokt_random_text(Rng* r, char* out, size_t max, int allow_meta) {
    static const char* atoms[] = {" ", "  ", "    ", "\n", "\t", "the", "a", "ing", "Hello", "##", "\"", ",", "?\",",
                                  "\xC3\xA9", "\xE9\x95\x87", "\xF0\x9F\xA6\x99", "\xEA\x99\x8A", "\xC3", "\xA9", "\xE9\x95",
                                  "\xF0\x9F", "\xFF", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x00", "\r\n", "<s>",
                                  "</s>", "[INST]", "<0x41>", "\xE2\x96\x81"};
    int n_atoms = (int)(sizeof(atoms) / sizeof(atoms[0])) - (allow_meta ? 0 : 1);
    size_t len = 0, target = (size_t)rng_below(r, max);
    while (len < target) {
        int k = (int)rng_below(r, (uint64_t)n_atoms);
        size_t n = k == 25 ? 1 : strlen(atoms[k]);  // atom 25 is a NUL byte
        if (rng_below(r, 4) == 0) { out[len++] = (char)('a' + rng_below(r, 26)); continue; }
        if (len + n > max) break;
        memcpy(out + len, atoms[k], n);
        len += n;
    }
    return len;
}

TEST(tokenizer_round_trip_of_arbitrary_bytes) {
    Tokenizer t;
    if (tokt_load_mistral(&t, TOKT_V01) != 0) return;
    Rng r;
    rng_seed(&r, 20261127);
    char buf[400];
    int failures = 0;
    for (int i = 0; i < 3000; i++) {
        size_t n = tokt_random_text(&r, buf, sizeof(buf), 0);
        if (tokt_contains_meta(buf, n)) continue;
        if (!tokt_round_trips(&t, buf, n, i & 1)) {
            if (failures++ < 3) CHECK(0, "round trip failed for a %zu-byte text (case %d)", n, i);
        }
    }
    // purely random bytes, every value equally likely
    for (int i = 0; i < 1000; i++) {
        size_t n = (size_t)rng_below(&r, 200);
        for (size_t k = 0; k < n; k++) buf[k] = (char)rng_below(&r, 256);
        if (tokt_contains_meta(buf, n)) continue;
        if (!tokt_round_trips(&t, buf, n, 1) && failures++ < 3) CHECK(0, "round trip failed for random bytes (case %d)", i);
    }
    CHECK(failures == 0, "%d round trips failed", failures);
    // The empty text: no "▁" is prepended, so nothing but the BOS.
    const int32_t bos_only[] = {1};
    tokt_expect_ids(&t, "", 0, TOKENIZER_ADD_BOS, bos_only, 1, "empty text");
    tokt_expect_ids(&t, "", 0, 0, NULL, 0, "empty text, no BOS");
    // Invalid UTF-8 becomes one byte token per byte (3 + byte), after the prepended "▁" (28705).
    const int32_t invalid[] = {28705, 3 + 0xC3, 3 + 0xFF, 3 + 0xA9};
    tokt_expect_ids(&t, "\xC3\xFF\xA9", 3, 0, invalid, 4, "invalid UTF-8");
    // The known exception: "▁" in the input decodes as a space (HF and SentencePiece do the same).
    int32_t* ids;
    size_t n, len;
    char* text;
    CodaError err;
    CHECK(tokenizer_encode(&t, "a\xE2\x96\x81" "b", 5, 0, &ids, &n, &err) == 0, "%s", err.msg);
    CHECK(tokenizer_decode(&t, ids, n, &text, &len, &err) == 0 && len == 3 && memcmp(text, "a b", 3) == 0, "");
    free(ids);
    free(text);
    tokenizer_free(&t);
}

// The word shortcut (cutting text into words and looking whole words up) must give exactly the
// ids of plain BPE over the whole text; on Mistral it is on, so this compares both paths.
TEST(tokenizer_word_shortcut_equals_whole_text_bpe) {
    Tokenizer t;
    if (tokt_load_mistral(&t, TOKT_V01) != 0) return;
    CHECK(t.words_independent == 1, "Mistral v0.1's merges should allow the word shortcut");
    Tokenizer whole = t;  // shares the tables; only the flag differs
    whole.words_independent = 0;
    Rng r;
    rng_seed(&r, 7);
    char buf[600];
    int differ = 0;
    for (int i = 0; i < 3000; i++) {
        size_t n = tokt_random_text(&r, buf, sizeof(buf), 1);
        int32_t *a, *b;
        size_t na, nb;
        CodaError err;
        if (tokenizer_encode(&t, buf, n, 0, &a, &na, &err) != 0 || tokenizer_encode(&whole, buf, n, 0, &b, &nb, &err) != 0) {
            CHECK(0, "%s", err.msg);
            break;
        }
        if (na != nb || memcmp(a, b, na * sizeof(int32_t)) != 0) differ++;
        free(a);
        free(b);
    }
    CHECK(differ == 0, "%d texts encode differently with and without the word shortcut", differ);
    tokenizer_free(&t);
}

// Adversarial inputs must not be quadratic: 1 MB with no word breaks, 1 MB of spaces (runs of
// "▁" merge from the end of the merge list), 1 MB of random bytes. O(n^2) would take minutes.
TEST(tokenizer_long_inputs_are_not_quadratic) {
    Tokenizer t;
    if (tokt_load_mistral(&t, TOKT_V01) != 0) return;
    const size_t n = 1 << 20;
    char* buf = (char*)malloc(n);
    Rng r;
    rng_seed(&r, 3);
    double worst = 0;
    for (int kind = 0; kind < 4; kind++) {
        for (size_t i = 0; i < n; i++)
            buf[i] = kind == 0 ? 'a' : kind == 1 ? ' ' : kind == 2 ? (char)('a' + rng_below(&r, 26)) : (char)rng_below(&r, 256);
        double t0 = now_seconds();
        int ok = tokt_round_trips(&t, buf, n, 1) || kind == 3;  // random bytes may contain "▁"
        double dt = now_seconds() - t0;
        if (dt > worst) worst = dt;
        CHECK(ok, "round trip of 1 MB input kind %d", kind);
    }
    CHECK(worst < 10.0, "slowest 1 MB encode+decode took %.2f s", worst);
    free(buf);
    tokenizer_free(&t);
}

TEST(tokenizer_v03_control_tokens_are_special) {
    Tokenizer t;
    if (tokt_load_mistral(&t, TOKT_V03) != 0) return;
    // By default "[INST]" and "</s>" in text are text; with TOKENIZER_PARSE_SPECIAL they are ids 3 and 2.
    const int32_t parsed[] = {1, 3, 23325, 4, 2};  // <s> [INST] ▁Hello [/INST] </s>
    tokt_expect_ids(&t, "[INST]Hello[/INST]</s>", 22, TOKENIZER_ADD_BOS | TOKENIZER_PARSE_SPECIAL, parsed, 5, "parsed control tokens");
    int32_t* ids;
    size_t n, len;
    char* text;
    CodaError err;
    CHECK(tokenizer_encode(&t, "[INST]</s>", 10, 0, &ids, &n, &err) == 0, "%s", err.msg);
    int any_control = 0;
    for (size_t i = 0; i < n; i++) any_control |= ids[i] < 771;
    CHECK(!any_control && n > 2, "plain text must not produce control ids");
    CHECK(tokenizer_decode(&t, ids, n, &text, &len, &err) == 0 && strcmp(text, "[INST]</s>") == 0, "");
    free(ids);
    free(text);
    // decode skips special tokens (as HF's default); decode_flags(keep_special) shows them
    const int32_t seq[] = {1, 3, 23325, 4, 2};
    CHECK(tokenizer_decode(&t, seq, 5, &text, &len, &err) == 0 && strcmp(text, "Hello") == 0, "got '%s'", text);
    free(text);
    CHECK(tokenizer_decode_flags(&t, seq, 5, 1, &text, &len, &err) == 0 && strcmp(text, "<s>[INST] Hello[/INST]</s>") == 0, "got '%s'", text);
    free(text);
    const int32_t bad[] = {5, 32768};
    CHECK(tokenizer_decode(&t, bad, 2, &text, &len, &err) != 0 && strstr(err.msg, "32768") && strstr(err.msg, "out of range"), "%s", err.msg);
    const int32_t neg[] = {-1};
    CHECK(tokenizer_decode(&t, neg, 1, &text, &len, &err) != 0 && strstr(err.msg, "-1"), "%s", err.msg);
    tokenizer_free(&t);
}

// ---- a toy tokenizer.json: every rule with ids worked out by hand ----

typedef struct {
    int merges_as_pairs;  // ["a", "b"] instead of "a b"
    int byte_fallback;
    const char* normalizer;     // JSON
    const char* pre_tokenizer;  // JSON
    const char* decoder;        // JSON
    const char* model_type;
    const char* extra_merge;    // one more merge entry (JSON), e.g. a malformed one
    int skip_id;                // leave this id out of the vocab (a hole), -1 for none
} ToktToy;

#define TOKT_NORM_PREPEND                                                                                    \
    "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"             \
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]}"
#define TOKT_DECODER_HF                                                                                      \
    "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},"   \
    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \","  \
    "\"start\":1,\"stop\":0}]}"

static ToktToy tokt_toy_default(void) {
    ToktToy o;
    memset(&o, 0, sizeof(o));
    o.byte_fallback = 1;
    o.normalizer = TOKT_NORM_PREPEND;
    o.pre_tokenizer = "null";
    o.decoder = TOKT_DECODER_HF;
    o.model_type = "BPE";
    o.skip_id = -1;
    return o;
}

// Toy ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then these pieces. "bc" has a LOWER id
// than "ab" but a HIGHER merge rank, so id order and rank order disagree on purpose. "▁aab" is a
// piece no merge builds, so the text "aab" must not come out as that one piece. "c▁" is used only
// with the extra merge "c ▁", which crosses a word start and so must turn the word shortcut off.
enum { TOY_META = 259, TOY_A, TOY_B, TOY_C, TOY_BC, TOY_AB, TOY_META_AB, TOY_AA, TOY_META2, TOY_META_AAB, TOY_C_META };
static const char* tokt_toy_pieces[] = {"\xE2\x96\x81", "a", "b", "c", "bc", "ab", "\xE2\x96\x81" "ab", "aa", "\xE2\x96\x81\xE2\x96\x81",
                                        "\xE2\x96\x81" "aab", "c\xE2\x96\x81"};
static const char* tokt_toy_merges[][2] = {{"a", "b"}, {"\xE2\x96\x81", "ab"}, {"a", "a"}, {"\xE2\x96\x81", "\xE2\x96\x81"}, {"b", "c"}};

static int tokt_write_toy(const char* path, const ToktToy* o) {
    FILE* f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":["
               "{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true},"
               "{\"id\":2,\"content\":\"</s>\",\"special\":true}],\n");
    fprintf(f, "\"normalizer\":%s,\"pre_tokenizer\":%s,\"decoder\":%s,\n", o->normalizer, o->pre_tokenizer, o->decoder);
    fprintf(f, "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
               "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},\n");
    fprintf(f, "\"model\":{\"type\":\"%s\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":%s,\"vocab\":{",
            o->model_type, o->byte_fallback ? "true" : "false");
    fprintf(f, "\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    for (int b = 0; b < 256; b++) fprintf(f, ",\"<0x%02X>\":%d", b, 3 + b);
    for (int i = 0; i < (int)(sizeof(tokt_toy_pieces) / sizeof(tokt_toy_pieces[0])); i++)
        if (TOY_META + i != o->skip_id) fprintf(f, ",\"%s\":%d", tokt_toy_pieces[i], TOY_META + i);
    fprintf(f, "},\"merges\":[");
    for (int i = 0; i < (int)(sizeof(tokt_toy_merges) / sizeof(tokt_toy_merges[0])); i++) {
        if (o->merges_as_pairs) fprintf(f, "%s[\"%s\",\"%s\"]", i ? "," : "", tokt_toy_merges[i][0], tokt_toy_merges[i][1]);
        else fprintf(f, "%s\"%s %s\"", i ? "," : "", tokt_toy_merges[i][0], tokt_toy_merges[i][1]);
    }
    if (o->extra_merge) fprintf(f, ",%s", o->extra_merge);
    fprintf(f, "]}}\n");
    return fclose(f);
}

// Writes the toy to a temp file and loads it; returns tokenizer_load's result (message in err).
static int tokt_load_toy(Tokenizer* t, const ToktToy* o, CodaError* err) {
    char path[] = "/tmp/coda_tokenizer_toy_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return coda_errorf(err, "mkstemp failed");
    close(fd);
    int rc = tokt_write_toy(path, o) == 0 ? tokenizer_load(t, path, err) : coda_errorf(err, "cannot write %s", path);
    remove(path);
    return rc;
}

TEST(tokenizer_toy_merge_order_ties_and_byte_fallback) {
    for (int pairs = 0; pairs < 2; pairs++) {  // merges as "a b" strings and as ["a", "b"] pairs
        ToktToy o = tokt_toy_default();
        o.merges_as_pairs = pairs;
        Tokenizer t;
        CodaError err;
        if (tokt_load_toy(&t, &o, &err) != 0) { CHECK(0, "%s", err.msg); return; }
        CHECK(tokenizer_vocab_size(&t) == TOY_C_META + 1 && tokenizer_bos_id(&t) == 1 && tokenizer_eos_id(&t) == 2, "");
        // rank order, not id order: "ab" (rank 0) before "bc" (rank 4, lower id), then "▁ab" (rank 1)
        const int32_t abc[] = {1, TOY_META_AB, TOY_C};
        tokt_expect_ids(&t, "abc", 3, TOKENIZER_ADD_BOS, abc, 3, "abc");
        // equal ranks: leftmost first ("aaa" -> "aa" "a", not "a" "aa")
        const int32_t aaa[] = {TOY_META, TOY_AA, TOY_A};
        tokt_expect_ids(&t, "aaa", 3, 0, aaa, 3, "aaa");
        // a vocabulary piece that BPE cannot build is not produced, even when the word is exactly it
        const int32_t aab[] = {TOY_META, TOY_A, TOY_AB};
        tokt_expect_ids(&t, "aab", 3, 0, aab, 3, "aab");
        // a leading space: "▁▁ab"; "ab" (rank 0), then "▁ab" (rank 1) come before "▁▁" (rank 3)
        const int32_t sp[] = {TOY_META, TOY_META_AB};
        tokt_expect_ids(&t, " ab", 3, 0, sp, 2, "' ab'");
        const int32_t trailing[] = {TOY_META_AB, TOY_META2};
        tokt_expect_ids(&t, "ab  ", 4, 0, trailing, 2, "'ab  '");
        // byte fallback: "é" (C3 A9) is no piece; "\n" neither
        const int32_t e[] = {TOY_META, 3 + 0xC3, 3 + 0xA9, 3 + '\n', TOY_BC};
        tokt_expect_ids(&t, "\xC3\xA9\nbc", 5, 0, e, 5, "byte fallback");
        // decode: "▁" -> " ", bytes back, the one leading space stripped, BOS skipped
        const int32_t ids[] = {1, TOY_META_AB, 3 + 0xC3, 3 + 0xA9, TOY_META2, TOY_C};
        char* text;
        size_t len;
        CHECK(tokenizer_decode(&t, ids, 6, &text, &len, &err) == 0 && strcmp(text, "ab\xC3\xA9  c") == 0, "got '%s'", text);
        free(text);
        // special tokens in text only when asked
        const int32_t as_text[] = {TOY_META, 3 + '<', 3 + '/', 3 + 's', 3 + '>'};
        tokt_expect_ids(&t, "</s>", 4, 0, as_text, 5, "</s> as text");
        const int32_t parsed[] = {1, TOY_META_AB, 2, TOY_META_AB};  // each stretch gets its own "▁", as in HF
        tokt_expect_ids(&t, "<s>ab</s>ab", 11, TOKENIZER_PARSE_SPECIAL, parsed, 4, "parsed specials");
        tokenizer_free(&t);
    }
    // without byte fallback, unknown characters become <unk>, consecutive ones fused (fuse_unk)
    ToktToy o = tokt_toy_default();
    o.byte_fallback = 0;
    Tokenizer t;
    CodaError err;
    if (tokt_load_toy(&t, &o, &err) != 0) { CHECK(0, "%s", err.msg); return; }
    const int32_t unk[] = {TOY_META, 0, TOY_AB, 0};
    tokt_expect_ids(&t, "\xC3\xA9zab!", 6, 0, unk, 4, "unk");
    CHECK(t.words_independent == 1, "no merge crosses a word start here");
    const int32_t apart[] = {TOY_META, TOY_C, TOY_META, TOY_C};
    tokt_expect_ids(&t, "c c", 3, 0, apart, 4, "c c");
    tokenizer_free(&t);
    // a merge that joins across a word start ("c" + "▁") turns the word shortcut off
    o.extra_merge = "\"c \xE2\x96\x81\"";
    if (tokt_load_toy(&t, &o, &err) != 0) { CHECK(0, "%s", err.msg); return; }
    CHECK(t.words_independent == 0, "the merge c + \xE2\x96\x81 crosses a word start");
    const int32_t across[] = {TOY_META, TOY_C_META, TOY_C};
    tokt_expect_ids(&t, "c c", 3, 0, across, 3, "c c with a crossing merge");
    tokenizer_free(&t);
}

TEST(tokenizer_toy_metaspace_variants) {
    ToktToy o = tokt_toy_default();
    o.normalizer = "null";
    o.decoder = "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":false}";
    o.pre_tokenizer = "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":false}";
    Tokenizer t;
    CodaError err;
    if (tokt_load_toy(&t, &o, &err) != 0) { CHECK(0, "%s", err.msg); return; }
    // Metaspace prepends only when the text does not already start with "▁" (unlike Prepend)
    const int32_t sp[] = {TOY_META_AB};
    tokt_expect_ids(&t, " ab", 3, 0, sp, 1, "metaspace ' ab'");
    // "first": no "▁" for a stretch after a special token
    const int32_t after[] = {1, TOY_AB};
    tokt_expect_ids(&t, "<s>ab", 5, TOKENIZER_PARSE_SPECIAL, after, 2, "metaspace first after <s>");
    // split=false: "▁▁" forms although each "▁" would start a word of its own under split=true
    const int32_t run[] = {TOY_META_AB, TOY_META2};
    tokt_expect_ids(&t, "ab  ", 4, 0, run, 2, "metaspace split=false");
    char* text;
    size_t len;
    CHECK(tokenizer_decode(&t, run, 2, &text, &len, &err) == 0 && strcmp(text, "ab  ") == 0, "got '%s'", text);
    free(text);
    tokenizer_free(&t);
    // split=true: every "▁" starts a word, so "  " stays two "▁"
    o.pre_tokenizer = "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"always\",\"split\":true}";
    if (tokt_load_toy(&t, &o, &err) != 0) { CHECK(0, "%s", err.msg); return; }
    const int32_t words[] = {TOY_META_AB, TOY_META, TOY_META};
    tokt_expect_ids(&t, "ab  ", 4, 0, words, 3, "metaspace split=true");
    const int32_t always[] = {1, TOY_META_AB};
    tokt_expect_ids(&t, "<s>ab", 5, TOKENIZER_PARSE_SPECIAL, always, 2, "metaspace always after <s>");
    tokenizer_free(&t);
}

// Expects loading the toy with option `o` to fail with a message containing `what`.
static void tokt_expect_load_error(const ToktToy* o, const char* what) {
    Tokenizer t;
    CodaError err = {{0}};
    int rc = tokt_load_toy(&t, o, &err);
    CHECK(rc != 0, "accepted a tokenizer.json that should fail with '%s'", what);
    if (rc == 0) tokenizer_free(&t);
    else CHECK(strstr(err.msg, what) != NULL, "expected '%s' in: %s", what, err.msg);
}

TEST(tokenizer_load_errors_are_clear) {
    Tokenizer t;
    CodaError err = {{0}};
    CHECK(tokenizer_load(&t, "/nonexistent/tokenizer.json", &err) != 0 && strstr(err.msg, "/nonexistent/tokenizer.json"), "%s", err.msg);
    ToktToy o = tokt_toy_default();
    o.model_type = "WordPiece";
    tokt_expect_load_error(&o, "model.type is \"WordPiece\"");
    o = tokt_toy_default();
    o.extra_merge = "\"a zz\"";
    tokt_expect_load_error(&o, "model.merges[5] (\"a\" + \"zz\") uses a piece that is not in model.vocab");
    o.extra_merge = "\"abc\"";
    tokt_expect_load_error(&o, "model.merges[5] is neither");
    o.extra_merge = "[\"a\"]";
    tokt_expect_load_error(&o, "model.merges[5] is neither");
    o = tokt_toy_default();
    o.skip_id = TOY_C;
    tokt_expect_load_error(&o, "no piece has id 262");
    o = tokt_toy_default();
    o.normalizer = "{\"type\":\"NFKC\"}";
    tokt_expect_load_error(&o, "unsupported normalizer step 'NFKC'");
    o = tokt_toy_default();
    o.pre_tokenizer = "{\"type\":\"ByteLevel\"}";
    tokt_expect_load_error(&o, "unsupported pre_tokenizer 'ByteLevel'");
    o = tokt_toy_default();
    o.decoder = "{\"type\":\"WordPiece\"}";
    tokt_expect_load_error(&o, "unsupported decoder step 'WordPiece'");
    // not JSON at all: json.h's message, with our path
    char path[] = "/tmp/coda_tokenizer_bad_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, "{\"model\": [1,", 13) == 13, "");
    close(fd);
    CHECK(tokenizer_load(&t, path, &err) != 0 && strstr(err.msg, "JSON"), "%s", err.msg);
    remove(path);
    // an id out of range in decode, and encode with no BOS in the file
    o = tokt_toy_default();
    if (tokt_load_toy(&t, &o, &err) != 0) { CHECK(0, "%s", err.msg); return; }
    const int32_t bad[] = {TOY_A, 9999};
    char* text;
    size_t len;
    CHECK(tokenizer_decode(&t, bad, 2, &text, &len, &err) != 0 && strstr(err.msg, "token id 9999 at position 1 is out of range [0, 270)"), "%s", err.msg);
    CHECK(strstr(err.msg, "/tmp/coda_tokenizer_toy_") == err.msg, "the message names the tokenizer.json: %s", err.msg);
    t.bos_id = -1;
    int32_t* ids;
    size_t n;
    CHECK(tokenizer_encode(&t, "a", 1, 1, &ids, &n, &err) != 0 && strstr(err.msg, "no BOS"), "%s", err.msg);
    CHECK(strstr(err.msg, "/tmp/coda_tokenizer_toy_") == err.msg, "the message names the tokenizer.json: %s", err.msg);
    tokenizer_free(&t);
}

// Regressions found by fuzzing: (1) a 62-byte tokenizer.json whose only piece has id 1000000000 made
// the loader allocate 16 GB before it found that ids 0..999999999 have no pieces: ids are now bounded
// by the number of entries first (dev/test/fixtures/fuzz/tokenizer/oom-*); (2) the merge " " (two
// empty sides) reached memcpy(NULL, ..., 0), undefined behaviour (.../merge-space-regression.json).
TEST(tokenizer_load_bounds_ids_before_allocating_and_refuses_empty_merges) {
    const char* tiny = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1000000000},\"merges\":[]}}\n";
    CHECK(strlen(tiny) == 62, "the file from the report is 62 bytes (%zu)", strlen(tiny));
    CodaError err = {{0}};
    JsonValue* root = NULL;
    CHECK(json_parse(tiny, strlen(tiny), &root, &err) == 0, "%s", err.msg);
    Tokenizer t;
    double t0 = now_seconds();
    CHECK(tokenizer_load_json(&t, root, "tiny.json", &err) != 0, "accepted");
    CHECK(now_seconds() - t0 < 0.5, "took %.2f s: sized something by the id", now_seconds() - t0);
    CHECK(strstr(err.msg, "tiny.json: model.vocab entry \"a\" has id 1000000000, but ids must cover 0..N-1 and there are only N = 1"),
          "%s", err.msg);
    json_free(root);
    ToktToy o = tokt_toy_default();
    o.extra_merge = "\" \"";
    tokt_expect_load_error(&o, "model.merges[5] (\"\" + \"\") has an empty side");
    o.extra_merge = "[\"a\", \"\"]";
    tokt_expect_load_error(&o, "model.merges[5] (\"a\" + \"\") has an empty side");
    // an added token's id is bounded the same way
    const char* added = "{\"added_tokens\":[{\"id\":70000,\"content\":\"<s>\"}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    CHECK(json_parse(added, strlen(added), &root, &err) == 0, "%s", err.msg);
    CHECK(tokenizer_load_json(&t, root, "added.json", &err) != 0 && strstr(err.msg, "added_tokens[0] has id 70000") &&
          strstr(err.msg, "only N = 2 entries"), "%s", err.msg);
    json_free(root);
}
