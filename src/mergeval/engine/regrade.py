"""Grade a finished run's stored answers again with other judge settings: a new run folder,
without merging or answering anything.

    mergeval regrade reports/20261125T154355Z_65d51f --judge judge/strict.yaml
    mergeval regrade latest                       # the newest run, with judge/ as it is now

The plan is rebuilt from the run's own settings (recipes, items, generation), so the stored
answers are found by the same content keys the sweep used. The items must be exactly the
ones the run answered (their hashes are in run.json): grading other questions against old
answers would be a different exam, so a changed suite is refused, not regraded.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from mergeval.core.workspace import Workspace
from mergeval.engine import stages
from mergeval.engine.request import SweepRequest
from mergeval.proctora.judge import Judge


class RegradeRefused(RuntimeError):
    """The run cannot be graded again as it is (its items or answers are not what it used)."""


def changed_items(recorded: dict[str, str], items) -> list[str]:
    now = {it.id: it.hash for it in items}
    lines = [f"  {i}: removed" for i in sorted(set(recorded) - set(now))]
    lines += [f"  {i}: added" for i in sorted(set(now) - set(recorded))]
    lines += [f"  {i}: edited" for i in sorted(set(now) & set(recorded)) if now[i] != recorded[i]]
    return lines


def regrade(ws: Workspace, run_dir: Path, judge_file: Path | None = None, log=print) -> Path:
    """Grade `run_dir`'s answers with `judge_file` (default: the run's); returns the new run folder."""
    started = datetime.now(timezone.utc)
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    settings = run["settings"]
    if "search" in settings:  # its plan is a study's finalists on held-out items, not a folder of recipes
        raise RegradeRefused(f"run {run['run']} is a recipe search's held-out ranking: regrading a search run "
                             "is not supported yet; run the same `mergeval search` with --judge instead "
                             "(answers are reused, only the grades are made)")
    # The run's own request (recipes, items, generation), with the judge swapped in: the
    # answers are then found by the very keys the sweep stored them under.
    request = SweepRequest.from_record(ws.root, settings).with_judge(str(judge_file or ws.resolve(settings["judge"])))
    plan = request.plan()

    changed = changed_items(run["hashes"]["items"], plan.items)
    if changed:
        raise RegradeRefused(
            f"the items in {settings['items']} are not the ones run {run['run']} answered:\n"
            + "\n".join(changed[:20]) + ("\n  ..." if len(changed) > 20 else "")
            + "\nRestore them (e.g. from git) or run a new sweep; regrade only changes the judge.")

    failed = {f["model"] for f in run["failures"]}
    graded = []
    for recorded in run["models"]:
        if recorded["name"] in failed:
            continue  # it had no complete answers in that run either
        try:
            cand = plan.candidate(recorded["name"])
        except StopIteration:
            raise RegradeRefused(f"model {recorded['name']} of run {run['run']} is no longer "
                                 f"in {settings['configs']}") from None
        if cand.model_id != recorded["model_id"]:
            raise RegradeRefused(f"model {cand.name}: its recipe or source models changed since run {run['run']} "
                                 f"({recorded['model_id']} then, {cand.model_id} now)")
        if not stages.answers_complete(plan, cand):
            raise RegradeRefused(f"model {cand.name}: the answers of run {run['run']} are no longer stored "
                                 f"in {stages.answers_path(plan, cand)} (was {ws.state} deleted?)")
        graded.append(cand)

    with Judge(plan.judge, ws) as check:  # a judge that cannot answer fails before any grading
        check.check_alive()
    stats = stages.empty_stats()
    for cand in graded:  # every answer is stored: the answer stage counts as cached, nothing built
        stages.count_cached(stats, "answer", {"executed": 0, "cached": len(plan.items)})
        stages.count(stats, "grade", stages.grade_stage(plan, cand, log=log))
    new_settings = {**settings, **request.settings_record(plan), "regraded_from": run["run"]}
    return stages.finish(plan, graded, stats, list(run["failures"]), new_settings, started)
