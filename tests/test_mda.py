"""Tests of exact Minimum Diameter Averaging (byzjax/aggregators/_mda.py).

The reference is a plain brute force: a loop over every kept subset in
``itertools.combinations`` order, the diameter of each, first strict minimum.
"""

from __future__ import annotations

import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators
from byzjax.aggregators import _mda
from tests.helpers import ref_mda_subset

PER_SEED = 12  # inputs drawn by make_inputs


# ----------------------------------------------------------------------------
# References (NumPy, loops).


brute_force_subset = ref_mda_subset  # tests/helpers.py


def enumerated_subset(d2, f):
    """Same as :func:`brute_force_subset`, vectorised (for n up to ~25)."""
    n = len(d2)
    table = np.array(list(itertools.combinations(range(n), n - f)))
    diameters = d2[table[:, :, None], table[:, None, :]].max(axis=(1, 2))
    mask = np.zeros(n, bool)
    mask[table[np.argmin(diameters)]] = True  # argmin: first minimum
    return mask


def numpy_sq_distances(tree):
    """float64 squared distances over all leaves; non-finite rows at +inf."""
    leaves = jax.tree_util.tree_leaves(tree)
    n = leaves[0].shape[0]
    x = np.concatenate([np.asarray(v, np.float64).reshape(n, -1) for v in leaves], 1)
    finite = np.isfinite(x).all(1)
    d2 = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                both = finite[i] and finite[j]
                d2[i, j] = ((x[i] - x[j]) ** 2).sum() if both else np.inf
    return d2


def numpy_mean_of(tree, mask):
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x, np.float64)[mask].mean(0), tree)


def diameter(d2, mask):
    idx = np.flatnonzero(mask)
    return max(d2[a, b] for a in idx for b in idx)


# ----------------------------------------------------------------------------
# Inputs: pytrees with two leaves of different shapes.


def _tree(x):
    n = x.shape[0]
    return {"a": jnp.asarray(x[:, :3], jnp.float32),
            "b": jnp.asarray(x[:, 3:].reshape(n, 2, 2), jnp.float32)}


def make_inputs(n, seed):
    """PER_SEED stacks of n rows (7 coordinates): generic, ties, non-finite rows."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):  # generic Gaussian rows, some far
        x = rng.normal(size=(n, 7))
        x[rng.random(n) < 0.2] *= 30.0
        out.append(x)
    for _ in range(2):  # duplicated rows (a mimic attack): exact ties
        x = rng.normal(size=(n, 7))
        x[rng.integers(0, n, n // 2)] = x[rng.integers(0, n, 1)]
        out.append(x)
    out.append(rng.integers(0, 3, size=(n, 7)).astype(float))  # grid: many ties
    out.append(np.eye(n, 7) if n <= 7 else np.eye(7)[rng.integers(0, 7, n)])
    line = np.zeros((n, 7))  # evenly spaced on a line, shuffled: symmetric ties
    line[:, 0] = rng.permutation(n)
    out.append(line)
    sym = rng.normal(size=(n, 7)) * 0.01  # two far points each close to the rest
    sym[rng.permutation(n)[:2], 0] = [1.0, -1.0][:n]
    out.append(sym)
    for values in ([np.inf], [np.nan, -np.inf]):  # non-finite rows
        x = rng.normal(size=(n, 7))
        x[rng.permutation(n)[: len(values)], rng.integers(0, 7)] = values[:n]
        out.append(x)
    assert len(out) == PER_SEED
    return [_tree(x) for x in out]


def stack(trees):
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)


def row(batched, i):
    return jax.tree_util.tree_map(lambda x: x[i], batched)


_sq_distances = jax.jit(jax.vmap(_mda._clean_sq_distances))
# The search takes f traced: one compiled program per n serves every f. Both
# cores run one input per call (vmap is tested through the public functions):
# compiling the un-batched programs is much faster.
_search_one = jax.jit(lambda d2, f: _mda._subset_by_search(d2, f)[0])


def _search(d2, f):
    return np.stack([_search_one(d, f) for d in d2])


@functools.cache
def _enumerate_all(n):
    """Jitted ``d2 -> {f: kept}`` for every valid f >= 1 (one program per n)."""
    return jax.jit(lambda d2: {f: _mda._subset_by_enumeration(d2, f)
                               for f in range(1, (n + 1) // 2)})


# ----------------------------------------------------------------------------
# Exactness against brute force.


@pytest.mark.parametrize("n", range(1, 13))
def test_equals_brute_force_every_small_case(n):
    rng = np.random.default_rng(n)
    trees = make_inputs(n, seed=n) + make_inputs(n, seed=100 + n)
    d2 = np.asarray(_sq_distances(stack(trees)))
    d2_float64 = [numpy_sq_distances(t) for t in trees]
    # Conflict graphs built to exercise every rule of the vertex-cover search.
    graphs = _graph_matrices(n, rng) if n >= 3 else np.zeros((0, n, n), np.float32)
    matrices = np.concatenate([d2, graphs])
    enumerated = [_enumerate_all(n)(d) for d in matrices]
    for f in range((n + 1) // 2):
        expected = np.array([brute_force_subset(d, f) for d in matrices])
        if f == 0:
            assert expected.all()
            continue
        np.testing.assert_array_equal([e[f] for e in enumerated], expected,
                                      err_msg=f"enumeration, f={f}")
        np.testing.assert_array_equal(_search(matrices, f), expected,
                                      err_msg=f"search, f={f}")
        # The float32 distances give the float64 choice on these inputs (ties
        # are exact on the integer-valued ones): the chosen subset is MDA's.
        for i, d in enumerate(d2_float64):
            np.testing.assert_array_equal(brute_force_subset(d, f), expected[i],
                                          err_msg=f"input {i} f={f}")


def _graph_matrices(n, rng):
    """Two-level distance matrices 1 + A: the conflict graph at tau = 1 is A.

    Exact ties everywhere; cycles (the degree-2 rule), isolated edges (degree
    1), a star (high degree), cliques and sparse random graphs (branching).
    """
    graphs = []
    for p in (0.1, 0.25, 0.4, 0.6):
        a = np.triu(rng.random((n, n)) < p, 1)
        graphs.append(a | a.T)
    idx = np.arange(n)
    cycles = np.zeros((n, n), bool)  # disjoint cycles of length 3, 4, 5, ...
    start, length = 0, 3
    while start + length <= n:
        members = idx[start:start + length]
        cycles[members, np.roll(members, 1)] = True
        start, length = start + length, length + 1
    graphs.append(cycles | cycles.T)
    matching = np.zeros((n, n), bool)  # isolated edges
    matching[idx[0:n - 1:2], idx[1:n:2]] = True
    graphs.append(matching | matching.T)
    star = np.zeros((n, n), bool)
    star[0, 1:] = True
    graphs.append(star | star.T)
    cliques = (idx[:, None] // 4 == idx[None, :] // 4) & ~np.eye(n, dtype=bool)
    graphs.append(cliques)
    if n >= 7:
        # Max degree 3, and vertex 1 (first of maximum degree) is in no minimum
        # cover (the only one is N(1) = {3, 4, 6}): taking it without branching
        # is wrong.
        a = np.zeros((n, n), bool)
        for i, j in [(1, 3), (1, 4), (1, 6), (2, 3), (2, 4), (3, 5), (4, 6), (5, 6)]:
            a[i, j] = a[j, i] = True
        graphs.append(a)
    while len(graphs) < 16:
        a = np.zeros((n, n), bool)  # sparse random graphs, half with degrees <= 3
        for _ in range(3 * n // 2 if len(graphs) % 2 else 2 * n):
            i, j = rng.choice(n, 2, replace=False)
            if len(graphs) % 2 or max(a[i].sum(), a[j].sum()) < 3:
                a[i, j] = a[j, i] = True
        graphs.append(a)
    return np.stack([1.0 + g - np.eye(n) for g in graphs]).astype(np.float32)


@pytest.mark.parametrize("n,f", [(16, 7), (25, 3)])
def test_search_equals_enumeration_larger(n, f):
    rng = np.random.default_rng(n)
    honest = rng.normal(size=(n - f, 7))
    mean, std = honest.mean(0), honest.std(0)
    attacks = [
        np.tile(mean - 1.5 * std, (f, 1)),  # ALIE
        np.tile(-0.1 * mean, (f, 1)),  # FOE
        honest[rng.integers(0, n - f, f)],  # mimic: ties
        rng.normal(size=(f, 7)) * 50.0,  # far
        np.full((f, 7), np.inf),
        rng.normal(size=(f, 7)),  # no attack
    ]
    trees = [_tree(np.concatenate([honest, b])[rng.permutation(n)]) for b in attacks]
    d2 = np.asarray(_sq_distances(stack(trees)))
    d2 = np.concatenate([d2, _graph_matrices(n, rng)])
    got = np.asarray(_search(d2, f))
    for d, g in zip(d2, got, strict=True):
        np.testing.assert_array_equal(g, enumerated_subset(d, f))


# ----------------------------------------------------------------------------
# The aggregator.


@functools.cache
def _batched(f, method):
    """Jitted, vmapped (subset, aggregate) through the public functions."""
    def both(x):
        kwargs = {"num_byzantine": f, "method": method}
        return (aggregators.minimum_diameter_subset(x, **kwargs),
                aggregators.minimum_diameter_averaging(x, **kwargs))
    return jax.jit(jax.vmap(both))


@pytest.mark.parametrize("method", ["auto", "enumerate", "search"])
def test_output_is_mean_of_reference_subset(method):
    n, f = 9, 4
    trees = make_inputs(n, seed=7)
    kept, out = _batched(f, method)(stack(trees))
    for i, tree in enumerate(trees):
        expected_kept = brute_force_subset(numpy_sq_distances(tree), f)
        np.testing.assert_array_equal(kept[i], expected_kept)
        got = row(out, i)
        chex.assert_trees_all_close(got, numpy_mean_of(tree, expected_kept),
                                    rtol=1e-5, atol=1e-5)
        # Inputs 10 and 11 hold 1 and 2 (<= f) non-finite rows.
        assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(got))
        assert got["a"].dtype == jnp.float32 and got["b"].shape == (2, 2)


def test_no_byzantine_is_the_mean():
    tree = make_inputs(6, seed=0)[0]
    for method in ("auto", "enumerate", "search"):
        out = aggregators.minimum_diameter_averaging(tree, num_byzantine=0,
                                                     method=method)
        chex.assert_trees_all_close(out, numpy_mean_of(tree, np.ones(6, bool)),
                                    rtol=1e-5, atol=1e-6)


def test_more_non_finite_rows_than_f():
    # Every subset has infinite diameter: the first n - f rows are kept and
    # their mean is not finite.
    x = np.random.default_rng(0).normal(size=(9, 7))
    x[[1, 4, 6], 2] = [np.inf, -np.inf, np.nan]
    kept = aggregators.minimum_diameter_subset(_tree(x), num_byzantine=2,
                                               method="enumerate")
    np.testing.assert_array_equal(kept, np.arange(9) < 7)
    d2 = np.asarray(_sq_distances(stack([_tree(x)])))
    np.testing.assert_array_equal(_search(d2, 2)[0], np.arange(9) < 7)
    out = aggregators.minimum_diameter_averaging(_tree(x), num_byzantine=2)
    assert not np.isfinite(out["a"]).all()


def test_huge_finite_rows_are_infinitely_far():
    x = np.random.default_rng(1).normal(size=(7, 7))
    x[3], x[5] = 1e30, 2e30  # finite, but squares overflow: inf - inf = NaN
    expected_kept = ~np.isin(np.arange(7), [3, 5])
    out = aggregators.minimum_diameter_averaging(_tree(x), num_byzantine=2)
    chex.assert_trees_all_close(out, numpy_mean_of(_tree(x), expected_kept),
                                rtol=1e-5, atol=1e-6)
    d2 = np.asarray(_sq_distances(stack([_tree(x)])))
    assert not np.isnan(d2).any()
    np.testing.assert_array_equal(_search(d2, 2)[0], expected_kept)


def test_registry_and_auto_method():
    fn = aggregators.minimum_diameter_averaging
    for name in ("mda", "brute", "minimum_diameter_averaging", "MDA"):
        assert aggregators.get(name) is fn
    assert aggregators.entry("brute").name == "mda"
    assert _mda._resolve_method("auto", 12, 4) == "enumerate"  # C = 495
    assert _mda._resolve_method("auto", 15, 5) == "search"  # C = 3003


def test_errors():
    x = {"w": jnp.zeros((6, 2))}
    with pytest.raises(ValueError, match="n > 2f"):
        aggregators.minimum_diameter_averaging(x, num_byzantine=3)
    with pytest.raises(ValueError, match="n > 2f"):
        aggregators.check("mda", num_workers=6, num_byzantine=3)
    with pytest.raises(ValueError, match="method must be one of"):
        aggregators.minimum_diameter_averaging(x, num_byzantine=1, method="brute")
    with pytest.raises(ValueError, match="use method='search'"):
        aggregators.minimum_diameter_averaging(
            {"w": jnp.zeros((60, 2))}, num_byzantine=25, method="enumerate")
    with pytest.raises(TypeError, match="Python int"):
        aggregators.minimum_diameter_averaging(x, num_byzantine=1.0)


def test_jit_vmap_and_no_retrace():
    trees = make_inputs(9, seed=7)
    _, batched = _batched(4, "search")(stack(trees))  # jit(vmap(...))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def agg(x):
        return aggregators.minimum_diameter_averaging(x, num_byzantine=4,
                                                      method="search")

    for i, tree in enumerate(trees):
        chex.assert_trees_all_close(
            agg(tree), row(batched, i), rtol=1e-6)
    # Same shapes, new values: no retrace (assert_max_traces would raise).
    agg(jax.tree_util.tree_map(lambda x: x + 1.0, trees[0]))


def test_low_precision_dtypes():
    x = np.random.default_rng(2).normal(size=(7, 4))
    x[6] = 40.0
    for dtype in (jnp.bfloat16, jnp.float16):
        tree = {"w": jnp.asarray(x, dtype)}
        out = aggregators.minimum_diameter_averaging(tree, num_byzantine=2)
        assert out["w"].dtype == dtype
        assert not np.asarray(aggregators.minimum_diameter_subset(
            tree, num_byzantine=2))[6]


# ----------------------------------------------------------------------------
# Properties.

_SHAPES = [(5, 2), (9, 4), (16, 7)]


@functools.cache
def _aggregate_fn(f, method):
    return jax.jit(lambda x: aggregators.minimum_diameter_averaging(
        {"w": x}, num_byzantine=f, method=method)["w"])


@settings(max_examples=30, deadline=None)
@given(shape=st.sampled_from(_SHAPES), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([0.0, 1.0, 10.0, 1e4]),
       kind=st.sampled_from(["gaussian", "copy", "same", "inf"]))
def test_resilient_averaging_bound(shape, seed, scale, kind):
    # ||F(x) - mean(honest)|| <= 2f/(n-f) * diam(honest) for any Byzantine rows.
    n, f = shape
    rng = np.random.default_rng(seed)
    honest = rng.normal(size=(n - f, 6))
    byz = {"gaussian": rng.normal(size=(f, 6)) * scale + scale,
           "copy": honest[rng.integers(0, n - f, f)] * (1 + scale),
           "same": np.tile(honest.mean(0) + scale, (f, 1)),
           "inf": np.full((f, 6), np.inf)}[kind]
    x = np.concatenate([honest, byz])[rng.permutation(n)]
    out = np.asarray(_aggregate_fn(f, "auto")(jnp.asarray(x, jnp.float32)))
    diam = max(np.linalg.norm(a - b) for a in honest for b in honest)
    error = np.linalg.norm(out - honest.mean(0))
    slack = 1e-4 * (1 + np.abs(x[np.isfinite(x)]).max())  # float32 rounding
    assert error <= 2 * f / (n - f) * diam + slack


@settings(max_examples=20, deadline=None)
@given(shape=st.sampled_from(_SHAPES), seed=st.integers(0, 2**31 - 1))
def test_permutation_invariant_when_unique(shape, seed):
    n, f = shape
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) * rng.choice([1.0, 20.0], size=(n, 1))
    perm = rng.permutation(n)
    d2 = numpy_sq_distances({"w": x})
    table = np.array(list(itertools.combinations(range(n), n - f)))
    diameters = np.sort(d2[table[:, :, None], table[:, None, :]].max(axis=(1, 2)))
    if math.isclose(diameters[0], diameters[1], rel_tol=1e-4):
        return  # not a unique minimiser
    fn = _aggregate_fn(f, "auto")
    out = np.asarray(fn(jnp.asarray(x, jnp.float32)))
    out_perm = np.asarray(fn(jnp.asarray(x[perm], jnp.float32)))
    np.testing.assert_allclose(out, out_perm, rtol=1e-5, atol=1e-5)
    kept = enumerated_subset(d2, f)
    np.testing.assert_allclose(out, x[kept].mean(0), rtol=1e-5, atol=1e-5)
