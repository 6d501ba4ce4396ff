"""The compiled simulator against a step-by-step reference on tiny synthetic data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import sim
from byzjax.sim._kit import flip_byzantine_labels
from tests.helpers import (
    TinyMLP,
    flat_params,
    make_data,
    reference_rounds,
    tiny_config,
    traced_hparams,
)


def _alie_ddof():
    from byzjax import attacks

    honest = {"w": jnp.asarray([[0.0], [2.0]])}
    out = attacks.get("alie")(honest, num_byzantine=1, eps=1.0)
    # mean 1, population std 1 (ddof 0) or sample std sqrt(2) (ddof 1)
    return 0 if abs(float(out["w"][0, 0]) - 0.0) < 1e-6 else 1


@pytest.mark.parametrize("attack", ["alie", "label_flip"])
def test_compiled_round_matches_step_by_step_reference(attack):
    config = tiny_config(attack=attack)
    data = make_data(config.num_workers)
    model = TinyMLP()
    key = jax.random.key(3)
    program = sim.make_program(config, data, model)
    hp = traced_hparams(config)
    state = program.init(key, hp)
    step = jax.jit(program.round_step)
    for _ in range(3):
        state, _ = step(state, hp)
    got = flat_params(state.params)
    want = reference_rounds(config, data, model, key, rounds=3,
                            alie_ddof=_alie_ddof())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_train():
    """The tiny config's ``train`` and its hyper-parameters; ``jax.jit(train)``
    compiles once for the tests below (jit caches by function)."""
    config = tiny_config()
    train = sim.make_train(config, make_data(config.num_workers), TinyMLP())
    return train, traced_hparams(config)


def test_vmapped_seeds_equal_separate_runs(tiny_train):
    train, hp = tiny_train
    keys = jnp.stack([jax.random.key(s) for s in (0, 1, 2)])
    batched_state, batched = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, hp)
    for i, s in enumerate((0, 1, 2)):
        state, metrics = jax.jit(train)(jax.random.key(s), hp)
        np.testing.assert_allclose(
            flat_params(jax.tree_util.tree_map(lambda x: x[i], batched_state.params)),
            flat_params(state.params), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(batched["test_accuracy"][i]),
                                   np.asarray(metrics["test_accuracy"]), atol=1e-6)
    # Different seeds give different runs (the comparison above can fail).
    assert not np.allclose(flat_params(jax.tree_util.tree_map(lambda x: x[0],
                                                        batched_state.params)),
                           flat_params(jax.tree_util.tree_map(lambda x: x[1],
                                                        batched_state.params)))


def test_init_seed_gives_every_seed_one_start_and_its_own_batches():
    """``init_seed``: the seeds' initial parameters are one draw (ByzFL's
    convention), the batches still each seed's own; -1: each seed its own."""
    config = tiny_config()
    data = make_data(config.num_workers)
    hp = traced_hparams(config)
    keys = jnp.stack([jax.random.key(s) for s in (0, 1)])

    def per_seed(params):
        return [flat_params(jax.tree_util.tree_map(lambda x: x[i], params))
                for i in (0, 1)]

    def program(**fields):
        return sim.make_program(tiny_config(**fields), data, TinyMLP())

    def starts(**fields):
        init = jax.vmap(program(**fields).init, in_axes=(0, None))(keys, hp)
        return per_seed(init.params)

    start = starts(init_seed=3)
    np.testing.assert_array_equal(start[0], start[1])
    end, _ = jax.vmap(program(init_seed=3).train, in_axes=(0, None))(keys, hp)
    end = per_seed(end.params)
    assert not np.allclose(end[0], end[1])  # batches differ
    assert not np.allclose(starts(init_seed=4)[0], start[0])
    own = starts(init_seed=-1)
    assert not np.allclose(own[0], own[1])


def test_vmapped_hparams_equal_separate_runs(tiny_train):
    train, base = tiny_train
    betas = jnp.asarray([0.0, 0.5, 0.9], jnp.float32)
    hp = dict(base, beta=betas)
    axes = {k: (0 if k == "beta" else None) for k in hp}
    state_b, _ = jax.jit(jax.vmap(train, in_axes=(None, axes)))(jax.random.key(0), hp)
    for i in range(3):
        state, _ = jax.jit(train)(jax.random.key(0), dict(base, beta=betas[i]))
        np.testing.assert_allclose(
            flat_params(jax.tree_util.tree_map(lambda x: x[i], state_b.params)),
            flat_params(state.params), rtol=1e-5, atol=1e-6)


def test_label_flip_reaches_only_byzantine_rows():
    y = jnp.tile(jnp.arange(4, dtype=jnp.int32), (5, 1))
    out = np.asarray(flip_byzantine_labels(y, num_honest=3, num_classes=10))
    np.testing.assert_array_equal(out[:3], np.asarray(y[:3]))
    np.testing.assert_array_equal(out[3:], 9 - np.asarray(y[3:]))


def test_divergence_is_reported_not_raised():
    config = tiny_config(aggregator="mean", attack="inf", num_rounds=4, eval_every=2)
    data = make_data(config.num_workers)
    train = sim.make_train(config, data, TinyMLP())
    hp = traced_hparams(config)
    state, metrics = jax.jit(train)(jax.random.key(0), hp)
    assert int(state.diverged_round) == 1
    assert np.asarray(metrics["diverged_round"]).tolist() == [1, 1]
    # The same run with a robust rule stays finite.
    config = tiny_config(aggregator="trimmed_mean", attack="inf")
    train = sim.make_train(config, data, TinyMLP())
    state, metrics = jax.jit(train)(jax.random.key(0), hp)
    assert int(state.diverged_round) == -1
    assert np.all(np.isfinite(np.asarray(metrics["test_accuracy"])))


def test_training_learns_without_attack():
    config = tiny_config(attack="none", num_attackers=0, num_rounds=40,
                         eval_every=20, learning_rate=0.5)
    data = make_data(config.num_workers)
    train = sim.make_train(config, data, TinyMLP())
    hp = traced_hparams(config)
    _, metrics = jax.jit(train)(jax.random.key(0), hp)
    assert float(metrics["test_accuracy"][-1]) > 0.8
    # per class: one value per class and evaluation, weighted by the classes'
    # test counts they give the accuracy
    per_class = np.asarray(metrics["test_class_accuracy"])
    counts = np.bincount(np.asarray(data.test_labels), minlength=per_class.shape[1])
    assert per_class.shape == (2, counts.size)
    np.testing.assert_allclose(per_class @ counts / counts.sum(),
                               np.asarray(metrics["test_accuracy"]), rtol=1e-5)


def test_per_class_accuracy_against_a_confusion_count_loop():
    from byzjax.sim._kit import make_evaluate, normalize

    data = make_data(3)
    model = TinyMLP()
    params = model.init(jax.random.key(3), data.test_images[:1])["params"]
    n = data.test_labels.shape[0]
    acc, _, per_class = jax.jit(make_evaluate(model, data, eval_size=n,
                                              has_bn=False))(params)
    logits = np.asarray(model.apply({"params": params},
                                    normalize(data.test_images, data)))
    labels = np.asarray(data.test_labels)
    k = logits.shape[1]
    confusion = np.zeros((k, k))
    for y, p in zip(labels, logits.argmax(1)):
        confusion[y, p] += 1
    with np.errstate(invalid="ignore"):
        expected = np.diag(confusion) / confusion.sum(1)
    np.testing.assert_allclose(np.asarray(per_class), expected, rtol=1e-6)
    assert float(acc) == pytest.approx(np.trace(confusion) / n)


@pytest.fixture(scope="module")
def foe_on_mean():
    """One round program (FOE against the mean), its first state and the jitted
    round step, compiled once for the diagnostics tests."""
    config = tiny_config(aggregator="mean", attack="foe", attack_eps=1.1)
    program = sim.make_program(config, make_data(config.num_workers), TinyMLP())
    hp = traced_hparams(config)
    return program, hp, program.init(jax.random.key(0), hp), jax.jit(
        program.round_step)


def test_diagnostics_are_consistent(foe_on_mean):
    _, hp, state, step = foe_on_mean
    _, m = step(state, hp)
    assert float(m["agg_dist"]) > 0
    assert float(m["honest_spread"]) > 0
    np.testing.assert_allclose(float(m["resilience"]),
                               float(m["agg_dist"]) / float(m["honest_spread"]),
                               rtol=1e-5)
    # FOE against the mean: the aggregate is (n_h - 0.1 f) / n times the honest
    # mean, so it points exactly along it.
    np.testing.assert_allclose(float(m["cosine"]), 1.0, atol=1e-6)


def test_bad_config_fails_early_with_a_clear_message():
    with pytest.raises(ValueError, match="num_byzantine"):
        sim.validate(tiny_config(num_byzantine=4))
    with pytest.raises(ValueError, match="2f\\+3"):
        sim.validate(tiny_config(aggregator="krum", num_workers=7, num_byzantine=3))
    with pytest.raises(ValueError, match="unknown aggregator"):
        sim.validate(tiny_config(aggregator="nope"))
    with pytest.raises(ValueError, match="multiple of"):
        sim.validate(tiny_config(num_rounds=5, eval_every=2))


def test_run_group_map_and_vmap_batching_agree():
    data = make_data(7)
    recs = {}
    for mode in ("map", "vmap"):
        config = tiny_config(run_batching=mode)
        recs[mode] = sim.run_group(config, seeds=[0, 1], hparam_points=[
            {"beta": 0.5}, {"beta": 0.9}], data=data, model=TinyMLP(), progress=False)
    for a, b in zip(recs["map"], recs["vmap"]):
        assert (a["seed"], a["hparams"]) == (b["seed"], b["hparams"])
        np.testing.assert_allclose(a["metrics"]["train_loss"],
                                   b["metrics"]["train_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="run_batching"):
        sim.run_group(tiny_config(run_batching="loop"), seeds=[0], data=data,
                      model=TinyMLP(), progress=False)


def test_adaptive_attack_targets_the_simulated_pipeline():
    config = tiny_config(attack="adaptive_alie", aggregator="trimmed_mean",
                         num_rounds=2, eval_every=1)
    data = make_data(config.num_workers)
    program = sim.make_program(config, data, TinyMLP())
    hp = traced_hparams(config)
    state = program.init(jax.random.key(0), hp)
    _, m = jax.jit(program.round_step)(state, hp)
    # The adaptive attack moves the aggregate at least as far as plain ALIE.
    config_alie = tiny_config(attack="alie", aggregator="trimmed_mean")
    program_alie = sim.make_program(config_alie, data, TinyMLP())
    _, m_alie = jax.jit(program_alie.round_step)(program_alie.init(
        jax.random.key(0), hp), hp)
    assert float(m["agg_dist"]) >= float(m_alie["agg_dist"]) - 1e-7


def test_round_diagnostics_switch(foe_on_mean):
    program, hp, state, step = foe_on_mean
    keys = ("agg_dist", "honest_spread", "resilience", "cosine")
    s_on, m_on = step(state, hp)
    s_off, m_off = jax.jit(lambda s, hp: program.round_step(s, hp, diagnostics=False))(
        state, hp)
    s_tr, m_tr = step(state, hp, jnp.asarray(True))  # one compile for both flags
    _, m_fa = step(state, hp, jnp.asarray(False))
    assert all(np.isfinite(float(m_on[k])) for k in keys)
    assert all(np.isnan(float(m_off[k])) and np.isnan(float(m_fa[k])) for k in keys)
    for k in keys:
        np.testing.assert_allclose(float(m_tr[k]), float(m_on[k]), rtol=1e-6)
    # The switch changes nothing else.
    np.testing.assert_allclose(flat_params(s_off.params), flat_params(s_on.params),
                               rtol=1e-6)
    np.testing.assert_allclose(float(m_off["train_loss"]), float(m_on["train_loss"]))
