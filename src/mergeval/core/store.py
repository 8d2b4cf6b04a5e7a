"""Crash-safe files: whole files appear atomically, per-item results are appended as they finish.

A reader never sees half a file: we write to a temporary name in the same folder and
os.replace() it into place. JSON-lines stores are append-only; a line cut short by a kill
is ignored on read (it is simply computed again).

Cache stores (answers, grades) are *sealed*: each record carries a checksum of its own content,
so a record that still parses but was altered on disk (a flipped byte, a bad sector) is caught
on read and computed again instead of trusted. A disk that fills up mid-write raises DiskFull,
which says where and how much room is left; what was written before it is kept.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mergeval.core.hashing import content_hash, file_hash, memo_digest

MARKER = ".mergeval-complete"  # written last into a finished stage output folder
CHECKSUM = "_sha256"  # a sealed record's hash of its own content (first 16 hex digits)
LOG = logging.getLogger("mergeval.core.store")


class DiskFull(OSError):
    """ENOSPC (or a quota) while writing a stage output; the message says where and how much is free."""


def human_bytes(n: float) -> str:
    """1.20 GiB, 340.0 MiB, 12.0 KiB: sizes in messages people read."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GiB" else f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def free_space(path: Path) -> str:
    """Free space on the disk holding `path`, for messages ("1.20 GiB", or "unknown")."""
    for where in (path, *path.parents):
        if where.exists():
            st = os.statvfs(where)
            return human_bytes(st.f_bavail * st.f_frsize)
    return "unknown"


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def _disk_full_names(path: Path):
    """Turn a bare ENOSPC into DiskFull naming the file being written and the space left."""
    try:
        yield
    except OSError as e:
        if not is_disk_full(e) or isinstance(e, DiskFull):
            raise
        raise DiskFull(e.errno, f"disk full while writing {path}: {free_space(path)} free; "
                                "free some space and run the same command again") from e


def write_atomic(path: Path, text: str) -> None:
    with _disk_full_names(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # a disk-full or killed write leaves no temp file
            raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def seal(record: dict) -> dict:
    return {**record, CHECKSUM: content_hash(record)[:16]}


def _lines(path: Path) -> Iterator[tuple[int, dict | None]]:
    """(line number, record without its checksum, or None if damaged) per complete line.

    A torn last line (a kill or a full disk mid-write) is not a line yet and is skipped. A
    record without a checksum is accepted only before the first sealed one: files written
    before checksums existed stay readable, while a damaged checksum field is still caught.
    """
    if not path.exists():
        return
    sealed_seen = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                return
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict) and CHECKSUM in record:
                sealed_seen = True
                given = record.pop(CHECKSUM)
                digest = memo_digest(line)
                if digest not in _VERIFIED:
                    if given != content_hash(record)[:16]:
                        record = None
                    else:
                        _remember_verified(digest)
            elif sealed_seen or not isinstance(record, dict):
                record = None
            yield n, record


# Digests of sealed lines this process has already checked. A sweep reads each answers and
# grades file several times (what is left, the grades' keys, the ranking, the unscored count):
# re-checking a line re-dumps its record as canonical JSON, most of a re-run's reading time.
# A line's check depends on its text alone, so the same text passes again; a changed byte is a
# new digest and is checked in full. Digests, not lines: answers can be long.
_VERIFIED: set[bytes] = set()
_VERIFIED_MAX = 500_000  # ≈ 40 MB of digests; then forgotten, and checked again as they are read


def _remember_verified(digest: bytes) -> None:
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED.add(digest)


def read_jsonl(path: Path) -> Iterator[dict]:
    """Every complete, intact record (checksums removed); torn or damaged lines are skipped."""
    for _, record in _lines(path):
        if record is not None:
            yield record


def repair_jsonl(path: Path) -> list[int]:
    """Make a sealed cache store whole before a stage appends to it; returns damaged line numbers.

    Damaged lines (checksum mismatch, not JSON) are dropped so their items are computed again,
    and a torn tail (a kill or a full disk mid-write) is cut off. The file is rewritten
    atomically, and only when one of the two is found.
    """
    if not path.exists() or path.stat().st_size == 0:
        return []
    lines = list(_lines(path))
    damaged = [n for n, record in lines if record is None]
    if damaged or not _ends_with_newline(path):
        if damaged:
            LOG.warning("%s: %d damaged record(s) at line(s) %s: dropped, to be computed again",
                        path, len(damaged), ", ".join(map(str, damaged)))
        kept = [seal(r) for _, r in lines if r is not None]
        write_atomic(path, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in kept))
    return damaged


def append_jsonl(path: Path, records: list[dict], *, sealed: bool = False) -> None:
    """Append whole lines and fsync, so a finished item survives a kill right after.

    sealed: each record carries a checksum of its content (cache stores; never files people
    edit by hand, such as calibration labels, where an edit would read as damage).
    """
    if not records:
        return
    data = "".join(json.dumps(seal(r) if sealed else r, sort_keys=True, ensure_ascii=False) + "\n"
                   for r in records)
    with _disk_full_names(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            if f.tell() > 0 and not _ends_with_newline(path):
                f.write("\n")  # end a torn line left by a kill so the new record starts clean
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def is_complete(folder: Path) -> bool:
    """Marker present and every file it lists still there at its recorded size (cheap: stat only)."""
    return damage(folder, full=False) is None


def damage(folder: Path, *, full: bool = True) -> str | None:
    """What is wrong with a finished folder, or None when it is intact.

    full=False compares sizes (catches truncation, for free); full=True also re-hashes every
    listed file (catches flipped bytes; costs one read of the files, so it is done where they
    are about to be read anyway: a cached merge handed to the answer stage). A marker written
    before file lists existed is trusted as it is.
    """
    marker = folder / MARKER
    if not marker.is_file():
        return "not finished (no completion marker)"
    try:
        files = json.loads(marker.read_text(encoding="utf-8")).get("files", {})
        listed = {name: (int(f["size"]), str(f["sha256"])) for name, f in files.items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return "its completion marker is damaged"
    for name, (size, sha) in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {size} when built"
        if full and file_hash(path) != sha:
            return f"{name} does not match its hash from when it was built"
    return None


def mark_complete(folder: Path, info: dict) -> None:
    """The marker is written last: a folder without it is never treated as finished.

    It lists every file's size and sha256 (hashed now, while the files are fresh in the page
    cache), except README.md, which the model card replaces after each run.
    """
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_hash(p)}
             for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name not in (MARKER, "README.md")}
    write_json(folder / MARKER, {**info, "files": files})


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
