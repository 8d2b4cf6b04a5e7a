"""An injected full disk: writes under one folder succeed until a byte budget is spent, then
fail as write(2) does on a full disk (a short write, then OSError ENOSPC).

Only the raw write is replaced: Python's own buffering, flush, fsync, close and the product's
error handling above them all run for real. `disk_fills_after` patches open()/os.fdopen() in
this process; tests/disk_full_site/sitecustomize.py does the same inside a merge worker.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from contextlib import contextmanager
from pathlib import Path

REAL_OPEN, REAL_FDOPEN = builtins.open, os.fdopen


class Budget:
    def __init__(self, nbytes: int):
        self.left = nbytes
        self.refused = 0  # writes refused with ENOSPC


class FullDiskRaw(io.RawIOBase):
    """A real file whose writes stop at the budget, like a disk with that much room left."""

    def __init__(self, raw: io.FileIO, budget: Budget):
        self._raw, self._budget = raw, budget

    def write(self, b) -> int:
        n = min(len(b), self._budget.left)
        if n == 0:
            self._budget.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self._raw.write(memoryview(b)[:n])
        self._budget.left -= written
        return written

    def readinto(self, b):
        return self._raw.readinto(b)

    def readable(self): return self._raw.readable()
    def writable(self): return self._raw.writable()
    def seekable(self): return self._raw.seekable()
    def seek(self, *args): return self._raw.seek(*args)
    def tell(self): return self._raw.tell()
    def fileno(self): return self._raw.fileno()

    @property
    def name(self):
        return self._raw.name

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


def _wrap(raw: io.FileIO, mode: str, budget: Budget, encoding, errors, newline):
    limited = FullDiskRaw(raw, budget)
    buffered = io.BufferedRandom(limited) if "+" in mode else io.BufferedWriter(limited)
    return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding=encoding, errors=errors, newline=newline)


def _writing(mode: str) -> bool:
    return any(c in mode for c in "wax+")


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""  # no /proc: the fd's file is unknown, so it is not limited


def install(budget: Budget, under: Path) -> None:
    """Limit every write to a file under `under` (this process, until `uninstall`)."""
    root = str(Path(under).resolve())

    def limited_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None,
                     closefd=True, opener=None):
        if isinstance(file, int) or not _writing(mode) or not os.path.abspath(file).startswith(root):
            return REAL_OPEN(file, mode, buffering, encoding, errors, newline, closefd, opener)
        raw = io.FileIO(file, mode.replace("b", "").replace("t", ""), closefd, opener=opener)
        return _wrap(raw, mode, budget, encoding, errors, newline)

    def limited_fdopen(fd, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True):
        if not _writing(mode) or not _fd_path(fd).startswith(root):
            return REAL_FDOPEN(fd, mode, buffering, encoding, errors, newline, closefd)
        raw = io.FileIO(fd, mode.replace("b", "").replace("t", ""), closefd)
        return _wrap(raw, mode, budget, encoding, errors, newline)

    builtins.open, os.fdopen = limited_open, limited_fdopen


def uninstall() -> None:
    builtins.open, os.fdopen = REAL_OPEN, REAL_FDOPEN


@contextmanager
def disk_fills_after(nbytes: int, under: Path):
    """Within the block, the disk under `under` has room for `nbytes` more bytes."""
    budget = Budget(nbytes)
    install(budget, under)
    try:
        yield budget
    finally:
        uninstall()
