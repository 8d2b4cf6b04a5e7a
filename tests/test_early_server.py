"""The temporary Prefect server that `mergeval sweep` asks for before its input checks
(early_server.py, temporary_server.py): it serves the sweep and stays for the next command of
the same Prefect home, held by a lease while any command uses it (killed or not), and idles
out after; bad input stops a server started for it at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from hostile_world import make_world
from sweep_helpers import copy_world, make_toy_world, shrink_world, sweep_cmd, sweep_env

from mergeval.orchestration.temporary_server import gone


def run_in_own_group(ws, *args, env=None):
    """Run `mergeval sweep` as the leader of a new process group, so that whatever it starts
    and does not mean to keep (merge workers) can be looked for after it exits."""
    proc = subprocess.Popen(sweep_cmd(ws, *args), env=env or sweep_env(ws), stdout=subprocess.PIPE,
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


def servers(home) -> dict[str, int]:
    """The temporary servers a Prefect home has on record: state file name → pid."""
    folder = home / "mergeval-temporary-server"
    return {p.name: json.loads(p.read_text())["pid"] for p in folder.glob("*.json")} if folder.exists() else {}


def test_bad_input_stops_the_server_it_started(tmp_path):
    ws = make_world(tmp_path)
    home = tmp_path / "home"  # a Prefect home of its own: no other test's server is there
    (ws / "merge_configs" / "mine" / "bad.yaml").write_text("merge_method: linaer\nmodels:\n  - model: zoo/base\n")
    proc, pgid = run_in_own_group(ws, "merge_configs/mine", "--items", "items/mine", env=sweep_env(ws, home))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "bad.yaml:1: unknown merge_method 'linaer'" in proc.stderr
    assert "temporary server" not in proc.stderr  # nothing between the user and their problems
    assert group_is_empty(pgid)
    assert servers(home) == {}, "a server started for bad input was left running"


def test_a_sweep_leaves_its_server_to_the_next_command(tmp_path):
    ws = shrink_world(make_toy_world(tmp_path / "ws"), ("ties_d08.yaml",), items_per_skill=2)
    home = tmp_path / "home"
    # Idle time long enough for any box: when the server goes once unleased is
    # test_a_killed_command_lets_go_of_the_server's part.
    env = {**sweep_env(ws, home), "MERGEVAL_PREFECT_SERVER_IDLE_S": "600"}
    proc, pgid = run_in_own_group(ws, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # Prefect's own start-up line would mean it ignored the server that was ready for it.
    assert "Starting temporary server" not in proc.stderr
    assert "View at" not in proc.stderr  # that server serves no UI: no links to nowhere
    assert "Finished in state Completed()" in proc.stderr
    assert group_is_empty(pgid)  # nothing of the sweep's own is left (merge children, ...)
    [pid] = servers(home).values()  # the server is not in the sweep's group: it stays
    # A second workspace with the same Prefect home sweeps on the same server.
    other = copy_world(ws, tmp_path / "other", with_state=False)
    again, _ = run_in_own_group(other, env=env)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "Finished in state Completed()" in again.stderr
    assert list(servers(home).values()) == [pid]
    stop = "from mergeval.orchestration import temporary_server; temporary_server.shutdown()"
    subprocess.run([sys.executable, "-c", stop], env=env, check=True, timeout=120)
    assert gone(pid, wait_s=30) and servers(home) == {}
    # The same command again finds every answer and grade saved: it ranks without asking for
    # a Prefect server at all (nobody could watch it), and says what it found.
    rerun, _ = run_in_own_group(ws, env=env)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert "Finished in state" not in rerun.stderr  # no flow run: nothing to show in a UI
    assert "already saved" in rerun.stdout and "report: " in rerun.stdout
    assert servers(home) == {}


LEASE_HOLDER = """
import os, sys, time
from mergeval.orchestration import temporary_server
lease = temporary_server.lease(dict(os.environ))
print(lease.pid, lease.started, flush=True)
assert lease.wait_healthy(120)
print("healthy", flush=True)
time.sleep(600)
"""


def test_a_killed_command_lets_go_of_the_server(tmp_path):
    env = {**sweep_env(tmp_path, tmp_path / "home"), "MERGEVAL_PREFECT_SERVER_IDLE_S": "2"}
    holders = [subprocess.Popen([sys.executable, "-c", LEASE_HOLDER], env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        first, second = [h.stdout.readline().split() for h in holders]
        assert first[0] == second[0] and {first[1], second[1]} == {"True", "False"}  # one started it
        pid = int(first[0])
        assert all(h.stdout.readline().strip() == "healthy" for h in holders)
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait()
        assert not gone(pid, wait_s=6)  # the other still holds it, well past the idle time
        holders[1].send_signal(signal.SIGKILL)
        holders[1].wait()
        assert gone(pid, wait_s=30)  # a killed holder's lease is dropped by the kernel
        assert servers(tmp_path / "home") == {}
    finally:
        for h in holders:
            h.kill()
            h.wait()


def test_a_server_whose_prefect_home_is_removed_stops(tmp_path):
    """No client can find a server whose state folder is gone (a deleted Prefect home, a test's
    removed temp folder): it stops, where its idle watcher used to die and leave it serving."""
    import shutil

    env = {**sweep_env(tmp_path, tmp_path / "home"), "MERGEVAL_PREFECT_SERVER_IDLE_S": "600"}
    holder = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(holder.stdout.readline().split()[0])
        assert holder.stdout.readline().strip() == "healthy"
        holder.kill()
        holder.wait()
        assert not gone(pid, wait_s=2)  # unleased, but its idle time (600 s) is far off
        shutil.rmtree(tmp_path / "home")
        assert gone(pid, wait_s=30)
    finally:
        holder.kill()
        holder.wait()


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


STARTING = """
import os
from mergeval.orchestration.early_server import prefect_server_starting
from prefect.settings import get_current_settings
with prefect_server_starting() as server:
    assert server.temporary
print(os.environ["PREFECT_API_URL"])
print("heartbeats:", get_current_settings().flows.heartbeat_frequency)
"""


def test_a_relative_prefect_home_is_where_the_server_keeps_its_database(tmp_path):
    """The server runs from / (it holds no folder open): the home it is given is made absolute."""
    env = {**os.environ, "PREFECT_HOME": "rel-home", "MERGEVAL_PREFECT_SERVER_IDLE_S": "2"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, "-c", STARTING], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("http://127.0.0.1:"), proc.stderr[-3000:]
    # a temporary server has no automation reading them; each flow run waited for their thread
    assert "heartbeats: None" in proc.stdout
    assert (tmp_path / "rel-home" / "prefect.db").is_file()  # migrated there, not in /rel-home
    [pid] = servers(tmp_path / "rel-home").values()
    assert gone(pid, wait_s=30)


def test_the_servers_connections_send_without_waiting_for_acks():
    """Nagle off on what the temporary server accepts: with it on, every request after the first
    on a kept-alive connection (all of a sweep's Prefect calls) waited ≈40 ms for a delayed ACK."""
    import asyncio
    import socket

    from mergeval.orchestration.prefect_daemon import listening_socket

    async def accepted_nodelay() -> int:
        seen = asyncio.get_running_loop().create_future()

        def on_connect(reader, writer):
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = listening_socket()
        server = await asyncio.start_server(on_connect, sock=listener)  # as uvicorn serves it
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname())
            nodelay = await asyncio.wait_for(seen, 30)
            writer.close()
        return nodelay

    assert asyncio.run(accepted_nodelay()) != 0
