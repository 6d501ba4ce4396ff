"""Spectral rules: SMEA and CAF, which compare the top eigenvalue of covariances.

Both work on **one Gram matrix** ``G[i, j] = (x_i - c) . (x_j - c)`` of the rows
centred at the coordinate-wise lower median ``c`` (Euclidean over all leaves
together, :func:`byzjax._tree.gram`), never on a ``d x d`` covariance. The
empirical covariance of rows ``S`` with weights ``w`` (summing to 1) is
``A^T A`` with ``A = diag(sqrt(w)) (X_S - mu)``; its non-zero eigenvalues are
those of the small matrix ``A A^T``, the centred Gram matrix of ``S`` scaled by
the weights, and its top eigenvector is ``A^T u / sqrt(lambda)`` for the top
eigenvector ``u`` of ``A A^T``. So every eigenvalue and projection the rules
need comes from ``[n, n]`` matrices, whatever the parameter dimension ``d``.
The centre only serves precision (the covariances do not depend on it): the
lower median is an input value in every coordinate and lies among the honest
values while at most ``f < n/2`` rows are Byzantine, so huge Byzantine rows do
not wash out the honest rows' differences, and integer-valued rows keep exact
integer Gram entries. The matrix is then scaled by an exact power of two (both
rules are scale invariant) so that nothing computed from it overflows. Cost:
one coordinate-wise median (a compare-exchange network, one read of the stack)
and one Gram matmul (``O(n^2 d)``), then work on ``[n, n]`` matrices only.

**Non-finite rows** (``inf``/``NaN``, or a squared distance to the centre
that overflows the float type: entries near ``1e19`` in float32, as in
centered clipping) are infinitely far: they never enter an average.

**Numerical ties.** Eigenvalues computed in float32 from different but
equivalent subsets (say ``{-1, 0}`` and ``{0, 1}``) differ in their last bits.
Both rules treat top eigenvalues within a relative ``1e-4`` of each other as
equal (``TIE_RTOL``) and then take the first candidate (lowest subset index,
or earliest iteration), so that exact ties are broken the same way in float32
as in exact arithmetic.

The subset or the weights are chosen on constants (``lax.stop_gradient``):
gradients flow through the mean of the chosen rows only.

References:
  Allouah, Guerraoui, Gupta, Pinot, Stephan, "On the Privacy-Robustness-Utility
  Trilemma in Distributed Learning", ICML 2023, https://arxiv.org/abs/2302.04787
  (SMEA).
  Allouah, Guerraoui, Stephan, "Towards Trustworthy Federated Learning with
  Untrusted Participants", ICML 2025, https://arxiv.org/abs/2505.01874 (CAF).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from byzjax._tree import PyTree, gram, num_rows, weighted_rows
from byzjax.aggregators._base import AGGREGATORS
from byzjax.aggregators._coordinate import coordinate_median
from byzjax.aggregators._mda import _combination_table

__all__ = [
    "smallest_maximum_eigenvalue_averaging",
    "covariance_bound_agnostic_filter",
    "SMEA_MAX_SUBSETS",
    "SMEA_MAX_WORK",
]

#: SMEA refuses ``(n, f)`` with more subsets of ``n - f`` rows than this.
SMEA_MAX_SUBSETS = 100_000
#: ... or with more eigenvalue work than this, counted as ``C(n, f) m^3``
#: (``m = n - f``), times 20 for ``m > 64``. Batched ``eigvalsh`` of ``[m, m]``
#: matrices was measured (XLA:CPU, 2 shared cores) at 1 to 8 ns per ``m^3``
#: up to ``m = 64`` (7 us each at ``m = 11``, 53 us at 30, 0.2 ms at 64) and
#: 40 to 45 ns beyond (11 ms at 65): the limit keeps SMEA within a few
#: seconds. ``n = 15, f = 4`` (1,365 subsets, ``1.8e6``) takes ~13 ms.
SMEA_MAX_WORK = 2e9
#: Top eigenvalues within this relative distance of each other are equal.
TIE_RTOL = 1e-4
# SMEA computes eigenvalues in chunks of at most this many subsets (one
# lax.map step), and of at most _CHUNK_ENTRIES Gram entries (16 MB).
_CHUNK = 2048
_CHUNK_ENTRIES = 2**22


def _centred_gram(updates: PyTree):
    """``(G float[n, n], ok bool[n])``: the Gram matrix of the rows centred at
    the coordinate-wise lower median, with the rows and columns of rows whose
    centred squared norm is not finite (non-finite rows) set to 0.

    Chosen on constants: no gradient flows through it.
    """
    updates = jax.lax.stop_gradient(updates)
    center = coordinate_median(updates, num_byzantine=0, lower=True)
    # More than f non-finite values in a coordinate: its median is not
    # finite; any finite centre will do there.
    center = jax.tree_util.tree_map(
        lambda c: jnp.where(jnp.isfinite(c), c, jnp.zeros((), c.dtype)), center)
    g = gram(updates, center)
    ok = jnp.isfinite(jnp.diagonal(g))
    g = jnp.where(ok[:, None] & ok[None, :], g, 0.0)
    # Both rules are scale invariant: scale by an exact power of two so that
    # the largest squared norm is in [0.5, 1) and products of entries (the
    # eigensolver's, CAF's squared projections) cannot overflow.
    _, e = jnp.frexp(jnp.max(jnp.diagonal(g)))
    return jnp.ldexp(g, -e), ok


def _first_within(values: jax.Array) -> jax.Array:
    """Index of the first entry within ``TIE_RTOL`` (relative) of the least;
    ``values >= 0``, ``+inf`` allowed (all ``+inf``: index 0)."""
    least = jnp.min(values)
    return jnp.argmax(values <= least * (1.0 + TIE_RTOL))


# ----------------------------------------------------------------------------
# SMEA


def _subset_eigenvalues(g: jax.Array, ok: jax.Array, subsets: jax.Array):
    """Top eigenvalue of the covariance of each subset: ``float[s]``.

    ``subsets`` is ``int32[s, m]``; a subset holding a row outside ``ok`` gets
    ``+inf``. The covariance ``1/m sum_{i in S} (x_i - mu_S)(x_i - mu_S)^T`` has
    the eigenvalues of ``H G_S H / m`` (``H`` the centring matrix).
    """
    m = subsets.shape[1]
    gs = g[subsets[:, :, None], subsets[:, None, :]]  # [s, m, m]
    row = jnp.mean(gs, axis=2, keepdims=True)
    col = jnp.mean(gs, axis=1, keepdims=True)
    tot = jnp.mean(row, axis=1, keepdims=True)
    k = gs - row - col + tot
    k = 0.5 * (k + jnp.swapaxes(k, 1, 2))
    top = jnp.linalg.eigvalsh(k)[:, -1] / m
    top = jnp.maximum(jnp.where(jnp.isnan(top), jnp.inf, top), 0.0)
    return jnp.where(jnp.all(ok[subsets], axis=1), top, jnp.inf)


def _smea_subset(updates: PyTree, n: int, f: int) -> jax.Array:
    """``bool[n]``: the rows SMEA keeps (``n - f`` of them)."""
    m = n - f
    g, ok = _centred_gram(updates)
    table = _combination_table(n, m)
    count = table.shape[0]
    chunk = max(1, min(count, _CHUNK, _CHUNK_ENTRIES // (m * m)))
    num_chunks = -(-count // chunk)
    # Padding repeats the first subset: it can never come before an earlier one.
    padded = np.concatenate(
        [table, np.repeat(table[:1], num_chunks * chunk - count, axis=0)]
    ).reshape(num_chunks, chunk, m)
    subsets = jnp.asarray(padded)
    if num_chunks == 1:
        top = _subset_eigenvalues(g, ok, subsets[0])
    else:
        top = jax.lax.map(lambda s: _subset_eigenvalues(g, ok, s), subsets)
    best = subsets.reshape(-1, m)[_first_within(top.reshape(-1))]
    return jnp.zeros((n,), bool).at[best].set(True)


def _smea_work(num_workers: int, num_byzantine: int) -> float:
    """SMEA's eigenvalue work, ``C(n, f) m^3`` (``m = n - f``; x20 above 64)."""
    m = num_workers - num_byzantine
    return math.comb(num_workers, num_byzantine) * m ** 3 * (20 if m > 64 else 1)


def _smea_limit(num_workers: int, num_byzantine: int) -> str | None:
    """The one-line refusal of an ``(n, f)`` with too many subsets, or None."""
    n, f = num_workers, num_byzantine
    count = math.comb(n, f)
    fix = "; use fewer workers or a smaller num_byzantine, or another rule (mda, caf)"
    if count > SMEA_MAX_SUBSETS:
        return (f"smea: n = {n}, f = {f} means C({n}, {f}) = {count:,} subsets to "
                f"compare (limit {SMEA_MAX_SUBSETS:,})" + fix)
    work = _smea_work(n, f)
    if work > SMEA_MAX_WORK:
        return (f"smea: n = {n}, f = {f} means C({n}, {f}) = {count:,} subsets of "
                f"{n - f} rows, eigenvalue work {work:.2g} (C(n, f) (n - f)^3, x20 "
                f"above 64 rows; limit {SMEA_MAX_WORK:.2g})" + fix)
    return None


@AGGREGATORS.register("smea", aliases=("smallest_maximum_eigenvalue_averaging",),
                      limit=_smea_limit, display_name="SMEA", short_name="SMEA",
                      order=12)
def smallest_maximum_eigenvalue_averaging(updates: PyTree, *,
                                          num_byzantine: int) -> PyTree:
    """SMEA: the mean of the ``n - f`` rows of least top covariance eigenvalue.

    Among all subsets ``S`` of ``n - f`` rows, picks one minimising
    ``lambda_max(1/|S| sum_{i in S} (x_i - mu_S)(x_i - mu_S)^T)`` (``mu_S``
    the subset's mean, Euclidean over all leaves together) and returns
    ``mu_S``. Every subset has the same size, so the normalisation
    (``1/|S|`` as ByzFL's documentation writes it, none as its code
    computes it) does not change the choice.

    **Exact**, by enumeration: one Gram matrix of the centred rows (module
    docstring), then for each of the ``C(n, f)`` subsets the top eigenvalue
    of its ``[n - f, n - f]`` centred Gram submatrix, by ``eigvalsh``
    batched over chunks of subsets under ``lax.map`` (the subsets are a
    static table built at trace time in ``itertools.combinations(range(n),
    n - f)`` order). ByzFL 0.0.11 estimates each eigenvalue with **one**
    power-iteration step from a random vector, so its choice is random; this
    one is not. Refused when ``C(n, f)`` exceeds :data:`SMEA_MAX_SUBSETS`
    (100,000) or the eigenvalue work ``C(n, f) (n - f)^3`` (x20 above 64
    rows) exceeds :data:`SMEA_MAX_WORK` (``2e9``, a few seconds), by the
    registry's check of ``(n, f)``, so a simulator config fails before any
    program is built. ``n = 15, f = 4`` (1,365 subsets, ``d = 1000``) took
    about 13 ms jitted on a shared 2-core CPU, ``n = 15, f = 5`` (3,003)
    about 40 ms.

    **Ties:** subsets whose top eigenvalues agree within a relative ``1e-4``
    are tied (float32 rounding of equivalent subsets); the lexicographically
    first of them in ``itertools.combinations`` order is kept (ByzFL keeps
    the first strict minimum of that order). So the rule is permutation
    invariant when the minimiser is unique. **Non-finite rows** (and rows
    whose squared distance to the centre overflows) are infinitely far: a
    subset holding one has an infinite eigenvalue, so with at most ``f`` of
    them the result is the mean of finite rows. With more, every subset is
    infinite: the first ``n - f`` rows are kept and the output is their IEEE
    mean (``inf`` or ``NaN``), as for MDA.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``; ``n`` static.
      num_byzantine: static int ``f`` with ``n > 2f`` (ByzFL's requirement)
        within the limits above; ``f = 0`` gives the mean.

    Returns:
      Pytree with leaves ``[*param_shape]`` (input dtypes): the mean of the
      kept rows, one fused weighted sum of the rows.

    Raises:
      ValueError: if ``n <= 2f`` or ``(n, f)`` exceeds the limits.

    Reference:
      Allouah, Guerraoui, Gupta, Pinot, Stephan, "On the Privacy-Robustness-
      Utility Trilemma in Distributed Learning", ICML 2023,
      https://arxiv.org/abs/2302.04787; ByzFL 0.0.11's ``SMEA``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])}
      >>> aggregators.smallest_maximum_eigenvalue_averaging(x, num_byzantine=1)
      {'w': Array([2.5, 3.5, 4.5], dtype=float32)}
      >>> x = {"w": jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])}
      >>> aggregators.get("smea")(x, num_byzantine=1)
      {'w': Array([0.333..., 0.333...], dtype=float32)}
    """
    n = num_rows(updates)  # (n, f) and the subset limit: checked by the registry
    return _smea(updates, n, num_byzantine)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _smea(updates: PyTree, n: int, f: int) -> PyTree:
    # Jitted (inlined under a caller's jit; compiled once per shape when
    # called eagerly, instead of running op by op).
    kept = jnp.ones((n,), bool) if f == 0 else _smea_subset(updates, n, f)
    # Rows not kept count as zeros (whatever they hold), kept rows IEEE.
    return weighted_rows(updates, kept.astype(jnp.float32) / (n - f), keep=kept)


# ----------------------------------------------------------------------------
# CAF


def _caf_weights(g: jax.Array, ok: jax.Array, f: int) -> jax.Array:
    """``float[n]``: the weights (summing to 1) of the mean CAF returns."""
    n = g.shape[0]
    dtype = g.dtype
    c0 = ok.astype(dtype)
    steps = 2 * f
    threshold = jnp.asarray(n - 2 * f, dtype)
    # Weights of the mean at each iteration, and its top eigenvalue (+inf
    # for iterations that did not run). Row 0 starts as the finite rows'
    # mean, the answer when no iteration runs.
    hist_w = jnp.broadcast_to(c0 / jnp.maximum(jnp.sum(c0), 1.0), (steps, n))
    hist_l = jnp.full((steps,), jnp.inf, dtype)

    def body(t, state):
        c, running, hist_w, hist_l = state
        total = jnp.sum(c)
        active = running & (total > threshold)
        w = c / jnp.where(total > 0, total, 1.0)
        # Gram of the rows centred at the weighted mean mu_c = sum_k w_k x_k.
        gw = g @ w
        gd = g - gw[:, None] - gw[None, :] + w @ gw
        gd = 0.5 * (gd + gd.T)
        # Weighted covariance sum_i w_i (x_i - mu)(x_i - mu)^T = A^T A with
        # A = diag(sqrt(w)) (X - mu); its eigenpairs from A A^T (n x n).
        sw = jnp.sqrt(w)
        evals, vecs = jnp.linalg.eigh(sw[:, None] * gd * sw[None, :])
        top = jnp.maximum(evals[-1], 0.0)
        # (x_j - mu) . v_u with v_u = A^T u / sqrt(lambda_u) for every
        # eigenvector u; tau_j sums the squares over the top eigenspace
        # (eigenvalues within TIE_RTOL of the top one), which is
        # ((x_j - mu) . v)^2 when the top eigenvalue is simple.
        in_top = (evals >= top * (1.0 - TIE_RTOL)) & (evals > 0)
        proj = (gd @ (sw[:, None] * vecs)) / jnp.sqrt(
            jnp.where(in_top, evals, 1.0))[None, :]
        tau = jnp.sum(jnp.where(in_top[None, :], proj ** 2, 0.0), axis=1)
        # The largest deviation among the rows still weighted.
        tau_max = jnp.max(jnp.where(c > 0, tau, -jnp.inf))
        hist_w = jnp.where(active, hist_w.at[t].set(w), hist_w)
        hist_l = jnp.where(active, hist_l.at[t].set(top), hist_l)
        # All weighted rows equal (no spread left): nothing to filter.
        go = active & (top > 0) & (tau_max > 0)
        ratio = tau / jnp.where(go, tau_max, 1.0)
        # Rows at tau_max get exactly 0 (XLA may divide by multiplying with
        # the reciprocal, which leaves 1 - ratio a rounding error off 0).
        new_c = jnp.where(tau >= tau_max, 0.0, jnp.maximum(c * (1.0 - ratio), 0.0))
        c = jnp.where(go, new_c, c)
        return c, running & go, hist_w, hist_l

    init = (c0, jnp.asarray(True), hist_w, hist_l)
    _, _, hist_w, hist_l = jax.lax.fori_loop(0, steps, body, init)
    return hist_w[_first_within(hist_l)]


@AGGREGATORS.register("caf", aliases=("covariance_bound_agnostic_filter",),
                      display_name="CAF", short_name="CAF", order=13)
def covariance_bound_agnostic_filter(updates: PyTree, *,
                                     num_byzantine: int) -> PyTree:
    """CAF: weights filtered along the top eigenvector of the weighted covariance.

    ByzFL 0.0.11's loop, from weights ``c_i = 1``: while
    ``sum_i c_i > n - 2f``, take the weighted mean ``mu_c = sum_i c_i x_i /
    sum_i c_i``, the top eigenpair ``(lambda, v)`` of the weighted covariance
    ``Sigma_c = sum_i c_i (x_i - mu_c)(x_i - mu_c)^T / sum_i c_i``, the
    squared projections ``tau_i = ((x_i - mu_c) . v)^2``, and down-weight
    ``c_i <- c_i (1 - tau_i / tau_max)``. Return the ``mu_c`` of least
    ``lambda`` met along the way.

    Where byzjax differs from ByzFL 0.0.11 (``docs/CONVENTIONS.md``):

    * **Exact eigenpair**: from the ``[n, n]`` weighted centred Gram matrix
      (``eigh``, module docstring). ByzFL takes one power-iteration step
      from a random vector, so its answer is random.
    * **tau_max is the largest tau among rows still weighted** (``c_i > 0``).
      ByzFL takes it over every row, including rows already at weight 0: a
      removed far row then keeps the maximum, the others lose a fraction
      ``tau_i / tau_max`` of their weight per step, and the loop runs for
      about ``(R / sigma)^2`` steps (rows ``R`` away, honest spread
      ``sigma``). Here each step zeroes at least one weighted row, so the
      loop ends within ``2f`` steps: a ``lax.fori_loop`` of ``2f`` masked
      steps, jit- and vmap-able.
    * **Ties**: a top eigenvalue of multiplicity above one (within a
      relative ``1e-4``) has no unique ``v``; ``tau_i`` is then the squared
      norm of ``x_i - mu_c`` projected on the whole top eigenspace
      (permutation invariant, and equal to ByzFL's ``tau_i`` for a simple
      eigenvalue). Eigenvalues of two iterations within a relative ``1e-4``
      are equal and the earlier iteration wins (ByzFL: first strict minimum).
      When the weighted rows all coincide (``lambda = 0``) the loop stops:
      nothing is left to filter and that mean is returned.
    * ``f = 0``: no step runs and the mean is returned (ByzFL returns
      ``None``).

    **Non-finite rows** (and rows whose squared distance to the centre
    overflows) start at weight 0, as if removed by a first step whose
    eigenvalue is infinite; with at most ``f`` of them the result is a
    weighted mean of finite rows. With none finite it is ``NaN``.

    Cost: one coordinate-wise median and one Gram matmul (``O(n^2 d)``),
    ``2f`` eigendecompositions of ``[n, n]`` matrices, one fused weighted sum.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``; ``n`` static.
      num_byzantine: static int ``f`` with ``n > 2f`` (ByzFL's requirement).

    Returns:
      Pytree with leaves ``[*param_shape]`` (input dtypes).

    Raises:
      ValueError: if ``n <= 2f``.

    Reference:
      Allouah, Guerraoui, Stephan, "Towards Trustworthy Federated Learning
      with Untrusted Participants", ICML 2025, https://arxiv.org/abs/2505.01874;
      ByzFL 0.0.11's ``CAF``.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])}
      >>> aggregators.covariance_bound_agnostic_filter(x, num_byzantine=1)
      {'w': Array([4., 5., 6.], dtype=float32)}
      >>> x = {"w": jnp.array([[0.0], [1.0], [2.0], [3.0], [100.0]])}
      >>> aggregators.get("caf")(x, num_byzantine=1)
      {'w': Array([1.5...], dtype=float32)}
    """
    return _caf(updates, num_byzantine)


@functools.partial(jax.jit, static_argnums=1)
def _caf(updates: PyTree, num_byzantine: int) -> PyTree:
    # Jitted: see _smea.
    g, ok = _centred_gram(updates)
    if num_byzantine == 0:
        w = ok.astype(g.dtype) / jnp.maximum(jnp.sum(ok), 1).astype(g.dtype)
    else:
        w = _caf_weights(g, ok, num_byzantine)
    w = jax.lax.stop_gradient(w)
    keep = w > 0
    # Rows of weight 0 count as zeros whatever they hold; no finite row: NaN.
    out = weighted_rows(updates, w, keep=keep)
    none = ~jnp.any(keep)
    return jax.tree_util.tree_map(
        lambda y: jnp.where(none, jnp.asarray(jnp.nan, y.dtype), y), out)
