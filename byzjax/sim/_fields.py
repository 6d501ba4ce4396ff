"""The run config's fields, each declared once: the bottom layer of ``byzjax.sim``.

:data:`FIELDS` holds one :class:`Field` per config field: its default (whose
type is the field's type), its help text, its static choices or range, whether
it is *traced* (a float hyper-parameter passed to the compiled program as an
array, so sweeps can vmap it), how it enters run ids, the sentinel decoded to
``None`` in a :class:`~byzjax.sim.RunSpec`, and when a run reads it. Everything
else is made from this table: :func:`get_config`, :data:`FLOAT_HPARAMS`,
:data:`RESULT_NEUTRAL`, :data:`ID_DEFAULTS`, the command line's help, the range
checks of :func:`~byzjax.sim.validate`, the typed ``RunSpec``.

This module imports neither JAX nor the rule registries: the choices that come
from a registry (aggregator, attack, ...) are checked by the validation layer.
Adding a config field is one :class:`Field` here (plus the code that reads
it); ``docs/ARCHITECTURE.md`` says where.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal

import ml_collections

from byzjax._registry import unknown_name
from byzjax.sim._errors import ConfigError

__all__ = ["Field", "FIELDS", "get_config", "float_hparams", "result_neutral",
           "id_defaults", "kwargs_fields", "register_field", "unregister_field",
           "SPLIT_FIELDS", "check_field_ranges", "parse_milestones", "coerce_field",
           "parse_grad_strategy", "GRAD_STRATEGIES"]

RunId = Literal["always", "never", "unless_default"]


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


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field.

    Attributes:
      name: the field (``"num_workers"``).
      default: its default; the default's type is the field's type (a float
        field accepts integers; ``{}`` marks a ``*_kwargs`` dict).
      help: what it means, with units in words (``byzjax train --help``).
      choices: the allowed values of a string field with fixed choices, or
        ``None`` (free, or checked against a registry by the validation).
      check: ``value -> bool``, the field's own range (``None``: any value of
        its type); cross-field rules live in the validation layer.
      must: what ``check`` asks for, completing "``name`` must be ...".
      traced: a float hyper-parameter given to the program as a (vmappable)
        array rather than compiled in.
      run_id: ``"always"`` in run ids; ``"never"`` (changes how a run executes,
        not its numbers); ``"unless_default"`` (added after results existed:
        left out of ids at its default, so older ids stay valid).
      none_when: the sentinel value(s) decoded to ``None`` in a ``RunSpec``.
      flag: the name of its option of ``byzjax train`` (``--lr``), if any.
    """

    name: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], bool] | None = None
    must: str = ""
    traced: bool = False
    run_id: RunId = "always"
    none_when: Callable[[Any], bool] | None = None
    flag: str | None = None

    @property
    def kind(self) -> str:
        """``"bool"``, ``"int"``, ``"float"``, ``"str"`` or ``"dict"``."""
        return _kind(self.default)


def _finite(lo=None, hi=None, *, lo_open=False, hi_open=False):
    def check(v):
        if not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        if hi is not None and (v >= hi if hi_open else v > hi):
            return False
        return True

    return check


def _at_least(lo):
    return lambda v: v >= lo


#: Per-worker gradient strategies (field ``grad_strategy``).
GRAD_STRATEGIES = ("auto", "vmap", "unrolled", "map", "chunked:<c>")


def parse_grad_strategy(strategy: str) -> str:
    """``strategy`` normalised, or ``ValueError`` if it is not one of
    :data:`GRAD_STRATEGIES` (``"chunked:<c>"`` with ``c`` a positive integer).

    Example:
      >>> parse_grad_strategy(" Chunked:4 ")
      'chunked:4'
    """
    s = str(strategy).strip().lower()
    if s in ("auto", "vmap", "unrolled", "map"):
        return s
    if s.startswith("chunked:") and s[8:].isdigit() and int(s[8:]) > 0:
        return s
    raise ValueError(
        f"unknown grad_strategy {strategy!r}; choose auto, vmap, unrolled, map "
        "or chunked:<c> (c a positive integer, e.g. chunked:5)")


def _is_grad_strategy(value) -> bool:
    try:
        parse_grad_strategy(value)
    except ValueError:
        return False
    return True


_F = Field

#: Values of config field ``topology`` (``byzjax.topology.TOPOLOGIES``; no
#: import here, this layer has no JAX: ``tests/test_p2p.py`` checks they agree).
TOPOLOGY_CHOICES = ("", "complete", "random_subset", "ring", "torus", "regular",
                    "erdos_renyi")
_INT1 = dict(check=_at_least(1), must="an integer >= 1")
_INT0 = dict(check=_at_least(0), must="an integer >= 0")
_UNIT = dict(check=_finite(0.0, 1.0, hi_open=True), must="in [0, 1)")

#: Every config field, in the order of :func:`get_config`.
FIELDS: dict[str, Field] = {f.name: f for f in (
    # ---- data
    _F("dataset", "mnist", "dataset name: mnist, fashion_mnist, cifar10, cifar100, "
       "digits or synthetic", flag="dataset"),
    _F("data_source", "offline", "where the data comes from: offline (files "
       "fetched by scripts/fetch_data.sh), tfds (tensorflow-datasets) or auto "
       "(offline, else tfds)", choices=("auto", "offline", "tfds"),
       flag="data_source"),
    _F("split", "homogeneous", "how the training set is divided over workers: "
       "homogeneous, dirichlet, label_sorted or gamma_similarity", flag="split"),
    _F("dirichlet_alpha", 0.1, "concentration of the dirichlet split (smaller: "
       "more heterogeneous workers)", check=_finite(0.0, lo_open=True),
       must="a number > 0"),
    _F("similarity_gamma", 0.5, "fraction of each worker's data drawn uniformly "
       "in the gamma_similarity split (1: homogeneous, 0: sorted)",
       check=_finite(0.0, 1.0), must="in [0, 1]", run_id="unless_default"),
    _F("label_sort_order", "shuffled", "order inside a class of the label-sorted "
       "splits (label_sorted, gamma_similarity): shuffled, or index (ByzFL: by "
       "dataset index)", choices=("shuffled", "index"), run_id="unless_default"),
    _F("split_among", "all", "workers the training set is divided among: all "
       "(each its own shard), or honest (ByzFL: the honest workers only; each "
       "Byzantine worker copies an honest shard, read only by label flip)",
       choices=("all", "honest"), run_id="unless_default"),
    _F("train_fraction", 1.0, "fraction of the training set the workers divide "
       "(ByzFL's size_train_set: the rest, drawn with split_seed, is its "
       "validation set, which byzjax holds out and does not evaluate)",
       check=_finite(0.0, 1.0, lo_open=True), must="in (0, 1]",
       run_id="unless_default"),
    _F("split_seed", 0, "seed of the division of the training set over workers",
       **_INT0),
    _F("server_data_size", 0, "training examples held out as the server's own "
       "root dataset (FLTrust's reference update), drawn with split_seed and "
       "given to no worker; 0: no server data", run_id="unless_default",
       **_INT0),
    _F("eval_size", 0, "test examples per evaluation; 0: the whole test set",
       check=_at_least(0), must="an integer >= 0 (0: the whole test set)",
       none_when=lambda v: v == 0),
    # ---- model
    _F("model", "mlp", "model name: mlp, mnist_cnn, cifar_cnn, wide_resnet; "
       "ByzFL's fc_mnist, cnn_mnist, logreg_mnist, cnn_cifar, resnet18 ... "
       "resnet152",
       flag="model"),
    _F("init_seed", -1, "seed of the model's initial parameters; -1: drawn "
       "from each run's seed (every seed its own start). ByzFL's benchmark "
       "builds its model before it sets the training seed, so its training "
       "seeds share one start drawn with the data-distribution seed: its "
       "importer sets this to that seed", check=_at_least(-1),
       must="an integer >= 0, or -1 (drawn from each run's seed)",
       none_when=lambda v: v < 0, run_id="unless_default"),
    # ---- workers
    _F("num_workers", 15, "number of workers n, honest and Byzantine together",
       flag="num_workers", **_INT1),
    _F("num_byzantine", 5, "declared number of Byzantine workers f, given to the "
       "aggregator (0 <= f < n/2)", flag="num_byzantine", **_INT0),
    _F("num_attackers", -1, "real number of attacking workers (-1: as many as "
       "num_byzantine)", flag="num_attackers"),
    # ---- robust aggregation
    _F("aggregator", "trimmed_mean", "robust aggregation rule, e.g. trimmed_mean, "
       "krum, mda, geometric_median", flag="aggregator"),
    _F("aggregator_kwargs", {}, "keyword arguments of the aggregator"),
    _F("preaggregator", "", "pre-aggregation applied before the aggregator: nnm, "
       "bucketing, static_clipping, arc, or '' for none", flag="preaggregator",
       none_when=lambda v: v == ""),
    _F("preaggregator_kwargs", {}, "keyword arguments of the pre-aggregation"),
    _F("robust_layout", "tree", "how the attack and the robust rules see a "
       "worker's vector: tree (leaf by leaf) or flat (one row of all its "
       "parameters, as ByzFL; the same rules, sums over coordinates in another "
       "order, so the last bits differ; compiles faster for models of many "
       "leaves; not read in peer-to-peer learning)", choices=("tree", "flat"),
       run_id="unless_default"),
    # ---- attack
    _F("attack", "alie", "attack of the Byzantine workers, e.g. alie, foe, "
       "sign_flip, label_flip, none", flag="attack"),
    _F("attack_kwargs", {}, "keyword arguments of the attack"),
    _F("attack_eps", -1.0, "attack strength (the attack's strength keyword: "
       "ALIE's z, FoE's eps, ...); -1: the attack's default",
       check=lambda v: math.isfinite(v) and (v >= 0 or v == -1.0),
       must="a number >= 0, or -1 for the attack's default strength",
       traced=True, none_when=lambda v: v < 0),
    # ---- optimiser
    _F("optimizer", "resam", "the optimiser (byzjax.optim.OPTIMIZERS): dsgd, "
       "server_momentum, resam, dra or mra", flag="optimizer"),
    _F("learning_rate", 0.75, "learning rate, step size per round (> 0)",
       check=_finite(0.0, lo_open=True), must="a finite number > 0", traced=True,
       flag="lr"),
    _F("lr_schedule", "constant", "constant; step: lr / (1 + round // "
       "lr_decay_every); or multistep: lr * lr_decay_factor ** (number of "
       "lr_milestones <= round) (PyTorch's MultiStepLR, ByzFL)",
       choices=("constant", "step", "multistep")),
    _F("lr_decay_every", 50, "rounds per step of the step schedule"),
    _F("lr_milestones", "", "rounds at which the multistep schedule multiplies "
       "the learning rate by lr_decay_factor, comma-separated increasing "
       "integers ('100,200')", check=lambda v: parse_milestones(v) is not None,
       must="comma-separated increasing integers >= 1, like '100,200'",
       run_id="unless_default"),
    _F("lr_decay_factor", 0.1, "factor of the multistep schedule at each "
       "milestone (PyTorch's gamma)", check=_finite(0.0, 1.0, lo_open=True),
       must="in (0, 1]", run_id="unless_default"),
    _F("beta", 0.99, "momentum coefficient in [0, 1), no unit (worker momentum "
       "for resam, server momentum for server_momentum)", traced=True,
       flag="beta", **_UNIT),
    _F("dampening", -1.0, "momentum dampening; -1: EMA form (dampening = beta); "
       "0: m <- beta m + g",
       check=lambda v: math.isfinite(v) and (v == -1.0 or 0 <= v <= 1),
       must="in [0, 1], or -1 for the EMA form (dampening = beta)",
       none_when=lambda v: v < 0),
    _F("nesterov", False, "Nesterov momentum (True / False)"),
    _F("momentum_init", 0.0, "initial value of every worker momentum coordinate "
       "(m_0)", check=_finite(), must="a finite number", run_id="unless_default"),
    _F("momentum_bias_correction", False, "send m / (1 - beta^t) (True / False)",
       run_id="unless_default"),
    _F("clip_point", "gradient", "where per-worker clipping acts: gradient "
       "(before the worker stage) or sent (after it)",
       choices=("gradient", "sent"), run_id="unless_default"),
    _F("attack_point", "sent", "what the attack replaces: sent (the vectors "
       "workers send) or gradient (the clipped gradients)",
       choices=("sent", "gradient"), run_id="unless_default"),
    _F("b1", 0.99, "decay rate of Adam's first moment (DRA, MRA)", traced=True,
       **_UNIT),
    _F("b2", 0.999, "decay rate of Adam's second moment (DRA, MRA)", traced=True,
       **_UNIT),
    _F("eps", 1e-8, "Adam's epsilon (DRA, MRA)", check=_finite(0.0, lo_open=True),
       must="a number > 0", traced=True),
    _F("mra_safeguard", "", "'' (faithful: NaN on a negative second moment) or "
       "clamp", choices=("", "clamp"), none_when=lambda v: v == ""),
    _F("weight_decay", 1e-4, "L2 regularisation coefficient",
       check=_finite(0.0), must="a number >= 0", traced=True),
    _F("weight_decay_point", "loss", "where weight decay acts: loss (an L2 term "
       "of every worker's loss, so in what workers send) or server (ByzFL, "
       "PyTorch SGD's weight_decay: added to the aggregate, weight_decay * "
       "params, before the server's step)", choices=("loss", "server"),
       run_id="unless_default"),
    _F("clip_norm", 2.0, "per-worker gradient clipping, maximum L2 norm; 0: off",
       check=_finite(0.0), must="a clipping radius >= 0 (0: no clipping)",
       traced=True, none_when=lambda v: v <= 0),
    _F("batch_size", 25, "examples per worker per round", flag="batch_size",
       **_INT1),
    # ---- devices and execution (not the numbers)
    _F("shard", "none", "device sharding: none, runs (seeds x points) or workers",
       choices=("none", "runs", "workers")),
    _F("num_devices", 0, "devices used; 0: every visible device",
       check=_at_least(0), must="an integer >= 0 (0: every device)",
       none_when=lambda v: v == 0),
    _F("run_batching", "auto", "how a group's runs share one program: auto, vmap "
       "or map", choices=("auto", "vmap", "map")),
    _F("grad_strategy", "auto", "per-worker gradients: auto, vmap, unrolled, map "
       "or chunked:<c>", check=_is_grad_strategy,
       must="auto, vmap, unrolled, map or chunked:<c> (c a positive integer)",
       run_id="never"),
    # ---- schedule
    _F("num_rounds", 1000, "training rounds, one aggregated step each (a multiple "
       "of eval_every)", flag="rounds", **_INT1),
    _F("eval_every", 50, "rounds between test-set evaluations (one evaluation "
       "chunk; progress, checkpoints and --log follow it)", flag="eval_every",
       **_INT1),
    _F("checkpoint_every", 10, "evaluation chunks between orbax checkpoints; 0: "
       "never", check=_at_least(0),
       must="an integer >= 0 (evaluation chunks between checkpoints; 0: never)",
       run_id="never"),
    # ---- replicated parameter servers (docs/SERVERS.md)
    _F("server_protocol", "single", "parameter servers: single, guanyu or liubei "
       "(docs/SERVERS.md)", choices=("single", "guanyu", "liubei"),
       run_id="unless_default"),
    _F("num_servers", 1, "number of parameter-server replicas",
       run_id="unless_default", **_INT1),
    _F("num_byzantine_servers", 0, "number of Byzantine server replicas "
       "(single: 1 makes the one server Byzantine)", run_id="unless_default",
       **_INT0),
    _F("server_quorum", 0, "GuanYu's server quorum q_ps; 0: the largest, "
       "num_servers - num_byzantine_servers", run_id="unless_default", **_INT0),
    _F("worker_quorum", 0, "GuanYu's worker quorum q_wr; 0: the largest, "
       "num_workers - num_byzantine", run_id="unless_default", **_INT0),
    _F("server_attack", "sign_flip", "what Byzantine servers send (an attack "
       "applied to models)", run_id="unless_default"),
    _F("scatter_period", 10, "LiuBei's T: iterations between two gather steps",
       run_id="unless_default", **_INT1),
    _F("liubei_filters", "derived", "LiuBei's filters: derived (byzjax's "
       "thresholds, acted on) or garfield (the authors' public code: its "
       "thresholds and pull schedule, verdicts recorded, never acted on; "
       "docs/SERVERS.md)", choices=("derived", "garfield"),
       run_id="unless_default"),
    _F("delay_distribution", "exponential", "per-message delays: exponential, "
       "uniform or zero", run_id="unless_default"),
    _F("num_slow_servers", 0, "correct servers that are slow machines",
       run_id="unless_default", **_INT0),
    _F("num_slow_workers", 0, "correct workers that are slow machines",
       run_id="unless_default", **_INT0),
    _F("slow_factor", 10.0, "delay multiplier of the slow machines (>= 1)",
       check=_finite(1.0), must="a finite number >= 1", run_id="unless_default"),
    # ---- peer-to-peer learning (docs/PEER_TO_PEER.md)
    _F("topology", "", "peer-to-peer learning: who hears whom (complete, "
       "random_subset, ring, torus, regular, erdos_renyi); '' for a parameter "
       "server", choices=TOPOLOGY_CHOICES, none_when=lambda v: v == "",
       run_id="unless_default", flag="topology"),
    _F("topology_degree", 0, "neighbours per node of the ring (even; 0: 2) or of "
       "the random regular graph (required)", run_id="unless_default", **_INT0),
    _F("topology_probability", 0.5, "edge probability of the erdos_renyi graph",
       check=_finite(0.0, 1.0, lo_open=True), must="in (0, 1]",
       run_id="unless_default"),
    _F("topology_seed", 0, "seed of the random graphs (regular, erdos_renyi)",
       run_id="unless_default", **_INT0),
    _F("gossip_steps", 1, "exchange-and-aggregate rounds per local step "
       "(peer-to-peer)", run_id="unless_default", **_INT1),
    _F("attack_per_receiver", False, "peer-to-peer: each Byzantine node crafts a "
       "vector per receiver from what that receiver hears (True / False)",
       run_id="unless_default"),
)}

#: The built-in float hyper-parameters, in the order records list them.
_BUILTIN_TRACED = ("learning_rate", "beta", "b1", "b2", "eps", "weight_decay",
                   "clip_norm", "attack_eps")
assert set(_BUILTIN_TRACED) == {f.name for f in FIELDS.values() if f.traced}


def float_hparams() -> tuple[str, ...]:
    """The traced float hyper-parameters (vmappable), registered ones included.

    Example:
      >>> float_hparams()[:3]
      ('learning_rate', 'beta', 'b1')
    """
    return _BUILTIN_TRACED + tuple(f.name for f in FIELDS.values()
                                   if f.traced and f.name not in _BUILTIN_TRACED)


def result_neutral() -> tuple[str, ...]:
    """Fields that change how a run executes, not its numbers (out of run ids)."""
    return tuple(f.name for f in FIELDS.values() if f.run_id == "never")


def id_defaults() -> dict[str, Any]:
    """Fields left out of run ids while at their default (added after results
    existed, so the ids made before them stay valid), with those defaults."""
    return {f.name: f.default for f in FIELDS.values()
            if f.run_id == "unless_default"}


def kwargs_fields() -> tuple[str, ...]:
    """The ``*_kwargs`` fields (the chosen rule's keyword arguments)."""
    return tuple(f.name for f in FIELDS.values() if f.kind == "dict")


def register_field(field: Field) -> Field:
    """Adds a config field from outside byzjax (e.g. a keyword of an optimiser
    registered with :func:`byzjax.optim.register_optimizer`).

    It then works like a built-in field everywhere: :func:`get_config`,
    ``--set``, the help of ``byzjax train``, range checks, sweeps (a traced
    field is a vmappable ``hparams`` axis), :attr:`RunSpec.extra
    <byzjax.sim.RunSpec>`. So that run ids made before it existed stay valid,
    its ``run_id`` must be ``"unless_default"`` or ``"never"``.

    Raises:
      ValueError: a name that is taken or not an identifier, or ``run_id``
        ``"always"``.

    Example:
      >>> f = register_field(Field("toy_gamma", 1.0, "a toy factor",
      ...                          run_id="unless_default", traced=True))
      >>> get_config().toy_gamma, "toy_gamma" in float_hparams()
      (1.0, True)
      >>> unregister_field("toy_gamma")
    """
    if not isinstance(field, Field):
        raise TypeError(f"register_field takes a byzjax.sim.Field, got "
                        f"{type(field).__name__}")
    if not field.name.isidentifier() or field.name in FIELDS:
        raise ValueError(f"config field {field.name!r} is taken or not a Python "
                         "identifier; choose another name")
    if field.run_id == "always":
        raise ValueError(f"config field {field.name!r}: a registered field needs "
                         "run_id='unless_default' (or 'never'), so run ids made "
                         "before it existed stay valid")
    if field.traced and field.kind != "float":
        raise ValueError(f"config field {field.name!r}: only float fields can be "
                         "traced")
    FIELDS[field.name] = field
    return field


def unregister_field(name: str) -> None:
    """Removes a field added by :func:`register_field` (built-ins stay)."""
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in config field")
    FIELDS.pop(name, None)


_BUILTIN = frozenset(FIELDS)


def __getattr__(name: str):
    # Module constants read live from FIELDS (PEP 562), so fields registered
    # after import are included.
    live = {"FLOAT_HPARAMS": float_hparams, "RESULT_NEUTRAL": result_neutral,
            "ID_DEFAULTS": id_defaults, "KWARGS_FIELDS": kwargs_fields}
    if name in live:
        return live[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Config fields that feed a split's keywords (``byzjax.data.SPLITS``):
#: split -> {keyword: field}.
SPLIT_FIELDS = {"dirichlet": {"alpha": "dirichlet_alpha"},
                "label_sorted": {"within_class": "label_sort_order"},
                "gamma_similarity": {"gamma": "similarity_gamma",
                                     "within_class": "label_sort_order"}}


def get_config() -> ml_collections.ConfigDict:
    """The default config: Fabris 2023's MNIST homogeneous setting, with an MLP.

    Returns:
      A ``ConfigDict`` with one entry per field of :data:`FIELDS`; copy it and
      override fields for variants.

    Example:
      >>> c = get_config()
      >>> c.num_workers, c.aggregator, c.learning_rate
      (15, 'trimmed_mean', 0.75)
    """
    c = ml_collections.ConfigDict()
    for f in FIELDS.values():
        c[f.name] = ml_collections.ConfigDict() if f.kind == "dict" else f.default
    return c


def parse_milestones(text: str) -> tuple[int, ...] | None:
    """The rounds of ``lr_milestones`` (``"100,200"``), or None if malformed.

    Example:
      >>> parse_milestones("100, 200"), parse_milestones(""), parse_milestones("5,2")
      ((100, 200), (), None)
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        return None
    rounds = tuple(int(p) for p in parts)
    if any(r < 1 for r in rounds) or list(rounds) != sorted(set(rounds)):
        return None
    return rounds


def coerce_field(key: str, value: Any, default: Any = None) -> Any:
    """``value`` as the type of field ``key``, or :class:`ConfigError`.

    Integers are accepted for float fields; ``"true"`` / ``"false"`` for
    booleans; nothing else is converted (``7.5`` is not an integer, ``"abc"``
    not a number).

    Args:
      key: a field of :data:`FIELDS`.
      value: the value to check.
      default: the type's example (default: the field's own default).

    Example:
      >>> coerce_field("beta", 1)
      1.0
      >>> coerce_field("num_workers", "seven")
      Traceback (most recent call last):
      ...
      byzjax.sim._errors.ConfigError: num_workers must be an integer, got 'seven'
    """
    if default is None:
        default = FIELDS[key].default
    kind = _kind(default)
    ok = _kind(value) == kind
    if kind == "float" and _kind(value) == "int":
        value, ok = float(value), True
    if kind == "bool" and isinstance(value, str) and value.lower() in ("true",
                                                                        "false"):
        value, ok = value.lower() == "true", True
    if kind == "dict" and (isinstance(value, (dict, ml_collections.ConfigDict))):
        ok = True
    if not ok:
        raise ConfigError(f"{key} must be {_KIND_TEXT[kind]}, got {value!r}",
                          field=key)
    return value


def check_field_ranges(config) -> None:
    """Each field's own choices and range (:attr:`Field.check`), in table order.

    Raises:
      ConfigError: the first field out of range, in one line.

    Example:
      >>> c = get_config()
      >>> c.beta = 1.5
      >>> try:
      ...     check_field_ranges(c)
      ... except ConfigError as e:
      ...     print(e)
      beta must be in [0, 1), got 1.5
    """
    for f in FIELDS.values():
        value = config[f.name]
        if f.choices is not None and value not in f.choices:
            raise ConfigError(unknown_name(f.name, value, [c for c in f.choices
                                                            if c]), field=f.name)
        if f.check is not None and not f.check(value):
            raise ConfigError(f"{f.name} must be {f.must}, got {value!r}",
                              field=f.name)
