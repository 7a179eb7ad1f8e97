"""SoftmaxRegression: fit/predict, partial_fit, persistence, sparse input, dtypes, bad input."""

import pickle
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_estimator

import fastsoftmax
from fastsoftmax import SoftmaxRegression, linear_softmax_cross_entropy
from fastsoftmax.datasets import load_digits

# SGD with shuffled minibatches is stochastic: weighting a row by 2 is equal to repeating it
# only in expectation, never to 1e-7 as these checks demand.
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": "stochastic minibatch SGD",
    "check_sample_weight_equivalence_on_sparse_data": "stochastic minibatch SGD",
}
# With float32 weights, log-probabilities near 0 are exact to float32's resolution (about
# 1e-8 there) while check_classifiers_train compares them with log(predict_proba) to 1e-9; the
# same check passes with dtype=float64.
EXPECTED_FAILED_CHECKS_FLOAT32 = {
    **EXPECTED_FAILED_CHECKS,
    "check_classifiers_train": "float32 log-probabilities resolve 1e-8, the check wants 1e-9",
}


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def blobs(n=300, d=5, k=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    centers = 3 * rng.standard_normal((k, d))
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.standard_normal((n, d))).astype(dtype)
    return X, y


@pytest.mark.parametrize(
    ("dtype", "expected_failures"),
    [(np.float64, EXPECTED_FAILED_CHECKS), (np.float32, EXPECTED_FAILED_CHECKS_FLOAT32)],
)
def test_passes_scikit_learn_estimator_checks(dtype, expected_failures):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(
            SoftmaxRegression(random_state=0, dtype=dtype),
            expected_failed_checks=expected_failures,
            on_fail=None,
        )
    failed = {
        r["check_name"]: str(r["exception"])[:300] for r in results if r["status"] == "failed"
    }
    assert failed == {}
    assert sum(r["status"] == "passed" for r in results) > 40


def test_fit_predict_digits_is_accurate_for_every_backend(backend, digits):
    X_train, y_train, X_test, y_test = digits
    model = SoftmaxRegression(random_state=0, backend=backend).fit(X_train, y_train)
    assert model.score(X_test, y_test) > 0.9
    assert model.coef_.shape == (10, 64) and model.intercept_.shape == (10,)
    assert model.n_iter_ == len(model.loss_curve_) >= 1
    assert model.loss_curve_[-1] < model.loss_curve_[0]


def test_backends_train_the_same_model(digits):
    X_train, y_train, _, _ = digits
    models = [
        SoftmaxRegression(solver="sgd", random_state=0, backend=b, dtype=np.float64).fit(
            X_train, y_train
        )
        for b in fastsoftmax.available_backends()
    ]
    for model in models[1:]:
        # float64 kernels agree to ~1e-15 per step; ten epochs of SGD amplify that little.
        assert_allclose(model.coef_, models[0].coef_, rtol=0, atol=1e-8)


def test_proba_log_proba_decision_and_predict_agree(digits):
    X_train, y_train, X_test, _ = digits
    model = SoftmaxRegression(random_state=0).fit(X_train, y_train)
    proba = model.predict_proba(X_test)
    assert proba.dtype == np.float32
    assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert_allclose(np.log(proba), model.predict_log_proba(X_test), atol=1e-5)
    logits = model.decision_function(X_test)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    assert_allclose(proba, expected / expected.sum(1, keepdims=True), atol=1e-6)
    assert_array_equal(model.predict(X_test), model.classes_[np.argmax(proba, axis=1)])


def test_string_labels_and_binary_problem():
    X, y = blobs(k=2)
    labels = np.array(["cat", "dog"])[y]
    model = SoftmaxRegression(random_state=0).fit(X, labels)
    assert_array_equal(model.classes_, ["cat", "dog"])
    assert model.coef_.shape == (2, 5)
    assert model.decision_function(X).shape == (300,)
    assert set(model.predict(X)) <= {"cat", "dog"}
    assert model.score(X, labels) > 0.9


def test_same_seed_gives_bitwise_the_same_model():
    X, y = blobs()
    a = SoftmaxRegression(solver="sgd", random_state=3).fit(X, y)
    b = SoftmaxRegression(solver="sgd", random_state=3).fit(X, y)
    c = SoftmaxRegression(solver="sgd", random_state=4).fit(X, y)
    assert_array_equal(a.coef_, b.coef_)
    assert_array_equal(a.intercept_, b.intercept_)
    assert not np.array_equal(a.coef_, c.coef_)


def test_float32_end_to_end_and_float64_option():
    X, y = blobs(dtype=np.float32)
    model = SoftmaxRegression(random_state=0).fit(X, y)
    assert model.coef_.dtype == np.float32
    assert model.predict_proba(X).dtype == np.float32
    model64 = SoftmaxRegression(random_state=0, dtype=np.float64).fit(X, y)
    assert model64.coef_.dtype == np.float64


def test_sparse_csr_matches_dense():
    X, y = blobs()
    X[np.abs(X) < 1] = 0
    dense = SoftmaxRegression(random_state=0, dtype=np.float64).fit(X, y)
    sparse = SoftmaxRegression(random_state=0, dtype=np.float64).fit(sp.csr_matrix(X), y)
    assert_allclose(sparse.coef_, dense.coef_, atol=1e-10)
    assert_allclose(sparse.predict_proba(sp.csr_matrix(X)), dense.predict_proba(X), atol=1e-10)
    sparse.partial_fit(sp.csr_matrix(X), y)


def test_partial_fit_learns_and_rejects_unseen_labels():
    X, y = blobs()
    model = SoftmaxRegression(random_state=0)
    with pytest.raises(ValueError, match="classes"):
        model.partial_fit(X, y)
    for _ in range(5):
        model.partial_fit(X, y, classes=[0, 1, 2])
    assert model.n_iter_ == 5
    assert model.score(X, y) > 0.9
    with pytest.raises(ValueError, match="not in classes"):
        model.partial_fit(X, np.full_like(y, 7))


def test_tol_stops_early_and_none_runs_all_epochs():
    X, y = blobs()
    assert (
        SoftmaxRegression(solver="sgd", random_state=0, tol=None, max_epochs=7).fit(X, y).n_iter_
        == 7
    )
    stopped = SoftmaxRegression(
        solver="sgd", random_state=0, tol=10.0, n_iter_no_change=2, max_epochs=50
    )
    # The first epoch always improves on "no loss yet"; then 2 epochs without a gain of 10.
    assert stopped.fit(X, y).n_iter_ == 3


def test_early_stopping_records_validation_scores():
    X, y = blobs(n=600)
    model = SoftmaxRegression(random_state=0, early_stopping=True, max_epochs=5).fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_
    assert max(model.validation_scores_) > 0.9


def test_warm_start_continues_from_the_weights():
    X, y = blobs()
    model = SoftmaxRegression(solver="sgd", random_state=0, max_epochs=1, tol=None, warm_start=True)
    first = model.fit(X, y).coef_.copy()
    second = model.fit(X, y).coef_
    cold = SoftmaxRegression(solver="sgd", random_state=0, max_epochs=1, tol=None).fit(X, y).coef_
    assert_array_equal(first, cold)
    assert not np.array_equal(first, second)


def test_a_step_too_large_is_halved_until_training_converges(digits):
    X_train, y_train, X_test, y_test = digits
    # 100 is about 1000 times the "auto" step on digits: the first epoch runs away, and about
    # eight halvings bring the step back to a stable one.
    model = SoftmaxRegression(
        solver="sgd", random_state=0, learning_rate=100.0, schedule="constant", tol=None
    )
    model.set_params(max_epochs=20)
    with pytest.warns(RuntimeWarning) as caught:
        model.fit(X_train, y_train)
    messages = [str(w.message) for w in caught]
    assert re.match("training diverged: epoch 1 undone .* step size halved to 50", messages[0])
    assert all(m.startswith("training diverged: epoch") for m in messages), messages
    assert model.loss_curve_[-1] < 0.01 * model.loss_curve_[0], model.loss_curve_
    assert model.score(X_test, y_test) > 0.9
    assert np.all(np.isfinite(model.coef_))


def test_a_fit_that_ends_above_its_starting_loss_says_so(digits):
    X_train, y_train, _, _ = digits
    # A constant step 100 times "auto" with Nesterov momentum: the epochs' mean losses fall
    # (31, 26, 8.4, ..., 0.8) while the weights they end on jump about, and the last kept
    # epoch ends on weights worse than the start. Epoch means cannot see it; the check can.
    model = SoftmaxRegression(
        solver="sgd", random_state=0, learning_rate=10.0, schedule="constant", tol=None
    )
    with pytest.warns(RuntimeWarning, match="ended with a training loss of .* above the 2.3"):
        model.fit(X_train, y_train)


@pytest.mark.parametrize(
    ("X", "y", "error", "match"),
    [
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), [0, 1], ValueError, "NaN"),
        (np.array([[np.inf, 1.0], [0.0, 1.0]]), [0, 1], ValueError, "infinity"),
        (np.ones((3, 2)), [0, 1], ValueError, "inconsistent numbers of samples"),
        (np.ones((3, 2)), [1, 1, 1], ValueError, "one class"),
        (np.ones((3, 2)), [0.5, 1.5, 2.5], ValueError, "Unknown label type"),
    ],
)
def test_bad_training_input_is_refused(X, y, error, match):
    with pytest.raises(error, match=match):
        SoftmaxRegression().fit(X, y)


def test_wrong_number_of_features_at_predict():
    X, y = blobs()
    model = SoftmaxRegression(random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])


# Each hyper-parameter with values out of its domain: wrong type, out of range, NaN/inf.
BAD_HYPER_PARAMETERS = {
    "solver": ["newton", None],
    "learning_rate": [0.0, "fast", float("nan")],
    "schedule": ["exponential"],
    "power_t": [-0.5, "half"],
    "momentum": [1.0, -0.1],
    "nesterov": ["yes"],
    "l2": [-1.0, float("inf")],
    "batch_size": [0, 2.5],
    "max_epochs": [0],
    "max_iter": [0, 2.5],
    "tol": [-1.0, "low"],
    "n_iter_no_change": [0],
    "early_stopping": ["yes"],
    "validation_fraction": [1.0, 0.0],
    "shuffle": ["yes"],
    "random_state": ["seed"],
    "dtype": [np.float16, "int32"],
    "backend": ["nope", 1],
    "n_threads": [0, -1, 1.5, "two"],
    "verbose": [-1, "loud"],
    "warm_start": ["yes"],
}


def test_every_hyper_parameter_has_constraints_and_bad_values_here():
    params = set(SoftmaxRegression().get_params())
    assert set(SoftmaxRegression._parameter_constraints) == params
    assert set(BAD_HYPER_PARAMETERS) == params


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize(
    ("param", "value"),
    [(param, value) for param, values in BAD_HYPER_PARAMETERS.items() for value in values],
)
def test_bad_hyper_parameters_are_refused_by_name(param, value, method):
    X, y = blobs(n=30)
    model = SoftmaxRegression(**{param: value})
    with pytest.raises(InvalidParameterError) as info:
        getattr(model, method)(X, y, **({"classes": [0, 1, 2]} if method == "partial_fit" else {}))
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"The {param!r} parameter of SoftmaxRegression must be ")
    assert not hasattr(model, "coef_")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n_threads", None),
        ("n_threads", 1),
        ("n_threads", np.int64(2)),
        ("dtype", np.float64),
        ("dtype", float),
        ("dtype", "float32"),
        ("dtype", np.dtype(np.float32)),
        ("learning_rate", 1),
        ("l2", 0),
        ("tol", None),
        ("verbose", False),
        ("random_state", np.random.RandomState(0)),
        ("backend", "auto"),
    ],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=3
def test_good_hyper_parameters_are_accepted(param, value):
    X, y = blobs(n=30)
    SoftmaxRegression(**{param: value}, solver="lbfgs", max_iter=3).fit(X, y)


def test_partial_fit_checks_the_hyper_parameters_on_every_call():
    X, y = blobs(n=30)
    model = SoftmaxRegression(backend="numpy").partial_fit(X, y, classes=[0, 1, 2])
    model.set_params(n_threads=0)
    with pytest.raises(InvalidParameterError, match="'n_threads' parameter"):
        model.partial_fit(X, y)


def test_the_convergence_warning_points_at_the_caller():
    X, y = blobs(n=30)
    with pytest.warns(ConvergenceWarning) as record:
        SoftmaxRegression(solver="lbfgs", max_iter=1).fit(X, y)
    assert record[0].filename == __file__


def test_lbfgs_with_early_stopping_is_refused():
    X, y = blobs(n=30)
    with pytest.raises(ValueError, match="early_stopping=True needs solver='sgd'"):
        SoftmaxRegression(solver="lbfgs", early_stopping=True).fit(X, y)


def test_pickle_and_npz_round_trip(tmp_path):
    X, y = blobs()
    model = SoftmaxRegression(random_state=0).fit(X, np.array(list("abc"))[y])
    restored = pickle.loads(pickle.dumps(model))
    assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = SoftmaxRegression.load(path)
    assert loaded.get_params() == model.get_params()
    assert_array_equal(loaded.classes_, model.classes_)
    assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_load_refuses_an_unknown_format(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, format_version=99, coef=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="model file format 99 is not supported"):
        SoftmaxRegression.load(path)


def test_save_writes_exactly_the_path_given(tmp_path):
    X, y = blobs(n=30)
    model = SoftmaxRegression(solver="lbfgs").fit(X, y)
    path = tmp_path / "mymodel"
    model.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mymodel"]  # no "mymodel.npz"
    loaded = SoftmaxRegression.load(str(path))
    assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_save_and_load_through_file_objects():
    import io

    X, y = blobs(n=30)
    model = SoftmaxRegression(solver="lbfgs").fit(X, y)
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    assert_array_equal(SoftmaxRegression.load(buffer).coef_, model.coef_)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello, world\n", "(it is not an .npz archive)"),
        (b"", "(the file is empty, not an .npz archive)"),
        (b"\x00" * 100, "(it is not an .npz archive)"),
    ],
    ids=["text", "empty", "zeros"],
)
def test_load_says_a_garbage_file_is_not_a_model_file(tmp_path, content, reason):
    path = tmp_path / "garbage.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        SoftmaxRegression.load(path)
    assert str(info.value) == f"{path}: not a fastsoftmax model file {reason}"
    assert "allow_pickle" not in str(info.value)


def test_load_lists_the_arrays_an_unrelated_npz_lacks(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((2, 2)), y=np.zeros(2))
    with pytest.raises(ValueError) as info:
        SoftmaxRegression.load(path)
    assert str(info.value) == (
        f"{path}: not a fastsoftmax model file (it lacks the arrays save() writes: "
        "format_version, coef, intercept, classes, params, n_iter, learning_rate, "
        "loss_curve; it holds X, y)"
    )


# -- the fused linear kernel ----------------------------------------------------------------


def composed_loss_and_grads(X, W, b, y, sample_weight=None, l2=0.0):
    logits = X @ W.T + b
    loss, grad = fastsoftmax.softmax_cross_entropy(logits, y, sample_weight=sample_weight)
    return loss + 0.5 * l2 * np.sum(W**2), grad.T @ X + l2 * W, grad.sum(axis=0)


@pytest.mark.parametrize("chunk_rows", [1, 7, None])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("method", ["fused", "blas"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_kernel_matches_composition(backend, chunk_rows, sparse, method, dtype):
    rng = np.random.default_rng(0)
    X, y = blobs(n=50, d=6, k=4, dtype=np.float64)
    W, b = rng.standard_normal((4, 6)), rng.standard_normal(4)
    weights = rng.random(50)
    weights[:5] = 0  # rows that weigh nothing are ignored
    expected = composed_loss_and_grads(X, W, b, y, weights, l2=0.1)
    X = sp.csr_matrix(X) if sparse else np.asfortranarray(X)  # any layout: copied in order
    got = linear_softmax_cross_entropy(
        X.astype(dtype),
        W.astype(dtype),
        b.astype(dtype),
        y,
        sample_weight=weights,
        l2=0.1,
        chunk_rows=chunk_rows,
        method=method,
        backend=backend,
    )
    # float32: each result sums 50 rows of 6-term products of O(1) values, so rounding stays
    # below ~60 float32 epsilons (7e-6) relative to those values.
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == dtype
        assert_allclose(g, e, rtol=tol, atol=tol)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_fused_and_blas_methods_train_the_same_model(backend, sparse, monkeypatch):
    from fastsoftmax import _linear

    X, y = blobs(n=300, d=8, k=4, dtype=np.float64)
    X = sp.csr_matrix(np.where(np.abs(X) > 1, X, 0)) if sparse else X
    models = {}
    for method, most_weights in (("fused", 10**9), ("blas", 0)):
        monkeypatch.setitem(_linear.FUSED_MAX_WEIGHTS, "csr" if sparse else "dense", most_weights)
        monkeypatch.setattr(_linear, "FUSED_MIN_FEATURES", 0)
        options = dict(random_state=0, dtype=np.float64, backend=backend, tol=None, l2=0.01)
        models[method] = {
            solver: SoftmaxRegression(solver=solver, **options).fit(
                X, y, sample_weight=np.arange(300) % 3
            )
            for solver in ("sgd", "lbfgs")
        }
    for solver in ("sgd", "lbfgs"):
        fused, blas = models["fused"][solver], models["blas"][solver]
        # float64 sums in another order: ~1e-15 per step, amplified a little by training.
        assert_allclose(fused.coef_, blas.coef_, rtol=0, atol=1e-8, err_msg=solver)
        assert_allclose(fused.intercept_, blas.intercept_, rtol=0, atol=1e-8, err_msg=solver)


def test_linear_kernel_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    X, y = blobs(n=20, d=4, k=3, dtype=np.float64)
    W, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    _, dW, db = linear_softmax_cross_entropy(X, W, b, y, l2=0.3, chunk_rows=6)
    h = 1e-6
    for idx in np.ndindex(W.shape):
        step = np.zeros_like(W)
        step[idx] = h
        up = linear_softmax_cross_entropy(X, W + step, b, y, l2=0.3)[0]
        down = linear_softmax_cross_entropy(X, W - step, b, y, l2=0.3)[0]
        assert_allclose(dW[idx], (up - down) / (2 * h), atol=1e-7, err_msg=f"dW{idx}")
    for j in range(3):
        step = np.zeros(3)
        step[j] = h
        up = linear_softmax_cross_entropy(X, W, b + step, y)[0]
        down = linear_softmax_cross_entropy(X, W, b - step, y)[0]
        assert_allclose(db[j], (up - down) / (2 * h), atol=1e-7, err_msg=f"db[{j}]")


def test_linear_kernel_refuses_mixed_dtypes():
    X, y = blobs(dtype=np.float64)
    W, b = np.zeros((3, 5), np.float32), np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="X must have dtype float32"):
        linear_softmax_cross_entropy(X, W, b, y)


# -- module layout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["fastsoftmax._sgd", "fastsoftmax._lbfgs", "fastsoftmax._data", "fastsoftmax._dask"]
)
def test_solvers_and_data_terms_do_not_import_the_estimator(module):
    import subprocess
    import sys
    from pathlib import Path

    code = f"import sys, {module}\nassert 'fastsoftmax.classifier' not in sys.modules, {module!r}"
    root = Path(__file__).resolve().parents[1]  # the package of this checkout, not an install
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)


def test_dir_lists_the_lazy_public_names_without_importing_them():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, fastsoftmax\n"
        "names = dir(fastsoftmax)\n"
        "assert {'SoftmaxRegression', 'bench'} <= set(names), names\n"
        "assert set(fastsoftmax.__all__) <= set(names) and names == sorted(names)\n"
        "assert 'fastsoftmax.classifier' not in sys.modules\n"
        "assert 'fastsoftmax.benchmark' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)


@pytest.mark.parametrize(
    ("n_classes", "n_features", "sparse", "expected"),
    [
        (10, 784, False, "fused"),  # Fashion-MNIST: W and dW stay in L2
        (100, 784, False, "fused"),
        (1000, 784, False, "blas"),  # BLAS's blocking wins on a 3 MiB W
        (10, 64, False, "blas"),  # digits: too little work per row for the fused kernel
        (2, 64, False, "fused"),
        (10, 64, True, "fused"),
        (20, 50_000, True, "blas"),  # TF-IDF: scattered columns of a 4 MiB W
    ],
)
def test_auto_method_follows_the_measured_crossovers(n_classes, n_features, sparse, expected):
    from fastsoftmax._linear import choose_method

    assert choose_method("auto", n_classes, n_features, sparse, "cython") == expected
    assert choose_method("auto", n_classes, n_features, sparse, "numpy") == "blas"
    assert choose_method("fused", n_classes, n_features, sparse, "numpy") == "fused"


def test_momentum_zero_is_plain_sgd_whatever_nesterov(digits):
    X_train, y_train, _, _ = digits
    options = dict(solver="sgd", random_state=0, momentum=0.0, max_epochs=2, tol=None)
    default = SoftmaxRegression(**options).fit(X_train, y_train)  # nesterov=True by default
    plain = SoftmaxRegression(**options, nesterov=False).fit(X_train, y_train)
    assert_array_equal(default.coef_, plain.coef_)
