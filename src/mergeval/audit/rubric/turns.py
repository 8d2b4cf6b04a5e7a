"""The rubric app's conversations: how one is shown, typed in, replayed and graded.

    text = replay(item, reply)          # reply(view) → the model's answer to one turn
    transcript = read_transcript(item, text)
    requests = conversation_requests(settings, item, transcript)

The Answer box holds a whole conversation as the sweep records it (`answer` in results.jsonl:
`[turn 1] user: ...` / `[turn 1] assistant: ...` blocks), so a conversation from a run can be
pasted in and graded as the sweep graded it. For scripted turns the model's replies alone also
do, one after another, separated by a line `---`.
"""

from __future__ import annotations

import re

from mergeval.answering.conversation import player_key, player_view, transcript_text, turn_view
from mergeval.answering.player import play
from mergeval.inputs.items import Item
from mergeval.inputs.turns import n_turns, user_turns

_BLOCK = re.compile(r"^\[turn (\d+)\] (user|assistant): ", re.M)


def describe_turns(item: Item) -> list[str]:
    """The markdown lines that show a conversation item's turns (after its id)."""
    parts = []
    for k, text in enumerate(user_turns(item), 1):
        parts += ["", f"**Turn {k} (the player)**", "", text]
    if item.player:
        parts += ["", f"**Turns 2-{item.player.turns}: a simulated player** (`{item.player.settings.source}`), "
                      "whose brief is:", "", item.player.brief]
    parts += ["", f"*A conversation of {n_turns(item)} turns: paste one as results.jsonl records it "
                  "(`[turn 1] user: ...`), or generate it.*"]
    return parts


def read_transcript(item: Item, text: str) -> list[dict]:
    """The conversation in the Answer box; ValueError says what is expected."""
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


def replay(item: Item, reply) -> str:
    """The conversation played again, turn by turn: reply(view) answers each turn, the item's
    player (if any) writes the later turns. Returns it as the Answer box holds it."""
    transcript: list[dict] = []
    for k in range(1, n_turns(item) + 1):
        if k == 1 or not item.player:
            text = user_turns(item)[k - 1]
        else:
            [rec] = play([(player_view(item, transcript, k), player_key(item, transcript, k), item.player.settings)],
                         "rubric app")
            if rec.get("error"):
                raise RuntimeError(f"the player could not write turn {k}: {rec['error']}")
            text = rec["answer"]
        view = turn_view(item, k, transcript, text)
        transcript += [{"turn": k, "role": "user", "content": text, "by": "player"},
                       {"turn": k, "role": "assistant", "content": reply(view), "by": "model"}]
    return transcript_text(transcript)
