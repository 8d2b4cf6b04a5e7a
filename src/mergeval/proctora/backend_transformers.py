"""The embedded judge: a local Hugging Face model, in this process.

Loaded once per Judge, on the first call (check_alive only looks at the folder and the
tokenizer, so a sweep can check its judge before any weights are loaded). Prompts go through
the tokenizer's chat template, are sorted by length and generated in left-padded batches:
greedy at temperature 0, sampled with a seed per (sample, re-ask) otherwise; BOS once and
every EOS id the model declares, as for the models under test (answering/chat.py). Where the
verdict's number is one token, the probability of every score at that position is kept
(G-Eval), which gives a smoother, probability-weighted score from the same call. Subword
vocabularies write a number in several forms ("4", "Ġ4", "▁4", or merged with a neighbour as
"4." or "]4"): each score's probability is that of every token of the verdict token's form
with the other number in it.
"""

from __future__ import annotations

from pathlib import Path

from mergeval.answering.chat import encode_prompt, eos_ids, render_chat
from mergeval.core.memory import release_accelerator_memory
from mergeval.proctora.backend_base import (
    Completion,
    JudgeUnavailable,
    Messages,
    call_seed,
    call_temperature,
    clean_token,
    normalise,
)
from mergeval.proctora.parse import parse_verdict
from mergeval.proctora.settings import JudgeSettings


class TransformersBackend:
    def __init__(self, settings: JudgeSettings):
        self.settings = settings
        self.folder = Path(settings.model)
        self._tokenizer = None
        self._model = None
        self._device = None
        self._forms: dict[str, list[int]] | None = None  # a token's text without BPE/SP markers -> ids

    # -- lifecycle ------------------------------------------------------------------------

    def check_alive(self) -> None:
        """The folder, its tokenizer and its chat template (weights load on the first call)."""
        tok = self.tokenizer()
        probe = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        try:  # a template that refuses the system role gets it in the first user turn (chat.py)
            render_chat(tok, probe + [{"role": "user", "content": "ping"}])
        except Exception as e:  # e.g. a template that refuses every conversation
            raise JudgeUnavailable(f"the chat template of {self.folder} cannot render the judge's messages: {e}") from e

    def tokenizer(self):
        if self._tokenizer is not None:
            return self._tokenizer
        if not self.folder.is_dir():
            raise JudgeUnavailable(
                f"judge model folder not found: {self.folder} (build or copy the judge there, "
                "or point `model:` in judge/proctora.yaml at it)"
            )
        if not (self.folder / "config.json").is_file():
            raise JudgeUnavailable(f"judge model folder has no config.json: {self.folder}")
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(self.folder, trust_remote_code=self.settings.trust_remote_code)
        except Exception as e:  # a broken or missing tokenizer: say which folder
            raise JudgeUnavailable(f"cannot load the judge's tokenizer from {self.folder}: {e}") from e
        if not tok.chat_template:
            raise JudgeUnavailable(f"the judge's tokenizer in {self.folder} has no chat template")
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._tokenizer = tok
        return tok

    def _load(self):
        if self._model is not None:
            return self._model
        import torch
        from transformers import AutoModelForCausalLM

        self.tokenizer()
        device = self.settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            model = AutoModelForCausalLM.from_pretrained(
                self.folder, dtype="auto", trust_remote_code=self.settings.trust_remote_code)
        except Exception as e:
            raise JudgeUnavailable(f"cannot load the judge model from {self.folder}: {e}") from e
        self._model = model.to(device).eval()
        self._device = device
        return self._model

    def close(self) -> None:
        if self._model is None:
            return
        self._model = None
        release_accelerator_memory()

    # -- calls ------------------------------------------------------------------------------

    def complete(self, prompts: list[Messages], *, sample_index: int, attempt: int = 0) -> list[Completion]:
        if not prompts:
            return []
        import torch

        self._load()  # once per Judge: the weights stay loaded across calls
        tok = self.tokenizer()
        texts = [render_chat(tok, m)[0] for m in prompts]
        ids = [encode_prompt(tok, t) for t in texts]
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        size = self.settings.batch_size
        temperature = call_temperature(self.settings.temperature, self.settings.reask_temperature, attempt)
        out: list[Completion | None] = [None] * len(prompts)
        for b, start in enumerate(range(0, len(order), size)):
            batch = order[start : start + size]
            if temperature > 0:  # replies then depend on the seed and on the batch's make-up
                torch.manual_seed(call_seed(self.settings.seed, sample_index, attempt) + b)
            for i, completion in zip(batch, self._generate([ids[i] for i in batch], temperature)):
                out[i] = completion
        return out  # type: ignore[return-value]

    def _generate(self, rows: list[list[int]], temperature: float) -> list[Completion]:
        import torch

        model, tok = self._model, self._tokenizer
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self._device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self._device)
        eos = eos_ids(tok, model.generation_config)
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else dict(do_sample=False)
        with torch.inference_mode():
            gen = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=self.settings.max_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
                output_logits=self.settings.logprobs,
                return_dict_in_generate=True,
                **sampling,
            )
        stops = set(eos)
        completions = []
        for r in range(len(rows)):
            new = gen.sequences[r, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stops), len(new))
            truncated = cut == len(new) and len(new) >= self.settings.max_tokens  # stopped by the limit
            new = new[:cut]
            text = tok.decode(new, skip_special_tokens=True)
            probs = self._verdict_probs(text, new, gen.logits, r) if self.settings.logprobs else None
            completions.append(Completion(text=text, verdict_probs=probs, truncated=truncated))
        return completions

    def _verdict_probs(self, text: str, new: list[int], logits, row: int) -> dict[int, float] | None:
        """P(each score) at the step that wrote the verdict's number (G-Eval weighting)."""
        verdict = parse_verdict(text, self.settings.scale)
        if verdict.score is None or not new:
            return None
        tok = self._tokenizer
        # The token holding the verdict: the first whose decoded prefix reaches past its start.
        lo, hi = 0, len(new) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if len(tok.decode(new[: mid + 1], skip_special_tokens=True)) > verdict.at:
                hi = mid
            else:
                lo = mid + 1
        form = clean_token(tok.convert_ids_to_tokens(new[lo]))
        digits = str(verdict.score)
        if form.count(digits) != 1:
            return None  # the token holds no number, or two: no clean distribution
        low, high = self.settings.scale
        forms = self._token_forms()
        ids = {n: forms.get(form.replace(digits, str(n)), []) for n in range(low, high + 1)}
        if not all(ids.values()):
            return None  # some score cannot be written in this form: its probability is elsewhere
        p = logits[lo][row].float().softmax(-1)
        return normalise({n: float(sum(p[i] for i in group)) for n, group in ids.items()})

    def _token_forms(self) -> dict[str, list[int]]:
        """Short tokens by their text without word-start markers: "4", "Ġ4" and "▁4" are one form."""
        if self._forms is None:
            forms: dict[str, list[int]] = {}
            for piece, i in self._tokenizer.get_vocab().items():
                text = clean_token(piece)
                if text and len(text) <= 4:
                    forms.setdefault(text, []).append(i)
            self._forms = forms
        return self._forms
