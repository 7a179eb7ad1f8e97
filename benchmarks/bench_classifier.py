"""asv suite: SoftmaxRegression accuracy (tracked) and one Fashion-MNIST epoch (timed).

The accuracy uses scikit-learn's bundled digits, so it runs offline everywhere; the epoch runs
only where Fashion-MNIST is found (where the package finds it, or the developers' copy in
``../shared/data``: :mod:`shared_data`) and is skipped elsewhere; it never downloads.
"""

from __future__ import annotations

from fastsoftmax import backends
from fastsoftmax import benchmark as fb

from . import common, shared_data

BACKENDS = tuple(backends.available_backends())


class ClassifierAccuracy:
    params = (BACKENDS,)
    param_names = ("backend",)
    timeout = 300

    def setup(self, backend):
        from fastsoftmax.datasets import load_digits

        self.data = load_digits()

    def track_digits_accuracy(self, backend):
        """Test accuracy of a default fit (seeded): a drop flags a numerical regression."""
        from fastsoftmax.classifier import SoftmaxRegression

        X_train, y_train, X_test, y_test = self.data
        model = SoftmaxRegression(random_state=0, backend=backend).fit(X_train, y_train)
        return model.score(X_test, y_test)

    track_digits_accuracy.unit = "accuracy"


class ClassifierEpoch:
    params = (BACKENDS, common.THREADS)
    param_names = ("backend", "threads")
    timeout = 600
    # One epoch takes seconds: three single-call samples, no warm-up beyond setup's call.
    number = 1
    repeat = (2, 3, 30.0)
    warmup_time = 0

    def setup(self, backend, threads):
        if shared_data.expose_fashion_mnist() is None:
            raise NotImplementedError(
                "Fashion-MNIST not found (fastsoftmax.datasets.fetch_fashion_mnist() gets it)"
            )
        self.run = fb.make_runner(fb.EPOCH, backend, (), "float32", "alloc", threads)
        if self.run is None or (threads > 1 and not backends.BACKENDS[backend].threaded):
            raise NotImplementedError(f"{backend} with {threads} threads is not timed")
        self.run()  # compile (Numba) outside the timing

    def time_epoch(self, backend, threads):
        self.run()
