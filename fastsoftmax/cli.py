"""Command line: ``python -m fastsoftmax info`` (or the ``fastsoftmax`` script)."""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax._config import ENV_VAR, resolve_backend


def environment_report() -> str:
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
                f", flags '{info['flags']}', OpenMP {info['openmp']}, "
                f"libmvec vector exp {info['libmvec']}"
            )
        lines.append(f"  {name:<7} ok: {detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastsoftmax", description=fastsoftmax.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser(
        "info", help="backends, build flags, and a quick speed comparison of the backends"
    )
    info.add_argument("--no-timing", action="store_true", help="skip the speed comparison")
    args = parser.parse_args(argv)

    if args.command == "info":
        print(environment_report())
        if not args.no_timing:
            from fastsoftmax.benchmark import compare, format_table

            compile_seconds = fastsoftmax.warmup()
            print(
                "\nwarm-up (Numba compilation) seconds: "
                + ", ".join(f"{k} {v:.1f}" for k, v in compile_seconds.items())
            )
            print("\nmedian of 7 interleaved rounds, outputs preallocated:")
            print(format_table(compare()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
