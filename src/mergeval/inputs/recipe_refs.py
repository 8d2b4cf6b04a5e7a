"""A recipe that names another recipe of the sweep as a model, by its file stem.

    # merge_configs/mine/ties_then_slerp.yaml
    merge_method: slerp
    base_model: ties_d08          # merge_configs/mine/ties_d08.yaml, once built
    models: [{model: ties_d08}, {model: zoo/spec_add}]
    parameters: {t: 0.3}

It is read as a multi-stage recipe whose earlier stages are the named recipe's (mergekit-multi's
way, stages_checks.py), so it is checked against what that merge will look like, built stage by
stage under content keys (stage_builds.py) and ranked against the models the stages start from.
A name that is also a model folder stays the folder. A MoE recipe cannot be named (mergekit-multi
builds no MoE stages); recipes that name each other are refused, at the line that names them.
"""

from __future__ import annotations

from pathlib import Path

from mergeval.core.errors import Problem
from mergeval.inputs.source_models import locate
from mergeval.inputs.stages_checks import final_index, named_stages
from mergeval.inputs.strict_yaml import YamlDoc, load_yaml_documents
from mergeval.inputs.text_files import read_text_file


def named_recipes(doc: YamlDoc, own: str, siblings: dict[str, Path], workspace) -> list[str]:
    """The other recipes' stems this document uses as models (and that are no model folder)."""
    names = set(siblings) - {own}
    return [n for n in named_stages(doc.data, names) if locate(workspace, n, None)[0] is None]


def with_named_recipes(path: Path, docs: list[YamlDoc], siblings: dict[str, Path], workspace,
                       seen: tuple[str, ...] = ()) -> tuple[list[YamlDoc], list[str], list[Problem]]:
    """(documents: every named recipe's stages first, its final merge named by its stem, then
    these; the texts read; problems). Unchanged when the recipe names no other recipe."""
    seen = seen + (path.stem,)
    before: list[YamlDoc] = []
    texts: list[str] = []
    problems: list[Problem] = []
    for doc in docs:
        for stem in named_recipes(doc, path.stem, siblings, workspace):
            at = _line_naming(doc, stem)
            if stem in seen:
                problems.append(Problem(path, at, f"recipes {' → '.join(seen + (stem,))} name each other as models: "
                                                  "a recipe can only use recipes built before it"))
                continue
            if any(d.path == siblings[stem] for d in before):
                continue
            text, found = read_text_file(siblings[stem], "a recipe")
            theirs = load_yaml_documents(text, siblings[stem]) if text is not None else []
            if text is None or any(d.data is None or not isinstance(d.data, dict) for d in theirs):
                problems.append(Problem(path, at, f"recipe {stem!r}, named here as a model, cannot be read "
                                                  f"(see the problems of {siblings[stem]})"))
                continue
            if len(theirs) == 1 and "merge_method" not in theirs[0].data:
                problems.append(Problem(path, at, f"recipe {stem!r} is a MoE: it cannot be an earlier stage of "
                                                  "another merge (mergekit-multi builds no MoE stages)"))
                continue
            last = final_index(theirs)
            theirs[last] = YamlDoc(theirs[last].path, {"name": stem, **{k: v for k, v in theirs[last].data.items()
                                                                        if k != "name"}}, theirs[last].lines)
            deeper, more, found = with_named_recipes(siblings[stem], theirs, siblings, workspace, seen)
            before += deeper
            texts += [text] + more
            problems += found
    unique, keys = [], set()
    for d in before + docs:  # a recipe two others name (a diamond) is one set of stages
        if (d.path, d.line()) not in keys:
            keys.add((d.path, d.line()))
            unique.append(d)
    return unique, texts, problems


def _line_naming(doc: YamlDoc, stem: str) -> int | None:
    """The line of the first model key whose value is `stem`."""
    for key, line in sorted(doc.lines.items(), key=lambda kv: kv[1]):
        node = doc.data
        try:
            for k in key:
                node = node[k]
        except (KeyError, IndexError, TypeError):
            continue
        if node == stem:
            return line
    return doc.line()
