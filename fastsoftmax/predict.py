"""``fastsoftmax predict``: labels or class probabilities of rows, from a saved model.

User errors are raised as ``SystemExit(message)`` with the message in command-line terms;
:func:`fastsoftmax.cli.main` prints them without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

INPUT_SUFFIXES = (".npy", ".csv", ".npz")
OUTPUT_SUFFIXES = (".npy", ".csv")
#: ``--data X.npz`` reads the first of these arrays it holds.
NPZ_NAMES = ("X", "X_test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastsoftmax predict``."""
    from fastsoftmax.backends import BACKENDS

    parser.add_argument(
        "--model",
        required=True,
        metavar="MODEL.npz",
        help="a model written by fastsoftmax train --save (or SoftmaxRegression.save)",
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="X.npy|X.csv|X.npz",
        help="the rows to predict, one sample a row: a 2-D .npy array; a .csv of "
        "comma-separated numbers with no header; or a .npz holding an array named "
        f"{' (else '.join(NPZ_NAMES)})",
    )
    parser.add_argument(
        "--proba",
        action="store_true",
        help="class probabilities, one column per class in the order of the model's classes "
        "(sorted labels), instead of labels",
    )
    parser.add_argument(
        "--output",
        metavar="OUT.npy|OUT.csv",
        help="write to exactly this file instead of standard output, where labels go one a "
        "line and probabilities as comma-separated rows",
    )
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, "auto"],
        help="kernel backend (default: the one saved with the model)",
    )


def _suffix(path: str) -> str:
    return Path(path).suffix.lower()


def load_model(path: str):
    """The SoftmaxRegression saved at ``--model path``."""
    import fastsoftmax

    if not os.path.isfile(path):
        raise SystemExit(f"--model {path}: no such file")
    try:
        return fastsoftmax.SoftmaxRegression.load(path)
    except ValueError as exc:
        message = str(exc)
        if not message.startswith(str(path)):
            message = f"{path}: {message}"
        raise SystemExit(f"--model {message}") from exc


def load_features(path: str) -> tuple[np.ndarray, str]:
    """The 2-D array of ``--data path`` and a description of where it came from."""
    suffix = _suffix(path)
    if suffix not in INPUT_SUFFIXES:
        raise SystemExit(
            f"--data {path}: expected a {', '.join(INPUT_SUFFIXES)} file, got "
            f"{suffix or 'no suffix'}"
        )
    if not os.path.isfile(path):
        raise SystemExit(f"--data {path}: no such file")
    source = path
    if suffix == ".csv":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                X = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise SystemExit(
                f"--data {path}: {exc} (expected comma-separated numbers, no header)"
            ) from exc
    else:
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, EOFError) as exc:
            # A file that is not .npy/.npz gets NumPy's "cannot load pickled data" message.
            reason = "" if "pickle" in str(exc) else f" ({exc})"
            raise SystemExit(f"--data {path}: not a readable .npy or .npz file{reason}") from exc
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                name = next((n for n in NPZ_NAMES if n in loaded.files), None)
                if name is None:
                    raise SystemExit(
                        f"--data {path}: a .npz must hold an array named "
                        f"{' or '.join(NPZ_NAMES)} (it holds {', '.join(loaded.files) or 'none'})"
                    )
                X = loaded[name]
            source = f"array {name} of {path}"
        else:
            X = loaded
    if X.ndim != 2:
        raise SystemExit(
            f"--data {source}: expected a 2-D array, one sample a row, got shape {X.shape}"
            + (" (reshape one sample to (1, n))" if X.ndim == 1 else "")
        )
    if X.dtype.kind not in "biuf":
        raise SystemExit(f"--data {source}: expected numbers, got dtype {X.dtype}")
    if X.shape[0] == 0:
        raise SystemExit(f"--data {source}: no rows")
    return X, source


def _check_output(path: str) -> None:
    suffix = _suffix(path)
    if suffix not in OUTPUT_SUFFIXES:
        raise SystemExit(
            f"--output {path}: expected a name ending in {' or '.join(OUTPUT_SUFFIXES)}"
        )
    folder = Path(path).parent
    if not folder.is_dir():
        raise SystemExit(f"--output {path}: no folder {str(folder)!r} to write into")


def write(result: np.ndarray, path: str | None) -> None:
    """``result`` to ``path`` (.npy or .csv, exactly that name) or, as CSV, to stdout."""
    if result.dtype.kind == "f":
        fmt = "%.9g" if result.dtype == np.float32 else "%.17g"  # round-trips the values
    else:
        fmt = "%s"
    if path is None:
        np.savetxt(sys.stdout, result, fmt=fmt, delimiter=",")
    elif _suffix(path) == ".npy":
        with open(path, "wb") as f:  # np.save(name) would append .npy to other names
            np.save(f, result, allow_pickle=False)
    else:
        np.savetxt(path, result, fmt=fmt, delimiter=",")


def run(args: argparse.Namespace) -> int:
    """Predict and write labels (default) or probabilities (``--proba``)."""
    if args.output is not None:
        _check_output(args.output)  # before any work
    model = load_model(args.model)
    X, source = load_features(args.data)
    if X.shape[1] != model.n_features_in_:
        raise SystemExit(
            f"--data {source} has {X.shape[1]} features (columns) a row, but the model "
            f"{args.model} was trained on {model.n_features_in_}"
        )
    if args.backend is not None:
        model.set_params(backend=args.backend)
    if source != args.data:
        print(f"reading {source}", file=sys.stderr)
    result = model.predict_proba(X) if args.proba else model.predict(X)
    write(result, args.output)
    if args.output is not None:
        what = "probability rows" if args.proba else "labels"
        print(f"wrote {len(result)} {what} to {args.output}")
    return 0
