"""Search spaces read strictly: every mistake at its file:line, mergekit's rules checked on the
space's corners by the plain recipe checker; grids written as plain recipes that validate.

Tiny random Llamas (tests/tiny_models.py) stand in for the zoo: nothing is merged here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mergeval.core.errors import InputError
from mergeval.inputs.validate import validate_paths
from mergeval.search.grid import write_grid
from mergeval.search.request import split_items
from mergeval.search.space import load_space, read_space, recipe_text

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
merge_method: {choose: [ties, task_arithmetic]}
base_model: zoo/base
models:
  - model: zoo/spec_add
    parameters:
      weight: {search: [0.5, 1.5], step: 0.5}
  - model: zoo/spec_rev
    parameters:
      weight: [1.0, {search: [0.0, 1.0], grid: 3}]
parameters:
  normalize: false
dtype: float32
"""


def write(ws, text: str, name: str = "space.yaml") -> Path:
    path = ws.root / "merge_configs" / "search" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def messages(ws, text: str) -> list[str]:
    space, problems = read_space(write(ws, text), ws)
    assert space is None
    return [str(p) for p in problems]


def test_a_space_lists_its_dimensions_and_makes_plain_recipes(tiny_ws):
    space = load_space(write(tiny_ws, GOOD), tiny_ws)
    assert [(d.name, d.kind, d.line) for d in space.dims] == [
        ("merge_method", "choice", 1), ("models.0.parameters.weight", "float", 6),
        ("models.1.parameters.weight.1", "float", 9)]
    assert not space.continuous
    values = {"merge_method": "ties", "models.0.parameters.weight": 1.0, "models.1.parameters.weight.1": 0.25}
    instance = space.instantiate(lambda d: values[d.name])
    assert instance["merge_method"] == "ties"
    assert instance["models"][1]["parameters"]["weight"] == [1.0, 0.25]  # a range inside a gradient
    recipe = write(tiny_ws, recipe_text(instance, header="a trial"), "plain.yaml")
    assert validate_paths([recipe], tiny_ws) == []


@pytest.mark.parametrize("line, text, expected", [
    (6, "{search: [1.5, 0.5]}", "an inverted range [1.5, 0.5]"),
    (6, "{search: [0.5, 0.5]}", "an empty range"),
    (6, "{search: [0.5, .inf]}", "must be finite"),
    (6, "{search: [0.5, 1.5], stepp: 0.1}", "unknown key 'stepp'"),
    (6, "{search: [0.5, 1.5], step: 0.3}", "does not divide"),
    (6, "{search: [0.5]}", "must be [low, high]"),
    (6, "{choose: [1.0]}", "two or more options"),
    (6, "{choose: [1.0, 1.0]}", "option 2 repeats option 1"),
])
def test_a_broken_range_is_refused_at_its_line(tiny_ws, line, text, expected):
    found = messages(tiny_ws, GOOD.replace("{search: [0.5, 1.5], step: 0.5}", text))
    assert any(m.startswith(f"{tiny_ws.root}/merge_configs/search/space.yaml:{line}: ") and expected in m
               for m in found), found


def test_mergekit_rules_are_checked_on_the_corners(tiny_ws):
    # slerp is one of the choices: it takes t, not weight, and exactly two models
    found = messages(tiny_ws, GOOD.replace("[ties, task_arithmetic]", "[ties, slerp]"))
    assert any(":6: unknown parameter 'weight' for slerp" in m and "merge_method = slerp" in m for m in found), found
    # a range over a bool parameter: pydantic would take 0.3 as True
    found = messages(tiny_ws, GOOD.replace("normalize: false", "normalize: {search: [0, 1]}"))
    assert any(":11: parameters.normalize: ties declares normalize a bool" in m for m in found), found
    # a layer_range bound past the last layer (the tiny models have 4)
    sliced = ("merge_method: passthrough\nslices:\n  - sources:\n      - model: zoo/spec_add\n"
              "        layer_range: [0, {search: [2, 6]}]\ndtype: float32\n")
    found = messages(tiny_ws, sliced)
    assert any(":5: layer_range [0, 6] is out of bounds" in m and "at its high end" in m for m in found), found
    found = messages(tiny_ws, sliced.replace("[2, 6]", "[2.0, 3.5]"))
    assert any(":5:" in m and "whole numbers" in m for m in found), found


def test_ranges_only_where_a_number_goes(tiny_ws):
    found = messages(tiny_ws, GOOD.replace("dtype: float32", "dtype: {search: [1, 2]}"))
    assert any(":12: dtype: a {search: [low, high]} range stands only for a numeric parameter" in m for m in found)
    found = messages(tiny_ws, GOOD.replace("{choose: [ties, task_arithmetic]}", "ties").replace(
        "{search: [0.5, 1.5], step: 0.5}", "1.0").replace("{search: [0.0, 1.0], grid: 3}", "1.0"))
    assert any("plain recipe" in m for m in found), found


def test_the_grid_is_written_as_plain_recipes_named_by_their_values(tiny_ws):
    path = write(tiny_ws, GOOD)
    written = write_grid(path, tiny_ws)
    assert len(written) == 2 * 3 * 3  # methods × weights 0.5, 1.0, 1.5 × 3 grid points
    assert tiny_ws.configs / "space_grid" / "space-ties-0.5-0.yaml" in written
    assert "models.1.parameters.weight.1 = 0.5" in (tiny_ws.configs / "space_grid" / "space-ties-1-0.5.yaml").read_text()
    assert validate_paths([tiny_ws.configs / "space_grid"], tiny_ws) == []
    assert write_grid(path, tiny_ws) == written  # again: the same files, refused by nothing
    (tiny_ws.configs / "space_grid" / "other.yaml").write_text("merge_method: ties\n")
    with pytest.raises(InputError, match="not this grid's"):
        write_grid(path, tiny_ws)
    with pytest.raises(InputError, match=r"needs step: or grid:"):
        write_grid(write(tiny_ws, GOOD.replace(", step: 0.5", ""), "nogrid.yaml"), tiny_ws)


def test_the_split_is_fixed_by_its_seed_and_stratified(tmp_path):
    from mergeval.inputs.items import load_items
    from mergeval.zoo import write_items

    write_items(tmp_path / "items")
    items = load_items(tmp_path / "items")
    search, held = split_items(items, 0.5, seed=0)
    assert len(search) == len(held) == 100
    assert {it.skill for it in held} == {"add", "rev"} and sum(it.skill == "add" for it in held) == 50
    assert split_items(items, 0.5, seed=0) == (search, held)
    assert split_items(items, 0.5, seed=1)[1] != held
    assert not {it.id for it in search} & {it.id for it in held}


def test_validate_checks_a_space_as_the_search_does(tiny_ws):
    """`mergeval validate` on a space file, a folder of them, or the whole workspace: the search's
    own checks (file:line, exit 2), spaces and plain recipes side by side in one folder."""
    from click.testing import CliRunner

    from mergeval.cli.main import main

    def validate(*paths: str):
        return CliRunner().invoke(main, ["--workspace", str(tiny_ws.root), "validate", *paths])

    for shipped in (REPO / "merge_configs" / "search").glob("*.yaml"):
        write(tiny_ws, shipped.read_text(), shipped.name)
    write(tiny_ws, "merge_method: ties\nbase_model: zoo/base\nmodels:\n  - model: zoo/spec_add\n"
                   "    parameters: {weight: 1.0, density: 0.8}\ndtype: float32\n", "plain.yaml")
    result = validate("merge_configs/search")
    assert result.exit_code == 0 and result.output.startswith("ok: "), result.output
    assert validate("merge_configs").exit_code == 0  # what `mergeval validate` reads: spaces in a sub-folder

    broken = write(tiny_ws, GOOD.replace("{search: [0.5, 1.5], step: 0.5}", "{search: [1.5, 0.5]}"), "broken.yaml")
    for target in ("merge_configs/search", "merge_configs/search/broken.yaml"):
        result = validate(target)
        assert result.exit_code == 2, result.output
        assert f"{broken}:6: models.0.parameters.weight: an inverted range [1.5, 0.5]" in result.output
        assert "1 problem(s); nothing was run." in result.output  # the good spaces and the recipe: clean
    broken.write_text(GOOD.replace("[ties, task_arithmetic]", "[ties, slerp]"))  # mergekit's rules, at a corner
    result = validate("merge_configs/search/broken.yaml")
    assert result.exit_code == 2 and f"{broken}:6: unknown parameter 'weight' for slerp" in result.output, result.output
