"""ByzFL's runs of a benchmark config beside byzjax's runs of the same config
(a benchmark script, not part of the package).

Usage::

    python scripts/byzfl_side_by_side.py CONFIG.json --workdir W --json byzfl.json
    byzjax sweep --byzfl CONFIG.json --outdir RESULTS
    python scripts/byzfl_compare.py byzfl.json RESULTS [--markdown out.md]

For every ByzFL cell (aggregator, attack, f, distribution and its parameter),
the byzjax runs of the same cell, found through the importer's name maps
(``byzjax.byzfl.BYZFL_AGGREGATORS``, ``BYZFL_ATTACKS``,
``BYZFL_DISTRIBUTIONS``), and one row: ByzFL's accuracy (the largest value
of the seed-mean test curve, ByzFL's ``evaluate_results.py``) with its seeds'
values and spread, byzjax's accuracy by the same definition with its seeds'
values, the difference, and whether it is within ByzFL's seed spread
(max - min over its seeds) or 2 points. The timing lines come from the ByzFL
JSON (``end_to_end_s``) and from byzjax's records (the sweep's wall time is
not in them: pass ``--byzjax-seconds`` measured around ``byzjax sweep``).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from byzjax import byzfl, report


def _byzjax_accuracy(runs: list[dict]) -> tuple[float, list[float]]:
    curves = np.asarray([r["metrics"]["test_accuracy"] for r in runs], float)
    return float(np.nanmax(np.nanmean(curves, 0))), [float(c[-1]) for c in curves]


def _preaggregators(config: dict) -> list[str]:
    """The pre-aggregators a byzjax run applied, in order (a chain's steps)."""
    pre = config.get("preaggregator") or ""
    if pre == "chain":
        return [step[0] for step in config["preaggregator_kwargs"]["steps"]]
    return [pre] if pre else []


def rows(byzfl_cells: list[dict], runs: list[dict]) -> list[dict]:
    """One comparison row per ByzFL cell that has byzjax runs."""
    out = []
    for c in byzfl_cells:
        pres = [byzfl.BYZFL_PRE_AGGREGATORS[p][0] for p in c.get("pre_aggregators", [])]
        agg = byzfl.BYZFL_AGGREGATORS[c["aggregator"]][0]
        att = byzfl.BYZFL_ATTACKS[c["attack"]][0]
        split, param_field = byzfl.BYZFL_DISTRIBUTIONS[c["distribution"]]
        mine = [r for r in runs
                if r["config"]["aggregator"] == agg and r["config"]["attack"] == att
                and r["config"]["split"] == split
                and _preaggregators(r["config"]) == pres
                and r["config"]["num_attackers" if r["config"]["num_attackers"] >= 0
                                else "num_byzantine"] == c["f"]
                and (param_field is None
                     or abs(float(r["config"][param_field])
                            - float(c["distribution_parameter"])) < 1e-9)]
        if not mine:
            continue
        acc, seeds = _byzjax_accuracy(mine)
        spread = max(c["per_seed"]) - min(c["per_seed"])
        diff = acc - c["byzfl_accuracy"]
        out.append({"aggregator": "+".join(list(c.get("pre_aggregators", []))
                                           + [c["aggregator"]]),
                    "attack": c["attack"], "f": c["f"],
                    "distribution":
                        f"{c['distribution']} {c['distribution_parameter']}",
                    "byzfl": c["byzfl_accuracy"], "byzfl_seeds": c["per_seed"],
                    "byzjax": acc, "byzjax_seeds": seeds, "difference": diff,
                    "within": abs(diff) <= max(spread, 0.02)})
    return out


def markdown(table: list[dict]) -> str:
    lines = ["| aggregator | attack | f | distribution | ByzFL (seeds) | byzjax "
             "(seeds) | byzjax - ByzFL | within ByzFL's spread or 2 points |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        bs = ", ".join(f"{v:.3f}" for v in r["byzfl_seeds"])
        js = ", ".join(f"{v:.3f}" for v in r["byzjax_seeds"])
        lines.append(f"| {r['aggregator']} | {r['attack']} | {r['f']} | "
                     f"{r['distribution']} | {r['byzfl']:.4f} ({bs}) | "
                     f"{r['byzjax']:.4f} ({js}) | {100 * r['difference']:+.1f} | "
                     f"{'yes' if r['within'] else 'no'} |")
    n = sum(r["within"] for r in table)
    lines.append(f"\n{n} of {len(table)} cells within ByzFL's seed spread or 2 points.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("byzfl_json", help="the --json of scripts/byzfl_side_by_side.py")
    p.add_argument("results", help="byzjax's results folder of the same config")
    p.add_argument("--byzjax-seconds", type=float, default=None,
                   help="byzjax's end-to-end wall time, measured around its sweep")
    p.add_argument("--markdown", default=None, help="also write the table here")
    args = p.parse_args(argv)
    with open(args.byzfl_json) as fh:
        data = json.load(fh)
    table = rows(data["cells"], report.load_runs(args.results))
    text = markdown(table)
    timing = data.get("timing") or {}
    if timing.get("end_to_end_s") and args.byzjax_seconds:
        text += (f"\n\nEnd to end: ByzFL {timing['end_to_end_s']:.0f} s, byzjax "
                 f"{args.byzjax_seconds:.0f} s: "
                 f"{timing['end_to_end_s'] / args.byzjax_seconds:.1f}x.")
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
