#!/usr/bin/env python3
"""Per-kernel GPU times from an `ncu --metrics gpu__time_duration.sum` log: one row per distinct
(kernel, grid, block), with the launch count and the median time. Usage:
    ncu --clock-control none --metrics gpu__time_duration.sum -k regex:ca_wg_ ./coda_attention 1 0 > ncu.txt
    python3 dev/cuda/ncu_table.py ncu.txt
"""
import re
import statistics
import sys

rows, cur = {}, None
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\s+(?:void )?(\w+)(<[^(]*>)?\(.*\) \((\d+), (\d+), (\d+)\)x\((\d+), (\d+), (\d+)\)", line)
    if m:
        name, tmpl = m.group(1), (m.group(2) or "")
        cur = (name + tmpl, "x".join(m.group(i) for i in (3, 4, 5)), m.group(6))
        continue
    m = re.search(r"gpu__time_duration.sum\s+(\S+)\s+([\d.,]+)", line)
    if m and cur:
        t = float(m.group(2).replace(",", ""))
        t *= {"ns": 1e-3, "us": 1.0, "ms": 1e3, "msecond": 1e3, "usecond": 1.0, "nsecond": 1e-3}.get(m.group(1), 1.0)
        rows.setdefault(cur, []).append(t)
        cur = None
print("| kernel | grid | block | launches | median us |")
print("|---|---|---|---|---|")
for (name, grid, block), ts in rows.items():
    print(f"| {name} | {grid} | {block} | {len(ts)} | {statistics.median(ts):.1f} |")
