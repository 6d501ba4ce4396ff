"""Long runs survive ``kill -9``: a run killed midway and started again resumes
from its last orbax checkpoint and ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ENV = dict(os.environ, JAX_PLATFORMS="cpu")

CONFIG = textwrap.dedent("""
    from byzjax.sim import get_config as default

    def get_config():
        c = default()
        c.dataset = "synthetic"
        c.model = "mlp"
        c.num_workers = 5
        c.num_byzantine = 1
        c.aggregator = "trimmed_mean"
        c.attack = "alie"
        c.batch_size = 8
        c.num_rounds = 80
        c.eval_every = 2
        c.checkpoint_every = 1
        return c
""")

SWEEP = textwrap.dedent("""
    import ml_collections
    from cfg import get_config

    def get_sweep():
        s = ml_collections.ConfigDict()
        s.name = "resume"
        s.base = get_config()
        s.hparams = {"beta": [0.5, 0.9]}
        s.seeds = [0, 1, 2]
        return s
""")


def _latest_checkpoint(outdir) -> int:
    """The newest verified step (a step resumes once its manifest is written)."""
    steps = [int(os.path.basename(p)[len("manifest-"):-len(".json")]) for p in
             glob.glob(os.path.join(outdir, "checkpoints", "*", "manifest-*.json"))]
    return max(steps, default=0)


def _kill_after_checkpoint(cmd, outdir, step, timeout=300):
    """Starts ``cmd``, SIGKILLs it once checkpoint ``step`` (or later) exists."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if _latest_checkpoint(outdir) >= step:
            break
        time.sleep(0.01)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert alive, "finished before it could be killed: " + err.decode()[-2000:]
    return err.decode()


def _records(outdir):
    out = {}
    for path in glob.glob(os.path.join(outdir, "runs", "*.json")):
        rec = json.load(open(path))
        out[rec["run_id"]] = rec
    return out


def _assert_identical(got, want):
    assert got.keys() == want.keys() and got
    for rid, rec in want.items():
        assert got[rid]["metrics"] == rec["metrics"]  # every chunk, every metric
        assert got[rid]["final_params_sha256"] == rec["final_params_sha256"]
        assert got[rid]["final_accuracy"] == rec["final_accuracy"]


def _run(cmd):
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_train_killed_twice_resumes_bit_identical(tmp_path):
    (tmp_path / "cfg.py").write_text(CONFIG)

    def cmd(outdir):
        return [sys.executable, "-m", "byzjax", "train", "--config",
                str(tmp_path / "cfg.py"), "--seeds", "0,1", "--outdir", outdir,
                "--quiet", "--no-plot"]

    ref, out = str(tmp_path / "ref"), str(tmp_path / "out")
    _run(cmd(ref))
    _kill_after_checkpoint(cmd(out), out, 4)
    assert not _records(out)
    first = _latest_checkpoint(out)
    err = _kill_after_checkpoint(cmd(out), out, first + 12)
    assert f"resuming 2 run(s) at round {2 * first}" in err
    second = _latest_checkpoint(out)
    assert second > first
    done = _run(cmd(out))
    assert f"resuming 2 run(s) at round {2 * second}" in done.stderr
    _assert_identical(_records(out), _records(ref))
    assert not glob.glob(os.path.join(out, "checkpoints", "*"))  # cleaned up
    # A finished run is not run again.
    again = _run(cmd(out))
    assert "resuming" not in again.stderr
    assert again.stdout.count("final acc") == 2


@pytest.mark.slow
def test_sweep_group_of_several_seeds_killed_resumes_bit_identical(tmp_path):
    (tmp_path / "cfg.py").write_text(CONFIG)
    (tmp_path / "sweep.py").write_text(SWEEP)

    def cmd(outdir):
        return [sys.executable, "-m", "byzjax", "sweep", str(tmp_path / "sweep.py"),
                "--outdir", outdir, "--quiet", "--no-report"]

    ref, out = str(tmp_path / "ref"), str(tmp_path / "out")
    _run(cmd(ref))
    assert len(_records(ref)) == 6
    _kill_after_checkpoint(cmd(out), out, 7)
    step = _latest_checkpoint(out)
    done = _run(cmd(out))
    assert f"resuming 6 run(s) at round {2 * step}" in done.stderr
    _assert_identical(_records(out), _records(ref))
    assert not glob.glob(os.path.join(out, "checkpoints", "*"))


@pytest.mark.slow
def test_checkpoint_that_does_not_fit_the_program_is_warned_about_and_dropped(
        tmp_path):
    import numpy as np

    from byzjax import sim
    from byzjax.sim._checkpoint import Checkpoints

    c = sim.get_config()
    c.dataset = "synthetic"
    c.num_workers, c.num_byzantine = 5, 1
    c.batch_size, c.num_rounds, c.eval_every = 4, 4, 2
    c.checkpoint_every = 1
    data = sim.load_sim_data(c)
    ckpt = str(tmp_path / "ckpt")
    stale = Checkpoints(ckpt, num_evals=2)
    stale.save(1, {"params": np.zeros(3, np.float32)}, [{"round": np.int32(2)}])
    stale.manager.wait_until_finished()
    stale.manager.close()
    with pytest.warns(UserWarning, match="does not fit this program"):
        got = sim.run_group(c, seeds=[0], data=data, progress=False,
                            checkpoint_dir=ckpt)
    ref = sim.run_group(c, seeds=[0], data=data, progress=False)
    assert got[0]["metrics"] == ref[0]["metrics"]
    assert got[0]["final_params_sha256"] == ref[0]["final_params_sha256"]
    assert not os.path.exists(ckpt)
