"""A results folder that can be trusted: checked records, locks, no orphans.

Layout of a results folder ``outdir``::

    outdir/runs/<run_id>.json        one record per finished run
    outdir/locks/<group_id>.lock     held while a process computes a group
    outdir/checkpoints/<group_id>/   orbax checkpoints of a group in progress

Records are standard JSON (non-finite numbers are written as ``null``; the
record's ``diverged_round`` says why) and end with a ``checksum`` of their
content, so a truncated, edited or foreign file is recognised when read
(:func:`read_record`), named in a warning and computed again.

Locks are files created with ``O_CREAT | O_EXCL`` (atomic on local and NFS v3+
disks) holding the host, process id and a token; the holder refreshes the
file's modification time (its heartbeat) every :data:`HEARTBEAT_S` seconds. A
lock is stale, and is broken with a one-line :class:`StaleLockWarning`, when
its heartbeat is older than :data:`STALE_AFTER_S` seconds, whatever its
process id (after a restart the id may belong to another process, even this
one), or, sooner, when it was taken on this host by a process that no longer
exists. A fresh lock of another host is respected (its process id means
nothing here). So several processes, on one machine or several sharing a
disk, split a sweep's groups between them and no group is computed twice.

Records say what made them: :func:`code_fields` (byzjax version, git commit,
jax / jaxlib versions, device kind) is stored as ``record["code"]``. It is
part of the record's content, not of its check: a record written by another
version of byzjax reads as well as one of this version.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import importlib.metadata
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from typing import Any, Iterator

import jax
import jaxlib

from byzjax.sim._errors import ConfigError

__all__ = [
    "BadRecordWarning",
    "StaleLockWarning",
    "code_fields",
    "sanitize",
    "write_record",
    "read_record",
    "load_records",
    "clean_orphans",
    "group_lock",
    "check_outdir",
    "HEARTBEAT_S",
    "STALE_AFTER_S",
]

#: Seconds between refreshes (heartbeats) of a held lock.
HEARTBEAT_S = 20.0
#: A lock not refreshed for this long belongs to a dead or hung process and is
#: broken, whatever its process id.
STALE_AFTER_S = 120.0
#: A temporary file older than this is an orphan even if its pid is alive
#: (pids are reused; an atomic write takes milliseconds).
ORPHAN_AFTER_S = 600.0

#: Fields every run record has.
REQUIRED = ("run_id", "config", "seed", "hparams", "metrics", "final_accuracy",
            "max_accuracy", "diverged", "diverged_round")


class BadRecordWarning(UserWarning):
    """A run record that cannot be trusted (truncated, altered or foreign)."""


class StaleLockWarning(UserWarning):
    """A group's lock left by a dead or hung process, broken to take it over."""


# ------------------------------------------------------------------ provenance
#: Seconds a ``git`` call may take before the commit is recorded as unknown.
GIT_TIMEOUT_S = 5.0


def _git(folder: str, *args: str) -> str | None:
    """``git -C folder args`` stdout, or ``None`` (no git, not a checkout,
    timeout, any failure)."""
    try:
        done = subprocess.run(
            ["git", "-C", folder, *args], capture_output=True, text=True,
            timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL,
            env=dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout if done.returncode == 0 else None


def _git_state(package_dir: str) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout ``package_dir`` is tracked in,
    or ``(None, None)`` (installed package, no git, untracked folder)."""
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if not top or not top.strip():
        return None, None
    top = top.strip()
    rel = os.path.relpath(os.path.realpath(package_dir), os.path.realpath(top))
    # A package installed in a folder inside some other repository (a
    # virtualenv in a project) is not that repository's code.
    tracked = _git(top, "ls-files", "--", os.path.join(rel, "__init__.py"))
    if not tracked or not tracked.strip():
        return None, None
    head = _git(top, "rev-parse", "HEAD")
    commit = head.strip() if head and head.strip() else None
    status = _git(top, "status", "--porcelain", "--", rel)
    dirty = None if status is None else bool(status.strip())
    return commit, dirty


_CODE: dict[str, Any] = {}


def code_fields() -> dict[str, Any]:
    """What made a record: byzjax, its git commit, jax, jaxlib, the device kind.

    ``git_commit`` / ``git_dirty`` are set only when byzjax is imported from a
    git checkout (``git_dirty``: uncommitted changes or new files in the
    package's folder); otherwise, or when ``git`` is missing or slow, they are
    ``None``. Computed once per process.

    Returns:
      ``{"byzjax", "git_commit", "git_dirty", "jax", "jaxlib", "device_kind"}``.

    Example:
      >>> fields = code_fields()
      >>> sorted(fields)
      ['byzjax', 'device_kind', 'git_commit', 'git_dirty', 'jax', 'jaxlib']
      >>> import jax; fields["jax"] == jax.__version__
      True
    """
    if not _CODE:
        jaxlib_version = str(getattr(jaxlib, "__version__", None)
                             or jaxlib.version.__version__)
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit, dirty = _git_state(package)
        _CODE.update({
            "byzjax": _byzjax_version(),
            "git_commit": commit,
            "git_dirty": dirty,
            "jax": str(jax.__version__),
            "jaxlib": jaxlib_version,
            "device_kind": str(jax.devices()[0].device_kind),
        })
    return dict(_CODE)


def _byzjax_version() -> str:
    """The installed distribution's version, else the package's own."""
    try:
        return importlib.metadata.version("byzjax")
    except importlib.metadata.PackageNotFoundError:  # run from a bare checkout
        return str(sys.modules["byzjax"].__version__)


def sanitize(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON ``null``).

    Example:
      >>> sanitize({"acc": [0.5, float("nan")], "loss": float("inf")})
      {'acc': [0.5, None], 'loss': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value


def _checksum(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_record(path: str, record: dict) -> dict:
    """Writes ``record`` as standard JSON with a checksum, atomically.

    The file appears complete or not at all (temporary file, ``fsync``,
    ``os.replace``). Returns the record as written (non-finite numbers as
    ``None``, with its ``checksum``).

    Raises:
      OSError: one line naming the file and the reason ("no space left on
        device"); no temporary file is left behind.
    """
    record = sanitize(dict(record))
    record.pop("checksum", None)
    record["checksum"] = _checksum(record)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            json.dump(record, fh, indent=1, sort_keys=True, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        what = ("no space left on device" if e.errno == errno.ENOSPC
                else e.strerror or str(e))
        raise OSError(e.errno, f"cannot write run record {path}: {what}; the "
                      "records written before it are kept (run the same command "
                      "again to compute the rest)") from e
    return record


def read_record(path: str, run_id: str | None = None) -> dict:
    """Reads a run record and checks it; raises ``ValueError`` naming the file.

    Checks: the file parses as JSON, is an object with every field of a
    record, its ``run_id`` is ``run_id`` (default: the file name), and its
    ``checksum`` matches its content (records written before checksums
    existed are accepted on the other checks).
    """
    expected = run_id or os.path.basename(path)[:-len(".json")]
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    if not text.strip():
        raise ValueError(f"{path}: empty file")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); "
                         "truncated or corrupted") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a run record (a JSON {type(record).__name__})")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"{path}: incomplete record (no {', '.join(missing)})")
    if record["run_id"] != expected:
        raise ValueError(f"{path}: holds run {record['run_id']!r}, not {expected!r}")
    if "checksum" in record and record["checksum"] != _checksum(record):
        raise ValueError(f"{path}: checksum mismatch (the file was altered)")
    return record


def load_records(runs_dir: str, run_ids=None, *, warn: bool = True
                 ) -> dict[str, dict]:
    """The valid records in ``runs_dir`` by run id; bad ones are warned about.

    Args:
      runs_dir: a folder of ``<run_id>.json`` files.
      run_ids: only these ids (default: every ``*.json``).
      warn: warn about bad files (off for a quick look that is warned about
        elsewhere).

    Returns:
      ``{run_id: record}`` for the files that pass :func:`read_record`
      (parseable, complete, of their run id, checksum); every other file is
      named in a :class:`BadRecordWarning` (and left in place, to be
      overwritten when its run is computed again).

    Example:
      >>> import os, tempfile, warnings
      >>> runs = tempfile.mkdtemp()
      >>> with open(os.path.join(runs, "abc.json"), "w") as fh:
      ...     _ = fh.write('{"run_id": "abc", "seed": 0')  # a killed writer's
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     load_records(runs)
      {}
      >>> caught[0].category.__name__
      'BadRecordWarning'
    """
    out: dict[str, dict] = {}
    if not os.path.isdir(runs_dir):
        return out
    if run_ids is None:
        names = sorted(f[:-5] for f in os.listdir(runs_dir) if f.endswith(".json"))
    else:
        names = [r for r in run_ids if os.path.exists(os.path.join(runs_dir,
                                                                   r + ".json"))]
    for rid in names:
        path = os.path.join(runs_dir, rid + ".json")
        try:
            out[rid] = read_record(path)
        except ValueError as e:
            if warn:
                warnings.warn(f"skipping bad run record {e} (a re-run of its "
                              "sweep or train computes it again)",
                              BadRecordWarning, stacklevel=2)
    return out


_TMP = re.compile(r"\.tmp\.(\d+)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_orphans(folder: str, *, now: float | None = None) -> list[str]:
    """Removes ``*.tmp.<pid>`` files left by killed writers; returns their paths.

    A temporary file is an orphan when its process no longer runs on this
    machine, or when it is older than :data:`ORPHAN_AFTER_S` (its writer,
    maybe on another machine, would have renamed it long ago).

    Args:
      folder: a folder of records (``outdir/runs``).
      now: the time to judge ages by (default: now).

    Example:
      >>> import os, tempfile
      >>> runs = tempfile.mkdtemp()
      >>> mine = f"b.json.tmp.{os.getpid()}"  # being written by this process
      >>> for name in ("a.json.tmp.99999999", mine):  # no process has that id
      ...     open(os.path.join(runs, name), "w").close()
      >>> [os.path.basename(p) for p in clean_orphans(runs)]
      ['a.json.tmp.99999999']
      >>> os.listdir(runs) == [mine]
      True
    """
    now = time.time() if now is None else now
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.tmp.*")):
        m = _TMP.search(path)
        if m is None:
            continue
        try:
            age = now - os.path.getmtime(path)
        except OSError:
            continue
        if age > ORPHAN_AFTER_S or not _pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


# ------------------------------------------------------------------- locks
def _lock_info(path: str) -> dict | None:
    try:
        with open(path) as fh:
            return json.loads(fh.read() or "null")
    except (OSError, ValueError):
        return None


def _stale_reason(path: str, info: dict | None, stale_after_s: float
                  ) -> str | None:
    """Why the lock at ``path`` (holding ``info``) is stale, or ``None``."""
    try:
        age = time.time() - os.path.getmtime(path)
    except OSError:
        return None  # gone: not ours to break, just retry
    if age > stale_after_s:  # no heartbeat: dead or hung, whatever its pid
        return f"its heartbeat is {age:.0f} s old (stale after {stale_after_s:g} s)"
    if info is None:  # being written, or garbage: judged by age only
        return None
    if info.get("host") == socket.gethostname():
        try:
            pid = int(info.get("pid", -1))
        except (TypeError, ValueError):
            return None
        if pid > 0 and pid != os.getpid() and not _pid_alive(pid):
            return f"its process {pid} is gone"
    return None  # fresh; another host's pid cannot be judged here


def _try_create(path: str, token: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(),
                   "token": token, "time": time.time()}, fh)
    return True


def _acquire(path: str, token: str, stale_after_s: float) -> bool:
    if _try_create(path, token):
        return True
    info = _lock_info(path)
    why = _stale_reason(path, info, stale_after_s)
    if why is None:
        return False
    # Break the stale lock: move it aside (atomic; one breaker wins), check we
    # moved the stale one and not a fresh lock taken meanwhile, then retry.
    aside = f"{path}.stale.{token}"
    try:
        os.rename(path, aside)
    except OSError as e:
        if e.errno in (errno.ENOENT,):
            return _try_create(path, token)
        raise
    moved = _lock_info(aside)
    if info is not None and moved is not None and moved.get("token") != info.get(
            "token"):
        # A fresh lock was taken meanwhile and we moved it: put it back unless
        # yet another one exists (link fails then; never overwrite a lock).
        with contextlib.suppress(OSError):
            os.link(aside, path)
        with contextlib.suppress(OSError):
            os.remove(aside)
        return False
    with contextlib.suppress(OSError):
        os.remove(aside)
    who = ("" if info is None else
           f" of process {info.get('pid')} on {info.get('host')}")
    warnings.warn(f"breaking lock {path}{who}: {why}", StaleLockWarning,
                  stacklevel=4)
    return _try_create(path, token)


@contextlib.contextmanager
def group_lock(lock_dir: str, group_id: str, *, heartbeat_s: float | None = None,
               stale_after_s: float | None = None) -> Iterator[bool]:
    """Tries to take the lock of one group; yields whether it was taken.

    While held, a daemon thread refreshes the lock (its heartbeat) every
    ``heartbeat_s`` seconds; the lock is removed on exit (a killed holder's
    lock is broken later, see the module docstring).

    Args:
      lock_dir: the folder of locks (``outdir/locks``).
      group_id: the group.
      heartbeat_s: seconds between heartbeats (default :data:`HEARTBEAT_S`).
      stale_after_s: a lock whose heartbeat is older is broken (default
        :data:`STALE_AFTER_S`); must exceed ``heartbeat_s``.

    Example:
      >>> import tempfile
      >>> d = tempfile.mkdtemp()
      >>> with group_lock(d, "g") as mine:
      ...     with group_lock(d, "g") as again:
      ...         print(mine, again)
      True False
    """
    heartbeat_s = HEARTBEAT_S if heartbeat_s is None else float(heartbeat_s)
    stale_after_s = STALE_AFTER_S if stale_after_s is None else float(stale_after_s)
    if not 0 < heartbeat_s < stale_after_s:
        raise ValueError(f"lock timings: need 0 < heartbeat_s ({heartbeat_s:g}) < "
                         f"stale_after_s ({stale_after_s:g})")
    os.makedirs(lock_dir, exist_ok=True)
    path = os.path.join(lock_dir, group_id + ".lock")
    token = uuid.uuid4().hex
    if not _acquire(path, token, stale_after_s):
        yield False
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join()
        info = _lock_info(path)
        if info is not None and info.get("token") == token:
            with contextlib.suppress(OSError):
                os.remove(path)


def check_outdir(path: str) -> None:
    """Makes sure results can be written under ``path`` before any work starts.

    Creates the folder if needed and writes (then removes) a probe file.

    Args:
      path: the results folder (``--outdir``).

    Raises:
      ConfigError: (a ``ValueError``) one line naming the folder and the problem.

    Example:
      >>> import os, tempfile
      >>> outdir = os.path.join(tempfile.mkdtemp(), "results")
      >>> check_outdir(outdir); os.listdir(outdir)
      []
      >>> open(outdir + ".txt", "w").close()
      >>> try:
      ...     check_outdir(outdir + ".txt")
      ... except ConfigError as e:
      ...     print(str(e).replace(outdir, "results"))
      output folder 'results.txt' is a file; choose another --outdir
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"output folder {path!r} is a file; choose another "
                          "--outdir")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test.{os.getpid()}")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"cannot write to output folder {path!r} ({e.strerror}); "
                         "choose another --outdir") from None
