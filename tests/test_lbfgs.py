"""SoftmaxRegression(solver="lbfgs") in memory: the objective, the optimum, the parameters."""

import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from scipy.optimize import check_grad
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import check_estimator
from threadpoolctl import threadpool_limits

from fastsoftmax import SoftmaxRegression, _lbfgs, _linear, linear_softmax_cross_entropy
from fastsoftmax.datasets import load_digits


def blobs(n=300, d=5, k=3, seed=0, dtype=np.float64, spread=1.0):
    rng = np.random.default_rng(seed)
    centers = 3 * rng.standard_normal((k, d))
    y = rng.integers(0, k, n)
    X = (centers[y] + spread * rng.standard_normal((n, d))).astype(dtype)
    return X, y


def in_memory_objective(X, y, weights, l2, k):
    def data_term(W, b):
        return _linear.block_sums(X, y.astype(np.int64), weights, W, b)

    return _lbfgs.Objective(data_term, k, X.shape[1], X.dtype, l2)


@pytest.mark.parametrize("weighted", [False, True])
def test_objective_equals_linear_softmax_cross_entropy(weighted):
    rng = np.random.default_rng(0)
    X, y = blobs(n=2500, d=6, k=4)  # 2500 rows: three chunks of the fused kernel
    W, b = rng.standard_normal((4, 6)), rng.standard_normal(4)
    weights = rng.random(2500) if weighted else None
    objective = in_memory_objective(X, y, weights, 0.3, 4)
    loss, grad = objective(objective.flatten(W, b))
    expected_loss, dW, db = linear_softmax_cross_entropy(X, W, b, y, sample_weight=weights, l2=0.3)
    assert_allclose(loss, expected_loss, rtol=1e-12)
    assert_allclose(grad, np.concatenate([dW.ravel(), db]), rtol=1e-10, atol=1e-12)


def test_objective_gradient_matches_finite_differences():
    X, y = blobs(n=40, d=3, k=3)
    objective = in_memory_objective(X, y, np.linspace(0.5, 2, 40), 0.1, 3)
    theta = np.random.default_rng(2).standard_normal(12)
    error = check_grad(lambda t: objective(t)[0], lambda t: objective(t)[1], theta)
    assert error < 1e-6, f"gradient differs from finite differences by {error:g}"


def test_block_sums_add_up_over_any_split():
    rng = np.random.default_rng(3)
    X, y = blobs(n=100)
    labels, weights = y.astype(np.int64), rng.random(100)
    W, b = rng.standard_normal((3, 5)), rng.standard_normal(3)
    whole = _linear.block_sums(X, labels, weights, W, b)
    cuts = [0, 1, 37, 37, 100]  # includes an empty block
    parts = [
        _linear.block_sums(X[i:j], labels[i:j], weights[i:j], W, b)
        for i, j in itertools.pairwise(cuts)
    ]
    total = _linear.add_block_sums(*parts)
    assert_allclose(total.weight, whole.weight, rtol=1e-14)
    assert_allclose(total.loss, whole.loss, rtol=1e-13)
    assert_allclose(total.dW, whole.dW, rtol=1e-12, atol=1e-12)
    assert_allclose(total.db, whole.db, rtol=1e-12, atol=1e-12)


def test_reaches_the_optimum_of_scikit_learn_logistic_regression():
    X_train, y_train, X_test, _ = load_digits(dtype=np.float64)
    n = len(X_train)
    ours = SoftmaxRegression(solver="lbfgs", l2=1 / n, tol=1e-7, max_iter=1000, dtype=np.float64)
    # One BLAS thread: many small products, which two OpenBLAS threads slow down a lot when
    # the other core is busy (a shared CI machine).
    with threadpool_limits(1, user_api="blas"):
        ours.fit(X_train, y_train)
        theirs = LogisticRegression(C=1.0, tol=1e-7, max_iter=1000).fit(X_train, y_train)
    # Same objective: ours at its optimum is no worse than at scikit-learn's solution.
    objective = in_memory_objective(
        X_train, np.searchsorted(ours.classes_, y_train), None, 1 / n, 10
    )
    at_theirs = objective(objective.flatten(theirs.coef_, theirs.intercept_))[0]
    assert ours.loss_curve_[-1] <= at_theirs + 1e-9
    assert abs(ours.loss_curve_[-1] - at_theirs) < 1e-6
    assert_allclose(ours.predict_proba(X_test), theirs.predict_proba(X_test), atol=1e-4)
    assert_allclose(ours.coef_, theirs.coef_, atol=5e-4)


def test_weight_two_equals_a_repeated_row():
    X, y = blobs(n=120, spread=3.0)
    weights = np.ones(120)
    weights[:30] = 2
    params = {"solver": "lbfgs", "l2": 1e-2, "tol": 1e-10, "max_iter": 500, "dtype": np.float64}
    weighted = SoftmaxRegression(**params).fit(X, y, sample_weight=weights)
    repeated = SoftmaxRegression(**params).fit(np.vstack([X, X[:30]]), np.r_[y, y[:30]])
    assert_allclose(weighted.coef_, repeated.coef_, atol=1e-6)
    assert_allclose(weighted.intercept_, repeated.intercept_, atol=1e-6)


def test_deterministic_monotone_and_records_iterations():
    X, y = blobs(spread=3.0)
    a = SoftmaxRegression(solver="lbfgs", l2=1e-3, random_state=0).fit(X, y)
    b = SoftmaxRegression(solver="lbfgs", l2=1e-3, random_state=1).fit(X, y)
    assert_array_equal(a.coef_, b.coef_)  # starts from zeros: the seed plays no part
    assert a.n_iter_ == len(a.loss_curve_) >= 2
    assert np.all(np.diff(a.loss_curve_) <= 1e-12), "L-BFGS-B's loss must not increase"
    assert a.loss_curve_[-1] < np.log(3)


def test_float32_is_close_to_float64():
    X, y = blobs(spread=3.0)
    params = {"solver": "lbfgs", "l2": 1e-2, "tol": 1e-6}
    single = SoftmaxRegression(**params, dtype=np.float32).fit(X.astype(np.float32), y)
    double = SoftmaxRegression(**params, dtype=np.float64).fit(X, y)
    assert single.coef_.dtype == np.float32
    assert single.predict_proba(X.astype(np.float32)).dtype == np.float32
    assert_allclose(single.coef_, double.coef_, atol=1e-3)


def test_sparse_csr_matches_dense():
    X, y = blobs(spread=3.0)
    X[np.abs(X) < 1] = 0
    params = {"solver": "lbfgs", "l2": 1e-2, "tol": 1e-10, "dtype": np.float64}
    dense = SoftmaxRegression(**params).fit(X, y)
    sparse = SoftmaxRegression(**params).fit(sp.csr_matrix(X), y)
    assert_allclose(sparse.coef_, dense.coef_, atol=1e-8)


def test_max_iter_bounds_iterations_and_warns():
    X, y = blobs(spread=3.0)
    with pytest.warns(ConvergenceWarning, match="did not converge in 3 iterations"):
        model = SoftmaxRegression(solver="lbfgs", max_iter=3, tol=None).fit(X, y)
    assert model.n_iter_ == 3 == len(model.loss_curve_)


def test_warm_start_continues_from_the_weights():
    X, y = blobs(spread=3.0)
    params = {"solver": "lbfgs", "l2": 1e-3, "max_iter": 4, "tol": None, "dtype": np.float64}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = SoftmaxRegression(**params, warm_start=True).fit(X, y)
        first = model.loss_curve_[-1]
        model.fit(X, y)
    assert model.loss_curve_[0] <= first  # the second fit started where the first stopped
    assert model.loss_curve_[-1] < first


def test_partial_fit_after_lbfgs_takes_sgd_steps():
    X, y = blobs()
    model = SoftmaxRegression(solver="lbfgs", l2=1e-3, random_state=0).fit(X, y)
    assert np.isnan(model.learning_rate_)
    before = model.coef_.copy()
    model.partial_fit(X, y)
    assert np.isfinite(model.learning_rate_) and model.learning_rate_ > 0
    assert not np.array_equal(before, model.coef_)
    assert model.score(X, y) > 0.9


def test_save_and_load_keep_the_solver(tmp_path):
    X, y = blobs(spread=3.0)
    model = SoftmaxRegression(solver="lbfgs", l2=1e-3, max_iter=50).fit(X, y)
    model.save(tmp_path / "m.npz")
    loaded = SoftmaxRegression.load(tmp_path / "m.npz")
    assert loaded.get_params() == model.get_params()
    assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"solver": "newton"}, "'solver' parameter"),
        ({"solver": "lbfgs", "max_iter": 0}, "'max_iter' parameter"),
        ({"solver": "lbfgs", "max_iter": 2.5}, "'max_iter' parameter"),
        ({"solver": "lbfgs", "early_stopping": True}, "early_stopping=True needs solver='sgd'"),
        ({"solver": "lbfgs", "tol": -1.0}, "'tol' parameter"),
        ({"solver": "lbfgs", "l2": -1.0}, "'l2' parameter"),
    ],
)
def test_bad_solver_parameters_are_refused(params, match):
    X, y = blobs()
    with pytest.raises(ValueError, match=match):
        SoftmaxRegression(**params).fit(X, y)


def test_zero_total_weight_is_refused():
    X, y = blobs()
    with pytest.raises(ValueError, match="sums to zero"):
        SoftmaxRegression(solver="lbfgs").fit(X, y, sample_weight=np.zeros(len(y)))


def test_passes_scikit_learn_estimator_checks_with_lbfgs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(
            SoftmaxRegression(solver="lbfgs", l2=1e-3, dtype=np.float64),
            on_fail=None,
        )
    failed = {
        r["check_name"]: str(r["exception"])[:300] for r in results if r["status"] == "failed"
    }
    assert failed == {}
    assert sum(r["status"] == "passed" for r in results) > 40


@pytest.mark.parametrize(("verbose", "every"), [(1, 10), (2, 1)])
def test_verbose_lbfgs_prints_every_tenth_iteration_or_every_one(capsys, verbose, every):
    X, y, _, _ = load_digits()
    model = SoftmaxRegression(
        solver="lbfgs", max_iter=25, tol=None, verbose=verbose, backend="numpy"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is meant to stop it
        model.fit(X, y)
    printed = [int(line.split()[1].rstrip(":")) for line in capsys.readouterr().out.splitlines()]
    assert printed == list(range(every, model.n_iter_ + 1, every))
