"""The one stage builder: clip -> worker -> attack -> robust -> server.

:func:`stages` assembles the whole Byzantine-resilient pipeline of an
optimiser from its name, as four ``optax.GradientTransformation`` s
(:class:`Stages`). Everything else is a thin use of it: the ready chains
:func:`~byzjax.optim.dsgd`, :func:`~byzjax.optim.resam`,
:func:`~byzjax.optim.dra` and :func:`~byzjax.optim.mra` chain its four parts
(as ``optax.adam`` chains ``scale_by_adam`` and ``scale_by_learning_rate``),
the simulator applies them one after another and reads its diagnostics in
between, and ``byzjax.parallel.robust_data_parallel_step`` runs
:func:`worker_stage` on every device.

An optimiser is declared once, in :data:`OPTIMIZERS` (``@register_optimizer``):
its worker stage, its server stage, whether workers send Adam moments, and
which simulator config fields feed its keywords. The simulator's list of
optimisers, the CLI's and the report's order all read it.

References:
  Farhadkhani et al. 2022, "Byzantine Machine Learning Made Easy by Resilient
  Averaging of Momentums" (RESAM), https://arxiv.org/abs/2205.12173;
  El-Mhamdi, Guerraoui, Rouault 2021, "Distributed Momentum for
  Byzantine-resilient Stochastic Gradient Descent",
  https://arxiv.org/abs/2003.00010 (server and worker momentum);
  Fabris 2023, MSc thesis, Chalmers (DRA Alg. 19, MRA Alg. 20).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Mapping, NamedTuple, TypedDict

import jax
import optax

from byzjax import aggregators, attacks
from byzjax._registry import (
    Keyword,
    at_least,
    did_you_mean,
    in_range,
    infer_keywords,
    normalize_name,
    unknown_name,
)
from byzjax.optim._layout import LAYOUTS, flatten_rows
from byzjax.optim._stages import (
    aggregate,
    byzantine_attack,
    mra_direction,
    pre_aggregate,
    server_momentum,
)
from byzjax.optim._worker import (
    _check_num_workers,
    clip_by_worker_norm,
    worker_adam,
    worker_momentum,
)

__all__ = [
    "Stages",
    "PipelineOptions",
    "OptimizerEntry",
    "OPTIMIZERS",
    "register_optimizer",
    "optimizer_entry",
    "optimizer_names",
    "check_optimizer_kwargs",
    "worker_stage",
    "stages",
    "adaptive_attack_defaults",
]


class Stages(NamedTuple):
    """The four parts of a Byzantine-resilient pipeline, in data-flow order.

    Attributes:
      worker: per-worker clipping and the optimiser's worker state (momentum,
        Adam moments); leaves ``[n, *param_shape]`` in and out.
      attack: the simulated Byzantine rows replace the last ones (identity
        without an attack); keeps the worker axis.
      robust: pre-aggregation (optional) then aggregation; drops the worker
        axis.
      server: the optimiser's server stage (MRA's direction, server momentum)
        then ``optax.sgd(learning_rate)`` when a learning rate is given
        (identity if both are absent).
    """

    worker: optax.GradientTransformation
    attack: optax.GradientTransformation
    robust: optax.GradientTransformation
    server: optax.GradientTransformation


class PipelineOptions(TypedDict, total=False):
    """The keywords every optimiser's pipeline takes (see :func:`stages`)."""

    aggregator: str | Callable
    aggregator_kwargs: dict | None
    preaggregator: str | Callable | None
    preaggregator_kwargs: dict | None
    clip_norm: float | None
    attack: str | Callable | None
    num_attackers: int | None
    attack_kwargs: dict | None
    clip_point: Literal["gradient", "sent"]
    attack_point: Literal["sent", "gradient"]
    layout: Literal["tree", "flat"]
    key: jax.Array | None


_PIPELINE_ARGS = """
      num_workers: static ``n``.
      num_byzantine: static *declared* ``f`` given to the aggregator and
        pre-aggregator.
      aggregator: registry name or callable (default ``"mean"``).
      aggregator_kwargs: its hyper-parameters.
      preaggregator: optional pre-aggregator name or callable (``"nnm"``, ...).
      preaggregator_kwargs: its hyper-parameters.
      clip_norm: optional per-worker clipping radius (float or traced), applied
        to the gradients before the worker stage.
      attack: optional attack name or callable (simulation: replaces the last
        ``num_attackers`` rows after the worker stage).
      num_attackers: static real number of attacking rows (default
        ``num_byzantine``).
      attack_kwargs: the attack's hyper-parameters. An adaptive attack defaults
        to this pipeline's aggregator, its kwargs, the declared
        ``num_byzantine`` and pre-aggregator. A stateful attack (ROP) gets a
        copy of this pipeline's robust stage to follow the server's aggregate
        (:func:`byzantine_attack`).
      clip_point: where per-worker clipping acts: ``"gradient"`` (default,
        before the worker stage) or ``"sent"`` (on what each worker sends,
        after momentum); ``docs/CONVENTIONS.md``.
      attack_point: what the attack replaces: ``"sent"`` (default, the vectors
        workers send) or ``"gradient"`` (the clipped gradients; the Byzantine
        workers then run the worker stage on their crafted gradients; not
        with a stateful attack, which reads the aggregate of sent vectors).
      layout: how the attack and robust stages see a worker's vector:
        ``"tree"`` (default, leaf by leaf) or ``"flat"`` (one ``[n, d]`` row
        per worker, as ByzFL; :func:`flatten_rows`: the same function, sums
        over coordinates in another order, faster to compile for models of
        many leaves).
      key: PRNG key for random stages (split between the attack and the
        pre-aggregator; a random aggregator's key is ``fold_in(key, 2)``).
"""


def with_pipeline_args(fn):
    """Puts the description of the pipeline keywords in ``fn``'s docstring
    (at ``{pipeline}``)."""
    fn.__doc__ = fn.__doc__.replace("{pipeline}",
                                    _PIPELINE_ARGS.strip("\n").lstrip())
    return fn


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimiser.

    Attributes:
      name: registry name (``"resam"``).
      build: ``build(*, num_workers, **hparams) -> (worker, server)``: its
        worker transform (or ``None``) and a tuple of server transforms
        (before the learning rate).
      moments: workers send :class:`~byzjax.optim.MomentPair` s (MRA), so the
        aggregation stage aggregates both moments.
      config_fields: ``build`` keyword -> simulator config field that sets it
        (float fields are traced, others static).
      liubei: its server step is ``-lr * F(sent vectors)`` where each sent
        vector has norm at most the clipping radius (no server state, nothing
        but the aggregate moves the model): what LiuBei's filters assume
        (``docs/SERVERS.md``). D-SGD and RESAM.
      display_name: the name readers know (``"momentum at the workers
        (RESAM)"``).
      short_name: the short name of tables (``"RESAM"``).
      order: position in reports and listings (smaller first).
      keywords: ``build``'s keywords (:class:`~byzjax._registry.Keyword`),
        checked by :func:`check_optimizer_kwargs`.
    """

    name: str
    build: Callable[..., tuple[Any, tuple]]
    moments: bool = False
    config_fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    liubei: bool = False
    display_name: str = ""
    short_name: str = ""
    order: int = 0
    keywords: Mapping[str, Keyword] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)
        if not self.short_name:
            object.__setattr__(self, "short_name", self.display_name)


#: The optimisers, by name, in registration order (:func:`optimizer_names`
#: sorts them by their ``order``).
OPTIMIZERS: dict[str, OptimizerEntry] = {}


def register_optimizer(name: str, *, moments: bool = False,
                       config_fields: Mapping[str, str] | tuple = (),
                       liubei: bool = False, display_name: str | None = None,
                       short_name: str | None = None, order: int | None = None,
                       keywords: Mapping[str, Any] | None = None):
    """Decorator declaring an optimiser's stages (see :class:`OptimizerEntry`).

    ``config_fields`` is a mapping keyword -> config field, or a tuple of
    keywords that are config fields of the same name. ``keywords`` adds
    ranges to the keywords read from ``build``'s signature
    (``{"beta": in_range(0, 1, high_open=True)}``).

    Raises:
      ValueError: an empty or non-string name, a name not in normal form, or
        one already registered.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"optimizer name must be a non-empty string, got {name!r}")
    if normalize_name(name) != name:
        raise ValueError(f"optimizer name {name!r}: register it as "
                         f"{normalize_name(name)!r} (lower case, '_' for '-')")
    if name in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is already registered; choose "
                         "another name")
    fields = (dict(config_fields) if isinstance(config_fields, Mapping)
              else {k: k for k in config_fields})

    def _decorate(build):
        kws, _ = infer_keywords(build, reserved=("num_workers",),
                                declared=keywords, owner=f"optimizer {name!r}")
        OPTIMIZERS[name] = OptimizerEntry(
            name, build, moments, fields, liubei, display_name or "",
            short_name or "", len(OPTIMIZERS) if order is None else order, kws)
        return build

    return _decorate


def optimizer_entry(name: str) -> OptimizerEntry:
    """The :class:`OptimizerEntry` of ``name`` (unknown names get the closest).

    Example:
      >>> optimizer_entry("MRA").moments
      True
      >>> optimizer_entry("resam").liubei, optimizer_entry("resam").short_name
      (True, 'RESAM')
    """
    key = normalize_name(name) if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(unknown_name("optimizer", name, OPTIMIZERS))
    return OPTIMIZERS[key]


def optimizer_names() -> tuple[str, ...]:
    """The registered optimisers, in display order (read when called).

    Example:
      >>> optimizer_names()
      ('dsgd', 'server_momentum', 'resam', 'dra', 'mra')
    """
    return tuple(sorted(OPTIMIZERS, key=lambda k: (OPTIMIZERS[k].order, k)))


def check_optimizer_kwargs(name: str, kwargs: Mapping[str, Any]) -> OptimizerEntry:
    """Raises one line unless ``kwargs`` are good keywords of optimiser ``name``.

    Unknown keywords (with the closest ones), wrong types and out-of-range
    concrete values; traced values are not checked.

    Example:
      >>> check_optimizer_kwargs("resam", {"beta": 1.5})
      Traceback (most recent call last):
      ...
      ValueError: optimizer 'resam': beta must be a number in [0, 1), got 1.5
    """
    entry = optimizer_entry(name)
    owner = f"optimizer {entry.name!r}"
    accepted = list(entry.keywords)
    for key in kwargs:
        if key not in entry.keywords:
            close = did_you_mean(key, accepted)
            hint = (" (did you mean " + " or ".join(map(repr, close)) + "?)"
                    if close else "")
            raise ValueError(f"{owner} has no keyword {key!r}{hint}; its keywords: "
                             f"{', '.join(accepted) or 'none'}")
    for key, value in kwargs.items():
        entry.keywords[key].check(owner, value)
    return entry


_UNIT = in_range(0, 1, high_open=True)


@register_optimizer("dsgd", liubei=True, display_name="D-SGD", short_name="D-SGD")
def _dsgd(*, num_workers: int):
    del num_workers
    return None, ()


@register_optimizer("server_momentum", config_fields=("beta", "nesterov"),
                    display_name="momentum at the server", short_name="SM",
                    keywords={"beta": _UNIT})
def _server_momentum(*, num_workers: int, beta: float = 0.9,
                     nesterov: bool = False):
    del num_workers
    return None, (server_momentum(momentum=beta, nesterov=nesterov),)


@register_optimizer("resam", config_fields={
    "beta": "beta", "dampening": "dampening", "nesterov": "nesterov",
    "initial_momentum": "momentum_init",
    "bias_correction": "momentum_bias_correction"}, liubei=True,
    display_name="momentum at the workers (RESAM)", short_name="RESAM",
    keywords={"beta": _UNIT, "dampening": in_range(0, 1)})
def _resam(*, num_workers: int, beta: float = 0.99, dampening: float | None = None,
           nesterov: bool = False, initial_momentum: float = 0.0,
           bias_correction: bool = False):
    return worker_momentum(num_workers=num_workers, beta=beta, dampening=dampening,
                           nesterov=nesterov, initial_momentum=initial_momentum,
                           bias_correction=bias_correction), ()


@register_optimizer("dra", config_fields=("b1", "b2", "eps"),
                    display_name="DRA (Adam at the workers)", short_name="DRA",
                    keywords={"b1": _UNIT, "b2": _UNIT, "eps": at_least(0),
                              "eps_root": at_least(0)})
def _dra(*, num_workers: int, b1: float = 0.99, b2: float = 0.999,
         eps: float = 1e-8, bias_correction: bool = True, simplified: bool = False,
         eps_root: float = 0.0):
    return worker_adam(num_workers=num_workers, b1=b1, b2=b2, eps=eps,
                       bias_correction=bias_correction, output="direction",
                       eps_root=eps_root, simplified=simplified), ()


@register_optimizer("mra", moments=True,
                    config_fields={"b1": "b1", "b2": "b2", "eps": "eps",
                                   "safeguard": "mra_safeguard"},
                    display_name="MRA (robust Adam moments)", short_name="MRA",
                    keywords={"b1": _UNIT, "b2": _UNIT, "eps": at_least(0)})
def _mra(*, num_workers: int, b1: float = 0.99, b2: float = 0.999,
         eps: float = 1e-8, bias_correction: bool = True,
         safeguard: Literal["clamp"] | None = None):
    worker = worker_adam(num_workers=num_workers, b1=b1, b2=b2, eps=eps,
                         bias_correction=bias_correction, output="moments")
    return worker, (mra_direction(eps=eps, safeguard=safeguard),)


def _chain_or_identity(transforms) -> optax.GradientTransformation:
    # (an empty optax.chain has no usable state: D-SGD without clipping has
    # no worker stage)
    return optax.chain(*transforms) if transforms else optax.identity()


def worker_stage(optimizer: str = "dsgd", *, num_workers: int, clip_norm=None,
                 **hparams) -> optax.GradientTransformation:
    """Per-worker clipping then the optimiser's worker transform.

    Args:
      optimizer: a name of :data:`OPTIMIZERS`.
      num_workers: static ``n`` (the state's leading axis).
      clip_norm: optional per-worker clipping radius (float or traced).
      **hparams: the optimiser's keywords (``beta=``, ``b1=``, ...).

    Returns:
      An ``optax.GradientTransformation`` on leaves ``[n, *param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = worker_stage("resam", num_workers=2, beta=0.5, clip_norm=1.0)
      >>> state = tx.init({"w": jnp.zeros(1)})
      >>> u, _ = tx.update({"w": jnp.array([[4.0], [0.5]])}, state)
      >>> u["w"].ravel().tolist()
      [0.5, 0.25]
    """
    entry = check_optimizer_kwargs(optimizer, hparams)
    worker, _ = entry.build(num_workers=num_workers, **hparams)
    parts = [] if clip_norm is None else [clip_by_worker_norm(clip_norm)]
    if worker is not None:
        parts.append(worker)
    return _chain_or_identity(parts)


def adaptive_attack_defaults(attack, attack_kwargs, *, aggregator,
                             aggregator_kwargs, num_byzantine: int,
                             preaggregator=None, preaggregator_kwargs=None) -> dict:
    """The attack's kwargs, with an adaptive attack pointed at this pipeline.

    An adaptive attack (``attacks.entry(name).adaptive``) is omniscient: unless
    told otherwise it targets the server's aggregator with its kwargs and the
    declared ``num_byzantine``, after the same pre-aggregator. Other attacks'
    kwargs are returned unchanged (copied).

    Example:
      >>> adaptive_attack_defaults("alie", {"eps": 1.0}, aggregator="krum",
      ...                          aggregator_kwargs={}, num_byzantine=2)
      {'eps': 1.0}
      >>> sorted(adaptive_attack_defaults("adaptive_alie", {}, aggregator="krum",
      ...                                 aggregator_kwargs={}, num_byzantine=2))
      ['aggregator', 'aggregator_kwargs']
    """
    out = dict(attack_kwargs or {})
    if isinstance(attack, str) and attacks.entry(attack).adaptive:
        out.setdefault("aggregator", aggregator)
        declared = {"num_byzantine": num_byzantine, **dict(aggregator_kwargs or {})}
        out.setdefault("aggregator_kwargs", declared)
        if preaggregator:
            out.setdefault("preaggregator", preaggregator)
            out.setdefault("preaggregator_kwargs", dict(preaggregator_kwargs or {}))
    return out


@with_pipeline_args
def stages(optimizer: str = "dsgd", *, num_workers: int, num_byzantine: int,
           aggregator: str | Callable = "mean", aggregator_kwargs=None,
           preaggregator: str | Callable | None = None, preaggregator_kwargs=None,
           clip_norm=None, attack: str | Callable | None = None,
           num_attackers: int | None = None, attack_kwargs=None,
           clip_point: Literal["gradient", "sent"] = "gradient",
           attack_point: Literal["sent", "gradient"] = "sent",
           layout: Literal["tree", "flat"] = "tree",
           key: jax.Array | None = None, learning_rate=None,
           **hparams) -> Stages:
    """The whole pipeline of ``optimizer`` as four transforms (:class:`Stages`).

    Args:
      optimizer: a name of :data:`OPTIMIZERS` (``"dsgd"``, ``"server_momentum"``,
        ``"resam"``, ``"dra"``, ``"mra"``).
      {pipeline}
      learning_rate: optional float, traced scalar or schedule; when given the
        server stage ends with ``optax.sgd(learning_rate)``.
      **hparams: the optimiser's own keywords (RESAM ``beta``, ``dampening``,
        ``nesterov``; DRA/MRA ``b1``, ``b2``, ``eps``, ...; see the chains).

    Returns:
      :class:`Stages`; ``optax.chain(*stages(...))`` is the whole optimiser.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> s = stages("resam", num_workers=3, num_byzantine=1, beta=0.5,
      ...            aggregator="median", attack="sign_flip")
      >>> tx = optax.chain(*s)
      >>> params = {"w": jnp.zeros(1)}
      >>> u, _ = tx.update({"w": jnp.array([[2.0], [4.0], [6.0]])},
      ...                  tx.init(params), params)
      >>> u["w"].tolist()   # median of (1, 2, -1.5)
      [1.0]
    """
    entry = optimizer_entry(optimizer)
    _check_num_workers(entry.name, num_workers)
    agg_kwargs = dict(aggregator_kwargs or {})
    pre_kwargs = dict(preaggregator_kwargs or {})
    # Bad concrete keywords fail here, at construction, in one line.
    if isinstance(aggregator, str):
        aggregators.AGGREGATORS.check_kwargs(aggregator, agg_kwargs)
    if isinstance(preaggregator, str):
        aggregators.PREAGGREGATORS.check_kwargs(preaggregator, pre_kwargs)
    if isinstance(attack, str):
        attacks.ATTACKS.check_kwargs(attack, dict(attack_kwargs or {}))
    if isinstance(aggregator, str) and preaggregator is None:
        # Fail at construction when (n, f) cannot work (the stage re-checks at
        # trace time, after any pre-aggregation changed the row count).
        aggregators.check(aggregator, num_workers=num_workers,
                          num_byzantine=num_byzantine)
    if clip_point not in ("gradient", "sent"):
        raise ValueError(f"clip_point must be 'gradient' or 'sent', got {clip_point!r}")
    if attack_point not in ("sent", "gradient"):
        raise ValueError(f"attack_point must be 'sent' or 'gradient', got "
                         f"{attack_point!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, "
                         f"got {layout!r}")
    check_optimizer_kwargs(entry.name, hparams)
    worker, server = entry.build(num_workers=num_workers, **hparams)
    clip = [] if clip_norm is None else [clip_by_worker_norm(clip_norm)]
    worker_parts = list(clip) if clip_point == "gradient" else []
    attack_at = len(worker_parts)  # where attack_point="gradient" puts the attack
    if worker is not None:
        worker_parts.append(worker)
    if clip_point == "sent":
        worker_parts.extend(clip)
    key_attack = key_pre = None
    if key is not None:
        key_attack, key_pre = jax.random.split(key)
    robust = []
    if preaggregator is not None:
        robust.append(pre_aggregate(preaggregator, num_byzantine=num_byzantine,
                                    key=key_pre, **pre_kwargs))
    # A random aggregator (DnC) gets its own stream, derived without changing
    # the attack's and the pre-aggregator's keys (existing runs stay the same).
    key_agg = None
    if (key is not None and isinstance(aggregator, str)
            and aggregators.AGGREGATORS.entry(aggregator).needs_key):
        key_agg = jax.random.fold_in(key, 2)
    robust.append(aggregate(aggregator, num_byzantine=num_byzantine,
                            moments=entry.moments, key=key_agg, **agg_kwargs))
    if attack is None:
        attack_tx = optax.identity()
    else:
        att_kwargs = adaptive_attack_defaults(
            attack, attack_kwargs, aggregator=aggregator,
            aggregator_kwargs=agg_kwargs, num_byzantine=num_byzantine,
            preaggregator=preaggregator, preaggregator_kwargs=pre_kwargs)
        f_real = num_byzantine if num_attackers is None else num_attackers
        follow = {}
        if isinstance(attack, str) and attacks.entry(attack).stateful:
            if attack_point == "gradient":
                raise ValueError(
                    f"attack {attacks.entry(attack).name!r} reads the server's "
                    "previous aggregate of the vectors the workers send; set "
                    "attack_point='sent'")
            # The attacker's copy of the server's rule (same keywords and key).
            follow = {"server": optax.chain(*robust), "moments": entry.moments}
        attack_tx = byzantine_attack(attack, num_workers=num_workers,
                                     num_byzantine=f_real, key=key_attack,
                                     **follow, **att_kwargs)
        if layout == "flat":
            attack_tx = flatten_rows(attack_tx)
        if attack_point == "gradient":
            # The Byzantine workers craft gradients, then follow the protocol.
            worker_parts.insert(attack_at, attack_tx)
            attack_tx = optax.identity()
    server_parts = list(server)
    if learning_rate is not None:
        server_parts.append(optax.sgd(learning_rate))
    robust_tx = optax.chain(*robust)
    if layout == "flat":
        robust_tx = flatten_rows(robust_tx)
    return Stages(_chain_or_identity(worker_parts), attack_tx, robust_tx,
                  _chain_or_identity(server_parts))
