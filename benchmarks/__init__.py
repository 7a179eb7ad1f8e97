"""Benchmark suites of fastsoftmax: asv (bench_*.py) and pytest-benchmark (test_*.py).

Both take their implementations, inputs and runners from :mod:`fastsoftmax.benchmark` (one
registry, one input cache) and their grid from :mod:`benchmarks.common`.
"""
