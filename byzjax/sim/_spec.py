"""``RunSpec``: a run config resolved once, fully typed (third layer of ``byzjax.sim``).

:func:`resolve` validates a config (:func:`~byzjax.sim.validate`), leaves the
fields the run would not read at their defaults (one warning line, so they
never enter a run id), and decodes it into a frozen :class:`RunSpec`: canonical
registry names, sentinels as ``None``, the real attacker count. Every layer
above (the programs, the runner, the sweeps) takes a ``RunSpec``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import warnings
from typing import Any, Literal, Mapping

import ml_collections

from byzjax import aggregators, attacks, data, models, optim
from byzjax.sim._fields import FIELDS, FLOAT_HPARAMS, KWARGS_FIELDS
from byzjax.sim._validate import ignored_fields, num_attackers, validate

__all__ = ["RunSpec", "resolve", "IgnoredFieldWarning"]


class IgnoredFieldWarning(UserWarning):
    """A config sets fields its run does not read; they are left at their
    defaults (and so out of the run id)."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A run config resolved once (:func:`resolve`): validated, typed, decoded.

    One attribute per config field (``byzjax.sim._fields.FIELDS``; a test
    checks they agree). Names are canonical (registry names, not aliases),
    sentinels are ``None`` (``preaggregator=""``, ``dampening=-1``,
    ``attack_eps=-1``, ``clip_norm=0``, ``eval_size=0``, ``num_devices=0``,
    ``mra_safeguard=""``), ``num_attackers`` is the real count, and the
    ``*_kwargs`` are read-only dicts. Float hyper-parameters keep their config
    values in :attr:`hparams` (the traced defaults); their decoded attributes
    (``clip_norm``, ``attack_eps``) only say whether a stage is present.

    Attributes:
      config: the validated config as plain JSON values (records and run ids
        are made from it, so they do not depend on the decoding); fields the
        run does not read are at their defaults.
      ignored: the fields the given config set that the run does not read
        (reset to their defaults in :attr:`config`).
    """

    config: Mapping[str, Any]
    dataset: str
    data_source: Literal["auto", "offline", "tfds"]
    split: str
    dirichlet_alpha: float
    similarity_gamma: float
    split_seed: int
    eval_size: int | None
    model: str
    num_workers: int
    num_byzantine: int
    num_attackers: int
    aggregator: str
    aggregator_kwargs: Mapping[str, Any]
    preaggregator: str | None
    preaggregator_kwargs: Mapping[str, Any]
    attack: str
    attack_kwargs: Mapping[str, Any]
    attack_eps: float | None
    optimizer: str
    learning_rate: float
    lr_schedule: Literal["constant", "step"]
    lr_decay_every: int
    beta: float
    dampening: float | None
    nesterov: bool
    momentum_init: float
    momentum_bias_correction: bool
    clip_point: Literal["gradient", "sent"]
    attack_point: Literal["sent", "gradient"]
    b1: float
    b2: float
    eps: float
    mra_safeguard: Literal["clamp"] | None
    weight_decay: float
    clip_norm: float | None
    batch_size: int
    shard: Literal["none", "runs", "workers"]
    num_devices: int | None
    run_batching: Literal["auto", "vmap", "map"]
    grad_strategy: str
    num_rounds: int
    eval_every: int
    checkpoint_every: int
    server_protocol: Literal["single", "guanyu", "liubei"]
    num_servers: int
    num_byzantine_servers: int
    server_quorum: int
    worker_quorum: int
    server_attack: str
    scatter_period: int
    delay_distribution: str
    num_slow_servers: int
    num_slow_workers: int
    slow_factor: float
    ignored: tuple[str, ...] = ()

    @property
    def hparams(self) -> dict[str, float]:
        """The float hyper-parameters (``FLOAT_HPARAMS``), the traced defaults."""
        return {k: float(self.config[k]) for k in FLOAT_HPARAMS}

    @property
    def num_evals(self) -> int:
        """Evaluations in a run (``num_rounds // eval_every``)."""
        return self.num_rounds // self.eval_every

    @property
    def num_honest(self) -> int:
        """Rows the honest workers send (``num_workers - num_attackers``)."""
        return self.num_workers - self.num_attackers

    @property
    def replicated_servers(self) -> bool:
        """GuanYu, LiuBei, or one Byzantine server: not the plain single server."""
        return self.server_protocol != "single" or self.num_byzantine_servers > 0

    def to_config(self) -> ml_collections.ConfigDict:
        """The config this spec was resolved from (ignored fields at defaults)."""
        return ml_collections.ConfigDict(json.loads(json.dumps(dict(self.config))))

    def with_hparams(self, point: Mapping[str, float]) -> "RunSpec":
        """This spec with float fields set to ``point``'s values, resolved again.

        The runner uses it when a point enables a stage the base config leaves
        off (``attack_eps`` or ``clip_norm`` swept from their off value), so
        that the swept value reaches the program. Run ids do not change: a
        run id always holds the point's float values.
        """
        config = self.to_config()
        for k, v in point.items():
            config[k] = float(v)
        return resolve(config, warn=False)


def resolve(config, *, warn: bool = True) -> RunSpec:
    """Validates ``config`` once and decodes it into a :class:`RunSpec`.

    A ``RunSpec`` is returned unchanged. Fields the run would not read
    (:func:`~byzjax.sim.ignored_fields`: ``b1`` with ``dsgd``,
    ``preaggregator_kwargs`` without a pre-aggregator, ...) are reset to their
    defaults, so they never make a second run id for the same computation,
    with one :class:`IgnoredFieldWarning` line when ``warn``.

    Raises:
      ConfigError: as :func:`~byzjax.sim.validate`.

    Example:
      >>> from byzjax.sim import get_config
      >>> c = get_config()
      >>> c.aggregator, c.preaggregator, c.num_attackers = "cwtm", "", -1
      >>> spec = resolve(c)
      >>> spec.aggregator, spec.preaggregator, spec.num_attackers
      ('trimmed_mean', None, 5)
    """
    if isinstance(config, RunSpec):
        return config
    validate(config)
    ignored = ignored_fields(config)
    plain = json.loads(json.dumps(config.to_dict(), default=str))
    if ignored:
        for key in ignored:
            default = FIELDS[key].default
            plain[key] = {} if FIELDS[key].kind == "dict" else default
        if warn:
            warnings.warn(_ignored_message(config, ignored), IgnoredFieldWarning,
                          stacklevel=2)
    values: dict[str, Any] = {}
    for f in FIELDS.values():
        v = plain[f.name]
        if f.name in KWARGS_FIELDS:
            v = types.MappingProxyType(dict(v))
        elif f.none_when is not None and f.none_when(v):
            v = None
        values[f.name] = v
    values["num_attackers"] = num_attackers(config)
    values["dataset"] = data.info(config.dataset).name
    values["model"] = models.info(config.model).name
    values["aggregator"] = aggregators.AGGREGATORS.entry(config.aggregator).name
    if config.preaggregator:
        values["preaggregator"] = aggregators.PREAGGREGATORS.entry(
            config.preaggregator).name
    values["attack"] = attacks.entry(config.attack).name
    values["optimizer"] = optim.optimizer_entry(config.optimizer).name
    return RunSpec(config=types.MappingProxyType(plain), ignored=ignored, **values)


def _ignored_message(config, ignored) -> str:
    return (f"not read by this run (optimizer {config.optimizer}, attack "
            f"{config.attack}, preaggregator {config.preaggregator or 'none'}, "
            f"server_protocol {config.server_protocol}): "
            f"{', '.join(ignored)}; left at their defaults and out of the run id")
