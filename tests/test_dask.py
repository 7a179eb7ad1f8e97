"""SoftmaxRegression on Dask: the same answer as in memory, on a real 2-process LocalCluster.

One module-scoped cluster (2 worker processes, 1 thread each, 512 MiB each) serves the tests that
take the ``client`` fixture; it is made current per test (``as_current``) and never the global
default, so the tests without it run on Dask's local scheduler. Arrays are tiny: the point is
the blockwise plumbing, not speed (``benchmarks/dask_out_of_core.py`` measures that).
"""

import os
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from fastsoftmax import SoftmaxRegression, _dask  # noqa: E402

# L-BFGS to a tight gradient tolerance on a strongly convex problem (l2 > 0): the optimum is
# unique, so any chunking must land on it to within the optimiser's tolerance.
LBFGS = {"solver": "lbfgs", "l2": 1e-2, "tol": 1e-8, "max_iter": 200, "dtype": np.float64}


def blobs(n=300, d=5, k=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = 2 * rng.standard_normal((k, d))
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.standard_normal((n, d))).astype(dtype)
    return X, y


@pytest.fixture(scope="module")
def module_client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # port and memory notices of a small local cluster
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit="512MiB",
            dashboard_address=":0",
        )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def client(module_client):
    with module_client.as_current():
        yield module_client


def reference(X, y, sample_weight=None, **params):
    """The in-memory fit the Dask fit must reproduce."""
    return SoftmaxRegression(**{**LBFGS, **params}).fit(X, y, sample_weight=sample_weight)


def assert_same_model(got, expected, atol):
    assert_array_equal(got.classes_, expected.classes_)
    assert got.coef_.dtype == expected.coef_.dtype
    assert_allclose(got.coef_, expected.coef_, rtol=0, atol=atol, err_msg="coef_")
    assert_allclose(got.intercept_, expected.intercept_, rtol=0, atol=atol, err_msg="intercept_")
    assert_allclose(got.loss_curve_[-1], expected.loss_curve_[-1], rtol=1e-6, err_msg="loss")


@pytest.mark.parametrize(
    "chunks",
    [300, 64, (10, 90, 1, 150, 49)],
    ids=["one-block", "uneven-last-block", "irregular"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_lbfgs_matches_in_memory_for_any_chunking(client, chunks, dtype):
    X, y = blobs(dtype=dtype)
    expected = reference(X, y, dtype=dtype)
    X_dask, y_dask = da.from_array(X, chunks=(chunks, -1)), da.from_array(y, chunks=chunks)
    model = SoftmaxRegression(**{**LBFGS, "dtype": dtype}).fit(X_dask, y_dask)
    # float32: L-BFGS stops where its line search can no longer lower the loss, whose float32
    # resolution is ~1e-8 relative (the row losses are float32, summed in float64). Near the
    # optimum the loss rises as l2 / 2 * |delta|^2 along the flattest direction (curvature at
    # least l2 = 1e-2), so a fit may stop up to sqrt(2 * 1e-8 * 0.3 / 1e-2) ~ 1e-3 away from it,
    # either side: 2e-3 between two fits. (Measured: 7e-5 to 4e-4 from the float64 optimum, in
    # memory and on Dask, on every backend including the NumPy reference.)
    assert_same_model(model, expected, atol=1e-6 if dtype == np.float64 else 2e-3)
    assert model.n_features_in_ == 5


def test_a_block_without_one_class(client):
    X, y = blobs()
    order = np.argsort(y, kind="stable")  # sorted by label: most blocks hold one class
    X, y = X[order], y[order]
    assert len(np.unique(y[:50])) == 1
    model = SoftmaxRegression(**LBFGS).fit(da.from_array(X, 50), da.from_array(y, 50))
    assert_same_model(model, reference(X, y), atol=1e-6)


def test_sample_weight_and_string_labels(client):
    X, y = blobs()
    labels = np.array(["ant", "bee", "cat"])[y]
    weights = np.random.default_rng(1).random(len(y)) * 2
    X_dask = da.from_array(X, chunks=(70, -1))
    model = SoftmaxRegression(**LBFGS).fit(
        X_dask, da.from_array(labels, 70), sample_weight=da.from_array(weights, 70)
    )
    assert_same_model(model, reference(X, labels, sample_weight=weights), atol=1e-6)
    assert model.score(X_dask, da.from_array(labels, 70)) == model.score(X, labels)
    # NumPy y and sample_weight with dask X are split like the rows of X.
    again = SoftmaxRegression(**LBFGS).fit(X_dask, labels, sample_weight=weights)
    assert_same_model(again, model, atol=1e-9)


def test_predictions_are_lazy_blockwise_and_equal_in_memory(client):
    X, y = blobs(dtype=np.float32)
    model = SoftmaxRegression(**{**LBFGS, "dtype": np.float32}).fit(X, y)
    X_dask = da.from_array(X, chunks=(64, -1))
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        lazy = getattr(model, method)(X_dask)
        assert isinstance(lazy, da.Array), method
        assert lazy.chunks[0] == X_dask.chunks[0], method
        expected = getattr(model, method)(X)
        got = lazy.compute()
        assert got.dtype == expected.dtype, method
        assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=method)
    weights = np.linspace(0, 1, len(y))
    assert_allclose(
        model.score(X_dask, da.from_array(y, 64), sample_weight=da.from_array(weights, 64)),
        model.score(X, y, sample_weight=weights),
        rtol=1e-12,
    )


def test_prediction_stays_lazy_until_computed():
    # Local scheduler: a block loader that counts its calls in this process.
    X, y = blobs()
    model = SoftmaxRegression(**LBFGS).fit(X, y)
    loads = []

    def load(i):
        loads.append(i)
        return X[i * 100 : (i + 1) * 100]

    from dask import delayed

    X_lazy = da.concatenate(
        [da.from_delayed(delayed(load)(i), (100, 5), X.dtype) for i in range(3)]
    )
    labels = model.predict(X_lazy)
    proba = model.predict_proba(X_lazy)
    assert loads == [], "prediction computed blocks before it was asked to"
    assert_array_equal(labels.compute(), model.predict(X))
    assert sorted(loads) == [0, 1, 2]
    assert_allclose(proba.compute(), model.predict_proba(X), rtol=1e-12)


def test_local_scheduler_without_a_client():
    with pytest.raises(ValueError):
        distributed.default_client()  # no client is active here
    X, y = blobs()
    model = SoftmaxRegression(**LBFGS).fit(da.from_array(X, (64, -1)), da.from_array(y, 64))
    assert_same_model(model, reference(X, y), atol=1e-6)


def test_streaming_without_persist_gives_the_same_model(client, monkeypatch):
    monkeypatch.setattr(_dask, "PERSIST_FRACTION", 0.0)  # as if X were larger than the cluster
    X, y = blobs()
    model = SoftmaxRegression(**LBFGS).fit(da.from_array(X, (64, -1)), da.from_array(y, 64))
    assert_same_model(model, reference(X, y), atol=1e-6)


def test_dask_dataframe_and_series(client):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    X, y = blobs()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    frame["label"] = y
    ddf = dd.from_pandas(frame, npartitions=4)
    features = ddf[[f"f{i}" for i in range(5)]]
    model = SoftmaxRegression(**LBFGS).fit(features, ddf["label"])
    assert_same_model(model, reference(X, y), atol=1e-6)
    assert list(model.feature_names_in_) == [f"f{i}" for i in range(5)]
    in_memory = frame.drop(columns="label")
    assert_array_equal(model.predict(features).compute(), model.predict(in_memory))
    assert model.score(features, ddf["label"]) == model.score(in_memory, y)
    with pytest.raises(ValueError, match="feature names"):
        model.predict(features.rename(columns={"f0": "other"}))


def test_sgd_is_blockwise_partial_fit_in_block_order(client):
    X, y = blobs(dtype=np.float64)
    params = {
        "solver": "sgd",
        "l2": 0.0,  # as partial_fit's: "auto" is 1 / n_samples in fit, 0 in partial_fit
        "learning_rate": 0.05,
        "shuffle": False,
        "max_epochs": 3,
        "tol": None,
        "random_state": 0,
        "dtype": np.float64,
    }
    model = SoftmaxRegression(**params).fit(da.from_array(X, (100, -1)), da.from_array(y, 100))
    # The documented equivalent: partial_fit on each block in turn, for max_epochs passes.
    expected = SoftmaxRegression(**params)
    for _ in range(3):
        for i in range(0, 300, 100):
            expected.partial_fit(X[i : i + 100], y[i : i + 100], classes=[0, 1, 2])
    assert_allclose(model.coef_, expected.coef_, rtol=1e-9, atol=1e-12)
    assert model.n_iter_ == 3 == len(model.loss_curve_)
    assert model.score(X, y) > 0.9


def test_sgd_shuffled_passes_are_seeded_and_learn(client):
    X, y = blobs()
    fits = [
        SoftmaxRegression(solver="sgd", random_state=seed, max_epochs=4, tol=None).fit(
            da.from_array(X, (50, -1)), da.from_array(y, 50)
        )
        for seed in (0, 0, 1)
    ]
    assert_array_equal(fits[0].coef_, fits[1].coef_)
    assert not np.array_equal(fits[0].coef_, fits[2].coef_)
    assert fits[0].score(X, y) > 0.9
    assert fits[0].learning_rate_ == pytest.approx(24 / (1 + np.mean(np.sum(X**2, axis=1))))


def test_partial_fit_on_dask_is_one_pass_over_the_blocks(client):
    X, y = blobs()
    model = SoftmaxRegression(learning_rate=0.05, random_state=0, dtype=np.float64)
    model.partial_fit(da.from_array(X, (150, -1)), da.from_array(y, 150), classes=[0, 1, 2])
    expected = SoftmaxRegression(learning_rate=0.05, random_state=0, dtype=np.float64)
    expected.partial_fit(X[:150], y[:150], classes=[0, 1, 2])
    expected.partial_fit(X[150:], y[150:])
    assert_allclose(model.coef_, expected.coef_, rtol=1e-9, atol=1e-12)
    assert model.n_iter_ == 1


@pytest.mark.parametrize(
    ("make_input", "error", "match"),
    [
        (lambda X, y: (X, da.from_array(y, 64)), TypeError, "pass X as a dask array too"),
        (lambda X, y: (da.from_array(X, 64), da.from_array(y[:-1], 64)), ValueError, "inconsist"),
        (lambda X, y: (da.from_array(X[:, 0], 64), da.from_array(y, 64)), ValueError, "2D"),
        (lambda X, y: (da.from_array(X, 64), da.zeros(300, chunks=64)), ValueError, "one class"),
        (
            lambda X, y: (da.from_array(X, 64), da.from_array(y + 0.5, 64)),
            ValueError,
            "Unknown label type",
        ),
    ],
    ids=["numpy-X", "lengths", "1d-X", "one-class", "float-labels"],
)
def test_bad_dask_input_is_refused(make_input, error, match):
    X, y = blobs()
    with pytest.raises(error, match=match):
        SoftmaxRegression(**LBFGS).fit(*make_input(X, y))


def test_non_finite_block_is_refused_on_the_workers(client):
    X, y = blobs()
    X[250, 2] = np.nan  # in the last block only
    with pytest.raises(ValueError, match="NaN or infinity"):
        SoftmaxRegression(**LBFGS).fit(da.from_array(X, (64, -1)), da.from_array(y, 64))
    with pytest.raises(ValueError, match="sample_weight must be finite"):
        SoftmaxRegression(**LBFGS).fit(
            da.from_array(blobs()[0], (64, -1)),
            da.from_array(y, 64),
            sample_weight=da.from_array(-np.ones(300), 64),
        )


def test_prediction_checks_features(client):
    X, y = blobs()
    model = SoftmaxRegression(**LBFGS).fit(X, y)
    with pytest.raises(ValueError, match="expecting 5 features"):
        model.predict(da.from_array(X[:, :3], 64))


def test_sgd_refuses_early_stopping_on_dask():
    X, y = blobs()
    with pytest.raises(ValueError, match="early_stopping=True is not supported with Dask"):
        SoftmaxRegression(early_stopping=True).fit(da.from_array(X, 64), da.from_array(y, 64))


# Last: it kills a worker (the nanny starts a new one, and the test waits for it).
def test_worker_killed_mid_fit_recovers_or_fails_clearly(client, monkeypatch, tmp_path):
    X, y = blobs()
    expected = reference(X, y)
    marker = str(tmp_path / "killed")
    original = _dask._sums_on_block

    def sums_or_die(*args):
        check = args[-1]
        if not check:  # from the second evaluation on, the first task to get here dies
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)  # the worker process dies in the middle of an evaluation
        return original(*args)

    monkeypatch.setattr(_dask, "_sums_on_block", sums_or_die)
    X_dask, y_dask = da.from_array(X, (64, -1)), da.from_array(y, 64)
    try:
        model = SoftmaxRegression(**LBFGS).fit(X_dask, y_dask)
    except RuntimeError as exc:  # Dask gave up: the error must say so
        assert "the Dask computation failed" in str(exc)
        print("worker killed: the fit failed with", exc)
    else:  # Dask recomputed the lost blocks and retried: the model must be the right one
        assert_same_model(model, expected, atol=1e-6)
        print(f"worker killed: the fit recovered ({model.n_iter_} iterations)")
    finally:
        client.wait_for_workers(2, timeout=60)
    assert os.path.exists(marker), "no worker was killed: the test tested nothing"
