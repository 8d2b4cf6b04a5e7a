"""The build stage: real merges of tiny models, each in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from mergeval.core import store
from mergeval.engine.build import BuildError, build, build_key, output_dir
from mergeval.inputs.recipes import load_recipe
from tests.tiny_models import make_tiny_model


def write_recipe(ws, name: str, text: str) -> Path:
    path = ws.configs / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


TIES = """\
merge_method: ties
base_model: zoo/base
models:
  - model: zoo/spec_add
    parameters: {weight: 1.0, density: 0.8}
  - model: zoo/spec_rev
    parameters: {weight: 1.0, density: 0.8}
parameters: {normalize: false}
dtype: float32
"""


def test_build_is_loadable_cached_and_keyed_by_content(tiny_ws):
    recipe = load_recipe(write_recipe(tiny_ws, "ties", TIES), tiny_ws)
    first = build(recipe, tiny_ws)
    assert not first.cached and store.is_complete(first.path)
    model = AutoModelForCausalLM.from_pretrained(first.path)
    assert model.config.num_hidden_layers == 4
    assert (first.path / "mergeval_recipe.yaml").read_text() == TIES

    again = build(load_recipe(recipe.path, tiny_ws), tiny_ws)
    assert again.cached and again.path == first.path

    # the key follows content: retraining a source changes it; renaming the file does not
    make_tiny_model(tiny_ws.root / "zoo" / "spec_add", "llama", seed=7)
    assert build_key(load_recipe(recipe.path, tiny_ws)) != first.key


def test_stochastic_merge_rebuilds_bit_identical(tiny_ws):
    text = TIES.replace("merge_method: ties", "merge_method: dare_ties")
    recipe = load_recipe(write_recipe(tiny_ws, "dare", text), tiny_ws)
    first = build(recipe, tiny_ws)
    weights = (first.path / "model.safetensors").read_bytes()
    store.remove_tree(first.path)
    second = build(recipe, tiny_ws)
    assert not second.cached
    assert (second.path / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma2", "gemma3", "mistral"])
def test_frankenmerge_fixes_layer_types(tmp_path, arch):
    from mergeval.core.workspace import Workspace

    ws = Workspace(tmp_path)
    make_tiny_model(tmp_path / "zoo" / "a", arch, seed=1)
    make_tiny_model(tmp_path / "zoo" / "b", arch, seed=2)
    (tmp_path / "merge_configs").mkdir()
    text = """\
merge_method: passthrough
dtype: float32
slices:
  - sources: [{model: zoo/a, layer_range: [0, 4]}]
  - sources: [{model: zoo/b, layer_range: [2, 4]}]
"""
    built = build(load_recipe(write_recipe(ws, "frank", text), ws), ws)
    config = AutoConfig.from_pretrained(built.path)
    assert config.num_hidden_layers == 6
    source_types = getattr(AutoConfig.from_pretrained(tmp_path / "zoo" / "a"), "layer_types", None)
    if source_types is not None:
        assert config.layer_types == list(source_types[0:4]) + list(source_types[2:4])
    AutoModelForCausalLM.from_pretrained(built.path)


def test_failing_merge_names_recipe_and_leaves_nothing(tiny_ws, monkeypatch):
    recipe = load_recipe(write_recipe(tiny_ws, "ties", TIES), tiny_ws)
    # a source's weights go missing after validation: mergekit itself fails
    for f in (tiny_ws.root / "zoo" / "spec_rev").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(BuildError) as err:
        build(recipe, tiny_ws)
    assert "ties.yaml" in str(err.value)
    models_dir = tiny_ws.state / "models"
    assert not any(store.is_complete(p) for p in models_dir.iterdir())
    assert not any(p.name.startswith(".tmp-") for p in models_dir.iterdir())


def wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sigkill_mid_merge_leaves_nothing_built(tiny_ws):
    recipe = load_recipe(write_recipe(tiny_ws, "ties", TIES), tiny_ws)
    target = output_dir(tiny_ws, recipe, build_key(recipe))
    code = "import sys; from mergeval.cli.main import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--workspace", str(tiny_ws.root), "build", str(recipe.path)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # The build makes its temp folder just before it hands the merge to the merge server and
    # renames it only once the merge is back: killing as soon as it is seen lands mid-merge on a
    # fast or a slow machine (a warm server merges this model in well under a second, so a
    # delay after the event would let it finish first).
    wait_for(lambda: target.parent.exists() and any(target.parent.glob(".tmp-*")))
    os.killpg(proc.pid, signal.SIGKILL)  # the build and its merge worker, mid-merge
    proc.wait()
    assert not store.is_complete(target)
    rebuilt = build(recipe, tiny_ws)
    assert not rebuilt.cached and store.is_complete(rebuilt.path)
    assert not list(target.parent.glob(".tmp-*"))
