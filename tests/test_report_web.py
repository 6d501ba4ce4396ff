"""Results people look at: the web report, tidy tables and metric writers."""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import struct
import sys

import numpy as np
import pytest

from byzjax import report
from byzjax.report import _figures
from byzjax.sim import _store

OPTS, ATTS, AGGS, SEEDS = ("dsgd", "resam"), ("none", "alie"), ("mean",
                                                              "trimmed_mean"), (0, 1)


def _fake_results(tmp_path, *, published=True):
    """A results folder of 2 x 2 x 2 cells x 2 seeds; dsgd/alie/mean diverges
    for seed 1. Returns the records."""
    runs = tmp_path / "runs"
    runs.mkdir()
    recs = []
    for i, (o, a, g, s) in enumerate([(o, a, g, s) for o in OPTS for a in ATTS
                                      for g in AGGS for s in SEEDS]):
        acc = [0.3 + 0.1 * i / 16, 0.5 + 0.4 * i / 16 + 0.01 * s]
        diverged = (o, a, g, s) == ("dsgd", "alie", "mean", 1)
        if diverged:
            acc[-1] = float("nan")
        rec = {"run_id": f"r{i:02d}", "seed": s, "hparams": {"beta": 0.9},
               "config": {"optimizer": o, "attack": a, "aggregator": g,
                          "beta": 0.9, "num_workers": 7, "aggregator_kwargs": {}},
               "metrics": {"round": [10, 20], "test_accuracy": acc,
                           "test_loss": [1.0, 0.5], "resilience": [0.2, 0.3]},
               "final_accuracy": acc[-1], "max_accuracy": max(
                   x for x in acc if x == x),
               "diverged": diverged, "diverged_round": 20 if diverged else -1,
               "group_wall_time_s": 3.0 + i // 2, "group_first_chunk_s": 2.0,
               "static_key": f"k{i // 2}"}
        recs.append(_store.write_record(str(runs / f"r{i:02d}.json"), rec))
    sweep = {"name": "fake", "grid": {"optimizer": list(OPTS), "attack": list(ATTS),
                                      "aggregator": list(AGGS)},
             "seeds": list(SEEDS)}
    if published:
        sweep["published"] = {"source": "Fabris (2023), Table 4.1",
                              "metric": "final_accuracy", "cells": [
                                  {"optimizer": "dsgd", "attack": "alie",
                                   "aggregator": "trimmed_mean", "value": 0.38},
                                  {"optimizer": "resam", "attack": "alie",
                                   "aggregator": "trimmed_mean", "value": 0.99}]}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    return recs


def test_csv_round_trips_into_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    recs = _fake_results(tmp_path)
    paths = report.write_tidy(str(tmp_path))
    df = pd.read_csv(paths["csv"])
    assert len(df) == len(recs) * 2  # one row per (run, evaluation)
    for col in ("run_id", "seed", "optimizer", "attack", "aggregator", "beta",
                "num_workers", "final_accuracy", "diverged", "eval", "round",
                "test_accuracy", "test_loss", "resilience"):
        assert col in df.columns, col
    assert list(df.columns) == list(report.load(str(tmp_path)).columns)
    # Values are those of the records, the diverged one as NaN.
    for rec in recs:
        rows = df[df["run_id"] == rec["run_id"]].sort_values("eval")
        assert list(rows["round"]) == rec["metrics"]["round"]
        want = [np.nan if v is None else v for v in rec["metrics"]["test_accuracy"]]
        np.testing.assert_allclose(rows["test_accuracy"], want)
        assert set(rows["optimizer"]) == {rec["config"]["optimizer"]}
    assert df["diverged"].sum() == 2  # both rows of the one diverged run
    if "parquet" in paths:
        pq = pd.read_parquet(paths["parquet"])
        assert pq.shape == df.shape and list(pq.columns) == list(df.columns)


def test_tidy_rows_use_the_runs_own_hyper_parameters_and_tolerate_missing_keys():
    runs = [{"run_id": "a", "config": {"beta": 0.9}, "hparams": {"beta": 0.5},
             "metrics": {"round": [1, 2, 3], "test_accuracy": [0.1, 0.2]}},
            {"run_id": "b", "config": {"aggregator_kwargs": {"radius": 2.0}}}]
    cols, rows = report.tidy_rows(runs)
    assert "aggregator_kwargs.radius" in cols and "seed" in cols
    a = [r for r in rows if r["run_id"] == "a"]
    assert [r["beta"] for r in a] == [0.5] * 3
    assert [r["test_accuracy"] for r in a] == [0.1, 0.2, None]
    assert [r for r in rows if r["run_id"] == "b"] == []  # no evaluations


def test_missing_optional_packages_are_one_line_errors(tmp_path, monkeypatch):
    from byzjax.sim import ConfigError

    _fake_results(tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)
    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(ConfigError, match=r"pip install 'byzjax\[report\]'"):
        report.load(str(tmp_path))
    with pytest.raises(ConfigError, match="needs Jinja2"):
        report.write_html(str(tmp_path))


def _visible_text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_html_page_has_the_tables_published_values_and_images(tmp_path):
    pytest.importorskip("jinja2")
    _fake_results(tmp_path)
    path = report.write_html(str(tmp_path), dpi=40)
    html = open(path).read()
    assert "http://" not in html and "https://" not in html  # nothing fetched
    # Full table: one row per cell, readable names.
    body = html.split('id="full-table"')[1].split("</table>")[0]
    assert body.count("<tr data-optimizer=") == len(OPTS) * len(ATTS) * len(AGGS)
    text = _visible_text(html)
    assert "A Little Is Enough" in text and "momentum at the workers" in text
    assert "trimmed mean" in text
    # Best table: the published value beside the measured one, signed and
    # coloured by direction.
    best = html.split('id="best-table"')[1].split("</table>")[0]
    stats = report.cell_stats(report.load_runs(str(tmp_path)))
    dsgd_alie = max(stats[("dsgd", "alie", g)]["mean"] for g in AGGS)
    resam_alie = max(stats[("resam", "alie", g)]["mean"] for g in AGGS)
    assert f"{dsgd_alie - 0.38:+.3f}" in best and "diff above" in best
    assert f"{resam_alie - 0.99:+.3f}" in best and "diff below" in best
    assert "Fabris (2023), Table 4.1" in text
    # The diverged run is counted.
    assert "1 run diverged" in text
    # Every referenced image exists and is a PNG.
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 3 + len(OPTS) * len(ATTS)
    for src in srcs:
        with open(os.path.join(os.path.dirname(path), src), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_html_page_without_a_sweep_description_or_published_values(tmp_path):
    pytest.importorskip("jinja2")
    recs = _fake_results(tmp_path, published=False)
    os.remove(tmp_path / "sweep.json")
    for rec in recs[4:]:  # keep one optimiser and attack: a cheaper page
        os.remove(tmp_path / "runs" / (rec["run_id"] + ".json"))
    html = open(report.write_html(str(tmp_path), dpi=40, palette=16)).read()
    assert "published" not in _visible_text(html).lower()
    assert 'id="grid-table"' in html and "aggregator" in html


def test_text_on_a_heatmap_cell_contrasts_with_it():
    import matplotlib

    cmap = matplotlib.colormaps[report.CMAP]
    assert _figures._text_color(cmap(0.0)) == "white"  # dark blue
    assert _figures._text_color(cmap(1.0)) == "black"  # light yellow
    assert _figures._text_color((0.5, 0.5, 0.5, 1)) == "black"


def test_heatmap_of_a_ragged_grid_has_no_overlapping_labels(tmp_path):
    """Two optimisers with different attacks (the layout of a main job with an
    unattacked reference): the second panel's labels stay off the first."""
    runs = [{"config": {"optimizer": o, "attack": a, "aggregator": g},
             "final_accuracy": 0.5, "diverged": False}
            for o, a, g in [("server_momentum", "alie", "krum"),
                            ("server_momentum", "alie", "trimmed_mean"),
                            ("resam", "alie", "krum"), ("resam", "none", "mean")]]
    fig = _figures._heatmap_figure(runs, "final_accuracy")
    fig.set_dpi(60)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    panels = fig.axes[:2]
    boxes = [[t.get_window_extent(renderer) for t in
              ax.get_xticklabels() + ax.get_yticklabels() + [ax.title]
              if t.get_visible() and t.get_text()] for ax in panels]
    left, right = boxes
    assert not any(b.overlaps(panels[0].get_window_extent(renderer)) for b in right)
    assert not any(a.overlaps(b) for a in left for b in right)
    # Every cell is labelled: numbers where run, "not run" where not.
    texts = [t.get_text() for ax in panels for t in ax.texts]
    assert texts.count("0.50") == 4 and texts.count("not run") == 3 * 2 * 2 - 4
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------ metric writers
def _read_events(folder):
    """(tag, step, value) of every scalar in the TensorBoard event files under
    ``folder`` (the TFRecord framing read by hand, the Event protos parsed
    with tensorboardX's own definitions)."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"),
                          recursive=True):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.append((os.path.relpath(os.path.dirname(path), folder), v.tag,
                            event.step, v.simple_value))
    return out


def test_train_streams_chunk_metrics_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboardX")
    from byzjax import cli

    code = cli.main(["train", "--dataset", "synthetic", "--num-workers", "5",
                     "--num-byzantine", "1", "--rounds", "4", "--eval-every", "2",
                     "--batch-size", "4", "--seeds", "0,1", "--outdir",
                     str(tmp_path), "--quiet", "--no-plot", "--log", "tensorboard"])
    assert code == 0
    events = _read_events(str(tmp_path / "tensorboard"))
    recs = {r["seed"]: r for r in report.load_runs(str(tmp_path))}
    assert {run for run, *_ in events} == {"seed=0", "seed=1"}
    for seed, rec in recs.items():
        acc = sorted((step, v) for run, tag, step, v in events
                     if run == f"seed={seed}" and tag == "eval/test_accuracy")
        assert [s for s, _ in acc] == rec["metrics"]["round"] == [2, 4]
        np.testing.assert_allclose([v for _, v in acc],
                                   rec["metrics"]["test_accuracy"], rtol=1e-6)
        tags = {tag for run, tag, *_ in events if run == f"seed={seed}"}
        assert {"train/train_loss", "diagnostics/resilience"} <= tags


def test_log_without_its_package_fails_before_running(tmp_path, monkeypatch,
                                                      capsys):
    from byzjax import cli

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    code = cli.main(["train", "--dataset", "synthetic", "--outdir", str(tmp_path),
                     "--log", "tensorboard"])
    assert code == 2
    err = capsys.readouterr().err
    assert "byzjax[tensorboard]" in err and len(err.strip().splitlines()) == 1
    assert not glob.glob(str(tmp_path / "runs" / "*.json"))


def test_csv_command_writes_one_row_per_evaluation(tmp_path):
    from byzjax import cli

    recs = _fake_results(tmp_path)
    assert cli.main(["report", str(tmp_path), "--csv", "--no-plot"]) == 0
    with open(tmp_path / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(recs)


# ------------------------------------------------------------------ browser
TINY_SWEEP = {
    "name": "tiny_browser",
    "grid": {"optimizer": ["dsgd"], "attack": ["none", "alie"],
             "aggregator": ["mean", "trimmed_mean"]},
    "seeds": [0, 1],
    "overrides": [({"attack": "none"}, {"num_attackers": 0})],
    "published": {"source": "a made-up table", "metric": "final_accuracy",
                  "cells": [{"optimizer": "dsgd", "attack": "alie",
                             "aggregator": "trimmed_mean", "value": 0.5}]},
}


def _browser():
    """A headless Chromium driven by selenium, or a skip saying what is
    missing."""
    import shutil

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install 'byzjax[browser]')")
    driver_bin = shutil.which("chromedriver")
    browser_bin = next((b for b in (shutil.which("chromium"),
                                    shutil.which("chromium-browser"),
                                    shutil.which("google-chrome")) if b), None)
    if not driver_bin or not browser_bin:
        pytest.skip("no headless browser: install Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_bin
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1280,2400",
                "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_bin), options=options)


def _visible_rows(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#full-table tbody tr'))"
        ".filter(r => !r.hidden && r.offsetParent !== null)"
        ".map(r => r.dataset.attack + '/' + r.dataset.aggregator);")


@pytest.mark.slow
def test_report_of_a_real_sweep_in_headless_chromium(tmp_path):
    pytest.importorskip("jinja2")
    driver = _browser()
    try:
        import ml_collections

        from byzjax import sim
        from byzjax.sim import _schedule

        base = sim.get_config()
        base.dataset, base.model = "synthetic", "mlp"
        base.num_workers, base.num_byzantine = 5, 1
        base.batch_size, base.num_rounds, base.eval_every = 8, 6, 2
        base.learning_rate = 0.1
        sweep = ml_collections.ConfigDict(dict(TINY_SWEEP, base=base))
        outdir = str(tmp_path / "results")
        from byzjax.metric_writers import ChunkLogger

        class Memory:  # a writer with CLU's MetricWriter interface
            def __init__(self):
                self.steps = []

            def write_scalars(self, step, scalars):
                self.steps.append((step, scalars["eval/test_accuracy"]))

            def flush(self):
                pass

            def close(self):
                pass

        writers = {}
        _schedule.run_sweep(sweep, outdir, progress=False, log=lambda *_: None,
                         on_chunk=ChunkLogger(lambda n: writers.setdefault(
                             n, Memory())))
        assert json.load(open(os.path.join(outdir, "sweep.json")))["published"]
        # The sweep streamed every chunk of every run, named by its grid values.
        assert len(writers) == 8
        for rec in report.load_runs(outdir):
            c = rec["config"]
            name = ",".join(f"{k}={c[k]}" for k in sorted(TINY_SWEEP["grid"]))
            name += f",seed={rec['seed']}"
            steps = writers[name].steps
            assert [s for s, _ in steps] == rec["metrics"]["round"] == [2, 4, 6]
            np.testing.assert_allclose([v for _, v in steps],
                                       rec["metrics"]["test_accuracy"], rtol=1e-6)
        page = report.write_html(outdir, dpi=50, page_size=3)

        driver.get("file://" + os.path.abspath(page))
        assert "tiny_browser" in driver.title
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'),"
            " i.complete, i.naturalWidth]);")
        assert len(images) == 3 + 2  # heatmaps, boxes, times + 2 cells
        assert all(done and width > 0 for _, done, width in images), images
        # Best table: one optimiser row, two attack columns, the published
        # value beside the measured one.
        best = driver.find_element("id", "best-table")
        assert len(best.find_elements("css selector", "tbody tr")) == 1
        assert "0.5" in best.text and "D-SGD" in best.text
        # Full table: 4 cells, 3 a page.
        n_rows = driver.execute_script(
            "return document.querySelectorAll('#full-table tbody tr').length;")
        assert n_rows == 4
        first = _visible_rows(driver)
        assert len(first) == 3
        # Sorting by accuracy, ascending then descending, changes the page.
        header = driver.find_element("css selector", '#full-table th[data-key="mean"]')
        header.click()
        ascending = _visible_rows(driver)
        means = driver.execute_script(
            "return Array.from(document.querySelectorAll('#full-table tbody tr'))"
            ".map(r => parseFloat(r.dataset.mean));")
        assert means == sorted(means)
        header.click()
        assert header.get_attribute("aria-sort") == "descending"
        # Sorting by program time (distinct values) changes the rows shown.
        timer = driver.find_element("css selector", '#full-table th[data-key="time"]')
        timer.click()
        ascending = _visible_rows(driver)
        timer.click()
        descending = _visible_rows(driver)
        assert len(ascending) == len(descending) == 3
        assert ascending != descending
        # Filtering by aggregator and attack.
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element("id", "filter-aggregator")).select_by_value(
            "trimmed_mean")
        assert sorted(_visible_rows(driver)) == ["alie/trimmed_mean",
                                                 "none/trimmed_mean"]
        Select(driver.find_element("id", "filter-attack")).select_by_value("alie")
        assert _visible_rows(driver) == ["alie/trimmed_mean"]
        assert "1 of 4 cells" in driver.find_element("id", "full-count").text
        Select(driver.find_element("id", "filter-attack")).select_by_value("")
        Select(driver.find_element("id", "filter-aggregator")).select_by_value("")
        assert len(_visible_rows(driver)) == 3
        shot = os.environ.get("BYZJAX_SCREENSHOT", str(tmp_path / "report.png"))
        assert driver.save_screenshot(shot)
        assert os.path.getsize(shot) > 10_000
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
