"""Which input rows a selection rule used: its selection weights.

Krum, Multi-Krum, MDA and Bulyan output (or, for Bulyan, start from) a
weighted mean of some of their input rows; nearest-neighbour mixing replaces
each row by the mean of its ``n - f`` nearest rows. Their *selection weights*
say how much each input row counts, so a run can report which rows the server
actually used (for example the fraction of Byzantine rows that got through).
The weights are computed by the rules' own selection code
(:func:`krum_scores`, :func:`minimum_diameter_subset`,
:func:`bulyan_selection`, :func:`nearest_neighbour_weights`), so they select
exactly the rows the rule does, ties included.

* ``"krum"``: one-hot on the selected row;
* ``"multi_krum"``: ``1/m`` on the ``m`` selected rows;
* ``"mda"``: ``1/(n - f)`` on the kept subset;
* ``"bulyan"``: ``1/(n - 2f)`` on the rows of the selection stage (its
  second stage is coordinate-wise, not a selection of rows); for
  ``variant="byzantine_momentum"``, each ranked row's weight in the mean of
  the shrinking Multi-Krum means;
* ``"nnm"`` (a pre-aggregator): the ``[n, n]`` mixing matrix, row ``i`` the
  weights of output row ``i``;
* ``"monna"``: ``1/(n - f)`` on the pivot's ``n - f`` nearest rows
  (:func:`monna_weights`).

The rules without a selection (coordinate-wise rules, the geometric median,
centered clipping, ...) are not in :data:`SELECTION_RULES`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from byzjax._tree import PyTree, pairwise_sq_distances
from byzjax.aggregators._base import AGGREGATORS, PREAGGREGATORS
from byzjax.aggregators._bulyan import bulyan_selection
from byzjax.aggregators._krum import first_argmin, krum_scores
from byzjax.aggregators._mda import minimum_diameter_subset
from byzjax.aggregators._nnm import (
    monna_weights,
    monna_weights_from_distances,
    nearest_neighbour_weights,
)

__all__ = ["selection_weights", "has_selection", "SELECTION_RULES",
           "DISTANCE_WEIGHTS", "distance_weights"]


def _num_rows(updates: PyTree) -> int:
    return int(jax.tree_util.tree_leaves(updates)[0].shape[0])


def _krum_like(updates, num_byzantine, num_neighbours, squared, num_selected):
    n = _num_rows(updates)
    AGGREGATORS.check("krum", num_workers=n, num_byzantine=num_byzantine)
    k = n - num_byzantine - 2 if num_neighbours is None else num_neighbours
    d2 = pairwise_sq_distances(updates, rescale=True)
    scores = krum_scores(d2, num_byzantine=num_byzantine, num_neighbours=k,
                         squared=squared)
    if num_selected is None:  # Krum
        return jax.nn.one_hot(first_argmin(scores), n, dtype=jnp.float32)
    order = jnp.argsort(scores, stable=True)
    selected = jnp.zeros((n,), bool).at[order[:num_selected]].set(True)
    return selected.astype(jnp.float32) / num_selected


def _krum(updates, *, num_byzantine, num_neighbours=None, squared=True):
    return _krum_like(updates, num_byzantine, num_neighbours, squared, None)


def _multi_krum(updates, *, num_byzantine, num_selected=None, num_neighbours=None,
                squared=True):
    m = _num_rows(updates) - num_byzantine if num_selected is None else num_selected
    return _krum_like(updates, num_byzantine, num_neighbours, squared, m)


def _mda(updates, *, num_byzantine, method="auto"):
    kept = minimum_diameter_subset(updates, num_byzantine=num_byzantine,
                                   method=method)
    return kept.astype(jnp.float32) / jnp.sum(kept)


def _bulyan(updates, *, num_byzantine, selection="krum", squared=True,
            selection_kwargs=None, variant="paper"):
    n = _num_rows(updates)
    f = num_byzantine
    if variant == "byzantine_momentum":
        # The mean of the shrinking suffix means of the rows ranked by Krum
        # score (plain distances, computed once): see bulyan's module.
        top, theta = n - f - 2, n - 2 * f - 2
        d2 = pairwise_sq_distances(updates, rescale=True)
        scores = krum_scores(d2, num_byzantine=f, num_neighbours=top, squared=False)
        ranked = jnp.argsort(scores, stable=True)[:top]
        per_rank = jnp.asarray(
            [sum(1.0 / (top - i) for i in range(min(j, theta - 1) + 1)) / theta
             for j in range(top)], jnp.float32)
        return jnp.zeros((n,), jnp.float32).at[ranked].set(per_rank)
    chosen = bulyan_selection(updates, num_byzantine=f, selection=selection,
                              squared=squared, selection_kwargs=selection_kwargs)
    return jnp.zeros((n,), jnp.float32).at[chosen].set(1.0 / (n - 2 * f))


def _nnm(updates, *, num_byzantine):
    return nearest_neighbour_weights(updates, num_byzantine=num_byzantine)


#: Rule name -> ``fn(updates, *, num_byzantine, **rule_kwargs)`` giving its
#: selection weights (``float[n]``; ``float[n, n]`` for the pre-aggregator
#: ``"nnm"``). A new selection rule adds its entry here.
SELECTION_RULES: dict[str, Callable[..., jax.Array]] = {
    "krum": _krum,
    "multi_krum": _multi_krum,
    "mda": _mda,
    "bulyan": _bulyan,
    "nnm": _nnm,
    "monna": monna_weights,
}


def _canonical(name: str) -> str:
    for registry in (AGGREGATORS, PREAGGREGATORS):
        if name in registry:
            return registry.entry(name).name
    return name


def has_selection(name: str) -> bool:
    """True when the registered rule ``name`` has selection weights.

    Example:
      >>> has_selection("krum"), has_selection("trimmed_mean")
      (True, False)
    """
    return isinstance(name, str) and _canonical(name) in SELECTION_RULES


def selection_weights(name: str, updates: PyTree, *, num_byzantine: int,
                      **kwargs: Any) -> jax.Array:
    """The weight of each input row in a selection rule's output.

    Args:
      name: a registered rule with a selection (:func:`has_selection`).
      updates: pytree with leaves ``[n, *param_shape]``, as the rule gets it.
      num_byzantine: static ``f``, as the rule gets it.
      **kwargs: the rule's keyword arguments (static ones as the rule takes
        them).

    Returns:
      ``float32[n]`` non-negative weights summing to 1 (Krum: one-hot; Bulyan:
      its selection stage), or ``float32[n, n]`` for ``"nnm"`` (row ``i`` the
      weights of output row ``i``).

    Raises:
      ValueError: the rule has no selection weights.

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"w": jnp.array([[0.0], [1.0], [2.0], [3.0], [50.0]])}
      >>> selection_weights("multi_krum", x, num_byzantine=1)
      Array([0.25, 0.25, 0.25, 0.25, 0.  ], dtype=float32)
      >>> selection_weights("krum", x, num_byzantine=1)
      Array([0., 1., 0., 0., 0.], dtype=float32)
    """
    if not has_selection(name):
        raise ValueError(
            f"selection_weights: {name!r} selects no rows; rules with selection "
            f"weights: {', '.join(sorted(SELECTION_RULES))}")
    return SELECTION_RULES[_canonical(name)](updates, num_byzantine=num_byzantine,
                                             **kwargs)


def _monna_from_distances(sq_dist, finite, *, num_byzantine, pivot=0,
                          pivot_aggregator=None):
    if pivot_aggregator is not None:
        return None
    return monna_weights_from_distances(sq_dist, finite,
                                        num_byzantine=num_byzantine, pivot=pivot)


#: Rules whose output is ``sum_i w_i x_i`` with weights ``w`` read off the
#: rows' squared distances alone: name -> ``fn(sq_dist [n, n], finite [n], *,
#: num_byzantine, **rule_kwargs) -> float[n]`` (or None when these keywords
#: need the rows themselves). A caller holding the distances of a larger set
#: of rows (the peer-to-peer round: every vector sent) aggregates any subset
#: without gathering it.
DISTANCE_WEIGHTS: dict[str, Callable[..., jax.Array | None]] = {
    "monna": _monna_from_distances,
}


def distance_weights(name: str, sq_dist: jax.Array, finite: jax.Array, *,
                     num_byzantine: int, **kwargs: Any) -> jax.Array | None:
    """The rule's output weights from the rows' distances, or None.

    None when the rule is not in :data:`DISTANCE_WEIGHTS` or its keywords
    need the rows (MoNNA's ``pivot_aggregator``).

    Example:
      >>> import jax.numpy as jnp
      >>> d2 = jnp.array([[0.0, 1.0, 9.0], [1.0, 0.0, 4.0], [9.0, 4.0, 0.0]])
      >>> distance_weights("monna", d2, jnp.ones(3, bool), num_byzantine=1)
      Array([0.5, 0.5, 0. ], dtype=float32)
      >>> distance_weights("trimmed_mean", d2, jnp.ones(3, bool), num_byzantine=1)
    """
    fn = DISTANCE_WEIGHTS.get(_canonical(name)) if isinstance(name, str) else None
    if fn is None:
        return None
    return fn(sq_dist, finite, num_byzantine=num_byzantine, **kwargs)
