# Sourced by scripts/*.sh: creates $VENV (default .venv) if needed and installs
# the project into it with the extras in $EXTRAS (e.g. "[test]").
VENV="${BYZJAX_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e ".${EXTRAS:-}"
export BYZJAX_VENV="$VENV"
