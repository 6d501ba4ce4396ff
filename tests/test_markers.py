"""The markers ``scripts/test.sh --fast`` filters on are registered, and every test
that starts a process carries ``subprocess`` (read from the test files' source,
following their module-level helpers), so the fast loop never spawns one."""

from __future__ import annotations

import ast
import glob
import os
import re
import tomllib

from tests import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_EXCLUDES = ("slow", "subprocess", "multidevice", "browser")
# Calls that start a process.
SPAWNS = {("subprocess", "run"), ("subprocess", "Popen"), ("subprocess", "call"),
          ("subprocess", "check_call"), ("subprocess", "check_output"),
          ("distributed", "launch"), ("os", "fork"), ("os", "system")}


def test_fast_markers_are_registered_and_selected_by_test_sh():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        options = tomllib.load(fh)["tool"]["pytest"]["ini_options"]
    registered = {m.split(":")[0] for m in options["markers"]}
    assert set(FAST_EXCLUDES) <= registered
    assert "--doctest-modules" in options["addopts"]
    assert {"tests", "byzjax", "README.md"} <= set(options["testpaths"])
    script = open(os.path.join(ROOT, "scripts", "test.sh")).read()
    (expr,) = re.findall(r'-m "([^"]+)"', script)
    assert expr == " and ".join(f"not {m}" for m in FAST_EXCLUDES)
    for markers in conftest.EXTRA_MARKERS.values():
        assert set(markers) <= registered


def _spawning_names(tree):
    """Names of the module's functions that start a process, directly or
    through another function of the module."""
    funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}

    def calls(node):
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                f = sub.func
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                    yield (f.value.id, f.attr)
                elif isinstance(f, ast.Name):
                    yield (None, f.id)

    spawning = {name for name, fn in funcs.items()
                if any(c in SPAWNS for c in calls(fn))}
    changed = True
    while changed:
        changed = False
        for name, fn in funcs.items():
            if name not in spawning and any(
                    c[0] is None and c[1] in spawning for c in calls(fn)):
                spawning.add(name)
                changed = True
    return spawning


def _marks(node, module_marks):
    out = set(module_marks)
    for d in node.decorator_list:
        text = ast.unparse(d)
        out |= set(re.findall(r"pytest\.mark\.(\w+)", text))
    return out


def test_every_test_that_starts_a_process_is_marked_subprocess():
    unmarked = []
    checked = 0
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "test_*.py"))):
        tree = ast.parse(open(path).read())
        module_marks = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                    getattr(t, "id", "") == "pytestmark" for t in node.targets):
                module_marks = set(re.findall(r"pytest\.mark\.(\w+)",
                                              ast.unparse(node.value)))
        spawning = _spawning_names(tree)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") \
                    and node.name in spawning:
                checked += 1
                extra = conftest.EXTRA_MARKERS.get(
                    f"{os.path.basename(path)}::{node.name}", ())
                if "subprocess" not in _marks(node, module_marks) | set(extra):
                    unmarked.append(f"{os.path.basename(path)}::{node.name}")
    assert checked >= 5  # the scan finds the known ones (it can fail)
    assert not unmarked, f"start a process but are not marked subprocess: {unmarked}"
