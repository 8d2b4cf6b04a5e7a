"""Done-when for conversations: `mergeval sweep --items <multi-turn suite>` on a tiny world
(two tiny real Llamas and their merge, the scripted judge in-process) with scripted-turn items and
one item whose later turns a simulated player writes through `transformers serve` on
127.0.0.1. Every turn is answered, the transcripts are recorded and graded, the models are
ranked, and a second run executes nothing.
"""

from __future__ import annotations

import csv
import json
import shutil

import pandas as pd
import pytest

from mergeval.results import export
from tests import serve
from tests.conftest import tiny_zoo_workspace
from tests.scripted_judge import FEEDBACK_FIRST, make_scripted_judge
from tests.sweep_helpers import REPO, results, run_dir_of, run_json, run_sweep

SUM = """---
checks:
  - max_words: 12
  - equals: "7"
    turn: 1
---
Question:
what is 3 plus 4 ?

Question:
what is 7 plus 2 ?
"""
RECAP = """---
grade: per_turn
---
Question:
what is 1 plus 2 ?

Question:
reverse a b ?

Question:
what is 3 plus 4 ?

Criterion:
Each answer is right.
"""
PLAYED = """---
player: players/toy.yaml
player_turns: 3
---
Question:
what is 1 plus 1 ?

Brief:
You ask sums.

Criterion:
The answers stay on the sums.
"""
N_TURNS = {"sum": 2, "recap": 3, "played": 3, "plain": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv-sweep")
    ws = tiny_zoo_workspace(root / "ws").root
    (ws / "merge_configs" / "mine").mkdir(parents=True)
    shutil.copy(REPO / "merge_configs" / "toy" / "linear_half.yaml", ws / "merge_configs" / "mine")
    judge = make_scripted_judge(root / "judge-model", FEEDBACK_FIRST)
    (ws / "judge").mkdir()
    shutil.copy(REPO / "judge" / "prompt.txt", ws / "judge" / "prompt.txt")
    (ws / "judge" / "scripted.yaml").write_text(f"model: {judge}\nmax_tokens: 64\nbatch_size: 4\n")
    suite = ws / "items" / "scenes"
    (suite / "players").mkdir(parents=True)
    for name, text in (("sum", SUM), ("recap", RECAP), ("played", PLAYED),
                       ("plain", "Question:\nwhat is 1 plus 2 ?\n\nCriterion:\nIs it right?\n")):
        (suite / f"{name}.txt").write_text(text)
    with serve.transformers_serve(["--dtype", "float32"], root / "serve.log") as url:
        (suite / "players" / "toy.yaml").write_text(
            f"backend: openai\nendpoint: {url}\nmodel: {ws / 'zoo' / 'spec_rev'}\nmax_new_tokens: 4\n")
        args = ("merge_configs/mine", "--items", "items/scenes", "--judge", "judge/scripted.yaml", "--max-new-tokens", "4")
        first = run_sweep(ws, *args)
        second = run_sweep(ws, *args)
    return ws, run_dir_of(first), run_dir_of(second)


def test_every_turn_is_answered_recorded_and_graded(world):
    ws, run, _ = world
    rows = results(run)
    assert {r["model"] for r in rows} == {"spec_add", "spec_rev", "linear_half"}
    for r in rows:
        assert r["score"] is not None, r["unscored_reason"]
        if r["item_id"] == "plain":
            assert "transcript" not in r  # a one-question item's line is what it always was
            continue
        turns = r["transcript"]
        assert [(m["turn"], m["role"]) for m in turns] == [
            (t, role) for t in range(1, N_TURNS[r["item_id"]] + 1) for role in ("user", "assistant")]
        assert all(m["content"] for m in turns if m["role"] == "user")
        if r["item_id"] == "played":
            assert [m["by"] for m in turns if m["role"] == "user"] == ["script", "player", "player"]
        if r["item_id"] == "sum":
            assert [c.get("turn") for c in r["checks"]] == [1, 1, 2]  # max_words on both, equals on 1
        if r["item_id"] == "recap":  # the scripted judge says 4 for each of the three answers
            assert r["turn_scores"] == [4, 4, 4] and r["weakest_turn"] == 1 and r["judge_score"] == 4
            assert r["judge_prompt"].count("=== turn") == 3 and "<<<TURN 3 ASSISTANT" in r["judge_prompt"]
    ranking = list(csv.DictReader((run / "ranking.csv").open()))
    assert [int(r["rank"]) for r in ranking] == sorted(int(r["rank"]) for r in ranking) and len(ranking) == 3
    html = (run / "report.html").read_text()
    assert "turn 3 · player (simulated)" in html and "what is 7 plus 2 ?" in html and "weakest turn" in html
    frame = pd.read_parquet(export(run))  # the transcript survives Parquet, as JSON text
    row = frame[(frame["item_id"] == "played") & (frame["model"] == "linear_half")].iloc[0]
    recorded = next(r for r in rows if r["item_id"] == "played" and r["model"] == "linear_half")
    assert json.loads(row["transcript"]) == recorded["transcript"]
    assert frame.loc[frame["item_id"] == "recap", "weakest_turn"].tolist() == [1, 1, 1]


def test_a_second_run_executes_nothing(world):
    ws, first, second = world
    stats = run_json(second)["stages"]
    for stage in ("answer", "grade"):
        assert stats[stage]["items_executed"] == 0, stats
    by_item = {(r["model"], r["item_id"]): r for r in results(first)}
    for r in results(second):  # the player's turns came from its cache: the same conversation
        assert r["transcript" if "transcript" in r else "answer"] == by_item[r["model"], r["item_id"]][
            "transcript" if "transcript" in r else "answer"]
    assert json.loads((first / "run.json").read_text())["stages"]["answer"]["items_executed"] == 3 * 4


def test_the_rubric_app_shows_replays_and_grades_a_conversation(world, tmp_path):
    from mergeval.audit.rubric.session import Desk
    from mergeval.core.workspace import Workspace
    from mergeval.proctora.settings import load_settings

    ws, run, _ = world
    w = Workspace(ws)
    desk = Desk(w, load_settings(ws / "judge" / "scripted.yaml", w), tmp_path / "labels.jsonl")
    try:
        item = desk.item("scenes", "recap")
        shown = desk.describe(item)
        assert "**Turn 3 (the player)**" in shown and "reverse a b ?" in shown
        replayed = desk.generate_local(item, str(ws / "zoo" / "spec_add"))  # turn by turn, 64 tokens a turn
        assert [line.split(":")[0] for line in replayed.splitlines() if line.startswith("[turn")] == [
            f"[turn {t}] {role}" for t in (1, 2, 3) for role in ("user", "assistant")]
        assert desk.grade(item, replayed).score == 4
        recorded = next(r for r in results(run) if r["item_id"] == "recap" and r["model"] == "spec_add")
        graded = desk.grade(item, recorded["answer"])  # a conversation pasted from results.jsonl
        assert graded.score == 4 and graded.prompt == recorded["judge_prompt"]  # exactly what the sweep asked
        assert desk.grade(item, "3\n---\nb a\n---\n7").scores == (4, 4, 4)  # scripted turns: the replies do
        with pytest.raises(ValueError, match="give the model's 3 replies"):
            desk.grade(item, "3\n---\nb a")
    finally:
        desk.close()
