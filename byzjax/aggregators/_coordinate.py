"""Coordinate-wise rules: median, trimmed mean, MeaMed, Phocas.

Each rule acts on every coordinate independently, over the worker axis. The
order statistics come from compare-exchange networks over the row arrays
``[x[0], ..., x[n-1]]`` (:mod:`byzjax.aggregators._networks`), unrolled at
trace time (``n`` is static) and fused by XLA into one loop that reads the stack
once; ``jnp.sort`` over the short worker axis is two to three orders of
magnitude slower on XLA:CPU (``docs/PERFORMANCE.md``).

**"Closest" values.** MeaMed, Phocas and :func:`mean_around_median` average
the ``K`` values closest to a centre ``c``, whatever their sorted position.
Let ``D`` be the ``K``-th smallest distance ``|x_i - c|``. Every value closer
than ``D`` is kept; if ``k`` values lie exactly at distance ``D`` and ``r``
slots are left for them, each gets weight ``r / k``. This is the only
permutation-invariant choice, and where the tied values are equal (identical
Byzantine rows, as A Little Is Enough and Fall of Empires send) it agrees with
every way of picking ``r`` of them (ByzFL and the ByzantineMomentum code pick
arbitrarily, with ``argpartition`` / ``topk``). ``D`` is found from the order
statistics: the ``K`` closest values are ``K`` consecutive ones
``s_k .. s_{k+K-1}``, so ``D`` is the least window radius
``max(|s_k - c|, |s_{k+K-1} - c|)``; the kept values are then summed under
masks over the rows (never by subtracting), so a huge or infinite value that
is not kept cannot spoil the result through cancellation.

**Non-finite input.** ``NaN`` entries are mapped to ``+inf`` inside the fused
network (no extra pass over memory); ``+inf``/``-inf`` sort as the largest /
smallest values. As long as, per coordinate, at most ``f`` (``num_byzantine``)
values are non-finite, every rule here returns a finite value equal to what it
would return if those values were arbitrarily large (``NaN`` as large
positive). Nothing is multiplied by a weight, so ``0 * inf`` never occurs.
With more non-finite values the answer is undefined: where the result would
be ``+inf`` and the coordinate holds a ``NaN``, it is ``NaN`` (an all-``NaN``
coordinate gives ``NaN``, never ``+inf``); genuine infinities stay infinite.

**Overflow.** Sums and distances of finite values may overflow (``|1e38 +
3e38|``); the rules stay finite wherever the true answer is: the trimmed
mean's sum is redone on values scaled by an exact power of two where it
overflowed (same fused loop), and MeaMed / Phocas scale a coordinate's
values by ``2**-k`` when one is within ``2**k`` of the largest float (``1``
otherwise: ordinary results are bit-identical).

**Dtypes.** Comparisons of the inputs run in the input dtype (exact); the
centre, distances and sums are computed in at least float32 and cast back, so
the output has the input dtype. Inputs must be floating point (integer or
boolean stacks raise a ``TypeError``, as in every rule).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from byzjax._tree import PyTree, check_stack, num_rows
from byzjax.aggregators._base import AGGREGATORS
from byzjax.aggregators._networks import (
    apply_plan,
    finite_or_rescaled,
    nan_to_inf,
    network_plan,
    order_statistics,
    overflow_exponent,
    power_of_two,
    scaled_mean,
    tree_sum,
    trimmed_values,
)

__all__ = [
    "coordinate_median",
    "trimmed_mean",
    "meamed",
    "phocas",
    "mean_around_median",
]


def _rows(x: jax.Array) -> list[jax.Array]:
    """The ``n`` row arrays of a leaf with NaN mapped to +inf (fused, no copy)."""
    return [nan_to_inf(x[i]) for i in range(x.shape[0])]


def _has_nan(x: jax.Array) -> jax.Array:
    """``bool[*param_shape]``: a NaN among the rows (fuses with the network)."""
    return functools.reduce(jnp.logical_or,
                            [jnp.isnan(x[i]) for i in range(x.shape[0])])


def _nan_if_from_nan(result: jax.Array, has_nan: jax.Array) -> jax.Array:
    """``NaN`` where ``result`` is ``+inf`` and the coordinate holds a ``NaN``.

    ``NaN`` sorts as ``+inf``; a ``+inf`` result means more values were
    non-finite than the rule could set aside, and when one of them was
    ``NaN`` the answer is undefined: ``NaN``, not ``+inf``. Fused with the
    network (no extra pass); ordinary results are untouched.
    """
    return jnp.where(jnp.isposinf(result) & has_nan,
                     jnp.asarray(jnp.nan, result.dtype), result)


def _acc(x: jax.Array) -> jnp.dtype:
    return jnp.promote_types(x.dtype, jnp.float32)


def _median_of(stats: dict[int, jax.Array], n: int, lower: bool, acc) -> jax.Array:
    if lower or n % 2:
        return stats[(n - 1) // 2].astype(acc)
    half = jnp.asarray(0.5, acc)
    return half * stats[n // 2 - 1].astype(acc) + half * stats[n // 2].astype(acc)


def _median_positions(n: int, lower: bool) -> tuple[int, ...]:
    if lower or n % 2:
        return ((n - 1) // 2,)
    return (n // 2 - 1, n // 2)


def _closest_mean_leaf(x: jax.Array, keep: int, center: str, num_trim: int = 0,
                       lower: bool = False) -> jax.Array:
    """Per coordinate, the mean of the ``keep`` values closest to a centre.

    ``center`` is ``"median"`` (``lower`` picks the lower median for even
    counts) or ``"trimmed_mean"`` (trimming ``num_trim`` at each end). See the
    module docstring for the selection and its tie rule. Distances and sums
    may overflow where the values do not (``|1e38 + 3e38|``): wherever the
    plain result is not finite, the same arithmetic on values scaled by
    ``2**-k`` (exact; rounding commutes with it) is used, computed only then
    (:func:`~byzjax.aggregators._networks.finite_or_rescaled`).
    """
    return _nan_if_from_nan(_closest_mean_total(x, keep, center, num_trim, lower),
                            _has_nan(x)).astype(x.dtype)


def _closest_mean_total(x: jax.Array, keep: int, center: str, num_trim: int,
                        lower: bool) -> jax.Array:
    """:func:`_closest_mean_leaf` in ``acc`` (before the NaN rule and cast)."""
    m = x.shape[0]
    acc = _acc(x)
    rows = _rows(x)
    if keep == m:  # every value is kept: the mean, no ordering needed
        terms = [r.astype(acc) for r in rows]
        return finite_or_rescaled(tree_sum(terms) / m, scaled_mean(terms))
    med_pos = _median_positions(m, lower) if center == "median" else ()
    if 2 * keep >= m:
        # Every window k (0 <= k <= lo) of `keep` consecutive order statistics
        # covers the core [lo, hi). The radii need only the order statistics
        # at the window ends, 0..lo and hi-1..m-1; the core's interior is
        # summed for the trimmed mean's centre and not computed otherwise.
        lo, hi = m - keep, keep
        exact = sorted({*range(0, lo + 1), *range(hi - 1, m), *med_pos})
        summed = []
        if center == "trimmed_mean":
            if num_trim != lo:
                raise AssertionError("the trimmed mean's range is the core")
            summed = [p for p in range(lo, hi) if p not in exact]
        out = apply_plan(rows, network_plan(m, exact=exact, summed=summed))
        stats = {p: out[p].astype(acc) for p in (*exact, *summed)}
        starts = range(lo + 1)
    else:
        if center != "median":
            raise AssertionError("short windows are only used around the median")
        out = apply_plan(rows, network_plan(m, exact=range(m)))
        exact = list(range(m))
        stats = {p: out[p].astype(acc) for p in exact}
        lo = hi = 0
        starts = range(m - keep + 1)
    values = [row.astype(acc) for row in rows]

    # Per coordinate, a scale s: 1 (exact: the plain arithmetic, bit for
    # bit) unless the largest finite value is within 2**k of the largest
    # float, where distances and sums could overflow; then s = 2**-k (exact,
    # and rounding commutes with it) and the result is multiplied by 1/s.
    # Every value lies between two computed order statistics, so those give
    # the largest finite magnitude.
    k = overflow_exponent(m)
    limit = jnp.asarray(2.0 ** (127 - k), acc)
    huge = functools.reduce(jnp.logical_or, [
        (jnp.abs(stats[p]) >= limit) & (jnp.abs(stats[p]) < jnp.inf)
        for p in exact])
    one = jnp.ones((), acc)
    down = jnp.where(huge, power_of_two(-k, acc), one)
    up = jnp.where(huge, power_of_two(k, acc), one)
    cs = {p: stats[p] * down for p in exact}
    if center == "median":
        c = _median_of(cs, m, lower, acc)
    else:
        c = tree_sum([stats[p] * down for p in range(lo, hi)]) / (hi - lo)
    return _closest_total(cs, c, [v * down for v in values], keep, starts,
                          acc) * up


def _closest_total(cs, c, values, keep, starts, acc):
    """Mean of the ``keep`` values closest to ``c`` (ties at the edge share)."""
    # The `keep` values closest to c are `keep` consecutive order statistics,
    # so the keep-th smallest distance is the least window radius.
    radius = None
    for k in starts:
        r = jnp.maximum(jnp.abs(cs[k] - c), jnp.abs(cs[k + keep - 1] - c))
        radius = r if radius is None else jnp.minimum(radius, r)
    # Values strictly inside the radius are kept; the values exactly at it
    # share the slots left, equally. Masked sums never subtract, so a huge or
    # infinite value that is not kept cannot spoil the result.
    inside, inside_n, edge, edge_n = [], [], [], []
    zero = jnp.zeros((), acc)
    for v in values:
        d = jnp.abs(v - c)
        lt, eq = d < radius, d == radius
        inside.append(jnp.where(lt, v, zero))
        inside_n.append(lt.astype(acc))
        edge.append(jnp.where(eq, v, zero))
        edge_n.append(eq.astype(acc))
    slots = keep - tree_sum(inside_n)
    total = tree_sum(inside) + slots * (tree_sum(edge) / tree_sum(edge_n))
    return total / keep


@AGGREGATORS.register("coordinate_median", aliases=("median", "cwm"),
                      display_name="coordinate-wise median", short_name="CWM",
                      order=2)
def coordinate_median(updates: PyTree, *, num_byzantine: int = 0,
                      lower: bool = False) -> PyTree:
    """Coordinate-wise median (CWM).

    For even ``n`` the mean of the two middle values, as ``numpy.median``;
    ``lower=True`` gives the lower median (the ``n//2``-th smallest, 1-based)
    instead, which is always one of the inputs. Computed with a sorting network
    pruned to the middle output(s) (:mod:`byzjax.aggregators._networks`).

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static declared ``f``; only checked (``n > 2f``). With at
        most ``f`` non-finite values per coordinate the output is finite.
      lower: static; lower median for even ``n``.

    Returns:
      Pytree with leaves ``[*param_shape]``, the input dtype.

    Raises:
      ValueError: if ``n <= 2 f``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[1.0, 9.0], [2.0, jnp.nan], [30.0, 4.0], [3.0, 5.0]])}
      >>> aggregators.coordinate_median(x, num_byzantine=1)
      {'w': Array([2.5, 7. ], dtype=float32)}
      >>> aggregators.coordinate_median(x, num_byzantine=1, lower=True)
      {'w': Array([2., 5.], dtype=float32)}
    """
    n = num_rows(updates)
    positions = _median_positions(n, lower)

    def _leaf(x):
        stats = dict(zip(positions, order_statistics(_rows(x), positions)))
        return _nan_if_from_nan(_median_of(stats, n, lower, _acc(x)),
                                _has_nan(x)).astype(x.dtype)

    return jax.tree_util.tree_map(_leaf, updates)


@AGGREGATORS.register("trimmed_mean", aliases=("cwtm", "trmean"),
                      display_name="trimmed mean", short_name="CWTM", order=1)
def trimmed_mean(updates: PyTree, *, num_byzantine: int) -> PyTree:
    """Coordinate-wise trimmed mean (CWTM; Fabris 2023, Alg. 12).

    Per coordinate: drop the ``f`` smallest and ``f`` largest values and average
    the ``n - 2f`` left. The network is pruned to the *set* of middle values
    (:func:`byzjax.aggregators._networks.trimmed_sum`); ``f = 0`` is the mean.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static ``f``, the count trimmed at each end; ``n > 2f``.

    Returns:
      Pytree with leaves ``[*param_shape]``, the input dtype.

    Raises:
      ValueError: if ``n <= 2 f``.

    Reference:
      Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning:
      Towards Optimal Statistical Rates", ICML 2018,
      https://arxiv.org/abs/1803.01498.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[1.0], [2.0], [jnp.inf], [3.0], [-100.0]])}
      >>> aggregators.trimmed_mean(x, num_byzantine=1)
      {'w': Array([2.], dtype=float32)}
    """
    n = num_rows(updates)
    keep = n - 2 * num_byzantine

    def _leaf(x):
        acc = _acc(x)
        rows = [r.astype(acc) for r in _rows(x)] if acc != x.dtype else _rows(x)
        kept = trimmed_values(rows, num_byzantine)
        # Where the sum overflowed: the same sum scaled by a power of two.
        out = finite_or_rescaled(tree_sum(kept) / keep, scaled_mean(kept))
        return _nan_if_from_nan(out, _has_nan(x)).astype(x.dtype)

    return jax.tree_util.tree_map(_leaf, updates)


@AGGREGATORS.register("meamed", display_name="MeaMed", short_name="MEAMED", order=4)
def meamed(updates: PyTree, *, num_byzantine: int, lower: bool = False) -> PyTree:
    """MeaMed: per coordinate, the mean of the ``n - f`` values closest to the median.

    The median is :func:`coordinate_median`'s (mean of the two middle values for
    even ``n``; ``lower=True`` gives the lower median, the centre
    ``torch.median`` returns, which the ByzantineMomentum code uses). Values
    tied in distance at the edge of the kept set share the slots left equally
    (module docstring). ``f = 0`` is the mean.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static ``f``; ``n > 2f``.
      lower: static; centre on the lower median for even ``n``.

    Returns:
      Pytree with leaves ``[*param_shape]``, the input dtype.

    Raises:
      ValueError: if ``n <= 2 f``.

    Reference:
      Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", 2018,
      https://arxiv.org/abs/1802.10116 (Fabris 2023, Alg. 15).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0], [1.0], [2.0], [3.5], [100.0]])}
      >>> aggregators.meamed(x, num_byzantine=2)  # median 2: keep 1, 2, 3.5
      {'w': Array([2.1666667], dtype=float32)}
      >>> y = {"w": jnp.array([[-1.0], [-1.0], [0.0], [0.9], [5.0]])}
      >>> aggregators.meamed(y, num_byzantine=2)  # median 0: keep 0, 0.9, -1
      {'w': Array([-0.0333...], dtype=float32)}
    """
    n = num_rows(updates)
    return jax.tree_util.tree_map(
        lambda x: _closest_mean_leaf(x, n - num_byzantine, "median", lower=lower),
        updates)


@AGGREGATORS.register("phocas", display_name="Phocas", short_name="PHOCAS", order=10)
def phocas(updates: PyTree, *, num_byzantine: int) -> PyTree:
    """Phocas: per coordinate, the mean of the ``n - f`` values closest to the trimmed
    mean.

    The centre is :func:`trimmed_mean` with the same ``f``; values tied in
    distance at the edge of the kept set share the slots left equally (module
    docstring). ``f = 0`` is the mean.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static ``f``; ``n > 2f``.

    Returns:
      Pytree with leaves ``[*param_shape]``, the input dtype.

    Raises:
      ValueError: if ``n <= 2 f``.

    Reference:
      Xie, Koyejo, Gupta, "Phocas: dimensional Byzantine-resilient stochastic
      gradient descent", 2018, https://arxiv.org/abs/1805.09682.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0], [1.0], [2.0], [6.0], [100.0]])}
      >>> aggregators.phocas(x, num_byzantine=2)  # trimmed mean 2: keep 0, 1, 2
      {'w': Array([1.], dtype=float32)}
    """
    n = num_rows(updates)
    return jax.tree_util.tree_map(
        lambda x: _closest_mean_leaf(x, n - num_byzantine, "trimmed_mean",
                                     num_trim=num_byzantine), updates)


def mean_around_median(updates: PyTree, *, num_keep: int,
                       lower: bool = False) -> PyTree:
    """Per coordinate, the mean of the ``num_keep`` values closest to the median.

    Bulyan's second stage (El Mhamdi et al. 2018: ``num_keep = beta``). No
    ``(n, f)`` validation; the median is :func:`coordinate_median`'s
    (``lower=True``: the lower median for even ``n``) and values tied in
    distance at the edge of the kept set share the slots left equally (module
    docstring). With at most
    ``n - num_keep`` non-finite values per coordinate, and fewer than half of
    them, the output is finite.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_keep: static count averaged per coordinate, ``1 <= num_keep <= n``.
      lower: static; centre on the lower median for even ``n``.

    Returns:
      Pytree with leaves ``[*param_shape]``, the input dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"w": jnp.array([[0.0], [1.0], [2.0], [4.0], [100.0]])}
      >>> mean_around_median(x, num_keep=2)  # median 2: keep 2 and 1
      {'w': Array([1.5], dtype=float32)}
      >>> mean_around_median(x, num_keep=3)  # 0 and 4 tie for the last slot
      {'w': Array([1.6666666], dtype=float32)}
    """
    n = check_stack("mean_around_median", updates)
    if not isinstance(num_keep, int) or not 1 <= num_keep <= n:
        raise ValueError(f"mean_around_median: num_keep must be an int in [1, n={n}], "
                         f"got {num_keep!r}")
    return jax.tree_util.tree_map(
        lambda x: _closest_mean_leaf(x, num_keep, "median", lower=lower), updates)
