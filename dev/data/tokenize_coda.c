// tokenize_coda.c — turns text files into a coda.c token shard (llmc/shard.h): the command line
// over llmc/shard_pack.h, which says what a document is, how documents are packed and why the
// chunked encoding equals encoding the whole text.
//
//   ./tokenize_coda [options] tokenizer.json input.txt [more.txt ...] output.bin
#include <signal.h>
#include "llmc/shard_pack.h"

static const char TC_USAGE[] =
    "usage: tokenize_coda [options] tokenizer.json input.txt [more.txt ...] output.bin\n"
    "  Documents are runs of non-blank lines. By default they are joined with \"\\n\\n\" and tokenized\n"
    "  as one string with one BOS at the very start (the paper's packing, docs/protocol.md §2).\n"
    "  The output is written to a temporary file beside it and renamed at the end, so a failed or\n"
    "  interrupted run leaves an existing output.bin as it was; it may not be the tokenizer or an input.\n"
    "options:\n"
    "  --bos-per-doc   tokenize each document alone, each with its own BOS (no separator)\n"
    "  --rows          each non-blank line is a document and keeps its \"\\n\" (WikiText wiki.*.raw)\n"
    "  --chunk-mb N    encode about N MB of text per call (default 4; memory stays bounded)\n"
    "  --verify        also encode each whole string in one call and check the chunks equal it\n"
    "                  (holds the whole text in memory; for checking, not for 0.5 GB corpora)\n"
    "  -q              no progress bar\n"
    "  -h, --help      this text\n";

// A usage error: the message and the usage text on stderr, exit status 2. (--help prints the
// usage on stdout and exits 0.)
static int tc_usage_error(const char* what, const char* arg) {
    fprintf(stderr, "tokenize_coda: %s%s\n", what, arg);
    fputs(TC_USAGE, stderr);
    return 2;
}

// SIGINT / SIGTERM / SIGHUP: remove the temporary file, then die of the signal as usual.
static void tc_on_signal(int sig) {
    const char* tmp = tc_tmp_in_progress;
    if (tmp) unlink(tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int tokenize_coda_main(int argc, char** argv) {
    ShardPackOptions opt;
    memset(&opt, 0, sizeof(opt));
    int quiet = 0, npos = 0;
    for (int i = 1; i < argc; i++)  // --help anywhere wins over everything else
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { fputs(TC_USAGE, stdout); return 0; }
    const char** pos = (const char**)coda_malloc_or_die((size_t)argc * sizeof(char*), "argument list");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--bos-per-doc")) opt.bos_per_doc = 1;
        else if (!strcmp(argv[i], "--rows")) opt.rows = 1;
        else if (!strcmp(argv[i], "--verify")) opt.verify = 1;
        else if (!strcmp(argv[i], "-q")) quiet = 1;
        else if (!strcmp(argv[i], "--chunk-mb")) {
            if (i + 1 >= argc) { free(pos); return tc_usage_error("--chunk-mb needs a value", ""); }
            char* end;
            double mb = strtod(argv[++i], &end);
            if (end == argv[i] || *end || !(mb > 0) || mb > 1e6) {
                free(pos);
                return tc_usage_error("--chunk-mb needs a number of MB in (0, 1e6], not ", argv[i]);
            }
            opt.chunk_bytes = (size_t)(mb * 1048576.0);
            if (opt.chunk_bytes < 1) opt.chunk_bytes = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) { free(pos); return tc_usage_error("unknown option ", argv[i]); }
        else pos[npos++] = argv[i];
    }
    if (npos < 3) { free(pos); return tc_usage_error("needs a tokenizer.json, at least one input file and an output file", ""); }
    const char* tok_path = pos[0];
    const char* out_path = pos[npos - 1];
    TcProgress pr;
    memset(&pr, 0, sizeof(pr));
    for (int i = 1; i < npos - 1; i++) {
        struct stat st;
        if (stat(pos[i], &st) != 0) coda_fatal("%s: cannot open: %s", pos[i], strerror(errno));
        pr.total += (uint64_t)st.st_size;
    }
    CodaError err = {{0}};
    // Checked before the (slow) tokenizer load too, so a mistyped command fails at once.
    if (tc_check_output(out_path, tok_path, pos + 1, npos - 2, &err) != 0) coda_fatal("%s", err.msg);
    Tokenizer* tok = (Tokenizer*)calloc(1, sizeof(Tokenizer));
    if (tokenizer_load(tok, tok_path, &err) != 0) coda_fatal("%s", err.msg);
    signal(SIGINT, tc_on_signal);
    signal(SIGTERM, tc_on_signal);
    signal(SIGHUP, tc_on_signal);
    int64_t n_tokens = 0, n_docs = 0, n_chunks = 0;
    pr.enabled = !quiet && isatty(2);
    pr.t0 = pr.last = tc_now();
    if (tokenize_files(tok, pos + 1, npos - 2, out_path, opt, &pr, &n_tokens, &n_docs, &n_chunks, &err) != 0)
        coda_fatal("%s", err.msg);
    tc_progress_show(&pr, 1);
    double el = tc_now() - pr.t0;
    printf("tokenize_coda: wrote %s: %lld tokens (uint%d, vocab %d), %lld documents, %s%s; %.2f MB of text in %.2fs "
           "(%.2f MB/s), %lld chunks%s\n",
           out_path, (long long)n_tokens, 8 * shard_token_bytes_for_vocab(tokenizer_vocab_size(tok)),
           tokenizer_vocab_size(tok), (long long)n_docs,
           opt.bos_per_doc ? "one BOS per document" : "joined with \"\\n\\n\", one BOS", opt.rows ? ", rows mode" : "",
           pr.total / 1e6, el, el > 0 ? pr.total / 1e6 / el : 0.0, (long long)n_chunks,
           opt.verify ? ", verified equal to whole-text encoding" : "");
    tokenizer_free(tok);
    free(tok);
    free(pos);
    return 0;
}

int main(int argc, char** argv) { return tokenize_coda_main(argc, argv); }
