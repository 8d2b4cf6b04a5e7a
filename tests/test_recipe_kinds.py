"""MoE (mergekit-moe) and multi-stage (mergekit-multi) recipes: told apart by content, read in
mergekit's own formats, and every mistake refused at its file:line before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from mergeval.core.workspace import Workspace
from mergeval.inputs.recipes import STAGE_REF, load_recipes, read_recipe, read_recipes
from tests.tiny_models import make_tiny_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("ws")
    for seed, name in enumerate(["base", "spec_add", "spec_rev"]):
        make_tiny_model(root / "zoo" / name, seed=seed)
    make_tiny_model(root / "zoo" / "big_vocab", vocab_size=80)
    make_tiny_model(root / "zoo" / "deep", num_layers=6)
    make_tiny_model(root / "zoo" / "qwen", "qwen3")
    (root / "merge_configs").mkdir()
    return Workspace(root)


def problems(ws: Workspace, text: str, name: str = "r.yaml") -> list[tuple[int | None, str]]:
    path = ws.root / name
    path.write_text(text)
    recipe, found = read_recipe(path, ws)
    assert recipe is None, "expected problems"
    return [(p.line, p.message) for p in found]


def recipe_of(ws: Workspace, text: str, name: str = "ok.yaml"):
    path = ws.root / name
    path.write_text(text)
    recipe, found = read_recipe(path, ws)
    assert not found, found
    return recipe


MOE = """\
base_model: zoo/base
gate_mode: hidden
experts_per_token: 1
dtype: float32
experts:
  - source_model: zoo/spec_add
    positive_prompts: ["what is 3 plus 4 ?"]
  - source_model: zoo/spec_rev
    positive_prompts: ["reverse a b c ?"]
"""

TWO_STAGES = """\
name: both
merge_method: ties
base_model: zoo/base
models:
  - model: zoo/spec_add
    parameters: {weight: 1.0, density: 0.8}
  - model: zoo/spec_rev
    parameters: {weight: 1.0, density: 0.8}
dtype: float32
---
merge_method: slerp
base_model: both
models:
  - model: both
  - model: zoo/spec_add
parameters: {t: 0.3}
dtype: float32
"""


def test_kinds_are_told_apart_by_content(ws):
    zoo = (ws.root / "zoo").resolve()
    moe = recipe_of(ws, MOE)
    assert (moe.kind, moe.method, moe.stages) == ("moe", "moe", ())
    assert moe.sources == (zoo / "base", zoo / "spec_add", zoo / "spec_rev") and moe.base_model == zoo / "base"
    assert moe.config["experts"][1]["source_model"] == str(zoo / "spec_rev")

    multi = recipe_of(ws, TWO_STAGES)
    assert (multi.kind, multi.method) == ("multi-stage", "ties → slerp")
    first, final = multi.stages
    assert (first.name, first.uses, final.name, final.uses) == ("both", (), None, ("both",))
    assert final.config["base_model"] == STAGE_REF + "both" and final.sources == (zoo / "spec_add",)
    assert multi.sources == (zoo / "base", zoo / "spec_add", zoo / "spec_rev")  # the leaf models: its parents
    assert multi.text == TWO_STAGES  # the whole file, as the report shows it


def test_the_shipped_toy_moe_and_two_stage_recipes_validate(ws, tmp_path):
    recipes = load_recipes([REPO / "merge_configs" / "toy"], ws)
    kinds = {r.name: r.kind for r in recipes}
    assert sorted(kinds.values()).count("plain") == 9
    assert "moe" in kinds.values() and "multi-stage" in kinds.values()


@pytest.mark.parametrize("edit, line, words", [
    (("gate_mode: hidden", "gate_mode: hiden"), 2, "unknown gate_mode 'hiden' (did you mean hidden?)"),
    (("experts_per_token: 1", "experts_per_token: 3"), 3, "must be from 1 to the number of experts, 2"),
    (("experts_per_token: 1", "experts_per_token: 0"), 3, "must be from 1 to the number of experts"),
    (("dtype: float32", "dtype: float32\nrouter_aux: 1"), 5, "unknown key 'router_aux' in a MoE recipe"),
    (("  - source_model: zoo/spec_rev", "  - source_model: zoo/spec_rev\n    positive_promts: [x]"), 9,
     "unknown key 'positive_promts' in an experts entry (did you mean positive_prompts?)"),
    (("zoo/spec_rev", "zoo/big_vocab"), 8, "expert zoo/big_vocab has vocab_size 80 but the base_model zoo/base has 64"),
    (("zoo/spec_rev", "zoo/qwen"), 8, "has architecture Qwen3ForCausalLM but the base_model zoo/base has LlamaForCausalLM"),
    (("zoo/spec_rev", "zoo/deep"), 8, "has layer count 6 but the base_model zoo/base has 4"),
    (("zoo/spec_rev", "zoo/nowhere"), 8, "source model 'zoo/nowhere' not found"),
    (('    positive_prompts: ["reverse a b c ?"]\n', ""), 8, "this expert needs positive_prompts"),
    (("experts_per_token: 1", "experts_per_token: 1\nmerge_method: ties"), 4, "not both"),
    (("reverse a b c ?", "what is 3 plus 4 ?"), 5, "mergekit-moe refuses this recipe: Your positive and negative "
                                                   "prompts are identical for all experts"),
])
def test_a_broken_moe_recipe_is_refused_at_its_line(ws, edit, line, words):
    found = problems(ws, MOE.replace(*edit))
    assert any(ln == line and words in msg for ln, msg in found), found


def test_a_moe_no_output_architecture_takes_is_refused(ws):
    """Two gated shared experts: Mixtral takes none, DeepSeek one ungated, Qwen exactly one, Qwen3 only Qwen3."""
    shared = "\n".join(f"  - source_model: zoo/{m}\n    positive_prompts: [x]" for m in ("base", "spec_add"))
    text = MOE.replace("experts_per_token: 1", "experts_per_token: 1\nshared_experts:\n" + shared)
    [(line, msg)] = problems(ws, text)
    assert line == 1 and "no MoE output architecture of mergekit takes these models" in msg
    assert "Mixtral does not support shared experts" in msg and "exactly one shared expert" in msg


@pytest.mark.parametrize("edit, line, words", [
    (("base_model: both", "base_model: bothh"), 12, "nor is it a stage of this file (did you mean both?)"),
    (("merge_method: slerp", "name: both\nmerge_method: slerp"), 11, "duplicate stage name 'both' (first used on line 1)"),
    (("merge_method: slerp", "name: final\nmerge_method: slerp\nsilly: 1"), 13, "unknown key 'silly'"),
    (("base_model: zoo/base", "base_model: later"), 1, "part of a cycle"),
    (("name: both", "name: 'a/b'"), 1, "a stage name is a plain label"),
    (("dtype: float32\n---", "dtype: float32\n---\nname: spare\nmerge_method: linear\nmodels: [{model: zoo/base, "
      "parameters: {weight: 1}}]\n---"), 11, "stage 'spare' is not used by the final merge"),
    (("---\n", "---\nexperts: []\n"), 11, "mergekit-multi builds no MoE stages"),
])
def test_a_broken_multi_stage_recipe_is_refused_at_its_line(ws, edit, line, words):
    text = TWO_STAGES.replace(*edit)
    if "later" in text:  # a cycle: the first stage names the final one, which names it back
        text = text.replace("merge_method: slerp", "name: later\nmerge_method: slerp")
    found = problems(ws, text)
    assert any(ln == line and words in msg for ln, msg in found), found


def test_two_unnamed_documents_and_a_self_cycle(ws):
    found = problems(ws, TWO_STAGES.replace("name: both\n", ""))
    assert any(ln == 10 and "a second document without name:" in m for ln, m in found), found
    found = problems(ws, "name: me\nmerge_method: linear\nmodels:\n  - {model: me, parameters: {weight: 1}}\n"
                         "  - {model: zoo/base, parameters: {weight: 1}}\n---\nmerge_method: linear\n"
                         "models: [{model: me, parameters: {weight: 1}}]\n")
    assert found[0][0] == 1 and "me (line 1) → me (line 1)" in found[0][1], found


def test_stage_checks_see_the_earlier_stage_s_shape(ws):
    """A franken-merge stage of 6 layers: the next stage's layer_range is checked against 6, and its
    other input (4 layers) does not fit it."""
    text = """\
name: tall
merge_method: passthrough
slices:
  - sources: [{model: zoo/spec_add, layer_range: [0, 4]}]
  - sources: [{model: zoo/spec_rev, layer_range: [2, 4]}]
dtype: float32
---
merge_method: passthrough
slices:
  - sources: [{model: tall, layer_range: [0, 7]}]
"""
    [(line, msg)] = problems(ws, text)
    assert line == 10 and "layer_range [0, 7] is out of bounds for tall, which has 6 layers" in msg


def test_broken_moe_and_multi_stage_recipes_stop_build_and_sweep_before_anything_is_built(ws):
    from click.testing import CliRunner

    from mergeval.cli.main import main

    folder = ws.configs / "broken"
    folder.mkdir()
    (folder / "fine.yaml").write_text(TWO_STAGES)
    (folder / "moe.yaml").write_text(MOE.replace("experts_per_token: 1", "experts_per_token: 5"))
    (folder / "multi.yaml").write_text(TWO_STAGES.replace("base_model: both", "base_model: bothh"))
    for args in (["build", str(folder)], ["sweep", str(folder), "--items", str(folder), "--keep", "all"]):
        result = CliRunner().invoke(main, ["--workspace", str(ws.root), *args])
        assert result.exit_code == 2, result.output
        assert f"{folder / 'moe.yaml'}:3: experts_per_token 5 must be from 1" in result.output
        assert f"{folder / 'multi.yaml'}:12: source model 'bothh' not found" in result.output
        assert not (ws.state / "models").exists() and not (ws.state / "stages").exists()


def test_a_stage_named_like_a_method_is_no_reference_to_it(ws):
    text = TWO_STAGES.replace("both", "slerp")  # stage `slerp`; the final merge's merge_method: slerp
    recipe = recipe_of(ws, text)
    assert recipe.stages[-1].uses == ("slerp",) and recipe.stages[-1].config["merge_method"] == "slerp"


NAMES_TIES = """\
merge_method: slerp
base_model: ties
models:
  - model: ties
  - model: zoo/spec_add
parameters: {t: 0.3}
dtype: float32
"""
TIES = TWO_STAGES.split("---")[0].replace("name: both\n", "")


def test_a_recipe_names_another_recipe_of_the_sweep_by_its_stem(ws):
    folder = ws.configs / "siblings"
    folder.mkdir()
    (folder / "ties.yaml").write_text(TIES)
    (folder / "on_ties.yaml").write_text(NAMES_TIES)
    (folder / "on_two.yaml").write_text(NAMES_TIES.replace("ties", "two"))
    (folder / "two.yaml").write_text(TWO_STAGES)
    by_name = {r.name: r for r in load_recipes([folder], ws)}
    on = by_name["on_ties"]
    assert (on.kind, on.method, on.text) == ("multi-stage", "ties → slerp", NAMES_TIES)
    assert [(s.name, s.uses) for s in on.stages] == [("ties", ()), (None, ("ties",))]
    assert on.stages[0].config == by_name["ties"].config  # the same merge: the same stage key
    assert on.sources == by_name["ties"].sources  # its parents: what the stages start from
    deep = by_name["on_two"]  # a multi-stage recipe named: all its stages come first
    assert [(s.name, s.uses) for s in deep.stages] == [("both", ()), ("two", ("both",)), (None, ("two",))]
    # one file alone still finds the recipes of its folder
    [alone] = load_recipes([folder / "on_ties.yaml"], ws)
    assert alone.stages == on.stages


def test_recipes_that_name_each_other_or_a_moe_are_refused(ws):
    folder = ws.configs / "loop"
    folder.mkdir()
    (folder / "a.yaml").write_text(NAMES_TIES.replace("ties", "b"))
    (folder / "b.yaml").write_text(NAMES_TIES.replace("ties", "a"))
    (folder / "moe.yaml").write_text(MOE)
    (folder / "on_moe.yaml").write_text(NAMES_TIES.replace("ties", "moe"))
    _, found = read_recipes([folder], ws)
    said = [(p.path.name, p.line, p.message) for p in found]
    # each found where the loop closes: b.yaml:2 names a, which named b
    assert ("b.yaml", 2) in {(f, ln) for f, ln, m in said if "recipes a → b → a name each other" in m}, said
    assert ("a.yaml", 2) in {(f, ln) for f, ln, m in said if "recipes b → a → b name each other" in m}, said
    assert any(f == "on_moe.yaml" and ln == 2 and "recipe 'moe' is a MoE" in m for f, ln, m in said), said


def test_which_recipes_draw_random_numbers(ws):
    assert not recipe_of(ws, MOE).stochastic and recipe_of(ws, MOE.replace("hidden", "random")).stochastic
    assert not recipe_of(ws, TWO_STAGES).stochastic
    assert recipe_of(ws, TWO_STAGES.replace("merge_method: ties", "merge_method: dare_ties")).stochastic
