"""Watching a sweep: `mergeval server` on 127.0.0.1, a real sweep against it, checked through
Prefect's API (the client), as the UI would show it.

Also home of the helpers the other Prefect-server tests share (test_schedule, test_workers):
one server and one toy world per test session, since each costs ~20 s to start or train.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.sweep_helpers import REPO, copy_world, make_toy_world, results, run_dir_of

# One Prefect server and one scale world serve these three modules (session fixtures in
# test_server.py): under pytest-xdist they run on one worker, so both are made once.
pytestmark = pytest.mark.xdist_group("prefect-server")

N_ITEMS = 40  # 20 per skill: enough to rank, quick enough to sweep several times a session
MODELS = ("base", "spec_add", "spec_rev", "ties_d08", "task_arithmetic_w10", "passthrough_add02_rev24",
          "linear_half")  # a four-recipe sweep: three sources, four merges
ARGS = ("--keep", "all", "--batch-size", "8")
WAIT_S = 90  # the longest any test here waits for one thing (a loaded 2-core box is slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, what: str, timeout: float = WAIT_S, proc: subprocess.Popen | None = None, log=None):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited ({proc.returncode}):\n{tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tail(log)}")
        time.sleep(0.5)


def tail(log: Path | None, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log and log.exists() else ""


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A background process in its own group (so stop() ends its children too), output to a file."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15) -> None:
    """End a process started by start(): first what it started in sessions of their own (a
    worker's flow runs), then its group."""
    children = subprocess.run(["ps", "--ppid", str(proc.pid), "-o", "pid="], capture_output=True, text=True)
    for pid in children.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # what the group started (flow run processes) goes too
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def mergeval(*args: str) -> list[str]:
    return [sys.executable, "-m", "mergeval.cli.main", *args]


def server_env(url: str, home: Path, **extra) -> dict:
    env = dict(os.environ, PREFECT_API_URL=f"{url}/api", PREFECT_HOME=str(home), OMP_NUM_THREADS="1",
               MERGEVAL_THREADS="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", TOKENIZERS_PARALLELISM="false")
    return env | extra


SHARED: dict = {}  # one server, world and reference sweep per session, whichever module asks first


def once(request, key: str, make):
    """make() → (value, cleanup or None), run once per session. Other modules import this
    module's fixtures, and pytest keeps a fixture per module that holds it, so the value lives
    in one registry (reached by one import name: pytest may import this file twice)."""
    import tests.test_server as home

    if key not in home.SHARED:
        value, cleanup = make()
        home.SHARED[key] = value
        if cleanup:
            request.addfinalizer(cleanup)
    return home.SHARED[key]


@pytest.fixture(scope="session")
def prefect_server(request, tmp_path_factory):
    """`mergeval server` on a free port; its URL (without /api)."""
    def make():
        home = tmp_path_factory.mktemp("prefect-server")
        url = f"http://127.0.0.1:{free_port()}"
        log = home / "server.log"
        env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.pop("PREFECT_API_URL", None)
        proc = start(mergeval("server", "--port", url.rsplit(":", 1)[1]), env, log)
        try:
            wait_for(lambda: healthy(url), "prefect server health", proc=proc, log=log)
            assert f"PREFECT_API_URL={url}/api" in log.read_text()  # it told us how to use it
        except BaseException:
            stop(proc)
            raise
        return url, lambda: stop(proc)

    return once(request, "server", make)


@pytest.fixture(scope="session")
def scale_world(request, tmp_path_factory) -> Path:
    """The quick toy world, four recipes, N_ITEMS items; shared read-only by this session."""
    def make():
        root = make_toy_world(tmp_path_factory.mktemp("scale") / "ws")
        shutil.copy(REPO / "merge_configs" / "toy" / "linear_half.yaml", root / "merge_configs" / "toy")
        for skill in ("add", "rev"):
            for item in sorted((root / "items" / "toy" / skill).glob("*.txt"))[N_ITEMS // 2:]:
                item.unlink()
        return root, None

    return once(request, "world", make)


def client_for(url: str):
    """A sync Prefect client for `url`, whatever this test process's own settings say."""
    from prefect.client.orchestration import SyncPrefectClient

    client = SyncPrefectClient(f"{url}/api")
    client.__enter__()
    return client


def flow_runs(client, flow_name: str):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))


def task_runs(client, flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


@pytest.fixture(scope="session")
def server_sweep(request, prefect_server, scale_world, tmp_path_factory):
    """One in-process sweep (today's `mergeval sweep`) against the server: (workspace, run dir).
    Its run folder is also the one-machine reference for the two-worker test."""
    return once(request, "sweep", lambda: (in_process_sweep(prefect_server, scale_world, tmp_path_factory), None))


def in_process_sweep(prefect_server, scale_world, tmp_path_factory):
    ws = copy_world(scale_world, tmp_path_factory.mktemp("served") / "ws", with_state=False)
    # transformers logs at INFO here, so that its (forwarded) log lines show up in the UI
    env = server_env(prefect_server, ws / ".prefect", TRANSFORMERS_VERBOSITY="info")
    proc = subprocess.run(mergeval("--workspace", str(ws), "sweep", *ARGS), env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return ws, run_dir_of(proc)


def test_a_sweep_shows_in_the_server_by_model_and_stage(prefect_server, server_sweep):
    ws, run_dir = server_sweep
    assert {r["model"] for r in results(run_dir)} == set(MODELS)
    client = client_for(prefect_server)
    [run] = [r for r in flow_runs(client, "mergeval-sweep") if r.parameters.get("workspace") == str(ws)]
    assert run.state.is_completed()
    tasks = {t.name: t for t in task_runs(client, run.id)}
    merges = MODELS[3:]
    expected = [f"build {m}" for m in merges] + [f"{s} {m}" for s in ("answer", "grade") for m in MODELS]
    for name in expected:
        assert name in tasks, (name, sorted(tasks))
        assert tasks[name].state.is_completed(), (name, tasks[name].state)
    artifacts = {a.key: a for a in client.read_artifacts() if a.flow_run_id == run.id}
    assert {"mergeval-ranking", "mergeval-summary"} <= set(artifacts)
    assert artifacts["mergeval-summary"].data.startswith("# mergeval sweep")
    progress = [a for a in client.read_artifacts() if a.flow_run_id == run.id and a.type == "progress"]
    assert progress and progress[0].data == 100.0  # every model done
    logs = all_logs(client, run.id)
    assert any("answer base: 40 answered" in log.message for log in logs)  # stage logs reach the UI
    # PREFECT_LOGGING_EXTRA_LOGGERS (set by the CLI) forwards transformers' own logger
    assert any(log.name.startswith("transformers.") for log in logs), {log.name for log in logs}


def all_logs(client, flow_run_id) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs, page = [], 200
    while True:
        batch = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=page,
                                 offset=len(logs))
        logs += batch
        if len(batch) < page:
            return logs


def test_the_ui_on_another_port_is_told_that_port(prefect_server, tmp_path):
    """`mergeval server --port N`: the UI's /ui-settings must point it at N's API, not 4200,
    and the UI loaded in a browser then asks that API."""
    import json

    from tests.browser import browser_page

    assert not prefect_server.endswith(":4200")
    with urllib.request.urlopen(f"{prefect_server}/ui-settings", timeout=10) as r:
        settings = json.loads(r.read())
    assert settings["api_url"] == f"{prefect_server}/api"
    with urllib.request.urlopen(f"{settings['api_url']}/health", timeout=10) as r:  # and it answers there
        assert r.status == 200
    with browser_page(tmp_path) as page:
        asked = []
        page.on("request", lambda req: asked.append(req.url))
        page.goto(f"{prefect_server}/dashboard")
        page.wait_for_load_state("networkidle")
    assert any(u.startswith(f"{prefect_server}/api/") for u in asked), asked
    assert not any(":4200" in u for u in asked), [u for u in asked if ":4200" in u]
