"""El Mhamdi et al. (ICLR 2021, "Distributed momentum for Byzantine-resilient
stochastic gradient descent"): the box plots of momentum at the server vs at
the workers, and the paper's summary of what momentum at the workers recovers.

Runs are compared only inside one configuration: besides the grid's own axes
(attack, rule, placement, ``f``, ``n``), every field (momentum kind, learning
rate and all others, :func:`byzjax.report.config_fields`) must agree; runs of
another configuration in the same folder form their own panels and pairs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from byzjax import optim
from byzjax.report._cells import (
    SHORT,
    _rank,
    config_fields,
    config_id,
    show_value,
)
from byzjax.report._figures import _pyplot

_PLACEMENT = {"server_momentum": "at the server", "resam": "at the workers"}


def _value_or_zero(run, metric: str) -> float:
    """``run[metric]`` as a float, 0 when missing or non-finite (a dead run)."""
    v = run.get(metric)
    return float(v) if v is not None and np.isfinite(v) else 0.0


def _learning_rate(run):
    """The run's learning rate: its vmapped hyper-parameter, else its config's."""
    return (run.get("hparams") or {}).get("learning_rate",
                                          run["config"].get("learning_rate"))


#: The fields a momentum grid varies between the runs it compares; every other
#: field (the *setting*: momentum kind, learning rate, data, model, ...) must
#: agree between compared runs.
GRID_FIELDS = ("aggregator", "aggregator_kwargs", "optimizer", "attack",
               "attack_eps", "attack_kwargs", "num_byzantine", "num_workers",
               "num_attackers")


def _placement_fields() -> tuple[str, ...]:
    """Config fields only one of the two placements reads (``dampening`` and
    the like of ``resam``): they come with the placement, part of the grid."""
    reads = [set(optim.optimizer_entry(name).config_fields.values())
             for name in _PLACEMENT]
    return tuple(sorted(set.union(*reads) - reads[0].intersection(*reads[1:])))


def _setting(run) -> str:
    return config_id(run, ignore=GRID_FIELDS + _placement_fields())


def _variants(runs) -> dict[str, str]:
    """{setting: label of the fields that differ between the settings besides
    the momentum kind and learning rate} (labels ``""`` when there is one)."""
    fields: dict[str, dict[str, Any]] = {}
    for r in runs:
        fields.setdefault(_setting(r), config_fields(
            r, ignore=GRID_FIELDS + _placement_fields()))
    keys = sorted(set().union(*fields.values())) if fields else []
    differ = [k for k in keys if k not in ("nesterov", "learning_rate") and len(
        {repr(f.get(k)) for f in fields.values()}) > 1]
    return {sid: ", ".join(f"{k}={show_value(f.get(k))}" for k in differ)
            for sid, f in fields.items()}


def momentum_boxes(runs, *, metric: str = "max_accuracy") -> dict[str, Any]:
    """The data of El Mhamdi et al.'s (ICLR 2021) box plots, from a momentum grid.

    One panel per (attack, ``num_byzantine``, momentum kind = ``nesterov``,
    and ``learning_rate`` when it varies); in each, one box per placement
    (``server_momentum``: at the server, ``resam``: at the workers) holding
    ``metric`` of every attacked run (every rule x seed: 6 x 5 = 30 points in
    the paper); the panel's reference is the median of ``metric`` over the
    unattacked runs (``attack="none"``) with the same momentum kind and
    learning rate and ``num_workers = n - f``: the honest workers alone, as
    the paper's ``reproduce.py`` runs its reference (if a grid has no such
    run, the unattacked runs of any ``num_workers``; the panel's
    ``reference_workers`` says which were used). Non-finite values count as 0.
    Runs whose other fields differ (two base configurations in one folder)
    are never put in one box: each setting has its own panels, whose
    ``variant`` names the fields that differ (``""`` when the folder holds
    one setting).

    Returns:
      ``{"panels": [{"attack", "num_byzantine", "num_workers", "nesterov",
      "learning_rate", "variant", "boxes": {placement: [values]}, "rules":
      {placement: [rules]}, "reference": median or None,
      "reference_workers": sorted num_workers of the reference runs}],
      "excluded": {(attack, num_byzantine): [rules of the grid missing
      there]}}``.
    """
    def val(r):
        return _value_or_zero(r, metric)

    attacked = [r for r in runs if r["config"]["attack"] != "none"]
    reference = [r for r in runs if r["config"]["attack"] == "none"]
    rules = sorted({r["config"]["aggregator"] for r in attacked})
    variants = _variants(runs)
    panels: dict[tuple, dict] = {}
    for r in attacked:
        c = r["config"]
        sid = _setting(r)
        key = (c["attack"], c["num_byzantine"], bool(c.get("nesterov")),
               _learning_rate(r), variants[sid], sid)
        p = panels.setdefault(key, {
            "attack": c["attack"], "num_byzantine": c["num_byzantine"],
            "num_workers": c["num_workers"], "nesterov": key[2],
            "learning_rate": key[3], "variant": key[4], "setting": sid,
            "boxes": defaultdict(list), "rules": defaultdict(set)})
        p["boxes"][c["optimizer"]].append(val(r))
        p["rules"][c["optimizer"]].add(c["aggregator"])
    out, excluded = [], {}
    for key in sorted(panels, key=lambda k: (_rank(k[0], "attack"), k[1],
                                             k[2], -(k[3] or 0), k[4])):
        p = panels[key]
        setting = p.pop("setting")
        ref = [r for r in reference if _setting(r) == setting]
        honest = [r for r in ref if r["config"]["num_workers"]
                  == p["num_workers"] - p["num_byzantine"]]
        ref = honest or ref
        p["reference"] = float(np.median([val(r) for r in ref])) if ref else None
        p["reference_workers"] = sorted({r["config"]["num_workers"] for r in ref})
        p["boxes"] = dict(p["boxes"])
        p["rules"] = {k: sorted(v) for k, v in p["rules"].items()}
        seen = set().union(*p["rules"].values())
        missing = [g for g in rules if g not in seen]
        if missing:
            excluded[(p["attack"], p["num_byzantine"])] = missing
        out.append(p)
    return {"panels": out, "excluded": excluded}


def momentum_gains(runs, *, metric: str = "max_accuracy",
                   thresholds: Sequence[float] = (0.1, 0.2, 0.4)) -> dict[str, Any]:
    """El Mhamdi et al.'s (ICLR 2021) summary: what momentum at the workers recovers.

    Pairs every attacked run with momentum at the server (``server_momentum``)
    with the run at the workers (``resam``) of the same attack, ``f``, rule,
    seed and setting (momentum kind, learning rate and every other field but
    :data:`GRID_FIELDS`), and with the unattacked run of the same setting and
    seed on the ``n - f`` honest workers alone (any unattacked run of that
    seed if the grid has none), as the ByzantineMomentum code's
    ``reproduce.py`` does. For each pair,
    ``loss = reference - at_server`` and ``gain = at_workers - at_server``
    (accuracies in [0, 1]; non-finite counts as 0). The attack is *effective*
    at threshold ``t`` when ``loss > t``; momentum at the workers *recovers*
    when, in addition, ``gain > t``. The paper's abstract reads its 20% row:
    when the attack takes at least 20% from the unattacked accuracy, worker
    momentum "systematically increases back" the accuracy and recovers at
    least 20% "in more than 60% of the cases".

    Args:
      runs: run records (:func:`load_runs`) of a momentum grid.
      metric: record field compared (default the maximum top-1 accuracy).
      thresholds: the ``t`` values counted.

    Returns:
      ``{"pairs": int, "unpaired": int, "effective": {t: int}, "recovered":
      {t: int}, "increased": {t: int} (gain > 0 among the effective),
      "worse": {0.0: int, 0.02: int, 0.05: int} (gain below minus that)}``.

    Example (``report.load_runs("results/momentum_fmnist")`` gives such runs):

      >>> from byzjax import report
      >>> def run(attack, optimizer, f, n, acc):
      ...     return {"seed": 0, "hparams": {"learning_rate": 0.5},
      ...             "max_accuracy": acc,
      ...             "config": {"attack": attack, "optimizer": optimizer,
      ...                        "aggregator": "krum", "num_byzantine": f,
      ...                        "num_workers": n, "nesterov": False}}
      >>> runs = [run("alie", "server_momentum", 12, 51, 0.40),
      ...         run("alie", "resam", 12, 51, 0.75),
      ...         run("none", "resam", 0, 39, 0.85)]  # the 39 honest alone
      >>> g = report.momentum_gains(runs)
      >>> g["pairs"], g["effective"][0.2], g["recovered"][0.2], g["recovered"][0.4]
      (1, 1, 1, 0)
    """
    def val(r):
        return _value_or_zero(r, metric)

    refs: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in runs:
        c = r["config"]
        if c["attack"] == "none":
            refs[(_setting(r), r.get("seed"))][c.get("num_workers")] = val(r)
    placed: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in runs:
        c = r["config"]
        if c["attack"] != "none" and c["optimizer"] in _PLACEMENT:
            key = (c["attack"], c["num_byzantine"], c["aggregator"], _setting(r),
                   r.get("seed"), c["num_workers"])
            placed[key][c["optimizer"]] = val(r)
    out: dict[str, Any] = {"pairs": 0, "unpaired": 0,
           "effective": {t: 0 for t in thresholds},
           "recovered": {t: 0 for t in thresholds},
           "increased": {t: 0 for t in thresholds},
           "worse": {0.0: 0, 0.02: 0, 0.05: 0}}
    for key, by in placed.items():
        ref = refs.get(key[3:5], {})
        reference = ref.get(key[5] - key[1], next(iter(ref.values()), None))
        if len(by) < 2 or reference is None:
            out["unpaired"] += 1
            continue
        out["pairs"] += 1
        loss = reference - by["server_momentum"]
        gain = by["resam"] - by["server_momentum"]
        for t in thresholds:
            if loss > t:
                out["effective"][t] += 1
                out["recovered"][t] += int(gain > t)
                out["increased"][t] += int(gain > 0)
        for w in out["worse"]:
            out["worse"][w] += int(gain < -w)
    return out


def plot_momentum_boxes(runs, path: str, *, metric: str = "max_accuracy"
                        ) -> dict[str, Any]:
    """Draws :func:`momentum_boxes` as the paper's figure; returns its data.

    Columns: (fraction of Byzantine workers, attack); rows: momentum kind
    (classical, Nesterov; and learning rate when it varies). In each panel
    the box of momentum at the server and the box at the workers, every run
    drawn as a point over its box, and the median of the unattacked runs as
    a dotted line. Rules missing in a column (e.g. Bulyan, which needs
    ``n >= 4f + 3``) are named in its title.

    Example (a results folder of ``experiments/momentum_fmnist.py``)::

        report.plot_momentum_boxes(report.load_runs("results/momentum_fmnist"),
                                   "momentum_fmnist.png")
    """
    plt = _pyplot()
    data = momentum_boxes(runs, metric=metric)
    panels = data["panels"]
    if not panels:
        raise ValueError("no attacked runs to draw (a momentum grid has attacks "
                         "and optimizers server_momentum / resam)")
    cols = sorted({(p["num_byzantine"], p["attack"]) for p in panels},
                  key=lambda k: (-k[0], _rank(k[1], "attack")))
    rows = sorted({(p["nesterov"], p["learning_rate"], p["variant"])
                   for p in panels}, key=lambda k: (k[0], -(k[1] or 0), k[2]))
    many_lr = len({r[1] for r in rows}) > 1
    names = {"alie": "Little", "foe": "Empire"}
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False, sharey=True,
                             figsize=(2.3 * len(cols) + 0.6, 2.4 * len(rows) + 0.4))
    rng = np.random.default_rng(0)
    for p in panels:
        i = rows.index((p["nesterov"], p["learning_rate"], p["variant"]))
        j = cols.index((p["num_byzantine"], p["attack"]))
        ax = axes[i][j]
        kinds = [k for k in ("server_momentum", "resam") if k in p["boxes"]]
        kinds += sorted(k for k in p["boxes"] if k not in kinds)
        values = [p["boxes"][k] for k in kinds]
        ax.boxplot(values, widths=0.5, showfliers=False)
        for x, v in enumerate(values, start=1):
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(v)), v, s=6, alpha=0.6,
                       color="tab:red", zorder=3)
        if p["reference"] is not None:
            ax.axhline(p["reference"], ls=":", color="tab:blue", lw=1.5)
        ax.set_xticks(range(1, len(kinds) + 1),
                      [_PLACEMENT.get(k, k).replace("at the ", "") for k in kinds])
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            n, f = p["num_workers"], p["num_byzantine"]
            title = f"{names.get(p['attack'], p['attack'])}, f = {f} of {n}"
            missing = data["excluded"].get((p["attack"], f))
            if missing:
                title += "\n(no " + ", ".join(SHORT.get(g, g) for g in missing) + ")"
            ax.set_title(title, fontsize=9)
        if j == 0:
            label = "Nesterov" if p["nesterov"] else "classical"
            if many_lr:
                label += f", lr {p['learning_rate']:g}"
            if p["variant"]:
                label += f"\n{p['variant']}"
            ax.set_ylabel(f"{label}\nmax top-1 acc." if metric == "max_accuracy"
                          else f"{label}\n{metric}")
    fig.suptitle("momentum at the server vs at the workers; dotted: median "
                 "without attack", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return data
