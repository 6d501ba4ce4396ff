"""ARC, MoNNA, SMEA and CAF (the ByzFL 0.0.11 catalogue) against their definitions.

* fixed inputs whose expected outputs were computed by hand or with NumPy from
  ByzFL 0.0.11's definitions (``byzfl/aggregators/aggregators.py`` and
  ``preaggregators.py``), hard-coded below with how each was derived;
* the NumPy references of ``tests/helpers.py`` on tie-heavy inputs (repeated
  integer rows, identical Byzantine rows, non-finite rows) for larger ``(n, f)``
  than ``tests/test_ties.py`` uses, MoNNA with every pivot;
* ``f = 0``, identical honest rows, non-finite rows, jit + vmap and no retrace
  at ``n = 15, f = 4``, gradients, SMEA's subset limit, the simulator's checks.

Compiling dominates the time: the four rules run in one jitted program per
``(n, f)`` (:func:`_rules`), and the inputs share a few shapes.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators, optim, sim
from tests import helpers as H
from tests.test_ties import BAD_KINDS, attack_like

DISTANCE = tuple(k for k in BAD_KINDS if k != "huge")


def pivots(n):
    """The MoNNA pivots checked: first, middle, last row."""
    return (0, n // 2, n - 1)


def _all_rules(t, f):
    """Every rule of the catalogue on one stack ``{"w": [n, d]}``: ARC's rows,
    MoNNA around each of :func:`pivots` (``[3, d]``), SMEA, CAF (``[d]``)."""
    n = t["w"].shape[0]
    return {
        "arc": aggregators.adaptive_robust_clipping(t, num_byzantine=f)["w"],
        "monna": jnp.stack([aggregators.monna(t, num_byzantine=f, pivot=p)["w"]
                            for p in pivots(n)]),
        "smea": aggregators.smallest_maximum_eigenvalue_averaging(
            t, num_byzantine=f)["w"],
        "caf": aggregators.covariance_bound_agnostic_filter(t, num_byzantine=f)["w"],
    }


@functools.lru_cache(maxsize=None)
def _rules(f):
    """One jitted program per ``f`` (and input shape): name -> output."""
    return jax.jit(functools.partial(_all_rules, f=f))


def run(x, f):
    out = _rules(f)({"w": jnp.asarray(x, jnp.float32)})
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


# ------------------------------------------------------------- fixed inputs

# ByzFL's docstring examples all use these three rows.
X3 = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
# Seven points: a square, its centre and two far rows (n = 7, f = 2).
SQUARE = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [1.0, 1.0], [9.0, -3.0],
          [-3.0, 9.0]]


def test_byzfl_docstring_examples():
    """ByzFL 0.0.11's docstring rows, f = 1 on X3. ARC, MoNNA and CAF: the
    values ByzFL 0.0.11 itself returns on them (checked by running it)."""
    out = run(X3, 1)
    # ARC(1): k = int(2/3 * 2) = 1 row clipped, to the radius ||(4,5,6)|| =
    # sqrt(77): (7,8,9) * sqrt(77/194) = (4.41004009, 5.04004582, 5.67005155).
    np.testing.assert_allclose(out["arc"], [[1, 2, 3], [4, 5, 6], [
        4.4100400915, 5.0400458188, 5.6700515462]], rtol=1e-6)
    # MoNNA(1, 1): rows 0 and 2 are both sqrt(27) from row 1; ByzFL's
    # argpartition and byzjax (lowest index) both take row 0.
    np.testing.assert_allclose(out["monna"][1], [2.5, 3.5, 4.5], rtol=1e-6)  # pivot 1
    # SMEA(1): {0,1} and {1,2} tie (scatter eigenvalue 13.5), {0,2} is 4x
    # larger; the first subset, {0,1}. (ByzFL 0.0.11's one random power step
    # breaks the tie either way: run with 3 seeds it returned both means.)
    np.testing.assert_allclose(out["smea"], [2.5, 3.5, 4.5], rtol=1e-6)
    # CAF(1): one step, mean (4,5,6), eigenvalue 18, tau = (27, 0, 27): both
    # ends go to weight 0, the sum 1 <= n - 2f = 1 stops the loop.
    np.testing.assert_allclose(out["caf"], [4.0, 5.0, 6.0], rtol=1e-6)


# Inputs of 7 rows in the plane, f = 2 (one compiled program for all).
SEVEN = {
    "square": SQUARE,
    # ARC: k = int(4/7 * 5) = 2, norms 5, 1, 10, 2, 13, 0, 0: radius 5.
    "arc": [[3, 4], [0, 1], [6, 8], [0, -2], [-5, 12], [0, 0], [0, 0]],
    # ARC: four rows of norm 5 tied at the radius.
    "arc_ties": [[3, 4], [4, 3], [0, 5], [-5, 0], [1, 0], [0, 0], [0, 0]],
    # MoNNA around row 3.
    "monna": [[0, 0], [1, 0], [0, 2], [1.5, 1], [10, 10], [3, 3], [-4, -4]],
    # SMEA: the unit square and its centre, plus (4, 4) and (-1, 5).
    "smea": [[0, 0], [1, 0], [0, 1], [1, 1], [4, 4], [-1, 5], [0.5, 0.5]],
    # A non-finite pivot (row 0).
    "nan_pivot": [[np.nan, 0], [0, 0], [1, 0], [0.5, 0], [9, 9], [2, 0], [-9, 9]],
    # More than f non-finite rows.
    "three_bad": [[np.inf, 0], [np.nan, 0], [1, 1], [2, 2], [3, 3], [4, 4],
                  [-np.inf, 1]],
    # CAF: a line of four, a row beside it, two far rows.
    "caf": [[0, 0], [1, 0], [2, 0], [3, 0], [1.5, 1], [100, 0], [100, 2]],
}


@pytest.fixture(scope="module")
def seven():
    return {name: run(x, 2) for name, x in SEVEN.items()}


def test_arc_on_fixed_inputs(seven):
    # SQUARE: radius ||(2, 2)|| = sqrt(8); the far rows become (9, -3) *
    # sqrt(8/90) = (2.6832815730, -0.8944271910) and its mirror image.
    want = SQUARE[:5] + [[2.6832815730, -0.8944271910], [-0.8944271910, 2.6832815730]]
    np.testing.assert_allclose(seven["square"]["arc"], want, rtol=1e-6, atol=1e-7)
    # (6, 8) -> (3, 4) and (-5, 12) -> (-25/13, 60/13); the rest unchanged.
    want = np.array(SEVEN["arc"], float)
    want[2], want[4] = [3, 4], [-25 / 13, 60 / 13]
    np.testing.assert_allclose(seven["arc"]["arc"], want, rtol=1e-6)
    # Ties at the radius 5: clipping the k = 2 "largest" of them changes
    # nothing, whichever two a sort puts first.
    np.testing.assert_array_equal(seven["arc_ties"]["arc"], SEVEN["arc_ties"])
    for name in ("square", "arc", "arc_ties"):
        np.testing.assert_allclose(H.ref_arc(np.array(SEVEN[name], float), 2),
                                   seven[name]["arc"], rtol=1e-6, atol=1e-7)


def test_monna_on_fixed_inputs(seven):
    # Around (1.5, 1) (pivot 3): itself, (1, 0) at 1.118, (0, 0) and (0, 2)
    # both at 1.803, (3, 3) at 2.5: ((1.5 + 1 + 3), (1 + 2 + 3)) / 5.
    np.testing.assert_allclose(seven["monna"]["monna"][1], [1.1, 1.2], rtol=1e-6)
    # SQUARE around (0, 0) or (2, 2): the five square rows.
    np.testing.assert_allclose(seven["square"]["monna"][:2], [[1, 1], [1, 1]],
                               rtol=1e-6)
    # A NaN pivot takes the neighbourhood of the most central finite row:
    # sums of squared distances to the 4 nearest others are 167.25, 147.25,
    # 156, 137.25 for (0,0), (1,0), (0.5,0), (2,0): (2, 0), whose 5 nearest
    # are itself, (1,0), (0.5,0), (0,0), (9,9): (12.5, 9) / 5.
    np.testing.assert_allclose(seven["nan_pivot"]["monna"][0], [2.5, 1.8], rtol=1e-6)
    for name in ("monna", "square", "nan_pivot"):
        x = np.array(SEVEN[name], float)
        want = [H.ref_monna(x, 2, p) for p in pivots(7)]
        np.testing.assert_allclose(seven[name]["monna"], want, rtol=1e-6, atol=1e-6)


def test_smea_on_fixed_inputs(seven):
    # The square and its centre: covariance 0.2 I (a repeated top
    # eigenvalue); every other subset holds a far row.
    np.testing.assert_allclose(seven["smea"]["smea"], [0.5, 0.5], rtol=1e-6)
    # SQUARE: the square and its centre (eigenvalue 0.8, repeated).
    np.testing.assert_allclose(seven["square"]["smea"], [1.0, 1.0], rtol=1e-6)
    for name in ("smea", "square"):
        np.testing.assert_allclose(H.ref_smea(np.array(SEVEN[name], float), 2),
                                   seven[name]["smea"], rtol=1e-6)
    # Three non-finite rows > f: every subset is infinite, the first one
    # (rows 0..4) is kept and its IEEE mean is NaN in x, (0+0+1+2+3)/5 in y.
    got = seven["three_bad"]["smea"]
    assert np.isnan(got[0]) and got[1] == pytest.approx(1.2)


def test_caf_on_fixed_inputs(seven):
    # SQUARE, ByzFL's loop with exact eigenpairs: step 1 (eigenvalue 21.14)
    # zeroes both far rows, leaving weights (1, 35/36, 35/36, 1, 1); step 2
    # (eigenvalue 0.809, repeated) has the mean (1, 1) by symmetry and is the
    # least. Both tau_max conventions give it.
    np.testing.assert_allclose(seven["square"]["caf"], [1.0, 1.0], rtol=1e-6)
    for positive_max in (True, False):
        np.testing.assert_allclose(
            H.ref_caf(np.array(SQUARE), 2, positive_max=positive_max), [1, 1])
    # Three non-finite rows: CAF filters the four finite ones.
    assert np.all(np.isfinite(seven["three_bad"]["caf"]))


def test_caf_takes_tau_max_over_the_rows_still_weighted(seven):
    # SEVEN["caf"], f = 2: both conventions zero the far rows first. ByzFL
    # 0.0.11 then divides by tau_max over every row, a far row's: the others
    # lose a tiny fraction of their weight per step, for 4,103 steps, and
    # the mean of least eigenvalue is (1.515207012097, 0.279980792089).
    # byzjax divides by the largest tau among the rows still weighted: each
    # step zeroes a row, and the answer is (1.513539253047, 0.200086286712).
    # (NumPy loops with exact eigenpairs; ByzFL's with strict comparisons,
    # as it is written: byzjax's eigenvalue tie tolerance would stop at an
    # earlier one of its slowly decreasing steps.)
    x = np.array(SEVEN["caf"], float)
    np.testing.assert_allclose(H.ref_caf(x, 2, rtol=0.0, positive_max=False),
                               [1.515207012097, 0.279980792089], rtol=1e-9)
    np.testing.assert_allclose(H.ref_caf(x, 2), [1.513539253047, 0.200086286712],
                               rtol=1e-9)
    np.testing.assert_allclose(seven["caf"]["caf"], [1.513539253047, 0.200086286712],
                               rtol=1e-5)


# ------------------------------------------------- references on tie-heavy inputs

REFERENCES = {"smea": H.ref_smea, "caf": H.ref_caf}


def _check_all(x, f):
    """Every rule against its NumPy reference on ``x`` ``[n, 2]``."""
    out = run(x, f)
    x64 = x.astype(np.float64)
    scale = np.max(np.abs(x[np.isfinite(x)]), initial=1.0)
    tol = dict(rtol=1e-5, atol=1e-5 * scale, err_msg=f"n={len(x)} f={f}\n{x!r}")
    np.testing.assert_allclose(out["arc"], H.ref_arc(x64, f), **tol)
    for i, p in enumerate(pivots(len(x))):
        np.testing.assert_allclose(out["monna"][i], H.ref_monna(x64, f, p), **tol)
    for name, ref in REFERENCES.items():
        assert np.all(np.isfinite(out[name])), (name, x, out[name])
        np.testing.assert_allclose(out[name], ref(x64, f), **tol)
    return out


@settings(max_examples=20, deadline=None)
@given(data=st.data(), nf=st.sampled_from([(7, 2), (9, 4)]))
def test_rules_match_references_on_ties(data, nf):
    n, f = nf
    x = data.draw(attack_like(n, f, DISTANCE))[:, :2]
    _check_all(x, f)


@settings(max_examples=10, deadline=None)
@given(data=st.data(), nf=st.sampled_from([(6, 5), (6, 6), (5, 1)]))
def test_arc_for_any_f_up_to_n_and_huge_rows(data, nf):
    # ARC accepts f <= n (ByzFL); k = 0 for f = n: the input unchanged.
    n, f = nf
    x = data.draw(attack_like(n, min(f, n - 1), BAD_KINDS))
    got = np.asarray(_arc_jit(f)({"w": jnp.asarray(x)})["w"], np.float64)
    scale = np.max(np.abs(x[np.isfinite(x)]), initial=1.0)
    np.testing.assert_allclose(got, H.ref_arc(x.astype(np.float64), f), rtol=1e-5,
                               atol=1e-6 * scale, err_msg=f"n={n} f={f}\n{x!r}")
    assert np.all(np.isfinite(got)) or aggregators.arc_num_clipped(n, f) == 0


@functools.lru_cache(maxsize=None)
def _arc_jit(f):
    return jax.jit(lambda t: aggregators.adaptive_robust_clipping(t, num_byzantine=f))


def test_f_non_finite_rows_and_monna_is_nnm_row_pivot():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 2))
    x[[0, 4, 7, 8]] = [[np.nan, 1], [np.inf, 0], [-np.inf, np.inf], [1e5, -1e5]]
    out = _check_all(x, 4)  # pivots 0 and 4 are non-finite
    mixed = jax.jit(lambda t: aggregators.nearest_neighbour_mixing(
        t, num_byzantine=4))({"w": jnp.asarray(x, jnp.float32)})["w"]
    np.testing.assert_allclose(out["monna"], np.asarray(mixed)[list(pivots(9))],
                               rtol=1e-6, atol=1e-6)
    # The non-finite rows are zero rows after ARC, the rest finite.
    np.testing.assert_array_equal(out["arc"][[0, 4, 7]], 0.0)
    assert np.all(np.isfinite(out["arc"]))


# ------------------------------------------------------------ f = 0, equal rows


def test_f_zero():
    x = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32)
    out = run(x, 0)
    for name in ("smea", "caf"):
        np.testing.assert_allclose(out[name], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["monna"], np.tile(x.mean(0), (3, 1)), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(out["arc"], x)  # k = 0: ByzFL clips nothing


@chex.assert_max_traces(n=1)
def _n15_rules(t):
    return _all_rules(t, 4)


_N15 = jax.jit(_n15_rules)  # traced once for every call in this module


@pytest.mark.parametrize("kind", ["far", "nan", "-inf", "huge"])
def test_identical_honest_rows_at_n15_f4(kind):
    rng = np.random.default_rng(3)
    h = rng.normal(size=2)
    x = np.tile(h, (15, 1))
    x[[1, 5, 9, 14]] = {"far": 1e4 * rng.normal(size=(4, 2)),
                        "nan": np.full((4, 2), np.nan),
                        "-inf": np.full((4, 2), -np.inf),
                        "huge": np.sign(rng.normal(size=(4, 2))) * 1e15}[kind]
    out = _N15({"w": jnp.asarray(x, jnp.float32)})  # never retraced
    for name in ("smea", "caf"):
        np.testing.assert_allclose(out[name], h, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(out["monna"][:2], np.tile(h, (2, 1)), rtol=1e-5)
    # pivot 14 is Byzantine: a non-finite one borrows the central (honest)
    # row's neighbourhood; a finite far one keeps its own.
    if kind in ("nan", "-inf"):
        np.testing.assert_allclose(out["monna"][2], h, rtol=1e-5)


def test_vmap_at_n15_f4_agrees_with_one_at_a_time():
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(3, 15, 2)).astype(np.float32)
    xs[:, 11:] += 4.0
    batch = jax.jit(jax.vmap(functools.partial(_all_rules, f=4)))({"w": xs})
    for i in range(3):
        one = _N15({"w": jnp.asarray(xs[i])})
        for name in one:
            np.testing.assert_allclose(batch[name][i], one[name], rtol=1e-5,
                                       atol=1e-6, err_msg=name)
    x0 = xs[0].astype(np.float64)
    np.testing.assert_allclose(np.asarray(batch["smea"][0]), H.ref_smea(x0, 4),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(batch["caf"][0]), H.ref_caf(x0, 4),
                               rtol=1e-4, atol=1e-5)


def test_gradients_flow_through_the_chosen_mean_only():
    x = jnp.asarray(np.random.default_rng(6).normal(size=(7, 2)), jnp.float32)

    def total(v):
        out = _all_rules({"w": v}, 2)
        return jnp.stack([jnp.sum(out[k]) for k in ("smea", "caf")]
                         + [jnp.sum(out["monna"][0])])

    jac = np.asarray(jax.jit(jax.jacrev(total))(x))  # [3 rules, 7, 2]
    assert np.all(np.isfinite(jac))
    # d sum(mean) / d x_ij = weight of row i: weights sum to 1 per coordinate.
    np.testing.assert_allclose(jac.sum(1), 1.0, rtol=1e-5)


# ------------------------------------------------------------ checks, simulator


def test_smea_refuses_too_many_subsets_in_one_line():
    msg = r"smea: n = 31, f = 10 means C\(31, 10\) = 44,352,165 subsets .*limit 100,000"
    with pytest.raises(ValueError, match=msg):
        aggregators.check("smea", num_workers=31, num_byzantine=10)
    with pytest.raises(ValueError, match=msg):
        aggregators.smallest_maximum_eigenvalue_averaging(
            {"w": jnp.zeros((31, 2))}, num_byzantine=10)
    with pytest.raises(sim.ConfigError, match=msg):
        sim.validate(H.tiny_config(aggregator="smea", num_workers=31,
                                   num_byzantine=10))
    aggregators.check("smea", num_workers=15, num_byzantine=4)  # 1,365: fine
    with pytest.raises(ValueError, match=r"C\(67, 2\) = 2,211 subsets of 65 rows, "
                       r"eigenvalue work 1.2e\+10 .*limit 2e\+09"):
        aggregators.check("smea", num_workers=67, num_byzantine=2)


def test_monna_pivot_and_arc_requirement():
    with pytest.raises(ValueError, match=r"monna: pivot must be a row .*\[0, 5\)"):
        aggregators.monna({"w": jnp.zeros((5, 2))}, num_byzantine=1, pivot=5)
    with pytest.raises(ValueError, match="pivot must be an integer >= 0"):
        aggregators.monna({"w": jnp.zeros((5, 2))}, num_byzantine=1, pivot=-1)
    aggregators.PREAGGREGATORS.check("arc", num_workers=4, num_byzantine=4)
    with pytest.raises(ValueError, match="arc needs n >= f"):
        aggregators.PREAGGREGATORS.check("arc", num_workers=3, num_byzantine=4)


def test_the_simulator_and_the_pipeline_take_them_by_name():
    for aggregator, kwargs, pre in (("monna", {"pivot": 3}, "arc"), ("smea", {}, ""),
                                    ("caf", {}, "arc")):
        spec = sim.resolve(H.tiny_config(aggregator=aggregator,
                                         aggregator_kwargs=kwargs, preaggregator=pre))
        assert (spec.aggregator, spec.preaggregator) == (aggregator, pre or None)
    robust = optim.stages("dsgd", num_workers=7, num_byzantine=2, aggregator="caf",
                          preaggregator="arc").robust
    x = np.random.default_rng(7).normal(size=(7, 3)).astype(np.float32)
    x[5:] = 50.0
    out, _ = jax.jit(robust.update)({"w": jnp.asarray(x)},
                                    robust.init({"w": jnp.zeros(3)}))
    assert out["w"].shape == (3,)
    assert np.all(np.abs(np.asarray(out["w"])) < 5.0)
