"""The static web page of a results folder (``byzjax report --html``), from
the Jinja2 templates in ``byzjax/templates`` (package data). Jinja2 and
Pillow are imported when a page is written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import defaultdict
from typing import Any

import numpy as np

from byzjax.report._cells import (
    AXES,
    METRIC_NAMES,
    SHORT,
    _flatten,
    _key,
    _order,
    _rank,
    _sorted_keys,
    cell_stats,
    code_lines,
    code_versions,
    code_warning,
    display_name,
    labelled,
    per_seed_text,
    runs_or_error,
)
from byzjax.report._figures import (
    _programs,
    plot_boxplots,
    plot_cell_curves,
    plot_heatmaps,
    plot_times,
)
from byzjax.report._json import sweep_info
from byzjax.report._tables import best_cells, conflict_note, node_spread_lines
from byzjax.report._worst_case import (
    PANEL_FIELDS,
    definition_text,
    html_panels,
    plot_worst_case_heatmaps,
    worst_case_cells,
)
from byzjax.sim import ConfigError


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
        raise ConfigError("byzjax report --html needs Jinja2: pip install "
                          "'byzjax[report]' (or pip install jinja2)") from None
    return jinja2.Environment(
        loader=jinja2.PackageLoader("byzjax", "templates"),
        autoescape=jinja2.select_autoescape(("html", "j2")),
        trim_blocks=True, lstrip_blocks=True)


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
        cfg = dict(r.get("config") or {})
        cfg.update(r.get("hparams") or {})
        for k, v in _flatten(cfg).items():
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
            small = im.convert("RGB").quantize(colors=palette,
                                               dither=Image.Dither.NONE)
            small.save(path, optimize=True)
    return round(width * 96 / dpi)


def write_html(outdir: str, *, out: str | None = None, sweep=None,
               metric: str = "final_accuracy", dpi: int = 80,
               palette: int | None = None, page_size: int = 50,
               view: str | None = None, fixed=PANEL_FIELDS) -> str:
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
      view: ``"byzfl"`` adds ByzFL's evaluation (each rule's worst case over
        attacks at its best setting, :func:`byzjax.report.worst_case_cells`)
        as a section with its heatmaps.
      fixed: with ``view="byzfl"``, the fields whose values are panels.

    Raises:
      ConfigError: no records, or Jinja2 is not installed.
    """
    env = require_jinja2()
    runs = runs_or_error(outdir)
    out = out or os.path.join(outdir, "report")
    img = os.path.join(out, "img")
    if os.path.isdir(img):
        shutil.rmtree(img)
    os.makedirs(img, exist_ok=True)
    info = sweep_info(outdir, sweep)
    pub, pub_source, pub_metric = _published(info)
    stats = cell_stats(runs, metric=metric)
    best = best_cells(runs, metric=metric, stats=stats)
    opts = _order({k[0] for k in stats}, "optimizer")
    atts = _order({k[1] for k in stats}, "attack")

    # Best-per-cell table (papers' layout) with the published values; a cell
    # holding several configurations says so instead of choosing.
    best_rows, best_notes = [], []
    for o in opts:
        cells = []
        for a in atts:
            b = best.get((o, a))
            # The cell's one best configuration (None: no runs, or several).
            one = b if b is not None and not b["conflict"] else None
            p = pub.get((o, a))
            cell = {"value": _fmt(one["mean"]) if one is not None else "",
                    "agg": SHORT.get(one["aggregator"], one["aggregator"])
                    if one is not None else "",
                    "agg_name": display_name("aggregator", one["aggregator"])
                    if one is not None else "",
                    "per_seed": per_seed_text(one["per_seed"])
                    if one is not None and one["count"] > 1 else "",
                    "conflict": None, "published": None}
            if b is not None and b["conflict"]:
                best_notes.append(conflict_note(
                    f"{display_name('optimizer', o)} / {display_name('attack', a)}",
                    b))
                cell["conflict"] = {"configs": b["configs"], "note": len(best_notes),
                                    "title": best_notes[-1]}
            if p is not None:
                d = (one["mean"] - p[0]) if one is not None else math.nan
                cell["published"] = {
                    "value": f"{p[0]:.4g}", "agg": SHORT.get(p[1], p[1] or ""),
                    "diff": f"{d:+.3f}" if np.isfinite(d) else "",
                    "cls": _diff_class(d) if np.isfinite(d) else ""}
            cells.append(cell)
        best_rows.append({"name": display_name("optimizer", o), "id": o,
                          "cells": cells})

    # Full table: one row per cell and configuration.
    progs = _programs(runs)
    time_of: dict[tuple, list] = defaultdict(list)
    for p in progs:
        for cid in p["config_ids"]:
            time_of[(p["cell"], cid)].append(p["wall_s"])
    max_stats = cell_stats(runs, metric="max_accuracy")
    full_rows = []
    for k in _sorted_keys(stats):
        p = pub.get(k[:2])
        p_here = p if p is not None and p[1] in (None, k[2]) else None
        max_of = {c["config_id"]: c["mean"] for c in max_stats[k]["configs"]}
        for v in stats[k]["configs"]:
            t = [x for x in time_of.get((k, v["config_id"]), []) if np.isfinite(x)]
            versions = code_versions(v["runs"])
            full_rows.append({
                "optimizer": k[0], "attack": k[1], "aggregator": k[2],
                "config": v["label"], "config_id": v["config_id"],
                "optimizer_name": display_name("optimizer", k[0]),
                "attack_name": display_name("attack", k[1]),
                "aggregator_name": labelled(display_name("aggregator", k[2]),
                                            v["label"]),
                "mean": v["mean"], "std": v["std"], "count": v["count"],
                "diverged": v["diverged"], "max": max_of[v["config_id"]],
                "published": p_here[0] if p_here else None,
                "time": float(np.sum(t)) if t else None,
                "mean_s": _fmt(v["mean"]), "std_s": _fmt(v["std"]),
                "per_seed_s": per_seed_text(v["per_seed"]),
                "seeds_s": ", ".join(str(q["seed"]) for q in v["per_seed"]),
                "max_s": _fmt(max_of[v["config_id"]]),
                "published_s": f"{p_here[0]:.4g}" if p_here else "",
                "time_s": f"{np.sum(t):.1f}" if t else "",
                "code_warning": code_warning(versions) if len(versions) > 1
                else ""})

    # Figures.
    figures = {}
    for name, fn, kw in (("heatmaps", plot_heatmaps, {"metric": metric}),
                         ("boxplots", plot_boxplots, {"metric": metric}),
                         ("times", plot_times, {})):
        width = _save_png(fn, os.path.join(img, name + ".png"), runs=runs, **kw,
                          palette=palette, dpi=dpi)
        figures[name] = {"src": f"img/{name}.png", "width": width}
    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[_key(r, AXES[:2])].append(r)
    cell_figs = []
    for i, (o, a) in enumerate(sorted(groups, key=lambda k: (
            _rank(k[0], "optimizer"), _rank(k[1], "attack")))):
        name = f"cell_{i:03d}.png"
        title = f"{display_name('optimizer', o)} \u2014 {display_name('attack', a)}"
        drawn = []

        def fig_fn(path, dpi, rs=groups[(o, a)], title=title):
            drawn.extend(plot_cell_curves(rs, path, title=title, dpi=dpi))

        width = _save_png(fig_fn, os.path.join(img, name), palette=palette,
                          dpi=dpi)
        b = best[(o, a)]
        best_text = (f"several configurations ({', '.join(b['differs'])} differ)"
                     if b["conflict"] else
                     f"{b['mean']:.4f} {display_name('aggregator', b['aggregator'])}")
        cell_figs.append({"src": "img/" + name, "width": width, "title": title,
                          "optimizer": o,
                          "attack": a, "runs": len(groups[(o, a)]),
                          "best": best_text, "metrics": [METRIC_NAMES.get(m, m)
                                                         for m in drawn]})

    byzfl = None
    if view == "byzfl":
        wc = worst_case_cells(runs, fixed=fixed)
        width = _save_png(lambda path, dpi: plot_worst_case_heatmaps(
            wc, path, dpi=dpi), os.path.join(img, "byzfl_heatmaps.png"),
            palette=palette, dpi=dpi)
        byzfl = {"panels": html_panels(wc), "definition": definition_text(wc),
                 "figure": {"src": "img/byzfl_heatmaps.png", "width": width}}

    cfg_rows, grid_rows = _config_rows(runs, info)
    total_wall = sum(p["wall_s"] for p in progs if np.isfinite(p["wall_s"]))
    page = env.get_template("report.html.j2").render(
        title=(info or {}).get("name") or os.path.basename(os.path.abspath(outdir)),
        metric=metric, metric_name=METRIC_NAMES.get(metric, metric),
        n_runs=len(runs), n_cells=len(full_rows), n_programs=len(progs),
        n_diverged=sum(bool(r.get("diverged")) for r in runs),
        total_wall=f"{total_wall:.0f}",
        attacks=[{"id": a, "name": display_name("attack", a)} for a in atts],
        best_rows=best_rows, best_notes=best_notes, code_lines=code_lines(runs),
        has_published=bool(pub), pub_source=pub_source,
        pub_metric=pub_metric, pub_metric_differs=bool(pub_metric) and
        pub_metric != metric,
        full_rows=full_rows, page_size=page_size,
        node_spread="\n".join(node_spread_lines(runs)).strip(),
        filters={ax: [{"id": v, "name": display_name(ax, v)} for v in _order(
            {k[i] for k in stats}, ax)] for i, ax in enumerate(AXES)},
        figures=figures, cell_figs=cell_figs, config_rows=cfg_rows,
        grid_rows=grid_rows, varying=_varying(runs), byzfl=byzfl,
        abbreviations=", ".join(
            f"{SHORT[g]} = {display_name('aggregator', g)}" for g in _order(
                {k[2] for k in stats} | {p[1] for p in pub.values() if p[1]},
                "aggregator") if g in SHORT
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


