"""The grade stage: deterministic checks and Proctora for every answer of one model.

How an item's score (0..1) is made, in one place:
- checks: the fraction of the item's checks that pass;
- judge: Proctora's score (mean of its samples) mapped from its scale onto 0..1;
- the item's score is the mean of the parts the item has (checks, judge or both).
If the judge fails on an item that has a criterion, the item is *unscored* (with the reason,
prompt and raw replies kept): a judge failure is never a zero, and dropping the judge part
silently would grade that item on a different scale than the others.

Grades are appended per model to a JSON-lines file keyed by the hash of the answer, the
item's criterion and checks, and the judge's fingerprint (settings + template), so changing
the judge re-grades without re-answering, and a killed stage resumes.

A conversation (inputs/turns.py) is graded as a whole: its checks run on every answer (or the
turn they name), the judge reads the transcript fenced turn by turn (proctora/conversation.py),
or each turn with `grade: per_turn`; a conversation whose player failed is unscored with why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from mergeval.core import store
from mergeval.core.hashing import content_hash, memo_digest
from mergeval.core.progress import ProgressLines
from mergeval.inputs.answer_checks import CheckResult, run_check, run_checks
from mergeval.inputs.items import Item
from mergeval.inputs.turns import checks_for_turn, is_conversation
from mergeval.proctora.conversation import combine_turns

GRADE_CHUNK = 16  # judge requests per batch; each batch's grades are saved before the next


class JudgeLike(Protocol):
    def grade(self, requests: list) -> list: ...


@dataclass(frozen=True)
class GradeStage:
    grades: dict[str, dict]  # item id → grade record
    computed: int
    reused: int
    seconds: float
    repaired: int = 0  # saved grades found damaged on disk (checksum), dropped and graded again


def grade_key(answer: str, item: Item, judge_fingerprint: str) -> str:
    """A saved grade's key. Asked for every item of every model on each pass over the saved
    grades (a re-run makes several), so remembered per process, under a digest of the answer
    rather than the answer itself (answers can be long)."""
    known = (memo_digest(answer), item.criterion_hash, judge_fingerprint)
    key = _GRADE_KEYS.get(known)
    if key is None:
        if len(_GRADE_KEYS) >= 100_000:  # ≈ 30 MB; forgotten, then computed again as asked
            _GRADE_KEYS.clear()
        key = _GRADE_KEYS[known] = content_hash({"answer": answer, "item": item.criterion_hash,
                                                 "judge": judge_fingerprint})
    return key


_GRADE_KEYS: dict[tuple[bytes, str, str], str] = {}


def grades_file(state: Path, model_id: str, judge_fingerprint: str) -> Path:
    return state / "grades" / model_id / f"{judge_fingerprint[:16]}.jsonl"


def pending(path: Path, items: list[Item], answers: dict[str, dict], judge_fingerprint: str) -> list[Item]:
    saved = {r["grade_key"] for r in store.read_jsonl(path)}
    return [it for it in items if grade_key(answers[it.id]["answer"], it, judge_fingerprint) not in saved]


def normalize(score: float, scale: tuple[int, int]) -> float:
    low, high = scale
    return (score - low) / (high - low)


def combine(item: Item, checks: list, judge_result, scale: tuple[int, int]) -> tuple[float | None, str | None]:
    parts = []
    if checks:
        parts.append(sum(c.passed for c in checks) / len(checks))
    if item.criterion is not None:
        if judge_result is None or judge_result.score is None:
            reason = judge_result.unscored_reason if judge_result else "no judge configured"
            return None, f"judge: {reason}"
        parts.append(normalize(judge_result.score, scale))
    return sum(parts) / len(parts), None


def item_checks(item: Item, answer: dict) -> list[tuple[int | None, CheckResult]]:
    """(turn or None, result) for every check of the item on its answer(s)."""
    if not is_conversation(item):
        return [(None, r) for r in run_checks(item, answer["answer"])]
    return [(turn, run_check(c, text)) for turn, text in enumerate(answer["turn_answers"], 1)
            for c in checks_for_turn(item, turn)]


def grade_record(item: Item, answer: dict, key: str, checks: list, result, scale, extra: dict | None = None) -> dict:
    turns = [t for t, _ in checks]
    checks = [c for _, c in checks]
    score, reason = combine(item, checks, result, scale)
    if answer.get("player_failed"):  # the conversation never happened as written: not a zero
        score, reason = None, f"player: {answer['player_failed']}"
    record = {
        "grade_key": key,
        "item_id": item.id,
        "item_hash": item.hash,
        "skill": item.skill,
        "weight": item.weight,
        "answer": answer["answer"],
        "checks": [{"name": c.name, "arg": c.arg, "passed": c.passed, **({"turn": t} if t else {})}
                   for t, c in zip(turns, checks)],
        "score": score,
        "unscored_reason": reason,
        "judge_score": None,
        "judge_scores": [],
        "judge_spread": None,
        "judge_weighted": None,
        "unstable": False,
        "judge_prompt": None,
        "judge_replies": [],
    }
    if result is not None:
        record.update(
            judge_score=result.score,
            judge_scores=list(result.scores),
            judge_spread=result.spread,
            judge_weighted=result.weighted_score,
            unstable=result.unstable,
            judge_prompt=result.prompt,
            judge_replies=list(result.replies),
        )
    if is_conversation(item):  # per_turn: each turn's score and the weakest; always: the transcript
        record.update(extra or {}, transcript=answer["transcript"])
    return record


def grade_answers(
    items: list[Item],
    answers: dict[str, dict],
    path: Path,
    *,
    judge_fingerprint: str,
    scale: tuple[int, int],
    open_judge: Callable[[], "JudgeLike"] | None,
    render: Callable[[Item, str], object],
    render_conversation: Callable[[Item, list], list] | None = None,
    log=lambda msg: None,
) -> GradeStage:
    """Grade what is not graded yet. `open_judge` is called at most once, only if needed."""
    started = time.perf_counter()
    repaired = len(store.repair_jsonl(path))  # damaged records out, so their items are graded again
    todo = pending(path, items, answers, judge_fingerprint)
    needs_judge = [it for it in todo if it.criterion is not None]
    judge = open_judge() if (needs_judge and open_judge) else None
    say = ProgressLines(log)
    try:
        for start in range(0, len(todo), GRADE_CHUNK):
            chunk = todo[start : start + GRADE_CHUNK]
            judged = [it for it in chunk if it.criterion is not None and not answers[it.id].get("player_failed")]
            results, extras = {}, {}
            if judge is not None and judged:
                asked = [_requests(it, answers[it.id], render, render_conversation) for it in judged]
                graded = iter(judge.grade([r for reqs in asked for r in reqs]))
                for it, reqs in zip(judged, asked):
                    results[it.id], extras[it.id] = combine_turns(it, [next(graded) for _ in reqs])
            records = []
            for it in chunk:
                text = answers[it.id]["answer"]
                key = grade_key(text, it, judge_fingerprint)
                records.append(grade_record(it, answers[it.id], key, item_checks(it, answers[it.id]),
                                            results.get(it.id), scale, extras.get(it.id)))
            store.append_jsonl(path, records, sealed=True)
            say(f"graded {min(start + GRADE_CHUNK, len(todo))}/{len(todo)}")
    finally:
        if judge is not None and hasattr(judge, "close"):
            judge.close()
    by_key = {r["grade_key"]: r for r in store.read_jsonl(path)}
    grades = {it.id: by_key[grade_key(answers[it.id]["answer"], it, judge_fingerprint)] for it in items}
    return GradeStage(grades, len(todo), len(items) - len(todo), time.perf_counter() - started, repaired)


def _requests(item: Item, answer: dict, render, render_conversation) -> list:
    """The judge's requests for an item: one, or for a per_turn conversation one per answer."""
    if is_conversation(item) and render_conversation is not None:
        return render_conversation(item, answer["transcript"])
    return [render(item, answer["answer"])]
