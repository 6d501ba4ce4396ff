"""byzjax.analysis: the worst-case resilience estimator."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from byzjax import aggregators, analysis

SMALL = dict(num_restarts=12, num_steps=40)


def test_mean_is_unbounded_in_the_allowed_radius():
    # One Byzantine row at distance R moves the mean by R / n: the estimate
    # must find it and grow linearly with R, without limit.
    values = []
    for radius in (10.0, 100.0, 1000.0):
        est = analysis.estimate_lambda("mean", num_workers=5, num_byzantine=1, dim=4,
                                       key=jax.random.key(0), byzantine_radius=radius,
                                       **SMALL)
        assert float(est.value) >= 0.99 * radius / 5
        values.append(float(est.value))
    assert values[1] > 9 * values[0] and values[2] > 9 * values[1]


@pytest.mark.parametrize("name", ["mda", "trimmed_mean"])
@pytest.mark.parametrize("n,f", [(7, 1), (7, 2), (11, 3)])
def test_estimate_never_exceeds_the_stated_bound(name, n, f):
    est = analysis.estimate_lambda(name, num_workers=n, num_byzantine=f, dim=10,
                                   key=jax.random.key(n + f), **SMALL)
    bound = analysis.stated_bound(name, num_workers=n, num_byzantine=f, dim=10)
    assert 0.0 < float(est.value) <= bound + 1e-5
    # and the returned inputs reproduce the value
    x = np.concatenate([np.asarray(est.honest), np.asarray(est.byzantine)])
    out = aggregators.get(name)({"w": x}, num_byzantine=f)["w"]
    np.testing.assert_allclose(np.linalg.norm(out), est.value, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(est.honest).mean(0), 0.0, atol=1e-5)


def test_gradient_ascent_beats_random_search_of_the_same_budget():
    n, f, dim = 7, 2, 10
    budget = SMALL["num_restarts"] * (SMALL["num_steps"] + 1)
    wins = []
    for name in ("krum", "coordinate_median", "meamed", "mda"):
        est = analysis.estimate_lambda(name, num_workers=n, num_byzantine=f, dim=dim,
                                       key=jax.random.key(0), **SMALL)
        rnd = analysis.random_search_lambda(name, num_workers=n, num_byzantine=f,
                                            dim=dim, key=jax.random.key(0),
                                            num_samples=budget)
        wins.append(float(est.value) > float(rnd.value))
    assert sum(wins) >= 3, wins


def _mean_ratio_numpy(honest, byzantine, radius):
    h = honest - honest.mean(0)
    diameter = max(np.linalg.norm(a - b) for a in h for b in h)
    h = h / diameter
    norms = np.linalg.norm(byzantine, axis=-1, keepdims=True)
    b = byzantine * np.minimum(1.0, radius / norms)
    return np.linalg.norm(np.concatenate([h, b]).mean(0))


def test_the_start_and_the_final_point_count():
    # num_steps = 0 evaluates the starting points only; every further step
    # extends the same deterministic path, so each restart's best never drops
    # as num_steps grows (the point after the last step counts too).
    from byzjax.analysis._resilience import _starts

    n, f, dim, restarts = 5, 1, 3, 6
    kw = dict(num_workers=n, num_byzantine=f, dim=dim, key=jax.random.key(3),
              num_restarts=restarts)
    per = [np.asarray(analysis.estimate_lambda("mean", num_steps=s,
                                               **kw).per_restart)
           for s in (0, 1, 2)]
    honest, byz = _starts(jax.random.key(3), restarts, n - f, f, dim, 10.0)
    ref = [_mean_ratio_numpy(np.asarray(a, np.float64), np.asarray(b, np.float64),
                             10.0) for a, b in zip(honest, byz)]
    np.testing.assert_allclose(per[0], ref, rtol=1e-4)
    assert np.all(per[1] >= per[0]) and np.all(per[2] >= per[1])
    assert np.any(per[2] > per[0])


def test_with_a_preaggregator_and_kwargs():
    est = analysis.estimate_lambda("krum", num_workers=9, num_byzantine=2, dim=5,
                                   key=jax.random.key(1), preaggregator="nnm",
                                   aggregator_kwargs=dict(num_neighbours=6), **SMALL)
    assert np.isfinite(float(est.value)) and est.per_restart.shape == (12,)


def test_bounds():
    assert analysis.lower_bound(num_workers=15, num_byzantine=5) == 0.5
    assert analysis.stated_bound("mda", num_workers=15, num_byzantine=5, dim=3) == 1.0
    assert analysis.stated_bound("phocas", num_workers=15, num_byzantine=5,
                                 dim=3) is None
    assert analysis.stated_bound("cwtm", num_workers=15, num_byzantine=5,
                                 dim=4) == pytest.approx(0.5 * 2.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_workers=4, num_byzantine=2), "num_byzantine < num_workers / 2"),
    (dict(num_workers=7, num_byzantine=0), "num_byzantine must be an int >= 1"),
    (dict(num_workers=7, num_byzantine=2, byzantine_radius=0.0), "byzantine_radius"),
    (dict(num_workers=7, num_byzantine=2, aggregator="trimed_mean"), "unknown"),
    (dict(num_workers=5, num_byzantine=2, aggregator="krum"), "2f\\+3"),
])
def test_bad_input_is_a_clear_error(kwargs, match):
    kwargs = dict(dict(aggregator="mean", dim=3, key=jax.random.key(0)), **kwargs)
    with pytest.raises(ValueError, match=match):
        analysis.estimate_lambda(kwargs.pop("aggregator"), **kwargs)
