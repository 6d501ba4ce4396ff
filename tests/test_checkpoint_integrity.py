"""Checkpoints are verified before they are resumed, and a full disk is one line.

Most tests drive :class:`byzjax.sim._checkpoint.Checkpoints` on a small NumPy
state (no compilation). The end-to-end ones "kill" a run in-process with a
chunk callback that raises after a checkpoint was saved (the checkpoint stays,
as after ``kill -9``); the same call again resumes from it.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import warnings

import numpy as np
import pytest

from byzjax import sim
from byzjax.sim import _checkpoint, _store
from byzjax.sim._checkpoint import Checkpoints, CheckpointWarning, verify_step
from tests.helpers import TinyMLP, make_data, tiny_config


# ------------------------------------------------------------ on a toy state
def _state(step):
    return {"w": np.arange(64, dtype=np.float32) + step,
            "b": np.full((3,), step, np.int32)}


def _history(step):
    return [{"loss": np.float32(i)} for i in range(step)]


def _chunk(state):
    return state, {"loss": np.float32(0)}


def _files(ckpt, step):
    return [p for p in glob.glob(os.path.join(ckpt, str(step), "**", "*"),
                                 recursive=True) if os.path.isfile(p)]


def _flip_bytes(path):
    """Changes 8 bytes in the middle of ``path``, keeping its size."""
    raw = bytearray(open(path, "rb").read())
    size = len(raw)
    for i in range(size // 2, min(size, size // 2 + 8)):
        raw[i] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    assert os.path.getsize(path) == size


def _saved(tmp_path, steps=(1, 2), num_evals=5):
    ckpt = str(tmp_path / "ckpt")
    c = Checkpoints(ckpt, num_evals)
    for s in steps:
        c.save(s, _state(s), _history(s))
    c.manager.close()
    return ckpt


def test_save_writes_a_manifest_of_every_file_and_keeps_one_step(tmp_path):
    ckpt = _saved(tmp_path)
    assert sorted(os.listdir(ckpt)) == ["2", "manifest-2.json"]
    manifest = json.load(open(os.path.join(ckpt, "manifest-2.json")))
    files = [os.path.relpath(p, os.path.join(ckpt, "2")) for p in _files(ckpt, 2)]
    assert manifest["step"] == 2 and len(files) > 3
    assert sorted(manifest["files"]) == sorted(files)
    assert verify_step(ckpt, 2) is None
    got, history = Checkpoints(ckpt, 5).restore(_state(0), _chunk)
    np.testing.assert_array_equal(got["w"], _state(2)["w"])
    assert [float(h["loss"]) for h in history] == [0.0, 1.0]


@pytest.mark.parametrize("damage,why", [
    ("flip_largest", "does not match its sha256"),
    ("flip_metadata", "does not match its sha256"),
    ("remove_file", "is missing"),
    ("add_file", "is not in its manifest"),
    ("remove_manifest", "no manifest"),
    ("garble_manifest", "unreadable manifest"),
])
def test_a_damaged_checkpoint_is_named_dropped_and_not_resumed(tmp_path, damage,
                                                                why):
    ckpt = _saved(tmp_path)
    files = _files(ckpt, 2)
    if damage == "flip_largest":
        _flip_bytes(max(files, key=os.path.getsize))
    elif damage == "flip_metadata":
        _flip_bytes(next(p for p in files if p.endswith("_METADATA")))
    elif damage == "remove_file":
        os.remove(max(files, key=os.path.getsize))
    elif damage == "add_file":
        open(os.path.join(ckpt, "2", "extra"), "w").write("x")
    elif damage == "remove_manifest":
        os.remove(os.path.join(ckpt, "manifest-2.json"))
    else:
        open(os.path.join(ckpt, "manifest-2.json"), "w").write('{"step": 2')
    assert why in verify_step(ckpt, 2)
    with pytest.warns(CheckpointWarning) as caught:
        got, history = Checkpoints(ckpt, 5).restore(_state(0), _chunk)
    [w] = caught
    message = str(w.message)
    assert "\n" not in message and ckpt in message and why in message
    assert "step 2 failed its check" in message and "round 0" in message
    np.testing.assert_array_equal(got["w"], _state(0)["w"])  # from round 0
    assert history == []
    assert not os.listdir(ckpt)  # the bad checkpoint is deleted


def test_an_unverified_newer_step_falls_back_to_the_verified_one(tmp_path):
    ckpt = _saved(tmp_path, steps=(1,))
    # A kill between orbax's commit of step 2 and its manifest: step 2 is
    # there, unverified, and step 1 is not deleted yet.
    other = _saved(tmp_path / "other", steps=(2,))
    os.rename(os.path.join(other, "2"), os.path.join(ckpt, "2"))
    with pytest.warns(CheckpointWarning,
                      match=r"step 2 failed its check \(no manifest.*resuming from "
                            "step 1"):
        got, history = Checkpoints(ckpt, 5).restore(_state(0), _chunk)
    np.testing.assert_array_equal(got["w"], _state(1)["w"])
    assert len(history) == 1
    assert sorted(os.listdir(ckpt)) == ["1", "manifest-1.json"]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "somewhere")


def _fill_disk(monkeypatch, ckpt, how):
    if how == "orbax_metadata":  # inside orbax, where its threads write
        from etils import epath

        cls = type(epath.Path(ckpt))
        monkeypatch.setattr(cls, "write_text", _no_space)
        monkeypatch.setattr(cls, "write_bytes", _no_space)
    elif how == "tensorstore":  # a ValueError carrying the OS message
        import orbax.checkpoint as ocp

        def fail(*args, **kwargs):
            raise ValueError(f'Error writing local file "{ckpt}/3/d/abc": [OS '
                             "error: No space left on device] [source locations="
                             "'tensorstore/kvstore/file/file_key_value_store.cc']")

        monkeypatch.setattr(ocp.CheckpointManager, "save", fail)
    else:  # the manifest
        monkeypatch.setattr(_checkpoint.os, "fsync", _no_space)


@pytest.mark.parametrize("how", ["orbax_metadata", "tensorstore", "manifest"])
def test_disk_full_during_a_save_is_one_line_and_keeps_the_last_step(
        tmp_path, monkeypatch, capfd, how):
    ckpt = str(tmp_path / "ckpt")
    c = Checkpoints(ckpt, 5)
    c.save(2, _state(2), _history(2))
    _fill_disk(monkeypatch, ckpt, how)
    capfd.readouterr()
    with pytest.raises(OSError) as e:
        c.save(3, _state(3), _history(3))
    err = capfd.readouterr().err
    monkeypatch.undo()
    message = str(e.value)
    assert e.value.errno == errno.ENOSPC
    assert "\n" not in message and ckpt in message
    assert "no space left on device" in message
    assert "Traceback" not in err and "ERROR" not in err, err[:3000]
    c.manager.close()
    assert verify_step(ckpt, 2) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, history = Checkpoints(ckpt, 5).restore(_state(0), _chunk)
    np.testing.assert_array_equal(got["w"], _state(2)["w"])
    assert len(history) == 2
    messages = [str(w.message) for w in caught
                if issubclass(w.category, CheckpointWarning)]
    if how == "manifest":  # step 3 was written but never verified
        assert len(messages) == 1 and "resuming from step 2" in messages[0]
    else:
        assert messages == []


def test_disk_full_while_writing_a_record_is_one_line(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    rec = {"run_id": "abc", "config": {}, "seed": 0, "hparams": {},
           "metrics": {"round": [1]}, "final_accuracy": 0.5, "max_accuracy": 0.5,
           "diverged": False, "diverged_round": -1}
    _store.write_record(str(runs / "abc.json"), rec)
    before = (runs / "abc.json").read_text()
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OSError) as e:
        _store.write_record(str(runs / "def.json"), dict(rec, run_id="def"))
    monkeypatch.undo()
    message = str(e.value)
    assert "\n" not in message and "def.json" in message
    assert "no space left on device" in message and e.value.errno == errno.ENOSPC
    assert sorted(os.listdir(runs)) == ["abc.json"]  # no temporary file left
    assert (runs / "abc.json").read_text() == before


# ------------------------------------------------------------------ end to end
SEEDS = [0, 1]


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def setup():
    c = tiny_config(num_rounds=8, eval_every=2, checkpoint_every=1,
                    num_workers=3, num_byzantine=0, attack="none",
                    aggregator="mean", optimizer="dsgd", clip_norm=0.0)
    data = make_data(c.num_workers)
    ref = sim.run_group(c, seeds=SEEDS, data=data, model=TinyMLP(), progress=False)
    return c, data, ref


def _run(c, data, ckpt, **kw):
    return sim.run_group(c, seeds=SEEDS, data=data, model=TinyMLP(),
                         progress=False, checkpoint_dir=ckpt, **kw)


def _assert_identical(got, ref):
    assert [r["final_params_sha256"] for r in got] == [
        r["final_params_sha256"] for r in ref]
    assert [r["metrics"] for r in got] == [r["metrics"] for r in ref]


def test_a_run_resumed_from_a_corrupted_checkpoint_starts_again(setup, tmp_path,
                                                                capsys):
    c, data, ref = setup
    ckpt = str(tmp_path / "ckpt")

    def die(round_, metrics, runs):
        if round_ == 6:  # after the checkpoint of chunk 2
            raise Killed

    with pytest.raises(Killed):
        _run(c, data, ckpt, on_chunk=die)
    assert verify_step(ckpt, 2) is None
    _flip_bytes(max(_files(ckpt, 2), key=os.path.getsize))  # the array bytes
    with pytest.warns(CheckpointWarning,
                      match="step 2 failed its check.*does not match its sha256"):
        got = _run(c, data, ckpt)
    assert "resuming" not in capsys.readouterr().err
    _assert_identical(got, ref)
    assert not os.path.exists(ckpt)


def test_disk_full_during_a_run_keeps_its_checkpoint_and_resumes(
        setup, tmp_path, monkeypatch, capfd):
    c, data, ref = setup
    ckpt = str(tmp_path / "ckpt")
    real_save = Checkpoints.save

    def save(self, step, state, history):
        if step == 2:  # the disk fills up during the second checkpoint
            _fill_disk(monkeypatch, ckpt, "orbax_metadata")
        return real_save(self, step, state, history)

    monkeypatch.setattr(Checkpoints, "save", save)
    capfd.readouterr()
    with pytest.raises(OSError, match="no space left on device") as e:
        _run(c, data, ckpt)
    err = capfd.readouterr().err
    monkeypatch.undo()
    assert "\n" not in str(e.value) and ckpt in str(e.value)
    assert "Traceback" not in err and "ERROR" not in err, err[:3000]
    got = _run(c, data, ckpt)
    assert "resuming 2 run(s) at round 2" in capfd.readouterr().err
    _assert_identical(got, ref)


def test_disk_full_in_the_command_line_is_one_line(tmp_path, monkeypatch, capsys):
    from byzjax import cli

    monkeypatch.setattr(os, "fsync", _no_space)
    code = cli.main(["train", "--set", "dataset=synthetic", "--set", "num_rounds=2",
                     "--set", "eval_every=2", "--set", "num_workers=3",
                     "--set", "num_byzantine=0", "--set", "attack=none",
                     "--set", "aggregator=mean", "--set", "optimizer=dsgd",
                     "--set", "batch_size=4", "--seeds", "0",
                     "--outdir", str(tmp_path), "--quiet", "--no-plot"])
    err = capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("byzjax train: error:") and "Traceback" not in err, err
    assert "no space left on device" in last and str(tmp_path / "runs") in last
