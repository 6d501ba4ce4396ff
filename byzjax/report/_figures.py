"""Figures: heatmaps, curve grids, per-cell curves, box plots over seeds,
time per compiled program, and one figure per run (accuracy above its
diagnostics). matplotlib is imported when a figure is drawn.

A cell holding several configurations (:func:`byzjax.report.config_groups`)
is never drawn as one average: heatmaps mark it, curves and boxes draw one
line / box per configuration, labelled by the fields that differ.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
import warnings
from typing import Any, Iterable

import numpy as np

from byzjax.report._cells import (
    AXES,
    CURVE_METRICS,
    METRIC_NAMES,
    SHORT,
    _key,
    _num,
    _order,
    cell_stats,
    config_groups,
    config_id,
    display_name,
    labelled,
)


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
    opts = _order({k[0] for k in stats}, "optimizer")
    atts = _order({k[1] for k in stats}, "attack")
    aggs = _order({k[2] for k in stats}, "aggregator")
    cmap = plt.get_cmap(CMAP).with_extremes(bad="#ececec")
    cell_w, cell_h = 0.95, 0.42
    width = 1.8 + len(opts) * (0.35 + cell_w * len(atts)) + 1.0
    height = max(2.6, 1.6 + cell_h * len(aggs))
    fig, axes = plt.subplots(1, len(opts), figsize=(width, height), squeeze=False,
                             sharey=True, layout="constrained")
    im = None
    missing = mixed = False
    for ax, o in zip(axes[0], opts):
        m = np.full((len(aggs), len(atts)), np.nan)
        several = np.zeros((len(aggs), len(atts)), bool)
        for i, g in enumerate(aggs):
            for j, a in enumerate(atts):
                if (o, a, g) in stats:
                    m[i, j] = stats[(o, a, g)]["mean"]
                    several[i, j] = stats[(o, a, g)]["conflict"]
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
                elif several[i, j]:
                    mixed = True
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1,
                                               fill=False, hatch="xx",
                                               edgecolor="#b0b0b0", lw=0))
                    ax.text(j, i, "several\nconfigs", ha="center", va="center",
                            fontsize=8, color="#333333")
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
    handles = []
    if missing:
        handles.append(Patch(facecolor="#ececec", hatch="///", edgecolor="#b0b0b0",
                             label="combination not run"))
    if mixed:
        handles.append(Patch(facecolor="#ececec", hatch="xx", edgecolor="#b0b0b0",
                             label="several configurations (not averaged): "
                             "see the full table"))
    if handles:
        fig.legend(handles=handles, loc="outside lower left", fontsize=9,
                   frameon=False)
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
    groups = config_groups(runs)
    opts = _order({k[0] for k in groups}, "optimizer")
    atts = _order({k[1] for k in groups}, "attack")
    aggs = _order({k[2] for k in groups}, "aggregator")
    series = _series(groups, aggs)
    styles = {s: _style(i) for i, s in enumerate(series)}
    fig, axes = plt.subplots(len(atts), len(opts),
                             figsize=(1.0 + 3.0 * len(opts), 0.9 + 2.2 * len(atts)),
                             squeeze=False, sharex=True, sharey=True,
                             layout="constrained")
    for i, a in enumerate(atts):
        for j, o in enumerate(opts):
            ax = axes[i][j]
            any_line = False
            for g in aggs:
                for cg in groups.get((o, a, g), []):
                    x, y = _curve(cg.runs)
                    if x is None:
                        continue
                    y = np.where(np.isfinite(y), y, 0.0)
                    name = labelled(display_name("aggregator", g), cg.label)
                    ax.plot(x, y.mean(0), lw=1.3, markersize=3, markevery=max(
                        1, len(x) // 6), label=name, **styles[(g, cg.label)])
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
    legend: dict[str, Any] = {}  # label -> its first handle
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
    by_agg = config_groups(rs, axes=("aggregator",))
    aggs = _order({k[0] for k in by_agg}, "aggregator")
    lines = [(labelled(display_name("aggregator", g), cg.label), cg.runs)
             for g in aggs for cg in by_agg[(g,)]]
    present = set()
    for r in rs:
        present |= set(r.get("metrics") or {})
    names = [m for m in CURVE_METRICS if m in present]
    cols = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols + 0.4, 2.1 * rows + 0.8),
                             squeeze=False, layout="constrained")
    for ax, name in zip(axes.ravel(), names):
        for i, (label, line_runs) in enumerate(lines):
            x, y = _curve(line_runs, name)
            if x is None:
                continue
            st = _style(i)
            with warnings.catch_warnings():  # all-NaN rounds stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(y, 0)
            ax.plot(x, mean, lw=1.2, markersize=3, markevery=max(1, len(x) // 5),
                    label=label, **st)
            if y.shape[0] > 1 and np.isfinite(y).any():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    lo, hi = np.nanmin(y, 0), np.nanmax(y, 0)
                ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, lw=0)
            if name == "test_accuracy":  # peer-to-peer: the nodes' spread
                _node_spread(ax, line_runs, x, st)
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


def _node_spread(ax, runs, x, style) -> None:
    """Peer-to-peer runs (records with ``test_accuracy_min`` / ``_max``): the
    worst and best honest node's accuracy (mean over seeds), dotted."""
    _, lo = _curve(runs, "test_accuracy_min")
    _, hi = _curve(runs, "test_accuracy_max")
    if not (np.isfinite(lo).any() and np.isfinite(hi).any()):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmean(lo, 0), np.nanmean(hi, 0)
    for y in (lo, hi):
        ax.plot(x, y, lw=0.8, ls=":", color=style["color"])


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
    groups = config_groups(runs)
    opts = _order({k[0] for k in groups}, "optimizer")
    atts = _order({k[1] for k in groups}, "attack")
    aggs = _series(groups, _order({k[2] for k in groups}, "aggregator"))
    fig, axes = plt.subplots(len(opts), len(atts),
                             figsize=(0.8 + max(1.3, 0.5 + 0.32 * len(aggs))
                                      * len(atts),
                                      0.9 + 1.9 * len(opts)),
                             squeeze=False, sharey=True, layout="constrained")
    for i, o in enumerate(opts):
        for j, a in enumerate(atts):
            ax = axes[i][j]
            data, pos, div = [], [], []
            for p, (g, label) in enumerate(aggs):
                rs = next((cg.runs for cg in groups.get((o, a, g), [])
                           if cg.label == label), [])
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
            ax.set_xticks(range(len(aggs)), [labelled(SHORT.get(g, g), label)
                                             for g, label in aggs],
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


def _series(groups: dict, aggs) -> list[tuple]:
    """(aggregator, configuration label) of every line / box, in the order of
    ``aggs``: one per aggregator unless its cells hold several configurations."""
    out = []
    for g in aggs:
        labels = {cg.label for k, cgs in groups.items() if k[-1] == g for cg in cgs}
        out += [(g, label) for label in sorted(labels)]
    return out


def _programs(runs) -> list[dict]:
    """One entry per compiled program (runs sharing a group wall time and
    static configuration): its cell, the configurations of its runs
    (:func:`byzjax.report.config_id`: a vmapped axis puts several in one
    program), runs and seconds."""
    progs: dict[tuple, dict] = {}
    for r in runs:
        wall = _num(r.get("group_wall_time_s"))
        key = (r.get("static_key") or json.dumps(r.get("config"), sort_keys=True,
                                                  default=str), wall)
        p = progs.setdefault(key, {"cell": _key(r, AXES), "runs": 0,
                                   "wall_s": wall,
                                   "first_chunk_s": _num(r.get(
                                       "group_first_chunk_s")),
                                   "config_ids": set()})
        p["runs"] += 1
        p["config_ids"].add(config_id(r))
    return list(progs.values())


def plot_times(runs, path: str, *, dpi: int = 80) -> None:
    """Seconds per compiled program (compilation + first evaluation chunk, and
    the rest), grouped by aggregator, one dot per program."""
    plt = _pyplot()
    progs = [p for p in _programs(runs) if np.isfinite(p["wall_s"])]
    aggs = _order({p["cell"][2] for p in progs}, "aggregator")
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


def _run_curve(run, key):
    values = run["metrics"].get(key)
    if values is None:
        return None
    y = np.asarray([np.nan if v is None else v for v in values], np.float64)
    return y if np.isfinite(y).any() else None


def _class_curves(run):
    """``[num_evals, num_classes]`` test accuracy per class of ``run`` (NaN where
    missing), or None when the record has none."""
    values = run["metrics"].get("test_class_accuracy")
    if not values or not any(isinstance(v, list) for v in values):
        return None
    width = max(len(v) for v in values if isinstance(v, list))
    y = np.full((len(values), width), np.nan)
    for e, v in enumerate(values):
        for c, a in enumerate(v if isinstance(v, list) else []):
            y[e, c] = np.nan if a is None else a
    return y if np.isfinite(y).any() else None


def plot_run_diagnostics(run: dict[str, Any], path: str) -> None:
    """One run: test accuracy above the diagnostics recorded per evaluation.

    Panels (shared round axis): test accuracy; the test accuracy of each
    class (when recorded: a class the network never predicts sits at 0);
    ``||F - mean_H|| / spread``
    (the empirical lambda, left axis) and the cosine of the aggregate with
    the honest mean (right axis); for selection rules the fraction of
    Byzantine rows selected and their weight in the aggregate; the honest
    variance-to-norm ratio (log scale when it spans decades), as the
    simulator records them once per evaluation (``docs/ARCHITECTURE.md``). A
    diagnostic the run did not record is left out.
    """
    plt = _pyplot()
    x = np.asarray(run["metrics"]["round"])
    panels = ["accuracy"]
    per_class = _class_curves(run)
    if per_class is not None:
        panels.append("classes")
    panels.append("resilience")
    if (_run_curve(run, "byz_selected") is not None
            or _run_curve(run, "byz_weight") is not None):
        panels.append("selection")
    if _run_curve(run, "var_norm_ratio") is not None:
        panels.append("variance")
    heights = [2.0] + [1.2] * (len(panels) - 1)
    # Fixed margins in inches (``tight_layout`` measured every label: 40% of
    # the time of a figure, drawn once per run of a sweep).
    width, height = 5.5, sum(heights) + 0.8
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, height),
                             sharex=True, gridspec_kw={"height_ratios": heights})
    fig.subplots_adjust(left=0.95 / width, right=1 - 0.6 / width,
                        top=1 - 0.3 / height, bottom=0.45 / height,
                        hspace=0.3)
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
        elif panel == "classes":
            cmap = plt.get_cmap("tab10")
            for c in range(per_class.shape[1]):
                ax.plot(x, per_class[:, c], "-", color=cmap(c % 10), lw=1.0,
                        label=str(c))
            ax.set_ylim(-0.05, 1.05)
            ax.set_ylabel("accuracy\nper class", fontsize=8)
            ax.legend(fontsize=6, ncol=min(per_class.shape[1], 10), loc="lower left",
                      handlelength=1.0, columnspacing=0.6, frameon=False)
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


