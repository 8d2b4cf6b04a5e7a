"""A tiny real judge that writes its feedback before its verdict, as a Prometheus-style judge does.

    make_scripted_judge(tmp_path / "judge", FEEDBACK_FIRST)   # a Llama folder: load it, serve it

A one-layer Llama whose attention and MLP write nothing, so each next token depends only on
the last one: a chain. The chat template's generation prompt ends with ':', and the chain runs
':' → the reply's words → '</s>'. Greedy decoding then writes exactly the reply, whatever the
prompt, through transformers, `transformers serve` or anything else that runs a Llama.

    make_family_scripted_judge(tmp_path / "judge", SUBWORD_FEEDBACK_FIRST)   # a realistic-world Llama 3

The second is the same chain with a real family's subword tokenizer and chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny_models import CHAT_TEMPLATE, SPECIALS

# What a real rubric judge writes: feedback first, the verdict last (distinct words: a chain).
FEEDBACK_FIRST = "Feedback: the response stays in character and gives useful leads . [RESULT] 4"
# The same in words that Llama 3's tokenizer of the realistic world has whole (its subwords are distinct).
SUBWORD_FEEDBACK_FIRST = "feedback : the answer is good and short . [RESULT] 4"
HIDDEN = 64


def make_scripted_judge(path: Path, reply: str) -> Path:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    words = reply.split()
    if len(set(words)) != len(words) or ":" in words[1:]:
        raise ValueError("a scripted reply needs distinct words (each word has one successor)")
    vocab = SPECIALS + ["user", "assistant", "system", ":"] + [w for w in words if w != ":"]
    ids = {w: i for i, w in enumerate(dict.fromkeys(vocab))}
    assert len(ids) <= HIDDEN
    config = LlamaConfig(vocab_size=len(ids), hidden_size=HIDDEN, intermediate_size=HIDDEN, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=4096,
                         tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = chain_model(config, [ids[w] for w in [":", *words, "</s>"]])
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


def chain_model(config, chain: list[int]):
    """A one-layer Llama that, greedily, follows `chain` (token ids): after chain[i] comes
    chain[i + 1]; after any other token, chain[-1] (the end). Its attention and MLP write
    nothing, so each next token depends on the last one only."""
    import torch
    from transformers import LlamaForCausalLM

    vocab, hidden = config.vocab_size, config.hidden_size
    assert vocab <= hidden and len(set(chain[:-1])) == len(chain) - 1, "a chain needs distinct tokens"
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, hidden))  # token i → unit vector i
        model.model.layers[0].self_attn.o_proj.weight.zero_()  # the layer adds nothing
        model.model.layers[0].mlp.down_proj.weight.zero_()
        head = torch.zeros(vocab, hidden)
        head[chain[-1], :vocab] = 10.0  # every other token ends the reply
        for prev, nxt in zip(chain, chain[1:]):
            head[:, prev] = 0.0
            head[nxt, prev] = 10.0
        model.lm_head.weight.copy_(head)
    return model


def make_family_scripted_judge(path: Path, reply: str, family: str = "llama3") -> Path:
    """The same chain in a realistic-world family (tests/real_world.py): its subword tokenizer
    (Llama 3's byte-level BPE, with room for whole words), chat template, EOS ids and bfloat16
    weights; the chain starts at the last token of the template's generation prompt."""
    import torch
    from transformers import LlamaConfig

    from tests.real_world import FAMILIES, family_tokenizer

    fam = FAMILIES[family]
    tok = family_tokenizer(family, vocab_size=600)
    prompt = tok.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False)
    start = tok(prompt, add_special_tokens=False)["input_ids"][-1]
    eos = [tok.convert_tokens_to_ids(t) for t in fam.gen_eos]
    chain = [start, *tok(reply, add_special_tokens=False)["input_ids"], tok.convert_tokens_to_ids(fam.eos)]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError(f"{reply!r} repeats a token in this tokenizer: a chain needs distinct tokens")
    size = -(-len(tok) // 64) * 64
    config = LlamaConfig(vocab_size=len(tok), hidden_size=size, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=16384,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=eos[0])
    model = chain_model(config, chain).to(torch.bfloat16)
    model.generation_config.eos_token_id = eos
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
