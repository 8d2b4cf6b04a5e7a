"""Conversations, turn by turn: each answer of a conversation item is a one-question view.

    walk = walk_conversation(item, saved, key)   # how far the saved records carry it
    walk.next                                    # ("player", 3) / ("model", 3), or None: complete
    record = conversation_record(model_id, item, walk)

Turn k of a conversation item is answered as the one-question item `turn_view(item, k, ...)`:
the conversation so far (the model's own earlier answers included) as its earlier turns, the
player's turn k as its question. Its saved answer is keyed like any item's (answering/stage.py
record_key), so the key of turn k covers the whole prefix: editing turn 3 answers again from
turn 3, and only where turns 1-2 are unchanged. A simulated player's turn k is keyed by what
produced it (player_key: the player's settings and brief, the conversation so far), so a re-run
asks the player nothing it has already answered. A player that failed is recorded with its
reason (`error`): the item is then unscored for that reason, never a zero, and the next run
asks the player again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from mergeval.core.hashing import content_hash
from mergeval.inputs.items import Item
from mergeval.inputs.turns import n_turns, user_turns

PLAYER_PROMPT_VERSION = 1  # bump when player_view's words change: the player's turns are asked again
PLAYER_SYSTEM = ("You play the user in a conversation with an assistant. Stay in character and write only "
                 "your next message to the assistant: no name, no quotes, no explanation.")


@dataclass
class Walk:
    transcript: list[dict] = field(default_factory=list)  # {"turn", "role", "content", "by"}
    records: list[dict] = field(default_factory=list)  # the model's saved answer to each turn so far
    views: dict[int, Item] = field(default_factory=dict)  # turn → the model's view of it
    next: tuple[str, int] | None = None  # what is missing: ("player", k) or ("model", k); None: done
    failed: str | None = None  # why the player could not write its turn


def turn_view(item: Item, turn: int, transcript: list[dict], user_text: str) -> Item:
    """Turn `turn` of a conversation as the one-question item the model answers."""
    earlier = tuple((m["role"], m["content"]) for m in transcript)
    return dataclasses.replace(item, id=f"{item.id}#turn{turn}", turns=item.turns + earlier, question=user_text,
                               followups=(), turn_checks=(), grade=None, player=None)


def player_key(item: Item, transcript: list[dict], turn: int) -> str:
    return content_hash({"player_prompt": PLAYER_PROMPT_VERSION, "player": item.player.key_data(),
                         "earlier": item.turns, "transcript": [(m["role"], m["content"]) for m in transcript],
                         "turn": turn})


def player_view(item: Item, transcript: list[dict], turn: int) -> Item:
    """What the simulated player is asked for its turn: its brief, and the conversation so far
    in one user message (so that any chat template takes it: the roles are not swapped)."""
    lines = [f"{'You' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in transcript]
    ask = ("The conversation so far:\n\n" + "\n\n".join(lines)
           + f"\n\nWrite your next message (turn {turn} of {item.player.turns}).")
    return dataclasses.replace(item, id=f"{item.id}#player{turn}", system=f"{PLAYER_SYSTEM}\n\n{item.player.brief}",
                               turns=(), question=ask, followups=(), turn_checks=(), grade=None, player=None,
                               max_new_tokens=item.player.settings.max_new_tokens)


def walk_conversation(item: Item, saved: dict[str, dict], key: Callable[[Item], str]) -> Walk:
    """Follow the saved records (prompt_hash → record) turn by turn as far as they go."""
    w = Walk()
    for turn in range(1, n_turns(item) + 1):
        if turn == 1 or not item.player:
            text, by = user_turns(item)[turn - 1], "script"
        else:
            rec = saved.get(player_key(item, w.transcript, turn))
            if rec is None:
                w.next = ("player", turn)
                return w
            if rec.get("error"):
                w.failed = f"the player could not write turn {turn}: {rec['error']}"
                return w
            text, by = rec["answer"], "player"
        view = turn_view(item, turn, w.transcript, text)
        w.views[turn] = view
        w.transcript.append({"turn": turn, "role": "user", "content": text, "by": by})
        rec = saved.get(key(view))
        if rec is None:
            w.next = ("model", turn)
            return w
        w.records.append(rec)
        w.transcript.append({"turn": turn, "role": "assistant", "content": rec["answer"], "by": "model"})
    return w


def transcript_text(transcript: list[dict]) -> str:
    """The conversation as plain text: what `answer` holds for a conversation (its grade key)."""
    return "\n\n".join(f"[turn {m['turn']}] {m['role']}: {m['content']}" for m in transcript)


def conversation_record(model_id: str, item: Item, w: Walk, key: str) -> dict:
    """One answer record for the whole conversation, like a one-question item's, plus the
    transcript, each turn's answer, and why the player failed (or None)."""
    recs = w.records
    return {"model": model_id, "item_id": item.id, "prompt_hash": key, "answer": transcript_text(w.transcript),
            "transcript": w.transcript, "turn_answers": [r["answer"] for r in recs],
            "max_new_tokens": recs[0]["max_new_tokens"] if recs else None,
            **{k: round(sum(r.get(k) or 0 for r in recs), 4) for k in ("prompt_tokens", "completion_tokens", "seconds")},
            "chat_fold": next((r["chat_fold"] for r in recs if r.get("chat_fold")), None),
            "player_failed": w.failed}
