"""Diagnostics that explain a run: selection weights, Byzantine rows selected,
honest variance-to-norm ratio; NumPy references on fixed inputs."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from byzjax import aggregators, sim
from byzjax.sim._diagnostics import (
    EXPLAIN,
    byzantine_selection,
    honest_variance_to_norm,
    make_explain,
    pipeline_selection_weights,
)
from tests.helpers import (
    ref_bulyan_selection,
    ref_krum_scores,
    ref_mda_subset,
    ref_nnm,
    ref_order,
    ref_sq_dist,
)


def _rows(seed, n=11, d=5):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _weights(rule, x, f, **kw):
    return np.asarray(aggregators.selection_weights(
        rule, {"w": jnp.asarray(x)}, num_byzantine=f, **kw))


def test_krum_selects_no_far_byzantine_row():
    honest = _rows(0, n=10)
    byz = np.full((3, 5), 100.0, np.float32)
    x = np.concatenate([honest, byz])
    w = _weights("krum", x, 3)
    expected = np.zeros(13)
    expected[ref_order(ref_krum_scores(x, 13 - 3 - 2))[0]] = 1.0
    np.testing.assert_array_equal(w, expected)
    selected, weight = byzantine_selection(jnp.asarray(w), 10)
    assert float(selected) == 0.0 and float(weight) == 0.0


def test_krum_selects_identical_alie_rows_near_the_mean():
    honest = _rows(1, n=10)
    alie = honest.mean(0) - 0.1 * honest.std(0, ddof=1)
    x = np.concatenate([honest, np.tile(alie, (3, 1))])
    w = _weights("krum", x, 3)
    pick = ref_order(ref_krum_scores(x, 13 - 3 - 2))[0]
    assert pick >= 10  # the NumPy reference picks a Byzantine row too
    assert w[pick] == 1.0 and w.sum() == 1.0
    selected, weight = byzantine_selection(jnp.asarray(w), 10)
    np.testing.assert_allclose(float(selected), 1 / 3)  # one of three rows
    assert float(weight) == 1.0


def test_selection_weights_match_numpy_references():
    f = 2
    x = _rows(0)
    x[-2:] += 3.0  # two rows off the cloud
    n = len(x)
    # Multi-Krum: 1/m on the m rows of least score.
    m = n - f
    expected = np.zeros(n)
    expected[ref_order(ref_krum_scores(x, n - f - 2))[:m]] = 1 / m
    np.testing.assert_allclose(_weights("multi_krum", x, f), expected, rtol=1e-6)
    # MDA: 1/(n - f) on the least-diameter subset.
    expected = ref_mda_subset(ref_sq_dist(x), f) / (n - f)
    np.testing.assert_allclose(_weights("mda", x, f), expected, rtol=1e-6)
    # Bulyan: its selection stage.
    expected = np.zeros(n)
    expected[ref_bulyan_selection(x, f)] = 1 / (n - 2 * f)
    np.testing.assert_allclose(_weights("bulyan", x, f), expected, rtol=1e-6)
    # NNM: the mixing matrix reproduces the pre-aggregator.
    mixing = _weights("nnm", x, f)
    np.testing.assert_allclose(mixing @ x.astype(np.float64), ref_nnm(x, f),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mixing.sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("rule", ["krum", "multi_krum", "mda"])
def test_weighted_rows_are_the_rule_output(rule):
    x = _rows(3)
    out = aggregators.get(rule)({"w": jnp.asarray(x)}, num_byzantine=3)["w"]
    np.testing.assert_allclose(_weights(rule, x, 3) @ x, np.asarray(out),
                               rtol=1e-5, atol=1e-6)


def test_bulyan_byzantine_momentum_weights():
    x = _rows(4, n=13)
    f = 2
    n, top, theta = 13, 13 - 2 - 2, 13 - 4 - 2
    order = ref_order(ref_krum_scores(x, top, squared=False))
    means = np.array([x[order[i:top]].mean(0) for i in range(theta)])
    w = _weights("bulyan", x, f, variant="byzantine_momentum")
    np.testing.assert_allclose(w @ x, means.mean(0), rtol=1e-5, atol=1e-6)
    assert w.shape == (n,) and abs(w.sum() - 1.0) < 1e-6


def test_pipeline_composes_nnm_and_krum():
    x = {"w": jnp.asarray(_rows(5))}
    fn = pipeline_selection_weights(aggregator="krum", num_byzantine=2,
                                    preaggregator="nnm")
    w = np.asarray(fn(x))
    mixed = aggregators.get_preaggregator("nnm")(x, num_byzantine=2)
    out = aggregators.krum(mixed, num_byzantine=2)["w"]
    np.testing.assert_allclose(w @ np.asarray(x["w"]), np.asarray(out),
                               rtol=1e-5, atol=1e-6)
    assert pipeline_selection_weights(aggregator="trimmed_mean",
                                      num_byzantine=2) is None
    assert not aggregators.has_selection("geometric_median")
    with pytest.raises(ValueError, match="selects no rows"):
        aggregators.selection_weights("trimmed_mean", x, num_byzantine=2)


_RATIO = jax.jit(honest_variance_to_norm)


@settings(max_examples=15, deadline=None)
@given(arrays(np.float32, st.sampled_from([(2, 3), (5, 3)]),
              elements=st.floats(-10, 10, width=32)))
def test_variance_to_norm_ratio_matches_numpy(x):
    x64 = x.astype(np.float64)
    mu = x64.mean(0)
    if np.sum(mu ** 2) < 1e-3:
        return  # the ratio is ill-conditioned near a zero mean
    expected = np.sum((x64 - mu) ** 2) / (len(x) - 1) / np.sum(mu ** 2)
    tree = {"a": jnp.asarray(x[:, :1]), "b": jnp.asarray(x[:, 1:])}
    np.testing.assert_allclose(float(_RATIO(tree)), expected,
                               rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_simulator_records_them_on_each_chunk():
    from tests.helpers import TinyMLP, make_data, tiny_config

    config = tiny_config(aggregator="krum", num_workers=9, num_byzantine=2,
                         attack="alie", num_rounds=4, eval_every=2)
    data = make_data(config.num_workers)
    program = sim.make_program(config, data, TinyMLP())
    hp = {k: jnp.float32(v) for k, v in sim.hparams_of(config).items()}
    state = program.init(jax.random.key(0), hp)
    state1, m = jax.jit(program.run_chunk)(state, hp)
    assert all(np.isfinite(float(m[k])) for k in EXPLAIN)
    assert 0.0 <= float(m["byz_selected"]) <= 1.0
    # The chunk's value is the last round's (a traced flag: one compile).
    step = jax.jit(program.round_step)
    s, r0 = step(state, hp, True, jnp.asarray(False))
    assert all(np.isnan(float(r0[k])) for k in EXPLAIN)
    _, r1 = step(s, hp, True, jnp.asarray(True))
    for k in EXPLAIN:
        np.testing.assert_allclose(float(m[k]), float(r1[k]), rtol=1e-5)


def test_explain_without_selection_rule_or_attackers():
    from tests.helpers import tiny_config

    x = {"w": jnp.asarray(_rows(6, n=7))}
    honest = {"w": x["w"][:5]}
    for overrides, num_honest in (({"aggregator": "trimmed_mean"}, 5),
                                  ({"aggregator": "mda"}, 7)):  # no attackers
        explain = make_explain(sim.resolve(tiny_config(**overrides)),
                               num_honest=num_honest)
        out = explain(x, x)
        assert np.isnan(float(out["byz_selected"]))
        assert np.isnan(float(out["byz_weight"]))
        rows = x if num_honest == 7 else honest
        np.testing.assert_allclose(float(out["var_norm_ratio"]),
                                   float(honest_variance_to_norm(rows)), rtol=1e-6)


def test_report_draws_a_figure_per_run(tmp_path):
    from byzjax import report
    from byzjax.sim import _store

    nan = float("nan")
    metrics = {"round": [50, 100], "test_accuracy": [0.5, 0.6],
               "resilience": [0.3, 0.2], "cosine": [0.9, 0.8],
               "byz_selected": [0.2, 0.0], "byz_weight": [0.2, 0.0],
               "var_norm_ratio": [3.0, 200.0]}
    base = {"config": {"optimizer": "resam", "attack": "alie", "aggregator": "krum",
                       "num_workers": 15, "num_byzantine": 5},
            "seed": 0, "hparams": {"beta": 0.9}, "final_accuracy": 0.6,
            "max_accuracy": 0.6, "diverged": False, "diverged_round": -1}
    (tmp_path / "runs").mkdir()
    _store.write_record(str(tmp_path / "runs" / "a.json"),
                        {**base, "run_id": "a", "metrics": metrics})
    # An older record without the new diagnostics, one with NaN accuracy.
    _store.write_record(str(tmp_path / "runs" / "b.json"), {
        **base, "run_id": "b", "metrics": {"round": [50, 100],
                                           "test_accuracy": [nan, nan]}})
    runs = report.load_runs(str(tmp_path))
    paths = report.write_run_figures(runs, str(tmp_path / "figs"))
    assert sorted(os.path.basename(p) for p in paths) == ["a.png", "b.png"]
    assert all(os.path.getsize(p) > 1000 for p in paths)
