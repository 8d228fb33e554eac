#!/usr/bin/env python3
"""Plots a train_coda log (OUT/log.txt) to PNG: training loss, validation loss, lr, grad norm, tok/s.

    python3 scripts/plot_log.py out/log.txt out/log.png

Needs matplotlib (Debian: apt-get install python3-matplotlib); it is the only thing this script needs."""
import sys

def parse(path):
    series = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            tok = line.split()
            if tok[0] != "step" or len(tok) % 2:
                continue
            step = int(tok[1])
            for k, v in zip(tok[2::2], tok[3::2]):
                series.setdefault(k, []).append((step, float(v)))
    return series

def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_log.py LOG.txt OUT.png")
    series = parse(sys.argv[1])
    if "loss" not in series:
        sys.exit(f"{sys.argv[1]}: no 'step N loss X' lines")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("loss", "loss"), ("lr", "learning rate"), ("norm", "grad norm"), ("tok_s", "tokens/s")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, title) in zip(axes.flat, panels):
        if key in series:
            xs, ys = zip(*series[key])
            ax.plot(xs, ys, lw=1, label="train" if key == "loss" else key)
        if key == "loss" and "val_loss" in series:
            xs, ys = zip(*series["val_loss"])
            ax.plot(xs, ys, "o-", lw=1, ms=3, label="val")
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("optimizer update")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    print(f"wrote {sys.argv[2]}")

if __name__ == "__main__":
    main()
