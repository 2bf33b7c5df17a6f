"""The cnnrun engine: networks, the layer protocol, plugins and errors.

Importing it compiles nothing; kernels compile on first use (and are cached on disk).
"""

from .errors import CnnrunError, ConfigError, PluginError, ShapeError
from .hookspecs import hookimpl
from .layer import Context, Layer, Shape
from .network import Network
from .plugins import LayerRegistry, default_registry, make_plugin_manager

__all__ = [
    "CnnrunError", "ConfigError", "Context", "Layer", "LayerRegistry", "Network", "PluginError",
    "Shape", "ShapeError", "default_registry", "hookimpl", "make_plugin_manager",
]
