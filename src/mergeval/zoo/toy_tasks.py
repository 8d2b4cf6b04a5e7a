"""The zoo's synthetic data: generic toy language and the two skills, add and rev.

A training example is a (prefix, target) pair of texts; the model sees `prefix target`, and a
specialist's loss covers the target only. A question is asked as `<s> {question} answer :` and
answered as `{answer} </s>`, exactly what the chat template of a zoo model produces.

The held-out hard items are drawn with SPLIT_SEED, never with the model seed, so every zoo
seed is tested on the same 200 items and items/toy/ never changes.
"""

from __future__ import annotations

import random
from functools import lru_cache

SPLIT_SEED = 2024  # fixed for good: items/toy/ and the training split both depend on it
N_HELDOUT = 100  # per skill
ADD_MAX = 19  # add operands are 0..19; easy: both <= EASY_ADD_MAX
EASY_ADD_MAX = 9
REV_LETTERS = "abcdefghij"
EASY_REV_LEN = (2, 3)
HARD_REV_LEN = (5, 6)

_ADJ = "big small red blue".split()
_NOUN = "cat dog bird mat ball box".split()
_VERB = "sat ran saw".split()
_PREP = "on in to".split()


def prompt(question: str) -> str:
    return f"<s> {question} answer :"


def add_question(x: int, y: int) -> str:
    return f"what is {x} plus {y} ?"


def rev_question(letters: tuple[str, ...]) -> str:
    return f"reverse {' '.join(letters)} ?"


def rev_answer(letters: tuple[str, ...]) -> str:
    return " ".join(reversed(letters))


def qa(question: str, answer: str) -> tuple[str, str]:
    return prompt(question), f"{answer} </s>"


# --- the skill split ---------------------------------------------------------------------

def easy_add_pairs() -> list[tuple[int, int]]:
    r = range(EASY_ADD_MAX + 1)
    return [(x, y) for x in r for y in r]


@lru_cache(maxsize=1)
def _hard_add_split() -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    r = range(ADD_MAX + 1)
    hard = [(x, y) for x in r for y in r if max(x, y) > EASY_ADD_MAX]
    random.Random(f"{SPLIT_SEED}-add").shuffle(hard)
    return tuple(hard[:N_HELDOUT]), tuple(hard[N_HELDOUT:])


def heldout_add_pairs() -> list[tuple[int, int]]:
    return list(_hard_add_split()[0])


def train_hard_add_pairs() -> list[tuple[int, int]]:
    """The 200 hard pairs the add specialist trains on (none of them is a test item)."""
    return list(_hard_add_split()[1])


def _rev_string(rng: random.Random, lengths: tuple[int, int]) -> tuple[str, ...]:
    return tuple(rng.sample(REV_LETTERS, rng.randint(*lengths)))


@lru_cache(maxsize=1)
def _heldout_rev() -> tuple[tuple[str, ...], ...]:
    rng = random.Random(f"{SPLIT_SEED}-rev")
    out: dict[tuple[str, ...], None] = {}
    while len(out) < N_HELDOUT:
        out[_rev_string(rng, HARD_REV_LEN)] = None
    return tuple(out)


def heldout_rev_strings() -> list[tuple[str, ...]]:
    return list(_heldout_rev())


def heldout_items() -> list[dict]:
    """The 200 test items: id, skill, question and the exact expected answer."""
    items = [
        {"id": f"add_{i:03d}", "skill": "add", "question": add_question(x, y), "expected": str(x + y)}
        for i, (x, y) in enumerate(heldout_add_pairs())
    ]
    items += [
        {"id": f"rev_{i:03d}", "skill": "rev", "question": rev_question(s), "expected": rev_answer(s)}
        for i, s in enumerate(heldout_rev_strings())
    ]
    return items


# --- samplers ------------------------------------------------------------------------------

def sample_hard_rev(rng: random.Random) -> tuple[str, ...]:
    held = set(_heldout_rev())
    while True:
        s = _rev_string(rng, HARD_REV_LEN)
        if s not in held:
            return s


def sample_easy_add(rng: random.Random) -> tuple[str, str]:
    x, y = rng.choice(easy_add_pairs())
    return qa(add_question(x, y), str(x + y))


def sample_hard_add(rng: random.Random) -> tuple[str, str]:
    x, y = rng.choice(train_hard_add_pairs())
    return qa(add_question(x, y), str(x + y))


def sample_easy_rev(rng: random.Random) -> tuple[str, str]:
    s = _rev_string(rng, EASY_REV_LEN)
    return qa(rev_question(s), rev_answer(s))


def sample_hard_rev_qa(rng: random.Random) -> tuple[str, str]:
    s = sample_hard_rev(rng)
    return qa(rev_question(s), rev_answer(s))


def sample_generic(rng: random.Random) -> tuple[str, str]:
    """Generic toy language: numbers in order, letters in order, copying, short sentences."""
    kind = rng.randrange(5)
    letters = "abcdefghijklmnopqrstuvwxyz"
    if kind == 0:
        n = rng.randrange(99)
        return qa(f"what is next after {n} ?", str(n + 1))
    if kind == 1:
        k = rng.randint(1, 6)
        s = " ".join(rng.choice(letters) for _ in range(k))
        return qa(f"repeat {s} ?", s)
    if kind == 2:
        k = rng.randint(2, 7)
        a = rng.randrange(100 - k)
        return qa(f"count from {a} to {a + k - 1} ?", " ".join(str(a + i) for i in range(k)))
    if kind == 3:
        k = rng.randint(2, 7)
        a = rng.randrange(26 - k)
        return qa(f"letters from {letters[a]} to {letters[a + k - 1]} ?", " ".join(letters[a : a + k]))

    def phrase() -> str:
        adj = f"{rng.choice(_ADJ)} " if rng.random() < 0.5 else ""
        return f"the {adj}{rng.choice(_NOUN)}"

    sentence = f"{phrase()} {rng.choice(_VERB)} {rng.choice(_PREP)} {phrase()} ."
    if rng.random() < 0.3:
        sentence += f" {phrase()} {rng.choice(_VERB)} ."
    return "<s>", f"{sentence} </s>"


def sample_base(rng: random.Random) -> tuple[str, str]:
    """The base mixture: 80 % generic language, 10 % easy add, 10 % easy rev."""
    u = rng.random()
    if u < 0.8:
        return sample_generic(rng)
    return sample_easy_add(rng) if u < 0.9 else sample_easy_rev(rng)


def spec_sampler(skill: str):
    """A specialist's mixture: 70 % its hard skill, 30 % replay of the base mixture."""
    hard = {"add": sample_hard_add, "rev": sample_hard_rev_qa}[skill]

    def sample(rng: random.Random) -> tuple[str, str]:
        return hard(rng) if rng.random() < 0.7 else sample_base(rng)

    return sample
