"""The sweep's stages as plain functions over a plan and a candidate model.

The Prefect flow (flows/sweep.py) wraps each in a task; `run_direct` calls them in a plain
loop (the benchmark's baseline, and proof that the engine needs no Prefect). Each function
returns a small summary dict; the outputs themselves live in the workspace's state folder.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from mergeval.answering import stage as answer
from mergeval.core import store
from mergeval.core.errors import MostlyUnscored
from mergeval.core.hashing import content_hash
from mergeval.engine import build, grade
from mergeval.engine.plan import Candidate, SweepPlan
from mergeval.engine.request import parse_keep
from mergeval.inputs import model_dirs
from mergeval.proctora.conversation import conversation_requests
from mergeval.proctora.judge import Judge, render_request

STAGES = ("build", "answer", "grade")


def empty_stats() -> dict:
    """run.json's per-stage counters: tasks and items executed / cached / failed, seconds, and
    cache entries found damaged on disk and computed again (`repaired`)."""
    stats = {s: {"executed": 0, "cached": 0, "failed": 0, "items_executed": 0, "items_cached": 0,
                 "seconds": 0.0, "repaired": 0} for s in STAGES}
    stats["build"]["rebuilt"] = 0  # merges built again after pruning, because items lack answers
    return stats


def count(stats: dict, name: str, summary: dict) -> None:
    """Add the summary of a stage whose body ran to run.json's counters."""
    s = stats[name]
    s["executed" if summary["executed"] else "cached"] += 1
    s["items_executed"] += summary["executed"]
    s["items_cached"] += summary["cached"]
    s["seconds"] += summary["seconds"]
    s["repaired"] += summary.get("repaired", 0)
    if "rebuilt" in s:
        s["rebuilt"] += summary.get("rebuilt", 0)


def count_cached(stats: dict, name: str, summary: dict) -> None:
    """Count a stage whose saved result was found (a Prefect cache hit): its body did not run,
    so everything its summary covers (items, or 1 for a build) counts as cached."""
    s = stats[name]
    s["cached"] += 1
    s["items_cached"] += summary["executed"] + summary["cached"]


def answers_path(plan: SweepPlan, cand: Candidate) -> Path:
    return answer.answers_file(plan.workspace.state, cand.model_id, plan.generation)


def grades_path(plan: SweepPlan, cand: Candidate) -> Path:
    return grade.grades_file(plan.workspace.state, cand.model_id, plan.judge_fingerprint)


def answer_key(plan: SweepPlan, cand: Candidate) -> str:
    return content_hash({"model": cand.key, "generation": plan.generation.fingerprint(),
                         "items": sorted(answer.record_key(it, plan.generation) for it in plan.items)})


def grade_stage_key(plan: SweepPlan, cand: Candidate) -> str:
    return content_hash({"answers": answer_key(plan, cand), "judge": plan.judge_fingerprint,
                         "items": sorted(it.criterion_hash for it in plan.items)})


def answers_complete(plan: SweepPlan, cand: Candidate) -> bool:
    return not answer.missing_items(answers_path(plan, cand), list(plan.items), plan.generation)


def load_answers(plan: SweepPlan, cand: Candidate) -> dict[str, dict]:
    return answer.saved_answers(answers_path(plan, cand), list(plan.items), plan.generation)


def grades_complete(plan: SweepPlan, cand: Candidate) -> bool:
    if not answers_complete(plan, cand):
        return False
    return not grade.pending(grades_path(plan, cand), list(plan.items), load_answers(plan, cand),
                             plan.judge_fingerprint)


def stage_key(plan: SweepPlan, cand: Candidate, stage: str) -> str:
    """The content key a stage's output is cached under (Prefect's cache key too)."""
    return {"build": lambda: cand.key, "answer": lambda: answer_key(plan, cand),
            "grade": lambda: grade_stage_key(plan, cand)}[stage]()


def outputs_complete(plan: SweepPlan, cand: Candidate, stage: str) -> bool:
    """Whether the stage's outputs are all on disk and intact: a cached stage whose outputs
    are gone, incomplete or damaged must run again, whatever its saved result says."""
    return {"build": lambda: built(cand), "answer": lambda: answers_complete(plan, cand),
            "grade": lambda: grades_complete(plan, cand)}[stage]()


def check_judge(plan: SweepPlan) -> None:
    """Raise JudgeUnavailable (saying what to fix) unless the judge answers, asked only when
    some model still has grading to do: a re-run that finds everything graded need not load
    the judge's tokenizer, and with it transformers and torch, just to check."""
    if any(not grades_complete(plan, c) for c in plan.candidates):
        with Judge(plan.judge, plan.workspace) as judge:
            judge.check_alive()


def built(cand: Candidate) -> bool:
    """Built and intact, every file re-hashed: asked only when the merge is about to be answered."""
    return store.damage(cand.path) is None


def needs_build(plan: SweepPlan, cand: Candidate) -> bool:
    """A merge is built only while its answers are incomplete: weights pruned after
    answering are not rebuilt just to learn what is already saved."""
    return cand.kind == "merge" and not answers_complete(plan, cand)


def build_stage(plan: SweepPlan, cand: Candidate, log=print) -> dict:
    missing = len(answer.missing_items(answers_path(plan, cand), list(plan.items), plan.generation))
    answered_before = missing < len(plan.items)  # its weights were pruned after an earlier run
    built = build.build(cand.recipe, plan.workspace, key=cand.key, trust_remote_code=cand.trust_remote_code,
                        merge=plan.merge)
    rebuilt = not built.cached and answered_before
    log(f"build {cand.name}: {'cached' if built.cached else f'built in {built.seconds:.1f}s'}"
        + (f" (rebuilt: its weights were pruned after an earlier run, and {missing} of {len(plan.items)} "
           "items have no saved answer)" if rebuilt else "")
        + (f" (the cached merge was damaged: {built.repaired})" if built.repaired else "")
        + "".join(f"; stage {name} {'found built' if found else 'built'}" for name, found in built.stages))
    return {"executed": int(not built.cached), "cached": int(built.cached), "seconds": built.seconds,
            "bytes": model_dirs.dir_size(built.path), "repaired": int(built.repaired is not None),
            "rebuilt": int(rebuilt)}


def answer_stage(plan: SweepPlan, cand: Candidate, log=print) -> dict:
    stage = answer.answer_items(cand.model_id, cand.path, list(plan.items), plan.generation.for_model(cand.name, cand.path),
                                answers_path(plan, cand), log=log, trust_remote_code=cand.trust_remote_code)
    log(f"answer {cand.name}: {stage.computed} answered, {stage.reused} already saved"
        + (f", {stage.repaired} damaged saved answer(s) dropped and answered again" if stage.repaired else ""))
    return {"executed": stage.computed, "cached": stage.reused, "seconds": stage.seconds,
            "repaired": stage.repaired}


def grade_stage(plan: SweepPlan, cand: Candidate, log=print) -> dict:
    stage = grade.grade_answers(
        list(plan.items), load_answers(plan, cand), grades_path(plan, cand),
        judge_fingerprint=plan.judge_fingerprint, scale=tuple(plan.judge.scale),
        open_judge=lambda: Judge(plan.judge, plan.workspace, cache_dir=plan.workspace.judge_cache),
        render=lambda item, text: render_request(plan.judge, item, text),
        render_conversation=lambda item, transcript: conversation_requests(plan.judge, item, transcript), log=log,
    )
    log(f"grade {cand.name}: {stage.computed} graded, {stage.reused} already graded"
        + (f", {stage.repaired} damaged saved grade(s) dropped and graded again" if stage.repaired else ""))
    return {"executed": stage.computed, "cached": stage.reused, "seconds": stage.seconds,
            "repaired": stage.repaired}


def load_grades(plan: SweepPlan, cand: Candidate) -> dict[str, dict]:
    answers = load_answers(plan, cand)
    by_key = {r["grade_key"]: r for r in store.read_jsonl(grades_path(plan, cand))}
    return {it.id: by_key[grade.grade_key(answers[it.id]["answer"], it, plan.judge_fingerprint)]
            for it in plan.items}


def result_records(plan: SweepPlan, cand: Candidate) -> list[dict]:
    """The run's results.jsonl lines for one model, in item order."""
    grades, answers = load_grades(plan, cand), load_answers(plan, cand)
    # chat_fold: how the item's messages were folded to fit the model's chat template, or None
    # transcript (a conversation's): every turn, {"turn", "role", "content", "by"}, from the grade
    return [{"model": cand.name, "kind": cand.kind, **{k: v for k, v in grades[it.id].items() if k != "grade_key"},
             "chat_fold": answers[it.id].get("chat_fold")}
            for it in plan.items]


def mean_score(plan: SweepPlan, cand: Candidate) -> float:
    scored = [(g["score"], g["weight"]) for g in load_grades(plan, cand).values() if g["score"] is not None]
    return sum(s * w for s, w in scored) / sum(w for _, w in scored) if scored else float("-inf")


def unscored_record(records: list[dict]) -> dict:
    """run.json's "unscored": how many of the ranked models' grades are unscored, and the first
    one's reason (check_mostly_scored reads it, instead of every grade again)."""
    unscored = [r for r in records if r["score"] is None]
    return {"grades": len(unscored), "of": len(records),
            "first_reason": next((r["unscored_reason"] for r in unscored if r["unscored_reason"]), None)}


def check_mostly_scored(run_dir) -> None:
    """Raise MostlyUnscored when more than half the grades are unscored (after the run folder
    is written, so the report says which and why)."""
    counts = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))["unscored"]
    if counts["of"] and counts["grades"] * 2 > counts["of"]:
        raise MostlyUnscored(str(run_dir), counts["grades"], counts["of"], counts["first_reason"] or "no reason recorded")


def prune(plan: SweepPlan, graded: list[Candidate], keep: str, log=print) -> list[str]:
    """Delete merged weights not in the top-K of the merges graded so far.

    Pruning as merges finish is exact: a merge dropped now already has K better ones, so it
    cannot be in the final top K. A deleted merge rebuilds bit-identically if ever needed.
    """
    k = parse_keep(keep)
    merges = [c for c in graded if c.kind == "merge" and c.path.exists()]
    if k is None:
        return []
    ranked = sorted(merges, key=lambda c: (-mean_score(plan, c), c.name))
    dropped = ranked[k:]
    for c in dropped:
        store.remove_tree(c.path)
        log(f"pruned {c.name}'s weights (not in the top {k}; rebuilds identically)")
    return [c.name for c in dropped]


def finish(plan: SweepPlan, graded: list[Candidate], stats: dict, failures: list[dict],
           settings: dict, started, extras: dict[str, str] | None = None, run_extra: dict | None = None) -> Path:
    """Rank every fully graded model and write the run folder; returns its path. `extras`:
    more files (name → text) for the folder, `run_extra`: more run.json keys (e.g. a search's)."""
    import pandas as pd  # here, not at the top: a re-run's planning never pays for pandas

    from mergeval.report.rank import rank
    from mergeval.report.run_folder import write_run

    records = [r for c in graded for r in result_records(plan, c)]
    frame = pd.DataFrame(records, columns=["model", "item_id", "skill", "weight", "score"]) if records else None
    ranking = rank(frame, graded) if records else pd.DataFrame(columns=["model", "rank", "score", "kind"])
    return write_run(plan, records, ranking, stats, failures, settings, started, plan.workspace.reports,
                     extras=extras, run_extra={"unscored": unscored_record(records), **(run_extra or {})})


def models_direct(plan: SweepPlan, stats: dict, log=lambda message: None):
    """Yield (model, failure or None) per model after its build → answer → grade, in a plain
    loop: the engine's own runner (flows/recipe.models_in_order is the Prefect one)."""
    for cand in plan.candidates:
        failure = None
        for name, body in (("build", build_stage), ("answer", answer_stage), ("grade", grade_stage)):
            if name == "build" and not needs_build(plan, cand):
                continue
            try:
                count(stats, name, body(plan, cand, log=log))
            except Exception as e:  # one model failing does not stop the others
                stats[name]["failed"] += 1
                failure = {"model": cand.name, "stage": name, "error": str(e)}
                break
        yield cand, failure


def nothing_left(plan: SweepPlan) -> bool:
    """Every model's answers and grades are saved and intact: a sweep would only rank."""
    return all(grades_complete(plan, c) for c in plan.candidates)


def run_direct(plan: SweepPlan, settings: dict | None = None, log=lambda message: None, keep: str = "all") -> Path:
    """Every model's build → answer → grade, then the run folder, in one plain loop.

    The flow does the same through Prefect (tasks, cache states, UI); this is the engine on
    its own: the benchmark's baseline, the re-run that finds everything done without a Prefect
    server to show it to (cli/sweep.py), and a fixture for tests that need a finished run.
    """
    started, stats = datetime.now(timezone.utc), empty_stats()
    graded = []
    for cand in plan.candidates:
        if needs_build(plan, cand):
            count(stats, "build", build_stage(plan, cand, log=log))
        count(stats, "answer", answer_stage(plan, cand, log=log))
        count(stats, "grade", grade_stage(plan, cand, log=log))
        graded.append(cand)
        prune(plan, graded, keep, log=log)
    return finish(plan, graded, stats, [], settings or {}, started)
