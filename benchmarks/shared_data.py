"""Where the benchmarks find Fashion-MNIST: where the package looks, else the developers' copy.

The package only looks in ``$FASTSOFTMAX_DATA`` and its data home, and its bench never
downloads. The developers keep the files beside the repository root, in
``../shared/data/fashion-mnist``; benchmark code (never package code) may use that copy, through
this module only. Only :func:`load_fashion_mnist`, for the scripts a user runs by name to
train on Fashion-MNIST, downloads (``fastsoftmax.datasets.fetch_fashion_mnist()``) when no copy
is found; the asv and pytest suites skip instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastsoftmax import datasets
from fastsoftmax.datasets import DATA_ENV_VAR, find_fashion_mnist

SHARED_FASHION_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def fashion_mnist_folder(path: str | os.PathLike | None = None) -> Path | None:
    """``path`` if given, else the folder the package finds, else the developers' copy; None
    when none holds the files."""
    if path is not None:
        return Path(path)
    return find_fashion_mnist() or find_fashion_mnist(SHARED_FASHION_MNIST)


def expose_fashion_mnist() -> Path | None:
    """:func:`fashion_mnist_folder`, made visible to package code that loads Fashion-MNIST
    itself (the bench's epoch): when only the developers' copy holds the files, point
    ``$FASTSOFTMAX_DATA`` at it in this process."""
    folder = fashion_mnist_folder()
    if folder is not None and find_fashion_mnist() is None:
        os.environ[DATA_ENV_VAR] = str(folder)
    return folder


def load_fashion_mnist(path: str | os.PathLike | None = None):
    """Fashion-MNIST from :func:`fashion_mnist_folder`, downloaded into the data home if no
    folder holds it (30 MB, once)."""
    folder = fashion_mnist_folder(path)
    if folder is None:
        return datasets.fetch_fashion_mnist()
    return datasets.load_fashion_mnist(folder)
