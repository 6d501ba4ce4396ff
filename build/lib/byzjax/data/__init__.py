"""Datasets and worker splits for the simulator.

Load a dataset by name (never from the network: ``scripts/fetch_data.sh``
fetches the offline copies once, hash-pinned)::

    >>> from byzjax import data
    >>> train, test = data.load_train_test("synthetic")
    >>> split = data.split_homogeneous(train.labels, num_workers=15, seed=0)
    >>> split.indices.shape, split.counts[:3].tolist()
    ((15, 130), [130, 130, 130])
    >>> x = data.preprocess(train.images[split.shard(0)[:25]])  # float32 in [0, 1]

Names: ``mnist``, ``fashion_mnist`` (offline, checksummed, or tfds),
``cifar10``, ``cifar100`` (tfds), ``synthetic`` (generated, only when named),
``digits`` (scikit-learn, optional). Splits: ``split_homogeneous``,
``split_dirichlet``, ``split_label_sorted``, ``split_gamma_similarity``; each
returns a :class:`WorkerSplit` (padded ``indices [n, max_m]`` + ``counts [n]``).
"""

from byzjax.data import _dataset, _offline, _splits
from byzjax.data._dataset import *  # noqa: F403
from byzjax.data._offline import (
    CHECKSUMS,
    DataIntegrityError,
    DatasetNotFoundError,
    cache_dir,
)
from byzjax.data._splits import *  # noqa: F403

__all__ = list(_dataset.__all__) + list(_splits.__all__) + [
    "CHECKSUMS",
    "DataIntegrityError",
    "DatasetNotFoundError",
    "cache_dir",
]
del _offline
