"""How a training run ends early: a non-finite loss or state, a failed write, Ctrl-C or SIGTERM.
Every message says what is really on disk (the epoch read back from latest.npz, not the one the
loop had reached)."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import zipfile
from pathlib import Path

import numpy as np

from .errors import CnnrunError
from .run_folder import LATEST


class TrainingStopped(CnnrunError):
    """Training ended early (a NaN or Inf, a file that could not be written); the message says
    where the last good checkpoint is."""


class TrainingInterrupted(TrainingStopped):
    """Training was interrupted (Ctrl-C or SIGTERM). ``message`` says what is on disk; ``str()``
    adds how to resume. ``run_dir``, ``saved_epoch`` (None: nothing saved), ``epochs`` (the total)
    and ``signal`` (SIGINT or SIGTERM) let a caller print its own resume command."""

    def __init__(self, message: str, *, run_dir: Path, saved_epoch: int | None, epochs: int, signum: int):
        hint = f" Resume with --resume {run_dir}" if saved_epoch is not None else ""
        super().__init__(message + hint)
        self.message, self.run_dir, self.saved_epoch, self.epochs, self.signal = \
            message, run_dir, saved_epoch, epochs, signum


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was, so that it ends like Ctrl-C."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def epoch_on_disk(path) -> int | None:
    """The epoch of the checkpoint at ``path`` (None if there is none, or it cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            epoch = json.loads(str(data["meta"])).get("epoch")
    except (OSError, ValueError, KeyError, AttributeError, zipfile.BadZipFile, EOFError):
        return None
    return epoch if isinstance(epoch, int) else None


def last_good(run_dir: Path) -> str:
    """``The last good checkpoint is D/latest.npz (epoch 3)``, read from disk."""
    epoch = epoch_on_disk(run_dir / LATEST)
    if epoch is None:
        return f"No checkpoint was written in {run_dir}"
    return f"The last good checkpoint is {run_dir / LATEST} (epoch {epoch})"


def interrupted(exc: KeyboardInterrupt, run_dir: Path, epoch: int, epochs: int) -> TrainingInterrupted:
    """The :class:`TrainingInterrupted` for an interrupt after ``epoch`` of ``epochs`` epochs."""
    signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
    saved = epoch_on_disk(run_dir / LATEST)
    when = f"during epoch {epoch + 1}" if epoch < epochs else f"after epoch {epoch}, the last"
    what = f"interrupted {when} ({signal.Signals(signum).name}); "
    if saved is None:
        what += f"no checkpoint was written in {run_dir}."
    else:
        what += f"the checkpoint {run_dir / LATEST} holds epoch {saved}."
    return TrainingInterrupted(what, run_dir=run_dir, saved_epoch=saved, epochs=epochs, signum=signum)
