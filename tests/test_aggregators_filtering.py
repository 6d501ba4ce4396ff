"""The filtering rules of Blades: DnC, SignGuard and clipped clustering,
against the slow NumPy references of ``tests/helpers.py`` (float64, loops,
written from the definitions).

Inputs are pytrees with two leaves of different shapes (``d = 7``), so every
norm, distance and coordinate sample runs over all leaves together. DnC's
reference is given the coordinates :func:`byzjax.aggregators.dnc_coordinates`
draws from the same key, so both see the same subsamples.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators, attacks, optim
from byzjax.aggregators._filtering import _average_linkage_largest
from tests import helpers as H

LEAF_SHAPES = {"a": (3,), "b": (2, 2)}  # d = 7 over two leaves
D = 7
RULES = ("dnc", "signguard", "clipped_clustering")
# DnC's static settings: every coordinate (one iteration), 4 of 7 three times.
DNC_SETTINGS = ({}, {"subsample_dim": 4, "num_iterations": 3})


def tree(x):
    """``[n, 7]`` -> the two-leaf pytree (float32)."""
    x = jnp.asarray(x, jnp.float32)
    return {"a": x[:, :3], "b": x[:, 3:].reshape(-1, 2, 2)}


def flat(out):
    return np.concatenate([np.asarray(out["a"], np.float64).ravel(),
                           np.asarray(out["b"], np.float64).ravel()])


def jitted(name, f, settings_index=0):
    """The rule, jitted once per (name, f, DnC setting) across the tests."""
    return _jitted(name, f, settings_index if name == "dnc" else 0)


@functools.lru_cache(maxsize=None)
def _jitted(name, f, settings_index):
    fn = aggregators.get(name)
    kw = dict(DNC_SETTINGS[settings_index]) if name == "dnc" else {}
    if name == "dnc":
        return jax.jit(lambda t, k: fn(t, num_byzantine=f, key=k, **kw))
    return jax.jit(lambda t, k: fn(t, num_byzantine=f))


_coordinates = jax.jit(aggregators.dnc_coordinates, static_argnums=1,
                       static_argnames=("subsample_dim", "num_iterations"))


def reference(name, x, f, key, settings_index=0, tol=0.0):
    if name == "dnc":
        kw = DNC_SETTINGS[settings_index]
        coords = _coordinates(key, D, **kw)
        return H.ref_dnc(x, f, coords, tol=tol)
    if name == "signguard":
        return H.ref_signguard(x, f, tol=tol)
    return H.ref_clipped_clustering(x, f, tol=tol)


@st.composite
def stacks(draw, n, f):
    """``float32[n, 7]``: continuous or small-integer rows (repeats, ties),
    duplicated rows, and up to ``f`` rows with ``inf`` / ``NaN`` entries."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    integer = draw(st.booleans())
    if integer:
        pool = rng.integers(-3, 4, size=(draw(st.integers(1, n)), D))
        x = pool[rng.integers(0, len(pool), size=n)].astype(np.float64)
    else:
        x = rng.normal(size=(n, D)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
        for _ in range(draw(st.integers(0, 2))):  # duplicated rows
            i, j = rng.integers(0, n, size=2)
            x[i] = x[j]
    for r in rng.permutation(n)[:draw(st.integers(0, f))]:
        kind = draw(st.sampled_from(["inf", "-inf", "nan", "one_nan"]))
        if kind == "one_nan":
            x[r, rng.integers(0, D)] = np.nan
        else:
            x[r] = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}[kind]
    return x.astype(np.float32), integer


# (name, n, f, DnC setting): DnC subsamples with n = 5 and sees every
# coordinate with n = 7.
CASES = [(name, n, f, int(name == "dnc" and n == 5)) for name in RULES
         for n, f in ((5, 1), (7, 2))]


@pytest.mark.parametrize("name,n,f,setting", CASES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_rules_match_references(name, n, f, setting, data):
    x, integer = data.draw(stacks(n, f))
    key = jax.random.key(data.draw(st.integers(0, 2**31 - 1)))
    got = flat(jitted(name, f, setting)(tree(x), key))
    assert np.all(np.isfinite(got)), (name, x, got)
    scale = np.max(np.abs(x[np.isfinite(x)]), initial=1.0)
    # Integer rows tie in real arithmetic: any answer the definition allows.
    want = reference(name, x.astype(np.float64), f, key, setting,
                     tol=(1e-3 if name == "dnc" else 1e-5) if integer else 0.0)
    wants = want if isinstance(want, list) else [want]
    assert any(np.allclose(got, w, rtol=1e-4, atol=1e-5 * scale) for w in wants), (
        f"{name} n={n} f={f}\n{x}\ngot {got}\nallowed {wants}")


@pytest.mark.parametrize("name", RULES)
def test_f_zero_and_identical_rows(name):
    rng = np.random.default_rng(0)
    key = jax.random.key(1)
    x = rng.normal(size=(5, D)).astype(np.float32)
    got = flat(jitted(name, 0)(tree(x), key))
    np.testing.assert_allclose(got, reference(name, x.astype(np.float64), 0, key),
                               rtol=1e-5, atol=1e-6)
    if name == "dnc":  # f = 0 removes nothing: the mean
        np.testing.assert_allclose(got, x.astype(np.float64).mean(0), rtol=1e-5,
                                   atol=1e-6)
    same = np.tile(x[:1], (5, 1))
    np.testing.assert_allclose(flat(jitted(name, 1, 1)(tree(same), key)), x[0],
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_at_most_f_non_finite_rows_never_enter(name, bad):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, D)).astype(np.float32)
    x[1] = bad  # a whole row
    x[4, 3] = bad  # a single entry
    key = jax.random.key(0)
    got = flat(jitted(name, 2)(tree(x), key))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, reference(name, x.astype(np.float64), 2, key),
                               rtol=1e-5, atol=1e-6)


def test_dnc_coordinates_are_the_rules_and_without_replacement():
    key = jax.random.key(3)
    coords = np.asarray(aggregators.dnc_coordinates(key, 50, subsample_dim=20,
                                                    num_iterations=4))
    assert coords.shape == (4, 20) and coords.dtype == np.int32
    for row in coords:
        assert len(set(row.tolist())) == 20 and 0 <= row.min() and row.max() < 50
    assert not np.array_equal(coords[0], coords[1])
    np.testing.assert_array_equal(
        aggregators.dnc_coordinates(key, 5, subsample_dim=20), [[0, 1, 2, 3, 4]])
    # The rule reads exactly those columns: a row that is an outlier only on
    # coordinates no iteration samples is kept.
    x = np.zeros((5, 50), np.float32)
    x[:, :] = np.random.default_rng(0).normal(size=(5, 50)) * 0.01
    unseen = sorted(set(range(50)) - set(coords.ravel().tolist()))
    x[4, unseen] = 100.0
    out = jax.jit(lambda t, k: aggregators.dnc(t, num_byzantine=1, key=k,
                                               subsample_dim=20, num_iterations=4))(
        {"w": jnp.asarray(x)}, key)
    np.testing.assert_allclose(np.asarray(out["w"], np.float64),
                               H.ref_dnc(x.astype(np.float64), 1, coords),
                               rtol=1e-5, atol=1e-6)


def test_dnc_fixed_cases():
    dnc = jax.jit(lambda t: aggregators.dnc(t, num_byzantine=2, key=jax.random.key(0)))
    # f identical far rows are removed (ALIE / FOE shape); 4 honest rows and an
    # honest-looking one.
    honest = np.array([[1.0, 0.0], [1.2, 0.1], [0.9, -0.1], [1.1, 0.0], [1.0, 0.1]])
    x = np.vstack([honest, [[-20.0, 30.0]] * 2]).astype(np.float32)
    out = dnc({"w": jnp.asarray(x)})
    np.testing.assert_allclose(out["w"], H.ref_dnc(x.astype(np.float64), 2, [range(2)]),
                               rtol=1e-6)
    assert np.all(np.asarray(out["w"])[0] > 0.9)
    # Two different Byzantine rows: one near the mean along the top singular
    # direction is kept (DnC's scores are projections, not distances).
    x = np.array([[0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [10, 0], [2, 1]],
                 np.float32)
    out = dnc({"w": jnp.asarray(x)})
    np.testing.assert_allclose(out["w"], [1 / 3, 1 / 6], rtol=1e-6)
    with pytest.raises(ValueError, match="dnc: filter_fraction"):
        aggregators.dnc({"w": jnp.asarray(x)}, num_byzantine=2,
                        key=jax.random.key(0), filter_fraction=3.5)


def test_signguard_filters_norms_then_signs():
    x = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0], [-1.5, -1.5], [40.0, 40.0],
                  [0.01, 0.01], [2.0, 2.5]], np.float32)
    sg = jax.jit(lambda u: aggregators.signguard({"w": jnp.asarray(x)},
                                                 num_byzantine=2, upper_bound=u))
    out = sg(3.0)
    # median norm M = |(2, 1)|; (40, 40) is above 3M, (0.01, 0.01) below 0.1M;
    # (-1.5, -1.5) is the minority sign cluster; (2, 2.5) is clipped to M.
    m = np.sqrt(5.0)
    kept = [x[0], x[1], x[2], x[6] * m / np.linalg.norm(x[6])]
    np.testing.assert_allclose(out["w"], np.mean(kept, 0), rtol=1e-6)
    # Bounds are keywords (traced here): a huge upper bound lets (40, 40) in.
    wide = sg
    np.testing.assert_allclose(
        wide(100.0)["w"], H.ref_signguard(x.astype(np.float64), 2, upper=100.0),
        rtol=1e-6)


def test_clipped_clustering_fixed_cases():
    cc = jax.jit(lambda t: aggregators.clipped_clustering(t, num_byzantine=1))
    # The input and expected output of Blades' own test of Clippedclustering
    # (one round, so its history median is this round's median).
    x = {"w": jnp.array([[1.0, 2.0, 3.0], [-1.0, 4.0, -1.0], [2.0, 2.0, 3.0],
                         [3.0, 1.0, 3.0]])}
    np.testing.assert_allclose(cc(x)["w"], [1.9596, 1.6532, 2.9596], atol=1e-4)
    # Two different bad rows: the one closer (in angle) to the identical honest
    # rows than to the other bad row joins their cluster and is averaged.
    h, b1, b2 = [1.0, 0.0, 0.0], [0.9, 0.43588989, 0.0], [-1.0, 0.0, 0.0]
    out = cc({"w": jnp.array([h, h, b1, b2])})
    np.testing.assert_allclose(out["w"], np.mean([h, h, b1], 0), rtol=1e-6)


def test_average_linkage_matches_scipy_on_tie_free_inputs():
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    rng = np.random.default_rng(5)
    fn = jax.jit(_average_linkage_largest)
    for n in (4, 7):
        for _ in range(5):
            dist = H.ref_cosine_distances(rng.normal(size=(n, 4)))
            labels = fcluster(linkage(squareform(dist, checks=False), "average"), 2,
                              criterion="maxclust")
            clusters = [set(np.flatnonzero(labels == c).tolist()) for c in (1, 2)]
            ours = set(np.flatnonzero(np.asarray(fn(jnp.asarray(dist, jnp.float32))))
                       .tolist())
            assert ours == max(clusters, key=len)


def test_dnc_vmaps_over_keys_and_stacks_without_retracing():
    rng = np.random.default_rng(6)
    xs = tree(rng.normal(size=(3 * 5, D)).reshape(3, 5, D).reshape(-1, D))
    xs = jax.tree_util.tree_map(lambda v: v.reshape((3, 5) + v.shape[1:]), xs)
    keys = jax.random.split(jax.random.key(7), 3)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(t, k):
        return jax.vmap(lambda ti, ki: aggregators.dnc(
            ti, num_byzantine=1, key=ki, subsample_dim=4, num_iterations=3))(t, k)

    out = batched(xs, keys)
    for i in range(3):
        one = jitted("dnc", 1, 1)(jax.tree_util.tree_map(lambda v: v[i], xs), keys[i])
        np.testing.assert_allclose(flat({k: v[i] for k, v in out.items()}), flat(one),
                                   rtol=1e-5, atol=1e-6)
    batched(jax.tree_util.tree_map(lambda v: v * 2, xs), jax.random.split(keys[0], 3))


def test_random_aggregator_in_the_pipeline_splits_its_key_every_round():
    x = tree(np.random.default_rng(8).normal(size=(5, D)))
    params = jax.tree_util.tree_map(lambda v: jnp.zeros(v.shape[1:]), x)
    key = jax.random.key(9)
    tx = optim.aggregate("dnc", num_byzantine=1, key=key, **DNC_SETTINGS[1])
    state = tx.init(params)
    assert isinstance(state, optim.RandomAggregateState)
    update = jax.jit(tx.update)
    for _ in range(2):
        key, sub = jax.random.split(key)
        out, state = update(x, state)
        chex.assert_trees_all_close(out, jitted("dnc", 1, 1)(x, sub))
        np.testing.assert_array_equal(jax.random.key_data(state.key),
                                      jax.random.key_data(key))
    with pytest.raises(ValueError, match="'dnc' is random; pass key="):
        optim.aggregate("dnc", num_byzantine=1)
    s = optax.chain(*optim.stages("dsgd", num_workers=5, num_byzantine=1,
                                  aggregator="dnc", attack="sign_flip",
                                  key=jax.random.key(0)))
    u, _ = jax.jit(s.update)(x, s.init(params), params)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(u))
    with pytest.raises(ValueError, match="random and needs key="):
        attacks.adaptive_alie(jax.tree_util.tree_map(lambda v: v[:4], x),
                              num_byzantine=1, aggregator="dnc")
