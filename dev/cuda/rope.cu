// rope.cu — llmc/rope.cuh: CPU check; then a bitwise check of rope_apply (16-byte kernel or its scalar
// fallback) against a verbatim copy of the original scalar kernel (rope_kernel_old below) over many
// shapes; then GB/s (read + write of x), old vs new, for q (H = 32) and k (H = 8) at Dh = 128,
// N = 2048 / 8192, both layouts, base 1e6. Exits 1 with FAIL on any mismatch.
#include <string.h>
#include "bench_common.cuh"
#include "llmc/rope.cuh"

// ---- the kernel and launcher as they were before the 16-byte rewrite (the bitwise reference) ----
__global__ void rope_kernel_old(floatX* x, int N, int T, long long pos0, int n_heads, int Dh, int interleaved,
                                int bf16_positions, float sign, const RopeFreqs freqs) {
    int half = Dh >> 1;
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)N * half) return;
    int n = (int)(idx / half), i = (int)(idx % half);
    long long pos = pos0 + (long long)(n % T);
    float f = freqs.inv_freq[i], c, s;
    if (bf16_positions) {
        float p = rope_round_bf16((float)pos);
        float ang = rope_round_bf16(p * f);
        c = rope_round_bf16(cosf(ang));
        s = rope_round_bf16(sinf(ang));
    } else {
        float ang = __fmul_rn((float)pos, f);
        c = cosf(ang);
        s = sinf(ang);
    }
    s = sign * s;
    int a = interleaved ? 2 * i : i;
    int b = interleaved ? 2 * i + 1 : i + half;
    floatX* row = x + (size_t)n * n_heads * Dh;
    for (int h = 0; h < n_heads; h++) {
        floatX* xh = row + (size_t)h * Dh;
        float xa = to_float(xh[a]), xb = to_float(xh[b]);
        xh[a] = from_float<floatX>(__fmul_rn(xa, c) - __fmul_rn(xb, s));
        xh[b] = from_float<floatX>(__fmul_rn(xb, c) + __fmul_rn(xa, s));
    }
}

static void rope_apply_old(const GpuContext* ctx, floatX* x, int N, int T, long long pos0, int n_heads, int Dh,
                           RopeLayout layout, double base, int bf16_positions, int sign) {
    if (N <= 0 || n_heads <= 0) return;
    RopeFreqs fr;
    int half = Dh / 2;
    for (int i = 0; i < half; i++) {
        if (bf16_positions) fr.inv_freq[i] = round_bf16((float)(1.0 / pow(base, (double)(2 * i) / Dh)));
        else fr.inv_freq[i] = 1.0f / powf((float)base, (float)(2 * i) / (float)Dh);
    }
    for (int i = half; i < ROPE_MAX_HALF; i++) fr.inv_freq[i] = 0.0f;
    long long total = (long long)N * half;
    int block = 256;
    unsigned grid = (unsigned)((total + block - 1) / block);
    rope_kernel_old<<<grid, block, 0, ctx->stream>>>(x, N, T, pos0, n_heads, Dh, layout == ROPE_INTERLEAVED,
                                                     bf16_positions, sign < 0 ? -1.0f : 1.0f, fr);
    cudaCheckLaunch("rope_kernel_old");
}

// ---- CPU check (tolerance) ----
static void check(int T, long long pos0, int H, int Dh, RopeLayout layout) {
    size_t n = (size_t)T * H * Dh;
    floatX* x = bench_alloc<floatX>(n, 1);
    auto hx = bench_host(x, n);
    std::vector<float> c((size_t)T * Dh / 2), s((size_t)T * Dh / 2);
    rope_tables_f32(c.data(), s.data(), pos0, T, Dh, 1e6, 0);
    rope_apply_f32(hx.data(), c.data(), s.data(), T, H, Dh, layout, 1);
    rope_apply(&g_ctx, x, T, T, pos0, H, Dh, layout, 1e6, 0, 1);
    bench_validate(layout == ROPE_INTERLEAVED ? "rope interleaved" : "rope half-split", x, hx.data(), n, 1e-5f);
    cudaFree(x);
}

// ---- bitwise check: new rope_apply vs rope_apply_old ----
// Raw random bit patterns (NaN, inf, denormals included) for the hardest cases of "same bits".
__global__ void fill_bits_kernel(floatX* x, size_t n, uint32_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = bench_hash(i, seed);
        if (sizeof(floatX) == 2) reinterpret_cast<uint16_t*>(x)[i] = (uint16_t)(h >> 16);
        else reinterpret_cast<uint32_t*>(x)[i] = h;
    }
}

static int g_cases = 0;
// Both kernels run on copies of the same buffer; the whole buffer (with a guard of 16 elements around
// x, so a stray write also shows) is compared byte for byte. misalign (elements) shifts x off 16 bytes.
static void bit_case(int N, int T, long long pos0, int H, int Dh, RopeLayout layout, int sign, int bf16pos,
                     int misalign = 0, int rawbits = 0) {
    size_t n = (size_t)N * H * Dh, total = n + 16 + misalign;
    size_t bytes = total * sizeof(floatX);
    uint32_t seed = 1000 + g_cases;
    floatX* a = (floatX*)cuda_malloc_or_die(bytes, "rope bitwise a");
    floatX* b = (floatX*)cuda_malloc_or_die(bytes, "rope bitwise b");
    if (rawbits) {
        fill_bits_kernel<<<1024, 256, 0, g_ctx.stream>>>(a, total, seed);
        cudaCheck(cudaGetLastError());
    } else {
        bench_fill(a, total, seed, 4.0f);
    }
    cudaCheck(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g_ctx.stream));
    floatX *xa = a + 8 + misalign, *xb = b + 8 + misalign;
    rope_apply_old(&g_ctx, xa, N, T, pos0, H, Dh, layout, 1e6, bf16pos, sign);
    rope_apply(&g_ctx, xb, N, T, pos0, H, Dh, layout, 1e6, bf16pos, sign);
    cudaCheck(cudaDeviceSynchronize());
    std::vector<unsigned char> ha(bytes), hb(bytes);
    cudaCheck(cudaMemcpy(ha.data(), a, bytes, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(hb.data(), b, bytes, cudaMemcpyDeviceToHost));
    const char* path = rope_vec_ok(xb, Dh, layout) ? "vec16" : "scalar";
    int same = memcmp(ha.data(), hb.data(), bytes) == 0;
    g_cases++;
    if (!same) {
        size_t e = 0, es = sizeof(floatX);
        while (memcmp(&ha[e * es], &hb[e * es], es) == 0) e++;
        long long rel = (long long)e - 8 - misalign;  // element index relative to x
        printf("FAIL bitwise rope N=%d T=%d pos0=%lld H=%d Dh=%d %s sign=%+d bf16_positions=%d misalign=%d%s "
               "[%s]: first difference at x[%lld]\n",
               N, T, pos0, H, Dh, layout == ROPE_INTERLEAVED ? "interleaved" : "half-split", sign, bf16pos,
               misalign, rawbits ? " rawbits" : "", path, rel);
        exit(1);
    }
    printf("  same bits: N=%5d T=%5d pos0=%6lld H=%2d Dh=%3d %-11s sign=%+d bf16pos=%d%s%s [%s]\n", N, T, pos0, H,
           Dh, layout == ROPE_INTERLEAVED ? "interleaved" : "half-split", sign, bf16pos,
           misalign ? " misaligned" : "", rawbits ? " rawbits" : "", path);
    cudaCheck(cudaFree(a));
    cudaCheck(cudaFree(b));
}

static void bitwise_checks(void) {
    printf("\nbitwise: rope_apply vs the original scalar kernel\n");
    int k = 0;
    for (int Dh : {64, 128})
        for (int H : {32, 8, 9, 3})
            for (int L = 0; L < 2; L++)
                for (int sign : {1, -1})
                    for (int bf16pos : {0, 1}) {
                        // odd N; every other case several sequences (T < N) and a nonzero pos0
                        int N = 301, T = (k & 1) ? 100 : 301;
                        long long pos0 = (k & 2) ? 8000 : ((k & 1) ? 17 : 0);
                        bit_case(N, T, pos0, H, Dh, (RopeLayout)L, sign, bf16pos);
                        k++;
                    }
    for (int L = 0; L < 2; L++) {
        RopeLayout lay = (RopeLayout)L;
        bit_case(257, 257, 200000, 8, 128, lay, 1, 0);        // angles > 105615 rad: the slow sinf path
        bit_case(65, 65, 0, 80, 128, lay, 1, 0);              // rows wider than one pass of the block
        bit_case(1, 1, 5, 1, 128, lay, -1, 0);                // N = 1
        bit_case(1001, 300, 3, 1, 16, lay, 1, 0);             // one tiny head: many rows per block
        bit_case(300001, 4096, 0, 1, 16, lay, -1, 1);         // ... 512 rows per block, the largest table
        bit_case(33, 33, 0, 2, 512, lay, 1, 1);               // the largest Dh
        bit_case(129, 64, 0, 8, 128, lay, 1, 0, 1);           // x off 16 bytes: scalar fallback
        bit_case(129, 129, 0, 9, 72, lay, -1, 0);             // Dh = 72: half-split bf16 falls back
        bit_case(77, 77, 9, 5, 12, lay, 1, 1);                // Dh = 12
        bit_case(77, 77, 9, 5, 6, lay, 1, 0);                 // Dh = 6: scalar in both builds
        bit_case(301, 150, 4000, 8, 128, lay, 1, 0, 0, 1);    // raw bits: NaN / inf / denormals
        bit_case(301, 150, 4000, 8, 128, lay, -1, 1, 0, 1);
        bit_case(131, 131, 0, 3, 64, lay, 1, 0, 0, 1);
    }
    printf("bitwise: %d cases, all identical\n", g_cases);
}

int main() {
    bench_init();
    check(300, 8000, 8, 128, ROPE_HALF_SPLIT);
    check(77, 0, 4, 64, ROPE_INTERLEAVED);
    bitwise_checks();
    printf("\n%6s %4s %4s %-11s | %9s %8s | %9s %8s | %7s\n", "N", "H", "Dh", "layout", "old us", "GB/s", "new us",
           "GB/s", "speedup");
    for (int N : {2048, 8192})
        for (int H : {32, 8})
            for (int L = 0; L < 2; L++) {
                int Dh = 128;
                size_t n = (size_t)N * H * Dh;
                floatX* x = bench_alloc<floatX>(n, 2);
                double t0 = bench_ms([&] { rope_apply_old(&g_ctx, x, N, N, 0, H, Dh, (RopeLayout)L, 1e6, 0, 1); });
                double t1 = bench_ms([&] { rope_apply(&g_ctx, x, N, N, 0, H, Dh, (RopeLayout)L, 1e6, 0, 1); });
                double gb = 2.0 * n * sizeof(floatX) * 1e-6;
                printf("%6d %4d %4d %-11s | %9.1f %8.0f | %9.1f %8.0f | %6.2fx\n", N, H, Dh,
                       L ? "interleaved" : "half-split", t0 * 1e3, gb / t0, t1 * 1e3, gb / t1, t0 / t1);
                cudaFree(x);
            }
    return 0;
}
