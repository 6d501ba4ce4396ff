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

Several processes (TPU pods, GPU clusters, Slurm, several processes on one
CPU machine): call :func:`byzjax.distributed.initialize` at the start of every
process (``byzjax train|sweep`` do it from ``--coordinator-address``,
``--num-processes``, ``--process-id`` or the environment; ``byzjax launch``
starts local processes); ``jax.devices()`` then lists every device of every
process and the meshes above span them. Values passed in from the host are
placed with :func:`put_global` (each process keeps its devices' rows of the
same global value) and read back with :func:`fetch` (all-gathered); the
aggregation runs on the all-gathered stack, identical on every device. See
docs/SCALING.md.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from byzjax import aggregators, optim

__all__ = [
    "make_mesh",
    "pad_to_multiple",
    "default_shard",
    "simulation_sharding",
    "shard_leading",
    "replicate",
    "put_global",
    "fetch",
    "RobustDPState",
    "robust_data_parallel_step",
]


def make_mesh(num_devices: int | None = None, axis_name: str = "devices"):
    """A 1-D mesh over the first ``num_devices`` devices (default: all).

    Uses ``AxisType.Auto`` so XLA's partitioner may place sorts and reductions
    over sharded axes (with jax 0.10's default Explicit axes a sort over a
    sharded axis raises ``ShardingTypeError`` in jax 0.10).

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


def default_shard(shard: str) -> str:
    """The simulator's sharding: ``shard``, or ``"runs"`` in a multi-process run.

    With several processes every process runs the same program; an unsharded
    group would be computed in full by each of them, so it is split over all
    global devices instead.

    Example:
      >>> default_shard("none")  # one process
      'none'
    """
    if shard == "none" and jax.process_count() > 1:
        return "runs"
    return shard


def simulation_sharding(shard: str, *, num_devices: int | None, num_workers: int,
                        mesh=None):
    """How the simulator spreads a group over devices: ``(shard, mesh, worker)``.

    Args:
      shard: the config's ``"none"``, ``"runs"`` or ``"workers"``
        (:func:`default_shard` turns ``"none"`` into ``"runs"`` when several
        processes run; a given ``mesh`` also means ``"runs"``).
      num_devices: devices of the mesh built here (``None``: all).
      num_workers: ``n``; ``"workers"`` needs it divisible by the device count.
      mesh: a 1-D mesh to use instead of building one.

    Returns:
      ``shard`` resolved, the mesh (``None`` for one device) and the
      ``NamedSharding`` of the stacked ``[n, ...]`` worker gradients
      (``None`` unless ``shard == "workers"``).

    Raises:
      ValueError: ``"workers"`` with ``num_workers`` not divisible by the
        device count (the message lists counts that work).

    Example:
      >>> simulation_sharding("none", num_devices=None, num_workers=15)
      ('none', None, None)
    """
    shard = default_shard(shard)  # "runs" if several processes
    if mesh is not None and shard == "none":
        shard = "runs"
    if mesh is None and shard != "none":
        mesh = make_mesh(num_devices)
    worker_sharding = None
    if mesh is not None and shard == "workers":
        (axis,) = mesh.axis_names
        d = mesh.shape[axis]
        if num_workers % d:
            ok = [m for m in range(num_workers - d, num_workers + d + 1)
                  if m > 0 and m % d == 0]
            raise ValueError(
                f"shard='workers' needs num_workers divisible by the {d} devices; "
                f"got {num_workers}. Use num_workers in {ok}, "
                f"num_devices dividing {num_workers}, or shard='runs'.")
        worker_sharding = NamedSharding(mesh, P(axis))
    return shard, mesh, worker_sharding


def shard_leading(tree, mesh):
    """Places every leaf with its leading axis split over the mesh's one axis.

    Works when the mesh spans several processes (every process passes the
    same values and keeps only its devices' rows); typed PRNG keys included.
    """
    (name,) = mesh.axis_names
    return put_global(tree, NamedSharding(mesh, P(name)))


def replicate(tree, mesh):
    """Places every leaf whole on every device of ``mesh`` (any process count).

    Example:
      >>> import jax.numpy as jnp
      >>> x = replicate(jnp.arange(3.0), make_mesh(1))
      >>> x.sharding.is_fully_replicated
      True
    """
    return put_global(tree, NamedSharding(mesh, P()))


def put_global(tree, sharding):
    """``jax.device_put`` that also works for shardings spanning processes.

    In a multi-process run ``device_put`` onto devices of other processes is
    not allowed; each process builds its own shards of the same global value
    (``jax.make_array_from_callback``) instead. Every process must pass equal
    values.
    """
    if sharding.is_fully_addressable:
        return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), tree)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.sharding == sharding:
                return x
            return _settle(_reshard_fn(sharding)(_settle(x)))
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
                x.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding,
                                            lambda index: host[index])

    return jax.tree_util.tree_map(one, tree)


def _settle(x):
    """Waits for ``x`` on the CPU backend when the run spans several processes.

    XLA:CPU's cross-process collectives (gloo) were seen to deadlock when
    several programs with collectives were in flight at once (2 processes x
    4 devices: a robust data-parallel loop hung twice after 55-115 steps;
    with each step waited for, none of the later runs hung); byzjax
    therefore runs such programs one at a time there.
    """
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
        jax.block_until_ready(x)
    return x


def fetch(tree):
    """``jax.device_get`` for arrays that may span several processes.

    Leaves sharded over devices of other processes are first replicated onto
    every device (one jitted identity for the whole tree, compiled once per
    mesh and structure), so every process gets the whole NumPy value.

    Example:
      >>> import jax.numpy as jnp
      >>> fetch({"a": jnp.arange(2)})
      {'a': array([0, 1]...)}
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    spread = [i for i, x in enumerate(leaves)
              if isinstance(x, jax.Array) and not x.is_fully_addressable]
    if spread:
        meshes = {leaves[i].sharding.mesh for i in spread
                  if isinstance(leaves[i].sharding, NamedSharding)}
        if len(meshes) == 1 and all(isinstance(leaves[i].sharding, NamedSharding)
                                    for i in spread):
            gathered = _replicate_fn(meshes.pop())([leaves[i] for i in spread])
        else:  # pragma: no cover - other sharding kinds

            gathered = [multihost_utils.process_allgather(leaves[i], tiled=True)
                        for i in spread]
        for i, x in zip(spread, gathered):
            leaves[i] = x.addressable_data(0) if isinstance(x, jax.Array) else x
    return jax.tree_util.tree_unflatten(treedef, jax.device_get(leaves))


@functools.lru_cache(maxsize=8)
def _replicate_fn(mesh):
    return _reshard_fn(NamedSharding(mesh, P()))


@functools.lru_cache(maxsize=32)
def _reshard_fn(sharding):
    return jax.jit(lambda xs: xs, out_shardings=sharding)


class RobustDPState(NamedTuple):
    """State of :func:`robust_data_parallel_step`.

    Attributes:
      worker: state of the devices' worker stage
        (:func:`byzjax.optim.worker_stage`: clipping, worker momentum), leaves
        ``[D, *param_shape]`` (device ``i`` holds row ``i``).
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
      When the mesh spans several processes every process calls both with
      the same host values (the whole batch; each process keeps its
      devices' rows) or with global ``jax.Array`` s, e.g. from
      ``jax.make_array_from_process_local_data``; the outputs are global
      arrays (read them with :func:`fetch`).

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
    (axis,) = mesh.axis_names
    num_devices = mesh.shape[axis]
    entry = aggregators.check(aggregator, num_workers=num_devices,
                              num_byzantine=num_byzantine)
    if entry.needs_reference:
        raise ValueError(f"robust_data_parallel_step: aggregator {entry.name!r} "
                         "needs the server's own update, which this step has "
                         "no data for; use another aggregator")
    if entry.needs_key:
        raise ValueError(f"robust_data_parallel_step: {entry.name!r} is random (it "
                         "needs a PRNG key per step); use a deterministic rule")
    agg = entry.fn
    agg_kwargs = dict(aggregator_kwargs or {})

    # Each device is one worker: its worker stage is the simulator's and the
    # ready chains' (byzjax.optim.worker_stage), run on a one-row stack.
    optimizer, hparams = ("dsgd", {}) if momentum is None else (
        "resam", {"beta": momentum})
    local_worker = optim.worker_stage(optimizer, num_workers=1, clip_norm=clip_norm,
                                      **hparams)
    all_workers = optim.worker_stage(optimizer, num_workers=num_devices,
                                     clip_norm=clip_norm, **hparams)

    def init(params):
        return RobustDPState(all_workers.init(params), server_optimizer.init(params))

    def local(params, worker_state, server_state, batch):
        loss, g = jax.value_and_grad(loss_fn)(params, batch)
        row = jax.tree_util.tree_map(lambda x: x[None], g)  # [1, *param_shape]
        sent, worker_state = local_worker.update(row, worker_state, params)
        sent = jax.tree_util.tree_map(lambda x: x[0], sent)
        if fault is not None:
            sent = fault(sent, jax.lax.axis_index(axis))
        stack = jax.tree_util.tree_map(lambda x: jax.lax.all_gather(x, axis), sent)
        aggregate = agg(stack, num_byzantine=num_byzantine, **agg_kwargs)
        updates, server_state = server_optimizer.update(aggregate, server_state, params)
        params = optax.apply_updates(params, updates)
        mean_loss = jax.lax.pmean(loss, axis)
        return params, worker_state, server_state, mean_loss

    def worker_specs(worker_state):
        # Per-worker leaves are split over the devices; scalars (a step
        # count, the same on every device) are replicated.
        return jax.tree_util.tree_map(lambda x: P(axis) if jnp.ndim(x) else P(),
                                      worker_state)

    @jax.jit
    def jit_step(params, state, batch):
        specs = worker_specs(state.worker)
        sharded = jax.shard_map(
            local, mesh=mesh,
            in_specs=(P(), specs, P(), P(axis)),
            out_specs=(P(), specs, P(), P()),
            check_vma=False,
        )
        params, worker, server, loss = sharded(params, state.worker, state.server,
                                               batch)
        return params, RobustDPState(worker, server), loss

    def jit_init(params):
        shapes = jax.eval_shape(init, params)
        shardings = RobustDPState(
            jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec),
                                   worker_specs(shapes.worker),
                                   is_leaf=lambda x: isinstance(x, P)),
            NamedSharding(mesh, P()))
        return jax.jit(init, out_shardings=shardings)(params)
    spans_processes = not NamedSharding(mesh, P()).is_fully_addressable

    if not spans_processes:
        return jit_init, jit_step

    def init_global(params):
        return _settle(jit_init(replicate(params, mesh)))

    def step_global(params, state, batch):
        return _settle(jit_step(replicate(params, mesh), state,
                                shard_leading(batch, mesh)))

    return init_global, step_global
