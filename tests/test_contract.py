"""Every backend module implements each registered raw kernel with the parameter names of the
registry and the NumPy reference, so one front layer can call any of them."""

from __future__ import annotations

import inspect
import re

import pytest

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax._registry import KERNELS
from fastsoftmax.backends import numpy_reference


def parameter_names(func) -> list[str]:
    """Parameter names of a Python, Numba or Cython function."""
    func = getattr(func, "py_func", func)  # a Numba dispatcher wraps the Python function
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):  # some compiled functions do not expose a signature
        pass
    text = getattr(func, "__text_signature__", None)
    if not text:  # Cython's embedsignature puts "name(a, b, c)" first in the docstring
        match = re.match(rf"{func.__name__}\(([^)]*)\)", func.__doc__ or "")
        assert match, f"cannot read the signature of {func!r}"
        text = f"({match.group(1)})"
    names = [part.split("=")[0].split(":")[0].split() for part in text.strip("()").split(",")]
    # keep the last word ("int n" -> "n"); drop "$module", "/" and "*" markers
    return [words[-1] for words in names if words and words[-1][0] not in "$/*"]


@pytest.mark.parametrize("kernel", KERNELS)
def test_backend_has_each_raw_kernel_with_the_registered_parameters(kernel, backend):
    module = backends.load(backend)
    assert callable(getattr(module, kernel, None)), f"backend {backend} lacks {kernel}"
    expected = list(KERNELS[kernel].params)
    reference = parameter_names(getattr(numpy_reference, kernel))
    assert reference == expected, f"the reference {kernel} takes {reference}, not {expected}"
    got = parameter_names(getattr(module, kernel))
    assert got == expected, f"{backend}.{kernel} takes {got}, the registry says {expected}"


@pytest.mark.parametrize("kernel", KERNELS)
def test_registered_public_function_is_exported(kernel):
    public = KERNELS[kernel].public
    assert public in fastsoftmax.__all__ and callable(getattr(fastsoftmax, public))


def test_backend_describes_itself(backend):
    facts = backends.load(backend).describe()
    assert isinstance(facts, dict) and all(isinstance(key, str) for key in facts), facts


def test_backend_reports_its_thread_cap(backend):
    max_threads = backends.load(backend).max_threads
    assert parameter_names(max_threads) == []
    cap = max_threads()
    assert isinstance(cap, int) and cap >= 1, f"{backend}.max_threads() returned {cap!r}"


def test_signature_reader_handles_each_kind_of_function():
    def python_function(x, out, n_threads=1):
        pass

    class TextSignature:  # what a C function without inspect support exposes
        __text_signature__ = "($module, x, out, n_threads, /)"
        __name__ = "kernel"

    class DocstringSignature:
        __doc__ = "kernel(x, out, int n_threads)\nMore text."
        __name__ = "kernel"

    for func in (python_function, TextSignature(), DocstringSignature()):
        assert parameter_names(func)[:2] == ["x", "out"]
    assert parameter_names(TextSignature()) == ["x", "out", "n_threads"]
