"""The README's main job: El Mhamdi et al.'s (ICLR 2021) question on Fashion-MNIST.

Does momentum at the workers ("our formulation") beat momentum at the server
("standard formulation") against A Little Is Enough? Fashion-MNIST MLP,
n = 51, f = 12, batch 83, lr 0.5, momentum 0.9, 300 rounds (the
paper's Fashion-MNIST setting), six robust aggregators x {server, worker} momentum,
plus the unattacked mean as the reference; 3 seeds vmapped in each program.
Metric: maximum top-1 test accuracy (as the paper reports). Runs on a CPU.
"""

import ml_collections

from byzjax.sim import import_file

get_config = import_file("configs/fmnist_momentum.py", relative_to=__file__).get_config


def get_sweep():
    s = ml_collections.ConfigDict()
    s.name = "main_job"
    s.base = get_config()
    s.grid = {
        "attack": ["alie"],
        "aggregator": ["krum", "coordinate_median", "trimmed_mean", "phocas",
                       "meamed", "bulyan"],
        "optimizer": ["server_momentum", "resam"],
    }
    s.hparams = {}
    # Reference: no attack (all 51 workers honest), plain mean, worker momentum.
    s.extra = [{"attack": "none", "aggregator": "mean", "optimizer": "resam",
                "num_attackers": 0}]
    s.seeds = [0, 1, 2]
    return s
