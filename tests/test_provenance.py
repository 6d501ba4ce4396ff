"""Run records say what made them (``record["code"]``), and still load when
another version of byzjax wrote them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import jax
import jaxlib
import pytest

import byzjax
from byzjax import sim
from byzjax.sim import _store
from tests.helpers import TinyMLP, make_data, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(byzjax.__file__)))
KEYS = ["byzjax", "device_kind", "git_commit", "git_dirty", "jax", "jaxlib"]


@pytest.fixture
def fresh_cache(monkeypatch):
    """code_fields computed again in this test (and again after it)."""
    monkeypatch.setattr(_store, "_CODE", {})


def _git_head():
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.mark.subprocess  # (starts a process: git, or one that exits)
def test_code_fields_name_the_versions_and_the_commit(fresh_cache):
    fields = _store.code_fields()
    assert sorted(fields) == KEYS
    assert fields["byzjax"] == byzjax.__version__
    assert fields["jax"] == jax.__version__
    assert fields["jaxlib"] == jaxlib.__version__
    assert fields["device_kind"] == jax.devices()[0].device_kind
    head = _git_head()
    if head is None:
        pytest.skip("byzjax is not imported from a git checkout here")
    assert fields["git_commit"] == head
    assert isinstance(fields["git_dirty"], bool)


def test_code_fields_are_cached_per_process(fresh_cache, monkeypatch):
    first = _store.code_fields()
    calls = []
    monkeypatch.setattr(_store, "_git", lambda *a: calls.append(a))
    assert _store.code_fields() == first and calls == []


@pytest.mark.parametrize("failure", ["no_git", "timeout"])
def test_code_fields_never_fail_without_git(fresh_cache, monkeypatch, failure):
    def run(*args, **kwargs):
        if failure == "no_git":
            raise FileNotFoundError(2, "No such file or directory", "git")
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    monkeypatch.setattr(_store.subprocess, "run", run)
    fields = _store.code_fields()
    assert fields["git_commit"] is None and fields["git_dirty"] is None
    assert fields["jax"] == jax.__version__


@pytest.mark.subprocess  # (starts a process: git, or one that exits)
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_is_that_of_the_checkout_holding_the_package(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                       capture_output=True)

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
        "--allow-empty", "-m", "empty")
    # Untracked (say, a virtualenv inside a project): not that repo's code.
    assert _store._git_state(str(pkg)) == (None, None)
    git("add", "pkg")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "pkg")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    assert _store._git_state(str(pkg)) == (head, False)
    (tmp_path / "elsewhere.txt").write_text("results\n")  # outside the package
    assert _store._git_state(str(pkg)) == (head, False)
    (pkg / "__init__.py").write_text("x = 2\n")
    assert _store._git_state(str(pkg)) == (head, True)
    not_a_repo = tmp_path.parent / (tmp_path.name + "_plain")
    not_a_repo.mkdir()
    assert _store._git_state(str(not_a_repo)) == (None, None)


def test_every_record_of_a_group_carries_its_code(tmp_path):
    c = tiny_config(num_rounds=2, eval_every=2, num_workers=3, num_byzantine=0,
                    attack="none", aggregator="mean", optimizer="dsgd",
                    clip_norm=0.0)
    runs = str(tmp_path / "runs")
    records = sim.run_group(c, seeds=[0, 1], data=make_data(3), model=TinyMLP(),
                            progress=False, outdir=runs)
    for rec in records:
        assert rec["code"] == _store.code_fields()
        on_disk = _store.read_record(os.path.join(runs, rec["run_id"] + ".json"))
        assert on_disk["code"] == rec["code"]


def _record(**extra):
    rec = {"run_id": "abc", "config": {"aggregator": "mean"}, "seed": 0,
           "hparams": {"beta": 0.9}, "metrics": {"round": [2]},
           "final_accuracy": 0.5, "max_accuracy": 0.5, "diverged": False,
           "diverged_round": -1}
    rec.update(extra)
    return rec


OTHER = {"byzjax": "0.0.1", "git_commit": "0" * 40, "git_dirty": True,
         "jax": "0.4.1", "jaxlib": "0.4.1", "device_kind": "TPU v3"}


@pytest.mark.parametrize("code", [None, OTHER], ids=["no_code", "other_version"])
def test_records_of_other_versions_load(tmp_path, code):
    path = tmp_path / "abc.json"
    rec = _record() if code is None else _record(code=code)
    _store.write_record(str(path), rec)
    assert _store.read_record(str(path)).get("code") == code
    assert list(_store.load_records(str(tmp_path))) == ["abc"]


def test_the_code_field_is_part_of_the_checked_content(tmp_path):
    path = tmp_path / "abc.json"
    _store.write_record(str(path), _record(code=OTHER))
    rec = json.loads(path.read_text())
    rec["code"]["git_dirty"] = False  # an edit that hides where it came from
    path.write_text(json.dumps(rec))
    with pytest.warns(_store.BadRecordWarning, match="abc.json.*checksum mismatch"
                      ) as caught:
        assert _store.load_records(str(tmp_path)) == {}
    assert "\n" not in str(caught[0].message)
