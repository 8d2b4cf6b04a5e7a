"""The rubric-check app without its page: plain methods that the page's buttons call.

    desk = Desk(workspace, load_settings(workspace.judge_file, workspace), Path("judge/calibration/labels.jsonl"))
    item = desk.item("toy", "add/add_000")
    result = desk.grade(item, "22")            # a JudgeResult: score, replies, spread
    desk.generate_local(conversation, folder)  # a conversation item: replayed turn by turn (turns.py)
    desk.save_label(item, "22", 5, "ana")      # one more line in the labels file
    desk.agreement()                           # as `mergeval calibrate --labels <that file>`

Tests drive the same methods through the page in a real browser (tests/test_rubric_app.py).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mergeval.audit import calibrate as cal
from mergeval.audit.rubric import turns
from mergeval.core.errors import InputError
from mergeval.core.workspace import Workspace
from mergeval.inputs.items import Item, load_items
from mergeval.inputs.turns import is_conversation

GENERATE_TOKENS = 64


class Desk:
    def __init__(self, ws: Workspace, settings, labels: Path):
        self.ws, self.settings, self.labels = ws, settings, labels
        self.items: dict[str, dict[str, Item]] = {}  # suite → item id → item
        self.problems: list[str] = []
        for folder in sorted(p for p in ws.items.iterdir() if p.is_dir()) if ws.items.is_dir() else []:
            try:
                self.items[folder.name] = {it.id: it for it in load_items(folder)}
            except InputError as e:  # show a broken suite's problems, keep the others usable
                self.problems += [str(p) for p in e.problems]
        self._lock = threading.Lock()  # one judge and one generator, used one request at a time
        self._judges: dict[int, object] = {}
        self._generator: tuple[str, object] | None = None

    # -- items --------------------------------------------------------------------------------

    def suites(self) -> list[str]:
        return list(self.items)

    def skills(self, suite: str) -> list[str]:
        return sorted({it.skill for it in self.items.get(suite, {}).values()})

    def item_ids(self, suite: str, skill: str | None) -> list[str]:
        return [i for i, it in self.items.get(suite, {}).items() if not skill or it.skill == skill]

    def item(self, suite: str, item_id: str) -> Item:
        return self.items[suite][item_id]

    @staticmethod
    def describe(item: Item) -> str:
        parts = [f"**{item.suite} / {item.id}** (skill `{item.skill}`)"]
        parts += turns.describe_turns(item) if is_conversation(item) else ["", "**Question**", "", item.question]
        if item.criterion:
            parts += ["", "**Criterion**", "", item.criterion]
        parts += [f"- Score {n}: {text}" for n, text in item.score_descriptions]
        if item.reference:
            parts += ["", "**Reference answer**", "", item.reference]
        return "\n".join(parts)

    # -- answers ------------------------------------------------------------------------------

    def local_models(self) -> list[str]:
        """Model folders in the zoo and the merges built so far (any folder path also works)."""
        found = []
        for root in (self.ws.zoo, self.ws.state / "models"):
            if root.is_dir():
                found += [str(p) for p in sorted(root.iterdir()) if (p / "config.json").is_file()]
        return [p for p in found if p != self.settings.model]  # the judge is not a model under test

    def generate_local(self, item: Item, model_dir: str) -> str:
        if is_conversation(item):
            return turns.replay(item, lambda view: self._generate_local(view, model_dir))
        return self._generate_local(item, model_dir)

    def _generate_local(self, item: Item, model_dir: str) -> str:
        from mergeval.answering.settings import GenerationSettings
        from mergeval.answering.transformers_backend import TransformersBackend

        with self._lock:
            if self._generator is None or self._generator[0] != model_dir:
                if self._generator is not None:
                    self._generator[1].__exit__(None, None, None)
                settings = GenerationSettings(max_new_tokens=GENERATE_TOKENS)  # greedy, as in a sweep
                self._generator = (model_dir, TransformersBackend(Path(model_dir), settings))
            _, texts, _ = next(self._generator[1].answer([item], {item.id}))
        return texts[0]

    @staticmethod
    def generate_remote(item: Item, endpoint: str, model: str, key_env: str | None = None) -> str:
        """One chat completion from an OpenAI-compatible server (greedy, like the sweep); a
        conversation is replayed, one completion per turn."""
        import httpx

        if is_conversation(item):
            return turns.replay(item, lambda view: Desk.generate_remote(view, endpoint, model, key_env))
        from mergeval.answering.messages import messages_for

        headers = {"Authorization": f"Bearer {os.environ.get(key_env, '')}"} if key_env else {}
        body = {"model": model, "messages": messages_for(item), "temperature": 0, "max_tokens": GENERATE_TOKENS}
        r = httpx.post(f"{endpoint.rstrip('/')}/chat/completions", json=body, headers=headers, timeout=120)
        r.raise_for_status()
        return (r.json()["choices"][0]["message"].get("content") or "").strip()

    # -- the judge ----------------------------------------------------------------------------

    def judge(self, samples: int | None = None):
        """An open Judge for `samples` replies per answer (default: as in the settings file).

        Several samples need sampling: at temperature 0 they would repeat one reply, so the
        settings' reask_temperature is used for them (shown on the page).
        """
        from mergeval.proctora.judge import Judge

        samples = samples or self.settings.samples
        if samples not in self._judges:
            s = self.settings
            if samples != s.samples:
                s = s.model_copy(update={"samples": samples,
                                         "temperature": s.temperature or (s.reask_temperature if samples > 1 else 0.0)})
            judge = Judge(s, self.ws, cache_dir=self.ws.judge_cache)
            judge.check_alive()
            self._judges[samples] = judge
        return self._judges[samples]

    def grade(self, item: Item, answer: str, samples: int | None = None):
        from mergeval.proctora.conversation import answer_requests, combine_turns

        judge = self.judge(samples)
        requests = answer_requests(judge.settings, item, answer)  # a conversation: turn by turn, fenced
        with self._lock:
            return combine_turns(item, judge.grade(requests))[0]

    @staticmethod
    def describe_grade(result) -> str:
        if result.score is None:
            return f"**Unscored** — {result.unscored_reason}"
        lines = [f"**Proctora: {round(result.score, 2):g}**"]
        if len(result.scores) > 1:
            lines.append(f"samples {', '.join('–' if v is None else str(v) for v in result.scores)}; "
                         f"spread {result.spread:g}" + (" — **unstable**" if result.unstable else ""))
        if result.weighted_score is not None:
            lines.append(f"probability-weighted score {result.weighted_score:.2f}")
        return "\n\n".join(lines)

    # -- labels and agreement ---------------------------------------------------------------------

    def save_label(self, item: Item, answer: str, score: int, who: str, note: str = "", model: str = "") -> dict:
        label = cal.make_label(item, answer, score, who.strip(), note=note.strip(), model=model.strip(),
                               source="rubric app")
        with self._lock:
            cal.append_label(self.labels, label)
        return label

    def agreement(self) -> dict | None:
        if not self.labels.exists():
            return None
        labels = cal.read_labels(self.labels, tuple(self.settings.scale))
        if not labels:
            return None
        judge = self.judge()
        with self._lock:
            graded = cal.grade_labels(labels, self.settings, self.ws, judge=judge)
        return cal.graded_agreement(graded, tuple(self.settings.scale))

    def close(self) -> None:
        for judge in self._judges.values():
            judge.close()
        if self._generator is not None:
            self._generator[1].__exit__(None, None, None)
