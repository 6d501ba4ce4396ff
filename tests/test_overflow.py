"""Rules stay finite and correct where inputs and the true answer are finite.

Rows of magnitude 1e20 .. 3e38 overflow squared norms and sums in float32;
each rule is checked against a float64 NumPy reference (tests/helpers.py) on
such inputs, and the rescue is checked to leave ordinary results bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators
from byzjax._tree import sum_rows
from byzjax.aggregators import _geomed
from byzjax.aggregators._networks import tree_sum, trimmed_values
from tests import helpers as H


def per_coordinate(ref, x, *args):
    return np.array([ref(list(x[:, j]), *args) for j in range(x.shape[1])])


# name -> (kwargs, float64 reference on [n, d]); f = 2 for n = 9.
F = 2
RULES = {
    "mean": ({}, H.ref_mean),
    "trimmed_mean": ({"num_byzantine": F},
                     lambda x: per_coordinate(H.ref_trimmed, x, F)),
    "coordinate_median": ({"num_byzantine": F},
                          lambda x: per_coordinate(H.ref_median, x)),
    "meamed": ({"num_byzantine": F}, lambda x: per_coordinate(H.ref_meamed, x, F)),
    "phocas": ({"num_byzantine": F}, lambda x: per_coordinate(H.ref_phocas, x, F)),
    "krum": ({"num_byzantine": F}, lambda x: H.ref_krum(x, F)),
    "multi_krum": ({"num_byzantine": F}, lambda x: H.ref_multi_krum(x, F)),
    "mda": ({"num_byzantine": F}, lambda x: H.ref_mda(x, F)),
    "bulyan": ({"num_byzantine": 1}, lambda x: H.ref_bulyan(x, 1)),
    "geometric_median": ({"num_byzantine": F, "num_iterations": 50,
                          "tolerance": 0.0},
                         lambda x: H.ref_geomed(x, 50, 0.0, 1e-6)),
}


def run(name, x, **extra):
    kwargs, _ = RULES[name]
    return np.asarray(aggregators.get(name)({"w": jnp.asarray(x)}, **kwargs,
                                            **extra)["w"], np.float64)


def _base(seed, n=9, d=6):
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize("scale", [1e20, 1e37, 1e38])
@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_matches_float64_reference_on_huge_rows(name, scale):
    x = (_base(1) * scale).astype(np.float32)
    got = run(name, x)
    # The geometric median gets its smoothing scaled with the rows.
    if name == "geometric_median":
        want = H.ref_geomed(x.astype(np.float64), 50, 0.0, 1e-6 * scale)
        got = run(name, x, smoothing=1e-6 * scale)
    else:
        want = RULES[name][1](x.astype(np.float64))
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5 * scale)


COORDINATE = ("mean", "trimmed_mean", "coordinate_median", "meamed", "phocas")


@pytest.mark.parametrize("name", COORDINATE + ("bulyan",))
def test_values_near_the_largest_float(name):
    # Sums and distances of these overflow float32; every answer is finite.
    x = (np.random.default_rng(2).uniform(-1, 1, size=(9, 5)) * 3e38).astype(
        np.float32)
    got = run(name, x)
    want = RULES[name][1](x.astype(np.float64))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e33)


def test_geometric_median_near_the_largest_float():
    x = (np.random.default_rng(3).uniform(-1, 1, size=(9, 5)) * 3e38).astype(
        np.float32)
    got = run("geometric_median", x, smoothing=1e30)
    want = H.ref_geomed(x.astype(np.float64), 50, 0.0, 1e30)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e34)


@pytest.mark.parametrize("scale,radius,method", [(1e20, 1e20, "direct"),
                                                 (1e20, 1.0, "gram"),
                                                 (5e37, 1e37, "direct")])
def test_centered_clipping_huge_rows(scale, radius, method):
    # Squared distances overflow float32; the clipped steps are still taken.
    x = (_base(4, n=5) * scale).astype(np.float32)
    x[4] = np.inf  # a non-finite row beside them: still excluded
    iters = 3 if method == "gram" else 1
    got = np.asarray(aggregators.centered_clipping(
        {"w": jnp.asarray(x)}, radius=radius, num_iterations=iters,
        method=method)["w"], np.float64)
    want = H.ref_cc(x.astype(np.float64), None, radius, iters)
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * radius)


# ------------------------------------------------------- bit-identical paths
@pytest.mark.parametrize("seed", range(4))
def test_mean_and_trimmed_mean_are_bit_identical_to_the_plain_formulas(seed):
    rng = np.random.default_rng(seed)
    x = {"w": jnp.asarray(rng.normal(size=(11, 300)), jnp.float32)}
    for fn in (lambda u: u, jax.jit):
        plain = jax.tree.map(lambda s: s / 11, sum_rows(x))["w"]
        assert np.array_equal(fn(aggregators.mean)(x)["w"], plain)
        rows = [x["w"][i] for i in range(11)]
        plain_tm = tree_sum(trimmed_values(rows, 3)) / 5
        got = fn(lambda u: aggregators.trimmed_mean(u, num_byzantine=3))(x)["w"]
        assert np.array_equal(got, plain_tm)


@pytest.mark.parametrize("seed", range(3))
def test_geometric_median_rescue_leaves_ordinary_results_unchanged(seed,
                                                                   monkeypatch):
    rng = np.random.default_rng(seed)
    x = {"w": jnp.asarray(rng.normal(size=(9, 40)), jnp.float32)}
    x["w"] = x["w"].at[-1].set(jnp.inf if seed else jnp.nan)
    got = jax.jit(lambda u: aggregators.geometric_median(u, num_byzantine=2))(x)
    monkeypatch.setattr(_geomed, "_gram_or_scaled",
                        lambda u, c: (_geomed.blocked_gram(u, c),
                                      jnp.ones((), jnp.float32)))
    plain = jax.jit(lambda u: aggregators.geometric_median(u, num_byzantine=2))(x)
    assert np.array_equal(got["w"], plain["w"])


# --------------------------------------------------- NaN inputs: NaN, not +inf
def test_too_many_nans_give_nan_not_inf():
    x = np.full((5, 3), np.nan, np.float32)
    x[:, 2] = [1.0, 2.0, 3.0, np.nan, np.nan]  # 2 NaN > f = 1
    x[:3, 1] = [1.0, 2.0, 3.0]
    x[3, 1] = 4.0  # column 1: one NaN <= f = 1
    for name in ("trimmed_mean", "coordinate_median", "meamed", "phocas"):
        out = np.asarray(aggregators.get(name)({"w": jnp.asarray(x)},
                                               num_byzantine=1)["w"])
        assert np.isnan(out[0]), name  # all NaN
        assert np.isfinite(out[1]), name
        if name != "coordinate_median":  # the median of 1, 2, 3, +inf, +inf is 3
            assert np.isnan(out[2]), name
    # Genuine +inf values (no NaN) still give +inf.
    y = np.array([[1.0], [np.inf], [np.inf]], np.float32)
    assert aggregators.trimmed_mean({"w": jnp.asarray(y)},
                                    num_byzantine=0)["w"][0] == np.inf


# ------------------------------------------------------------- hypothesis
# Powers of two: the integers stay exact, so ties are exact in float32 and
# float64 alike; 2**123 * 8 * 9 rows overflows a float32 sum.
HUGE = st.sampled_from([1.0, 2.0 ** 60, 2.0 ** 100, 2.0 ** 120, 2.0 ** 123])


@st.composite
def stacks(draw):
    n = draw(st.integers(5, 9))
    d = draw(st.integers(1, 4))
    ints = draw(st.lists(st.lists(st.integers(-8, 8), min_size=d, max_size=d),
                         min_size=n, max_size=n))
    x = np.asarray(ints, np.float64)
    for i in draw(st.lists(st.integers(0, n - 1), max_size=3)):  # duplicated rows
        x[i] = x[0]
    return x * draw(HUGE)


@settings(max_examples=25, deadline=None)
@given(x=stacks())
def test_coordinate_rules_on_ties_and_huge_integers(x):
    x32 = x.astype(np.float32)
    f = (len(x) - 1) // 2 - 1
    for name, ref in (("mean", H.ref_mean),
                      ("trimmed_mean", lambda v: per_coordinate(H.ref_trimmed, v, f)),
                      ("coordinate_median",
                       lambda v: per_coordinate(H.ref_median, v)),
                      ("meamed", lambda v: per_coordinate(H.ref_meamed, v, f)),
                      ("phocas", lambda v: per_coordinate(H.ref_phocas, v, f))):
        kwargs = {} if name == "mean" else {"num_byzantine": f}
        got = np.asarray(aggregators.get(name)({"w": jnp.asarray(x32)},
                                               **kwargs)["w"], np.float64)
        want = ref(x32.astype(np.float64))
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got, want, rtol=1e-5,
                                   atol=1e-6 * np.abs(x32).max(), err_msg=name)
