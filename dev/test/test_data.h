// test_data.h — token shards (llmc/shard.h) and the dataloader (llmc/dataloader.h).
// Every test writes small synthetic shards into its own mkdtemp directory under /tmp and removes it.
#pragma once
#include <dirent.h>
#include <stdint.h>
#include <unistd.h>
#include "../../llmc/dataloader.h"
#include "../../llmc/shard.h"

// ---- helpers ----
typedef struct {
    char dir[256];
} TmpDir;

static int tmpdir_make(TmpDir* d) {
    snprintf(d->dir, sizeof(d->dir), "/tmp/coda_test_data_XXXXXX");
    return mkdtemp(d->dir) ? 0 : -1;
}
static void tmpdir_path(const TmpDir* d, const char* name, char* out, size_t n) { snprintf(out, n, "%s/%s", d->dir, name); }
static void tmpdir_remove(TmpDir* d) {  // the tests create only plain files in it
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
static int file_exists(const char* p) { return access(p, F_OK) == 0; }

// Tokens 0..n-1 mod vocab: every position is recognisable from its value.
static int32_t* make_ramp(size_t n, int32_t vocab) {
    int32_t* t = (int32_t*)malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)(i % (size_t)vocab);
    return t;
}
// Writes raw bytes (a hand-made header and payload) to path.
static void write_bytes(const char* path, const void* p, size_t n) {
    FILE* f = fopen(path, "wb");
    if (f) { fwrite(p, 1, n, f); fclose(f); }
}
static long file_size(const char* path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

// ---- shard format ----
TEST(shard_header_round_trip_uint16) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; tmpdir_path(&d, "a.bin", p, sizeof(p));
    const int32_t V = 32000;
    int32_t* t = make_ramp(100000, V);
    t[7] = V - 1;  // largest id survives the 16-bit store
    CodaError err = {{0}};
    CHECK(shard_write(p, t, 100000, V, 1, 2, SHARD_PACK_JOINED, 3, &err) == 0, "%s", err.msg);
    CHECK(file_size(p) == SHARD_HEADER_BYTES + 100000 * 2, "size %ld", file_size(p));
    char tmp[600]; snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    CHECK(!file_exists(tmp), "temp file left behind");
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
    free(t); free(back); tmpdir_remove(&d);
}

TEST(shard_header_round_trip_uint32_and_64bit_count) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; tmpdir_path(&d, "b.bin", p, sizeof(p));
    // 65536 is the largest vocab that fits uint16 (ids 0..65535); 65537 needs uint32
    CHECK(shard_token_bytes_for_vocab(65536) == 2 && shard_token_bytes_for_vocab(65537) == 4, "");
    const int32_t V = 131072;
    int32_t* t = make_ramp(1000, V);
    t[5] = 70000; t[6] = V - 1;
    CodaError err = {{0}};
    CHECK(shard_write(p, t, 1000, V, 1, -1, SHARD_PACK_BOS_PER_DOC, 9, &err) == 0, "%s", err.msg);
    CHECK(file_size(p) == SHARD_HEADER_BYTES + 1000 * 4, "size %ld", file_size(p));
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
    free(t); free(back); tmpdir_remove(&d);
}

TEST(shard_writer_rejects_out_of_vocab_ids_and_leaves_no_file) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; tmpdir_path(&d, "w.bin", p, sizeof(p));
    int32_t t[4] = {1, 2, 300, 4};
    CodaError err = {{0}};
    CHECK(shard_write(p, t, 4, 300, 1, 2, SHARD_PACK_JOINED, 1, &err) != 0, "id 300 with vocab 300 accepted");
    CHECK(strstr(err.msg, "w.bin") && strstr(err.msg, "token id 300 at position 2"), "%s", err.msg);
    int32_t neg[2] = {1, -5};
    CHECK(shard_write(p, neg, 2, 300, 1, 2, SHARD_PACK_JOINED, 1, &err) != 0, "negative id accepted");
    CHECK(strstr(err.msg, "token id -5"), "%s", err.msg);
    char tmp[600]; snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    CHECK(!file_exists(p) && !file_exists(tmp), "a failed write left a file");
    tmpdir_remove(&d);
}

// Writes a good 1000-token shard, then the damaged variants; each must fail with its own message.
TEST(shard_bad_inputs_give_clear_errors) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    char good[512], p[512]; tmpdir_path(&d, "good.bin", good, sizeof(good));
    const int32_t V = 1000;
    int32_t* t = make_ramp(1000, V);
    CodaError err = {{0}};
    CHECK(shard_write(good, t, 1000, V, 1, 2, SHARD_PACK_JOINED, 1, &err) == 0, "%s", err.msg);
    long n = file_size(good);
    uint8_t* bytes = (uint8_t*)malloc((size_t)n);
    FILE* f = fopen(good, "rb"); CHECK(f && fread(bytes, 1, (size_t)n, f) == (size_t)n, ""); if (f) fclose(f);
    int32_t* hdr = (int32_t*)bytes;
    ShardHeader h; DataLoader dl;

    // wrong magic
    tmpdir_path(&d, "magic.bin", p, sizeof(p));
    hdr[0] = 12345; write_bytes(p, bytes, (size_t)n); hdr[0] = SHARD_MAGIC;
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "magic.bin: not a coda.c token shard: bad magic 12345"), "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "bad magic 12345"), "%s", err.msg);
    // an llm.c GPT-2 shard is named as such
    hdr[0] = 20240520; write_bytes(p, bytes, (size_t)n); hdr[0] = SHARD_MAGIC;
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "llm.c shard"), "%s", err.msg);
    // wrong version
    tmpdir_path(&d, "version.bin", p, sizeof(p));
    hdr[1] = 7; write_bytes(p, bytes, (size_t)n); hdr[1] = SHARD_VERSION;
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "version.bin: unsupported shard version 7"), "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "unsupported shard version 7"), "%s", err.msg);
    // truncated payload: the size disagrees with the count
    tmpdir_path(&d, "trunc.bin", p, sizeof(p));
    write_bytes(p, bytes, (size_t)n - 3);
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "trunc.bin: truncated token shard: header says 1000 tokens"), "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "truncated token shard"), "%s", err.msg);
    // truncated inside the header, and an empty file
    write_bytes(p, bytes, 100);
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "truncated token shard: 100 bytes, shorter than the 1024-byte header"), "%s", err.msg);
    write_bytes(p, bytes, 0);
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "truncated token shard: 0 bytes"), "%s", err.msg);
    // trailing garbage is also a size mismatch
    tmpdir_path(&d, "long.bin", p, sizeof(p));
    f = fopen(p, "wb"); if (f) { fwrite(bytes, 1, (size_t)n, f); fputc(0, f); fputc(0, f); fclose(f); }
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "long.bin: corrupt token shard: header says 1000 tokens"), "%s", err.msg);
    // token width that does not match the vocab
    tmpdir_path(&d, "width.bin", p, sizeof(p));
    hdr[5] = 4; write_bytes(p, bytes, (size_t)n); hdr[5] = 2;
    CHECK(shard_open(p, &h, NULL, &err) != 0 && strstr(err.msg, "token width 4 bytes, but vocab size 1000 needs 2"), "%s", err.msg);
    // token id >= vocab: the header is fine, so it is caught when the tokens are loaded
    tmpdir_path(&d, "vocab.bin", p, sizeof(p));
    uint16_t* toks = (uint16_t*)(bytes + SHARD_HEADER_BYTES);
    toks[777] = 1000; write_bytes(p, bytes, (size_t)n); toks[777] = 777;
    CHECK(shard_open(p, &h, NULL, &err) == 0, "%s", err.msg);
    int32_t* back = NULL;
    CHECK(shard_load(p, &h, &back, &err) != 0 && strstr(err.msg, "vocab.bin: token id 1000 at position 777 is >= the vocab size 1000"), "%s", err.msg);
    CHECK(back == NULL, "");
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "token id 1000 at position 777"), "%s", err.msg);
    // fewer tokens than one row of T+1
    tmpdir_path(&d, "short.bin", p, sizeof(p));
    CHECK(shard_write(p, t, 8, V, 1, 2, SHARD_PACK_JOINED, 1, &err) == 0, "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "short.bin: too few tokens: 8, but one row needs T+1 = 9"), "%s", err.msg);
    CHECK(dataloader_init(&dl, p, 1, 7, 0, 1, 0, 1, &err) == 0, "8 tokens make one row of T+1 = 8: %s", err.msg);
    dataloader_free(&dl);
    // enough for a row but not for a global batch
    CHECK(dataloader_init(&dl, good, 4, 100, 0, 4, 0, 1, &err) != 0 && strstr(err.msg, "9 rows of T+1 = 101 tokens, but one global batch needs n_ranks*B = 16 rows"), "%s", err.msg);
    // missing file
    tmpdir_path(&d, "nope.bin", p, sizeof(p));
    CHECK(dataloader_init(&dl, p, 1, 8, 0, 1, 0, 1, &err) != 0 && strstr(err.msg, "nope.bin: cannot open token shard"), "%s", err.msg);
    free(t); free(bytes); tmpdir_remove(&d);
}

// ---- dataloader ----
// A shard of n tokens whose value at position i is i % V: a row's first input tells where it starts.
static int write_ramp_shard(TmpDir* d, const char* name, size_t n, int32_t V, char* path, size_t len) {
    tmpdir_path(d, name, path, len);
    int32_t* t = make_ramp(n, V);
    CodaError err = {{0}};
    int rc = shard_write(path, t, n, V, 1, 2, SHARD_PACK_JOINED, 1, &err);
    free(t);
    return rc;
}

TEST(dataloader_rows_are_overlapping_windows_of_T_plus_1) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(write_ramp_shard(&d, "r.bin", 1000, 60000, p, sizeof(p)) == 0, "");
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
    tmpdir_remove(&d);
}

// Runs `steps` batches and returns the concatenated batch_rows (caller frees).
static uint64_t* collect_rows(DataLoader* dl, int steps) {
    uint64_t* out = (uint64_t*)malloc((size_t)steps * dl->B * sizeof(uint64_t));
    CodaError err = {{0}};
    for (int s = 0; s < steps; s++) {
        if (dataloader_next(dl, &err) != 0) { CHECK(0, "%s", err.msg); break; }
        memcpy(out + (size_t)s * dl->B, dl->batch_rows, dl->B * sizeof(uint64_t));
    }
    return out;
}

TEST(dataloader_same_seed_same_rows_different_seed_different_rows) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(write_ramp_shard(&d, "s.bin", 4097, 60000, p, sizeof(p)) == 0, "");
    DataLoader a, b, c; CodaError err = {{0}};
    CHECK(dataloader_init(&a, p, 4, 16, 0, 1, 1234, 1, &err) == 0, "%s", err.msg);  // 256 rows, 64 batches
    CHECK(dataloader_init(&b, p, 4, 16, 0, 1, 1234, 1, &err) == 0, "%s", err.msg);
    CHECK(dataloader_init(&c, p, 4, 16, 0, 1, 1235, 1, &err) == 0, "%s", err.msg);
    const int steps = 200;  // crosses three epoch boundaries
    uint64_t* ra = collect_rows(&a, steps);
    uint64_t* rb = collect_rows(&b, steps);
    uint64_t* rc = collect_rows(&c, steps);
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
    tmpdir_remove(&d);
}

TEST(dataloader_permutation_covers_each_row_once_per_epoch) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    // 3001 tokens, T = 10 -> 300 rows; B = 7 -> 42 batches (294 rows) per epoch, 6 left over
    char p[512]; CHECK(write_ramp_shard(&d, "c.bin", 3001, 60000, p, sizeof(p)) == 0, "");
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
    tmpdir_remove(&d);
}

TEST(dataloader_rank_slices_partition_the_global_batch) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(write_ramp_shard(&d, "k.bin", 10001, 60000, p, sizeof(p)) == 0, "");
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
    tmpdir_remove(&d);
}

TEST(dataloader_resume_from_saved_position_equals_continuing) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(write_ramp_shard(&d, "m.bin", 2001, 60000, p, sizeof(p)) == 0, "");
    DataLoader a, b; CodaError err = {{0}};
    const int B = 5, T = 10;  // 200 rows, 40 steps per epoch
    CHECK(dataloader_init(&a, p, B, T, 1, 2, 5, 1, &err) == 0, "%s", err.msg);
    uint64_t* warm = collect_rows(&a, 33);  // into epoch 1 (20 steps per epoch with 2 ranks)
    DataPosition saved = dataloader_position(&a);
    CHECK(saved.epoch == 1 && saved.index == 13 * 10, "epoch %llu index %llu", (unsigned long long)saved.epoch, (unsigned long long)saved.index);
    uint64_t* cont = collect_rows(&a, 50);
    // a fresh loader (a restarted process) seeks to the saved position
    CHECK(dataloader_init(&b, p, B, T, 1, 2, 5, 1, &err) == 0, "%s", err.msg);
    CHECK(dataloader_seek(&b, saved, &err) == 0, "%s", err.msg);
    uint64_t* resumed = collect_rows(&b, 50);
    CHECK(memcmp(cont, resumed, 50 * B * sizeof(uint64_t)) == 0, "resumed run differs");
    CHECK(memcmp(a.inputs, b.inputs, B * T * sizeof(int32_t)) == 0 && memcmp(a.targets, b.targets, B * T * sizeof(int32_t)) == 0, "");
    // seeking back to the start replays the warm-up
    DataPosition zero = {0, 0};
    CHECK(dataloader_seek(&b, zero, &err) == 0, "%s", err.msg);
    uint64_t* again = collect_rows(&b, 33);
    CHECK(memcmp(warm, again, 33 * B * sizeof(uint64_t)) == 0, "replay from {0,0} differs");
    // a position beyond the shard (a different shard or T) is refused
    DataPosition bad = {0, 100000};
    CHECK(dataloader_seek(&b, bad, &err) != 0 && strstr(err.msg, "cannot resume at row index 100000"), "%s", err.msg);
    free(warm); free(cont); free(resumed); free(again);
    dataloader_free(&a); dataloader_free(&b);
    tmpdir_remove(&d);
}

TEST(dataloader_sequential_eval_mode) {
    TmpDir d; CHECK(tmpdir_make(&d) == 0, "mkdtemp");
    char p[512]; CHECK(write_ramp_shard(&d, "e.bin", 1001, 60000, p, sizeof(p)) == 0, "");
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
    tmpdir_remove(&d);
}
