"""Issue 15's attention targets from one call's two tables: coda_attention's timing table and
sdpa_baseline.py's, both written by the same call on the same card.

    ./coda_attention 10 0 > attn.txt && python3 sdpa_baseline.py > sdpa.txt
    python3 attention_targets.py attn.txt sdpa.txt

For each length of the 7B head shape (B = 1, H = 32, Hkv = 8, Dh = 128) it takes coda.c's fastest
tensor-core forward and fastest backward of CoDA (and of GQA) and divides forward + backward by
PyTorch SDPA's: cuDNN with one stream's work (32 query heads; the issue's yardstick: at most 1.3x at
T = 2048 and 2.0x at T = 8192), cuDNN with both streams' work (64 query heads over the same 8 KV heads)
and FlashAttention-2 with one stream. Only the Python standard library; the numbers are read, never typed.
"""
import sys

TARGETS = {2048: 1.3, 8192: 2.0}  # issue 15: CoDA forward + backward over cuDNN's one-stream time


def table_rows(path):
    """The cells of every Markdown table row of a file (header and separator rows included)."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("|") and line.endswith("|"):
                    rows.append([c.strip() for c in line.strip("|").split("|")])
    except (OSError, UnicodeDecodeError) as e:
        sys.exit("attention_targets.py: cannot read %s: %s" % (path, e))
    return rows


def coda_times(path):
    """{(attention, T): {"fwd": (ms, kernels), "bwd": (ms, kernels)}}, fastest tensor-core versions,
    from coda_attention's first timing table (shape | T | attention | kernels | fwd ms | bwd ms | ...)."""
    best = {}
    for r in table_rows(path):
        if len(r) != 8 or not r[0].startswith("Mistral-7B") or not r[3].startswith("tensor-core"):
            continue
        attn = "CoDA" if r[2].startswith("CoDA") else "GQA" if r[2].startswith("GQA") else None
        if attn is None:
            continue
        key, kernels = (attn, int(r[1])), r[3]
        entry = best.setdefault(key, {})
        for name, ms in (("fwd", float(r[4])), ("bwd", float(r[5]))):
            if name not in entry or ms < entry[name][0]:
                entry[name] = (ms, kernels)
    return best


def sdpa_times(path):
    """{(backend, T, query heads): fwd + bwd ms} from sdpa_baseline.py's table."""
    out = {}
    for r in table_rows(path):
        if len(r) == 8 and r[1].isdigit():
            out[(r[0], int(r[1]), int(r[2]))] = float(r[4])
    return out


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: attention_targets.py CODA_ATTENTION_OUTPUT SDPA_BASELINE_OUTPUT")
    coda, sdpa = coda_times(argv[1]), sdpa_times(argv[2])
    if not coda or not sdpa:
        sys.exit("attention_targets.py: no tensor-core rows in %s or no SDPA rows in %s (BF16 build on an sm_90 GPU? torch?)"
                 % (argv[1], argv[2]))
    print("| attention | T | coda.c fwd + bwd ms | cuDNN 1 stream | ratio | target | cuDNN 2 streams | ratio | FA2 1 stream | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (attn, T), e in sorted(coda.items()):
        if "fwd" not in e or "bwd" not in e:
            continue
        ms = e["fwd"][0] + e["bwd"][0]
        one, two, fa2 = sdpa.get(("cuDNN", T, 32)), sdpa.get(("cuDNN", T, 64)), sdpa.get(("flash (FA2)", T, 32))
        ratio = lambda base: "%.2fx" % (ms / base) if base else "-"
        base = lambda v: "%.3f" % v if v else "-"
        target = TARGETS.get(T) if attn == "CoDA" else None
        verdict = ("<= %.1fx: %s" % (target, "met" if one and ms / one <= target else "not met")) if target else "-"
        print("| %s | %d | %.2f + %.2f = %.2f | %s | %s | %s | %s | %s | %s | %s |" % (
            attn, T, e["fwd"][0], e["bwd"][0], ms, base(one), ratio(one), verdict,
            base(two) if attn == "CoDA" else "-", ratio(two) if attn == "CoDA" else "-", base(fa2), ratio(fa2)))
    print()
    for (attn, T), e in sorted(coda.items()):
        print("%s T=%d: fastest forward %s; fastest backward %s" % (attn, T, e["fwd"][1], e["bwd"][1]))


if __name__ == "__main__":
    main(sys.argv)
