"""The ``fastsoftmax`` command line: clean one-line errors (exit 2), honest help, train, predict.

Most tests call ``fastsoftmax.cli.main`` in-process; fits use digits (or a few random rows) with
the Cython backend and L-BFGS, well under a second each. Numba is never compiled here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_backend

import fastsoftmax
from fastsoftmax import cli, datasets, train
from fastsoftmax.cli import main

ROOT = Path(__file__).resolve().parents[1]  # this checkout, not an installed fastsoftmax
FAST = ["--backend", "cython", "--solver", "lbfgs"]


@pytest.fixture
def cython() -> str:
    return require_backend("cython")


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``fastsoftmax *argv``; argparse's exits included."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def assert_user_error(code: int, err: str, command: str, message: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"fastsoftmax {command}: error: "), err
    assert message in lines[-1], err
    assert not re.search(r"\b[a-z]+_?[a-z_]*=", lines[-1]), f"Python keyword in {lines[-1]!r}"


def small_data(seed: int = 0):
    """(X_train, y_train, X_test, y_test): 3 separable classes, 8 features."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), 30)
    X = (rng.normal(size=(90, 8)) + 3 * np.eye(3, 8)[y]).astype(np.float32)
    return X[::2], y[::2], X[1::2], y[1::2]


# -- help --------------------------------------------------------------------------------------


def test_top_level_help_describes_the_commands_with_examples(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert ">>>" not in out and "Examples\n--------" not in out  # not the package docstring
    assert "examples:" in out
    assert "fastsoftmax train --backend cython --save digits" in out
    for command in ("train", "predict", "info", "bench"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


def help_text(argv: list[str], capsys) -> str:
    code, out, _ = run([*argv, "--help"], capsys)
    assert code == 0
    return " ".join(out.split())  # argparse wraps lines


def test_train_help_states_the_estimators_real_defaults(capsys):
    text = help_text(["train"], capsys)
    params = fastsoftmax.SoftmaxRegression().get_params()
    for option, param in [
        ("--lr LR|auto", "learning_rate"),
        ("--solver {auto,sgd,lbfgs}", "solver"),
        ("--epochs N", "max_epochs"),
        ("--max-iter N", "max_iter"),
        ("--batch-size N", "batch_size"),
    ]:
        entry = text.split(option, 2)[2].split(" --", 1)[0]  # the option's help, past the usage
        assert f"(default: {params[param]})" in entry, (option, entry)
    assert "0.15" not in text
    assert "--backend {numpy,numba,cython,auto}" in text
    assert "(default: $FASTSOFTMAX_BACKEND if set, else auto)" in text
    assert "with .npz appended unless MODEL already ends in .npz" in text


def test_train_help_follows_the_estimator_when_its_defaults_change(capsys, monkeypatch):
    changed = {**train.estimator_defaults(), "learning_rate": 0.25, "max_epochs": 7}
    monkeypatch.setattr(train, "estimator_defaults", lambda: changed)
    text = help_text(["train"], capsys)
    assert "scale it to the data (default: 0.25)" in text
    assert "SGD passes over the data (default: 7)" in text


def test_building_the_parser_does_not_import_scikit_learn():
    code = "import sys, fastsoftmax.cli as c; c.build_parser(); print('sklearn' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- options argparse refuses (exit 2, its own message) ------------------------------------------


def test_lr_takes_auto_or_a_positive_number():
    parser = cli.build_parser()
    assert parser.parse_args(["train", "--lr", "auto"]).lr == "auto"
    assert parser.parse_args(["train", "--lr", "0.5"]).lr == 0.5
    assert parser.parse_args(["train"]).lr is None  # None: the estimator's default


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--lr", "0"], "argument --lr: expected a number > 0 or auto, got '0'"),
        (["train", "--lr", "fast"], "argument --lr: expected a number > 0 or auto"),
        (["train", "--lr", "nan"], "argument --lr: expected a number > 0 or auto"),
        (["train", "--threads", "0"], "argument --threads: must be at least 1, got 0"),
        (["train", "--epochs", "-1"], "argument --epochs: must be at least 1"),
        (["train", "--batch-size", "x"], "argument --batch-size: expected an integer >= 1"),
        (["train", "--solver", "adam"], "argument --solver: invalid choice: 'adam'"),
        (["train", "--backend", "gpu"], "argument --backend: invalid choice: 'gpu'"),
        (["bench", "--threads", "0"], "argument --threads: must be at least 1, got 0"),
        (["predict", "--model", "m.npz"], "the following arguments are required: --data"),
    ],
)
def test_bad_option_values_are_argparse_errors(argv, message, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert f"fastsoftmax {argv[0]}: error: {message}" in err


# -- train ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "nonsense"], "--data must be digits, fashion-mnist, mnist or a .npz file"),
        (["--path", "."], "--path FOLDER is read only with --data fashion-mnist (here --data "),
        (["--data-home", "."], "--data-home needs --data fashion-mnist or mnist"),
        (["--data", "fashion-mnist", "--path", "no/such/dir"], "--path no/such/dir: no such"),
        (["--data", "missing.npz"], "--data missing.npz: no such file"),
        (["--save", "no/such/dir/m"], "--save no/such/dir/m: no folder 'no/such/dir'"),
    ],
)
def test_train_user_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train", *argv], capsys)
    assert_user_error(code, err, "train", message)


def test_npz_data_without_the_arrays_names_them(tmp_path, capsys):
    path = tmp_path / "d.npz"
    np.savez(path, X_train=np.zeros((2, 2)), y_train=np.zeros(2))
    code, _, err = run(["train", "--data", str(path)], capsys)
    assert_user_error(code, err, "train", "lacks the arrays X_test, y_test (it holds X_train")
    path.write_text("not an archive")
    code, _, err = run(["train", "--data", str(path)], capsys)
    assert_user_error(code, err, "train", f"--data {path}: not a readable .npz file")
    assert "pickle" not in err


def test_mnist_without_its_loader_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.delattr(datasets, "fetch_mnist", raising=False)
    code, _, err = run(["train", "--data", "mnist"], capsys)
    assert_user_error(code, err, "train", "--data mnist is not available in this fastsoftmax")


class FakeFetch:
    """Stands in for ``datasets.fetch_fashion_mnist``: records its arguments, returns rows."""

    def __init__(self, error: Exception | None = None):
        self.calls: list[tuple] = []
        self.error = error

    def __call__(self, data_home=None, *, download_if_missing=True, dtype=np.float32):
        self.calls.append((data_home, download_if_missing))
        if self.error is not None:
            raise self.error
        return small_data()


def test_fashion_mnist_is_fetched_into_data_home(cython, monkeypatch, tmp_path, capsys):
    fetch = FakeFetch()
    monkeypatch.setattr(datasets, "fetch_fashion_mnist", fetch, raising=False)
    argv = ["train", "--data", "fashion-mnist", "--data-home", str(tmp_path), *FAST]
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert fetch.calls == [(str(tmp_path), True)]
    assert "data fashion-mnist: train (45, 8), test (45, 8), 3 classes" in out
    code, _, _ = run([*argv, "--no-download"], capsys)
    assert code == 0 and fetch.calls[-1] == (str(tmp_path), False)


def test_fashion_mnist_path_reads_the_folder(cython, monkeypatch, tmp_path, capsys):
    seen = []
    monkeypatch.setattr(
        datasets, "load_fashion_mnist", lambda path: seen.append(path) or small_data()
    )
    monkeypatch.setattr(datasets, "fetch_fashion_mnist", FakeFetch(), raising=False)
    code, _, _ = run(["train", "--data", "fashion-mnist", "--path", str(tmp_path), *FAST], capsys)
    assert code == 0 and seen == [str(tmp_path)]
    code, _, err = run(["train", "--data", "fashion-mnist", "--path", ".", "--no-download"], capsys)
    assert_user_error(code, err, "train", "--path reads local files: it does not go with")


def test_loader_errors_speak_in_options(monkeypatch, capsys):
    missing = FileNotFoundError("Fashion-MNIST not found: pass path=FOLDER or data_home=DIR")
    monkeypatch.setattr(datasets, "fetch_fashion_mnist", FakeFetch(missing), raising=False)
    code, _, err = run(["train", "--data", "fashion-mnist"], capsys)
    assert_user_error(code, err, "train", "pass --path FOLDER or --data-home DIR")


def test_debug_shows_the_traceback(monkeypatch, capsys):
    missing = FileNotFoundError("Fashion-MNIST not found")
    monkeypatch.setattr(datasets, "fetch_fashion_mnist", FakeFetch(missing), raising=False)
    for argv in (["--debug", "train", "--data", "fashion-mnist"],
                 ["train", "--data", "fashion-mnist", "--debug"]):  # fmt: skip
        with pytest.raises(FileNotFoundError, match="Fashion-MNIST not found"):
            main(argv)
    assert main(["--debug", "train", "--data", "nonsense"]) == 2  # the command's own error
    err = capsys.readouterr().err
    assert "Traceback" in err and "fastsoftmax train: error: --data must be" in err


def test_save_appends_npz_and_prints_the_path_written(cython, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, written in [("mymodel", "mymodel.npz"), ("m.npz", "m.npz"), ("m.v2", "m.v2.npz")]:
        code, out, _ = run(["train", *FAST, "--save", name], capsys)
        assert code == 0
        printed = re.search(r"^saved to (.+)$", out, re.M).group(1)
        assert printed == written and Path(printed).is_file()
        assert fastsoftmax.SoftmaxRegression.load(printed).n_features_in_ == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.v2.npz", "mymodel.npz"]


@pytest.mark.parametrize("backend_option", [[], ["--backend", "auto"]])
def test_train_names_the_backend_it_fits_on(backend_option, capsys):
    expected = fastsoftmax.resolve_backend(None if not backend_option else "auto")
    require_backend("cython")
    if expected == "numba":
        pytest.skip("auto resolves to Numba here, which compiles for a minute")
    code, out, _ = run(["train", "--solver", "lbfgs", *backend_option], capsys)
    assert code == 0
    assert f"backend {expected} (auto), first use of its kernels" in out
    assert "test accuracy 0.9" in out and "(lbfgs, " in out


def test_the_warm_up_fit_takes_the_solver_and_settings_of_the_whole_data(monkeypatch):
    """train's warm-up runs exactly the kernels the fit will: one step on a few rows of each
    class, with the solver "auto" picks for the whole data (not for the few rows)."""
    from fastsoftmax.classifier import AUTO_LBFGS_MAX_WORK, SoftmaxRegression

    fits = []
    monkeypatch.setattr(
        SoftmaxRegression, "fit", lambda self, X, y: fits.append((self.get_params(), X, y))
    )
    n, d = 64, int(AUTO_LBFGS_MAX_WORK // (64 * 3)) + 1  # auto: sgd for all 64 rows
    rng = np.random.default_rng(0)
    X, y = rng.random((n, d), np.float32), np.arange(n) % 3
    model = SoftmaxRegression(backend="numpy", dtype=np.float32, learning_rate=0.5)
    train.warm_up(model, X, y)
    ((params, X_few, y_few),) = fits
    assert params["solver"] == "sgd" and params["max_epochs"] == 1 and params["max_iter"] == 1
    assert params["backend"] == "numpy" and params["learning_rate"] == 0.5
    assert X_few.shape == (12, d) and sorted(set(y_few)) == [0, 1, 2]


def test_fastsoftmax_backend_variable_is_the_default(monkeypatch, capsys):
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "numpy")
    code, out, _ = run(["train", "--solver", "lbfgs"], capsys)
    assert code == 0 and "backend numpy (auto)" in out
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "gpu")
    code, _, err = run(["train"], capsys)
    assert_user_error(code, err, "train", "FASTSOFTMAX_BACKEND")


def test_warnings_are_one_line_in_options(cython, capsys):
    code, _, err = run(["train", "--backend", "cython", "--solver", "sgd", "--epochs", "1",
                        "--lr", "1e9"], capsys)  # fmt: skip
    assert code == 0
    warnings = [line for line in err.splitlines() if ": warning: " in line]
    assert warnings and all(line.startswith("fastsoftmax train: warning: ") for line in warnings)
    assert any("Lower --lr" in line for line in warnings)
    assert "learning_rate" not in err and "solver=" not in err


def test_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli._COMMANDS, "train", interrupted)
    code, _, err = run(["train"], capsys)
    assert code == 130 and err.strip() == "fastsoftmax train: interrupted"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_python_m_fastsoftmax_prints_no_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "fastsoftmax", "train", "--data", "nonsense"],
        cwd=ROOT, capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip() == (
        "fastsoftmax train: error: --data must be digits, fashion-mnist, mnist or a .npz "
        "file, got 'nonsense'"
    )


# -- predict -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model saved by the CLI's rules, and test rows: (model path, model, X_test)."""
    require_backend("cython")
    X_train, y_train, X_test, _ = datasets.load_digits()
    model = fastsoftmax.SoftmaxRegression(solver="lbfgs", backend="cython", random_state=0)
    model.fit(X_train, y_train)
    path = tmp_path_factory.mktemp("model") / "digits.npz"
    model.save(path)
    return str(path), model, X_test[:20]


def test_predict_prints_labels_one_a_line(fitted, tmp_path, capsys):
    path, model, X = fitted
    np.save(tmp_path / "X.npy", X)
    code, out, err = run(["predict", "--model", path, "--data", str(tmp_path / "X.npy")], capsys)
    assert code == 0 and err == ""
    assert out.splitlines() == [str(label) for label in model.predict(X)]


def test_predict_proba_from_csv_prints_csv_rows(fitted, tmp_path, capsys):
    path, model, X = fitted
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    argv = ["predict", "--model", path, "--data", str(tmp_path / "X.csv"), "--proba"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    rows = np.array([[float(v) for v in line.split(",")] for line in out.splitlines()])
    np.testing.assert_allclose(rows, model.predict_proba(X), rtol=1e-6)


def test_predict_npz_takes_x_else_x_test_and_says_so(fitted, tmp_path, capsys):
    path, _, X = fitted
    np.savez(tmp_path / "both.npz", X=X[:3], X_test=X)
    np.savez(tmp_path / "test.npz", X_test=X, y_test=np.zeros(len(X)))
    code, out, err = run(["predict", "--model", path, "--data", str(tmp_path / "both.npz")], capsys)
    assert code == 0 and len(out.splitlines()) == 3 and "array X of" in err
    code, out, err = run(["predict", "--model", path, "--data", str(tmp_path / "test.npz")], capsys)
    assert code == 0 and len(out.splitlines()) == len(X) and "array X_test of" in err


@pytest.mark.parametrize("proba", [False, True])
@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_predict_writes_exactly_the_output_file(fitted, tmp_path, capsys, proba, suffix):
    path, model, X = fitted
    np.save(tmp_path / "X.npy", X)
    output = tmp_path / f"out{suffix}"
    argv = ["predict", "--model", path, "--data", str(tmp_path / "X.npy"), "--output", str(output)]
    code, out, _ = run([*argv, "--proba"] if proba else argv, capsys)
    assert code == 0 and out.strip().endswith(f"to {output}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["X.npy", output.name])
    expected = model.predict_proba(X) if proba else model.predict(X)
    got = np.load(output) if suffix == ".npy" else np.loadtxt(output, delimiter=",")
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_predict_user_errors_are_one_line(fitted, tmp_path, capsys):
    path, _, X = fitted
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "narrow.npy", X[:, :5])
    np.save(tmp_path / "flat.npy", X[0])
    (tmp_path / "header.csv").write_text("a,b\n1,2\n")
    (tmp_path / "text.npz").write_text("hello")
    np.savez(tmp_path / "other.npz", Z=X)
    data = str(tmp_path / "X.npy")
    cases = [
        (["--model", "nothere.npz", "--data", data], "--model nothere.npz: no such file"),
        (["--model", str(tmp_path / "text.npz"), "--data", data], "not a fastsoftmax model file"),
        (["--model", data, "--data", data], "not a fastsoftmax model file"),
        (["--model", path, "--data", "nothere.npy"], "--data nothere.npy: no such file"),
        (["--model", path, "--data", str(tmp_path / "narrow.npy")],
         "has 5 features (columns) a row, but the model"),
        (["--model", path, "--data", str(tmp_path / "flat.npy")], "expected a 2-D array"),
        (["--model", path, "--data", str(tmp_path / "header.csv")], "no header"),
        (["--model", path, "--data", str(tmp_path / "text.npz")], "not a readable .npy or .npz"),
        (["--model", path, "--data", str(tmp_path / "other.npz")],
         "a .npz must hold an array named X or X_test (it holds Z)"),
        (["--model", path, "--data", "X.txt"], "expected a .npy, .csv, .npz file"),
        (["--model", path, "--data", data, "--output", "out.txt"], "ending in .npy or .csv"),
    ]  # fmt: skip
    for argv, message in cases:
        code, out, err = run(["predict", *argv], capsys)
        assert_user_error(code, err, "predict", message)
        assert out == ""


# -- info and bench ------------------------------------------------------------------------------


def test_info_errors_are_one_line(monkeypatch, capsys):
    def broken():
        raise ImportError("cannot import name 'describe' from 'fastsoftmax.backends'")

    monkeypatch.setattr(cli, "environment_report", broken)
    code, _, err = run(["info", "--no-timing"], capsys)
    assert_user_error(code, err, "info", "cannot import name 'describe'")


def test_cli_terms_names_options_not_keywords():
    assert cli.cli_terms("set n_threads=0 or learning_rate") == "set --threads 0 or --lr"
    assert cli.cli_terms("use solver='lbfgs' or backend='numpy'") == (
        "use --solver lbfgs or --backend numpy"
    )
    assert cli.cli_terms("the solver and the backend") == "the solver and the backend"
    assert cli.cli_terms("learning_rate_ is stored") == "learning_rate_ is stored"
