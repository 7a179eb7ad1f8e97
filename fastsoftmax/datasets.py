"""Data sets: MNIST and Fashion-MNIST (downloaded once, checked, cached), and a bundled one.

``fetch_fashion_mnist()`` and ``fetch_mnist()`` download the four original gzipped IDX files
of their data set on first use into ``<data home>/<data set>/`` (see :func:`get_data_home`),
check each file's SHA-256 before it is parsed or given its final name, and read the cached
files offline afterwards. ``load_fashion_mnist()`` reads files already on disk and never
downloads; ``load_digits()`` needs no file at all.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import secrets
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

DATA_ENV_VAR = "FASTSOFTMAX_DATA"
DEFAULT_DATA_HOME = "~/fastsoftmax_data"
DOWNLOAD_TIMEOUT = 60.0
"""Seconds a download may wait for the server (to connect, or for the next bytes)."""

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
"""The stems of the four IDX files (MNIST's are the same), in the order the loaders return."""


class DownloadError(OSError):
    """A data file could not be downloaded, or its bytes are not the expected ones."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name (on the server and in the cache) and its SHA-256."""

    name: str
    sha256: str
    size: int | None = None
    """Its length in bytes when known: a shorter download is reported as truncated."""


@dataclass(frozen=True)
class _Remote:
    """A data set to fetch: ``base_url + file.name`` for each file, cached in ``folder``."""

    folder: str  # subfolder of the data home
    base_url: str
    files: tuple[RemoteFile, ...]  # in the order of FASHION_MNIST_FILES
    title: str  # for messages
    fetcher: str  # the public function that downloads it, for messages


# The official location (zalandoresearch/fashion-mnist README); sizes and SHA-256 as recorded by
# TensorFlow Datasets, tensorflow_datasets/url_checksums/fashion_mnist.txt, and computed from
# the official files.
_FASHION_MNIST = _Remote(
    folder="fashion-mnist",
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    files=(
        RemoteFile(
            "train-images-idx3-ubyte.gz",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            26421880,
        ),
        RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            29515,
        ),
        RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            4422102,
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            5148,
        ),
    ),
    title="Fashion-MNIST",
    fetcher="fetch_fashion_mnist",
)

# URL, sizes and SHA-256 from TensorFlow Datasets, tensorflow_datasets/url_checksums/mnist.txt
# (github.com/tensorflow/datasets, commit 31f1255e57e519a6c004f0b097a2f5cfcf0dde7d): the
# original files of yann.lecun.com/exdb/mnist, mirrored by the CVDF on Google Cloud Storage.
_MNIST = _Remote(
    folder="mnist",
    base_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
    files=(
        RemoteFile(
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            9912422,
        ),
        RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            28881,
        ),
        RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            1648877,
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            4542,
        ),
    ),
    title="MNIST",
    fetcher="fetch_mnist",
)


# -- IDX files ---------------------------------------------------------------------------------


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
    return _parse_idx(data, path)


def _parse_idx(data: bytes, source: str | os.PathLike) -> np.ndarray:
    """The array held by the (uncompressed) bytes of an IDX file; ``source`` names it."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{source} is not an IDX file (bad magic number {data[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: the IDX header is cut short ({len(data)} bytes)")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{source}: header says shape {shape} ({expected} bytes), file holds "
            f"{len(data) - header} bytes of data"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _images_and_labels(arrays: list[np.ndarray], dtype: DTypeLike) -> tuple[np.ndarray, ...]:
    """``(X_train, y_train, X_test, y_test)`` from the four IDX arrays: flat rows in [0, 1]."""
    X_train, y_train, X_test, y_test = arrays
    scale = np.asarray(1 / 255, dtype)
    return (
        X_train.reshape(len(X_train), -1).astype(dtype) * scale,
        y_train,
        X_test.reshape(len(X_test), -1).astype(dtype) * scale,
        y_test,
    )


# -- the data home and downloads ---------------------------------------------------------------


def _data_home_path(data_home: str | os.PathLike | None) -> Path:
    if data_home is None:
        data_home = os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_HOME
    return Path(data_home).expanduser()


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The folder where downloaded data sets are cached, created if missing.

    Each data set has its own subfolder (``fashion-mnist``, ``mnist``) holding its original
    files under their original names.

    Parameters
    ----------
    data_home : str or path-like, optional
        The folder to use. Default: the ``FASTSOFTMAX_DATA`` environment variable when set,
        else ``~/fastsoftmax_data``.

    Returns
    -------
    pathlib.Path
        The folder (``~`` expanded), which exists.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from fastsoftmax.datasets import get_data_home
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     home = get_data_home(Path(tmp) / "cache")
    ...     home.name, home.is_dir()
    ('cache', True)
    """
    home = _data_home_path(data_home)
    home.mkdir(parents=True, exist_ok=True)
    return home


def _fetch_files(
    spec: _Remote, data_home: str | os.PathLike | None, download_if_missing: bool
) -> list[bytes]:
    """The bytes of each file of ``spec``, checked, downloading the files not yet cached.

    Every file is checked against its SHA-256 each time it is read (hashing the 30 MB of
    Fashion-MNIST takes about 50 ms, a tenth of decompressing it), so a file damaged in the
    cache is noticed; it is removed and the error says so: the next call downloads it again.
    Nothing is parsed before the check.
    """
    folder = get_data_home(data_home) / spec.folder
    missing = [file for file in spec.files if not (folder / file.name).is_file()]
    if missing and not download_if_missing:
        raise FileNotFoundError(
            f"{spec.title} is not in {folder} (missing {', '.join(f.name for f in missing)}): "
            f"call fastsoftmax.datasets.{spec.fetcher}() to download it, or place the files "
            f"from {spec.base_url} in {folder}"
        )
    if missing:
        folder.mkdir(exist_ok=True)
        for file in missing:
            _download(spec, file, folder)
    contents = []
    for file in spec.files:
        path = folder / file.name
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != file.sha256:
            try:
                path.unlink()
                removed = "removed it; the next call downloads it again"
            except OSError as exc:
                removed = f"could not remove it ({exc}): remove it to download it again"
            raise DownloadError(
                f"{path} is damaged: {len(data)} bytes of SHA-256 {digest}, expected "
                f"{file.sha256} (downloaded from {spec.base_url + file.name}); {removed}"
            )
        contents.append(data)
    return contents


def _download(spec: _Remote, file: RemoteFile, folder: Path) -> None:
    """Download one file into ``folder`` under a temporary name, check it, then rename it.

    The final name only ever holds a complete file of the right SHA-256; on any failure the
    temporary file is removed and :class:`DownloadError` names the file and its URL.
    """
    url = spec.base_url + file.name
    target = folder / file.name
    temporary = folder / f".{file.name}.{os.getpid()}-{secrets.token_hex(4)}.part"
    size = ""
    if file.size:
        size = f" ({file.size / 1e6:.1f} MB)" if file.size >= 1e5 else f" ({file.size // 1000} kB)"
    print(f"fastsoftmax: downloading {url}{size} to {folder}", file=sys.stderr, flush=True)
    digest, received = hashlib.sha256(), 0
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with (
            os.fdopen(descriptor, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response,
        ):
            announced = response.headers.get("Content-Length")
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if announced is not None and received != int(announced):
            raise DownloadError(
                f"download of {file.name} from {url} is truncated: received {received} of the "
                f"{announced} bytes announced"
            )
        if file.size is not None and received != file.size:
            raise DownloadError(
                f"download of {file.name} from {url} holds {received} bytes, expected "
                f"{file.size}: not the official file (discarded)"
            )
        if digest.hexdigest() != file.sha256:
            raise DownloadError(
                f"download of {file.name} from {url} has SHA-256 {digest.hexdigest()}, expected "
                f"{file.sha256}: not the official file (discarded)"
            )
        os.replace(temporary, target)
    except DownloadError:
        raise
    except (OSError, http.client.HTTPException) as exc:  # HTTP errors, timeouts, a full disk
        raise DownloadError(f"could not download {file.name} from {url}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)  # nothing left after the rename


def _fetch(
    spec: _Remote, data_home: str | os.PathLike | None, download_if_missing: bool, dtype: DTypeLike
) -> tuple[np.ndarray, ...]:
    contents = _fetch_files(spec, data_home, download_if_missing)
    arrays = [
        _parse_idx(gzip.decompress(data), f"{spec.folder}/{file.name}")
        for file, data in zip(spec.files, contents, strict=True)
    ]
    return _images_and_labels(arrays, dtype)


def fetch_fashion_mnist(
    data_home: str | os.PathLike | None = None,
    *,
    download_if_missing: bool = True,
    dtype: DTypeLike = np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST, downloaded on first use, as ``(X_train, y_train, X_test, y_test)``.

    The four original files (30 MB) come from the official location,
    http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, into
    ``get_data_home(data_home) / "fashion-mnist"``. Each download goes to a temporary name and
    gets its final name only once its SHA-256 is the official one; the cached files are checked
    again at every call, before they are parsed. Once cached, no network is needed. Each
    download prints one line to stderr; reading the cache prints nothing.

    Parameters
    ----------
    data_home : str or path-like, optional
        The cache folder (see :func:`get_data_home`). Default: ``$FASTSOFTMAX_DATA``, else
        ``~/fastsoftmax_data``.
    download_if_missing : bool, default True
        If False, raise :class:`FileNotFoundError` rather than download missing files.
    dtype : float32 (default) or float64
        The dtype of ``X_train`` and ``X_test``.

    Returns
    -------
    X_train : (60000, 784) array
        Pixels scaled to [0, 1].
    y_train : (60000,) uint8 array
        Labels 0 to 9 (T-shirt/top, trouser, pullover, dress, coat, sandal, shirt, sneaker,
        bag, ankle boot).
    X_test : (10000, 784) array
    y_test : (10000,) uint8 array

    Raises
    ------
    FileNotFoundError
        If files are missing and ``download_if_missing`` is False; the message says how to
        get them.
    DownloadError
        (an :class:`OSError`) If a download fails (HTTP error, timeout, truncated) or a file's
        SHA-256 is not the official one; the message names the file and its URL. A damaged
        cached file is removed, so the next call downloads it again.

    Examples
    --------
    >>> from fastsoftmax.datasets import fetch_fashion_mnist
    >>> X_train, y_train, X_test, y_test = fetch_fashion_mnist()  # doctest: +SKIP
    >>> X_train.shape, X_train.dtype, X_test.shape  # doctest: +SKIP
    ((60000, 784), dtype('float32'), (10000, 784))
    """
    return _fetch(_FASHION_MNIST, data_home, download_if_missing, dtype)


def fetch_mnist(
    data_home: str | os.PathLike | None = None,
    *,
    download_if_missing: bool = True,
    dtype: DTypeLike = np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST handwritten digits, downloaded on first use, as ``(X_train, y_train, X_test, y_test)``.

    Like :func:`fetch_fashion_mnist`: the four original files (11 MB) come from the CVDF mirror
    that TensorFlow Datasets uses, https://storage.googleapis.com/cvdf-datasets/mnist/, into
    ``get_data_home(data_home) / "mnist"``, checked against their SHA-256.

    Parameters
    ----------
    data_home : str or path-like, optional
        The cache folder (see :func:`get_data_home`). Default: ``$FASTSOFTMAX_DATA``, else
        ``~/fastsoftmax_data``.
    download_if_missing : bool, default True
        If False, raise :class:`FileNotFoundError` rather than download missing files.
    dtype : float32 (default) or float64
        The dtype of ``X_train`` and ``X_test``.

    Returns
    -------
    X_train : (60000, 784) array
        Pixels scaled to [0, 1].
    y_train : (60000,) uint8 array
        Digits 0 to 9.
    X_test : (10000, 784) array
    y_test : (10000,) uint8 array

    Raises
    ------
    FileNotFoundError
        If files are missing and ``download_if_missing`` is False.
    DownloadError
        (an :class:`OSError`) If a download fails or a file's SHA-256 is not the expected one.

    Examples
    --------
    >>> from fastsoftmax.datasets import fetch_mnist
    >>> X_train, y_train, X_test, y_test = fetch_mnist()  # doctest: +SKIP
    >>> X_train.shape, y_train[:5]  # doctest: +SKIP
    ((60000, 784), array([5, 0, 4, 1, 9], dtype=uint8))
    """
    return _fetch(_MNIST, data_home, download_if_missing, dtype)


# -- files already on disk ---------------------------------------------------------------------


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion_mnist_candidates() -> list[Path]:
    """Where ``load_fashion_mnist()`` looks, in order (none outside the environment's say)."""
    candidates = []
    if os.environ.get(DATA_ENV_VAR):
        root = Path(os.environ[DATA_ENV_VAR]).expanduser()
        candidates.append(root)  # the files themselves, as before the data home existed
    candidates.append(_data_home_path(None) / _FASHION_MNIST.folder)
    return candidates


def find_fashion_mnist(path: str | os.PathLike | None = None) -> Path | None:
    """The folder holding the Fashion-MNIST files, or None; never downloads.

    Parameters
    ----------
    path : str or path-like, optional
        A folder to check. Default: look in ``$FASTSOFTMAX_DATA`` (the files themselves),
        then in the data home's ``fashion-mnist`` subfolder (``$FASTSOFTMAX_DATA/fashion-mnist``
        or ``~/fastsoftmax_data/fashion-mnist``, where :func:`fetch_fashion_mnist` puts them).

    Returns
    -------
    pathlib.Path or None
        The first folder holding all four IDX files (gzipped or raw).

    Examples
    --------
    >>> import tempfile
    >>> from fastsoftmax.datasets import find_fashion_mnist
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     print(find_fashion_mnist(tmp))
    None
    """
    candidates = [Path(path)] if path is not None else _fashion_mnist_candidates()
    for folder in candidates:
        if all(_find(folder, stem) is not None for stem in FASHION_MNIST_FILES):
            return folder
    return None


def load_fashion_mnist(
    path: str | os.PathLike | None = None, dtype: DTypeLike = np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST from files on disk as ``(X_train, y_train, X_test, y_test)``; no download.

    Parameters
    ----------
    path : str or path-like, optional
        Folder holding the four IDX files (gzipped or raw). Default: the first folder
        :func:`find_fashion_mnist` finds (``$FASTSOFTMAX_DATA``, then the data home, where
        :func:`fetch_fashion_mnist` downloads them).
    dtype : float32 (default) or float64

    Returns
    -------
    X_train : (60000, 784) array, y_train : (60000,) uint8, X_test : (10000, 784), y_test
        Pixels scaled to [0, 1].

    Raises
    ------
    FileNotFoundError
        If the files are not found; the message says where it looked and how to get them.

    See Also
    --------
    fetch_fashion_mnist : the same, downloading the files on first use.

    Examples
    --------
    >>> from fastsoftmax.datasets import load_fashion_mnist
    >>> X_train, y_train, X_test, y_test = load_fashion_mnist()  # doctest: +SKIP
    """
    folder = Path(path) if path is not None else find_fashion_mnist()
    if folder is None:
        looked = ", ".join(str(candidate) for candidate in _fashion_mnist_candidates())
        raise FileNotFoundError(
            f"Fashion-MNIST not found (looked in {looked}): call "
            "fastsoftmax.datasets.fetch_fashion_mnist() (or `fastsoftmax train --data "
            "fashion-mnist`) to download it, pass path=FOLDER, or set FASTSOFTMAX_DATA to a "
            f"folder holding {', '.join(f + '[.gz]' for f in FASHION_MNIST_FILES)}"
        )
    arrays = []
    for stem in FASHION_MNIST_FILES:
        file = _find(folder, stem)
        if file is None:
            raise FileNotFoundError(f"{folder} holds no {stem}[.gz]")
        arrays.append(load_idx(file))
    return _images_and_labels(arrays, dtype)


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
