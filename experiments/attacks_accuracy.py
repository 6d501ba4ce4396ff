"""Final accuracy under ALIE, FOE, their adaptive versions and the optimised attack.

MNIST MLP, homogeneous split, n = 15 workers of which f = 5 Byzantine (the
declared f is the real one), 200 rounds, evaluation every 50, 2 seeds vmapped in
one program. 5 aggregators (trimmed mean, coordinate-wise median, Krum, MDA,
centered clipping) x 6 conditions (no attack, ALIE, FOE, adaptive ALIE,
adaptive FOE, optimised): 30 programs. With and without worker momentum share a
program: RESAM's worker momentum ``beta`` is a traced float, vmapped over
{0, 0.99} with the seeds (``beta = 0`` sends the clipped gradient itself: D-SGD).
Hyper-parameters of Fabris (MSc thesis, Chalmers 2023) Table 4.1 (batch 25,
clipping 2, l2 1e-4, lr 0.75).
The attacks use their default strengths; the adaptive and optimised ones know
the server's rule and its f. The table of ``docs/ATTACKS.md``::

    byzjax sweep experiments/attacks_accuracy.py --outdir results/attacks_accuracy
"""

import ml_collections

from byzjax.sim import import_file

_table_4_1 = import_file("table_4_1.py", relative_to=__file__).get_sweep


def get_sweep():
    # Table 4.1's base settings (MNIST MLP, homogeneous, n = 15, f = 5, batch
    # 25, clipping 2, l2 1e-4, beta 0.99); not its overrides (its FOE is the
    # thesis's eps = 1.9, here the attacks keep their default strengths).
    base = _table_4_1().base
    base.optimizer = "resam"
    base.learning_rate = 0.75  # Table 4.1's RESAM learning rate
    base.num_rounds = 200
    base.run_batching = "vmap"
    s = ml_collections.ConfigDict()
    s.name = "attacks_accuracy"
    s.base = base
    # (attack first: a stopped sweep has every rule under the first attacks;
    # the optimised attack, by far the most expensive per round, last)
    s.grid = {
        "attack": ["alie", "foe", "none", "adaptive_alie", "adaptive_foe",
                   "optimized"],
        "aggregator": ["trimmed_mean", "coordinate_median", "krum", "mda",
                       "centered_clipping"],
    }
    s.hparams = {"beta": [0.0, 0.99]}
    s.seeds = [0, 1]
    # "No attack": the 5 would-be Byzantine workers behave honestly.
    s.overrides = [({"attack": "none"}, {"num_attackers": 0})]
    return s
