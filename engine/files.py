"""Reading and writing user files safely: only regular files are read, writes are atomic."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from .errors import CnnrunError


class FileProblem(CnnrunError):
    """A file that cannot be read or written: ``PATH: REASON`` (both kept as attributes)."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


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


def write_problem(path, exc: OSError) -> FileProblem:
    """The one line for a failed write of ``path``: the folder that is missing, or the system's reason."""
    path = Path(path)
    if exc.errno == errno.ENOENT and not path.parent.is_dir():
        return FileProblem(path, f"cannot write it: the folder {path.parent} does not exist")
    return FileProblem(path, f"cannot write it: {exc.strerror or exc}")


def write_atomic(path, write) -> None:
    """Call ``write(file)`` on a new temporary file beside ``path`` (created exclusively, no link
    followed), fsync it, then rename it onto ``path``: a failure leaves ``path`` as it was and no
    temporary file. An ``OSError`` (disk full, read-only folder) is a :class:`FileProblem`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_problem(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise write_problem(path, exc) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
