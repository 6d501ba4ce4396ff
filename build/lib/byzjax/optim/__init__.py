"""optax ``GradientTransformation``s for Byzantine-resilient learning.

Updates carry a leading worker axis ``[num_workers, *param_shape]`` until the
aggregation stage removes it; from there on, stock optax transforms apply.
``init(params)`` takes the ordinary (unstacked) parameters.

Stages, in data-flow order: :func:`clip_by_worker_norm`,
:func:`worker_momentum` / :func:`worker_adam` (per-worker state),
:func:`byzantine_attack` (simulation), :func:`pre_aggregate`,
:func:`aggregate` (drops the worker axis), :func:`mra_direction`,
:func:`server_momentum`. One builder assembles them for a named optimiser
(:data:`OPTIMIZERS`): :func:`stages` returns :class:`Stages` (worker, attack,
robust, server); the ready chains ending aggregated (no learning rate),
:func:`dsgd`, :func:`resam`, :func:`dra`, :func:`mra`, are ``optax.chain`` s of
it. Static: worker counts, rule names, flags; traced (vmappable): ``beta``,
``b1``, ``b2``, ``eps``, clipping radius, attack ``eps``.

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

from byzjax.optim import _alias, _pipeline, _stages, _worker
from byzjax.optim._alias import *  # noqa: F403
from byzjax.optim._pipeline import *  # noqa: F403
from byzjax.optim._stages import *  # noqa: F403
from byzjax.optim._worker import *  # noqa: F403

__all__ = (list(_worker.__all__) + list(_stages.__all__) + list(_pipeline.__all__)
           + list(_alias.__all__))
