"""Fixtures shared by the test suite: the backend under test, a seeded random generator, and
where Fashion-MNIST is on disk.

A backend that is not built here is skipped, unless ``FASTSOFTMAX_REQUIRE_ALL_BACKENDS=1`` (set by
CI), where it fails: CI must never pass by silently testing fewer backends.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.datasets import find_fashion_mnist

ALL_BACKENDS = tuple(backends.BACKENDS)
REQUIRE_ALL_BACKENDS = os.environ.get("FASTSOFTMAX_REQUIRE_ALL_BACKENDS") == "1"


def require_backend(name: str) -> str:
    """``name``, or skip the test (fail it in CI) when that backend is not available."""
    if name not in fastsoftmax.available_backends():
        try:
            backends.load(name)
            reason = f"backend {name!r} is not available"
        except ValueError as exc:
            reason = str(exc)
        if REQUIRE_ALL_BACKENDS:
            pytest.fail(f"FASTSOFTMAX_REQUIRE_ALL_BACKENDS=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return name


@pytest.fixture(params=ALL_BACKENDS)
def backend(request) -> str:
    """Name of each backend in turn; skipped (or, in CI, failed) when it is not available."""
    return require_backend(request.param)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request) -> type:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# The developers keep Fashion-MNIST beside the repository root, in ../shared/data. The package
# never looks there (only in $FASTSOFTMAX_DATA and its data home); the tests may, here only.
SHARED_FASHION_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def fashion_mnist_folder() -> Path | None:
    """Where the package finds Fashion-MNIST, else the developers' copy; None without either."""
    return find_fashion_mnist() or find_fashion_mnist(SHARED_FASHION_MNIST)


# -- Hypothesis profiles (the property tests, tests/test_properties.py) -----------------------
# "ci", the default: 100 examples per test from a fixed seed (derandomize), so that every run
# checks the same inputs and the property tests take seconds beyond Numba's compilation.
# "thorough": many more examples, fresh ones every run (failures are kept in .hypothesis/ and
# replayed first next time). Choose it with either of
#     HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_properties.py
#     python -m pytest tests/test_properties.py --hypothesis-profile=thorough
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # hypothesis is a test dependency; without it only test_properties.py skips
    _hypothesis_settings = None
else:
    _hypothesis_settings.register_profile(
        "ci", max_examples=100, deadline=None, derandomize=True, print_blob=True
    )
    _hypothesis_settings.register_profile(
        "thorough", max_examples=2000, deadline=None, print_blob=True
    )
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
