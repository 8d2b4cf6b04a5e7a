"""The sweep on models shaped like users' models: five real families in a real hub cache.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_real_world.py

tests/real_world.py builds the world (subword tokenizers, the families' chat templates and
their refusals, several EOS ids, tied embeddings, bfloat16) into this session's HF_HUB_CACHE
(conftest.py); recipes name the models by hub id, as model cards do.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mergeval.answering.settings import GenerationSettings
from mergeval.core.workspace import Workspace
from tests.real_world import RECIPES, SOURCES, build_real_world

GEN = GenerationSettings(max_new_tokens=6, batch_size=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from huggingface_hub import constants

    # One cache for this process and the sweeps it starts: conftest.py's session folder.
    # huggingface_hub reads the variable once, at import, and under pytest-xdist a worker may
    # have imported it before conftest.py ran; it looks the constant up at each call.
    hub = Path(os.environ["HF_HUB_CACHE"])
    constants.HF_HUB_CACHE = str(hub)
    return build_real_world(tmp_path_factory.mktemp("real") / "ws", hub)


def plan_of(world, generation=GEN):
    from mergeval.engine.plan import plan_sweep

    ws = Workspace(world.workspace)
    return plan_sweep(ws, ws.configs / "real", ws.items / "real", ws.judge_file, generation)


def items_of(world):
    from mergeval.inputs.items import load_items

    return {it.id: it for it in load_items(world.workspace / "items" / "real")}


def test_the_world_is_a_hub_cache_with_the_families_quirks(world):
    from huggingface_hub import try_to_load_from_cache
    from jinja2.exceptions import TemplateError
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    for repo_id, _, _ in SOURCES:
        snapshot = Path(try_to_load_from_cache(repo_id, "config.json")).parent
        assert snapshot == world.sources[repo_id] and len(snapshot.name) == 40
        assert all(f.is_symlink() and os.readlink(f).startswith("../../blobs/") for f in snapshot.iterdir())
    gemma = world.sources["google/gemma-2-2b-it"]
    with pytest.raises(TemplateError, match="System role not supported"):
        AutoTokenizer.from_pretrained(gemma).apply_chat_template([{"role": "system", "content": "x"},
                                                                  {"role": "user", "content": "y"}], tokenize=False)
    with pytest.raises(TemplateError, match="must alternate"):
        AutoTokenizer.from_pretrained(world.sources["mistralai/Mistral-7B-Instruct-v0.1"]).apply_chat_template(
            [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], tokenize=False)
    assert AutoTokenizer.from_pretrained(world.sources["Qwen/Qwen2.5-0.5B-Instruct"]).bos_token is None
    assert len(GenerationConfig.from_pretrained(gemma).eos_token_id) == 2
    config = AutoConfig.from_pretrained(gemma)
    assert config.tie_word_embeddings and config.dtype in ("bfloat16", __import__("torch").bfloat16)


def test_sources_are_named_by_hub_id_and_merges_by_recipe_stem(world):
    plan = plan_of(world)
    repo_id, old, old_dir = world.pinned
    hub_ids = {r for r, _, _ in SOURCES if r != repo_id} | {f"{repo_id}@{old}"}
    assert {c.name for c in plan.candidates} == hub_ids | set(RECIPES)
    pinned = plan.candidate(f"{repo_id}@{old}")
    assert pinned.path == old_dir  # the pinned revision, not refs/main
    assert all("/" not in c.model_id and "@" not in c.model_id for c in plan.candidates)  # folder names
    linear = plan.candidate("gemma-linear")
    assert linear.parents == (f"{repo_id}@{old}", "google/gemma-2-2b")
    # mergekit is handed snapshot folders, never a hub id it would look up online first
    refs = [m["model"] for m in linear.recipe.config["models"]]
    assert refs == [str(old_dir), str(world.sources["google/gemma-2-2b"])]


def test_two_references_to_one_folder_are_one_model(world, tmp_path):
    ws = shutil.copytree(world.workspace, tmp_path / "ws", ignore=shutil.ignore_patterns(".mergeval"))
    snapshot = world.sources["google/gemma-2-2b"]
    # gemma-linear names google/gemma-2-2b by hub id; these name the same folder by its snapshot
    # path and by `@main`
    for stem, ref in (("by-path", snapshot), ("by-main", "google/gemma-2-2b@main")):
        (ws / "merge_configs" / "real" / f"{stem}.yaml").write_text(
            f"models:\n  - model: {ref}\n    parameters:\n      weight: 0.5\n  - model: google/gemma-2-2b-it\n"
            "    parameters:\n      weight: 0.5\nmerge_method: linear\n")
    plan = plan_of(type(world)(ws, world.hub_cache, world.sources, world.pinned, world.recipes))
    named = [c for c in plan.candidates if c.path == snapshot]
    assert [c.name for c in named] == ["google/gemma-2-2b"]
    for stem in ("by-path", "by-main"):
        assert plan.candidate(stem).parents == ("google/gemma-2-2b", "google/gemma-2-2b-it")


def test_refused_system_prompts_are_folded_and_recorded(world, tmp_path):
    from mergeval.answering.stage import answer_items

    items = list(items_of(world).values())
    for repo_id, why in (("google/gemma-2-2b", "System role not supported"),
                         ("mistralai/Mistral-7B-Instruct-v0.1", "must alternate"),
                         ("Qwen/Qwen2.5-0.5B-Instruct", None)):
        stage = answer_items("m", world.sources[repo_id], items, GEN, tmp_path / f"{repo_id.replace('/', '_')}.jsonl")
        folds = {k: a["chat_fold"] for k, a in stage.answers.items()}
        assert folds["plain"] is None
        for k in ("with_system", "with_turns"):
            if why is None:
                assert folds[k] is None, repo_id  # ChatML takes a system message as it is
            else:
                assert folds[k]["how"] == "system prompt folded into the first user turn" and why in folds[k]["why"]


@pytest.mark.parametrize("repo_id, bos", [("meta-llama/Llama-3.2-1B-Instruct", "<|begin_of_text|>"),  # template writes it
                                          ("microsoft/Phi-3-mini-4k-instruct", "<s>"),  # the tokenizer adds it
                                          ("Qwen/Qwen2.5-0.5B-Instruct", None)])  # ChatML has none
def test_the_prompt_has_one_bos(world, repo_id, bos):
    from mergeval.answering.chat import encode_prompt
    from mergeval.answering.transformers_backend import TransformersBackend

    backend = TransformersBackend(world.sources[repo_id], GEN)
    tok = backend.tokenizer
    for item in items_of(world).values():
        ids = encode_prompt(tok, backend.prompt_text(item)[0])
        tokens = tok.convert_ids_to_tokens(ids)
        assert tokens.count(bos) == (1 if bos else 0) and (bos is None or tokens[0] == bos), tokens[:3]


def test_generation_stops_at_every_eos_the_model_declares(world, tmp_path):
    """Declare as EOS the token the model writes first: its answer is then empty."""
    import torch

    from mergeval.answering.stage import answer_items
    from mergeval.answering.transformers_backend import TransformersBackend

    model = shutil.copytree(world.sources["google/gemma-2-2b"], tmp_path / "gemma")  # files, not links
    items = [items_of(world)["plain"]]
    before = answer_items("m", model, items, GEN, tmp_path / "a.jsonl").answers["plain"]
    assert before["completion_tokens"] > 0
    backend = TransformersBackend(model, GEN)
    ids = backend.prompt_text(items[0])[0]
    from mergeval.answering.chat import encode_prompt

    with torch.inference_mode():
        first = int(backend.model(torch.tensor([encode_prompt(backend.tokenizer, ids)])).logits[0, -1].argmax())
    gen_file = model / "generation_config.json"
    gen = json.loads(gen_file.read_text())
    gen["eos_token_id"] = [*gen["eos_token_id"], first]
    gen_file.write_text(json.dumps(gen))
    after = answer_items("m", model, items, GEN, tmp_path / "b.jsonl").answers["plain"]
    assert after["completion_tokens"] == 0 and after["answer"] == ""


def test_answers_are_keyed_by_device_dtype_and_batch_size():
    base = GenerationSettings()
    assert base.fingerprint() == GenerationSettings(device="cpu", dtype="float32").fingerprint()  # auto, here
    for other in (GenerationSettings(device="cuda"), GenerationSettings(dtype="bfloat16"),
                  GenerationSettings(batch_size=8)):
        assert other.fingerprint() != base.fingerprint()
    served = GenerationSettings(backend="openai", endpoint="http://127.0.0.1:1/v1")  # runs where its server runs
    assert served.fingerprint() == GenerationSettings(backend="openai", batch_size=3, dtype="bfloat16").fingerprint()


def test_auto_device_is_found_without_importing_a_cpu_only_torch():
    import subprocess
    import sys

    import torch

    if torch.version.cuda is not None or torch.version.hip is not None:
        pytest.skip("this torch is built for a GPU: it is imported and asked whether it sees one")
    probe = ("import sys; from mergeval.answering.settings import GenerationSettings as G; "
             "G().fingerprint(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # planning a re-run on a CPU box need not pay ~3 s for torch


def test_the_sweep_ranks_every_model_under_its_hub_id_or_recipe_stem(world):
    from mergeval.engine import stages

    plan = plan_of(world)
    run_dir = stages.run_direct(plan)
    names = {c.name for c in plan.candidates}
    ranking = (run_dir / "ranking.csv").read_text().splitlines()
    ranked = {line.split(",")[0] for line in ranking[1:]}
    assert ranked == names and len(names) == len(SOURCES) + len(RECIPES)  # gemma-2-2b-it: pinned only
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert all(r["score"] is not None for r in rows)  # no model failed as a whole
    folded = {r["model"] for r in rows if r["chat_fold"]}
    assert folded == {f"{world.pinned[0]}@{world.pinned[1]}", "google/gemma-2-2b", "gemma-linear",
                      "mistralai/Mistral-7B-Instruct-v0.1", "HuggingFaceH4/zephyr-7b-beta", "mistral-zephyr-slerp"}
    run = json.loads((run_dir / "run.json").read_text())
    assert {m["name"] for m in run["models"]} == names
    assert {f["model"] for f in run["chat_folds"]} == folded
    assert "## Chat templates" in (run_dir / "report.md").read_text()
    assert 'id="chat-folds"' in (run_dir / "report.html").read_text()


def test_the_disk_check_counts_the_output_dtype_and_each_slices_source(world):
    """Issue item 7: the room asked for a merge is what it writes, give or take the margin."""
    import dataclasses

    from mergeval.engine import build
    from mergeval.inputs import model_dirs

    plan = plan_of(world)
    margin = lambda need: (need - (1 << 20)) / 1.1  # noqa: E731 - estimate_bytes' own margin, taken off
    for stem in ("llama-frankenmerge", "qwen-ties"):
        cand = plan.candidate(stem)
        built = build.build(cand.recipe, plan.workspace, key=cand.key)  # cached after the sweep test
        written = sum(n * per for n, per in model_dirs.tensor_sizes(built.path).values())
        assert margin(build.estimate_bytes(cand.recipe)) == pytest.approx(written, rel=0.01), stem
        as_f32 = dataclasses.replace(cand.recipe, config={**cand.recipe.config, "dtype": "float32"})
        assert margin(build.estimate_bytes(as_f32)) == pytest.approx(2 * written, rel=0.01), stem


def test_a_served_model_whose_template_refuses_the_system_role_is_sent_the_folded_turns(world, tmp_path):
    """`transformers serve` applies Gemma's template itself: the openai backend folds first."""
    from mergeval.answering.stage import answer_items
    from tests import serve

    gemma = world.sources["google/gemma-2-2b"]
    items = [items_of(world)["plain"], items_of(world)["with_system"]]
    with serve.transformers_serve(["--dtype", "float32"], tmp_path / "serve.log") as url:
        served = GenerationSettings(max_new_tokens=4, backend="openai", endpoint=url, batch_size=2)
        stage = answer_items("m", gemma, items, served, tmp_path / "served.jsonl")
    assert stage.answers["plain"]["chat_fold"] is None
    assert "System role not supported" in stage.answers["with_system"]["chat_fold"]["why"]


def test_a_multi_stage_recipe_names_its_stages_sources_by_hub_id(world, tmp_path):
    """Issue #13's names inside mergekit-multi: every stage's hub ids (one pinned) name the parents;
    mergekit is handed each stage's snapshot folders. Built and ranked in test_readme_walkthrough.py."""
    from mergeval.engine.plan import plan_sweep
    from mergeval.inputs.recipes import STAGE_REF
    from mergeval.inputs.validate import validate_paths
    from tests.real_world import MULTI_STAGE_RECIPES

    repo_id, old, old_dir = world.pinned
    ws = Workspace(shutil.copytree(world.workspace, tmp_path / "ws", ignore=shutil.ignore_patterns(".mergeval")))
    (ws.configs / "multi").mkdir()
    for stem, text in MULTI_STAGE_RECIPES.items():
        (ws.configs / "multi" / f"{stem}.yaml").write_text(text.format(old=old))
    assert validate_paths([ws.configs / "multi"], ws) == []
    plan = plan_sweep(ws, ws.configs / "multi", ws.items / "real", ws.judge_file, GEN)
    two = plan.candidate("gemma-two-stage")
    assert two.kind == "merge" and two.method == "linear → slerp"
    assert two.parents == (f"{repo_id}@{old}", "google/gemma-2-2b", "google/gemma-2-2b-it")
    assert {c.name for c in plan.candidates if c.kind == "source"} == set(two.parents)
    first, final = two.recipe.stages
    assert [m["model"] for m in first.config["models"]] == [str(old_dir), str(world.sources["google/gemma-2-2b"])]
    assert final.config["base_model"] == STAGE_REF + "gemma-mix"
    assert final.config["models"][1]["model"] == str(world.sources["google/gemma-2-2b-it"])
