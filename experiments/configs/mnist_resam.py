"""Fabris (2023) MNIST homogeneous setting: 10 honest + 5 Byzantine, RESAM.

The thesis uses the MNIST CNN (``--set model=mnist_cnn``); the MLP keeps a CPU run
to minutes. Usage: ``byzjax train --config experiments/configs/mnist_resam.py``.
"""

from byzjax.sim import get_config as _default


def get_config():
    c = _default()
    c.dataset = "mnist"
    c.model = "mlp"
    c.num_workers = 15
    c.num_byzantine = 5
    c.optimizer = "resam"
    c.beta = 0.99
    c.learning_rate = 0.75
    c.aggregator = "trimmed_mean"
    c.attack = "alie"
    c.batch_size = 25
    c.clip_norm = 2.0
    c.weight_decay = 1e-4
    c.num_rounds = 1000
    c.eval_every = 50
    return c
