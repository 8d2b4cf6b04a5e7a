"""The stage bodies in a process of their own, forked by `mergeval sweep` and `search` at their start.

    stage_process.start(preload=True)                       # cli/sweep.py, before any thread
    stage_process.call(stages.answer_stage, plan, cand, log=log)   # there if started, else here

Why: in one process, Prefect's client (its task engine, its event and log threads) and the
stages share one GIL, so every millisecond Prefect's Python runs is a millisecond the answers
and grades wait for (2.2 of the 2.4 s Prefect added to the toy sweep, measured in session 10).
Here the stages run on one core while Prefect works on the other, and the worker imports
transformers and torch while the command imports Prefect. A stage that takes its process
down (a crash in a kernel, the OOM killer) fails that model's task, not the sweep.

The worker is forked before the command starts any thread (a fork then copies no lock that
another thread holds). Each call is one request over a pipe: the function's module and name,
its arguments pickled; the worker runs it on a thread of its own (the flow runs a build, an
answer and a grade at once) and sends back each log line, then the result or the exception.
The worker ends when the pipe closes: when the command exits or is killed.
"""

from __future__ import annotations

import atexit
import importlib
import itertools
import logging
import os
import pickle
import queue
import signal
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe

from mergeval.engine.plan import SweepPlan

_worker: StageProcess | None = None
PRELOAD = ("transformers.modeling_utils", "transformers.models.auto.tokenization_auto")


class StageProcessDied(RuntimeError):
    """The worker ended while a stage ran in it (a crash, or it was killed)."""


def start(preload: bool) -> StageProcess | None:
    """Fork the worker, unless this process runs threads already (forking then is unsafe) or
    MERGEVAL_STAGE_PROCESS=0: the stages then run in this process. preload: import what models
    answer with (transformers) from the start."""
    global _worker
    if os.environ.get("MERGEVAL_STAGE_PROCESS") == "0":
        return None
    if _worker is None and threading.active_count() == 1:
        _worker = StageProcess(preload)
    return _worker


def call(fn, *args, log=None, **kwargs):
    """fn(*args, **kwargs, log=...) in the worker if one was started, else here. fn: a function
    at the top level of a module. log: called here with each line fn logs there."""
    if log is not None:
        kwargs["log"] = log
    if _worker is None or _worker.died:  # after a crash the stages go on here, as without one
        return fn(*args, **kwargs)
    return _worker.call(fn, args, kwargs)


class StageProcess:
    """The command's side: sends requests, and one reader thread hands each reply to its caller."""

    def __init__(self, preload: bool):
        self._conn, theirs = Pipe()
        self.pid = os.fork()
        if self.pid == 0:
            self._conn.close()
            _serve(theirs, preload)  # never returns
        theirs.close()
        self._ids = itertools.count()
        self._lock = threading.Lock()  # sends, and the table of callers waiting
        self._waiting: dict[int, queue.SimpleQueue] = {}
        self.died: str | None = None
        self._reader: threading.Thread | None = None
        self._plan: tuple[int, SweepPlan] | None = None  # the last plan sent, and its key
        atexit.register(self.stop)

    def stop(self) -> None:
        """Tell the worker to exit, and wait until it has (at once: it waits on the pipe), so
        that no process of this command outlives it. (Closing the pipe would not do: the reader
        thread's pending recv holds it open.)"""
        with self._lock:
            try:
                if not self.died:
                    self._conn.send(None)
            except OSError:  # it ended a moment ago, before the reader saw it: nothing to tell
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:  # the reader thread reaped it
            pass

    def call(self, fn, args: tuple, kwargs: dict):
        log = kwargs.pop("log", None)
        replies = queue.SimpleQueue()
        with self._lock:
            if self.died:
                raise StageProcessDied(self.died)
            rid = next(self._ids)
            self._waiting[rid] = replies
            args = tuple(self._once(arg) for arg in args)
            try:
                self._conn.send((rid, fn.__module__, fn.__qualname__, args, kwargs, log is not None))
            except OSError as e:  # it ended a moment ago: the reader is about to say how
                raise StageProcessDied(f"the stage process (pid {self.pid}) is gone: {e}") from e
            if self._reader is None:  # started here, not in __init__: no thread before Prefect's own
                self._reader = threading.Thread(target=self._read, name="stage-process-reader", daemon=True)
                self._reader.start()
        try:
            while True:
                kind, value = replies.get()
                if kind == "log":
                    log(value)
                elif kind == "record":  # a library's own log record: through this process's handlers
                    logging.getLogger(value["name"]).handle(logging.makeLogRecord(value))
                elif kind == "result":
                    return value
                else:
                    raise value
        finally:
            with self._lock:
                self._waiting.pop(rid, None)

    def _once(self, arg):
        """The plan crosses with the first call that takes it; the calls after it that take the
        same plan name it (pickling and reading it again cost ≈4 ms a call on the toy sweep).
        One plan is kept on each side, the last sent: a sweep has one, a search one per trial."""
        if not isinstance(arg, SweepPlan):
            return arg
        if self._plan is not None and self._plan[1] is arg:
            return _Sent(self._plan[0])
        self._plan = (next(self._ids), arg)
        return _Sent(self._plan[0], arg)

    def _read(self) -> None:
        while True:
            try:
                rid, kind, value = self._conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                replies = self._waiting.get(rid)
            if replies is not None:
                replies.put((kind, value))
        with self._lock:
            self.died = f"the stage process (pid {self.pid}) ended: {_how_it_ended(self.pid)}"
            for replies in self._waiting.values():
                replies.put(("error", StageProcessDied(self.died)))


@dataclass(frozen=True)
class _Sent:
    """An argument the worker keeps: with its value the first time, by its key after that."""
    key: int
    value: object = None


def _how_it_ended(pid: int) -> str:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "reaped elsewhere"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _serve(conn: Connection, preload: bool) -> None:
    """The worker: each request on a thread of its own, until the command's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle; it then exits
    sending = threading.Lock()

    def send(message) -> None:
        with sending:
            conn.send(message)

    calls = {}  # thread id → the request it runs, for the records its libraries log

    def run(rid: int, module: str, name: str, args: tuple, kwargs: dict, logs: bool) -> None:
        calls[threading.get_ident()] = rid
        try:
            fn = getattr(importlib.import_module(module), name)
            if logs:
                kwargs["log"] = lambda line: send((rid, "log", line))
            send((rid, "result", fn(*args, **kwargs)))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller's task
            send((rid, "error", _portable(e)))
        finally:
            calls.pop(threading.get_ident(), None)

    _forward_library_logs(lambda record: (rid := calls.get(record.thread)) is not None
                          and send((rid, "record", _plain(record))))

    if preload:
        threading.Thread(target=_preload, daemon=True).start()
    kept = {}  # the last _Sent value: its key → it (resolved in the order the requests came)

    def resolved(arg):
        nonlocal kept
        if not isinstance(arg, _Sent):
            return arg
        if arg.value is not None:
            kept = {arg.key: arg.value}
        return kept[arg.key]

    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):  # the command was killed
                break
            if request is None:  # the command is exiting
                break
            rid, module, name, args, kwargs, logs = request
            args = tuple(resolved(arg) for arg in args)
            threading.Thread(target=run, args=(rid, module, name, args, kwargs, logs), daemon=True).start()
    finally:
        os._exit(0)  # the command has gone: its stages' results have no one to go to


class _Forward(logging.Handler):
    def __init__(self, forward):
        super().__init__()
        self.forward = forward

    def emit(self, record: logging.LogRecord) -> None:
        self.forward(record)


def _forward_library_logs(forward) -> None:
    """The loggers Prefect shows in the UI beside the flow's own (PREFECT_LOGGING_EXTRA_LOGGERS,
    e.g. transformers): their records go back to the call's task, as if logged there."""
    handler = _Forward(forward)
    for name in filter(None, os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",")):
        logging.getLogger(name.strip()).addHandler(handler)


def _plain(record: logging.LogRecord) -> dict:
    """A record that pickles: its message formatted, its traceback as text."""
    plain = dict(record.__dict__, msg=record.getMessage(), args=None, exc_info=None)
    if record.exc_info:
        plain["exc_text"] = logging.Formatter().formatException(record.exc_info)
    return plain


def _preload() -> None:
    """What the stages load models with, imported while the command imports Prefect."""
    for module in PRELOAD:
        importlib.import_module(module)


def _portable(e: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a RuntimeError with its text; either
    way with the worker's traceback as a note (the caller's own shows only this module)."""
    e.add_note("".join(traceback.format_exception(e)).rstrip())
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - an exception that cannot cross keeps its type's name and text
        portable = RuntimeError(f"{type(e).__name__}: {e}")
        portable.__notes__ = e.__notes__
        return portable
