#!/usr/bin/env python3
"""Checks scripts/demo_report.py and scripts/pngplot.py on a synthetic demo directory (run by
test_cpu's demo_report_tables_and_pngs): the results table holds each arm's perplexity, the 2x2's
penalties and interaction are the differences of those numbers, the context sweep is tabulated, and
both PNGs are valid images (signature, IHDR, CRCs, the decompressed size) with coloured lines on them.
Standard library only. Prints "ok: ..." and exits 0, or a reason and exits 1."""
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.join(HERE, "..", "..", "scripts", "demo_report.py")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(path + ": not a PNG signature")
    at, idat, w = 8, b"", None
    while at < len(data):
        n, tag = struct.unpack(">I", data[at:at + 4])[0], data[at + 4:at + 8]
        body, crc = data[at + 8:at + 8 + n], struct.unpack(">I", data[at + 8 + n:at + 12 + n])[0]
        if zlib.crc32(tag + body) & 0xFFFFFFFF != crc:
            fail(f"{path}: bad CRC in {tag}")
        if tag == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            if depth != 8 or ctype != 2:
                fail(f"{path}: expected 8-bit RGB, got depth {depth} type {ctype}")
        elif tag == b"IDAT":
            idat += body
        at += 12 + n
    raw = zlib.decompress(idat)
    if w is None or len(raw) != h * (1 + 3 * w):
        fail(f"{path}: {len(raw)} bytes of image data for {w}x{h}")
    coloured = sum(1 for i in range(0, len(raw) - 3, 3) if raw[i:i + 3] not in (b"\xff\xff\xff", b"\x00\x00\x00"))
    if coloured < 1000:
        fail(f"{path}: almost nothing drawn ({coloured} coloured bytes triples)")
    return w, h


def main():
    out = tempfile.mkdtemp(prefix="coda_demo_report_")
    os.makedirs(os.path.join(out, "eval"))
    for k, run in enumerate(["phase0", "phase1", "phase2", "gqa_phase1", "gqa_phase2"]):
        os.makedirs(os.path.join(out, run))
        with open(os.path.join(out, run, "log.txt"), "w") as f:
            f.write(f"# phase {k} card X\n")
            for s in range(1, 41):
                f.write(f"step {s} loss {6.0 - 0.02 * s - 0.1 * k:.4f} lr 1e-3 norm 0.3 ms 5 tok_s 1e6 mfu 0.1 mem_gib 1\n")
            f.write(f"step 20 val_loss {5.8 - 0.1 * k:.4f}\nstep 40 val_loss {5.5 - 0.1 * k:.4f}\n")
    ppl = {"base": 90.0, "gqa_unbounded": 80.0, "coda_unbounded": 78.0, "coda_bounded_tiny": 95.0, "coda_bounded_medium": 85.0,
           "coda_bounded_large": 82.0, "coda_bounded_window-only": 88.0, "gqa_bounded_medium": 99.0}
    for arm, v in ppl.items():
        with open(os.path.join(out, "eval", arm + ".json"), "w") as f:
            f.write(json.dumps({"procedure": "sliding", "shard": "val.bin", "tokens": 1000, "device": "test", "ppl": v,
                                "tokens_scored": 999}) + "\n")
    for name, base in [("sweep_coda_unbounded", 100.0), ("sweep_coda_bounded_medium", 110.0)]:
        with open(os.path.join(out, "eval", name + ".json"), "w") as f:
            for i, c in enumerate([512, 1024, 2048, 4096, 8192]):
                f.write(json.dumps({"procedure": "chunked", "ctx": c, "ppl": base - 3 * i}) + "\n")
    r = subprocess.run([sys.executable, REPORT, out], capture_output=True, text=True)
    if r.returncode != 0:
        fail("demo_report.py exited %d: %s" % (r.returncode, r.stderr[-500:]))
    md = open(os.path.join(out, "results.md")).read()
    for needle in ["| CoDA, unbounded (phase 1) | 78.000 | +0.0 % |", "| CoDA bounded medium (256/64/64) | 85.000 | +9.0 % |",
                   "| GQA | 80.000 | 99.000 | +19.000 |", "| CoDA | 78.000 | 85.000 | +7.000 |", "Interaction (GQA penalty - CoDA penalty): +12.000",
                   "differential attention reduces the bounded penalty", "| CoDA bounded medium | 110.000 | 107.000 | 104.000 | 101.000 | 98.000 |"]:
        if needle not in md:
            fail("results.md lacks: " + needle + "\n" + md)
    sizes = [check_png(os.path.join(out, p)) for p in ("loss.png", "ppl_context.png")]
    print("ok: results.md (%d lines) and loss.png %dx%d, ppl_context.png %dx%d" % (md.count("\n"), *sizes[0], *sizes[1]))


if __name__ == "__main__":
    main()
