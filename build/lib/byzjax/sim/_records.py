"""Run identifiers and run records: what identifies a run and what is kept of it.

A run is identified by its config (the fields that can change its numbers,
``byzjax.sim._fields``) with its float hyper-parameters and seed: :func:`run_id`;
the programs a config compiles to by :func:`static_key`. A record is one run's
config, curves and summary, written as checked JSON by :mod:`byzjax.sim._store`.
"""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np

from byzjax.sim import _store
from byzjax.sim._fields import float_hparams, id_defaults, result_neutral
from byzjax.sim._spec import RunSpec

__all__ = ["run_id", "static_key", "write_json_atomic", "params_sha256",
           "plain_config", "to_python"]


def static_key(config) -> str:
    """A stable hash of the static part of ``config`` (what compiles separately)."""
    d = {k: v for k, v in _id_fields(config).items() if k not in float_hparams()}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def run_id(config, seed: int, hparams: dict[str, float]) -> str:
    """A stable identifier of one run: static config, seed and float values."""
    d = _id_fields(config)
    d.update({k: float(v) for k, v in hparams.items()})
    d["seed"] = int(seed)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _id_fields(config) -> dict:
    """The fields that identify a run: all but :data:`RESULT_NEUTRAL` ones and
    :data:`ID_DEFAULTS` fields at their default (ids made before such a field
    existed stay valid)."""
    neutral, defaults = result_neutral(), id_defaults()
    return {k: v for k, v in plain_config(config).items()
            if k not in neutral and not (k in defaults and v == defaults[k])}


def write_json_atomic(path: str, record: dict) -> None:
    """Writes a run record to ``path`` atomically, as standard JSON with a
    checksum (see :func:`byzjax.sim._store.write_record`)."""
    _store.write_record(path, record)


def params_sha256(params, num_runs: int) -> list[str]:
    """sha256 of each run's final parameters (leaves in tree order, raw bytes)."""
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(
        jax.device_get(params))]
    out = []
    for r in range(num_runs):
        h = hashlib.sha256()
        for leaf in leaves:
            h.update(np.ascontiguousarray(leaf[r]).tobytes())
        out.append(h.hexdigest())
    return out


def to_python(x):
    """A host array as a Python number or (nested) list."""
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()


def plain_config(config) -> dict:
    """A config or :class:`~byzjax.sim.RunSpec` as plain JSON values."""
    if isinstance(config, RunSpec):
        return dict(config.config)
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(d, default=str))
