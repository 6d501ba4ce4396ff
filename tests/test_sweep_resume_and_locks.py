"""Sweeps run by real processes: a sweep killed with ``kill -9`` (twice) resumes
from its orbax checkpoint bit-identical to an uninterrupted run, and processes
sharing one results folder (whole sweep and ``--shard`` parts at once) compute
every run exactly once. One sweep (2 programs of 2 points x 3 seeds) serves
both scenarios; its uninterrupted reference is computed once, in this process."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from byzjax import cli, distributed, report
from byzjax.sim import _files, _grid, _schedule
from byzjax.sim._store import StaleLockWarning

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = textwrap.dedent("""
    from byzjax.sim import get_config as default

    def get_config():
        c = default()
        c.dataset = "synthetic"
        c.model = "mlp"
        c.num_workers = 5
        c.num_byzantine = 1
        c.attack = "alie"
        c.batch_size = 8
        c.num_rounds = 24
        c.eval_every = 2
        c.checkpoint_every = 1
        return c
""")

# Imports its base config from a sibling file, as the shipped sweeps do.
SWEEP = textwrap.dedent("""
    import ml_collections
    from cfg import get_config

    def get_sweep():
        s = ml_collections.ConfigDict()
        s.name = "resume"
        s.base = get_config()
        s.grid = {"aggregator": ["trimmed_mean", "coordinate_median"]}
        s.hparams = {"beta": [0.5, 0.9]}
        s.seeds = [0, 1, 2]
        return s
""")
RUNS_PER_GROUP = 6


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    # The children compile as this process does (tests/conftest.py's flags),
    # on one device, so their runs are bit-identical to the in-process ones.
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


@pytest.fixture(scope="module")
def sweep_files(tmp_path_factory):
    """The sweep file, its expected run ids and its uninterrupted records."""
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "cfg.py").write_text(CONFIG)
    (folder / "sweep.py").write_text(SWEEP)
    path = str(folder / "sweep.py")
    sweep = _files.load_sweep(path)
    expected = {rid for g in _grid.validate_sweep(sweep) for _, _, rid in g.run_ids()}
    assert len(expected) == 2 * RUNS_PER_GROUP
    # The uninterrupted reference never checkpoints (checkpoint_every is out of
    # run ids): the resumed runs must equal a run that never wrote a checkpoint.
    sweep.base.checkpoint_every = 0
    _schedule.run_sweep(sweep, str(folder / "ref"), progress=False,
                        log=distributed.quiet)
    ref = _records(folder / "ref")
    assert set(ref) == expected
    return path, expected, ref


def _cmd(path, outdir, *extra):
    return [sys.executable, "-m", "byzjax", "sweep", path, "--outdir", str(outdir),
            "--quiet", "--no-report", *extra]


def _records(outdir):
    out = {}
    for p in glob.glob(os.path.join(outdir, "runs", "*.json")):
        with open(p) as fh:
            rec = json.load(fh)
        assert rec["run_id"] == os.path.basename(p)[:-5]
        out[rec["run_id"]] = rec
    return out


def _latest_checkpoint(outdir, group="*") -> int:
    """The newest verified step (a step resumes once its manifest is written)."""
    steps = [int(os.path.basename(p)[len("manifest-"):-len(".json")]) for p in
             glob.glob(os.path.join(outdir, "checkpoints", group, "manifest-*.json"))]
    return max(steps, default=0)


def _kill_when(cmd, ready, timeout=300):
    """Starts ``cmd``; SIGKILLs its process group once ``ready()`` holds."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    assert alive, "ended before it could be killed: " + (out + err).decode()[-3000:]
    return out.decode() + err.decode()


def _assert_identical(got, want):
    assert got.keys() == want.keys() and got
    for rid, rec in want.items():
        assert got[rid]["metrics"] == rec["metrics"]  # every chunk, every metric
        assert got[rid]["final_params_sha256"] == rec["final_params_sha256"]
        assert got[rid]["final_accuracy"] == rec["final_accuracy"]


def test_sweep_killed_twice_resumes_bit_identical(sweep_files, tmp_path, capsys):
    path, expected, ref = sweep_files
    out = tmp_path / "out"
    cmd = _cmd(path, out)
    second_program = _grid.validate_sweep(_files.load_sweep(path))[1].group_id()
    # Killed once the first program's records are written and the second has
    # a checkpoint: nothing of the second program is written yet.
    _kill_when(cmd, lambda: _latest_checkpoint(out, second_program) >= 2)
    partial = _records(out)
    assert len(partial) == RUNS_PER_GROUP
    first = _latest_checkpoint(out)
    # Killed again, later: a resumed run checkpoints as it goes.
    log = _kill_when(cmd, lambda: _latest_checkpoint(out, second_program)
                     >= first + 4)
    assert f"{RUNS_PER_GROUP} done, {RUNS_PER_GROUP} to run" in log
    assert f"resuming {RUNS_PER_GROUP} run(s) at round {2 * first}" in log
    second = _latest_checkpoint(out)
    assert second > first
    # The rest in this process: it resumes from the checkpoint the killed
    # process wrote (a third process would only add its start-up), taking over
    # the lock the killed process left.
    capsys.readouterr()
    with pytest.warns(StaleLockWarning, match="is gone"):
        assert cli.main(cmd[3:]) == 0
    resumed = capsys.readouterr().err
    assert f"resuming {RUNS_PER_GROUP} run(s) at round {2 * second}" in resumed
    got = _records(out)
    _assert_identical(got, ref)
    for rid, rec in partial.items():  # finished before the kills: not run again
        assert got[rid]["checksum"] == rec["checksum"]
    assert not glob.glob(os.path.join(out, "checkpoints", "*"))  # cleaned up
    # A finished sweep has nothing left to run, and its report is drawn.
    assert cli.main(["sweep", path, "--outdir", str(out), "--quiet",
                     "--no-report"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"] == 0
    paths = report.write_report(str(out))
    table = open(paths["best"]).read()
    # two beta points per cell: never averaged into one best aggregator
    assert "alie" in table and "differ in beta" in table, table
    assert os.path.getsize(paths["curves"]) > 1000
    assert len(report.load_runs(str(out))) == len(expected)


def _assert_same_records(a, b, tol):
    volatile = {"group_wall_time_s", "group_first_chunk_s", "checksum",
                "final_params_sha256"}
    assert set(a) == set(b)
    for rid in a:
        ra, rb = a[rid], b[rid]
        config = dict(rb["config"], checkpoint_every=ra["config"]["checkpoint_every"])
        assert ra["config"] == config  # checkpoint_every: result neutral
        for k in set(ra) - volatile - {"metrics", "config"}:
            if isinstance(ra[k], float):
                np.testing.assert_allclose(ra[k], rb[k], rtol=tol, atol=tol)
            else:
                assert ra[k] == rb[k], k
        assert set(ra["metrics"]) == set(rb["metrics"])
        for k in ra["metrics"]:
            np.testing.assert_allclose(np.asarray(ra["metrics"][k], float),
                                       np.asarray(rb["metrics"][k], float),
                                       rtol=tol, atol=tol, err_msg=k)


def test_concurrent_sweeps_and_shards_compute_every_run_once(sweep_files, tmp_path,
                                                              capsys):
    path, expected, ref = sweep_files
    sweep = _files.load_sweep(path)
    groups = _grid.validate_sweep(sweep)
    # The two shards are the two programs, disjoint and complete.
    parts = [distributed.sweep_part(groups, f"{i}/2") for i in range(2)]
    assert parts[0] | parts[1] == expected and not parts[0] & parts[1]
    assert parts[0] == {rid for _, _, rid in groups[0].run_ids()}
    # Shard 0/2 and the whole sweep at once, into one folder (no checkpoints,
    # a result-neutral field: same run ids). They contend for the locks of
    # shard 0's program; the whole sweep also takes the other one.
    out = tmp_path / "shared"
    nockpt = ["--set", "base.checkpoint_every=0"]
    procs = [subprocess.Popen(_cmd(path, out, *nockpt, *extra), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for extra in (["--shard", "0/2"], [])]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=600))
        finally:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    ran = [json.loads(o.strip().splitlines()[-1])["runs"] for o, _ in outs]
    print("runs computed by shard 0/2 and by the whole sweep:", ran)
    assert sum(ran) == len(expected)  # every run computed once, by one process
    assert ran[0] in (0, RUNS_PER_GROUP)  # the shard: its program only
    assert ran[1] >= RUNS_PER_GROUP  # the whole sweep: at least the other one
    _assert_same_records(ref, _records(out), tol=1e-6)
    assert not glob.glob(os.path.join(out, "locks", "*.lock"))  # released
    # A finished shard has nothing left to do.
    capsys.readouterr()
    assert cli.main(["sweep", path, "--outdir", str(out), "--quiet", "--no-report",
                     "--shard", "1/2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"] == 0


def test_checkpoint_that_does_not_fit_the_program_is_warned_about_and_dropped(
        tmp_path):
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
