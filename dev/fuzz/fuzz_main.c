// fuzz_main.c — the libFuzzer driver: one binary for every target of fuzz_targets.h, the target
// chosen by the environment variable CODA_FUZZ_TARGET (`make fuzz` sets it; CODA_FUZZ_TARGET=list
// prints the names). Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
// A refusal without a message, or a broken invariant (FUZZ_BROKEN), aborts, so libFuzzer saves
// the input as a crash like any sanitizer report.
#include "dev/fuzz/fuzz_targets.h"

static const FuzzTarget* fuzz_selected;

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc; (void)argv;
    const char* name = getenv("CODA_FUZZ_TARGET");
    if (name && strcmp(name, "list") == 0) {
        for (int i = 0; i < FUZZ_N_TARGETS; i++) printf("%s\n", FUZZ_TARGETS[i].name);
        exit(0);
    }
    fuzz_selected = name ? fuzz_target_find(name) : NULL;
    if (!fuzz_selected) {
        fprintf(stderr, "set CODA_FUZZ_TARGET to one of:\n");
        for (int i = 0; i < FUZZ_N_TARGETS; i++) fprintf(stderr, "  %-20s %s\n", FUZZ_TARGETS[i].name, FUZZ_TARGETS[i].what);
        exit(2);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    CodaError err;
    err.msg[0] = 0;
    int rc = fuzz_selected->fn(data, size, &err);
    if (rc == FUZZ_BROKEN || (rc == FUZZ_REFUSED && !err.msg[0])) {
        fprintf(stderr, "fuzz target %s: %s\n", fuzz_selected->name, rc == FUZZ_BROKEN ? err.msg : "input refused without a message");
        abort();
    }
    return 0;
}
