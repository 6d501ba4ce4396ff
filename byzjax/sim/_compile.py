"""A group's compiled programs: the data as inputs, shared across data splits,
and compiled ahead of time in a background thread.

:func:`~byzjax.sim.run_group` runs ``init`` once and ``run_chunk`` once per
evaluation; both are compiled here. The data arrays (images, labels, the
workers' shards) are *inputs* of the compiled programs, not constants baked
into them, and the shards ``[n, max_m]`` are padded to a width that does not
depend on the split (:func:`split_width`). So two groups that differ only in
how the data is split over the workers (``similarity_gamma``,
``dirichlet_alpha``, ``split_seed``, ...: :data:`DATA_ONLY_FIELDS`) are the
same program, compiled once: a :class:`ProgramCache` keys the compiled pair
by the config without those fields, the data's shapes and the rest of what
the program reads (:func:`program_key`); programs of different configs whose
lowered modules are the same text (often ``init``) share one compilation too.

With ``ahead > 0`` the cache compiles the next groups of a sweep
(:meth:`ProgramCache.expect`) in a background thread while the current one
compiles or runs: XLA:CPU compiles one program on one core, and the lowering
releases the GIL while XLA compiles. Results do not depend on it (the same
programs, compiled from the same modules); a background compilation that
fails is dropped and the group compiles in the foreground, so its error is
raised where and as it is without compiling ahead.

Padding is exact: a worker samples positions ``< worker_counts[i]`` of its
row, and a row is padded with its own last entry (what a worker without
examples reads), so every index drawn is the one of the unpadded shards.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import threading
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from byzjax.sim._fields import SPLIT_FIELDS, float_hparams
from byzjax.sim._kit import SimData, labels_num_classes
from byzjax.sim._program import make_program
from byzjax.sim._records import plain_config
from byzjax.sim._spec import RunSpec

__all__ = ["DATA_ONLY_FIELDS", "split_width", "program_inputs", "program_key",
           "CompiledGroup", "ProgramJob", "ProgramCache", "compiling_ahead"]

#: The name of the background compilation threads.
THREAD_NAME = "byzjax-compile-ahead"

#: Config fields read only when the data is split over the workers
#: (:func:`~byzjax.sim.load_sim_data`), never by a program: groups differing
#: only in them share one compiled program.
DATA_ONLY_FIELDS = frozenset(
    {"split", "split_seed", "split_among", "train_fraction"}
    | {field for options in SPLIT_FIELDS.values() for field in options.values()})

#: Up to this many shard entries (``n * N``) the shards are padded to the
#: whole training set (a width independent of the split); beyond it, to the
#: next power of two of the largest shard.
MAX_PADDED_ENTRIES = 1 << 24


def split_width(num_workers: int, num_examples: int, largest: int) -> int:
    """The padded width of the workers' shards ``[num_workers, width]``.

    ``num_examples`` (every training example: no split can give a worker
    more) while ``num_workers * num_examples <= MAX_PADDED_ENTRIES`` (64 MiB
    of int32); else the next power of two of the ``largest`` shard, at most
    ``num_examples`` (splits of similar sizes then still share a width).

    Example:
      >>> split_width(11, 60000, 4800)
      60000
      >>> split_width(1000, 60000, 60)
      64
    """
    if num_workers * num_examples <= MAX_PADDED_ENTRIES:
        return int(num_examples)
    return int(min(num_examples, 1 << max(int(largest) - 1, 0).bit_length()))


def program_inputs(data: SimData) -> tuple[SimData, tuple]:
    """``data`` as the compiled programs' input and their static part.

    Returns:
      ``(arrays, static)``: ``arrays`` is ``data`` with the shards padded to
      :func:`split_width` (``worker_indices`` ``int32[n, width]``, each row
      padded with its last entry) and ``mean``, ``std``, ``num_classes`` left
      out (``None``); ``static`` is ``(mean, std, num_classes)`` (the number
      of classes from the labels when ``data`` has none), which the
      programs read as constants (:func:`with_static` puts them back).

    Example:
      >>> import jax.numpy as jnp
      >>> imgs = jnp.zeros((6, 2, 2, 1), jnp.uint8)
      >>> data = SimData(imgs, jnp.zeros(6, jnp.int32), imgs, jnp.zeros(6, jnp.int32),
      ...                jnp.array([[0, 1], [2, 0]]), jnp.array([2, 1]),
      ...                jnp.zeros(1), jnp.ones(1), 10)
      >>> arrays, static = program_inputs(data)
      >>> arrays.worker_indices.tolist(), arrays.mean, static[2]
      ([[0, 1, 1, 1, 1, 1], [2, 0, 0, 0, 0, 0]], None, 10)
    """
    idx = np.asarray(data.worker_indices)
    n, m = idx.shape
    width = split_width(n, int(data.train_labels.shape[0]), m)
    if width > m:
        idx = np.pad(idx, ((0, 0), (0, width - m)), mode="edge")
    arrays = data._replace(worker_indices=jnp.asarray(idx, jnp.int32),
                           mean=None, std=None, num_classes=None)
    return arrays, (data.mean, data.std,
                    labels_num_classes(data))


def with_static(arrays: SimData, static: tuple) -> SimData:
    """The :class:`SimData` a program is built from: ``arrays`` (traced
    inputs) with ``static`` of :func:`program_inputs` back in place."""
    mean, std, num_classes = static
    return arrays._replace(mean=mean, std=std, num_classes=num_classes)


class CompiledGroup(NamedTuple):
    """A group's compiled programs (each takes the data arrays last).

    Attributes:
      init: ``(keys [R], hp {k: [R]}, arrays) -> state``, compiled.
      chunk: ``(state, hp, arrays) -> (state, metrics)``, compiled: one
        evaluation chunk of every run.
      chunk_fn: the jitted, uncompiled ``chunk`` (for ``jax.eval_shape``).
      num_evals: evaluations in a run.
    """

    init: Any
    chunk: Any
    chunk_fn: Callable
    num_evals: int


class ProgramJob(NamedTuple):
    """What to compile: one group's programs for ``num_runs`` runs."""

    spec: RunSpec
    static: tuple
    arrays: Any  # SimData of arrays or jax.ShapeDtypeStruct
    model: Any
    mode: str  # "vmap" or "map" (run_batching)
    num_runs: int

    def key(self) -> tuple:
        """:func:`program_key` of this job."""
        return program_key(self.spec, self.static, self.arrays, self.model,
                           self.mode, self.num_runs)


def program_key(spec: RunSpec, static: tuple, arrays, model, mode: str,
                num_runs: int) -> tuple:
    """What a group's compiled programs depend on: equal keys, same programs.

    The config without :data:`DATA_ONLY_FIELDS` (float values included: a
    conservative key), the data arrays' structure, shapes and dtypes, the
    static data (channel statistics, number of classes), the model, the
    run batching and the number of runs.
    """
    config = {k: v for k, v in plain_config(spec).items()
              if k not in DATA_ONLY_FIELDS}
    leaves, tree = jax.tree_util.tree_flatten(arrays)
    mean, std, num_classes = static
    return (json.dumps(config, sort_keys=True, default=str), str(tree),
            tuple((tuple(a.shape), str(a.dtype)) for a in leaves),
            np.asarray(mean, np.float32).tobytes(),
            np.asarray(std, np.float32).tobytes(), num_classes, model, mode,
            int(num_runs), jax.default_backend())


def _structs(tree):
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


class _Ahead:
    """One background compilation (a daemon thread: never waited for at exit)."""

    def __init__(self, fn: Callable[[], CompiledGroup]):
        self.done = threading.Event()
        self.result: CompiledGroup | None = None
        self.failed = False

        def run():
            try:
                self.result = fn()
            except BaseException:  # raised again by the foreground compile
                self.failed = True
            finally:
                self.done.set()

        threading.Thread(target=run, name=THREAD_NAME, daemon=True).start()


def compiling_ahead() -> bool:
    """Whether a background compilation is running (a daemon thread inside
    XLA: an interpreter exiting now aborts in it, so ``byzjax sweep`` leaves
    with ``os._exit`` on Ctrl-C then; finished records are safe either way).

    Example:
      >>> compiling_ahead()
      False
    """
    return any(t.name == THREAD_NAME and t.is_alive()
               for t in threading.enumerate())


class ProgramCache:
    """Compiled group programs, shared by the groups of one sweep.

    Args:
      ahead: compile up to this many expected groups (:meth:`expect`) in a
        background thread while the current group compiles or runs; 0
        compiles each group when it is reached.
      max_entries: compiled groups kept (least recently used dropped).

    Attributes:
      compilations: XLA compilations made (foreground and background; a
        program whose module was compiled before is not counted again).

    Example:
      >>> ProgramCache(ahead=1).compilations
      0
    """

    def __init__(self, *, ahead: int = 0, max_entries: int = 16):
        if ahead < 0:
            raise ValueError(f"ahead must be >= 0, got {ahead}")
        self.ahead = int(ahead)
        self.max_entries = int(max_entries)
        self.compilations = 0
        self._groups: collections.OrderedDict[tuple, CompiledGroup] = \
            collections.OrderedDict()
        self._modules: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._pending: dict[tuple, _Ahead] = {}
        self._compiling: dict[str, threading.Event] = {}
        self._expected: list[Callable[[ProgramJob], ProgramJob | None]] = []
        self._lock = threading.Lock()

    def expect(self, jobs: list[Callable[[ProgramJob], ProgramJob | None]]) -> None:
        """The groups to compile ahead, next first: each a function of the job
        being compiled (whose data is the template) returning the expected
        job, or ``None`` (nothing to compile ahead)."""
        self._expected = list(jobs)

    def compiled(self, job: ProgramJob) -> CompiledGroup:
        """The compiled programs of ``job``: cached, compiled ahead, or now.

        Starts the expected groups' compilations first (``ahead > 0``).
        """
        key = job.key()
        self._start_ahead(job)
        with self._lock:
            hit = self._groups.get(key)
            if hit is not None:
                self._groups.move_to_end(key)
                return hit
            pending = self._pending.pop(key, None)
        if pending is not None:
            pending.done.wait()
            if pending.result is not None:
                self._store(key, pending.result)
                return pending.result
        # (compiled here: a failure raises as without compiling ahead)
        return self._store(key, self._build(job))

    def _store(self, key: tuple, group: CompiledGroup) -> CompiledGroup:
        with self._lock:
            self._groups[key] = group
            self._groups.move_to_end(key)
            while len(self._groups) > self.max_entries:
                self._groups.popitem(last=False)
        return group

    def _start_ahead(self, template: ProgramJob) -> None:
        if not self.ahead:
            return
        with self._lock:  # finished compilations join the cache, failed ones
            for key, pending in list(self._pending.items()):  # are dropped
                if pending.done.is_set():
                    del self._pending[key]
                    if pending.result is not None:
                        self._groups[key] = pending.result
        for make in self._expected:
            with self._lock:
                if len(self._pending) >= self.ahead:
                    return
            try:
                job = make(template)
            except Exception:  # raised in the foreground when it is reached
                job = None
            if job is None:
                continue
            key = job.key()
            with self._lock:
                if key in self._groups or key in self._pending:
                    continue
                self._pending[key] = _Ahead(functools.partial(self._build, job))

    def _compile(self, lowered):
        """``lowered.compile()``, or the executable of the same module.

        A module already being compiled by another thread (the foreground and
        a group compiled ahead share ``init``) is waited for, not compiled
        twice; if that compilation fails, this one compiles it itself.
        """
        text = lowered.as_text()
        digest = hashlib.sha256(
            f"{lowered.in_tree}|{lowered.out_tree}|{text}".encode()).hexdigest()
        while True:
            with self._lock:
                hit = self._modules.get(digest)
                running = None if hit is not None else self._compiling.get(digest)
                if hit is None and running is None:
                    self._compiling[digest] = threading.Event()
            if hit is not None:
                return hit
            if running is None:
                break
            running.wait()
        try:
            compiled = lowered.compile()
            with self._lock:
                self.compilations += 1
                self._modules[digest] = compiled
                while len(self._modules) > 2 * self.max_entries:
                    self._modules.popitem(last=False)
        finally:
            with self._lock:
                self._compiling.pop(digest).set()
        return compiled

    def _build(self, job: ProgramJob) -> CompiledGroup:
        """Traces, lowers and compiles ``init`` and ``chunk`` of ``job``."""
        spec, static, model = job.spec, job.static, job.model
        built: dict[str, int] = {}

        def program(arrays):
            p = make_program(spec, with_static(arrays, static), model)
            built["num_evals"] = p.num_evals
            return p

        if job.mode == "vmap":
            def init(keys, hp, arrays):
                return jax.vmap(program(arrays).init)(keys, hp)

            def chunk(states, hp, arrays):
                return jax.vmap(program(arrays).run_chunk)(states, hp)
        else:
            def init(keys, hp, arrays):
                p = program(arrays)
                return jax.lax.map(lambda a: p.init(*a), (keys, hp))

            def chunk(states, hp, arrays):
                p = program(arrays)
                return jax.lax.map(lambda a: p.run_chunk(*a), (states, hp))

        r = job.num_runs
        keys = jax.eval_shape(lambda: jnp.stack([jax.random.key(0)] * r))
        hp = {k: jax.ShapeDtypeStruct((r,), jnp.float32) for k in float_hparams()}
        arrays = _structs(job.arrays)
        init_fn, chunk_fn = jax.jit(init), jax.jit(chunk)
        init_c = self._compile(init_fn.lower(keys, hp, arrays))
        state = jax.eval_shape(init_fn, keys, hp, arrays)
        chunk_c = self._compile(chunk_fn.lower(state, hp, arrays))
        return CompiledGroup(init_c, chunk_c, chunk_fn, built["num_evals"])
