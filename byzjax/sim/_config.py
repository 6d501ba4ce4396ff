"""Simulation configuration: defaults, validation, static vs traced fields.

A config is an ``ml_collections.ConfigDict`` (Flax-examples style). Fields split
into *static* ones, which set shapes or choose code (dataset, model, n, f, rule,
attack, optimiser, batch size, rounds) and *traced* float hyper-parameters
(:data:`FLOAT_HPARAMS`), which are passed to the compiled program as arrays so a
whole grid of them can be vmapped in one program.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import math
import types
from typing import Any, Literal, Mapping

import ml_collections

from byzjax import aggregators, attacks, data, models, optim
from byzjax._registry import did_you_mean, unknown_name

__all__ = ["get_config", "FLOAT_HPARAMS", "OPTIMIZERS", "RESULT_NEUTRAL", "validate",
           "hparams_of", "coerce_field", "override", "check_environment", "ConfigError",
           "RunSpec", "resolve"]

#: Float hyper-parameters passed as traced arrays (vmappable).
FLOAT_HPARAMS = (
    "learning_rate",
    "beta",
    "b1",
    "b2",
    "eps",
    "weight_decay",
    "clip_norm",
    "attack_eps",
)

#: Optimisers the simulator knows (``byzjax.optim.OPTIMIZERS``, declared there).
OPTIMIZERS = optim.optimizer_names()

#: Fields that change how a run is executed, not its numbers: left out of
#: the run identifiers, so changing them does not re-run finished runs. (The
#: per-worker gradient strategies agree to 1e-5, not bit for bit.)
RESULT_NEUTRAL = ("checkpoint_every", "grad_strategy")

#: Config fields that feed a split's keywords (``byzjax.data.SPLITS``):
#: split -> {keyword: field}.
SPLIT_FIELDS = {"dirichlet": {"alpha": "dirichlet_alpha"},
                "gamma_similarity": {"gamma": "similarity_gamma"}}

#: Fields added after results existed, with their defaults: left out of run
#: identifiers while at the default, so records made before they existed stay
#: valid (a new field that can change results goes here with its default).
ID_DEFAULTS = {
    "similarity_gamma": 0.5,
    "momentum_init": 0.0,
    "momentum_bias_correction": False,
    "clip_point": "gradient",
    "attack_point": "sent",
}

DATA_SOURCES = ("auto", "offline", "tfds")
LR_SCHEDULES = ("constant", "step")
SHARDS = ("none", "runs", "workers")
RUN_BATCHINGS = ("auto", "vmap", "map")
MRA_SAFEGUARDS = ("", "clamp")
CLIP_POINTS = ("gradient", "sent")
ATTACK_POINTS = ("sent", "gradient")


class ConfigError(ValueError):
    """A bad configuration; the message says what is wrong and what to change.

    Attributes:
      field: the config field at fault, when there is one (used to point at
        the line of a config file that sets it).
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def get_config() -> ml_collections.ConfigDict:
    """The default config: Fabris 2023's MNIST homogeneous setting, with an MLP.

    Returns:
      A ``ConfigDict``; copy it and override fields for variants.
    """
    c = ml_collections.ConfigDict()
    # Data.
    c.dataset = "mnist"
    c.data_source = "offline"  # "offline" | "tfds" | "auto"
    # "homogeneous" | "dirichlet" | "label_sorted" | "gamma_similarity"
    c.split = "homogeneous"
    c.dirichlet_alpha = 0.1
    c.similarity_gamma = 0.5  # gamma_similarity: fraction of the data dealt i.i.d.
    c.split_seed = 0
    c.eval_size = 0  # 0: the whole test set
    # Model.
    c.model = "mlp"
    # Workers.
    c.num_workers = 15
    c.num_byzantine = 5  # declared f, given to the aggregator
    c.num_attackers = -1  # real number of attacking rows; -1: = num_byzantine
    # Robust aggregation.
    c.aggregator = "trimmed_mean"
    c.aggregator_kwargs = ml_collections.ConfigDict()
    c.preaggregator = ""  # "" | "nnm" | "bucketing" | "static_clipping"
    c.preaggregator_kwargs = ml_collections.ConfigDict()
    # Attack.
    c.attack = "alie"
    c.attack_kwargs = ml_collections.ConfigDict()
    c.attack_eps = -1.0  # < 0: the attack's default strength
    # Optimiser.
    c.optimizer = "resam"
    c.learning_rate = 0.75
    c.lr_schedule = "constant"  # "constant" | "step": lr / (1 + t // lr_decay_every)
    c.lr_decay_every = 50  # Fabris 2023's heterogeneous schedule: 0.75 / (1 + t // 50)
    c.beta = 0.99  # worker momentum (RESAM) or server momentum
    c.dampening = -1.0  # < 0: EMA form (dampening = beta); 0: m <- beta m + g
    c.nesterov = False
    # Worker momentum variants (byzjax.optim.worker_momentum): m_0 for every
    # coordinate (Fabris 2023 prints m_0 = 1 for RESAM), and Adam's bias
    # correction m / (1 - beta^t) of what a worker sends.
    c.momentum_init = 0.0
    c.momentum_bias_correction = False
    # Where per-worker clipping acts: "gradient" (before the worker transform,
    # RESAM) or "sent" (on the vector each worker sends, after momentum).
    c.clip_point = "gradient"
    # What the attack sees and replaces: "sent" (the vectors workers send, after
    # momentum) or "gradient" (the clipped honest gradients; the Byzantine
    # workers then run the worker transform on their crafted gradients).
    c.attack_point = "sent"
    c.b1 = 0.99
    c.b2 = 0.999
    c.eps = 1e-8
    c.mra_safeguard = ""  # "" (faithful: NaN on negative v*) | "clamp"
    c.weight_decay = 1e-4
    c.clip_norm = 2.0  # per-worker gradient clipping; <= 0 disables
    c.batch_size = 25
    # Devices: "none" (one device), "runs" (split seeds x hparam points over a
    # mesh) or "workers" (split the worker axis; n must divide evenly).
    c.shard = "none"
    c.num_devices = 0  # 0: every visible device
    # How a group's runs (seeds x float points) share one program: "vmap",
    # "map" (lax.map, one after another) or "auto" (map on CPU, vmap elsewhere).
    c.run_batching = "auto"
    # Per-worker gradients: "auto" (unrolled on CPU for CNNs, else vmap), "vmap",
    # "unrolled", "map" or "chunked:<c>" (byzjax.sim._train.resolve_grad_strategy).
    c.grad_strategy = "auto"
    # Schedule.
    c.num_rounds = 1000
    c.eval_every = 50
    # Checkpoint the simulator state every this many evaluation chunks (orbax;
    # a killed run resumes from the last one); 0: never.
    c.checkpoint_every = 10
    # Replicated parameter servers (byzjax.sim._servers, docs/SERVERS.md):
    # "single" (one server, the simulator above), "guanyu" or "liubei".
    c.server_protocol = "single"
    c.num_servers = 1
    c.num_byzantine_servers = 0  # single: 1 makes the one server Byzantine
    c.server_quorum = 0  # GuanYu q_ps; 0: the largest, num_servers - f_ps
    c.worker_quorum = 0  # GuanYu q_wr; 0: the largest, num_workers - f
    c.server_attack = "sign_flip"  # what Byzantine servers send (model attack)
    c.scatter_period = 10  # LiuBei T: a gather step every T iterations
    c.delay_distribution = "exponential"  # "exponential" | "uniform" | "zero"
    c.num_slow_servers = 0  # the first correct servers are slow machines
    c.num_slow_workers = 0  # the first correct workers are slow machines
    c.slow_factor = 10.0  # delay multiplier of the slow machines
    return c


#: Server fields left out of run identifiers while at their default, so that
#: runs of the single-server simulator keep the identifiers they had before
#: these fields existed.
SERVER_DEFAULTS = {
    "server_protocol": "single", "num_servers": 1, "num_byzantine_servers": 0,
    "server_quorum": 0, "worker_quorum": 0, "server_attack": "sign_flip",
    "scatter_period": 10, "delay_distribution": "exponential",
    "num_slow_servers": 0, "num_slow_workers": 0, "slow_factor": 10.0,
}
# Single-server runs keep the identifiers they had before the server fields.
ID_DEFAULTS.update(SERVER_DEFAULTS)


def hparams_of(config) -> dict[str, float]:
    """The traced float hyper-parameters of ``config`` as a dict of Python floats."""
    return {k: float(config[k]) for k in FLOAT_HPARAMS}


def num_attackers(config) -> int:
    """The real number of attacking rows (``num_attackers`` or ``num_byzantine``)."""
    a = int(config.num_attackers)
    return int(config.num_byzantine) if a < 0 else a


# ------------------------------------------------------------------- spec
@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A run config resolved once (:func:`resolve`): validated, typed, decoded.

    Everything below the command line takes a ``RunSpec``: names are canonical
    (registry names, not aliases), sentinels are ``None`` (``preaggregator=""``,
    ``dampening=-1``, ``attack_eps=-1``, ``clip_norm=0``, ``eval_size=0``,
    ``num_devices=0``, ``mra_safeguard=""``), ``num_attackers`` is the real
    count, and the ``*_kwargs`` are read-only dicts. Float hyper-parameters
    keep their config values in :attr:`hparams` (the traced defaults); their
    decoded attributes (``clip_norm``, ``attack_eps``) only say whether a stage
    is present. A field added to :func:`get_config` without an attribute here
    is read as is from :attr:`config`.

    Attributes:
      config: the validated config as plain JSON values, as given (records and
        run ids are made from it, so they do not depend on the decoding).
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

    def __getattr__(self, name: str):
        # Fields of get_config() without a typed attribute (see the docstring).
        config = self.__dict__.get("config", {})
        if name in config:
            return config[name]
        raise AttributeError(f"RunSpec has no field {name!r}")

    def __getitem__(self, name: str):
        # (code written against a ConfigDict: spec["field"], spec.get(...))
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def get(self, name: str, default=None):
        """``spec.<name>``, or ``default`` for a name that is not a field."""
        try:
            return getattr(self, name)
        except AttributeError:
            return default

    @property
    def hparams(self) -> dict[str, float]:
        """The float hyper-parameters (:data:`FLOAT_HPARAMS`), traced defaults."""
        return {k: float(self.config[k]) for k in FLOAT_HPARAMS}

    @property
    def num_evals(self) -> int:
        """Evaluations in a run (``num_rounds // eval_every``)."""
        return self.num_rounds // self.eval_every


#: Sentinel values of config fields, decoded to ``None`` in a :class:`RunSpec`.
_NONE_WHEN = {
    "preaggregator": lambda v: v == "",
    "mra_safeguard": lambda v: v == "",
    "dampening": lambda v: v < 0,
    "attack_eps": lambda v: v < 0,
    "clip_norm": lambda v: v <= 0,
    "eval_size": lambda v: v == 0,
    "num_devices": lambda v: v == 0,
}


def resolve(config) -> RunSpec:
    """Validates ``config`` once and decodes it into a :class:`RunSpec`.

    A ``RunSpec`` is returned unchanged, so functions taking either call this.

    Raises:
      ConfigError: as :func:`validate`.

    Example:
      >>> c = get_config()
      >>> c.aggregator, c.preaggregator, c.num_attackers = "cwtm", "", -1
      >>> spec = resolve(c)
      >>> spec.aggregator, spec.preaggregator, spec.num_attackers
      ('trimmed_mean', None, 5)
    """
    if isinstance(config, RunSpec):
        return config
    validate(config)
    plain = json.loads(json.dumps(config.to_dict(), default=str))
    values = {}
    for f in dataclasses.fields(RunSpec):
        if f.name == "config":
            continue
        v = config[f.name]
        if f.name in _KWARGS_FIELDS:
            v = types.MappingProxyType(dict(v))
        elif f.name in _NONE_WHEN and _NONE_WHEN[f.name](v):
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
    return RunSpec(config=types.MappingProxyType(plain), **values)


# ------------------------------------------------------------------ types
_KWARGS_FIELDS = ("aggregator_kwargs", "preaggregator_kwargs", "attack_kwargs")


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "dict"


_KIND_TEXT = {"bool": "true or false", "int": "an integer", "float": "a number",
              "str": "a string", "dict": "a dict of keyword arguments"}


def coerce_field(key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the default of field ``key``, or :class:`ConfigError`.

    Integers are accepted for float fields; ``"true"`` / ``"false"`` for
    booleans; nothing else is converted (``7.5`` is not an integer, ``"abc"``
    not a number).

    Example:
      >>> coerce_field("beta", 1, 0.9)
      1.0
      >>> coerce_field("num_workers", "seven", 15)
      Traceback (most recent call last):
      ...
      byzjax.sim._config.ConfigError: num_workers must be an integer, got 'seven'
    """
    kind = _kind(default)
    ok = _kind(value) == kind
    if kind == "float" and _kind(value) == "int":
        value, ok = float(value), True
    if kind == "bool" and isinstance(value, str) and value.lower() in ("true",
                                                                        "false"):
        value, ok = value.lower() == "true", True
    if kind == "dict" and isinstance(value, (dict, ml_collections.ConfigDict)):
        ok = True
    if not ok:
        raise ConfigError(f"{key} must be {_KIND_TEXT[kind]}, got {value!r}",
                          field=key)
    return value


def override(config, key: str, value: Any) -> None:
    """Sets field ``key`` of ``config`` (``"beta"``, ``"aggregator_kwargs.radius"``).

    The field must exist (unknown names get the closest valid ones) and the
    value must have its type (see :func:`coerce_field`); keywords of the
    ``*_kwargs`` fields are checked against the rule by :func:`validate`.

    Raises:
      ConfigError: unknown field or wrong type.

    Example:
      >>> c = get_config()
      >>> override(c, "aggregator_kwargs.radius", 10.0)
      >>> c.aggregator_kwargs.radius
      10.0
      >>> try:
      ...     override(c, "num_wrkers", 9)
      ... except ConfigError as e:
      ...     print(str(e).split(";")[0])
      unknown config field 'num_wrkers' (did you mean 'num_workers'?)
    """
    defaults = get_config()
    top, _, sub = key.partition(".")
    if top not in defaults:
        raise ConfigError(unknown_name("config field", top, defaults.keys()),
                          field=top)
    if not sub:
        value = coerce_field(top, value, defaults[top])
        target, name = config, top
    elif top in _KWARGS_FIELDS and "." not in sub:
        if top not in config:
            config[top] = ml_collections.ConfigDict()
        target, name = config[top], sub
    else:
        raise ConfigError(f"{key!r}: only {', '.join(_KWARGS_FIELDS)} have "
                          "sub-fields", field=top)
    try:
        target[name] = value
    except (TypeError, ValueError):
        raise ConfigError(f"{key} cannot be set to {value!r} (it is "
                          f"{target[name]!r})", field=top) from None


# ------------------------------------------------------------- validation
def validate(config) -> None:
    """Checks a whole run config before anything is loaded or compiled.

    Every field is checked for its name (unknown fields get the closest valid
    names), its type and its range; names (dataset, model, split, aggregator,
    attack, optimiser, ...) against their registries; rule keyword arguments
    against the rule's signature; ``(n, f)`` against each rule's requirement.

    Raises:
      ConfigError: (a ``ValueError``) with one line saying what to change.

    Example:
      >>> c = get_config()
      >>> c.learning_rate = -1.0
      >>> try:
      ...     validate(c)
      ... except ConfigError as e:
      ...     print(e)
      learning_rate must be a finite number > 0, got -1.0
    """
    defaults = get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"a run config must be an ml_collections.ConfigDict, got "
            f"{type(config).__name__}; start from byzjax.sim.get_config() and "
            "override fields")
    keys = set(config.keys())
    unknown = sorted(keys - set(defaults.keys()))
    if unknown:
        raise ConfigError(unknown_name("config field", unknown[0], defaults.keys()),
                          field=unknown[0])
    missing = sorted(set(defaults.keys()) - keys)
    if missing:
        raise ConfigError(
            f"config lacks fields {', '.join(missing)}; start from "
            "byzjax.sim.get_config() and override fields instead of building a "
            "config from scratch")
    for key in defaults.keys():
        coerce_field(key, config[key], defaults[key])
    try:
        _check_names(config)
        _check_ranges(config)
        _check_workers(config)
        _check_rule_kwargs(config)
        from byzjax.sim._servers import check_servers

        check_servers(config)
    except ConfigError:
        raise
    except ValueError as e:  # a registry's own (n, f) or name check
        raise ConfigError(str(e), field=_field_of(str(e))) from None


def _field_of(message: str) -> str | None:
    for key in ("preaggregator", "aggregator", "attack"):
        if message.startswith(f"unknown {key.replace('pre', 'pre-')} "):
            return key
    return "num_byzantine" if "num_byzantine" in message else None


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(unknown_name(key, value, [c for c in choices if c]),
                          field=key)


def _check_names(config) -> None:
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("split", config.split, tuple(data.SPLITS))
    _choice("data_source", config.data_source, DATA_SOURCES)
    _choice("lr_schedule", config.lr_schedule, LR_SCHEDULES)
    _choice("shard", config.shard, SHARDS)
    _choice("run_batching", config.run_batching, RUN_BATCHINGS)
    _choice("clip_point", config.clip_point, CLIP_POINTS)
    _choice("attack_point", config.attack_point, ATTACK_POINTS)
    if "grad_strategy" in config:
        from byzjax.sim._train import resolve_grad_strategy  # (_train imports this)

        try:
            resolve_grad_strategy(config.grad_strategy,
                                  num_workers=int(config.num_workers), backend="cpu")
        except ValueError as e:
            raise ConfigError(str(e), field="grad_strategy") from None
    if config.mra_safeguard not in MRA_SAFEGUARDS:
        raise ConfigError(f"unknown mra_safeguard {config.mra_safeguard!r}; use '' "
                          "(none) or 'clamp'", field="mra_safeguard")
    try:
        info = data.info(config.dataset)
    except ValueError:
        raise ConfigError(unknown_name("dataset", config.dataset, data.names()),
                          field="dataset") from None
    try:
        models.info(config.model)
    except ValueError:
        raise ConfigError(unknown_name("model", config.model, models.names()),
                          field="model") from None
    source = config.data_source
    if source == "offline" and not info.offline:
        raise ConfigError(f"dataset {info.name!r} has no offline source; set "
                          "data_source='tfds' (or 'auto')", field="data_source")
    if source == "tfds" and not info.tfds:
        raise ConfigError(f"dataset {info.name!r} is not in tensorflow-datasets; "
                          "set data_source='offline' (or 'auto')", field="data_source")


def check_environment(config) -> None:
    """Checks what a valid ``config`` needs from this machine (optional packages).

    Separate from :func:`validate`, which says whether a config makes sense
    anywhere; call both before loading data.

    Args:
      config: a run config or :class:`RunSpec`.

    Raises:
      ConfigError: a package the config needs is not installed.

    Example:
      >>> c = get_config()
      >>> c.dataset, c.data_source
      ('mnist', 'offline')
      >>> check_environment(c)  # offline MNIST needs no optional package
    """
    info = data.info(config.dataset)
    source = config.data_source
    if (source == "tfds" or (source == "auto" and not info.offline)) and (
            importlib.util.find_spec("tensorflow_datasets") is None):
        raise ConfigError(f"dataset {info.name!r} is read with tensorflow-datasets, "
                          "which is not installed: pip install 'byzjax[tfds]'")


def _check_ranges(config) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{key} must be {what}, got {config[key]!r}",
                              field=key)

    for key in ("num_rounds", "eval_every", "batch_size", "num_workers"):
        need(config[key] >= 1, key, "an integer >= 1")
    need(config.num_byzantine >= 0, "num_byzantine", "an integer >= 0")
    if config.num_rounds % config.eval_every:
        raise ConfigError(
            f"num_rounds ({config.num_rounds}) must be a multiple of eval_every "
            f"({config.eval_every}); e.g. num_rounds="
            f"{-(-config.num_rounds // config.eval_every) * config.eval_every}",
            field="num_rounds")
    need(config.eval_size >= 0, "eval_size", "an integer >= 0 (0: the whole test set)")
    need(config.split_seed >= 0, "split_seed", "an integer >= 0")
    need(config.num_devices >= 0, "num_devices", "an integer >= 0 (0: every device)")
    need(config.checkpoint_every >= 0, "checkpoint_every",
         "an integer >= 0 (evaluation chunks between checkpoints; 0: never)")
    if config.lr_schedule == "step":
        need(config.lr_decay_every >= 1, "lr_decay_every", "an integer >= 1")
    finite = {k: math.isfinite(config[k]) for k in FLOAT_HPARAMS + (
        "dirichlet_alpha", "similarity_gamma", "dampening", "momentum_init")}
    for key, ok in finite.items():
        need(ok, key, "a finite number")
    need(config.dirichlet_alpha > 0, "dirichlet_alpha", "a number > 0")
    need(0 <= config.similarity_gamma <= 1, "similarity_gamma", "in [0, 1]")
    need(config.learning_rate > 0, "learning_rate", "a finite number > 0")
    for key in ("beta", "b1", "b2"):
        need(0 <= config[key] < 1, key, "in [0, 1)")
    need(config.dampening == -1.0 or 0 <= config.dampening <= 1, "dampening",
         "in [0, 1], or -1 for the EMA form (dampening = beta)")
    need(config.eps > 0, "eps", "a number > 0")
    need(config.weight_decay >= 0, "weight_decay", "a number >= 0")
    need(config.clip_norm >= 0, "clip_norm",
         "a clipping radius >= 0 (0: no clipping)")
    need(config.attack_eps >= 0 or config.attack_eps == -1.0, "attack_eps",
         "a number >= 0, or -1 for the attack's default strength")
    if config.optimizer == "mra":
        need(config.clip_point == "gradient", "clip_point",
             "'gradient' for mra (its workers send moment pairs)")


def _check_workers(config) -> None:
    n, f = int(config.num_workers), int(config.num_byzantine)
    if not 2 * f < n:
        raise ConfigError(
            f"need 0 <= num_byzantine < num_workers / 2, got num_workers={n}, "
            f"num_byzantine={f}")
    attackers = num_attackers(config)
    if not (config.num_attackers == -1 or 0 <= attackers < n):
        raise ConfigError(
            f"num_attackers must be in [0, {n}) or -1 (= num_byzantine), got "
            f"{config.num_attackers}")
    m = n
    if config.preaggregator:
        aggregators.PREAGGREGATORS.check(config.preaggregator, num_workers=n,
                                         num_byzantine=f)
        if aggregators.PREAGGREGATORS.entry(config.preaggregator).name == "bucketing":
            s = config.preaggregator_kwargs.get("bucket_size", 2)
            if isinstance(s, int) and s >= 1:
                m = -(-n // s)
    aggregators.check(config.aggregator, num_workers=m, num_byzantine=f)
    attacks.ATTACKS.check(config.attack, num_workers=n, num_byzantine=attackers)


#: Keyword arguments the simulator passes itself (not from ``*_kwargs``).
_RESERVED = {"num_byzantine", "key", "center", "byzantine_own"}
#: Rule keyword arguments that must be > 0 when given.
_POSITIVE = {"bucket_size", "num_iterations", "num_neighbours", "num_selected",
             "radius", "max_norm", "tolerance", "scale"}


def _check_rule_kwargs(config) -> None:
    rules = [("aggregator", aggregators.AGGREGATORS, config.aggregator)]
    if config.preaggregator:
        rules.append(("preaggregator", aggregators.PREAGGREGATORS,
                      config.preaggregator))
    rules.append(("attack", attacks.ATTACKS, config.attack))
    for field, registry, name in rules:
        kwargs = dict(config[f"{field}_kwargs"])
        entry = registry.entry(name)
        params = list(inspect.signature(entry.fn).parameters.values())[1:]
        if any(p.kind is p.VAR_KEYWORD for p in params):
            accepted = None
        else:
            accepted = [p.name for p in params if p.name not in _RESERVED]
        if accepted is not None:
            for key in sorted(set(kwargs) - set(accepted)):
                close = did_you_mean(key, accepted)
                hint = (" (did you mean " + " or ".join(map(repr, close)) + "?)"
                        if close else "")
                msg = (f"{field} {entry.name!r} has no keyword {key!r}{hint}; its "
                       f"keywords: {', '.join(accepted)}")
                if not accepted:
                    msg = (f"{field} {entry.name!r} takes no keyword arguments; "
                           f"remove {field}_kwargs.{key}")
                raise ConfigError(msg, field=f"{field}_kwargs")
        for p in params:
            if (p.default is p.empty and p.kind is p.KEYWORD_ONLY
                    and p.name not in _RESERVED and p.name != "aggregator"
                    and p.name not in kwargs):
                raise ConfigError(f"{field} {entry.name!r} needs "
                                  f"{field}_kwargs.{p.name}; set it with --set "
                                  f"{field}_kwargs.{p.name}=...", field=field)
        for key, value in kwargs.items():
            if key in _POSITIVE and value is not None:
                bad = isinstance(value, bool) or not isinstance(value, (int, float))
                annotation = str(next((p.annotation for p in params
                                       if p.name == key), ""))
                if annotation.startswith("int") and not isinstance(value, int):
                    bad = True
                if bad or not value > 0:
                    kind = "an integer" if annotation.startswith("int") else "a number"
                    raise ConfigError(f"{field}_kwargs.{key} must be {kind} > 0, got "
                                      f"{value!r}", field=key)
