"""Diagnostics that explain a run: every round's, and the last round's of each chunk.

Every round (:data:`DIAGNOSTICS`, :func:`round_diagnostics`): the distance of
the aggregate from the honest mean, the honest spread, their ratio, the
cosine. Per evaluation chunk (:data:`EXPLAIN`, :func:`make_explain`), on the
chunk's last round:

* ``byz_selected``: the fraction of the Byzantine rows that the server's
  selection used (weight > 0), for selection rules: Krum, Multi-Krum, MDA,
  Bulyan (its selection stage) and the neighbourhoods of nearest-neighbour
  mixing (:func:`byzjax.aggregators.selection_weights`);
* ``byz_weight``: the total weight of the Byzantine rows in the aggregate
  (Krum: 1 when it picked a Byzantine row; Multi-Krum and MDA: the share of
  the kept rows that are Byzantine). With NNM before a selection rule the
  weights compose (the rule's weights times the mixing matrix); with NNM
  before any other rule they are those of the mean of NNM's output rows;
* ``var_norm_ratio``: the honest variance-to-norm ratio
  ``(1 / (h - 1)) sum_{i in H} ||x_i - xbar_H||^2 / ||xbar_H||^2`` of the rows
  the honest workers send (after worker momentum). El Mhamdi, Guerraoui,
  Rouault, "Distributed Momentum for Byzantine-resilient Stochastic Gradient
  Descent" (ICLR 2021) argue that worker momentum helps Byzantine resilience
  by lowering it: the robust rules' guarantees need the honest variance small
  against the gradient's squared norm.

Both selection entries are ``NaN`` for a rule without a selection, with no
Byzantine rows, or after a random pre-aggregation (bucketing: the groups
cannot be replayed here). For MRA's moment pairs the first moments are used.

Cost: computed once per evaluation chunk, on its last round (a ``lax.cond``
on the round's index within the chunk's scan, which stays a branch when runs
are vmapped, the index being the same for all of them): ``O(n d)`` for the
ratio, plus, for selection rules, a replay of the rule's selection (one Gram
matmul, ``O(n^2 d)``, and the rule's work on the ``[n, n]`` distances).
"""

from __future__ import annotations

from typing import Callable, cast

import jax
import jax.numpy as jnp

from byzjax import aggregators, optim
from byzjax._tree import PyTree, pairwise_sq_distances
from byzjax.sim._spec import RunSpec

__all__ = ["DIAGNOSTICS", "round_diagnostics", "first_moments", "EXPLAIN",
           "honest_variance_to_norm", "byzantine_selection",
           "pipeline_selection_weights", "make_explain", "explain_metrics"]

#: The round diagnostics (:func:`round_diagnostics`).
DIAGNOSTICS = ("agg_dist", "honest_spread", "resilience", "cosine")

#: The per-chunk diagnostics (:func:`make_explain`).
EXPLAIN = ("byz_selected", "byz_weight", "var_norm_ratio")


def honest_variance_to_norm(honest: PyTree) -> jax.Array:
    """``(1 / (h - 1)) sum_i ||x_i - xbar||^2 / ||xbar||^2`` over all leaves.

    Args:
      honest: pytree with leaves ``[h, *param_shape]``, ``h >= 2``.

    Returns:
      float32 scalar (``inf`` when the mean is 0 and the rows differ).

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"w": jnp.array([[1.0, 0.0], [3.0, 0.0]])}  # mean (2, 0)
      >>> honest_variance_to_norm(x)  # (1 + 1) / 1 / 4
      Array(0.5, dtype=float32)
    """
    leaves = jax.tree_util.tree_leaves(honest)
    h = leaves[0].shape[0]
    var: float | jax.Array = 0.0
    norm2: float | jax.Array = 0.0
    for x in leaves:
        x = x.reshape(h, -1).astype(jnp.float32)
        mu = jnp.mean(x, axis=0)
        var = var + jnp.sum((x - mu) ** 2) / max(h - 1, 1)
        norm2 = norm2 + jnp.sum(mu * mu)
    return cast(jax.Array, var / norm2)  # an Array: there is at least one leaf


def byzantine_selection(weights: jax.Array, num_honest: int
                        ) -> tuple[jax.Array, jax.Array]:
    """``(fraction of Byzantine rows with weight > 0, their total weight)``.

    Rows ``>= num_honest`` are the Byzantine ones (the simulator's layout).

    Example:
      >>> import jax.numpy as jnp
      >>> byzantine_selection(jnp.array([0.5, 0.0, 0.25, 0.25, 0.0]), 2)
      (Array(0.6666667, dtype=float32), Array(0.5, dtype=float32))
    """
    byz = weights[num_honest:]
    if byz.shape[0] == 0:
        nan = jnp.float32(jnp.nan)
        return nan, nan
    return (jnp.mean((byz > 0).astype(jnp.float32)),
            jnp.sum(byz).astype(jnp.float32))


def pipeline_selection_weights(
    *, aggregator: str, num_byzantine: int, aggregator_kwargs=None,
    preaggregator: str | None = None, preaggregator_kwargs=None,
) -> Callable[[PyTree], jax.Array] | None:
    """``stack -> float[n]`` weights of the server's pipeline, or None.

    None when neither the pre-aggregator nor the aggregator selects rows, or
    the pre-aggregator is random (see the module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> fn = pipeline_selection_weights(aggregator="krum", num_byzantine=1)
      >>> fn({"w": jnp.array([[0.0], [1.0], [2.0], [3.0], [50.0]])})
      Array([0., 1., 0., 0., 0.], dtype=float32)
      >>> pipeline_selection_weights(aggregator="trimmed_mean", num_byzantine=1)
    """
    f = int(num_byzantine)
    agg_kwargs = dict(aggregator_kwargs or {})
    pre_kwargs = dict(preaggregator_kwargs or {})
    agg_sel = aggregators.has_selection(aggregator)
    pre_sel = bool(preaggregator and aggregators.has_selection(preaggregator))
    if not (agg_sel or pre_sel):
        return None
    pre_fn = None
    if preaggregator:
        entry = aggregators.PREAGGREGATORS.entry(preaggregator)
        if entry.needs_key:
            return None
        pre_fn = entry.fn

    def weights(stack):
        mixing = None
        if pre_fn is not None:
            if pre_sel:
                mixing = aggregators.selection_weights(
                    preaggregator, stack, num_byzantine=f, **pre_kwargs)
            stack = pre_fn(stack, num_byzantine=f, **pre_kwargs)
        if agg_sel:
            w = aggregators.selection_weights(aggregator, stack, num_byzantine=f,
                                              **agg_kwargs)
            return w if mixing is None else w @ mixing
        return jnp.mean(mixing, axis=0)

    return weights


def make_explain(spec: RunSpec, *, num_honest: int
                 ) -> Callable[[PyTree, PyTree], dict]:
    """``(sent, attacked) -> {name: scalar}`` for :data:`EXPLAIN`.

    Args:
      spec: a :class:`~byzjax.sim.RunSpec` (aggregator, pre-aggregator, their
        keyword arguments, declared ``num_byzantine``).
      num_honest: rows ``< num_honest`` are honest.

    Returns:
      A function of the honest workers' sent rows and the attacked stack
      (leaves ``[n, ...]``, or MRA moment pairs), jit-able.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import sim
      >>> c = sim.get_config()
      >>> c.num_workers, c.num_byzantine, c.aggregator = 5, 1, "krum"
      >>> explain = make_explain(sim.resolve(c), num_honest=4)
      >>> x = {"w": jnp.array([[1.0], [1.1], [0.9], [1.0], [50.0]])}
      >>> float(explain(x, x)["byz_selected"])   # Krum left the outlier out
      0.0
    """
    weights_fn = pipeline_selection_weights(
        aggregator=spec.aggregator, num_byzantine=int(spec.num_byzantine),
        aggregator_kwargs=dict(spec.aggregator_kwargs),
        preaggregator=spec.preaggregator or None,
        preaggregator_kwargs=dict(spec.preaggregator_kwargs))

    def explain(sent, attacked):
        honest = jax.tree_util.tree_map(lambda x: x[:num_honest],
                                        first_moments(sent))
        out = {"var_norm_ratio": honest_variance_to_norm(honest)}
        if weights_fn is None:
            out["byz_selected"] = out["byz_weight"] = jnp.float32(jnp.nan)
        else:
            w = weights_fn(first_moments(attacked))
            out["byz_selected"], out["byz_weight"] = byzantine_selection(
                w, num_honest)
        return {k: out[k] for k in EXPLAIN}

    return explain


def explain_metrics(flag, explain_fn: Callable[[PyTree, PyTree], dict], sent,
                    attacked) -> dict:
    """The per-chunk diagnostics when ``flag`` (a bool or a traced bool), else NaN.

    Args:
      flag: Python bool (a static choice) or traced bool (a ``lax.cond``).
      explain_fn: the function of :func:`make_explain`.
      sent: the rows the workers sent, leaves ``[n, ...]``.
      attacked: the stack after the attack, leaves ``[n, ...]``.

    Returns:
      ``{name: float32 scalar}`` for :data:`EXPLAIN`.

    Example:
      >>> explain_metrics(False, None, None, None)["var_norm_ratio"]
      Array(nan, dtype=float32)
    """
    nan = lambda *_: dict.fromkeys(EXPLAIN, jnp.float32(jnp.nan))  # noqa: E731
    if flag is True:
        return explain_fn(sent, attacked)
    if flag is False:
        return nan()
    return jax.lax.cond(flag, explain_fn, nan, sent, attacked)


def first_moments(stack):
    """The vectors the rows stand for: the first moments ``m`` of MRA's
    :class:`~byzjax.optim.MomentPair` rows, else ``stack`` itself.

    Example:
      >>> first_moments({"w": 1.0})
      {'w': 1.0}
    """
    if isinstance(stack, optim.MomentPair):
        return stack.m
    return stack


def round_diagnostics(sent, aggregate, n_honest: int) -> dict:
    """Round diagnostics that explain a run ((f, lambda)-resilience).

    * ``agg_dist``: ``||F(x) - xbar_H||`` over all leaves, where ``F(x)`` is the
      aggregate the server used and ``xbar_H`` the mean of the honest rows;
    * ``honest_spread``: ``max_{i,j in H} ||x_i - x_j||``;
    * ``resilience``: their ratio, the empirical lambda of (f, lambda)-resilience;
    * ``cosine``: cosine between ``F(x)`` and ``xbar_H``.

    For MRA the rows are moment pairs; the diagnostics use the first moments.

    Cost: computed every round; in ``run_chunk`` / ``train`` each reported
    value is the mean over the chunk's rounds. Measured in a small round (MLP,
    n = 15, b = 25, trimmed mean; ``scripts/bench.py`` section 3), every
    round vs none: within noise (-2.5% wall, +0.1% CPU time), far under 10%,
    so no subsampling. ``round_step(..., diagnostics=False)`` skips them.

    Args:
      sent: the rows the workers sent, leaves ``[n, *param_shape]`` (or
        moment pairs).
      aggregate: the server's aggregate, leaves ``[*param_shape]``.
      n_honest: rows ``< n_honest`` are honest.

    Returns:
      ``{name: float32 scalar}`` for :data:`DIAGNOSTICS`.

    Example:
      >>> import jax.numpy as jnp
      >>> sent = {"w": jnp.array([[0.0, 0.0], [2.0, 0.0], [9.0, 9.0]])}
      >>> d = round_diagnostics(sent, {"w": jnp.array([1.0, 1.0])}, 2)
      >>> [round(float(d[k]), 4) for k in DIAGNOSTICS]
      [1.0, 2.0, 0.5, 0.7071]
    """
    honest = jax.tree_util.tree_map(lambda x: x[:n_honest], first_moments(sent))
    hbar = aggregators.mean(honest)
    leaves_a = jax.tree_util.tree_leaves(first_moments(aggregate))
    leaves_h = jax.tree_util.tree_leaves(hbar)
    dist2 = sum(jnp.sum((a - h) ** 2) for a, h in zip(leaves_a, leaves_h))
    dot = sum(jnp.sum(a * h) for a, h in zip(leaves_a, leaves_h))
    na = jnp.sqrt(sum(jnp.sum(a * a) for a in leaves_a))
    nh = jnp.sqrt(sum(jnp.sum(h * h) for h in leaves_h))
    spread = jnp.sqrt(jnp.max(pairwise_sq_distances(honest)))
    dist = jnp.sqrt(dist2)
    return {
        "agg_dist": dist,
        "honest_spread": spread,
        "resilience": dist / jnp.maximum(spread, 1e-12),
        "cosine": jnp.clip(dot / jnp.maximum(na * nh, 1e-12), -1.0, 1.0),
    }
