"""The one decorator every CPU kernel is compiled with.

``fastmath`` leaves out ``nnan`` and ``ninf`` so that NaN and Inf still propagate (a diverging
training run is caught, not hidden); ``cache=True`` keeps compiled code on disk between runs.
Importing this module imports Numba but compiles nothing: kernels compile on their first call.
"""

from __future__ import annotations

import numba

SAFE_FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


def cpu_kernel(function):
    """Compile ``function`` as a parallel CPU kernel: ``njit(parallel=True, cache=True, fastmath=SAFE)``."""
    return numba.njit(parallel=True, cache=True, fastmath=set(SAFE_FASTMATH))(function)


def serial_kernel(function):
    """Compile a helper called from inside kernels (no ``prange`` of its own)."""
    return numba.njit(cache=True, fastmath=set(SAFE_FASTMATH))(function)
