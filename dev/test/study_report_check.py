#!/usr/bin/env python3
"""Checks scripts/study_report.py on a synthetic study directory of three seeds (run by test_cpu's
study_report_over_seeds): each arm's mean ± sample standard deviation (min .. max) over the seeds,
the 2x2's per-seed penalties and interaction, the verdict against two standard errors, the context
sweep over seeds, the wall time per stage from the .done markers, and a valid PNG. The expected
numbers are worked out here by hand / with the statistics module, not by the script under test.
Standard library only. Prints "ok: ..." and exits 0, or a reason and exits 1."""
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.join(HERE, "..", "..", "scripts", "study_report.py")
sys.path.insert(0, HERE)
from demo_report_check import check_png  # noqa: E402


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


# seed -> arm -> ppl; the 2x2 per seed: GQA penalty 19 / 15 / 20, CoDA penalty 7 / 9 / 6, interaction 12 / 6 / 14
SEEDS = {
    1: {"gqa_unbounded": 80.0, "gqa_bounded_medium": 99.0, "coda_unbounded": 78.0, "coda_bounded_medium": 85.0, "base": 90.0},
    2: {"gqa_unbounded": 82.0, "gqa_bounded_medium": 97.0, "coda_unbounded": 79.0, "coda_bounded_medium": 88.0, "base": 91.0},
    3: {"gqa_unbounded": 81.0, "gqa_bounded_medium": 101.0, "coda_unbounded": 80.0, "coda_bounded_medium": 86.0},  # base missing
}


def main():
    root = tempfile.mkdtemp(prefix="coda_study_report_")
    for s, arms in SEEDS.items():
        d = os.path.join(root, f"seed{s}")
        os.makedirs(os.path.join(d, "eval"))
        os.makedirs(os.path.join(d, ".done"))
        for arm, v in arms.items():
            with open(os.path.join(d, "eval", arm + ".json"), "w") as f:
                f.write(json.dumps({"procedure": "sliding", "shard": "val.bin", "tokens": 1000, "device": "test", "ppl": v}) + "\n")
        with open(os.path.join(d, "eval", "sweep_coda_unbounded.json"), "w") as f:
            for i, c in enumerate([512, 1024]):
                f.write(json.dumps({"procedure": "chunked", "ctx": c, "ppl": 100.0 - 3 * i + s}) + "\n")
        # stages: build ends at 10:00:00, phase0 120 + s seconds later, phase1 30 s after that (build's own
        # start is unknown: data has no marker, so build has no duration)
        for st, t in [("build", "2026-12-02T10:00:00Z"), ("phase0", f"2026-12-02T10:02:0{s}Z"), ("phase1", f"2026-12-02T10:02:3{s}Z")]:
            open(os.path.join(d, ".done", st), "w").write(t + "\n")
    r = subprocess.run([sys.executable, REPORT, root], capture_output=True, text=True)
    if r.returncode != 0:
        fail("study_report.py exited %d: %s" % (r.returncode, r.stderr[-800:]))
    md = open(os.path.join(root, "RESULTS.md")).read()
    inter = [12.0, 6.0, 14.0]
    m, sd = statistics.mean(inter), statistics.stdev(inter)
    expect = [
        "Seeds: 1, 2, 3.",
        "| CoDA, unbounded (phase 1) | 79.000 ± 1.000 (78.000 .. 80.000) [n=3] |",
        "| base (phase 0, GQA, unbounded) | 90.500 ± 0.707 (90.000 .. 91.000) [n=2] |",
        "| 1 | 80.000 | 99.000 | +19.000 | 78.000 | 85.000 | +7.000 | +12.000 |",
        "| 3 | 81.000 | 101.000 | +20.000 | 80.000 | 86.000 | +6.000 | +14.000 |",
        "- GQA penalty: %.3f ± %.3f (15.000 .. 20.000) [n=3]" % (statistics.mean([19, 15, 20]), statistics.stdev([19, 15, 20])),
        "- interaction (GQA penalty - CoDA penalty): %.3f ± %.3f (6.000 .. 14.000) [n=3]" % (m, sd),
        "reduces the bounded penalty: 3 of 3.",
        "differential attention reduces the bounded penalty (mean interaction +%.3f" % m,
        "its size: %+.2f %% of the GQA arm's unbounded PPL." % (100 * m / statistics.mean([80.0, 82.0, 81.0])),
        "| 512 | 102.000 ± 1.000 (101.000 .. 103.000) [n=3] | - |",
        "| 1 | - | 121 | 30 |",
        "| 3 | - | 123 | 30 |",
    ]
    for e in expect:
        if e not in md:
            fail("RESULTS.md lacks: " + e + "\n" + md)
    # the CoDA-bounded-medium ratio to CoDA unbounded, per seed then averaged: (85/78, 88/79, 86/80) - 1
    rel = [100 * (85 / 78 - 1), 100 * (88 / 79 - 1), 100 * (86 / 80 - 1)]
    e = "| CoDA bounded medium (256/64/64) | %.3f ± %.3f" % (statistics.mean([85, 88, 86]), statistics.stdev([85, 88, 86]))
    e2 = "%.1f ± %.1f" % (statistics.mean(rel), statistics.stdev(rel))
    line = next((l for l in md.splitlines() if l.startswith(e)), None)
    if line is None or e2 not in line:
        fail(f"RESULTS.md's CoDA bounded medium row should start {e!r} and hold {e2!r}:\n{md}")
    w, h = check_png(os.path.join(root, "ppl_context.png"))
    # no seed directories: a clear error, not a traceback
    empty = tempfile.mkdtemp(prefix="coda_study_empty_")
    r = subprocess.run([sys.executable, REPORT, empty], capture_output=True, text=True)
    if r.returncode == 0 or "no seed<S> directories" not in r.stderr:
        fail("an empty study directory should fail with a message, got rc %d: %s" % (r.returncode, r.stderr[-300:]))
    print("ok: RESULTS.md (%d lines), ppl_context.png %dx%d" % (md.count("\n"), w, h))


if __name__ == "__main__":
    main()
