"""Fabris (2023) Table 4.2: MNIST, Dirichlet(0.1) split, 13 honest + 4 Byzantine, NNM.

As Table 4.1 but heterogeneous: n = 17, f = 4, nearest-neighbour mixing before
every aggregator, SGD and RESAM with lr 0.75 / (1 + t // 50). The MLP replaces
the CNN on CPU (``--set base.model=mnist_cnn`` for the faithful model).
"""


from byzjax.sim import import_file

_table_4_1_file = import_file("table_4_1.py", relative_to=__file__)
_table_4_1 = _table_4_1_file.get_sweep
published_cells = _table_4_1_file.published_cells

_ATTACKS = ("none", "alie", "foe", "sign_flip_own", "label_flip", "inf")

#: Fabris (2023) Table 4.2 (no-attack column: §4.1.2.2), as TABLE_4_1. MRA's
#: 0.098 cells: the thesis prints AVG, every aggregator dies (its text).
TABLE_4_2 = {
    "dsgd": [(0.93, "CWTM"), (0.282, "CWM"), (0.639, "CWM"), (0.6885, "CWTM"),
             (0.824, "CWTM"), (0.772, "CWTM")],
    "resam": [(0.917, "CWTM"), (0.4095, "CWTM"), (0.5685, "CWM"), (0.5625, "CWTM"),
              (0.806, "CWTM"), (0.671, "AVG")],
    "dra": [(0.89, "MDA"), (0.8035, "CWTM"), (0.484, "CWTM"), (0.4505, "CWTM"),
            (0.6765, "MDA"), (0.759, "CWTM")],
    "mra": [(0.853, "CWTM"), (0.098, "AVG"), (0.098, "AVG"), (0.098, "AVG"),
            (0.747, "AVG"), (0.758, "MDA")],
}


def get_sweep():
    s = _table_4_1()
    s.name = "table_4_2"
    s.base.split = "dirichlet"
    s.base.dirichlet_alpha = 0.1
    s.base.num_workers = 17
    s.base.num_byzantine = 4
    s.base.preaggregator = "nnm"
    s.grid.attack = list(_ATTACKS)
    s.published = {"source": "Fabris (2023), Table 4.2", "metric": "final_accuracy",
                   "cells": published_cells(TABLE_4_2, _ATTACKS)}
    s.overrides = list(s.overrides) + [
        ({"optimizer": "dsgd"}, {"lr_schedule": "step"}),
        ({"optimizer": "resam"}, {"lr_schedule": "step"}),
    ]
    return s
