"""Shared fixtures: a fresh plugin manager and registry per test, seeded random generators."""

import numpy as np
import pytest

from cnnrun.engine import LayerRegistry, make_plugin_manager


@pytest.fixture
def plugin_manager():
    """A fresh plugin manager with the built-in plugins only (no installed entry points)."""
    return make_plugin_manager(load_entrypoints=False)


@pytest.fixture
def registry(plugin_manager):
    """The layer registry of :func:`plugin_manager`."""
    return LayerRegistry.from_plugin_manager(plugin_manager)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
