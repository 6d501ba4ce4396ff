"""``byzjax report DIR``: the tables and figures of a results folder."""

from __future__ import annotations

import os

from byzjax.report._cells import runs_or_error
from byzjax.report._figures import plot_curves, plot_heatmaps, write_run_figures
from byzjax.report._tables import best_table, full_table


def write_report(outdir: str, *, metric: str = "final_accuracy",
                 figures: bool = True) -> dict[str, str]:
    """Writes the tables (``table_best.md``, ``table_full.md``) and, with
    ``figures``, the figures (``heatmaps.png``, ``curves.png``,
    ``run_figures/``) of ``outdir``; returns their paths.

    Raises:
      ConfigError: ``outdir`` holds no run records.
    """
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
    return paths
