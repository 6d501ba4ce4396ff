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
  optimiser learning rates, as Fabris 2023 uses);
* ``published`` (optional): the source's numbers for the cells it prints,
  ``{"source": "Fabris (2023), Table 4.1", "metric": "final_accuracy",
  "cells": [{"optimizer": "dsgd", "attack": "alie", "aggregator":
  "trimmed_mean", "value": 0.3825}, ...]}``; a cell's keys other than
  ``value`` are grid axes and identify the cell (where a source prints only
  the best aggregator of a row, the cell names that aggregator). Read by
  ``byzjax report --json`` and shown beside the measured values by
  ``byzjax report --html`` (:func:`published_of`, :func:`check_published`).

``run_sweep`` writes the sweep as run to ``<outdir>/sweep.json`` (the report
reads its grid and published values from there).

Every finished run is written atomically as ``<outdir>/runs/<run_id>.json``; a
re-run skips runs whose record is present and valid, so a killed sweep resumes
where it stopped and never duplicates a run. A group is computed under a lock
(``<outdir>/locks``), so several processes on one folder share the groups, and
with orbax checkpoints (``<outdir>/checkpoints``, every
``config.checkpoint_every`` evaluation chunks), so a killed group resumes
mid-run. See :mod:`byzjax.sim._store`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import itertools
import os
import re
import sys
import time
import traceback
from typing import Any

import jax
import ml_collections

from byzjax import distributed
from byzjax._registry import unknown_name
from byzjax.sim import _store
from byzjax.sim._errors import ConfigError
from byzjax.sim._fields import FLOAT_HPARAMS
from byzjax.sim._spec import RunSpec, resolve
from byzjax.sim._validate import check_environment, override, validate
from byzjax.sim._run import load_sim_data, run_group, run_id

__all__ = ["load_config", "load_sweep", "expand_sweep", "validate_sweep", "run_sweep",
           "SweepGroup", "SWEEP_FIELDS", "set_sweep_field", "run_missing",
           "file_error", "import_file", "save_sweep", "check_published",
           "published_of"]

#: The fields a sweep may have.
SWEEP_FIELDS = ("name", "base", "grid", "hparams", "seeds", "exclude", "extra",
                "overrides", "published")

#: Metrics a ``published`` declaration may name (the records' fields).
PUBLISHED_METRICS = ("final_accuracy", "max_accuracy")


class SweepGroup:
    """One static configuration of a sweep and its (points x seeds) runs.

    ``config`` is a run config or a :class:`~byzjax.sim.RunSpec`; :attr:`spec`
    resolves (and so validates) it once, on first use. A sweep is a list of
    groups (:func:`validate_sweep`); ``byzjax train`` is one group.

    Args:
      config: the group's run config (static fields fixed) or its ``RunSpec``.
      points: hyper-parameter points, dicts of float fields
        (:data:`~byzjax.sim.FLOAT_HPARAMS`); ``[{}]``: the config's own values.
      seeds: run seeds.
      labels: the group's grid values (``{"aggregator": "krum"}``), for
        progress bars and errors.

    Example:
      >>> from byzjax.sim import get_config
      >>> group = SweepGroup(get_config(), [{"beta": 0.5}, {"beta": 0.9}],
      ...                    [0, 1], {})
      >>> len(group.run_ids()), len(group.group_id())
      (4, 16)
    """

    def __init__(self, config, points, seeds, labels):
        self.config = config
        self.points = points
        self.seeds = list(seeds)
        self.labels = labels
        self._spec = config if isinstance(config, RunSpec) else None

    @property
    def spec(self) -> RunSpec:
        """The group's resolved :class:`~byzjax.sim.RunSpec`."""
        if self._spec is None:
            self._spec = resolve(self.config)
        return self._spec

    def run_ids(self):
        """``(point, seed, run_id)`` of every run, points outer, seeds inner."""
        return [(p, s, run_id(self.spec, s, dict(self.spec.hparams, **p)))
                for p in self.points for s in self.seeds]

    def group_id(self) -> str:
        """A stable name of the group (its lock and checkpoint folder)."""
        ids = sorted(rid for _, _, rid in self.run_ids())
        return hashlib.sha1(",".join(ids).encode()).hexdigest()[:16]


def _where(path: str, exc: BaseException) -> str:
    """``path:line`` of the deepest frame of ``exc`` inside the file ``path``."""
    target = os.path.abspath(path)
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == target:
            line = frame.lineno
    return f"{path}:{line}" if line else path


def file_error(path: str, err: ConfigError) -> ConfigError:
    """``err`` located in the config or sweep file ``path`` that caused it.

    Args:
      path: the file.
      err: the error, raised while checking what the file built.

    Returns:
      A :class:`~byzjax.sim.ConfigError` with the same ``field`` whose message
      starts with ``path:line``, the first line of ``path`` (comments aside)
      that mentions ``err.field``; just ``path`` when no line does.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "cfg.py")
      >>> with open(path, "w") as fh:
      ...     _ = fh.write("c = get_config()\\nc.num_byzantine = 9\\n")
      >>> err = ConfigError("num_byzantine too large", field="num_byzantine")
      >>> str(file_error(path, err)) == f"{path}:2: num_byzantine too large"
      True
    """
    where = path
    if err.field:
        pattern = re.compile(r"(\.|\[['\"]|\b)" + re.escape(err.field) + r"\b")
        try:
            with open(path) as fh:
                for i, text in enumerate(fh, 1):
                    if pattern.search(text.split("#")[0]):
                        where = f"{path}:{i}"
                        break
        except OSError:
            pass
    return ConfigError(f"{where}: {err}", field=err.field)


@contextlib.contextmanager
def _folder_importable(path: str):
    """While a config or sweep file is imported, its folder is importable (as
    for ``python file.py``): ``from cfg import get_config`` finds a sibling."""
    folder = os.path.dirname(os.path.abspath(path))
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def import_file(path: str, *, relative_to: str | None = None):
    """The Python file ``path`` imported as a module (once; later calls reuse it).

    Config and sweep files import each other with it, by path, so no folder
    has to be on ``sys.path``::

        table_4_1 = import_file("table_4_1.py", relative_to=__file__)

    Args:
      path: the file; relative to the folder of ``relative_to`` if given.
      relative_to: usually the calling file's ``__file__``.

    Raises:
      ConfigError: no such file, or it is not a Python file.
    """
    if relative_to is not None:
        path = os.path.join(os.path.dirname(os.path.abspath(relative_to)), path)
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    name = "_byzjax_file_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot import it (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _folder_importable(path):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def call_file_function(path: str, name: str):
    """Imports the Python file ``path`` and returns ``name()`` (``get_config`` /
    ``get_sweep``). While it is imported its folder is importable, as for
    ``python file.py`` (``from cfg import get_config``); files in other
    folders are imported by path with :func:`import_file`.

    Raises:
      ConfigError: one line naming the file (and line): missing file, syntax
        error, an exception while importing or calling, no ``name()``.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(f"_byzjax_{name}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot import it (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    try:
        with _folder_importable(path):
            spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{e.filename or path}:{e.lineno}: syntax error: "
                          f"{e.msg}") from e
    except Exception as e:
        raise ConfigError(f"{_where(path, e)}: {type(e).__name__}: {e}") from e
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{path}: defines no {name}() function")
    try:
        return fn()
    except Exception as e:
        raise ConfigError(f"{_where(path, e)}: {name}() raised "
                          f"{type(e).__name__}: {e}") from e


def load_config(path: str) -> ml_collections.ConfigDict:
    """Imports the config file ``path`` and returns its ``get_config()``.

    While the file is imported its folder is importable, as for ``python
    file.py`` (``from cfg import get_config``).

    Args:
      path: a Python file defining ``get_config()``, which returns a run
        config (:func:`~byzjax.sim.get_config` with overrides).

    Returns:
      The run config, not yet validated (:func:`~byzjax.sim.resolve` does it).

    Raises:
      ConfigError: one line naming the file (and line): missing file, syntax
        error, an exception while importing or calling, no ``get_config()``,
        or it does not return a ``ConfigDict``.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "cfg.py")
      >>> with open(path, "w") as fh:
      ...     _ = fh.write("from byzjax.sim import get_config as default\\n"
      ...                  "def get_config():\\n"
      ...                  "    c = default()\\n"
      ...                  "    c.aggregator = 'krum'\\n"
      ...                  "    return c\\n")
      >>> load_config(path).aggregator
      'krum'
    """
    config = call_file_function(path, "get_config")
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an "
                          "ml_collections.ConfigDict (start from "
                          f"byzjax.sim.get_config()), got {type(config).__name__}")
    return config


def load_sweep(path: str) -> ml_collections.ConfigDict:
    """Imports the sweep file ``path`` and returns its ``get_sweep()``, checked
    for shape (the module docstring lists a sweep's fields).

    Args:
      path: a Python file defining ``get_sweep()``, which returns a
        ``ConfigDict`` or dict.

    Returns:
      The sweep as a ``ConfigDict``, not yet expanded or validated
      (:func:`validate_sweep`).

    Raises:
      ConfigError: naming the file: not a dict, unknown fields, no ``base``.

    Example:
      >>> import pathlib, tempfile
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "sweep.py"
      >>> _ = path.write_text("\\n".join([
      ...     "from byzjax.sim import get_config",
      ...     "def get_sweep():",
      ...     "    return {'name': 'demo', 'base': get_config(),",
      ...     "            'grid': {'aggregator': ['mean', 'krum']}}"]))
      >>> sweep = load_sweep(str(path))
      >>> sweep.name, list(sweep.grid.aggregator)
      ('demo', ['mean', 'krum'])
    """
    sweep = call_file_function(path, "get_sweep")
    if isinstance(sweep, dict):
        sweep = ml_collections.ConfigDict(sweep)
    if not isinstance(sweep, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_sweep() must return a ConfigDict or dict, "
                          f"got {type(sweep).__name__}")
    for key in sweep.keys():
        if key not in SWEEP_FIELDS:
            raise file_error(path, ConfigError(
                unknown_name("sweep field", key, SWEEP_FIELDS), field=key))
    if "base" not in sweep:
        raise ConfigError(f"{path}: get_sweep() has no 'base' (the run config every "
                          "group starts from: base = byzjax.sim.get_config() with "
                          "overrides)")
    if not isinstance(sweep.base, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: the sweep's base must be a run config "
                          f"(byzjax.sim.get_config()), got {type(sweep.base).__name__}")
    return sweep


def set_sweep_field(sweep, key: str, value) -> None:
    """``--set`` for sweeps: sets, in place, ``base.<field>`` (checked like a
    run config's :func:`~byzjax.sim.override`), one axis of the grid or of the
    vmapped hyper-parameters (``grid.<field>=[...]``, ``hparams.<field>=[...]``:
    replaces or adds that axis, the other axes stay), or a top-level sweep
    field.

    Args:
      sweep: a sweep (:func:`load_sweep`).
      key: ``"base.<field>"`` (``"base.aggregator_kwargs.radius"``),
        ``"grid.<field>"``, ``"hparams.<field>"`` or a sweep field
        (``"seeds"``).
      value: the new value (a non-empty list for an axis).

    Raises:
      ConfigError: unknown sweep or config field, a value of the wrong type,
        or an axis that is not a non-empty list.

    Example:
      >>> import ml_collections
      >>> from byzjax import sim
      >>> s = ml_collections.ConfigDict({"base": sim.get_config(),
      ...                                "grid": {"attack": ["alie", "foe"],
      ...                                         "aggregator": ["mean"]}})
      >>> set_sweep_field(s, "grid.attack", ["alie"])
      >>> s.grid.attack, s.grid.aggregator
      (['alie'], ['mean'])
      >>> set_sweep_field(s, "base.num_rounds", 100)
      >>> set_sweep_field(s, "seeds", [0, 1, 2])
      >>> s.base.num_rounds, list(s.seeds)
      (100, [0, 1, 2])
    """
    top, _, rest = key.partition(".")
    if top not in SWEEP_FIELDS:
        raise ConfigError(unknown_name("sweep field", top, SWEEP_FIELDS))
    if top == "base":
        if not rest:
            raise ConfigError("--set base=... replaces the whole config; set "
                              "base.<field>=value instead")
        override(sweep.base, rest, value)
    elif rest and top in ("grid", "hparams"):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) \
                or not value:
            raise ConfigError(f"--set {key}: an axis takes a non-empty list of "
                              f"values, e.g. --set '{key}=[...]', got {value!r}")
        axes = dict(sweep.get(top, {}) or {})
        axes[rest] = list(value)
        sweep[top] = axes
    elif rest:
        raise ConfigError(f"--set {key}: only base, grid and hparams have "
                          "sub-fields")
    else:
        sweep[top] = value


def expand_sweep(sweep) -> list[SweepGroup]:
    """The groups of a sweep, in grid order."""
    base = sweep.base
    grid = dict(sweep.get("grid", {}) or {})
    hparams = dict(sweep.get("hparams", {}) or {})
    for k in hparams:
        if k not in FLOAT_HPARAMS:
            raise ConfigError(f"hparams axis {k!r} is not a float hyper-parameter; "
                              f"vmappable axes are {FLOAT_HPARAMS}; put it in grid",
                              field=k)
    for k in grid:
        if k in FLOAT_HPARAMS:
            raise ConfigError(f"grid axis {k!r} is a float hyper-parameter; put it "
                              "in hparams so it is vmapped", field=k)
        if k not in base:
            raise ConfigError(unknown_name("config field (grid axis)", k,
                                           base.keys()), field=k)
    overrides = list(sweep.get("overrides", []) or [])
    exclude = [dict(m) for m in (sweep.get("exclude", []) or [])]
    seeds = sweep.get("seeds", [0])
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                       for x in seeds) or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers "
                          f">= 0, got {seeds!r}", field="seeds")
    seeds = list(seeds)
    for k in hparams:
        for v in hparams[k]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"hparams axis {k!r} must list numbers, got "
                                  f"{v!r}", field=k)
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
            _set(cfg, k, v, labels)
        for match, changes in overrides:
            if all(labels.get(k, cfg.get(k)) == v for k, v in dict(match).items()):
                for k, v in dict(changes).items():
                    _set(cfg, k, v, labels)
        groups.append(SweepGroup(cfg, points, seeds, labels))
    return groups


def _label(labels) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items())


def _set(cfg, key, value, labels) -> None:
    try:
        override(cfg, key, value)
    except ConfigError as e:
        raise ConfigError(f"group {_label(labels)}: {e}", field=e.field) from None


def validate_sweep(sweep) -> list[SweepGroup]:
    """Expands ``sweep`` and validates every group's config; returns the groups.

    Args:
      sweep: a sweep (:func:`load_sweep`).

    Returns:
      The sweep's groups in grid order (then its ``extra`` groups), each one
      compiled program.

    Raises:
      ConfigError: the first bad group, named by its grid values.

    Example:
      >>> import ml_collections
      >>> from byzjax.sim import get_config
      >>> sweep = ml_collections.ConfigDict({
      ...     "name": "demo", "base": get_config(), "seeds": [0, 1],
      ...     "grid": {"aggregator": ["mean", "trimmed_mean"]},
      ...     "hparams": {"beta": [0.5, 0.9]}})
      >>> [(g.labels["aggregator"], len(g.run_ids())) for g in validate_sweep(sweep)]
      [('mean', 4), ('trimmed_mean', 4)]
    """
    groups = expand_sweep(sweep)
    check_published(sweep)
    for g in groups:
        try:
            _ = g.spec  # resolving validates
            for p in g.points if g.points != [{}] else []:
                validate(_with_point(g.config, p))
        except ConfigError as e:
            raise ConfigError(f"group {_label(g.labels)}: {e}", field=e.field) from None
    return groups


def published_of(sweep) -> dict | None:
    """The sweep's ``published`` declaration as plain Python (checked), or None.

    Example:
      >>> published_of({"grid": {"attack": ["alie"]}, "published": {
      ...     "source": "Fabris (2023), Table 4.1", "metric": "final_accuracy",
      ...     "cells": [{"attack": "alie", "value": 0.777}]}})["cells"]
      [{'attack': 'alie', 'value': 0.777}]
    """
    check_published(sweep)
    pub = sweep.get("published", None)
    if pub is None:
        return None
    if isinstance(pub, ml_collections.ConfigDict):
        pub = pub.to_dict()
    return {"source": pub["source"], "metric": pub["metric"],
            "cells": [dict(c) for c in pub["cells"]]}


def check_published(sweep) -> None:
    """Checks a sweep's optional ``published`` field (see the module docstring).

    ``source`` a non-empty string, ``metric`` one of :data:`PUBLISHED_METRICS`,
    ``cells`` a non-empty list of dicts, each with a finite number ``value``
    and at least one other key, every other key a grid axis of the sweep with
    a string, number or bool value; no two cells with the same keys.

    Raises:
      ConfigError: one line saying what is wrong.
    """
    pub = sweep.get("published", None)
    if pub is None:
        return
    if isinstance(pub, ml_collections.ConfigDict):
        pub = pub.to_dict()

    def bad(what):
        return ConfigError(f"published: {what}", field="published")

    if not isinstance(pub, dict):
        raise bad(f"must be a dict with source, metric and cells, got "
                  f"{type(pub).__name__}")
    extra = sorted(set(pub) - {"source", "metric", "cells"})
    if extra:
        raise bad(f"unknown key {extra[0]!r}; the keys are source, metric, cells")
    if not isinstance(pub.get("source"), str) or not pub["source"].strip():
        raise bad("source must be a non-empty string naming the table, e.g. "
                  "'Fabris (2023), Table 4.1'")
    if pub.get("metric") not in PUBLISHED_METRICS:
        raise bad(f"metric must be one of {', '.join(PUBLISHED_METRICS)}, got "
                  f"{pub.get('metric')!r}")
    cells = pub.get("cells")
    if not isinstance(cells, (list, tuple)) or not cells:
        raise bad("cells must be a non-empty list of dicts")
    axes = set(dict(sweep.get("grid", {}) or {}))
    seen = set()
    for i, cell in enumerate(cells):
        if isinstance(cell, ml_collections.ConfigDict):
            cell = cell.to_dict()
        if not isinstance(cell, dict):
            raise bad(f"cell {i} must be a dict, got {type(cell).__name__}")
        value = cell.get("value")
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not value == value or value in (float("inf"), float("-inf"))):
            raise bad(f"cell {i} needs a finite number 'value', got {value!r}")
        keys = sorted(k for k in cell if k != "value")
        if not keys:
            raise bad(f"cell {i} names no grid axis (e.g. 'optimizer')")
        for k in keys:
            if k not in axes:
                raise bad(f"cell {i}: {unknown_name('grid axis', k, sorted(axes))}")
            if not isinstance(cell[k], (str, int, float, bool)):
                raise bad(f"cell {i}: {k} must be a string or number, got "
                          f"{cell[k]!r}")
        ident = tuple((k, cell[k]) for k in keys)
        if ident in seen:
            raise bad(f"cell {i} repeats {dict(ident)}")
        seen.add(ident)


def _with_point(config, point):
    cfg = ml_collections.ConfigDict(config.to_dict())
    for k, v in point.items():
        override(cfg, k, v)
    return cfg


def run_missing(group: SweepGroup, outdir: str, *, data=None, progress: bool = True,
                desc: str = "", on_chunk=None) -> tuple[bool, list[dict], int]:
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
            if data is None:
                data = load_sim_data(group.spec)
            elif isinstance(data, _LazyData):
                data = data.get()
            ckpt_root = os.path.join(outdir, "checkpoints")
            # Group the missing runs by point so each call vmaps point x seeds.
            by_point: dict[tuple, list[int]] = {}
            for p, s in missing:
                by_point.setdefault(tuple(sorted(p.items())), []).append(s)
            if len({tuple(v) for v in by_point.values()}) == 1:
                calls = [([dict(k) for k in by_point], next(iter(by_point.values())))]
            else:
                calls = [([dict(k)], seeds) for k, seeds in by_point.items()]
            for points, seeds in calls:
                part = SweepGroup(group.spec, points, seeds, group.labels)
                for rec in run_group(group.spec, seeds=seeds, hparam_points=points,
                                     outdir=runs_dir, data=data, progress=progress,
                                     desc=desc, checkpoint_dir=os.path.join(
                                         ckpt_root, part.group_id()),
                                     on_chunk=None if on_chunk is None else
                                     functools.partial(on_chunk, group.labels)):
                    done[rec["run_id"]] = rec
            with contextlib.suppress(OSError):
                os.rmdir(ckpt_root)  # only if no other group left one there
        return True, [done[rid] for _, _, rid in ids], len(missing)


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
              on_chunk=None) -> dict[str, Any]:
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

    Returns:
      ``{"programs", "runs", "wall_time_s", "total_runs"}``: the groups and
      runs this call computed, its wall time, and the sweep's number of runs.

    Raises:
      ConfigError: a bad group (named by its grid values) or a package one
        needs is missing.

    Example:
      >>> import ml_collections, tempfile
      >>> from byzjax.sim import get_config
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
    else:
        save_sweep(sweep, outdir)
    done = _store.load_records(runs_dir, warn=False)
    todo = [g for g in groups if any(rid not in done for _, _, rid in g.run_ids())]
    distributed.barrier("sweep listed")  # every process lists before any writes
    total_runs = sum(len(g.points) * len(g.seeds) for g in groups)
    n_missing = sum(rid not in done for g in todo for _, _, rid in g.run_ids())
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
    ran = programs = 0
    pending = list(todo)
    waiting_logged = False
    while pending:
        left = []
        for g in pending:
            before = set(_store.load_records(
                runs_dir, [rid for _, _, rid in g.run_ids()], warn=False))
            if len(before) == len(g.run_ids()):
                continue  # finished by another process
            c = g.spec
            dkey = (c.dataset, c.data_source, c.split, c.dirichlet_alpha,
                    c.similarity_gamma, c.split_seed, c.num_workers)
            data = data_cache.get(dkey)
            label = _label(g.labels)
            taken, _, computed = run_missing(
                g, outdir, data=data if data is not None else _LazyData(
                    c, dkey, data_cache),
                progress=progress, desc=label, on_chunk=on_chunk)
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


def save_sweep(sweep, outdir: str) -> str:
    """Writes ``sweep`` as standard JSON to ``outdir/sweep.json`` (atomically);
    returns the path."""
    import json

    body = sweep.to_dict() if hasattr(sweep, "to_dict") else dict(sweep)
    path = os.path.join(outdir, "sweep.json")
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(_store.sanitize(json.loads(json.dumps(
            body, default=lambda x: x.to_dict() if hasattr(x, "to_dict")
            else list(x) if isinstance(x, (tuple, set)) else str(x)))),
            fh, indent=1, allow_nan=False)
    os.replace(tmp, path)
    return path


class _LazyData:
    """Loads a group's data on first use (only when the lock was taken and runs
    are missing), keeping one dataset in memory at a time."""

    def __init__(self, config, dkey, cache):
        self.config, self.dkey, self.cache = config, dkey, cache

    def get(self):
        if self.dkey not in self.cache:
            self.cache.clear()
            self.cache[self.dkey] = load_sim_data(self.config)  # a RunSpec
        return self.cache[self.dkey]
