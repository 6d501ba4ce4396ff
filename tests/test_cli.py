"""The command line: one run as a user would start it (a subprocess of the console
module), then in-process through ``byzjax.cli.main`` (errors, help, reruns)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import cli, optim, sim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu",
           PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
TRAIN = ["train", "--dataset", "synthetic", "--num-workers", "7", "--num-byzantine",
         "2", "--aggregator", "trimmed_mean", "--attack", "alie", "--optimizer",
         "resam", "--beta", "0.9", "--rounds", "6", "--eval-every", "3",
         "--batch-size", "8", "--seeds", "0,1", "--quiet"]


@pytest.mark.subprocess
def test_train_writes_records_and_a_figure_and_does_not_rerun(tmp_path, capsys,
                                                              monkeypatch):
    out = subprocess.run([sys.executable, "-m", "byzjax", *TRAIN, "--outdir",
                          str(tmp_path)], env=ENV, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("final acc") == 2
    files = glob.glob(str(tmp_path / "runs" / "*.json"))
    assert len(files) == 2
    rec = json.load(open(files[0]))
    assert rec["config"]["aggregator"] == "trimmed_mean"
    assert rec["config"]["beta"] == 0.9
    assert rec["metrics"]["round"] == [3, 6]
    assert {"test_accuracy", "train_loss", "agg_dist", "honest_spread", "resilience",
            "cosine"} <= set(rec["metrics"])
    assert os.path.getsize(tmp_path / "curves.png") > 1000
    # The same command again reads the finished runs and computes nothing.
    from byzjax.sim import _run

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run was computed again")

    monkeypatch.setattr(_run, "make_program", forbidden)
    assert cli.main([*TRAIN, "--outdir", str(tmp_path), "--no-plot"]) == 0
    printed = capsys.readouterr()
    assert printed.out.count("final acc") == 2 and "resuming" not in printed.err


def _fails(capsys, argv, env_dir=None) -> str:
    """Runs the CLI in-process; returns stderr of its exit status 2."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def test_bad_configuration_fails_before_running_with_a_clear_message(tmp_path,
                                                                     capsys):
    err = _fails(capsys, ["train", "--dataset", "synthetic", "--num-workers", "7",
                          "--num-byzantine", "3", "--aggregator", "krum", "--outdir",
                          str(tmp_path)])
    assert "2f+3" in err and "num_workers=7" in err
    err = _fails(capsys, ["train", "--set", "no_such_field=1", "--outdir",
                          str(tmp_path)])
    assert "unknown config field" in err
    assert not glob.glob(str(tmp_path / "runs" / "*.json"))


def test_missing_real_dataset_is_an_error_not_synthetic_data(tmp_path, capsys,
                                                             monkeypatch):
    env_dir = tmp_path / "empty_cache"
    env_dir.mkdir()
    monkeypatch.setenv("BYZJAX_DATA_DIR", str(env_dir))
    monkeypatch.delenv("BYZJAX_DEBUG", raising=False)
    err = _fails(capsys, ["train", "--dataset", "mnist", "--rounds", "2",
                          "--eval-every", "1", "--outdir", str(tmp_path)])
    assert "fetch_data" in err and len(err.strip().splitlines()) == 1
    assert not glob.glob(str(tmp_path / "runs" / "*.json"))


def test_every_option_says_what_it_is_and_its_default():
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            flag = action.nargs == 0
            positional = not action.option_strings
            assert flag or positional or action.required or "default" in action.help, (
                f"{name} {action.option_strings}: no default in its help")
            if name in ("train", "sweep", "report") and not positional:
                assert "default" in action.help, (
                    f"{name} {action.option_strings}: no default in its help")
    help_text = sub.choices["train"].format_help()
    assert "num_rounds (1000)" in help_text and "checkpoint_every (10)" in help_text
    # Every config field is listed with its default and what it means.
    for field in sim.get_config().keys():
        line = next((x for x in help_text.splitlines()
                     if x.startswith(f"  {field} (")), "")
        assert line.partition("): ")[2].strip(), f"config field {field}: no text"


def test_dsgd_without_clipping_has_no_worker_stage_and_trains(tmp_path):
    # clip_norm=0 means "no clipping": the spec holds None, and DSGD's worker
    # stage then passes the gradients through untouched, with no state.
    c = sim.get_config()
    c.optimizer, c.clip_norm = "dsgd", 0.0
    assert sim.resolve(c).clip_norm is None
    grads = {"w": jnp.asarray([[300.0, -400.0], [1.0, 2.0], [0.0, 0.0]])}
    params = {"w": jnp.zeros(2)}
    tx = optim.worker_stage("dsgd", num_workers=3, clip_norm=None)
    state = tx.init(params)
    out, _ = tx.update(grads, state, params)
    np.testing.assert_array_equal(out["w"], grads["w"])
    assert not jax.tree.leaves(state)
    clip = optim.worker_stage("dsgd", num_workers=3, clip_norm=1.0)
    clipped, _ = clip.update(grads, clip.init(params), params)  # (it can fail)
    np.testing.assert_allclose(np.linalg.norm(clipped["w"][0]), 1.0, rtol=1e-6)
    code = cli.main(["train", "--dataset", "synthetic", "--optimizer", "dsgd",
                     "--set", "clip_norm=0", "--num-workers", "5",
                     "--num-byzantine", "1", "--rounds", "4", "--eval-every", "2",
                     "--batch-size", "4", "--outdir", str(tmp_path), "--no-plot",
                     "--quiet"])
    assert code == 0
    (path,) = glob.glob(str(tmp_path / "runs" / "*.json"))
    rec = json.load(open(path))
    assert (rec["config"]["optimizer"], rec["config"]["clip_norm"]) == ("dsgd", 0.0)
    assert np.all(np.isfinite(rec["metrics"]["train_loss"]))
