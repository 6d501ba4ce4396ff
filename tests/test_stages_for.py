"""``stages_for``: config field ``attack_eps`` reaches the attack's strength
keyword, whatever its name, and only an attack that has one."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import sim
from byzjax.sim import _kit
from tests.helpers import tiny_config

N, F = 7, 2


def _byzantine_rows(spec, attack_eps):
    """The Byzantine rows of the attack stage built by ``stages_for``."""
    hp = {**spec.hparams, "attack_eps": jnp.float32(attack_eps)}
    stages = _kit.stages_for(spec, hp, jax.random.key(0))
    params = {"w": jnp.zeros(3)}
    sent = {"w": jnp.arange(N * 3, dtype=jnp.float32).reshape(N, 3)}
    out, _ = stages.attack.update(sent, stages.attack.init(params), params)
    return np.asarray(out["w"][N - F:]), np.asarray(sent["w"][:N - F]).mean(0)


def _spec(attack):
    spec = sim.resolve(tiny_config(num_workers=N, num_byzantine=F, attack=attack,
                                   aggregator="trimmed_mean"), warn=False)
    # a point that sets attack_eps for an attack resolve would leave it off for
    return dataclasses.replace(spec, attack_eps=1.0)


def test_attack_without_strength_ignores_attack_eps():
    rows, mean = _byzantine_rows(_spec("sign_flip"), 3.0)  # no ``eps`` keyword
    np.testing.assert_allclose(rows, np.broadcast_to(-mean, rows.shape),
                               rtol=1e-6)


def test_strength_keyword_named_otherwise_gets_attack_eps(monkeypatch):
    # gaussian's strength keyword is ``scale``: with scale 0 every Byzantine
    # row is the honest mean, with scale 4 none is.
    monkeypatch.setattr(_kit, "attack_strength",
                        lambda attack: "scale" if attack == "gaussian" else None)
    spec = _spec("gaussian")
    rows, mean = _byzantine_rows(spec, 0.0)
    np.testing.assert_allclose(rows, np.broadcast_to(mean, rows.shape), rtol=1e-6)
    rows, mean = _byzantine_rows(spec, 4.0)
    assert np.all(np.abs(rows - mean).max(1) > 0.1)


def test_eps_reaches_alie():
    spec = _spec("alie")
    small, mean = _byzantine_rows(spec, 0.0)
    large, _ = _byzantine_rows(spec, 2.0)
    np.testing.assert_allclose(small, np.broadcast_to(mean, small.shape),
                               rtol=1e-6)
    assert not np.allclose(small, large)
