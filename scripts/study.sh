#!/usr/bin/env bash
# study.sh — the small-scale study of docs/RESULTS.md: scripts/demo.sh (the whole protocol: phase 0,
# phases 1 and 2 for the CoDA and the GQA arm, every evaluation under one protocol, the context sweep,
# the needle) once per seed, then scripts/study_report.py: mean and spread over the seeds of every arm,
# of the 2x2's penalties and of the context sweep.
#
#   SEEDS="1 2 3" STUDY_OUT=out_study scripts/study.sh
#
# Every demo knob (MODEL, STEPS0/1/2, B*/T*, EVAL_TOKENS, QUICK, ...) passes through to each seed's run;
# each seed's run lives in STUDY_OUT/seed<S> and resumes as the demo does (finished stages are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY_OUT=${STUDY_OUT:-out_study}
SEEDS=${SEEDS:-1 2 3}
mkdir -p "$STUDY_OUT"
T0=$(date +%s)
for s in $SEEDS; do
  echo "[study $(( $(date +%s) - T0 ))s] seed $s -> $STUDY_OUT/seed$s"
  DEMO_OUT="$STUDY_OUT/seed$s" SEED="$s" scripts/demo.sh
done
echo "[study $(( $(date +%s) - T0 ))s] report: python3 scripts/study_report.py $STUDY_OUT"
python3 scripts/study_report.py "$STUDY_OUT"
