"""`validate_paths`: recipes and items, files and folders, every problem at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mergeval.core.workspace import Workspace
from mergeval.inputs.validate import validate_paths
from tests.tiny_models import make_tiny_model

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

PLAIN = "Question:\nwhat is 8 plus 9 ?\n\nCriterion:\nThe answer must be exactly 17.\n"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """The repo's toy recipes and roleplay items, with tiny llamas at the zoo paths."""
    root = tmp_path_factory.mktemp("ws")
    for seed, name in enumerate(["base", "spec_add", "spec_rev"]):
        make_tiny_model(root / "zoo" / name, seed=seed)
    shutil.copytree(REPO / "merge_configs" / "toy", root / "merge_configs" / "toy")
    shutil.copytree(REPO / "items" / "roleplay", root / "items" / "roleplay")
    (root / "items" / "toy" / "add").mkdir(parents=True)
    (root / "items" / "toy" / "add" / "add_000.txt").write_text(PLAIN)
    return Workspace(root)


def test_the_shipped_recipes_and_items_are_clean(ws):
    assert validate_paths([ws.root], ws) == []
    assert validate_paths([ws.configs / "toy", ws.items / "roleplay"], ws) == []
    assert validate_paths([ws.items, ws.configs / "toy" / "ties_d08.yaml"], ws) == []


def test_every_problem_in_every_path(ws, tmp_path):
    configs = tmp_path / "merge_configs"
    configs.mkdir()
    (configs / "bad.yaml").write_text("merge_method: linear\nmodels:\n  - model: zoo/base\n    paramters: {}\n")
    (configs / "worse.yaml").write_text("merge_method: nope\nmodels:\n  - model: zoo/base\n")
    suite = tmp_path / "items" / "mine"
    (suite / "narrator").mkdir(parents=True)
    (suite / "narrator" / "a.txt").write_text("Question:\nq\n")
    (suite / "b.md").write_text("---\nskill: [x\n---\n" + PLAIN)
    found = validate_paths([configs, suite, tmp_path / "nothing-here"], ws)
    where = sorted((p.path.name, p.line) for p in found)
    assert ("bad.yaml", 4) in where and ("worse.yaml", 1) in where
    assert ("a.txt", 1) in where and ("b.md", 2) in where
    assert ("nothing-here", None) in where


def test_single_item_file_keeps_its_suite(ws):
    item = ws.items / "toy" / "add" / "add_000.txt"
    assert validate_paths([item], ws) == []
    assert validate_paths([ws.items / "toy" / "add"], ws) == []


def test_folder_with_nothing_to_validate(ws, tmp_path):
    (tmp_path / "notes.rst").write_text("hello")
    [problem] = validate_paths([tmp_path], ws)
    assert "no recipes" in problem.message
    [problem] = validate_paths([tmp_path / "notes.rst"], ws)
    assert "not a recipe" in problem.message
