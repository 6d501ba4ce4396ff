"""Command line: ``byzjax train``, ``sweep``, ``report`` and ``launch``.

Examples::

    byzjax train --dataset fashion_mnist --aggregator trimmed_mean --attack alie \\
        --optimizer resam --beta 0.9 --rounds 500 --seeds 0,1,2 --outdir runs/demo
    byzjax train --config experiments/configs/mnist_resam.py --set num_byzantine=3
    byzjax sweep experiments/table_4_1.py --outdir results/table_4_1
    byzjax report results/table_4_1
    byzjax sweep experiments/table_4_1.py --shard 0/4   # part 0 of 4 (job array)
    byzjax launch --num-processes 2 -- sweep experiments/table_4_1.py
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys

from byzjax import distributed

__all__ = ["main", "build_config"]

_FLAGS = {
    # flag: (config field, type)
    "dataset": ("dataset", str),
    "data_source": ("data_source", str),
    "split": ("split", str),
    "model": ("model", str),
    "num_workers": ("num_workers", int),
    "num_byzantine": ("num_byzantine", int),
    "num_attackers": ("num_attackers", int),
    "aggregator": ("aggregator", str),
    "preaggregator": ("preaggregator", str),
    "attack": ("attack", str),
    "optimizer": ("optimizer", str),
    "beta": ("beta", float),
    "lr": ("learning_rate", float),
    "rounds": ("num_rounds", int),
    "eval_every": ("eval_every", int),
    "batch_size": ("batch_size", int),
}


def _load_config_file(path: str):
    from byzjax.sim._sweep import call_file_function

    try:
        return call_file_function(path, "get_config")
    except (ValueError, OSError) as e:
        raise SystemExit(f"config file: {e}") from None


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_config(args):
    """The run config from ``--config``, the named flags and ``--set k=v``."""
    from byzjax import sim

    config = _load_config_file(args.config) if args.config else sim.get_config()
    for flag, (field, typ) in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            config[field] = typ(value)
    for item in args.set or []:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        target = config
        parts = key.split(".")
        for p in parts[:-1]:
            target = target[p]
        if parts[-1] not in target and target is config:
            raise SystemExit(f"unknown config field {key!r}; fields: "
                             f"{', '.join(sorted(config.keys()))}")
        target[parts[-1]] = _parse_value(value)
    try:
        sim.validate(config)
    except ValueError as e:
        raise SystemExit(f"bad configuration: {e}") from None
    return config


def _data_errors():
    from byzjax.data import DataIntegrityError, DatasetNotFoundError

    return (DatasetNotFoundError, DataIntegrityError)


def _train(args) -> int:
    from byzjax import report, sim

    config = build_config(args)
    seeds = [int(s) for s in str(args.seeds).split(",") if s != ""]
    try:
        records = sim.run_group(config, seeds=seeds,
                                outdir=os.path.join(args.outdir, "runs"),
                                progress=not args.quiet)
    except _data_errors() as e:
        raise SystemExit(f"data: {e}") from None
    if not distributed.is_main_process():  # process 0 reports
        return 0
    for r in records:
        status = (f"diverged at round {r['diverged_round']}" if r["diverged"]
                  else "finite")
        print(f"seed {r['seed']}: final acc {r['final_accuracy']:.4f}, "
              f"max acc {r['max_accuracy']:.4f} ({status})")
    if not args.no_plot:
        path = os.path.join(args.outdir, "curves.png")
        report.plot_curves(report.load_runs(args.outdir), path)
        print(f"wrote {path}")
    return 0


def _sweep(args) -> int:
    from byzjax import report
    from byzjax.sim import _sweep

    sweep = _sweep.load_sweep(args.sweep)
    for item in args.set or []:
        key, value = item.split("=", 1)
        target = sweep
        parts = key.split(".")
        for p in parts[:-1]:
            target = target[p]
        target[parts[-1]] = _parse_value(value)
    outdir = args.outdir or os.path.join("results", sweep.get("name", "sweep"))
    try:
        summary = _sweep.run_sweep(sweep, outdir, progress=not args.quiet,
                                   shard=args.shard)
    except _data_errors() as e:
        raise SystemExit(f"data: {e}") from None
    except ValueError as e:
        raise SystemExit(f"bad sweep: {e}") from None
    if not distributed.is_main_process():  # process 0 reports
        return 0
    print(json.dumps(summary))
    if not args.no_report:
        paths = report.write_report(outdir, metric=args.metric)
        print(open(paths["best"]).read())
        print("wrote " + ", ".join(paths.values()))
    return 0


def _report(args) -> int:
    from byzjax import report

    paths = report.write_report(args.outdir, metric=args.metric,
                                figures=not args.no_plot)
    print(open(paths["best"]).read())
    print("wrote " + ", ".join(paths.values()))
    return 0


def main(argv=None) -> int:
    """Entry point of the ``byzjax`` command."""
    parser = argparse.ArgumentParser(prog="byzjax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one configuration for several seeds")
    t.add_argument("--config", help="Python file with get_config()")
    for flag, (_, typ) in _FLAGS.items():
        t.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ)
    t.add_argument("--seeds", default="0", help="comma-separated seeds (vmapped)")
    t.add_argument("--set", action="append", help="override a config field: k=v")
    t.add_argument("--outdir", default="runs/train")
    t.add_argument("--no-plot", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)
    distributed.add_arguments(t)

    s = sub.add_parser("sweep", help="run a grid (resumable)")
    s.add_argument("sweep", help="Python file with get_sweep()")
    s.add_argument("--outdir")
    s.add_argument("--set", action="append", help="override a sweep field: k=v")
    s.add_argument("--metric", default="final_accuracy",
                   choices=["final_accuracy", "max_accuracy"])
    s.add_argument("--no-report", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--shard", help="i/k: run only the i-th of k disjoint parts "
                   "(independent jobs, e.g. a Slurm array; see docs/SCALING.md)")
    s.set_defaults(func=_sweep)
    distributed.add_arguments(s)

    r = sub.add_parser("report", help="tables and figures of a results folder")
    r.add_argument("outdir")
    r.add_argument("--metric", default="final_accuracy",
                   choices=["final_accuracy", "max_accuracy"])
    r.add_argument("--no-plot", action="store_true")
    r.set_defaults(func=_report)
    distributed.add_launch_parser(sub)

    args = parser.parse_args(argv)
    if args.command in ("train", "sweep"):
        distributed.initialize_from_args(args)  # before any JAX computation
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
