"""Worst-case resilience of an aggregator, estimated by optimisation.

A rule ``F`` is an *(f, lambda)-resilient averaging* rule (Farhadkhani,
Guerraoui, Gupta, Pinot, Stephan, "Byzantine Machine Learning Made Easy by
Resilient Averaging of Momentums", ICML 2022) when, for every input with at
most ``f`` Byzantine rows and ``H`` the honest rows,

    ``||F(x) - mean(x_H)|| <= lambda * max_{i, j in H} ||x_i - x_j||``.

No rule can do better than ``lambda = f / (n - f)``. The papers state upper
bounds per rule (:func:`stated_bound`); :func:`estimate_lambda` searches for the
inputs that make the ratio largest, for any registered rule, by gradient ascent
on both the honest configuration and the Byzantine rows: every byzjax rule is a
jit-compiled function that is differentiable almost everywhere, so the whole
search, over many restarts, is one vmapped, jitted program.

Normalisation. The ratio is invariant to translating and scaling the input for
translation- and scale-equivariant rules (all but centered clipping, whose
radius is absolute, and the smoothing of the geometric median). The search
therefore fixes the honest rows' mean at 0 and their diameter at 1, and keeps
every Byzantine row within ``byzantine_radius`` of the honest mean: the ratio
of a configuration is then simply ``||F(x)||``. Without that radius the mean's
ratio is unbounded (one Byzantine row moves it anywhere), which is what the
radius is for: the estimate of a robust rule stays bounded as it grows.

Starts. Restarts are spread over structured starting points, since gradient
ascent from one start finds a local maximum only: Gaussian honest and
Byzantine rows; A Little Is Enough-like (identical Byzantine rows at
``-z sigma`` of the honest rows); collinear honest rows with the Byzantine rows
far along the same line; two honest clusters with the Byzantine rows on one
side; identical Byzantine rows on the segment from an honest row at the edge
of the cloud towards its centre, or just beyond that row (where selection rules
such as MDA and Krum pick them and drop an honest row); far outliers at the
radius.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from byzjax import aggregators

__all__ = [
    "LambdaEstimate",
    "estimate_lambda",
    "random_search_lambda",
    "lower_bound",
    "stated_bound",
]

STARTS = ("gaussian", "alie", "collinear", "clusters", "edge", "far")


class LambdaEstimate(NamedTuple):
    """Result of :func:`estimate_lambda` or :func:`random_search_lambda`.

    Attributes:
      value: float scalar, the largest ratio found.
      honest: ``[n - f, dim]``, the honest rows that achieved it (mean 0,
        diameter 1).
      byzantine: ``[f, dim]``, the Byzantine rows that achieved it.
      per_restart: ``[num_restarts]``, the best ratio of each restart.
    """

    value: jax.Array
    honest: jax.Array
    byzantine: jax.Array
    per_restart: jax.Array


def lower_bound(*, num_workers: int, num_byzantine: int) -> float:
    """``f / (n - f)``: no aggregation rule has a smaller ``lambda``.

    Example:
      >>> lower_bound(num_workers=15, num_byzantine=5)
      0.5
    """
    return num_byzantine / (num_workers - num_byzantine)


def stated_bound(name: str, *, num_workers: int, num_byzantine: int,
                 dim: int) -> float | None:
    """The upper bound on ``lambda`` the sources state for a rule, or None.

    The sources state these up to constants (Farhadkhani et al. 2022, and the
    talk presenting their lambda table, disagree on constants), so they are
    orders of magnitude rather than sharp constants; only MDA's ``2f/(n-f)``
    is proven with its constant (the mean of any ``n - f`` rows within the
    honest diameter of each other). Rules without a stated bound (mean,
    Phocas, Multi-Krum, Bulyan, centered clipping) give None.

    Example:
      >>> stated_bound("mda", num_workers=15, num_byzantine=5, dim=10)
      1.0
    """
    n, f, d = num_workers, num_byzantine, dim
    name = aggregators.entry(name).name
    spread = min(2.0 * math.sqrt(n - f), math.sqrt(d))
    if name == "mda":
        return 2.0 * f / (n - f)
    if name == "trimmed_mean":
        return f / (n - f) * spread
    if name == "coordinate_median":
        return n / (2.0 * (n - f)) * spread
    if name == "meamed":
        return 2.0 * f / (n - f) * spread
    if name == "geometric_median":
        return 1.0 + (n - f) / (2.0 * math.sqrt(n * (n - 2 * f)))
    if name == "krum":
        return 1.0 + math.sqrt((n - f) / (n - 2 * f))
    return None


def _make_rule(aggregator, aggregator_kwargs, preaggregator, preaggregator_kwargs,
               num_workers, num_byzantine) -> Callable[[jax.Array], jax.Array]:
    """``[n, dim] -> [dim]``: the pipeline (pre-aggregation, aggregation)."""
    if isinstance(aggregator, str):
        entry = aggregators.check(aggregator, num_workers=num_workers,
                                  num_byzantine=num_byzantine)
        agg = entry.fn
        if entry.needs_key:
            raise ValueError(f"estimate_lambda: {entry.name!r} is random; pass a "
                             "deterministic rule")
        if entry.needs_reference and "reference" not in (aggregator_kwargs or {}):
            raise ValueError(f"estimate_lambda: {entry.name!r} needs the server's "
                             "own update; pass aggregator_kwargs={'reference': "
                             "{'x': g0}} with g0 of shape [dim]")
    elif callable(aggregator):
        agg = aggregator
    else:
        raise TypeError("estimate_lambda: aggregator must be a registered name or a "
                        f"callable, got {aggregator!r}")
    agg_kwargs = dict(aggregator_kwargs or {})
    pre = None
    if preaggregator is not None:
        pre_entry = aggregators.PREAGGREGATORS.check(
            preaggregator, num_workers=num_workers, num_byzantine=num_byzantine)
        pre = pre_entry.fn
        pre_kwargs = dict(preaggregator_kwargs or {})
        if pre_entry.needs_key and "key" not in pre_kwargs:
            pre_kwargs["key"] = jax.random.key(0)

    def rule(x):
        tree = {"x": x}
        if pre is not None:
            tree = pre(tree, num_byzantine=num_byzantine, **pre_kwargs)
        return agg(tree, num_byzantine=num_byzantine, **agg_kwargs)["x"]

    return rule


def _normalise(honest, byzantine, radius):
    """Honest rows to mean 0 and diameter 1; Byzantine rows within ``radius``."""
    centred = honest - jnp.mean(honest, axis=0)
    d2 = jnp.sum((centred[:, None, :] - centred[None, :, :]) ** 2, axis=-1)
    diameter = jnp.sqrt(jnp.max(d2) + 1e-30)
    h = centred / diameter
    norms = jnp.sqrt(jnp.sum(byzantine ** 2, axis=-1, keepdims=True) + 1e-30)
    b = byzantine * jnp.minimum(1.0, radius / norms)
    return h, b


def _ratio(rule, honest, byzantine, radius):
    h, b = _normalise(honest, byzantine, radius)
    out = rule(jnp.concatenate([h, b], axis=0))
    value = jnp.sqrt(jnp.sum(out ** 2))
    return jnp.where(jnp.isfinite(value), value, 0.0), (h, b)


def _starts(key, num_restarts, h, f, dim, radius):
    """``[R, h, dim]`` and ``[R, f, dim]`` starting points, kinds in turn."""
    k_kind = [(num_restarts + len(STARTS) - 1 - i) // len(STARTS)
              for i in range(len(STARTS))]
    honest, byz = [], []
    for kind, count, k in zip(STARTS, k_kind, jax.random.split(key, len(STARTS))):
        if count == 0:
            continue
        k1, k2, k3 = jax.random.split(k, 3)
        hh = jax.random.normal(k1, (count, h, dim))
        direction = jax.random.normal(k2, (count, 1, dim))
        direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
        if kind == "gaussian":
            bb = 0.5 * radius * jax.random.normal(k3, (count, f, dim)) / math.sqrt(dim)
        elif kind == "alie":
            z = jax.random.uniform(k3, (count, 1, 1), minval=0.5, maxval=3.0)
            sigma = jnp.std(hh, axis=1, keepdims=True, ddof=1 if h > 1 else 0)
            bb = jnp.broadcast_to(jnp.mean(hh, 1, keepdims=True) - z * sigma,
                                  (count, f, dim))
        elif kind == "collinear":
            t = jax.random.uniform(k3, (count, h, 1), minval=-0.5, maxval=0.5)
            hh = t * direction + 1e-3 * hh
            bb = jnp.broadcast_to(0.5 * radius * direction, (count, f, dim))
        elif kind == "clusters":
            side = jnp.where(jnp.arange(h) < h // 2, -0.5, 0.5)[None, :, None]
            hh = side * direction + 1e-2 * hh
            bb = jnp.broadcast_to(direction, (count, f, dim))
        elif kind == "edge":
            centre = jnp.mean(hh, axis=1, keepdims=True)
            t = jax.random.uniform(k3, (count, 1, 1), minval=-0.3, maxval=0.7)
            out = hh[:, :1] + t * (centre - hh[:, :1])
            bb = jnp.broadcast_to(out, (count, f, dim))
        else:  # far
            bb = jnp.broadcast_to(radius * direction, (count, f, dim))
        if kind in ("alie", "edge"):
            # built from the raw honest rows: into the units of the search
            # (honest mean 0, diameter 1), as _normalise will see the rows
            centre = jnp.mean(hh, axis=1, keepdims=True)
            d2 = jnp.sum((hh[:, :, None] - hh[:, None]) ** 2, axis=-1)
            diameter = jnp.sqrt(jnp.max(d2, axis=(1, 2)))[:, None, None]
            bb = (bb - centre) / diameter
        honest.append(hh)
        byz.append(bb)
    return jnp.concatenate(honest), jnp.concatenate(byz)


def _validate(num_workers, num_byzantine, dim, num_restarts, num_steps, radius):
    for label, v, low in (("num_workers", num_workers, 2), ("num_byzantine",
                          num_byzantine, 1), ("dim", dim, 1),
                          ("num_restarts", num_restarts, 1),
                          ("num_steps", num_steps, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"estimate_lambda: {label} must be an int >= {low}, "
                             f"got {v!r}")
    if not 2 * num_byzantine < num_workers:
        raise ValueError(f"estimate_lambda: needs num_byzantine < num_workers / 2, "
                         f"got n={num_workers}, f={num_byzantine}")
    if not radius > 0:
        raise ValueError(f"estimate_lambda: byzantine_radius must be > 0, got {radius}")


def estimate_lambda(
    aggregator: str | Callable[..., Any],
    *,
    num_workers: int,
    num_byzantine: int,
    dim: int,
    key: jax.Array,
    aggregator_kwargs: dict[str, Any] | None = None,
    preaggregator: str | None = None,
    preaggregator_kwargs: dict[str, Any] | None = None,
    num_restarts: int = 40,
    num_steps: int = 150,
    learning_rate: float = 0.02,
    byzantine_radius: float = 10.0,
    optimizer: optax.GradientTransformation | None = None,
) -> LambdaEstimate:
    """Estimates a rule's worst-case ``lambda`` by gradient ascent over inputs.

    Every restart optimises the honest rows ``[n - f, dim]`` and the Byzantine
    rows ``[f, dim]`` for ``num_steps`` steps of ``optimizer`` (default
    ``optax.adam(learning_rate)``) on the ratio ``||F(x) - mean_H|| / diam_H``
    (module docstring), keeping the best configuration met along the way. All
    restarts run in one ``jit(vmap(...))`` program; the result is a lower
    estimate of the rule's ``lambda``, never an upper bound.

    Args:
      aggregator: registered aggregator name, or a callable with the
        aggregator signature.
      num_workers: static ``n``.
      num_byzantine: static ``f >= 1``, ``n > 2f`` (and the rule's own
        requirement).
      dim: static dimension of the rows.
      key: PRNG key for the starting points.
      aggregator_kwargs: keyword arguments of the rule.
      preaggregator: optional registered pre-aggregator name applied first.
      preaggregator_kwargs: its keyword arguments.
      num_restarts: static number of restarts (spread over the starts in
        ``STARTS``).
      num_steps: static number of ascent steps per restart.
      learning_rate: step size of the default optimiser.
      byzantine_radius: largest distance of a Byzantine row from the honest
        mean, in honest diameters.
      optimizer: optional optax optimiser (it *minimises*; the loss is the
        negated ratio).

    Returns:
      A :class:`LambdaEstimate`.

    Example:
      >>> import jax
      >>> est = estimate_lambda("trimmed_mean", num_workers=7, num_byzantine=2,
      ...                       dim=3, key=jax.random.key(0), num_restarts=5,
      ...                       num_steps=20)
      >>> bound = stated_bound("trimmed_mean", num_workers=7, num_byzantine=2, dim=3)
      >>> bool(0.0 < est.value <= bound)
      True
    """
    _validate(num_workers, num_byzantine, dim, num_restarts, num_steps,
              byzantine_radius)
    rule = _make_rule(aggregator, aggregator_kwargs, preaggregator,
                      preaggregator_kwargs, num_workers, num_byzantine)
    h, f = num_workers - num_byzantine, num_byzantine
    tx = optax.adam(learning_rate) if optimizer is None else optimizer
    radius = float(byzantine_radius)
    honest0, byz0 = _starts(key, num_restarts, h, f, dim, radius)

    def climb(honest, byzantine):
        params = (honest, byzantine)

        def loss(p):
            value, _ = _ratio(rule, p[0], p[1], radius)
            return -value

        def step(carry, _):
            p, state, best, best_p = carry
            value, grads = jax.value_and_grad(loss)(p)
            grads = jax.tree_util.tree_map(
                lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)
            better = -value > best
            best_p = jax.tree_util.tree_map(
                lambda a, b: jnp.where(better, a, b), p, best_p)
            best = jnp.maximum(best, -value)
            updates, state = tx.update(grads, state, p)
            return (optax.apply_updates(p, updates), state, best, best_p), None

        init = (params, tx.init(params), jnp.asarray(-jnp.inf), params)
        # num_steps + 1 evaluations: the final point counts too (its update is
        # unused). One copy of the rule's forward and backward program, not a
        # second forward one after the loop: the rules' unrolled sorting
        # networks make that program large, and its compilation dominates.
        (_, _, best, best_p), _ = jax.lax.scan(step, init, None,
                                               length=num_steps + 1)
        return best, best_p

    @jax.jit
    def run(honest, byz):
        values, (hs, bs) = jax.vmap(climb)(honest, byz)
        i = jnp.argmax(values)
        h_best, b_best = _normalise(hs[i], bs[i], radius)
        return LambdaEstimate(values[i], h_best, b_best, values)

    return run(honest0, byz0)


def random_search_lambda(
    aggregator: str | Callable[..., Any],
    *,
    num_workers: int,
    num_byzantine: int,
    dim: int,
    key: jax.Array,
    num_samples: int,
    aggregator_kwargs: dict[str, Any] | None = None,
    preaggregator: str | None = None,
    preaggregator_kwargs: dict[str, Any] | None = None,
    byzantine_radius: float = 10.0,
    chunk_size: int = 256,
) -> LambdaEstimate:
    """The same ratio maximised by random sampling: the baseline to beat.

    Draws ``num_samples`` configurations from the starting distribution of
    :func:`estimate_lambda` (give it ``num_restarts * (num_steps + 1)`` for the
    same budget of rule evaluations) and keeps the best.

    Example:
      >>> import jax
      >>> est = random_search_lambda("mean", num_workers=5, num_byzantine=1,
      ...                            dim=2, key=jax.random.key(0), num_samples=50)
      >>> bool(est.value > 0)
      True
    """
    _validate(num_workers, num_byzantine, dim, num_samples, 0, byzantine_radius)
    rule = _make_rule(aggregator, aggregator_kwargs, preaggregator,
                      preaggregator_kwargs, num_workers, num_byzantine)
    h, f = num_workers - num_byzantine, num_byzantine
    radius = float(byzantine_radius)
    chunks = -(-num_samples // chunk_size)
    honest, byz = _starts(key, chunks * chunk_size, h, f, dim, radius)
    perm = jax.random.permutation(jax.random.fold_in(key, 1), chunks * chunk_size)
    honest, byz = honest[perm], byz[perm]
    valid = jnp.arange(chunks * chunk_size) < num_samples

    @jax.jit
    def run(honest, byz):
        values = jax.lax.map(
            lambda hb: jax.vmap(lambda a, b: _ratio(rule, a, b, radius)[0])(*hb),
            (honest.reshape(chunks, chunk_size, h, dim),
             byz.reshape(chunks, chunk_size, f, dim))).reshape(-1)
        values = jnp.where(valid, values, -jnp.inf)
        i = jnp.argmax(values)
        h_best, b_best = _normalise(honest[i], byz[i], radius)
        return LambdaEstimate(values[i], h_best, b_best, values[:num_samples])

    return run(honest, byz)
