"""ByzFL's evaluation of a results folder: each rule's hyper-parameters chosen
against its worst attack (``byzjax report --view byzfl``).

ByzFL's benchmark (Gonzalez et al., 2025, "ByzFL: Research Framework for
Robust Federated Learning"; ``byzfl/benchmark/evaluate_results.py``,
``find_best_hyperparameters`` and ``test_heatmap``) judges a robust rule by
the accuracy it keeps against the strongest attack, with its learning
hyper-parameters tuned for that worst case. The same view of any byzjax
results folder:

* a **panel** is one value of the ``fixed`` fields (default
  :data:`PANEL_FIELDS`: dataset, model and data distribution), one heatmap;
* a **cell** of a panel is a rule (:data:`RULE_FIELDS`: the aggregator, and
  the pre-aggregator with its keywords, so that ByzFL's lists of
  pre-aggregators stay apart as in its heatmaps: a ``chain`` is named by its
  steps, ``CLIP + NNM + CWTM``) and a number of Byzantine workers ``f``
  (with ``n``: ByzFL adds ``f`` Byzantine workers to a fixed number of
  honest ones);
* inside a cell, runs differ only in the attack (:data:`ATTACK_FIELDS`,
  its name with its strength and keywords), the seeds
  (:data:`SEED_FIELDS`, ByzFL's training and data-distribution seeds,
  pooled) and the **setting**: every other field that differs (learning
  rate, momentum, weight decay, the aggregator's keywords, the optimiser,
  ...);
* the accuracy of a (setting, attack) is, as in ByzFL, the test-accuracy
  curve averaged over seeds, then its largest value over evaluations
  (``metric="byzfl"``; a diverged evaluation counts as 0, as everywhere
  in the report), or the mean over seeds of a record's ``final_accuracy``
  or ``max_accuracy``;
* a setting's worst case is its smallest accuracy over the cell's attacks;
  the setting with the largest worst case is chosen (ties: the first in
  the settings' sorted order; a setting missing one of the cell's attacks
  is not a candidate); the cell shows the chosen setting, its worst attack
  and every attack's accuracy there.

ByzFL chooses the setting on a validation split (20% of the training set)
and reports test accuracy at it; byzjax records test accuracy only, so the
choice is made on the curve ``select_on`` (default: ``val_accuracy`` when
every run of the cell records one, else ``test_accuracy``), and every output
says which. Runs are averaged only over the seeds of one configuration
(:func:`byzjax.report.config_fields`, the seed fields left out).

Two small differences remain. ByzFL's curves begin with the initial model
(step 0), byzjax's after the first ``eval_every`` rounds, so the largest
value differs only where no evaluation beats the initial model. ByzFL breaks
ties between settings by its loop order (learning rate, momentum, weight
decay as listed); here the settings are sorted by their differing fields'
names and values. On ByzFL's own results (``scripts/byzfl_side_by_side.py
--check-view``: synthetic validation and test curves, 2 aggregators x 3
attacks x 2 f x 2 distributions x 4 settings x 4 seeds) the view gives
ByzFL's chosen settings and ``test_heatmap`` numbers in every cell.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from byzjax.report._cells import (
    _defaults,
    _differing,
    _num,
    _order,
    _rank,
    _seed_order,
    code_lines,
    config_fields,
    display_name,
    short_name,
    show_value,
)
from byzjax.report._figures import CMAP, _pyplot, _text_color, _wrap
from byzjax.sim import ConfigError

#: The fields naming a rule: rows of the view (ByzFL's aggregator and list
#: of pre-aggregators; the aggregator's keywords are a tuned setting).
RULE_FIELDS = ("aggregator", "preaggregator", "preaggregator_kwargs")
#: The fields describing the adversary: the worst case is taken over them.
ATTACK_FIELDS = ("attack", "attack_kwargs", "attack_eps", "attack_point")
#: Seeds pooled into one mean (ByzFL's training and data-distribution seeds,
#: and the initial model's seed, which ByzFL draws with the latter). Whether
#: the start is shared (``init_seed >= 0``) stays part of the configuration.
SEED_FIELDS = ("seed", "split_seed", "init_seed")
#: The columns: Byzantine workers, with the worker count beside it.
F_FIELDS = ("num_byzantine", "num_workers")
#: Default panels: one per dataset, model, data distribution and number of
#: workers that attack when it is not ``f`` (ByzFL's heatmaps per declared
#: ``tolerated_f``).
PANEL_FIELDS = ("dataset", "model", "split", "dirichlet_alpha", "similarity_gamma",
                "num_attackers")
#: ``metric`` values: ByzFL's (largest value of the seed-mean curve) or the
#: mean over seeds of a record's own number.
METRICS = ("byzfl", "final_accuracy", "max_accuracy")


def _key(d: dict) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def _value_of(runs: Sequence[dict], curve: str, metric: str) -> dict[str, Any]:
    """``{"value", "std", "round", "per_seed"}`` of one configuration's
    seeds: the curve ``curve`` averaged over seeds and its largest value
    (``metric="byzfl"``), else the mean of the records' ``metric``."""
    rs = sorted(runs, key=_seed_order)
    seeds = [{"seed": r.get("seed"),
              "split_seed": (r.get("config") or {}).get("split_seed",
                                                       _defaults()["split_seed"])}
             for r in rs]
    if metric == "byzfl":
        ys = [[_num(v) for v in (r.get("metrics") or {}).get(curve) or []]
              for r in rs]
        length = min(len(y) for y in ys)
        if length == 0:
            return {"value": math.nan, "std": math.nan, "round": None,
                    "per_seed": [dict(s, value=math.nan) for s in seeds]}
        m = np.asarray([y[:length] for y in ys], np.float64)
        m = np.where(np.isfinite(m), m, 0.0)
        mean = m.mean(axis=0)
        t = int(np.argmax(mean))
        rounds = (rs[0].get("metrics") or {}).get("round") or []
        return {"value": float(mean[t]), "std": float(m[:, t].std()),
                "round": rounds[t] if t < len(rounds) else None,
                "per_seed": [dict(s, value=float(v)) for s, v in zip(seeds, m[:, t])]}
    if curve != "test_accuracy":  # the record's number of another curve
        arrays = [np.asarray([_num(v) for v in (r.get("metrics") or {}).get(curve)
                              or []], np.float64) for r in rs]
        vals = np.asarray([
            0.0 if not len(y) else (y[-1] if metric == "final_accuracy"
                                    else np.nanmax(np.where(np.isfinite(y), y, 0.0)))
            for y in arrays], np.float64)
    else:
        vals = np.asarray([_num(r.get(metric)) for r in rs], np.float64)
    vals = np.where(np.isfinite(vals), vals, 0.0)
    return {"value": float(vals.mean()), "std": float(vals.std()), "round": None,
            "per_seed": [dict(s, value=float(v)) for s, v in zip(seeds, vals)]}


def _parts(run: dict, fixed: Sequence[str]) -> tuple[dict, ...]:
    """(panel, rule, f and n, attack, setting) fields of ``run``."""
    cf = config_fields(run, ignore=SEED_FIELDS)
    init_seed = (run.get("config") or {}).get("init_seed", -1)
    cf["init_seed"] = "per seed" if init_seed is None or init_seed < 0 \
        else "shared"  # each its own start, or one for every seed
    d = _defaults()

    def take(fields):
        return {k: cf.pop(k, d.get(k)) for k in fields}

    rule = take(RULE_FIELDS)
    fn = take(F_FIELDS)
    attack = take(ATTACK_FIELDS)
    panel = take([k for k in fixed if k not in RULE_FIELDS + F_FIELDS
                  + ATTACK_FIELDS])
    return panel, rule, fn, attack, cf


def check_fixed(fixed: Sequence[str]) -> None:
    """Refuses, in one line, ``fixed`` fields that are not config fields.

    Example:
      >>> check_fixed(["split", "optimizer"])
      >>> try:
      ...     check_fixed(["optimiser"])
      ... except ValueError as e:
      ...     print(e)
      --fixed optimiser: not a config field (see byzjax train --help)
    """
    unknown = [k for k in fixed if k not in _defaults()]
    if unknown:
        raise ConfigError(f"--fixed {','.join(unknown)}: not a config field (see "
                          "byzjax train --help)")


def _check(runs: Sequence[dict], metric: str, fixed: Sequence[str]) -> None:
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r} of the worst-case view: use one of "
                          f"{', '.join(METRICS)}")
    check_fixed(fixed)
    if not runs:
        raise ConfigError("no runs for the worst-case view")


def worst_case_cells(runs: Iterable[dict], *, metric: str = "byzfl",
                     fixed: Sequence[str] = PANEL_FIELDS,
                     select_on: str | None = None) -> list[dict[str, Any]]:
    """ByzFL's evaluation: per (panel, rule, f) the setting with the best
    worst case over attacks (module docstring).

    Args:
      runs: run records (:func:`byzjax.report.load_runs`).
      metric: ``"byzfl"`` (the largest value of the seed-mean test-accuracy
        curve, ByzFL's), ``"final_accuracy"`` or ``"max_accuracy"`` (means
        over seeds of the records' numbers).
      fixed: the fields whose values are panels (never tuned over).
      select_on: the curve the setting is chosen on (default:
        ``val_accuracy`` when every run of the cell records one, else
        ``test_accuracy``).

    Returns:
      One dict per cell, in panel, rule and ``f`` order: ``panel``,
      ``aggregator``, ``preaggregator``, ``num_byzantine``, ``num_workers``,
      ``selected_on``, ``setting`` (the chosen setting's fields that differ
      between the cell's settings), ``worst`` (its worst-case accuracy),
      ``worst_attack``, ``std`` / ``per_seed`` / ``round`` of that attack,
      ``attacks`` (``{label: {"value", "std", "per_seed", "round",
      "fields"}}`` at the chosen setting), ``candidates`` (every setting
      with ``label``, ``setting``, ``worst``, ``worst_attack``,
      ``select_worst``, ``values``, ``complete``), ``settings`` (their
      number) and ``runs``.

    Example:
      >>> def run(lr, attack, seed, acc):
      ...     return {"config": {"aggregator": "median", "attack": attack,
      ...             "num_byzantine": 2, "learning_rate": lr},
      ...             "seed": seed, "metrics": {"round": [50, 100],
      ...             "test_accuracy": [0.5, acc]}}
      >>> runs = [run(0.1, "alie", 0, 0.9), run(0.1, "sign_flip", 0, 0.6),
      ...         run(0.5, "alie", 0, 0.8), run(0.5, "sign_flip", 0, 0.7)]
      >>> c, = worst_case_cells(runs)
      >>> c["setting"], c["worst_attack"], c["worst"]
      ({'learning_rate': 0.5}, 'sign_flip', 0.7)
    """
    runs = list(runs)
    _check(runs, metric, fixed)
    cells: dict[tuple, dict] = defaultdict(lambda: defaultdict(lambda: defaultdict(
        list)))
    parts: dict[tuple, tuple] = {}
    attack_fields: dict[str, dict] = {}
    for r in runs:
        panel, rule, fn, attack, setting = _parts(r, fixed)
        key = (_key(panel), _key(rule), _key(fn))
        parts[key] = (panel, rule, fn)
        ak = _key(attack)
        attack_fields[ak] = attack
        cells[key][_key(setting)][ak].append(r)
    vary = _differing(list(attack_fields.values()))
    labels = {ak: _attack_label(a, vary) for ak, a in attack_fields.items()}
    out = []
    for key, settings in cells.items():
        panel, rule, fn = parts[key]
        cell_runs = [r for s in settings.values() for rs in s.values() for r in rs]
        curve = select_on or ("val_accuracy" if all(
            (r.get("metrics") or {}).get("val_accuracy") for r in cell_runs)
            else "test_accuracy")
        attacks = sorted({ak for s in settings.values() for ak in s},
                         key=lambda ak: (_rank(attack_fields[ak]["attack"], "attack"),
                                         ak))
        setting_fields = {sk: json.loads(sk) for sk in settings}
        differs = _differing(list(setting_fields.values()))
        cands = []
        for sk in sorted(settings, key=lambda sk: tuple(
                _sort(setting_fields[sk].get(k)) for k in differs)):
            by = settings[sk]
            values = {ak: _value_of(rs, "test_accuracy", metric)
                      for ak, rs in by.items()}
            select = (values if curve == "test_accuracy" else
                      {ak: _value_of(rs, curve, metric) for ak, rs in by.items()})
            complete = set(by) == set(attacks)
            worst_ak = min(by, key=lambda ak: (values[ak]["value"], ak))
            sel_ak = min(by, key=lambda ak: (select[ak]["value"], ak))
            sub = {k: setting_fields[sk].get(k) for k in differs}
            cands.append({
                "label": ", ".join(f"{k}={show_value(v)}" for k, v in sub.items()),
                "setting": sub, "complete": complete,
                "worst": values[worst_ak]["value"],
                "worst_attack": labels[worst_ak],
                "select_worst": select[sel_ak]["value"],
                "values": {labels[ak]: v for ak, v in values.items()},
                "fields": {labels[ak]: attack_fields[ak] for ak in by}})
        ok = [c for c in cands if c["complete"]] or cands
        best = max(ok, key=lambda c: c["select_worst"]
                   if np.isfinite(c["select_worst"]) else -math.inf)
        w = best["values"][best["worst_attack"]]
        out.append({
            "panel": panel, **rule, **fn, "selected_on": curve, "metric": metric,
            "setting": best["setting"], "label": best["label"],
            "worst": best["worst"], "worst_attack": best["worst_attack"],
            "std": w["std"], "per_seed": w["per_seed"], "round": w["round"],
            "attacks": {a: dict(v, fields=best["fields"][a])
                        for a, v in best["values"].items()},
            "candidates": cands, "settings": len(cands),
            "incomplete": sum(not c["complete"] for c in cands),
            "runs": len(cell_runs)})
    _label_rules(out)
    return sorted(out, key=_cell_order)


def _sort(v):
    return (0, v, "") if isinstance(v, float) else (1, 0.0, show_value(v))


def _attack_label(attack: dict, vary: Sequence[str]) -> str:
    """The attack's name, with the attack fields that differ between the
    runs' attacks (``alie (attack_eps=1.5)``)."""
    extra = [f"{k}={show_value(attack[k])}" for k in vary if k != "attack"]
    name = str(attack["attack"])
    return f"{name} ({', '.join(extra)})" if extra else name


def _cell_order(c: dict):
    return (tuple(_sort(v) for v in c["panel"].values()),
            _rank(c["aggregator"], "aggregator"),
            _rank(c["preaggregator"], "preaggregator"),
            _num(c["num_byzantine"]), _num(c["num_workers"]))


def _pre_name(pre: str, kwargs: Any, short: bool) -> str:
    def one(name):
        return (short_name(name, "preaggregator") if short
                else display_name("preaggregator", name))
    steps = (kwargs or {}).get("steps") if pre == "chain" else None
    if steps:
        return " + ".join(one(step[0]) for step in steps)
    return one(pre)


def _rule_name(c: dict, short: bool = True) -> str:
    """A rule's row label: ``CWTM``, ``NNM + CWTM``, a chain by its steps
    (``CLIP + NNM + CWTM``), with the pre-aggregator's keywords added
    where two rules of the view would otherwise share a label
    (``worst_case_cells`` stores them as ``rule_label``).

    Example:
      >>> _rule_name({"aggregator": "trimmed_mean", "preaggregator": "chain",
      ...             "preaggregator_kwargs": {"steps": [
      ...                 ["static_clipping", {"max_norm": 2.0}], ["nnm", {}]]}})
      'CLIP + NNM + CWTM'
    """
    if short and c.get("rule_label"):
        return c["rule_label"]
    agg = (short_name(c["aggregator"]) if short
           else display_name("aggregator", c["aggregator"]))
    pre = c["preaggregator"]
    if not pre:
        return agg
    return f"{_pre_name(pre, c.get('preaggregator_kwargs'), short)} + {agg}"


def _label_rules(cells: list[dict]) -> None:
    """Sets each cell's ``rule_label``: its rule's name, and the
    pre-aggregator's keywords where rules differing only in them would
    share a name."""
    kwargs_of: dict[str, set] = defaultdict(set)
    for c in cells:
        kwargs_of[_rule_name(c)].add(_key(c.get("preaggregator_kwargs") or {}))
    for c in cells:
        name = _rule_name(c)
        if len(kwargs_of[name]) > 1:
            agg = short_name(c["aggregator"])
            pre = name[:-len(f" + {agg}")]
            name = (f"{pre}{_kwargs_suffix(c.get('preaggregator_kwargs') or {})}"
                    f" + {agg}")
        c["rule_label"] = name


def _kwargs_suffix(kwargs: dict) -> str:
    if not kwargs:
        return ""
    parts = []
    for k, v in sorted(kwargs.items()):
        if k == "steps" and isinstance(v, (list, tuple)):
            v = ", ".join(f"{st[0]}(" + ", ".join(
                f"{a}={show_value(b)}" for a, b in sorted((st[1] or {}).items()))
                + ")" if len(st) > 1 and st[1] else str(st[0]) for st in v)
        else:
            v = show_value(v)
        parts.append(f"{k}={v}")
    return " [" + "; ".join(parts) + "]"


def _panel_label(panel: dict, vary: Sequence[str]) -> str:
    return ", ".join(f"{k}={show_value(panel[k])}" for k in vary) or "all runs"


def _column(c: dict, n_varies: bool) -> str:
    f = show_value(c["num_byzantine"])
    return f"f={f}, n={show_value(c['num_workers'])}" if n_varies else f"f={f}"


def _layout(cells: Sequence[dict]) -> list[dict[str, Any]]:
    """Per panel: its label, rules (rows), columns and ``{(row, col): cell}``."""
    vary = _differing([c["panel"] for c in cells])
    by: dict[str, list] = defaultdict(list)
    for c in cells:
        by[_key(c["panel"])].append(c)
    out = []
    for cs in by.values():
        n_of_f = defaultdict(set)
        for c in cs:
            n_of_f[c["num_byzantine"]].add(c["num_workers"])
        n_varies = any(len(v) > 1 for v in n_of_f.values())
        rows = list(dict.fromkeys(_rule_name(c) for c in cs))
        cols = []
        for c in sorted(cs, key=lambda c: (_num(c["num_byzantine"]),
                                           _num(c["num_workers"]))):
            if _column(c, n_varies) not in cols:
                cols.append(_column(c, n_varies))
        grid = {(_rule_name(c), _column(c, n_varies)): c for c in cs}
        out.append({"label": _panel_label(cs[0]["panel"], vary), "rows": rows,
                    "cols": cols, "grid": grid})
    return out


def _best_row(panel: dict) -> list[tuple[float, str] | None]:
    """ByzFL's aggregated heatmap: per column, the best rule's worst case."""
    best: list[tuple[float, str] | None] = []
    for col in panel["cols"]:
        grid = panel["grid"]
        cs = [grid[(r, col)] for r in panel["rows"] if (r, col) in grid]
        c = max(cs, key=lambda c: c["worst"]) if cs else None
        best.append((c["worst"], _rule_name(c)) if c is not None else None)
    return best


def _tuned(cells: Sequence[dict]) -> list[str]:
    return sorted({k for c in cells for k in c["setting"]})


def definition_text(cells: Sequence[dict]) -> str:
    """The paragraph saying how the view's numbers are made."""
    metric = cells[0]["metric"] if cells else "byzfl"
    how = ("the test-accuracy curve averaged over seeds, then its largest value "
           "over evaluations (ByzFL's evaluate_results.py)" if metric == "byzfl"
           else f"the mean over seeds of {metric}")
    sel = sorted({c["selected_on"] for c in cells})
    tuned = _tuned(cells)
    return (f"Accuracy of a (setting, attack): {how}. Each rule's setting "
            f"({', '.join(tuned) if tuned else 'one setting only'}) is the one "
            "whose smallest accuracy over the attacks is largest, chosen on "
            f"{' / '.join(sel)}"
            + (" (ByzFL chooses on a validation split; these runs record none)"
               if sel == ["test_accuracy"] else "")
            + ". Runs are averaged only over the seeds of one configuration.")


def worst_case_table(runs: Iterable[dict], *, metric: str = "byzfl",
                     fixed: Sequence[str] = PANEL_FIELDS,
                     select_on: str | None = None,
                     cells: Sequence[dict] | None = None) -> str:
    """Markdown: per panel, the worst-case accuracy of each rule (rows) and
    ``f`` (columns) with its worst attack, and the best rule per column
    (ByzFL's aggregated heatmap); then one row per cell with the chosen
    setting, the worst case's spread over seeds and every attack's
    accuracy; the code that made the runs.

    Example:
      >>> runs = [{"config": {"aggregator": "median", "attack": a,
      ...          "num_byzantine": 2}, "seed": 0, "metrics": {
      ...          "round": [50], "test_accuracy": [v]}}
      ...         for a, v in (("alie", 0.81), ("sign_flip", 0.62))]
      >>> print(worst_case_table(runs).splitlines()[4])
      | CWM | 0.6200 sign_flip |
    """
    runs = list(runs)
    if cells is None:
        cells = worst_case_cells(runs, metric=metric, fixed=fixed,
                                 select_on=select_on)
    lines = ["## Worst case over attacks (ByzFL's evaluation)", ""]
    for p in _layout(cells):
        if len(_layout(cells)) > 1 or p["label"] != "all runs":
            lines.append(f"### {p['label']}")
            lines.append("")
        lines.append("| rule | " + " | ".join(p["cols"]) + " |")
        lines.append("|---" * (len(p["cols"]) + 1) + "|")
        for r in p["rows"]:
            row = [r]
            for col in p["cols"]:
                c = p["grid"].get((r, col))
                row.append("" if c is None else
                           f"{c['worst']:.4f} {c['worst_attack']}")
            lines.append("| " + " | ".join(row) + " |")
        if len(p["rows"]) > 1:
            lines.append("| best rule | " + " | ".join(
                "" if b is None else f"{b[0]:.4f} {b[1]}" for b in _best_row(p))
                + " |")
        lines.append("")
    tuned = _tuned(cells)
    vary = _differing([c["panel"] for c in cells])
    attacks = _order({a for c in cells for a in c["attacks"]}, "attack")
    lines.append("| " + " | ".join(vary + ["rule", "f", "n"] + tuned + [
        "worst attack", "worst case", "per seed", "round", "settings"]
        + attacks) + " |")
    lines.append("|---" * (len(vary) + 8 + len(tuned) + len(attacks)) + "|")
    for c in cells:
        a = c["attacks"]
        lines.append("| " + " | ".join(
            [show_value(c["panel"][k]) for k in vary]
            + [_rule_name(c), show_value(c["num_byzantine"]),
               show_value(c["num_workers"])]
            + [show_value(c["setting"][k]) if k in c["setting"] else ""
               for k in tuned]
            + [c["worst_attack"], f"{c['worst']:.4f} +- {c['std']:.4f}",
               ", ".join(f"{p['value']:.3f}" for p in c["per_seed"]),
               "" if c["round"] is None else str(c["round"]),
               f"{c['settings']}" + (f" ({c['incomplete']} incomplete)"
                                     if c["incomplete"] else "")]
            + [f"{a[x]['value']:.4f}" if x in a else "" for x in attacks]) + " |")
    return "\n".join(lines + ["", definition_text(cells), ""] + code_lines(runs))


def worst_case_rows(cells: Sequence[dict]) -> list[dict[str, Any]]:
    """Tidy rows: one per (cell, setting, attack), with the panel's fields,
    the rule (its label, aggregator, pre-aggregator and its keywords), ``f``
    and ``n``, the setting's fields, the attack, ``value``
    (mean over seeds), ``std``, ``per_seed``, ``round``, ``chosen`` (the
    cell's chosen setting) and ``worst`` (the setting's worst attack)."""
    rows = []
    for c in cells:
        for cand in c["candidates"]:
            for a, v in cand["values"].items():
                row: dict[str, Any] = dict(c["panel"])
                row.update(rule=_rule_name(c), aggregator=c["aggregator"],
                           preaggregator=c["preaggregator"],
                           preaggregator_kwargs=show_value(
                               c.get("preaggregator_kwargs") or {}),
                           num_byzantine=c["num_byzantine"],
                           num_workers=c["num_workers"])
                row.update({k: show_value(x) if isinstance(x, (dict, list)) else x
                            for k, x in cand["setting"].items()})
                row.update(attack=a, value=v["value"], std=v["std"],
                           per_seed=";".join(f"{p['value']:.6g}"
                                             for p in v["per_seed"]),
                           seeds=";".join(f"{p['seed']}/{p['split_seed']}"
                                          for p in v["per_seed"]),
                           round=v["round"], metric=c["metric"],
                           selected_on=c["selected_on"],
                           chosen=cand["label"] == c["label"],
                           worst=a == cand["worst_attack"],
                           complete=cand["complete"])
                rows.append(row)
    return rows


def write_worst_case_csv(cells: Sequence[dict], path: str) -> str:
    """Writes :func:`worst_case_rows` to ``path`` (CSV); returns ``path``."""
    rows = worst_case_rows(cells)
    header = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return path


def plot_worst_case_heatmaps(cells: Sequence[dict], path: str, *, dpi: int = 110
                             ) -> None:
    """One heatmap per panel: rule (rows, the best rule last) x ``f``
    (columns), each cell its worst-case accuracy and worst attack (ByzFL's
    ``test_heatmap`` and ``aggregated_test_heatmap`` in one figure)."""
    plt = _pyplot()
    panels = _layout(cells)
    cmap = plt.get_cmap(CMAP).with_extremes(bad="#ececec")
    rows_max = max(len(p["rows"]) + (len(p["rows"]) > 1) for p in panels)
    width = 2.4 + sum(0.4 + 1.05 * len(p["cols"]) for p in panels) + 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(width, max(
        2.6, 1.7 + 0.5 * rows_max)), squeeze=False, layout="constrained")
    im = None
    for ax, p in zip(axes[0], panels):
        best = _best_row(p) if len(p["rows"]) > 1 else []
        names = p["rows"] + (["best rule"] if best else [])
        m = np.full((len(names), len(p["cols"])), np.nan)
        text = [["not run"] * len(p["cols"]) for _ in names]
        for i, r in enumerate(p["rows"]):
            for j, col in enumerate(p["cols"]):
                c = p["grid"].get((r, col))
                if c is not None:
                    m[i, j] = c["worst"]
                    text[i][j] = f"{c['worst']:.2f}\n{_wrap(c['worst_attack'], 12)}"
        for j, b in enumerate(best):
            if b is not None:
                m[-1, j] = b[0]
                text[-1][j] = f"{b[0]:.2f}\n{_wrap(b[1], 12)}"
        im = ax.imshow(np.ma.masked_invalid(m), vmin=0, vmax=1, cmap=cmap,
                       aspect="auto")
        for i in range(len(names)):
            for j in range(len(p["cols"])):
                color = (_text_color(cmap(m[i, j])) if np.isfinite(m[i, j])
                         else "#333333")
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7.5,
                        color=color)
        ax.set_xticks(range(len(p["cols"])), p["cols"], fontsize=9)
        ax.set_yticks(range(len(names)), names, fontsize=9)
        if best:
            ax.axhline(len(p["rows"]) - 0.5, color="white", lw=3)
        ax.set_xlabel("Byzantine workers", fontsize=9)
        ax.set_title(_wrap(p["label"], 30), fontsize=9)
        ax.tick_params(length=0)
        for s in ax.spines.values():
            s.set_visible(False)
    bar = fig.colorbar(im, ax=axes[0].tolist(), fraction=0.04, aspect=20)
    bar.set_label(_wrap("worst case over attacks, best setting", 24), fontsize=9)
    bar.ax.tick_params(labelsize=8)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def html_panels(cells: Sequence[dict]) -> list[dict[str, Any]]:
    """The view's panels as plain rows for the web page's template."""
    out = []
    for p in _layout(cells):
        rows = []
        for r in p["rows"]:
            cs = [p["grid"].get((r, col)) for col in p["cols"]]
            rows.append({"name": r, "cells": [
                None if c is None else {
                    "value": f"{c['worst']:.4f}", "attack": c["worst_attack"],
                    "setting": c["label"], "per_seed": ", ".join(
                        f"{q['value']:.3f}" for q in c["per_seed"]),
                    "attacks": ", ".join(f"{a} {v['value']:.4f}"
                                         for a, v in c["attacks"].items())}
                for c in cs]})
        best = _best_row(p) if len(p["rows"]) > 1 else []
        out.append({"label": p["label"], "cols": p["cols"], "rows": rows,
                    "best": [None if b is None else {"value": f"{b[0]:.4f}",
                                                     "rule": b[1]} for b in best]})
    return out


def write_worst_case(outdir: str, runs: Sequence[dict], *, metric: str = "byzfl",
                     fixed: Sequence[str] = PANEL_FIELDS,
                     select_on: str | None = None, figures: bool = True,
                     csv_file: bool = False) -> dict[str, str]:
    """Writes ``table_byzfl.md`` and, with ``figures``, ``byzfl_heatmaps.png``
    and, with ``csv_file``, ``byzfl.csv`` to ``outdir``; returns their paths
    (keys ``byzfl``, ``byzfl_heatmaps``, ``byzfl_csv``)."""
    cells = worst_case_cells(runs, metric=metric, fixed=fixed, select_on=select_on)
    paths = {"byzfl": os.path.join(outdir, "table_byzfl.md")}
    with open(paths["byzfl"], "w") as fh:
        fh.write(worst_case_table(runs, cells=cells) + "\n")
    if figures:
        paths["byzfl_heatmaps"] = os.path.join(outdir, "byzfl_heatmaps.png")
        plot_worst_case_heatmaps(cells, paths["byzfl_heatmaps"])
    if csv_file:
        paths["byzfl_csv"] = write_worst_case_csv(cells,
                                                  os.path.join(outdir, "byzfl.csv"))
    return paths
