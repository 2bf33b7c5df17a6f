"""Shared fixtures: a fresh plugin manager and registry per test, seeded random generators, the
CUDA device (Numba's simulator unless NUMBA_ENABLE_CUDASIM=0 is set: then a real GPU)."""

import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")  # before anything imports numba.cuda

import numpy as np
import pytest

from cnnrun.engine import LayerRegistry, make_plugin_manager
from cnnrun.engine.data import prepare_data
from cnnrun.engine.plugins import DataSourceRegistry, Registries


@pytest.fixture
def plugin_manager():
    """A fresh plugin manager with the built-in plugins only (no installed entry points)."""
    return make_plugin_manager(load_entrypoints=False)


@pytest.fixture
def registry(plugin_manager):
    """The layer registry of :func:`plugin_manager`."""
    return LayerRegistry.from_plugin_manager(plugin_manager)


@pytest.fixture(scope="module")
def registries():
    """Every registry of the built-in plugins (no installed entry points), one per test module."""
    return Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False))


@pytest.fixture
def sources(plugin_manager):
    """The data-source registry of :func:`plugin_manager`."""
    return DataSourceRegistry.from_plugin_manager(plugin_manager)


@pytest.fixture
def prepare(sources, tmp_path):
    """prepare_data with defaults: 10 classes, no validation split, files under tmp_path."""
    def run(config, input_shape, *, num_classes=10, validation_split=0.0, seed=0):
        return prepare_data(config, input_shape=input_shape, num_classes=num_classes,
                            validation_split=validation_split, seed=seed, registry=sources,
                            base_dir=tmp_path)
    return run


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def cuda_backend(monkeypatch):
    """The CUDA backend with small launches (32 threads per block, at most 2 blocks), so that several
    blocks and the grid-stride loops run even on tiny arrays."""
    from cnnrun.engine.plugins import get_backend

    monkeypatch.setenv("CNNRUN_CUDA_BLOCK_SIZE", "32")
    monkeypatch.setenv("CNNRUN_CUDA_MAX_BLOCKS", "2")
    return get_backend("cuda")
