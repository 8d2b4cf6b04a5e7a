"""Conversations: items whose model answers several turns, scripted or played.

    item = parse_item(Path("items/toy_scenes/sum_then_double.txt"), Path("items/toy_scenes"))
    user_turns(item)        # ("what is 3 plus 4 ?", "double it .") : the scripted player turns
    n_turns(item)           # 2: how many times the model answers
    checks_for_turn(item, 2)

An item file with several `Question:` sections (or `## Question`) is a conversation: each is the
player's next turn, and the model answers each with the whole conversation so far (its own
earlier answers included) in context. Front matter that only a conversation uses:

    checks:
      - max_words: 40            # every answer
      - equals: "14"             # only the answer to turn 2
        turn: 2
    grade: per_turn              # the judge grades each answer; default: the whole conversation
    player: players/toy.yaml     # a simulated player (inputs/players.py), relative to the suite
    player_turns: 3              # with a player: how many times the model answers

With a player the item has one Question (the opening turn) and a `Brief:` section (who the
player is, what they want, what they know); the player writes turns 2..player_turns. suite.yaml's `player:` and `player_turns:` serve every
item of the suite that has a Brief: and does not name its own.
An item with one Question and none of these keys is exactly what it always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mergeval.inputs.answer_checks import Check, read_check
from mergeval.inputs.players import PlayerSettings, read_player
from mergeval.inputs.strict_yaml import YamlDoc
from mergeval.inputs.suite_settings import MAX_TURNS, player_turns, read_suite_settings

GRADE_MODES = ("conversation", "per_turn")
CONVERSATION_KEYS = ("grade", "player", "player_turns")


@dataclass(frozen=True)
class Player:
    settings: PlayerSettings
    brief: str  # who the player is, what they want, what they know
    turns: int  # how many times the model answers (the opening Question included)

    def key_data(self) -> dict:
        return {"settings": self.settings.key_data(), "brief": self.brief, "turns": self.turns}


def is_conversation(item) -> bool:
    return bool(item.followups or item.player)


def user_turns(item) -> tuple[str, ...]:
    """The scripted player turns: the Question sections in order (only the first with a player)."""
    return (item.question, *item.followups)


def n_turns(item) -> int:
    return item.player.turns if item.player else 1 + len(item.followups)


def checks_for_turn(item, turn: int) -> tuple[Check, ...]:
    """The checks on the answer to `turn` (1-based): every unnamed check, and those naming it."""
    return item.checks + tuple(c for t, c in item.turn_checks if t == turn)


# --- front matter readers (items.py calls them with its own `add(line, message)`) ---------------
def read_checks(value: Any, doc: YamlDoc, add: Callable) -> tuple[tuple[Check, ...], tuple]:
    """(checks on every answer, (turn, check, line) for those naming their turn)."""
    if not isinstance(value, list):
        raise ValueError('expected a list, e.g.\n  checks:\n    - equals: "17"')
    every, named = [], []
    for i, entry in enumerate(value):
        turn = None
        if isinstance(entry, dict) and "turn" in entry and len(entry) > 1:
            entry = dict(entry)
            turn = entry.pop("turn")
            if isinstance(turn, bool) or not isinstance(turn, int) or not 1 <= turn <= MAX_TURNS:
                add(doc.line("checks", i, "turn"), f"checks: turn must be a whole number from 1 to {MAX_TURNS}, got {turn!r}")
                continue
        try:
            check = read_check(entry)
        except ValueError as e:
            add(doc.line("checks", i), f"checks: {e}")
            continue
        if turn is None:
            every.append(check)
        else:
            named.append((turn, check, doc.line("checks", i)))
    return tuple(every), tuple(named)


def read_grade(value: Any) -> str:
    if value not in GRADE_MODES:
        raise ValueError(f"expected {' or '.join(GRADE_MODES)}, got {value!r}")
    return value


def read_player_turns(value: Any) -> int:
    return player_turns(value)


def read_player_file(value: Any, suite_root: Path, problems: list) -> PlayerSettings | None:
    """The player settings file the item names, relative to the suite folder; its own problems
    are reported at its own lines (file:line of the player file)."""
    if isinstance(value, bool) or not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected the player settings file, relative to the suite folder, got {value!r}")
    path = suite_root / value.strip()
    if not path.is_file():
        raise ValueError(f"no player settings file at {path}")
    settings, found = read_player(path)
    problems += found  # each at its own file:line, the player file's
    return settings


def read_earlier_turns(value: Any, doc: YamlDoc, add: Callable) -> tuple[tuple[str, str], ...]:
    """front matter `turns:`: earlier conversation written by hand, user first, alternating."""
    if not isinstance(value, list) or not value:
        raise ValueError("expected a list of earlier turns, e.g.\n  - user: ...\n  - assistant: ...")
    turns = []
    for i, turn in enumerate(value):
        line = doc.line("turns", i)
        if isinstance(turn, dict) and set(turn) == {"role", "content"}:
            role, content = turn["role"], turn["content"]
        elif isinstance(turn, dict) and len(turn) == 1:
            ((role, content),) = turn.items()
        else:
            add(line, "turns: each turn is '- user: text' or '- assistant: text' (or role:/content:)")
            continue
        want = "user" if i % 2 == 0 else "assistant"
        if role not in ("user", "assistant"):
            add(line, f"turns: role must be user or assistant, got {role!r}")
        elif role != want:
            add(line, f"turns: expected a {want} turn here (turns alternate, user first)")
        elif not isinstance(content, str) or not content.strip():
            add(line, f"turns: the {role} turn needs non-empty text")
        else:
            turns.append((role, content.strip()))
    if len(value) % 2 == 1:
        add(doc.line("turns", len(value) - 1), "turns: the last earlier turn must be the assistant's (the question is the next user turn)")
    return tuple(turns)


def conversation_parts(front: dict, named_checks: tuple, questions: list[tuple[int, str]],
                       brief: tuple[int, str] | None, add: Callable, body_line: int,
                       suite_root: Path, problems: list) -> tuple[tuple[str, ...], Player | None]:
    """(the scripted turns after the first, the player or None), every problem added with its
    line: a check naming a turn the item does not have, a player without a brief or turns.
    An item with a Brief: and no player: gets suite.yaml's player: and player_turns:."""
    followups = tuple(text for _, text in questions[1:])
    if brief is not None and "player" not in front:
        suite, _ = read_suite_settings(suite_root)  # its own problems are the suite's, reported once
        if suite.player:
            front = {**front, "player": read_player_file(suite.player, suite_root, problems)}
        if suite.player_turns and "player_turns" not in front:
            front = {**front, "player_turns": suite.player_turns}
    for line, text in questions[1:]:
        if not text:
            add(line, "this Question section (a later turn of the conversation) is empty")
    player = None
    settings = front.get("player")
    if "player" in front or "player_turns" in front or brief is not None:
        if len(questions) > 1:
            add(questions[1][0], "an item with a player has one Question (the opening turn); the player writes the rest")
        if "player_turns" not in front:
            add(body_line, "a player item needs player_turns: (how many times the model answers; here or in suite.yaml)")
        if brief is None:
            add(body_line, "a player item needs a Brief: section (who the player is, what they want, what they know)")
        elif not brief[1]:
            add(brief[0], "the Brief section is empty")
        if "player" not in front:
            add(body_line, "player_turns: and a Brief: need player: (the player settings file; here or in suite.yaml)")
        if settings is not None and "player_turns" in front and brief and brief[1]:
            player = Player(settings, brief[1], front["player_turns"])
    turns = player.turns if player else 1 + len(followups)
    for turn, check, line in named_checks:
        if turn > turns:
            add(line, f"checks: {check.name} names turn {turn}, but the item has {turns} turn(s)")
    if front.get("grade") == "per_turn" and turns == 1:
        add(body_line, "grade: per_turn needs several turns (more Question sections, or a player)")
    return followups, player
