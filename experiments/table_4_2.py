"""Fabris (2023) Table 4.2: MNIST, Dirichlet(0.1) split, 13 honest + 4 Byzantine, NNM.

As Table 4.1 but heterogeneous: n = 17, f = 4, nearest-neighbour mixing before
every aggregator, SGD and RESAM with lr 0.75 / (1 + t // 50). The MLP replaces
the CNN on CPU (``--set base.model=mnist_cnn`` for the faithful model).
"""


from byzjax.sim import import_file

_table_4_1 = import_file("table_4_1.py", relative_to=__file__).get_sweep


def get_sweep():
    s = _table_4_1()
    s.name = "table_4_2"
    s.base.split = "dirichlet"
    s.base.dirichlet_alpha = 0.1
    s.base.num_workers = 17
    s.base.num_byzantine = 4
    s.base.preaggregator = "nnm"
    s.grid.attack = ["none", "alie", "foe", "sign_flip_own", "label_flip", "inf"]
    s.overrides = list(s.overrides) + [
        ({"optimizer": "dsgd"}, {"lr_schedule": "step"}),
        ({"optimizer": "resam"}, {"lr_schedule": "step"}),
    ]
    return s
