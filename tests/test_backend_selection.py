"""Which backend a call runs on: argument > use_backend > set_backend > FASTSOFTMAX_BACKEND > auto.

The "fastsoftmax" logger records at DEBUG level the backend each call ran on; the tests read it
to see where a call really went, not just what get_backend() says.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import _config, backends

ENV_VAR = "FASTSOFTMAX_BACKEND"


@pytest.fixture(autouse=True)
def isolated_choice(monkeypatch):
    """Start from no set_backend() choice and no environment variable; restore both after."""
    monkeypatch.setattr(_config, "_global_choice", None)
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def two_backends(backend) -> tuple[str, str]:
    """The backend under test and a different available one."""
    others = [name for name in fastsoftmax.available_backends() if name != backend]
    if not others:
        pytest.skip("needs two available backends")
    return backend, others[0]


def ran_on(caplog) -> str:
    """The backend that the one call made since caplog.clear() ran on, from the debug log."""
    found = [re.search(r"backend '(\w+)'", r.getMessage()) for r in caplog.records]
    names = [match.group(1) for match in found if match]
    assert len(names) == 1, caplog.text
    return names[0]


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.DEBUG, logger="fastsoftmax")
    return caplog


def call_softmax(log, **kwargs) -> str:
    log.clear()
    fastsoftmax.softmax(np.zeros((2, 3)), **kwargs)
    return ran_on(log)


def test_debug_log_names_the_backend_kernel_and_threads(backend, log):
    fastsoftmax.logsumexp(np.zeros((2, 3)), backend=backend)
    (record,) = log.records
    assert record.levelno == logging.DEBUG and record.name == "fastsoftmax"
    assert "logsumexp" in record.message and repr(backend) in record.message
    assert "1 thread" in record.message


def test_auto_resolves_to_an_available_backend(log):
    auto = fastsoftmax.resolve_backend()
    assert fastsoftmax.get_backend() == "auto"
    assert auto == fastsoftmax.resolve_backend("auto") != "auto"
    assert auto == backends.auto_choice()
    assert call_softmax(log) == auto


def test_resolve_backend_returns_the_concrete_name(backend):
    assert fastsoftmax.resolve_backend(backend) == backend
    with fastsoftmax.use_backend(backend):
        assert fastsoftmax.resolve_backend() == backend
        assert fastsoftmax.resolve_backend("auto") != "auto"


def test_set_backend_applies_to_later_calls_until_auto(backend, log):
    fastsoftmax.set_backend(backend)
    assert fastsoftmax.get_backend() == backend
    assert call_softmax(log) == backend
    fastsoftmax.set_backend("auto")
    assert fastsoftmax.get_backend() == "auto"
    assert call_softmax(log) == fastsoftmax.resolve_backend("auto")


def test_use_backend_overrides_set_backend_and_restores_it(two_backends, log):
    inner, outer = two_backends
    fastsoftmax.set_backend(outer)
    with fastsoftmax.use_backend(inner):
        assert fastsoftmax.get_backend() == inner
        assert call_softmax(log) == inner
    assert call_softmax(log) == outer


def test_use_backend_restores_after_an_exception_and_nests(two_backends):
    inner, outer = two_backends
    with pytest.raises(RuntimeError), fastsoftmax.use_backend(outer):
        with fastsoftmax.use_backend(inner):
            assert fastsoftmax.get_backend() == inner
        assert fastsoftmax.get_backend() == outer
        raise RuntimeError
    assert fastsoftmax.get_backend() == "auto"


def test_argument_overrides_use_backend(two_backends, log):
    argument, context = two_backends
    with fastsoftmax.use_backend(context):
        assert fastsoftmax.resolve_backend(argument) == argument
        assert call_softmax(log, backend=argument) == argument
        assert call_softmax(log, backend=None) == context


def test_environment_variable_is_read_at_call_time(two_backends, monkeypatch, log):
    from_env, chosen = two_backends
    monkeypatch.setenv(ENV_VAR, from_env)
    assert fastsoftmax.get_backend() == from_env
    assert call_softmax(log) == from_env
    with fastsoftmax.use_backend(chosen):  # use_backend beats the environment
        assert call_softmax(log) == chosen
    monkeypatch.setenv(ENV_VAR, f"  {from_env} ")  # surrounding blanks are ignored
    assert call_softmax(log) == from_env
    fastsoftmax.set_backend(chosen)  # and so does set_backend
    assert call_softmax(log) == chosen


def test_set_backend_auto_gives_the_environment_variable_back(two_backends, monkeypatch, log):
    """set_backend's docstring: '"auto" restores the default', and the default honours
    FASTSOFTMAX_BACKEND."""
    from_env, chosen = two_backends
    monkeypatch.setenv(ENV_VAR, from_env)
    fastsoftmax.set_backend(chosen)
    fastsoftmax.set_backend("auto")
    assert fastsoftmax.get_backend() == from_env
    assert call_softmax(log) == from_env


def test_unknown_environment_variable_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "nope")
    with pytest.raises(ValueError, match=ENV_VAR):
        fastsoftmax.get_backend()
    with pytest.raises(ValueError, match="nope"):
        fastsoftmax.softmax(np.zeros(3))


def test_environment_variable_in_a_fresh_process(backend):
    code = "import fastsoftmax; print(fastsoftmax.resolve_backend())"
    root = Path(fastsoftmax.__file__).resolve().parents[1]
    env = {**os.environ, ENV_VAR: backend, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == backend


def test_use_backend_is_local_to_the_thread(two_backends):
    inner, outer = two_backends
    fastsoftmax.set_backend(outer)
    seen = []
    with fastsoftmax.use_backend(inner):
        thread = threading.Thread(target=lambda: seen.append(fastsoftmax.get_backend()))
        thread.start()
        thread.join()
    assert seen == [outer]


@pytest.mark.parametrize(
    "choose",
    [
        fastsoftmax.set_backend,
        lambda name: fastsoftmax.use_backend(name).__enter__(),
        fastsoftmax.resolve_backend,
        lambda name: fastsoftmax.softmax(np.zeros(3), backend=name),
    ],
    ids=["set_backend", "use_backend", "resolve_backend", "softmax"],
)
@pytest.mark.parametrize("name", ["nope", "Numba", "numpy_reference"])
def test_unknown_name_raises_listing_the_backends(choose, name):
    with pytest.raises(ValueError, match=f"unknown backend {name!r}") as info:
        choose(name)
    assert str(list(backends.BACKENDS)) in str(info.value)
    assert fastsoftmax.get_backend() == "auto"


@pytest.mark.parametrize("name", [None, 1, ["numpy"]])
def test_set_backend_refuses_a_non_string(name):
    with pytest.raises(TypeError, match="backend"):
        fastsoftmax.set_backend(name)


def test_missing_backend_says_how_to_get_it(monkeypatch):
    """A registered backend whose module cannot be imported: clear error, others unaffected."""
    ghost = backends.Backend(
        "ghost", "fastsoftmax.backends._no_such_module", "install the ghost extra", auto_rank=9
    )
    monkeypatch.setitem(backends.BACKENDS, "ghost", ghost)
    monkeypatch.setattr(backends, "_failures", dict(backends._failures))
    assert "ghost" not in fastsoftmax.available_backends()
    assert not backends.is_available("ghost")
    with pytest.raises(ValueError, match="'ghost' is not available") as info:
        fastsoftmax.set_backend("ghost")
    assert "install the ghost extra" in str(info.value)
    assert "_no_such_module" in str(info.value)
    assert fastsoftmax.softmax(np.zeros(2), backend="numpy").tolist() == [0.5, 0.5]


def test_auto_passes_over_a_cython_build_without_openmp(monkeypatch):
    if not backends.is_available("cython"):
        pytest.skip("the Cython backend is not built")
    from fastsoftmax.backends import cython_kernels
    from fastsoftmax.benchmark.machine import environment_report

    built = cython_kernels.build_info()
    monkeypatch.setattr(cython_kernels, "build_info", lambda: {**built, "openmp": False})
    (shortfall,) = backends.shortfalls("cython")
    assert "without OpenMP" in shortfall
    after_cython = "numba" if backends.is_available("numba") else "numpy"
    assert backends.auto_choice() == after_cython
    assert f"SLOW: {shortfall}" in environment_report()


def test_auto_takes_a_slow_build_when_nothing_else_is_fast(monkeypatch):
    monkeypatch.setattr(
        backends, "shortfalls", lambda name: [] if name == "numpy" else ["slow build"]
    )
    assert backends.auto_choice() == "numpy"
    monkeypatch.setattr(backends, "shortfalls", lambda name: ["slow build"])
    first_built = next(n for n in backends.auto_order() if backends.is_available(n))
    assert backends.auto_choice() == first_built


def test_warmup_takes_chosen_kernels_and_dtypes_and_refuses_unknown_ones():
    assert list(fastsoftmax.warmup(["numpy"], kernels=["sgd"], dtypes=[np.float32])) == ["numpy"]
    with pytest.raises(ValueError, match=r"kernels: unknown \['sofmax'\]"):
        fastsoftmax.warmup(["numpy"], kernels=["sofmax"])
    with pytest.raises(ValueError, match="dtypes: expected float32"):
        fastsoftmax.warmup(["numpy"], dtypes=["float16"])
