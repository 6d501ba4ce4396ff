"""The tensorflow-datasets path, for users who are online (an optional extra).

``pip install 'byzjax[tfds]'`` (tensorflow-datasets, importlib_resources,
pillow). The import is lazy: nothing here runs unless ``source="tfds"`` is asked
for, or a dataset without an offline source (CIFAR-10/100) is loaded with
``source="auto"``.

Order of attempts (checked with tensorflow-datasets 4.9.10 on the project's
CPU machine):

1. ``tfds.data_source(name, split=..., download=False,
   builder_kwargs={"file_format": "array_record"})``: reads a prepared dataset
   without TensorFlow and never touches the network.
2. If the dataset is not prepared: ``tfds.load(name, split=..., batch_size=-1,
   as_supervised=True)``, which downloads and prepares it. This needs
   TensorFlow (``pip install tensorflow-cpu``) and the network; without a
   network it retries for minutes before failing, which is why
   ``source="auto"`` never takes this path for MNIST / Fashion-MNIST.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["TFDS_NAMES", "load_tfds"]

#: byzjax name -> tfds name.
TFDS_NAMES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
}

_INSTALL = ("pip install 'byzjax[tfds]'  (tensorflow-datasets, importlib_resources, "
            "pillow)")


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(
            f"source='tfds' needs tensorflow-datasets: {_INSTALL}. ({err})"
        ) from None
    return tfds


def _records_to_arrays(source, batch: int = 4096):
    """Reads every record of a tfds data source into ``(images, labels)``."""
    n = len(source)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for start in range(0, n, batch):
        keys = list(range(start, min(n, start + batch)))
        try:
            records = source.__getitems__(keys)
        except (TypeError, AttributeError):  # mocks and old versions: one by one
            records = [source[i] for i in keys]
        images.extend(np.asarray(r["image"], np.uint8) for r in records)
        labels.extend(int(r["label"]) for r in records)
    if not images:
        raise ValueError("tfds returned an empty split")
    return np.stack(images), np.asarray(labels, np.int32)


def load_tfds(name: str, *, split: str, data_dir: str | os.PathLike | None = None
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """Loads ``name`` through tensorflow-datasets.

    Args:
      name: a byzjax name with a tfds counterpart (:data:`TFDS_NAMES`).
      split: ``"train"`` or ``"test"``.
      data_dir: the tfds data directory (tfds's default, ``~/tensorflow_datasets``,
        when None).

    Returns:
      ``(images uint8 [N, H, W, C], labels int32 [N], num_classes)``.

    Raises:
      ImportError: tensorflow-datasets missing, or the dataset is not prepared
        and TensorFlow (needed to prepare it) is missing.
    """
    tfds = _import_tfds()
    tfds_name = TFDS_NAMES[name]
    data_dir = None if data_dir is None else os.fspath(data_dir)
    try:
        source = tfds.data_source(
            tfds_name, split=split, data_dir=data_dir, download=False,
            builder_kwargs={"file_format": "array_record"})
    except (KeyError, FileNotFoundError, ValueError, AssertionError) as err:
        prepared_error = err
    else:
        images, labels = _records_to_arrays(source)
        info = getattr(source, "dataset_info", None)
        num_classes = (int(info.features["label"].num_classes) if info is not None
                       else int(labels.max()) + 1)
        return images, labels, num_classes

    # Not prepared: tfds.load downloads and prepares, which needs TensorFlow.
    try:
        import tensorflow  # noqa: F401, PLC0415
    except ImportError:
        raise ImportError(
            f"tfds: {tfds_name!r} is not prepared in "
            f"{data_dir or '~/tensorflow_datasets'} ({prepared_error}), and preparing "
            f"it needs TensorFlow and the network: `pip install tensorflow-cpu`, then "
            f"`python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{tfds_name}', file_format='array_record')"
            f".download_and_prepare()\"`. For MNIST / Fashion-MNIST use "
            f"source='offline' instead."
        ) from None
    data, info = tfds.load(tfds_name, split=split, data_dir=data_dir, batch_size=-1,
                           as_supervised=True, with_info=True)
    images, labels = tfds.as_numpy(data)
    return (np.asarray(images, np.uint8), np.asarray(labels, np.int32),
            int(info.features["label"].num_classes))
