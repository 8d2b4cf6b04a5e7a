"""A sweep described in one file: `mergeval sweep mine.yaml`, `mergeval schedule mine.yaml --cron ...`.

    params = read_sweep_file(Path("sweeps/mine.yaml"))   # InputError (file:line) if anything is off
    SweepRequest.from_parameters(workspace=ws.root, **params)

Everything an overnight sweep needs, each key optional (left out: the CLI's default), paths
relative to the workspace like the CLI's:

    recipes: merge_configs/mine        # a folder of recipes, or one recipe file
    items: items/mine                  # the item suite (its suite.yaml may set max_new_tokens)
    judge: judge/proctora.yaml         # default: judge/toy/proctora.yaml for items/toy, else this
    keep: top-3                        # merged weights kept: all, none or top-K
    trust_remote_code: [my_model]      # models whose folder's Python may run
    pool: gpus                         # a Prefect work pool (needs a server)
    sequential: false                  # true: do not build the next merge while one answers
    answer:                            # answering/settings.py GenerationSettings, key for key
      backend: openai                  # transformers, vllm or openai
      endpoint: http://127.0.0.1:8000/v1
      served_model: "{path}"           # openai: the name sent per model; {path} (its folder, the
                                       # default, what `transformers serve` loads), {name} (as ranked)
      device: auto
      dtype: auto                      # answering: auto = float32 on a CPU, the checkpoint's own on a GPU
      batch_size: 32
      max_new_tokens: 512              # items whose suite and front matter do not say
      temperature: 0
      top_p: 1
      seed: 0
    merge:                             # engine/build.py MergeSettings (mergekit's MergeOptions)
      device: cuda
      dtype: bfloat16                  # the merges' out_dtype: part of the build key
      lazy_unpickle: true
      low_cpu_memory: false
      shard_size: 2B

Read strictly: an unknown or repeated key, a wrong type or a bad value is a Problem naming
this file and line (exit status 2), found before anything runs. Flags on the command line
override the file's values.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

from mergeval.answering import backends
from mergeval.answering.settings import DTYPES as ANSWER_DTYPES
from mergeval.answering.settings import GenerationSettings
from mergeval.core.errors import InputError, Problem, raise_if_any
from mergeval.engine.build import DTYPES, MergeSettings
from mergeval.engine.request import one_served_model, parse_keep
from mergeval.inputs.strict_yaml import YamlDoc, load_yaml, unknown_key_problems
from mergeval.inputs.suite_settings import answer_length
from mergeval.inputs.text_files import read_text_file

TOP_KEYS = ("recipes", "items", "judge", "keep", "trust_remote_code", "pool", "sequential", "answer", "merge")
# The SweepRequest.from_parameters name of each `merge:` key (engine/request.py MERGE_PARAMETERS).
MERGE_FLAT = {"device": "merge_device", "dtype": "merge_dtype", "lazy_unpickle": "lazy_unpickle",
              "low_cpu_memory": "low_cpu_memory", "shard_size": "shard_size"}
SHARD_SIZE = re.compile(r"^\d+(\.\d+)?[KMB]?$")


def is_sweep_file(path: Path) -> bool:
    """A YAML file that is not a recipe (a recipe names its merge_method, or is a franken-merge's
    slices): the sweep's first argument may be either."""
    if not path.is_file() or path.suffix.lower() not in (".yaml", ".yml"):
        return False
    text = path.read_text(encoding="utf-8", errors="replace")
    return not re.search(r"^(merge_method|slices|models|base_model)\s*:", text, re.M)


def read_sweep_file(path: Path) -> dict[str, Any]:
    """The file's settings as SweepRequest.from_parameters' flat parameters (only those set)."""
    text, problems = read_text_file(path, "a sweep file")
    raise_if_any(problems)
    doc = load_yaml(text, path)
    raise_if_any(doc.problems)
    if not isinstance(doc.data, dict):
        raise InputError([Problem(path, 1, "a sweep file is YAML keys and values, e.g. recipes: merge_configs/mine")])
    problems = unknown_key_problems(doc, doc.data, (), TOP_KEYS, "a sweep file")
    out: dict[str, Any] = {}
    for key, flat in (("recipes", "configs"), ("items", "items"), ("judge", "judge"), ("pool", "pool")):
        if key in doc.data:
            out[flat] = _value(doc, (key,), str, problems)
    if "keep" in doc.data:
        out["keep"] = _value(doc, ("keep",), str, problems, check=parse_keep)
    if "sequential" in doc.data:
        sequential = _value(doc, ("sequential",), bool, problems)
        out["overlap"] = None if sequential is None else not sequential
    if "trust_remote_code" in doc.data:
        names = doc.data["trust_remote_code"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            problems.append(doc.problem(("trust_remote_code",), "trust_remote_code: expected a list of model names"))
        else:
            out["trust_remote_code"] = names
    out.update(_section(doc, "answer", GenerationSettings, {f: f for f in _names(GenerationSettings)}, problems))
    out.update(_section(doc, "merge", MergeSettings, MERGE_FLAT, problems))
    raise_if_any(problems)
    return {k: v for k, v in out.items() if v is not None}


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _section(doc: YamlDoc, name: str, cls, flat: dict[str, str], problems: list[Problem]) -> dict[str, Any]:
    """One of `answer:` / `merge:`: its keys are the fields of `cls`, typed as they are."""
    section = doc.data.get(name)
    if section is None:
        return {}
    if not isinstance(section, dict):
        problems.append(doc.problem((name,), f"{name}: expected keys and values, e.g.\n  {name}:\n    "
                                             f"{_names(cls)[0]}: ..."))
        return {}
    problems += unknown_key_problems(doc, section, (name,), _names(cls), f"{name}:")
    hints = typing.get_type_hints(cls)
    checks = CHECKS.get(name, {})
    out = {}
    for key in section:
        if key in flat:
            out[flat[key]] = _value(doc, (name, key), _kind(hints[key]), problems, check=checks.get(key))
    if name == "answer":
        _check_backend(doc, section, problems)
    return out


def _kind(hint) -> type:
    """str, int, float or bool: the non-None type of a field."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _value(doc: YamlDoc, key: tuple, kind: type, problems: list[Problem], check=None):
    value = doc.data
    for k in key:
        value = value[k]
    where = ".".join(key)
    if value is None:
        return None
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        problems.append(doc.problem(key, f"{where}: expected {_what(kind)}, got {value!r}"))
        return None
    if check is not None:
        try:
            check(value)
        except ValueError as e:
            problems.append(doc.problem(key, f"{where}: {e}"))
            return None
    return value


def _what(kind: type) -> str:
    return {str: "text", int: "a whole number", float: "a number", bool: "true or false"}.get(kind, kind.__name__)


def _at_least(low: float, high: float | None = None):
    def check(value):
        if value < low or (high is not None and value > high):
            raise ValueError(f"expected {low} or more" + (f" and at most {high}" if high is not None else "")
                             + f", got {value!r}")
    return check


def _one_of(choices: tuple[str, ...]):
    def check(value):
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
    return check


def _shard_size(value: str) -> None:
    if not SHARD_SIZE.match(value):
        raise ValueError(f"expected a number of parameters per shard like 2B, 500M or 1000000, got {value!r}")


def _served(value: str) -> None:
    try:
        value.format(name="m", path="/m")
    except (KeyError, IndexError, ValueError):
        raise ValueError(f"only {{name}} and {{path}} may be filled in, got {value!r}") from None
    if GenerationSettings(backend="openai", served_model=value).one_served_name():
        raise ValueError(one_served_model(value))


CHECKS = {
    "answer": {"max_new_tokens": answer_length, "batch_size": _at_least(1), "temperature": _at_least(0, 2),
               "top_p": _at_least(0, 1), "backend": _one_of(tuple(backends.BACKENDS)), "served_model": _served,
               "dtype": _one_of(ANSWER_DTYPES)},
    "merge": {"dtype": _one_of(DTYPES), "shard_size": _shard_size},
}


def _check_backend(doc: YamlDoc, section: dict, problems: list[Problem]) -> None:
    """What backends.check says (an openai backend without an endpoint, vllm without a GPU)."""
    given = {k: v for k, v in section.items() if k in ("backend", "endpoint") and isinstance(v, str)}
    if "backend" not in given or given["backend"] not in backends.BACKENDS:
        return
    try:
        backends.check(GenerationSettings(**given))
    except ValueError as e:
        problems.append(doc.problem(("answer", "backend"), f"answer.backend: {e}"))
