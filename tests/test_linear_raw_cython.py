"""The Cython raw kernels linear_cross_entropy and linear_cross_entropy_csr against their
specification, ``numpy_reference``, run in float64 on the same inputs: rows taken by index in any
order (repeats too), ignored rows (label -1), zero weights, empty and one-row minibatches, one
class, CSR rows that are empty or repeat a column, one and two threads, and non-finite W."""

from __future__ import annotations

import numpy as np
import pytest

from fastsoftmax.backends import numpy_reference

cython_kernels = pytest.importorskip("fastsoftmax.backends.cython_kernels")

# Largest accepted |got - ref| / max(1, |ref|) against the float64 reference. The kernels round
# each logit's dot product (d <= 40 terms of size O(1)) and each dW/db entry's sum over the rows
# (m <= 300 terms of size <= |scale w x| = O(1/m)) in the dtype: at most about (d + m) unit
# roundoffs of O(1) values, plus a few ulp for exp and log. float32 (u = 6e-8): ~3e-5 at worst, so
# 1e-4; float64 (u = 1.1e-16): 1e-12 leaves the same margin and still catches any real slip.
TOLERANCE = {np.float32: 1e-4, np.float64: 1e-12}

# (n, d, k, m): m rows drawn from n. 300 rows give two threads their own parts.
SHAPES = [
    (1, 1, 1, 1),
    (5, 3, 1, 4),
    (1, 4, 3, 1),
    (9, 7, 3, 9),
    (20, 17, 10, 13),
    (40, 33, 5, 61),
    (300, 9, 4, 300),
    (260, 40, 12, 257),
]
DTYPES = [np.float32, np.float64]


def problem(shape, dtype, seed, sparse=False):
    """Random X (CSR: with empty rows and a repeated, unsorted column), rows drawn with repeats,
    some labels -1 and some weights 0."""
    n, d, k, m = shape
    rng = np.random.default_rng([seed, *shape])
    X = rng.standard_normal((n, d))
    if sparse:
        X[rng.random((n, d)) < 0.6] = 0
        X[:: max(1, n // 3)] = 0  # empty rows
    rows = rng.integers(0, n, m) if m > n else rng.permutation(n)[:m]
    W = rng.standard_normal((k, d))
    b = rng.standard_normal(k)
    labels = rng.integers(0, k, n)
    labels[rng.random(n) < 0.2] = -1
    weights = rng.random(n) * 2
    weights[rng.random(n) < 0.2] = 0
    data = {
        "W": W.astype(dtype),
        "b": b.astype(dtype),
        "rows": rows.astype(np.int64),
        "labels": labels.astype(np.int64),
        "weights": weights,
        "scale": 1.0 / max(1, m),
    }
    if sparse:
        data.update(csr(X, dtype, rng))
    else:
        data["X"] = X.astype(dtype)
    return data


def csr(X, dtype, rng):
    """X in CSR form with each row's columns shuffled and its first non-zero split in two equal
    halves under the same column (duplicates add up)."""
    values, columns, indptr = [], [], [0]
    for row in X:
        cols = rng.permutation(np.flatnonzero(row))
        v = row[cols]
        if len(cols):
            cols = np.append(cols, cols[0])
            v = np.append(v, v[0] / 2)
            v[0] /= 2
        values.append(v)
        columns.append(cols)
        indptr.append(indptr[-1] + len(cols))
    return {
        "X_data": np.concatenate(values).astype(dtype),
        "X_indices": np.concatenate(columns).astype(np.int32),
        "X_indptr": np.array(indptr, dtype=np.int64),
    }


def call(module, data, n_threads, dtype=None):
    """Run ``module``'s kernel (dense or CSR, by the inputs), in ``dtype`` (default: theirs)."""
    data = {
        name: value.astype(dtype) if dtype and name in ("X", "X_data", "W", "b") else value
        for name, value in data.items()
    }
    k, d = data["W"].shape
    dW = np.full((k, d), np.nan, dtype=data["W"].dtype)  # every entry must be written
    db = np.full(k, np.nan, dtype=data["W"].dtype)
    common = (
        data["rows"],
        data["W"],
        data["b"],
        data["labels"],
        data["weights"],
        data["scale"],
        dW,
        db,
        n_threads,
    )
    if "X" in data:
        loss = module.linear_cross_entropy(data["X"], *common)
    else:
        loss = module.linear_cross_entropy_csr(
            data["X_data"], data["X_indices"], data["X_indptr"], *common
        )
    return loss, dW, db


def assert_close(got, expected, dtype, what):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    error = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
    assert error.max(initial=0) <= TOLERANCE[dtype], f"{what}: max error {error.max():.3g}"


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{d}k{k}m{m}" for n, d, k, m in SHAPES])
def test_linear_matches_the_reference(shape, sparse, dtype, n_threads):
    data = problem(shape, dtype, seed=0, sparse=sparse)
    loss, dW, db = call(cython_kernels, data, n_threads)
    ref_loss, ref_dW, ref_db = call(numpy_reference, data, 1, dtype=np.float64)
    assert isinstance(loss, float)
    what = f"{shape} {'csr' if sparse else 'dense'} {dtype.__name__} threads={n_threads}"
    assert_close(loss, ref_loss, dtype, f"loss {what}")
    assert_close(dW, ref_dW, dtype, f"dW {what}")
    assert_close(db, ref_db, dtype, f"db {what}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_linear_with_no_rows_is_zero(sparse, dtype):
    data = problem((6, 5, 3, 0), dtype, seed=1, sparse=sparse)
    loss, dW, db = call(cython_kernels, data, 2)
    assert loss == 0.0
    assert not dW.any() and not db.any()


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_linear_is_deterministic_for_a_thread_count(sparse):
    data = problem((300, 9, 4, 300), np.float32, seed=2, sparse=sparse)
    first, second = call(cython_kernels, data, 2), call(cython_kernels, data, 2)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_comparison_fails_on_a_wrong_result():
    """A gradient off by a relative 1e-3 is caught in float32."""
    data = problem((20, 17, 10, 13), np.float32, seed=3)
    _, dW, _ = call(cython_kernels, data, 1)
    _, ref_dW, _ = call(numpy_reference, data, 1, dtype=np.float64)
    with pytest.raises(AssertionError):
        assert_close(dW + 1e-3 * np.abs(dW).max(), ref_dW, np.float32, "dW")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_linear_propagates_non_finite_weights(bad, sparse, dtype, n_threads):
    """A non-finite entry of W or b makes the loss NaN or inf where the reference's is; the
    gradients are NaN exactly where the reference's are, and agree elsewhere."""
    data = problem((300, 9, 4, 300), dtype, seed=4, sparse=sparse)
    data["W"][1, 2] = float(bad)
    data["b"][3] = float(bad)
    loss, dW, db = call(cython_kernels, data, n_threads)
    with np.errstate(all="ignore"):
        ref_loss, ref_dW, ref_db = call(numpy_reference, data, 1, dtype=np.float64)
    assert not np.isfinite(ref_loss)
    for got, expected in ((loss, ref_loss), (dW, ref_dW), (db, ref_db)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
        finite = np.isfinite(expected)
        assert_close(np.asarray(got)[finite], np.asarray(expected)[finite], dtype, bad)
