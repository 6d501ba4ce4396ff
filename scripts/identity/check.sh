#!/usr/bin/env bash
# Checks that the simulator's redesign left results bit-identical.
#
#   bash scripts/identity/check.sh [BEFORE_COMMIT]     (default 46d6a6c)
#
# Runs the eight cells of scripts/identity_cells.py (single server, GuanYu,
# LiuBei) twice: at BEFORE_COMMIT (the last commit before the simulator was
# split into layers) and at this checkout, and diffs run ids, static keys,
# final-parameter hashes and metric-curve hashes. One deliberate numerical
# change was made in between: the mean and the trimmed mean became finite
# wherever the true answer is (an overflow rescue) and return NaN rather than
# +inf for NaN input. On ordinary inputs their values are the same, but the
# extra reader of the stack changes how XLA fuses the round around them, so the
# last bits of trained parameters move. numerics_on_46d6a6c.patch applies that
# change alone to BEFORE_COMMIT, so the diff isolates the redesign; pass
# --no-patch to see the numerical change's own effect.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
BEFORE="46d6a6c"; PATCH=1
for a in "$@"; do
  case "$a" in --no-patch) PATCH=0 ;; *) BEFORE="$a" ;; esac
done
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TMP="$(mktemp -d)"
trap 'git -C "$ROOT" worktree remove --force "$TMP/before" >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
git worktree add --detach "$TMP/before" "$BEFORE" >/dev/null
if [ "$PATCH" = 1 ]; then
  git -C "$TMP/before" apply "$ROOT/scripts/identity/numerics_on_46d6a6c.patch"
fi
# Each side imports its own byzjax: the cells run `python -m byzjax.cli` from
# the working directory.
(cd "$TMP/before" && "$PY" "$ROOT/scripts/identity_cells.py" --outdir "$TMP/runs_before") > "$TMP/before.json"
"$PY" scripts/identity_cells.py --outdir "$TMP/runs_after" > "$TMP/after.json"
if diff "$TMP/before.json" "$TMP/after.json"; then
  echo "identical: $(grep -c final_params_sha256 "$TMP/after.json") runs (run ids, static keys, final parameters, metric curves)"
else
  echo "DIFFERENT (above)"; exit 1
fi
