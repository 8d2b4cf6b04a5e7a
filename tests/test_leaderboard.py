"""The leaderboard ranks runs together only when they sat the same exam, and says what it left out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mergeval import results
from mergeval.cli.main import main
from mergeval.core import store
from mergeval.runs import leaderboard
from tests.test_report import MODELS, demo_run


def clone_run(src: Path, name: str, prefix: str, suite: bool = False, judge: bool = False) -> Path:
    """A copy of `src` as another run: models renamed, and optionally another suite or judge."""
    dst = src.parent / name
    shutil.copytree(src, dst)
    run = json.loads((dst / "run.json").read_text())
    run["run"] = name
    for m in run["models"]:
        m["name"], m["model_id"] = prefix + m["name"], prefix + m["model_id"]
    if suite:
        run["hashes"]["items"].popitem()
    if judge:
        run["hashes"]["judge"]["fingerprint"] = "e" * 64
    store.write_json(dst / "run.json", run)
    records = [{**r, "model": prefix + r["model"]} for r in store.read_jsonl(dst / "results.jsonl")]
    store.write_atomic(dst / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return dst


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    first = demo_run(tmp_path_factory.mktemp("board"))  # 20261125T120000Z_…
    clone_run(first, "20261124T000000Z_suite0", "s_", suite=True)
    clone_run(first, "20261124T000000Z_judge0", "j_", judge=True)
    clone_run(first, "20261126T000000Z_second", "b_")  # the newest: its group is ranked
    (first.parent / "README.md").write_text("not a run")
    (first.parent / "broken").mkdir()
    return first.parent


def test_ranks_comparable_runs_together_and_says_what_it_left_out(reports):
    board = leaderboard.build([reports])
    assert len(board.runs) == 2 and len(board.table) == 2 * len(MODELS)
    why = dict(board.left_out)
    assert why["20261124T000000Z_suite0"].startswith("different item suite")
    assert why["20261124T000000Z_judge0"].startswith("different judge settings")
    assert why["broken"] == "not a run folder (no run.json)"
    table = board.table.set_index("model")
    assert table.loc["ties_mix", "score"] == table.loc["b_ties_mix", "score"]  # same grades, paired items
    assert (table["ci_low"] <= table["score"]).all() and list(board.table["rank"])[0] == 1


def test_never_mixes_suites(reports):
    board = leaderboard.build([reports], like="20261124T000000Z_suite0")
    assert board.runs == ["20261124T000000Z_suite0"] and set(board.table["model"]).issubset(
        {"s_" + m for m in MODELS})
    assert sum(why.startswith("different item suite") for _, why in board.left_out) == 3
    with pytest.raises(ValueError):
        leaderboard.build([reports], like="no-such-run")


def test_a_model_in_several_runs_is_counted_once(reports, tmp_path):
    again = tmp_path / "reports"
    first = sorted(p.name for p in reports.glob("20261125*"))[0]
    shutil.copytree(reports / first, again / first)
    shutil.copytree(reports / "20261126T000000Z_second", again / "20261126T000000Z_second")
    shutil.copytree(again / "20261126T000000Z_second", again / "20261127T000000Z_rerun")
    run = results.read_run(again / "20261127T000000Z_rerun")
    store.write_json(again / "20261127T000000Z_rerun" / "run.json", {**run, "run": "20261127T000000Z_rerun"})
    board = leaderboard.build([again])
    assert len(board.table) == 2 * len(MODELS)
    runs = dict(zip(board.table["model"], board.table["run"]))
    assert runs["b_ties_mix"] == "20261127T000000Z_rerun" and runs["ties_mix"] == first


def test_leaderboard_command(reports):
    out = CliRunner().invoke(main, ["--workspace", str(reports.parent), "leaderboard"])
    assert out.exit_code == 0, out.output
    assert "b_ties_mix" in out.output and "Left out:" in out.output and "different judge settings" in out.output
    data = json.loads(CliRunner().invoke(main, ["--workspace", str(reports.parent), "leaderboard", "--json"]).output)
    assert len(data["models"]) == 2 * len(MODELS) and len(data["left_out"]) == 3
