"""Distance-based aggregators: Krum, Multi-Krum, geometric median, Bulyan,
centered clipping and NNM, against slow NumPy-loop references (float64).

Inputs are pytrees with two leaves of different shapes, so every distance must
be taken over all leaves together. Non-finite rows (+inf, -inf, NaN) are
"infinitely far" in the references too: the JAX rules must agree with them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators
from tests.helpers import (
    ref_bulyan_byzantine_momentum,
    ref_bulyan_selection,
    ref_cc,
    ref_geomed,
    ref_krum,
    ref_krum_scores,
    ref_mean_around_median,
    ref_multi_krum,
    ref_nnm,
    ref_order,
    ref_sq_dist,
)

LEAF_SHAPES = {"a": (3,), "b": (2, 2)}  # d = 7 over two leaves
D = 7
RTOL = 1e-5


# ----------------------------------------------------------------------------
# Helpers.


def make_tree(rng, n, scale=1.0, shift=0.0):
    return {k: (shift + scale * rng.standard_normal((n, *s))).astype(np.float32)
            for k, s in LEAF_SHAPES.items()}


def flat(tree):
    """[n, d] float64 concatenation of the leaves in tree_leaves order."""
    leaves = jax.tree_util.tree_leaves(tree)
    n = np.shape(leaves[0])[0]
    return np.concatenate([np.asarray(x, np.float64).reshape(n, -1) for x in leaves], 1)


def flat1(tree):
    return np.concatenate([np.asarray(x, np.float64).reshape(-1)
                           for x in jax.tree_util.tree_leaves(tree)])


def unflat1(vec):
    out, i = {}, 0
    for k in sorted(LEAF_SHAPES):
        size = int(np.prod(LEAF_SHAPES[k]))
        out[k] = vec[i:i + size].reshape(LEAF_SHAPES[k])
        i += size
    return out


def corrupt(tree, rows, kinds):
    """Puts +inf / -inf / NaN into the given rows (one entry or the whole row)."""
    tree = {k: np.array(v) for k, v in tree.items()}
    for r, kind in zip(rows, kinds):
        value = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}[kind]
        if kind == "nan":
            tree["b"][r, 1, 0] = value  # a single entry is enough
        else:
            tree["a"][r] = value
            tree["b"][r] = value
    return tree


def assert_close(actual_tree, expected_vec, rtol=RTOL, atol=1e-6):
    got = flat1(actual_tree)
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, expected_vec, rtol=rtol, atol=atol)


@functools.lru_cache(maxsize=None)
def jitted(fn, **static):
    return jax.jit(functools.partial(fn, **static))


def call(fn, tree, **static):
    """Jitted call, compiled once per (fn, static kwargs, shapes) across tests.

    Keyword arguments equal to None are dropped (they are the defaults), so
    equivalent calls share one compilation.
    """
    static = {k: v for k, v in static.items() if v is not None}
    return jitted(fn, **static)(jax.tree_util.tree_map(jnp.asarray, tree))


# ----------------------------------------------------------------------------
# NumPy references (plain loops, float64), written from the definitions.


# They live in tests/helpers.py, shared with the other tests.


# ----------------------------------------------------------------------------
# Krum / Multi-Krum.

KRUM_CASES = [(7, 1), (11, 2)]  # shared with the other tests (compilations)


@pytest.mark.parametrize("n,f", KRUM_CASES)
@pytest.mark.parametrize("neighbours", ["default", "byzfl"])
@pytest.mark.parametrize("squared", [True, False])
def test_krum_matches_reference(n, f, neighbours, squared):
    rng = np.random.default_rng(100 * n + f)
    k = None if neighbours == "default" else n - f - 1
    for _ in range(3):
        tree = make_tree(rng, n)
        out = call(aggregators.krum, tree, num_byzantine=f, num_neighbours=k,
                   squared=None if squared else False)
        assert_close(out, ref_krum(flat(tree), f, k, squared), rtol=0, atol=0)


def test_krum_options_change_the_choice():
    # 1-D points where n-f-2 vs n-f-1 neighbours and squared vs plain disagree.
    x = {"a": np.array([[0.0], [1.9], [2.0], [3.9], [4.0], [10.0]], np.float32)}
    def pick(**kw):
        return float(call(aggregators.krum, x, num_byzantine=1, **kw)["a"][0])
    def ref(**kw):
        return ref_krum(flat(x), 1, **kw)[0]
    assert pick() == ref() and pick(num_neighbours=4) == ref(k=4)
    assert pick(squared=False) == ref(squared=False)
    # The options are not no-ops on this input.
    options = [{}, {"num_neighbours": 1}, {"num_neighbours": 4, "squared": False}]
    assert len({pick(**kw) for kw in options}) > 1


@pytest.mark.parametrize("n,f", KRUM_CASES)
@pytest.mark.parametrize("m", [None, 2, "n"])
def test_multi_krum_matches_reference(n, f, m):
    rng = np.random.default_rng(7 * n + f)
    m = n if m == "n" else m
    tree = make_tree(rng, n)
    out = call(aggregators.multi_krum, tree, num_byzantine=f, num_selected=m)
    assert_close(out, ref_multi_krum(flat(tree), f, m))


def test_multi_krum_extremes_are_krum_and_mean():
    rng = np.random.default_rng(3)
    tree = make_tree(rng, 11)
    one = call(aggregators.multi_krum, tree, num_byzantine=2, num_selected=1)
    krum = call(aggregators.krum, tree, num_byzantine=2)
    assert_close(one, flat1(krum), rtol=0, atol=0)
    everyone = call(aggregators.multi_krum, tree, num_byzantine=2, num_selected=11)
    assert_close(everyone, flat(tree).mean(0))


@pytest.mark.parametrize("squared", [True, False])
def test_krum_scores_on_a_masked_subset(squared):
    rng = np.random.default_rng(11)
    x = flat(make_tree(rng, 9))
    valid = np.array([1, 0, 1, 1, 0, 1, 1, 1, 1], bool)
    d2 = jnp.asarray(ref_sq_dist(x), jnp.float32)
    for k in (1, 3, 5):
        got = aggregators.krum_scores(d2, num_byzantine=1, num_neighbours=k,
                                      valid=jnp.asarray(valid), squared=squared)
        np.testing.assert_allclose(got, ref_krum_scores(x, k, squared, valid),
                                   rtol=RTOL)
    # Default neighbours: (number of valid rows) - f - 2 = 7 - 1 - 2.
    got = aggregators.krum_scores(d2, num_byzantine=1, valid=jnp.asarray(valid))
    np.testing.assert_allclose(got, ref_krum_scores(x, 4, True, valid), rtol=RTOL)


@pytest.mark.parametrize("rule", [aggregators.krum, aggregators.multi_krum])
def test_krum_requires_2f_plus_3(rule):
    tree = make_tree(np.random.default_rng(0), 6)
    with pytest.raises(ValueError, match=r"n >= 2f\+3 \(n >= 7 for num_byzantine=2\)"):
        rule(tree, num_byzantine=2)
    with pytest.raises(ValueError, match=r"n >= 2f\+3"):
        aggregators.check(rule.__name__, num_workers=6, num_byzantine=2)
    rule(tree, num_byzantine=1)  # 6 >= 5: accepted
    with pytest.raises(ValueError, match="num_neighbours must be in"):
        rule(tree, num_byzantine=1, num_neighbours=6)


def test_multi_krum_rejects_bad_num_selected():
    tree = make_tree(np.random.default_rng(0), 5)
    for m in (0, 6):
        with pytest.raises(ValueError, match="num_selected"):
            aggregators.multi_krum(tree, num_byzantine=1, num_selected=m)


# ----------------------------------------------------------------------------
# Geometric median.


@pytest.mark.parametrize("n,f", [(5, 1), (8, 3)])
@pytest.mark.parametrize("init", ["mean", "zeros", "point"])
def test_geomed_fixed_iterations_match_reference(n, f, init):
    rng = np.random.default_rng(n + 10 * f)
    tree = make_tree(rng, n, shift=2.0)
    start = unflat1(rng.standard_normal(D).astype(np.float32))
    if init == "point":  # traced start
        fn = jax.jit(lambda t, s, z: aggregators.geometric_median(
            t, num_byzantine=f, num_iterations=6, tolerance=0.0, smoothing=s, init=z))
    else:
        fn = jax.jit(lambda t, s, z: aggregators.geometric_median(
            t, num_byzantine=f, num_iterations=6, tolerance=0.0, smoothing=s,
            init=init))
    for smoothing in (1e-6, 0.1, 3.0):  # traced: one compilation
        out = fn(tree, smoothing, start)
        ref_init = flat1(start) if init == "point" else init
        assert_close(out, ref_geomed(flat(tree), 6, 0.0, smoothing, ref_init))


@pytest.mark.parametrize("n,f", [(7, 1), (11, 2)])
def test_geomed_defaults_converge_to_the_geometric_median(n, f):
    rng = np.random.default_rng(5 * n + f)
    tree = make_tree(rng, n)
    x = flat(tree)
    x[n - f:] += 50.0  # far Byzantine rows
    tree = unflat_rows(x)
    out = call(aggregators.geometric_median, tree, num_byzantine=f)
    # Same stopping rule as the default, and run to convergence.
    assert_close(out, ref_geomed(x, 100, 1e-6, 1e-6), rtol=1e-5, atol=1e-5)
    assert_close(out, ref_geomed(x, 5000, 0.0, 1e-9), rtol=1e-4, atol=1e-4)
    # A few iterations are not enough: the early stop does not fire too soon.
    assert np.max(np.abs(ref_geomed(x, 2, 0.0, 1e-6) - flat1(out))) > 1e-3


def test_geomed_keeps_float32_accuracy_far_from_the_origin():
    # The Gram form loses ~eps * ||x||^2 absolutely; centred at the rows'
    # coordinate-wise median the error scales with their spread instead.
    # Rows at distance ~1e4 * sqrt(D) from the origin, spread ~1e-2: an
    # uncentred float32 Gram would put every distance in rounding noise.
    rng = np.random.default_rng(11)
    n, f = 9, 2
    x = 1e4 + 1e-2 * rng.standard_normal((n, D))
    x[n - f:] += 5.0  # Byzantine rows, far on the spread's scale
    tree = unflat_rows(x)
    x32 = flat(tree).astype(np.float64)
    out = flat1(call(aggregators.geometric_median, tree, num_byzantine=f,
                     num_iterations=8, tolerance=0.0))
    ref = ref_geomed(x32, 8, 0.0, 1e-6)
    # float32 spacing at 1e4 is ~1e-3: the result is within a few ulps of the
    # float64 iteration, i.e. far inside the honest spread.
    np.testing.assert_allclose(out, ref, rtol=0, atol=4e-3)
    assert np.max(np.abs(out - x32[:n - f].mean(0))) < 0.05


def test_geomed_with_a_coordinate_non_finite_in_most_rows():
    # Coordinate 0 is +inf in 3 of 5 rows: its median is infinite, the centre
    # is 0 there, and the result is the median of the 2 finite rows.
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5, D))
    x[:3, 0] = np.inf
    tree = unflat_rows(x)
    out = flat1(call(aggregators.geometric_median, tree, num_byzantine=2,
                     num_iterations=20, tolerance=0.0))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref_geomed(flat(tree), 20, 0.0, 1e-6),
                               rtol=1e-5, atol=1e-5)


def unflat_rows(x):
    n = len(x)
    out, i = {}, 0
    for k in sorted(LEAF_SHAPES):
        size = int(np.prod(LEAF_SHAPES[k]))
        out[k] = x[:, i:i + size].reshape(n, *LEAF_SHAPES[k]).astype(np.float32)
        i += size
    return out


def test_geomed_matches_byzfl_example():
    x = {"w": jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])}
    out = call(aggregators.geometric_median, x, init="zeros", num_iterations=3,
               smoothing=0.1, tolerance=0.0)
    # ByzFL's documented output for byzfl.GeometricMedian() on this input.
    np.testing.assert_allclose(out["w"], [3.78788764, 4.78788764, 5.78788764],
                               rtol=1e-6)


def test_geomed_zero_iterations_returns_the_start():
    tree = make_tree(np.random.default_rng(2), 5)
    out = call(aggregators.geometric_median, tree, num_iterations=0)
    assert_close(out, flat(tree).mean(0))
    zeros = call(aggregators.geometric_median, tree, num_iterations=0, init="zeros")
    assert_close(zeros, np.zeros(D), rtol=0, atol=0)
    with pytest.raises(ValueError, match="init must be one of"):
        aggregators.geometric_median(tree, init="median")


# ----------------------------------------------------------------------------
# Centered clipping.


@pytest.mark.parametrize("method", ["direct", "gram"])
@pytest.mark.parametrize("iters", [1, 3])
@pytest.mark.parametrize("with_center", [False, True])
def test_centered_clipping_matches_reference(method, iters, with_center):
    rng = np.random.default_rng(iters + 2 * with_center)
    n = 7
    tree = make_tree(rng, n, scale=2.0)
    center = unflat1(rng.standard_normal(D).astype(np.float32)) if with_center else None
    fn = jax.jit(functools.partial(aggregators.centered_clipping, num_byzantine=2,
                                   num_iterations=iters, method=method))
    for tau in (0.5, 3.0, 100.0):  # clips most, some, no rows
        out = fn(tree, center=center, radius=tau)
        expected = ref_cc(flat(tree), None if center is None else flat1(center),
                          tau, iters)
        assert_close(out, expected)


def test_centered_clipping_defaults_are_byzfl():
    # ByzFL: CenteredClipping(m=None, L=1, tau=100): one step from zeros.
    rng = np.random.default_rng(4)
    x = flat(make_tree(rng, 5, scale=40.0))
    out = call(aggregators.centered_clipping, unflat_rows(x))
    assert_close(out, ref_cc(x, None, 100.0, 1), rtol=1e-5, atol=1e-5)
    norms = np.sqrt((x ** 2).sum(1))
    assert norms.max() > 100.0 > norms.min()  # the radius matters here


def test_centered_clipping_radius_is_traced_and_vmappable():
    rng = np.random.default_rng(6)
    tree = make_tree(rng, 5, scale=3.0)
    radii = jnp.array([0.1, 1.0, 10.0])
    fn = jax.jit(jax.vmap(lambda r: aggregators.centered_clipping(
        tree, radius=r, num_iterations=2)))
    out = fn(radii)
    for i, r in enumerate([0.1, 1.0, 10.0]):
        expected = ref_cc(flat(tree), None, r, 2)
        got = {k: v[i] for k, v in out.items()}
        assert_close(got, expected)


# ----------------------------------------------------------------------------
# NNM.


@pytest.mark.parametrize("n,f", [(7, 0), (7, 1), (11, 2)])
def test_nnm_matches_reference(n, f):
    rng = np.random.default_rng(n * f + 1)
    tree = make_tree(rng, n)
    out = call(aggregators.nearest_neighbour_mixing, tree, num_byzantine=f)
    expected = ref_nnm(flat(tree), f)
    got = flat(out)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-6)
    w = call(aggregators.nearest_neighbour_weights, tree, num_byzantine=f)
    np.testing.assert_allclose(np.asarray(w).sum(1), 1.0, rtol=1e-6)
    assert np.all(np.sum(np.asarray(w) > 0, axis=1) == n - f)


def test_nnm_is_registered_as_a_preaggregator():
    assert aggregators.get_preaggregator("nnm") is aggregators.nearest_neighbour_mixing
    assert "nnm" not in aggregators.names()


# ----------------------------------------------------------------------------
# Bulyan.

def _np_coordinate_median_rule(updates, *, num_byzantine):
    del num_byzantine
    return jax.tree_util.tree_map(lambda x: jnp.median(x, axis=0), updates)


@pytest.mark.parametrize("n,f", [(7, 1), (11, 2)])
@pytest.mark.parametrize("kind", ["krum", "multi_krum", "krum_plain"])
def test_bulyan_selection_matches_reference(n, f, kind):
    rng = np.random.default_rng(n + f)
    squared = kind != "krum_plain"
    selection = "krum" if kind == "krum_plain" else kind
    for _ in range(2):
        tree = make_tree(rng, n)
        got = call(aggregators.bulyan_selection, tree, num_byzantine=f,
                   selection=None if selection == "krum" else selection,
                   squared=None if squared else False)
        expected = ref_bulyan_selection(flat(tree), f, selection, squared)
        assert list(np.asarray(got)) == expected


def test_bulyan_selection_with_generic_rules():
    rng = np.random.default_rng(21)
    tree = make_tree(rng, 7)
    x = flat(tree)
    got = jax.jit(functools.partial(aggregators.bulyan_selection, num_byzantine=1,
                                    selection=_np_coordinate_median_rule))(tree)
    expected = ref_bulyan_selection(x, 1, "generic",
                                    inner=lambda s: np.median(s, axis=0))
    assert list(np.asarray(got)) == expected
    got = jax.jit(functools.partial(
        aggregators.bulyan_selection, num_byzantine=1, selection="centered_clipping",
        selection_kwargs={"radius": 0.7}))(tree)
    expected = ref_bulyan_selection(
        x, 1, "generic", inner=lambda s: ref_cc(s, None, 0.7, 1))
    assert list(np.asarray(got)) == expected
    assert got.tolist() != ref_bulyan_selection(x, 1)  # differs from Krum's


def test_bulyan_recomputes_scores_after_each_pick():
    # ByzantineMomentum's bug: Krum scores computed once, never updated. Find
    # inputs where that order differs from recomputing, and check we recompute.
    rng = np.random.default_rng(0)
    n, f = 7, 1
    for _ in range(50):
        x = flat(make_tree(rng, n))
        x[:3] *= 0.2  # a tight cluster whose members lose neighbours as picked
        stale = ref_order(ref_krum_scores(x, n - f - 2))[:n - 2 * f]
        fresh = ref_bulyan_selection(x, f)
        if stale != fresh:
            break
    assert stale != fresh
    got = call(aggregators.bulyan_selection, unflat_rows(x), num_byzantine=f)
    assert list(np.asarray(got)) == fresh


def test_bulyan_requires_4f_plus_3():
    tree = make_tree(np.random.default_rng(0), 10)
    with pytest.raises(ValueError, match=r"n >= 4f\+3 \(n >= 11 for num_byzantine=2\)"):
        aggregators.bulyan_selection(tree, num_byzantine=2)
    with pytest.raises(ValueError, match=r"n >= 4f\+3"):
        aggregators.bulyan(tree, num_byzantine=2)
    with pytest.raises(ValueError, match=r"n >= 4f\+3"):
        aggregators.check("bulyan", num_workers=10, num_byzantine=2)
    aggregators.check("bulyan", num_workers=11, num_byzantine=2)
    with pytest.raises(ValueError, match="takes no selection_kwargs"):
        aggregators.bulyan_selection(tree, num_byzantine=1,
                                     selection_kwargs={"num_selected": 2})
    with pytest.raises(ValueError, match="unknown aggregator"):
        aggregators.bulyan_selection(tree, num_byzantine=1, selection="nope")


@pytest.mark.parametrize("selection", ["krum", "multi_krum"])
def test_bulyan_matches_reference(selection):
    rng = np.random.default_rng(8)
    for n, f in [(7, 1), (11, 2)]:
        tree = make_tree(rng, n)
        x = flat(tree)
        out = call(aggregators.bulyan, tree, num_byzantine=f, selection=selection)
        chosen = ref_bulyan_selection(x, f, selection)
        assert_close(out, ref_mean_around_median(x[chosen], n - 4 * f))


@pytest.mark.parametrize("n,f", [(7, 1), (11, 2), (16, 3)])
def test_bulyan_byzantine_momentum_variant_matches_reference(n, f):
    rng = np.random.default_rng(80 + n)
    tree = make_tree(rng, n)
    tree = corrupt(tree, [n - 1], ["inf"]) if f > 1 else tree
    out = call(aggregators.bulyan, tree, num_byzantine=f, variant="byzantine_momentum")
    assert_close(out, ref_bulyan_byzantine_momentum(flat(tree), f))


def test_bulyan_byzantine_momentum_variant_fixed_input():
    # n = 7, f = 1, one coordinate, worked by hand. Scores: sums of the plain
    # distances to the n - f - 2 = 4 nearest rows: 2.1, 1.8, 1.6, 2.0, 2.9,
    # 5.9, 32, so the ranking is rows 2, 1, 3, 0, 4, 5, 6. Selected
    # (n - 2f - 2 = 3): means of ranks 0..3, 1..3, 2..3 = rows {2, 1, 3, 0},
    # {1, 3, 0}, {3, 0}: 0.275, 0.2667, 0.35. Lower median 0.275; keep
    # n - 4f - 2 = 1 value: 0.275.
    x = {"w": jnp.array([[0.0], [0.1], [0.3], [0.7], [1.0], [2.0], [9.0]])}
    out = aggregators.bulyan(x, num_byzantine=1, variant="byzantine_momentum")
    np.testing.assert_allclose(out["w"], [0.275], rtol=1e-6)
    # the paper's Bulyan on the same input differs (rows 2, 3, 1, 4, 5 selected)
    paper = aggregators.bulyan(x, num_byzantine=1)
    np.testing.assert_allclose(paper["w"], [(0.3 + 0.7 + 1.0) / 3], rtol=1e-6)


def test_bulyan_variant_options_are_checked():
    x = {"w": jnp.zeros((7, 2))}
    with pytest.raises(ValueError, match="variant must be one of"):
        aggregators.bulyan(x, num_byzantine=1, variant="torch")
    with pytest.raises(ValueError, match="fixes its selection"):
        aggregators.bulyan(x, num_byzantine=1, variant="byzantine_momentum",
                           selection="multi_krum")
    with pytest.raises(ValueError, match="4f\\+3"):
        aggregators.bulyan(jnp.zeros((6, 2)), num_byzantine=1,
                           variant="byzantine_momentum")


# ----------------------------------------------------------------------------
# Non-finite rows: finite output, equal to the reference (which treats them as
# infinitely far).

@pytest.mark.parametrize("kinds", [["inf"], ["-inf", "nan"]])
def test_non_finite_rows(kinds):
    rng = np.random.default_rng(len(kinds))
    f = 2
    n = 11  # >= 4f + 3 for Bulyan
    tree = corrupt(make_tree(rng, n), rows=[3, 8][:len(kinds)], kinds=kinds)
    x = flat(tree)
    assert not np.all(np.isfinite(x))
    assert_close(call(aggregators.krum, tree, num_byzantine=f), ref_krum(x, f),
                 rtol=0, atol=0)
    assert_close(call(aggregators.multi_krum, tree, num_byzantine=f),
                 ref_multi_krum(x, f))
    assert_close(call(aggregators.geometric_median, tree, num_byzantine=f,
                      tolerance=0.0, num_iterations=8),
                 ref_geomed(x, 8, 0.0, 1e-6))
    assert_close(call(aggregators.centered_clipping, tree, num_byzantine=f,
                      radius=1.0), ref_cc(x, None, 1.0, 1))
    assert_close(call(aggregators.centered_clipping, tree, num_byzantine=f,
                      radius=1.0, num_iterations=3, method="gram"),
                 ref_cc(x, None, 1.0, 3))
    mixed = flat(call(aggregators.nearest_neighbour_mixing, tree, num_byzantine=f))
    assert np.all(np.isfinite(mixed))
    np.testing.assert_allclose(mixed, ref_nnm(x, f), rtol=RTOL, atol=1e-6)
    chosen = call(aggregators.bulyan_selection, tree, num_byzantine=f)
    assert list(np.asarray(chosen)) == ref_bulyan_selection(x, f)
    assert not {3, 8} & set(np.asarray(chosen).tolist())
    chosen = call(aggregators.bulyan_selection, tree, num_byzantine=f,
                  selection="multi_krum")  # same compilation as above tests
    assert list(np.asarray(chosen)) == ref_bulyan_selection(x, f, "multi_krum")
    out = call(aggregators.bulyan, tree, num_byzantine=f)
    assert_close(out, ref_mean_around_median(x[ref_bulyan_selection(x, f)],
                                             n - 4 * f))


def test_overflowing_finite_row_is_infinitely_far():
    rng = np.random.default_rng(9)
    tree = make_tree(rng, 7)
    tree["a"][6] = 3e38  # finite, but its squared norm overflows float32
    x = flat(tree)
    xs = x.copy()
    xs[6] = np.inf  # what the references should see
    assert_close(call(aggregators.krum, tree, num_byzantine=1), ref_krum(xs, 1),
                 rtol=0, atol=0)
    assert_close(call(aggregators.multi_krum, tree, num_byzantine=1),
                 ref_multi_krum(xs, 1))
    np.testing.assert_allclose(
        flat(call(aggregators.nearest_neighbour_mixing, tree, num_byzantine=1)),
        ref_nnm(xs, 1), rtol=RTOL, atol=1e-6)


def test_more_than_f_non_finite_rows_are_not_silently_dropped():
    rng = np.random.default_rng(10)
    tree = corrupt(make_tree(rng, 5), rows=[0, 1, 2], kinds=["inf", "nan", "inf"])
    out = call(aggregators.multi_krum, tree, num_byzantine=1)  # averages 4 rows
    assert not np.all(np.isfinite(flat1(out)))
    mixed = flat(call(aggregators.nearest_neighbour_mixing, tree, num_byzantine=1))
    assert np.all(np.isnan(mixed).any(axis=1))  # every hood holds a bad row


@pytest.mark.parametrize("blocked", [True, False])
def test_blocked_gram_on_wide_leaves(monkeypatch, blocked):
    from byzjax import _tree

    if blocked:  # every leaf wider than two blocks takes the blocked loop
        monkeypatch.setattr(_tree, "_GRAM_SINGLE_MAX", 0)

    def blocked_gram(*args):  # a new function per test: traced afresh
        return _tree.gram(*args)

    rng = np.random.default_rng(15)
    n = 5
    # One leaf of 2 full 8192-column blocks plus a tail, one narrow leaf.
    tree = {"a": rng.standard_normal((n, 2 * 8192 + 37)).astype(np.float32),
            "b": rng.standard_normal((n, 3)).astype(np.float32)}
    center = {"a": rng.standard_normal(2 * 8192 + 37).astype(np.float32),
              "b": rng.standard_normal(3).astype(np.float32)}
    x, c = flat(tree), flat1(center)
    np.testing.assert_allclose(jax.jit(blocked_gram)(tree), x @ x.T, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(blocked_gram)(tree, center),
                               (x - c) @ (x - c).T, rtol=1e-5)
    tree["a"][2, 9000] = np.nan  # only row and column 2 are affected
    g = np.asarray(jax.jit(blocked_gram)(tree))
    assert np.all(np.isnan(g[2])) and np.all(np.isnan(g[:, 2]))
    keep = [0, 1, 3, 4]
    np.testing.assert_allclose(g[np.ix_(keep, keep)], (x @ x.T)[np.ix_(keep, keep)],
                               rtol=1e-5)
    # Krum over the wide tree agrees with the reference (row 2 infinitely far).
    xs = flat(tree)
    assert_close(jax.jit(functools.partial(aggregators.krum, num_byzantine=1))(tree),
                 ref_krum(xs, 1), rtol=0, atol=0)


# ----------------------------------------------------------------------------
# jit / vmap, registry.

ALL_AGGREGATORS = {
    "krum": {},
    "multi_krum": {},
    "geometric_median": {},
    "centered_clipping": {"radius": 1.0},
}


@pytest.mark.parametrize("name", sorted(ALL_AGGREGATORS))
def test_vmap_over_stacks_matches_single_calls(name):
    rng = np.random.default_rng(12)
    trees = [make_tree(rng, 7) for _ in range(3)]
    batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)
    fn = functools.partial(aggregators.get(name), num_byzantine=2,
                           **ALL_AGGREGATORS[name])
    out = jax.jit(jax.vmap(fn))(batch)
    single = jax.jit(fn)
    for i, tree in enumerate(trees):
        expected = flat1(single(tree))
        assert_close({k: v[i] for k, v in out.items()}, expected, rtol=1e-5)


def test_vmap_bulyan_selection_and_nnm():
    rng = np.random.default_rng(13)
    trees = [make_tree(rng, 7) for _ in range(3)]
    batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)
    sel = jax.jit(jax.vmap(functools.partial(aggregators.bulyan_selection,
                                             num_byzantine=1)))(batch)
    mixed = jax.jit(jax.vmap(functools.partial(aggregators.nearest_neighbour_mixing,
                                               num_byzantine=2)))(batch)
    for i, tree in enumerate(trees):
        assert list(np.asarray(sel[i])) == ref_bulyan_selection(flat(tree), 1)
        np.testing.assert_allclose(flat({k: v[i] for k, v in mixed.items()}),
                                   ref_nnm(flat(tree), 2), rtol=RTOL, atol=1e-6)


def test_geomed_float_hyperparameters_are_vmappable():
    rng = np.random.default_rng(14)
    tree = make_tree(rng, 6)
    smooth = jnp.array([1e-6, 0.5, 2.0])
    out = jax.jit(jax.vmap(lambda s: aggregators.geometric_median(
        tree, smoothing=s, tolerance=0.0, num_iterations=5)))(smooth)
    for i, s in enumerate([1e-6, 0.5, 2.0]):
        assert_close({k: v[i] for k, v in out.items()},
                     ref_geomed(flat(tree), 5, 0.0, s))
    tols = jnp.array([0.0, 1e-2])  # different stopping steps inside one vmap
    out = jax.jit(jax.vmap(lambda t: aggregators.geometric_median(
        tree, tolerance=t, num_iterations=50)))(tols)
    for i, t in enumerate([0.0, 1e-2]):
        assert_close({k: v[i] for k, v in out.items()},
                     ref_geomed(flat(tree), 50, t, 1e-6), rtol=1e-5, atol=1e-5)


def test_registry_entries():
    for name, min_workers in [("krum", 2 * 3 + 3), ("multi_krum", 9),
                              ("bulyan", 4 * 3 + 3), ("geometric_median", 7),
                              ("centered_clipping", 7)]:
        assert aggregators.entry(name).min_workers(3) == min_workers, name
    assert aggregators.entry("centered_clipping").stateful
    assert not aggregators.entry("krum").stateful
    assert aggregators.get("geomed") is aggregators.geometric_median
    assert aggregators.get("cc") is aggregators.centered_clipping
    assert aggregators.entry("nnm").min_workers(2) == 5


# ----------------------------------------------------------------------------
# Properties (hypothesis): permutation invariance, all-honest-equal, and
# Byzantine rows that cannot move the output far.

PROP_CASES = [(7, 1), (11, 2)]


def _prop_inputs(seed, case):
    n, f = PROP_CASES[case]
    rng = np.random.default_rng(seed)
    return n, f, rng, make_tree(rng, n)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), case=st.integers(0, len(PROP_CASES) - 1))
def test_property_permutation_invariance(seed, case):
    n, f, rng, tree = _prop_inputs(seed, case)
    perm = rng.permutation(n)
    shuffled = {k: v[perm] for k, v in tree.items()}
    for name, kw in ALL_AGGREGATORS.items():
        a = call(aggregators.get(name), tree, num_byzantine=f, **kw)
        b = call(aggregators.get(name), shuffled, num_byzantine=f, **kw)
        np.testing.assert_allclose(flat1(a), flat1(b), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    sel = call(aggregators.bulyan_selection, tree, num_byzantine=f)
    sel_p = call(aggregators.bulyan_selection, shuffled, num_byzantine=f)
    assert sorted(perm[np.asarray(sel_p)].tolist()) == sorted(np.asarray(sel).tolist())
    mixed = flat(call(aggregators.nearest_neighbour_mixing, tree, num_byzantine=f))
    mixed_p = flat(call(aggregators.nearest_neighbour_mixing, shuffled,
                        num_byzantine=f))
    np.testing.assert_allclose(mixed_p, mixed[perm], rtol=1e-5, atol=1e-6)


_cc_from = jax.jit(
    lambda tree, center, num_byzantine: aggregators.centered_clipping(
        tree, num_byzantine=num_byzantine, center=center, radius=0.5),
    static_argnames="num_byzantine")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), case=st.integers(0, len(PROP_CASES) - 1),
       attack=st.sampled_from(["far", "inf", "nan", "close"]))
def test_property_all_honest_equal_gives_that_row(seed, case, attack):
    n, f, rng, tree = _prop_inputs(seed, case)
    honest = flat(tree)[0]
    x = np.tile(honest, (n, 1))
    if attack == "far":
        x[n - f:] = honest + 1e3 * rng.standard_normal((f, D))
    elif attack == "close":
        x[n - f:] = honest + 1e-2 * rng.standard_normal((f, D))
    else:
        x[n - f:] = np.inf if attack == "inf" else np.nan
    tree = unflat_rows(x)
    honest = flat(tree)[0]  # float32-rounded
    out = call(aggregators.krum, tree, num_byzantine=f)
    np.testing.assert_array_equal(flat1(out), honest)
    out = call(aggregators.multi_krum, tree, num_byzantine=f)
    np.testing.assert_allclose(flat1(out), honest, rtol=1e-5, atol=0)
    out = call(aggregators.geometric_median, tree, num_byzantine=f)
    np.testing.assert_allclose(flat1(out), honest, rtol=1e-5, atol=1e-5)
    sel = np.asarray(call(aggregators.bulyan_selection, tree, num_byzantine=f))
    assert set(sel.tolist()) <= set(range(n - f))
    mixed = flat(call(aggregators.nearest_neighbour_mixing, tree, num_byzantine=f))
    np.testing.assert_allclose(mixed[:n - f], np.tile(honest, (n - f, 1)),
                               rtol=1e-5, atol=0)
    assert np.all(np.isfinite(mixed))
    # Centered clipping from the honest point moves at most f * radius / n.
    center = unflat1(honest.astype(np.float32))
    out = _cc_from(tree, center, num_byzantine=f)
    assert np.linalg.norm(flat1(out) - honest) <= f * 0.5 / n * (1 + 1e-5) + 1e-6


def test_weighted_rows_keep_vector_and_matrix_paths():
    """The one row-combination kernel: a weight vector (unrolled fused sum) and
    a weight matrix (matmul with the non-finite fallback) against NumPy; rows
    outside ``keep`` count as zeros whatever they hold, ``nan_rows`` poisons
    the output rows that mixed them in."""
    from byzjax._tree import pairwise_sq_distances, weighted_rows

    rng = np.random.default_rng(16)
    tree = make_tree(rng, 6)
    x = flat(tree)
    w = rng.random(6).astype(np.float32)
    wm = rng.random((3, 6)).astype(np.float32)
    keep = np.array([True, True, False, True, True, False])
    vec = jax.jit(lambda t, w, k: weighted_rows(t, w, keep=k))
    mat = jax.jit(lambda t, w, k, p: weighted_rows(t, w, keep=k, nan_rows=p))
    np.testing.assert_allclose(flat1(vec(tree, w, keep)), (w * keep) @ x, rtol=1e-5,
                               atol=1e-6)
    # Rows outside keep count as zeros even when finite; all kept: the matmul.
    np.testing.assert_allclose(flat(mat(tree, wm, keep, np.zeros(3, bool))),
                               (wm * keep) @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat(mat(tree, wm, np.ones(6, bool), np.zeros(3, bool))),
                               wm @ x, rtol=1e-5, atol=1e-6)
    bad = corrupt(tree, rows=[2, 5], kinds=["inf", "nan"])
    wz, wmz = w * keep, wm * keep
    np.testing.assert_allclose(flat1(vec(bad, wz, keep)), wz @ x, rtol=1e-5, atol=1e-6)
    poison = np.array([False, True, False])
    got = flat(mat(bad, wmz, keep, poison))
    assert np.all(np.isnan(got[1]))
    np.testing.assert_allclose(got[[0, 2]], (wmz @ x)[[0, 2]], rtol=1e-5, atol=1e-6)
    # Distances with the finite mask: the corrupted rows are infinitely far.
    d2, finite = pairwise_sq_distances(bad, with_finite=True)
    assert finite.tolist() == keep.tolist()
    d2 = np.asarray(d2)
    assert np.all(np.isinf(d2[2, [0, 1, 3, 4, 5]])) and d2[2, 2] == 0
    ok = [0, 1, 3, 4]
    ref = ((x[ok][:, None] - x[ok][None]) ** 2).sum(-1)
    np.testing.assert_allclose(d2[np.ix_(ok, ok)], ref, rtol=1e-4, atol=1e-4)
