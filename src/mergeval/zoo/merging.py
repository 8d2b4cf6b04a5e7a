"""Simple merges of the zoo's specialists, computed with torch in-process.

Not a replacement for mergekit (the sweep uses mergekit): the judge collects the kinds of wrong
answers merges give on *training* questions, and check.py measures merges on the test items.
"""

from __future__ import annotations

import torch

State = dict[str, torch.Tensor]


def linear(states: list[State], weights: list[float]) -> State:
    return {k: sum(w * s[k] for w, s in zip(weights, states)) for k in states[0]}


def task_arithmetic(base: State, states: list[State], weight: float) -> State:
    return {k: base[k] + weight * sum(s[k] - base[k] for s in states) for k in base}


def ties(base: State, states: list[State], density: float) -> State:
    """TIES with weights 1.0 and normalize false: trim, elect signs, sum the agreeing deltas."""
    out = {}
    for k, b in base.items():
        trimmed = []
        for s in states:
            d = s[k] - b
            keep = max(1, int(round(density * d.numel())))
            if keep < d.numel():
                cut = d.abs().flatten().kthvalue(d.numel() - keep + 1).values
                d = torch.where(d.abs() >= cut, d, torch.zeros_like(d))
            trimmed.append(d)
        stack = torch.stack(trimmed)
        agree = torch.sign(stack) == torch.sign(stack.sum(0))
        out[k] = b + (stack * agree).sum(0)
    return out


def standard_merges(base: State, spec_add: State, spec_rev: State) -> dict[str, State]:
    specs = [spec_add, spec_rev]
    return {
        "linear_0.5": linear(specs, [0.5, 0.5]),
        "task_arithmetic_1.0": task_arithmetic(base, specs, 1.0),
        "task_arithmetic_0.7": task_arithmetic(base, specs, 0.7),
        "ties_0.8": ties(base, specs, 0.8),
        "ties_0.5": ties(base, specs, 0.5),
    }
