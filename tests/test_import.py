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


def test_classifier_does_not_import_dask():
    run_python(
        "import sys, numpy as np, fastsoftmax\n"
        "from fastsoftmax import SoftmaxRegression\n"
        "X, y = np.random.default_rng(0).random((40, 3)), np.arange(40) % 2\n"
        "for solver in ('sgd', 'lbfgs'):\n"
        "    SoftmaxRegression(solver=solver).fit(X, y).predict_proba(X)\n"
        "assert 'dask' not in sys.modules, 'dask imported'\n"
        "assert 'fastsoftmax._dask' not in sys.modules, 'fastsoftmax._dask imported'"
    )


def test_dask_input_without_dask_says_how_to_install_it():
    # Dask hidden from the import system; a stand-in for a dask array (the classifier
    # recognises Dask collections by their type's module, without importing Dask).
    output = run_python(
        "import sys\n"
        "class HideDask:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('dask', 'distributed'):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, HideDask())\n"
        "import numpy as np\n"
        "from fastsoftmax import SoftmaxRegression\n"
        "Array = type('Array', (), {'__module__': 'dask.array.core',\n"
        "                           '__dask_graph__': lambda self: {}})\n"
        "model = SoftmaxRegression(solver='lbfgs')\n"
        "try:\n"
        "    model.fit(Array(), np.arange(4) % 2)\n"
        "except ImportError as exc:\n"
        "    print('fit:', exc)\n"
        "model.fit(np.eye(4), np.arange(4) % 2)\n"
        "try:\n"
        "    model.predict(Array())\n"
        "except ImportError as exc:\n"
        "    print('predict:', exc)\n"
    )
    lines = output.splitlines()
    assert [line.split(":")[0] for line in lines] == ["fit", "predict"], output
    for line in lines:
        assert "Dask cannot be imported" in line, line
        assert 'pip install "fastsoftmax[dask]"' in line, line
