"""trust_remote_code: off for every model unless the user names it, and the report says who ran.

The model under test here is real: a tiny Llama whose config.json has an `auto_map` pointing at
Python files in its own folder, which write a sentinel file when imported. Its model_type stays
`llama`, so with the flag off every loader must take transformers' own class and never import
the file; with the flag on for that model, the file runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mergeval.core.errors import InputError
from mergeval.core.workspace import Workspace
from tests.tiny_models import make_tiny_model

REPO = Path(__file__).resolve().parents[1]

CONFIG_CODE = '''import pathlib
pathlib.Path({sentinel!r}).write_text("the model's own code ran")  # the proof: importing wrote this

from transformers import LlamaConfig


class SentinelConfig(LlamaConfig):
    model_type = "llama"
'''
MODEL_CODE = '''from transformers import LlamaForCausalLM

from .configuration_sentinel import SentinelConfig


class SentinelForCausalLM(LlamaForCausalLM):
    config_class = SentinelConfig
'''


def odd_model(path: Path, sentinel: Path, seed: int = 3) -> Path:
    """A tiny Llama that carries its own code (auto_map), which writes `sentinel` when imported."""
    make_tiny_model(path, "llama", seed=seed, num_layers=2)
    (path / "configuration_sentinel.py").write_text(CONFIG_CODE.format(sentinel=str(sentinel)))
    (path / "modeling_sentinel.py").write_text(MODEL_CODE)
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_sentinel.SentinelConfig",
                       "AutoModelForCausalLM": "modeling_sentinel.SentinelForCausalLM"}
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path


ITEM = '---\nchecks:\n  - max_words: 50\n---\nQuestion:\nwhat is {n} plus 2 ?\n'  # checks only: no judge call


def world(root: Path) -> tuple[Workspace, Path]:
    """(workspace, sentinel): sources `odd` (own code) and `plain`, one linear merge, two items."""
    sentinel = root / "odd-code-ran"
    odd_model(root / "zoo" / "odd", sentinel)
    make_tiny_model(root / "zoo" / "plain", "llama", seed=4, num_layers=2)
    (root / "merge_configs" / "mine").mkdir(parents=True)
    (root / "merge_configs" / "mine" / "half.yaml").write_text(
        "merge_method: linear\nmodels:\n  - model: zoo/odd\n    parameters:\n      weight: 0.5\n"
        "  - model: zoo/plain\n    parameters:\n      weight: 0.5\ndtype: float32\n")
    for n in (1, 2):
        (root / "items" / "mine" / f"q{n}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / "items" / "mine" / f"q{n}.txt").write_text(ITEM.format(n=n))
    (root / "judge").mkdir()
    shutil.copy(REPO / "judge" / "toy" / "prompt.txt", root / "judge" / "prompt.txt")
    (root / "judge" / "proctora.yaml").write_text("model: zoo/plain\nmax_tokens: 8\n")
    return Workspace(root), sentinel


def plan(ws: Workspace, *trusted: str):
    from mergeval.answering.settings import GenerationSettings
    from mergeval.engine.plan import plan_sweep

    return plan_sweep(ws, ws.configs / "mine", ws.items / "mine", ws.judge_file,
                      GenerationSettings(max_new_tokens=4, batch_size=2), trust_remote_code=trusted)


def test_only_the_named_model_is_trusted_and_planning_runs_no_model_code(tmp_path):
    ws, sentinel = world(tmp_path / "ws")
    trusted = {c.name: c.trust_remote_code for c in plan(ws, "odd").candidates}
    assert trusted == {"odd": True, "plain": False, "half": False}
    by_path = {c.name: c.trust_remote_code for c in plan(ws, "zoo/odd").candidates}  # a source's path works too
    assert by_path == trusted
    assert not any(c.trust_remote_code for c in plan(ws).candidates)  # default: nobody
    # another key: answers made without its code are never served as answers made with it
    assert plan(ws, "odd").candidate("odd").model_id != plan(ws).candidate("odd").model_id
    assert not sentinel.exists()  # validating recipes reads config.json as JSON, never imports it


def test_unknown_names_and_a_merge_without_its_sources_are_refused(tmp_path):
    from mergeval.cli.common import check_sweep_inputs
    from mergeval.engine.request import SweepRequest

    ws, _ = world(tmp_path / "ws")
    with pytest.raises(InputError, match="no model named 'nosuch'.*models: half, odd, plain"):
        plan(ws, "nosuch")
    with pytest.raises(InputError, match="merging half with its own code runs the code of its sources too: "
                                         "name odd, plain as well"):
        plan(ws, "half")
    assert {c.name for c in plan(ws, "half", "odd", "plain").candidates if c.trust_remote_code} == {"half", "odd", "plain"}
    with pytest.raises(SystemExit) as exit_:  # what `mergeval sweep --trust-remote-code nosuch` runs first
        check_sweep_inputs(SweepRequest.from_parameters(
            workspace=ws.root, configs="merge_configs/mine", items="items/mine", judge="judge/proctora.yaml", keep="all",
            batch_size=2, max_new_tokens=4, trust_remote_code=("nosuch",)))
    assert exit_.value.code == 2


def test_a_sweep_runs_the_named_models_code_only_and_the_report_says_so(tmp_path):
    from mergeval.engine import stages

    ws, sentinel = world(tmp_path / "ws")
    untrusted = stages.run_direct(plan(ws))  # builds the merge, answers with all three models
    assert not sentinel.exists()  # mergekit and transformers both took the built-in Llama class
    assert "remote_code" not in json.loads((untrusted / "run.json").read_text())
    assert "trust_remote_code" not in (untrusted / "report.md").read_text()
    assert "Code from the models' folders" not in (untrusted / "report.html").read_text()

    trusted = stages.run_direct(plan(ws, "odd"))  # `odd` is answered again, now with its own code
    assert sentinel.exists()
    run = json.loads((trusted / "run.json").read_text())
    assert run["remote_code"] == [{"model": "odd", "role": "source"}]
    report = (trusted / "report.md").read_text()
    assert "## Code from the models' folders" in report and "`odd` (source model)" in report
    assert "`plain`" not in report.split("## Code from the models' folders")[1].split("##")[0]
    assert "<code>odd</code> (source)" in (trusted / "report.html").read_text()


def test_the_merge_worker_runs_source_code_only_when_told(tmp_path):
    from mergeval.engine.build import build

    ws, sentinel = world(tmp_path / "ws")
    recipe = plan(ws, "half", "odd", "plain").candidate("half")
    built = build(recipe.recipe, ws, key=recipe.key, trust_remote_code=True)
    assert not built.cached and (built.path / "config.json").exists()
    assert sentinel.exists()  # mergekit read `odd` through its own configuration class
    # (the same merge without the flag runs in the sweep test above and leaves no sentinel)


@pytest.mark.parametrize("trust", [False, True])
def test_the_judge_runs_its_folders_code_only_when_its_settings_say_so(tmp_path, trust):
    from mergeval.proctora.backend_transformers import TransformersBackend
    from mergeval.proctora.settings import JudgeSettings

    sentinel = tmp_path / "judge-code-ran"
    judge = odd_model(tmp_path / f"judge_{trust}", sentinel)
    backend = TransformersBackend(JudgeSettings(model=str(judge), max_tokens=2, logprobs=False,
                                                trust_remote_code=trust))
    [reply] = backend.complete([[{"role": "user", "content": "what is 1 plus 2 ?"}]], sample_index=0)
    assert isinstance(reply.text, str)  # loaded and generated either way
    assert sentinel.exists() == trust
    on = JudgeSettings(model=str(judge), trust_remote_code=True)
    assert on.call_fingerprint() != JudgeSettings(model=str(judge)).call_fingerprint()


def test_a_served_judge_cannot_be_given_the_flag():
    from pydantic import ValidationError

    from mergeval.proctora.settings import JudgeSettings

    with pytest.raises(ValidationError, match="a served judge runs whatever code its server was started with"):
        JudgeSettings(backend="openai", endpoint="http://127.0.0.1:8000/v1", model="judge", trust_remote_code=True)
