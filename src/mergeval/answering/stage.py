"""The answer stage: a model under test answers every item, batched, saved as it goes.

    from mergeval.answering.settings import GenerationSettings
    from mergeval.answering.stage import answer_items
    stage = answer_items(model_id, model_dir, items, GenerationSettings(), answers_file)

Answers are appended to a JSON-lines file per (model, generation settings) as each batch
finishes; items already in it are not answered again, so a killed stage resumes where it
stopped and an edited item is the only one answered again. A record holds the answer, its
token counts and seconds, and `chat_fold`: None, or how the item's messages were folded to fit
the model's chat template and why (chat.py).

A conversation item (several Question sections, or a simulated player) is answered turn by
turn (answering/conversation.py): round k answers turn k of every conversation that has one,
in batches across items, after the player (if any) has written it. Each turn's answer is saved
as it comes, keyed by the conversation so far; saved_answers() puts them together into one
record per conversation with its transcript.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from mergeval.answering import backends
from mergeval.answering import conversation as conv
from mergeval.answering.player import play
from mergeval.answering.settings import GenerationSettings
from mergeval.core import store
from mergeval.core.hashing import content_hash
from mergeval.core.progress import ProgressLines
from mergeval.inputs.items import Item
from mergeval.inputs.turns import is_conversation


@dataclass(frozen=True)
class AnswerStage:
    answers: dict[str, dict]  # item id → answer record
    computed: int
    reused: int
    seconds: float
    repaired: int = 0  # saved answers found damaged on disk (checksum), dropped and answered again


def prompt_key(item: Item) -> str:
    """What the model under test sees: editing a criterion re-grades but never re-answers.
    A conversation's covers every scripted turn and the player: the answer stage's key."""
    key = _prompt_key(item.system, item.turns, item.question)
    if not is_conversation(item):
        return key
    return content_hash({"first": key, "followups": item.followups,
                         "player": item.player.key_data() if item.player else None})


def record_key(item: Item, settings: GenerationSettings) -> str:
    """A saved answer's key: the prompt, and the answer length used for this item. The file is
    per settings (their length included), so an item answered at that length keeps its plain
    prompt key, and one whose suite or front matter sets another length gets its own."""
    used = settings.tokens_for(item.max_new_tokens)
    if used == settings.max_new_tokens:
        return prompt_key(item)
    return _length_key(prompt_key(item), used)


@lru_cache(maxsize=65536)  # as _prompt_key: asked for every item of every model on each pass
def _length_key(prompt: str, max_new_tokens: int) -> str:
    return content_hash({"prompt": prompt, "max_new_tokens": max_new_tokens})


@lru_cache(maxsize=65536)  # asked for every item of every model on each pass over the plan
def _prompt_key(system: str | None, turns: tuple, question: str) -> str:
    return content_hash({"system": system, "turns": turns, "question": question})


def answers_file(state: Path, model_id: str, settings: GenerationSettings) -> Path:
    return state / "answers" / model_id / f"{settings.fingerprint()[:16]}.jsonl"


def saved_answers(path: Path, items: list[Item], settings: GenerationSettings | None = None) -> dict[str, dict]:
    """Item id → saved answer record, for the items that have one (at the length `settings`
    give each item; None: the items' plain prompt keys). A conversation has one when every
    turn is answered, or when its player failed (the record says why: `player_failed`)."""
    return {it.id: rec for it, rec, _ in _saved(path, items, settings) if rec is not None}


def missing_items(path: Path, items: list[Item], settings: GenerationSettings | None = None) -> list[Item]:
    """The items with work left: no saved answer, a turn unanswered, or a player that failed
    (asked again on the next run)."""
    return [it for it, _, done in _saved(path, items, settings) if not done]


def _saved(path: Path, items: list[Item], settings: GenerationSettings | None) -> list[tuple[Item, dict | None, bool]]:
    """(item, its saved record or None, whether nothing is left to do) for every item."""
    saved = {r["prompt_hash"]: r for r in store.read_jsonl(path)}

    def key(it: Item) -> str:
        return record_key(it, settings) if settings else prompt_key(it)

    out = []
    for it in items:
        if not is_conversation(it):
            out.append((it, saved.get(key(it)), key(it) in saved))
            continue
        w = conv.walk_conversation(it, saved, key)
        model = w.records[0]["model"] if w.records else ""
        rec = conv.conversation_record(model, it, w, key(it)) if w.next is None else None
        out.append((it, rec, w.next is None and w.failed is None))
    return out


def answer_items(
    model_id: str,
    model_dir: Path,
    items: list[Item],
    settings: GenerationSettings,
    path: Path,
    log=lambda msg: None,
    trust_remote_code: bool = False,  # run the Python in model_dir: only for a model the user named
) -> AnswerStage:
    started = time.perf_counter()
    repaired = len(store.repair_jsonl(path))  # damaged records out, so their items are answered again
    todo = missing_items(path, items, settings)
    if todo:
        with ExitStack() as stack:
            loaded: list = []

            def gen():  # the model is loaded once, and only when a turn needs it
                if not loaded:
                    loaded.append(stack.enter_context(backends.load(settings.backend)(model_dir, settings, trust_remote_code)))
                return loaded[0]

            plain = [it for it in items if not is_conversation(it)]
            wanted = {it.id for it in todo if not is_conversation(it)}
            if wanted:
                _answer(gen, plain, wanted, settings, path, model_id, log)
            _answer_conversations(gen, [it for it in items if is_conversation(it)], settings, path, model_id, log)
    return AnswerStage(saved_answers(path, items, settings), len(todo), len(items) - len(todo),
                       time.perf_counter() - started, repaired)


def _answer(gen, items: list[Item], wanted: set[str], settings: GenerationSettings, path: Path, model_id: str,
            log) -> None:
    """Answer the items whose id is in `wanted`; `items` are all of them, so that the batches
    are cut the same whether a stage resumes or not."""
    done, say = 0, ProgressLines(log)
    # One pass per answer length: the backend reads its settings at each answer() call,
    # so one loaded model answers every group (most suites have a single length).
    for length in sorted({settings.tokens_for(it.max_new_tokens) for it in items}):
        group = [it for it in items if settings.tokens_for(it.max_new_tokens) == length]
        todo = {it.id for it in group if it.id in wanted}
        if not todo:
            continue
        g = gen()
        g.settings = replace(settings, max_new_tokens=length)
        for batch, texts, usage in g.answer(group, todo):
            store.append_jsonl(path, [_record(model_id, it, t, u, settings)
                                      for it, t, u in zip(batch, texts, usage)], sealed=True)
            done += len(batch)
            say(f"{model_id}: answered {done}/{len(wanted)}")


def _answer_conversations(gen, items: list[Item], settings: GenerationSettings, path: Path, model_id: str,
                          log) -> None:
    """Round by round, lowest turn first: the player writes turn k where it plays, then the
    model answers turn k of every conversation at turn k, in batches across items. A player
    that fails is recorded and not asked again in this run."""
    def key(it: Item) -> str:
        return record_key(it, settings)

    failed_now: set[str] = set()  # players that failed in this run; earlier failures are asked again
    before = None
    while True:
        saved = {r["prompt_hash"]: r for r in store.read_jsonl(path)
                 if not r.get("error") or r["prompt_hash"] in failed_now}
        walks = [(it, conv.walk_conversation(it, saved, key)) for it in items]
        needs = [(w.next, it, w) for it, w in walks if w.next]
        if not needs:
            return
        state = sorted((it.id, n) for n, it, _ in needs)
        if state == before:  # a backend that yields no answer for a turn: never loop on it
            raise RuntimeError(f"{model_id}: no answer was saved for {state[0][0]} turn {state[0][1][1]}")
        before = state
        turn = min(n[1] for n, _, _ in needs)
        asks = list({conv.player_key(it, w.transcript, turn): (conv.player_view(it, w.transcript, turn),
                                                               conv.player_key(it, w.transcript, turn), it.player.settings)
                     for (kind, t), it, w in needs if kind == "player" and t == turn}.values())  # one per key
        if asks:
            log(f"{model_id}: the player writes turn {turn} of {len(asks)} conversation(s)")
            played = play(asks, model_id, log)
            failed_now.update(r["prompt_hash"] for r in played if r.get("error"))
            store.append_jsonl(path, played, sealed=True)
            continue
        views = [w.views[turn] for _, w in walks if turn in w.views]
        # one answer per distinct conversation so far: two items sharing turns 1..k share the answer
        wanted = set({key(w.views[turn]): w.views[turn].id for (kind, t), _, w in needs
                      if kind == "model" and t == turn}.values())
        log(f"{model_id}: turn {turn} of {len(wanted)} conversation(s)")
        _answer(gen, views, wanted, settings, path, model_id, log)


def _record(model_id: str, item: Item, text: str, usage: dict, settings: GenerationSettings) -> dict:
    return {"model": model_id, "item_id": item.id, "prompt_hash": record_key(item, settings), "answer": text,
            "max_new_tokens": settings.tokens_for(item.max_new_tokens), **usage}
