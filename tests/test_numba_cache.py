"""Numba's on-disk cache of the compiled kernels, seen from new processes: each compiles only the
kernel and dtype it calls, processes that start at once on an empty cache share it, a later
process loads instead of compiling whatever its thread count, and an unusable cache directory
or ``FASTSOFTMAX_NUMBA_CACHE=0`` costs speed, never a result.

Every child runs one SGD step (the kernel that compiles fastest, about 2 s) on a million
entries, on 1 or 2 threads, and checks it against the NumPy reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastsoftmax

pytestmark = pytest.mark.skipif(
    "numba" not in fastsoftmax.available_backends(), reason="Numba is not installed"
)

ROOT = Path(fastsoftmax.__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fastsoftmax
    from fastsoftmax._registry import KERNELS
    from fastsoftmax.backends import numba_kernels

    dtype, n_threads = np.dtype(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(0)
    param, grad = rng.standard_normal((2, 1 << 20)).astype(dtype)
    want = param.copy()
    fastsoftmax.sgd_update(want, grad, lr=0.1, weight_decay=0.01, backend="numpy")
    got = param.copy()
    fastsoftmax.sgd_update(
        got, grad, lr=0.1, weight_decay=0.01, backend="numba", n_threads=n_threads
    )
    kernels = {name: getattr(numba_kernels, name) for name in KERNELS}
    compiled = {name: kernel.compiled for name, kernel in kernels.items() if kernel.compiled}
    stats = [f.stats for functions in compiled.values() for f in functions.values()]
    # Contraction into FMAs may move the last bit of each of the update's terms.
    bound = 2 * np.finfo(dtype).eps * (abs(param) + 0.1 * (abs(grad) + 0.01 * abs(param)))
    print(json.dumps({
        "right": bool(np.all(abs(got - want) <= bound)),
        "compiled": {name: sorted(d.name for d in fs) for name, fs in compiled.items()},
        "cache_hits": sum(sum(s.cache_hits.values()) for s in stats),
        "cache": numba_kernels.describe()["cache"],
    }))
    """
)


def start(cache: Path, dtype: str, numba_threads: int, n_threads: int, **env: str):
    """A child process (see CHILD) using the cache directory ``cache``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTSOFTMAX_")}
    environment.update(
        PYTHONPATH=str(ROOT),
        NUMBA_CACHE_DIR=str(cache),
        NUMBA_NUM_THREADS=str(numba_threads),
        **env,
    )
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, dtype, str(n_threads)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outcome(process) -> dict:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def data_files(cache: Path) -> dict[str, int]:
    """Data files per cached function: ``{"sgd_float32": 1, ...}``."""
    counts: dict[str, int] = {}
    for path in cache.rglob("*.nbc"):
        function = path.name.split(".")[1].split("-")[0]
        counts[function] = counts.get(function, 0) + 1
    return counts


# (dtype, NUMBA_NUM_THREADS, n_threads)
FIRST_RUNS = [("float32", 2, 2), ("float64", 2, 2), ("float32", 1, 1), ("float64", 1, 1)]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """Four processes started at once on an empty cache: two dtypes, 1 or 2 threads each."""
    cache = tmp_path_factory.mktemp("numba-cache")
    children = [start(cache, *run) for run in FIRST_RUNS]
    return cache, [outcome(child) for child in children]


def test_processes_starting_at_once_compile_only_what_they_call(shared_cache):
    _, outcomes = shared_cache
    for (dtype, _, _), result in zip(FIRST_RUNS, outcomes, strict=True):
        assert result["right"]
        assert result["compiled"] == {"sgd": [dtype]}, "compiled beyond the kernel called"


def test_processes_starting_at_once_leave_one_entry_per_kernel_and_dtype(shared_cache):
    cache, _ = shared_cache
    assert data_files(cache) == {"sgd_float32": 1, "sgd_float64": 1}


@pytest.mark.parametrize(
    ("dtype", "numba_threads", "n_threads"),
    [
        ("float32", 1, 1),  # compiled by processes with 2 threads too
        ("float64", 2, 2),
        ("float64", 2, 1),
    ],
)
def test_a_later_process_loads_the_cache_whatever_its_thread_count(
    shared_cache, dtype, numba_threads, n_threads
):
    cache, _ = shared_cache
    result = outcome(start(cache, dtype, numba_threads, n_threads))
    assert result["right"]
    assert result["cache_hits"] == 1, "compiled again instead of loading the cache"
    assert data_files(cache) == {"sgd_float32": 1, "sgd_float64": 1}


def test_an_unusable_cache_directory_costs_speed_not_results(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # Not even root can create a directory below a file: Numba moves to its next location
    # (the package's __pycache__, or the user cache), or fastsoftmax compiles without a cache.
    result = outcome(start(blocker / "cache", "float64", 2, 2))
    assert result["right"]
    assert result["compiled"] == {"sgd": ["float64"]}


def test_with_no_cache_location_at_all_kernels_compile_uncached(tmp_path):
    # Numba's list of places to try, emptied (a private name, in this test only).
    child = "import numba.core.caching as c\nc.CacheImpl._locator_classes = []\n" + CHILD
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTSOFTMAX_")}
    environment.update(PYTHONPATH=str(ROOT), NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", child, "float32", "1"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["right"]
    assert result["cache"].startswith("off: cannot cache"), result["cache"]
    assert not list(tmp_path.rglob("*.nb*"))


def test_the_cache_can_be_turned_off(tmp_path):
    result = outcome(start(tmp_path, "float32", 2, 2, FASTSOFTMAX_NUMBA_CACHE="0"))
    assert result["right"]
    assert result["cache"].startswith("off")
    assert not list(tmp_path.rglob("*.nb*"))


def test_each_compiled_function_serves_one_dtype():
    """One dtype per compiled function, hence per cache index (see numba_kernels._ByDtype)."""
    from fastsoftmax._registry import KERNELS
    from fastsoftmax.backends import numba_kernels

    x = np.random.default_rng(0).standard_normal((3, 5))
    fastsoftmax.softmax(x.astype(np.float32), backend="numba")
    x.flags.writeable = False  # a read-only input types apart, with the same machine code
    fastsoftmax.softmax(x, backend="numba")
    for name in KERNELS:
        for dtype, function in getattr(numba_kernels, name).compiled.items():
            first_arguments = {str(signature[0].dtype) for signature in function.signatures}
            assert first_arguments == {dtype.name}, (name, dtype, function.signatures)
