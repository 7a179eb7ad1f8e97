"""Lets the pytest-benchmark suite run as plain tests when pytest-benchmark is absent.

Without the plugin (not installed, or ``-p no:benchmark``) a stand-in ``benchmark`` fixture
calls each function once, like ``--benchmark-disable``.
"""

from __future__ import annotations

import pytest


class _RunOnce:
    """The part of pytest-benchmark's fixture the suite uses: call the function once."""

    def __init__(self):
        self.group = None
        self.extra_info = {}
        self.stats = None

    def __call__(self, function, *args, **kwargs):
        return function(*args, **kwargs)


class _StandIn:
    @pytest.fixture
    def benchmark(self):
        return _RunOnce()


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("benchmark"):
        config.pluginmanager.register(_StandIn(), "fastsoftmax-benchmark-stand-in")
