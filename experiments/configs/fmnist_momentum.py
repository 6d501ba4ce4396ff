"""El-Mhamdi, Guerraoui, Rouault (ICLR 2021): their Fashion-MNIST setting.

MLP 784-100-10 (79,510 parameters), n = 51 workers, f = 12 (1/4) declared and
attacking, batch 83 per worker, 300 steps, lr 0.5, momentum 0.9 in the classical
form ``m <- mu m + g`` (dampening 0), l2 1e-4, gradient clipping 2; the metric
is the maximum top-1 test accuracy (ByzantineMomentum's ``reproduce.py``).
Evaluation every 10 rounds here (the main job); ``reproduce.py`` evaluates
every 5, which ``experiments/momentum_fmnist.py`` does. ``optimizer =
"resam"`` with ``dampening = 0`` is momentum at the workers ("our
formulation"); ``"server_momentum"`` is the standard one.
"""

from byzjax.sim import get_config as _default


def get_config():
    c = _default()
    c.dataset = "fashion_mnist"
    c.model = "mlp"
    c.num_workers = 51
    c.num_byzantine = 12
    c.batch_size = 83
    c.num_rounds = 300
    c.eval_every = 10
    c.learning_rate = 0.5
    c.beta = 0.9
    c.dampening = 0.0
    c.optimizer = "resam"
    c.aggregator = "trimmed_mean"
    c.attack = "alie"
    c.attack_eps = 1.5
    c.clip_norm = 2.0
    c.weight_decay = 1e-4
    return c
