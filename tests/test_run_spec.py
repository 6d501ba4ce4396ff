"""The resolved run spec, the optimiser registry and the simulator's data path."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from byzjax import data, optim, parallel, report, sim
from byzjax.cli import _FLAGS
from byzjax.sim import _fields
from byzjax.sim._records import run_id, static_key


def test_resolve_decodes_sentinels_and_canonical_names():
    c = sim.get_config()
    c.aggregator, c.preaggregator, c.attack = "cwtm", "", "alie"
    c.num_attackers, c.dampening, c.attack_eps = -1, -1.0, -1.0
    c.clip_norm, c.eval_size, c.mra_safeguard = 0.0, 0, ""
    spec = sim.resolve(c)
    assert (spec.aggregator, spec.attack) == ("trimmed_mean", "a_little_is_enough")
    assert spec.num_attackers == c.num_byzantine
    for field in ("preaggregator", "dampening", "attack_eps", "clip_norm",
                  "eval_size", "mra_safeguard", "num_devices"):
        assert getattr(spec, field) is None, field
    assert spec.hparams == sim.hparams_of(c)  # traced values stay as given
    assert sim.resolve(spec) is spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_workers = 3
    with pytest.raises(TypeError):
        spec.aggregator_kwargs["x"] = 1


def test_resolve_keeps_values_that_are_not_sentinels():
    c = sim.get_config()
    c.preaggregator, c.dampening, c.num_attackers = "nnm", 0.0, 2
    c.clip_norm, c.attack_eps, c.mra_safeguard = 2.5, 0.0, "clamp"
    with pytest.warns(sim.IgnoredFieldWarning, match="mra_safeguard"):
        spec = sim.resolve(c)  # resam does not read mra_safeguard
    assert (spec.preaggregator, spec.dampening, spec.num_attackers) == ("nnm", 0.0, 2)
    assert (spec.clip_norm, spec.attack_eps, spec.mra_safeguard) == (2.5, 0.0, None)
    c.optimizer, c.dampening = "mra", -1.0
    assert sim.resolve(c).mra_safeguard == "clamp"


def test_resolve_validates_once_with_one_line():
    c = sim.get_config()
    c.optimizer = "resma"
    with pytest.raises(sim.ConfigError, match="did you mean 'resam'"):
        sim.resolve(c)


def test_every_config_field_is_a_spec_attribute():
    spec = sim.resolve(sim.get_config())
    declared = {f.name for f in dataclasses.fields(sim.RunSpec)} - {
        "config", "ignored", "extra"}
    # One typed attribute per field of the field table, no more, no fewer,
    # and no fallback to the raw config.
    assert declared == set(sim.FIELDS) == set(sim.get_config().keys())
    with pytest.raises(AttributeError):
        spec.not_a_field  # noqa: B018
    assert not hasattr(spec, "get")


def test_run_ids_are_the_configs_not_the_decoding():
    c = sim.get_config()
    spec = sim.resolve(c)
    assert run_id(spec, 0, spec.hparams) == run_id(c, 0, sim.hparams_of(c))
    assert static_key(spec) == static_key(c)
    # A field added later is left out of ids at its default only.
    assert "similarity_gamma" in _fields.ID_DEFAULTS
    without = {k: v for k, v in c.to_dict().items() if k != "similarity_gamma"}
    assert run_id(without, 0, spec.hparams) == run_id(c, 0, spec.hparams)
    c.similarity_gamma = 0.25
    assert run_id(c, 0, spec.hparams) != run_id(without, 0, spec.hparams)


def test_one_optimizer_registry():
    names = optim.optimizer_names()
    assert names == report.OPT_ORDER
    for name in names:
        assert name in _FLAGS["optimizer"][2]
    with pytest.raises(ValueError, match="did you mean 'dra'"):
        optim.stages("dr", num_workers=3, num_byzantine=0)


@pytest.mark.parametrize("name", ["dsgd", "resam", "dra", "mra"])
def test_ready_chains_are_the_stages_chained(name):
    n, f = 5, 1
    kw = dict(num_workers=n, num_byzantine=f, aggregator="trimmed_mean",
              attack="sign_flip", clip_norm=3.0)
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}
    chain = getattr(optim, name)(**kw)
    staged = optax.chain(*optim.stages(name, **kw))
    s1, s2 = chain.init(params), staged.init(params)
    rng = np.random.default_rng(0)
    for _ in range(3):
        g = {"w": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
             "b": jnp.asarray(rng.normal(size=(n,)), jnp.float32)}
        u1, s1 = chain.update(g, s1, params)
        u2, s2 = staged.update(g, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_array_equal(a, b)


def test_stages_server_part_applies_the_learning_rate():
    s = optim.stages("server_momentum", num_workers=3, num_byzantine=0, beta=0.5,
                     learning_rate=0.1)
    tx = optax.chain(*s)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    g = {"w": jnp.array([[1.0], [2.0], [3.0]])}
    u, state = tx.update(g, state, params)
    u, state = tx.update(g, state, params)
    # server momentum m <- 0.5 m + 2 (mean 2): 2, then 3; step -lr * m
    np.testing.assert_allclose(np.asarray(u["w"]), [-0.3], rtol=1e-6)


def test_parallel_uses_the_worker_stage():
    init, _ = parallel.robust_data_parallel_step(
        lambda p, b: jnp.mean((b @ p) ** 2), optax.sgd(0.1),
        mesh=parallel.make_mesh(1), num_byzantine=0, aggregator="mean",
        momentum=0.9, clip_norm=1.0)
    state = init(jnp.ones(3))
    want = optim.worker_stage("resam", num_workers=1, beta=0.9,
                              clip_norm=1.0).init(jnp.ones(3))
    assert jax.tree.structure(state.worker) == jax.tree.structure(want)


def test_gamma_similarity_split_reaches_the_simulator():
    c = sim.get_config()
    c.dataset, c.num_workers, c.num_byzantine = "synthetic", 5, 1
    c.split, c.similarity_gamma, c.split_seed = "gamma_similarity", 0.3, 4
    train, test = data.load_train_test("synthetic")
    got = sim.load_sim_data(c, dataset=(train, test))
    want = data.split_gamma_similarity(np.asarray(train.labels), num_workers=5,
                                       gamma=0.3, seed=4)
    np.testing.assert_array_equal(np.asarray(got.worker_indices), want.indices)
    np.testing.assert_array_equal(np.asarray(got.worker_counts), want.counts)
    c.similarity_gamma = 1.5
    with pytest.raises(sim.ConfigError, match="similarity_gamma must be in"):
        sim.resolve(c)


def test_config_files_import_siblings_without_changing_sys_path(tmp_path):
    import sys

    from byzjax.sim import _files

    (tmp_path / "cfg.py").write_text(
        "from byzjax.sim import get_config as default\n"
        "def get_config():\n    c = default()\n    c.num_workers = 5\n"
        "    c.num_byzantine = 1\n    return c\n")
    (tmp_path / "sweep.py").write_text(
        "import ml_collections\nfrom cfg import get_config\n"
        "def get_sweep():\n    s = ml_collections.ConfigDict()\n"
        "    s.name = 'x'\n    s.base = get_config()\n    return s\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "other.py").write_text(
        "from byzjax.sim import import_file\n"
        "get_config = import_file('../cfg.py', relative_to=__file__).get_config\n")
    before = list(sys.path)
    assert _files.load_sweep(str(tmp_path / "sweep.py")).base.num_workers == 5
    other = sim.import_file(str(sub / "other.py"))
    assert other.get_config().num_workers == 5
    assert sim.import_file(str(sub / "other.py")) is other  # imported once
    assert sys.path == before


def test_sweep_files_in_two_folders_each_get_their_own_sibling(tmp_path):
    # Both import a sibling `cfg`; the second must not get the first one's.
    from byzjax.sim import _files

    for folder, n in (("a", 5), ("b", 7)):
        d = tmp_path / folder
        d.mkdir()
        (d / "cfg.py").write_text(
            "from byzjax.sim import get_config as default\n"
            f"def get_config():\n    c = default()\n    c.num_workers = {n}\n"
            "    c.num_byzantine = 1\n    return c\n")
        (d / "sweep.py").write_text(
            "import ml_collections\nfrom cfg import get_config\n"
            "def get_sweep():\n    s = ml_collections.ConfigDict()\n"
            "    s.name = 'x'\n    s.base = get_config()\n    return s\n")
    assert _files.load_sweep(str(tmp_path / "a" / "sweep.py")).base.num_workers == 5
    assert _files.load_sweep(str(tmp_path / "b" / "sweep.py")).base.num_workers == 7
    assert _files.load_sweep(str(tmp_path / "a" / "sweep.py")).base.num_workers == 5
