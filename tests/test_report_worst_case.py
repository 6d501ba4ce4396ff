"""ByzFL's evaluation as a report view (``byzjax report --view byzfl``):
checked against a NumPy computation of its definition on a synthetic
results folder."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest

from byzjax import cli, report, sim
from byzjax.sim import _store

GAMMAS = (1.0, 0.0)                       # two data distributions: two panels
RULES = (("trimmed_mean", "nnm"), ("median", ""))
FS = (1, 2)                               # n = 10 + f, as ByzFL counts
ATTACKS = ("sign_flip", "alie")
LRS = (0.1, 0.5)                          # the tuned setting
SEEDS = (0, 1, 2)
ROUNDS = (0, 10, 20)


def _record(i, cfg, seed, curve, *, val=None):
    metrics = {"round": list(ROUNDS), "test_accuracy": [float(x) for x in curve]}
    if val is not None:
        metrics["val_accuracy"] = [float(x) for x in val]
    return {"run_id": f"r{i:04d}", "seed": seed, "config": cfg,
            "hparams": {"learning_rate": cfg["learning_rate"]}, "metrics": metrics,
            "final_accuracy": float(curve[-1]), "max_accuracy": float(max(curve)),
            "diverged": False, "diverged_round": -1}


def _config(gamma, rule, f, attack, lr, **extra):
    return {"dataset": "mnist", "split": "gamma_similarity",
            "similarity_gamma": gamma, "aggregator": rule[0],
            "preaggregator": rule[1], "num_byzantine": f, "num_workers": 10 + f,
            "attack": attack, "learning_rate": lr, "optimizer": "dsgd",
            "num_rounds": 20, "eval_every": 10, **extra}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A results folder of 2 panels x 2 rules x 2 f x 2 attacks x 2 learning
    rates x 3 seeds, 3 evaluations each (random curves), and the array
    ``acc[panel, rule, f, attack, lr, seed, evaluation]`` it holds."""
    rng = np.random.default_rng(0)
    shape = (len(GAMMAS), len(RULES), len(FS), len(ATTACKS), len(LRS), len(SEEDS),
             len(ROUNDS))
    acc = np.round(rng.uniform(0.05, 0.95, shape), 4)
    path = tmp_path_factory.mktemp("byzfl_view")
    (path / "runs").mkdir()
    i = 0
    for idx in itertools.product(*(range(k) for k in shape[:-1])):
        p, g, f, a, lr, s = idx
        cfg = _config(GAMMAS[p], RULES[g], FS[f], ATTACKS[a], LRS[lr])
        rec = _record(i, cfg, SEEDS[s], acc[idx])
        _store.write_record(str(path / "runs" / f"{rec['run_id']}.json"), rec)
        i += 1
    return str(path), acc


def test_view_is_numpy_worst_case_of_the_seed_mean_curve_maximum(grid):
    path, acc = grid
    cells = report.worst_case_cells(report.load_runs(path))
    # ByzFL: mean over seeds, max over evaluations, min over attacks, the
    # learning rate maximising that minimum.
    per = acc.mean(axis=5).max(axis=-1)            # [panel, rule, f, attack, lr]
    worst = per.min(axis=3)                         # [panel, rule, f, lr]
    best_lr = worst.argmax(axis=-1)                 # [panel, rule, f]
    assert len(cells) == len(GAMMAS) * len(RULES) * len(FS)
    for c in cells:
        p = GAMMAS.index(c["panel"]["similarity_gamma"])
        g = RULES.index((c["aggregator"], c["preaggregator"]))
        f = FS.index(int(c["num_byzantine"]))
        lr = best_lr[p, g, f]
        assert c["setting"] == {"learning_rate": LRS[lr]}
        np.testing.assert_allclose(c["worst"], worst[p, g, f, lr], atol=1e-12)
        a = int(per[p, g, f, :, lr].argmin())
        assert c["worst_attack"] == ATTACKS[a]
        assert c["num_workers"] == 10 + FS[f]
        # The worst attack's spread: each seed's value at the evaluation
        # where the seed-mean curve peaks.
        t = int(acc[p, g, f, a, lr].mean(axis=0).argmax())
        assert c["round"] == ROUNDS[t]
        np.testing.assert_allclose([q["value"] for q in c["per_seed"]],
                                   acc[p, g, f, a, lr, :, t])
        np.testing.assert_allclose(c["std"], acc[p, g, f, a, lr, :, t].std())
        for k, name in enumerate(ATTACKS):
            np.testing.assert_allclose(c["attacks"][name]["value"],
                                       per[p, g, f, k, lr])
        assert c["selected_on"] == "test_accuracy" and c["settings"] == len(LRS)


def test_final_accuracy_metric_is_the_mean_of_the_last_evaluation(grid):
    path, acc = grid
    cells = report.worst_case_cells(report.load_runs(path),
                                    metric="final_accuracy")
    worst = acc[..., -1].mean(axis=5).min(axis=3)   # [panel, rule, f, lr]
    for c in cells:
        p = GAMMAS.index(c["panel"]["similarity_gamma"])
        g = RULES.index((c["aggregator"], c["preaggregator"]))
        f = FS.index(int(c["num_byzantine"]))
        np.testing.assert_allclose(c["worst"], worst[p, g, f].max())


def test_markdown_csv_and_heatmap_of_the_report(grid, tmp_path):
    path, acc = grid
    paths = report.write_worst_case(str(tmp_path), report.load_runs(path),
                                    figures=False, csv_file=True)
    text = open(paths["byzfl"]).read()
    assert "### similarity_gamma=0" in text and "### similarity_gamma=1" in text
    assert "| NNM + CWTM | " in text and "| best rule |" in text
    assert "chosen on test_accuracy (ByzFL chooses on a validation split" in text
    per = acc.mean(axis=5).max(axis=-1)
    worst = per.min(axis=3).max(axis=-1)           # [panel, rule, f]
    assert f"{worst[0, 0, 0]:.4f}" in text
    rows = list(csv.DictReader(open(paths["byzfl_csv"])))
    assert len(rows) == per.size                   # (cell, setting, attack)
    chosen = [r for r in rows if r["chosen"] == "True" and r["worst"] == "True"]
    assert len(chosen) == len(GAMMAS) * len(RULES) * len(FS)
    np.testing.assert_allclose(sorted(float(r["value"]) for r in chosen),
                               np.sort(worst.ravel()))


def test_configurations_beyond_the_axes_are_never_pooled(tmp_path):
    """Two batch sizes in one cell: two settings (tuned over), each the mean
    of its own seeds only; a setting missing an attack is not a candidate."""
    (tmp_path / "runs").mkdir()
    recs, i = [], 0
    vals = {(25, "sign_flip"): (0.8, 0.6), (25, "alie"): (0.7, 0.5),
            (64, "sign_flip"): (0.9, 0.9), (64, "alie"): (0.2, 0.2)}
    for (b, a), seeds in vals.items():
        for s, v in enumerate(seeds):
            recs.append(_record(i, _config(1.0, RULES[1], 1, a, 0.1, batch_size=b),
                                s, [0.1, 0.1, v]))
            i += 1
    # A third setting, better but run against one attack only.
    recs.append(_record(i, _config(1.0, RULES[1], 1, "alie", 0.5), 0,
                        [0.1, 0.1, 0.99]))
    for r in recs:
        _store.write_record(str(tmp_path / "runs" / f"{r['run_id']}.json"), r)
    c, = report.worst_case_cells(report.load_runs(str(tmp_path)))
    assert c["settings"] == 3 and c["incomplete"] == 1
    assert c["setting"] == {"batch_size": 25.0, "learning_rate": 0.1}
    assert c["worst_attack"] == "alie"
    np.testing.assert_allclose(c["worst"], 0.6)      # (0.7 + 0.5) / 2
    assert [q["value"] for q in c["per_seed"]] == [0.7, 0.5]


def test_choice_on_a_validation_curve_when_every_run_has_one(tmp_path):
    (tmp_path / "runs").mkdir()
    # lr 0.1: better on test, worse on validation; lr 0.5 the other way.
    for i, (lr, a, test, val) in enumerate([
            (0.1, "alie", 0.9, 0.3), (0.1, "sign_flip", 0.9, 0.3),
            (0.5, "alie", 0.6, 0.8), (0.5, "sign_flip", 0.7, 0.8)]):
        r = _record(i, _config(1.0, RULES[1], 1, a, lr), 0, [0.1, 0.1, test],
                    val=[0.1, 0.1, val])
        _store.write_record(str(tmp_path / "runs" / f"{r['run_id']}.json"), r)
    runs = report.load_runs(str(tmp_path))
    c, = report.worst_case_cells(runs)
    assert c["selected_on"] == "val_accuracy"
    assert c["setting"] == {"learning_rate": 0.5}
    np.testing.assert_allclose(c["worst"], 0.6)      # reported on test
    c, = report.worst_case_cells(runs, select_on="test_accuracy")
    assert c["setting"] == {"learning_rate": 0.1}


def test_fixed_fields_make_panels_and_bad_ones_are_one_line(grid, tmp_path, capsys):
    path, _ = grid
    cells = report.worst_case_cells(report.load_runs(path),
                                    fixed=("learning_rate",))
    # Learning rate a panel: never tuned; the distributions are now settings.
    assert {c["panel"]["learning_rate"] for c in cells} == set(LRS)
    assert all(set(c["setting"]) <= {"similarity_gamma"} for c in cells)
    with pytest.raises(sim.ConfigError, match="--fixed optimiser: not a config"):
        report.worst_case_cells(report.load_runs(path), fixed=("optimiser",))
    assert cli.main(["report", path, "--fixed", "split"]) == 2
    assert "--fixed applies to --view byzfl" in capsys.readouterr().err


def test_cli_view_writes_the_table_and_csv(grid, capsys):
    path, _ = grid
    assert cli.main(["report", path, "--view", "byzfl", "--no-plot",
                     "--fixed", "+optimizer"]) == 0
    out = capsys.readouterr().out
    assert "Worst case over attacks (ByzFL's evaluation)" in out
    assert "table_byzfl.md" in out and "byzfl.csv" in out
    json.dumps(report.worst_case_cells(report.load_runs(path)))  # plain data


def test_html_page_has_the_view_section(tmp_path):
    pytest.importorskip("jinja2")
    (tmp_path / "runs").mkdir()
    for i, (a, v) in enumerate((("alie", 0.81), ("sign_flip", 0.62))):
        r = _record(i, _config(1.0, RULES[1], 1, a, 0.1), 0, [0.1, 0.5, v])
        _store.write_record(str(tmp_path / "runs" / f"{r['run_id']}.json"), r)
    page = open(report.write_html(str(tmp_path), view="byzfl", dpi=40)).read()
    assert '<section id="byzfl">' in page and "img/byzfl_heatmaps.png" in page
    assert "0.6200" in page and (tmp_path / "report/img/byzfl_heatmaps.png").exists()


def test_preaggregator_lists_are_rules_not_tuned_settings(tmp_path):
    """ByzFL keeps each list of pre-aggregators apart (its heatmaps per
    list): two chains, and one pre-aggregator with two keyword values, are
    four rows with four labels, never one row whose best list is chosen."""
    clip_nnm = {"steps": [["static_clipping", {"max_norm": 2.0}], ["nnm", {}]]}
    nnm_clip = {"steps": [["nnm", {}], ["static_clipping", {"max_norm": 2.0}]]}
    rules = [("chain", clip_nnm, 0.3), ("chain", nnm_clip, 0.6),
             ("static_clipping", {"max_norm": 1.0}, 0.4),
             ("static_clipping", {"max_norm": 5.0}, 0.5)]
    (tmp_path / "runs").mkdir()
    i = 0
    for pre, kw, level in rules:
        for attack in ATTACKS:
            for seed in SEEDS[:2]:
                cfg = _config(1.0, ("trimmed_mean", pre), 1, attack, 0.1,
                              preaggregator_kwargs=kw)
                rec = _record(i, cfg, seed, [level, level + 0.01, level])
                _store.write_record(str(tmp_path / "runs" / f"r{i:04d}.json"), rec)
                i += 1
    cells = report.worst_case_cells(report.load_runs(str(tmp_path)))
    assert len(cells) == 4
    labels = {c["rule_label"]: round(c["worst"], 4) for c in cells}
    assert labels == {
        "CLIP + NNM + CWTM": 0.31, "NNM + CLIP + CWTM": 0.61,
        "CLIP [max_norm=1] + CWTM": 0.41, "CLIP [max_norm=5] + CWTM": 0.51}
    assert all(c["setting"] == {} and c["settings"] == 1 for c in cells)
    table = report.worst_case_table(report.load_runs(str(tmp_path)))
    for label in labels:
        assert f"| {label} |" in table


def test_data_distribution_seeds_with_their_own_start_are_pooled(tmp_path):
    """ByzFL's importer ties ``init_seed`` to ``split_seed``: two
    data-distribution seeds are seeds of one configuration (pooled), while a
    run whose seeds each draw their own start (``init_seed = -1``) is another
    setting, never averaged with them."""
    i = 0
    levels = {0: 0.4, 1: 0.6, -1: 0.9}  # init/split seed -> accuracy
    for folder in ("shared", "all"):
        (tmp_path / folder / "runs").mkdir(parents=True)
    for dd, level in levels.items():
        for attack in ATTACKS:
            cfg = _config(1.0, RULES[1], 1, attack, 0.1, split_seed=max(dd, 0),
                          init_seed=dd)
            rec = _record(i, cfg, 0, [0.1, 0.1, level])
            for folder in ("shared", "all") if dd >= 0 else ("all",):
                _store.write_record(
                    str(tmp_path / folder / "runs" / f"r{i:04d}.json"), rec)
            i += 1
    c, = report.worst_case_cells(report.load_runs(str(tmp_path / "shared")))
    assert c["settings"] == 1 and len(c["per_seed"]) == 2
    np.testing.assert_allclose(c["worst"], 0.5)  # (0.4 + 0.6) / 2
    c, = report.worst_case_cells(report.load_runs(str(tmp_path / "all")))
    assert c["settings"] == 2
    # the per-seed start, better, is its own setting
    assert c["setting"] == {"init_seed": "per seed"}
    np.testing.assert_allclose(c["worst"], 0.9)
