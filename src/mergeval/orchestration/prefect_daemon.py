"""The temporary Prefect server's own process: Prefect's API app under uvicorn, detached, until idle.

    python -m mergeval.orchestration.prefect_daemon FOLDER KEY IDLE_S

Started by temporary_server.py (the client side, which says why) and never by hand. It binds a
free port on 127.0.0.1, forks, and the parent prints {"port", "pid"} and exits: the starting
client knows where the server will answer before its imports are done, and a request sent
meanwhile waits in the listen backlog. The child detaches (its own session: a sweep killed
with its process group leaves it running), writes its output to FOLDER/KEY.log, and serves the
same app, with the same settings, as Prefect's own temporary server
(prefect.server.api.server.SubprocessASGIServer) does.

It stops when no command has held its lease (FOLDER/KEY.lease, a shared flock each client
keeps for its whole life, so a killed client lets go too) for IDLE_S seconds in a row, or on
SIGTERM. The lease is checked under FOLDER/KEY.lock, the lock a client holds while it reads
FOLDER/KEY.json and takes its lease: a client either leases a server that will stay, or finds
no server and starts one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    folder, key, idle_s = Path(argv[0]), argv[1], float(argv[2])
    listener = listening_socket()
    child = os.fork()
    if child:
        print(json.dumps({"port": listener.getsockname()[1], "pid": child}), flush=True)
        os._exit(0)
    os.setsid()
    os.chdir("/")  # hold no test's or user's folder open
    log = os.open(folder / f"{key}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd in (1, 2):  # off the starting client's pipe: it reads one line, not to the end
        os.dup2(log, fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)

    import uvicorn
    from prefect.server.api.server import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="error", lifespan="on",
                                               timeout_graceful_shutdown=5))
    threading.Thread(target=_stop_when_unleased, args=(server, folder, key, idle_s), daemon=True).start()
    threading.Thread(target=_build_routes, args=(server, listener.getsockname()[1]), daemon=True).start()
    # Idle: the watcher has removed the state file. SIGTERM: uvicorn shuts down, then re-raises
    # it, so nothing runs after this; the state file left names a dead pid, which clients read
    # as no server (temporary_server.shutdown removes it itself).
    server.run(sockets=[listener])


def listening_socket() -> socket.socket:
    """A free port on 127.0.0.1, listening. IPPROTO_TCP, not the default 0: asyncio turns Nagle
    off (TCP_NODELAY) only on accepted sockets that say so. With Nagle on, uvicorn's two writes
    per response (head, body) waited for the client's delayed ACK: every request after the first
    on a kept-alive connection took ≈44 ms instead of ≈1.5."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    return listener


def _build_routes(server, port: int) -> None:
    """Ask once, as soon as the server serves, for a path no route has. FastAPI builds each
    router's routes on the first request that reaches it (≈0.3–0.5 s of this process's CPU), and
    a request that matches nothing reaches them all: the sweep's first call (its flow run's
    version check) waited for that."""
    import http.client

    while not server.started and not server.should_exit:
        time.sleep(0.01)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/mergeval-builds-its-routes")
        connection.getresponse().read()
        connection.close()
    except OSError:  # stopping already: nothing to build for
        pass


def _stop_when_unleased(server, folder: Path, key: str, idle_s: float) -> None:
    unleased_since = time.monotonic()
    while not server.should_exit:
        time.sleep(min(1.0, idle_s / 4))
        try:
            with open(folder / f"{key}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # no client is between reading the state and leasing
                if leased(folder / f"{key}.lease"):
                    unleased_since = time.monotonic()
                elif time.monotonic() - unleased_since >= idle_s:
                    _forget(folder, key)  # under the lock: the next client starts a server of its own
                    server.should_exit = True
        except OSError:  # its folder was removed (a Prefect home deleted): no client can find it again
            server.should_exit = True


def leased(path: Path) -> bool:
    """Whether some process holds a shared lock on `path` (a client of the server)."""
    with open(path, "a") as lease:
        try:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lease, fcntl.LOCK_UN)
        return False


def _forget(folder: Path, key: str) -> None:
    """Remove the state file if it still names this process (a newer server's is left alone)."""
    state = folder / f"{key}.json"
    try:
        if json.loads(state.read_text())["pid"] == os.getpid():
            state.unlink()
            (folder / f"{key}.log").unlink(missing_ok=True)
    except (OSError, ValueError, KeyError):
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
