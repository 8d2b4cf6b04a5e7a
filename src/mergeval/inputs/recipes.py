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

Three kinds, told apart by content (each checked by its own module):
    plain        a mergekit-yaml recipe (merge_method: ...)            recipe_checks.py
    moe          a mergekit-moe recipe (base_model:, experts: ...)     moe_checks.py
    multi-stage  mergekit-multi: `---`-separated recipes with name:    stages_checks.py
                 recipe.stages lists them in build order, the final merge last

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
from mergeval.engine import merge_server
from mergeval.inputs.check_memo import checked_with_memo
from mergeval.inputs.moe_checks import check_moe, is_moe
from mergeval.inputs.recipe_checks import STAGE_REF, check_recipe
from mergeval.inputs.recipe_refs import with_named_recipes
from mergeval.inputs.source_models import ModelInfo, model_info, source_name
from mergeval.inputs.stages_checks import check_stages, final_index, is_multi_stage, stage_name, stage_order
from mergeval.inputs.strict_yaml import YamlDoc, load_yaml_documents
from mergeval.inputs.text_files import read_text_file

__all__ = [
    "KINDS", "RECIPE_SUFFIXES", "STAGE_REF", "ModelInfo", "Recipe", "Stage", "is_stochastic", "load_recipe", "load_recipes",
    "model_info", "read_recipe", "read_recipes", "recipe_files",
]

RECIPE_SUFFIXES = (".yaml", ".yml")
KINDS = ("plain", "moe", "multi-stage")


@dataclass(frozen=True)
class Stage:
    """One merge of a multi-stage recipe: its own build, keyed by its content and its inputs."""

    name: str | None  # None: the final merge, when its document has no name:
    config: dict  # for mergekit; an earlier stage it names is STAGE_REF + that stage's name
    method: str
    uses: tuple[str, ...]  # the earlier stages it names
    sources: tuple[Path, ...]  # the model folders it names itself
    random_seed: int | None


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
    kind: str = "plain"  # one of KINDS
    stages: tuple[Stage, ...] = ()  # multi-stage: every stage in build order, the final merge last;
    # then config, method and random_seed are the final merge's, sources the models of every stage

    @property
    def stochastic(self) -> bool:
        """True when the method draws random masks (a stage's, for multi-stage; random gates or
        expert noise, for a MoE): rebuilds would differ without a seed (mergeval always sets one)."""
        if self.kind == "moe":
            experts = (self.config.get("experts") or []) + (self.config.get("shared_experts") or [])
            return self.config.get("gate_mode") in ("random", "uniform_random") or any(
                isinstance(e, dict) and e.get("noise_scale") for e in experts)
        return any(is_stochastic(s.method) for s in self.stages) if self.stages else is_stochastic(self.method)


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


def read_recipes(paths: list[Path], workspace: Workspace, memos: list | None = None,
                 skip: frozenset[Path] = frozenset()) -> tuple[list[Recipe], list[Problem]]:
    """`skip`: files a folder holds that are not recipes (validate: the search spaces in it)."""
    recipes: list[Recipe] = []
    problems: list[Problem] = []
    files: list[tuple[Path, Path | None]] = []  # (recipe file, the folder it was listed from)
    for p in paths:
        if p.is_dir():
            found = [f for f in recipe_files(p) if f not in skip]
            if not found:
                problems.append(Problem(p, None, "no recipes (*.yaml, *.yml) in this folder"))
            files += [(f, p) for f in found]
        else:
            files.append((p, None))
    first_by_name: dict[str, Path] = {}
    siblings = {}  # a recipe may name another of its folder by its stem (recipe_refs.py)
    for f, _ in files:
        siblings.setdefault(f.stem, f)
        for g in recipe_files(f.parent) if f.parent.is_dir() else []:
            siblings.setdefault(g.stem, g)
    for f, folder in files:
        recipe, found = read_recipe(f, workspace, inside=folder, memos=memos, siblings=siblings)
        problems += [p for p in found if p not in problems]  # a named recipe's own problems: once
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


def read_recipe(path: Path, workspace: Workspace, inside: Path | None = None, memos: list | None = None,
                siblings: dict[str, Path] | None = None) -> tuple[Recipe | None, list[Problem]]:
    """Parse and check one recipe; (recipe or None, every problem found).

    `inside`: the folder it was listed from; a link leading out of it is refused. A recipe
    that passed before, unchanged and with unchanged sources, is not checked again
    (check_memo.py); `memos` collects new passing checks for the caller to remember.
    `siblings`: the other recipes of the sweep by stem, which this one may name as models."""
    text, problems = read_text_file(path, "a recipe", inside=inside)
    if text is None:
        return None, problems
    docs = load_yaml_documents(text, path)
    broken = [p for d in docs if d.data is None for p in d.problems]
    if broken or not docs:
        return None, broken or [p for d in docs for p in d.problems]
    kind = "multi-stage" if is_multi_stage(docs) else "moe" if is_moe(docs[0].data) else "plain"
    doc = docs[0]
    if kind != "multi-stage" and not isinstance(doc.data, dict):
        return None, doc.problems + [
            Problem(path, doc.line() or 1, "a recipe is a YAML mapping (merge_method: ..., models: ...)")
        ]
    if kind == "plain" and any(k in doc.data for k in ("experts", "gate_mode")):
        return None, [doc.problem(("merge_method",), "a recipe is either a mergekit-yaml merge (merge_method:) or "
                                  "a mergekit-moe MoE (experts:, gate_mode:), not both")]
    key_text = text
    if kind != "moe" and siblings:
        docs, texts, found = with_named_recipes(path, docs, siblings, workspace)
        if found:
            return None, found
        if texts:  # read as the stages of the recipes it names, then its own
            kind, key_text = "multi-stage", "\n---\n".join([text] + texts)
    # in the merge server (merge_server.call): this process need not import mergekit
    checked = checked_with_memo(key_text, workspace, lambda: merge_server.call(check_kind, kind, docs, workspace), memos)
    problems = sorted([p for d in docs for p in d.problems] + checked.problems, key=lambda p: p.line or 0)
    if problems:
        return None, problems
    if kind == "multi-stage":
        return _multi_stage(path, text, docs, checked, workspace), []
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
            method=config["merge_method"] if kind == "plain" else "moe",
            sources=tuple(checked.sources),
            base_model=checked.base_model,
            random_seed=seed,
            source_names=_source_names(checked.located, workspace),
            kind=kind,
        ),
        [],
    )


def check_kind(kind: str, docs: list[YamlDoc], workspace: Workspace):
    """The checks of one kind of recipe (recipe_checks.py, moe_checks.py, stages_checks.py)."""
    if kind == "multi-stage":
        return check_stages(docs, workspace)
    return (check_moe if kind == "moe" else check_recipe)(docs[0], workspace)


def _source_names(located, workspace: Workspace) -> tuple[tuple[Path, str], ...]:
    """Hub names of the recipe's sources; of two names for one folder (`org/name` and
    `org/name@<main's commit>`), the one without a revision."""
    names: dict[Path, str] = {}
    for raw, rev, path in located:
        name = source_name(workspace, raw, rev, path)
        if name is not None and (path not in names or ("@" in names[path] and "@" not in name)):
            names[path] = name
    return tuple(names.items())


def _multi_stage(path: Path, text: str, docs: list[YamlDoc], checked, workspace: Workspace) -> Recipe:
    configs = [copy.deepcopy({k: v for k, v in d.data.items() if k != "name"}) for d in docs]
    sources: list[list[Path]] = [[] for _ in docs]
    for (i, *key), resolved in checked.rewrites:
        _set(configs[i], tuple(key), resolved)
        if not resolved.startswith(STAGE_REF) and Path(resolved) not in sources[i]:
            sources[i].append(Path(resolved))
    final = final_index(docs)
    order = [i for i in stage_order(docs) if i != final] + [final]
    stages = []
    for i in order:
        seed = configs[i].pop("random_seed", None)
        uses = tuple(dict.fromkeys(v.removeprefix(STAGE_REF) for (j, *_), v in checked.rewrites
                                   if j == i and v.startswith(STAGE_REF)))
        stages.append(Stage(stage_name(docs[i]), configs[i], configs[i]["merge_method"], uses,
                            tuple(sources[i]), seed))
    last = stages[-1]
    return Recipe(name=path.stem, path=path, text=text, config=last.config,
                  method=" → ".join(s.method for s in stages), sources=tuple(checked.sources),
                  base_model=checked.base_model, random_seed=last.random_seed, kind="multi-stage",
                  stages=tuple(stages), source_names=_source_names(checked.located, workspace))


def _set(data: Any, key: tuple, value: Any) -> None:
    for k in key[:-1]:
        data = data[k]
    data[key[-1]] = value
