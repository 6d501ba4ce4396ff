"""Fabris (MSc thesis, Chalmers 2023) Table 4.1: MNIST, homogeneous, 10 + 5 Byzantine.

4 optimisers (SGD = dsgd, RESAM, DRA, MRA) x 5 aggregators (AVG, CWTM, CWM, MDA,
MEAMED) x 7 conditions (no attack, Little, Empire, sign flip, label flip, +inf,
-inf). Thesis hyper-parameters: batch 25, clipping 2, l2 1e-4; SGD and RESAM lr
0.75 (RESAM beta 0.99); DRA/MRA lr 1e-3, b1 0.99, b2 0.999. Metric: test
accuracy after the last round.

Stated cut for a 2-core CPU: the thesis trains the MNIST CNN (176,050
parameters, about 3 rounds/s here); this file uses the MLP (79,510) by default.
A GPU user runs the faithful table with::

    byzjax sweep experiments/table_4_1.py --set base.model=mnist_cnn
"""

import ml_collections

from byzjax.sim import get_config


def get_sweep():
    base = get_config()
    base.dataset = "mnist"
    base.model = "mlp"
    base.split = "homogeneous"
    base.num_workers = 15
    base.num_byzantine = 5
    base.batch_size = 25
    base.clip_norm = 2.0
    base.weight_decay = 1e-4
    base.num_rounds = 500
    base.eval_every = 50
    base.beta = 0.99
    base.b1 = 0.99
    base.b2 = 0.999
    base.eps = 1e-8
    s = ml_collections.ConfigDict()
    s.name = "table_4_1"
    s.base = base
    s.grid = {
        "optimizer": ["dsgd", "resam", "dra", "mra"],
        "attack": ["none", "alie", "foe", "sign_flip_own", "label_flip", "inf",
                   "neg_inf"],
        "aggregator": ["mean", "trimmed_mean", "coordinate_median", "mda", "meamed"],
    }
    s.hparams = {}
    s.seeds = [0, 1]
    s.overrides = [
        ({"optimizer": "dsgd"}, {"learning_rate": 0.75}),
        ({"optimizer": "resam"}, {"learning_rate": 0.75}),
        ({"optimizer": "dra"}, {"learning_rate": 1e-3}),
        ({"optimizer": "mra"}, {"learning_rate": 1e-3}),
        # The thesis's Empire multiplies the honest mean by -0.9: eps = 1.9.
        ({"attack": "foe"}, {"attack_eps": 1.9}),
        # "No attack": the 5 would-be Byzantine workers behave honestly.
        ({"attack": "none"}, {"num_attackers": 0}),
    ]
    return s
