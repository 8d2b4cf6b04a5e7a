"""A recipe's tokenizer options as mergekit reads them: `chat_template` checked before the merge,
and what `tokenizer_source`, `tokenizer:` and `chat_template` do, in words for the model card.

    chat_template_problem("chatmll")   # "unknown chat_template 'chatmll' (did you mean chatml?); ..."
    tokenizer_effect(recipe)           # ["Tokenizer: ...", "Chat template: ..."]

Why: mergekit (merge.py, _set_chat_template) takes a chat_template that is "auto", the name of
one of its bundled templates, or a Jinja string; anything else raises *after* the weights are
merged, inside the tokenizer copy, which logs "Failed to copy tokenizer" and leaves a merge
without a tokenizer, so one that cannot answer. The names are read from mergekit's own
template folder, so an upgrade that adds templates is accepted with it.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from mergeval.inputs.strict_yaml import did_you_mean


def known_templates() -> list[str]:
    from mergekit._data import chat_templates

    return sorted(p.name.removesuffix(".jinja") for p in files(chat_templates).iterdir()
                  if p.name.endswith(".jinja"))


def chat_template_problem(value: Any) -> str | None:
    if value is None or value == "auto":
        return None
    names = known_templates()
    if not isinstance(value, str):
        return f"chat_template must be 'auto', a template name ({', '.join(names)}) or a Jinja string, got {value!r}"
    if value in names:
        return None
    if len(value) < 20 or "{" not in value:  # how mergekit tells a name from a template
        return (f"unknown chat_template {value!r}{did_you_mean(value, names)}; mergekit knows: auto, "
                f"{', '.join(names)}, or a Jinja template string (with {{{{ ... }}}})")
    import jinja2

    try:
        jinja2.Environment().parse(value)
    except jinja2.TemplateSyntaxError as e:
        return f"chat_template is not a valid Jinja template: {e.message} (line {e.lineno} of the template)"
    return None


def tokenizer_effect(recipe) -> list[str]:
    """What the merge's tokenizer and chat template are, as sentences (markdown)."""
    if recipe.kind == "moe":
        return ["Tokenizer and chat template: the base model's, as they are (mergekit-moe saves the base's tokenizer)."]
    config = recipe.config  # a multi-stage recipe's final merge: its tokenizer is what the model has
    donor = "its base model's" if config.get("base_model") else "its first model's"
    block = config.get("tokenizer") if isinstance(config.get("tokenizer"), dict) else None
    source = block.get("source") if block else config.get("tokenizer_source")
    if source is None and block is None:
        tok = f"Tokenizer: {donor}, copied as it is."
    elif source == "union":
        tok = "Tokenizer: the union of every input's vocabulary (`union`); embeddings of tokens a model lacks are filled in."
    elif source in ("base", None):
        tok = "Tokenizer: the base model's vocabulary (`base`); every input's embeddings are mapped onto it."
    else:
        tok = f"Tokenizer: that of `{_name(source)}`; every input's embeddings are mapped onto its vocabulary."
    if block and block.get("tokens"):
        tok += f" {len(block['tokens'])} token embedding(s) chosen by the recipe ({', '.join(f'`{t}`' for t in block['tokens'])})."
    if block and block.get("pad_to_multiple_of"):
        tok += f" Vocabulary padded to a multiple of {block['pad_to_multiple_of']}."
    template = config.get("chat_template")
    if template is None:
        chat = "Chat template: the tokenizer's own, unchanged."
    elif template == "auto":
        chat = "Chat template: `auto`, the one most of the inputs share."
    elif template in known_templates():
        chat = f"Chat template: mergekit's `{template}`."
    else:
        chat = "Chat template: the recipe's own Jinja template (see the recipe below)."
    return [tok, chat]


def _name(source: Any) -> str:
    from pathlib import Path

    if isinstance(source, dict):
        source = source.get("model", source)
        source = source.get("path", source) if isinstance(source, dict) else source
    return Path(str(source)).name
