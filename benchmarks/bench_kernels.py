"""asv suite: every kernel x implementation x dtype x shape x threads of the registry.

Run against the installed package (no environment is built)::

    asv run --python=same --set-commit-hash $(git rev-parse HEAD)
    asv publish && asv preview

asv runs every parameter combination in a fresh process, where Numba compiles again (about
1.7 s), so the grid leaves out the mode: times and GB/s use preallocated outputs where the
implementation offers them (the kernel's own cost), peak memory the allocating call (what a
call allocates). ``fastsoftmax bench`` reports both modes side by side. Combinations an
implementation cannot run (a peer not installed, two threads for a single-threaded
implementation) are skipped in ``setup``, which also makes the first call, so compilation
never enters a measurement.
"""

from __future__ import annotations

from . import common

common.preimport_peers()

TIME_MODES = ("out", "alloc")
MEMORY_MODES = ("alloc", "out")


def _setup(kernel, implementation, dtype, shape, threads, preference):
    mode = common.mode_for(kernel, implementation, preference)
    run = common.runner(kernel, implementation, dtype, shape, threads, mode) if mode else None
    if run is None:
        raise NotImplementedError(f"{implementation} does not run {kernel} with {threads} threads")
    return run


class Kernels:
    """Time per call and GB/s (input read once + output written once)."""

    params = (common.KERNELS, common.IMPLEMENTATIONS, common.DTYPES, common.SHAPES, common.THREADS)
    param_names = ("kernel", "implementation", "dtype", "shape", "threads")
    timeout = 300
    # Fewer, longer samples than asv's defaults keep a full run near ten minutes on two cores.
    repeat = (3, 7, 5.0)
    sample_time = 0.02
    warmup_time = 0.05
    processes = 1

    def setup(self, kernel, implementation, dtype, shape, threads):
        self.run = _setup(kernel, implementation, dtype, shape, threads, TIME_MODES)

    def time_kernel(self, kernel, implementation, dtype, shape, threads):
        self.run()

    def track_gbps(self, kernel, implementation, dtype, shape, threads):
        return common.gbps(self.run, kernel, shape, dtype)

    track_gbps.unit = "GB/s"


class KernelMemory:
    """Peak resident memory of a process running the allocating call, on one thread.

    asv measures the whole process: inputs, imported libraries (PyTorch) and Numba's
    compilation included. Compare it across commits, not across implementations.
    """

    params = (common.KERNELS, common.IMPLEMENTATIONS, common.DTYPES, common.SHAPES)
    param_names = ("kernel", "implementation", "dtype", "shape")
    timeout = 300

    def setup(self, kernel, implementation, dtype, shape):
        self.run = _setup(kernel, implementation, dtype, shape, 1, MEMORY_MODES)

    def peakmem_kernel(self, kernel, implementation, dtype, shape):
        self.run()
