"""`mergeval validate [PATHS]`: every problem in recipes and items, before any GPU time.

    validate_paths([Path("merge_configs/toy"), Path("items/toy")], Workspace.find())

A path may be a recipe (*.yaml, *.yml), an item (*.txt, *.md), a folder of either, the
`items/` folder (each sub-folder a suite) or a workspace (its merge_configs/ and items/).
A folder is a folder of items when it is, or is inside, a folder named `items`, or when it
holds item files and no recipes. Nothing stops at the first problem.

A YAML file with a `{search: [low, high]}` range or a `{choose: [...]}` choice in it is a search
space (merge_configs/search/), not a recipe: it is handed to `check_space`, which the command
line gives as the search's own reader (search/space.read_space), so `mergeval validate` checks a
space exactly as `mergeval search` does before any build. (inputs/ may not import search/.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mergeval.core.errors import Problem
from mergeval.core.workspace import Workspace
from mergeval.inputs.items import ITEM_SUFFIXES, item_files, read_item, read_items
from mergeval.inputs.recipes import RECIPE_SUFFIXES, read_recipes, recipe_files
from mergeval.inputs.strict_yaml import load_yaml_documents

CheckSpace = Callable[[Path], list[Problem]]  # a search space's problems (search/space.read_space)


def validate_paths(paths: list[Path], workspace: Workspace, check_space: CheckSpace | None = None) -> list[Problem]:
    problems: list[Problem] = []
    for path in paths:
        problems += _validate(Path(path), workspace, check_space or _no_space_check)
    return problems


def is_search_space(path: Path) -> bool:
    """Does this YAML file hold a {search: ...} range or a {choose: ...} choice? (No mergekit
    recipe has either key. A file that does not parse, or that the strict reader refuses (an
    alias bomb, nesting too deep), is a recipe: its reader names the line.)"""
    try:
        docs = load_yaml_documents(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError):
        return False
    return all(d.ok for d in docs) and any(_has_mark(d.data) for d in docs)


def _has_mark(node: Any) -> bool:
    if isinstance(node, dict):
        return "search" in node or "choose" in node or any(_has_mark(v) for v in node.values())
    return isinstance(node, list) and any(_has_mark(v) for v in node)


def _no_space_check(path: Path) -> list[Problem]:
    return [Problem(path, None, "a search space ({search: ...} or {choose: ...}): check it with "
                                "`mergeval validate` or `mergeval search --dry-run`")]


def _validate(path: Path, ws: Workspace, check_space: CheckSpace) -> list[Problem]:
    if not path.exists():
        return [Problem(path, None, "no such file or folder")]
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in RECIPE_SUFFIXES:
            return check_space(path) if is_search_space(path) else read_recipes([path], ws)[1]
        if suffix in ITEM_SUFFIXES:
            return read_item(path, _suite_root(path))[1]
        return [Problem(path, None, "not a recipe (*.yaml, *.yml) or an item (*.txt, *.md)")]

    if (path / "merge_configs").is_dir() or (path / "items").is_dir():  # a workspace
        subs = [path / "merge_configs", path / "items"]
        return [p for sub in subs if sub.is_dir() for p in _validate(sub, ws, check_space)]
    if _under_items(path, ws) or (not _recipe_dirs(path) and item_files(path)):
        return _validate_items(path)
    dirs = _recipe_dirs(path)
    if not dirs:
        return [Problem(path, None, "no recipes (*.yaml, *.yml) or items (*.txt, *.md) in this folder")]
    # Recipes are named by file stem, so stems must differ within a folder (not across).
    problems = []
    for d in dirs:
        spaces = frozenset(f for f in recipe_files(d) if f.is_file() and is_search_space(f))
        for space in sorted(spaces):
            problems += check_space(space)
        if len(spaces) < len(recipe_files(d)):
            problems += read_recipes([d], ws, skip=spaces)[1]
    return problems


def _validate_items(path: Path) -> list[Problem]:
    if path.name == "items":
        problems = [
            Problem(f, None, "an item file belongs in a suite folder: items/<suite>/...")
            for f in sorted(path.iterdir())
            if f.is_file() and f.suffix.lower() in ITEM_SUFFIXES and f.name.lower() != "readme.md"
        ]
        suites = [d for d in sorted(path.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        return problems + [p for d in suites for p in read_items(d)[1]]
    root = _suite_root(path / "x")
    if root == path:
        return read_items(path)[1]
    files = item_files(path)
    if not files:
        return [Problem(path, None, "no item files (*.txt, *.md) in this folder")]
    return [p for f in files for p in read_item(f, root)[1]]


def _under_items(path: Path, ws: Workspace) -> bool:
    """Is this folder `items/` or inside it? Only folders below the workspace root count."""
    p, root = path.resolve(), ws.root.resolve()
    return "items" in (p.relative_to(root).parts if p.is_relative_to(root) else p.parts)


def _suite_root(file: Path) -> Path:
    """items/<suite>/... -> items/<suite>; a file elsewhere is its own folder's suite."""
    for folder in file.parents:
        if folder.parent.name == "items":
            return folder
    return file.parent


def _recipe_dirs(path: Path) -> list[Path]:
    """The folder and its sub-folders that hold recipe files, in sorted order."""
    found = {p.parent for suffix in RECIPE_SUFFIXES for p in path.rglob(f"*{suffix}")
             if not any(part.startswith(".") for part in p.relative_to(path).parts)}
    return sorted(found)
