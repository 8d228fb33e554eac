#!/usr/bin/env bash
# run.sh BINARY SECONDS [TARGET...] -- runs each fuzz target (default: every one the binary lists)
# for SECONDS with libFuzzer, one after another, and prints one summary line per target.
# Called by `make fuzz` (dev/fuzz/README.md). Per target:
#   build/fuzz/corpus/<t>/      the growing working corpus (the committed seeds in dev/fuzz/corpus/<t>/
#                               are read too, never written)
#   build/fuzz/<t>.log          libFuzzer's output
#   dev/test/fixtures/fuzz/<t>/ where a crash, leak, timeout or out-of-memory input is copied, so that
#                               the CPU test suite replays it from then on (fix the bug, keep the file)
# Exits 1 if any target produced such an input.
set -uo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 BINARY SECONDS [TARGET...]" >&2; exit 2; fi
bin="$1" secs="$2"
shift 2
cd "$(dirname "$0")/../.."
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(CODA_FUZZ_TARGET=list "$bin"); fi
[ ${#targets[@]} -gt 0 ] || { echo "$0: $bin lists no targets" >&2; exit 2; }
found=0
for t in "${targets[@]}"; do
  work="build/fuzz/corpus/$t" art="build/fuzz/artifacts/$t" fix="dev/test/fixtures/fuzz/$t" log="build/fuzz/$t.log"
  [ -d "dev/fuzz/corpus/$t" ] || { echo "$0: no seed corpus dev/fuzz/corpus/$t" >&2; exit 2; }
  mkdir -p "$work" "$art"
  rm -f "$art"/*
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb also caps single allocations (a reader
  # sizing a buffer from a header field shows up as out-of-memory); -use_value_profile helps it past
  # magic numbers and size checks.
  CODA_FUZZ_TARGET="$t" "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -use_value_profile=1 \
    -print_final_stats=1 -artifact_prefix="$art/" "$work" "dev/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
  bad=$(find "$art" -type f | wc -l)
  printf '%-20s %ss  %10s execs  cov %-5s ft %-6s corpus %-5s %s\n' "$t" "$secs" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$([ "$bad" -eq 0 ] && [ $rc -eq 0 ] && echo "no crashes" || echo "FOUND $bad input(s), exit $rc: see $log")"
  if [ "$bad" -gt 0 ]; then
    mkdir -p "$fix"
    cp "$art"/* "$fix/"
    echo "    copied to $fix/: $(cd "$art" && ls | tr '\n' ' ')"
    found=1
  elif [ $rc -ne 0 ]; then
    found=1
  fi
done
exit $found
