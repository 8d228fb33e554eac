// tokenizer.h — the SentencePiece-style BPE tokenizer of Mistral (v0.1: 32000 ids, v0.3: 32768) and
// Llama 2, read from a Hugging Face `tokenizer.json`, with encode and decode.
// Plain C (also compiles as C++ under nvcc). Library code: errors go into a CodaError, never exit.
//
// What "SentencePiece-style BPE" means here (and in HF `tokenizers`, whose ids we match bit for bit):
//   normalize   the text gets "▁" (U+2581) prepended and every ASCII space becomes "▁";
//   symbols     each UTF-8 character is one symbol if it is a vocabulary piece, else one
//               `<0xNN>` symbol per byte (byte fallback); a byte that is not part of valid UTF-8
//               is a character of its own, so any byte string encodes (and decodes back exactly);
//   merge       repeatedly merge the adjacent pair with the lowest merge rank (ties: leftmost),
//               exactly HF's BPE::merge_all. Note that the order is the merge-list rank, not the
//               piece id: Mistral's "▁▁" merges sit at the very end of its merge list.
//   decode      pieces are concatenated, "▁" becomes a space, `<0xNN>` becomes the raw byte, and
//               one leading space is stripped (the one the normalizer prepended).
// The whole text is one BPE "word" (pre_tokenizer null), so pieces can span spaces ("▁▁▁▁");
// with a Metaspace pre_tokenizer and split=true, every "▁" starts a new word instead.
//
// Round trip: decode(encode(x)) == x for every byte string x that does not contain "▁" itself:
// the tokenizer maps " " and "▁" to the same piece (as HF and SentencePiece do), so no decoder
// could tell them apart. Invalid UTF-8 round-trips byte-exactly (HF's decoder would instead
// print U+FFFD for bytes that don't form UTF-8; we return the bytes, which is what C callers want).
//
// Speed (dev/PERF.md: 15-35 MB/s on one core, 6-20x HF `tokenizers` with one thread):
//   * the merge loop is O(n log n) in the number of characters: symbols sit in a doubly linked
//     list, candidate pairs in a binary min-heap keyed (rank, position), and a heap entry goes
//     stale, without any lookup, when the rank stored for its left symbol no longer matches;
//   * the word shortcut: when no merge can join across the start of a word (a "▁" after another
//     character; checked against the merge list at load, true for Mistral and Llama 2), BPE of the
//     whole text is BPE of its words, and a word that is itself a piece BPE would build whole
//     (also checked at load, per piece) is one table lookup. Exact, not a heuristic: the test
//     suite compares it with whole-text BPE and with HF on every line of two corpora;
//   * pieces and merge pairs live in open-addressing hash tables; characters of the Basic
//     Multilingual Plane are found through a direct table.
// Memory: encoding allocates about 45 bytes per input byte for the call (scratch for the longest
// word, or for the whole text when the shortcut is off); encode long corpora in chunks.
//
// API: tokenizer_load (a file) or tokenizer_load_json (a parsed tree) / tokenizer_free; tokenizer_encode (plain text, optional BOS) and
// tokenizer_encode_flags (TOKENIZER_PARSE_SPECIAL also matches added tokens such as "[INST]");
// tokenizer_decode (skips special tokens, like HF's default) and tokenizer_decode_flags;
// tokenizer_vocab_size, tokenizer_bos_id, tokenizer_eos_id, tokenizer_piece, tokenizer_piece_to_id.
// A loaded Tokenizer is read-only: any number of threads may encode and decode with it.
//
// Supported tokenizer.json forms: model.type "BPE" (vocab object; merges as "a b" strings or as
// ["a", "b"] pairs; byte_fallback; unk_token; fuse_unk), normalizer null / Prepend /
// Replace " "→"▁" / a Sequence of those, pre_tokenizer null or Metaspace (replacement "▁",
// prepend_scheme always/first/never, split true/false), decoder Replace / ByteFallback / Fuse /
// Strip / Metaspace or a Sequence of those, added_tokens (with their "special" flag).
// Not supported (refused with a message at load, never silently wrong): other model types, other
// normalizers or pre-tokenizers, BPE dropout, ignore_merges, continuing_subword_prefix /
// end_of_word_suffix (none of which Mistral or Llama 2 use).
#pragma once
#include "common.h"
#include "json.h"

// Flags of tokenizer_encode_flags.
enum {
    TOKENIZER_ADD_BOS = 1,        // put the BOS id first
    TOKENIZER_PARSE_SPECIAL = 2,  // text such as "</s>" or "[INST]" becomes that added token's id
};

// How the leading "▁" is added (normalizer Prepend vs. Metaspace pre-tokenizer).
typedef enum {
    TOK_PREPEND_NONE = 0,   // nothing is prepended
    TOK_PREPEND_ALWAYS,     // normalizer Prepend("▁"): to every non-empty text segment
    TOK_PREPEND_IF_MISSING, // Metaspace "always": to every segment not already starting with "▁"
    TOK_PREPEND_FIRST,      // Metaspace "first": like IF_MISSING, only for the segment at offset 0
} TokPrepend;

typedef struct {
    uint32_t left, right;  // piece ids of the pair
    int32_t rank;          // position in the merge list (lower merges first); -1 marks an empty slot
    int32_t merged;        // piece id of left+right
} TokMerge;

typedef struct {
    int32_t id;            // the added token's id
    int special;           // "special": true (skipped by decode, like HF's skip_special_tokens)
    int unsupported_flag;  // lstrip / rstrip / single_word / normalized set: refused by PARSE_SPECIAL
} TokAdded;

struct Tokenizer {
    char* path;               // the tokenizer.json it came from (every message names it)
    int vocab_size;           // ids are 0 .. vocab_size-1, every one with a piece
    char* piece_bytes;        // all pieces back to back (UTF-8 as in the file)
    uint32_t* piece_start;    // piece i is piece_bytes[piece_start[i] .. piece_start[i+1])
    int16_t* piece_byte;      // 0..255 when piece i is a byte-fallback piece "<0xNN>", else -1
    uint8_t* piece_special;   // 1 when piece i is an added token flagged special

    int32_t* piece_table;     // open addressing: piece string -> id (-1 = empty slot)
    uint32_t piece_table_mask;
    TokMerge* merge_table;    // open addressing: (left, right) -> rank, merged id
    uint32_t merge_table_mask;
    int n_merges;
    int32_t* merged_by_rank;  // [n_merges]: piece id that merge number r produces

    uint8_t added_first_byte[256];  // 1 when some added token starts with this byte
    int32_t* bmp_char_id;     // [65536]: id of the single-character piece for code point cp, or -1
    int32_t byte_id[256];     // id of "<0xNN>", or -1
    int32_t meta_id;          // id of the piece "▁", or -1
    // The word shortcut (see tok__plan_words): text splits into words before each "▁" that follows
    // another character, and a word that is a piece BPE would build whole is looked up directly.
    int words_independent;    // no merge can join across such a word start (checked at load)
    uint8_t* piece_whole;     // 1: BPE turns this piece's own characters into exactly this piece

    // model options
    int byte_fallback;
    int unk_id;               // -1 when the model has no unk token
    int fuse_unk;
    // normalizer / pre-tokenizer
    int replace_space;        // " " -> "▁"
    TokPrepend prepend;
    int split_on_meta;        // Metaspace split=true: every "▁" starts a new BPE word
    // decoder
    int decode_meta_to_space; // "▁" -> " "
    int decode_byte_fallback; // "<0xNN>" -> the byte
    int decode_strip_leading; // how many leading spaces are stripped (0 or 1)

    TokAdded* added;          // added_tokens, longest content first (for leftmost-longest matching)
    int n_added;
    int bos_id, eos_id;       // -1 when the file names none
};
typedef struct Tokenizer Tokenizer;

// ---------------------------------------------------------------------------------------------
// Hashing and tables

static inline uint32_t tok__hash_bytes(const char* s, size_t n) {
    uint32_t h = 2166136261u;  // FNV-1a: pieces are short, so a byte loop is fine
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 16777619u; }
    return h ^ (h >> 15);
}
static inline uint32_t tok__hash_pair(uint32_t a, uint32_t b) {
    uint64_t k = ((uint64_t)a << 32 | b) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(k >> 32);
}
static inline uint32_t tok__table_size_for(size_t n) {  // power of two, load factor <= 1/2
    uint32_t size = 16;
    while (size < 2 * n) size <<= 1;
    return size;
}

// The bytes of piece `id` (0 <= id < vocab_size; not NUL-terminated) and their count.
static inline const char* tokenizer_piece(const Tokenizer* t, int id, size_t* len) {
    *len = t->piece_start[id + 1] - t->piece_start[id];
    return t->piece_bytes + t->piece_start[id];
}

// Id of the piece with exactly these bytes, or -1.
static inline int tokenizer_piece_to_id(const Tokenizer* t, const char* s, size_t n) {
    for (uint32_t slot = tok__hash_bytes(s, n) & t->piece_table_mask;; slot = (slot + 1) & t->piece_table_mask) {
        int32_t id = t->piece_table[slot];
        if (id < 0) return -1;
        size_t len;
        const char* p = tokenizer_piece(t, id, &len);
        if (len == n && memcmp(p, s, n) == 0) return id;
    }
}

static inline const TokMerge* tok__find_merge(const Tokenizer* t, uint32_t a, uint32_t b) {
    for (uint32_t slot = tok__hash_pair(a, b) & t->merge_table_mask;; slot = (slot + 1) & t->merge_table_mask) {
        const TokMerge* m = &t->merge_table[slot];
        if (m->rank < 0) return NULL;
        if (m->left == a && m->right == b) return m;
    }
}

// ---------------------------------------------------------------------------------------------
// UTF-8

// Length of the well-formed UTF-8 character at s[0..n) (RFC 3629: no overlongs, no surrogates,
// nothing above U+10FFFF), or 0 when s does not start with one; *cp gets the code point.
static inline int tok__utf8_char(const unsigned char* s, size_t n, uint32_t* cp) {
    unsigned char c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        *cp = (uint32_t)(c & 0x1F) << 6 | (s[1] & 0x3F);
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;  // overlong
        if (c == 0xED && s[1] > 0x9F) return 0;  // UTF-16 surrogate
        *cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;  // overlong
        if (c == 0xF4 && s[1] > 0x8F) return 0;  // above U+10FFFF
        *cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
        return 4;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Loading

static inline void tokenizer_free(Tokenizer* t) {
    if (!t) return;
    free(t->path);
    free(t->piece_bytes);
    free(t->piece_start);
    free(t->piece_byte);
    free(t->piece_special);
    free(t->piece_table);
    free(t->merge_table);
    free(t->merged_by_rank);
    free(t->bmp_char_id);
    free(t->piece_whole);
    free(t->added);
    memset(t, 0, sizeof(*t));
}

static inline int tok__str_is(const JsonValue* v, const char* s) {
    return v && v->type == JSON_STRING && v->string_len == strlen(s) && memcmp(v->string, s, v->string_len) == 0;
}
static inline int tok__is_true(const JsonValue* v) { return v && v->type == JSON_BOOL && v->boolean; }
static inline int tok__is_null(const JsonValue* v) { return !v || v->type == JSON_NULL; }
static inline const char* tok__type_of(const JsonValue* v) {  // for messages: the "type" member
    const JsonValue* ty = json_get(v, "type");
    return ty && ty->type == JSON_STRING ? ty->string : "(no type)";
}

#define TOK_META "\xE2\x96\x81"  // "▁" U+2581, SentencePiece's visible space

// The members of a "Sequence" (normalizers / decoders), or the value itself as a one-element list.
static inline const JsonValue* tok__sequence(const JsonValue* v, const char* member, size_t* n) {
    if (tok__str_is(json_get(v, "type"), "Sequence")) {
        const JsonValue* list = json_get(v, member);
        if (!list || list->type != JSON_ARRAY) { *n = 0; return NULL; }
        *n = list->count;
        return list->items;
    }
    *n = 1;
    return v;
}

// Is this a Replace step of the given direction (pattern {"String": from} -> content to)?
static inline int tok__is_replace(const JsonValue* v, const char* from, const char* to) {
    if (!tok__str_is(json_get(v, "type"), "Replace")) return 0;
    return tok__str_is(json_get(json_get(v, "pattern"), "String"), from) && tok__str_is(json_get(v, "content"), to);
}

static inline int tok__load_normalizer(Tokenizer* t, const JsonValue* norm, const char* path, CodaError* err) {
    if (tok__is_null(norm)) return 0;
    size_t n;
    const JsonValue* steps = tok__sequence(norm, "normalizers", &n);
    if (!steps) return coda_errorf(err, "%s: normalizer Sequence has no \"normalizers\" list", path);
    for (size_t i = 0; i < n; i++) {
        const JsonValue* s = &steps[i];
        if (tok__str_is(json_get(s, "type"), "Prepend") && tok__str_is(json_get(s, "prepend"), TOK_META))
            t->prepend = TOK_PREPEND_ALWAYS;
        else if (tok__is_replace(s, " ", TOK_META))
            t->replace_space = 1;
        else
            return coda_errorf(err, "%s: unsupported normalizer step '%s' (supported: Prepend \"\xE2\x96\x81\", "
                               "Replace \" \" -> \"\xE2\x96\x81\", a Sequence of those)", path, tok__type_of(s));
    }
    return 0;
}

static inline int tok__load_pre_tokenizer(Tokenizer* t, const JsonValue* pre, const char* path, CodaError* err) {
    if (tok__is_null(pre)) return 0;
    if (!tok__str_is(json_get(pre, "type"), "Metaspace"))
        return coda_errorf(err, "%s: unsupported pre_tokenizer '%s' (supported: null, Metaspace)", path, tok__type_of(pre));
    if (!tok__str_is(json_get(pre, "replacement"), TOK_META))
        return coda_errorf(err, "%s: Metaspace pre_tokenizer with a replacement other than \"\xE2\x96\x81\"", path);
    t->replace_space = 1;
    const JsonValue* scheme = json_get(pre, "prepend_scheme");
    const JsonValue* add_prefix = json_get(pre, "add_prefix_space");  // older files
    if (tok__str_is(scheme, "always")) t->prepend = TOK_PREPEND_IF_MISSING;
    else if (tok__str_is(scheme, "first")) t->prepend = TOK_PREPEND_FIRST;
    else if (tok__str_is(scheme, "never")) t->prepend = TOK_PREPEND_NONE;
    else if (!scheme) t->prepend = (add_prefix && !tok__is_true(add_prefix)) ? TOK_PREPEND_NONE : TOK_PREPEND_IF_MISSING;
    else return coda_errorf(err, "%s: Metaspace prepend_scheme must be always, first or never", path);
    const JsonValue* split = json_get(pre, "split");
    t->split_on_meta = split ? tok__is_true(split) : 1;  // HF's default is split=true
    return 0;
}

static inline int tok__load_decoder(Tokenizer* t, const JsonValue* dec, const char* path, CodaError* err) {
    if (tok__is_null(dec)) return 0;
    size_t n;
    const JsonValue* steps = tok__sequence(dec, "decoders", &n);
    if (!steps) return coda_errorf(err, "%s: decoder Sequence has no \"decoders\" list", path);
    for (size_t i = 0; i < n; i++) {
        const JsonValue* s = &steps[i];
        const JsonValue* type = json_get(s, "type");
        if (tok__is_replace(s, TOK_META, " ")) t->decode_meta_to_space = 1;
        else if (tok__str_is(type, "ByteFallback")) t->decode_byte_fallback = 1;
        else if (tok__str_is(type, "Fuse")) {}  // we always produce one string
        else if (tok__str_is(type, "Strip")) {
            const JsonValue* content = json_get(s, "content");
            const JsonValue* start = json_get(s, "start");
            const JsonValue* stop = json_get(s, "stop");
            if (!tok__str_is(content, " ") || !start || !start->is_int || start->integer < 0 || start->integer > 1 ||
                (stop && (!stop->is_int || stop->integer != 0)))
                return coda_errorf(err, "%s: unsupported Strip decoder (supported: content \" \", start 0 or 1, stop 0)", path);
            t->decode_strip_leading = (int)start->integer;
        } else if (tok__str_is(type, "Metaspace")) {
            t->decode_meta_to_space = 1;
            const JsonValue* scheme = json_get(s, "prepend_scheme");
            const JsonValue* add_prefix = json_get(s, "add_prefix_space");
            t->decode_strip_leading = tok__str_is(scheme, "never") || (add_prefix && !tok__is_true(add_prefix)) ? 0 : 1;
        } else
            return coda_errorf(err, "%s: unsupported decoder step '%s' (supported: Replace \"\xE2\x96\x81\" -> \" \", "
                               "ByteFallback, Fuse, Strip, Metaspace, a Sequence of those)", path, tok__type_of(s));
    }
    return 0;
}

// Splits a merge entry ("a b" or ["a", "b"]) into its two pieces.
static inline int tok__merge_parts(const JsonValue* m, const char** a, size_t* na, const char** b, size_t* nb) {
    if (m->type == JSON_STRING) {
        const char* sp = (const char*)memchr(m->string, ' ', m->string_len);
        if (!sp || memchr(sp + 1, ' ', m->string_len - (size_t)(sp + 1 - m->string))) return -1;  // exactly one space
        *a = m->string; *na = (size_t)(sp - m->string);
        *b = sp + 1;    *nb = m->string_len - *na - 1;
        return 0;
    }
    if (m->type == JSON_ARRAY && m->count == 2 && m->items[0].type == JSON_STRING && m->items[1].type == JSON_STRING) {
        *a = m->items[0].string; *na = m->items[0].string_len;
        *b = m->items[1].string; *nb = m->items[1].string_len;
        return 0;
    }
    return -1;
}

static inline int tok__hex_digit(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// Fills pieces, the piece table and the byte/char tables from (piece, id) entries that cover
// ids 0..vocab_size-1 (vocab plus added tokens; an id listed twice must name the same piece).
static inline int tok__build_vocab(Tokenizer* t, const JsonValue* vocab, const JsonValue* added, const char* path, CodaError* err) {
    // 1. vocab_size = largest id + 1. Ids must be dense, so with E entries (vocab + added tokens)
    // no valid id reaches E: that bound is checked first, before anything is sized by an id (a
    // 62-byte file naming id 1000000000 must not allocate gigabytes to find the gap).
    const size_t n_entries = vocab->count + (added ? added->count : 0);
    int64_t max_id = -1;
    for (size_t i = 0; i < vocab->count; i++) {
        const JsonValue* v = &vocab->items[i];
        if (v->type != JSON_NUMBER || !v->is_int || v->integer < 0)
            return coda_errorf(err, "%s: model.vocab entry \"%s\" has id that is not a non-negative integer", path, vocab->keys[i]);
        if ((uint64_t)v->integer >= n_entries || v->integer >= INT32_MAX / 2)
            return coda_errorf(err, "%s: model.vocab entry \"%s\" has id %lld, but ids must cover 0..N-1 and there are only "
                               "N = %zu entries (vocab and added_tokens)", path, vocab->keys[i], (long long)v->integer, n_entries);
        if (v->integer > max_id) max_id = v->integer;
    }
    for (size_t i = 0; added && i < added->count; i++) {
        const JsonValue* id = json_get(&added->items[i], "id");
        const JsonValue* content = json_get(&added->items[i], "content");
        if (!id || !id->is_int || id->integer < 0 || !content || content->type != JSON_STRING)
            return coda_errorf(err, "%s: added_tokens[%zu] needs an integer \"id\" >= 0 and a string \"content\"", path, i);
        if ((uint64_t)id->integer >= n_entries || id->integer >= INT32_MAX / 2)
            return coda_errorf(err, "%s: added_tokens[%zu] has id %lld, but ids must cover 0..N-1 and there are only "
                               "N = %zu entries (vocab and added_tokens)", path, i, (long long)id->integer, n_entries);
        if (id->integer > max_id) max_id = id->integer;
    }
    if (max_id < 0) return coda_errorf(err, "%s: model.vocab is empty", path);
    int n = (int)(max_id + 1);
    t->vocab_size = n;

    // 2. piece of each id (pointers into the JSON tree for now)
    const char** src = (const char**)coda_calloc_or_die((size_t)n, sizeof(char*), "tokenizer pieces");
    size_t* src_len = (size_t*)coda_calloc_or_die((size_t)n, sizeof(size_t), "tokenizer piece lengths");
    int rc = 0;
    size_t total = 0;
    for (size_t i = 0; i < vocab->count + (added ? added->count : 0) && rc == 0; i++) {
        const char* s;
        size_t len;
        int64_t id;
        if (i < vocab->count) { s = vocab->keys[i]; len = vocab->key_lens[i]; id = vocab->items[i].integer; }
        else {
            const JsonValue* a = &added->items[i - vocab->count];
            s = json_get(a, "content")->string; len = json_get(a, "content")->string_len; id = json_get(a, "id")->integer;
        }
        if (src[id]) {
            if (src_len[id] != len || memcmp(src[id], s, len) != 0)
                rc = coda_errorf(err, "%s: id %lld is given to two different pieces (\"%s\" and \"%.*s\")", path, (long long)id, src[id], (int)len, s);
            continue;
        }
        src[id] = s; src_len[id] = len; total += len;
    }
    for (int id = 0; id < n && rc == 0; id++)
        if (!src[id]) rc = coda_errorf(err, "%s: no piece has id %d (ids must cover 0..%d)", path, id, n - 1);
    if (rc == 0 && total >= UINT32_MAX) rc = coda_errorf(err, "%s: vocabulary text too large", path);
    if (rc) { free(src); free(src_len); return rc; }

    // 3. own copies, tables
    t->piece_bytes = (char*)coda_malloc_or_die(total + 1, "tokenizer piece bytes");
    t->piece_start = (uint32_t*)coda_malloc_or_die(((size_t)n + 1) * sizeof(uint32_t), "tokenizer piece offsets");
    t->piece_byte = (int16_t*)coda_malloc_or_die((size_t)n * sizeof(int16_t), "tokenizer byte pieces");
    t->piece_special = (uint8_t*)coda_calloc_or_die((size_t)n, 1, "tokenizer special flags");
    uint32_t table_size = tok__table_size_for((size_t)n);
    t->piece_table = (int32_t*)coda_malloc_or_die(table_size * sizeof(int32_t), "tokenizer piece table");
    memset(t->piece_table, 0xff, table_size * sizeof(int32_t));
    t->piece_table_mask = table_size - 1;
    t->bmp_char_id = (int32_t*)coda_malloc_or_die(65536 * sizeof(int32_t), "tokenizer char table");
    memset(t->bmp_char_id, 0xff, 65536 * sizeof(int32_t));
    memset(t->byte_id, 0xff, sizeof(t->byte_id));
    uint32_t off = 0;
    for (int id = 0; id < n; id++) {
        t->piece_start[id] = off;
        memcpy(t->piece_bytes + off, src[id], src_len[id]);
        off += (uint32_t)src_len[id];
    }
    t->piece_start[n] = off;
    t->piece_bytes[off] = 0;
    free(src); free(src_len);

    for (int id = 0; id < n; id++) {
        size_t len;
        const char* p = tokenizer_piece(t, id, &len);
        // piece -> id; the first id wins for a piece listed twice (e.g. in vocab and added_tokens)
        if (tokenizer_piece_to_id(t, p, len) < 0) {
            uint32_t slot = tok__hash_bytes(p, len) & t->piece_table_mask;
            while (t->piece_table[slot] >= 0) slot = (slot + 1) & t->piece_table_mask;
            t->piece_table[slot] = id;
        }
        // "<0xNN>" byte pieces (HF writes them with upper-case hex)
        t->piece_byte[id] = -1;
        int hi, lo;
        if (len == 6 && memcmp(p, "<0x", 3) == 0 && p[5] == '>' && (hi = tok__hex_digit(p[3])) >= 0 && (lo = tok__hex_digit(p[4])) >= 0) {
            int v = hi * 16 + lo;
            t->piece_byte[id] = (int16_t)v;
            if (t->byte_id[v] < 0) t->byte_id[v] = id;
        }
        uint32_t cp;
        if (len >= 1 && len <= 3 && tok__utf8_char((const unsigned char*)p, len, &cp) == (int)len && t->bmp_char_id[cp] < 0)
            t->bmp_char_id[cp] = id;
    }
    t->meta_id = tokenizer_piece_to_id(t, TOK_META, 3);
    return 0;
}

static inline int tok__build_merges(Tokenizer* t, const JsonValue* merges, const char* path, CodaError* err) {
    size_t n = merges ? merges->count : 0;
    if (n >= INT32_MAX / 4) return coda_errorf(err, "%s: too many merges", path);
    uint32_t table_size = tok__table_size_for(n);
    t->merge_table = (TokMerge*)coda_malloc_or_die(table_size * sizeof(TokMerge), "tokenizer merge table");
    for (uint32_t i = 0; i < table_size; i++) t->merge_table[i].rank = -1;
    t->merge_table_mask = table_size - 1;
    t->n_merges = (int)n;
    t->merged_by_rank = (int32_t*)coda_malloc_or_die((n ? n : 1) * sizeof(int32_t), "tokenizer merge results");
    char* joined = NULL;
    size_t joined_cap = 0;
    for (size_t r = 0; r < n; r++) {
        const char *a, *b;
        size_t na, nb;
        if (tok__merge_parts(&merges->items[r], &a, &na, &b, &nb) != 0) {
            free(joined);
            return coda_errorf(err, "%s: model.merges[%zu] is neither a string \"a b\" (one space) nor a pair [\"a\", \"b\"]", path, r);
        }
        if (na == 0 || nb == 0) {  // e.g. " ": a merge with an empty side would map a piece onto itself
            free(joined);
            return coda_errorf(err, "%s: model.merges[%zu] (\"%.*s\" + \"%.*s\") has an empty side", path, r, (int)na, a, (int)nb, b);
        }
        int ia = tokenizer_piece_to_id(t, a, na), ib = tokenizer_piece_to_id(t, b, nb);
        if (na + nb > joined_cap) {
            joined_cap = 2 * (na + nb);
            joined = (char*)realloc(joined, joined_cap);
            if (!joined) coda_fatal("%s: out of host memory allocating %zu bytes for a merged piece", path, joined_cap);
        }
        memcpy(joined, a, na);
        memcpy(joined + na, b, nb);
        int im = tokenizer_piece_to_id(t, joined, na + nb);
        if (ia < 0 || ib < 0 || im < 0) {
            int rc = coda_errorf(err, "%s: model.merges[%zu] (\"%.*s\" + \"%.*s\") uses a piece that is not in model.vocab",
                                 path, r, (int)na, a, (int)nb, b);
            free(joined);
            return rc;
        }
        // A pair listed twice keeps its last rank, as HF's HashMap collect does.
        uint32_t slot = tok__hash_pair((uint32_t)ia, (uint32_t)ib) & t->merge_table_mask;
        while (t->merge_table[slot].rank >= 0 && !(t->merge_table[slot].left == (uint32_t)ia && t->merge_table[slot].right == (uint32_t)ib))
            slot = (slot + 1) & t->merge_table_mask;
        TokMerge* m = &t->merge_table[slot];
        m->left = (uint32_t)ia; m->right = (uint32_t)ib; m->rank = (int32_t)r; m->merged = im;
        t->merged_by_rank[r] = im;
    }
    free(joined);
    return 0;
}

// Records the added tokens (already validated by tok__build_vocab) and their special flags.
static inline void tok__build_added(Tokenizer* t, const JsonValue* added) {
    t->n_added = added ? (int)added->count : 0;
    t->added = (TokAdded*)coda_calloc_or_die((size_t)t->n_added, sizeof(TokAdded), "tokenizer added tokens");
    for (int i = 0; i < t->n_added; i++) {
        const JsonValue* a = &added->items[i];
        TokAdded* d = &t->added[i];
        d->id = (int32_t)json_get(a, "id")->integer;  // validated by tok__build_vocab
        d->special = tok__is_true(json_get(a, "special"));
        d->unsupported_flag = tok__is_true(json_get(a, "lstrip")) || tok__is_true(json_get(a, "rstrip")) ||
                              tok__is_true(json_get(a, "single_word")) || tok__is_true(json_get(a, "normalized"));
        if (d->special) t->piece_special[d->id] = 1;
        size_t len;
        const char* content = tokenizer_piece(t, d->id, &len);
        if (len > 0) t->added_first_byte[(unsigned char)content[0]] = 1;
    }
    // Longest first, so matching the first candidate that fits gives leftmost-longest (insertion sort:
    // a few hundred entries at most).
    for (int i = 1; i < t->n_added; i++) {
        TokAdded x = t->added[i];
        size_t lx = t->piece_start[x.id + 1] - t->piece_start[x.id];
        int j = i - 1;
        while (j >= 0 && t->piece_start[t->added[j].id + 1] - t->piece_start[t->added[j].id] < lx) { t->added[j + 1] = t->added[j]; j--; }
        t->added[j + 1] = x;
    }
}

// BOS is the special token that the post_processor's single-sequence template puts first (how HF
// adds it); without a post_processor, the added token "<s>". EOS is the added token "</s>".
static inline void tok__find_bos_eos(Tokenizer* t, const JsonValue* root) {
    t->bos_id = t->eos_id = -1;
    const JsonValue* post = json_get(root, "post_processor");
    const JsonValue* single = json_get(post, "single");
    if (tok__str_is(json_get(post, "type"), "TemplateProcessing") && single && single->type == JSON_ARRAY && single->count > 0) {
        const JsonValue* first = json_get(&single->items[0], "SpecialToken");
        const JsonValue* name = json_get(first, "id");
        const JsonValue* entry = name && name->type == JSON_STRING ? json_get(json_get(post, "special_tokens"), name->string) : NULL;
        const JsonValue* ids = json_get(entry, "ids");
        if (ids && ids->type == JSON_ARRAY && ids->count == 1 && ids->items[0].is_int &&
            ids->items[0].integer >= 0 && ids->items[0].integer < t->vocab_size)
            t->bos_id = (int)ids->items[0].integer;
    }
    if (t->bos_id < 0) t->bos_id = tokenizer_piece_to_id(t, "<s>", 3);
    t->eos_id = tokenizer_piece_to_id(t, "</s>", 4);
}

typedef struct TokScratch TokScratch;
typedef struct TokIds TokIds;
static inline void tok__plan_words(Tokenizer* t);

// Builds a tokenizer from a parsed tokenizer.json (root stays the caller's; nothing in t points
// into it). `path` only names the source in messages. On failure t is left empty and err says why.
static inline int tokenizer_load_json(Tokenizer* t, const JsonValue* root, const char* path, CodaError* err) {
    memset(t, 0, sizeof(*t));
    if (!path) path = "tokenizer.json";
    t->path = strdup(path);
    int rc = 0;
    const JsonValue* model = json_get(root, "model");
    const JsonValue* type = json_get(model, "type");
    const JsonValue* vocab = json_get(model, "vocab");
    const JsonValue* merges = json_get(model, "merges");
    const JsonValue* added = json_get(root, "added_tokens");
    const JsonValue* unk = json_get(model, "unk_token");
    if (!root || root->type != JSON_OBJECT || !model || model->type != JSON_OBJECT)
        rc = coda_errorf(err, "%s: not a tokenizer.json (no \"model\" object)", path);
    else if (!tok__str_is(type, "BPE"))
        rc = coda_errorf(err, "%s: model.type is %s%s%s, but only \"BPE\" (SentencePiece-style, e.g. Mistral, Llama 2) is supported", path,
                         type && type->type == JSON_STRING ? "\"" : "", type && type->type == JSON_STRING ? type->string : "missing",
                         type && type->type == JSON_STRING ? "\"" : "");
    else if (!vocab || vocab->type != JSON_OBJECT)
        rc = coda_errorf(err, "%s: model.vocab must be an object {piece: id}", path);
    else if (!merges || merges->type != JSON_ARRAY)
        rc = coda_errorf(err, "%s: model.merges must be an array", path);
    else if (added && added->type != JSON_ARRAY && added->type != JSON_NULL)
        rc = coda_errorf(err, "%s: added_tokens must be an array", path);
    else if (!tok__is_null(json_get(model, "dropout")) &&
             !(json_get(model, "dropout")->type == JSON_NUMBER && json_get(model, "dropout")->number == 0.0))
        rc = coda_errorf(err, "%s: BPE dropout is not supported (it makes encoding random)", path);
    else if (!tok__is_null(json_get(model, "continuing_subword_prefix")) || !tok__is_null(json_get(model, "end_of_word_suffix")))
        rc = coda_errorf(err, "%s: continuing_subword_prefix / end_of_word_suffix are not supported", path);
    else if (tok__is_true(json_get(model, "ignore_merges")))
        rc = coda_errorf(err, "%s: ignore_merges is not supported", path);
    else if (unk && unk->type != JSON_STRING && unk->type != JSON_NULL)
        rc = coda_errorf(err, "%s: model.unk_token must be a string or null", path);
    if (added && added->type == JSON_NULL) added = NULL;
    if (rc == 0) rc = tok__build_vocab(t, vocab, added, path, err);
    if (rc == 0) rc = tok__build_merges(t, merges, path, err);
    if (rc == 0) tok__build_added(t, added);
    if (rc == 0) rc = tok__load_normalizer(t, json_get(root, "normalizer"), path, err);
    if (rc == 0) rc = tok__load_pre_tokenizer(t, json_get(root, "pre_tokenizer"), path, err);
    if (rc == 0) rc = tok__load_decoder(t, json_get(root, "decoder"), path, err);
    if (rc == 0) {
        t->byte_fallback = tok__is_true(json_get(model, "byte_fallback"));
        t->fuse_unk = tok__is_true(json_get(model, "fuse_unk"));
        t->unk_id = -1;
        if (unk && unk->type == JSON_STRING) {
            t->unk_id = tokenizer_piece_to_id(t, unk->string, unk->string_len);
            if (t->unk_id < 0) rc = coda_errorf(err, "%s: model.unk_token \"%s\" is not in the vocabulary", path, unk->string);
        }
        if ((t->replace_space || t->prepend != TOK_PREPEND_NONE) && t->meta_id < 0 && !t->byte_fallback)
            rc = coda_errorf(err, "%s: the normalizer produces \"\xE2\x96\x81\" but the vocabulary has no such piece", path);
    }
    if (rc == 0) tok__find_bos_eos(t, root);
    if (rc == 0) tok__plan_words(t);
    if (rc != 0) tokenizer_free(t);
    return rc;
}

// Loads a tokenizer.json file. On failure t is left empty (tokenizer_free is still safe) and err says why.
static inline int tokenizer_load(Tokenizer* t, const char* tokenizer_json_path, CodaError* err) {
    memset(t, 0, sizeof(*t));
    JsonValue* root = NULL;
    if (json_parse_file(tokenizer_json_path, &root, err) != 0) return -1;
    int rc = tokenizer_load_json(t, root, tokenizer_json_path, err);
    json_free(root);
    return rc;
}

static inline int tokenizer_vocab_size(const Tokenizer* t) { return t->vocab_size; }
static inline int tokenizer_bos_id(const Tokenizer* t) { return t->bos_id; }
static inline int tokenizer_eos_id(const Tokenizer* t) { return t->eos_id; }

// ---------------------------------------------------------------------------------------------
// Encoding

// A growable id list.
struct TokIds {
    int32_t* ids;
    size_t n, cap;
};
static inline void tok__push(TokIds* out, int32_t id) {
    if (out->n == out->cap) {
        out->cap = out->cap ? 2 * out->cap : 64;
        out->ids = (int32_t*)realloc(out->ids, out->cap * sizeof(int32_t));
        if (!out->ids) coda_fatal("out of host memory growing a token list to %zu ids (%zu bytes)", out->cap, out->cap * sizeof(int32_t));
    }
    out->ids[out->n++] = id;
}

// Per-call scratch for the merge loop: one symbol per character (or per fallback byte). Encoding
// allocates its own, so a const Tokenizer can be shared by threads.
struct TokScratch {
    void* block;          // one allocation holding the arrays below
    uint64_t* heap;       // (rank << 32 | position): a min-heap, so lowest rank first, then leftmost
    int32_t* id;          // piece id of each symbol; -1 once merged into its left neighbour
    int32_t* prev;        // doubly linked list over the live symbols (-1 = none)
    int32_t* next;
    int32_t* rank_next;   // rank of the queued merge (this, next), -1 if none: a heap entry whose
                          // rank differs from it is stale (a rank names one pair, so no lookup needed)
    size_t n, heap_n, cap;
    unsigned char* norm;  // the normalized text
    size_t norm_cap;
};

static inline void tok__scratch_reserve(TokScratch* s, size_t cap) {
    if (cap <= s->cap) return;
    free(s->block);
    // The heap never holds more than 3 entries a symbol: n-1 initial pairs, 2 per merge (n-1 merges).
    char* b = (char*)coda_malloc_or_die(cap * (3 * sizeof(uint64_t) + 4 * sizeof(int32_t)), "tokenizer scratch");
    s->block = b;
    s->heap = (uint64_t*)b;
    s->id = (int32_t*)(b + 3 * cap * sizeof(uint64_t));
    s->prev = s->id + cap;
    s->next = s->prev + cap;
    s->rank_next = s->next + cap;
    s->cap = cap;
}
static inline void tok__scratch_free(TokScratch* s) { free(s->block); free(s->norm); memset(s, 0, sizeof(*s)); }

static inline void tok__heap_push(TokScratch* s, uint64_t key) {
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (s->heap[parent] <= key) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = key;
}
static inline uint64_t tok__heap_pop(TokScratch* s) {
    uint64_t top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && s->heap[c + 1] < s->heap[c]) c++;
        if (s->heap[c] >= last) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

// Queues the merge of symbol i with its right neighbour, if that pair has one.
static inline void tok__queue_pair(const Tokenizer* t, TokScratch* s, int32_t i) {
    int32_t j = s->next[i];
    s->rank_next[i] = -1;
    if (j < 0) return;
    const TokMerge* m = tok__find_merge(t, (uint32_t)s->id[i], (uint32_t)s->id[j]);
    if (!m) return;
    s->rank_next[i] = m->rank;
    tok__heap_push(s, (uint64_t)(uint32_t)m->rank << 32 | (uint32_t)i);
}

// Appends the symbol(s) of one character c[0..len): its piece, else one <0xNN> piece per byte
// (byte fallback), else unk. len 0 means "a byte outside valid UTF-8", a character of its own.
static inline void tok__add_char(const Tokenizer* t, TokScratch* s, const unsigned char* c, int len, uint32_t cp) {
    int32_t id = -1;
    if (len > 0) id = cp < 65536 ? t->bmp_char_id[cp] : tokenizer_piece_to_id(t, (const char*)c, (size_t)len);
    else len = 1;
    if (id >= 0) { s->id[s->n++] = id; return; }
    int all_bytes = t->byte_fallback;
    for (int k = 0; k < len && all_bytes; k++) all_bytes = t->byte_id[c[k]] >= 0;
    if (all_bytes) {
        for (int k = 0; k < len; k++) s->id[s->n++] = t->byte_id[c[k]];
        return;
    }
    if (t->unk_id < 0) return;  // no unk token: the character is dropped, as HF does
    if (t->fuse_unk && s->n > 0 && s->id[s->n - 1] == t->unk_id) return;
    s->id[s->n++] = t->unk_id;
}

// BPE over the normalized bytes w[0..n) as one word (HF's BPE merge_word + merge_all); appends
// the resulting ids to out.
static inline void tok__bpe_word(const Tokenizer* t, TokScratch* s, const unsigned char* w, size_t n, TokIds* out) {
    tok__scratch_reserve(s, n);  // a character gives at most one symbol per byte
    s->n = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        int len = tok__utf8_char(w + i, n - i, &cp);
        tok__add_char(t, s, w + i, len, cp);
        i += len ? (size_t)len : 1;
    }
    int32_t count = (int32_t)s->n;
    for (int32_t i = 0; i < count; i++) { s->prev[i] = i - 1; s->next[i] = i + 1 < count ? i + 1 : -1; }
    s->heap_n = 0;
    for (int32_t i = 0; i < count; i++) tok__queue_pair(t, s, i);
    while (s->heap_n > 0) {
        uint64_t top = tok__heap_pop(s);
        int32_t i = (int32_t)(uint32_t)top, rank = (int32_t)(top >> 32);
        if (s->id[i] < 0 || s->rank_next[i] != rank) continue;  // stale: i or its neighbour changed
        int32_t j = s->next[i];
        s->id[i] = t->merged_by_rank[rank];
        s->id[j] = -1;
        s->next[i] = s->next[j];
        if (s->next[j] >= 0) s->prev[s->next[j]] = i;
        tok__queue_pair(t, s, i);
        if (s->prev[i] >= 0) tok__queue_pair(t, s, s->prev[i]);
    }
    for (int32_t i = 0; i >= 0 && i < count; i = s->next[i]) tok__push(out, s->id[i]);
}

// One BPE word: a piece that BPE would build whole is looked up directly (most English words);
// anything else goes through the merge loop.
static inline void tok__encode_word(const Tokenizer* t, TokScratch* s, const unsigned char* w, size_t n, TokIds* out) {
    int id = tokenizer_piece_to_id(t, (const char*)w, n);
    if (id >= 0 && t->piece_whole[id]) tok__push(out, id);
    else tok__bpe_word(t, s, w, n, out);
}

static inline int tok__is_meta(const unsigned char* p, size_t n) {
    return n >= 3 && p[0] == 0xE2 && p[1] == 0x96 && p[2] == 0x81;
}

// Encodes one stretch of plain text (no added tokens in it). at_start: it begins the input
// (Metaspace "first" prepends only there).
static inline void tok__encode_text(const Tokenizer* t, TokScratch* s, const unsigned char* text, size_t len, int at_start, TokIds* out) {
    if (len == 0) return;  // HF prepends nothing to an empty text
    // 1. normalize: the prepended "▁", spaces as "▁"
    int starts_with_meta = (t->replace_space && text[0] == ' ') || tok__is_meta(text, len);
    int prepend = t->prepend == TOK_PREPEND_ALWAYS || (t->prepend == TOK_PREPEND_IF_MISSING && !starts_with_meta) ||
                  (t->prepend == TOK_PREPEND_FIRST && at_start && !starts_with_meta);
    if (3 * len + 3 > s->norm_cap) {
        free(s->norm);
        s->norm_cap = 3 * len + 3;
        s->norm = (unsigned char*)coda_malloc_or_die(s->norm_cap, "normalized text");
    }
    unsigned char* w = s->norm;
    size_t n = 0;
    if (prepend) { memcpy(w, TOK_META, 3); n = 3; }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ' && t->replace_space) { memcpy(w + n, TOK_META, 3); n += 3; }
        else w[n++] = text[i];
    }
    // 2. BPE. When merges cannot cross word starts (see tokenizer_load), words are independent.
    if (!t->words_independent) { tok__bpe_word(t, s, w, n, out); return; }
    size_t word = 0;
    int prev_meta = 0;
    for (size_t i = 0; i < n;) {
        int meta = tok__is_meta(w + i, n - i);
        if (meta && i > word && (t->split_on_meta || !prev_meta)) {
            tok__encode_word(t, s, w + word, i - word, out);
            word = i;
        }
        prev_meta = meta;
        i += meta ? 3 : 1;  // stepping bytes is fine: "▁" never starts inside another character
    }
    tok__encode_word(t, s, w + word, n - word, out);
}

// The added token that text[i..len) starts with (longest one), or -1.
static inline int tok__match_added(const Tokenizer* t, const unsigned char* text, size_t i, size_t len, size_t* match_len) {
    if (!t->added_first_byte[text[i]]) return -1;
    for (int k = 0; k < t->n_added; k++) {
        size_t n;
        const char* p = tokenizer_piece(t, t->added[k].id, &n);
        if (n > 0 && n <= len - i && memcmp(p, text + i, n) == 0) { *match_len = n; return k; }
    }
    return -1;
}

// Encodes text[0..len) (any bytes) into *ids (malloc'd; the caller frees) and *n_ids.
// flags: TOKENIZER_ADD_BOS, TOKENIZER_PARSE_SPECIAL (else "</s>" in the text is encoded as text).
static inline int tokenizer_encode_flags(const Tokenizer* t, const char* text, size_t len, int flags,
                                         int32_t** ids, size_t* n_ids, CodaError* err) {
    *ids = NULL;
    *n_ids = 0;
    if (!t->piece_table) return coda_errorf(err, "tokenizer_encode: the tokenizer is not loaded");
    if (len > 0 && !text) return coda_errorf(err, "%s: tokenizer_encode: text is NULL", t->path);
    if (len >= (size_t)INT32_MAX / 4)
        return coda_errorf(err, "%s: tokenizer_encode: text of %zu bytes is too long for one call; split it", t->path, len);
    if ((flags & TOKENIZER_ADD_BOS) && t->bos_id < 0)
        return coda_errorf(err, "%s: tokenizer_encode: this tokenizer has no BOS token", t->path);
    if (flags & TOKENIZER_PARSE_SPECIAL)
        for (int k = 0; k < t->n_added; k++)
            if (t->added[k].unsupported_flag) {
                size_t n;
                const char* p = tokenizer_piece(t, t->added[k].id, &n);
                return coda_errorf(err, "%s: tokenizer_encode: added token \"%.*s\" sets lstrip/rstrip/single_word/normalized, "
                                   "which matching special tokens in text does not implement", t->path, (int)n, p);
            }
    TokIds out = {NULL, 0, 0};
    TokScratch scratch;
    memset(&scratch, 0, sizeof(scratch));
    if (flags & TOKENIZER_ADD_BOS) tok__push(&out, t->bos_id);
    const unsigned char* u = (const unsigned char*)text;
    size_t start = 0;
    if (flags & TOKENIZER_PARSE_SPECIAL) {
        // As HF: the text between added tokens is normalized (and gets its "▁") piece by piece.
        for (size_t i = 0; i < len;) {
            size_t match_len;
            int k = tok__match_added(t, u, i, len, &match_len);
            if (k < 0) { i++; continue; }
            tok__encode_text(t, &scratch, u + start, i - start, start == 0, &out);
            tok__push(&out, t->added[k].id);
            i += match_len;
            start = i;
        }
    }
    tok__encode_text(t, &scratch, u + start, len - start, start == 0, &out);
    tok__scratch_free(&scratch);
    if (!out.ids) out.ids = (int32_t*)coda_malloc_or_die(sizeof(int32_t), "token ids");  // never NULL on success
    *ids = out.ids;
    *n_ids = out.n;
    return 0;
}

// Encodes plain text (added tokens such as "</s>" in it are encoded as text), with BOS if add_bos.
static inline int tokenizer_encode(const Tokenizer* t, const char* text, size_t len, int add_bos,
                                   int32_t** ids, size_t* n_ids, CodaError* err) {
    return tokenizer_encode_flags(t, text, len, add_bos ? TOKENIZER_ADD_BOS : 0, ids, n_ids, err);
}

// ---------------------------------------------------------------------------------------------
// Decoding

// Decodes ids into *text (malloc'd, NUL-terminated, may contain NULs; the caller frees) and *len.
// keep_special 0 skips special tokens (BOS, EOS, control tokens), as HF's decode does by default.
static inline int tokenizer_decode_flags(const Tokenizer* t, const int32_t* ids, size_t n, int keep_special,
                                         char** text, size_t* len, CodaError* err) {
    *text = NULL;
    *len = 0;
    if (!t->piece_table) return coda_errorf(err, "tokenizer_decode: the tokenizer is not loaded");
    size_t bound = 1;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size)
            return coda_errorf(err, "%s: tokenizer_decode: token id %d at position %zu is out of range [0, %d)", t->path, (int)ids[i],
                               i, t->vocab_size);
        bound += t->piece_start[ids[i] + 1] - t->piece_start[ids[i]];
    }
    char* out = (char*)coda_malloc_or_die(bound, "decoded text");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (t->piece_special[id] && !keep_special) continue;
        if (t->decode_byte_fallback && t->piece_byte[id] >= 0) { out[o++] = (char)t->piece_byte[id]; continue; }
        size_t plen;
        const char* p = tokenizer_piece(t, id, &plen);
        for (size_t k = 0; k < plen;) {
            if (t->decode_meta_to_space && k + 3 <= plen && memcmp(p + k, TOK_META, 3) == 0) { out[o++] = ' '; k += 3; }
            else out[o++] = p[k++];
        }
    }
    size_t skip = (t->decode_strip_leading && o > 0 && out[0] == ' ') ? 1 : 0;  // the prepended "▁"
    if (skip) memmove(out, out + 1, o - 1);
    o -= skip;
    out[o] = 0;
    *text = out;
    *len = o;
    return 0;
}

static inline int tokenizer_decode(const Tokenizer* t, const int32_t* ids, size_t n, char** text, size_t* len, CodaError* err) {
    return tokenizer_decode_flags(t, ids, n, 0, text, len, err);
}

// Decides whether encoding may cut the text into words (and use the whole-piece lookup).
// BPE over the whole text equals BPE over its words, cut before every "▁" that follows another
// character, exactly when no merge (a, b) has b starting with "▁" and a not ending with "▁":
// only such a merge could join a word's last symbol to the next word's first. Mistral's and
// Llama 2's merges pass (SentencePiece never builds pieces across a space start), so this costs
// nothing in exactness; a vocabulary that fails is encoded as one word, as before.
// With Metaspace split=true, words are what HF itself encodes one by one, so the cut is exact.
static inline void tok__plan_words(Tokenizer* t) {
    t->piece_whole = (uint8_t*)coda_calloc_or_die((size_t)t->vocab_size, 1, "tokenizer whole-piece flags");
    t->words_independent = t->split_on_meta;
    if (!t->words_independent && t->meta_id >= 0 && t->replace_space) {
        t->words_independent = 1;
        for (uint32_t slot = 0; slot <= t->merge_table_mask && t->words_independent; slot++) {
            const TokMerge* m = &t->merge_table[slot];
            if (m->rank < 0) continue;
            size_t na, nb;
            const char* a = tokenizer_piece(t, (int)m->left, &na);
            const char* b = tokenizer_piece(t, (int)m->right, &nb);
            if (tok__is_meta((const unsigned char*)b, nb) && !(na >= 3 && memcmp(a + na - 3, TOK_META, 3) == 0))
                t->words_independent = 0;
        }
    }
    // A piece is "whole" when BPE on its own characters gives back exactly that piece. Not every
    // piece is (a lower-ranked merge can take one of its characters first), so this is computed,
    // not assumed.
    TokScratch s;
    memset(&s, 0, sizeof(s));
    TokIds ids = {NULL, 0, 0};
    for (int id = 0; id < t->vocab_size; id++) {
        if (t->piece_byte[id] >= 0 || t->piece_special[id]) continue;
        size_t n;
        const char* p = tokenizer_piece(t, id, &n);
        if (n == 0) continue;
        ids.n = 0;
        tok__bpe_word(t, &s, (const unsigned char*)p, n, &ids);
        t->piece_whole[id] = ids.n == 1 && ids.ids[0] == id;
    }
    free(ids.ids);
    tok__scratch_free(&s);
}
