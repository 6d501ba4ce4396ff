"""Coordinate-wise aggregators, sorting networks and simple pre-aggregators.

Every rule is checked against a slow, obviously-correct NumPy reference that
loops over coordinates. Rules run eagerly here (no jit): each small op is
compiled once and cached, which is cheaper than compiling one program per
(rule, n, f) combination; jit/vmap/retracing are covered in
test_aggregator_properties.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators
from byzjax.aggregators import _coordinate, _networks
from tests.helpers import (
    closest_mean,
    per_coordinate,
    ref_meamed,
    ref_median,
    ref_phocas,
    ref_trimmed,
)

RTOL, ATOL = 1e-5, 1e-6
SHAPES = {"w": (3, 4), "b": (5,)}


# ----------------------------------------------------------------- references
# The NumPy references live in tests/helpers.py (shared with the other tests).


def ref_closest(v, center, k):
    return closest_mean(v, center, k)


def make_stack(rng, n, shapes=SHAPES, dtype=np.float32):
    return {k: rng.normal(size=(n,) + s).astype(dtype) for k, s in shapes.items()}


def assert_tree_close(got, want, rtol=RTOL, atol=ATOL):
    assert set(got) == set(want)
    for k in want:
        g = np.asarray(got[k], np.float64)
        assert g.shape == want[k].shape, (k, g.shape, want[k].shape)
        np.testing.assert_allclose(g, want[k], rtol=rtol, atol=atol, err_msg=k)


RULES = {
    "coordinate_median": (
        lambda x, f: aggregators.coordinate_median(x, num_byzantine=f),
        lambda v, f: ref_median(v)),
    "trimmed_mean": (lambda x, f: aggregators.trimmed_mean(x, num_byzantine=f),
                     ref_trimmed),
    "meamed": (lambda x, f: aggregators.meamed(x, num_byzantine=f), ref_meamed),
    "phocas": (lambda x, f: aggregators.phocas(x, num_byzantine=f), ref_phocas),
}

NF = [(1, 0), (2, 0), (3, 0), (3, 1), (4, 1), (5, 2), (6, 2), (7, 1), (8, 3),
      (10, 4), (11, 5), (15, 5), (16, 7)]


# ------------------------------------------------------------------- networks


def _apply_np(rows, comps):
    rows = list(rows)
    for i, j in comps:
        lo, hi = np.minimum(rows[i], rows[j]), np.maximum(rows[i], rows[j])
        rows[i], rows[j] = lo, hi
    return np.stack(rows)


@pytest.mark.parametrize("n", range(1, 17))
def test_comparators_sort_every_binary_input(n):
    # 0-1 principle: a comparator network sorts everything iff it sorts all 0-1 inputs.
    inputs = (np.arange(2 ** n)[None, :] >> np.arange(n)[:, None]) & 1
    out = _apply_np(inputs, _networks.comparators(n))
    np.testing.assert_array_equal(out, np.sort(inputs, axis=0))


def test_comparators_sort_random_inputs_up_to_64():
    rng = np.random.default_rng(0)
    for n in range(1, 65):
        comps = _networks.comparators(n)
        assert all(0 <= i < j < n for i, j in comps)
        x = np.concatenate([rng.normal(size=(n, 200)),
                            rng.integers(0, 3, size=(n, 200)).astype(float)], axis=1)
        np.testing.assert_array_equal(_apply_np(x, comps), np.sort(x, axis=0), str(n))


def test_comparator_counts_are_batcher():
    # Batcher's odd-even merge sort: 63 comparators for 16, 543 for 64 wires.
    assert len(_networks.comparators(16)) == 63
    assert len(_networks.comparators(64)) == 543
    assert len(_networks.comparators(51)) < 543


def _apply_plan_np(x, plan):
    rows = [r.copy() for r in x]
    for i, j, emit_min, emit_max in plan:
        a, b = rows[i], rows[j]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        if emit_min:
            rows[i] = lo
        if emit_max:
            rows[j] = hi
    return rows


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 16, 31, 33, 51, 64])
def test_plans_give_exact_and_summed_positions(n):
    rng = np.random.default_rng(n)
    x = np.concatenate([rng.normal(size=(n, 64)),
                        rng.integers(0, 3, size=(n, 64)).astype(float)], axis=1)
    want = np.sort(x, axis=0)
    full = _networks.network_plan(n, exact=range(n))
    assert len(full) == len(_networks.comparators(n))
    for _ in range(6):
        k = int(rng.integers(0, n + 1))
        exact = sorted(rng.choice(n, size=k, replace=False).tolist())
        rest = [p for p in range(n) if p not in exact]
        summed = sorted(rng.choice(rest, size=int(rng.integers(0, len(rest) + 1)),
                                   replace=False).tolist()) if rest else []
        plan = _networks.network_plan(n, exact=exact, summed=summed)
        assert len(plan) <= len(full)
        rows = _apply_plan_np(x, plan)
        for p in exact:
            np.testing.assert_array_equal(rows[p], want[p])
        if summed:
            np.testing.assert_allclose(sum(rows[p] for p in summed),
                                       want[summed].sum(axis=0), rtol=1e-12, atol=1e-12)


def test_plan_prunes():
    assert _networks.network_plan(16, summed=range(16)) == ()
    assert _networks.network_plan(7, exact=()) == ()
    n = 15
    med = _networks.network_plan(n, exact=[7])
    assert len(med) < len(_networks.comparators(n))
    # every step emits something, and min-only / max-only steps exist
    assert all(a or b for _, _, a, b in med)
    assert any(a != b for _, _, a, b in med)


def test_plan_rejects_bad_positions():
    with pytest.raises(ValueError, match="out of range"):
        _networks.network_plan(4, exact=[4])
    with pytest.raises(ValueError, match="disjoint"):
        _networks.network_plan(4, exact=[1], summed=[1, 2])
    with pytest.raises(ValueError, match="num_trim"):
        _networks.trimmed_sum([jnp.zeros(2)] * 4, 2)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 9, 16, 17, 33, 64])
def test_jax_networks_match_np_sort(n):
    rng = np.random.default_rng(100 + n)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 0] = np.round(x[:, 0])  # ties
    x[0, 1], x[-1, 2] = np.inf, -np.inf
    rows = [jnp.asarray(r) for r in x]
    want = np.sort(x, axis=0)
    np.testing.assert_array_equal(np.stack(_networks.sort_rows(rows)), want)
    pos = sorted({0, n // 2, n - 1})
    got = _networks.order_statistics(rows, pos)
    np.testing.assert_array_equal(np.stack(got), want[pos])
    for t in range(0, (n - 1) // 2 + 1):
        np.testing.assert_allclose(_networks.trimmed_sum(rows, t),
                                   want[t:n - t].sum(0), rtol=1e-5, atol=1e-5)


def test_nan_to_inf_and_tree_sum():
    x = jnp.array([1.0, jnp.nan, -jnp.inf])
    np.testing.assert_array_equal(_networks.nan_to_inf(x), [1.0, np.inf, -np.inf])
    terms = [jnp.full((2,), float(k)) for k in range(7)]
    np.testing.assert_array_equal(_networks.tree_sum(terms), [21.0, 21.0])
    with pytest.raises(ValueError):
        _networks.tree_sum([])


# ------------------------------------------------------- rules vs references


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("n,f", NF)
def test_rule_matches_reference(rule, n, f):
    fn, ref = RULES[rule]
    x = make_stack(np.random.default_rng(1000 * n + f), n)
    got = fn({k: jnp.asarray(v) for k, v in x.items()}, f)
    assert_tree_close(got, per_coordinate(x, lambda v: ref(v, f)))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9])
def test_lower_median(n):
    x = make_stack(np.random.default_rng(n), n)
    got = aggregators.coordinate_median(x, lower=True)
    assert_tree_close(got, per_coordinate(x, lambda v: ref_median(v, lower=True)))
    # the lower median is always one of the inputs
    for k in x:
        assert np.all(np.any(np.asarray(got[k])[None] == x[k], axis=0))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13])
def test_mean_around_median(n):
    x = make_stack(np.random.default_rng(50 + n), n)
    for k in range(1, n + 1):
        got = _coordinate.mean_around_median(x, num_keep=k)
        if n % 2 == 0 and k == 1:
            # The two middle values are equally far from their midpoint, so
            # they share the slot (the midpoint), unless rounding of the
            # float32 centre puts one of them strictly closer.
            for name in x:
                s = np.sort(x[name], axis=0)
                g = np.asarray(got[name])
                mid = 0.5 * s[n // 2 - 1] + 0.5 * s[n // 2]
                assert np.all((g == s[n // 2 - 1]) | (g == s[n // 2])
                              | np.isclose(g, mid, rtol=1e-6, atol=1e-7))
            continue
        want = per_coordinate(x, lambda v: ref_closest(v, ref_median(v), k))
        assert_tree_close(got, want)


def test_mean_around_median_is_exported_and_validates():
    assert aggregators.mean_around_median is _coordinate.mean_around_median
    x = {"w": jnp.zeros((4, 2))}
    for bad in (0, 5, 2.0):
        with pytest.raises(ValueError, match="num_keep"):
            _coordinate.mean_around_median(x, num_keep=bad)


def test_values_tied_in_distance_share_the_slots_left():
    # median 2, keep 4: 1, 2, 3 are inside, 0 and 4 share the last slot
    x = {"w": jnp.array([[0.0], [1.0], [2.0], [3.0], [4.0]])}
    assert float(_coordinate.mean_around_median(x, num_keep=4)["w"][0]) == 2.0
    # median 2, keep 3: 1 and 2 inside, 0 and 4 share the last slot
    x = {"w": jnp.array([[0.0], [1.0], [2.0], [4.0], [100.0]])}
    got = float(aggregators.meamed(x, num_byzantine=2)["w"][0])
    np.testing.assert_allclose(got, (1.0 + 2.0 + 0.5 * (0.0 + 4.0)) / 3, rtol=1e-6)
    # repeated values
    x = {"w": jnp.array([[1.0], [1.0], [1.0], [5.0], [-5.0]])}
    for rule in RULES:
        assert float(RULES[rule][0](x, 2)["w"][0]) == 1.0, rule


def test_a_value_closer_to_the_centre_is_never_left_out():
    # The lowest window of least radius [-1, -1, 0] leaves out 0.9, which is
    # closer to the median 0 than the second -1: the kept set is {0, 0.9, -1}.
    x = {"w": jnp.array([[-1.0], [-1.0], [0.0], [0.9], [5.0]])}
    got = float(aggregators.meamed(x, num_byzantine=2)["w"][0])
    np.testing.assert_allclose(got, (0.0 + 0.9 - 1.0) / 3, rtol=1e-6)
    # Phocas: trimmed mean (f=2) is 0; the same set is kept
    got = float(aggregators.phocas(x, num_byzantine=2)["w"][0])
    np.testing.assert_allclose(got, (0.0 + 0.9 - 1.0) / 3, rtol=1e-6)
    # identical Byzantine rows (ALIE-like) around honest values
    col = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, -0.5, -0.5, -0.5]
    x = {"w": jnp.array(col)[:, None]}
    for f in (1, 2, 3, 4):
        got = float(aggregators.meamed(x, num_byzantine=f)["w"][0])
        np.testing.assert_allclose(got, ref_meamed(col, f), rtol=1e-6)


@pytest.mark.parametrize("n", [4, 6, 8])
def test_meamed_lower_median_option(n):
    x = make_stack(np.random.default_rng(70 + n), n)
    f = (n - 1) // 2
    got = aggregators.meamed(x, num_byzantine=f, lower=True)
    assert_tree_close(got, per_coordinate(x, lambda v: ref_meamed(v, f, lower=True)))
    # a fixed column where the two centres differ: [0, 1, 2, 10], f = 1
    # lower median 1: f=1 keeps 0, 1, 2; keep 2 is 1 plus half of 0 and of 2
    col = {"w": jnp.array([[0.0], [1.0], [2.0], [10.0]])}
    np.testing.assert_allclose(
        aggregators.meamed(col, num_byzantine=1, lower=True)["w"], [1.0])
    np.testing.assert_allclose(
        aggregators.mean_around_median(col, num_keep=2, lower=True)["w"], [1.0])
    np.testing.assert_allclose(
        aggregators.mean_around_median(col, num_keep=2)["w"], [1.5])


@pytest.mark.parametrize("rule", sorted(RULES))
def test_f_zero_trimmed_mean_meamed_phocas_are_the_mean(rule):
    x = make_stack(np.random.default_rng(7), 6)
    got = RULES[rule][0](x, 0)
    if rule == "coordinate_median":
        want = {k: np.median(v, axis=0) for k, v in x.items()}
    else:
        want = {k: v.astype(np.float64).mean(axis=0) for k, v in x.items()}
    assert_tree_close(got, want)


def test_names_and_aliases():
    for alias, name in [("median", "coordinate_median"), ("cwm", "coordinate_median"),
                        ("cwtm", "trimmed_mean"), ("trmean", "trimmed_mean"),
                        ("meamed", "meamed"), ("phocas", "phocas")]:
        assert aggregators.entry(alias).name == name
        assert aggregators.entry(alias).robust
    assert aggregators.entry("bucketing").needs_key
    assert not aggregators.entry("static_clipping").needs_key
    assert set(aggregators.preaggregator_names()) >= {"bucketing", "static_clipping"}


# ----------------------------------------------------------- non-finite input


FAR = 1e30


def _corrupt(rng, x, rows, mode):
    """Sets `rows` of every leaf to non-finite values; returns (bad, as_far)."""
    bad = {k: v.copy() for k, v in x.items()}
    far = {k: v.astype(np.float64) for k, v in x.items()}
    for k in x:
        for r in rows:
            kind = mode
            if mode == "mixed":
                kind = rng.choice(["inf", "-inf", "nan", "part"])
            if kind == "part":  # a few NaN / inf entries in an otherwise finite row
                mask = rng.random(x[k].shape[1:]) < 0.5
                vals = rng.choice([np.nan, np.inf, -np.inf], size=x[k].shape[1:])
                bad[k][r] = np.where(mask, vals, x[k][r])
            else:
                bad[k][r] = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}[kind]
            b = bad[k][r]
            far[k][r] = np.where(np.isnan(b) | (b == np.inf), FAR,
                                 np.where(b == -np.inf, -FAR, b))
    return bad, far


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("n,f", [(3, 1), (6, 2), (11, 5), (15, 5)])
@pytest.mark.parametrize("mode", ["inf", "-inf", "nan", "mixed"])
def test_non_finite_rows_are_infinitely_far(rule, n, f, mode):
    fn, ref = RULES[rule]
    rng = np.random.default_rng(n * 7 + f)
    x = make_stack(rng, n)
    rows = rng.choice(n, size=f, replace=False)
    bad, far = _corrupt(rng, x, rows, mode)
    got = fn(bad, f)
    for k in got:
        assert np.all(np.isfinite(np.asarray(got[k]))), (rule, mode, k)
    assert_tree_close(got, per_coordinate(far, lambda v: ref(v, f)))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_huge_finite_values_do_not_cancel(rule):
    # Accumulating window sums by subtraction would lose every digit here.
    n, f = 9, 3
    x = make_stack(np.random.default_rng(3), n)
    for k in x:
        x[k][:2] = 3e37
        x[k][2] = -3e37
    got = RULES[rule][0](x, f)
    assert_tree_close(got, per_coordinate(x, lambda v: RULES[rule][1](v, f)))


def test_more_than_f_non_finite_is_not_hidden():
    x = {"w": jnp.array([[1.0], [jnp.inf], [jnp.inf]])}
    assert np.isinf(aggregators.trimmed_mean(x, num_byzantine=1)["w"][0])


# -------------------------------------------------------- dtypes and errors


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_low_precision_dtypes(rule, dtype):
    n, f = 7, 2
    x32 = make_stack(np.random.default_rng(11), n)
    x = {k: jnp.asarray(v).astype(dtype) for k, v in x32.items()}
    got = RULES[rule][0](x, f)
    want = per_coordinate({k: np.asarray(v.astype(jnp.float32)) for k, v in x.items()},
                          lambda v: RULES[rule][1](v, f))
    for k in got:
        assert got[k].dtype == dtype
    assert_tree_close(got, want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_bad_configuration_fails_early(rule):
    fn = RULES[rule][0]
    with pytest.raises(ValueError, match="num_workers=4"):
        fn({"w": jnp.zeros((4, 3))}, 2)
    with pytest.raises(TypeError, match="floating"):
        fn({"w": jnp.zeros((5, 3), jnp.int32)}, 1)
    with pytest.raises(TypeError, match="Python int"):
        fn({"w": jnp.zeros((5, 3))}, 1.0)
    with pytest.raises(ValueError, match="leading"):
        fn({"w": jnp.zeros((5, 3)), "b": jnp.zeros((4,))}, 1)


# ---------------------------------------------------- hypothesis properties


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), nf=st.sampled_from([(5, 2), (8, 3), (9, 1)]),
       scale=st.sampled_from([1e-3, 1.0, 1e4]), shift=st.sampled_from([0.0, -7.0, 1e3]))
def test_rules_are_bracketed_and_shift_equivariant(seed, nf, scale, shift):
    n, f = nf
    rng = np.random.default_rng(seed)
    x = {"w": (rng.normal(size=(n, 6)) * scale).astype(np.float32)}
    shifted = {"w": (x["w"] + np.float32(shift)).astype(np.float32)}
    s = np.sort(x["w"], axis=0)
    for rule, (fn, _) in RULES.items():
        out = np.asarray(fn(x, f)["w"])
        # median / trimmed mean lie in [s_f, s_{n-f-1}]; MeaMed / Phocas average
        # n-f consecutive order statistics: between the lowest and highest window
        if rule in ("coordinate_median", "trimmed_mean"):
            lo, hi = s[f], s[n - f - 1]
        else:
            lo, hi = s[:n - f].mean(0), s[f:].mean(0)
        tol = 1e-6 * scale
        assert np.all(out >= lo - tol) and np.all(out <= hi + tol), rule
        np.testing.assert_allclose(np.asarray(fn(shifted, f)["w"]), out + shift,
                                   rtol=1e-5, atol=1e-5 * (scale + abs(shift)))


# ----------------------------------------------------------- static clipping


def ref_clip(x, c):
    n = next(iter(x.values())).shape[0]
    out = {k: np.zeros(v.shape) for k, v in x.items()}
    for i in range(n):
        row = {k: v[i].astype(np.float64) for k, v in x.items()}
        if not all(np.all(np.isfinite(r)) for r in row.values()):
            continue  # documented: non-finite rows become zero rows
        norm = math.sqrt(sum(float((r ** 2).sum()) for r in row.values()))
        s = 1.0 if norm <= c else c / norm
        for k in x:
            out[k][i] = row[k] * s
    return out


@pytest.mark.parametrize("c", [0.5, 2.0, 1e6])
def test_static_clipping_matches_reference(c):
    rng = np.random.default_rng(int(c * 10) % 97)
    x = make_stack(rng, 6)
    x["w"][1] *= 0.01  # a short row that is left alone for c >= 0.5
    x["b"][2] = 0.0
    x["w"][2] = 0.0  # a zero row stays zero (no 0/0)
    got = aggregators.static_clipping(x, max_norm=c)
    assert_tree_close(got, ref_clip(x, c))
    norms = np.sqrt(sum((np.asarray(v, np.float64).reshape(6, -1) ** 2).sum(1)
                        for v in got.values()))
    assert np.all(norms <= c * (1 + 1e-6) + 1e-12)


def test_static_clipping_non_finite_rows_become_zero():
    rng = np.random.default_rng(5)
    x = make_stack(rng, 6)
    x["w"][0] = np.inf
    x["b"][1, 2] = np.nan
    x["w"][2, 0, 0] = -np.inf
    x["b"][3] = 1e30  # finite, but its squared norm overflows float32
    got = aggregators.static_clipping(x, max_norm=1.0)
    for k in got:
        g = np.asarray(got[k])
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(g[:3], 0.0)
    # The huge finite row is clipped to norm 1 like any other row.
    want = ref_clip({k: np.asarray(v, np.float64) for k, v in x.items()}, 1.0)
    assert_tree_close({k: v[3:] for k, v in got.items()},
                      {k: v[3:] for k, v in want.items()})


def test_static_clipping_refuses_a_radius_of_zero_or_less():
    x = make_stack(np.random.default_rng(1), 3)
    for c in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_norm"):
            aggregators.static_clipping(x, max_norm=c)


def test_static_clipping_traced_max_norm_vmaps():
    x = make_stack(np.random.default_rng(9), 4)
    cs = jnp.array([0.1, 1.0, 3.0])
    clip = jax.vmap(lambda c: aggregators.static_clipping(x, max_norm=c))
    batched = jax.jit(clip)(cs)
    for i, c in enumerate([0.1, 1.0, 3.0]):
        assert_tree_close({k: v[i] for k, v in batched.items()}, ref_clip(x, c))


# ----------------------------------------------------------------- bucketing


def ref_bucketing(x, key, s):
    n = next(iter(x.values())).shape[0]
    perm = np.asarray(jax.random.permutation(key, n))
    out = {}
    for k, v in x.items():
        rows = []
        for b in range(0, n, s):
            members = perm[b:b + s]
            rows.append(v[members].astype(np.float64).mean(axis=0))
        out[k] = np.stack(rows)
    return out


@pytest.mark.parametrize("n,s", [(1, 1), (5, 1), (5, 2), (6, 2), (7, 3), (4, 4),
                                 (4, 9)])
def test_bucketing_matches_reference(n, s):
    key = jax.random.key(n * 10 + s)
    x = make_stack(np.random.default_rng(n + s), n)
    got = aggregators.bucketing(x, key=key, bucket_size=s)
    m = -(-n // s)
    for k in got:
        assert got[k].shape == (m,) + SHAPES[k]
        assert got[k].dtype == jnp.float32
    assert_tree_close(got, ref_bucketing(x, key, s))
    # every row is used exactly once: size-weighted bucket means sum to the total
    sizes = np.array([min(s, n - b) for b in range(0, n, s)], np.float64)
    for k in x:
        total = np.tensordot(sizes, np.asarray(got[k], np.float64), axes=1)
        np.testing.assert_allclose(total, x[k].astype(np.float64).sum(0),
                                   rtol=1e-5, atol=1e-5)


def test_bucketing_is_random_and_vmaps_over_keys():
    x = {"w": jnp.arange(6.0)[:, None] * jnp.ones((1, 3))}
    keys = jax.random.split(jax.random.key(0), 8)
    fn = jax.jit(jax.vmap(lambda k: aggregators.bucketing(x, key=k, bucket_size=2)))
    out = np.asarray(fn(keys)["w"])
    assert out.shape == (8, 3, 3)
    for i in range(8):
        assert_tree_close({"w": out[i]}, ref_bucketing({"w": np.asarray(x["w"])},
                                                        keys[i], 2))
    assert len({tuple(np.sort(o[:, 0])) for o in out}) > 1  # different groupings


def test_bucketing_non_finite_rows_spoil_one_bucket_each():
    x = make_stack(np.random.default_rng(2), 9)
    x["w"][3] = np.nan
    x["b"][7] = np.inf
    got = aggregators.bucketing(x, key=jax.random.key(3), bucket_size=3)
    row_ok = np.all(np.isfinite(np.asarray(got["w"]).reshape(3, -1)), 1) & \
        np.all(np.isfinite(np.asarray(got["b"])), 1)
    perm = np.asarray(jax.random.permutation(jax.random.key(3), 9))
    spoiled = {int(np.where(perm == r)[0][0]) // 3 for r in (3, 7)}
    assert set(np.where(~row_ok)[0].tolist()) == spoiled


def test_bucketing_bad_bucket_size():
    x = {"w": jnp.zeros((4, 2))}
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="bucket_size"):
            aggregators.bucketing(x, key=jax.random.key(0), bucket_size=bad)


def test_bucketing_then_trimmed_mean_is_finite_with_f_bad_rows():
    n, f, s = 12, 2, 2
    x = make_stack(np.random.default_rng(4), n)
    for k in x:
        x[k][[0, 5]] = np.nan
    buckets = aggregators.bucketing(x, key=jax.random.key(1), bucket_size=s)
    out = aggregators.trimmed_mean(buckets, num_byzantine=f)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in out.values())


def test_pre_aggregators_check_n_and_f():
    with pytest.raises(ValueError, match="num_workers=4"):
        aggregators.static_clipping({"w": jnp.zeros((4, 2))}, num_byzantine=2,
                                    max_norm=1.0)
    with pytest.raises(ValueError, match="num_workers=4"):
        aggregators.bucketing({"w": jnp.zeros((4, 2))}, num_byzantine=2,
                              key=jax.random.key(0), bucket_size=2)


def test_all_leaves_together_not_per_leaf():
    # norm over both leaves is 5: per-leaf clipping would keep "a" (3 < 4) intact
    x = {"a": jnp.array([[3.0]]), "b": jnp.array([[4.0]])}
    got = aggregators.static_clipping(x, max_norm=4.0)
    np.testing.assert_allclose(np.asarray(got["a"]), [[2.4]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got["b"]), [[3.2]], rtol=1e-6)

