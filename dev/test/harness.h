// harness.h — the test harness of test_coda.cu: self-registering tests, checks that report the
// file/line and a message, a GPU probe that makes GPU tests skip loudly, and the closing line
// "N passed, M failed, K skipped". Test files in dev/test/ are included by test_coda.cu.
#pragma once
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

typedef void (*TestFn)(void);
typedef struct {
    const char* name;
    TestFn fn;
    int needs_gpu;
} TestCase;

#define MAX_TESTS 1024
static TestCase g_tests[MAX_TESTS];
static int g_n_tests = 0;
static int g_current_failures = 0;  // failed checks in the running test
static const char* g_current_skip = NULL;  // set by test_skip(): the running test could not run here

struct TestRegistrar {
    TestRegistrar(const char* name, TestFn fn, int needs_gpu) {
        if (g_n_tests >= MAX_TESTS) { fprintf(stderr, "too many tests\n"); exit(2); }
        g_tests[g_n_tests].name = name;
        g_tests[g_n_tests].fn = fn;
        g_tests[g_n_tests].needs_gpu = needs_gpu;
        g_n_tests++;
    }
};

// TEST(name) { ... } defines and registers a CPU test; GPU_TEST only runs when a GPU is present.
#define TEST(name)                                                    \
    static void test_##name(void);                                    \
    static TestRegistrar registrar_##name(#name, test_##name, 0);     \
    static void test_##name(void)
#define GPU_TEST(name)                                                \
    static void test_##name(void);                                    \
    static TestRegistrar registrar_##name(#name, test_##name, 1);     \
    static void test_##name(void)

// -h / --help: what the test binary takes, on stdout, and exit 0 (any other argument is a filter).
static void test_help_if_asked(int argc, char** argv, const char* what) {
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: %s [name-filter]\n  runs %s whose name contains name-filter (all without one) and ends with\n"
               "  \"N passed, M failed, K skipped\"; exit code 1 when a test failed\n", argv[0], what);
        exit(0);
    }
}

// Marks the running test as skipped (e.g. its input files are absent), with the reason printed.
static void test_skip(const char* reason) { g_current_skip = reason; }

static void check_failed(const char* file, int line, const char* expr, const char* fmt, ...) {
    g_current_failures++;
    if (g_current_failures > 20) return;  // one broken invariant in a loop should not flood the log
    fprintf(stderr, "    FAILED %s:%d: %s", file, line, expr);
    if (fmt && fmt[0]) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, " -- ");
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "\n");
}

// CHECK(cond, "fmt", args...) -- the message is optional: CHECK(cond, "") is fine.
#define CHECK(cond, ...) \
    do { if (!(cond)) check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)
// |a - b| <= atol + rtol * |b|
#define CHECK_CLOSE(a, b, atol, rtol)                                                               \
    do {                                                                                            \
        double a_ = (double)(a), b_ = (double)(b);                                                  \
        if (!(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_)))                                         \
            check_failed(__FILE__, __LINE__, #a " ~ " #b, "%.9g vs %.9g (diff %.3g)", a_, b_, fabs(a_ - b_)); \
    } while (0)

// A fresh scratch directory /tmp/coda_<tag>_XXXXXX (test infrastructure failure = exit 2).
static void test_mkdtemp(char* dir, size_t n, const char* tag) {
    snprintf(dir, n, "/tmp/coda_%s_XXXXXX", tag);
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
}
// Removes path and everything under it.
static void test_rmtree(const char* path) {
    DIR* d = opendir(path);
    if (!d) { unlink(path); return; }
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char child[4096];
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        test_rmtree(child);
    }
    closedir(d);
    rmdir(path);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// Runs the registered tests whose name contains `filter` (NULL = all). Returns the number failed.
static int run_tests(const char* filter, int have_gpu, const char* no_gpu_reason) {
    int passed = 0, failed = 0, skipped = 0;
    double t_all = now_seconds();
    for (int i = 0; i < g_n_tests; i++) {
        const TestCase* t = &g_tests[i];
        if (filter && !strstr(t->name, filter)) continue;
        if (t->needs_gpu && !have_gpu) {
            printf("SKIP %-52s (no GPU: %s)\n", t->name, no_gpu_reason);
            skipped++;
            continue;
        }
        g_current_failures = 0;
        g_current_skip = NULL;
        double t0 = now_seconds();
        t->fn();
        double dt = now_seconds() - t0;
        if (g_current_skip && g_current_failures == 0) { printf("SKIP %-52s (%s)\n", t->name, g_current_skip); skipped++; }
        else if (g_current_failures == 0) { printf("ok   %-52s %7.2fs\n", t->name, dt); passed++; }
        else { printf("FAIL %-52s %7.2fs (%d failed checks)\n", t->name, dt, g_current_failures); failed++; }
        fflush(stdout);
    }
    printf("total time %.1fs\n", now_seconds() - t_all);
    if (skipped) printf("%d tests SKIPPED (see SKIP lines above)\n", skipped);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed;
}
