"""Machine-readable cells (``byzjax report --json``): one dict per
configuration's cell, with each seed's value, the published value where a
sweep declares one (and the gap to it, two ways), and the code that made its
runs.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from typing import Any

from byzjax.report._cells import (
    _defaults,
    _rank,
    code_versions,
    code_warning,
    load_runs,
    mean_of_rounded,
    merge_code_versions,
    seed_stats,
    split_configs,
)
from byzjax.sim import get_config, load_sweep

#: Config fields that name a cell in :func:`cells_json` (``rounds`` is
#: ``num_rounds``), beside any other field that varies inside such a cell.
JSON_AXES = ("optimizer", "attack", "aggregator", "model", "num_rounds")
#: Decimals of :func:`byzjax.report.mean_of_rounded` in the cells.
ROUNDED_DIGITS = 3


def _raw(run: dict, field: str):
    """``field`` of ``run`` as written: its hyper-parameter, else its config's
    value, else the default of :func:`byzjax.sim.get_config`."""
    hp = run.get("hparams") or {}
    if field in hp:
        return hp[field]
    cfg = run.get("config") or {}
    if field in cfg:
        return cfg[field]
    if field in _defaults():
        value = get_config()[field]
        return value.to_dict() if hasattr(value, "to_dict") else value
    return None


def cells_json(runs, *, published: dict | None = None,
               metric: str | None = None) -> list[dict[str, Any]]:
    """One dict per measured cell, with the published value where declared.

    A cell is the runs (seeds) of one configuration
    (:func:`byzjax.report.config_fields`: equal except for the seed) sharing
    ``optimizer``, ``attack``, ``aggregator``, ``model`` and ``num_rounds``;
    every other field that differs between configurations sharing those
    (``num_byzantine``, ``nesterov``, ``learning_rate`` of a vmapped axis, a
    base field edited between two sweeps) appears in every cell under its
    config name. Runs of different configurations are never averaged.

    Each cell: ``{optimizer, attack, aggregator, model, rounds, <fields that
    differ>, config_id, seeds, per_seed, mean, std, diverged, published,
    gap, mean_of_rounded, gap_of_rounded, code, code_warning}``:
    ``seeds`` the sorted seeds, ``per_seed`` ``[{"seed", "value"}]`` in seed
    order, ``mean`` / ``std`` over them of ``metric`` (a non-finite value
    counts as 0), ``diverged`` how many runs diverged, ``published`` the
    value of the first declared cell whose keys all match (else None),
    ``gap = mean - published``, ``mean_of_rounded`` the mean of the per-seed
    values each rounded to three decimals (as a published table may have
    averaged them) and ``gap_of_rounded`` its gap, ``code`` the code versions
    of its runs (:func:`byzjax.report.code_versions`) and ``code_warning``
    one line when they mix versions or are unknown (else ``""``). Declared
    cells no run matches are listed too, with ``seeds = []`` and ``mean =
    std = None``.

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
      >>> cell["per_seed"]
      [{'seed': 0, 'value': 0.5}, {'seed': 1, 'value': 0.7}]
      >>> other = dict(run, hparams={"learning_rate": 0.02}, final_accuracy=0.1)
      >>> [(c["learning_rate"], c["seeds"]) for c in cells_json([run, other])]
      [(0.02, [0]), (0.75, [0])]
    """
    metric = metric or (published or {}).get("metric") or "final_accuracy"
    declared = [dict(c) for c in (published or {}).get("cells", [])]

    base: dict[tuple, list] = defaultdict(list)
    for r in runs:
        base[tuple(_raw(r, a) for a in JSON_AXES)].append(r)
    split = {k: split_configs(rs) for k, rs in base.items()}
    extra = sorted({f for groups in split.values() for g in groups
                    for f in g.differs} - set(JSON_AXES))

    def match(cell):
        for d in declared:
            if all(cell.get(k) == v for k, v in d.items() if k != "value"):
                return d
        return None

    out, used = [], set()
    for key, groups in split.items():
        for g in groups:
            rs = g.runs
            cell = dict(zip(("optimizer", "attack", "aggregator", "model", "rounds"),
                            key))
            cell.update({f: _raw(rs[0], f) for f in extra})
            d = match({**cell, "num_rounds": cell["rounds"]})
            if d is not None:
                used.add(id(d))
            st = seed_stats(rs, metric)
            values = [p["value"] for p in st["per_seed"]]
            pub = None if d is None else float(d["value"])
            rounded = mean_of_rounded(values, ROUNDED_DIGITS)
            versions = code_versions(rs)
            cell.update(config_id=g.config_id,
                        seeds=sorted(int(r["seed"]) for r in rs),
                        per_seed=[{"seed": int(p["seed"]), "value": p["value"]}
                                  for p in st["per_seed"]],
                        mean=st["mean"], std=st["std"], diverged=st["diverged"],
                        published=pub,
                        gap=None if pub is None else st["mean"] - pub,
                        mean_of_rounded=rounded,
                        gap_of_rounded=None if pub is None else rounded - pub,
                        code=versions, code_warning=code_warning(versions))
            out.append(cell)
    for d in declared:
        if id(d) not in used:
            cell = {"optimizer": None, "attack": None, "aggregator": None,
                    "model": None, "rounds": None}
            cell.update({k: v for k, v in d.items() if k != "value"})
            cell.update(config_id=None, seeds=[], per_seed=[], mean=None, std=None,
                        diverged=0, published=float(d["value"]), gap=None,
                        mean_of_rounded=None, gap_of_rounded=None, code=[],
                        code_warning="")
            out.append(cell)

    def order(c):
        return (_rank(c["optimizer"], "optimizer"),
                _rank(c["attack"], "attack"),
                str(c["aggregator"]), tuple(_sortable(c.get(k)) for k in extra))

    return sorted(out, key=order)


def _sortable(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return (0, float(v), "")
    return (1, 0.0, json.dumps(v, sort_keys=True, default=str))


def json_document(cells: list[dict]) -> dict[str, Any]:
    """What ``byzjax report --json`` writes: ``{"code": [...], "code_warning":
    str, "cells": cells}``, ``code`` the code versions of all the cells' runs
    (:func:`byzjax.report.code_versions`) and ``code_warning`` one line when
    they mix versions or include runs of unknown code."""
    versions = merge_code_versions(c.get("code") or [] for c in cells)
    return {"code": versions, "code_warning": code_warning(versions),
            "cells": cells}


def write_json(outdir: str, path: str, *, published: dict | None = None,
               sweep=None, metric: str | None = None) -> list[dict[str, Any]]:
    """Writes :func:`cells_json` of the records under ``outdir`` to ``path``
    (as :func:`write_json_cells`); returns the cells.

    ``published`` defaults to the ``published`` field of the sweep: ``sweep``
    (a sweep file, ConfigDict or dict) or else ``outdir/sweep.json``, which
    ``byzjax sweep`` writes (the same source as the web page's).
    """
    runs = load_runs(outdir)
    if published is None:
        published = (sweep_info(outdir, sweep) or {}).get("published") or None
    cells = cells_json(runs, published=published, metric=metric)
    write_json_cells(cells, path)
    return cells


def write_json_cells(cells: list[dict], path: str) -> None:
    """Writes :func:`json_document` of :func:`cells_json` output to ``path``
    (standard JSON, one cell a line)."""
    doc = json_document(cells)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("{\n\"code\": " + json.dumps(doc["code"], allow_nan=False)
                 + ",\n\"code_warning\": " + json.dumps(doc["code_warning"])
                 + ",\n\"cells\": [\n"
                 + ",\n".join(json.dumps(c, allow_nan=False) for c in cells)
                 + "\n]\n}\n")


def read_json_cells(path: str) -> list[dict[str, Any]]:
    """The cells of a file :func:`write_json_cells` wrote (or of the older
    form, a plain list of cells)."""
    with open(path) as fh:
        doc = json.load(fh)
    return doc if isinstance(doc, list) else doc["cells"]


def sweep_info(outdir: str, sweep) -> dict | None:
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
