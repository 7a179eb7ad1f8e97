"""IDX reading (gzipped and raw, bad files) and the Fashion-MNIST loader on the real files."""

import gzip

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from fastsoftmax import SoftmaxRegression
from fastsoftmax.datasets import default_fashion_mnist_path, load_fashion_mnist, load_idx

FASHION_MNIST = default_fashion_mnist_path()
needs_fashion_mnist = pytest.mark.skipif(
    FASHION_MNIST is None, reason="Fashion-MNIST files not found (set FASTSOFTMAX_DATA)"
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
