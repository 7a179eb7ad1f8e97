"""IDX reading (gzipped and raw, bad files), where the Fashion-MNIST loader looks, and the loader
on the real files."""

import gzip
import urllib.request

import numpy as np
import pytest
from conftest import fashion_mnist_folder
from numpy.testing import assert_array_equal

from fastsoftmax import SoftmaxRegression
from fastsoftmax.datasets import (
    DATA_ENV_VAR,
    FASHION_MNIST_FILES,
    find_fashion_mnist,
    load_fashion_mnist,
    load_idx,
)

FASHION_MNIST = fashion_mnist_folder()
needs_fashion_mnist = pytest.mark.skipif(
    FASHION_MNIST is None,
    reason="Fashion-MNIST files not found (fastsoftmax.datasets.fetch_fashion_mnist() gets them)",
)


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.tobytes()


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize(
    ("dtype", "type_code"), [(np.uint8, 0x08), (np.dtype(">i4"), 0x0C), (np.dtype(">f8"), 0x0E)]
)
def test_load_idx_reads_raw_and_gzipped_files(tmp_path, compressed, dtype, type_code):
    array = np.arange(24).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / ("data-idx3" + (".gz" if compressed else ""))
    (gzip.open if compressed else open)(path, "wb").write(idx_bytes(array, type_code))
    loaded = load_idx(path)
    assert_array_equal(loaded, array)
    assert loaded.dtype.isnative and loaded.shape == (2, 3, 4)


def test_load_idx_refuses_a_bad_magic_number(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x1f\x8b\x08\x00rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_idx(path)


def test_load_idx_refuses_truncated_data(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(idx_bytes(np.arange(6, dtype=np.uint8), 0x08)[:-1])
    with pytest.raises(ValueError, match="header says shape"):
        load_idx(path)


def test_missing_folder_says_where_to_look(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path)


@needs_fashion_mnist
def test_fashion_mnist_loads_scaled_float32():
    X_train, y_train, X_test, y_test = load_fashion_mnist(FASHION_MNIST)
    assert len(y_test) == 10000
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert X_train.dtype == np.float32 and 0 <= X_train.min() and X_train.max() == 1
    assert_array_equal(np.bincount(y_train), np.full(10, 6000))


@needs_fashion_mnist
def test_softmax_regression_learns_fashion_mnist():
    X_train, y_train, X_test, y_test = load_fashion_mnist(FASHION_MNIST)
    model = SoftmaxRegression(random_state=0, max_epochs=3).fit(X_train[:20000], y_train[:20000])
    # 3 epochs on a third of the data: full training reaches about 0.845.
    assert model.score(X_test, y_test) > 0.8


# -- where load_fashion_mnist() looks ----------------------------------------------------------


def write_toy_fashion_mnist(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, shape in zip(FASHION_MNIST_FILES, [(4, 2, 2), (4,), (2, 2, 2), (2,)], strict=True):
        array = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
        with gzip.open(folder / (stem + ".gz"), "wb") as f:
            f.write(idx_bytes(array, 0x08))


@pytest.fixture
def empty_environment(monkeypatch, tmp_path):
    """No $FASTSOFTMAX_DATA, a home folder of our own, and no network."""
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_network(*args, **kwargs):
        raise AssertionError("load_fashion_mnist must never download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


@pytest.mark.parametrize("layout", ["files in $FASTSOFTMAX_DATA", "its fashion-mnist subfolder"])
def test_fashion_mnist_is_found_through_the_environment(
    empty_environment, tmp_path, monkeypatch, layout
):
    folder = tmp_path / "data" if layout.startswith("files") else tmp_path / "data/fashion-mnist"
    write_toy_fashion_mnist(folder)
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "data"))
    assert find_fashion_mnist() == folder
    X_train, y_train, X_test, y_test = load_fashion_mnist()
    assert X_train.shape == (4, 4) and X_test.shape == (2, 4) and X_train.dtype == np.float32
    np.testing.assert_allclose(X_train.max(), 15 / 255, rtol=1e-6)
    assert_array_equal(y_train, [0, 1, 2, 3])
    assert_array_equal(y_test, [0, 1])


def test_fashion_mnist_is_found_in_the_default_data_home(empty_environment, tmp_path):
    write_toy_fashion_mnist(tmp_path / "home" / "fastsoftmax_data" / "fashion-mnist")
    assert find_fashion_mnist() == tmp_path / "home" / "fastsoftmax_data" / "fashion-mnist"
    assert load_fashion_mnist()[0].shape == (4, 4)


def test_without_files_the_error_says_how_to_download(empty_environment, tmp_path):
    # The developers' copy beside the repository (../shared/data) is never looked at.
    assert find_fashion_mnist() is None
    with pytest.raises(FileNotFoundError, match=r"fastsoftmax\.datasets\.fetch_fashion_mnist\(\)"):
        load_fashion_mnist()
    assert not (tmp_path / "home" / "fastsoftmax_data").exists()  # looking creates nothing


def test_an_incomplete_folder_is_not_found(tmp_path):
    write_toy_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_fashion_mnist(tmp_path) is None
