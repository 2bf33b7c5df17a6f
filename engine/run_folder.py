"""The run folder of a training run: a safe name, exclusive creation, a lock held for the run's
life, and metrics.jsonl kept in step with the checkpoints.

Rules (docs/format.md, "The run folder"): a default folder is created exclusively
(``runs/<name>-<timestamp>``, then ``-2``, ``-3``, ... when taken); a folder that already holds a
run is refused unless it is being resumed or ``force`` replaces it; ``.lock`` holds an ``flock`` and
the holder's pid (the kernel drops the lock when its process dies, so a stale lock is taken over);
temporary files left by a killed run are removed when a run next opens the folder.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import time
from pathlib import Path

from .errors import CnnrunError
from .files import cannot, is_temp_file, write_text

LATEST, BEST, METRICS, CONFIG, CURVES = "latest.npz", "best.npz", "metrics.jsonl", "config.json", "curves.png"
METRICS_CSV = "metrics.csv"
RUN_FILES = (LATEST, BEST, METRICS, CONFIG)  # a folder holding any of these holds a run
WRITTEN = RUN_FILES + (CURVES, METRICS_CSV)
LOCK = ".lock"


class RunFolderError(CnnrunError):
    """A run folder that cannot be used: in use by another run, holding another run, not writable."""


def folder_name(network_name) -> str:
    """A folder name made from a network's name: letters, digits, ``.``, ``_`` and ``-`` only, no
    leading dot, at most 64 characters (``"../../x"`` -> ``"x"``, ``"/srv/x"`` -> ``"srv_x"``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(network_name)).strip("._-")[:64]
    return safe or "network"


def create_new_folder(parent, stem: str) -> Path:
    """Create ``parent/stem`` (or ``stem-2``, ``stem-3``, ...: the first that does not exist) and
    return it; two runs started at once never share one."""
    parent = Path(parent)
    make_folder(parent)
    for k in range(1, 10_000):
        candidate = parent / (stem if k == 1 else f"{stem}-{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise cannot("create run folder", candidate, exc) from None
    raise RunFolderError(f"cannot create a run folder {parent / stem}: 10,000 of that name exist")


def make_folder(path) -> Path:
    """``mkdir -p path``, an error naming the folder if that fails."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"cannot use {path} as a run folder: it is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot("create run folder", path, exc) from None
    return path


def run_files(folder) -> list[str]:
    """The run files (checkpoints, metrics, config) in ``folder``."""
    return [name for name in RUN_FILES if os.path.lexists(Path(folder) / name)]


def clear_run(folder) -> None:
    """Remove the files a run writes (``--force``); anything else in the folder stays."""
    for name in WRITTEN:
        try:
            os.unlink(Path(folder) / name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise cannot("remove", Path(folder) / name, exc) from None


def remove_temp_files(folder) -> None:
    """Remove the temporary files a killed run left behind (call with the lock held)."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise cannot("read run folder", folder, exc) from None
    for entry in entries:
        if is_temp_file(entry.name, WRITTEN):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise cannot("remove", entry.path, exc) from None


class RunLock:
    """An exclusive ``flock`` on ``folder/.lock`` for a run's life, with the holder's pid in the file.

    ``with RunLock(folder):`` ...; a second holder gets a :class:`RunFolderError` naming the pid.
    ``stale_pid`` is the pid found in a lock file nobody held (a killed run), else None.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.fd: int | None = None
        self.stale_pid: str | None = None

    def __enter__(self) -> "RunLock":
        import fcntl  # POSIX only

        for _ in range(100):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise RunFolderError(f"{self.folder} is in use by another training run (pid {holder or 'unknown'}, "
                                     f"see {self.path}); wait for it to end or choose another --out") from None
            except OSError as exc:  # a file system without locks
                os.close(fd)
                raise RunFolderError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            if self._still_at_path(fd):
                self.stale_pid = _read_pid(fd, wait=0) or None
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                except OSError as exc:
                    os.close(fd)
                    raise cannot("write the lock file", self.path, exc) from None
                self.fd = fd
                return self
            os.close(fd)  # the previous holder removed it between our open and flock: again
        raise RunFolderError(f"cannot lock {self.path}: it keeps being replaced")

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still holding it: a waiter then sees a fresh file
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RunFolderError(f"{self.path} is a symbolic link, not cnnrun's lock file: "
                                     f"remove it or choose another --out") from None
            hint = " (a read-only run can be resumed into another folder with --out)" \
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
            raise RunFolderError(f"cannot create the lock file {self.path}: {exc.strerror or exc}{hint}") from None

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
        except FileNotFoundError:
            return False


def _read_pid(fd: int, wait: float = 0.2) -> str:
    """The pid written in a lock file (waiting up to ``wait`` s for a new holder to write it)."""
    deadline = time.monotonic() + wait
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text or time.monotonic() >= deadline:
            return text
        time.sleep(0.01)


def resolve_checkpoint(path) -> Path:
    """The checkpoint file ``path`` means: the file itself, or ``path/latest.npz`` for a run folder
    (whether it is a readable checkpoint is :func:`load_checkpoint`'s to say)."""
    path = Path(path)
    if path.is_dir():
        if not (path / LATEST).exists():
            raise CnnrunError(f"no checkpoint at {path}: no {LATEST} in that folder")
        return path / LATEST
    if not path.exists():
        raise CnnrunError(f"no checkpoint at {path}: no such file")
    return path



def inference_checkpoint(path) -> Path:
    """The checkpoint file ``eval``, ``predict`` and :meth:`Network.load_weights` use for ``path``: a
    run folder's best.npz (its latest.npz while it has no best.npz), or the file ``path`` itself."""
    path = Path(path)
    if path.is_dir() and (path / BEST).exists():
        return path / BEST
    return resolve_checkpoint(path)


# -- metrics.jsonl ------------------------------------------------------------------------------

def metrics_line(record: dict) -> str:
    """One metrics.jsonl line: JSON, with a NaN or Inf written as ``null`` (JSON has neither)."""
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    return json.dumps(clean, allow_nan=False)


def write_metrics(path, records: list[dict]) -> None:
    """Replace ``path`` (metrics.jsonl) with ``records``, then metrics.csv beside it with the same
    records, each atomically (a kill never leaves half a line; the next write brings both in step)."""
    path = Path(path)
    write_text(path, "".join(metrics_line(r) + "\n" for r in records))
    write_text(path.with_name(METRICS_CSV), metrics_csv(records))


def metrics_csv(records: list[dict]) -> str:
    """The records as CSV: a header row of their keys (in order of first appearance), then one row
    per record; null and non-finite values are empty cells, numbers are written as in the JSON."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if columns:
        writer.writerow(columns)
    for record in records:
        clean = json.loads(metrics_line(record))
        writer.writerow([_cell(clean.get(c)) for c in columns])
    return text.getvalue()


def _cell(value) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def read_metrics(path) -> list[dict]:
    """The records of a metrics.jsonl ([] if there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise RunFolderError(f"{path} line {number} is not a metrics record: {line[:60]!r}")
        records.append(record)
    return records


def metrics_up_to(records: list[dict], epoch: int, checkpoint_record: dict | None) -> list[dict]:
    """The history of a run resumed at ``epoch``: one record per epoch up to it, in order; the
    checkpoint's own record fills in its epoch when a kill came before that line was written."""
    by_epoch: dict[int, dict] = {}
    for record in records:
        if record["epoch"] <= epoch:
            by_epoch.setdefault(record["epoch"], record)
    if checkpoint_record is not None and checkpoint_record.get("epoch") == epoch:
        by_epoch.setdefault(epoch, checkpoint_record)
    return [by_epoch[e] for e in sorted(by_epoch)]
