"""Ready Byzantine-resilient optimiser chains: D-SGD, RESAM, DRA, MRA.

Each chain is ``optax.chain(clip?, worker stage, attack?, pre_aggregate?,
aggregate[, mra_direction])``: it takes per-worker gradients (leaves
``[num_workers, *param_shape]``) and returns the aggregated direction (leaves
``[*param_shape]``), with no learning rate. Follow it with a server optimiser::

    optax.chain(byzjax.optim.resam(num_workers=15, num_byzantine=5,
                                   aggregator="trimmed_mean", beta=0.9),
                optax.sgd(0.1))

References:
  Farhadkhani et al. 2022 (RESAM), https://arxiv.org/abs/2205.12173;
  El-Mhamdi et al. 2021, https://arxiv.org/abs/2003.00010;
  Fabris 2023, MSc thesis, Chalmers (DRA Alg. 19, MRA Alg. 20).
"""

from __future__ import annotations

from typing import Callable

import jax
import optax

from byzjax.optim._stages import (
    aggregate,
    byzantine_attack,
    mra_direction,
    pre_aggregate,
)
from byzjax.optim._worker import clip_by_worker_norm, worker_adam, worker_momentum

__all__ = ["dsgd", "resam", "dra", "mra", "adaptive_attack_defaults"]

_COMMON_ARGS = """
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
        to this chain's aggregator, its kwargs, the declared ``num_byzantine``
        and pre-aggregator.
      key: PRNG key for random stages (split between the attack and the
        pre-aggregator).
"""


def _with_common_args(fn):
    fn.__doc__ = fn.__doc__.replace("{common}", _COMMON_ARGS.strip("\n").lstrip())
    return fn


def adaptive_attack_defaults(attack, attack_kwargs, *, aggregator,
                             aggregator_kwargs, num_byzantine: int,
                             preaggregator=None, preaggregator_kwargs=None) -> dict:
    """The attack's kwargs, with an adaptive attack pointed at this pipeline.

    An adaptive attack (``attacks.entry(name).adaptive``) is omniscient: unless
    told otherwise it targets the server's aggregator with its kwargs and the
    declared ``num_byzantine``, after the same pre-aggregator. Other attacks'
    kwargs are returned unchanged (copied).
    """
    from byzjax import attacks

    out = dict(attack_kwargs or {})
    if isinstance(attack, str) and attacks.entry(attack).adaptive:
        out.setdefault("aggregator", aggregator)
        declared = {"num_byzantine": num_byzantine, **dict(aggregator_kwargs or {})}
        out.setdefault("aggregator_kwargs", declared)
        if preaggregator:
            out.setdefault("preaggregator", preaggregator)
            out.setdefault("preaggregator_kwargs", dict(preaggregator_kwargs or {}))
    return out


def _chain(worker_stage, *, num_workers: int, num_byzantine: int,
           aggregator: str | Callable = "mean", aggregator_kwargs=None,
           preaggregator=None, preaggregator_kwargs=None, clip_norm=None,
           attack=None, num_attackers: int | None = None, attack_kwargs=None,
           key=None, moments: bool = False, tail=()):
    from byzjax import aggregators

    agg_kwargs = dict(aggregator_kwargs or {})
    pre_kwargs = dict(preaggregator_kwargs or {})
    if isinstance(aggregator, str) and preaggregator is None:
        # Fail at construction when (n, f) cannot work (the stage re-checks at
        # trace time, after any pre-aggregation changed the row count).
        aggregators.check(aggregator, num_workers=num_workers,
                          num_byzantine=num_byzantine)
    stages = []
    if clip_norm is not None:
        stages.append(clip_by_worker_norm(clip_norm))
    stages.append(worker_stage)
    key_attack = key_pre = None
    if key is not None:
        key_attack, key_pre = jax.random.split(key)
    if attack is not None:
        att_kwargs = adaptive_attack_defaults(
            attack, attack_kwargs, aggregator=aggregator,
            aggregator_kwargs=agg_kwargs, num_byzantine=num_byzantine,
            preaggregator=preaggregator, preaggregator_kwargs=pre_kwargs)
        f_real = num_byzantine if num_attackers is None else num_attackers
        stages.append(byzantine_attack(attack, num_workers=num_workers,
                                       num_byzantine=f_real, key=key_attack,
                                       **att_kwargs))
    if preaggregator is not None:
        stages.append(pre_aggregate(preaggregator, num_byzantine=num_byzantine,
                                    key=key_pre, **pre_kwargs))
    stages.append(aggregate(aggregator, num_byzantine=num_byzantine,
                            moments=moments, **agg_kwargs))
    stages.extend(tail)
    return optax.chain(*stages)


@_with_common_args
def dsgd(*, num_workers: int, num_byzantine: int, aggregator: str | Callable = "mean",
        aggregator_kwargs: dict | None = None, preaggregator=None,
        preaggregator_kwargs: dict | None = None, clip_norm=None, attack=None,
        num_attackers: int | None = None, attack_kwargs: dict | None = None,
        key: jax.Array | None = None
         ) -> optax.GradientTransformation:
    """Robust D-SGD: each worker sends its gradient; the server aggregates them.

    ``theta <- theta - lr * F(g_1..g_n)`` once chained with ``optax.sgd(lr)``.

    Args:
      {common}

    Returns:
      An ``optax.GradientTransformation``: per-worker gradients (leaves
      ``[num_workers, *param_shape]``) in, the aggregated gradient out.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from byzjax import optim
      >>> tx = optax.chain(optim.dsgd(num_workers=3, num_byzantine=1), optax.sgd(1.0))
      >>> params = {"w": jnp.zeros(2)}
      >>> u, _ = tx.update({"w": jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 3.0]])},
      ...                  tx.init(params), params)
      >>> u
      {'w': Array([-2., -1.], dtype=float32)}
    """
    from byzjax.optim._worker import _check_num_workers

    _check_num_workers("dsgd", num_workers)
    identity = optax.identity()
    return _chain(identity, num_workers=num_workers, num_byzantine=num_byzantine,
                  aggregator=aggregator, aggregator_kwargs=aggregator_kwargs,
                  preaggregator=preaggregator,
                  preaggregator_kwargs=preaggregator_kwargs, clip_norm=clip_norm,
                  attack=attack, num_attackers=num_attackers,
                  attack_kwargs=attack_kwargs, key=key)


@_with_common_args
def resam(*, num_workers: int, num_byzantine: int, beta=0.99, dampening=None,
          nesterov: bool = False, aggregator: str | Callable = "mean",
        aggregator_kwargs: dict | None = None, preaggregator=None,
        preaggregator_kwargs: dict | None = None, clip_norm=None, attack=None,
        num_attackers: int | None = None, attack_kwargs: dict | None = None,
        key: jax.Array | None = None
          ) -> optax.GradientTransformation:
    """RESAM: robust aggregation of per-worker momentums (Farhadkhani et al. 2022).

    Workers send ``m_i <- beta m_i + (1 - beta) g_i`` (see
    :func:`~byzjax.optim.worker_momentum` for ``dampening`` and ``nesterov``:
    ``dampening=0`` gives El Mhamdi et al.'s distributed momentum).

    Args:
      {common}
      beta: momentum (float or traced).
      dampening: float or traced; ``None`` means ``beta``.
      nesterov: static bool.

    Returns:
      An ``optax.GradientTransformation``: per-worker gradients (leaves
      ``[num_workers, *param_shape]``) in, the aggregated direction out.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from byzjax import optim
      >>> tx = optim.resam(num_workers=2, num_byzantine=0, beta=0.5)
      >>> params = {"w": jnp.zeros(1)}
      >>> u, _ = tx.update({"w": jnp.array([[2.0], [4.0]])}, tx.init(params), params)
      >>> u["w"].tolist()   # mean of (1 - beta) g
      [1.5]
    """
    worker = worker_momentum(num_workers=num_workers, beta=beta,
                             dampening=dampening, nesterov=nesterov)
    return _chain(worker, num_workers=num_workers, num_byzantine=num_byzantine,
                  aggregator=aggregator, aggregator_kwargs=aggregator_kwargs,
                  preaggregator=preaggregator,
                  preaggregator_kwargs=preaggregator_kwargs, clip_norm=clip_norm,
                  attack=attack, num_attackers=num_attackers,
                  attack_kwargs=attack_kwargs, key=key)


@_with_common_args
def dra(*, num_workers: int, num_byzantine: int, b1=0.99, b2=0.999, eps=1e-8,
        bias_correction: bool = True, simplified: bool = False, eps_root=0.0,
        aggregator: str | Callable = "mean",
        aggregator_kwargs: dict | None = None, preaggregator=None,
        preaggregator_kwargs: dict | None = None, clip_norm=None, attack=None,
        num_attackers: int | None = None, attack_kwargs: dict | None = None,
        key: jax.Array | None = None) -> optax.GradientTransformation:
    """DRA (thesis Alg. 19): workers send Adam directions ``mhat / (sqrt(vhat) + eps)``.

    Args:
      {common}
      b1, b2, eps, eps_root: floats or traced (thesis: ``b1=0.99``, ``b2=0.999``).
      bias_correction: static bool.
      simplified: static; send ``m / sqrt(v + eps)`` (Fabris 2023, §3.2, with
        ``bias_correction=False``), see :func:`~byzjax.optim.worker_adam`.

    Returns:
      An ``optax.GradientTransformation``: per-worker gradients (leaves
      ``[num_workers, *param_shape]``) in, the aggregated direction out.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.dra(num_workers=2, num_byzantine=0, eps=0.0)
      >>> params = {"w": jnp.zeros(1)}
      >>> u, _ = tx.update({"w": jnp.array([[2.0], [4.0]])}, tx.init(params), params)
      >>> u["w"].tolist()   # mean of g/|g| on the first step
      [1.0]
    """
    worker = worker_adam(num_workers=num_workers, b1=b1, b2=b2, eps=eps,
                         bias_correction=bias_correction, output="direction",
                         eps_root=eps_root, simplified=simplified)
    return _chain(worker, num_workers=num_workers, num_byzantine=num_byzantine,
                  aggregator=aggregator, aggregator_kwargs=aggregator_kwargs,
                  preaggregator=preaggregator,
                  preaggregator_kwargs=preaggregator_kwargs, clip_norm=clip_norm,
                  attack=attack, num_attackers=num_attackers,
                  attack_kwargs=attack_kwargs, key=key)


@_with_common_args
def mra(*, num_workers: int, num_byzantine: int, b1=0.99, b2=0.999, eps=1e-8,
        bias_correction: bool = True, safeguard: str | None = None,
        aggregator: str | Callable = "mean",
        aggregator_kwargs: dict | None = None, preaggregator=None,
        preaggregator_kwargs: dict | None = None, clip_norm=None, attack=None,
        num_attackers: int | None = None, attack_kwargs: dict | None = None,
        key: jax.Array | None = None) -> optax.GradientTransformation:
    """MRA (thesis Alg. 20): workers send ``(mhat, vhat)``; the server computes
    ``F(mhat) / sqrt(F(vhat) + eps)``.

    Attacks act on both moments. Faithful default: a negative aggregated
    second moment gives NaN (Fabris 2023, §4.1.2); ``safeguard="clamp"`` avoids
    it (see :func:`~byzjax.optim.mra_direction`).

    Args:
      {common}
      b1, b2, eps: floats or traced.
      bias_correction: static bool.
      safeguard: static, ``None`` or ``"clamp"``.

    Returns:
      An ``optax.GradientTransformation``: per-worker gradients (leaves
      ``[num_workers, *param_shape]``) in, the aggregated direction out.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.mra(num_workers=2, num_byzantine=0, eps=0.0)
      >>> params = {"w": jnp.zeros(1)}
      >>> u, _ = tx.update({"w": jnp.array([[2.0], [4.0]])}, tx.init(params), params)
      >>> u["w"].tolist()   # 3 / sqrt(10) on the first step
      [0.9486...]
    """
    worker = worker_adam(num_workers=num_workers, b1=b1, b2=b2, eps=eps,
                         bias_correction=bias_correction, output="moments")
    return _chain(worker, num_workers=num_workers, num_byzantine=num_byzantine,
                  moments=True, tail=(mra_direction(eps=eps, safeguard=safeguard),),
                  aggregator=aggregator, aggregator_kwargs=aggregator_kwargs,
                  preaggregator=preaggregator,
                  preaggregator_kwargs=preaggregator_kwargs, clip_norm=clip_norm,
                  attack=attack, num_attackers=num_attackers,
                  attack_kwargs=attack_kwargs, key=key)
