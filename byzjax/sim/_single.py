"""The single-server program: one correct server, ``n`` workers.

One round: each worker samples its mini-batch and computes its gradient
(``grad_strategy``), the run's optimiser stages run one after another (worker
transform, attack, robust aggregation, server step) and the round's
diagnostics are read between them.

A rule that needs the server's own update (registry ``needs_reference``:
FLTrust) gets it as ``reference=``: the plain gradient of the same loss
(weight decay included) at the current parameters on the server's root data
(``SimData.server_indices``; all of it when it has at most ``batch_size``
examples, else a batch of ``batch_size`` drawn like a worker's), neither
clipped nor passed through the workers' momentum or Adam moments, its
BatchNorm statistics discarded.

BatchNorm and dropout per worker (under every ``grad_strategy``): each worker
normalises with the statistics of its own mini-batch (as n separate machines
would); the running averages used at evaluation are server state, updated
with the mean over the honest workers of their new running averages (a
Byzantine worker sends only its vector). Each worker draws dropout masks from
its own key, split from the round key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from byzjax import aggregators, attacks
from byzjax.sim._diagnostics import (
    DIAGNOSTICS,
    explain_metrics,
    make_explain,
    round_diagnostics,
)
from byzjax.sim._errors import ConfigError
from byzjax.sim._kit import (
    Program,
    SimData,
    SimState,
    flip_byzantine_labels,
    has_convolutions,
    init_variables,
    labels_num_classes,
    make_evaluate,
    make_loss_fn,
    map_workers,
    nanmean,
    normalize,
    program_of,
    resolve_grad_strategy,
    sample_batch_indices,
    server_batch_indices,
    stages_for,
    tree_all_finite,
)
from byzjax.sim._spec import RunSpec

__all__ = ["make_single_program"]


def make_single_program(spec: RunSpec, data: SimData, model, *,
                        worker_sharding=None,
                        byzantine_gradients: bool | None = None) -> Program:
    """The :class:`~byzjax.sim.Program` of one correct server.

    Args:
      spec: a :class:`~byzjax.sim.RunSpec` with ``server_protocol="single"``
        and no Byzantine server. Its static fields are read here; float
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
      A :class:`~byzjax.sim.Program` whose state is a
      :class:`~byzjax.sim.SimState`.

    Raises:
      ConfigError: the aggregator needs the server's own update and ``data``
        has no server data of ``spec.server_data_size`` examples.

    Example (tiny synthetic data; ``tests/test_sim.py`` runs it)::

        spec = sim.resolve(sim.get_config())
        program = make_single_program(spec, data, model)
        state, metrics = jax.jit(program.train)(jax.random.key(0), spec.hparams)
    """
    n = spec.num_workers
    n_att = spec.num_attackers
    n_honest = n - n_att
    b = spec.batch_size
    eval_every = spec.eval_every
    num_evals = spec.num_evals
    label_flip = spec.attack == "label_flip"
    num_classes = labels_num_classes(data)
    eval_size = spec.eval_size or int(data.test_labels.shape[0])
    sample_shape = tuple(data.train_images.shape[1:])

    variables = jax.eval_shape(lambda k: init_variables(model, k, sample_shape),
                               jax.random.key(0))
    has_bn = "batch_stats" in variables
    explain_fn = make_explain(spec, num_honest=n_honest)
    if byzantine_gradients is None:
        entry = attacks.entry(spec.attack) if n_att else None
        byzantine_gradients = (worker_sharding is not None or entry is None
                               or entry.data_level or entry.needs_own)
    # workers whose gradients the round computes (the others' rows are zeros
    # until the attack stage writes the Byzantine rows)
    n_grads = n if byzantine_gradients else n_honest
    # FLTrust: the server's own gradient on its root data is the reference.
    needs_reference = aggregators.AGGREGATORS.entry(spec.aggregator).needs_reference
    if needs_reference:
        have = (0 if data.server_indices is None
                else int(data.server_indices.shape[0]))
        if have == 0 or have != spec.server_data_size:
            raise ConfigError(
                f"aggregator {spec.aggregator} needs server data: the data has "
                f"{have} server examples, server_data_size is "
                f"{spec.server_data_size}; load it with load_sim_data",
                field="server_data_size")

    # ------------------------------------------------------------- gradients
    grad_fn = jax.grad(make_loss_fn(model, has_bn=has_bn), has_aux=True)
    grad_strategy = resolve_grad_strategy(
        spec.grad_strategy, num_workers=n_grads,
        backend=jax.default_backend(), sharded=worker_sharding is not None,
        convolutional=has_convolutions(variables["params"]))

    def sample_batches(key):
        return sample_batch_indices(key, data.worker_indices, data.worker_counts, b)

    # ------------------------------------------------------------ one round
    def init(key, hp):
        k_model, k_tx, k_run = jax.random.split(key, 3)
        v = init_variables(model, k_model, sample_shape,
                           init_seed=spec.init_seed)
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
        # weight decay: an L2 term of the workers' loss, or at the server
        server_decay = spec.weight_decay_point == "server"
        loss_decay = 0.0 if server_decay else hp["weight_decay"]
        idx = sample_batches(k_batch)[:n_grads]  # [n_grads, b]
        x = normalize(data.train_images[idx], data)  # [n_grads, b, H, W, C]
        y = data.train_labels[idx]  # [n_grads, b]
        if label_flip:
            y = flip_byzantine_labels(y, num_honest=n_honest, num_classes=num_classes)
        drop_keys = jax.random.split(k_drop, n)[:n_grads]
        grads, (losses, new_stats) = map_workers(
            lambda xs: grad_fn(state.params, state.batch_stats, *xs, loss_decay),
            (x, y, drop_keys), strategy=grad_strategy)
        if n_grads < n:  # zero rows for the Byzantine workers (attack writes them)
            grads = jax.tree_util.tree_map(
                lambda g: jnp.concatenate(
                    [g, jnp.zeros((n - n_grads,) + g.shape[1:], g.dtype)]), grads)

        if worker_sharding is not None:
            grads = jax.lax.with_sharding_constraint(grads, worker_sharding)
        server_kw = {}
        if needs_reference:  # the server's plain gradient on its own data
            k_srv_batch, k_srv_drop = jax.random.split(
                jax.random.fold_in(k_batch, n))
            sidx = server_batch_indices(k_srv_batch, data.server_indices, b)
            server_kw["reference"], _ = grad_fn(
                state.params, state.batch_stats,
                normalize(data.train_images[sidx], data), data.train_labels[sidx],
                k_srv_drop, loss_decay)
        ws, ats, rs, ss = state.opt_state
        sent, ws = worker_tx.update(grads, ws, state.params)
        attacked, ats = attack_tx.update(sent, ats, state.params)
        aggregate, rs = robust_tx.update(attacked, rs, state.params, **server_kw)
        decayed = aggregate
        if server_decay:  # PyTorch SGD's weight_decay (ByzFL): on the aggregate
            decayed = jax.tree_util.tree_map(
                lambda a, p: a + hp["weight_decay"] * p, aggregate, state.params)
        step, ss = server_tx.update(decayed, ss, state.params)
        params = optax.apply_updates(state.params, step)
        if has_bn:  # the honest workers' mean batch statistics
            batch_stats = jax.tree_util.tree_map(lambda s: s[:n_honest].mean(0),
                                                 new_stats)
        else:
            batch_stats = state.batch_stats

        train_loss = losses[:n_honest].mean()
        finite = jnp.isfinite(train_loss) & tree_all_finite(params)
        t = state.round + 1
        diverged = jnp.where((state.diverged_round < 0) & ~finite, t,
                             state.diverged_round)
        if diagnostics is True:
            diag = round_diagnostics(sent, aggregate, n_honest)
        elif diagnostics is False:
            diag = dict.fromkeys(DIAGNOSTICS, jnp.float32(jnp.nan))
        else:  # a traced flag: computed only when set, else NaN
            diag = jax.lax.cond(
                diagnostics,
                lambda s, a: round_diagnostics(s, a, n_honest),
                lambda s, a: dict.fromkeys(DIAGNOSTICS, jnp.float32(jnp.nan)),
                sent, aggregate)
        metrics = {"train_loss": train_loss, **diag,
                   **explain_metrics(explain, explain_fn, sent, attacked)}
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
        acc, test_loss, class_acc = evaluate(state.params, state.batch_stats)
        metrics = {k: nanmean(v) for k, v in rm.items()}
        metrics.update(test_accuracy=acc, test_loss=test_loss,
                       test_class_accuracy=class_acc, round=state.round,
                       diverged_round=state.diverged_round)
        return state, metrics

    return program_of(init, run_chunk, round_step, evaluate, num_evals)
