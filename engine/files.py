"""Reading and writing user files safely. Only regular files are read (:func:`regular_file`). Writes
lose nothing: a temporary file created exclusively beside the target, fsync, then an atomic rename. A crash, a kill or a full disk leaves the previous file intact; a
planted symbolic link is never written through (``mkstemp`` opens with ``O_CREAT | O_EXCL``, and
``os.replace`` replaces a link at the target rather than following it).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import CnnrunError

TEMP_SUFFIX = ".tmp"


class FileProblem(CnnrunError):
    """A file that cannot be read or written: ``PATH: REASON`` (both kept as attributes)."""

    def __init__(self, path, reason: str, message: str | None = None):
        super().__init__(message or f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


class WriteError(FileProblem):
    """A file could not be written (a full disk, a read-only or missing folder, ...): ``cannot write
    PATH: REASON``."""


KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def regular_file(path) -> Path:
    """``path`` if it is a regular file (a link to one is fine); else :class:`FileProblem` naming what
    it is. Never opens it, so a FIFO cannot block and ``/dev/zero`` is not read."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileProblem(path, "file not found") from None
    except OSError as exc:
        raise FileProblem(path, f"cannot read it: {exc.strerror or exc}") from None
    for test, kind in KINDS:
        if test(mode):
            raise FileProblem(path, f"is {kind}, not a regular file")
    return path


def cannot(action: str, path, exc: OSError) -> WriteError:
    """``cannot write runs/x/latest.npz: No space left on device`` (or: the folder ... does not exist)."""
    path = Path(path)
    reason = (f"the folder {path.parent} does not exist" if exc.errno == errno.ENOENT and not path.parent.is_dir()
              else exc.strerror or str(exc))
    return WriteError(path, reason, f"cannot {action} {path}: {reason}")


def atomic_write(path, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, atomically; an ``OSError`` on
    the way is a :class:`WriteError` naming ``path``, and ``path`` is left as it was."""
    path = Path(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise cannot("write", path, exc) from None
    replaced = False
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        replaced = True
    except OSError as exc:
        raise cannot("write", path, exc) from None
    finally:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    _fsync_folder(path.parent)


def copy_file(source, path) -> None:
    """:func:`atomic_write` of ``path`` with the bytes of the file ``source`` (a checkpoint written
    once under two names)."""
    def write(f):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f)

    atomic_write(path, write)


def write_text(path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 ``text``."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def is_temp_file(name: str, targets) -> bool:
    """Whether ``name`` is a temporary file that :func:`atomic_write` makes for one of ``targets``
    (``.latest.npz.k2j3_x.tmp``; also the ``.latest.npz.PID.tmp`` of earlier versions)."""
    return name.endswith(TEMP_SUFFIX) and any(name.startswith(f".{target}.") for target in targets)


@functools.cache
def _file_mode() -> int:
    """0o666 less the umask: the mode ``open()`` would give a new file (mkstemp gives 0o600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; file systems that cannot sync a folder are left alone."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
