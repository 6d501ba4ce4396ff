"""Extending byzjax from outside the package, as docs/ARCHITECTURE.md says.

A toy aggregator, attack, optimiser and config field are registered here (not
in byzjax) and run through ``byzjax.sim`` and the command line: the registries
are read live, so a rule registered after ``import byzjax`` works everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os

import jax
import jax.numpy as jnp
import optax
import pytest

from byzjax import aggregators, attacks, cli, optim, sim
from byzjax.optim import _pipeline
from tests.helpers import TinyMLP, make_data, tiny_config


def toy_lowest_mean(updates, *, num_byzantine: int, keep: int = 2):
    """Mean of the ``keep`` rows with the smallest first coordinate sum (toy)."""
    leaves = jax.tree_util.tree_leaves(updates)
    score = sum(x.reshape(x.shape[0], -1).sum(1) for x in leaves)
    order = jnp.argsort(score)[:keep]
    return jax.tree_util.tree_map(lambda x: x[order].mean(0), updates)


def toy_push(honest, *, num_byzantine: int, push: float = 3.0, key=None):
    """Byzantine rows: the honest mean minus ``push`` (toy; the toy rule
    keeps the lowest rows, so they are used)."""
    return jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x.mean(0) - push, (num_byzantine,) + x.shape[1:]),
        honest)


def toy_scaled_sgd(*, num_workers: int, gamma: float = 1.0):
    """A worker stage scaling every gradient by ``gamma`` (toy optimiser)."""
    del num_workers
    return optax.scale(gamma), ()


@contextlib.contextmanager
def _registered():
    aggregators.AGGREGATORS.register(
        "toy_lowest_mean", min_workers=lambda f: 2 * f + 2,
        requirement="n >= 2f+2", keywords={"keep": {"low": 1}})(toy_lowest_mean)
    attacks.ATTACKS.register("toy_push", strength="push")(toy_push)
    optim.register_optimizer("toy_scaled_sgd",
                             config_fields={"gamma": "toy_gamma"})(toy_scaled_sgd)
    sim.register_field(sim.Field(
        "toy_gamma", 1.0, "the toy optimiser's gradient scale",
        check=lambda v: v > 0, must="a number > 0", traced=True,
        run_id="unless_default"))
    try:
        yield
    finally:
        aggregators.AGGREGATORS.unregister("toy_lowest_mean")
        attacks.ATTACKS.unregister("toy_push")
        _pipeline.OPTIMIZERS.pop("toy_scaled_sgd", None)
        sim.unregister_field("toy_gamma")


def _toy_config(**overrides):
    return tiny_config(**{"aggregator": "toy_lowest_mean", "attack": "toy_push",
                          "optimizer": "toy_scaled_sgd", "num_workers": 7,
                          "num_byzantine": 2, **overrides})


def test_toy_rules_run_through_the_simulator():
    with _registered():
        config = _toy_config()
        spec = sim.resolve(config)
        assert spec.value("toy_gamma") == 1.0
        assert "toy_gamma" in sim.FLOAT_HPARAMS
        data = make_data(7)
        # the traced field is a vmappable axis, the attack strength reaches it
        recs = sim.run_group(config, seeds=[0], data=data, model=TinyMLP(),
                             progress=False,
                             hparam_points=[{"toy_gamma": 0.5, "attack_eps": 1.0},
                                            {"toy_gamma": 2.0, "attack_eps": 1.0},
                                            {"toy_gamma": 2.0, "attack_eps": 5.0}])
        shas = [r["final_params_sha256"] for r in recs]
        assert len(set(shas)) == 3
        assert all(r["hparams"]["toy_gamma"] in (0.5, 2.0) for r in recs)


def test_toy_rules_are_validated_like_built_in_ones():
    with _registered():
        with pytest.raises(sim.ConfigError, match="toy_lowest_mean needs n >= 2f"):
            sim.resolve(_toy_config(num_workers=5))
        bad = _toy_config()
        bad.aggregator_kwargs = {"keep": 0}
        with pytest.raises(sim.ConfigError, match="keep"):
            sim.resolve(bad)
        with pytest.raises(sim.ConfigError, match="toy_gamma must be a number > 0"):
            sim.resolve(_toy_config(toy_gamma=-1.0))
        # a new field at its default leaves run ids of existing configs alone
        plain = tiny_config()
        assert sim.run_id(plain, 0, sim.hparams_of(plain)) == sim.run_id(
            sim.resolve(plain), 0, sim.resolve(plain).hparams)


def test_toy_rules_through_the_command_line(tmp_path, capsys):
    with _registered():
        out = str(tmp_path / "out")
        status = cli.main([
            "train", "--dataset", "synthetic", "--num-workers", "7",
            "--num-byzantine", "2", "--rounds", "2", "--eval-every", "1",
            "--batch-size", "4", "--aggregator", "toy_lowest_mean",
            "--attack", "toy_push", "--optimizer", "toy_scaled_sgd",
            "--set", "toy_gamma=0.5", "--set", "attack_eps=2.0",
            "--outdir", out, "--quiet", "--no-plot"])
        assert status == 0, capsys.readouterr().err
        (name,) = os.listdir(os.path.join(out, "runs"))
        with open(os.path.join(out, "runs", name)) as fh:
            record = json.load(fh)
        assert record["config"]["toy_gamma"] == 0.5
        assert record["config"]["aggregator"] == "toy_lowest_mean"
        # the help lists the registered names and the field
        with pytest.raises(SystemExit):
            cli.main(["train", "--help"])
        text = capsys.readouterr().out
        assert "toy_lowest_mean" in text and "toy_gamma" in text
