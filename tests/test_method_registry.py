"""Every merge method of the pinned mergekit validates, with what its own registry declares: its
parameters (required ones, their scope), its input count and whether it needs a base model.
Nothing here lists the methods by hand: a method mergekit adds is tested with it. Also the
tokenizer options: a chat_template mergekit would fail on after the merge is refused first."""

from __future__ import annotations

import pytest
from mergekit.merge_methods import registry

from mergeval.core.workspace import Workspace
from mergeval.inputs.recipes import read_recipe
from mergeval.inputs.tokenizer_options import known_templates, tokenizer_effect
from tests.tiny_models import make_tiny_model

MODELS = ("m1", "m2", "m3", "m4")
METHODS = sorted(m.spec.name for m in registry.registered_methods())


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("ws")
    for seed, name in enumerate(("base",) + MODELS):
        make_tiny_model(root / "zoo" / name, seed=seed)
    return Workspace(root)


def _value(p):
    t = getattr(p.value_type, "__name__", "")
    return True if t == "bool" else 2 if t == "int" else 0.5


def minimal_recipe(name: str, drop: str | None = None, extra: int = 0) -> str:
    """The smallest recipe mergekit's contract for `name` accepts, every required parameter set;
    `drop`: leave that parameter out; `extra`: that many inputs more than the fewest it takes."""
    spec = registry.get(name).spec
    c = spec.contract
    bases = {"required": [True], "optional": [False, True]}.get(c.base.value, [False])
    for base in bases:
        for n in range(1, len(MODELS) + 1):
            ids = [f"zoo/{m}" for m in MODELS[:n]] + (["zoo/base"] if base else [])
            try:
                c.validate_ids(ids, "zoo/base" if base else None)
            except ValueError:
                continue
            break
        else:
            continue
        break
    n = min(n + extra, len(MODELS))
    per_model = {p.name: _value(p) for p in spec.parameters if p.required and p.scope.value != "shared" and p.name != drop}
    shared = {p.name: _value(p) for p in spec.parameters if p.required and p.scope.value == "shared" and p.name != drop}
    lines = [f"merge_method: {name}", "dtype: float32"] + (["base_model: zoo/base"] if base else []) + ["models:"]
    for m in MODELS[:n]:
        lines.append(f"  - model: zoo/{m}" + (f"\n    parameters: {per_model}" if per_model else ""))
    if base and per_model and any(p.scope.value == "input" and p.required for p in spec.parameters):
        lines.append(f"  - model: zoo/base\n    parameters: {per_model}")  # mergekit adds the base as an input
    if shared:
        lines.append(f"parameters: {shared}")
    return "\n".join(lines) + "\n"


def check(ws: Workspace, text: str):
    path = ws.root / "r.yaml"
    path.write_text(text)
    return read_recipe(path, ws)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_validates_from_its_declaration(ws, name):
    recipe, problems = check(ws, minimal_recipe(name))
    assert not problems, (minimal_recipe(name), problems)
    assert recipe.method == name


@pytest.mark.parametrize("name", [m for m in METHODS if any(p.required for p in registry.get(m).spec.parameters)])
def test_a_required_parameter_left_out_is_refused(ws, name):
    missing = next(p.name for p in registry.get(name).spec.parameters if p.required)
    recipe, problems = check(ws, minimal_recipe(name, drop=missing))
    assert recipe is None and any(f"needs parameter {missing}" in p.message for p in problems), problems


@pytest.mark.parametrize("name", [m for m in METHODS if registry.get(m).spec.contract.max_inputs is not None])
def test_one_input_too_many_is_refused(ws, name):
    recipe, problems = check(ws, minimal_recipe(name, extra=2))
    assert recipe is None and any(f"{name} takes" in p.message for p in problems), problems


def test_chat_templates_and_what_the_card_says(ws):
    base = minimal_recipe("task_arithmetic") + "tokenizer_source: base\n"
    assert "chatml" in known_templates()
    recipe, problems = check(ws, base + "chat_template: chatml\n")
    assert not problems and tokenizer_effect(recipe) == [
        "Tokenizer: the base model's vocabulary (`base`); every input's embeddings are mapped onto it.",
        "Chat template: mergekit's `chatml`."]
    recipe, problems = check(ws, base.replace("tokenizer_source: base", "tokenizer_source: zoo/m2")
                             + "chat_template: auto\n")
    assert not problems and tokenizer_effect(recipe)[0].startswith("Tokenizer: that of `m2`")
    assert tokenizer_effect(recipe)[1] == "Chat template: `auto`, the one most of the inputs share."
    _, problems = check(ws, base + "chat_template: chatmll\n")
    [p] = problems
    assert p.line == 8 and "unknown chat_template 'chatmll' (did you mean chatml?)" in p.message
    _, problems = check(ws, base + "chat_template: '{% for m in messages %}{{ m.content }'\n")
    assert problems and "not a valid Jinja template" in problems[0].message
