"""A reduced Fabris (2023) Table 4.1 sweep, the one of docs/report/.

As experiments/table_4_1.py (MNIST, homogeneous, 10 + 5 Byzantine, the MLP,
4 optimisers x 5 aggregators, 2 seeds) with 3 of the 7 conditions (no attack,
A Little Is Enough, Fall of Empires) and 100 rounds: 60 programs, 120 runs.
The thesis's values of these cells (its CNN, Table 4.1; docs/REPRODUCTION.md)
are declared as ``published`` so the web report shows them beside ours::

    byzjax sweep experiments/table_4_1_reduced.py --outdir results/t41_reduced
    byzjax report results/t41_reduced --html --small-images
"""

from byzjax.sim import import_file

_table_4_1 = import_file("table_4_1.py", relative_to=__file__).get_sweep

#: Fabris (2023), Table 4.1 (CNN): best aggregator per cell and its accuracy.
_TABLE = {
    "dsgd": {"none": (0.9675, "mean"), "alie": (0.3825, "trimmed_mean"),
             "foe": (0.945, "mean")},
    "resam": {"none": (0.968, "trimmed_mean"), "alie": (0.777, "trimmed_mean"),
              "foe": (0.948, "trimmed_mean")},
    "dra": {"none": (0.951, "trimmed_mean"), "alie": (0.7755, "trimmed_mean"),
            "foe": (0.9265, "trimmed_mean")},
    "mra": {"none": (0.9485, "coordinate_median"),
            "alie": (0.7745, "trimmed_mean"), "foe": (0.918, "trimmed_mean")},
}


def get_sweep():
    s = _table_4_1()
    s.name = "table_4_1_reduced"
    s.base.num_rounds = 100
    s.base.eval_every = 20
    s.grid["attack"] = ["none", "alie", "foe"]
    if not s.get("published"):
        s.published = {
            "source": "Fabris (2023), Table 4.1 (CNN)", "metric": "final_accuracy",
            "cells": [{"optimizer": o, "attack": a, "aggregator": g, "value": v}
                      for o, row in _TABLE.items() for a, (v, g) in row.items()]}
    return s
