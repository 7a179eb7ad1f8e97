"""Doctest collection in the package: ``fastsoftmax/torch.py`` needs PyTorch, an optional
dependency, to be imported at all; without it its doctests are not collected (as
``tests/test_torch.py`` skips itself)."""

from __future__ import annotations

import importlib.util

collect_ignore = [] if importlib.util.find_spec("torch") else ["torch.py"]
