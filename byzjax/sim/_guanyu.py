"""GuanYu's program, and the one of a single Byzantine server (the same round).

El Mhamdi, Guerraoui, Guirguis, Hoang, Rouault (2019), "SGD: Decentralized
Byzantine Resilience" (``server_protocol="guanyu"``). Per round: (1) each
worker takes the coordinate-wise median M of the first ``q_ps`` models it
receives and computes its gradient there; (2) each correct server aggregates
with the configured robust rule F the first ``q_wr`` worker vectors it
receives and takes a step; (3) correct servers exchange models and each
replaces its own with M of the first ``q_ps`` it receives. "First received"
comes from seeded per-message delays (:func:`byzjax.servers.sample_delays`),
so each node has its own quorum.

One Byzantine server (``server_protocol="single"``,
``num_byzantine_servers=1``) is this round with one server and no exchange: it
computes its updates correctly but every model it hands out (to the workers,
and to whoever reads the trained model) is ``server_attack`` applied to its
own model.
"""

from __future__ import annotations

from typing import Any

import jax

from byzjax import servers
from byzjax.sim._kit import Program, SimData, map_workers, stages_for
from byzjax.sim._server_kit import (
    ServerSimState,
    box_diameter,
    make_server_kit,
    row,
    spread,
    stack_copies,
)
from byzjax.sim._spec import RunSpec
from byzjax.sim._validate import server_quorums

__all__ = ["make_guanyu_program"]


def make_guanyu_program(spec: RunSpec, data: SimData, model) -> Program:
    """The :class:`~byzjax.sim.Program` of GuanYu or of one Byzantine server.

    Args:
      spec: a :class:`~byzjax.sim.RunSpec` with ``server_protocol="guanyu"``,
        or ``"single"`` with ``num_byzantine_servers=1``.
      data: :class:`~byzjax.sim.SimData`.
      model: a Flax module without BatchNorm.

    Returns:
      A :class:`~byzjax.sim.Program` whose state is a
      :class:`~byzjax.sim._server_kit.ServerSimState` and whose chunk metrics
      add ``server_spread``, ``server_spread_bound`` and
      ``test_accuracy_min`` (``test_accuracy`` is the first correct server's
      model; ``test_accuracy_min`` the worst correct server's).

    Raises:
      ConfigError: the model has BatchNorm.

    Example (see ``tests/test_servers.py`` for runs)::

        c = sim.get_config(); c.server_protocol = "guanyu"
        c.num_servers, c.num_byzantine_servers = 6, 1
        program = make_guanyu_program(sim.resolve(c), data, model)
        state, metrics = jax.jit(program.train)(jax.random.key(0), hp)
    """
    kit = make_server_kit(spec, data, model)
    n = spec.num_workers
    n_ps, f_ps = spec.num_servers, spec.num_byzantine_servers
    c_ps = kit.num_correct_servers
    byzantine_single = kit.byzantine_single
    q_ps, q_wr = server_quorums(spec)
    delay_kw: dict[str, Any] = dict(distribution=spec.delay_distribution,
                                    slow_factor=float(spec.slow_factor))

    def round_step(state: ServerSimState, hp, diagnostics=True):
        worker_tx, attack_tx, robust_tx, server_tx = stages_for(
            spec, hp, jax.random.key(0))
        key, k_drop, x, y = kit.batch(state.key)
        drop_keys = jax.random.split(k_drop, n)
        k_d1, k_d2, k_d3, k_a1, k_a2 = jax.random.split(
            jax.random.fold_in(k_drop, 1), 5)
        # (1) servers -> workers: each worker's median of its first q_ps models
        out = kit.served(state.params, k_a1)
        if byzantine_single:
            worker_params = stack_copies(row(out, 0), n)
        else:
            d1 = servers.sample_delays(k_d1, num_receivers=n, num_senders=n_ps,
                                       num_byzantine_senders=f_ps,
                                       num_slow_senders=spec.num_slow_servers,
                                       **delay_kw)
            worker_params = servers.quorum_median(
                out, servers.quorum_indices(d1, q_ps), num_byzantine=f_ps)
        grads, losses = map_workers(
            lambda a: kit.grad(a[0], a[1], a[2], a[3], hp["weight_decay"]),
            (worker_params, x, y, drop_keys), strategy=kit.grad_strategy)
        ws, ats, rs, ss = state.opt_state
        p0 = row(state.params, 0)
        sent, ws = worker_tx.update(grads, ws, p0)
        attacked, ats = attack_tx.update(sent, ats, p0)
        # (2) workers -> servers: F over each server's first q_wr vectors
        if byzantine_single:
            stacks = stack_copies(attacked, 1)
        else:
            d2 = servers.sample_delays(k_d2, num_receivers=c_ps, num_senders=n,
                                       num_byzantine_senders=spec.num_attackers,
                                       num_slow_senders=spec.num_slow_workers,
                                       **delay_kw)
            stacks = servers.gather_rows(attacked, servers.quorum_indices(d2, q_wr))
        new, aggs, rs, ss = kit.server_steps(stacks, rs, ss, state.params,
                                             robust_tx, server_tx)
        # (3) correct servers exchange models: median of the first q_ps
        extra = {"server_spread_bound": box_diameter(new)}
        if not byzantine_single:
            out = kit.served(new, k_a2)
            d3 = servers.sample_delays(k_d3, num_receivers=c_ps, num_senders=n_ps,
                                       num_byzantine_senders=f_ps,
                                       num_slow_senders=spec.num_slow_servers,
                                       self_first=True, **delay_kw)
            new = servers.quorum_median(out, servers.quorum_indices(d3, q_ps),
                                        num_byzantine=f_ps)
        diag = kit.diagnostics(diagnostics, sent, row(aggs, 0))
        extra["server_spread"] = spread(new)
        return kit.finish(state, new, (ws, ats, rs, ss), key, losses, diag, extra)

    return kit.program(kit.init, round_step)
