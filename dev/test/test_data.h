// test_data.h — token shards (llmc/shard.h) and the dataloader (llmc/dataloader.h).
// Every test writes small synthetic shards into its own mkdtemp directory under /tmp and removes it.
#pragma once
#include <dirent.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/wait.h>
#include "../../llmc/dataloader.h"
#include "../../llmc/shard.h"

// ---- helpers ----
typedef struct {
    char dir[256];
} DataTmpDir;

static int dt_tmpdir_make(DataTmpDir* d) {
    snprintf(d->dir, sizeof(d->dir), "/tmp/coda_test_data_XXXXXX");
    return mkdtemp(d->dir) ? 0 : -1;
}
static void dt_path(const DataTmpDir* d, const char* name, char* out, size_t n) { snprintf(out, n, "%s/%s", d->dir, name); }
static void dt_tmpdir_remove(DataTmpDir* d) {  // the tests create only plain files in it
    DIR* dp = opendir(d->dir);
    if (dp) {
        struct dirent* e;
        char p[512];
        while ((e = readdir(dp)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof(p), "%s/%s", d->dir, e->d_name);
            remove(p);
        }
        closedir(dp);
    }
    rmdir(d->dir);
}
static int dt_exists(const char* p) { return access(p, F_OK) == 0; }
// Entries of the test directory (a writer's temporary file has a unique name: count them all).
static int dt_count_files(const DataTmpDir* d) {
    DIR* dp = opendir(d->dir);
    int n = 0;
    struct dirent* e;
    while (dp && (e = readdir(dp)) != NULL) n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (dp) closedir(dp);
    return n;
}

// Tokens 0..n-1 mod vocab: every position is recognisable from its value.
static int32_t* dt_ramp(size_t n, int32_t vocab) {
    int32_t* t = (int32_t*)malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)(i % (size_t)vocab);
    return t;
}
// Writes raw bytes (a hand-made header and payload) to path.
static void dt_write_bytes(const char* path, const void* p, size_t n) {
    FILE* f = fopen(path, "wb");
    if (f) { fwrite(p, 1, n, f); fclose(f); }
}
static long dt_file_size(const char* path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

// ---- shard format ----
TEST(shard_header_round_trip_uint16) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; dt_path(&d, "a.bin", p, sizeof(p));
    const int32_t V = 32000;
    int32_t* t = dt_ramp(100000, V);
    t[7] = V - 1;  // largest id survives the 16-bit store
    CodaError err = {{0}};
    CHECK(shard_write(p, t, 100000, V, 1, 2, SHARD_PACK_JOINED, 3, &err) == 0, "%s", err.msg);
    CHECK(dt_file_size(p) == SHARD_HEADER_BYTES + 100000 * 2, "size %ld", dt_file_size(p));
    CHECK(dt_count_files(&d) == 1, "temp file left behind");
    ShardHeader h; int32_t* back = NULL;
    CHECK(shard_load(p, &h, &back, &err) == 0, "%s", err.msg);
    CHECK(h.magic == SHARD_MAGIC && h.version == SHARD_VERSION, "");
    CHECK(h.vocab_size == V && h.n_tokens == 100000 && h.token_bytes == 2, "V %d n %lld w %d", h.vocab_size, (long long)h.n_tokens, h.token_bytes);
    CHECK(h.bos_id == 1 && h.eos_id == 2 && h.packing == SHARD_PACK_JOINED && h.n_docs == 3, "");
    CHECK(back && memcmp(back, t, 100000 * sizeof(int32_t)) == 0, "tokens differ");
    // the raw layout is the documented one: slot 0 magic, 3/4 count, 5 width, tokens at byte 1024
    FILE* f = fopen(p, "rb");
    int32_t raw[SHARD_HEADER_INTS]; uint16_t tok[8];
    CHECK(f && fread(raw, 4, SHARD_HEADER_INTS, f) == SHARD_HEADER_INTS && fread(tok, 2, 8, f) == 8, "");
    if (f) fclose(f);
    CHECK(raw[0] == SHARD_MAGIC && raw[1] == SHARD_VERSION && raw[2] == V && raw[3] == 100000 && raw[4] == 0 && raw[5] == 2, "");
    CHECK(raw[6] == 1 && raw[7] == 2 && raw[8] == 0 && raw[9] == 3 && raw[10] == 0 && raw[11] == 0 && raw[255] == 0, "");
    CHECK(tok[1] == 1 && tok[7] == V - 1, "");
    free(t); free(back); dt_tmpdir_remove(&d);
}

TEST(shard_header_round_trip_uint32_and_64bit_count) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; dt_path(&d, "b.bin", p, sizeof(p));
    // 65536 is the largest vocab that fits uint16 (ids 0..65535); 65537 needs uint32
    CHECK(shard_token_bytes_for_vocab(65536) == 2 && shard_token_bytes_for_vocab(65537) == 4, "");
    const int32_t V = 131072;
    int32_t* t = dt_ramp(1000, V);
    t[5] = 70000; t[6] = V - 1;
    CodaError err = {{0}};
    CHECK(shard_write(p, t, 1000, V, 1, -1, SHARD_PACK_BOS_PER_DOC, 9, &err) == 0, "%s", err.msg);
    CHECK(dt_file_size(p) == SHARD_HEADER_BYTES + 1000 * 4, "size %ld", dt_file_size(p));
    ShardHeader h; int32_t* back = NULL;
    CHECK(shard_load(p, &h, &back, &err) == 0, "%s", err.msg);
    CHECK(h.token_bytes == 4 && h.eos_id == -1 && h.packing == SHARD_PACK_BOS_PER_DOC, "");
    CHECK(back && back[5] == 70000 && back[6] == V - 1 && memcmp(back, t, 1000 * 4) == 0, "");
    // the int64 count uses both slots: pack/unpack a count above 2^32
    ShardHeader big; shard_header_init(&big, 32768, 1, 2, SHARD_PACK_JOINED);
    big.n_tokens = 5000000000ll; big.n_docs = 4300000000ll;
    int32_t raw[SHARD_HEADER_INTS]; shard_header_pack(&big, raw);
    ShardHeader un;
    CHECK(shard_header_unpack(raw, &un, "x", &err) == 0, "%s", err.msg);
    CHECK(un.n_tokens == 5000000000ll && un.n_docs == 4300000000ll, "%lld", (long long)un.n_tokens);
    free(t); free(back); dt_tmpdir_remove(&d);
}

TEST(shard_writer_rejects_out_of_vocab_ids_and_leaves_no_file) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; dt_path(&d, "w.bin", p, sizeof(p));
    int32_t t[4] = {1, 2, 300, 4};
    CodaError err = {{0}};
    CHECK(shard_write(p, t, 4, 300, 1, 2, SHARD_PACK_JOINED, 1, &err) != 0, "id 300 with vocab 300 accepted");
    CHECK(strstr(err.msg, "w.bin") && strstr(err.msg, "token id 300 at position 2"), "%s", err.msg);
    int32_t neg[2] = {1, -5};
    CHECK(shard_write(p, neg, 2, 300, 1, 2, SHARD_PACK_JOINED, 1, &err) != 0, "negative id accepted");
    CHECK(strstr(err.msg, "token id -5"), "%s", err.msg);
    CHECK(dt_count_files(&d) == 0, "a failed write left a file");
    dt_tmpdir_remove(&d);
}

// Writes a good 1000-token shard, then the damaged variants; each must fail with its own message.
TEST(shard_bad_inputs_give_clear_errors) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char good[512], p[512]; dt_path(&d, "good.bin", good, sizeof(good));
    const int32_t V = 1000;
    int32_t* t = dt_ramp(1000, V);
    CodaError err = {{0}};
    CHECK(shard_write(good, t, 1000, V, 1, 2, SHARD_PACK_JOINED, 1, &err) == 0, "%s", err.msg);
    long n = dt_file_size(good);
    uint8_t* bytes = (uint8_t*)malloc((size_t)n);
    FILE* f = fopen(good, "rb"); CHECK(f && fread(bytes, 1, (size_t)n, f) == (size_t)n, ""); if (f) fclose(f);
    int32_t* hdr = (int32_t*)bytes;
    ShardHeader h; DataLoader dl;

    // wrong magic
    dt_path(&d, "magic.bin", p, sizeof(p));
    hdr[0] = 12345; dt_write_bytes(p, bytes, (size_t)n); hdr[0] = SHARD_MAGIC;
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "magic.bin: not a coda.c token shard: bad magic 12345"), "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "bad magic 12345"), "%s", err.msg);
    // an llm.c GPT-2 shard is named as such
    hdr[0] = 20240520; dt_write_bytes(p, bytes, (size_t)n); hdr[0] = SHARD_MAGIC;
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "llm.c shard"), "%s", err.msg);
    // wrong version
    dt_path(&d, "version.bin", p, sizeof(p));
    hdr[1] = 7; dt_write_bytes(p, bytes, (size_t)n); hdr[1] = SHARD_VERSION;
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "version.bin: unsupported shard version 7"), "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "unsupported shard version 7"), "%s", err.msg);
    // truncated payload: the size disagrees with the count
    dt_path(&d, "trunc.bin", p, sizeof(p));
    dt_write_bytes(p, bytes, (size_t)n - 3);
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "trunc.bin: truncated token shard: header says 1000 tokens"), "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "truncated token shard"), "%s", err.msg);
    // truncated inside the header, and an empty file
    dt_write_bytes(p, bytes, 100);
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "truncated token shard: 100 bytes, shorter than the 1024-byte header"), "%s", err.msg);
    dt_write_bytes(p, bytes, 0);
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "truncated token shard: 0 bytes"), "%s", err.msg);
    // trailing garbage is also a size mismatch
    dt_path(&d, "long.bin", p, sizeof(p));
    f = fopen(p, "wb"); if (f) { fwrite(bytes, 1, (size_t)n, f); fputc(0, f); fputc(0, f); fclose(f); }
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "long.bin: corrupt token shard: header says 1000 tokens"), "%s", err.msg);
    // token width that does not match the vocab
    dt_path(&d, "width.bin", p, sizeof(p));
    hdr[5] = 4; dt_write_bytes(p, bytes, (size_t)n); hdr[5] = 2;
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "token width 4 bytes, but vocab size 1000 needs 2"), "%s", err.msg);
    // token id >= vocab: the header is fine, so it is caught when the tokens are loaded
    dt_path(&d, "vocab.bin", p, sizeof(p));
    uint16_t* toks = (uint16_t*)(bytes + SHARD_HEADER_BYTES);
    toks[777] = 1000; dt_write_bytes(p, bytes, (size_t)n); toks[777] = 777;
    CHECK(shard_open(p, &h, NULL, &err) == 0, "%s", err.msg);
    int32_t* back = NULL;
    CHECK(shard_load(p, &h, &back, &err) != 0 && strstr(err.msg, "vocab.bin: token id 1000 at position 777 is >= the vocab size 1000"), "%s", err.msg);
    CHECK(back == NULL, "");
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "token id 1000 at position 777"), "%s", err.msg);
    // fewer tokens than one row of T+1
    dt_path(&d, "short.bin", p, sizeof(p));
    CHECK(shard_write(p, t, 8, V, 1, 2, SHARD_PACK_JOINED, 1, &err) == 0, "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "short.bin: too few tokens: 8, but one row needs T+1 = 9"), "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 7, 0, 1, 0, 1, &err) == 0, "8 tokens make one row of T+1 = 8: %s", err.msg);
    dataloader_free(&dl);
    // enough for a row but not for a global batch
    CHECK(dataloader_init(&dl, good, 4, 100, 0, 4, 0, 1, &err) != 0 && strstr(err.msg, "9 rows of T+1 = 101 tokens, but one global batch needs n_ranks*B = 16 rows"), "%s", err.msg);
    // missing file
    dt_path(&d, "nope.bin", p, sizeof(p));
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "nope.bin: cannot open token shard"), "%s", err.msg);
    free(t); free(bytes); dt_tmpdir_remove(&d);
}

// A header whose token count times width wraps around 2^64 must be refused at open (regression:
// 2^62 + 5 four-byte tokens "need" 1024 + 20 bytes once the product wraps, the 1044-byte file
// passed the size check, and loading overran the 20-byte buffers sized from the same product).
// The fuzz input that found it is dev/test/fixtures/fuzz/shard/crash-1feb8f1b...
TEST(shard_with_a_wrapping_token_count_is_refused) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; dt_path(&d, "wrap.bin", p, sizeof(p));
    const int32_t V = 70000;  // needs 4-byte tokens
    int32_t ids[5] = {1, 2, 3, 4, 5};
    CodaError err = {{0}};
    CHECK(shard_write(p, ids, 5, V, 1, 2, SHARD_PACK_JOINED, 1, &err) == 0, "%s", err.msg);
    uint8_t bytes[SHARD_HEADER_BYTES + 20];
    FILE* f = fopen(p, "rb");
    CHECK(f && fread(bytes, 1, sizeof(bytes), f) == sizeof(bytes), "");
    if (f) fclose(f);
    const uint64_t counts[] = {(1ull << 62) + 5, (1ull << 63) - 1, (1ull << 62)};  // the last wraps to 0 tokens' worth
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        int32_t lo = (int32_t)(uint32_t)(counts[i] & 0xffffffffu), hi = (int32_t)(uint32_t)(counts[i] >> 32);
        memcpy(bytes + 12, &lo, 4);
        memcpy(bytes + 16, &hi, 4);
        dt_write_bytes(p, bytes, counts[i] == (1ull << 62) ? SHARD_HEADER_BYTES : sizeof(bytes));
        ShardHeader h; int32_t* back = NULL; DataLoader dl;
        err.msg[0] = 0;
        CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "wrap.bin: corrupt token shard") && strstr(err.msg, "overflows"),
              "count %llu: %s", (unsigned long long)counts[i], err.msg);
        CHECK(shard_load(p, &h, &back, &err) != 0 && back == NULL, "count %llu loaded", (unsigned long long)counts[i]);
        CHECK(dataloader_init(&dl, p, 1, 1, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "overflows"), "%s", err.msg);
    }
    // reads of a range that would overflow first + n are refused, not wrapped
    CHECK(shard_write(p, ids, 5, V, 1, 2, SHARD_PACK_JOINED, 1, &err) == 0, "%s", err.msg);
    ShardHeader h; FILE* sf = NULL;
    CHECK(shard_open(p, &h, &sf, &err) == 0, "%s", err.msg);
    int32_t out[2]; uint8_t scratch[8];
    CHECK(sf && shard_read_tokens(sf, &h, p, 3, SIZE_MAX - 1, out, scratch, &err) != 0 && strstr(err.msg, "outside the shard"), "%s", err.msg);
    CHECK(sf && shard_read_tokens(sf, &h, p, INT64_MAX, 2, out, scratch, &err) != 0 && strstr(err.msg, "outside the shard"), "%s", err.msg);
    if (sf) fclose(sf);
    dt_tmpdir_remove(&d);
}

// A shard path that is a directory or a pipe is refused at once (opening a pipe would block forever).
TEST(shard_open_refuses_directories_and_pipes) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char fifo[512]; dt_path(&d, "pipe.bin", fifo, sizeof(fifo));
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo");
    ShardHeader h; CodaError err = {{0}};
    CHECK(shard_open(fifo, &h, NULL, &err) != 0 && strstr(err.msg, "pipe.bin: cannot open token shard: not a regular file (a pipe)"), "%s", err.msg);
    CHECK(shard_open(d.dir, &h, NULL, &err) != 0 && strstr(err.msg, "not a regular file (a directory)"), "%s", err.msg);
    dt_tmpdir_remove(&d);
}

// ---- dataloader ----
// A shard of n tokens whose value at position i is i % V: a row's first input tells where it starts.
static int dt_write_ramp_shard(DataTmpDir* d, const char* name, size_t n, int32_t V, char* path, size_t len) {
    dt_path(d, name, path, len);
    int32_t* t = dt_ramp(n, V);
    CodaError err = {{0}};
    int rc = shard_write(path, t, n, V, 1, 2, SHARD_PACK_JOINED, 1, &err);
    free(t);
    return rc;
}

TEST(dataloader_rows_are_overlapping_windows_of_T_plus_1) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(dt_write_ramp_shard(&d, "r.bin", 1000, 60000, p, sizeof(p)) == 0, "");
    DataLoader dl; CodaError err = {{0}};
    const int B = 3, T = 16;
    CHECK(dataloader_init(&dl, p, B, T, 0, 1, 42, 1, &err) == 0, "%s", err.msg);
    CHECK(dl.n_rows == (1000 - 1) / 16 && dl.batches_per_epoch == dl.n_rows / 3, "rows %llu", (unsigned long long)dl.n_rows);
    CHECK(dataloader_next(&dl, &err) == 0, "%s", err.msg);
    for (int b = 0; b < B; b++) {
        uint64_t r = dl.batch_rows[b];
        for (int t = 0; t < T; t++) {
            CHECK(dl.inputs[b * T + t] == (int32_t)(r * T + t), "row %llu t %d", (unsigned long long)r, t);
            CHECK(dl.targets[b * T + t] == (int32_t)(r * T + t + 1), "row %llu t %d", (unsigned long long)r, t);
        }
    }
    dataloader_free(&dl);
    dt_tmpdir_remove(&d);
}

// Runs `steps` batches and returns the concatenated batch_rows (caller frees).
static uint64_t* dt_collect_rows(DataLoader* dl, int steps) {
    uint64_t* out = (uint64_t*)malloc((size_t)steps * dl->B * sizeof(uint64_t));
    CodaError err = {{0}};
    for (int s = 0; s < steps; s++) {
        if (dataloader_next(dl, &err) != 0) { CHECK(0, "%s", err.msg); break; }
        memcpy(out + (size_t)s * dl->B, dl->batch_rows, dl->B * sizeof(uint64_t));
    }
    return out;
}

TEST(dataloader_same_seed_same_rows_different_seed_different_rows) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(dt_write_ramp_shard(&d, "s.bin", 4097, 60000, p, sizeof(p)) == 0, "");
    DataLoader a, b, c; CodaError err = {{0}};
    CHECK(dataloader_init(&a, p, 4, 16, 0, 1, 1234, 1, &err) == 0, "%s", err.msg);  // 256 rows, 64 batches
    CHECK(dataloader_init(&b, p, 4, 16, 0, 1, 1234, 1, &err) == 0, "%s", err.msg);
    CHECK(dataloader_init(&c, p, 4, 16, 0, 1, 1235, 1, &err) == 0, "%s", err.msg);
    const int steps = 200;  // crosses three epoch boundaries
    uint64_t* ra = dt_collect_rows(&a, steps);
    uint64_t* rb = dt_collect_rows(&b, steps);
    uint64_t* rc = dt_collect_rows(&c, steps);
    CHECK(memcmp(ra, rb, steps * 4 * sizeof(uint64_t)) == 0, "same seed gave different rows");
    int same = 0;
    for (int i = 0; i < steps * 4; i++) same += ra[i] == rc[i];
    CHECK(same < steps * 4 / 20, "seeds 1234 and 1235 agree on %d of %d rows", same, steps * 4);
    // the tokens are the same too, not just the row numbers
    CHECK(memcmp(a.inputs, b.inputs, 4 * 16 * sizeof(int32_t)) == 0, "");
    // the order is shuffled, and each epoch has its own permutation
    int in_order = 0;
    for (int i = 0; i < 256; i++) in_order += ra[i] == (uint64_t)i;
    CHECK(in_order < 20, "%d rows in their sequential place", in_order);
    CHECK(memcmp(ra, ra + 256, 256 * sizeof(uint64_t)) != 0, "epoch 1 repeats epoch 0's order");
    free(ra); free(rb); free(rc);
    dataloader_free(&a); dataloader_free(&b); dataloader_free(&c);
    dt_tmpdir_remove(&d);
}

TEST(dataloader_permutation_covers_each_row_once_per_epoch) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    // 3001 tokens, T = 10 -> 300 rows; B = 7 -> 42 batches (294 rows) per epoch, 6 left over
    char p[512]; CHECK(dt_write_ramp_shard(&d, "c.bin", 3001, 60000, p, sizeof(p)) == 0, "");
    DataLoader dl; CodaError err = {{0}};
    CHECK(dataloader_init(&dl, p, 7, 10, 0, 1, 99, 1, &err) == 0, "%s", err.msg);
    CHECK(dl.n_rows == 300 && dl.batches_per_epoch == 42, "");
    for (int epoch = 0; epoch < 3; epoch++) {
        int seen[300] = {0};
        for (uint64_t s = 0; s < dl.batches_per_epoch; s++) {
            CHECK(dataloader_next(&dl, &err) == 0, "%s", err.msg);
            CHECK(dl.pos.epoch == (uint64_t)epoch, "epoch %llu at step %llu", (unsigned long long)dl.pos.epoch, (unsigned long long)s);
            for (int b = 0; b < 7; b++) seen[dl.batch_rows[b]]++;
        }
        int once = 0, twice = 0;
        for (int r = 0; r < 300; r++) { once += seen[r] == 1; twice += seen[r] > 1; }
        CHECK(once == 294 && twice == 0, "epoch %d: %d rows once, %d more than once", epoch, once, twice);
        // the full permutation (including the 6 skipped rows) is a permutation of 0..299
        int all[300] = {0};
        for (int r = 0; r < 300; r++) all[dl.perm[r]]++;
        int ok = 1;
        for (int r = 0; r < 300; r++) ok &= all[r] == 1;
        CHECK(ok, "epoch %d permutation is not a permutation", epoch);
    }
    dataloader_free(&dl);
    dt_tmpdir_remove(&d);
}

TEST(dataloader_rank_slices_partition_the_global_batch) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(dt_write_ramp_shard(&d, "k.bin", 10001, 60000, p, sizeof(p)) == 0, "");
    const int R = 4, B = 3, T = 20;  // 500 rows, global batch 12 -> 41 steps per epoch
    DataLoader single, ranks[4]; CodaError err = {{0}};
    // one rank with B' = R*B sees the whole global batch in rank order
    CHECK(dataloader_init(&single, p, R * B, T, 0, 1, 7, 1, &err) == 0, "%s", err.msg);
    for (int r = 0; r < R; r++) CHECK(dataloader_init(&ranks[r], p, B, T, r, R, 7, 1, &err) == 0, "%s", err.msg);
    for (int step = 0; step < 100; step++) {  // two epoch boundaries
        CHECK(dataloader_next(&single, &err) == 0, "%s", err.msg);
        for (int r = 0; r < R; r++) {
            CHECK(dataloader_next(&ranks[r], &err) == 0, "%s", err.msg);
            for (int b = 0; b < B; b++) {
                CHECK(ranks[r].batch_rows[b] == single.batch_rows[r * B + b], "step %d rank %d b %d", step, r, b);
                CHECK(memcmp(ranks[r].inputs + b * T, single.inputs + (r * B + b) * T, T * sizeof(int32_t)) == 0, "");
            }
            CHECK(ranks[r].pos.index == single.pos.index && ranks[r].pos.epoch == single.pos.epoch, "ranks disagree on the position");
        }
        // the ranks' rows are disjoint
        for (int i = 0; i < R * B; i++)
            for (int j = i + 1; j < R * B; j++) CHECK(single.batch_rows[i] != single.batch_rows[j], "row repeated in a global batch");
    }
    dataloader_free(&single);
    for (int r = 0; r < R; r++) dataloader_free(&ranks[r]);
    dt_tmpdir_remove(&d);
}

TEST(dataloader_resume_from_saved_position_equals_continuing) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(dt_write_ramp_shard(&d, "m.bin", 2001, 60000, p, sizeof(p)) == 0, "");
    DataLoader a, b; CodaError err = {{0}};
    const int B = 5, T = 10;  // 200 rows, 40 steps per epoch
    CHECK(dataloader_init(&a, p, B, T, 1, 2, 5, 1, &err) == 0, "%s", err.msg);
    uint64_t* warm = dt_collect_rows(&a, 33);  // into epoch 1 (20 steps per epoch with 2 ranks)
    DataPosition saved = dataloader_position(&a);
    CHECK(saved.epoch == 1 && saved.index == 13 * 10, "epoch %llu index %llu", (unsigned long long)saved.epoch, (unsigned long long)saved.index);
    uint64_t* cont = dt_collect_rows(&a, 50);
    // a fresh loader (a restarted process) seeks to the saved position
    CHECK(dataloader_init(&b, p, B, T, 1, 2, 5, 1, &err) == 0, "%s", err.msg);
    CHECK(dataloader_seek(&b, saved, &err) == 0, "%s", err.msg);
    uint64_t* resumed = dt_collect_rows(&b, 50);
    CHECK(memcmp(cont, resumed, 50 * B * sizeof(uint64_t)) == 0, "resumed run differs");
    CHECK(memcmp(a.inputs, b.inputs, B * T * sizeof(int32_t)) == 0 && memcmp(a.targets, b.targets, B * T * sizeof(int32_t)) == 0, "");
    // seeking back to the start replays the warm-up
    DataPosition zero = {0, 0};
    CHECK(dataloader_seek(&b, zero, &err) == 0, "%s", err.msg);
    uint64_t* again = dt_collect_rows(&b, 33);
    CHECK(memcmp(warm, again, 33 * B * sizeof(uint64_t)) == 0, "replay from {0,0} differs");
    // a position beyond the shard (a different shard or T) is refused
    DataPosition bad = {0, 100000};
    CHECK(dataloader_seek(&b, bad, &err) != 0 && strstr(err.msg, "cannot resume at row index 100000"), "%s", err.msg);
    free(warm); free(cont); free(resumed); free(again);
    dataloader_free(&a); dataloader_free(&b);
    dt_tmpdir_remove(&d);
}

TEST(dataloader_sequential_eval_mode) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(dt_write_ramp_shard(&d, "e.bin", 1001, 60000, p, sizeof(p)) == 0, "");
    DataLoader dl; CodaError err = {{0}};
    const int B = 4, T = 10;  // 100 rows, 25 batches, nothing left over
    CHECK(dataloader_init(&dl, p, B, T, 0, 1, 12345, 0, &err) == 0, "%s", err.msg);
    for (int pass = 0; pass < 2; pass++) {
        for (int s = 0; s < 25; s++) {
            CHECK(dataloader_next(&dl, &err) == 0, "%s", err.msg);
            for (int b = 0; b < B; b++) {
                CHECK(dl.batch_rows[b] == (uint64_t)(s * B + b), "pass %d step %d", pass, s);
                CHECK(dl.inputs[b * T] == (s * B + b) * T && dl.targets[b * T + T - 1] == (s * B + b) * T + T, "");
            }
        }
        dataloader_reset(&dl);
        CHECK(dl.pos.epoch == 0 && dl.pos.index == 0, "");
    }
    // the seed does not matter sequentially, and two ranks split each batch in order
    DataLoader r1; CHECK(dataloader_init(&r1, p, 2, T, 1, 2, 1, 0, &err) == 0, "%s", err.msg);
    CHECK(dataloader_next(&r1, &err) == 0 && r1.batch_rows[0] == 2 && r1.batch_rows[1] == 3, "");
    CHECK(dataloader_next(&r1, &err) == 0 && r1.batch_rows[0] == 6 && r1.batch_rows[1] == 7, "");
    dataloader_free(&r1);
    dataloader_free(&dl);
    dt_tmpdir_remove(&d);
}

// ---- tokenize_coda: text files -> shard, end to end ----
#include "../../llmc/shard_pack.h"

// Writes a small SentencePiece-style tokenizer.json (Mistral's normalizer, pre-tokenizer and
// decoder; byte fallback; ids 3..258 = <0x00>..<0xFF>) whose merges span spaces ("▁▁", "▁ab") so
// that a chunk split in the wrong place would change the ids. bad_newline_merge adds a merge of the
// newline's byte piece, which makes chunked encoding inexact: the packer must refuse it.
static int dt_write_toy_tokenizer(const char* path, int bad_newline_merge) {
    FILE* f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":[");
    const char* sp[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++)
        fprintf(f, "%s{\"id\":%d,\"content\":\"%s\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                "\"normalized\":false,\"special\":true}", i ? "," : "", i, sp[i]);
    fprintf(f, "],\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
               "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},\"pre_tokenizer\":null,"
               "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
               "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],"
               "\"tokens\":[\"<s>\"]}}},\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
               "{\"String\":\"\xE2\x96\x81\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
               "\"content\":\" \",\"start\":1,\"stop\":0}]},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\","
               "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":true,\"byte_fallback\":true,\"vocab\":{");
    fprintf(f, "\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    for (int b = 0; b < 256; b++) fprintf(f, ",\"<0x%02X>\":%d", b, 3 + b);
    // 259.. : single characters, then merge results
    const char* pieces[] = {"\xE2\x96\x81", "a", "b", "c", "\xE2\x96\x81\xE2\x96\x81", "\xE2\x96\x81" "a", "ab",
                            "\xE2\x96\x81" "ab", "ca", "\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81", "bc", "abc"};
    int n_pieces = (int)(sizeof(pieces) / sizeof(pieces[0]));
    for (int i = 0; i < n_pieces; i++) fprintf(f, ",\"%s\":%d", pieces[i], 259 + i);
    if (bad_newline_merge) fprintf(f, ",\"<0x0A>a\":%d", 259 + n_pieces);
    fprintf(f, "},\"merges\":[\"\xE2\x96\x81 \xE2\x96\x81\",\"\xE2\x96\x81 a\",\"a b\",\"\xE2\x96\x81" "a b\",\"c a\","
               "\"\xE2\x96\x81\xE2\x96\x81 \xE2\x96\x81\xE2\x96\x81\",\"b c\",\"ab c\"%s]}}",
            bad_newline_merge ? ",\"<0x0A> a\"" : "");
    fclose(f);
    return 0;
}

// Random documents over a small alphabet that exercises the merges, spaces, tabs, non-ASCII (byte
// fallback) and newlines inside documents; written as files where documents are separated by one
// or more blank (or whitespace-only) lines.
static void dt_make_toy_corpus(Rng* r, int n_docs, char*** docs_out) {
    const char* alphabet[] = {"a", "b", "c", " ", " ", "  ", "x", "\t", "\xC3\xA9", "ab", "ca"};
    char** docs = (char**)malloc((size_t)n_docs * sizeof(char*));
    for (int d = 0; d < n_docs; d++) {
        int n_lines = 1 + (int)rng_below(r, 4);
        char* s = (char*)calloc(4096, 1);
        for (int l = 0; l < n_lines; l++) {
            if (l) strcat(s, "\n");
            int len = 1 + (int)rng_below(r, 30);
            strcat(s, "a");  // starts with a non-blank so the line is never whitespace-only
            for (int k = 0; k < len; k++) strcat(s, alphabet[rng_below(r, sizeof(alphabet) / sizeof(alphabet[0]))]);
        }
        docs[d] = s;
    }
    *docs_out = docs;
}

static void dt_write_docs(const char* path, char** docs, int from, int to) {
    FILE* f = fopen(path, "wb");
    for (int d = from; d < to; d++) {
        fputs(docs[d], f);
        fputs(d % 3 == 0 ? "\n\n" : d % 3 == 1 ? "\n \t\n\n" : "\n\r\n", f);  // blank-line variants
    }
    fclose(f);
}

// Tokenizes files into a shard and loads it back (tokens malloc'd into *ids).
static int dt_pack_and_load(const Tokenizer* tok, const char** files, int n_files, const char* out, ShardPackOptions opt,
                         int32_t** ids, ShardHeader* h, CodaError* err) {
    int64_t n_tokens, n_docs, n_chunks;
    if (tokenize_files(tok, files, n_files, out, opt, NULL, &n_tokens, &n_docs, &n_chunks, err) != 0) return -1;
    if (shard_load(out, h, ids, err) != 0) return -1;
    if (h->n_tokens != n_tokens || h->n_docs != n_docs) return coda_errorf(err, "header counts disagree");
    return 0;
}

TEST(tokenize_coda_packing_and_chunking_equal_whole_string_encoding) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char tj[512], f1[512], f2[512], out[512];
    dt_path(&d, "tokenizer.json", tj, sizeof(tj));
    dt_path(&d, "a.txt", f1, sizeof(f1));
    dt_path(&d, "b.txt", f2, sizeof(f2));
    dt_path(&d, "out.bin", out, sizeof(out));
    CHECK(dt_write_toy_tokenizer(tj, 0) == 0, "");
    Tokenizer tok; CodaError err = {{0}};
    if (tokenizer_load(&tok, tj, &err) != 0) { CHECK(0, "%s", err.msg); dt_tmpdir_remove(&d); return; }
    Rng r; rng_seed(&r, 2026);
    const int N = 40;
    char** docs; dt_make_toy_corpus(&r, N, &docs);
    dt_write_docs(f1, docs, 0, 25);
    dt_write_docs(f2, docs, 25, N);
    const char* files[2] = {f1, f2};
    // the paper's packing, built independently: documents joined with "\n\n", one BOS
    TcTextBuf joined = {NULL, 0, 0};
    for (int i = 0; i < N; i++) { if (i) tc_textbuf_append(&joined, "\n\n", 2); tc_textbuf_append(&joined, docs[i], strlen(docs[i])); }
    int32_t* want; size_t n_want;
    CHECK(tokenizer_encode(&tok, joined.p, joined.len, 1, &want, &n_want, &err) == 0, "%s", err.msg);
    size_t sizes[] = {1, 2, 3, 5, 17, 64, 1000, 1 << 20};
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        ShardPackOptions opt; memset(&opt, 0, sizeof(opt));
        opt.chunk_bytes = sizes[si];
        int32_t* got = NULL; ShardHeader h;
        if (dt_pack_and_load(&tok, files, 2, out, opt, &got, &h, &err) != 0) { CHECK(0, "chunk %zu: %s", sizes[si], err.msg); continue; }
        CHECK(h.n_docs == N && h.packing == SHARD_PACK_JOINED && h.bos_id == 1 && h.eos_id == 2 && h.vocab_size == tok.vocab_size, "");
        CHECK((size_t)h.n_tokens == n_want && memcmp(got, want, n_want * sizeof(int32_t)) == 0,
              "chunk %zu bytes: %lld tokens vs %zu whole", sizes[si], (long long)h.n_tokens, n_want);
        free(got);
    }
    // the ids decode back to exactly the joined text; exactly one BOS, at the start
    char* text; size_t len;
    CHECK(tokenizer_decode(&tok, want, n_want, &text, &len, &err) == 0, "%s", err.msg);
    CHECK(len == joined.len && memcmp(text, joined.p, len) == 0, "decoded text differs from the joined documents");
    int n_bos = 0;
    for (size_t i = 0; i < n_want; i++) n_bos += want[i] == 1;
    CHECK(want[0] == 1 && n_bos == 1, "%d BOS", n_bos);
    free(text); free(want);

    // --verify agrees, with a tiny chunk
    ShardPackOptions vopt; memset(&vopt, 0, sizeof(vopt));
    vopt.chunk_bytes = 7; vopt.verify = 1;
    int64_t nt, nd, nc;
    CHECK(tokenize_files(&tok, files, 2, out, vopt, NULL, &nt, &nd, &nc, &err) == 0, "%s", err.msg);
    CHECK(nc > 50, "only %lld chunks", (long long)nc);

    // --bos-per-doc: each document encoded alone with its BOS, concatenated
    TcIdVec per = {NULL, 0, 0};
    for (int i = 0; i < N; i++) {
        int32_t* ids; size_t n;
        CHECK(tokenizer_encode(&tok, docs[i], strlen(docs[i]), 1, &ids, &n, &err) == 0, "%s", err.msg);
        tc_idvec_append(&per, ids, n);
        free(ids);
    }
    ShardPackOptions bopt; memset(&bopt, 0, sizeof(bopt));
    bopt.bos_per_doc = 1; bopt.chunk_bytes = 4;
    int32_t* got = NULL; ShardHeader h;
    CHECK(dt_pack_and_load(&tok, files, 2, out, bopt, &got, &h, &err) == 0, "%s", err.msg);
    CHECK(h.packing == SHARD_PACK_BOS_PER_DOC && h.n_docs == N, "");
    CHECK(got && (size_t)h.n_tokens == per.n && memcmp(got, per.ids, per.n * sizeof(int32_t)) == 0, "bos-per-doc differs");
    free(got); free(per.ids);

    // --rows: every non-blank line is a document with its "\n", joined with "\n\n" (HF WikiText rows)
    TcTextBuf rows = {NULL, 0, 0};
    int n_rows = 0;
    for (int i = 0; i < N; i++) {
        const char* s = docs[i];
        while (*s) {
            const char* e = strchr(s, '\n');
            size_t l = e ? (size_t)(e - s) : strlen(s);
            if (n_rows++) tc_textbuf_append(&rows, "\n\n", 2);
            tc_textbuf_append(&rows, s, l);
            tc_textbuf_append(&rows, "\n", 1);  // every line in the files ends with "\n"
            s += l + (e ? 1 : 0);
        }
    }
    CHECK(tokenizer_encode(&tok, rows.p, rows.len, 1, &want, &n_want, &err) == 0, "%s", err.msg);
    ShardPackOptions ropt; memset(&ropt, 0, sizeof(ropt));
    ropt.rows = 1; ropt.chunk_bytes = 9;
    CHECK(dt_pack_and_load(&tok, files, 2, out, ropt, &got, &h, &err) == 0, "%s", err.msg);
    CHECK(h.n_docs == n_rows && (size_t)h.n_tokens == n_want && memcmp(got, want, n_want * sizeof(int32_t)) == 0, "rows mode differs");
    free(got); free(want); free(rows.p); free(joined.p);
    for (int i = 0; i < N; i++) free(docs[i]);
    free(docs);
    tokenizer_free(&tok);
    dt_tmpdir_remove(&d);
}

TEST(tokenize_coda_errors) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char tj[512], bad[512], f1[512], out[512];
    dt_path(&d, "tokenizer.json", tj, sizeof(tj));
    dt_path(&d, "bad.json", bad, sizeof(bad));
    dt_path(&d, "blank.txt", f1, sizeof(f1));
    dt_path(&d, "out.bin", out, sizeof(out));
    CHECK(dt_write_toy_tokenizer(tj, 0) == 0 && dt_write_toy_tokenizer(bad, 1) == 0, "");
    Tokenizer tok, tokbad; CodaError err = {{0}};
    CHECK(tokenizer_load(&tok, tj, &err) == 0, "%s", err.msg);
    CHECK(tokenizer_load(&tokbad, bad, &err) == 0, "%s", err.msg);
    ShardPackOptions opt; memset(&opt, 0, sizeof(opt));
    int64_t nt, nd, nc;
    // a tokenizer that can merge across a newline cannot be encoded in chunks: refused up front
    dt_write_bytes(f1, "ab\n\nab\n", 7);
    const char* files[1] = {f1};
    CHECK(tokenize_files(&tokbad, files, 1, out, opt, NULL, &nt, &nd, &nc, &err) != 0 &&
          strstr(err.msg, "bad.json: piece") && strstr(err.msg, "contains the newline piece \"<0x0A>\""), "%s", err.msg);
    CHECK(dt_count_files(&d) == 3, "a refused run left a file");  // tokenizer.json, bad.json, blank.txt
    // no documents
    dt_write_bytes(f1, "\n  \n\t\n", 6);
    CHECK(tokenize_files(&tok, files, 1, out, opt, NULL, &nt, &nd, &nc, &err) != 0 &&
          strstr(err.msg, "blank.txt: the input has no documents"), "%s", err.msg);
    CHECK(dt_count_files(&d) == 3, "a failed run left a file");
    // a missing input is named
    dt_path(&d, "missing.txt", f1, sizeof(f1));
    CHECK(tokenize_files(&tok, files, 1, out, opt, NULL, &nt, &nd, &nc, &err) != 0 && strstr(err.msg, "missing.txt: cannot open"), "%s", err.msg);
    CHECK(dt_count_files(&d) == 3, "");
    tokenizer_free(&tok); tokenizer_free(&tokbad);
    dt_tmpdir_remove(&d);
}

// Regression: `tokenize_coda tok.json a.txt ./a.txt` replaced the text with a shard (and exited 0),
// and naming the tokenizer as the output replaced tokenizer.json. The output is compared with every
// input by device and inode, so no spelling, hard link or symlink gets past; a refused or failed run
// leaves every file as it was and no temporary file behind.
TEST(tokenize_coda_never_overwrites_an_input_or_a_previous_output) {
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char tj[512], txt[512], dotted[600], hard[512], sym[512], out[512], blank[512];
    dt_path(&d, "tokenizer.json", tj, sizeof(tj));
    dt_path(&d, "a.txt", txt, sizeof(txt));
    snprintf(dotted, sizeof(dotted), "%s/./a.txt", d.dir);
    dt_path(&d, "hard.txt", hard, sizeof(hard));
    dt_path(&d, "sym.bin", sym, sizeof(sym));
    dt_path(&d, "out.bin", out, sizeof(out));
    dt_path(&d, "blank.txt", blank, sizeof(blank));
    CHECK(dt_write_toy_tokenizer(tj, 0) == 0, "");
    const char text[] = "ab ca\n\nabc\n";
    dt_write_bytes(txt, text, sizeof(text) - 1);
    CHECK(link(txt, hard) == 0 && symlink(txt, sym) == 0, "link/symlink");
    Tokenizer tok; CodaError err = {{0}};
    CHECK(tokenizer_load(&tok, tj, &err) == 0, "%s", err.msg);
    long tj_size = dt_file_size(tj);
    ShardPackOptions opt; memset(&opt, 0, sizeof(opt));
    int64_t nt, nd, nc;
    const char* inputs[1] = {txt};
    const char* outs[4] = {dotted, hard, sym, tj};
    const char* what[4] = {"the input", "the input", "the input", "the tokenizer"};
    for (int i = 0; i < 4; i++) {
        err.msg[0] = 0;
        CHECK(tokenize_files(&tok, inputs, 1, outs[i], opt, NULL, &nt, &nd, &nc, &err) != 0, "output %s accepted", outs[i]);
        CHECK(strstr(err.msg, "the output is the same file as") && strstr(err.msg, what[i]), "%s", err.msg);
    }
    FILE* f = fopen(txt, "rb");
    char back[64] = {0};
    size_t got = f ? fread(back, 1, sizeof(back), f) : 0;
    if (f) fclose(f);
    CHECK(got == sizeof(text) - 1 && memcmp(back, text, got) == 0, "the input was changed");
    CHECK(dt_file_size(tj) == tj_size && dt_count_files(&d) == 4, "the tokenizer was changed or a file was left behind");
    // a good run, then a failing one into the same output: the first shard survives untouched
    CHECK(tokenize_files(&tok, inputs, 1, out, opt, NULL, &nt, &nd, &nc, &err) == 0, "%s", err.msg);
    long shard_size = dt_file_size(out);
    dt_write_bytes(blank, "\n \n", 3);
    const char* blanks[1] = {blank};
    CHECK(tokenize_files(&tok, blanks, 1, out, opt, NULL, &nt, &nd, &nc, &err) != 0 && strstr(err.msg, "blank.txt: the input has no documents"),
          "%s", err.msg);
    ShardHeader h; int32_t* ids = NULL;
    CHECK(dt_file_size(out) == shard_size && shard_load(out, &h, &ids, &err) == 0 && h.n_docs == 2, "the previous output was damaged: %s", err.msg);
    free(ids);
    CHECK(dt_count_files(&d) == 6, "a temporary file was left behind (%d files)", dt_count_files(&d));
    // an existing output that is not a regular file is never replaced
    CHECK(tokenize_files(&tok, inputs, 1, d.dir, opt, NULL, &nt, &nd, &nc, &err) != 0 && strstr(err.msg, "not a regular file"), "%s", err.msg);
    tokenizer_free(&tok);
    dt_tmpdir_remove(&d);
}

// Runs the program at argv[0] (a path: the built tools are in the repository root) with stdout and
// stderr going to files, as a user runs it; returns its exit status (-1000 when it could not be
// started) and the first bytes of each stream (NUL-terminated).
static int dt_run_captured(const char* const* argv, char* out, size_t out_n, char* errs, size_t err_n) {
    DataTmpDir d;
    if (dt_tmpdir_make(&d) != 0) return -1000;
    char po[512], pe[512];
    dt_path(&d, "stdout", po, sizeof(po));
    dt_path(&d, "stderr", pe, sizeof(pe));
    FILE* fo = fopen(po, "w+");
    FILE* fe = fopen(pe, "w+");
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fileno(fo), 1); dup2(fileno(fe), 2);
        execv(argv[0], (char* const*)argv);
        _exit(127);
    }
    int status = 0, rc = -1000;
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) != 127) rc = WEXITSTATUS(status);
    FILE* streams[2] = {fo, fe};
    char* bufs[2] = {out, errs};
    size_t sizes[2] = {out_n, err_n};
    for (int i = 0; i < 2; i++) {
        rewind(streams[i]);
        size_t n = fread(bufs[i], 1, sizes[i] - 1, streams[i]);
        bufs[i][n] = 0;
        fclose(streams[i]);
    }
    dt_tmpdir_remove(&d);
    return rc;
}

// --help is a request, not an error: usage on stdout, exit 0. A usage error stays on stderr, exit 2.
// The tools run as built (`make test` builds them before test_cpu runs).
TEST(tools_help_exits_0_on_stdout_and_usage_errors_exit_2) {
    static const char* names[2] = {"./tokenize_coda", "./bench_tokenizer"};
    char out[4096], errs[4096];
    for (int i = 0; i < 2; i++) {
        if (!dt_exists(names[i])) { CHECK(0, "%s is not built: make tokenize_coda bench_tokenizer", names[i]); continue; }
        const char* help[3] = {names[i], "--help", NULL};
        CHECK(dt_run_captured(help, out, sizeof(out), errs, sizeof(errs)) == 0, "%s --help", names[i]);
        CHECK(strstr(out, "usage:") == out && errs[0] == 0, "%s --help: stdout '%.60s', stderr '%.60s'", names[i], out, errs);
        const char* none[2] = {names[i], NULL};
        CHECK(dt_run_captured(none, out, sizeof(out), errs, sizeof(errs)) == 2, "%s without arguments", names[i]);
        CHECK(out[0] == 0 && strstr(errs, "usage:"), "%s without arguments: stdout '%.60s', stderr '%.60s'", names[i], out, errs);
    }
    const char* bad[6] = {"./tokenize_coda", "--chunk-mb", "lots", "t.json", "a.txt", NULL};
    CHECK(dt_run_captured(bad, out, sizeof(out), errs, sizeof(errs)) == 2 &&
          strstr(errs, "--chunk-mb needs a number of MB in (0, 1e6], not lots"), "%s", errs);
}

// The same check on real text with the real Mistral tokenizer, when `make shards` (or the fetch
// scripts) have put them under data/: Brown validation, chunks of 4 KB vs one whole encoding.
// CI machines have no data/ and report that this part did not run.
TEST(tokenize_coda_real_text_chunked_equals_whole) {
    const char* tj = "data/tokenizers/mistral-v0.3/tokenizer.json";
    const char* txt = "data/brown/val.txt";
    if (!dt_exists(tj) || !dt_exists(txt)) {
        printf("    (not run: needs %s and %s; run `make shards`)\n", tj, txt);
        return;
    }
    DataTmpDir d; CHECK(dt_tmpdir_make(&d) == 0, "mkdtemp");
    char out[512]; dt_path(&d, "val.bin", out, sizeof(out));
    Tokenizer tok; CodaError err = {{0}};
    CHECK(tokenizer_load(&tok, tj, &err) == 0, "%s", err.msg);
    ShardPackOptions opt; memset(&opt, 0, sizeof(opt));
    opt.chunk_bytes = 4096; opt.verify = 1;
    const char* files[1] = {txt};
    int64_t nt, nd, nc;
    CHECK(tokenize_files(&tok, files, 1, out, opt, NULL, &nt, &nd, &nc, &err) == 0, "%s", err.msg);
    CHECK(nd == 41 && nc > 100 && nt > 100000, "docs %lld chunks %lld tokens %lld", (long long)nd, (long long)nc, (long long)nt);
    tokenizer_free(&tok);
    dt_tmpdir_remove(&d);
}
