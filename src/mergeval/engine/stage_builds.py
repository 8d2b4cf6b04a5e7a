"""The stages of a multi-stage recipe as builds of their own, each keyed by its content.

    keys = stage_keys(recipe, fingerprints)   # [key of each stage], in recipe.stages' order
    stage_dir(workspace, keys[0])             # where an earlier stage is built
    resolved(stage.config, outputs)           # its STAGE_REF references → those stages' folders

A stage's key hashes its config (sources by fingerprint, earlier stages by *their* keys), the
mergekit version and its seed, and nothing about the recipe around it: two recipes that share
an identical first stage share its build, and editing the final stage changes only its own key.
Earlier stages live in `.mergeval/stages/<key>`, named by content alone; the final stage is the
recipe's merge, in the same place a plain recipe's merge is (build.output_dir), pruned the same
way. Earlier stages are kept, so that a re-run after an edit of the final stage needs only it.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

from mergeval.core.hashing import content_hash
from mergeval.core.workspace import Workspace
from mergeval.inputs.recipes import STAGE_REF, Recipe, Stage

DEFAULT_SEED = 0  # as build.DEFAULT_SEED: a stage without random_seed rebuilds bit-identical too


def with_fingerprints(node: Any, fingerprints: dict[str, str]) -> Any:
    """The config with each source path (or stage reference) replaced by its content key."""
    if isinstance(node, dict):
        return {k: with_fingerprints(v, fingerprints) for k, v in node.items()}
    if isinstance(node, list):
        return [with_fingerprints(v, fingerprints) for v in node]
    if isinstance(node, str) and node in fingerprints:
        return fingerprints[node]
    return node


def stage_seed(stage: Stage) -> int:
    return DEFAULT_SEED if stage.random_seed is None else stage.random_seed


def stage_keys(recipe: Recipe, fingerprints: dict[str, str]) -> list[str]:
    """`fingerprints`: str(source path) → its model fingerprint, for every source of the recipe."""
    known = {p: "model:" + f for p, f in fingerprints.items()}
    keys = []
    for stage in recipe.stages:
        key = content_hash({"recipe": with_fingerprints(stage.config, known), "mergekit": version("mergekit"),
                            "seed": stage_seed(stage)})
        keys.append(key)
        if stage.name:
            known[STAGE_REF + stage.name] = "stage:" + key
    return keys


def stage_dir(workspace: Workspace, key: str) -> Path:
    return workspace.state / "stages" / key[:32]


def resolved(config: dict, outputs: dict[str, Path]) -> dict:
    """The config mergekit is given: each earlier stage named by the folder it was built in."""
    refs = {STAGE_REF + name: str(path) for name, path in outputs.items()}
    return with_fingerprints(config, refs)
