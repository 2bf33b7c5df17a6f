"""Size checks before allocating: what an array, a network or a batch needs, against the memory there is.

Every size is computed from shapes and headers (never by allocating), so a file or a network that
would not fit is one :class:`MemoryLimitError` line instead of a ``MemoryError`` after swapping.
Tests replace :func:`available_memory` (``monkeypatch.setattr(memory, "available_memory", ...)``).
"""

from __future__ import annotations

import math
import os

from .errors import CnnrunError


class MemoryLimitError(CnnrunError):
    """Something would need more memory than the machine has available."""


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else free physical pages),
    or ``None`` where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(n_bytes: int) -> str:
    """``n_bytes`` with a binary unit: ``512 B``, ``3.0 GiB``."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def array_bytes(shape, itemsize: int) -> int:
    """Bytes of an array of ``shape`` (exact Python integers: no overflow for absurd headers)."""
    return math.prod(int(s) for s in shape) * int(itemsize)


def check_fits(n_bytes: int, what: str) -> None:
    """Raise :class:`MemoryLimitError` ``WHAT needs N but only M of memory is available`` when ``n_bytes``
    exceed the available memory (nothing is checked where the system does not say how much there is)."""
    available = available_memory()
    if available is not None and n_bytes > available:
        raise MemoryLimitError(f"{what} needs {format_bytes(n_bytes)} but only {format_bytes(available)} "
                               "of memory is available")


def check_batch_fits(net, batch_size: int, what: str, *, training: bool = True) -> None:
    """Check that a batch of ``batch_size`` fits: the input and every layer's output, each for the
    forward value and, in ``training``, its gradient (a lower bound: work buffers come on top)."""
    sizes = [(math.prod(net.input_shape), "the input", net.input_shape)]
    sizes += [(math.prod(node.output_shape), f"layer '{node.name}'", node.output_shape) for node in net.nodes]
    _, name, shape = max(sizes, key=lambda size: size[0])
    check_fits((1 + training) * sum(size[0] for size in sizes) * batch_size * net.dtype.itemsize,
               f"{what}: a batch of {batch_size} through network '{net.name}' (the largest activation: "
               f"{name}, shape {tuple(shape)} per example)")
