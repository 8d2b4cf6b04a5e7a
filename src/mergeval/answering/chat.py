"""Chat templates as models ship them: refusals folded around, one BOS, every EOS.

    text, fold = render_chat(tokenizer, messages_for(item))   # fold: None, or how and why
    ids = encode_prompt(tokenizer, text)                       # BOS once, whoever writes it
    stop = eos_ids(tokenizer, model.generation_config)         # every id the model declares

Families' templates refuse what others accept (facts.md "What users' models bring"): Gemma's
raises "System role not supported"; Mistral v0.1's demands strict user/assistant alternation,
so a system message first fails too. Such a model is then sent the system prompt as the start
of its first user turn, which is what those families' own model cards tell users to do, and
the answer record says so (`chat_fold`), so a report can say which models were asked how.
"""

from __future__ import annotations

FOLD_SYSTEM = "system prompt folded into the first user turn"


def fold_system(messages: list[dict]) -> list[dict]:
    """The system message(s) prepended to the first user turn, a blank line between."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    first_user = next(m for m in rest if m["role"] == "user")
    first_user["content"] = f"{system}\n\n{first_user['content']}" if system else first_user["content"]
    return rest


def fit_messages(messages: list[dict], render) -> tuple[list[dict], dict | None]:
    """(messages the template accepts, None or {"how", "why"}); `render(messages)` raises the
    template's jinja2 TemplateError for what it refuses. Only a refusal with a system message
    is folded: any other refusal is the item's or the template's own problem and is raised."""
    from jinja2.exceptions import TemplateError

    try:
        render(messages)
        return messages, None
    except TemplateError as e:
        if not any(m["role"] == "system" for m in messages):
            raise
        why = str(e)
    folded = fold_system(messages)
    render(folded)  # still refused: raise what the template says
    return folded, {"how": FOLD_SYSTEM, "why": why}


def fitted(tokenizer, messages: list[dict]) -> tuple[list[dict], dict | None]:
    """For a backend that sends messages (vLLM, a server): what to send so that the model's
    template accepts it. No tokenizer or no template at hand: the messages as they are."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return messages, None
    return fit_messages(messages, lambda m: tokenizer.apply_chat_template(m, add_generation_prompt=True,
                                                                           tokenize=False))


def local_tokenizer(model_dir):
    """The tokenizer in a served model's folder, when this machine has it (else None)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir)
    except Exception:  # a name the server knows but this machine has no folder for
        return None


def render_chat(tokenizer, messages: list[dict]) -> tuple[str, dict | None]:
    """The prompt text from the tokenizer's chat template, with what had to be folded."""
    def render(msgs):
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    fitted, fold = fit_messages(messages, render)
    return render(fitted), fold


def adds_bos(tokenizer) -> bool:
    """Whether encoding with special tokens puts BOS first (Llama, Mistral, Gemma, Phi-3 do;
    Qwen has no BOS at all)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt with BOS exactly once: most templates write BOS into the
    text (Llama 3, Mistral, Gemma) and encoding with special tokens would add a second; some
    leave it to the tokenizer (Phi-3), and a plain prompt has none."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if adds_bos(tokenizer) and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    return ids


def eos_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id that ends a reply: generation_config.json's eos_token_id (Gemma lists `<eos>`
    and `<end_of_turn>`, Llama 3 `<|end_of_text|>` and `<|eot_id|>`) and the tokenizer's EOS."""
    found: list[int] = []
    declared = getattr(generation_config, "eos_token_id", None)
    for i in ([declared] if isinstance(declared, int) else list(declared or [])) + [tokenizer.eos_token_id]:
        if i is not None and i not in found:
            found.append(int(i))
    return found
