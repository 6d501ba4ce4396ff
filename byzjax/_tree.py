"""Pytree helpers for stacks of worker vectors.

A *stack* is a pytree whose leaves all have shape ``[n, *param_shape]``: row
``i`` of every leaf belongs to worker ``i``. Distance-based rules measure the
Euclidean norm over **all leaves together** (one vector per worker), so the helpers here
reduce over every leaf and never materialise a concatenated ``[n, d]`` matrix.

Non-finite rows (``+inf``, ``-inf``, ``NaN`` anywhere in a row) are treated as
infinitely far from everything: their distances are ``+inf`` and they get zero
weight in weighted sums, without producing ``0 * inf = NaN``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from byzjax._types import PyTree

__all__ = [
    "num_rows",
    "check_stack",
    "check_num_byzantine",
    "row_is_finite",
    "sanitize",
    "row_sq_norms",
    "gram",
    "pairwise_sq_distances",
    "weighted_rows",
    "sum_rows",
    "sq_distances_to",
    "tree_sub_rows",
]

_PRECISION = jax.lax.Precision.HIGHEST
# Column block of the Gram accumulation (2^11..2^14 measured equally good).
_GRAM_BLOCK = 8192
#: Leaves of at most this many entries (``n * width``, 24 MB of float32) take
#: one matmul: below it the single matmul was faster, above it the blocked
#: one (measured on XLA:CPU, quiet 2-core machine, jitted, medians; blocked /
#: single time): n = 15: 1.60 / 1.30 / 1.10 / 1.13 at widths 40,000 / 78,400 /
#: 160,000 / 320,000, then 0.38 / 0.37 at 655,360 / 1,310,720; n = 31: 0.91 /
#: 1.13 / 0.96 up to 160,000, then 0.50 / 0.41 / 0.35.
_GRAM_SINGLE_MAX = 6 * 2**20


def num_rows(stack: PyTree) -> int:
    """Returns the common leading (worker) dimension of every leaf of ``stack``.

    Raises:
      ValueError: if ``stack`` has no leaves, a leaf is a scalar, or leaves
        disagree on their leading dimension.
    """
    leaves = jax.tree_util.tree_leaves(stack)
    if not leaves:
        raise ValueError("expected a pytree with at least one array leaf, got none")
    sizes = set()
    for leaf in leaves:
        if jnp.ndim(leaf) == 0:
            raise ValueError(
                "every leaf must have a leading worker axis [n, *param_shape]; "
                "got a scalar leaf"
            )
        sizes.add(jnp.shape(leaf)[0])
    if len(sizes) != 1:
        raise ValueError(
            "all leaves must share the leading worker axis; got leading sizes "
            f"{sorted(sizes)}. Stack per-worker updates with "
            "jax.tree.map(lambda *x: jnp.stack(x), *updates)."
        )
    return int(sizes.pop())


def check_stack(rule: str, stack: PyTree) -> int:
    """Checks that ``stack`` is a floating-point stack of ``n >= 1`` rows.

    Returns ``n``. Every aggregator, pre-aggregator and attack calls this first
    (at trace time), so bad input gets the same one-line message whatever the
    rule.
    Integer and boolean stacks are rejected rather than silently truncated
    (a distance rule computed in ``int32`` would return zeros).

    Raises:
      ValueError: no leaves, a scalar leaf, leaves with different leading
        sizes, or ``n = 0``.
      TypeError: a leaf that is not floating point.

    Example:
      >>> import jax.numpy as jnp
      >>> check_stack("mean", {"w": jnp.zeros((3, 2))})
      3
      >>> check_stack("mean", {"w": jnp.arange(6).reshape(3, 2)})
      Traceback (most recent call last):
      ...
      TypeError: mean: updates must be floating point, got a leaf of dtype int32; ...
    """
    try:
        n = num_rows(stack)
    except ValueError as err:
        raise ValueError(f"{rule}: {err}") from None
    if n < 1:
        raise ValueError(f"{rule}: updates need at least one row (a leading worker "
                         "axis of size n >= 1), got n = 0")
    for leaf in jax.tree_util.tree_leaves(stack):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{rule}: updates must be floating point, got a leaf of "
                            f"dtype {dtype}; cast with x.astype(jnp.float32)")
    return n


def check_num_byzantine(
    rule: str, num_workers: int, num_byzantine: int, *, min_workers: int | None = None,
    requirement: str | None = None, hint: str | None = None,
) -> None:
    """Validates a static (n, f) pair for ``rule``; raises ``ValueError``.

    By default requires ``0 <= f`` and ``n > 2 f`` (``f < n/2``). ``min_workers``
    tightens this (e.g. Krum: ``2 f + 3``), with ``requirement`` the readable
    form of the condition used in the message and ``hint`` an optional last
    sentence (what relaxes the requirement, or why nothing does).
    """
    if not isinstance(num_byzantine, int) or isinstance(num_byzantine, bool):
        raise TypeError(
            f"{rule}: num_byzantine must be a Python int (it sets shapes), got "
            f"{type(num_byzantine).__name__}"
        )
    if num_byzantine < 0:
        raise ValueError(f"{rule}: num_byzantine must be >= 0, got {num_byzantine}")
    if min_workers is None:
        min_workers, requirement = 2 * num_byzantine + 1, "n > 2f"
    if num_workers < min_workers:
        raise ValueError(
            f"{rule} needs {requirement} (n >= {min_workers} for "
            f"num_byzantine={num_byzantine}), got num_workers={num_workers}. Use "
            f"more workers or declare fewer Byzantine ones."
            + (f" {hint}" if hint else "")
        )


def row_is_finite(stack: PyTree) -> jax.Array:
    """``bool[n]``: True where every entry of the row, over all leaves, is finite."""
    n = num_rows(stack)
    out = jnp.ones((n,), dtype=bool)
    for leaf in jax.tree_util.tree_leaves(stack):
        out = out & jnp.all(jnp.isfinite(leaf.reshape(n, -1)), axis=1)
    return out


def sanitize(stack: PyTree, finite_rows: jax.Array | None = None) -> PyTree:
    """Replaces every non-finite row by zeros (so matmuls never see inf/NaN)."""
    if finite_rows is None:
        finite_rows = row_is_finite(stack)

    def _clean(x):
        mask = finite_rows.reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x, jnp.zeros((), x.dtype))

    return jax.tree_util.tree_map(_clean, stack)


def row_sq_norms(stack: PyTree) -> jax.Array:
    """``float[n]``: squared Euclidean norm of each row over all leaves."""
    n = num_rows(stack)
    total: float | jax.Array = 0.0
    for leaf in jax.tree_util.tree_leaves(stack):
        x = leaf.reshape(n, -1)
        total = total + jnp.einsum("nd,nd->n", x, x, precision=_PRECISION)
    return jnp.asarray(total)


def gram(stack: PyTree, center: PyTree | None = None) -> jax.Array:
    """``float[n, n]`` Gram matrix over all leaves, accumulated over column blocks.

    With ``center`` (a pytree of ``[*param_shape]`` leaves) it is the Gram
    matrix of the rows ``x_i - center``, subtracted block by block (no centred
    copy of the stack is written).

    Same value as one ``[n, d] @ [d, n]`` matmul per leaf (up to summation
    order), but each leaf of more than ``6 * 2**20`` entries (24 MB of
    float32) is processed in blocks of 8192 columns inside a
    ``lax.fori_loop`` (``[n, 8192] @ [8192, n]`` per block, which stays in
    cache) instead of one ``[n, d] @ [d, n]`` matmul. Measured on XLA:CPU
    (quiet 2-core machine, jitted, medians): n = 15, d = 1,310,720: 37 ms
    blocked vs 99 ms single; n = 31: 78 vs 221 ms; below the threshold the
    single matmul is as fast or faster (n = 15, d = 78,400: 1.5 vs 2.0 ms).
    Non-finite entries propagate exactly as in the single matmul (only their
    own row and column).
    The result is exactly symmetric (the mean of the matmul and its transpose).
    """
    n = num_rows(stack)
    leaves = jax.tree_util.tree_leaves(stack)
    centers = (jax.tree_util.tree_leaves(center) if center is not None
               else [None] * len(leaves))
    total = None
    for leaf, c in zip(leaves, centers):
        x = jnp.asarray(leaf).reshape(n, -1)
        c = None if c is None else jnp.asarray(c).reshape(1, -1)
        width = x.shape[1]
        num_blocks = width // _GRAM_BLOCK

        def block_gram(start, size, x=x, c=c):
            blk = jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)
            if c is not None:
                blk = blk - jax.lax.dynamic_slice_in_dim(c, start, size, axis=1)
            return jnp.matmul(blk, blk.T, precision=_PRECISION)

        if num_blocks < 2 or n * width <= _GRAM_SINGLE_MAX:
            g = block_gram(0, width)
        else:
            g = jax.lax.fori_loop(
                0, num_blocks,
                lambda i, acc, f=block_gram: acc + f(i * _GRAM_BLOCK, _GRAM_BLOCK),
                jnp.zeros((n, n), x.dtype))
            if width > num_blocks * _GRAM_BLOCK:
                g = g + block_gram(num_blocks * _GRAM_BLOCK,
                                   width - num_blocks * _GRAM_BLOCK)
        total = g if total is None else total + g
    # A matmul's (i, j) and (j, i) entries may be rounded differently; rules
    # that break exact ties (two rows that are each other's nearest neighbour
    # share a Krum score) need an exactly symmetric matrix.
    assert total is not None  # (a stack has at least one leaf)
    return 0.5 * (total + total.T)


def _gram_rescued(stack: PyTree) -> jax.Array:
    """:func:`gram`, or the Gram matrix of ``s * x`` when the squared norms
    of most rows (more than ``(n - 1) // 2``, so more than any legal ``f``)
    overflow although they are finite (``s``: :func:`overflow_scale`).

    The plain matrix is returned bit for bit otherwise; the check of the
    entries runs only when some squared norm is not finite.
    """
    g = gram(stack)

    def plain():
        return g

    def maybe_scaled():
        keep = row_is_finite(stack)
        # Only when most rows overflow: up to f < n/2 of them are simply
        # "infinitely far" (exact for the comparing rules, whose answers never
        # involve them); scaling for them could flush the other rows' squares.
        over = jnp.sum(keep & ~jnp.isfinite(jnp.diagonal(g)))
        need = over > (g.shape[0] - 1) // 2

        def scaled():
            s = overflow_scale(stack, keep=keep)
            return gram(jax.tree_util.tree_map(lambda x: x * s.astype(x.dtype),
                                               stack)).astype(g.dtype)

        return jax.lax.cond(need, scaled, plain)

    return jax.lax.cond(jnp.all(jnp.isfinite(jnp.diagonal(g))), plain,
                        maybe_scaled)


def pairwise_sq_distances(stack: PyTree, *, clean: bool = True,
                          with_finite: bool = False, rescale: bool = False):
    """``float[n, n]``: squared distances ``||x_i - x_j||^2`` over all leaves.

    The one distance kernel of the package (Krum, Bulyan, NNM, MDA, the
    geometric median and the round diagnostics use it). Uses the Gram form
    ``|a|^2 + |b|^2 - 2 a.b`` (:func:`gram`, blocked matmuls), clipped at 0,
    with an exact zero diagonal. A row is *finite* when its squared norm (the
    Gram diagonal) is finite. With ``clean=True`` (default) a row that is not
    -- an ``inf``/``NaN`` entry, or finite entries whose squares overflow -- is
    infinitely far: its distances to every other row are ``+inf`` (0 to
    itself), and so is a pair of finite rows whose Gram form overflows; the
    matrix never holds ``NaN``. Finiteness is read off the diagonal, so no
    sanitised copy of the stack is written (measured on XLA:CPU, n = 15,
    d = 1,310,922: :func:`row_is_finite` plus :func:`sanitize` before the Gram
    cost 9 + ~35 ms); non-finite entries only touch their own row and column.

    Args:
      stack: pytree with leaves ``[n, *param_shape]``.
      clean: set the distances of non-finite rows to ``+inf``.
      with_finite: also return the ``bool[n]`` mask of finite rows.
      rescale: for rules that only compare distances (Krum, MDA, Bulyan,
        NNM): when most rows (more than ``(n - 1) // 2``) are finite but
        their squared norms overflow (entries near ``1e19`` and above), every
        distance is measured on rows scaled by one power of two ``s`` (all
        of them multiplied by ``s**2``), so those rows count as finite. Fewer
        such rows stay infinitely far (at most ``f`` of them never enter
        these rules' answers). Ordinary inputs give the plain matrix, bit for
        bit.

    Returns:
      ``d2`` (``float[n, n]``), or ``(d2, finite)`` with ``with_finite=True``.

    Example:
      >>> import jax.numpy as jnp
      >>> pairwise_sq_distances({"w": jnp.array([[0.0, 0.0], [3.0, 4.0],
      ...                                        [jnp.nan, 0.0]])})
      Array([[ 0., 25., inf],
             [25.,  0., inf],
             [inf, inf,  0.]], dtype=float32)
    """
    g = _gram_rescued(stack) if rescale else gram(stack)
    sq = jnp.diagonal(g)
    d2 = sq[:, None] + sq[None, :] - 2.0 * g
    # Finite rows whose squares overflow give inf - inf = NaN: they are far.
    d2 = jnp.maximum(jnp.where(jnp.isnan(d2), jnp.inf, d2), 0.0)
    eye = jnp.eye(g.shape[0], dtype=bool)
    d2 = jnp.where(eye, 0.0, d2)
    finite = jnp.isfinite(sq)
    if clean:
        both = finite[:, None] & finite[None, :]
        d2 = jnp.where(both | eye, d2, jnp.inf)
    return (d2, finite) if with_finite else d2


def overflow_scale(stack: PyTree, point: PyTree | None = None, *,
                   keep: jax.Array | None = None) -> jax.Array:
    """An exact power of two ``s <= 1`` with ``s * |x_ij - p_j| <= 2**40``.

    For squared norms and Gram matrices that overflow although the rows are
    finite (entries near ``1e20`` and above): computed on rows scaled by
    ``s`` they stay finite for any realistic ``d`` (up to ``2**40``
    coordinates), and rounding commutes with the scaling. Rows outside
    ``keep`` (default: all) are ignored. One pass over the stack; meant for a
    rescue branch, not the normal path. Scaling down by up to ``2**-88``, it
    can flush the squares of rows ``1e26`` times smaller than the largest to
    zero (float32 holds no Gram matrix of both).
    """
    n = num_rows(stack)
    leaves = jax.tree_util.tree_leaves(stack)
    points = (jax.tree_util.tree_leaves(point) if point is not None
              else [None] * len(leaves))
    biggest = jnp.zeros((), jnp.float32)
    for leaf, p in zip(leaves, points):
        a = jnp.abs(leaf.reshape(n, -1)).astype(jnp.float32)
        if keep is not None:
            a = jnp.where(keep[:, None], a, 0.0)
        biggest = jnp.maximum(biggest, jnp.max(a))
        if p is not None:
            biggest = jnp.maximum(biggest,
                                  jnp.max(jnp.abs(p)).astype(jnp.float32))
    # |x - p| <= 2 * biggest < 2**(e + 1). (No sum here: XLA would rewrite
    # 0.5 a + 0.5 b as 0.5 (a + b), which overflows.)
    _, e = jnp.frexp(biggest)
    shift = jnp.clip(e + 1 - 40, 0, 120)
    return jnp.ldexp(jnp.ones((), jnp.float32), -shift)


def row_overflow_scales(stack: PyTree, point: PyTree | None = None) -> jax.Array:
    """``float32[n]``: per row an exact power of two ``s_i <= 1`` with
    ``s_i * max(|x_i|, |point|) <= 2**40`` (``1`` for ordinary rows).

    :func:`overflow_scale` with one scale per row, for norms of huge finite
    rows (centered clipping, static clipping, ARC): each row is measured at
    its own scale, so a huge row cannot flush the squares of small ones.
    Non-finite entries are ignored. Meant for a rescue branch.
    """
    n = num_rows(stack)
    leaves = jax.tree_util.tree_leaves(stack)
    points = (jax.tree_util.tree_leaves(point) if point is not None
              else [None] * len(leaves))
    biggest = jnp.zeros((n,), jnp.float32)
    for leaf, p in zip(leaves, points):
        biggest = jnp.maximum(biggest, jnp.max(
            jnp.abs(leaf.reshape(n, -1)).astype(jnp.float32), axis=1))
        if p is not None:
            biggest = jnp.maximum(biggest, jnp.max(jnp.abs(p)).astype(jnp.float32))
    _, e = jnp.frexp(jnp.where(jnp.isfinite(biggest), biggest, 0.0))
    shift = jnp.clip(e + 1 - 40, 0, 120)
    return jnp.ldexp(jnp.ones((n,), jnp.float32), -shift)


def sq_distances_to(stack: PyTree, point: PyTree) -> jax.Array:
    """``float[n]``: ``||x_i - point||^2`` over all leaves (direct, not Gram form).

    Non-finite rows give ``+inf``.
    """
    n = num_rows(stack)
    total: float | jax.Array = 0.0
    for x, p in zip(jax.tree_util.tree_leaves(stack), jax.tree_util.tree_leaves(point)):
        diff = (x - p[None]).reshape(n, -1)
        total = total + jnp.sum(diff * diff, axis=1)
    return jnp.where(jnp.isnan(total), jnp.inf, total)


def weighted_rows(stack: PyTree, weights: jax.Array, *, clean: bool = True,
                  keep: jax.Array | None = None,
                  nan_rows: jax.Array | None = None) -> PyTree:
    """``sum_i weights[i] * x_i`` for every leaf; the one row-combination kernel.

    **One weight vector** (``float[n]``): the sum over the (static, small)
    worker axis is unrolled at trace time, ``w_0 x_0 + w_1 x_1 + ...``, which
    XLA fuses into one loop that reads the stack once. Measured on XLA:CPU
    (one run, 2 shared cores; ``docs/PERFORMANCE.md``): 10 rows of 79,510
    took 0.64 ms unrolled vs 4.5 ms as ``w @ x`` and 50 ms as
    ``jnp.sum(w[:, None] * x, 0)``; vmapped over 4 stacks 0.83 ms vs 17 ms
    for ``w @ x``; 15 rows of 1,310,922: 12 ms vs 19 ms. Rows outside ``keep``
    are replaced by 0 inside the same pass (whatever they hold), rows inside
    enter with IEEE semantics; ``keep`` defaults to the finite rows
    (:func:`row_is_finite`, one extra pass) with ``clean=True`` and to every
    row with ``clean=False``.

    **A weight matrix** (``float[m, n]``, one combination per output row, e.g.
    nearest neighbour mixing): one ``[m, n] @ [n, d]`` matmul per leaf on the
    raw stack when every row is in ``keep``; otherwise (``lax.cond``) the rows
    outside ``keep`` are zeroed first (a zero weight on an ``inf`` row would
    give ``0 * inf = NaN``), so the common all-finite case never copies the
    stack. ``nan_rows`` (``bool[m]``, optional) marks output rows set to
    ``NaN`` on that path (rows that mix a row outside ``keep`` with non-zero
    weight).

    Output leaves have shape ``param_shape`` (``[m, *param_shape]`` for a
    weight matrix) and the input dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"w": jnp.array([[1.0, 2.0], [jnp.inf, 0.0], [3.0, 4.0]])}
      >>> weighted_rows(x, jnp.array([0.5, 0.0, 0.5]))
      {'w': Array([2., 3.], dtype=float32)}
      >>> weighted_rows(x, jnp.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]]))["w"]
      Array([[2., 3.],
             [1., 2.]], dtype=float32)
    """
    n = num_rows(stack)
    if keep is None and clean:
        keep = row_is_finite(stack)
    if jnp.ndim(weights) == 2:
        return _weighted_rows_matmul(stack, weights, keep, nan_rows)

    def _combine(x):
        w = weights.astype(x.dtype)
        total = None
        for i in range(n):
            row = x[i]
            if keep is not None:
                row = jnp.where(keep[i], row, jnp.zeros((), x.dtype))
            term = w[i] * row
            total = term if total is None else total + term
        return total

    return jax.tree_util.tree_map(_combine, stack)


def _weighted_rows_matmul(stack, weights, keep, nan_rows):
    def matmul(s):
        def leaf(x):
            out = jnp.matmul(weights.astype(x.dtype), x.reshape(x.shape[0], -1),
                             precision=_PRECISION)
            return out.reshape(weights.shape[:-1] + x.shape[1:])
        return jax.tree_util.tree_map(leaf, s)

    if keep is None:
        return matmul(stack)

    def zeroed(s):
        out = matmul(sanitize(s, keep))
        if nan_rows is None:
            return out

        def poison(y):
            mask = nan_rows.reshape((-1,) + (1,) * (y.ndim - 1))
            return jnp.where(mask, jnp.asarray(jnp.nan, y.dtype), y)

        return jax.tree_util.tree_map(poison, out)

    # Both matmuls inside the branches: a branch returning a result computed
    # outside the cond (the earlier form, which tested the raw product for
    # non-finite values) made XLA:CPU copy the [m, d] output and cost 6.4x
    # one Gram matmul for NNM (n = 15, d = 1,310,922) instead of ~1x.
    return jax.lax.cond(jnp.all(keep), matmul, zeroed, stack)


def sum_rows(stack: PyTree) -> PyTree:
    """``sum_i x_i`` for every leaf, unrolled and fused (see :func:`weighted_rows`)."""
    n = num_rows(stack)

    def _sum(x):
        total = x[0]
        for i in range(1, n):
            total = total + x[i]
        return total

    return jax.tree_util.tree_map(_sum, stack)


def tree_sub_rows(stack: PyTree, point: PyTree) -> PyTree:
    """``x_i - point`` for every row (broadcast over the worker axis)."""
    return jax.tree_util.tree_map(lambda x, p: x - p[None], stack, point)
