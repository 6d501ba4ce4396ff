"""Prints the main job's table (aggregator x momentum placement) and its figure.

Usage: python scripts/summarize_main_job.py results/main_job
"""

from __future__ import annotations

import sys

import numpy as np

from byzjax import report

PLACES = {"server_momentum": "momentum at server (standard)",
          "resam": "momentum at workers (ours)"}


def main(outdir: str) -> int:
    runs = report.load_runs(outdir)
    if not runs:
        print(f"no runs under {outdir}")
        return 1
    ref = [r for r in runs if r["config"]["attack"] == "none"]
    attacked = [r for r in runs if r["config"]["attack"] != "none"]
    stats = report.cell_stats(attacked, axes=("aggregator", "optimizer"),
                              metric="max_accuracy")
    aggs = sorted({k[0] for k in stats})
    cfg = runs[0]["config"]
    print(f"\nMain job: {cfg['dataset']} {cfg['model']}, n={cfg['num_workers']}, "
          f"f={cfg['num_byzantine']}, batch {cfg['batch_size']}, "
          f"{cfg['num_rounds']} rounds, attack ALIE (eps 1.5); max top-1 test "
          f"accuracy, mean +- std over {len({r['seed'] for r in runs})} seeds\n")
    if ref:
        acc = np.asarray([r["max_accuracy"] for r in ref])
        print(f"Unattacked reference (mean, all honest): {acc.mean():.4f} +- "
              f"{acc.std():.4f}\n")
    print("| aggregator | " + " | ".join(PLACES.values()) + " | gain |")
    print("|---|---|---|---|")
    for a in aggs:
        cells, means = [], []
        for opt in PLACES:
            v = stats.get((a, opt))
            cells.append("n/a" if v is None else f"{v['mean']:.4f} +- {v['std']:.4f}")
            means.append(np.nan if v is None else v["mean"])
        print(f"| {report.SHORT.get(a, a)} | " + " | ".join(cells)
              + f" | {means[1] - means[0]:+.4f} |")
    paths = report.write_report(outdir, metric="max_accuracy")
    print("\nFigures: " + ", ".join(p for k, p in paths.items() if p.endswith(".png")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results/main_job"))
