"""`python -m <module>` for the tests, forked from an interpreter that has imported torch,
transformers and pandas already, instead of a fresh one that imports them again.

    proc = zygote.Popen([sys.executable, "-m", "mergeval.cli.main", ...], env=env, stdout=PIPE)
    done = zygote.run([sys.executable, "-m", "mergeval.cli.main", ...], env=env, capture_output=True)

The suite runs the CLI ≈ 100 times as a subprocess, and each one spent ≈ 3 of its CPU seconds
importing the same libraries: on two cores that was the largest share of `make test`. A
subprocess started here is still a process of its own (its pid, its exit status, its session
when asked, SIGKILL kills it), running the same `-m` module with its own argv, environment and
working folder; only the imports before it are shared. The child is forked by a server (one
per pytest worker, started on first use) that imported the libraries in an environment with
the same values of every variable they read at import: a command whose environment differs
there, or that is not `python -m`, is started the usual way (subprocess.Popen).

Not for tests of how a process starts: they start theirs themselves.
"""

from __future__ import annotations

import array
import atexit
import importlib
import json
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from mergeval.core.exiting import exit_without_teardown

PRELOAD = ("torch", "transformers.modeling_utils", "transformers.models.auto.tokenization_auto", "pandas")
# What the preloaded libraries (and the interpreter) read from the environment at import:
# a child whose values differ from the server's is started fresh instead. HOME and XDG_: where
# huggingface_hub puts its cache when HF_HOME is not set, decided when it is imported.
IMPORT_TIME_ENV = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_", "OMP_", "MKL_", "PYTHON",
                   "TOKENIZERS_", "CUDA", "LD_", "PANDAS_", "NUMPY", "OPENBLAS", "KMP_", "HOME", "XDG_")
_server: dict = {}  # this process's server: {"proc", "path", "env"}
_lock = threading.Lock()


def _import_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_ENV)}


def forkable(args, env: dict | None) -> bool:
    """`python -m` with this interpreter, and the server's values of what its imports read."""
    args = [str(a) for a in args]
    if os.environ.get("MERGEVAL_TESTS_NO_ZYGOTE") == "1" or args[:2] != [sys.executable, "-m"] or len(args) < 3:
        return False
    return _import_env(env if env is not None else dict(os.environ)) == _import_env(_started()["env"])


def _started() -> dict:
    """This pytest process's server, started on first use; it exits with this process."""
    with _lock:
        if not _server or _server["proc"].poll() is not None:
            env = dict(os.environ, OMP_NUM_THREADS="1")
            path = str(Path(tempfile.mkdtemp(prefix="mergeval-zygote-")) / "sock")
            proc = subprocess.Popen([sys.executable, "-m", "tests.zygote", path], env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, cwd=str(Path(__file__).resolve().parents[1]))
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"the zygote did not start (exit status {proc.wait()})")
            _server.update(proc=proc, path=path, env=env)
            atexit.register(_stop, proc, path)
        return _server


def _stop(proc: subprocess.Popen, path: str) -> None:
    proc.stdin.close()  # its end of file: the server exits (the children it forked run on)
    proc.wait(timeout=30)
    shutil.rmtree(Path(path).parent, ignore_errors=True)


class Popen(subprocess.Popen):
    """subprocess.Popen whose child is forked by the zygote where `forkable`, else started as usual."""

    def __init__(self, args, **kwargs):
        self._zygote = forkable(args, kwargs.get("env"))
        super().__init__(args, **kwargs)

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                       creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                       restore_signals, gid, gids, uid, umask, start_new_session, *rest):
        if not self._zygote:
            return super()._execute_child(args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                                          creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread,
                                          errwrite, restore_signals, gid, gids, uid, umask, start_new_session, *rest)
        request = {"argv": [str(a) for a in args[2:]], "env": dict(env if env is not None else os.environ),
                   "cwd": str(cwd or os.getcwd()), "new_session": bool(start_new_session)}
        fds = [fd if fd != -1 else std for fd, std in ((p2cread, 0), (c2pwrite, 1), (errwrite, 2))]
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(_started()["path"])
        self._conn.sendmsg([json.dumps(request).encode() + b"\n"],
                           [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        self._reply = self._conn.makefile("rb")
        self.pid = int(self._reply.readline())
        self._child_created = True
        for fd, parent_end in ((p2cread, p2cwrite), (c2pwrite, c2pread), (errwrite, errread)):
            if fd != -1 and parent_end != -1:  # the child's ends, as Popen closes them
                os.close(fd)
        if hasattr(self, "_devnull"):
            os.close(self._devnull)
        self._closed_child_pipe_fds = True

    def _internal_poll(self, _deadstate=None, **kwargs):
        if not self._zygote:
            return super()._internal_poll(_deadstate, **kwargs)
        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self._read_status()
        return self.returncode

    def _wait(self, timeout):
        if not self._zygote:
            return super()._wait(timeout)
        if self.returncode is None:
            if not select.select([self._conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._read_status()
        return self.returncode

    def _read_status(self) -> None:
        line = self._reply.readline()
        self.returncode = int(line) if line.strip() else -signal.SIGKILL  # the server itself was killed
        self._reply.close()
        self._conn.close()


def run(args, *, input=None, capture_output=False, timeout=None, check=False, **kwargs):
    """subprocess.run through Popen above."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with Popen(args, stdin=subprocess.PIPE if input is not None else kwargs.pop("stdin", None), **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        except BaseException:
            proc.kill()
            raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


# -- the server ------------------------------------------------------------------------------


def serve(path: str) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd → (pid, the client's connection)
    while True:
        ready = select.select([listener, sys.stdin, *children], [], [])[0]
        if sys.stdin in ready:  # the pytest process is gone: so is this server (children run on)
            return
        for pidfd in [fd for fd in ready if fd in children]:
            pid, conn = children.pop(pidfd)
            _, status = os.waitpid(pid, 0)
            _send(conn, f"{os.waitstatus_to_exitcode(status)}\n")
            conn.close()
            os.close(pidfd)
        if listener in ready:
            conn, _ = listener.accept()
            request, fds = _receive(conn)
            if request is None:  # a client that went away before it asked
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                for fd in (listener.fileno(), conn.fileno(), sys.stdin.fileno(), *children,
                           *(c.fileno() for _, c in children.values())):
                    os.close(fd)
                exit_without_teardown(_child(request, fds))  # `mergeval` itself ends that way first
            for fd in fds:
                os.close(fd)
            _send(conn, f"{pid}\n")
            children[os.pidfd_open(pid)] = (pid, conn)


def _receive(conn: socket.socket) -> tuple[dict | None, list[int]]:
    """One request (a line of JSON, however the stream splits it) and the three fds sent with it."""
    message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while message and not message.endswith(b"\n"):
        chunk = conn.recv(1 << 16)
        if not chunk:
            return None, fds
        message += chunk
    return (json.loads(message) if message else None), fds


def _send(conn: socket.socket, text: str) -> None:
    try:
        conn.sendall(text.encode())
    except OSError:  # the client is gone (killed with its test): nobody waits for the status
        pass


def _child(request: dict, fds: list[int]) -> int | str | None:
    """Become `python -m argv...` in the request's session, folder and environment."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the server ignores it; a command does not
    if request["new_session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    module, *rest = request["argv"]
    sys.argv = [module, *rest]
    sys.path[0] = request["cwd"]  # where `python -m` puts the working folder
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
        code = 1
    return code


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for pytest, not for the server
    serve(sys.argv[1])
