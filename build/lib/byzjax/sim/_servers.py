"""Replicated parameter servers in the compiled simulator: GuanYu and LiuBei.

Config field ``server_protocol`` chooses the protocol (``docs/SERVERS.md``):

* ``"single"``: one server. With ``num_byzantine_servers = 0`` this is the
  simulator of :mod:`byzjax.sim._train` unchanged; with ``1`` the one server is
  Byzantine: it computes its updates correctly but every model it hands out
  (to the workers, and to whoever reads the trained model) is
  ``server_attack`` applied to its own model.
* ``"guanyu"``: El Mhamdi, Guerraoui, Guirguis, Hoang, Rouault (2019), "SGD:
  Decentralized Byzantine Resilience". Per round: (1) each
  worker takes the coordinate-wise median M of the first ``q_ps`` models it
  receives and computes its gradient there; (2) each correct server
  aggregates with the configured robust rule F the first ``q_wr`` worker
  vectors it receives and takes a step; (3) correct servers exchange models
  and each replaces its own with M of the first ``q_ps`` it receives.
  "First received" comes from seeded per-message delays
  (:func:`byzjax.servers.sample_delays`), so each node has its own quorum.
* ``"liubei"``: El Mhamdi, Guerraoui, Guirguis, Rouault (2019/2022), "Fast
  Machine Learning with Byzantine Workers and Servers" (arXiv:1911.07537).
  Synchronous. Each iteration every worker pulls one model (servers in
  round-robin order from a random start per worker), checks it with the
  Lipschitz filter and the models filter, and pulls from the next server if
  either fails (at most ``f_ps + 1`` pulls; if all fail, the worker keeps its
  own locally updated model). Every correct server aggregates all ``n``
  worker vectors with F and takes a step. Every ``scatter_period`` iterations
  a gather step replaces every correct server's and every worker's model by
  the MeaMed of all servers' models.

One round is one traced function: servers are a leading axis of the
parameters (``[n_ps - f_ps, *param_shape]``: the correct servers; Byzantine
servers have no state, their models are the server attack applied to the
correct ones), workers are the usual stacked axis, quorums are index sets
drawn from sampled delays. Rounds run under ``lax.scan`` and seeds stay
batched exactly as in the single-server simulator (same :class:`Program`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from byzjax import aggregators, attacks, servers
from byzjax.sim._errors import ConfigError
from byzjax.sim._spec import resolve
from byzjax.sim._validate import num_attackers, server_quorums
from byzjax.sim._train import (
    DIAGNOSTICS,
    Program,
    SimData,
    _diagnostics,
    _nanmean,
    _normalize,
    _tree_all_finite,
    flip_byzantine_labels,
    labels_num_classes,
    learning_rate_schedule,
    make_evaluate,
    make_loss_fn,
    map_workers,
    program_of,
    resolve_grad_strategy,
    sample_batch_indices,
    stages_for,
)

__all__ = ["ServerSimState", "LiuBeiWorkers", "make_server_program", "LIPSCHITZ_HISTORY",
           "SERVER_METRICS"]

#: Past accepted Lipschitz coefficients each LiuBei worker keeps (a ring).
LIPSCHITZ_HISTORY = 32

#: Metrics added to the run's curves (per evaluation chunk, mean over rounds).
SERVER_METRICS = ("server_spread", "server_spread_bound", "rejected_fraction",
                  "pulls_per_iteration", "fallback_fraction", "models_filter_rejected",
                  "lipschitz_filter_rejected", "test_accuracy_min")


class LiuBeiWorkers(NamedTuple):
    """What each LiuBei worker keeps between iterations (leaves ``[n, ...]``).

    Attributes:
      model: its reference: the last model it accepted from a server (or the
        last gather's MeaMed); the filters compare pulled models with it.
      age: ``int32[n]`` iterations since the reference was set.
      local: its locally updated model, ``used - lr * sent`` with ``used``
        the model it computed its gradient at: the fallback when every pull
        is rejected.
      history: ``float32[n, LIPSCHITZ_HISTORY]`` Lipschitz coefficients of
        its first pulls (a ring, NaN where empty).
      count: ``int32[n]`` coefficients recorded.
      start: ``int32[n]`` first server of its round robin (random, fixed).
    """

    model: Any
    age: jax.Array
    local: Any
    history: jax.Array
    count: jax.Array
    start: jax.Array


class ServerSimState(NamedTuple):
    """The carry of the round loop with replicated servers.

    Attributes:
      params: the correct servers' models, leaves ``[n_ps - f_ps,
        *param_shape]`` (single Byzantine server: ``[1, ...]``, its own model).
      batch_stats: empty dict (BatchNorm models are not supported here).
      opt_state: ``(worker, attack, robust, server)`` states; the robust and
        server stages have a leading server axis.
      key: PRNG key.
      round: int32 scalar.
      diverged_round: int32 scalar, first round with a non-finite loss or
        correct-server model, ``-1`` while finite.
      workers: :class:`LiuBeiWorkers` (LiuBei), else ``()``.
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array
    round: jax.Array
    diverged_round: jax.Array
    workers: Any


# ------------------------------------------------------------------ program
def _expand(tree):
    return jax.tree_util.tree_map(lambda a: a[:, None], tree)


def _stack(tree, n: int):
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape),
                                  tree)


def _row(tree, i: int):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _concat(a, b, axis: int = 0):
    return jax.tree_util.tree_map(lambda x, y: jnp.concatenate([x, y], axis), a, b)


def _spread(stack):
    from byzjax._tree import pairwise_sq_distances

    if jax.tree_util.tree_leaves(stack)[0].shape[0] < 2:
        return jnp.float32(0.0)
    d2 = pairwise_sq_distances(stack, clean=False)
    return jnp.sqrt(jnp.max(d2))


def _box_diameter(stack):
    """Diameter of the coordinate-wise bounding box of the rows of ``stack``.

    GuanYu's guarantee for the model exchange: with at most ``f_ps``
    Byzantine models among ``q_ps > 2 f_ps``, every coordinate of each
    median lies between the smallest and largest correct value, so after the
    exchange the correct models' spread is at most this diameter of the
    correct models before it.
    """
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.max(0) - x.min(0)))
                        for x in jax.tree_util.tree_leaves(stack)))


def make_server_program(config, data: SimData, model, *,
                        worker_sharding=None) -> Program:
    """The :class:`~byzjax.sim.Program` of a replicated or Byzantine server.

    Args:
      config: a validated config with ``server_protocol`` ``"guanyu"`` or
        ``"liubei"``, or ``"single"`` with ``num_byzantine_servers = 1``.
      data: :class:`~byzjax.sim.SimData`.
      model: a Flax module without BatchNorm.
      worker_sharding: must be None (worker sharding is not supported here).

    Returns:
      A :class:`~byzjax.sim.Program` whose state is a :class:`ServerSimState`
      and whose chunk metrics add :data:`SERVER_METRICS` (``test_accuracy``
      is the first correct server's model; ``test_accuracy_min`` the worst
      correct server's).

    Example (see ``tests/test_servers.py`` for runs)::

        c = sim.get_config(); c.server_protocol = "guanyu"
        c.num_servers, c.num_byzantine_servers = 6, 1
        program = sim.make_program(c, data, model)
        state, metrics = jax.jit(program.train)(jax.random.key(0), hp)
    """
    if worker_sharding is not None:
        raise ConfigError("shard='workers' is not supported with replicated or "
                          "Byzantine servers; use shard='runs' or 'none'",
                          field="shard")
    spec = resolve(config)
    config = spec.to_config()  # (read as a ConfigDict below)
    protocol = config.server_protocol
    n = int(config.num_workers)
    f = int(config.num_byzantine)
    n_att = num_attackers(config)
    n_honest = n - n_att
    n_ps = int(config.num_servers)
    f_ps = int(config.num_byzantine_servers)
    byzantine_single = protocol == "single"
    c_ps = 1 if byzantine_single else n_ps - f_ps
    q_ps, q_wr = server_quorums(config)
    if protocol != "guanyu":
        q_wr = n
    b = int(config.batch_size)
    eval_every = int(config.eval_every)
    num_evals = int(config.num_rounds) // eval_every
    label_flip = spec.attack == "label_flip"
    server_attack = attacks.get(config.server_attack)
    server_attack_key = attacks.entry(config.server_attack).needs_key
    num_classes = labels_num_classes(data)
    eval_size = int(config.eval_size) or int(data.test_labels.shape[0])
    sample_shape = tuple(data.train_images.shape[1:])
    period = int(config.scatter_period)
    delay_kw = dict(distribution=config.delay_distribution,
                    slow_factor=float(config.slow_factor))
    slow_servers, slow_workers = int(config.num_slow_servers), int(
        config.num_slow_workers)

    variables = jax.eval_shape(
        lambda k: model.init({"params": k, "dropout": k},
                             jnp.zeros((1,) + sample_shape), train=False),
        jax.random.key(0))
    if "batch_stats" in variables:
        raise ConfigError(f"model {config.model!r} has BatchNorm, which replicated "
                          "or Byzantine servers do not support yet; use a model "
                          "without it (mlp, mnist_cnn)", field="model")

    def learning_rate(hp, t):
        """The server's learning rate at step ``t`` (as its ``optax.sgd``)."""
        lr = learning_rate_schedule(spec, hp)
        return jnp.asarray(lr(t) if callable(lr) else lr, jnp.float32)

    # ------------------------------------------------------------ gradients
    worker_grad = jax.grad(make_loss_fn(model, has_bn=False), has_aux=True)

    def grad_fn(params, x, y, dropout_key, weight_decay):
        grads, (loss, _) = worker_grad(params, {}, x, y, dropout_key, weight_decay)
        return grads, loss

    grad_strategy = resolve_grad_strategy(
        config.get("grad_strategy", "auto"), num_workers=n,
        backend=jax.default_backend(),
        convolutional=any(leaf.ndim >= 4 for leaf in
                          jax.tree_util.tree_leaves(variables["params"])))

    def served(params_c, key):
        """The models the servers send: correct rows, then Byzantine ones."""
        if byzantine_single:
            return server_attack(params_c, num_byzantine=1,
                                 **({"key": key} if server_attack_key else {}))
        if f_ps == 0:
            return params_c
        bad = server_attack(params_c, num_byzantine=f_ps,
                            **({"key": key} if server_attack_key else {}))
        bad = jax.tree_util.tree_map(lambda x, p: x.astype(p.dtype), bad, params_c)
        return _concat(params_c, bad)

    def batch(state_key):
        key, k_batch, k_drop = jax.random.split(state_key, 3)
        idx = sample_batch_indices(k_batch, data.worker_indices, data.worker_counts,
                                   b)
        x = _normalize(data.train_images[idx], data)
        y = data.train_labels[idx]
        if label_flip:
            y = flip_byzantine_labels(y, num_honest=n_honest, num_classes=num_classes)
        return key, k_drop, x, y

    # ------------------------------------------------------------- init
    def init(key, hp):
        k_model, k_tx, k_run = jax.random.split(key, 3)
        v = model.init({"params": k_model, "dropout": k_model},
                       jnp.zeros((1,) + sample_shape), train=False)
        params = v["params"]
        wtx, atx, rtx, stx = stages_for(spec, hp, k_tx)
        opt_state = (wtx.init(params), atx.init(params),
                     _stack(rtx.init(params), c_ps), _stack(stx.init(params), c_ps))
        workers = ()
        if protocol == "liubei":
            k_start = jax.random.fold_in(k_tx, 17)
            workers = LiuBeiWorkers(
                model=_stack(params, n), age=jnp.ones((n,), jnp.int32),
                local=_stack(params, n),
                history=jnp.full((n, LIPSCHITZ_HISTORY), jnp.nan, jnp.float32),
                count=jnp.zeros((n,), jnp.int32),
                start=jax.random.randint(k_start, (n,), 0, n_ps, jnp.int32))
        return ServerSimState(_stack(params, c_ps), {}, opt_state, k_run,
                              jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32),
                              workers)

    def server_steps(stacks, rs, ss, params_c, robust_tx, server_tx):
        """Each correct server: F over its stack, then its optimiser step."""

        def one(stack, r, s, p):
            agg, r = robust_tx.update(stack, r, p)
            step, s = server_tx.update(agg, s, p)
            return optax.apply_updates(p, step), agg, r, s

        return jax.vmap(one)(stacks, rs, ss, params_c)

    def finish(state, params_c, opt_state, key, losses, diag, extra, workers=()):
        train_loss = losses[:n_honest].mean()
        finite = jnp.isfinite(train_loss) & _tree_all_finite(params_c)
        t = state.round + 1
        diverged = jnp.where((state.diverged_round < 0) & ~finite, t,
                             state.diverged_round)
        metrics = {"train_loss": train_loss, **diag, **extra}
        return ServerSimState(params_c, {}, opt_state, key, t, diverged,
                              workers), metrics

    # ---------------------------------------------------- GuanYu / single
    def guanyu_round(state: ServerSimState, hp, diagnostics=True):
        worker_tx, attack_tx, robust_tx, server_tx = stages_for(
            spec, hp, jax.random.key(0))
        key, k_drop, x, y = batch(state.key)
        drop_keys = jax.random.split(k_drop, n)
        k_d1, k_d2, k_d3, k_a1, k_a2 = jax.random.split(
            jax.random.fold_in(k_drop, 1), 5)
        # (1) servers -> workers: each worker's median of its first q_ps models
        out = served(state.params, k_a1)
        if byzantine_single:
            worker_params = _stack(_row(out, 0), n)
        else:
            d1 = servers.sample_delays(k_d1, num_receivers=n, num_senders=n_ps,
                                       num_byzantine_senders=f_ps,
                                       num_slow_senders=slow_servers, **delay_kw)
            worker_params = servers.quorum_median(
                out, servers.quorum_indices(d1, q_ps), num_byzantine=f_ps)
        grads, losses = map_workers(
            lambda a: grad_fn(a[0], a[1], a[2], a[3], hp["weight_decay"]),
            (worker_params, x, y, drop_keys), strategy=grad_strategy)
        ws, ats, rs, ss = state.opt_state
        p0 = _row(state.params, 0)
        sent, ws = worker_tx.update(grads, ws, p0)
        attacked, ats = attack_tx.update(sent, ats, p0)
        # (2) workers -> servers: F over each server's first q_wr vectors
        if byzantine_single:
            stacks = _stack(attacked, 1)
        else:
            d2 = servers.sample_delays(k_d2, num_receivers=c_ps, num_senders=n,
                                       num_byzantine_senders=n_att,
                                       num_slow_senders=slow_workers, **delay_kw)
            stacks = servers.gather_rows(attacked, servers.quorum_indices(d2, q_wr))
        new, aggs, rs, ss = server_steps(stacks, rs, ss, state.params, robust_tx,
                                         server_tx)
        # (3) correct servers exchange models: median of the first q_ps
        extra = {"server_spread_bound": _box_diameter(new)}
        if not byzantine_single:
            out = served(new, k_a2)
            d3 = servers.sample_delays(k_d3, num_receivers=c_ps, num_senders=n_ps,
                                       num_byzantine_senders=f_ps,
                                       num_slow_senders=slow_servers,
                                       self_first=True, **delay_kw)
            new = servers.quorum_median(out, servers.quorum_indices(d3, q_ps),
                                        num_byzantine=f_ps)
        diag = (_diagnostics(sent, _row(aggs, 0), n_honest)
                if diagnostics is not False
                else dict.fromkeys(DIAGNOSTICS, jnp.float32(jnp.nan)))
        extra["server_spread"] = _spread(new)
        return finish(state, new, (ws, ats, rs, ss), key, losses, diag, extra)

    # ----------------------------------------------------------- LiuBei
    num_pulls = f_ps + 1

    def liubei_round(state: ServerSimState, hp, diagnostics=True):
        worker_tx, attack_tx, robust_tx, server_tx = stages_for(
            spec, hp, jax.random.key(0))
        key, k_drop, x, y = batch(state.key)
        drop_keys = jax.random.split(k_drop, n)
        k_a1, k_a2 = jax.random.split(jax.random.fold_in(k_drop, 1))
        w = state.workers
        t = state.round
        s = t % period  # iterations since the last gather
        # Largest server step since the last gather (non-increasing schedules).
        lr_bound = learning_rate(hp, jnp.maximum(t - s - 1, 0))
        threshold = servers.models_filter_threshold(
            lr_bound, clip_norm=hp["clip_norm"], num_workers=n, num_byzantine=f,
            steps_since_gather=s, steps_since_reference=w.age)  # [n]
        out = served(state.params, k_a1)  # [n_ps]
        order = (w.start[:, None] + t + jnp.arange(num_pulls)[None, :]) % n_ps
        pulled = servers.gather_rows(out, order)  # [n, K]
        # Candidates: the K pulled models, the worker's local model (the
        # fallback), and its reference model (never used: its gradient on the
        # same mini-batch is the reference of the Lipschitz coefficient).
        candidates = _concat(_concat(pulled, _expand(w.local), 1), _expand(w.model),
                             1)  # [n, K+2]

        def worker_grads(a):
            cand, xb, yb, kb = a
            return jax.vmap(lambda p: grad_fn(p, xb, yb, kb,
                                              hp["weight_decay"]))(cand)

        grads_all, losses_all = map_workers(
            worker_grads, (candidates, x, y, drop_keys), strategy=grad_strategy)

        grads_ref = jax.tree_util.tree_map(lambda a: a[:, num_pulls + 1], grads_all)

        def check(cand, g, model, grad, history, count, bound):
            k = servers.lipschitz_coefficient(g, grad, cand, model)
            lips = servers.lipschitz_filter(k, history, count, num_servers=n_ps,
                                            num_byzantine_servers=f_ps)
            near = servers.models_filter(cand, model, bound)
            return near & lips, k, near, lips

        ok, ks, near, lips = jax.vmap(jax.vmap(check, in_axes=(0, 0) + (None,) * 5))(
            candidates, grads_all, w.model, grads_ref, w.history, w.count,
            threshold)
        ok = ok.at[:, num_pulls].set(True)  # the local model: the fallback
        ok = ok.at[:, num_pulls + 1].set(False)
        choice = jnp.argmax(ok, axis=1)  # first accepted
        accepted = choice < num_pulls
        pulls = jnp.minimum(choice + 1, num_pulls)
        rejected = pulls - accepted.astype(pulls.dtype)

        def pick(a):
            return jax.vmap(lambda r, i: r[i])(a, choice)

        chosen = jax.tree_util.tree_map(pick, candidates)
        grads = jax.tree_util.tree_map(pick, grads_all)
        losses = pick(losses_all)
        # Every iteration the coefficient of the first pull is recorded,
        # accepted or not: over a round-robin cycle at most f_ps of n_ps come
        # from Byzantine servers, the share the (n_ps - f_ps) / n_ps quantile
        # leaves out. (Recording accepted pulls only ratchets the quantile
        # down: it rejected most correct pulls on MNIST.)
        k_chosen = ks[:, 0]
        record = (k_chosen > 0) & jnp.isfinite(k_chosen)
        slot = w.count % LIPSCHITZ_HISTORY
        history = jnp.where(
            record[:, None] & (jnp.arange(LIPSCHITZ_HISTORY)[None] == slot[:, None]),
            k_chosen[:, None], w.history)
        count = w.count + record.astype(jnp.int32)

        ws, ats, rs, ss = state.opt_state
        p0 = _row(state.params, 0)
        sent, ws = worker_tx.update(grads, ws, p0)
        attacked, ats = attack_tx.update(sent, ats, p0)
        # Synchronous: every correct server aggregates all n vectors.
        new, aggs, rs, ss = server_steps(_stack(attacked, c_ps), rs, ss,
                                         state.params, robust_tx, server_tx)
        lr_t = learning_rate(hp, t)
        local = jax.tree_util.tree_map(lambda m, u: m - lr_t * u, chosen, sent)
        # Gather every `period` iterations: MeaMed of all servers' models.
        gather = (t + 1) % period == 0
        med = aggregators.meamed(served(new, k_a2), num_byzantine=f_ps)
        new = jax.tree_util.tree_map(
            lambda a, m: jnp.where(gather, jnp.broadcast_to(m, a.shape), a), new, med)
        # The reference moves to an accepted pull; after a fallback it stays.
        keep = jax.tree_util.tree_map(
            lambda c, r: jnp.where(accepted.reshape((-1,) + (1,) * (c.ndim - 1)),
                                   c, r), chosen, w.model)
        model = jax.tree_util.tree_map(
            lambda a, m: jnp.where(gather, jnp.broadcast_to(m, a.shape), a),
            keep, med)
        age = jnp.where(gather | accepted, 1, w.age + 1).astype(jnp.int32)
        local = jax.tree_util.tree_map(
            lambda a, m: jnp.where(gather, jnp.broadcast_to(m, a.shape), a),
            local, med)
        workers = LiuBeiWorkers(model, age, local, history, count, w.start)
        diag = (_diagnostics(sent, _row(aggs, 0), n_honest)
                if diagnostics is not False
                else dict.fromkeys(DIAGNOSTICS, jnp.float32(jnp.nan)))
        h = slice(0, n_honest)
        made = jnp.arange(num_pulls)[None, :] < pulls[h, None]
        extra = {
            "server_spread": _spread(new),
            "rejected_fraction": rejected[h].sum() / pulls[h].sum(),
            "pulls_per_iteration": pulls[h].mean().astype(jnp.float32),
            "fallback_fraction": (~accepted[h]).mean().astype(jnp.float32),
            # Of the pulls made, the fractions failing each filter.
            "models_filter_rejected": (~near[h, :num_pulls] & made).sum() / made.sum(),
            "lipschitz_filter_rejected": (~lips[h, :num_pulls] & made).sum()
            / made.sum(),
        }
        return finish(state, new, (ws, ats, rs, ss), key, losses, diag, extra,
                      workers)

    round_step = liubei_round if protocol == "liubei" else guanyu_round

    # -------------------------------------------------------- evaluation
    evaluate = make_evaluate(model, data, eval_size=eval_size, has_bn=False)

    def run_chunk(state, hp):
        state, rm = jax.lax.scan(lambda s, _: round_step(s, hp), state, None,
                                 length=eval_every)
        if byzantine_single:  # what the Byzantine server hands out
            shown = served(state.params, jax.random.fold_in(state.key, 2))
        else:
            shown = state.params
        accs, test_losses = jax.lax.map(lambda p: evaluate(p), shown)
        metrics = {k: _nanmean(v) for k, v in rm.items()}
        metrics.update(test_accuracy=accs[0], test_loss=test_losses[0],
                       test_accuracy_min=jnp.min(accs), round=state.round,
                       diverged_round=state.diverged_round)
        return state, metrics

    return program_of(init, run_chunk, round_step, evaluate, num_evals)
