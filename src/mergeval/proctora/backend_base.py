"""What every judge backend shares: the Completion record, the errors, seeds and G-Eval.

A backend turns chat messages into replies:

    backend.check_alive()                       # JudgeUnavailable if it cannot work at all
    backend.complete([messages, ...], sample_index=0, attempt=0) -> [Completion, ...]
    backend.close()

`complete` never raises for one bad request: it returns a Completion with `error` set
(`fatal` when the judge as a whole is unusable: endpoint down, key refused, model missing),
so the replies that did come back can still be cached before the caller stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mergeval.core.hashing import content_hash

Messages = list[dict]


class JudgeUnavailable(RuntimeError):
    """The judge cannot grade at all (server down, model folder missing, key refused).

    Raised instead of marking every answer unscored: nothing durable is written, and a
    re-run picks up from the calls already cached once the judge is back.
    """


@dataclass(frozen=True)
class Completion:
    text: str
    verdict_probs: dict[int, float] | None = None  # P(score) at the verdict token, summing to 1
    error: str | None = None  # the request got no reply (text is then "")
    fatal: bool = False  # the error means no request can succeed: stop grading
    truncated: bool = False  # the reply stopped at max_tokens (openai finish_reason "length")


class Backend(Protocol):
    def check_alive(self) -> None: ...

    def complete(self, prompts: list[Messages], *, sample_index: int, attempt: int = 0) -> list[Completion]: ...

    def close(self) -> None: ...


def call_seed(base: int, sample_index: int, attempt: int) -> int:
    """A distinct, reproducible seed per (sample, re-ask), so re-asks do not repeat a reply."""
    return int(content_hash([base, sample_index, attempt])[:7], 16)  # < 2**28: fits any server's int32


def call_temperature(temperature: float, reask_temperature: float, attempt: int) -> float:
    """Re-asks sample (at least reask_temperature): a greedy re-ask would repeat the reply."""
    return temperature if attempt == 0 else max(temperature, reask_temperature)


def clean_token(token: str) -> str:
    """A token's text without the word-start markers of BPE (Ġ) and SentencePiece (▁)."""
    return token.replace("Ġ", " ").replace("▁", " ").strip()


def normalise(probs: dict[int, float]) -> dict[int, float] | None:
    total = sum(probs.values())
    if total <= 0:
        return None
    return {k: v / total for k, v in sorted(probs.items())}


def weighted(probs: dict[int, float]) -> float:
    return sum(k * p for k, p in probs.items())
