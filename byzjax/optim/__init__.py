"""optax ``GradientTransformation``s for Byzantine-resilient learning.

Updates carry a leading worker axis ``[num_workers, *param_shape]`` until the
aggregation stage removes it; from there on, stock optax transforms apply.
``init(params)`` takes the ordinary (unstacked) parameters.

Stages, in data-flow order: :func:`clip_by_worker_norm`,
:func:`worker_momentum` / :func:`worker_adam` (per-worker state),
:func:`byzantine_attack` (simulation), :func:`pre_aggregate`,
:func:`aggregate` (drops the worker axis), :func:`mra_direction`,
:func:`server_momentum`; :func:`flatten_rows` runs a stage on each worker's
vector raveled into one row (``layout="flat"``). One builder assembles them
for a named optimiser (:data:`OPTIMIZERS`): :func:`stages` returns
:class:`Stages` (worker, attack, robust, server); the ready chains ending
aggregated (no learning rate), :func:`dsgd`, :func:`resam`, :func:`dra`,
:func:`mra`, are ``optax.chain`` s of it. Static: worker counts, rule names,
flags; traced (vmappable): ``beta``, ``b1``, ``b2``, ``eps``, clipping radius,
attack ``eps``.

Example: a Flax/optax user with stacked per-worker gradients (here 5 workers,
at most 1 Byzantine) aggregates worker momentums robustly, then steps with SGD::

    >>> import jax, jax.numpy as jnp, optax
    >>> from byzjax import optim
    >>> params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    >>> def loss(p, x, y):
    ...     return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)
    >>> xs = jax.random.normal(jax.random.key(0), (5, 8, 3))  # [workers, batch, d]
    >>> ys = xs @ jnp.array([1.0, -2.0, 0.5])
    >>> tx = optax.chain(
    ...     optim.resam(num_workers=5, num_byzantine=1, aggregator="trimmed_mean",
    ...                 beta=0.9),
    ...     optax.sgd(0.1))
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...     grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, xs, ys)
    ...     updates, state = tx.update(grads, state, params)  # grads: leaves [5, ...]
    ...     params = optax.apply_updates(params, updates)
    >>> jax.tree.map(jnp.shape, params)
    {'b': (), 'w': (3,)}
"""

from byzjax.optim import _alias, _layout, _pipeline, _stages, _worker
from byzjax.optim._alias import dra as dra
from byzjax.optim._alias import dsgd as dsgd
from byzjax.optim._alias import mra as mra
from byzjax.optim._alias import resam as resam
from byzjax.optim._layout import LAYOUTS as LAYOUTS
from byzjax.optim._layout import flatten_rows as flatten_rows
from byzjax.optim._layout import ravel_rows as ravel_rows
from byzjax.optim._layout import unravel_rows as unravel_rows
from byzjax.optim._pipeline import OPTIMIZERS as OPTIMIZERS
from byzjax.optim._pipeline import OptimizerEntry as OptimizerEntry
from byzjax.optim._pipeline import PipelineOptions as PipelineOptions
from byzjax.optim._pipeline import Stages as Stages
from byzjax.optim._pipeline import adaptive_attack_defaults as adaptive_attack_defaults
from byzjax.optim._pipeline import check_optimizer_kwargs as check_optimizer_kwargs
from byzjax.optim._pipeline import optimizer_entry as optimizer_entry
from byzjax.optim._pipeline import optimizer_names as optimizer_names
from byzjax.optim._pipeline import register_optimizer as register_optimizer
from byzjax.optim._pipeline import stages as stages
from byzjax.optim._pipeline import worker_stage as worker_stage
from byzjax.optim._stages import AggregateState as AggregateState
from byzjax.optim._stages import AttackHistoryState as AttackHistoryState
from byzjax.optim._stages import ByzantineAttackState as ByzantineAttackState
from byzjax.optim._stages import PreAggregateState as PreAggregateState
from byzjax.optim._stages import RandomAggregateState as RandomAggregateState
from byzjax.optim._stages import aggregate as aggregate
from byzjax.optim._stages import byzantine_attack as byzantine_attack
from byzjax.optim._stages import mra_direction as mra_direction
from byzjax.optim._stages import pre_aggregate as pre_aggregate
from byzjax.optim._stages import server_momentum as server_momentum
from byzjax.optim._worker import MomentPair as MomentPair
from byzjax.optim._worker import WorkerAdamState as WorkerAdamState
from byzjax.optim._worker import WorkerMomentumState as WorkerMomentumState
from byzjax.optim._worker import clip_by_worker_norm as clip_by_worker_norm
from byzjax.optim._worker import worker_adam as worker_adam
from byzjax.optim._worker import worker_momentum as worker_momentum

__all__ = (list(_worker.__all__) + list(_stages.__all__) + list(_layout.__all__)
           + list(_pipeline.__all__)
           + list(_alias.__all__))
