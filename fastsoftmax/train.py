"""``fastsoftmax train``: fit a SoftmaxRegression on a data set and report accuracy and time.

User errors are raised as ``SystemExit(message)`` with the message in command-line terms
(``--path``, ``--lr``); :func:`fastsoftmax.cli.main` prints them without a traceback.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from pathlib import Path

import numpy as np

#: Options that set a SoftmaxRegression parameter: argparse dest -> parameter name. Their
#: default is None ("the estimator's"), and their help shows the estimator's real default.
ESTIMATOR_OPTIONS: dict[str, str] = {
    "solver": "solver",
    "lr": "learning_rate",
    "epochs": "max_epochs",
    "max_iter": "max_iter",
    "batch_size": "batch_size",
    "threads": "n_threads",
    "backend": "backend",
}

#: What an estimator default of None means, per parameter, in the help.
_NONE_MEANS = {
    "backend": "$FASTSOFTMAX_BACKEND if set, else auto",
    "n_threads": "every thread the backend may use",
}

DATA_SETS = ("digits", "fashion-mnist", "mnist")

#: ``train --data X.npz`` reads these arrays.
NPZ_ARRAYS = ("X_train", "y_train", "X_test", "y_test")


# -- argument types (also used by ``bench`` and ``predict``) ------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1.

    Examples
    --------
    >>> positive_int("4")
    4
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def learning_rate(text: str) -> float | str:
    """An argparse type: ``auto`` or a finite float > 0.

    Examples
    --------
    >>> learning_rate("auto"), learning_rate("0.5")
    ('auto', 0.5)
    """
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or auto, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or auto, got {text!r}")
    return value


# -- help showing the estimator's defaults -----------------------------------------------------


@functools.cache
def estimator_defaults() -> dict:
    """``SoftmaxRegression().get_params()``, imported only when a help text needs it."""
    from fastsoftmax.classifier import SoftmaxRegression

    return SoftmaxRegression().get_params()


def describe_default(param: str) -> str:
    """The default of SoftmaxRegression parameter ``param``, as the help shows it."""
    value = estimator_defaults()[param]
    return _NONE_MEANS.get(param, "none") if value is None else str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Fills ``%(estimator_default)s`` in a help text with the estimator's default, on demand.

    Building the parser does not import scikit-learn; formatting ``train --help`` does.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        param = ESTIMATOR_OPTIONS.get(action.dest)
        if param is not None and "%(estimator_default)s" in text:
            default = describe_default(param).replace("%", "%%")
            text = text.replace("%(estimator_default)s", default)
        return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastsoftmax train``."""
    from fastsoftmax import _validation
    from fastsoftmax.backends import BACKENDS

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default="digits",
        metavar="NAME|FILE.npz",
        help="digits (bundled with scikit-learn, the default), fashion-mnist, mnist, or a .npz "
        f"holding the arrays {', '.join(NPZ_ARRAYS)}",
    )
    data.add_argument(
        "--path",
        metavar="FOLDER",
        help="with --data fashion-mnist: read the four IDX files (.gz or raw) from FOLDER "
        "instead of downloading them",
    )
    data.add_argument(
        "--data-home",
        metavar="DIR",
        help="with --data fashion-mnist or mnist: where the downloaded files are kept "
        "(default: the data set loader's)",
    )
    data.add_argument(
        "--no-download",
        action="store_true",
        help="with --data fashion-mnist or mnist: fail instead of downloading missing files",
    )

    model = parser.add_argument_group(
        "model", "Each option left out takes SoftmaxRegression's default, shown here."
    )
    model.add_argument(
        "--solver",
        choices=_validation.SOLVERS,
        help="auto: lbfgs when a pass over the data is cheap, sgd otherwise "
        "(default: %(estimator_default)s)",
    )
    model.add_argument(
        "--lr",
        type=learning_rate,
        metavar="LR|auto",
        help="SGD's initial step size: a number > 0, or auto to scale it to the data "
        "(default: %(estimator_default)s)",
    )
    model.add_argument(
        "--epochs",
        type=positive_int,
        metavar="N",
        help="SGD passes over the data (default: %(estimator_default)s)",
    )
    model.add_argument(
        "--max-iter",
        type=positive_int,
        metavar="N",
        help="L-BFGS iterations at most (default: %(estimator_default)s)",
    )
    model.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="SGD minibatch rows (default: %(estimator_default)s)",
    )
    model.add_argument(
        "--backend",
        choices=[*BACKENDS, "auto"],
        help="kernel backend; auto takes the first built of "
        f"{', '.join(sorted(BACKENDS, key=lambda n: BACKENDS[n].auto_rank))} "
        "(default: %(estimator_default)s)",
    )
    model.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="threads for the kernels, at least 1 (default: %(estimator_default)s)",
    )
    model.add_argument(
        "--seed", type=int, default=0, metavar="N", help="random_state (default: %(default)s)"
    )
    parser.add_argument(
        "--save",
        metavar="MODEL",
        help="save the trained model to MODEL, with .npz appended unless MODEL already ends "
        "in .npz (the path written is printed); load it with fastsoftmax predict --model",
    )


# -- data ----------------------------------------------------------------------------------


def load_data(
    data: str,
    path: str | None = None,
    data_home: str | None = None,
    download: bool = True,
):
    """``(X_train, y_train, X_test, y_test)`` of ``--data``, checked against the other options.

    Raises
    ------
    SystemExit
        With a message naming the options, for a combination that cannot work.
    """
    from fastsoftmax import datasets

    if data not in DATA_SETS and not data.endswith(".npz"):
        raise SystemExit(f"--data must be {', '.join(DATA_SETS)} or a .npz file, got {data!r}")

    if path is not None and data != "fashion-mnist":
        raise SystemExit(
            f"--path FOLDER is read only with --data fashion-mnist (here --data {data})"
        )
    downloadable = ("fashion-mnist", "mnist")
    if data not in downloadable:
        if data_home is not None:
            raise SystemExit(
                f"--data-home needs --data fashion-mnist or mnist (here --data {data})"
            )
        if not download:
            raise SystemExit(
                f"--no-download needs --data fashion-mnist or mnist (here --data {data})"
            )
    if path is not None and (data_home is not None or not download):
        option = "--data-home" if data_home is not None else "--no-download"
        raise SystemExit(f"--path reads local files: it does not go with {option}")

    if data == "digits":
        return datasets.load_digits()
    if data == "fashion-mnist":
        if path is not None:
            if not os.path.isdir(path):
                raise SystemExit(f"--path {path}: no such folder")
            return datasets.load_fashion_mnist(path)
        fetch = getattr(datasets, "fetch_fashion_mnist", None)
        if fetch is None:  # a fastsoftmax without the downloader: the local copy only
            if data_home is not None:
                raise SystemExit(
                    "--data-home needs fastsoftmax.datasets.fetch_fashion_mnist, which this "
                    "fastsoftmax lacks: use --path FOLDER"
                )
            return datasets.load_fashion_mnist()
        return fetch(data_home=data_home, download_if_missing=download)
    if data == "mnist":
        fetch = getattr(datasets, "fetch_mnist", None)
        if fetch is None:
            raise SystemExit(
                "--data mnist is not available in this fastsoftmax (no "
                "fastsoftmax.datasets.fetch_mnist): use --data fashion-mnist or a .npz file"
            )
        return fetch(data_home=data_home, download_if_missing=download)
    return _load_npz(data)


def _load_npz(file: str):
    if not os.path.isfile(file):
        raise SystemExit(f"--data {file}: no such file")
    try:
        archive = np.load(file, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        # A file that is not .npy/.npz gets NumPy's "cannot load pickled data" message.
        reason = "" if "pickle" in str(exc) else f" ({exc})"
        raise SystemExit(f"--data {file}: not a readable .npz file{reason}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SystemExit(f"--data {file}: holds one array, not a .npz archive")
    with archive:
        missing = [name for name in NPZ_ARRAYS if name not in archive.files]
        if missing:
            raise SystemExit(
                f"--data {file} lacks the arrays {', '.join(missing)} (it holds "
                f"{', '.join(archive.files) or 'none'})"
            )
        return tuple(archive[name] for name in NPZ_ARRAYS)


def model_path(name: str) -> Path:
    """Where ``--save name`` writes: ``name``, with ``.npz`` appended unless it ends in .npz.

    Examples
    --------
    >>> str(model_path("digits")), str(model_path("digits.npz")), str(model_path("m.v2"))
    ('digits.npz', 'digits.npz', 'm.v2.npz')
    """
    return Path(name if name.endswith(".npz") else name + ".npz")


# -- the command ---------------------------------------------------------------------------


def warm_up(model, X, y) -> float:
    """Seconds to run once each kernel that ``model.fit(X, y)`` will call, so that the fit's
    time is its own: a fit of one epoch (or iteration) on a few rows of each class, with the
    solver, dtype and backend the whole data gets. On Numba this compiles those kernels, or
    loads them from its cache, and no others."""
    import warnings

    from sklearn.base import clone

    from fastsoftmax.classifier import choose_solver

    classes = np.unique(y)
    entries = getattr(X, "nnz", X.size)
    solver = choose_solver(model.solver, entries, len(classes), model.early_stopping)
    rows = np.concatenate([np.flatnonzero(y == label)[:4] for label in classes])
    few = clone(model).set_params(
        solver=solver, max_epochs=1, max_iter=1, early_stopping=False, verbose=0
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one step on a few rows: no verdict to report
        few.fit(X[rows], y[rows])
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    """Fit, report test accuracy and time, and save when asked."""
    from fastsoftmax import resolve_backend

    save_to = None
    if args.save:
        save_to = model_path(args.save)
        folder = save_to.parent
        if not folder.is_dir():  # refused before the fit, not after it
            raise SystemExit(f"--save {args.save}: no folder {str(folder)!r} to write into")
    try:
        backend = resolve_backend(args.backend)
    except ValueError as exc:
        if args.backend is None:  # a bad $FASTSOFTMAX_BACKEND: its message names it
            raise
        raise SystemExit(f"--backend {args.backend}: {str(exc).split(': ', 1)[-1]}") from exc

    X_train, y_train, X_test, y_test = load_data(
        args.data, args.path, args.data_home, not args.no_download
    )
    from fastsoftmax.classifier import SoftmaxRegression  # scikit-learn: after the checks

    chosen = {param: getattr(args, dest) for dest, param in ESTIMATOR_OPTIONS.items()}
    params = {k: v for k, v in chosen.items() if v is not None}
    model = SoftmaxRegression(random_state=args.seed, verbose=1, **params)
    print(
        f"data {args.data}: train {X_train.shape}, test {X_test.shape}, "
        f"{len(np.unique(y_train))} classes"
    )
    seconds = warm_up(model, X_train, y_train)
    how = "auto" if args.backend in (None, "auto") else "--backend"
    print(f"backend {backend} ({how}), first use of its kernels {seconds:.1f} s")
    start = time.perf_counter()
    model.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - start
    unit = "epochs" if model.solver_ == "sgd" else "iterations"
    print(
        f"test accuracy {model.score(X_test, y_test):.4f}, fit time {fit_seconds:.2f} s "
        f"({model.solver_}, {model.n_iter_} {unit})"
    )
    if save_to is not None:
        model.save(save_to)
        print(f"saved to {save_to}")
    return 0
