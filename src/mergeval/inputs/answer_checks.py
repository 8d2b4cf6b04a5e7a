"""Deterministic checks on an answer: the part of grading that needs no judge.

An item's front matter lists them, one single-key mapping each:

    checks:
      - equals: "17"                               # whole answer, whitespace-normalised
      - equals: {value: "Paris", ignore_case: true}
      - contains: "dragon"
      - not_contains: {value: "as an ai", ignore_case: true}
      - regex: "^[0-9]+$"                          # re.search on the raw answer
      - max_words: 120

CHECKS is the whole registry: a plain dict from name to (how its argument is read, how it
is run). An argument that cannot work (a bad regex, max_words: 0) is an error at load time,
never a check that silently fails every answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from mergeval.inputs.strict_yaml import did_you_mean


@dataclass(frozen=True)
class Check:
    name: str
    arg: str | int
    ignore_case: bool = False


@dataclass(frozen=True)
class CheckResult:
    name: str
    arg: str | int
    passed: bool


class CheckKind(NamedTuple):
    read: Callable[[Any], Check]  # front matter value -> Check; ValueError says what is wrong
    run: Callable[[Check, str], bool]


def _norm(text: str, ignore_case: bool) -> str:
    text = " ".join(text.split())
    return text.casefold() if ignore_case else text


def _read_text(name: str, allow_empty: bool = False) -> Callable[[Any], Check]:
    def read(value: Any) -> Check:
        ignore_case = False
        if isinstance(value, dict):
            extra = set(value) - {"value", "ignore_case"}
            if extra or "value" not in value:
                raise ValueError(
                    f"{name} takes a string, or a mapping with keys value and ignore_case"
                )
            ignore_case = value.get("ignore_case", False)
            if not isinstance(ignore_case, bool):
                raise ValueError(f"{name}: ignore_case must be true or false")
            value = value["value"]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(
                f"{name} needs a string (quote it: {name}: \"...\"), got {type(value).__name__}"
            )
        value = str(value)
        if not allow_empty and not value.strip():
            raise ValueError(f"{name} needs a non-empty string")
        return Check(name, value, ignore_case)

    return read


def _read_regex(value: Any) -> Check:
    check = _read_text("regex")(value)
    try:
        re.compile(check.arg, re.IGNORECASE if check.ignore_case else 0)
    except (re.error, OverflowError, RecursionError) as e:  # a{99999999999} overflows, not re.error
        raise ValueError(f"regex {check.arg!r} does not compile: {e}") from None
    return check


def _read_max_words(value: Any) -> Check:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_words needs a whole number >= 1, got {value!r}")
    return Check("max_words", value)


def _equals(c: Check, answer: str) -> bool:
    return _norm(answer, c.ignore_case) == _norm(str(c.arg), c.ignore_case)


def _contains(c: Check, answer: str) -> bool:
    return _norm(str(c.arg), c.ignore_case) in _norm(answer, c.ignore_case)


def _regex(c: Check, answer: str) -> bool:
    return re.search(str(c.arg), answer, re.IGNORECASE if c.ignore_case else 0) is not None


CHECKS: dict[str, CheckKind] = {
    "equals": CheckKind(_read_text("equals"), _equals),
    "contains": CheckKind(_read_text("contains"), _contains),
    "not_contains": CheckKind(_read_text("not_contains"), lambda c, a: not _contains(c, a)),
    "regex": CheckKind(_read_regex, _regex),
    "max_words": CheckKind(_read_max_words, lambda c, a: len(a.split()) <= int(c.arg)),
}


def read_check(entry: Any) -> Check:
    """One front-matter list entry (`{equals: "17"}`) -> Check; ValueError if invalid."""
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ValueError(
            "each check is a mapping with one key, the check's name (e.g. - equals: \"17\"); "
            f"known checks: {', '.join(CHECKS)}"
        )
    ((name, value),) = entry.items()
    if name not in CHECKS:
        raise ValueError(
            f"unknown check {name!r}{did_you_mean(name, CHECKS)}; known: {', '.join(CHECKS)}"
        )
    return CHECKS[name].read(value)


def run_check(check: Check, answer: str) -> CheckResult:
    return CheckResult(check.name, check.arg, bool(CHECKS[check.name].run(check, answer)))


def run_checks(item: Any, answer: str) -> list[CheckResult]:
    """Every check of the item on the answer, in the order the item lists them."""
    return [run_check(c, answer) for c in item.checks]
