"""One model's build → answer → grade: the sweep's tasks, and a flow of its own for workers.

    mergeval worker --pool gpus                       # on each GPU box (see cli_prefect.py)
    mergeval schedule --cron "0 2 * * *" --pool gpus  # the sweep starts one run of this per model

In one process the sweep (flows/sweep.py) calls `models_in_order`: the build of the next merge
runs in a thread while the current model is answered, and GPU work (answering, a local judge)
takes GPU_LOCK, so it runs one model at a time. With a pool, the sweep starts `recipe` once per
model as a child flow run of the deployment that orchestration/deployments.py creates, and any worker takes it.
Every task's cache key is the content hash of its inputs and every output lives under the
workspace, so a run that is killed, retried or moved to another box redoes only what is missing.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import nullcontext
from dataclasses import replace

from prefect import flow, task
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.utilities.annotations import quote

from mergeval.engine import stage_process, stages
from mergeval.engine.request import SweepRequest
from mergeval.orchestration import deployments, sealed_results

# One model on the accelerator at a time in this process: two would fight for its memory.
# A plain lock, not a Prefect global concurrency limit: it works with the embedded server,
# costs no API round trip, and is per box (a global limit would be one GPU for the fleet).
GPU_LOCK = threading.Lock()
LOCAL_BACKENDS = {"transformers", "vllm"}  # backends that run a model here (openai: elsewhere)


def by_content(context: TaskRunContext, parameters: dict) -> str:
    """Cache key: the stage's content hash, computed by the engine and passed in."""
    return parameters["key"]


def _log(message: str) -> None:
    get_run_logger().info(message)


def gpu(backend: str):
    return GPU_LOCK if backend in LOCAL_BACKENDS else nullcontext()


@task(cache_key_fn=by_content, persist_result=True)
def build(plan, cand, key: str) -> dict:
    return sealed_results.sealed(stage_process.call(stages.build_stage, plan, cand, log=_log))  # CPU and disk, in a subprocess: no GPU lock


@task(cache_key_fn=by_content, persist_result=True)
def answer(plan, cand, key: str) -> dict:
    with gpu(plan.generation.backend):
        return sealed_results.sealed(stage_process.call(stages.answer_stage, plan, cand, log=_log))


@task(cache_key_fn=by_content, persist_result=True)
def grade(plan, cand, key: str) -> dict:
    with gpu(plan.judge.backend):  # a remote judge grades while the next model is answered
        return sealed_results.sealed(stage_process.call(stages.grade_stage, plan, cand, log=_log))


def submit(stage_task, plan, cand):
    """Start one stage as a task named '<stage> <model>' in the flow's thread pool.

    A stage whose outputs on disk are gone (or incomplete, or damaged) refreshes its cache
    entry instead of trusting it, and so does one whose saved Prefect result is damaged.
    """
    stage = stage_task.name
    key, storage = stages.stage_key(plan, cand, stage), plan.workspace.state / "prefect-results"
    # Only a saved result can be trusted wrongly: without one the task runs anyway (a first
    # sweep skips re-reading each model's answers here, ≈0.1 s on the toy sweep).
    done = (storage / key).is_file() and stages.outputs_complete(plan, cand, stage)
    if done and (damage := sealed_results.damaged(storage, key)):
        get_run_logger().warning(f"{stage} {cand.name}: its saved Prefect result {storage / key} "
                                 f"is damaged ({damage}): running the task again")
        done = False
    # quote(): the task gets plan and cand as they are. Unquoted, Prefect walks every field of
    # both (each item, each model) looking for futures, twice per task: ≈60 ms a task here.
    return stage_task.with_options(
        name=stage,
        task_run_name=f"{stage} {cand.name}",
        result_storage=storage,
        refresh_cache=not done,
    ).submit(quote(plan), quote(cand), key)


def settle(name: str, future, cand, stats: dict) -> dict | None:
    """Wait for a stage, count it in `stats`; returns the failure record, or None."""
    future.wait()
    state = future.state
    if state.is_failed() or state.is_crashed():
        stats[name]["failed"] += 1
        return {"model": cand.name, "stage": name, "error": state.message}
    if state.name == "Cached":  # Prefect found the result: the task body did not run
        stages.count_cached(stats, name, state.result())
    else:
        stages.count(stats, name, state.result())
    return None


def models_in_order(plan, stats: dict, overlap: bool = True):
    """Yield (model, failure or None) for every model, in plan order, as each one finishes.

    overlap: the next merge is built while this model is answered, and this model is graded
    while the next one is answered (they share GPU_LOCK when the judge is local). Otherwise
    each stage waits for the one before it: the strictly sequential sweep.
    """
    cands = plan.candidates
    builds = {}  # candidate index → its build, started and not yet waited for

    def start_build(i: int) -> None:
        if i < len(cands) and i not in builds and stages.needs_build(plan, cands[i]):
            builds[i] = submit(build, plan, cands[i])

    def build_next_merge(i: int) -> None:  # one merge ahead at most: disk holds one spare model
        if not builds:
            start_build(next((j for j in range(i + 1, len(cands)) if stages.needs_build(plan, cands[j])), len(cands)))

    grading = deque()  # (model, grade future or the failure that stopped it)
    for i, cand in enumerate(cands):
        start_build(i)
        failure = settle("build", builds.pop(i), cand, stats) if i in builds else None
        if overlap:
            build_next_merge(i)  # one build at a time: the next merge, while this model is answered
        if failure is None:
            failure = settle("answer", submit(answer, plan, cand), cand, stats)
        grading.append((cand, failure or submit(grade, plan, cand)))
        while grading and (not overlap or len(grading) > 1):
            yield _graded(*grading.popleft(), stats)
    while grading:
        yield _graded(*grading.popleft(), stats)


def _graded(cand, pending, stats):
    return cand, pending if isinstance(pending, dict) else settle("grade", pending, cand, stats)


class RecipeFailed(RuntimeError):
    pass


@flow(name="mergeval-recipe", log_prints=True, persist_result=False)  # the parent reads the summary file
def recipe(model: str, request: dict) -> dict:
    """build → answer → grade for one model of a sweep (a child run: the parent ranks).

    request: the parent's SweepRequest.parameters(), so a child plans exactly what its parent did.
    """
    req = SweepRequest.from_parameters(**request)
    plan = req.plan()
    stats = stages.empty_stats()
    one = replace(plan, candidates=(plan.candidate(model),))
    [(_, failure)] = models_in_order(one, stats, overlap=False)
    deployments.report_to_parent(req.workspace, stats, failure)
    if failure:
        raise RecipeFailed(f"{failure['stage']} {model} failed: {failure['error']}")
    return stats
