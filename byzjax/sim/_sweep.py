"""Sweeps: grids over discrete axes (separate programs) and float axes (vmapped).

A sweep file is a Python file with ``get_sweep()`` returning a ``ConfigDict``
(or dict) with:

* ``name``: a label;
* ``base``: the base run config (``byzjax.sim.get_config()`` with overrides);
* ``grid``: ``{field: [values]}`` over *static* fields (aggregator, attack,
  optimizer, num_byzantine, ...): their product gives the groups, one compiled
  program each;
* ``hparams``: ``{float_field: [values]}`` over traced floats (beta,
  learning_rate, ...): their product is vmapped inside each program;
* ``seeds``: list of seeds, vmapped as well;
* ``exclude`` (optional): list of ``match`` dicts; groups whose grid values
  contain every item of one of them are left out;
* ``extra`` (optional): list of dicts, each one more group (the base with
  those fields set), e.g. an unattacked reference run;
* ``overrides`` (optional): list of ``(match, changes)`` pairs; a group whose
  grid values contain every ``match`` item gets ``changes`` applied (e.g. per
  optimiser learning rates, as seed 002 uses).

Every finished run is written atomically as ``<outdir>/runs/<run_id>.json``; a
re-run skips runs already present, so a killed sweep resumes where it stopped
and never duplicates a run.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import time
from typing import Any

import jax
import ml_collections

from byzjax.sim._config import FLOAT_HPARAMS, hparams_of
from byzjax.sim._run import load_sim_data, run_group, run_id

__all__ = ["load_sweep", "expand_sweep", "run_sweep", "SweepGroup"]


class SweepGroup:
    """One static configuration of a sweep and its (points x seeds) runs."""

    def __init__(self, config, points, seeds, labels):
        self.config = config
        self.points = points
        self.seeds = list(seeds)
        self.labels = labels

    def run_ids(self):
        return [(p, s, run_id(self.config, s, dict(hparams_of(self.config), **p)))
                for p in self.points for s in self.seeds]


def call_file_function(path: str, name: str):
    """Imports the Python file ``path`` and returns ``name()`` (``get_config`` /
    ``get_sweep``), letting it import its siblings (``experiments.configs...``)."""
    _add_import_roots(path)
    spec = importlib.util.spec_from_file_location(f"_byzjax_{name}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise ValueError(f"{path} must define {name}()")
    return getattr(module, name)()


def load_sweep(path: str) -> ml_collections.ConfigDict:
    """Imports ``path`` and returns its ``get_sweep()``."""
    sweep = call_file_function(path, "get_sweep")
    if not isinstance(sweep, ml_collections.ConfigDict):
        sweep = ml_collections.ConfigDict(sweep)
    return sweep


def _add_import_roots(path: str) -> None:
    """Lets a sweep/config file import its siblings (``experiments.configs...``)."""
    import sys

    here = os.path.dirname(os.path.abspath(path))
    for root in (os.path.dirname(here), here, os.getcwd()):
        if root not in sys.path:
            sys.path.insert(0, root)


def expand_sweep(sweep) -> list[SweepGroup]:
    """The groups of a sweep, in grid order."""
    base = sweep.base
    grid = dict(sweep.get("grid", {}) or {})
    hparams = dict(sweep.get("hparams", {}) or {})
    for k in hparams:
        if k not in FLOAT_HPARAMS:
            raise ValueError(f"hparams axis {k!r} is not a float hyper-parameter; "
                             f"vmappable axes are {FLOAT_HPARAMS}; put it in grid")
    for k in grid:
        if k in FLOAT_HPARAMS:
            raise ValueError(f"grid axis {k!r} is a float hyper-parameter; put it "
                             "in hparams so it is vmapped")
        if k not in base:
            raise ValueError(f"grid axis {k!r} is not a config field")
    overrides = list(sweep.get("overrides", []) or [])
    exclude = [dict(m) for m in (sweep.get("exclude", []) or [])]
    seeds = list(sweep.get("seeds", [0]))
    keys = list(grid)
    hkeys = list(hparams)
    points = [dict(zip(hkeys, vals)) for vals in
              itertools.product(*(hparams[k] for k in hkeys))] or [{}]
    groups = []
    combos = [dict(zip(keys, vals))
              for vals in itertools.product(*(grid[k] for k in keys))]
    combos += [dict(e) for e in (sweep.get("extra", []) or [])]
    for labels in combos:
        if any(all(labels.get(k) == v for k, v in m.items()) for m in exclude):
            continue
        cfg = ml_collections.ConfigDict(base.to_dict())
        for k, v in labels.items():
            cfg[k] = v
        for match, changes in overrides:
            if all(labels.get(k, cfg.get(k)) == v for k, v in dict(match).items()):
                for k, v in dict(changes).items():
                    cfg[k] = v
        groups.append(SweepGroup(cfg, points, seeds, labels))
    return groups


def run_sweep(sweep, outdir: str, *, progress: bool = True,
              max_groups: int | None = None, log=print,
              shard: str | None = None) -> dict[str, Any]:
    """Runs every missing run of ``sweep``; returns counts and wall time.

    Groups whose runs are all present are skipped; in a partially finished
    group only the missing (point, seed) pairs run. ``shard="i/k"`` keeps the
    i-th of k disjoint parts of the run list (:func:`byzjax.distributed.shard_part`).
    """
    from byzjax.sim._config import validate

    runs_dir = os.path.join(outdir, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    cache_dir = os.path.join(outdir, ".jax_cache")
    try:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except Exception:  # pragma: no cover - older jax
        pass
    groups = expand_sweep(sweep)
    for g in groups:  # fail early on any bad configuration
        validate(g.config)
    from byzjax import distributed

    mine = distributed.sweep_part(groups, shard)  # run ids of this part, or None
    if not distributed.is_main_process():
        progress, log = False, distributed.quiet
    done = set(f[:-5] for f in os.listdir(runs_dir) if f.endswith(".json"))
    distributed.barrier("sweep listed")  # every process lists before any writes
    todo = []
    for g in groups:
        missing = [(p, s) for p, s, rid in g.run_ids() if rid not in done
                   and (mine is None or rid in mine)]
        if missing:
            todo.append((g, missing))
    total_runs = sum(len(g.points) * len(g.seeds) for g in groups)
    n_missing = sum(len(m) for _, m in todo)
    log(f"sweep {sweep.get('name', '')}: {len(groups)} programs, {total_runs} runs; "
        f"{total_runs - n_missing} done, {n_missing} to run")
    if max_groups is not None:
        todo = todo[:max_groups]
    data_cache: dict[tuple, Any] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="programs", unit="prog", dynamic_ncols=True)
    t0 = time.perf_counter()
    ran = 0
    for g, missing in todo:
        c = g.config
        dkey = (c.dataset, c.data_source, c.split, float(c.dirichlet_alpha),
                int(c.split_seed), int(c.num_workers))
        if dkey not in data_cache:
            data_cache.clear()
            data_cache[dkey] = load_sim_data(c)
        # Group the missing runs by point so each call vmaps point x seeds.
        by_point: dict[tuple, list[int]] = {}
        for p, s in missing:
            by_point.setdefault(tuple(sorted(p.items())), []).append(s)
        seed_sets = {tuple(v) for v in by_point.values()}
        label = " ".join(f"{k}={v}" for k, v in g.labels.items())
        if len(seed_sets) == 1:
            seeds = list(seed_sets.pop())
            run_group(c, seeds=seeds, hparam_points=[dict(k) for k in by_point],
                      outdir=runs_dir, data=data_cache[dkey], progress=progress,
                      desc=label)
        else:
            for pk, seeds in by_point.items():
                run_group(c, seeds=seeds, hparam_points=[dict(pk)], outdir=runs_dir,
                          data=data_cache[dkey], progress=progress, desc=label)
        ran += len(missing)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(label[-60:])
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    return {"programs": len(todo), "runs": ran, "wall_time_s": wall,
            "total_runs": total_runs}
