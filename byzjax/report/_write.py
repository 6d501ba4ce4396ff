"""``byzjax report DIR``: the tables and figures of a results folder."""

from __future__ import annotations

import os
from typing import Sequence

from byzjax.report._cells import runs_or_error
from byzjax.report._figures import plot_curves, plot_heatmaps, write_run_figures
from byzjax.report._tables import best_table, full_table
from byzjax.report._worst_case import PANEL_FIELDS, check_fixed, write_worst_case
from byzjax.sim import ConfigError

#: The views ``write_report(view=...)`` adds.
VIEWS = ("byzfl",)


def write_report(outdir: str, *, metric: str = "final_accuracy",
                 figures: bool = True, view: str | None = None,
                 fixed: Sequence[str] = PANEL_FIELDS) -> dict[str, str]:
    """Writes the tables (``table_best.md``, ``table_full.md``) and, with
    ``figures``, the figures (``heatmaps.png``, ``curves.png``,
    ``run_figures/``) of ``outdir``; returns their paths.

    ``view="byzfl"`` adds ByzFL's evaluation (:func:`byzjax.report.write_worst_case`:
    ``table_byzfl.md``, ``byzfl.csv`` and, with ``figures``,
    ``byzfl_heatmaps.png``), with panels per value of the ``fixed`` fields.

    Raises:
      ConfigError: ``outdir`` holds no run records.
    """
    if view is not None and view not in VIEWS:
        raise ConfigError(f"view {view!r}: use one of {', '.join(VIEWS)}")
    check_fixed(fixed)
    runs = runs_or_error(outdir)
    paths = {"best": os.path.join(outdir, "table_best.md"),
             "full": os.path.join(outdir, "table_full.md")}
    with open(paths["best"], "w") as fh:
        fh.write(best_table(runs, metric=metric) + "\n")
    with open(paths["full"], "w") as fh:
        fh.write(full_table(runs, metric=metric) + "\n")
    if figures:
        paths["heatmaps"] = os.path.join(outdir, "heatmaps.png")
        paths["curves"] = os.path.join(outdir, "curves.png")
        plot_heatmaps(runs, paths["heatmaps"], metric=metric)
        plot_curves(runs, paths["curves"])
        paths["runs"] = os.path.join(outdir, "run_figures")
        write_run_figures(runs, paths["runs"])
    if view == "byzfl":
        paths.update(write_worst_case(outdir, runs, fixed=fixed, figures=figures,
                                      csv_file=True))
    return paths
