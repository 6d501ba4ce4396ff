"""Farhadkhani et al. (ICML 2023), "Robust Collaborative Learning with Linear
Gradient Overhead": MoNNA against trimmed mean in peer-to-peer learning, MNIST.

The setting of their code's ``reproduce.py`` (``peerToPeer.py`` runs):
26 nodes of which 5 Byzantine (declared and real), each honest node hears
itself, ``n - 2f - 1 = 15`` other honest nodes drawn afresh every step and
the 5 Byzantine ones (``topology="random_subset"``, ``docs/PEER_TO_PEER.md``);
nodes exchange models after their local step. Honest data split with a
Dirichlet distribution, alpha in {1, 5}; batch 25; learning rate
``0.75 / (1 + step // 50)``; momentum 0.99 at every node with dampening 0.99
(byzjax's RESAM in its EMA form); l2 regularisation 1e-4; no gradient
clipping; 600 steps; 2 seeds. Rules: MoNNA (CVA around the node's own
vector) and the coordinate-wise trimmed mean. Attacks: "a little is enough"
and "fall of empires" with their strength line-searched against the rule
(byzjax's ``adaptive_alie`` / ``adaptive_foe``: 16 candidates in [0, 16], the
code's ``line_maximize`` budget; one Byzantine vector for every receiver,
as in the code), sign flip, label flip. The unattacked reference: 26 honest
nodes averaging (the code's "DSGD" run).

**Model: the 784-100-10 MLP** (``model="mlp"``, 79,510 parameters), not the
paper's CNN (``simples-conv``, in the model zoo as ByzFL's ``cnn_mnist``,
431,080 parameters): 26 CNNs per step are too slow on a 2-core CPU; on a GPU
switch with ``--set base.model=cnn_mnist``.
Evaluation: every honest node on the whole test set every 50 steps (the
code evaluates node 0 every 5 steps); the report shows the mean, worst and
best node.

Run (about 4 cells per compiled group; see ``docs/PEER_TO_PEER.md``,
"Reproduction", for the time)::

    byzjax sweep experiments/p2p_monna.py --outdir results/p2p_monna
    byzjax report results/p2p_monna --html
"""

import ml_collections

from byzjax import sim


def get_config():
    c = sim.get_config()
    c.dataset = "mnist"
    c.model = "mlp"
    c.split = "dirichlet"
    c.dirichlet_alpha = 1.0
    c.num_workers = 26
    c.num_byzantine = 5
    c.topology = "random_subset"
    c.aggregator = "monna"
    c.attack = "adaptive_alie"
    c.optimizer = "resam"
    c.beta = 0.99
    c.dampening = -1.0  # EMA form: dampening = beta = 0.99, as the code
    c.learning_rate = 0.75
    c.lr_schedule = "step"
    c.lr_decay_every = 50
    c.weight_decay = 1e-4
    c.clip_norm = 0.0
    c.batch_size = 25
    c.num_rounds = 600
    c.eval_every = 50
    c.checkpoint_every = 0
    return c


def get_sweep():
    s = ml_collections.ConfigDict()
    s.name = "p2p_monna"
    s.base = get_config()
    s.grid = {
        "dirichlet_alpha": [1.0, 5.0],
        "aggregator": ["monna", "trimmed_mean"],
        "attack": ["adaptive_alie", "adaptive_foe", "sign_flip", "label_flip"],
    }
    s.seeds = [0, 1]
    # The line search one candidate at a time (a plain lax.map): MoNNA's fast
    # path then runs as a branch instead of both branches under vmap (about
    # 6x faster per round here; the same choice of strength).
    s.overrides = [({"attack": a}, {"attack_kwargs": {"batch_size": 1}})
                   for a in ("adaptive_alie", "adaptive_foe")]
    # The unattacked reference: 26 honest nodes averaging what they hear
    # (everyone: n - 2*0 - 1 = 25 others).
    s.extra = [{"dirichlet_alpha": a, "attack": "none", "aggregator": "mean",
                "num_byzantine": 0, "num_attackers": 0} for a in (1.0, 5.0)]
    return s
