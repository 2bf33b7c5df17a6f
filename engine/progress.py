"""Training progress for people: a per-epoch bar on a terminal and one summary line per epoch."""

from __future__ import annotations

import sys
import time
import warnings


class Reporter:
    """Receives training events; this base class shows nothing (the Python API's quiet default)."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        """An epoch of ``batches`` batches begins."""

    def batch_end(self, batch: int, samples: int, running_loss: float) -> None:
        """Batch ``batch`` (from 1) is done; ``samples`` seen so far this epoch."""

    def epoch_end(self, metrics: dict) -> None:
        """An epoch is done; ``metrics`` is its metrics.jsonl record."""

    def note(self, text: str) -> None:
        """A line of information (a checkpoint written, how to resume, ...)."""

    def warning(self, text: str) -> None:
        """Something went wrong that does not stop the run (curves.png could not be written);
        a Python warning here, a ``Warning:`` line on stderr from :class:`TextReporter`."""
        warnings.warn(text, RuntimeWarning, stacklevel=2)


def summary_line(m: dict, epochs: int) -> str:
    """One epoch's summary: ``epoch 3/20  train loss 0.4211 acc 0.8712  val loss ... lr ... 1.9s``."""
    val = ""
    if m.get("val_loss") is not None:
        val = f"  val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.4f}"
    width = len(str(epochs))
    return (f"epoch {m['epoch']:>{width}}/{epochs}  train loss {m['train_loss']:.4f} "
            f"acc {m['train_accuracy']:.4f}{val}  lr {m['lr']:.4g}  {m['seconds']:.1f}s")


class TextReporter(Reporter):
    """Summary lines on ``stream``; with ``bar=True`` (a terminal) also a live bar during each epoch.

    The bar shows batches, samples/s, the running loss and an ETA; the ETA and rate leave out the
    epoch's first batch, which may spend its time compiling kernels.
    """

    def __init__(self, stream=None, bar: bool | None = None, width: int = 24, refresh: float = 0.1, errors=None):
        self.stream = stream if stream is not None else sys.stdout
        self.errors = errors if errors is not None else sys.stderr  # where warnings go
        self.bar = self.stream.isatty() if bar is None else bar
        self.width = width
        self.refresh = refresh  # seconds between redraws of the bar
        self.epochs = 0

    def epoch_start(self, epoch, epochs, batches):
        self.epoch, self.epochs, self.batches = epoch, epochs, batches
        self.started = self.drawn = time.perf_counter()
        self.after_first: tuple[float, int] | None = None

    def batch_end(self, batch, samples, running_loss):
        now = time.perf_counter()
        if batch == 1:
            self.after_first = (now, samples)
        if not self.bar or (now - self.drawn < self.refresh and 1 < batch < self.batches):
            return
        self.drawn = now
        rate, eta = "", ""
        if self.after_first and batch > 1:
            t0, s0 = self.after_first
            per_batch = (now - t0) / (batch - 1)
            rate = f"  {(samples - s0) / max(now - t0, 1e-9):,.0f} samples/s"
            eta = f"  ETA {_clock(per_batch * (self.batches - batch))}"
        filled = int(self.width * batch / self.batches)
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        self.stream.write(f"\repoch {self.epoch}/{self.epochs} [{bar}] {batch}/{self.batches}"
                          f"{rate}  loss {running_loss:.4f}{eta}\033[K")
        self.stream.flush()

    def epoch_end(self, metrics):
        if self.bar:
            self.stream.write("\r\033[K")
        self.stream.write(summary_line(metrics, self.epochs) + "\n")
        self.stream.flush()

    def note(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    def warning(self, text):
        self.errors.write(f"Warning: {text}\n")
        self.errors.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
