"""ruff (pyflakes, pycodestyle, isort rules; 88 columns) over the whole project."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


@pytest.mark.subprocess
@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff not installed (pip install -e '.[test]')")
def test_ruff_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "byzjax", "scripts",
                          "experiments", "tests"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout[-4000:]
