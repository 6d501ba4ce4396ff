"""The report never averages runs of different configurations; it gives each
seed's value and says which code made the runs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import report, sim
from byzjax.sim import _store

CODE = {"byzjax": "0.3.0", "git_commit": "a" * 40, "git_dirty": False,
        "jax": "0.10.2", "jaxlib": "0.10.2", "device_kind": "cpu"}


def _config(**changes):
    """A full config as a new record holds it, with ``changes``."""
    c = sim.get_config().to_dict()
    c.update(optimizer="dsgd", attack="alie", aggregator="trimmed_mean",
             num_rounds=4, eval_every=2)
    c.update(changes)
    return c


def _record(i, seed, acc, *, config=None, hparams=None, code=None, **changes):
    cfg = config if config is not None else _config(**changes)
    hp = {k: cfg[k] for k in sim.FLOAT_HPARAMS if k in cfg}
    hp.update(hparams or {})
    rec = {"run_id": f"r{i:03d}", "seed": seed, "config": cfg, "hparams": hp,
           "metrics": {"round": [2, 4], "test_accuracy": [0.1, acc]},
           "final_accuracy": acc, "max_accuracy": acc, "diverged": False,
           "diverged_round": -1}
    if code is not None:
        rec["code"] = code
    return rec


def _folder(tmp_path, records):
    (tmp_path / "runs").mkdir()
    for r in records:
        _store.write_record(str(tmp_path / "runs" / f"{r['run_id']}.json"), r)
    return str(tmp_path)


def _full_rows(table):
    return [line for line in table.splitlines() if line.startswith("| dsgd |")]


@pytest.mark.parametrize("field,values", [
    ("learning_rate", (0.5, 0.02)),     # a vmapped hyper-parameter axis
    ("num_workers", (15, 17)),          # another n into the same folder
    ("num_byzantine", (5, 3)),          # another f
    ("batch_size", (25, 64)),           # an edited base config
])
def test_two_configurations_in_one_cell_are_two_rows_never_a_mean(tmp_path, field,
                                                                  values):
    a, b = values
    if field in sim.FLOAT_HPARAMS:
        recs = [_record(i, s, acc, hparams={field: v})
                for i, (v, s, acc) in enumerate([(a, 0, 0.9), (a, 1, 0.8),
                                                 (b, 0, 0.2)])]
    else:
        recs = [_record(i, s, acc, **{field: v})
                for i, (v, s, acc) in enumerate([(a, 0, 0.9), (a, 1, 0.8),
                                                 (b, 0, 0.2)])]
    runs = report.load_runs(_folder(tmp_path, recs))
    pooled = f"{np.mean([0.9, 0.8, 0.2]):.4f}"

    full = report.full_table(runs)
    rows = _full_rows(full)
    assert len(rows) == 2
    assert not any(pooled in r for r in rows)
    labels = {f"CWTM ({field}={report.show_value(float(v))})" for v in values}
    assert {r.split(" | ")[2] for r in rows} == labels
    assert any("| 0.8500 +- 0.0500 | 0.900, 0.800 | 0, 1 |" in r for r in rows)
    assert any("| 0.2000 +- 0.0000 | 0.200 | 0 |" in r for r in rows)

    best = report.best_table(runs)
    assert "conflict [1]" in best and pooled not in best and "0.8500" not in best
    assert f"2 configurations (they differ in {field})" in best

    stats = report.cell_stats(runs)[("dsgd", "alie", "trimmed_mean")]
    assert stats["conflict"] and math.isnan(stats["mean"])
    assert [c["count"] for c in stats["configs"]] in ([2, 1], [1, 2])

    cells = report.cells_json(runs)
    assert len(cells) == 2 and {c[field] for c in cells} == set(values)
    assert sorted(c["mean"] for c in cells) == pytest.approx([0.2, 0.85])
    assert len({c["config_id"] for c in cells}) == 2

    cols, tidy = report.tidy_rows(runs)
    ids = {r["run_id"]: r["config_id"] for r in tidy}
    assert ids["r000"] == ids["r001"] != ids["r002"]


def test_seeds_of_one_configuration_are_pooled(tmp_path):
    recs = [_record(i, s, acc) for i, (s, acc) in enumerate([(0, 0.9), (1, 0.7),
                                                              (2, 0.8)])]
    runs = report.load_runs(_folder(tmp_path, recs))
    rows = _full_rows(report.full_table(runs))
    assert rows == ["| dsgd | alie | CWTM | 0.8000 +- 0.0816 | 0.900, 0.700, 0.800 "
                    "| 0, 1, 2 | 0 |"]
    assert "| dsgd | 0.8000 CWTM (0.900, 0.700, 0.800) |" in report.best_table(runs)
    cell, = report.cells_json(runs)
    assert cell["seeds"] == [0, 1, 2]
    assert cell["per_seed"] == [{"seed": 0, "value": 0.9}, {"seed": 1, "value": 0.7},
                                {"seed": 2, "value": 0.8}]


def test_fields_that_cannot_change_results_do_not_split_cells():
    recs = [_record(0, 0, 0.9, checkpoint_every=10, shard="none",
                    run_batching="auto", grad_strategy="auto", num_devices=0),
            _record(1, 1, 0.7, checkpoint_every=3, shard="runs",
                    run_batching="vmap", grad_strategy="unrolled", num_devices=8)]
    cell, = report.cells_json(recs)
    assert cell["seeds"] == [0, 1]
    assert not report.cell_stats(recs)[("dsgd", "alie", "trimmed_mean")]["conflict"]


def test_an_old_record_without_a_newer_field_pools_with_it_at_its_default():
    new = _config()
    old = {k: v for k, v in new.items()
           if k not in ("clip_point", "attack_point", "server_protocol",
                        "momentum_init", "similarity_gamma")}
    recs = [_record(0, 0, 0.9, config=old), _record(1, 1, 0.7, config=new)]
    cell, = report.cells_json(recs)
    assert cell["seeds"] == [0, 1] and cell["mean"] == pytest.approx(0.8)
    assert report.config_id(recs[0]) == report.config_id(recs[1])
    # The same field away from its default is another configuration.
    other = _record(2, 0, 0.1, config=dict(new, clip_point="sent"))
    assert len(report.cells_json(recs + [other])) == 2
    assert [c["clip_point"] for c in report.cells_json(recs + [other])] == [
        "gradient", "sent"]


def test_html_page_shows_each_configuration_and_marks_the_conflict(tmp_path):
    pytest.importorskip("jinja2")
    recs = [_record(i, s, acc, hparams={"learning_rate": lr})
            for i, (lr, s, acc) in enumerate([(0.5, 0, 0.9), (0.5, 1, 0.8),
                                              (0.02, 0, 0.2)])]
    html = open(report.write_html(_folder(tmp_path, recs), dpi=30)).read()
    body = html.split('id="full-table"')[1].split("</table>")[0]
    assert body.count("<tr data-optimizer=") == 2
    assert "trimmed mean (learning_rate=0.02)" in body
    assert "trimmed mean (learning_rate=0.5)" in body
    assert "0.900, 0.800" in body
    best = html.split('id="best-table"')[1].split("</section>")[0]
    assert "2 configurations" in best and "they differ in learning_rate" in best
    assert f"{np.mean([0.9, 0.8, 0.2]):.4f}" not in html


def test_code_versions_are_named_and_mixtures_warned(tmp_path):
    other = dict(CODE, git_commit="b" * 40)
    recs = [_record(0, 0, 0.9, code=CODE), _record(1, 1, 0.7, code=CODE),
            _record(2, 0, 0.5, code=CODE, attack="foe"),
            _record(3, 1, 0.4, code=other, attack="foe"),
            _record(4, 2, 0.3, attack="foe")]  # an old record: no code
    best = report.best_table(recs)
    assert "byzjax 0.3.0 (git aaaaaaaaaaaa), jax 0.10.2, jaxlib 0.10.2, cpu: 3 runs" \
        in best
    warning, = [line for line in best.splitlines() if line.startswith("warning")]
    assert "2 different code versions" in warning and "1 run of unknown code" in warning
    full = report.full_table(recs)
    assert "dsgd / foe / CWTM: warning: runs from 2 different code" in full
    assert "dsgd / alie" not in full  # one code version: no cell note
    cells = {c["attack"]: c for c in report.cells_json(recs)}
    assert cells["alie"]["code_warning"] == ""
    assert [v["runs"] for v in cells["alie"]["code"]] == [2]
    assert "2 different code versions" in cells["foe"]["code_warning"]
    path = str(tmp_path / "cells.json")
    report.write_json_cells(list(cells.values()), path)
    doc = json.load(open(path))
    assert sum(v["runs"] for v in doc["code"]) == 5 and doc["code_warning"]
    # One code version everywhere: no warning at all.
    same = [_record(0, 0, 0.9, code=CODE), _record(1, 1, 0.7, code=CODE)]
    assert "warning" not in report.best_table(same)
    cols, rows = report.tidy_rows(same)
    assert {r["code.git_commit"] for r in rows} == {"a" * 40}


def test_json_gap_to_the_published_value_both_ways():
    recs = [_record(0, 0, 0.9514), _record(1, 1, 0.5994)]
    pub = {"source": "x", "metric": "final_accuracy", "cells": [
        {"optimizer": "dsgd", "attack": "alie", "aggregator": "trimmed_mean",
         "value": 0.775}]}
    cell, = report.cells_json(recs, published=pub)
    assert cell["gap"] == pytest.approx(0.7754 - 0.775)
    assert cell["mean_of_rounded"] == 0.775 and cell["gap_of_rounded"] == 0.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.floats(min_value=-1e6, max_value=1e6),
                          st.sampled_from([0.0005, 0.0015, 0.1234, 1.0, 1e300,
                                           float("nan"), float("inf")])),
                min_size=1, max_size=6),
       st.integers(0, 5))
def test_mean_of_rounded_rounds_each_value_first(values, digits):
    got = report.mean_of_rounded(values, digits)
    want = np.mean([round(v, digits) if math.isfinite(v) else 0.0 for v in values])
    assert got == pytest.approx(want, abs=10.0 ** -(digits + 5))
    # Duplicated values (ties) do not change the mean.
    assert report.mean_of_rounded(values + values, digits) == pytest.approx(
        got, abs=10.0 ** -(digits + 5))


def test_momentum_boxes_never_put_two_settings_in_one_box():
    def rec(i, optimizer, attack, f, n, acc, batch):
        return _record(i, 0, acc, optimizer=optimizer, attack=attack,
                       aggregator="krum" if attack != "none" else "mean",
                       num_byzantine=f, num_workers=n, batch_size=batch)

    recs = []
    for batch in (25, 83):
        recs += [rec(len(recs), "server_momentum", "alie", 5, 15, 0.4, batch),
                 rec(len(recs) + 1, "resam", "alie", 5, 15, 0.7, batch),
                 rec(len(recs) + 2, "resam", "none", 0, 10, 0.9, batch)]
    data = report.momentum_boxes(recs)
    assert len(data["panels"]) == 2
    assert sorted(p["variant"] for p in data["panels"]) == ["batch_size=25",
                                                            "batch_size=83"]
    assert all(len(v) == 1 for p in data["panels"] for v in p["boxes"].values())
    assert report.momentum_gains(recs)["pairs"] == 2


def test_tidy_csv_has_the_configuration_column(tmp_path):
    recs = [_record(0, 0, 0.9, hparams={"learning_rate": 0.5}),
            _record(1, 0, 0.2, hparams={"learning_rate": 0.02})]
    path = report.write_tidy(_folder(tmp_path, recs), parquet=False)["csv"]
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["config_id"] for r in rows}) == 2
    assert len(rows) == 4


def test_a_field_added_later_leaves_config_ids_unchanged():
    # A record written before the field existed, and one written after with
    # the field at its default, are one configuration with the same id as
    # before the field was added.
    record = {"config": {"num_workers": 15, "aggregator": "trimmed_mean"},
              "seed": 0}
    before = report.config_id(record)
    sim.register_field(sim.Field("toy_later", 0.5, "a field added later",
                                 run_id="unless_default"))
    try:
        after_old = report.config_id(record)
        after_new = report.config_id({"config": dict(record["config"],
                                                     toy_later=0.5), "seed": 1})
        changed = report.config_id({"config": dict(record["config"],
                                                   toy_later=0.7), "seed": 1})
    finally:
        sim.unregister_field("toy_later")
    assert before == after_old == after_new != changed
