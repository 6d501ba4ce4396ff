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
from byzjax.data._dataset import DATASETS as DATASETS
from byzjax.data._dataset import NORMALIZATION as NORMALIZATION
from byzjax.data._dataset import Dataset as Dataset
from byzjax.data._dataset import DatasetInfo as DatasetInfo
from byzjax.data._dataset import channel_stats as channel_stats
from byzjax.data._dataset import info as info
from byzjax.data._dataset import load as load
from byzjax.data._dataset import load_train_test as load_train_test
from byzjax.data._dataset import make_synthetic as make_synthetic
from byzjax.data._dataset import names as names
from byzjax.data._dataset import preprocess as preprocess
from byzjax.data._offline import (
    CHECKSUMS,
    DataIntegrityError,
    DatasetNotFoundError,
    cache_dir,
)
from byzjax.data._splits import SPLITS as SPLITS
from byzjax.data._splits import WorkerSplit as WorkerSplit
from byzjax.data._splits import hold_out as hold_out
from byzjax.data._splits import split as split
from byzjax.data._splits import split_dirichlet as split_dirichlet
from byzjax.data._splits import split_gamma_similarity as split_gamma_similarity
from byzjax.data._splits import split_homogeneous as split_homogeneous
from byzjax.data._splits import split_iid as split_iid
from byzjax.data._splits import split_label_sorted as split_label_sorted

__all__ = list(_dataset.__all__) + list(_splits.__all__) + [
    "CHECKSUMS",
    "DataIntegrityError",
    "DatasetNotFoundError",
    "cache_dir",
]
del _offline
