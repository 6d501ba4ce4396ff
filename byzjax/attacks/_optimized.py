"""An attack optimised through the server's own pipeline, every round.

A Little Is Enough and Fall of Empires search one direction with one scalar;
their adaptive versions pick the scalar from a grid. Because every byzjax rule
is a compiled function that is differentiable almost everywhere, the attacker
can do more: start from the most damaging ALIE/FOE candidate and take a few
steps of an optax optimiser on the Byzantine row itself, differentiating the
damage through the server's pre-aggregation and aggregation. All Byzantine
workers send that one row (identical rows, as ALIE and FOE send).

Objectives (maximised):

* ``"distance"``: ``||F(x) - gbar||``, the deviation of the aggregate from the
  honest mean (what the adaptive attacks and ByzFL's ``Optimal_*`` maximise);
* ``"inner_product"``: ``-<F(x), gbar>``, pushing the aggregate against the
  honest direction (Fall of Empires' aim).

Stealth constraints (the row stays where a detector would not see it):

* ``"zscore"`` (default): every coordinate within ``z`` honest standard
  deviations of the honest mean, ``|b_k - gbar_k| <= z sigma_k``;
* ``"norm_ball"``: ``||b - gbar|| <= z max_i ||h_i - gbar||``, within ``z``
  times the honest rows' own radius;
* ``None``: unconstrained.

Cost per call: ``2 K`` evaluations of the server's rule for the ``K``
starting candidates (vmapped), then ``num_steps`` evaluations with their
gradients (a ``lax.scan``). Traced once: ``num_steps``, the objective and the
constraint are static; ``z`` and ``learning_rate`` may be traced.

References:
  Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For
  Distributed Learning", NeurIPS 2019, https://arxiv.org/abs/1902.06156;
  Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner
  Product Manipulation", UAI 2020, https://arxiv.org/abs/1903.03936;
  Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
  Poisoning Attacks and Defenses for Federated Learning", NDSS 2021 (attacks
  optimised against the aggregation rule).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import optax

from byzjax._registry import at_least
from byzjax._tree import PyTree, num_rows
from byzjax.attacks._adaptive import DEFAULT_CANDIDATES, server_view, tree_distance
from byzjax.attacks._base import (
    ATTACKS,
    honest_mean,
    honest_std,
    repeat_rows,
)

__all__ = ["optimized"]

_OBJECTIVES = ("distance", "inner_product")
_CONSTRAINTS = ("zscore", "norm_ball", None)


def _tree_dot(a: PyTree, b: PyTree) -> jax.Array:
    return jnp.asarray(sum(jnp.sum((x * y).astype(jnp.float32))
               for x, y in zip(jax.tree_util.tree_leaves(a),
                               jax.tree_util.tree_leaves(b))))


@ATTACKS.register("optimized", adaptive=True, aliases=("optimised",),
                  min_workers=lambda f: f + 2,
                  requirement="n >= f + 2 (the standard deviation needs 2 honest rows)",
                  keywords={"z": at_least(0), "num_steps": at_least(0),
                            "learning_rate": at_least(0)},
                  strength="z", display_name="optimised (worst-case)",
                  short_name="OPT", order=15)
def optimized(
    honest: PyTree,
    *,
    num_byzantine: int,
    aggregator: str | Callable[..., PyTree],
    aggregator_kwargs: dict | None = None,
    preaggregator: str | Callable[..., PyTree] | None = None,
    preaggregator_kwargs: dict | None = None,
    objective: Literal["distance", "inner_product"] = "distance",
    constraint: Literal["zscore", "norm_ball"] | None = "zscore",
    z: float | jax.Array = 3.0,
    num_steps: int = 10,
    learning_rate: float | jax.Array = 0.2,
    candidates: Any = None,
    key: jax.Array | None = None,
) -> PyTree:
    """Byzantine rows optimised against the server's pipeline (module docstring).

    The row starts at the most damaging of ALIE and FOE over ``candidates``
    (projected onto the constraint), then ``num_steps`` steps of Adam move it in
    units of the constraint's scale (``sigma`` per coordinate for
    ``"zscore"`` and no constraint, the honest radius for ``"norm_ball"``);
    the best row met (the start included) is sent. With ``constraint=None`` it
    is therefore at least as damaging as ALIE and FOE with any of the
    candidate strengths, their adaptive versions included.

    Args:
      honest: leaves ``[n_honest, *param_shape]``, ``n_honest >= 2``.
      num_byzantine: static number of Byzantine rows.
      aggregator: the server's rule, a registered name or a callable.
      aggregator_kwargs: its keyword arguments; a ``num_byzantine`` entry is
        the declared ``f`` the server uses (the simulator sets it).
      preaggregator: optional pre-aggregation the server applies first.
      preaggregator_kwargs: its keyword arguments.
      objective: static, ``"distance"`` or ``"inner_product"``.
      constraint: static, ``"zscore"``, ``"norm_ball"`` or None.
      z: the constraint's size (float or traced scalar).
      num_steps: static number of optimiser steps.
      learning_rate: Adam's step size, in units of the constraint's scale.
      candidates: starting strengths for ALIE and FOE (1-D), default
        :data:`byzjax.attacks.DEFAULT_CANDIDATES` with 1.1 and 1.5 added.
      key: PRNG key, only used by a random pre-aggregator or aggregator.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``, every row equal.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> honest = {"w": jnp.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [1.0, 4.0]])}
      >>> rows = attacks.optimized(honest, num_byzantine=2, aggregator="trimmed_mean",
      ...                          z=1.0)
      >>> rows["w"].shape
      (2, 2)
    """
    n_honest = num_rows(honest)
    if objective not in _OBJECTIVES:
        raise ValueError(f"optimized: objective must be one of {_OBJECTIVES}, got "
                         f"{objective!r}")
    if constraint not in _CONSTRAINTS:
        raise ValueError(f"optimized: constraint must be one of {_CONSTRAINTS}, got "
                         f"{constraint!r}")
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
        raise ValueError(f"optimized: num_steps must be an int >= 0, got {num_steps!r}")
    del n_honest
    serve = server_view(honest, num_byzantine=num_byzantine, aggregator=aggregator,
                        aggregator_kwargs=aggregator_kwargs,
                        preaggregator=preaggregator,
                        preaggregator_kwargs=preaggregator_kwargs, key=key,
                        rule="optimized")
    gbar = honest_mean(honest)
    if num_byzantine == 0:
        return repeat_rows(gbar, 0)
    sigma = honest_std(honest)
    tiny = jnp.asarray(1e-12, jnp.float32)
    if constraint == "norm_ball":
        radius = jnp.max(jnp.sqrt(sum(
            jnp.sum(jnp.square((h - g[None]).astype(jnp.float32)).reshape(
                h.shape[0], -1), axis=1)
            for h, g in zip(jax.tree_util.tree_leaves(honest),
                            jax.tree_util.tree_leaves(gbar)))))
        scale = jax.tree_util.tree_map(
            lambda s: jnp.broadcast_to(jnp.maximum(radius, tiny), s.shape), sigma)
    else:
        scale = jax.tree_util.tree_map(lambda s: jnp.maximum(s, tiny), sigma)

    # The row is b = gbar + scale * u; the constraint is a set for u.
    def project(u):
        if constraint == "zscore":
            return jax.tree_util.tree_map(lambda v: jnp.clip(v, -z, z), u)
        if constraint == "norm_ball":
            norm = jnp.sqrt(sum(jnp.sum(jnp.square(v)) for v in
                                jax.tree_util.tree_leaves(u)))
            factor = jnp.minimum(1.0, z / jnp.maximum(norm, tiny))
            return jax.tree_util.tree_map(lambda v: v * factor, u)
        return u

    def row(u):
        return jax.tree_util.tree_map(lambda g, s, v: (g + s * v).astype(g.dtype),
                                      gbar, scale, u)

    def damage(u):
        out = serve(repeat_rows(row(project(u)), num_byzantine))
        if objective == "distance":
            value = tree_distance(out, gbar)
        else:
            value = -_tree_dot(out, gbar)
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    if candidates is None:
        candidates = tuple(sorted({*DEFAULT_CANDIDATES, 1.1, 1.5}))
    eps = jnp.asarray(candidates, jnp.float32)
    # ALIE: gbar - eps sigma, i.e. u = -eps sigma / scale; FOE: (1 - eps) gbar.
    alie = jax.vmap(lambda e: jax.tree_util.tree_map(
        lambda s, sc: -e * s / sc, sigma, scale))(eps)
    foe = jax.vmap(lambda e: jax.tree_util.tree_map(
        lambda g, sc: -e * g / sc, gbar, scale))(eps)
    starts = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), alie, foe)
    starts = jax.vmap(project)(starts)
    scores = jax.vmap(damage)(starts)
    best_i = jnp.argmax(scores)
    u0 = jax.tree_util.tree_map(lambda v: v[best_i], starts)

    tx = optax.adam(learning_rate)

    def step(carry, _):
        u, state, best_u, best = carry
        value, grad = jax.value_and_grad(damage)(u)
        better = value > best
        best_u = jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), u, best_u)
        best = jnp.maximum(best, value)
        grad = jax.tree_util.tree_map(
            lambda g: -jnp.where(jnp.isfinite(g), g, 0.0), grad)  # ascent
        updates, state = tx.update(grad, state, u)
        return (project(optax.apply_updates(u, updates)), state, best_u, best), None

    carry = (u0, tx.init(u0), u0, scores[best_i])
    if num_steps > 0:
        carry, _ = jax.lax.scan(step, carry, None, length=num_steps)
        u_last = carry[0]
        last = damage(u_last)
        best_u = jax.tree_util.tree_map(lambda a, b: jnp.where(last > carry[3], a, b),
                                        u_last, carry[2])
    else:
        best_u = u0
    return repeat_rows(row(project(best_u)), num_byzantine)
