"""One compiled training program: ``make_train(config, data) -> train(key, hparams)``.

The whole run is traced once: per-worker gradients are computed over the
worker axis (``vmap``, or separate calls unrolled in the program on XLA:CPU:
config ``grad_strategy``, :func:`resolve_grad_strategy`), the byzjax optax
chain (worker transform -> attack -> pre-aggregation -> aggregation) and the
server update run inside ``lax.scan`` over rounds, and an evaluation follows
every ``eval_every`` rounds. Seeds and float hyper-parameters are arguments, so
``jax.vmap(train)`` runs many of them in one program (purejaxrl / evosax
style).

The pieces are exposed separately so long jobs can stream progress:
``init(key, hparams) -> SimState`` and ``run_chunk(state, hparams) ->
(state, metrics)`` (``eval_every`` rounds plus one evaluation);
``train = scan(run_chunk, init(...))``.

BatchNorm and dropout per worker (under every ``grad_strategy``): each worker
normalises with the statistics of its own mini-batch (as n separate machines
would); the running averages used at evaluation are server state, updated
with the mean over the honest workers of their new running averages (a
Byzantine worker sends only its vector). Each worker draws dropout masks from
its own key, split from the round key.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from byzjax import aggregators, attacks, optim
from byzjax import data as bdata
from byzjax._tree import pairwise_sq_distances
from byzjax.sim._fields import GRAD_STRATEGIES, parse_grad_strategy
from byzjax.sim._spec import RunSpec, resolve
from byzjax.sim._diagnostics import EXPLAIN, make_explain

__all__ = ["SimState", "SimData", "make_train", "make_program", "Program",
           "sample_batch_indices", "flip_byzantine_labels", "GRAD_STRATEGIES",
           "resolve_grad_strategy", "map_workers"]


class SimData(NamedTuple):
    """Everything the program reads, placed on the device once.

    Attributes:
      train_images: uint8 ``[N, H, W, C]``.
      train_labels: int32 ``[N]``.
      test_images: uint8 ``[M, H, W, C]``.
      test_labels: int32 ``[M]``.
      worker_indices: int32 ``[n, max_m]`` indices into the train set per worker.
      worker_counts: int32 ``[n]`` valid entries per row of ``worker_indices``.
      mean: float32 ``[C]`` channel means of ``x / 255`` (normalisation).
      std: float32 ``[C]`` channel standard deviations.
      num_classes: the dataset's number of classes (``byzjax.data``);
        ``None``: one more than the largest label.
    """

    train_images: Any
    train_labels: Any
    test_images: Any
    test_labels: Any
    worker_indices: Any
    worker_counts: Any
    mean: Any
    std: Any
    num_classes: int | None = None


class SimState(NamedTuple):
    """The carry of the round loop (a pytree; vmappable over seeds).

    Attributes:
      params: model parameters, leaves ``[*param_shape]``.
      batch_stats: BatchNorm running averages (empty dict if none).
      opt_state: state of the whole byzjax + optax chain.
      key: PRNG key for batches and dropout.
      round: int32 scalar, rounds done.
      diverged_round: int32 scalar, first round whose loss or parameters were
        non-finite, ``-1`` while finite.
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array
    round: jax.Array
    diverged_round: jax.Array


class Program(NamedTuple):
    """The pure functions of one configuration (all jit/vmap-able).

    Attributes:
      init: ``(key, hparams) -> SimState``.
      run_chunk: ``(state, hparams) -> (state, metrics)``; ``eval_every``
        rounds then one evaluation; ``metrics`` is a dict of scalars.
      train: ``(key, hparams) -> (state, metrics)``; the whole run, metrics
        stacked over evaluations (``[num_evals]`` each).
      round_step: ``(state, hparams, diagnostics=True, explain=False) ->
        (state, round_metrics)``; one round. ``diagnostics`` (a bool, possibly
        traced) switches the diagnostics (NaN when off); ``explain`` (idem)
        the per-chunk ones of :mod:`byzjax.sim._diagnostics` (``run_chunk``
        sets it on the chunk's last round only).
      evaluate: ``(params, batch_stats) -> (accuracy, loss)`` on the test set.
      num_evals: number of evaluations in a run.
    """

    init: Callable
    run_chunk: Callable
    train: Callable
    round_step: Callable
    evaluate: Callable
    num_evals: int


def _normalize(images, data: SimData):
    # byzjax.data's preprocessing with the train set's channel statistics.
    return bdata.preprocess(images, mean=data.mean, std=data.std)


def make_program(config: RunSpec, data: SimData, model, *,
                 worker_sharding=None, byzantine_gradients: bool | None = None
                 ) -> Program:
    """Builds the pure functions of one configuration.

    Args:
      config: a :class:`~byzjax.sim.RunSpec` (or a config, resolved here with
        :func:`~byzjax.sim.resolve`). Its static fields are read here; float
        hyper-parameters come at call time.
      data: :class:`SimData` (arrays, ideally already on the device).
      model: a Flax linen module mapping ``[b, H, W, C]`` to ``[b, classes]``
        and taking ``train=`` (BatchNorm/dropout switch).
      worker_sharding: optional ``jax.sharding.Sharding`` for the stacked
        ``[n, ...]`` worker gradients (``shard="workers"``, see
        :mod:`byzjax.parallel`).
      byzantine_gradients: compute the Byzantine workers' own gradients.
        ``None`` (default): only when something reads them -- an attack that
        sends or corrupts the workers' own vectors (``label_flip``,
        ``sign_flip_own``, ``none``; :class:`~byzjax.attacks.AttackEntry`'s
        ``data_level`` / ``needs_own``) or a sharded worker axis. Otherwise
        their rows are replaced by the attack anyway, so the round computes
        the ``n - f`` honest gradients only (``f / n`` less work; the honest
        rows are the same gradients, equal to 1e-5 under ``vmap``). ``True``
        forces all ``n``. A BatchNorm model's running statistics are the mean
        of the honest workers' batch statistics either way (a Byzantine
        worker sends only its vector), so this choice never changes a result.

    Returns:
      A :class:`Program`.
    """
    spec = resolve(config)
    if spec.replicated_servers:
        from byzjax.sim._servers import make_server_program

        return make_server_program(spec, data, model,
                                   worker_sharding=worker_sharding)
    n = spec.num_workers
    n_att = spec.num_attackers
    n_honest = n - n_att
    b = spec.batch_size
    eval_every = spec.eval_every
    num_evals = spec.num_evals
    label_flip = spec.attack == "label_flip"
    num_classes = data.num_classes or labels_num_classes(data)
    eval_size = spec.eval_size or int(data.test_labels.shape[0])
    sample_shape = tuple(data.train_images.shape[1:])

    variables = jax.eval_shape(
        lambda k: model.init({"params": k, "dropout": k},
                             jnp.zeros((1,) + sample_shape), train=False),
        jax.random.key(0),
    )
    has_bn = "batch_stats" in variables
    explain_fn = make_explain(spec, num_honest=n_honest)
    if byzantine_gradients is None:
        entry = attacks.entry(spec.attack) if n_att else None
        byzantine_gradients = (worker_sharding is not None or entry is None
                               or entry.data_level or entry.needs_own)
    # workers whose gradients the round computes (the others' rows are zeros
    # until the attack stage writes the Byzantine rows)
    n_grads = n if byzantine_gradients else n_honest

    # ------------------------------------------------------------- gradients
    grad_fn = jax.grad(make_loss_fn(model, has_bn=has_bn), has_aux=True)
    grad_strategy = resolve_grad_strategy(
        spec.grad_strategy, num_workers=n_grads,
        backend=jax.default_backend(), sharded=worker_sharding is not None,
        convolutional=any(leaf.ndim >= 4 for leaf in
                          jax.tree_util.tree_leaves(variables["params"])))

    def sample_batches(key):
        return sample_batch_indices(key, data.worker_indices, data.worker_counts, b)

    # ------------------------------------------------------------ one round
    def init(key, hp):
        k_model, k_tx, k_run = jax.random.split(key, 3)
        v = model.init({"params": k_model, "dropout": k_model},
                       jnp.zeros((1,) + sample_shape), train=False)
        params = v["params"]
        batch_stats = v.get("batch_stats", {})
        opt_state = tuple(tx.init(params) for tx in stages_for(spec, hp, k_tx))
        return SimState(params, batch_stats, opt_state, k_run,
                        jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))

    def round_step(state: SimState, hp, diagnostics=True, explain=False):
        # The optimiser's stages (the simulator reads diagnostics between them);
        # the factories' keys only seed their states (made in ``init``).
        worker_tx, attack_tx, robust_tx, server_tx = stages_for(
            spec, hp, jax.random.key(0))
        key, k_batch, k_drop = jax.random.split(state.key, 3)
        idx = sample_batches(k_batch)[:n_grads]  # [n_grads, b]
        x = _normalize(data.train_images[idx], data)  # [n_grads, b, H, W, C]
        y = data.train_labels[idx]  # [n_grads, b]
        if label_flip:
            y = flip_byzantine_labels(y, num_honest=n_honest, num_classes=num_classes)
        drop_keys = jax.random.split(k_drop, n)[:n_grads]
        grads, (losses, new_stats) = map_workers(
            lambda xs: grad_fn(state.params, state.batch_stats, *xs,
                               hp["weight_decay"]),
            (x, y, drop_keys), strategy=grad_strategy)
        if n_grads < n:  # zero rows for the Byzantine workers (attack writes them)
            grads = jax.tree_util.tree_map(
                lambda g: jnp.concatenate(
                    [g, jnp.zeros((n - n_grads,) + g.shape[1:], g.dtype)]), grads)

        if worker_sharding is not None:
            grads = jax.lax.with_sharding_constraint(grads, worker_sharding)
        ws, ats, rs, ss = state.opt_state
        sent, ws = worker_tx.update(grads, ws, state.params)
        attacked, ats = attack_tx.update(sent, ats, state.params)
        aggregate, rs = robust_tx.update(attacked, rs, state.params)
        step, ss = server_tx.update(aggregate, ss, state.params)
        params = optax.apply_updates(state.params, step)
        if has_bn:  # the honest workers' mean batch statistics
            batch_stats = jax.tree_util.tree_map(lambda s: s[:n_honest].mean(0),
                                                 new_stats)
        else:
            batch_stats = state.batch_stats

        train_loss = losses[:n_honest].mean()
        finite = jnp.isfinite(train_loss) & _tree_all_finite(params)
        t = state.round + 1
        diverged = jnp.where((state.diverged_round < 0) & ~finite, t,
                             state.diverged_round)
        if diagnostics is True:
            diag = _diagnostics(sent, aggregate, n_honest)
        elif diagnostics is False:
            diag = dict.fromkeys(DIAGNOSTICS, jnp.float32(jnp.nan))
        else:  # a traced flag: computed only when set, else NaN
            diag = jax.lax.cond(
                diagnostics,
                lambda s, a: _diagnostics(s, a, n_honest),
                lambda s, a: dict.fromkeys(DIAGNOSTICS, jnp.float32(jnp.nan)),
                sent, aggregate)
        metrics = {"train_loss": train_loss, **diag,
                   **_explain(explain, explain_fn, sent, attacked)}
        new_state = SimState(params, batch_stats, (ws, ats, rs, ss), key, t,
                             diverged)
        return new_state, metrics

    # ------------------------------------------------------------ evaluation
    evaluate = make_evaluate(model, data, eval_size=eval_size, has_bn=has_bn)

    def run_chunk(state, hp):
        # (the per-chunk diagnostics on the last round: an unbatched flag,
        # so a real branch even when runs are vmapped)
        state, rm = jax.lax.scan(
            lambda s, i: round_step(s, hp, explain=i == eval_every - 1), state,
            jnp.arange(eval_every))
        acc, test_loss = evaluate(state.params, state.batch_stats)
        metrics = {k: _nanmean(v) for k, v in rm.items()}
        metrics.update(test_accuracy=acc, test_loss=test_loss, round=state.round,
                       diverged_round=state.diverged_round)
        return state, metrics

    return program_of(init, run_chunk, round_step, evaluate, num_evals)


def learning_rate_schedule(spec: RunSpec, hp):
    """The server's learning rate: ``hp["learning_rate"]``, or with
    ``lr_schedule="step"`` the schedule ``t -> lr / (1 + floor(t /
    lr_decay_every))`` of the server step ``t``.

    Example:
      >>> from byzjax import sim
      >>> c = sim.get_config()
      >>> c.lr_schedule, c.lr_decay_every = "step", 10
      >>> float(learning_rate_schedule(sim.resolve(c), {"learning_rate": 0.5})(25))
      0.1666666716337204
    """
    if spec.lr_schedule == "step":
        every = float(spec.lr_decay_every)
        return lambda t: hp["learning_rate"] / (1.0 + jnp.floor(t / every))
    return hp["learning_rate"]


def stages_for(spec: RunSpec, hp, key) -> optim.Stages:
    """The run's optimiser as :func:`byzjax.optim.stages` (worker, attack,
    robust, server), with the float hyper-parameters taken from ``hp``.

    Args:
      spec: a :class:`~byzjax.sim.RunSpec` (its static fields: names, ``n``,
        ``f``, optimiser switches).
      hp: dict of (possibly traced) floats, :func:`~byzjax.sim.hparams_of`.
      key: PRNG key seeding the stages' states (attack, pre-aggregation).

    Returns:
      :class:`byzjax.optim.Stages`.

    Example:
      >>> import jax
      >>> from byzjax import sim
      >>> spec = sim.resolve(sim.get_config())
      >>> s = stages_for(spec, sim.hparams_of(spec.config), jax.random.key(0))
      >>> type(s).__name__
      'Stages'
    """
    # Optimiser keywords: traced floats from ``hp``, static ones from the spec.
    opt_kwargs = {kw: hp[field] if field in hp else getattr(spec, field)
                  for kw, field in optim.optimizer_entry(
                      spec.optimizer).config_fields.items()}
    attack_kwargs = dict(spec.attack_kwargs)
    if not attacks.entry(spec.attack).adaptive and spec.attack_eps is not None:
        attack_kwargs["eps"] = hp["attack_eps"]
    # An adaptive attacker knows the server's pipeline and its declared f.
    return optim.stages(
        spec.optimizer, num_workers=spec.num_workers,
        num_byzantine=spec.num_byzantine, aggregator=spec.aggregator,
        aggregator_kwargs=dict(spec.aggregator_kwargs),
        preaggregator=spec.preaggregator,
        preaggregator_kwargs=dict(spec.preaggregator_kwargs),
        clip_norm=None if spec.clip_norm is None else hp["clip_norm"],
        attack=spec.attack, num_attackers=spec.num_attackers,
        attack_kwargs=attack_kwargs, clip_point=spec.clip_point,
        attack_point=spec.attack_point, key=key,
        learning_rate=learning_rate_schedule(spec, hp), **opt_kwargs)


def make_loss_fn(model, *, has_bn: bool) -> Callable:
    """One worker's training loss ``(params, batch_stats, x, y, dropout_key,
    weight_decay) -> (loss + weight_decay / 2 ||params||^2, (loss,
    new_batch_stats))``; ``x`` is a normalised batch ``[b, H, W, C]``, ``y``
    int ``[b]``. Without BatchNorm the statistics pass through unchanged.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from byzjax.models import MLP
      >>> x, y = jnp.ones((2, 2, 2, 1)), jnp.array([0, 1])
      >>> params = MLP(hidden=4).init(jax.random.key(0), x)["params"]
      >>> total, (loss, stats) = make_loss_fn(MLP(hidden=4), has_bn=False)(
      ...     params, {}, x, y, jax.random.key(1), 0.0)
      >>> bool(total == loss), stats
      (True, {})
    """

    def loss_fn(params, batch_stats, x, y, dropout_key, weight_decay):
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = batch_stats
            logits, new_state = model.apply(
                variables, x, train=True, mutable=["batch_stats"],
                rngs={"dropout": dropout_key})
            new_stats = new_state["batch_stats"]
        else:
            logits = model.apply(variables, x, train=True,
                                 rngs={"dropout": dropout_key})
            new_stats = batch_stats
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        l2 = sum(jnp.sum(p * p) for p in jax.tree_util.tree_leaves(params))
        return loss + 0.5 * weight_decay * l2, (loss, new_stats)

    return loss_fn


def make_evaluate(model, data: SimData, *, eval_size: int,
                  has_bn: bool) -> Callable:
    """``evaluate(params, batch_stats=None) -> (accuracy, mean loss)`` over the
    first ``eval_size`` test examples (in chunks of 1000 when it divides).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from byzjax.models import MLP
      >>> model = MLP(num_classes=2, hidden=4)
      >>> imgs = jnp.zeros((4, 2, 2, 1), jnp.uint8)
      >>> data = SimData(imgs, jnp.zeros(4, jnp.int32), imgs,
      ...                jnp.array([0, 1, 0, 1]), None, None, jnp.zeros(1),
      ...                jnp.ones(1))
      >>> params = model.init(jax.random.key(0), imgs[:1])["params"]
      >>> acc, loss = make_evaluate(model, data, eval_size=4, has_bn=False)(params)
      >>> float(acc)   # one class predicted for the all-zero images
      0.5
    """

    def evaluate(params, batch_stats=None):
        xs = data.test_images[:eval_size]
        ys = data.test_labels[:eval_size]
        chunk = 1000 if eval_size % 1000 == 0 else eval_size
        xs = xs.reshape((eval_size // chunk, chunk) + xs.shape[1:])
        ys = ys.reshape((eval_size // chunk, chunk))
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = batch_stats

        def one(carry, xy):
            xb, yb = xy
            logits = model.apply(variables, _normalize(xb, data), train=False)
            correct = jnp.sum(jnp.argmax(logits, -1) == yb)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).sum()
            return carry, (correct, loss)

        _, (correct, loss) = jax.lax.scan(one, None, (xs, ys))
        return correct.sum() / eval_size, loss.sum() / eval_size

    return evaluate


def program_of(init, run_chunk, round_step, evaluate, num_evals: int) -> Program:
    """The :class:`Program` whose ``train`` is ``init`` then ``num_evals``
    chunks under ``lax.scan``.

    Example:
      >>> p = program_of(lambda k, hp: 0.0, lambda s, hp: (s + hp, s), None,
      ...                None, 3)
      >>> p.train(None, 1.0)[1].tolist()   # metrics: the state before each chunk
      [0.0, 1.0, 2.0]
    """

    def train(key, hp):
        state = init(key, hp)
        return jax.lax.scan(lambda s, _: run_chunk(s, hp), state, None,
                            length=num_evals)

    return Program(init, run_chunk, train, round_step, evaluate, num_evals)


def make_train(config, data: SimData, model) -> Callable:
    """``train(key, hparams) -> (final SimState, metrics [num_evals])``, one program.

    Example (tiny synthetic data; see tests for the full check)::

        train = make_train(config, data, model)
        state, metrics = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, hp)
    """
    return make_program(config, data, model).train


# ------------------------------------------------- per-worker computation
#: ``"auto"`` unrolls at most this many workers on the CPU (compile time grows
#: linearly with the number of unrolled copies); beyond it the workers run in
#: vmapped groups of this size, one group after another.
MAX_UNROLLED_WORKERS = 64


def resolve_grad_strategy(strategy: str, *, num_workers: int, backend: str,
                          sharded: bool = False, convolutional: bool = True) -> str:
    """The per-worker gradient strategy to use (``"auto"`` resolved).

    * ``"vmap"``: one vectorised gradient over the worker axis (batched
      matmuls and convolutions); fastest on GPU/TPU and required when the
      worker axis is sharded over devices.
    * ``"unrolled"``: ``num_workers`` separate gradient calls traced into the
      same program, then stacked. Fastest on XLA:CPU, where the batched
      weight-gradient convolutions and matmuls of ``vmap`` run far below
      the speed of ``num_workers`` plain ones (``docs/PERFORMANCE.md``,
      section "models"); compile time grows with ``num_workers``.
    * ``"map"``: ``lax.map``, one worker after another in a loop (smallest
      program and memory; slow on XLA:CPU).
    * ``"chunked:<c>"``: ``lax.map`` over groups of ``c`` workers, each group
      vmapped (bounds the memory of ``vmap`` on accelerators).
    * ``"auto"``: ``"vmap"`` off the CPU, when sharded, or for a model
      without convolutions (``convolutional=False``: the MLP's round was
      no slower vmapped, and compiles faster); on the CPU, for convolutional
      models, ``"unrolled"`` up to :data:`MAX_UNROLLED_WORKERS` workers, else
      ``"chunked:<MAX_UNROLLED_WORKERS>"``.

    All strategies compute the same per-worker gradients, batch statistics
    and dropout masks (each worker its own batch and key; tested to 1e-5).
    Dropout masks are the same only for vmap-invariant PRNG keys (the
    default threefry); ``"rbg"`` keys draw different bits under ``vmap``.

    Example:
      >>> resolve_grad_strategy("auto", num_workers=15, backend="cpu")
      'unrolled'
      >>> resolve_grad_strategy("auto", num_workers=15, backend="gpu")
      'vmap'
      >>> resolve_grad_strategy("chunked:4", num_workers=15, backend="cpu")
      'chunked:4'
    """
    strategy = parse_grad_strategy(strategy)
    if strategy == "auto":
        if backend != "cpu" or sharded or not convolutional:
            return "vmap"
        if num_workers <= MAX_UNROLLED_WORKERS:
            return "unrolled"
        return f"chunked:{MAX_UNROLLED_WORKERS}"
    return strategy


def map_workers(fn: Callable, xs, *, strategy: str):
    """``fn`` applied to each worker's slice of ``xs``, outputs stacked.

    Args:
      fn: maps one worker's slice (a pytree) to a pytree.
      xs: pytree whose leaves have the worker axis first, ``[n, ...]``.
      strategy: a resolved strategy (see :func:`resolve_grad_strategy`).

    Returns:
      ``fn``'s output with leaves ``[n, ...]``; equal for every strategy.

    Example:
      >>> import jax.numpy as jnp
      >>> xs = jnp.arange(6.0).reshape(3, 2)
      >>> map_workers(lambda r: (r * r).sum(), xs, strategy="unrolled")
      Array([ 1., 13., 41.], dtype=float32)
    """
    if strategy == "vmap":
        return jax.vmap(fn)(xs)
    if strategy == "unrolled":
        n = jax.tree_util.tree_leaves(xs)[0].shape[0]
        outs = [fn(jax.tree_util.tree_map(lambda a, i=i: a[i], xs))
                for i in range(n)]
        return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *outs)
    if strategy == "map":
        return jax.lax.map(fn, xs)
    if strategy.startswith("chunked:"):
        return jax.lax.map(fn, xs, batch_size=int(strategy[8:]))
    raise ValueError(f"unresolved grad_strategy {strategy!r}")


# ----------------------------------------------------------------- helpers
def sample_batch_indices(key, worker_indices, worker_counts, batch_size: int):
    """Indices ``int32[n, batch_size]``: worker i samples (with replacement) from
    its own ``worker_indices[i, :worker_counts[i]]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> idx = sample_batch_indices(jax.random.key(0), jnp.array([[0, 1], [2, 3]]),
      ...                            jnp.array([2, 1]), 3)
      >>> idx.shape, bool(jnp.all(idx[1] == 2))
      ((2, 3), True)
    """
    n = worker_indices.shape[0]
    keys = jax.random.split(key, n)
    u = jax.vmap(lambda k: jax.random.uniform(k, (batch_size,)))(keys)
    pos = jnp.floor(u * worker_counts[:, None]).astype(jnp.int32)
    pos = jnp.minimum(pos, worker_counts[:, None] - 1)
    return jnp.take_along_axis(worker_indices, pos, axis=1)


def flip_byzantine_labels(labels, *, num_honest: int, num_classes: int):
    """Label flip (Fabris 2023): rows ``>= num_honest`` of ``int[n, b]`` labels become
    ``num_classes - 1 - y``; honest rows are untouched.

    Example:
      >>> import jax.numpy as jnp
      >>> flip_byzantine_labels(jnp.array([[0, 1], [0, 1]]), num_honest=1,
      ...                       num_classes=10)
      Array([[0, 1],
             [9, 8]], dtype=int32)
    """
    flipped = attacks.flip_labels(labels, num_classes)
    is_byz = (jnp.arange(labels.shape[0]) >= num_honest)[:, None]
    return jnp.where(is_byz, flipped, labels)


def labels_num_classes(data: SimData) -> int:
    """One more than the largest train or test label (``SimData`` without
    ``num_classes``)."""
    return int(max(np.max(np.asarray(data.train_labels)),
                   np.max(np.asarray(data.test_labels)))) + 1


def _tree_all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                              for x in jax.tree_util.tree_leaves(tree)]))


def _nanmean(v):
    return jnp.nanmean(v) if jnp.issubdtype(v.dtype, jnp.floating) else v[-1]


def _as_direction(stack):
    """The vector a worker row stands for (the m part of an MRA moment pair)."""
    if isinstance(stack, optim.MomentPair):
        return stack.m
    return stack


#: The round diagnostics (:func:`_diagnostics`).
DIAGNOSTICS = ("agg_dist", "honest_spread", "resilience", "cosine")


def _explain(flag, explain_fn, sent, attacked):
    """The per-chunk diagnostics when ``flag`` (bool or traced), else NaN."""
    nan = lambda *_: dict.fromkeys(EXPLAIN, jnp.float32(jnp.nan))  # noqa: E731
    if flag is True:
        return explain_fn(sent, attacked)
    if flag is False:
        return nan()
    return jax.lax.cond(flag, explain_fn, nan, sent, attacked)


def _diagnostics(sent, aggregate, n_honest):
    """Round diagnostics that explain a run ((f, lambda)-resilience).

    * ``agg_dist``: ``||F(x) - xbar_H||`` over all leaves, where ``F(x)`` is the
      aggregate the server used and ``xbar_H`` the mean of the honest rows;
    * ``honest_spread``: ``max_{i,j in H} ||x_i - x_j||``;
    * ``resilience``: their ratio, the empirical lambda of (f, lambda)-resilience;
    * ``cosine``: cosine between ``F(x)`` and ``xbar_H``.

    For MRA the rows are moment pairs; the diagnostics use the first moments.

    Cost: computed every round; in ``run_chunk`` / ``train`` each reported
    value is the mean over the chunk's rounds. Measured in a small round (MLP,
    n = 15, b = 25, trimmed mean; ``scripts/bench.py`` section 3), every
    round vs none: within noise (-2.5% wall, +0.1% CPU time), far under 10%,
    so no subsampling. ``round_step(..., diagnostics=False)`` skips them.
    """
    honest = jax.tree_util.tree_map(lambda x: x[:n_honest], _as_direction(sent))
    hbar = aggregators.mean(honest)
    leaves_a = jax.tree_util.tree_leaves(_as_direction(aggregate))
    leaves_h = jax.tree_util.tree_leaves(hbar)
    dist2 = sum(jnp.sum((a - h) ** 2) for a, h in zip(leaves_a, leaves_h))
    dot = sum(jnp.sum(a * h) for a, h in zip(leaves_a, leaves_h))
    na = jnp.sqrt(sum(jnp.sum(a * a) for a in leaves_a))
    nh = jnp.sqrt(sum(jnp.sum(h * h) for h in leaves_h))
    spread = jnp.sqrt(jnp.max(pairwise_sq_distances(honest)))
    dist = jnp.sqrt(dist2)
    return {
        "agg_dist": dist,
        "honest_spread": spread,
        "resilience": dist / jnp.maximum(spread, 1e-12),
        "cosine": jnp.clip(dot / jnp.maximum(na * nh, 1e-12), -1.0, 1.0),
    }
