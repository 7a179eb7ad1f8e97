"""Command line: ``python -m fastsoftmax info`` and ``bench`` (or the ``fastsoftmax`` script)."""

from __future__ import annotations

import argparse
import sys

import fastsoftmax
from fastsoftmax import train

# environment_report is re-exported: `info` printed it from here before it moved next to the
# bench's header.
from fastsoftmax.benchmark import REFERENCE, environment_report

__all__ = ["environment_report", "main"]


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from fastsoftmax.benchmark import EPOCH, KERNELS, ndim, parse_shapes

    vector_kernels = ", ".join(k for k in KERNELS if ndim(k) == 1)

    parser.add_argument(
        "--quick", action="store_true", help="small shapes, float32, 3 rounds (< 30 s)"
    )
    parser.add_argument(
        "--compare-peers",
        action="store_true",
        help="add SciPy, PyTorch and JAX where installed",
    )
    parser.add_argument(
        "--kernels",
        type=_comma_list,
        metavar="K,K",
        help=f"some of {', '.join((*KERNELS, EPOCH))} (default all)",
    )
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        metavar="RxC,N",
        help=f"e.g. 4096x1000,64x10,7850: ROWSxCLASSES for the row kernels, a size N for "
        f"{vector_kernels}",
    )
    parser.add_argument(
        "--dtype",
        type=_comma_list,
        metavar="D,D",
        help="float32, float64 or both comma-separated (default both; float32 with --quick)",
    )
    parser.add_argument(
        "--impls",
        type=_comma_list,
        metavar="I,I",
        help="only these implementations, e.g. numpy,cython,torch",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="n_threads for the kernels and PyTorch"
    )
    parser.add_argument(
        "--rounds", type=int, metavar="N", help="samples per implementation (default 7)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        metavar="SECONDS",
        help="each sample lasts at least this long (default 0.02)",
    )
    parser.add_argument(
        "--ceiling-mib",
        type=int,
        metavar="MIB",
        help="size of the np.copyto measuring the memory ceiling (default 256)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument(
        "--plot", metavar="PATH.png", help="also plot GB/s per implementation (matplotlib)"
    )


def _run_bench(args: argparse.Namespace) -> int:
    from fastsoftmax.benchmark import bench

    if args.threads is not None and args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    try:
        bench(
            args.kernels,
            args.shapes,
            args.dtype,
            implementations=args.impls,
            compare_peers=args.compare_peers,
            n_threads=args.threads,
            rounds=args.rounds,
            min_time=args.min_time,
            quick=args.quick,
            ceiling_mib=args.ceiling_mib,
            json_path=args.json,
            plot_path=args.plot,
        )
    except (ValueError, TypeError, ImportError) as exc:
        raise SystemExit(f"fastsoftmax bench: {exc}") from exc
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastsoftmax", description=fastsoftmax.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser(
        "info", help="backends, build flags, and a quick speed comparison of the backends"
    )
    info.add_argument("--no-timing", action="store_true", help="skip the speed comparison")
    bench = commands.add_parser(
        "bench",
        help=f"time every kernel against {REFERENCE} (and peers), with GB/s and the memory ceiling",
        description="Median time, spread, GB/s, % of the memory ceiling and speed-up over the "
        f"{REFERENCE} reference, per kernel x dtype x shape x implementation.",
    )
    _add_bench_arguments(bench)
    train.add_arguments(
        commands.add_parser(
            "train",
            help="fit a SoftmaxRegression (digits by default) and report accuracy and time",
        )
    )
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
    if args.command == "bench":
        return _run_bench(args)
    if args.command == "train":
        return train.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
