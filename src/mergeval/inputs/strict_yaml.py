"""YAML that remembers where everything was written, and refuses duplicate keys.

    doc = load_yaml(text, path)              # never raises for bad YAML: see doc.problems
    doc.data["slices"][0]["sources"]         # plain dicts, lists and scalars
    doc.line("slices", 0, "sources", 1)      # 1-based file line of that key / list item

PyYAML keeps the last of two equal keys and forgets where anything was; a recipe or an item
is only worth validating strictly if every complaint can say `file:line`.
"""

from __future__ import annotations

import bisect
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from mergeval.core.errors import Problem

Key = tuple  # a path into the document: ("slices", 0, "sources", 1, "layer_range")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that reports every duplicate mapping key (with its line) instead of
    silently keeping the last one. Merge keys (`<<: *anchor`) may still be overridden."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[tuple[yaml.Mark, str, yaml.Mark]] = []  # (where, key, first set)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key; the constructor reports it
                    continue
                if first is not None:
                    self.duplicates.append((key_node.start_mark, str(key), first))
                else:
                    seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


@dataclass
class YamlDoc:
    path: Path
    data: Any = None
    lines: dict[Key, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    line_offset: int = 0  # added to every YAML line: front matter starts below line 1

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self, *key: Any) -> int | None:
        """File line of the key path, or of its nearest ancestor that has one."""
        k = tuple(key)
        while k:
            if k in self.lines:
                return self.lines[k]
            k = k[:-1]
        return self.lines.get((), None)

    def problem(self, key: Iterable[Any], message: str) -> Problem:
        return Problem(self.path, self.line(*tuple(key)), message)


MAX_NODES = 100_000  # values after expanding aliases: a real recipe has a few hundred
MAX_DEPTH = 50  # nesting: a recipe is at most ~8 deep


class _LineOf:
    """File line of a character offset. PyYAML also breaks lines at NEL and U+2028/9, which
    no editor shows as a line: counting only \\n keeps every `file:line` where the user looks."""

    def __init__(self, text: str, offset: int):
        self.breaks = [m.start() for m in re.finditer("\n", text)]
        self.offset = offset

    def __call__(self, mark: yaml.Mark) -> int:
        return bisect.bisect_right(self.breaks, mark.index - 1) + 1 + self.offset


def load_yaml(text: str, path: Path, line_offset: int = 0) -> YamlDoc:
    """Parse one YAML document; YAML errors and duplicate keys become doc.problems.

    Never raises for any text: besides YAML errors, nesting that blows the stack, an alias
    that contains itself, aliases that expand to millions of values (a "billion laughs"
    bomb, which every later walk over the data would pay for) and an integer too long for
    Python to convert all become problems."""
    return _load(text, path, line_offset, several=False)[0]


def load_yaml_documents(text: str, path: Path) -> list[YamlDoc]:
    """Every `---`-separated document of the text (mergekit-multi's format), each with its
    own lines and problems, checked like load_yaml. A YAML error stops the reading there: the
    last document then carries the problem (and no data)."""
    return _load(text, path, 0, several=True)


def _load(text: str, path: Path, line_offset: int, several: bool) -> list[YamlDoc]:
    line_of = _LineOf(text, line_offset)
    doc = YamlDoc(path=path, line_offset=line_offset)
    try:  # PyYAML checks for control characters as soon as it is handed the text
        loader = StrictLoader(text)
    except yaml.reader.ReaderError as e:
        at = yaml.Mark("", e.position, 0, 0, None, None)
        doc.problems.append(Problem(path, line_of(at), f"not valid YAML: control character "
                                                       f"#x{e.character:04x} (not allowed in YAML)"))
        return [doc]
    docs: list[YamlDoc] = []
    try:
        while True:
            doc = YamlDoc(path=path, line_offset=line_offset)
            if several:  # check_node drops the stream's start; False at its end
                node = loader.get_node() if loader.check_node() else None
            else:
                node = loader.get_single_node()
            if node is None:
                return docs or [doc]
            docs.append(doc)
            _document(loader, node, doc, line_of)
            if not several or doc.data is None and doc.problems:
                return docs
    except yaml.MarkedYAMLError as e:
        mark, what = e.problem_mark or e.context_mark, e.problem or str(e)
        if e.context and e.context_mark:
            # "while parsing a flow sequence": where it started is where to look, above all
            # when the parser only noticed at the end of the file.
            what += f" ({e.context} that starts on line {line_of(e.context_mark)})"
            if "end" in (e.problem or "") or not e.problem_mark:
                mark = e.context_mark
        line = line_of(mark) if mark else 1 + line_offset
        doc.problems.append(Problem(path, line, f"not valid YAML: {what}"))
    except yaml.YAMLError as e:
        doc.problems.append(Problem(path, 1 + line_offset, f"not valid YAML: {e}"))
    except RecursionError:
        doc.problems.append(Problem(path, 1 + line_offset, f"YAML nested too deeply (more than {MAX_DEPTH} levels)"))
    except (ValueError, OverflowError) as e:  # int("9" * 5000) is refused by Python itself
        doc.problems.append(Problem(path, 1 + line_offset, f"not valid YAML: a value Python cannot read ({e})"))
    finally:
        loader.dispose()
    doc.data = None  # a document the error cut short
    return docs if docs and docs[-1] is doc else docs + [doc]


def _document(loader: StrictLoader, node: yaml.Node, doc: YamlDoc, line_of: _LineOf) -> None:
    shape = _shape_problem(node)
    if shape:
        mark, what = shape
        doc.problems.append(Problem(doc.path, line_of(mark), what))
        return
    loader.duplicates = []
    doc.data = loader.construct_document(node)
    for line, key, first in loader.duplicates:
        doc.problems.append(
            Problem(
                doc.path,
                line_of(line),
                f"duplicate key {key!r} (first set on line {line_of(first)}); "
                "YAML would silently keep only the last one",
            )
        )
    doc.lines[()] = line_of(node.start_mark)
    _record_lines(node, (), doc.lines, line_of)


def _shape_problem(root: yaml.Node) -> tuple[yaml.Mark, str] | None:
    """(where, what) if the node graph is cyclic, too deep or too big once aliases expand."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:
            raise _Shape(node.start_mark, "a YAML alias refers to the value that contains it")
        if depth > MAX_DEPTH:
            raise _Shape(node.start_mark, f"YAML nested too deeply (more than {MAX_DEPTH} levels)")
        if node.tag.endswith(":int") and len(str(node.value)) > 1000:
            raise _Shape(node.start_mark, f"a number with {len(node.value)} digits: not a value any setting takes")
        active.add(id(node))
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(n, depth + 1) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        active.discard(id(node))
        if total > MAX_NODES:
            raise _Shape(node.start_mark, f"YAML aliases expand to over {MAX_NODES:,} values "
                                          "(an alias bomb?); write the values out")
        sizes[id(node)] = total
        return total

    try:
        size(root, 0)
    except _Shape as e:
        return e.args
    return None


class _Shape(Exception):
    pass


def _record_lines(node: yaml.Node, key: Key, lines: dict[Key, int], line_of: _LineOf) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            # Key paths use the constructed key (an int key stays an int).
            sub = key + (_scalar(key_node),)
            lines[sub] = line_of(key_node.start_mark)
            _record_lines(value_node, sub, lines, line_of)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[key + (i,)] = line_of(item.start_mark)
            _record_lines(item, key + (i,), lines, line_of)


_KEY_READER = yaml.SafeLoader("")


def _scalar(node: yaml.ScalarNode) -> Any:
    try:
        return _KEY_READER.construct_object(node)
    except yaml.YAMLError:
        return node.value
    finally:
        _KEY_READER.constructed_objects.clear()


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """' (did you mean parameters?)' when a known word is close, else ''."""
    close = difflib.get_close_matches(str(word), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_key_problems(doc: YamlDoc, mapping: dict, key: tuple, allowed: Iterable[str], where: str) -> list[Problem]:
    """One problem per key of `mapping` (found at `key` in the document) not in `allowed`."""
    allowed = list(allowed)
    return [
        doc.problem(key + (k,), f"unknown key {k!r} in {where}{did_you_mean(k, allowed)}; "
                    f"allowed: {', '.join(allowed)}")
        for k in mapping
        if k not in allowed
    ]
