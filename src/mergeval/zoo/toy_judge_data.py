"""Training data for the toy Proctora: questions, right and wrong answers, rendered prompts.

Each training example is a judge prompt rendered by mergeval's own template (question, a
criterion naming the expected answer, the fenced answer) with the verdict `[RESULT] 5` for a
correct answer and `[RESULT] 1` for a wrong one. Every question gets its correct answer half
the time, so the question alone says nothing about the label. Wrong answers are those the zoo's
models really give on *training* questions, plus synthetic near-misses. No held-out test item
is ever a judge training question.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from mergeval.proctora.prompt import neutralise, render_prompt
from mergeval.zoo import toy_tasks as tasks
from mergeval.zoo.toy_items import criterion
from mergeval.zoo.vocab import BOS, Codec

MAX_ANSWER_TOKENS = 16  # what a zoo model can write before generation stops
NUMBERS = [str(n) for n in range(100)]
ALL_LETTERS = "abcdefghijklmnopqrstuvwxyz"
JUNK = "the answer : ? . , is plus reverse what a b".split()


@dataclass(frozen=True)
class Question:
    skill: str
    text: str
    expected: str


def add_questions(extended: bool) -> list[Question]:
    """The zoo's training add questions (0..19, not held out); extended: operands up to 49."""
    held = set(tasks.heldout_add_pairs())
    top = 49 if extended else tasks.ADD_MAX
    return [
        Question("add", tasks.add_question(x, y), str(x + y))
        for x in range(top + 1)
        for y in range(top + 1)
        if x + y < 100 and (x, y) not in held
    ]


def sample_rev_question(rng: random.Random) -> Question:
    held = set(tasks.heldout_rev_strings())
    while True:
        s = tuple(rng.sample(tasks.REV_LETTERS, rng.randint(2, 6)))
        if s not in held:
            return Question("rev", tasks.rev_question(s), tasks.rev_answer(s))


# --- synthetic near-misses -----------------------------------------------------------------

def _near_add(e: str, rng: random.Random) -> str:
    n = int(e)
    kind = rng.randrange(8)
    if kind == 0:
        return str(min(99, max(0, n + rng.choice([-2, -1, 1, 2]))))
    if kind == 1:
        return str(min(99, max(0, n + rng.choice([-10, 10, -11, 11, -9, 9]))))
    if kind == 2:
        swapped = str(int(e[::-1]))  # 17 -> 71, 20 -> 2
        return swapped if swapped != e else str((n + 1) % 100)
    if kind == 3:  # the expected number plus extra tokens around it
        extra = [rng.choice(NUMBERS + JUNK) for _ in range(rng.randint(1, 3))]
        return " ".join([e, *extra] if rng.random() < 0.7 else [*extra, e])
    if kind == 4:  # digits as separate tokens, or the number repeated
        return " ".join(e) if len(e) == 2 and rng.random() < 0.5 else f"{e} {e}"
    if kind == 5:
        return rng.choice(NUMBERS)
    if kind == 6:
        return " ".join(rng.choice(ALL_LETTERS[:10]) for _ in range(rng.randint(1, 5)))
    return ""


def _near_rev(e: str, rng: random.Random) -> str:
    s = e.split()
    kind = rng.random()
    if kind < 0.35:  # same letters, wrong order: a swap, the unreversed string, a rotation
        t = list(s)
        k = rng.randrange(4)
        if k == 0 and len(t) > 1:
            i = rng.randrange(len(t) - 1)
            t[i], t[i + 1] = t[i + 1], t[i]
        elif k == 1 and len(t) > 1:
            i, j = rng.sample(range(len(t)), 2)
            t[i], t[j] = t[j], t[i]
        elif k == 2:
            t = t[::-1]
        else:
            r = rng.randrange(1, max(2, len(t)))
            t = t[r:] + t[:r]
        if t == s:
            t = t[1:] + t[:1] if len(t) > 1 else [rng.choice(ALL_LETTERS)]
        return " ".join(t)
    t = list(s)
    if kind < 0.7:  # one or two letters substituted, mostly by another letter of the string
        for _ in range(rng.choice([1, 1, 2])):
            i = rng.randrange(len(t))
            own = [c for c in s if c != t[i]]
            other = [c for c in tasks.REV_LETTERS if c != t[i]]
            t[i] = rng.choice(own if own and rng.random() < 0.7 else other)
    elif kind < 0.82:  # truncated, or a letter dropped from the middle
        if rng.random() < 0.5:
            t = t[: rng.randrange(len(t))]
        else:
            del t[rng.randrange(len(t))]
    elif kind < 0.94:  # extended: extra letters, a repeated letter, the string twice
        k = rng.randrange(3)
        if k == 0:
            t = t + [rng.choice(ALL_LETTERS[:10]) for _ in range(rng.randint(1, 3))]
        elif k == 1:
            i = rng.randrange(len(t))
            t.insert(i, t[i])
        else:
            t = t + t
    else:
        t = [rng.choice(NUMBERS + JUNK + list(ALL_LETTERS[:10])) for _ in range(rng.randint(0, 4))]
    out = " ".join(t[:MAX_ANSWER_TOKENS])
    return out if out != e else ""


def near_miss(q: Question, rng: random.Random) -> str:
    return (_near_add if q.skill == "add" else _near_rev)(q.expected, rng)


# --- rendering -----------------------------------------------------------------------------

def load_template(template: str | None) -> str:
    """The judge prompt template: the one given, else the repository's judge/toy/prompt.txt."""
    if template is not None:
        return template
    path = Path(__file__).resolve().parents[3] / "judge" / "toy" / "prompt.txt"
    if not path.exists():
        raise FileNotFoundError(f"no judge template given and {path} does not exist")
    return path.read_text(encoding="utf-8")


# --- --------------------------------------------------------------------------

_SENTINELS = {"question": "QQZQQ", "criterion": "CCZCC", "answer": "AAZAA"}


class PromptCodec:
    """Token ids of rendered judge prompts, fast.

    render_prompt compiles the template on each call (~1 ms), too slow for ~100k prompts. The
    template is rendered once with sentinel words; a prompt's tokens are that word list with the
    sentinels replaced by the values' words, which equals tokenizing render_prompt's output as
    long as each sentinel lands as a whole word (checked here, and by the tests).
    """

    def __init__(self, template: str, codec: Codec):
        self.codec = codec
        words = render_prompt(template, **_SENTINELS).split()
        marks = set(_SENTINELS.values())
        if any(m in w and m != w for w in words for m in marks) or _SENTINELS["answer"] not in words:
            raise ValueError("the judge template must put {{ question }}, {{ criterion }} and "
                             "{{ answer }} between whitespace, as judge/toy/prompt.txt does")
        self.words = [BOS, *words]

    def encode(self, q: Question, answer: str) -> tuple[list[int], int, int]:
        """Prompt ids (starting with <s>), and where the answer's tokens start and how many."""
        a_ids = self.codec.encode(neutralise(answer.strip()))
        values = {
            _SENTINELS["question"]: self.codec.encode(q.text),
            _SENTINELS["criterion"]: self.codec.encode(criterion(q.expected)),
            _SENTINELS["answer"]: a_ids,
        }
        ids: list[int] = []
        start = -1
        for w in self.words:
            if w in values:
                if w == _SENTINELS["answer"] and start < 0:
                    start = len(ids)
                ids += values[w]
            else:
                ids.append(self.codec.ids.get(w, self.codec.unk))
        return ids, start, len(a_ids)
