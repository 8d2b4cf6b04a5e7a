"""`mergeval expand SPACE --grid`: every point of a space's grid as a plain recipe file.

    write_grid(Path("merge_configs/search/toy_ties.yaml"), ws)   # → merge_configs/toy_ties_grid/*.yaml

A float range needs a step or a count to have a grid: `{search: [0.2, 1.0], step: 0.2}` (the
sampler uses that step too) or `{search: [0.2, 1.0], grid: 5}` (5 evenly spaced points, the
ends included; the sampler ignores it). A layer_range bound's grid is every whole number in
its range (or every `step`-th), a choice's grid its options. Each file is named by its values
in the order the dimensions are written (`toy_ties-0.5-0.8.yaml`) and says them in its header;
the folder then sweeps like any folder of recipes. A folder holding other recipes is refused,
so that a sweep of it is exactly the grid.
"""

from __future__ import annotations

from pathlib import Path

from mergeval.core import store
from mergeval.core.errors import InputError, Problem
from mergeval.core.workspace import Workspace
from mergeval.search.space import grid, load_space, recipe_text, value_label


def write_grid(space_path: Path, workspace: Workspace, out: Path | None = None) -> list[Path]:
    space = load_space(space_path, workspace)
    points = grid(space)
    out = out or workspace.configs / f"{space.stem}_grid"
    files: dict[str, str] = {}
    for assignment, instance in points:
        stem = "-".join([space.stem, *(value_label(v) for v in assignment.values())])
        name, n = f"{stem}.yaml", 2
        while name in files:
            name, n = f"{stem}-{n}.yaml", n + 1
        values = "\n".join(f"  {k} = {v}" for k, v in assignment.items())
        files[name] = recipe_text(instance, header=f"A grid point of the search space {space.path.name}:\n{values}")
    stale = sorted(p.name for p in out.glob("*.y*ml") if p.name not in files) if out.is_dir() else []
    if stale:
        raise InputError([Problem(out, None, f"holds recipes that are not this grid's ({', '.join(stale[:5])}"
                                             f"{', ...' if len(stale) > 5 else ''}): remove them or pick another --out")])
    for name, text in files.items():
        store.write_atomic(out / name, text)
    return [out / name for name in files]
