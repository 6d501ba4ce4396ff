"""Simulation configuration: defaults, validation, static vs traced fields.

A config is an ``ml_collections.ConfigDict`` (Flax-examples style). Fields split
into *static* ones, which set shapes or choose code (dataset, model, n, f, rule,
attack, optimiser, batch size, rounds) and *traced* float hyper-parameters
(:data:`FLOAT_HPARAMS`), which are passed to the compiled program as arrays so a
whole grid of them can be vmapped in one program.
"""

from __future__ import annotations

import ml_collections

__all__ = ["get_config", "FLOAT_HPARAMS", "OPTIMIZERS", "validate", "hparams_of"]

#: Float hyper-parameters passed as traced arrays (vmappable).
FLOAT_HPARAMS = (
    "learning_rate",
    "beta",
    "b1",
    "b2",
    "eps",
    "weight_decay",
    "clip_norm",
    "attack_eps",
)

#: Optimisers the simulator knows (SPEC §3).
OPTIMIZERS = ("dsgd", "server_momentum", "resam", "dra", "mra")


def get_config() -> ml_collections.ConfigDict:
    """The default config: seed 002's MNIST homogeneous setting with an MLP.

    Returns:
      A ``ConfigDict``; copy it and override fields for variants.
    """
    c = ml_collections.ConfigDict()
    # Data.
    c.dataset = "mnist"
    c.data_source = "offline"  # "offline" | "tfds" | "auto"
    c.split = "homogeneous"  # "homogeneous" | "dirichlet" | "label_sorted"
    c.dirichlet_alpha = 0.1
    c.split_seed = 0
    c.eval_size = 0  # 0: the whole test set
    # Model.
    c.model = "mlp"
    # Workers.
    c.num_workers = 15
    c.num_byzantine = 5  # declared f, given to the aggregator
    c.num_attackers = -1  # real number of attacking rows; -1: = num_byzantine
    # Robust aggregation.
    c.aggregator = "trimmed_mean"
    c.aggregator_kwargs = ml_collections.ConfigDict()
    c.preaggregator = ""  # "" | "nnm" | "bucketing" | "static_clipping"
    c.preaggregator_kwargs = ml_collections.ConfigDict()
    # Attack.
    c.attack = "alie"
    c.attack_kwargs = ml_collections.ConfigDict()
    c.attack_eps = -1.0  # < 0: the attack's default strength
    # Optimiser.
    c.optimizer = "resam"
    c.learning_rate = 0.75
    c.lr_schedule = "constant"  # "constant" | "step": lr / (1 + t // lr_decay_every)
    c.lr_decay_every = 50  # seed 002's heterogeneous schedule: 0.75 / (1 + t // 50)
    c.beta = 0.99  # worker momentum (RESAM) or server momentum
    c.dampening = -1.0  # < 0: EMA form (dampening = beta); 0: m <- beta m + g
    c.nesterov = False
    c.b1 = 0.99
    c.b2 = 0.999
    c.eps = 1e-8
    c.mra_safeguard = ""  # "" (faithful: NaN on negative v*) | "clamp"
    c.weight_decay = 1e-4
    c.clip_norm = 2.0  # per-worker gradient clipping; <= 0 disables
    c.batch_size = 25
    # Devices: "none" (one device), "runs" (split seeds x hparam points over a
    # mesh) or "workers" (split the worker axis; n must divide evenly).
    c.shard = "none"
    c.num_devices = 0  # 0: every visible device
    # How a group's runs (seeds x float points) share one program: "vmap",
    # "map" (lax.map, one after another) or "auto" (map on CPU, vmap elsewhere).
    c.run_batching = "auto"
    # Per-worker gradients: "auto" (unrolled on CPU for CNNs, else vmap), "vmap",
    # "unrolled", "map" or "chunked:<c>" (byzjax.sim._train.resolve_grad_strategy).
    c.grad_strategy = "auto"
    # Schedule.
    c.num_rounds = 1000
    c.eval_every = 50
    return c


def hparams_of(config) -> dict[str, float]:
    """The traced float hyper-parameters of ``config`` as a dict of Python floats."""
    return {k: float(config[k]) for k in FLOAT_HPARAMS}


def validate(config) -> None:
    """Raises ``ValueError`` with a readable message on a bad configuration."""
    from byzjax import aggregators, attacks

    n, f = int(config.num_workers), int(config.num_byzantine)
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}"
        )
    if not 0 <= f or not 2 * f < n:
        raise ValueError(
            f"need 0 <= num_byzantine < num_workers / 2, got num_workers={n}, "
            f"num_byzantine={f}"
        )
    attackers = num_attackers(config)
    if not 0 <= attackers < n:
        raise ValueError(f"num_attackers must be in [0, {n}), got {attackers}")
    m = n
    if config.preaggregator:
        aggregators.PREAGGREGATORS.check(config.preaggregator, num_workers=n,
                                         num_byzantine=f)
        if config.preaggregator == "bucketing":
            s = int(config.preaggregator_kwargs.get("bucket_size", 2))
            m = -(-n // s)
    aggregators.check(config.aggregator, num_workers=m, num_byzantine=f)
    attacks.entry(config.attack)
    if config.eval_every <= 0 or config.num_rounds % config.eval_every:
        raise ValueError(
            f"num_rounds ({config.num_rounds}) must be a positive multiple of "
            f"eval_every ({config.eval_every})"
        )
    if config.split not in ("homogeneous", "dirichlet", "label_sorted"):
        raise ValueError(
            f"unknown split {config.split!r}; choose homogeneous, dirichlet or "
            "label_sorted"
        )
    if config.get("shard", "none") not in ("none", "runs", "workers"):
        raise ValueError(
            f"unknown shard {config.shard!r}; choose none, runs or workers")
    if "grad_strategy" in config:
        from byzjax.sim._train import resolve_grad_strategy

        resolve_grad_strategy(config.grad_strategy, num_workers=n, backend="cpu")
    if config.lr_schedule not in ("constant", "step"):
        raise ValueError(
            f"unknown lr_schedule {config.lr_schedule!r}; choose constant or step"
        )


def num_attackers(config) -> int:
    """The real number of attacking rows (``num_attackers`` or ``num_byzantine``)."""
    a = int(config.num_attackers)
    return int(config.num_byzantine) if a < 0 else a
