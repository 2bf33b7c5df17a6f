"""Errors that cnnrun reports to users: one line naming the file, the layer, the key and the value."""

from __future__ import annotations

import difflib


class CnnrunError(Exception):
    """Base class of every error cnnrun reports to a user (the CLI prints it as one line)."""


class ConfigError(CnnrunError):
    """A network description that cannot be built.

    ``str(err)`` reads ``FILE: layer 'NAME' (TYPE): MESSAGE`` (or ``FILE: SECTION: MESSAGE`` for
    settings outside the layers, e.g. ``train.optimizer (sgd)``); unknown parts are left out. A layer
    of a block instance reads ``FILE: block 'B' (instance 'I'), layer 'NAME' (TYPE): MESSAGE``.
    """

    def __init__(self, message: str, *, layer: str | None = None, layer_type: str | None = None,
                 key: str | None = None, file: str | None = None, section: str | None = None,
                 block: str | None = None):
        super().__init__(message)
        self.message = message
        self.layer = layer
        self.layer_type = layer_type
        self.key = key
        self.file = file
        self.section = section
        self.block = block

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.layer is not None:
            kind = f" ({self.layer_type})" if self.layer_type else ""
            layer = f"layer '{self.layer}'{kind}"
            where.append(f"{self.block}, {layer}" if self.block else layer)
        elif self.section:
            where.append(self.section)
        return ": ".join(where + [self.message])

    def in_file(self, file: str) -> "ConfigError":
        """Return this error with the file it came from filled in."""
        self.file = self.file or str(file)
        return self


class ShapeError(CnnrunError):
    """An array handed to the engine does not have the shape the network expects."""


class PluginError(CnnrunError):
    """A plugin is broken: a duplicate layer type, a bad registration, a failed import."""


def did_you_mean(value: str, options) -> str:
    """`` (did you mean 'x'?)`` for the nearest of ``options`` to ``value``, or ``''``."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
