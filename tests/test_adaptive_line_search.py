"""``adaptive(..., search="line")``: ByzFL's line search over ``tau``.

Checked three ways:

* against a NumPy transcription of ByzFL's ``_expansion_phase`` and
  ``_contraction_phase`` (a plain Python loop, float64 damage), on random and
  tied inputs, under ``jit`` and ``vmap``, with one trace;
* against ByzFL 0.0.11's own ``Optimal_ALittleIsEnough`` /
  ``Optimal_InnerProductManipulation`` outputs on fixed inputs
  (``tests/data/byzfl_optimal_attacks.json``, written by
  ``scripts/byzfl_optimal_fixture.py``; ByzFL is never imported here);
* the option checks, and the route through ``attack_kwargs``.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import aggregators, attacks, optim, sim
from byzjax.attacks._adaptive import tree_distance
from byzjax.attacks._base import honest_mean
from byzjax.sim._program import check_pipeline
from tests.helpers import ref_mean, ref_trimmed

FIXTURE = os.path.join(os.path.dirname(__file__), "data",
                       "byzfl_optimal_attacks.json")


# ------------------------------------------------------------ NumPy reference
def np_line_search(objective, evals=20, start=0.0, delta=10.0, ratio=0.8):
    """ByzFL 0.0.11's line search, as its two phases read (Python floats)."""
    best_x = start
    best_y = objective(best_x)
    remaining = evals - 1
    while remaining > 0:  # expansion
        prop_x = best_x + delta
        prop_y = objective(prop_x)
        remaining -= 1
        if prop_y > best_y:
            best_x, best_y = prop_x, prop_y
            delta *= 2
        else:
            delta *= ratio
            break
    while remaining > 0:  # contraction
        prop_x = best_x + delta
        prop_y = objective(prop_x)
        remaining -= 1
        if prop_y > best_y:
            best_x, best_y = prop_x, prop_y
        delta *= ratio
    return best_x


def np_rows(x, tau, attack):
    """ByzFL's row: ALIE ``mean + tau * std(ddof=1)``, IPM ``-tau * mean``."""
    mu = ref_mean(x)
    if attack == "alie":
        return mu + tau * np.sqrt(((x - mu) ** 2).sum(0) / (len(x) - 1))
    return -tau * mu


def np_damage(x, tau, attack, f, trim):
    stack = np.concatenate([x, np.repeat(np_rows(x, tau, attack)[None], f, 0)])
    agg = np.array([ref_trimmed(stack[:, j], trim) for j in range(x.shape[1])])
    return float(np.linalg.norm(agg - ref_mean(x)))


def _inputs():
    rng = np.random.default_rng(5)
    random = rng.normal(size=(6, 3)) + 0.3
    tied = np.array([[1, 2, 0], [1, 2, 0], [3, 0, 1], [0, 1, 2], [3, 0, 1],
                     [2, 2, 1]], float)
    return np.stack([random, tied, -tied]).astype(np.float32)


@pytest.mark.parametrize("attack", ["alie", "ipm"])
def test_line_search_matches_numpy_loop_under_jit_and_vmap(attack):
    f = 2
    traces = []

    def counting_trimmed_mean(stack, *, num_byzantine):
        traces.append(1)
        return aggregators.trimmed_mean(stack, num_byzantine=num_byzantine)

    base = "alie" if attack == "alie" else "foe"
    fn = jax.jit(jax.vmap(lambda h: attacks.adaptive(
        {"w": h}, num_byzantine=f, aggregator=counting_trimmed_mean, base=base,
        search="line", return_eps=True)))
    xs = _inputs()
    for call in range(2):
        rows, eps = fn(jnp.asarray(xs))
        assert len(traces) == 1  # one trace of the rule: the loop, not Python
        for i, x in enumerate(xs.astype(np.float64)):
            tau = np_line_search(lambda t: np_damage(x, t, attack, f, f))
            got = -float(eps[i]) if attack == "alie" else float(eps[i]) - 1
            np.testing.assert_allclose(got, tau, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(rows["w"][i], np.repeat(
                np_rows(x, tau, attack)[None], f, 0), rtol=1e-5, atol=1e-5)
        xs = xs * 1.5 + 0.25  # new values, same shapes: no retrace


def test_line_search_follows_byzfl_on_nan_and_ties():
    # NaN when a coordinate is below -5: never better (ByzFL's `prop_y > best_y`).
    def fragile(stack, *, num_byzantine):
        bad = jnp.any(stack["w"] < -5)
        return jax.tree_util.tree_map(lambda o: jnp.where(bad, jnp.nan, o),
                                      aggregators.mean(stack))

    honest = {"w": jnp.ones((4, 2))}
    fn = jax.jit(lambda h, s: attacks.adaptive(
        h, num_byzantine=1, aggregator=fragile, base="foe", search="line",
        start=s, return_eps=True))
    _, eps = fn(honest, 0.0)
    want = np_line_search(lambda t: np.nan if t > 5 else np.sqrt(2) * (1 + t) / 5)
    assert float(eps) - 1 == pytest.approx(want) and want < 5
    _, eps = fn(honest, 6.0)  # NaN at start: never replaced
    assert float(eps) - 1 == 6.0
    # A constant damage: every proposal ties and is rejected.
    _, eps = attacks.adaptive(honest, num_byzantine=1, aggregator="mean",
                              base="alie", search="line", return_eps=True)
    assert float(eps) == 0.0  # sigma = 0: the row is the mean whatever tau


def test_line_search_options_are_checked():
    h = {"w": jnp.ones((4, 2))}
    kw = dict(num_byzantine=1, aggregator="mean")
    for bad, match in [({"search": "bisect"}, "search must be"),
                       ({"search": "line", "evals": 0}, "evals must be"),
                       ({"search": "line", "delta": 0.0}, "delta must be"),
                       ({"search": "line", "ratio": 0.5}, "ratio must be"),
                       ({"search": "line", "start": float("nan")}, "start must"),
                       ({"evals": 5}, "pass search='line'"),
                       ({"search": "line", "candidates": [1.0]}, "candidates"),
                       ({"search": "line", "batch_size": 1}, "batch_size")]:
        with pytest.raises(ValueError, match=match):
            attacks.adaptive(h, **kw, **bad)
    for bad in [{"search": "bisect"}, {"ratio": 1.0}, {"evals": 0}]:
        with pytest.raises(ValueError):
            attacks.ATTACKS.check_kwargs("adaptive_alie", bad)
    attacks.ATTACKS.check_kwargs("adaptive_foe", {"search": "line", "evals": 3,
                                                  "start": 0.0, "ratio": 0.9})
    # In a simulator config: refused before any data, naming attack_kwargs.
    config = sim.get_config()
    config.attack = "adaptive_alie"
    for kwargs, check in [({"search": "line", "ratio": 2.0}, sim.validate),
                          ({"search": "line", "delta": 0.0}, check_pipeline),
                          ({"evals": 5}, check_pipeline)]:
        config.attack_kwargs = kwargs
        with pytest.raises(sim.ConfigError, match="adaptive_alie") as err:
            check(config)
        assert err.value.field == "attack_kwargs"
    config.attack_kwargs = {"search": "line", "evals": 5}
    sim.validate(config)
    check_pipeline(config)


def test_line_search_through_attack_kwargs():
    tx = optim.byzantine_attack("adaptive_foe", num_workers=4, num_byzantine=1,
                                aggregator="mean", search="line", evals=3)
    g = {"w": jnp.array([[1.0], [3.0], [2.0], [0.0]])}
    out, _ = jax.jit(tx.update)(g, tx.init({"w": jnp.zeros(1)}))
    # evals = 3 against the mean: tau 0, then 10, 30 accepted; row -30 * 2.
    assert out["w"].ravel().tolist() == [1.0, 3.0, 2.0, -60.0]


# ------------------------------------------------------------- against ByzFL
_GM = {"smoothing": 0.1, "num_iterations": 3, "tolerance": 0.0, "init": "zeros"}
_AGGREGATORS = {"TrMean": ("trimmed_mean", {}), "Average": ("mean", {}),
                "GeometricMedian": ("geometric_median", _GM)}
_PRE = {"preaggregator": "chain", "preaggregator_kwargs": {
    "steps": [["static_clipping", {"max_norm": 2.0}], ["nnm", {}]]}}
#: The configurations compared here (attack, aggregator, Clipping then NNM,
#: f, declared f), each compiled once with both inputs vmapped: every
#: aggregator, with and without the pre-aggregators, f = 1 and 2, a declared
#: f above the real one. The fixture holds 26 (each passes this test; the
#: rest are left out for time: a line search through NNM compiles in seconds).
_COMPARED = [("alie", "TrMean", True, 1, 2), ("ipm", "GeometricMedian", True, 2, 2),
             ("alie", "Average", False, 2, 2), ("ipm", "TrMean", False, 1, 1)]


@pytest.fixture(scope="module")
def byzfl_fixture():
    with open(FIXTURE) as fh:
        data = json.load(fh)
    assert data["line_search"] == attacks.LINE_SEARCH_DEFAULTS
    return data


def _rounding_decided(trace, tol=1e-5) -> bool:
    """Whether a comparison of ByzFL's search was between damages within
    ``tol`` (relative) of each other, ties included: float32 rounding decides
    it, and another implementation may decide it the other way."""
    best = trace[0][1]
    for _, y in trace[1:]:
        if abs(y - best) <= tol * max(abs(best), abs(y)):
            return True
        best = max(best, y)
    return False


@pytest.mark.parametrize("case", _COMPARED, ids=lambda c: "-".join(map(str, c)))
def test_line_search_matches_byzfl_optimal_attacks(byzfl_fixture, case):
    attack, agg, pre, f, declared = case
    cases = {c["input"]: c for c in byzfl_fixture["cases"]
             if (c["attack"], c["aggregator"], c["pre_aggregators"], c["f"],
                 c["declared_f"]) == case}
    names = sorted(cases)
    xs = jnp.asarray(np.array([byzfl_fixture["inputs"][k] for k in names]),
                     jnp.float32)
    name, agg_kwargs = _AGGREGATORS[agg]
    server = dict(aggregator=name, aggregator_kwargs=dict(
        agg_kwargs, num_byzantine=declared), **(_PRE if pre else {}))
    row_fn = (attacks.a_little_is_enough if attack == "alie"
              else attacks.inner_product_manipulation)

    def one(h, taus):
        honest = {"w": h}
        rows, eps = attacks.get(f"adaptive_{'alie' if attack == 'alie' else 'foe'}")(
            honest, num_byzantine=f, search="line", return_eps=True, **server)
        tau = -eps if attack == "alie" else eps - 1
        serve = attacks.server_view(honest, num_byzantine=f, **server)

        def damage(t):
            return tree_distance(serve(row_fn(honest, num_byzantine=f, tau=t)),
                                 honest_mean(honest))

        # The damage at every tau ByzFL evaluated, and at byzjax's choice.
        return rows["w"], tau, jax.vmap(damage)(jnp.append(taus, tau))

    taus = jnp.asarray([[t for t, _ in cases[k]["trace"]] for k in names])
    rows, tau, damages = jax.jit(jax.vmap(one))(xs, taus)
    for i, k in enumerate(names):
        c = cases[k]
        byzfl_damages = [y for _, y in c["trace"]]
        np.testing.assert_allclose(damages[i, :-1], byzfl_damages, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_array_equal(rows[i], rows[i, :1].repeat(f, 0))
        if np.isclose(float(tau[i]), c["tau"], rtol=1e-5, atol=1e-6):
            np.testing.assert_allclose(rows[i, 0], c["vector"], rtol=1e-5,
                                       atol=1e-5)
        else:  # another tau on a plateau: as damaging, to float32 precision
            assert _rounding_decided(c["trace"])
            best = max(byzfl_damages[j] for j, (t, _) in enumerate(c["trace"])
                       if t == c["tau"])
            assert float(damages[i, -1]) == pytest.approx(best, rel=1e-5)
