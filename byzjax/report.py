"""Turning a results folder into the sources' tables and figures.

``byzjax report DIR`` reads every ``DIR/runs/*.json`` record and writes

* ``table_best.md``: best aggregator per (optimizer x attack) cell, as
  Fabris (2023, MSc thesis, Chalmers) prints Tables 4.1-4.4 (``0.777 CWTM``),
  the metric averaged over seeds;
* ``table_full.md``: every (optimizer, attack, aggregator) cell, mean +- std
  over seeds, with the number of diverged runs;
* ``heatmaps.png``: accuracy per aggregator x attack, one panel per optimizer;
* ``curves.png``: test-accuracy curves, rows = attacks, columns = optimizers,
  one line per aggregator (the thesis's Figures 4.3-4.6);
* ``run_figures/<run_id>.png``: per run, the accuracy curve above the
  diagnostics that explain it (:func:`plot_run_diagnostics`).
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from byzjax.optim import optimizer_names

__all__ = ["load_runs", "cell_stats", "best_table", "full_table", "plot_heatmaps",
           "plot_curves", "write_report", "SHORT", "plot_run_diagnostics",
           "write_run_figures"]

#: Short names the thesis uses in its tables.
SHORT = {
    "mean": "AVG", "trimmed_mean": "CWTM", "coordinate_median": "CWM",
    "minimum_diameter_averaging": "MDA", "mda": "MDA", "meamed": "MEAMED",
    "krum": "KRUM", "multi_krum": "MKRUM", "geometric_median": "GM",
    "bulyan": "BULYAN", "centered_clipping": "CC", "phocas": "PHOCAS",
}


def load_runs(outdir: str) -> list[dict[str, Any]]:
    """All valid run records under ``outdir/runs`` (or ``outdir`` itself).

    Each file is checked (:func:`byzjax.sim._store.read_record`: complete,
    parseable, of its run id, checksum); a bad one is skipped with a
    :class:`~byzjax.sim._store.BadRecordWarning` naming it.

    Raises:
      ValueError: ``outdir`` does not exist or is not a folder.
    """
    from byzjax.sim import _store
    from byzjax.sim._config import ConfigError

    if not os.path.isdir(outdir):
        raise ConfigError(f"no results folder {outdir!r}; give the --outdir of a "
                         "byzjax train or sweep")
    runs_dir = os.path.join(outdir, "runs")
    if not glob.glob(os.path.join(glob.escape(runs_dir), "*.json")):
        runs_dir = outdir
    return list(_store.load_records(runs_dir).values())


def _key(run, axes):
    return tuple(run["config"][a] for a in axes)


def cell_stats(runs: Iterable[dict], *, axes=("optimizer", "attack", "aggregator"),
               metric: str = "final_accuracy") -> dict[tuple, dict[str, float]]:
    """Mean, std, count and divergences of ``metric`` per cell of ``axes``."""
    cells: dict[tuple, list] = defaultdict(list)
    for r in runs:
        cells[_key(r, axes)].append(r)
    out = {}
    for k, rs in cells.items():
        vals = np.asarray([r[metric] for r in rs], np.float64)
        vals = np.where(np.isfinite(vals), vals, 0.0)
        out[k] = {"mean": float(vals.mean()), "std": float(vals.std()),
                  "count": len(rs), "diverged": sum(bool(r["diverged"]) for r in rs)}
    return out


def _order(values, preferred):
    pref = [v for v in preferred if v in values]
    return pref + sorted(v for v in values if v not in pref)


OPT_ORDER = optimizer_names()  # the registry's order
ATTACK_ORDER = ("none", "alie", "foe", "sign_flip", "label_flip", "inf", "neg_inf",
                "nan")


def best_table(runs, *, metric="final_accuracy") -> str:
    """Markdown: best aggregator per optimizer x attack cell."""
    stats = cell_stats(runs, metric=metric)
    opts = _order({k[0] for k in stats}, OPT_ORDER)
    atts = _order({k[1] for k in stats}, ATTACK_ORDER)
    lines = ["| | " + " | ".join(atts) + " |", "|---" * (len(atts) + 1) + "|"]
    for o in opts:
        row = [o]
        for a in atts:
            cands = [(v["mean"], k[2]) for k, v in stats.items() if k[:2] == (o, a)]
            if not cands:
                row.append("")
                continue
            m, agg = max(cands)
            row.append(f"{m:.4f} {SHORT.get(agg, agg)}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def full_table(runs, *, metric="final_accuracy") -> str:
    """Markdown: every cell, mean +- std over seeds, and divergences."""
    stats = cell_stats(runs, metric=metric)
    lines = ["| optimizer | attack | aggregator | " + metric + " | seeds | diverged |",
             "|---|---|---|---|---|---|"]
    for k in sorted(stats, key=lambda k: (_rank(k[0], OPT_ORDER),
                                          _rank(k[1], ATTACK_ORDER), k[2])):
        v = stats[k]
        lines.append(f"| {k[0]} | {k[1]} | {SHORT.get(k[2], k[2])} | "
                     f"{v['mean']:.4f} +- {v['std']:.4f} | {v['count']} | "
                     f"{v['diverged']} |")
    return "\n".join(lines)


def _rank(v, order):
    return (order.index(v), "") if v in order else (len(order), str(v))


def plot_heatmaps(runs, path: str, *, metric="final_accuracy") -> None:
    """One panel per optimizer: aggregator (rows) x attack (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = cell_stats(runs, metric=metric)
    opts = _order({k[0] for k in stats}, OPT_ORDER)
    atts = _order({k[1] for k in stats}, ATTACK_ORDER)
    aggs = sorted({k[2] for k in stats})
    fig, axes = plt.subplots(1, len(opts), figsize=(1.2 + 1.1 * len(atts) * len(opts),
                                                    1.0 + 0.5 * len(aggs)),
                             squeeze=False)
    for ax, o in zip(axes[0], opts):
        m = np.full((len(aggs), len(atts)), np.nan)
        for i, g in enumerate(aggs):
            for j, a in enumerate(atts):
                if (o, a, g) in stats:
                    m[i, j] = stats[(o, a, g)]["mean"]
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(o)
        ax.set_xticks(range(len(atts)), atts, rotation=45, ha="right")
        ax.set_yticks(range(len(aggs)), [SHORT.get(g, g) for g in aggs])
        for i in range(len(aggs)):
            for j in range(len(atts)):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center",
                            fontsize=7, color="w" if m[i, j] < 0.6 else "k")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=metric)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_curves(runs, path: str) -> None:
    """Rows = attacks, columns = optimizers, one line per aggregator (seed mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[_key(r, ("optimizer", "attack", "aggregator"))].append(r)
    opts = _order({k[0] for k in groups}, OPT_ORDER)
    atts = _order({k[1] for k in groups}, ATTACK_ORDER)
    aggs = sorted({k[2] for k in groups})
    colors = dict(zip(aggs, plt.cm.tab10.colors))
    fig, axes = plt.subplots(len(atts), len(opts), figsize=(3.2 * len(opts),
                                                            2.3 * len(atts)),
                             squeeze=False, sharex=True, sharey=True)
    for i, a in enumerate(atts):
        for j, o in enumerate(opts):
            ax = axes[i][j]
            for g in aggs:
                rs = groups.get((o, a, g))
                if not rs:
                    continue
                x = np.asarray(rs[0]["metrics"]["round"])
                y = np.asarray([r["metrics"]["test_accuracy"] for r in rs], float)
                y = np.where(np.isfinite(y), y, 0.0)
                ax.plot(x, y.mean(0), color=colors[g], label=SHORT.get(g, g), lw=1.3)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(o)
            if j == 0:
                ax.set_ylabel(f"{a}\ntest acc.")
            if i == len(atts) - 1:
                ax.set_xlabel("round")
    legend = {}
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend), loc="upper center",
               ncol=min(len(legend), 8), bbox_to_anchor=(0.5, 1.04))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(outdir: str, *, metric: str = "final_accuracy",
                 figures: bool = True) -> dict[str, str]:
    """Writes the tables and figures of ``outdir``; returns their paths."""
    from byzjax.sim._config import ConfigError

    runs = load_runs(outdir)
    if not runs:
        raise ConfigError(f"no run records in {os.path.join(outdir, 'runs')!r} "
                         "(nothing finished yet?); run byzjax train or sweep with "
                         f"--outdir {outdir} first")
    paths = {"best": os.path.join(outdir, "table_best.md"),
             "full": os.path.join(outdir, "table_full.md")}
    with open(paths["best"], "w") as fh:
        fh.write(best_table(runs, metric=metric) + "\n")
    with open(paths["full"], "w") as fh:
        fh.write(full_table(runs, metric=metric) + "\n")
    if figures:
        paths["heatmaps"] = os.path.join(outdir, "heatmaps.png")
        paths["curves"] = os.path.join(outdir, "curves.png")
        plot_heatmaps(runs, paths["heatmaps"], metric=metric)
        plot_curves(runs, paths["curves"])
        paths["runs"] = os.path.join(outdir, "run_figures")
        write_run_figures(runs, paths["runs"])
    return paths


def _curve(run, key):
    values = run["metrics"].get(key)
    if values is None:
        return None
    y = np.asarray([np.nan if v is None else v for v in values], np.float64)
    return y if np.isfinite(y).any() else None


def plot_run_diagnostics(run: dict[str, Any], path: str) -> None:
    """One run: test accuracy above the diagnostics recorded per evaluation.

    Panels (shared round axis): test accuracy; ``||F - mean_H|| / spread``
    (the empirical lambda, left axis) and the cosine of the aggregate with
    the honest mean (right axis); for selection rules the fraction of
    Byzantine rows selected and their weight in the aggregate; the honest
    variance-to-norm ratio (log scale when it spans decades). See
    :mod:`byzjax.sim._diagnostics`. A diagnostic the run did not record is
    left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(run["metrics"]["round"])
    panels = ["accuracy", "resilience"]
    if _curve(run, "byz_selected") is not None or _curve(run, "byz_weight") is not None:
        panels.append("selection")
    if _curve(run, "var_norm_ratio") is not None:
        panels.append("variance")
    heights = [2.0] + [1.2] * (len(panels) - 1)
    fig, axes = plt.subplots(len(panels), 1, figsize=(5.5, sum(heights) + 0.8),
                             sharex=True, gridspec_kw={"height_ratios": heights})
    c = run["config"]
    beta = (run.get("hparams") or {}).get("beta", c.get("beta"))
    title = [SHORT.get(c.get("aggregator"), c.get("aggregator")), c.get("attack")]
    if "num_workers" in c:
        title.append(f"n = {c['num_workers']}, f = {c.get('num_byzantine')}")
    momentum = c.get("optimizer") in ("resam", "server_momentum") and beta is not None
    title.append(f"{c.get('optimizer')}" + (f" (beta {beta:g})" if momentum else ""))
    title.append(f"seed {run.get('seed')}")
    axes[0].set_title(", ".join(str(t) for t in title), fontsize=9)
    for ax, panel in zip(axes, panels):
        ax.grid(alpha=0.3)
        if panel == "accuracy":
            acc = _curve(run, "test_accuracy")
            if acc is not None:
                ax.plot(x, acc, "o-", color="k", lw=1.3, ms=3)
            ax.set_ylim(0, 1)
            ax.set_ylabel("test acc.")
        elif panel == "resilience":
            lam = _curve(run, "resilience")
            if lam is not None:
                ax.plot(x, lam, "o-", color="C3", ms=3, label="dist / spread")
            ax.set_ylabel("||F - mean_H||\n/ spread", color="C3", fontsize=8)
            cos = _curve(run, "cosine")
            if cos is not None:
                twin = ax.twinx()
                twin.plot(x, cos, "s--", color="C0", ms=3)
                twin.set_ylim(-1.05, 1.05)
                twin.set_ylabel("cosine", color="C0", fontsize=8)
        elif panel == "selection":
            for key, style, label in (("byz_selected", "o-", "Byz. rows selected"),
                                      ("byz_weight", "s--", "Byz. weight")):
                y = _curve(run, key)
                if y is not None:
                    ax.plot(x, y, style, ms=3, label=label)
            ax.set_ylim(-0.05, 1.05)
            ax.set_ylabel("fraction", fontsize=8)
            ax.legend(fontsize=7, loc="best")
        else:
            y = _curve(run, "var_norm_ratio")
            ax.plot(x, y, "o-", color="C2", ms=3)
            positive = y[np.isfinite(y) & (y > 0)]
            if positive.size and positive.max() > 20 * positive.min():
                ax.set_yscale("log")  # spans decades: labelled major ticks
            ax.set_ylabel("honest var.\n/ ||mean||^2", fontsize=8)
    axes[-1].set_xlabel("round")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_run_figures(runs: Iterable[dict], folder: str) -> list[str]:
    """:func:`plot_run_diagnostics` for every run, as ``folder/<run_id>.png``."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for run in runs:
        path = os.path.join(folder, f"{run['run_id']}.png")
        plot_run_diagnostics(run, path)
        paths.append(path)
    return paths
