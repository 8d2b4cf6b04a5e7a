"""The sweep as a Prefect flow: validate → (build → answer → grade) per model → rank.

    mergeval sweep                                   # the toy sweep, embedded Prefect
    mergeval sweep merge_configs/mine --items items/mine --judge judge/proctora.yaml
    mergeval schedule --cron "0 2 * * *" --pool gpus # served nightly; models spread over workers

One task per (model, stage), named after both, so the Prefect UI reads like the sweep (the
tasks live in flows/recipe.py). Each task's cache key is the content hash of what it depends
on, and results persist under the workspace, so running the same command again runs only
what is not done. A model whose stage fails does not stop the others; the flow ends Failed
after everything else has run. In one process the next merge is built while the current
model is answered; with `pool`, each model is a child flow run that any worker can take.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from mergeval import answer_backends, artifacts, deploy, stages
from mergeval.answer import GenerationSettings
from mergeval.errors import SweepFailed
from mergeval.lock import workspace_lock
from mergeval.plan import plan_sweep
from mergeval.workspace import Workspace

def _log(message: str) -> None:
    get_run_logger().info(message)


@task
def report(plan, graded, stats, failures, settings, started) -> str:
    return str(stages.finish(plan, graded, stats, failures, settings, started))


# Three threads: the next merge's build, this model's answers, the last model's grades.
@flow(name="mergeval-sweep", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=3))
def sweep(
    configs: str = "merge_configs/toy",
    items: str = "items/toy",
    judge: str = "judge/proctora.yaml",
    keep: str = "top-3",
    workspace: str | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 64,
    backend: str = "transformers",  # how models answer: transformers, vllm or openai
    endpoint: str | None = None,  # openai: where the models under test are served
    pool: str | None = None,  # a work pool: one child flow run per model, taken by its workers
    overlap: bool = True,  # in one process: build the next merge while this model is answered
    trust_remote_code: list[str] | None = None,  # models whose folder's Python may run (remote_code.py)
) -> str:
    started = datetime.now(timezone.utc)
    # flows/recipe.py: the per-model tasks and child flow (looked up here, not at import, so
    # a served run's pickled flow carries a path, not a module its process cannot import)
    recipe = deploy.sibling(__file__, "recipe")
    ws = Workspace(Path(workspace).resolve()) if workspace else Workspace.find()
    stages.parse_keep(keep)  # a bad --keep fails before any work
    generation = GenerationSettings(batch_size=batch_size, max_new_tokens=max_new_tokens,
                                    backend=backend, endpoint=endpoint)
    answer_backends.check(generation)  # e.g. vllm without a GPU: say so before any work
    with workspace_lock(ws.state):  # one sweep per workspace: the caches are shared
        plan = plan_sweep(ws, ws.resolve(configs), ws.resolve(items), ws.resolve(judge), generation,
                          trust_remote_code=trust_remote_code or ())
        stages.check_judge(plan)  # before any GPU time: is the judge there?

        stats = stages.empty_stats()
        if pool:  # each model's build → answer → grade on whichever worker takes it
            child = {"workspace": str(ws.root), "configs": configs, "items": items, "judge": judge,
                     "batch_size": batch_size, "max_new_tokens": max_new_tokens, "backend": backend,
                     "endpoint": endpoint, "trust_remote_code": trust_remote_code or []}
            finished = deploy.run_children(plan, pool, child, stats, log=_log)
        else:
            finished = recipe.models_in_order(plan, stats, overlap=overlap)
        failures, graded = [], []
        artifacts.progress(0, len(plan.candidates))  # UI: models done / total
        for cand, failure in finished:  # in plan order, as each model is graded (or fails)
            if failure:
                failures.append(failure)
            else:
                graded.append(cand)
                stages.prune(plan, graded, keep, log=_log)
            artifacts.progress(len(graded) + len(failures), len(plan.candidates))

        settings = {"configs": configs, "items": items, "judge": judge, "keep": keep,
                    "generation": plan.generation.__dict__,
                    "judge_settings": plan.judge.model_dump(exclude={"template_text", "trust_remote_code"})}
        if trust_remote_code:  # recorded only when used: regrade needs it to find the same models
            settings["trust_remote_code"] = sorted(trust_remote_code)
        run_dir = report(plan, graded, stats, failures, settings, started)
    artifacts.publish(run_dir)  # UI: the ranking table and the summary with report.html's path
    _log(f"report: {run_dir}/report.md")
    if failures:
        raise SweepFailed(run_dir, len(failures))
    return run_dir
