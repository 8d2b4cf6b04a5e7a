"""engine/stage_process.py for real: a forked worker, its pipe, its log lines, its failures.

Each test runs a short program in an interpreter of its own: the worker is forked only from a
process that runs no other thread, and pytest's own runs several. The program prints JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HEADER = """
import json, os, signal, sys, threading
from pathlib import Path
from mergeval.engine import stage_process
from mergeval.engine.plan import SweepPlan

def where(tag, log):
    log(f"{tag} one")
    log(f"{tag} two")
    return {"pid": os.getpid(), "tag": tag}

def boom(x):
    raise ValueError(f"bad {x}")

class Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")

def odd():
    raise Unpicklable(1, 2)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def library_logs(n, log):
    import logging
    logging.getLogger("transformers.models.fake").warning("loaded %d shards", n)
    logging.getLogger("elsewhere").warning("not forwarded")
    return n

def seen(plan):
    return id(plan), plan.judge_fingerprint

def out(**kw):
    print(json.dumps(kw), flush=True)
"""


def run_program(body: str, tmp_path: Path, timeout: float = 60) -> list[dict]:
    program = tmp_path / "program.py"
    program.write_text(HEADER + textwrap.dedent(body))
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_call_runs_in_the_worker_and_its_log_lines_come_back_in_order(tmp_path):
    [result] = run_program("""
        worker = stage_process.start(preload=False)
        lines = []
        got = stage_process.call(where, "a", log=lines.append)
        out(here=os.getpid(), worker=worker.pid, got=got, lines=lines)
    """, tmp_path)
    assert result["got"] == {"pid": result["worker"], "tag": "a"}
    assert result["worker"] != result["here"]
    assert result["lines"] == ["a one", "a two"]


def test_calls_at_once_each_get_their_own_lines_and_result(tmp_path):
    [result] = run_program("""
        from concurrent.futures import ThreadPoolExecutor
        stage_process.start(preload=False)
        logs = {t: [] for t in "abcdef"}
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(lambda t: stage_process.call(where, t, log=logs[t].append), "abcdef"))
        out(tags=[g["tag"] for g in got], logs=logs)
    """, tmp_path)
    assert result["tags"] == list("abcdef")
    assert result["logs"] == {t: [f"{t} one", f"{t} two"] for t in "abcdef"}


def test_records_of_prefects_extra_loggers_come_back_to_the_caller(tmp_path):
    """Prefect shows the loggers named in PREFECT_LOGGING_EXTRA_LOGGERS (transformers, mergekit)
    in the UI: logged in the worker, their records are handled here, in the calling task."""
    [result] = run_program("""
        import logging
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = "mergekit,transformers"
        worker = stage_process.start(preload=False)
        seen_here = []
        class Keep(logging.Handler):
            def emit(self, record):
                seen_here.append([record.name, record.getMessage(), record.process, threading.get_ident()])
        logging.getLogger().addHandler(Keep())
        stage_process.call(library_logs, 3, log=lambda line: None)
        out(records=seen_here, worker=worker.pid, here=threading.get_ident())
    """, tmp_path)
    [[name, message, process, thread]] = result["records"]
    assert (name, message, process) == ("transformers.models.fake", "loaded 3 shards", result["worker"])
    assert thread == result["here"]  # handled on the caller's thread: its task's context


def test_an_exception_there_is_raised_here_with_the_workers_traceback(tmp_path):
    [plain, odd] = run_program("""
        stage_process.start(preload=False)
        for fn, args in ((boom, ("x",)), (odd, ())):
            try:
                stage_process.call(fn, *args)
            except Exception as e:
                out(type=type(e).__name__, text=str(e), notes=getattr(e, "__notes__", []))
    """, tmp_path)
    assert plain["type"] == "ValueError" and plain["text"] == "bad x"
    assert "in boom" in plain["notes"][0] and "ValueError: bad x" in plain["notes"][0]
    # an exception that cannot be pickled keeps its type's name and its text
    assert odd["type"] == "RuntimeError" and odd["text"] == "Unpicklable: 1 and 2"
    assert "in odd" in odd["notes"][0]


def test_a_worker_that_dies_fails_its_call_and_later_calls_run_here(tmp_path):
    [died, after] = run_program("""
        worker = stage_process.start(preload=False)
        try:
            stage_process.call(die)
        except stage_process.StageProcessDied as e:
            out(text=str(e), worker=worker.pid)
        out(got=stage_process.call(where, "b", log=lambda line: None), here=os.getpid())
    """, tmp_path)
    assert died["text"] == f"the stage process (pid {died['worker']}) ended: killed by SIGKILL"
    assert after["got"]["pid"] == after["here"]


def test_a_plan_crosses_once_and_another_replaces_it(tmp_path):
    [result] = run_program("""
        stage_process.start(preload=False)
        plan = SweepPlan(workspace=None, configs=Path("c"), items_dir=Path("i"), judge_file=Path("j"), items=(),
                         judge=None, judge_fingerprint="fp", generation=None, candidates=(), recipes=())
        other = SweepPlan(workspace=None, configs=Path("c"), items_dir=Path("i"), judge_file=Path("j"), items=(),
                          judge=None, judge_fingerprint="other", generation=None, candidates=(), recipes=())
        first, second = stage_process.call(seen, plan), stage_process.call(seen, plan)
        out(first=first, second=second, other=stage_process.call(seen, other), again=stage_process.call(seen, plan))
    """, tmp_path)
    assert result["first"] == result["second"]  # the same object there: sent with the first call only
    assert result["first"][1] == "fp" and result["other"][1] == "other" and result["again"][1] == "fp"


def test_no_worker_is_forked_from_a_process_running_threads(tmp_path):
    [result] = run_program("""
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        worker = stage_process.start(preload=False)
        got = stage_process.call(where, "c", log=lambda line: None)
        stop.set()
        out(worker=worker is not None, got=got["pid"], here=os.getpid())
    """, tmp_path)
    assert result["worker"] is False and result["got"] == result["here"]


def test_the_worker_ends_with_the_command_that_started_it(tmp_path):
    [exited] = run_program("""
        from mergeval.core.exiting import exit_without_teardown
        worker = stage_process.start(preload=False)
        out(worker=worker.pid)
        exit_without_teardown(0)
    """, tmp_path)
    assert not alive(exited["worker"])  # reaped before the command's exit

    program = tmp_path / "killed.py"
    program.write_text(HEADER + "out(worker=stage_process.start(preload=False).pid)\nthreading.Event().wait()\n")
    proc = subprocess.Popen([sys.executable, str(program)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    worker = json.loads(proc.stdout.readline())["worker"]
    os.kill(proc.pid, signal.SIGKILL)  # the command alone: its worker sees the pipe close
    proc.wait()
    deadline = time.monotonic() + 20
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


def alive(pid: int) -> bool:
    """Running (a zombie left for a parent that does not reap is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
