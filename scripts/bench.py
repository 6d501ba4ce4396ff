"""byzjax benchmarks: markdown tables of ratios, every figure measured in this run.

Usage::

    python scripts/bench.py                # everything (several minutes on 2 cores)
    python scripts/bench.py --quick        # smaller grid, fewer repetitions
    python scripts/bench.py --sections 1,4 # pick sections
    python scripts/bench.py --sections 6   # models vs PyTorch

Sections:
  1. every aggregator and pre-aggregator on n in {15, 31, 51} (f = 5, 10, 16)
     x d in {79,510; 1,310,922} float32: time and ratio to the memory-read floor
     of the (n, d) stack (fastest single read measured here, alternating with
     the rule);
  2. the same cells for ByzFL (optional ``pip install 'byzjax[bench]'``):
     byzjax / ByzFL ratio;
  3. a full simulated round (MLP 79,510, n = 15, b = 25, worker momentum) per
     aggregator, the share spent aggregating (FLTrust's includes the server's
     own gradient on its 100 root examples), and (with torch + byzfl) a
     per-worker PyTorch loop with ByzFL's aggregator;
  4. S in {1, 4, 16} seeds vmapped in one program vs S separate runs;
  5. first-call compile time of a round;
  6. models: one simulated round of the MLP, the MNIST CNN and the CIFAR CNN
     (n = 15; per-worker gradients as ``grad_strategy="auto"`` picks and with
     ``vmap``) against one plain gradient of the same n*b images and a
     per-worker PyTorch loop of the same architecture (with torch);
  7. peer-to-peer: one round of all 26 nodes (MLP, f = 5, b = 25, RESAM,
     ALIE, the random-subset rule of Farhadkhani et al.'s code) with trimmed
     mean and MoNNA, against the parameter-server round of the same n and
     rule, and (with torch) ``scripts/p2p_torch_baseline.py``, a PyTorch port
     of their ``peerToPeer.py`` step.

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

# PyTorch's OpenMP threads spin between ops by default; alternated with JAX in
# one process on a shared 2-core machine that made its MLP round ~100x slower
# (1.4 s instead of ~15 ms), so let idle threads sleep unless told otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

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


def gram_fns(x):
    """One Gram matmul of the stack's shape, ``[n, d] @ [d, n]``: as a single
    matmul and as byzjax's blocked accumulation (``byzjax._tree.gram``); the
    faster of the two is the compute reference of the distance rules."""
    from byzjax import _tree

    plain = jax.jit(lambda x: jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST))
    blocked = jax.jit(lambda x: _tree.gram({"w": x}))
    return [lambda: plain(x), lambda: blocked(x)]


# Rules whose cost is Gram matmuls: reported against one Gram of the same shape.
DISTANCE_RULES = ("krum", "multi_krum", "geometric_median", "pre:nnm", "mda",
                  "bulyan", "centered_clipping", "monna", "smea", "caf",
                  "clipped_clustering")


def rule_fns(n, f):
    """(name, jitted fn of the stack) for every registered rule that accepts (n, f).

    Pre-aggregators appear twice: alone (``pre:name``, its output written to a
    new ``[m, d]`` array) and followed by the mean (``pre:name > mean``), the
    way they are used: a pre-aggregator always feeds an aggregator, and inside
    one jitted program XLA fuses its elementwise output into the consumer."""
    out = []
    for name in aggregators.names():
        entry = aggregators.entry(name)
        if n < entry.min_workers(f):
            continue
        if entry.limit is not None and entry.limit(n, f):
            continue  # e.g. SMEA beyond its subset limit
        kw = {"num_byzantine": f}
        if entry.needs_key:
            kw["key"] = jax.random.key(0)
        if entry.needs_reference:  # FLTrust: an honest row as the server's update
            out.append((name, jax.jit(lambda x, fn=entry.fn, kw=kw: fn(
                {"w": x}, reference={"w": x[0]}, **kw))))
            continue
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
        if name in ("static_clipping", "bucketing", "arc"):
            out.append((f"pre:{name} > mean", jax.jit(
                lambda x, fn=entry.fn, kw=kw: aggregators.mean(fn({"w": x}, **kw)))))
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
        grams = {}
        for n, f in args.grid:
            x = _stack(n, f, d)
            fl = min(time_alternating(floor_fns(x), args.reps))
            floors[(n, f)] = fl
            for name, fn in rule_fns(n, f):
                if args.rules and name not in args.rules:
                    continue
                t_rule, _ = time_alternating(
                    [lambda fn=fn, x=x: fn(x), floor_fns(x)[1]], args.reps)
                rows.setdefault(name, {})[(n, f)] = (t_rule, t_rule / fl)
                results[("s1", name, n, f, d)] = (t_rule, fl)
                if name in DISTANCE_RULES:
                    t_rule, t_plain, t_blocked = time_alternating(
                        [lambda fn=fn, x=x: fn(x), *gram_fns(x)], args.reps)
                    grams.setdefault((n, f), []).append((t_plain, t_blocked))
                    rows.setdefault("gram:" + name, {})[(n, f)] = (
                        t_rule, t_rule / min(t_plain, t_blocked))
        print("| *floor (ms)* | " + " | ".join(f"{floors[c] * 1e3:.2f}"
                                               for c in args.grid) + " |")
        for name in sorted(rows):
            if name.startswith("gram:"):
                continue
            cells = []
            for c in args.grid:
                if c in rows[name]:
                    t, r = rows[name][c]
                    cells.append(f"{t * 1e3:.2f} ({r:.1f}x)")
                else:
                    cells.append("n/a")
            print(f"| {name} | " + " | ".join(cells) + " |")
        if grams:
            _gram_table(args, d, rows, grams)
        sys.stdout.flush()


def _gram_table(args, d, rows, grams):
    """Distance rules against one Gram matmul of the same shape, each rule
    timed alternately with the Gram (single and blocked matmul); the ratio is
    the rule over the faster Gram of its own run, the Gram row the medians
    over the rules' runs."""
    print(f"\nDistance rules vs one Gram matmul `[n, d] @ [d, n]` (d = {d:,}; "
          "ms; ratio = rule / the faster of the single and the blocked "
          "matmul, both timed alternately with the rule in its own run):\n")
    print("| rule | " + " | ".join(f"n={n} f={f}" for n, f in args.grid) + " |")
    print("|---" * (len(args.grid) + 1) + "|")
    label = {}
    for c, ts in grams.items():
        plain = statistics.median(t[0] for t in ts)
        blocked = statistics.median(t[1] for t in ts)
        label[c] = f"{plain * 1e3:.2f} / {blocked * 1e3:.2f}"
    print("| *Gram: single / blocked (ms)* | " + " | ".join(
        label.get(c, "n/a") for c in args.grid) + " |")
    for name in DISTANCE_RULES:
        if "gram:" + name not in rows:
            continue
        cells = []
        for c in args.grid:
            t = rows["gram:" + name].get(c)
            cells.append("n/a" if t is None else
                         f"{t[0] * 1e3:.2f} ({t[1]:.2f}x)")
        print(f"| {name} | " + " | ".join(cells) + " |")


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
    "pre:arc": ("ARC", {"f": None}),
    "monna": ("MoNNA", {"f": None}),
    "smea": ("SMEA", {"f": None}),
    # ByzFL's CAF is left out: its tau_max over every row (rows already at
    # weight 0 included) can keep its loop running for ~(R / sigma)^2 steps.
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
                if name in ("mda", "smea") and n > 15:
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


def _round_program(aggregator, n=15, f=5, b=25, rounds=50, model="mlp",
                   grad_strategy="auto", diagnostics=True, byzantine_gradients=None,
                   **fields):
    """A jitted ``rounds``-round program of the simulator on synthetic data
    (``diagnostics=False``: without the round diagnostics;
    ``byzantine_gradients=True``: the f Byzantine workers' gradients computed
    too, although ALIE replaces their rows; ``fields``: other config fields,
    e.g. ``topology="random_subset"``)."""
    from byzjax import models, sim

    config = sim.get_config()
    config.num_workers, config.num_byzantine, config.batch_size = n, f, b
    config.aggregator = aggregator
    config.attack = "alie"
    config.optimizer = "resam"
    config.num_rounds = rounds
    config.eval_every = rounds
    config.grad_strategy = grad_strategy
    for k, v in fields.items():
        config[k] = v
    server = None
    if aggregators.entry(aggregator).needs_reference:  # FLTrust's 100 root examples
        config.server_data_size = 100
        server = jnp.arange(100, dtype=jnp.int32)
    shape = models.info(model).input_shape
    rng = np.random.default_rng(0)
    N = 60_000 if model == "mlp" else 50 * n * b
    labels = rng.integers(0, 10, N).astype(np.int32)
    images = rng.integers(0, 255, (N, *shape)).astype(np.uint8)
    per = N // n
    channels = shape[-1]
    data = sim.SimData(jnp.asarray(images), jnp.asarray(labels),
                       jnp.asarray(images[:1000]), jnp.asarray(labels[:1000]),
                       jnp.asarray(np.arange(per * n).reshape(n, per), jnp.int32),
                       jnp.full((n,), per, jnp.int32), jnp.full((channels,), 0.5),
                       jnp.full((channels,), 0.25), server_indices=server)
    program = sim.make_program(config, data, models.get(model, num_classes=10),
                               byzantine_gradients=byzantine_gradients)
    hp = {k: jnp.float32(v) for k, v in sim.hparams_of(config).items()}

    def step(s, _):
        return program.round_step(s, hp, diagnostics=diagnostics)

    def many(state, hp):
        return jax.lax.scan(step, state, None, length=rounds)[0]

    return program, hp, many


def section3(args, results):
    print("\n## 3. Full round (MLP 79,510, n=15, f=5, b=25, RESAM, ALIE): "
          "ms per round and aggregation share\n")
    print("Aggregation share = (round with the rule - the same round with the "
          "plain mean) / round with the rule, both timed alternately in this "
          "run: the time the rule adds over the cheapest aggregation (the mean "
          "itself is the reference, 0 by definition; noise can make a small "
          "difference negative).\n")
    print("| aggregator | round (ms) | round with the mean (ms) | "
          "added by the rule (ms) | share |")
    print("|---|---|---|---|---|")
    rounds = 50
    program, hp, many_mean = _round_program("mean", rounds=rounds)
    state = jax.jit(program.init)(jax.random.key(0), hp)
    run_mean = jax.jit(many_mean)
    for name in args.round_rules:
        program, hp, many = _round_program(name, rounds=rounds)
        run = jax.jit(many)
        t_rounds, t_mean = time_alternating(
            [lambda: run(state, hp), lambda: run_mean(state, hp)],
            max(5, args.reps))
        per_round, per_mean = t_rounds / rounds, t_mean / rounds
        results[("s3", name)] = per_round
        added = per_round - per_mean
        print(f"| {name} | {per_round * 1e3:.2f} | {per_mean * 1e3:.2f} | "
              f"{added * 1e3:.2f} | {100 * added / per_round:.0f}% |")
        sys.stdout.flush()
    _diagnostics_cost(args, state)
    try:
        import byzfl
        import torch
    except Exception as e:
        print(f"\nPyTorch + ByzFL round: skipped ({type(e).__name__}: {e})")
        return
    torch.set_num_threads(2)
    print("\nPer-worker PyTorch loop with ByzFL's aggregator (same sizes; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads), "
          "timed alternately with the byzjax round (wall and process CPU "
          "time; on a loaded machine the CPU-time ratio is the steadier "
          "one):\n")
    print("| aggregator | torch round (ms) | byzjax round (ms) | speed-up | "
          "torch CPU (ms) | byzjax CPU (ms) | CPU speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name in args.round_rules:
        if name not in BYZFL or not hasattr(byzfl, BYZFL[name][0]):
            continue
        cls, kw = BYZFL[name]
        agg = getattr(byzfl, cls)(**{k: (5 if v is None else v) for k, v in kw.items()})
        torch_round = _torch_round(agg, torch)
        program, hp, many = _round_program(name, rounds=rounds)
        run = jax.jit(many)
        wall, cpu = _time_wall_cpu(
            [lambda: run(state, hp), lambda: [torch_round() for _ in range(10)]],
            max(5, args.reps))
        ours, t = wall[0] / rounds, wall[1] / 10
        ours_cpu, t_cpu = cpu[0] / rounds, cpu[1] / 10
        print(f"| {name} | {t * 1e3:.2f} | {ours * 1e3:.2f} | {t / ours:.1f}x | "
              f"{t_cpu * 1e3:.2f} | {ours_cpu * 1e3:.2f} | {t_cpu / ours_cpu:.1f}x |")
        sys.stdout.flush()


def _time_wall_cpu(fns, reps):
    """Medians of wall and process CPU seconds per call, calls alternated."""
    for f in fns:
        _block(f())
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for _ in range(reps):
        for i, f in enumerate(fns):
            c, t = time.process_time(), time.perf_counter()
            _block(f())
            wall[i].append(time.perf_counter() - t)
            cpu[i].append(time.process_time() - c)
    return ([statistics.median(x) for x in wall],
            [statistics.median(x) for x in cpu])


def _diagnostics_cost(args, state):
    rounds = 50
    print(f"\nRound diagnostics (agg_dist, honest_spread, resilience, cosine; "
          f"honest-rows Gram) in the same MLP round, trimmed mean, {rounds} "
          "rounds, alternated (wall and process CPU time):\n")
    print("| diagnostics | ms per round | CPU ms per round | cost over none |")
    print("|---|---|---|---|")
    runs = []
    for on in (False, True):
        program, hp, many = _round_program("trimmed_mean", rounds=rounds,
                                           diagnostics=on)
        runs.append(jax.jit(many))
    fns = [lambda r=r: r(state, hp) for r in runs]
    w, c = _time_wall_cpu(fns, max(11, 3 * args.reps))
    for i, label in enumerate(("none", "every round (default)")):
        print(f"| {label} | {w[i] / rounds * 1e3:.2f} | {c[i] / rounds * 1e3:.2f} "
              f"| {100 * (w[i] - w[0]) / w[0]:+.1f}% wall, "
              f"{100 * (c[i] - c[0]) / c[0]:+.1f}% CPU |")
    sys.stdout.flush()


def _torch_round(agg, torch, n=15, f=5, b=25):
    """One round of ByzFL's per-worker loop (MLP, worker momentum, ALIE, the
    aggregator ``agg``) as a callable."""
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
    return one_round


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


# --------------------------------------------------------------- 6. models
MODEL_CASES = (("mlp", 25, 50), ("mnist_cnn", 25, 5), ("cifar_cnn", 16, 2))


def _torch_model(name, torch):
    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(),
                             nn.Linear(100, 10))
    if name == "mnist_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(20, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(320, 500), nn.ReLU(), nn.Linear(500, 10))
    layers, cin = [], 3
    for width in (64, 128):
        layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(),
                   nn.BatchNorm2d(width, momentum=0.1, eps=1e-5),
                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                   nn.BatchNorm2d(width, momentum=0.1, eps=1e-5),
                   nn.MaxPool2d(2), nn.Dropout(0.25)]
        cin = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(8192, 128), nn.ReLU(),
                         nn.Dropout(0.25), nn.Linear(128, 10))


def _torch_model_round(name, b, torch, n=15, f=5):
    """The per-worker PyTorch loop of a round, as ByzFL runs it: n - f honest
    workers, each a fwd+bwd of b images and its gradient flattened, then the
    rows stacked. Its aggregation and update are left out (in byzjax's
    disfavour: the byzjax column is a whole round). Returns a callable."""
    from byzjax import models

    model = _torch_model(name, torch)
    model.train()
    h, w, c = models.info(name).input_shape
    x = torch.randn(n, b, c, h, w)
    y = torch.randint(0, 10, (n, b))
    lossf = torch.nn.CrossEntropyLoss()
    params = list(model.parameters())

    def gradients():
        rows = []
        for i in range(n - f):
            model.zero_grad()
            lossf(model(x[i]), y[i]).backward()
            rows.append(torch.cat([p.grad.reshape(-1) for p in params]))
        return torch.stack(rows)

    return gradients


def _plain_gradient(name, n, b):
    """jax.grad of the same network on one batch of all n * b images."""
    import optax

    from byzjax import models

    model = models.get(name, num_classes=10)
    shape = models.info(name).input_shape
    x = jax.random.normal(jax.random.key(1), (n * b, *shape))
    y = jax.random.randint(jax.random.key(2), (n * b,), 0, 10)
    v = model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                   x[:1])

    def loss(params):
        variables = dict(v, params=params)
        logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.key(3)})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    g = jax.jit(jax.grad(loss))
    return lambda: g(v["params"])


def section6(args, results):
    from byzjax import models
    from byzjax.sim import resolve_grad_strategy

    try:
        import torch
    except Exception as e:  # pragma: no cover - optional
        torch = None
        print(f"\n(PyTorch columns skipped: {type(e).__name__}: {e}; "
              "pip install 'byzjax[bench]')")
    else:
        torch.set_num_threads(2)
    print("\n## 6. Models: one simulated round (n=15, f=5, trimmed mean, RESAM, "
          "ALIE) vs one plain gradient of the same n*b images and the per-worker "
          "PyTorch gradient loop of a round (n-f workers' fwd+bwd, flattened and "
          "stacked) (ms per round; all columns of a row timed alternately). The "
          "byzjax round computes the n-f honest gradients (ALIE replaces the "
          "Byzantine rows); 'all n' also computes the f Byzantine workers' "
          "gradients, as before byzjax skipped them.\n")
    if torch is not None:
        print(f"- torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | n x b | byzjax round, auto | byzjax round, vmap | "
          "byzjax round, all n gradients (auto) | "
          "plain gradient of n*b | PyTorch per-worker gradients | "
          "PyTorch / byzjax |")
    print("|---|---|---|---|---|---|---|---|")
    n = 15
    for name, b, rounds in args.model_cases:
        convolutional = name != "mlp"
        auto = resolve_grad_strategy("auto", num_workers=n,
                                     backend=jax.default_backend(),
                                     convolutional=convolutional)
        fns, labels = [], []
        variants = [(s, None) for s in dict.fromkeys((auto, "vmap"))]
        for strategy, byz in variants + [(auto, True)]:
            program, hp, many = _round_program("trimmed_mean", n=n, b=b,
                                               rounds=rounds, model=name,
                                               grad_strategy=strategy,
                                               byzantine_gradients=byz)
            state = jax.jit(program.init)(jax.random.key(0), hp)
            run = jax.jit(many)
            fns.append(lambda run=run, state=state, hp=hp: run(state, hp))
            labels.append(strategy if byz is None else "all")
        fns.append(_plain_gradient(name, n, b))
        if torch is not None:
            fns.append(_torch_model_round(name, b, torch))
        times = time_alternating(fns, max(3, args.reps // 2), warmup=1)
        t_auto = times[0] / rounds
        t_vmap = times[labels.index("vmap")] / rounds
        t_plain = times[len(labels)]
        cells = [f"{t_auto * 1e3:.1f} ({auto})", f"{t_vmap * 1e3:.1f}",
                 f"{times[labels.index('all')] / rounds * 1e3:.1f} "
                 f"({times[labels.index('all')] / rounds / t_auto:.2f}x auto)",
                 f"{t_plain * 1e3:.1f}"]
        if torch is not None:
            t_torch = times[-1]
            cells += [f"{t_torch * 1e3:.1f}", f"{t_torch / t_auto:.2f}x"]
        else:
            cells += ["n/a", "n/a"]
        count = models.count_params(models.get(name), models.info(name).input_shape)
        print(f"| {name} ({count:,}) | {n} x {b} | " + " | ".join(cells) + " |")
        results[("s6", name)] = times
        sys.stdout.flush()


# ---------------------------------------------------------- 7. peer-to-peer
def _p2p_torch_step(aggregator):
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "p2p_torch_baseline.py")
    spec = importlib.util.spec_from_file_location("p2p_torch_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_step(aggregator)


def section7(args, results):
    n, f, rounds = 26, 5, 10
    print(f"\n## 7. Peer-to-peer round (MLP 79,510, n={n}, f={f}, b=25, RESAM, "
          "ALIE, random-subset rule) vs the parameter-server round of the same "
          "n and rule (ms per round)\n")
    print("| aggregator | peer-to-peer (ms) | parameter server (ms) | ratio |")
    print("|---|---|---|---|")
    p2p_runs = {}
    for name in ("trimmed_mean", "monna"):
        runs = []
        for fields in ({"topology": "random_subset"}, {}):
            program, hp, many = _round_program(name, n=n, f=f, rounds=rounds,
                                               **fields)
            state = jax.jit(program.init)(jax.random.key(0), hp)
            run = jax.jit(many)
            runs.append(lambda run=run, state=state, hp=hp: run(state, hp))
        t_p2p, t_ps = time_alternating(runs, max(5, args.reps))
        p2p_runs[name] = (runs[0], t_p2p / rounds)
        results[("s7", name)] = t_p2p / rounds
        print(f"| {name} | {t_p2p / rounds * 1e3:.1f} | {t_ps / rounds * 1e3:.1f} "
              f"| {t_p2p / t_ps:.2f}x |")
        sys.stdout.flush()
    try:
        import torch
    except Exception as e:
        print(f"\nPyTorch port of peerToPeer.py: skipped ({type(e).__name__}: "
              f"{e}); run scripts/p2p_torch_baseline.py with torch")
        return
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"\nPyTorch port of peerToPeer.py's step (scripts/p2p_torch_baseline.py;"
          f" torch {torch.__version__}, {torch.get_num_threads()} threads), "
          "timed alternately with byzjax's round (wall and process CPU):\n")
    print("| aggregator | torch step (ms) | byzjax round (ms) | speed-up | "
          "CPU speed-up |")
    print("|---|---|---|---|---|")
    for name, torch_name in (("trimmed_mean", "trmean"), ("monna", "cva")):
        step = _p2p_torch_step(torch_name)
        ours = p2p_runs[name][0]
        wall, cpu = _time_wall_cpu([ours, step], max(3, args.reps // 2))
        print(f"| {name} | {wall[1] * 1e3:.1f} | {wall[0] / rounds * 1e3:.1f} | "
              f"{wall[1] / (wall[0] / rounds):.1f}x | "
              f"{cpu[1] / (cpu[0] / rounds):.1f}x |")
        sys.stdout.flush()


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            return fh.read().strip()
    except OSError:
        return "n/a"


def _reexec_with_hugepages():
    """Re-runs this script with glibc's malloc asking for transparent huge
    pages (Linux, glibc >= 2.35; read only at process start).

    XLA:CPU allocates every output buffer afresh; glibc serves buffers of more
    than 32 MB with a new ``mmap``, and the kernel then faults in and zeroes
    every 4 KB page on first write. Writing a new ``[15, 1,310,922]`` float32
    array (79 MB) took 19,203 page faults and 10-15x the time of reading it;
    with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` 296 faults and ~3x
    (``docs/PERFORMANCE.md``)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or "glibc.malloc.hugetlb" in tunables:
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (tunables,
                                                  "glibc.malloc.hugetlb=1") if t)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller grid and reps")
    p.add_argument("--sections", default="1,2,3,4,5,6,7",
                   help="comma-separated section numbers (6 = models, 7 = "
                        "peer-to-peer)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--dims", dest="dims_arg", default=None,
                   help="comma-separated parameter counts for sections 1-2 "
                        "(default 79510,1310922; --quick: 79510)")
    p.add_argument("--rules", default="",
                   help="comma-separated rule names for sections 1, 3 and 5 "
                        "(default all; pre-aggregators as pre:name)")
    p.add_argument("--models", default="",
                   help="comma-separated model names for section 6 (default all "
                        "of the grid)")
    p.add_argument("--no-hugepages", action="store_true",
                   help="do not re-run under GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
    args = p.parse_args(argv)
    if not args.no_hugepages and argv is None:
        _reexec_with_hugepages()
    args.grid = GRID
    args.dims = DIMS
    args.seeds = (1, 4, 16)
    args.round_rules = ("mean", "trimmed_mean", "coordinate_median", "meamed",
                        "krum", "mda", "geometric_median", "fltrust")
    args.model_cases = MODEL_CASES
    if args.quick:
        args.model_cases = (("mlp", 25, 50), ("mnist_cnn", 25, 3),
                            ("cifar_cnn", 8, 1))
        args.reps = 3
        args.dims = (79_510,)
        args.seeds = (1, 4)
    args.rules = tuple(r for r in args.rules.split(",") if r)
    if args.rules:
        args.round_rules = tuple(r for r in args.round_rules if r in args.rules)
    if args.models:
        wanted = [m for m in args.models.split(",") if m]
        known = [case[0] for case in args.model_cases]
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            p.error(f"unknown --models {', '.join(unknown)}; choose from "
                    f"{', '.join(known)}")
        args.model_cases = tuple(c for c in args.model_cases if c[0] in wanted)
    if args.dims_arg is not None:
        args.dims = tuple(int(v) for v in args.dims_arg.split(","))
    sections = {int(s) for s in args.sections.split(",")}
    print("# byzjax benchmarks\n")
    print(f"- jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{jax.device_count()} device(s), {os.cpu_count()} CPU cores, "
          f"{platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print(f"- {time.strftime('%Y-%m-%d %H:%M:%S')}; medians of {args.reps} "
          "repetitions after warm-up, block_until_ready")
    print(f"- GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}; "
          f"transparent huge pages: {_thp_mode()}")
    results: dict = {}
    for s, fn in ((1, section1), (2, section2), (3, section3), (4, section4),
                  (5, section5), (6, section6), (7, section7)):
        if s in sections:
            fn(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
