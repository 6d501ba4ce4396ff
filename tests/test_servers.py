"""Replicated and Byzantine parameter servers (GuanYu, LiuBei) in the simulator,
and their pure building blocks against NumPy references.

GuanYu: El Mhamdi, Guerraoui, Guirguis, Hoang, Rouault (2019), "SGD:
Decentralized Byzantine Resilience". LiuBei: El Mhamdi, Guerraoui, Guirguis,
Rouault (2019/2022), "Fast Machine Learning with Byzantine Workers and Servers".
"""

from __future__ import annotations

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import attacks, servers, sim
from byzjax.sim._validate import _check_servers as check_servers
from byzjax.sim._validate import server_quorums
from tests.helpers import (
    TinyMLP,
    flat_params,
    make_data,
    tiny_config,
    traced_hparams,
)

MODEL_ATTACKS = ("sign_flip", "fall_of_empires", "a_little_is_enough", "inf",
                 "gaussian")


def server_config(protocol="guanyu", **overrides):
    c = tiny_config(num_byzantine=0, num_workers=6, attack="sign_flip",
                    aggregator="coordinate_median")
    c.server_protocol = protocol
    c.num_servers = 4
    c.num_byzantine_servers = 0
    for k, v in overrides.items():
        c[k] = v
    return c


def _train(config, seed=0, data=None):
    data = make_data(config.num_workers) if data is None else data
    program = sim.make_program(config, data, TinyMLP())
    return jax.jit(program.train)(jax.random.key(seed), traced_hparams(config))


def _rounds(config, num_rounds, seed=0):
    """``(states, metrics)`` after each of ``num_rounds`` jitted round steps."""
    program = sim.make_program(config, make_data(config.num_workers), TinyMLP())
    hp = traced_hparams(config)
    state = jax.jit(program.init)(jax.random.key(seed), hp)
    step = jax.jit(program.round_step)
    states, metrics = [state], []
    for _ in range(num_rounds):
        state, m = step(state, hp)
        states.append(state)
        metrics.append({k: np.asarray(v) for k, v in m.items()})
    return states, metrics


# ----------------------------------------------------------- equivalence
@pytest.mark.parametrize("optimizer", [
    "resam",
    pytest.param("server_momentum", marks=pytest.mark.slow),
])
def test_guanyu_without_byzantine_servers_equals_single_server(optimizer):
    """No Byzantine server, zero delays, full quorums: every correct server
    holds the single server's model (same seeds), to 1e-5."""
    c = server_config(optimizer=optimizer, delay_distribution="zero")
    single = server_config("single", optimizer=optimizer, num_servers=1)
    data = make_data(c.num_workers)
    state, metrics = _train(c, data=data)
    ref_state, ref_metrics = _train(single, data=data)
    ref = flat_params(ref_state.params)
    for i in range(c.num_servers):
        got = flat_params(jax.tree_util.tree_map(lambda x, i=i: x[i], state.params))
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(metrics["test_accuracy"],
                               ref_metrics["test_accuracy"], atol=1e-6)
    np.testing.assert_allclose(metrics["train_loss"], ref_metrics["train_loss"],
                               atol=1e-5)
    assert np.all(np.asarray(metrics["server_spread"]) < 1e-5)


# ---------------------------------------------- GuanYu's median guarantee
@pytest.mark.parametrize("f", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_quorum_median_stays_in_the_box_of_correct_models(f):
    """With at most f Byzantine models in a quorum of q >= 2f + 3, each
    receiver's median lies coordinate-wise between the smallest and largest
    correct model, under every model attack: the median's guarantee behind
    GuanYu's model exchange. Checked against NumPy's median."""
    n_ps, q, dim = 3 * f + 3, 2 * f + 3, 4
    rng = np.random.default_rng(f)

    @jax.jit
    def exchange(stack, key):
        delays = servers.sample_delays(key, num_receivers=n_ps - f, num_senders=n_ps,
                                       num_byzantine_senders=f, self_first=True)
        idx = servers.quorum_indices(delays, q)
        return idx, servers.quorum_median({"w": stack}, idx, num_byzantine=f)["w"]

    for attack in MODEL_ATTACKS:
        kwargs = {"key": jax.random.key(1)} if attacks.entry(attack).needs_key else {}
        for trial in range(3):
            correct = rng.normal(size=(n_ps - f, dim)).astype(np.float32) * 5
            bad = attacks.get(attack)({"w": jnp.asarray(correct)}, num_byzantine=f,
                                      **kwargs)["w"]
            full = np.concatenate([correct, np.asarray(bad, np.float32)])
            idx, out = map(np.asarray, exchange(jnp.asarray(full),
                                                jax.random.key(trial)))
            for r in range(n_ps - f):
                ref = np.median(full[idx[r]].astype(np.float64), axis=0)
                np.testing.assert_allclose(out[r], ref, rtol=1e-6, atol=1e-6)
                assert np.all(out[r] >= correct.min(0) - 1e-6), attack
                assert np.all(out[r] <= correct.max(0) + 1e-6), attack
                assert r in idx[r]  # a server counts its own model
                assert set(range(n_ps - f, n_ps)) <= set(idx[r])  # Byzantine first


@pytest.mark.parametrize("attack", [
    "sign_flip", pytest.param("a_little_is_enough", marks=pytest.mark.slow)])
def test_guanyu_correct_servers_stay_within_the_median_guarantee(attack):
    """In the simulator, every round: after the exchange the correct servers'
    spread is at most the diameter of the box of their models before it, and
    the servers do differ (their worker quorums differ)."""
    c = server_config(num_servers=6, num_byzantine_servers=1, num_byzantine=1,
                      num_workers=6, server_attack=attack, aggregator="meamed")
    assert server_quorums(c) == (5, 5)
    _, metrics = _rounds(c, 4)
    spread = np.array([m["server_spread"] for m in metrics])
    bound = np.array([m["server_spread_bound"] for m in metrics])
    assert np.all(np.isfinite(spread))
    assert np.all(spread <= bound * (1 + 1e-5) + 1e-7), (spread, bound)
    assert np.any(bound > 0)


# ------------------------------------------------- LiuBei's filters
def test_models_filter_rejects_a_far_model_and_accepts_a_correct_one():
    old = {"w": jnp.zeros(3), "b": jnp.zeros(1)}
    thr = servers.models_filter_threshold(0.1, clip_norm=2.0, num_workers=7,
                                          num_byzantine=2, steps_since_gather=0)
    np.testing.assert_allclose(float(thr), 0.1 * 2.0 * np.sqrt(5), rtol=1e-6)
    step = {"w": jnp.array([0.1, -0.2, 0.05]), "b": jnp.array([0.1])}  # ||.|| < thr
    assert bool(servers.models_filter(step, old, thr))
    far = jax.tree_util.tree_map(lambda x: -10.0 * (x + 1.0), old)
    assert not bool(servers.models_filter(far, old, thr))
    nan = {"w": jnp.array([0.0, jnp.nan, 0.0]), "b": jnp.zeros(1)}
    assert not bool(servers.models_filter(nan, old, thr))


@settings(max_examples=30, deadline=None)
@given(hist=hnp.arrays(np.float32, 8, elements=st.floats(0.125, 100, width=32)),
       k=st.floats(0.0, 200.0, width=32), f=st.integers(0, 2),
       count=st.integers(0, 8))
def test_lipschitz_filter_against_numpy(hist, k, f, count):
    n_ps = 3 * f + 1
    h = np.where(np.arange(8) < count, hist, np.nan).astype(np.float32)
    got = bool(servers.lipschitz_filter(jnp.float32(k), jnp.asarray(h),
                                        jnp.int32(count), num_servers=n_ps,
                                        num_byzantine_servers=f))
    if count < n_ps:
        assert got
    else:
        bound = np.quantile(h[:count].astype(np.float64), (n_ps - f) / n_ps)
        if abs(k - bound) > 1e-3 * max(1.0, bound):
            assert got == (k <= bound)


def test_lipschitz_coefficient_against_numpy():
    rng = np.random.default_rng(0)
    g1, g0, x1, x0 = (rng.normal(size=5).astype(np.float32) for _ in range(4))
    got = float(servers.lipschitz_coefficient({"a": g1}, {"a": g0}, {"a": x1},
                                              {"a": x0}))
    ref = np.linalg.norm(g1 - g0) / np.linalg.norm(x1 - x0)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    same = float(servers.lipschitz_coefficient({"a": g0}, {"a": g0}, {"a": x0},
                                               {"a": x0}))
    assert same == 0.0


@functools.lru_cache(maxsize=None)
def _liubei_rounds(num_rounds=4):
    c = server_config("liubei", num_servers=4, num_byzantine_servers=1,
                      scatter_period=3, server_attack="sign_flip")
    return c, _rounds(c, num_rounds)


def test_liubei_rejects_exactly_the_byzantine_pulls_at_first():
    """The Byzantine server sends the flipped model (far): every first pull
    that reaches it is rejected, and the next (correct) server's model is
    accepted. In the first n_ps rounds the Lipschitz filter has no history, so
    correct pulls are never rejected: rejections are exactly the Byzantine
    pulls."""
    c, (states, metrics) = _liubei_rounds()
    n_ps, c_ps = c.num_servers, c.num_servers - c.num_byzantine_servers
    start = np.asarray(states[0].workers.start)
    for t, m in enumerate(metrics):
        first = (start + t) % n_ps
        byz = int(np.sum(first >= c_ps))
        pulls = c.num_workers + byz
        np.testing.assert_allclose(m["pulls_per_iteration"], pulls / c.num_workers,
                                   rtol=1e-6)
        np.testing.assert_allclose(m["rejected_fraction"], byz / pulls, rtol=1e-6)
        assert m["fallback_fraction"] == 0.0
    assert sum(int(np.sum((start + t) % n_ps >= c_ps)) for t in range(4)) > 0
    # Every correct server holds the same model (synchronous, same vectors).
    assert all(m["server_spread"] == 0.0 for m in metrics)


def test_liubei_gather_sets_every_model_to_the_meamed():
    c, (states, _) = _liubei_rounds()
    after = states[c.scatter_period]  # a gather closed round scatter_period
    servers_ = flat_params(jax.tree_util.tree_map(lambda x: x[0], after.params))
    for j in range(c.num_workers):
        worker = flat_params(jax.tree_util.tree_map(lambda x, j=j: x[j],
                                                   after.workers.model))
        np.testing.assert_array_equal(worker, servers_)


# --------------------------------------- one Byzantine server vs replication
@pytest.mark.slow
def test_a_byzantine_server_ruins_one_server_while_guanyu_and_liubei_train():
    common = dict(num_rounds=20, eval_every=10, learning_rate=0.1)
    single = server_config("single", num_servers=1, num_byzantine_servers=1,
                           **common)
    guanyu = server_config("guanyu", num_servers=6, num_byzantine_servers=1,
                           **common)
    liubei = server_config("liubei", num_servers=4, num_byzantine_servers=1,
                           scatter_period=5, **common)
    correct = server_config("single", num_servers=1, **common)
    acc = {name: float(np.asarray(_train(c)[1]["test_accuracy"])[-1])
           for name, c in [("single", single), ("guanyu", guanyu),
                           ("liubei", liubei), ("correct", correct)]}
    assert acc["correct"] > 0.9, acc
    assert acc["single"] < 0.5, acc
    assert acc["guanyu"] > 0.9 and acc["liubei"] > 0.9, acc


# ------------------------------------------------------------- validation
CASES = [
    (dict(server_protocol="guanyu", num_servers=5, num_byzantine_servers=1),
     "guanyu needs num_servers >= 3 num_byzantine_servers + 3 = 6, got "
     "num_servers=5"),
    (dict(server_protocol="guanyu", num_servers=6, num_byzantine_servers=1,
          num_workers=14, num_byzantine=4),
     "guanyu needs num_workers >= 3 num_byzantine + 3 = 15, got num_workers=14"),
    (dict(server_protocol="guanyu", num_servers=6, num_byzantine_servers=1,
          server_quorum=4),
     "2 num_byzantine_servers + 3 <= server_quorum <= num_servers - "
     "num_byzantine_servers, i.e. in [5, 5] (0: the largest), got 4"),
    (dict(server_protocol="guanyu", num_servers=6, num_byzantine_servers=1,
          num_byzantine=3, worker_quorum=13),
     "i.e. in [9, 12] (0: the largest), got 13"),
    (dict(server_protocol="guanyu", num_servers=6, num_byzantine_servers=1,
          num_byzantine=3, aggregator="bulyan"),
     "a server aggregates 12 vectors per round (its worker quorum)"),
    (dict(server_protocol="liubei", num_servers=6, num_byzantine_servers=2),
     "liubei needs num_servers >= 3 num_byzantine_servers + 1 = 7, got "
     "num_servers=6"),
    (dict(server_protocol="liubei", num_servers=4, num_byzantine_servers=1,
          server_quorum=3), "server_quorum is a GuanYu setting"),
    (dict(server_protocol="liubei", num_servers=4, optimizer="dra"),
     "use optimizer dsgd or resam, got 'dra'"),
    (dict(server_protocol="liubei", num_servers=4, clip_norm=0.0),
     "set clip_norm > 0"),
    (dict(server_protocol="liubei", num_servers=4, scatter_period=0),
     "scatter_period must be an integer >= 1, got 0"),
    (dict(server_protocol="single", num_servers=3),
     "server_protocol='single' has one server, got num_servers=3"),
    (dict(num_byzantine_servers=2), "num_byzantine_servers must be 0 or 1"),
    (dict(server_protocol="guyanu"), "unknown server_protocol 'guyanu'"),
    (dict(server_protocol="guanyu", num_servers=6, num_byzantine_servers=1,
          server_attack="label_flip"), "server_attack 'label_flip' does not apply"),
    (dict(num_byzantine_servers=1, server_attack="sign_flp"),
     "unknown server_attack 'sign_flp'"),
    (dict(server_protocol="guanyu", num_servers=6, num_byzantine_servers=1,
          optimizer="mra"), "optimizer 'mra' is not supported"),
    (dict(server_protocol="guanyu", num_servers=6, delay_distribution="normal"),
     "unknown delay_distribution 'normal'"),
    (dict(server_protocol="guanyu", num_servers=6, num_byzantine_servers=1,
          num_slow_servers=6), "num_slow_servers must be at most the 5 correct"),
    (dict(server_protocol="guanyu", num_servers=6, slow_factor=0.5),
     "slow_factor must be a finite number >= 1, got 0.5"),
    (dict(server_protocol="guanyu", num_servers=6, shard="workers"),
     "shard='workers' is not supported"),
]


@pytest.mark.parametrize("fields,message", CASES)
def test_server_config_errors_are_one_line(fields, message):
    c = sim.get_config()
    c.num_workers, c.num_byzantine = 15, 3
    for k, v in fields.items():
        c[k] = v
    with pytest.raises(sim.ConfigError) as e:
        sim.validate(c)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_valid_server_configs_pass():
    for fields in (dict(server_protocol="guanyu", num_servers=7,
                        num_byzantine_servers=1),
                   dict(server_protocol="liubei", num_servers=7,
                        num_byzantine_servers=2),
                   dict(num_byzantine_servers=1, server_attack="inf")):
        c = sim.get_config()
        c.num_workers, c.num_byzantine = 15, 3
        for k, v in fields.items():
            c[k] = v
        sim.validate(c)
        check_servers(c)


def test_server_fields_at_their_defaults_keep_run_ids():
    """Single-server runs keep the identifiers they had before the server
    fields existed; a replicated run gets its own."""
    c = sim.get_config()
    ids = (sim.run_id(c, 0, sim.hparams_of(c)), sim.static_key(c))
    old = sim.get_config()
    for k in ("server_protocol", "num_servers", "num_byzantine_servers",
              "server_quorum", "worker_quorum", "server_attack", "scatter_period",
              "delay_distribution", "num_slow_servers", "num_slow_workers",
              "slow_factor"):
        del old[k]
    from byzjax.sim import _records

    assert _records.run_id(old, 0, sim.hparams_of(old)) == ids[0]
    assert _records.static_key(old) == ids[1]
    c.server_protocol, c.num_servers = "guanyu", 6
    assert sim.run_id(c, 0, sim.hparams_of(c)) != ids[0]


@pytest.mark.parametrize("distribution", ["exponential", "uniform"])
def test_delays_slow_machines_byzantine_first_and_own_copy(distribution):
    key = jax.random.key(3)
    kw = dict(num_receivers=5, num_senders=7, num_byzantine_senders=2,
              distribution=distribution)
    base = np.asarray(servers.sample_delays(key, **kw))
    slow = np.asarray(servers.sample_delays(key, num_slow_senders=2, slow_factor=10.0,
                                            **kw))
    np.testing.assert_allclose(slow[:, :2], 10.0 * base[:, :2], rtol=1e-6)
    np.testing.assert_array_equal(slow[:, 2:], base[:, 2:])
    assert np.all(base[:, 5:] == -1.0) and np.all(base[:, :5] >= 0)
    own = np.asarray(servers.sample_delays(key, self_first=True, **kw))
    assert np.all(np.diag(own[:, :5]) == -2.0)
    idx = np.asarray(servers.quorum_indices(jnp.asarray(slow), 4))
    np.testing.assert_array_equal(idx, np.argsort(slow, axis=1, kind="stable")[:, :4])


# ------------------------------------------- the path of byzjax train / sweep
@pytest.mark.parametrize("overrides", [
    dict(server_protocol="guanyu", num_servers=6, num_byzantine_servers=1,
         num_workers=9, num_byzantine=2),
    dict(server_protocol="liubei", num_servers=4, num_byzantine_servers=1),
    dict(server_protocol="liubei", num_servers=4, num_byzantine_servers=1,
         robust_layout="flat"),
])
def test_server_programs_run_as_sweep_groups(overrides):
    """``run_group`` gives the program its data as inputs (traced, with the
    number of classes passed beside them, ``byzjax.sim._compile``): the
    replicated-server programs must not read a label's value while tracing."""
    config = server_config(**{"num_rounds": 4, "eval_every": 2, **overrides})
    rec, = sim.run_group(config, seeds=[0], data=make_data(config.num_workers),
                         model=TinyMLP(), progress=False)
    assert np.isfinite(rec["metrics"]["train_loss"]).all()
    assert rec["config"]["server_protocol"] == overrides["server_protocol"]
