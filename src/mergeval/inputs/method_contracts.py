"""A merge method's contract, read from mergekit's own registry: the method's name, its
parameters (names, scope, types, which are required) and its inputs (how many models, whether
a base_model is needed), checked on each output slice of a recipe.

MethodContracts is the half of the recipe checker (recipe_checks.py) that asks mergekit what a
method accepts; the other half walks the recipe's shape and its source models. Nothing here
is a list kept by hand: a mergekit upgrade changes what is accepted with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergeval.inputs.source_models import ModelInfo
from mergeval.inputs.strict_yaml import did_you_mean


@dataclass
class Ref:
    key: tuple  # where the path string sits in the recipe (rewritten to the resolved path)
    line: int | None
    raw: str
    path: Path | None = None
    info: ModelInfo | None = None
    stage: str | None = None  # names an earlier stage of a multi-stage recipe, not a folder

    @property
    def id(self) -> str:
        """The model as mergekit tells inputs apart: the resolved folder, else the text as written."""
        return str(self.path or self.raw)


@dataclass
class Input:
    ref: Ref
    key: tuple  # the models[i] / sources[j] entry
    params: dict | None
    layer_range: tuple[int, int] | None = None
    added_base: bool = False  # mergekit adds a base_model missing from models: as an input


@dataclass
class Group:
    """One output slice as mergekit normalises it: the unit its input contract applies to."""

    key: tuple
    module: str | None
    base: Ref | None
    inputs: list[Input]
    params: list[dict]  # slice / module / top-level parameters, in precedence order


class MethodContracts:
    """Checks against the merge method's declaration; the checker provides add(), spec,
    registry, groups and layer_ranges()."""

    def method(self, d: dict) -> None:
        known = sorted(m.spec.name for m in self.registry.registered_methods())
        name = d.get("merge_method")
        if name is None:
            self.add((), f"no merge_method: (known methods: {', '.join(known)})")
        elif name not in known:
            self.add(("merge_method",), f"unknown merge_method {name!r}{did_you_mean(name, known)}; "
                     f"known methods: {', '.join(known)}")
        else:
            self.spec = self.registry.get(name).spec

    # --- parameters ---------------------------------------------------------------------
    def params(self, block: Any, key: tuple, per_input: bool) -> dict:
        if block is None:
            return {}
        if not isinstance(block, dict):
            self.add(key, "parameters: must be a mapping of parameter names to values")
            return {}
        if self.spec is None:
            return block
        specs = {p.name: p for p in self.spec.parameters}
        for name, value in block.items():
            k = key + (name,)
            if name not in specs:
                known = ", ".join(specs) or "none"
                self.add(k, f"unknown parameter {name!r} for {self.spec.name}{did_you_mean(name, specs)} "
                         f"(mergekit would silently ignore it); {self.spec.name} takes: {known}")
                continue
            p = specs[name]
            if per_input and p.scope.value == "shared":
                self.add(k, f"{name} applies to the whole merge in {self.spec.name}, not to one model: "
                         "mergekit ignores it here; put it in the top-level (or slice) parameters:")
            self.param_value(p, value, k)
        return block

    def param_value(self, p: Any, value: Any, key: tuple) -> None:
        from pydantic import ValidationError

        leaves: list[tuple[Any, tuple]] = []

        def collect(v: Any, k: tuple) -> None:
            if isinstance(v, dict):
                extra = set(v) - {"value", "filter"}
                if extra or "value" not in v:
                    self.add(k, f"{p.name}: a conditional value is {{filter: NAME_PART, value: ...}}")
                else:
                    collect(v["value"], k + ("value",))
            elif isinstance(v, list):
                if not v:
                    self.add(k, f"{p.name}: empty list")
                for i, e in enumerate(v):
                    collect(e, k + (i,)) if isinstance(e, dict) else leaves.append((e, k + (i,)))
            else:
                leaves.append((v, k))

        collect(value, key)
        for v, k in leaves:
            if isinstance(v, float) and not math.isfinite(v):  # pydantic takes .inf / .nan; a merge of them is all NaN
                self.add(k, f"{p.name} must be a finite number, got {v!r}")
                continue
            try:
                p.validate(v)
            except ValidationError:
                want = getattr(p.value_type, "__name__", str(p.value_type))
                self.add(k, f"{p.name} must be a {want}, got {v!r}")

    def groups_check(self) -> None:
        if self.spec is None:
            return
        contract = self.spec.contract
        for g in self.groups:
            ids = [i.ref.id for i in g.inputs]
            base = g.base.id if g.base else None
            try:
                contract.validate_ids(ids, base)
            except ValueError as e:
                here = "here the inputs are " + (", ".join(i.ref.raw for i in g.inputs) or "none")
                if g.base or contract.base.value == "required":
                    here += f", base_model {g.base.raw}" if g.base else ", with no base_model"
                self.add(g.key, f"{self.spec.name}: {str(e).rstrip('.')}. "
                         f"{_contract_text(self.spec.name, contract)}; {here}")
                continue
            self.required(g, base)
            self.layer_ranges(g)

    def required(self, g: Group, base: str | None) -> None:
        def given(name: str, blocks: list) -> bool:
            return any(b and b.get(name) is not None for b in blocks)

        base_aware = self.spec.contract.base.value != "ignored"
        for p in self.spec.parameters:
            if p.scope.value == "shared":
                if p.required and not given(p.name, g.params):
                    self.add(g.key, f"{self.spec.name} needs parameter {p.name}: set it in the top-level parameters:")
                continue
            for i in g.inputs:
                is_base = base_aware and base is not None and i.ref.id == base
                if is_base and p.scope.value == "non_base":
                    if i.params and p.name in i.params:
                        self.add(i.key + ("parameters", p.name), f"{p.name} is ignored for the base_model in "
                                 f"{self.spec.name}: it applies to the other models only")
                    continue
                if p.required and not given(p.name, [i.params] + g.params):
                    why = " (mergekit adds base_model as an input because it is not among the models)" if i.added_base else ""
                    self.add(i.key, f"{self.spec.name} needs parameter {p.name} for {i.ref.raw}{why}: "
                             "set it under that model's parameters: or in the top-level parameters:")


def _contract_text(name: str, c: Any) -> str:
    base = {"required": "a base_model that is one of its inputs", "forbidden": "no base_model"}.get(c.base.value)
    if c.max_inputs is not None and c.max_inputs == c.min_inputs:
        count = f"exactly {c.min_inputs} input model{'s' if c.min_inputs != 1 else ''}"
    elif c.max_inputs is not None:
        count = f"{c.min_inputs} to {c.max_inputs} input models"
    else:
        count = f"at least {c.min_inputs} input model{'s' if c.min_inputs != 1 else ''}"
    text = f"{name} takes {count}" + (f", with {base}" if base else "")
    if name == "passthrough":
        text += "; to stack layers of several models, use slices: with one source each"
    return text
