"""Turning a results folder into the sources' tables, figures, a web page and
tidy data.

``byzjax report DIR`` reads every ``DIR/runs/*.json`` record and writes

* ``table_best.md``: best aggregator per (optimizer x attack) cell, as
  Fabris (2023, MSc thesis, Chalmers) prints Tables 4.1-4.4 (``0.777 CWTM``),
  the metric averaged over seeds, each seed's value beside it;
* ``table_full.md``: every (optimizer, attack, aggregator) cell, mean +- std
  over seeds, each seed's value, with the number of diverged runs;
* ``heatmaps.png``: accuracy per aggregator x attack, one panel per optimizer;
* ``curves.png``: test-accuracy curves, rows = attacks, columns = optimizers,
  one line per aggregator (the thesis's Figures 4.3-4.6);
* ``run_figures/<run_id>.png``: per run, the accuracy curve above the
  diagnostics that explain it (:func:`plot_run_diagnostics`).

With ``--html`` it also writes ``DIR/report/index.html``, a static page (no
server, nothing fetched when it is viewed) with the sweep's configuration, the
best-per-cell table beside the published one (when the sweep declares
``published`` values), the full table (sortable, filterable, paginated),
heatmaps, per-cell curves with the round diagnostics, box plots over seeds and
the time of each compiled program (:func:`write_html`; needs Jinja2, the
``report`` extra).

With ``--csv`` it writes ``DIR/runs.csv`` (and ``DIR/runs.parquet`` when
pyarrow is installed): one row per (run, evaluation), every config field a
column (:func:`tidy_rows`, :func:`write_tidy`); :func:`load` returns the same
table as a ``pandas.DataFrame``.

With ``--view byzfl`` it also writes ``table_byzfl.md`` and
``byzfl_heatmaps.png`` (and ``byzfl.csv`` with ``--csv``, a section of the
page with ``--html``): ByzFL's evaluation, each rule's hyper-parameters
chosen against its worst attack, per number of Byzantine workers and data
distribution (:func:`worst_case_cells`).

The names in figures and pages are the ones readers know
(:func:`display_name`: ``alie`` is "A Little Is Enough", ``resam``
"momentum at the workers (RESAM)").

Runs are averaged only over seeds of one configuration (:func:`config_fields`:
``record["config"]`` with its ``hparams``, missing fields at their defaults,
fields that cannot change results left out): a cell holding several
configurations is one row per configuration, labelled by the fields that
differ (``CWTM (learning_rate=0.02)``), or a marked conflict where a layout
has room for one value (the best-aggregator table, heatmaps). Under each
table: the code versions that made its runs (``record["code"]``) and a
warning when they mix versions or are unknown.

The package has one module per concern: ``_cells`` (loading, configurations,
seed statistics, code versions, names and order), ``_tables`` (markdown),
``_figures`` (matplotlib), ``_tidy`` (CSV / Parquet / pandas), ``_html``
(the Jinja2 page), ``_json`` (``--json`` cells), ``_momentum`` (El Mhamdi et
al., 2021), ``_worst_case`` (ByzFL's evaluation) and ``_write``
(``write_report``); every public name is here.
"""

from __future__ import annotations

from byzjax.report._cells import AXES as AXES
from byzjax.report._cells import CODE_FIELDS as CODE_FIELDS
from byzjax.report._cells import CURVE_METRICS as CURVE_METRICS
from byzjax.report._cells import METRIC_NAMES as METRIC_NAMES
from byzjax.report._cells import NAMES as NAMES
from byzjax.report._cells import NEUTRAL_FIELDS as NEUTRAL_FIELDS
from byzjax.report._cells import SHORT as SHORT
from byzjax.report._cells import ConfigGroup as ConfigGroup
from byzjax.report._cells import axis_order as axis_order
from byzjax.report._cells import cell_stats as cell_stats
from byzjax.report._cells import code_lines as code_lines
from byzjax.report._cells import code_versions as code_versions
from byzjax.report._cells import code_warning as code_warning
from byzjax.report._cells import config_fields as config_fields
from byzjax.report._cells import config_groups as config_groups
from byzjax.report._cells import config_id as config_id
from byzjax.report._cells import display_name as display_name
from byzjax.report._cells import load_runs as load_runs
from byzjax.report._cells import mean_of_rounded as mean_of_rounded
from byzjax.report._cells import per_seed_text as per_seed_text
from byzjax.report._cells import seed_stats as seed_stats
from byzjax.report._cells import short_name as short_name
from byzjax.report._cells import show_value as show_value
from byzjax.report._cells import split_configs as split_configs
from byzjax.report._figures import CMAP as CMAP
from byzjax.report._figures import LINE_COLORS as LINE_COLORS
from byzjax.report._figures import plot_boxplots as plot_boxplots
from byzjax.report._figures import plot_cell_curves as plot_cell_curves
from byzjax.report._figures import plot_curves as plot_curves
from byzjax.report._figures import plot_heatmaps as plot_heatmaps
from byzjax.report._figures import plot_run_diagnostics as plot_run_diagnostics
from byzjax.report._figures import plot_times as plot_times
from byzjax.report._figures import write_run_figures as write_run_figures
from byzjax.report._html import require_jinja2 as require_jinja2
from byzjax.report._html import write_html as write_html
from byzjax.report._json import JSON_AXES as JSON_AXES
from byzjax.report._json import cells_json as cells_json
from byzjax.report._json import json_document as json_document
from byzjax.report._json import read_json_cells as read_json_cells
from byzjax.report._json import write_json as write_json
from byzjax.report._json import write_json_cells as write_json_cells
from byzjax.report._momentum import momentum_boxes as momentum_boxes
from byzjax.report._momentum import momentum_gains as momentum_gains
from byzjax.report._momentum import plot_momentum_boxes as plot_momentum_boxes
from byzjax.report._tables import AGGREGATOR_FIELDS as AGGREGATOR_FIELDS
from byzjax.report._tables import best_cells as best_cells
from byzjax.report._tables import best_table as best_table
from byzjax.report._tables import full_table as full_table
from byzjax.report._tables import node_spread_lines as node_spread_lines
from byzjax.report._tidy import load as load
from byzjax.report._tidy import tidy_rows as tidy_rows
from byzjax.report._tidy import write_tidy as write_tidy
from byzjax.report._worst_case import ATTACK_FIELDS as ATTACK_FIELDS
from byzjax.report._worst_case import PANEL_FIELDS as PANEL_FIELDS
from byzjax.report._worst_case import RULE_FIELDS as RULE_FIELDS
from byzjax.report._worst_case import SEED_FIELDS as SEED_FIELDS
from byzjax.report._worst_case import check_fixed as check_fixed
from byzjax.report._worst_case import (
    plot_worst_case_heatmaps as plot_worst_case_heatmaps,
)
from byzjax.report._worst_case import worst_case_cells as worst_case_cells
from byzjax.report._worst_case import worst_case_rows as worst_case_rows
from byzjax.report._worst_case import worst_case_table as worst_case_table
from byzjax.report._worst_case import write_worst_case as write_worst_case
from byzjax.report._worst_case import write_worst_case_csv as write_worst_case_csv
from byzjax.report._write import write_report as write_report

__all__ = [
    "SHORT",
    "axis_order",
    "short_name",
    "NAMES",
    "METRIC_NAMES",
    "CURVE_METRICS",
    "AXES",
    "OPT_ORDER",
    "ATTACK_ORDER",
    "AGG_ORDER",
    "NEUTRAL_FIELDS",
    "CODE_FIELDS",
    "ConfigGroup",
    "display_name",
    "load_runs",
    "config_fields",
    "config_id",
    "split_configs",
    "config_groups",
    "mean_of_rounded",
    "seed_stats",
    "show_value",
    "cell_stats",
    "per_seed_text",
    "code_versions",
    "code_warning",
    "code_lines",
    "AGGREGATOR_FIELDS",
    "best_cells",
    "best_table",
    "full_table",
    "node_spread_lines",
    "CMAP",
    "LINE_COLORS",
    "plot_heatmaps",
    "plot_curves",
    "plot_cell_curves",
    "plot_boxplots",
    "plot_times",
    "plot_run_diagnostics",
    "write_run_figures",
    "tidy_rows",
    "write_tidy",
    "load",
    "require_jinja2",
    "write_html",
    "JSON_AXES",
    "cells_json",
    "json_document",
    "write_json",
    "write_json_cells",
    "read_json_cells",
    "momentum_boxes",
    "momentum_gains",
    "plot_momentum_boxes",
    "RULE_FIELDS",
    "ATTACK_FIELDS",
    "SEED_FIELDS",
    "PANEL_FIELDS",
    "check_fixed",
    "worst_case_cells",
    "worst_case_table",
    "worst_case_rows",
    "write_worst_case_csv",
    "plot_worst_case_heatmaps",
    "write_worst_case",
    "write_report",
]


def __getattr__(name: str):
    # The report's orders, read live from the registries.
    axes = {"OPT_ORDER": "optimizer", "ATTACK_ORDER": "attack",
            "AGG_ORDER": "aggregator"}
    if name in axes:
        return axis_order(axes[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
