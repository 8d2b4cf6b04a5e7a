"""The merge server's own process: imports torch and mergekit once, then forks a child per request.

    python -m mergeval.engine.merge_daemon SOCKET IDLE_S

Started by merge_server.py (the client side, which says why) and never by hand. It binds
SOCKET, detaches (the starting command returns once clients can connect, so a client that
connects while the imports still run simply waits in the backlog), imports, and serves each
connection in a handler forked from that state. A handler reads one request, forks the child
that runs it, answers {"pid", "server"} when the child starts and {"returncode"} when it ends,
and kills the child if its client goes away first (Ctrl-C, SIGKILL): no merge is left running
for nobody. After IDLE_S seconds with no request and no handler alive the server removes its
socket and exits.

The server and its handlers are single-threaded and never initialise CUDA, which is what
makes forking them safe.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import socket
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str]) -> None:
    path, idle_s = argv[0], float(argv[1])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
    except OSError:  # another client started a server here first: use that one
        sys.exit(0)
    listener.listen(64)
    if os.fork():
        os._exit(0)  # the starting client waits for this exit: the socket takes connections now
    os.setsid()
    os.chdir("/")  # hold no test's or user's folder open
    inode = os.stat(path).st_ino
    signal.signal(signal.SIGTERM, _exit_now)  # merge_server.shutdown(), or anyone's `kill`
    try:
        _import_once()
        _serve(listener, path, inode, idle_s)
    except SystemExit:  # SIGTERM: shutdown()
        pass
    except BaseException:  # its log (the traceback) stays for the client to show
        _unlink_if_ours(path, inode, (path,))
        raise
    _unlink_if_ours(path, inode, (path, path + ".log", path + ".lock"))


def _exit_now(signum, frame) -> None:
    sys.exit(0)


def _import_once() -> None:
    import mergekit.config  # noqa: F401  what every merge imports: the point of the server
    import mergekit.merge  # noqa: F401
    import mergekit.scripts.moe  # noqa: F401
    import torch  # noqa: F401

    from mergeval.engine import merge_worker  # noqa: F401


def _serve(listener: socket.socket, path: str, inode: int, idle_s: float) -> None:
    handlers: set[int] = set()
    last_busy = time.monotonic()
    while True:
        readable, _, _ = select.select([listener], [], [], 1.0)
        if readable:
            handlers.add(_fork_handler(listener))
        handlers -= _reaped(handlers)
        if handlers or readable:
            last_busy = time.monotonic()
        elif time.monotonic() - last_busy > idle_s:
            break
    _unlink_if_ours(path, inode, (path,))  # new clients start a new server from here on
    listener.setblocking(False)
    while True:  # a client that connected just before the unlink is still served
        try:
            handlers.add(_fork_handler(listener))
        except BlockingIOError:
            break


def _unlink_if_ours(path: str, inode: int, names: tuple[str, ...]) -> None:
    """Remove the socket (and its log and lock) unless a newer server has taken its name. A
    client holding the old lock at that moment may start a second server: its bind fails, and
    it exits (main)."""
    try:
        if os.stat(path).st_ino != inode:
            return
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def _reaped(pids: set[int]) -> set[int]:
    done = set()
    for pid in pids:
        if os.waitpid(pid, os.WNOHANG)[0]:
            done.add(pid)
    return done


def _fork_handler(listener: socket.socket) -> int:
    conn, _ = listener.accept()
    pid = os.fork()
    if pid:
        conn.close()
        return pid
    listener.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # only the server itself exits cleanly on it
    code = 1
    try:
        _handle(conn)
        code = 0
    finally:
        os._exit(code)


def _handle(conn: socket.socket) -> None:
    """One request: fork its child, say when it starts and how it ended."""
    reader = conn.makefile("rb")
    line = reader.readline()
    if not line:
        return
    request = json.loads(line)
    if "ping" in request:
        conn.sendall(json.dumps({"server": os.getppid()}).encode() + b"\n")
        return
    if "shutdown" in request:
        os.kill(os.getppid(), signal.SIGTERM)
        return
    handler = os.getpid()
    child = os.fork()
    if child == 0:
        conn.close()
        _die_with(handler)
        _child(request)
    conn.sendall(json.dumps({"pid": child, "server": os.getppid()}).encode() + b"\n")
    returncode = _wait(child, conn)
    if returncode is not None:
        conn.sendall(json.dumps({"returncode": returncode}).encode() + b"\n")


def _die_with(parent: int) -> None:
    """Linux: the kernel kills this child when its handler dies (killed, out of memory), so a
    merge never goes on for a client that can no longer hear of it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the handler's death leaves the merge to finish
        return
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _wait(pid: int, conn: socket.socket) -> int | None:
    """The child's exit status; None if the client went away meanwhile (the child is killed).
    Woken by either at once: a call's child is done in milliseconds, and a fixed poll added
    up to 0.2 s to every recipe check (a 300-check property test: 73 s instead of 1 s)."""
    exited = _exit_signal(pid)
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            readable, _, _ = select.select([conn] + ([exited] if exited is not None else []), [], [], 0.2)
            if conn in readable and not conn.recv(1, socket.MSG_PEEK):  # EOF: the client closed or died
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
    finally:
        if exited is not None:
            os.close(exited)


def _exit_signal(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits (Linux 5.3+); None elsewhere, where
    the exit is noticed by polling."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _child(request: dict) -> None:
    """In the forked process: become the merge (or call) the request asks for, then exit with its status."""
    returncode = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
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


if __name__ == "__main__":
    main(sys.argv[1:])
