"""``fastsoftmax.torch.cross_entropy`` against ``torch.nn.functional.cross_entropy``.

Times, on float32 CPU tensors with 2 threads (``torch.set_num_threads(2)``; the kernels use
all available threads by default, i.e. 2 on the development machine):

1. forward + backward of the loss on logits of several shapes (``x.grad`` reset each time),
   as a user gets it (inputs below ``fastsoftmax.torch.MIN_ELEMENTS`` elements go to PyTorch)
   and with every shape on the kernels (``MIN_ELEMENTS = 0``): where the two cross is where
   ``MIN_ELEMENTS`` belongs;
2. the autograd wrapper's own overhead on a tiny batch, on the kernels:
   ``fastsoftmax.torch.cross_entropy`` forward + backward against
   ``fastsoftmax.softmax_cross_entropy`` called on the NumPy arrays directly (the same kernel,
   without PyTorch around it);
3. a full training step of ``nn.Linear(784, 10)``, batch 256, ``optim.SGD``, with each loss.

Each figure is the median of interleaved repeats (the implementations take turns, so a noisy
neighbour slows both alike), after one untimed warm-up call each. Run::

    PYTHONPATH=. python benchmarks/torch_dropin.py [--repeats 21] [--backend auto]

On a machine shared with other work, OpenMP's default busy waiting (two runtimes here:
PyTorch's and the Cython backend's, each spinning after its parallel regions) makes the small
cases meaningless; ``OMP_WAIT_POLICY=PASSIVE`` gives steadier figures.

Not a test: pytest imports this module only for its (absent) doctests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

SHAPES = (
    (4096, 1000),
    (65536, 128),
    (512, 32000),
    (1_000_000, 10),
    (64, 10),
    (256, 10),
    (1024, 10),
    (4096, 10),
    (256, 100),
    (1024, 100),
    (256, 1000),
)


def interleaved(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in turns."""
    for function in functions.values():
        function()  # warm-up: compilation, caches, first-touch allocation
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def forward_backward(loss_function, x, y):
    def run():
        x.grad = None
        loss_function(x, y).backward()

    return run


def on_kernels(loss_function):
    """``loss_function`` with every input on the kernels (``fst.MIN_ELEMENTS = 0``)."""
    import fastsoftmax.torch as fst

    def call(*args):
        default, fst.MIN_ELEMENTS = fst.MIN_ELEMENTS, 0
        try:
            return loss_function(*args)
        finally:
            fst.MIN_ELEMENTS = default

    return call


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="auto", help="fastsoftmax backend (default auto)")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    import fastsoftmax
    import fastsoftmax.torch as fst

    torch.set_num_threads(args.threads)
    fastsoftmax.set_backend(args.backend)
    backend = fastsoftmax.resolve_backend()
    generator = torch.Generator().manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; fastsoftmax backend "
        f"{backend}; median of {args.repeats} interleaved repeats; float32; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
    )

    print(f"\n1. forward + backward (ms); MIN_ELEMENTS = {fst.MIN_ELEMENTS}")
    print(
        "| shape | F.cross_entropy | fastsoftmax.torch | speed-up | on the kernels | speed-up |\n"
        "|---|---|---|---|---|---|"
    )
    for n, k in SHAPES:
        x = torch.randn(n, k, generator=generator).requires_grad_()
        y = torch.randint(0, k, (n,), generator=generator)
        repeats = args.repeats if n * k < 50_000_000 else max(5, args.repeats // 2)
        with fastsoftmax.use_backend(backend):
            result = interleaved(
                {
                    "torch": forward_backward(F.cross_entropy, x, y),
                    "fastsoftmax": forward_backward(fst.cross_entropy, x, y),
                    "kernels": forward_backward(on_kernels(fst.cross_entropy), x, y),
                },
                repeats,
            )
        print(
            f"| ({n}, {k}) | {1e3 * result['torch']:.3f} | {1e3 * result['fastsoftmax']:.3f} "
            f"| {result['torch'] / result['fastsoftmax']:.2f}x | {1e3 * result['kernels']:.3f} "
            f"| {result['torch'] / result['kernels']:.2f}x |"
        )
        del x, y

    print("\n2. overhead on (64, 10), on the kernels, microseconds per forward + backward")
    x = torch.randn(64, 10, generator=generator).requires_grad_()
    y = torch.randint(0, 10, (64,), generator=generator)
    x_np, y_np = x.detach().numpy(), y.numpy()

    def kernel_only():
        fastsoftmax.softmax_cross_entropy(x_np, y_np)

    def forward_only(loss_function):
        def run():
            loss_function(x, y)

        return run

    result = interleaved(
        {
            "kernel on NumPy (fastsoftmax.softmax_cross_entropy)": kernel_only,
            "fastsoftmax.torch.cross_entropy": forward_backward(
                on_kernels(fst.cross_entropy), x, y
            ),
            "fastsoftmax.torch.cross_entropy, forward only": forward_only(
                on_kernels(fst.cross_entropy)
            ),
            "F.cross_entropy": forward_backward(F.cross_entropy, x, y),
            "F.cross_entropy, forward only": forward_only(F.cross_entropy),
        },
        max(args.repeats, 201),
    )
    print("| call | us |\n|---|---|")
    for name, seconds in result.items():
        print(f"| {name} | {1e6 * seconds:.1f} |")
    wrapper = result["fastsoftmax.torch.cross_entropy"]
    wrapper -= result["kernel on NumPy (fastsoftmax.softmax_cross_entropy)"]
    print(f"| wrapper overhead (autograd Function, checks, backward) | {1e6 * wrapper:.1f} |")

    print("\n3. training step: nn.Linear(784, 10), batch 256, SGD (ms)")
    X = torch.randn(256, 784, generator=generator)
    Y = torch.randint(0, 10, (256,), generator=generator)

    def training_step(loss_function):
        model = torch.nn.Linear(784, 10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

        def step():
            optimizer.zero_grad()
            loss_function(model(X), Y).backward()
            optimizer.step()

        return step

    losses = {
        "F.cross_entropy": F.cross_entropy,
        "fastsoftmax.torch.cross_entropy": fst.cross_entropy,
        "fastsoftmax.torch.cross_entropy on the kernels": on_kernels(fst.cross_entropy),
    }
    result = interleaved(
        {name: training_step(loss) for name, loss in losses.items()}, max(args.repeats, 201)
    )
    print("| loss | ms per step |\n|---|---|")
    for name, seconds in result.items():
        print(f"| {name} | {1e3 * seconds:.3f} |")


if __name__ == "__main__":
    main()
