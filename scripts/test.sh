#!/usr/bin/env bash
# Sets up a virtual environment (if needed) and runs the whole test suite on CPU.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-[test,report,tensorboard,browser]}" source scripts/_venv.sh
export JAX_PLATFORMS=cpu
exec "$VENV/bin/python" -m pytest -q -n 2 --durations=15 "$@"
