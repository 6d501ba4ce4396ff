"""Deviation and cosine of every rule's output under ALIE, FOE, their adaptive
versions and the optimised attack, on the same inputs; and the attacks' cost.

For every deterministic registered rule, n in {15, 51} and f at about n/3 and
n/4 (where the rule accepts it), the honest rows are ``h = n - f`` draws
``x_i = mu + xi_i``, ``xi_i ~ N(0, I_d)``, ``mu`` the constant vector with
``||mu||^2 = d / ratio`` (``ratio``, the honest variance-to-norm ratio,
``--ratio``), and the Byzantine rows are each attack's, computed from those
honest rows (the adaptive and optimised attacks know the rule and f). For each
attack it records, averaged over ``--draws`` draws,

* ``dev``: ``||F(x) - mean_H|| / max_{i,j in H} ||x_i - x_j||`` (the
  empirical lambda of (f, lambda)-resilience);
* ``cos``: the cosine between ``F(x)`` and ``mean_H``.

Appends one JSON line per (rule, n, f) to ``--out`` (resumable), then prints
the markdown tables of ``docs/ATTACKS.md``. ``--cost`` instead times one call
of each attack (the per-round cost in the simulator) at the MLP's size.

``--accuracy DIR`` prints the training table of ``docs/ATTACKS.md`` from the
records of ``experiments/attacks_accuracy.py``; ``--catalogue DIR`` the one of
``experiments/catalogue_mnist.py`` (the 2021-2025 defences and attacks).

Usage:
  python scripts/attack_table.py --out results/attack_table.jsonl
  python scripts/attack_table.py --attacks recent --out results/recent.jsonl
  python scripts/attack_table.py --cost --rules trimmed_mean krum mda
  python scripts/attack_table.py --accuracy results/attacks_accuracy
"""

from __future__ import annotations

import argparse
import time

from _cells import append_cell, compile_fast_unless, read_cells

# Compiling a cell's program (the rule's sorting network unrolled, in several
# copies, and differentiated by the optimised attack) dominates a cell.
compile_fast_unless("--xla-optimize")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from byzjax import aggregators, attacks  # noqa: E402

#: ``--attacks classic`` (the default) and ``--attacks recent``: Min-Max and
#: Min-Sum (Shejwalkar and Houmansadr, NDSS 2021), IPM (Xie, Koyejo, Gupta,
#: 2020; ByzFL's tau = 2), ROP (Ozfatura et al., 2024; one round: the server's
#: previous aggregate is zero, as in its first round), beside ALIE.
ATTACK_SETS = {
    "classic": ("alie", "foe", "adaptive_alie", "adaptive_foe", "optimized"),
    "recent": ("alie", "min_max", "min_sum", "ipm", "rop"),
}
ATTACKS = ATTACK_SETS["classic"]
#: The rules of the training runs of docs/ATTACKS.md first.
FIRST = ("trimmed_mean", "coordinate_median", "krum", "mda", "centered_clipping")
LABELS = {"alie": "ALIE", "foe": "FOE", "adaptive_alie": "adapt. ALIE",
          "adaptive_foe": "adapt. FOE", "optimized": "optimised (z = 3)",
          "optimized_free": "optimised (free)", "min_max": "Min-Max",
          "min_sum": "Min-Sum", "ipm": "IPM (tau = 2)", "rop": "ROP"}


def byzantine_rows(name, honest, f, rule):
    if name == "alie":
        return attacks.a_little_is_enough(honest, num_byzantine=f)
    if name == "foe":
        return attacks.fall_of_empires(honest, num_byzantine=f)
    if name in ("adaptive_alie", "adaptive_foe"):
        return attacks.get(name)(honest, num_byzantine=f, aggregator=rule)
    if name == "optimized":
        return attacks.optimized(honest, num_byzantine=f, aggregator=rule)
    if name == "optimized_free":
        return attacks.optimized(honest, num_byzantine=f, aggregator=rule,
                                 constraint=None)
    if name in ("min_max", "min_sum", "ipm", "rop"):
        return attacks.get(name)(honest, num_byzantine=f)
    raise ValueError(name)


def make_cell(rule, n, f, dim):
    fn = aggregators.get(rule)

    def one(honest):
        tree = {"x": honest}
        hbar = honest.mean(0)
        d2 = jnp.sum((honest[:, None] - honest[None]) ** 2, -1)
        spread = jnp.sqrt(jnp.max(d2))
        out = {}
        for name in ATTACKS:
            rows = byzantine_rows(name, tree, f, rule)
            stack = jnp.concatenate([honest, rows["x"]])
            agg = fn({"x": stack}, num_byzantine=f)["x"]
            dev = jnp.linalg.norm(agg - hbar) / spread
            cos = agg @ hbar / (jnp.linalg.norm(agg) * jnp.linalg.norm(hbar))
            out[name] = (dev, cos)
        return out

    return jax.jit(jax.vmap(one))


def f_values(rule, n):
    entry = aggregators.entry(rule)
    return [f for f in sorted({round(n / 3), round(n / 4)})
            if entry.min_workers(f) <= n]


def run_table(args):
    done = set(read_cells(args.out, lambda r: (r["rule"], r["n"], r["f"])))
    rules = args.rules or list(FIRST) + [
        r for r in aggregators.names()
        if not aggregators.entry(r).needs_key
        and not aggregators.entry(r).needs_reference and r not in FIRST]
    for n in args.n:
        for rule in rules:
            for f in f_values(rule, n):
                if (rule, n, f) in done:
                    continue
                h = n - f
                mu = np.full(args.dim, 1.0 / np.sqrt(args.ratio), np.float32)
                rng = np.random.default_rng([n, f])  # same inputs for every rule
                honest = mu + rng.normal(size=(args.draws, h, args.dim)).astype(
                    np.float32)
                start = time.perf_counter()
                res = jax.device_get(make_cell(rule, n, f, args.dim)(
                    jnp.asarray(honest)))
                row = dict(rule=rule, n=n, f=f, dim=args.dim, ratio=args.ratio,
                           draws=args.draws,
                           seconds=round(time.perf_counter() - start, 1))
                for name, (dev, cos) in res.items():
                    row[name] = dict(dev=float(np.mean(dev)), cos=float(np.mean(cos)))
                append_cell(args.out, row)
                print(f"{rule} n={n} f={f}: " + ", ".join(
                    f"{k} {v['dev']:.2f}/{v['cos']:.2f}" for k, v in row.items()
                    if isinstance(v, dict)) + f" ({row['seconds']} s)", flush=True)
    print_table(args.out)


def print_table(path):
    rows = list(read_cells(path, lambda r: (r["rule"], r["n"], r["f"])).values())
    head = " | ".join(f"{LABELS[a]} dev / cos" for a in ATTACKS)
    print(f"| rule | n | f | {head} |")
    print("|---|---|---|" + "---|" * len(ATTACKS))
    for r in sorted(rows, key=lambda r: (r["rule"], r["n"], r["f"])):
        best = max(r[a]["dev"] for a in ATTACKS)
        cells = []
        for a in ATTACKS:
            dev = f"{r[a]['dev']:.2f}"
            if r[a]["dev"] >= best - 1e-6:
                dev = f"**{dev}**"
            cells.append(f"{dev} / {r[a]['cos']:.2f}")
        print(f"| {r['rule']} | {r['n']} | {r['f']} | " + " | ".join(cells) + " |")


def run_cost(args):
    """Milliseconds per call (median of --reps after a warm-up) at n = 15, f = 5."""
    n, f, dim = 15, 5, args.cost_dim
    h = n - f
    honest = {"x": jnp.asarray(np.random.default_rng(0).normal(
        size=(h, dim)).astype(np.float32))}
    print(f"| rule | rule alone | {' | '.join(LABELS[a] for a in ATTACKS)} |")
    print("|---|---|" + "---|" * len(ATTACKS))
    for rule in args.rules or ("trimmed_mean", "krum", "mda"):
        fn = aggregators.get(rule)
        stack = {"x": jnp.concatenate([honest["x"], honest["x"][:f]])}
        calls = {"rule": jax.jit(lambda s, fn=fn: fn(s, num_byzantine=f))}
        for name in ATTACKS:
            calls[name] = jax.jit(lambda hh, name=name, rule=rule: byzantine_rows(
                name, hh, f, rule))
        times = {}
        for name, call in calls.items():
            arg = stack if name == "rule" else honest
            jax.block_until_ready(call(arg))
            ts = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                jax.block_until_ready(call(arg))
                ts.append(time.perf_counter() - t0)
            times[name] = 1e3 * float(np.median(ts))
        base = times["rule"]
        print(f"| {rule} | {base:.1f} ms | " + " | ".join(
            f"{times[a]:.1f} ms ({times[a] / base:.0f}x)" for a in ATTACKS) + " |",
            flush=True)


def _last(values):
    finite = [v for v in values or [] if v is not None and np.isfinite(v)]
    return finite[-1] if finite else None


def print_accuracy(outdir):
    """Final accuracy (mean over seeds) per rule x attack x momentum, with the
    last chunk's Byzantine weight (selection rules) and variance-to-norm ratio."""
    from byzjax import report

    cells = {}
    for r in report.load_runs(outdir):
        c = r["config"]
        beta = r["hparams"].get("beta", c["beta"])
        key = (c["aggregator"], c["attack"], beta)
        cells.setdefault(key, []).append(r)
    attacks_order = ["none", "alie", "foe", "adaptive_alie", "adaptive_foe",
                     "optimized"]
    rules = [r for r in FIRST if any(k[0] == r for k in cells)]
    betas = sorted({k[2] for k in cells})
    print("| rule | attack | " + " | ".join(
        f"acc. beta={b:g} | Byz. weight | var/norm^2" for b in betas) + " |")
    print("|---|---|" + "---|---|---|" * len(betas))
    for rule in rules:
        for att in attacks_order:
            if not any((rule, att, b) in cells for b in betas):
                continue
            row = []
            for b in betas:
                rs = cells.get((rule, att, b), [])
                if not rs:
                    row += ["not run", "", ""]
                    continue
                acc = [r["final_accuracy"] or 0.0 for r in rs]
                row.append(f"{np.mean(acc):.3f} ({', '.join(f'{a:.3f}' for a in acc)})")
                w = [_last(r["metrics"].get("byz_weight")) for r in rs]
                w = [v for v in w if v is not None]
                row.append(f"{np.mean(w):.2f}" if w else "-")
                v = [_last(r["metrics"].get("var_norm_ratio")) for r in rs]
                v = [x for x in v if x is not None]
                row.append(f"{np.mean(v):.1f}" if v else "-")
            print(f"| {rule} | {att} | " + " | ".join(row) + " |")


def print_catalogue(outdir):
    """Final accuracy (mean and each seed) per defence x attack from the records
    of ``experiments/catalogue_mnist.py``; ``-`` where the pair is not run."""
    from byzjax import report

    cells = {}
    for r in report.load_runs(outdir):
        c = r["config"]
        rule = c["aggregator"] if not c.get("preaggregator") else (
            f"{c['preaggregator']} + {c['aggregator']}")
        cells.setdefault((rule, c["attack"]), []).append(r)
    attack_order = ["alie", "min_max", "min_sum", "ipm", "rop"]
    rule_order = ["monna", "smea", "caf", "dnc", "signguard", "clipped_clustering",
                  "fltrust", "arc + trimmed_mean", "trimmed_mean", "krum",
                  "coordinate_median", "mda", "centered_clipping"]
    rules = [r for r in rule_order if any(k[0] == r for k in cells)]
    names = {"alie": "ALIE", "min_max": "Min-Max", "min_sum": "Min-Sum",
             "ipm": "IPM", "rop": "ROP"}
    print("| defence | " + " | ".join(names[a] for a in attack_order) + " |")
    print("|---|" + "---|" * len(attack_order))
    for rule in rules:
        row = []
        for att in attack_order:
            rs = sorted(cells.get((rule, att), []), key=lambda r: r["seed"])
            if not rs:
                row.append("-")
                continue
            acc = [r["final_accuracy"] or 0.0 for r in rs]
            row.append(f"{np.mean(acc):.3f} ({', '.join(f'{a:.3f}' for a in acc)})")
        print(f"| {rule} | " + " | ".join(row) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[15, 51])
    p.add_argument("--rules", nargs="+", default=None)
    p.add_argument("--dim", type=int, default=1000)
    p.add_argument("--ratio", type=float, default=4.0,
                   help="honest variance-to-norm ratio d / ||mu||^2")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--out", default="results/attack_table.jsonl")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--cost", action="store_true")
    p.add_argument("--cost-dim", type=int, default=79510)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--accuracy", metavar="DIR", default=None)
    p.add_argument("--catalogue", metavar="DIR", default=None,
                   help="print the training table of experiments/catalogue_mnist.py")
    p.add_argument("--attacks", choices=sorted(ATTACK_SETS), default="classic",
                   help="which attacks: classic (ALIE, FOE, adaptive, optimised) "
                        "or recent (ALIE, Min-Max, Min-Sum, IPM, ROP)")
    p.add_argument("--xla-optimize", action="store_true",
                   help="XLA's default backend optimisation (slower compilation)")
    args = p.parse_args()
    global ATTACKS
    ATTACKS = ATTACK_SETS[args.attacks]
    if args.catalogue:
        print_catalogue(args.catalogue)
    elif args.accuracy:
        print_accuracy(args.accuracy)
    elif args.cost:
        run_cost(args)
    elif args.table_only:
        print_table(args.out)
    else:
        run_table(args)


if __name__ == "__main__":
    main()
