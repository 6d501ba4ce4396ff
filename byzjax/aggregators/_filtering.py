"""Filtering rules that drop suspicious rows, then average the rest: DnC,
SignGuard and clipped clustering, as the Blades library implements them.

* **DnC** (divide and conquer, Shejwalkar and Houmansadr 2021): on random
  subsets of the coordinates, rows whose centred projection on the top
  singular vector is largest are outliers; the rows that are never outliers
  are averaged.
* **SignGuard** (Xu et al. 2022): rows whose norm is far from the median norm
  are dropped, the rows are clustered in two by the fractions of their
  positive, negative and zero coordinates and the largest cluster is kept;
  the rows kept by both filters are clipped to the median norm and averaged.
* **Clipped clustering** (Li et al. 2023): every row is clipped to the median
  norm, the rows are clustered in two by agglomerative clustering (average
  linkage on cosine distances) and the mean of the largest cluster is
  returned.

Every discrete choice (scores, clusters, kept sets) runs on
``lax.stop_gradient`` of the rows, so the rules are differentiable almost
everywhere through the final weighted mean (and the clipping factors). The
output is one fused weighted sum of the input rows
(:func:`byzjax._tree.weighted_rows`); rows outside the kept set count as zeros
whatever they hold.

Where byzjax departs from Blades (and why) is listed in ``docs/CONVENTIONS.md``
and in each rule's docstring; in short: exact, deterministic algorithms in
place of scikit-learn's (an exact 2-means from the farthest pair of points for
SignGuard's KMeans, an exact average-linkage agglomeration for clipped
clustering), the current round's median norm instead of a history of norms,
permutation-invariant tie rules, and a finite answer where Blades would
average an empty set.

References:
  Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
  Poisoning Attacks and Defenses for Federated Learning", NDSS 2021,
  https://par.nsf.gov/servlets/purl/10286354.
  Xu, Huang, Song, Lan, "SignGuard: Byzantine-robust Federated Learning
  through Collaborative Malicious Gradient Filtering", ICDCS 2022,
  https://arxiv.org/abs/2109.05872.
  Li, Ngai, Voigt, "An Experimental Study of Byzantine-Robust Aggregation
  Schemes in Federated Learning", IEEE Transactions on Big Data, 2023,
  https://arxiv.org/abs/2302.07173.
  Blades, https://github.com/lishenghui/blades (``DnC``, ``Signguard``,
  ``Clippedclustering``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from byzjax._registry import at_least
from byzjax._tree import PyTree, gram, num_rows, row_is_finite, weighted_rows
from byzjax.aggregators._base import AGGREGATORS
from byzjax.aggregators._networks import tree_sum

__all__ = ["dnc", "dnc_coordinates", "signguard", "clipped_clustering"]

_PRECISION = jax.lax.Precision.HIGHEST
#: Lloyd iterations of SignGuard's 2-means at most (scikit-learn's ``max_iter``).
_KMEANS_MAX_ITERATIONS = 300


# ------------------------------------------------------------------ helpers


def _acc_dtype(updates: PyTree):
    """The accumulation dtype: the stack's, at least float32."""
    return jnp.result_type(*[jnp.promote_types(leaf.dtype, jnp.float32)
                             for leaf in jax.tree_util.tree_leaves(updates)])


def _num_coordinates(updates: PyTree, n: int) -> int:
    """``d``: the coordinates of one row over all leaves."""
    return sum(int(leaf.size) // n if n else 0
               for leaf in jax.tree_util.tree_leaves(updates))


def _row_norms(updates: PyTree, n: int):
    """``(norms, finite)``: Euclidean norms over all leaves (``+inf`` where a
    row is not finite, or its squared norm overflows) and the finite mask."""
    acc = _acc_dtype(updates)
    sq = tree_sum([jnp.sum(jnp.square(leaf.reshape(n, -1).astype(acc)), axis=1)
                   for leaf in jax.tree_util.tree_leaves(updates)])
    return _norms_from_squares(sq)


def _norms_from_squares(sq: jax.Array):
    """``(norms, finite)`` from squared norms; ``+inf`` where not finite, and a
    zero gradient (not ``NaN``) at zero rows."""
    finite = jnp.isfinite(sq)
    positive = finite & (sq > 0)
    root = jnp.sqrt(jnp.where(positive, sq, 1.0))
    return jnp.where(positive, root, jnp.where(finite, 0.0, jnp.inf)), finite


def _median(values: jax.Array) -> jax.Array:
    """The median of a small vector; for even ``n`` the mean of the two middle
    values (``np.median``). ``+inf`` entries sort last."""
    n = values.shape[0]
    s = jnp.sort(values)
    return 0.5 * (s[(n - 1) // 2] + s[n // 2])


def _clip_factors(norms: jax.Array, limit: jax.Array) -> jax.Array:
    """``min(1, limit / ||x_i||)`` (1 for zero rows)."""
    return jnp.where(norms > limit, limit / jnp.where(norms > 0, norms, 1.0), 1.0)


def _mean_of(updates: PyTree, chosen: jax.Array, factors: jax.Array | None = None):
    """``1/|S| sum_{i in S} c_i x_i`` over the ``chosen`` rows (zeros if none)."""
    count = jnp.sum(chosen)
    w = chosen.astype(jnp.float32) / jnp.maximum(count, 1).astype(jnp.float32)
    if factors is not None:
        w = w * factors.astype(jnp.float32)
    return weighted_rows(updates, jnp.where(chosen, w, 0.0), keep=chosen)


# ---------------------------------------------------------------------- DnC


def dnc_coordinates(key: jax.Array, num_coordinates: int, *,
                    subsample_dim: int = 10_000,
                    num_iterations: int = 5) -> jax.Array:
    """The coordinates :func:`dnc` looks at, one row per iteration.

    Each iteration samples ``b = subsample_dim`` of the ``d =
    num_coordinates`` coordinates (over all leaves, in
    ``jax.tree_util.tree_leaves`` order, each leaf raveled) uniformly without
    replacement, on a key split per iteration: the ``b`` coordinates with the
    largest of ``d`` i.i.d. uniform draws (``lax.top_k``; float32 draws tie
    with small probability, and ``top_k`` then takes the lower index).
    (``jax.random.choice(..., replace=False)`` sorts a whole permutation
    per iteration: measured more than 10x slower on XLA:CPU at ``d =
    1,310,922``.)
    When ``b >= d`` every iteration would see every coordinate, so one
    iteration over ``arange(d)`` is returned (the rule's result is the same,
    and it then does not depend on the key).

    Args:
      key: PRNG key.
      num_coordinates: static ``d``.
      subsample_dim: static ``b >= 1``.
      num_iterations: static ``>= 1``.

    Returns:
      ``int32[num_iterations, b]`` (``int32[1, d]`` when ``b >= d``).

    Example:
      >>> import jax
      >>> dnc_coordinates(jax.random.key(0), 6, subsample_dim=4,
      ...                 num_iterations=2).shape
      (2, 4)
      >>> dnc_coordinates(jax.random.key(0), 3, subsample_dim=4).tolist()
      [[0, 1, 2]]
    """
    for name, value in (("num_coordinates", num_coordinates),
                        ("subsample_dim", subsample_dim),
                        ("num_iterations", num_iterations)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"dnc: {name} must be a Python int >= 1 (it sets "
                             f"shapes), got {value!r}")
    if subsample_dim >= num_coordinates:
        return jnp.arange(num_coordinates, dtype=jnp.int32)[None]
    keys = jax.random.split(key, num_iterations)
    return jax.vmap(lambda k: jax.lax.top_k(
        jax.random.uniform(k, (num_coordinates,)), subsample_dim)[1])(keys).astype(
            jnp.int32)


def _gather_columns(updates: PyTree, n: int, coords: jax.Array) -> jax.Array:
    """``[T, n, b]``: the columns ``coords`` (``[T, b]``, flat coordinates over
    all leaves) of every row, in the accumulation dtype. Each leaf is read at
    the indices that fall inside it (no ``[n, d]`` concatenation)."""
    acc = _acc_dtype(updates)
    out = None
    offset = 0
    for leaf in jax.tree_util.tree_leaves(updates):
        x = leaf.reshape(n, -1)
        size = x.shape[1]
        local = coords - offset
        inside = (local >= 0) & (local < size)
        vals = jnp.take(x, jnp.clip(local, 0, max(size - 1, 0)), axis=1)
        vals = jnp.where(inside[None], vals.astype(acc), jnp.zeros((), acc))
        out = vals if out is None else out + vals
        offset += size
    assert out is not None
    return jnp.moveaxis(out, 1, 0)


def _dnc_keep(z: jax.Array, finite: jax.Array, num_removed: int) -> jax.Array:
    """``bool[n]``: the rows one DnC iteration keeps, from its columns ``z``.

    Scores: the squared projection of the centred rows (centred on the mean
    of the finite rows) on their top right singular vector; non-finite rows
    score ``+inf``. A row is kept when fewer than ``n - num_removed`` rows
    score strictly less, i.e. when its score is at most the
    ``(n - num_removed)``-th smallest (rows tied at the cut are all kept).
    """
    n = z.shape[0]
    z = jnp.where(finite[:, None], z, 0.0)
    # Scores only rank rows: an exact power of two keeps the Gram finite for
    # rows up to the largest float and changes no comparison.
    # Two normal factors: one 2**-e could be subnormal, which XLA:CPU
    # flushes to zero.
    _, e = jnp.frexp(jnp.max(jnp.abs(z)))
    one = jnp.ones((), z.dtype)
    z = z * jnp.ldexp(one, -(e // 2)) * jnp.ldexp(one, -(e - e // 2))
    count = jnp.maximum(jnp.sum(finite), 1).astype(z.dtype)
    centre = jnp.sum(z, axis=0) / count
    y = jnp.where(finite[:, None], z - centre, 0.0)
    g = jnp.matmul(y, y.T, precision=_PRECISION)
    g = 0.5 * (g + g.T)
    eigenvalues, eigenvectors = jnp.linalg.eigh(g)
    top, u = eigenvalues[-1], eigenvectors[:, -1]
    # The projection of row i on the top right singular vector v = Y^T u /
    # sqrt(top) is (G u)_i / sqrt(top): computed from G's row, so identical
    # rows get identical scores bit for bit.
    proj = jnp.matmul(g, u, precision=_PRECISION)
    scores = jnp.where(top > 0, proj * proj / jnp.where(top > 0, top, 1.0), 0.0)
    scores = jnp.where(finite & ~jnp.isnan(scores), scores, jnp.inf)
    below = jnp.sum(scores[None, :] < scores[:, None], axis=1)
    return below < n - num_removed


@AGGREGATORS.register("dnc", needs_key=True, aliases=("divide_and_conquer",),
                      keywords={"num_iterations": at_least(1),
                                "subsample_dim": at_least(1),
                                "filter_fraction": {"low": 0, "traced": False}},
                      display_name="DnC", short_name="DNC", order=14)
def dnc(
    updates: PyTree,
    *,
    num_byzantine: int,
    key: jax.Array,
    num_iterations: int = 5,
    subsample_dim: int = 10_000,
    filter_fraction: float = 1.0,
) -> PyTree:
    """DnC (divide and conquer): the mean of the rows no iteration flags.

    For each of ``num_iterations`` iterations, ``b = subsample_dim`` random
    coordinates (:func:`dnc_coordinates`) are taken from every row; the
    subsampled rows are centred on their mean; every row is scored by its
    squared projection on the top right singular vector of the centred
    matrix; the ``k = floor(filter_fraction * num_byzantine)`` highest scores
    are removed. The output is the mean of the rows kept by every iteration
    (Shejwalkar and Houmansadr 2021; Blades' ``DnC``).

    The top singular vector is exact: the top eigenvector of the ``[n, n]``
    Gram matrix of the centred subsample (``jnp.linalg.eigh``), cheap for the
    small ``n`` of a round.

    Conventions (``docs/CONVENTIONS.md``):

    * ties at the cut: every row whose score equals the ``(n - k)``-th
      smallest is kept, so at most ``k`` rows are removed per iteration and
      identical rows share one fate (Blades' ``argsort`` picks arbitrarily);
    * non-finite rows (an ``inf`` / ``NaN`` anywhere in the row) are left out
      of the centring and the singular vector, score ``+inf`` (removed first)
      and never enter the mean;
    * if the iterations together keep no finite row (possible when
      ``num_iterations * k >= n``), the rows kept by the first iteration are
      averaged (Blades averages an empty set: ``NaN``);
    * ``b >= d``: one iteration over every coordinate (all iterations would
      be the same), which does not depend on ``key``.

    Defaults are Blades': ``num_iterations=5`` (the paper's ``niters``),
    ``subsample_dim=10000`` (``b``), ``filter_fraction=1.0`` (``c``).

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static ``f`` with ``n > 2f``.
      key: PRNG key for the coordinate samples (traced; the simulator splits
        it every round, like bucketing's).
      num_iterations: static ``>= 1``.
      subsample_dim: static ``>= 1``; at most ``d`` are used.
      filter_fraction: static Python float ``c >= 0``; ``floor(c f)`` rows are
        removed per iteration, which must leave at least one row.

    Returns:
      Pytree with leaves ``[*param_shape]``, the input dtypes.

    Raises:
      ValueError: if ``n <= 2f``, or ``floor(filter_fraction * f) >= n``.

    Reference:
      Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
      Poisoning Attacks and Defenses for Federated Learning", NDSS 2021,
      https://par.nsf.gov/servlets/purl/10286354.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[1.0, 0.0], [1.2, 0.1], [0.9, -0.1],
      ...                      [1.1, 0.0], [-20.0, 30.0]])}
      >>> aggregators.dnc(x, num_byzantine=1, key=jax.random.key(0))
      {'w': Array([1.05, 0.  ], dtype=float32)}
    """
    n = num_rows(updates)
    try:
        fraction = float(filter_fraction)
    except TypeError:  # a tracer
        raise ValueError("dnc: filter_fraction must be a concrete Python float "
                         "(it sets how many rows are removed), got a traced "
                         "value") from None
    num_removed = int(fraction * num_byzantine)
    if num_removed >= n:
        raise ValueError(
            f"dnc: filter_fraction * num_byzantine = {filter_fraction} * "
            f"{num_byzantine} removes floor(...) = {num_removed} >= n = {n} rows; "
            f"use filter_fraction < {n / max(num_byzantine, 1):g}")
    d = _num_coordinates(updates, n)
    coords = dnc_coordinates(key, d, subsample_dim=subsample_dim,
                             num_iterations=num_iterations)
    finite = row_is_finite(updates)
    columns = _gather_columns(jax.lax.stop_gradient(updates), n, coords)
    keeps = jax.vmap(lambda z: _dnc_keep(z, finite, num_removed))(columns)
    kept = jnp.all(keeps, axis=0) & finite
    chosen = jnp.where(jnp.any(kept), kept, keeps[0] & finite)
    return _mean_of(updates, chosen)


# ---------------------------------------------------------------- SignGuard


def _sign_features(updates: PyTree, n: int) -> jax.Array:
    """``float32[n, 3]``: the numbers of positive, negative and zero
    coordinates of each row over all leaves (``NaN`` entries count in none).

    From ``sum(sign(x))`` and ``sum(|sign(x)|)`` (exact integers in float32 up
    to ``2**24`` coordinates): on XLA:CPU these sums ran several times faster
    than counting comparisons, which are computed only when a row holds a
    ``NaN`` (a ``lax.cond``).
    """
    leaves = [leaf.reshape(n, -1) for leaf in jax.tree_util.tree_leaves(updates)]
    d = sum(x.shape[1] for x in leaves)
    signs = [jnp.sign(x.astype(jnp.float32)) for x in leaves]
    total = tree_sum([jnp.sum(s, axis=1) for s in signs])
    nonzero = tree_sum([jnp.sum(jnp.abs(s), axis=1) for s in signs])
    fast = jnp.stack([0.5 * (nonzero + total), 0.5 * (nonzero - total),
                      d - nonzero], axis=1)

    def counted():
        counts = [tree_sum([jnp.sum(test(x), axis=1, dtype=jnp.int32)
                            for x in leaves])
                  for test in (lambda x: x > 0, lambda x: x < 0, lambda x: x == 0)]
        return jnp.stack(counts, axis=1).astype(jnp.float32)

    return jax.lax.cond(jnp.all(jnp.isfinite(fast)), lambda: fast, counted)


def _lexicographic_first(points: jax.Array, mask: jax.Array) -> jax.Array:
    """The index of a row of ``points`` that is lexicographically smallest
    among the ``mask`` rows (the first such index; 0 if the mask is empty)."""
    for c in range(points.shape[1]):
        col = jnp.where(mask, points[:, c], jnp.inf)
        mask = mask & (col == jnp.min(col))
    return jnp.argmax(mask)


def _two_means(points: jax.Array) -> jax.Array:
    """``bool[n]``: the larger cluster of a deterministic 2-means (Lloyd).

    Seeds: the two points farthest apart; among several such pairs, the one
    that is first in lexicographic order of the points (each pair written
    lexicographically smaller point first); its smaller point seeds cluster
    0. A point joins cluster 1 only when strictly closer to its centroid
    (ties: cluster 0). Every choice depends on the points' values only, never
    on the row order, so the result is permutation invariant. Lloyd steps run
    until the assignment no longer changes (at most 300 steps, scikit-learn's
    ``max_iter``). The comparisons are cross-multiplied by the cluster sizes
    (``m_1^2 |m_0 p - S_0|^2`` vs ``m_0^2 |m_1 p - S_1|^2`` with ``S`` the
    sums), so on integer counts they are exact and need no division. The
    larger cluster is returned; equal sizes: the one of least inertia; equal
    sizes and inertias: both (no basis to prefer either).
    """
    n = points.shape[0]
    if n == 1:
        return jnp.ones((1,), bool)
    diff = points[:, None, :] - points[None, :, :]
    d2 = jnp.sum(diff * diff, axis=-1)
    # pairs[i, j]: a farthest pair with points[i] lexicographically first.
    less = jnp.zeros((n, n), bool)
    for c in reversed(range(points.shape[1])):
        pc = points[:, c]
        less = (pc[:, None] < pc[None, :]) | ((pc[:, None] == pc[None, :]) & less)
    pairs = (d2 == jnp.max(d2)) & less
    a = _lexicographic_first(points, jnp.any(pairs, axis=1))
    b = _lexicographic_first(points, pairs[a])

    def assign(s0, m0, s1, m1):
        e0 = m1 * m1 * jnp.sum(jnp.square(m0 * points - s0), axis=1)
        e1 = m0 * m0 * jnp.sum(jnp.square(m1 * points - s1), axis=1)
        return e1 < e0  # True: cluster 1

    def stats(labels):
        one = labels.astype(points.dtype)[:, None]
        s1 = jnp.sum(points * one, axis=0)
        s0 = jnp.sum(points * (1.0 - one), axis=0)
        m1 = jnp.sum(one)
        return s0, n - m1, s1, m1

    first = assign(points[a], 1.0, points[b], 1.0)

    def cond(state):
        _, changed, step = state
        return changed & (step < _KMEANS_MAX_ITERATIONS)

    def body(state):
        labels, _, step = state
        new = assign(*stats(labels))
        return new, jnp.any(new != labels), step + 1

    labels, _, _ = jax.lax.while_loop(cond, body, (first, jnp.array(True),
                                                   jnp.array(0)))
    s0, m0, s1, m1 = stats(labels)
    q = jnp.sum(points * points, axis=1)
    one = labels.astype(points.dtype)
    # m * inertia = m * sum |p|^2 - |S|^2, compared when m0 == m1.
    w0 = m0 * jnp.sum(q * (1.0 - one)) - jnp.sum(s0 * s0)
    w1 = m1 * jnp.sum(q * one) - jnp.sum(s1 * s1)
    # The larger cluster; equal sizes: the tighter one; a full tie: both.
    one_better = (m1 > m0) | ((m1 == m0) & (w1 < w0))
    zero_better = (m0 > m1) | ((m0 == m1) & (w0 < w1))
    return jnp.where(one_better, labels, jnp.where(zero_better, ~labels, True))


@AGGREGATORS.register("signguard", aliases=("sign_guard",),
                      keywords={"lower_bound": at_least(0),
                                "upper_bound": at_least(0)},
                      display_name="SignGuard", short_name="SIGNGUARD", order=15)
def signguard(
    updates: PyTree,
    *,
    num_byzantine: int = 0,
    lower_bound: float | jax.Array = 0.1,
    upper_bound: float | jax.Array = 3.0,
) -> PyTree:
    """SignGuard: norm filter, sign-statistics clustering, clipped mean.

    With ``M`` the median of the row norms (over all leaves; for even ``n``
    the mean of the two middle norms):

    1. norm filter: ``S1 = {i : L M <= ||x_i|| <= R M}`` with ``L =
       lower_bound``, ``R = upper_bound``;
    2. sign clustering: each row's feature is the numbers of its positive,
       negative and zero coordinates (Blades: the fractions, the same up to a
       factor); a 2-means of the features, ``S2`` its larger cluster;
    3. the rows of ``S1 & S2`` are clipped to norm ``M`` and averaged.

    Blades computes the same with scikit-learn's ``KMeans(n_clusters=2,
    random_state=0)``; here the 2-means is deterministic and exact: seeded by
    the two farthest features, Lloyd steps to convergence, ties to the first
    seed's cluster, the larger cluster (equal sizes: the tighter one; equal
    sizes and inertias: both). Blades
    clips before the norm filter, so its upper bound never removes a row; here
    the filter reads the unclipped norms, as the paper describes it. The
    paper's sign statistics come from a random subset of coordinates and are
    clustered by MeanShift; Blades and byzjax use every coordinate.

    Non-finite rows (and finite rows whose squared norm overflows, entries
    near ``1e19`` in float32) have an infinite norm: they fail the norm
    filter and never enter the mean. If no row passes both filters the output
    is zeros (Blades averages an empty set). ``num_byzantine`` is only
    checked.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static ``f`` with ``n > 2f``; only checked.
      lower_bound: ``L >= 0`` (default 0.1, as in Blades); may be
        traced.
      upper_bound: ``R >= 0`` (default 3.0, as in Blades); may be traced.

    Returns:
      Pytree with leaves ``[*param_shape]``, the input dtypes.

    Reference:
      Xu, Huang, Song, Lan, "SignGuard: Byzantine-robust Federated Learning
      through Collaborative Malicious Gradient Filtering", ICDCS 2022,
      https://arxiv.org/abs/2109.05872.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0],
      ...                      [-1.5, -1.5], [40.0, 40.0]])}
      >>> aggregators.signguard(x, num_byzantine=1)  # rows 3 (signs), 4 (norm) out
      {'w': Array([1.3333334, 1.3333334], dtype=float32)}
    """
    n = num_rows(updates)
    norms, finite = _row_norms(updates, n)
    stopped = jax.lax.stop_gradient(norms)
    limit = _median(norms)
    m = jax.lax.stop_gradient(limit)
    in_band = finite & (stopped >= lower_bound * m) & (stopped <= upper_bound * m)
    features = _sign_features(jax.lax.stop_gradient(updates), n)
    chosen = in_band & _two_means(features)
    return _mean_of(updates, chosen, _clip_factors(norms, limit))


# ------------------------------------------------------- clipped clustering


def _cosine_distances(g: jax.Array, norms: jax.Array, finite: jax.Array):
    """``1 - cos`` between rows from their Gram matrix; 2 for a pair with a
    non-finite row (Blades maps ``inf`` and ``NaN`` to 2, ``-inf`` to 0);
    ``cos = 0`` when a row is zero (torch's ``cosine_similarity``)."""
    both = finite[:, None] & finite[None, :]
    denom = norms[:, None] * norms[None, :]
    ok = both & (denom > 0)
    cos = jnp.where(ok, g / jnp.where(ok, denom, 1.0), 0.0)
    dist = 1.0 - cos
    dist = jnp.where(jnp.isnan(dist) | (dist == jnp.inf), 2.0, dist)
    dist = jnp.where(dist == -jnp.inf, 0.0, dist)
    return jnp.where(both, dist, 2.0)


def _average_linkage_largest(dist: jax.Array) -> jax.Array:
    """``bool[n]``: the larger of the two clusters of average-linkage
    agglomerative clustering on the distance matrix ``dist``.

    ``n - 2`` merges, each of the two clusters of least average pairwise
    distance (ties: the pair whose smallest members come first, in
    lexicographic order). Average linkages are recomputed from the
    membership matrix at every step (``M^T D M``, exact sums, no
    Lance-Williams update). The larger cluster is returned; equal sizes: the
    one of least mean within-cluster distance; a full tie: both.
    """
    n = dist.shape[0]
    upper = jnp.triu(jnp.ones((n, n), bool), 1)

    def links(members):
        return jnp.matmul(members.T, jnp.matmul(dist, members, precision=_PRECISION),
                          precision=_PRECISION)

    def merge(_, state):
        members, size, active = state
        safe = jnp.where(size > 0, size, 1.0)
        avg = links(members) / (safe[:, None] * safe[None, :])
        valid = upper & active[:, None] & active[None, :]
        flat = jnp.argmin(jnp.where(valid, avg, jnp.inf))
        a, b = flat // n, flat % n
        members = members.at[:, a].add(members[:, b]).at[:, b].set(0.0)
        size = size.at[a].add(size[b]).at[b].set(0.0)
        return members, size, active.at[b].set(False)

    state = (jnp.eye(n, dtype=dist.dtype), jnp.ones((n,), dist.dtype),
             jnp.ones((n,), bool))
    members, size, active = jax.lax.fori_loop(0, max(n - 2, 0), merge, state)
    r0, r1 = jnp.nonzero(active, size=2, fill_value=0)[0]
    total = links(members)
    pairs = size * (size - 1.0)
    within = jnp.where(pairs > 0, jnp.diagonal(total) / jnp.where(pairs > 0, pairs,
                                                                  1.0), 0.0)
    first, second = members[:, r0] > 0, members[:, r1] > 0
    second_better = (size[r1] > size[r0]) | ((size[r1] == size[r0])
                                             & (within[r1] < within[r0]))
    first_better = (size[r0] > size[r1]) | ((size[r0] == size[r1])
                                            & (within[r0] < within[r1]))
    both = first | second
    return jnp.where(second_better, second, jnp.where(first_better, first, both))


@AGGREGATORS.register("clipped_clustering", aliases=("clippedclustering",),
                      display_name="clipped clustering", short_name="CLUSTER",
                      order=16)
def clipped_clustering(updates: PyTree, *, num_byzantine: int = 0) -> PyTree:
    """Clipped clustering: clip to the median norm, keep the larger of two
    average-linkage clusters (cosine distance), average it.

    1. ``tau``: the median of the row norms (over all leaves; for even ``n``
       the mean of the two middle norms); every row is clipped to norm at
       most ``tau``;
    2. agglomerative clustering into two clusters with average linkage on the
       cosine distances ``1 - cos(x_i, x_j)`` (``cos = 0`` when a row is zero;
       distance 2 to a non-finite row), computed exactly (``n - 2`` merges on
       the ``[n, n]`` matrix; ties: the pair of clusters whose smallest
       members come first);
    3. the mean of the clipped rows of the larger cluster (equal sizes: the
       cluster of least mean within-cluster distance; equal sizes and
       distances, as for two single rows: both clusters).

    Blades keeps every past round's norms and clips to the median of that
    history (capped at ``1e5``); this function is stateless and clips to the
    current round's median norm, with no cap. Blades' scikit-learn
    ``AgglomerativeClustering`` labels the clusters arbitrarily and takes
    cluster 1 when it holds more than ``n // 2`` rows, else cluster 0 (so an
    even split is an arbitrary choice); here it is the rule above.

    Non-finite rows (and finite rows whose squared norm overflows, entries
    near ``1e19`` in float32) are at distance 2 from every row and never
    enter the mean; with at most ``f < n / 2`` of them the larger cluster
    holds a finite row. ``num_byzantine`` is only checked.

    Cost: one Gram matmul (``O(n^2 d)``), ``O(n^4)`` for the merges, one fused
    weighted sum of the rows.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static ``f`` with ``n > 2f``; only checked.

    Returns:
      Pytree with leaves ``[*param_shape]``, the input dtypes.

    Reference:
      Li, Ngai, Voigt, "An Experimental Study of Byzantine-Robust Aggregation
      Schemes in Federated Learning", IEEE Transactions on Big Data, 2023,
      https://arxiv.org/abs/2302.07173.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[1.0, 2.0, 3.0], [-1.0, 4.0, -1.0],
      ...                      [2.0, 2.0, 3.0], [3.0, 1.0, 3.0]])}
      >>> aggregators.clipped_clustering(x)
      {'w': Array([1.9596..., 1.6532..., 2.9596...], dtype=float32)}
    """
    g = gram(updates)
    acc = _acc_dtype(updates)
    norms, finite = _norms_from_squares(jnp.diagonal(g).astype(acc))
    tau = _median(norms)
    stopped = jax.lax.stop_gradient(norms)
    dist = _cosine_distances(jax.lax.stop_gradient(g).astype(acc), stopped, finite)
    chosen = _average_linkage_largest(dist) & finite
    return _mean_of(updates, chosen, _clip_factors(norms, tau))
