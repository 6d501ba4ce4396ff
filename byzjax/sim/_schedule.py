"""Running a sweep: each group under its lock, the missing runs only, resumable.

``run_missing(group, outdir)`` computes the runs of one group that have no
valid record (under the group's lock, from its checkpoint); ``run_sweep``
every group of a sweep (or its ``--shard i/k`` part), leaving groups locked by
other processes to them and waiting for them at the end. Every finished run is
written atomically as ``<outdir>/runs/<run_id>.json``; see
:mod:`byzjax.sim._store`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from typing import Any

import jax

from byzjax import distributed
from byzjax.sim import _store
from byzjax.sim._compile import ProgramCache, ProgramJob
from byzjax.sim._grid import SweepGroup, group_label, validate_sweep
from byzjax.sim._program import check_pipeline
from byzjax.sim._run import (
    DataCache,
    group_spec,
    load_sim_data,
    make_model,
    run_batching,
    run_group,
)
from byzjax.sim._validate import check_environment

__all__ = ["run_missing", "run_sweep", "save_sweep"]


def run_missing(group: SweepGroup, outdir: str, *, data=None, progress: bool = True,
                desc: str = "", on_chunk=None,
                programs: ProgramCache | None = None
                ) -> tuple[bool, list[dict], int]:
    """Computes the runs of ``group`` that have no valid record under ``outdir``.

    Takes the group's lock first (not under multi-process JAX, where all
    processes run each group together); if another process holds it, returns
    ``(False, [], 0)`` at once. Under the lock the records are read again (the
    other process may just have finished them), the missing ones run with
    checkpoints in ``outdir/checkpoints/<group_id>`` and are written to
    ``outdir/runs``.

    Args:
      group: the group.
      outdir: the results folder.
      data: pre-loaded :class:`~byzjax.sim.SimData` (default: loaded here).
      progress: show progress bars.
      desc: progress-bar label.
      on_chunk: per-chunk callback ``on_chunk(labels, round, metrics, runs)``
        (``labels``: the group's grid values), e.g. a
        :class:`byzjax.metric_writers.ChunkLogger`.
      programs: compiled programs shared with other groups
        (:class:`~byzjax.sim._compile.ProgramCache`; default: compiled here).

    Returns:
      ``(taken, records, computed)``: whether the lock was taken, the records
      of every run of the group (read or computed) in ``run_ids()`` order, and
      how many of them this call computed.

    Example:
      A group another process is computing is left to it (``byzjax train``
      then waits; :func:`run_sweep` turns to other groups):

      >>> import os, tempfile
      >>> from byzjax.sim import get_config
      >>> group, outdir = SweepGroup(get_config(), [{}], [0, 1], {}), tempfile.mkdtemp()
      >>> with _store.group_lock(os.path.join(outdir, "locks"),
      ...                        group.group_id()) as mine:  # "another process"
      ...     mine, run_missing(group, outdir, progress=False)
      (True, (False, [], 0))
    """
    runs_dir = os.path.join(outdir, "runs")
    gid = group.group_id()
    lock: contextlib.AbstractContextManager[bool]
    if jax.process_count() > 1:
        # One multi-process JAX program: every process runs every group
        # together, so the processes must not split groups between them.
        lock = contextlib.nullcontext(True)
    else:
        lock = _store.group_lock(os.path.join(outdir, "locks"), gid)
    with lock as taken:
        if not taken:
            return False, [], 0
        ids = group.run_ids()
        done = _store.load_records(runs_dir, [rid for _, _, rid in ids])
        missing = [(p, s) for p, s, rid in ids if rid not in done]
        if missing:
            check_pipeline(group.spec)  # before any data loads
            if data is None:
                data = load_sim_data(group.spec)
            elif isinstance(data, _LazyData):
                data = data.get()
            ckpt_root = os.path.join(outdir, "checkpoints")
            for points, seeds in _calls(missing):
                part = SweepGroup(group.spec, points, seeds, group.labels)
                for rec in run_group(group.spec, seeds=seeds, hparam_points=points,
                                     outdir=runs_dir, data=data, progress=progress,
                                     desc=desc, checkpoint_dir=os.path.join(
                                         ckpt_root, part.group_id()),
                                     on_chunk=None if on_chunk is None else
                                     functools.partial(on_chunk, group.labels),
                                     programs=programs):
                    done[rec["run_id"]] = rec
            with contextlib.suppress(OSError):
                os.rmdir(ckpt_root)  # only if no other group left one there
        return True, [done[rid] for _, _, rid in ids], len(missing)


def _calls(missing: list[tuple[dict, int]]) -> list[tuple[list[dict], list[int]]]:
    """The ``run_group`` calls of a group's missing ``(point, seed)`` runs: one
    call of every point x seeds when the points miss the same seeds, else one
    call per point."""
    by_point: dict[tuple, list[int]] = {}
    for p, s in missing:
        by_point.setdefault(tuple(sorted(p.items())), []).append(s)
    if len({tuple(v) for v in by_point.values()}) == 1:
        return [([dict(k) for k in by_point], next(iter(by_point.values())))]
    return [([dict(k)], seeds) for k, seeds in by_point.items()]


def _expected_job(group: SweepGroup, done, template: ProgramJob) -> ProgramJob | None:
    """The first program ``group`` will compile when reached, with the data
    layout of ``template`` (another group's job), or ``None`` when it is
    known to need other data shapes or no program (a guess: a wrong one only
    wastes a background compilation; :class:`ProgramCache` matches keys)."""
    missing = [(p, s) for p, s, rid in group.run_ids() if rid not in done]
    if not missing:
        return None
    points, seeds = _calls(missing)[0]
    spec, _ = group_spec(group.spec, points)
    t = template.spec
    if spec.shard != "none" or any(
            getattr(spec, f) != getattr(t, f) for f in
            ("dataset", "data_source", "num_workers", "server_data_size")):
        return None
    return ProgramJob(spec, template.static, template.arrays,
                      make_model(spec, template.static[2]),
                      run_batching(spec), len(points) * len(seeds))


def _restrict(group: SweepGroup, keep: set[str]) -> list[SweepGroup]:
    """The runs of ``group`` whose ids are in ``keep``, as point x seeds groups."""
    by_point: dict[tuple, list[int]] = {}
    for p, s, rid in group.run_ids():
        if rid in keep:
            by_point.setdefault(tuple(sorted(p.items())), []).append(s)
    by_seeds: dict[tuple, list[dict]] = {}
    for point, seeds in by_point.items():
        by_seeds.setdefault(tuple(seeds), []).append(dict(point))
    return [SweepGroup(group.spec, points, list(seeds), group.labels)
            for seeds, points in by_seeds.items()]


def run_sweep(sweep, outdir: str, *, progress: bool = True,
              max_groups: int | None = None, log=print,
              poll_s: float = 2.0, shard: str | None = None,
              on_chunk=None, compile_ahead: int = 1) -> dict[str, Any]:
    """Runs every missing run of ``sweep``; returns counts and wall time.

    Groups whose runs all have valid records are skipped; in a partially
    finished group only the missing (point, seed) pairs run, from their last
    checkpoint if there is one. Groups locked by another process are left to
    it; once nothing else can be done this process waits for them (and takes
    over the group of a process that died), so it returns with the sweep
    complete. ``shard="i/k"`` keeps only the i-th of k disjoint parts of the
    run list (:func:`byzjax.distributed.sweep_part`), for independent jobs.
    ``on_chunk`` is given to :func:`run_missing` (metric writers). The sweep
    is written to ``outdir/sweep.json`` for the report.

    Groups that differ only in how the data is split (``similarity_gamma``,
    ``dirichlet_alpha``, ``split_seed``, ...) share one compiled program, and
    while one group compiles or runs the next ``compile_ahead`` groups are
    compiled in a background thread (:mod:`byzjax.sim._compile`); neither
    changes a result. The compiled programs are also kept in
    ``outdir/.jax_cache`` (JAX's persistent compilation cache), which a rerun
    in the same folder reads.

    The whole sweep is checked first (:func:`validate_sweep`,
    :func:`~byzjax.sim.check_environment` of every group), so a bad group
    fails before any data is loaded or any program compiled.

    Args:
      sweep: a sweep (:func:`load_sweep`).
      outdir: the results folder (records in ``outdir/runs``).
      progress: show progress bars.
      max_groups: compute at most this many groups (default: all).
      log: where the one-line summaries go.
      poll_s: seconds between looks at groups locked by other processes.
      shard: ``"i/k"``: only the i-th of k parts of the runs.
      on_chunk: per-chunk callback, see :func:`run_missing`.
      compile_ahead: groups compiled ahead in the background (0: each when
        it is reached).

    Returns:
      ``{"programs", "runs", "wall_time_s", "total_runs"}``: the groups and
      runs this call computed, its wall time, and the sweep's number of runs.

    Raises:
      ConfigError: a bad group (named by its grid values) or a package one
        needs is missing.

    Example:
      >>> import ml_collections, tempfile
      >>> from byzjax.sim import ConfigError, get_config
      >>> sweep = ml_collections.ConfigDict({
      ...     "name": "demo", "base": get_config(),
      ...     "grid": {"aggregator": ["mean", "krum"]}})
      >>> sweep.base.num_byzantine = 7  # of 15 workers: too many for Krum
      >>> try:
      ...     run_sweep(sweep, tempfile.mkdtemp(), progress=False)
      ... except ConfigError as e:
      ...     print(str(e).split(":")[0])
      group aggregator=krum
    """
    groups = validate_sweep(sweep)  # fail early on any bad configuration
    for g in groups:
        check_environment(g.config)
    runs_dir = os.path.join(outdir, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    _store.clean_orphans(runs_dir)
    cache_dir = os.path.join(outdir, ".jax_cache")
    try:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except Exception:  # pragma: no cover - older jax
        pass
    mine = distributed.sweep_part(groups, shard)  # run ids of this part, or None
    if mine is not None:
        groups = [part for g in groups for part in _restrict(g, mine)]
    if not distributed.is_main_process():
        progress, log = False, distributed.quiet
        changed = False
    else:
        changed = save_sweep(sweep, outdir)
    done = _store.load_records(runs_dir, warn=False)
    mine_ids = {rid for g in groups for _, _, rid in g.run_ids()}
    stale = sorted(set(done) - mine_ids)
    if stale and mine is None:
        log(f"{len(stale)} record(s) in {runs_dir} are not runs of this sweep"
            f"{' (its file changed since the last run)' if changed else ''}: "
            "left in place, not used by it; the report shows them as their own "
            f"configurations (e.g. {stale[0]}.json)")
    todo = [g for g in groups if any(rid not in done for _, _, rid in g.run_ids())]
    distributed.barrier("sweep listed")  # every process lists before any writes
    total_runs = sum(len(g.points) * len(g.seeds) for g in groups)
    n_missing = sum(rid not in done for g in todo for _, _, rid in g.run_ids())
    log(f"sweep {sweep.get('name', '')}: {len(groups)} programs, {total_runs} runs; "
        f"{total_runs - n_missing} done, {n_missing} to run")
    if max_groups is not None:
        todo = todo[:max_groups]
    data_cache = DataCache()
    cache = ProgramCache(ahead=compile_ahead)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="programs", unit="prog", dynamic_ncols=True)
    t0 = time.perf_counter()
    ran = programs = 0
    pending = list(todo)
    waiting_logged = False
    while pending:
        left = []
        for i, g in enumerate(pending):
            before = set(_store.load_records(
                runs_dir, [rid for _, _, rid in g.run_ids()], warn=False))
            if len(before) == len(g.run_ids()):
                continue  # finished by another process
            if compile_ahead:  # the next groups, compiled while this one runs
                cache.expect([functools.partial(
                    _expected_job, n, _store.load_records(
                        runs_dir, [rid for _, _, rid in n.run_ids()], warn=False))
                    for n in pending[i + 1:i + 2 + 2 * compile_ahead]])
            label = group_label(g.labels)
            taken, _, computed = run_missing(
                g, outdir, data=_LazyData(g.spec, data_cache),
                progress=progress, desc=label, on_chunk=on_chunk,
                programs=cache)
            if not taken:
                left.append(g)
                continue
            if computed:
                ran += computed
                programs += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(label[-60:])
        if left and len(left) == len(pending):
            if not waiting_logged:
                log(f"waiting for {len(left)} program(s) locked by other processes")
                waiting_logged = True
            time.sleep(poll_s)
        pending = left
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    return {"programs": programs, "runs": ran, "wall_time_s": wall,
            "total_runs": total_runs}


def save_sweep(sweep, outdir: str) -> bool:
    """Writes ``sweep`` as standard JSON to ``outdir/sweep.json`` (atomically).

    Returns:
      Whether an earlier ``sweep.json`` there differed (the sweep changed).
    """
    body = sweep.to_dict() if hasattr(sweep, "to_dict") else dict(sweep)
    path = os.path.join(outdir, "sweep.json")
    try:
        with open(path) as fh:
            before = json.load(fh)
    except (OSError, ValueError):
        before = None
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(_store.sanitize(json.loads(json.dumps(
            body, default=lambda x: x.to_dict() if hasattr(x, "to_dict")
            else list(x) if isinstance(x, (tuple, set)) else str(x)))),
            fh, indent=1, allow_nan=False)
    os.replace(tmp, path)
    with open(path) as fh:
        return before is not None and json.load(fh) != before


class _LazyData:
    """Loads a group's data on first use (only when the lock was taken and runs
    are missing), from the sweep's :class:`~byzjax.sim._run.DataCache`."""

    def __init__(self, spec, cache: DataCache):
        self.spec, self.cache = spec, cache

    def get(self):
        return self.cache.get(self.spec)
