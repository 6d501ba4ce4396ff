"""Runs -> cells: loading records, which runs may be pooled, seed statistics,
the code that made them, the order and names of what is shown.

A *cell* of a table is the runs sharing the values of its axes (optimizer,
attack, aggregator). Its runs are pooled (averaged over seeds) only when their
configurations are equal except for the seed (:func:`config_fields`): a cell
holding several configurations (a sweep re-run after its base was edited, a
vmapped learning-rate axis, a ``byzjax train`` with another ``n`` into the same
folder) keeps one group per configuration (:func:`config_groups`), each
labelled by the fields that differ (``learning_rate=0.02``), never an average.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import math
import os
from collections import defaultdict
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from byzjax import optim
from byzjax.aggregators import AGGREGATORS, PREAGGREGATORS
from byzjax.attacks import ATTACKS
from byzjax.sim import ConfigError, get_config, ignored_fields, load_records
from byzjax.sim._fields import id_defaults, result_neutral

#: The config fields whose values are registry names.
_REGISTRIES = {"aggregator": AGGREGATORS, "preaggregator": PREAGGREGATORS,
               "attack": ATTACKS}


def _entry(axis: str, value: Any):
    """The registry entry of ``value`` of field ``axis`` (aliases resolved),
    or None (not a registry field, or a name no longer registered)."""
    try:
        if axis == "optimizer":
            return optim.optimizer_entry(value)
        if axis in _REGISTRIES:
            return _REGISTRIES[axis].entry(value)
    except (ValueError, TypeError):
        pass
    return None


def short_name(value: Any, axis: str = "aggregator") -> str:
    """The short name tables use (the thesis's ``CWTM``, ``KRUM``, ...): the
    registry entry's ``short_name``, read live.

    Example:
      >>> short_name("trimmed_mean"), short_name("cwtm"), short_name("toy")
      ('CWTM', 'CWTM', 'toy')
    """
    entry = _entry(axis, value)
    return (entry.short_name if entry is not None and entry.short_name
            else str(value))


class _LiveNames(Mapping):
    """``{value: name}`` of one config field, read from its registry on every
    lookup (so rules registered later have their names)."""

    def __init__(self, axis: str, short: bool):
        self.axis, self.short = axis, short

    def __getitem__(self, value):
        if self.axis == "preaggregator" and value in ("", None):
            return "none"
        entry = _entry(self.axis, value)
        name = None if entry is None else (
            entry.short_name if self.short else entry.display_name)
        if not name:
            raise KeyError(value)
        return name

    def _names(self):
        if self.axis == "optimizer":
            return tuple(optim.optimizer_names())
        return _REGISTRIES[self.axis].names()

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())


#: Short names the thesis uses in its tables (aggregators), read live.
SHORT = _LiveNames("aggregator", short=True)

#: Names readers know, per config field (figures, pages; tables keep SHORT),
#: read live from the registries' ``display_name``.
NAMES = {axis: _LiveNames(axis, short=False)
         for axis in ("optimizer", "attack", "aggregator", "preaggregator")}


#: Axis titles and the labels of the per-evaluation metrics.
METRIC_NAMES = {
    "optimizer": "optimiser", "attack": "attack", "aggregator": "aggregator",
    "final_accuracy": "final test accuracy", "max_accuracy": "best test accuracy",
    "test_accuracy": "test accuracy", "test_loss": "test loss",
    "train_loss": "training loss",
    "agg_dist": "\u2016aggregate \u2212 honest mean\u2016",
    "honest_spread": "spread of honest vectors",
    "resilience": "resilience ratio \u03bb",
    "cosine": "cos(aggregate, honest mean)",
    "test_accuracy_min": "test accuracy, worst honest node",
    "test_accuracy_max": "test accuracy, best honest node",
    "consensus_distance": "consensus distance (RMS \u2016\u03b8\u1d62 \u2212 "
                          "\u03b8\u0304\u2016)",
}

#: Metric curves shown per cell, in this order, when a record has them.
CURVE_METRICS = ("test_accuracy", "test_loss", "train_loss", "resilience",
                 "agg_dist", "cosine", "honest_spread", "consensus_distance")

AXES = ("optimizer", "attack", "aggregator")


def axis_order(axis: str) -> tuple[str, ...]:
    """The report's order of the values of config field ``axis``: its
    registry's order (:attr:`byzjax._registry.Entry.order`), read live.

    Example:
      >>> axis_order("optimizer")[:3]
      ('dsgd', 'server_momentum', 'resam')
    """
    if axis == "optimizer":
        return tuple(sorted(optim.OPTIMIZERS,
                            key=lambda k: (optim.OPTIMIZERS[k].order, k)))
    if axis in _REGISTRIES:
        return _REGISTRIES[axis].ordered()
    return ()

#: Fields that change how a run executes, not its numbers: they never split a
#: cell (``byzjax.sim``'s result-neutral fields, batching and device placement).
NEUTRAL_FIELDS = tuple(dict.fromkeys(
    tuple(result_neutral()) + ("checkpoint_every", "grad_strategy", "run_batching",
                             "shard", "num_devices")))

#: The fields of a record's ``code`` entry (``byzjax.sim._store.code_fields``).
CODE_FIELDS = ("byzjax", "git_commit", "git_dirty", "jax", "jaxlib", "device_kind")


def display_name(axis: str, value: Any) -> str:
    """The name readers know for ``value`` of config field ``axis``.

    Example:
      >>> display_name("attack", "alie"), display_name("optimizer", "resam")
      ('A Little Is Enough', 'momentum at the workers (RESAM)')
      >>> display_name("aggregator", "trimmed_mean"), display_name("seed", 3)
      ('trimmed mean', '3')
    """
    names = NAMES.get(axis)
    return names.get(value, str(value)) if names is not None else str(value)


def load_runs(outdir: str) -> list[dict[str, Any]]:
    """All valid run records under ``outdir/runs`` (or ``outdir`` itself).

    Each file is checked (:func:`byzjax.sim.load_records`: complete,
    parseable, of its run id, checksum); a bad one is skipped with a warning
    naming it.

    Raises:
      ConfigError: ``outdir`` does not exist or is not a folder.
    """
    if not os.path.isdir(outdir):
        raise ConfigError(f"no results folder {outdir!r}; give the --outdir of a "
                          "byzjax train or sweep")
    runs_dir = os.path.join(outdir, "runs")
    if not glob.glob(os.path.join(glob.escape(runs_dir), "*.json")):
        runs_dir = outdir
    return list(load_records(runs_dir).values())


def runs_or_error(outdir: str) -> list[dict[str, Any]]:
    """:func:`load_runs`, failing with one line when there are none."""
    runs = load_runs(outdir)
    if not runs:
        raise ConfigError(f"no run records in {os.path.join(outdir, 'runs')!r} "
                          "(nothing finished yet?); run byzjax train or sweep with "
                          f"--outdir {outdir} first")
    return runs


def _cfg(run, axis):
    return (run.get("config") or {}).get(axis, "?")


def _key(run, axes):
    return tuple(_cfg(run, a) for a in axes)


def _num(x) -> float:
    """A record's number as a float; ``None`` (a non-finite value) is NaN."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _rank(v, axis: str):
    """Sort key of value ``v`` of field ``axis``: its registry order (aliases
    resolved), then values no registry knows, by name."""
    entry = _entry(axis, v)
    if entry is not None:
        return (0, entry.order, entry.name, str(v))
    return (1, 0, "", str(v))


def _order(values, axis: str):
    """``values`` of field ``axis`` in the report's order (:func:`_rank`)."""
    return sorted(values, key=lambda v: _rank(v, axis))


def _sorted_keys(keys, axes=AXES):
    return sorted(keys, key=lambda k: tuple(_rank(v, a) for a, v in zip(axes, k)))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = prefix + str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, name + "."))
        elif isinstance(v, (dict, list, tuple)):
            out[name] = json.dumps(v, sort_keys=True)
        else:
            out[name] = v
    return out


# ------------------------------------------------- configurations of runs
@functools.cache
def _defaults() -> dict[str, Any]:
    return {k: _canonical(v) for k, v in get_config().to_dict().items()}


def _canonical(v):
    """``v`` in a form where equal settings compare equal (``15 == 15.0``,
    nested dicts in key order)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, dict) or hasattr(v, "to_dict"):
        d = v.to_dict() if hasattr(v, "to_dict") else v
        return {str(k): _canonical(d[k]) for k in sorted(d, key=str)}
    if isinstance(v, (list, tuple)):
        return [_canonical(x) for x in v]
    return str(v)


def config_fields(run: dict, *, ignore: Sequence[str] = ()) -> dict[str, Any]:
    """The configuration of ``run`` as far as it decides its results.

    ``record["config"]`` with the run's own float hyper-parameters
    (``record["hparams"]``) over it; a field the record lacks (written before
    the field existed) at its default in :func:`byzjax.sim.get_config`;
    without the seed, :data:`NEUTRAL_FIELDS`, ``ignore`` and the fields
    added after results existed when at their default (as run ids leave them
    out). Numbers are floats, so ``15`` and ``15.0`` are one setting.

    Example:
      >>> old = {"config": {"learning_rate": 0.5}, "seed": 0}
      >>> new = {"config": {"learning_rate": 0.5, "nesterov": False,
      ...                   "checkpoint_every": 3}, "seed": 1}
      >>> config_fields(old) == config_fields(new)
      True
      >>> config_fields({"config": {"learning_rate": 0.5},
      ...                "hparams": {"learning_rate": 0.02}})["learning_rate"]
      0.02
    """
    d = dict(_defaults())
    d.update({k: _canonical(v) for k, v in (run.get("config") or {}).items()})
    d.update({k: _canonical(v) for k, v in (run.get("hparams") or {}).items()})
    for k in _ignored(d):  # fields the run did not read: at their defaults
        d[k] = _canonical(_defaults()[k])
    for k in NEUTRAL_FIELDS + ("seed",) + tuple(ignore):
        d.pop(k, None)
    # Fields added after results existed, at their default, are left out (as
    # from run ids): adding such a field changes no configuration's identity.
    for k, v in id_defaults().items():
        if k in d and d[k] == _canonical(v):
            del d[k]
    return d


def _ignored(d: dict) -> tuple[str, ...]:
    """:func:`byzjax.sim.ignored_fields` of a record's config (empty if the
    config is not valid today, e.g. a rule since renamed)."""
    config = get_config()
    try:
        for k in config:
            if k in d:
                v = d[k]
                if isinstance(config[k], int) and not isinstance(config[k], bool) \
                        and isinstance(v, float) and v.is_integer():
                    v = int(v)  # (numbers are canonical floats here)
                config[k] = v
        return ignored_fields(config)
    except (ValueError, TypeError, KeyError):
        return ()


def config_id(run: dict, *, ignore: Sequence[str] = ()) -> str:
    """A 12-hex-digit hash of :func:`config_fields` (the seed left out): runs
    of one configuration share it.

    Example:
      >>> a = {"config": {"num_workers": 15}, "seed": 0}
      >>> config_id(a) == config_id(dict(a, seed=1))
      True
      >>> config_id(a) == config_id({"config": {"num_workers": 17}})
      False
    """
    text = json.dumps(config_fields(run, ignore=ignore), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def show_value(v) -> str:
    """A config value as labels print it (``15``, ``0.02``, ``True``).

    Example:
      >>> show_value(15.0), show_value(0.02), show_value({"own": True})
      ('15', '0.02', '{"own": true}')
    """
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


class ConfigGroup(NamedTuple):
    """The runs (seeds) of one configuration inside a displayed cell.

    Attributes:
      config_id: :func:`config_id` of its runs.
      label: the fields that differ from the cell's other configurations
        with this group's values (``"learning_rate=0.02"``); ``""`` when the
        cell holds only this configuration.
      differs: those fields and this group's values.
      runs: its run records.
    """

    config_id: str
    label: str
    differs: dict
    runs: list


_MISSING = "<missing>"


def _differing(fields: list[dict]) -> list[str]:
    keys = sorted(set().union(*fields)) if fields else []
    return [k for k in keys if len({json.dumps(f.get(k, _MISSING), sort_keys=True)
                                    for f in fields}) > 1]


def _sort_value(v):
    return (0, v, "") if isinstance(v, float) else (1, 0.0, show_value(v))


def split_configs(runs: Sequence[dict], *, ignore: Sequence[str] = ()
                  ) -> list[ConfigGroup]:
    """``runs`` (one displayed cell) split into one :class:`ConfigGroup` per
    configuration, labelled by the fields that differ between them.

    Example:
      >>> runs = [{"config": {"learning_rate": lr}, "seed": s}
      ...         for lr in (0.5, 0.02) for s in (0, 1)]
      >>> [(g.label, len(g.runs)) for g in split_configs(runs)]
      [('learning_rate=0.02', 2), ('learning_rate=0.5', 2)]
    """
    by: dict[str, list] = defaultdict(list)
    fields = {}
    for r in runs:
        cid = config_id(r, ignore=ignore)
        by[cid].append(r)
        if cid not in fields:
            fields[cid] = config_fields(r, ignore=ignore)
    if len(by) == 1:
        (cid, rs), = by.items()
        return [ConfigGroup(cid, "", {}, rs)]
    diff = _differing(list(fields.values()))
    groups = []
    for cid, rs in by.items():
        differs = {k: fields[cid].get(k, _MISSING) for k in diff}
        label = ", ".join(f"{k}={show_value(v)}" for k, v in differs.items())
        groups.append(ConfigGroup(cid, label, differs, rs))
    return sorted(groups, key=lambda g: tuple(_sort_value(v)
                                              for v in g.differs.values()))


def config_groups(runs: Iterable[dict], *, axes: Sequence[str] = AXES
                  ) -> dict[tuple, list[ConfigGroup]]:
    """The runs per cell of ``axes``, each cell split by configuration
    (:func:`split_configs`)."""
    cells: dict[tuple, list] = defaultdict(list)
    for r in runs:
        cells[_key(r, axes)].append(r)
    return {k: split_configs(rs) for k, rs in cells.items()}


def labelled(value: str, label: str) -> str:
    """``value`` followed by a configuration's label in brackets, if any."""
    return f"{value} ({label})" if label else value


# ----------------------------------------------------------- seed statistics
def _seed_order(r):
    s = r.get("seed")
    return (s is None, _num(s) if s is not None else 0.0, str(r.get("run_id", "")))


def mean_of_rounded(values: Iterable[float], digits: int = 3) -> float:
    """The mean of ``values`` each rounded to ``digits`` decimals first (how a
    published table may have averaged printed per-seed values); a non-finite
    value counts as 0, as in every mean of the report.

    Example:
      >>> mean_of_rounded([0.9514, 0.5994])   # 0.951 and 0.599
      0.775
      >>> (0.9514 + 0.5994) / 2                # the plain mean
      0.7754
      >>> mean_of_rounded([0.12349, 0.12349], digits=4)
      0.1235
    """
    vals = [round(v, digits) if math.isfinite(v) else 0.0
            for v in (_num(x) for x in values)]
    if not vals:
        return math.nan
    return round(float(np.mean(vals)), digits + 6)


def seed_stats(runs: Sequence[dict], metric: str = "final_accuracy"
               ) -> dict[str, Any]:
    """Mean, std, count, divergences and per-seed values of ``metric`` over
    ``runs`` (one configuration's seeds). A non-finite value (a diverged run)
    counts as 0, as the thesis counts a run that ends in NaN.

    Returns:
      ``{"mean", "std", "count", "diverged", "per_seed": [{"seed", "value"}]}``
      (per-seed values in seed order).
    """
    rs = list(runs)
    vals = np.asarray([_num(r.get(metric)) for r in rs], np.float64)
    vals = np.where(np.isfinite(vals), vals, 0.0)
    order = sorted(range(len(rs)), key=lambda i: _seed_order(rs[i]))
    return {"mean": float(vals.mean()) if len(rs) else math.nan,
            "std": float(vals.std()) if len(rs) else math.nan,
            "count": len(rs),
            "diverged": sum(bool(r.get("diverged")) for r in rs),
            "per_seed": [{"seed": rs[i].get("seed"), "value": float(vals[i])}
                         for i in order]}


def cell_stats(runs: Iterable[dict], *, axes=AXES,
               metric: str = "final_accuracy") -> dict[tuple, dict[str, Any]]:
    """Mean, std, count, divergences and per-seed values of ``metric`` per
    cell of ``axes``; runs of different configurations are never pooled.

    A non-finite value (a diverged run) counts as 0, as the thesis counts a
    run that ends in NaN. Each cell: :func:`seed_stats` of its runs plus
    ``config_id``, ``conflict`` (the cell holds several configurations),
    ``differs`` (the fields that differ between them) and ``configs`` (one
    :func:`seed_stats` per configuration, with its ``label``, ``config_id``
    and ``runs``). A conflicting cell's ``mean``, ``std`` and ``config_id``
    are NaN / None and its ``per_seed`` empty: read its ``configs``.

    Example:
      >>> runs = [{"config": {"aggregator": "mean"}, "final_accuracy": a,
      ...          "diverged": a is None} for a in (0.8, 0.6, None)]
      >>> s = cell_stats(runs, axes=("aggregator",))[("mean",)]
      >>> round(s["mean"], 4), s["count"], s["diverged"], s["conflict"]
      (0.4667, 3, 1, False)
      >>> runs[0]["config"]["num_workers"] = 30   # another configuration
      >>> s = cell_stats(runs, axes=("aggregator",))[("mean",)]
      >>> s["conflict"], s["mean"], [c["label"] for c in s["configs"]]
      (True, nan, ['num_workers=15', 'num_workers=30'])
    """
    out = {}
    for k, groups in config_groups(runs, axes=axes).items():
        configs = []
        for g in groups:
            st = seed_stats(g.runs, metric)
            st.update(label=g.label, config_id=g.config_id, differs=g.differs,
                      runs=g.runs)
            configs.append(st)
        if len(configs) == 1:
            cell = {k2: v for k2, v in configs[0].items()
                    if k2 not in ("label", "differs", "runs")}
        else:
            cell = {"mean": math.nan, "std": math.nan, "config_id": None,
                    "count": sum(c["count"] for c in configs),
                    "diverged": sum(c["diverged"] for c in configs),
                    "per_seed": []}
        cell.update(conflict=len(configs) > 1,
                    differs=list(configs[0]["differs"]), configs=configs)
        out[k] = cell
    return out


def per_seed_text(per_seed: Sequence[dict], digits: int = 3) -> str:
    """Per-seed values as tables print them, in seed order: ``0.952, 0.599``.

    Example:
      >>> per_seed_text([{"seed": 0, "value": 0.9516}, {"seed": 1, "value": 0.5994}])
      '0.952, 0.599'
    """
    return ", ".join(f"{p['value']:.{digits}f}" for p in per_seed)


# ------------------------------------------------------- code of the runs
def code_key(code: dict | None) -> tuple | None:
    """What makes two code versions different results-wise: git commit,
    byzjax version (for installs without git), jax and jaxlib."""
    if not code:
        return None
    return tuple(code.get(k) for k in ("git_commit", "byzjax", "jax", "jaxlib"))


def code_versions(runs: Iterable[dict]) -> list[dict[str, Any]]:
    """The code versions ``runs`` were made with: one entry per distinct
    ``record["code"]`` (:data:`CODE_FIELDS`) with its number of ``runs``;
    runs of records made before the code was recorded are one entry whose
    fields are all None.

    Example:
      >>> code = {"byzjax": "0.3", "git_commit": "abc", "git_dirty": False,
      ...         "jax": "0.10.2", "jaxlib": "0.10.2", "device_kind": "cpu"}
      >>> [(v["git_commit"], v["runs"]) for v in code_versions(
      ...     [{"code": code}, {"code": code}, {}])]
      [('abc', 2), (None, 1)]
    """
    counts: dict[str, dict] = {}
    for r in runs:
        code = r.get("code") or {}
        entry = {k: code.get(k) for k in CODE_FIELDS}
        key = json.dumps(entry, sort_keys=True, default=str)
        counts.setdefault(key, dict(entry, runs=0))["runs"] += 1
    return sorted(counts.values(), key=lambda e: (e["git_commit"] is None,
                                                  -e["runs"], str(e["git_commit"])))


def merge_code_versions(lists: Iterable[Sequence[dict]]) -> list[dict[str, Any]]:
    """:func:`code_versions` entries of several cells summed into one list."""
    counts: dict[str, dict] = {}
    for entries in lists:
        for e in entries:
            entry = {k: e.get(k) for k in CODE_FIELDS}
            key = json.dumps(entry, sort_keys=True, default=str)
            counts.setdefault(key, dict(entry, runs=0))["runs"] += e.get("runs", 0)
    return sorted(counts.values(), key=lambda e: (e["git_commit"] is None,
                                                  -e["runs"], str(e["git_commit"])))


def code_warning(versions: Sequence[dict]) -> str:
    """One line when ``versions`` (:func:`code_versions`) mix code versions
    (git commit, byzjax, jax or jaxlib) or include runs of unknown code;
    else ``""``.

    Example:
      >>> print(code_warning([{"git_commit": None, "byzjax": None, "jax": None,
      ...                      "jaxlib": None, "runs": 3}]))
      warning: 3 runs of unknown code (recorded before records said which code
      made them)
    """
    known = {code_key(v) for v in versions if v.get("git_commit") or v.get("byzjax")
             or v.get("jax")}
    unknown = sum(v["runs"] for v in versions if not (
        v.get("git_commit") or v.get("byzjax") or v.get("jax")))
    parts = []
    if len(known) > 1:
        parts.append(f"runs from {len(known)} different code versions (git commit "
                     "or jax / jaxlib differ)")
    if unknown:
        parts.append(f"{unknown} run{'' if unknown == 1 else 's'} of unknown code "
                     "(recorded before records said which code made them)")
    return "warning: " + "; ".join(parts) if parts else ""


def code_line(version: dict) -> str:
    """One code version as a line: ``byzjax 0.3 (git abc1234, dirty), jax
    0.10.2, jaxlib 0.10.2, cpu: 12 runs``."""
    n = version.get("runs", 0)
    runs = f"{n} run{'' if n == 1 else 's'}"
    if not (version.get("git_commit") or version.get("byzjax") or version.get("jax")):
        return f"unknown code: {runs}"
    git = version.get("git_commit")
    where = f" (git {git[:12]}{', dirty' if version.get('git_dirty') else ''})" \
        if git else ""
    return (f"byzjax {version.get('byzjax')}{where}, jax {version.get('jax')}, "
            f"jaxlib {version.get('jaxlib')}, {version.get('device_kind')}: {runs}")


def code_lines(runs: Iterable[dict]) -> list[str]:
    """The lines under a table: which code made its runs, then the warning
    of :func:`code_warning` if any."""
    versions = code_versions(runs)
    lines = ["code: " + "; ".join(code_line(v) for v in versions)]
    warning = code_warning(versions)
    return lines + ([warning] if warning else [])
