"""Reading one of the user's text files (a recipe, an item, judge settings) defensively.

    text, problems = read_text_file(path, "an item", inside=suite_folder)

Every way a file can be unfit becomes a Problem naming the file (and the line, where there
is one) instead of a traceback, a hang or a memory blow-up:
- not a regular file: a folder named like one, a FIFO (reading it would block forever), a
  broken link, or a link that leads outside `inside` (a shared suite or recipe folder must not
  be able to pull in ~/.ssh/id_rsa or /etc/passwd through a link: copy the file in instead);
- larger than MAX_BYTES: a recipe or an item is a few KB, so a bigger file is the wrong file
  (a model shard, a log), refused before it is read into memory;
- not UTF-8: UTF-16/32 (with a byte order mark, or without one: then every other byte is
  NUL), NUL bytes (binary junk), or a byte that is not UTF-8 (Latin-1, Windows-1252): the
  message names the line and the likely encoding.
What must work does: a UTF-8 byte order mark is dropped and CRLF / CR line ends become LF,
so a file saved by Notepad parses exactly like the same file saved on Linux.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mergeval.core.errors import Problem

MAX_BYTES = 1024 * 1024  # 1 MiB: far above any real recipe or item, far below trouble

_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"),
)


def link_problem(path: Path, inside: Path | None) -> Problem | None:
    """A problem when `path` is a link that is broken or leads outside `inside`."""
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target, or a loop of links
        return Problem(path, None, f"broken link (to {os.readlink(path)}): nothing to read")
    if inside is not None and not target.is_relative_to(inside.resolve()):
        return Problem(path, None, f"a link to {target}, outside {inside}: links out of the folder "
                                   "are not followed (copy what it points to in instead)")
    return None


def read_text_file(path: Path, what: str, inside: Path | None = None) -> tuple[str | None, list[Problem]]:
    """(text with LF line ends, []) or (None, [the problem]) for one recipe / item / settings file."""
    bad = link_problem(path, inside)
    if bad:
        return None, [bad]
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, [Problem(path, None, "file not found")]
    except OSError as e:
        return None, [Problem(path, None, f"cannot read: {e.strerror or e}")]
    if stat.S_ISDIR(st.st_mode) and path.is_symlink():
        return None, [Problem(path, None, f"a link to the folder {path.resolve()}: links to folders are "
                                          "not followed (copy the files in, or name the folder itself)")]
    if stat.S_ISDIR(st.st_mode):
        return None, [Problem(path, None, f"a folder named like {what} file: rename it, or move {what} out of it")]
    if not stat.S_ISREG(st.st_mode):
        return None, [Problem(path, None, f"not a regular file (a pipe or a device?), so not {what}")]
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # never more: a 50 GB file costs what a 1 MiB one does
    except OSError as e:
        return None, [Problem(path, None, f"cannot read: {e.strerror or e}")]
    if len(raw) > MAX_BYTES:  # the line where it passes the limit, as every other problem has one
        return None, [Problem(path, raw.count(b"\n", 0, MAX_BYTES) + 1,
                              f"{max(st.st_size, len(raw)):,} bytes: {what} file is at most "
                              f"{MAX_BYTES // 1024 // 1024} MiB, and this line passes it; is this the right file?")]
    text, problem = decode(raw, path)
    return (text, []) if problem is None else (None, [problem])


def decode(raw: bytes, path: Path) -> tuple[str | None, Problem | None]:
    """UTF-8 (a byte order mark allowed) with LF line ends, or the problem with its line."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return None, Problem(path, 1, f"the file is {name} (it starts with a {name} byte order mark); "
                                          "save it as UTF-8")
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        return None, Problem(path, line, "NUL byte in the text: a binary file, or UTF-16 without a "
                                         "byte order mark? save it as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - raw.rfind(b"\n", 0, e.start)
        hint = " (Latin-1 or Windows-1252?)" if raw[e.start] >= 0x80 else ""
        return None, Problem(path, line, f"not UTF-8: byte 0x{raw[e.start]:02x} at column {column}{hint}; "
                                         "save the file as UTF-8")
    return text.replace("\r\n", "\n").replace("\r", "\n"), None
