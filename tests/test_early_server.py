"""The temporary Prefect server that `mergeval sweep` starts before its input checks
(early_server.py): it serves the sweep, and it never outlives the command, good input or bad.
"""

from __future__ import annotations

import os
import subprocess
import time

from hostile_world import make_world
from sweep_helpers import make_toy_world, shrink_world, sweep_cmd, sweep_env


def run_in_own_group(ws, *args):
    """Run `mergeval sweep` as the leader of a new process group, so that whatever it starts
    (the server, merge workers) can be looked for after it exits."""
    proc = subprocess.Popen(sweep_cmd(ws, *args), env=sweep_env(ws), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def group_is_empty(pgid: int, wait_s: float = 5.0) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_bad_input_kills_the_server_it_started(tmp_path):
    ws = make_world(tmp_path)
    (ws / "merge_configs" / "mine" / "bad.yaml").write_text("merge_method: linaer\nmodels:\n  - model: zoo/base\n")
    proc, pgid = run_in_own_group(ws, "merge_configs/mine", "--items", "items/mine")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "bad.yaml:1: unknown merge_method 'linaer'" in proc.stderr
    assert "temporary server" not in proc.stderr  # nothing between the user and their problems
    assert group_is_empty(pgid), "a server started for the sweep outlived it"


def test_a_sweep_runs_on_the_early_server_and_stops_it(tmp_path):
    ws = shrink_world(make_toy_world(tmp_path / "ws"), ("ties_d08.yaml",), items_per_skill=2)
    proc, pgid = run_in_own_group(ws)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # Prefect's own start-up line would mean it ignored the server that was ready for it.
    assert "Starting temporary server" not in proc.stderr
    assert "View at" not in proc.stderr  # that server serves no UI: no links to nowhere
    assert "Finished in state Completed()" in proc.stderr
    assert group_is_empty(pgid), "the sweep's server outlived it"
    # The same command again finds every answer and grade saved: it ranks without starting
    # Prefect's temporary server (nobody could watch it), and says what it found.
    again, pgid = run_in_own_group(ws)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "Finished in state" not in again.stderr  # no flow run: nothing to show in a UI
    assert "already saved" in again.stdout and "report: " in again.stdout
    assert group_is_empty(pgid)


def test_a_configured_server_is_noticed_without_importing_prefect(tmp_path, monkeypatch):
    """A re-run skips Prefect only where no server can be configured; any sign of one, and
    Prefect itself is asked (so a re-run still shows in the user's UI)."""
    from mergeval.orchestration.early_server import server_may_be_configured

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    (work / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert not server_may_be_configured(work)

    (home / "profiles.toml").write_text('active = "local"\n[profiles.local]\nPREFECT_API_URL = "http://box:4200/api"\n')
    assert server_may_be_configured(work)
    (home / "profiles.toml").unlink()
    (work / "pyproject.toml").write_text("[tool.prefect]\napi.url = 'http://box:4200/api'\n")
    assert server_may_be_configured(work)
    (work / "pyproject.toml").unlink()
    monkeypatch.setenv("PREFECT_API_URL", "http://box:4200/api")
    assert server_may_be_configured(work)
