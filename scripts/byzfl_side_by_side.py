"""The ByzFL side of the byzjax / ByzFL side-by-side benchmark (a benchmark
script, not part of the package).

ByzFL (Gonzalez, Guerraoui, Pinot et al., 2025, "ByzFL: Research Framework for
Robust Federated Learning", EPFL; ``pip install byzfl``) runs a whole
benchmark from one ``config.json`` (``byzfl.benchmark.run_benchmark``), then
picks each aggregator's learning rate, momentum and weight decay against its
worst attack (``byzfl/benchmark/evaluate_results.py``). This script:

1. arranges MNIST from byzjax's offline, checksummed copy
   (``byzjax.data``; ``scripts/fetch_data.sh``) in the layout
   torchvision's ``datasets.MNIST(root)`` reads: the four uncompressed IDX
   files in ``ROOT/MNIST/raw/`` (torchvision 0.29 checks the files without
   ``.gz``, by name only, and never downloads when they are there); each file
   written is checked against the original IDX sha256;
2. runs ByzFL's benchmark on ``CONFIG`` in ByzFL's own virtual environment
   (``--byzfl-python``, default ``/work/benchvenv/bin/python``: torch and
   byzfl, no JAX), as its README does (``run_benchmark(1)`` with
   ``config.json`` in the working folder), after ``torch.set_num_threads``
   (``--threads``, default 2; ``OMP_NUM_THREADS`` too, so its pool's worker
   has the same count), and times it: ``byzfl_run_s`` is ``run_benchmark``
   itself (every training, then ByzFL's choice of hyper-parameters),
   ``end_to_end_s`` is from starting ByzFL's interpreter to the table below
   printed (imports and reading the results included);
3. reads ByzFL's results folder and prints, per cell (aggregator with its
   pre-aggregators, attack, f, data distribution, learning rate, momentum,
   weight decay), the test accuracy over seeds: ByzFL's own number (the
   largest value of the curve averaged over seeds, ``evaluate_results.py``),
   and the final and best accuracy as mean +- std over seeds with each seed's
   value; then ByzFL's worst-case table (for each aggregator and
   ``(f, distribution)``, its chosen hyper-parameters and the accuracy of its
   worst attack), and writes all of it as JSON (``--json``).

ByzFL's results go to ``WORKDIR/results``; a non-empty one is refused (ByzFL
skips trainings it finds done, which would make the time meaningless) unless
``--fresh`` deletes it. The config's ``data_folder`` and
``results_directory`` are replaced by this script's; nothing else changes.

Usage (byzjax's interpreter; ByzFL's is called for step 2)::

    python scripts/byzfl_side_by_side.py scripts/byzfl_sample_short.json \\
        --workdir /tmp/byzfl_short --json /tmp/byzfl_short.json

    # only read (and print) a finished ByzFL results folder
    python scripts/byzfl_side_by_side.py --read /tmp/byzfl_short/results

    # byzjax's report view (byzjax report --view byzfl) against ByzFL's own
    # find_best_hyperparameters and test_heatmap, on synthetic results
    python scripts/byzfl_side_by_side.py --check-view /tmp/byzfl_check

``scripts/byzfl_sample_short.json`` is ByzFL's README sample configuration
("Setting Up Your Experiments", ``byzfl/benchmark/README.md``), shortened;
what was cut, exactly:

* ``nb_steps``: 800 -> 20, and ``evaluation_delta`` 50 -> 10 (evaluations
  after 0, 10 and 20 steps);
* ``f``: [1, 2, 3, 4] -> [1];
* added ``"device": "cpu"`` (ByzFL's default when the key is absent, as in
  the sample) and the sample's trailing comma after ``data_distribution``
  removed (it is not valid JSON);
* nothing else: 3 training seeds, 10 honest clients, gamma-similarity
  ``[1.0, 0.66, 0.33, 0.0]``, ``cnn_mnist``, learning rate 0.1, momentum 0.9,
  weight decay 1e-4, batch 25, GeometricMedian (nu 0.1, T 3) and TrMean after
  Clipping + NNM, SignFlipping, Optimal_InnerProductManipulation and
  Optimal_ALittleIsEnough: 1 x 4 x 2 x 3 x 3 = 72 trainings of 20 steps
  (the sample: 288 of 800).

Why so short: ByzFL's optimal attacks evaluate the whole pipeline (Clipping,
NNM, the rule) 20 times per step, and its NNM costs ~0.3-0.4 s a call on
``cnn_mnist`` (431,080 parameters). CPU seconds measured with byzfl 0.0.11,
torch 2.14.1 (one core, shared): per step, Optimal_InnerProductManipulation
6.9 s (f = 1, n = 11) / 9.4 s (f = 4), Optimal_ALittleIsEnough 8.8 / 11.2 s,
SignFlipping 0.6 s (the ten honest gradients and the aggregation); per
evaluation (12,000 validation + 10,000 test images) 4.5 s; ~5 s to set up a
training. A config's time is about the sum over its trainings of
``steps x step + evaluations x 4.5 s + 5 s`` (for 6 trainings of 20 steps,
f = 1, one seed and one distribution, it predicts 736 CPU s; the run took 695
s of user + system time): this file ~4,600 CPU s (about 1-1.3 h of wall time
on 2 quiet cores), the same with 200 steps and f in [1, 4] ~92,000 s (about
a day), the README sample about 8 times that.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np

DEFAULT_BYZFL_PYTHON = "/work/benchvenv/bin/python"
#: torchvision's MNIST raw file names (read uncompressed).
RAW_FILES = {"train_images": "train-images-idx3-ubyte",
             "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte",
             "test_labels": "t10k-labels-idx1-ubyte"}


# ------------------------------------------------------------------ 1. data
def prepare_mnist(root: str) -> str:
    """Writes MNIST's four IDX files to ``root/MNIST/raw`` (from byzjax's
    offline copy) unless they are there with the original sha256; returns
    ``root``."""
    from byzjax.data import CHECKSUMS
    from byzjax.data._offline import idx_bytes, load_mnist_offline

    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    arrays = None
    for key, name in RAW_FILES.items():
        path = os.path.join(raw, name)
        want = CHECKSUMS["mnist"][key]
        if os.path.isfile(path) and _sha256(path) == want:
            continue
        if arrays is None:
            arrays = load_mnist_offline()  # checked against the same sha256
        with open(path + ".tmp", "wb") as fh:
            fh.write(idx_bytes(arrays[key]))
        os.replace(path + ".tmp", path)
        if _sha256(path) != want:
            raise SystemExit(f"{path}: sha256 differs from the original IDX file")
    return root


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------- 2. run
def _child(workdir: str, threads: int) -> None:
    """Runs in ByzFL's interpreter: ``run_benchmark(1)`` in ``workdir``."""
    import torch

    torch.set_num_threads(threads)
    from byzfl.benchmark import run_benchmark

    os.chdir(workdir)
    t0 = time.perf_counter()
    run_benchmark(1)
    elapsed = time.perf_counter() - t0
    print("BYZFL_TIMING " + json.dumps({
        "byzfl_run_s": elapsed, "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__}), flush=True)


def run_byzfl(config_path: str, workdir: str, *, python: str, threads: int,
              fresh: bool, data_root: str) -> tuple[dict, float]:
    """Writes ``workdir/config.json`` and runs ByzFL on it; returns (the
    child's timing line, the wall time at which the child was started)."""
    with open(config_path) as fh:
        config = json.load(fh)
    workdir = os.path.abspath(workdir)
    results = os.path.join(workdir, "results")
    if os.path.isdir(results) and os.listdir(results):
        if not fresh:
            raise SystemExit(f"{results} is not empty: ByzFL would skip the "
                             "trainings it finds; give --fresh to delete it")
        shutil.rmtree(results)
    os.makedirs(workdir, exist_ok=True)
    ev = config.setdefault("evaluation_and_results", {})
    ev["data_folder"] = os.path.abspath(data_root)
    ev["results_directory"] = results
    with open(os.path.join(workdir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=4)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), MPLBACKEND="Agg")
    start = time.perf_counter()
    proc = subprocess.run(
        [python, os.path.abspath(__file__), "--child", workdir,
         "--threads", str(threads)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    with open(os.path.join(workdir, "byzfl_stdout.txt"), "w") as fh:
        fh.write(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"ByzFL failed (exit {proc.returncode}); its output: "
                         f"{os.path.join(workdir, 'byzfl_stdout.txt')}\n"
                         + proc.stdout[-3000:])
    line = [x for x in proc.stdout.splitlines() if x.startswith("BYZFL_TIMING ")]
    return json.loads(line[-1].split(" ", 1)[1]), start


# ------------------------------------------------------------------ 3. read
_SEED_FILE = re.compile(r"test_accuracy_tr_seed_(\d+)_dd_seed_(\d+)\.txt$")


def _curve(path: str) -> np.ndarray:
    return np.atleast_1d(np.genfromtxt(path, delimiter=",")).astype(np.float64)


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std())}


def read_results(results: str) -> dict[str, Any]:
    """Every ByzFL training folder of ``results`` as one cell, and ByzFL's
    worst-case table from its ``best_hyperparameters``.

    A cell's ``byzfl_accuracy`` is what ``evaluate_results.py`` takes: the
    test-accuracy curves averaged over seeds (training x data-distribution
    seeds, pooled), then the largest value over evaluations; ``final`` and
    ``max`` are per-seed values' mean and std (population std, as byzjax's
    report), ``per_seed`` each seed's (``[training seed, distribution
    seed]``) final accuracy.
    """
    cells = []
    for folder in sorted(glob.glob(os.path.join(results, "*", "config.json"))):
        folder = os.path.dirname(folder)
        with open(os.path.join(folder, "config.json")) as fh:
            cfg = json.load(fh)
        seeds, curves, times = [], [], []
        for path in sorted(glob.glob(os.path.join(folder, "test_accuracy_*.txt"))):
            m = _SEED_FILE.search(path)
            if m is None:
                continue
            seeds.append([int(m.group(1)), int(m.group(2))])
            curves.append(_curve(path))
            t = os.path.join(folder, f"train_time_tr_seed_{m.group(1)}_dd_seed_"
                             f"{m.group(2)}.txt")
            times.append(float(np.genfromtxt(t)) if os.path.isfile(t) else math.nan)
        if not curves:
            continue
        length = min(len(c) for c in curves)
        stack = np.stack([c[:length] for c in curves])
        bc = cfg["benchmark_config"]
        dist = bc["data_distribution"]
        cells.append({
            "folder": os.path.basename(folder),
            "dataset": cfg["model"]["dataset_name"], "model": cfg["model"]["name"],
            "aggregator": cfg["aggregator"]["name"],
            "pre_aggregators": [p["name"] for p in cfg.get("pre_aggregators", [])],
            "attack": cfg["attack"]["name"],
            "n": bc["nb_workers"], "f": bc["f"], "tolerated_f": bc["tolerated_f"],
            "distribution": dist["name"],
            "distribution_parameter": dist.get("distribution_parameter"),
            "learning_rate": cfg["model"]["learning_rate"],
            "momentum": cfg["honest_clients"]["momentum"],
            "weight_decay": cfg["honest_clients"]["weight_decay"],
            "nb_steps": bc["nb_steps"], "seeds": seeds,
            "byzfl_accuracy": float(stack.mean(axis=0).max()),
            "final": _stats(stack[:, -1].tolist()),
            "max": _stats(stack.max(axis=1).tolist()),
            "per_seed": [float(x) for x in stack[:, -1]],
            "train_time_s": times,
        })
    return {"cells": cells, "worst_case": worst_case(cells, results)}


def worst_case(cells: list[dict], results: str) -> list[dict]:
    """ByzFL's worst-case table: per (aggregator with pre-aggregators, f,
    distribution, parameter), the hyper-parameters ByzFL chose
    (``best_hyperparameters/hyperparameters/*.txt``; the first of each
    list when absent, as ``test_heatmap`` does) and, over the attacks, the
    smallest ``byzfl_accuracy`` at them."""
    chosen_dir = os.path.join(results, "best_hyperparameters", "hyperparameters")
    first = (math.nan,) * 3
    top = os.path.join(results, "config.json")
    if os.path.isfile(top):
        with open(top) as fh:
            cfg = json.load(fh)
        first = tuple(float(v[0] if isinstance(v, list) else v) for v in (
            cfg["model"]["learning_rate"], cfg["honest_clients"]["momentum"],
            cfg["honest_clients"]["weight_decay"]))
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        key = (c["aggregator"], "_".join(c["pre_aggregators"]), c["n"], c["f"],
               c["tolerated_f"], c["distribution"],
               str(c["distribution_parameter"]))
        groups.setdefault(key, []).append(c)
    rows = []
    for key, cs in groups.items():
        agg, pre, n, f, d, dist, param = key
        c0 = cs[0]
        name = (f"{c0['dataset']}_{c0['model']}_n_{n}_f_{f}_d_{d}_{dist}_{param}_"
                f"{pre}_{agg}.txt")
        path = os.path.join(chosen_dir, name)
        if os.path.isfile(path):
            lr, mom, wd = (float(x) for x in np.loadtxt(path))
        else:
            lr, mom, wd = first
        at = [c for c in cs if math.isclose(c["learning_rate"], lr)
              and math.isclose(c["momentum"], mom)
              and math.isclose(c["weight_decay"], wd)]
        if not at:
            continue
        worst = min(at, key=lambda c: c["byzfl_accuracy"])
        rows.append({"aggregator": agg, "pre_aggregators": pre, "n": n, "f": f,
                     "distribution": dist, "distribution_parameter": param,
                     "learning_rate": lr, "momentum": mom, "weight_decay": wd,
                     "worst_attack": worst["attack"],
                     "worst_accuracy": worst["byzfl_accuracy"],
                     "per_attack": {c["attack"]: c["byzfl_accuracy"] for c in at}})
    return sorted(rows, key=lambda r: (r["distribution"],
                                       r["distribution_parameter"],
                                       r["aggregator"], r["f"]))


def print_tables(read: dict) -> None:
    print("| aggregator | attack | f | distribution | lr | mom | wd | ByzFL acc "
          "(max of seed-mean curve) | final mean +- std | per seed | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in sorted(read["cells"], key=lambda c: (
            c["distribution"], str(c["distribution_parameter"]), c["aggregator"],
            c["f"], c["attack"])):
        agg = "+".join(c["pre_aggregators"] + [c["aggregator"]])
        seeds = ", ".join(f"{x:.3f}" for x in c["per_seed"])
        t = [x for x in c["train_time_s"] if np.isfinite(x)]
        print(f"| {agg} | {c['attack']} | {c['f']} | {c['distribution']} "
              f"{c['distribution_parameter']} | {c['learning_rate']} | "
              f"{c['momentum']} | {c['weight_decay']} | "
              f"{c['byzfl_accuracy']:.4f} | {c['final']['mean']:.4f} +- "
              f"{c['final']['std']:.4f} | {seeds} | "
              f"{np.mean(t) if t else math.nan:.1f} |")
    print()
    print("| aggregator | f | distribution | chosen lr, mom, wd | worst attack | "
          "worst-case accuracy |")
    print("|---|---|---|---|---|---|")
    for r in read["worst_case"]:
        agg = "+".join([p for p in r["pre_aggregators"].split("_") if p]
                       + [r["aggregator"]])
        print(f"| {agg} | {r['f']} | {r['distribution']} "
              f"{r['distribution_parameter']} | {r['learning_rate']:g}, "
              f"{r['momentum']:g}, {r['weight_decay']:g} | {r['worst_attack']} | "
              f"{r['worst_accuracy']:.4f} |")


# ------------------------------------------- check of byzjax's report view
#: ByzFL's names -> byzjax's, for the records of the check.
_NAMES = {"TrMean": "trimmed_mean", "GeometricMedian": "geometric_median",
          "SignFlipping": "sign_flip", "Optimal_ALittleIsEnough": "alie",
          "LabelFlipping": "label_flip"}


def synthetic_results(root: str, *, seed: int = 1) -> dict:
    """A ByzFL results folder with random validation and test curves (no
    training): 2 f x 2 distributions x 2 aggregators x 3 attacks x 2
    learning rates x 2 momenta, 2 training x 2 distribution seeds, 3
    evaluations. Returns its top ``config.json``."""
    import itertools

    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    lrs, moms, wds, fs, gammas = [0.1, 0.5], [0.9, 0.0], [0.0001], [1, 2], [1.0, 0.0]
    aggs = [{"name": "TrMean", "parameters": {}},
            {"name": "GeometricMedian", "parameters": {"nu": 0.1, "T": 3}}]
    pre = [{"name": "Clipping", "parameters": {}}, {"name": "NNM", "parameters": {}}]
    atts = [{"name": a, "parameters": {}} for a in
            ("SignFlipping", "Optimal_ALittleIsEnough", "LabelFlipping")]
    dist = {"name": "gamma_similarity_niid", "distribution_parameter": gammas}
    top = {"benchmark_config": {
        "training_seed": 0, "nb_training_seeds": 2, "nb_honest_clients": 10,
        "f": fs, "data_distribution_seed": 0, "nb_data_distribution_seeds": 2,
        "data_distribution": [dist], "set_honest_clients_as_clients": False,
        "nb_steps": 100, "size_train_set": 0.8},
        "model": {"name": "cnn_mnist", "dataset_name": "mnist", "learning_rate": lrs},
        "honest_clients": {"momentum": moms, "weight_decay": wds, "batch_size": 25},
        "aggregator": aggs, "pre_aggregators": pre, "attack": atts,
        "evaluation_and_results": {"evaluation_delta": 50}}
    with open(os.path.join(root, "config.json"), "w") as fh:
        json.dump(top, fh)
    rng = np.random.default_rng(seed)
    for f, g, agg, att, lr, mom, wd in itertools.product(fs, gammas, aggs, atts,
                                                         lrs, moms, wds):
        folder = os.path.join(root, (
            f"mnist_cnn_mnist_n_{10 + f}_f_{f}_d_{f}_gamma_similarity_niid_{g}_"
            f"{agg['name']}_Clipping_NNM_{att['name']}_lr_{lr}_mom_{mom}_wd_{wd}"))
        os.makedirs(folder)
        with open(os.path.join(folder, "config.json"), "w") as fh:
            json.dump({"benchmark_config": {
                "nb_workers": 10 + f, "f": f, "tolerated_f": f, "nb_steps": 100,
                "data_distribution": {"name": dist["name"],
                                      "distribution_parameter": g}},
                "model": {"name": "cnn_mnist", "dataset_name": "mnist",
                          "learning_rate": lr},
                "honest_clients": {"momentum": mom, "weight_decay": wd},
                "aggregator": agg, "pre_aggregators": pre, "attack": att}, fh)
        for tr, dd in itertools.product(range(2), range(2)):
            for kind in ("val", "test"):
                np.savetxt(os.path.join(
                    folder, f"{kind}_accuracy_tr_seed_{tr}_dd_seed_{dd}.txt"),
                    [np.round(rng.uniform(0.05, 0.95, 3), 4)], fmt="%.4f",
                    delimiter=",")
    return top


def _child_evaluate(root: str) -> None:
    """Runs in ByzFL's interpreter: its ``find_best_hyperparameters``, then
    its ``test_heatmap`` with the seaborn call intercepted (the numbers it
    would draw, one table per aggregator in the config's order)."""
    import importlib

    ev = importlib.import_module("byzfl.benchmark.evaluate_results")
    ev.find_best_hyperparameters(root)
    tables = []
    ev.sns.heatmap = lambda t, **kw: tables.append(
        {"table": np.asarray(t).tolist(), "f": list(kw["xticklabels"]),
         "distribution_parameter": list(kw["yticklabels"])})
    ev.test_heatmap(root, os.path.join(root, "..", "byzfl_plots"))
    print("BYZFL_HEATMAPS " + json.dumps(tables), flush=True)


def check_view(workdir: str, *, python: str) -> int:
    """byzjax's report view (``byzjax report --view byzfl``) against ByzFL's
    own evaluation of the same synthetic results; returns the number of
    cells that differ."""
    from byzjax import report
    from byzjax.sim import _store

    root = os.path.join(os.path.abspath(workdir), "results")
    top = synthetic_results(root)
    proc = subprocess.run([python, os.path.abspath(__file__), "--child-evaluate",
                           root], env=dict(os.environ, MPLBACKEND="Agg"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("BYZFL_HEATMAPS ")]
    if proc.returncode != 0 or not line:
        raise SystemExit("ByzFL's evaluation failed:\n" + proc.stdout[-3000:])
    heatmaps = json.loads(line[-1].split(" ", 1)[1])
    # The same runs as byzjax records: ByzFL's training and distribution
    # seeds as seed and split_seed, its momentum as beta.
    runs_dir = os.path.join(os.path.abspath(workdir), "byzjax", "runs")
    shutil.rmtree(os.path.dirname(runs_dir), ignore_errors=True)
    os.makedirs(runs_dir)
    i = 0
    for cell in read_results(root)["cells"]:
        for tr, dd in cell["seeds"]:
            curves = {k: _curve(os.path.join(
                root, cell["folder"], f"{k}_tr_seed_{tr}_dd_seed_{dd}.txt")).tolist()
                for k in ("val_accuracy", "test_accuracy")}
            cfg = {"dataset": "mnist", "split": "gamma_similarity",
                   "similarity_gamma": cell["distribution_parameter"],
                   "split_seed": dd, "aggregator": _NAMES[cell["aggregator"]],
                   "preaggregator": "nnm", "attack": _NAMES[cell["attack"]],
                   "num_byzantine": cell["f"], "num_workers": cell["n"],
                   "learning_rate": cell["learning_rate"],
                   "beta": cell["momentum"], "weight_decay": cell["weight_decay"],
                   "optimizer": "resam"}
            rec = {"run_id": f"r{i:05d}", "seed": tr, "config": cfg, "hparams": {
                k: cfg[k] for k in ("learning_rate", "beta", "weight_decay")},
                "metrics": dict(curves, round=[0, 50, 100]),
                "final_accuracy": curves["test_accuracy"][-1],
                "max_accuracy": max(curves["test_accuracy"]), "diverged": False,
                "diverged_round": -1}
            _store.write_record(os.path.join(runs_dir, rec["run_id"] + ".json"), rec)
            i += 1
    cells = report.worst_case_cells(report.load_runs(os.path.dirname(runs_dir)))
    chosen_dir = os.path.join(root, "best_hyperparameters", "hyperparameters")
    bad = total = 0
    for agg, hm in zip(top["aggregator"], heatmaps):
        ys = hm["distribution_parameter"]  # ByzFL draws them reversed
        for y, row in zip(ys, hm["table"]):
            for f, value in zip(hm["f"], row):
                c, = [c for c in cells if c["aggregator"] == _NAMES[agg["name"]]
                      and int(c["num_byzantine"]) == int(f)
                      and float(c["panel"]["similarity_gamma"]) == float(y)]
                lr, mom, _ = np.loadtxt(os.path.join(chosen_dir, (
                    f"mnist_cnn_mnist_n_{10 + int(f)}_f_{f}_d_{f}_"
                    f"gamma_similarity_niid_{y}_Clipping_NNM_{agg['name']}.txt")))
                same = (math.isclose(c["worst"], value, abs_tol=1e-9)
                        and c["setting"] == {"learning_rate": lr, "beta": mom})
                total += 1
                bad += not same
                print(f"{agg['name']:16} f={f} gamma={y}: ByzFL {value:.4f} at lr "
                      f"{lr:g}, momentum {mom:g}; byzjax view {c['worst']:.4f} at "
                      f"{c['label']} (chosen on {c['selected_on']}) "
                      f"{'same' if same else 'DIFFERENT'}")
    print(f"{total - bad} of {total} cells agree")
    return bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", help="ByzFL's config.json to run")
    p.add_argument("--workdir", default="byzfl_run",
                   help="folder of the run: config.json, results/, stdout")
    p.add_argument("--data-root", default=None,
                   help="torchvision root for MNIST (default: WORKDIR/data)")
    p.add_argument("--byzfl-python", default=DEFAULT_BYZFL_PYTHON,
                   help="interpreter with torch and byzfl")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--fresh", action="store_true",
                   help="delete WORKDIR/results first")
    p.add_argument("--json", default=None, help="write timings and cells here")
    p.add_argument("--read", metavar="RESULTS", default=None,
                   help="only read a ByzFL results folder and print its tables")
    p.add_argument("--check-view", metavar="DIR", default=None,
                   help="check byzjax's report view (--view byzfl) against "
                        "ByzFL's own evaluation of synthetic results in DIR")
    p.add_argument("--child", metavar="WORKDIR", default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--child-evaluate", metavar="RESULTS", default=None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.threads)
        return 0
    if args.child_evaluate:
        _child_evaluate(args.child_evaluate)
        return 0
    if args.check_view:
        return 1 if check_view(args.check_view, python=args.byzfl_python) else 0
    if args.read:
        read = read_results(args.read)
        print_tables(read)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(read, fh, indent=1)
        return 0
    if not args.config:
        p.error("give a ByzFL config.json (or --read RESULTS)")
    data_root = args.data_root or os.path.join(args.workdir, "data")
    prepare_mnist(data_root)
    timing, start = run_byzfl(args.config, args.workdir, python=args.byzfl_python,
                              threads=args.threads, fresh=args.fresh,
                              data_root=data_root)
    read = read_results(os.path.join(os.path.abspath(args.workdir), "results"))
    print_tables(read)
    timing["end_to_end_s"] = time.perf_counter() - start
    print(f"\nByzFL: {len(read['cells'])} cells, run_benchmark "
          f"{timing['byzfl_run_s']:.1f} s, end to end {timing['end_to_end_s']:.1f} s "
          f"(torch {timing['torch']}, {timing['torch_threads']} threads)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(read, timing=timing, config=os.path.abspath(args.config)),
                      fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
