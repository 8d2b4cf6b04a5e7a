"""The toy zoo: real tiny models in Hugging Face format, deterministic, rebuilt only when needed.

Builds the quick zoo (small training budget) once per module; ~30 s on one thread.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from mergeval.proctora.prompt import render_prompt
from mergeval.zoo import build_zoo, write_items
from mergeval.zoo import toy_tasks as tasks
from mergeval.zoo.model_files import ensure
from mergeval.zoo.toy_items import criterion
from mergeval.zoo.toy_judge_data import PromptCodec, add_questions, load_template, near_miss, sample_rev_question
from mergeval.zoo.training import generate
from mergeval.zoo.vocab import ZOO_VOCAB, Codec

REPO = Path(__file__).resolve().parents[1]
NAMES = ["base", "spec_add", "spec_rev", "proctora"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    logs: list[str] = []
    paths = build_zoo(out, seed=0, quick=True, log=logs.append)
    return out, paths, logs


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_every_model_is_a_loadable_hf_dir(zoo):
    out, paths, _ = zoo
    assert sorted(paths) == sorted(NAMES)
    for name in NAMES:
        path = paths[name]
        assert path == out / name
        for f in ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "zoo.json"]:
            assert (path / f).is_file(), f"{name}/{f}"
        assert all(t.dtype == torch.float32 for t in weights(path).values())
        meta = json.loads((path / "zoo.json").read_text())
        assert meta["seed"] == 0 and meta["model"] == name and len(meta["recipe"]) == 64
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        gen = json.loads((path / "generation_config.json").read_text())
        assert gen["eos_token_id"] == tok.convert_tokens_to_ids("</s>") == model.config.eos_token_id
        assert gen["pad_token_id"] == tok.convert_tokens_to_ids("<pad>")
        ids = tok.apply_chat_template([{"role": "user", "content": "what is 8 plus 9 ?"}],
                                      add_generation_prompt=True, return_tensors="pt", return_dict=True)
        new = model.generate(**ids, max_new_tokens=4, do_sample=False)
        assert new.shape[1] > ids["input_ids"].shape[1]
    assert not list(out.glob(".*.tmp-*"))  # no temporary directories left behind


@pytest.mark.parametrize("name", ["base", "spec_add", "spec_rev"])
def test_chat_template_gives_the_training_prefix(zoo, name):
    tok = AutoTokenizer.from_pretrained(zoo[1][name])
    messages = [{"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "what is 8 plus 9 ?"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<s> what is 8 plus 9 ? answer :"
    assert tok.apply_chat_template(messages[1:], add_generation_prompt=True, tokenize=False) == text
    assert tok(text)["input_ids"] == Codec(ZOO_VOCAB).encode(text)  # the ids training used
    assert tok.decode(tok("e d f a c </s>")["input_ids"], skip_special_tokens=True) == "e d f a c"


def test_hf_generate_matches_the_zoo_decoder(zoo):
    """The answers the sweep gets from transformers are the ones the zoo's own decoder gives."""
    path = zoo[1]["spec_rev"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    vocab = tok.get_vocab()
    codec = Codec(sorted(vocab, key=vocab.get))
    questions = [it["question"] for it in tasks.heldout_items()[95:105]]
    ours = generate(model, codec, [tasks.prompt(q) for q in questions], max_new_tokens=8)
    for q, mine in zip(questions, ours):
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        new = model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1]:]
        assert tok.decode(new, skip_special_tokens=True) == mine


def test_judge_reads_the_rendered_prompt_verbatim(zoo):
    path = zoo[1]["proctora"]
    tok = AutoTokenizer.from_pretrained(path)
    template = load_template(None)
    prompt = render_prompt(template, question="what is 8 plus 9 ?", criterion=criterion("17"), answer="17")
    text = tok.apply_chat_template([{"role": "system", "content": "ignored"}, {"role": "user", "content": prompt}],
                                   add_generation_prompt=True, tokenize=False)
    assert text == "<s> " + prompt
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids  # every word of the template and criterion is known
    for single in ["[RESULT]", "<<<RESPONSE", "RESPONSE>>>"]:
        assert len(tok(single)["input_ids"]) == 1
    zoo_tok = AutoTokenizer.from_pretrained(zoo[1]["base"])
    assert all(tok.convert_tokens_to_ids(w) == i for w, i in zoo_tok.get_vocab().items())  # ids unchanged
    assert (path / "prompt_template.txt").read_text() == template


def test_fast_prompt_encoding_equals_the_tokenizer(zoo):
    """Training encodes judge prompts without rendering each one; it must equal the real path."""
    tok = AutoTokenizer.from_pretrained(zoo[1]["proctora"])
    vocab = tok.get_vocab()
    template = load_template(None)
    pc = PromptCodec(template, Codec(sorted(vocab, key=vocab.get)))
    rng = random.Random(0)
    adds = add_questions(extended=True)
    for i in range(200):
        q = rng.choice(adds) if i % 2 else sample_rev_question(rng)
        answer = q.expected if i % 3 == 0 else near_miss(q, rng)
        ids, start, n = pc.encode(q, answer)
        text = render_prompt(template, question=q.text, criterion=criterion(q.expected), answer=answer)
        assert ids == tok("<s> " + text)["input_ids"]
        assert tok.decode(ids[start : start + n]) == " ".join(answer.split())


def test_a_second_build_skips_everything(zoo):
    out, paths, _ = zoo
    before = {n: (paths[n] / "zoo.json").stat().st_mtime_ns for n in NAMES}
    logs: list[str] = []
    again = build_zoo(out, seed=0, quick=True, log=logs.append)
    assert again == paths
    assert sum("skipped" in line for line in logs) == 4
    assert {n: (paths[n] / "zoo.json").stat().st_mtime_ns for n in NAMES} == before


def test_same_seed_same_weights(zoo, tmp_path):
    other = build_zoo(tmp_path, seed=0, quick=True, log=lambda _: None)
    for name in NAMES:
        a, b = weights(zoo[1][name]), weights(other[name])
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_an_unfinished_directory_is_rebuilt(tmp_path):
    built = []

    def build(tmp: Path) -> dict:
        built.append(tmp)
        (tmp / "weights").write_text("w")
        return {}

    (tmp_path / "m").mkdir()  # looks like a model, but has no zoo.json: a killed run
    (tmp_path / ".m.tmp-999").mkdir()  # left by a killed run
    ensure(tmp_path, "m", recipe="r1", seed=0, build=build, log=lambda _: None)
    assert len(built) == 1 and (tmp_path / "m" / "weights").exists()
    assert not (tmp_path / ".m.tmp-999").exists()
    ensure(tmp_path, "m", recipe="r1", seed=0, build=build, log=lambda _: None)
    assert len(built) == 1
    ensure(tmp_path, "m", recipe="r2", seed=0, build=build, log=lambda _: None)  # new recipe
    ensure(tmp_path, "m", recipe="r2", seed=1, build=build, log=lambda _: None)  # new seed
    assert len(built) == 3


def test_items_are_200_deterministic_files(tmp_path):
    a = write_items(tmp_path / "a")
    b = write_items(tmp_path / "b")
    assert len(a) == 200
    assert sorted(p.relative_to(tmp_path / "a") for p in a) == sorted(p.relative_to(tmp_path / "b") for p in b)
    for pa, pb in zip(a, b):
        assert pa.read_text() == pb.read_text()
    assert len(list((tmp_path / "a" / "add").glob("add_*.txt"))) == 100
    assert len(list((tmp_path / "a" / "rev").glob("rev_*.txt"))) == 100
    committed = REPO / "items" / "toy"
    if committed.is_dir():  # the committed suite is exactly what the writer gives
        for p in a:
            assert (committed / p.relative_to(tmp_path / "a")).read_text() == p.read_text()
    text = (tmp_path / "a" / "add" / "add_000.txt").read_text()
    x, _, y = text.split("Question:\nwhat is ")[1].split(" ?")[0].partition(" plus ")
    assert f'equals: "{int(x) + int(y)}"' in text


def test_no_test_item_is_trained_on():
    held_add = set(tasks.heldout_add_pairs())
    assert len(held_add) == 100 and all(max(p) > tasks.EASY_ADD_MAX for p in held_add)
    assert not held_add & set(tasks.train_hard_add_pairs())
    assert not held_add & set(tasks.easy_add_pairs())
    held_q = {it["question"] for it in tasks.heldout_items()}
    assert not held_q & {q.text for q in add_questions(extended=True)}
    rng = random.Random(1)
    assert not held_q & {tasks.rev_question(tasks.sample_hard_rev(rng)) for _ in range(3000)}
    assert not held_q & {sample_rev_question(rng).text for _ in range(3000)}
