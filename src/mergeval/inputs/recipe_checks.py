"""The strict checker behind load_recipe: one recipe's YAML against mergekit and the source models.

    checked = check_recipe(load_yaml(text, path), Workspace.find())
    checked.problems  # every mistake, each naming the file and line
    checked.rewrites  # (key, absolute path) for each model reference that resolved
    checked.sources   # the source model folders, first appearance first

What it checks: unknown keys at every level (mergekit would silently ignore them), the
merge_method against mergekit's registry, each parameter's name, scope and type against the
method's declarations, parameters the method requires, the method's input contract (how many
models, whether a base_model is needed) per output slice, layer ranges against each source's
layer count, that the sources share architecture, hidden size and vocabulary, that every model
reference is a local model folder or a hub model already in the cache (nothing is downloaded),
and last mergekit's own pydantic schema.

Why: mergekit finds most of these only inside run_merge, after any download, or never. Here
they are errors found in a second, all at once. Everything reads mergekit's own declarations
(pydantic fields, the method registry, the architecture definitions), so a mergekit upgrade
changes what is accepted with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergeval.core.errors import Problem
from mergeval.core.workspace import Workspace
from mergeval.inputs.method_contracts import Group, Input, MethodContracts, Ref
from mergeval.inputs.source_models import ModelInfo, locate, model_info
from mergeval.inputs.strict_yaml import YamlDoc, unknown_key_problems
from mergeval.inputs.tokenizer_options import chat_template_problem

MERGEVAL_KEYS = ("random_seed",)
STAGE_REF = "mergeval-stage:"  # a reference to an earlier stage, as rewritten until that stage is built
DTYPES = ("float32", "float16", "bfloat16", "float64")


@dataclass
class Checked:
    problems: list[Problem] = field(default_factory=list)
    rewrites: list[tuple[tuple, str]] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    base_model: Path | None = None
    located: list[tuple[str, str | None, Path]] = field(default_factory=list)  # (raw, revision, folder)
    stages_used: list[str] = field(default_factory=list)  # earlier stages named as models (stages_checks.py)


def check_recipe(doc: YamlDoc, workspace: Workspace, stages: dict[str, ModelInfo] | None = None) -> Checked:
    """`stages`: in a multi-stage recipe, the earlier stages this one may name as a model, with
    what their output will look like; such a reference is rewritten to STAGE_REF + name."""
    return RecipeChecker(doc, workspace, stages).run()


def _fields(model: Any) -> list[str]:
    return list(model.model_fields)


class RecipeChecker(MethodContracts):
    """The walk over one mergekit-yaml recipe; moe_checks.py reuses its model references."""

    def __init__(self, doc: YamlDoc, workspace: Workspace, stages: dict[str, ModelInfo] | None = None):
        import mergekit.config as mkc
        from mergekit.merge_methods import registry

        self.mkc, self.registry = mkc, registry
        self.doc, self.ws = doc, workspace
        self.out = Checked()
        self.refs: list[Ref] = []  # merge inputs
        self.tokenizer_refs: list[Ref] = []  # models named only as tokenizer donors
        self.groups: list[Group] = []
        self.spec = None
        self.broken = False  # the recipe's shape is wrong: skip the checks that need it
        self._info: dict[Path, ModelInfo | None] = {}
        self.stages = stages or {}

    def add(self, key: tuple, message: str) -> None:
        self.out.problems.append(self.doc.problem(key, message))

    def shape(self, key: tuple, message: str) -> None:
        self.broken = True
        self.add(key, message)

    def keys(self, mapping: Any, key: tuple, allowed: list[str], where: str) -> bool:
        if not isinstance(mapping, dict):
            self.shape(key, f"{where} must be a mapping of keys ({', '.join(allowed)})")
            return False
        for p in unknown_key_problems(self.doc, mapping, key, allowed, where):
            self.out.problems.append(Problem(p.path, p.line, p.message + " (mergekit would silently ignore it)"))
        return True

    # --- walk ---------------------------------------------------------------------------
    def run(self) -> Checked:
        d = self.doc.data
        self.keys(d, (), _fields(self.mkc.MergeConfiguration) + list(MERGEVAL_KEYS), "the recipe")
        self.method(d)
        self.seed(d)
        for k in ("dtype", "out_dtype"):
            v = d.get(k)
            if v is not None and (not isinstance(v, str) or v.removeprefix("torch.") not in DTYPES):
                self.add((k,), f"{k} must be one of {', '.join(DTYPES)}, got {v!r}")
        base = self.ref(d["base_model"], ("base_model",)) if d.get("base_model") is not None else None
        forms = [k for k in ("models", "slices", "modules") if d.get(k)]
        if len(forms) != 1:
            self.shape((), "a recipe needs exactly one of models:, slices: or modules:"
                     + (f" (found {' and '.join(forms)})" if forms else ""))
        top = self.params(d.get("parameters"), ("parameters",), per_input=False)
        if d.get("models"):
            self.models_group(d["models"], ("models",), base, [top], None)
        if d.get("slices"):
            self.slices_groups(d["slices"], ("slices",), base, [top], None)
        if d.get("modules"):
            self.modules(d["modules"], base, top)
        self.tokenizer(d, base)
        if problem := chat_template_problem(d.get("chat_template")):  # else it fails after the merge
            self.add(("chat_template",), problem)
        if not self.broken:  # a missing model or an unknown key hides no other problem
            self.groups_check()
            self.compatible(d)
        if not self.out.problems:  # mergekit's own schema, for anything not checked above
            self.pydantic(d)
        self.collect_sources(base)
        return self.out

    def seed(self, d: dict) -> None:
        v = d.get("random_seed")
        if "random_seed" in d and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32):
            # numpy's and torch's seeders take at most 32 / 64 bits: refuse what a build would crash on
            self.add(("random_seed",), f"random_seed must be a whole number from 0 to 2**32-1, got {v!r}")

    def models_group(self, models: Any, key: tuple, base: Ref | None, params: list, module: str | None) -> None:
        if not isinstance(models, list):
            self.shape(key, "models: must be a list of '- model: PATH' entries")
            return
        inputs = []
        for i, m in enumerate(models):
            k = key + (i,)
            if not self.keys(m, k, _fields(self.mkc.InputModelDefinition), "a models: entry"):
                continue
            if m.get("model") is None:
                self.shape(k, "a models: entry needs model: PATH")
                continue
            ref = self.ref(m["model"], k + ("model",))
            inputs.append(Input(ref, k, self.params(m.get("parameters"), k + ("parameters",), True)))
        if base is not None and not any(base.id == i.ref.id for i in inputs):
            inputs.append(Input(base, ("base_model",), None, added_base=True))
        self.groups.append(Group(key, module, base, inputs, params))

    def slices_groups(self, slices: Any, key: tuple, base: Ref | None, params: list, module: str | None) -> None:
        if not isinstance(slices, list):
            self.shape(key, "slices: must be a list of '- sources: [...]' entries")
            return
        for i, s in enumerate(slices):
            k = key + (i,)
            if not self.keys(s, k, _fields(self.mkc.OutputSliceDefinition), "a slices: entry"):
                continue
            sbase = self.ref(s["base_model"], k + ("base_model",)) if s.get("base_model") is not None else base
            sparams = self.params(s.get("parameters"), k + ("parameters",), False)
            sources = s.get("sources")
            if not isinstance(sources, list) or not sources:
                self.shape(k, "a slice needs sources: a list of '- model: PATH, layer_range: [start, end]'")
                continue
            inputs = []
            for j, src in enumerate(sources):
                kj = k + ("sources", j)
                if not self.keys(src, kj, _fields(self.mkc.InputSliceDefinition), "a slice source"):
                    continue
                if src.get("model") is None:
                    self.shape(kj, "a slice source needs model: PATH")
                    continue
                lr = src.get("layer_range")
                if not (isinstance(lr, list) and len(lr) == 2
                        and all(isinstance(x, int) and not isinstance(x, bool) for x in lr)):
                    self.add(kj + ("layer_range",), f"layer_range must be [start, end] (whole numbers, end excluded), got {lr!r}")
                    lr = None
                ref = self.ref(src["model"], kj + ("model",))
                p = self.params(src.get("parameters"), kj + ("parameters",), True)
                inputs.append(Input(ref, kj, p, tuple(lr) if lr else None))
            self.groups.append(Group(k, module, sbase, inputs, [sparams] + params))

    def modules(self, modules: Any, base: Ref | None, top: dict) -> None:
        if not isinstance(modules, dict):
            self.shape(("modules",), "modules: must map module names to {models: ...} or {slices: ...}")
            return
        for name, m in modules.items():
            k = ("modules", name)
            if not self.keys(m, k, _fields(self.mkc.OutputModuleDefinition), f"module {name!r}"):
                continue
            mp = self.params(m.get("parameters"), k + ("parameters",), False)
            if bool(m.get("models")) == bool(m.get("slices")):
                self.shape(k, f"module {name!r} needs exactly one of models: or slices:")
            elif m.get("models"):
                self.models_group(m["models"], k + ("models",), base, [mp, top], name)
            else:
                self.slices_groups(m["slices"], k + ("slices",), base, [mp, top], name)

    def tokenizer(self, d: dict, base: Ref | None) -> None:
        def source(v: Any, key: tuple) -> None:
            if v == "base" and base is None:
                self.add(key, "tokenizer source 'base' needs a base_model:")
            elif v not in ("union", "base", None):
                self.ref(v, key, tokenizer=True)

        if "tokenizer_source" in d:
            source(d["tokenizer_source"], ("tokenizer_source",))
        t = d.get("tokenizer")
        if t is None:
            return
        if "tokenizer_source" in d:
            self.add(("tokenizer",), "give tokenizer: or tokenizer_source:, not both")
        if not self.keys(t, ("tokenizer",), _fields(self.mkc.TokenizerConfig), "tokenizer:"):
            return
        source(t.get("source"), ("tokenizer", "source"))
        from mergekit.tokenizer.config import ModelTokenEmbedding, TokenEmbeddingConfig, ZeroEmbedding

        tokens = t.get("tokens") or {}
        if not isinstance(tokens, dict):
            self.shape(("tokenizer", "tokens"), "tokens: must map each token to {source: ...}")
            return
        for tok, emb in tokens.items():
            k = ("tokenizer", "tokens", tok)
            if not self.keys(emb, k, _fields(TokenEmbeddingConfig), f"token {tok!r}"):
                continue
            src = emb.get("source")
            if isinstance(src, dict) and "kind" in src:
                kind = ModelTokenEmbedding if src["kind"] == "model_token" else ZeroEmbedding
                self.keys(src, k + ("source",), _fields(kind), f"token {tok!r} source")
                if src.get("model") is not None:
                    self.ref(src["model"], k + ("source", "model"), tokenizer=True)
            elif src is not None:
                self.ref(src, k + ("source",), tokenizer=True)

    # --- model references -----------------------------------------------------------------
    def ref(self, value: Any, key: tuple, tokenizer: bool = False) -> Ref:
        if isinstance(value, dict):
            self.keys(value, key, _fields(self.mkc.ModelReference), "a model reference")
            inner = value.get("model")
            if isinstance(inner, dict):
                self.keys(inner, key + ("model",), ["path", "revision"], "a model path")
                raw, rev, pkey = inner.get("path"), inner.get("revision"), key + ("model", "path")
            else:
                raw, rev, pkey = inner, None, key + ("model",)
            if value.get("lora") is not None:
                self.add(key + ("lora",), "LoRA references are not supported by mergeval: merge the adapter into a model folder first")
        else:
            raw, rev, pkey = value, None, key
            if isinstance(raw, str) and "+" in raw:
                self.add(key, f"{raw!r}: LoRA references (model+adapter) are not supported by mergeval: merge the adapter into a model folder first")
                raw = raw.split("+")[0]
            if isinstance(raw, str) and raw.count("@") == 1:
                raw, rev = raw.split("@")
        ref = Ref(pkey, self.doc.line(*key), str(raw))
        if isinstance(raw, str) and raw in self.stages:  # an earlier stage: built before this one
            ref.stage, ref.info = raw, self.stages[raw]
            self.out.rewrites.append((pkey, STAGE_REF + raw))
            self.out.stages_used.append(raw)
            (self.tokenizer_refs if tokenizer else self.refs).append(ref)
            return ref
        if not isinstance(raw, str) or not raw.strip():
            self.add(key, f"expected a model folder path or hub id, got {raw!r}")
            return ref
        ref.path = self.resolve(raw, rev, key)
        if ref.path is not None:
            ref.info = self.info(ref.path, key)
            if isinstance(value, dict) and value.get("override_architecture") and ref.info:
                ref.info = dataclasses.replace(ref.info, arch=value["override_architecture"])
            self.out.rewrites.append((pkey, str(ref.path)))
        (self.tokenizer_refs if tokenizer else self.refs).append(ref)
        return ref

    def resolve(self, raw: str, revision: str | None, key: tuple) -> Path | None:
        path, problem = locate(self.ws, raw, revision)
        if problem:
            self.add(key, problem)
        else:
            self.out.located.append((raw, revision, path))
        return path

    def info(self, path: Path, key: tuple) -> ModelInfo | None:
        if path not in self._info:
            try:
                self._info[path] = model_info(path)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:  # odd JSON shapes
                self.add(key, f"cannot read {path / 'config.json'}: {e!r}")
                self._info[path] = None
        return self._info[path]

    # --- the checks that need the whole picture -----------------------------------------------
    def layer_ranges(self, g: Group) -> None:
        lengths = set()
        for i in g.inputs:
            if i.layer_range is None:
                continue
            a, b = i.layer_range
            lengths.add(b - a)
            info = i.ref.info
            n = info.layers.get(g.module or _only(info.layers)) if info and info.layers else None
            if info and g.module is None and len(info.layers) > 1:
                self.add(i.key, f"{i.ref.raw} has several modules ({', '.join(info.layers)}): use modules: to slice it")
            elif not 0 <= a < b or (n is not None and b > n):
                self.add(i.key + ("layer_range",), f"layer_range [{a}, {b}] is out of bounds for {i.ref.raw}, "
                         f"which has {n if n is not None else '?'} layers (ranges are half-open [start, end) "
                         f"with 0 <= start < end <= {n if n is not None else 'layers'})")
        if len(lengths) > 1:
            self.add(g.key, f"the sources of one slice must have the same number of layers; got {sorted(lengths)}")

    def compatible(self, d: dict) -> None:
        seen: dict[str, Ref] = {}
        for r in self.refs:
            if (r.path is not None or r.stage) and r.info is not None and r.id not in seen:
                seen[r.id] = r
        refs = list(seen.values())
        if len(refs) < 2:
            return
        first = refs[0]
        aligned = d.get("tokenizer") is not None or d.get("tokenizer_source") is not None
        for r in refs[1:]:
            for what in ("arch", "hidden_size", "vocab_size"):
                a, b = getattr(first.info, what), getattr(r.info, what)
                if a is None or b is None or a == b:
                    continue
                if what == "vocab_size" and aligned:
                    continue
                label = {"arch": "architecture"}.get(what, what)
                hint = (" (set tokenizer: {source: base} to align vocabularies)" if what == "vocab_size"
                        else "")
                self.add(r.key, f"{r.raw} has {label} {b} but {first.raw} has {a}: they cannot be merged{hint}")

    def pydantic(self, d: dict) -> None:
        from pydantic import ValidationError

        data = {k: v for k, v in d.items() if k not in MERGEVAL_KEYS}
        try:
            self.mkc.MergeConfiguration.model_validate(data)
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(err["loc"])
                self.add(loc, f"{'.'.join(str(x) for x in loc)}: {err['msg']}")
        except Exception as e:  # mergekit's own validators raise RuntimeError
            self.add((), f"mergekit rejects this recipe: {e}")

    def collect_sources(self, base: Ref | None) -> None:
        refs = sorted(self.refs + self.tokenizer_refs, key=lambda r: r.line or 0)
        for r in refs:
            if r.path is not None and r.path not in self.out.sources:
                self.out.sources.append(r.path)
        self.out.base_model = base.path if base else None


def _only(layers: dict) -> str:
    return next(iter(layers))
