// common.h — error reporting, checked allocation, bf16/fp16 conversion, small string helpers.
// Plain C (also compiles as C++ under nvcc). Library code never exits: it reports into a CodaError
// and returns -1, so tests can assert on the message and callers lose nothing. Programs (train,
// infer, tools) turn an error into a message on stderr and a non-zero exit with coda_fatal().
#pragma once
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char msg[1024];
} CodaError;

// Formats the message into err (if non-NULL) and returns -1, so `return coda_errorf(err, ...)` reads well.
static inline int coda_errorf(CodaError* err, const char* fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return -1;
}

static inline void coda_fatal(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

// ---- checked size arithmetic ----
// Every size computed from file contents (counts x widths, offsets + lengths) goes through these
// before it is compared with the real file size or handed to an allocator: a header that makes the
// product wrap must be refused, not turned into a small buffer that is then overrun.
// Each returns 1 and stores the result when it fits in size_t, else returns 0 and leaves *out alone.
static inline int size_mul_ok(size_t a, size_t b, size_t* out) {
    if (b != 0 && a > SIZE_MAX / b) return 0;
    *out = a * b;
    return 1;
}
static inline int size_add_ok(size_t a, size_t b, size_t* out) {
    if (a > SIZE_MAX - b) return 0;
    *out = a + b;
    return 1;
}
// a * b + c, the usual "header + count x width".
static inline int size_mul_add_ok(size_t a, size_t b, size_t c, size_t* out) {
    size_t ab;
    return size_mul_ok(a, b, &ab) && size_add_ok(ab, c, out);
}

// Allocation that names the request on failure (out-of-memory must say what was asked for).
static inline void* coda_malloc_or_die(size_t bytes, const char* what) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p) coda_fatal("out of host memory allocating %zu bytes for %s", bytes, what);
    return p;
}
static inline void* coda_calloc_or_die(size_t n, size_t size, const char* what) {
    size_t bytes;
    if (!size_mul_ok(n, size, &bytes))
        coda_fatal("cannot allocate %zu x %zu bytes for %s: the size does not fit in size_t", n, size, what);
    void* p = calloc(n ? n : 1, size ? size : 1);
    if (!p) coda_fatal("out of host memory allocating %zu bytes (%zu x %zu) for %s", bytes, n, size, what);
    return p;
}

// Checks that `path` is a regular file before it is opened: opening a FIFO would block forever and
// a directory or device has no meaningful size. `what` names the kind of file for the message.
static inline int coda_check_regular_file(const char* path, const char* what, CodaError* err) {
    struct stat st;
    if (stat(path, &st) != 0) return coda_errorf(err, "%s: cannot open %s: %s", path, what, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return coda_errorf(err, "%s: cannot open %s: not a regular file (%s)", path, what,
                           S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a pipe" : "a device or socket");
    return 0;
}

// Maps the regular file at path read-only (coda_check_regular_file first; `what` names it in
// messages): *map and *size, *map NULL for an empty file (there is nothing to map). The readers of
// binary files (safetensors, torch .pt) parse the mapping, then coda_unmap_file it.
static inline int coda_map_file(const char* path, const char* what, void** map, size_t* size, CodaError* err) {
    *map = NULL;
    *size = 0;
    if (coda_check_regular_file(path, what, err) != 0) return -1;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return coda_errorf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) { int e = errno; close(fd); return coda_errorf(err, "%s: cannot stat: %s", path, strerror(e)); }
    *size = (size_t)sb.st_size;
    if (*size == 0) { close(fd); return 0; }
    void* m = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);  // the mapping keeps the file alive
    if (m == MAP_FAILED) return coda_errorf(err, "%s: cannot mmap %zu bytes: %s", path, *size, strerror(map_errno));
    *map = m;
    return 0;
}
static inline void coda_unmap_file(void* map, size_t size) {
    if (map) munmap(map, size);
}

// Creates a new file beside `path` for an atomic write (same directory, so a rename onto path
// replaces it in one step): "<path>.tmp.<pid>.<k>", opened with O_EXCL so that no existing file,
// whatever its name, is ever truncated. Mode 0666 less the umask, as fopen would give. The name is
// written to tmp (tmp_size bytes). Returns NULL with a message on failure.
static inline FILE* coda_create_temp_beside(const char* path, char* tmp, size_t tmp_size, CodaError* err) {
    for (int k = 0; k < 1000; k++) {
        if ((size_t)snprintf(tmp, tmp_size, "%s.tmp.%d.%d", path, (int)getpid(), k) >= tmp_size) {
            coda_errorf(err, "%s: path too long for a temporary file beside it", path);
            return NULL;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd < 0 && errno == EEXIST) continue;
        if (fd < 0) { coda_errorf(err, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno)); return NULL; }
        FILE* f = fdopen(fd, "wb");
        if (!f) { int e = errno; close(fd); unlink(tmp); coda_errorf(err, "%s: cannot open %s: %s", path, tmp, strerror(e)); return NULL; }
        return f;
    }
    coda_errorf(err, "%s: cannot create a temporary file beside it: 1000 names %s.tmp.%d.* are taken", path, path, (int)getpid());
    return NULL;
}

// ---- element types used by files and buffers ----
typedef enum { DT_F32 = 0, DT_F64, DT_BF16, DT_F16, DT_I32, DT_I64, DT_U8, DT_U16, DT_U32, DT_BOOL, DT_COUNT } DType;

static inline size_t dtype_size(DType t) {
    static const size_t sizes[DT_COUNT] = {4, 8, 2, 2, 4, 8, 1, 2, 4, 1};
    return (t >= 0 && t < DT_COUNT) ? sizes[t] : 0;
}
// Names as safetensors spells them.
static inline const char* dtype_name(DType t) {
    static const char* names[DT_COUNT] = {"F32", "F64", "BF16", "F16", "I32", "I64", "U8", "U16", "U32", "BOOL"};
    return (t >= 0 && t < DT_COUNT) ? names[t] : "?";
}
static inline int dtype_from_name(const char* s, DType* out) {
    for (int t = 0; t < DT_COUNT; t++)
        if (strcmp(s, dtype_name((DType)t)) == 0) { *out = (DType)t; return 0; }
    return -1;
}

// ---- bf16 / fp16 <-> fp32 (round to nearest even, NaN preserved) ----
static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
// Rounds a float to the nearest bf16 value (used to emulate the reference's bf16 arithmetic).
static inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else {  // subnormal: normalise
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
    else u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000, exp = (u >> 23) & 0xff, man = u & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)half;
}

// Converts n elements between float-like dtypes (F32, F64, BF16, F16). Returns -1 for other types.
// A same-type conversion is a plain copy: exact bits, NaN payloads included (going through float
// would quiet a bf16 NaN's payload).
static inline int convert_floats(void* dst, DType dt, const void* src, DType st, size_t n) {
    int is_float = (st == DT_F32 || st == DT_F64 || st == DT_BF16 || st == DT_F16) &&
                   (dt == DT_F32 || dt == DT_F64 || dt == DT_BF16 || dt == DT_F16);
    if (!is_float) return -1;
    if (dt == st) { memmove(dst, src, n * dtype_size(st)); return 0; }
    for (size_t i = 0; i < n; i++) {
        double v;
        switch (st) {
            case DT_F32: v = ((const float*)src)[i]; break;
            case DT_F64: v = ((const double*)src)[i]; break;
            case DT_BF16: v = bf16_to_f32(((const uint16_t*)src)[i]); break;
            case DT_F16: v = f16_to_f32(((const uint16_t*)src)[i]); break;
            default: return -1;
        }
        switch (dt) {
            case DT_F32: ((float*)dst)[i] = (float)v; break;
            case DT_F64: ((double*)dst)[i] = v; break;
            case DT_BF16: ((uint16_t*)dst)[i] = f32_to_bf16((float)v); break;
            case DT_F16: ((uint16_t*)dst)[i] = f32_to_f16((float)v); break;
            default: return -1;
        }
    }
    return 0;
}

// Index of the first NaN or infinity among n elements of a float-like dtype at p (any alignment),
// or n when all are finite (also for non-float dtypes, which cannot hold either). A value is
// non-finite when all its exponent bits are set. The scan tests 8 bytes at a time (all their
// lanes at once: "some lane of (x & mask) ^ mask is zero", the strlen trick), so it runs at memory
// speed without a vectorising compiler (a 7B model is 14 GB of bf16), then finds the element.
static inline size_t floats_first_nonfinite(const void* p, DType t, size_t n) {
    uint64_t mask, ones, high;  // the exponent mask in every lane of a word; 1 and the top bit per lane
    switch (t) {
        case DT_F64: mask = 0x7ff0000000000000ull; ones = 1; high = 1ull << 63; break;
        case DT_F32: mask = 0x7f8000007f800000ull; ones = 0x0000000100000001ull; high = 0x8000000080000000ull; break;
        case DT_BF16: mask = 0x7f807f807f807f80ull; ones = 0x0001000100010001ull; high = 0x8000800080008000ull; break;
        case DT_F16: mask = 0x7c007c007c007c00ull; ones = 0x0001000100010001ull; high = 0x8000800080008000ull; break;
        default: return n;
    }
    const unsigned char* b = (const unsigned char*)p;
    const size_t esize = dtype_size(t), per_word = 8 / esize, words = n / per_word;
    const uint64_t lane_mask = esize == 8 ? mask : mask & ((1ull << (8 * esize)) - 1);
    size_t w = 0;
    for (; w < words; w++) {
        uint64_t x;
        memcpy(&x, b + 8 * w, 8);
        uint64_t y = (x & mask) ^ mask;  // zero in the lanes of non-finite values
        if ((y - ones) & ~y & high) break;
    }
    for (size_t i = w * per_word; i < n; i++) {  // the word with the first bad lane, or the tail
        uint64_t u = 0;
        memcpy(&u, b + esize * i, esize);  // little-endian hosts
        if ((u & lane_mask) == lane_mask) return i;
    }
    return n;
}
