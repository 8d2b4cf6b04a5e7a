"""A suite's own settings: the optional items/<suite>/suite.yaml, read strictly.

    max_new_tokens: 64     # the longest answer to any item of this suite, in tokens
    player: players/p.yaml # the simulated player of every item with a Brief: and no player:
    player_turns: 4        # ... and how many times the model answers in those (inputs/turns.py)

An item's front matter `max_new_tokens:` wins over it; a suite that says nothing gets the
sweep's answer length (GenerationSettings.max_new_tokens, 512 unless the sweep sets it).
The answer's length is the suite author's call: a one-word toy answer and a 250-word scene
need different budgets, and a budget too small cuts every answer short.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergeval.core.errors import Problem
from mergeval.inputs.strict_yaml import load_yaml, unknown_key_problems
from mergeval.inputs.text_files import read_text_file

SUITE_FILE = "suite.yaml"
KEYS = ("max_new_tokens", "player", "player_turns")
MAX_NEW_TOKENS = 1 << 17  # far beyond any model's context: a typo, not a budget
MAX_TURNS = 32  # a scene, not a chat log: more is a typo


@dataclass(frozen=True)
class SuiteSettings:
    max_new_tokens: int | None = None
    player: str | None = None  # the player settings file, relative to the suite folder
    player_turns: int | None = None


def answer_length(value: Any) -> int:
    """A max_new_tokens value, or ValueError saying what is expected."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NEW_TOKENS:
        raise ValueError(f"expected a whole number of tokens from 1 to {MAX_NEW_TOKENS}, got {value!r}")
    return value


def player_turns(value: Any) -> int:
    """A player_turns value, or ValueError saying what is expected."""
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MAX_TURNS:
        raise ValueError(f"expected how many times the model answers, from 2 to {MAX_TURNS}, got {value!r}")
    return value


def _player_file(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected the player settings file, relative to the suite folder, got {value!r}")
    return value.strip()


_READ = {"max_new_tokens": answer_length, "player": _player_file, "player_turns": player_turns}


def read_suite_settings(folder: Path) -> tuple[SuiteSettings, list[Problem]]:
    """The suite's settings (defaults when it has no suite.yaml) and every problem found."""
    path = folder / SUITE_FILE
    if not path.exists():
        return SuiteSettings(), []
    text, problems = read_text_file(path, "a suite settings")
    if text is None:
        return SuiteSettings(), problems
    doc = load_yaml(text, path)
    if doc.problems:
        return SuiteSettings(), doc.problems
    if doc.data is None:
        return SuiteSettings(), []
    if not isinstance(doc.data, dict):
        return SuiteSettings(), [Problem(path, 1, "suite settings must be YAML keys and values, e.g. max_new_tokens: 512")]
    problems = unknown_key_problems(doc, doc.data, (), list(KEYS), "suite settings")
    values = {}
    for key in KEYS:
        if key in doc.data:
            try:
                values[key] = _READ[key](doc.data[key])
            except ValueError as e:
                problems.append(doc.problem((key,), f"{key}: {e}"))
    return (SuiteSettings(**values) if not problems else SuiteSettings()), problems
