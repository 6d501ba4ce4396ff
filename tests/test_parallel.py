"""Multi-device tests (8 host CPU devices via XLA_FLAGS, in a separate process).

``test_multidevice_suite`` re-runs this file in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; inside it, the tests
marked ``multidevice`` run for real.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from byzjax import parallel, sim

EIGHT = jax.device_count() >= 8
_needs_eight = pytest.mark.skipif(not EIGHT, reason="needs 8 devices (run via "
                                  "test_multidevice_suite)")


def multidevice(test):
    """Marks a test that runs only inside the 8-device process."""
    return pytest.mark.multidevice(_needs_eight(test))


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.multidevice
@pytest.mark.skipif(EIGHT, reason="already inside the multi-device process")
def test_multidevice_suite():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "no:xdist", __file__, "-k", "not multidevice_suite"],
        env=env, capture_output=True, text=True, timeout=900)
    tail = out.stdout[-4000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    last = out.stdout.splitlines()[-1]
    assert " passed" in last and "skipped" not in last, tail


def _tiny_config(**kw):
    from tests.helpers import tiny_config

    return tiny_config(**kw)


@multidevice
@pytest.mark.parametrize("shard", ["runs", "workers"])
def test_sharded_simulation_equals_unsharded(shard):
    from tests.helpers import TinyMLP, make_data

    n = 8 if shard == "workers" else 7
    config = _tiny_config(num_workers=n, num_byzantine=2, num_rounds=4, eval_every=2)
    data = make_data(n)
    seeds = [0, 1, 2]  # 3 runs over 8 devices: padded to 8
    ref = sim.run_group(config, seeds=seeds, data=data, model=TinyMLP(),
                        progress=False)
    config.shard = shard
    got = sim.run_group(config, seeds=seeds, data=data, model=TinyMLP(),
                        progress=False)
    assert len(got) == len(ref) == 3
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a["metrics"]["train_loss"],
                                   b["metrics"]["train_loss"],
                                   rtol=1e-5)
        np.testing.assert_allclose(a["metrics"]["agg_dist"], b["metrics"]["agg_dist"],
                                   rtol=1e-4)


@multidevice
def test_worker_sharding_rejects_indivisible_worker_count():
    from tests.helpers import TinyMLP, make_data

    config = _tiny_config(num_workers=7, num_byzantine=2, shard="workers")
    with pytest.raises(ValueError, match="divisible by the 8 devices"):
        sim.run_group(config, seeds=[0], data=make_data(7), model=TinyMLP(),
                      progress=False)


def _regression_problem(seed=0, n=512, d=10):
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=(d,)).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = x @ w_true + 0.01 * rng.normal(size=(n,)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def _loss(params, batch):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def _train_dp(aggregator, fault, steps=60):
    mesh = parallel.make_mesh(8)
    init, step = parallel.robust_data_parallel_step(
        _loss, optax.sgd(0.05), mesh=mesh, num_byzantine=1 if aggregator != "mean"
        else 0, aggregator=aggregator, momentum=0.5, fault=fault)
    x, y = _regression_problem()
    params = {"w": jnp.zeros(10), "b": jnp.zeros(())}
    state = init(params)
    full = float(_loss(params, (x, y)))
    for i in range(steps):
        sl = slice((i * 64) % 512, (i * 64) % 512 + 64)
        params, state, _ = step(params, state, (x[sl], y[sl]))
    return full, float(_loss(params, (x, y)))


def _inf_fault(g, idx):
    return jax.tree_util.tree_map(lambda x: jnp.where(idx == 3, jnp.inf, x), g)


def _flip_fault(g, idx):
    return jax.tree_util.tree_map(lambda x: jnp.where(idx == 3, -20.0 * x, x), g)


@multidevice
@pytest.mark.parametrize("fault", [_inf_fault, _flip_fault])
def test_robust_data_parallel_survives_a_faulty_device(fault):
    start, end = _train_dp("trimmed_mean", fault)
    assert np.isfinite(end) and end < 0.05 * start
    start_m, end_m = _train_dp("mean", fault)
    assert not (np.isfinite(end_m) and end_m < 0.05 * start_m)


@multidevice
def test_robust_data_parallel_without_fault_matches_plain_training():
    start, end = _train_dp("mean", None)
    assert end < 0.05 * start
