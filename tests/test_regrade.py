"""`mergeval regrade`: a finished run graded again with other judge settings, on the shipped
toy zoo, without building or answering anything.

The run is made by the engine's own stages in a plain loop (no Prefect: seconds, not a
minute); `judge_world` is shared with test_calibrate and test_rubric_app through a folder in
pytest's session temp dir, so its one run is made once per session.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.sweep_helpers import copy_shipped_zoo, copy_toy_judge

REPO = Path(__file__).resolve().parents[1]
RECIPE = "linear_half.yaml"  # one merge + its two parents: three models to regrade
N_ITEMS = 20  # 10 add + 10 rev of the 200 toy items: every path, a fraction of the time


def direct_run(ws) -> Path:
    """build → answer → grade → finish for every model, as flows/sweep.py does, minus Prefect."""
    from mergeval.answering.settings import GenerationSettings
    from mergeval.engine import stages
    from mergeval.engine.plan import plan_sweep

    gen = GenerationSettings()
    plan = plan_sweep(ws, ws.configs / "toy", ws.items / "toy", ws.judge_file, gen)
    settings = {"configs": "merge_configs/toy", "items": "items/toy", "judge": "judge/proctora.yaml", "keep": "all",
                "generation": gen.__dict__, "judge_settings": plan.judge.model_dump(exclude={"template_text"})}
    return stages.run_direct(plan, settings)


def judge_world(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace, finished run folder): the shipped zoo with its Proctora, 20 toy items, one recipe."""
    from mergeval.core.workspace import Workspace
    from mergeval.zoo import write_items

    root = tmp_path_factory.getbasetemp() / "judge-world"
    done = root / "run-dir.txt"
    if not done.exists():
        (root / "merge_configs" / "toy").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "merge_configs" / "toy" / RECIPE, root / "merge_configs" / "toy" / RECIPE)
        copy_toy_judge(root / "judge")
        copy_shipped_zoo(root / "zoo")
        write_items(root / "items" / "toy")
        for path in (root / "items" / "toy").rglob("*.txt"):
            if int(path.stem[-3:]) >= N_ITEMS // 2:
                path.unlink()
        done.write_text(str(direct_run(Workspace(root))))  # written last: the world is whole
    return root, Path(done.read_text())


def copy_world(src: Path, dst: Path) -> Path:
    """A copy with its own state and reports; the zoo is a symlink (same fingerprints)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("zoo"), symlinks=True)
    (dst / "zoo").symlink_to(src / "zoo")
    return dst


@pytest.fixture
def world(tmp_path_factory, tmp_path) -> tuple[Path, Path]:
    root, run = judge_world(tmp_path_factory)
    ws = copy_world(root, tmp_path / "ws")
    return ws, ws / "reports" / run.name


def cli(ws: Path, *args: str):
    from mergeval.cli.main import main

    return CliRunner().invoke(main, ["--workspace", str(ws), *args], catch_exceptions=False)


def new_run(output: str) -> Path:
    """The run folder the command named on its line `report: <run>/report.md`."""
    match = re.search(r"^report: (.+)/report\.md$", output, re.M)
    assert match, output[-2000:]
    return Path(match.group(1))


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_regrade_makes_a_new_ranking_without_building_or_answering(world):
    ws, run = world
    shutil.rmtree(ws / ".mergeval" / "models")  # no merged weights: nothing could be answered
    answers_before = {p: p.read_text() for p in (ws / ".mergeval" / "answers").rglob("*.jsonl")}
    # Other judge settings: two sampled verdicts per answer (a new judge fingerprint).
    (ws / "judge" / "sampled.yaml").write_text(
        "backend: transformers\nmodel: zoo/proctora\nmax_tokens: 8\nsamples: 2\ntemperature: 0.8\n")

    result = cli(ws, "regrade", str(run), "--judge", "judge/sampled.yaml")
    assert result.exit_code == 0, result.output
    new = new_run(result.output)
    assert new != run and new.parent == run.parent

    assert not (ws / ".mergeval" / "models").exists()  # nothing was built
    assert {p: p.read_text() for p in (ws / ".mergeval" / "answers").rglob("*.jsonl")} == answers_before
    meta = json.loads((new / "run.json").read_text())
    assert meta["settings"]["regraded_from"] == run.name
    assert meta["settings"]["judge_settings"]["samples"] == 2
    assert meta["stages"]["build"]["executed"] == 0 and meta["stages"]["answer"]["items_executed"] == 0
    assert meta["stages"]["grade"]["items_executed"] == 3 * N_ITEMS
    old, fresh = rows(run), rows(new)
    def key(r):
        return r["model"], r["item_id"], r["answer"]

    assert [key(r) for r in old] == [key(r) for r in fresh]  # the same answers, graded again
    assert all(len(r["judge_scores"]) == 2 for r in fresh)
    assert all(len(r["judge_scores"]) == 1 for r in old)
    ranking = (new / "ranking.csv").read_text().splitlines()
    assert len(ranking) == 1 + 3 and ranking[0].startswith("model,rank,score")

    # The same regrade again: every judge call comes from the cache, nothing is graded anew.
    again = cli(ws, "regrade", run.name, "--judge", "judge/sampled.yaml")
    assert again.exit_code == 0, again.output
    meta2 = json.loads((new_run(again.output) / "run.json").read_text())
    assert meta2["stages"]["grade"]["items_executed"] == 0


def test_regrade_refuses_a_changed_suite(world):
    ws, run = world
    item = ws / "items" / "toy" / "add" / "add_000.txt"
    item.write_text(item.read_text().replace("what is", "what is really"))
    (ws / "items" / "toy" / "rev" / "rev_001.txt").unlink()
    result = cli(ws, "regrade", str(run))
    assert result.exit_code == 2
    assert "add/add_000: edited" in result.output and "rev/rev_001: removed" in result.output
    assert sorted(p.name for p in (ws / "reports").iterdir()) == [run.name]  # no new run folder


def test_regrade_names_a_missing_run(world):
    ws, _ = world
    result = cli(ws, "regrade", "no-such-run")
    assert result.exit_code == 2 and "not a run folder" in result.output
