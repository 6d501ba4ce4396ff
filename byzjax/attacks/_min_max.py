"""Min-Max and Min-Sum: the largest step away from the honest mean that stays hidden.

Shejwalkar and Houmansadr's aggregation-agnostic attacks send, in every
Byzantine row, ``m = gbar + gamma * p``: the honest mean ``gbar`` moved along a
perturbation direction ``p`` by the largest ``gamma`` for which ``m`` is no
farther from the honest rows ``x_1 .. x_h`` than they are from each other:

* **Min-Max**: ``max_i ||m - x_i||^2 <= max_{i,j} ||x_i - x_j||^2``;
* **Min-Sum**: ``sum_i ||m - x_i||^2 <= max_i sum_j ||x_i - x_j||^2``.

Directions ``p`` (keyword ``direction``): ``"unit_vector"``
(``-gbar / ||gbar||``), ``"std"`` (``-sigma``, the coordinate-wise standard
deviation of the honest rows, ``ddof=1``) and ``"sign"`` (``-sign(gbar)``).

``gamma`` is found by the paper's halving search (its code's
``our_attack_dist`` / ``our_attack_score``): start at ``gamma_init``, step
``gamma_init``; at each step halve the step and move up by it if the
candidate satisfies the bound (it becomes the last success), down otherwise;
stop when the candidate is within ``tolerance`` of the last success, and send
the last success (``0`` when none). The gap between the two is the step
itself, so the search takes ``ceil(log2(gamma_init / tolerance))`` steps (20
for the defaults ``10`` and ``1e-5``), runs inside the compiled round
(``lax.while_loop``, vmappable) and returns a ``gamma`` with ``gamma <=
gamma* < gamma + 2 * tolerance`` for the largest admissible ``gamma*`` (an
absolute tolerance, as in the paper's code), as long as ``gamma* <
2 * gamma_init`` (the search never goes beyond; it then returns just below).

Cost: every step is ``O(h)``. Writing ``v_i = x_i - gbar``,
``||m - x_i||^2 = ||v_i||^2 - 2 gamma <p, v_i> + gamma^2 ||p||^2``, so one
centred Gram matrix of the honest rows (:func:`byzjax._tree.gram`, which
gives both ``||v_i||^2`` and the pairwise distances) and one pass for the
inner products ``<p, v_i>`` are all the search reads.

Honest rows with non-finite entries, or whose squared distances overflow
(entries near ``1e19`` in float32), leave no candidate admissible (their
bound is ``NaN``): ``gamma = 0`` and every Byzantine row is the honest mean.

Reference:
  V. Shejwalkar, A. Houmansadr, "Manipulating the Byzantine: Optimizing Model
  Poisoning Attacks and Defenses for Federated Learning", NDSS 2021,
  https://www.ndss-symposium.org/ndss-paper/manipulating-the-byzantine-optimizing-model-poisoning-attacks-and-defenses-for-federated-learning/
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

from byzjax._registry import greater_than
from byzjax._tree import PyTree, check_stack, gram, num_rows
from byzjax.attacks._base import (
    ATTACKS,
    honest_mean,
    honest_std,
    repeat_rows,
)

__all__ = ["min_max", "min_sum", "min_max_gamma"]

_DIRECTIONS = ("unit_vector", "std", "sign")
_PRECISION = jax.lax.Precision.HIGHEST
#: A guard on the search: a traced non-positive or infinite ``gamma_init`` or
#: ``tolerance`` (concrete ones are refused) would otherwise never stop.
_MAX_STEPS = 200

_KEYWORDS = {"gamma_init": greater_than(0), "tolerance": greater_than(0)}
_REQUIREMENT = "n >= f + 2 (the honest bound needs two honest rows)"


def _as_float(tree: PyTree) -> PyTree:
    """Leaves in at least float32 (the search compares squared distances)."""
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32)), tree)


def _direction(honest: PyTree, gbar: PyTree, direction: str) -> PyTree:
    """``p``: ``-gbar / ||gbar||`` (0 if ``gbar = 0``), ``-sigma``, ``-sign(gbar)``."""
    if direction == "unit_vector":
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in
                            jax.tree_util.tree_leaves(gbar)))
        safe = jnp.where(norm > 0, norm, 1.0)
        return jax.tree_util.tree_map(
            lambda g: jnp.where(norm > 0, -g / safe.astype(g.dtype), 0.0), gbar)
    if direction == "std":
        return jax.tree_util.tree_map(jnp.negative,
                                      honest_std(honest, ddof=1, mean=gbar))
    return jax.tree_util.tree_map(lambda g: -jnp.sign(g), gbar)


def _terms(honest: PyTree, gbar: PyTree, p: PyTree):
    """``(c, q, pp, d2)``: ``||v_i||^2``, ``<p, v_i>``, ``||p||^2`` and the
    pairwise squared distances ``[h, h]`` of the honest rows, ``v_i = x_i - gbar``."""
    h = num_rows(honest)
    g = gram(honest, center=gbar)  # exactly symmetric
    c = jnp.diagonal(g)
    d2 = jnp.maximum(c[:, None] + c[None, :] - 2.0 * g, 0.0)
    d2 = jnp.where(jnp.eye(h, dtype=bool), 0.0, d2)
    q = sum(jnp.matmul((x - m[None]).reshape(h, -1), v.reshape(-1),
                       precision=_PRECISION)
            for x, m, v in zip(jax.tree_util.tree_leaves(honest),
                               jax.tree_util.tree_leaves(gbar),
                               jax.tree_util.tree_leaves(p)))
    pp = sum(jnp.sum(jnp.square(v)) for v in jax.tree_util.tree_leaves(p))
    return c, q, pp, d2


def _spread_max(gamma, c, q, pp):
    return jnp.max(c - 2.0 * gamma * q + gamma * gamma * pp)


def _spread_sum(gamma, c, q, pp):
    return jnp.sum(c - 2.0 * gamma * q + gamma * gamma * pp)


_SPREAD = {"max": _spread_max, "sum": _spread_sum}


def _search_cond(state):
    gamma, _, success, k, tol = state[:5]
    return (jnp.abs(success - gamma) > tol) & (k < _MAX_STEPS)


def _search_body(spread, state):
    gamma, step, success, k, tol, c, q, pp, limit = state
    ok = spread(gamma, c, q, pp) <= limit
    success = jnp.where(ok, gamma, success)
    gamma = jnp.where(ok, gamma + step / 2, gamma - step / 2)
    return gamma, step / 2, success, k + 1, tol, c, q, pp, limit


_BODIES = {b: functools.partial(_search_body, f) for b, f in _SPREAD.items()}


def _halving_search(bound, c, q, pp, limit, gamma_init, tolerance) -> jax.Array:
    """The paper's search: the last candidate ``gamma`` with
    ``spread(gamma) <= limit`` (0 when none). The loop's functions are
    module-level, so an eager call reuses its compiled loop."""
    gamma0 = jnp.asarray(gamma_init, jnp.float32)
    init = (gamma0, gamma0, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32),
            jnp.asarray(tolerance, jnp.float32), c, q, pp, limit)
    return jax.lax.while_loop(_search_cond, _BODIES[bound], init)[2]


def _gamma_and_direction(name, honest, *, bound, direction, gamma_init, tolerance,
                         threshold="max"):
    if direction not in _DIRECTIONS:
        raise ValueError(f"{name}: direction must be one of {_DIRECTIONS}, got "
                         f"{direction!r}")
    x = _as_float(honest)
    gbar = honest_mean(x)
    p = _direction(x, gbar, direction)
    c, q, pp, d2 = _terms(x, gbar, p)
    c, q, pp, d2 = (a.astype(jnp.float32) for a in (c, q, pp, d2))
    if bound == "max":
        limit = jnp.max(d2)
    else:
        scores = jnp.sum(d2, axis=1)
        limit = jnp.max(scores) if threshold == "max" else jnp.min(scores)
    gamma = _halving_search(bound, c, q, pp, limit, gamma_init, tolerance)
    return gamma, gbar, p


def min_max_gamma(honest: PyTree, *, bound: Literal["max", "sum"] = "max",
                  direction: Literal["unit_vector", "std", "sign"] = "unit_vector",
                  gamma_init: float | jax.Array = 10.0,
                  tolerance: float | jax.Array = 1e-5,
                  threshold: Literal["max", "min"] = "max") -> jax.Array:
    """The ``gamma`` of :func:`min_max` (``bound="max"``) or :func:`min_sum` ("sum").

    Args:
      honest: leaves ``[n_honest, *param_shape]``, ``n_honest >= 2``.
      bound: static, ``"max"`` (Min-Max) or ``"sum"`` (Min-Sum).
      direction: static, ``"unit_vector"``, ``"std"`` or ``"sign"``.
      gamma_init: the search's first candidate and step (float or traced).
      tolerance: the search's absolute tolerance (float or traced).
      threshold: static, Min-Sum's bound over the honest rows' sums of
        squared distances: ``"max"`` (the paper) or ``"min"`` (its code).

    Returns:
      A float32 scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> honest = {"w": jnp.array([[0.0, 1.0], [0.0, 3.0]])}  # mean [0, 2]
      >>> round(float(attacks.min_max_gamma(honest)), 4)  # ||m - x_i|| <= 2
      1.0
    """
    if check_stack("min_max_gamma", honest) < 2:
        raise ValueError("min_max_gamma needs at least 2 honest rows (their spread "
                         "bounds the step); pass more rows")
    if bound not in ("max", "sum"):
        raise ValueError(f"min_max_gamma: bound must be 'max' or 'sum', got {bound!r}")
    if threshold not in ("max", "min"):
        raise ValueError(f"min_max_gamma: threshold must be 'max' or 'min', got "
                         f"{threshold!r}")
    return _gamma_and_direction("min_max_gamma", honest, bound=bound,
                                direction=direction, gamma_init=gamma_init,
                                tolerance=tolerance, threshold=threshold)[0]


def _rows(honest, gbar, p, gamma, num_byzantine):
    out = jax.tree_util.tree_map(
        lambda g, v, x: (g + gamma.astype(g.dtype) * v).astype(x.dtype), gbar, p,
        jax.tree_util.tree_map(lambda x: x[0], honest))
    return repeat_rows(out, num_byzantine)


@ATTACKS.register("min_max", aliases=("minmax",), min_workers=lambda f: f + 2,
                  requirement=_REQUIREMENT, keywords=_KEYWORDS,
                  display_name="Min-Max", short_name="MinMax", order=17)
def min_max(honest: PyTree, *, num_byzantine: int,
            direction: Literal["unit_vector", "std", "sign"] = "unit_vector",
            gamma_init: float | jax.Array = 10.0,
            tolerance: float | jax.Array = 1e-5, key=None) -> PyTree:
    """Min-Max: ``gbar + gamma p``, no farther from any honest row than they are apart.

    ``gamma`` is the largest (to the search's tolerance, module docstring)
    with ``max_i ||gbar + gamma p - x_i||^2 <= max_{i,j} ||x_i - x_j||^2``
    over the honest rows; every Byzantine row is that one vector. Defaults
    as the paper's code: ``direction="unit_vector"``, ``gamma_init = 10``,
    ``tolerance = 1e-5``. No strength keyword (``gamma`` is searched).

    Args:
      honest: leaves ``[n_honest, *param_shape]``, ``n_honest >= 2``.
      num_byzantine: static number of rows to return.
      direction: static, ``"unit_vector"`` (``-gbar / ||gbar||``), ``"std"``
        (``-sigma``, ``ddof=1``) or ``"sign"`` (``-sign(gbar)``).
      gamma_init: the search's first candidate and step (float or traced).
      tolerance: the search's absolute tolerance (float or traced).
      key: ignored.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``, every row equal.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> honest = {"w": jnp.array([[0.0, 1.0], [0.0, 3.0]])}  # mean [0, 2]
      >>> out = attacks.min_max(honest, num_byzantine=2)  # gamma = 1 along -mean
      >>> out["w"].round(4)
      Array([[0., 1.],
             [0., 1.]], dtype=float32)

    Reference:
      V. Shejwalkar, A. Houmansadr, "Manipulating the Byzantine: Optimizing
      Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021.
    """
    del key
    if num_byzantine == 0:
        return repeat_rows(jax.tree_util.tree_map(lambda x: x[0], honest), 0)
    gamma, gbar, p = _gamma_and_direction(
        "min_max", honest, bound="max", direction=direction,
        gamma_init=gamma_init, tolerance=tolerance)
    return _rows(honest, gbar, p, gamma, num_byzantine)


@ATTACKS.register("min_sum", aliases=("minsum",), min_workers=lambda f: f + 2,
                  requirement=_REQUIREMENT, keywords=_KEYWORDS,
                  display_name="Min-Sum", short_name="MinSum", order=18)
def min_sum(honest: PyTree, *, num_byzantine: int,
            direction: Literal["unit_vector", "std", "sign"] = "unit_vector",
            gamma_init: float | jax.Array = 10.0,
            tolerance: float | jax.Array = 1e-5,
            threshold: Literal["max", "min"] = "max", key=None) -> PyTree:
    """Min-Sum: ``gbar + gamma p`` whose squared distances to the honest rows sum
    to no more than any honest row's.

    ``gamma`` is the largest (to the search's tolerance, module docstring)
    with ``sum_i ||gbar + gamma p - x_i||^2 <= max_i sum_j ||x_i - x_j||^2``
    over the honest rows (the paper's bound); ``threshold="min"`` compares
    with ``min_i sum_j ||x_i - x_j||^2`` instead, as the paper's code and
    FL-Byzantine-Library do. Every Byzantine row is that one vector; defaults
    as :func:`min_max`.

    Args:
      honest: leaves ``[n_honest, *param_shape]``, ``n_honest >= 2``.
      num_byzantine: static number of rows to return.
      direction: static, ``"unit_vector"``, ``"std"`` or ``"sign"`` (as
        :func:`min_max`).
      gamma_init: the search's first candidate and step (float or traced).
      tolerance: the search's absolute tolerance (float or traced).
      threshold: static, ``"max"`` (default) or ``"min"``.
      key: ignored.

    Returns:
      Leaves ``[num_byzantine, *param_shape]``, every row equal.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import attacks
      >>> honest = {"w": jnp.array([[0.0, 1.0], [0.0, 3.0]])}  # mean [0, 2]
      >>> out = attacks.min_sum(honest, num_byzantine=1)  # 2 + 2 gamma^2 <= 4
      >>> out["w"].round(4)
      Array([[0., 1.]], dtype=float32)

    Reference:
      V. Shejwalkar, A. Houmansadr, "Manipulating the Byzantine: Optimizing
      Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021.
    """
    del key
    if threshold not in ("max", "min"):
        raise ValueError(f"min_sum: threshold must be 'max' or 'min', got "
                         f"{threshold!r}")
    if num_byzantine == 0:
        return repeat_rows(jax.tree_util.tree_map(lambda x: x[0], honest), 0)
    gamma, gbar, p = _gamma_and_direction(
        "min_sum", honest, bound="sum", direction=direction,
        gamma_init=gamma_init, tolerance=tolerance, threshold=threshold)
    return _rows(honest, gbar, p, gamma, num_byzantine)
