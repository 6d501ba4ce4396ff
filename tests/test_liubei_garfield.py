"""LiuBei with ``liubei_filters="garfield"``: the filters and pull schedule of
the authors' public code (LPD-EPFL/Garfield, ``Garfield_legacy/byzWorker.py``,
``byzPS.py``) against NumPy loops written from that code, and the property that
the filters' verdicts never change training.

LiuBei: El Mhamdi, Guerraoui, Guirguis, Rouault (2019/2022), "Fast Machine
Learning with Byzantine Workers and Servers". docs/SERVERS.md lists how the
code differs from byzjax's derived thresholds.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import servers, sim
from byzjax.sim._liubei import make_liubei_program
from tests.helpers import TinyMLP, flat_params, make_data, tiny_config, traced_hparams


def _numpy_thresholds(ks, n_ps, f_ps):
    # byzWorker.py, line by line: append, percentile, cut at 100 to the last 50.
    lipschitzes, out = [], []
    for k in ks:
        lipschitzes.append(k)
        out.append(np.percentile(lipschitzes, 100 * (n_ps - f_ps) / n_ps))
        if len(lipschitzes) == 100:
            lipschitzes = lipschitzes[-50:]
    return np.array(out)


@functools.partial(jax.jit, static_argnames=("n_ps", "f_ps"))
def _ring_thresholds(ks, *, n_ps, f_ps):
    def step(carry, k):
        h, c = servers.garfield_record(*carry, k)
        thr = servers.garfield_lipschitz_threshold(
            h, c, num_servers=n_ps, num_byzantine_servers=f_ps)
        return (h, c), thr

    init = (jnp.zeros(servers.GARFIELD_HISTORY, jnp.float32), jnp.int32(0))
    return jax.lax.scan(step, init, ks)[1]


@pytest.mark.parametrize("n_ps,f_ps", [(7, 2), (4, 1)])
def test_percentile_threshold_matches_the_codes_loop(n_ps, f_ps):
    """230 steps: through the first cut (100 values), and two more cycles."""
    rng = np.random.default_rng(n_ps + f_ps)
    ks = rng.lognormal(size=230).astype(np.float32)
    got = np.asarray(_ring_thresholds(jnp.asarray(ks), n_ps=n_ps, f_ps=f_ps))
    ref = _numpy_thresholds(ks.astype(np.float64), n_ps, f_ps)
    np.testing.assert_allclose(got, ref, rtol=2e-6)
    window = np.asarray(servers.garfield_window(jnp.arange(1, 231)))
    assert window.tolist()[:100] == list(range(1, 101))
    assert window.min() == 1 and window[100:].min() == 51 and window.max() == 100


def test_percentile_threshold_is_nan_with_a_nan_coefficient_as_numpy():
    ks = np.array([1.0, np.nan, 2.0, 3.0], np.float32)
    got = np.asarray(_ring_thresholds(jnp.asarray(ks), n_ps=7, f_ps=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = _numpy_thresholds(ks.astype(np.float64), 7, 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert got[0] == ref[0] == 1.0


def test_models_bound_matches_the_codes_formula():
    lr, n, f, T = 0.01, 15, 3, 4
    t = np.arange(1, 12)
    g = 0.5 + t
    ref = [lr * g_ * (((3 * T + 2) * (n - f)) / (4 * f) + 2 * ((t_ - 1) % T))
           for g_, t_ in zip(g, t)]
    got = servers.garfield_models_bound(lr, jnp.asarray(g, jnp.float32),
                                        num_workers=n, num_byzantine=f, period=T,
                                        step=jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6)
    assert int(1 / (3 * 1 * 0.01)) == 33  # the code's T for rate 0.01 (l = 1)


def _np_multi_krum(rows, f):
    n = len(rows)
    d2 = ((rows[:, None] - rows[None]) ** 2).sum(-1)
    scores = [np.sort(np.delete(d2[i], i))[: n - f - 2].sum() for i in range(n)]
    return rows[np.argsort(scores, kind="stable")[: n - f - 2]].mean(0)


def test_pull_schedule_one_fixed_server_and_multi_krum_every_T():
    rng = np.random.default_rng(0)
    n_ps, f_ps, T = 7, 2, 3
    start = jnp.array([0, 6, 3, 6, 1])
    initial = np.full(2, -1.0, np.float32)
    pulled = jax.jit(functools.partial(servers.garfield_pulled_models, period=T,
                                       num_byzantine_servers=f_ps))
    for t in range(8):
        rows = rng.normal(size=(n_ps, 2)).astype(np.float32)
        models, reads = pulled({"w": jnp.asarray(rows)}, {"w": jnp.asarray(initial)},
                               start, jnp.int32(t))
        got = np.asarray(models["w"])
        if t == 0:
            np.testing.assert_array_equal(got, np.tile(initial, (5, 1)))
            assert int(reads) == 0
        elif t % T == 0:
            ref = _np_multi_krum(rows.astype(np.float64), f_ps)
            np.testing.assert_allclose(got, np.tile(ref, (5, 1)), rtol=1e-5)
            assert int(reads) == n_ps
        else:
            np.testing.assert_array_equal(got, rows[np.asarray(start)])
            assert int(reads) == 1
        w_g, s_g = servers.garfield_gathers(t, period=T)
        assert (bool(w_g), bool(s_g)) == (t % T == 0 and t > 0, t % T == 0)
    x = {"w": jnp.array([[1.0], [4.0], [2.0], [3.0], [9.0], [0.0]])}
    assert float(servers.upper_median(x)["w"][0]) == 3.0  # sorted[6 // 2]


def _garfield_config(**overrides):
    c = tiny_config(num_byzantine=1, num_workers=6, attack="sign_flip",
                    aggregator="coordinate_median", learning_rate=0.5)
    c.server_protocol = "liubei"
    c.liubei_filters = "garfield"
    c.num_servers = 5
    c.num_byzantine_servers = 1
    c.server_attack = "sign_flip"
    c.scatter_period = 3
    for k, v in overrides.items():
        c[k] = v
    return c


@functools.lru_cache(maxsize=None)
def _garfield_step():
    c = _garfield_config()
    program = make_liubei_program(sim.resolve(c), make_data(c.num_workers),
                                  TinyMLP())
    hp = traced_hparams(c)
    return c, hp, jax.jit(program.init)(jax.random.key(3), hp), jax.jit(
        program.round_step)


def _run(state, num_rounds=7):
    _, hp, _, step = _garfield_step()
    states, metrics = [state], []
    for _ in range(num_rounds):
        state, m = step(state, hp)
        states.append(state)
        metrics.append({k: np.asarray(v) for k, v in m.items()})
    return states, metrics


@functools.lru_cache(maxsize=None)
def _garfield_rounds():
    c, _, state, _ = _garfield_step()
    return (c, *_run(state))


@pytest.mark.slow  # one compiled LiuBei round (~5-15 s), shared
def test_verdicts_are_recorded_but_never_acted_on():
    """The same compiled run from two states that differ only in what the
    filters read (past coefficients, the local model): one where the filters
    would reject every pull, one where they would reject none. The models,
    optimiser states and losses are bit for bit the same."""
    _, states, _ = _garfield_rounds()
    state = states[1]  # after round 0: the filters run from round 1 on
    w = state.workers

    def with_filters(fill, local_shift):
        workers = w._replace(
            history=jnp.full_like(w.history, fill),
            count=jnp.full_like(w.count, 150),
            local=jax.tree_util.tree_map(lambda a: a + local_shift, w.local))
        return state._replace(workers=workers)

    reject_all, m_all = _run(with_filters(0.0, 1e6), num_rounds=5)
    reject_none, m_none = _run(with_filters(1e30, 0.0), num_rounds=5)
    assert float(m_all[0]["lipschitz_filter_rejected"]) == 1.0
    assert float(m_all[0]["models_filter_rejected"]) == 1.0
    assert float(m_none[0]["lipschitz_filter_rejected"]) == 0.0
    for a, b in zip(reject_all, reject_none):
        np.testing.assert_array_equal(flat_params(a.params), flat_params(b.params))
        np.testing.assert_array_equal(flat_params(a.opt_state),
                                      flat_params(b.opt_state))
    for a, b in zip(m_all, m_none):
        assert a["train_loss"] == b["train_loss"]
    # The unperturbed run: nothing to compare at t = 0, verdicts afterwards.
    _, _, metrics = _garfield_rounds()
    assert np.isnan(metrics[0]["lipschitz_filter_rejected"])
    assert np.isnan(metrics[0]["models_filter_rejected"])
    assert all(np.isfinite(m["lipschitz_filter_rejected"]) for m in metrics[1:])
    assert all(m["fallback_fraction"] == 0.0 for m in metrics)


@pytest.mark.slow  # one compiled LiuBei round (~5-15 s), shared
def test_program_pulls_from_one_fixed_server_and_gathers_every_T():
    c, states, metrics = _garfield_rounds()
    n_ps, c_ps, T = c.num_servers, c.num_servers - c.num_byzantine_servers, 3
    assert [float(m["pulls_per_iteration"]) for m in metrics] == [
        0.0 if t == 0 else (n_ps if t % T == 0 else 1.0) for t in range(7)]
    start = np.asarray(states[0].workers.start)
    assert all(np.array_equal(np.asarray(s.workers.start), start) for s in states)
    def rows(tree):  # [k, d] float64, one row per server / worker
        return np.concatenate([np.asarray(a, np.float64).reshape(a.shape[0], -1)
                               for a in jax.tree_util.tree_leaves(tree)], axis=1)

    for t in (1, 2, 4):  # ordinary iterations: the model of the worker's server
        correct = rows(states[t].params)
        # sign flip of models: the negated mean of the correct ones
        served = np.concatenate([correct, np.tile(-correct.mean(0),
                                                  (n_ps - c_ps, 1))])
        np.testing.assert_allclose(rows(states[t + 1].workers.model), served[start],
                                   rtol=1e-6, atol=1e-7)
    assert np.any(start >= c_ps) or np.any(start < c_ps)
    assert all(m["server_spread"] == 0.0 for m in metrics)


CASES = [
    (dict(liubei_filters="garfeld"), "unknown liubei_filters 'garfeld'"),
    (dict(liubei_filters="garfield", num_servers=4, num_byzantine_servers=1),
     "liubei_filters='garfield' takes Multi-Krum of the servers' models (n >= "
     "2f+3): needs num_servers >= 5, got num_servers=4"),
]


@pytest.mark.parametrize("fields,message", CASES)
def test_bad_liubei_filters_are_one_line_errors(fields, message):
    c = sim.get_config()
    c.num_workers, c.num_byzantine = 15, 3
    c.server_protocol, c.num_servers = "liubei", 7
    for k, v in fields.items():
        c[k] = v
    with pytest.raises(sim.ConfigError) as e:
        sim.validate(c)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_garfield_needs_no_clipping_and_is_ignored_outside_liubei():
    c = _garfield_config(clip_norm=0.0)
    sim.validate(c)
    other = sim.get_config()
    other.liubei_filters = "garfield"
    assert "liubei_filters" in sim.ignored_fields(other)
