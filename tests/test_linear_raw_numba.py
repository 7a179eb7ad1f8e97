"""The Numba raw kernels linear_cross_entropy and linear_cross_entropy_csr, called directly,
against the NumPy reference (fastsoftmax.backends.numpy_reference), on small CSR cases: an empty
row, duplicate column indices, rows labelled -1, zero weights, rows taken more than once and out
of order, m = 0, one row, k = 1; float32 and float64, 1 and 2 threads.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_backend

from fastsoftmax import backends
from fastsoftmax.backends import numpy_reference

scipy_sparse = pytest.importorskip("scipy.sparse")

# Relative to max(1, |reference|). Both sides round every logit, probability and product to the
# dtype, in different orders (the kernel sums rows in runs and blocks, BLAS in its own order):
# a few units of the dtype's epsilon per term, times the few dozen terms summed here.
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}
# (rows used, classes): none, one, one class, several with repeats.
CASES = [("none", 3), ("one", 3), ("all", 1), ("repeats", 4), ("all", 7)]


@pytest.fixture(scope="module")
def kernels():
    return backends.load(require_backend("numba"))


def csr_problem(dtype, k, rng, n=9, d=6):
    """CSR X with row 2 empty and duplicate indices in row 4 (unsorted); labels with -1; weights
    with zeros."""
    dense = np.where(rng.random((n, d)) < 0.5, rng.standard_normal((n, d)), 0.0)
    dense[2] = 0
    X = scipy_sparse.csr_matrix(dense.astype(dtype))
    X.eliminate_zeros()
    data, indices, indptr = list(X.data), list(X.indices), list(X.indptr)
    lo = indptr[4]  # row 4 gets entries at columns 5, 0, 5 before its own
    data[lo:lo] = [dtype(0.5), dtype(-1.25), dtype(2.0)]
    indices[lo:lo] = [5, 0, 5]
    indptr = indptr[:5] + [p + 3 for p in indptr[5:]]
    W = rng.standard_normal((k, d)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    labels = rng.integers(0, k, n)
    labels[[1, 6]] = -1
    weights = rng.random(n)
    weights[[3, 4]] = 0.0
    return (
        np.array(data, dtype),
        np.array(indices, np.int32),
        np.array(indptr, np.int64),
        W,
        b,
        labels,
        weights,
    )


def pick_rows(which, n, rng):
    if which == "none":
        return np.empty(0, np.int64)
    if which == "one":
        return np.array([4], np.int64)
    if which == "all":
        return np.arange(n, dtype=np.int64)
    return rng.integers(0, n, 2 * n).astype(np.int64)  # repeats, any order


def assert_close(got, expected, dtype, what):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    error = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
    assert np.all(error <= TOLERANCE[dtype]), f"{what}: relative error {error.max():.3g}"


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize(("which", "k"), CASES, ids=[f"{w}-k{k}" for w, k in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_csr_matches_reference(kernels, dtype, which, k, n_threads):
    rng = np.random.default_rng(k)
    data, indices, indptr, W, b, labels, weights = csr_problem(dtype, k, rng)
    rows = pick_rows(which, len(indptr) - 1, rng)
    scale = 0.7
    dW, db = np.full_like(W, np.nan), np.full_like(b, np.nan)  # must be overwritten
    loss = kernels.linear_cross_entropy_csr(
        data, indices, indptr, rows, W, b, labels, weights, scale, dW, db, n_threads
    )
    dW_ref, db_ref = np.empty_like(W), np.empty_like(b)
    loss_ref = numpy_reference.linear_cross_entropy_csr(
        data, indices, indptr, rows, W, b, labels, weights, scale, dW_ref, db_ref, 1
    )
    assert_close(loss, loss_ref, dtype, "loss")
    assert_close(dW, dW_ref, dtype, "dW")
    assert_close(db, db_ref, dtype, "db")
    if which == "none":
        assert loss == 0.0 and not dW.any() and not db.any()


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_dense_matches_reference(kernels, dtype, n_threads):
    """The dense kernel on the same rows (0 to 4 rows past a block of four), with repeats."""
    rng = np.random.default_rng(0)
    data, indices, indptr, W, b, labels, weights = csr_problem(dtype, 5, rng)
    X = scipy_sparse.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, W.shape[1]))
    X = np.ascontiguousarray(X.toarray())
    for m in range(9):
        rows = rng.integers(0, X.shape[0], m).astype(np.int64)
        dW, db = np.full_like(W, np.nan), np.full_like(b, np.nan)
        loss = kernels.linear_cross_entropy(X, rows, W, b, labels, weights, 0.7, dW, db, n_threads)
        dW_ref, db_ref = np.empty_like(W), np.empty_like(b)
        loss_ref = numpy_reference.linear_cross_entropy(
            X, rows, W, b, labels, weights, 0.7, dW_ref, db_ref, 1
        )
        assert_close(loss, loss_ref, dtype, f"loss, m={m}")
        assert_close(dW, dW_ref, dtype, f"dW, m={m}")
        assert_close(db, db_ref, dtype, f"db, m={m}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_nonfinite_weights_give_nan(kernels, dtype):
    rng = np.random.default_rng(1)
    data, indices, indptr, W, b, labels, weights = csr_problem(dtype, 3, rng)
    W[1, 0], b[2] = np.nan, np.inf
    rows = np.arange(len(indptr) - 1, dtype=np.int64)
    dW, db = np.empty_like(W), np.empty_like(b)
    loss = kernels.linear_cross_entropy_csr(
        data, indices, indptr, rows, W, b, labels, weights, 1.0, dW, db, 2
    )
    assert np.isnan(loss)


@pytest.mark.parametrize("form", ["dense", "csr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_two_runs_match_reference_and_repeat(kernels, dtype, form):
    """Work large enough for two runs (MIN_WORK_PER_THREAD): the partials summed in run order
    agree with the reference and are bit-for-bit the same from call to call."""
    rng = np.random.default_rng(2)
    n, d, k = 1000, 3000, 10
    X = scipy_sparse.random(n, d, density=0.1, format="csr", dtype=dtype, random_state=3)
    W = (0.1 * rng.standard_normal((k, d))).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    labels = rng.integers(-1, k, n)
    weights = rng.random(n)
    rows = rng.permutation(n).astype(np.int64)
    if form == "dense":
        data = (np.ascontiguousarray(X.toarray()),)
        kernel, reference = kernels.linear_cross_entropy, numpy_reference.linear_cross_entropy
    else:
        data = (X.data, X.indices.astype(np.int32), X.indptr.astype(np.int64))
        kernel = kernels.linear_cross_entropy_csr
        reference = numpy_reference.linear_cross_entropy_csr
    results = []
    for _ in range(2):
        dW, db = np.empty_like(W), np.empty_like(b)
        loss = kernel(*data, rows, W, b, labels, weights, 1 / n, dW, db, 2)
        results.append((loss, dW, db))
    dW_ref, db_ref = np.empty_like(W), np.empty_like(b)
    loss_ref = reference(*data, rows, W, b, labels, weights, 1 / n, dW_ref, db_ref, 1)
    (loss, dW, db), (loss2, dW2, db2) = results
    # Sums over ~1000 rows: allow for that many roundings of the float32 gradient entries.
    tolerance = {np.float32: 1e-4, np.float64: 1e-12}[dtype]
    assert abs(loss - loss_ref) <= tolerance * abs(loss_ref)
    assert np.abs(dW - dW_ref).max() <= tolerance * max(1.0, np.abs(dW_ref).max())
    assert np.abs(db - db_ref).max() <= tolerance * max(1.0, np.abs(db_ref).max())
    assert loss == loss2 and np.array_equal(dW, dW2) and np.array_equal(db, db2)
