"""Nearest Neighbour Mixing (NNM), a pre-aggregation (Allouah et al. 2023), and
MoNNA, the mean of one pivot row's neighbourhood (Farhadkhani et al. 2023).

Each row is replaced by the mean of its ``n - f`` nearest rows, itself
included, Euclidean over all leaves together.
The neighbourhoods come from the ``[n, n]`` distance matrix (one Gram matmul
per leaf, then a sort of the small matrix); the mixing is one
``[n, n] @ [n, d]`` matmul per leaf with a 0/1 weight matrix scaled by
``1/(n - f)``. The stack is never sorted.

Ties: a row is always its own first neighbour; other rows at equal distance
are taken in increasing index order, so the output is permutation
equivariant up to ties.

**Non-finite rows** (``inf``/``NaN``, or a squared norm that overflows) are
infinitely far from every other row, so no finite row mixes them in while at
most ``f`` rows are non-finite. A non-finite row has no nearest neighbours of
its own: it is replaced by the mixture of the *most central* finite row (the
finite row of least sum of distances to its ``n - f - 1`` nearest others,
lowest index on ties), i.e. by the mean of ``n - f`` finite rows, as if that
worker had sent a copy of the central row. So with at most ``f`` non-finite
rows every output row is finite; with more, a row whose neighbourhood
contains a non-finite row is ``NaN``.

MoNNA's output is NNM's output row ``pivot`` (same neighbourhoods, same
ties, same treatment of a non-finite row).

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing:
  A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023,
  https://arxiv.org/abs/2302.01772.
  Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan, "Robust Collaborative
  Learning with Linear Gradient Overhead", ICML 2023,
  https://arxiv.org/abs/2209.10931.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from byzjax._registry import at_least
from byzjax._tree import (
    PyTree,
    num_rows,
    pairwise_sq_distances,
    row_is_finite,
    row_sq_norms,
    sq_distances_to,
    weighted_rows,
)
from byzjax.aggregators._base import AGGREGATORS, PREAGGREGATORS
from byzjax.aggregators._krum import first_argmin, krum_scores

__all__ = ["nearest_neighbour_mixing", "nearest_neighbour_weights", "monna",
           "monna_weights", "monna_weights_from_distances"]


def _mixing(updates: PyTree, num_byzantine: int):
    d2, finite = pairwise_sq_distances(updates, with_finite=True,
                                      rescale=True)
    return _mixing_from_distances(d2, finite, num_byzantine)


def _mixing_from_distances(d2: jax.Array, finite: jax.Array, num_byzantine: int):
    n = d2.shape[0]
    m = n - num_byzantine
    eye = jnp.eye(n, dtype=bool)
    # Self first (key -1), then by distance, then by index (stable sort).
    order = jnp.argsort(jnp.where(eye, -1.0, d2), axis=1, stable=True)
    near = jnp.zeros((n, n), bool).at[jnp.arange(n)[:, None], order[:, :m]].set(True)
    scores = krum_scores(d2, num_byzantine=num_byzantine, num_neighbours=m - 1)
    central = first_argmin(scores, finite)
    near = jnp.where(finite[:, None], near, near[central][None, :])
    return near, finite, m


def nearest_neighbour_weights(updates: PyTree, *, num_byzantine: int) -> jax.Array:
    """The NNM mixing matrix: ``float[n, n]``, row ``i`` holds ``1/(n - f)`` on the
    ``n - f`` rows mixed into output row ``i`` and 0 elsewhere.

    See :func:`nearest_neighbour_mixing` (same arguments).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0], [1.0], [3.0]])}
      >>> aggregators.nearest_neighbour_weights(x, num_byzantine=1)
      Array([[0.5, 0.5, 0. ],
             [0.5, 0.5, 0. ],
             [0. , 0.5, 0.5]], dtype=float32)
    """
    near, _, m = _mixing(updates, num_byzantine)
    return near.astype(jnp.float32) / m


@PREAGGREGATORS.register("nnm", aliases=("nearest_neighbor_mixing",
                                         "nearest_neighbour_mixing"),
                         display_name="nearest-neighbour mixing", short_name="NNM",
                         order=0)
def nearest_neighbour_mixing(updates: PyTree, *, num_byzantine: int) -> PyTree:
    """NNM: every row becomes the mean of its ``n - f`` nearest rows (itself included).

    A pre-aggregation: the output keeps the worker axis and is meant to be fed
    to a robust aggregator (e.g. ``trimmed_mean(nnm(x))``); it brings the
    mixed honest rows close together so that rules such as coordinate-wise
    median or Krum reach the optimal resilience order under heterogeneity
    (Allouah et al. 2023). Non-finite rows and ties: see the module docstring.

    Cost: one Gram matmul per leaf (``O(n^2 d)``), a sort of the ``[n, n]``
    distance matrix, and one ``[n, n] @ [n, d]`` matmul per leaf.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``; ``n`` static.
      num_byzantine: static int ``f`` with ``n > 2f``; ``f = 0`` mixes every
        row into the plain mean.

    Returns:
      Pytree with leaves ``[n, *param_shape]`` (input dtypes).

    Raises:
      ValueError: if ``n <= 2f``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0], [1.0], [3.0], [100.0]])}
      >>> aggregators.nearest_neighbour_mixing(x, num_byzantine=1)["w"]
      Array([[ 1.333...],
             [ 1.333...],
             [ 1.333...],
             [34.666...]], dtype=float32)
      >>> aggregators.get_preaggregator("nnm") is aggregators.nearest_neighbour_mixing
      True
    """
    near, finite, m = _mixing(updates, num_byzantine)
    weights = near.astype(jnp.float32) / m
    # Columns of non-finite rows are zero while at most f rows are non-finite;
    # with more, rows that mix a non-finite row become NaN (no silent zeros).
    touched = jnp.any(near & ~finite[None, :], axis=1)
    return weighted_rows(updates, weights, keep=finite, nan_rows=touched)


@AGGREGATORS.register("monna", keywords={"pivot": at_least(0)},
                      display_name="MoNNA", short_name="MONNA", order=11)
def monna(updates: PyTree, *, num_byzantine: int, pivot: int = 0,
          pivot_aggregator: str | None = None) -> PyTree:
    """MoNNA: the mean of the ``n - f`` rows nearest to a pivot (itself included).

    ``1/(n - f) sum_{i in N(p)} x_i`` with ``N(p)`` the ``n - f`` rows
    nearest to the pivot ``p`` (Euclidean over all leaves together). Two
    pivots, as in Farhadkhani et al.'s code (``aggregators/cva.py``):

    * ``pivot=i`` (default 0): row ``i``. In peer-to-peer learning each honest
      node aggregates around its own vector, which it trusts (ByzFL's
      ``MoNNA(f, idx)``; the simulator puts the receiver's own vector in row
      0, ``docs/PEER_TO_PEER.md``).
    * ``pivot_aggregator="median"`` (any registered aggregator, told the same
      ``f``): that rule's output, as a parameter server that trusts no row
      would use it (the code's ``--gar-pivot``).

    With a row pivot it is :func:`nearest_neighbour_mixing`'s output row
    ``pivot``, with its conventions. **Ties:** the pivot row is its own first
    neighbour; other rows at equal distance are taken in increasing index
    order (ByzFL's ``argpartition`` picks among them arbitrarily; tied rows
    that are equal, such as identical Byzantine rows, give the same mean
    either way). **Not permutation invariant** with a row pivot: the answer
    depends on which row is the pivot; it is invariant under permutations
    that keep the pivot row in place (up to ties); with ``pivot_aggregator``
    it is as invariant as that rule. **Non-finite rows** (``inf``/``NaN``,
    or a squared norm that overflows) are infinitely far from every other
    row, so with at most ``f`` of them none is in the pivot's neighbourhood
    and the result is finite. A non-finite pivot row has no neighbours of its
    own: its row is replaced, as in NNM, by the neighbourhood of the most
    central finite row (least sum of squared distances to its ``n - f - 1``
    nearest others, lowest index on ties), so the result is still the mean
    of ``n - f`` finite rows. With more than ``f`` non-finite rows, a
    neighbourhood that holds one gives ``inf``/``NaN``.

    Cost: with a finite row pivot and at least ``n - f`` finite rows, the
    ``n`` distances to the pivot (``O(n d)``), a sort of ``n`` values and
    one fused weighted sum of the rows; otherwise (a ``lax.cond``, a real
    branch unless vmapped) one Gram matmul per leaf (``O(n^2 d)``, the full
    distance matrix the fallback for a non-finite pivot needs) and a sort of
    the ``[n, n]`` matrix. Measured inside the peer-to-peer round
    (``scripts/bench.py`` section 7: 21 receivers of 21 rows of 79,510,
    loaded 2-core machine): 151 -> 105 ms per round. With
    ``pivot_aggregator``: that rule, ``n`` distances to its output
    (``O(n d)``), a sort of ``n`` values, one weighted sum.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``; ``n`` static.
      num_byzantine: static int ``f`` with ``n > 2f`` (ByzFL's requirement);
        ``f = 0`` gives the mean.
      pivot: static int row index, ``0 <= pivot < n``.
      pivot_aggregator: static name of a registered aggregator whose output
        is the pivot (then ``pivot`` must stay 0), or None (a row pivot).

    Returns:
      Pytree with leaves ``[*param_shape]`` (input dtypes).

    Raises:
      ValueError: if ``n <= 2f``, ``pivot >= n``, an unknown
        ``pivot_aggregator``, or both pivots given.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])}
      >>> aggregators.monna(x, num_byzantine=1, pivot=1)  # rows 0 and 2 tie: 0
      {'w': Array([2.5, 3.5, 4.5], dtype=float32)}
      >>> aggregators.monna(x, num_byzantine=1, pivot=2)
      {'w': Array([5.5, 6.5, 7.5], dtype=float32)}
      >>> y = {"w": jnp.array([[0.0], [1.0], [2.0], [9.0]])}
      >>> aggregators.monna(y, num_byzantine=1, pivot_aggregator="median")
      {'w': Array([1.], dtype=float32)}
    """
    if pivot_aggregator is None:
        _check_pivot(pivot, num_rows(updates))
        return _monna(updates, num_byzantine, pivot)
    weights = monna_weights(updates, num_byzantine=num_byzantine, pivot=pivot,
                            pivot_aggregator=pivot_aggregator)
    return weighted_rows(updates, weights, keep=weights > 0)


def _check_pivot(pivot, n: int) -> None:
    if (not isinstance(pivot, int) or isinstance(pivot, bool) or pivot < 0
            or pivot >= n):
        raise ValueError(f"monna: pivot must be a row index (a Python int in "
                         f"[0, n) = [0, {n})), got {pivot!r}")


def monna_weights(updates: PyTree, *, num_byzantine: int, pivot: int = 0,
                  pivot_aggregator: str | None = None) -> jax.Array:
    """MoNNA's selection: ``float[n]``, ``1/(n - f)`` on the pivot's ``n - f``
    nearest rows, 0 elsewhere (:func:`monna`'s arguments; the weights of
    :func:`byzjax.aggregators.selection_weights`).

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"w": jnp.array([[0.0], [1.0], [5.0]])}
      >>> monna_weights(x, num_byzantine=1, pivot=2)
      Array([0. , 0.5, 0.5], dtype=float32)
    """
    n = num_rows(updates)
    _check_pivot(pivot, n)
    m = n - num_byzantine
    if pivot_aggregator is None:
        near, _, _ = _mixing(updates, num_byzantine)
        return near[pivot].astype(jnp.float32) / m
    if pivot:
        raise ValueError(f"monna: give one pivot, a row (pivot={pivot}) or "
                         f"pivot_aggregator={pivot_aggregator!r}, not both")
    entry = AGGREGATORS.entry(pivot_aggregator)
    if entry.needs_key or entry.stateful or entry.needs_reference:
        raise ValueError(f"monna: pivot_aggregator {entry.name!r} needs a key, "
                         "a center or a reference; choose a deterministic rule "
                         "(median, trimmed_mean, geometric_median, ...)")
    center = entry.fn(updates, num_byzantine=num_byzantine)
    d2 = jnp.where(row_is_finite(updates), sq_distances_to(updates, center),
                   jnp.inf)
    order = jnp.argsort(d2, stable=True)
    return jnp.zeros((n,), jnp.float32).at[order[:m]].set(1.0 / m)


def monna_weights_from_distances(sq_dist: jax.Array, finite: jax.Array, *,
                                 num_byzantine: int, pivot: int = 0) -> jax.Array:
    """:func:`monna_weights` around row ``pivot`` from the rows' distances.

    The same neighbourhood as :func:`monna` with a row pivot on the full
    matrix (ties, a non-finite pivot's fallback), read off ``sq_dist``
    (``float[n, n]``, :func:`~byzjax._tree.pairwise_sq_distances` with
    ``rescale=True``) and ``finite`` (``bool[n]``). The peer-to-peer round
    uses it with one matrix of every vector sent, each receiver's view a
    sub-matrix (``docs/PEER_TO_PEER.md``).

    Example:
      >>> import jax.numpy as jnp
      >>> d2 = jnp.array([[0.0, 1.0, 25.0], [1.0, 0.0, 16.0], [25.0, 16.0, 0.0]])
      >>> monna_weights_from_distances(d2, jnp.ones(3, bool), num_byzantine=1,
      ...                              pivot=2)
      Array([0. , 0.5, 0.5], dtype=float32)
    """
    near, _, m = _mixing_from_distances(sq_dist, finite, num_byzantine)
    return near[pivot].astype(jnp.float32) / m


@functools.partial(jax.jit, static_argnums=(1, 2))
def _monna(updates: PyTree, num_byzantine: int, pivot: int) -> PyTree:
    # Jitted (inlined under a caller's jit; compiled once per shape when
    # called eagerly, instead of running op by op).
    n = num_rows(updates)
    m = n - num_byzantine
    # Fast path: the distances to the pivot only (O(n d)) when the pivot and
    # at least n - f rows are finite (squared norms included): then nothing
    # is rescaled and the full matrix's row `pivot` holds the same order
    # (non-finite rows last). Otherwise (a lax.cond: a real branch unless
    # vmapped) the full matrix with its fallback for a non-finite pivot.
    finite = jnp.isfinite(row_sq_norms(updates))
    row = jax.tree_util.tree_map(lambda x: x[pivot], updates)
    d2 = jnp.where(finite, sq_distances_to(updates, row), jnp.inf)
    d2 = d2.at[pivot].set(-1.0)  # itself first
    ok = finite[pivot] & (jnp.sum(jnp.isfinite(d2)) >= m)

    def fast():
        order = jnp.argsort(d2, stable=True)
        return jnp.zeros((n,), bool).at[order[:m]].set(True)

    hood = jax.lax.cond(ok, fast,
                        lambda: _mixing(updates, num_byzantine)[0][pivot])
    # Rows outside the neighbourhood count as zeros whatever they hold; rows
    # inside enter with IEEE semantics (finite while at most f are not).
    return weighted_rows(updates, hood.astype(jnp.float32) / m, keep=hood)
