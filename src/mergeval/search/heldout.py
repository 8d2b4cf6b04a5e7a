"""After the trials: the best few and the source models, ranked on the held-out items only.

    run_dir = finish(trials, evaluate, stats, settings, started)

The finalists are the `--finalists` best distinct recipes by their search score. They and the
models they merge are planned like a sweep whose items are the held-out part of the suite, run
through the same stages, and ranked by engine/stages.finish with the usual intervals, so the
run folder is a normal one (ranking.csv, report.md, report.html, results.jsonl, run.json) plus
trials.csv (every trial), best.yaml (the best finalist on the held-out items, as a plain
mergekit recipe with its search lineage in a comment header), search.md (the study, score
against trial, the parameters' importance) and trials.svg (score against trial, as a plot).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from mergeval.engine import stages
from mergeval.inputs.recipes import load_recipe
from mergeval.search.space import recipe_text
from mergeval.search.study import Trials, journal_path


class NoTrialScored(RuntimeError):
    pass


TRIAL_COLUMNS = ("number", "state", "score", "seconds", "recipe")


def trials_csv(trials: Trials, finalists: dict[str, float]) -> str:
    dims = [d.name for d in trials.plan.space.dims]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*TRIAL_COLUMNS, *dims, "heldout_score", "note"])
    for t in trials.study.get_trials(deepcopy=False):
        name = t.user_attrs.get("recipe", "")
        note = t.user_attrs.get("failure") or ("cut off by a kill; asked again" if t.user_attrs.get("interrupted") else "")
        if "retry_of" in t.user_attrs:
            note = (note + "; " if note else "") + f"asks trial {t.user_attrs['retry_of']} again"
        if t.user_attrs.get("retried"):
            note += "; asked again (--retry-failed)"
        w.writerow([t.number, t.state.name, "" if t.value is None else f"{t.value:.4f}",
                    t.user_attrs.get("seconds", ""), name, *(_cell(t.params.get(d)) for d in dims),
                    f"{finalists[name]:.4f}" if name in finalists else "", note])
    return out.getvalue()


def _cell(v) -> str:
    return "" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def best_yaml(trials: Trials, trial, heldout_score: float, beaten: list[str], n_finalists: int) -> str:
    plan, r = trials.plan, trials.plan.request
    dims = {d.name: d for d in plan.space.dims}
    values = "\n".join(f"  {k} = {_cell(dims[k].concrete(v))}" for k, v in trial.params.items())
    header = (
        f"best.yaml: the best of {n_finalists} finalist(s) on the held-out items, found by\n"
        f"  mergeval search {r.space} --trials {r.trials} --sampler {r.sampler} --seed {r.seed}\n"
        f"study {plan.study_name} ({journal_path(plan).relative_to(plan.base.workspace.root)})\n"
        f"trial {trial.number} (recipe {trial.user_attrs['recipe']}): {trial.value:.4f} on "
        f"{len(plan.search_items)} search items, {heldout_score:.4f} on {len(plan.heldout_items)} held-out items\n"
        f"held-out split: {r.holdout:g} of each skill, split seed {r.split_seed}\n"
        + (f"beats on the held-out items: {', '.join(beaten)}\n" if beaten else "")
        + f"values:\n{values}\nA plain mergekit recipe: mergeval validate / sweep it like any other."
    )
    return recipe_text(trials.plan.space.instantiate(lambda d: d.concrete(trial.params[d.name])), header=header)


def search_md(trials: Trials, finalists: list, heldout: dict[str, float]) -> str:
    plan = trials.plan
    done = [t for t in trials.study.get_trials(deepcopy=False) if t.value is not None]
    lines = [f"# Search: {plan.space.path.name}", "",
             f"Study `{plan.study_name}`, sampler {plan.request.sampler}, seed {plan.request.seed}: "
             f"{len(done)} scored trial(s) on {len(plan.search_items)} search items; the finalists and "
             f"the source models ranked on {len(plan.heldout_items)} held-out items (report.md).", "",
             "## Finalists", "", "| trial | recipe | search score | held-out score |", "|---|---|---|---|"]
    for t in finalists:
        name = t.user_attrs["recipe"]
        h = heldout.get(name)
        lines.append(f"| {t.number} | {name} | {t.value:.3f} | {'–' if h is None else f'{h:.3f}'} |")
    lines += ["", "## Score against trial", "", "![score against trial](trials.svg)", "",
              "| trial | score | best so far |", "|---|---|---|"]
    best = float("-inf")
    for t in sorted(done, key=lambda t: t.number):
        best = max(best, t.value)
        lines.append(f"| {t.number} | {t.value:.3f} | {best:.3f} |")
    lines += ["", "## Parameters' importance (Optuna's default evaluator, on the search scores)", ""]
    lines += _importance(trials)
    return "\n".join(lines) + "\n"


def trials_svg(trials: Trials) -> str:
    """Score against trial (dots) and the best so far (a step line): one self-contained SVG."""
    done = sorted((t for t in trials.study.get_trials(deepcopy=False) if t.value is not None), key=lambda t: t.number)
    w, h, pad = 640, 320, 40
    last = max((t.number for t in done), default=1) or 1
    lo, hi = min((t.value for t in done), default=0.0), max((t.value for t in done), default=1.0)
    lo, hi = (lo - 0.05, hi + 0.05) if hi - lo < 1e-9 else (lo, hi)

    def xy(n: int, v: float) -> tuple[float, float]:
        return pad + (w - 2 * pad) * n / last, h - pad - (h - 2 * pad) * (v - lo) / (hi - lo)

    dots = "".join('<circle cx="%.1f" cy="%.1f" r="3" fill="#4c72b0"/>' % xy(t.number, t.value) for t in done)
    best, path = float("-inf"), []
    for t in done:
        best = max(best, t.value)
        path.append("%.1f,%.1f" % xy(t.number, best))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">'
            f'<rect width="{w}" height="{h}" fill="white"/>'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#888"/>'
            f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">trial (0 to {last})</text>'
            f'<text x="4" y="{pad - 8}">search score ({lo:.3f} to {hi:.3f}); line: best so far</text>'
            f'<polyline points="{" ".join(path)}" fill="none" stroke="#dd8452" stroke-width="2"/>{dots}</svg>\n')


def _importance(trials: Trials) -> list[str]:
    import warnings

    from optuna.importance import get_param_importances

    try:
        with warnings.catch_warnings():  # "importances will be equal" on a few flat trials: said below
            warnings.simplefilter("ignore")
            imp = get_param_importances(trials.study)
    except (RuntimeError, ValueError) as e:  # too few trials, or a single value everywhere
        return [f"not computed: {e}"]
    return [f"- {k}: {v:.2f}" for k, v in imp.items()] or ["not computed: no varying parameter"]


def finish(trials: Trials, evaluate, stats: dict, settings: dict, started: datetime, log=print):
    """Rank the finalists and the sources on the held-out items; write the run folder."""
    plan = trials.plan
    finalists = trials.ranked()[: plan.request.finalists]
    if not finalists:
        raise NoTrialScored(f"none of {trials.done()} trial(s) was scored (see {journal_path(plan)}): "
                            "nothing to rank on the held-out items")
    recipes = [load_recipe(plan.trials_dir / f"{t.user_attrs['recipe']}.yaml", plan.base.workspace) for t in finalists]
    held = plan.heldout_plan(recipes)
    log(f"held-out ranking: {len(finalists)} finalist(s) and {len(held.candidates) - len(finalists)} source "
        f"model(s) on {len(held.items)} held-out items")
    graded, failures = [], []
    for cand, failure in evaluate(held, stats):
        (failures.append(failure) if failure else graded.append(cand))
    scores = {c.name: stages.mean_score(held, c) for c in graded}
    merged = [t for t in finalists if t.user_attrs["recipe"] in scores]
    extras = {"trials.csv": trials_csv(trials, {k: v for k, v in scores.items() if k in {r.name for r in recipes}}),
              "search.md": search_md(trials, finalists, scores), "trials.svg": trials_svg(trials)}
    if merged:
        best = max(merged, key=lambda t: (scores[t.user_attrs["recipe"]], -t.number))
        name = best.user_attrs["recipe"]
        parents = [c for c in held.candidates if c.kind == "source" and c.name in scores]
        beaten = [f"{c.name} ({scores[c.name]:.3f})" for c in parents if scores[c.name] < scores[name]]
        extras["best.yaml"] = best_yaml(trials, best, scores[name], beaten, len(finalists))
    record = {"search": {
        "study": plan.study_name, "storage": str(journal_path(plan)), "space": str(plan.space.path),
        "trials_finished": trials.done(), "trials_run_now": trials.ran_now, "asked_again": trials.recovered,
        "search_items": [it.id for it in plan.search_items], "heldout_items": [it.id for it in plan.heldout_items],
        "finalists": [{"trial": t.number, "recipe": t.user_attrs["recipe"], "search_score": t.value,
                       "heldout_score": scores.get(t.user_attrs["recipe"])} for t in finalists],
        "best": extras.get("best.yaml") and best.user_attrs["recipe"],
    }}
    return stages.finish(held, graded, stats, failures, settings, started, extras=extras, run_extra=record), failures


def run_search(plan, evaluate, log=print, evaluate_heldout=None):
    """The whole search: trials until --trials are finished, then the held-out ranking.
    `evaluate_heldout` runs the held-out plan (default: `evaluate`; a pool's differs: its child
    runs are told which finalists to plan). Returns (run folder, failures of the held-out stage).
    The caller holds the workspace lock."""
    from datetime import timezone

    from mergeval.engine.request import parse_keep

    started, stats = datetime.now(timezone.utc), stages.empty_stats()
    trials = Trials(plan, log=log)
    trials.run(evaluate, stats, parse_keep(plan.request.keep))
    return finish(trials, evaluate_heldout or evaluate, stats, plan.request.settings_record(plan), started, log=log)
