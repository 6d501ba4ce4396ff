"""Several processes, one program: JAX's multi-controller runtime for byzjax.

A multi-process run (a TPU pod slice, several GPU hosts, a Slurm allocation, or
several processes on one CPU machine) starts the same program in every
process; each calls :func:`initialize` before any JAX computation, after which
``jax.devices()`` lists the devices of *every* process and the meshes of
:mod:`byzjax.parallel` span them. The simulator then shards its runs or its
worker axis over all of them (``shard="runs"`` / ``"workers"``) and
:func:`byzjax.parallel.robust_data_parallel_step` makes each device one worker.
Only process 0 writes run records and shows progress bars.

Settings, first match wins:

* arguments of :func:`initialize` (the CLI's ``--coordinator-address``,
  ``--num-processes``, ``--process-id``);
* the environment: ``JAX_COORDINATOR_ADDRESS`` (read by JAX itself),
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``;
* none of them: a multi-process cluster JAX detects by itself (a Slurm step
  with several tasks, an Open MPI job, a multi-host Cloud TPU) is joined with
  ``jax.distributed.initialize()`` and no arguments; otherwise the run stays
  single-process.

:func:`launch` starts N local processes joined on a free loopback port
(``byzjax launch --num-processes 2 -- sweep FILE``), for tests and for
multi-process CPU machines. :func:`shard_part` cuts a sweep's run list into the
disjoint parts of ``byzjax sweep FILE --shard i/k`` (independent jobs: a Slurm
job array, several machines on one shared disk).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence, TypeVar

import jax
from jax.experimental import multihost_utils

__all__ = [
    "initialize",
    "is_initialized",
    "process_index",
    "process_count",
    "is_main_process",
    "barrier",
    "describe_devices",
    "describe_line",
    "announce",
    "run_fields",
    "cluster_detected",
    "launch",
    "check_launch",
    "free_port",
    "parse_shard",
    "shard_part",
    "sweep_part",
]

T = TypeVar("T")

#: Environment variables read by :func:`initialize` (the first one by JAX too).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

_state = {"initialized": False}


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def cluster_detected() -> str | None:
    """The name of a multi-process environment JAX can join by itself, or None.

    Only environments that announce more than one process count (a single
    Slurm task, e.g. one element of a job array, stays single-process):
    ``"slurm"`` (``SLURM_NTASKS`` > 1 inside an ``srun`` step), ``"ompi"``
    (``OMPI_COMM_WORLD_SIZE`` > 1), ``"tpu"`` (``TPU_WORKER_HOSTNAMES`` or
    ``TPU_PROCESS_ADDRESSES`` listing several hosts, or ``MEGASCALE_*``);
    ``BYZJAX_DISTRIBUTED=auto`` forces JAX's own detection (e.g. a Cloud TPU
    VM slice that announces its hosts only through its metadata server).

    Example:
      >>> cluster_detected() is None  # a plain machine
      True
    """
    env = os.environ
    if env.get("BYZJAX_DISTRIBUTED", "").lower() == "auto":
        return "auto"
    if "SLURM_STEP_NODELIST" in env and (_int_env("SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if (_int_env("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "ompi"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if "," in hosts or "MEGASCALE_COORDINATOR_ADDRESS" in env:
        return "tpu"
    return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str = "gloo",
    initialization_timeout: int = 120,
) -> bool:
    """Joins this process to a multi-process JAX run (``jax.distributed``).

    Must run before any JAX computation (before the first array is created).
    Arguments left ``None`` are read from ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; if none is set anywhere and
    :func:`cluster_detected` names a cluster, ``jax.distributed.initialize()``
    is called without arguments and JAX fills them in (TPU pod, Slurm, Open
    MPI). On the CPU backend, cross-process collectives use ``cpu_collectives``
    (``"gloo"``).

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator service.
      num_processes: number of processes of the run.
      process_id: this process, in ``0 .. num_processes - 1``.
      cpu_collectives: ``jax_cpu_collectives_implementation`` for CPU runs.
      initialization_timeout: seconds to wait for every process to join.

    Returns:
      True if ``jax.distributed`` was initialized (now or before), False if
      the run is single-process (nothing to join).

    Raises:
      ValueError: incomplete or inconsistent settings (one line saying which).

    Example:
      >>> initialize()  # nothing set: a single-process run
      False
    """
    if _state["initialized"]:
        return True
    if jax.distributed.is_initialized():  # the caller joined the run itself
        _state["initialized"] = True
        return True
    address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    count = num_processes if num_processes is not None else _int_env(ENV_NUM_PROCESSES)
    index = process_id if process_id is not None else _int_env(ENV_PROCESS_ID)
    given = [v is not None for v in (address, count, index)]
    if not any(given):
        cluster = cluster_detected()
        if cluster is None:
            return False
        _set_cpu_collectives(cpu_collectives)
        jax.distributed.initialize(initialization_timeout=initialization_timeout)
        _state["initialized"] = True
        return True
    if count is not None and count == 1 and index in (None, 0):
        return False
    if not all(given) and cluster_detected() is None:
        missing = [name for name, g in zip(
            ("--coordinator-address / JAX_COORDINATOR_ADDRESS",
             "--num-processes / JAX_NUM_PROCESSES",
             "--process-id / JAX_PROCESS_ID"), given) if not g]
        raise ValueError("multi-process run needs " + ", ".join(missing))
    if count is not None and count < 1:
        raise ValueError(f"num_processes must be >= 1, got {count}")
    if count is not None and index is not None and not 0 <= index < count:
        raise ValueError(f"process_id must be in [0, {count}), got {index}")
    _set_cpu_collectives(cpu_collectives)
    jax.distributed.initialize(coordinator_address=address, num_processes=count,
                               process_id=index,
                               initialization_timeout=initialization_timeout)
    _state["initialized"] = True
    return True


def _set_cpu_collectives(name: str) -> None:
    # (jax's Config declares its options' attributes only at run time)
    platforms = os.environ.get("JAX_PLATFORMS", "") or str(
        getattr(jax.config, "jax_platforms") or "")
    if platforms in ("", "cpu") or platforms.startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", name)


def is_initialized() -> bool:
    """True once :func:`initialize` joined a multi-process run."""
    return _state["initialized"]


def process_index() -> int:
    """This process's index (0 in a single-process run)."""
    return jax.process_index()


def process_count() -> int:
    """The number of processes of the run (1 in a single-process run)."""
    return jax.process_count()


def is_main_process() -> bool:
    """True in process 0: the one that writes run records and shows progress.

    Example:
      >>> is_main_process()
      True
    """
    return process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reached ``barrier(name)`` (no-op in one process)."""
    if process_count() > 1:
        multihost_utils.sync_global_devices(name)


def describe_devices() -> dict:
    """Backend, device and process counts of this run (what each run records).

    Example:
      >>> d = describe_devices()
      >>> d["backend"], d["process_count"], d["device_count"] >= 1
      ('cpu', 1, True)
    """
    return {
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
        "device_kind": jax.devices()[0].device_kind,
    }


def run_fields(mesh=None) -> dict:
    """What a run record says about where it ran.

    Args:
      mesh: the mesh the run was sharded over, or None (one device).

    Returns:
      ``backend``, ``device_count`` (all processes), ``process_count``,
      ``device_kind`` and ``devices_used`` (the mesh size, else 1).

    Example:
      >>> f = run_fields()
      >>> f["backend"], f["process_count"], f["devices_used"]
      ('cpu', 1, 1)
    """
    d = describe_devices()
    return {
        "backend": d["backend"],
        "device_count": d["device_count"],
        "process_count": d["process_count"],
        "device_kind": d["device_kind"],
        "devices_used": 1 if mesh is None else int(mesh.size),
    }


def describe_line() -> str:
    """One line for the start of a command: backend, devices, processes.

    Example:
      >>> describe_line()  # doctest: +ELLIPSIS
      'backend cpu: ... device(s) (...), process 0 of 1'
    """
    d = describe_devices()
    return (f"backend {d['backend']}: {d['device_count']} device(s) "
            f"({d['device_kind']}), process {d['process_index']} of "
            f"{d['process_count']}")


# ------------------------------------------------------------------- sweep parts
def parse_shard(text: str) -> tuple[int, int]:
    """Parses ``"i/k"`` (the i-th of k parts, ``0 <= i < k``).

    Example:
      >>> parse_shard("1/4")
      (1, 4)
    """
    try:
        i, k = (int(t) for t in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard expects i/k with integers, e.g. 0/4; got {text!r}"
                         ) from None
    if k < 1 or not 0 <= i < k:
        raise ValueError(f"--shard i/k needs k >= 1 and 0 <= i < k; got {text!r}")
    return i, k


def shard_part(items: Sequence[T], index: int, count: int) -> list[T]:
    """The ``index``-th of ``count`` contiguous, near-equal, disjoint parts.

    Contiguous so a sweep's runs of one program (adjacent in its run list)
    mostly stay in one job and compile once; the parts cover ``items``
    exactly once whatever is already done (the split never reads results).

    Example:
      >>> [shard_part(list(range(7)), i, 3) for i in range(3)]
      [[0, 1], [2, 3], [4, 5, 6]]
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= i < k")
    n = len(items)
    return list(items[index * n // count:(index + 1) * n // count])


def sweep_part(groups, shard: str | None) -> set[str] | None:
    """The run ids of part ``shard`` (``"i/k"``) of a sweep, or None for all.

    The run list is the sweep's groups in order, each group's (point, seed)
    runs in order (``SweepGroup.run_ids``); see :func:`shard_part`.
    """
    if shard is None or str(shard).strip() == "":
        return None
    index, count = parse_shard(shard)
    ids = [rid for g in groups for _, _, rid in g.run_ids()]
    return set(shard_part(ids, index, count))


def quiet(*args, **kwargs) -> None:
    """A ``print`` that prints nothing (the log of processes other than 0)."""


# ---------------------------------------------------------------------- launcher
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a local coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forward(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()
    stream.close()


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_launch(*, num_processes, local_devices=None, timeout=None) -> None:
    """Checks the launcher's settings before any process is started.

    Raises:
      ValueError: one line naming the option and what to change.

    Example:
      >>> check_launch(num_processes=2, local_devices=4)
      >>> try:
      ...     check_launch(num_processes=1, local_devices=0)
      ... except ValueError as e:
      ...     print(e)
      --local-devices must be an integer >= 1 (CPU devices per process), got 0
    """
    if not _whole(num_processes) or num_processes < 1:
        raise ValueError(f"--num-processes must be an integer >= 1, got "
                         f"{num_processes!r}")
    if local_devices is not None and (not _whole(local_devices)
                                      or local_devices < 1):
        raise ValueError(f"--local-devices must be an integer >= 1 (CPU devices "
                         f"per process), got {local_devices!r}")
    if timeout is not None and not (isinstance(timeout, (int, float))
                                    and not isinstance(timeout, bool)
                                    and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"--timeout must be a number of seconds > 0, got "
                         f"{timeout!r}")


def launch(
    argv: Sequence[str],
    *,
    num_processes: int,
    local_devices: int | None = None,
    timeout: float | None = None,
    env: dict | None = None,
) -> int:
    """Runs the program ``argv`` in ``num_processes`` local processes.

    The processes join one JAX run through a coordinator on a free port of
    127.0.0.1 (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
    ``JAX_PROCESS_ID``; the program calls :func:`initialize`, as ``byzjax
    train|sweep`` do). Process 0 writes to this terminal; the others' output
    is forwarded line by line with a ``[process i]`` prefix. If one process
    fails, the others are stopped.

    Args:
      argv: the program, e.g. ``[sys.executable, "-m", "byzjax", "sweep",
        "file.py"]`` or ``[sys.executable, "train.py"]``.
      num_processes: how many processes.
      local_devices: if given, each process gets that many CPU devices
        (``--xla_force_host_platform_device_count``, ``JAX_PLATFORMS=cpu``).
      timeout: seconds before every process is stopped (None: no limit).
      env: base environment (default: this process's).

    Returns:
      0 if every process succeeded, else the first non-zero exit code
      (124 on timeout).

    Raises:
      ValueError: a bad setting (:func:`check_launch`), before any process
        is started.
    """
    check_launch(num_processes=num_processes, local_devices=local_devices,
                 timeout=timeout)
    if not argv:
        raise ValueError("launch needs a program to run")
    base = dict(os.environ if env is None else env)
    if local_devices is not None:
        flags = [f for f in base.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={int(local_devices)}")
        base["XLA_FLAGS"] = " ".join(flags)
        base["JAX_PLATFORMS"] = "cpu"
    address = f"127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen] = []  # process 0's bytes, the others' text
    threads = []
    for i in range(num_processes):
        p: subprocess.Popen
        penv = dict(base, **{ENV_COORDINATOR: address,
                             ENV_NUM_PROCESSES: str(num_processes),
                             ENV_PROCESS_ID: str(i)})
        if i == 0:
            p = subprocess.Popen(list(argv), env=penv)
        else:
            p = subprocess.Popen(list(argv), env=penv, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1)
            t = threading.Thread(target=_forward, daemon=True,
                                 args=(p.stdout, f"[process {i}] ", sys.stderr))
            t.start()
            threads.append(t)
        procs.append(p)
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    code = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs
                      if p.returncode not in (None, 0)]
            if failed:
                code = failed[0]
                break
            if deadline is not None and time.monotonic() > deadline:
                code = 124
                print(f"launch: timeout after {timeout} s; stopping",
                      file=sys.stderr)
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in threads:
            t.join(timeout=5)
    if code == 0:
        code = next((p.returncode for p in procs if p.returncode), 0)
    return code


# --------------------------------------------------------------- announcement
def announce() -> None:
    """Prints :func:`describe_line` to stderr once per process, in process 0.

    The simulator calls it when its first run starts, so every command's
    output says which backend and how many devices it ran on.
    """
    if _state.get("announced"):
        return
    _state["announced"] = True
    if is_main_process():
        print(describe_line(), file=sys.stderr, flush=True)
