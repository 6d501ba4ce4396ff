"""Running configurations: data on the device, vmapped seeds and hyper-parameters,
a progress bar, and one tidy JSON record per run.

A *group* is one static configuration (one compiled program) run for several
seeds and float hyper-parameter points at once: ``P`` points x ``S`` seeds are
flattened into one vmapped axis of ``P * S`` runs.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from byzjax import data as bdata
from byzjax import distributed, models, parallel
from byzjax.sim import _store
from byzjax.sim._checkpoint import Checkpoints
from byzjax.sim._compile import ProgramCache, ProgramJob, program_inputs
from byzjax.sim._errors import ConfigError
from byzjax.sim._fields import SPLIT_FIELDS, float_hparams
from byzjax.sim._kit import SimData, labels_num_classes
from byzjax.sim._program import check_pipeline, make_program
from byzjax.sim._records import (
    params_sha256,
    plain_config,
    run_id,
    static_key,
    to_python,
)
from byzjax.sim._spec import RunSpec, resolve, spec_for_points

__all__ = ["load_sim_data", "DataCache", "split_options", "make_model",
           "group_spec", "run_group",
           "run_batching", "batched_program", "check_memory", "available_memory"]


def load_sim_data(config: RunSpec, *, dataset=None) -> SimData:
    """Loads the dataset of ``config``, splits it over workers, moves it to the device.

    Args:
      config: the :class:`~byzjax.sim.RunSpec` (or a config, resolved here):
        ``dataset``, ``data_source``, ``split``, ...
      dataset: optional ``(train, test)`` pair of ``byzjax.data.Dataset`` to use
        instead of loading ``config.dataset`` (tests pass synthetic data here).

    With ``server_data_size > 0`` that many training examples, drawn with
    ``split_seed`` (:func:`byzjax.data.hold_out`), are the server's root
    dataset (``SimData.server_indices``) and are left out of every worker's
    shard.

    Returns:
      :class:`SimData` with device arrays.
    """
    spec = resolve(config)
    return _split_data(spec, _load_dataset(spec, dataset))


class _Dataset(NamedTuple):
    """A dataset on the device with its channel statistics (split-independent)."""

    labels: np.ndarray
    train_images: Any
    train_labels: Any
    test_images: Any
    test_labels: Any
    mean: Any
    std: Any
    num_classes: int


def _load_dataset(spec: RunSpec, dataset=None) -> _Dataset:
    """What :func:`load_sim_data` reads of ``spec.dataset``, before the split."""
    if dataset is None:
        train, test = bdata.load_train_test(spec.dataset, source=spec.data_source)
    else:
        train, test = dataset
    labels = np.asarray(train.labels)
    images = np.asarray(train.images)
    if images.ndim == 3:
        images = images[..., None]
    test_images = np.asarray(test.images)
    if test_images.ndim == 3:
        test_images = test_images[..., None]
    mean, std = bdata.channel_stats(images, dtype=np.float32)
    std = std + np.float32(1e-6)
    return _Dataset(labels, jnp.asarray(images), jnp.asarray(labels, jnp.int32),
                    jnp.asarray(test_images),
                    jnp.asarray(np.asarray(test.labels), jnp.int32),
                    jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32),
                    int(train.num_classes))


def _split_data(spec: RunSpec, ds: _Dataset) -> SimData:
    """:func:`load_sim_data` of a loaded dataset: the split over the workers."""
    labels = ds.labels
    server = None
    if spec.server_data_size:
        # The server's root dataset, given to no worker (FLTrust).
        if spec.server_data_size >= len(labels):
            raise ConfigError(
                f"server_data_size {spec.server_data_size} leaves no training "
                f"data for the workers (the training set has {len(labels)} "
                "examples); use fewer", field="server_data_size")
        server = bdata.hold_out(len(labels), spec.server_data_size,
                                seed=spec.split_seed)
    if spec.train_fraction < 1.0:
        # ByzFL's validation set (random_split): held out, never evaluated
        if server is not None:
            raise ConfigError("train_fraction < 1 and server_data_size > 0 "
                              "together are not supported; set one",
                              field="train_fraction")
        kept = int(spec.train_fraction * len(labels))
        held_out: np.ndarray | None = bdata.hold_out(
            len(labels), len(labels) - kept, seed=spec.split_seed)
    else:
        held_out = server
    num_honest = (spec.num_workers - spec.num_attackers
                  if spec.split_among == "honest" else None)
    split = bdata.split(spec.split, labels, num_workers=spec.num_workers,
                       seed=spec.split_seed, exclude=held_out,
                       num_honest=num_honest, **split_options(spec))
    smallest = int(np.min(split.counts))
    if spec.batch_size > smallest:
        warnings.warn(
            f"batch_size {spec.batch_size} is larger than the smallest worker's "
            f"share of the data ({smallest} examples); batches are drawn with "
            "replacement, so they repeat examples", UserWarning, stacklevel=3)
    if (spec.eval_size or 0) > int(ds.test_labels.shape[0]):
        raise ConfigError(f"eval_size {spec.eval_size} is larger than the test set "
                          f"({int(ds.test_labels.shape[0])}); use 0 for the whole "
                          "test set", field="eval_size")
    return SimData(
        train_images=ds.train_images,
        train_labels=ds.train_labels,
        test_images=ds.test_images,
        test_labels=ds.test_labels,
        worker_indices=jnp.asarray(split.indices, jnp.int32),
        worker_counts=jnp.asarray(split.counts, jnp.int32),
        mean=ds.mean,
        std=ds.std,
        num_classes=ds.num_classes,
        server_indices=(None if server is None
                        else jnp.asarray(server, jnp.int32)),
    )


class DataCache:
    """:func:`load_sim_data` for the groups of a sweep: each dataset read
    once (with its channel statistics), the last split kept; groups that
    differ only in the split (``similarity_gamma``, ...) reread nothing."""

    def __init__(self) -> None:
        self._dataset: tuple[tuple, _Dataset] | None = None
        self._split: tuple[tuple, SimData] | None = None

    def get(self, spec: RunSpec) -> SimData:
        """The :class:`SimData` of ``spec`` (as :func:`load_sim_data`)."""
        key = data_key(spec)
        if self._split is not None and self._split[0] == key:
            return self._split[1]
        source = (spec.dataset, spec.data_source)
        if self._dataset is None or self._dataset[0] != source:
            self._dataset = None  # one dataset in memory at a time
            self._split = None
            self._dataset = (source, _load_dataset(spec))
        data = _split_data(spec, self._dataset[1])
        self._split = (key, data)
        return data


def data_key(spec: RunSpec) -> tuple:
    """What :func:`load_sim_data` reads of ``spec``: two specs with equal keys
    get the same :class:`SimData` (a sweep loads it once for both).

    Example:
      >>> from byzjax.sim import get_config, resolve
      >>> a, b = get_config(), get_config()
      >>> b.aggregator, b.server_data_size = "fltrust", 100
      >>> data_key(resolve(a)) == data_key(resolve(b))
      False
    """
    return (spec.dataset, spec.data_source, spec.split,
            tuple(sorted(split_options(spec).items())), spec.split_seed,
            spec.num_workers, spec.server_data_size, spec.train_fraction,
            spec.num_workers - spec.num_attackers
            if spec.split_among == "honest" else None)


def split_options(spec: RunSpec) -> dict[str, Any]:
    """The keywords of ``spec.split`` that come from config fields.

    Example:
      >>> from byzjax.sim import get_config, resolve
      >>> c = get_config()
      >>> c.split = "dirichlet"
      >>> split_options(resolve(c))
      {'alpha': 0.1}
    """
    return {kw: getattr(spec, field)
            for kw, field in SPLIT_FIELDS.get(spec.split, {}).items()}


def make_model(config: RunSpec, num_classes: int):
    """The Flax module named by ``config.model``."""
    return models.get(resolve(config).model, num_classes=num_classes)


def group_spec(config, hparam_points: Iterable[dict[str, float]] | None = None
               ) -> tuple[RunSpec, list[dict[str, float]]]:
    """The spec of one :func:`run_group` call and its full float points.

    Each point is ``config``'s float values updated by one of
    ``hparam_points`` (default: one point, the config's own); the spec is
    :func:`~byzjax.sim._spec.spec_for_points` of them: the points are
    checked, and a stage the config leaves off that they turn on
    (``attack_eps``, ``clip_norm``) is compiled in, so their values reach the
    program.

    Example:
      >>> from byzjax.sim import get_config
      >>> spec, points = group_spec(get_config(), [{"beta": 0.5}])
      >>> points[0]["beta"], spec.beta
      (0.5, 0.99)
    """
    spec = resolve(config)
    points = [dict(spec.hparams, **{k: float(v) for k, v in p.items()})
              for p in (hparam_points or [{}])]
    return spec_for_points(spec, points), points


def run_group(
    config,
    *,
    seeds: Sequence[int],
    hparam_points: Iterable[dict[str, float]] | None = None,
    outdir: str | None = None,
    data: SimData | None = None,
    model=None,
    progress: bool = True,
    desc: str = "",
    mesh=None,
    checkpoint_dir: str | None = None,
    on_chunk: Callable[[int, dict, list[dict]], None] | None = None,
    programs: ProgramCache | None = None,
) -> list[dict[str, Any]]:
    """Runs one static configuration for every (hyper-parameter point, seed).

    All ``P * S`` runs are one ``jax.vmap`` inside one compiled program. The
    program is called once per evaluation chunk so a progress bar can follow
    it; each call is the same compiled executable (no retrace).

    Args:
      config: the config (static fields fixed; float fields are defaults for
        hyper-parameters missing from a point).
      seeds: run seeds (model init unless ``init_seed`` is set, batches,
        attack randomness).
      hparam_points: dicts overriding float hyper-parameters
        (:data:`byzjax.sim.FLOAT_HPARAMS`); default: the config's own values.
      outdir: if given, one JSON per run is written there atomically.
      data: pre-loaded :class:`SimData` (default: loaded from ``config``).
      model: a Flax module (default: ``config.model``).
      progress: show a tqdm progress bar.
      desc: progress-bar label.
      mesh: optional 1-D device mesh; default: one built from ``config.shard``
        and ``config.num_devices`` when ``config.shard != "none"``.
      checkpoint_dir: if given (and ``config.checkpoint_every > 0``), the
        simulator state of all runs is saved there with orbax every
        ``checkpoint_every`` evaluation chunks; a call with the same runs
        resumes from the last checkpoint (bit-identical to an uninterrupted
        run) and the folder is deleted when the runs are done.
      on_chunk: if given, called after every evaluation chunk as
        ``on_chunk(round, metrics, runs)``: the round reached, the chunk's
        metrics (host arrays ``[len(runs)]``) and one dict per run (``run_id``,
        ``seed``, ``hparams``), e.g. a
        :class:`byzjax.metric_writers.ChunkLogger` (process 0 only).
      programs: a :class:`~byzjax.sim._compile.ProgramCache` holding the
        compiled programs of earlier groups (a sweep's: groups differing only
        in the data split share one) and compiling expected ones ahead;
        default: compiled for this call. Unused with a ``mesh`` or several
        processes (the data are then constants of the program).

    Returns:
      The run records (dicts with the config, seed, hyper-parameters, the
      metric curves, ``final_accuracy``, ``max_accuracy``, ``diverged_round``).
    """
    spec, points = group_spec(config, hparam_points)
    check_pipeline(spec)  # a rule's own checks, before any data loads
    if data is None:
        data = load_sim_data(spec)
    if model is None:
        model = make_model(spec, labels_num_classes(data))
    distributed.announce()  # "backend cpu: 8 device(s) ..." once, on stderr
    shard, mesh, worker_sharding = parallel.simulation_sharding(
        spec.shard, num_devices=spec.num_devices, num_workers=spec.num_workers,
        mesh=mesh)

    runs = [(p, s) for p in points for s in seeds]
    padded = list(runs)
    if mesh is not None and shard == "runs":
        padded += [runs[-1]] * (parallel.pad_to_multiple(len(runs), mesh.size)
                                - len(runs))
    keys = jnp.stack([jax.random.key(int(s)) for _, s in padded])
    hp = {k: jnp.asarray([p[k] for p, _ in padded], jnp.float32)
          for k in float_hparams()}
    if mesh is not None and shard == "runs":
        keys, hp = parallel.shard_leading((keys, hp), mesh)

    t0 = time.perf_counter()
    mode = run_batching(spec, shard)
    if mesh is None and jax.process_count() == 1:
        # The data as inputs: one compilation for every split of it
        # (byzjax.sim._compile), cached across the groups of a sweep.
        arrays, static = program_inputs(data)
        compiled = (programs or ProgramCache()).compiled(ProgramJob(
            spec, static, arrays, model, mode, len(padded)))
        num_evals = compiled.num_evals
        state = compiled.init(keys, hp, arrays)
        chunk_c = compiled.chunk

        def chunk(state, hp):
            return chunk_c(state, hp, arrays)

        def chunk_shapes(state, hp):  # (checkpoints: shapes only)
            return compiled.chunk_fn(state, hp, arrays)
    else:  # the data as constants of a program with sharded runs or workers
        program = make_program(spec, data, model, worker_sharding=worker_sharding)
        num_evals = program.num_evals
        init, chunk_fn = batched_program(program, mode)
        state = init(keys, hp)
        if mesh is not None and shard == "runs":  # keep one sharding: one compile
            state = parallel.shard_leading(state, mesh)
        chunk_c = chunk_fn.lower(state, hp).compile()
        chunk, chunk_shapes = chunk_c, chunk_fn
    check_memory(chunk_c, num_runs=len(padded))
    history = []
    every = spec.checkpoint_every
    ckpt = None
    # Checkpoints are written by one process: not under multi-process JAX,
    # where the state is spread over processes (not supported yet).
    if checkpoint_dir is not None and every > 0 and jax.process_count() == 1 and (
            num_evals > every or os.path.isdir(checkpoint_dir)):
        # (orbax is only imported when a checkpoint can be saved or read)
        ckpt = Checkpoints(checkpoint_dir, num_evals)
        state, history = ckpt.restore(state, lambda s: chunk_shapes(s, hp))
        if history:
            print(f"resuming {len(runs)} run(s) at round "
                  f"{len(history) * spec.eval_every} from {ckpt.directory}",
                  file=sys.stderr, flush=True)
    bar = None
    if progress and distributed.is_main_process():
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.num_rounds, desc=desc or spec.aggregator,
                   unit="round", leave=False, dynamic_ncols=True,
                   initial=len(history) * spec.eval_every)
    compile_s = None
    for done in range(len(history) + 1, num_evals + 1):
        state, metrics = chunk(state, hp)
        metrics = parallel.fetch(metrics)  # gathers across processes
        if compile_s is None:
            compile_s = time.perf_counter() - t0
        history.append(metrics)
        if on_chunk is not None and distributed.is_main_process():
            on_chunk(done * int(config.eval_every),
                     {k: np.asarray(v)[:len(runs)] for k, v in metrics.items()},
                     [{"run_id": run_id(config, s, p), "seed": int(s),
                       "hparams": p} for p, s in runs])
        if ckpt is not None and done % every == 0 and done < num_evals:
            ckpt.save(done, state, history)
        if bar is not None:
            bar.update(spec.eval_every)
            acc = np.asarray(metrics["test_accuracy"])
            bar.set_postfix(acc=f"{np.nanmean(acc):.3f}")
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    params_sha = params_sha256(parallel.fetch(state.params), len(runs))

    records = []
    where = distributed.run_fields(mesh)  # backend, device and process counts
    for r, (p, s) in enumerate(runs):
        curves = {k: [to_python(h[k][r]) for h in history] for k in history[0]}
        acc = np.asarray(curves["test_accuracy"], np.float64)
        diverged = int(history[-1]["diverged_round"][r])
        rec = {
            "run_id": run_id(spec, s, p),
            "static_key": static_key(spec),
            "config": plain_config(spec),
            "seed": int(s),
            "hparams": p,
            "metrics": curves,
            "final_accuracy": float(acc[-1]),
            "max_accuracy": float(np.nanmax(acc)) if np.isfinite(acc).any() else 0.0,
            "diverged": diverged >= 0,
            "diverged_round": diverged,
            "group_wall_time_s": wall,
            "group_first_chunk_s": compile_s,
            "group_size": len(runs),
            "shard": shard,
            **where,
            "final_params_sha256": params_sha[r],
            "code": _store.code_fields(),  # what made it
        }
        rec = _store.sanitize(rec)
        if outdir is not None and distributed.is_main_process():
            os.makedirs(outdir, exist_ok=True)
            rec = _store.write_record(os.path.join(outdir, rec["run_id"] + ".json"),
                                      rec)
        records.append(rec)
    if ckpt is not None:
        ckpt.delete()
    return records


def available_memory() -> tuple[int | None, str]:
    """Bytes the program may use on the default device, and where that came from.

    An accelerator's own limit (``memory_stats()["bytes_limit"]``), else the
    host's available memory (``MemAvailable`` of ``/proc/meminfo``), else
    ``None`` (unknown: nothing is refused).
    """
    device = jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # backends without memory statistics
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available host memory"
    except OSError:
        pass
    return None, "unknown"


def check_memory(compiled, *, num_runs: int, limit: int | None = None) -> None:
    """Refuses a compiled chunk program that cannot fit in memory, before it runs.

    The estimate is XLA's buffer assignment (``compiled.memory_analysis()``:
    arguments, outputs and temporaries).

    Args:
      compiled: a ``jax.stages.Compiled`` (``jit(f).lower(...).compile()``).
      num_runs: runs in the program (for the message).
      limit: bytes available (default: :func:`available_memory`).

    Raises:
      ConfigError: one line with the estimate and the memory available.
    """
    try:
        stats = compiled.memory_analysis()
        need = int(stats.argument_size_in_bytes + stats.output_size_in_bytes
                   + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    except Exception:  # no analysis on this backend
        return
    where = "given limit"
    if limit is None:
        limit, where = available_memory()
    if limit is not None and need > limit:
        raise ConfigError(
            f"the program of these {num_runs} run(s) needs about "
            f"{need / 2**30:.1f} GiB (XLA's buffer assignment) but "
            f"{limit / 2**30:.1f} GiB is free ({where}); lower batch_size or "
            "num_workers, or run fewer seeds / points together",
            field="batch_size")


def run_batching(config: RunSpec, shard: str = "none") -> str:
    """How the runs of a group share one program: ``"vmap"`` or ``"map"``.

    ``config.run_batching`` may force either; ``"auto"`` (default) picks
    ``"vmap"`` on accelerators and when runs are sharded over devices, and
    ``"map"`` (``lax.map``: the runs one after another inside the same compiled
    program) on CPU, where vmapping the runs turns every model matmul into a
    batched matmul that XLA:CPU executes 2x slower than the runs one by one
    (``scripts/bench.py`` section 4).
    """
    mode = resolve(config).run_batching
    if mode == "auto":
        mode = "vmap" if shard == "runs" or jax.default_backend() != "cpu" else "map"
    return mode


def batched_program(program, mode: str):
    """Jitted ``init(keys, hp)`` and ``run_chunk(states, hp)`` over a runs axis."""
    if mode == "vmap":
        return jax.jit(jax.vmap(program.init)), jax.jit(jax.vmap(program.run_chunk))

    def init(keys, hp):
        return jax.lax.map(lambda a: program.init(*a), (keys, hp))

    def chunk(states, hp):
        return jax.lax.map(lambda a: program.run_chunk(*a), (states, hp))

    return jax.jit(init), jax.jit(chunk)


