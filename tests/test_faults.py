"""Training under faults: divergence, Ctrl-C, refused calls, and model files that are damaged,
incomplete or from another version.

Faults are injected by replacing the classifier's fused loss-and-gradient kernel with one that
misbehaves at a chosen minibatch. Runs use ``schedule="constant"``, ``shuffle=False`` and
``tol=None``, so a run stopped after epoch e has the very weights (and momentum) of a clean
run of e epochs: what the model keeps can be compared bitwise with what it should keep.
(``test_classifier.py`` already checks a diverging fit's weights are finite, ``partial_fit``'s
refusal of unseen labels, and a file with an unknown format_version.)
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastsoftmax import SoftmaxRegression, _data, _linear, _sgd

N, D, K = 300, 5, 3
BATCH = 100  # 3 minibatches per epoch
SETTINGS = dict(
    solver="sgd",
    random_state=0,
    schedule="constant",
    shuffle=False,
    tol=None,
    batch_size=BATCH,
    max_epochs=4,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = 3 * rng.standard_normal((K, D))
    y = rng.integers(0, K, N)
    return (centers[y] + rng.standard_normal((N, D))).astype(np.float32), y


def trained(data, epochs: int, **options) -> SoftmaxRegression:
    X, y = data
    return SoftmaxRegression(**{**SETTINGS, "max_epochs": epochs, **options}).fit(X, y)


def inject(monkeypatch, at_call: int, fault: str) -> None:
    """From minibatch ``at_call`` (counting from 1) on, the fused kernel misbehaves:
    ``interrupt`` raises KeyboardInterrupt, ``nan-loss`` reports a NaN loss, ``inf-gradient``
    writes +inf into the weight gradient."""
    calls = {"n": 0}

    class Faulty(_linear.LinearTerm):
        def gradients(self, *args, **kwargs):
            calls["n"] += 1
            loss = super().gradients(*args, **kwargs)
            if calls["n"] < at_call:
                return loss
            if fault == "interrupt":
                raise KeyboardInterrupt
            if fault == "nan-loss":
                return float("nan")
            self.dW[...] = np.inf
            return loss

    monkeypatch.setattr(_data, "LinearTerm", Faulty)


def assert_same_model(model, reference, what: str) -> None:
    assert_array_equal(model.coef_, reference.coef_, err_msg=f"{what}: coef_")
    assert_array_equal(model.intercept_, reference.intercept_, err_msg=f"{what}: intercept_")
    assert model.n_iter_ == reference.n_iter_, f"{what}: n_iter_ {model.n_iter_}"
    assert_allclose(model.loss_curve_, reference.loss_curve_, rtol=0, err_msg=f"{what}: losses")


def assert_usable(model, data, what: str) -> None:
    """Predicts probabilities that sum to 1, and goes on training with partial_fit."""
    X, y = data
    proba = model.predict_proba(X)
    assert np.isfinite(proba).all(), f"{what}: non-finite probabilities"
    assert_allclose(proba.sum(axis=1), 1, rtol=1e-5, err_msg=what)
    model.partial_fit(X, y)
    assert np.isfinite(model.coef_).all(), f"{what}: partial_fit after the fault"


# -- divergence ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf weights
@pytest.mark.parametrize("fault", ["nan-loss", "inf-gradient"])
def test_divergence_from_epoch_3_on_is_undone_keeps_epoch_2_and_says_so(fault, data, monkeypatch):
    X, y = data
    after_two = trained(data, 2)
    inject(monkeypatch, at_call=2 * 3 + 2, fault=fault)  # the middle minibatch of epoch 3 on
    model = SoftmaxRegression(**SETTINGS)
    with pytest.warns(RuntimeWarning) as caught:
        model.fit(X, y)
    messages = [str(w.message) for w in caught if "diverged" in str(w.message)]
    assert len(messages) == 2, messages  # both epochs
    assert "training diverged: epoch 3 undone" in messages[0], messages
    assert "epoch 4 undone" in messages[1], messages
    assert "step size halved" in messages[0], messages[0]
    assert_array_equal(model.coef_, after_two.coef_)
    assert_array_equal(model.intercept_, after_two.intercept_)
    assert model.n_iter_ == 4 and model.loss_curve_[:2] == after_two.loss_curve_
    assert not np.isfinite(model.loss_curve_[2:]).any(), model.loss_curve_
    monkeypatch.undo()
    # The momentum was rolled back too: one more epoch gives what a clean model's does.
    model.partial_fit(X, y)
    after_two.partial_fit(X, y)
    assert_array_equal(model.coef_, after_two.coef_)
    assert_array_equal(model.intercept_, after_two.intercept_)


def test_a_fit_whose_every_epoch_raises_the_loss_warns_and_keeps_its_start(data):
    X, y = data
    start = _sgd.initial_state(K, D, np.float32, _sgd.seeded_rng(SETTINGS["random_state"]))
    model = SoftmaxRegression(**{**SETTINGS, "learning_rate": 1e30})
    with pytest.warns(RuntimeWarning) as caught:
        model.fit(X * 1e3, y)
    messages = [str(w.message) for w in caught]
    # Each of the 4 epochs runs away and warns, then the fit says it kept none.
    assert sum("training diverged: epoch" in m for m in messages) == 4, messages
    assert "kept none of its 4 epochs" in messages[-1], messages
    assert_array_equal(model.coef_, start.coef)
    assert_array_equal(model.intercept_, start.intercept)
    assert np.isfinite(model.predict_proba(X)).all()


def test_divergence_in_partial_fit_leaves_the_model_as_it_was(data):
    X, y = data
    model = trained(data, 2)
    before = trained(data, 2)
    # The step size was fixed from the first data's scale: data a million times larger runs
    # away within the epoch.
    with pytest.raises(FloatingPointError, match="diverged"):
        model.partial_fit(X * 1e6, y)
    assert_same_model(model, before, "after a diverging partial_fit")
    assert_usable(model, data, "after a diverging partial_fit")


# -- Ctrl-C ----------------------------------------------------------------------------------


@pytest.mark.parametrize("epoch", [1, 3])
def test_keyboard_interrupt_keeps_the_last_finished_epoch(epoch, data, monkeypatch):
    X, y = data
    finished = epoch - 1
    inject(monkeypatch, at_call=finished * 3 + 2, fault="interrupt")
    model = SoftmaxRegression(**SETTINGS)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y)
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert messages == [f"fit interrupted: the model keeps the weights of epoch {finished}"]
    monkeypatch.undo()
    if finished:
        assert_same_model(model, trained(data, finished), f"Ctrl-C in epoch {epoch}")
        clean = trained(data, finished)
        model.partial_fit(X, y)
        clean.partial_fit(X, y)
        assert_same_model(model, clean, "Ctrl-C, then partial_fit (momentum rolled back)")
    else:
        # Interrupted in its first epoch, the model keeps its initial weights (small random
        # ones, zero intercepts, n_iter_ 0, no loss curve) whichever minibatch was stopped:
        # it predicts, untrained, and can go on training.
        assert model.n_iter_ == 0 and model.loss_curve_ == []
        assert np.abs(model.coef_).max() < 0.1 and (model.intercept_ == 0).all()
        inject(monkeypatch, at_call=3, fault="interrupt")
        later = SoftmaxRegression(**SETTINGS)
        with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            later.fit(X, y)
        monkeypatch.undo()
        assert_same_model(model, later, "Ctrl-C at minibatch 2 vs 3 of epoch 1")
    assert_usable(model, data, f"Ctrl-C in epoch {epoch}")


def test_keyboard_interrupt_in_partial_fit_leaves_the_model_as_it_was(data, monkeypatch):
    X, y = data
    model, before = trained(data, 2), trained(data, 2)
    inject(monkeypatch, at_call=2, fault="interrupt")
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model.partial_fit(X, y)
    monkeypatch.undo()
    assert_same_model(model, before, "Ctrl-C in partial_fit")
    model.partial_fit(X, y)
    before.partial_fit(X, y)
    assert_same_model(model, before, "Ctrl-C in partial_fit, then partial_fit")


# -- refused calls ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["unseen-label", "unseen-string-label", "other-classes", "fewer-features", "nan-weight"],
)
def test_a_refused_partial_fit_changes_nothing(bad, data):
    X, y = data
    strings = np.array(["a", "b", "c"])
    labels = strings[y] if "string" in bad else y
    model = SoftmaxRegression(**SETTINGS).fit(X, labels)
    before = SoftmaxRegression(**SETTINGS).fit(X, labels)
    call = {
        "unseen-label": lambda: model.partial_fit(X, np.where(y == 2, 7, y)),
        "unseen-string-label": lambda: model.partial_fit(X, np.where(y == 2, "d", labels)),
        "other-classes": lambda: model.partial_fit(X, y, classes=[0, 1, 2, 3]),
        "fewer-features": lambda: model.partial_fit(X[:, :3], y),
        "nan-weight": lambda: model.partial_fit(X, y, sample_weight=np.full(N, np.nan)),
    }[bad]
    with pytest.raises(ValueError, match=r"classes|features|sample_weight"):
        call()
    assert_same_model(model, before, f"refused partial_fit ({bad})")
    model.partial_fit(X, labels)
    before.partial_fit(X, labels)
    assert_same_model(model, before, f"refused partial_fit ({bad}), then partial_fit")


def test_a_refused_first_partial_fit_leaves_the_model_unfitted(data):
    from sklearn.exceptions import NotFittedError

    X, y = data
    model = SoftmaxRegression(**SETTINGS)
    with pytest.raises(ValueError, match="not in classes"):
        model.partial_fit(X, np.where(y == 2, 7, y), classes=[0, 1, 2])
    with pytest.raises(NotFittedError):
        model.predict(X)


def test_a_refused_fit_keeps_the_previous_model(data):
    X, _ = data
    model, before = trained(data, 2), trained(data, 2)
    with pytest.raises(ValueError, match="one class"):
        model.fit(X[:, :3], np.zeros(N, int))
    assert_same_model(model, before, "refused fit")
    assert_array_equal(model.predict(X), before.predict(X))


# -- model files -----------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, data):
    """A model and the path of its file, and the file's arrays."""
    model = trained(data, 2)
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path) as archive:
        arrays = dict(archive)
    return model, path, arrays


def rewrite(path, arrays, **changes):
    """Save ``arrays`` with ``changes`` (None drops a key) over ``path``."""
    arrays = {**arrays, **changes}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def test_a_file_with_fewer_hyper_parameters_loads_with_the_defaults(saved, data):
    """A file written before a hyper-parameter existed still loads: it gets the default."""
    model, path, arrays = saved
    params = json.loads(str(arrays["params"]))
    del params["warm_start"], params["verbose"]
    rewrite(path, arrays, params=json.dumps(params))
    loaded = SoftmaxRegression.load(path)
    assert loaded.warm_start is False and loaded.verbose == 0
    assert_array_equal(loaded.predict_proba(data[0]), model.predict_proba(data[0]))


@pytest.mark.parametrize("version", [2, 0, None])
def test_a_file_of_another_format_version_is_refused_by_name(version, saved):
    _, path, arrays = saved
    rewrite(path, arrays, format_version=version)
    with pytest.raises(ValueError, match=f"format {version!r}") as info:
        SoftmaxRegression.load(path)
    assert str(path) in str(info.value) and "reads format 1" in str(info.value)


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.npz"):
        SoftmaxRegression.load(tmp_path / "nowhere.npz")


def damage(path, arrays, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "corrupted":  # one byte of the stored coefficients flipped
        offset = raw.index(arrays["coef"].tobytes())
        path.write_bytes(raw[:offset] + bytes([raw[offset] ^ 0xFF]) + raw[offset + 1 :])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("not a model\n")
    elif how == "npy-not-npz":
        with open(path, "wb") as f:
            np.save(f, arrays["coef"])
    elif how.startswith("missing-"):
        rewrite(path, arrays, **{how.removeprefix("missing-"): None})
    elif how == "params-not-json":
        rewrite(path, arrays, params="{'learning_rate': 'auto'")
    elif how == "params-unknown-name":
        params = json.loads(str(arrays["params"]))
        rewrite(path, arrays, params=json.dumps({**params, "new_option": 1}))
    elif how == "coef-wrong-shape":
        rewrite(path, arrays, coef=np.zeros((K + 2, D + 1), np.float32))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "corrupted",
        "empty",
        "text",
        "npy-not-npz",
        "missing-coef",
        "missing-params",
        "params-not-json",
        "params-unknown-name",
        "coef-wrong-shape",
    ],
)
def test_a_damaged_file_is_refused_with_a_clear_message(how, saved):
    """ValueError naming the file: never a half-loaded model or an error from deep inside."""
    _, path, arrays = saved
    damage(path, arrays, how)
    with pytest.raises(ValueError) as info:
        SoftmaxRegression.load(path)
    assert str(path) in str(info.value), f"the path is not named in: {info.value}"
