"""The simulator's top layer: a config -> one compiled training program.

``make_train(config, data, model) -> train(key, hparams)``: the whole run is
traced once: per-worker gradients are computed over the worker axis
(``vmap``, or separate calls unrolled in the program on XLA:CPU: config
``grad_strategy``, :func:`~byzjax.sim.resolve_grad_strategy`), the byzjax
optax chain (worker transform -> attack -> pre-aggregation -> aggregation)
and the server update run inside ``lax.scan`` over rounds, and an evaluation
follows every ``eval_every`` rounds. Seeds and float hyper-parameters are
arguments, so ``jax.vmap(train)`` runs many of them in one program (purejaxrl
/ evosax style).

The pieces are exposed separately so long jobs can stream progress:
``init(key, hparams) -> state`` and ``run_chunk(state, hparams) -> (state,
metrics)`` (``eval_every`` rounds plus one evaluation); ``train =
scan(run_chunk, init(...))`` (:class:`~byzjax.sim.Program`).

:func:`make_program` resolves a config once and picks the program: one
correct server (:mod:`byzjax.sim._single`), GuanYu or one Byzantine server
(:mod:`byzjax.sim._guanyu`), LiuBei (:mod:`byzjax.sim._liubei`), or no server:
peer-to-peer learning over a ``topology`` (:mod:`byzjax.sim._p2p`).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from byzjax import aggregators, attacks
from byzjax.sim._errors import ConfigError
from byzjax.sim._guanyu import make_guanyu_program
from byzjax.sim._kit import Program, SimData, stages_for
from byzjax.sim._liubei import make_liubei_program
from byzjax.sim._p2p import make_p2p_program, receiver_groups_of
from byzjax.sim._single import make_single_program
from byzjax.sim._spec import RunSpec, resolve

__all__ = ["make_program", "make_train", "check_pipeline"]


def make_program(config: RunSpec, data: SimData, model, *,
                 worker_sharding=None, byzantine_gradients: bool | None = None
                 ) -> Program:
    """Builds the pure functions of one configuration.

    Args:
      config: a :class:`~byzjax.sim.RunSpec` (or a config, resolved here once
        with :func:`~byzjax.sim.resolve`). Its static fields are read here;
        float hyper-parameters come at call time.
      data: :class:`~byzjax.sim.SimData` (arrays, ideally already on the
        device).
      model: a Flax linen module mapping ``[b, H, W, C]`` to ``[b, classes]``
        and taking ``train=`` (BatchNorm/dropout switch).
      worker_sharding: optional ``jax.sharding.Sharding`` for the stacked
        ``[n, ...]`` worker gradients (``shard="workers"``, see
        :mod:`byzjax.parallel`); one correct server only.
      byzantine_gradients: compute the Byzantine workers' own gradients
        (one correct server; see
        :func:`~byzjax.sim._single.make_single_program`). ``None`` (default):
        only when something reads them. The server programs compute all ``n``.

    Returns:
      A :class:`~byzjax.sim.Program`.

    Raises:
      ConfigError: ``worker_sharding`` with replicated or Byzantine servers.

    Example (tiny synthetic data; see tests for the full check)::

        program = make_program(config, data, model)
        state, metrics = jax.jit(program.train)(jax.random.key(0), hp)
    """
    spec = resolve(config)
    if spec.peer_to_peer:  # no server (docs/PEER_TO_PEER.md)
        if worker_sharding is not None:
            raise ConfigError("shard='workers' is not supported with a topology "
                              "(peer-to-peer); use shard='runs' or 'none'",
                              field="shard")
        return make_p2p_program(spec, data, model,
                                byzantine_gradients=byzantine_gradients)
    if not spec.replicated_servers:
        return make_single_program(spec, data, model,
                                   worker_sharding=worker_sharding,
                                   byzantine_gradients=byzantine_gradients)
    if worker_sharding is not None:
        raise ConfigError("shard='workers' is not supported with replicated or "
                          "Byzantine servers; use shard='runs' or 'none'",
                          field="shard")
    if spec.server_protocol == "liubei":
        return make_liubei_program(spec, data, model)
    return make_guanyu_program(spec, data, model)


def make_train(config, data: SimData, model) -> Callable:
    """``train(key, hparams) -> (final state, metrics [num_evals])``, one program.

    Example (tiny synthetic data; see tests for the full check)::

        train = make_train(config, data, model)
        state, metrics = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, hp)
    """
    return make_program(config, data, model).train


def check_pipeline(config) -> None:
    """Traces one round of the run's optimiser on stand-in rows, before any data.

    The worker, attack, robust and server stages of ``config`` run under
    ``jax.eval_shape`` on rows ``[n, 1]`` (no data, no compilation, a few
    milliseconds), so a keyword value only the rule itself can judge against
    ``n`` and ``f`` (Mimic's ``index``, ALIE's ``ddof``, a pre-aggregator's
    output too small for the aggregator) fails with one line before the data
    loads, not after it and a compilation.

    Args:
      config: a run config or :class:`~byzjax.sim.RunSpec`.

    Raises:
      ConfigError: the rule's own message, in one line.

    Example:
      >>> from byzjax import sim
      >>> c = sim.get_config()
      >>> c.attack, c.attack_kwargs = "mimic", {"index": 50}
      >>> try:
      ...     check_pipeline(c)
      ... except sim.ConfigError as e:
      ...     print(str(e)[:37])
      attack_kwargs: mimic: index must be i
    """
    spec = resolve(config, warn=False)
    hp = {k: jnp.float32(v) for k, v in spec.hparams.items()}
    params = {"w": jnp.zeros((1,), jnp.float32)}

    def one_round(grads, **rows):
        x = grads
        stages = stages_for(spec, hp, jax.random.key(0), **rows)
        for tx in stages:
            # (the robust stage is a chain: it passes the server's reference
            # on to a rule that reads it, FLTrust, and ignores it otherwise)
            extra = {"reference": params} if tx is stages.robust else {}
            x, _ = tx.update(x, tx.init(params), params, **extra)
        return x

    # The server's stages on n rows; peer-to-peer, also each receiver's view.
    shapes: set[tuple[int, int | None]] = {(spec.num_workers, None)}
    if spec.peer_to_peer:
        per = spec.attack_per_receiver
        shapes |= {(g.num_inputs, int(g.byzantine.shape[1]) if per else 0)
                   for g in receiver_groups_of(spec)}
    try:
        for m, attacked in sorted(shapes, key=str):
            rows: dict[str, int] = ({} if attacked is None else {
                "num_workers": m, "num_attackers": attacked})
            jax.eval_shape(functools.partial(one_round, **rows),
                           {"w": jnp.zeros((m, 1), jnp.float32)})
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        field = _stage_field(text)
        raise ConfigError(f"{field or 'the round'}: {text}", field=field) from None


def _stage_field(text: str) -> str | None:
    """The config field a stage's error is about (for the file:line pointer)."""
    for field, registry in (("preaggregator_kwargs", aggregators.PREAGGREGATORS),
                            ("aggregator_kwargs", aggregators.AGGREGATORS),
                            ("attack_kwargs", attacks.ATTACKS)):
        if any(text.startswith(f"{n}:") or f"'{n}'" in text
               for n in registry.names()):
            return field
    return None
