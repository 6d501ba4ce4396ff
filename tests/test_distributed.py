"""byzjax.distributed: ``--shard i/k`` parts, multi-process settings, the local
launcher, and several processes in one JAX run (sharded simulation, robust data
parallel training across processes). Independent jobs sharing a results folder
are tested in test_sweep_resume_and_locks.py.

The multi-process test starts 2 real processes x 4 CPU devices on 127.0.0.1
(gloo collectives) with :func:`byzjax.distributed.launch`; each runs
:func:`worker_main` below and writes what it saw to a JSON file.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import textwrap

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

from byzjax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = [0, 1, 2]  # 3 runs over 8 devices: padded to 8
# Fields that say where and how fast a run ran, and the record's own checksum
# and final-parameters hash (the runs agree to 1e-6 here, not bit for bit).
VOLATILE = {"group_wall_time_s", "group_first_chunk_s", "device_count",
            "process_count", "devices_used", "device_kind", "backend", "shard",
            "checksum", "final_params_sha256"}


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    # The children compile as this process does (tests/conftest.py's XLA flags,
    # the launcher sets the device count): at XLA's default optimisation level
    # their compilations took twice as long.
    env["XLA_FLAGS"] = " ".join(
        f for f in os.environ.get("XLA_FLAGS", "").split()
        if "xla_force_host_platform_device_count" not in f)
    env.update(extra)
    return env


# --------------------------------------------------------------- fast unit tests
@given(st.integers(0, 60), st.integers(1, 9))
def test_shard_parts_cover_the_list_once_contiguously(n, k):
    items = list(range(n))
    parts = [distributed.shard_part(items, i, k) for i in range(k)]
    assert sum(parts, []) == items  # disjoint, in order, complete
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shard_is_one_line_error(text):
    with pytest.raises(ValueError, match="--shard"):
        distributed.parse_shard(text)


def test_incomplete_multiprocess_settings_fail_with_what_is_missing(monkeypatch):
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match="--process-id / JAX_PROCESS_ID"):
        distributed.initialize("127.0.0.1:1", 2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "5")
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
        distributed.initialize("127.0.0.1:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    assert distributed.initialize() is False  # one process: nothing to join


def test_cluster_detection_needs_several_processes(monkeypatch):
    for k in ("BYZJAX_DISTRIBUTED", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
              "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
              "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.cluster_detected() is None
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[1-2]")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one array task: single-process
    assert distributed.cluster_detected() is None
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.cluster_detected() == "slurm"
    monkeypatch.delenv("SLURM_STEP_NODELIST")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t0,t1")
    assert distributed.cluster_detected() == "tpu"
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
    monkeypatch.setenv("BYZJAX_DISTRIBUTED", "auto")
    assert distributed.cluster_detected() == "auto"


@pytest.mark.subprocess
def test_launch_sets_the_environment_and_reports_the_first_failure(tmp_path):
    script = tmp_path / "p.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys
        keys = ["JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                "XLA_FLAGS", "JAX_PLATFORMS"]
        i = os.environ["JAX_PROCESS_ID"]
        json.dump({k: os.environ.get(k) for k in keys},
                  open(sys.argv[1] + "/env" + i + ".json", "w"))
        sys.exit(3 if i == "2" else 0)
    """))
    code = distributed.launch([sys.executable, str(script), str(tmp_path)],
                              num_processes=3, local_devices=4, timeout=60,
                              env=_env())
    assert code == 3
    envs = [json.load(open(tmp_path / f"env{i}.json")) for i in range(3)]
    assert [e["JAX_PROCESS_ID"] for e in envs] == ["0", "1", "2"]
    assert {e["JAX_NUM_PROCESSES"] for e in envs} == {"3"}
    (address,) = {e["JAX_COORDINATOR_ADDRESS"] for e in envs}
    assert address.startswith("127.0.0.1:")
    assert all("device_count=4" in e["XLA_FLAGS"] for e in envs)
    assert {e["JAX_PLATFORMS"] for e in envs} == {"cpu"}


@pytest.mark.subprocess
def test_launch_stops_every_process_on_timeout(tmp_path):
    code = distributed.launch(
        [sys.executable, "-c", "import time; time.sleep(60)"], num_processes=2,
        timeout=1.0, env=_env())
    assert code == 124


def test_cli_rejects_bad_shard_and_incomplete_settings_in_one_line(tmp_path,
                                                                 capsys):
    from byzjax import cli

    sweep = tmp_path / "s.py"
    sweep.write_text(SWEEP)
    for argv, line in (
            (["sweep", str(sweep), "--shard", "2/2", "--outdir", str(tmp_path / "o"),
              "--no-report"],
             "byzjax sweep: error: --shard i/k needs k >= 1 and 0 <= i < k; got '2/2'"),
            (["train", "--dataset", "synthetic", "--num-processes", "2", "--outdir",
              str(tmp_path / "t")],
             "byzjax train: error: distributed: multi-process run needs "
             "--coordinator-address / JAX_COORDINATOR_ADDRESS, --process-id / "
             "JAX_PROCESS_ID")):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        assert code == 2
        assert capsys.readouterr().err.strip().splitlines() == [line]
    assert not (tmp_path / "o" / "runs").exists()


# ------------------------------------------------------------ a small sweep
SWEEP = textwrap.dedent(
    """
    import ml_collections
    from byzjax.sim import get_config

    def get_sweep():
        base = get_config()
        base.dataset = "synthetic"
        base.num_workers = 7
        base.num_byzantine = 2
        base.batch_size = 8
        base.num_rounds = 4
        base.eval_every = 2
        base.learning_rate = 0.1
        s = ml_collections.ConfigDict()
        s.name = "shards"
        s.base = base
        s.grid = {"aggregator": ["trimmed_mean", "coordinate_median"],
                  "attack": ["alie"]}
        s.hparams = {"beta": [0.5, 0.9]}
        s.seeds = [0, 1, 2]
        return s
    """
)


def _records(folder):
    out = {}
    for path in glob.glob(os.path.join(folder, "runs", "*.json")):
        rec = json.load(open(path))
        out[os.path.basename(path)[:-5]] = rec
    return out


def _assert_same_records(a, b, tol):
    assert set(a) == set(b)
    for rid in a:
        ra, rb = a[rid], b[rid]
        assert ra["run_id"] == rb["run_id"] == rid
        for k in set(ra) - VOLATILE - {"metrics"}:
            if isinstance(ra[k], float):
                np.testing.assert_allclose(ra[k], rb[k], rtol=tol, atol=tol)
            else:
                assert ra[k] == rb[k], k
        assert set(ra["metrics"]) == set(rb["metrics"])
        for k in ra["metrics"]:
            np.testing.assert_allclose(np.asarray(ra["metrics"][k], float),
                                       np.asarray(rb["metrics"][k], float),
                                       rtol=tol, atol=tol, err_msg=k)


# -------------------------------------------------------- 2 processes x 4 devices
SWEEP_ONE_GROUP = SWEEP.replace('"coordinate_median"', '').replace(
    '"beta": [0.5, 0.9]', '"beta": [0.9]')  # 1 program, 3 runs (seeds)


def _workers_config():
    from tests.helpers import tiny_config

    # vmap: the runs side by side in one program (the default on CPU, lax.map,
    # compiles slower with the worker axis split over processes).
    return tiny_config(num_workers=8, num_byzantine=2, num_rounds=4, eval_every=2,
                       shard="workers", run_batching="vmap")


def _dp_loss(params, batch):
    import jax.numpy as jnp

    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def _faulty(kind):
    """Device 3 (a device of process 0) sends +inf or a large sign flip."""
    import jax
    import jax.numpy as jnp

    def fault(g, idx):
        if kind == "inf":
            return jax.tree_util.tree_map(lambda x: jnp.where(idx == 3, jnp.inf, x), g)
        return jax.tree_util.tree_map(lambda x: jnp.where(idx == 3, -20.0 * x, x), g)

    return fault


def _train_dp(aggregator, kind, steps=40):
    """Full-data loss before and after robust data-parallel training on every
    global device (each device one worker, device 3 faulty)."""
    import optax

    from byzjax import parallel

    rng = np.random.default_rng(0)
    w_true = rng.normal(size=(10,)).astype(np.float32)
    x = rng.normal(size=(512, 10)).astype(np.float32)
    y = x @ w_true + 0.01 * rng.normal(size=(512,)).astype(np.float32)
    init, step = parallel.robust_data_parallel_step(
        _dp_loss, optax.sgd(0.05), mesh=parallel.make_mesh(),
        num_byzantine=0 if aggregator == "mean" else 1, aggregator=aggregator,
        momentum=0.5, fault=_faulty(kind))
    params = {"w": np.zeros(10, np.float32), "b": np.zeros((), np.float32)}
    start = float(np.mean((x @ params["w"] + params["b"] - y) ** 2))
    state = init(params)
    for i in range(steps):
        sl = slice((i * 64) % 512, (i * 64) % 512 + 64)
        params, state, _ = step(params, state, (x[sl], y[sl]))  # same on all
    p = parallel.fetch(params)
    return start, float(np.mean((x @ p["w"] + p["b"] - y) ** 2))


def worker_main(outdir: str) -> None:
    """One of the launched processes (called with ``python -c``)."""
    assert distributed.initialize() is True  # from the launcher's environment
    import jax

    from byzjax import sim
    from byzjax.sim import _files, _schedule
    from tests.helpers import TinyMLP, make_data

    result = {"process_index": jax.process_index(),
              "process_count": jax.process_count(),
              "device_count": jax.device_count(),
              "local_device_count": jax.local_device_count()}
    # A sweep as `byzjax launch -- sweep` runs it: its group (no shard set) is
    # split by runs over the 8 devices of both processes.
    summary = _schedule.run_sweep(_files.load_sweep(os.path.join(outdir, "sweep.py")),
                               os.path.join(outdir, "runs"), progress=False,
                               log=distributed.quiet)
    result["runs"] = summary["runs"]
    records = sim.run_group(_workers_config(), seeds=SEEDS, data=make_data(8),
                            model=TinyMLP(), progress=False,
                            outdir=os.path.join(outdir, "workers", "runs"))
    result["workers"] = {r["run_id"]: r["metrics"] for r in records}
    result["dp"] = {f"{agg}/{kind}": _train_dp(agg, kind)
                    for agg in ("trimmed_mean", "mean") for kind in ("inf", "flip")}
    with open(os.path.join(outdir, f"process{jax.process_index()}.json"), "w") as fh:
        json.dump(result, fh)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.multidevice
def test_two_processes_four_devices_each(tmp_path):
    (tmp_path / "sweep.py").write_text(SWEEP_ONE_GROUP)
    code = distributed.launch(
        [sys.executable, "-c", "import sys; from tests.test_distributed import "
         "worker_main; worker_main(sys.argv[1])", str(tmp_path)],
        num_processes=2, local_devices=4, timeout=400, env=_env())
    assert code == 0
    seen = [json.load(open(tmp_path / f"process{i}.json")) for i in range(2)]
    for i, s in enumerate(seen):
        assert (s["process_index"], s["process_count"], s["device_count"],
                s["local_device_count"]) == (i, 2, 8, 4)
    # Both processes got the same (all-gathered) results.
    for key in ("runs", "workers", "dp"):
        np.testing.assert_equal(seen[0][key], seen[1][key])  # NaN == NaN here

    # The same in this single process (one device) as the reference.
    from byzjax import sim
    from byzjax.sim import _files, _schedule
    from tests.helpers import TinyMLP, make_data

    assert seen[0]["runs"] == len(SEEDS)
    _schedule.run_sweep(_files.load_sweep(str(tmp_path / "sweep.py")),
                     str(tmp_path / "ref_runs"), progress=False, log=distributed.quiet)
    sim.run_group(_workers_config(), seeds=SEEDS, data=make_data(8), model=TinyMLP(),
                  progress=False, outdir=str(tmp_path / "ref_workers" / "runs"))
    for name, shard in (("runs", "runs"), ("workers", "workers")):
        got = _records(tmp_path / name)  # written once, by process 0 only
        ref = _records(tmp_path / f"ref_{name}")
        assert len(got) == len(ref) == len(SEEDS)
        for rec in got.values():
            assert (rec["process_count"], rec["devices_used"], rec["shard"]) == (
                2, 8, shard)
        _assert_same_records(ref, got, tol=1e-6)

    # One faulty device (+inf, or a -20x sign flip): the robust rule trains,
    # the mean does not.
    for kind in ("inf", "flip"):
        start, end = seen[0]["dp"][f"trimmed_mean/{kind}"]
        assert np.isfinite(end) and end < 0.05 * start, (kind, start, end)
        start, end = seen[0]["dp"][f"mean/{kind}"]
        assert not (np.isfinite(end) and end < 0.05 * start), (kind, start, end)
