"""Splitting a training set over workers.

Every split returns a :class:`WorkerSplit`: a padded index array plus per-worker
counts, so the simulator samples batches on the device with static shapes
(worker ``i`` draws ``indices[i, randint(0, counts[i])]``). Splits run on the
host in NumPy, once, before anything is traced; they are deterministic per
``seed`` (``numpy.random.default_rng(seed)``).

**Byzantine workers' data** (``num_honest=k``): the data is split among the
first ``k`` workers only (the honest ones, rows ``0 .. k-1`` by the simulator's
convention), so honest workers get all the data there is; Byzantine worker
``j >= k`` then gets a *copy* of honest shard ``(j - k) mod k``. Their data
only matters for data-level attacks (label flip), which then flip labels of
samples an honest worker also holds. With ``num_honest=None`` (default, as in
Fabris 2023: "MNIST is split into 15 chunks" for 10 honest + 5 Byzantine workers)
every worker gets its own disjoint shard.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

from byzjax._registry import normalize_name

__all__ = [
    "WorkerSplit",
    "hold_out",
    "split_homogeneous",
    "split_iid",
    "split_dirichlet",
    "split_label_sorted",
    "split_gamma_similarity",
    "SPLITS",
    "split",
]

PAD = -1


class WorkerSplit(NamedTuple):
    """Sample indices per worker, padded to a rectangle.

    Attributes:
      indices: int32 ``[num_workers, max_m]``; row ``i`` holds worker ``i``'s
        indices into the dataset in its first ``counts[i]`` entries, then
        ``-1`` padding (never a valid index: gather only below ``counts[i]``).
      counts: int32 ``[num_workers]``; the number of samples of each worker.
    """

    indices: np.ndarray
    counts: np.ndarray

    @property
    def num_workers(self) -> int:
        """The number of workers (rows)."""
        return int(self.indices.shape[0])

    def shard(self, worker: int) -> np.ndarray:
        """The valid indices of ``worker`` (``indices[worker, :counts[worker]]``)."""
        return self.indices[worker, : self.counts[worker]]


def _check(labels, num_workers: int, num_honest: int | None) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    if not isinstance(num_workers, (int, np.integer)) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    k = int(num_workers) if num_honest is None else int(num_honest)
    if not 1 <= k <= num_workers:
        raise ValueError(
            f"num_honest must be in [1, num_workers={num_workers}], got {num_honest}"
        )
    return labels.astype(np.int64), k


def _pack(shards: Sequence[np.ndarray], num_workers: int) -> WorkerSplit:
    """Pads shards into a WorkerSplit; workers past ``len(shards)`` copy honest ones."""
    k = len(shards)
    shards = list(shards) + [shards[(j - k) % k] for j in range(k, num_workers)]
    counts = np.array([len(s) for s in shards], np.int32)
    width = int(counts.max()) if len(counts) else 0
    indices = np.full((num_workers, width), PAD, np.int32)
    for i, s in enumerate(shards):
        indices[i, : len(s)] = s
    return WorkerSplit(indices, counts)


def split_homogeneous(labels, *, num_workers: int, seed: int,
                      per_class: int | None = None,
                      num_honest: int | None = None) -> WorkerSplit:
    """Every worker gets the same number of samples of every class (Fabris 2023).

    For each class ``c`` (in sorted order) its indices are shuffled and the
    first ``per_class * k`` dealt out, ``per_class`` to each of the ``k``
    workers; each worker's shard is then shuffled. Shards are disjoint; the
    leftover samples are unused. MNIST over 15 workers gives 361 per class,
    3610 per worker (Fabris's numbers); CIFAR-10 gives 333 (Fabris used
    ``per_class=330``).

    Args:
      labels: int ``[N]`` class labels.
      num_workers: number of workers ``n`` (static).
      seed: NumPy seed; the same seed gives the same split.
      per_class: samples of each class per worker; default the largest equal
        count, ``min_c floor(count_c / k)``.
      num_honest: split among the first ``k`` workers only; the others copy
        honest shards (module docstring). Default: all workers.

    Returns:
      :class:`WorkerSplit` with every count ``per_class * num_classes``.

    Raises:
      ValueError: if some class has fewer than ``per_class * k`` samples.

    Example:
      >>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
      >>> s = split_homogeneous(labels, num_workers=2, seed=0)
      >>> s.counts.tolist(), sorted(labels[s.shard(0)].tolist())
      ([4, 4], [0, 0, 1, 1])
    """
    labels, k = _check(labels, num_workers, num_honest)
    classes, class_counts = np.unique(labels, return_counts=True)
    largest = int(class_counts.min() // k)
    if per_class is None:
        per_class = largest
    worst = classes[np.argmin(class_counts)]
    if largest < 1:
        raise ValueError(
            f"split_homogeneous: class {worst} has only {class_counts.min()} samples, "
            f"fewer than the {k} workers; use fewer workers or another split."
        )
    if per_class < 1 or per_class > largest:
        raise ValueError(
            f"split_homogeneous: per_class={per_class} impossible for {k} workers: "
            f"class {worst} has {class_counts.min()} samples, so at most {largest} "
            f"per class per worker. Use 1 <= per_class <= {largest} or fewer workers."
        )
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))[: per_class * k]
        for i, chunk in enumerate(idx.reshape(k, per_class)):
            parts[i].append(chunk)
    shards = [rng.permutation(np.concatenate(p)) for p in parts]
    return _pack(shards, num_workers)


def split_iid(labels, *, num_workers: int, seed: int,
              num_honest: int | None = None) -> WorkerSplit:
    """ByzFL's ``iid``: shuffle every index, cut into ``k`` near-equal shards.

    All ``N`` samples are used; shard sizes differ by at most one
    (``numpy.array_split``: the first ``N mod k`` shards get one more). Unlike
    :func:`split_homogeneous`, class counts per worker are not equalised.

    Args:
      labels: int ``[N]`` class labels (only their number is read).
      num_workers: number of workers (static).
      seed: NumPy seed.
      num_honest: split among the first ``k`` workers only (module docstring).

    Returns:
      :class:`WorkerSplit`.

    Example:
      >>> split_iid(np.zeros(7, int), num_workers=3, seed=0).counts.tolist()
      [3, 2, 2]
    """
    labels, k = _check(labels, num_workers, num_honest)
    perm = np.random.default_rng(seed).permutation(labels.size)
    return _pack(np.array_split(perm, k), num_workers)


def _check_within_class(within_class: str) -> None:
    if within_class not in ("shuffled", "index"):
        raise ValueError(f"within_class must be 'shuffled' or 'index', got "
                         f"{within_class!r}")


def split_dirichlet(labels, *, num_workers: int, alpha: float, seed: int,
                    min_size: int = 1, max_tries: int = 1000,
                    num_honest: int | None = None) -> WorkerSplit:
    """Heterogeneous split: class proportions over workers ~ ``Dirichlet(alpha 1_k)``.

    For each class ``c`` its shuffled indices are cut at
    ``floor(cumsum(p_c) * count_c)`` with ``p_c ~ Dirichlet(alpha * 1_k)``, so
    worker datasets differ in size and label mix; every sample goes to exactly
    one worker. Small ``alpha`` (Fabris: 0.1) is very skewed; large
    ``alpha`` approaches a uniform split. A worker with fewer than
    ``min_size`` samples cannot train, so the whole draw is repeated (the
    generator continues, so the result is still a function of ``seed``) until
    every worker has at least ``min_size``.

    Reference: Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification", 2019
    (https://arxiv.org/abs/1909.06335), in its per-class form (as Fabris 2023 uses it).

    Args:
      labels: int ``[N]`` class labels.
      num_workers: number of workers (static).
      alpha: Dirichlet concentration (> 0), a Python float (host-side).
      seed: NumPy seed.
      min_size: smallest acceptable worker dataset (>= 1).
      max_tries: draws before giving up with an error.
      num_honest: split among the first ``k`` workers only (module docstring).

    Returns:
      :class:`WorkerSplit` with ragged counts (``-1`` padding).

    Example:
      >>> labels = np.repeat(np.arange(3), 20)
      >>> s = split_dirichlet(labels, num_workers=4, alpha=0.5, seed=0)
      >>> int(s.counts.sum()), bool((s.counts >= 1).all())
      (60, True)
    """
    labels, k = _check(labels, num_workers, num_honest)
    alpha = float(alpha)
    if not alpha > 0:
        raise ValueError(f"split_dirichlet: alpha must be > 0, got {alpha}")
    if min_size < 1 or min_size * k > labels.size:
        raise ValueError(
            f"split_dirichlet: min_size must be in [1, N/k = {labels.size // k}], "
            f"got {min_size}"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(k, alpha))
            cuts = (np.cumsum(p)[:-1] * idx.size).astype(np.int64)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        shards = [rng.permutation(np.concatenate(p)) for p in parts]
        if min(len(s) for s in shards) >= min_size:
            return _pack(shards, num_workers)
    raise ValueError(
        f"split_dirichlet: no draw in {max_tries} gave every one of {k} workers at "
        f"least {min_size} samples (alpha={alpha}, N={labels.size}). Increase alpha, "
        f"lower min_size, use fewer workers, or raise max_tries."
    )


def split_label_sorted(labels, *, num_workers: int, seed: int,
                       num_honest: int | None = None,
                       within_class: str = "shuffled") -> WorkerSplit:
    """Extreme heterogeneity (ByzFL's ``extreme_niid``): sort by label, deal
    contiguous shards.

    The indices are sorted by label and cut into ``k`` contiguous shards whose
    sizes differ by at most one (``numpy.array_split``): each worker sees one
    or two classes. Inside a class the order is shuffled (``seed``), or by
    dataset index with ``within_class="index"``, as ByzFL sorts its
    ``(label, index)`` pairs: the same class counts per worker either way,
    only which examples of a class land on which worker differ.

    Args:
      labels: int ``[N]`` class labels.
      num_workers: number of workers (static).
      seed: NumPy seed (which samples of a class land on which worker).
      num_honest: split among the first ``k`` workers only (module docstring).
      within_class: ``"shuffled"`` (default) or ``"index"`` (ByzFL).

    Returns:
      :class:`WorkerSplit`.

    Example:
      >>> s = split_label_sorted(np.array([1, 0, 1, 0, 2, 2]), num_workers=3, seed=0)
      >>> [sorted(np.array([1, 0, 1, 0, 2, 2])[s.shard(i)].tolist()) for i in range(3)]
      [[0, 0], [1, 1], [2, 2]]
    """
    labels, k = _check(labels, num_workers, num_honest)
    _check_within_class(within_class)
    if within_class == "index":
        order = np.argsort(labels, kind="stable")
    else:
        perm = np.random.default_rng(seed).permutation(labels.size)
        order = perm[np.argsort(labels[perm], kind="stable")]
    return _pack(np.array_split(order, k), num_workers)


def split_gamma_similarity(labels, *, num_workers: int, gamma: float, seed: int,
                           num_honest: int | None = None,
                           within_class: str = "shuffled") -> WorkerSplit:
    """ByzFL's ``gamma_similarity_niid``: a fraction ``gamma`` dealt i.i.d., the
    rest sorted.

    A random ``floor(gamma * N)`` samples are split uniformly at random
    into ``k`` near-equal shards; the others are label-sorted and dealt as
    :func:`split_label_sorted` (``within_class`` as there; ByzFL: ``"index"``);
    worker ``i`` gets both its parts. ``gamma = 1`` is an i.i.d. split,
    ``gamma = 0`` the extreme one.

    Args:
      labels: int ``[N]`` class labels.
      num_workers: number of workers (static).
      gamma: similarity in ``[0, 1]`` (host-side Python float).
      seed: NumPy seed.
      num_honest: split among the first ``k`` workers only (module docstring).
      within_class: ``"shuffled"`` (default) or ``"index"`` (ByzFL).

    Returns:
      :class:`WorkerSplit`.

    Example:
      >>> s = split_gamma_similarity(np.arange(10) % 2, num_workers=2, gamma=1.0,
      ...                            seed=0)
      >>> s.counts.tolist()
      [5, 5]
    """
    labels, k = _check(labels, num_workers, num_honest)
    gamma = float(gamma)
    _check_within_class(within_class)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(
            f"split_gamma_similarity: gamma must be in [0, 1], got {gamma}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(labels.size)
    cut = int(np.floor(gamma * labels.size))
    iid, rest = perm[:cut], perm[cut:]
    if within_class == "index":
        rest = np.sort(rest)
    rest = rest[np.argsort(labels[rest], kind="stable")]
    shards = [rng.permutation(np.concatenate([a, b]))
              for a, b in zip(np.array_split(iid, k), np.array_split(rest, k))]
    return _pack(shards, num_workers)


#: Split name -> function (all take ``labels, *, num_workers, seed, ...``).
SPLITS: dict[str, Callable[..., WorkerSplit]] = {
    "homogeneous": split_homogeneous,
    "iid": split_iid,
    "dirichlet": split_dirichlet,
    "label_sorted": split_label_sorted,
    "gamma_similarity": split_gamma_similarity,
}


#: Stream of ``numpy.random.default_rng([seed, stream])`` that :func:`hold_out`
#: draws from, apart from the splits' own ``default_rng(seed)``.
_HOLD_OUT_STREAM = 1


def hold_out(num_examples: int, size: int, *, seed: int) -> np.ndarray:
    """``size`` distinct indices of ``range(num_examples)``, uniformly at random.

    The server's root dataset (FLTrust: "the service provider ... collects a
    small clean training dataset"; Cao et al. sample it uniformly from the
    training data): deterministic per ``seed``
    (``numpy.random.default_rng([seed, 1])``, a stream apart from the splits'
    own), returned sorted. Pass them to :func:`split` as ``exclude`` so that
    no worker holds them.

    Args:
      num_examples: the training set's size ``N``.
      size: how many to draw, ``0 <= size <= N``.
      seed: NumPy seed (the simulator's ``split_seed``).

    Returns:
      int64 ``[size]``, sorted.

    Raises:
      ValueError: ``size`` out of ``[0, N]``.

    Example:
      >>> hold_out(10, 3, seed=0).tolist()
      [4, 8, 9]
    """
    num_examples, size = int(num_examples), int(size)
    if not 0 <= size <= num_examples:
        raise ValueError(f"hold_out: size must be in [0, {num_examples}] (the "
                         f"training set's size), got {size}")
    rng = np.random.default_rng([int(seed), _HOLD_OUT_STREAM])
    return np.sort(rng.choice(num_examples, size=size, replace=False))


def split(name: str, labels, *, num_workers: int, seed: int, exclude=None,
          **options) -> WorkerSplit:
    """Dispatches to the split called ``name`` (a key of :data:`SPLITS`).

    ``exclude`` (optional indices, e.g. :func:`hold_out`'s) are given to no
    worker: the split runs on the other examples, in their order, and its
    indices are mapped back to positions in ``labels``. Without it (or with
    no index in it) the split is the plain one, index for index.

    Example:
      >>> split("homogeneous", np.arange(6) % 2, num_workers=3, seed=0).counts.tolist()
      [2, 2, 2]
      >>> s = split("homogeneous", np.arange(8) % 2, num_workers=3, seed=0,
      ...           exclude=[0, 1])
      >>> sorted(np.concatenate([s.shard(i) for i in range(3)]).tolist())
      [2, 3, 4, 5, 6, 7]
    """
    key = normalize_name(name)
    if key not in SPLITS:
        raise ValueError(f"unknown split {name!r}; known: {', '.join(sorted(SPLITS))}")
    fn = SPLITS[key]
    labels = np.asarray(labels)
    drop = np.zeros(labels.shape[0], bool)
    if exclude is not None:
        drop[np.asarray(exclude, np.int64)] = True
    if not drop.any():
        return fn(labels, num_workers=num_workers, seed=seed, **options)
    keep = np.flatnonzero(~drop)
    inner = fn(labels[keep], num_workers=num_workers, seed=seed, **options)
    valid = inner.indices != PAD
    indices = np.where(valid, keep[np.where(valid, inner.indices, 0)], PAD)
    return WorkerSplit(indices.astype(np.int32), inner.counts)
