"""The Cython backend's build variants (baseline, x86-64-v3, x86-64-v4; see setup.py).

The default import picks the widest variant this CPU runs, so the main suite tests only that one;
here every other runnable variant runs the agreement, cross-entropy and SGD suites in a
subprocess with ``FASTSOFTMAX_CYTHON_VARIANT`` set.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REQUIRE_ALL_BACKENDS

cython_kernels = pytest.importorskip("fastsoftmax.backends.cython_kernels")

TESTS = Path(__file__).parent
RUNNABLE = cython_kernels.runnable_variants()
ENV = cython_kernels.ENV_VARIANT


def run_python(code: str, variant: str) -> subprocess.CompletedProcess:
    env = {**os.environ, ENV: variant}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_default_is_the_widest_runnable_variant():
    if os.environ.get(ENV):
        pytest.skip(f"{ENV} is set")
    assert cython_kernels.variant == RUNNABLE[0]
    assert "baseline" in RUNNABLE


def test_build_info_names_the_variant_and_its_flags():
    info = cython_kernels.build_info()
    assert info["variant"] == cython_kernels.variant
    march = {"x86_64_v3": "-march=x86-64-v3", "x86_64_v4": "-march=x86-64-v4"}
    if info["variant"] in march:
        assert march[info["variant"]] in info["flags"].split()
    else:
        assert "-march" not in info["flags"], "the baseline build must run on any CPU"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="wide variants are x86-64 only")
def test_wide_variants_are_built_and_used_in_ci():
    if not REQUIRE_ALL_BACKENDS:
        pytest.skip("only CI (FASTSOFTMAX_REQUIRE_ALL_BACKENDS=1) requires every variant")
    level = cython_kernels._baseline.x86_64_level()
    expected = [name for name, need in cython_kernels.VARIANTS.items() if need <= level]
    assert RUNNABLE == expected


@pytest.mark.parametrize("variant", RUNNABLE)
def test_environment_variable_forces_the_variant(variant):
    code = "from fastsoftmax.backends import cython_kernels as c; print(c.build_info()['variant'])"
    result = run_python(code, variant)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == variant


@pytest.mark.parametrize("variant", [v for v in RUNNABLE if v.startswith("x86_64")])
def test_the_variable_takes_the_compilers_spelling_too(variant):
    code = "from fastsoftmax.backends import cython_kernels as c; print(c.build_info()['variant'])"
    result = run_python(code, variant.replace("_", "-"))  # x86-64-v3, as the README writes it
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == variant


@pytest.mark.parametrize("variant", ["avx9000", "x86_64_v5", "x86-64-v5"])
def test_unknown_variant_is_a_clear_error(variant):
    result = run_python("import fastsoftmax; fastsoftmax.softmax([1.0], backend='cython')", variant)
    assert result.returncode != 0
    assert f"{ENV}={variant!r}" in result.stderr and "expected one of" in result.stderr


@pytest.mark.parametrize("variant", [v for v in RUNNABLE if v != cython_kernels.variant])
def test_kernel_suites_pass_on_every_other_variant(variant):
    suites = ["test_agreement.py", "test_cross_entropy.py", "test_sgd.py"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cython"]
    command += [str(TESTS / suite) for suite in suites]
    env = {**os.environ, ENV: variant, "FASTSOFTMAX_REQUIRE_ALL_BACKENDS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, f"variant {variant}: {summary}\n{result.stdout[-3000:]}"
    assert " passed" in summary and "skipped" not in summary, summary
