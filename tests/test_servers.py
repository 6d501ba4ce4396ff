"""Replicated and Byzantine parameter servers (GuanYu, LiuBei) in the simulator,
and their pure building blocks against NumPy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import sim
from tests.test_sim import TinyMLP, make_data, tiny_config


def _hp(config):
    return {k: jnp.float32(v) for k, v in sim.hparams_of(config).items()}


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel()
                           for x in jax.tree_util.tree_leaves(tree)])


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
    return jax.jit(program.train)(jax.random.key(seed), _hp(config))


# ----------------------------------------------------------- equivalence
@pytest.mark.parametrize("optimizer", ["resam", "dsgd", "server_momentum"])
def test_guanyu_without_byzantine_servers_equals_single_server(optimizer):
    """No Byzantine server, zero delays, full quorums: every correct server
    holds the single server's model (same seeds)."""
    c = server_config(optimizer=optimizer, delay_distribution="zero", num_rounds=6,
                      eval_every=3)
    single = server_config("single", optimizer=optimizer, num_servers=1,
                           num_rounds=6, eval_every=3)
    data = make_data(c.num_workers)
    state, metrics = _train(c, data=data)
    ref_state, ref_metrics = _train(single, data=data)
    ref = _flat(ref_state.params)
    for i in range(c.num_servers):
        got = _flat(jax.tree_util.tree_map(lambda x, i=i: x[i], state.params))
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(metrics["test_accuracy"],
                               ref_metrics["test_accuracy"], atol=1e-6)
    assert np.all(np.asarray(metrics["server_spread"]) < 1e-5)
