"""One sweep per workspace at a time: a second one refuses at once with a clear message.

An advisory flock on .mergeval/sweep.lock: the kernel drops it when the holder dies, even by
SIGKILL, so a crashed sweep never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path


class WorkspaceBusy(RuntimeError):
    pass


@contextmanager
def workspace_lock(state: Path, what: str = "sweep"):
    state.mkdir(parents=True, exist_ok=True)
    path = state / "sweep.lock"
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise WorkspaceBusy(
                f"another mergeval run is using this workspace ({holder}); wait for it to finish "
                f"or stop it — caches are shared and two runs at once would duplicate work"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"what": what, "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
