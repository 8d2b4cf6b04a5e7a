"""The judge's requests for a conversation: the transcript fenced turn by turn.

    requests = conversation_requests(settings, item, record["transcript"])   # 1, or 1 per turn
    result, extra = combine_turns(item, judge.grade(requests))               # extra: turn scores

The whole transcript is the response, inside the template's own fence; inside it each turn
sits between a `<<<TURN n ROLE` line and a `TURN>>>` line. Every turn's text is neutralised
first (both the turn markers and the response markers), so no turn can close its own fence or
the response's and pass for the next turn, an instruction or a verdict; the verdict is in any
case read only from the judge's own reply. `grade: per_turn` asks once per answer of the model,
with the conversation up to it as context; the item's judge score is then their mean and the
weakest turn is named.

A conversation typed or pasted as text (the rubric app, calibration labels) is read by
read_transcript: the blocks `[turn 1] user: ...` that results.jsonl's `answer` holds, or for
scripted turns the model's replies alone, separated by lines `---`.
"""

from __future__ import annotations

import re
import statistics

from mergeval.inputs.turns import is_conversation, n_turns, user_turns
from mergeval.proctora.judge import JudgeRequest, JudgeResult, render_request
from mergeval.proctora.prompt import neutralise, render_prompt

TURN_OPEN = "<<<TURN"
TURN_CLOSE = "TURN>>>"
_BLOCK = re.compile(r"^\[turn (\d+)\] (user|assistant): ", re.M)  # answering/conversation.transcript_text


def neutralise_turn(text: str) -> str:
    for marker in (TURN_OPEN, TURN_CLOSE):
        text = text.replace(marker, marker.replace("TURN", "TU_RN"))
    return neutralise(text)


def fence_transcript(transcript: list[dict]) -> str:
    return "\n".join(f"{TURN_OPEN} {m['turn']} {m['role'].upper()}\n{neutralise_turn(m['content'].strip())}\n{TURN_CLOSE}"
                     for m in transcript)


def _instruction(item, turns: int, only: int | None) -> str:
    setup = f"The assistant was told: {item.system}\n\n" if item.system else ""
    what = (f"Grade only the assistant's reply in turn {only}; the turns before it are its context."
            if only else "Grade the assistant's side of the whole conversation.")
    return (f"{setup}A conversation of {turns} turn(s) between a user and an assistant is the response below, "
            f"each turn between a line '{TURN_OPEN} <n> <ROLE>' and a line '{TURN_CLOSE}'. {what}")


def conversation_requests(settings, item, transcript: list[dict]) -> list[JudgeRequest]:
    """One request for the conversation, or (grade: per_turn) one per answer of the model."""
    turns = max((m["turn"] for m in transcript), default=0)

    def request(upto: list[dict], only: int | None) -> JudgeRequest:
        return JudgeRequest(prompt=render_prompt(
            settings.template_text, question=_instruction(item, turns, only), criterion=item.criterion,
            answer=fence_transcript(upto), reference=item.reference,
            score_descriptions=dict(item.score_descriptions), scale=tuple(settings.scale)))

    if item.grade != "per_turn":
        return [request(transcript, None)]
    return [request(transcript[: i + 1], m["turn"]) for i, m in enumerate(transcript) if m["role"] == "assistant"]


def combine_turns(item, results: list[JudgeResult]) -> tuple[JudgeResult, dict]:
    """The item's judge result from its requests: the one result, or for per_turn the mean of
    the turns (unscored if any turn is: never a partial mean that reads as a full one), with
    {"turn_scores", "weakest_turn"} for the grade record."""
    if item.grade != "per_turn":
        return results[0], {}
    scores = [r.score for r in results]
    extra = {"turn_scores": scores, "weakest_turn": None}
    bad = next(((k, r) for k, r in enumerate(results, 1) if r.score is None), None)
    if bad is None:
        extra["weakest_turn"] = min(range(len(scores)), key=lambda k: scores[k]) + 1
    weighted = [r.weighted_score for r in results]
    return JudgeResult(
        prompt="\n\n".join(f"=== turn {k} ===\n{r.prompt}" for k, r in enumerate(results, 1)),
        scores=tuple(scores),
        score=statistics.fmean(scores) if bad is None else None,
        spread=max(r.spread for r in results),
        weighted_score=statistics.fmean(weighted) if bad is None and None not in weighted else None,
        unstable=any(r.unstable for r in results),
        replies=tuple(x for r in results for x in r.replies),
        unscored_reason=None if bad is None else f"turn {bad[0]}: {bad[1].unscored_reason}",
        sample_reasons=tuple(x for r in results for x in r.sample_reasons),
    ), extra


def answer_requests(settings, item, answer: str) -> list[JudgeRequest]:
    """The requests for an answer given as text: a one-question item's, or a conversation's."""
    if not is_conversation(item):
        return [render_request(settings, item, answer)]
    return conversation_requests(settings, item, read_transcript(item, answer))


def read_transcript(item, text: str) -> list[dict]:
    """The conversation in `text` (an Answer box, a label); ValueError says what is expected."""
    found = list(_BLOCK.finditer(text))
    if found:
        out = []
        for m, nxt in zip(found, found[1:] + [None]):
            content = text[m.end(): nxt.start() if nxt else len(text)].strip()
            out.append({"turn": int(m.group(1)), "role": m.group(2), "content": content, "by": "pasted"})
        return out
    if item.player:
        raise ValueError("a conversation with a simulated player is pasted as `[turn 1] user: ...` blocks")
    replies = [r.strip() for r in re.split(r"^---\s*$", text, flags=re.M)]
    if len(replies) != n_turns(item) or not all(replies):
        raise ValueError(f"this item has {n_turns(item)} turns: give the model's {n_turns(item)} replies, "
                         "separated by lines `---`")
    return [m for k, (q, a) in enumerate(zip(user_turns(item), replies), 1)
            for m in ({"turn": k, "role": "user", "content": q, "by": "script"},
                      {"turn": k, "role": "assistant", "content": a, "by": "model"})]
