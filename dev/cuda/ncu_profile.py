#!/usr/bin/env python3
"""Two helpers for profiling one kernel launch with Nsight Compute in a single call (scripts/gpu_checks.sh
profile-attention uses both). Standard library only.

    ncu --csv --metrics launch__grid_size -k regex:ca_fb_backward_kernel ./coda_attention 1 0 > list.csv
    python3 dev/cuda/ncu_profile.py pick list.csv '<2>' 2048        # -> the --launch-skip of that launch
    ncu --set full --import-source yes -k regex:ca_fb_backward_kernel --launch-skip N --launch-count 1 -o rep ./coda_attention 1 0
    ncu -i rep.ncu-rep --page source --csv --print-source sass > sass.csv
    python3 dev/cuda/ncu_profile.py stalls sass.csv [top=25]        # -> Markdown: where the warps wait

pick: among the launches of the list (ncu numbers them with "ID"; a launch has one row per metric),
the index of the first whose kernel name (demangled: template arguments as "<128, 2, 0>") contains
the given text and whose grid (launch__grid_size, thousands separators allowed) is the given size.
stalls: per SASS instruction the warp-stall samples and their two main reasons, the reasons summed
over the kernel, and the instructions with the most shared-memory wavefronts beyond the ideal (bank
conflicts). Exit status 1 with a reason when the input has nothing to say.
"""
import csv
import sys


def fail(msg):
    print("ncu_profile: " + msg, file=sys.stderr)
    sys.exit(1)


def number(s):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return 0.0


def pick(path, name_part, grid):
    rows = [r for r in csv.reader(open(path, errors="replace")) if len(r) > 5]
    if not rows or "ID" not in rows[0]:
        fail(f"{path}: no ncu CSV header (ID, Kernel Name, Metric Name, Metric Value)")
    h = {k: i for i, k in enumerate(rows[0])}
    for k in ("ID", "Kernel Name", "Metric Name", "Metric Value"):
        if k not in h:
            fail(f"{path}: no column {k!r}")
    ids = []
    for r in rows[1:]:
        if r[h["ID"]] not in ids:
            ids.append(r[h["ID"]])
        if (r[h["Metric Name"]] == "launch__grid_size" and name_part in r[h["Kernel Name"]]
                and number(r[h["Metric Value"]]) == grid):
            return ids.index(r[h["ID"]])
    fail(f"{path}: no launch of a kernel named like {name_part!r} with a grid of {grid:g} blocks ({len(ids)} launches listed)")


def stalls(path, top):
    lines = list(csv.reader(open(path, errors="replace")))
    start = next((i for i, r in enumerate(lines) if "Source" in r and "Warp Stall Sampling (All Samples)" in r), None)
    if start is None:
        fail(f"{path}: no source table (ncu -i REP --page source --csv --print-source sass)")
    h = {k: i for i, k in enumerate(lines[start])}
    data = [r for r in lines[start + 1:] if len(r) == len(lines[start])]
    get = lambda r, k: number(r[h[k]]) if k in h else 0.0
    total = sum(get(r, "Warp Stall Sampling (All Samples)") for r in data)
    if total <= 0:
        fail(f"{path}: no stall samples")
    reasons = [k for k in lines[start] if k.startswith("stall_") and "Not Issued" not in k]
    print(f"{len(data)} instructions, {int(total)} stall samples\n")
    # a branch's samples are a spin loop's (an mbarrier wait, a flag poll): the instruction before it says which
    print("| samples | # | instruction | main reasons |\n|---|---|---|---|")
    order = sorted(range(len(data)), key=lambda i: -get(data[i], "Warp Stall Sampling (All Samples)"))
    for i in order[:top]:
        r = data[i]
        main = sorted(((get(r, k), k) for k in reasons), reverse=True)[:2]
        why = ", ".join(f"{k[6:]} {v / total:.1%}" for v, k in main if v > 0)
        src = r[h["Source"]].strip()
        if "BRA" in src and i > 0:
            src += f"` after `{data[i - 1][h['Source']].strip()}"
        print(f"| {get(r, 'Warp Stall Sampling (All Samples)') / total:.1%} | {i} | `{src}` | {why} |")
    print("\n| stall reason | share of samples |\n|---|---|")
    for k in sorted(reasons, key=lambda k: -sum(get(r, k) for r in data)):
        s = sum(get(r, k) for r in data)
        if s > 0:
            print(f"| {k[6:]} | {s / total:.1%} |")
    excess = [r for r in data if get(r, "L1 Wavefronts Shared Excessive") > 0]
    if excess:
        print("\n| shared wavefronts beyond ideal | of | instruction |\n|---|---|---|")
        for r in sorted(excess, key=lambda r: -get(r, "L1 Wavefronts Shared Excessive"))[:10]:
            print(f"| {int(get(r, 'L1 Wavefronts Shared Excessive'))} | {int(get(r, 'L1 Wavefronts Shared'))} | `{r[h['Source']].strip()}` |")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "pick":
        print(pick(sys.argv[2], sys.argv[3], number(sys.argv[4])))
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "stalls":
        stalls(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 25)
    else:
        fail("usage: ncu_profile.py pick LIST.csv NAME_PART GRID | ncu_profile.py stalls SOURCE.csv [TOP]")
