"""A sweep's ``published`` values and ``byzjax report --json`` on a synthetic folder."""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest

from byzjax import cli, report
from byzjax.sim import ConfigError, _files, _grid, _store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PUBLISHED = {"source": "Fabris (2023), Table 4.1", "metric": "final_accuracy",
             "cells": [
                 {"optimizer": "dsgd", "attack": "alie",
                  "aggregator": "trimmed_mean", "value": 0.3825},
                 {"optimizer": "resam", "attack": "alie",
                  "aggregator": "trimmed_mean", "value": 0.777},
                 {"optimizer": "mra", "attack": "foe",
                  "aggregator": "trimmed_mean", "value": 0.918},
             ]}


def _sweep_dict(published=PUBLISHED):
    return {"grid": {"optimizer": ["dsgd", "resam"], "attack": ["alie"],
                     "aggregator": ["mean", "trimmed_mean"]},
            "published": published}


def _rec(i, optimizer, aggregator, seed, acc, *, diverged=False, model="mlp",
         **config):
    cfg = {"optimizer": optimizer, "attack": "alie", "aggregator": aggregator,
           "model": model, "num_rounds": 500, "learning_rate": 0.75, **config}
    return {"run_id": f"r{i}", "config": cfg, "seed": seed,
            "hparams": {"beta": 0.99}, "final_accuracy": acc,
            "max_accuracy": 0.99, "diverged": diverged,
            "diverged_round": 3 if diverged else -1,
            "metrics": {"round": [250, 500], "test_accuracy": [0.5, acc]}}


def _folder(tmp_path, records):
    runs = tmp_path / "runs"
    runs.mkdir(parents=True)
    for rec in records:
        _store.write_record(str(runs / f"{rec['run_id']}.json"), rec)
    return str(tmp_path)


RECORDS = [
    _rec(0, "dsgd", "trimmed_mean", 0, 0.10),
    _rec(1, "dsgd", "trimmed_mean", 1, 0.30),
    _rec(2, "resam", "trimmed_mean", 0, 0.94),
    _rec(3, "resam", "trimmed_mean", 1, 0.92),
    _rec(4, "resam", "mean", 0, float("nan"), diverged=True),
    _rec(5, "resam", "mean", 1, 0.50),
]


def test_published_is_checked():
    _grid.check_published(_sweep_dict())
    bad = [
        ({"source": "", "metric": "final_accuracy", "cells": [{"attack": "alie",
                                                              "value": 1.0}]},
         "source"),
        (dict(PUBLISHED, metric="accuracy"), "metric"),
        (dict(PUBLISHED, cells=[]), "cells"),
        (dict(PUBLISHED, cells=[{"attack": "alie"}]), "value"),
        (dict(PUBLISHED, cells=[{"attack": "alie", "value": float("nan")}]), "value"),
        (dict(PUBLISHED, cells=[{"value": 0.5}]), "names no grid axis"),
        (dict(PUBLISHED, cells=[{"atack": "alie", "value": 0.5}]), "attack"),
        (dict(PUBLISHED, cells=[{"attack": "alie", "value": 0.5}] * 2), "repeats"),
        (dict(PUBLISHED, table="4.1"), "unknown key"),
    ]
    for published, message in bad:
        with pytest.raises(ConfigError, match=message):
            _grid.check_published(_sweep_dict(published))


def test_cells_json_matches_a_numpy_summary(tmp_path):
    outdir = _folder(tmp_path, RECORDS)
    path = os.path.join(outdir, "cells.json")
    cells = report.write_json(outdir, path, published=PUBLISHED)
    with open(path) as fh:
        doc = json.load(fh)
    assert doc["cells"] == cells == report.read_json_cells(path)
    assert doc["code"] == report.code_versions(RECORDS)
    by = {(c["optimizer"], c["aggregator"], c["attack"]): c for c in cells}
    # Three measured cells, and the declared cell nothing measured (mra, foe).
    assert len(cells) == 4
    c = by[("resam", "trimmed_mean", "alie")]
    assert c["seeds"] == [0, 1] and c["model"] == "mlp" and c["rounds"] == 500
    np.testing.assert_allclose([c["mean"], c["std"]],
                               [np.mean([0.94, 0.92]), np.std([0.94, 0.92])])
    assert c["published"] == 0.777 and c["diverged"] == 0
    d = by[("resam", "mean", "alie")]   # the NaN run counts as 0
    np.testing.assert_allclose(d["mean"], 0.25)
    assert d["diverged"] == 1 and d["published"] is None
    assert by[("dsgd", "trimmed_mean", "alie")]["published"] == 0.3825
    pending = by[("mra", "trimmed_mean", "foe")]
    assert pending["seeds"] == [] and pending["mean"] is None
    assert pending["published"] == 0.918
    assert set(c) == {"optimizer", "attack", "aggregator", "model", "rounds", "seeds",
                      "mean", "std", "diverged", "published", "config_id",
                      "per_seed", "gap", "mean_of_rounded", "gap_of_rounded",
                      "code", "code_warning"}


def test_cells_json_separates_cells_by_the_fields_that_vary():
    """A momentum grid: num_byzantine and nesterov split cells of one rule."""
    records = [_rec(i, "resam", "trimmed_mean", i % 2, 0.5 + 0.1 * i,
                    num_byzantine=[12, 24][i // 4], nesterov=bool(i // 2 % 2))
               for i in range(8)]
    cells = report.cells_json(records)
    assert len(cells) == 4
    for c in cells:
        want = [0.5 + 0.1 * i for i in range(8)
                if [12, 24][i // 4] == c["num_byzantine"]
                and bool(i // 2 % 2) == c["nesterov"]]
        np.testing.assert_allclose(c["mean"], np.mean(want))
        assert c["seeds"] == [0, 1] and c["published"] is None


def test_report_json_cli_reads_the_sweep_file(tmp_path, capsys):
    outdir = _folder(tmp_path / "res", RECORDS)
    sweep = tmp_path / "s.py"
    sweep.write_text(textwrap.dedent(f"""
        from byzjax.sim import get_config

        def get_sweep():
            return {{"base": get_config(), "grid": {_sweep_dict()["grid"]!r},
                     "published": {PUBLISHED!r}}}
        """))
    out = str(tmp_path / "cells.json")
    assert cli.main(["report", outdir, "--json", out, "--sweep",
                     str(sweep)]) == 0
    assert "with a published value" in capsys.readouterr().out
    cells = report.read_json_cells(out)
    assert sum(c["published"] is not None for c in cells) == 3
    # Without --sweep, OUTDIR/sweep.json (written by byzjax sweep) is used.
    with open(os.path.join(outdir, "sweep.json"), "w") as fh:
        json.dump({"published": PUBLISHED}, fh)
    assert cli.main(["report", outdir, "--json", out]) == 0
    assert report.read_json_cells(out) == cells


def test_thesis_sweeps_declare_valid_published_values():
    for name, count in (("table_4_1", 28), ("table_4_2", 24)):
        sweep = _files.load_sweep(os.path.join(ROOT, "experiments", f"{name}.py"))
        published = _grid.published_of(sweep)
        assert len(published["cells"]) == count
        grid = dict(sweep.grid)
        for cell in published["cells"]:
            for k, v in cell.items():
                if k != "value":
                    assert v in grid[k], (name, cell)
