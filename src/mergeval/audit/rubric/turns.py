"""The rubric app's conversations: how one is shown, typed in, replayed and graded.

    text = replay(item, reply)          # reply(view) → the model's answer to one turn
    requests = answer_requests(settings, item, text)   # proctora/conversation.py

The Answer box holds a whole conversation as the sweep records it (`answer` in results.jsonl:
`[turn 1] user: ...` / `[turn 1] assistant: ...` blocks), so a conversation from a run can be
pasted in and graded as the sweep graded it. For scripted turns the model's replies alone also
do, one after another, separated by a line `---`.
"""

from __future__ import annotations

from mergeval.answering.conversation import player_key, player_view, transcript_text, turn_view
from mergeval.answering.player import play
from mergeval.inputs.items import Item
from mergeval.inputs.turns import n_turns, user_turns


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
