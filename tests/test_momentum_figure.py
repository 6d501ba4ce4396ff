"""El Mhamdi et al.'s momentum box plots (``byzjax report --boxes``), synthetic runs."""

from __future__ import annotations

import itertools
import os

import numpy as np

from byzjax import cli, report
from byzjax.sim import _store

RULES = ["krum", "coordinate_median", "trimmed_mean", "phocas", "meamed", "bulyan"]


def _records():
    rng = np.random.default_rng(0)
    recs = []
    for i, (f, attack, rule, opt, nesterov, seed) in enumerate(itertools.product(
            [12, 24], ["alie", "foe"], RULES, ["server_momentum", "resam"],
            [False, True], range(5))):
        if f == 24 and rule == "bulyan":
            continue
        recs.append(_rec(i, f, attack, rule, opt, nesterov, seed,
                         float(rng.uniform(0.3, 0.8))))
    # The references: the n - f honest workers alone (51 - 12 = 39 and
    # 51 - 24 = 27 workers, no Byzantine), 5 seeds each.
    for j, (f, nesterov, seed) in enumerate(itertools.product(
            [12, 24], [False, True], range(5))):
        recs.append(_rec(10_000 + j, 0, "none", "mean", "resam", nesterov, seed,
                         _ref_acc(f, nesterov, seed), num_workers=51 - f))
    # One diverged run (max accuracy NaN -> null in the record) counts as 0.
    recs[0]["max_accuracy"] = float("nan")
    return recs


def _ref_acc(f, nesterov, seed):
    return 0.85 + 0.01 * seed + 0.05 * nesterov - 0.1 * (f == 24)


def _rec(i, f, attack, rule, opt, nesterov, seed, acc, num_workers=51):
    return {"run_id": f"r{i}", "seed": seed, "hparams": {"learning_rate": 0.5},
            "config": {"optimizer": opt, "attack": attack, "aggregator": rule,
                       "model": "mlp", "num_rounds": 300, "num_byzantine": f,
                       "num_workers": num_workers, "nesterov": nesterov},
            "final_accuracy": acc, "max_accuracy": acc, "diverged": False,
            "diverged_round": -1, "metrics": {"round": [300],
                                              "test_accuracy": [acc]}}


def test_boxes_hold_every_rule_and_seed_and_the_unattacked_median():
    recs = _records()
    data = report.momentum_boxes(recs)
    panels = data["panels"]
    assert len(panels) == 2 * 2 * 2  # attack x fraction x momentum kind
    for p in panels:
        rules = 6 if p["num_byzantine"] == 12 else 5
        for opt in ("server_momentum", "resam"):
            want = [0.0 if (r is recs[0]) else r["max_accuracy"] for r in recs
                    if r["config"]["attack"] == p["attack"]
                    and r["config"]["num_byzantine"] == p["num_byzantine"]
                    and r["config"]["nesterov"] == p["nesterov"]
                    and r["config"]["optimizer"] == opt]
            assert len(p["boxes"][opt]) == rules * 5
            np.testing.assert_allclose(sorted(p["boxes"][opt]), sorted(want))
        ref = [_ref_acc(p["num_byzantine"], p["nesterov"], s) for s in range(5)]
        np.testing.assert_allclose(p["reference"], np.median(ref))
        assert p["reference_workers"] == [51 - p["num_byzantine"]]
    assert data["excluded"] == {("alie", 24): ["bulyan"], ("foe", 24): ["bulyan"]}


def test_boxes_fall_back_to_any_unattacked_run_without_an_honest_only_one():
    recs = [r for r in _records() if r["config"]["attack"] != "none"]
    recs += [_rec(20_000 + s, 0, "none", "mean", "resam", False, s, 0.8 + 0.01 * s)
             for s in range(3)]  # 51 honest workers (the main job's reference)
    panels = report.momentum_boxes(recs)["panels"]
    classical = [p for p in panels if not p["nesterov"]]
    for p in classical:
        assert p["reference_workers"] == [51]
        np.testing.assert_allclose(p["reference"], 0.81)
    assert all(p["reference"] is None for p in panels if p["nesterov"])


def test_report_boxes_cli_draws_the_figure(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    for rec in _records():
        _store.write_record(str(runs / f"{rec['run_id']}.json"), rec)
    out = str(tmp_path / "boxes.png")
    assert cli.main(["report", str(tmp_path), "--boxes", out]) == 0
    assert "8 panels" in capsys.readouterr().out
    assert os.path.getsize(out) > 10_000


def _ref_loop(recs, t):
    """reproduce.py's counts, written as its loop over at-worker runs."""
    def acc(r):
        v = r["max_accuracy"]
        return v if v is not None and np.isfinite(v) else 0.0

    by = {}
    for r in recs:
        c = r["config"]
        by[(c["attack"], c["num_byzantine"], c["aggregator"], c["optimizer"],
            c["nesterov"], r["seed"], c["num_workers"])] = acc(r)
    effective = recovered = increased = 0
    for (attack, f, rule, opt, nesterov, seed, n), at_w in by.items():
        if opt != "resam" or attack == "none":
            continue
        at_s = by[(attack, f, rule, "server_momentum", nesterov, seed, n)]
        ref = by[("none", 0, "mean", "resam", nesterov, seed, n - f)]
        if ref - at_s > t:
            effective += 1
            recovered += at_w - at_s > t
            increased += at_w - at_s > 0
    return effective, recovered, increased


def test_gains_count_as_reproduce_py():
    recs = _records()
    g = report.momentum_gains(recs)
    assert g["pairs"] == (6 + 5) * 2 * 2 * 5 and g["unpaired"] == 0
    for t in (0.1, 0.2, 0.4):
        assert (g["effective"][t], g["recovered"][t], g["increased"][t]) == \
            _ref_loop(recs, t)
    assert g["effective"][0.2] > 0 and 0 < g["recovered"][0.1] < g["effective"][0.1]
    gains = []
    for r in recs:
        c = r["config"]
        if c["optimizer"] == "resam" and c["attack"] != "none":
            other = {**c, "optimizer": "server_momentum"}
            twin, = [s for s in recs
                     if s["config"] == other and s["seed"] == r["seed"]]
            v = [0.0 if not np.isfinite(x["max_accuracy"]) else x["max_accuracy"]
                 for x in (r, twin)]
            gains.append(v[0] - v[1])
    assert g["worse"][0.0] == sum(x < 0 for x in gains)
    assert g["worse"][0.05] == sum(x < -0.05 for x in gains)
    # A run without its other placement is not paired.
    assert report.momentum_gains(recs[1:])["unpaired"] == 1
