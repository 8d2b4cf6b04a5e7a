"""The judge for real work: the shipped judge/proctora.yaml and prompt.txt, edited as their
comments say, against a served judge that writes feedback before its verdict (`transformers
serve` on 127.0.0.1); replies cut off at max_tokens; a mostly unscored sweep exits 1; models
under test answered through a served model from a sweep file and the command line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mergeval.core.workspace import Workspace
from mergeval.inputs.items import load_items
from mergeval.proctora.judge import Judge, render_request
from mergeval.proctora.settings import load_settings
from tests import serve, zygote
from tests.conftest import tiny_zoo_workspace
from tests.scripted_judge import (
    FEEDBACK_FIRST,
    SUBWORD_FEEDBACK_FIRST,
    make_family_scripted_judge,
    make_scripted_judge,
)
from tests.serve import shipped_judge_for_server
from tests.sweep_helpers import run_dir_of, sweep_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> Path:
    return make_scripted_judge(tmp_path_factory.mktemp("scripted") / "judge", FEEDBACK_FIRST)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> str:
    """`transformers serve` (it loads each model the requests name, here by folder)."""
    with serve.transformers_serve(["--dtype", "float32"], tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


def roleplay_requests(settings, n: int = 12):
    items = load_items(REPO / "items" / "roleplay")[:n]
    return [render_request(settings, it, "Brannoc wipes a mug. 'North road. Baron's men.'") for it in items]


def test_shipped_judge_edited_for_a_server_grades_a_feedback_first_judge(scripted, served, tmp_path):
    ws = Workspace(tmp_path)
    settings = load_settings(shipped_judge_for_server(tmp_path / "judge", served, str(scripted)), ws)
    assert settings.backend == "openai" and 256 <= settings.max_tokens <= 2048  # hundreds: room for feedback
    requests = roleplay_requests(settings)
    assert all("Score 5:" in r.prompt and "[RESULT]" in r.prompt for r in requests)  # the items' rubric
    with Judge(settings, ws) as judge:
        judge.check_alive()
        results = judge.grade(requests)
    unscored = [r for r in results if r.score is None]
    assert len(unscored) <= 0.01 * len(results), unscored[:1]
    assert {r.score for r in results} == {4.0}
    assert all(r.replies[0].startswith("Feedback:") for r in results)  # the feedback came first


def test_shipped_judge_grades_a_subword_judge_of_the_realistic_world(served, tmp_path):
    """The unscored figure with a realistic judge: Llama 3's byte-level BPE and chat template
    (tests/real_world.py), its verdict in subword tokens, every roleplay item's full rubric prompt."""
    judge = make_family_scripted_judge(tmp_path / "llama3-judge", SUBWORD_FEEDBACK_FIRST)
    ws = Workspace(tmp_path)
    settings = load_settings(shipped_judge_for_server(tmp_path / "judge", served, str(judge)), ws)
    requests = roleplay_requests(settings, n=len(load_items(REPO / "items" / "roleplay")))
    with Judge(settings, ws) as grader:
        results = grader.grade(requests)
    unscored = [r for r in results if r.score is None]
    assert len(unscored) <= 0.01 * len(results), unscored[:1]
    assert {r.score for r in results} == {4.0} and all(r.replies[0].startswith("feedback :") for r in results)


def test_a_reply_cut_off_at_max_tokens_is_unscored_with_the_fix(scripted, served, tmp_path):
    ws = Workspace(tmp_path)
    path = shipped_judge_for_server(tmp_path / "served", served, str(scripted), max_tokens="3")
    served_settings = load_settings(path, ws)
    local = load_settings(tmp_path / "served" / "proctora.yaml", ws).model_copy(
        update={"backend": "transformers", "endpoint": None})
    for settings in (served_settings, local):  # finish_reason "length"; generate() stopped by the limit
        with Judge(settings, ws, cache_dir=tmp_path / f"calls-{settings.backend}") as judge:
            results = judge.grade(roleplay_requests(settings, 2))
            assert judge.calls_executed == 2  # not asked again: it would be cut off again
        for r in results:
            assert r.score is None and r.replies == ("Feedback: the response",)
            assert r.unscored_reason == f"cut off at max_tokens (3) before its verdict: raise max_tokens in {path}"
        with Judge(settings, ws, cache_dir=tmp_path / f"calls-{settings.backend}") as again:  # cached: same reason
            assert again.grade(roleplay_requests(settings, 2)) == results and again.calls_executed == 0


# -- sweeps: served answers, a sweep file, a mostly unscored run ----------------------------------

def tiny_world(root: Path, judge_model: Path) -> Path:
    ws = tiny_zoo_workspace(root).root
    (ws / "merge_configs" / "mine").mkdir(parents=True)
    shutil.copy(REPO / "merge_configs" / "toy" / "linear_half.yaml", ws / "merge_configs" / "mine")
    for i, q in enumerate(["what is 1 plus 2 ?", "reverse a b c ?"]):
        (ws / "items" / "mine").mkdir(parents=True, exist_ok=True)
        (ws / "items" / "mine" / f"q{i}.txt").write_text(f"Question:\n{q}\n\nCriterion:\nIs it right?\n")
    (ws / "judge").mkdir()
    shutil.copy(REPO / "judge" / "prompt.txt", ws / "judge" / "prompt.txt")
    for name, tokens in (("short", 3), ("ok", 64)):
        (ws / "judge" / f"{name}.yaml").write_text(f"model: {judge_model}\nmax_tokens: {tokens}\nbatch_size: 4\n")
    return ws


def mergeval(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return zygote.run([sys.executable, "-m", "mergeval.cli.main", "--workspace", str(ws), *args],
                      env=sweep_env(ws), capture_output=True, text=True, timeout=600)


def test_sweep_file_with_served_answers_and_a_mostly_unscored_run(scripted, served, tmp_path):
    ws = tiny_world(tmp_path / "ws", scripted)
    sweep_file = ws / "night.yaml"
    sweep_file.write_text(
        "recipes: merge_configs/mine\nitems: items/mine\njudge: judge/short.yaml\nkeep: all\n"
        f"answer:\n  backend: openai\n  endpoint: {served}\n  served_model: '{{path}}'\n  max_new_tokens: 4\n"
        "  batch_size: 2\nmerge:\n  device: cpu\n  lazy_unpickle: true\n  shard_size: 1B\n")
    cut = mergeval(ws, "sweep", str(sweep_file))
    assert cut.returncode == 1, cut.stderr[-3000:]
    assert "6 of 6 grades are unscored" in cut.stderr and "raise max_tokens in" in cut.stderr, cut.stderr[-2000:]
    assert str(ws / "judge" / "short.yaml") in cut.stderr
    assert (run_dir_of(cut) / "report.md").is_file()  # the report is written first
    # The flag overrides the file; the served answers are reused (same model, same settings).
    ok = mergeval(ws, "sweep", str(sweep_file), "--judge", "judge/ok.yaml")
    assert ok.returncode == 0, ok.stderr[-3000:]
    run = (run_dir_of(ok) / "run.json").read_text()
    assert '"backend": "openai"' in run and '"lazy_unpickle": true' in run
    assert re.search(r'"answer": \{[^}]*"items_executed": 0', run), run


def test_a_bad_sweep_file_value_names_file_and_line(tmp_path):
    ws = tiny_world(tmp_path / "ws", tmp_path / "no-judge")
    bad = ws / "bad.yaml"
    bad.write_text("recipes: merge_configs/mine\nanswer:\n  max_new_tokens: lots\nmerge:\n  dtype: float8\n"
                   "  lazy: true\n")
    proc = mergeval(ws, "sweep", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:3: answer.max_new_tokens: expected a whole number" in proc.stderr
    assert f"{bad}:5: merge.dtype: expected one of float32" in proc.stderr
    assert f"{bad}:6: unknown key 'lazy'" in proc.stderr
    assert not (ws / "reports").exists() and not (ws / ".mergeval").exists()  # nothing ran
    checked = mergeval(ws, "validate", str(bad))
    assert checked.returncode == 2 and f"{bad}:6: unknown key 'lazy'" in checked.stderr, checked.stderr
    scheduled = mergeval(ws, "schedule", str(bad), "--cron", "0 2 * * *")  # serves the same file
    assert scheduled.returncode == 2 and f"{bad}:5: merge.dtype" in scheduled.stderr, scheduled.stderr


def test_the_request_picks_the_toy_judge_for_the_toy_suite_and_round_trips(tmp_path):
    from mergeval.answering.settings import GenerationSettings
    from mergeval.engine import build
    from mergeval.engine.request import REAL_JUDGE, TOY_JUDGE, SweepRequest
    from mergeval.inputs.recipes import load_recipe

    assert SweepRequest.from_parameters(workspace=tmp_path).judge == REAL_JUDGE  # no judge/toy here
    (tmp_path / "judge" / "toy").mkdir(parents=True)
    (tmp_path / "judge" / "toy" / "proctora.yaml").write_text("model: zoo/proctora\n")
    assert SweepRequest.from_parameters(workspace=tmp_path).judge == TOY_JUDGE  # items/toy by default
    assert SweepRequest.from_parameters(workspace=tmp_path, items="items/mine").judge == REAL_JUDGE
    assert SweepRequest.from_parameters(workspace=tmp_path, judge="judge/x.yaml").judge == "judge/x.yaml"
    request = SweepRequest.from_parameters(workspace=tmp_path, items="items/mine", backend="openai",
                                           endpoint="http://127.0.0.1:1/v1", served_model="{name}",
                                           merge_dtype="bfloat16", lazy_unpickle=True, shard_size="2B")
    assert SweepRequest.from_parameters(**request.parameters()) == request  # the flows' flat parameters
    assert request.generation.for_model("ties", tmp_path).served_model == "ties"
    assert GenerationSettings(backend="openai").for_model("ties", tmp_path).served_model == str(tmp_path.resolve())
    # Only what changes the merged weights is in the build key: dtype, not the loader or the shards.
    ws = tiny_zoo_workspace(tmp_path / "ws")
    shutil.copytree(REPO / "merge_configs" / "toy", ws.configs / "toy")
    recipe = load_recipe(ws.configs / "toy" / "linear_half.yaml", ws)
    plain = build.build_key(recipe)
    assert build.build_key(recipe, merge=build.MergeSettings(lazy_unpickle=True, shard_size="1B")) == plain
    assert build.build_key(recipe, merge=build.MergeSettings(dtype="bfloat16")) != plain


def test_one_served_name_for_every_model_is_refused_before_anything_runs(tmp_path):
    """A --served-model without {name} or {path} would send every model's questions to one served
    model (a sweep always has a merge and its sources): exit 2, from the command line and from a
    sweep file (at its line), before any recipe is read."""
    from mergeval.engine.request import SweepRequest

    ws = tiny_world(tmp_path / "ws", tmp_path / "no-judge")
    served = ("--backend", "openai", "--endpoint", "http://127.0.0.1:9/v1")  # nothing listens: never asked
    flag = mergeval(ws, "sweep", "merge_configs/mine", "--items", "items/mine", *served, "--served-model", "my-model")
    assert flag.returncode == 2, flag.stderr[-2000:]
    assert "--served-model: served model 'my-model' is one name for every model of the sweep" in flag.stderr
    sweep_file = ws / "one.yaml"
    sweep_file.write_text("recipes: merge_configs/mine\nitems: items/mine\nanswer:\n  backend: openai\n"
                          "  endpoint: http://127.0.0.1:9/v1\n  served_model: my-model\n")
    from_file = mergeval(ws, "sweep", str(sweep_file))
    assert from_file.returncode == 2, from_file.stderr[-2000:]
    assert f"{sweep_file}:6: answer.served_model: served model 'my-model' is one name" in from_file.stderr
    assert not (ws / "reports").exists() and not (ws / ".mergeval").exists()  # nothing ran
    # With {name} or {path} in it, each model is sent its own name.
    for name in ("{name}-v1", "{path}"):
        SweepRequest.from_parameters(workspace=ws, backend="openai", endpoint="http://127.0.0.1:9/v1",
                                     served_model=name).check()
    with pytest.raises(ValueError, match="one name for every model"):
        SweepRequest.from_parameters(workspace=ws, backend="openai", endpoint="http://127.0.0.1:9/v1",
                                     served_model="my-model").check()


def test_a_sweep_files_answer_dtype_reaches_the_answers_and_every_flow_takes_the_request(tmp_path):
    """`answer: dtype:` (issue #13: the sweep file holds the answers' dtype) is read, checked at its
    line and handed on; the sweep and search flows take every flat parameter their requests make."""
    import inspect

    from mergeval.core.errors import InputError
    from mergeval.engine.request import SweepRequest
    from mergeval.engine.sweep_file import read_sweep_file
    from mergeval.orchestration.flows import load_flow
    from mergeval.search.request import SearchRequest

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("recipes: merge_configs/mine\nanswer:\n  dtype: bfloat16\nmerge:\n  dtype: float32\n")
    bad.write_text("recipes: merge_configs/mine\nanswer:\n  dtype: int4\n")
    request = SweepRequest.from_parameters(workspace=tmp_path, **read_sweep_file(good))
    assert request.generation.dtype == "bfloat16" and request.merge.dtype == "float32"
    request.check()
    with pytest.raises(InputError, match=r"bad.yaml:3: answer.dtype: expected one of auto, float32"):
        read_sweep_file(bad)
    ws = Workspace(tmp_path)
    for flow, req in (("sweep", request), ("search", SearchRequest.from_parameters(workspace=tmp_path, space="s.yaml", dtype="bfloat16"))):
        taken = inspect.signature(load_flow(ws, flow).fn).parameters
        assert set(req.parameters()) <= set(taken), set(req.parameters()) - set(taken)
