"""Fabris (2023) Tables 4.3 (homogeneous) / 4.4 (Dirichlet): CIFAR-10, CIFAR CNN.

1,310,922-parameter CNN with BatchNorm and dropout, batch 50, 1500 rounds; SGD
and RESAM lr 0.25 (RESAM beta 0.99), DRA/MRA lr 1e-3. For GPU/TPU users (CIFAR-10
is loaded through tensorflow-datasets: ``pip install 'byzjax[tfds]'``)::

    byzjax sweep experiments/table_4_3.py                    # Table 4.3
    byzjax sweep experiments/table_4_3.py --set base.split=dirichlet \\
        --set base.num_workers=15 --set base.num_byzantine=4 \\
        --set base.preaggregator=nnm --outdir results/table_4_4  # Table 4.4
"""

from byzjax.sim import import_file

_table_4_1 = import_file("table_4_1.py", relative_to=__file__).get_sweep


def get_sweep():
    s = _table_4_1()
    s.name = "table_4_3"
    s.base.dataset = "cifar10"
    s.base.data_source = "tfds"
    s.base.model = "cifar_cnn"
    s.base.batch_size = 50
    s.base.num_rounds = 1500
    s.base.eval_every = 100
    s.overrides = [
        ({"optimizer": "dsgd"}, {"learning_rate": 0.25}),
        ({"optimizer": "resam"}, {"learning_rate": 0.25}),
        ({"optimizer": "dra"}, {"learning_rate": 1e-3}),
        ({"optimizer": "mra"}, {"learning_rate": 1e-3}),
        ({"attack": "foe"}, {"attack_eps": 1.9}),
        ({"attack": "none"}, {"num_attackers": 0}),
    ]
    return s
