"""LiuBei's filters and pull schedule as the authors' public code computes them.

The authors' code of LiuBei (El Mhamdi, Guerraoui, Guirguis, Rouault, 2019/2022,
"Fast Machine Learning with Byzantine Workers and Servers", arXiv:1911.07537)
is the ``--smart`` path of ``tensorflow_impl/applications/Garfield_legacy``
in the Garfield repository (LPD-EPFL/Garfield; Guerraoui, Guirguis, Plassmann,
Ragot, Rouault, "Garfield: System Support for Byzantine Machine Learning",
DSN 2021). Its worker, ``byzWorker.py``, computes:

* the Lipschitz coefficient ``||g_t - g_{t-1}|| / ||x_t - x_{t-1}||`` of its
  own successive gradients and models (each gradient on its own mini-batch),
  appended to a list; the threshold is ``np.percentile`` of the list at
  ``100 (n_ps - f_ps) / n_ps`` (linear interpolation), the current value
  included; when the list reaches 100 values it is cut to the last 50, so
  the percentile sees between 51 and 100 values once 100 were recorded
  (:func:`garfield_window`);
* the models bound ``lr ||g_t|| ((3T + 2)(n_w - f_w) / (4 f_w) + 2 ((t - 1)
  mod T))`` with ``T = int(1 / (3 l lr))``, ``l = 1`` (only if ``f_w > 0``);
* one server chosen at random once per worker (``(next_ps + 1) mod n_ps``),
  read every iteration, and every ``T`` iterations all servers' outputs
  aggregated with its ``krum`` (Multi-Krum, ``m = n_ps - f_ps - 2``).

It prints the coefficient, the threshold, the distance and the bound (with
``--log``) and compares none of them: the filters never change training.
``docs/SERVERS.md`` lists every difference with byzjax's derived thresholds.
The simulator uses these functions with ``liubei_filters="garfield"``
(:mod:`byzjax.sim._liubei`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from byzjax import aggregators

PyTree = Any

__all__ = [
    "GARFIELD_HISTORY",
    "GARFIELD_KEEP",
    "garfield_window",
    "garfield_record",
    "garfield_lipschitz_threshold",
    "garfield_models_bound",
    "garfield_gathers",
    "garfield_pulled_models",
    "upper_median",
]

#: Length at which the code cuts its list of Lipschitz coefficients ...
GARFIELD_HISTORY = 100
#: ... and how many of the last values it keeps.
GARFIELD_KEEP = 50


def garfield_window(count) -> jax.Array:
    """How many past coefficients the code's percentile sees after ``count``
    appends: ``count`` up to 100, then ``51 + (count - 101) mod 50`` (the list
    is cut to 50 after the percentile of its 100th value).

    Args:
      count: int scalar (or array), coefficients appended so far, ``>= 1``.

    Returns:
      int32 of ``count``'s shape, in ``[1, 100]``.

    Example:
      >>> garfield_window(jnp.array([1, 100, 101, 150, 151])).tolist()
      [1, 100, 51, 100, 51]
    """
    count = jnp.asarray(count, jnp.int32)
    cycle = GARFIELD_HISTORY - GARFIELD_KEEP
    after = GARFIELD_KEEP + 1 + (count - GARFIELD_HISTORY - 1) % cycle
    return jnp.where(count <= GARFIELD_HISTORY, count, after).astype(jnp.int32)


def garfield_record(history: jax.Array, count: jax.Array,
                    value: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Appends ``value`` to the ring ``history`` (value number ``count + 1``
    goes to slot ``count mod 100``).

    Args:
      history: ``float32[100]`` ring of past coefficients.
      count: int32 scalar, values appended so far.
      value: float scalar.

    Returns:
      ``(history, count + 1)``.

    Example:
      >>> h, c = garfield_record(jnp.zeros(100), jnp.int32(0), jnp.float32(2.0))
      >>> float(h[0]), int(c)
      (2.0, 1)
    """
    slot = count % GARFIELD_HISTORY
    history = history.at[slot].set(jnp.asarray(value, history.dtype))
    return history, count + 1


def _lerp(a, b, t):
    # numpy's _lerp (its percentile's linear interpolation), formula for formula.
    d = b - a
    return jnp.where(t >= 0.5, b - d * (1 - t), a + d * t)


def garfield_lipschitz_threshold(history: jax.Array, count: jax.Array, *,
                                 num_servers: int,
                                 num_byzantine_servers: int) -> jax.Array:
    """The code's threshold: ``np.percentile`` at ``100 (n_ps - f_ps) / n_ps``
    of the last :func:`garfield_window` ``(count)`` values of the ring.

    Linear interpolation between order statistics, as NumPy's default; a NaN
    among the values gives NaN, as NumPy does. Call after
    :func:`garfield_record` (the code's percentile includes the current value).

    Args:
      history: ``float32[100]`` ring written by :func:`garfield_record`.
      count: int32 scalar ``>= 1``, values appended so far.
      num_servers: static ``n_ps``.
      num_byzantine_servers: static ``f_ps``.

    Returns:
      float32 scalar.

    Example (under ``jax.jit``, as the simulator calls it):
      >>> import functools
      >>> threshold = jax.jit(functools.partial(
      ...     garfield_lipschitz_threshold, num_servers=3, num_byzantine_servers=1))
      >>> h = jnp.zeros(100).at[:4].set(jnp.array([4.0, 1.0, 3.0, 2.0]))
      >>> float(threshold(h, jnp.int32(4)))  # np.percentile([4, 1, 3, 2], 200 / 3)
      3.0
    """
    size = history.shape[-1]
    if size != GARFIELD_HISTORY:
        raise ValueError(f"history must have {GARFIELD_HISTORY} slots, got {size}")
    window = garfield_window(count)
    slots = jnp.arange(size)
    age = (count - 1 - slots) % size  # 0: the value just recorded
    valid = age < window
    values = jnp.where(valid, history, jnp.inf)
    has_nan = jnp.any(valid & jnp.isnan(history))
    ordered = jnp.sort(jnp.where(jnp.isnan(values), jnp.inf, values))
    # Virtual index q (L - 1) with q = (n_ps - f_ps) / n_ps, as NumPy's float
    # arithmetic (q/100 of the code's percentile q).
    q = (100.0 * (num_servers - num_byzantine_servers) / num_servers) / 100.0
    pos = jnp.float32(q) * (window - 1).astype(jnp.float32)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, window - 1)
    t = pos - lo.astype(jnp.float32)
    out = _lerp(ordered[lo], ordered[hi], t)
    return jnp.where(has_nan, jnp.nan, out).astype(jnp.float32)


def garfield_models_bound(learning_rate, grad_norm, *, num_workers: int,
                          num_byzantine: int, period: int, step) -> jax.Array:
    """The code's models bound ``lr ||g|| ((3T + 2)(n - f) / (4 f) + 2 ((t - 1)
    mod T))``.

    Args:
      learning_rate: float (traced) ``lr``.
      grad_norm: float, the norm of the worker's current gradient ``||g_t||``.
      num_workers: static ``n_w``.
      num_byzantine: static ``f_w >= 1`` (the code computes nothing if 0).
      period: static ``T`` (the code: ``int(1 / (3 lr))``).
      step: int, the iteration ``t >= 1``.

    Returns:
      float32 scalar.

    Raises:
      ValueError: ``num_byzantine < 1`` or ``period < 1``.

    Example:
      >>> float(garfield_models_bound(0.1, 2.0, num_workers=5, num_byzantine=1,
      ...                             period=2, step=2))  # 0.2 (8 * 4 / 4 + 2)
      2.0
    """
    if num_byzantine < 1 or period < 1:
        raise ValueError(f"garfield_models_bound needs num_byzantine >= 1 and "
                         f"period >= 1, got {num_byzantine} and {period}")
    base = (3 * period + 2) * (num_workers - num_byzantine) / (4 * num_byzantine)
    drift = 2.0 * ((jnp.asarray(step, jnp.int32) - 1) % period).astype(jnp.float32)
    return (jnp.asarray(learning_rate, jnp.float32)
            * jnp.asarray(grad_norm, jnp.float32) * (jnp.float32(base) + drift))


def garfield_gathers(step, *, period: int) -> tuple[jax.Array, jax.Array]:
    """Which iterations gather, as the code's ``iteration_num % T == 0``.

    Returns:
      ``(workers, servers)`` bool scalars: workers read every server at
      ``t > 0`` (at ``t = 0`` they hold the initial model and read none);
      servers exchange at every ``t`` divisible by ``T``, ``t = 0`` included.

    Example:
      >>> [tuple(map(bool, garfield_gathers(t, period=3))) for t in (0, 1, 3)]
      [(False, True), (False, False), (True, True)]
    """
    step = jnp.asarray(step, jnp.int32)
    servers = step % period == 0
    return servers & (step > 0), servers


def upper_median(stack: PyTree, *, num_byzantine: int = 0) -> PyTree:
    """Coordinate-wise median taking, for even ``n``, the upper middle value
    (the ``(n // 2)``-th of the sorted values, 0-based), as the code's
    ``median`` operation (``native/op_median``); for odd ``n`` the median.

    Example:
      >>> x = {"w": jnp.array([[1.0], [4.0], [2.0], [3.0]])}
      >>> upper_median(x)
      {'w': Array([3.], dtype=float32)}
    """
    neg = jax.tree_util.tree_map(jnp.negative, stack)
    low = aggregators.coordinate_median(neg, num_byzantine=num_byzantine, lower=True)
    return jax.tree_util.tree_map(jnp.negative, low)


def garfield_pulled_models(served: PyTree, initial: PyTree, start: jax.Array,
                           step, *, period: int,
                           num_byzantine_servers: int) -> tuple[PyTree, jax.Array]:
    """The model each worker computes its gradient at, by the code's schedule.

    Iteration 0: the initial (unified) model; an iteration ``t > 0``
    divisible by ``T``: the Multi-Krum (``m = n_ps - f_ps - 2``) of every
    server's model, the same for all workers; otherwise the model of the
    worker's own server ``start``, fixed for the whole run.

    Args:
      served: what the servers send, leaves ``[n_ps, ...]`` (correct rows
        first); ``n_ps >= 2 f_ps + 3`` (Multi-Krum).
      initial: the initial model, leaves ``[...]``.
      start: ``int32[n]``, each worker's server.
      step: int scalar ``t``.
      period: static ``T``.
      num_byzantine_servers: static ``f_ps``.

    Returns:
      ``(models, reads)``: leaves ``[n, ...]``, and the number of server
      models each worker read (0, 1 or ``n_ps``).

    Example (under ``jax.jit``, as the simulator calls it):
      >>> import functools
      >>> pulled = jax.jit(functools.partial(garfield_pulled_models, period=3,
      ...                                    num_byzantine_servers=1))
      >>> served = {"w": jnp.arange(5.0)[:, None]}
      >>> models, reads = pulled(served, {"w": jnp.zeros(1)}, jnp.array([4, 1]), 1)
      >>> models["w"][:, 0].tolist(), int(reads)
      ([4.0, 1.0], 1)
    """
    n_ps = jax.tree_util.tree_leaves(served)[0].shape[0]
    gather, _ = garfield_gathers(step, period=period)
    first = jnp.asarray(step, jnp.int32) == 0
    krum = aggregators.multi_krum(served, num_byzantine=num_byzantine_servers,
                                  num_selected=n_ps - num_byzantine_servers - 2)

    def pick(s, k, i):
        own = s[start]
        shape = own.shape
        out = jnp.where(gather, jnp.broadcast_to(k, shape), own)
        return jnp.where(first, jnp.broadcast_to(i, shape), out)

    models = jax.tree_util.tree_map(pick, served, krum, initial)
    reads = jnp.where(first, 0, jnp.where(gather, n_ps, 1)).astype(jnp.int32)
    return models, reads
