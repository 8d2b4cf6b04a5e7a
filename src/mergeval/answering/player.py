"""The simulated player: writes the user's later turns of a conversation item, through the
answering backends (an `openai` server such as `transformers serve`, or an in-process
`transformers` model), with the sampling its settings file gives (inputs/players.py).

    records = play(asks, model_id, log)   # asks: [(view, key, PlayerSettings)] → one record each

Every ask gets a record, saved by the answer stage under its key: the player's text, or
`error` with the reason when the player failed (a server down, an empty reply). A failure is
the item's, never the sweep's: that item is unscored with the reason, the others go on.
"""

from __future__ import annotations

from pathlib import Path

from mergeval.answering import backends
from mergeval.answering.settings import GenerationSettings
from mergeval.inputs.players import PlayerSettings

PLAYER_BATCH = 4  # requests in flight to a player server; one batch for the in-process backend


def generation_settings(s: PlayerSettings) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                              seed=s.seed, batch_size=PLAYER_BATCH, backend=s.backend, endpoint=s.endpoint,
                              served_model=s.model if s.backend == "openai" else None)


def play(asks: list[tuple], model_id: str, log=lambda msg: None) -> list[dict]:
    """One record per (view, key, settings): the player's turn, or its failure."""
    out: list[dict] = []
    for settings in dict.fromkeys(s for _, _, s in asks):
        group = [(v, k) for v, k, s in asks if s == settings]
        keys = {v.id: k for v, k in group}
        done: set[str] = set()
        try:
            with backends.load(settings.backend)(Path(settings.model), generation_settings(settings)) as gen:
                for batch, texts, usage in gen.answer([v for v, _ in group], set(keys)):
                    for view, text, u in zip(batch, texts, usage):
                        done.add(view.id)
                        record = {"model": model_id, "item_id": view.id, "prompt_hash": keys[view.id],
                                  "role": "player", "answer": text, **u}
                        if not text.strip():
                            record["error"] = "the player wrote nothing"
                        out.append(record)
        except Exception as e:  # whatever the player's backend raises fails its items, not the sweep
            reason = f"{type(e).__name__}: {e}"[:500]
            log(f"{model_id}: the player ({settings.source}) failed: {reason}")
            out += [{"model": model_id, "item_id": v.id, "prompt_hash": k, "role": "player", "answer": "",
                     "error": reason} for v, k in group if v.id not in done]
    return out
