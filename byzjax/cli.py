"""Command line: ``byzjax train``, ``sweep``, ``report``, ``launch`` and
``byzfl-convert``.

Examples::

    byzjax train --dataset fashion_mnist --aggregator trimmed_mean --attack alie \\
        --optimizer resam --beta 0.9 --rounds 500 --seeds 0,1,2 --outdir runs/demo
    byzjax train --config experiments/configs/mnist_resam.py --set num_byzantine=3
    byzjax sweep experiments/table_4_1.py --outdir results/table_4_1
    byzjax report results/table_4_1
    byzjax sweep experiments/table_4_1.py --shard 0/4   # part 0 of 4 (job array)
    byzjax launch --num-processes 2 -- sweep experiments/table_4_1.py
    byzjax sweep --byzfl config.json       # a ByzFL benchmark (docs/BYZFL.md)
    byzjax byzfl-convert config.json -o byzfl_sweep.py

A bad option or config fails before any data is loaded, with one line saying
what to change; ``--debug`` (or ``BYZJAX_DEBUG=1``) shows the traceback instead.
Re-running a command resumes it: finished runs are not run again, and a run
killed midway continues from its last checkpoint.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
import warnings

from byzjax import aggregators, attacks, distributed
from byzjax.optim import optimizer_names
from byzjax.sim import FIELDS

__all__ = ["main", "build_config"]

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _field_help(field) -> str:
    """A field's help, with the live registry names where it names a rule."""
    live = {"optimizer": optimizer_names, "aggregator": aggregators.names,
            "attack": attacks.names}
    if field.name in live:
        names = live[field.name]()
        return f"{field.help}; one of: {', '.join(names)}"
    return field.help


def _flags() -> dict:
    """``byzjax train``'s named options: flag -> (config field, type, help),
    made from the field table (``byzjax.sim.FIELDS``)."""
    return {f.flag: (f.name, _TYPES[f.kind], _field_help(f))
            for f in FIELDS.values() if f.flag}


#: flag: (config field, type, help); the default is read from get_config().
_FLAGS = _flags()


class _CliError(Exception):
    """A usage error of the command line (printed as one line)."""


def _parse_value(text: str):
    if text.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity"):
        return float(text)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split_set(item: str) -> tuple[str, object]:
    """``--set key=value`` as ``(key, value)`` (``main`` parses each once)."""
    key, eq, value = item.partition("=")
    if not eq or not key:
        raise _CliError(f"--set expects key=value, got {item!r}")
    return key.strip(), _parse_value(value)


def build_config(args):
    """The run config from ``--config``, the named flags and ``--set k=v``,
    resolved once into a :class:`byzjax.sim.RunSpec` (validated:
    :class:`byzjax.sim.ConfigError` names the file and line when a config
    file is at fault)."""
    from byzjax import sim

    config = sim.load_config(args.config) if args.config else sim.get_config()
    overridden = set()
    for flag, (field, _, _) in _flags().items():
        value = getattr(args, flag, None)
        if value is not None:
            sim.override(config, field, value)
            overridden.add(field)
    for key, value in args.set or []:
        sim.override(config, key, value)
        overridden.add(key.partition(".")[0])
    try:
        return sim.resolve(config)
    except sim.ConfigError as e:
        if args.config and e.field not in overridden:
            raise sim.file_error(args.config, e) from None
        raise


def _seeds(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"expected distinct integers >= 0 such as 0,1,2, got {text!r}")
    return seeds


def _train(args) -> int:
    from byzjax import report, sim

    config = build_config(args)
    sim.check_environment(config)
    sim.check_outdir(args.outdir)
    sim.clean_orphans(os.path.join(args.outdir, "runs"))
    group = sim.SweepGroup(config, [{}], args.seeds, {})
    logger = _chunk_logger(args, args.outdir)
    while True:
        taken, records, _ = sim.run_missing(group, args.outdir,
                                            progress=not args.quiet,
                                            on_chunk=logger)
        if taken:
            break
        print("another process is computing these runs; waiting for it",
              file=sys.stderr)
        time.sleep(5.0)
    if logger is not None:
        logger.close()
    if not distributed.is_main_process():  # process 0 reports
        return 0
    for r in records:
        status = (f"diverged at round {r['diverged_round']}" if r["diverged"]
                  else "finite")
        print(f"seed {r['seed']}: final acc {_fmt(r['final_accuracy'])}, "
              f"max acc {_fmt(r['max_accuracy'])} ({status})")
    if not args.no_plot:
        path = os.path.join(args.outdir, "curves.png")
        report.plot_curves(records, path)
        print(f"wrote {path}")
    return 0


def _fmt(x) -> str:
    return "nan" if x is None else f"{x:.4f}"


def _byzfl_sweep_file(config_path: str, out: str, *, name: str):
    """Converts the ByzFL configuration ``config_path`` and writes the sweep
    file ``out``; returns the :class:`byzjax.byzfl.Conversion`."""
    from byzjax import byzfl

    config = byzfl.read_config(config_path)
    conversion = byzfl.convert(config, name=name)
    byzfl.write_sweep(conversion, out, config=config, source=config_path)
    return conversion


def _byzfl_convert(args) -> int:
    from byzjax import sim

    conversion = _byzfl_sweep_file(args.config, args.output, name=args.name)
    try:  # every group as byzjax resolves it (rules' (n, f), ...), before any data
        sim.validate_sweep(sim.load_sweep(args.output))
    except sim.ConfigError as e:
        raise sim.file_error(args.output, e) from None
    runs = conversion.num_settings * len(conversion.sweep.seeds)
    print(f"wrote {args.output}: {conversion.num_settings} ByzFL settings x "
          f"{len(conversion.sweep.seeds)} seeds = {runs} runs; run it with "
          f"byzjax sweep {args.output}")
    return 0


def _sweep(args) -> int:
    from byzjax import report, sim

    if args.compile_ahead < 0:
        raise _CliError(f"--compile-ahead must be >= 0, got {args.compile_ahead}")

    if args.byzfl:  # a ByzFL config.json: its sweep file is written beside the results
        from byzjax import byzfl

        config = byzfl.read_config(args.sweep)
        name = os.path.splitext(os.path.basename(args.sweep))[0]
        conversion = byzfl.convert(config, name="byzfl_" + name)
        args.outdir = args.outdir or conversion.results_directory
        sim.check_outdir(args.outdir)
        with open(os.path.join(args.outdir, "byzfl_config.json"), "w") as fh:
            json.dump(config, fh, indent=4)
        args.sweep = byzfl.write_sweep(
            conversion, os.path.join(args.outdir, "byzfl_sweep.py"),
            config=config, source=args.sweep)
        print(f"wrote {args.sweep} ({conversion.num_settings} ByzFL settings)")
    sweep = sim.load_sweep(args.sweep)
    overridden = set()
    for key, value in args.set or []:
        sim.set_sweep_field(sweep, key, value)
        overridden.add(key.partition(".")[2] or key)  # base.x, grid.x -> x
    try:
        sim.validate_sweep(sweep)
    except sim.ConfigError as e:
        if e.field in overridden:
            raise
        raise sim.file_error(args.sweep, e) from None
    outdir = args.outdir or os.path.join("results", sweep.get("name", "sweep"))
    sim.check_outdir(outdir)
    logger = _chunk_logger(args, outdir)
    summary = sim.run_sweep(sweep, outdir, progress=not args.quiet,
                            shard=args.shard, on_chunk=logger,
                            compile_ahead=args.compile_ahead)
    if logger is not None:
        logger.close()
    if not distributed.is_main_process():  # process 0 reports
        return 0
    print(json.dumps(summary))
    if not args.no_report:
        # a ByzFL benchmark ends as ByzFL's does: the worst-case view
        view = "byzfl" if args.byzfl else None
        paths = report.write_report(outdir, metric=args.metric, view=view)
        print(open(paths["byzfl" if view else "best"]).read())
        print("wrote " + ", ".join(paths.values()))
    return 0


def _report(args) -> int:
    from byzjax import report

    if args.boxes:
        data = report.plot_momentum_boxes(report.load_runs(args.outdir), args.boxes,
                                          metric=args.metric or "max_accuracy")
        print(f"wrote {args.boxes} ({len(data['panels'])} panels)")
        if not args.json:
            return 0
    if args.json:
        if args.sweep:
            from byzjax import sim

            try:
                if sim.published_of(sim.load_sweep(args.sweep)) is None:
                    raise _CliError(f"{args.sweep} declares no 'published' values "
                                    "(a sweep field)")
            except sim.ConfigError as e:
                raise sim.file_error(args.sweep, e) from None
        cells = report.write_json(args.outdir, args.json, sweep=args.sweep,
                                  metric=args.metric)
        print(f"wrote {args.json} ({len(cells)} cells, "
              f"{sum(c['published'] is not None for c in cells)} with a "
              "published value)")
        return 0
    if args.html:
        report.require_jinja2()  # a missing Jinja2 fails before any work
    fixed = _fixed_fields(args)
    paths = report.write_report(args.outdir, metric=args.metric or "final_accuracy",
                                figures=not args.no_plot, view=args.view,
                                fixed=fixed)
    if args.csv:
        paths.update(report.write_tidy(args.outdir))
    if args.html:
        small = args.small_images
        paths["html"] = report.write_html(
            args.outdir, out=args.html_dir, sweep=args.sweep,
            metric=args.metric or "final_accuracy",
            dpi=72 if small else 90, palette=64 if small else None,
            view=args.view, fixed=fixed)
    print(open(paths["best"]).read())
    if args.view == "byzfl":
        print(open(paths["byzfl"]).read())
    print("wrote " + ", ".join(paths.values()))
    return 0


def _fixed_fields(args) -> tuple[str, ...]:
    """``--fixed`` as field names (``--fixed`` without ``--view`` refused)."""
    from byzjax import report

    if args.fixed is None:
        return report.PANEL_FIELDS
    if args.view is None:
        raise _CliError("--fixed applies to --view byzfl; add --view byzfl")
    fields = tuple(f.strip() for f in args.fixed.split(",") if f.strip())
    extra = [f for f in fields if f.startswith("+")]
    fields = tuple(f.lstrip("+") for f in fields)
    if extra:  # "+optimizer": the default panels and these
        fields = report.PANEL_FIELDS + fields
    report.check_fixed(fields)
    return fields


def _user_errors():
    """Exceptions that are the user's input, not a bug: shown as one line."""
    from byzjax.data import DataIntegrityError, DatasetNotFoundError

    return (_CliError, ValueError, OSError, DatasetNotFoundError, DataIntegrityError)


_TRAIN_DESCRIPTION = """\
Train one configuration of the simulator for several seeds. The seeds run
together in one compiled program (vmapped); every round is one jitted step
and the rounds between two evaluations run under lax.scan.

The configuration is byzjax.sim.get_config() (Fabris 2023's MNIST setting
with an MLP), or the one of --config FILE; the options below override it, and
--set overrides any field. A bad value stops the command before any data is
loaded, with one line saying what to change.

Results go to OUTDIR: runs/<run_id>.json (one checked record per seed: the
config, the metric curves, final and best accuracy, divergence), curves.png,
and checkpoints/ while a run is in progress. Re-running the same command
resumes it: finished seeds are read back, a killed run continues from its
last checkpoint."""


def _train_epilog(defaults) -> str:
    import textwrap

    lines = ["config fields (--set FIELD=VALUE; default in parentheses):"]
    for k in sorted(defaults.keys()):
        value = defaults[k]
        shown = "{}" if hasattr(value, "keys") and not len(value) else repr(value)
        text = _field_help(FIELDS[k])
        lines += textwrap.wrap(f"{k} ({shown}): {text}", 78, initial_indent="  ",
                               subsequent_indent="      ")
    lines += [
        "  Float fields are numbers, int fields integers; *_kwargs are the chosen",
        "  rule's keyword arguments (e.g. --set aggregator_kwargs.radius=10).",
        "",
        "examples:",
        "  byzjax train --aggregator trimmed_mean --attack alie --optimizer resam \\",
        "      --rounds 500 --seeds 0,1,2 --outdir runs/demo",
        "  byzjax train --config experiments/configs/mnist_resam.py \\",
        "      --set num_byzantine=3 --log tensorboard",
        "  tensorboard --logdir runs/demo/tensorboard   # watch it train",
        "",
        "exit status:",
        "  0 on success; 2 for a usage or configuration error (one line on",
        "  stderr; --debug shows the traceback).",
    ]
    return "\n".join(lines)


def _add_log_arguments(p) -> None:
    from byzjax.metric_writers import KINDS

    p.add_argument("--log", default="none", choices=KINDS,
                   help="stream every run's metrics after each evaluation chunk "
                        "(every --eval-every rounds): tensorboard writes "
                        "TensorBoard event files (pip install "
                        "'byzjax[tensorboard]'), clu the CLU metric writers "
                        "(needs clu and TensorFlow) (default: none)")
    p.add_argument("--log-dir", metavar="DIR",
                   help="folder of the metric writers, one sub-folder per run "
                        "(default: OUTDIR/tensorboard)")


def _chunk_logger(args, outdir):
    from byzjax.metric_writers import make_chunk_logger

    return make_chunk_logger(args.log, args.log_dir
                             or os.path.join(outdir, "tensorboard"))



# --------------------------------------------- multi-process options (launch)
def _add_distributed_arguments(parser) -> None:
    """Adds ``--coordinator-address``, ``--num-processes``, ``--process-id``."""
    g = parser.add_argument_group(
        "multi-process (jax.distributed; default: JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a detected TPU pod / Slurm step)")
    g.add_argument("--coordinator-address", metavar="HOST:PORT",
                   help="address of process 0 (default: JAX_COORDINATOR_ADDRESS, "
                        "else auto-detected or single-process)")
    g.add_argument("--num-processes", type=int, metavar="N",
                   help="processes in the run (default: JAX_NUM_PROCESSES, "
                        "else auto-detected or 1)")
    g.add_argument("--process-id", type=int, metavar="I",
                   help="this process, 0..N-1 (default: JAX_PROCESS_ID, "
                        "else auto-detected or 0)")


def _initialize_from_args(args) -> None:
    """Calls :func:`byzjax.distributed.initialize` with the parsed flags.

    Raises ``ValueError`` with one line on bad settings (the command line
    prints it as its one-line error).
    """
    shard = getattr(args, "shard", None)
    if shard:
        distributed.parse_shard(shard)
    try:
        distributed.initialize(getattr(args, "coordinator_address", None),
                   getattr(args, "num_processes", None),
                   getattr(args, "process_id", None))
    except ValueError as e:
        raise ValueError(f"distributed: {e}") from None
    except RuntimeError as e:  # the coordinator or a peer cannot be reached
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"distributed: could not join the run: {first}") from None


def _add_launch_parser(subparsers) -> None:
    """Adds ``byzjax launch --num-processes N [...] -- <command>``."""
    p = subparsers.add_parser(
        "launch", help="run a byzjax command in N local processes (one JAX run)",
        description="Starts N local processes joined by jax.distributed on a free "
        "127.0.0.1 port, e.g. byzjax launch --num-processes 2 --local-devices 4 "
        "-- sweep FILE")
    p.add_argument("--num-processes", type=int, required=True, metavar="N",
                   help="number of local processes to start (required)")
    p.add_argument("--local-devices", type=int, metavar="K",
                   help="CPU devices per process (sets XLA_FLAGS, JAX_PLATFORMS=cpu;"
                        " default: the machine's own devices)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="seconds before every process is stopped (default: none)")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- then a byzjax command (train ... or sweep ...) or "
                   "any program that calls byzjax.distributed.initialize()")
    p.set_defaults(func=_launch_command)


def _launch_command(args) -> int:
    try:  # before anything else: one line, no process started
        distributed.check_launch(num_processes=args.num_processes,
                     local_devices=args.local_devices, timeout=args.timeout)
    except ValueError as e:
        raise SystemExit(f"launch: {e}") from None
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise SystemExit("launch: give the command after --, e.g. byzjax launch "
                         "--num-processes 2 -- sweep FILE")
    if command[0] in ("train", "sweep"):
        command = [sys.executable, "-m", "byzjax", *command]
    try:
        return distributed.launch(command, num_processes=args.num_processes,
                      local_devices=args.local_devices, timeout=args.timeout)
    except ValueError as e:
        raise SystemExit(f"launch: {e}") from None

def _parser() -> argparse.ArgumentParser:
    from byzjax.sim import get_config

    defaults = get_config()
    parser = argparse.ArgumentParser(prog="byzjax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also: "
                             "BYZJAX_DEBUG=1; default: one line)")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one configuration for several seeds",
                       parents=[common], epilog=_train_epilog(defaults),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage="byzjax train [--config FILE] [options] "
                             "[--set FIELD=VALUE ...]",
                       description=_TRAIN_DESCRIPTION)
    t.add_argument("--config", metavar="FILE",
                   help="Python file with get_config() returning a run config "
                        "(default: byzjax.sim.get_config())")
    for flag, (field, typ, text) in _flags().items():
        t.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ,
                       metavar=typ.__name__.upper(),
                       help=f"{text} (default: {defaults[field]!r})")
    t.add_argument("--seeds", default=[0], type=_seeds, metavar="S1,S2,...",
                   help="comma-separated run seeds (model init unless --set "
                        "init_seed=S, batches, attack randomness) (default: 0)")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override any config field, e.g. --set dirichlet_alpha=0.5 "
                        "or --set aggregator_kwargs.radius=10 (repeatable; "
                        "default: none)")
    t.add_argument("--outdir", default="runs/train", metavar="DIR",
                   help="results folder: runs/<run_id>.json, checkpoints/, "
                        "curves.png (default: runs/train)")
    t.add_argument("--no-plot", action="store_true",
                   help="do not write curves.png (default: write it)")
    t.add_argument("--quiet", action="store_true",
                   help="no progress bar (default: a bar on stderr)")
    _add_log_arguments(t)
    t.set_defaults(func=_train)
    _add_distributed_arguments(t)

    s = sub.add_parser("sweep", help="run a grid (resumable, shareable)",
                       parents=[common],
                       description="Run every missing run of a sweep file. "
                       "Resumable: finished runs are skipped, killed runs continue "
                       "from their checkpoint; several processes on one --outdir "
                       "share the work.")
    s.add_argument("sweep", metavar="SWEEP_FILE",
                   help="Python file with get_sweep() (e.g. "
                        "experiments/table_4_1.py), or with --byzfl a ByzFL "
                        "benchmark config.json")
    s.add_argument("--byzfl", action="store_true",
                   help="SWEEP_FILE is a ByzFL 0.0.11 benchmark config.json: run "
                        "the byzjax sweep it implies, written to "
                        "OUTDIR/byzfl_sweep.py (docs/BYZFL.md; default --outdir: "
                        "its results_directory)")
    s.add_argument("--outdir", metavar="DIR",
                   help="results folder (default: results/<sweep name>)")
    s.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a sweep field, e.g. --set base.num_rounds=100 or "
                        "--set seeds=[0,1] (repeatable; default: none)")
    s.add_argument("--metric", default="final_accuracy",
                   choices=["final_accuracy", "max_accuracy"],
                   help="metric of the report tables (default: final_accuracy)")
    s.add_argument("--no-report", action="store_true",
                   help="do not write tables and figures at the end (default: "
                        "write them, as byzjax report does)")
    s.add_argument("--quiet", action="store_true",
                   help="no progress bars (default: bars on stderr)")
    s.add_argument("--compile-ahead", type=int, default=1, metavar="N",
                   help="compile the next N programs in a background thread while "
                        "one compiles or runs (results unchanged; 0: each program "
                        "when it is reached; default: 1)")
    s.add_argument("--shard", metavar="I/K",
                   help="run only the i-th of k disjoint parts of the sweep "
                        "(independent jobs, e.g. a Slurm array; see "
                        "docs/SCALING.md; default: all)")
    _add_log_arguments(s)
    s.set_defaults(func=_sweep)
    _add_distributed_arguments(s)

    c = sub.add_parser("byzfl-convert", help="a ByzFL config.json as a byzjax "
                       "sweep file", parents=[common],
                       description="Write the byzjax sweep file that runs the "
                       "experiments of a ByzFL 0.0.11 benchmark config.json "
                       "(docs/BYZFL.md). Fields byzjax cannot honour are refused "
                       "in one line naming the field.")
    c.add_argument("config", metavar="CONFIG_JSON",
                   help="ByzFL benchmark configuration (config.json)")
    c.add_argument("-o", "--output", default="byzfl_sweep.py", metavar="FILE",
                   help="sweep file to write (default: byzfl_sweep.py)")
    c.add_argument("--name", default="byzfl",
                   help="the sweep's name, its default results folder "
                        "results/<name> (default: byzfl)")
    c.set_defaults(func=_byzfl_convert)

    r = sub.add_parser("report", help="tables and figures of a results folder",
                       parents=[common],
                       description="Write the tables (table_best.md, table_full.md) "
                       "and figures (heatmaps.png, curves.png) of a results folder; "
                       "with --html a static web page, with --csv tidy data.")
    r.add_argument("outdir", metavar="RESULTS",
                   help="a results folder of byzjax train or sweep (its runs/ "
                        "holds one JSON record per run)")
    r.add_argument("--metric", default=None,
                   choices=["final_accuracy", "max_accuracy"],
                   help="metric of the tables: test accuracy after the last round "
                        "or the best over evaluations, a fraction in [0, 1] "
                        "(default: final_accuracy; with --json, the published "
                        "values' metric; with --boxes, max_accuracy)")
    r.add_argument("--no-plot", action="store_true",
                   help="tables only, no heatmaps.png / curves.png (default: "
                        "write them)")
    r.add_argument("--html", action="store_true",
                   help="also write a static web page, RESULTS/report/index.html "
                        "plus img/ (open it in a browser; nothing is fetched). "
                        "Needs Jinja2: pip install 'byzjax[report]' (default: off)")
    r.add_argument("--html-dir", metavar="DIR",
                   help="folder of the web page (default: RESULTS/report)")
    r.add_argument("--small-images", action="store_true",
                   help="web page images at 72 dpi with 64 colours, for a report "
                        "kept in a repository (default: 90 dpi, full colour)")
    r.add_argument("--sweep", metavar="SWEEP_FILE",
                   help="the sweep file, for the page's configuration and the "
                        "published values of --html and --json (default: "
                        "RESULTS/sweep.json, written by byzjax sweep)")
    r.add_argument("--csv", action="store_true",
                   help="also write RESULTS/runs.csv, one row per (run, "
                        "evaluation) with every config field as a column, and "
                        "RESULTS/runs.parquet when pyarrow is installed "
                        "(default: off)")
    r.add_argument("--json", metavar="FILE",
                   help="write the cells as JSON to FILE instead of the tables: "
                        "{optimizer, attack, aggregator, model, rounds, seeds, mean, "
                        "std, diverged, published} each (default: no JSON)")
    r.add_argument("--boxes", metavar="FILE",
                   help="draw El Mhamdi et al.'s momentum box plots (a grid over "
                        "attack, num_byzantine, nesterov and server_momentum / "
                        "resam) to FILE instead of the tables (metric default: "
                        "max_accuracy)")
    r.add_argument("--view", choices=["byzfl"], default=None,
                   help="byzfl: also write ByzFL's evaluation, each rule's best "
                        "setting against its worst attack per f and data "
                        "distribution: RESULTS/table_byzfl.md, byzfl.csv, "
                        "byzfl_heatmaps.png and a section of the --html page; "
                        "accuracy as ByzFL takes it, the largest value of the "
                        "seed-mean test curve, whatever --metric (default: none)")
    r.add_argument("--fixed", metavar="FIELDS", default=None,
                   help="with --view byzfl: comma-separated config fields whose "
                        "values are separate panels, never tuned over; "
                        "+FIELD adds to the default (default: dataset, model, "
                        "split, dirichlet_alpha, similarity_gamma, num_attackers)")
    r.set_defaults(func=_report)
    _add_launch_parser(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``byzjax`` command; returns the exit status.

    A user error (bad option, config or folder) prints one line to stderr and
    returns 2; ``--debug`` or ``BYZJAX_DEBUG=1`` raises it with its traceback.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    debug = (getattr(args, "debug", False)
             or os.environ.get("BYZJAX_DEBUG", "") not in ("", "0"))
    if not debug:  # warnings as one line each, like errors
        warnings.formatwarning = (
            lambda message, category, *_, **__: f"byzjax: warning: {message}\n")
    try:
        if getattr(args, "set", None):
            args.set = [_split_set(item) for item in args.set]
        if args.command in ("train", "sweep"):
            try:  # before any JAX computation
                _initialize_from_args(args)
            except ValueError as e:
                raise _CliError(str(e)) from None
        return args.func(args)
    except KeyboardInterrupt:
        from byzjax.sim._compile import compiling_ahead

        if debug or not compiling_ahead():
            raise
        # A compilation is running in a background thread (sweep
        # --compile-ahead): the interpreter's exit would abort inside it.
        # Finished runs are written and locks released by now.
        print(f"byzjax {args.command}: interrupted; finished runs are kept "
              "(the same command resumes)", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)
    except _user_errors() as e:
        if debug:
            raise
        from byzjax.sim import ConfigError

        text = " ".join(str(e).split()) or type(e).__name__
        if not isinstance(e, (ConfigError, _CliError)):
            text += f" (byzjax {args.command} --debug shows where)"
        print(f"byzjax {args.command}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
