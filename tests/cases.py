"""The awkward inputs every row-wise kernel must survive, and the rule for comparing results.

One generator, :func:`edge_cases`, yields ``(case_name, array, axis)`` for float32 and float64
(the idea of bottleneck's ``bottleneck/tests/util.py``): random, huge and tiny values, rows mixing
+-inf and NaN, one class, one row, empty shapes, Fortran order, strided slices, read-only and
byte-swapped arrays, 1-D and 3-D arrays reduced over several axes. :func:`assert_agrees`
compares a result with a float64 reference and says what differed, where and by how much;
:func:`assert_close` applies the same tolerance to other comparisons.
"""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose, assert_array_equal

from fastsoftmax._registry import KERNELS

DTYPES = (np.float32, np.float64)

#: The registered kernels taking one array ``x`` along an axis (softmax, log_softmax, ...): every
#: edge case of :func:`edge_cases` applies to them as it is.
UNARY_ROW_KERNELS = tuple(
    spec.public for spec in KERNELS.values() if spec.params == ("x", "out", "n_threads")
)

# Largest accepted |got - ref| / max(1, |ref|) against a reference computed in float64.
# float64: the kernels' exp and log are accurate to a few ulp (eps 2.2e-16) and sums are
# accumulated in float64, so 1e-12 leaves a margin of thousands of ulp yet catches any real slip.
# float32: the unit roundoff is 6e-8; exp and log cost a few ulp each, x - max, the final scaling
# and the rounding of the output one more each (sums are accumulated in float64, so they add
# almost nothing): a handful of float32 ulp, i.e. ~1e-6, and 1e-5 is that with a margin.
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

_INF, _NAN = np.inf, np.nan
# Rows of width 4 mixing non-finite values, each with the behaviour it exercises.
NON_FINITE_ROWS = [
    [0.5, -1.0, 2.0, 3.0],  # finite
    [0.5, _NAN, 2.0, 3.0],  # NaN -> NaN
    [0.5, _INF, 2.0, 3.0],  # +inf -> NaN (logsumexp +inf)
    [_INF, _INF, 1.0, 1.0],  # several +inf
    [_INF, -_INF, 1.0, 1.0],  # +inf and -inf
    [_NAN, _INF, 1.0, 1.0],  # NaN beats +inf
    [_INF, _NAN, 1.0, 1.0],  # NaN after +inf
    [-_INF, -_INF, -_INF, -_INF],  # all -inf -> NaN (logsumexp -inf)
    [-_INF, 1.0, -_INF, 2.0],  # some -inf -> probability 0 there
    [-_INF, -_INF, -_INF, 7.0],  # one finite entry -> probability 1
    [_NAN, _NAN, _NAN, _NAN],  # all NaN
    [-_INF, _NAN, -_INF, -_INF],  # NaN among -inf
]


def describe(x: np.ndarray) -> str:
    """Shape, dtype and memory layout of ``x``, for failure messages."""
    if x.flags.c_contiguous:
        order = "C"
    elif x.flags.f_contiguous:
        order = "F"
    else:
        order = f"strides {x.strides}"
    extras = [] if x.flags.writeable else ["read-only"]
    extras += [] if x.dtype.isnative else ["byte-swapped"]
    return f"dtype={x.dtype}, shape={x.shape}, order={order}" + "".join(", " + e for e in extras)


def edge_cases(dtypes=DTYPES, seed: int = 0):
    """Yield ``(case_name, array, axis)``: each awkward input with the axis to reduce over.

    Data are fresh draws from ``np.random.default_rng(seed)``, so the list is reproducible.
    """
    rng = np.random.default_rng(seed)
    for dtype in dtypes:
        tag = np.dtype(dtype).name

        def normal(*shape, scale=1.0, dtype=dtype):
            return (scale * rng.standard_normal(shape)).astype(dtype)

        yield f"{tag}-normal-axis-1", normal(17, 9), -1
        yield f"{tag}-normal-axis0", normal(17, 9), 0
        yield f"{tag}-wide-rows", normal(5, 50, scale=3.0), -1
        yield f"{tag}-huge-1e30", normal(12, 7, scale=1e30), -1
        yield f"{tag}-huge-1e30-axis0", normal(12, 7, scale=1e30), 0
        yield f"{tag}-tiny-1e-30", normal(12, 7, scale=1e-30), -1
        yield f"{tag}-large-spread", normal(12, 7, scale=300.0), -1

        non_finite = np.array(NON_FINITE_ROWS, dtype=dtype)
        yield f"{tag}-nonfinite-rows", non_finite, -1
        yield f"{tag}-nonfinite-columns-axis0", np.ascontiguousarray(non_finite.T), 0
        mixed = normal(40, 6)
        picks = rng.random(mixed.shape)
        mixed[picks < 0.05] = np.nan
        mixed[(picks >= 0.05) & (picks < 0.1)] = np.inf
        mixed[(picks >= 0.1) & (picks < 0.3)] = -np.inf
        yield f"{tag}-random-nonfinite", mixed, -1

        yield f"{tag}-one-class", normal(13, 1), -1
        yield f"{tag}-one-row", normal(1, 11), -1
        yield f"{tag}-one-row-axis0", normal(1, 11), 0
        yield f"{tag}-zero-rows", normal(0, 5), -1
        yield f"{tag}-zero-rows-axis0", normal(0, 5), 0  # reduces over an empty axis
        yield f"{tag}-zero-classes", normal(4, 0), -1

        yield f"{tag}-fortran", np.asfortranarray(normal(15, 8)), -1
        yield f"{tag}-fortran-axis0", np.asfortranarray(normal(15, 8)), 0
        yield f"{tag}-strided", normal(30, 27)[::2, ::3], -1
        yield f"{tag}-strided-axis0", normal(30, 27)[::2, ::3], 0
        yield f"{tag}-reversed", normal(10, 6)[::-1, ::-1], -1
        read_only = normal(9, 5)
        read_only.flags.writeable = False
        yield f"{tag}-read-only", read_only, -1
        swapped = normal(9, 5)
        yield f"{tag}-byte-swapped", swapped.astype(swapped.dtype.newbyteorder("S")), -1

        yield f"{tag}-1d", normal(23), 0
        yield f"{tag}-1d-axis-1", normal(23), -1
        cube = normal(4, 5, 6)
        for axis in (0, 1, 2, -1, -2, -3):
            yield f"{tag}-3d-axis{axis}", cube, axis
        yield f"{tag}-3d-fortran-axis1", np.asfortranarray(cube), 1
        yield f"{tag}-3d-strided-axis-2", normal(8, 10, 6)[::2, ::2, 1:], -2


def assert_close(got, expected, dtype, what: str = "") -> None:
    """``assert_allclose`` with rtol = atol = :data:`TOLERANCE` of ``dtype`` (NaN equals NaN)."""
    tol = TOLERANCE[np.dtype(dtype)]
    assert_allclose(np.asarray(got, np.float64), expected, rtol=tol, atol=tol, err_msg=what)


def assert_agrees(got, ref, what: str) -> None:
    """Assert ``got`` equals the float64 reference ``ref`` within :data:`TOLERANCE`.

    NaN and inf must sit at exactly the same positions (with the same sign of inf); finite
    values must satisfy ``|got - ref| <= tol * max(1, |ref|)`` for ``got``'s dtype. ``what``
    names the kernel, backend and input, and starts every failure message.
    """
    got, ref = np.asarray(got), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: NaN positions differ")
    assert_array_equal(np.isinf(got), np.isinf(ref), err_msg=f"{what}: inf positions differ")
    infinite = np.isinf(ref)
    assert_array_equal(got[infinite], ref[infinite], err_msg=f"{what}: sign of inf differs")
    finite = np.isfinite(ref)
    if not finite.any():
        return
    got64, ref = np.where(finite, got, 0.0), np.where(finite, ref, 0.0)
    error = np.abs(got64 - ref) / np.maximum(1.0, np.abs(ref))
    worst = np.unravel_index(np.argmax(error), error.shape)
    tol = TOLERANCE[got.dtype]
    assert error[worst] <= tol, (
        f"{what}: max error {error[worst]:.3g} > {tol:g} at index {tuple(map(int, worst))} "
        f"(got {got64[worst]!r}, expected {ref[worst]!r})"
    )
