"""Turning a results folder into the sources' tables, figures, a web page and
tidy data.

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

With ``--html`` it also writes ``DIR/report/index.html``, a static page (no
server, nothing fetched when it is viewed) with the sweep's configuration, the
best-per-cell table beside the published one (when the sweep declares
``published`` values), the full table (sortable, filterable, paginated),
heatmaps, per-cell curves with the round diagnostics, box plots over seeds and
the time of each compiled program (:func:`write_html`; needs Jinja2, the
``report`` extra).

With ``--csv`` it writes ``DIR/runs.csv`` (and ``DIR/runs.parquet`` when
pyarrow is installed): one row per (run, evaluation), every config field a
column (:func:`tidy_rows`, :func:`write_tidy`); :func:`load` returns the same
table as a ``pandas.DataFrame``.

The names in figures and pages are the ones readers know
(:func:`display_name`: ``alie`` is "A Little Is Enough", ``resam``
"momentum at the workers (RESAM)").
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import shutil
import warnings
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from byzjax.optim import optimizer_names

__all__ = ["load_runs", "cell_stats", "best_table", "full_table", "plot_heatmaps",
           "plot_curves", "plot_cell_curves", "plot_boxplots", "plot_times",
           "write_report", "write_html", "tidy_rows", "write_tidy", "load",
           "display_name", "SHORT", "NAMES", "METRIC_NAMES", "plot_run_diagnostics",
           "write_run_figures", "cells_json", "write_json", "momentum_boxes",
           "momentum_gains", "plot_momentum_boxes", "require_jinja2"]

#: Short names the thesis uses in its tables.
SHORT = {
    "mean": "AVG", "trimmed_mean": "CWTM", "coordinate_median": "CWM",
    "minimum_diameter_averaging": "MDA", "mda": "MDA", "meamed": "MEAMED",
    "krum": "KRUM", "multi_krum": "MKRUM", "geometric_median": "GM",
    "bulyan": "BULYAN", "centered_clipping": "CC", "phocas": "PHOCAS",
}

#: Names readers know, per config field (figures, pages; tables keep SHORT).
NAMES = {
    "optimizer": {
        "dsgd": "D-SGD", "server_momentum": "momentum at the server",
        "resam": "momentum at the workers (RESAM)",
        "dra": "DRA (Adam at the workers)", "mra": "MRA (robust Adam moments)",
    },
    "attack": {
        "none": "no attack", "alie": "A Little Is Enough",
        "a_little_is_enough": "A Little Is Enough",
        "adaptive_alie": "A Little Is Enough (adaptive)",
        "foe": "Fall of Empires", "fall_of_empires": "Fall of Empires",
        "adaptive_foe": "Fall of Empires (adaptive)", "gaussian": "Gaussian noise",
        "inf": "+inf", "neg_inf": "\u2212inf", "nan": "NaN",
        "label_flip": "label flip", "sign_flip": "sign flip",
        "sign_flip_own": "sign flip", "mimic": "mimic",
        "optimized": "optimised (worst-case)",
    },
    "aggregator": {
        "mean": "mean", "trimmed_mean": "trimmed mean",
        "coordinate_median": "coordinate-wise median", "mda": "MDA",
        "minimum_diameter_averaging": "MDA", "meamed": "MeaMed", "krum": "Krum",
        "multi_krum": "Multi-Krum", "geometric_median": "geometric median",
        "bulyan": "Bulyan", "centered_clipping": "centered clipping",
        "phocas": "Phocas",
    },
    "preaggregator": {
        "": "none", "nnm": "nearest-neighbour mixing", "bucketing": "bucketing",
        "static_clipping": "static clipping",
    },
}

#: Axis titles and the labels of the per-evaluation metrics.
METRIC_NAMES = {
    "optimizer": "optimiser", "attack": "attack", "aggregator": "aggregator",
    "final_accuracy": "final test accuracy", "max_accuracy": "best test accuracy",
    "test_accuracy": "test accuracy", "test_loss": "test loss",
    "train_loss": "training loss",
    "agg_dist": "\u2016aggregate \u2212 honest mean\u2016",
    "honest_spread": "spread of honest vectors",
    "resilience": "resilience ratio \u03bb",
    "cosine": "cos(aggregate, honest mean)",
}

#: Metric curves shown per cell, in this order, when a record has them.
CURVE_METRICS = ("test_accuracy", "test_loss", "train_loss", "resilience",
                 "agg_dist", "cosine", "honest_spread")

AXES = ("optimizer", "attack", "aggregator")
OPT_ORDER = optimizer_names()  # the registry's order
ATTACK_ORDER = ("none", "alie", "foe", "sign_flip", "sign_flip_own", "label_flip",
                "inf", "neg_inf", "nan")
AGG_ORDER = ("mean", "trimmed_mean", "coordinate_median", "mda", "meamed", "krum",
             "multi_krum", "geometric_median", "bulyan", "centered_clipping",
             "phocas")
_ORDERS = {"optimizer": OPT_ORDER, "attack": ATTACK_ORDER, "aggregator": AGG_ORDER}


def display_name(axis: str, value: Any) -> str:
    """The name readers know for ``value`` of config field ``axis``.

    Example:
      >>> display_name("attack", "alie"), display_name("optimizer", "resam")
      ('A Little Is Enough', 'momentum at the workers (RESAM)')
      >>> display_name("aggregator", "trimmed_mean"), display_name("seed", 3)
      ('trimmed mean', '3')
    """
    return NAMES.get(axis, {}).get(value, str(value))


def load_runs(outdir: str) -> list[dict[str, Any]]:
    """All valid run records under ``outdir/runs`` (or ``outdir`` itself).

    Each file is checked (:func:`byzjax.sim.load_records`: complete,
    parseable, of its run id, checksum); a bad one is skipped with a warning
    naming it.

    Raises:
      ValueError: ``outdir`` does not exist or is not a folder.
    """
    from byzjax.sim import ConfigError, load_records

    if not os.path.isdir(outdir):
        raise ConfigError(f"no results folder {outdir!r}; give the --outdir of a "
                         "byzjax train or sweep")
    runs_dir = os.path.join(outdir, "runs")
    if not glob.glob(os.path.join(glob.escape(runs_dir), "*.json")):
        runs_dir = outdir
    return list(load_records(runs_dir).values())


def _cfg(run, axis):
    return (run.get("config") or {}).get(axis, "?")


def _key(run, axes):
    return tuple(_cfg(run, a) for a in axes)


def _num(x) -> float:
    """A record's number as a float; ``None`` (a non-finite value) is NaN."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def cell_stats(runs: Iterable[dict], *, axes=AXES,
               metric: str = "final_accuracy") -> dict[tuple, dict[str, float]]:
    """Mean, std, count and divergences of ``metric`` per cell of ``axes``.

    A non-finite value (a diverged run) counts as 0, as the thesis counts a
    run that ends in NaN.

    Example:
      >>> runs = [{"config": {"aggregator": "mean"}, "final_accuracy": a,
      ...          "diverged": a is None} for a in (0.8, 0.6, None)]
      >>> s = cell_stats(runs, axes=("aggregator",))[("mean",)]
      >>> round(s["mean"], 4), s["count"], s["diverged"]
      (0.4667, 3, 1)
    """
    cells: dict[tuple, list] = defaultdict(list)
    for r in runs:
        cells[_key(r, axes)].append(r)
    out = {}
    for k, rs in cells.items():
        vals = np.asarray([_num(r.get(metric)) for r in rs], np.float64)
        vals = np.where(np.isfinite(vals), vals, 0.0)
        out[k] = {"mean": float(vals.mean()), "std": float(vals.std()),
                  "count": len(rs),
                  "diverged": sum(bool(r.get("diverged")) for r in rs)}
    return out


def _order(values, preferred):
    pref = [v for v in preferred if v in values]
    return pref + sorted((v for v in values if v not in pref), key=str)


def _best(stats, o, a):
    """(mean, aggregator) of the best aggregator of cell (o, a), or None."""
    cands = [(v["mean"], k[2]) for k, v in stats.items() if k[:2] == (o, a)]
    return max(cands, key=lambda c: (c[0], str(c[1]))) if cands else None


def best_table(runs, *, metric="final_accuracy") -> str:
    """Markdown: best aggregator per optimizer x attack cell."""
    stats = cell_stats(runs, metric=metric)
    opts = _order({k[0] for k in stats}, OPT_ORDER)
    atts = _order({k[1] for k in stats}, ATTACK_ORDER)
    lines = ["| | " + " | ".join(atts) + " |", "|---" * (len(atts) + 1) + "|"]
    for o in opts:
        row = [o]
        for a in atts:
            best = _best(stats, o, a)
            if best is None:
                row.append("")
                continue
            m, agg = best
            row.append(f"{m:.4f} {SHORT.get(agg, agg)}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _sorted_cells(stats):
    return sorted(stats, key=lambda k: tuple(_rank(v, _ORDERS.get(a, ()))
                                             for a, v in zip(AXES, k)))


def full_table(runs, *, metric="final_accuracy") -> str:
    """Markdown: every cell, mean +- std over seeds, and divergences."""
    stats = cell_stats(runs, metric=metric)
    lines = ["| optimizer | attack | aggregator | " + metric + " | seeds | diverged |",
             "|---|---|---|---|---|---|"]
    for k in _sorted_cells(stats):
        v = stats[k]
        lines.append(f"| {k[0]} | {k[1]} | {SHORT.get(k[2], k[2])} | "
                     f"{v['mean']:.4f} +- {v['std']:.4f} | {v['count']} | "
                     f"{v['diverged']} |")
    return "\n".join(lines)


def _rank(v, order):
    return (order.index(v), "") if v in order else (len(order), str(v))


# ----------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Colour map of every heatmap: perceptually uniform, readable in greyscale and
#: by readers with colour-vision deficiencies (Nuñez et al., 2018, PLoS ONE).
CMAP = "cividis"
#: Line colours: Okabe & Ito (2008), "Color Universal Design", distinguishable
#: by colour-blind readers; lines also differ in style and marker.
LINE_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
               "#F0E442", "#000000")
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _style(i: int) -> dict:
    return {"color": LINE_COLORS[i % len(LINE_COLORS)],
            "linestyle": LINE_STYLES[i % len(LINE_STYLES)],
            "marker": MARKERS[i % len(MARKERS)]}


def _text_color(rgba) -> str:
    """Black or white, whichever contrasts more with a cell of colour ``rgba``
    (WCAG 2.1 relative luminance)."""
    def lin(c):
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgba[:3])
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "black" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "white"


def _wrap(text: str, width: int = 14) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def plot_heatmaps(runs, path: str, *, metric="final_accuracy", dpi: int = 110
                  ) -> None:
    """One panel per optimizer: aggregator (rows) x attack (columns).

    Every cell prints its value in black or white, whichever reads better on
    its colour; combinations that were not run are hatched and say so; the
    panels share the aggregator labels (printed once, on the left).
    """
    plt = _pyplot()
    fig = _heatmap_figure(runs, metric)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _heatmap_figure(runs, metric):
    plt = _pyplot()
    from matplotlib.patches import Patch

    stats = cell_stats(runs, metric=metric)
    opts = _order({k[0] for k in stats}, OPT_ORDER)
    atts = _order({k[1] for k in stats}, ATTACK_ORDER)
    aggs = _order({k[2] for k in stats}, AGG_ORDER)
    cmap = plt.get_cmap(CMAP).with_extremes(bad="#ececec")
    cell_w, cell_h = 0.95, 0.42
    width = 1.8 + len(opts) * (0.35 + cell_w * len(atts)) + 1.0
    height = max(2.6, 1.6 + cell_h * len(aggs))
    fig, axes = plt.subplots(1, len(opts), figsize=(width, height), squeeze=False,
                             sharey=True, layout="constrained")
    im = None
    missing = False
    for ax, o in zip(axes[0], opts):
        m = np.full((len(aggs), len(atts)), np.nan)
        for i, g in enumerate(aggs):
            for j, a in enumerate(atts):
                if (o, a, g) in stats:
                    m[i, j] = stats[(o, a, g)]["mean"]
        im = ax.imshow(np.ma.masked_invalid(m), vmin=0, vmax=1, cmap=cmap,
                       aspect="auto")
        ax.set_title(_wrap(display_name("optimizer", o), 22), fontsize=9)
        ax.set_xticks(range(len(atts)),
                      [_wrap(display_name("attack", a), 12) for a in atts],
                      rotation=0 if len(atts) <= 3 else 40,
                      ha="center" if len(atts) <= 3 else "right", fontsize=9)
        ax.set_yticks(range(len(aggs)), [display_name("aggregator", g)
                                          for g in aggs], fontsize=9)
        ax.tick_params(length=0)
        for i in range(len(aggs)):
            for j in range(len(atts)):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center",
                            fontsize=9, color=_text_color(cmap(m[i, j])))
                else:
                    missing = True
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1,
                                               fill=False, hatch="///",
                                               edgecolor="#b0b0b0", lw=0))
                    ax.text(j, i, "not run", ha="center", va="center",
                            fontsize=9, color="#333333")
        ax.set_xticks(np.arange(len(atts) + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(len(aggs) + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        for s in ax.spines.values():
            s.set_visible(False)
    bar = fig.colorbar(im, ax=axes[0].tolist(), shrink=1.0, aspect=20,
                       fraction=0.04)
    bar.set_label(_wrap(METRIC_NAMES.get(metric, metric) + ", mean over seeds", 24),
                  fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if missing:
        fig.legend(handles=[Patch(facecolor="#ececec", hatch="///",
                                  edgecolor="#b0b0b0", label="combination not run")],
                   loc="outside lower left", fontsize=9, frameon=False)
    return fig


def _curve(rs, name="test_accuracy"):
    """(rounds, seed x eval values with NaN for missing) of runs ``rs``."""
    n = max(len((r.get("metrics") or {}).get("round", [])) for r in rs)
    x = None
    ys = []
    for r in rs:
        m = r.get("metrics") or {}
        if x is None and len(m.get("round", [])) == n:
            x = np.asarray(m["round"], float)
        y = [_num(v) for v in m.get(name, [])] + [math.nan] * n
        ys.append(y[:n])
    return x, np.asarray(ys, float)


def plot_curves(runs, path: str, *, dpi: int = 110) -> None:
    """Rows = attacks, columns = optimizers, one line per aggregator (seed mean;
    a diverged run counts as accuracy 0 from its divergence on)."""
    plt = _pyplot()
    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[_key(r, AXES)].append(r)
    opts = _order({k[0] for k in groups}, OPT_ORDER)
    atts = _order({k[1] for k in groups}, ATTACK_ORDER)
    aggs = _order({k[2] for k in groups}, AGG_ORDER)
    styles = {g: _style(i) for i, g in enumerate(aggs)}
    fig, axes = plt.subplots(len(atts), len(opts),
                             figsize=(1.0 + 3.0 * len(opts), 0.9 + 2.2 * len(atts)),
                             squeeze=False, sharex=True, sharey=True,
                             layout="constrained")
    for i, a in enumerate(atts):
        for j, o in enumerate(opts):
            ax = axes[i][j]
            any_line = False
            for g in aggs:
                rs = groups.get((o, a, g))
                if not rs:
                    continue
                x, y = _curve(rs)
                if x is None:
                    continue
                y = np.where(np.isfinite(y), y, 0.0)
                ax.plot(x, y.mean(0), lw=1.3, markersize=3, markevery=max(
                    1, len(x) // 6), label=display_name("aggregator", g),
                    **styles[g])
                any_line = True
            if not any_line:
                ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center",
                        va="center", color="#777777")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(_wrap(display_name("optimizer", o), 28), fontsize=9)
            if j == 0:
                ax.set_ylabel(_wrap(display_name("attack", a), 18)
                              + "\ntest accuracy", fontsize=9)
            if i == len(atts) - 1:
                ax.set_xlabel("round", fontsize=9)
            ax.tick_params(labelsize=8)
    legend = {}
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside upper center",
                   ncol=min(len(legend), 4), fontsize=9, frameon=False)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_cell_curves(rs: list[dict], path: str, *, title: str = "",
                     dpi: int = 80) -> list[str]:
    """Curves of one cell's runs: one panel per metric of
    :data:`CURVE_METRICS` the records have (test accuracy, losses and the round
    diagnostics), one line per aggregator (mean over seeds, the band spans the
    seeds). Returns the metrics drawn."""
    plt = _pyplot()
    by_agg: dict[str, list] = defaultdict(list)
    for r in rs:
        by_agg[_cfg(r, "aggregator")].append(r)
    aggs = _order(set(by_agg), AGG_ORDER)
    present = set()
    for r in rs:
        present |= set(r.get("metrics") or {})
    names = [m for m in CURVE_METRICS if m in present]
    cols = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols + 0.4, 2.1 * rows + 0.8),
                             squeeze=False, layout="constrained")
    for ax, name in zip(axes.ravel(), names):
        for i, g in enumerate(aggs):
            x, y = _curve(by_agg[g], name)
            if x is None:
                continue
            st = _style(i)
            with warnings.catch_warnings():  # all-NaN rounds stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(y, 0)
            ax.plot(x, mean, lw=1.2, markersize=3, markevery=max(1, len(x) // 5),
                    label=display_name("aggregator", g), **st)
            if y.shape[0] > 1 and np.isfinite(y).any():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    lo, hi = np.nanmin(y, 0), np.nanmax(y, 0)
                ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, lw=0)
        if name in ("test_loss", "train_loss", "agg_dist", "honest_spread"):
            _log_if_wide(ax)
        if name == "test_accuracy":
            ax.set_ylim(0, 1)
        ax.set_title(METRIC_NAMES.get(name, name), fontsize=9)
        ax.set_xlabel("round", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center",
                   ncol=min(len(labels), 5), fontsize=9, frameon=False,
                   title=title or None, title_fontsize=10)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return names


def _log_if_wide(ax) -> None:
    """A log y axis (plain tick labels) when the curves span over 20x."""
    from matplotlib.ticker import FuncFormatter

    vals = np.concatenate([np.asarray(ln.get_ydata(), float)
                           for ln in ax.get_lines()] or [np.zeros(0)])
    vals = vals[np.isfinite(vals)]
    if vals.size and vals.min() > 0 and vals.max() / vals.min() > 20:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def plot_boxplots(runs, path: str, *, metric="final_accuracy", dpi: int = 80
                  ) -> None:
    """The spread over seeds: rows = optimizers, columns = attacks, one box per
    aggregator with every seed drawn as a dot (diverged runs as crosses at 0)."""
    plt = _pyplot()
    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[_key(r, AXES)].append(r)
    opts = _order({k[0] for k in groups}, OPT_ORDER)
    atts = _order({k[1] for k in groups}, ATTACK_ORDER)
    aggs = _order({k[2] for k in groups}, AGG_ORDER)
    fig, axes = plt.subplots(len(opts), len(atts),
                             figsize=(0.8 + max(1.3, 0.5 + 0.32 * len(aggs))
                                      * len(atts),
                                      0.9 + 1.9 * len(opts)),
                             squeeze=False, sharey=True, layout="constrained")
    for i, o in enumerate(opts):
        for j, a in enumerate(atts):
            ax = axes[i][j]
            data, pos, div = [], [], []
            for p, g in enumerate(aggs):
                rs = groups.get((o, a, g), [])
                vals = np.asarray([_num(r.get(metric)) for r in rs], float)
                bad = ~np.isfinite(vals)
                vals = np.where(bad, 0.0, vals)
                if len(vals):
                    data.append(vals)
                    pos.append(p)
                    div.append(bad)
            if data:
                ax.boxplot(data, positions=pos, widths=0.6, showfliers=False,
                           medianprops={"color": "#D55E00"})
                for p, v, b in zip(pos, data, div):
                    jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else [0]
                    ax.scatter(p + np.asarray(jitter)[~b], v[~b], s=9,
                               color="#0072B2", zorder=3)
                    if b.any():
                        ax.scatter(p + np.asarray(jitter)[b], v[b], s=14,
                                   marker="x", color="black", zorder=3)
            else:
                ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center",
                        va="center", color="#555555", fontsize=9)
            ax.set_xticks(range(len(aggs)), [SHORT.get(g, g) for g in aggs],
                          rotation=90, fontsize=8)
            ax.set_xlim(-0.6, len(aggs) - 0.4)
            ax.set_ylim(-0.03, 1.03)
            ax.tick_params(labelsize=8)
            ax.grid(axis="y", alpha=0.3)
            if i == 0:
                ax.set_title(_wrap(display_name("attack", a), 16), fontsize=9)
            if j == 0:
                ax.set_ylabel(_wrap(display_name("optimizer", o), 18), fontsize=9)
    fig.supylabel(METRIC_NAMES.get(metric, metric) + " per seed", fontsize=9)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _programs(runs) -> list[dict]:
    """One entry per compiled program (runs sharing a group wall time and
    static configuration): its cell, runs and seconds."""
    progs: dict[tuple, dict] = {}
    for r in runs:
        wall = _num(r.get("group_wall_time_s"))
        key = (r.get("static_key") or json.dumps(r.get("config"), sort_keys=True,
                                                  default=str), wall)
        p = progs.setdefault(key, {"cell": _key(r, AXES), "runs": 0,
                                   "wall_s": wall,
                                   "first_chunk_s": _num(r.get(
                                       "group_first_chunk_s"))})
        p["runs"] += 1
    return list(progs.values())


def plot_times(runs, path: str, *, dpi: int = 80) -> None:
    """Seconds per compiled program (compilation + first evaluation chunk, and
    the rest), grouped by aggregator, one dot per program."""
    plt = _pyplot()
    progs = [p for p in _programs(runs) if np.isfinite(p["wall_s"])]
    aggs = _order({p["cell"][2] for p in progs}, AGG_ORDER)
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * max(1, len(aggs)), 3.0),
                           layout="constrained")
    for i, g in enumerate(aggs):
        ps = [p for p in progs if p["cell"][2] == g]
        walls = np.asarray([p["wall_s"] for p in ps])
        first = np.asarray([p["first_chunk_s"] for p in ps])
        jitter = np.linspace(-0.2, 0.2, len(ps)) if len(ps) > 1 else np.zeros(1)
        ax.scatter(i + jitter, walls, s=14, color="#0072B2",
                   label="whole program" if i == 0 else None)
        ok = np.isfinite(first)
        ax.scatter((i + jitter)[ok], first[ok], s=14, marker="x", color="#D55E00",
                   label="compilation + first chunk" if i == 0 else None)
    ax.set_xticks(range(len(aggs)), [_wrap(display_name("aggregator", g), 12)
                                     for g in aggs], fontsize=8)
    ax.set_ylabel("seconds per program", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    if progs:
        ax.legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def write_report(outdir: str, *, metric: str = "final_accuracy",
                 figures: bool = True) -> dict[str, str]:
    """Writes the tables and figures of ``outdir``; returns their paths."""
    runs = _runs_or_error(outdir)
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


def _run_curve(run, key):
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
    variance-to-norm ratio (log scale when it spans decades), as the
    simulator records them once per evaluation (``docs/ARCHITECTURE.md``). A
    diagnostic the run did not record is left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(run["metrics"]["round"])
    panels = ["accuracy", "resilience"]
    if (_run_curve(run, "byz_selected") is not None
            or _run_curve(run, "byz_weight") is not None):
        panels.append("selection")
    if _run_curve(run, "var_norm_ratio") is not None:
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
            acc = _run_curve(run, "test_accuracy")
            if acc is not None:
                ax.plot(x, acc, "o-", color="k", lw=1.3, ms=3)
            ax.set_ylim(0, 1)
            ax.set_ylabel("test acc.")
        elif panel == "resilience":
            lam = _run_curve(run, "resilience")
            if lam is not None:
                ax.plot(x, lam, "o-", color="C3", ms=3, label="dist / spread")
            ax.set_ylabel("||F - mean_H||\n/ spread", color="C3", fontsize=8)
            cos = _run_curve(run, "cosine")
            if cos is not None:
                twin = ax.twinx()
                twin.plot(x, cos, "s--", color="C0", ms=3)
                twin.set_ylim(-1.05, 1.05)
                twin.set_ylabel("cosine", color="C0", fontsize=8)
        elif panel == "selection":
            for key, style, label in (("byz_selected", "o-", "Byz. rows selected"),
                                      ("byz_weight", "s--", "Byz. weight")):
                y = _run_curve(run, key)
                if y is not None:
                    ax.plot(x, y, style, ms=3, label=label)
            ax.set_ylim(-0.05, 1.05)
            ax.set_ylabel("fraction", fontsize=8)
            ax.legend(fontsize=7, loc="best")
        else:
            y = _run_curve(run, "var_norm_ratio")
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


def _runs_or_error(outdir):
    from byzjax.sim import ConfigError

    runs = load_runs(outdir)
    if not runs:
        raise ConfigError(f"no run records in {os.path.join(outdir, 'runs')!r} "
                         "(nothing finished yet?); run byzjax train or sweep with "
                         f"--outdir {outdir} first")
    return runs


# --------------------------------------------------------------- tidy data
_SUMMARY = ("final_accuracy", "max_accuracy", "diverged", "diverged_round",
            "group_wall_time_s", "group_first_chunk_s", "group_size")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = prefix + str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, name + "."))
        elif isinstance(v, (dict, list, tuple)):
            out[name] = json.dumps(v, sort_keys=True)
        else:
            out[name] = v
    return out


def tidy_rows(runs: Iterable[dict]) -> tuple[list[str], list[dict]]:
    """One row per (run, evaluation), the format pandas and seaborn expect.

    Columns: ``run_id``, ``seed``, every config field (nested ones dotted:
    ``aggregator_kwargs.radius``; the run's own float hyper-parameters
    replace the group's), the run's summary (``final_accuracy``,
    ``max_accuracy``, ``diverged``, ``diverged_round``, times), then
    ``eval`` (0, 1, ...), ``round`` and every per-evaluation metric. A value
    a record does not have is ``None``.

    Example:
      >>> run = {"run_id": "a", "seed": 0, "config": {"beta": 0.9, "attack":
      ...        "alie"}, "hparams": {"beta": 0.5}, "final_accuracy": 0.7,
      ...        "metrics": {"round": [10, 20], "test_accuracy": [0.6, 0.7]}}
      >>> cols, rows = tidy_rows([run])
      >>> [(r["beta"], r["round"], r["test_accuracy"]) for r in rows]
      [(0.5, 10, 0.6), (0.5, 20, 0.7)]
    """
    rows, config_cols, metric_cols = [], {}, {}
    for r in sorted(runs, key=lambda r: (str(r.get("run_id")), _num(r.get("seed")))):
        cfg = _flatten(dict(r.get("config") or {}))
        cfg.update(_flatten(dict(r.get("hparams") or {})))
        config_cols.update(dict.fromkeys(cfg))
        metrics = r.get("metrics") or {}
        names = [k for k in metrics if k != "round" and k not in _SUMMARY]
        metric_cols.update(dict.fromkeys(names))
        rounds = list(metrics.get("round", []))
        n = max([len(rounds)] + [len(v) for v in metrics.values()
                                 if isinstance(v, list)])
        base = {"run_id": r.get("run_id"), "seed": r.get("seed"), **cfg}
        base.update({k: r.get(k) for k in _SUMMARY})
        for e in range(n):
            row = dict(base, eval=e, round=rounds[e] if e < len(rounds) else None)
            for k in names:
                v = metrics[k]
                row[k] = v[e] if isinstance(v, list) and e < len(v) else None
            rows.append(row)
    cols = (["run_id", "seed"] + sorted(c for c in config_cols if c != "seed")
            + list(_SUMMARY) + ["eval", "round"] + sorted(metric_cols))
    return cols, [{c: row.get(c) for c in cols} for row in rows]


def write_tidy(outdir: str, *, path: str | None = None,
               parquet: bool | None = None) -> dict[str, str]:
    """Writes :func:`tidy_rows` of ``outdir`` as ``runs.csv`` (and
    ``runs.parquet`` when pyarrow is installed, or ``parquet=True``, which
    then requires it); returns the paths written.

    Raises:
      ConfigError: no records, or ``parquet=True`` without pyarrow.
    """
    from byzjax.sim import ConfigError

    runs = _runs_or_error(outdir)
    cols, rows = tidy_rows(runs)
    path = path or os.path.join(outdir, "runs.csv")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    out = {"csv": path}
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        if parquet:
            raise ConfigError("Parquet output needs pyarrow: pip install "
                              "'byzjax[report]' (or pip install pyarrow)") from None
        return out
    if parquet is not False:
        table = pyarrow.Table.from_pylist(rows).select(cols)
        out["parquet"] = os.path.splitext(path)[0] + ".parquet"
        pyarrow.parquet.write_table(table, out["parquet"])
    return out


def load(outdir: str):
    """The results of ``outdir`` as a ``pandas.DataFrame``, one row per
    (run, evaluation), columns as :func:`tidy_rows` (needs pandas: the
    ``report`` extra).

    Example (a seaborn-style summary of a sweep)::

        df = byzjax.report.load("results/table_4_1")
        last = df[df["eval"] == df.groupby("run_id")["eval"].transform("max")]
        last.groupby(["optimizer", "attack", "aggregator"])["test_accuracy"].mean()
    """
    try:
        import pandas as pd
    except ImportError:
        from byzjax.sim import ConfigError

        raise ConfigError("byzjax.report.load needs pandas: pip install "
                          "'byzjax[report]' (or pip install pandas)") from None
    cols, rows = tidy_rows(_runs_or_error(outdir))
    return pd.DataFrame(rows, columns=cols)


# -------------------------------------------------------------------- HTML
def require_jinja2():
    """Fails with one line (a ``ConfigError``) if Jinja2, which the HTML report
    needs, is not installed; else returns its template environment.

    ``byzjax report --html`` calls it before any work.

    Example:
      >>> from byzjax import report
      >>> "report.html.j2" in report.require_jinja2().list_templates()
      True
    """
    try:
        import jinja2
    except ImportError:
        from byzjax.sim import ConfigError

        raise ConfigError("byzjax report --html needs Jinja2: pip install "
                          "'byzjax[report]' (or pip install jinja2)") from None
    return jinja2.Environment(
        loader=jinja2.PackageLoader("byzjax", "templates"),
        autoescape=jinja2.select_autoescape(("html", "j2")),
        trim_blocks=True, lstrip_blocks=True)


def _sweep_info(outdir: str, sweep) -> dict | None:
    """The sweep as a plain dict: ``sweep`` (a ConfigDict, dict or file path),
    else ``outdir/sweep.json`` (written by ``byzjax sweep``), else None."""
    if sweep is None:
        path = os.path.join(outdir, "sweep.json")
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None
    if isinstance(sweep, str):
        from byzjax.sim import load_sweep

        sweep = load_sweep(sweep)
    if hasattr(sweep, "to_dict"):
        sweep = sweep.to_dict()
    return json.loads(json.dumps(dict(sweep), default=_json_default))


def _json_default(x):
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)


def _published(info: dict | None) -> tuple[dict, str, str]:
    """``({(optimizer, attack): (value, aggregator or None)}, source, metric)``
    of the sweep's ``published`` field (empty when it has none)."""
    pub = (info or {}).get("published") or {}
    cells = {}
    for c in pub.get("cells", []) or []:
        try:
            value = float(c["value"])
        except (KeyError, TypeError, ValueError):
            continue
        cells[(c.get("optimizer"), c.get("attack"))] = (value, c.get("aggregator"))
    return cells, str(pub.get("source", "")), str(pub.get("metric", ""))


def _fmt(x, digits=4):
    return "" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _diff_class(d: float) -> str:
    if abs(d) <= 0.02:
        return "near"
    return "above" if d > 0 else "below"


def _varying(runs) -> list[str]:
    """Config fields that differ between runs (besides the three axes)."""
    vals: dict[str, set] = defaultdict(set)
    for r in runs:
        for k, v in _flatten(dict(r.get("config") or {})).items():
            vals[k].add(json.dumps(v, sort_keys=True, default=str))
    return sorted(k for k, v in vals.items() if len(v) > 1 and k not in AXES)


def _save_png(fig_fn, path, *, palette: int | None, dpi: int, **kw) -> int:
    """Draws ``fig_fn`` to ``path``; returns its width in CSS pixels (the
    figure's size in inches at 96 pixels an inch: every image is shown at
    the size it was drawn for, whatever its dpi)."""
    from PIL import Image

    fig_fn(path=path, dpi=dpi, **kw)
    with Image.open(path) as im:
        width = im.size[0]
        if palette:
            im = im.convert("RGB").quantize(colors=palette, dither=Image.NONE)
            im.save(path, optimize=True)
    return round(width * 96 / dpi)


def write_html(outdir: str, *, out: str | None = None, sweep=None,
               metric: str = "final_accuracy", dpi: int = 80,
               palette: int | None = None, page_size: int = 50) -> str:
    """Writes a static web page of the results of ``outdir``; returns the path
    of its ``index.html``.

    The page and its images (``img/*.png``) need no server and fetch nothing:
    open ``index.html`` in a browser. Sections: the sweep's configuration; the
    best aggregator per (optimiser, attack) in the layout of Fabris (2023),
    beside the published value when the sweep declares ``published``
    (differences coloured and signed); the full table of cells (sortable by
    any column, filterable by optimiser / attack / aggregator, ``page_size``
    rows a page) with the std over seeds, divergences and program time;
    heatmaps; one collapsible figure of curves and diagnostics per
    (optimiser, attack) cell; box plots over seeds; time per program.

    Args:
      outdir: a results folder (``runs/*.json``).
      out: the folder to write (default: ``outdir/report``).
      sweep: the sweep (ConfigDict, dict or sweep file) for the
        configuration and published values; default: ``outdir/sweep.json``.
      metric: ``final_accuracy`` or ``max_accuracy``.
      dpi: resolution of the images.
      palette: if given, images are reduced to this many colours (smaller
        files for a report kept in a repository).
      page_size: rows per page of the full table.

    Raises:
      ConfigError: no records, or Jinja2 is not installed.
    """
    env = require_jinja2()
    runs = _runs_or_error(outdir)
    out = out or os.path.join(outdir, "report")
    img = os.path.join(out, "img")
    if os.path.isdir(img):
        shutil.rmtree(img)
    os.makedirs(img, exist_ok=True)
    info = _sweep_info(outdir, sweep)
    pub, pub_source, pub_metric = _published(info)
    stats = cell_stats(runs, metric=metric)
    opts = _order({k[0] for k in stats}, OPT_ORDER)
    atts = _order({k[1] for k in stats}, ATTACK_ORDER)
    save = dict(palette=palette, dpi=dpi)

    # Best-per-cell table (papers' layout) with the published values.
    best_rows = []
    for o in opts:
        cells = []
        for a in atts:
            b = _best(stats, o, a)
            p = pub.get((o, a))
            cell = {"value": _fmt(b[0]) if b else "", "agg": SHORT.get(
                b[1], b[1]) if b else "", "agg_name": display_name(
                "aggregator", b[1]) if b else "", "published": None}
            if p is not None:
                d = (b[0] - p[0]) if b else math.nan
                cell["published"] = {
                    "value": f"{p[0]:.4g}", "agg": SHORT.get(p[1], p[1] or ""),
                    "diff": f"{d:+.3f}" if np.isfinite(d) else "",
                    "cls": _diff_class(d) if np.isfinite(d) else ""}
            cells.append(cell)
        best_rows.append({"name": display_name("optimizer", o), "id": o,
                          "cells": cells})

    # Full table: one row per cell.
    progs = _programs(runs)
    time_of: dict[tuple, list] = defaultdict(list)
    for p in progs:
        time_of[p["cell"]].append(p["wall_s"])
    max_stats = cell_stats(runs, metric="max_accuracy")
    full_rows = []
    for k in _sorted_cells(stats):
        v = stats[k]
        p = pub.get(k[:2])
        p_here = p if p is not None and p[1] in (None, k[2]) else None
        t = [x for x in time_of.get(k, []) if np.isfinite(x)]
        full_rows.append({
            "optimizer": k[0], "attack": k[1], "aggregator": k[2],
            "optimizer_name": display_name("optimizer", k[0]),
            "attack_name": display_name("attack", k[1]),
            "aggregator_name": display_name("aggregator", k[2]),
            "mean": v["mean"], "std": v["std"], "count": v["count"],
            "diverged": v["diverged"], "max": max_stats[k]["mean"],
            "published": p_here[0] if p_here else None,
            "time": float(np.sum(t)) if t else None,
            "mean_s": _fmt(v["mean"]), "std_s": _fmt(v["std"]),
            "max_s": _fmt(max_stats[k]["mean"]),
            "published_s": f"{p_here[0]:.4g}" if p_here else "",
            "time_s": f"{np.sum(t):.1f}" if t else ""})

    # Figures.
    figures = {}
    for name, fn, kw in (("heatmaps", plot_heatmaps, {"metric": metric}),
                         ("boxplots", plot_boxplots, {"metric": metric}),
                         ("times", plot_times, {})):
        width = _save_png(fn, os.path.join(img, name + ".png"), runs=runs, **kw,
                          **save)
        figures[name] = {"src": f"img/{name}.png", "width": width}
    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[_key(r, AXES[:2])].append(r)
    cell_figs = []
    for i, (o, a) in enumerate(sorted(groups, key=lambda k: (
            _rank(k[0], OPT_ORDER), _rank(k[1], ATTACK_ORDER)))):
        name = f"cell_{i:03d}.png"
        title = f"{display_name('optimizer', o)} \u2014 {display_name('attack', a)}"
        drawn = []

        def fig_fn(path, dpi, rs=groups[(o, a)], title=title):
            drawn.extend(plot_cell_curves(rs, path, title=title, dpi=dpi))

        width = _save_png(fig_fn, os.path.join(img, name), **save)
        best = _best(stats, o, a)
        cell_figs.append({"src": "img/" + name, "width": width, "title": title,
                          "optimizer": o,
                          "attack": a, "runs": len(groups[(o, a)]),
                          "best": f"{best[0]:.4f} {display_name('aggregator', best[1])}"
                          if best else "", "metrics": [METRIC_NAMES.get(m, m)
                                                       for m in drawn]})

    cfg_rows, grid_rows = _config_rows(runs, info)
    total_wall = sum(p["wall_s"] for p in progs if np.isfinite(p["wall_s"]))
    page = env.get_template("report.html.j2").render(
        title=(info or {}).get("name") or os.path.basename(os.path.abspath(outdir)),
        metric=metric, metric_name=METRIC_NAMES.get(metric, metric),
        n_runs=len(runs), n_cells=len(stats), n_programs=len(progs),
        n_diverged=sum(bool(r.get("diverged")) for r in runs),
        total_wall=f"{total_wall:.0f}",
        attacks=[{"id": a, "name": display_name("attack", a)} for a in atts],
        best_rows=best_rows, has_published=bool(pub), pub_source=pub_source,
        pub_metric=pub_metric, pub_metric_differs=bool(pub_metric) and
        pub_metric != metric,
        full_rows=full_rows, page_size=page_size,
        filters={ax: [{"id": v, "name": display_name(ax, v)} for v in _order(
            {k[i] for k in stats}, _ORDERS[ax])] for i, ax in enumerate(AXES)},
        figures=figures, cell_figs=cell_figs, config_rows=cfg_rows,
        grid_rows=grid_rows, varying=_varying(runs),
        abbreviations=", ".join(
            f"{SHORT[g]} = {display_name('aggregator', g)}" for g in _order(
                {k[2] for k in stats} | {p[1] for p in pub.values() if p[1]},
                AGG_ORDER) if g in SHORT
            and SHORT[g].lower() != display_name("aggregator", g).lower()),
        sweep_json=json.dumps(info, indent=1, default=str) if info else "")
    path = os.path.join(out, "index.html")
    with open(path, "w") as fh:
        fh.write(page)
    return path


def _config_rows(runs, info) -> tuple[list[dict], list[dict]]:
    """(base config fields shared by every run, grid / hparams / seeds rows)."""
    shared: dict[str, Any] = {}
    differs = set()
    for r in runs:
        for k, v in _flatten(dict(r.get("config") or {})).items():
            if k in shared and shared[k] != v:
                differs.add(k)
            shared.setdefault(k, v)
    base = [{"field": k, "value": json.dumps(shared[k]) if not isinstance(
        shared[k], str) else shared[k]} for k in sorted(shared) if k not in differs]
    grid = []
    if info:
        for k, vals in (info.get("grid") or {}).items():
            grid.append({"field": f"grid: {k}", "value": ", ".join(
                f"{v} ({display_name(k, v)})" if display_name(k, v) != str(v)
                else str(v) for v in vals)})
        for k, vals in (info.get("hparams") or {}).items():
            grid.append({"field": f"hparams: {k}", "value": ", ".join(map(str, vals))})
        if info.get("seeds") is not None:
            grid.append({"field": "seeds", "value": ", ".join(
                map(str, info["seeds"]))})
        for match, changes in info.get("overrides") or []:
            grid.append({"field": "override", "value": "where " + _assign(match)
                         + ": " + _assign(changes)})
        for k in ("exclude", "extra"):
            for item in info.get(k) or []:
                grid.append({"field": k, "value": _assign(item)})
    else:
        for k in sorted(differs):
            vals = sorted({json.dumps(_flatten(dict(r.get("config") or {})).get(k),
                                      default=str) for r in runs})
            grid.append({"field": k, "value": ", ".join(vals)})
        grid.append({"field": "seeds", "value": ", ".join(
            str(s) for s in sorted({r.get("seed") for r in runs}, key=str))})
    return base, grid


def _assign(d) -> str:
    """``{"a": 1, "b": "x"}`` as ``a=1, b=x``."""
    return ", ".join(f"{k}={v}" for k, v in dict(d).items())


# ----------------------------------------------- machine-readable cells (--json)
#: Config fields that name a cell in :func:`cells_json` (``rounds`` is
#: ``num_rounds``), beside any other field that varies inside such a cell.
JSON_AXES = ("optimizer", "attack", "aggregator", "model", "num_rounds")
_JSON_ATTACK_ORDER = ("none", "alie", "foe", "sign_flip", "sign_flip_own",
                      "label_flip", "inf", "neg_inf", "nan")
_NOT_AXES = ("seed", "checkpoint_every", "grad_strategy", "run_batching", "shard",
             "num_devices")


def cells_json(runs, *, published: dict | None = None,
               metric: str | None = None) -> list[dict[str, Any]]:
    """One dict per measured cell, with the published value where declared.

    A cell is the runs (seeds) sharing ``optimizer``, ``attack``,
    ``aggregator``, ``model`` and ``num_rounds``, plus every other config
    field or float hyper-parameter that differs between runs sharing those
    (``num_byzantine``, ``nesterov``, ``learning_rate`` in a momentum grid),
    which then appears in the cell under its config name. Each cell:
    ``{optimizer, attack, aggregator, model, rounds, seeds, mean, std,
    diverged, published}``: ``seeds`` the sorted seeds, ``mean`` / ``std``
    over them of ``metric`` (a non-finite value counts as 0), ``diverged``
    how many runs diverged, ``published`` the value of the first declared
    cell whose keys all match (else None). Declared cells no run matches
    are listed too, with ``seeds = []`` and ``mean = std = None``.

    Args:
      runs: run records (:func:`load_runs`).
      published: a sweep's ``published`` declaration
        (:func:`byzjax.sim.published_of`), or None.
      metric: record field to summarise; default the declaration's metric,
        else ``"final_accuracy"``.

    Returns:
      A list of JSON-ready dicts, ordered by optimizer, attack, aggregator.

    Example:
      >>> run = {"config": {"optimizer": "dsgd", "attack": "alie",
      ...        "aggregator": "trimmed_mean", "model": "mlp", "num_rounds": 10},
      ...        "hparams": {}, "seed": 0, "final_accuracy": 0.5, "diverged": False}
      >>> pub = {"source": "x", "metric": "final_accuracy", "cells": [
      ...        {"optimizer": "dsgd", "attack": "alie",
      ...         "aggregator": "trimmed_mean", "value": 0.38}]}
      >>> cell, = cells_json([run, dict(run, seed=1, final_accuracy=0.7)],
      ...                    published=pub)
      >>> cell["seeds"], round(cell["mean"], 3), cell["published"]
      ([0, 1], 0.6, 0.38)
    """
    metric = metric or (published or {}).get("metric") or "final_accuracy"
    declared = [dict(c) for c in (published or {}).get("cells", [])]

    def fields(r):
        d = {k: v for k, v in r["config"].items() if k not in _NOT_AXES
             and not isinstance(v, (dict, list))}
        d.update(r.get("hparams", {}) or {})
        return d

    base: dict[tuple, list] = defaultdict(list)
    for r in runs:
        base[tuple(r["config"][a] for a in JSON_AXES)].append(r)
    extra = set()
    for rs in base.values():
        fs = [fields(r) for r in rs]
        for k in fs[0]:
            if k not in JSON_AXES and len({repr(f.get(k)) for f in fs}) > 1:
                extra.add(k)
    extra = sorted(extra)
    cells: dict[tuple, list] = defaultdict(list)
    for r in runs:
        f = fields(r)
        cells[tuple(f.get(a) for a in JSON_AXES + tuple(extra))].append(r)

    def match(cell):
        for d in declared:
            if all(cell.get(k) == v for k, v in d.items() if k != "value"):
                return d
        return None

    out, used = [], set()
    for key, rs in cells.items():
        cell = dict(zip(("optimizer", "attack", "aggregator", "model", "rounds"),
                        key[:5]))
        cell.update(zip(extra, key[5:]))
        vals = np.asarray([r[metric] for r in rs], np.float64)
        vals = np.where(np.isfinite(vals), vals, 0.0)
        d = match({**cell, "num_rounds": cell["rounds"]})
        if d is not None:
            used.add(id(d))
        cell.update(seeds=sorted(int(r["seed"]) for r in rs),
                    mean=float(vals.mean()), std=float(vals.std()),
                    diverged=sum(bool(r["diverged"]) for r in rs),
                    published=None if d is None else float(d["value"]))
        out.append(cell)
    for d in declared:
        if id(d) not in used:
            cell = {"optimizer": None, "attack": None, "aggregator": None,
                    "model": None, "rounds": None}
            cell.update({k: v for k, v in d.items() if k != "value"})
            cell.update(seeds=[], mean=None, std=None, diverged=0,
                        published=float(d["value"]))
            out.append(cell)

    def order(c):
        return (_rank(c["optimizer"], OPT_ORDER),
                _rank(c["attack"], _JSON_ATTACK_ORDER),
                str(c["aggregator"]), tuple(str(c.get(k)) for k in extra))

    return sorted(out, key=order)


def write_json(outdir: str, path: str, *, published: dict | None = None,
               sweep=None, metric: str | None = None) -> list[dict[str, Any]]:
    """Writes :func:`cells_json` of the records under ``outdir`` to ``path``.

    ``published`` defaults to the ``published`` field of the sweep: ``sweep``
    (a sweep file, ConfigDict or dict) or else ``outdir/sweep.json``, which
    ``byzjax sweep`` writes (the same source as the web page's).
    """
    runs = load_runs(outdir)
    if published is None:
        published = (_sweep_info(outdir, sweep) or {}).get("published") or None
    cells = cells_json(runs, published=published, metric=metric)
    write_json_cells(cells, path)
    return cells


def write_json_cells(cells: list[dict], path: str) -> None:
    """Writes :func:`cells_json` output to ``path`` (standard JSON, one cell a line)."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("[\n" + ",\n".join(json.dumps(c, allow_nan=False) for c in cells)
                 + "\n]\n")


# ------------------------------------- momentum box plots (El Mhamdi et al. 2021)
_PLACEMENT = {"server_momentum": "at the server", "resam": "at the workers"}


def _value_or_zero(run, metric: str) -> float:
    """``run[metric]`` as a float, 0 when missing or non-finite (a dead run)."""
    v = run.get(metric)
    return float(v) if v is not None and np.isfinite(v) else 0.0


def _learning_rate(run):
    """The run's learning rate: its vmapped hyper-parameter, else its config's."""
    return (run.get("hparams") or {}).get("learning_rate",
                                          run["config"].get("learning_rate"))


def momentum_boxes(runs, *, metric: str = "max_accuracy") -> dict[str, Any]:
    """The data of El Mhamdi et al.'s (ICLR 2021) box plots, from a momentum grid.

    One panel per (attack, ``num_byzantine``, momentum kind = ``nesterov``,
    and ``learning_rate`` when it varies); in each, one box per placement
    (``server_momentum``: at the server, ``resam``: at the workers) holding
    ``metric`` of every attacked run (every rule x seed: 6 x 5 = 30 points in
    the paper); the panel's reference is the median of ``metric`` over the
    unattacked runs (``attack="none"``) with the same momentum kind and
    learning rate and ``num_workers = n - f``: the honest workers alone, as
    the paper's ``reproduce.py`` runs its reference (if a grid has no such
    run, the unattacked runs of any ``num_workers``; the panel's
    ``reference_workers`` says which were used). Non-finite values count as 0.

    Returns:
      ``{"panels": [{"attack", "num_byzantine", "num_workers", "nesterov",
      "learning_rate", "boxes": {placement: [values]}, "rules": {placement:
      [rules]}, "reference": median or None, "reference_workers": sorted
      num_workers of the reference runs}], "excluded": {(attack,
      num_byzantine): [rules of the grid missing there]}}``.
    """
    def val(r):
        return _value_or_zero(r, metric)

    attacked = [r for r in runs if r["config"]["attack"] != "none"]
    reference = [r for r in runs if r["config"]["attack"] == "none"]
    rules = sorted({r["config"]["aggregator"] for r in attacked})
    panels: dict[tuple, dict] = {}
    for r in attacked:
        c = r["config"]
        key = (c["attack"], c["num_byzantine"], bool(c.get("nesterov")),
               _learning_rate(r))
        p = panels.setdefault(key, {
            "attack": c["attack"], "num_byzantine": c["num_byzantine"],
            "num_workers": c["num_workers"], "nesterov": key[2],
            "learning_rate": key[3], "boxes": defaultdict(list),
            "rules": defaultdict(set)})
        p["boxes"][c["optimizer"]].append(val(r))
        p["rules"][c["optimizer"]].add(c["aggregator"])
    out, excluded = [], {}
    for key in sorted(panels, key=lambda k: (_rank(k[0], ATTACK_ORDER), k[1],
                                             k[2], -(k[3] or 0))):
        p = panels[key]
        ref = [r for r in reference
               if bool(r["config"].get("nesterov")) == p["nesterov"]
               and _learning_rate(r) == p["learning_rate"]]
        honest = [r for r in ref if r["config"]["num_workers"]
                  == p["num_workers"] - p["num_byzantine"]]
        ref = honest or ref
        p["reference"] = float(np.median([val(r) for r in ref])) if ref else None
        p["reference_workers"] = sorted({r["config"]["num_workers"] for r in ref})
        p["boxes"] = dict(p["boxes"])
        p["rules"] = {k: sorted(v) for k, v in p["rules"].items()}
        seen = set().union(*p["rules"].values())
        missing = [g for g in rules if g not in seen]
        if missing:
            excluded[(p["attack"], p["num_byzantine"])] = missing
        out.append(p)
    return {"panels": out, "excluded": excluded}


def momentum_gains(runs, *, metric: str = "max_accuracy",
                   thresholds: Sequence[float] = (0.1, 0.2, 0.4)) -> dict[str, Any]:
    """El Mhamdi et al.'s (ICLR 2021) summary: what momentum at the workers recovers.

    Pairs every attacked run with momentum at the server (``server_momentum``)
    with the run at the workers (``resam``) of the same attack, ``f``, rule,
    momentum kind, learning rate and seed, and with the unattacked run of the
    same momentum kind, learning rate and seed on the ``n - f`` honest workers
    alone (any unattacked run of that seed if the grid has none), as the
    ByzantineMomentum code's ``reproduce.py`` does. For each pair,
    ``loss = reference - at_server`` and ``gain = at_workers - at_server``
    (accuracies in [0, 1]; non-finite counts as 0). The attack is *effective*
    at threshold ``t`` when ``loss > t``; momentum at the workers *recovers*
    when, in addition, ``gain > t``. The paper's abstract reads its 20% row:
    when the attack takes at least 20% from the unattacked accuracy, worker
    momentum "systematically increases back" the accuracy and recovers at
    least 20% "in more than 60% of the cases".

    Args:
      runs: run records (:func:`load_runs`) of a momentum grid.
      metric: record field compared (default the maximum top-1 accuracy).
      thresholds: the ``t`` values counted.

    Returns:
      ``{"pairs": int, "unpaired": int, "effective": {t: int}, "recovered":
      {t: int}, "increased": {t: int} (gain > 0 among the effective),
      "worse": {0.0: int, 0.02: int, 0.05: int} (gain below minus that)}``.

    Example (``report.load_runs("results/momentum_fmnist")`` gives such runs):

      >>> from byzjax import report
      >>> def run(attack, optimizer, f, n, acc):
      ...     return {"seed": 0, "hparams": {"learning_rate": 0.5},
      ...             "max_accuracy": acc,
      ...             "config": {"attack": attack, "optimizer": optimizer,
      ...                        "aggregator": "krum", "num_byzantine": f,
      ...                        "num_workers": n, "nesterov": False}}
      >>> runs = [run("alie", "server_momentum", 12, 51, 0.40),
      ...         run("alie", "resam", 12, 51, 0.75),
      ...         run("none", "resam", 0, 39, 0.85)]  # the 39 honest alone
      >>> g = report.momentum_gains(runs)
      >>> g["pairs"], g["effective"][0.2], g["recovered"][0.2], g["recovered"][0.4]
      (1, 1, 1, 0)
    """
    def val(r):
        return _value_or_zero(r, metric)

    refs: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in runs:
        c = r["config"]
        if c["attack"] == "none":
            refs[(bool(c.get("nesterov")), _learning_rate(r), r.get("seed"))][
                c.get("num_workers")] = val(r)
    placed: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in runs:
        c = r["config"]
        if c["attack"] != "none" and c["optimizer"] in _PLACEMENT:
            key = (c["attack"], c["num_byzantine"], c["aggregator"],
                   bool(c.get("nesterov")), _learning_rate(r), r.get("seed"),
                   c["num_workers"])
            placed[key][c["optimizer"]] = val(r)
    out = {"pairs": 0, "unpaired": 0,
           "effective": {t: 0 for t in thresholds},
           "recovered": {t: 0 for t in thresholds},
           "increased": {t: 0 for t in thresholds},
           "worse": {0.0: 0, 0.02: 0, 0.05: 0}}
    for key, by in placed.items():
        ref = refs.get(key[3:6], {})
        reference = ref.get(key[6] - key[1], next(iter(ref.values()), None))
        if len(by) < 2 or reference is None:
            out["unpaired"] += 1
            continue
        out["pairs"] += 1
        loss = reference - by["server_momentum"]
        gain = by["resam"] - by["server_momentum"]
        for t in thresholds:
            if loss > t:
                out["effective"][t] += 1
                out["recovered"][t] += int(gain > t)
                out["increased"][t] += int(gain > 0)
        for w in out["worse"]:
            out["worse"][w] += int(gain < -w)
    return out


def plot_momentum_boxes(runs, path: str, *, metric: str = "max_accuracy"
                        ) -> dict[str, Any]:
    """Draws :func:`momentum_boxes` as the paper's figure; returns its data.

    Columns: (fraction of Byzantine workers, attack); rows: momentum kind
    (classical, Nesterov; and learning rate when it varies). In each panel
    the box of momentum at the server and the box at the workers, every run
    drawn as a point over its box, and the median of the unattacked runs as
    a dotted line. Rules missing in a column (e.g. Bulyan, which needs
    ``n >= 4f + 3``) are named in its title.

    Example (a results folder of ``experiments/momentum_fmnist.py``)::

        report.plot_momentum_boxes(report.load_runs("results/momentum_fmnist"),
                                   "momentum_fmnist.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = momentum_boxes(runs, metric=metric)
    panels = data["panels"]
    if not panels:
        raise ValueError("no attacked runs to draw (a momentum grid has attacks "
                         "and optimizers server_momentum / resam)")
    cols = sorted({(p["num_byzantine"], p["attack"]) for p in panels},
                  key=lambda k: (-k[0], _rank(k[1], ATTACK_ORDER)))
    rows = sorted({(p["nesterov"], p["learning_rate"]) for p in panels},
                  key=lambda k: (k[0], -(k[1] or 0)))
    many_lr = len({r[1] for r in rows}) > 1
    names = {"alie": "Little", "foe": "Empire"}
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False, sharey=True,
                             figsize=(2.3 * len(cols) + 0.6, 2.4 * len(rows) + 0.4))
    rng = np.random.default_rng(0)
    for p in panels:
        i = rows.index((p["nesterov"], p["learning_rate"]))
        j = cols.index((p["num_byzantine"], p["attack"]))
        ax = axes[i][j]
        kinds = [k for k in ("server_momentum", "resam") if k in p["boxes"]]
        kinds += sorted(k for k in p["boxes"] if k not in kinds)
        values = [p["boxes"][k] for k in kinds]
        ax.boxplot(values, widths=0.5, showfliers=False)
        for x, v in enumerate(values, start=1):
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(v)), v, s=6, alpha=0.6,
                       color="tab:red", zorder=3)
        if p["reference"] is not None:
            ax.axhline(p["reference"], ls=":", color="tab:blue", lw=1.5)
        ax.set_xticks(range(1, len(kinds) + 1),
                      [_PLACEMENT.get(k, k).replace("at the ", "") for k in kinds])
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            n, f = p["num_workers"], p["num_byzantine"]
            title = f"{names.get(p['attack'], p['attack'])}, f = {f} of {n}"
            missing = data["excluded"].get((p["attack"], f))
            if missing:
                title += "\n(no " + ", ".join(SHORT.get(g, g) for g in missing) + ")"
            ax.set_title(title, fontsize=9)
        if j == 0:
            label = "Nesterov" if p["nesterov"] else "classical"
            if many_lr:
                label += f", lr {p['learning_rate']:g}"
            ax.set_ylabel(f"{label}\nmax top-1 acc." if metric == "max_accuracy"
                          else f"{label}\n{metric}")
    fig.suptitle("momentum at the server vs at the workers; dotted: median "
                 "without attack", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return data
