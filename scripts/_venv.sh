# Sourced by scripts/*.sh: creates $VENV (default .venv) if needed and installs
# the project into it with the extras in $EXTRAS (e.g. "[test]"). When
# nvidia-smi works, JAX's CUDA wheels are added (the cuda13 extra if the driver
# supports CUDA 13, else cuda12); BYZJAX_ACCELERATOR=cpu|cuda12|cuda13|tpu
# overrides the choice.
VENV="${BYZJAX_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
ACCEL="${BYZJAX_ACCELERATOR:-}"
if [ -z "$ACCEL" ]; then
  ACCEL=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    CUDA_MAJOR="$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n1)"
    if [ "${CUDA_MAJOR:-0}" -ge 13 ] 2>/dev/null; then ACCEL=cuda13; else ACCEL=cuda12; fi
  fi
fi
EXTRA_LIST="${EXTRAS:-}"
if [ "$ACCEL" != "cpu" ]; then
  EXTRA_LIST="${EXTRA_LIST#[}"; EXTRA_LIST="${EXTRA_LIST%]}"
  EXTRA_LIST="[${EXTRA_LIST:+$EXTRA_LIST,}$ACCEL]"
  echo "_venv.sh: installing byzjax$EXTRA_LIST (accelerator: $ACCEL)" >&2
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e ".${EXTRA_LIST}"
export BYZJAX_VENV="$VENV" BYZJAX_ACCELERATOR="$ACCEL"
