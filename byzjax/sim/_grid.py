"""Sweeps as groups: a sweep's grid expanded and checked, one group per program.

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

import hashlib
import itertools
import warnings

import ml_collections

from byzjax._registry import unknown_name
from byzjax.sim._errors import ConfigError
from byzjax.sim._fields import float_hparams
from byzjax.sim._files import SWEEP_FIELDS
from byzjax.sim._program import check_pipeline
from byzjax.sim._records import run_id, static_key
from byzjax.sim._spec import IgnoredFieldWarning, RunSpec, resolve, spec_for_points
from byzjax.sim._validate import ignored_fields, override

__all__ = ["SweepGroup", "expand_sweep", "validate_sweep", "set_sweep_field",
           "published_of", "check_published", "PUBLISHED_METRICS", "group_label"]

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
            self._spec = resolve(self.config, warn=False)
        return self._spec

    def run_ids(self):
        """``(point, seed, run_id)`` of every run, points outer, seeds inner."""
        return [(p, s, run_id(self.spec, s, dict(self.spec.hparams, **p)))
                for p in self.points for s in self.seeds]

    def group_id(self) -> str:
        """A stable name of the group (its lock and checkpoint folder)."""
        ids = sorted(rid for _, _, rid in self.run_ids())
        return hashlib.sha1(",".join(ids).encode()).hexdigest()[:16]


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


def _check_name(sweep) -> None:
    name = sweep.get("name", "sweep")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name must be a non-empty string (it names the results "
                          f"folder results/<name>), got {name!r}", field="name")
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ConfigError(f"name {name!r} must be a plain folder name, without "
                          "'/', '\\' or '..' (it names results/<name>)",
                          field="name")


def _check_axes(kind: str, axes: dict) -> None:
    for k, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
            raise ConfigError(f"{kind} axis {k!r} must be a list of values, got "
                              f"{values!r}", field=k)
        if not values:
            raise ConfigError(f"{kind} axis {k!r} is empty, which would run "
                              "nothing; give it at least one value or remove it",
                              field=k)
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{kind} axis {k!r} repeats a value: {list(values)!r}",
                              field=k)


def _check_matches(sweep, base) -> None:
    """``exclude`` and ``overrides`` entries must name config fields."""
    for i, m in enumerate(sweep.get("exclude", []) or []):
        m = dict(m)
        if not m:
            raise ConfigError(f"exclude entry {i} is empty, which excludes every "
                              "group; give it the grid values to leave out, e.g. "
                              "{'aggregator': 'krum'}", field="exclude")
        for k in m:
            if k not in base:
                raise ConfigError(f"exclude entry {i}: "
                                  + unknown_name("config field", k, base.keys()),
                                  field="exclude")
    for i, entry in enumerate(sweep.get("overrides", []) or []):
        try:
            match, changes = entry
        except (TypeError, ValueError):
            raise ConfigError(f"overrides entry {i} must be a (match, changes) "
                              f"pair of dicts, got {entry!r}",
                              field="overrides") from None
        for k in dict(match):
            if k not in base:
                raise ConfigError(f"overrides entry {i} (match): "
                                  + unknown_name("config field", k, base.keys()),
                                  field="overrides")
        if not dict(changes):
            raise ConfigError(f"overrides entry {i} changes nothing",
                              field="overrides")


def expand_sweep(sweep) -> list[SweepGroup]:
    """The groups of a sweep, in grid order (then its ``extra`` groups).

    Raises:
      ConfigError: a malformed sweep: an empty or repeated axis value, an
        ``exclude`` / ``overrides`` entry naming no config field or excluding
        everything, a bad name, a float axis in ``grid`` (or the reverse).
    """
    base = sweep.base
    _check_name(sweep)
    grid = dict(sweep.get("grid", {}) or {})
    hparams = dict(sweep.get("hparams", {}) or {})
    _check_axes("grid", grid)
    _check_axes("hparams", hparams)
    _check_matches(sweep, base)
    for k in hparams:
        if k not in float_hparams():
            raise ConfigError(f"hparams axis {k!r} is not a float hyper-parameter; "
                              f"vmappable axes are "
                              f"{', '.join(float_hparams())}; put it in grid",
                              field=k)
    for k in grid:
        if k in float_hparams():
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


def group_label(labels) -> str:
    """``"aggregator=krum attack=alie"``: a group's grid values as one label."""
    return " ".join(f"{k}={v}" for k, v in labels.items())


def _set(cfg, key, value, labels) -> None:
    try:
        override(cfg, key, value)
    except ConfigError as e:
        raise ConfigError(f"group {group_label(labels)}: {e}", field=e.field) from None


def validate_sweep(sweep, *, trace: bool = True) -> list[SweepGroup]:
    """Expands ``sweep`` and validates every group's config; returns the groups.

    Args:
      sweep: a sweep (:func:`load_sweep`).
      trace: also trace one round of each program on stand-in rows (no data,
        no compilation, about a quarter of a second a program), which finds
        what only the assembled pipeline refuses. ``False`` checks the
        configurations only, for a caller that reads the groups and runs
        nothing (counting a sweep's runs).

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
    ignored: dict[str, list[str]] = {}  # field -> labels of the groups
    checked: set[str] = set()
    for g in groups:
        try:
            spec = g.spec  # resolving validates
            for k in spec.ignored:
                ignored.setdefault(k, []).append(group_label(g.labels))
            dropped = [k for k in (g.points[0] if g.points else {})
                       if k in ignored_fields(_with_point(g.config, g.points[0]))]
            if dropped:  # an hparams axis this group does not read: run once
                for k in dropped:
                    ignored.setdefault(k, []).append(group_label(g.labels))
                points = []
                for p in g.points:
                    p = {k: v for k, v in p.items() if k not in dropped}
                    if p not in points:
                        points.append(p)
                g.points = points
            spec_for_points(spec, [dict(spec.hparams, **p) for p in g.points])
            if trace and static_key(spec) not in checked:  # one per program
                check_pipeline(spec)
                checked.add(static_key(spec))
        except ConfigError as e:
            raise ConfigError(f"group {group_label(g.labels)}: {e}",
                              field=e.field) from None
    for k, labels in ignored.items():
        shown = "; ".join(sorted(set(labels))[:3]) + (
            f"; ... ({len(set(labels))} groups)" if len(set(labels)) > 3 else "")
        warnings.warn(f"{k} is not read by the runs of {shown}: left at its default "
                      "there (out of their run ids, run once)", IgnoredFieldWarning,
                      stacklevel=2)
    unique: dict[tuple, SweepGroup] = {}
    for g in groups:  # groups that became the same runs once ignored fields left
        ids = tuple(sorted(rid for _, _, rid in g.run_ids()))
        if ids in unique:
            warnings.warn(f"groups {group_label(unique[ids].labels)} and "
                          f"{group_label(g.labels)} are the same runs (they differ "
                          "only in fields these runs do not read); running them "
                          "once", IgnoredFieldWarning, stacklevel=2)
            continue
        unique[ids] = g
    return list(unique.values())


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
