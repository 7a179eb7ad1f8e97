"""The NumPy reference (the specification) against SciPy and against values worked out by hand.

SciPy's ``log_softmax`` treats a row holding +inf differently (it returns -inf for the finite
entries), so SciPy is the oracle for finite input only; non-finite rows are pinned down by hand
here and in ``test_semantics.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from cases import assert_agrees, describe, edge_cases
from numpy.testing import assert_allclose

import fastsoftmax

# SciPy's softmax refuses empty input, so empty cases are left to test_semantics.py.
FINITE_CASES = [case for case in edge_cases() if case[1].size and np.isfinite(case[1]).all()]


@pytest.mark.parametrize("kernel", ["logsumexp", "softmax", "log_softmax"])
@pytest.mark.parametrize(("case", "x", "axis"), FINITE_CASES, ids=[c[0] for c in FINITE_CASES])
def test_reference_matches_scipy_on_finite_input(kernel, case, x, axis):
    got = getattr(fastsoftmax, kernel)(x, axis=axis, backend="numpy")
    expected = getattr(scipy.special, kernel)(x.astype(np.float64), axis=axis)
    assert_agrees(got, expected, f"reference {kernel}(case={case}, axis={axis}, {describe(x)})")


LOG3 = np.log(3.0)


@pytest.mark.parametrize(
    ("kernel", "x", "expected"),
    [
        ("softmax", [0.0, LOG3], [0.25, 0.75]),
        ("log_softmax", [0.0, LOG3], [np.log(0.25), np.log(0.75)]),
        ("logsumexp", [0.0, LOG3], np.log(4.0)),
        ("softmax", [1.0, 2.0, 3.0], np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()),
        ("softmax", [1000.0, 1000.0 + LOG3], [0.25, 0.75]),  # 1000 + log 3 rounds at 1e-13
        ("log_softmax", [-1000.0, -1000.0], [-np.log(2.0)] * 2),
        ("logsumexp", [1000.0, 1000.0], 1000.0 + np.log(2.0)),
        ("logsumexp", [-1000.0, -1000.0 + LOG3], -1000.0 + np.log(4.0)),
        ("softmax", [-np.inf, 0.0, LOG3], [0.0, 0.25, 0.75]),
        ("log_softmax", [-np.inf, 0.0], [-np.inf, 0.0]),
        ("logsumexp", [-np.inf, -np.inf], -np.inf),
        ("logsumexp", [np.inf, 1.0], np.inf),
        ("logsumexp", [np.inf, np.nan], np.nan),
        ("softmax", [np.inf, 1.0], [np.nan, np.nan]),
        ("log_softmax", [-np.inf, -np.inf], [np.nan, np.nan]),
        ("softmax", [5.0], [1.0]),
        ("log_softmax", [5.0], [0.0]),
    ],
)
def test_reference_gives_hand_computed_values(kernel, x, expected):
    got = getattr(fastsoftmax, kernel)(np.array(x), backend="numpy")
    assert_allclose(got, expected, rtol=1e-13, atol=0, err_msg=f"reference {kernel}({x})")


def test_reference_softmax_is_exp_of_log_softmax(rng):
    x = 5 * rng.standard_normal((20, 6))
    assert_allclose(
        fastsoftmax.softmax(x, backend="numpy"),
        np.exp(fastsoftmax.log_softmax(x, backend="numpy")),
        rtol=1e-14,
    )
    assert_allclose(
        fastsoftmax.log_softmax(x, backend="numpy"),
        x - fastsoftmax.logsumexp(x, keepdims=True, backend="numpy"),
        rtol=1e-14,
        atol=1e-14,
    )
