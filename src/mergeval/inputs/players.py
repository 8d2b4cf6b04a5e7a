"""A simulated player's settings file, read strictly: who plays the user in a conversation item.

    settings, problems = read_player(Path("items/toy_scenes/players/toy.yaml"))

An item names it in its front matter (`player: players/toy.yaml`, relative to the suite
folder) and gives the player's brief (a `Brief:` section) and the number of turns
(`player_turns:`). The file holds what the judge's holds, for the answering backends:

    backend: openai                       # openai (any OpenAI-compatible server) or transformers
    model: toy-player                     # openai: the served name; transformers: a folder,
                                          #   relative to this file
    endpoint: http://127.0.0.1:8000/v1    # openai only; not keyed (the same model anywhere)
    temperature: 0.7                      # default 0 (greedy)
    top_p: 1.0
    seed: 0
    max_new_tokens: 80                    # longest player turn, default 128

What the player writes is cached by `key_data()` (every key but the endpoint) with the
conversation so far, so a re-run asks the player nothing it has already answered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergeval.core.errors import Problem
from mergeval.inputs.strict_yaml import load_yaml, unknown_key_problems
from mergeval.inputs.suite_settings import answer_length
from mergeval.inputs.text_files import read_text_file

KEYS = ("backend", "model", "endpoint", "temperature", "top_p", "seed", "max_new_tokens")
PLAYER_BACKENDS = ("openai", "transformers")


@dataclass(frozen=True)
class PlayerSettings:
    backend: str
    model: str  # openai: the served name; transformers: the folder, resolved
    endpoint: str | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 128
    source: str = ""  # the file it came from: not keyed (moving the suite keeps every cache)

    def key_data(self) -> dict:
        """What changes the player's turns: everything but where the server and the file are."""
        return {"backend": self.backend, "model": self.model, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed, "max_new_tokens": self.max_new_tokens}


def read_player(path: Path, inside: Path | None = None) -> tuple[PlayerSettings | None, list[Problem]]:
    """The player settings in `path` (None when broken) and every problem, each with its line."""
    text, problems = read_text_file(path, "a player settings file", inside=inside)
    if text is None:
        return None, problems
    doc = load_yaml(text, path)
    if doc.problems:
        return None, doc.problems
    if not isinstance(doc.data, dict):
        return None, [Problem(path, 1, "a player file is YAML keys and values: backend:, model:, endpoint:, ...")]
    problems = unknown_key_problems(doc, doc.data, (), KEYS, "a player file")
    values: dict[str, Any] = {}
    for key, value in doc.data.items():
        if key not in KEYS:
            continue
        try:
            values[key] = _READ[key](value)
        except ValueError as e:
            problems.append(doc.problem((key,), f"{key}: {e}"))
    for key in ("backend", "model"):
        if key not in doc.data:
            problems.append(Problem(path, 1, f"a player file needs {key}: (e.g. backend: openai, model: its served name)"))
    if values.get("backend") == "openai" and not values.get("endpoint"):
        problems.append(doc.problem(("backend",), "the openai player needs an endpoint: (e.g. http://127.0.0.1:8000/v1)"))
    if problems:
        return None, problems
    if values["backend"] == "transformers":
        folder = (path.parent / values["model"]).resolve()
        if not folder.is_dir():
            return None, [doc.problem(("model",), f"model: no model folder at {folder}")]
        values["model"] = str(folder)
    return PlayerSettings(**values, source=str(path)), []


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value.strip()


def _backend(value: Any) -> str:
    if value not in PLAYER_BACKENDS:
        raise ValueError(f"expected {' or '.join(PLAYER_BACKENDS)}, got {value!r}")
    return value


def _number(low: float, high: float):
    def read(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}, got {value!r}")
        return float(value)
    return read


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return value


_READ = {"backend": _backend, "model": _text, "endpoint": _text, "temperature": _number(0, 2),
         "top_p": _number(0, 1), "seed": _seed, "max_new_tokens": answer_length}
