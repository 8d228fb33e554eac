// test_gpu_kernels.cuh — GPU kernel launchers (llmc/matmul, rmsnorm, rope, swiglu, encoder, adamw,
// global_norm, elementwise) against the CPU reference (llmc/cpu/reference.h, *_f32) or, where the
// CPU model has no stand-alone twin (AdamW, embedding, norms, residual), plain loops written here
// that mirror the CPU model's arithmetic. Every test also runs its launcher twice on the same inputs
// and requires bitwise-identical outputs (the trainer must be reproducible).
//
// Inputs are random (seeded), drawn in fp32 and rounded to floatX before use, so that the CPU sees
// exactly the values the GPU sees; the only differences left are the GPU's summation order and its
// rounding of outputs to floatX. Tolerances (|gpu - ref| <= atol + rtol*|ref| per element, with atol
// scaled by max|ref| of the tensor):
//   FP32 build: rtol 1e-5, atol 2e-6*max|ref|  (summation order over up to 14336 terms; ~1e-6 seen)
//   BF16 build: one rounding to bf16 costs up to u*|x| with u = 2^-8 (8 significant bits): rtol u
//               for the kernels here (fp32 math, one final rounding; worst seen 0.96 u), 2u for
//               cuBLASLt outputs, atol 1e-4*max|ref| for near-zero values produced by
//               cancellation. Where cuBLASLt rounds the product before adding a bias or the
//               accumulated C (bias epilogue, accumulate: seen on H100), the error is up to
//               u*(|product| + |result|), so |ref| is replaced by max(|ref|, |product| + |bias or C|).
//               fp32 outputs (dweight, dbias, demb, AdamW state) of
//               bf16 inputs keep the FP32 tolerances.
// Tests are named gpu_kernel_*: run them alone with ./test_coda gpu_kernel
#pragma once
#include <cuda_runtime.h>
#include "../../llmc/cpu/reference.h"
#include "../../llmc/cuda_common.cuh"
#include "../../llmc/matmul.cuh"
#include "../../llmc/rmsnorm.cuh"
#include "../../llmc/rope.cuh"
#include "../../llmc/swiglu.cuh"
#include "../../llmc/encoder.cuh"
#include "../../llmc/adamw.cuh"
#include "test_layouts.h"  // zero_test_config
#include "../../llmc/optim.h"  // lr_schedule
#include "../../llmc/global_norm.cuh"
#include "../../llmc/elementwise.cuh"

#if defined(ENABLE_FP32)
static const double TGK_RTOL = 1e-5, TGK_ATOL = 2e-6, TGK_RTOL_MM = 1e-5;
#else
static const double TGK_RTOL = 1.0 / 256.0, TGK_ATOL = 1e-4, TGK_RTOL_MM = 1.0 / 128.0;
#endif
static const double TGK_RTOL32 = 1e-5, TGK_ATOL32 = 2e-6;  // fp32 outputs

static GpuContext* tgk_ctx(void) {
    static GpuContext ctx;
    static int init = 0;
    if (!init) { gpu_context_init(&ctx); init = 1; }
    return &ctx;
}

static float tgk_round(float x) { return sizeof(floatX) == 2 ? round_bf16(x) : x; }

// n random values of mean 0 and standard deviation `scale` (uniform on [-sqrt(3), sqrt(3))*scale: cheap
// enough for the 131M-element embedding tables), rounded to floatX precision.
static float* tgk_randn(size_t n, uint64_t seed, double scale) {
    float* h = (float*)coda_malloc_or_die(n * sizeof(float), "test input");
    Rng r;
    rng_seed(&r, seed);
    double a = 1.7320508075688772 * scale;
    for (size_t i = 0; i < n; i++) h[i] = tgk_round((float)(a * (2.0 * rng_uniform(&r) - 1.0)));
    return h;
}
static floatX* tgk_upload(const float* h, size_t n) {
    floatX* d = (floatX*)cuda_malloc_or_die(n * sizeof(floatX), "test tensor");
    host_to_floatX(d, h, n);
    return d;
}
static float* tgk_upload32(const float* h, size_t n) {
    float* d = (float*)cuda_malloc_or_die(n * sizeof(float), "test tensor");
    cudaCheck(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static float* tgk_download(const floatX* d, size_t n) {
    float* h = (float*)coda_malloc_or_die(n * sizeof(float), "test output");
    cudaCheck(cudaDeviceSynchronize());
    floatX_to_host(h, d, n);
    return h;
}
static float* tgk_download32(const float* d, size_t n) {
    float* h = (float*)coda_malloc_or_die(n * sizeof(float), "test output");
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}
// Raw bytes of a device buffer (for the determinism memcmp).
static void* tgk_bytes(const void* d, size_t bytes) {
    void* h = coda_malloc_or_die(bytes, "test bytes");
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
    return h;
}
static void tgk_poison(void* d, size_t bytes) { cudaCheck(cudaMemset(d, 0x7f, bytes)); }  // NaN-ish garbage

// Element-wise |got - ref| <= atol*max|ref| + rtol*max(|ref|, mag[i]); prints the worst element and
// the relative L2 error; fails the test (through CHECK) on any violation or NaN. mag (may be NULL) is
// the size of the terms that were rounded separately (bf16 epilogues: product and bias / C).
static void tgk_compare(const char* what, const float* got, const float* ref, size_t n, double atol, double rtol,
                        const float* mag = NULL) {
    double maxref = 0, num = 0, den = 0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs((double)ref[i]));
    double abs_tol = atol * (maxref > 0 ? maxref : 1.0);
    size_t bad = 0, worst = 0;
    double worst_ratio = 0;
    for (size_t i = 0; i < n; i++) {
        double scale = fabs((double)ref[i]);
        if (mag && mag[i] > scale) scale = mag[i];
        double d = fabs((double)got[i] - (double)ref[i]), tol = abs_tol + rtol * scale;
        num += d * d;
        den += (double)ref[i] * ref[i];
        double ratio = d / tol;
        if (!(d <= tol)) { bad++; if (!(ratio <= worst_ratio)) { worst_ratio = ratio; worst = i; } }
        else if (ratio > worst_ratio) { worst_ratio = ratio; worst = i; }
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("    %-34s n=%-9zu rel_l2=%.2e worst=%.2f of tol (i=%zu got %.7g ref %.7g)%s\n", what, n, rel, worst_ratio, worst,
           got[worst], ref[worst], bad ? " FAIL" : "");
    CHECK(bad == 0, "%s: %zu of %zu elements out of tolerance (atol %.2g*max|ref|, rtol %.2g)", what, bad, n, atol, rtol);
}
static void tgk_same_bytes(const char* what, const void* a, const void* b, size_t bytes) {
    int same = memcmp(a, b, bytes) == 0;
    if (!same) printf("    %s: NOT bitwise reproducible\n", what);
    CHECK(same, "%s: two runs on the same inputs differ", what);
}

// ---------------------------------------------------------------- matmul
// off > 0 shifts every device tensor by `off` elements from its allocation (a tensor slice at an odd
// offset of a parameter table: pointers only element-aligned).
static floatX* tgk_upload_off(const float* h, size_t n, int off) {
    floatX* d = (floatX*)cuda_malloc_or_die((n + off) * sizeof(floatX), "test tensor");
    host_to_floatX(d + off, h, n);
    return d + off;
}
static void tgk_matmul_case(int N, int I, int O, int with_bias, uint64_t seed, int off = 0) {
    GpuContext* ctx = tgk_ctx();
    printf("  matmul N=%d I=%d O=%d bias=%d offset=%d\n", N, I, O, with_bias, off);
    size_t nx = (size_t)N * I, nw = (size_t)O * I, ny = (size_t)N * O;
    float *x = tgk_randn(nx, seed, 1.0), *w = tgk_randn(nw, seed + 1, 1.0 / sqrt((double)I)),
          *b = tgk_randn(O, seed + 2, 0.5), *dy = tgk_randn(ny, seed + 3, 1.0),
          *dx0 = tgk_randn(nx, seed + 4, 0.3), *dw0 = tgk_randn(nw, seed + 5, 0.1), *db0 = tgk_randn(O, seed + 6, 0.1);
    floatX *d_x = tgk_upload_off(x, nx, off), *d_w = tgk_upload_off(w, nw, off), *d_b = tgk_upload_off(b, O, off),
           *d_dy = tgk_upload_off(dy, ny, off);
    floatX *d_y = (floatX*)cuda_malloc_or_die((ny + off) * sizeof(floatX), "y") + off,
           *d_dx = (floatX*)cuda_malloc_or_die((nx + off) * sizeof(floatX), "dx") + off;
    float *d_dw = (float*)cuda_malloc_or_die((nw + off) * sizeof(float), "dw") + off,
          *d_db = (float*)cuda_malloc_or_die((O + off) * sizeof(float), "db") + off;

    // forward
    float* ref = (float*)coda_malloc_or_die(ny * sizeof(float), "ref");
    matmul_forward_f32(ref, x, w, with_bias ? b : NULL, N, I, O);
    tgk_poison(d_y, ny * sizeof(floatX));
    matmul_forward(ctx, d_y, d_x, d_w, with_bias ? d_b : NULL, N, I, O);
    float* got = tgk_download(d_y, ny);
    // BF16: the bias epilogue may round the product to bf16 before adding the bias (see matmul.cuh)
    float* mag = (float*)coda_malloc_or_die(ny * sizeof(float), "magnitudes");
    for (size_t i = 0; i < ny; i++) {
        float bo = with_bias ? b[i % O] : 0.0f;
        mag[i] = fabsf(ref[i] - bo) + fabsf(bo);
    }
    tgk_compare("forward", got, ref, ny, TGK_ATOL, TGK_RTOL_MM, sizeof(floatX) == 2 ? mag : NULL);
    free(mag);
    void* r1 = tgk_bytes(d_y, ny * sizeof(floatX));
    matmul_forward(ctx, d_y, d_x, d_w, with_bias ? d_b : NULL, N, I, O);
    void* r2 = tgk_bytes(d_y, ny * sizeof(floatX));
    tgk_same_bytes("forward", r1, r2, ny * sizeof(floatX));
    free(ref); free(got); free(r1); free(r2);

    // backward input, overwrite and accumulate
    for (int acc = 0; acc <= 1; acc++) {
        float* refx = (float*)coda_calloc_or_die(nx, sizeof(float), "ref dx");
        if (acc) memcpy(refx, dx0, nx * sizeof(float));
        matmul_backward_f32(refx, NULL, NULL, dy, x, w, N, I, O);
        if (acc) host_to_floatX(d_dx, dx0, nx); else tgk_poison(d_dx, nx * sizeof(floatX));
        matmul_backward_input(ctx, d_dx, d_dy, d_w, N, I, O, acc);
        float* gotx = tgk_download(d_dx, nx);
        // BF16 accumulate: the product may be rounded to bf16 before dinp is added (see matmul.cuh)
        float* magx = (float*)coda_malloc_or_die(nx * sizeof(float), "magnitudes");
        for (size_t i = 0; i < nx; i++) magx[i] = acc ? fabsf(refx[i] - dx0[i]) + fabsf(dx0[i]) : fabsf(refx[i]);
        tgk_compare(acc ? "backward_input (accumulate)" : "backward_input", gotx, refx, nx, TGK_ATOL, TGK_RTOL_MM,
                    sizeof(floatX) == 2 ? magx : NULL);
        free(magx);
        void* a1 = tgk_bytes(d_dx, nx * sizeof(floatX));
        if (acc) host_to_floatX(d_dx, dx0, nx);
        matmul_backward_input(ctx, d_dx, d_dy, d_w, N, I, O, acc);
        void* a2 = tgk_bytes(d_dx, nx * sizeof(floatX));
        tgk_same_bytes("backward_input", a1, a2, nx * sizeof(floatX));
        free(refx); free(gotx); free(a1); free(a2);
    }

    // backward weight + bias (accumulating into non-zero fp32 buffers)
    float* refw = (float*)coda_malloc_or_die(nw * sizeof(float), "ref dw");
    float* refb = (float*)coda_malloc_or_die(O * sizeof(float), "ref db");
    memcpy(refw, dw0, nw * sizeof(float));
    memcpy(refb, db0, O * sizeof(float));
    matmul_backward_f32(NULL, refw, refb, dy, x, w, N, I, O);
    void *w1 = NULL, *b1 = NULL;
    for (int rep = 0; rep < 2; rep++) {
        cudaCheck(cudaMemcpy(d_dw, dw0, nw * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_db, db0, O * sizeof(float), cudaMemcpyHostToDevice));
        matmul_backward_weight(ctx, d_dw, d_db, d_dy, d_x, N, I, O, 1);
        if (rep == 0) {
            float *gw = tgk_download32(d_dw, nw), *gb = tgk_download32(d_db, O);
            tgk_compare("backward_weight dweight (fp32)", gw, refw, nw, TGK_ATOL32, TGK_RTOL32);
            tgk_compare("backward_weight dbias (fp32)", gb, refb, O, TGK_ATOL32, TGK_RTOL32);
            free(gw); free(gb);
            w1 = tgk_bytes(d_dw, nw * sizeof(float));
            b1 = tgk_bytes(d_db, O * sizeof(float));
        } else {
            void *w2 = tgk_bytes(d_dw, nw * sizeof(float)), *b2 = tgk_bytes(d_db, O * sizeof(float));
            tgk_same_bytes("backward_weight dweight", w1, w2, nw * sizeof(float));
            tgk_same_bytes("backward_weight dbias", b1, b2, O * sizeof(float));
            free(w2); free(b2);
        }
    }
    free(w1); free(b1); free(refw); free(refb);
    free(x); free(w); free(b); free(dy); free(dx0); free(dw0); free(db0);
    cudaCheck(cudaFree(d_x - off)); cudaCheck(cudaFree(d_w - off)); cudaCheck(cudaFree(d_b - off));
    cudaCheck(cudaFree(d_dy - off)); cudaCheck(cudaFree(d_y - off)); cudaCheck(cudaFree(d_dx - off));
    cudaCheck(cudaFree(d_dw - off)); cudaCheck(cudaFree(d_db - off));
}

GPU_TEST(gpu_kernel_matmul) {
    tgk_matmul_case(133, 4096, 512, 1, 101);   // C = 4096 input, N not a multiple of any tile
    tgk_matmul_case(64, 1024, 3584, 0, 102);   // wide output (an FFN slice)
    tgk_matmul_case(40, 14336, 256, 0, 103);   // the down-projection's long reduction
    tgk_matmul_case(257, 320, 1000, 1, 104);
}
GPU_TEST(gpu_kernel_matmul_odd) {
    tgk_matmul_case(7, 96, 33, 1, 105);        // odd O (ld = 33)
    tgk_matmul_case(19, 77, 40, 1, 106);       // odd I (ld = 77)
    tgk_matmul_case(1, 128, 32, 1, 107);       // one row (decode), a lambda-projection-like shape
    tgk_matmul_case(33, 64, 4, 1, 108, 1);     // pointers only element-aligned (odd table offsets)
    tgk_matmul_case(65, 256, 96, 0, 109, 3);
    tgk_matmul_case(48, 512, 64, 1, 110, 4);   // 8-byte aligned (bf16), bias not 16-byte aligned
}

// ---------------------------------------------------------------- rmsnorm
static void tgk_rmsnorm_case(int N, int C, int with_weight, uint64_t seed) {
    GpuContext* ctx = tgk_ctx();
    printf("  rmsnorm N=%d C=%d weight=%d\n", N, C, with_weight);
    size_t n = (size_t)N * C;
    float eps = 1e-5f;
    float *x = tgk_randn(n, seed, 1.5), *w = tgk_randn(C, seed + 1, 0.3), *dy = tgk_randn(n, seed + 2, 1.0),
          *dx0 = tgk_randn(n, seed + 3, 0.5), *dw0 = tgk_randn(C, seed + 4, 0.2);
    for (int i = 0; i < C; i++) w[i] = tgk_round(1.0f + w[i]);
    const float* wp = with_weight ? w : NULL;
    floatX *d_x = tgk_upload(x, n), *d_w = tgk_upload(w, C), *d_dy = tgk_upload(dy, n), *d_dx = tgk_upload(dx0, n);
    floatX* d_y = (floatX*)cuda_malloc_or_die(n * sizeof(floatX), "y");
    float *d_rstd = (float*)cuda_malloc_or_die(N * sizeof(float), "rstd"), *d_dw = tgk_upload32(dw0, C);
    const floatX* d_wp = with_weight ? d_w : NULL;

    float *ref_y = (float*)coda_malloc_or_die(n * sizeof(float), "ref"), *ref_r = (float*)coda_malloc_or_die(N * sizeof(float), "ref");
    rmsnorm_forward_f32(ref_y, ref_r, x, wp, N, C, eps);
    tgk_poison(d_y, n * sizeof(floatX));
    tgk_poison(d_rstd, N * sizeof(float));
    rmsnorm_forward(ctx, d_y, d_rstd, d_x, d_wp, N, C, eps);
    float *gy = tgk_download(d_y, n), *gr = tgk_download32(d_rstd, N);
    tgk_compare("forward out", gy, ref_y, n, TGK_ATOL, TGK_RTOL);
    tgk_compare("forward rstd (fp32)", gr, ref_r, N, TGK_ATOL32, TGK_RTOL32);
    void* y1 = tgk_bytes(d_y, n * sizeof(floatX));
    rmsnorm_forward(ctx, d_y, d_rstd, d_x, d_wp, N, C, eps);
    void* y2 = tgk_bytes(d_y, n * sizeof(floatX));
    tgk_same_bytes("forward", y1, y2, n * sizeof(floatX));

    // backward: the GPU's rstd (which the trainer saves) and the CPU's agree to ~1 ulp; feed the CPU
    // the GPU's so that the comparison isolates the backward.
    float *ref_dx = (float*)coda_malloc_or_die(n * sizeof(float), "ref"), *ref_dw = (float*)coda_malloc_or_die(C * sizeof(float), "ref");
    memcpy(ref_dx, dx0, n * sizeof(float));
    memcpy(ref_dw, dw0, C * sizeof(float));
    rmsnorm_backward_f32(ref_dx, with_weight ? ref_dw : NULL, dy, x, wp, gr, N, C);
    void *dx1 = NULL, *dw1 = NULL;
    for (int rep = 0; rep < 2; rep++) {
        host_to_floatX(d_dx, dx0, n);
        cudaCheck(cudaMemcpy(d_dw, dw0, C * sizeof(float), cudaMemcpyHostToDevice));
        rmsnorm_backward(ctx, d_dx, with_weight ? d_dw : NULL, d_dy, d_x, d_wp, d_rstd, N, C);
        if (rep == 0) {
            float *gdx = tgk_download(d_dx, n), *gdw = tgk_download32(d_dw, C);
            tgk_compare("backward dinp (+=)", gdx, ref_dx, n, TGK_ATOL, TGK_RTOL);
            tgk_compare("backward dweight (fp32, +=)", gdw, ref_dw, C, TGK_ATOL32, TGK_RTOL32 * 2);
            free(gdx); free(gdw);
            dx1 = tgk_bytes(d_dx, n * sizeof(floatX));
            dw1 = tgk_bytes(d_dw, C * sizeof(float));
        } else {
            void *dx2 = tgk_bytes(d_dx, n * sizeof(floatX)), *dw2 = tgk_bytes(d_dw, C * sizeof(float));
            tgk_same_bytes("backward dinp", dx1, dx2, n * sizeof(floatX));
            tgk_same_bytes("backward dweight", dw1, dw2, C * sizeof(float));
            free(dx2); free(dw2);
        }
    }
    free(dx1); free(dw1); free(y1); free(y2); free(gy); free(gr); free(ref_y); free(ref_r); free(ref_dx); free(ref_dw);
    free(x); free(w); free(dy); free(dx0); free(dw0);
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_dy)); cudaCheck(cudaFree(d_dx));
    cudaCheck(cudaFree(d_y)); cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_dw));
}

GPU_TEST(gpu_kernel_rmsnorm) {
    tgk_rmsnorm_case(1027, 4096, 1, 201);  // the model dim, N odd
    tgk_rmsnorm_case(4099, 128, 1, 202);   // head-norm size (Dh = 128)
    tgk_rmsnorm_case(37, 64, 0, 203);      // Dh = 64, no weight
    tgk_rmsnorm_case(5, 100, 1, 204);      // C % 8 != 0: bf16 scalar path
    tgk_rmsnorm_case(3, 77, 1, 205);       // C odd: scalar path in both builds
    tgk_rmsnorm_case(2, 14336, 1, 206);    // wide row, dweight partials in dynamic smem > 48 KB
}

// ---------------------------------------------------------------- rope
static void tgk_rope_case(int B, int T, long long pos0, int H, int Dh, RopeLayout layout, double base, int bf16pos,
                          uint64_t seed) {
    GpuContext* ctx = tgk_ctx();
    printf("  rope B=%d T=%d pos0=%lld H=%d Dh=%d %s base=%g bf16_positions=%d\n", B, T, pos0, H, Dh,
           layout == ROPE_INTERLEAVED ? "interleaved" : "half-split", base, bf16pos);
    int N = B * T;
    size_t n = (size_t)N * H * Dh;
    float* x = tgk_randn(n, seed, 1.0);
    float *cosv = (float*)coda_malloc_or_die((size_t)T * Dh / 2 * sizeof(float), "cos"),
          *sinv = (float*)coda_malloc_or_die((size_t)T * Dh / 2 * sizeof(float), "sin");
    rope_tables_f32(cosv, sinv, pos0, T, Dh, base, bf16pos);
    for (int sign = 1; sign >= -1; sign -= 2) {
        float* ref = (float*)coda_malloc_or_die(n * sizeof(float), "ref");
        memcpy(ref, x, n * sizeof(float));
        for (int b = 0; b < B; b++) rope_apply_f32(ref + (size_t)b * T * H * Dh, cosv, sinv, T, H, Dh, layout, sign);
        floatX* d_x = tgk_upload(x, n);
        rope_apply(ctx, d_x, N, T, pos0, H, Dh, layout, base, bf16pos, sign);
        float* got = tgk_download(d_x, n);
        // FP32: the GPU's cosf/sinf and glibc's differ by ~1 ulp (and, with bf16_positions, such an
        // ulp can very rarely flip a bf16 rounding of a table entry): atol 1e-6*max|x| covers the first.
        double atol = TGK_ATOL, rtol = TGK_RTOL;
        if (bf16pos) { atol = 8e-3; rtol = 8e-3; }  // allows one bf16 ulp of a table value
        tgk_compare(sign > 0 ? "forward" : "backward (sign -1)", got, ref, n, atol, rtol);
        void* a1 = tgk_bytes(d_x, n * sizeof(floatX));
        host_to_floatX(d_x, x, n);
        rope_apply(ctx, d_x, N, T, pos0, H, Dh, layout, base, bf16pos, sign);
        void* a2 = tgk_bytes(d_x, n * sizeof(floatX));
        tgk_same_bytes("rope", a1, a2, n * sizeof(floatX));
        if (sign > 0 && !bf16pos) {  // inverse: rotating back recovers x
            rope_apply(ctx, d_x, N, T, pos0, H, Dh, layout, base, bf16pos, -1);
            float* back = tgk_download(d_x, n);
            tgk_compare("forward then backward == x", back, x, n, sizeof(floatX) == 4 ? 1e-6 : 2e-2,
                        sizeof(floatX) == 4 ? 1e-5 : 2.0 / 128);
            free(back);
        }
        free(ref); free(got); free(a1); free(a2);
        cudaCheck(cudaFree(d_x));
    }
    free(x); free(cosv); free(sinv);
}

GPU_TEST(gpu_kernel_rope) {
    tgk_rope_case(2, 300, 0, 32, 128, ROPE_HALF_SPLIT, 1e6, 0, 301);       // Mistral-7B v0.3 q
    tgk_rope_case(1, 257, 8000, 8, 128, ROPE_HALF_SPLIT, 1e6, 0, 302);     // k, positions near 8K
    tgk_rope_case(3, 65, 0, 4, 64, ROPE_INTERLEAVED, 1e4, 0, 303);         // Dh = 64, interleaved
    tgk_rope_case(1, 33, 100000, 2, 64, ROPE_INTERLEAVED, 1e4, 0, 304);    // angles 1e5 rad (slow sinf path)
    tgk_rope_case(2, 129, 7000, 4, 128, ROPE_HALF_SPLIT, 1e4, 1, 305);     // the reference's bf16 positions
}

// ---------------------------------------------------------------- swiglu
GPU_TEST(gpu_kernel_swiglu) {
    GpuContext* ctx = tgk_ctx();
    size_t sizes[2] = {(size_t)3 * 14336, (size_t)3 * 14336 + 5};  // vector path, and n % 8 != 0
    for (int t = 0; t < 2; t++) {
        size_t n = sizes[t];
        printf("  swiglu n=%zu\n", n);
        float *g = tgk_randn(n, 401 + t, 3.0), *u = tgk_randn(n, 411 + t, 1.0), *da = tgk_randn(n, 421 + t, 1.0);
        g[0] = tgk_round(-120.0f); g[1] = tgk_round(95.0f);  // saturated sigmoid
        floatX *d_g = tgk_upload(g, n), *d_u = tgk_upload(u, n), *d_da = tgk_upload(da, n);
        floatX *d_a = (floatX*)cuda_malloc_or_die(n * sizeof(floatX), "act"), *d_dg = (floatX*)cuda_malloc_or_die(n * sizeof(floatX), "dg"),
               *d_du = (floatX*)cuda_malloc_or_die(n * sizeof(floatX), "du");
        float *ra = (float*)coda_malloc_or_die(n * sizeof(float), "ref"), *rdg = (float*)coda_calloc_or_die(n, sizeof(float), "ref"),
              *rdu = (float*)coda_calloc_or_die(n, sizeof(float), "ref");
        swiglu_forward_f32(ra, g, u, n);
        swiglu_backward_f32(rdg, rdu, da, g, u, n);
        tgk_poison(d_a, n * sizeof(floatX)); tgk_poison(d_dg, n * sizeof(floatX)); tgk_poison(d_du, n * sizeof(floatX));
        swiglu_forward(ctx, d_a, d_g, d_u, n);
        swiglu_backward(ctx, d_dg, d_du, d_da, d_g, d_u, n);
        float *ga = tgk_download(d_a, n), *gdg = tgk_download(d_dg, n), *gdu = tgk_download(d_du, n);
        tgk_compare("forward", ga, ra, n, TGK_ATOL, TGK_RTOL);
        tgk_compare("backward dgate", gdg, rdg, n, TGK_ATOL, TGK_RTOL);
        tgk_compare("backward dup", gdu, rdu, n, TGK_ATOL, TGK_RTOL);
        void *b1 = tgk_bytes(d_a, n * sizeof(floatX)), *b2 = tgk_bytes(d_dg, n * sizeof(floatX));
        swiglu_forward(ctx, d_a, d_g, d_u, n);
        swiglu_backward(ctx, d_dg, d_du, d_da, d_g, d_u, n);
        void *b3 = tgk_bytes(d_a, n * sizeof(floatX)), *b4 = tgk_bytes(d_dg, n * sizeof(floatX));
        tgk_same_bytes("swiglu forward", b1, b3, n * sizeof(floatX));
        tgk_same_bytes("swiglu backward", b2, b4, n * sizeof(floatX));
        free(b1); free(b2); free(b3); free(b4); free(ga); free(gdg); free(gdu); free(ra); free(rdg); free(rdu);
        free(g); free(u); free(da);
        cudaCheck(cudaFree(d_g)); cudaCheck(cudaFree(d_u)); cudaCheck(cudaFree(d_da)); cudaCheck(cudaFree(d_a));
        cudaCheck(cudaFree(d_dg)); cudaCheck(cudaFree(d_du));
    }
}

// ---------------------------------------------------------------- encoder
static void tgk_encoder_case(int N, int C, int V, int skew, uint64_t seed) {
    GpuContext* ctx = tgk_ctx();
    printf("  encoder N=%d C=%d V=%d skew=%d\n", N, C, V, skew);
    Rng r;
    rng_seed(&r, seed);
    int* tok = (int*)coda_malloc_or_die(N * sizeof(int), "tokens");
    // skew: half the tokens are token 1 (a frequent token / padding), the rest uniform
    for (int i = 0; i < N; i++) tok[i] = (skew && rng_uniform(&r) < 0.5) ? 1 : (int)rng_below(&r, (uint64_t)V);
    tok[N - 1] = V - 1;
    size_t nemb = (size_t)V * C, nout = (size_t)N * C;
    float *emb = tgk_randn(nemb, seed + 1, 1.0), *dout = tgk_randn(nout, seed + 2, 1.0), *demb0 = tgk_randn(nemb, seed + 3, 0.1);
    floatX *d_emb = tgk_upload(emb, nemb), *d_dout = tgk_upload(dout, nout);
    floatX* d_out = (floatX*)cuda_malloc_or_die(nout * sizeof(floatX), "out");
    int* d_tok = (int*)cuda_malloc_or_die(N * sizeof(int), "tokens");
    cudaCheck(cudaMemcpy(d_tok, tok, N * sizeof(int), cudaMemcpyHostToDevice));
    float* d_demb = tgk_upload32(demb0, nemb);
    size_t sb = encoder_backward_scratch_bytes(N, V);
    void* scratch = cuda_malloc_or_die(sb, "encoder scratch");

    float* ref = (float*)coda_malloc_or_die(nout * sizeof(float), "ref");
    for (int i = 0; i < N; i++) memcpy(ref + (size_t)i * C, emb + (size_t)tok[i] * C, C * sizeof(float));
    tgk_poison(d_out, nout * sizeof(floatX));
    encoder_forward(ctx, d_out, d_tok, d_emb, N, C);
    float* got = tgk_download(d_out, nout);
    tgk_compare("forward (exact copy)", got, ref, nout, 0.0, 0.0);

    // backward twin: per token, rows summed in increasing n, then added once (the GPU's order)
    float* rdemb = (float*)coda_malloc_or_die(nemb * sizeof(float), "ref");
    memcpy(rdemb, demb0, nemb * sizeof(float));
    float* acc = (float*)coda_malloc_or_die(C * sizeof(float), "acc");
    char* seen = (char*)coda_calloc_or_die(V, 1, "seen");
    for (int i = 0; i < N; i++) {
        int v = tok[i];
        if (seen[v]) continue;
        seen[v] = 1;
        memset(acc, 0, C * sizeof(float));
        for (int j = i; j < N; j++)
            if (tok[j] == v)
                for (int c = 0; c < C; c++) acc[c] += dout[(size_t)j * C + c];
        for (int c = 0; c < C; c++) rdemb[(size_t)v * C + c] += acc[c];
    }
    void* e1 = NULL;
    for (int rep = 0; rep < 2; rep++) {
        cudaCheck(cudaMemcpy(d_demb, demb0, nemb * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemset(scratch, 0xff, sb));
        encoder_backward(ctx, d_demb, d_dout, d_tok, N, C, V, scratch, sb);
        if (rep == 0) {
            float* gd = tgk_download32(d_demb, nemb);
            tgk_compare("backward demb (fp32, +=)", gd, rdemb, nemb, TGK_ATOL32, TGK_RTOL32);
            free(gd);
            e1 = tgk_bytes(d_demb, nemb * sizeof(float));
        } else {
            void* e2 = tgk_bytes(d_demb, nemb * sizeof(float));
            tgk_same_bytes("encoder backward", e1, e2, nemb * sizeof(float));
            free(e2);
        }
    }
    free(e1); free(seen); free(acc); free(rdemb); free(ref); free(got); free(tok); free(emb); free(dout); free(demb0);
    cudaCheck(cudaFree(d_emb)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_tok));
    cudaCheck(cudaFree(d_demb)); cudaCheck(cudaFree(scratch));
}

GPU_TEST(gpu_kernel_encoder) {
    tgk_encoder_case(1000, 96, 50, 0, 501);     // many repeats per token
    tgk_encoder_case(2048, 4096, 32000, 1, 502); // Mistral vocab and width, one very frequent token
    tgk_encoder_case(77, 100, 1000, 0, 503);    // C % 8 != 0
}

// ---------------------------------------------------------------- adamw
GPU_TEST(gpu_kernel_adamw) {
    GpuContext* ctx = tgk_ctx();
    size_t sizes[2] = {100000, 100003};
    for (int t = 0; t < 2; t++) {
        size_t n = sizes[t];
        printf("  adamw n=%zu, 5 steps\n", n);
        float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
        float* p = tgk_randn(n, 601 + t, 0.5);  // already floatX-exact, so param == master at start
        float *m = (float*)coda_calloc_or_die(n, sizeof(float), "m"), *v = (float*)coda_calloc_or_die(n, sizeof(float), "v");
        float *d_p = tgk_upload32(p, n), *d_m = tgk_upload32(m, n), *d_v = tgk_upload32(v, n);
        float* d_g = (float*)cuda_malloc_or_die(n * sizeof(float), "grad");
        floatX* d_px = (floatX*)cuda_malloc_or_die(n * sizeof(floatX), "param");
        for (int step = 1; step <= 5; step++) {
            float* g = tgk_randn(n, 700 + step, step == 3 ? 1e-6 : 1.0);  // one step of tiny gradients
            if (step == 2) for (size_t i = 0; i < n; i += 97) g[i] = 0.0f;
            cudaCheck(cudaMemcpy(d_g, g, n * sizeof(float), cudaMemcpyHostToDevice));
            adamw_update(ctx, d_p, d_px, d_g, d_m, d_v, n, lr, b1, b2, eps, wd, gs, step);
            // twin of model_adamw_step (double arithmetic, fp32 state)
            double bc1 = 1.0 - pow((double)b1, (double)step), bc2 = 1.0 - pow((double)b2, (double)step);
            for (size_t i = 0; i < n; i++) {
                double gg = (double)g[i] * gs;
                double mm = (double)b1 * m[i] + (1.0 - (double)b1) * gg;
                double vv = (double)b2 * v[i] + (1.0 - (double)b2) * gg * gg;
                m[i] = (float)mm;
                v[i] = (float)vv;
                double pp = p[i] * (1.0 - (double)lr * wd);
                pp -= (double)lr * (mm / bc1) / (sqrt(vv / bc2) + eps);
                p[i] = (float)pp;
            }
            free(g);
        }
        float *gp = tgk_download32(d_p, n), *gm = tgk_download32(d_m, n), *gv = tgk_download32(d_v, n),
              *gx = tgk_download(d_px, n);
        tgk_compare("master (fp32)", gp, p, n, 1e-6, 1e-5);
        tgk_compare("m (fp32)", gm, m, n, 1e-6, 1e-5);
        tgk_compare("v (fp32)", gv, v, n, 1e-6, 1e-5);
        // the floatX copy is exactly the master rounded to nearest
        float* pr = (float*)coda_malloc_or_die(n * sizeof(float), "rounded");
        for (size_t i = 0; i < n; i++) pr[i] = tgk_round(gp[i]);
        tgk_compare("param == round(master)", gx, pr, n, 0.0, 0.0);
        // determinism: one more step from the same state twice
        float* g = tgk_randn(n, 799, 1.0);
        cudaCheck(cudaMemcpy(d_g, g, n * sizeof(float), cudaMemcpyHostToDevice));
        void* s1[4];
        void* s2[4];
        for (int rep = 0; rep < 2; rep++) {
            cudaCheck(cudaMemcpy(d_p, gp, n * sizeof(float), cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(d_m, gm, n * sizeof(float), cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(d_v, gv, n * sizeof(float), cudaMemcpyHostToDevice));
            adamw_update(ctx, d_p, d_px, d_g, d_m, d_v, n, lr, b1, b2, eps, wd, gs, 6);
            void** s = rep ? s2 : s1;
            s[0] = tgk_bytes(d_p, n * 4); s[1] = tgk_bytes(d_m, n * 4); s[2] = tgk_bytes(d_v, n * 4);
            s[3] = tgk_bytes(d_px, n * sizeof(floatX));
        }
        tgk_same_bytes("adamw master", s1[0], s2[0], n * 4);
        tgk_same_bytes("adamw m", s1[1], s2[1], n * 4);
        tgk_same_bytes("adamw v", s1[2], s2[2], n * 4);
        tgk_same_bytes("adamw param", s1[3], s2[3], n * sizeof(floatX));
        // param == NULL is allowed (master only)
        adamw_update(ctx, d_p, NULL, d_g, d_m, d_v, n, lr, b1, b2, eps, wd, gs, 6);
        cudaCheck(cudaDeviceSynchronize());
        for (int k = 0; k < 4; k++) { free(s1[k]); free(s2[k]); }
        free(g); free(pr); free(gp); free(gm); free(gv); free(gx); free(p); free(m); free(v);
        cudaCheck(cudaFree(d_p)); cudaCheck(cudaFree(d_m)); cudaCheck(cudaFree(d_v)); cudaCheck(cudaFree(d_g));
        cudaCheck(cudaFree(d_px));
    }
}

// ---------------------------------------------------------------- adamw: one launch over a segment table
// adamw_table_update against one adamw_update per segment (adamw_table_update_per_segment), bit for
// bit, over several steps with a changing lr scale and clipping scale: an uneven table (odd lengths,
// unaligned begins, a floatX copy out of phase with its fp32 range, segments without a floatX copy, a
// group with weight decay 0, multi-chunk segments on both paths, gaps no segment covers), once on
// 16-byte aligned buffers and once with every fp32 base one element off. Then ZeRO: the tables of 3
// ranks' slices (adamw_segments_from_slice), each applied on that rank's own slice buffers, give the
// whole-table update's bits.

// First differing float of two device buffers (-1: equal), and the check.
static void tgk_adamw_same(const char* what, const void* d_a, const void* d_b, size_t bytes) {
    unsigned char *a = (unsigned char*)tgk_bytes(d_a, bytes), *b = (unsigned char*)tgk_bytes(d_b, bytes);
    long long first = -1;
    for (size_t i = 0; i < bytes && first < 0; i++)
        if (a[i] != b[i]) first = (long long)i;
    if (first >= 0) printf("    %s: first difference at byte %lld\n", what, first);
    CHECK(first < 0, "%s: the table update differs from the per-segment updates", what);
    free(a); free(b);
}

GPU_TEST(gpu_kernel_adamw_table) {
    GpuContext* ctx = tgk_ctx();
    const float lr0[GROUP_COUNT] = {1e-3f, 3e-3f, 2e-4f, 5e-3f}, wd[GROUP_COUNT] = {0.1f, 0.0f, 0.01f, 0.05f};
    const float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    // {begin, end, param_offset, group}; fp32 buffers of n, floatX buffer of np
    const AdamWSegment segs[] = {
        {0, 1, 0, 0},                 // one element
        {3, 20003, 8, 0},             // unaligned begin: scalar (one element off: the 16-byte path), 3 chunks
        {20004, 20010, -1, 1},        // no floatX copy, weight decay 0
        {20012, 60012, 20020, 1},     // aligned, 40000: the 16-byte path, 5 chunks, weight decay 0
        {60012, 100013, 60100, 2},    // odd length: scalar
        {100016, 150016, 100101, 3},  // aligned fp32, floatX out of phase: scalar
        {150016, 250016, -1, 2},      // 16-byte path without floatX copy, 13 chunks
        {250020, 250021, 250200, 3},  // one element
        {250023, 250027, -1, 0},      // 4 elements, unaligned (one element off: one vector); [250027, n) is never touched
    };
    const int ns = (int)(sizeof(segs) / sizeof(segs[0]));
    const size_t n = 250032, np = 250300;
    AdamWTable tab;
    adamw_table_create(&tab, segs, ns, n);
    CHECK(tab.n_chunks == 1 + 3 + 1 + 5 + 5 + 7 + 13 + 1 + 1, "chunks %zu", tab.n_chunks);
    float *p0 = tgk_randn(n, 901, 0.5), *m0 = tgk_randn(n, 902, 0.01), *v0 = tgk_randn(n, 903, 0.01), *x0 = tgk_randn(np, 904, 0.5);
    for (size_t i = 0; i < n; i++) v0[i] *= v0[i];  // second moments are >= 0
    for (int shift = 0; shift < 2; shift++) {
        printf("  adamw table: %d segments, %zu chunks, fp32 bases %s\n", ns, tab.n_chunks, shift ? "one element off" : "aligned");
        float* buf[2][4];  // [table, per segment][master, m, v, grad]
        floatX* px[2];
        for (int k = 0; k < 2; k++) {
            for (int j = 0; j < 4; j++) buf[k][j] = (float*)cuda_malloc_or_die((n + 1) * sizeof(float), "adamw state") + shift;
            cudaCheck(cudaMemcpy(buf[k][0], p0, n * sizeof(float), cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(buf[k][1], m0, n * sizeof(float), cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(buf[k][2], v0, n * sizeof(float), cudaMemcpyHostToDevice));
            px[k] = tgk_upload(x0, np);
        }
        for (int step = 1; step <= 4; step++) {
            float* g = tgk_randn(n, 910 + step, step == 3 ? 1e-6 : 1.0);
            for (int k = 0; k < 2; k++) cudaCheck(cudaMemcpy(buf[k][3], g, n * sizeof(float), cudaMemcpyHostToDevice));
            float lr[GROUP_COUNT];
            for (int q = 0; q < GROUP_COUNT; q++) lr[q] = (float)(lr0[q] * lr_schedule(step - 1, 4, 2, 0.1));
            const float gs = step == 2 ? 0.37f : 1.0f;  // a clipped step
            adamw_table_update(ctx, &tab, buf[0][0], px[0], buf[0][3], buf[0][1], buf[0][2], lr, wd, b1, b2, eps, gs, step);
            adamw_table_update_per_segment(ctx, &tab, buf[1][0], px[1], buf[1][3], buf[1][1], buf[1][2], lr, wd, b1, b2, eps, gs, step);
            free(g);
        }
        tgk_adamw_same("master", buf[0][0], buf[1][0], n * sizeof(float));
        tgk_adamw_same("m", buf[0][1], buf[1][1], n * sizeof(float));
        tgk_adamw_same("v", buf[0][2], buf[1][2], n * sizeof(float));
        tgk_adamw_same("param (floatX)", px[0], px[1], np * sizeof(floatX));
        // the segments moved, the gaps and the floatX outside the segments did not
        float *gp = tgk_download32(buf[0][0], n), *gx = tgk_download(px[0], np);
        size_t moved = 0, covered = 0, gap_moved = 0;
        for (size_t i = 0; i < n; i++) {
            int in = 0;
            for (int k = 0; k < ns; k++) in |= i >= segs[k].begin && i < segs[k].end;
            if (in) { covered++; moved += gp[i] != p0[i]; } else gap_moved += gp[i] != p0[i];
        }
        size_t x_moved = 0, x_written = 0;
        for (size_t i = 0; i < np; i++) {
            int in = 0;
            for (int k = 0; k < ns; k++)
                in |= segs[k].param_offset >= 0 && (long long)i >= segs[k].param_offset &&
                      (long long)i < segs[k].param_offset + (long long)(segs[k].end - segs[k].begin);
            if (in) x_written++;
            else x_moved += gx[i] != x0[i];
        }
        CHECK(moved > covered * 99 / 100 && gap_moved == 0 && x_moved == 0 && x_written > 0,
              "moved %zu of %zu, gap elements moved %zu, floatX outside the segments moved %zu", moved, covered, gap_moved, x_moved);
        free(gp); free(gx);
        for (int k = 0; k < 2; k++) {
            for (int j = 0; j < 4; j++) cudaCheck(cudaFree(buf[k][j] - shift));
            cudaCheck(cudaFree(px[k]));
        }
    }
    adamw_table_free(&tab);
    free(p0); free(m0); free(v0); free(x0);

    // ---- ZeRO: 3 ranks' slice tables on their own slice buffers == the whole table. A tiny phase-1/2
    // layout whose q/k/o lengths are not multiples of 4 (3 heads of 6, width 25: 450, 150), so that the
    // slice boundaries cut such tensors into a 64-multiple piece (which must stay on the whole
    // tensor's scalar path: AdamWSegment.scalar) and a remainder; 7,424 elements, shards of 2,496.
    ModelConfig c = zero_test_config(1);  // test_zero.h's odd layout (dev/test/test_layouts.h)
    ParamTable t;
    param_table_build(&t, &c, FLOATX_DTYPE);
    param_table_set_trainable(&t, TRAIN_ATTENTION);
    long long* off = (long long*)coda_malloc_or_die(sizeof(long long) * t.n, "offsets");
    const size_t nt = param_compact_offsets(&t, off);
    const int world = 3;
    AdamWSegment* seg = (AdamWSegment*)coda_malloc_or_die(sizeof(AdamWSegment) * t.n, "segments");
    AdamWTable whole;
    adamw_table_create(&whole, seg, adamw_segments_from_table(&t, off, seg, t.n), nt);
    CodaError err;
    ZeroSlice sl[3];
    AdamWTable rt[3];
    int split = -whole.n_seg, held = 0;  // tensors cut by a slice boundary; pieces held on the scalar path
    for (int r = 0; r < world; r++) {
        zero_slice(nt, r, world, &sl[r], &err);
        const int k = adamw_segments_from_slice(&t, off, &sl[r], seg, t.n);
        split += k;
        for (int q = 0; q < k; q++) held += seg[q].scalar && (seg[q].end - seg[q].begin) % 4 == 0 && seg[q].begin % 4 == 0;
        adamw_table_create(&rt[r], seg, k, sl[r].hi - sl[r].lo);
    }
    printf("  adamw ZeRO: %zu trainable elements, %d tensors, %d ranks of %zu (%zu, %zu, %zu), %d tensors cut, %d pieces held scalar\n", nt,
           whole.n_seg, world, sl[0].shard, sl[0].hi - sl[0].lo, sl[1].hi - sl[1].lo, sl[2].hi - sl[2].lo, split, held);
    CHECK(sl[2].hi - sl[2].lo != sl[0].shard && split > 0 && held > 0,
          "the slices should not divide evenly and should cut a tensor of a length that is not a multiple of 4");
    float *hp = tgk_randn(nt, 921, 0.5), *hm = tgk_randn(nt, 922, 0.01), *hv = tgk_randn(nt, 923, 0.01), *hx = tgk_randn(t.total, 924, 0.5);
    for (size_t i = 0; i < nt; i++) hv[i] *= hv[i];
    float *wp = tgk_upload32(hp, nt), *wm = tgk_upload32(hm, nt), *wv = tgk_upload32(hv, nt);
    float* wg = (float*)cuda_malloc_or_die(nt * sizeof(float), "grad");
    floatX *wx = tgk_upload(hx, t.total), *zx = tgk_upload(hx, t.total);  // whole, and the one all ranks write into
    float *zp[3], *zm[3], *zv[3], *zg[3];
    for (int r = 0; r < world; r++) {
        const size_t lo = sl[r].lo, len = sl[r].hi - lo;
        float** dst[4] = {&zp[r], &zm[r], &zv[r], &zg[r]};
        const float* src[4] = {hp, hm, hv, NULL};
        for (int j = 0; j < 4; j++) {  // the rank's own allocations ([lo, hi) only)
            *dst[j] = (float*)cuda_malloc_or_die((len ? len : 1) * sizeof(float), "slice state");
            if (src[j] && len) cudaCheck(cudaMemcpy(*dst[j], src[j] + lo, len * sizeof(float), cudaMemcpyHostToDevice));
        }
    }
    float lr[GROUP_COUNT];
    for (int q = 0; q < GROUP_COUNT; q++) lr[q] = lr0[q];
    for (int step = 1; step <= 3; step++) {
        float* g = tgk_randn(nt, 930 + step, 1.0);
        cudaCheck(cudaMemcpy(wg, g, nt * sizeof(float), cudaMemcpyHostToDevice));
        adamw_table_update(ctx, &whole, wp, wx, wg, wm, wv, lr, wd, b1, b2, eps, 0.8f, step);
        for (int r = 0; r < world; r++) {  // each rank its own slice
            if (sl[r].hi > sl[r].lo)
                cudaCheck(cudaMemcpy(zg[r], g + sl[r].lo, (sl[r].hi - sl[r].lo) * sizeof(float), cudaMemcpyHostToDevice));
            adamw_table_update(ctx, &rt[r], zp[r], zx, zg[r], zm[r], zv[r], lr, wd, b1, b2, eps, 0.8f, step);
        }
        free(g);
    }
    float* wbuf[3] = {wp, wm, wv};
    float** zbuf[3] = {zp, zm, zv};
    const char* names[3] = {"ZeRO master", "ZeRO m", "ZeRO v"};
    float* gathered = (float*)cuda_malloc_or_die(nt * sizeof(float), "gathered");
    for (int j = 0; j < 3; j++) {  // the ranks' slices side by side (the alignment gaps: the whole buffer's, untouched by both)
        cudaCheck(cudaMemcpy(gathered, wbuf[j], nt * sizeof(float), cudaMemcpyDeviceToDevice));
        for (int r = 0; r < world; r++)
            if (sl[r].hi > sl[r].lo)
                cudaCheck(cudaMemcpy(gathered + sl[r].lo, zbuf[j][r], (sl[r].hi - sl[r].lo) * sizeof(float), cudaMemcpyDeviceToDevice));
        tgk_adamw_same(names[j], wbuf[j], gathered, nt * sizeof(float));
    }
    cudaCheck(cudaFree(gathered));
    tgk_adamw_same("ZeRO param (floatX)", wx, zx, t.total * sizeof(floatX));
    for (int r = 0; r < world; r++) {
        adamw_table_free(&rt[r]);
        cudaCheck(cudaFree(zp[r])); cudaCheck(cudaFree(zm[r])); cudaCheck(cudaFree(zv[r])); cudaCheck(cudaFree(zg[r]));
    }
    adamw_table_free(&whole);
    cudaCheck(cudaFree(wp)); cudaCheck(cudaFree(wm)); cudaCheck(cudaFree(wv)); cudaCheck(cudaFree(wg));
    cudaCheck(cudaFree(wx)); cudaCheck(cudaFree(zx));
    free(hp); free(hm); free(hv); free(hx); free(seg); free(off);
    param_table_free(&t);
}

// ---------------------------------------------------------------- global norm
GPU_TEST(gpu_kernel_global_norm) {
    GpuContext* ctx = tgk_ctx();
    size_t sizes[4] = {1, 1000, 1000003, 50000000};
    float* d_out = (float*)cuda_malloc_or_die(sizeof(float), "norm");
    double total = 0;
    for (int t = 0; t < 4; t++) {
        size_t n = sizes[t];
        float* x = tgk_randn(n, 801 + t, 0.01);
        double ss = 0;
        for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
        float* d_x = tgk_upload32(x, n);
        global_norm_squared(ctx, d_out, d_x, n, 0);
        float g1 = global_norm_read(ctx, d_out);
        global_norm_squared(ctx, d_out, d_x, n, 0);
        float g2 = global_norm_read(ctx, d_out);
        printf("  global_norm n=%zu: gpu %.9g ref %.9g\n", n, g1, ss);
        CHECK_CLOSE(g1, ss, 0.0, 1e-5);
        CHECK(memcmp(&g1, &g2, sizeof(float)) == 0, "global_norm not bitwise reproducible (n=%zu)", n);
        total += ss;
        cudaCheck(cudaFree(d_x));
        free(x);
    }
    // accumulate over several tensors
    cudaCheck(cudaMemset(d_out, 0, sizeof(float)));
    double acc_ref = 0;
    for (int t = 0; t < 3; t++) {
        size_t n = 1000 + 777 * t;
        float* x = tgk_randn(n, 900 + t, 1.0);
        for (size_t i = 0; i < n; i++) acc_ref += (double)x[i] * x[i];
        float* d_x = tgk_upload32(x, n);
        global_norm_squared(ctx, d_out, d_x, n, t > 0);
        cudaCheck(cudaDeviceSynchronize());
        cudaCheck(cudaFree(d_x));
        free(x);
    }
    float acc = global_norm_read(ctx, d_out);
    printf("  global_norm accumulate over 3 tensors: gpu %.9g ref %.9g\n", acc, acc_ref);
    CHECK_CLOSE(acc, acc_ref, 0.0, 1e-5);
    (void)total;
    cudaCheck(cudaFree(d_out));
}

// ---------------------------------------------------------------- elementwise
GPU_TEST(gpu_kernel_elementwise) {
    GpuContext* ctx = tgk_ctx();
    size_t sizes[2] = {(size_t)1027 * 4096, 100003};
    for (int t = 0; t < 2; t++) {
        size_t n = sizes[t];
        printf("  elementwise n=%zu\n", n);
        float *a = tgk_randn(n, 1001 + t, 1.0), *b = tgk_randn(n, 1011 + t, 0.1);
        floatX *d_a = tgk_upload(a, n), *d_b = tgk_upload(b, n), *d_o = (floatX*)cuda_malloc_or_die(n * sizeof(floatX), "o");
        float* ref = (float*)coda_malloc_or_die(n * sizeof(float), "ref");
        for (size_t i = 0; i < n; i++) ref[i] = tgk_round(a[i] + b[i]);  // one fp32 add, rounded: exact twin
        tgk_poison(d_o, n * sizeof(floatX));
        residual_add(ctx, d_o, d_a, d_b, n);
        float* got = tgk_download(d_o, n);
        tgk_compare("residual_add", got, ref, n, 0.0, 0.0);
        residual_add(ctx, d_a, d_a, d_b, n);  // in place (out aliases a)
        float* got2 = tgk_download(d_a, n);
        tgk_compare("residual_add in place", got2, ref, n, 0.0, 0.0);
        // floatX -> fp32 is exact; fp32 -> floatX rounds to nearest even
        float* d_f = (float*)cuda_malloc_or_die(n * sizeof(float), "f");
        floatX_to_float(ctx, d_f, d_o, n);
        float* gf = tgk_download32(d_f, n);
        tgk_compare("floatX_to_float", gf, ref, n, 0.0, 0.0);
        float* raw = tgk_randn(n, 1021 + t, 1.0);
        for (size_t i = 0; i < n; i++) raw[i] *= 1.0f + 1e-3f * (float)(i % 7);  // not floatX-exact
        cudaCheck(cudaMemcpy(d_f, raw, n * sizeof(float), cudaMemcpyHostToDevice));
        float_to_floatX(ctx, d_o, d_f, n);
        float* gx = tgk_download(d_o, n);
        float* rr = (float*)coda_malloc_or_die(n * sizeof(float), "ref");
        for (size_t i = 0; i < n; i++) rr[i] = tgk_round(raw[i]);
        tgk_compare("float_to_floatX (round to nearest)", gx, rr, n, 0.0, 0.0);
        fill_zero_float(ctx, d_f, n);
        float* gz = tgk_download32(d_f, n);
        size_t nz = 0;
        for (size_t i = 0; i < n; i++) nz += gz[i] != 0.0f;
        CHECK(nz == 0, "fill_zero_float left %zu non-zeros", nz);
        free(a); free(b); free(ref); free(got); free(got2); free(gf); free(raw); free(gx); free(rr); free(gz);
        cudaCheck(cudaFree(d_a)); cudaCheck(cudaFree(d_b)); cudaCheck(cudaFree(d_o)); cudaCheck(cudaFree(d_f));
    }
    // unaligned views (tensor slices at odd offsets) take the scalar paths
    size_t n = 1001;
    float *a = tgk_randn(n + 1, 1031, 1.0), *b = tgk_randn(n + 1, 1032, 1.0);
    floatX *d_a = tgk_upload(a, n + 1), *d_b = tgk_upload(b, n + 1);
    residual_add(ctx, d_a + 1, d_a + 1, d_b + 1, n);
    float* got = tgk_download(d_a, n + 1);
    float* ref = (float*)coda_malloc_or_die((n + 1) * sizeof(float), "ref");
    ref[0] = a[0];
    for (size_t i = 1; i <= n; i++) ref[i] = tgk_round(a[i] + b[i]);
    tgk_compare("residual_add unaligned", got, ref, n + 1, 0.0, 0.0);
    free(a); free(b); free(got); free(ref);
    cudaCheck(cudaFree(d_a)); cudaCheck(cudaFree(d_b));
}
