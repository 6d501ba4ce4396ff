"""ByzFL benchmark configurations as byzjax sweeps.

ByzFL (Allouah et al., "ByzFL: Research Framework for Robust Federated
Learning", EPFL, 2025, https://arxiv.org/abs/2505.24802; ``byzfl`` 0.0.11)
runs its benchmark from one ``config.json``. :func:`convert` reads such a
configuration and returns the byzjax sweep that runs the same experiments;
``byzjax sweep --byzfl config.json`` runs it and writes the sweep file it
implies beside the results (``byzfl_sweep.py``), so the run is reproducible as
a plain byzjax sweep; ``byzjax byzfl-convert config.json -o sweep.py`` only
writes the file.

ByzFL expands every list in its configuration into a product of settings
(``generate_all_combinations``, where ``pre_aggregators`` and ``milestones``
are lists of one setting unless they hold lists), drops the settings whose
real number of Byzantine clients exceeds the declared one, and runs each
setting for ``nb_training_seeds`` training seeds and ``nb_data_distribution_seeds``
data-distribution seeds. :func:`expand` does the same; :func:`convert` maps
each setting field by field (``docs/BYZFL.md`` has the table) and factors the
settings back into grid axes, ``hparams`` axes (the learning rate, the
momentum and the weight decay, vmapped) and per-rule ``overrides``.

Every field is mapped or refused: a field byzjax cannot honour raises
:class:`~byzjax.sim.ConfigError` (one line, naming the ByzFL field and why)
before any data is loaded; a field mapped to a byzjax definition that differs
from ByzFL's in a detail (documented in ``docs/BYZFL.md``) gives one
:class:`ByzflWarning` line.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import os
import pprint
import re
import textwrap
import warnings
from typing import Any, Mapping, NamedTuple

import ml_collections

from byzjax import aggregators, attacks, models
from byzjax.sim import ConfigError, get_config

__all__ = ["ByzflWarning", "Conversion", "read_config", "expand", "convert",
           "sweep_source", "write_sweep", "BYZFL_MODELS", "BYZFL_AGGREGATORS",
           "BYZFL_PRE_AGGREGATORS", "BYZFL_ATTACKS", "BYZFL_DISTRIBUTIONS"]


class ByzflWarning(UserWarning):
    """A ByzFL field mapped to a byzjax definition that differs in a detail."""


#: The sections and keys of a ByzFL 0.0.11 benchmark configuration (its
#: ``ParamsManager``), with ByzFL's defaults (``None``: computed, or no default).
_SCHEMA: dict[str, Any] = {
    "benchmark_config": {
        "training_algorithm": {"name": "DSGD", "parameters": {}},
        "nb_steps": 1000, "device": "cpu", "training_seed": 0,
        "nb_training_seeds": 1, "nb_honest_clients": 10, "f": 0,
        "tolerated_f": None, "set_honest_clients_as_clients": False,
        "size_train_set": 0.8, "data_distribution_seed": 0,
        "nb_data_distribution_seeds": 1,
        "data_distribution": {"name": "iid", "distribution_parameter": 1.0},
        "nb_workers": None,
    },
    "model": {
        "name": "cnn_mnist", "dataset_name": "mnist", "nb_labels": 10,
        "loss": "NLLLoss", "learning_rate": 0.1, "learning_rate_decay": 1.0,
        "milestones": [], "optimizer_name": "SGD",
    },
    "aggregator": {"name": "Average", "parameters": {}},
    "pre_aggregators": [],
    "honest_clients": {"momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32},
    "attack": {"name": "NoAttack", "parameters": {}},
    "evaluation_and_results": {
        "evaluation_delta": 50, "batch_size_evaluation": 128,
        "evaluate_on_test": True, "store_per_client_metrics": True,
        "store_models": False, "data_folder": "./data",
        "results_directory": "./results",
    },
}

#: ByzFL model name -> byzjax model name (:mod:`byzjax.models`).
BYZFL_MODELS = {"fc_mnist": "fc_mnist", "cnn_mnist": "cnn_mnist",
                "logreg_mnist": "logreg_mnist", "cnn_cifar": "cnn_cifar",
                "ResNet18": "resnet18", "ResNet34": "resnet34",
                "ResNet50": "resnet50", "ResNet101": "resnet101",
                "ResNet152": "resnet152"}

#: ByzFL dataset -> byzjax dataset; None: refused, with the reason.
_DATASETS: dict[str, tuple[str | None, str]] = {
    "mnist": ("mnist", ""),
    "fashionmnist": ("fashion_mnist", "ByzFL flips Fashion-MNIST images "
                     "horizontally at random and does not normalise them; byzjax "
                     "normalises with the training set's mean and std and does "
                     "not augment"),
    "cifar10": ("cifar10", "ByzFL augments CIFAR-10 (random crop with padding 4, "
                "horizontal flip) and normalises with fixed statistics; byzjax "
                "does not augment and normalises with the training set's own"),
    "cifar100": (None, "ByzFL's models have 10 outputs, so ByzFL cannot train "
                 "on CIFAR-100's 100 labels"),
    "emnist": (None, "EMNIST is not a byzjax dataset"),
    "imagenet": (None, "ImageNet is not a byzjax dataset"),
}

#: ByzFL aggregator -> (byzjax aggregator, {ByzFL parameter: byzjax keyword}).
BYZFL_AGGREGATORS: dict[str, tuple[str, dict[str, str]]] = {
    "Average": ("mean", {}),
    "Median": ("coordinate_median", {}),
    "TrMean": ("trimmed_mean", {}),
    "GeometricMedian": ("geometric_median", {"nu": "smoothing",
                                             "T": "num_iterations"}),
    "Krum": ("krum", {}),
    "MultiKrum": ("multi_krum", {}),
    "CenteredClipping": ("centered_clipping", {"tau": "radius",
                                               "L": "num_iterations"}),
    "MDA": ("mda", {}),
    "MoNNA": ("monna", {"idx": "pivot"}),
    "Meamed": ("meamed", {}),
    "CAF": ("caf", {}),
    "SMEA": ("smea", {}),
}

#: ByzFL pre-aggregator -> (byzjax pre-aggregator, {parameter: keyword}).
BYZFL_PRE_AGGREGATORS: dict[str, tuple[str, dict[str, str]]] = {
    "Clipping": ("static_clipping", {"c": "max_norm"}),
    "NNM": ("nnm", {}),
    "Bucketing": ("bucketing", {"s": "bucket_size"}),
    "ARC": ("arc", {}),
}

#: The line search's parameters of ByzFL's Optimal attacks (the benchmark
#: passes them on from ``attack.parameters``), the same keywords of byzjax's
#: adaptive attacks with ``search="line"``.
_LINE_SEARCH = {"evals": "evals", "start": "start", "delta": "delta",
                "ratio": "ratio"}

#: ByzFL attack -> (byzjax attack, {parameter: keyword}). ByzFL's Optimal
#: attacks are byzjax's adaptive ones with ``search="line"`` (ByzFL's line
#: search over its ``tau``, so ByzFL's row).
BYZFL_ATTACKS: dict[str, tuple[str, dict[str, str]]] = {
    "NoAttack": ("none", {}),
    "SignFlipping": ("sign_flip", {}),
    "InnerProductManipulation": ("inner_product_manipulation", {"tau": "tau"}),
    "Optimal_InnerProductManipulation": ("adaptive_foe", _LINE_SEARCH),
    "ALittleIsEnough": ("a_little_is_enough", {"tau": "tau"}),
    "Optimal_ALittleIsEnough": ("adaptive_alie", _LINE_SEARCH),
    "Mimic": ("mimic", {"epsilon": "index"}),
    "Inf": ("inf", {}),
    "LabelFlipping": ("label_flip", {}),
}

#: ByzFL data distribution -> (byzjax split, config field of its parameter).
BYZFL_DISTRIBUTIONS: dict[str, tuple[str, str | None]] = {
    "iid": ("iid", None),
    "gamma_similarity_niid": ("gamma_similarity", "similarity_gamma"),
    "dirichlet_niid": ("dirichlet", "dirichlet_alpha"),
    "extreme_niid": ("label_sorted", None),
}

#: Parameters ByzFL's rules take that byzjax cannot honour -> why.
_REFUSED_PARAMETERS = {
    ("CenteredClipping", "m"): "ByzFL's own type check refuses every value "
    "(it needs an array that is both NumPy and PyTorch); byzjax starts at zeros",
}

#: Why a ByzFL attack is refused.
_REFUSED_ATTACKS = {
    "Gaussian": "ByzFL sends one N(mu, sigma^2) vector for all Byzantine "
    "clients, byzjax's gaussian is the honest mean plus fresh noise per row",
}

_OPTIMAL = {"Optimal_InnerProductManipulation", "Optimal_ALittleIsEnough"}

#: Notes of fields mapped to a definition that differs in a detail.
_NOTES = {
    "label_flip": "LabelFlipping: ByzFL sends the mean of the honest clients' "
    "flipped-label gradients (no momentum); byzjax's Byzantine workers each send "
    "their own flipped-label gradient through worker momentum",
    "spectral": "{name}: ByzFL estimates each top eigenvalue with one random "
    "power-iteration step, byzjax computes it exactly",
    "batchnorm": "{name}: ByzFL's server never updates its BatchNorm running "
    "averages (it evaluates with mean 0, variance 1); byzjax evaluates with "
    "running averages of the honest workers' batch statistics",
}


def _bad(path: str, message: str) -> ConfigError:
    return ConfigError(f"ByzFL {path}: {message}", field=path)


def _closest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------ reading
def read_config(path: str) -> dict:
    """The ByzFL configuration in the JSON file ``path``.

    A trailing comma before ``}`` or ``]`` (ByzFL's README sample has one,
    which ByzFL's own ``json.load`` refuses) is accepted with a
    :class:`ByzflWarning`.

    Raises:
      ConfigError: no such file, or not JSON (with the line).
    """
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"ByzFL config {path!r}: {e.strerror}",
                          field="config") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        fixed = re.sub(r",(\s*[}\]])", r"\1", text)
        try:
            data = json.loads(fixed)
        except json.JSONDecodeError:
            raise ConfigError(f"ByzFL config {path!r} is not JSON: {e.msg} at line "
                              f"{e.lineno}", field="config") from None
        warnings.warn(f"ByzFL config {path!r}: trailing comma at line {e.lineno} "
                      "(not JSON; ByzFL's json.load would refuse it), read as if "
                      "absent", ByzflWarning, stacklevel=2)
    if not isinstance(data, dict):
        raise ConfigError(f"ByzFL config {path!r} must be a JSON object",
                          field="config")
    return data


# ---------------------------------------------------------------- expanding
def _combinations(orig: Any, rest: tuple[str, ...]) -> list[dict]:
    """ByzFL 0.0.11's ``generate_all_combinations`` (``benchmark.py``), rewritten."""
    out: list[dict] = [{}]
    for key, value in orig.items():
        options: list[Any]
        if isinstance(value, list):
            if not value or (key in rest and not isinstance(value[0], list)):
                options = [value]
            else:
                options = []
                for item in value:
                    options += (_combinations(item, rest) if isinstance(item, dict)
                                else [item])
        elif isinstance(value, dict):
            options = _combinations(value, rest)
        else:
            options = [value]
        out = [{**done, key: copy.deepcopy(o)} for done in out for o in options]
    return out


def _check_keys(config: Mapping) -> None:
    for key in config:
        if key not in _SCHEMA:
            raise _bad(key, f"unknown section{_closest(key, _SCHEMA)}; ByzFL reads "
                       f"{', '.join(_SCHEMA)}")
    for section, keys in _SCHEMA.items():
        value = config.get(section)
        if isinstance(keys, dict) and "name" not in keys and value is not None:
            if not isinstance(value, dict):
                raise _bad(section, f"must be an object, got {value!r}")
            for key in value:
                if key not in keys:
                    raise _bad(f"{section}.{key}", "unknown field"
                               f"{_closest(key, keys)}; ByzFL reads "
                               f"{', '.join(keys)}")


def expand(config: Mapping) -> list[dict]:
    """ByzFL's settings of ``config``: its lists expanded as ByzFL expands them.

    The seeds are not expanded (``training_seed`` / ``nb_training_seeds``
    become the sweep's seeds; the data-distribution seeds one grid axis).
    Settings with ``f > tolerated_f`` are dropped, as ByzFL drops them; without
    ``tolerated_f`` it is ``f``.

    Example:
      >>> len(expand({"benchmark_config": {"f": [1, 2], "tolerated_f": [1, 2]},
      ...             "attack": [{"name": "SignFlipping"}, {"name": "Inf"}]}))
      6
    """
    _check_keys(config)
    full = {section: config.get(section, copy.deepcopy(default))
            for section, default in _SCHEMA.items()}
    settings = []
    for s in _combinations(full, ("pre_aggregators", "milestones")):
        bench = s["benchmark_config"]
        declared = bench.get("tolerated_f")
        if declared is not None and not isinstance(declared, bool) and isinstance(
                declared, int) and isinstance(bench.get("f"), int) and (
                declared < bench["f"]):
            continue
        settings.append(s)
    return settings


def _value(setting: Mapping, section: str, key: str | None = None) -> Any:
    raw = setting.get(section)
    default = _SCHEMA[section] if key is None else _SCHEMA[section][key]
    if key is None:
        return default if raw is None else raw
    if not isinstance(raw, dict) or key not in raw or raw[key] is None:
        return default
    return raw[key]


def _int(path: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(path, f"must be an integer >= {low}, got {value!r}")
    return value


def _number(path: str, value: Any, low: float | None = None,
            high: float | None = None, *, low_open: bool = False,
            high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(path, f"must be a number, got {value!r}")
    value = float(value)
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        rng = f"in {lo}, {hi}" if low is not None and high is not None else (
            f"{'>' if low_open else '>='} {low:g}" if low is not None
            else f"{'<' if high_open else '<='} {high:g}")
        raise _bad(path, f"must be {rng}, got {value!r}")
    return value


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(path, f"must be true or false, got {value!r}")
    return value


def _rule(path: str, info: Any, table: Mapping[str, tuple[str, dict]],
          kind: str, refused: Mapping[str, str] = {}) -> tuple[str, str, dict]:
    """``(ByzFL name, byzjax name, {byzjax keyword: value})`` of one rule."""
    if not isinstance(info, dict) or not isinstance(info.get("name"), str):
        raise _bad(path, f"must be an object with a 'name' (a {kind}), got "
                   f"{info!r}")
    for key in info:
        if key not in ("name", "parameters"):
            raise _bad(f"{path}.{key}", "unknown field; a rule has name and "
                       "parameters")
    name = info["name"]
    if name in refused:
        raise _bad(f"{path}.name", f"{name!r} is not supported: {refused[name]}")
    if name not in table:
        raise _bad(f"{path}.name", f"unknown ByzFL {kind} {name!r}"
                   f"{_closest(name, table)}; byzjax maps {', '.join(table)}")
    params = info.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad(f"{path}.parameters", f"must be an object, got {params!r}")
    target, names = table[name]
    kwargs = {}
    for key, value in params.items():
        where = f"{path}.parameters.{key}"
        if key == "f":
            raise _bad(where, "ByzFL overwrites it with the declared number of "
                       "Byzantine clients; set benchmark_config.tolerated_f")
        if (name, key) in _REFUSED_PARAMETERS:
            raise _bad(where, f"not supported: {_REFUSED_PARAMETERS[(name, key)]}")
        if name in _OPTIMAL:
            _check_line_search(where, key, value)
        if key not in names:
            raise _bad(where, f"{name} takes no parameter {key!r}"
                       + (f"; it takes {', '.join(names)}" if names else ""))
        kwargs[names[key]] = value
    return name, target, kwargs


def _check_line_search(where: str, key: str, value: Any) -> None:
    """ByzFL's own checks of its Optimal attacks' line-search parameters (it
    raises on a bad value, so the benchmark would not run)."""
    if key == "evals":
        ok, what = (isinstance(value, int) and not isinstance(value, bool)
                    and value > 0), "a positive integer"
    elif key == "delta":
        ok, what = isinstance(value, float) and value != 0, "a non-zero float"
    elif key == "ratio":
        ok, what = (isinstance(value, float) and 0.5 < value < 1,
                    "a float in (0.5, 1) exclusive")
    elif key == "start":
        ok, what = isinstance(value, float), "a float"
    else:
        return
    if not ok:
        raise _bad(where, f"must be {what} (ByzFL refuses it: the benchmark "
                   f"would not start), got {value!r}")


# ----------------------------------------------------------------- mapping
class _Setting(NamedTuple):
    fields: dict
    hparams: dict
    seeds: tuple[int, ...]
    outdir: str
    notes: tuple[str, ...]


def _map(s: Mapping) -> _Setting:
    """One ByzFL setting -> byzjax config fields (floats apart)."""
    notes: list[str] = []
    b = "benchmark_config"
    algo = _value(s, b, "training_algorithm")
    if not isinstance(algo, dict) or algo.get("name", "DSGD") != "DSGD":
        name = algo.get("name") if isinstance(algo, dict) else algo
        raise _bad(f"{b}.training_algorithm.name", f"{name!r} is not supported: "
                   "byzjax runs ByzFL's DSGD (FedAvg's client sampling and local "
                   "steps have no byzjax counterpart)")
    if algo.get("parameters"):
        raise _bad(f"{b}.training_algorithm.parameters", "DSGD takes no "
                   f"parameters, got {algo['parameters']!r}")
    if s.get(b, {}).get("nb_workers") is not None:
        raise _bad(f"{b}.nb_workers", "ByzFL computes it (nb_honest_clients + f); "
                   "set nb_honest_clients")
    f = _int(f"{b}.f", _value(s, b, "f"), 0)
    declared = s.get(b, {}).get("tolerated_f")
    declared = f if declared is None else _int(f"{b}.tolerated_f", declared, 0)
    honest = _int(f"{b}.nb_honest_clients", _value(s, b, "nb_honest_clients"), 1)
    if _bool(f"{b}.set_honest_clients_as_clients",
             _value(s, b, "set_honest_clients_as_clients")):
        n, honest = honest, honest - f
        if honest < 1:
            raise _bad(f"{b}.f", f"f = {f} leaves no honest client of "
                       f"nb_honest_clients = {n} (set_honest_clients_as_clients)")
    else:
        n = honest + f
    fields: dict[str, Any] = dict(
        num_workers=n, num_byzantine=declared, num_attackers=f,
        num_rounds=_int(f"{b}.nb_steps", _value(s, b, "nb_steps"), 1),
        train_fraction=_number(f"{b}.size_train_set", _value(s, b, "size_train_set"),
                               0.0, 1.0, low_open=True),
        split_seed=None)
    device = _value(s, b, "device")
    if not isinstance(device, str):
        raise _bad(f"{b}.device", f"must be a string, got {device!r}")
    seeds = (_int(f"{b}.training_seed", _value(s, b, "training_seed"), 0),
             _int(f"{b}.nb_training_seeds", _value(s, b, "nb_training_seeds"), 1))
    dd = (_int(f"{b}.data_distribution_seed", _value(s, b, "data_distribution_seed"),
               0),
          _int(f"{b}.nb_data_distribution_seeds",
               _value(s, b, "nb_data_distribution_seeds"), 1))
    fields["split_seed"] = dd
    # data distribution
    dist = _value(s, b, "data_distribution")
    path = f"{b}.data_distribution"
    if not isinstance(dist, dict) or not isinstance(dist.get("name"), str):
        raise _bad(path, f"must be an object with a 'name', got {dist!r}")
    for key in dist:
        if key not in ("name", "distribution_parameter"):
            raise _bad(f"{path}.{key}", "unknown field; a distribution has name "
                       "and distribution_parameter")
    if dist["name"] not in BYZFL_DISTRIBUTIONS:
        raise _bad(f"{path}.name", f"unknown ByzFL distribution {dist['name']!r}"
                   f"{_closest(dist['name'], BYZFL_DISTRIBUTIONS)}; ByzFL has "
                   f"{', '.join(BYZFL_DISTRIBUTIONS)}")
    split, param_field = BYZFL_DISTRIBUTIONS[dist["name"]]
    fields.update(split=split, split_among="honest")
    param = dist.get("distribution_parameter", 1.0)
    where = f"{path}.distribution_parameter"
    if param_field == "similarity_gamma":
        fields[param_field] = _number(where, param, 0.0, 1.0)
    elif param_field == "dirichlet_alpha":
        fields[param_field] = _number(where, param, 0.0, low_open=True)
    else:
        _number(where, param)  # read by ByzFL's type check only
    if split in ("label_sorted", "gamma_similarity"):
        fields["label_sort_order"] = "index"
    # model
    m = "model"
    name = _value(s, m, "name")
    if name not in BYZFL_MODELS:
        raise _bad(f"{m}.name", f"unknown ByzFL model {name!r}"
                   f"{_closest(str(name), BYZFL_MODELS)}; ByzFL has "
                   f"{', '.join(BYZFL_MODELS)}")
    fields["model"] = BYZFL_MODELS[name]
    info = models.info(fields["model"])
    if info.batch_norm:
        notes.append(_NOTES["batchnorm"].format(name=name))
    dataset = _value(s, m, "dataset_name")
    if dataset not in _DATASETS:
        raise _bad(f"{m}.dataset_name", f"unknown ByzFL dataset {dataset!r}"
                   f"{_closest(str(dataset), _DATASETS)}; ByzFL has "
                   f"{', '.join(_DATASETS)}")
    target, why = _DATASETS[dataset]
    if target is None:
        raise _bad(f"{m}.dataset_name", f"{dataset!r} is not supported: {why}")
    if why:
        notes.append(f"{dataset}: {why}")
    fields.update(dataset=target, data_source="auto")
    if _int(f"{m}.nb_labels", _value(s, m, "nb_labels"), 2) != 10:
        raise _bad(f"{m}.nb_labels", "must be 10: ByzFL's models have 10 outputs "
                   f"and the datasets byzjax maps have 10 labels, got "
                   f"{_value(s, m, 'nb_labels')!r}")
    loss = _value(s, m, "loss")
    if loss == "NLLLoss" and info.output != "log_softmax":
        raise _bad(f"{m}.loss", f"NLLLoss of {name}'s {info.output} outputs is "
                   "not a cross-entropy (ByzFL's NLLLoss of them is -output[y]); "
                   "byzjax trains with the cross-entropy: set CrossEntropyLoss")
    if loss not in ("NLLLoss", "CrossEntropyLoss"):
        raise _bad(f"{m}.loss", f"{loss!r} is not supported: byzjax trains with "
                   "the cross-entropy (CrossEntropyLoss, or NLLLoss of "
                   "log-probabilities)")
    if _value(s, m, "optimizer_name") != "SGD":
        raise _bad(f"{m}.optimizer_name", f"{_value(s, m, 'optimizer_name')!r} is "
                   "not supported: byzjax's server takes SGD steps")
    hparams = {"learning_rate": _number(f"{m}.learning_rate",
                                        _value(s, m, "learning_rate"), 0.0,
                                        low_open=True)}
    decay = _number(f"{m}.learning_rate_decay", _value(s, m, "learning_rate_decay"),
                    0.0, 1.0, low_open=True)
    milestones = _value(s, m, "milestones")
    if not isinstance(milestones, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 1
            for x in milestones) or len(set(milestones)) != len(milestones):
        raise _bad(f"{m}.milestones", "must be a list of distinct integers >= 1, "
                   f"got {milestones!r}")
    if milestones and decay != 1.0:
        fields.update(lr_schedule="multistep", lr_decay_factor=decay,
                      lr_milestones=",".join(str(x) for x in sorted(milestones)))
    else:
        fields["lr_schedule"] = "constant"
    # honest clients: DSGD with worker momentum, weight decay at the server
    h = "honest_clients"
    hparams["beta"] = _number(f"{h}.momentum", _value(s, h, "momentum"), 0.0, 1.0,
                              high_open=True)
    hparams["weight_decay"] = _number(f"{h}.weight_decay",
                                      _value(s, h, "weight_decay"), 0.0)
    fields.update(optimizer="resam", dampening=-1.0, momentum_init=0.0,
                  momentum_bias_correction=False, clip_norm=0.0,
                  weight_decay_point="server",
                  batch_size=_int(f"{h}.batch_size", _value(s, h, "batch_size"), 1))
    # robust aggregation: every rule's f is the declared one
    agg_name, agg, agg_kwargs = _rule("aggregator", _value(s, "aggregator"),
                                      BYZFL_AGGREGATORS, "aggregator")
    if agg == "geometric_median":
        agg_kwargs = {"smoothing": 0.1, "num_iterations": 3, **agg_kwargs,
                      "tolerance": 0.0, "init": "zeros"}
    elif agg in ("krum", "multi_krum"):
        agg_kwargs["num_neighbours"] = n - declared - 1
    elif agg in ("caf", "smea"):
        notes.append(_NOTES["spectral"].format(name=agg_name))
    # ByzFL's clients send flat vectors (flatten_dict of the gradients):
    # the attack and the rules run on one row per client, as byzjax's flat
    # layout.
    fields.update(aggregator=agg, aggregator_kwargs=agg_kwargs,
                  robust_layout="flat")
    pres = _value(s, "pre_aggregators")
    if not isinstance(pres, list):
        raise _bad("pre_aggregators", f"must be a list, got {pres!r}")
    steps: list[tuple[str, dict]] = []
    for i, info_ in enumerate(pres):
        _, pre, kw = _rule(f"pre_aggregators.{i}", info_, BYZFL_PRE_AGGREGATORS,
                           "pre-aggregator")
        if pre == "static_clipping":
            kw = {"max_norm": 2.0, **kw}
        elif pre == "bucketing":
            kw = {"bucket_size": 1, **kw}
            if len(pres) > 1:
                raise _bad(f"pre_aggregators.{i}.name", "Bucketing is supported "
                           "alone only (byzjax's chains are deterministic)")
        steps.append((pre, kw))
    if len(steps) == 1:
        fields.update(preaggregator=steps[0][0], preaggregator_kwargs=steps[0][1])
    elif steps:
        fields.update(preaggregator="chain",
                      preaggregator_kwargs={"steps": [list(st) for st in steps]})
    else:
        fields.update(preaggregator="", preaggregator_kwargs={})
    for i, (pre, kw) in enumerate(steps):
        try:
            aggregators.PREAGGREGATORS.check_kwargs(pre, kw)
        except (TypeError, ValueError) as err:
            raise _bad(f"pre_aggregators.{i}.parameters", str(err)) from None
    try:
        aggregators.AGGREGATORS.check_kwargs(agg, agg_kwargs)
    except (TypeError, ValueError) as err:
        raise _bad("aggregator.parameters", str(err)) from None
    # attack
    att_name, att, att_kwargs = _rule("attack", _value(s, "attack"), BYZFL_ATTACKS,
                                      "attack", _REFUSED_ATTACKS)
    if att == "none" and f > 0:
        raise _bad("attack.name", f"NoAttack with f = {f}: ByzFL refuses it (its "
                   "Byzantine clients need an attack); set f to 0 or an attack")
    if att_name in _OPTIMAL:
        att_kwargs = {"search": "line", **att_kwargs}
        try:
            attacks.ATTACKS.check_kwargs(att, att_kwargs)
        except (TypeError, ValueError) as err:
            raise _bad("attack.parameters", str(err)) from None
    if att == "label_flip":
        notes.append(_NOTES["label_flip"])
    fields.update(attack=att, attack_kwargs=att_kwargs, attack_point="sent")
    # evaluation and results
    ev = "evaluation_and_results"
    delta = _int(f"{ev}.evaluation_delta", _value(s, ev, "evaluation_delta"), 1)
    if fields["num_rounds"] % delta:
        raise _bad(f"{ev}.evaluation_delta", f"{delta} must divide "
                   f"benchmark_config.nb_steps = {fields['num_rounds']} (byzjax "
                   "evaluates after every evaluation_delta rounds)")
    fields.update(eval_every=delta, eval_size=0)
    _int(f"{ev}.batch_size_evaluation", _value(s, ev, "batch_size_evaluation"), 1)
    if not _bool(f"{ev}.evaluate_on_test", _value(s, ev, "evaluate_on_test")):
        raise _bad(f"{ev}.evaluate_on_test", "false is not supported: byzjax "
                   "evaluates on the test set (it never evaluates ByzFL's "
                   "validation set)")
    _bool(f"{ev}.store_per_client_metrics", _value(s, ev, "store_per_client_metrics"))
    if _bool(f"{ev}.store_models", _value(s, ev, "store_models")):
        notes.append("store_models: byzjax keeps orbax checkpoints "
                     "(checkpoint_every) and each run's final parameters' "
                     "sha256, not one .pth per evaluation")
    for key in ("data_folder", "results_directory"):
        if not isinstance(_value(s, ev, key), str):
            raise _bad(f"{ev}.{key}", f"must be a string, got {_value(s, ev, key)!r}")
    return _Setting(fields, hparams, seeds, _value(s, ev, "results_directory"),
                    tuple(notes))


# ---------------------------------------------------------------- factoring
class Conversion(NamedTuple):
    """A ByzFL configuration converted.

    Attributes:
      sweep: the byzjax sweep (``ConfigDict``: ``name``, ``base``, ``grid``,
        ``hparams``, ``overrides``, ``extra``, ``seeds``).
      results_directory: ByzFL's ``results_directory`` (the default
        ``--outdir`` of ``byzjax sweep --byzfl``).
      notes: the :class:`ByzflWarning` lines (fields mapped to a definition
        that differs in a detail), each once.
      num_settings: ByzFL's settings (trainings per seed pair).
      fields: the base fields the conversion sets (written out in the sweep
        file even where they equal byzjax's defaults).
    """

    sweep: ml_collections.ConfigDict
    results_directory: str
    notes: tuple[str, ...]
    num_settings: int
    fields: tuple[str, ...] = ()


_FLOATS = ("learning_rate", "beta", "weight_decay")
def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _ordered(values) -> list:
    seen, out = set(), []
    for v in values:
        if _key(v) not in seen:
            seen.add(_key(v))
            out.append(v)
    return out


def convert(config: Mapping, *, name: str = "byzfl") -> Conversion:
    """The byzjax sweep that runs ByzFL benchmark configuration ``config``.

    Args:
      config: the parsed ``config.json`` (:func:`read_config`).
      name: the sweep's name (its default results folder ``results/<name>``).

    Returns:
      :class:`Conversion`. Its notes are also emitted as :class:`ByzflWarning`.

    Raises:
      ConfigError: a field byzjax cannot honour, or a bad value: one line
        naming the ByzFL field (``model.loss``), before any data is loaded.

    Example:
      >>> c = convert({"benchmark_config": {"f": [1, 2], "nb_steps": 100},
      ...              "model": {"name": "fc_mnist", "learning_rate": [0.1, 0.05]},
      ...              "attack": {"name": "SignFlipping"},
      ...              "evaluation_and_results": {"evaluation_delta": 50}})
      >>> dict(c.sweep.grid), dict(c.sweep.hparams)
      ({'num_attackers': [1, 2]}, {'learning_rate': [0.1, 0.05]})
      >>> [list(o) for o in c.sweep.overrides][0]
      [{'num_attackers': 1}, {'num_workers': 11, 'num_byzantine': 1}]
      >>> c.sweep.base.model, c.sweep.base.split, c.num_settings
      ('fc_mnist', 'iid', 4)
    """
    settings = [_map(s) for s in expand(config)]
    if not settings:
        raise _bad("benchmark_config.f", "every f exceeds tolerated_f: ByzFL "
                   "would run nothing")
    for key, what in (("seeds", "training_seed / nb_training_seeds"),
                      ("outdir", "evaluation_and_results.results_directory")):
        if len({_key(getattr(s, key)) for s in settings}) > 1:
            raise _bad(what.split(" ")[0] if key == "outdir"
                       else "benchmark_config.training_seed",
                       f"{what} must be one value (not a list): the sweep has one "
                       "list of seeds and one results folder")
    first = settings[0]
    start, count = first.seeds
    seeds = list(range(start, start + count))
    # the data-distribution seeds: one grid axis over split_seed
    rows = []
    for st in settings:
        dd_start, dd_count = st.fields["split_seed"]
        for dd in range(dd_start, dd_start + dd_count):
            # ByzFL builds its model under the data-distribution seed, before
            # it sets the training seed: one start for every training seed
            rows.append(({**st.fields, "split_seed": dd, "init_seed": dd},
                         st.hparams))
    hparam_axes = {k: _ordered(h[k] for _, h in rows) for k in _FLOATS}
    configs = _ordered(f for f, _ in rows)
    float_points = {_key(h) for _, h in rows}
    if len(float_points) != len(list(itertools.product(*hparam_axes.values()))):
        raise _bad("model.learning_rate", "the learning rate, momentum and weight "
                   "decay lists must form a product (they do in ByzFL)")
    base = get_config()
    keys = _ordered(k for c in configs for k in c)
    configs = [{k: c.get(k, _plain(base[k])) for k in keys} for c in configs]
    varying = [k for k in keys if len(_ordered(c.get(k) for c in configs)) > 1]
    common = {k: configs[0][k] for k in keys if k not in varying}
    for k in _FLOATS:
        if len(hparam_axes[k]) == 1:
            common[k] = hparam_axes[k][0]
    for k, v in common.items():
        base[k] = v
    grid, overrides = _factor(configs, varying)
    sweep = ml_collections.ConfigDict()
    sweep.name = name
    sweep.base = base
    sweep.seeds = seeds
    sweep.hparams = {k: v for k, v in hparam_axes.items() if len(v) > 1}
    if grid is not None:
        sweep.grid = grid
        sweep.overrides = overrides
        sweep.extra = []
    else:  # not a product: the first setting is the base, the others extra groups
        for k in varying:
            base[k] = configs[0][k]
        sweep.grid = {}
        sweep.overrides = []
        sweep.extra = [{k: c[k] for k in varying if _key(c[k]) != _key(configs[0][k])}
                       for c in configs[1:]]
    notes = tuple(_ordered(n for st in settings for n in st.notes))
    for note in notes:
        warnings.warn(note, ByzflWarning, stacklevel=2)
    by_overrides = {k for _, changes in sweep.overrides for k in changes}
    written = tuple(k for k in [*keys, *_FLOATS] if k not in sweep.grid
                    and k not in sweep.hparams and k not in by_overrides)
    return Conversion(sweep, first.outdir, notes, len(settings), written)


def _factor(configs: list[dict], varying: list[str]):
    """``(grid, overrides)`` if ``configs`` are a product of per-field values,
    once the fields that are a function of an earlier axis (``num_workers`` of
    ``num_attackers``, ``aggregator_kwargs`` of ``aggregator``) are set by
    ``overrides`` keyed on that axis; else ``(None, None)``."""
    first = [k for k in _PREFERRED if k in varying]
    varying = first + [k for k in varying if k not in first]
    axes: list[str] = []
    depends: dict[str, str] = {}
    for d in varying:
        for k in axes:
            pairs: dict[str, set] = {}
            for c in configs:
                pairs.setdefault(_key(c[k]), set()).add(_key(c[d]))
            if all(len(v) == 1 for v in pairs.values()):
                depends[d] = k
                break
        else:
            axes.append(d)
    grid = {k: _ordered(c[k] for c in configs) for k in axes}
    product = {_key([dict(zip(axes, vals))])
               for vals in itertools.product(*(grid[k] for k in axes))}
    have = {_key([{k: c[k] for k in axes}]) for c in configs}
    if product != have or len(have) != len(configs):
        return None, None
    overrides = []
    for k in axes:
        ds = [d for d in varying if depends.get(d) == k]
        if ds:
            for c in _ordered({k: c[k], **{d: c[d] for d in ds}} for c in configs):
                overrides.append([{k: c[k]}, {d: c[d] for d in ds}])
    return grid, overrides


#: Fields tried first as grid axes (the others then read as functions of them).
_PREFERRED = ("num_attackers", "aggregator", "preaggregator", "attack", "split")


# ------------------------------------------------------------------ writing
def sweep_source(conversion: Conversion, *, config: Mapping | None = None,
                 source: str | None = None) -> str:
    """The Python sweep file of ``conversion`` (``byzjax sweep FILE`` runs it).

    Args:
      conversion: :func:`convert`'s result.
      config: the ByzFL configuration, kept in the file as ``BYZFL_CONFIG``.
      source: where it came from (a path), for the file's docstring.
    """
    sw = conversion.sweep
    base = get_config()
    changed = {k: sw.base[k] for k in base if k in conversion.fields
               or _key(_plain(sw.base[k])) != _key(_plain(base[k]))}
    notes = "".join("\n" + textwrap.fill(n, 80, initial_indent="  - ",
                                          subsequent_indent="    ")
                    for n in conversion.notes) or " none"
    text = json.dumps(_plain(config), indent=4)
    if '"""' in text or "\\" in text:
        kept = f"BYZFL_CONFIG = {_pyrepr(config, 15)}"
    else:
        kept = f'BYZFL_CONFIG = json.loads("""\\\n{text}\n""")'
    lines = [
        f'"""byzjax sweep converted from the ByzFL 0.0.11 benchmark configuration'
        f'\n{source or "(given as a dict)"} by byzjax.byzfl.convert '
        f'({conversion.num_settings} ByzFL settings).',
        "",
        "Run it with ``byzjax sweep THIS_FILE``; docs/BYZFL.md maps every field.",
        f"Fields mapped to a definition that differs in a detail:{notes}",
        '"""',
        "",
        "import json",
        "",
        "import ml_collections",
        "",
        "from byzjax.sim import get_config",
        "",
        "#: The ByzFL configuration this sweep was converted from.",
        kept,
        "",
        "",
        "def get_sweep():",
        "    base = get_config()",
    ]
    lines += [f"    base.{k} = {_pyrepr(v, 11 + len(k))}" for k, v in changed.items()]
    lines += [
        "    s = ml_collections.ConfigDict()",
        f"    s.name = {sw.name!r}",
        "    s.base = base",
        f"    s.grid = {_pyrepr(sw.grid, 13)}",
        f"    s.hparams = {_pyrepr(sw.hparams, 16)}",
        f"    s.overrides = {_pyrepr(sw.overrides, 18)}",
        f"    s.extra = {_pyrepr(sw.extra, 14)}",
        f"    s.seeds = {list(sw.seeds)!r}",
        "    return s",
        "",
    ]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _pyrepr(value: Any, indent: int = 0) -> str:
    text = pprint.pformat(_plain(value), width=88 - indent, sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def write_sweep(conversion: Conversion, path: str, *, config: Mapping | None = None,
                source: str | None = None) -> str:
    """Writes :func:`sweep_source` to ``path`` (folders created); returns ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(sweep_source(conversion, config=config, source=source))
    return path
