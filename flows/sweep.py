"""The sweep as a Prefect flow: validate → (build → answer → grade) per model → rank.

    mergeval sweep                                   # the toy sweep, embedded Prefect
    mergeval sweep merge_configs/mine --items items/mine --judge judge/proctora.yaml

One task per (model, stage), named after both, so the Prefect UI reads like the sweep. Each
task's cache key is the content hash of what it depends on, and results persist under the
workspace, so running the same command again runs only what is not done. A model whose
stage fails does not stop the others; the flow ends Failed after everything else has run.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from mergeval import stages
from mergeval.answer import GenerationSettings
from mergeval.errors import SweepFailed
from mergeval.plan import plan_sweep
from mergeval.proctora.judge import Judge
from mergeval.workspace import Workspace

STAGES = ("build", "answer", "grade")


def by_content(context: TaskRunContext, parameters: dict) -> str:
    """Cache key: the stage's content hash, computed by the engine and passed in."""
    return parameters["key"]


def _log(message: str) -> None:
    get_run_logger().info(message)


@task(cache_key_fn=by_content, persist_result=True)
def build(plan, cand, key: str) -> dict:
    return stages.build_stage(plan, cand, log=_log)


@task(cache_key_fn=by_content, persist_result=True)
def answer(plan, cand, key: str) -> dict:
    return stages.answer_stage(plan, cand, log=_log)


@task(cache_key_fn=by_content, persist_result=True)
def grade(plan, cand, key: str) -> dict:
    return stages.grade_stage(plan, cand, log=_log)


@task
def report(plan, graded, stats, failures, settings, started) -> str:
    return str(stages.finish(plan, graded, stats, failures, settings, started))


def run_stage(stage_task, plan, cand, stats: dict, *, key: str, done: bool):
    """Run one stage as a task named '<stage> <model>'; returns its Prefect state.

    A stage whose outputs on disk are gone refreshes its cache entry instead of trusting it.
    """
    state = stage_task.with_options(
        name=f"{stage_task.name}",
        task_run_name=f"{stage_task.name} {cand.name}",
        result_storage=plan.workspace.state / "prefect-results",
        refresh_cache=not done,
    )(plan, cand, key, return_state=True)
    s = stats[stage_task.name]
    if state.is_failed():
        s["failed"] += 1
        return state
    summary = state.result()
    work = summary["executed"] + summary["cached"]  # items (answers, grades) or 1 for a build
    if state.name == "Cached":  # Prefect found the result: the task body did not run
        s["cached"] += 1
        s["items_cached"] += work
    else:
        s["executed" if summary["executed"] else "cached"] += 1
        s["items_executed"] += summary["executed"]
        s["items_cached"] += summary["cached"]
        s["seconds"] += summary["seconds"]
    return state


@flow(name="mergeval-sweep", log_prints=True)
def sweep(
    configs: str = "merge_configs/toy",
    items: str = "items/toy",
    judge: str = "judge/proctora.yaml",
    keep: str = "top-3",
    workspace: str | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 64,
) -> str:
    started = datetime.now(timezone.utc)
    ws = Workspace(Path(workspace).resolve()) if workspace else Workspace.find()
    stages.parse_keep(keep)  # a bad --keep fails before any work
    plan = plan_sweep(ws, ws.resolve(configs), ws.resolve(items), ws.resolve(judge),
                      GenerationSettings(batch_size=batch_size, max_new_tokens=max_new_tokens))
    with Judge(plan.judge, ws) as judge_check:  # before any GPU time: is the judge there?
        judge_check.check_alive()

    stats = {s: {"executed": 0, "cached": 0, "failed": 0, "items_executed": 0, "items_cached": 0,
                 "seconds": 0.0} for s in STAGES}
    failures, graded = [], []
    for cand in plan.candidates:
        if stages.needs_build(plan, cand):
            state = run_stage(build, plan, cand, stats, key=cand.key, done=stages.built(cand))
            if state.is_failed():
                failures.append({"model": cand.name, "stage": "build", "error": state.message})
                continue
        state = run_stage(answer, plan, cand, stats, key=stages.answer_key(plan, cand),
                          done=stages.answers_complete(plan, cand))
        if state.is_failed():
            failures.append({"model": cand.name, "stage": "answer", "error": state.message})
            continue
        state = run_stage(grade, plan, cand, stats, key=stages.grade_stage_key(plan, cand),
                          done=stages.grades_complete(plan, cand))
        if state.is_failed():
            failures.append({"model": cand.name, "stage": "grade", "error": state.message})
            continue
        graded.append(cand)
        stages.prune(plan, graded, keep, log=_log)

    settings = {"configs": configs, "items": items, "judge": judge, "keep": keep,
                "generation": plan.generation.__dict__, "judge_settings": plan.judge.model_dump(exclude={"template_text"})}
    run_dir = report(plan, graded, stats, failures, settings, started)
    _log(f"report: {run_dir}/report.md")
    if failures:
        raise SweepFailed(run_dir, len(failures))
    return run_dir
