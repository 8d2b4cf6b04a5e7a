"""`mergeval schedule`: the sweep served as a deployment on a cron schedule, and the UI's Retry
of a failed run, which reruns only what failed (everything else comes back Cached).

The retry is triggered exactly as the UI's Retry button does it (prefect-ui-library:
retryFlowRun = set_state {type: SCHEDULED, name: AwaitingRetry, message: "Retry from the UI"},
force=false), and checked through Prefect's API.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.sweep_helpers import REPO, copy_world, results
from tests.test_server import (  # noqa: F401  (fixtures shared by the session)
    ARGS,
    client_for,
    mergeval,
    prefect_server,
    scale_world,
    server_env,
    start,
    stop,
    task_runs,
    wait_for,
)

# One Prefect server and one scale world serve these three modules (session fixtures in
# test_server.py): under pytest-xdist they run on one worker, so both are made once.
pytestmark = pytest.mark.xdist_group("prefect-server")


def test_schedule_needs_a_server(tmp_path):
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(mergeval("--workspace", str(tmp_path), "schedule", "--cron", "0 2 * * *"),
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "mergeval server" in proc.stderr and "PREFECT_API_URL" in proc.stderr


def test_a_failed_scheduled_run_retried_from_the_ui_reruns_only_what_failed(prefect_server, scale_world, tmp_path):
    from prefect.states import State, StateType

    ws = copy_world(scale_world, tmp_path / "ws", with_state=False)
    (ws / "zoo").unlink()  # a zoo of its own, so one model can be broken here only
    shutil.copytree(scale_world / "zoo", ws / "zoo", symlinks=True)
    one = ws / "merge_configs" / "one"  # one recipe: 4 models (base, spec_add, spec_rev, the merge)
    one.mkdir()
    shutil.copy(REPO / "merge_configs" / "toy" / "task_arithmetic_w10.yaml", one)
    tokenizer = ws / "zoo" / "spec_rev" / "tokenizer.json"
    good = tokenizer.read_text()
    tokenizer.write_text('{"broken": ')  # spec_rev cannot answer; weights and fingerprint unchanged

    env = server_env(prefect_server, ws / ".prefect", PREFECT_RUNNER_POLL_FREQUENCY="1")
    log = tmp_path / "schedule.log"
    served = start(mergeval("--workspace", str(ws), "schedule", "merge_configs/one", "--cron", "0 2 * * *",
                            "--name", "retry-test", *ARGS), env, log)
    client = client_for(prefect_server)
    try:
        def deployment():
            try:
                return client.read_deployment_by_name("mergeval-sweep/retry-test")
            except Exception:
                return None

        dep = wait_for(deployment, "the served deployment", proc=served, log=log)
        assert [s.schedule.cron for s in dep.schedules] == ["0 2 * * *"]
        assert dep.parameters["workspace"] == str(ws) and dep.parameters["configs"] == "merge_configs/one"

        run = client.create_flow_run_from_deployment(dep.id)  # what the 02:00 schedule would do
        failed = wait_for(lambda: (r := client.read_flow_run(run.id)).state.is_final() and r, "first run",
                          proc=served, log=log)
        assert failed.state.is_failed(), failed.state
        first = {t.name: t.state.name for t in task_runs(client, run.id)}
        assert first["answer spec_rev"] == "Failed"
        assert first["grade base"] == first["grade task_arithmetic_w10"] == "Completed"

        tokenizer.write_text(good)  # the user fixes the cause, then presses Retry in the UI
        retry = State(type=StateType.SCHEDULED, name="AwaitingRetry", message="Retry from the UI")
        assert client.set_flow_run_state(run.id, retry, force=False).status.value == "ACCEPT"
        done = wait_for(lambda: (r := client.read_flow_run(run.id)).run_count >= 2 and r.state.is_final() and r,
                        "the retried run", proc=served, log=log)
        assert done.state.is_completed(), done.state
    finally:
        stop(served)

    retried = {t.name: t.state.name for t in task_runs(client, run.id) if t.created > failed.state.timestamp}
    assert retried["answer spec_rev"] == retried["grade spec_rev"] == "Completed"  # executed
    for model in ("base", "spec_add", "task_arithmetic_w10"):  # finished the first time
        assert retried[f"answer {model}"] == retried[f"grade {model}"] == "Cached", retried
    reports = sorted((ws / "reports").iterdir())
    assert len(reports) == 2 and {r["model"] for r in results(reports[-1])} == {
        "base", "spec_add", "spec_rev", "task_arithmetic_w10"}
