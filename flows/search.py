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
sweep's GPU_LOCK keeps answering one model at a time, so merges build beside it).

    mergeval search SPACE --trials 24 --pool gpus     # each trial a child run on the pool's workers

With `pool`, Optuna is still asked and told here (its journal stays in the workspace, with one
writer), but each trial is a child flow run of flows/trial.py that any `mergeval worker` takes,
`parallel` of them in flight (default: the pool's online workers, or 2); the parent waits for
it as a pooled sweep does, then reads its score from the grades it left in the workspace. A
child that fails is a failed trial. The held-out ranking's models are child runs too.
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


def _evaluators(request: SearchRequest):
    """(a trial's evaluate, the held-out ranking's): the sweep's tasks in this flow run, or
    child runs of flows/trial.py on the pool (each yields (model, failure or None) per model)."""
    if not request.pool:
        recipe = deployments.sibling(__file__, "recipe")  # the sweep's per-model tasks

        def here(plan, stats):
            return recipe.models_in_order(plan, stats, overlap=False)

        return here, here
    deployments.sibling(__file__, "trial")  # deployed from the folder this flow came from
    child = deployments.ensure_child_deployment(request.pool, "trial")
    deployments.wait_for_orphans(request.workspace, deployments.TRIAL_FLOW, log=_log)  # a killed search's

    def trial(one, stats):  # one trial: its recipe on the search items
        return deployments.run_children(one, request, stats, log=_log, deployment=child)

    def heldout(held, stats):  # the finalists and their sources, on the held-out items
        return deployments.run_children(held, request, stats, log=_log, deployment=child,
                                        extra={"finalists": [r.name for r in held.recipes]}, label="held-out")

    return trial, heldout


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
    parallel: int | None = None,  # trials at once (search/study.py); None: 1, with a pool its worker count or 2
    pool: str | None = None,  # a work pool: each trial a child run of flows/trial.py on its workers
    workspace: str | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 64,
    backend: str = "transformers",
    endpoint: str | None = None,
    served_model: str | None = None,  # as in flows/sweep.py: the answering settings of every trial
    device: str = "auto",
    dtype: str = "auto",  # as in flows/sweep.py
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> str:
    if pool:
        deployments.need_server(pool)
        if parallel is None:
            parallel = deployments.online_workers(pool) or 2
            _log(f"{parallel} trial(s) at once on work pool {pool!r}")
    request = SearchRequest.from_parameters(**locals())
    request.check()
    with workspace_lock(request.ws.state, what="search"):
        plan = request.plan()
        stages.check_judge(plan.base)
        evaluate, evaluate_heldout = _evaluators(request)
        run_dir, failures = run_search(plan, evaluate, log=_log, evaluate_heldout=evaluate_heldout)
    ui_artifacts.publish(run_dir)
    _log(f"report: {run_dir}/report.md")
    if failures:
        raise SweepFailed(str(run_dir), len(failures))
    return str(run_dir)
