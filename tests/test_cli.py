"""The command line, run as a user would (subprocess, synthetic data)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def _byzjax(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "byzjax", *args], env=ENV, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_train_writes_records_and_a_figure(tmp_path):
    out = _byzjax("train", "--dataset", "synthetic", "--num-workers", "7",
                  "--num-byzantine", "2", "--aggregator", "trimmed_mean",
                  "--attack", "alie", "--optimizer", "resam", "--beta", "0.9",
                  "--rounds", "6", "--eval-every", "3", "--batch-size", "8",
                  "--seeds", "0,1", "--outdir", str(tmp_path), "--quiet")
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


def test_bad_configuration_fails_before_running_with_a_clear_message(tmp_path):
    out = _byzjax("train", "--dataset", "synthetic", "--num-workers", "7",
                  "--num-byzantine", "3", "--aggregator", "krum", "--outdir",
                  str(tmp_path))
    assert out.returncode != 0
    assert "2f+3" in out.stderr and "num_workers=7" in out.stderr
    out = _byzjax("train", "--set", "no_such_field=1", "--outdir", str(tmp_path))
    assert out.returncode != 0 and "unknown config field" in out.stderr


def test_missing_real_dataset_is_an_error_not_synthetic_data(tmp_path):
    env_dir = tmp_path / "empty_cache"
    env_dir.mkdir()
    env = dict(ENV, BYZJAX_DATA_DIR=str(env_dir))
    out = subprocess.run([sys.executable, "-m", "byzjax", "train", "--dataset", "mnist",
                          "--rounds", "2", "--eval-every", "1", "--outdir",
                          str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode != 0
    assert "fetch_data" in out.stderr
    assert not glob.glob(str(tmp_path / "runs" / "*.json"))


def test_every_option_says_what_it_is_and_its_default(capsys):
    from byzjax import cli

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
    from byzjax.sim import get_config

    for field in get_config().keys():
        line = next((x for x in help_text.splitlines()
                     if x.startswith(f"  {field} (")), "")
        assert line.partition("): ")[2].strip(), f"config field {field}: no text"


def test_dsgd_without_clipping_has_no_worker_stage_and_trains(tmp_path):
    from byzjax import cli

    code = cli.main(["train", "--dataset", "synthetic", "--optimizer", "dsgd",
                     "--set", "clip_norm=0", "--num-workers", "5",
                     "--num-byzantine", "1", "--rounds", "4", "--eval-every", "2",
                     "--batch-size", "4", "--outdir", str(tmp_path), "--no-plot",
                     "--quiet"])
    assert code == 0
    assert len(glob.glob(str(tmp_path / "runs" / "*.json"))) == 1
