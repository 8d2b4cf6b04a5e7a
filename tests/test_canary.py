"""Canary strings: never sent to a model, and `mergeval canary` catches a model that memorised one.

The leaky model is real: a tiny Llama trained (a second on a CPU) on the suite's canary until it
writes it back. The clean one is trained the same way on another canary, so it too completes
*a* canary after the same first half, just not this suite's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from mergeval.audit.canary import LEAK_SHARE, distinct_canaries, reproduced, split
from mergeval.inputs.items import load_items

REPO = Path(__file__).resolve().parents[1]
CANARY = "MERGEVAL CANARY test 7d1c0b9e-4f2a-4e1b-9c3d-2a5b6c7d8e9f"
OTHER = "MERGEVAL CANARY else 0a9b8c7d-6e5f-4a3b-8c1d-0e9f8a7b6c5d"
ITEM = "---\nskill: add\ncanary: {canary}\n---\nQuestion:\nwhat is {n} plus 2 ?\n\nCriterion:\nexactly {m}\n"


def char_tokenizer():
    """One token per character (space included): the model must learn the id one hex digit at a time."""
    from tokenizers import Regex, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Split
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(CANARY + OTHER + "abcdefghijklmnopqrstuvwxyz0123456789?"))
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *chars])}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def memorised(path: Path, text: str, steps: int = 150) -> Path:
    """A tiny Llama trained on `text` alone until it writes it back (loss ~0.01 in ~1 s)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False))
    ids = torch.tensor([tok(text)["input_ids"] + [tok.eos_token_id]])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, "the model did not memorise its text"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("canary")
    for n in range(3):  # the same canary on every item: checked once
        (root / "items" / "suite" / f"q{n}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / "items" / "suite" / f"q{n}.txt").write_text(ITEM.format(canary=CANARY, n=n, m=n + 2))
    (root / "merge_configs").mkdir()
    return root, memorised(root / "leaky", CANARY), memorised(root / "clean", OTHER)


def canary_cli(root: Path, *args: str):
    from mergeval.cli.main import main

    return CliRunner().invoke(main, ["--workspace", str(root), "canary", *args])


def test_a_model_that_memorised_the_canary_is_caught(world):
    root, leaky, _ = world
    result = canary_cli(root, str(leaky), "--items", "items/suite")
    assert result.exit_code == 1, result.output
    assert f"COMPLETED  100% of the rest  {CANARY}" in result.output
    assert "1 of 1 canaries completed" in result.output


def test_a_model_that_never_saw_it_is_clean(world):
    root, _, clean = world
    result = canary_cli(root, str(clean), "--items", "items/suite")
    assert result.exit_code == 0, result.output
    assert "clean" in result.output and "none of 1 canaries completed" in result.output


def test_bad_input_exits_2(world, tmp_path):
    root, leaky, _ = world
    assert canary_cli(root, str(tmp_path / "nowhere"), "--items", "items/suite").exit_code == 2
    plain = tmp_path / "plain"
    (plain / "a").mkdir(parents=True)
    (plain / "a" / "q.txt").write_text("Question:\nwhat is 1 plus 2 ?\n\nCriterion:\nexactly 3\n")
    result = canary_cli(root, str(leaky), "--items", str(plain))
    assert result.exit_code == 2 and "no item carries a canary" in result.output
    (plain / "a" / "bad.txt").write_text("---\ncanary: [not, text]\n---\nQuestion:\nq\n\nCriterion:\nc\n")
    result = canary_cli(root, str(leaky), "--items", str(plain))
    assert result.exit_code == 2 and "bad.txt:2:" in result.output  # file:line, nothing run


def test_the_rule_splits_at_the_middle_word_and_ignores_whitespace_and_case():
    assert split(CANARY) == ("MERGEVAL CANARY", "test 7d1c0b9e-4f2a-4e1b-9c3d-2a5b6c7d8e9f")
    assert split("a1b2c3d4") == ("a1b2", "c3d4")
    rest = split(CANARY)[1]
    assert reproduced(" t e s t  7 D 1 C" + rest[9:] + " and more", rest) == 1.0  # a char tokenizer's spacing
    assert reproduced(rest[:10] + "zzzz", rest) == pytest.approx(9 / len(rest.replace(" ", "")))
    assert reproduced("", rest) == 0.0
    cut = int(len(rest.replace(" ", "")) * LEAK_SHARE) + 2  # just past the threshold, in squashed characters
    assert reproduced(rest.replace(" ", "")[:cut], rest) >= LEAK_SHARE


def test_the_canary_is_never_sent_to_a_model(tmp_path):
    """Adding a canary changes the item's identity, but not what is asked, answered or graded."""
    from mergeval.answering.messages import messages_for, plain_prompt
    from mergeval.answering.stage import prompt_key
    from mergeval.proctora.judge import render_request

    folder = tmp_path / "items"
    shutil.copytree(REPO / "items" / "roleplay", folder)
    marked = load_items(folder)
    assert distinct_canaries(marked) == ["MERGEVAL CANARY roleplay 2b1e6f0c-8a4d-4c55-9e3a-5d7b0c1f9a42"]
    for path in folder.rglob("*.*"):  # the same items without their canary line
        path.write_text("".join(ln for ln in path.read_text().splitlines(True) if not ln.startswith("canary:")))
    unmarked = {it.id: it for it in load_items(folder)}
    template = (REPO / "judge" / "toy" / "prompt.txt").read_text()
    judge = SimpleNamespace(template_text=template, scale=(1, 5))
    for it in marked:
        twin = unmarked[it.id]
        assert it.hash != twin.hash  # the run records that the suite carries it
        assert prompt_key(it) == prompt_key(twin) and it.criterion_hash == twin.criterion_hash
        asked = str(messages_for(it)) + plain_prompt(it) + render_request(judge, it, "an answer").prompt
        assert "MERGEVAL CANARY" not in asked
