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

from prefect import flow, task
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from mergeval.core.errors import SweepFailed
from mergeval.core.lock import workspace_lock
from mergeval.engine import stage_process, stages
from mergeval.engine.request import SweepRequest
from mergeval.orchestration import deployments, ui_artifacts


def _log(message: str) -> None:
    get_run_logger().info(message)


@task
def report(plan, graded, stats, failures, settings, started) -> str:
    return str(stage_process.call(stages.finish, plan, graded, stats, failures, settings, started))


# Three threads: the next merge's build, this model's answers, the last model's grades.
# The parameters are flat, so that the UI shows them as a form; the first line of the body
# makes them the one SweepRequest (engine/request.py) that everything below is given.
@flow(name="mergeval-sweep", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=3))
def sweep(
    configs: str = "merge_configs/toy",
    items: str = "items/toy",
    judge: str | None = None,  # None: judge/toy/proctora.yaml for items/toy, else judge/proctora.yaml
    keep: str = "top-3",
    workspace: str | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 512,  # for items whose suite.yaml and front matter do not say
    backend: str = "transformers",  # how models answer: transformers, vllm or openai
    endpoint: str | None = None,  # openai: where the models under test are served
    served_model: str | None = None,  # openai: the name sent, {name} / {path} filled in; None: the folder
    device: str = "auto",  # where models answer (transformers, vllm)
    dtype: str = "auto",  # how they answer: auto = float32 on a CPU, the checkpoint's own on a GPU
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    merge_device: str = "cpu",  # engine/build.py MergeSettings: where mergekit merges
    merge_dtype: str | None = None,  # the merges' out_dtype (part of the build key); None: the recipe's
    lazy_unpickle: bool = False,
    low_cpu_memory: bool = False,
    shard_size: str | None = None,  # mergekit's out_shard_size, e.g. "2B"
    pool: str | None = None,  # a work pool: one child flow run per model, taken by its workers
    overlap: bool = True,  # in one process: build the next merge while this model is answered
    trust_remote_code: list[str] | None = None,  # models whose folder's Python may run (remote_code.py)
) -> str:
    request = SweepRequest.from_parameters(**locals())  # exactly the parameters above, as one record
    started = datetime.now(timezone.utc)
    # flows/recipe.py: the per-model tasks and child flow (looked up here, not at import, so
    # a served run's pickled flow carries a path, not a module its process cannot import)
    recipe = deployments.sibling(__file__, "recipe")
    request.check()  # a bad keep, or vllm without a GPU: say so before any work
    with workspace_lock(request.ws.state):  # one sweep per workspace: the caches are shared
        plan = request.plan()
        stage_process.call(stages.check_judge, plan)  # before any GPU time: is the judge there?

        stats = stages.empty_stats()
        if request.pool:  # each model's build → answer → grade on whichever worker takes it
            finished = deployments.run_children(plan, request, stats, log=_log)
        else:
            finished = recipe.models_in_order(plan, stats, overlap=request.overlap)
        failures, graded = [], []
        ui_artifacts.progress(0, len(plan.candidates))  # UI: models done / total
        for cand, failure in finished:  # in plan order, as each model is graded (or fails)
            if failure:
                failures.append(failure)
            else:
                graded.append(cand)
                stages.prune(plan, graded, request.keep, log=_log)
            ui_artifacts.progress(len(graded) + len(failures), len(plan.candidates))
        run_dir = report(quote(plan), graded, stats, failures, request.settings_record(plan), started)  # quote: recipe.py
    ui_artifacts.publish(run_dir)  # UI: the ranking table and the summary with report.html's path
    _log(f"report: {run_dir}/report.md")
    if failures:
        raise SweepFailed(run_dir, len(failures))
    stages.check_mostly_scored(run_dir)  # a mostly unscored ranking is no result
    return run_dir
