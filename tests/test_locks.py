"""Group locks: judged by their heartbeat's age and host, not by a process id alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings

import pytest

from byzjax.sim import _store

DAY = 86400.0


def _write_lock(folder, *, host, pid, age=0.0):
    path = folder / "g.lock"
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "theirs"}))
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def _take(folder, **timings):
    """Tries the lock once; ``(taken, [one-line warnings])``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _store.group_lock(str(folder), "g", **timings) as taken:
            pass
    return taken, [str(w.message) for w in caught
                   if issubclass(w.category, _store.StaleLockWarning)]


def _dead_pid():
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


@pytest.mark.parametrize("pid", [1, "mine"])
def test_an_old_lock_of_a_live_pid_on_this_host_is_broken(tmp_path, pid):
    # pid 1, or this very process's id after a container restart: alive, but
    # the lock's heartbeat stopped days ago.
    pid = os.getpid() if pid == "mine" else pid
    _write_lock(tmp_path, host=socket.gethostname(), pid=pid, age=2 * DAY)
    taken, said = _take(tmp_path)
    assert taken
    [line] = said
    assert "\n" not in line and str(tmp_path / "g.lock") in line
    assert f"process {pid}" in line and "heartbeat" in line and "s old" in line


@pytest.mark.parametrize("pid", [1, "mine"])
def test_a_fresh_lock_of_a_live_pid_on_this_host_is_respected(tmp_path, pid):
    pid = os.getpid() if pid == "mine" else pid
    path = _write_lock(tmp_path, host=socket.gethostname(), pid=pid, age=1.0)
    assert _take(tmp_path) == (False, [])
    assert json.loads(path.read_text())["token"] == "theirs"


@pytest.mark.subprocess  # (starts a process: git, or one that exits)
def test_a_fresh_lock_of_a_dead_pid_on_this_host_is_broken_at_once(tmp_path):
    dead = _dead_pid()
    _write_lock(tmp_path, host=socket.gethostname(), pid=dead, age=1.0)
    taken, [line] = _take(tmp_path)
    assert taken and f"its process {dead} is gone" in line


@pytest.mark.subprocess  # (starts a process: git, or one that exits)
def test_a_fresh_lock_of_another_host_is_respected_whatever_its_pid(tmp_path):
    # Its pid does not exist here, which says nothing about the other host.
    _write_lock(tmp_path, host="elsewhere", pid=_dead_pid(), age=1.0)
    assert _take(tmp_path) == (False, [])


def test_an_old_lock_of_another_host_is_broken(tmp_path):
    _write_lock(tmp_path, host="elsewhere", pid=os.getpid(), age=2 * DAY)
    taken, [line] = _take(tmp_path)
    assert taken and "on elsewhere" in line and "heartbeat" in line


def test_the_staleness_age_is_a_parameter(tmp_path):
    _write_lock(tmp_path, host="elsewhere", pid=1, age=0.5)
    assert _take(tmp_path, heartbeat_s=0.05, stale_after_s=1.0) == (False, [])
    taken, [line] = _take(tmp_path, heartbeat_s=0.05, stale_after_s=0.2)
    assert taken and "stale after 0.2 s" in line


def test_a_held_lock_stays_fresh_through_its_heartbeat(tmp_path):
    timings = dict(heartbeat_s=0.02, stale_after_s=0.15)
    with _store.group_lock(str(tmp_path), "g", **timings) as mine:
        assert mine
        path = tmp_path / "g.lock"
        first = os.path.getmtime(path)
        time.sleep(0.3)  # twice the staleness age: only the heartbeat saves it
        assert os.path.getmtime(path) > first
        # Seen from another host (the pid cannot help): fresh, respected.
        info = json.loads(path.read_text())
        path.write_text(json.dumps(dict(info, host="elsewhere")))
        assert _take(tmp_path, **timings) == (False, [])
        assert json.loads(path.read_text())["token"] == info["token"]


def test_bad_lock_timings_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="heartbeat_s .* < stale_after_s"):
        with _store.group_lock(str(tmp_path), "g", heartbeat_s=5, stale_after_s=1):
            pass
