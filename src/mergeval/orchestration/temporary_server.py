"""Prefect's temporary API server, shared by the commands of one environment and kept for the next.

    lease = temporary_server.lease(env)   # this environment's server, started if none runs
    lease.wait_healthy(timeout_s)         # True once it answers at lease.url
    lease.release(stop=lease.started)     # bad input: a server started for nothing goes at once
    temporary_server.shutdown()           # a benchmark's cold run, a test session's end

Without PREFECT_API_URL, Prefect starts a temporary server for each command and stops it when
the command exits: importing its app costs ≈7 CPU-s (more on a busy 2-core box), every sweep,
re-run, search and test. Here the server (prefect_daemon.py) outlives the command that started
it, like the merge server: the next command of the same environment finds it up. It serves
what Prefect's own would (same app, same settings, no UI) and stops after
MERGEVAL_PREFECT_SERVER_IDLE_S seconds (300) with no command holding its lease; a command holds
one from the moment it finds the server to its exit, killed or not (a flock the kernel drops).

A server is named by what it serves: the Prefect home and the server's own settings (database,
…), this interpreter and Prefect's version. Its files (state, lock, lease, log) live in
<PREFECT_HOME>/mergeval-temporary-server/, which Prefect's home already keeps to its user.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IDLE_S = 300
_HELD: list[int] = []  # lease descriptors: open until this process exits


@dataclass
class Lease:
    port: int
    pid: int
    started: bool  # this command started the server (it was not running)
    fd: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_healthy(self, timeout_s: float) -> bool:
        import httpx

        deadline = time.monotonic() + timeout_s
        with httpx.Client() as client:
            while time.monotonic() < deadline and alive(self.pid):
                try:
                    if client.get(f"{self.url}/health", timeout=max(1.0, deadline - time.monotonic())).status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)  # after an error status too: not a busy loop against a starting server
        return False

    def release(self, stop: bool) -> None:
        """Let go of the server; with `stop`, stop it too (unless another server took its place)."""
        if stop:
            _stop(self.pid)
        if self.fd in _HELD:
            _HELD.remove(self.fd)
            os.close(self.fd)


def lease(env: dict) -> Lease:
    """This environment's server, started (with `env`) if none runs, leased until this process
    exits or the lease is released. The server may still be importing: see wait_healthy."""
    folder, key = where()
    with _locked(folder, key):
        state = _running(folder, key)
        started = state is None
        if started:
            state = _start(folder, key, env)
        fd = os.open(folder / f"{key}.lease", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)  # held until release() or exit: the server stays meanwhile
    _HELD.append(fd)
    return Lease(port=state["port"], pid=state["pid"], started=started, fd=fd)


def running_pid() -> int | None:
    """The pid of this environment's server, if one runs (none is started)."""
    folder, key = where()
    state = _running(folder, key)
    return state["pid"] if state else None


def shutdown() -> None:
    """Stop this environment's server if one runs, whoever holds it."""
    pid = running_pid()
    if pid:
        _stop(pid)


def where() -> tuple[Path, str]:
    """The folder of this environment's server files and its name there."""
    import prefect
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    served = {k: v for k, v in settings.to_environment_variables(exclude_unset=True).items()
              if k.startswith(("PREFECT_SERVER_", "PREFECT_API_DATABASE_"))
              and k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}  # a client's patience, not the server's
    home = Path(settings.home).expanduser().resolve()
    key = hashlib.sha256(json.dumps([sys.executable, prefect.__version__, str(home), sorted(served.items())])
                         .encode()).hexdigest()[:16]
    folder = home / "mergeval-temporary-server"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder, key


class _locked:
    """The folder's lock for `key`: reading the state and leasing, or starting, is one step."""

    def __init__(self, folder: Path, key: str):
        self.path = folder / f"{key}.lock"

    def __enter__(self):
        self.file = open(self.path, "a")
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self.file.close()


def _running(folder: Path, key: str) -> dict | None:
    """The state of a server that is alive and listening, else None."""
    try:
        state = json.loads((folder / f"{key}.json").read_text())
        port, pid = int(state["port"]), int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not alive(pid):
        return None
    try:  # a server still importing its app already listens: the connection waits in its backlog
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return None
    return {"port": port, "pid": pid}


def _start(folder: Path, key: str, env: dict) -> dict:
    idle = os.environ.get("MERGEVAL_PREFECT_SERVER_IDLE_S", str(DEFAULT_IDLE_S))
    proc = subprocess.Popen([sys.executable, "-m", "mergeval.orchestration.prefect_daemon", str(folder), key, idle],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    line = proc.stdout.readline()  # {"port", "pid"} as soon as the port is bound; the rest is the server's
    proc.stdout.close()
    proc.wait()
    try:
        state = json.loads(line)
    except ValueError:
        raise ServerDidNotStart(f"Prefect's temporary server did not start (exit status {proc.returncode})")
    tmp = folder / f"{key}.json.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(folder / f"{key}.json")
    return state


class ServerDidNotStart(RuntimeError):
    pass


def _stop(pid: int, wait_s: float = 30) -> None:
    """SIGTERM the server `pid` if it is this environment's, and wait for it to go."""
    folder, key = where()
    with _locked(folder, key):
        state = _running(folder, key)
        if not state or state["pid"] != pid:
            return
        os.kill(pid, signal.SIGTERM)
        (folder / f"{key}.json").unlink(missing_ok=True)
    gone(pid, wait_s)


def gone(pid: int, wait_s: float) -> bool:
    """Whether `pid` has exited, waiting up to `wait_s` seconds for it."""
    deadline = time.monotonic() + wait_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or its pid is someone else's now
        return False
    try:  # a server that exited but was not reaped yet (a container whose init reaps nothing)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
