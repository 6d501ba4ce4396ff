"""Beyond one device: sharded simulation and robust data-parallel training.

Two uses of JAX's own distributed engine (``jax.sharding``, ``jax.shard_map``):

1. **Sharded simulation.** :func:`make_mesh` builds a 1-D mesh; the simulator
   (``byzjax.sim.run_group(..., mesh=mesh)``) then splits its vmapped axis of
   runs (seeds x hyper-parameter points) over the devices, padding the run
   count to a multiple of the device count with copies that are dropped.
   With ``shard="workers"`` the stacked per-worker gradients are constrained to
   be split over the devices along the worker axis instead (``n`` must be a
   multiple of the device count: the error says which counts work). Results
   equal the one-device run up to float tolerance.

2. **Robust data-parallel training.** :func:`robust_data_parallel_step` turns
   ``loss_fn`` into a training step in which every device is one worker: each
   device computes its gradient on its shard of the batch, applies its own
   worker transform (clipping, worker momentum: RESAM), the per-device vectors
   are all-gathered (``[D, *param_shape]``) and a byzjax aggregator replaces
   the mean, so one faulty or corrupted device cannot derail training.

Multi-host (TPU pods, GPU clusters): call ``jax.distributed.initialize()`` at
the start of every process; ``jax.devices()`` then lists every device of every
host and the meshes above span them. Nothing else in byzjax changes: the
aggregation runs on the all-gathered stack, identical on every device.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "make_mesh",
    "pad_to_multiple",
    "RobustDPState",
    "robust_data_parallel_step",
]


def make_mesh(num_devices: int | None = None, axis_name: str = "devices"):
    """A 1-D mesh over the first ``num_devices`` devices (default: all).

    Uses ``AxisType.Auto`` so XLA's partitioner may place sorts and reductions
    over sharded axes (with jax 0.10's default Explicit axes a sort over a
    sharded axis raises ``ShardingTypeError``, NOTES.md).

    Example:
      >>> mesh = make_mesh(1)
      >>> dict(mesh.shape)
      {'devices': 1}
    """
    devices = jax.devices()
    num_devices = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(f"asked for {num_devices} devices, {len(devices)} available")
    return jax.make_mesh((num_devices,), (axis_name,),
                         axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices[:num_devices])


def pad_to_multiple(count: int, multiple: int) -> int:
    """Smallest ``m >= count`` divisible by ``multiple``.

    Example:
      >>> pad_to_multiple(15, 8)
      16
    """
    return -(-count // multiple) * multiple


def shard_leading(tree, mesh):
    """Places every leaf with its leading axis split over the mesh's one axis."""
    (name,) = mesh.axis_names
    sharding = NamedSharding(mesh, P(name))
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), tree)


class RobustDPState(NamedTuple):
    """State of :func:`robust_data_parallel_step`.

    Attributes:
      worker: per-device worker state, leaves ``[D, *param_shape]`` (device ``i``
        holds row ``i``): worker momentum.
      server: state of the server optimiser (replicated).
    """

    worker: Any
    server: Any


def robust_data_parallel_step(
    loss_fn: Callable[..., jax.Array],
    server_optimizer: optax.GradientTransformation,
    *,
    mesh,
    num_byzantine: int,
    aggregator: str = "trimmed_mean",
    aggregator_kwargs: dict | None = None,
    momentum: float | None = 0.9,
    clip_norm: float | None = None,
    fault: Callable[[Any, jax.Array], Any] | None = None,
):
    """A data-parallel train step where a robust aggregator replaces the mean.

    Every device of the 1-D ``mesh`` is one worker: device ``i`` sees shard ``i``
    of the batch, computes its gradient, clips it (``clip_norm``), updates its
    own momentum ``m_i <- beta m_i + (1 - beta) g_i`` (RESAM, Farhadkhani et al.
    2022, arXiv:2205.12173) and the D vectors are all-gathered and aggregated
    with ``aggregator`` (declared ``num_byzantine``). The server optimiser
    (e.g. ``optax.sgd(lr)``) applies the aggregate, identically on every
    device, so parameters stay replicated.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` on one device's shard.
      server_optimizer: optax transform applied to the aggregate.
      mesh: a 1-D mesh (:func:`make_mesh`); its size D is the worker count.
      num_byzantine: declared f (static); the aggregator's requirement on
        ``(D, f)`` is checked here, before tracing.
      aggregator: registered aggregator name.
      aggregator_kwargs: its hyper-parameters.
      momentum: worker momentum beta, or None for plain gradients.
      clip_norm: per-worker gradient clipping, or None.
      fault: optional ``fault(vector, device_index) -> vector`` applied to what
        a device sends (after its clipping and momentum), to simulate a faulty
        or Byzantine device (tests and the example script use it).

    Returns:
      ``(init, step)``: ``init(params) -> RobustDPState`` and
      ``step(params, state, batch) -> (params, state, loss)``, both jitted.
      ``batch`` leaves have a leading axis divisible by D (sharded over it).

    Example:
      >>> import optax, jax.numpy as jnp
      >>> mesh = make_mesh(1)
      >>> init, step = robust_data_parallel_step(
      ...     lambda p, b: jnp.mean((b @ p) ** 2), optax.sgd(0.1), mesh=mesh,
      ...     num_byzantine=0, aggregator="mean")
      >>> p = jnp.ones(3)
      >>> p, s, loss = step(p, init(p), jnp.ones((4, 3)))
      >>> float(loss)
      9.0
    """
    from byzjax import aggregators

    (axis,) = mesh.axis_names
    num_devices = mesh.shape[axis]
    aggregators.check(aggregator, num_workers=num_devices, num_byzantine=num_byzantine)
    agg = aggregators.get(aggregator)
    agg_kwargs = dict(aggregator_kwargs or {})

    def init(params):
        if momentum is None:
            worker = ()
        else:
            worker = jax.tree_util.tree_map(
                lambda p: jnp.zeros((num_devices,) + p.shape, p.dtype), params)
        return RobustDPState(worker, server_optimizer.init(params))

    def local(params, worker_state, server_state, batch):
        loss, g = jax.value_and_grad(loss_fn)(params, batch)
        if clip_norm is not None:
            leaves = jax.tree_util.tree_leaves(g)
            norm = jnp.sqrt(sum(jnp.sum(x * x) for x in leaves))
            scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-30))
            g = jax.tree_util.tree_map(lambda x: x * scale, g)
        if momentum is not None:
            worker_state = jax.tree_util.tree_map(
                lambda m, x: momentum * m + (1.0 - momentum) * x[None], worker_state, g)
            sent = jax.tree_util.tree_map(lambda m: m[0], worker_state)
        else:
            sent = g
        if fault is not None:
            sent = fault(sent, jax.lax.axis_index(axis))
        stack = jax.tree_util.tree_map(lambda x: jax.lax.all_gather(x, axis), sent)
        aggregate = agg(stack, num_byzantine=num_byzantine, **agg_kwargs)
        updates, server_state = server_optimizer.update(aggregate, server_state, params)
        params = optax.apply_updates(params, updates)
        mean_loss = jax.lax.pmean(loss, axis)
        return params, worker_state, server_state, mean_loss

    sharded = jax.shard_map(
        local, mesh=mesh,
        in_specs=(P(), P(axis), P(), P(axis)),
        out_specs=(P(), P(axis), P(), P()),
        check_vma=False,
    )

    @jax.jit
    def step(params, state, batch):
        params, worker, server, loss = sharded(params, state.worker, state.server,
                                               batch)
        return params, RobustDPState(worker, server), loss

    return jax.jit(init), step
