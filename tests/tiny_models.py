"""Tiny random Hugging Face causal LMs that mergekit can merge, for tests and benchmarks.

    from tests.tiny_models import make_tiny_model
    make_tiny_model(tmp_path / "a", "qwen3", seed=1)   # -> tmp_path / "a"

Each model is a few thousand float32 parameters in safetensors, with a word-level tokenizer
(`<pad> <s> </s> <unk>`, then words, numbers and letters up to `vocab_size`) and a chat
template, so AutoModelForCausalLM / AutoTokenizer / mergekit / `transformers serve` all load
it. Same arguments and seed -> bit-identical weights. No pytest import: benchmarks use it too.
"""

from __future__ import annotations

import json
from pathlib import Path

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3")

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = ["user", "assistant", "system", ":", "?", "what", "is", "plus", "reverse", "answer"]

# Plain text turns ("user : hi assistant : hello </s>"), so a WhitespaceSplit tokenizer
# sees every piece as a word of its vocabulary.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %} {{ eos_token }}{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def vocabulary(vocab_size: int) -> list[str]:
    """Specials, a few words, then 0, 1, 2, ... and a..z until there are vocab_size tokens."""
    tokens = SPECIALS + WORDS
    fill = [str(i) for i in range(100)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    fill += [f"w{i}" for i in range(max(0, vocab_size))]
    for tok in fill:
        if len(tokens) >= vocab_size:
            break
        if tok not in tokens:
            tokens.append(tok)
    return tokens[:vocab_size]


def _config(arch: str, vocab_size: int, num_layers: int, hidden: int):
    import transformers as tf

    heads = 4 if hidden % 4 == 0 else 1
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if arch == "llama":
        return tf.LlamaConfig(**common), tf.LlamaForCausalLM
    if arch == "mistral":
        return tf.MistralConfig(**common, sliding_window=None), tf.MistralForCausalLM
    if arch == "qwen2":
        return tf.Qwen2Config(**common), tf.Qwen2ForCausalLM
    if arch == "qwen3":
        return tf.Qwen3Config(**common, head_dim=hidden // heads), tf.Qwen3ForCausalLM
    if arch == "gemma2":
        return (
            tf.Gemma2Config(**common, head_dim=hidden // heads, sliding_window=64),
            tf.Gemma2ForCausalLM,
        )
    if arch == "gemma3":
        # The text-only model (Gemma3TextConfig, model_type gemma3_text), as mergekit's
        # gemma3.json describes it; the multimodal Gemma3ForConditionalGeneration is not it.
        return (
            tf.Gemma3TextConfig(**common, head_dim=hidden // heads, sliding_window=64),
            tf.Gemma3ForCausalLM,
        )
    raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")


def _tokenizer(vocab_size: int):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary(vocab_size))}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
    )


def make_tiny_model(
    path: Path,
    arch: str = "llama",
    *,
    vocab_size: int = 64,
    num_layers: int = 4,
    hidden: int = 32,
    seed: int = 0,
) -> Path:
    """Save a random tiny causal LM of `arch` (see ARCHS) to `path` and return `path`."""
    import torch

    if vocab_size < len(SPECIALS) + len(WORDS):
        raise ValueError(f"vocab_size must be at least {len(SPECIALS) + len(WORDS)}")
    path = Path(path)
    config, model_cls = _config(arch, vocab_size, num_layers, hidden)
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    # Norm weights start at a constant (1 or 0): perturb everything so two seeds differ in
    # every tensor and merges have something to do.
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    _tokenizer(vocab_size).save_pretrained(path)
    # Pin the dtype in config.json: mergekit and loaders then agree it is float32.
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["dtype"] = "float32"
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path
