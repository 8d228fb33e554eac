#!/usr/bin/env python3
"""Checks dev/cuda/ncu_profile.py (run by test_cpu's ncu_profile_pick_and_stalls) on synthetic files in
ncu's CSV formats: `pick` finds the launch index by demangled name and grid (several metric rows per
launch, thousands separators), refuses a launch that is not there and a file that is not ncu's;
`stalls` ranks instructions by stall samples, names a spin loop's branch by the instruction before it,
sums the reasons, lists bank-conflicted stores, and refuses a file with no source table. Standard
library only. Prints "ok: ..." and exits 0, or a reason and exits 1."""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "cuda", "ncu_profile.py")

HDR = '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"\n'


def launch(i, name, grid, ns):
    pre = f'"{i}","7","bench","127.0.0.1","void {name}(CodaAttnShape, float *)","1","13","(384, 1, 1)","({grid}, 1, 1)","0","9.0","Command line profiler metrics",'
    g = f"{grid:,}"
    return pre + f'"gpu__time_duration.sum","ns","{ns:,}"\n' + pre + f'"launch__grid_size","","{g}"\n'


LIST = ("==PROF== Connected to process 7 (bench)\nsome program output\n" + HDR + launch(0, "ca_fb_backward_kernel<2>", 64, 37216)
        + launch(1, "ca_fb_backward_kernel<1>", 2048, 683328) + launch(2, "ca_fb_backward_kernel<2>", 512, 683328)
        + launch(3, "ca_fb_backward_kernel<2>", 2048, 7100000) + launch(4, "ca_fb_backward_kernel<2>", 2048, 7100000))

COLS = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Warp Stall Sampling (Not-issued Samples)", "L1 Wavefronts Shared Excessive",
        "L1 Wavefronts Shared", "stall_barrier", "stall_long_sb", "stall_wait", "stall_barrier (Not Issued)"]


def row(addr, src, samples, barrier=0, long_sb=0, wait=0, excess=0, wavefronts=0):
    vals = [addr, src, samples, samples, excess, wavefronts, barrier, long_sb, wait, barrier]
    return ",".join(f'"{v:,}"' if isinstance(v, int) else f'"{v}"' for v in vals) + "\n"


SASS = ('"Kernel Name","void ca_fb_backward_kernel<(int)2>(CodaAttnShape, float *)",\n' + ",".join(f'"{c}"' for c in COLS) + "\n"
        + row("0x10", "      HGMMA.64x64x16.F32.BF16 R152, gdesc[UR16].tnspB, RZ, !UPT", 100, barrier=100)
        + row("0x20", "      WARPGROUP.DEPBAR.LE gsb0, 0x0", 3000, barrier=2900, wait=100)
        + row("0x30", "      SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR9], R5", 10, long_sb=10)
        + row("0x40", "      @!P0  BRA 0x7ff3a08c9380", 1890, long_sb=1800, wait=90)
        + row("0x50", "      STS.64 [R17], R154", 0, excess=4259840, wavefronts=8519680))


def run(*args):
    p = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def main():
    with tempfile.TemporaryDirectory() as d:
        lst, sass, junk = (os.path.join(d, n) for n in ("list.csv", "sass.csv", "junk.csv"))
        open(lst, "w").write(LIST)
        open(sass, "w").write(SASS)
        open(junk, "w").write("not, an, ncu, file\n1, 2, 3, 4\n")
        rc, out, err = run("pick", lst, "<2>", "2048")
        if rc != 0 or out.strip() != "3":
            return f"pick <2> 2048: rc {rc}, got {out.strip()!r} (want 3: launch 1 is <1>, launch 2 has another grid) {err}"
        rc, out, _ = run("pick", lst, "<1>", "2,048")
        if rc != 0 or out.strip() != "1":
            return f"pick <1> 2,048: rc {rc}, got {out.strip()!r}"
        rc, out, err = run("pick", lst, "<2>", "4096")
        if rc != 1 or "no launch" not in err:
            return f"pick of an absent launch: rc {rc}, {err!r}"
        rc, out, err = run("pick", junk, "<2>", "2048")
        if rc != 1 or "no ncu CSV header" not in err:
            return f"pick on a file that is not ncu's: rc {rc}, {err!r}"
        rc, out, err = run("stalls", sass, "2")
        if rc != 0:
            return f"stalls: rc {rc}: {err}"
        table = out.split("\n\n")
        top = [l for l in out.splitlines() if l.startswith("| 60.0% |") or l.startswith("| 37.8% |")]
        if len(top) != 2 or "DEPBAR" not in top[0] or "after `SYNCS.PHASECHK" not in top[1]:
            return f"stalls: the top two (60.0% DEPBAR, 37.8% the spin loop's branch, named by its TRYWAIT) not found:\n{out}"
        if "HGMMA" in table[1]:
            return f"stalls: top=2 printed a third instruction:\n{out}"
        if "| barrier | 60.0% |" not in out or "| long_sb | 36.2% |" not in out or "| wait | 3.8% |" not in out:
            return f"stalls: reason totals wrong:\n{out}"
        if "| 4259840 | 8519680 | `STS.64 [R17], R154` |" not in out:
            return f"stalls: the conflicted store not listed:\n{out}"
        rc, out, err = run("stalls", lst)
        if rc != 1 or "no source table" not in err:
            return f"stalls on a file with no source table: rc {rc}, {err!r}"
        rc, out, err = run("pick", lst)
        if rc != 1 or "usage" not in err:
            return f"bad arguments: rc {rc}, {err!r}"
    return None


if __name__ == "__main__":
    why = main()
    if why:
        print(why)
        sys.exit(1)
    print("ok: pick by name and grid, refusals, stall ranking with spin-loop names, reason totals, conflicted stores")
