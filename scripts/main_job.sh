#!/usr/bin/env bash
# The main job: sets up the environment, fetches real Fashion-MNIST (offline-capable
# Debian package), and runs El Mhamdi et al.'s (ICLR 2021) question -- momentum at the server vs at the
# workers under A Little Is Enough, six robust aggregators, n = 51, f = 12 -- then
# prints the table and writes the figures to results/main_job/.
# Usage: bash scripts/main_job.sh [extra `byzjax sweep` args]
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="" source scripts/_venv.sh
bash scripts/fetch_data.sh fashion_mnist
# CPU only when no accelerator was found by _venv.sh (BYZJAX_ACCELERATOR=cpu);
# with one, JAX picks it (the run prints its backend and device count).
if [ "${BYZJAX_ACCELERATOR:-cpu}" = "cpu" ]; then
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
fi
"$VENV/bin/byzjax" sweep experiments/main_job.py --outdir results/main_job \
  --metric max_accuracy "$@"
"$VENV/bin/python" scripts/summarize_main_job.py results/main_job
