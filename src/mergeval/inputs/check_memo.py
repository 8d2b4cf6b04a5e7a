"""Passing recipe checks remembered by content: a re-run validates without importing mergekit.

The recipe checks read mergekit's schema and method registry, and importing mergekit pulls in
peft, transformers and torch: 3–4 s on a CPU box, most of what a sweep that finds everything
already done costs. A check's outcome depends only on the recipe's text, where each model
reference points, those models' config.json, and the versions of mergekit and of the checks
themselves. A recipe that passed is remembered under the hash of all that; the memo is used
only while every reference still resolves to the same folder and every config.json still
hashes the same. Failing checks are never remembered: their messages are always fresh.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Callable

from mergeval.core import store
from mergeval.core.hashing import content_hash, file_hash
from mergeval.core.workspace import Workspace
from mergeval.inputs.source_models import locate

# The code whose verdict is remembered: editing any of it invalidates every memo.
_CHECKER_SOURCES = ("recipe_checks.py", "method_contracts.py", "source_models.py", "strict_yaml.py", "recipes.py",
                    "check_memo.py", "moe_checks.py", "stages_checks.py", "tokenizer_options.py",
                    "recipe_refs.py")


@lru_cache(maxsize=1)
def _checker_version() -> str:
    here = Path(__file__).parent
    return content_hash({name: (here / name).read_text(encoding="utf-8") for name in _CHECKER_SOURCES})


def memo_path(workspace: Workspace, text: str) -> Path:
    key = content_hash({"recipe": text, "workspace": str(workspace.root),
                        "mergekit": version("mergekit"), "checks": _checker_version()})
    return workspace.state / "recipe-checks" / f"{key}.json"


def checked_with_memo(text: str, workspace: Workspace, check: Callable, memos: list | None = None):
    """check() unless a still-valid memo of its passing outcome exists. A passing outcome is
    added to `memos`, for the caller to `remember` once *all* its input passed: a command
    that stops on bad input writes nothing (and `mergeval validate` passes no list)."""
    from mergeval.inputs.recipe_checks import Checked

    path = memo_path(workspace, text)
    memo = _read(path)
    if memo is not None and _still_valid(memo, workspace):
        return Checked(rewrites=[(tuple(k), v) for k, v in memo["rewrites"]],
                       sources=[Path(p) for p in memo["sources"]],
                       located=[(raw, rev, Path(p)) for raw, rev, p in memo["located"]],
                       base_model=Path(memo["base_model"]) if memo["base_model"] else None)
    checked = check()
    if memos is not None and not checked.problems:
        memos.append((path, {
            "located": [[raw, rev, str(p)] for raw, rev, p in checked.located],
            "configs": {str(p): file_hash(p / "config.json") for _, _, p in checked.located},
            "rewrites": [[list(k), v] for k, v in checked.rewrites],
            "sources": [str(p) for p in checked.sources],
            "base_model": str(checked.base_model) if checked.base_model else None,
        }))
    return checked


def remember(memos: list) -> None:
    for path, memo in memos:
        store.write_json(path, memo)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, torn or garbled: simply check again
        return None


def _still_valid(memo: dict, workspace: Workspace) -> bool:
    try:
        for raw, rev, resolved in memo["located"]:
            if locate(workspace, raw, rev) != (Path(resolved), None):
                return False
        return all(file_hash(Path(p) / "config.json") == h for p, h in memo["configs"].items())
    except (OSError, ValueError, TypeError, KeyError):
        return False
