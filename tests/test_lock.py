"""Two runs on one workspace: the second refuses at once; a killed holder frees the lock."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from mergeval.core.lock import WorkspaceBusy, workspace_lock

HOLD = """
import sys, time
from pathlib import Path
from mergeval.core.lock import workspace_lock
with workspace_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_run_refuses_with_the_holder_named(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkspaceBusy) as err:
            with workspace_lock(tmp_path):
                pass
        assert f'"pid": {holder.pid}' in str(err.value)
        holder.send_signal(signal.SIGKILL)  # a crashed sweep leaves no stale lock
        holder.wait()
        with workspace_lock(tmp_path):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
