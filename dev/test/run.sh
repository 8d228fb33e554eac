#!/usr/bin/env bash
# dev/test/run.sh BINARY... — what `make test` runs: each test binary in turn (its output as it
# comes), then one summary line per binary and, last, the combined "N passed, M failed, K skipped".
# TEST_FILTER (optional) is passed to every binary as its name filter. Exit status 1 if any test
# failed or a binary ended without its summary line (a crash counts as one failure).
set -u
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0 skipped=0 summaries=()
for bin in "$@"; do
  name=$(basename "$bin")
  "$bin" ${TEST_FILTER:+"$TEST_FILTER"} 2>&1 | tee "$tmp/$name.log"
  status=${PIPESTATUS[0]}
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$tmp/$name.log" | tail -n 1)
  if [ -z "$line" ]; then
    summaries+=("$(printf '%-10s ended without its summary line (exit status %d): counted as 1 failed' "$name:" "$status")")
    failed=$((failed + 1))
    continue
  fi
  read -r p _ f _ s _ <<< "${line//,/}"
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
  if [ "$f" = 0 ] && [ "$status" != 0 ]; then  # a summary of 0 failed but a failing exit: count it
    line="$line, but exit status $status: counted as 1 failed"
    failed=$((failed + 1))
  fi
  summaries+=("$(printf '%-10s %s' "$name:" "$line")")
done
echo
printf '%s\n' "${summaries[@]}"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
