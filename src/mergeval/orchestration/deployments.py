"""Prefect deployments and work pools for sweeps that span several GPU boxes.

    mergeval worker --pool gpus             # on each box: one model at a time per worker
    sweep(..., pool="gpus")                 # the parent: one child flow run per model
    search(..., pool="gpus")                # the parent: one child flow run per trial

The sweep's child is flows/recipe.py's `recipe` flow, deployed as `mergeval-recipe/<pool>` from
the folder that holds it (a path every box sees, like the workspace: a shared filesystem); the
search's is flows/trial.py's `trial`, deployed as `mergeval-trial/<pool>` the same way. A
child that crashes (its worker was stopped, or the automation below marked it Crashed after
its heartbeats stopped) is put back in the queue the way the UI's Retry button does it: same
flow run, any worker takes it, cached stages come back Cached and per-item stores resume.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from datetime import timedelta
from pathlib import Path

from mergeval.core.store import write_atomic

RECIPE_FLOW = "mergeval-recipe"
TRIAL_FLOW = "mergeval-trial"
POLL_S = 1.0  # how often the parent looks at its children; a child runs for minutes
CRASH_RETRIES = 2  # a child put back after a crash at most this often, then it counts as failed
CHILD_TAG = "mergeval-recipe"  # on every child run: what the zombie automation watches
HEARTBEAT_S = 30  # workers' flow runs beat this often (Prefect's minimum)...
ZOMBIE_AFTER_S = 90  # ...and one silent this long is marked Crashed by the automation


def sibling(file: str, name: str):
    """flows/<name>.py next to `file`, imported once per process (flows/ is not a package:
    `flows` is a PyPI name, so it is never an import name)."""
    module_name = f"mergeval_flows_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, Path(file).resolve().with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def ensure_pool(pool: str) -> None:
    """A process work pool named `pool` (created if missing; an existing one is left alone)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(
                name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            pass


def ensure_zombie_automation() -> None:
    """Prefect's documented cure for a box that dies mid-run: a child run whose heartbeats stop
    is marked Crashed (docs: v3/advanced/detect-zombie-flows). Needs a Prefect server."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    name = "mergeval: crash silent flow runs"
    try:
        Automation.read(name=name)
        return
    except ValueError:
        pass
    Automation(
        name=name,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            # only the children: other runs beat every 180 s (Prefect's default) or not at all
            match_related=ResourceSpecification({"prefect.resource.role": "tag",
                                                 "prefect.resource.id": f"prefect.tag.{CHILD_TAG}"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_S),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {ZOMBIE_AFTER_S} s: "
                                    "its worker or box stopped")],
    ).create()


def ensure_recipe_deployment(pool: str) -> str:
    """Create or update the sweep's child deployment for `pool`; returns its 'flow/deployment' name."""
    return ensure_child_deployment(pool, "recipe")


def ensure_child_deployment(pool: str, name: str) -> str:
    """flows/<name>.py's flow `name` (recipe: a sweep's model; trial: a search's trial), deployed
    as `mergeval-<name>/<pool>` from its folder; returns that 'flow/deployment' name."""
    from prefect import flow

    ensure_pool(pool)
    child = flow.from_source(source=str(_flows_dir(name)), entrypoint=f"{name}.py:{name}")
    child.deploy(name=pool, work_pool_name=pool, print_next_steps=False, ignore_warnings=True)
    return f"mergeval-{name}/{pool}"


def _flows_dir(name: str = "recipe") -> Path:
    """The folder of the flow this process uses (the workspace's flows/ or the repo's)."""
    module = sys.modules.get(f"mergeval_flows_{name}") or sys.modules.get("mergeval_flows_recipe")
    if module is not None:
        return Path(module.__file__).parent
    return Path(__file__).resolve().parents[2] / "flows"


def need_server(pool: str) -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # workers cannot reach a flow's temporary, in-process server
        raise RuntimeError(f"work pool {pool!r} needs a Prefect server: run `mergeval server` and set "
                           "PREFECT_API_URL for this command and for every `mergeval worker`")


def online_workers(pool: str) -> int:
    """How many workers of `pool` are online now (0 for a new pool)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkerStatus

    ensure_pool(pool)
    with get_client(sync_client=True) as client:
        return sum(w.status == WorkerStatus.ONLINE for w in client.read_workers_for_work_pool(pool))


def summary_path(workspace: str | Path, run_id) -> Path:
    """Where a child run leaves its stage counts for the parent: on the shared workspace, not
    in a result store (workers serve any workspace, so they have no result storage of theirs)."""
    return Path(workspace) / ".mergeval" / "child-runs" / f"{run_id}.json"


def child_summary(workspace: str, run_id) -> dict | None:
    path = summary_path(workspace, run_id)
    return json.loads(path.read_text()) if path.exists() else None


def report_to_parent(workspace: str | Path, stats: dict, failure: dict | None) -> None:
    """A child run's last act: its stage counts and failure, where its parent reads them."""
    from prefect.context import FlowRunContext

    write_atomic(summary_path(workspace, FlowRunContext.get().flow_run.id),
                 json.dumps({"stats": stats, "failure": failure}))


def wait_for_orphans(workspace: str | Path, flow_name: str, log=print) -> None:
    """Child runs of `flow_name` for this workspace that are not over: a killed parent's (its
    caller holds the workspace lock, so no live parent has any). Wait for them to end, so that
    a re-run does not build or answer beside them what they are doing; their stages then come
    back Cached. A dead box's run ends too: the zombie automation marks it Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    live = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
        any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING])))
    with get_client(sync_client=True) as client:
        def orphans():
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                         flow_run_filter=live)
            return [r for r in runs if r.parameters.get("request", {}).get("workspace") == str(workspace)]

        if left := orphans():
            log(f"{len(left)} child run(s) of a killed run are not over ({', '.join(r.name for r in left)}): "
                "waiting for them to end first")
        while orphans():
            time.sleep(POLL_S)


def run_children(plan, request, stats: dict, log=print, deployment: str | None = None, extra: dict | None = None,
                 label: str | None = None):
    """Start one child flow run per model on the request's pool; yield (model, failure or None)
    in plan order as each ends, adding the child's stage counts to `stats`.

    deployment: made once by the caller (ensure_child_deployment); None: the sweep's recipe one.
    Each child gets {"model": its name, "request": request.parameters(), **extra}, and the
    name '<label> <model>' (label: the deployment's flow, recipe or trial, unless given)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import State, StateType

    pool, params = request.pool, request.parameters()
    if deployment is None:
        need_server(pool)
        deployment = ensure_recipe_deployment(pool)
    kind = deployment.split("/")[0].removeprefix("mergeval-")  # recipe, trial: the runs' names say which
    label = label or kind
    runs = [(cand, run_deployment(deployment, parameters={"model": cand.name, "request": params, **(extra or {})},
                                  timeout=0, flow_run_name=f"{label} {cand.name}", tags=[CHILD_TAG]))
            for cand in plan.candidates]
    log(f"{len(runs)} {label} run(s) queued on work pool {pool!r}: start `mergeval worker --pool {pool}` on each box")
    with get_client(sync_client=True) as client:
        for cand, run in runs:
            crashes = 0
            while True:
                run = client.read_flow_run(run.id)
                if run.state.is_crashed() and crashes < CRASH_RETRIES:
                    crashes += 1
                    log(f"{label} {cand.name} crashed ({run.state.message}); putting it back in the queue")
                    # what the UI's Retry does (force: a Crashed run is final and may be stale)
                    client.set_flow_run_state(run.id, State(type=StateType.SCHEDULED, name="AwaitingRetry",
                                                            message="mergeval: retry after a crash"), force=True)
                elif run.state.is_final():
                    break
                time.sleep(POLL_S)
            ended = run.state.is_completed() or run.state.is_failed()  # a crashed child wrote nothing
            summary = child_summary(request.workspace, run.id) if ended else None
            for stage, counts in (summary or {}).get("stats", {}).items():
                for k, v in counts.items():
                    stats[stage][k] += v
            failure = (summary or {}).get("failure")
            if failure is None and not run.state.is_completed():
                failure = {"model": cand.name, "stage": kind, "error": f"{run.state.name}: {run.state.message}"}
            yield cand, failure
