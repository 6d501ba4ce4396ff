#!/usr/bin/env bash
# Sets up a virtual environment (if needed) and runs the whole test suite on CPU.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BYZJAX_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e ".[test]"
export JAX_PLATFORMS=cpu
exec "$VENV/bin/python" -m pytest -q -n 2 "$@"
