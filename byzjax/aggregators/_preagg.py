"""Simple pre-aggregators: static clipping and bucketing.

Pre-aggregators keep a leading worker axis: ``[n, ...] -> [m, ...]``; a robust
aggregator is applied to their output. Both rules here are registered in
``PREAGGREGATORS``; nearest neighbour mixing lives in ``_nnm.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from byzjax._registry import at_least, greater_than
from byzjax._tree import PyTree, num_rows, row_is_finite, row_overflow_scales
from byzjax.aggregators._base import PREAGGREGATORS
from byzjax.aggregators._networks import tree_sum

__all__ = ["static_clipping", "adaptive_robust_clipping", "arc_num_clipped",
           "bucketing"]


@PREAGGREGATORS.register("static_clipping", aliases=("clipping",),
                         keywords={"max_norm": greater_than(0)},
                         display_name="static clipping", short_name="CLIP",
                         order=2)
def static_clipping(updates: PyTree, *, num_byzantine: int = 0,
                    max_norm: float | jax.Array) -> PyTree:
    """Clips every row to Euclidean norm at most ``max_norm``, over all leaves together.

    Row ``i`` becomes ``x_i * min(1, max_norm / ||x_i||)``. A row with a
    non-finite entry (``inf``/``NaN``) has no meaningful direction to keep, so
    it becomes a **zero row** (it then behaves like a worker that sent
    nothing). Zero rows stay zero. A finite row whose squared norm overflows
    the accumulation dtype (entries near ``1e19`` and above in float32) is
    clipped all the same: its norm is measured on the row scaled by an exact
    power of two, in a ``lax.cond`` branch taken only when some squared norm
    is not finite.

    The squared norms are one reduction per leaf over the long axis, then one
    fused elementwise pass scales the rows: the stack is read twice.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static ``f``; only checked (``n > 2f``).
      max_norm: clipping radius ``c > 0``; may be traced (vmappable). A
        concrete radius ``<= 0`` or NaN is refused (a radius of 0 would turn
        every row into zeros); a traced ``0`` gives zero rows and a traced
        negative one NaN rows, never flipped ones.

    Returns:
      Pytree with leaves ``[n, *param_shape]``, the input dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"a": jnp.array([[3.0], [0.3], [jnp.nan]]),
      ...      "b": jnp.array([[4.0, 0.0], [0.4, 0.0], [1.0, 1.0]])}
      >>> out = aggregators.static_clipping(x, max_norm=1.0)
      >>> out["a"].ravel().tolist(), out["b"].tolist()
      ([0.6, 0.3, 0.0], [[0.8, 0.0], [0.4, 0.0], [0.0, 0.0]])
    """
    n = num_rows(updates)
    ok, norm, row_scale, acc = _row_norms(updates, n)
    return _clip_to(updates, n, ok, norm, jnp.asarray(max_norm, acc) * row_scale)


def _row_norms(updates: PyTree, n: int):
    """``(ok bool[n], norm float[n], scale float[n], acc dtype)``: each row's
    Euclidean norm over all leaves, measured on the row times ``scale``.

    ``scale`` is 1 (the plain norm, one reduction per leaf over the long axis,
    accumulated in at least float32) except for finite rows whose squared
    norm overflows (entries near ``1e19`` and above in float32): those are
    measured on the row scaled by an exact power of two, in a ``lax.cond``
    branch taken only when some squared norm is not finite. ``ok`` is False on
    rows with a non-finite entry. A radius ``c`` compares with ``norm`` as
    ``c * scale`` (the clip factor ``c / ||x||`` is scale-free).
    """
    leaves = jax.tree_util.tree_leaves(updates)
    acc = jnp.result_type(*[jnp.promote_types(leaf.dtype, jnp.float32)
                            for leaf in leaves])
    sq = tree_sum([jnp.sum(jnp.square(leaf.reshape(n, -1).astype(acc)), axis=1)
                   for leaf in leaves])
    finite_sq = jnp.isfinite(sq)
    ones = jnp.ones((n,), acc)

    def plain():
        return finite_sq, jnp.sqrt(jnp.where(finite_sq, sq, 0.0)), ones

    def rescued():
        keep = row_is_finite(updates)
        over = keep & ~finite_sq
        scales = jnp.where(over, row_overflow_scales(updates).astype(acc), 1.0)
        scaled = tree_sum([jnp.sum(jnp.square(
            leaf.reshape(n, -1).astype(acc) * scales[:, None]), axis=1)
            for leaf in leaves])
        norm = jnp.where(over, jnp.sqrt(scaled),
                         jnp.sqrt(jnp.where(finite_sq, sq, 0.0)))
        return keep, norm, scales

    ok, norm, scale = jax.lax.cond(jnp.all(finite_sq), plain, rescued)
    return ok, norm, scale, acc


def _clip_to(updates: PyTree, n: int, ok: jax.Array, norm: jax.Array,
             limit: jax.Array) -> PyTree:
    """Row ``i`` times ``min(1, limit_i / norm_i)`` (both in the row's scale,
    :func:`_row_norms`); rows outside ``ok`` become zero rows. One fused
    elementwise pass."""
    # norm == 0 gives limit / 0 = inf (or nan for limit == 0): min(1, .) == 1.
    factor = jnp.where(norm > limit, limit / jnp.where(norm > 0, norm, 1.0), 1.0)
    # A (traced) negative radius: NaN rows, never flipped or zeroed ones.
    factor = jnp.where(limit >= 0, factor, jnp.nan)

    def _clip(x):
        shape = (n,) + (1,) * (x.ndim - 1)
        keep = ok.reshape(shape)
        return jnp.where(keep, x * factor.reshape(shape).astype(x.dtype),
                         jnp.zeros((), x.dtype))

    return jax.tree_util.tree_map(_clip, updates)


def arc_num_clipped(num_workers: int, num_byzantine: int) -> int:
    """``k``, the number of rows adaptive robust clipping clips: ByzFL 0.0.11's
    ``int((2 * f / n) * (n - f))``.

    That is the paper's ``floor(2 (f / n) (n - f))`` computed in floating
    point, as ByzFL computes it; the two differ by one at a few ``(n, f)``,
    the first at ``n = 121`` (e.g. ``n = 242, f = 33``: 56 here and in ByzFL,
    57 exactly).

    Example:
      >>> from byzjax import aggregators
      >>> [aggregators.arc_num_clipped(15, f) for f in range(5)]
      [0, 1, 3, 4, 5]
      >>> aggregators.arc_num_clipped(242, 33)
      56
    """
    n, f = num_workers, num_byzantine
    return int((2 * f / n) * (n - f))


@PREAGGREGATORS.register("arc", aliases=("adaptive_robust_clipping",),
                         min_workers=lambda f: max(f, 1), requirement="n >= f",
                         display_name="adaptive robust clipping", short_name="ARC",
                         order=3)
def adaptive_robust_clipping(updates: PyTree, *, num_byzantine: int) -> PyTree:
    """ARC: the ``k`` rows of largest norm are clipped to the ``(k+1)``-th largest norm.

    With ``k = int((2 * f / n) * (n - f))`` (:func:`arc_num_clipped`, ByzFL
    0.0.11's expression of the paper's ``floor(2 (f/n) (n - f))``), the
    radius ``t`` is the ``(k+1)``-th largest row norm (Euclidean over all
    leaves together) and row ``i`` becomes ``x_i * min(1, t / ||x_i||)``.
    ``k = 0`` (``f = 0``, or ``f = n``) returns the input unchanged, as ByzFL
    does. Unlike static clipping the radius adapts to the round: it is a
    norm an honest worker sent whenever at most ``f`` rows are Byzantine
    (``k >= f`` for ``n >= 2f``).

    **Ties.** Every row of norm above ``t`` is among the ``k`` largest, and a
    row of norm exactly ``t`` is left as it is whether or not it counts among
    them, so clipping *every* row to ``t`` gives the same answer as ByzFL's
    "clip the ``k`` largest" whichever tied rows its sort puts first: rows of
    equal norm are treated alike and the output is permutation equivariant.

    **Non-finite rows** (an ``inf``/``NaN`` entry) count as rows of infinite
    norm, so they are among the largest; as in :func:`static_clipping` they
    have no direction to keep and become **zero rows** (a NaN row cannot be
    scaled to a finite norm). Huge finite rows (squared norms that overflow)
    are ranked and clipped by their true norm, as in :func:`static_clipping`. With
    at most ``k`` of them ``t`` is a finite norm; with more, ``t`` is infinite
    and the finite rows are left unclipped. Either way every output row is
    finite (for ``k >= 1``), so the robust aggregator that follows sees no
    non-finite row.

    Cost: one reduction per leaf for the norms, a sort of the ``n`` norms, one
    fused elementwise pass (the stack is read twice), as static clipping.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static ``f`` with ``0 <= f <= n`` (ByzFL's requirement);
        sets ``k``.

    Returns:
      Pytree with leaves ``[n, *param_shape]``, the input dtype.

    Raises:
      ValueError: if ``n < f``.

    Reference:
      Allouah, Guerraoui, Gupta, Jellouli, Rizk, Stephan, "The Vital Role of
      Gradient Clipping in Byzantine-Resilient Distributed Learning", 2024,
      https://arxiv.org/abs/2405.14432; ByzFL 0.0.11's ``ARC``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])}
      >>> aggregators.adaptive_robust_clipping(x, num_byzantine=1)["w"]  # k = 1
      Array([[1.     , 2.     , 3.     ],
             [4.     , 5.     , 6.     ],
             [4.41..., 5.04..., 5.67...]], dtype=float32)
      >>> aggregators.get_preaggregator("arc") is aggregators.adaptive_robust_clipping
      True
    """
    n = num_rows(updates)
    k = arc_num_clipped(n, num_byzantine)
    if k == 0:
        return updates
    ok, norm, row_scale, _ = _row_norms(updates, n)
    # Rows with a non-finite entry sort as +inf: among the largest. Huge
    # finite rows sort by their true norm (inf if even that overflows).
    true_norm = jnp.where(ok, norm / row_scale, jnp.inf)
    limit = jnp.sort(true_norm)[n - 1 - k]  # the (k+1)-th largest norm
    return _clip_to(updates, n, ok, norm, limit * row_scale)


def _bucket_rows(num_workers: int, kwargs) -> int:
    """``ceil(n / bucket_size)``: the number of buckets."""
    return -(-num_workers // kwargs["bucket_size"])


@PREAGGREGATORS.register("bucketing", needs_key=True,
                         keywords={"bucket_size": at_least(1)},
                         output_rows=_bucket_rows, display_name="bucketing",
                         short_name="BUCK", order=1)
def bucketing(updates: PyTree, *, num_byzantine: int = 0, key: jax.Array,
              bucket_size: int) -> PyTree:
    """Random buckets of ``bucket_size`` rows, each replaced by its mean.

    The rows are shuffled with ``jax.random.permutation(key, n)``; consecutive
    groups of ``s = bucket_size`` shuffled rows form the buckets. The output
    has ``m = ceil(n / s)`` rows; when ``s`` does not divide ``n`` the **last
    bucket is smaller** (``n - (m-1) s`` rows) and is the mean of those rows.
    ``s = 1`` only shuffles; ``s >= n`` gives one bucket, the mean.

    Bucketing is not robust by itself: a non-finite row makes its bucket's
    mean non-finite (``NaN`` or ``inf``), so at most ``f`` output rows are
    non-finite and the robust aggregator that follows handles them. Declare
    the same ``f`` to that aggregator, which now sees ``m`` rows (check
    ``m > 2f`` or the rule's own requirement).

    Each output row is an unrolled, fused sum of ``s`` dynamically indexed input
    rows, so the stack is read once and no shuffled copy is made.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``, floating point.
      num_byzantine: static ``f``; only checked (``n > 2f``).
      key: PRNG key (traced; split it between rounds).
      bucket_size: static ``s >= 1``.

    Returns:
      Pytree with leaves ``[ceil(n / s), *param_shape]``, the input dtype.

    Reference:
      Karimireddy, He, Jaggi, "Byzantine-robust learning on heterogeneous
      datasets via bucketing", ICLR 2022, https://arxiv.org/abs/2006.09365.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.arange(5.0)[:, None]}
      >>> out = aggregators.bucketing(x, key=jax.random.key(0), bucket_size=2)
      >>> out["w"].shape, float(out["w"].sum())  # 3 buckets: 2 + 2 + 1 rows
      ((3, 1), ...)
    """
    n = num_rows(updates)
    if (not isinstance(bucket_size, int) or isinstance(bucket_size, bool)
            or bucket_size < 1):
        raise ValueError(f"bucketing: bucket_size must be a Python int >= 1 (it sets "
                         f"the output shape), got {bucket_size!r}")
    perm = jax.random.permutation(key, n)
    buckets = [list(range(b, min(b + bucket_size, n)))
               for b in range(0, n, bucket_size)]

    def _leaf(x):
        acc = jnp.promote_types(x.dtype, jnp.float32)
        out = []
        for members in buckets:
            rows = [jax.lax.dynamic_index_in_dim(x, perm[p], axis=0, keepdims=False)
                    .astype(acc) for p in members]
            out.append((tree_sum(rows) / len(members)).astype(x.dtype))
        return jnp.stack(out)

    return jax.tree_util.tree_map(_leaf, updates)
