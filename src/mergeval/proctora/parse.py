"""Read the verdict from the judge's own reply (never from the prompt, which holds the answer).

Accepted forms, case-insensitive, wherever they sit in the reply:
    [RESULT] 4        Prometheus (also "[RESULT]: 4", "[RESULT] (4)", "[RESULT] 4/5")
    [[4]]             MT-Bench
    {"score": 4}      JSON (any object with a "score" field)
    Score: 4          plain ("Score = 4", "**Score:** 4", "Score: 4/5")
The LAST verdict in the reply wins: judges write feedback first and may quote a score on the
way. A reply with no verdict, a fractional one or one outside the scale is unscored, with
the reason: never a zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"(-?\d+(?:\.\d+)?)"
_PATTERNS = (
    re.compile(r"\[RESULT\]\s*:?\s*\(?\s*" + _NUM, re.IGNORECASE),
    re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]"),
    re.compile(r"\"score\"\s*:\s*\"?\s*" + _NUM, re.IGNORECASE),
    re.compile(r"\bscore\**\s*[:=]\s*\**\s*" + _NUM, re.IGNORECASE),
)
FORMS = '[RESULT] n, [[n]], {"score": n} or Score: n'


@dataclass(frozen=True)
class Verdict:
    score: int | None
    reason: str | None = None  # why there is no score
    at: int | None = None  # where the verdict's number starts in the reply (for token probabilities)


def parse_verdict(reply: str, scale: tuple[int, int]) -> Verdict:
    low, high = scale
    if not reply or not reply.strip():
        return Verdict(None, "empty reply")
    found = [(m.end(), m.start(1), m.group(1)) for p in _PATTERNS for m in p.finditer(reply)]
    if not found:
        return Verdict(None, f"no verdict in the reply (expected {FORMS})")
    _, at, text = max(found)
    value = float(text)
    if not value.is_integer():
        return Verdict(None, f"verdict {text} is not a whole number")
    score = int(value)
    if not low <= score <= high:
        return Verdict(None, f"verdict {score} is outside the scale {low}..{high}")
    return Verdict(score, at=at)
