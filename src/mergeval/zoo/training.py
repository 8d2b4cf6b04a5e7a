"""The training loop, batching and greedy/sampled decoding shared by the zoo and its judge."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from mergeval.zoo.vocab import Codec

IGNORE = -100


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch: int
    lr: float
    warmup: int
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    loss: str = "target"  # "full": every token after <s>; "target": the answer tokens only
    clip: float | None = None  # max gradient norm, or None for no clipping

    def as_dict(self) -> dict:
        return asdict(self)


def make_model(codec: Codec, *, layers: int, max_positions: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(codec),
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=codec.bos,
        eos_token_id=codec.eos,
        pad_token_id=codec.pad,
    )
    return LlamaForCausalLM(config)


def encode_batch(examples: list[tuple[str, str]], codec: Codec, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and next-token labels; padding (and the prefix, for 'target') ignored."""
    rows = []
    for prefix, target in examples:
        p, t = codec.encode(prefix), codec.encode(target)
        ids = p + t
        lab = ids[1:] if loss == "full" else [IGNORE] * (len(p) - 1) + t
        rows.append((ids, lab))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), codec.pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (r, lab) in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(lab)] = torch.tensor(lab)
    return ids, labels


def lm_loss(model: LlamaForCausalLM, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Right padding never changes the logits of real tokens under a causal mask: no mask needed.
    logits = model(input_ids=ids).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


def train(
    params: list[torch.nn.Parameter],
    schedule: Schedule,
    step_loss: Callable[[int], torch.Tensor],
    *,
    name: str,
    log: Callable[[str], None],
    log_every: int = 100,
    status: Callable[[], str] | None = None,
) -> float:
    """AdamW with linear warm-up then cosine decay; `step_loss(step)` builds and scores a batch."""
    opt = torch.optim.AdamW(params, lr=schedule.lr, betas=schedule.betas, weight_decay=schedule.weight_decay)

    def factor(step: int) -> float:
        if step < schedule.warmup:
            return (step + 1) / schedule.warmup
        progress = (step - schedule.warmup) / max(1, schedule.steps - schedule.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    start, running = time.time(), None
    for step in range(schedule.steps):
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if schedule.clip is not None:
            torch.nn.utils.clip_grad_norm_(params, schedule.clip)
        opt.step()
        sched.step()
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if (step + 1) % log_every == 0 or step + 1 == schedule.steps:
            extra = f" {status()}" if status else ""
            log(f"{name}: step {step + 1}/{schedule.steps} loss {running:.4f}{extra} ({time.time() - start:.0f} s)")
    return running if running is not None else float("nan")


def lm_step_loss(model: LlamaForCausalLM, codec: Codec, sampler, rng: random.Random, schedule: Schedule):
    def step_loss(_step: int) -> torch.Tensor:
        ids, labels = encode_batch([sampler(rng) for _ in range(schedule.batch)], codec, schedule.loss)
        return lm_loss(model, ids, labels)

    return step_loss


@torch.no_grad()
def generate(
    model: LlamaForCausalLM,
    codec: Codec,
    prompts: list[str],
    *,
    max_new_tokens: int = 16,
    sample: bool = False,
    generator: torch.Generator | None = None,
    chunk: int = 256,
) -> list[str]:
    """Decode each prompt until </s> (greedy, or sampled at temperature 1), as decoded text.

    Prompts are grouped by token length, so no padding is ever needed; this is the same
    computation as `model.generate(..., do_sample=False)` on one prompt at a time.
    """
    model.eval()
    encoded = [codec.encode(p) for p in prompts]
    out: list[str] = [""] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    for length in sorted(by_len):
        group = by_len[length]
        for c in range(0, len(group), chunk):
            idx = group[c : c + chunk]
            seqs = torch.tensor([encoded[i] for i in idx])
            done = torch.zeros(len(idx), dtype=torch.bool)
            new = []
            for _ in range(max_new_tokens):
                logits = model(input_ids=seqs).logits[:, -1].float()
                if sample:
                    nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
                else:
                    nxt = logits.argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, codec.eos), nxt)
                new.append(nxt)
                done |= nxt == codec.eos
                seqs = torch.cat([seqs, nxt[:, None]], 1)
                if done.all():
                    break
            gen = torch.stack(new, 1).tolist()
            for j, i in enumerate(idx):
                toks = gen[j]
                if codec.eos in toks:
                    toks = toks[: toks.index(codec.eos)]
                out[i] = codec.decode(toks)
    return out
