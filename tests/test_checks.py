"""Deterministic checks: how each behaves, and that a bad one fails at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from mergeval.inputs.answer_checks import CHECKS, Check, CheckResult, read_check, run_check, run_checks
from mergeval.inputs.items import parse_item, read_item


def passed(entry: dict, answer: str) -> bool:
    return run_check(read_check(entry), answer).passed


def test_registry_is_a_plain_dict():
    assert {"equals", "contains", "not_contains", "regex", "max_words"} <= set(CHECKS)


def test_equals_normalises_whitespace_but_not_case():
    assert passed({"equals": "17"}, "  17\n")
    assert passed({"equals": "e d  f"}, "e d\nf")
    assert not passed({"equals": "17"}, "17.")
    assert not passed({"equals": "Paris"}, "paris")
    assert passed({"equals": {"value": "Paris", "ignore_case": True}}, " PARIS ")
    assert read_check({"equals": 17}) == Check("equals", "17")  # an unquoted number


def test_contains_and_not_contains():
    assert passed({"contains": "red dragon"}, "A red\n dragon sleeps.")
    assert not passed({"contains": "Dragon"}, "a dragon")
    assert passed({"not_contains": "spider"}, "a beetle")
    assert not passed({"not_contains": {"value": "SPIDER", "ignore_case": True}}, "a spider")


def test_regex_and_max_words():
    assert passed({"regex": r"^\d+$"}, "42")
    assert not passed({"regex": r"^\d+$"}, "42 apples")
    assert passed({"regex": {"value": "^yes", "ignore_case": True}}, "Yes.")
    assert passed({"max_words": 3}, "one two three")
    assert not passed({"max_words": 3}, "one two three four")


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"regex": "("}, "does not compile"),
        ({"max_words": 0}, ">= 1"),
        ({"max_words": "ten"}, ">= 1"),
        ({"equal": "1"}, "did you mean equals?"),
        ({"equals": ""}, "non-empty"),
        ({"equals": {"value": "x", "case": True}}, "ignore_case"),
        ({"equals": "1", "contains": "2"}, "one key"),
    ],
)
def test_bad_checks_are_rejected(entry, words):
    with pytest.raises(ValueError, match=words):
        read_check(entry)


def test_bad_regex_in_an_item_names_its_line(tmp_path: Path):
    p = tmp_path / "x.txt"
    p.write_text("---\nchecks:\n  - contains: a\n  - regex: '[a-'\n---\nQuestion:\nq\nCriterion:\nc\n")
    item, problems = read_item(p, tmp_path)
    assert item is None
    [problem] = problems
    assert problem.line == 4 and "does not compile" in problem.message


def test_run_checks_keeps_the_item_order(tmp_path: Path):
    p = tmp_path / "x.txt"
    p.write_text('---\nchecks:\n  - max_words: 2\n  - equals: "17"\n---\nQuestion:\nq\n')
    item = parse_item(p, tmp_path)
    assert run_checks(item, "17") == [
        CheckResult("max_words", 2, True),
        CheckResult("equals", "17", True),
    ]
    assert [r.passed for r in run_checks(item, "it is 17")] == [False, False]
