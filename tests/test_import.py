"""``import fastsoftmax`` stays cheap: Numba is imported only when its backend is first used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fastsoftmax

ROOT = Path(fastsoftmax.__file__).resolve().parents[1]


def run_python(code: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "FASTSOFTMAX_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_does_not_import_numba():
    run_python("import sys, fastsoftmax; assert 'numba' not in sys.modules, 'numba imported'")


def test_numpy_backend_call_does_not_import_numba():
    run_python(
        "import sys, numpy as np, fastsoftmax\n"
        "fastsoftmax.softmax(np.zeros(3), backend='numpy')\n"
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
