"""Recipes: the nine toy recipes pass; every kind of mistake is an error at its file:line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mergeval.core.errors import InputError
from mergeval.core.workspace import Workspace
from mergeval.inputs.recipes import load_recipe, load_recipes, read_recipe
from tests.tiny_models import make_tiny_model

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """A workspace whose zoo/ holds tiny llamas, plus a few odd ones to mismatch with."""
    root = tmp_path_factory.mktemp("ws")
    for seed, name in enumerate(["base", "spec_add", "spec_rev"]):
        make_tiny_model(root / "zoo" / name, seed=seed)
    make_tiny_model(root / "zoo" / "big_vocab", vocab_size=80)
    make_tiny_model(root / "zoo" / "qwen", "qwen3")
    (root / "zoo" / "empty").mkdir()
    shutil.copytree(REPO / "merge_configs" / "toy", root / "merge_configs" / "toy")
    return Workspace(root)


def problems(ws: Workspace, text: str, name: str = "r.yaml") -> list[tuple[int | None, str]]:
    path = ws.root / name
    path.write_text(text)
    recipe, found = read_recipe(path, ws)
    assert recipe is None, "expected problems"
    return [(p.line, p.message) for p in found]


TIES = """merge_method: ties
base_model: zoo/base
models:
  - model: zoo/spec_add
    parameters:
      weight: 1.0
  - model: {other}
    parameters:
      weight: 1.0
"""


def test_the_nine_toy_recipes_validate(ws):
    recipes = [r for r in load_recipes([ws.configs / "toy"], ws) if r.kind == "plain"]  # MoE, multi-stage: test_recipe_kinds.py
    by_name = {r.name: r for r in recipes}
    assert len(recipes) == 9
    assert sorted({r.method for r in recipes}) == [
        "dare_ties", "linear", "passthrough", "slerp", "task_arithmetic", "ties"
    ]
    zoo = (ws.root / "zoo").resolve()
    ties = by_name["ties_d08"]
    assert ties.sources == (zoo / "base", zoo / "spec_add", zoo / "spec_rev")
    assert ties.base_model == zoo / "base"
    assert ties.config["models"][0]["model"] == str(zoo / "spec_add")
    assert ties.config["parameters"] == {"normalize": False}
    dare = by_name["dare_ties_d07"]
    assert dare.random_seed == 0 and dare.stochastic and "random_seed" not in dare.config
    assert "random_seed: 0" in dare.text
    frank = by_name["passthrough_add04_rev24"]
    assert frank.base_model is None and frank.sources == (zoo / "spec_add", zoo / "spec_rev")
    assert not frank.stochastic


def test_a_validated_config_merges_with_mergekit(ws, tmp_path):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    recipe = load_recipe(ws.configs / "toy" / "passthrough_add04_rev24.yaml", ws)
    run_merge(MergeConfiguration.model_validate(recipe.config), str(tmp_path / "out"),
              options=MergeOptions(random_seed=recipe.random_seed))
    import json

    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 6


def test_misspelled_key_names_line_and_suggests(ws):
    text = "merge_method: ties\nbase_model: zoo/base\nmodels:\n  - model: zoo/spec_add\n    paramters:\n      weight: 1.0\n"
    found = problems(ws, text)
    assert any(line == 5 and "'paramters'" in m and "did you mean parameters?" in m for line, m in found)


def test_unknown_method_lists_known_ones(ws):
    [(line, msg)] = problems(ws, "merge_method: tiess\nmodels:\n  - model: zoo/base\n")
    assert line == 1 and "did you mean ties?" in msg and "task_arithmetic" in msg and "slerp" in msg


def test_missing_models_and_unreadable_folders(ws):
    text = TIES.format(other="zoo/nope") + "  - model: zoo/empty\n    parameters: {weight: 1}\n"
    text += "  - model: nobody-here/no-such-model-xyz\n    parameters: {weight: 1}\n"
    found = dict(problems(ws, text))
    assert "'zoo/nope' not found" in found[7]
    assert "has no config.json" in found[10]
    assert "not in the local Hugging Face cache" in found[12]


def test_mismatched_vocabularies_and_architectures(ws):
    [(line, msg)] = problems(ws, TIES.format(other="zoo/big_vocab"))
    assert line == 7 and "vocab_size 80" in msg and "64" in msg
    # with a tokenizer to align the vocabularies, mergekit can merge them
    aligned = TIES.format(other="zoo/big_vocab") + "tokenizer:\n  source: base\n"
    (ws.root / "ok.yaml").write_text(aligned)
    assert read_recipe(ws.root / "ok.yaml", ws)[1] == []
    found = problems(ws, TIES.format(other="zoo/qwen"))
    assert any(line == 7 and "architecture Qwen3ForCausalLM" in m for line, m in found)


def test_slice_past_the_last_layer(ws):
    text = """merge_method: passthrough
slices:
  - sources:
      - model: zoo/spec_add
        layer_range: [0, 4]
  - sources:
      - model: zoo/spec_rev
        layer_range: [2, 5]
"""
    [(line, msg)] = problems(ws, text)
    assert line == 8 and "[2, 5] is out of bounds" in msg and "4 layers" in msg


def test_duplicate_keys_and_yaml_errors(ws):
    found = problems(ws, "merge_method: linear\nmodels:\n  - model: zoo/base\n    parameters: {weight: 1}\nmerge_method: slerp\n")
    assert any(line == 5 and "duplicate key 'merge_method'" in m for line, m in found)
    [(line, msg)] = problems(ws, "merge_method: linear\nmodels:\n  - model: [zoo/base\n")
    assert line == 3 and "not valid YAML" in msg


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("merge_method: slerp\nbase_model: zoo/base\nmodels:\n  - model: zoo/base\n  - model: zoo/spec_add\n"
         "  - model: zoo/spec_rev\nparameters: {t: 0.5}\n", 3, "exactly 2"),
        ("merge_method: ties\nmodels:\n  - model: zoo/spec_add\n    parameters: {weight: 1}\n", 2, "base"),
        ("merge_method: passthrough\nmodels:\n  - model: zoo/base\n  - model: zoo/spec_add\n", 2, "use slices"),
        ("merge_method: slerp\nbase_model: zoo/base\nmodels:\n  - model: zoo/base\n  - model: zoo/spec_add\n", 3, "needs parameter t"),
        ("merge_method: ties\nbase_model: zoo/base\nmodels:\n  - model: zoo/spec_add\n", 4, "needs parameter weight"),
        (TIES.format(other="zoo/spec_rev") + "      normalize: false\n", 10, "applies to the whole merge"),
        ("merge_method: slerp\nbase_model: zoo/base\nmodels:\n  - model: zoo/base\n  - model: zoo/spec_add\nparameters: {t: abc}\n", 6, "t must be a float"),
        ("merge_method: linear\nmodels:\n  - model: zoo/base\n    parameters: {wieght: 1}\n", 4, "did you mean weight?"),
        (TIES.format(other="zoo/spec_rev") + "random_seed: -3\n", 10, "random_seed"),
        ("merge_method: linear\nparameters: {weight: 1}\n", 1, "exactly one of models:, slices: or modules:"),
    ],
)
def test_method_contracts_and_parameters(ws, text, line, words):
    found = problems(ws, text)
    assert any(got == line and words in m for got, m in found), found


def test_load_recipes_reports_all_files_at_once(ws, tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "a.yaml").write_text("merge_method: nope\nmodels:\n  - model: zoo/base\n")
    (folder / "b.yml").write_text("merge_method: linear\nmodels:\n  - model: zoo/missing\n    parameters: {weight: 1}\n")
    with pytest.raises(InputError) as e:
        load_recipes([folder], ws)
    assert [(p.path.name, p.line) for p in e.value.problems] == [("a.yaml", 1), ("b.yml", 3)]
