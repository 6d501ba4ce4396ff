"""byzjax benchmarks: markdown tables of ratios, every figure measured in this run.

Usage::

    python scripts/bench.py                # everything (several minutes on 2 cores)
    python scripts/bench.py --quick        # smaller grid, fewer repetitions
    python scripts/bench.py --sections 1,4 # pick sections

Sections:
  1. every aggregator and pre-aggregator on n in {15, 31, 51} (f = 5, 10, 16)
     x d in {79,510; 1,310,922} float32: time and ratio to the memory-read floor
     of the (n, d) stack (fastest single read measured here, alternating with
     the rule);
  2. the same cells for ByzFL (optional ``pip install 'byzjax[bench]'``):
     byzjax / ByzFL ratio;
  3. a full simulated round (MLP 79,510, n = 15, b = 25, worker momentum) per
     aggregator, the share spent aggregating, and (with torch + byzfl) a
     per-worker PyTorch loop with ByzFL's aggregator;
  4. S in {1, 4, 16} seeds vmapped in one program vs S separate runs;
  5. first-call compile time of a round.

Timings: ``jax.block_until_ready``, medians of repetitions after warm-up,
rule and reference alternated. Timing on shared 2-core machines is noisy:
compare ratios from one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from byzjax import aggregators  # noqa: E402

GRID = ((15, 5), (31, 10), (51, 16))
DIMS = (79_510, 1_310_922)


def _block(x):
    return jax.block_until_ready(x)


def time_alternating(fns, reps: int, warmup: int = 2):
    """Median seconds of each zero-argument callable, calls alternated."""
    for f in fns:
        for _ in range(warmup):
            _block(f())
    times = [[] for _ in fns]
    for _ in range(reps):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            _block(f())
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def _stack(n, f, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    mu, sd = x[: n - f].mean(0), x[: n - f].std(0)
    x[n - f:] = mu - 1.5 * sd  # ALIE rows
    return jnp.asarray(x)


def floor_fns(x):
    """Candidate single reads of the stack; the fastest is the floor."""
    ones = jnp.ones((x.shape[0],), x.dtype)
    reads = [jax.jit(lambda x: jnp.sum(x)), jax.jit(lambda x: ones @ x),
             jax.jit(lambda x: jnp.max(x))]
    return [lambda r=r: r(x) for r in reads]


def rule_fns(n, f):
    """(name, jitted fn of the stack) for every registered rule that accepts (n, f)."""
    out = []
    for name in aggregators.names():
        entry = aggregators.entry(name)
        if n < entry.min_workers(f):
            continue
        kw = {"num_byzantine": f}
        if entry.needs_key:
            kw["key"] = jax.random.key(0)
        out.append((name, jax.jit(lambda x, fn=entry.fn, kw=kw: fn({"w": x}, **kw))))
    for name in aggregators.preaggregator_names():
        entry = aggregators.PREAGGREGATORS.entry(name)
        if n < entry.min_workers(f):
            continue
        kw = {"num_byzantine": f}
        if entry.needs_key:
            kw["key"] = jax.random.key(0)
        if name == "bucketing":
            kw["bucket_size"] = 2
        if name == "static_clipping":
            kw["max_norm"] = 1.0
        out.append(("pre:" + name,
                    jax.jit(lambda x, fn=entry.fn, kw=kw: fn({"w": x}, **kw))))
    return out


def section1(args, results):
    print("\n## 1. Aggregators vs the memory-read floor (ms; ratio = time / floor)\n")
    for d in args.dims:
        print(f"\n### d = {d:,}\n")
        header = "| rule | " + " | ".join(f"n={n} f={f}" for n, f in args.grid) + " |"
        print(header)
        print("|---" * (len(args.grid) + 1) + "|")
        rows = {}
        floors = {}
        for n, f in args.grid:
            x = _stack(n, f, d)
            fl = min(time_alternating(floor_fns(x), args.reps))
            floors[(n, f)] = fl
            for name, fn in rule_fns(n, f):
                t_rule, _ = time_alternating(
                    [lambda fn=fn, x=x: fn(x), floor_fns(x)[1]], args.reps)
                rows.setdefault(name, {})[(n, f)] = (t_rule, t_rule / fl)
                results[("s1", name, n, f, d)] = (t_rule, fl)
        print("| *floor (ms)* | " + " | ".join(f"{floors[c] * 1e3:.2f}"
                                               for c in args.grid) + " |")
        for name in sorted(rows):
            cells = []
            for c in args.grid:
                if c in rows[name]:
                    t, r = rows[name][c]
                    cells.append(f"{t * 1e3:.2f} ({r:.1f}x)")
                else:
                    cells.append("n/a")
            print(f"| {name} | " + " | ".join(cells) + " |")
        sys.stdout.flush()


BYZFL = {
    "trimmed_mean": ("TrMean", {"f": None}),
    "coordinate_median": ("Median", {}),
    "meamed": ("Meamed", {"f": None}),
    "krum": ("Krum", {"f": None}),
    "multi_krum": ("MultiKrum", {"f": None}),
    "geometric_median": ("GeometricMedian", {}),
    "centered_clipping": ("CenteredClipping", {}),
    "mda": ("MDA", {"f": None}),
    "pre:nnm": ("NNM", {"f": None}),
    "pre:static_clipping": ("Clipping", {}),
    "mean": ("Average", {}),
}


def section2(args, results):
    try:
        import byzfl  # noqa: F401
        import torch
    except Exception as e:  # pragma: no cover - optional
        print(f"\n## 2. ByzFL comparison: skipped ({type(e).__name__}: {e}). "
              "Install with: pip install 'byzjax[bench]'\n")
        return
    import byzfl

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"\n## 2. byzjax vs ByzFL {getattr(byzfl, '__version__', '')} "
          f"(torch {torch.__version__}): ms and speed-up (ByzFL / byzjax)\n")
    for d in args.dims:
        print(f"\n### d = {d:,}\n")
        print("| rule | " + " | ".join(f"n={n} f={f}" for n, f in args.grid) + " |")
        print("|---" * (len(args.grid) + 1) + "|")
        for name, (cls, kw) in BYZFL.items():
            if not hasattr(byzfl, cls):
                continue
            cells = []
            for n, f in args.grid:
                if ("s1", name, n, f, d) not in results:
                    cells.append("n/a")
                    continue
                if name == "mda" and n > 15:
                    cells.append("ByzFL enumerates C(n,f) subsets: skipped")
                    continue
                x = np.asarray(_stack(n, f, d))
                xt = torch.from_numpy(x)
                kwargs = {k: (f if v is None else v) for k, v in kw.items()}
                agg = getattr(byzfl, cls)(**kwargs)
                reps = max(3, args.reps // 2)
                ts = []
                for _ in range(reps + 1):
                    inp = xt.clone()
                    t = time.perf_counter()
                    agg(inp)
                    ts.append(time.perf_counter() - t)
                t_byzfl = statistics.median(ts[1:])
                t_ours = results[("s1", name, n, f, d)][0]
                cells.append(f"{t_ours * 1e3:.1f} vs {t_byzfl * 1e3:.1f} "
                             f"({t_byzfl / t_ours:.0f}x)")
            print(f"| {name} | " + " | ".join(cells) + " |")
            sys.stdout.flush()


def _round_program(aggregator, n=15, f=5, b=25, rounds=50, seeds=1):
    from byzjax import models, sim

    config = sim.get_config()
    config.num_workers, config.num_byzantine, config.batch_size = n, f, b
    config.aggregator = aggregator
    config.attack = "alie"
    config.optimizer = "resam"
    config.num_rounds = rounds
    config.eval_every = rounds
    rng = np.random.default_rng(0)
    N = 60_000
    labels = rng.integers(0, 10, N).astype(np.int32)
    images = rng.integers(0, 255, (N, 28, 28, 1)).astype(np.uint8)
    per = N // n
    data = sim.SimData(jnp.asarray(images), jnp.asarray(labels),
                       jnp.asarray(images[:1000]), jnp.asarray(labels[:1000]),
                       jnp.asarray(np.arange(per * n).reshape(n, per), jnp.int32),
                       jnp.full((n,), per, jnp.int32), jnp.asarray([0.5]),
                       jnp.asarray([0.25]))
    program = sim.make_program(config, data, models.get("mlp", num_classes=10))
    hp = {k: jnp.float32(v) for k, v in sim.hparams_of(config).items()}

    def many(state, hp):
        return jax.lax.scan(lambda s, _: program.round_step(s, hp), state, None,
                            length=rounds)[0]

    return program, hp, many


def section3(args, results):
    print("\n## 3. Full round (MLP 79,510, n=15, f=5, b=25, RESAM, ALIE): "
          "ms per round and aggregation share\n")
    print("| aggregator | round (ms) | aggregation alone (ms) | share |")
    print("|---|---|---|---|")
    rounds = 50
    for name in args.round_rules:
        program, hp, many = _round_program(name, rounds=rounds)
        state = jax.jit(program.init)(jax.random.key(0), hp)
        run = jax.jit(many)
        agg = jax.jit(lambda x, fn=aggregators.get(name): fn({"w": x}, num_byzantine=5))
        x = _stack(15, 5, 79_510)
        t_rounds, t_agg = time_alternating([lambda: run(state, hp), lambda: agg(x)],
                                           max(3, args.reps // 2))
        per_round = t_rounds / rounds
        results[("s3", name)] = per_round
        print(f"| {name} | {per_round * 1e3:.2f} | {t_agg * 1e3:.3f} | "
              f"{100 * t_agg / per_round:.0f}% |")
        sys.stdout.flush()
    try:
        import byzfl
        import torch
    except Exception as e:
        print(f"\nPyTorch + ByzFL round: skipped ({type(e).__name__}: {e})")
        return
    print("\nPer-worker PyTorch loop with ByzFL's aggregator (same sizes):\n")
    print("| aggregator | torch round (ms) | byzjax round (ms) | speed-up |")
    print("|---|---|---|---|")
    for name in args.round_rules:
        if name not in BYZFL or not hasattr(byzfl, BYZFL[name][0]):
            continue
        cls, kw = BYZFL[name]
        agg = getattr(byzfl, cls)(**{k: (5 if v is None else v) for k, v in kw.items()})
        t = _torch_round(agg, torch)
        ours = results[("s3", name)]
        print(f"| {name} | {t * 1e3:.2f} | {ours * 1e3:.2f} | {t / ours:.1f}x |")


def _torch_round(agg, torch, n=15, f=5, b=25, rounds=30):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 100),
                                torch.nn.ReLU(), torch.nn.Linear(100, 10))
    x = torch.randn(n, b, 1, 28, 28)
    y = torch.randint(0, 10, (n, b))
    moms = [None] * n
    lossf = torch.nn.CrossEntropyLoss()

    def one_round():
        vecs = []
        for i in range(n - f):
            model.zero_grad()
            lossf(model(x[i]), y[i]).backward()
            g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            g = g * min(1.0, 2.0 / float(g.norm()))
            moms[i] = g if moms[i] is None else 0.99 * moms[i] + 0.01 * g
            vecs.append(moms[i])
        h = torch.stack(vecs)
        byz = h.mean(0) - 1.5 * h.std(0)
        stack = torch.cat([h, byz.expand(f, -1)])
        out = agg(stack)
        with torch.no_grad():
            i = 0
            for p in model.parameters():
                k = p.numel()
                p -= 0.1 * out[i:i + k].reshape(p.shape)
                i += k

    one_round()
    t = time.perf_counter()
    for _ in range(rounds):
        one_round()
    return (time.perf_counter() - t) / rounds


def section4(args, results):
    print("\n## 4. S seeds in one program (vmap or lax.map) vs S separate runs "
          "(MLP, n=15, trimmed mean, 50 rounds; ms per run)\n")
    print("| S | vmapped | lax.map | separate | vmap speed-up | map speed-up |")
    print("|---|---|---|---|---|---|")
    program, hp, many = _round_program("trimmed_mean", rounds=50)
    one = jax.jit(lambda k, hp: many(program.init(k, hp), hp))
    for s in args.seeds:
        keys = jnp.stack([jax.random.key(i) for i in range(s)])
        vm = jax.jit(jax.vmap(lambda k, hp: many(program.init(k, hp), hp),
                              in_axes=(0, None)))
        mp = jax.jit(lambda ks, hp: jax.lax.map(
            lambda k: many(program.init(k, hp), hp), ks))

        def separate():
            return [one(keys[i], hp) for i in range(s)]

        t_vm, t_mp, t_sep = time_alternating(
            [lambda: vm(keys, hp), lambda: mp(keys, hp), separate],
            max(3, args.reps // 2), warmup=1)
        print(f"| {s} | {t_vm / s * 1e3:.1f} | {t_mp / s * 1e3:.1f} | "
              f"{t_sep / s * 1e3:.1f} | {t_sep / t_vm:.2f}x | {t_sep / t_mp:.2f}x |")
        sys.stdout.flush()


def section5(args, results):
    print("\n## 5. First-call compile time of a 50-round program (s)\n")
    print("| aggregator | first call (s) | steady call (s) |")
    print("|---|---|---|")
    for name in args.round_rules:
        program, hp, many = _round_program(name, rounds=50)
        state = jax.jit(program.init)(jax.random.key(0), hp)
        run = jax.jit(many)
        t = time.perf_counter()
        _block(run(state, hp))
        first = time.perf_counter() - t
        t = time.perf_counter()
        _block(run(state, hp))
        steady = time.perf_counter() - t
        print(f"| {name} | {first:.2f} | {steady:.3f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller grid and reps")
    p.add_argument("--sections", default="1,2,3,4,5")
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    args.grid = GRID
    args.dims = DIMS
    args.seeds = (1, 4, 16)
    args.round_rules = ("mean", "trimmed_mean", "coordinate_median", "meamed",
                        "krum", "mda", "geometric_median")
    if args.quick:
        args.reps = 3
        args.dims = (79_510,)
        args.seeds = (1, 4)
    sections = {int(s) for s in args.sections.split(",")}
    print("# byzjax benchmarks\n")
    print(f"- jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{jax.device_count()} device(s), {os.cpu_count()} CPU cores, "
          f"{platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print(f"- {time.strftime('%Y-%m-%d %H:%M:%S')}; medians of {args.reps} "
          "repetitions after warm-up, block_until_ready")
    results: dict = {}
    for s, fn in ((1, section1), (2, section2), (3, section3), (4, section4),
                  (5, section5)):
        if s in sections:
            fn(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
