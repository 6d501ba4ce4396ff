"""Estimated worst-case lambda of every registered rule, beside the stated bounds.

Runs :func:`byzjax.analysis.estimate_lambda` over a grid of (rule, n, f, d) and
appends one JSON line per cell to ``--out`` (cells already there are skipped,
so an interrupted run resumes), then prints the markdown table of
``docs/RESILIENCE.md``.

Usage:
  python scripts/resilience_table.py --n 7 15 31 51 --d 10 1000 \
      --out results/resilience.jsonl
  python scripts/resilience_table.py --out results/resilience.jsonl --table-only
"""

from __future__ import annotations

import argparse
import os
import time

from _cells import append_cell, compile_fast_unless, read_cells

# Level 0 of XLA's backend optimisation (--xla-optimize: XLA's default).
compile_fast_unless("--xla-optimize")

import jax  # noqa: E402

from byzjax import aggregators, analysis  # noqa: E402


def f_values(entry, n):
    """f at about n/5, n/3 and the largest f the rule accepts, deduplicated."""
    limit = max(f for f in range(n) if entry.min_workers(f) <= n and 2 * f < n)
    out = sorted({max(1, round(n / 5)), max(1, round(n / 3)), limit})
    return [f for f in out if f <= limit and f >= 1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[7, 15])
    p.add_argument("--d", type=int, nargs="+", default=[10])
    p.add_argument("--rules", nargs="+", default=None)
    p.add_argument("--restarts", type=int, default=40)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--radius", type=float, default=10.0)
    p.add_argument("--out", default="results/resilience.jsonl")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--xla-optimize", action="store_true",
                   help="XLA's default backend optimisation (slower compilation)")
    args = p.parse_args()

    done = read_cells(args.out, lambda r: (r["rule"], r["n"], r["f"], r["d"]))
    if not args.table_only:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        # (random rules, and rules whose answer depends on the server's own
        # update, FLTrust, have no worst case over the workers' rows alone)
        rules = args.rules or [r for r in aggregators.names()
                               if not aggregators.entry(r).needs_key
                               and not aggregators.entry(r).needs_reference]
        for d in args.d:
            for n in args.n:
                for rule in rules:
                    entry = aggregators.entry(rule)
                    if entry.min_workers(1) > n:
                        continue
                    for f in f_values(entry, n):
                        if (rule, n, f, d) in done:
                            continue
                        start = time.perf_counter()
                        est = analysis.estimate_lambda(
                            rule, num_workers=n, num_byzantine=f, dim=d,
                            key=jax.random.key(0), num_restarts=args.restarts,
                            num_steps=args.steps, byzantine_radius=args.radius)
                        value = float(est.value)
                        row = dict(rule=rule, n=n, f=f, d=d, estimate=value,
                                   bound=analysis.stated_bound(
                                       rule, num_workers=n, num_byzantine=f, dim=d),
                                   lower=analysis.lower_bound(num_workers=n,
                                                              num_byzantine=f),
                                   seconds=round(time.perf_counter() - start, 1),
                                   restarts=args.restarts, steps=args.steps,
                                   radius=args.radius,
                                   xla_optimize=args.xla_optimize)
                        append_cell(args.out, row)
                        done[(rule, n, f, d)] = row
                        print(f"{rule} n={n} f={f} d={d}: {value:.4f} "
                              f"(bound {row['bound']}, {row['seconds']} s)", flush=True)
    print("| rule | n | f | d | estimated lambda | stated bound | f/(n-f) | "
          "exceeds bound | restarts x steps | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    def star(r):  # compiled at XLA's backend optimisation level 0
        return "*" if r.get("xla_optimize") is False else ""

    for key in sorted(done, key=lambda k: (k[0], k[3], k[1], k[2])):
        r = done[key]
        bound = "-" if r["bound"] is None else f"{r['bound']:.3f}"
        over = "-" if r["bound"] is None else (
            "**yes**" if r["estimate"] > r["bound"] + 1e-5 else "no")
        print(f"| {r['rule']} | {r['n']} | {r['f']} | {r['d']} | {r['estimate']:.3f} | "
              f"{bound} | {r['lower']:.3f} | {over} | "
              f"{r['restarts']} x {r['steps']} | {r['seconds']}{star(r)} |")


if __name__ == "__main__":
    main()
