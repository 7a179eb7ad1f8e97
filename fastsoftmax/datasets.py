"""Data loaders: IDX files (MNIST, Fashion-MNIST) and a small bundled data set for demos."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DATA_ENV_VAR = "FASTSOFTMAX_DATA"

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped when its name ends in ``.gz``) into an array.

    Parameters
    ----------
    path : str or path-like
        The file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        In the file's dtype (native byte order) and shape.

    Raises
    ------
    ValueError
        If the header is not an IDX header or the data is shorter or longer than it says.

    Examples
    --------
    >>> import gzip, tempfile, os, numpy as np
    >>> from fastsoftmax.datasets import load_idx
    >>> raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "labels-idx1-ubyte.gz")
    ...     with gzip.open(path, "wb") as f:
    ...         _ = f.write(raw)
    ...     load_idx(path)
    array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes), file holds "
            f"{len(data) - header} bytes of data"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def default_fashion_mnist_path() -> Path | None:
    """The Fashion-MNIST folder: ``$FASTSOFTMAX_DATA`` (or its ``fashion-mnist`` subfolder), or
    ``shared/data/fashion-mnist`` beside a source checkout; None if none holds the files."""
    candidates = []
    if os.environ.get(DATA_ENV_VAR):
        root = Path(os.environ[DATA_ENV_VAR])
        candidates += [root, root / "fashion-mnist"]
    checkout = Path(__file__).resolve().parents[2]
    candidates.append(checkout / "shared" / "data" / "fashion-mnist")
    for folder in candidates:
        if _find(folder, FASHION_MNIST_FILES[0]) is not None:
            return folder
    return None


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(path: str | os.PathLike | None = None, dtype=np.float32):
    """Fashion-MNIST as ``(X_train, y_train, X_test, y_test)``, pixels scaled to [0, 1].

    Parameters
    ----------
    path : str or path-like, optional
        Folder holding the four IDX files (gzipped or raw). Default: the ``FASTSOFTMAX_DATA``
        environment variable, then ``shared/data/fashion-mnist`` beside a source checkout.
    dtype : float32 (default) or float64

    Returns
    -------
    X_train : (60000, 784) array, y_train : (60000,) uint8, X_test : (10000, 784), y_test

    Raises
    ------
    FileNotFoundError
        If no folder holding the files is found; the message says where it looked.
    """
    folder = Path(path) if path is not None else default_fashion_mnist_path()
    if folder is None:
        raise FileNotFoundError(
            "Fashion-MNIST not found: pass path=FOLDER or set FASTSOFTMAX_DATA to a folder "
            f"holding {', '.join(f + '[.gz]' for f in FASHION_MNIST_FILES)}"
        )
    arrays = []
    for stem in FASHION_MNIST_FILES:
        file = _find(folder, stem)
        if file is None:
            raise FileNotFoundError(f"{folder} holds no {stem}[.gz]")
        arrays.append(load_idx(file))
    X_train, y_train, X_test, y_test = arrays
    scale = np.asarray(1 / 255, dtype)
    return (
        X_train.reshape(len(X_train), -1).astype(dtype) * scale,
        y_train,
        X_test.reshape(len(X_test), -1).astype(dtype) * scale,
        y_test,
    )


def load_digits(dtype=np.float32, test_fraction: float = 0.25, random_state: int = 0):
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), no download needed.

    Returns ``(X_train, y_train, X_test, y_test)`` with pixels scaled to [0, 1] and a
    stratified split.

    Examples
    --------
    >>> from fastsoftmax.datasets import load_digits
    >>> X_train, y_train, X_test, y_test = load_digits()
    >>> X_train.shape, X_test.shape, X_train.dtype
    ((1347, 64), (450, 64), dtype('float32'))
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    X, y = sklearn_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, random_state=random_state, stratify=y
    )
    return X_train, y_train, X_test, y_test
