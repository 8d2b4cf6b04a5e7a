"""Item files: the contract's format, and a file:line error for every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mergeval.core.errors import InputError
from mergeval.inputs.answer_checks import Check
from mergeval.inputs.items import load_items, parse_item, read_item

REPO = Path(__file__).resolve().parents[1]

PLAIN = "Question:\nwhat is 8 plus 9 ?\n\nCriterion:\nThe answer must be exactly 17.\n"

ARCH_EXAMPLE = """---
skill: arithmetic
checks:
  - equals: "17"
---
Question:
what is 8 plus 9 ?

Criterion:
The answer must be exactly 17. Score 5 if it is 17 and nothing else, 1 otherwise.
"""


def write(root: Path, rel: str, text: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def problems(path: Path, root: Path) -> list[tuple[int | None, str]]:
    item, found = read_item(path, root)
    assert item is None
    return [(p.line, p.message) for p in found]


def test_plain_two_section_item_loads(tmp_path):
    suite = tmp_path / "toy"
    p = write(suite, "q1.txt", PLAIN)
    item = parse_item(p, suite)
    assert (item.id, item.suite, item.skill) == ("q1", "toy", "general")
    assert item.question == "what is 8 plus 9 ?"
    assert item.criterion == "The answer must be exactly 17."
    assert (item.system, item.turns, item.reference, item.checks) == (None, (), None, ())
    assert item.weight == 1.0 and item.canary is None and item.path == p


def test_architecture_example_and_skill_from_folder(tmp_path):
    suite = tmp_path / "toy"
    write(suite, "add/add_000.txt", ARCH_EXAMPLE)
    write(suite, "rev/rev_000.md", PLAIN)
    a, r = load_items(suite)
    assert (a.id, a.skill, a.checks) == ("add/add_000", "arithmetic", (Check("equals", "17"),))
    assert (r.id, r.skill) == ("rev/rev_000", "rev")  # no front matter skill: the sub-folder


def test_bom_crlf_and_markdown_headers(tmp_path):
    text = "\ufeff---\r\nweight: 2\r\n---\r\n## question\r\nHi there?\r\n\r\n## CRITERION:\r\nBe kind.\r\n"
    p = write(tmp_path, "s/x.md", text.encode("utf-8"))
    item = parse_item(p, tmp_path / "s")
    assert (item.question, item.criterion, item.weight) == ("Hi there?", "Be kind.", 2.0)


def test_item_without_criterion_is_an_error(tmp_path):
    p = write(tmp_path, "x.txt", "Question:\nwhat?\n")
    [(line, msg)] = problems(p, tmp_path)
    assert line == 1 and "no Criterion section" in msg  # every problem has a line: here the body's first


def test_checks_only_item_has_no_criterion(tmp_path):
    p = write(tmp_path, "x.txt", '---\nchecks:\n  - equals: "17"\n---\nQuestion:\nwhat is 8 plus 9 ?\n')
    assert parse_item(p, tmp_path).criterion is None


def test_front_matter_that_is_not_yaml_names_the_file_line(tmp_path):
    p = write(tmp_path, "x.txt", "---\nskill: add\nchecks: [equals: 1\n---\n" + PLAIN)
    [(line, msg)] = problems(p, tmp_path)
    assert line == 3 and "not valid YAML" in msg  # the '[' opened on file line 3


def test_front_matter_never_closed(tmp_path):
    p = write(tmp_path, "x.txt", "---\nskill: add\n" + PLAIN)
    [(line, msg)] = problems(p, tmp_path)
    assert line == 1 and "never closed" in msg


def test_duplicate_and_unknown_front_matter_keys(tmp_path):
    p = write(tmp_path, "x.txt", "---\nskill: a\nwieght: 2\nskill: b\n---\n" + PLAIN)
    found = problems(p, tmp_path)
    assert (4, "duplicate key 'skill' (first set on line 2); YAML would silently keep only the last one") in found
    assert any(line == 3 and "did you mean weight?" in msg for line, msg in found)


def test_wrong_types_in_front_matter(tmp_path):
    p = write(tmp_path, "x.txt", "---\nweight: 0\nskill: [a]\nscores: {1: bad, x: y}\n---\n" + PLAIN)
    lines = sorted(line for line, _ in problems(p, tmp_path))
    assert lines == [2, 3, 4]


def test_not_utf8_names_the_line(tmp_path):
    p = write(tmp_path, "x.txt", b"Question:\nwhat \xff?\nCriterion:\nc\n")
    [(line, msg)] = problems(p, tmp_path)
    assert line == 2 and "not UTF-8" in msg


def test_empty_question_stray_text_and_second_section(tmp_path):
    p = write(tmp_path, "x.txt", "Preamble\nQuestion:\n\nCriterion:\nc\nQuestion:\nagain\n")
    found = problems(p, tmp_path)
    assert (2, "the Question section is empty") in found
    assert any(line == 1 and "text before the first section" in msg for line, msg in found)
    assert any(line == 6 and "second Question section" in msg for line, msg in found)


def test_score_lines_are_parsed_out_of_the_criterion(tmp_path):
    text = PLAIN + "Score 1: anything else\nScore 5: exactly 17\n  and nothing more\n"
    item = parse_item(write(tmp_path, "x.txt", text), tmp_path)
    assert item.criterion == "The answer must be exactly 17."
    assert item.score_descriptions == ((1, "anything else"), (5, "exactly 17 and nothing more"))


def test_scores_in_front_matter_and_twice(tmp_path):
    p = write(tmp_path, "a.txt", '---\nscores: {5: "right", 1: "wrong"}\n---\n' + PLAIN)
    assert parse_item(p, tmp_path).score_descriptions == ((1, "wrong"), (5, "right"))
    q = write(tmp_path, "b.txt", '---\nscores: {1: "wrong"}\n---\n' + PLAIN + "Score 1: no\n")
    assert any("given twice" in msg for _, msg in problems(q, tmp_path))
    r = write(tmp_path, "c.txt", PLAIN + "Score 1: no\nScore 1: again\n")
    assert (7, "Score 1 is described twice (first on line 6)") in problems(r, tmp_path)


def test_system_turns_reference(tmp_path):
    text = (
        "---\nturns:\n  - user: hello\n  - assistant: hi\n---\nSystem:\nBe a pirate.\n"
        + PLAIN + "Reference:\n17\n"
    )
    item = parse_item(write(tmp_path, "x.txt", text), tmp_path)
    assert item.system == "Be a pirate."
    assert item.turns == (("user", "hello"), ("assistant", "hi"))
    assert item.reference == "17"


def test_turns_must_alternate_from_user(tmp_path):
    text = "---\nturns:\n  - assistant: hi\n  - {role: user, content: x}\n---\n" + PLAIN
    found = problems(write(tmp_path, "x.txt", text), tmp_path)
    assert [line for line, _ in found] == [3, 4]
    odd = "---\nturns:\n  - user: hi\n---\n" + PLAIN
    assert problems(write(tmp_path, "y.txt", odd), tmp_path)[0][0] == 3


def test_load_items_reports_every_file(tmp_path):
    suite = tmp_path / "toy"
    write(suite, "good.txt", PLAIN)
    write(suite, "README.md", "# not an item\n")
    write(suite, ".hidden.txt", "not an item either")
    write(suite, "a/bad1.txt", "Question:\nq\n")
    write(suite, "b/bad2.md", "---\nfoo: 1\n---\n" + PLAIN)
    with pytest.raises(InputError) as e:
        load_items(suite)
    assert sorted(p.path.name for p in e.value.problems) == ["bad1.txt", "bad2.md"]
    assert "bad2.md:2: unknown front matter key 'foo'" in str(e.value)


def test_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no item files"):
        load_items(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_items(tmp_path / "nope")


def test_hash_ignores_location_and_criterion_hash_ignores_system(tmp_path):
    a = parse_item(write(tmp_path, "one/s/x.txt", PLAIN), tmp_path / "one" / "s")
    b = parse_item(write(tmp_path, "two/s/x.txt", PLAIN), tmp_path / "two" / "s")
    assert a.hash == b.hash and a.criterion_hash == b.criterion_hash
    c = parse_item(write(tmp_path, "three/s/x.txt", "System:\nbe brief\n" + PLAIN), tmp_path / "three" / "s")
    assert c.hash != a.hash and c.criterion_hash == a.criterion_hash
    d = parse_item(write(tmp_path, "four/s/x.txt", PLAIN + "Be strict.\n"), tmp_path / "four" / "s")
    assert d.criterion_hash != a.criterion_hash


def test_roleplay_suite_loads(tmp_path):
    suite = tmp_path / "roleplay"
    shutil.copytree(REPO / "items" / "roleplay", suite)
    items = load_items(suite)
    assert len(items) == 12
    assert {i.skill for i in items} == {"narrator", "game_master"}
    assert all(len(i.score_descriptions) == 5 and i.criterion for i in items)
    assert any(i.system for i in items) and any(i.turns for i in items)
    assert any(i.checks for i in items) and any(i.reference for i in items)
