"""Markdown tables: the best aggregator per (optimizer x attack) cell, in the
layout of Fabris (2023, MSc thesis, Chalmers), and every cell with its seeds.

Under each table: which code made its runs (:func:`byzjax.report.code_lines`)
and, where a cell holds several configurations, a note saying which fields
differ (never an average of them).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from byzjax.report._cells import (
    AXES,
    SHORT,
    _key,
    _order,
    _sorted_keys,
    cell_stats,
    code_lines,
    code_versions,
    code_warning,
    labelled,
    per_seed_text,
    split_configs,
)

#: Fields that may differ between the aggregators compared in one
#: best-aggregator cell (each rule has its own keywords).
AGGREGATOR_FIELDS = ("aggregator", "aggregator_kwargs")


def best_cells(runs: Iterable[dict], *, metric: str = "final_accuracy",
               stats: dict | None = None) -> dict[tuple, dict[str, Any]]:
    """The best aggregator of every (optimizer, attack) cell.

    The aggregators of a cell are compared only when their runs share one
    configuration besides the rule (:data:`AGGREGATOR_FIELDS`) and each
    rule's runs one configuration; otherwise the cell is a conflict and no
    best is chosen.

    Returns:
      ``{(optimizer, attack): {"conflict": bool, "differs": [fields],
      "configs": number of configurations, "aggregator", "mean",
      "per_seed", "count"}}`` (``aggregator`` / ``mean`` / ``per_seed`` None
      for a conflict).

    Example:
      >>> runs = [{"config": {"optimizer": "dsgd", "attack": "alie",
      ...          "aggregator": g, "learning_rate": lr}, "final_accuracy": a}
      ...         for g, lr, a in (("mean", 0.5, 0.2), ("krum", 0.5, 0.6))]
      >>> c = best_cells(runs)[("dsgd", "alie")]
      >>> c["conflict"], c["aggregator"], round(c["mean"], 2)
      (False, 'krum', 0.6)
      >>> runs[0]["config"]["learning_rate"] = 0.02
      >>> c = best_cells(runs)[("dsgd", "alie")]
      >>> c["conflict"], c["differs"], c["aggregator"]
      (True, ['learning_rate'], None)
    """
    runs = list(runs)
    stats = cell_stats(runs, metric=metric) if stats is None else stats
    by: dict[tuple, list] = defaultdict(list)
    for r in runs:
        by[_key(r, AXES[:2])].append(r)
    out = {}
    for (o, a), rs in by.items():
        cands = {k[2]: v for k, v in stats.items() if k[:2] == (o, a)}
        groups = split_configs(rs, ignore=AGGREGATOR_FIELDS)
        differs = set(groups[0].differs) if len(groups) > 1 else set()
        for v in cands.values():
            differs |= set(v["differs"])
        n_configs = max(len(groups), max(len(v["configs"]) for v in cands.values()))
        cell = {"conflict": n_configs > 1, "differs": sorted(differs),
                "configs": n_configs, "aggregator": None, "mean": None,
                "per_seed": None, "count": len(rs)}
        if not cell["conflict"]:
            mean, agg = max(((v["mean"], g) for g, v in cands.items()),
                            key=lambda c: (c[0], str(c[1])))
            cell.update(aggregator=agg, mean=mean, per_seed=cands[agg]["per_seed"],
                        count=cands[agg]["count"])
        out[(o, a)] = cell
    return out


def conflict_note(where: str, cell: dict) -> str:
    """The note under a table for a cell holding several configurations."""
    return (f"{where}: {cell['configs']} configurations (they differ in "
            f"{', '.join(cell['differs'])}); not averaged, no best chosen: see "
            "the full table")


def best_table(runs, *, metric="final_accuracy") -> str:
    """Markdown: best aggregator per optimizer x attack cell, its mean over
    seeds and each seed's value (``0.7755 CWTM (0.952, 0.599)``).

    A cell whose runs hold several configurations (besides the rule) shows
    ``conflict [k]`` and note ``k`` under the table names the fields that
    differ; then the code that made the runs (and a warning when it mixes
    versions or is unknown).

    Example:
      >>> runs = [{"config": {"optimizer": "dsgd", "attack": "alie",
      ...          "aggregator": "trimmed_mean"}, "seed": s, "final_accuracy": a}
      ...         for s, a in ((0, 0.9516), (1, 0.5994))]
      >>> print(best_table(runs).splitlines()[2])
      | dsgd | 0.7755 CWTM (0.952, 0.599) |
    """
    runs = list(runs)
    cells = best_cells(runs, metric=metric)
    opts = _order({k[0] for k in cells}, "optimizer")
    atts = _order({k[1] for k in cells}, "attack")
    lines = ["| | " + " | ".join(atts) + " |", "|---" * (len(atts) + 1) + "|"]
    notes = []
    for o in opts:
        row = [o]
        for a in atts:
            c = cells.get((o, a))
            if c is None:
                row.append("")
            elif c["conflict"]:
                notes.append(conflict_note(f"{o} / {a}", c))
                row.append(f"conflict [{len(notes)}]")
            else:
                agg = c["aggregator"]
                seeds = per_seed_text(c["per_seed"])
                row.append(f"{c['mean']:.4f} {SHORT.get(agg, agg)}"
                           + (f" ({seeds})" if c["count"] > 1 else ""))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines + _notes(notes) + [""] + code_lines(runs))


def _notes(notes: list[str]) -> list[str]:
    return [""] + [f"[{i}] {n}" for i, n in enumerate(notes, 1)] if notes else []


def full_table(runs, *, metric="final_accuracy") -> str:
    """Markdown: every cell, mean +- std over seeds, each seed's value (in the
    order of the seeds column) and divergences; a cell holding several
    configurations is one row per configuration, the aggregator followed by
    the fields that differ (``CWTM (learning_rate=0.02)``).

    Example:
      >>> runs = [{"config": {"optimizer": "dsgd", "attack": "alie",
      ...          "aggregator": "trimmed_mean", "learning_rate": lr},
      ...          "seed": 0, "final_accuracy": a}
      ...         for lr, a in ((0.5, 0.9), (0.02, 0.3))]
      >>> for line in full_table(runs).splitlines()[2:4]:
      ...     print(line)
      | dsgd | alie | CWTM (learning_rate=0.02) | 0.3000 +- 0.0000 | 0.300 | 0 | 0 |
      | dsgd | alie | CWTM (learning_rate=0.5) | 0.9000 +- 0.0000 | 0.900 | 0 | 0 |
    """
    runs = list(runs)
    stats = cell_stats(runs, metric=metric)
    lines = ["| optimizer | attack | aggregator | " + metric
             + " | per seed | seeds | diverged |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    for k in _sorted_keys(stats):
        for c in stats[k]["configs"]:
            agg = labelled(SHORT.get(k[2], k[2]), c["label"])
            seeds = ", ".join(str(p["seed"]) for p in c["per_seed"])
            lines.append(f"| {k[0]} | {k[1]} | {agg} | "
                         f"{c['mean']:.4f} +- {c['std']:.4f} | "
                         f"{per_seed_text(c['per_seed'])} | {seeds} | "
                         f"{c['diverged']} |")
            versions = code_versions(c["runs"])
            if len(versions) > 1:
                notes.append(f"{k[0]} / {k[1]} / {agg}: "
                             + code_warning(versions))
    return "\n".join(lines + _notes(notes) + node_spread_lines(runs) + [""]
                     + code_lines(runs))


def node_spread_lines(runs) -> list[str]:
    """Peer-to-peer runs: each configuration's honest nodes at the end.

    One markdown table (after a blank line) of the final test accuracy of the
    worst, average and best honest node and the final consensus distance,
    each a mean over seeds; empty when no record has per-node metrics
    (``docs/PEER_TO_PEER.md``).

    Example:
      >>> runs = [{"config": {"optimizer": "resam", "attack": "alie",
      ...          "aggregator": "monna", "topology": "ring"}, "seed": s,
      ...          "metrics": {"test_accuracy": [0.8], "test_accuracy_min": [0.7],
      ...                      "test_accuracy_max": [0.9],
      ...                      "consensus_distance": [0.1]}} for s in (0, 1)]
      >>> print(node_spread_lines(runs)[-1])
      | resam | alie | MONNA (ring) | 0.7000 | 0.8000 | 0.9000 | 0.1 | 2 |
    """
    runs = [r for r in runs
            if (r.get("metrics") or {}).get("test_accuracy_min")]
    if not runs:
        return []
    stats = cell_stats(runs)
    lines = ["", "Peer-to-peer: honest nodes' final test accuracy (worst, mean, "
             "best node) and consensus distance, means over seeds", "",
             "| optimizer | attack | aggregator | worst node | mean | best node "
             "| consensus distance | seeds |", "|---|---|---|---|---|---|---|---|"]

    def last(c, name):
        vals = [float((r.get("metrics") or {}).get(name, [float("nan")])[-1])
                for r in c["runs"]]
        return sum(vals) / len(vals)

    for k in _sorted_keys(stats):
        for c in stats[k]["configs"]:
            topo = c["runs"][0]["config"].get("topology", "")
            agg = SHORT.get(k[2], k[2]) + (f" ({topo})" if topo else "")
            agg = labelled(agg, c["label"])
            lines.append(
                f"| {k[0]} | {k[1]} | {agg} | "
                f"{last(c, 'test_accuracy_min'):.4f} | "
                f"{last(c, 'test_accuracy'):.4f} | "
                f"{last(c, 'test_accuracy_max'):.4f} | "
                f"{last(c, 'consensus_distance'):.3g} | {len(c['runs'])} |")
    return lines
