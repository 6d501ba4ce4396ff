"""Streaming the per-chunk metrics of ``train`` and ``sweep`` to metric writers.

The simulator evaluates every ``eval_every`` rounds (one evaluation chunk);
after each chunk :class:`ChunkLogger` writes every run's metrics (test
accuracy and loss, training loss, the round diagnostics) to one writer per run,
so a run can be watched while it trains (``tensorboard --logdir DIR``).

A writer is any object with the interface of CLU's ``MetricWriter`` (the
writers Flax users know): ``write_scalars(step, scalars)``, ``flush()`` and
``close()``. Two kinds are built in (:func:`make_writer`):

* ``"tensorboard"``: TensorBoard event files written by tensorboardX (no
  TensorFlow needed; ``pip install 'byzjax[tensorboard]'``);
* ``"clu"``: ``clu.metric_writers.create_default_writer`` (needs ``clu`` and
  TensorFlow).

Example:
  >>> class Memory:  # any writer with CLU's MetricWriter interface
  ...     def __init__(self): self.rows = []
  ...     def write_scalars(self, step, scalars): self.rows.append((step, scalars))
  ...     def flush(self): pass
  ...     def close(self): pass
  >>> writers = {}
  >>> log = ChunkLogger(lambda name: writers.setdefault(name, Memory()))
  >>> log({"optimizer": "dsgd"}, 20, {"test_accuracy": [0.5, 0.7],
  ...     "round": [20, 20]}, [{"seed": 0, "hparams": {}}, {"seed": 1, "hparams": {}}])
  >>> sorted(writers)
  ['optimizer=dsgd,seed=0', 'optimizer=dsgd,seed=1']
  >>> writers["optimizer=dsgd,seed=1"].rows
  [(20, {'eval/test_accuracy': 0.7})]
"""

from __future__ import annotations

import importlib
import math
import os
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from byzjax.sim._errors import ConfigError

__all__ = ["ChunkLogger", "TensorBoardWriter", "make_writer", "make_chunk_logger",
           "KINDS", "tag_of"]

#: The writers ``--log`` accepts.
KINDS = ("none", "tensorboard", "clu")

_DIAGNOSTICS = ("agg_dist", "honest_spread", "resilience", "cosine")


def tag_of(name: str) -> str:
    """The TensorBoard tag of a metric: ``eval/...`` for the evaluation,
    ``train/...`` for the training loss, ``diagnostics/...`` for the round
    diagnostics.

    Example:
      >>> tag_of("test_accuracy"), tag_of("train_loss"), tag_of("resilience")
      ('eval/test_accuracy', 'train/train_loss', 'diagnostics/resilience')
    """
    if name in _DIAGNOSTICS:
        return "diagnostics/" + name
    if name.startswith("train"):
        return "train/" + name
    return "eval/" + name


class TensorBoardWriter:
    """A CLU-style metric writer on a tensorboardX ``SummaryWriter``.

    Args:
      logdir: folder of the event file (created).
    """

    def __init__(self, logdir: str):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:

            raise ConfigError("--log tensorboard needs tensorboardX: pip install "
                              "'byzjax[tensorboard]' (or pip install "
                              "tensorboardX)") from None
        self._writer = SummaryWriter(logdir=logdir, flush_secs=10)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, float(value), global_step=int(step))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def make_writer(kind: str, logdir: str):
    """A metric writer of ``kind`` (``"tensorboard"`` or ``"clu"``) on ``logdir``.

    Raises:
      ConfigError: an unknown kind, or its package is not installed.
    """
    os.makedirs(logdir, exist_ok=True)
    if kind == "tensorboard":
        return TensorBoardWriter(logdir)
    if kind == "clu":
        try:
            from clu import metric_writers
        except ImportError as e:
            raise ConfigError(f"--log clu needs clu and TensorFlow ({e}); pip "
                              "install clu tensorflow, or use --log "
                              "tensorboard") from None
        return metric_writers.create_default_writer(logdir, asynchronous=False)
    raise ConfigError(f"unknown --log {kind!r}; choose one of {', '.join(KINDS)}")


def _run_name(labels: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in labels.items()]
    parts += [f"{k}={v:g}" for k, v in sorted((run.get("hparams_varied") or {})
                                              .items())]
    parts.append(f"seed={run['seed']}")
    return re.sub(r"[^A-Za-z0-9=.,_+-]", "_", ",".join(parts))


class ChunkLogger:
    """The per-chunk callback of :func:`byzjax.sim.run_group`: writes each
    run's metrics to its own writer (one TensorBoard run per simulator run).

    Args:
      factory: ``name -> writer``; ``name`` is the run's label
        (``aggregator=mean,attack=alie,optimizer=dsgd,seed=0`` in a sweep,
        ``seed=0`` for ``train``).
    """

    def __init__(self, factory: Callable[[str], Any]):
        self.factory = factory
        self.writers: dict[str, Any] = {}

    def __call__(self, labels: Mapping[str, Any], step: int,
                 metrics: Mapping[str, Sequence], runs: Sequence[Mapping]) -> None:
        """Writes chunk ``metrics`` (each ``[len(runs)]``) at round ``step``.

        ``labels`` name the group (its grid values); each of ``runs`` has
        ``seed`` and ``hparams`` (the hyper-parameters that differ between the
        group's runs are added to its name).
        """
        varied = _varied([r.get("hparams") or {} for r in runs])
        for i, run in enumerate(runs):
            name = _run_name(labels, dict(run, hparams_varied={
                k: (run.get("hparams") or {})[k] for k in varied}))
            writer = self.writers.get(name)
            if writer is None:
                writer = self.writers[name] = self.factory(name)
            scalars = {}
            for key, values in metrics.items():
                if key in ("round", "diverged_round"):
                    continue
                try:  # a vector metric (per class): one scalar per entry
                    entries = np.asarray(values[i], np.float64).reshape(-1)
                except (TypeError, ValueError, IndexError):
                    continue
                vector = np.ndim(values[i]) > 0
                for c, v in enumerate(entries.tolist()):
                    tag = f"{tag_of(key)}/{c}" if vector else tag_of(key)
                    scalars[tag] = v if math.isfinite(v) else math.nan
            writer.write_scalars(int(step), scalars)
            writer.flush()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()


def _varied(hparams: list[Mapping[str, Any]]) -> list[str]:
    keys = sorted({k for h in hparams for k in h})
    return [k for k in keys if len({h.get(k) for h in hparams}) > 1]


def make_chunk_logger(kind: str, logdir: str) -> ChunkLogger | None:
    """The :class:`ChunkLogger` of ``--log kind`` writing under ``logdir``
    (one sub-folder per run), or None for ``"none"``. The writer's package is
    checked here, before any data is loaded."""
    if kind in (None, "", "none"):
        return None
    _require(kind)
    return ChunkLogger(lambda name: make_writer(kind, os.path.join(logdir, name)))


def _require(kind: str) -> None:
    """Raises ConfigError when ``kind``'s package cannot be imported."""
    need = {"tensorboard": ("tensorboardX", "pip install 'byzjax[tensorboard]'"),
            "clu": ("clu.metric_writers", "pip install clu tensorflow")}
    if kind not in need:
        raise ConfigError(f"unknown --log {kind!r}; choose one of "
                          f"{', '.join(KINDS)}")
    module, hint = need[kind]
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"--log {kind} needs {module.split('.')[0]} ({e}); "
                          f"{hint}") from None
