"""YAML that remembers where everything was written, and refuses duplicate keys.

    doc = load_yaml(text, path)              # never raises for bad YAML: see doc.problems
    doc.data["slices"][0]["sources"]         # plain dicts, lists and scalars
    doc.line("slices", 0, "sources", 1)      # 1-based file line of that key / list item

PyYAML keeps the last of two equal keys and forgets where anything was; a recipe or an item
is only worth validating strictly if every complaint can say `file:line`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from mergeval.errors import Problem

Key = tuple  # a path into the document: ("slices", 0, "sources", 1, "layer_range")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that reports every duplicate mapping key (with its line) instead of
    silently keeping the last one. Merge keys (`<<: *anchor`) may still be overridden."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[tuple[int, str, int]] = []  # (line, key, first line), 0-based

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key; the constructor reports it
                    continue
                if first is not None:
                    self.duplicates.append((key_node.start_mark.line, str(key), first))
                else:
                    seen[key] = key_node.start_mark.line
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


def load_yaml(text: str, path: Path, line_offset: int = 0) -> YamlDoc:
    """Parse one YAML document; YAML errors and duplicate keys become doc.problems."""
    doc = YamlDoc(path=path, line_offset=line_offset)
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return doc
        doc.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark, what = e.problem_mark or e.context_mark, e.problem or str(e)
        if e.context and e.context_mark:
            # "while parsing a flow sequence": where it started is where to look, above all
            # when the parser only noticed at the end of the file.
            start = e.context_mark.line + 1 + line_offset
            what += f" ({e.context} that starts on line {start})"
            if "end" in (e.problem or "") or not e.problem_mark:
                mark = e.context_mark
        line = mark.line + 1 + line_offset if mark else None
        doc.problems.append(Problem(path, line, f"not valid YAML: {what}"))
        return doc
    except yaml.YAMLError as e:
        doc.problems.append(Problem(path, None, f"not valid YAML: {e}"))
        return doc
    finally:
        loader.dispose()
    for line, key, first in loader.duplicates:
        doc.problems.append(
            Problem(
                path,
                line + 1 + line_offset,
                f"duplicate key {key!r} (first set on line {first + 1 + line_offset}); "
                "YAML would silently keep only the last one",
            )
        )
    doc.lines[()] = node.start_mark.line + 1 + line_offset
    _record_lines(node, (), doc.lines, line_offset)
    return doc


def _record_lines(node: yaml.Node, key: Key, lines: dict[Key, int], offset: int) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            # Key paths use the constructed key (an int key stays an int).
            sub = key + (_scalar(key_node),)
            lines[sub] = key_node.start_mark.line + 1 + offset
            _record_lines(value_node, sub, lines, offset)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[key + (i,)] = item.start_mark.line + 1 + offset
            _record_lines(item, key + (i,), lines, offset)


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
