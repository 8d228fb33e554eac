#!/usr/bin/env python3
"""Checks dev/cuda/attention_targets.py (run by test_cpu's attention_targets_from_one_calls_tables) on
synthetic tables in the two programs' formats: it takes the fastest tensor-core forward and backward
of each attention and length (not the fp32 rows, not the bounded table), divides by the right SDPA rows
(cuDNN with 32 and 64 query heads, FA2 with 32), says whether issue 15's targets are met, and refuses
inputs with no rows. Standard library only. Prints "ok: ..." and exits 0, or a reason and exits 1."""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "cuda", "attention_targets.py")

# coda_attention's first table, then its bounded table (which must be ignored: "causal" rows are faster)
CODA = """CPU check ok (tensor-core (wgmma), Dh 128, tol 2.0e-02): out 3e-03
| shape | T | attention | kernels | fwd ms | bwd ms | fwd TFLOP/s | bwd TFLOP/s |
|---|---|---|---|---|---|---|---|
| Mistral-7B B=1 | 2048 | CoDA (2 streams, head norm) | fp32-FMA | 0.01 | 0.01 | 1.0 | 1.0 |
| Mistral-7B B=1 | 2048 | CoDA (2 streams, head norm) | tensor-core (wgmma) | 0.30 | 0.70 | 1.0 | 1.0 |
| Mistral-7B B=1 | 2048 | CoDA (2 streams, head norm) | tensor-core (wgmma, warp-specialized forward) | 0.25 | 0.80 | 1.0 | 1.0 |
| Mistral-7B B=1 | 2048 | GQA (1 stream) | tensor-core (wgmma) | 0.15 | 0.45 | 1.0 | 1.0 |
| Mistral-7B B=1 | 8192 | CoDA (2 streams, head norm) | tensor-core (wgmma) | 3.00 | 5.00 | 1.0 | 1.0 |
| Mistral-7B B=1 | 8192 | CoDA (2 streams, head norm) | tensor-core (wgmma, warp-specialized forward, one-pass backward) | 2.00 | 4.00 | 1.0 | 1.0 |
| SmolLM2-135M B=8 | 2048 | CoDA (2 streams, head norm) | tensor-core (wgmma) | 0.01 | 0.01 | 1.0 | 1.0 |

| shape | T | key set | kernels | fwd ms | bwd ms | fwd+bwd vs unbounded | fwd TFLOP/s | bwd TFLOP/s |
|---|---|---|---|---|---|---|---|---|
| Mistral-7B B=1 | 8192 | causal | tensor-core (wgmma) | 0.01 | 0.01 | 1.00x | 1.0 | 1.0 |
"""
SDPA = """device: test
| backend | T | query heads | fwd ms | fwd+bwd ms | bwd ms | fwd TFLOP/s | bwd TFLOP/s |
|---|---|---|---|---|---|---|---|
| cuDNN | 2048 | 32 | 0.1 | 0.80 | 0.7 | 1 | 1 |
| flash (FA2) | 2048 | 32 | 0.1 | 1.00 | 0.9 | 1 | 1 |
| cuDNN | 2048 | 64 | 0.1 | 0.95 | 0.9 | 1 | 1 |
| cuDNN | 8192 | 32 | 0.1 | 4.00 | 3.9 | 1 | 1 |
| cuDNN | 8192 | 64 | 0.1 | 5.00 | 4.9 | 1 | 1 |
"""


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def run(*args):
    p = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def main():
    with tempfile.TemporaryDirectory() as d:
        coda, sdpa, empty = (os.path.join(d, n) for n in ("attn.txt", "sdpa.txt", "empty.txt"))
        for path, text in ((coda, CODA), (sdpa, SDPA), (empty, "no table here\n")):
            with open(path, "w") as f:
                f.write(text)
        rc, out = run(coda, sdpa)
        if rc != 0:
            fail("exit %d: %s" % (rc, out))
        rows = {}
        for line in out.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 10 and cells[1].isdigit():
                rows[(cells[0], int(cells[1]))] = cells
        # CoDA 2048: fastest forward 0.25 (ws), fastest backward 0.70 (wgmma) -> 0.95 ms; / 0.80 = 1.19x <= 1.3
        want = {
            ("CoDA", 2048): ["0.25 + 0.70 = 0.95", "0.800", "1.19x", "<= 1.3x: met", "0.950", "1.00x", "1.000", "0.95x"],
            ("CoDA", 8192): ["2.00 + 4.00 = 6.00", "4.000", "1.50x", "<= 2.0x: met", "5.000", "1.20x", "-", "-"],
            ("GQA", 2048): ["0.15 + 0.45 = 0.60", "0.800", "0.75x", "-", "-", "-", "1.000", "0.60x"],
        }
        for key, cells in want.items():
            if key not in rows:
                fail("no row for %s in:\n%s" % (key, out))
            if rows[key][2:] != cells:
                fail("%s: got %s, want %s" % (key, rows[key][2:], cells))
        if len(rows) != 3:
            fail("rows for %s, want exactly CoDA 2048/8192 and GQA 2048 (fp32, SmolLM2 and bounded rows excluded)" % sorted(rows))
        if "fastest backward tensor-core (wgmma)" not in out:
            fail("the kernels of the fastest backward are not named:\n" + out)
        # a slower cuDNN: the 8K target is missed
        with open(sdpa, "w") as f:
            f.write(SDPA.replace("| cuDNN | 8192 | 32 | 0.1 | 4.00 |", "| cuDNN | 8192 | 32 | 0.1 | 2.50 |"))
        rc, out = run(coda, sdpa)
        if rc != 0 or "2.40x | <= 2.0x: not met" not in out:
            fail("a missed target is not reported (exit %d):\n%s" % (rc, out))
        # bad input: a clear error, not a traceback or an empty table
        missing = os.path.join(d, "missing.txt")
        for args in ((coda, empty), (empty, sdpa), (coda,), (coda, missing)):
            rc, out = run(*args)
            if rc == 0 or "Traceback" in out or not any(w in out for w in ("usage", "no tensor-core rows", "cannot read")):
                fail("%s: exit %d, %r" % (args, rc, out))
    print("ok: fastest versions, ratios to cuDNN (1 and 2 streams) and FA2, targets met and missed, bad input refused")


if __name__ == "__main__":
    main()
