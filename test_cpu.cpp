// test_cpu.cpp — the CPU test suite, built by the host compiler alone (no CUDA needed to build or run
// it): the reference model, banks, file formats, tokenizer, data, and the library code behind the
// programs. Usage: ./test_cpu [name-filter]. Ends with "N passed, M failed, K skipped".
// `make test` runs it and test_coda (the GPU tests); `make test-asan` runs it under ASan + UBSan.
#include "dev/test/harness.h"
#include "dev/test/test_config.h"
#include "dev/test/test_cpu_model.h"
#include "dev/test/test_spec_reference.h"
#include "dev/test/test_io.h"
#include "dev/test/test_torch_pt.h"
#include "dev/test/test_adapters.h"
#include "dev/test/test_data.h"
#include "dev/test/test_tokenizer.h"
#include "dev/test/test_infer.h"
#include "dev/test/test_cli.h"
#include "dev/test/test_checkpoint.h"
#include "dev/test/test_zero.h"
#include "dev/test/test_launch.h"
#include "dev/test/test_phases.h"

int main(int argc, char** argv) {
    test_help_if_asked(argc, argv, "the CPU tests");
    const char* filter = argc > 1 ? argv[1] : NULL;
    int failed = run_tests(filter, 0, "test_cpu holds no GPU tests");
    return failed ? 1 : 0;
}
