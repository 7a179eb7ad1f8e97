"""Benchmarks of the kernels: one registry, one input cache, one timer.

Everything that times a kernel goes through this module: ``fastsoftmax bench`` and
:func:`bench`, the quick table of ``fastsoftmax info`` (:func:`compare`), and the asv and
pytest-benchmark suites in ``benchmarks/``.

Design
------
* :func:`registry` is ``{kernel: {implementation: Implementation}}``: the three backends
  through the public API, plus the installed peers of :mod:`fastsoftmax._peers` (SciPy,
  PyTorch, JAX), whose modules are imported only when one of their runners is built.
* :func:`case_inputs` makes deterministic inputs per (kernel family, shape, dtype), memoised
  within a byte budget, in enough independent copies that rotating through them overflows the
  last-level cache: a cache-sized case would otherwise be timed from cache.
* :func:`measure` calls every runner once first (untimed; Numba compiles there and the bench
  reports that time apart), calibrates the calls per sample (>= ``min_time``), then interleaves
  the implementations in rounds so that a noisy phase of the machine hits all of them alike;
  it reports the median and the interquartile range.
* Mode "alloc" lets the function allocate its output; "out" writes into preallocated arrays
  (``out=``, ``grad_out=``, or in place for ``sgd_update``): the page faults of a fresh output
  can cost as much as the kernel (TECHNIQUES.md, "Memory").
* GB/s counts the input read once and the output written once; the ceiling is a large
  ``np.copyto`` (read + write) measured on the same machine in the same run.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import os
import platform
import sys
import textwrap
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from fastsoftmax import _api, _peers, backends
from fastsoftmax._config import ENV_VAR, resolve_backend

KERNELS = ("logsumexp", "softmax", "log_softmax", "softmax_cross_entropy", "sgd_update")
"""The kernels every implementation is compared on."""

EPOCH = "classifier_epoch"
"""One epoch of ``SoftmaxRegression.fit`` on Fashion-MNIST (run when the data is found)."""

MODES = ("alloc", "out")
""""alloc": the call allocates its output; "out": it writes into preallocated arrays."""

DEFAULT_SHAPES = ((4096, 1000), (65536, 128), (512, 32000), (1_000_000, 10), (64, 10))
DEFAULT_SGD_SIZES = ((7850,), (10_000_000,))  # softmax regression on MNIST; a large model
QUICK_SHAPES = ((2048, 128), (128, 4096), (64, 10))
QUICK_SGD_SIZES = ((7850,), (100_000,))

SGD_STEP = {"lr": 1e-3, "momentum": 0.9}
"""The step every ``sgd_update`` implementation runs: SGD with momentum, as in training."""

IMPLEMENTATION_ORDER = ("numpy", "numba", "cython", "scipy", "torch", "jax")
REFERENCE = "numpy"

_CACHE_BUDGET = 2 << 30  # bytes of memoised inputs kept across cases
_MAX_COPIES = 64
_MAX_CALLS_PER_SAMPLE = 1_000_000
_SETTLE_SECONDS = 0.002

Runner = Callable[[], object]


# -- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Implementation:
    """How one library runs one kernel: ``make(data, mode, n_threads)`` builds a runner.

    Parameters
    ----------
    make : callable
        ``make(data, mode, n_threads)`` returns a no-argument callable running the kernel once
        on the arrays of ``data`` (one set from :func:`case_inputs`), or None if it cannot run
        that case.
    modes : tuple of str
        The modes of :data:`MODES` it offers.
    threaded : bool
        Whether ``n_threads`` changes what it does.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import benchmark
    >>> numpy_softmax = benchmark.registry()["softmax"]["numpy"]
    >>> data = benchmark.case_inputs("softmax", (2, 3), "float64")[0]
    >>> run = numpy_softmax(data, "out")
    >>> run() is data["out"]
    True
    """

    make: Callable[[dict[str, np.ndarray], str, int | None], Runner | None]
    modes: tuple[str, ...] = MODES
    threaded: bool = True

    def __call__(self, data: dict, mode: str, n_threads: int | None = None) -> Runner | None:
        if mode not in self.modes:
            return None
        return self.make(data, mode, n_threads)


def _backend_implementations(backend: str) -> dict[str, Implementation]:
    """The kernels of fastsoftmax backend ``backend`` called through the public API."""
    threaded = backend != "numpy"  # the reference accepts n_threads and ignores it

    def rowwise(kernel, data, mode, n_threads):
        out = {"out": data["out"]} if mode == "out" else {}
        function = getattr(_api, kernel)
        return partial(function, data["x"], backend=backend, n_threads=n_threads, **out)

    def cross_entropy(data, mode, n_threads):
        out = {"grad_out": data["out"]} if mode == "out" else {}
        return partial(
            _api.softmax_cross_entropy,
            data["x"],
            data["labels"],
            backend=backend,
            n_threads=n_threads,
            **out,
        )

    def sgd(data, mode, n_threads):
        return partial(
            _api.sgd_update,
            data["param"],
            data["grad"],
            velocity=data["velocity"],
            backend=backend,
            n_threads=n_threads,
            **SGD_STEP,
        )

    def epoch(data, mode, n_threads):
        from fastsoftmax.classifier import SoftmaxRegression

        model = SoftmaxRegression(
            max_epochs=1,
            tol=None,
            random_state=0,
            dtype=data["X"].dtype.type,
            backend=backend,
            n_threads=n_threads,
        )
        return partial(model.fit, data["X"], data["y"])

    return {
        "logsumexp": Implementation(partial(rowwise, "logsumexp"), ("alloc",), threaded),
        "softmax": Implementation(partial(rowwise, "softmax"), MODES, threaded),
        "log_softmax": Implementation(partial(rowwise, "log_softmax"), MODES, threaded),
        "softmax_cross_entropy": Implementation(cross_entropy, MODES, threaded),
        "sgd_update": Implementation(sgd, ("out",), threaded),
        EPOCH: Implementation(epoch, ("alloc",), threaded),
    }


def registry(
    peers: bool = False, implementations: Iterable[str] | None = None
) -> dict[str, dict[str, Implementation]]:
    """``{kernel: {implementation: Implementation}}`` for what is available here.

    Parameters
    ----------
    peers : bool, default False
        Add the installed peers (SciPy, PyTorch, JAX) next to the fastsoftmax backends.
    implementations : iterable of str, optional
        Keep only these implementations (backend or peer names).

    Examples
    --------
    >>> from fastsoftmax import benchmark
    >>> table = benchmark.registry(implementations=["numpy"])
    >>> sorted(table["softmax"]), table["softmax"]["numpy"].modes
    (['numpy'], ('alloc', 'out'))
    """
    table: dict[str, dict[str, Implementation]] = {kernel: {} for kernel in (*KERNELS, EPOCH)}
    for backend in backends.available_backends():
        for kernel, entry in _backend_implementations(backend).items():
            table[kernel][backend] = entry
    if peers:
        for kernel, entries in _peers.implementations().items():
            table[kernel].update(entries)
    if implementations is not None:
        keep = set(implementations)
        table = {
            kernel: {n: e for n, e in entries.items() if n in keep}
            for kernel, entries in table.items()
        }
    rank = {name: i for i, name in enumerate(IMPLEMENTATION_ORDER)}
    return {
        kernel: dict(sorted(entries.items(), key=lambda item: rank.get(item[0], len(rank))))
        for kernel, entries in table.items()
    }


# -- the input cache ---------------------------------------------------------------------------

_FAMILY = {
    "logsumexp": "rows",
    "softmax": "rows",
    "log_softmax": "rows",
    "softmax_cross_entropy": "rows",
    "sgd_update": "sgd",
    EPOCH: "dataset",
}
_cache: OrderedDict[tuple, list[dict[str, np.ndarray]]] = OrderedDict()


def _touched(shape: tuple, dtype) -> np.ndarray:
    # Written once now, so a preallocated output never page-faults inside a timed call
    # (np.zeros would hand out untouched pages).
    array = np.empty(shape, dtype)
    array.fill(0)
    return array


def _make_inputs(family: str, shape: tuple, dtype: np.dtype, copy: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([copy, dtype.itemsize, *shape])
    if family == "rows":
        n_rows, n_classes = shape
        return {
            "x": rng.standard_normal(shape, dtype=dtype),
            "labels": rng.integers(0, n_classes, n_rows),
            "out": _touched(shape, dtype),
            "reduced": _touched((n_rows,), dtype),
        }
    if family == "sgd":
        return {
            "param": rng.standard_normal(shape, dtype=dtype),
            "grad": rng.standard_normal(shape, dtype=dtype),
            "velocity": _touched(shape, dtype),
        }
    from fastsoftmax.datasets import load_fashion_mnist

    X, y, _, _ = load_fashion_mnist(dtype=dtype.type)
    return {"X": X, "y": y}


def case_inputs(kernel: str, shape: tuple, dtype, copies: int = 1) -> list[dict[str, np.ndarray]]:
    """``copies`` independent input sets for one case, memoised in this process.

    Row kernels share one family of inputs (``x``, ``labels``, preallocated ``out`` and
    ``reduced``); ``sgd_update`` gets ``param``, ``grad`` and ``velocity``; the classifier epoch
    gets Fashion-MNIST's ``X``, ``y`` (``shape`` ignored). The data depend only on the family,
    shape, dtype and copy number, so every entry point benchmarks the same numbers. The least
    recently used sets are dropped beyond 2 GiB.

    Examples
    --------
    >>> from fastsoftmax import benchmark
    >>> first, second = benchmark.case_inputs("softmax", (4, 3), "float32", copies=2)
    >>> first["x"].dtype, first["labels"].shape, bool((first["x"] == second["x"]).all())
    (dtype('float32'), (4,), False)
    """
    family = _FAMILY[kernel]
    dtype = np.dtype(dtype)
    shape = () if family == "dataset" else tuple(shape)  # the data set has its own shape
    key = (family, shape, dtype.str)
    sets = _cache.pop(key, [])
    while len(sets) < copies:
        sets.append(_make_inputs(family, shape, dtype, len(sets)))
    _cache[key] = sets  # most recently used last
    while len(_cache) > 1 and _cached_bytes() > _CACHE_BUDGET:
        _cache.popitem(last=False)
    return sets[:copies]


def _cached_bytes() -> int:
    return sum(a.nbytes for sets in _cache.values() for data in sets for a in data.values())


def clear_inputs() -> None:
    """Drop every memoised input (frees their memory once no runner holds them)."""
    _cache.clear()


def bytes_moved(kernel: str, shape: tuple, dtype) -> int | None:
    """Bytes one call must move at least: its inputs read once and its outputs written once.

    None for the classifier epoch, whose traffic is not one pass over anything.

    Examples
    --------
    >>> from fastsoftmax.benchmark import bytes_moved
    >>> bytes_moved("softmax", (1000, 10), "float32")  # read x, write p
    80000
    >>> bytes_moved("sgd_update", (1000,), "float64")  # read p, g, v; write p, v
    40000
    """
    if kernel not in KERNELS:
        return None
    itemsize = np.dtype(dtype).itemsize
    size = math.prod(shape) * itemsize
    n_rows = shape[0]
    moved = {
        "logsumexp": size + n_rows * itemsize,
        "softmax": 2 * size,
        "log_softmax": 2 * size,
        "softmax_cross_entropy": 2 * size + n_rows * 8,  # int64 labels
        "sgd_update": 5 * size,
    }
    return moved[kernel]


@lru_cache(maxsize=1)
def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache from ``/sys`` (32 MiB where it cannot be read)."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=32 << 20)


def rotation_copies(kernel: str, shape: tuple, dtype) -> int:
    """Input sets to rotate through so that together they span four times the last-level cache.

    Four times, not just over it: caches do not evict in exact LRU order, so a cyclic walk over
    little more than the cache still hits it (an in-place SGD on 41 MB of sets ran above the
    copy ceiling with a 32 MiB L3). At most 64 sets: tiny cases stay in cache, as they would
    in use, and are timed for their per-call overhead.

    Examples
    --------
    >>> from fastsoftmax.benchmark import rotation_copies
    >>> rotation_copies("softmax", (64, 10), "float32")  # 5 KB per call: the cap
    64
    >>> rotation_copies("softmax", (10_000_000, 100), "float64")  # 16 GB per call: one set
    1
    """
    moved = bytes_moved(kernel, shape, dtype)
    if moved is None:
        return 1
    # Bytes the sets occupy: sgd_update reads and writes param and velocity in place.
    footprint = 3 * moved // 5 if kernel == "sgd_update" else moved
    wanted = math.ceil(4 * last_level_cache_bytes() / max(footprint, 1))
    return max(1, min(_MAX_COPIES, wanted))


def _rotating(runners: Sequence[Runner]) -> Runner:
    if len(runners) == 1:
        return runners[0]
    cycle = itertools.cycle(runners)
    return lambda: next(cycle)()


def make_runner(
    kernel: str,
    implementation: str,
    shape: tuple,
    dtype,
    mode: str,
    n_threads: int | None = None,
    *,
    table: Mapping[str, Mapping[str, Implementation]] | None = None,
    copies: int | None = None,
) -> Runner | None:
    """A no-argument callable running one case, rotating through :func:`rotation_copies` sets.

    None when the implementation is not available here or cannot run this case or mode.
    Building a PyTorch runner sets PyTorch's process-wide thread count to ``n_threads``.

    Examples
    --------
    >>> from fastsoftmax.benchmark import make_runner
    >>> run = make_runner("softmax", "numpy", (64, 10), "float32", "out")
    >>> run().shape
    (64, 10)
    >>> make_runner("logsumexp", "numpy", (64, 10), "float32", "out") is None  # no out=
    True
    """
    table = registry(peers=True) if table is None else table
    entry = table.get(kernel, {}).get(implementation)
    if entry is None or mode not in entry.modes:
        return None
    copies = rotation_copies(kernel, shape, dtype) if copies is None else copies
    runners = [entry(data, mode, n_threads) for data in case_inputs(kernel, shape, dtype, copies)]
    if any(run is None for run in runners):
        return None
    return _rotating(runners)


# -- timing -------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds per call, one sample per round, each the mean of ``calls_per_sample`` calls."""

    samples: list[float]
    calls_per_sample: int
    first_call: float

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def spread(self) -> float:
        """Interquartile range of the samples, in seconds."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)


def _calls_per_sample(run: Runner, min_time: float) -> int:
    """Calls that together last about ``min_time``: an estimate, then a timed trial."""
    # The fastest of a few single calls: one slow call (a page fault, a thread pool waking up)
    # would otherwise leave every sample a handful of calls long.
    fastest, spent = math.inf, 0.0
    for _ in range(5):
        start = time.perf_counter()
        run()
        once = time.perf_counter() - start
        fastest, spent = min(fastest, once), spent + once
        if spent >= min_time:
            break
    if fastest >= min_time:
        return 1
    trial = min(_MAX_CALLS_PER_SAMPLE, math.ceil(min_time / max(fastest, 1e-7)))
    start = time.perf_counter()
    for _ in range(trial):
        run()
    per_call = max((time.perf_counter() - start) / trial, 1e-9)
    return max(1, min(_MAX_CALLS_PER_SAMPLE, math.ceil(min_time / per_call)))


def measure(
    runners: Mapping[str, Runner], *, rounds: int = 7, min_time: float = 0.02
) -> dict[str, Timing]:
    """Time each runner: warm-up call, calibration, then ``rounds`` interleaved samples.

    Parameters
    ----------
    runners : mapping of name to no-argument callable
    rounds : int, default 7
        Samples per runner. Each round times every runner once, starting from a different one
        each round, so no runner always follows the same neighbour.
    min_time : float, default 0.02
        Seconds one sample lasts at least (enough calls are averaged), so that timer
        resolution and per-sample jitter stay small.

    Returns
    -------
    dict of name to Timing
        ``first_call`` is the warm-up call (compilation included), never part of a sample.

    Examples
    --------
    >>> from fastsoftmax.benchmark import measure
    >>> timing = measure({"sum": lambda: sum(range(100))}, rounds=3, min_time=0.001)["sum"]
    >>> len(timing.samples), timing.median > 0
    (3, True)
    """
    names = list(runners)
    first_call = {}
    for name in names:
        start = time.perf_counter()
        runners[name]()
        first_call[name] = time.perf_counter() - start
    calls = {name: _calls_per_sample(runners[name], min_time) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of one sample would be charged to one runner
    try:
        for round_index in range(max(1, rounds)):
            shift = round_index % len(names) if names else 0
            for name in names[shift:] + names[:shift]:
                run, count = runners[name], calls[name]
                if len(names) > 1:
                    # Let the previous library's OpenMP/BLAS workers stop spinning: they would
                    # take cores from this sample (TECHNIQUES.md, "thread pools interfere").
                    time.sleep(_SETTLE_SECONDS)
                start = time.perf_counter()
                for _ in range(count):
                    run()
                samples[name].append((time.perf_counter() - start) / count)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing(samples[name], calls[name], first_call[name]) for name in names}


def copy_bandwidth(mib: int = 256, n_threads: int = 1, rounds: int = 5) -> float:
    """GB/s of ``np.copyto`` between two preallocated float32 arrays of ``mib`` MiB.

    Bytes read plus bytes written, per second: the ceiling a one-pass kernel can approach.
    With ``n_threads > 1`` the copy is split into that many chunks copied concurrently (NumPy
    releases the GIL while it copies).

    Examples
    --------
    >>> from fastsoftmax.benchmark import copy_bandwidth
    >>> copy_bandwidth(mib=4, rounds=2) > 0
    True
    """
    n = mib * 2**20 // 4
    source = np.ones(n, np.float32)
    target = _touched((n,), np.float32)
    pool = None
    if n_threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(n_threads)
        pairs = list(
            zip(np.array_split(target, n_threads), np.array_split(source, n_threads), strict=True)
        )

        def copy():
            list(pool.map(lambda pair: np.copyto(*pair), pairs))

    else:
        copy = partial(np.copyto, target, source)
    try:
        timing = measure({"copy": copy}, rounds=rounds, min_time=0.0)["copy"]
    finally:
        if pool is not None:
            pool.shutdown()
    return 2 * source.nbytes / timing.median / 1e9


# -- the environment ----------------------------------------------------------------------------

_VECTOR_FLAG_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "asimd", "sve", "neon")


def cpu_description() -> dict:
    """CPU model, flags and caches from ``/proc/cpuinfo`` and ``/sys`` (py-cpuinfo elsewhere).

    Examples
    --------
    >>> from fastsoftmax.benchmark import cpu_description
    >>> sorted(cpu_description())
    ['caches', 'flags', 'logical_cpus', 'model', 'usable_cpus', 'vector_flags']
    """
    model, flags = "unknown", []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "cpu model") and model == "unknown":
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = value.split()
    if model == "unknown" or not flags:
        try:  # py-cpuinfo is optional: macOS, Windows
            import cpuinfo as py_cpuinfo

            info = py_cpuinfo.get_cpu_info()
            model = info.get("brand_raw", model)
            flags = flags or list(info.get("flags", []))
        except ImportError:
            model = model if model != "unknown" else (platform.processor() or "unknown")
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
        caches[name] = size
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model,
        "flags": flags,
        "vector_flags": [f for f in flags if f.startswith(_VECTOR_FLAG_PREFIXES)],
        "caches": caches,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
    }


def environment_report() -> str:
    """The backends, their build and threading, as ``fastsoftmax info`` prints them."""
    import fastsoftmax

    lines = [
        f"fastsoftmax {fastsoftmax.__version__}  python {platform.python_version()}  "
        f"numpy {np.__version__}  {platform.machine()}  {os.cpu_count()} CPUs",
        f"backend setting: {fastsoftmax.get_backend()!r} ({ENV_VAR}="
        f"{os.environ.get(ENV_VAR, '')!r}); auto runs on {resolve_backend('auto')!r}",
    ]
    for name in backends.BACKENDS:
        try:
            module = backends.load(name)
        except ValueError as exc:
            lines.append(f"  {name:<7} MISSING: {exc}")
            continue
        detail = f"max_threads={module.max_threads()}"
        if name == "numba":
            import numba

            detail += (
                f", numba {numba.__version__}, threading layer "
                f"{numba.config.THREADING_LAYER!r}, SVML {numba.config.USING_SVML}"
            )
        if name == "cython":
            info = module.build_info()
            detail += (
                f", build variant {info['variant']} (of {module.runnable_variants()} runnable "
                f"here), flags '{info['flags']}', OpenMP {info['openmp']}, "
                f"libmvec vector exp {info['libmvec']}"
            )
        lines.append(f"  {name:<7} ok: {detail}")
    return "\n".join(lines)


_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
)


def environment() -> dict:
    """Machine, build, thread and version facts for a benchmark report (JSON-serialisable).

    Call it after the kernels have run once: Numba names its threading layer only then.

    Examples
    --------
    >>> from fastsoftmax.benchmark import environment
    >>> sorted(environment())
    ['backends', 'blas', 'cpu', 'peers', 'platform', 'thread_variables', 'versions']
    """
    import fastsoftmax

    found: dict = {
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "versions": {
            "fastsoftmax": fastsoftmax.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "thread_variables": {name: os.environ.get(name) for name in _THREAD_VARIABLES},
        "backends": {},
        "peers": _peers.versions(),
        "blas": [],
    }
    for name in backends.BACKENDS:
        if not backends.is_available(name):
            found["backends"][name] = None
            continue
        module = backends.load(name)
        detail = {"max_threads": module.max_threads()}
        if name == "numba":
            import numba

            found["versions"]["numba"] = numba.__version__
            try:
                layer = numba.threading_layer()
            except ValueError:  # no parallel region has run yet
                layer = None
            detail.update(
                svml=bool(numba.config.USING_SVML),
                threading_layer_setting=numba.config.THREADING_LAYER,
                threading_layer=layer,
            )
        if name == "cython":
            detail.update(module.build_info())
        found["backends"][name] = detail
    torch = sys.modules.get("torch")
    if torch is not None:
        found["peers"]["torch_threads"] = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_info

        found["blas"] = [
            {k: pool.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for pool in threadpool_info()
        ]
    except ImportError:
        pass
    return found


def _environment_lines(env: dict, n_threads: int | None) -> list[str]:
    cpu = env["cpu"]
    caches = ", ".join(f"{k} {v}" for k, v in cpu["caches"].items())
    lines = [
        f"CPU: {cpu['model']}; {cpu['usable_cpus']} of {cpu['logical_cpus']} logical CPUs "
        f"usable; caches {caches or 'unknown'}",
        f"CPU vector flags: {' '.join(cpu['vector_flags']) or 'none reported'}",
    ]
    numba_info = env["backends"].get("numba")
    if numba_info:
        lines.append(
            f"Numba {env['versions']['numba']}: threading layer in use "
            f"{numba_info['threading_layer']!r} (setting {numba_info['threading_layer_setting']!r}"
            f"), SVML {numba_info['svml']}, max threads {numba_info['max_threads']}"
        )
    cython_info = env["backends"].get("cython")
    if cython_info:
        lines.append(
            f"Cython build: variant {cython_info['variant']}, flags '{cython_info['flags']}', "
            f"OpenMP {cython_info['openmp']}, "
            f"libmvec {cython_info['libmvec']}, max threads {cython_info['max_threads']}"
        )
    peers = {k: v for k, v in env["peers"].items() if k != "torch_threads"}
    lines.append("peers: " + ", ".join(f"{k} {v}" for k, v in peers.items()))
    set_variables = {k: v for k, v in env["thread_variables"].items() if v is not None}
    blas = ", ".join(
        " ".join(filter(None, (pool["internal_api"], pool["version"])))
        + f" ({pool['num_threads']} threads)"
        for pool in env["blas"]
    )
    threads = "all available" if n_threads is None else str(n_threads)
    lines.append(
        f"threads: n_threads={threads}; torch {env['peers'].get('torch_threads', '-')}; "
        f"BLAS {blas or 'unknown'}; environment {set_variables or 'sets no thread variable'}"
    )
    return lines


# -- the bench ----------------------------------------------------------------------------------


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """``"4096x1000,7850"`` -> ``[(4096, 1000), (7850,)]``.

    Examples
    --------
    >>> from fastsoftmax.benchmark import parse_shapes
    >>> parse_shapes("4096x1000, 1_000_000x10,7850")
    [(4096, 1000), (1000000, 10), (7850,)]
    """
    shapes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        try:
            shape = tuple(int(part) for part in item.split("x"))
        except ValueError:
            raise ValueError(
                f"a shape is ROWSxCOLUMNS or a size, like 4096x1000 or 7850: {item!r}"
            ) from None
        if len(shape) > 2 or min(shape) < 1:
            raise ValueError(f"a shape has one or two positive sizes, got {item!r}")
        shapes.append(shape)
    return shapes


def _shapes_for(kernel: str, shapes: Sequence[tuple] | None, quick: bool) -> list[tuple]:
    """Row kernels take the 2-D shapes; sgd_update the 1-D sizes (or, if none, the 2-D ones)."""
    if shapes is None:
        if kernel == "sgd_update":
            return list(QUICK_SGD_SIZES if quick else DEFAULT_SGD_SIZES)
        return list(QUICK_SHAPES if quick else DEFAULT_SHAPES)
    matrices = [s for s in shapes if len(s) == 2]
    if kernel == "sgd_update":
        return [s for s in shapes if len(s) == 1] or matrices
    return matrices


def _format_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:7.2f} {unit}"
    return f"{seconds / 1e-9:7.0f} ns"


def _format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


_COLUMNS = (
    ("implementation", 14, "<"),
    ("mode", 5, "<"),
    ("median", 10, ">"),
    ("IQR", 6, ">"),
    ("GB/s", 6, ">"),
    ("ceiling", 7, ">"),
    ("vs numpy", 8, ">"),
    ("vs torch", 8, ">"),
    ("calls/sample", 12, ">"),
)


def _table_line(values: Sequence[str]) -> str:
    return "  " + " ".join(
        f"{value:{align}{width}}" for value, (_, width, align) in zip(values, _COLUMNS, strict=True)
    )


def _case_block(rows: list[dict]) -> str:
    first = rows[0]
    moved = first["bytes_moved"]
    traffic = f"moves {_format_bytes(moved)} per call" if moved else "one epoch of fit"
    sets = "one input set" if first["copies"] == 1 else f"{first['copies']} input sets rotated"
    lines = [
        f"{first['kernel']} | {first['dtype']} | {_shape_text(first['shape'])}   "
        f"({traffic}; {sets})",
        _table_line([name for name, _, _ in _COLUMNS]),
    ]
    for row in rows:
        speedup, vs_torch = row["speedup_vs_numpy"], row.get("speedup_vs_torch")
        lines.append(
            _table_line(
                [
                    row["implementation"],
                    row["mode"],
                    _format_seconds(row["median_s"]),
                    f"{100 * row['spread_s'] / row['median_s']:.1f}%",
                    f"{row['gbps']:.1f}" if row["gbps"] is not None else "-",
                    f"{row['ceiling_pct']:.0f}%" if row["ceiling_pct"] is not None else "-",
                    f"{speedup:.2f}x" if speedup is not None else "-",
                    f"{vs_torch:.2f}x" if vs_torch is not None else "-",
                    str(row["calls_per_sample"]),
                ]
            )
        )
    return "\n".join(lines)


@dataclass
class Report:
    """What :func:`bench` measured; ``print(report)`` shows it, :meth:`to_dict` is the JSON."""

    environment: dict
    settings: dict
    ceiling: dict
    first_calls: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def header(self) -> str:
        ceiling = self.ceiling
        settings = self.settings
        notes = [
            f"memory ceiling: np.copyto of {ceiling['mib']} MiB float32 (read + write) "
            f"{ceiling['gbps']:.1f} GB/s (1 thread {ceiling['gbps_1_thread']:.1f}, "
            f"{ceiling['threads']} threads {ceiling['gbps_n_threads']:.1f}); in-place updates "
            "(sgd_update) write back lines they have just read and can pass it",
            f"timing: {settings['rounds']} interleaved rounds, samples >= "
            f"{settings['min_time'] * 1e3:g} ms; median, IQR in % of the median; GB/s = input "
            "read once + output written once; vs numpy / vs torch = time of the NumPy reference / "
            "of PyTorch in the same mode (or allocating) over this row's time",
            "modes: alloc = the call allocates its result; out = into preallocated arrays "
            "(out=, grad_out=, in place for sgd_update, SGD momentum 0.9)",
        ]
        lines = [environment_report(), *_environment_lines(self.environment, settings["n_threads"])]
        for note in notes:
            lines += textwrap.wrap(note, 100, subsequent_indent="  ")
        return "\n".join(lines)

    def first_call_text(self) -> str:
        by_implementation: dict[str, list[str]] = {}
        for entry in self.first_calls:
            if entry["seconds"] >= 0.01:
                by_implementation.setdefault(entry["implementation"], []).append(
                    f"{entry['kernel']}/{entry['dtype']} {entry['seconds']:.2f} s"
                )
        lines = [
            "first call on a tiny input (Numba compilation, lazy imports), excluded from every "
            "timing; calls under 10 ms not listed:"
        ]
        for name, items in by_implementation.items():
            lines += textwrap.wrap(
                ", ".join(items), 100, initial_indent=f"  {name:<8} ", subsequent_indent=" " * 11
            )
        if not by_implementation:
            lines.append("  none")
        return "\n".join(lines)

    def table(self) -> str:
        """One block per kernel x dtype x shape."""
        groups: dict[tuple, list[dict]] = {}
        for row in self.results:
            key = (row["kernel"], row["dtype"], tuple(row["shape"]))
            groups.setdefault(key, []).append(row)
        return "\n\n".join(_case_block(rows) for rows in groups.values())

    def __str__(self) -> str:
        parts = [self.header(), self.first_call_text(), self.table()]
        if self.notes:
            parts.append("\n".join(self.notes))
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return f"<Report: {len(self.results)} timings; print(report) shows them>"

    def to_dict(self) -> dict:
        return {
            "environment": self.environment,
            "settings": self.settings,
            "ceiling": self.ceiling,
            "first_calls": self.first_calls,
            "results": self.results,
            "notes": self.notes,
        }

    def save_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    def plot(self, path: str | os.PathLike) -> None:
        """Bar charts of GB/s per implementation and shape, one panel per kernel and dtype.

        Bars show the preallocated mode where an implementation has it, otherwise the
        allocating one (hatched); the dashed line is the memory ceiling. Needs matplotlib.
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("--plot needs matplotlib: pip install matplotlib") from exc
        chosen: dict[tuple, dict] = {}
        for row in self.results:
            if row["gbps"] is None:
                continue
            key = (row["kernel"], row["dtype"], tuple(row["shape"]), row["implementation"])
            if key not in chosen or row["mode"] == "out":
                chosen[key] = row
        panels = sorted({(k[0], k[1]) for k in chosen}, key=lambda p: (_kernel_rank(p[0]), p[1]))
        if not panels:
            raise ValueError("nothing to plot: no result has a GB/s figure")
        implementations = [
            n for n in IMPLEMENTATION_ORDER if any(k[3] == n for k in chosen)
        ] + sorted({k[3] for k in chosen} - set(IMPLEMENTATION_ORDER))
        colours = dict(zip(implementations, plt.get_cmap("tab10").colors, strict=False))
        dtypes = sorted({p[1] for p in panels})
        kernels = sorted({p[0] for p in panels}, key=_kernel_rank)
        # Tall enough for every bar's label: about 0.13 inch per bar in the fullest panel.
        most_shapes = max(len({k[2] for k in chosen if k[:2] == panel}) for panel in panels)
        panel_inches = 1.0 + 0.13 * most_shapes * len(implementations)
        figure, axes = plt.subplots(
            len(kernels),
            len(dtypes),
            figsize=(6.5 * len(dtypes), 0.6 + panel_inches * len(kernels)),
            squeeze=False,
        )
        height = 0.8 / len(implementations)
        for (kernel, dtype), ax in zip(itertools.product(kernels, dtypes), axes.flat, strict=True):
            shapes = sorted({k[2] for k in chosen if k[:2] == (kernel, dtype)}, key=math.prod)
            for i, name in enumerate(implementations):
                for j, shape in enumerate(shapes):
                    row = chosen.get((kernel, dtype, shape, name))
                    if row is None:
                        continue
                    bar = ax.barh(
                        j + (i - (len(implementations) - 1) / 2) * height,
                        row["gbps"],
                        height,
                        color=colours[name],
                        hatch="//" if row["mode"] == "alloc" else None,
                        edgecolor="white" if row["mode"] == "alloc" else None,
                    )
                    ax.bar_label(bar, fmt="%.1f", fontsize=6.5, padding=2)
            ax.axvline(self.ceiling["gbps"], color="black", linestyle="--", linewidth=1)
            ax.set_yticks(range(len(shapes)), [_shape_text(s) for s in shapes])
            ax.set_title(f"{kernel}, {dtype}", fontsize=10)
            ax.set_xlabel("GB/s (dashed line: memory copy ceiling)")
            ax.set_xlim(0, 1.12 * max(self.ceiling["gbps"], *(r["gbps"] for r in chosen.values())))
            ax.invert_yaxis()
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[name]) for name in implementations]
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="grey", edgecolor="white", hatch="//"))
        figure.legend(
            handles,
            [*implementations, "allocating (no out=)"],
            loc="lower center",
            ncol=min(len(handles), 4),
            frameon=False,
        )
        threads = self.settings["n_threads"] or "all"
        figure.suptitle(
            f"GB/s per implementation (out= where offered) - {self.environment['cpu']['model']}"
            f", threads: {threads}",
            fontsize=10,
        )
        legend_inches = 0.3 * math.ceil(len(handles) / 4)
        inches = figure.get_figheight()
        figure.tight_layout(rect=(0, legend_inches / inches, 1, 1 - 0.3 / inches))
        figure.savefig(path, dpi=110)
        plt.close(figure)


def _dtype_name(dtype) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in ("float32", "float64"):
        raise ValueError(f"the kernels take float32 and float64, got dtype {dtype!r}")
    return name


def _kernel_rank(kernel: str) -> int:
    order = (*KERNELS, EPOCH)
    return order.index(kernel) if kernel in order else len(order)


def _speedup(rows: list[dict], row: dict, reference: str = REFERENCE) -> float | None:
    """How many times faster ``row`` ran than ``reference`` in the same mode (or allocating)."""
    by_mode = {r["mode"]: r for r in rows if r["implementation"] == reference}
    reference = by_mode.get(row["mode"]) or by_mode.get("alloc") or by_mode.get("out")
    return reference["median_s"] / row["median_s"] if reference else None


def _warm_up(table, cases, n_threads) -> list[dict]:
    """First call of every implementation x kernel x dtype on a tiny input, timed."""
    first_calls = []
    seen = set()
    for kernel, dtype, _ in cases:
        if kernel == EPOCH or (kernel, dtype) in seen:
            continue
        seen.add((kernel, dtype))
        tiny = (4,) if kernel == "sgd_update" else (2, 3)
        data = case_inputs(kernel, tiny, dtype)[0]
        for name, entry in table[kernel].items():
            run = entry(data, entry.modes[0], n_threads)
            if run is None:
                continue
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            first_calls.append(
                {"implementation": name, "kernel": kernel, "dtype": dtype, "seconds": seconds}
            )
    return first_calls


def bench(
    kernels: Sequence[str] | None = None,
    shapes: Sequence[tuple[int, ...]] | None = None,
    dtypes: Sequence[str] | None = None,
    *,
    implementations: Sequence[str] | None = None,
    compare_peers: bool = False,
    n_threads: int | None = None,
    rounds: int | None = None,
    min_time: float | None = None,
    quick: bool = False,
    ceiling_mib: int | None = None,
    json_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    verbose: bool = True,
) -> Report:
    """Time every kernel x dtype x shape x implementation and print a table per case.

    Each case reports, per implementation and mode, the median time per call, the spread
    (interquartile range), GB/s (input read once + output written once), the share of the
    memory ceiling (a large ``np.copyto`` measured first) and the speed-up over the NumPy
    reference. Numba compilation happens in a warm-up on tiny inputs and is reported apart.

    Parameters
    ----------
    kernels : sequence of str, optional
        From :data:`KERNELS` and ``"classifier_epoch"``; default all (the epoch only when
        Fashion-MNIST is found, and not with ``quick``).
    shapes : sequence of tuple, optional
        2-D ``(rows, classes)`` shapes for the row kernels and 1-D sizes for ``sgd_update``
        (which takes the 2-D shapes when no size is given). Default :data:`DEFAULT_SHAPES` and
        :data:`DEFAULT_SGD_SIZES` (the ``QUICK_*`` ones with ``quick``).
    dtypes : sequence of str, optional
        Default float32 and float64 (float32 with ``quick``).
    implementations : sequence of str, optional
        Backends and peers to time; default all available (peers with ``compare_peers``).
    compare_peers : bool, default False
        Add SciPy, PyTorch and JAX where installed.
    n_threads : int, optional
        Threads for the fastsoftmax calls (``n_threads=``) and PyTorch
        (``torch.set_num_threads``, restored afterwards); default all.
    rounds : int, optional
        Samples per implementation; default 7 (3 with ``quick``).
    min_time : float, optional
        Seconds per sample at least; default 0.02 (0.005 with ``quick``).
    quick : bool, default False
        Small shapes, float32, fewer rounds: done in well under 30 s.
    ceiling_mib : int, optional
        Size of the copy that measures the ceiling; default 256 MiB (64 with ``quick``).
    json_path, plot_path : path, optional
        Also write the report as JSON, and a PNG of GB/s per implementation (matplotlib).
    verbose : bool, default True
        Print the header, then each case's table as soon as it is measured.

    Returns
    -------
    Report
        ``print(report)`` shows everything; ``report.results`` holds one dict per row.

    Examples
    --------
    >>> from fastsoftmax.benchmark import bench
    >>> report = bench(["softmax"], [(64, 10)], ["float64"], implementations=["numpy"],
    ...                rounds=1, min_time=0.001, ceiling_mib=4, verbose=False)
    >>> [(r["implementation"], r["mode"], r["speedup_vs_numpy"]) for r in report.results]
    [('numpy', 'alloc', 1.0), ('numpy', 'out', 1.0)]
    """
    rounds = rounds if rounds is not None else (3 if quick else 7)
    min_time = min_time if min_time is not None else (0.005 if quick else 0.02)
    ceiling_mib = ceiling_mib if ceiling_mib is not None else (64 if quick else 256)
    if dtypes is None:
        dtypes = ["float32"] if quick else ["float32", "float64"]
    dtypes = [_dtype_name(dtype) for dtype in dtypes]
    notes = []
    if kernels is None:
        kernels = list(KERNELS)
        if not quick:
            from fastsoftmax.datasets import default_fashion_mnist_path

            if default_fashion_mnist_path() is not None:
                kernels.append(EPOCH)
            else:
                notes.append(f"{EPOCH}: skipped, Fashion-MNIST not found (set FASTSOFTMAX_DATA)")
    unknown = set(kernels) - {*KERNELS, EPOCH}
    if unknown:
        raise ValueError(f"unknown kernels {sorted(unknown)}: expected some of {[*KERNELS, EPOCH]}")
    # Naming a peer in `implementations` is asking to compare with it.
    compare_peers = compare_peers or bool(set(implementations or ()) & set(_peers.HOW_TO_GET))
    table = registry(peers=compare_peers, implementations=implementations)
    if not any(table[k] for k in kernels):
        raise ValueError(
            f"no implementation to time: asked for {implementations}, available "
            f"{sorted({n for entries in registry(peers=True).values() for n in entries})}"
        )
    cases = [
        (kernel, dtype, shape)
        for kernel in kernels
        for dtype in dtypes
        for shape in ([None] if kernel == EPOCH else _shapes_for(kernel, shapes, quick))
    ]
    say = partial(print, flush=True) if verbose else (lambda *args, **kwargs: None)

    with _peers.preserved_threads():
        first_calls = _warm_up(table, cases, n_threads)
        usable = cpu_description()["usable_cpus"] or 1
        copy_threads = n_threads or usable
        one = copy_bandwidth(ceiling_mib, 1)
        many = copy_bandwidth(ceiling_mib, copy_threads) if copy_threads > 1 else one
        ceiling = {
            "mib": ceiling_mib,
            "gbps": max(one, many),
            "gbps_1_thread": one,
            "gbps_n_threads": many,
            "threads": copy_threads,
        }
        settings = {
            "kernels": list(kernels),
            "dtypes": dtypes,
            "implementations": sorted({n for k in kernels for n in table[k]}),
            "compare_peers": compare_peers,
            "n_threads": n_threads,
            "rounds": rounds,
            "min_time": min_time,
            "quick": quick,
        }
        report = Report(environment(), settings, ceiling, first_calls, notes=notes)
        say(report.header() + "\n\n" + report.first_call_text() + "\n")
        for kernel, dtype, shape in cases:
            rows = _bench_case(table, kernel, dtype, shape, n_threads, rounds, min_time, ceiling)
            if isinstance(rows, str):
                notes.append(rows)
                say(rows + "\n")
                continue
            report.results.extend(rows)
            say(_case_block(rows) + "\n")
    for note in notes:
        say(note)
    if json_path is not None:
        report.save_json(json_path)
        say(f"JSON written to {json_path}")
    if plot_path is not None:
        report.plot(plot_path)
        say(f"plot written to {plot_path}")
    return report


def _bench_case(table, kernel, dtype, shape, n_threads, rounds, min_time, ceiling):
    """The rows of one kernel x dtype x shape, or a note saying why it was skipped."""
    if kernel == EPOCH:
        try:
            shape = case_inputs(EPOCH, (), dtype)[0]["X"].shape
        except (FileNotFoundError, ImportError) as exc:
            return f"{EPOCH} {dtype}: skipped ({exc})"
        rounds = min(rounds, 3)  # an epoch takes seconds: three samples tell enough
    copies = rotation_copies(kernel, shape, dtype)
    runners = {}
    for name, entry in table[kernel].items():
        for mode in entry.modes:
            run = make_runner(kernel, name, shape, dtype, mode, n_threads, table=table)
            if run is not None:
                runners[(name, mode)] = run
    if not runners:
        return f"{kernel} {dtype} {_shape_text(shape)}: no implementation can run it"
    timings = measure(
        {f"{name}/{mode}": run for (name, mode), run in runners.items()},
        rounds=rounds,
        min_time=min_time,
    )
    moved = bytes_moved(kernel, shape, dtype)
    rows = []
    for name, mode in runners:
        timing = timings[f"{name}/{mode}"]
        gbps = moved / timing.median / 1e9 if moved else None
        rows.append(
            {
                "kernel": kernel,
                "dtype": dtype,
                "shape": list(shape),
                "implementation": name,
                "mode": mode,
                "n_threads": n_threads,
                "median_s": timing.median,
                "spread_s": timing.spread,
                "min_s": min(timing.samples),
                "samples_s": timing.samples,
                "calls_per_sample": timing.calls_per_sample,
                "first_call_s": timing.first_call,
                "copies": copies,
                "bytes_moved": moved,
                "gbps": gbps,
                "ceiling_pct": 100 * gbps / ceiling["gbps"] if gbps else None,
            }
        )
    for row in rows:
        row["speedup_vs_numpy"] = _speedup(rows, row)
        row["speedup_vs_torch"] = _speedup(rows, row, "torch")
    return rows


# -- the quick comparison of ``fastsoftmax info`` ------------------------------------------------

QUICK_CASES = (
    ("softmax", (4096, 1000), "float32"),
    ("softmax", (1_000_000, 10), "float64"),
    ("softmax_cross_entropy", (4096, 1000), "float32"),
    ("softmax_cross_entropy", (1_000_000, 10), "float64"),
)


def compare(cases=QUICK_CASES, backends: list[str] | None = None, rounds: int = 7) -> list[dict]:
    """Median seconds per (kernel, shape, dtype, backend), preallocated outputs, interleaved.

    Examples
    --------
    >>> from fastsoftmax.benchmark import compare
    >>> [row["backend"] for row in compare([("softmax", (8, 3), "float64")], ["numpy"], 1)]
    ['numpy']
    """
    table = registry(implementations=backends)
    rows = []
    for kernel, shape, dtype in cases:
        names = list(table[kernel])
        runners = {
            name: make_runner(kernel, name, shape, dtype, "out", table=table) for name in names
        }
        timings = measure(runners, rounds=rounds)
        reference = timings[REFERENCE].median if REFERENCE in timings else None
        for name in names:
            median = timings[name].median
            rows.append(
                {
                    "kernel": kernel,
                    "shape": shape,
                    "dtype": dtype,
                    "backend": name,
                    "median_s": median,
                    "spread_s": timings[name].spread,
                    "speedup_vs_numpy": reference / median if reference else None,
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    """The table of :func:`compare` as ``fastsoftmax info`` prints it."""
    lines = [
        f"{'kernel':<22} {'shape':<13} {'dtype':<8} {'backend':<7} "
        f"{'median':>10} {'spread':>10} {'vs numpy':>9}"
    ]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        speedup = f"{r['speedup_vs_numpy']:.1f}x" if r["speedup_vs_numpy"] else "-"
        lines.append(
            f"{r['kernel']:<22} {shape:<13} {r['dtype']:<8} {r['backend']:<7} "
            f"{r['median_s'] * 1e3:>8.2f}ms {r['spread_s'] * 1e3:>8.2f}ms {speedup:>9}"
        )
    return "\n".join(lines)
