"""Tests of byzjax.optim against the update formulas written out in NumPy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import aggregators, attacks, optim
from byzjax._registry import Entry
from tests.helpers import flat_params as vec
from tests.helpers import flatten as rows
from tests.helpers import ref_mean as np_mean

SHAPES = {"a": (3,), "b": (2, 2)}
D = 7  # total coordinates


def params0():
    return {k: jnp.zeros(s, jnp.float32) for k, s in SHAPES.items()}


def grad_seq(rng, steps, n, scale=1.0, shift=0.0):
    """A list of `steps` stacks {leaf: [n, *shape]} of random gradients."""
    return [{k: jnp.asarray(rng.normal(size=(n,) + s) * scale + shift, jnp.float32)
             for k, s in SHAPES.items()} for _ in range(steps)]


def run(tx, grads, params=None):
    """Applies tx to each stack in `grads`; returns the list of outputs."""
    params = params0() if params is None else params
    state = tx.init(params)
    outs = []
    for g in grads:
        u, state = tx.update(g, state, params)
        outs.append(u)
    return outs, state


# -------------------------------------------------------------- worker stages
@settings(max_examples=20, deadline=None)
@given(n=st.sampled_from([2, 5]), max_norm=st.sampled_from([0.1, 1.0, 3.0, 100.0]),
       seed=st.integers(0, 2**31 - 1))
def test_clip_by_worker_norm(n, max_norm, seed):
    g = grad_seq(np.random.default_rng(seed), 1, n, scale=2.0)[0]
    out, _ = run(optim.clip_by_worker_norm(max_norm), [g])
    x, y = rows(g), rows(out[0])
    for i in range(n):
        norm = math.sqrt(sum(v * v for v in x[i]))
        want = x[i] * (max_norm / norm if norm > max_norm else 1.0)
        np.testing.assert_allclose(y[i], want, rtol=1e-5, atol=1e-6)
        assert np.linalg.norm(y[i]) <= max_norm * (1 + 1e-5)


def np_momentum(gs, beta, damp, nesterov):
    m = np.zeros_like(gs[0])
    outs = []
    for g in gs:
        m = beta * m + (1 - damp) * g
        outs.append(g + beta * m if nesterov else m.copy())
    return outs


@pytest.mark.parametrize("dampening", [None, 0.0, 0.3])
@pytest.mark.parametrize("nesterov", [False, True])
def test_worker_momentum(dampening, nesterov):
    beta, n = 0.8, 4
    gs = grad_seq(np.random.default_rng(0), 4, n)
    tx = optim.worker_momentum(num_workers=n, beta=beta, dampening=dampening,
                               nesterov=nesterov)
    outs, state = run(tx, gs)
    assert isinstance(state, optim.WorkerMomentumState)
    damp = beta if dampening is None else dampening
    want = np_momentum([rows(g) for g in gs], beta, damp, nesterov)
    for o, w in zip(outs, want):
        np.testing.assert_allclose(rows(o), w, rtol=1e-5, atol=1e-6)


def np_adam(gs, b1, b2, eps, bias_correction, mode, eps_root=0.0):
    m = np.zeros_like(gs[0])
    v = np.zeros_like(gs[0])
    outs = []
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = (m / (1 - b1 ** t), v / (1 - b2 ** t)) if bias_correction else (m, v)
        if mode == "moments":
            outs.append((mh, vh))
        elif mode == "simplified":
            outs.append(mh / np.sqrt(vh + eps_root + eps))
        else:
            outs.append(mh / (np.sqrt(vh + eps_root) + eps))
    return outs


@pytest.mark.parametrize("mode", ["direction", "simplified", "moments"])
@pytest.mark.parametrize("bias_correction", [True, False])
def test_worker_adam(mode, bias_correction):
    b1, b2, eps, n = 0.9, 0.99, 1e-3, 3
    gs = grad_seq(np.random.default_rng(1), 4, n)
    tx = optim.worker_adam(num_workers=n, b1=b1, b2=b2, eps=eps,
                           bias_correction=bias_correction,
                           output="moments" if mode == "moments" else "direction",
                           simplified=mode == "simplified", eps_root=1e-4)
    outs, state = run(tx, gs)
    assert int(state.count) == 4
    want = np_adam([rows(g) for g in gs], b1, b2, eps, bias_correction, mode,
                   eps_root=1e-4)
    for o, w in zip(outs, want):
        if mode == "moments":
            assert isinstance(o, optim.MomentPair)
            np.testing.assert_allclose(rows(o.m), w[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(rows(o.v), w[1], rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_allclose(rows(o), w, rtol=1e-4, atol=1e-6)


def test_worker_stage_configuration_errors():
    with pytest.raises(ValueError, match="num_workers"):
        optim.worker_momentum(num_workers=3.0, beta=0.9)
    with pytest.raises(ValueError, match="output"):
        optim.worker_adam(num_workers=3, output="both")
    with pytest.raises(ValueError, match="simplified"):
        optim.worker_adam(num_workers=3, output="moments", simplified=True)
    tx = optim.worker_momentum(num_workers=3, beta=0.9)
    g = grad_seq(np.random.default_rng(0), 1, 4)[0]
    with pytest.raises(ValueError, match="4 worker rows but num_workers=3"):
        tx.update(g, tx.init(params0()))


# -------------------------------------------------------------- attack stage
def test_byzantine_attack_replaces_last_rows():
    n, f = 6, 2
    g = grad_seq(np.random.default_rng(2), 1, n)[0]
    tx = optim.byzantine_attack("alie", num_workers=n, num_byzantine=f, eps=2.0)
    (out,), state = run(tx, [g])
    assert isinstance(state, optax.EmptyState)
    x, y = rows(g), rows(out)
    np.testing.assert_array_equal(y[:n - f], x[:n - f])
    honest = x[:n - f]
    mu = np_mean(honest)
    sd = np.sqrt(((honest - mu) ** 2).sum(0) / (n - f - 1))
    for i in range(n - f, n):
        np.testing.assert_allclose(y[i], mu - 2.0 * sd, rtol=1e-5, atol=1e-6)


def test_byzantine_attack_data_level_own_rows_and_zero_attackers():
    n = 5
    g = grad_seq(np.random.default_rng(3), 1, n)[0]
    for name in ("label_flip", "none"):
        tx = optim.byzantine_attack(name, num_workers=n, num_byzantine=2)
        (out,), _ = run(tx, [g])
        np.testing.assert_array_equal(rows(out), rows(g))
    (out,), _ = run(optim.byzantine_attack("sign_flip_own", num_workers=n,
                                           num_byzantine=2), [g])
    np.testing.assert_array_equal(rows(out)[3:], -rows(g)[3:])
    np.testing.assert_array_equal(rows(out)[:3], rows(g)[:3])
    (out,), _ = run(optim.byzantine_attack("foe_own", num_workers=n,
                                           num_byzantine=2), [g])
    np.testing.assert_allclose(rows(out)[3:], -0.9 * rows(g)[3:], rtol=1e-6)
    np.testing.assert_array_equal(rows(out)[:3], rows(g)[:3])
    (out,), _ = run(optim.byzantine_attack("inf", num_workers=n, num_byzantine=0), [g])
    np.testing.assert_array_equal(rows(out), rows(g))


def test_byzantine_attack_random_key_in_state_and_moment_pairs():
    n, f = 5, 2
    g = grad_seq(np.random.default_rng(4), 2, n)
    tx = optim.byzantine_attack("gaussian", num_workers=n, num_byzantine=f,
                                key=jax.random.key(0), scale=1.0)
    outs, state = run(tx, g)
    assert isinstance(state, optim.ByzantineAttackState)
    noise0 = rows(outs[0])[n - f:] - np_mean(rows(g[0])[:n - f])
    noise1 = rows(outs[1])[n - f:] - np_mean(rows(g[1])[:n - f])
    assert not np.allclose(noise0, noise1)  # fresh key every round
    with pytest.raises(ValueError, match="key"):
        optim.byzantine_attack("gaussian", num_workers=n, num_byzantine=f)
    # MomentPair: both fields attacked independently (FOE on m and on v).
    pair = optim.MomentPair(m=g[0], v=jax.tree_util.tree_map(jnp.square, g[1]))
    tx = optim.byzantine_attack("foe", num_workers=n, num_byzantine=f, eps=3.0)
    out, _ = tx.update(pair, tx.init(params0()))
    for field in ("m", "v"):
        x, y = rows(getattr(pair, field)), rows(getattr(out, field))
        np.testing.assert_array_equal(y[:n - f], x[:n - f])
        for i in range(n - f, n):
            np.testing.assert_allclose(y[i], -2.0 * np_mean(x[:n - f]), rtol=1e-5,
                                       atol=1e-6)


def test_byzantine_attack_errors():
    with pytest.raises(ValueError, match="num_byzantine"):
        optim.byzantine_attack("foe", num_workers=4, num_byzantine=4)
    with pytest.raises(ValueError, match="unknown attack"):
        optim.byzantine_attack("nope", num_workers=4, num_byzantine=1)
    with pytest.raises(ValueError, match="n >= f \\+ 2"):
        optim.byzantine_attack("alie", num_workers=3, num_byzantine=2)


# ------------------------------------------------ pre-aggregation/aggregation
def _random_permutation(stack, *, num_byzantine, key):
    del num_byzantine
    n = jax.tree_util.tree_leaves(stack)[0].shape[0]
    perm = jax.random.permutation(key, n)
    return jax.tree_util.tree_map(lambda x: x[perm], stack)


def test_pre_aggregate_callable_with_key_and_moment_pair():
    n = 6
    g = grad_seq(np.random.default_rng(5), 2, n)
    tx = optim.pre_aggregate(_random_permutation, num_byzantine=1,
                             key=jax.random.key(1))
    outs, state = run(tx, g)
    assert isinstance(state, optim.PreAggregateState)
    perms = []
    for o, x in zip(outs, g):
        xo, xi = rows(o), rows(x)
        perm = [int(np.argmin(np.abs(xi - r).sum(1))) for r in xo]
        np.testing.assert_array_equal(xo, xi[perm])
        perms.append(perm)
    assert sorted(perms[0]) == list(range(n))
    pair = optim.MomentPair(m=g[0], v=jax.tree_util.tree_map(lambda x: 2 * x, g[0]))
    out, _ = tx.update(pair, tx.init(params0()))
    np.testing.assert_allclose(rows(out.v), 2 * rows(out.m))  # same permutation


@pytest.mark.skipif("nnm" not in aggregators.PREAGGREGATORS,
                    reason="nnm not registered yet")
def test_pre_aggregate_registered_nnm_runs_in_chain():
    n, f = 7, 2
    tx = optim.resam(num_workers=n, num_byzantine=f, beta=0.9, preaggregator="nnm",
                     attack="alie")
    outs, _ = run(tx, grad_seq(np.random.default_rng(6), 2, n))
    assert all(np.all(np.isfinite(vec(o))) for o in outs)


def test_aggregate_mean_and_moment_pair():
    n = 4
    g = grad_seq(np.random.default_rng(7), 1, n)[0]
    tx = optim.aggregate("mean", num_byzantine=1)
    (out,), state = run(tx, [g])
    assert isinstance(state, optax.EmptyState)
    np.testing.assert_allclose(vec(out), np_mean(rows(g)), rtol=1e-6)
    for k, s in SHAPES.items():
        assert out[k].shape == s
    pair = optim.MomentPair(m=g, v=jax.tree_util.tree_map(jnp.square, g))
    out, _ = tx.update(pair, tx.init(params0()))
    np.testing.assert_allclose(vec(out.m), np_mean(rows(g)), rtol=1e-6)
    np.testing.assert_allclose(vec(out.v), np_mean(rows(g) ** 2), rtol=1e-6)


@pytest.fixture
def fake_rules(monkeypatch):
    """Registers two test rules for the duration of one test (restored after)."""
    reg = aggregators.AGGREGATORS

    def half_way(stack, *, num_byzantine, center, rate=0.5):
        del num_byzantine
        mean = aggregators.mean(stack)
        return jax.tree_util.tree_map(lambda c, m: c + rate * (m - c), center, mean)

    def picky(stack, *, num_byzantine):
        del num_byzantine
        return aggregators.mean(stack)

    entries = {
        "test_stateful": Entry("test_stateful", half_way, lambda f: 2 * f + 1,
                               "n > 2f", stateful=True),
        "test_picky": Entry("test_picky", picky, lambda f: 2 * f + 3, "n >= 2f+3"),
    }
    for name, e in entries.items():
        monkeypatch.setitem(reg._entries, name, e)
        monkeypatch.setitem(reg._alias, name, name)
    return entries


def test_aggregate_stateful_center(fake_rules):
    n = 5
    gs = grad_seq(np.random.default_rng(8), 3, n)
    tx = optim.aggregate("test_stateful", num_byzantine=1, rate=0.25)
    outs, state = run(tx, gs)
    assert isinstance(state, optim.AggregateState)
    c = np.zeros(D)
    for o, g in zip(outs, gs):
        c = c + 0.25 * (np_mean(rows(g)) - c)
        np.testing.assert_allclose(vec(o), c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vec(state.center), c, rtol=1e-5, atol=1e-6)
    # MomentPair: two centers with moments=True; a clear error without it.
    pair = optim.MomentPair(m=gs[0], v=jax.tree_util.tree_map(jnp.square, gs[0]))
    txm = optim.aggregate("test_stateful", num_byzantine=1, moments=True)
    out, st2 = txm.update(pair, txm.init(params0()))
    np.testing.assert_allclose(vec(out.v), 0.5 * np_mean(rows(gs[0]) ** 2), rtol=1e-5)
    assert isinstance(st2.center, optim.MomentPair)
    with pytest.raises(ValueError, match="moments=True"):
        tx.update(pair, tx.init(params0()))


def test_aggregate_checks_n_f_at_trace_time(fake_rules):
    g = grad_seq(np.random.default_rng(9), 1, 4)[0]
    tx = optim.aggregate("test_picky", num_byzantine=1)
    with pytest.raises(ValueError, match="n >= 2f\\+3"):
        jax.jit(lambda u: tx.update(u, tx.init(params0()))[0])(g)
    with pytest.raises(ValueError, match="n >= 2f\\+3"):
        optim.dsgd(num_workers=4, num_byzantine=1, aggregator="test_picky")
    optim.dsgd(num_workers=5, num_byzantine=1, aggregator="test_picky")  # fine
    with pytest.raises(ValueError, match="unknown aggregator"):
        optim.aggregate("no_such_rule", num_byzantine=1)


def np_centered_clipping(x, center, radius):
    """One iteration: v + 1/n sum_i clip_radius(x_i - v)."""
    n = x.shape[0]
    step = np.zeros_like(center)
    for i in range(n):
        diff = x[i] - center
        norm = np.linalg.norm(diff)
        step += diff * min(1.0, radius / norm) if norm > 0 else diff
    return center + step / n


@pytest.mark.skipif("centered_clipping" not in aggregators.AGGREGATORS,
                    reason="centered_clipping not registered yet")
def test_registered_centered_clipping_keeps_previous_aggregate():
    n, f, radius = 5, 1, 0.5
    gs = grad_seq(np.random.default_rng(16), 3, n, shift=1.0)
    tx = optim.aggregate("centered_clipping", num_byzantine=f, radius=radius)
    outs, state = run(tx, gs)
    c = np.zeros(D)
    for o, g in zip(outs, gs):
        c = np_centered_clipping(rows(g), c, radius)
        np.testing.assert_allclose(vec(o), c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vec(state.center), c, rtol=1e-5, atol=1e-6)
    # MRA chain: two centers (m and v), set up by mra() itself.
    tx = optim.mra(num_workers=n, num_byzantine=f, aggregator="centered_clipping",
                   aggregator_kwargs={"radius": radius})
    outs, _ = run(tx, gs)
    assert all(np.all(np.isfinite(vec(o))) for o in outs)


@pytest.mark.skipif("krum" not in aggregators.AGGREGATORS, reason="krum not registered")
def test_registered_krum_requirement_fails_early():
    with pytest.raises(ValueError):
        optim.dsgd(num_workers=6, num_byzantine=2, aggregator="krum")


# ------------------------------------------------------------ server stages
def test_mra_direction_nan_and_safeguard():
    m = {"w": jnp.array([1.0, -2.0, 3.0, 1.0])}
    v = {"w": jnp.array([4.0, -1.0, jnp.nan, jnp.inf])}
    pair = optim.MomentPair(m=m, v=v)
    out, _ = optim.mra_direction(eps=1e-8).update(pair, optax.EmptyState())
    got = np.asarray(out["w"])
    assert got[0] == pytest.approx(1 / math.sqrt(4 + 1e-8))
    assert np.isnan(got[1]) and np.isnan(got[2])
    out, _ = optim.mra_direction(eps=1e-8, safeguard="clamp").update(pair, None)
    got = np.asarray(out["w"])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, [1 / math.sqrt(4 + 1e-8), -2 / math.sqrt(1e-8),
                                     0.0, 0.0], rtol=1e-5)
    with pytest.raises(TypeError, match="MomentPair"):
        optim.mra_direction().update(m, None)
    with pytest.raises(ValueError, match="safeguard"):
        optim.mra_direction(safeguard="reject")


@pytest.mark.parametrize("nesterov", [False, True])
def test_server_momentum(nesterov):
    mu = 0.7
    aggs = [{k: jnp.asarray(np.random.default_rng(i).normal(size=s), jnp.float32)
             for k, s in SHAPES.items()} for i in range(4)]
    tx = optim.server_momentum(momentum=mu, nesterov=nesterov)
    state = tx.init(params0())
    big_m = np.zeros(D)
    for a in aggs:
        u, state = tx.update(a, state)
        big_m = mu * big_m + vec(a)
        want = vec(a) + mu * big_m if nesterov else big_m
        np.testing.assert_allclose(vec(u), want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- chains
def np_chain(kind, gs, *, n, f_att, lr, beta=0.9, b1=0.9, b2=0.99, eps=1e-6,
             clip=None, attack_eps=1.5, safeguard=None):
    """Full reference: clip -> worker stage -> ALIE on the last rows -> mean -> SGD."""
    theta = np.zeros(D)
    m = np.zeros((n, D))
    v = np.zeros((n, D))
    thetas = []
    for t, g in enumerate(gs, start=1):
        g = g.copy()
        if clip is not None:
            for i in range(n):
                norm = np.linalg.norm(g[i])
                if norm > clip:
                    g[i] = g[i] * clip / norm
        if kind == "dsgd":
            sent = [g]
        elif kind == "resam":
            m = beta * m + (1 - beta) * g
            sent = [m.copy()]
        else:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mh, vh = m / (1 - b1 ** t), v / (1 - b2 ** t)
            sent = [mh / (np.sqrt(vh) + eps)] if kind == "dra" else [mh, vh]
        agg = []
        for s in sent:
            s = s.copy()
            if f_att:
                h = s[:n - f_att]
                mu = np_mean(h)
                sd = np.sqrt(((h - mu) ** 2).sum(0) / (len(h) - 1))
                s[n - f_att:] = mu - attack_eps * sd
            agg.append(np_mean(s))
        if kind == "mra":
            vstar = agg[1]
            if safeguard == "clamp":
                direction = agg[0] / np.sqrt(np.maximum(vstar, 0) + eps)
            else:
                with np.errstate(invalid="ignore"):
                    direction = agg[0] / np.sqrt(vstar + eps)
        else:
            direction = agg[0]
        theta = theta - lr * direction
        thetas.append(theta.copy())
    return thetas


@pytest.mark.parametrize("kind", ["dsgd", "resam", "dra", "mra"])
def test_chains_match_reference(kind):
    n, f, lr = 6, 2, 0.1
    gs = grad_seq(np.random.default_rng(10), 4, n, shift=0.3)
    common = dict(num_workers=n, num_byzantine=f, aggregator="mean", clip_norm=2.5,
                  attack="alie", attack_kwargs={"eps": 1.5})
    if kind == "dsgd":
        tx = optim.dsgd(**common)
    elif kind == "resam":
        tx = optim.resam(beta=0.9, **common)
    elif kind == "dra":
        tx = optim.dra(b1=0.9, b2=0.99, eps=1e-6, **common)
    else:
        tx = optim.mra(b1=0.9, b2=0.99, eps=1e-6, safeguard="clamp", **common)
    tx = optax.chain(tx, optax.sgd(lr))
    params = params0()
    state = tx.init(params)
    want = np_chain(kind, [rows(g) for g in gs], n=n, f_att=f, lr=lr, clip=2.5,
                    safeguard="clamp")
    for g, w in zip(gs, want):
        u, state = tx.update(g, state, params)
        params = optax.apply_updates(params, u)
        np.testing.assert_allclose(vec(params), w, rtol=1e-4, atol=1e-5)


def test_num_attackers_differs_from_declared():
    n = 7
    seen = []

    def spy(stack, *, num_byzantine):
        seen.append(num_byzantine)
        return aggregators.mean(stack)

    gs = grad_seq(np.random.default_rng(12), 1, n)
    tx = optim.dsgd(num_workers=n, num_byzantine=3, aggregator=spy, attack="inf",
                    num_attackers=1)
    (out,), _ = run(tx, gs)
    assert seen == [3]
    assert np.all(np.isinf(vec(out)))  # one +inf row reaches the mean


def test_mra_dies_with_nan_when_v_star_negative_and_safeguard_prevents_it():
    # FOE with eps=3 sends -2 * mean(vhat) as second moments; with the mean
    # aggregator and 2 attackers out of 5, v* = (3 - 4) / 5 * mean(vhat) < 0.
    n, f = 5, 2
    gs = grad_seq(np.random.default_rng(13), 3, n, shift=0.5)
    probe = optax.chain(
        optim.worker_adam(num_workers=n, output="moments"),
        optim.byzantine_attack("foe", num_workers=n, num_byzantine=f, eps=3.0),
        optim.aggregate("mean", num_byzantine=f))
    (pair, *_), _ = run(probe, gs)
    assert np.all(vec(pair.v) < 0)  # the attack made the aggregated v* negative
    for safeguard in (None, "clamp"):
        tx = optax.chain(optim.mra(num_workers=n, num_byzantine=f, attack="foe",
                                   attack_kwargs={"eps": 3.0}, safeguard=safeguard),
                         optax.sgd(1e-3))
        params = params0()
        state = tx.init(params)
        for g in gs:
            u, state = tx.update(g, state, params)
            params = optax.apply_updates(params, u)
        if safeguard is None:
            assert np.all(np.isnan(vec(params)))  # training is dead
        else:
            assert np.all(np.isfinite(vec(params)))


@pytest.mark.parametrize("aggregator", [
    "mean",
    pytest.param("trimmed_mean", marks=pytest.mark.skipif(
        "trimmed_mean" not in aggregators.AGGREGATORS, reason="not registered yet")),
])
def test_vmap_over_beta_equals_separate_runs(aggregator):
    n, f = 5, 1
    gs = grad_seq(np.random.default_rng(14), 3, n, shift=0.2)
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *gs)  # [steps, n, ...]

    def train(beta, clip, attack_eps):
        tx = optax.chain(
            optim.resam(num_workers=n, num_byzantine=f, aggregator=aggregator,
                        beta=beta, clip_norm=clip, attack="alie",
                        attack_kwargs={"eps": attack_eps}),
            optax.sgd(0.1))
        params = params0()

        def step(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), stacked)
        return p

    betas = jnp.array([0.0, 0.5, 0.9, 0.99])
    clips = jnp.array([0.5, 1.0, 2.0, 10.0])
    eps = jnp.array([0.5, 1.0, 1.5, 3.0])
    batched = jax.jit(jax.vmap(train))(betas, clips, eps)
    finals = []
    for i in range(4):
        single = train(float(betas[i]), float(clips[i]), float(eps[i]))
        finals.append(vec(single))
        np.testing.assert_allclose(vec(jax.tree_util.tree_map(lambda x: x[i], batched)),
                                   vec(single), rtol=1e-5, atol=1e-6)
    assert not np.allclose(finals[0], finals[2])  # the hyper-parameters matter


def test_adaptive_attack_in_chain_under_jit_no_retrace():
    n, f = 7, 2
    traces = []

    def step(params, state, g):
        traces.append(1)
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    cands = jnp.array([0.5, 1.0, 4.0])
    tx = optax.chain(optim.resam(num_workers=n, num_byzantine=f, beta=0.9,
                                 attack="adaptive_alie",
                                 attack_kwargs={"candidates": cands}),
                     optax.sgd(0.1))
    params = params0()
    state = tx.init(params)
    jstep = jax.jit(step)
    for g in grad_seq(np.random.default_rng(15), 3, n):
        params, state = jstep(params, state, g)
    assert len(traces) == 1
    assert np.all(np.isfinite(vec(params)))


def test_attacks_registry_exposes_what_the_stage_needs():
    for name in attacks.names():
        e = attacks.entry(name)
        assert isinstance(e.needs_key, bool) and isinstance(e.data_level, bool)
