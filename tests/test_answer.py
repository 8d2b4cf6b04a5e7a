"""The answer stage on a real tiny model: batching, resuming, and out-of-memory halving."""

from __future__ import annotations

import pytest
import torch

from mergeval.answering.settings import GenerationSettings
from mergeval.answering.stage import answer_items
from mergeval.answering.transformers_backend import TransformersBackend
from mergeval.inputs.items import load_items
from tests.tiny_models import make_tiny_model

QUESTIONS = ["what is 1 plus 2 ?", "reverse a b c ?", "what is 3 plus 4 ?", "reverse d e ?", "what is 5 plus 6 ?",
             "reverse f g h i ?", "what is 7 plus 8 ?", "reverse j k ?", "what is 9 plus 9 ?", "reverse a c e ?"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("answer")
    model = make_tiny_model(root / "model", "llama", seed=5, num_layers=2)
    for i, q in enumerate(QUESTIONS):
        path = root / "items" / f"q{i}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"Question:\n{q}\n\nCriterion:\nanything\n")
    return model, load_items(root / "items")


def answers_of(stage) -> dict[str, str]:
    return {k: v["answer"] for k, v in stage.answers.items()}


def test_out_of_memory_halves_the_batch_down_to_one(world, tmp_path, monkeypatch):
    model, items = world
    settings = GenerationSettings(max_new_tokens=4, batch_size=8)
    reference = answers_of(answer_items("m", model, items, settings, tmp_path / "ref.jsonl"))

    real, sizes = TransformersBackend._generate, []

    def tight_memory(self, prompts):  # the fault: anything above two prompts does not fit
        sizes.append(len(prompts))
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return real(self, prompts)

    monkeypatch.setattr(TransformersBackend, "_generate", tight_memory)
    stage = answer_items("m", model, items, settings, tmp_path / "tight.jsonl")
    assert stage.computed == len(items)
    assert max(s for s in sizes if s <= 2) == 2 and 8 in sizes  # tried 8, halved to 4, then 2
    assert answers_of(stage) == reference  # same answers, smaller batches


def test_out_of_memory_on_a_single_item_fails_and_keeps_what_was_saved(world, tmp_path, monkeypatch):
    model, items = world
    settings = GenerationSettings(max_new_tokens=4, batch_size=5)
    def no_memory(self, prompts):
        raise torch.OutOfMemoryError("injected: even one item does not fit")

    monkeypatch.setattr(TransformersBackend, "_generate", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        answer_items("m", model, items, settings, tmp_path / "a.jsonl")
    assert not (tmp_path / "a.jsonl").exists() or (tmp_path / "a.jsonl").read_text() == ""


def test_resume_answers_only_what_is_missing(world, tmp_path):
    model, items = world
    settings = GenerationSettings(max_new_tokens=4, batch_size=4)
    path = tmp_path / "answers.jsonl"
    full = answer_items("m", model, items, settings, path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]) + lines[4][:10])  # killed mid-write of the fifth record
    resumed = answer_items("m", model, items, settings, path)
    assert resumed.reused == 4 and resumed.computed == len(items) - 4
    assert answers_of(resumed) == answers_of(full)
