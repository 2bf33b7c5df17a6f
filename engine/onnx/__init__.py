"""ONNX in and out: :func:`import_onnx` reads a model made elsewhere into a :class:`Network`,
:func:`export_onnx` writes a network for runtimes such as onnxruntime (docs/onnx.md).

Both need the optional ``onnx`` package (``pip install 'cnnrun[onnx]'``); it is imported only when
one of them is used, so ``import cnnrun.engine.onnx`` works without it.
"""

from __future__ import annotations

__all__ = ["export_onnx", "import_onnx"]


def __getattr__(name: str):
    if name == "import_onnx":
        from .importer import import_onnx
        return import_onnx
    if name == "export_onnx":
        from .exporter import export_onnx
        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
