"""`fastsoftmax bench` and `fastsoftmax.benchmark.bench` on tiny shapes: a table and valid JSON."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastsoftmax import _registry, backends, benchmark
from fastsoftmax.benchmark import peers
from fastsoftmax.cli import main

TINY = {"rounds": 1, "min_time": 0.0005, "ceiling_mib": 4, "verbose": False}


def test_bench_has_a_row_per_implementation_and_mode():
    report = benchmark.bench(
        ["softmax", "logsumexp", "sgd_update"], [(16, 5), (40,)], ["float32"],
        implementations=["numpy"], **TINY,
    )  # fmt: skip
    rows = {(r["kernel"], tuple(r["shape"]), r["mode"]) for r in report.results}
    assert rows == {
        ("softmax", (16, 5), "alloc"),
        ("softmax", (16, 5), "out"),
        ("logsumexp", (16, 5), "alloc"),  # no out= in the public logsumexp
        ("sgd_update", (40,), "out"),  # 1-D sizes go to sgd_update only
    }
    for row in report.results:
        assert row["median_s"] > 0 and row["gbps"] > 0 and row["speedup_vs_numpy"] == 1.0
    table = report.table()
    assert "softmax | float32 | 16x5" in table and "sgd_update | float32 | 40 " in table
    assert "memory ceiling" in str(report)


def test_cli_prints_the_table_and_writes_valid_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["bench", "--kernels", "log_softmax,softmax_cross_entropy", "--shapes", "8x3",
            "--dtype", "float64", "--impls", "numpy", "--rounds", "2", "--min-time", "0.0005",
            "--ceiling-mib", "4", "--json", str(path)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "log_softmax | float64 | 8x3" in printed
    assert "softmax_cross_entropy | float64 | 8x3" in printed
    assert "memory ceiling: np.copyto of 4 MiB" in printed
    report = json.loads(path.read_text())
    assert {"environment", "settings", "ceiling", "results"} <= set(report)
    assert report["ceiling"]["gbps"] > 0
    assert {(r["kernel"], r["mode"]) for r in report["results"]} == {
        ("log_softmax", "alloc"),
        ("log_softmax", "out"),
        ("softmax_cross_entropy", "alloc"),
        ("softmax_cross_entropy", "out"),
    }
    assert all(len(r["samples_s"]) == 2 for r in report["results"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kernels", "softmaxx"], "unknown kernels ['softmaxx']"),
        (["--impls", "nothing"], "no implementation to time"),
    ],
)
def test_cli_rejects_bad_choices_with_a_message(argv, message, capsys):
    assert main(["bench", "--shapes", "4x3", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastsoftmax bench: error: {message}") and "Traceback" not in err


def test_shapes_must_be_rows_x_columns_or_a_size():
    assert benchmark.parse_shapes("4096x1000,7850") == [(4096, 1000), (7850,)]
    with pytest.raises(ValueError, match="like 4096x1000"):
        benchmark.parse_shapes("4096xx")
    with pytest.raises(SystemExit):  # argparse reports the bad --shapes value
        main(["bench", "--shapes", "0x3"])


@pytest.mark.parametrize("kernel", ["logsumexp", "softmax", "log_softmax"])
def test_every_registered_implementation_agrees_with_numpy(kernel):
    # Peers are optional: only the installed ones are registered, and each must compute the
    # same function on the shared inputs (a wrong axis or dtype in an adapter shows here).
    table = benchmark.registry(peers=True)
    data = benchmark.case_inputs(kernel, (5, 7), "float64")[0]
    (expected,) = table[kernel]["numpy"](data, "alloc")()  # a backend returns Kernel.call's tuple
    for name, entry in table[kernel].items():
        run = entry(data, "alloc", 1)
        if run is None:  # e.g. JAX without float64 enabled
            continue
        result = run()
        got = result[0] if name in backends.BACKENDS else result
        np.testing.assert_allclose(
            np.asarray(got), expected, rtol=1e-12, atol=1e-12, err_msg=f"{kernel} by {name}"
        )


def test_missing_peers_are_reported_not_required(monkeypatch):
    monkeypatch.setattr(peers, "is_installed", lambda name: False)
    assert all(
        value.startswith("not installed (pip install") for value in peers.versions().values()
    )
    table = benchmark.registry(peers=True)
    assert set(table["softmax"]) <= set(backends.BACKENDS)


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    report = benchmark.bench(
        ["softmax"], [(16, 5), (64, 10)], ["float32"], implementations=["numpy"], **TINY
    )
    path = tmp_path / "gbps.png"
    report.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("backend", backends.available_backends())
def test_every_benched_kernel_is_registered_for_every_backend(backend):
    # The bench builds its table from fastsoftmax._registry: a registered kernel is timed on
    # every backend with no code of its own.
    table = benchmark.registry(implementations=[backend])
    assert benchmark.KERNELS == tuple(_registry.BENCHED)
    for public, kernel in _registry.BENCHED.items():
        entry = table[public].get(backend)
        assert entry is not None, f"{public} is missing for {backend}"
        assert entry.modes == kernel.modes
        assert entry.threaded == backends.BACKENDS[backend].threaded
        assert benchmark.bytes_moved(public, (4, 3), "float64") == kernel.moves((4, 3), 8)


def test_backward_kernels_are_benched_with_no_code_of_their_own():
    backward = [public for public, kernel in _registry.BENCHED.items() if kernel.vjp_of]
    assert backward, "the registry has no backward kernel"
    report = benchmark.bench(backward, [(16, 5)], ["float64"], implementations=["numpy"], **TINY)
    assert {(r["kernel"], r["mode"]) for r in report.results} == {
        (kernel, mode) for kernel in backward for mode in _registry.BENCHED[kernel].modes
    }
    assert all(r["bytes_moved"] == 3 * 16 * 5 * 8 for r in report.results)


def test_a_failing_implementation_is_reported_and_the_rest_timed(monkeypatch):
    def broken(*args, **kwargs):
        raise AttributeError("no such kernel here")

    table = benchmark.registry(implementations=["numpy"])
    table["softmax"]["broken"] = benchmark.Implementation(broken)
    monkeypatch.setattr(benchmark, "registry", lambda *args, **kwargs: table)
    report = benchmark.bench(["softmax"], [(8, 3)], ["float64"], **TINY)
    assert {r["implementation"] for r in report.results} == {"numpy"}
    assert any("broken not timed" in note and "no such kernel" in note for note in report.notes)


def test_vector_kernels_take_sizes_and_row_kernels_matrices():
    vectors = [k for k in benchmark.KERNELS if benchmark.ndim(k) == 1]
    assert vectors == [p for p, k in _registry.BENCHED.items() if k.inputs == "vectors"]
    for kernel in benchmark.KERNELS:
        data = benchmark.case_inputs(kernel, (6,) if kernel in vectors else (2, 3), "float32")[0]
        assert {a.ndim for a in data.values() if a.dtype == np.float32} == {benchmark.ndim(kernel)}


@pytest.mark.parametrize(
    "module", ["implementations", "inputs", "machine", "peers", "report", "timer"]
)
def test_each_module_imports_alone_and_shadows_no_public_function(module):
    root = Path(__file__).resolve().parents[1]  # this checkout's package, not an installed one
    code = f"import fastsoftmax.benchmark.{module} as m; print(m.__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"fastsoftmax.benchmark.{module}"
    importlib.import_module(f"fastsoftmax.benchmark.{module}")
    assert callable(benchmark.registry) and callable(benchmark.environment)


def test_interleaved_scenario_reports_each_kernel_next_to_each_neighbour(tmp_path, capsys):
    # Tiny shapes, one round, no idle gap: that it runs and what it reports, never how fast.
    report = benchmark.bench_interleaved(
        ["softmax", "sgd_update"], [(16, 5)], implementations=["numpy", "cython"],
        threads=[1, 2], neighbour_names=["gemm_small"], rounds=1, gap=0.0, verbose=False,
    )  # fmt: skip
    cases = {(r["kernel"], tuple(r["shape"]), r["implementation"], r["n_threads"])
             for r in report.results}  # fmt: skip
    threaded = [2] if "cython" in backends.available_backends() else []
    expected = {
        (kernel, shape, name, n)
        for kernel, shape in (("softmax", (16, 5)), ("sgd_update", (80,)))  # a size for SGD
        for name, threads in (("numpy", [1]), ("cython", [1, *threaded]))
        for n in threads
        if name in backends.available_backends()
    }
    assert cases == expected
    columns = {
        "neighbour", "neighbour_after_kernel_s", "neighbour_idle_s", "neighbour_after_copy_s",
        "ratio_vs_idle", "ratio_vs_copy", "kernel_interleaved_s", "kernel_alone_s", "kernel_ratio",
    }  # fmt: skip
    for row in report.results:
        assert columns <= set(row) and row["neighbour"] == "gemm_small"
        assert all(row[c] > 0 for c in columns - {"neighbour"})
    text = str(report)
    assert "softmax | float32 | 16x5   (interleaved)" in text
    assert "after kernel" in text and "x copy" in text and "OpenMP runtimes loaded" in text

    path = tmp_path / "interleaved.json"
    argv = ["bench", "--interleaved", "--kernels", "log_softmax", "--shapes", "8x3",
            "--impls", "numpy", "--neighbours", "gemm_small", "--rounds", "1",
            "--json", str(path)]  # fmt: skip
    assert main(argv) == 0
    assert "log_softmax | float32 | 8x3   (interleaved)" in capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert saved["settings"]["scenario"] == "interleaved"
    assert [r["neighbour"] for r in saved["results"]] == ["gemm_small"]
