"""Render Proctora's prompt from the template in judge/ and fence the answer.

The answer under test sits between two fence lines. Anything in it that looks like a fence
is neutralised first, so an answer cannot close the fence early and forge instructions or a
verdict; the verdict is in any case parsed only from the judge's own reply.
"""

from __future__ import annotations

from functools import lru_cache

import jinja2

FENCE_OPEN = "<<<RESPONSE"
FENCE_CLOSE = "RESPONSE>>>"

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@lru_cache(maxsize=16)
def _compiled(template: str) -> jinja2.Template:
    """Compiling a template costs ~20 ms; a sweep renders one template for every grade."""
    return _env.from_string(template)


def neutralise(answer: str) -> str:
    """Break any fence marker inside the answer so it cannot end the fenced block."""
    for marker in (FENCE_OPEN, FENCE_CLOSE):
        answer = answer.replace(marker, marker.replace("RESPONSE", "RESP_ONSE"))
    return answer


def render_prompt(
    template: str,
    *,
    question: str,
    criterion: str,
    answer: str,
    reference: str | None = None,
    score_descriptions: dict[int, str] | None = None,
    scale: tuple[int, int] = (1, 5),
) -> str:
    return _compiled(template).render(
        question=question.strip(),
        criterion=criterion.strip(),
        answer=neutralise(answer.strip()),
        reference=(reference or "").strip(),
        score_descriptions=sorted((score_descriptions or {}).items()),
        scale_min=scale[0],
        scale_max=scale[1],
        fence_open=FENCE_OPEN,
        fence_close=FENCE_CLOSE,
    )
