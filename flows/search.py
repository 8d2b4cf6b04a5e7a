"""The recipe search as a Prefect flow: trials through the sweep's own tasks, then the
held-out ranking.

    mergeval search merge_configs/search/toy_ties.yaml --trials 24
    mergeval search SPACE --trials 24 --sampler cmaes --seed 1
    mergeval search SPACE --trials 24 --parallel 3        # three trials at once in this flow run

Each trial's build → answer → grade are flows/recipe.py's tasks ("build <trial recipe>", ...),
cached by content like a sweep's, so the Prefect UI reads like a sweep whose models appear one
by one; a repeated recipe's tasks come back Cached. The study itself (which values were tried,
their scores) lives in the workspace's Optuna journal (src/mergeval/search/study.py): the same
command resumes it, whatever Prefect's database holds. With `parallel`, that many trials run at
once, each in a thread of this flow run (Optuna asked and told in the flow's own thread; the
sweep's GPU_LOCK keeps answering one model at a time, so merges build beside it). Trials on
work-pool workers (`--pool`, as the sweep has) are not built yet.
"""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger

from mergeval.core.errors import SweepFailed
from mergeval.core.lock import workspace_lock
from mergeval.engine import stages
from mergeval.orchestration import deployments, ui_artifacts
from mergeval.search.heldout import run_search
from mergeval.search.request import SearchRequest


def _log(message: str) -> None:
    get_run_logger().info(message)


@flow(name="mergeval-search", log_prints=True)
def search(
    space: str,
    trials: int = 24,
    sampler: str = "tpe",
    seed: int = 0,
    items: str = "items/toy",
    judge: str | None = None,  # None: judge/toy/proctora.yaml for items/toy, else judge/proctora.yaml
    finalists: int = 3,
    holdout: float = 0.5,
    split_seed: int = 0,
    keep: str = "top-3",
    startup_trials: int = 8,
    retry_failed: bool = False,
    parallel: int = 1,  # trials at once, each in a thread of this flow run (search/study.py)
    workspace: str | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 64,
    backend: str = "transformers",
    endpoint: str | None = None,
    served_model: str | None = None,  # as in flows/sweep.py: the answering settings of every trial
    device: str = "auto",
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> str:
    request = SearchRequest.from_parameters(**locals())
    recipe = deployments.sibling(__file__, "recipe")  # the sweep's per-model tasks

    def evaluate(plan, stats):
        return recipe.models_in_order(plan, stats, overlap=False)

    request.check()
    with workspace_lock(request.ws.state, what="search"):
        plan = request.plan()
        stages.check_judge(plan.base)
        run_dir, failures = run_search(plan, evaluate, log=_log)
    ui_artifacts.publish(run_dir)
    _log(f"report: {run_dir}/report.md")
    if failures:
        raise SweepFailed(str(run_dir), len(failures))
    return str(run_dir)
