"""mergekit-multi multi-stage recipes: several merges in one file, checked before any is built.

    checked = check_stages(load_yaml_documents(text, path), Workspace.find())
    order = stage_order(docs)       # document indexes, each stage after the stages it names

mergekit-multi's format: `---`-separated YAML documents, each a mergekit-yaml recipe with a
`name:`; a later stage names an earlier one as a model, and one document (the final merge)
may go without a name:

    name: both_skills
    merge_method: ties
    base_model: zoo/base
    models: [...]
    ---
    merge_method: slerp              # the final merge: ranked under the file's stem
    base_model: both_skills          # the stage above, once built
    ...

Each stage is checked like a plain recipe (recipe_checks.py), with every earlier stage it
names standing for a model whose shape is known before it is built (its first input's
architecture, hidden size and vocabulary; its layer count from its slices). On top, at their
file:line: stage names (present, plain labels, unique; at most one document without one),
references to a stage the file does not have, stages that name each other in a cycle, and
stages that the final merge does not use (mergeval builds and ranks the final merge only).
A stage reference is rewritten to STAGE_REF + name; the engine puts the stage's output
folder there once it is built.
"""

from __future__ import annotations

import re
from typing import Any

from mergeval.core.errors import Problem
from mergeval.inputs.recipe_checks import STAGE_REF, Checked, RecipeChecker
from mergeval.inputs.source_models import ModelInfo
from mergeval.inputs.strict_yaml import YamlDoc, did_you_mean

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # it names a folder of the stage's output


def is_multi_stage(docs: list[YamlDoc]) -> bool:
    """Several documents. (One document with a name: is a plain recipe with an unknown key.)"""
    return len(docs) > 1


def stage_name(doc: YamlDoc) -> str | None:
    name = doc.data.get("name") if isinstance(doc.data, dict) else None
    return name if isinstance(name, str) else None


def final_index(docs: list[YamlDoc]) -> int:
    """The final merge: the document without a name, else the last one."""
    return next((i for i, d in enumerate(docs) if isinstance(d.data, dict) and "name" not in d.data), len(docs) - 1)


MODEL_KEYS = ("model", "base_model", "source_model", "tokenizer_source", "source", "path")  # where a model is named


def named_stages(data: Any, names: set[str]) -> list[str]:
    """The stage names a document uses as models, in order: a string under one of MODEL_KEYS
    (so a stage named `linear` is not taken for `merge_method: linear`)."""
    found: list[str] = []

    def walk(v: Any, key: Any) -> None:
        if isinstance(v, str):
            if key in MODEL_KEYS and v in names and v not in found:
                found.append(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, k)
        elif isinstance(v, list):
            for x in v:
                walk(x, key)

    walk({k: v for k, v in data.items() if k != "name"} if isinstance(data, dict) else data, None)
    return found


def stage_order(docs: list[YamlDoc]) -> list[int]:
    """Document indexes, every stage after those it names (document order otherwise); a stage
    in a cycle is left out."""
    names = {stage_name(d): i for i, d in enumerate(docs) if stage_name(d)}
    deps = {i: [names[n] for n in named_stages(d.data, set(names))] for i, d in enumerate(docs)}
    order: list[int] = []
    state: dict[int, str] = {}

    def visit(i: int) -> bool:
        if state.get(i) == "done":
            return True
        if state.get(i) == "open":
            return False
        state[i] = "open"
        ok = all(visit(j) for j in deps[i])
        state[i] = "done" if ok else "cycle"
        if ok:
            order.append(i)
        return ok

    for i in range(len(docs)):
        visit(i)
    return order


def check_stages(docs: list[YamlDoc], workspace) -> Checked:
    out = Checked()
    problems = out.problems
    names: dict[str, int] = {}
    unnamed: list[int] = []
    for i, d in enumerate(docs):
        if not isinstance(d.data, dict):
            problems.append(d.problem((), "each document of a multi-stage recipe is a mergekit-yaml recipe "
                                          "(a mapping with name:, merge_method:, models: ...)"))
            continue
        if "experts" in d.data:
            problems.append(d.problem(("experts",), "a stage of a multi-stage recipe is a mergekit-yaml merge: "
                                                    "mergekit-multi builds no MoE stages (put the MoE in a file of its own)"))
        if "name" not in d.data:
            unnamed.append(i)
            if len(unnamed) > 1:
                problems.append(d.problem((), f"a second document without name: (the first is on line "
                                              f"{docs[unnamed[0]].line()}): only the final merge may go without one"))
            continue
        name = d.data["name"]
        if not isinstance(name, str) or not NAME.fullmatch(name):
            problems.append(d.problem(("name",), f"a stage name is a plain label (letters, digits, . _ -), got {name!r}"))
        elif name in names:
            problems.append(d.problem(("name",), f"duplicate stage name {name!r} (first used on line "
                                                 f"{docs[names[name]].line('name')}): stage names must differ"))
        else:
            names[name] = i
    if problems:
        return out
    final = final_index(docs)
    order = stage_order(docs)
    for i, d in enumerate(docs):
        cycle = _cycle(docs, i, set(names)) if i not in order else None
        if cycle:  # (a stage that only uses a stage of a cycle is not itself reported)
            problems.append(d.problem(("name",), f"stage {stage_name(d)!r} is part of a cycle: "
                                      + " → ".join(f"{stage_name(docs[j])} (line {docs[j].line('name')})" for j in cycle)
                                      + " name each other; a stage can only use stages built before it"))
    used = _used_by(docs, final, set(names))
    for name, i in names.items():
        if i not in used and i in order:
            problems.append(docs[i].problem(("name",), f"stage {name!r} is not used by the final merge (line "
                                            f"{docs[final].line()}): mergeval builds and ranks only the final merge "
                                            "and what it is made of"))
    if problems:
        return out
    infos: dict[str, ModelInfo | None] = {n: None for n in names}
    for i in order:
        d = docs[i]
        doc = YamlDoc(d.path, {k: v for k, v in d.data.items() if k != "name"}, d.lines)
        checker = _StageChecker(doc, workspace, infos)
        checked = checker.run()
        problems += checked.problems
        out.rewrites += [((i,) + key, value) for key, value in checked.rewrites]
        out.located += checked.located
        out.stages_used += [n for n in checked.stages_used if n not in out.stages_used]
        for p in checked.sources:
            if p not in out.sources:
                out.sources.append(p)
        if stage_name(d):
            infos[stage_name(d)] = output_info(checker)
        if i == final:
            out.base_model = checked.base_model
    return out


def output_info(checker: RecipeChecker) -> ModelInfo | None:
    """What a stage's output will look like, as mergekit writes it: the config of its base
    model (else its first input), with the layers its slices add up to."""
    refs = [r for r in checker.refs if r.info is not None]
    if not refs:
        return None
    first, d = refs[0].info, checker.doc.data
    layers = dict(first.layers)
    slices = d.get("slices")
    if isinstance(slices, list) and all(isinstance(s, dict) for s in slices):
        try:
            layers = {"default": sum(s["sources"][0]["layer_range"][1] - s["sources"][0]["layer_range"][0]
                                     for s in slices)}
        except (KeyError, IndexError, TypeError):
            pass
    aligned = d.get("tokenizer") is not None or d.get("tokenizer_source") is not None
    return ModelInfo(first.arch, first.model_type, first.hidden_size, None if aligned else first.vocab_size, layers)


class _StageChecker(RecipeChecker):
    def resolve(self, raw, revision, key):
        path = super().resolve(raw, revision, key)
        if path is None and self.out.problems:
            p = self.out.problems[-1]
            stages = ", ".join(self.stages)
            self.out.problems[-1] = Problem(p.path, p.line, f"{p.message}; nor is it a stage of this file"
                                            f"{did_you_mean(raw, self.stages)} (stages: {stages})")
        return path


def _used_by(docs: list[YamlDoc], final: int, names: set[str]) -> set[int]:
    index = {stage_name(d): i for i, d in enumerate(docs) if stage_name(d)}
    seen, todo = set(), [final]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo += [index[n] for n in named_stages(docs[i].data, names)]
    return seen


def _cycle(docs: list[YamlDoc], start: int, names: set[str]) -> list[int] | None:
    """A path of stages from `start` back to itself (start at both ends), or None."""
    index = {stage_name(d): i for i, d in enumerate(docs) if stage_name(d)}
    seen = {start}  # each stage walked once: finds a way back if there is one, in linear time

    def walk(i: int, path: list[int]) -> list[int] | None:
        for j in (index[n] for n in named_stages(docs[i].data, names)):
            if j == start:
                return path + [j]
            if j not in seen:
                seen.add(j)
                found = walk(j, path + [j])
                if found:
                    return found
        return None

    return walk(start, [start])


__all__ = ["STAGE_REF", "check_stages", "final_index", "is_multi_stage", "named_stages", "stage_name", "stage_order"]
