"""``byzjax.byzfl``: ByzFL 0.0.11 benchmark configurations as byzjax sweeps.

The README sample of ByzFL's benchmark (``tests/data/byzfl_readme_config.json``)
becomes the expected sweep; every field's bad value is one line naming the
field, before anything is compiled or loaded; each ByzFL name and parameter
maps to its byzjax rule and keyword.
"""

from __future__ import annotations

import copy
import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byzjax import aggregators, byzfl, cli, sim
from byzjax.sim import _grid
from tests import helpers as H

README = os.path.join(os.path.dirname(__file__), "data", "byzfl_readme_config.json")


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", byzfl.ByzflWarning)
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def readme():
    return quiet(byzfl.read_config, README)


def small(**sections):
    """A valid one-setting ByzFL config, with ``sections`` merged in."""
    config = {"benchmark_config": {"nb_steps": 100, "f": 1, "nb_honest_clients": 4},
              "model": {"name": "fc_mnist"},
              "aggregator": {"name": "TrMean"},
              "attack": {"name": "SignFlipping"},
              "evaluation_and_results": {"evaluation_delta": 50}}
    for section, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **value}
        else:
            config[section] = value
    return config


def base_of(config):
    return quiet(byzfl.convert, config).sweep.base


# ----------------------------------------------------------- README sample
def test_readme_sample_trailing_comma_is_read_with_a_warning():
    with pytest.warns(byzfl.ByzflWarning, match="trailing comma at line 20"):
        config = byzfl.read_config(README)
    assert config["benchmark_config"]["f"] == [1, 2, 3, 4]


def test_readme_sample_becomes_the_expected_sweep(readme):
    with warnings.catch_warnings():
        warnings.simplefilter("error", byzfl.ByzflWarning)  # nothing differs
        conversion = byzfl.convert(readme, name="readme")
    assert conversion.notes == ()
    sweep = conversion.sweep
    assert conversion.num_settings == 2 * 3 * 4 * 4  # aggregators, attacks, f, gamma
    assert dict(sweep.grid) == {
        "aggregator": ["geometric_median", "trimmed_mean"],
        "attack": ["sign_flip", "adaptive_foe", "adaptive_alie"],
        "num_attackers": [1, 2, 3, 4],
        "similarity_gamma": [1.0, 0.66, 0.33, 0.0]}
    assert list(sweep.seeds) == [0, 1, 2] and dict(sweep.hparams) == {}
    overrides = [[dict(m), dict(c)] for m, c in sweep.overrides]
    assert overrides[:4] == [[{"num_attackers": f}, {"num_workers": 10 + f,
                                                     "num_byzantine": f}]
                             for f in (1, 2, 3, 4)]
    assert overrides[4] == [{"aggregator": "geometric_median"},
                            {"aggregator_kwargs": {"smoothing": 0.1,
                                                   "num_iterations": 3,
                                                   "tolerance": 0.0,
                                                   "init": "zeros"}}]
    # ByzFL's Optimal attacks: byzjax's adaptive ones with ByzFL's line search
    assert overrides[6:] == [[{"attack": "sign_flip"}, {"attack_kwargs": {}}],
                             [{"attack": "adaptive_foe"},
                              {"attack_kwargs": {"search": "line"}}],
                             [{"attack": "adaptive_alie"},
                              {"attack_kwargs": {"search": "line"}}]]
    b = sweep.base
    assert (b.model, b.dataset, b.split, b.split_among, b.label_sort_order) == (
        "cnn_mnist", "mnist", "gamma_similarity", "honest", "index")
    assert (b.optimizer, b.dampening, b.beta, b.clip_norm, b.learning_rate) == (
        "resam", -1.0, 0.9, 0.0, 0.1)
    assert (b.weight_decay, b.weight_decay_point, b.batch_size) == (
        1e-4, "server", 25)
    assert (b.num_rounds, b.eval_every, b.train_fraction, b.lr_schedule) == (
        800, 50, 0.8, "constant")
    # one initial model per data-distribution seed, as ByzFL builds it
    assert (b.split_seed, b.init_seed) == (0, 0)
    assert b.preaggregator == "chain"
    # ByzFL's clients send flat vectors: the rules see one row per client
    assert b.robust_layout == "flat"
    assert b.preaggregator_kwargs.to_dict() == {
        "steps": [["static_clipping", {"max_norm": 2.0}], ["nnm", {}]]}
    assert conversion.results_directory == "./results"


def test_readme_sweep_file_runs_as_a_byzjax_sweep(readme, tmp_path):
    conversion = quiet(byzfl.convert, readme, name="readme")
    path = byzfl.write_sweep(conversion, str(tmp_path / "s.py"), config=readme,
                             source=README)
    loaded = sim.load_sweep(path)
    assert sim.import_file(path).BYZFL_CONFIG == readme
    assert loaded.to_dict() == conversion.sweep.to_dict()
    groups = _grid.expand_sweep(loaded)
    assert len(groups) == 96 and sum(len(g.run_ids()) for g in groups) == 288
    # validating a group checks its whole pipeline (~0.5 s each): two of them
    loaded.grid = {"aggregator": ["geometric_median", "trimmed_mean"],
                   "attack": ["adaptive_alie"], "num_attackers": [3],
                   "similarity_gamma": [0.33]}
    groups = quiet(sim.validate_sweep, loaded)
    spec = groups[1].spec
    assert (spec.num_workers, spec.num_byzantine, spec.num_attackers) == (13, 3, 3)
    assert spec.similarity_gamma == 0.33 and dict(spec.aggregator_kwargs) == {}
    assert dict(groups[0].spec.aggregator_kwargs)["num_iterations"] == 3
    assert spec.robust_layout == "flat"


def test_byzfl_convert_command_writes_a_valid_sweep(tmp_path, capsys):
    config, out = tmp_path / "config.json", str(tmp_path / "s.py")
    config.write_text(json.dumps(small()))
    assert quiet(cli.main, ["byzfl-convert", str(config), "-o", out]) == 0
    assert "1 ByzFL settings x 1 seeds = 1 runs" in capsys.readouterr().out
    assert sim.load_sweep(out).base.aggregator == "trimmed_mean"


def test_sweep_byzfl_writes_the_sweep_beside_the_results(tmp_path, monkeypatch):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(small(evaluation_and_results={
        "evaluation_delta": 50, "results_directory": str(tmp_path / "res")})))
    seen = {}

    def fake_run_sweep(sweep, outdir, **kwargs):  # no training here
        seen.update(name=sweep.name, outdir=outdir)
        return {"runs": 0}

    monkeypatch.setattr(sim, "run_sweep", fake_run_sweep)
    assert quiet(cli.main, ["sweep", "--byzfl", str(config), "--no-report",
                            "--quiet"]) == 0
    assert seen == {"name": "byzfl_config", "outdir": str(tmp_path / "res")}
    assert sorted(os.listdir(tmp_path / "res")) == ["byzfl_config.json",
                                                    "byzfl_sweep.py"]
    sweep = sim.load_sweep(str(tmp_path / "res" / "byzfl_sweep.py"))
    assert sweep.base.model == "fc_mnist"


# --------------------------------------------------------- field mapping
@pytest.mark.parametrize("sections,want", [
    ({"aggregator": {"name": "Krum"}}, {"aggregator": "krum",
                                        "aggregator_kwargs": {"num_neighbours": 3}}),
    ({"aggregator": {"name": "MultiKrum"}},
     {"aggregator": "multi_krum", "aggregator_kwargs": {"num_neighbours": 3}}),
    ({"aggregator": {"name": "MoNNA", "parameters": {"idx": 2}}},
     {"aggregator": "monna", "aggregator_kwargs": {"pivot": 2}}),
    ({"aggregator": {"name": "CenteredClipping", "parameters": {"tau": 5.0,
                                                                "L": 2}}},
     {"aggregator": "centered_clipping",
      "aggregator_kwargs": {"radius": 5.0, "num_iterations": 2}}),
    ({"aggregator": {"name": "Median"}}, {"aggregator": "coordinate_median"}),
    ({"pre_aggregators": [{"name": "Clipping", "parameters": {"c": 3.0}}]},
     {"preaggregator": "static_clipping", "preaggregator_kwargs": {"max_norm": 3.0}}),
    ({"pre_aggregators": [{"name": "Bucketing", "parameters": {"s": 2}}]},
     {"preaggregator": "bucketing", "preaggregator_kwargs": {"bucket_size": 2}}),
    ({"attack": {"name": "ALittleIsEnough", "parameters": {"tau": 1.0}}},
     {"attack": "a_little_is_enough", "attack_kwargs": {"tau": 1.0}}),
    ({"attack": {"name": "InnerProductManipulation", "parameters": {"tau": 0.5}}},
     {"attack": "inner_product_manipulation", "attack_kwargs": {"tau": 0.5}}),
    ({"attack": {"name": "Optimal_ALittleIsEnough", "parameters": {
        "evals": 5, "start": -1.0, "delta": 2.0, "ratio": 0.9}}},
     {"attack": "adaptive_alie", "attack_kwargs": {
         "search": "line", "evals": 5, "start": -1.0, "delta": 2.0, "ratio": 0.9}}),
    ({"attack": {"name": "Mimic", "parameters": {"epsilon": 1}}},
     {"attack": "mimic", "attack_kwargs": {"index": 1}}),
    ({"model": {"learning_rate_decay": 0.5, "milestones": [60, 20]}},
     {"lr_schedule": "multistep", "lr_milestones": "20,60", "lr_decay_factor": 0.5}),
    ({"benchmark_config": {"data_distribution": {
        "name": "dirichlet_niid", "distribution_parameter": 0.3}}},
     {"split": "dirichlet", "dirichlet_alpha": 0.3}),
    ({"benchmark_config": {"data_distribution_seed": 4}},
     {"split_seed": 4, "init_seed": 4}),
    ({"benchmark_config": {"data_distribution": {"name": "extreme_niid"}}},
     {"split": "label_sorted", "label_sort_order": "index"}),
    ({"benchmark_config": {"set_honest_clients_as_clients": True,
                           "tolerated_f": 2}},
     {"num_workers": 4, "num_attackers": 1, "num_byzantine": 2}),
    ({"model": {"name": "ResNet18", "dataset_name": "cifar10",
                "loss": "CrossEntropyLoss"}},
     {"model": "resnet18", "dataset": "cifar10"}),
])
def test_fields_map_to_byzjax(sections, want):
    base = base_of(small(**sections))
    for key, value in want.items():
        got = base[key]
        got = got.to_dict() if hasattr(got, "to_dict") else got
        assert got == value, key


def test_float_lists_are_vmapped_axes_and_other_lists_grid_axes():
    config = small(model={"learning_rate": [0.1, 0.05]},
                   honest_clients={"momentum": [0.0, 0.9], "batch_size": [8, 16]})
    sweep = quiet(byzfl.convert, config).sweep
    assert dict(sweep.hparams) == {"learning_rate": [0.1, 0.05], "beta": [0.0, 0.9]}
    assert dict(sweep.grid) == {"batch_size": [8, 16]}


def test_settings_that_are_no_product_become_extra_groups():
    config = small(benchmark_config={"data_distribution": [
        {"name": "iid"},
        {"name": "gamma_similarity_niid", "distribution_parameter": [0.5, 0.0]}]})
    sweep = quiet(byzfl.convert, config).sweep
    groups = quiet(sim.validate_sweep, sweep)
    got = [(g.spec.split, g.spec.similarity_gamma) for g in groups]
    assert got == [("iid", 0.5), ("gamma_similarity", 0.5),
                   ("gamma_similarity", 0.0)]


def test_declared_f_below_real_f_is_dropped_as_byzfl_does():
    config = small(benchmark_config={"f": [1, 2], "tolerated_f": [1, 2]})
    assert quiet(byzfl.convert, config).num_settings == 3


# ------------------------------------------------------------ bad values
BAD = [
    ("benchmark_confg", {}, "benchmark_confg"),
    ("benchmark_config", {"nb_stepz": 5}, "benchmark_config.nb_stepz"),
    ("benchmark_config", {"training_algorithm": {"name": "FedAvg"}},
     "benchmark_config.training_algorithm.name"),
    ("benchmark_config", {"training_algorithm": {"name": "DSGD",
                                                 "parameters": {"x": 1}}},
     "benchmark_config.training_algorithm.parameters"),
    ("benchmark_config", {"nb_steps": 0}, "benchmark_config.nb_steps"),
    ("benchmark_config", {"nb_workers": 5}, "benchmark_config.nb_workers"),
    ("benchmark_config", {"device": 3}, "benchmark_config.device"),
    ("benchmark_config", {"training_seed": -1}, "benchmark_config.training_seed"),
    ("benchmark_config", {"nb_training_seeds": 0},
     "benchmark_config.nb_training_seeds"),
    ("benchmark_config", {"training_seed": [0, 5]},
     "benchmark_config.training_seed"),
    ("benchmark_config", {"nb_honest_clients": 0},
     "benchmark_config.nb_honest_clients"),
    ("benchmark_config", {"f": -1}, "benchmark_config.f"),
    ("benchmark_config", {"f": 0.5}, "benchmark_config.f"),
    ("benchmark_config", {"tolerated_f": "x"}, "benchmark_config.tolerated_f"),
    ("benchmark_config", {"set_honest_clients_as_clients": 1},
     "benchmark_config.set_honest_clients_as_clients"),
    ("benchmark_config", {"size_train_set": 0.0}, "benchmark_config.size_train_set"),
    ("benchmark_config", {"data_distribution_seed": -2},
     "benchmark_config.data_distribution_seed"),
    ("benchmark_config", {"nb_data_distribution_seeds": 0},
     "benchmark_config.nb_data_distribution_seeds"),
    ("benchmark_config", {"data_distribution": {"name": "niid"}},
     "benchmark_config.data_distribution.name"),
    ("benchmark_config", {"data_distribution": {
        "name": "gamma_similarity_niid", "distribution_parameter": 1.5}},
     "benchmark_config.data_distribution.distribution_parameter"),
    ("benchmark_config", {"data_distribution": {
        "name": "dirichlet_niid", "distribution_parameter": 0.0}},
     "benchmark_config.data_distribution.distribution_parameter"),
    ("model", {"name": "cnn_mnst"}, "model.name"),
    ("model", {"dataset_name": "imagenet"}, "model.dataset_name"),
    ("model", {"dataset_name": "cifar100"}, "model.dataset_name"),
    ("model", {"nb_labels": 100}, "model.nb_labels"),
    ("model", {"loss": "MSELoss"}, "model.loss"),
    ("model", {"name": "cnn_cifar", "dataset_name": "cifar10"}, "model.loss"),
    ("model", {"optimizer_name": "Adam"}, "model.optimizer_name"),
    ("model", {"learning_rate": 0.0}, "model.learning_rate"),
    ("model", {"learning_rate_decay": 1.5}, "model.learning_rate_decay"),
    ("model", {"milestones": [10, 10]}, "model.milestones"),
    ("aggregator", {"name": "Bulyan"}, "aggregator.name"),
    ("aggregator", {"name": "TrMean", "parameters": {"f": 2}},
     "aggregator.parameters.f"),
    ("aggregator", {"name": "GeometricMedian", "parameters": {"eps": 1.0}},
     "aggregator.parameters.eps"),
    ("aggregator", {"name": "CenteredClipping", "parameters": {"m": [0.0]}},
     "aggregator.parameters.m"),
    ("aggregator", {"name": "GeometricMedian", "parameters": {"T": -1}},
     "aggregator.parameters"),
    ("pre_aggregators", [{"name": "Clip"}], "pre_aggregators.0.name"),
    ("pre_aggregators", [{"name": "Clipping", "parameters": {"c": -1.0}}],
     "pre_aggregators.0.parameters"),
    ("pre_aggregators", [{"name": "NNM"}, {"name": "Bucketing"}],
     "pre_aggregators.1.name"),
    ("honest_clients", {"momentum": 1.0}, "honest_clients.momentum"),
    ("honest_clients", {"weight_decay": -1.0}, "honest_clients.weight_decay"),
    ("honest_clients", {"batch_size": 0}, "honest_clients.batch_size"),
    ("honest_clients", {"lr": 1}, "honest_clients.lr"),
    ("attack", {"name": "Gaussian"}, "attack.name"),
    ("attack", {"name": "NoAttack"}, "attack.name"),
    ("attack", {"name": "Optimal_ALittleIsEnough", "parameters": {"delta": 10}},
     "attack.parameters.delta"),
    ("attack", {"name": "Optimal_InnerProductManipulation",
                "parameters": {"ratio": 0.5}}, "attack.parameters.ratio"),
    ("attack", {"name": "Optimal_InnerProductManipulation",
                "parameters": {"start": float("nan")}}, "attack.parameters"),
    ("attack", {"name": "Mimic", "parameters": {"eps": 1}}, "attack.parameters.eps"),
    ("evaluation_and_results", {"evaluation_delta": 30},
     "evaluation_and_results.evaluation_delta"),
    ("evaluation_and_results", {"batch_size_evaluation": 0},
     "evaluation_and_results.batch_size_evaluation"),
    ("evaluation_and_results", {"evaluate_on_test": False},
     "evaluation_and_results.evaluate_on_test"),
    ("evaluation_and_results", {"store_per_client_metrics": "yes"},
     "evaluation_and_results.store_per_client_metrics"),
    ("evaluation_and_results", {"store_models": 0},
     "evaluation_and_results.store_models"),
    ("evaluation_and_results", {"data_folder": 1},
     "evaluation_and_results.data_folder"),
    ("evaluation_and_results", {"results_directory": 1},
     "evaluation_and_results.results_directory"),
]


@pytest.mark.parametrize("section,value,field", BAD,
                         ids=[f"{f}-{i}" for i, (_, _, f) in enumerate(BAD)])
def test_a_bad_field_is_one_line_naming_it(section, value, field):
    config = small()
    if isinstance(value, dict) and isinstance(config.get(section), dict) and (
            section not in ("aggregator", "attack")):
        config[section] = {**config[section], **value}
    else:
        config[section] = copy.deepcopy(value)
    with pytest.raises(sim.ConfigError) as err:
        quiet(byzfl.convert, config)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"ByzFL {field}"), text
    assert err.value.field == field


# -------------------------------------------------- the pre-aggregator chain
def test_chain_is_clipping_then_nnm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5)) * rng.uniform(0.1, 5, size=(7, 1))
    chain = jax.jit(lambda w: aggregators.pre_aggregation_chain(
        {"w": w}, num_byzantine=2,
        steps=[["static_clipping", {"max_norm": 1.0}], ["nnm", {}]])["w"])
    got = chain(jnp.asarray(x, jnp.float32))
    clipped = x * np.minimum(1.0, 1.0 / np.linalg.norm(x, axis=1, keepdims=True))
    np.testing.assert_allclose(np.asarray(got), H.ref_nnm(clipped, 2), rtol=1e-5,
                               atol=1e-6)
