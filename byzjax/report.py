"""Turning a results folder into the sources' tables and figures.

``byzjax report DIR`` reads every ``DIR/runs/*.json`` record and writes

* ``table_best.md``: best aggregator per (optimizer x attack) cell, as
  Fabris (2023, MSc thesis, Chalmers) prints Tables 4.1-4.4 (``0.777 CWTM``),
  the metric averaged over seeds;
* ``table_full.md``: every (optimizer, attack, aggregator) cell, mean +- std
  over seeds, with the number of diverged runs;
* ``heatmaps.png``: accuracy per aggregator x attack, one panel per optimizer;
* ``curves.png``: test-accuracy curves, rows = attacks, columns = optimizers,
  one line per aggregator (the thesis's Figures 4.3-4.6).
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from typing import Any, Iterable

import numpy as np

__all__ = ["load_runs", "cell_stats", "best_table", "full_table", "plot_heatmaps",
           "plot_curves", "write_report", "SHORT"]

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


OPT_ORDER = ("dsgd", "server_momentum", "resam", "dra", "mra")
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
    return paths


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
        (:func:`byzjax.sim._sweep.published_of`), or None.
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
               metric: str | None = None) -> list[dict[str, Any]]:
    """Writes :func:`cells_json` of the records under ``outdir`` to ``path``.

    ``published`` defaults to ``outdir/published.json`` when that file exists
    (``byzjax sweep`` writes it for a sweep that declares ``published``).
    """
    import json

    runs = load_runs(outdir)
    if published is None:
        saved = os.path.join(outdir, "published.json")
        if os.path.isfile(saved):
            with open(saved) as fh:
                published = json.load(fh)
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


def momentum_boxes(runs, *, metric: str = "max_accuracy") -> dict[str, Any]:
    """The data of El Mhamdi et al.'s (ICLR 2021) box plots, from a momentum grid.

    One panel per (attack, ``num_byzantine``, momentum kind = ``nesterov``,
    and ``learning_rate`` when it varies); in each, one box per placement
    (``server_momentum``: at the server, ``resam``: at the workers) holding
    ``metric`` of every attacked run (every rule x seed: 6 x 5 = 30 points in
    the paper); the panel's reference is the median of ``metric`` over the
    unattacked runs (``attack="none"``) with the same momentum kind and
    learning rate. Non-finite values count as 0.

    Returns:
      ``{"panels": [{"attack", "num_byzantine", "num_workers", "nesterov",
      "learning_rate", "boxes": {placement: [values]}, "rules": {placement:
      [rules]}, "reference": median or None}], "excluded": {(attack,
      num_byzantine): [rules of the grid missing there]}}``.
    """
    def val(r):
        v = r.get(metric)
        return float(v) if v is not None and np.isfinite(v) else 0.0

    def lr(r):
        return (r.get("hparams") or {}).get("learning_rate",
                                            r["config"].get("learning_rate"))

    attacked = [r for r in runs if r["config"]["attack"] != "none"]
    reference = [r for r in runs if r["config"]["attack"] == "none"]
    rules = sorted({r["config"]["aggregator"] for r in attacked})
    panels: dict[tuple, dict] = {}
    for r in attacked:
        c = r["config"]
        key = (c["attack"], c["num_byzantine"], bool(c.get("nesterov")), lr(r))
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
        ref = [val(r) for r in reference
               if bool(r["config"].get("nesterov")) == p["nesterov"]
               and lr(r) == p["learning_rate"]]
        p["reference"] = float(np.median(ref)) if ref else None
        p["boxes"] = dict(p["boxes"])
        p["rules"] = {k: sorted(v) for k, v in p["rules"].items()}
        seen = set().union(*p["rules"].values())
        missing = [g for g in rules if g not in seen]
        if missing:
            excluded[(p["attack"], p["num_byzantine"])] = missing
        out.append(p)
    return {"panels": out, "excluded": excluded}


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
