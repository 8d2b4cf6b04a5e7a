"""Building MoE and multi-stage recipes: real mergekit-moe and mergekit merges of tiny models.

A multi-stage recipe is one build per stage, each keyed by its own content: a first stage two
recipes share is built once, and an edit of the final stage rebuilds only the final stage.
"""

from __future__ import annotations

import json

from transformers import AutoConfig, AutoModelForCausalLM

from mergeval.core import store
from mergeval.engine import stage_builds
from mergeval.engine.build import build, build_key
from mergeval.inputs.recipes import load_recipe
from tests.test_recipe_kinds import MOE, TWO_STAGES


def write(ws, name: str, text: str):
    path = ws.configs / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return load_recipe(path, ws)


def test_a_moe_recipe_builds_a_mixtral_with_one_expert_per_specialist(tiny_ws):
    recipe = write(tiny_ws, "moe", MOE.replace("gate_mode: hidden", "gate_mode: cheap_embed"))
    built = build(recipe, tiny_ws)
    assert not built.cached and store.is_complete(built.path)
    config = AutoConfig.from_pretrained(built.path)
    assert config.architectures == ["MixtralForCausalLM"]
    assert (config.num_local_experts, config.num_experts_per_tok) == (2, 1)
    AutoModelForCausalLM.from_pretrained(built.path)  # answerable: transformers loads it
    assert build(recipe, tiny_ws).cached
    # the gate mode is part of what was built: another mode, another merge
    other = write(tiny_ws, "moe", MOE.replace("gate_mode: hidden", "gate_mode: random"))
    assert build_key(other) != built.key


def test_a_shared_first_stage_is_built_once_and_an_edited_final_stage_alone_rebuilds(tiny_ws):
    one = write(tiny_ws, "two", TWO_STAGES)
    # another recipe: the same first stage under another name, another final merge
    other = write(tiny_ws, "other", TWO_STAGES.replace("both", "first").replace("t: 0.3", "t: 0.6"))
    first = build(one, tiny_ws)
    assert (first.cached, first.stages) == (False, (("both", False),))
    second = build(other, tiny_ws)
    assert (second.cached, second.stages) == (False, (("first", True),))  # found built: not merged again
    [stage] = [p for p in (tiny_ws.state / "stages").iterdir() if p.is_dir()]
    marker = json.loads((stage / store.MARKER).read_text())
    assert marker["stage"] == "both" and marker["recipe"] == "two"
    # the final merge is made from the stage's output folder
    final_config = json.loads((first.path / "config.json").read_text())
    assert final_config["num_hidden_layers"] == 4
    assert stage_builds.stage_dir(tiny_ws, stage_builds.stage_keys(one, _fps(one))[0]) == stage

    edited = write(tiny_ws, "two", TWO_STAGES.replace("t: 0.3", "t: 0.4"))
    rebuilt = build(edited, tiny_ws)
    assert rebuilt.key != first.key and not rebuilt.cached
    assert rebuilt.stages == (("both", True),)  # only the final stage was merged again
    assert build(edited, tiny_ws).cached


def _fps(recipe):
    from mergeval.inputs import model_dirs

    return {str(p): model_dirs.fingerprint(p) for p in recipe.sources}
