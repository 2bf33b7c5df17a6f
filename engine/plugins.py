"""The plugin manager and the registries it fills: layer types, data sources, optimizers, devices,
losses, metrics.

Built-in layers are plugins too (:data:`DEFAULT_PLUGINS`), registered through the same hook as
third-party packages, which declare an entry point in the group ``cnnrun``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import warnings
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .errors import CnnrunError, ConfigError, PluginError, did_you_mean
from .data import DataSource
from .device import Device, Kernels
from .layer import Layer
from .losses import Loss
from .metrics import Metric
from .optim import Optimizer
from .options import show

DEFAULT_PLUGINS = (
    "cnnrun.plugins.conv",
    "cnnrun.plugins.pool",
    "cnnrun.plugins.resize",
    "cnnrun.plugins.dense",
    "cnnrun.plugins.reshape",
    "cnnrun.plugins.activations",
    "cnnrun.plugins.norm",
    "cnnrun.plugins.dropout",
    "cnnrun.plugins.merge",
    "cnnrun.plugins.data",
    "cnnrun.plugins.images",
    "cnnrun.plugins.optimizers",
    "cnnrun.plugins.losses",
    "cnnrun.plugins.devices",
    "cnnrun.plugins.metrics",
)
ENTRY_POINT_GROUP = "cnnrun"
HOOK_NAMES = tuple(name for name in vars(hookspecs) if name.startswith("cnnrun_"))


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
    devices: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus the versions of installed plugins, the ones that failed to load, and
    whether broken plugins are errors (``strict``) or warnings."""

    def __init__(self, strict: bool = False):
        super().__init__("cnnrun")
        self.add_hookspecs(hookspecs)
        self.strict = strict
        self.versions: dict[str, str] = {}
        self.failures: list[PluginFailure] = []

    def check_pending(self) -> None:
        """pluggy's check that every ``@hookimpl`` names a known hook, with the nearest hook's name
        added to the error (``unknown hook 'cnnrun_register_layer' ... (did you mean ...?)``)."""
        try:
            super().check_pending()
        except pluggy.PluginValidationError as exc:
            unknown = re.match(r"unknown hook '(\w+)'", str(exc))
            hint = did_you_mean(unknown.group(1), HOOK_NAMES) if unknown else ""
            raise pluggy.PluginValidationError(exc.plugin, f"{exc}{hint}") from None


def make_plugin_manager(load_entrypoints: bool = True, strict: bool = False) -> PluginManager:
    """A fresh plugin manager holding the built-in plugins and, if asked, installed ones.

    A third-party plugin that fails to import is skipped with a warning naming it (kept in
    ``pm.failures``); with ``strict=True`` it is a :class:`PluginError` instead, and so is a plugin
    that registers something wrong when registries are built from this manager.
    """
    pm = PluginManager(strict)
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
            message = f"plugin '{ep.name}' ({ep.value}) failed to load: {_one_line(exc)}"
            if strict:
                raise PluginError(message) from exc
            warnings.warn(message, stacklevel=2)
            pm.failures.append(PluginFailure(ep.name, _one_line(exc)))
            continue
        if ep.dist is not None:
            pm.versions[ep.name] = ep.dist.version


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def plugin_version(pm: PluginManager, name: str) -> str | None:
    """The version of plugin ``name``: cnnrun's for built-in plugins, the distribution's for
    installed ones, ``None`` for plugins registered by hand."""
    from cnnrun import __version__

    return __version__ if name in DEFAULT_PLUGINS else pm.versions.get(name)


class UnknownTypeError(ConfigError):
    """A ``type`` that no plugin registered; ``type_name`` and ``kind`` say which."""

    def __init__(self, message: str, *, type_name, kind: str, **where):
        super().__init__(message, **where)
        self.type_name = type_name
        self.kind = kind


class Registry:
    """Classes by ``type_name``, each with the plugin (and its version) that registered it, filled
    by one hook."""

    kind: str = "type"
    base: type = object
    hook: str = ""
    key: str = "type_name"  # the class attribute that names it

    def __init__(self):
        self.classes: dict[str, type] = {}
        self.providers: dict[str, str] = {}
        self.versions: dict[str, str | None] = {}  # plugin name -> version
        self.failures: list[PluginFailure] = []

    def check(self, cls, plugin: str, staged: dict[str, type] | None = None) -> str:
        """The ``type_name`` of ``cls`` if plugin ``plugin`` may register it, else a :class:`PluginError`:
        not a subclass of :attr:`base`, no ``type_name``, or a name taken already."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(f"plugin '{plugin}' registered {cls!r}, which is not a "
                              f"{self.base.__name__} subclass")
        name = getattr(cls, self.key, None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{plugin}' registered {cls.__name__} without a {self.key}")
        if name in self.classes:
            raise PluginError(f"{self.kind} '{name}' is registered by two plugins: "
                              f"'{self.providers[name]}' and '{plugin}'")
        if staged and name in staged:
            raise PluginError(f"plugin '{plugin}' registered {self.kind} '{name}' twice")
        return name

    def register(self, cls: type, plugin: str = "<direct>", version: str | None = None) -> None:
        """Add ``cls`` under its ``type_name``; see :meth:`check` for what is an error."""
        name = self.check(cls, plugin)
        self.classes[name] = cls
        self.providers[name] = plugin
        self.versions[plugin] = version

    def get(self, type_name) -> type:
        """The class registered as ``type_name``, or an :class:`UnknownTypeError` with the nearest name."""
        try:
            return self.classes[type_name]
        except (KeyError, TypeError):
            hint = did_you_mean(type_name, self.classes)
            shown = f"'{type_name}'" if isinstance(type_name, str) else show(type_name)  # null, not None
            raise UnknownTypeError(f"unknown {self.kind} {shown}{hint}", type_name=type_name,
                                   kind=self.kind, key="type") from None

    def provenance(self, type_name: str) -> dict:
        """``{"plugin": name, "version": version}`` of the plugin that registered ``type_name``."""
        plugin = self.providers[type_name]
        return {"plugin": plugin, "version": self.versions.get(plugin)}

    def __contains__(self, type_name) -> bool:
        return type_name in self.classes

    @classmethod
    def from_plugin_manager(cls, pm: PluginManager, strict: bool | None = None):
        """Call every plugin's implementation of ``cls.hook``, remembering which plugin gave what.

        A plugin whose hook raises or registers something :meth:`check` rejects is skipped with a
        warning (kept in ``registry.failures``); ``strict`` (default: ``pm.strict``) makes it a
        :class:`PluginError`.
        """
        registry = cls()
        registry.failures = collect(pm, [registry], strict)
        return registry


def collect(pm: PluginManager, registries: list[Registry], strict: bool | None = None) -> list[PluginFailure]:
    """Fill ``registries`` from their hooks, one plugin at a time in registration order (built-ins
    first), so that a duplicate name keeps the first plugin's class. Everything a plugin registers
    is added, or nothing: a plugin that fails is skipped whole, like one that failed to import.
    Returns the skipped plugins."""
    strict = getattr(pm, "strict", False) if strict is None else strict
    failures = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        try:
            staged = [(registry, _registered_by(pm, registry, plugin, name)) for registry in registries]
        except PluginError as err:
            if strict:
                raise
            warnings.warn(f"{err}; plugin '{name}' skipped", stacklevel=2)
            failures.append(PluginFailure(name, str(err)))
            continue
        for registry, classes in staged:
            for cls in classes.values():
                registry.register(cls, name, plugin_version(pm, name))
    return failures


def _registered_by(pm: PluginManager, registry: Registry, plugin, name: str) -> dict[str, type]:
    """``{type_name: class}`` that ``plugin`` registers through ``registry.hook``, checked."""
    classes: dict[str, type] = {}
    for impl in getattr(pm.hook, registry.hook).get_hookimpls():
        if impl.plugin is not plugin:
            continue
        found = []
        try:
            impl.function(register=found.append)
        except Exception as exc:
            raise PluginError(f"plugin '{name}' failed in {registry.hook}: {_one_line(exc)}") from exc
        for cls in found:
            classes[registry.check(cls, name, classes)] = cls
    return classes


class _WithDevices(Registry):
    """A registry whose classes run on devices: ``devices`` is a :class:`DeviceRegistry`, or ``None``
    for the default plugins' devices."""

    devices: "DeviceRegistry | None" = None

    @classmethod
    def from_plugin_manager(cls, pm: PluginManager, strict: bool | None = None,
                            devices: "DeviceRegistry | None" = None):
        registry = super().from_plugin_manager(pm, strict)
        registry.devices = devices or DeviceRegistry.from_plugin_manager(pm, strict)
        return registry


class LayerRegistry(_WithDevices):
    """Layer types (``cnnrun_register_layers``), and the devices their networks run on."""

    kind, base, hook = "layer type", Layer, "cnnrun_register_layers"


class DataSourceRegistry(Registry):
    """Data sources (``cnnrun_register_data_sources``)."""

    kind, base, hook = "data source", DataSource, "cnnrun_register_data_sources"


class OptimizerRegistry(_WithDevices):
    """Optimizers (``cnnrun_register_optimizers``), and the devices they update on (an optimizer is
    made on the CPU of these)."""

    kind, base, hook = "optimizer", Optimizer, "cnnrun_register_optimizers"


class LossRegistry(Registry):
    """Losses (``cnnrun_register_losses``)."""

    kind, base, hook = "loss", Loss, "cnnrun_register_losses"


class MetricRegistry(Registry):
    """Metrics (``cnnrun_register_metrics``)."""

    kind, base, hook = "metric", Metric, "cnnrun_register_metrics"


class DeviceRegistry(Registry):
    """Devices (``cnnrun_register_devices``, by ``name``) and the kernel modules registered for them
    (``cnnrun_register_kernels``); :meth:`open` gives a device with its kernel table."""

    kind, base, hook, key = "device", Device, "cnnrun_register_devices", "name"

    def __init__(self):
        super().__init__()
        self.kernel_modules: dict[str, list[tuple[str, str]]] = {}  # device -> [(module, plugin)]

    @staticmethod
    def check_kernels(device, module, plugin: str) -> None:
        """A :class:`PluginError` unless ``register(device, module)`` names a device and a module
        (a dotted name; its ``KERNELS`` dict holds the kernels)."""
        if not (isinstance(device, str) and device and isinstance(module, str) and module):
            raise PluginError(f"plugin '{plugin}' registered kernels with register({device!r}, {module!r}); "
                              f"expected register(device name, module name)")

    def register_kernels(self, device: str, module: str, plugin: str = "<direct>") -> None:
        """Record that ``module`` (a dotted name; its ``KERNELS`` dict) holds kernels for ``device``."""
        self.check_kernels(device, module, plugin)
        self.kernel_modules.setdefault(device, []).append((module, plugin))

    def names(self) -> list[str]:
        """Device names, in registration order (the ``--device`` choices)."""
        return list(self.classes)

    def open(self, name) -> Device:
        """A working instance of device ``name`` with its kernel table (``device.kernels``)."""
        if isinstance(name, Device):
            return name
        if name not in self.classes:
            raise CnnrunError(f"unknown device '{name}'; expected one of: {', '.join(self.classes)}")
        device = self.classes[name].open()
        device.kernels = self.kernels_for(device)
        return device

    def kernels_for(self, device: Device) -> Kernels:
        """The kernels of ``device``: those registered for it, then those of ``device.kernels_from``
        for the remaining operations; each passed through ``device.wrap_kernel``."""
        table: dict = {}
        for source in (device.name, device.kernels_from):
            found: dict[str, str] = {}
            for module_name, plugin in self.kernel_modules.get(source, []) if source else ():
                for operation, function in self._module_kernels(module_name, plugin, source).items():
                    if operation in found:
                        raise PluginError(f"kernel '{operation}' for device '{source}' is registered by two "
                                          f"plugins: '{found[operation]}' and '{plugin}'")
                    found[operation] = plugin
                    table.setdefault(operation, function)
        return Kernels(device.name, {op: device.wrap_kernel(op, fn) for op, fn in table.items()})

    @staticmethod
    def _module_kernels(module_name: str, plugin: str, device: str) -> dict:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"plugin '{plugin}' registered kernels for device '{device}' in "
                              f"'{module_name}', which cannot be imported: {exc}") from exc
        kernels = getattr(module, "KERNELS", None)
        if not isinstance(kernels, dict) or not all(isinstance(k, str) and callable(f) for k, f in kernels.items()):
            raise PluginError(f"plugin '{plugin}': kernel module '{module_name}' has no KERNELS dict of "
                              f"operation name -> function")
        return kernels

    @classmethod
    def from_plugin_manager(cls, pm: PluginManager, strict: bool | None = None):
        """Call every plugin's ``cnnrun_register_devices`` and ``cnnrun_register_kernels``."""
        registry = super().from_plugin_manager(pm, strict)
        registry.collect_kernels(pm, strict)
        return registry

    def collect_kernels(self, pm: PluginManager, strict: bool | None = None) -> None:
        """Record every plugin's ``cnnrun_register_kernels``; a plugin whose hook raises or registers
        something wrong is skipped with a warning (``strict``, default ``pm.strict``: an error)."""
        strict = getattr(pm, "strict", False) if strict is None else strict
        for impl in pm.hook.cnnrun_register_kernels.get_hookimpls():
            staged = []
            try:
                impl.function(register=lambda device, module: staged.append((device, module)))
                for device, module in staged:
                    self.check_kernels(device, module, impl.plugin_name)
            except Exception as exc:
                error = exc if isinstance(exc, PluginError) else PluginError(
                    f"plugin '{impl.plugin_name}' failed in cnnrun_register_kernels: {_one_line(exc)}")
                if strict:
                    raise error from exc
                warnings.warn(f"{error}; its kernels skipped", stacklevel=2)
                self.failures.append(PluginFailure(impl.plugin_name, str(error)))
                continue
            for device, module in staged:
                self.kernel_modules.setdefault(device, []).append((module, impl.plugin_name))


@dataclass
class Registries:
    """Everything the plugins registered: layer types, data sources, optimizers, devices, losses,
    metrics, and the plugins skipped because they registered something wrong."""

    layers: LayerRegistry
    data_sources: DataSourceRegistry
    optimizers: OptimizerRegistry
    devices: DeviceRegistry
    losses: LossRegistry = field(default_factory=LossRegistry)
    failures: list[PluginFailure] = field(default_factory=list)
    metrics: MetricRegistry = field(default_factory=MetricRegistry)

    @classmethod
    def from_plugin_manager(cls, pm: PluginManager, strict: bool | None = None) -> "Registries":
        """Every registry (see :meth:`Registry.from_plugin_manager`); a plugin that fails in one hook
        is left out of all of them."""
        registries = cls(LayerRegistry(), DataSourceRegistry(), OptimizerRegistry(), DeviceRegistry(), LossRegistry())
        registries.failures = collect(pm, [registries.layers, registries.data_sources, registries.optimizers,
                                           registries.devices, registries.losses, registries.metrics], strict)
        registries.devices.collect_kernels(pm, strict)
        registries.layers.devices = registries.optimizers.devices = registries.devices
        return registries


def plugin_infos(pm: PluginManager, registries: Registries) -> list[PluginInfo]:
    """Every registered plugin with its version and the types it provides, built-ins first
    (without the plugins skipped in ``registries.failures``)."""
    skipped = {failure.name for failure in registries.failures}

    def provided(registry: Registry, plugin: str) -> list[str]:
        return sorted(t for t, p in registry.providers.items() if p == plugin)

    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None or name in skipped:
            continue
        infos.append(PluginInfo(name, plugin_version(pm, name), provided(registries.layers, name),
                                provided(registries.data_sources, name), provided(registries.optimizers, name),
                                provided(registries.devices, name), provided(registries.losses, name),
                                provided(registries.metrics, name)))
    return infos


_default_registries: Registries | None = None


def default_registries() -> Registries:
    """The registries of built-in and installed plugins, built on first use."""
    global _default_registries
    if _default_registries is None:
        _default_registries = Registries.from_plugin_manager(make_plugin_manager())
    return _default_registries


def get_backend(device: str) -> Device:
    """The opened device named ``device``, with its kernel table, from the default plugins."""
    return default_registries().devices.open(device)


def default_registry() -> LayerRegistry:
    """The layer types of built-in and installed plugins."""
    return default_registries().layers
