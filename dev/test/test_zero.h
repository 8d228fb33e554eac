// test_zero.h — llmc/zero.h, the host side of ZeRO-1: slice plans for any world size (model sizes
// not divisible by it, more ranks than elements), the trainable pieces inside each slice, an AdamW
// update done slice by slice equal to the whole-buffer update bit for bit, and a train_state.bin
// read back in the slices of any N (a run resumes with another number of ranks); the same file
// written by N ranks together (each its slices, at their offsets, every byte once), equal to the
// one-writer file. And the AdamW segment tables built from the layout and from each slice, also
// into a compact staging buffer (llmc/adamw_table.h, llmc/ddp.cuh's step).
#pragma once
#include <sys/wait.h>
#include <vector>
#include "../../llmc/adamw_table.h"
#include "../../llmc/zero.h"
#include "test_checkpoint.h"  // ckpt_test_image
#include "test_layouts.h"     // zero_test_config

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

// zero_test_config(odd)'s model (dev/test/test_layouts.h; odd = 1 is also the GPU test's ZeRO case) with
// phase 1's policy (base frozen, attention adapters trainable), its table (odd = 0: fp32, 1: bf16) and
// compact offsets: trainable tensors of many sizes with alignment gaps between them.
static void zero_test_layout(ParamTable* t, std::vector<long long>& off, size_t* n_train, int odd) {
    ModelConfig c = zero_test_config(odd);
    param_table_build(t, &c, odd ? DT_BF16 : DT_F32);
    param_table_set_trainable(t, TRAIN_ATTENTION);
    off.resize(t->n);
    *n_train = param_compact_offsets(t, off.data());
}
static void zero_test_table(ParamTable* t, std::vector<long long>& off, size_t* n_train) { zero_test_layout(t, off, n_train, 0); }

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

// ---------------------------------------------------------------- AdamW segment tables (adamw_table.h)
// The whole table: one segment per trainable tensor at its compact and floatX offsets, with its
// group. The table of each rank's slice, shifted by the slice's lo, holds exactly the whole table's
// (element, floatX index, group) triples, each element once, gaps in none; its pieces of tensors whose
// length is not a multiple of 4 are marked scalar (and only those); world 1 gives the whole table.
TEST(adamw_segment_tables_match_the_layout_and_every_zero_slice) {
    int bad = 0, cut_odd = 0;
    for (int layout = 0; layout < 2; layout++) {
        ParamTable t;
        std::vector<long long> off;
        size_t n;
        zero_test_layout(&t, off, &n, layout);
        std::vector<AdamWSegment> whole(t.n);
        const int nw = adamw_segments_from_table(&t, off.data(), whole.data(), t.n);
        CodaError err;
        CHECK(adamw_segments_check(whole.data(), nw, n, &err) == 0, "%s", err.msg);
        std::vector<long long> want_x(n, -2);  // floatX index of each element (-1: none, -2: in no segment)
        std::vector<int> want_g(n, -1);
        int k = 0;
        for (int i = 0; i < t.n; i++) {
            if (off[i] < 0) continue;
            const AdamWSegment& s = whole[k++];
            bad += s.begin != (size_t)off[i] || s.end != (size_t)off[i] + t.tensors[i].numel || s.param_offset != (long long)t.tensors[i].offset ||
                   s.group != (int)PARAM_KINDS[t.tensors[i].kind].group || s.scalar != 0;
            for (size_t e = s.begin; e < s.end; e++) { want_x[e] = s.param_offset + (long long)(e - s.begin); want_g[e] = s.group; }
        }
        bad += k != nw;
        for (int world : {1, 2, 3, 5, 8, 12}) {
            std::vector<long long> got_x(n, -2);
            std::vector<int> got_g(n, -1), seen(n, 0);
            for (int r = 0; r < world; r++) {
                ZeroSlice sl;
                zero_slice(n, r, world, &sl, &err);
                std::vector<AdamWSegment> seg(t.n);
                std::vector<ZeroPiece> p(t.n);
                const int ns = adamw_segments_from_slice(&t, off.data(), &sl, seg.data(), t.n);
                bad += ns > t.n || ns != zero_pieces(&t, off.data(), &sl, p.data(), t.n);
                if (adamw_segments_check(seg.data(), ns, sl.hi - sl.lo, &err) != 0) { bad++; printf("  %s\n", err.msg); }
                for (int q = 0; q < ns && q < t.n; q++) {
                    const AdamWSegment& s = seg[q];
                    const size_t numel = t.tensors[p[q].tensor].numel;
                    bad += s.scalar != (numel % 4 != 0);
                    cut_odd += s.scalar && s.end - s.begin < numel;
                    for (size_t e = s.begin; e < s.end; e++) {
                        const size_t a = sl.lo + e;
                        seen[a]++;
                        got_x[a] = s.param_offset + (long long)(e - s.begin);
                        got_g[a] = s.group;
                    }
                }
                if (world == 1) {
                    bad += ns != nw;
                    for (int q = 0; q < ns && q < nw; q++)
                        bad += seg[q].begin != whole[q].begin || seg[q].end != whole[q].end || seg[q].param_offset != whole[q].param_offset ||
                               seg[q].group != whole[q].group;
                }
            }
            for (size_t e = 0; e < n; e++) bad += got_x[e] != want_x[e] || got_g[e] != want_g[e] || seen[e] > 1;
        }
        param_table_free(&t);
    }
    CHECK(bad == 0, "%d segment-table violations", bad);
    CHECK(cut_odd > 0, "some slice should cut a tensor whose length is not a multiple of 4");
}

// Chunks partition every segment (full chunks then one partial, counted from begin), the prefix sums
// count them, and adamw_segments_check refuses what the kernel cannot run.
TEST(adamw_segment_chunks_partition_every_segment) {
    const AdamWSegment odd[] = {{0, 1, 0, 0, 0}, {3, 20003, 8, 0, 0}, {20004, 20010, -1, 1, 0}, {20012, 20012 + 8192, 0, 2, 0},
                                {28204, 28204 + 8193, 5, 3, 0}, {36397, 36398 + 3 * 8192, -1, 1, 1}};
    const int n = (int)(sizeof(odd) / sizeof(odd[0]));
    std::vector<size_t> start(n + 1);
    const size_t total = adamw_chunk_starts(odd, n, start.data());
    const size_t want[] = {1, 3, 1, 1, 2, 4};
    int bad = total != 12;
    for (int i = 0; i < n; i++) {
        const size_t nc = start[i + 1] - start[i];
        bad += nc != want[i] || nc != adamw_segment_chunks(&odd[i]);
        size_t next = odd[i].begin;
        for (size_t k = 0; k < nc; k++) {
            size_t lo, hi;
            adamw_chunk_range(&odd[i], k, &lo, &hi);
            bad += lo != next || hi <= lo || hi - lo > ADAMW_CHUNK || (k + 1 < nc && hi - lo != ADAMW_CHUNK);
            next = hi;
        }
        bad += next != odd[i].end;
    }
    CHECK(bad == 0, "%d chunk violations", bad);
    CodaError err;
    CHECK(adamw_segments_check(odd, n, 36398 + 3 * 8192, &err) == 0, "%s", err.msg);
    CHECK(adamw_segments_check(odd, n, 36398 + 3 * 8192 - 1, &err) != 0 && strstr(err.msg, "outside"), "%s", err.msg);
    const AdamWSegment overlap[] = {{0, 10, 0, 0, 0}, {9, 12, 20, 0, 0}}, empty[] = {{4, 4, 0, 0, 0}}, group[] = {{0, 4, 0, GROUP_COUNT, 0}},
                       poff[] = {{0, 4, -2, 0, 0}};
    CHECK(adamw_segments_check(overlap, 2, 100, &err) != 0 && strstr(err.msg, "overlaps"), "%s", err.msg);
    CHECK(adamw_segments_check(empty, 1, 100, &err) != 0 && strstr(err.msg, "empty"), "%s", err.msg);
    CHECK(adamw_segments_check(group, 1, 100, &err) != 0 && strstr(err.msg, "group"), "%s", err.msg);
    CHECK(adamw_segments_check(poff, 1, 100, &err) != 0 && strstr(err.msg, "param_offset"), "%s", err.msg);
}

// The ZeRO step of llmc/ddp.cuh, simulated on the host: each rank's ADAMW_PARAM_COMPACT table puts
// the floatX copy of slice element i at i of its part [r*shard, (r+1)*shard) of the padded staging
// buffer, so after the all-gather (the parts in rank order) every trainable element sits at its
// compact position; one copy per trainable tensor (staging[train_offset, +numel) -> params[offset,
// +numel)) then lands each value where the whole table's update writes it. The compact table is
// the ADAMW_PARAM_TABLE table of the same slice but for param_offset (= begin), and no two ranks
// write the same staging element.
TEST(adamw_compact_slice_tables_stage_every_value_at_its_compact_position) {
    int bad = 0;
    for (int layout = 0; layout < 2; layout++) {
        ParamTable t;
        std::vector<long long> off;
        size_t n;
        zero_test_layout(&t, off, &n, layout);
        for (int world : {1, 2, 3, 5, 8, 12}) {
            CodaError err;
            ZeroSlice s0;
            zero_slice(n, 0, world, &s0, &err);
            std::vector<long long> staging(s0.padded, -1);  // the compact position each staged value came from
            std::vector<long long> params(t.total, -1), want(t.total, -1);
            for (int r = 0; r < world; r++) {
                ZeroSlice sl;
                zero_slice(n, r, world, &sl, &err);
                std::vector<AdamWSegment> c(t.n), w(t.n);
                const int nc = adamw_segments_from_slice_to(&t, off.data(), &sl, ADAMW_PARAM_COMPACT, c.data(), t.n);
                const int nw = adamw_segments_from_slice(&t, off.data(), &sl, w.data(), t.n);
                bad += nc != nw;
                if (adamw_segments_check(c.data(), nc, sl.hi - sl.lo, &err) != 0) { bad++; printf("  %s\n", err.msg); }
                for (int q = 0; q < nc && q < nw && q < t.n; q++) {
                    bad += c[q].begin != w[q].begin || c[q].end != w[q].end || c[q].group != w[q].group || c[q].scalar != w[q].scalar;
                    bad += c[q].param_offset != (long long)c[q].begin;
                    for (size_t e = c[q].begin; e < c[q].end; e++) {
                        const size_t at = (size_t)r * sl.shard + (size_t)c[q].param_offset + (e - c[q].begin);  // the rank's part
                        bad += at >= s0.padded || staging[at] != -1;
                        if (at < s0.padded) staging[at] = (long long)(sl.lo + e);
                        want[(size_t)w[q].param_offset + (e - w[q].begin)] = (long long)(sl.lo + e);  // the whole-buffer update's target
                    }
                }
            }
            for (int i = 0; i < t.n; i++)  // the per-tensor copies out of the gathered buffer
                if (off[i] >= 0)
                    for (size_t j = 0; j < t.tensors[i].numel; j++) {
                        params[t.tensors[i].offset + j] = staging[(size_t)off[i] + j];
                        bad += want[t.tensors[i].offset + j] != (long long)((size_t)off[i] + j);  // every element updated, once
                    }
            for (size_t e = 0; e < n; e++) bad += staging[e] != -1 && staging[e] != (long long)e;  // gathered = compact order
            bad += params != want;
        }
        param_table_free(&t);
    }
    CHECK(bad == 0, "%d compact staging violations", bad);
}

// ---------------------------------------------------------------- train_state.bin written by N ranks
// The byte ranges rank r writes (zero_train_state_offset of its [lo, hi) in each of the three arrays)
// cover the file's arrays exactly once and never the header, for world sizes that do not divide
// n_train.
TEST(zero_train_state_slices_write_every_byte_once) {
    int bad = 0;
    for (int64_t n_train : {1000, 999, 64 * 7 + 5}) {
        const uint64_t bytes = train_state_file_bytes(n_train);
        for (int world : {1, 2, 3, 5}) {
            std::vector<unsigned char> writes(bytes, 0);
            for (int r = 0; r < world; r++) {
                CodaError err;
                ZeroSlice s;
                zero_slice((size_t)n_train, r, world, &s, &err);
                for (int a = 0; a < 3; a++) {
                    const uint64_t at = zero_train_state_offset(n_train, a, s.lo);
                    bad += at % 4 != 0 || at + 4 * (s.hi - s.lo) > bytes;
                    for (uint64_t b = at; b < at + 4 * (s.hi - s.lo) && b < bytes; b++) writes[b]++;
                }
            }
            for (uint64_t b = 0; b < bytes; b++) bad += writes[b] != (b < sizeof(TrainStateHeader) ? 0 : 1);
        }
    }
    CHECK(bad == 0, "%d bytes written never, twice, or in the header", bad);
}

// A rank's values from a whole-state image (the arrays of a sealed file), as ddp.cuh's source reads
// the device buffers.
typedef struct {
    const float* arrays;  // [3][n_train]
    int64_t n_train;
    size_t lo;
} ZeroTestSource;
static int zero_test_source(void* ctx, int a, size_t at, size_t n, float* dst, CodaError* err) {
    (void)err;
    const ZeroTestSource* s = (const ZeroTestSource*)ctx;
    memcpy(dst, s->arrays + (size_t)a * (size_t)s->n_train + s->lo + at, sizeof(float) * n);
    return 0;
}

// Three ranks (processes) write one train state together: rank 0 creates it, each writes its slices
// (through a 7-float buffer, so the chunks do not align with anything), rank 0 seals it. The file is
// byte for byte the one-writer image (checksum included), and two ranks read it back exactly.
TEST(zero_train_state_written_by_three_ranks_reads_back_in_two) {
    const int64_t n_train = 1000;
    size_t nb;
    char* img = ckpt_test_image(n_train, &nb);  // the one-writer file, sealed
    TrainStateHeader h;
    memcpy(&h, img, sizeof(h));
    char dir[256], path[300];
    test_mkdtemp(dir, sizeof(dir), "zero_write");
    snprintf(path, sizeof(path), "%s/train_state.bin", dir);
    CodaError err;
    ZeroSlice s1;
    zero_slice((size_t)n_train, 1, 3, &s1, &err);
    CHECK(zero_train_state_write_slice(path, &s1, zero_test_source, NULL, 0, &err) != 0 && strstr(err.msg, "rank 0 creates it"), "%s", err.msg);
    CHECK(zero_train_state_create(path, &h, &err) == 0, "%s", err.msg);
    const float* arrays = (const float*)(img + sizeof(TrainStateHeader));
    const int world = 3;
    pid_t kids[world];
    for (int r = 0; r < world; r++) {
        fflush(stdout);
        kids[r] = fork();
        if (kids[r] == 0) {
            ZeroSlice s;
            CodaError e;
            zero_slice((size_t)n_train, r, world, &s, &e);
            ZeroTestSource src = {arrays, n_train, s.lo};
            usleep((useconds_t)(20000 * (world - r)));  // the last rank first
            _exit(zero_train_state_write_slice(path, &s, zero_test_source, &src, 7, &e) == 0 ? 0 : 1);
        }
    }
    for (int r = 0; r < world; r++) {
        int st = 0;
        CHECK(waitpid(kids[r], &st, 0) == kids[r] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "rank %d's write failed", r);
    }
    CHECK(zero_train_state_finish(path, &err) == 0, "%s", err.msg);
    FILE* f = fopen(path, "rb");
    std::vector<char> got(nb + 1);
    const size_t n_read = f ? fread(got.data(), 1, nb + 1, f) : 0;
    if (f) fclose(f);
    CHECK(n_read == nb && memcmp(got.data(), img, nb) == 0, "the 3-rank file (%zu bytes) differs from the one-writer file (%zu)", n_read, nb);
    TrainStateExpect e = ckpt_test_expect(n_train);
    CHECK(train_state_parse(got.data(), n_read, path, &e, NULL, &err) == 0, "%s", err.msg);
    uint64_t sum = 0;
    TrainStateHeader hh;
    CHECK(zero_train_state_checksum(path, &hh, &sum, &err) == 0 && sum == (uint64_t)h.checksum, "streamed checksum");
    std::vector<float> back(3 * (size_t)n_train, -999.f);
    for (int r = 0; r < 2; r++) {  // resumed by two ranks
        ZeroSlice s;
        zero_slice((size_t)n_train, r, 2, &s, &err);
        FILE* fp;
        if (train_state_open(path, &e, &hh, &fp, &err) != 0) { CHECK(0, "%s", err.msg); continue; }
        const size_t n = s.hi - s.lo;
        CHECK(zero_read_train_state_slice(fp, path, n_train, &s, back.data() + s.lo, back.data() + n_train + s.lo,
                                          back.data() + 2 * n_train + s.lo, &err) == 0 && n > 0, "%s", err.msg);
        fclose(fp);
    }
    CHECK(memcmp(back.data(), arrays, 12 * (size_t)n_train) == 0, "two ranks did not read back what three wrote");
    // a file of another size is refused before anything is written
    FILE* g = fopen(path, "r+b");
    CHECK(g && ftruncate(fileno(g), 1000) == 0, "truncate");
    if (g) fclose(g);
    CHECK(zero_train_state_write_slice(path, &s1, zero_test_source, NULL, 0, &err) != 0 && strstr(err.msg, "rank 0 created"), "%s", err.msg);
    free(img);
    test_rmtree(dir);
}
