"""Sweep files: expansion, overrides, shipped sweeps; run_group's records and the
best table. Killed and concurrent sweeps: test_sweep_resume_and_locks.py."""

from __future__ import annotations

import glob
import os
import textwrap

import pytest

from byzjax import report, sim
from byzjax.sim import _files, _grid

SWEEP = textwrap.dedent(
    """
    import ml_collections
    from byzjax.sim import get_config

    def get_sweep():
        base = get_config()
        base.dataset = "synthetic"
        base.model = "mlp"
        base.num_workers = 7
        base.num_byzantine = 2
        base.batch_size = 8
        base.num_rounds = 20
        base.eval_every = 10
        base.learning_rate = 0.1
        s = ml_collections.ConfigDict()
        s.name = "tiny"
        s.base = base
        s.grid = {"aggregator": ["mean", "trimmed_mean", "coordinate_median"],
                  "attack": ["none", "alie"], "optimizer": ["dsgd", "resam"]}
        s.hparams = {"beta": [0.5, 0.9]}
        s.seeds = [0, 1]
        s.overrides = [({"attack": "none"}, {"num_attackers": 0})]
        s.exclude = [{"aggregator": "coordinate_median", "optimizer": "dsgd"}]
        return s
    """
)


def _write_sweep(tmp_path):
    path = tmp_path / "tiny_sweep.py"
    path.write_text(SWEEP)
    return str(path)


def test_expand_sweep_groups_overrides_and_exclude(tmp_path):
    sweep = _files.load_sweep(_write_sweep(tmp_path))
    groups = _grid.expand_sweep(sweep)
    assert len(groups) == 3 * 2 * 2 - 2  # 2 excluded
    for g in groups:
        assert len(g.points) == 2 and g.seeds == [0, 1]
        assert g.config.num_attackers == (0 if g.labels["attack"] == "none" else -1)
        assert not (g.labels["aggregator"] == "coordinate_median"
                    and g.labels["optimizer"] == "dsgd")
    ids = [rid for g in groups for _, _, rid in g.run_ids()]
    assert len(ids) == len(set(ids)) == 10 * 4


def test_float_axis_in_grid_is_rejected(tmp_path):
    sweep = _files.load_sweep(_write_sweep(tmp_path))
    sweep.grid = {"beta": [0.1, 0.2]}
    with pytest.raises(ValueError, match="vmapped"):
        _grid.expand_sweep(sweep)


def _expected_ids(path):
    # (validate_sweep runs dsgd once per seed: it does not read the beta axis)
    groups = _grid.validate_sweep(_files.load_sweep(path))
    return {rid for g in groups for _, _, rid in g.run_ids()}


def test_validate_sweep_without_tracing_gives_the_same_groups(tmp_path,
                                                              monkeypatch):
    path = _write_sweep(tmp_path)
    traced = _grid.validate_sweep(_files.load_sweep(path))

    def no_trace(spec):
        raise AssertionError("traced")

    monkeypatch.setattr(_grid, "check_pipeline", no_trace)
    untraced = _grid.validate_sweep(_files.load_sweep(path), trace=False)
    assert ([g.run_ids() for g in untraced] == [g.run_ids() for g in traced]
            and len(traced) > 1)
    with pytest.raises(AssertionError, match="traced"):
        _grid.validate_sweep(_files.load_sweep(path))


def _present(outdir):
    return sorted(os.path.basename(p)[:-5]
                  for p in glob.glob(os.path.join(outdir, "runs", "*.json")))


def test_set_one_grid_axis_keeps_the_others(tmp_path):
    sweep = _files.load_sweep(_write_sweep(tmp_path))
    _grid.set_sweep_field(sweep, "grid.attack", ["alie"])
    _grid.set_sweep_field(sweep, "hparams.beta", [0.99])
    groups = _grid.expand_sweep(sweep)
    assert len(groups) == 3 * 2 - 1  # aggregators x optimizers, one excluded
    assert {g.labels["attack"] for g in groups} == {"alie"}
    assert {g.labels["optimizer"] for g in groups} == {"dsgd", "resam"}
    assert all([p["beta"] for p in g.points] == [0.99] for g in groups)


def test_best_table_picks_the_best_aggregator():
    def rec(opt, att, agg, acc):
        return {"config": {"optimizer": opt, "attack": att, "aggregator": agg},
                "final_accuracy": acc, "max_accuracy": acc, "diverged": False,
                "metrics": {"round": [1], "test_accuracy": [acc]}}

    runs = [rec("resam", "alie", "mean", 0.2),
            rec("resam", "alie", "trimmed_mean", 0.7),
            rec("resam", "alie", "trimmed_mean", 0.9),
            rec("dsgd", "alie", "mean", 0.5)]
    table = report.best_table(runs)
    assert "0.8000 CWTM" in table
    assert "0.5000 AVG" in table


def test_run_group_writes_one_record_per_run(tmp_path):
    config = sim.get_config()
    config.dataset = "synthetic"
    config.num_workers, config.num_byzantine = 5, 1
    config.batch_size, config.num_rounds, config.eval_every = 4, 4, 2
    config.aggregator = "trimmed_mean"
    recs = sim.run_group(config, seeds=[0, 1], hparam_points=[{"beta": 0.5},
                                                               {"beta": 0.9}],
                         outdir=str(tmp_path), progress=False)
    assert len(recs) == 4
    assert len(glob.glob(str(tmp_path / "*.json"))) == 4
    assert {r["hparams"]["beta"] for r in recs} == {0.5, 0.9}
    for r in recs:
        assert r["metrics"]["round"] == [2, 4]
        assert r["config"]["aggregator"] == "trimmed_mean"
    with pytest.raises(ValueError, match="float hyper-parameters"):
        sim.run_group(config, seeds=[0], hparam_points=[{"num_workers": 3}],
                      progress=False)


@pytest.mark.parametrize("name", ["main_job", "table_4_1", "table_4_2", "table_4_3",
                                  "momentum_fmnist", "table_4_1_reduced",
                                  "attacks_accuracy"])
def test_shipped_sweeps_are_valid(name):
    root = os.path.join(os.path.dirname(__file__), "..", "experiments")
    groups = _grid.expand_sweep(_files.load_sweep(os.path.join(root, name + ".py")))
    assert groups
    for g in groups:
        sim.validate(g.config)
    ids = [rid for g in groups for _, _, rid in g.run_ids()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", ["attacks_accuracy", "catalogue_mnist"])
def test_committed_attack_records_are_runs_of_the_sweep(name):
    # docs/analysis/records/<name>/runs/ resumes the sweep only if every
    # record's run id is still one of the sweep's (the file name).
    root = os.path.join(os.path.dirname(__file__), "..")
    groups = _grid.expand_sweep(_files.load_sweep(
        os.path.join(root, "experiments", f"{name}.py")))
    ids = {rid for g in groups for _, _, rid in g.run_ids()}
    folder = os.path.join(root, "docs", "analysis", "records", name, "runs")
    names = [f[:-len(".json")] for f in os.listdir(folder) if f.endswith(".json")]
    assert names and set(names) <= ids


_ISOLATION_CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import jax.numpy as jnp
    from byzjax import sim
    from byzjax.attacks import ATTACKS

    root, name = sys.argv[1], sys.argv[2]
    groups = sim.validate_sweep(sim.load_sweep(
        os.path.join(root, "experiments", name + ".py")), trace=False)
    ids = {rid for g in groups for _, _, rid in g.run_ids()}
    folder = os.path.join(root, "docs", "reproduction", "records", name, "runs")
    names = {f[:-5] for f in os.listdir(folder) if f.endswith(".json")}
    assert names and names <= ids, sorted(names - ids)[:3]
    if name == "isolate_little_std_axis":
        # The two readings of the std, against NumPy on tied integer rows.
        h = np.array([[1., 2.], [1., 4.], [3., 2.]])
        b = np.array([[0., 2.], [0., 2.], [6., 8.]])
        got = ATTACKS.get("little_own_scalar")(
            jnp.asarray(h), num_byzantine=3, byzantine_own=jnp.asarray(b), eps=2.0)
        np.testing.assert_allclose(got, b - 2.0 * b.ravel().std(ddof=1), rtol=1e-6)
        got = ATTACKS.get("little_own_all")(
            jnp.asarray(h), num_byzantine=3, byzantine_own=jnp.asarray(b), eps=2.0)
        ref = np.array([[b[i, j] - 2.0 * np.std(np.r_[h[:, j], b[:, j]], ddof=1)
                         for j in range(2)] for i in range(3)])
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    print("ok", len(names))
    """)


@pytest.mark.subprocess
@pytest.mark.parametrize("name", ["isolate_cwtm_as_printed",
                                  "isolate_little_std_axis"])
def test_isolation_sweeps_resume_their_records(name):
    # These sweeps register rules of their own on import (as a user does), so
    # they are loaded in a child process: this one's registries stay as shipped.
    import subprocess
    import sys
    root = os.path.join(os.path.dirname(__file__), "..")
    out = subprocess.run([sys.executable, "-c", _ISOLATION_CHILD, root, name],
                         capture_output=True, text=True, env={
                             **os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok ")
