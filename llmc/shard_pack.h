// shard_pack.h — text files into a coda.c token shard (llmc/shard.h): the packer behind
// tokenize_coda (dev/data/tokenize_coda.c, which adds the command line) and its tests.
//
// Documents. By default a document is a run of non-blank lines (a blank line holds only spaces,
// tabs or CRs); blank lines and file ends separate documents. A document's text is its lines joined
// with "\n". With --rows, every non-blank line is a document and keeps its own "\n": that is how
// the paper (docs/protocol.md §2) treats the rows of Hugging Face's WikiText (the lines of
// wiki.*.raw), so `--rows wiki.train.raw` reproduces its token stream.
//
// Packing (docs/protocol.md §2, the default): the documents are joined with "\n\n" and the result is
// tokenized as ONE string, with a single BOS at the very start, no EOS, nothing per row.
// --bos-per-doc: every document is tokenized on its own with its own BOS (llm.c style), no separator.
//
// Bounded memory: a corpus is never held whole. The text is encoded in chunks of about --chunk-mb
// MB, each ending just before a "\n", and the chunked result is identical to encoding the whole
// string at once. Why that holds, for the SentencePiece-style BPE of Mistral/Llama (llmc/tokenizer.h):
//   1. The normalizer works per character (space -> "▁") except that it prepends one "▁" to the
//      whole text. Each later chunk starts with "\n", so its own prepended "▁" is followed by "\n".
//   2. BPE merges only ever join two adjacent symbols into a vocabulary piece whose string is the
//      two strings concatenated. If no piece other than the newline's own contains the newline's
//      piece string ("<0x0A>" with byte fallback), no merge can involve the newline symbol, so no
//      merge crosses a boundary next to a "\n", and the extra "▁" stays a token of its own.
//   3. With no merge across position p, BPE of the whole string = BPE(left) ++ BPE(right): each
//      side's candidate pairs never change the other's, and "lowest rank first" picks the same
//      sequence of merges within each side.
// (2) is checked against the vocabulary when the tokenizer is loaded (refused otherwise), the
// prefix that encode("\n") puts before the newline is dropped from every later chunk after checking
// it is there, and --verify re-encodes the whole text in one call and compares (the test suite and
// `make shards` use it).
#pragma once
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "common.h"
#include "shard.h"
#include "tokenizer.h"

typedef struct {
    int32_t* ids;
    size_t n, cap;
} TcIdVec;

static inline void tc_idvec_append(TcIdVec* v, const int32_t* ids, size_t n) {
    if (v->n + n > v->cap) {
        size_t cap = v->cap ? v->cap : 1024;
        while (cap < v->n + n) cap *= 2;
        v->ids = (int32_t*)realloc(v->ids, cap * sizeof(int32_t));
        if (!v->ids) coda_fatal("out of host memory growing a token list to %zu ids (%zu bytes)", cap, cap * sizeof(int32_t));
        v->cap = cap;
    }
    memcpy(v->ids + v->n, ids, n * sizeof(int32_t));
    v->n += n;
}

typedef struct {
    char* p;
    size_t len, cap;
} TcTextBuf;

static inline void tc_textbuf_append(TcTextBuf* b, const char* s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->len + n + 1) cap *= 2;
        b->p = (char*)realloc(b->p, cap);
        if (!b->p) coda_fatal("out of host memory growing a text buffer to %zu bytes", cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

typedef struct {
    int bos_per_doc;     // 1: each document is its own string with its own BOS
    int rows;            // 1: each non-blank line is a document (keeps its "\n")
    size_t chunk_bytes;  // encode at most about this much text per call
    int verify;          // re-encode every string whole and compare
} ShardPackOptions;

typedef struct {
    const Tokenizer* tok;
    ShardPackOptions opt;
    ShardWriter* w;
    TcTextBuf buf;          // text of the current string not yet encoded
    int string_started;   // a chunk of the current string has been encoded already
    int in_doc;           // paragraph mode: inside a run of non-blank lines
    int64_t n_docs;
    int32_t prefix[8];    // what encode("\n") puts before the newline's id (the prepended "▁")
    size_t n_prefix;
    int32_t nl_id;        // the newline's id
    int64_t n_chunks;
    TcTextBuf whole;        // --verify: the current string in full
    TcIdVec chunked;        // --verify: the ids the chunks produced for it
} ShardPacker;

// Checks the premise of chunked encoding (see the top of this file) and learns the prefix.
static int packer_check_tokenizer(ShardPacker* p, CodaError* err) {
    int32_t* ids;
    size_t n;
    if (tokenizer_encode(p->tok, "\n", 1, 0, &ids, &n, err) != 0) return -1;
    if (n < 1 || n - 1 > sizeof(p->prefix) / sizeof(p->prefix[0])) {
        free(ids);
        return coda_errorf(err, "%s: encode(\"\\n\") gave %zu ids; cannot encode in chunks", p->tok->path, n);
    }
    p->nl_id = ids[n - 1];
    p->n_prefix = n - 1;
    memcpy(p->prefix, ids, (n - 1) * sizeof(int32_t));
    free(ids);
    size_t nl_len;
    const char* nl = tokenizer_piece(p->tok, p->nl_id, &nl_len);
    for (int id = 0; id < tokenizer_vocab_size(p->tok); id++) {
        size_t len;
        const char* s = tokenizer_piece(p->tok, id, &len);
        if (id == p->nl_id || len < nl_len) continue;
        for (size_t k = 0; k + nl_len <= len; k++)
            if (memcmp(s + k, nl, nl_len) == 0)
                return coda_errorf(err, "%s: piece %d (\"%.*s\") contains the newline piece \"%.*s\", so merges can "
                                   "cross a newline and chunked encoding would not equal whole-text encoding",
                                   p->tok->path, id, (int)len, s, (int)nl_len, nl);
    }
    return 0;
}

static int packer_init(ShardPacker* p, const Tokenizer* tok, ShardWriter* w, ShardPackOptions opt, CodaError* err) {
    memset(p, 0, sizeof(*p));
    p->tok = tok;
    p->w = w;
    p->opt = opt;
    if (p->opt.chunk_bytes == 0) p->opt.chunk_bytes = 4u << 20;
    if (tokenizer_bos_id(tok) < 0) return coda_errorf(err, "%s: the tokenizer has no BOS token, which the packing needs", tok->path);
    return packer_check_tokenizer(p, err);
}

static void packer_free(ShardPacker* p) {
    free(p->buf.p);
    free(p->whole.p);
    free(p->chunked.ids);
    memset(p, 0, sizeof(*p));
}

// Encodes buf[0..n) as the next chunk of the current string, writes the ids, keeps buf[n..).
static int packer_encode_chunk(ShardPacker* p, size_t n, CodaError* err) {
    int32_t* ids;
    size_t n_ids;
    int add_bos = !p->string_started;
    if (tokenizer_encode(p->tok, p->buf.p, n, add_bos, &ids, &n_ids, err) != 0) return -1;
    size_t skip = 0;
    if (p->string_started) {  // a continuation chunk: it starts with "\n"; drop its prepended "▁"
        int ok = n_ids > p->n_prefix && ids[p->n_prefix] == p->nl_id &&
                 memcmp(ids, p->prefix, p->n_prefix * sizeof(int32_t)) == 0;
        if (!ok) {
            free(ids);
            return coda_errorf(err, "internal error: a chunk starting with \"\\n\" did not encode to the expected prefix");
        }
        skip = p->n_prefix;
    }
    int rc = shard_writer_append(p->w, ids + skip, n_ids - skip, err);
    if (rc == 0 && p->opt.verify) tc_idvec_append(&p->chunked, ids + skip, n_ids - skip);
    free(ids);
    if (rc != 0) return -1;
    p->string_started = 1;
    p->n_chunks++;
    memmove(p->buf.p, p->buf.p + n, p->buf.len - n);
    p->buf.len -= n;
    return 0;
}

// Encodes what it can of the buffer: everything before its last "\n" (if that is not at 0).
static int packer_flush_partial(ShardPacker* p, CodaError* err) {
    size_t nl = p->buf.len;  // index of the last "\n", found from the end
    while (nl > 0 && p->buf.p[nl - 1] != '\n') nl--;
    if (nl <= 1) return 0;   // no "\n" after position 0: keep accumulating (one very long line)
    return packer_encode_chunk(p, nl - 1, err);  // split just before that "\n"
}

// Ends the current string: encodes the rest and, with --verify, compares with one whole encoding.
static int packer_end_string(ShardPacker* p, CodaError* err) {
    if (p->buf.len > 0 || !p->string_started)
        if (packer_encode_chunk(p, p->buf.len, err) != 0) return -1;
    if (p->opt.verify) {
        int32_t* ids;
        size_t n;
        if (tokenizer_encode(p->tok, p->whole.p, p->whole.len, 1, &ids, &n, err) != 0) return -1;
        size_t i = 0;
        while (i < n && i < p->chunked.n && ids[i] == p->chunked.ids[i]) i++;
        int same = i == n && n == p->chunked.n;
        free(ids);
        if (!same)
            return coda_errorf(err, "--verify: chunked encoding differs from whole-text encoding at token %zu (%zu vs %zu tokens)",
                               i, p->chunked.n, n);
        p->whole.len = 0;
        p->chunked.n = 0;
    }
    p->string_started = 0;
    return 0;
}

static int packer_append(ShardPacker* p, const char* s, size_t n, CodaError* err) {
    tc_textbuf_append(&p->buf, s, n);
    if (p->opt.verify) tc_textbuf_append(&p->whole, s, n);
    if (p->buf.len >= p->opt.chunk_bytes) return packer_flush_partial(p, err);
    return 0;
}

// Starts a document: the "\n\n" separator before it when documents are joined.
static int packer_begin_doc(ShardPacker* p, CodaError* err) {
    p->n_docs++;
    if (!p->opt.bos_per_doc && p->n_docs > 1) return packer_append(p, "\n\n", 2, err);
    return 0;
}

static int packer_end_doc(ShardPacker* p, CodaError* err) {
    if (p->opt.bos_per_doc) return packer_end_string(p, err);
    return 0;
}

static int tc_line_is_blank(const char* s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return 0;
    return 1;
}

// One line of input, without its "\n" (had_nl says whether it had one).
static int packer_line(ShardPacker* p, const char* s, size_t n, int had_nl, CodaError* err) {
    if (tc_line_is_blank(s, n)) {
        if (!p->opt.rows && p->in_doc) { p->in_doc = 0; return packer_end_doc(p, err); }
        return 0;
    }
    if (p->opt.rows) {
        if (packer_begin_doc(p, err) != 0 || packer_append(p, s, n, err) != 0) return -1;
        if (had_nl && packer_append(p, "\n", 1, err) != 0) return -1;
        return packer_end_doc(p, err);
    }
    if (!p->in_doc) {
        p->in_doc = 1;
        if (packer_begin_doc(p, err) != 0) return -1;
    } else if (packer_append(p, "\n", 1, err) != 0) {
        return -1;
    }
    return packer_append(p, s, n, err);
}

// Called at the end of every input file: a file end ends a document.
static int packer_end_file(ShardPacker* p, CodaError* err) {
    if (!p->opt.rows && p->in_doc) { p->in_doc = 0; return packer_end_doc(p, err); }
    return 0;
}

// Called once after the last file (which has documents): encodes the rest of the joined string.
static int packer_finish(ShardPacker* p, CodaError* err) {
    if (!p->opt.bos_per_doc) return packer_end_string(p, err);
    return 0;
}

// ---- progress ----
typedef struct {
    double t0, last;
    uint64_t total, done;
    int enabled;
} TcProgress;

static double tc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void tc_progress_show(TcProgress* pr, int final) {
    double t = tc_now();
    if (!pr->enabled || (!final && t - pr->last < 0.2) || t - pr->t0 < 1.0) return;  // short runs stay quiet
    pr->last = t;
    double frac = pr->total ? (double)pr->done / (double)pr->total : 1.0;
    if (frac > 1.0) frac = 1.0;
    char bar[41];
    int fill = (int)(frac * 40);
    for (int i = 0; i < 40; i++) bar[i] = i < fill ? '#' : '.';
    bar[40] = 0;
    double mb = pr->done / 1e6, el = t - pr->t0;
    double eta = frac > 0 ? el * (1 - frac) / frac : 0;
    fprintf(stderr, "\r[%s] %5.1f%% %8.1f MB %6.2f MB/s  eta %4.0fs ", bar, 100 * frac, mb, el > 0 ? mb / el : 0, eta);
    if (final) fprintf(stderr, "\n");
    fflush(stderr);
}

// Reads a text file line by line into the packer.
static int packer_add_file(ShardPacker* p, const char* path, TcProgress* pr, CodaError* err) {
    FILE* f = fopen(path, "rb");
    if (!f) return coda_errorf(err, "%s: cannot open: %s", path, strerror(errno));
    char* line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        int had_nl = n > 0 && line[n - 1] == '\n';
        rc = packer_line(p, line, (size_t)n - (had_nl ? 1 : 0), had_nl, err);
        if (pr) { pr->done += (uint64_t)n; tc_progress_show(pr, 0); }
    }
    if (rc == 0 && ferror(f)) rc = coda_errorf(err, "%s: read error: %s", path, strerror(errno));
    free(line);
    fclose(f);
    if (rc == 0) rc = packer_end_file(p, err);
    return rc;
}

// Refuses an output that would destroy an input: the same file (device and inode, so "./a.txt",
// a hard link or a symlink to a.txt all count) as the tokenizer or any text input, or an existing
// path that is not a regular file (renaming a shard onto /dev/null would replace the device).
static int tc_check_output(const char* out_path, const char* tok_path, const char** inputs, int n, CodaError* err) {
    struct stat out;
    if (stat(out_path, &out) != 0) return 0;  // does not exist yet: it cannot be one of the inputs
    if (!S_ISREG(out.st_mode))
        return coda_errorf(err, "%s: the output exists and is not a regular file; refusing to replace it", out_path);
    for (int i = -1; i < n; i++) {
        const char* in = i < 0 ? tok_path : inputs[i];
        struct stat st;
        if (!in || stat(in, &st) != 0) continue;  // a missing input is reported when it is read
        if (st.st_dev == out.st_dev && st.st_ino == out.st_ino)
            return coda_errorf(err, "%s: the output is the same file as the %s %s; refusing to overwrite it", out_path,
                               i < 0 ? "tokenizer" : "input", in);
    }
    return 0;
}

// The temporary file being written, for the signal handler of main(): an interrupted run removes
// it, and the old output (if any) was never touched.
static const char* volatile tc_tmp_in_progress = NULL;

// "a.txt" or "a.txt, b.txt and 3 more" for messages about the inputs as a whole.
static void tc_describe_inputs(const char** inputs, int n, char* buf, size_t size) {
    if (n <= 0) { snprintf(buf, size, "(no input files)"); return; }
    if (n == 1) snprintf(buf, size, "%s", inputs[0]);
    else if (n == 2) snprintf(buf, size, "%s, %s", inputs[0], inputs[1]);
    else snprintf(buf, size, "%s, %s and %d more", inputs[0], inputs[1], n - 2);
}

// Tokenizes the files inputs[0..n) into the shard out_path (written atomically). pr may be NULL.
// The output must not be the tokenizer or an input (tc_check_output); until the final rename, an
// existing out_path is left as it was.
static int tokenize_files(const Tokenizer* tok, const char** inputs, int n, const char* out_path, ShardPackOptions opt,
                          TcProgress* pr, int64_t* n_tokens, int64_t* n_docs, int64_t* n_chunks, CodaError* err) {
    *n_tokens = *n_docs = *n_chunks = 0;
    if (tc_check_output(out_path, tok->path, inputs, n, err) != 0) return -1;
    ShardWriter* w = (ShardWriter*)malloc(sizeof(ShardWriter));
    ShardPacker* p = (ShardPacker*)calloc(1, sizeof(ShardPacker));
    if (!w || !p) {
        free(w); free(p);
        return coda_errorf(err, "%s: out of host memory allocating %zu bytes for the shard writer", out_path,
                           sizeof(ShardWriter) + sizeof(ShardPacker));
    }
    int rc = shard_writer_open(w, out_path, tokenizer_vocab_size(tok), tokenizer_bos_id(tok), tokenizer_eos_id(tok),
                               opt.bos_per_doc ? SHARD_PACK_BOS_PER_DOC : SHARD_PACK_JOINED, err);
    int opened = rc == 0;
    if (opened) tc_tmp_in_progress = w->tmp_path;
    if (rc == 0) rc = packer_init(p, tok, w, opt, err);
    for (int i = 0; i < n && rc == 0; i++)
        if (packer_add_file(p, inputs[i], pr, err) != 0) {
            char m[sizeof(err->msg)];
            snprintf(m, sizeof(m), "%s", err->msg);
            rc = coda_errorf(err, "%.900s (while reading %s)", m, inputs[i]);
        }
    if (rc == 0 && p->n_docs == 0) {
        char names[512];
        tc_describe_inputs(inputs, n, names, sizeof(names));
        rc = coda_errorf(err, "%s: the input has no documents (only blank lines?); %s not written", names, out_path);
    }
    if (rc == 0) rc = packer_finish(p, err);
    *n_tokens = w->h.n_tokens;
    *n_docs = p->n_docs;
    *n_chunks = p->n_chunks;
    if (rc == 0) rc = shard_writer_close(w, p->n_docs, err);
    else if (opened) shard_writer_abort(w);
    tc_tmp_in_progress = NULL;
    packer_free(p);
    free(p);
    free(w);
    return rc;
}
