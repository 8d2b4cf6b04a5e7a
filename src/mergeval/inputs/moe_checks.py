"""mergekit-moe ("frankenMoE") recipes, checked strictly before anything is built.

    checked = check_moe(load_yaml(text, path), Workspace.find())   # a recipe_checks.Checked

A MoE recipe is mergekit-moe's own format (mergekit.moe.config.MoEMergeConfig):

    base_model: zoo/base              # attention, embeddings and norms come from it
    gate_mode: hidden                 # hidden | cheap_embed | random (or mergekit's other modes)
    experts_per_token: 1
    dtype: float32
    experts:
      - source_model: zoo/spec_add    # its MLPs become one expert
        positive_prompts: ["what is 3 plus 4 ?"]
      - source_model: zoo/spec_rev
        positive_prompts: ["reverse a b c ?"]

What it checks, each at its file:line: unknown keys at the top and in every expert (mergekit
ignores them), the gate mode against those mergekit's router computes, experts_per_token from
1 to the number of experts, prompts where the gate mode needs them, every model reference (as
recipe_checks.py does: local folder or cached hub model, no LoRA), that the experts fit the
base (architecture, hidden size, vocabulary, layer count), that one of mergekit's MoE output
architectures (Mixtral, Qwen MoE, DeepSeek MoE, ...) takes these models, asked through each
one's own `supports_config`, and last mergekit's schema and its own `is_bad_config`.
mergekit-moe finds most of these only after loading the base model, or by `sys.exit(1)`.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Any, Iterator

from mergeval.inputs.recipe_checks import DTYPES, MERGEVAL_KEYS, Checked, RecipeChecker
from mergeval.inputs.strict_yaml import YamlDoc, did_you_mean

# The modes mergekit.moe.router.get_gate_params computes gates for (anything else crashes it).
GATE_MODES = ("hidden", "cheap_embed", "random", "uniform_random", "hidden_avg", "hidden_last")
PROMPTLESS = ("random",)  # is_bad_config asks every expert for positive_prompts except in this mode
MOE_KEYS = ("experts", "gate_mode", "experts_per_token", "shared_experts")  # what tells a MoE recipe


def is_moe(data: Any) -> bool:
    return isinstance(data, dict) and "merge_method" not in data and any(k in data for k in MOE_KEYS)


def check_moe(doc: YamlDoc, workspace) -> Checked:
    return MoeChecker(doc, workspace).run_moe()


class MoeChecker(RecipeChecker):
    def run_moe(self) -> Checked:
        from mergekit.moe.config import Expert, MoEMergeConfig

        d = self.doc.data
        self.keys(d, (), list(MoEMergeConfig.model_fields) + list(MERGEVAL_KEYS), "a MoE recipe")
        self.seed(d)
        v = d.get("dtype")
        if v is not None and (not isinstance(v, str) or v.removeprefix("torch.") not in DTYPES):
            self.add(("dtype",), f"dtype must be one of {', '.join(DTYPES)}, got {v!r}")
        mode = d.get("gate_mode", "hidden")
        if mode not in GATE_MODES:
            self.add(("gate_mode",), f"unknown gate_mode {mode!r}{did_you_mean(str(mode), GATE_MODES)}; "
                     f"mergekit-moe knows: {', '.join(GATE_MODES)}")
        base = None
        if d.get("base_model") is None:
            self.shape((), "a MoE recipe needs base_model: (the model its attention and embeddings come from)")
        else:
            base = self.ref(d["base_model"], ("base_model",))
        experts = self.experts(d.get("experts"), ("experts",), mode, list(Expert.model_fields), required=True)
        shared = self.experts(d.get("shared_experts"), ("shared_experts",), mode, list(Expert.model_fields))
        self.per_token(d, len(experts))
        if not self.broken and base is not None and base.info is not None:
            self.fits_base(base, experts + shared)
        if not self.out.problems:
            self.mergekit_verdict(d)
        self.collect_sources(base)
        return self.out

    def experts(self, value: Any, key: tuple, mode: Any, fields: list[str], required: bool = False) -> list:
        if value is None and not required:
            return []
        if not isinstance(value, list) or not value:
            self.shape(key, f"{key[0]}: must be a list of '- source_model: PATH' entries"
                       + (" (a MoE needs at least one expert)" if required else ""))
            return []
        refs = []
        for i, e in enumerate(value):
            k = key + (i,)
            if not self.keys(e, k, fields, f"an {key[0]} entry"):
                continue
            if e.get("source_model") is None:
                self.shape(k, f"an {key[0]} entry needs source_model: PATH")
                continue
            refs.append(self.ref(e["source_model"], k + ("source_model",)))
            for p in ("positive_prompts", "negative_prompts"):
                if p in e and not (isinstance(e[p], list) and all(isinstance(x, str) for x in e[p])):
                    self.add(k + (p,), f"{p} must be a list of prompt strings, got {e[p]!r}")
            if mode not in PROMPTLESS and key == ("experts",) and not e.get("positive_prompts"):
                self.add(k, f"gate_mode {mode} routes by prompts: this expert needs positive_prompts: "
                         "(example prompts that should go to it), or use gate_mode: random")
            for p in ("noise_scale", "residual_scale"):
                x = e.get(p)
                if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)):
                    self.add(k + (p,), f"{p} must be a finite number, got {x!r}")
        return refs

    def per_token(self, d: dict, n_experts: int) -> None:
        v = d.get("experts_per_token", 2)  # mergekit's default
        if isinstance(v, bool) or not isinstance(v, int):
            self.add(("experts_per_token",), f"experts_per_token must be a whole number, got {v!r}")
        elif n_experts and not 1 <= v <= n_experts:
            where = ("experts_per_token",) if "experts_per_token" in d else ("experts",)
            default = "" if "experts_per_token" in d else " (mergekit's default when experts_per_token: is not set)"
            self.add(where, f"experts_per_token {v}{default} must be from 1 to the number of experts, {n_experts}")

    def fits_base(self, base, refs: list) -> None:
        for r in refs:
            if r.info is None:
                continue
            for what, label in (("arch", "architecture"), ("hidden_size", "hidden_size"),
                                ("vocab_size", "vocab_size"), ("layers", "layer count")):
                a, b = getattr(base.info, what), getattr(r.info, what)
                if what == "layers":
                    a, b = a.get("default"), b.get("default")
                if a is not None and b is not None and a != b:
                    self.add(r.key, f"expert {r.raw} has {label} {b} but the base_model {base.raw} has {a}: "
                             "an expert's layers must fit the base model's")

    def mergekit_verdict(self, d: dict) -> None:
        """mergekit's schema, its output architectures' supports_config and is_bad_config."""
        from mergekit.moe import ALL_OUTPUT_ARCHITECTURES
        from mergekit.moe.config import MoEMergeConfig, is_bad_config
        from pydantic import ValidationError

        data = _rewritten(d, self.out.rewrites)
        try:
            config = MoEMergeConfig.model_validate(data)
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(err["loc"])
                self.add(loc, f"{'.'.join(str(x) for x in loc)}: {err['msg']}")
            return
        archs = ALL_OUTPUT_ARCHITECTURES
        names = ", ".join(a.name() for a in archs)
        if config.architecture:
            archs = [a for a in archs if a.name().lower().startswith(config.architecture.lower())]
            if not archs:
                self.add(("architecture",), f"architecture {config.architecture!r} is none of mergekit's MoE "
                         f"output architectures: {names}")
                return
        why = []
        for a in archs:
            with _logged(logging.WARNING) as said:
                try:
                    ok = a.supports_config(config, explain=True, trust_remote_code=False)
                except Exception as e:  # a config transformers cannot read without the model's own code
                    ok, said[:] = False, [str(e)]
            if ok:
                break
            why.append(f"{a.name()}: {'; '.join(said) or 'not supported'}")
        else:
            self.add((), "no MoE output architecture of mergekit takes these models (" + " | ".join(why) + ")")
            return
        with _logged(logging.ERROR) as said:
            bad = is_bad_config(config, allow_all_same=False)
        if bad:
            self.add(("experts",), "mergekit-moe refuses this recipe: " + " ".join(said))


def _rewritten(d: dict, rewrites: list) -> dict:
    import copy

    data = copy.deepcopy({k: v for k, v in d.items() if k not in MERGEVAL_KEYS})
    for key, value in rewrites:
        node = data
        for k in key[:-1]:
            node = node[k]
        node[key[-1]] = value
    return data


@contextmanager
def _logged(level: int) -> Iterator[list[str]]:
    """What mergekit logs (on the root logger) at `level` or above while the block runs."""
    said: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    # only here while mergekit explains itself: its messages become problems, not console noise
    root = logging.getLogger()
    old = root.level, root.handlers
    root.level, root.handlers = min(root.level or logging.WARNING, level), [Collect(level)]
    try:
        yield said
    finally:
        root.level, root.handlers = old
