"""Shapes at the compiled kernels' loop boundaries, each in a fresh, exactly sized array.

Run normally, these check the results there. ``.ci/memory-safety`` runs this file (and the kernel
suites) against a debug build of the Cython extension under AddressSanitizer and against Numba
with bounds checking: a read or write one element past an array then aborts the run.

The boundaries: one row and one column; the narrow-row block path (k < 32, blocks of 64 rows, so
63/64/65/129 rows and 31/32/33 columns); vector widths (7, 8, 9, 15, 16, 17 elements).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from cases import assert_agrees

import fastsoftmax
from fastsoftmax._registry import KERNELS, make_inputs

ROWS = (1, 63, 65, 129)
COLUMNS = (1, 7, 9, 16, 17, 31, 32, 33)
LENGTHS = (0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65)
SHAPES = [(n, k) for n in ROWS for k in COLUMNS]


@pytest.mark.skipif(
    os.environ.get("FASTSOFTMAX_EXPECT_DEBUG_BUILD") != "1", reason="not the debug-build run"
)
def test_the_debug_build_is_the_one_under_test():
    from fastsoftmax.backends import cython_kernels

    flags = cython_kernels.build_info()["flags"].split()
    assert cython_kernels.variant == "baseline"
    assert "-O1" in flags and "-fsanitize=address" in flags, flags


def fresh(rng, shape, dtype) -> np.ndarray:
    """A new array of exactly ``shape``: nothing beyond its last element belongs to it."""
    return (4 * rng.standard_normal(shape)).astype(dtype)


ROW_KERNELS = [name for name, spec in KERNELS.items() if spec.ndim == 2]


def as_float64(data: dict) -> dict:
    return {k: a.astype(np.float64) if a.dtype.kind == "f" else a for k, a in data.items()}


@pytest.mark.parametrize("kernel", ROW_KERNELS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def test_registered_row_kernels_at_loop_boundaries(shape, kernel, backend, dtype, rng):
    """Every registered row kernel on its input family, in exactly sized arrays, against the
    reference in float64; a non-finite entry in the first row takes the non-finite path."""
    spec = KERNELS[kernel]
    data = make_inputs(spec.inputs, shape, dtype, rng)
    if spec.inputs.startswith("linear"):
        # (rows, features): a non-finite entry would only give NaN sums; the last row and
        # feature bound the reads of X (and W), and the last class of the last row is taken.
        data["labels"][-1] = len(data["b"]) - 1
    else:
        first = data["x" if "x" in data else "grad_output"]
        first[0, -1] = np.inf if shape[1] > 1 else first[0, -1]
    expected = spec.call(as_float64(data), backend="numpy")
    got = spec.call(data, backend=backend)
    for i, (result, reference) in enumerate(zip(got, expected, strict=True)):
        assert_agrees(result, reference, f"{kernel} {shape} {np.dtype(dtype)} on {backend} [{i}]")


@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft"])
@pytest.mark.parametrize("shape", SHAPES[::2] + SHAPES[1::8], ids=lambda s: f"{s[0]}x{s[1]}")
def test_cross_entropy_at_loop_boundaries(soft, shape, backend, dtype, rng):
    n, k = shape
    logits = fresh(rng, shape, dtype)
    if soft:
        target = rng.dirichlet(np.ones(k), n).astype(dtype)
    else:
        target = rng.integers(0, k, n)
        target[-1] = k - 1  # the last class of the last row: the very last element
    weights = rng.random(n) + 0.5
    options = dict(sample_weight=weights, label_smoothing=0.1, reduction="none")
    loss, grad = fastsoftmax.softmax_cross_entropy(logits, target, **options, backend=backend)
    ref_target = target.astype(np.float64) if soft else target
    ref_loss, ref_grad = fastsoftmax.softmax_cross_entropy(
        logits.astype(np.float64), ref_target, **options, backend="numpy"
    )
    what = f"cross-entropy {shape} {np.dtype(dtype)} on {backend}"
    assert_agrees(loss, ref_loss, what + ": loss")
    assert_agrees(grad, ref_grad, what + ": grad")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("length", LENGTHS)
def test_sgd_at_loop_boundaries(length, momentum, backend, dtype, rng):
    param, grad = fresh(rng, length, dtype), fresh(rng, length, dtype)
    velocity = fresh(rng, length, dtype) if momentum else None
    expected_param = param.astype(np.float64)
    expected_velocity = None if velocity is None else velocity.astype(np.float64)
    options = dict(lr=0.1, momentum=momentum, weight_decay=0.01)
    fastsoftmax.sgd_update(param, grad, velocity=velocity, **options, backend=backend)
    fastsoftmax.sgd_update(
        expected_param,
        grad.astype(np.float64),
        velocity=expected_velocity,
        **options,
        backend="numpy",
    )
    assert_agrees(param, expected_param, f"sgd length {length} on {backend}")
