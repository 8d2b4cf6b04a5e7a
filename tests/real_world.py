"""A realistic test world: tiny random models of five real families in a real Hugging Face cache.

    from tests.real_world import build_real_world
    world = build_real_world(tmp_path / "ws", hub_cache=Path(os.environ["HF_HUB_CACHE"]))
    world.workspace, world.sources, world.recipes    # a workspace whose recipes name hub ids

What users' models bring, and each model here brings it (facts.md "What users' models bring"):
subword tokenizers trained in-process (byte-level BPE for Llama 3 and Qwen2, SentencePiece-style
Unigram for Mistral, Gemma 2 and Phi-3), the families' chat templates with their quirks (Gemma's
raises "System role not supported", Mistral v0.1's demands strict user/assistant alternation,
Qwen's ChatML has no BOS token, Llama 3's template writes the BOS that its tokenizer also adds),
several EOS ids in generation_config.json, tied embeddings (Gemma, Qwen), bfloat16 weights.
Each model is stored as the hub stores it: models--org--name/{blobs,refs/main,snapshots/<40-hex>}
with the snapshot's files symlinks into ../../blobs/. Recipes are shaped like the ones on public
model cards (linear, slerp, ties, task_arithmetic, a passthrough franken-merge) and name their
models by hub id, one of them pinned to an older revision. A few seconds on a CPU, no hub.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CORPUS_WORDS = (
    "what is the answer to this question please reply in one short sentence you are a helpful "
    "assistant system user model score result feedback good bad the cat sat on a mat and ran to "
    "its box reverse the letters count from one to ten plus minus times equals yes no maybe"
).split()


@dataclass(frozen=True)
class Family:
    arch: str  # transformers config class prefix
    tokenizer: str  # "bpe" (byte-level) or "unigram" (SentencePiece-style, ▁ word starts)
    specials: tuple[str, ...]  # in id order, first in the vocabulary
    bos: str | None
    eos: str  # the tokenizer's eos_token
    pad: str | None
    gen_eos: tuple[str, ...]  # generation_config.json eos_token_id, in order
    template: str
    tied: bool
    adds_bos: bool  # the tokenizer's post-processor prepends BOS on encode, as the real one does


LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
QWEN2_TEMPLATE = (  # ChatML, with Qwen's default system prompt; no BOS anywhere
    "{%- for message in messages %}{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
MISTRAL_V01_TEMPLATE = (  # mistralai/Mistral-7B-Instruct-v0.1's, as published
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA_TEMPLATE = (  # google/gemma-2-2b-it's, as published
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
PHI3_TEMPLATE = (  # microsoft/Phi-3-mini-4k-instruct's: no BOS in the template, the tokenizer adds it
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

FAMILIES = {
    "llama3": Family("Llama", "bpe", ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                      "<|end_header_id|>", "<|eot_id|>"),
                     "<|begin_of_text|>", "<|eot_id|>", None, ("<|end_of_text|>", "<|eot_id|>"),
                     LLAMA3_TEMPLATE, tied=False, adds_bos=True),
    "qwen2": Family("Qwen2", "bpe", ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
                    None, "<|im_end|>", "<|endoftext|>", ("<|im_end|>", "<|endoftext|>"),
                    QWEN2_TEMPLATE, tied=True, adds_bos=False),
    "mistral": Family("Mistral", "unigram", ("<unk>", "<s>", "</s>"), "<s>", "</s>", None, ("</s>",),
                      MISTRAL_V01_TEMPLATE, tied=False, adds_bos=True),
    "gemma2": Family("Gemma2", "unigram", ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
                     "<bos>", "<eos>", "<pad>", ("<eos>", "<end_of_turn>"), GEMMA_TEMPLATE, tied=True, adds_bos=True),
    "phi3": Family("Phi3", "unigram", ("<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>",
                                       "<|end|>", "<|user|>"),
                   "<s>", "<|endoftext|>", "<|endoftext|>", ("<|endoftext|>", "<|assistant|>", "<|end|>"),
                   PHI3_TEMPLATE, tied=False, adds_bos=True),
}

# (hub id, family, seed): two of each family, so every recipe merges models that really differ.
SOURCES = (
    ("meta-llama/Llama-3.2-1B-Instruct", "llama3", 1),
    ("NousResearch/Hermes-3-Llama-3.2-1B", "llama3", 2),
    ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2", 3),
    ("Qwen/Qwen2.5-Coder-0.5B-Instruct", "qwen2", 4),
    ("mistralai/Mistral-7B-Instruct-v0.1", "mistral", 5),
    ("HuggingFaceH4/zephyr-7b-beta", "mistral", 6),
    ("google/gemma-2-2b-it", "gemma2", 7),
    ("google/gemma-2-2b", "gemma2", 8),
    ("microsoft/Phi-3-mini-4k-instruct", "phi3", 9),
    ("microsoft/Phi-3-mini-128k-instruct", "phi3", 10),
)
LAYERS = 4

# Recipe shapes as public model cards write them, by hub id. {old} is the pinned older revision
# of google/gemma-2-2b-it (the cache's refs/main points at a newer one).
RECIPES = {
    "gemma-linear": """\
models:
  - model: google/gemma-2-2b-it@{old}
    parameters:
      weight: 0.6
  - model: google/gemma-2-2b
    parameters:
      weight: 0.4
merge_method: linear
dtype: bfloat16
""",
    "mistral-zephyr-slerp": """\
slices:
  - sources:
      - model: mistralai/Mistral-7B-Instruct-v0.1
        layer_range: [0, 4]
      - model: HuggingFaceH4/zephyr-7b-beta
        layer_range: [0, 4]
merge_method: slerp
base_model: mistralai/Mistral-7B-Instruct-v0.1
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
""",
    "qwen-ties": """\
models:
  - model: Qwen/Qwen2.5-0.5B-Instruct
  - model: Qwen/Qwen2.5-Coder-0.5B-Instruct
    parameters:
      density: 0.5
      weight: 0.5
merge_method: ties
base_model: Qwen/Qwen2.5-0.5B-Instruct
parameters:
  normalize: true
dtype: bfloat16
""",
    "phi3-task-arithmetic": """\
base_model: microsoft/Phi-3-mini-4k-instruct
models:
  - model: microsoft/Phi-3-mini-128k-instruct
    parameters:
      weight: 0.7
merge_method: task_arithmetic
dtype: bfloat16
""",
    "llama-frankenmerge": """\
slices:
  - sources:
      - model: meta-llama/Llama-3.2-1B-Instruct
        layer_range: [0, 3]
  - sources:
      - model: NousResearch/Hermes-3-Llama-3.2-1B
        layer_range: [1, 4]
merge_method: passthrough
dtype: bfloat16
""",
}

# A mergekit-multi recipe whose stages name their sources by hub id, one pinned (`@{old}`); its
# final stage uses the first by its `name:`. Not in RECIPES: the tests that want it write it.
MULTI_STAGE_RECIPES = {
    "gemma-two-stage": """\
name: gemma-mix
models:
  - model: google/gemma-2-2b-it@{old}
    parameters:
      weight: 0.5
  - model: google/gemma-2-2b
    parameters:
      weight: 0.5
merge_method: linear
dtype: bfloat16
---
merge_method: slerp
base_model: gemma-mix
models:
  - model: gemma-mix
  - model: google/gemma-2-2b-it
parameters:
  t: 0.3
dtype: bfloat16
""",
}

ITEMS = {  # check-only items, so any model is scored; one with a system prompt, one with earlier turns
    "plain.txt": "---\nchecks:\n  - max_words: 400\n---\nQuestion:\nwhat is the answer to this question ?\n",
    "with_system.txt": ("---\nsystem: you are a helpful assistant . reply in one short sentence .\nchecks:\n"
                        "  - max_words: 400\n---\nQuestion:\ncount from one to ten\n"),
    "with_turns.txt": ("---\nsystem: you are a helpful assistant .\nturns:\n  - user: what is the cat ?\n"
                       "  - assistant: the cat sat on a mat .\nchecks:\n  - not_contains: \"<|im_end|>\"\n---\n"
                       "Question:\nand the box ?\n"),
}


@dataclass(frozen=True)
class RealWorld:
    workspace: Path
    hub_cache: Path
    sources: dict[str, Path]  # hub id -> its snapshot folder (refs/main)
    pinned: tuple[str, str, Path]  # (hub id, older commit, its snapshot folder)
    recipes: tuple[str, ...]  # recipe stems


def corpus() -> list[str]:
    """Small English-ish text with every digit, so verdict numbers are in every vocabulary."""
    lines = []
    for i in range(200):
        words = [CORPUS_WORDS[(i * 7 + k * 3) % len(CORPUS_WORDS)] for k in range(6 + i % 5)]
        lines.append(" ".join(words) + f" . [RESULT] {i % 5 + 1} score {i % 10}: {i}")
    # what the chat templates and the judge prompt write around the words, so that it is no <unk>
    lines += ["[INST] user [/INST] assistant\nmodel\nsystem ?!,;'\"()<>{}=-_*#/\\|`~@$%^&+"] * 20
    return lines


def train_tokenizer(fam: Family, vocab_size: int = 320):
    """A PreTrainedTokenizerFast trained on corpus(): byte-level BPE or SentencePiece-style Unigram."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(fam.specials)
    if fam.tokenizer == "bpe":
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    else:
        unk = "<unk>"
        core = Tokenizer(models.Unigram())
        core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=unk,
                                          show_progress=False)
    core.train_from_iterator(corpus(), trainer=trainer)
    if fam.adds_bos:
        bos = (fam.bos, core.token_to_id(fam.bos))
        core.post_processor = processors.TemplateProcessing(single=f"{fam.bos} $A", pair=f"{fam.bos} $A $B",
                                                            special_tokens=[bos])
    kwargs = dict(bos_token=fam.bos, eos_token=fam.eos, pad_token=fam.pad)
    if "<unk>" in specials:
        kwargs["unk_token"] = "<unk>"
    extra = [t for t in specials if t not in kwargs.values()]
    tok = PreTrainedTokenizerFast(tokenizer_object=core, chat_template=fam.template,
                                  additional_special_tokens=extra, **{k: v for k, v in kwargs.items() if v})
    return tok


@lru_cache(maxsize=None)
def family_tokenizer(family: str, vocab_size: int = 320):
    """One tokenizer per family and process: its models share it, as a real family's checkpoints
    do (Unigram training is not deterministic, so two trainings may number tokens differently),
    and byte-level BPE, which takes a second or two, is trained once."""
    return train_tokenizer(FAMILIES[family], vocab_size)


def _config(fam: Family, tok, seed: int):
    import transformers as tf

    ids = {t: tok.convert_tokens_to_ids(t) for t in fam.specials}
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=fam.tied, bos_token_id=ids.get(fam.bos),
                  eos_token_id=ids[fam.gen_eos[0]], pad_token_id=ids.get(fam.pad))
    extra = {"Gemma2": dict(head_dim=8, sliding_window=64), "Mistral": dict(sliding_window=None),
             "Phi3": dict(original_max_position_embeddings=256)}.get(fam.arch, {})
    config = getattr(tf, f"{fam.arch}Config")(**common, **extra)
    return config, getattr(tf, f"{fam.arch}ForCausalLM"), [ids[t] for t in fam.gen_eos]


def make_model(path: Path, family: str, seed: int) -> Path:
    """One tiny random model of `family` in bfloat16, as a plain folder (save_pretrained's files)."""
    import torch

    fam = FAMILIES[family]
    tok = family_tokenizer(family)
    config, model_cls, gen_eos = _config(fam, tok, seed)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():  # norms start constant: perturb every tensor so two seeds differ everywhere
        gen = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    model = model.to(torch.bfloat16)
    model.generation_config.eos_token_id = gen_eos if len(gen_eos) > 1 else gen_eos[0]
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["dtype"] = "bfloat16"
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path


def publish(hub_cache: Path, repo_id: str, folder: Path) -> tuple[str, Path]:
    """Store `folder` as the hub cache stores a download: blobs by content, a snapshot of symlinks
    named by a 40-hex commit, refs/main pointing at it. Returns (commit, snapshot folder)."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    digest = hashlib.sha1(repo_id.encode())
    for f in files:
        digest.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    commit = digest.hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in files:
        blob = hashlib.sha256(f.read_bytes()).hexdigest()
        if not (repo / "blobs" / blob).exists():
            shutil.copyfile(f, repo / "blobs" / blob)
        link = snapshot / f.name
        if not link.is_symlink():
            link.symlink_to(Path("..") / ".." / "blobs" / blob)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit, snapshot


def build_real_world(root: Path, hub_cache: Path, only: tuple[str, ...] | None = None) -> RealWorld:
    """The workspace at `root` (recipes, items, a judge) and every source model in `hub_cache`;
    `only`: just these hub ids, and the recipes that name nothing else (a quicker world)."""
    root.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Path] = {}
    pinned = None
    with tempfile.TemporaryDirectory() as scratch:
        for repo_id, family, seed in SOURCES:
            if only is not None and repo_id not in only:
                continue
            if repo_id == "google/gemma-2-2b-it":  # an older revision first: refs/main moves past it
                old, old_dir = publish(hub_cache, repo_id, make_model(Path(scratch) / f"{seed}-old", family, seed + 100))
                pinned = (repo_id, old, old_dir)
            _, sources[repo_id] = publish(hub_cache, repo_id, make_model(Path(scratch) / str(seed), family, seed))
    configs = root / "merge_configs" / "real"
    configs.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, text in RECIPES.items():
        named = {r for r, _, _ in SOURCES if re.search(rf"{re.escape(r)}(?![\w.-])", text)}
        if named <= set(sources):
            (configs / f"{stem}.yaml").write_text(text.format(old=pinned[1] if pinned else ""))
            written.append(stem)
    items = root / "items" / "real"
    items.mkdir(parents=True, exist_ok=True)
    for name, text in ITEMS.items():
        (items / name).write_text(text)
    (root / "judge").mkdir(exist_ok=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "judge" / "prompt.txt", root / "judge" / "prompt.txt")
    # The judge is a source model's snapshot: check-only items never call it, but it must load.
    judge = sources.get("Qwen/Qwen2.5-0.5B-Instruct") or next(iter(sources.values()))
    (root / "judge" / "proctora.yaml").write_text(f"model: {judge}\nmax_tokens: 8\n")
    return RealWorld(root, hub_cache, sources, pinned, tuple(written))
