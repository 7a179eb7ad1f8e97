"""Command line: ``fastsoftmax train``, ``predict``, ``info`` and ``bench`` (or ``python -m
fastsoftmax ...``).

A user's mistake ends the command with ``fastsoftmax <command>: error: <message>`` on stderr and
exit status 2, as argparse does for a bad option; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator

import fastsoftmax
from fastsoftmax import predict, train

# environment_report is re-exported: `info` printed it from here before it moved next to the
# bench's header.
from fastsoftmax.benchmark import REFERENCE, environment_report
from fastsoftmax.train import positive_int

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
        "--interleaved",
        action="store_true",
        help="the interleaved scenario: each kernel between BLAS GEMMs and a PyTorch op, the "
        "neighbour's time right after the kernel against after an idle gap or a copy "
        "(default kernels all, shapes 4096x1000,64x10, float32, cython,numba, threads 1 and all)",
    )
    parser.add_argument(
        "--neighbours",
        type=_comma_list,
        metavar="N,N",
        help="with --interleaved: some of gemm_small, gemm_large, torch_mm (default all available)",
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
        "--threads",
        type=positive_int,
        metavar="N",
        help="n_threads for the kernels and PyTorch, at least 1",
    )
    parser.add_argument(
        "--rounds", type=positive_int, metavar="N", help="samples per implementation (default 7)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        metavar="SECONDS",
        help="each sample lasts at least this long (default 0.02)",
    )
    parser.add_argument(
        "--ceiling-mib",
        type=positive_int,
        metavar="MIB",
        help="size of the np.copyto measuring the memory ceiling (default 256)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument(
        "--plot", metavar="PATH.png", help="also plot GB/s per implementation (matplotlib)"
    )


def _run_bench(args: argparse.Namespace) -> int:
    from fastsoftmax.benchmark import bench, bench_interleaved

    if args.interleaved:
        bench_interleaved(
            args.kernels,
            args.shapes,
            args.dtype,
            implementations=args.impls,
            threads=None if args.threads is None else [args.threads],
            neighbour_names=args.neighbours,
            rounds=args.rounds,
            quick=args.quick,
            json_path=args.json,
        )
        return 0
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
    return 0


def _run_info(args: argparse.Namespace) -> int:
    print(environment_report())
    if not args.no_timing:
        from fastsoftmax._registry import BENCHED
        from fastsoftmax.benchmark import QUICK_CASES, compare, format_table

        # Only the kernels and dtypes compared: Numba compiles each on first use (once per
        # machine: later processes load them from its cache).
        compile_seconds = fastsoftmax.warmup(
            kernels={BENCHED[kernel].name for kernel, _, _ in QUICK_CASES},
            dtypes={dtype for _, _, dtype in QUICK_CASES},
        )
        print(
            "\nfirst use (Numba: compiling, or loading its cache) seconds: "
            + ", ".join(f"{k} {v:.1f}" for k, v in compile_seconds.items())
        )
        print("\nmedian of 7 interleaved rounds, outputs preallocated:")
        print(format_table(compare()))
    return 0


DESCRIPTION = """\
Softmax regression on fast NumPy, Numba and Cython kernels: train a model and report its test
accuracy, predict with a saved model, show the backends built here, or time the kernels."""

EPILOG = """\
examples:
  fastsoftmax train --backend cython --save digits      # writes digits.npz
  fastsoftmax predict --model digits.npz --data X.csv --proba --output P.csv
  fastsoftmax train --data fashion-mnist --path ~/data/fashion-mnist --solver sgd
  fastsoftmax bench --quick

Run "fastsoftmax COMMAND --help" for the options of a command. A mistake prints
"fastsoftmax COMMAND: error: ..." and exits with status 2; add --debug for a traceback."""

_DEBUG_HELP = "show the Python traceback of an error instead of a one-line message"


def build_parser() -> argparse.ArgumentParser:
    """The ``fastsoftmax`` parser and its commands."""
    parser = argparse.ArgumentParser(
        prog="fastsoftmax",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    # --debug is accepted after the command too; SUPPRESS keeps the global one when it is not.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_arguments(
        commands.add_parser(
            "train",
            parents=[common],
            formatter_class=train.HelpFormatter,
            help="fit a SoftmaxRegression (digits by default), report test accuracy and time",
            description="Fit a SoftmaxRegression on the training part of a data set, print its "
            "accuracy on the test part and the fit time, and optionally save it.",
        )
    )
    predict.add_arguments(
        commands.add_parser(
            "predict",
            parents=[common],
            help="labels or class probabilities of rows from a saved model",
            description="Predict labels (or with --proba class probabilities) of the rows of a "
            "file with a model saved by fastsoftmax train --save.",
        )
    )
    info = commands.add_parser(
        "info",
        parents=[common],
        help="backends, build flags, and a quick speed comparison of the backends",
    )
    info.add_argument("--no-timing", action="store_true", help="skip the speed comparison")
    bench = commands.add_parser(
        "bench",
        parents=[common],
        help=f"time every kernel against {REFERENCE} (and peers), with GB/s and the memory ceiling",
        description="Median time, spread, GB/s, % of the memory ceiling and speed-up over the "
        f"{REFERENCE} reference, per kernel x dtype x shape x implementation.",
    )
    _add_bench_arguments(bench)
    return parser


_COMMANDS = {
    "train": train.run,
    "predict": predict.run,
    "info": _run_info,
    "bench": _run_bench,
}

#: The errors a user's input can cause; others are bugs and keep their traceback.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, KeyError)

#: Keyword names in library messages -> the options that set them. ``name='value'`` and
#: ``name=value`` become ``--option value``; a bare ``name`` becomes ``--option`` unless the
#: word is too common for that (True).
_CLI_TERMS: dict[str, tuple[str, bool]] = {
    "path": ("--path", True),
    "data_home": ("--data-home", False),
    "learning_rate": ("--lr", False),
    "max_epochs": ("--epochs", False),
    "max_iter": ("--max-iter", False),
    "batch_size": ("--batch-size", False),
    "n_threads": ("--threads", False),
    "random_state": ("--seed", False),
    "solver": ("--solver", True),
    "backend": ("--backend", True),
    "min_time": ("--min-time", False),
    "ceiling_mib": ("--ceiling-mib", False),
    "json_path": ("--json", False),
    "plot_path": ("--plot", False),
}


def cli_terms(message: str) -> str:
    """``message`` with the library's keyword names replaced by the options that set them.

    Examples
    --------
    >>> cli_terms("pass path=FOLDER, set n_threads or use solver='lbfgs'")
    'pass --path FOLDER, set --threads or use --solver lbfgs'
    """
    message = re.sub(r"\bdownload_if_missing=False\b", "--no-download", message)
    for name, (option, only_with_value) in _CLI_TERMS.items():
        message = re.sub(rf"\b{name}='([^']*)'", rf"{option} \1", message)
        message = re.sub(rf"\b{name}=", f"{option} ", message)
        if not only_with_value:
            message = re.sub(rf"\b{name}\b", option, message)
    return message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])  # str(KeyError) is the repr of its key
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def _plain_warnings(prefix: str) -> Iterator[None]:
    """Print warnings as ``prefix: warning: message`` (no file name and source line)."""
    with warnings.catch_warnings():

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            print(f"{prefix}: warning: {cli_terms(str(message))}", file=sys.stderr)

        warnings.showwarning = show
        yield


def _quiet_stdout() -> None:
    # The reader of stdout has gone (e.g. "| head"): send the rest to /dev/null, so that
    # Python's final flush does not fail too.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastsoftmax`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a user error (the message printed on stderr as
        ``fastsoftmax COMMAND: error: MESSAGE``), 130 when interrupted. Errors in the options
        themselves exit through argparse (``SystemExit(2)``), ``--help`` with ``SystemExit(0)``.
        With ``--debug`` a user error propagates with its traceback (an error of the command
        itself, a ``SystemExit`` with a message, has it printed and returns 2).
    """
    args = build_parser().parse_args(argv)
    run = _COMMANDS[args.command]
    prefix = f"fastsoftmax {args.command}"
    if args.debug:  # exceptions propagate with their traceback
        try:
            return run(args)
        except SystemExit as exc:
            if not isinstance(exc.code, str):
                raise
            traceback.print_exc()  # the interpreter would print only the message
            print(f"{prefix}: error: {exc.code}", file=sys.stderr)
            return 2
    try:
        with _plain_warnings(prefix):
            return run(args)
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        message = exc.code
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except USER_ERRORS as exc:
        message = _describe(exc)
    print(f"{prefix}: error: {cli_terms(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
