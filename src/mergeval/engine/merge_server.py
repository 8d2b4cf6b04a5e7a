"""Merges forked from one pre-imported process: torch and mergekit load once, not once per merge.

    from mergeval.engine import merge_server
    returncode, log = merge_server.run_merge(["CONFIG.yaml", "OUT_DIR", "--seed", "0"])
    checked = merge_server.call(check_recipe, doc, workspace)   # anything that needs mergekit
    merge_server.warm()                                          # start importing now: merges follow

A merge needs a process of its own: mergekit's loader cache, random seed, thread count and
logging are process-global (merge_worker.py). But a fresh interpreter spends ≈10 s of a 2-core
machine importing torch, transformers, peft and mergekit before it merges anything, more than a
toy merge itself takes. So a server process (merge_daemon.py) imports them once and forks a
child per merge from that state, which no merge has touched: each merge still runs in a process
of its own, minus the imports.

The server outlives the command that started it by MERGEVAL_MERGE_SERVER_IDLE_S seconds (300)
of idleness, so the next command (a re-run, a validate, the next sweep, the next trial of a
search) finds mergekit imported; a client that goes away mid-merge (Ctrl-C, SIGKILL) still
takes its merge with it. The recipe checks need mergekit's schema and registry, so they run in
the server too (`call`): a sweep's own process never imports mergekit.

A server serves the environment it was started with (modules read HF_HOME and the like when
imported) and the code it imported: its socket is named by both, so a changed environment or
an edited mergeval gets a server of its own, and the stale one idles out. What a sweep's
process sets for itself as it runs (Prefect's settings, torch's cache folder) does not count
(_NOT_IMPORT_ENV). Sockets live in a folder only their user can open (a request runs code).
MERGEVAL_MERGE_FORK=0 runs each merge in a fresh interpreter instead, and calls in this process.

Protocol, one JSON object per line over the socket: the client sends {"argv", "log", "cwd",
"env"} (or, for a call, {"call", "result", ...}: pickle files of the function with its
arguments, and of what it returned or raised); the server answers {"pid", "server"} when the
child starts and {"returncode"} when it ends; the child's stdout and stderr go to the file "log".
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

WORKER = "mergeval.engine.merge_worker"
DEFAULT_IDLE_S = 300


def forking_enabled() -> bool:
    return os.environ.get("MERGEVAL_MERGE_FORK", "1") != "0"


def run_merge(argv: list[str]) -> tuple[int, str]:
    """Run merge_worker.main(argv) in a process of its own; its exit status and its output."""
    if not forking_enabled():
        proc = subprocess.run([sys.executable, "-m", WORKER, *argv], capture_output=True, text=True)
        return proc.returncode, proc.stderr
    returncode, output = _request({"argv": argv})
    return (-9, output + "\nthe merge server process died") if returncode is None else (returncode, output)


def call(fn, *args):
    """fn(*args) in a child of the server, whose imports (mergekit's above all) are done: what
    it returns, or the exception it raised. `fn` must be a module-level function and the
    arguments and result picklable. Here, in this process, when forking is off."""
    if not forking_enabled():
        return fn(*args)
    with tempfile.TemporaryDirectory(prefix="mergeval-call-") as tmp:
        given, result = Path(tmp) / "call.pickle", Path(tmp) / "result.pickle"
        given.write_bytes(pickle.dumps((fn, args)))
        returncode, output = _request({"call": str(given), "result": str(result)})
        if returncode != 0 or not result.exists():
            raise ServerDied(f"{fn.__qualname__} died in the merge server's child "
                             f"(exit status {returncode}):\n{output[-3000:]}")
        outcome = pickle.loads(result.read_bytes())
    if outcome[0] == "raised":
        raise outcome[1]
    return outcome[1]


def warm() -> None:
    """Start a server now, if none is running for this environment, so that its imports run
    while this process does other things (a sweep: Prefect's start) instead of when the first
    merge asks for it."""
    if forking_enabled():
        with _connected(socket_path()):
            pass


def server_pid() -> int | None:
    """The pid of the server for this environment, if one is running (none is started)."""
    try:
        with _connection(socket_path()) as conn:
            return int(_send(conn, {"ping": True})[0]["server"])
    except (OSError, KeyError, ValueError):
        return None


def shutdown(path: str | None = None) -> None:
    """Stop the server for this environment (or the one at `path`), if one runs (a benchmark's
    first run, a test session's end); merges in progress finish for their clients."""
    path = path or socket_path()
    try:
        with _connection(path) as conn:
            _send(conn, {"shutdown": True}, answers=0)
    except OSError:
        return
    deadline = time.monotonic() + 30
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


class ServerDied(RuntimeError):
    """The server, or the child running a call, died before it answered (killed, out of memory)."""


# Set in the client's process after its server started, and read by nothing the server imports:
# Prefect's settings (a sweep sets its API URL as it starts), the cache folder torch sets for
# itself when it first compiles (its server's torch sets its own), the test pytest is in, how
# long a server waits for work (given to it on its command line), and a terminal's size (which
# some shells export and pytest removes).
_NOT_IMPORT_ENV = ("PREFECT_", "TORCHINDUCTOR_CACHE_DIR", "PYTEST_CURRENT_TEST", "MERGEVAL_MERGE_SERVER_IDLE_S",
                   "LINES", "COLUMNS")


def _import_env(env: dict) -> dict:
    """What of an environment a server depends on, as its modules were imported under it."""
    return {k: v for k, v in env.items() if not k.startswith(_NOT_IMPORT_ENV)}


def socket_path() -> str:
    """This environment's and this code's server: a name that changes with either."""
    stamp = hashlib.sha256(json.dumps([sys.executable, sorted(_import_env(dict(os.environ)).items()),
                                       _code_stamp()]).encode()).hexdigest()[:16]
    return str(_private_folder() / f"merge-{stamp}.sock")


@functools.cache
def _code_stamp() -> list:
    """Sizes and times of the code a server imports: mergeval's files, and the installed
    mergekit and torch (an upgrade, or an edit of a merge method, gets a new server). Once per
    process: its code is what it imported when it started, and every request would stat the
    whole package again."""
    import mergeval

    files = sorted(Path(mergeval.__file__).parent.rglob("*.py"))
    for package in ("mergekit", "torch"):
        spec = importlib.util.find_spec(package)
        if spec and spec.origin:
            files.append(Path(spec.origin))
    return [(str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files]


def _private_folder() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    if len(base) > 60:  # a socket's path has room for about 100 bytes
        base = "/tmp"
    folder = Path(base) / f"mergeval-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RuntimeError(f"{folder} must belong to you alone (mode 700): whoever can open it can run "
                           "code as you through the merge server; remove it or chmod 700 it")
    return folder


@contextmanager
def _connection(path: str):
    """A connection to the server at `path`, if one listens there (none is started)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        yield conn
    finally:
        conn.close()


@contextmanager
def _connected(path: str):
    """A connection to the server at `path`, started first if none answers."""
    conn = _connect_or_start(path)
    try:
        yield conn
    finally:
        conn.close()  # mid-request (an interrupted client): the server kills the request's child


def _connect_or_start(path: str) -> socket.socket:
    for _ in range(3):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            return conn
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            _start(path)
    raise ServerDied(f"no merge server answers at {path}:\n{_server_log(path)}")


def _start(path: str) -> None:
    """Start a server at `path` unless another client just did; a socket nobody listens on
    any more (its server was killed) is removed first."""
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with _connection(path):
                return  # started by another client meanwhile
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        Path(path).unlink(missing_ok=True)
        idle = os.environ.get("MERGEVAL_MERGE_SERVER_IDLE_S", str(DEFAULT_IDLE_S))
        with open(path + ".log", "w") as log:  # returns once the socket takes connections
            subprocess.run([sys.executable, "-m", "mergeval.engine.merge_daemon", path, idle],
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def _server_log(path: str) -> str:
    try:
        return Path(path + ".log").read_text(encoding="utf-8", errors="replace")[-3000:]
    except OSError:
        return ""


def _send(conn: socket.socket, request: dict, answers: int = 1) -> list[dict]:
    conn.sendall(json.dumps(request).encode() + b"\n")
    reader = conn.makefile("rb")
    lines = [reader.readline() for _ in range(answers)]
    return [json.loads(line) for line in lines if line]


def _request(request: dict) -> tuple[int | None, str]:
    """Send one request and wait for its child: (exit status or None if the server or the
    request's handler died, output)."""
    path = socket_path()
    fd, log = tempfile.mkstemp(prefix="mergeval-merge-", suffix=".log")
    os.close(fd)
    try:
        with _connected(path) as conn:
            try:
                answers = _send(conn, {**request, "log": log, "cwd": os.getcwd(), "env": dict(os.environ)}, answers=2)
            except ConnectionError:  # reset: the server died with this request still queued
                answers = []
        output = Path(log).read_text(encoding="utf-8", errors="replace")
    finally:
        os.unlink(log)
    if len(answers) < 2:  # the server died before answering, or the request's handler did
        return None, output + _server_log(path)
    return int(answers[1]["returncode"]), output
