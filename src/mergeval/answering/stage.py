"""The answer stage: a model under test answers every item, batched, saved as it goes.

    from mergeval.answering.settings import GenerationSettings
    from mergeval.answering.stage import answer_items
    stage = answer_items(model_id, model_dir, items, GenerationSettings(), answers_file)

Answers are appended to a JSON-lines file per (model, generation settings) as each batch
finishes; items already in it are not answered again, so a killed stage resumes where it
stopped and an edited item is the only one answered again. A record holds the answer, its
token counts and seconds, and `chat_fold`: None, or how the item's messages were folded to fit
the model's chat template and why (chat.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from mergeval.answering import backends
from mergeval.answering.settings import GenerationSettings
from mergeval.core import store
from mergeval.core.hashing import content_hash
from mergeval.inputs.items import Item


@dataclass(frozen=True)
class AnswerStage:
    answers: dict[str, dict]  # item id → answer record
    computed: int
    reused: int
    seconds: float
    repaired: int = 0  # saved answers found damaged on disk (checksum), dropped and answered again


def prompt_key(item: Item) -> str:
    """What the model under test sees: editing a criterion re-grades but never re-answers."""
    return _prompt_key(item.system, item.turns, item.question)


def record_key(item: Item, settings: GenerationSettings) -> str:
    """A saved answer's key: the prompt, and the answer length used for this item. The file is
    per settings (their length included), so an item answered at that length keeps its plain
    prompt key, and one whose suite or front matter sets another length gets its own."""
    used = settings.tokens_for(item.max_new_tokens)
    if used == settings.max_new_tokens:
        return prompt_key(item)
    return content_hash({"prompt": prompt_key(item), "max_new_tokens": used})


@lru_cache(maxsize=65536)  # asked for every item of every model on each pass over the plan
def _prompt_key(system: str | None, turns: tuple, question: str) -> str:
    return content_hash({"system": system, "turns": turns, "question": question})


def answers_file(state: Path, model_id: str, settings: GenerationSettings) -> Path:
    return state / "answers" / model_id / f"{settings.fingerprint()[:16]}.jsonl"


def saved_answers(path: Path, items: list[Item], settings: GenerationSettings | None = None) -> dict[str, dict]:
    """Item id → saved answer record, for the items that have one (at the length `settings`
    give each item; None: the items' plain prompt keys)."""
    saved = {r["prompt_hash"]: r for r in store.read_jsonl(path)}
    keys = {it.id: record_key(it, settings) if settings else prompt_key(it) for it in items}
    return {it.id: saved[keys[it.id]] for it in items if keys[it.id] in saved}


def missing_items(path: Path, items: list[Item], settings: GenerationSettings | None = None) -> list[Item]:
    saved = saved_answers(path, items, settings)
    return [it for it in items if it.id not in saved]


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
        with backends.load(settings.backend)(model_dir, settings, trust_remote_code) as gen:
            done = 0
            # One pass per answer length: the backend reads its settings at each answer() call,
            # so one loaded model answers every group (most suites have a single length).
            for length in sorted({settings.tokens_for(it.max_new_tokens) for it in items}):
                group = [it for it in items if settings.tokens_for(it.max_new_tokens) == length]
                wanted = {it.id for it in todo if settings.tokens_for(it.max_new_tokens) == length}
                if not wanted:
                    continue
                gen.settings = replace(settings, max_new_tokens=length)
                for batch, texts, usage in gen.answer(group, wanted):
                    store.append_jsonl(path, [_record(model_id, it, t, u, settings)
                                              for it, t, u in zip(batch, texts, usage)], sealed=True)
                    done += len(batch)
                    log(f"{model_id}: answered {done}/{len(todo)}")
    return AnswerStage(saved_answers(path, items, settings), len(todo), len(items) - len(todo),
                       time.perf_counter() - started, repaired)


def _record(model_id: str, item: Item, text: str, usage: dict, settings: GenerationSettings) -> dict:
    return {"model": model_id, "item_id": item.id, "prompt_hash": record_key(item, settings), "answer": text,
            "max_new_tokens": settings.tokens_for(item.max_new_tokens), **usage}
