"""Min-Max, Min-Sum, ROP, IPM and ALIE's ByzFL spelling against NumPy references
of their definitions (``tests/helpers.py``), and ROP's view of the server."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import aggregators, attacks, optim
from tests.helpers import flatten as flat_rows
from tests.helpers import (
    ref_halving_search,
    ref_mean,
    ref_min_max_admissible,
    ref_min_max_attack,
    ref_min_max_direction,
    ref_min_max_gamma_exact,
    ref_rop,
    ref_std,
)

SHAPES = {"a": (3,), "b": (2, 2)}  # one pytree, two leaves (d = 7)


def make_honest(rng, n_honest, *, offset=0.5, duplicate=False, rounded=False):
    out = {k: rng.normal(size=(n_honest,) + s) + offset for k, s in SHAPES.items()}
    if rounded:
        out = {k: np.round(v * 2) / 2 for k, v in out.items()}
    if duplicate:
        out = {k: np.concatenate([v[:1], v[:-1]]) for k, v in out.items()}
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


# -------------------------------------------------------------- Min-Max, Min-Sum
BOUNDS = {"min_max": ("max", "max"), "min_sum": ("sum", "max")}
# (one shape throughout: eager calls then reuse their compiled operations)
INPUTS = [{}, {"duplicate": True}, {"rounded": True, "duplicate": True}]


@pytest.mark.parametrize("name", ["min_max", "min_sum"])
@pytest.mark.parametrize("direction", ["unit_vector", "std", "sign"])
def test_min_max_and_min_sum_match_the_numpy_search(name, direction):
    bound, threshold = BOUNDS[name]
    for seed, kind in enumerate(INPUTS):
        honest = make_honest(np.random.default_rng(seed), 5, **kind)
        x = flat_rows(honest)
        out = attacks.get(name)(honest, num_byzantine=3, direction=direction)
        for k, s in SHAPES.items():
            assert out[k].shape == (3,) + s and out[k].dtype == jnp.float32
        rows = flat_rows(out)
        want, gamma_ref = ref_min_max_attack(x, 3, bound, direction)
        np.testing.assert_allclose(rows, want, rtol=1e-5, atol=1e-4)
        # The rows are gbar + gamma p with the search's gamma ...
        p = ref_min_max_direction(x, direction)
        gamma = float(np.dot(rows[0] - ref_mean(x), p) / np.dot(p, p))
        np.testing.assert_allclose(rows[0], ref_mean(x) + gamma * p, rtol=1e-5,
                                   atol=1e-5)
        # ... which is admissible, and within 2 * tolerance of the largest one
        # (closed form), so that gamma + 2 * tolerance is not.
        exact = ref_min_max_gamma_exact(x, bound, direction, threshold)
        assert abs(gamma - gamma_ref) <= 2e-5
        assert ref_min_max_admissible(x, ref_mean(x) + gamma * p * (1 - 1e-6), bound)
        assert gamma <= exact * (1 + 1e-5) + 1e-6
        assert exact < gamma + 2e-5 + 1e-5 * exact
        above = gamma + 2e-5 + 2e-5 * exact
        assert not ref_min_max_admissible(x, ref_mean(x) + above * p, bound)


def test_min_sum_threshold_min_is_the_authors_code():
    honest = make_honest(np.random.default_rng(7), 5)
    x = flat_rows(honest)
    for threshold in ("max", "min"):
        out = attacks.min_sum(honest, num_byzantine=2, threshold=threshold)
        want, _ = ref_min_max_attack(x, 2, "sum", threshold=threshold)
        np.testing.assert_allclose(flat_rows(out), want, rtol=1e-5, atol=1e-4)
    low = float(attacks.min_max_gamma(honest, bound="sum", threshold="min"))
    high = float(attacks.min_max_gamma(honest, bound="sum"))
    assert 0 < low < high


def test_min_max_equal_honest_rows_send_the_row_and_f0_sends_none():
    row = np.array([0.25, -1.0, 3.0, 0.5, 0.5, 2.0, -0.75])
    honest = {"a": jnp.asarray(np.tile(row[:3], (5, 1)), jnp.float32),
              "b": jnp.asarray(np.tile(row[3:].reshape(2, 2), (5, 1, 1)), jnp.float32)}
    for name in ("min_max", "min_sum"):
        for direction in ("unit_vector", "std", "sign"):
            out = attacks.get(name)(honest, num_byzantine=3, direction=direction)
            np.testing.assert_allclose(flat_rows(out), np.tile(row, (3, 1)),
                                       rtol=1e-6)
        empty = attacks.get(name)(honest, num_byzantine=0)
        assert empty["a"].shape == (0, 3) and empty["b"].shape == (0, 2, 2)
    # A non-finite honest entry leaves no candidate admissible: the mean.
    bad = make_honest(np.random.default_rng(1), 5)
    bad["a"] = bad["a"].at[0, 0].set(jnp.nan)
    out = attacks.min_max(bad, num_byzantine=3)
    np.testing.assert_allclose(flat_rows(out), np.tile(ref_mean(flat_rows(bad)),
                                                       (3, 1)), rtol=1e-6)
    # The search never goes beyond 2 gamma_init (here gamma* is about 2.8).
    honest = make_honest(np.random.default_rng(0), 5)
    x = flat_rows(honest)
    assert ref_min_max_gamma_exact(x, "max", "unit_vector") > 1.0
    out = attacks.min_max(honest, num_byzantine=3, gamma_init=0.25, tolerance=1e-4)
    p = ref_min_max_direction(x, "unit_vector")
    gamma = np.dot(flat_rows(out)[0] - ref_mean(x), p)
    assert 0.5 - 2e-4 <= gamma < 0.5


def test_min_max_is_jittable_and_vmappable():
    honest = make_honest(np.random.default_rng(3), 5)
    inits = jnp.array([10.0, 1.0, 0.3])
    tols = jnp.array([1e-5, 1e-3, 1e-4])
    fn = jax.jit(jax.vmap(lambda g, t: attacks.min_max(
        honest, num_byzantine=3, direction="std", gamma_init=g, tolerance=t)))
    batched = fn(inits, tols)
    for i in range(3):
        single = attacks.min_max(honest, num_byzantine=3, direction="std",
                                 gamma_init=float(inits[i]), tolerance=float(tols[i]))
        for k in SHAPES:
            np.testing.assert_allclose(batched[k][i], single[k], rtol=1e-6, atol=1e-6)
    # Min-Sum over a batch of honest stacks (scaling them scales gamma).
    honest_batch = jax.tree_util.tree_map(lambda v: jnp.stack([v, 2 * v]), honest)
    twice = jax.jit(jax.vmap(lambda h: attacks.min_sum(h, num_byzantine=3)))(
        honest_batch)
    np.testing.assert_allclose(
        flat_rows(jax.tree_util.tree_map(lambda v: v[1], twice)),
        2 * flat_rows(attacks.min_sum(honest, num_byzantine=3)), rtol=1e-4, atol=1e-4)


def test_min_max_halving_search_takes_log2_steps():
    calls = []

    def admissible(g):
        calls.append(g)
        return g <= 1.0

    assert ref_halving_search(admissible, 10.0, 1e-5) == pytest.approx(1.0, abs=2e-5)
    assert len(calls) == math.ceil(math.log2(10.0 / 1e-5))


def test_min_max_bad_configuration_fails_in_one_line():
    honest = make_honest(np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match="direction must be one of"):
        attacks.min_max(honest, num_byzantine=1, direction="unit")
    with pytest.raises(ValueError, match="gamma_init must be a number > 0"):
        attacks.ATTACKS.check_kwargs("min_max", {"gamma_init": 0.0})
    with pytest.raises(ValueError, match="n >= f \\+ 2"):
        attacks.ATTACKS.check("min_sum", num_workers=3, num_byzantine=2)
    assert attacks.entry("minmax").name == "min_max"
    assert attacks.entry("min_sum").strength is None


# ------------------------------------------------------------------------- ROP
def test_rop_matches_its_definition():
    rng = np.random.default_rng(11)
    honest = make_honest(rng, 5)
    x = flat_rows(honest)
    center_tree = {k: jnp.asarray(rng.normal(size=s), jnp.float32)
                   for k, s in SHAPES.items()}
    center = np.concatenate([np.asarray(center_tree[k]).ravel() for k in SHAPES])
    cases = [dict(), dict(angle=90.0, z=0.7), dict(reference_weight=0.3,
                                                    location_weight=0.4, z=2.0),
             dict(reference_weight=1.0, angle=45.0, z=1.0)]
    for kw in cases:
        for c_tree, c in ((center_tree, center), (None, None)):
            out = attacks.relocated_orthogonal_perturbation(
                honest, num_byzantine=2, center=c_tree, **kw)
            ref_kw = dict(kw)
            ref_kw.setdefault("z", attacks.rop_z_max(7, 2))
            np.testing.assert_allclose(flat_rows(out), ref_rop(x, 2, c, **ref_kw),
                                       rtol=1e-5, atol=1e-5)
    # Orthogonal to the reference the attackers expect (angle 90 / 270).
    out = attacks.get("rop")(honest, num_byzantine=1, center=center_tree, z=1.0)
    step = flat_rows(out)[0] - center
    reference = 0.9 * center + 0.1 * ref_mean(x)
    assert abs(np.dot(step, reference)) < 1e-5 * np.linalg.norm(reference)
    assert np.linalg.norm(step) == pytest.approx(1.0, rel=1e-5)


def test_rop_default_scale_is_the_authors_z_max():
    # s = floor(n/2 + 1) - f, Phi^-1((n - f - s) / (n - f)), over the honest workers.
    from statistics import NormalDist
    for n, f in ((25, 5), (7, 2), (15, 4), (11, 3)):
        s = math.floor(n / 2 + 1) - f
        assert attacks.rop_z_max(n, f) == pytest.approx(
            NormalDist().inv_cdf((n - f - s) / (n - f)), abs=1e-12)
    with pytest.raises(ValueError, match="pass z"):
        attacks.rop_z_max(4, 3)


def test_rop_is_vmappable_over_its_floats_and_handles_f0():
    honest = make_honest(np.random.default_rng(2), 4, duplicate=True)
    zs = jnp.array([0.0, 0.5, 3.0])
    angles = jnp.array([90.0, 270.0, 30.0])
    fn = jax.jit(jax.vmap(lambda z, a: attacks.get("rop")(honest, num_byzantine=2, z=z,
                                                     angle=a)))
    batched = fn(zs, angles)
    x = flat_rows(honest)
    for i in range(3):
        want = ref_rop(x, 2, z=float(zs[i]), angle=float(angles[i]))
        np.testing.assert_allclose(flat_rows(jax.tree_util.tree_map(
            lambda v, i=i: v[i], batched)), want, rtol=1e-5, atol=1e-5)
    empty = attacks.get("rop")(honest, num_byzantine=0)
    assert empty["a"].shape == (0, 3)
    entry = attacks.entry("rop")
    assert entry.stateful and entry.strength == "z" and not entry.adaptive


def test_rop_follows_the_servers_aggregate_in_the_pipeline():
    """The attack stage's center is the server's previous aggregate, round by
    round, with centered clipping (stateful) after a random pre-aggregator
    (bucketing: the attacker's copy draws the server's buckets)."""
    n, f = 9, 2
    s = optim.stages("resam", num_workers=n, num_byzantine=f, beta=0.5,
                     aggregator="centered_clipping", aggregator_kwargs={"radius": 1.0},
                     preaggregator="bucketing", preaggregator_kwargs={"bucket_size": 2},
                     attack="rop", attack_kwargs={"z": 2.0}, key=jax.random.key(4))
    params = {"w": jnp.zeros(3), "b": jnp.zeros(2)}
    states = [t.init(params) for t in s]
    rng = np.random.default_rng(5)

    @jax.jit
    def step(states, grads):
        ws, ats, rs, ss = states
        sent, ws = s.worker.update(grads, ws, params)
        center = ats.center
        attacked, ats = s.attack.update(sent, ats, params)
        agg, rs = s.robust.update(attacked, rs, params)
        return (ws, ats, rs, ss), sent, attacked, agg, center

    previous = jax.tree_util.tree_map(jnp.zeros_like, params)
    for _ in range(3):
        grads = {"w": jnp.asarray(rng.normal(size=(n, 3)) + 1, jnp.float32),
                 "b": jnp.asarray(rng.normal(size=(n, 2)), jnp.float32)}
        states, sent, attacked, agg, center = step(states, grads)
        for k in params:
            np.testing.assert_array_equal(center[k], previous[k])
        honest = jax.tree_util.tree_map(lambda v: v[:n - f], sent)
        want = attacks.get("rop")(honest, num_byzantine=f, center=center, z=2.0)
        for k in params:
            np.testing.assert_allclose(attacked[k][n - f:], want[k], rtol=1e-6)
        np.testing.assert_array_equal(states[1].center["w"], agg["w"])
        previous = agg


def test_rop_needs_the_server_and_sent_vectors():
    with pytest.raises(ValueError, match="attack_point='sent'"):
        optim.stages("dsgd", num_workers=5, num_byzantine=1, attack="rop",
                     attack_point="gradient")
    with pytest.raises(ValueError, match="pass server="):
        optim.byzantine_attack("rop", num_workers=5, num_byzantine=1)
    # MRA: a pair of centers, each field attacked around its own.
    s = optim.stages("mra", num_workers=5, num_byzantine=1, aggregator="mean",
                     attack="rop", attack_kwargs={"z": 1.0})
    params = {"w": jnp.zeros(2)}
    state = s.attack.init(params)
    assert isinstance(state.center, optim.MomentPair)
    pair = optim.MomentPair(m={"w": jnp.ones((5, 2))}, v={"w": jnp.ones((5, 2))})
    out, state = s.attack.update(pair, state, params)
    np.testing.assert_allclose(state.center.m["w"], aggregators.mean(out.m)["w"])


# ------------------------------------------------------------ ByzFL's spellings
def test_ipm_is_byzfl_inner_product_manipulation():
    honest = {"w": jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])}
    x = flat_rows(honest)
    assert attacks.entry("ipm").name == "inner_product_manipulation"
    assert attacks.entry("ipm").strength == "tau"
    for tau in (2.0, 0.1, 0.0):
        out = attacks.get("ipm")(honest, num_byzantine=2, tau=tau)
        np.testing.assert_allclose(flat_rows(out), np.tile(-tau * ref_mean(x), (2, 1)),
                                   rtol=1e-6)
    np.testing.assert_allclose(flat_rows(attacks.get("ipm")(honest, num_byzantine=1)),
                               [[-8.0, -10.0, -12.0]], rtol=1e-6)  # tau = 2
    # the same family as FOE: tau = eps - 1, bit for bit on these inputs
    foe = attacks.fall_of_empires(honest, num_byzantine=1, eps=3.0)
    np.testing.assert_array_equal(foe["w"], attacks.get("ipm")(honest,
                                                               num_byzantine=1)["w"])
    batched = jax.jit(jax.vmap(lambda t: attacks.get("ipm")(
        honest, num_byzantine=1, tau=t)))(jnp.array([0.5, 2.0]))
    np.testing.assert_allclose(batched["w"][:, 0], [-0.5 * ref_mean(x),
                                                    -2.0 * ref_mean(x)], rtol=1e-6)


def test_alie_takes_byzfl_tau_with_its_sign():
    honest = {"w": jnp.array([[0.0, 1.0, 4.0], [2.0, 1.0, -1.0], [1.0, 5.0, 0.5]])}
    x = flat_rows(honest)
    for tau in (1.5, -0.5):
        out = attacks.get("alie")(honest, num_byzantine=2, tau=tau)
        np.testing.assert_allclose(flat_rows(out)[1], ref_mean(x) + tau * ref_std(x),
                                   rtol=1e-6)
        np.testing.assert_array_equal(
            out["w"], attacks.get("alie")(honest, num_byzantine=2, eps=-tau)["w"])
    default = attacks.get("alie")(honest, num_byzantine=1)
    np.testing.assert_allclose(flat_rows(default)[0], ref_mean(x) - 1.5 * ref_std(x),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="^attack 'a_little_is_enough': eps and tau "
                       "both set its strength"):
        attacks.get("alie")(honest, num_byzantine=1, eps=1.0, tau=1.0)
    with pytest.raises(ValueError, match="eps and tau both set"):
        attacks.ATTACKS.check_kwargs("alie", {"eps": 1.0, "tau": -1.0})
    with pytest.raises(ValueError, match="tau or z_max"):
        attacks.get("alie")(honest, num_byzantine=1, tau=1.0, z_max=True)
    assert attacks.entry("alie").strength_aliases == ("tau",)
    attacks.ATTACKS.check_kwargs("alie", {"tau": 1.5})
