// adamw.cu — llmc/adamw.cuh: one step of the fp32 AdamW update over a table of trainable tensors, in
// llm.c's numbered versions:
//   1  one adamw_update launch per segment (the per-tensor kernel, what gpu_model_update launched before)
//   2  adamw_table_update: the whole table in one launch (what gpu_model_update launches now)
// Usage: ./adamw [version]   (no version: both)
// First a CPU check: both versions against a double-precision twin of model_adamw_step on a small
// uneven table (odd lengths, unaligned begins, a floatX copy out of phase, segments without one),
// and version 2 == version 1 bit for bit over 3 steps. Then ms and GB/s at the Mistral-7B phase-1
// table (the segments gpu_model_create builds: q/k/v/o, theta and lambda_proj of 32 layers, 224
// tensors, 1.35 G fp32 elements) and at one 100M tensor, each next to a device-to-device
// cudaMemcpyAsync that moves the same bytes (copies half of them: read + write), the bandwidth
// ceiling an element-wise pass can reach.
// Bytes per element: read master, grad, m, v (16) + write master, m, v (12) + the floatX copy.
#include "bench_common.cuh"
#include "llmc/adamw.cuh"
#include "llmc/presets.h"

static const float LR[GROUP_COUNT] = {3e-4f, 1e-3f, 2e-3f, 1e-2f}, WD[GROUP_COUNT] = {0.1f, 0.0f, 0.1f, 0.0f};
static const float B1 = 0.9f, B2 = 0.95f, EPS = 1e-8f;

struct State {
    float *p, *g, *m, *v;  // master, grad, adam m, adam v: n each
    floatX* x;             // the floatX parameters: nx
    size_t n, nx;
};
static State state_alloc(size_t n, size_t nx) {
    State s;
    s.n = n; s.nx = nx;
    s.p = bench_alloc<float>(n, 1); s.g = bench_alloc<float>(n, 2); s.m = bench_alloc<float>(n, 3, 0.1f);
    s.v = bench_alloc<float>(n, 4, 0.01f, 0.01f);  // >= 0
    s.x = bench_alloc<floatX>(nx, 5);
    return s;
}
static void state_copy(State* dst, const State* src) {
    float* d[4] = {dst->p, dst->g, dst->m, dst->v};
    const float* s[4] = {src->p, src->g, src->m, src->v};
    for (int k = 0; k < 4; k++) cudaCheck(cudaMemcpy(d[k], s[k], src->n * sizeof(float), cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemcpy(dst->x, src->x, src->nx * sizeof(floatX), cudaMemcpyDeviceToDevice));
}
static void state_free(State* s) {
    void* p[5] = {s->p, s->g, s->m, s->v, s->x};
    for (int k = 0; k < 5; k++) cudaCheck(cudaFree(p[k]));
}

static void run_version(int version, const AdamWTable* t, State* s, float grad_scale, int step) {
    if (version == 1) adamw_table_update_per_segment(&g_ctx, t, s->p, s->x, s->g, s->m, s->v, LR, WD, B1, B2, EPS, grad_scale, step);
    else adamw_table_update(&g_ctx, t, s->p, s->x, s->g, s->m, s->v, LR, WD, B1, B2, EPS, grad_scale, step);
}
// Bytes one step moves.
static double table_bytes(const AdamWTable* t) {
    double b = 0;
    for (int k = 0; k < t->n_seg; k++)
        b += (28.0 + (t->seg[k].param_offset >= 0 ? sizeof(floatX) : 0)) * (double)(t->seg[k].end - t->seg[k].begin);
    return b;
}

// |got - ref| <= tol + eps*|ref| everywhere (elements outside the segments: ref = their input, exactly).
static int check_close(const char* what, const std::vector<float>& got, const std::vector<float>& ref, double tol, double eps) {
    double maxerr = 0;
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        double d = fabs((double)got[i] - ref[i]);
        maxerr = fmax(maxerr, d);
        if (!(d <= tol + eps * fabs((double)ref[i]))) { if (bad < 5) printf("  mismatch %s[%zu]: %g vs %g\n", what, i, got[i], ref[i]); bad++; }
    }
    printf("check %-34s n=%-9zu max|diff|=%.3g %s\n", what, ref.size(), maxerr, bad ? "FAIL" : "ok");
    return bad == 0;
}
static int same_bytes(const char* what, const void* a, const void* b, size_t bytes) {
    std::vector<unsigned char> ha(bytes), hb(bytes);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(ha.data(), a, bytes, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(hb.data(), b, bytes, cudaMemcpyDeviceToHost));
    const int same = memcmp(ha.data(), hb.data(), bytes) == 0;
    printf("check %-34s %s\n", what, same ? "ok" : "FAIL (not bitwise equal)");
    return same;
}

// The CPU check on a small uneven table; returns 0 on success.
static int cpu_check(void) {
    const AdamWSegment segs[] = {
        {0, 1, 0, 0, 0},            {3, 20003, 8, 0, 0},          {20004, 20010, -1, 1, 0}, {20012, 60012, 20020, 1, 0},
        {60012, 100013, 60100, 2, 0}, {100016, 150016, 100101, 3, 0}, {150016, 250016, -1, 2, 0}, {250020, 250021, 250200, 3, 0},
    };
    const int ns = (int)(sizeof(segs) / sizeof(segs[0]));
    const size_t n = 250032, nx = 250300;
    AdamWTable t;
    adamw_table_create(&t, segs, ns, n);
    State init = state_alloc(n, nx), s = state_alloc(n, nx), s1 = state_alloc(n, nx);
    auto hp = bench_host(init.p, n), hg = bench_host(init.g, n), hm = bench_host(init.m, n), hv = bench_host(init.v, n),
         hx = bench_host(init.x, nx);
    const int step = 3;
    const float gs = 0.7f;
    const double bc1 = 1 - pow((double)B1, step), bc2 = 1 - pow((double)B2, step);
    std::vector<float> rp = hp, rm = hm, rv = hv, rx = hx;  // twin of model_adamw_step, double arithmetic
    for (int k = 0; k < ns; k++) {
        const AdamWSegment& sg = segs[k];
        const double lr = LR[sg.group], wd = WD[sg.group];
        for (size_t i = sg.begin; i < sg.end; i++) {
            double gg = (double)hg[i] * gs, mm = B1 * (double)hm[i] + (1 - (double)B1) * gg, vv = B2 * (double)hv[i] + (1 - (double)B2) * gg * gg;
            double pp = hp[i] * (1 - lr * wd) - lr * (mm / bc1) / (sqrt(vv / bc2) + EPS);
            rp[i] = (float)pp; rm[i] = (float)mm; rv[i] = (float)vv;
            if (sg.param_offset >= 0) rx[sg.param_offset + (i - sg.begin)] = (float)pp;
        }
    }
    int ok = 1;
    const double eps_x = sizeof(floatX) == 2 ? 1.0 / 256 : 1e-5;
    for (int version = 1; version <= 2; version++) {
        printf("version %d (%s):\n", version, version == 1 ? "one adamw_update per segment" : "one launch over the table");
        state_copy(&s, &init);
        run_version(version, &t, &s, gs, step);
        ok &= check_close("master", bench_host(s.p, n), rp, 1e-6, 1e-5);
        ok &= check_close("m", bench_host(s.m, n), rm, 1e-6, 1e-5);
        ok &= check_close("v", bench_host(s.v, n), rv, 1e-9, 1e-5);
        ok &= check_close("param (floatX)", bench_host(s.x, nx), rx, 1e-6, eps_x);
    }
    // version 2 == version 1, bit for bit, over 3 steps
    state_copy(&s, &init);
    state_copy(&s1, &init);
    for (int k = 1; k <= 3; k++) {
        run_version(1, &t, &s1, k == 2 ? 0.37f : 1.0f, k);
        run_version(2, &t, &s, k == 2 ? 0.37f : 1.0f, k);
    }
    ok &= same_bytes("v2 == v1: master", s.p, s1.p, n * sizeof(float));
    ok &= same_bytes("v2 == v1: m", s.m, s1.m, n * sizeof(float));
    ok &= same_bytes("v2 == v1: v", s.v, s1.v, n * sizeof(float));
    ok &= same_bytes("v2 == v1: param (floatX)", s.x, s1.x, nx * sizeof(floatX));
    state_free(&init); state_free(&s); state_free(&s1);
    adamw_table_free(&t);
    return ok ? 0 : 1;
}

// Times the selected versions on table t over buffers of n fp32 / nx floatX elements, then the
// memcpy of the same bytes (after freeing the AdamW state: 7B's 36 GB and the copy's 40 GB need not
// fit together), and prints the rows.
static void bench_table(const char* name, const AdamWTable* t, size_t n, size_t nx, int version) {
    const double bytes = table_bytes(t);
    double ms[3] = {0, 0, 0};
    {
        State s = state_alloc(n, nx);
        for (int ver = 1; ver <= 2; ver++) {
            if (version && ver != version) continue;
            int step = 1;
            ms[ver] = bench_ms([&] { run_version(ver, t, &s, 1.0f, ++step); }, 5);
        }
        state_free(&s);
    }
    const size_t copy = (size_t)(bytes / 2) & ~(size_t)255;  // read + write = the update's bytes
    char* buf = (char*)cuda_malloc_or_die(2 * copy, "memcpy reference");
    const double mc = bench_ms([&] { cudaCheck(cudaMemcpyAsync(buf + copy, buf, copy, cudaMemcpyDeviceToDevice, g_ctx.stream)); }, 5);
    cudaCheck(cudaFree(buf));
    const double mc_gbs = 2.0 * copy / mc * 1e-6;
    for (int ver = 1; ver <= 2; ver++) {
        if (!ms[ver]) continue;
        const double gbs = bytes / ms[ver] * 1e-6;
        printf("| %-22s | %4d | %13zu | %-18s | %8.3f | %6.0f | %5.3f |\n", name, t->n_seg, t->n_updated,
               ver == 1 ? "v1 per-segment" : "v2 one launch", ms[ver], gbs, gbs / mc_gbs);
    }
    printf("| %-22s | %4s | %13s | %-18s | %8.3f | %6.0f | %5.3f |\n", name, "", "", "memcpy D2D (ref)", mc, mc_gbs, 1.0);
}

int main(int argc, char** argv) {
    const int version = bench_int_arg(argc, argv, 1, "version (1: per-segment launches, 2: one launch, 0: both)", 0, 0, 2);
    bench_init();
    if (cpu_check() != 0) return 1;

    // the Mistral-7B phase-1 table, built as train_coda builds it (the phase-1 swap, TRAIN_ATTENTION)
    ModelConfig cfg;
    CodaError err;
    if (model_config_from("mistral-7b", &cfg, &err) != 0) coda_fatal("%s", err.msg);
    cfg.differential = 1;
    cfg.bounded = 0;
    ParamTable pt;
    param_table_build(&pt, &cfg, FLOATX_DTYPE);
    param_table_set_trainable(&pt, TRAIN_ATTENTION);
    std::vector<long long> off(pt.n);
    const size_t n_train = param_compact_offsets(&pt, off.data());
    std::vector<AdamWSegment> seg(pt.n);
    const int ns = adamw_segments_from_table(&pt, off.data(), seg.data(), pt.n);
    AdamWTable t7;
    adamw_table_create(&t7, seg.data(), ns, n_train);
    printf("\nMistral-7B phase 1: %d trainable tensors, %zu elements (%zu with alignment gaps), %zu CTAs of %zu; "
           "floatX buffer %zu elements\n", ns, t7.n_updated, n_train, t7.n_chunks, ADAMW_CHUNK, pt.total);
    printf("\n| %-22s | %4s | %13s | %-18s | %8s | %6s | %5s |\n", "table", "segs", "elements", "version", "ms", "GB/s", "/copy");
    printf("|%s|------|---------------|--------------------|----------|--------|-------|\n", "------------------------");
    bench_table("Mistral-7B phase 1", &t7, n_train, pt.total, version);
    adamw_table_free(&t7);
    param_table_free(&pt);

    // one 100M tensor (one segment: v1 is a single adamw_update)
    const size_t n = 100000000;
    const AdamWSegment one = {0, n, 0, 0, 0};
    AdamWTable t1;
    adamw_table_create(&t1, &one, 1, n);
    bench_table("one tensor, 100M", &t1, n, n, version);
    adamw_table_free(&t1);
    return 0;
}
