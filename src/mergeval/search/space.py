"""A search space: a mergekit recipe in which some values are ranges or choices.

    space = load_space(Path("merge_configs/search/toy_ties.yaml"), Workspace.find())
    space.dims                              # the dimensions, in the order they are written
    instance = space.instantiate(pick)      # a plain recipe (dict), pick(dim) giving each value
    text = recipe_text(instance)            # plain mergekit YAML, what a trial builds

What may stand where a recipe has a value:
    weight: {search: [0.5, 1.5]}            # a float range, for any numeric parameter (also
                                            # inside a gradient list or a conditional value:)
    layer_range: [0, {search: [2, 4]}]      # a layer_range bound: a range over whole numbers
    merge_method: {choose: [ties, task_arithmetic]}   # one of several values, anywhere: a method,
                                            # a base model, a list of values, a whole block
    density: {search: [0.2, 1.0], step: 0.1}          # sampled on that step (and gridded on it)
    density: {search: [0.2, 1.0], grid: 5}            # only for `mergeval expand --grid`: 5 points
A choice's options may hold ranges and choices of their own: they count only when chosen.

A space is checked strictly before anything is built: its own keys and ranges here (every
problem file:line), then mergekit's rules by the plain recipe checker (recipe_checks.py) run on
concrete instances of the space, every range at its low end and then at its high end, once per
combination of the choices, so a range that leaves what the method accepts is refused at its
line, as a wrong value in a recipe would be.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from mergeval.core.errors import InputError, Problem
from mergeval.core.hashing import content_hash
from mergeval.core.workspace import Workspace
from mergeval.engine import merge_server
from mergeval.inputs.strict_yaml import YamlDoc, load_yaml, unknown_key_problems
from mergeval.inputs.text_files import read_text_file

RANGE_KEYS = ("search", "step", "grid")
CHOICE_KEYS = ("choose",)
MAX_COMBINATIONS = 256  # choice combinations checked (each is two recipe checks)
MAX_GRID = 1000  # recipes `expand --grid` writes at most


@dataclass(frozen=True)
class Dim:
    """One dimension of the space: a float or integer range, or a choice among options."""

    name: str  # where it stands: "models.0.parameters.weight"; inside option i of a choice: "x[i].y"
    kind: str  # "float", "int" or "choice"
    line: int | None
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    grid: int | None = None
    options: tuple = ()  # a choice's options as written (ranges inside them are Dim nodes)

    @property
    def labels(self) -> list:
        """What Optuna and trials.csv see of a choice: the values themselves when all are plain
        scalars (a method's name, a path), else the option's index."""
        if all(isinstance(o, (str, int, float, bool)) or o is None for o in self.options):
            return list(self.options)
        return list(range(len(self.options)))

    def option(self, label: Any) -> Any:
        return self.options[self.labels.index(label)]

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(self.labels)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), step=self.step)

    def concrete(self, value: Any) -> Any:
        """A sampled value as the recipe holds it: on its step exactly (0.6, not 0.6000000000000001)."""
        if self.kind == "float" and self.step is not None:
            return _tidy(self.low + round((value - self.low) / self.step) * self.step)
        return value

    def grid_values(self) -> list:
        if self.kind == "choice":
            return self.labels
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is not None:
            n = round((self.high - self.low) / self.step)
            return [_tidy(self.low + i * self.step) for i in range(n + 1)]
        return [_tidy(self.low + i * (self.high - self.low) / (self.grid - 1)) for i in range(self.grid)]


def _tidy(x: float) -> float:
    """0.30000000000000004 → 0.3: grid values as a person writes them."""
    return float(f"{x:.10g}")


@dataclass(frozen=True)
class Space:
    path: Path
    text: str
    tree: Any  # the recipe with Dim nodes where ranges and choices stand
    dims: tuple[Dim, ...]  # every dimension, choices' inner ones included, in document order
    sources: tuple[Path, ...]  # every source model any instance can name

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def continuous(self) -> bool:
        """No choice anywhere: what CMA-ES needs."""
        return all(d.kind != "choice" for d in self.dims)

    def fingerprint(self) -> str:
        """The space's content (comments and formatting aside): a study's identity."""
        return content_hash(_plain(self.tree))

    def instantiate(self, pick: Callable[[Dim], Any]) -> dict:
        return instantiate(self.tree, pick)


def _plain(node: Any) -> Any:
    if isinstance(node, Dim):
        return {"dim": node.name, "kind": node.kind, "low": node.low, "high": node.high, "step": node.step,
                "options": [_plain(o) for o in node.options]}
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def instantiate(node: Any, pick: Callable[[Dim], Any], lines: dict | None = None, at: tuple = (),
                space_key: tuple = (), doc: YamlDoc | None = None) -> Any:
    """The concrete value of `node`; with `lines`, also each instance key's line in the space."""
    if lines is not None and doc is not None and space_key in doc.lines:
        lines[at] = doc.lines[space_key]
    if isinstance(node, Dim):
        value = pick(node)
        if node.kind != "choice":
            return value
        i = node.labels.index(value)
        return instantiate(node.options[i], pick, lines, at, space_key + ("choose", i), doc)
    if isinstance(node, dict):
        return {k: instantiate(v, pick, lines, at + (k,), space_key + (k,), doc) for k, v in node.items()}
    if isinstance(node, list):
        return [instantiate(v, pick, lines, at + (i,), space_key + (i,), doc) for i, v in enumerate(node)]
    return node


def recipe_text(instance: dict, header: str = "") -> str:
    """Plain mergekit YAML; leaf lists stay on one line (layer_range: [0, 4])."""
    body = yaml.safe_dump(instance, sort_keys=False, default_flow_style=None, allow_unicode=True)
    return "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines()) + body


# --- reading ------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, doc: YamlDoc):
        self.doc = doc
        self.problems: list[Problem] = []
        self.dims: list[Dim] = []

    def add(self, key: tuple, message: str) -> None:
        self.problems.append(self.doc.problem(key, message))

    def node(self, value: Any, key: tuple, name: list[str], where: str) -> Any:
        """`where`: 'parameter', 'layer_range' or 'other' — what a range here would stand for."""
        if isinstance(value, dict) and "search" in value:
            return self.range(value, key, name, where)
        if isinstance(value, dict) and "choose" in value:
            return self.choice(value, key, name, where)
        if isinstance(value, dict):
            return {k: self.node(v, key + (k,), name + [str(k)], _where(where, k)) for k, v in value.items()}
        if isinstance(value, list):
            inner = "layer_range" if where == "layer_range_list" else where
            return [self.node(v, key + (i,), name + [str(i)], inner) for i, v in enumerate(value)]
        return value

    def range(self, value: dict, key: tuple, name: list[str], where: str) -> Any:
        self.problems += unknown_key_problems(self.doc, value, key, RANGE_KEYS, "a {search: [low, high]} range")
        label = ".".join(name)
        if where not in ("parameter", "layer_range"):
            self.add(key, f"{label}: a {{search: [low, high]}} range stands only for a numeric parameter value "
                     "(under parameters:) or a layer_range bound; use {choose: [...]} for other values")
            return None
        ends = value["search"]
        if not (isinstance(ends, list) and len(ends) == 2 and all(_number(x) for x in ends)):
            self.add(key + ("search",), f"{label}: search: must be [low, high], two numbers, got {ends!r}")
            return None
        low, high = ends
        if not all(math.isfinite(x) for x in ends):
            self.add(key + ("search",), f"{label}: the range's ends must be finite numbers, got {ends!r}")
            return None
        if low >= high:
            what = "empty" if low == high else "inverted"
            self.add(key + ("search",), f"{label}: an {what} range [{low}, {high}]: low must be below high")
            return None
        kind = "int" if where == "layer_range" else "float"
        if kind == "int" and not all(isinstance(x, int) for x in ends):
            self.add(key + ("search",), f"{label}: a layer_range bound ranges over whole numbers, got {ends!r}")
            return None
        step, grid = value.get("step"), value.get("grid")
        if step is not None and grid is not None:
            self.add(key, f"{label}: give step: or grid:, not both")
            return None
        if step is not None:
            if not _number(step) or not math.isfinite(step) or step <= 0 or (kind == "int" and not isinstance(step, int)):
                self.add(key + ("step",), f"{label}: step must be a positive {'whole ' if kind == 'int' else ''}number, "
                         f"got {step!r}")
                return None
            n = (high - low) / step
            if abs(n - round(n)) > 1e-9:
                self.add(key + ("step",), f"{label}: step {step} does not divide the range [{low}, {high}] evenly")
                return None
        if grid is not None and (not isinstance(grid, int) or isinstance(grid, bool) or grid < 2 or kind == "int"):
            self.add(key + ("grid",), f"{label}: grid is the number of grid points (2 or more) of a float range, "
                     f"got {grid!r}" + (" (a layer_range bound's grid is every whole number in it)" if kind == "int" else ""))
            return None
        low, high = (low, high) if kind == "int" else (float(low), float(high))
        dim = Dim(label, kind, self.doc.line(*key), low, high, step, grid)
        self.dims.append(dim)
        return dim

    def choice(self, value: dict, key: tuple, name: list[str], where: str) -> Any:
        self.problems += unknown_key_problems(self.doc, value, key, CHOICE_KEYS, "a {choose: [...]} choice")
        label = ".".join(name) or "recipe"
        options = value["choose"]
        if not isinstance(options, list) or len(options) < 2:
            self.add(key + ("choose",), f"{label}: choose: must be a list of two or more options, got {options!r}")
            return None
        seen: dict[str, int] = {}
        for i, o in enumerate(options):
            j = seen.setdefault(json.dumps(o, sort_keys=True, default=str), i)
            if j != i:
                self.add(key + ("choose", i), f"{label}: option {i + 1} repeats option {j + 1}")
        dim = Dim(label, "choice", self.doc.line(*key))
        self.dims.append(dim)
        parsed = tuple(self.node(o, key + ("choose", i), name[:-1] + [f"{name[-1] if name else 'recipe'}[{i}]"], where)
                       for i, o in enumerate(options))
        final = Dim(dim.name, dim.kind, dim.line, options=parsed)
        self.dims[self.dims.index(dim)] = final
        return final


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _where(where: str, key: Any) -> str:
    if key == "parameters":
        return "parameter"
    if key == "layer_range":
        return "layer_range_list"
    return where if where == "parameter" else "other"


def read_space(path: Path, workspace: Workspace) -> tuple[Space | None, list[Problem]]:
    """Parse and check a space file: (space, []) or (None, every problem, file:line)."""
    text, problems = read_text_file(path, "a search space")
    if text is None:
        return None, problems
    doc = load_yaml(text, path)
    if doc.problems or not isinstance(doc.data, dict):
        return None, doc.problems or [Problem(path, doc.line() or 1, "a search space is a recipe (a YAML mapping) "
                                              "with {search: [low, high]} ranges or {choose: [...]} choices")]
    parser = _Parser(doc)
    tree = parser.node(doc.data, (), [], "other")
    if parser.problems:
        return None, sorted(parser.problems, key=lambda p: p.line or 0)
    if not parser.dims:
        return None, [Problem(path, 1, "no {search: [low, high]} range or {choose: [...]} choice: this is a "
                                       "plain recipe (sweep it) not a search space")]
    # in the merge server, which has mergekit imported for the trials' builds anyway
    sources, problems = merge_server.call(_check_instances, doc, tree, parser.dims, workspace)
    if problems:
        return None, problems
    return Space(path, text, tree, tuple(parser.dims), tuple(sources)), []


def load_space(path: Path, workspace: Workspace) -> Space:
    space, problems = read_space(path, workspace)
    if problems or space is None:
        raise InputError(problems)
    return space


def choice_combinations(tree: Any) -> list[dict]:
    """Every combination of the choices that can meet in one instance ({dim name: label})."""
    if isinstance(tree, Dim):
        if tree.kind != "choice":
            return [{}]
        return [{tree.name: label, **rest} for label, o in zip(tree.labels, tree.options)
                for rest in choice_combinations(o)]
    children = list(tree.values()) if isinstance(tree, dict) else tree if isinstance(tree, list) else []
    combos = [{}]
    for child in children:
        combos = [{**a, **b} for a in combos for b in choice_combinations(child)]
        if len(combos) > MAX_COMBINATIONS:
            return combos
    return combos


def _check_instances(doc: YamlDoc, tree: Any, dims: list[Dim], workspace: Workspace):
    """The plain recipe checker on every range's low and high end, per choice combination."""
    from mergeval.inputs.recipe_checks import check_recipe

    combos = choice_combinations(tree)
    if len(combos) > MAX_COMBINATIONS:
        return [], [Problem(doc.path, 1, f"more than {MAX_COMBINATIONS} combinations of choices: each is checked "
                                         "before any build; split the space into several files")]
    seen, problems, sources = set(), [], []
    for combo, end in itertools.product(combos, ("low", "high")):
        def pick(d: Dim, combo=combo, end=end):
            return combo[d.name] if d.kind == "choice" else getattr(d, end)

        lines: dict = {}
        met: list[Dim] = []
        data = instantiate(tree, lambda d, pick=pick: met.append(d) or pick(d), lines, doc=doc)
        checked = check_recipe(YamlDoc(doc.path, data, lines), workspace)
        sources += [p for p in checked.sources if p not in sources]
        context = f"every range at its {end} end" + "".join(f", {k} = {v}" for k, v in combo.items())
        for p in checked.problems + _not_numeric(doc, data, met):
            if (p.line, p.message) not in seen:
                seen.add((p.line, p.message))
                problems.append(Problem(p.path, p.line, f"{p.message} (in the instance with {context})"))
    return sources, sorted(problems, key=lambda p: p.line or 0)


def _not_numeric(doc: YamlDoc, data: dict, met: list[Dim]) -> list[Problem]:
    """A float range over a parameter the method declares bool or int: pydantic would take
    0.37 as True, so the check on the ends alone would let it through."""
    from mergekit.merge_methods import registry

    try:
        spec = registry.get(data.get("merge_method")).spec
    except (RuntimeError, KeyError, TypeError):
        return []  # an unknown method is the recipe checker's to report
    types = {p.name: p.value_type for p in spec.parameters}
    problems = []
    for d in met:
        parts = [part.split("[")[0] for part in d.name.split(".")]
        if d.kind != "float" or "parameters" not in parts:
            continue
        at = len(parts) - 1 - parts[::-1].index("parameters")
        name = parts[at + 1] if at + 1 < len(parts) else None
        kind = types.get(name)
        if kind in (bool, int):
            problems.append(Problem(doc.path, d.line, f"{d.name}: {spec.name} declares {name} a {kind.__name__}, "
                                                      "not a number to range over; use {choose: [...]}"))
    return problems


# --- grids ------------------------------------------------------------------------------------
def grid(space: Space) -> list[tuple[dict, dict]]:
    """Every (assignment {dim: value}, instance) of the space's grid; an InputError names each
    float range without a step: or grid: count."""
    missing = [Problem(space.path, d.line, f"{d.name}: a grid needs step: or grid: on this range "
                                           "(e.g. {search: [0.2, 1.0], grid: 5})")
               for d in space.dims if d.kind == "float" and d.step is None and d.grid is None]
    if missing:
        raise InputError(missing)
    points = _grid_points(space.tree)
    if len(points) > MAX_GRID:
        raise InputError([Problem(space.path, 1, f"the grid has {len(points)} points, more than {MAX_GRID}: "
                                                 "use a coarser step or grid count")])
    return [(a, space.instantiate(lambda d, a=a: a[d.name])) for a in points]


def _grid_points(tree: Any) -> list[dict]:
    if isinstance(tree, Dim):
        if tree.kind != "choice":
            return [{tree.name: v} for v in tree.grid_values()]
        return [{tree.name: label, **rest} for label, o in zip(tree.labels, tree.options) for rest in _grid_points(o)]
    children = list(tree.values()) if isinstance(tree, dict) else tree if isinstance(tree, list) else []
    points = [{}]
    for child in children:
        points = [{**a, **b} for a in points for b in _grid_points(child)]
        if len(points) > MAX_GRID:
            return points
    return points


def value_label(value: Any) -> str:
    """A value as it goes into a grid file's name: 0.5, ties, zoo-base."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text.rsplit("/", 1)[-1])[:40] or "x"
