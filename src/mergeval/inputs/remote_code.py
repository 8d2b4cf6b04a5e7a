"""Code from the internet: which models may run the Python files shipped in their own folder.

    mergeval sweep merge_configs/mine --trust-remote-code phi_base --trust-remote-code my_merge
    # judge/proctora.yaml:  trust_remote_code: true     (the judge's own opt-in)
    # mergeval canary zoo/odd_model --trust-remote-code  (the one model it loads)

A model folder can carry Python that config.json's `auto_map` points at; transformers and
mergekit import it only with trust_remote_code=True. mergeval passes False to every loader
unless the user names that very model, because running a downloaded folder's code is running
a stranger's program on the box. Validation never imports model code at all: it reads
config.json as JSON (source_models.py).

A name is a model as the ranking names it (a merge's recipe stem, a source's directory name)
or a source's path. Naming a merge also runs its sources' code while mergekit reads them, so
each of its sources must be named too: a model not named never runs its code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mergeval.core.errors import Problem

OPTION = "--trust-remote-code"


def named(candidates, names: Iterable[str], resolve) -> tuple[set[str], list[Problem]]:
    """(names of the candidates the user trusts, problems with the names given).

    `resolve` turns a user-written path into an absolute one (Workspace.resolve).
    """
    by_path = {Path(c.path).resolve(): c.name for c in candidates if c.kind == "source"}
    known = {c.name for c in candidates}
    trusted, problems = set(), []
    for raw in names:
        name = raw if raw in known else by_path.get(Path(resolve(raw)).resolve())
        if name is None:
            problems.append(Problem(Path(OPTION), None, f"no model named {raw!r} in this sweep; "
                                    f"models: {', '.join(sorted(known))}"))
        else:
            trusted.add(name)
    for c in candidates:
        missing = [p for p in c.parents if p not in trusted]
        if c.name in trusted and missing:
            problems.append(Problem(Path(OPTION), None, f"merging {c.name} with its own code runs the code of its "
                                    f"sources too: name {', '.join(missing)} as well ({OPTION} NAME)"))
    return trusted, problems


def report_lines(plan) -> list[str]:
    """Who ran with remote code on, as sentences for the reports; empty when nobody did."""
    lines = [f"`{c.name}` ({'merge' if c.kind == 'merge' else 'source model'}): loaded with "
             "trust_remote_code on, so the Python in its folder ran." for c in plan.candidates
             if c.trust_remote_code]
    if plan.judge.trust_remote_code:
        lines.append(f"the judge `{plan.judge.model}`: loaded with trust_remote_code on "
                     "(judge settings), so the Python in its folder ran.")
    return lines


def run_entry(plan) -> list[dict]:
    """run.json's `remote_code`: one record per model that ran its own code (absent when none)."""
    out = [{"model": c.name, "role": c.kind} for c in plan.candidates if c.trust_remote_code]
    if plan.judge.trust_remote_code:
        out.append({"model": plan.judge.model, "role": "judge"})
    return out
