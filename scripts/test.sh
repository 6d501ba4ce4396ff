#!/usr/bin/env bash
# Sets up a virtual environment (if needed) and runs the test suite on CPU.
# Usage: bash scripts/test.sh [--fast] [extra pytest args]
#   (no flag)  everything: what CI runs.
#   --fast     the edit-test loop: leaves out the tests marked slow, subprocess,
#              multidevice or browser (pyproject.toml lists the markers), stops at
#              the first failure, and skips the install when the venv has byzjax.
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=0
if [ "${1:-}" = "--fast" ]; then
  FAST=1
  shift
fi
VENV="${BYZJAX_VENV:-.venv}"
if [ "$FAST" = 1 ] && "$VENV/bin/python" -c "import byzjax, pytest, xdist" 2>/dev/null; then
  :  # already set up
else
  EXTRAS="${EXTRAS:-[test,report,tensorboard,browser]}" source scripts/_venv.sh
fi
export JAX_PLATFORMS=cpu
if [ "$FAST" = 1 ]; then
  exec "$VENV/bin/python" -m pytest -q -n 2 -x --durations=15 \
    -m "not slow and not subprocess and not multidevice and not browser" "$@"
fi
exec "$VENV/bin/python" -m pytest -q -n 2 --dist worksteal --durations=15 "$@"
