"""El Mhamdi, Guerraoui, Rouault (ICLR 2021): their experiment grid, Fashion-MNIST part.

The grid of the ByzantineMomentum code's ``reproduce.py`` (the paper's figures of
maximum top-1 accuracy per aggregator, attack and momentum placement).

MLP, n = 51, f in {12, 24} (1/4, 1/2), lr in {0.5, 0.02}, classical vs Nesterov
momentum, momentum at the server vs at the workers, ALIE (1.5) and FOE (1.1),
GARs Krum, median, trimmed mean, Phocas, MeaMed, Bulyan (Bulyan only for
f = 12: it needs n >= 4f + 3); metric: max top-1 accuracy over 5 seeds;
plus the unattacked runs (the mean over the n - f = 39 or 27 honest workers
alone, no Byzantine worker, as ``reproduce.py`` runs them) whose median is the
dotted line of the f = 12 and f = 24 panels. Evaluation every 5 rounds, as
``reproduce.py``'s ``--evaluation-delta 5`` (the maximum is taken over those
evaluations). The learning rates are a vmapped axis. The figure (box plots
of the rules x seeds points per attack, fraction, momentum kind and
placement)::

    byzjax sweep experiments/momentum_fmnist.py --outdir results/momentum_fmnist
    byzjax report results/momentum_fmnist --boxes momentum_fmnist.png

The CIFAR-10 part (``--set base.dataset=cifar10 --set base.model=cifar_cnn
--set base.num_workers=25``, f in {5, 11}, batch 50, 3000 steps) is for GPU
users.
"""

import ml_collections

from byzjax.sim import import_file

get_config = import_file("configs/fmnist_momentum.py", relative_to=__file__).get_config


def get_sweep():
    s = ml_collections.ConfigDict()
    s.name = "momentum_fmnist"
    s.base = get_config()
    s.base.eval_every = 5
    s.grid = {
        "num_byzantine": [12, 24],
        "attack": ["alie", "foe"],
        "aggregator": ["krum", "coordinate_median", "trimmed_mean", "phocas",
                       "meamed", "bulyan"],
        "optimizer": ["server_momentum", "resam"],
        "nesterov": [False, True],
    }
    s.hparams = {"learning_rate": [0.5, 0.02]}
    s.seeds = [0, 1, 2, 3, 4]
    s.overrides = [
        ({"attack": "alie"}, {"attack_eps": 1.5}),
        ({"attack": "foe"}, {"attack_eps": 1.1}),
    ]
    # Bulyan needs n >= 4f + 3 (as in the paper, it is left out at f = 24).
    s.exclude = [{"num_byzantine": 24, "aggregator": "bulyan"}]
    # The references without attack (the dotted line of the paper's figure):
    # the n - f honest workers alone, averaged, one per fraction.
    s.extra = [{"attack": "none", "aggregator": "mean", "optimizer": "resam",
                "num_workers": 51 - f, "num_byzantine": 0, "num_attackers": 0,
                "nesterov": nesterov}
               for f in (12, 24) for nesterov in (False, True)]
    return s
