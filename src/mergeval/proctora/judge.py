"""Proctora: grade rendered prompts with the judge in judge/proctora.yaml.

    settings = load_settings(workspace.judge_file, workspace)
    with Judge(settings, workspace, cache_dir=workspace.judge_cache) as judge:
        judge.check_alive()                      # before any GPU time: JudgeUnavailable if not
        results = judge.grade([JudgeRequest(prompt) for prompt in prompts])
        print(judge.calls_executed, judge.calls_cached)

Each request is asked `samples` times. A reply without a readable verdict is asked again
(up to `retries_unparseable` times, with another seed and a sampling temperature); a sample
still unreadable is unscored with its reason and raw reply kept, and a request no sample of
which was read is unscored: never a zero. Every call is cached on disk by the hash of its
full request (messages, call settings, model identity, sample, attempt), so grading again
with the same judge makes no call at all.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from mergeval.core.hashing import content_hash
from mergeval.core.store import write_atomic
from mergeval.core.workspace import Workspace
from mergeval.proctora.backend_base import Completion, JudgeUnavailable, Messages, weighted
from mergeval.proctora.backends import BACKENDS
from mergeval.proctora.parse import Verdict, parse_verdict
from mergeval.proctora.prompt import render_prompt
from mergeval.proctora.settings import JudgeSettings

CACHE_FORMAT = 1  # bump when a cached call's shape changes

__all__ = ["Judge", "JudgeRequest", "JudgeResult", "JudgeUnavailable", "render_request"]


@dataclass(frozen=True)
class JudgeRequest:
    prompt: str  # the user prompt, already rendered with proctora.prompt.render_prompt


def render_request(settings: JudgeSettings, item, answer: str) -> JudgeRequest:
    """The request the judge in `settings` gets for `answer` to `item`: the sweep, calibrate and
    the rubric app all render here, so a calibrated judge sees exactly what a sweep shows it."""
    return JudgeRequest(prompt=render_prompt(
        settings.template_text, question=item.question, criterion=item.criterion, answer=answer,
        reference=item.reference, score_descriptions=dict(item.score_descriptions), scale=tuple(settings.scale)))


@dataclass(frozen=True)
class JudgeResult:
    prompt: str
    scores: tuple[int | None, ...]  # one per sample; None = that sample unscored
    score: float | None  # mean of the scored samples; None = unscored (never 0)
    spread: float  # max - min of the scored samples (0 with fewer than two)
    weighted_score: float | None  # mean over samples of sum(n * P(n)) at the verdict token
    unstable: bool  # spread > settings.unstable_spread
    replies: tuple[str, ...]  # the raw reply behind each sample (its last attempt)
    unscored_reason: str | None  # set exactly when score is None
    sample_reasons: tuple[str | None, ...]  # why each unscored sample is unscored

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Sample:
    reply: str = ""
    verdict: Verdict | None = None
    probs: dict[int, float] | None = None
    reason: str | None = None


class Judge:
    def __init__(self, settings: JudgeSettings, workspace: Workspace, cache_dir: Path | None = None):
        self.settings = settings
        self.workspace = workspace
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.call_fingerprint = settings.call_fingerprint()  # model identity hashed once, here
        self.fingerprint = settings.fingerprint()
        self.backend = BACKENDS[settings.backend](settings)
        self.calls_executed = 0  # calls the model or server answered (re-asks included)
        self.calls_cached = 0  # calls answered from cache_dir

    def __enter__(self) -> "Judge":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def check_alive(self) -> None:
        """Raise JudgeUnavailable (with what to fix) unless the judge can answer."""
        self.backend.check_alive()

    def messages(self, prompt: str) -> Messages:
        system = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        return system + [{"role": "user", "content": prompt}]

    # -- grading ----------------------------------------------------------------------------

    def grade(self, requests: list[JudgeRequest]) -> list[JudgeResult]:
        s = self.settings
        messages = [self.messages(r.prompt) for r in requests]
        table = [[_Sample() for _ in range(s.samples)] for _ in requests]
        tries = s.retries_unparseable + 1
        for k in range(s.samples):
            todo = list(range(len(requests)))
            for attempt in range(tries):
                if not todo:
                    break
                completions = self._calls([messages[i] for i in todo], k, attempt)
                again = []
                for i, c in zip(todo, completions):
                    if c.error:
                        table[i][k] = _Sample(reason=f"judge call failed: {c.error}")
                        continue  # a refused request (4xx) is refused again: no re-ask
                    verdict = parse_verdict(c.text, s.scale)
                    table[i][k] = _Sample(c.text, verdict, c.verdict_probs, verdict.reason)
                    if verdict.score is None and c.truncated:  # asked again, it is cut off again
                        table[i][k].reason = self.cut_off_reason()
                    elif verdict.score is None:
                        again.append(i)
                todo = again
            for i in todo:
                if not table[i][k].reason.startswith("cut off"):
                    table[i][k].reason = f"{table[i][k].reason} (asked {tries} times)"
        return [self._result(r.prompt, row) for r, row in zip(requests, table)]

    def cut_off_reason(self) -> str:
        where = self.settings.source or "the judge settings"
        return (f"cut off at max_tokens ({self.settings.max_tokens}) before its verdict: "
                f"raise max_tokens in {where}")

    def _result(self, prompt: str, row: list[_Sample]) -> JudgeResult:
        scores = tuple(x.verdict.score if x.verdict else None for x in row)
        scored = [v for v in scores if v is not None]
        reasons = tuple(None if x.verdict and x.verdict.score is not None else x.reason for x in row)
        spread = float(max(scored) - min(scored)) if scored else 0.0
        probs = [x.probs for x in row if x.verdict and x.verdict.score is not None and x.probs]
        reason = None
        if not scored:
            reason = reasons[0] if len(row) == 1 else f"no sample of {len(row)} scored; first: {reasons[0]}"
        return JudgeResult(
            prompt=prompt,
            scores=scores,
            score=statistics.fmean(scored) if scored else None,
            spread=spread,
            weighted_score=statistics.fmean(weighted(p) for p in probs) if probs else None,
            unstable=spread > self.settings.unstable_spread,
            replies=tuple(x.reply for x in row),
            unscored_reason=reason,
            sample_reasons=reasons,
        )

    # -- calls and their cache -----------------------------------------------------------------

    def call_key(self, messages: Messages, sample_index: int, attempt: int) -> str:
        return content_hash(
            {"format": CACHE_FORMAT, "call": self.call_fingerprint, "messages": messages,
             "sample": sample_index, "attempt": attempt}
        )

    def _calls(self, prompts: list[Messages], sample_index: int, attempt: int) -> list[Completion]:
        keys = [self.call_key(m, sample_index, attempt) for m in prompts]
        out: list[Completion | None] = [self._cached(key) for key in keys]
        missing = [i for i, c in enumerate(out) if c is None]
        self.calls_cached += len(prompts) - len(missing)
        if missing:
            fresh = self.backend.complete([prompts[i] for i in missing], sample_index=sample_index, attempt=attempt)
            self.calls_executed += sum(1 for c in fresh if not c.fatal)  # answered, refusals included
            for i, c in zip(missing, fresh):
                out[i] = c
                if not c.error:  # a reply is worth keeping; a refusal or an outage is not
                    self._store(keys[i], c)
            fatal = next((c for c in fresh if c.error and c.fatal), None)
            if fatal is not None:  # the replies that did come back are cached: stop now
                raise JudgeUnavailable(fatal.error)
        return out  # type: ignore[return-value]

    def _path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    def _cached(self, key: str) -> Completion | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:  # a corrupt or foreign file is a miss: the call is made again and rewritten
            data = json.loads(path.read_text(encoding="utf-8"))
            text, probs = data["text"], data["verdict_probs"]
            if not isinstance(text, str) or data.get("key") != key:
                return None
            probs = {int(n): float(p) for n, p in probs.items()} if probs is not None else None
            return Completion(text=text, verdict_probs=probs, truncated=data.get("truncated") is True)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _store(self, key: str, c: Completion) -> None:
        path = self._path(key)
        if path is not None:
            record = {"key": key, "text": c.text, "verdict_probs": c.verdict_probs}
            if c.truncated:  # absent unless cut off: older cache files read the same
                record["truncated"] = True
            write_atomic(path, json.dumps(record) + "\n")
