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
from byzjax.sim._errors import ConfigError
from byzjax.sim._fields import FIELDS, float_hparams, kwargs_fields
from byzjax.sim._validate import ignored_fields, num_attackers, validate

__all__ = ["RunSpec", "resolve", "spec_for_points", "IgnoredFieldWarning"]


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
      extra: the decoded values of fields added with
        :func:`~byzjax.sim.register_field` (read with :meth:`value`).
    """

    config: Mapping[str, Any]
    dataset: str
    data_source: Literal["auto", "offline", "tfds"]
    split: str
    dirichlet_alpha: float
    similarity_gamma: float
    label_sort_order: Literal["shuffled", "index"]
    split_among: Literal["all", "honest"]
    train_fraction: float
    split_seed: int
    server_data_size: int
    eval_size: int | None
    model: str
    init_seed: int | None
    num_workers: int
    num_byzantine: int
    num_attackers: int
    aggregator: str
    aggregator_kwargs: Mapping[str, Any]
    preaggregator: str | None
    preaggregator_kwargs: Mapping[str, Any]
    robust_layout: Literal["tree", "flat"]
    attack: str
    attack_kwargs: Mapping[str, Any]
    attack_eps: float | None
    optimizer: str
    learning_rate: float
    lr_schedule: Literal["constant", "step", "multistep"]
    lr_decay_every: int
    lr_milestones: str
    lr_decay_factor: float
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
    weight_decay_point: Literal["loss", "server"]
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
    liubei_filters: Literal["derived", "garfield"]
    delay_distribution: str
    num_slow_servers: int
    num_slow_workers: int
    slow_factor: float
    topology: str | None
    topology_degree: int
    topology_probability: float
    topology_seed: int
    gossip_steps: int
    attack_per_receiver: bool
    ignored: tuple[str, ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({}))

    def value(self, name: str) -> Any:
        """Field ``name``: its typed attribute, or the value of a field added
        with :func:`~byzjax.sim.register_field` (in :attr:`extra`).

        Raises:
          AttributeError: ``name`` is not a config field.
        """
        if name in self.extra:
            return self.extra[name]
        if name in _BUILTIN_NAMES:
            return getattr(self, name)
        raise AttributeError(f"{name!r} is not a config field")

    @property
    def hparams(self) -> dict[str, float]:
        """The float hyper-parameters (``FLOAT_HPARAMS``), the traced defaults."""
        return {k: float(self.config[k]) for k in float_hparams()}

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

    @property
    def peer_to_peer(self) -> bool:
        """Peer-to-peer learning (a ``topology``), no parameter server."""
        return self.topology is not None

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
        if f.name in kwargs_fields():
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
    extra = {k: values.pop(k) for k in list(values) if k not in _BUILTIN_NAMES}
    return RunSpec(config=types.MappingProxyType(plain), ignored=ignored,
                   extra=types.MappingProxyType(extra), **values)


def _ignored_message(config, ignored) -> str:
    return (f"not read by this run (aggregator {config.aggregator}, optimizer "
            f"{config.optimizer}, attack {config.attack}, preaggregator "
            f"{config.preaggregator or 'none'}, server_protocol "
            f"{config.server_protocol}): "
            f"{', '.join(ignored)}; left at their defaults and out of the run id")


#: Float fields whose off value removes a stage from the program: field ->
#: (is the stage on for this value, the off value, its meaning).
STAGE_FIELDS = {"attack_eps": (lambda v: v >= 0, -1.0, "the attack's default"),
                "clip_norm": (lambda v: v > 0, 0.0, "no clipping")}


def spec_for_points(spec: RunSpec, points) -> RunSpec:
    """The spec whose one program runs every hyper-parameter point of ``points``.

    Checks each point (float fields only, each in its range) and that it sets
    no float field the run does not read (``b1`` with ``dsgd``): such a point
    would be a second run id for the same computation. A stage the base
    config leaves off (``attack_eps=-1``: the attack's default strength;
    ``clip_norm=0``: no clipping) but the points turn on is compiled in, so
    the points' values reach the program; one program cannot hold both, so
    points may not mix a stage's off value with others.

    Args:
      spec: the group's spec.
      points: dicts of every float field (``spec.hparams`` updated).

    Returns:
      ``spec``, or ``spec`` with those stages on (same run ids: a run id holds
      the point's float values).

    Raises:
      ConfigError: one line saying what to change.

    Example:
      >>> from byzjax.sim import get_config
      >>> spec = resolve(get_config())            # attack_eps=-1: ALIE's default
      >>> points = [dict(spec.hparams, attack_eps=e) for e in (0.5, 1.0)]
      >>> spec.attack_eps, spec_for_points(spec, points).attack_eps
      (None, 0.5)
    """
    for p in points:
        unknown = sorted(set(p) - set(float_hparams()))
        if unknown:
            raise ConfigError(f"not float hyper-parameters: {', '.join(unknown)}; "
                              f"vmappable ones are {', '.join(float_hparams())}",
                              field=unknown[0])
        if p != spec.hparams:  # the point's values pass the same checks
            config = spec.to_config()
            config.update(p)
            validate(config)
            ignored = [k for k in ignored_fields(config) if k in p
                       and p[k] != spec.hparams[k]]
            if ignored:
                raise ConfigError(
                    f"a hyper-parameter point sets {', '.join(ignored)}, which "
                    f"this run does not read (optimizer {spec.optimizer}, attack "
                    f"{spec.attack}); it would only repeat the same run under "
                    "another id: remove it", field=ignored[0])
    change = {}
    for field, (on, off, meaning) in STAGE_FIELDS.items():
        states = {on(p[field]) for p in points}
        if len(states) > 1:
            raise ConfigError(
                f"the points mix {field}={off:g} ({meaning}) with other values; one "
                f"program cannot both have and lack that stage: put {field}'s "
                "off value in a separate group", field=field)
        if states == {True} and getattr(spec, field) is None:
            change[field] = next(p[field] for p in points)
        if states == {False} and getattr(spec, field) is not None:
            change[field] = off
    return spec.with_hparams(change) if change else spec


#: The built-in fields: the typed attributes of :class:`RunSpec`.
_BUILTIN_NAMES = frozenset(f.name for f in dataclasses.fields(RunSpec)) - {
    "config", "ignored", "extra"}
