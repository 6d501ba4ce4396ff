"""The attack optimised through the server's pipeline."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from byzjax import attacks, optim

RULES = ["trimmed_mean", "krum", "mda"]


def _honest(seed, n_honest=8, d=6):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.normal(size=(n_honest, d)) + 0.5, jnp.float32)}


def _damage(honest, rows, rule, f):
    from byzjax import aggregators

    stack = jax.tree_util.tree_map(lambda h, b: jnp.concatenate([h, b]), honest, rows)
    out = aggregators.get(rule)(stack, num_byzantine=f)["w"]
    return float(jnp.linalg.norm(out - honest["w"].mean(0)))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("seed", [0, 1])
def test_at_least_as_damaging_as_alie_and_foe(rule, seed):
    f = 3
    honest = _honest(seed)
    opt = attacks.optimized(honest, num_byzantine=f, aggregator=rule, constraint=None)
    got = _damage(honest, opt, rule, f)
    others = {
        "alie": attacks.a_little_is_enough(honest, num_byzantine=f),
        "foe": attacks.fall_of_empires(honest, num_byzantine=f),
        "adaptive_alie": attacks.adaptive_alie(honest, num_byzantine=f,
                                               aggregator=rule),
        "adaptive_foe": attacks.adaptive_foe(honest, num_byzantine=f, aggregator=rule),
    }
    for name, rows in others.items():
        assert got >= _damage(honest, rows, rule, f) - 1e-6, name
    # identical rows, like ALIE and FOE
    assert np.all(np.asarray(opt["w"]) == np.asarray(opt["w"][:1]))


@pytest.mark.parametrize("rule", ["mda", "meamed", "krum"])
def test_gradient_steps_add_damage_beyond_the_best_start(rule):
    # (Against the trimmed mean and the median the best ALIE/FOE start is
    # already a kink of the damage, where the gradient is zero.)
    honest = _honest(1)
    kw = dict(num_byzantine=3, aggregator=rule, constraint=None, learning_rate=0.05)
    start = attacks.optimized(honest, num_steps=0, **kw)
    steps = attacks.optimized(honest, num_steps=30, **kw)
    assert _damage(honest, steps, rule, 3) > _damage(honest, start, rule, 3) + 1e-2


@pytest.mark.parametrize("z", [0.5, 2.0])
def test_respects_its_constraint(z):
    honest = _honest(4)
    gbar = np.asarray(honest["w"]).mean(0)
    sigma = np.asarray(honest["w"]).std(0, ddof=1)
    rows = attacks.optimized(honest, num_byzantine=3, aggregator="trimmed_mean", z=z)
    assert np.all(np.abs(np.asarray(rows["w"]) - gbar) <= z * sigma * (1 + 1e-5) + 1e-6)
    rows = attacks.optimized(honest, num_byzantine=3, aggregator="trimmed_mean", z=z,
                             constraint="norm_ball")
    radius = np.max(np.linalg.norm(np.asarray(honest["w"]) - gbar, axis=1))
    assert np.all(np.linalg.norm(np.asarray(rows["w"]) - gbar, axis=1)
                  <= z * radius * (1 + 1e-5))


def test_inner_product_objective_pushes_against_the_honest_mean():
    from byzjax import aggregators

    honest = _honest(5)
    gbar = honest["w"].mean(0)
    rows = attacks.optimized(honest, num_byzantine=3, aggregator="trimmed_mean",
                             objective="inner_product", constraint=None)
    foe = attacks.adaptive_foe(honest, num_byzantine=3, aggregator="trimmed_mean")

    def dot(r):
        stack = {"w": jnp.concatenate([honest["w"], r["w"]])}
        return float(aggregators.trimmed_mean(stack, num_byzantine=3)["w"] @ gbar)

    assert dot(rows) <= dot(foe) + 1e-6


def test_traced_once_under_scan_and_jit():
    calls = []

    def counting_trimmed_mean(stack, *, num_byzantine):
        calls.append(1)
        from byzjax import aggregators

        return aggregators.trimmed_mean(stack, num_byzantine=num_byzantine)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def rounds(honest_seq):
        def body(c, h):
            rows = attacks.optimized({"w": h}, num_byzantine=2,
                                     aggregator=counting_trimmed_mean, num_steps=4)
            return c, rows["w"][0]
        return jax.lax.scan(body, 0, honest_seq)[1]

    seq = jnp.asarray(np.random.default_rng(0).normal(size=(5, 6, 3)), jnp.float32)
    out = rounds(seq)
    traced = len(calls)
    rounds(seq + 1.0)  # same shapes: no retrace
    assert out.shape == (5, 3) and len(calls) == traced and traced <= 4


def test_usable_as_a_pipeline_stage():
    # optim finds the server's rule for an adaptive attack by itself
    tx = optax.chain(optim.resam(num_workers=7, num_byzantine=2, beta=0.9,
                                 aggregator="trimmed_mean", attack="optimized",
                                 attack_kwargs=dict(num_steps=3)),
                     optax.sgd(0.1))
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(7, 3)),
                              jnp.float32)}
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert np.all(np.isfinite(np.asarray(updates["w"])))


def test_bad_options():
    honest = _honest(6)
    for kwargs, match in ((dict(objective="loss"), "objective"),
                          (dict(constraint="box"), "constraint"),
                          (dict(num_steps=-1), "num_steps")):
        with pytest.raises(ValueError, match=match):
            attacks.optimized(honest, num_byzantine=2, aggregator="mean", **kwargs)
