"""Training progress for people: a per-epoch bar on a terminal and one summary line per epoch."""

from __future__ import annotations

import functools
import shutil
import sys
import time
import warnings

from .callbacks import Callback

MIN_BAR = 10  # columns of bar below which the optional parts of the bar's line make room
COMPILING = "compiling kernels (first run on this machine; later runs load them from the cache)..."


class Reporter(Callback):
    """Receives training events; this base class shows nothing (the Python API's quiet default).

    A reporter is the training loop's progress callback: its ``on_*`` methods (the protocol of
    :mod:`cnnrun.engine.callbacks`) call :meth:`epoch_start`, :meth:`batch_end` and :meth:`epoch_end`,
    which a display overrides; :meth:`note` and :meth:`warning` carry the run's messages.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start(epoch, self.trainer.config["epochs"], self.trainer.batches)

    def on_batch_end(self, batch, logs=None):
        self.batch_end(batch, logs["samples"], logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end({**logs, "data_wait_seconds": self.trainer.data_wait})

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        """An epoch of ``batches`` batches begins."""

    def batch_end(self, batch: int, samples: int, running_loss: float) -> None:
        """Batch ``batch`` (from 1) is done; ``samples`` seen so far this epoch."""

    def epoch_end(self, metrics: dict) -> None:
        """An epoch is done; ``metrics`` is its metrics.jsonl record and ``data_wait_seconds``: how
        long its training steps waited in all for their batches (loading and decoding that
        prefetching did not hide)."""

    def note(self, text: str) -> None:
        """A line of information (a checkpoint written, how to resume, ...)."""

    def warning(self, text: str) -> None:
        """Something went wrong that does not stop the run (curves.png could not be written);
        a Python warning here, a ``Warning:`` line on stderr from :class:`TextReporter`."""
        warnings.warn(text, RuntimeWarning, stacklevel=2)


def as_callback(reporter) -> Callback:
    """``reporter`` as a callback of the training loop: a :class:`Reporter` is one; any other object
    with some of its methods (``epoch_start``, ``batch_end``, ``epoch_end``) gets those called."""
    return reporter if isinstance(reporter, Callback) else _Forwarding(reporter)


class _Forwarding(Reporter):
    """The events of a reporter that does not subclass :class:`Reporter`, forwarded to it."""

    def __init__(self, target):
        self.target = target

    def _forward(self, name: str, *args) -> None:
        method = getattr(self.target, name, None)
        if method is not None:
            method(*args)

    def epoch_start(self, epoch, epochs, batches):
        self._forward("epoch_start", epoch, epochs, batches)

    def batch_end(self, batch, samples, running_loss):
        self._forward("batch_end", batch, samples, running_loss)

    def epoch_end(self, metrics):
        self._forward("epoch_end", metrics)


def summary_line(m: dict, epochs: int) -> str:
    """One epoch's summary, in fixed-width fields so that the lines of a run line up:
    ``epoch  3/20  train loss 0.4211 acc 0.8712  val loss ... acc ...  lr 5.00e-02   1.9s  data wait  3%``;
    ``m["data_wait_seconds"]``, where present, is shown as a share of the epoch's training time."""
    val = ""
    if m.get("val_loss") is not None:
        val = f"  val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.4f}"
    width = len(str(epochs))
    line = (f"epoch {m['epoch']:>{width}}/{epochs}  train loss {m['train_loss']:.4f} "
            f"acc {m['train_accuracy']:.4f}{val}  lr {m['lr']:.2e}  {_seconds(m['seconds'])}")
    if m.get("data_wait_seconds") is not None and m["seconds"] > 0:
        line += f"  data wait {min(m['data_wait_seconds'] / m['seconds'], 1.0):>4.0%}"
    return line


class TextReporter(Reporter):
    """Summary lines on ``stream``; with ``bar=True`` (a terminal) also a live bar during each epoch.

    The bar fits the terminal's width (``shutil.get_terminal_size``, read at each epoch's start) and
    shows batches, samples/s, the running loss, the epoch's ETA and the whole run's; the ETA and rate
    leave out the epoch's first batch, which may spend its time compiling kernels. While Numba
    compiles (its ``numba:compile`` event, sent only on a cache miss, so a warm run pays nothing)
    a line says so. Without a bar: one line per epoch, no carriage returns.
    """

    def __init__(self, stream=None, bar: bool | None = None, refresh: float = 0.1, errors=None):
        self.stream = stream if stream is not None else sys.stdout
        self.errors = errors if errors is not None else sys.stderr  # where warnings go
        self.bar = self.stream.isatty() if bar is None else bar
        self.refresh = refresh  # seconds between redraws of the bar
        self.epochs = 0
        self.epoch_seconds: float | None = None  # the last whole epoch, validation included
        self.compile_listener = None  # registered with Numba during each epoch
        self.compiling_shown = False

    def epoch_start(self, epoch, epochs, batches):
        self.epoch, self.epochs, self.batches = epoch, epochs, batches
        self.started = self.drawn = time.perf_counter()
        self.after_first: tuple[float, int] | None = None
        self.columns = shutil.get_terminal_size().columns - 1  # the last column would wrap on some terminals
        self._listen_for_compiles(True)

    def batch_end(self, batch, samples, running_loss):
        now = time.perf_counter()
        if batch == 1:
            self.after_first = (now, samples)
        if not self.bar or (now - self.drawn < self.refresh and 1 < batch < self.batches):
            return
        self.drawn = now
        self.stream.write("\r" + self.bar_line(batch, samples, running_loss, now) + "\033[K")
        self.stream.flush()

    def bar_line(self, batch: int, samples: int, running_loss: float, now: float) -> str:
        """The bar after ``batch`` batches, as wide as the terminal: where the room runs short,
        ``samples/s`` becomes ``/s``, then the rate goes, then the run's ETA."""
        rates = etas = ("",)
        if self.after_first and batch > 1:
            t0, s0 = self.after_first
            per_batch = (now - t0) / (batch - 1)
            rate = f"  {(samples - s0) / max(now - t0, 1e-9):>7,.0f}"
            rates = (f"{rate} samples/s", f"{rate}/s", "")
            left = per_batch * (self.batches - batch)
            etas = (f"  ETA {_clock(left)}",)
            if self.epoch < self.epochs:
                per_epoch = self.epoch_seconds if self.epoch_seconds is not None else per_batch * self.batches
                etas = (etas[0] + f"  run {_clock(left + per_epoch * (self.epochs - self.epoch))}", etas[0])
        head = f"epoch {self.epoch:>{len(str(self.epochs))}}/{self.epochs} "
        count = f" {batch:>{len(str(self.batches))}}/{self.batches}"
        loss = f"  loss {running_loss:.4f}"
        tails = [count + rate + loss + eta for eta in etas for rate in rates]
        tail = next((t for t in tails if self.columns - len(head) - len(t) - 2 >= MIN_BAR), tails[-1])
        room = max(self.columns - len(head) - len(tail) - 2, 0)  # 2: the brackets
        filled = room * batch // self.batches
        bar = "=" * filled + (">" if filled < room else "") + " " * (room - filled - 1)
        return (head + f"[{bar}]" + tail)[:self.columns]

    def epoch_end(self, metrics):
        self._listen_for_compiles(False)
        self.epoch_seconds = time.perf_counter() - self.started
        if self.bar:
            self.stream.write("\r\033[K")
        self.stream.write(summary_line(metrics, self.epochs) + "\n")
        self.stream.flush()

    def compiling(self) -> None:
        """Numba began compiling a kernel that its cache did not hold."""
        if self.bar:
            self.stream.write("\r" + COMPILING[:self.columns] + "\033[K")
        elif not self.compiling_shown:
            self.stream.write(COMPILING + "\n")
        self.compiling_shown = True
        self.stream.flush()

    def note(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    def warning(self, text):
        self.errors.write(f"Warning: {text}\n")
        self.errors.flush()

    def _listen_for_compiles(self, on: bool) -> None:
        """Hear Numba's ``numba:compile`` events during an epoch (Numba is imported by then)."""
        from numba.core import event

        if self.compile_listener is not None:
            event.unregister("numba:compile", self.compile_listener)
            self.compile_listener = None
        if on:
            self.compile_listener = _compile_listener_class()(self.compiling)
            event.register("numba:compile", self.compile_listener)


@functools.lru_cache(maxsize=None)
def _compile_listener_class() -> type:
    """A ``numba.core.event.Listener`` that calls ``callback()`` when the first of a burst of
    compilations starts (they nest: a kernel compiles the helpers it calls). Made on first use, so
    that importing this module does not import Numba."""
    from numba.core import event

    class CompileListener(event.Listener):
        def __init__(self, callback):
            self.callback = callback
            self.depth = 0

        def on_start(self, event):
            if self.depth == 0:
                self.callback()
            self.depth += 1

        def on_end(self, event):
            self.depth = max(self.depth - 1, 0)

    return CompileListener


def _seconds(seconds: float) -> str:
    return f"{seconds:>5.1f}s" if seconds < 1000 else f"{_clock(seconds):>6}"


def _clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour."""
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{seconds:02d}"
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
