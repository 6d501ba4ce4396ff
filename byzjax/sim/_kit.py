"""The round kit: what every program of the simulator is built from.

The data and state types (:class:`SimData`, :class:`SimState`,
:class:`Program`, :func:`program_of`), a worker's loss and the test-set
evaluation, mini-batch sampling and label flip, the per-worker map
(``grad_strategy``: :func:`resolve_grad_strategy`, :func:`map_workers`), the
run's optimiser stages (:func:`stages_for`, :func:`learning_rate_schedule`)
and small tree helpers. The programs (:mod:`byzjax.sim._single`,
:mod:`byzjax.sim._guanyu`, :mod:`byzjax.sim._liubei`) sit above it; the
diagnostics they record are in :mod:`byzjax.sim._diagnostics`, beside it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from byzjax import attacks, optim
from byzjax import data as bdata
from byzjax.sim._fields import parse_grad_strategy, parse_milestones
from byzjax.sim._spec import RunSpec
from byzjax.sim._validate import attack_strength

__all__ = ["SimData", "SimState", "Program", "program_of", "normalize",
           "init_variables", "has_convolutions", "make_loss_fn", "make_evaluate",
           "sample_batch_indices", "server_batch_indices", "flip_byzantine_labels",
           "labels_num_classes",
           "MAX_UNROLLED_WORKERS", "resolve_grad_strategy", "map_workers",
           "learning_rate_schedule", "stages_for", "tree_all_finite", "nanmean"]


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
      server_indices: int32 ``[server_data_size]`` indices into the train set
        of the server's own root dataset (no worker holds them), or ``None``
        (no server data; config ``server_data_size = 0``).
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
    server_indices: Any = None


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
      evaluate: ``(params, batch_stats) -> (accuracy, loss, class_accuracy)``
        on the test set (:func:`make_evaluate`).
      num_evals: number of evaluations in a run.
    """

    init: Callable
    run_chunk: Callable
    train: Callable
    round_step: Callable
    evaluate: Callable
    num_evals: int


def normalize(images, data: SimData):
    """``images`` (uint8 ``[..., H, W, C]``) as the model sees them: byzjax.data's
    preprocessing with the train set's channel statistics ``data.mean`` and
    ``data.std``.

    Example:
      >>> import jax.numpy as jnp
      >>> data = SimData(*([None] * 6), mean=jnp.array([0.5]), std=jnp.array([0.5]))
      >>> normalize(jnp.array([[[[0], [255]]]], jnp.uint8), data).ravel()
      Array([-1.,  1.], dtype=float32)
    """
    return bdata.preprocess(images, mean=data.mean, std=data.std)


def init_variables(model, key, sample_shape: tuple[int, ...], *,
                   init_seed: int | None = None):
    """The model's initial variables (``params``, and ``batch_stats`` with
    BatchNorm), from one ``key`` for parameters and dropout, traced on a batch
    of one zero sample ``[1, *sample_shape]``. With ``init_seed`` (config
    field ``init_seed``) the key is ``jax.random.key(init_seed)`` instead:
    runs of every seed then start from the same parameters.

    Example:
      >>> import jax
      >>> from byzjax.models import MLP
      >>> v = init_variables(MLP(hidden=4), jax.random.key(0), (2, 2, 1))
      >>> sorted(v), v["params"]["Dense_0"]["kernel"].shape
      (['params'], (4, 4))
      >>> a, b = (init_variables(MLP(hidden=4), jax.random.key(s), (2, 2, 1),
      ...                        init_seed=3) for s in (0, 1))
      >>> w = [v["params"]["Dense_0"]["kernel"] for v in (a, b)]
      >>> bool((w[0] == w[1]).all())
      True
    """
    if init_seed is not None:
        key = jax.random.key(int(init_seed))
    return model.init({"params": key, "dropout": key},
                      jnp.zeros((1,) + tuple(sample_shape)), train=False)


def has_convolutions(params) -> bool:
    """Whether a parameter tree has a leaf of rank 4 or more (a convolution
    kernel): ``grad_strategy="auto"`` unrolls the workers only then.

    Example:
      >>> import jax.numpy as jnp
      >>> has_convolutions({"conv": jnp.zeros((3, 3, 1, 8)), "b": jnp.zeros(8)})
      True
      >>> has_convolutions({"w": jnp.zeros((4, 2))})
      False
    """
    return any(leaf.ndim >= 4 for leaf in jax.tree_util.tree_leaves(params))


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
    """``evaluate(params, batch_stats=None) -> (accuracy, mean loss,
    class_accuracy)`` over the first ``eval_size`` test examples (in chunks of
    1000 when it divides). ``class_accuracy`` ``[num_classes]`` is each class's
    share of its test examples predicted right (a confusion count's diagonal
    over its row sums; NaN for a class absent from the examples): a network
    that never predicts some classes shows them at 0 however high its
    accuracy on the others.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from byzjax.models import MLP
      >>> model = MLP(num_classes=2, hidden=4)
      >>> imgs = jnp.zeros((4, 2, 2, 1), jnp.uint8)
      >>> data = SimData(imgs, jnp.zeros(4, jnp.int32), imgs,
      ...                jnp.array([0, 1, 0, 1]), None, None, jnp.zeros(1),
      ...                jnp.ones(1))
      >>> params = model.init(jax.random.key(0), imgs[:1])["params"]
      >>> acc, loss, per_class = make_evaluate(model, data, eval_size=4,
      ...                                      has_bn=False)(params)
      >>> float(acc), sorted(per_class.tolist())  # one class for all-zero images
      (0.5, [0.0, 1.0])
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
            logits = model.apply(variables, normalize(xb, data), train=False)
            right = (jnp.argmax(logits, -1) == yb).astype(jnp.float32)
            num_classes = logits.shape[-1]
            hits = jnp.zeros(num_classes).at[yb].add(right)
            seen = jnp.zeros(num_classes).at[yb].add(1.0)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).sum()
            return carry, (hits, seen, loss)

        _, (hits, seen, loss) = jax.lax.scan(one, None, (xs, ys))
        hits, seen = hits.sum(0), seen.sum(0)
        return hits.sum() / eval_size, loss.sum() / eval_size, hits / seen

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


def learning_rate_schedule(spec: RunSpec, hp):
    """The server's learning rate: ``hp["learning_rate"]``, or with
    ``lr_schedule="step"`` the schedule ``t -> lr / (1 + floor(t /
    lr_decay_every))`` of the server step ``t`` (counted from 0), or with
    ``"multistep"`` ``t -> lr * lr_decay_factor ** #{m in lr_milestones: m <= t}``
    (PyTorch's ``MultiStepLR`` stepped once per round after the optimiser's
    step, as ByzFL does: round ``t = m`` is the first at the decayed rate).

    Example:
      >>> from byzjax import sim
      >>> c = sim.get_config()
      >>> c.lr_schedule, c.lr_decay_every = "step", 10
      >>> float(learning_rate_schedule(sim.resolve(c), {"learning_rate": 0.5})(25))
      0.1666666716337204
      >>> c = sim.get_config()
      >>> c.lr_schedule, c.lr_milestones, c.lr_decay_factor = "multistep", "2,4", 0.5
      >>> [float(learning_rate_schedule(sim.resolve(c), {"learning_rate": 1.0})(t))
      ...  for t in range(6)]
      [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    milestones = parse_milestones(spec.lr_milestones)
    if spec.lr_schedule == "multistep" and milestones:
        rounds, factor = jnp.asarray(milestones), spec.lr_decay_factor
        return lambda t: hp["learning_rate"] * factor ** jnp.sum(t >= rounds)
    if spec.lr_schedule == "step":
        every = float(spec.lr_decay_every)
        return lambda t: hp["learning_rate"] / (1.0 + jnp.floor(t / every))
    return hp["learning_rate"]


def stages_for(spec: RunSpec, hp, key, *, num_workers: int | None = None,
               num_attackers: int | None = None) -> optim.Stages:
    """The run's optimiser as :func:`byzjax.optim.stages` (worker, attack,
    robust, server), with the float hyper-parameters taken from ``hp``.

    Args:
      spec: a :class:`~byzjax.sim.RunSpec` (its static fields: names, ``n``,
        ``f``, optimiser switches).
      hp: dict of (possibly traced) floats (``spec.hparams``: the
        ``FLOAT_HPARAMS``); ``hp["attack_eps"]`` sets the attack's strength
        keyword (:func:`~byzjax.sim._validate.attack_strength`) when
        ``spec.attack_eps`` is set and the attack has one.
      key: PRNG key seeding the stages' states (attack, pre-aggregation).
      num_workers, num_attackers: the rows the stages see and how many of
        them are attacked, when not the run's ``n`` and real ``f``: a
        peer-to-peer receiver's view (:mod:`byzjax.sim._p2p`).

    Returns:
      :class:`byzjax.optim.Stages`.

    Example:
      >>> import jax
      >>> from byzjax import sim
      >>> spec = sim.resolve(sim.get_config())
      >>> s = stages_for(spec, spec.hparams, jax.random.key(0))
      >>> type(s).__name__
      'Stages'
    """
    # Optimiser keywords: traced floats from ``hp``, static ones from the spec.
    opt_kwargs = {kw: hp[field] if field in hp else spec.value(field)
                  for kw, field in optim.optimizer_entry(
                      spec.optimizer).config_fields.items()}
    attack_kwargs = dict(spec.attack_kwargs)
    # ``attack_eps`` sets the attack's strength keyword, if it has one.
    strength = attack_strength(spec.attack)
    if spec.attack_eps is not None and strength is not None:
        attack_kwargs[strength] = hp["attack_eps"]
    # An adaptive attacker knows the server's pipeline and its declared f.
    return optim.stages(
        spec.optimizer,
        num_workers=spec.num_workers if num_workers is None else num_workers,
        num_byzantine=spec.num_byzantine, aggregator=spec.aggregator,
        aggregator_kwargs=dict(spec.aggregator_kwargs),
        preaggregator=spec.preaggregator,
        preaggregator_kwargs=dict(spec.preaggregator_kwargs),
        clip_norm=None if spec.clip_norm is None else hp["clip_norm"],
        attack=spec.attack,
        num_attackers=(spec.num_attackers if num_attackers is None
                       else num_attackers),
        attack_kwargs=attack_kwargs, clip_point=spec.clip_point,
        attack_point=spec.attack_point, layout=spec.robust_layout, key=key,
        learning_rate=learning_rate_schedule(spec, hp), **opt_kwargs)


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


def server_batch_indices(key, server_indices, batch_size: int):
    """The server's batch of its root dataset, indices ``int32[b_s]``.

    All of it (``b_s = m``, the same every round, ``key`` unused) when it has
    ``m <= batch_size`` examples, as FLTrust's server uses its 100 root
    examples; otherwise ``batch_size`` indices drawn with replacement, as a
    worker draws from its shard (:func:`sample_batch_indices`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> root = jnp.array([3, 7, 9])
      >>> server_batch_indices(jax.random.key(0), root, 25).tolist()
      [3, 7, 9]
      >>> server_batch_indices(jax.random.key(0), root, 2).shape
      (2,)
    """
    m = int(server_indices.shape[0])
    if m <= batch_size:
        return server_indices
    return sample_batch_indices(key, server_indices[None],
                                jnp.full((1,), m, jnp.int32), batch_size)[0]


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
    """The number of classes: ``data.num_classes``, or for ``SimData``
    without it one more than the largest train or test label (concrete
    labels only: a program whose data are its inputs has ``num_classes``
    set, ``byzjax.sim._compile.program_inputs``).

    Example:
      >>> import jax.numpy as jnp
      >>> data = SimData(None, jnp.array([0, 3]), None, jnp.array([1]), None, None,
      ...                None, None)
      >>> labels_num_classes(data), labels_num_classes(data._replace(num_classes=10))
      (4, 10)
    """
    if data.num_classes:
        return int(data.num_classes)
    return int(max(np.max(np.asarray(data.train_labels)),
                   np.max(np.asarray(data.test_labels)))) + 1


def tree_all_finite(tree) -> jax.Array:
    """Bool scalar: every entry of every leaf of ``tree`` is finite.

    Example:
      >>> import jax.numpy as jnp
      >>> bool(tree_all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.inf])}))
      False
    """
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                              for x in jax.tree_util.tree_leaves(tree)]))


def nanmean(v) -> jax.Array:
    """A chunk's value of a round metric ``[rounds]``: the mean over its finite
    rounds for floats (NaN rounds left out), the last round's for integers.

    Example:
      >>> import jax.numpy as jnp
      >>> float(nanmean(jnp.array([1.0, jnp.nan, 3.0])))
      2.0
      >>> int(nanmean(jnp.array([4, 7])))
      7
    """
    return jnp.nanmean(v) if jnp.issubdtype(v.dtype, jnp.floating) else v[-1]
