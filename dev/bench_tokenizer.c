// bench_tokenizer.c — encode speed of llmc/tokenizer.h on one core, in MB/s of input text.
//   gcc -O2 -I. -o bench_tokenizer dev/bench_tokenizer.c     (or: make bench_tokenizer)
//   ./bench_tokenizer TOKENIZER_JSON FILE... [--repeat N]
// Every non-empty line of the files is encoded as one text (no BOS), as the HF comparison in
// dev/test/hf_tokenizer_reference.py does; lines are read into memory first, so only encoding is
// timed. Prints MB/s (best of N passes), tokens, and the FNV-1a digest of all ids, which must equal
// the HF digest of the same files (dev/test/fixtures/hf_tokenizer_digests.txt).
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L  // clock_gettime and strdup under strict -std=c99
#endif
#include <time.h>
#include "llmc/tokenizer.h"

static double bench_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static const char BENCH_USAGE[] =
    "usage: bench_tokenizer TOKENIZER_JSON FILE... [--repeat N]\n"
    "  Encodes every non-empty line of the FILEs (at most 64) as one text, N passes (default 3), and\n"
    "  prints the best pass in MB/s (one thread), the token count and the FNV-1a digest of the ids.\n";

// The program (the tests run the built binary: dev/test/test_data.h).
static int bench_tokenizer_main(int argc, char** argv) {
    int repeat = 3;
    const char* files[64];
    int n_files = 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { fputs(BENCH_USAGE, stdout); return 0; }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (n_files < 64) files[n_files++] = argv[i];
        else { fprintf(stderr, "bench_tokenizer: more than 64 files\n%s", BENCH_USAGE); return 2; }
    }
    if (argc < 3 || n_files == 0 || repeat < 1) {
        fputs(BENCH_USAGE, stderr);
        return 2;
    }
    Tokenizer tok;
    CodaError err;
    double t0 = bench_seconds();
    if (tokenizer_load(&tok, argv[1], &err) != 0) coda_fatal("%s", err.msg);
    double load_s = bench_seconds() - t0;

    // All files into one buffer; lines are the non-empty runs between '\n'.
    char* text = NULL;
    size_t len = 0;
    for (int f = 0; f < n_files; f++) {
        FILE* fp = fopen(files[f], "rb");
        if (!fp) coda_fatal("%s: cannot open: %s", files[f], strerror(errno));
        fseek(fp, 0, SEEK_END);
        long n = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        if (n < 0) coda_fatal("%s: cannot tell its size (not a regular file?)", files[f]);
        text = (char*)realloc(text, len + (size_t)n + 1);
        if (!text) coda_fatal("out of host memory allocating %zu bytes for the text of %s", len + (size_t)n + 1, files[f]);
        if (fread(text + len, 1, (size_t)n, fp) != (size_t)n) coda_fatal("%s: read error", files[f]);
        fclose(fp);
        len += (size_t)n;
        if (len && text[len - 1] != '\n') text[len++] = '\n';
    }
    size_t n_lines = 0, line_bytes = 0;
    for (size_t i = 0, s = 0; i < len; i++)
        if (text[i] == '\n') { if (i > s) { n_lines++; line_bytes += i - s; } s = i + 1; }

    double best = 1e30;
    size_t n_tokens = 0;
    uint64_t digest = 0;
    for (int r = 0; r < repeat; r++) {
        uint64_t h = 0xcbf29ce484222325ull;
        n_tokens = 0;
        double start = bench_seconds();
        for (size_t i = 0, s = 0; i < len; i++) {
            if (text[i] != '\n') continue;
            if (i > s) {
                int32_t* ids;
                size_t n;
                if (tokenizer_encode(&tok, text + s, i - s, 0, &ids, &n, &err) != 0) coda_fatal("%s", err.msg);
                // digest: FNV-1a 64 over each line's ids (uint32 LE) followed by 0xFFFFFFFF
                for (size_t k = 0; k <= n; k++) {
                    uint32_t v = k < n ? (uint32_t)ids[k] : 0xFFFFFFFFu;
                    for (int b = 0; b < 4; b++) { h ^= (v >> (8 * b)) & 0xFF; h *= 0x100000001b3ull; }
                }
                n_tokens += n;
                free(ids);
            }
            s = i + 1;
        }
        double dt = bench_seconds() - start;
        if (dt < best) best = dt;
        digest = h;
    }
    printf("tokenizer %s: vocab %d, loaded in %.3f s\n", argv[1], tokenizer_vocab_size(&tok), load_s);
    printf("%zu lines, %.2f MB of text, %zu tokens (%.2f bytes/token)\n", n_lines, line_bytes / 1e6, n_tokens,
           (double)line_bytes / (double)(n_tokens ? n_tokens : 1));
    printf("encode: %.3f s best of %d = %.2f MB/s (one thread), digest %016llx\n", best, repeat, line_bytes / 1e6 / best,
           (unsigned long long)digest);
    free(text);
    tokenizer_free(&tok);
    return 0;
}

int main(int argc, char** argv) { return bench_tokenizer_main(argc, argv); }
