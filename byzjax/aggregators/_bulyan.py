"""Bulyan (El Mhamdi, Guerraoui, Rouault 2018): iterated selection, then a
coordinate-wise average around the median.

With ``n >= 4f + 3``:

1. **Selection.** ``theta = n - 2f`` times, apply the selection rule ``A`` to
   the rows not selected yet, move the row it picks into the selection set,
   and *recompute* everything on the remaining rows (ByzantineMomentum computes
   the Krum scores once and never updates them: a bug not copied here).
2. **Aggregation.** Per coordinate, average the ``beta = theta - 2f`` selected
   values closest to the coordinate median
   (:func:`byzjax.aggregators.mean_around_median`).

Which row ``A`` picks (the remaining set has ``m = n - t`` rows at step ``t``):

* ``"krum"`` (default): the row of least Krum score on the remaining rows, with
  ``max(m - f - 2, 1)`` neighbours (Blanchard et al.'s ``m - f - 2``; the floor
  at 1 keeps the score meaningful in the last steps, where ``m`` falls to
  ``2f + 1``, as Flower's Krum does).
* ``"multi_krum"`` (the "Bulyan of Multi-Krum" of El Mhamdi et al., ICLR
  2021): the remaining row closest to the Multi-Krum output on the remaining
  rows (the mean of the ``m - f`` rows of least score, same neighbours as above).
* Ties between equal scores are broken by comparing the rows' sorted distances
  to the other remaining rows, nearest first (lexicographically), then by the
  lowest index. With one neighbour (the last steps) ties are systematic, not
  accidental: two mutual nearest neighbours share their score, and an index
  tie-break would make the selected set depend on the row order. The sorted
  distances break them unless the rows are exactly symmetric, so the
  selection is permutation invariant up to genuine ties.
* any other registered aggregator name, or a callable
  ``F(updates, *, num_byzantine, **selection_kwargs)`` (e.g.
  ``"coordinate_median"``, ``"geometric_median"``): ``F`` is applied to the
  remaining rows (gathered into an ``[m, ...]`` stack, ``f`` unchanged) and
  the remaining row closest to its output is picked (El Mhamdi et al.: "choose,
  among the proposed vectors, the closest one to A's output"; for Krum that is
  Krum's own output). The rule must accept ``2f + 1`` rows, the size of the
  last remaining set.

Krum and Multi-Krum selections run on the ``[n, n]`` distance matrix only (one
Gram matmul, then a ``lax.fori_loop`` of ``theta`` steps over masks, each
``O(n^2 log n)``); a generic rule costs ``theta`` applications of the rule to
gathered stacks (the loop is unrolled at trace time, since the stack sizes
are static). The final stage gathers the ``theta`` selected rows (one
``[theta, d]`` copy) and calls the coordinate-wise rule.

**The ByzantineMomentum variant** (``variant="byzantine_momentum"``): the
Bulyan of the experiments of El Mhamdi, Guerraoui and Rouault, "Distributed
Momentum for Byzantine-resilient Stochastic Gradient Descent" (ICLR 2021), as
their code computes it, so those runs can be reproduced exactly. Krum scores
over ``n - f - 2`` neighbours with plain (not squared) distances are computed
*once*; with the rows ranked by score (ties by index), the ``i``-th of
``n - 2f - 2`` selected vectors is the mean of the rows ranked
``i .. n - f - 3`` (a Multi-Krum mean that shrinks by one row per step); then,
per coordinate, the mean of the ``n - 4f - 2`` selected values closest to the
*lower* median. Same requirement ``n >= 4f + 3``.

Non-finite rows are infinitely far from everything: with at most ``f`` of
them, every remaining set of the selection holds more than ``f`` finite rows,
Krum scores of finite rows are finite and those of non-finite rows infinite, so
only finite rows are selected and the output is finite.

Reference:
  El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed
  Learning in Byzantium", ICML 2018, https://arxiv.org/abs/1802.07927.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp

from byzjax._tree import (
    PyTree,
    check_stack,
    num_rows,
    pairwise_sq_distances,
    sq_distances_to,
)
from byzjax.aggregators._base import AGGREGATORS
from byzjax.aggregators._coordinate import mean_around_median
from byzjax.aggregators._krum import first_argmin, krum_scores

__all__ = ["bulyan", "bulyan_selection"]

_REQUIREMENT = "n >= 4f+3"
_VARIANTS = ("paper", "byzantine_momentum")


def _min_workers(f: int) -> int:
    return 4 * f + 3


def _resolve(selection, selection_kwargs, f):
    """Returns ``(kind, fn)``: kind is "krum", "multi_krum" or "generic"."""
    if callable(selection):
        return "generic", selection
    if not isinstance(selection, str):
        raise TypeError("bulyan: selection must be a registered aggregator name or "
                        f"a callable, got {selection!r}")
    entry = AGGREGATORS.entry(selection)
    if entry.name in ("krum", "multi_krum"):
        if selection_kwargs:
            raise ValueError(
                f"bulyan: selection={entry.name!r} takes no selection_kwargs (its "
                f"neighbour and selection counts follow the remaining set, see "
                f"the module docstring); got {sorted(selection_kwargs)}"
            )
        return entry.name, entry.fn
    if entry.name == "bulyan":
        raise ValueError("bulyan: selection='bulyan' is not supported (recursive)")
    if entry.needs_key:
        raise ValueError(f"bulyan: random rule {entry.name!r} cannot be the "
                         "selection rule (it needs a PRNG key)")
    smallest = 2 * f + 1
    if entry.min_workers(f) > smallest:
        raise ValueError(
            f"bulyan: selection rule {entry.name!r} needs {entry.requirement}, but "
            f"the last selection step applies it to 2f + 1 = {smallest} rows "
            f"(num_byzantine={f}). Use selection='krum' or 'multi_krum' (handled "
            f"specially), or a rule that accepts n > 2f."
        )
    return "generic", entry.fn


def _select_by_scores(updates, n, f, theta, kind, squared):
    d2 = pairwise_sq_distances(updates, rescale=True)
    dist = d2 if squared else jnp.sqrt(d2)
    idx = jnp.arange(n)
    eye = jnp.eye(n, dtype=bool)

    def step(t, carry):
        remaining, chosen = carry
        m = n - t
        k = jnp.clip(m - f - 2, 1, m - 1)
        scores = krum_scores(d2, num_byzantine=f, num_neighbours=k,
                             valid=remaining, squared=squared)
        # Tie-break: sorted distances to the other remaining rows (nearest
        # first), then index. Order: remaining rows first, then score, ...
        nearest = jnp.sort(jnp.where(remaining[None, :] & ~eye, dist, jnp.inf), axis=1)
        keys = (idx,) + tuple(nearest[:, j] for j in range(n - 1, -1, -1))
        order = jnp.lexsort(keys + (scores, ~remaining))
        if kind == "krum":
            best = order[0]
        else:  # multi_krum: closest remaining row to the mean of the m - f best
            rank = jnp.zeros((n,), jnp.int32).at[order].set(idx.astype(jnp.int32))
            keep = rank < jnp.maximum(m - f, 1)
            a = keep / jnp.sum(keep)
            # ||x_i - sum_j a_j x_j||^2 = sum_j a_j d2_ij - 1/2 a^T d2 a.
            dk = jnp.where(keep[None, :], d2, 0.0)
            spread = a @ jnp.where(keep[:, None], dk, 0.0) @ a
            best = first_argmin(dk @ a - 0.5 * spread, remaining)
        return remaining & (idx != best), chosen.at[t].set(best)

    init = (jnp.ones((n,), bool), jnp.zeros((theta,), jnp.int32))
    return jax.lax.fori_loop(0, theta, step, init)[1]


def _select_generic(updates, n, f, theta, fn, kwargs):
    remaining = jnp.ones((n,), bool)
    chosen = []
    for t in range(theta):  # static: the stack sizes n - t are static
        rows = jnp.nonzero(remaining, size=n - t)[0]  # increasing indices
        sub = jax.tree_util.tree_map(lambda x, r=rows: jnp.asarray(x)[r], updates)
        out = fn(sub, num_byzantine=f, **kwargs)
        best = rows[first_argmin(sq_distances_to(sub, out))]
        remaining = remaining & (jnp.arange(n) != best)
        chosen.append(best)
    return jnp.stack(chosen).astype(jnp.int32)


def _byzantine_momentum_selected(updates: PyTree, n: int, f: int) -> PyTree:
    """The ``n - 2f - 2`` shrinking Multi-Krum means of the ByzantineMomentum
    variant (module docstring), leaves ``[n - 2f - 2, *param_shape]``."""
    top, theta = n - f - 2, n - 2 * f - 2
    d2 = pairwise_sq_distances(updates, rescale=True)
    scores = krum_scores(d2, num_byzantine=f, num_neighbours=top, squared=False)
    ranked = jnp.argsort(scores, stable=True)[:top]

    def _leaf(x):
        acc = jnp.promote_types(x.dtype, jnp.float32)
        rows = jnp.asarray(x)[ranked].astype(acc)
        suffix, run = [None] * top, None
        for j in range(top - 1, -1, -1):  # suffix sums, accumulated outwards
            run = rows[j] if run is None else run + rows[j]
            suffix[j] = run
        return jnp.stack([suffix[i] / (top - i) for i in range(theta)]).astype(x.dtype)

    return jax.tree_util.tree_map(_leaf, updates)


def bulyan_selection(
    updates: PyTree,
    *,
    num_byzantine: int,
    selection: str | Callable[..., PyTree] = "krum",
    squared: bool = True,
    selection_kwargs: dict[str, Any] | None = None,
) -> jax.Array:
    """Bulyan's first stage: the ``theta = n - 2f`` selected rows, in selection order.

    See :func:`bulyan` for the arguments and the module docstring for how each
    selection rule picks a row.

    Returns:
      ``int32[n - 2f]``: distinct row indices, the first picked first.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0], [0.1], [0.3], [0.7], [1.0], [2.0], [9.0]])}
      >>> aggregators.bulyan_selection(x, num_byzantine=1)
      Array([2, 3, 1, 4, 5], dtype=int32)
      >>> aggregators.bulyan_selection(x, num_byzantine=1, selection="multi_krum")
      Array([3, 4, 2, 1, 0], dtype=int32)
    """
    n = check_stack("bulyan", updates)
    AGGREGATORS.check("bulyan", num_workers=n, num_byzantine=num_byzantine)
    f = num_byzantine
    theta = n - 2 * f
    kind, fn = _resolve(selection, selection_kwargs, f)
    if kind == "generic":
        return _select_generic(updates, n, f, theta, fn, dict(selection_kwargs or {}))
    return _select_by_scores(updates, n, f, theta, kind, squared)


@AGGREGATORS.register("bulyan", min_workers=_min_workers, requirement=_REQUIREMENT,
                      display_name="Bulyan", short_name="BULYAN", order=8)
def bulyan(
    updates: PyTree,
    *,
    num_byzantine: int,
    selection: str | Callable[..., PyTree] = "krum",
    squared: bool = True,
    selection_kwargs: dict[str, Any] | None = None,
    variant: Literal["paper", "byzantine_momentum"] = "paper",
) -> PyTree:
    """Bulyan: iterated robust selection of ``n - 2f`` rows, then per coordinate
    the mean of the ``n - 4f`` selected values closest to the median.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``; ``n`` static.
      num_byzantine: static int ``f`` with ``n >= 4f + 3``.
      selection: static; ``"krum"`` (default), ``"multi_krum"``, another
        registered aggregator name, or a callable
        ``F(updates, *, num_byzantine, **selection_kwargs)``; see the module
        docstring.
      squared: static; Krum scores with squared (default) or plain distances
        (``"krum"`` and ``"multi_krum"`` selections only).
      selection_kwargs: static dict of hyper-parameters for a generic
        selection rule (floats may be traced).
      variant: static; ``"paper"`` (default, El Mhamdi et al. 2018) or
        ``"byzantine_momentum"``, the variant of the ByzantineMomentum code
        (module docstring), which takes no ``selection``, ``squared`` or
        ``selection_kwargs``.

    Returns:
      Pytree with leaves ``[*param_shape]`` (input dtypes).

    Raises:
      ValueError: if ``n < 4f + 3``, the variant is unknown, or the selection
        rule is unknown, random, or does not accept ``2f + 1`` rows.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0, 5.0], [0.1, 5.0], [0.3, 5.0], [0.7, 5.0],
      ...                      [1.0, 5.0], [2.0, 5.0], [9.0, -9.0]])}
      >>> aggregators.bulyan(x, num_byzantine=1)  # selects rows 2, 3, 1, 4, 5
      {'w': Array([0.666..., 5. ], dtype=float32)}
      >>> aggregators.bulyan(x, num_byzantine=1, variant="byzantine_momentum")
      {'w': Array([0.275, 5.   ], dtype=float32)}
    """
    if variant not in _VARIANTS:
        raise ValueError(f"bulyan: unknown variant {variant!r}; choose one of "
                         f"{', '.join(map(repr, _VARIANTS))}")
    if variant == "byzantine_momentum":
        if selection != "krum" or not squared or selection_kwargs:
            raise ValueError(
                "bulyan: variant='byzantine_momentum' fixes its selection (Krum "
                "scores with plain distances, computed once); drop selection, "
                "squared and selection_kwargs, or use variant='paper'")
        n = num_rows(updates)
        selected = _byzantine_momentum_selected(updates, n, num_byzantine)
        return mean_around_median(selected, num_keep=n - 4 * num_byzantine - 2,
                                  lower=True)
    chosen = bulyan_selection(updates, num_byzantine=num_byzantine,
                              selection=selection, squared=squared,
                              selection_kwargs=selection_kwargs)
    n = chosen.shape[0] + 2 * num_byzantine
    selected = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[chosen], updates)
    return mean_around_median(selected, num_keep=n - 4 * num_byzantine)
