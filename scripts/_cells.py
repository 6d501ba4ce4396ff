"""Shared by the analysis table scripts: resumable JSON-lines cell files and
fast compilation of their one-off programs.

Each finished cell is one JSON line appended to the output file, so a killed
run loses at most the cell it was computing; a line cut by a kill is skipped
(that cell runs again). Import this module before ``jax``.
"""

from __future__ import annotations

import json
import os
import sys


def compile_fast_unless(flag: str = "--xla-optimize") -> None:
    """XLA backend optimisation level 0 unless ``flag`` is on the command line.

    Each cell is a new program (new shapes) whose compilation takes far longer
    than running it: the coordinate-wise rules' sorting networks are unrolled
    and differentiated, and most of the time is LLVM's optimisation of that
    code. Level 0 cuts it about threefold and gives the same estimates
    (docs/RESILIENCE.md). Must run before ``jax`` is imported.
    """
    if flag not in sys.argv:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_backend_optimization_level=0").strip()


def read_cells(path: str, key) -> dict:
    """``{key(row): row}`` of the finished cells in ``path`` (empty if none).

    A later line with the same key wins (two processes may repeat a cell).
    """
    cells = {}
    if not os.path.exists(path):
        return cells
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that cell is re-run
            cells[key(row)] = row
    return cells


def append_cell(path: str, row: dict) -> None:
    """Appends one finished cell as a JSON line."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
