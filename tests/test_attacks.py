"""Tests of byzjax.attacks against slow NumPy references of their definitions."""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators, attacks
from tests.helpers import flat_params as flat_vec
from tests.helpers import flatten as flat_rows
from tests.helpers import ref_mean as np_mean

# --------------------------------------------------------------------- helpers
SHAPES = {"a": (3,), "b": (2, 2)}  # one pytree structure, two leaves


def make_honest(rng, n_honest, scale=1.0):
    return {k: jnp.asarray(rng.normal(size=(n_honest,) + s) * scale, jnp.float32)
            for k, s in SHAPES.items()}


# ------------------------------------------------------------ NumPy references
def np_std(x, ddof):
    n, d = x.shape
    mu = np_mean(x)
    out = np.zeros(d)
    for j in range(d):
        s = 0.0
        for i in range(n):
            s += (x[i, j] - mu[j]) ** 2
        out[j] = math.sqrt(s / (n - ddof))
    return out


def np_phi_inv(p):
    """Inverse standard normal CDF by bisection on 0.5 * (1 + erf(x / sqrt 2))."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def np_attack(name, x, f, **kw):
    """Reference Byzantine rows [f, d] from honest rows x [n_h, d]."""
    g = np_mean(x)
    if name == "sign_flip":
        row = -g
    elif name == "fall_of_empires":
        row = (1 - kw.get("eps", 1.1)) * g
    elif name == "inner_product_manipulation":
        row = -kw.get("tau", 2.0) * g
    elif name == "a_little_is_enough":
        ddof = kw.get("ddof", 1)
        if kw.get("z_max"):
            n = x.shape[0] + f
            s = math.floor(n / 2 + 1) - f
            eps = np_phi_inv((n - s) / n)
        elif "tau" in kw:  # ByzFL's ALittleIsEnough: gbar + tau * sigma
            row = g + kw["tau"] * np_std(x, ddof)
            return np.stack([row] * f) if f else np.zeros((0, g.size))
        else:
            eps = kw.get("eps", 1.5)
        row = g - eps * np_std(x, ddof)
    elif name == "inf":
        row = np.full_like(g, np.inf)
    elif name == "neg_inf":
        row = np.full_like(g, -np.inf)
    elif name == "nan":
        row = np.full_like(g, np.nan)
    elif name == "mimic":
        row = x[kw.get("index", 0)].copy()
    else:
        raise KeyError(name)
    return np.stack([row] * f) if f else np.zeros((0, g.size))


# ----------------------------------------------------------- fixed attacks
CASES = [
    ("sign_flip", {}),
    ("fall_of_empires", {}),
    ("fall_of_empires", {"eps": 1.9}),
    ("a_little_is_enough", {}),
    ("a_little_is_enough", {"eps": 0.7, "ddof": 0}),
    ("a_little_is_enough", {"z_max": True}),
    ("a_little_is_enough", {"tau": 1.5}),
    ("inner_product_manipulation", {}),
    ("inner_product_manipulation", {"tau": 0.1}),
    ("inf", {}),
    ("neg_inf", {}),
    ("nan", {}),
    ("mimic", {}),
    ("mimic", {"index": 2}),
]


@settings(max_examples=25, deadline=None)
@given(case=st.sampled_from(CASES), n_honest=st.sampled_from([3, 5]),
       f=st.sampled_from([0, 1, 3]), seed=st.integers(0, 2**31 - 1))
def test_attack_matches_numpy_reference(case, n_honest, f, seed):
    name, kw = case
    honest = make_honest(np.random.default_rng(seed), n_honest)
    out = attacks.get(name)(honest, num_byzantine=f, **kw)
    for k, s in SHAPES.items():
        assert out[k].shape == (f,) + s and out[k].dtype == jnp.float32
    want = np_attack(name, flat_rows(honest), f, **kw)
    np.testing.assert_allclose(flat_rows(out), want, rtol=2e-5, atol=2e-6)


def test_alie_convention_is_sample_std_and_minus_sign():
    honest = {"w": jnp.array([[0.0], [2.0]])}  # mean 1, sample std sqrt(2)
    out = attacks.get("alie")(honest, num_byzantine=1, eps=1.0)
    np.testing.assert_allclose(out["w"], [[1 - math.sqrt(2)]], rtol=1e-6)
    out0 = attacks.get("little")(honest, num_byzantine=1, eps=1.0, ddof=0)
    np.testing.assert_allclose(out0["w"], [[0.0]], atol=1e-7)


@pytest.mark.parametrize("n,f", [(50, 24), (15, 5), (25, 6), (11, 5), (4, 0)])
def test_alie_z_max_matches_bisection(n, f):
    s = math.floor(n / 2 + 1) - f
    assert attacks.alie_z_max(n, f) == pytest.approx(np_phi_inv((n - s) / n), abs=1e-9)


def test_alie_z_max_known_value():
    # Baruch et al. 2019: n = 50, f = 24 gives s = 2 and z_max = Phi^-1(0.96) ~ 1.75.
    assert attacks.alie_z_max(50, 24) == pytest.approx(1.7507, abs=1e-4)


def test_sign_flip_own_negates_own_rows():
    rng = np.random.default_rng(0)
    honest, own = make_honest(rng, 3), make_honest(rng, 2)
    out = attacks.get("sign_flip_own")(honest, num_byzantine=2, byzantine_own=own)
    np.testing.assert_array_equal(flat_rows(out), -flat_rows(own))


@pytest.mark.parametrize("ddof", [0, 1])
def test_thesis_little_shifts_own_rows_by_their_own_std(ddof):
    """Fabris (2023): each Byzantine worker sends own - eps * sigma_B, sigma_B
    over the Byzantine workers' own rows (a NumPy loop as reference)."""
    rng = np.random.default_rng(5)
    honest, own = make_honest(rng, 4), make_honest(rng, 3)
    own = jax.tree_util.tree_map(lambda x: x.at[1].set(x[0]), own)  # a tied row
    x = flat_rows(own).astype(np.float64)
    sigma = np.array([np.sqrt(sum((x[i, j] - x[:, j].mean()) ** 2 for i in range(3))
                              / (3 - ddof)) for j in range(x.shape[1])])
    for eps in (1.0, 0.5):
        out = attacks.get("little_own")(honest, num_byzantine=3, byzantine_own=own,
                                        eps=eps, ddof=ddof)
        np.testing.assert_allclose(flat_rows(out), x - eps * sigma[None],
                                   rtol=1e-5, atol=1e-6)
    default = attacks.get("alie_own")(honest, num_byzantine=3, byzantine_own=own)
    np.testing.assert_allclose(flat_rows(default), x - np.sqrt(
        ((x - x.mean(0)) ** 2).sum(0) / 2)[None], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="more than 1"):
        attacks.get("alie_own")(honest, num_byzantine=1,
                                byzantine_own=make_honest(rng, 1))
    with pytest.raises(ValueError, match="byzantine_own"):
        attacks.get("alie_own")(honest, num_byzantine=3)


def test_thesis_empire_scales_own_rows():
    rng = np.random.default_rng(6)
    honest, own = make_honest(rng, 3), make_honest(rng, 2)
    out = attacks.get("empire_own")(honest, num_byzantine=2, byzantine_own=own)
    np.testing.assert_allclose(flat_rows(out), -0.9 * flat_rows(own), rtol=1e-6)
    out = attacks.get("foe_own")(honest, num_byzantine=2, byzantine_own=own, eps=1.1)
    np.testing.assert_allclose(flat_rows(out), -0.1 * flat_rows(own), rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("name", ["label_flip", "none"])
def test_data_level_attacks_return_own_rows(name):
    rng = np.random.default_rng(1)
    honest, own = make_honest(rng, 3), make_honest(rng, 2)
    out = attacks.get(name)(honest, num_byzantine=2, byzantine_own=own)
    np.testing.assert_array_equal(flat_rows(out), flat_rows(own))
    assert attacks.entry(name).data_level
    with pytest.raises(ValueError, match="byzantine_own"):
        attacks.get(name)(honest, num_byzantine=2)


def test_flip_labels():
    y = jnp.arange(10, dtype=jnp.int32)
    out = attacks.flip_labels(y, 10)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, [9 - int(v) for v in range(10)])
    small = attacks.flip_labels(jnp.array([[0, 2]], jnp.uint8), 3)
    assert small.dtype == jnp.uint8
    np.testing.assert_array_equal(small, [[2, 0]])


def test_gaussian_noise_statistics_and_key():
    rng = np.random.default_rng(2)
    honest = {"w": jnp.asarray(rng.normal(size=(4, 2000)), jnp.float32)}
    g = np_mean(flat_rows(honest))
    k = jax.random.key(3)
    out = attacks.get("gaussian")(honest, num_byzantine=3, key=k, scale=0.5)
    noise = flat_rows(out) - g[None]
    assert abs(noise.mean()) < 0.03
    assert abs(noise.std() - 0.5) < 0.02
    assert not np.allclose(noise[0], noise[1])  # rows are independent
    again = attacks.get("gaussian")(honest, num_byzantine=3, key=k, scale=0.5)
    np.testing.assert_array_equal(out["w"], again["w"])
    other = attacks.get("gaussian")(honest, num_byzantine=3, key=jax.random.key(4),
                                    scale=0.5)
    assert not np.allclose(out["w"], other["w"])
    with pytest.raises(ValueError, match="key"):
        attacks.get("gaussian")(honest, num_byzantine=1, key=None)


# --------------------------------------------------------------- registry
def test_registry_names_aliases_and_flags():
    want = {"sign_flip", "sign_flip_own", "fall_of_empires", "a_little_is_enough",
            "inf", "neg_inf", "nan", "mimic", "gaussian", "label_flip", "none",
            "adaptive_alie", "adaptive_foe"}
    assert want <= set(attacks.names())
    for alias in ("foe", "empire", "Fall-of-Empires"):
        assert attacks.entry(alias).name == "fall_of_empires"
    for alias in ("ALIE", "little"):
        assert attacks.entry(alias).name == "a_little_is_enough"
    assert attacks.entry("ipm").name == "inner_product_manipulation"
    assert attacks.entry("rop").name == "relocated_orthogonal_perturbation"
    assert attacks.entry("-inf").name == "neg_inf"
    for name in attacks.names():
        # Flags read against each attack's own signature, not pinned to names.
        e = attacks.entry(name)
        params = inspect.signature(e.fn).parameters
        assert e.needs_key == ("key" in params
                               and params["key"].default is inspect.Parameter.empty)
        assert e.needs_own == ("byzantine_own" in params)
        assert e.adaptive == ("aggregator" in params)
        assert e.stateful == ("center" in params)
        assert not e.data_level or e.needs_own
    assert attacks.entry("label_flip").data_level and attacks.entry("none").data_level
    for name in ("sign_flip_own", "alie_own", "foe_own"):
        assert attacks.entry(name).needs_own
    assert attacks.entry("little_own").name == "a_little_is_enough_own"
    assert attacks.entry("empire_own").name == "fall_of_empires_own"
    with pytest.raises(ValueError, match="unknown attack"):
        attacks.get("no_such_attack")


def test_bad_configurations_fail_early():
    honest = make_honest(np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match="ddof"):
        attacks.get("alie")(honest, num_byzantine=1)
    with pytest.raises(TypeError, match="Python int"):
        attacks.get("foe")(honest, num_byzantine=jnp.int32(1))
    with pytest.raises(ValueError, match="either eps or z_max"):
        attacks.get("alie")(make_honest(np.random.default_rng(0), 3), num_byzantine=1,
                            eps=1.0, z_max=True)
    with pytest.raises(ValueError, match="index"):
        attacks.get("mimic")(honest, num_byzantine=1, index=5)


def test_eps_is_traced_and_vmappable():
    honest = make_honest(np.random.default_rng(5), 4)
    eps = jnp.array([0.0, 1.5, 3.0])
    for name in ("foe", "alie"):
        fn = jax.jit(jax.vmap(lambda e, name=name: attacks.get(name)(
            honest, num_byzantine=2, eps=e)))
        batched = fn(eps)
        for i, e in enumerate([0.0, 1.5, 3.0]):
            single = attacks.get(name)(honest, num_byzantine=2, eps=e)
            for k in SHAPES:
                np.testing.assert_allclose(batched[k][i], single[k], rtol=1e-6,
                                           atol=1e-6)
    own = make_honest(np.random.default_rng(6), 3)
    for name in ("foe_own", "alie_own"):
        fn = jax.jit(jax.vmap(lambda e, name=name: attacks.get(name)(
            honest, num_byzantine=3, byzantine_own=own, eps=e)))
        batched = fn(eps)
        for i, e in enumerate([0.0, 1.5, 3.0]):
            single = attacks.get(name)(honest, num_byzantine=3, byzantine_own=own,
                                       eps=e)
            for k in SHAPES:
                np.testing.assert_allclose(batched[k][i], single[k], rtol=1e-6,
                                           atol=1e-6)


# --------------------------------------------------------------- adaptive
def _np_coordinate_median(x, f):
    del f
    n, d = x.shape
    out = np.zeros(d)
    for j in range(d):
        col = sorted(x[:, j])
        out[j] = col[n // 2] if n % 2 else (col[n // 2 - 1] + col[n // 2]) / 2
    return out


def _np_trimmed_mean(x, f):
    n, d = x.shape
    out = np.zeros(d)
    for j in range(d):
        col = sorted(x[:, j])
        out[j] = sum(col[f:n - f]) / (n - 2 * f)
    return out


def _jax_rowwise(np_like):
    """A jnp aggregator over a pytree stack, from a per-coordinate definition."""
    def agg(stack, *, num_byzantine):
        def leaf(x):
            n = x.shape[0]
            s = jnp.sort(x.reshape(n, -1), axis=0)
            if np_like == "median":
                out = jnp.median(s, axis=0)
            else:
                out = jnp.mean(s[num_byzantine:n - num_byzantine], axis=0)
            return out.reshape(x.shape[1:])
        return jax.tree_util.tree_map(leaf, stack)
    return agg


LOCAL_AGGREGATORS = {
    "local_median": (_jax_rowwise("median"), _np_coordinate_median),
    "local_trimmed_mean": (_jax_rowwise("trimmed"), _np_trimmed_mean),
}
# A fixed small set of registered rules (each costs a compilation).
REGISTRY_CANDIDATES = ["mean", "trimmed_mean", "coordinate_median", "krum"]
CANDIDATES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0]


def _aggregator_params():
    """(base, aggregator) pairs: local rules with both bases, registered rules
    with ALIE only (keeps the runtime small as rules get registered)."""
    out = [(b, a) for a in LOCAL_AGGREGATORS for b in ("alie", "foe")]
    for name in REGISTRY_CANDIDATES:
        out.append(pytest.param("alie", name, marks=pytest.mark.skipif(
            name not in aggregators.AGGREGATORS, reason=f"{name} not registered yet")))
    return out


def _damage(agg, honest_rows, byz_rows, f_decl, template):
    """||F(honest ++ byz) - gbar|| with F a jnp aggregator or a NumPy reference."""
    stack = np.concatenate([honest_rows, byz_rows], axis=0)
    if callable(agg) and not isinstance(agg, str):
        out = agg(stack, f_decl)
    else:
        tree = _unflatten(stack, template)
        out = flat_vec(_jitted(agg, f_decl)(tree))
    return float(np.linalg.norm(out - np_mean(honest_rows)))


_JITTED = {}


def _jitted(name, f):
    if (name, f) not in _JITTED:
        _JITTED[name, f] = jax.jit(lambda t: aggregators.get(name)(t, num_byzantine=f))
    return _JITTED[name, f]


def _unflatten(rows, template):
    n = rows.shape[0]
    out, start = {}, 0
    for k in sorted(template):
        size = int(np.prod(template[k]))
        out[k] = jnp.asarray(rows[:, start:start + size].reshape((n,) + template[k]),
                             jnp.float32)
        start += size
    return out


@pytest.mark.parametrize("base,aggregator", _aggregator_params())
def test_adaptive_is_at_least_as_damaging_as_every_candidate(base, aggregator):
    n_honest, f = 5, 2
    rng = np.random.default_rng(11)
    honest = make_honest(rng, n_honest)
    honest = jax.tree_util.tree_map(lambda x: x + 0.5, honest)  # nonzero mean
    if aggregator in LOCAL_AGGREGATORS:
        jax_agg, np_agg = LOCAL_AGGREGATORS[aggregator]
    else:
        jax_agg, np_agg = aggregator, aggregator
    rows, eps = attacks.adaptive(honest, num_byzantine=f, aggregator=jax_agg,
                                 base=base, candidates=jnp.array(CANDIDATES),
                                 return_eps=True)
    assert float(eps) in CANDIDATES
    x = flat_rows(honest)
    full = "a_little_is_enough" if base == "alie" else "fall_of_empires"
    np.testing.assert_allclose(flat_rows(rows), np_attack(full, x, f, eps=float(eps)),
                               rtol=1e-5, atol=1e-5)
    chosen = _damage(np_agg, x, flat_rows(rows), f, SHAPES)
    damages = [_damage(np_agg, x, np_attack(full, x, f, eps=c), f, SHAPES)
               for c in CANDIDATES]
    assert chosen >= max(damages) - 1e-4 * (1 + max(damages))
    assert max(damages) > min(damages) + 1e-3  # the candidates really differ


def test_adaptive_traces_the_aggregator_once_under_jit():
    calls = []

    def counting_mean(stack, *, num_byzantine):
        calls.append(num_byzantine)
        return aggregators.mean(stack, num_byzantine=num_byzantine)

    honest = make_honest(np.random.default_rng(0), 5)
    fn = jax.jit(lambda h, c: attacks.adaptive(h, num_byzantine=2,
                                               aggregator=counting_mean, base="foe",
                                               candidates=c, return_eps=True))
    cands = jnp.linspace(0.0, 10.0, 12)
    rows, eps = fn(honest, cands)
    assert len(calls) == 1  # one trace for all 12 candidates (vmap, no Python loop)
    assert float(eps) == pytest.approx(10.0)  # against the mean, the largest eps wins
    fn(honest, cands + 1.0)
    assert len(calls) == 1  # no retrace for new candidate values


def test_adaptive_declared_f_and_errors():
    honest = make_honest(np.random.default_rng(3), 5)
    seen = []

    def spy(stack, *, num_byzantine):
        seen.append((jax.tree_util.tree_leaves(stack)[0].shape[0], num_byzantine))
        return aggregators.mean(stack)

    attacks.adaptive(honest, num_byzantine=2, aggregator=spy,
                     aggregator_kwargs={"num_byzantine": 3})
    assert seen == [(7, 3)]  # n = 5 honest + 2 Byzantine rows; declared f = 3
    with pytest.raises(ValueError, match="candidates"):
        attacks.adaptive(honest, num_byzantine=1, aggregator="mean", eps=1.0)
    with pytest.raises(ValueError, match="num_workers"):
        attacks.adaptive(honest, num_byzantine=1, aggregator="mean", num_workers=9)
    with pytest.raises(ValueError, match="base"):
        attacks.adaptive(honest, num_byzantine=1, aggregator="mean", base="sign_flip")
    with pytest.raises(ValueError, match="unknown aggregator"):
        attacks.adaptive(honest, num_byzantine=1, aggregator="no_such_rule")
    rows = attacks.get("adaptive_foe")(honest, num_byzantine=0, aggregator="mean")
    assert rows["a"].shape == (0, 3)


def test_adaptive_nan_damage_counts_as_maximal():
    def fragile(stack, *, num_byzantine):
        # returns NaN when any row has a coordinate below -5
        bad = jnp.any(jnp.concatenate([x.reshape(x.shape[0], -1) for x in
                                       jax.tree_util.tree_leaves(stack)], 1) < -5)
        out = aggregators.mean(stack)
        return jax.tree_util.tree_map(lambda o: jnp.where(bad, jnp.nan, o), out)

    honest = {"w": jnp.ones((4, 2))}
    _, eps = attacks.adaptive(honest, num_byzantine=1, aggregator=fragile, base="foe",
                              candidates=jnp.array([0.0, 3.0, 9.0]), return_eps=True)
    assert float(eps) == 9.0  # (1 - 9) * 1 = -8 < -5 -> NaN aggregate


@pytest.mark.parametrize("base", ["alie", "foe"])
def test_adaptive_batch_size_gives_same_choice_with_one_trace(base):
    calls = []

    def counting_median(stack, *, num_byzantine):
        calls.append(1)
        return LOCAL_AGGREGATORS["local_median"][0](stack, num_byzantine=num_byzantine)

    honest = jax.tree_util.tree_map(lambda x: x + 0.3,
                                    make_honest(np.random.default_rng(21), 6))
    cands = jnp.array(CANDIDATES)
    full = attacks.adaptive(honest, num_byzantine=3, aggregator=counting_median,
                            base=base, candidates=cands, return_eps=True)
    for batch_size, traces in [(4, 1), (1, 1), (3, 2)]:  # 3: a remainder chunk
        calls.clear()
        fn = jax.jit(lambda h, b=batch_size: attacks.adaptive(
            h, num_byzantine=3, aggregator=counting_median, base=base,
            candidates=cands, return_eps=True, batch_size=b))
        rows, eps = fn(honest)
        assert len(calls) == traces
        assert float(eps) == float(full[1])
        np.testing.assert_allclose(flat_rows(rows), flat_rows(full[0]), rtol=1e-6)


def test_byzfl_parameter_mapping():
    # ByzFL's ALittleIsEnough(tau) sends mean + tau * std (ddof=1) and its
    # InnerProductManipulation(tau) sends -tau * mean (their definitions):
    # byzjax's eps = -tau and eps = 1 + tau give the same rows.
    honest = {"w": jnp.array([[0.0, 1.0, 4.0], [2.0, 1.0, -1.0], [1.0, 5.0, 0.5]])}
    x = np.asarray(honest["w"], np.float64)
    tau = 1.5
    alie = attacks.a_little_is_enough(honest, num_byzantine=2, eps=-tau)["w"]
    np.testing.assert_allclose(alie[0], x.mean(0) + tau * x.std(0, ddof=1), rtol=1e-6)
    tau = 2.0
    ipm = attacks.fall_of_empires(honest, num_byzantine=2, eps=1.0 + tau)["w"]
    np.testing.assert_allclose(ipm[1], -tau * x.mean(0), rtol=1e-6)
