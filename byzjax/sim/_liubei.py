"""LiuBei's program.

El Mhamdi, Guerraoui, Guirguis, Rouault (2019/2022), "Fast Machine Learning
with Byzantine Workers and Servers" (arXiv:1911.07537)
(``server_protocol="liubei"``). Synchronous. Each iteration every worker pulls
one model (servers in round-robin order from a random start per worker),
checks it with the Lipschitz filter and the models filter, and pulls from the
next server if either fails (at most ``f_ps + 1`` pulls; if all fail, the
worker keeps its own locally updated model). Every correct server aggregates
all ``n`` worker vectors with F and takes a step. Every ``scatter_period``
iterations a gather step replaces every correct server's and every worker's
model by the MeaMed of all servers' models.

With ``liubei_filters="garfield"`` the round follows the authors' public code
instead (:mod:`byzjax.servers._garfield`): each worker reads one server,
chosen once, every iteration (every ``T`` iterations the Multi-Krum of all
servers' models), computes its gradient there whatever the filters say, and
the filters' would-be verdicts are only recorded; correct servers take the
coordinate-wise median of all servers' models every ``T`` iterations.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from byzjax import aggregators, servers
from byzjax.sim._kit import Program, SimData, map_workers, stages_for
from byzjax.sim._server_kit import (
    ServerSimState,
    concat_rows,
    make_server_kit,
    row,
    spread,
    stack_copies,
)
from byzjax.sim._spec import RunSpec

__all__ = ["LiuBeiWorkers", "LIPSCHITZ_HISTORY", "make_liubei_program"]

_NAN = float("nan")  # (a Python float: no JAX array at import)

#: Past accepted Lipschitz coefficients each LiuBei worker keeps (a ring).
LIPSCHITZ_HISTORY = 32


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
      grad: ``liubei_filters="garfield"``: its previous raw gradient (the
        Lipschitz coefficient's ``g_{t-1}``), leaves ``[n, ...]``; else ``()``.

    With ``liubei_filters="garfield"``, ``model`` is the model it computed its
    previous gradient at (``x_{t-1}``), ``local`` that model's local update
    ``x_{t-1} - lr * sent``, ``history`` ``float32[n, 100]`` (the code's list,
    :func:`~byzjax.servers.garfield_record`), ``start`` its one server, and
    ``age`` is unused.
    """

    model: Any
    age: jax.Array
    local: Any
    history: jax.Array
    # (optax-style name; mypy objects that it shadows tuple.count)
    count: jax.Array  # type: ignore[assignment]
    start: jax.Array
    grad: Any = ()


def _expand(tree):
    # A new axis 1: ``[n, ...]`` -> ``[n, 1, ...]`` (one more candidate per worker).
    return jax.tree_util.tree_map(lambda a: a[:, None], tree)


def make_liubei_program(spec: RunSpec, data: SimData, model) -> Program:
    """The :class:`~byzjax.sim.Program` of LiuBei.

    Args:
      spec: a :class:`~byzjax.sim.RunSpec` with ``server_protocol="liubei"``.
      data: :class:`~byzjax.sim.SimData`.
      model: a Flax module without BatchNorm.

    Returns:
      A :class:`~byzjax.sim.Program` whose state is a
      :class:`~byzjax.sim._server_kit.ServerSimState` (its ``workers`` a
      :class:`LiuBeiWorkers`) and whose chunk metrics add
      :data:`~byzjax.sim._server_kit.SERVER_METRICS` but
      ``server_spread_bound`` (``test_accuracy`` is the first correct
      server's model; ``test_accuracy_min`` the worst correct server's).

    Raises:
      ConfigError: the model has BatchNorm.

    Example (see ``tests/test_servers.py`` for runs)::

        c = sim.get_config(); c.server_protocol = "liubei"
        c.num_servers, c.num_byzantine_servers = 4, 1
        program = make_liubei_program(sim.resolve(c), data, model)
        state, metrics = jax.jit(program.train)(jax.random.key(0), hp)
    """
    if spec.liubei_filters == "garfield":
        return _make_garfield_program(spec, data, model)
    kit = make_server_kit(spec, data, model)
    n, f = spec.num_workers, spec.num_byzantine
    n_ps, f_ps = spec.num_servers, spec.num_byzantine_servers
    n_honest = spec.num_honest
    c_ps = kit.num_correct_servers
    period = spec.scatter_period

    def init_workers(params, k_tx):
        k_start = jax.random.fold_in(k_tx, 17)
        return LiuBeiWorkers(
            model=stack_copies(params, n), age=jnp.ones((n,), jnp.int32),
            local=stack_copies(params, n),
            history=jnp.full((n, LIPSCHITZ_HISTORY), jnp.nan, jnp.float32),
            count=jnp.zeros((n,), jnp.int32),
            start=jax.random.randint(k_start, (n,), 0, n_ps, jnp.int32))

    num_pulls = f_ps + 1

    def round_step(state: ServerSimState, hp, diagnostics=True):
        worker_tx, attack_tx, robust_tx, server_tx = stages_for(
            spec, hp, jax.random.key(0))
        key, k_drop, x, y = kit.batch(state.key)
        drop_keys = jax.random.split(k_drop, n)
        k_a1, k_a2 = jax.random.split(jax.random.fold_in(k_drop, 1))
        w = state.workers
        t = state.round
        s = t % period  # iterations since the last gather
        # Largest server step since the last gather (non-increasing schedules).
        lr_bound = kit.learning_rate(hp, jnp.maximum(t - s - 1, 0))
        threshold = servers.models_filter_threshold(
            lr_bound, clip_norm=hp["clip_norm"], num_workers=n, num_byzantine=f,
            steps_since_gather=s, steps_since_reference=w.age)  # [n]
        out = kit.served(state.params, k_a1)  # [n_ps]
        order = (w.start[:, None] + t + jnp.arange(num_pulls)[None, :]) % n_ps
        pulled = servers.gather_rows(out, order)  # [n, K]
        # Candidates: the K pulled models, the worker's local model (the
        # fallback), and its reference model (never used: its gradient on the
        # same mini-batch is the reference of the Lipschitz coefficient).
        candidates = concat_rows(concat_rows(pulled, _expand(w.local), 1),
                                 _expand(w.model), 1)  # [n, K+2]

        def worker_grads(a):
            cand, xb, yb, kb = a
            return jax.vmap(lambda p: kit.grad(p, xb, yb, kb,
                                               hp["weight_decay"]))(cand)

        grads_all, losses_all = map_workers(
            worker_grads, (candidates, x, y, drop_keys), strategy=kit.grad_strategy)

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
        p0 = row(state.params, 0)
        sent, ws = worker_tx.update(grads, ws, p0)
        attacked, ats = attack_tx.update(sent, ats, p0)
        # Synchronous: every correct server aggregates all n vectors.
        new, aggs, rs, ss = kit.server_steps(stack_copies(attacked, c_ps), rs, ss,
                                             state.params, robust_tx, server_tx)
        lr_t = kit.learning_rate(hp, t)
        local = jax.tree_util.tree_map(lambda m, u: m - lr_t * u, chosen, sent)
        # Gather every `period` iterations: MeaMed of all servers' models.
        gather = (t + 1) % period == 0
        med = aggregators.meamed(kit.served(new, k_a2), num_byzantine=f_ps)
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
        diag = kit.diagnostics(diagnostics, sent, row(aggs, 0))
        h = slice(0, n_honest)
        made = jnp.arange(num_pulls)[None, :] < pulls[h, None]
        extra = {
            "server_spread": spread(new),
            "rejected_fraction": rejected[h].sum() / pulls[h].sum(),
            "pulls_per_iteration": pulls[h].mean().astype(jnp.float32),
            "fallback_fraction": (~accepted[h]).mean().astype(jnp.float32),
            # Of the pulls made, the fractions failing each filter.
            "models_filter_rejected": (~near[h, :num_pulls] & made).sum() / made.sum(),
            "lipschitz_filter_rejected": (~lips[h, :num_pulls] & made).sum()
            / made.sum(),
        }
        return kit.finish(state, new, (ws, ats, rs, ss), key, losses, diag, extra,
                          workers)

    return kit.program(lambda key, hp: kit.init(key, hp, init_workers), round_step)


def _make_garfield_program(spec: RunSpec, data: SimData, model) -> Program:
    # LiuBei as the authors' public code runs it (docs/SERVERS.md,
    # byzjax/servers/_garfield.py): one fixed server per worker, Multi-Krum of
    # all servers every T iterations, servers' median every T iterations,
    # filters computed and recorded, never acted on.
    kit = make_server_kit(spec, data, model)
    n, f = spec.num_workers, spec.num_byzantine
    n_ps, f_ps = spec.num_servers, spec.num_byzantine_servers
    n_honest = spec.num_honest
    c_ps = kit.num_correct_servers
    period = spec.scatter_period

    def init_workers(params, k_tx):
        k_start = jax.random.fold_in(k_tx, 17)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, stack_copies(params, n))
        return LiuBeiWorkers(
            model=stack_copies(params, n), age=jnp.ones((n,), jnp.int32),
            local=stack_copies(params, n),
            history=jnp.zeros((n, servers.GARFIELD_HISTORY), jnp.float32),
            count=jnp.zeros((n,), jnp.int32),
            start=jax.random.randint(k_start, (n,), 0, n_ps, jnp.int32),
            grad=zeros)

    def round_step(state: ServerSimState, hp, diagnostics=True):
        worker_tx, attack_tx, robust_tx, server_tx = stages_for(
            spec, hp, jax.random.key(0))
        key, k_drop, x, y = kit.batch(state.key)
        drop_keys = jax.random.split(k_drop, n)
        k_a1, k_a2 = jax.random.split(jax.random.fold_in(k_drop, 1))
        w = state.workers
        t = state.round
        p0 = row(state.params, 0)
        out = kit.served(state.params, k_a1)  # [n_ps]
        used, reads = servers.garfield_pulled_models(
            out, p0, w.start, t, period=period, num_byzantine_servers=f_ps)

        def worker_grad(a):
            p, xb, yb, kb = a
            return kit.grad(p, xb, yb, kb, hp["weight_decay"])

        grads, losses = map_workers(worker_grad, (used, x, y, drop_keys),
                                    strategy=kit.grad_strategy)
        lr_t = kit.learning_rate(hp, t)
        # The filters, from the second iteration on (the code: past_grad
        # non-empty). Nothing below reads their verdicts but the metrics.
        filtered = t > 0
        norms = jax.vmap(servers.tree_norm)
        num = norms(jax.tree_util.tree_map(jnp.subtract, grads, w.grad))
        den = norms(jax.tree_util.tree_map(jnp.subtract, used, w.model))
        k = num / den  # IEEE, as NumPy: x/0 = inf, 0/0 = nan
        new_h, new_c = jax.vmap(servers.garfield_record)(w.history, w.count, k)
        history = jnp.where(filtered, new_h, w.history)
        count = jnp.where(filtered, new_c, w.count)
        threshold = jax.vmap(functools.partial(
            servers.garfield_lipschitz_threshold, num_servers=n_ps,
            num_byzantine_servers=f_ps))(new_h, new_c)
        lips_bad = k > threshold
        h = slice(0, n_honest)
        lips_rate = jnp.where(filtered, lips_bad[h].mean(), jnp.float32(_NAN))
        if f > 0:
            bound = servers.garfield_models_bound(
                lr_t, norms(grads), num_workers=n, num_byzantine=f,
                period=period, step=t)
            dist = norms(jax.tree_util.tree_map(jnp.subtract, used, w.local))
            models_bad = dist > bound
            models_rate = jnp.where(filtered, models_bad[h].mean(),
                                    jnp.float32(_NAN))
        else:  # the code computes no bound without Byzantine workers
            models_bad = jnp.zeros((n,), bool)
            models_rate = jnp.float32(_NAN)
        either = jnp.where(filtered, (lips_bad | models_bad)[h].mean(),
                           jnp.float32(_NAN))

        ws, ats, rs, ss = state.opt_state
        sent, ws = worker_tx.update(grads, ws, p0)
        attacked, ats = attack_tx.update(sent, ats, p0)
        new, aggs, rs, ss = kit.server_steps(stack_copies(attacked, c_ps), rs, ss,
                                             state.params, robust_tx, server_tx)
        _, server_gather = servers.garfield_gathers(t, period=period)
        med = servers.upper_median(kit.served(new, k_a2), num_byzantine=f_ps)
        new = jax.tree_util.tree_map(
            lambda a, m: jnp.where(server_gather, jnp.broadcast_to(m, a.shape), a),
            new, med)
        local = jax.tree_util.tree_map(lambda m, u: m - lr_t * u, used, sent)
        workers = LiuBeiWorkers(used, w.age, local, history, count, w.start, grads)
        diag = kit.diagnostics(diagnostics, sent, row(aggs, 0))
        extra = {
            "server_spread": spread(new),
            "rejected_fraction": either,
            "pulls_per_iteration": reads.astype(jnp.float32),
            "fallback_fraction": jnp.float32(0.0),
            "models_filter_rejected": models_rate,
            "lipschitz_filter_rejected": lips_rate,
        }
        return kit.finish(state, new, (ws, ats, rs, ss), key, losses, diag, extra,
                          workers)

    return kit.program(lambda key, hp: kit.init(key, hp, init_workers), round_step)
