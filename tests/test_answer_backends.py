"""The answering backends (mergeval.answering.backends): `openai` against a real `transformers
serve` of a tiny model on 127.0.0.1, `vllm` where it can run, and the checks that say why not.
"""

from __future__ import annotations

import pytest

from mergeval.answering import backends as answer_backends
from mergeval.answering.settings import GenerationSettings
from mergeval.answering.stage import answer_items, saved_answers
from mergeval.inputs.items import load_items
from tests import serve
from tests.tiny_models import make_tiny_model

QUESTIONS = ["what is 1 plus 2 ?", "reverse a b c ?", "what is 3 plus 4 ?", "answer user", "what is 9 ?",
             "reverse x y ?"]


@pytest.fixture(scope="module")
def model_and_items(tmp_path_factory):
    root = tmp_path_factory.mktemp("answer-backends")
    model = make_tiny_model(root / "model", "llama", seed=3, num_layers=2)
    for i, q in enumerate(QUESTIONS):
        (root / "items" / f"q{i}.txt").parent.mkdir(exist_ok=True)
        (root / "items" / f"q{i}.txt").write_text(f"Question:\n{q}\n\nCriterion:\nanything\n")
    return model, load_items(root / "items")


@pytest.fixture(scope="module")
def transformers_serve(model_and_items, tmp_path_factory):
    """`transformers serve` on 127.0.0.1; its /v1 URL."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve.transformers_serve(["--dtype", "float32"], log) as url:
        yield url


def test_openai_backend_answers_like_the_in_process_model(model_and_items, transformers_serve, tmp_path):
    model, items = model_and_items
    local = answer_items("m", model, items, GenerationSettings(max_new_tokens=6), tmp_path / "local.jsonl")
    served = GenerationSettings(max_new_tokens=6, backend="openai", endpoint=transformers_serve, batch_size=3)
    answer_backends.check(served)
    stage = answer_items("m", model, items, served, tmp_path / "served.jsonl")
    assert stage.computed == len(items) and stage.reused == 0
    for it in items:  # same outputs contract: one record per item, text and token counts
        record = stage.answers[it.id]
        assert set(record) >= {"model", "item_id", "prompt_hash", "answer", "prompt_tokens", "completion_tokens",
                               "seconds"}
        assert record["completion_tokens"] > 0 and record["prompt_tokens"] > 0
        assert record["answer"] == local.answers[it.id]["answer"], it.question  # greedy, same weights
    again = answer_items("m", model, items, served, tmp_path / "served.jsonl")  # resumes: nothing to do
    assert again.computed == 0 and saved_answers(tmp_path / "served.jsonl", items) == stage.answers
    # the backend is in the cache key (numerics differ between engines), the endpoint is not
    assert served.fingerprint() != GenerationSettings(max_new_tokens=6).fingerprint()
    assert served.fingerprint() == GenerationSettings(max_new_tokens=6, backend="openai").fingerprint()


def test_backend_checks_say_what_to_fix():
    with pytest.raises(ValueError, match="transformers, vllm or openai"):
        answer_backends.check(GenerationSettings(backend="llamacpp"))
    with pytest.raises(ValueError, match="needs an endpoint"):
        answer_backends.check(GenerationSettings(backend="openai"))
    why = answer_backends.vllm_missing()
    if why:
        with pytest.raises(ValueError, match="vllm answering backend cannot run here"):
            answer_backends.check(GenerationSettings(backend="vllm"))


# vLLM is an optional extra that needs a CUDA GPU; CI machines here have neither, so the test
# states why it did not run instead of pretending it passed.
@pytest.mark.skipif(answer_backends.vllm_missing() is not None,
                    reason=f"vllm cannot run: {answer_backends.vllm_missing()}")
def test_vllm_backend_answers_like_the_in_process_model(model_and_items, tmp_path):
    model, items = model_and_items
    local = answer_items("m", model, items, GenerationSettings(max_new_tokens=6), tmp_path / "local.jsonl")
    stage = answer_items("m", model, items, GenerationSettings(max_new_tokens=6, backend="vllm"), tmp_path / "v.jsonl")
    assert stage.computed == len(items)
    agree = sum(stage.answers[it.id]["answer"] == local.answers[it.id]["answer"] for it in items)
    assert agree >= len(items) - 1  # bf16/fp32 kernels may flip one near-tie


# The engine's own process (vllm_backend.py), with a stand-in `vllm` module: what is tested is
# the process plumbing (start, answer, per-call settings, stop, errors), which is ours; vLLM's
# engine itself needs a CUDA GPU (the test above).
FAKE_VLLM = '''
import os
class SamplingParams:
    def __init__(self, **kw):
        self.kw = kw
class _Out:
    def __init__(self, text, n):
        self.text, self.token_ids = text, list(range(n))
class _Req:
    def __init__(self, conv, p):
        self.prompt_token_ids = [0] * len(conv)
        self.outputs = [_Out(f" pid {os.getpid()} max {p.kw['max_tokens']} q {conv[-1]['content']} ", 3)]
class LLM:
    def __init__(self, model, seed, gpu_memory_utilization, trust_remote_code, dtype="auto"):  # vLLM's own names
        if model.endswith("missing"):
            raise FileNotFoundError(model)
    def chat(self, conversations, params, use_tqdm):
        return [_Req(c, params) for c in conversations]
'''


def test_vllm_backend_runs_each_engine_in_a_process_of_its_own(model_and_items, tmp_path, monkeypatch):
    import dataclasses
    import os
    import sys

    from mergeval.answering.vllm_backend import VLLMBackend, VLLMEngineError

    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])  # the spawned engine imports it too
    model, items = model_and_items
    settings = GenerationSettings(max_new_tokens=6, backend="vllm", batch_size=2)
    pids = []
    for _ in range(2):  # two models in a row: two engines, two processes
        with VLLMBackend(model, settings) as gen:
            proc = gen._proc
            gen.settings = dataclasses.replace(settings, max_new_tokens=9)  # read at each call
            (batch, texts, usage), = list(gen.answer(items, {items[0].id}))
            assert batch == [items[0]] and usage[0]["completion_tokens"] == 3
            assert texts[0] == f"pid {proc.pid} max 9 q {items[0].question}" and proc.pid != os.getpid()
            pids.append(proc.pid)
        assert not proc.is_alive() and proc.exitcode == 0  # its exit gave the GPU memory back
    assert pids[0] != pids[1]
    with pytest.raises(VLLMEngineError, match="could not load .*missing: FileNotFoundError"):
        VLLMBackend(tmp_path / "missing", settings)


def test_the_served_model_name_is_sent_not_the_folder(model_and_items, transformers_serve, tmp_path):
    """--served-model '{name}'-style templates: the server gets the name, not our folder's path."""
    import httpx

    model, items = model_and_items
    (tmp_path / "served-as").symlink_to(model)  # a name the server resolves, other than the folder
    named = GenerationSettings(max_new_tokens=6, backend="openai", endpoint=transformers_serve,
                               served_model=str(tmp_path / "{name}"))
    stage = answer_items("m", model, items[:2], named.for_model("served-as", model), tmp_path / "named.jsonl")
    assert stage.computed == 2
    unknown = named.for_model("no-such-model", model)
    assert unknown.served_model == str(tmp_path / "no-such-model")
    with pytest.raises(httpx.HTTPStatusError):  # the server was asked for that name, and has no such model
        answer_items("m", model, items[:2], unknown, tmp_path / "unknown.jsonl")
