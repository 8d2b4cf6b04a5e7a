"""A tiny real judge that writes its feedback before its verdict, as a Prometheus-style judge does.

    make_scripted_judge(tmp_path / "judge", FEEDBACK_FIRST)   # a Llama folder: load it, serve it

A one-layer Llama whose attention and MLP write nothing, so each next token depends only on
the last one: a chain. The chat template's generation prompt ends with ':', and the chain runs
':' → the reply's words → '</s>'. Greedy decoding then writes exactly the reply, whatever the
prompt, through transformers, `transformers serve` or anything else that runs a Llama.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny_models import CHAT_TEMPLATE, SPECIALS

# What a real rubric judge writes: feedback first, the verdict last (distinct words: a chain).
FEEDBACK_FIRST = "Feedback: the response stays in character and gives useful leads . [RESULT] 4"
HIDDEN = 64


def make_scripted_judge(path: Path, reply: str) -> Path:
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = reply.split()
    if len(set(words)) != len(words) or ":" in words[1:]:
        raise ValueError("a scripted reply needs distinct words (each word has one successor)")
    vocab = SPECIALS + ["user", "assistant", "system", ":"] + [w for w in words if w != ":"]
    ids = {w: i for i, w in enumerate(dict.fromkeys(vocab))}
    assert len(ids) <= HIDDEN
    config = LlamaConfig(vocab_size=len(ids), hidden_size=HIDDEN, intermediate_size=HIDDEN, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=4096,
                         tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    chain = [":", *words, "</s>"]
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(len(ids), HIDDEN))  # token i → unit vector i
        model.model.layers[0].self_attn.o_proj.weight.zero_()  # the layer adds nothing
        model.model.layers[0].mlp.down_proj.weight.zero_()
        head = torch.zeros(len(ids), HIDDEN)
        for prev, nxt in zip(chain, chain[1:]):
            head[ids[nxt], ids[prev]] = 10.0
        for w, i in ids.items():  # every other token ends the reply
            if w not in chain[:-1]:
                head[ids["</s>"], i] = 10.0
        model.lm_head.weight.copy_(head)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok = Tokenizer(WordLevel(vocab=ids, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>", chat_template=CHAT_TEMPLATE).save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["dtype"] = "float32"
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path
