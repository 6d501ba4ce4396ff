"""The peer-to-peer MoNNA reproduction figure (docs/figures/p2p_monna.png) from
its records (a documentation script, not part of the package).

One panel per (attack, Dirichlet alpha): the honest nodes' mean test accuracy
(averaged over the seeds) of MoNNA and of the trimmed mean, with the
unattacked averaging run of the same alpha in grey; the band is the worst and
best honest node (averaged over the seeds).

Usage::

    python scripts/p2p_monna_figure.py docs/reproduction/records/p2p_monna \\
        docs/figures/p2p_monna.png
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from collections import defaultdict

import numpy as np

ATTACKS = (("adaptive_alie", "Little (line-searched)"),
           ("adaptive_foe", "Empire (line-searched)"),
           ("sign_flip", "sign flip"), ("label_flip", "label flip"))
RULES = (("monna", "MoNNA", "#009E73"), ("trimmed_mean", "trimmed mean", "#E69F00"))


def load(folder: str) -> dict:
    """``{(aggregator, attack, alpha): {metric: [seeds x rounds]}}``."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for path in glob.glob(os.path.join(folder, "runs", "*.json")):
        with open(path) as fh:
            r = json.load(fh)
        c, m = r["config"], r["metrics"]
        key = (c["aggregator"], c["attack"], float(c["dirichlet_alpha"]))
        out[key]["round"] = m["round"]
        for k in ("test_accuracy", "test_accuracy_min", "test_accuracy_max"):
            out[key][k].append(m[k])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records")
    p.add_argument("out")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load(args.records)
    alphas = sorted({k[2] for k in runs})
    fig, axes = plt.subplots(len(ATTACKS), len(alphas), sharex=True, sharey=True,
                             figsize=(3.6 * len(alphas), 2.1 * len(ATTACKS)),
                             squeeze=False)
    for j, alpha in enumerate(alphas):
        ref = runs.get(("mean", "none", alpha))
        for i, (attack, title) in enumerate(ATTACKS):
            ax = axes[i][j]
            if ref:
                ax.plot(ref["round"], np.mean(ref["test_accuracy"], 0), color="0.5",
                        lw=1, label="averaging, no Byzantine node")
            for rule, name, color in RULES:
                d = runs.get((rule, attack, alpha))
                if not d:
                    continue
                ax.plot(d["round"], np.mean(d["test_accuracy"], 0), color=color,
                        marker=".", label=name)
                ax.fill_between(d["round"], np.mean(d["test_accuracy_min"], 0),
                                np.mean(d["test_accuracy_max"], 0), color=color,
                                alpha=0.25, lw=0)
            ax.set_ylim(0.75, 1.0)
            ax.grid(alpha=0.3)
            ax.set_title(f"{title}, alpha {alpha:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel("test accuracy", fontsize=8)
            if i == len(ATTACKS) - 1:
                ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
