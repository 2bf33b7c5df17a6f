"""The one decorator every CPU kernel is compiled with, and when kernels use more than one thread.

``fastmath`` leaves out ``nnan`` and ``ninf`` so that NaN and Inf still propagate (a diverging
training run is caught, not hidden); ``cache=True`` keeps compiled code on disk between runs.
Importing this module imports Numba but compiles nothing: kernels compile on their first call.

Threads: a parallel kernel wakes Numba's worker threads and joins them at its end. That costs a few
microseconds on an idle machine, but when other processes keep the cores busy a descheduled
worker holds the join for up to a scheduler time slice (milliseconds). :func:`launch` therefore
runs small kernels on the calling thread only. Nothing here sets environment variables: the CPU
kernels call no BLAS, so no OpenBLAS thread pool spins against Numba's.
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


REDUCTION_CHUNKS = 8
"""A parallel sum (a weight gradient over samples and tiles) keeps at most this many partial sums,
one per fixed chunk of its items, each added in item order, then summed in chunk order: so its
result depends on the shapes alone, not on the number of threads or on which thread the scheduler
hands a chunk (seeded training is reproducible)."""


def reduction_chunks(items: int) -> int:
    """The partial sums of a parallel sum over ``items`` items: REDUCTION_CHUNKS, fewer for fewer items."""
    return max(1, min(REDUCTION_CHUNKS, items))


@numba.njit(cache=True, inline="always")
def chunk_items(items, chunks, chunk):
    """The items ``[first, last)`` of chunk ``chunk`` of ``chunks`` even chunks of ``items``."""
    return chunk * items // chunks, (chunk + 1) * items // chunks


@numba.njit(cache=True, inline="always")
def tile_of(item, tiles, tile, length):
    """(sample, first pixel, pixels) of work item ``item`` = sample * ``tiles`` + its tile, the tiles
    of ``tile`` pixels each (the last shorter) over a sample's ``length``."""
    n = item // tiles
    q0 = (item - n * tiles) * tile
    return n, q0, min(tile, length - q0)


PARALLEL_MIN_WORK = 1_000_000
"""Kernels whose work is estimated below this (about a nanosecond a unit on one core: callers
count a vectorized multiply-add as 1/8, an element read or written as 1) run on one thread."""


def num_threads() -> int:
    """``numba.get_num_threads()`` (the calling thread's count), without the lock Numba takes on every
    call to check that its thread pool is up (1.9 against 0.15 us a call, Numba 0.68: a batch-1
    ResNet-20 pass asks 68 times); Numba's own calls where its internals differ."""
    return _thread_count()[0]()


def _thread_count():
    """Numba's (get, set) of the calling thread's count once its pool is up, cached."""
    global _COUNT
    if _COUNT is None:
        numba.get_num_threads()  # starts the pool
        from numba.np.ufunc import parallel

        get, put = getattr(parallel, "_get_num_threads", None), getattr(parallel, "_set_num_threads", None)
        _COUNT = (get, put) if get is not None and put is not None else (numba.get_num_threads, numba.set_num_threads)
    return _COUNT


_COUNT = None


def launch(kernel, work, *args):
    """``kernel(*args)``: with all of Numba's threads, or on this thread alone when ``work`` (see
    :data:`PARALLEL_MIN_WORK`) is too small to be worth waking the others."""
    if work >= PARALLEL_MIN_WORK:
        return kernel(*args)
    get, put = _thread_count()
    threads = get()
    if threads == 1:
        return kernel(*args)
    put(1)  # counts Numba has checked: 1 and the current one (without the lock: 2.5 us a launch less)
    try:
        return kernel(*args)
    finally:
        put(threads)
