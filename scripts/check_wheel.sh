#!/usr/bin/env bash
# Builds byzjax's wheel, installs it into a fresh virtual environment (no
# checkout on the path) and runs what a user runs first: the README's optax
# example and `byzjax report --html` on a small results folder (the page's
# templates must ship as package data).
#
#   bash scripts/check_wheel.sh            (uses $PYTHON or python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip install -q build >/dev/null
# (built from a copy of the tracked files, so no build/ folder is left here)
mkdir "$WORK/src"
git ls-files -z | xargs -0 cp --parents -t "$WORK/src"
"$PY" -m build --wheel --outdir "$WORK/dist" "$WORK/src" >/dev/null 2>&1
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "$WORK"/dist/byzjax-*.whl >/dev/null 2>&1
cd "$WORK"  # away from the checkout: the installed package only
export JAX_PLATFORMS=cpu
"$WORK/venv/bin/python" - <<'PYEOF'
import byzjax, os
assert "site-packages" in byzjax.__file__, byzjax.__file__
import jax, jax.numpy as jnp, optax
params = {"w": jnp.zeros(3)}
loss = lambda p, x, y: jnp.mean((x @ p["w"] - y) ** 2)
xs = jax.random.normal(jax.random.key(0), (7, 16, 3))
ys = xs @ jnp.array([1.0, -2.0, 0.5])
tx = optax.chain(byzjax.optim.resam(num_workers=7, num_byzantine=2,
                                     aggregator="trimmed_mean", beta=0.9),
                 optax.sgd(0.1))
state = tx.init(params)
for _ in range(100):
    grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, xs, ys)
    grads["w"] = grads["w"].at[5:].set(1e3)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
got = [round(float(v), 2) for v in params["w"]]
assert max(abs(a - b) for a, b in zip(got, [1.0, -2.0, 0.5])) < 0.05, got
print("optax example:", got)
PYEOF
"$WORK/venv/bin/byzjax" train --dataset synthetic --num-workers 7 --num-byzantine 2 \
  --rounds 4 --eval-every 2 --batch-size 5 --outdir "$WORK/out" --quiet --no-plot >/dev/null
"$WORK/venv/bin/byzjax" report "$WORK/out" --html --no-plot >/dev/null
test -s "$WORK/out/report/index.html"
echo "wheel OK: $(ls "$WORK"/dist), report page $(wc -c < "$WORK/out/report/index.html") bytes"
