#!/usr/bin/env python3
"""The one-pass backward's block schedule, simulated: how much longer than its work / SMs the grid runs
under a launch order, by list scheduling (each SM holds one block; a free SM takes the next block
index). A block's cost is its steps (query tiles of 32: T / 32 - 4 n for key block n of 128 keys) plus
a fixed cost per block. The orders:

    lightest    each head's key blocks lightest first, heads one after the other (the first form)
    heaviest    every head's key block 0, then every head's block 1, .. (no groups)
    groups      heads in groups of 16384 / T, heaviest first within a group: the mapping of
                ca_fb_block_coords (llmc/coda_attention_fused_bwd.cuh), written out again here

It shows what the schedule alone costs, not L2 locality (the reason for the groups: dev/PERF.md,
session 14). Only the Python standard library. Usage:
    python3 dev/cuda/fb_schedule.py [SMs] [heads] [fixed steps per block]   (default 132 32 4)
"""
import heapq
import sys

GROUP_ROWS = 16384  # CA_FB_GROUP_ROWS
BKV, BQ = 128, 32   # CA_FB_BKV, CA_FB_BQ


def makespan(costs, sms):
    free = [0.0] * sms
    end = 0.0
    for c in costs:
        t = heapq.heappop(free) + c
        end = max(end, t)
        heapq.heappush(free, t)
    return end


def block_coords(idx, T, BH):
    """ca_fb_block_coords: block index -> (key block n, head bh)."""
    nkb = (T + BKV - 1) // BKV
    G = max(1, min(BH, GROUP_ROWS // T))
    g = idx // (G * nkb)
    gsize = min(G, BH - g * G)
    r = idx - g * G * nkb
    return r // gsize, g * G + r % gsize


def orders(T, BH):
    nkb = (T + BKV - 1) // BKV
    return {
        "lightest": [nkb - 1 - i % nkb for i in range(nkb * BH)],
        "heaviest": [i // BH for i in range(nkb * BH)],
        "groups": [block_coords(i, T, BH)[0] for i in range(nkb * BH)],
    }


def main(argv):
    try:
        sms, heads, fixed = (int(argv[1]) if len(argv) > 1 else 132, int(argv[2]) if len(argv) > 2 else 32,
                             int(argv[3]) if len(argv) > 3 else 4)
    except ValueError:
        sys.exit("fb_schedule.py: SMs, heads and fixed steps must be integers")
    if sms < 1 or heads < 1 or fixed < 0:
        sys.exit("fb_schedule.py: need SMs >= 1, heads >= 1, fixed steps >= 0")
    print(f"makespan / (work / SMs), {sms} SMs, {heads} heads, {fixed} fixed steps a block\n")
    print("| T | key blocks | heads a group | lightest | heaviest | groups |\n|---|---|---|---|---|---|")
    for T in (1024, 2048, 4096, 8192, 16384, 32768):
        nq = (T + BQ - 1) // BQ
        cost = lambda n: nq - 4 * n + fixed
        row = []
        for name, ns in orders(T, heads).items():
            costs = [cost(n) for n in ns]
            row.append(makespan(costs, sms) / (sum(costs) / sms))
        G = max(1, min(heads, GROUP_ROWS // T))
        print(f"| {T} | {(T + BKV - 1) // BKV} | {G} | " + " | ".join(f"{x:.3f}" for x in row) + " |")


if __name__ == "__main__":
    main(sys.argv)
