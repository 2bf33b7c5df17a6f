"""The plugin manager and the registry of layer types it collects.

Built-in layers are plugins too (:data:`DEFAULT_PLUGINS`), registered through the same hook as
third-party packages, which declare an entry point in the group ``cnnrun``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError, did_you_mean
from .layer import Layer

DEFAULT_PLUGINS = (
    "cnnrun.plugins.conv",
    "cnnrun.plugins.pool",
    "cnnrun.plugins.dense",
    "cnnrun.plugins.activations",
    "cnnrun.plugins.norm",
    "cnnrun.plugins.merge",
)
ENTRY_POINT_GROUP = "cnnrun"


@dataclass
class PluginFailure:
    """A third-party plugin that could not be loaded."""

    name: str
    error: str


@dataclass
class PluginInfo:
    """One plugin for ``cnnrun plugins``: its name, version and the layer types it provides."""

    name: str
    version: str | None
    layer_types: list[str] = field(default_factory=list)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus the versions of installed plugins and the ones that failed to load."""

    def __init__(self):
        super().__init__("cnnrun")
        self.add_hookspecs(hookspecs)
        self.versions: dict[str, str] = {}
        self.failures: list[PluginFailure] = []


def make_plugin_manager(load_entrypoints: bool = True, strict: bool = False) -> PluginManager:
    """A fresh plugin manager holding the built-in plugins and, if asked, installed ones.

    A third-party plugin that fails to import is skipped with a warning naming it (kept in
    ``pm.failures``); with ``strict=True`` it is a :class:`PluginError` instead.
    """
    pm = PluginManager()
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    if load_entrypoints:
        _load_entrypoints(pm, strict)
    pm.check_pending()
    return pm


def _load_entrypoints(pm: PluginManager, strict: bool) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take cnnrun down
            message = f"plugin '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            if strict:
                raise PluginError(message) from exc
            warnings.warn(message, stacklevel=2)
            pm.failures.append(PluginFailure(ep.name, f"{type(exc).__name__}: {exc}"))
            continue
        pm.register(plugin, name=ep.name)
        if ep.dist is not None:
            pm.versions[ep.name] = ep.dist.version


class LayerRegistry:
    """Layer types by name, each with the plugin that registered it."""

    def __init__(self):
        self.layers: dict[str, type[Layer]] = {}
        self.providers: dict[str, str] = {}

    def register(self, layer_class: type, plugin: str = "<direct>") -> None:
        """Add ``layer_class`` under its ``type_name``; a name taken by another plugin is an error."""
        if not (isinstance(layer_class, type) and issubclass(layer_class, Layer)):
            raise PluginError(f"plugin '{plugin}' registered {layer_class!r}, which is not a Layer subclass")
        name = layer_class.type_name
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{plugin}' registered {layer_class.__name__} without a type_name")
        if name in self.layers:
            raise PluginError(f"layer type '{name}' is registered by two plugins: "
                              f"'{self.providers[name]}' and '{plugin}'")
        self.layers[name] = layer_class
        self.providers[name] = plugin

    def get(self, type_name) -> type[Layer]:
        """The class of layer type ``type_name``, or a :class:`ConfigError` with the nearest name."""
        try:
            return self.layers[type_name]
        except (KeyError, TypeError):
            hint = did_you_mean(type_name, self.layers)
            raise ConfigError(f"unknown layer type '{type_name}'{hint}", key="type") from None

    def __contains__(self, type_name) -> bool:
        return type_name in self.layers

    @classmethod
    def from_plugin_manager(cls, pm: PluginManager) -> "LayerRegistry":
        """Call every plugin's ``cnnrun_register_layers`` hook, remembering which plugin gave what."""
        registry = cls()
        for impl in reversed(pm.hook.cnnrun_register_layers.get_hookimpls()):
            impl.function(register=lambda layer_class, _p=impl.plugin_name: registry.register(layer_class, _p))
        return registry


def plugin_infos(pm: PluginManager, registry: LayerRegistry) -> list[PluginInfo]:
    """Every registered plugin with its version and its layer types, built-ins first."""
    from cnnrun import __version__

    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        version = __version__ if name in DEFAULT_PLUGINS else pm.versions.get(name)
        types = sorted(t for t, p in registry.providers.items() if p == name)
        infos.append(PluginInfo(name, version, types))
    return infos


_default_registry: LayerRegistry | None = None


def default_registry() -> LayerRegistry:
    """The registry of built-in and installed layer types, built on first use."""
    global _default_registry
    if _default_registry is None:
        _default_registry = LayerRegistry.from_plugin_manager(make_plugin_manager())
    return _default_registry
