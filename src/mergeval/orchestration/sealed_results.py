"""Prefect's persisted task results, checked before a sweep trusts them.

Each stage task returns a small summary (counts and seconds; the stage's real outputs live in
the workspace and are checked on their own). The flow persists it under
`.mergeval/prefect-results/<cache key>`, and a re-run whose outputs are complete reads it back
instead of running the task. Prefect 3.9 already treats a result file it cannot deserialize
(truncated, not JSON, a broken pickle) as a cache miss and runs the task again, silently; a
file that still deserializes but was altered would be trusted. So summaries are sealed with a
checksum, and `damaged` says what is wrong with a saved one before the flow relies on it.
"""

from __future__ import annotations

from pathlib import Path

from mergeval.core import store
from mergeval.core.hashing import content_hash


def sealed(summary: dict) -> dict:
    return store.seal(summary)


def damaged(storage: Path, key: str) -> str | None:
    """What is wrong with the saved result for `key`, or None (intact, or none saved: a miss)."""
    path = Path(storage) / key
    if not path.is_file():
        return None
    try:
        from prefect.results import ResultRecord

        summary = ResultRecord.deserialize(path.read_bytes()).result
    except Exception as e:  # noqa: BLE001 -- whatever a damaged file makes Prefect's reader raise
        return f"unreadable: {type(e).__name__}"
    if not isinstance(summary, dict):
        return "not a stage summary"
    if store.CHECKSUM not in summary:
        return None  # saved before summaries were sealed: trusted as it is
    summary = dict(summary)
    given = summary.pop(store.CHECKSUM)
    return None if given == content_hash(summary)[:16] else "its checksum does not match its content"
