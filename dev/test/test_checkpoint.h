// test_checkpoint.h — the host side of training checkpoints, no GPU needed:
//   * train_state.bin (llmc/train_state.h): a good file parses; truncated at every length, a byte
//     flipped anywhere, huge or negative counts that would wrap the size, a wrong magic or version,
//     trailing bytes, another model (size or layout) or run each give an error naming the file;
//     version-1 files still read; the checksum streams in any split (llmc/checksum.h);
//   * checkpoint directories (llmc/checkpoint_dir.h): see the second half.
#pragma once
#include <sys/stat.h>
#include "../../llmc/checkpoint_dir.h"
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
    // a FIFO in place of the file is refused without opening it (fopen on a FIFO blocks until a writer comes)
    snprintf(path, sizeof(path), "%s/fifo.bin", dir);
    CHECK(mkfifo(path, 0600) == 0, "mkfifo %s", path);
    CHECK(train_state_open(path, &e, &h, NULL, &err) != 0 && strstr(err.msg, "not a regular file") && strstr(err.msg, "a pipe"), "%s", err.msg);
    unlink(path);
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

// ---- checkpoint directories (llmc/checkpoint_dir.h) ----
//   * which directories are complete checkpoints, and why not (naming the file);
//   * the step_N.tmp directories a killed run leaves are removed, nothing else;
//   * --keep-last deletes the older complete checkpoints, never the one LATEST names, never an
//     incomplete one;
//   * --resume: LATEST's checkpoint when it is readable and complete, else the newest complete one
//     (earlier than LATEST's, when it names one), with a note saying why; a fresh start when nothing
//     was saved; an error when checkpoints exist but none is complete.

// What a test checkpoint lacks or has damaged.
enum { CKPT_GOOD, CKPT_NO_CONFIG, CKPT_BAD_CONFIG, CKPT_NO_WEIGHTS, CKPT_NO_STATE, CKPT_SHORT_STATE };

static void ckpt_test_write_file(const char* path, const void* p, size_t n) {
    FILE* f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    fwrite(p, 1, n, f);
    fclose(f);
}

// OUT/<name> as train_coda writes it (a tiny model's config.json and model.safetensors, a sealed
// train_state.bin), damaged as `kind` says.
static void ckpt_test_make(const char* out, const char* name, int kind) {
    char dir[256], path[320];
    snprintf(dir, sizeof(dir), "%s/%s", out, name);
    CodaError err;
    if (ckpt_make_dir(dir, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(2); }
    ModelConfig c = tiny_config(1, 0);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (kind == CKPT_BAD_CONFIG) ckpt_test_write_file(path, "{\"hidden_size\": ", 16);
    else if (kind != CKPT_NO_CONFIG) CHECK(config_write_hf(path, &c, &err) == 0, "%s", err.msg);
    if (kind != CKPT_NO_WEIGHTS) {
        Model_f32 m;
        model_init_f32(&m, &c, 1);
        CHECK(hf_save_params(dir, &m.table, m.params, DT_F32, DT_F32, 0, &err) == 0, "%s", err.msg);
        model_free_f32(&m);
    }
    if (kind != CKPT_NO_STATE) {
        size_t n;
        char* b = ckpt_test_image(4, &n);
        snprintf(path, sizeof(path), "%s/train_state.bin", dir);
        ckpt_test_write_file(path, b, kind == CKPT_SHORT_STATE ? n - 5 : n);
        free(b);
    }
}
static int ckpt_test_exists(const char* out, const char* name) {
    char path[320];
    snprintf(path, sizeof(path), "%s/%s", out, name);
    struct stat sb;
    return stat(path, &sb) == 0;
}
static void ckpt_test_latest(const char* out, const char* text) {
    char path[320];
    snprintf(path, sizeof(path), "%s/LATEST", out);
    ckpt_test_write_file(path, text, strlen(text));
}

TEST(checkpoint_dirs_complete_listing_and_names) {
    char out[64];
    test_mkdtemp(out, sizeof(out), "ckpt");
    const struct { const char* name; int kind; const char* why; } dirs[] = {
        {"step_00000001", CKPT_GOOD, NULL},
        {"step_00000002", CKPT_NO_CONFIG, "config.json"},
        {"step_00000003", CKPT_BAD_CONFIG, "config.json"},
        {"step_00000004", CKPT_NO_WEIGHTS, "has no model weights"},
        {"step_00000005", CKPT_NO_STATE, "train_state.bin"},
        {"step_00000006", CKPT_SHORT_STATE, "train_state.bin is truncated"},
    };
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        ckpt_test_make(out, dirs[i].name, dirs[i].kind);
        char dir[256];
        snprintf(dir, sizeof(dir), "%s/%s", out, dirs[i].name);
        CodaError why;
        why.msg[0] = 0;
        int complete = ckpt_is_complete(dir, &why);
        CHECK(complete == (dirs[i].why == NULL), "%s: complete %d (%s)", dirs[i].name, complete, why.msg);
        if (dirs[i].why) CHECK(strstr(why.msg, dirs[i].why) && strstr(why.msg, dir), "%s: why '%s'", dirs[i].name, why.msg);
    }
    // not checkpoints: a temporary directory, other names, a file with a checkpoint's name
    ckpt_test_make(out, "step_00000009.tmp", CKPT_GOOD);
    ckpt_test_make(out, "step_12x", CKPT_GOOD);
    ckpt_test_make(out, "step_", CKPT_GOOD);
    ckpt_test_make(out, "old_step_00000003", CKPT_GOOD);
    char path[320];
    snprintf(path, sizeof(path), "%s/step_00000010", out);
    ckpt_test_write_file(path, "x", 1);
    CkptEntry* e;
    int n;
    CodaError err;
    CHECK(ckpt_list(out, "", &e, &n, &err) == 0 && n == 6, "%d checkpoint directories", n);
    for (int i = 0; i < n; i++) CHECK(e[i].step == i + 1 && strcmp(e[i].name, dirs[i].name) == 0, "entry %d: %d %s", i, e[i].step, e[i].name);
    free(e);
    CHECK(ckpt_list(out, ".tmp", &e, &n, &err) == 0 && n == 1 && e[0].step == 9, "%d unfinished", n);
    free(e);
    CHECK(ckpt_parse_step("step_2147483647", "") == INT_MAX && ckpt_parse_step("step_2147483648", "") == -1 &&
              ckpt_parse_step("step_7.tmp", ".tmp") == 7 && ckpt_parse_step("step_7.tmp", "") == -1 && ckpt_parse_step("step_-1", "") == -1,
          "step names");
    CHECK(ckpt_list("/nonexistent/out", "", &e, &n, &err) != 0 && strstr(err.msg, "/nonexistent/out"), "%s", err.msg);
    test_rmtree(out);
}

TEST(checkpoint_unfinished_tmp_directories_are_removed) {
    char out[64];
    test_mkdtemp(out, sizeof(out), "ckpt");
    ckpt_test_make(out, "step_00000100", CKPT_GOOD);
    ckpt_test_make(out, "step_00000200.tmp", CKPT_NO_STATE);  // killed while writing
    ckpt_test_make(out, "step_00000300.tmp", CKPT_GOOD);      // killed before the rename
    ckpt_test_make(out, "notes.tmp", CKPT_GOOD);              // not ours
    ckpt_test_latest(out, "step_00000100\n");
    int n;
    char names[1024];
    CodaError err;
    CHECK(ckpt_remove_unfinished(out, &n, names, sizeof(names), &err) == 0 && n == 2, "%d removed: %s", n, err.msg);
    CHECK(strstr(names, "step_00000200.tmp") && strstr(names, "step_00000300.tmp"), "names: %s", names);
    CHECK(!ckpt_test_exists(out, "step_00000200.tmp") && !ckpt_test_exists(out, "step_00000300.tmp"), "tmp directories gone");
    CHECK(ckpt_test_exists(out, "step_00000100") && ckpt_test_exists(out, "notes.tmp") && ckpt_test_exists(out, "LATEST"), "the rest stays");
    CHECK(ckpt_remove_unfinished(out, &n, names, sizeof(names), &err) == 0 && n == 0 && names[0] == 0, "nothing left to remove");
    test_rmtree(out);
}

TEST(checkpoint_keep_last_never_deletes_latest_or_incomplete) {
    char out[64];
    test_mkdtemp(out, sizeof(out), "ckpt");
    for (int s = 1; s <= 5; s++) {
        char name[64];
        ckpt_step_name(s * 10, name, sizeof(name));
        ckpt_test_make(out, name, CKPT_GOOD);
    }
    ckpt_test_make(out, "step_00000005", CKPT_SHORT_STATE);  // older and incomplete: not ours to judge
    CodaError err;
    CHECK(ckpt_latest_write(out, "step_00000020", &err) == 0, "%s", err.msg);  // e.g. resumed from 20
    int n;
    char names[2048];
    CHECK(ckpt_prune(out, 0, &n, names, sizeof(names), &err) == 0 && n == 0, "--keep-last 0 keeps all");
    CHECK(ckpt_prune(out, 2, &n, names, sizeof(names), &err) == 0 && n == 2, "%d deleted: %s", n, names);
    CHECK(ckpt_test_exists(out, "step_00000050") && ckpt_test_exists(out, "step_00000040"), "the newest two stay");
    CHECK(ckpt_test_exists(out, "step_00000020"), "the one LATEST names stays");
    CHECK(!ckpt_test_exists(out, "step_00000030") && !ckpt_test_exists(out, "step_00000010"), "the older complete ones go");
    CHECK(ckpt_test_exists(out, "step_00000005"), "an incomplete one stays");
    CHECK(strstr(names, "step_00000030") && strstr(names, "step_00000010"), "names: %s", names);
    CHECK(ckpt_latest_write(out, "step_00000050", &err) == 0, "%s", err.msg);
    CHECK(ckpt_prune(out, 1, &n, names, sizeof(names), &err) == 0 && n == 2, "%d deleted: %s", n, names);
    CHECK(ckpt_test_exists(out, "step_00000050") && !ckpt_test_exists(out, "step_00000040") && !ckpt_test_exists(out, "step_00000020"),
          "--keep-last 1");
    test_rmtree(out);
}

TEST(checkpoint_resume_falls_back_to_the_newest_complete_checkpoint) {
    char out[64], dir[4200], note[2048];
    test_mkdtemp(out, sizeof(out), "ckpt");
    CodaError err;
    CHECK(ckpt_find_resume(out, dir, sizeof(dir), note, sizeof(note), &err) == 1 && note[0] == 0, "empty OUT: a fresh start");
    ckpt_test_make(out, "step_00000100", CKPT_GOOD);
    ckpt_test_make(out, "step_00000200", CKPT_GOOD);
    ckpt_test_make(out, "step_00000300", CKPT_SHORT_STATE);  // the run died writing it, after the rename
    char want[256];
    // LATEST readable and complete: it, silently (also when a newer complete one exists)
    ckpt_test_latest(out, "step_00000100\n");
    snprintf(want, sizeof(want), "%s/step_00000100", out);
    CHECK(ckpt_find_resume(out, dir, sizeof(dir), note, sizeof(note), &err) == 0 && strcmp(dir, want) == 0 && note[0] == 0, "%s | %s", dir,
          note);
    // LATEST missing, empty, garbled, naming a missing or an incomplete checkpoint
    struct { const char* latest; const char* use; const char* note; } cases[] = {
        {NULL, "step_00000200", "LATEST is missing, resuming from the newest complete checkpoint"},
        {"", "step_00000200", "LATEST is empty"},
        {"../elsewhere\n", "step_00000200", "names '../elsewhere', which is not a checkpoint directory name"},
        {"step_00000250\n", "step_00000200", "step_00000250, which does not exist, resuming from the newest complete earlier checkpoint"},
        {"step_00000300\n", "step_00000200", "step_00000300, which is not complete"},
        {"step_00000150\n", "step_00000100", "which does not exist"},  // earlier than the one LATEST names
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[320];
        snprintf(path, sizeof(path), "%s/LATEST", out);
        if (cases[i].latest) ckpt_test_latest(out, cases[i].latest);
        else unlink(path);
        snprintf(want, sizeof(want), "%s/%s", out, cases[i].use);
        note[0] = 0;
        int rc = ckpt_find_resume(out, dir, sizeof(dir), note, sizeof(note), &err);
        CHECK(rc == 0 && strcmp(dir, want) == 0, "case %zu: rc %d dir %s (%s)", i, rc, dir, rc ? err.msg : note);
        CHECK(strstr(note, cases[i].note) && strstr(note, want), "case %zu: note '%s'", i, note);
    }
    // checkpoints, but none complete (before the one LATEST names): an error, not a fresh start
    ckpt_test_latest(out, "step_00000100\n");
    char path[320];
    snprintf(path, sizeof(path), "%s/step_00000100/train_state.bin", out);
    unlink(path);
    CHECK(ckpt_find_resume(out, dir, sizeof(dir), note, sizeof(note), &err) == -1 && strstr(err.msg, "cannot resume") &&
              strstr(err.msg, "no earlier checkpoint"), "%s", err.msg);
    snprintf(path, sizeof(path), "%s/LATEST", out);
    unlink(path);
    snprintf(path, sizeof(path), "%s/step_00000200/config.json", out);
    unlink(path);
    CHECK(ckpt_find_resume(out, dir, sizeof(dir), note, sizeof(note), &err) == -1 && strstr(err.msg, "no checkpoint in") &&
              strstr(err.msg, "step_00000300/train_state.bin is truncated"), "%s", err.msg);
    test_rmtree(out);
}
