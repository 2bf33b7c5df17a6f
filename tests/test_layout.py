"""The source layout: small modules, every package installed, each layer family's kernels in its own
package (``plugins/<family>/cpu.py``, ``cuda.py``)."""

import importlib
from pathlib import Path

from cnnrun.engine import make_plugin_manager
from cnnrun.engine.plugins import DEFAULT_PLUGINS, Registries

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("engine", "plugins", "cli")
MAX_LINES = 500


def test_no_source_file_is_over_500_lines():
    long = {str(path.relative_to(ROOT)): n for folder in SOURCES for path in (ROOT / folder).rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_package_is_installed():
    """setup.py finds every package under engine/, plugins/ and cli/ (as cnnrun.<package>)."""
    for folder in SOURCES:
        for init in (ROOT / folder).rglob("__init__.py"):
            name = ".".join(("cnnrun", *init.parent.relative_to(ROOT).parts))
            assert importlib.import_module(name).__file__ == str(init)


def test_each_family_keeps_its_kernels_in_its_own_package():
    """A built-in plugin registers, per device, the module of that device in its own package."""
    devices = Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False)).devices
    registered = [(device, module, plugin) for device, modules in devices.kernel_modules.items()
                  for module, plugin in modules]
    assert {device for device, _, _ in registered} == {"cpu", "cuda"}
    for device, module, plugin in registered:
        assert plugin in DEFAULT_PLUGINS
        if plugin != "cnnrun.plugins.devices":  # the engine's own kernels (the losses)
            assert module == f"{plugin}.{device}"
