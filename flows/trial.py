"""One trial of a recipe search, as a child flow run that a work pool's worker takes.

    mergeval worker --pool gpus                                   # on each box (cli/orchestration.py)
    mergeval search SPACE --trials 24 --pool gpus --parallel 4    # the parent: one child run per trial

The parent search flow (flows/search.py) asks Optuna for a trial, writes its concrete recipe to
.mergeval/search/<study>/trials/<name>.yaml and starts `trial(model=<name>, request=...)` on
the pool's `mergeval-trial/<pool>` deployment (orchestration/deployments.py). The child plans
the search exactly as its parent did (request: SearchRequest.parameters()), then runs that one
recipe's build → answer → grade on the search items through flows/recipe.py's tasks, cached by
content; the parent reads the score from the grades in the workspace and tells Optuna. With
`finalists` it is one model of the held-out ranking instead: a finalist or a source model, on
the held-out items. A trial is not a sweep model: its items are the search part of the suite,
which no sweep request can say, hence this flow beside the recipe one.
"""

from __future__ import annotations

from dataclasses import replace

from prefect import flow

from mergeval.engine import stages
from mergeval.inputs.recipes import load_recipe
from mergeval.orchestration import deployments
from mergeval.search.request import SearchRequest


class TrialFailed(RuntimeError):
    pass


@flow(name="mergeval-trial", log_prints=True, persist_result=False)  # the parent reads the summary file
def trial(model: str, request: dict, finalists: list[str] | None = None) -> dict:
    """build → answer → grade of one trial's recipe `model` on the search items; with
    `finalists` (recipe names), of one model of the held-out ranking on the held-out items."""
    recipe = deployments.sibling(__file__, "recipe")  # the sweep's per-model tasks
    req = SearchRequest.from_parameters(**request)
    plan = req.plan()
    ws = plan.base.workspace
    if finalists is None:
        one = plan.trial_plan(load_recipe(plan.trials_dir / f"{model}.yaml", ws))
    else:
        held = plan.heldout_plan([load_recipe(plan.trials_dir / f"{name}.yaml", ws) for name in finalists])
        one = replace(held, candidates=(held.candidate(model),))
    stats = stages.empty_stats()
    [(_, failure)] = recipe.models_in_order(one, stats, overlap=False)
    deployments.report_to_parent(req.workspace, stats, failure)
    if failure:
        raise TrialFailed(f"{failure['stage']} {model} failed: {failure['error']}")
    return stats
