"""Krum and Multi-Krum (Blanchard et al. 2017), on the ``[n, n]`` distance matrix.

Krum scores every row by the sum of its (squared) distances to its
``num_neighbours`` nearest other rows and outputs the row of least score;
Multi-Krum averages the ``num_selected`` rows of least score.
Distances are Euclidean over all leaves together, from one Gram matmul per leaf
(:func:`byzjax._tree.pairwise_sq_distances`); the per-row top-k runs on the
``[n, n]`` matrix (cheap), and the output is a dynamic row index (Krum) or one
fused weighted sum of the rows (Multi-Krum, :func:`byzjax._tree.weighted_rows`):
the ``[n, d]`` stack is never sorted.

Conventions (the sources disagree; see ``docs/CONVENTIONS.md``):

* neighbours: ``n - f - 2`` by default (Blanchard et al., Flower);
  ``num_neighbours=n - f - 1`` gives ByzFL's and ByzantineMomentum's count.
* distances: squared by default (Blanchard et al., ByzFL); ``squared=False``
  sums plain distances (ByzantineMomentum).
* ties: the lowest row index wins (Krum), and Multi-Krum keeps the lowest
  indices among equal scores (a stable sort), so both are permutation invariant
  up to ties.
* non-finite rows (``inf``, ``NaN``, or finite rows whose squared norm
  overflows) are infinitely far from every other row, so their score is
  ``+inf``; with at most ``f`` of them every finite row has at least
  ``n - f - 1 >= num_neighbours`` finite neighbours and a finite score, so they
  are never chosen and the output is finite.

References:
  Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries:
  Byzantine Tolerant Gradient Descent", NeurIPS 2017,
  https://arxiv.org/abs/1703.02757.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from byzjax._registry import at_least
from byzjax._tree import PyTree, num_rows, pairwise_sq_distances, weighted_rows
from byzjax.aggregators._base import AGGREGATORS

__all__ = ["krum", "multi_krum", "krum_scores"]


def _krum_min_workers(f: int) -> int:
    return 2 * f + 3


_KRUM_REQUIREMENT = "n >= 2f+3"
# ByzFL accepts n > 2f (with n - f - 1 neighbours); the requirement is kept
# because Krum's guarantee (Blanchard et al. 2017, Proposition 1) needs it.
_KRUM_HINT = ("No option relaxes this: Krum's guarantee (Blanchard et al. 2017) "
              "needs n > 2f + 2, although ByzFL runs it for any n > 2f; for "
              "n = 2f + 1 or 2f + 2 use a rule that needs only n > 2f, e.g. "
              "'mda', 'trimmed_mean' or 'geometric_median'.")


def first_argmin(values: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Index of the first minimum of ``values`` over the ``valid`` entries.

    Unlike ``jnp.argmin(jnp.where(valid, values, inf))`` it returns a valid
    index even when every valid value is ``+inf`` (the first valid one).
    """
    if valid is None:
        valid = jnp.ones(values.shape, bool)
    masked = jnp.where(valid, values, jnp.inf)
    is_min = valid & (masked == jnp.min(masked))
    return jnp.argmax(is_min)


def krum_scores(
    sq_dist: jax.Array,
    *,
    num_byzantine: int,
    num_neighbours: int | jax.Array | None = None,
    valid: jax.Array | None = None,
    squared: bool = True,
) -> jax.Array:
    """Krum scores from a squared-distance matrix, optionally on a subset of rows.

    ``score(i) = sum of the num_neighbours smallest d(i, j)`` over valid
    ``j != i``, with ``d`` the squared distance (``squared=True``) or the
    distance. Rows outside ``valid`` get ``+inf``; a row with fewer than
    ``num_neighbours`` finite valid neighbours gets ``+inf``.

    Args:
      sq_dist: ``float[n, n]`` squared distances, ``+inf`` for non-finite rows
        and no ``NaN`` (e.g. from :func:`byzjax._tree.pairwise_sq_distances`).
      num_byzantine: static int ``f``; only used for the default neighbour count.
      num_neighbours: neighbours per score, a Python int or a traced integer
        scalar (it only sets a mask, not a shape). Default
        ``m - f - 2`` with ``m`` the number of valid rows (traced when
        ``valid`` is given). Values ``<= 0`` give all-zero scores.
      valid: optional ``bool[n]`` mask of the rows in the current set (Bulyan
        applies Krum to the rows not yet selected).
      squared: static; sum squared distances (Blanchard et al., ByzFL) or plain
        ones (ByzantineMomentum).

    Returns:
      ``float[n]`` scores.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax.aggregators import krum_scores
      >>> x = jnp.array([0.0, 1.0, 3.0, 10.0])
      >>> d2 = (x[:, None] - x[None, :]) ** 2
      >>> krum_scores(d2, num_byzantine=0, num_neighbours=1)
      Array([ 1.,  1.,  4., 49.], dtype=float32)
      >>> krum_scores(d2, num_byzantine=0, num_neighbours=1,
      ...             valid=jnp.array([False, True, True, True]))
      Array([inf,  4.,  4., 49.], dtype=float32)
    """
    n = sq_dist.shape[0]
    num_valid: int | jax.Array
    if valid is None:
        valid = jnp.ones((n,), bool)
        num_valid = n
    else:
        num_valid = jnp.sum(valid, dtype=jnp.int32)
    if num_neighbours is None:
        num_neighbours = num_valid - num_byzantine - 2
    eye = jnp.eye(n, dtype=bool)
    dist = sq_dist if squared else jnp.sqrt(sq_dist)
    dist = jnp.where(valid[None, :] & ~eye, dist, jnp.inf)
    nearest = jnp.sort(dist, axis=1)  # [n, n], cheap: n is the worker count
    take = jnp.arange(n)[None, :] < num_neighbours
    scores = jnp.sum(jnp.where(take, nearest, 0.0), axis=1)
    return jnp.where(valid, scores, jnp.inf)


def _check_neighbours(rule: str, n: int, f: int, num_neighbours: int | None) -> int:
    if num_neighbours is None:
        return n - f - 2
    if not isinstance(num_neighbours, int) or isinstance(num_neighbours, bool):
        raise TypeError(f"{rule}: num_neighbours must be a Python int (static), got "
                        f"{type(num_neighbours).__name__}")
    if not 1 <= num_neighbours <= n - 1:
        raise ValueError(
            f"{rule}: num_neighbours must be in [1, n - 1] = [1, {n - 1}] for "
            f"n={n}, got {num_neighbours}. Use n - f - 2 (Blanchard et al., the "
            f"default) or n - f - 1 (ByzFL)."
        )
    return num_neighbours


def _scores(updates, rule, num_byzantine, num_neighbours, squared):
    n = num_rows(updates)
    k = _check_neighbours(rule, n, num_byzantine, num_neighbours)
    d2 = pairwise_sq_distances(updates, rescale=True)
    return n, krum_scores(d2, num_byzantine=num_byzantine, num_neighbours=k,
                          squared=squared)


@AGGREGATORS.register("krum", min_workers=_krum_min_workers,
                      requirement=_KRUM_REQUIREMENT, hint=_KRUM_HINT,
                      keywords={"num_neighbours": at_least(1)},
                      display_name="Krum", short_name="KRUM", order=5)
def krum(
    updates: PyTree,
    *,
    num_byzantine: int,
    num_neighbours: int | None = None,
    squared: bool = True,
) -> PyTree:
    """Krum: the row whose ``num_neighbours`` nearest other rows are closest.

    ``score(i) = sum_{j in N_i} ||x_i - x_j||^2`` over the ``num_neighbours``
    nearest rows ``N_i`` of ``x_i`` (itself excluded); returns ``x_{argmin}``
    (ties: lowest index). Requires ``n >= 2f + 3``. Resilience order
    ``1 + sqrt((n - f)/(n - 2f))`` (Farhadkhani et al., ICML 2022).

    Cost: one Gram matmul per leaf (``O(n^2 d)``), a sort of the ``[n, n]``
    matrix, and a dynamic row index for the output (``O(d)``).

    Args:
      updates: pytree with leaves ``[n, *param_shape]``; ``n`` static.
      num_byzantine: static int ``f`` with ``n >= 2f + 3``.
      num_neighbours: static int in ``[1, n - 1]``; default ``n - f - 2``
        (Blanchard et al.); ByzFL and ByzantineMomentum use ``n - f - 1``.
      squared: static; score with squared distances (default; Blanchard et al.,
        ByzFL) or plain distances (``False``; ByzantineMomentum).

    Returns:
      Pytree with leaves ``[*param_shape]``: one of the input rows, exactly.

    Raises:
      ValueError: if ``n < 2f + 3`` or ``num_neighbours`` is out of range.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0],
      ...                      [9.0, 9.0]])}
      >>> aggregators.krum(x, num_byzantine=1)
      {'w': Array([1., 1.], dtype=float32)}
    """
    _, scores = _scores(updates, "krum", num_byzantine, num_neighbours, squared)
    best = first_argmin(scores)
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[best], updates)


@AGGREGATORS.register("multi_krum", min_workers=_krum_min_workers,
                      requirement=_KRUM_REQUIREMENT, hint=_KRUM_HINT,
                      aliases=("multikrum",),
                      keywords={"num_selected": at_least(1),
                                "num_neighbours": at_least(1)},
                      display_name="Multi-Krum", short_name="MKRUM", order=6)
def multi_krum(
    updates: PyTree,
    *,
    num_byzantine: int,
    num_selected: int | None = None,
    num_neighbours: int | None = None,
    squared: bool = True,
) -> PyTree:
    """Multi-Krum: the mean of the ``num_selected`` rows of least Krum score.

    Scores as in :func:`krum`; ties between equal scores keep the lower index.
    ``num_selected=1`` is Krum, ``num_selected=n`` the plain mean. Requires
    ``n >= 2f + 3``.

    Cost: as :func:`krum`, plus one fused weighted sum of the rows (``O(n d)``).

    Args:
      updates: pytree with leaves ``[n, *param_shape]``; ``n`` static.
      num_byzantine: static int ``f`` with ``n >= 2f + 3``.
      num_selected: static int ``m`` in ``[1, n]``; default ``n - f`` (ByzFL).
      num_neighbours: static int in ``[1, n - 1]``; default ``n - f - 2``.
      squared: static; squared (default) or plain distances in the score.

    Returns:
      Pytree with leaves ``[*param_shape]`` (input dtypes). Finite whenever at
      most ``min(f, n - m)`` rows are non-finite; with more, non-finite selected
      rows propagate (IEEE mean).

    Raises:
      ValueError: if ``n < 2f + 3`` or ``num_selected``/``num_neighbours`` is
        out of range.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0], [1.0], [2.0], [3.0], [50.0]])}
      >>> aggregators.multi_krum(x, num_byzantine=1)
      {'w': Array([1.5], dtype=float32)}
      >>> aggregators.multi_krum(x, num_byzantine=1, num_selected=5)
      {'w': Array([11.2], dtype=float32)}
    """
    n, scores = _scores(updates, "multi_krum", num_byzantine, num_neighbours,
                        squared)
    m = n - num_byzantine if num_selected is None else num_selected
    if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= n:
        raise ValueError(f"multi_krum: num_selected must be a Python int in [1, n] "
                         f"= [1, {n}], got {num_selected!r}")
    order = jnp.argsort(scores, stable=True)
    selected = jnp.zeros((n,), bool).at[order[:m]].set(True)
    weights = selected.astype(jnp.float32) / m
    # Unselected rows count as zeros (whatever they hold); selected ones IEEE.
    return weighted_rows(updates, weights, keep=selected)
