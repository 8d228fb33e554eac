// test_checkpoint.h — the host side of training checkpoints, no GPU needed:
//   * train_state.bin (llmc/train_state.h): a good file parses; truncated at every length, a byte
//     flipped anywhere, huge or negative counts that would wrap the size, a wrong magic or version,
//     trailing bytes, another model (size or layout) or run each give an error naming the file;
//     version-1 files still read; the checksum streams in any split (llmc/checksum.h).
#pragma once
#include "../../llmc/checksum.h"
#include "../../llmc/train_state.h"
#include "model_helpers.h"

// A version-2 image of n_train values (arrays filled with a pattern), sealed; malloc'd.
static char* ckpt_test_image(int64_t n_train, size_t* n_bytes) {
    size_t n = sizeof(TrainStateHeader) + 12 * (size_t)n_train;
    char* b = (char*)calloc(n, 1);
    TrainStateHeader h;
    memset(&h, 0, sizeof(h));
    h.magic = TRAIN_STATE_MAGIC; h.version = 2; h.n_train = n_train; h.step = 30; h.adam_step = 30; h.data_epoch = 1; h.data_index = 7;
    h.seed = 42; h.B = 2; h.T = 16; h.accum = 4; h.layout = 0x1234;
    memcpy(b, &h, sizeof(h));
    float* f = (float*)(b + sizeof(h));
    for (int64_t i = 0; i < 3 * n_train; i++) f[i] = 0.25f * (float)i - 1.0f;
    train_state_seal(b, n);
    *n_bytes = n;
    return b;
}
static TrainStateExpect ckpt_test_expect(int64_t n_train) {
    TrainStateExpect e;
    e.n_train = n_train;
    e.layout = 0x1234;
    e.run.seed = 42; e.run.B = 2; e.run.T = 16; e.run.accum = 4;
    return e;
}
// Rewrites one int64 field (index into the header's 16) and re-seals, so that only the field's own
// check can refuse the file.
static void ckpt_test_set_field(char* b, size_t n, int field, int64_t v) {
    memcpy(b + 8 * field, &v, 8);
    train_state_seal(b, n);
}

TEST(checksum_streams_in_any_split_and_sees_every_byte) {
    unsigned char data[300];
    for (int i = 0; i < 300; i++) data[i] = (unsigned char)(i * 37 + 11);
    uint64_t whole = checksum_bytes(data, sizeof(data));
    for (size_t split = 0; split <= sizeof(data); split += 7) {
        Checksum c;
        checksum_init(&c);
        checksum_update(&c, data, split);
        checksum_update(&c, data + split, 1 > sizeof(data) - split ? sizeof(data) - split : 1);
        if (split + 1 < sizeof(data)) checksum_update(&c, data + split + 1, sizeof(data) - split - 1);
        CHECK(checksum_final(&c) == whole, "split at %zu", split);
    }
    for (size_t len = 0; len <= 70; len++) {  // every byte of every length (blocks, words and the tail) counts
        uint64_t ref = checksum_bytes(data, len);
        for (size_t i = 0; i < len; i++) {
            data[i] ^= 0x10;
            CHECK(checksum_bytes(data, len) != ref, "length %zu: byte %zu flipped, same checksum", len, i);
            data[i] ^= 0x10;
        }
        if (len) CHECK(checksum_bytes(data, len - 1) != ref, "length %zu vs %zu", len - 1, len);
    }
}

TEST(train_state_good_file_parses_and_every_damage_is_refused) {
    const int64_t n_train = 5;
    size_t n;
    char* good = ckpt_test_image(n_train, &n);
    TrainStateExpect e = ckpt_test_expect(n_train);
    TrainStateHeader h;
    CodaError err;
    CHECK(train_state_parse(good, n, "good.bin", &e, &h, &err) == 0, "%s", err.msg);
    CHECK(h.step == 30 && h.data_index == 7 && h.n_train == n_train, "header read back");
    CHECK(train_state_parse(good, n, "good.bin", NULL, NULL, &err) == 0, "no model to match: %s", err.msg);
    char* b = (char*)malloc(n + 8);
    // truncated at every length, and one byte too many
    for (size_t len = 0; len < n; len++) {
        err.msg[0] = 0;
        CHECK(train_state_parse(good, len, "t.bin", &e, NULL, &err) != 0 && strstr(err.msg, "t.bin is truncated"), "length %zu: '%s'", len,
              err.msg);
    }
    memcpy(b, good, n);
    b[n] = 0;
    CHECK(train_state_parse(b, n + 1, "t.bin", &e, NULL, &err) != 0 && strstr(err.msg, "1 bytes after"), "%s", err.msg);
    // a byte flipped anywhere: refused (the header checks or the checksum)
    for (size_t i = 0; i < n; i++) {
        memcpy(b, good, n);
        b[i] ^= 0x40;
        err.msg[0] = 0;
        CHECK(train_state_parse(b, n, "f.bin", &e, NULL, &err) != 0 && strstr(err.msg, "f.bin"), "byte %zu flipped: accepted ('%s')", i, err.msg);
    }
    memcpy(b, good, n);
    b[n - 1] ^= 1;
    CHECK(train_state_parse(b, n, "f.bin", &e, NULL, &err) != 0 && strstr(err.msg, "f.bin is damaged: checksum mismatch"), "%s", err.msg);
    // fields, each re-sealed so that its own check speaks
    struct { int field; int64_t value; const char* expect; } cases[] = {
        {0, 20261129, "not a coda.c training state (wrong magic)"},
        {1, 3, "training-state version 3; this build reads versions 1 and 2"},
        {1, 0, "training-state version 0"},
        {2, -1, "its header counts -1 trainable values"},
        {2, INT64_MAX, "its header counts 9223372036854775807 trainable values"},       // 12 x n wraps
        {2, (INT64_MAX / 12) + 1, "trainable values"},                               // 128 + 12 x n wraps
        {2, (int64_t)(UINT64_MAX / 24), "is truncated"},                             // fits, far beyond the file
        {2, n_train + 1, "is truncated: 188 of the 200 bytes"},
        {2, n_train - 1, "has 12 bytes after the 176"},
        {3, -5, "damaged: step -5"},
        {8, 0, "batch 0 x 16 x 4"},
        {9, (int64_t)1 << 40, "batch 2 x 1099511627776 x 4"},
        {13, 1, "reserved header fields are not zero"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcpy(b, good, n);
        ckpt_test_set_field(b, n, cases[i].field, cases[i].value);
        err.msg[0] = 0;
        CHECK(train_state_parse(b, n, "x.bin", &e, NULL, &err) != 0 && strstr(err.msg, "x.bin") && strstr(err.msg, cases[i].expect),
              "field %d = %lld: '%s'", cases[i].field, (long long)cases[i].value, err.msg);
    }
    // another model or run
    TrainStateExpect other = e;
    other.n_train = 6;
    CHECK(train_state_parse(good, n, "x.bin", &other, NULL, &err) != 0 && strstr(err.msg, "holds 5 trainable values but this model has 6"),
          "%s", err.msg);
    other = e;
    other.layout = 0x9999;
    CHECK(train_state_parse(good, n, "x.bin", &other, NULL, &err) != 0 && strstr(err.msg, "belongs to another model"), "%s", err.msg);
    other = e;
    other.run.accum = 8;
    CHECK(train_state_parse(good, n, "x.bin", &other, NULL, &err) != 0 && strstr(err.msg, "--accum 4"), "%s", err.msg);
    // version 1: no checksum, no layout; read as before, a stray value in those fields is damage
    memcpy(b, good, n);
    TrainStateHeader v1;
    memcpy(&v1, b, sizeof(v1));
    v1.version = 1; v1.checksum = 0; v1.layout = 0;
    memcpy(b, &v1, sizeof(v1));
    CHECK(train_state_parse(b, n, "v1.bin", &e, NULL, &err) == 0, "version 1: %s", err.msg);
    v1.layout = 5;
    memcpy(b, &v1, sizeof(v1));
    CHECK(train_state_parse(b, n, "v1.bin", &e, NULL, &err) != 0 && strstr(err.msg, "reserved"), "%s", err.msg);
    free(b);
    free(good);
}

TEST(train_state_open_checks_the_file_on_disk) {
    char dir[64], path[128];
    test_mkdtemp(dir, sizeof(dir), "tstate");
    snprintf(path, sizeof(path), "%s/train_state.bin", dir);
    size_t n;
    char* good = ckpt_test_image(9, &n);
    TrainStateExpect e = ckpt_test_expect(9);
    TrainStateHeader h;
    CodaError err;
    size_t lengths[] = {0, 100, sizeof(TrainStateHeader), n - 1};
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        FILE* f = fopen(path, "wb");
        fwrite(good, 1, lengths[i], f);
        fclose(f);
        err.msg[0] = 0;
        CHECK(train_state_open(path, &e, &h, NULL, &err) != 0 && strstr(err.msg, path) && strstr(err.msg, "truncated"), "length %zu: '%s'",
              lengths[i], err.msg);
    }
    FILE* f = fopen(path, "wb");
    fwrite(good, 1, n, f);
    fclose(f);
    FILE* opened = NULL;
    CHECK(train_state_open(path, &e, &h, &opened, &err) == 0 && opened && ftell(opened) == (long)sizeof(TrainStateHeader), "%s", err.msg);
    if (opened) fclose(opened);
    snprintf(path, sizeof(path), "%s/missing.bin", dir);
    CHECK(train_state_open(path, &e, &h, NULL, &err) != 0 && strstr(err.msg, "cannot open") && strstr(err.msg, "missing.bin"), "%s", err.msg);
    free(good);
    test_rmtree(dir);
}

TEST(train_state_layout_tells_models_and_phases_apart) {
    ModelConfig c = tiny_config(1, 0);
    ParamTable t;
    param_table_build(&t, &c, DT_F32);
    long long* off = (long long*)malloc(sizeof(long long) * t.n);
    uint64_t layouts[3];
    TrainPolicy policies[3] = {TRAIN_ALL, TRAIN_ATTENTION, TRAIN_CODA_ONLY};
    for (int p = 0; p < 3; p++) {
        param_table_set_trainable(&t, policies[p]);
        long long n = 0;
        for (int i = 0; i < t.n; i++) { off[i] = t.tensors[i].trainable ? n : -1; n += t.tensors[i].trainable ? (long long)t.tensors[i].numel : 0; }
        layouts[p] = train_state_layout(&t, off);
    }
    CHECK(layouts[0] != layouts[1] && layouts[1] != layouts[2] && layouts[0] != layouts[2], "phases differ");
    CHECK(layouts[2] == train_state_layout(&t, off), "deterministic");
    param_table_free(&t);
    ModelConfig wider = c;
    wider.ffn_dim += 8;
    param_table_build(&t, &wider, DT_F32);
    param_table_set_trainable(&t, TRAIN_CODA_ONLY);
    off = (long long*)realloc(off, sizeof(long long) * t.n);
    long long n = 0;
    for (int i = 0; i < t.n; i++) { off[i] = t.tensors[i].trainable ? n : -1; n += t.tensors[i].trainable ? (long long)t.tensors[i].numel : 0; }
    CHECK(train_state_layout(&t, off) == layouts[2], "the CoDA tensors alone do not depend on the MLP width");
    param_table_set_trainable(&t, TRAIN_ALL);
    n = 0;
    for (int i = 0; i < t.n; i++) { off[i] = t.tensors[i].trainable ? n : -1; n += t.tensors[i].trainable ? (long long)t.tensors[i].numel : 0; }
    CHECK(train_state_layout(&t, off) != layouts[0], "another MLP width, all trainable: another layout");
    param_table_free(&t);
    free(off);
}
