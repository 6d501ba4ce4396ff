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

from typing import Literal, Unpack

import optax

from byzjax.optim._pipeline import PipelineOptions, stages, with_pipeline_args
from byzjax.optim._worker import require_state

__all__ = ["dsgd", "resam", "dra", "mra"]


_RETURNS = """An ``optax.GradientTransformation``: per-worker gradients (leaves
      ``[num_workers, *param_shape]``) in, the aggregated direction out."""


def _chain_doc(fn):
    fn.__doc__ = fn.__doc__.replace("{returns}", _RETURNS)
    return with_pipeline_args(fn)


def _chain(optimizer: str, **kwargs) -> optax.GradientTransformation:
    """``optax.chain`` of the four :class:`~byzjax.optim.Stages` of ``optimizer``.

    Its ``update`` refuses ``state=None`` with a one-line hint (optax's own
    error would be a ``TypeError`` deep in ``chain``).
    """
    tx = optax.chain(*stages(optimizer, **kwargs))

    def update_fn(updates, state, params=None, **extra_args):
        require_state(optimizer, state)
        return tx.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)


@with_pipeline_args
def dsgd(*, num_workers: int, num_byzantine: int,
         **pipeline: Unpack[PipelineOptions]) -> optax.GradientTransformation:
    """Robust D-SGD: each worker sends its gradient; the server aggregates them.

    ``theta <- theta - lr * F(g_1..g_n)`` once chained with ``optax.sgd(lr)``.

    Args:
      {pipeline}

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
    return _chain("dsgd", num_workers=num_workers,
                  num_byzantine=num_byzantine, **pipeline)


@_chain_doc
def resam(*, num_workers: int, num_byzantine: int, beta: float = 0.99,
          dampening: float | None = None,
          nesterov: bool = False,
          **pipeline: Unpack[PipelineOptions]) -> optax.GradientTransformation:
    """RESAM: robust aggregation of per-worker momentums (Farhadkhani et al. 2022).

    Workers send ``m_i <- beta m_i + (1 - beta) g_i`` (see
    :func:`~byzjax.optim.worker_momentum` for ``dampening`` and ``nesterov``:
    ``dampening=0`` gives El Mhamdi et al.'s distributed momentum).

    Args:
      {pipeline}
      beta: momentum (float or traced).
      dampening: float or traced; ``None`` means ``beta``.
      nesterov: static bool.

    Returns:
      {returns}

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from byzjax import optim
      >>> tx = optim.resam(num_workers=2, num_byzantine=0, beta=0.5)
      >>> params = {"w": jnp.zeros(1)}
      >>> u, _ = tx.update({"w": jnp.array([[2.0], [4.0]])}, tx.init(params), params)
      >>> u["w"].tolist()   # mean of (1 - beta) g
      [1.5]
    """
    return _chain("resam", beta=beta, dampening=dampening, nesterov=nesterov,
                  num_workers=num_workers,
                  num_byzantine=num_byzantine, **pipeline)


@_chain_doc
def dra(*, num_workers: int, num_byzantine: int, b1: float = 0.99,
        b2: float = 0.999, eps: float = 1e-8, bias_correction: bool = True,
        simplified: bool = False, eps_root: float = 0.0,
        **pipeline: Unpack[PipelineOptions]) -> optax.GradientTransformation:
    """DRA (thesis Alg. 19): workers send Adam directions ``mhat / (sqrt(vhat) + eps)``.

    Args:
      {pipeline}
      b1, b2, eps, eps_root: floats or traced (thesis: ``b1=0.99``, ``b2=0.999``).
      bias_correction: static bool.
      simplified: static; send ``m / sqrt(v + eps)`` (Fabris 2023, §3.2, with
        ``bias_correction=False``), see :func:`~byzjax.optim.worker_adam`.

    Returns:
      {returns}

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.dra(num_workers=2, num_byzantine=0, eps=0.0)
      >>> params = {"w": jnp.zeros(1)}
      >>> u, _ = tx.update({"w": jnp.array([[2.0], [4.0]])}, tx.init(params), params)
      >>> u["w"].tolist()   # mean of g/|g| on the first step
      [1.0]
    """
    return _chain("dra", b1=b1, b2=b2, eps=eps, bias_correction=bias_correction,
                  eps_root=eps_root, simplified=simplified, num_workers=num_workers,
                  num_byzantine=num_byzantine, **pipeline)


@_chain_doc
def mra(*, num_workers: int, num_byzantine: int, b1: float = 0.99,
        b2: float = 0.999, eps: float = 1e-8, bias_correction: bool = True,
        safeguard: Literal["clamp"] | None = None,
        **pipeline: Unpack[PipelineOptions]) -> optax.GradientTransformation:
    """MRA (thesis Alg. 20): workers send ``(mhat, vhat)``; the server computes
    ``F(mhat) / sqrt(F(vhat) + eps)``.

    Attacks act on both moments. Faithful default: a negative aggregated
    second moment gives NaN (Fabris 2023, §4.1.2); ``safeguard="clamp"`` avoids
    it (see :func:`~byzjax.optim.mra_direction`).

    Args:
      {pipeline}
      b1, b2, eps: floats or traced.
      bias_correction: static bool.
      safeguard: static, ``None`` or ``"clamp"``.

    Returns:
      {returns}

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.mra(num_workers=2, num_byzantine=0, eps=0.0)
      >>> params = {"w": jnp.zeros(1)}
      >>> u, _ = tx.update({"w": jnp.array([[2.0], [4.0]])}, tx.init(params), params)
      >>> u["w"].tolist()   # 3 / sqrt(10) on the first step
      [0.9486...]
    """
    return _chain("mra", b1=b1, b2=b2, eps=eps, bias_correction=bias_correction,
                  safeguard=safeguard, num_workers=num_workers,
                  num_byzantine=num_byzantine, **pipeline)
