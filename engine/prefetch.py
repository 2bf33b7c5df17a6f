"""Loading the next batches in a background thread while the current one trains.

:func:`prefetched` yields exactly the items of an iterable, in the same order; only *when* they are
computed changes (up to ``depth`` ahead, in one worker thread). The worker runs the iterable's own
code (for training, :func:`cnnrun.engine.data.batches`: the epoch's permutation and the decoding of
lazily loaded inputs), so results never depend on it; augmentation stays on the training thread.
Pillow and NumPy release the GIL while they decode and copy, which is where the overlap comes from.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterable, Iterator

PREFETCH_DEPTH = 2
"""Batches loaded ahead; 0 loads each on the training thread when it is needed."""

_DONE = object()


class Prefetcher:
    """An iterator over ``iterable`` computed by a worker thread ``depth`` items ahead.

    An exception in the worker is raised by ``next()`` at the item it happened at; :meth:`close`
    stops the worker (it is called when the items run out). ``waited`` counts the seconds
    ``next()`` spent waiting for the worker.
    """

    def __init__(self, iterable: Iterable, depth: int = PREFETCH_DEPTH):
        self.items: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self.stopping = threading.Event()
        self.waited = 0.0
        self.worker = threading.Thread(target=self._fill, args=(iter(iterable),), daemon=True,
                                       name="cnnrun-prefetch")
        self.worker.start()

    def _fill(self, iterator: Iterator) -> None:
        try:
            for item in iterator:
                if not self._put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((_DONE, exc))
            return
        self._put((_DONE, None))

    def _put(self, entry) -> bool:
        """Queue ``entry`` unless :meth:`close` was called first; False if it was."""
        while not self.stopping.is_set():
            try:
                self.items.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self):
        started = time.perf_counter()
        item, error = self.items.get()
        self.waited += time.perf_counter() - started
        if item is _DONE:
            self.close()
            if error is not None:
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the worker and wait for it."""
        self.stopping.set()
        self.worker.join()


class DataWait:
    """Seconds that the consumer of :func:`prefetched` waited for its items, added up."""

    def __init__(self):
        self.seconds = 0.0


def prefetched(iterable: Iterable, depth: int | None = None, wait: DataWait | None = None) -> Iterator:
    """The items of ``iterable``, loaded ``depth`` (default :data:`PREFETCH_DEPTH`) ahead by a
    worker thread that is stopped when this generator ends, is closed or is collected.

    ``wait.seconds`` grows by the time each item was waited for: with a worker, the time ``next()``
    blocked; without one (``depth`` 0), the time the iterable took to make the item."""
    depth = PREFETCH_DEPTH if depth is None else depth
    wait = wait if wait is not None else DataWait()
    if depth == 0:
        iterator = iter(iterable)
        while True:
            started = time.perf_counter()
            item = next(iterator, _DONE)
            wait.seconds += time.perf_counter() - started
            if item is _DONE:
                return
            yield item
    prefetcher = Prefetcher(iterable, depth)
    try:
        for item in prefetcher:
            wait.seconds += prefetcher.waited
            prefetcher.waited = 0.0
            yield item
    finally:
        wait.seconds += prefetcher.waited  # the wait for the end
        prefetcher.close()
