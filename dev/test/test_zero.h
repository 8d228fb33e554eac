// test_zero.h — llmc/zero.h, the host side of ZeRO-1: slice plans for any world size (model sizes
// not divisible by it, more ranks than elements), the trainable pieces inside each slice, an AdamW
// update done slice by slice equal to the whole-buffer update bit for bit, and a train_state.bin
// read back in the slices of any N (a run resumes with another number of ranks).
#pragma once
#include <vector>
#include "../../llmc/zero.h"
#include "test_checkpoint.h"  // ckpt_test_image

TEST(zero_slices_partition_the_buffer_for_any_world_size) {
    const size_t sizes[] = {0, 1, 63, 64, 65, 1000, 12345, 7241732096ull};  // the last: about a 7B model
    const int worlds[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 64, 1000};
    CodaError err;
    int bad = 0;
    for (size_t n : sizes)
        for (int w : worlds) {
            size_t next = 0;
            for (int r = 0; r < w; r++) {
                ZeroSlice s;
                if (zero_slice(n, r, w, &s, &err) != 0) { bad++; continue; }
                bad += s.lo != next || s.hi < s.lo || s.hi > n;           // contiguous, in order, inside
                bad += s.shard % ZERO_ALIGN != 0 || (s.lo % ZERO_ALIGN != 0 && s.lo != n);  // aligned starts
                bad += s.padded != s.shard * (size_t)w || s.padded < n;   // equal counts cover the buffer
                bad += s.shard > 0 && s.padded - n >= s.shard + (size_t)w * ZERO_ALIGN;  // not much padding
                bad += s.hi - s.lo > s.shard;
                next = s.hi;
            }
            bad += next != n;  // every element owned once
        }
    CHECK(bad == 0, "%d slice-plan violations", bad);
    ZeroSlice s;
    CHECK(zero_slice(10, 0, 0, &s, &err) != 0 && strstr(err.msg, "world size 0"), "%s", err.msg);
    CHECK(zero_slice(10, 3, 3, &s, &err) != 0 && strstr(err.msg, "rank 3 outside [0, 3)"), "%s", err.msg);
    CHECK(zero_slice(10, -1, 3, &s, &err) != 0, "negative rank");
}

// A tiny CoDA model with phase 1's policy (base frozen, attention adapters trainable): trainable
// tensors of many sizes with alignment gaps between them.
static void zero_test_table(ParamTable* t, std::vector<long long>& off, size_t* n_train) {
    ModelConfig c = config_default();
    c.vocab_size = 50; c.dim = 24; c.ffn_dim = 40; c.n_layers = 3; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 6;
    c.differential = 1; c.bounded = 1; c.window = 8; c.n_exact = 2; c.n_summary = 2;
    param_table_build(t, &c, DT_F32);
    param_table_set_trainable(t, TRAIN_ATTENTION);
    off.resize(t->n);
    *n_train = param_compact_offsets(t, off.data());
}

TEST(zero_pieces_cover_every_trainable_element_once) {
    ParamTable t;
    std::vector<long long> off;
    size_t n_train;
    zero_test_table(&t, off, &n_train);
    size_t trainable = 0;
    for (int i = 0; i < t.n; i++) trainable += off[i] >= 0 ? t.tensors[i].numel : 0;
    CHECK(trainable < n_train && trainable > 0, "the layout has alignment gaps (%zu of %zu)", trainable, n_train);
    CodaError err;
    int bad = 0;
    for (int w = 1; w <= 12; w++) {
        std::vector<int> owner(n_train, -1);
        for (int r = 0; r < w; r++) {
            ZeroSlice s;
            zero_slice(n_train, r, w, &s, &err);
            std::vector<ZeroPiece> p(t.n);
            const int np = zero_pieces(&t, off.data(), &s, p.data(), t.n);
            bad += np > t.n;
            size_t prev = s.lo;
            for (int k = 0; k < np && k < t.n; k++) {
                const int i = p[k].tensor;
                bad += off[i] < 0 || p[k].lo < prev || p[k].lo >= p[k].hi || p[k].lo < s.lo || p[k].hi > s.hi;
                bad += p[k].lo < (size_t)off[i] || p[k].hi > (size_t)off[i] + t.tensors[i].numel;
                for (size_t e = p[k].lo; e < p[k].hi; e++) bad += owner[e] != -1, owner[e] = r;
                prev = p[k].hi;
            }
        }
        size_t owned = 0;
        for (size_t e = 0; e < n_train; e++) owned += owner[e] >= 0;
        bad += owned != trainable;  // every trainable element once, no gap element
    }
    CHECK(bad == 0, "%d piece violations", bad);
    param_table_free(&t);
}

// AdamW with per-group lr / weight decay over the pieces of one slice, on the compact buffers (the
// arithmetic of the GPU's adamw.cuh, in double as the CPU reference does).
static void zero_test_adamw(const ParamTable* t, const ZeroPiece* p, int np, float* w, const float* g, float* m, float* v, int step) {
    const double lr[GROUP_COUNT] = {1e-3, 2e-3, 3e-3, 4e-3}, wd[GROUP_COUNT] = {0.1, 0.0, 0.01, 0.0};
    const double b1 = 0.9, b2 = 0.95, eps = 1e-8, bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
    for (int k = 0; k < np; k++) {
        const ParamGroup grp = PARAM_KINDS[t->tensors[p[k].tensor].kind].group;
        for (size_t e = p[k].lo; e < p[k].hi; e++) {
            const double mm = b1 * m[e] + (1 - b1) * g[e], vv = b2 * v[e] + (1 - b2) * (double)g[e] * g[e];
            m[e] = (float)mm;
            v[e] = (float)vv;
            w[e] = (float)(w[e] * (1 - lr[grp] * wd[grp]) - lr[grp] * (mm / bc1) / (sqrt(vv / bc2) + eps));
        }
    }
}

TEST(zero_sliced_adamw_equals_the_whole_buffer_update) {
    ParamTable t;
    std::vector<long long> off;
    size_t n;
    zero_test_table(&t, off, &n);
    std::vector<float> w0(n), g(n), ref_w, ref_m(n, 0.f), ref_v(n, 0.f);
    Rng r;
    rng_seed(&r, 3);
    for (size_t e = 0; e < n; e++) { w0[e] = (float)rng_normal(&r); g[e] = (float)(0.1 * rng_normal(&r)); }
    ref_w = w0;
    CodaError err;
    ZeroSlice whole;
    zero_slice(n, 0, 1, &whole, &err);
    std::vector<ZeroPiece> p(t.n);
    for (int step = 1; step <= 3; step++) zero_test_adamw(&t, p.data(), zero_pieces(&t, off.data(), &whole, p.data(), t.n), ref_w.data(),
                                                        g.data(), ref_m.data(), ref_v.data(), step);
    int bad = 0;
    for (int world : {2, 3, 5, 8}) {
        std::vector<float> w = w0, m(n, 0.f), v(n, 0.f);
        for (int step = 1; step <= 3; step++)
            for (int rank = 0; rank < world; rank++) {  // each rank updates its own slice only
                ZeroSlice s;
                zero_slice(n, rank, world, &s, &err);
                const int np = zero_pieces(&t, off.data(), &s, p.data(), t.n);
                zero_test_adamw(&t, p.data(), np, w.data(), g.data(), m.data(), v.data(), step);
            }
        bad += memcmp(w.data(), ref_w.data(), 4 * n) != 0 || memcmp(m.data(), ref_m.data(), 4 * n) != 0 ||
               memcmp(v.data(), ref_v.data(), 4 * n) != 0;
    }
    CHECK(bad == 0, "%d world sizes whose sliced update differs from the whole-buffer update", bad);
    param_table_free(&t);
}

TEST(zero_train_state_reads_back_in_the_slices_of_any_world_size) {
    const int64_t n_train = 1000;  // not a multiple of any slice size below
    size_t nb;
    char* img = ckpt_test_image(n_train, &nb);
    char dir[256], path[300];
    test_mkdtemp(dir, sizeof(dir), "zero_state");
    snprintf(path, sizeof(path), "%s/train_state.bin", dir);
    FILE* f = fopen(path, "wb");
    CHECK(f && fwrite(img, 1, nb, f) == nb, "write");
    if (f) fclose(f);
    const float* want = (const float*)(img + sizeof(TrainStateHeader));
    CodaError err;
    int bad = 0;
    for (int world : {1, 2, 3, 7, 16, 40}) {
        std::vector<float> got(3 * (size_t)n_train, -999.f);
        for (int rank = 0; rank < world; rank++) {
            TrainStateHeader h;
            FILE* fp;
            TrainStateExpect e = ckpt_test_expect(n_train);
            if (train_state_open(path, &e, &h, &fp, &err) != 0) { bad++; continue; }
            ZeroSlice s;
            zero_slice((size_t)n_train, rank, world, &s, &err);
            std::vector<float> a(s.hi - s.lo + 1), b(s.hi - s.lo + 1), c(s.hi - s.lo + 1);
            if (zero_read_train_state_slice(fp, path, n_train, &s, a.data(), b.data(), c.data(), &err) != 0) bad++;
            for (size_t k = 0; k < s.hi - s.lo; k++) {
                got[s.lo + k] = a[k];
                got[n_train + s.lo + k] = b[k];
                got[2 * n_train + s.lo + k] = c[k];
            }
            fclose(fp);
        }
        bad += memcmp(got.data(), want, 12 * (size_t)n_train) != 0;
    }
    CHECK(bad == 0, "%d world sizes did not read the file back exactly", bad);
    ZeroSlice s;
    zero_slice(999, 0, 2, &s, &err);
    FILE* fp = fopen(path, "rb");
    float x[600];
    CHECK(fp && zero_read_train_state_slice(fp, path, n_train, &s, x, x, x, &err) != 0 && strstr(err.msg, "holds 1000"), "%s", err.msg);
    if (fp) fclose(fp);
    free(img);
    test_rmtree(dir);
}
