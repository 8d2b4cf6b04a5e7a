"""Plan a sweep: validate every input, then list the models to rank and their stage keys.

Everything the sweep needs is read and checked here, before any GPU time is spent: recipes
(strictly), items, judge settings. A problem anywhere is an InputError listing them all.
Merges *and* the source models they name are candidates: the question a sweep answers is
whether a merge beat its parents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from mergeval.answering.settings import GenerationSettings
from mergeval.core.errors import InputError
from mergeval.core.hashing import content_hash
from mergeval.core.workspace import Workspace
from mergeval.engine import build
from mergeval.inputs import check_memo, model_dirs, remote_code
from mergeval.inputs.items import Item, load_items
from mergeval.inputs.recipes import Recipe, load_recipes
from mergeval.proctora.settings import JudgeSettings, load_settings


@dataclass(frozen=True)
class Candidate:
    name: str  # a merge: its recipe's file stem; a source: its hub id[@revision], else its directory name
    kind: str  # "merge" or "source"
    model_id: str  # storage id: name + content key (build key, or source fingerprint)
    key: str
    path: Path  # a source's directory, or where the merge is (or will be) built
    recipe: Recipe | None = None
    parents: tuple[str, ...] = ()
    method: str | None = None
    trust_remote_code: bool = False  # named by the user: its folder's Python may run (remote_code.py)


@dataclass(frozen=True)
class SweepPlan:
    workspace: Workspace
    configs: Path
    items_dir: Path
    judge_file: Path
    items: tuple[Item, ...]
    judge: JudgeSettings
    judge_fingerprint: str  # computed once: for a local judge it hashes the model's content
    generation: GenerationSettings
    candidates: tuple[Candidate, ...]
    recipes: tuple[Recipe, ...]
    merge: build.MergeSettings = build.MergeSettings()  # how mergekit runs (dtype is in the build keys)

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)


def source_names(paths: list[Path], hub_names: dict[Path, str] | None = None) -> dict[Path, str]:
    """Hub ids for models from the hub cache (`hub_names`: folder → `org/name[@revision]`, the
    recipes' Recipe.source_names), else directory names, made unique with their parent folder
    where two sources clash. One folder is one model, however the recipes refer to it."""
    hub_names = hub_names or {}
    names: dict[Path, str] = {}
    for p in paths:
        name = hub_names.get(p) or p.name
        if name in names.values():
            name = f"{p.parent.name}/{p.name}"
        names[p] = name
    return names


def storage_name(name: str) -> str:
    """A name as one folder name (model ids name folders under the state folder)."""
    return re.sub(r"[^\w.-]+", "--", name)


def plan_sweep(
    workspace: Workspace,
    configs: Path,
    items_dir: Path,
    judge_file: Path,
    generation: GenerationSettings | None = None,
    trust_remote_code: Iterable[str] = (),
    merge: build.MergeSettings | None = None,
) -> SweepPlan:
    merge = merge or build.MergeSettings()
    problems = []

    def collect(load):
        try:
            return load()
        except InputError as e:
            problems.extend(e.problems)

    memos = []  # recipes that passed their checks, remembered only if everything passes
    recipes = collect(lambda: load_recipes([configs], workspace, memos)) or []
    items = collect(lambda: load_items(items_dir)) or []
    judge = collect(lambda: load_settings(judge_file, workspace))
    if problems:
        raise InputError(problems)

    candidates = candidates_for(workspace, recipes, merge=merge)
    trusted, problems = remote_code.named(candidates, trust_remote_code, workspace.resolve)
    if problems:
        raise InputError(problems)
    candidates = [trusting(c, workspace) if c.name in trusted else c for c in candidates]
    check_memo.remember(memos)
    return SweepPlan(
        workspace, configs, items_dir, judge_file, tuple(items), judge, judge.fingerprint(),
        generation or GenerationSettings(), tuple(candidates), tuple(recipes), merge,
    )


def candidates_for(workspace: Workspace, recipes: list[Recipe], fingerprints: dict[str, str] | None = None,
                   sources: bool = True, merge=None) -> list[Candidate]:
    """The source models the recipes name (unless not `sources`), then one merge per recipe.
    `fingerprints` (source path → fingerprint) may be given to skip hashing known folders;
    `merge`: the sweep's MergeSettings (its dtype is part of a merge's key)."""
    paths = list(dict.fromkeys(p for r in recipes for p in r.sources))
    fingerprints = dict(fingerprints or {})
    fingerprints.update({str(p): model_dirs.fingerprint(p) for p in paths if str(p) not in fingerprints})
    hub_names: dict[Path, str] = {}
    for r in recipes:  # the first recipe's name for a folder wins; a name without @revision first
        for p, name in r.source_names:
            if p not in hub_names or ("@" in hub_names[p] and "@" not in name):
                hub_names[p] = name
    names = source_names(paths, hub_names)
    candidates = [
        Candidate(names[p], "source", f"{storage_name(names[p]) if p in hub_names else p.name}"
                  f"-{fingerprints[str(p)][:16]}", fingerprints[str(p)], p)
        for p in paths
    ] if sources else []
    for r in recipes:
        key = build.build_key(r, fingerprints, merge)
        candidates.append(
            Candidate(
                r.name, "merge", f"{r.name}-{key[:16]}", key, build.output_dir(workspace, r, key),
                recipe=r, parents=tuple(names[p] for p in r.sources), method=r.method,
            )
        )
    return candidates


def trusting(cand: Candidate, workspace: Workspace) -> Candidate:
    """The candidate run with its own code: another model to the caches (a folder whose config
    names both a built-in class and its own code loads differently), so another key."""
    key = content_hash({"model": cand.key, "trust_remote_code": True})
    path = build.output_dir(workspace, cand.recipe, key) if cand.kind == "merge" else cand.path
    return replace(cand, key=key, model_id=f"{cand.model_id.rsplit('-', 1)[0]}-{key[:16]}", path=path,
                   trust_remote_code=True)
