"""The 2021-2025 defences under the 2021-2025 attacks and ALIE (MNIST MLP).

MNIST MLP, homogeneous split, n = 15 workers of which f = 4 Byzantine (the
declared f is the real one), 200 rounds, evaluation every 50, 2 seeds vmapped
in one program, RESAM (beta 0.99) with Fabris's (MSc thesis, Chalmers 2023)
Table 4.1 hyper-parameters (batch 25, per-worker clipping 2, l2 1e-4,
lr 0.75). Defences: MoNNA (Farhadkhani et al., ICML 2023), exact SMEA
(Allouah et al., ICML 2023), CAF (Allouah, Guerraoui, Stephan, ICML 2025), DnC
(Shejwalkar and Houmansadr, NDSS 2021), SignGuard (Xu et al., ICDCS 2022),
clipped clustering (Li et al., 2023), FLTrust (Cao et al., NDSS 2021; 100
root examples held out of the workers' shards) and adaptive robust clipping
(Allouah et al., 2024) before the trimmed mean; the trimmed mean alone as the
baseline. Attacks: Min-Max and Min-Sum (Shejwalkar and Houmansadr, NDSS
2021), ROP (Ozfatura et al., 2024), inner product manipulation (Xie, Koyejo,
Gupta, 2020; ByzFL's tau = 2) and A Little Is Enough (Baruch et al., 2019),
each at its default strength (ROP not against FLTrust: it follows the
server's aggregate, which FLTrust computes from the server's own update,
unseen by the attacker); and Min-Max, Min-Sum and ROP against Krum, the
median, MDA and centered clipping. 56 programs::

    byzjax sweep experiments/catalogue_mnist.py --outdir results/catalogue_mnist
"""

import ml_collections

from byzjax.sim import import_file

_table_4_1 = import_file("table_4_1.py", relative_to=__file__).get_sweep


def get_sweep():
    base = _table_4_1().base
    base.optimizer = "resam"
    base.learning_rate = 0.75
    base.num_workers = 15
    base.num_byzantine = 4
    base.num_rounds = 200
    base.eval_every = 50
    base.run_batching = "vmap"
    s = ml_collections.ConfigDict()
    s.name = "catalogue_mnist"
    s.base = base
    s.grid = {
        "attack": ["min_max", "min_sum", "rop", "ipm", "alie"],
        "aggregator": ["monna", "smea", "caf", "dnc", "signguard",
                       "clipped_clustering", "fltrust", "trimmed_mean"],
    }
    s.seeds = [0, 1]
    s.overrides = [({"aggregator": "fltrust"}, {"server_data_size": 100})]
    # ROP follows the server's aggregate; FLTrust's needs the server's own
    # update, which the attacker does not see (refused by the config check).
    s.exclude = [{"aggregator": "fltrust", "attack": "rop"}]
    s.extra = [{"attack": attack, "aggregator": "trimmed_mean",
                "preaggregator": "arc"}
               for attack in ("min_max", "min_sum", "rop", "ipm", "alie")]
    # The new attacks against the earlier rules they were built against
    # (Min-Max and Min-Sum: Krum, the median, MDA; ROP: centered clipping).
    s.extra += [{"attack": attack, "aggregator": rule}
                for attack in ("min_max", "min_sum", "rop")
                for rule in ("krum", "coordinate_median", "mda",
                             "centered_clipping")]
    return s
