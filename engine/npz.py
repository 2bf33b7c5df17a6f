"""Reading ``.npz`` archives (``np.savez``) safely: one reader for data files, prediction inputs and
checkpoints.

Never unpickles; refuses what is not a regular file without opening it (a FIFO, ``/dev/zero``);
reads every array header first and checks its size against the archive member and against the
available memory before allocating; reads only the arrays asked for. Every problem is one
:class:`NpzError` line naming the file (and the array).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import CnnrunError
from .files import FileProblem, regular_file
from .image_files import image_kind
from .memory import array_bytes, check_fits, format_bytes

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError,
               RuntimeError, SyntaxError)


class NpzError(CnnrunError):
    """An ``.npz`` file that cannot be read: ``PATH: what is wrong``."""


def read_npz(path, names=None, *, what: str = "arrays") -> dict[str, np.ndarray]:
    """The arrays ``names`` (all by default) of the ``.npz`` file at ``path``.

    A name in ``names`` that the file lacks is an error listing what it holds. ``what`` says in a
    memory error what the arrays are for (e.g. "the training data").
    """
    path = Path(path)
    try:
        regular_file(path)
        with open(path, "rb") as f:
            start = f.read(len(NPY_MAGIC))
            if start.startswith(NPY_MAGIC):
                raise NpzError(f"{path}: is a .npy file (one array), not an .npz file; "
                               "save the arrays with np.savez(FILE, x=..., ...)")
            if not start:
                raise NpzError(f"{path}: is empty (0 bytes), not an .npz file")
            f.seek(0)
            try:
                archive = zipfile.ZipFile(f)
            except (zipfile.BadZipFile, ValueError, EOFError, OSError, NotImplementedError):
                if start.startswith(ZIP_MAGIC):
                    raise NpzError(f"{path}: is truncated or corrupted (not a complete zip archive)") from None
                f.seek(0)
                kind = image_kind(f.read(16))
                if kind:
                    raise NpzError(f"{path}: is {kind}, not an .npz file of arrays (np.savez writes one); "
                                   "a folder of images is read by the image_folder data source, and "
                                   "cnnrun predict takes image files directly") from None
                raise NpzError(f"{path}: not an .npz file (np.savez writes one)") from None
            with archive:
                return _read_members(archive, path, names, what)
    except FileProblem as exc:
        raise NpzError(str(exc)) from None
    except OSError as exc:
        raise NpzError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def _read_members(archive: zipfile.ZipFile, path: Path, names, what: str) -> dict[str, np.ndarray]:
    members = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise NpzError(f"{path}: not an .npz file (it holds {info.filename!r}, which is not a .npy array)")
        members[info.filename[:-4]] = info
    wanted = list(members) if names is None else list(names)
    for name in wanted:
        if name not in members:
            raise NpzError(f"{path}: no array '{name}' (arrays: {', '.join(members) or 'none'}); "
                           f"expected {', '.join(repr(n) for n in wanted)}")
    headers = {name: _header(archive, members[name], path, name) for name in wanted}
    total = sum(array_bytes(shape, dtype.itemsize) for shape, _, dtype in headers.values())
    check_fits(total, f"{path}: reading {what} ({', '.join(wanted)})")
    return {name: _read_array(archive, members[name], path, name, *headers[name]) for name in wanted}


def _header(archive, info, path: Path, name: str):
    """``(shape, fortran_order, dtype)`` of one member, checked against the member's size."""
    try:
        with archive.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise NpzError(f"{path}: array '{name}' uses .npy format version {version}, which cnnrun "
                               "does not read (np.savez writes 1.0)")
            offset = fp.tell()
    except NpzError:
        raise
    except READ_ERRORS as exc:
        raise _damaged(path, name, exc) from None
    if dtype.hasobject:
        raise NpzError(f"{path}: array '{name}' holds Python objects (pickled data), which cnnrun never "
                       "loads; store numbers only")
    n_bytes = array_bytes(shape, dtype.itemsize)
    if n_bytes != info.file_size - offset:
        raise NpzError(f"{path}: array '{name}' is truncated or corrupted: its header says shape "
                       f"{tuple(shape)} of {dtype} ({format_bytes(n_bytes)}) but it holds "
                       f"{format_bytes(max(info.file_size - offset, 0))}")
    return shape, fortran, dtype


def _read_array(archive, info, path: Path, name: str, shape, fortran: bool, dtype) -> np.ndarray:
    flat = np.empty(int(np.prod(shape, dtype=np.int64)) if shape else 1, dtype)
    buffer = flat.view(np.uint8) if flat.nbytes else memoryview(b"")
    try:
        with archive.open(info) as fp:
            fp.seek(info.file_size - flat.nbytes)
            done = 0
            while done < flat.nbytes:
                n = fp.readinto(buffer[done:])
                if not n:
                    raise EOFError(f"{done} of {flat.nbytes} bytes")
                done += n
            if fp.read(1):  # also makes zipfile check the CRC at the end of the member
                raise ValueError("data after the array")
    except READ_ERRORS as exc:
        raise _damaged(path, name, exc) from None
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _damaged(path: Path, name: str, exc: Exception) -> NpzError:
    kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
    return NpzError(f"{path}: is truncated or corrupted (array '{name}': {kind}: {exc})")
