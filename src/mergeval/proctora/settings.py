"""Proctora's settings: judge/proctora.yaml, read strictly into one frozen record.

    from mergeval.proctora.settings import load_settings
    settings = load_settings(workspace.judge_file, workspace)
    settings.fingerprint()   # goes into every grade's cache key

Unknown keys, duplicate keys and wrong types are errors naming the file and line (a judge
that silently ran with defaults would grade a whole sweep with the wrong settings).
The API key itself is never stored: only the NAME of the environment variable that
holds it (api_key() reads it at call time), left out of the fingerprint like timeouts and concurrency.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mergeval.core.errors import InputError, Problem, raise_if_any
from mergeval.core.hashing import content_hash, file_hash
from mergeval.core.workspace import Workspace
from mergeval.inputs import model_dirs
from mergeval.inputs.strict_yaml import YamlDoc, load_yaml, unknown_key_problems
from mergeval.inputs.text_files import read_text_file

DEFAULT_TEMPLATE = "prompt.txt"

# Settings that change what one judge call returns (part of every call's cache key).
CALL_KEYS = ("backend", "model", "endpoint", "system", "temperature", "reask_temperature", "seed", "max_tokens", "logprobs")
# ... plus those that change how replies become a grade (the judge's fingerprint).
GRADE_KEYS = ("samples", "scale", "retries_unparseable", "unstable_spread")
# Left out on purpose: api_key_env, timeout_s, concurrency, http_retries, batch_size, device
# (how fast and from where, not what the judge says).


class JudgeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    backend: Literal["transformers", "openai"] = "transformers"
    model: str = Field(min_length=1)  # transformers: a model folder; openai: the served model name
    endpoint: str | None = None  # openai: base URL, e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # openai: NAME of the env var holding the key
    system: str | None = None  # persona prompt, sent as the system message
    template: str = DEFAULT_TEMPLATE  # file next to the settings file
    temperature: float = Field(0.0, ge=0, le=2)
    reask_temperature: float = Field(0.7, ge=0, le=2)  # re-asks after an unreadable verdict
    seed: int = 0
    max_tokens: int = Field(512, ge=1)
    samples: int = Field(1, ge=1, le=64)
    scale: tuple[int, int] = (1, 5)
    retries_unparseable: int = Field(2, ge=0, le=10)
    unstable_spread: float = Field(1.0, ge=0)  # flag a grade whose samples' max-min exceeds this
    logprobs: bool = True  # ask for token probabilities (G-Eval weighted score) where possible
    timeout_s: float = Field(120.0, gt=0)  # openai: per request
    concurrency: int = Field(4, ge=1, le=256)  # openai: requests in flight
    http_retries: int = Field(4, ge=0, le=20)  # openai: on connection errors, timeouts, 429, 5xx
    batch_size: int = Field(8, ge=1, le=1024)  # transformers: prompts per generate() call
    device: str = "auto"  # transformers: auto (cuda if available), cpu, cuda, cuda:1, mps
    trust_remote_code: bool = False  # transformers: run the Python in the judge's folder (auto_map)

    # Filled in by load_settings, not written by the user.
    template_text: str = ""
    source: str = ""  # the settings file, named in messages that say what to edit

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_from_list(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("endpoint must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _consistent(self) -> "JudgeSettings":
        low, high = self.scale
        if low >= high:
            raise ValueError(f"scale must be [min, max] with min < max, got [{low}, {high}]")
        if self.backend == "openai" and not self.endpoint:
            raise ValueError("backend openai needs an endpoint (the server's base URL, e.g. http://127.0.0.1:8000/v1)")
        if self.backend == "openai" and self.trust_remote_code:
            raise ValueError("trust_remote_code is for a judge loaded here (backend transformers); "
                             "a served judge runs whatever code its server was started with")
        if self.backend == "transformers" and (self.endpoint or self.api_key_env):
            raise ValueError("endpoint/api_key_env are set but backend is transformers: did you mean backend: openai?")
        if self.backend == "transformers" and self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 at temperature 0 on the transformers backend repeats one greedy reply: "
                             "set temperature > 0 or samples: 1")
        return self

    # -- identity -------------------------------------------------------------------------

    def model_identity(self) -> str:
        """What the model *is*: folder content for a local model, name + endpoint when served."""
        if self.backend == "openai":
            return content_hash({"served": self.model, "endpoint": self.endpoint})
        folder = Path(self.model)
        if not (folder / "config.json").is_file():
            return content_hash({"missing": self.model})
        others = {  # tokenizer and chat template change the prompt the model sees
            p.name: file_hash(p)
            for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix not in model_dirs.WEIGHT_SUFFIXES and p.stat().st_size <= (16 << 20)
        }
        return content_hash({"weights": model_dirs.fingerprint(folder), "files": others})

    def call_fingerprint(self) -> str:
        """Hash of what decides one judge call's reply (the call cache key uses it)."""
        data = {k: getattr(self, k) for k in CALL_KEYS}
        data["model"] = self.model_identity()
        if self.trust_remote_code:  # its own code may compute differently; absent when off, so
            data["trust_remote_code"] = True  # the caches of every judge that never used it stay valid
        return content_hash(data)

    def fingerprint(self) -> str:
        """Hash of everything that changes a grade: call settings, sampling plan, template."""
        data = {k: getattr(self, k) for k in GRADE_KEYS}
        return content_hash({"call": self.call_fingerprint(), **data, "template": self.template_text})

    def api_key(self) -> str | None:
        """The key, read from the environment at call time; never stored or logged."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


USER_KEYS = frozenset(JudgeSettings.model_fields) - {"template_text", "source"}


def load_settings(path: Path, workspace: Workspace) -> JudgeSettings:
    """Read judge settings strictly; relative model paths resolve against the workspace."""
    path = Path(path)
    if not path.exists():
        raise InputError([Problem(path, None, "judge settings file not found")])
    text, problems = read_text_file(path, "a judge settings")  # size, encoding, not-a-file
    raise_if_any(problems)
    doc = load_yaml(text, path)
    raise_if_any(doc.problems)
    if not isinstance(doc.data, dict):
        raise InputError([Problem(path, None, "judge settings must be a YAML mapping of key: value")])
    raise_if_any(unknown_key_problems(doc, doc.data, (), sorted(USER_KEYS), "judge settings"))
    try:
        settings = JudgeSettings.model_validate(doc.data)
    except ValidationError as e:
        raise InputError([_problem(doc, err) for err in e.errors()]) from None
    template = path.parent / settings.template
    if not template.is_file():
        raise InputError([doc.problem(("template",), f"prompt template not found: {template}")])
    template_text, problems = read_text_file(template, "a prompt template")
    raise_if_any(problems)
    update: dict[str, Any] = {"template_text": template_text, "source": str(path)}
    if settings.backend == "transformers":
        update["model"] = str(workspace.resolve(settings.model))
    return settings.model_copy(update=update)


def _problem(doc: YamlDoc, err: dict) -> Problem:
    """A pydantic error at the line of the key it is about (a whole-file rule: at backend)."""
    loc = tuple(err.get("loc") or ())
    message = err["msg"].removeprefix("Value error, ")
    if not loc:
        return doc.problem(("backend",), message)
    got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
    return doc.problem(loc, f"{loc[0]}: {message}{got}")
