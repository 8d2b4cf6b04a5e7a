"""Recipes: mergekit YAML files, validated strictly before anything is merged.

    recipe = load_recipe(Path("merge_configs/toy/ties_d08.yaml"), Workspace.find())
    recipe.config     # what the build stage hands to mergekit: source paths made absolute
    recipe.sources    # the source model folders, base_model included, in order of appearance

mergekit ignores unknown keys (`paramters:` merges fine, with defaults) and finds a wrong
method, a missing parameter or a layer range past the end only inside run_merge, after any
download. Here every such mistake is an error naming the file and line, found in a second,
against mergekit's own schema (its pydantic models) and method registry (each method's
input contract and parameter declarations), and against the source models' config.json;
the checks are in recipe_checks.py.

mergeval's own key, beside mergekit's:
    random_seed: 7    # for stochastic methods (dare_*, della*, ...): a merge is then the
                      # same bit for bit on every rebuild; stripped before mergekit sees it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergeval.core.errors import InputError, Problem
from mergeval.core.workspace import Workspace
from mergeval.inputs.check_memo import checked_with_memo
from mergeval.inputs.recipe_checks import check_recipe
from mergeval.inputs.source_models import ModelInfo, model_info, source_name
from mergeval.inputs.strict_yaml import load_yaml
from mergeval.inputs.text_files import read_text_file

__all__ = [
    "RECIPE_SUFFIXES", "ModelInfo", "Recipe", "is_stochastic", "load_recipe", "load_recipes",
    "model_info", "read_recipe", "read_recipes", "recipe_files",
]

RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Recipe:
    name: str  # file stem: the merge's name in every report
    path: Path
    text: str  # the YAML as written
    config: dict  # for mergekit: model references resolved to absolute paths, mergeval keys removed
    method: str
    sources: tuple[Path, ...]  # resolved source model folders, first appearance first
    base_model: Path | None
    random_seed: int | None
    source_names: tuple[tuple[Path, str], ...] = ()  # (folder, hub id[@revision]) for hub models

    @property
    def stochastic(self) -> bool:
        """True when the method draws random masks: rebuilds differ without random_seed."""
        return is_stochastic(self.method)


def is_stochastic(method: str) -> bool:
    from mergekit.merge_methods import registry
    from mergekit.sparsify import SparsificationMethod

    try:
        m = registry.get(method)
    except RuntimeError:
        return False
    random_masks = (SparsificationMethod.random, SparsificationMethod.della_magprune)
    return getattr(m, "sparsification_method", None) in random_masks or method == "arcee_fusion"


def recipe_files(folder: Path) -> list[Path]:
    """Everything named like a recipe, files or not: a folder or a broken link named `x.yaml`
    is then reported when read, never silently skipped."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in RECIPE_SUFFIXES and not p.name.startswith(".")
    )


def load_recipe(path: Path, workspace: Workspace) -> Recipe:
    recipe, problems = read_recipe(path, workspace)
    if problems or recipe is None:
        raise InputError(problems)
    return recipe


def load_recipes(paths: list[Path], workspace: Workspace, memos: list | None = None) -> list[Recipe]:
    """Each path a recipe file or a folder of them (*.yaml, *.yml); all problems at once.
    `memos` collects passing checks to remember (check_memo.py)."""
    recipes, problems = read_recipes(paths, workspace, memos)
    if problems:
        raise InputError(problems)
    return recipes


def read_recipes(paths: list[Path], workspace: Workspace,
                 memos: list | None = None) -> tuple[list[Recipe], list[Problem]]:
    recipes: list[Recipe] = []
    problems: list[Problem] = []
    files: list[tuple[Path, Path | None]] = []  # (recipe file, the folder it was listed from)
    for p in paths:
        if p.is_dir():
            found = recipe_files(p)
            if not found:
                problems.append(Problem(p, None, "no recipes (*.yaml, *.yml) in this folder"))
            files += [(f, p) for f in found]
        else:
            files.append((p, None))
    first_by_name: dict[str, Path] = {}
    for f, folder in files:
        recipe, found = read_recipe(f, workspace, inside=folder, memos=memos)
        problems += found
        if recipe is None:
            continue
        if recipe.name in first_by_name and first_by_name[recipe.name] != f:
            problems.append(
                Problem(f, None, f"a recipe named {recipe.name!r} is also {first_by_name[recipe.name]}: "
                        "a merge is named by its file stem, so stems must differ")
            )
            continue
        first_by_name[recipe.name] = f
        recipes.append(recipe)
    return recipes, problems


def read_recipe(path: Path, workspace: Workspace, inside: Path | None = None,
                memos: list | None = None) -> tuple[Recipe | None, list[Problem]]:
    """Parse and check one recipe; (recipe or None, every problem found).

    `inside`: the folder it was listed from; a link leading out of it is refused. A recipe
    that passed before, unchanged and with unchanged sources, is not checked again
    (check_memo.py); `memos` collects new passing checks for the caller to remember."""
    text, problems = read_text_file(path, "a recipe", inside=inside)
    if text is None:
        return None, problems
    doc = load_yaml(text, path)
    if doc.problems and doc.data is None:
        return None, doc.problems
    if not isinstance(doc.data, dict):
        return None, doc.problems + [
            Problem(path, doc.line() or 1, "a recipe is a YAML mapping (merge_method: ..., models: ...)")
        ]
    checked = checked_with_memo(text, workspace, lambda: check_recipe(doc, workspace), memos)
    problems = sorted(doc.problems + checked.problems, key=lambda p: p.line or 0)
    if problems:
        return None, problems
    config = copy.deepcopy(doc.data)
    seed = config.pop("random_seed", None)
    for key, resolved in checked.rewrites:
        _set(config, key, resolved)
    return (
        Recipe(
            name=path.stem,
            path=path,
            text=text,
            config=config,
            method=config["merge_method"],
            sources=tuple(checked.sources),
            base_model=checked.base_model,
            random_seed=seed,
            source_names=_source_names(checked.located, workspace),
        ),
        [],
    )


def _source_names(located, workspace: Workspace) -> tuple[tuple[Path, str], ...]:
    """Hub names of the recipe's sources; of two names for one folder (`org/name` and
    `org/name@<main's commit>`), the one without a revision."""
    names: dict[Path, str] = {}
    for raw, rev, path in located:
        name = source_name(workspace, raw, rev, path)
        if name is not None and (path not in names or ("@" in names[path] and "@" not in name)):
            names[path] = name
    return tuple(names.items())


def _set(data: Any, key: tuple, value: Any) -> None:
    for k in key[:-1]:
        data = data[k]
    data[key[-1]] = value
