"""Tidy data: one row per (run, evaluation) as CSV, Parquet (pyarrow) or a
pandas DataFrame, the format pandas and seaborn expect.

Every row names its configuration (``config_id``: the configuration without
the seed, :func:`byzjax.report.config_id`), so rows of different
configurations that share optimizer, attack and aggregator are never mistaken
for seeds of one, and the code that made it (``code.*``).
"""

from __future__ import annotations

import csv
import os
from typing import Iterable

from byzjax.report._cells import (
    CODE_FIELDS,
    _flatten,
    _num,
    config_id,
    runs_or_error,
)
from byzjax.sim import ConfigError

_SUMMARY = ("final_accuracy", "max_accuracy", "diverged", "diverged_round",
            "group_wall_time_s", "group_first_chunk_s", "group_size")
_CODE_COLS = tuple("code." + k for k in CODE_FIELDS)


def tidy_rows(runs: Iterable[dict]) -> tuple[list[str], list[dict]]:
    """One row per (run, evaluation), the format pandas and seaborn expect.

    Columns: ``run_id``, ``seed``, ``config_id`` (the configuration without
    the seed: group by it, never by optimizer / attack / aggregator alone,
    to average seeds), every config field (nested ones dotted:
    ``aggregator_kwargs.radius``; the run's own float hyper-parameters
    replace the group's), the run's summary (``final_accuracy``,
    ``max_accuracy``, ``diverged``, ``diverged_round``, times), the code that
    made it (``code.byzjax``, ``code.git_commit``, ``code.git_dirty``,
    ``code.jax``, ``code.jaxlib``, ``code.device_kind``; None for records
    made before they were recorded), then ``eval`` (0, 1, ...), ``round`` and
    every per-evaluation metric. A value a record does not have is ``None``.

    Example:
      >>> run = {"run_id": "a", "seed": 0, "config": {"beta": 0.9, "attack":
      ...        "alie"}, "hparams": {"beta": 0.5}, "final_accuracy": 0.7,
      ...        "metrics": {"round": [10, 20], "test_accuracy": [0.6, 0.7]}}
      >>> cols, rows = tidy_rows([run])
      >>> [(r["beta"], r["round"], r["test_accuracy"]) for r in rows]
      [(0.5, 10, 0.6), (0.5, 20, 0.7)]
      >>> other = dict(run, run_id="b", hparams={"beta": 0.6})
      >>> rows = tidy_rows([run, dict(run, run_id="c", seed=1), other])[1]
      >>> len({r["config_id"] for r in rows})  # seeds share it, beta 0.6 not
      2
    """
    rows, config_cols, metric_cols = [], {}, {}
    for r in sorted(runs, key=lambda r: (str(r.get("run_id")), _num(r.get("seed")))):
        cfg = _flatten(dict(r.get("config") or {}))
        cfg.update(_flatten(dict(r.get("hparams") or {})))
        config_cols.update(dict.fromkeys(cfg))
        metrics = _split_vectors(r.get("metrics") or {})
        names = [k for k in metrics if k != "round" and k not in _SUMMARY]
        metric_cols.update(dict.fromkeys(names))
        rounds = list(metrics.get("round", []))
        n = max([len(rounds)] + [len(v) for v in metrics.values()
                                 if isinstance(v, list)])
        base = {"run_id": r.get("run_id"), "seed": r.get("seed"),
                "config_id": config_id(r), **cfg}
        base.update({k: r.get(k) for k in _SUMMARY})
        code = r.get("code") or {}
        base.update({c: code.get(k) for k, c in zip(CODE_FIELDS, _CODE_COLS)})
        for e in range(n):
            row = dict(base, eval=e, round=rounds[e] if e < len(rounds) else None)
            for k in names:
                v = metrics[k]
                row[k] = v[e] if isinstance(v, list) and e < len(v) else None
            rows.append(row)
    cols = (["run_id", "seed", "config_id"]
            + sorted(c for c in config_cols if c not in ("seed", "config_id"))
            + list(_SUMMARY) + list(_CODE_COLS) + ["eval", "round"]
            + sorted(metric_cols))
    return cols, [{c: row.get(c) for c in cols} for row in rows]


def _split_vectors(metrics: dict) -> dict:
    """``metrics`` with each vector-valued curve (e.g. ``test_class_accuracy``,
    one list per evaluation) split into one scalar curve per entry,
    ``name[i]``, so that every cell of the table is a number.

    Example:
      >>> _split_vectors({"a": [1, 2], "c": [[0.5, 1.0], [0.75, None]]})
      {'a': [1, 2], 'c[0]': [0.5, 0.75], 'c[1]': [1.0, None]}
    """
    out = {}
    for k, v in metrics.items():
        if isinstance(v, list) and any(isinstance(e, list) for e in v):
            width = max(len(e) for e in v if isinstance(e, list))
            for i in range(width):
                out[f"{k}[{i}]"] = [e[i] if isinstance(e, list) and i < len(e)
                                    else None for e in v]
        else:
            out[k] = v
    return out


def write_tidy(outdir: str, *, path: str | None = None,
               parquet: bool | None = None) -> dict[str, str]:
    """Writes :func:`tidy_rows` of ``outdir`` as ``runs.csv`` (and
    ``runs.parquet`` when pyarrow is installed, or ``parquet=True``, which
    then requires it); returns the paths written.

    Raises:
      ConfigError: no records, or ``parquet=True`` without pyarrow.
    """
    runs = runs_or_error(outdir)
    cols, rows = tidy_rows(runs)
    path = path or os.path.join(outdir, "runs.csv")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    out = {"csv": path}
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        if parquet:
            raise ConfigError("Parquet output needs pyarrow: pip install "
                              "'byzjax[report]' (or pip install pyarrow)") from None
        return out
    if parquet is not False:
        table = pyarrow.Table.from_pylist(rows).select(cols)
        out["parquet"] = os.path.splitext(path)[0] + ".parquet"
        pyarrow.parquet.write_table(table, out["parquet"])
    return out


def load(outdir: str):
    """The results of ``outdir`` as a ``pandas.DataFrame``, one row per
    (run, evaluation), columns as :func:`tidy_rows` (needs pandas: the
    ``report`` extra).

    Example (a seaborn-style summary of a sweep)::

        df = byzjax.report.load("results/table_4_1")
        last = df[df["eval"] == df.groupby("run_id")["eval"].transform("max")]
        last.groupby(["optimizer", "attack", "aggregator"])["test_accuracy"].mean()
    """
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("byzjax.report.load needs pandas: pip install "
                          "'byzjax[report]' (or pip install pandas)") from None
    cols, rows = tidy_rows(runs_or_error(outdir))
    return pd.DataFrame(rows, columns=cols)


