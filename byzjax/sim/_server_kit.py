"""What the programs with replicated or Byzantine servers share.

GuanYu (:mod:`byzjax.sim._guanyu`, which also runs one Byzantine server) and
LiuBei (:mod:`byzjax.sim._liubei`) are built on one :class:`ServerKit`: the
models the servers hand out (:meth:`ServerKit.served`), the workers'
mini-batches and gradients, each correct server's robust aggregation and
optimiser step, the end of a round (divergence, metrics), the evaluation of
every correct server's model and the :class:`~byzjax.sim.Program` around a
round.

One round is one traced function: servers are a leading axis of the
parameters (``[n_ps - f_ps, *param_shape]``: the correct servers; Byzantine
servers have no state, their models are the server attack applied to the
correct ones), workers are the usual stacked axis, quorums are index sets
drawn from sampled delays. Rounds run under ``lax.scan`` and seeds stay
batched exactly as in the single-server simulator (same
:class:`~byzjax.sim.Program`). Protocols and their guarantees:
``docs/SERVERS.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from byzjax import attacks
from byzjax._tree import pairwise_sq_distances
from byzjax.sim._diagnostics import DIAGNOSTICS, round_diagnostics
from byzjax.sim._errors import ConfigError
from byzjax.sim._kit import (
    Program,
    SimData,
    flip_byzantine_labels,
    has_convolutions,
    init_variables,
    labels_num_classes,
    learning_rate_schedule,
    make_evaluate,
    make_loss_fn,
    nanmean,
    normalize,
    program_of,
    resolve_grad_strategy,
    sample_batch_indices,
    stages_for,
    tree_all_finite,
)
from byzjax.sim._spec import RunSpec

__all__ = ["ServerSimState", "ServerKit", "make_server_kit", "SERVER_METRICS",
           "stack_copies", "row", "concat_rows", "spread", "box_diameter"]

#: Metrics added to the run's curves (per evaluation chunk, mean over rounds).
SERVER_METRICS = ("server_spread", "server_spread_bound", "rejected_fraction",
                  "pulls_per_iteration", "fallback_fraction", "models_filter_rejected",
                  "lipschitz_filter_rejected", "test_accuracy_min")


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
      workers: :class:`~byzjax.sim._liubei.LiuBeiWorkers` (LiuBei), else ``()``.
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array
    round: jax.Array
    diverged_round: jax.Array
    workers: Any


# ------------------------------------------------------------- tree helpers
def stack_copies(tree, n: int):
    """``n`` copies of ``tree`` stacked on a new leading axis (leaves ``[n, ...]``).

    Example:
      >>> import jax.numpy as jnp
      >>> stack_copies({"w": jnp.array([1.0, 2.0])}, 3)["w"].shape
      (3, 2)
    """
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape),
                                  tree)


def row(tree, i: int):
    """Row ``i`` of a stack (every leaf's ``[i]``).

    Example:
      >>> import jax.numpy as jnp
      >>> row({"w": jnp.array([[1.0], [2.0]])}, 1)
      {'w': Array([2.], dtype=float32)}
    """
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def concat_rows(a, b, axis: int = 0):
    """Two stacks with the same structure concatenated along ``axis``.

    Example:
      >>> import jax.numpy as jnp
      >>> concat_rows({"w": jnp.zeros((2, 3))}, {"w": jnp.ones((1, 3))})["w"].shape
      (3, 3)
    """
    return jax.tree_util.tree_map(lambda x, y: jnp.concatenate([x, y], axis), a, b)


def spread(stack) -> jax.Array:
    """The largest distance between two rows of ``stack`` (0 with one row).

    Example:
      >>> import jax.numpy as jnp
      >>> float(spread({"w": jnp.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])}))
      5.0
    """
    if jax.tree_util.tree_leaves(stack)[0].shape[0] < 2:
        return jnp.float32(0.0)
    d2 = pairwise_sq_distances(stack, clean=False)
    return jnp.sqrt(jnp.max(d2))


def box_diameter(stack) -> jax.Array:
    """Diameter of the coordinate-wise bounding box of the rows of ``stack``.

    GuanYu's guarantee for the model exchange: with at most ``f_ps``
    Byzantine models among ``q_ps > 2 f_ps``, every coordinate of each
    median lies between the smallest and largest correct value, so after the
    exchange the correct models' spread is at most this diameter of the
    correct models before it.

    Example:
      >>> import jax.numpy as jnp
      >>> float(box_diameter({"w": jnp.array([[0.0, 4.0], [3.0, 0.0]])}))
      5.0
    """
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.max(0) - x.min(0)))
                        for x in jax.tree_util.tree_leaves(stack)))


# ---------------------------------------------------------------- the kit
@dataclasses.dataclass(frozen=True, eq=False)
class ServerKit:
    """The parts of a replicated- or Byzantine-server round (:func:`make_server_kit`).

    Attributes:
      spec: the run's :class:`~byzjax.sim.RunSpec`.
      data: :class:`~byzjax.sim.SimData`.
      model: the Flax module (without BatchNorm).
      num_classes: classes of the labels (label flip).
      sample_shape: one example's shape ``(H, W, C)``.
      grad_strategy: the resolved per-worker strategy
        (:func:`~byzjax.sim.resolve_grad_strategy`).
      worker_grad: ``jax.grad`` of :func:`~byzjax.sim._kit.make_loss_fn`
        (with its auxiliary outputs).
      evaluate: ``params -> (accuracy, loss)`` on the test set.
    """

    spec: RunSpec
    data: SimData
    model: Any
    num_classes: int
    sample_shape: tuple[int, ...]
    grad_strategy: str
    worker_grad: Callable
    evaluate: Callable

    @property
    def byzantine_single(self) -> bool:
        """One server, and it is Byzantine (``server_protocol="single"``)."""
        return self.spec.server_protocol == "single"

    @property
    def num_correct_servers(self) -> int:
        """Rows of the servers' state: ``n_ps - f_ps``, or 1 (the Byzantine
        single server's own model)."""
        spec = self.spec
        if self.byzantine_single:
            return 1
        return spec.num_servers - spec.num_byzantine_servers

    def grad(self, params, x, y, dropout_key, weight_decay):
        """One worker's ``(gradient, loss)`` at ``params`` on its batch
        ``x`` ``[b, H, W, C]``, ``y`` ``int[b]``."""
        grads, (loss, _) = self.worker_grad(params, {}, x, y, dropout_key,
                                            weight_decay)
        return grads, loss

    def learning_rate(self, hp, t):
        """The server's learning rate at step ``t`` (as its ``optax.sgd``)."""
        lr = learning_rate_schedule(self.spec, hp)
        return jnp.asarray(lr(t) if callable(lr) else lr, jnp.float32)

    def served(self, params_c, key):
        """The models the servers send: correct rows, then Byzantine ones.

        Args:
          params_c: the correct servers' models, leaves ``[c, ...]``.
          key: PRNG key of the server attack (if it draws).

        Returns:
          Leaves ``[n_ps, ...]``; the Byzantine single server: ``[1, ...]``,
          the server attack applied to its own model.
        """
        spec = self.spec
        f_ps = spec.num_byzantine_servers
        server_attack = attacks.get(spec.server_attack)
        key_kw = {"key": key} if attacks.entry(spec.server_attack).needs_key else {}
        if self.byzantine_single:
            return server_attack(params_c, num_byzantine=1, **key_kw)
        if f_ps == 0:
            return params_c
        bad = server_attack(params_c, num_byzantine=f_ps, **key_kw)
        bad = jax.tree_util.tree_map(lambda x, p: x.astype(p.dtype), bad, params_c)
        return concat_rows(params_c, bad)

    def batch(self, state_key):
        """``(next state key, dropout key, x [n, b, H, W, C], y [n, b])``: every
        worker's mini-batch, the Byzantine rows' labels flipped under label flip."""
        spec, data = self.spec, self.data
        key, k_batch, k_drop = jax.random.split(state_key, 3)
        idx = sample_batch_indices(k_batch, data.worker_indices, data.worker_counts,
                                   spec.batch_size)
        x = normalize(data.train_images[idx], data)
        y = data.train_labels[idx]
        if spec.attack == "label_flip":
            y = flip_byzantine_labels(y, num_honest=spec.num_honest,
                                      num_classes=self.num_classes)
        return key, k_drop, x, y

    def init(self, key, hp, init_workers: Callable | None = None) -> ServerSimState:
        """The first :class:`ServerSimState`: every correct server at the same
        initial model; ``init_workers(params, key)`` makes its ``workers``
        (else ``()``)."""
        c_ps = self.num_correct_servers
        k_model, k_tx, k_run = jax.random.split(key, 3)
        v = init_variables(self.model, k_model, self.sample_shape,
                           init_seed=self.spec.init_seed)
        params = v["params"]
        wtx, atx, rtx, stx = stages_for(self.spec, hp, k_tx)
        opt_state = (wtx.init(params), atx.init(params),
                     stack_copies(rtx.init(params), c_ps),
                     stack_copies(stx.init(params), c_ps))
        workers = () if init_workers is None else init_workers(params, k_tx)
        return ServerSimState(stack_copies(params, c_ps), {}, opt_state, k_run,
                              jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32),
                              workers)

    @staticmethod
    def server_steps(stacks, rs, ss, params_c, robust_tx, server_tx):
        """Each correct server: F over its stack, then its optimiser step.

        Returns:
          ``(new models, aggregates, robust states, server states)``, leaves
          ``[c, ...]``.
        """

        def one(stack, r, s, p):
            agg, r = robust_tx.update(stack, r, p)
            step, s = server_tx.update(agg, s, p)
            return optax.apply_updates(p, step), agg, r, s

        return jax.vmap(one)(stacks, rs, ss, params_c)

    def diagnostics(self, flag, sent, aggregate) -> dict:
        """The round diagnostics (:func:`~byzjax.sim._diagnostics.round_diagnostics`)
        of the first correct server's ``aggregate``; NaN when ``flag`` is
        ``False`` (a traced flag computes them)."""
        if flag is not False:
            return round_diagnostics(sent, aggregate, self.spec.num_honest)
        return dict.fromkeys(DIAGNOSTICS, jnp.float32(jnp.nan))

    def finish(self, state, params_c, opt_state, key, losses, diag, extra,
               workers=()):
        """The round's new :class:`ServerSimState` and its metrics (honest
        workers' mean loss, ``diag``, ``extra``); the first non-finite round
        recorded."""
        train_loss = losses[:self.spec.num_honest].mean()
        finite = jnp.isfinite(train_loss) & tree_all_finite(params_c)
        t = state.round + 1
        diverged = jnp.where((state.diverged_round < 0) & ~finite, t,
                             state.diverged_round)
        metrics = {"train_loss": train_loss, **diag, **extra}
        return ServerSimState(params_c, {}, opt_state, key, t, diverged,
                              workers), metrics

    def program(self, init: Callable, round_step: Callable) -> Program:
        """The :class:`~byzjax.sim.Program` of ``round_step``: ``eval_every``
        rounds, then every correct server's model evaluated (``test_accuracy``:
        the first one's; ``test_accuracy_min``: the worst; the Byzantine
        single server: the model it hands out)."""
        spec, evaluate = self.spec, self.evaluate

        def run_chunk(state, hp):
            state, rm = jax.lax.scan(lambda s, _: round_step(s, hp), state, None,
                                     length=spec.eval_every)
            if self.byzantine_single:  # what the Byzantine server hands out
                shown = self.served(state.params, jax.random.fold_in(state.key, 2))
            else:
                shown = state.params
            accs, test_losses, class_accs = jax.lax.map(lambda p: evaluate(p),
                                                        shown)
            metrics = {k: nanmean(v) for k, v in rm.items()}
            metrics.update(test_accuracy=accs[0], test_loss=test_losses[0],
                           test_class_accuracy=class_accs[0],
                           test_accuracy_min=jnp.min(accs), round=state.round,
                           diverged_round=state.diverged_round)
            return state, metrics

        return program_of(init, run_chunk, round_step, evaluate, spec.num_evals)


def make_server_kit(spec: RunSpec, data: SimData, model) -> ServerKit:
    """The :class:`ServerKit` of a run with replicated or Byzantine servers.

    Args:
      spec: a :class:`~byzjax.sim.RunSpec` (``spec.replicated_servers``).
      data: :class:`~byzjax.sim.SimData`.
      model: a Flax module without BatchNorm.

    Raises:
      ConfigError: the model has BatchNorm.

    Example (see ``tests/test_servers.py`` for runs)::

        kit = make_server_kit(spec, data, model)
        state = kit.init(jax.random.key(0), spec.hparams)
    """
    sample_shape = tuple(data.train_images.shape[1:])
    variables = jax.eval_shape(lambda k: init_variables(model, k, sample_shape),
                               jax.random.key(0))
    if "batch_stats" in variables:
        raise ConfigError(f"model {spec.model!r} has BatchNorm, which replicated "
                          "or Byzantine servers do not support yet; use a model "
                          "without it (mlp, mnist_cnn)", field="model")
    grad_strategy = resolve_grad_strategy(
        spec.grad_strategy, num_workers=spec.num_workers,
        backend=jax.default_backend(),
        convolutional=has_convolutions(variables["params"]))
    eval_size = spec.eval_size or int(data.test_labels.shape[0])
    return ServerKit(
        spec=spec, data=data, model=model, num_classes=labels_num_classes(data),
        sample_shape=sample_shape, grad_strategy=grad_strategy,
        worker_grad=jax.grad(make_loss_fn(model, has_bn=False), has_aux=True),
        evaluate=make_evaluate(model, data, eval_size=eval_size, has_bn=False))
