"""The Cython backend: the widest compiled variant of the kernels that this CPU can run.

``setup.py`` compiles ``src_cython/_cython_kernels.pyx`` once per target: ``baseline`` (the
compiler's default, portable), and on x86-64 ``x86_64_v3`` (AVX2 + FMA) and ``x86_64_v4``
(AVX-512). The baseline module reports the CPU's level; the widest variant that was built and
runs here is imported once, and its kernels are this module's. Set
``FASTSOFTMAX_CYTHON_VARIANT`` to one of :data:`VARIANTS` (or ``x86-64-v3``, ``x86-64-v4``) to
force a variant (to compare them,
or to rule one out); asking for one this CPU cannot run is an error, not a silent fallback.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from fastsoftmax.backends import _cython_kernels as _baseline

#: Variant name -> the x86-64 level it needs, widest first.
VARIANTS = {"x86_64_v4": 4, "x86_64_v3": 3, "baseline": 0}
ENV_VARIANT = "FASTSOFTMAX_CYTHON_VARIANT"


def load_variant(name: str) -> ModuleType | None:
    """The compiled module of variant ``name``, or None if it was not built."""
    if name == "baseline":
        return _baseline
    try:
        return importlib.import_module(f"{_baseline.__name__}_{name}")
    except ImportError:
        return None


def runnable_variants() -> list[str]:
    """The variants built here that this CPU can run, widest first."""
    level = _baseline.x86_64_level()
    return [
        name
        for name, required in VARIANTS.items()
        if required <= level and load_variant(name) is not None
    ]


def _chosen_variant() -> str:
    runnable = runnable_variants()
    # x86-64-v3, as compilers and the README spell it, or x86_64_v3, as module names do.
    setting = os.environ.get(ENV_VARIANT, "").strip()
    forced = setting.replace("-", "_")
    if not forced:
        return runnable[0]
    if forced not in VARIANTS:
        raise ValueError(f"{ENV_VARIANT}={setting!r}: expected one of {list(VARIANTS)}")
    if forced not in runnable:
        raise ValueError(
            f"{ENV_VARIANT}={setting!r}: this variant was not built or this CPU cannot run it "
            f"(runnable here: {runnable})"
        )
    return forced


variant = _chosen_variant()
_kernels = load_variant(variant)
# The loaded variant's raw kernels, max_threads, exp and x86_64_level become this module's
# names (a module __getattr__ would add a microsecond to every small call).
globals().update(
    (name, getattr(_kernels, name)) for name in dir(_kernels) if not name.startswith("_")
)


def build_info() -> dict:
    """The loaded variant, its compiler flags, OpenMP and the exp its loops use."""
    return {"variant": variant, **_kernels.build_info()}


def describe() -> dict:
    """Facts for ``fastsoftmax info`` and the bench header."""
    return {**build_info(), "runnable_variants": runnable_variants()}


def shortfalls() -> list[str]:
    """What this build lacks that makes it slower than the Cython backend should be."""
    built = build_info()
    found = []
    if not built["openmp"]:
        found.append(
            "built without OpenMP, so it runs on one thread: reinstall with a compiler that has "
            "OpenMP (GCC, or clang with libomp)"
        )
    return found
