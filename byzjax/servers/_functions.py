"""Message delays, quorums and LiuBei's filters (pure, jit/vmap-able functions).

Conventions: senders are ordered correct first, Byzantine last (rows
``0 .. c-1`` correct, ``c .. s-1`` Byzantine), as the simulator orders workers.
A stack is a pytree whose leaves have a leading row axis; distances are
Euclidean over all leaves together.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from byzjax.aggregators import coordinate_median

PyTree = Any

__all__ = [
    "DELAY_DISTRIBUTIONS",
    "sample_delays",
    "quorum_indices",
    "gather_rows",
    "quorum_median",
    "tree_norm",
    "lipschitz_coefficient",
    "lipschitz_filter",
    "models_filter_threshold",
    "models_filter",
]

#: Distributions of the per-message delay of a correct sender.
DELAY_DISTRIBUTIONS = ("exponential", "uniform", "zero")


def sample_delays(key, *, num_receivers: int, num_senders: int,
                  num_byzantine_senders: int = 0, num_slow_senders: int = 0,
                  slow_factor: float = 10.0, distribution: str = "exponential",
                  self_first: bool = False) -> jax.Array:
    """Per-message delays ``float32[num_receivers, num_senders]``.

    A correct sender's message to each receiver takes an independent delay
    drawn from ``distribution`` (``"exponential"``: Exp(1); ``"uniform"``:
    U(0, 1); ``"zero"``: 0, ties then resolved by sender index). The first
    ``num_slow_senders`` correct senders are a fixed set of slow machines:
    their delays are multiplied by ``slow_factor``. Byzantine senders (the
    last ``num_byzantine_senders``) control their own timing: their messages
    arrive first (delay ``-1``), the worst case for the receivers. With
    ``self_first`` receiver ``i`` is sender ``i`` and its own message arrives
    before all others (delay ``-2``): a server always counts its own copy.

    Args:
      key: PRNG key.
      num_receivers: static number of receivers.
      num_senders: static number of senders.
      num_byzantine_senders: static; the last senders are Byzantine.
      num_slow_senders: static; the first correct senders are slow.
      slow_factor: delay multiplier of the slow senders (float, may be traced).
      distribution: static, one of :data:`DELAY_DISTRIBUTIONS`.
      self_first: static; receiver ``i`` is sender ``i``.

    Returns:
      ``float32[num_receivers, num_senders]``.

    Example:
      >>> import jax
      >>> d = sample_delays(jax.random.key(1), num_receivers=2, num_senders=3,
      ...                   num_byzantine_senders=1, distribution="zero",
      ...                   self_first=True)
      >>> d.tolist()
      [[-2.0, 0.0, -1.0], [0.0, -2.0, -1.0]]
    """
    shape = (num_receivers, num_senders)
    if distribution == "exponential":
        d = jax.random.exponential(key, shape, jnp.float32)
    elif distribution == "uniform":
        d = jax.random.uniform(key, shape, jnp.float32)
    elif distribution == "zero":
        d = jnp.zeros(shape, jnp.float32)
    else:
        raise ValueError(f"unknown delay distribution {distribution!r}; use one of "
                         f"{', '.join(DELAY_DISTRIBUTIONS)}")
    sender = jnp.arange(num_senders)[None, :]
    num_correct = num_senders - num_byzantine_senders
    d = jnp.where(sender < num_slow_senders, d * slow_factor, d)
    d = jnp.where(sender >= num_correct, -1.0, d)
    if self_first:
        d = jnp.where(jnp.arange(num_receivers)[:, None] == sender, -2.0, d)
    return d


def quorum_indices(delays: jax.Array, quorum: int) -> jax.Array:
    """The senders of the first ``quorum`` messages each receiver gets.

    Args:
      delays: ``[num_receivers, num_senders]`` (see :func:`sample_delays`).
      quorum: static number of messages a receiver waits for.

    Returns:
      ``int32[num_receivers, quorum]``, senders by arrival (ties by index).

    Example:
      >>> import jax.numpy as jnp
      >>> quorum_indices(jnp.array([[0.5, 0.1, 0.3], [0.0, 0.0, 0.0]]), 2).tolist()
      [[1, 2], [0, 1]]
    """
    return jnp.argsort(delays, axis=-1, stable=True)[:, :quorum].astype(jnp.int32)


def gather_rows(stack: PyTree, indices: jax.Array) -> PyTree:
    """Rows ``indices`` of every leaf: leaves ``[*indices.shape, *param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> gather_rows({"w": jnp.array([[1.0], [2.0], [3.0]])},
      ...             jnp.array([[2, 0]]))["w"].tolist()
      [[[3.0], [1.0]]]
    """
    return jax.tree_util.tree_map(lambda x: x[indices], stack)


def quorum_median(stack: PyTree, indices: jax.Array, *,
                  num_byzantine: int) -> PyTree:
    """Each receiver's coordinate-wise median of the rows in its quorum.

    GuanYu's model aggregation M (El Mhamdi et al., 2019, "SGD: Decentralized
    Byzantine Resilience"): receiver ``r`` takes the coordinate-wise median of
    ``stack[indices[r]]``.

    Args:
      stack: leaves ``[num_senders, *param_shape]``.
      indices: ``int32[num_receivers, quorum]`` from :func:`quorum_indices`.
      num_byzantine: static ``f`` (checked against ``quorum > 2 f``).

    Returns:
      Leaves ``[num_receivers, *param_shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"w": jnp.array([[1.0], [5.0], [2.0], [100.0]])}
      >>> quorum_median(x, jnp.array([[0, 1, 2], [1, 2, 3]]),
      ...               num_byzantine=1)["w"].tolist()
      [[2.0], [5.0]]
    """
    rows = gather_rows(stack, indices)
    return jax.vmap(lambda s: coordinate_median(s, num_byzantine=num_byzantine))(rows)


def tree_norm(tree: PyTree) -> jax.Array:
    """Euclidean norm over all leaves together (float32 scalar).

    Example:
      >>> import jax.numpy as jnp
      >>> float(tree_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}))
      5.0
    """
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                        for x in jax.tree_util.tree_leaves(tree)))


def _tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.subtract, a, b)


def lipschitz_coefficient(grad_new: PyTree, grad_old: PyTree, model_new: PyTree,
                          model_old: PyTree) -> jax.Array:
    """Empirical Lipschitz coefficient ``||g_new - g_old|| / ||x_new - x_old||``.

    LiuBei's Lipschitz filter (El Mhamdi, Guerraoui, Guirguis, Rouault, 2019,
    "Fast Machine Learning with Byzantine Workers and Servers") compares the
    growth of the gradient between a worker's previous model and a pulled model
    with the growth seen before. (The simulator evaluates both gradients on the
    worker's current mini-batch, so the coefficient measures the loss's
    smoothness, not the noise between two mini-batches.) Equal models give
    ``0`` (nothing moved); a model at distance ``0`` with a different gradient
    gives ``+inf``; non-finite inputs give ``+inf``.

    Returns:
      float32 scalar ``>= 0`` or ``+inf``.

    Example:
      >>> import jax.numpy as jnp
      >>> float(lipschitz_coefficient({"w": jnp.array([2.0, 0.0])},
      ...                             {"w": jnp.array([0.0, 0.0])},
      ...                             {"w": jnp.array([1.0, 0.0])},
      ...                             {"w": jnp.array([0.0, 0.0])}))
      2.0
    """
    num = tree_norm(_tree_sub(grad_new, grad_old))
    den = tree_norm(_tree_sub(model_new, model_old))
    k = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0),
                  jnp.where(num > 0, jnp.inf, 0.0))
    return jnp.where(jnp.isfinite(num) & jnp.isfinite(den), k, jnp.inf)


def lipschitz_filter(coefficient: jax.Array, history: jax.Array,
                     count: jax.Array, *, num_servers: int,
                     num_byzantine_servers: int) -> jax.Array:
    """LiuBei's Lipschitz filter: is ``coefficient`` plausible given the past?

    Accepts when ``coefficient`` is at most the ``(n_ps - f_ps) / n_ps``
    quantile of the worker's past coefficients (``history``, NaN where
    empty; the simulator records the coefficient of every first pull, at most
    a share ``f_ps / n_ps`` of which come from Byzantine servers). With
    fewer than ``n_ps`` past coefficients the filter has nothing to compare
    with and accepts (a choice of this implementation).

    Args:
      coefficient: float scalar from :func:`lipschitz_coefficient`.
      history: ``float32[H]`` ring of past coefficients, NaN if empty.
      count: int scalar, coefficients recorded so far.
      num_servers: static ``n_ps``.
      num_byzantine_servers: static ``f_ps``.

    Returns:
      bool scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> h = jnp.array([1.0, 2.0, 3.0, 4.0, jnp.nan])
      >>> bool(lipschitz_filter(jnp.float32(3.0), h, jnp.int32(4), num_servers=4,
      ...                       num_byzantine_servers=1))
      True
      >>> bool(lipschitz_filter(jnp.float32(9.0), h, jnp.int32(4), num_servers=4,
      ...                       num_byzantine_servers=1))
      False
    """
    q = (num_servers - num_byzantine_servers) / num_servers
    safe = jnp.where(jnp.all(jnp.isnan(history)), 0.0, history)
    bound = jnp.nanquantile(safe, q)
    return (count < num_servers) | (coefficient <= bound)


def models_filter_threshold(learning_rate, *, clip_norm, num_workers: int,
                            num_byzantine: int, steps_since_gather,
                            steps_since_reference=1) -> jax.Array:
    """The largest distance a correct server's model may have moved from the
    worker's reference model: ``lr * C * sqrt(n - f) * (a + 2 s)``.

    Why (this implementation's bound; the paper states the filter through the
    GAR's guarantee without a closed form usable in a simulation): every
    correct worker sends a vector of norm at most the clipping radius ``C``;
    a GAR whose output lies, coordinate by coordinate, within the range of the
    ``n - f`` correct vectors (coordinate-wise median, trimmed mean, MeaMed,
    Krum's choice among correct rows, ...) has output norm at most
    ``sqrt(n - f) C``, so one server step moves a model by at most
    ``B = lr sqrt(n - f) C``. The worker's reference is a correct server's
    model of ``a`` steps ago (``steps_since_reference``), and between two
    gathers correct servers may drift apart by ``2 B`` per step, hence the
    factor ``a + 2 s`` after ``s`` steps since the last gather.

    Example:
      >>> float(models_filter_threshold(0.5, clip_norm=2.0, num_workers=5,
      ...                               num_byzantine=1, steps_since_gather=1))
      6.0
    """

    scale = math.sqrt(num_workers - num_byzantine)
    return (jnp.asarray(learning_rate, jnp.float32) * clip_norm * scale
            * (jnp.asarray(steps_since_reference, jnp.float32)
               + 2.0 * jnp.asarray(steps_since_gather, jnp.float32)))


def models_filter(model_new: PyTree, model_old: PyTree, threshold) -> jax.Array:
    """LiuBei's models filter: ``model_new`` finite and within ``threshold`` of
    ``model_old`` (see :func:`models_filter_threshold`).

    Example:
      >>> import jax.numpy as jnp
      >>> old = {"w": jnp.zeros(2)}
      >>> bool(models_filter({"w": jnp.array([3.0, 4.0])}, old, 5.0))
      True
      >>> bool(models_filter({"w": jnp.array([3.0, jnp.inf])}, old, 5.0))
      False
    """
    dist = tree_norm(_tree_sub(model_new, model_old))
    return jnp.isfinite(dist) & (dist <= threshold)
