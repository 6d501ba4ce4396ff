"""The results folder (byzjax.sim._store): records checked when read, standard
JSON, orphaned temporary files removed, group locks. Several processes on one
folder: test_sweep_resume_and_locks.py."""

from __future__ import annotations

import glob
import json
import os
import socket
import time

import pytest

from byzjax import report, sim
from byzjax.sim import _grid, _schedule, _store


def _strict_load(path):
    """json.load that rejects NaN / Infinity, as jq and JavaScript do."""
    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")

    with open(path) as fh:
        return json.load(fh, parse_constant=reject)


def _record(run_id="abc", **extra):
    rec = {"run_id": run_id, "config": {"optimizer": "resam", "attack": "alie",
                                        "aggregator": "mean"},
           "seed": 0, "hparams": {"beta": 0.9},
           "metrics": {"round": [1, 2], "test_accuracy": [0.5, float("nan")]},
           "final_accuracy": float("nan"), "max_accuracy": 0.5, "diverged": True,
           "diverged_round": 2}
    rec.update(extra)
    return rec


def test_records_are_standard_json_with_null_for_non_finite(tmp_path):
    path = str(tmp_path / "abc.json")
    written = _store.write_record(path, _record(loss=float("-inf")))
    loaded = _strict_load(path)
    assert loaded["final_accuracy"] is None and loaded["loss"] is None
    assert loaded["metrics"]["test_accuracy"] == [0.5, None]
    assert loaded == written
    assert _store.read_record(path) == written


def test_report_reads_diverged_records_with_nulls(tmp_path):
    (tmp_path / "runs").mkdir()
    _store.write_record(str(tmp_path / "runs" / "abc.json"), _record())
    _store.write_record(str(tmp_path / "runs" / "def.json"), _record(
        "def", final_accuracy=0.7, diverged=False, diverged_round=-1,
        metrics={"round": [1, 2], "test_accuracy": [0.6, 0.7]}))
    paths = report.write_report(str(tmp_path))
    full = open(paths["full"]).read()
    # The diverged run counts as 0; each run's value, in seed order.
    assert "0.3500 +- 0.3500 | 0.000, 0.700 | 0, 0 | 1 |" in full
    assert os.path.getsize(paths["curves"]) > 1000


def _corrupt(kind, path):
    text = open(path).read()
    if kind == "truncated":
        open(path, "w").write(text[: len(text) // 2])
    elif kind == "empty":
        open(path, "w").write("")
    elif kind == "edited":
        text = text.replace('"max_accuracy": 0.5', '"max_accuracy": 0.9')
        open(path, "w").write(text)
    elif kind == "foreign":
        rec = json.loads(text)
        rec["run_id"] = "other"
        _store.write_record(path, rec)
    elif kind == "incomplete":
        rec = json.loads(text)
        del rec["metrics"]
        open(path, "w").write(json.dumps(rec))
    elif kind == "not_an_object":
        open(path, "w").write("[1, 2]")


BAD = {"truncated": "not valid JSON", "empty": "empty file",
       "edited": "checksum mismatch", "foreign": "holds run 'other'",
       "incomplete": "incomplete record", "not_an_object": "not a run record"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_record_is_named_and_skipped(tmp_path, kind):
    runs = tmp_path / "runs"
    runs.mkdir()
    _store.write_record(str(runs / "abc.json"), _record())
    _store.write_record(str(runs / "good.json"), _record("good"))
    _corrupt(kind, str(runs / "abc.json"))
    with pytest.raises(ValueError, match=BAD[kind]) as e:
        _store.read_record(str(runs / "abc.json"))
    assert "abc.json" in str(e.value)
    with pytest.warns(_store.BadRecordWarning, match="abc.json"):
        loaded = report.load_runs(str(tmp_path))
    assert [r["run_id"] for r in loaded] == ["good"]


def test_record_without_checksum_from_an_older_version_is_accepted(tmp_path):
    path = tmp_path / "abc.json"
    path.write_text(json.dumps(_record()))  # Python's json: NaN tokens, no checksum
    assert _store.read_record(str(path))["run_id"] == "abc"


def _tiny_config():
    c = sim.get_config()
    c.dataset = "synthetic"
    c.num_workers, c.num_byzantine = 5, 1
    c.batch_size, c.num_rounds, c.eval_every = 4, 4, 2
    c.aggregator = "trimmed_mean"
    return c


@pytest.mark.slow
def test_bad_record_is_computed_again_and_good_ones_are_not(tmp_path):
    group = _grid.SweepGroup(_tiny_config(), [{}], [0, 1], {})
    taken, first, computed = _schedule.run_missing(group, str(tmp_path), progress=False)
    assert taken and computed == 2
    bad = tmp_path / "runs" / (first[1]["run_id"] + ".json")
    bad.write_text(bad.read_text()[:100])
    with pytest.warns(_store.BadRecordWarning, match=first[1]["run_id"]):
        taken, again, computed = _schedule.run_missing(group, str(tmp_path),
                                                    progress=False)
    assert computed == 1
    assert again[0] == first[0]  # read back, not recomputed
    assert again[1]["metrics"] == first[1]["metrics"]  # recomputed, same numbers
    assert _store.read_record(str(bad))["run_id"] == first[1]["run_id"]
    assert not os.path.exists(tmp_path / "checkpoints")


def _dead_pid() -> int:
    """A process id no process has (found without starting one)."""
    for pid in range(2 ** 22 - 1, 1, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise RuntimeError("no free process id")


def test_orphaned_temporary_files_are_removed(tmp_path):
    dead = _dead_pid()
    orphan = tmp_path / f"a.json.tmp.{dead}"
    live = tmp_path / f"b.json.tmp.{os.getpid()}"
    old_live = tmp_path / f"c.json.tmp.{os.getpid()}"
    keep = tmp_path / "d.json"
    for p in (orphan, live, old_live, keep):
        p.write_text("{")
    old = time.time() - 2 * _store.ORPHAN_AFTER_S
    os.utime(old_live, (old, old))
    removed = _store.clean_orphans(str(tmp_path))
    assert sorted(map(os.path.basename, removed)) == sorted([orphan.name,
                                                             old_live.name])
    assert live.exists() and keep.exists()


def test_lock_is_exclusive_and_a_dead_holder_is_taken_over(tmp_path):
    locks = str(tmp_path)
    with _store.group_lock(locks, "g") as mine:
        assert mine
        with _store.group_lock(locks, "g") as other:
            assert not other
    assert not glob.glob(str(tmp_path / "*.lock"))  # released
    # A lock left by a killed process on this host is broken at once.
    dead = _dead_pid()
    (tmp_path / "g.lock").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": int(dead), "token": "t"}))
    with _store.group_lock(locks, "g") as mine:
        assert mine
    # Another machine's lock is respected while fresh, broken when stale.
    (tmp_path / "g.lock").write_text(json.dumps(
        {"host": "elsewhere", "pid": 1, "token": "t"}))
    with _store.group_lock(locks, "g") as mine:
        assert not mine
    old = time.time() - 2 * _store.STALE_AFTER_S
    os.utime(tmp_path / "g.lock", (old, old))
    with _store.group_lock(locks, "g") as mine:
        assert mine
