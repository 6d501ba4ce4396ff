"""``byzjax launch`` refuses bad settings in one line, before any process starts."""

from __future__ import annotations

import subprocess

import pytest

from byzjax import cli, distributed


@pytest.fixture
def no_spawn(monkeypatch):
    def popen(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", popen)


BAD = [
    (dict(num_processes=0), "--num-processes must be an integer >= 1"),
    (dict(num_processes=-2), "--num-processes must be an integer >= 1"),
    (dict(num_processes=1.5), "--num-processes must be an integer >= 1"),
    (dict(num_processes=1, local_devices=0), "--local-devices must be an integer"),
    (dict(num_processes=2, local_devices=-1), "--local-devices must be an integer"),
    (dict(num_processes=1, timeout=0.0), "--timeout must be a number of seconds > 0"),
    (dict(num_processes=1, timeout=float("nan")), "--timeout must be a number"),
]


@pytest.mark.subprocess  # (starts a process: git, or one that exits)
@pytest.mark.parametrize("settings,message", BAD)
def test_bad_launcher_settings_fail_before_any_process(no_spawn, settings, message):
    with pytest.raises(ValueError, match=message) as e:
        distributed.launch(["true"], **settings)
    assert "\n" not in str(e.value)


def test_good_launcher_settings_pass_the_check():
    distributed.check_launch(num_processes=2, local_devices=4, timeout=30)
    distributed.check_launch(num_processes=1)


@pytest.mark.parametrize("flags,message", [
    (["--num-processes", "1", "--local-devices", "0"], "--local-devices"),
    (["--num-processes", "0"], "--num-processes"),
    (["--num-processes", "2", "--timeout", "-5"], "--timeout"),
])
def test_the_command_line_refuses_them_in_one_line(no_spawn, flags, message):
    with pytest.raises(SystemExit) as e:
        cli.main(["launch", *flags, "--", "train", "--quiet"])
    text = str(e.value.code)
    assert text.startswith("launch: ") and message in text and "\n" not in text
