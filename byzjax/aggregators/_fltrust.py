"""FLTrust (Cao, Fang, Liu, Gong, NDSS 2021): trust bootstrapped from the server's data.

The server holds a small clean *root dataset* and computes its own update
``g_0`` on it every round (the *reference*). Worker ``i``'s row ``g_i`` gets
the trust score ``TS_i = ReLU(cos(g_i, g_0))``, is rescaled to the
reference's norm, ``g_i * ||g_0|| / ||g_i||``, and the output is the
trust-weighted mean of the rescaled rows::

    FLTrust(g_1 .. g_n; g_0) = sum_i TS_i ||g_0|| / ||g_i|| g_i / sum_j TS_j

(the paper's Eq. 4-6). Norms and cosines are Euclidean over all leaves
together. The output never has a larger norm than the reference, and rows
pointing away from it (cosine <= 0) get no weight, however many there are:
the rule does not read ``num_byzantine``.

Cases the paper's formula leaves open (``docs/CONVENTIONS.md``):

* **every score 0** (each row at 90 degrees or more from the reference, or a
  zero reference): the formula is ``0 / 0``; the output is zeros, i.e. no
  update this round;
* a **zero row** has no direction: score 0;
* a **non-finite row** (``inf`` / ``NaN`` anywhere): score 0, so it never
  enters the sum and the output stays finite with any number of them;
* a **non-finite reference**: every score 0, output zeros;
* **huge or tiny finite rows** (squared norms that overflow or underflow
  float32: entries near ``1e19`` and above, or a norm below ``2**-31.5``):
  each row (and the reference) is measured at its own power of two
  ``2**-e_i`` (exact; a ``lax.cond`` branch, also taken when a row or the
  reference is not finite), and the output is combined from the scaled rows.
  Scores and weights do not depend on those scales; one common scale would
  flush small honest rows to zero next to a huge Byzantine one. Ordinary
  inputs never take that branch (under ``vmap`` both branches run).

Cost: one pass over the stack for the dot products with the reference and
the squared norms, one fused weighted row sum over the unrolled worker axis
(as ``byzjax._tree.weighted_rows``).

Reference:
  Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via
  Trust Bootstrapping", NDSS 2021, https://arxiv.org/abs/2012.13995.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from byzjax._tree import PyTree, check_stack, num_rows, row_is_finite
from byzjax.aggregators._base import AGGREGATORS

__all__ = ["fltrust", "fltrust_scores"]

_PRECISION = jax.lax.Precision.HIGHEST


def _check_reference(updates: PyTree, reference: PyTree) -> None:
    """Static check: ``reference`` is one row of ``updates`` (same tree,
    leaves ``[*param_shape]``, floating point); one line otherwise."""
    rows, tree = jax.tree_util.tree_flatten(updates)
    refs, ref_tree = jax.tree_util.tree_flatten(reference)
    try:  # the same structure: updates' leaves pair with reference's leaves
        jax.tree_util.tree_map(lambda x, r: None, updates, reference)
        same = len(refs) == len(rows)
    except (ValueError, TypeError):
        same = False
    if not same:
        raise ValueError("fltrust: reference must have the tree structure of one "
                         f"row of updates ({tree}), got {ref_tree}")
    for x, r in zip(rows, refs):
        shape = tuple(jnp.shape(r))
        if shape != tuple(x.shape[1:]):
            raise ValueError(
                f"fltrust: reference leaves must have the shape of one row of "
                f"updates, {tuple(x.shape[1:])}, got {shape}")
        dtype = jnp.result_type(r)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"fltrust: reference must be floating point, got a "
                            f"leaf of dtype {dtype}")


def _stats(updates: PyTree, reference: PyTree, n: int):
    """``(<x_i, r>, ||x_i||^2)`` per row and ``||r||^2``, over all leaves
    (at least float32)."""
    dots = sq = rsq = None
    for x, r in zip(jax.tree_util.tree_leaves(updates),
                    jax.tree_util.tree_leaves(reference)):
        acc = jnp.promote_types(x.dtype, jnp.float32)
        x2 = x.reshape(n, -1).astype(acc)
        r2 = jnp.asarray(r).reshape(-1).astype(acc)
        d = jnp.einsum("nd,d->n", x2, r2, precision=_PRECISION)
        s = jnp.einsum("nd,nd->n", x2, x2, precision=_PRECISION)
        t = jnp.sum(r2 * r2)
        dots = d if dots is None else dots + d
        sq = s if sq is None else sq + s
        rsq = t if rsq is None else rsq + t
    return dots, sq, rsq


def _exponents(stack: PyTree, keep: jax.Array, n: int) -> jax.Array:
    """``int32[n]``: ``e_i`` with ``max_j |x_ij| * 2**-e_i`` in ``[0.5, 1)``
    (clipped so that ``2**-e_i`` is a normal float; 0 for a zero row or a row
    outside ``keep``)."""
    biggest = None
    for x in jax.tree_util.tree_leaves(stack):
        a = jnp.abs(x.reshape(n, -1)).astype(jnp.promote_types(x.dtype,
                                                               jnp.float32))
        m = jnp.max(jnp.where(keep[:, None], a, 0.0), axis=1)
        biggest = m if biggest is None else jnp.maximum(biggest, m)
    assert biggest is not None  # (a stack has at least one leaf)
    limit = jnp.finfo(biggest.dtype).maxexp - 2
    return jnp.clip(jnp.frexp(biggest)[1], -limit, limit).astype(jnp.int32)


def _scaled(stack: PyTree, keep: jax.Array, exponents: jax.Array) -> PyTree:
    """Row ``i`` times ``2**-exponents[i]`` (exact), rows outside ``keep`` 0."""

    def leaf(x):
        acc = jnp.promote_types(x.dtype, jnp.float32)
        shape = (-1,) + (1,) * (x.ndim - 1)
        scale = jnp.ldexp(jnp.ones((), acc), -exponents).reshape(shape)
        return jnp.where(keep.reshape(shape), x.astype(acc), 0.0) * scale

    return jax.tree_util.tree_map(leaf, stack)


# Squared norms below this (entries of about 1e-10 and less) are measured on
# rows scaled by a power of two, so that no square underflows.
_TINY_SQ = 2.0 ** -63


def _measure(updates: PyTree, reference: PyTree, n: int):
    """Dot products and squared norms of the finite rows and the reference,
    each row scaled by a power of two ``2**-e_i`` when needed; returns
    ``(dots, sq, rsq, finite, ref_ok, e, e_0)``."""
    dots, sq, rsq = _stats(updates, reference, n)
    plain_ok = (jnp.all(jnp.isfinite(dots)) & jnp.all(jnp.isfinite(sq))
                & jnp.all(sq >= _TINY_SQ) & jnp.isfinite(rsq) & (rsq >= _TINY_SQ))

    def plain():
        return (dots, sq, rsq, jnp.ones((n,), bool), jnp.ones((), bool),
                jnp.zeros((n,), jnp.int32), jnp.zeros((), jnp.int32))

    def rescued():
        # Non-finite rows, a non-finite reference, or squares that overflow
        # or underflow: every row measured at its own power of two (one scale
        # for all rows would flush small honest rows next to a huge one).
        finite = row_is_finite(updates)
        ref_ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(r)) for r in
                                    jax.tree_util.tree_leaves(reference)]))
        ref_row = jax.tree_util.tree_map(lambda r: jnp.asarray(r)[None],
                                         reference)
        e = _exponents(updates, finite, n)
        e0 = _exponents(ref_row, ref_ok[None], 1)
        ref = jax.tree_util.tree_map(lambda r: r[0],
                                     _scaled(ref_row, ref_ok[None], e0))
        d, q, t = _stats(_scaled(updates, finite, e), ref, n)
        return d, q, t, finite, ref_ok, e, e0[0]

    return jax.lax.cond(plain_ok, plain, rescued)


def _fltrust(updates: PyTree, reference: PyTree, n: int):
    """``(scores, output)``."""
    dots, sq, rsq, finite, ref_ok, e, e0 = _measure(updates, reference, n)
    valid = finite & (sq > 0) & ref_ok & (rsq > 0)
    norm = jnp.sqrt(jnp.where(valid, sq, 1.0))
    ref_norm = jnp.sqrt(jnp.where(rsq > 0, rsq, 1.0))
    cos = jnp.where(valid, dots, 0.0) / norm / ref_norm
    scores = jnp.where(valid, jnp.maximum(cos, 0.0), 0.0)
    total = jnp.sum(scores)
    # TS_i ||g_0|| / ||g_i|| / sum TS on the measured rows (2**-e_i g_i and
    # 2**-e_0 g_0): applied to 2**-e_i g_i, then scaled by 2**e_0. All scores
    # 0: no update.
    coef = jnp.where(total > 0, scores * (ref_norm / norm)
                     / jnp.where(total > 0, total, 1.0), 0.0)
    row_scale = jnp.ldexp(jnp.ones((), coef.dtype), -e)
    out_scale = jnp.ldexp(jnp.ones((), coef.dtype), e0)

    def leaf(x):
        acc = jnp.promote_types(x.dtype, jnp.float32)
        total_ = None
        for i in range(n):  # static, small: one fused pass (as weighted_rows)
            row = jnp.where(finite[i], x[i].astype(acc) * row_scale[i], 0.0)
            term = coef[i] * row
            total_ = term if total_ is None else total_ + term
        return (total_ * out_scale).astype(x.dtype)

    return scores, jax.tree_util.tree_map(leaf, updates)


def fltrust_scores(updates: PyTree, *, reference: PyTree) -> jax.Array:
    """FLTrust's trust scores ``TS_i = ReLU(cos(g_i, g_0))``, ``float[n]``.

    Zero for zero or non-finite rows, and for every row when the reference is
    zero or non-finite (see :func:`fltrust`).

    Args:
      updates: pytree with leaves ``[n, *param_shape]``.
      reference: the server's own update, a pytree with leaves
        ``[*param_shape]`` (one row of ``updates``).

    Returns:
      ``float[n]`` in ``[0, 1]`` (at least float32).

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[2.0, 0.0], [0.0, 1.0], [-3.0, 0.0]])}
      >>> aggregators.fltrust_scores(x, reference={"w": jnp.array([1.0, 1.0])})
      Array([0.707..., 0.707..., 0.   ...], dtype=float32)
    """
    n = check_stack("fltrust_scores", updates)
    _check_reference(updates, reference)
    return _fltrust(updates, reference, n)[0]


@AGGREGATORS.register("fltrust", min_workers=lambda f: 1, requirement="n >= 1",
                      needs_reference=True, display_name="FLTrust",
                      short_name="FLTRUST", order=17)
def fltrust(updates: PyTree, *, reference: PyTree,
            num_byzantine: int = 0) -> PyTree:
    """FLTrust: rows rescaled to the reference's norm, weighted by ``ReLU(cos)``.

    ``sum_i TS_i (||g_0|| / ||g_i||) g_i / sum_j TS_j`` with
    ``TS_i = ReLU(cos(g_i, g_0))`` and ``g_0 = reference``, the server's own
    update on its root dataset (Cao et al. 2021, Eq. 4-6). Registered with
    ``needs_reference=True``: :func:`byzjax.optim.aggregate` passes the
    ``reference=`` given to its ``update``, and the simulator computes it as
    the server's gradient on ``server_data_size`` held-out training examples.

    Scores are 0 for zero rows, non-finite rows and when the reference is
    zero or non-finite; when every score is 0 the output is zeros (no update),
    where the paper's formula would divide by zero. So the output is finite
    with any number of non-finite rows (module docstring).

    Args:
      updates: pytree with leaves ``[n, *param_shape]``; ``n`` static.
      reference: the server's update ``g_0``, a pytree with leaves
        ``[*param_shape]`` (the structure of one row); may be traced.
      num_byzantine: only checked (a non-negative int): FLTrust's trust comes
        from the reference, not from a bound on the Byzantine rows.

    Returns:
      Pytree with leaves ``[*param_shape]``, the dtype of ``updates``; its
      norm is at most ``||g_0||``.

    Raises:
      ValueError: ``reference`` is not one row of ``updates`` (tree, shapes).
      TypeError: a non floating-point stack or reference.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[2.0, 0.0], [0.0, 1.0], [-3.0, 0.0]])}
      >>> aggregators.fltrust(x, reference={"w": jnp.array([1.0, 1.0])})
      {'w': Array([0.707..., 0.707...], dtype=float32)}
      >>> aggregators.fltrust(x, reference={"w": jnp.array([0.0, -1.0])})
      {'w': Array([0., 0.], dtype=float32)}
    """
    n = num_rows(updates)
    _check_reference(updates, reference)
    return _fltrust(updates, reference, n)[1]
