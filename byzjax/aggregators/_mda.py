"""Minimum Diameter Averaging (MDA, "Brute"): exact, by enumeration or by search.

MDA keeps the subset of ``n - f`` rows of least diameter ``max_{i,j} ||x_i - x_j||``
(Euclidean over all leaves together) and returns its mean.

Two exact algorithms, both on the ``[n, n]`` matrix of squared distances (so
their cost does not depend on the parameter dimension ``d``):

* **enumeration**: a static table of all ``C(n, f)`` kept subsets, built at trace
  time in ``itertools.combinations(range(n), n - f)`` order; one gather and one
  ``argmin``. Simple, obviously exact, and cheap while ``C(n, f)`` is small.
* **search**: the least diameter is one of the pairwise distances.
  A binary search over the sorted distances finds the smallest threshold ``tau``
  such that the *conflict graph* (edges: pairs farther apart than ``tau``) has a
  vertex cover of at most ``f`` vertices; removing the cover leaves a set of at
  least ``n - f`` rows all within ``tau`` of each other. Each test is an exact,
  fixed-parameter-tractable vertex-cover search (Buss & Goldsmith 1993; Downey &
  Fellows 1999) with budget ``k``: vertices of degree ``> k`` are forced into
  the cover; no cover exists when there are more edges than the ``k`` largest
  degrees add up to (this implies Buss's kernel bound, ``> k^2`` edges once all
  degrees are ``<= k``); the neighbour of a degree-1 vertex is taken; a vertex
  of a graph of maximum degree 2 (disjoint cycles) is taken; otherwise the
  search branches on a vertex ``v`` of maximum degree ``>= 3``: ``v`` in the
  cover, or all its neighbours. The whole search (bisection, vertex-cover
  queries and tie-break) is one ``lax.while_loop`` whose steps each cost
  ``O(n^2)`` on the ``[n, n]`` matrix, with an explicit depth-first stack of
  boolean masks ``[n//2 + 1, n]``. It is never capped, so it is always exact.
  Its worst case is exponential in ``f``: each query explores at most
  ``~1.4656^f`` leaves (branching vector ``(1, 3)``), and there are
  ``O(log n + n)`` queries; see :func:`minimum_diameter_averaging` for
  measured costs.

**Tie-break.** Several subsets can share the least diameter (with positive
probability: duplicated rows, or two far-apart points each close to the rest).
Both algorithms return the lexicographically first kept subset in
``itertools.combinations(range(n), n - f)`` order, which is the subset ByzFL's and
ByzantineMomentum's enumerations return (first strict minimum). The search
obtains it at the optimal ``tau`` greedily: for ``i = 0 .. n-1`` it keeps ``i``
if a cover of size ``<= f`` still exists with every kept row's conflicting
neighbours forced into it (a witness cover from the previous test answers most
of these questions without a new search).

References:
  El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed
  Learning in Byzantium", ICML 2018, https://arxiv.org/abs/1802.07927.
  El Mhamdi, Guerraoui, Rouault, "Distributed Momentum for Byzantine-resilient
  Stochastic Gradient Descent", ICLR 2021, https://arxiv.org/abs/2003.00010.
  Buss, Goldsmith, "Nondeterminism within P", SIAM J. Comput. 22(3), 1993.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from byzjax._tree import (
    PyTree,
    check_stack,
    num_rows,
    pairwise_sq_distances,
    weighted_rows,
)
from byzjax.aggregators._base import AGGREGATORS

__all__ = ["minimum_diameter_averaging", "minimum_diameter_subset"]

_METHODS = ("auto", "enumerate", "search")
# `method="auto"` enumerates when C(n, f) is at most this: measured at d = 1000,
# both paths take ~0.1 ms around C = 500, and enumeration grows linearly in C
# (C = 3003: 1.4 ms vs 0.1 ms). `method="enumerate"` refuses above
# _ENUMERATE_LIMIT (seconds of work) and gathers in chunks of _ENUMERATE_CHUNK.
_AUTO_ENUMERATE_MAX = 500
_ENUMERATE_LIMIT = 500_000
_ENUMERATE_CHUNK = 4096


# ----------------------------------------------------------------------------
# Enumeration.


@functools.lru_cache(maxsize=64)
def _combination_table(n: int, size: int) -> np.ndarray:
    """``int32[C(n, size), size]``, rows in ``itertools.combinations`` order."""
    table = np.fromiter(
        itertools.chain.from_iterable(itertools.combinations(range(n), size)),
        dtype=np.int32, count=math.comb(n, size) * size,
    )
    return table.reshape(-1, size)


def _subset_by_enumeration(d2: jax.Array, f: int) -> jax.Array:
    n = d2.shape[0]
    table = _combination_table(n, n - f)
    count = table.shape[0]
    chunk = min(count, _ENUMERATE_CHUNK)
    num_chunks = -(-count // chunk)
    # Pad with copies of the first subset: argmin returns the first minimum, so
    # padding can never win a tie against an earlier subset.
    padded = np.concatenate(
        [table, np.repeat(table[:1], num_chunks * chunk - count, axis=0)]
    ).reshape(num_chunks, chunk, n - f)

    def diameters(subsets):  # [chunk, m] -> [chunk] squared diameters
        return jnp.max(d2[subsets[:, :, None], subsets[:, None, :]], axis=(1, 2))

    subsets = jnp.asarray(padded)
    if num_chunks == 1:
        diam = diameters(subsets[0])
    else:
        diam = jax.lax.map(diameters, subsets).reshape(-1)
    # The first minimum is the lexicographically first optimal subset.
    best = subsets.reshape(-1, n - f)[jnp.argmin(diam)]
    return jnp.zeros((n,), bool).at[best].set(True)


# ----------------------------------------------------------------------------
# Search: binary search over thresholds + exact vertex cover with budget f.


# Status of the running vertex-cover query.
_IDLE, _RUNNING, _FOUND, _FAILED = 0, 1, 2, 3
# Phases of the search.
_BISECT, _GREEDY, _DONE = 0, 1, 2


class _SearchState(NamedTuple):
    """State of the one ``while_loop`` that runs the whole search."""

    phase: jax.Array  # int32: _BISECT, _GREEDY or _DONE
    lo: jax.Array  # int32: bisection bounds, indices into the sorted distances;
    hi: jax.Array  # int32: the threshold values[hi] is always feasible
    query: jax.Array  # int32: index of the threshold of the running query
    row: jax.Array  # int32: greedy phase, the row being decided
    chosen: jax.Array  # bool[n]: greedy phase, rows kept so far
    dropped: jax.Array  # bool[n]: greedy phase, rows excluded so far
    keep: jax.Array  # bool[n]: witness (no conflicts, >= n-f rows) at values[hi]
    cover: jax.Array  # bool[n]: the query's current partial cover
    stack: jax.Array  # bool[n//2 + 1, n]: the query's pending branches (DFS)
    size: jax.Array  # int32: number of pending branches
    status: jax.Array  # int32: _IDLE, _RUNNING, _FOUND or _FAILED
    steps: jax.Array  # int32: loop iterations (diagnostics)


def _cover_step(adj, cover, stack, size, budget):
    """One step of the exact search for a vertex cover of ``adj`` within ``budget``.

    The node is the partial cover ``cover`` (the graph left is ``adj`` minus
    it); ``stack[:size]`` holds the alternative branches still to explore.
    Returns ``(cover, stack, size, status)`` with status ``_FOUND`` (``cover``
    is a cover of size ``<= budget``), ``_FAILED`` (no such cover extends the
    query's initial cover) or ``_RUNNING``. Vertices that are isolated in the
    graph left are never added.
    """
    n = adj.shape[0]
    idx = jnp.arange(n)
    alive = ~cover
    sub = adj & alive[:, None] & alive[None, :]
    deg = jnp.sum(sub, axis=1, dtype=jnp.int32)
    k = budget - jnp.sum(cover, dtype=jnp.int32)
    twice_edges = jnp.sum(deg)
    dmax = jnp.max(deg)
    # k vertices cover at most the sum of the k largest degrees in edges (which
    # implies Buss's bound: more than k^2 edges once every degree is <= k).
    by_degree = jnp.cumsum(jnp.sort(deg)[::-1])
    capacity = jnp.where(k > 0, by_degree[jnp.clip(k - 1, 0, n - 1)], 0)
    fail = (k < 0) | (twice_edges > 2 * capacity)
    found = ~fail & (twice_edges == 0)
    # One rule per step, in this order. Degree > k: in every cover of size <= k.
    high = deg > k
    any_high = jnp.any(high)
    # Degree 1: take the neighbour (of an isolated edge, only the later end).
    one = deg == 1
    any_one = jnp.any(one)
    later = idx[None, :] > idx[:, None]
    take_nbr = jnp.any(one[:, None] & sub & ((deg[None, :] > 1) | later), axis=0)
    # Otherwise v of maximum degree: with degree <= 2 the graph left is disjoint
    # cycles and some optimal cover contains v; with degree >= 3 branch: v in
    # the cover now, all of N(v) in the cover later (pushed if affordable).
    v = jnp.argmax(deg)
    branch = ~fail & ~found & ~any_high & ~any_one & (dmax >= 3) & (k >= dmax)
    nxt = jnp.where(any_high, cover | high,
                    jnp.where(any_one, cover | take_nbr, cover | (idx == v)))
    pushed = jnp.where(branch, stack.at[size].set(cover | sub[v]), stack)
    top = stack[jnp.maximum(size - 1, 0)]
    new_cover = jnp.where(fail, top, jnp.where(found, cover, nxt))
    new_size = jnp.where(fail, jnp.maximum(size - 1, 0), size + branch)
    status = jnp.where(found, _FOUND, jnp.where(fail & (size == 0), _FAILED, _RUNNING))
    return new_cover, pushed, new_size, status.astype(jnp.int32)


def _subset_by_search(d2: jax.Array, f):
    """Returns ``(kept bool[n], steps int32)``; exact, lexicographic tie-break.

    One ``lax.while_loop``: each iteration advances the running vertex-cover
    query by one step and, when it has finished, moves the bisection or the
    greedy tie-break on and issues the next query. ``f`` may be a traced int32
    scalar (``1 <= f < n/2``): one compiled program serves every ``f``.
    """
    n = d2.shape[0]
    f = jnp.asarray(f, jnp.int32)
    m = n - f
    idx = jnp.arange(n)
    rows, cols = np.triu_indices(n, 1)
    values = jnp.sort(d2[rows, cols])
    # Lower bound: each of the n - f kept rows has n - f - 1 others within tau.
    radius = jnp.sort(d2, axis=1)[:, m - 1]
    lower = jnp.sort(radius)[m - 1]
    lo = jnp.searchsorted(values, lower, side="left").astype(jnp.int32)
    hi = jnp.asarray(values.shape[0] - 1, jnp.int32)  # nothing conflicts at the max
    empty = jnp.zeros((n,), bool)
    stack0 = jnp.zeros((n // 2 + 1, n), bool)  # depth <= budget - 2 < n/2
    zero = jnp.zeros((), jnp.int32)

    def body(s: _SearchState) -> _SearchState:
        adj = d2 > values[s.query]
        # 1. Advance the running query by one step.
        running = s.status == _RUNNING
        cover, stack, size, status = _cover_step(adj, s.cover, s.stack, s.size, f)
        cover = jnp.where(running, cover, s.cover)
        stack = jnp.where(running, stack, s.stack)
        size = jnp.where(running, size, s.size)
        status = jnp.where(running, status, s.status)
        finished = (status == _FOUND) | (status == _FAILED)
        ok = status == _FOUND
        # 2a. Bisection: use the answer, then ask about the next midpoint.
        b_lo = jnp.where(finished & ~ok, s.query + 1, s.lo)
        b_hi = jnp.where(finished & ok, s.query, s.hi)
        b_keep = jnp.where(finished & ok, ~cover, s.keep)
        b_more = b_lo < b_hi
        b_query = jnp.where(b_more, (b_lo + b_hi) // 2, b_hi)
        # 2b. Greedy: record the answer about `row`, then keep the following rows
        # of the witness until the first one outside it, which needs a query
        # unless it conflicts with the rows already kept.
        at_row = idx == s.row
        g_chosen = jnp.where(finished & ok, s.chosen | at_row, s.chosen)
        g_dropped = jnp.where(finished & ~ok, s.dropped | at_row, s.dropped)
        g_keep = jnp.where(finished & ok, ~cover, s.keep)
        start = jnp.where(finished, s.row + 1, s.row)
        ahead = idx >= start
        j = jnp.argmin(jnp.where(ahead, g_keep, True))  # first row >= start not kept
        j = jnp.where(ahead[j] & ~g_keep[j], j, n)
        run = ahead & (idx < j) & g_keep
        room = m - jnp.sum(g_chosen, dtype=jnp.int32)
        g_chosen = g_chosen | (run & (jnp.cumsum(run) <= room))
        g_done = jnp.sum(g_chosen, dtype=jnp.int32) >= m
        with_j = g_chosen | (idx == j)
        forced = g_dropped | jnp.any(adj & with_j[:, None], axis=0)
        clash = jnp.any(forced & with_j)
        g_dropped = jnp.where(~g_done & clash, g_dropped | (idx == j), g_dropped)
        g_ask = ~g_done & ~clash
        g_row = jnp.where(clash, j + 1, j)
        # 3. Commit (only when no query is running).
        bisect = s.phase == _BISECT
        greedy = s.phase == _GREEDY
        idle = status != _RUNNING
        to_greedy = idle & bisect & ~b_more
        new_phase = jnp.where(
            idle & greedy & g_done, _DONE, jnp.where(to_greedy, _GREEDY, s.phase)
        )
        ask = idle & ((bisect & b_more) | (greedy & g_ask))

        def pick(b, g, old):
            return jnp.where(idle & bisect, b, jnp.where(idle & greedy, g, old))

        return _SearchState(
            phase=new_phase.astype(jnp.int32),
            lo=pick(b_lo, s.lo, s.lo),
            hi=pick(b_hi, s.hi, s.hi),
            query=pick(b_query, s.query, s.query),
            row=pick(zero, g_row, s.row),
            chosen=pick(s.chosen, g_chosen, s.chosen),
            dropped=pick(s.dropped, g_dropped, s.dropped),
            keep=pick(b_keep, g_keep, s.keep),
            cover=jnp.where(ask, jnp.where(bisect, empty, forced), cover),
            stack=stack,
            size=jnp.where(ask, zero, size),
            status=jnp.where(ask, _RUNNING, jnp.where(idle, _IDLE, status)).astype(
                jnp.int32
            ),
            steps=s.steps + 1,
        )

    init = _SearchState(
        phase=jnp.asarray(_BISECT, jnp.int32), lo=lo, hi=hi, query=hi, row=zero,
        chosen=empty, dropped=empty, keep=~empty, cover=empty, stack=stack0,
        size=zero, status=jnp.asarray(_IDLE, jnp.int32), steps=zero,
    )
    out = jax.lax.while_loop(lambda s: s.phase != _DONE, body, init)
    return out.chosen, out.steps


# ----------------------------------------------------------------------------
# Public API.


def _resolve_method(method: str, n: int, f: int) -> str:
    if method not in _METHODS:
        raise ValueError(
            f"mda: method must be one of {_METHODS}, got "
            f"{method!r}"
        )
    count = math.comb(n, f)
    if method == "enumerate" and count > _ENUMERATE_LIMIT:
        raise ValueError(
            f"mda: method='enumerate' would enumerate "
            f"C({n}, {f}) = {count:,} subsets (limit {_ENUMERATE_LIMIT:,}); use "
            f"method='search' or method='auto'."
        )
    if method == "auto":
        return "enumerate" if count <= _AUTO_ENUMERATE_MAX else "search"
    return method


def _clean_sq_distances(updates: PyTree) -> jax.Array:
    d2 = pairwise_sq_distances(updates, rescale=True)
    # Finite rows too large to square overflow to NaN in the Gram form: treat
    # them as infinitely far too. The matmul need not be bit-symmetric; both
    # algorithms need one value per pair.
    d2 = jnp.where(jnp.isnan(d2), jnp.inf, d2)
    return jnp.maximum(d2, d2.T)


# Jitted kernels: inside a caller's jit they are inlined; called eagerly they
# compile once per shape (the search once per n for every f, as f is traced).
_distances_kernel = jax.jit(_clean_sq_distances)
_search_kernel = jax.jit(_subset_by_search)
_enumeration_kernel = jax.jit(_subset_by_enumeration, static_argnums=1)


@jax.jit
def _mean_of_kept(updates: PyTree, kept: jax.Array) -> PyTree:
    weights = kept.astype(jnp.float32) / jnp.sum(kept, dtype=jnp.float32)
    # The rows not kept count as zeros (whatever they hold), kept rows IEEE:
    # the exact mean of the kept rows, finite whenever they are.
    return weighted_rows(updates, weights, keep=kept)


def _subset(updates: PyTree, num_byzantine: int, method: str):
    """Validates (at trace time), then returns ``(kept bool[n], steps int32)``."""
    n = num_rows(updates)
    f = num_byzantine
    method = _resolve_method(method, n, f)
    if f == 0:
        return jnp.ones((n,), bool), jnp.zeros((), jnp.int32)
    # The subset is discrete: no gradient flows through its choice (and the
    # search's while_loop could not be reverse-differentiated), only through
    # the mean of the kept rows.
    d2 = jax.lax.stop_gradient(_distances_kernel(updates))
    if method == "enumerate":
        return _enumeration_kernel(d2, f), jnp.zeros((), jnp.int32)
    return _search_kernel(d2, f)


def minimum_diameter_subset(
    updates: PyTree, *, num_byzantine: int,
    method: Literal["auto", "enumerate", "search"] = "auto",
) -> jax.Array:
    """The rows kept by MDA: ``bool[n]``, exactly ``n - num_byzantine`` True.

    The lexicographically first (in ``itertools.combinations(range(n), n - f)``
    order) among the subsets of ``n - f`` rows of least diameter; see
    :func:`minimum_diameter_averaging` for the arguments.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0], [1.0], [2.0], [10.0]])}
      >>> aggregators.minimum_diameter_subset(x, num_byzantine=1)
      Array([ True,  True,  True, False], dtype=bool)
    """
    n = check_stack("mda", updates)
    AGGREGATORS.check("mda", num_workers=n, num_byzantine=num_byzantine)
    return _subset(updates, num_byzantine, method)[0]


@AGGREGATORS.register("mda", aliases=("minimum_diameter_averaging", "brute"),
                      display_name="MDA", short_name="MDA", order=3)
def minimum_diameter_averaging(
    updates: PyTree, *, num_byzantine: int,
    method: Literal["auto", "enumerate", "search"] = "auto",
) -> PyTree:
    """Minimum Diameter Averaging: the mean of the ``n - f`` rows of least diameter.

    Among all subsets ``S`` of ``n - f`` rows, picks one minimising
    ``max_{i, j in S} ||x_i - x_j||`` (Euclidean over all leaves together) and
    returns ``1/(n - f) sum_{i in S} x_i`` (Fabris's thesis prints ``1/(n - 2f)``:
    a typo). It is ``(f, 2f/(n-f))``-resilient averaging, order-optimal.

    Exact in every case. Ties: the lexicographically first optimal subset in
    ``itertools.combinations(range(n), n - f)`` order (ByzFL's and
    ByzantineMomentum's choice), so the rule is permutation invariant only when
    the minimiser is unique. Non-finite rows (``inf``, ``NaN``, or finite but so
    large that their squared norm overflows) are infinitely far from every other
    row: with at most ``f`` of them they are never kept and the result is
    finite. With more than ``f`` every subset has an infinite diameter, so the
    first ``n - f`` rows are kept and the output is their IEEE mean (``inf`` or
    ``NaN``).

    Methods (static): ``"enumerate"`` gathers the diameters of all ``C(n, f)``
    subsets from a table built at trace time (refused above 500,000 subsets);
    ``"search"`` runs the binary search over thresholds with an exact
    fixed-parameter vertex-cover test (module docstring), at a cost independent
    of ``d``; ``"auto"`` enumerates when ``C(n, f) <= 500`` (where the two cost
    about the same) and searches otherwise. Measured for the whole jitted
    aggregator at ``d = 1000`` on 2 shared CPU cores, honest Gaussian rows plus
    ALIE / FOE / sign-flip / ``inf`` / copied / far rows: ``n = 31, f = 10``
    0.2-0.5 ms; ``n = 51, f = 16`` 0.5-1 ms; ``n = 51, f = 25`` 0.6-2 ms.

    The search is never capped, so it never returns an approximation, but its
    worst case is exponential in ``f``. Distance matrices built to encode hard
    vertex-cover instances (random sparse conflict graphs, hill-climbed graphs)
    took at most about 400 loop steps (2-8 ms) at ``n = 51, f = 25``, about
    1,400 (20-70 ms) at ``n = 101, f = 50`` and 28,000 (3 s) at
    ``n = 201, f = 100``.

    Args:
      updates: pytree with leaves ``[n, *param_shape]``; ``n`` is static.
      num_byzantine: static int ``f`` with ``0 <= f < n/2``.
      method: static, ``"auto"``, ``"enumerate"`` or ``"search"``.

    Returns:
      Pytree with leaves ``[*param_shape]`` (input dtypes): the mean of the kept
      rows, computed as one fused weighted sum of the rows.

    Raises:
      ValueError: if ``n <= 2 f``, ``method`` is unknown, or ``"enumerate"`` is
        forced on too many subsets.

    Example:
      >>> import jax.numpy as jnp
      >>> from byzjax import aggregators
      >>> x = {"w": jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])}
      >>> aggregators.minimum_diameter_averaging(x, num_byzantine=1)
      {'w': Array([0.333..., 0.333...], dtype=float32)}
      >>> aggregators.get("brute") is aggregators.minimum_diameter_averaging
      True
    """
    kept, _ = _subset(updates, num_byzantine, method)
    return _mean_of_kept(updates, kept)
