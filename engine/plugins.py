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
from .data import DataSource
from .layer import Layer
from .optim import Optimizer
from .options import show

DEFAULT_PLUGINS = (
    "cnnrun.plugins.conv",
    "cnnrun.plugins.pool",
    "cnnrun.plugins.dense",
    "cnnrun.plugins.activations",
    "cnnrun.plugins.norm",
    "cnnrun.plugins.merge",
    "cnnrun.plugins.datasets",
    "cnnrun.plugins.optimizers",
)
ENTRY_POINT_GROUP = "cnnrun"


@dataclass
class PluginFailure:
    """A third-party plugin that could not be loaded."""

    name: str
    error: str


@dataclass
class PluginInfo:
    """One plugin for ``cnnrun plugins``: its name, version and what it provides."""

    name: str
    version: str | None
    layer_types: list[str] = field(default_factory=list)
    data_sources: list[str] = field(default_factory=list)
    optimizers: list[str] = field(default_factory=list)


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
        plugin = None
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
            pm.check_pending()  # a misspelled hook name in this plugin
        except Exception as exc:  # a broken plugin must not take cnnrun down
            if plugin is not None and pm.is_registered(plugin):
                pm.unregister(plugin)
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"  # one line
            message = f"plugin '{ep.name}' ({ep.value}) failed to load: {error}"
            if strict:
                raise PluginError(message) from exc
            warnings.warn(message, stacklevel=2)
            pm.failures.append(PluginFailure(ep.name, error))
            continue
        if ep.dist is not None:
            pm.versions[ep.name] = ep.dist.version


class Registry:
    """Classes by ``type_name``, each with the plugin that registered it, filled by one hook."""

    kind: str = "type"
    base: type = object
    hook: str = ""

    def __init__(self):
        self.classes: dict[str, type] = {}
        self.providers: dict[str, str] = {}

    def register(self, cls: type, plugin: str = "<direct>") -> None:
        """Add ``cls`` under its ``type_name``; a name taken by another plugin is an error."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(f"plugin '{plugin}' registered {cls!r}, which is not a "
                              f"{self.base.__name__} subclass")
        name = cls.type_name
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{plugin}' registered {cls.__name__} without a type_name")
        if name in self.classes:
            raise PluginError(f"{self.kind} '{name}' is registered by two plugins: "
                              f"'{self.providers[name]}' and '{plugin}'")
        self.classes[name] = cls
        self.providers[name] = plugin

    def get(self, type_name) -> type:
        """The class registered as ``type_name``, or a :class:`ConfigError` with the nearest name."""
        try:
            return self.classes[type_name]
        except (KeyError, TypeError):
            hint = did_you_mean(type_name, self.classes)
            shown = f"'{type_name}'" if isinstance(type_name, str) else show(type_name)  # null, not None
            raise ConfigError(f"unknown {self.kind} {shown}{hint}", key="type") from None

    def __contains__(self, type_name) -> bool:
        return type_name in self.classes

    @classmethod
    def from_plugin_manager(cls, pm: PluginManager):
        """Call every plugin's implementation of ``cls.hook``, remembering which plugin gave what."""
        registry = cls()
        for impl in getattr(pm.hook, cls.hook).get_hookimpls():
            try:
                impl.function(register=lambda c, _plugin=impl.plugin_name: registry.register(c, _plugin))
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"plugin '{impl.plugin_name}' failed in {cls.hook}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        return registry


class LayerRegistry(Registry):
    """Layer types (``cnnrun_register_layers``)."""

    kind, base, hook = "layer type", Layer, "cnnrun_register_layers"

    @property
    def layers(self) -> dict[str, type[Layer]]:
        return self.classes


class DataSourceRegistry(Registry):
    """Data sources (``cnnrun_register_data_sources``)."""

    kind, base, hook = "data source", DataSource, "cnnrun_register_data_sources"


class OptimizerRegistry(Registry):
    """Optimizers (``cnnrun_register_optimizers``)."""

    kind, base, hook = "optimizer", Optimizer, "cnnrun_register_optimizers"


@dataclass
class Registries:
    """Everything the plugins registered: layer types, data sources, optimizers."""

    layers: LayerRegistry
    data_sources: DataSourceRegistry
    optimizers: OptimizerRegistry

    @classmethod
    def from_plugin_manager(cls, pm: PluginManager) -> "Registries":
        return cls(LayerRegistry.from_plugin_manager(pm), DataSourceRegistry.from_plugin_manager(pm),
                   OptimizerRegistry.from_plugin_manager(pm))


def plugin_infos(pm: PluginManager, registries: Registries) -> list[PluginInfo]:
    """Every registered plugin with its version and the types it provides, built-ins first."""
    from cnnrun import __version__

    def provided(registry: Registry, plugin: str) -> list[str]:
        return sorted(t for t, p in registry.providers.items() if p == plugin)

    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        version = __version__ if name in DEFAULT_PLUGINS else pm.versions.get(name)
        infos.append(PluginInfo(name, version, provided(registries.layers, name),
                                provided(registries.data_sources, name), provided(registries.optimizers, name)))
    return infos


_default_registries: Registries | None = None


def default_registries() -> Registries:
    """The registries of built-in and installed plugins, built on first use."""
    global _default_registries
    if _default_registries is None:
        _default_registries = Registries.from_plugin_manager(make_plugin_manager())
    return _default_registries


def default_registry() -> LayerRegistry:
    """The layer types of built-in and installed plugins."""
    return default_registries().layers
