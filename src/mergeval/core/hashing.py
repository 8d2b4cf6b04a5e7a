"""Stable content hashes: every cache key in mergeval is built from these, never from time."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal data always hashes equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(obj: Any) -> str:
    """sha256 hex of the canonical JSON of `obj` (str and bytes are hashed as they are)."""
    if isinstance(obj, bytes):
        data = obj
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
    else:
        data = canonical_json(obj).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def memo_digest(text: str) -> bytes:
    """A short digest that stands for `text` in a per-process memo (a line already checked, an
    answer already keyed): the memo keeps 16 bytes instead of a text that can be long."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
