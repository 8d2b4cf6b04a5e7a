"""judge/proctora.yaml: strict loading with file:line errors, and what the fingerprint covers."""

import shutil
from pathlib import Path

import pytest

from mergeval.core.errors import InputError
from mergeval.core.workspace import Workspace
from mergeval.proctora.settings import JudgeSettings, load_settings

REPO = Path(__file__).resolve().parents[1]


def write(folder: Path, text: str, template: str = "grade {{ answer }}\n") -> Path:
    (folder / "prompt.txt").write_text(template, encoding="utf-8")
    path = folder / "proctora.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, ws: Workspace) -> list[str]:
    with pytest.raises(InputError) as e:
        load_settings(path, ws)
    return [str(p) for p in e.value.problems]


def test_default_judge_file_loads(tmp_path):
    ws = Workspace(tmp_path)
    (tmp_path / "judge").mkdir()
    for name in ("proctora.yaml", "prompt.txt"):
        shutil.copy(REPO / "judge" / "toy" / name, tmp_path / "judge" / name)
    s = load_settings(ws.judge_file, ws)
    assert s.backend == "transformers" and s.model == str(tmp_path / "zoo" / "proctora")
    assert (s.max_tokens, s.samples, s.scale, s.temperature) == (8, 1, (1, 5), 0.0)
    assert s.template_text == (REPO / "judge" / "toy" / "prompt.txt").read_text(encoding="utf-8")


def test_unknown_key_names_file_and_line(tmp_path):
    path = write(tmp_path, "backend: transformers\nmodel: zoo/proctora\ntemperatur: 0.2\n")
    [msg] = problems(path, Workspace(tmp_path))
    assert msg.startswith(f"{path}:3:") and "temperatur" in msg and "did you mean temperature" in msg


def test_duplicate_key_names_file_and_line(tmp_path):
    path = write(tmp_path, "model: a\nsamples: 1\n# a comment\nsamples: 3\n")
    [msg] = problems(path, Workspace(tmp_path))
    assert msg.startswith(f"{path}:4:") and "duplicate key 'samples'" in msg and "line 2" in msg


@pytest.mark.parametrize(
    "line, text",
    [
        ("samples: three", "samples"),
        ("temperature: hot", "temperature"),
        ("max_tokens: 8.5", "max_tokens"),
        ("logprobs: 1", "logprobs"),
        ("scale: [1, five]", "scale"),
        ("samples: 0", "greater than or equal to 1"),
    ],
)
def test_wrong_type_names_file_and_line(tmp_path, line, text):
    path = write(tmp_path, f"backend: transformers\nmodel: m\n\n{line}\n")
    [msg] = problems(path, Workspace(tmp_path))
    assert msg.startswith(f"{path}:4:") and text in msg


@pytest.mark.parametrize(
    "text, message",
    [
        ("backend: openai\nmodel: m\n", "needs an endpoint"),
        ("backend: openai\nmodel: m\nendpoint: 127.0.0.1:8000\n", "http://"),
        ("backend: transformers\nmodel: m\nendpoint: http://127.0.0.1:8000/v1\n", "did you mean backend: openai"),
        ("model: m\nsamples: 3\n", "temperature > 0"),
        ("model: m\nscale: [5, 1]\n", "min < max"),
        ("backend: vllm\nmodel: m\n", "backend"),
        ("model: m\ntemplate: missing.txt\n", "prompt template not found"),
        ("- model: m\n", "mapping"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_inconsistent_settings(tmp_path, text, message):
    path = write(tmp_path, text)
    assert any(message in m for m in problems(path, Workspace(tmp_path)))


def base(**kw) -> JudgeSettings:
    fields = dict(backend="openai", model="judge-7b", endpoint="http://127.0.0.1:8000/v1", template_text="T")
    return JudgeSettings(**(fields | kw))


def test_fingerprint_covers_what_changes_a_grade():
    fp = base().fingerprint()
    # How fast and with which key: same grades, same fingerprint.
    for kw in (dict(api_key_env="KEY"), dict(timeout_s=5.0), dict(concurrency=32), dict(http_retries=0)):
        assert base(**kw).fingerprint() == fp, kw
        assert base(**kw).call_fingerprint() == base().call_fingerprint()
    # What the judge sees or how replies become a grade: a new fingerprint.
    for kw in (dict(template_text="U"), dict(temperature=0.5), dict(model="other"), dict(samples=3),
               dict(scale=(1, 10)), dict(system="be strict"), dict(endpoint="http://10.0.0.1/v1"), dict(seed=1)):
        assert base(**kw).fingerprint() != fp, kw
    # More samples re-use the calls already made: the call fingerprint stays.
    assert base(samples=3).call_fingerprint() == base().call_fingerprint()


def test_local_model_fingerprint_follows_content_not_path(tmp_path):
    def model(folder: Path, weights: bytes) -> Path:
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "llama"}')
        (folder / "model.safetensors").write_bytes(weights)
        (folder / "tokenizer.json").write_text("{}")
        return folder

    a, b = model(tmp_path / "a", b"w1"), model(tmp_path / "b", b"w1")
    fp = JudgeSettings(model=str(a)).fingerprint()
    assert JudgeSettings(model=str(b)).fingerprint() == fp  # moved: same judge
    (b / "model.safetensors").write_bytes(b"w2")  # retrained in place: another judge
    assert JudgeSettings(model=str(b)).fingerprint() != fp
    (a / "tokenizer.json").write_text('{"x": 1}')  # tokenizer / chat template changed
    assert JudgeSettings(model=str(a)).fingerprint() != fp


def test_key_is_read_from_the_environment_only(monkeypatch):
    s = base(api_key_env="MERGEVAL_TEST_JUDGE_KEY")
    monkeypatch.setenv("MERGEVAL_TEST_JUDGE_KEY", "sk-secret-123")
    assert s.api_key() == "sk-secret-123"
    assert "sk-secret-123" not in repr(s) + s.model_dump_json()
    with pytest.raises(Exception):
        s.model = "x"  # frozen


def test_the_real_judge_file_loads_as_shipped(tmp_path):
    """judge/proctora.yaml is for real work: room for feedback before the verdict, its own prompt."""
    from mergeval.inputs.items import load_items
    from mergeval.proctora.judge import render_request

    s = load_settings(REPO / "judge" / "proctora.yaml", Workspace(tmp_path))
    assert s.backend == "transformers" and 256 <= s.max_tokens <= 2048 and s.system
    assert s.template_text == (REPO / "judge" / "prompt.txt").read_text(encoding="utf-8")
    item = next(it for it in load_items(REPO / "items" / "roleplay") if it.score_descriptions)
    prompt = render_request(s, item, "an answer").prompt
    assert "[RESULT]" in prompt and all(f"Score {n}: {text}" in prompt for n, text in item.score_descriptions)
    assert prompt.index("Feedback") < prompt.rindex("[RESULT]")  # feedback first, verdict last
