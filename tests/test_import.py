"""``import fastsoftmax`` stays cheap: Numba is imported only when its backend is first used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_import_does_not_import_torch():
    # fastsoftmax.torch is imported only by name (import fastsoftmax.torch); the kernels and
    # the classifier never import PyTorch.
    run_python(
        "import sys, numpy as np, fastsoftmax\n"
        "fastsoftmax.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), backend='numpy')\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )


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
        assert 'pip install "dask[array,dataframe,distributed]"' in line, line


PACKAGE = ROOT / "fastsoftmax"
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
    if path.name not in ("__main__.py", "conftest.py")  # conftest: pytest's, not the package's
)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, at module level or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from fastsoftmax import _api" imports a module; "from fastsoftmax import warmup"
            # imports a name of the package's __init__.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if n in modules else node.module for n in names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (its parent packages left out: Python runs a
    package's __init__ before any of its submodules anyway)."""
    modules = set(MODULES)
    graph = {}
    for name in MODULES:
        path = ROOT / Path(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        parents = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        graph[name] = imported_modules(path, modules) - parents - {name}
    return graph


# The layers of ARCHITECTURE.md, bottom up (names relative to the package).
LAYERS = (
    ("_validation", "backends", "backends.*", "datasets"),
    ("_config",),
    ("_api", "_linear"),
    ("_registry", "_data"),
    ("_sgd", "_lbfgs", "_dask", "_warmup"),
    ("classifier",),
    ("benchmark", "benchmark.*", "train", "predict", "torch"),
    ("", "cli"),  # "": the package's __init__
)


def layer_of(module: str) -> int:
    relative = module.removeprefix("fastsoftmax").removeprefix(".")
    for index, names in enumerate(LAYERS):
        for name in names:
            if relative == name or (name.endswith(".*") and relative.startswith(name[:-1])):
                return index
    raise AssertionError(f"{module} has no layer: add it to LAYERS and to ARCHITECTURE.md")


def test_modules_import_only_from_lower_layers():
    """The rule of ARCHITECTURE.md; the benchmark package's modules may import each other."""
    wrong = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) >= layer_of(module)
        and not (module.startswith("fastsoftmax.benchmark") and "benchmark" in target)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_the_package_modules():
    """Every ``import`` of the package's own modules, lazy ones included, forms no cycle."""
    graph = import_graph()

    def cycle_from(start, trail):
        for following in graph[trail[-1]]:
            if following == start:
                return [*trail, start]
            if following not in trail and following > start:  # each cycle found once
                found = cycle_from(start, [*trail, following])
                if found:
                    return found
        return None

    cycles = [c for c in (cycle_from(name, [name]) for name in MODULES) if c]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# Modules that need an optional dependency, which a test environment may lack.
NEEDS = {"fastsoftmax.torch": "torch"}


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module):
    if module in NEEDS:
        pytest.importorskip(NEEDS[module])
    run_python(f"import {module}")
