"""Item files: one question, the criterion to grade it by, and optional deterministic checks.

    items = load_items(Path("items/toy"))   # every *.txt / *.md below it, sorted by id
    items[0].id, items[0].skill, items[0].question, items[0].criterion

One UTF-8 file per item under items/<suite>/[<skill>/]. Optional YAML front matter between
`---` lines, then sections, each introduced by a line of its own: `Question:`, `Criterion:`,
`Reference:`, `System:` (or `## Question` ..., any case):

    ---
    skill: narrator            # default: the sub-folder's name, else "general"
    weight: 2                  # > 0, default 1
    system: You narrate a gothic mystery.
    turns:                     # earlier conversation, user first, alternating
      - user: Describe the hall.
      - assistant: Dust hangs in the candlelight...
    checks:                    # see mergeval.inputs.answer_checks
      - max_words: 150
    scores: {1: "...", 5: "..."}   # or "Score 1: ..." lines at the end of the criterion
    reference: an example of a good answer
    canary: a string that marks this suite, so leaks into training data can be found
    max_new_tokens: 400        # longest answer; default: suite.yaml's, else the sweep's
    ---
    Question:
    ...
    Criterion:
    ...
    Score 1: ...
    Score 5: ...

Several Question sections make a conversation (the player's successive turns), and a
simulated player can write the later turns: inputs/turns.py says how.

A file that is not a valid item is an error naming the file and line, never skipped: an
item that silently drops out changes every score without anyone noticing. README files and
hidden files are not items, and neither is the suite's own suite.yaml (inputs/suite_settings.py).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mergeval.core.errors import InputError, Problem
from mergeval.core.hashing import content_hash
from mergeval.inputs import turns as conv
from mergeval.inputs.answer_checks import Check
from mergeval.inputs.strict_yaml import YamlDoc, did_you_mean, load_yaml
from mergeval.inputs.suite_settings import answer_length, read_suite_settings
from mergeval.inputs.text_files import read_text_file

ITEM_SUFFIXES = (".txt", ".md")
FRONT_MATTER_KEYS = ("skill", "weight", "system", "turns", "checks", "scores", "reference", "canary",
                     "max_new_tokens", *conv.CONVERSATION_KEYS)
SECTIONS = ("question", "criterion", "reference", "system", "brief")
NOT_ITEMS = ("readme.md", "readme.txt")
# A skill is a column of ranking.csv and a label in the reports: it must not take the name of a
# fixed column (skill "score" would overwrite every model's overall score) nor look like a path.
RESERVED_SKILLS = ("model", "rank", "score", "n_scored", "n_unscored", "kind", "method", "parents",
                   "best_parent", "vs_best_parent", "ci_low", "ci_high", "rank_low", "rank_high")
MAX_SKILL = 64

# A section header is a line of its own: "Question:" or "## Question" / "## Question:".
_HEADER = re.compile(r"^\s*(?:#{1,6}\s*([A-Za-z]+)\s*:?|([A-Za-z]+)\s*:)\s*$")
# "Score 3: partly right" (optionally as a list item) inside the criterion.
_SCORE = re.compile(r"^\s*(?:[-*]\s*)?score\s+(\d+)\s*:\s*(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Item:
    id: str  # path below the suite folder, no extension, '/'-separated: "add/add_000"
    suite: str  # the suite folder's name
    skill: str
    question: str
    criterion: str | None  # None only for an item graded by its checks alone
    system: str | None
    turns: tuple[tuple[str, str], ...]  # earlier turns (role, content), user first
    reference: str | None
    score_descriptions: tuple[tuple[int, str], ...]  # sorted by score
    checks: tuple[Check, ...]
    weight: float
    canary: str | None
    path: Path
    max_new_tokens: int | None = None  # the answer length: front matter, else suite.yaml; None: the sweep's
    # A conversation (inputs/turns.py); each is left out of the hashes while unset, so a
    # one-question item keeps the hash it always had.
    followups: tuple[str, ...] = ()  # the scripted player turns after `question`
    turn_checks: tuple[tuple[int, Check], ...] = ()  # (turn, check): checks that name their turn
    grade: str | None = None  # "per_turn": the judge grades each answer; None: the conversation
    player: conv.Player | None = None  # a simulated player writes the turns after `question`
    # Every field above except path: moving a suite folder keeps every cache valid.
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        del data["path"]
        for key in ("max_new_tokens", *_CONVERSATION_FIELDS):  # absent unless set: older hashes stay
            if not data[key]:
                del data[key]
        data["checks"] = [dataclasses.asdict(c) for c in self.checks]
        data.update(self._conversation_data())
        object.__setattr__(self, "hash", content_hash(data))

    def _conversation_data(self) -> dict:
        out: dict[str, Any] = {"followups": self.followups} if self.followups else {}
        if self.turn_checks:
            out["turn_checks"] = [[t, dataclasses.asdict(c)] for t, c in self.turn_checks]
        if self.grade:
            out["grade"] = self.grade
        if self.player:
            out["player"] = self.player.key_data()
        return out

    @cached_property  # asked for each grade key: every item of every model, several passes a sweep
    def criterion_hash(self) -> str:
        """What a grade depends on besides the answer: re-grade only when this changes."""
        return content_hash(
            {
                "question": self.question,
                "criterion": self.criterion,
                "reference": self.reference,
                "score_descriptions": self.score_descriptions,
                "checks": [dataclasses.asdict(c) for c in self.checks],
                **self._conversation_data(),
            }
        )


_CONVERSATION_FIELDS = ("followups", "turn_checks", "grade", "player")


def parse_item(path: Path, suite_root: Path) -> Item:
    item, problems = read_item(path, suite_root)
    if problems or item is None:
        raise InputError(problems)
    return item


def load_items(folder: Path) -> list[Item]:
    """Every item file below `folder`, sorted by id; InputError lists every problem."""
    items, problems = read_items(folder)
    if problems:
        raise InputError(problems)
    return items


def item_files(folder: Path) -> list[Path]:
    """The item files below a folder: *.txt / *.md, not hidden, not README.

    Everything named like an item is listed, files or not: reading a folder or a broken link
    named `q1.txt` reports it, where skipping it would silently drop an item. Linked folders
    are listed too (the walk does not enter them), so that they are reported, not skipped."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in ITEM_SUFFIXES and p.name.lower() not in NOT_ITEMS:
            out.append(p)
        elif p.is_symlink() and p.is_dir():
            out.append(p)
    return out


def read_items(folder: Path) -> tuple[list[Item], list[Problem]]:
    if not folder.is_dir():
        return [], [Problem(folder, None, "item folder not found")]
    files = item_files(folder)
    if not files:
        return [], [Problem(folder, None, "no item files (*.txt, *.md) in this folder")]
    suite, problems = read_suite_settings(folder)
    items: list[Item] = []
    first_by_id: dict[str, Path] = {}
    for path in files:
        item, found = read_item(path, folder)
        problems += found
        if item is None:
            continue
        if item.id in first_by_id:
            problems.append(
                Problem(path, None, f"item id {item.id!r} is also {first_by_id[item.id]}")
            )
            continue
        first_by_id[item.id] = path
        if item.max_new_tokens is None and suite.max_new_tokens is not None:
            item = dataclasses.replace(item, max_new_tokens=suite.max_new_tokens)
        items.append(item)
    return sorted(items, key=lambda i: i.id), problems


def read_item(path: Path, suite_root: Path) -> tuple[Item | None, list[Problem]]:
    """Parse one item file; returns (item or None, every problem found)."""
    text, problems = read_text_file(path, "an item", inside=suite_root)
    if text is None:
        return None, problems
    lines = text.split("\n")
    p = _Parser(path, suite_root)
    front, body_start = p.front_matter(lines)
    # A missing section is reported at the first body line: every problem has a line.
    p.body_line = min((body_start or 0) + 1, len(lines))
    if body_start is None:  # the whole file is an unclosed front matter: nothing else to say
        return None, p.problems
    sections = p.sections(lines, body_start)
    item = p.build(front, sections, path, suite_root)
    return (None if p.problems else item), sorted(p.problems, key=lambda q: q.line or 0)


def skill_problem(skill: str) -> str | None:
    """Why `skill` cannot be a skill name, or None."""
    if skill in RESERVED_SKILLS:
        return f"{skill!r} is a column of ranking.csv, so it cannot name a skill; choose another name"
    if len(skill) > MAX_SKILL:
        return f"a skill name is at most {MAX_SKILL} characters (it heads a column of the ranking)"
    if any(c in "/\\" or not c.isprintable() for c in skill) or skill.startswith("."):
        return f"{skill!r}: a skill name is a label: no '/', '\\', control characters or leading '.'"
    return None


class _Parser:
    def __init__(self, path: Path, suite_root: Path):
        self.path, self.suite_root = path, suite_root
        self.problems: list[Problem] = []
        self.body_line = 1

    def add(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))

    # --- front matter -------------------------------------------------------------------
    def front_matter(self, lines: list[str]) -> tuple[dict[str, Any], int | None]:
        """(validated front matter, index of the first body line or None if unclosed)."""
        if not lines or lines[0].strip() != "---":
            return {}, 0
        end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
        if end is None:
            self.add(1, "front matter opened with '---' is never closed by a '---' line")
            return {}, None
        doc = load_yaml("\n".join(lines[1:end]), self.path, line_offset=1)
        self.problems += doc.problems
        if doc.data is None:
            return {}, end + 1
        if not isinstance(doc.data, dict):
            self.add(2, "front matter must be YAML keys and values (skill: ..., checks: ...)")
            return {}, end + 1
        return self._validate_front(doc), end + 1

    def _validate_front(self, doc: YamlDoc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in doc.data.items():
            line = doc.line(key)
            if key not in FRONT_MATTER_KEYS:
                hint = " (the id is the file's path)" if key == "id" else did_you_mean(key, FRONT_MATTER_KEYS)
                self.add(line, f"unknown front matter key {key!r}{hint}; allowed: {', '.join(FRONT_MATTER_KEYS)}")
                continue
            reader = getattr(self, f"_fm_{key}", None)
            try:
                out[key] = reader(value, doc) if key != "player" else \
                    conv.read_player_file(value, self.suite_root, self.problems)
            except ValueError as e:
                self.add(line, f"{key}: {e}")
        return out

    @staticmethod
    def _text(value: Any, what: str = "a non-empty string") -> str:
        if isinstance(value, bool):  # `skill: no` / `skill: on`: YAML 1.1 reads a boolean
            raise ValueError(f"expected {what}, got the YAML boolean {str(value).lower()}: quote the word")
        if not isinstance(value, (str, int)) or not str(value).strip():
            raise ValueError(f"expected {what}, got {value!r}")
        return str(value).strip()

    def _fm_skill(self, value: Any, doc: YamlDoc) -> str:
        skill = self._text(value)
        bad = skill_problem(skill)
        if bad:
            raise ValueError(bad)
        return skill

    def _fm_system(self, value: Any, doc: YamlDoc) -> str:
        return self._text(value)

    def _fm_reference(self, value: Any, doc: YamlDoc) -> str:
        return self._text(value)

    def _fm_canary(self, value: Any, doc: YamlDoc) -> str:
        return self._text(value)

    def _fm_weight(self, value: Any, doc: YamlDoc) -> float:
        try:  # float() of a 400-digit integer overflows: that is a bad weight too
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))
        except OverflowError:
            ok = False
        if not ok or value <= 0:
            raise ValueError(f"expected a finite number > 0, got {value!r}")
        return float(value)

    def _fm_max_new_tokens(self, value: Any, doc: YamlDoc) -> int:
        return answer_length(value)

    def _fm_checks(self, value: Any, doc: YamlDoc) -> tuple:
        return conv.read_checks(value, doc, self.add)  # (every answer's, (turn, check, line))

    def _fm_grade(self, value: Any, doc: YamlDoc) -> str:
        return conv.read_grade(value)

    def _fm_player_turns(self, value: Any, doc: YamlDoc) -> int:
        return conv.read_player_turns(value)

    def _fm_scores(self, value: Any, doc: YamlDoc) -> tuple[tuple[int, str], ...]:
        if not isinstance(value, dict) or not value:
            raise ValueError('expected a mapping of score to description, e.g. {1: "wrong", 5: "right"}')
        out = []
        for score, text in value.items():
            if isinstance(score, bool) or not isinstance(score, int) or score < 0:
                self.add(doc.line("scores", score), f"scores: {score!r} is not a whole number >= 0")
            elif not isinstance(text, str) or not text.strip():
                self.add(doc.line("scores", score), f"scores: {score} needs a non-empty description")
            else:
                out.append((score, " ".join(text.split())))
        return tuple(sorted(out))

    def _fm_turns(self, value: Any, doc: YamlDoc) -> tuple[tuple[str, str], ...]:
        return conv.read_earlier_turns(value, doc, self.add)

    # --- body ---------------------------------------------------------------------------
    def sections(self, lines: list[str], start: int) -> dict[str, tuple[int, str, list[str]]]:
        """section name -> (header line, header text, its lines) for the body."""
        found: dict[str, tuple[int, str, list[str]]] = {}
        current: list[str] | None = None
        stray: int | None = None
        for i in range(start, len(lines)):
            m = _HEADER.match(lines[i])
            word = (m.group(1) or m.group(2)).lower() if m else None
            if word == "question" and word in found and "criterion" not in found:  # a later turn
                key = f"question {sum(k.startswith('question') for k in found) + 1}"
                found[key] = (i + 1, lines[i].strip(), [])
                current = found[key][2]
            elif word in SECTIONS:
                if word in found:
                    self.add(i + 1, f"second {word.capitalize()} section (the first is on line {found[word][0]})"
                             + ("; a conversation's turns all come before the Criterion" if word == "question" else ""))
                    current = []  # collect and drop, so the first one stays intact
                else:
                    found[word] = (i + 1, lines[i].strip(), [])
                    current = found[word][2]
            elif current is not None:
                current.append(lines[i])
            elif lines[i].strip() and stray is None:
                stray = i + 1
        if stray is not None and found:
            self.add(stray, "text before the first section; each section starts with a line of its own, e.g. 'Question:'")
        return found

    # --- the record ---------------------------------------------------------------------
    def build(self, front: dict[str, Any], sections: dict, path: Path, suite_root: Path) -> Item | None:
        body = {name: (line, "\n".join(text).strip()) for name, (line, _, text) in sections.items()}
        if "question" not in body:
            self.add(self.body_line, "no Question section: an item needs a line 'Question:' followed by the question")
        elif not body["question"][1]:
            self.add(body["question"][0], "the Question section is empty")

        for key in ("system", "reference"):
            if key in body and key in front:
                self.add(body[key][0], f"{key} is given twice: in the front matter and as a section")
            elif key in body and not body[key][1]:
                self.add(body[key][0], f"the {key.capitalize()} section is empty")

        checks, named_checks = front.get("checks", ((), ()))
        questions = [body[k] for k in body if k.startswith("question")]
        followups, player = conv.conversation_parts(front, named_checks, questions, body.get("brief"), self.add,
                                                    self.body_line, suite_root, self.problems)
        criterion, scores = None, front.get("scores", ())
        if "criterion" in body:
            line, text = body["criterion"]
            criterion, parsed = self._split_scores(sections["criterion"][2], line)
            if parsed and scores:
                self.add(line, "score descriptions are given twice: in front matter scores: and as 'Score n:' lines")
            scores = scores or parsed
            if not text:
                self.add(line, "the Criterion section is empty")
            elif not criterion:
                self.add(line, "the criterion has only 'Score n:' lines: say above them what is judged")
        elif not checks and not named_checks:
            self.add(self.body_line, "no Criterion section: an item needs a line 'Criterion:' followed by how to "
                                     "grade the answer (or checks: in its front matter)")
        elif scores:
            self.add(self.body_line, "scores: given but there is no Criterion section for the judge to use them with")

        if self.problems:
            return None
        rel = path.relative_to(suite_root) if path.is_relative_to(suite_root) else Path(path.name)
        skill = front.get("skill") or (rel.parts[0] if len(rel.parts) > 1 else "general")
        bad = skill_problem(skill)
        if bad:  # a sub-folder named like a ranking column, e.g. items/mine/score/
            self.add(self.body_line, f"the folder name is the skill: {bad}; rename the folder or set skill:")
            return None
        return Item(
            id=rel.with_suffix("").as_posix(),
            suite=suite_root.name,
            skill=skill,
            question=body["question"][1],
            criterion=criterion or None,
            system=front.get("system") or (body["system"][1] if "system" in body else None),
            turns=front.get("turns", ()),
            reference=front.get("reference") or (body["reference"][1] if "reference" in body else None),
            score_descriptions=tuple(scores),
            checks=tuple(checks),
            weight=front.get("weight", 1.0),
            canary=front.get("canary"),
            path=path,
            max_new_tokens=front.get("max_new_tokens"),
            followups=followups,
            turn_checks=tuple((t, c) for t, c, _ in named_checks),
            grade=front.get("grade") if front.get("grade") == "per_turn" else None,
            player=player,
        )

    def _split_scores(self, lines: list[str], header_line: int) -> tuple[str, tuple[tuple[int, str], ...]]:
        """Take 'Score n: ...' lines (and the lines that continue them) out of the criterion.

        The judge's template shows the criterion and the score descriptions apart, so they
        are stored apart: a criterion that kept them would show them twice."""
        kept: list[str] = []
        scores: dict[int, tuple[int, list[str]]] = {}
        current: list[str] | None = None
        for k, line in enumerate(lines):
            lineno = header_line + 1 + k
            m = _SCORE.match(line)
            if m:
                n = int(m.group(1))
                if n in scores:
                    self.add(lineno, f"Score {n} is described twice (first on line {scores[n][0]})")
                current = [m.group(2).strip()]
                scores[n] = (lineno, current)
            elif current is not None and line.strip():
                current.append(line.strip())
            else:
                current = None
                kept.append(line)
        out = []
        for n, (lineno, text) in sorted(scores.items()):
            desc = " ".join(" ".join(text).split())
            if not desc:
                self.add(lineno, f"Score {n} has no description")
            out.append((n, desc))
        return "\n".join(kept).strip(), tuple(out)
