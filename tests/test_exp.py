"""The compiled backends' exp implementations against exp in extended precision.

Each backend exposes the exact exp its kernels use as ``exp(x, out)``: Numba's ``vexp`` and, for
Cython, ``fs_vexp_f32``/``fs_vexp_f64`` of ``src_cython/rowops.h`` in every build variant this
CPU runs (the baseline build, without FMA, evaluates a different formula). Both are arithmetic
written to vectorise: range reduction, polynomial, exponent bits. The bounds are the ones
documented in the README ("Accuracy of exp"); errors are in units in the last place of the
correctly rounded result, over normal results; results below the smallest normal flush to 0.

The kernels only ever exponentiate ``x - max(x) <= 0``. Numba's exp is more accurate there
(< 1 ulp measured) than near overflow, where its reduction clamps the exponent (k <= 1023) and
its polynomial runs on |r| up to ln 2 instead of ln 2 / 2. The Cython exp scales by adding k to
the exponent bits of exp(r) < 1, so k = 128 / 1024 needs no clamp: < 1 ulp up to overflow.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsoftmax import backends

DTYPES = (np.float32, np.float64)

# Documented maxima (ulp). Cython: 0.90 (float32) / 0.89 (float64) measured on x <= 0, 0.89 /
# 0.88 over the whole range (worst of the three variants, 4-6 million points). Numba: 0.93 /
# 0.87 on x <= 0; near overflow, 12.7 / 320 measured (see the module docstring), bounded here
# with a factor of ~1.5.
BOUND_KERNEL_DOMAIN = {"cython": 1.0, "numba": 1.0}
BOUND_WHOLE_RANGE = {
    "cython": {np.float32: 1.0, np.float64: 1.0},
    "numba": {np.float32: 20.0, np.float64: 512.0},
}


def implementations():
    """(name, family, exp) for each exp implementation built here."""
    found = []
    if backends.is_available("numba"):
        found.append(("numba", "numba", backends.load("numba").exp))
    if backends.is_available("cython"):
        cython = backends.load("cython")
        for variant in cython.runnable_variants():
            found.append((f"cython/{variant}", "cython", cython.load_variant(variant).exp))
    return found


IMPLEMENTATIONS = implementations()
IDS = [name for name, _, _ in IMPLEMENTATIONS]
pytestmark = pytest.mark.skipif(not IMPLEMENTATIONS, reason="no compiled backend built")


def exp_of(func, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    func(x, out)
    return out


def normal_range(dtype) -> tuple[float, float]:
    """[log(smallest normal), log(largest finite)]: inputs whose exp is a normal number."""
    info = np.finfo(dtype)
    return float(np.log(np.longdouble(info.tiny))), float(np.log(np.longdouble(info.max)))


def max_ulp_error(got: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """Largest error in ulp over the normal results, and the input where it occurs."""
    dtype = x.dtype.type
    ref = np.exp(x.astype(np.longdouble))  # 64-bit mantissa: 2**-11 float64 ulp of error
    normal = (ref >= np.finfo(dtype).tiny) & (ref <= np.finfo(dtype).max)
    ulp = np.spacing(ref[normal].astype(dtype)).astype(np.longdouble)
    errors = np.abs(got[normal].astype(np.longdouble) - ref[normal]) / ulp
    worst = int(np.argmax(errors))
    return float(errors[worst]), float(x[normal][worst])


def samples(low: float, high: float, dtype, rng) -> np.ndarray:
    """A grid over [low, high], random points, and the ends."""
    points = [np.linspace(low, high, 200_001), rng.uniform(low, high, 100_000), [low, high]]
    return np.concatenate(points).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize(("name", "family", "func"), IMPLEMENTATIONS, ids=IDS)
def test_error_on_the_kernels_domain(name, family, func, dtype, rng):
    low, _ = normal_range(dtype)
    x = np.concatenate([samples(low, 0.0, dtype, rng), -rng.exponential(1.0, 100_000)])
    x = x.astype(dtype)
    error, where = max_ulp_error(exp_of(func, x), x)
    bound = BOUND_KERNEL_DOMAIN[family]
    assert error <= bound, f"{name} {dtype.__name__}: {error:.2f} ulp at x={where!r} > {bound}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize(("name", "family", "func"), IMPLEMENTATIONS, ids=IDS)
def test_error_over_the_whole_normal_range(name, family, func, dtype, rng):
    x = samples(*normal_range(dtype), dtype, rng)
    error, where = max_ulp_error(exp_of(func, x), x)
    bound = BOUND_WHOLE_RANGE[family][dtype]
    assert error <= bound, f"{name} {dtype.__name__}: {error:.2f} ulp at x={where!r} > {bound}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize(("name", "family", "func"), IMPLEMENTATIONS, ids=IDS)
def test_special_values_overflow_and_underflow(name, family, func, dtype):
    info = np.finfo(dtype)
    low, high = normal_range(dtype)
    x = np.array([-np.inf, np.inf, np.nan, high * 1.001, 1e30, -1e30, 0.0, -0.0], dtype)
    expected = np.array([0.0, np.inf, np.nan, np.inf, np.inf, 0.0, 1.0, 1.0], dtype)
    np.testing.assert_array_equal(exp_of(func, x), expected, err_msg=name)
    # Results below the smallest normal number flush to zero (documented), never to anything
    # negative or larger.
    below = np.linspace(float(np.log(np.longdouble(info.smallest_subnormal))) - 1, low, 10_001)
    below = below[below < low].astype(dtype)
    np.testing.assert_array_equal(exp_of(func, below), np.zeros_like(below), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize(("name", "family", "func"), IMPLEMENTATIONS, ids=IDS)
def test_a_value_gets_the_same_exp_in_a_vector_and_alone(name, family, func, dtype, rng):
    # The loops' vector bodies and scalar tails run the same arithmetic, so that a row's
    # results do not depend on its position (scikit-learn's sample-order invariance check).
    x = (-rng.exponential(5.0, 1_001)).astype(dtype)
    alone = np.concatenate([exp_of(func, x[i : i + 1]) for i in range(x.size)])
    np.testing.assert_array_equal(exp_of(func, x), alone, err_msg=name)
