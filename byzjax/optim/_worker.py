"""Worker-side stages: per-worker clipping, momentum (RESAM) and Adam moments (DRA/MRA).

These optax transforms act on updates whose leaves have a leading worker axis
``[n, *param_shape]`` and keep it. ``init(params)`` receives ordinary
(unstacked) parameters, so stateful stages take the static ``num_workers``.

References:
  Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Byzantine Machine Learning
  Made Easy by Resilient Averaging of Momentums", ICML 2022,
  https://arxiv.org/abs/2205.12173 (RESAM).
  El-Mhamdi, Guerraoui, Rouault, "Distributed Momentum for Byzantine-resilient
  Stochastic Gradient Descent", ICLR 2021, https://arxiv.org/abs/2003.00010.
  Fabris, "Investigating a Byzantine Resilient Framework for the Adam
  Optimizer", MSc thesis, Chalmers 2023 (DRA Alg. 19, MRA Alg. 20).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from byzjax._registry import Keyword, check_values
from byzjax._tree import PyTree, num_rows, row_sq_norms

__all__ = [
    "MomentPair",
    "WorkerMomentumState",
    "WorkerAdamState",
    "clip_by_worker_norm",
    "worker_momentum",
    "worker_adam",
]


class MomentPair(NamedTuple):
    """What an MRA worker sends: its bias-corrected Adam moments.

    Before aggregation both fields are pytrees with leaves ``[n, *param_shape]``;
    after :func:`byzjax.optim.aggregate`, leaves ``[*param_shape]``.
    """

    m: PyTree  # first moments mhat
    v: PyTree  # second moments vhat


class WorkerMomentumState(NamedTuple):
    """State of :func:`worker_momentum`."""

    momentum: PyTree  # leaves [n, *param_shape]
    count: jax.Array  # type: ignore[assignment]  # int32 [], rounds seen (optax's name)


class WorkerAdamState(NamedTuple):
    """State of :func:`worker_adam`."""

    count: jax.Array  # type: ignore[assignment]  # int32 [], rounds seen (optax's name)
    mu: PyTree  # leaves [n, *param_shape], first moments m
    nu: PyTree  # leaves [n, *param_shape], second moments v


def _check_workers(stage: str, updates: PyTree, num_workers: int) -> int:
    n = num_rows(updates)
    if n != num_workers:
        raise ValueError(
            f"{stage}: updates have {n} worker rows but num_workers={num_workers}. "
            "Updates must be stacked per worker: leaves [num_workers, *param_shape]."
        )
    return n


def _check_num_workers(stage: str, num_workers) -> int:
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) \
            or num_workers < 1:
        raise ValueError(
            f"{stage}: num_workers must be a positive Python int (it sets the "
            f"state's shape), got {num_workers!r}"
        )
    return num_workers


def _stacked_zeros(params: PyTree, num_workers: int) -> PyTree:
    return jax.tree_util.tree_map(
        lambda p: jnp.zeros((num_workers,) + jnp.shape(p), jnp.asarray(p).dtype),
        params)


def _unit(name: str, **fields) -> Keyword:
    """A traced float in ``[0, 1)`` (a decay)."""
    return Keyword(name, "float", low=0, high=1, high_open=True, traced=True,
                   **fields)


#: The keywords of this module's factories, checked when they are built
#: (concrete values only; traced ones are documented).
_KEYWORDS = {
    "max_norm": Keyword("max_norm", "float", low=0, traced=True),
    "beta": _unit("beta"),
    "dampening": Keyword("dampening", "float", low=0, high=1, traced=True,
                         optional=True),
    "initial_momentum": Keyword("initial_momentum", "float", traced=True),
    "b1": _unit("b1"),
    "b2": _unit("b2"),
    "eps": Keyword("eps", "float", low=0, traced=True),
    "eps_root": Keyword("eps_root", "float", low=0, traced=True),
    "nesterov": Keyword("nesterov", "bool"),
    "bias_correction": Keyword("bias_correction", "bool"),
    "simplified": Keyword("simplified", "bool"),
}


def require_state(stage: str, state) -> None:
    """One line for ``tx.update(updates, None)``: say where the state comes from."""
    if state is None:
        raise TypeError(
            f"{stage}: update got state=None; pass tx.init(params) on the first "
            "call and the state returned by the previous update afterwards")


def clip_by_worker_norm(max_norm: float) -> optax.GradientTransformation:
    """Clips each worker's row to Euclidean norm at most ``max_norm``.

    Row ``i`` becomes ``x_i * min(1, max_norm / ||x_i||)``, with the norm over
    all leaves together (per-worker gradient clipping before any momentum;
    ``c = 2`` in Fabris's thesis and in RESAM). Stateless.

    Args:
      max_norm: clipping radius ``>= 0``, a float or traced scalar. A concrete
        negative or NaN radius is refused; a traced negative one gives NaN
        rows (never rows flipped in sign).

    Returns:
      An ``optax.GradientTransformation`` on leaves ``[n, *param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.clip_by_worker_norm(2.5)
      >>> g = {"a": jnp.array([[3.0], [0.0]]), "b": jnp.array([[4.0], [1.0]])}
      >>> out, _ = tx.update(g, tx.init({"a": jnp.zeros(1), "b": jnp.zeros(1)}))
      >>> out["a"].ravel().tolist(), out["b"].ravel().tolist()  # row 0 had norm 5
      ([1.5, 0.0], [2.0, 1.0])
    """
    check_values("clip_by_worker_norm", _KEYWORDS, max_norm=max_norm)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        norms = jnp.sqrt(row_sq_norms(updates))
        factor = jnp.where(norms > max_norm, max_norm / norms, 1.0)
        # A traced negative radius: NaN, not a sign flip.
        factor = jnp.where(max_norm >= 0, factor, jnp.nan)

        def _scale(x):
            f = factor.reshape((-1,) + (1,) * (x.ndim - 1))
            return (x * f).astype(x.dtype)

        return jax.tree_util.tree_map(_scale, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def worker_momentum(*, num_workers: int, beta: float,
                    dampening: float | None = None,
                    nesterov: bool = False, initial_momentum: float = 0.0,
                    bias_correction: bool = False) -> optax.GradientTransformation:
    """Per-worker momentum: ``m_i <- beta m_i + (1 - dampening) g_i``, ``m_0 = 0``.

    * Default ``dampening = beta``: the EMA form of RESAM (Farhadkhani et al.
      2022), each worker sends ``m_i``.
    * ``dampening=0``: ``m_i <- mu m_i + g_i`` (El-Mhamdi et al. 2021).
    * ``nesterov=True``: each worker sends ``g_i + beta m_i`` with the updated
      ``m_i`` (El-Mhamdi et al.'s worker Nesterov with ``dampening=0``).

    This is ``torch.optim.SGD``'s momentum buffer with ``dampening``, except
    that the buffer starts at 0 (``m_0 = 0``, see ``docs/CONVENTIONS.md``) where
    torch sets it to ``g_1`` on the first step; the two agree whenever ``dampening=0``.

    Two variants for reproducing published runs (defaults keep the above):

    * ``initial_momentum=c``: every coordinate of every worker's buffer starts
      at ``c`` (``m_0 = c``). Fabris's thesis prints ``m_0 = 1`` in the
      requirements of its RESAM pseudo-code (Alg. 2 / Alg. 11).
    * ``bias_correction=True``: each worker sends ``m_i / (1 - beta^t)`` at
      round ``t`` (Adam's first-moment correction; the buffer itself is
      unchanged). Meant for the EMA form (``dampening = beta``), where it
      removes the ``(1 - beta^t)`` shrinkage of the first rounds.

    Args:
      num_workers: static ``n`` (the state has leaves ``[n, *param_shape]``).
      beta: momentum coefficient in ``[0, 1)``, float or traced scalar
        (concrete values are checked, traced ones are not).
      dampening: in ``[0, 1]``, float or traced scalar; ``None`` means ``beta``.
      nesterov: static bool.
      initial_momentum: ``m_0``, float or traced scalar (default 0).
      bias_correction: static bool (default False).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`WorkerMomentumState`.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.worker_momentum(num_workers=2, beta=0.5)
      >>> state = tx.init({"w": jnp.zeros(1)})
      >>> g = {"w": jnp.array([[2.0], [4.0]])}
      >>> m, state = tx.update(g, state)
      >>> m, _ = tx.update(g, state)
      >>> m["w"].ravel().tolist()   # 0.5 * (0.5 * g) + 0.5 * g
      [1.5, 3.0]
    """
    _check_num_workers("worker_momentum", num_workers)
    check_values("worker_momentum", _KEYWORDS, beta=beta, dampening=dampening,
                 initial_momentum=initial_momentum, nesterov=nesterov,
                 bias_correction=bias_correction)
    damp = beta if dampening is None else dampening

    def init_fn(params):
        zeros = _stacked_zeros(params, num_workers)
        momentum = jax.tree_util.tree_map(
            lambda z: (z + initial_momentum).astype(z.dtype), zeros)
        return WorkerMomentumState(momentum=momentum,
                                   count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        require_state("worker_momentum", state)
        _check_workers("worker_momentum", updates, num_workers)
        momentum = jax.tree_util.tree_map(
            lambda g, m: (beta * m + (1.0 - damp) * g).astype(m.dtype),
            updates, state.momentum)
        count = optax.safe_int32_increment(state.count)
        sent = momentum
        if bias_correction:
            c = 1.0 - jnp.power(jnp.asarray(beta, jnp.float32),
                                count.astype(jnp.float32))
            sent = jax.tree_util.tree_map(lambda m: (m / c).astype(m.dtype),
                                          momentum)
        if nesterov:
            out = jax.tree_util.tree_map(
                lambda g, m: (g + beta * m).astype(g.dtype), updates, sent)
        else:
            out = jax.tree_util.tree_map(lambda g, m: m.astype(g.dtype), updates,
                                         sent)
        return out, WorkerMomentumState(momentum=momentum, count=count)

    return optax.GradientTransformation(init_fn, update_fn)


def worker_adam(*, num_workers: int, b1: float = 0.99, b2: float = 0.999,
                eps: float = 1e-8, bias_correction: bool = True,
                output: Literal["direction", "moments"] = "direction",
                eps_root: float = 0.0,
                simplified: bool = False) -> optax.GradientTransformation:
    """Per-worker Adam moments; workers send a direction (DRA) or the moments (MRA).

    Moments (``m_0 = v_0 = 0``): ``m_i <- b1 m_i + (1 - b1) g_i``,
    ``v_i <- b2 v_i + (1 - b2) g_i^2``; with ``bias_correction`` (default)
    ``mhat = m / (1 - b1^t)``, ``vhat = v / (1 - b2^t)``, else ``mhat = m``,
    ``vhat = v``.

    * ``output="direction"`` (DRA, thesis Alg. 19): each worker sends Adam's
      ``q_i = mhat / (sqrt(vhat + eps_root) + eps)``. With ``simplified=True``
      it sends ``mhat / sqrt(vhat + eps_root + eps)`` instead, eps inside the
      root; with ``bias_correction=False`` as well this is Fabris's §3.2
      ``q = m / sqrt(eps + v)`` (eq. 3.1).
    * ``output="moments"`` (MRA, thesis Alg. 20): each worker sends
      ``MomentPair(m=mhat, v=vhat)``; ``eps`` and ``eps_root`` are unused here
      (see :func:`byzjax.optim.mra_direction`).

    Thesis defaults ``b1 = 0.99``, ``b2 = 0.999``; ``eps = 1e-8`` (Adam's).

    Args:
      num_workers: static ``n``.
      b1, b2: decays in ``[0, 1)``; eps, eps_root: ``>= 0``; floats or traced
        scalars (concrete values are checked, traced ones are not).
      bias_correction: static bool.
      output: static, ``"direction"`` or ``"moments"``.
      simplified: static bool, only for ``output="direction"``.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`WorkerAdamState`;
      its output keeps the worker axis (a :class:`MomentPair` of stacks for
      ``"moments"``).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import optim
      >>> tx = optim.worker_adam(num_workers=2, eps=0.0)
      >>> state = tx.init({"w": jnp.zeros(1)})
      >>> q, _ = tx.update({"w": jnp.array([[2.0], [-3.0]])}, state)
      >>> q["w"].ravel().tolist()   # first step: g / |g|
      [1.0, -1.0]
    """
    _check_num_workers("worker_adam", num_workers)
    check_values("worker_adam", _KEYWORDS, b1=b1, b2=b2, eps=eps, eps_root=eps_root,
                 bias_correction=bias_correction, simplified=simplified)
    if output not in ("direction", "moments"):
        raise ValueError(
            f"worker_adam: output must be 'direction' (DRA) or 'moments' (MRA), "
            f"got {output!r}"
        )
    if simplified and output != "direction":
        raise ValueError(
            "worker_adam: simplified=True only applies to output='direction'")

    def init_fn(params):
        zeros = _stacked_zeros(params, num_workers)
        return WorkerAdamState(count=jnp.zeros((), jnp.int32), mu=zeros,
                               nu=jax.tree_util.tree_map(jnp.copy, zeros))

    def update_fn(updates, state, params=None):
        del params
        require_state("worker_adam", state)
        _check_workers("worker_adam", updates, num_workers)
        count = optax.safe_int32_increment(state.count)
        mu = jax.tree_util.tree_map(
            lambda g, m: (b1 * m + (1.0 - b1) * g).astype(m.dtype), updates, state.mu)
        nu = jax.tree_util.tree_map(
            lambda g, v: (b2 * v + (1.0 - b2) * jnp.square(g)).astype(v.dtype),
            updates, state.nu)
        if bias_correction:
            t = count.astype(jnp.float32)
            c1 = 1.0 - jnp.power(jnp.asarray(b1, jnp.float32), t)
            c2 = 1.0 - jnp.power(jnp.asarray(b2, jnp.float32), t)
            mhat = jax.tree_util.tree_map(lambda m: (m / c1).astype(m.dtype), mu)
            vhat = jax.tree_util.tree_map(lambda v: (v / c2).astype(v.dtype), nu)
        else:
            mhat, vhat = mu, nu
        if output == "moments":
            out: Any = MomentPair(m=mhat, v=vhat)
        elif simplified:
            out = jax.tree_util.tree_map(
                lambda m, v: (m / jnp.sqrt(v + eps_root + eps)).astype(m.dtype),
                mhat, vhat)
        else:
            out = jax.tree_util.tree_map(
                lambda m, v: (m / (jnp.sqrt(v + eps_root) + eps)).astype(m.dtype),
                mhat, vhat)
        return out, WorkerAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)
