"""``fastsoftmax.torch``: the PyTorch drop-in, with PyTorch itself as the oracle."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastsoftmax  # noqa: E402
import fastsoftmax.torch as fst  # noqa: E402
from fastsoftmax import _api  # noqa: E402

FUSED = "_CrossEntropyBackward"  # the grad_fn of a fused call; a fallback has PyTorch's own


@pytest.fixture(autouse=True)
def kernels_at_every_size(monkeypatch):
    """The tests' small inputs run on the kernels (by default PyTorch computes them itself)."""
    monkeypatch.setattr(fst, "MIN_ELEMENTS", 0)


def tensors_close(actual, expected, dtype=torch.float64):
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance, equal_nan=True)


def loss_and_grad(function, logits, target, **kwargs):
    """The loss and, for a random incoming gradient, the gradient with respect to ``logits``."""
    x = logits.detach().clone().requires_grad_()
    loss = function(x, target, **kwargs)
    incoming = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    (grad,) = torch.autograd.grad(loss, x, incoming)
    return loss, grad


def problem(shape, soft, dtype=torch.float64, seed=0):
    """Logits of ``shape`` (N, C, d...) and a target: labels with ignored ones, or probabilities."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, dtype=dtype, generator=generator) * 3
    n_classes = shape[1]
    if soft:
        target = torch.rand(shape, dtype=dtype, generator=generator)
        return logits, target / target.sum(1, keepdim=True)
    labels = torch.randint(0, n_classes, shape[:1] + shape[2:], generator=generator)
    labels.view(-1)[::3] = -100
    return logits, labels


# -- semantics: PyTorch is the oracle ------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2)], ids=["NC", "NCd"])
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "probabilities"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(backend, shape, soft, weighted, label_smoothing, reduction):
    logits, target = problem(shape, soft)
    weight = torch.tensor([0.5, 2.0, 1.0, 0.25], dtype=logits.dtype) if weighted else None
    kwargs = {"weight": weight, "reduction": reduction, "label_smoothing": label_smoothing}
    with fastsoftmax.use_backend(backend):
        loss, grad = loss_and_grad(fst.cross_entropy, logits, target, **kwargs)
        assert fst.cross_entropy(logits.requires_grad_(), target, **kwargs).grad_fn.name() == FUSED
    expected_loss, expected_grad = loss_and_grad(F.cross_entropy, logits, target, **kwargs)
    assert loss.shape == expected_loss.shape and loss.dtype == expected_loss.dtype
    tensors_close(loss, expected_loss)
    tensors_close(grad, expected_grad)


@pytest.mark.parametrize("soft", [False, True], ids=["labels", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_float32(backend, soft, reduction):
    logits, target = problem((16, 5), soft, torch.float32)
    with fastsoftmax.use_backend(backend):
        loss, grad = loss_and_grad(fst.cross_entropy, logits, target, reduction=reduction)
    expected_loss, expected_grad = loss_and_grad(
        F.cross_entropy, logits, target, reduction=reduction
    )
    assert loss.dtype == grad.dtype == torch.float32
    tensors_close(loss, expected_loss, torch.float32)
    tensors_close(grad, expected_grad, torch.float32)


@pytest.mark.parametrize(
    "case",
    [
        {"ignore_index": 2},  # an index inside [0, C)
        {"ignore_index": 1, "label_smoothing": 0.2, "weight": [1.0, 0.0, 3.0]},
        {"ignore_index": 1, "weight": [1.0, 0.5, 3.0]},
        {"label_smoothing": 1.0},
        {"target_dtype": torch.uint8},  # PyTorch accepts Byte labels too
    ],
)
def test_cross_entropy_edge_cases_match_torch(case):
    case = dict(case)
    target_dtype = case.pop("target_dtype", torch.int64)
    if "weight" in case:
        case["weight"] = torch.tensor(case["weight"], dtype=torch.float64)
    logits = torch.randn(7, 3, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 2, 1, 0, 2], dtype=target_dtype)
    loss, grad = loss_and_grad(fst.cross_entropy, logits, target, **case)
    expected_loss, expected_grad = loss_and_grad(F.cross_entropy, logits, target, **case)
    tensors_close(loss, expected_loss)
    tensors_close(grad, expected_grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "probabilities"])
def test_one_row_input(soft, reduction):
    logits = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    target = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64) if soft else torch.tensor(2)
    loss, grad = loss_and_grad(fst.cross_entropy, logits, target, reduction=reduction)
    expected_loss, expected_grad = loss_and_grad(
        F.cross_entropy, logits, target, reduction=reduction
    )
    assert loss.shape == expected_loss.shape == ()
    tensors_close(loss, expected_loss)
    tensors_close(grad, expected_grad)


def test_unnormalised_and_empty_inputs_match_torch():
    logits = torch.randn(4, 3, dtype=torch.float64)
    soft = torch.rand(4, 3, dtype=torch.float64) * 5  # rows need not sum to one
    for args in [(logits, soft), (logits[:0], soft[:0]), (logits[:0], torch.zeros(0).long())]:
        tensors_close(fst.cross_entropy(*args), F.cross_entropy(*args))
    everything_ignored = torch.full((4,), -100)
    tensors_close(
        fst.cross_entropy(logits, everything_ignored), F.cross_entropy(logits, everything_ignored)
    )


# -- zero copy ---------------------------------------------------------------------------------


def test_logits_and_gradient_are_not_copied(monkeypatch):
    seen = {}
    kernel = _api.softmax_cross_entropy

    def recording(logits, target, **kwargs):
        loss, grad = kernel(logits, target, **kwargs)
        seen.update(logits=logits.ctypes.data, grad=grad.ctypes.data)
        return loss, grad

    monkeypatch.setattr(_api, "softmax_cross_entropy", recording)
    x = torch.randn(64, 10, requires_grad=True)
    loss = fst.cross_entropy(x, torch.randint(0, 10, (64,)))
    assert seen["logits"] == x.data_ptr()  # the kernel read the tensor's own memory
    (saved,) = loss.grad_fn.saved_tensors
    assert saved.data_ptr() == seen["grad"]  # the kernel's gradient, saved as it is
    del saved  # (a reference held here would make autograd copy it into x.grad)
    loss.backward()
    assert x.grad.data_ptr() == seen["grad"]  # ... and handed to x.grad unscaled, uncopied


def test_softmax_output_is_the_kernels_array(monkeypatch):
    seen = {}
    kernel = _api.softmax

    def recording(x, axis):
        seen["x"] = x.ctypes.data
        out = kernel(x, axis)
        seen["out"] = out.ctypes.data
        return out

    monkeypatch.setattr(_api, "softmax", recording)
    x = torch.randn(8, 5)
    y = fst.softmax(x, dim=1)
    assert (seen["x"], seen["out"]) == (x.data_ptr(), y.data_ptr())


def test_channels_last_logits_are_not_copied(monkeypatch):
    seen = {}
    kernel = _api.softmax_cross_entropy

    def recording(logits, target, **kwargs):
        seen["logits"] = logits.ctypes.data
        return kernel(logits, target, **kwargs)

    monkeypatch.setattr(_api, "softmax_cross_entropy", recording)
    x = torch.randn(2, 3, 5, 4).movedim(-1, 1)  # (N, C, d1, d2) with the class dim innermost
    target = torch.randint(0, 4, (2, 3, 5))
    tensors_close(fst.cross_entropy(x, target), F.cross_entropy(x, target), torch.float32)
    assert seen["logits"] == x.data_ptr()


# -- fallbacks ---------------------------------------------------------------------------------


def fallback_cases():
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 1, 0])
    return {
        "float16": ((x.half(), y), {}),
        "bfloat16": ((x.bfloat16(), y), {}),
        "soft target needs grad": ((x, torch.rand(5, 3).requires_grad_()), {}),
        "soft target of another dtype": ((x, torch.rand(5, 3, dtype=torch.float64)), {}),
        "weight needs grad": ((x, torch.rand(5, 3)), {"weight": torch.ones(3, requires_grad=True)}),
        "negative class weight": ((x, y), {"weight": torch.tensor([-1.0, 1.0, 2.0])}),
        "negative probabilities": ((x, torch.randn(5, 3)), {}),
        "legacy size_average": ((x, y), {"size_average": False}),
        "weighted smoothed mean of nothing": (
            (x, torch.full((5,), -100)),
            {"weight": torch.ones(3), "label_smoothing": 0.1},
        ),
    }


@pytest.mark.parametrize("name", list(fallback_cases()))
def test_unsupported_cases_go_to_torch(name):
    args, kwargs = fallback_cases()[name]
    args = (args[0].detach().requires_grad_(), *args[1:])
    with pytest.warns(UserWarning) if "size_average" in kwargs else _nothing():
        loss = fst.cross_entropy(*args, **kwargs)
    assert loss.grad_fn.name() != FUSED
    with pytest.warns(UserWarning) if "size_average" in kwargs else _nothing():
        expected = F.cross_entropy(*args, **kwargs)
    torch.testing.assert_close(loss, expected, equal_nan=True)


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_meta_tensors_go_to_torch():
    x = torch.empty(5, 3, device="meta")
    loss = fst.cross_entropy(x, torch.empty(5, dtype=torch.long, device="meta"))
    assert loss.device.type == "meta" and loss.shape == ()
    assert fst.softmax(x, 1).device.type == "meta"
    assert fst.log_softmax(x, 0).device.type == "meta"


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((torch.randn(3, 4), torch.tensor([0, 4, 1])), {}),  # label out of range
        ((torch.randn(3, 4), torch.tensor([0, 1, 1], dtype=torch.int32)), {}),  # Int labels
        ((torch.randn(3, 4), torch.tensor([0, 1, 1])), {"reduction": "avg"}),
        ((torch.randn(3, 4), torch.tensor([0, 1, 1])), {"label_smoothing": 1.5}),
        ((torch.randn(3, 4), torch.tensor([0, 1])), {}),  # wrong target shape
        ((torch.randn(3, 4), torch.tensor([0, 1, 1])), {"weight": torch.ones(3)}),
        ((torch.randn(3, 4), torch.tensor([0, 1, 1])), {"weight": torch.ones(4).requires_grad_()}),
    ],
    ids=["label", "int32", "reduction", "smoothing", "shape", "weight", "weight-grad"],
)
def test_bad_input_raises_what_torch_raises(args, kwargs):
    with pytest.raises(Exception) as expected:
        F.cross_entropy(*args, **kwargs)
    with pytest.raises(expected.type) as raised:
        fst.cross_entropy(*args, **kwargs)
    assert str(raised.value) == str(expected.value)


def test_softmax_fallbacks():
    x = torch.randn(3, 4)
    with pytest.raises(IndexError):
        fst.softmax(x, dim=2)  # PyTorch's own error
    assert fst.softmax(torch.tensor(2.0), 0) == 1
    assert fst.log_softmax(x.half(), 1).dtype == torch.float16
    y = fst.softmax(x, dim=1, dtype=torch.float64)  # cast first, then the kernel
    assert y.dtype == torch.float64
    tensors_close(y, torch.softmax(x.double(), 1))


# -- softmax, log_softmax ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_torch(backend, name, dim):
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    with fastsoftmax.use_backend(backend):
        y, grad = loss_and_grad(lambda t, d: getattr(fst, name)(t, d), x, dim)
    expected, expected_grad = loss_and_grad(getattr(torch, name), x, dim)
    tensors_close(y, expected)
    tensors_close(grad, expected_grad)


def test_softmax_backward_through_a_sum():
    # loss.sum().backward() sends an expanded (stride 0) gradient back
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    fst.log_softmax(x, 1).sum().backward()
    expected = torch.zeros_like(x, requires_grad=True)
    expected.data.copy_(x.data)
    torch.log_softmax(expected, 1).sum().backward()
    tensors_close(x.grad, expected.grad)


# -- autograd: gradcheck, double backward, no_grad -----------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"reduction": "none"},
        {"reduction": "sum", "label_smoothing": 0.1},
        {"weight": torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64), "label_smoothing": 0.1},
    ],
    ids=["mean", "none", "sum-smoothing", "weight-smoothing"],
)
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "probabilities"])
def test_cross_entropy_gradcheck(soft, kwargs):
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    target = torch.rand(4, 3, 2, dtype=torch.float64) if soft else torch.tensor([[0, 2]] * 4)
    assert torch.autograd.gradcheck(lambda t: fst.cross_entropy(t, target, **kwargs), (x,))


@pytest.mark.parametrize("function", [fst.softmax, fst.log_softmax])
def test_softmax_gradcheck(function):
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: function(t, 0), (x,))


@pytest.mark.parametrize("name", ["cross_entropy", "softmax", "log_softmax"])
def test_create_graph_raises(name):
    """A second derivative would silently be zero (the saved gradient is a constant to
    autograd, e.g. in torch.autograd.functional.hessian): create_graph=True raises instead."""
    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    call = {
        "cross_entropy": lambda: fst.cross_entropy(x, torch.tensor([0, 1, 2])),
        "softmax": lambda: fst.softmax(x, 1).pow(2).sum(),
        "log_softmax": lambda: fst.log_softmax(x, 1).pow(2).sum(),
    }[name]
    with pytest.raises(RuntimeError, match=f"fastsoftmax.torch.{name} is once differentiable"):
        torch.autograd.grad(call(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once differentiable"):
        torch.autograd.functional.hessian(lambda t: fst.cross_entropy(t, torch.tensor([0])), x[:1])


def test_no_grad_and_inputs_without_grad():
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 1, 0])
    expected = F.cross_entropy(x, y)
    plain = fst.cross_entropy(x, y)
    assert plain.grad_fn is None and not plain.requires_grad
    with torch.no_grad():
        x.requires_grad_()
        quiet = fst.cross_entropy(x, y, reduction="none")
        soft = fst.softmax(x, 1)
    assert quiet.grad_fn is None and soft.grad_fn is None
    tensors_close(plain, expected, torch.float32)
    tensors_close(quiet, F.cross_entropy(x, y, reduction="none"), torch.float32)


def test_repeated_backward_and_shared_logits():
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = fst.cross_entropy(x, y) + 2 * fst.cross_entropy(x, y, reduction="sum")
    loss.backward(retain_graph=True)
    loss.backward()  # the saved gradient is unchanged by the first backward
    reference = x.detach().clone().requires_grad_()
    (F.cross_entropy(reference, y) + 2 * F.cross_entropy(reference, y, reduction="sum")).backward()
    tensors_close(x.grad, 2 * reference.grad)


# -- the module class ----------------------------------------------------------------------------


def test_cross_entropy_loss_module():
    weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    ours = fst.CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=0.05)
    theirs = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=0.05)
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    loss, grad = loss_and_grad(lambda a, b: ours(a, b), x, y)
    expected_loss, expected_grad = loss_and_grad(lambda a, b: theirs(a, b), x, y)
    tensors_close(loss, expected_loss)
    tensors_close(grad, expected_grad)
    with pytest.warns(UserWarning):
        assert fst.CrossEntropyLoss(reduce=False).reduction == "none"


# -- training ------------------------------------------------------------------------------------


def train(loss_function, steps=100):
    torch.manual_seed(0)
    model = torch.nn.Linear(20, 5).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(64, 20, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 5, (64,), generator=generator)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_function(model(X), y).backward()
        optimizer.step()
    return model


def test_training_follows_torch():
    """100 SGD steps reach the same weights within 1e-12.

    Both losses have the same gradient in exact arithmetic; each step differs by rounding
    (a few ulp of the gradient, ~1e-17 here). A gradient step of a convex, L-smooth loss with
    lr <= 2 / L does not expand distances (here L <= 0.5 * max eigenvalue of X^T X / n, about
    1.5, and lr = 0.1), so the differences add up at most linearly: 100 steps * lr * 1e-16 is
    far below 1e-12, the bound asserted (measured: 1.1e-16 on weights of size 0.8).
    """
    ours = train(fst.cross_entropy)
    theirs = train(F.cross_entropy)
    for mine, reference in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-12)
    assert not torch.equal(ours.weight, train(F.cross_entropy, steps=99).weight)  # it did train


# -- torch.compile -------------------------------------------------------------------------------

COMPILE_SCRIPT = textwrap.dedent(
    """
    import torch, torch.nn.functional as F, fastsoftmax.torch as fst
    fst.MIN_ELEMENTS = 0  # this small input on the kernels too
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    step = torch.compile(lambda: fst.cross_entropy(model(x), y))
    loss = step()
    loss.backward()
    grad = model.weight.grad.clone()
    model.weight.grad = None
    expected = F.cross_entropy(model(x), y)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, model.weight.grad, rtol=0, atol=1e-12)
    print(loss.grad_fn.name())
    """
)


def test_torch_compile_runs_the_kernel_eagerly():
    """A compiled model calling ``cross_entropy`` works: Dynamo breaks the graph at the call.

    In a fresh process (compiling leaves global state); skipped after 60 s (a cold Inductor
    compile on a busy machine) or without a working ``torch.compile``.
    """
    env = dict(os.environ, PYTHONPATH=str(Path(fastsoftmax.__file__).resolve().parents[1]))
    try:
        result = subprocess.run(
            [sys.executable, "-c", COMPILE_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("torch.compile took more than 60 s here")
    if result.returncode and "torch._dynamo" in result.stderr and "Unsupported" in result.stderr:
        pytest.fail(result.stderr[-2000:])
    if result.returncode and (
        "InductorError" in result.stderr or "CppCompileError" in result.stderr
    ):
        pytest.skip("torch.compile cannot build here: " + result.stderr[-300:])
    assert result.returncode == 0, result.stderr[-2000:]
    # the loss comes from the fused kernel, run eagerly between compiled graphs
    assert result.stdout.split()[-1] == FUSED, result.stdout


@pytest.mark.parametrize("name", ["cross_entropy", "softmax", "log_softmax"])
def test_small_inputs_go_to_torch(monkeypatch, name):
    monkeypatch.setattr(fst, "MIN_ELEMENTS", 12)
    monkeypatch.setattr(fst, "MIN_ROWS", 5)
    function = getattr(fst, name)
    labels = {3: torch.tensor([0, 1, 2]), 4: torch.tensor([0, 1, 2, 0]), 5: torch.zeros(5).long()}
    for rows, classes, kernels in [(3, 3, False), (4, 3, True), (5, 2, True), (4, 2, False)]:
        x = torch.randn(rows, classes, requires_grad=True)
        second = labels[rows] % classes if name == "cross_entropy" else 1
        fused = "Backward0" not in function(x, second).grad_fn.name()  # not PyTorch's own
        assert fused == kernels, (rows, classes)
