"""Property tests of the item and recipe parsers (issue #7): for any input, a valid object or
problems that each name the file and a line of it — never another exception.

Derandomized (the same examples on every run, so CI is reproducible) and kept small: the
whole module runs in well under a minute on two cores.
"""

from __future__ import annotations

import dataclasses
import json
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mergeval.core.errors import InputError
from mergeval.core.workspace import Workspace
from mergeval.inputs.items import parse_item, read_item
from mergeval.inputs.recipes import read_recipe
from mergeval.inputs.strict_yaml import load_yaml
from tests.hostile_world import make_world

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module", autouse=True)
def _checks_in_this_process():
    """A recipe's mergekit checks run here, not in a child the merge server forks for each
    example: the parser is what is under test, and 300 forked calls cost over a minute
    (merge_server.call has tests of its own, and every sweep uses it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MERGEVAL_MERGE_FORK", "0")
    yield
    patch.undo()


def _lines_in(raw: bytes) -> int:
    return raw.count(b"\n") + raw.count(b"\r") + 1  # an upper bound whatever the line ends


def _check_problems(problems, path: Path, raw: bytes) -> None:
    assert problems, "no object and no problem"
    for p in problems:
        assert p.path == path, p
        assert isinstance(p.line, int) and 1 <= p.line <= _lines_in(raw), (p, raw[:200])
        assert p.message.strip()


# --- items -----------------------------------------------------------------------------------

HEADERS = ["Question:", "Criterion:", "Reference:", "System:", "## Question", "## criterion", "Score 1: no",
           "Score 5: yes", "---", "..."]
FRONT = ["skill: x", "skill: ../x", "skill: score", "weight: 2", "weight: -1", "weight: .inf",
         "weight: " + "9" * 400, "checks:", "  - equals: \"17\"", "  - regex: \"(\"", "  - max_words: 0",
         "scores: {1: a, 5: b}", "turns:", "  - user: hi", "  - assistant: ho", "system: s", "reference: r",
         "canary: c", "a: &a [*a]", "id: ../../x", "\tskill: x", "skill: [x", "skill: \"x"]
item_text = st.lists(st.one_of(st.sampled_from(HEADERS + FRONT), st.text(max_size=40)), max_size=14).map("\n".join)


def _item_outcome(path: Path, suite: Path, raw: bytes) -> None:
    path.write_bytes(raw)
    item, problems = read_item(path, suite)
    if item is None:
        _check_problems(problems, path, raw)
    else:
        assert problems == [] and item.question
        assert item.criterion or item.checks
    try:  # the raising form agrees
        assert parse_item(path, suite) == item
    except InputError as e:
        assert item is None and e.problems == problems


@SLOW
@given(raw=st.binary(max_size=400))
def test_item_from_any_bytes(world, raw):
    suite = world / "items" / "mine"
    _item_outcome(suite / "fuzz.txt", suite, raw)


@FAST
@given(text=item_text, bom=st.booleans(), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_item_from_item_like_text(world, text, bom, newline):
    suite = world / "items" / "mine"
    raw = (b"\xef\xbb\xbf" if bom else b"") + text.replace("\n", newline).encode("utf-8", "surrogatepass")
    _item_outcome(suite / "fuzz.txt", suite, raw)


safe_line = st.text(string.ascii_letters + string.digits + " ,.?!'-", min_size=1, max_size=30).filter(
    lambda s: s.strip() and not s.strip().lower().startswith("score"))


@FAST
@given(skill=st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(lambda s: s.strip("_")),
       weight=st.integers(1, 9), question=st.lists(safe_line, min_size=1, max_size=3),
       criterion=st.lists(safe_line, min_size=1, max_size=3), equals=safe_line,
       newline=st.sampled_from(["\r\n", "\r"]), bom=st.booleans())
def test_a_valid_item_parses_the_same_with_any_line_ends_and_a_bom(world, skill, weight, question,
                                                                  criterion, equals, newline, bom):
    from mergeval.inputs.items import RESERVED_SKILLS

    if skill in RESERVED_SKILLS:
        skill += "_x"
    text = (f"---\nskill: {json.dumps(skill)}\nweight: {weight}\nchecks:\n  - equals: {equals!r}\n---\n"
            "Question:\n" + "\n".join(question) + "\n\nCriterion:\n" + "\n".join(criterion) + "\n")
    suite = world / "items" / "mine"
    lf, other = suite / "lf.txt", suite / "other.txt"
    lf.write_text(text, encoding="utf-8", newline="\n")
    other.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.replace("\n", newline).encode())
    a, b = parse_item(lf, suite), parse_item(other, suite)
    assert (a.skill, a.weight, a.checks[0].arg) == (skill, weight, equals)
    drop = ("id", "path", "hash")
    assert {k: v for k, v in dataclasses.asdict(a).items() if k not in drop} == \
           {k: v for k, v in dataclasses.asdict(b).items() if k not in drop}


# --- recipes ---------------------------------------------------------------------------------

KEYS = ["merge_method", "base_model", "models", "model", "parameters", "weight", "density", "slices",
        "sources", "layer_range", "dtype", "tokenizer_source", "tokenizer", "random_seed", "normalize",
        "t", "modules", "lora", "source", "tokens", "paramters", "name", "out_path"]
WORDS = ["linear", "ties", "slerp", "passthrough", "task_arithmetic", "dare_ties", "nope", "zoo/base",
         "zoo/spec_add", "zoo/spec_rev", "../../etc", "/etc/hostname", "zoo/\0x", "a" * 300, "org/model",
         "base", "union", "float32", "", "x@y", "a+b"]
leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True, allow_infinity=True),
                 st.sampled_from(WORDS), st.text(max_size=8))
tree = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                    max_leaves=25)
recipe_like = st.fixed_dictionaries(
    {"merge_method": st.sampled_from(WORDS[:7])},
    optional={"models": st.lists(st.fixed_dictionaries({"model": st.sampled_from(WORDS[7:])},
                                                       optional={"parameters": tree}), max_size=3),
              "base_model": st.sampled_from(WORDS[7:]), "slices": tree, "parameters": tree, "dtype": leaf,
              "random_seed": leaf, "tokenizer": tree, "modules": tree, "name": leaf})


def _recipe_outcome(world: Path, raw: bytes) -> None:
    path = world / "merge_configs" / "mine" / "fuzz.yaml"
    path.write_bytes(raw)
    recipe, problems = read_recipe(path, Workspace(world))
    if recipe is None:
        _check_problems(problems, path, raw)
    else:
        assert problems == [] and recipe.sources and recipe.method == recipe.config["merge_method"]


@SLOW
@given(raw=st.binary(max_size=300))
def test_recipe_from_any_bytes(world, raw):
    _recipe_outcome(world, raw)


@SLOW
@given(text=st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#\t\n ab01.")), max_size=80))
def test_recipe_from_yaml_punctuation(world, text):
    _recipe_outcome(world, text.encode())


@SLOW
@given(data=st.one_of(recipe_like, tree))
def test_recipe_from_recipe_shaped_yaml(world, data):
    _recipe_outcome(world, yaml.safe_dump(data, allow_unicode=True).encode())


@FAST
@given(weights=st.lists(st.floats(0.05, 2, allow_nan=False), min_size=2, max_size=2),
       newline=st.sampled_from(["\r\n", "\r"]), bom=st.booleans())
def test_a_valid_recipe_parses_the_same_with_any_line_ends_and_a_bom(world, weights, newline, bom):
    text = ("merge_method: linear\nmodels:\n"
            + "".join(f"  - model: zoo/{m}\n    parameters:\n      weight: {w!r}\n"
                      for m, w in zip(("spec_add", "spec_rev"), weights)) + "dtype: float32\n")
    folder = world / "merge_configs" / "mine"
    (folder / "lf.yaml").write_text(text, newline="\n")
    (folder / "other.yaml").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.replace("\n", newline).encode())
    a, pa = read_recipe(folder / "lf.yaml", Workspace(world))
    b, pb = read_recipe(folder / "other.yaml", Workspace(world))
    assert pa == [] and pb == [], (pa, pb)
    assert (a.config, a.text, a.sources) == (b.config, b.text, b.sources)
    assert [m["parameters"]["weight"] for m in a.config["models"]] == weights


@FAST
@given(keys=st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=6), min_size=1, max_size=8, unique=True),
       dup=st.data())
def test_a_duplicate_key_is_reported_on_its_own_line(keys, dup):
    """The `file:line` of a duplicate is the line the second one is written on."""
    first = dup.draw(st.integers(0, len(keys) - 1))
    at = dup.draw(st.integers(first + 1, len(keys)))
    lines = [f"{k}: {i}" for i, k in enumerate(keys)]
    lines.insert(at, f"{keys[first]}: again")
    doc = load_yaml("\n".join(lines) + "\n", Path("d.yaml"))
    [problem] = doc.problems
    assert problem.line == at + 1 and f"first set on line {first + 1}" in problem.message
