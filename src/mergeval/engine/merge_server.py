"""Merges forked from one pre-imported process: torch and mergekit load once per sweep, not once per merge.

    from mergeval.engine import merge_server
    returncode, log = merge_server.run_merge(["CONFIG.yaml", "OUT_DIR", "--seed", "0"])
    checked = merge_server.call(check_recipe, doc, workspace)   # anything that needs mergekit
    merge_server.warm()                                          # start importing now: merges follow

A merge needs a process of its own: mergekit's loader cache, random seed, thread count and
logging are process-global (merge_worker.py). But a fresh interpreter spends ≈7 s of a 2-core
machine importing torch, transformers, peft and mergekit before it merges anything, more than a
toy merge itself takes. So one server process (`python -m mergeval.engine.merge_server`)
imports them once, and forks a child per merge from that state, which no merge has touched: each
merge still runs in a process of its own, minus the imports. The server is single-threaded and
never initialises CUDA, which is what makes forking it safe.

The recipe checks need mergekit's schema and registry, so they run in the server too (`call`):
a sweep's own process then never imports mergekit, and a first sweep pays for the import once,
on the other core, while Prefect starts.

A server serves the environment it was started with (modules read HF_HOME and the like when
imported), so a changed os.environ gets a new server; what a sweep's process sets for itself
as it runs (Prefect's settings, torch's cache folder) does not count (_NOT_IMPORT_ENV). The
server exits when its client does (its stdin closes), killing a merge in progress. MERGEVAL_MERGE_FORK=0 runs each merge in a fresh
interpreter instead, as before.

Protocol, one JSON object per line: the client sends {"argv", "log", "cwd", "env"} (or, for a
call, {"call", "result", ...}: pickle files of the function with its arguments, and of what it
returned or raised); the server answers {"pid"} when the child starts and {"returncode"} when it
ends; the child's stdout and stderr go to the file "log".
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

WORKER = "mergeval.engine.merge_worker"


def forking_enabled() -> bool:
    return os.environ.get("MERGEVAL_MERGE_FORK", "1") != "0"


def run_merge(argv: list[str]) -> tuple[int, str]:
    """Run merge_worker.main(argv) in a process of its own; its exit status and its output."""
    if not forking_enabled():
        proc = subprocess.run([sys.executable, "-m", WORKER, *argv], capture_output=True, text=True)
        return proc.returncode, proc.stderr
    return _on_a_server(lambda server: server.merge(argv))


def call(fn, *args):
    """fn(*args) in a child of the server, whose imports (mergekit's above all) are done: what
    it returns, or the exception it raised. `fn` must be a module-level function and the
    arguments and result picklable. Here, in this process, when forking is off."""
    if not forking_enabled():
        return fn(*args)
    outcome = _on_a_server(lambda server: server.call(fn, args))
    if outcome[0] == "raised":
        raise outcome[1]
    return outcome[1]


def _on_a_server(use):
    """use(an idle server, or a new one), then give it back for the next request."""
    server = _take_server()
    try:
        result = use(server)
    except BaseException:
        server.close()  # its child is killed with it: an interrupted build leaves nothing running
        raise
    _give_back(server)
    return result


def warm() -> None:
    """Start a server now, if none is idle, so that its imports run while this process does
    other things (a sweep: Prefect's start) instead of when the first merge asks for it."""
    if forking_enabled():
        _give_back(_take_server())


class ServerDied(RuntimeError):
    """The server, or the child running a call, died before it answered (killed, out of memory)."""


# Set in the client's process after its server started, and read by nothing the server imports:
# Prefect's settings (a sweep sets its API URL as it starts), the cache folder torch sets for
# itself when it first compiles (its server's torch sets its own), and the test pytest is in.
_NOT_IMPORT_ENV = ("PREFECT_", "TORCHINDUCTOR_CACHE_DIR", "PYTEST_CURRENT_TEST")


def _import_env(env: dict) -> dict:
    """What of an environment a server depends on, as its modules were imported under it."""
    return {k: v for k, v in env.items() if not k.startswith(_NOT_IMPORT_ENV)}


class _Server:
    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.proc = subprocess.Popen([sys.executable, "-m", "mergeval.engine.merge_server"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=self.env)

    def serves(self, env: dict) -> bool:
        return _import_env(self.env) == _import_env(env) and self.proc.poll() is None

    def merge(self, argv: list[str]) -> tuple[int, str]:
        returncode, output = self._run({"argv": argv})
        return (-9, output + "\nthe merge server process died") if returncode is None else (returncode, output)

    def call(self, fn, args: tuple) -> tuple:
        """("returned", value) or ("raised", exception) from fn(*args) in a child."""
        with tempfile.TemporaryDirectory(prefix="mergeval-call-") as tmp:
            given, result = Path(tmp) / "call.pickle", Path(tmp) / "result.pickle"
            given.write_bytes(pickle.dumps((fn, args)))
            returncode, output = self._run({"call": str(given), "result": str(result)})
            if returncode != 0 or not result.exists():
                raise ServerDied(f"{fn.__qualname__} died in the merge server's child "
                                 f"(exit status {returncode}):\n{output[-3000:]}")
            return pickle.loads(result.read_bytes())

    def _run(self, request: dict) -> tuple[int | None, str]:
        """Send one request and wait for its child: (exit status or None if the server died, output)."""
        fd, log = tempfile.mkstemp(prefix="mergeval-merge-", suffix=".log")
        os.close(fd)
        try:
            request = {**request, "log": log, "cwd": os.getcwd(), "env": dict(os.environ)}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            started, ended = self.proc.stdout.readline(), self.proc.stdout.readline()
            output = Path(log).read_text(encoding="utf-8", errors="replace")
        finally:
            os.unlink(log)
        if not started or not ended:  # the server itself died (killed, out of memory)
            self.close()
            return None, output
        return int(json.loads(ended)["returncode"]), output

    def close(self) -> None:
        """Stop the server and any merge it is running. Closing its stdin is what makes it kill
        the merge (serve's EOF path); a SIGKILL first would leave that merge running, orphaned."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_idle: list[_Server] = []
_lock = threading.Lock()


def _take_server() -> _Server:
    with _lock:
        env = dict(os.environ)
        for server in list(_idle):
            _idle.remove(server)
            if server.serves(env):
                return server
            server.close()  # started under another environment, or dead
    return _Server()


def _give_back(server: _Server) -> None:
    with _lock:
        _idle.append(server)


@atexit.register
def _close_all() -> None:
    for server in _idle:
        server.close()


# --- the server process -------------------------------------------------------------------------

def serve() -> None:
    import mergekit.config  # noqa: F401  what every merge imports: the point of the server
    import mergekit.merge  # noqa: F401
    import mergekit.scripts.moe  # noqa: F401
    import torch  # noqa: F401

    from mergeval.engine import merge_worker  # noqa: F401

    for line in iter(sys.stdin.buffer.readline, b""):
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        print(json.dumps({"returncode": _wait(pid)}), flush=True)


def _child(request: dict) -> None:
    """In the forked process: become the merge the request asks for, then exit with its status."""
    returncode = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the server's requests are not ours to read
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if "call" in request:
            returncode = _called(request)
        else:
            from mergeval.engine import merge_worker

            returncode = merge_worker.main(request["argv"]) or 0  # looked up now: tests may wrap it
    except SystemExit as e:
        returncode = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(returncode)


def _called(request: dict) -> int:
    """A call's child: run it, pickle what it returned or raised (a traceback's text when the
    exception itself will not pickle)."""
    fn, args = pickle.loads(Path(request["call"]).read_bytes())
    try:
        outcome = ("returned", fn(*args))
    except Exception as e:
        outcome = ("raised", e)
    try:
        data = pickle.dumps(outcome)
    except Exception:
        data = pickle.dumps(("raised", RuntimeError("".join(traceback.format_exception(outcome[1])))))
    Path(request["result"]).write_bytes(data)
    return 0


def _wait(pid: int) -> int:
    """The merge's exit status; if the client goes away meanwhile, kill the merge and exit."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        readable, _, _ = select.select([sys.stdin], [], [], 0.2)
        if readable and not sys.stdin.buffer.peek(1):  # EOF: the client died
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.exit(0)


if __name__ == "__main__":
    serve()
