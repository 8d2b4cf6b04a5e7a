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
import time
from datetime import datetime, timezone
from pathlib import Path

from . import stages
from .answer import GenerationSettings
from .plan import plan_sweep
from .proctora.judge import Judge
from .workspace import Workspace


class RegradeRefused(RuntimeError):
    """The run cannot be graded again as it is (its items or answers are not what it used)."""


def find_run(ws: Workspace, run: str) -> Path:
    """A run folder: a path, a run name under reports/, or `latest`."""
    if run == "latest":
        runs = sorted(p for p in ws.reports.glob("2*") if (p / "run.json").is_file())
        if not runs:
            raise RegradeRefused(f"no finished run in {ws.reports}")
        return runs[-1]
    for path in (ws.resolve(run), ws.reports / run):
        if (path / "run.json").is_file():
            return path
    raise RegradeRefused(f"{run}: not a run folder (no run.json there or in {ws.reports / run})")


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
    judge_file = judge_file or ws.resolve(settings["judge"])
    # The run's own recipes, items and generation settings, with the judge swapped in: the
    # answers are then found by the very keys the sweep stored them under.
    plan = plan_sweep(ws, ws.resolve(settings["configs"]), ws.resolve(settings["items"]), judge_file,
                      GenerationSettings(**settings["generation"]),
                      trust_remote_code=settings.get("trust_remote_code", ()))  # the same models, same ids

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
    zero = {"executed": 0, "cached": 0, "failed": 0, "items_executed": 0, "items_cached": 0, "seconds": 0.0}
    stats = {"build": dict(zero), "answer": dict(zero, cached=len(graded), items_cached=len(graded) * len(plan.items)),
             "grade": dict(zero)}
    for cand in graded:
        t = time.perf_counter()
        summary = stages.grade_stage(plan, cand, log=log)
        s = stats["grade"]
        s["executed" if summary["executed"] else "cached"] += 1
        s["items_executed"] += summary["executed"]
        s["items_cached"] += summary["cached"]
        s["seconds"] += time.perf_counter() - t
    new_settings = {**settings, "judge": str(judge_file), "regraded_from": run["run"],
                    "judge_settings": plan.judge.model_dump(exclude={"template_text", "trust_remote_code"})}
    return stages.finish(plan, graded, stats, list(run["failures"]), new_settings, started)

