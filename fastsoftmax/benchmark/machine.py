"""The machine a benchmark ran on: CPU, backends, threads and versions.

* :func:`cpu_description` reads the CPU model, vector flags and caches (``/proc``, ``/sys``, or
  py-cpuinfo elsewhere).
* Every backend describes itself (``max_threads()`` and ``describe()``, see
  :mod:`fastsoftmax.backends`); :func:`environment_report` (``fastsoftmax info``, the head of
  the bench's report) and :func:`environment` (the JSON report) list those facts as they come,
  so a backend's new facts show up here without a change.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np

from fastsoftmax import backends
from fastsoftmax._config import ENV_VAR, resolve_backend
from fastsoftmax.benchmark import peers

_VECTOR_FLAG_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "asimd", "sve", "neon")

_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
)


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


def backend_facts(name: str) -> dict:
    """``max_threads`` and the ``describe()`` facts of backend ``name`` (loaded if need be).

    Examples
    --------
    >>> from fastsoftmax.benchmark.machine import backend_facts
    >>> backend_facts("numpy")["max_threads"]
    1
    """
    module = backends.load(name)
    return {"max_threads": module.max_threads(), **module.describe()}


def facts_text(facts: dict) -> str:
    """``key=value`` pairs, as the reports print a backend's facts.

    Examples
    --------
    >>> from fastsoftmax.benchmark.machine import facts_text
    >>> facts_text({"max_threads": 2, "flags": "-O3", "openmp": True})
    "max_threads=2, flags='-O3', openmp=True"
    """
    return ", ".join(f"{key}={value!r}" for key, value in facts.items())


def environment_report() -> str:
    """The backends and what each says about itself, as ``fastsoftmax info`` prints them."""
    import fastsoftmax

    lines = [
        f"fastsoftmax {fastsoftmax.__version__}  python {platform.python_version()}  "
        f"numpy {np.__version__}  {platform.machine()}  {os.cpu_count()} CPUs",
        f"backend setting: {fastsoftmax.get_backend()!r} ({ENV_VAR}="
        f"{os.environ.get(ENV_VAR, '')!r}); auto runs on {resolve_backend('auto')!r}",
    ]
    for name in backends.BACKENDS:
        try:
            facts = backend_facts(name)
        except ValueError as exc:
            lines.append(f"  {name:<7} MISSING: {exc}")
            continue
        lines.append(f"  {name:<7} ok: {facts_text(facts)}")
        lines += [f"  {'':<7} SLOW: {reason}" for reason in backends.shortfalls(name)]
    return "\n".join(lines)


def environment() -> dict:
    """Machine, build, thread and version facts for a benchmark report (JSON-serialisable).

    ``backends`` holds each backend's facts (None where it is missing); a fact named after a
    module the backend imported (its library's version) is also listed in ``versions``. Call it
    after the kernels have run once: some facts (a threading layer) are known only then.

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
        "peers": {**peers.versions(), **peers.thread_facts()},
        "blas": [],
    }
    for name in backends.BACKENDS:
        if not backends.is_available(name):
            found["backends"][name] = None
            continue
        facts = backend_facts(name)
        found["backends"][name] = facts
        found["versions"].update(
            {k: v for k, v in facts.items() if isinstance(v, str) and k in sys.modules}
        )
    try:
        from threadpoolctl import threadpool_info

        found["blas"] = [
            {k: pool.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for pool in threadpool_info()
        ]
    except ImportError:
        pass
    return found


def environment_lines(env: dict, n_threads: int | None) -> list[str]:
    """The CPU, peers and threads of :func:`environment`, as the bench's header prints them."""
    cpu = env["cpu"]
    caches = ", ".join(f"{k} {v}" for k, v in cpu["caches"].items())
    lines = [
        f"CPU: {cpu['model']}; {cpu['usable_cpus']} of {cpu['logical_cpus']} logical CPUs "
        f"usable; caches {caches or 'unknown'}",
        f"CPU vector flags: {' '.join(cpu['vector_flags']) or 'none reported'}",
    ]
    versions = {k: v for k, v in env["peers"].items() if k in peers.HOW_TO_GET}
    lines.append("peers: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    set_variables = {k: v for k, v in env["thread_variables"].items() if v is not None}
    blas = ", ".join(
        " ".join(filter(None, (pool["internal_api"], pool["version"])))
        + f" ({pool['num_threads']} threads)"
        for pool in env["blas"]
    )
    threads = "all available" if n_threads is None else str(n_threads)
    peer_threads = "; ".join(
        f"{name} {env['peers'].get(f'{name}_threads', '-')}" for name in peers.THREADED
    )
    lines.append(
        f"threads: n_threads={threads}; {peer_threads}; "
        f"BLAS {blas or 'unknown'}; environment {set_variables or 'sets no thread variable'}"
    )
    return lines
