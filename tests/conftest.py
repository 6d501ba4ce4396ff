"""Test configuration: CPU only, float32, hypothesis profile sized for CI, XLA's
backend optimisation off, and the markers of tests whose files do not mark them
themselves.

The tests compile hundreds of small programs and run each briefly, so most of
their time is XLA:CPU's code generation: ``--xla_backend_optimization_level=0``
(the same HLO, less LLVM optimisation of the machine code) cuts the suite's CPU
time by about 40%, and ``--xla_cpu_use_fusion_emitters=false`` (XLA:CPU's
classic elemental emitters for fused loops instead of its newer MLIR fusion
emitters: the same fusions, emitted by older code) about half of what is left;
every test passes either way (checked). The second flag is used only when this
jaxlib knows it (XLA aborts on an unknown flag; one ``python -c`` asks, once
per session). Benchmarks and real runs keep XLA's defaults;
``BYZJAX_TEST_XLA_OPTIMIZE=1`` tests with them.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _xla_knows(flag: str) -> bool:
    """Whether this jaxlib's XLA accepts ``flag`` (it aborts on unknown ones)."""
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
    try:
        return subprocess.run([sys.executable, "-c", "import jax; jax.devices()"],
                              env=env, capture_output=True, timeout=120
                              ).returncode == 0
    except subprocess.TimeoutExpired:
        return False


if os.environ.get("BYZJAX_TEST_XLA_OPTIMIZE", "") in ("", "0"):
    # Asked once per session: pytest-xdist's workers and the tests' child
    # processes inherit the answer with the environment.
    if "BYZJAX_TEST_XLA_FLAGS" not in os.environ:
        _fusion = "--xla_cpu_use_fusion_emitters=false"
        os.environ["BYZJAX_TEST_XLA_FLAGS"] = " ".join(
            ["--xla_backend_optimization_level=0"]
            + ([_fusion] if _xla_knows(_fusion) else []))
    _flags = os.environ.get("XLA_FLAGS", "").split()
    for _flag in os.environ["BYZJAX_TEST_XLA_FLAGS"].split():
        if not any(f.split("=")[0] == _flag.split("=")[0] for f in _flags):
            _flags.append(_flag)
    os.environ["XLA_FLAGS"] = " ".join(_flags)

# One persistent XLA compilation cache for the whole test session, shared by the
# pytest-xdist workers and the subprocesses the tests start (they inherit the
# environment): many tests compile the same small programs (a sweep run again
# after a kill, a reference run in this process and the same run in a child),
# and a cached executable is the same machine code, so results do not change.
# A fresh folder per session (set by the controller before the workers start),
# removed at exit; BYZJAX_TEST_NO_COMPILATION_CACHE=1 turns it off.
if (os.environ.get("BYZJAX_TEST_NO_COMPILATION_CACHE", "") in ("", "0")
        and "JAX_COMPILATION_CACHE_DIR" not in os.environ):
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="byzjax-test-jit-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: test (file::name) -> markers added at collection (``scripts/test.sh --fast``
#: leaves out slow, subprocess, multidevice and browser tests).
EXTRA_MARKERS = {
    "test_report_web.py::test_report_of_a_real_sweep_in_headless_chromium":
        ("browser", "slow"),
}


#: Node ids of tests measured slow (``tests/slow_tests.txt``): marked ``slow``.
with open(os.path.join(os.path.dirname(__file__), "slow_tests.txt")) as _fh:
    SLOW_TESTS = frozenset(line.strip() for line in _fh
                           if line.strip() and not line.startswith("#"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        name = f"{os.path.basename(str(item.fspath))}::{item.originalname}" \
            if hasattr(item, "originalname") else None
        for marker in EXTRA_MARKERS.get(name, ()):
            item.add_marker(getattr(pytest.mark, marker))
