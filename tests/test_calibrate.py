"""Calibration: agreement statistics on hand-computed cases, strict label files, and
`mergeval calibrate` end to end with the shipped toy Proctora (labels from a run's checks)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mergeval.audit.calibrate import (
    agreement,
    append_label,
    make_label,
    midranks,
    quadratic_kappa,
    read_labels,
    round_half_up,
    spearman,
)
from mergeval.core.errors import InputError
from tests.test_regrade import N_ITEMS, cli, copy_world, judge_world

SCALE = (1, 5)


# -- statistics, each case worked out by hand ---------------------------------------------------


def test_two_by_two_case():
    # human [1,1,5,5], judge [1,5,5,5]. Quadratic weights: only the (1,5) cell disagrees, w=1.
    # observed = 1/4; marginals human (1/2, 1/2), judge (1/4, 3/4); expected = .5*.75 + .5*.25 = .5
    # kappa = 1 - .25/.5 = .5. Midranks: human [1.5,1.5,3.5,3.5], judge [1,3,3,3]: r = 2/sqrt(4*3).
    s = agreement([(1, 1), (1, 5), (5, 5), (5, 5)], SCALE)
    assert s["kappa_quadratic"] == pytest.approx(0.5)
    assert s["spearman"] == pytest.approx(1 / math.sqrt(3))
    assert s["exact"] == 0.75 and s["within_one"] == 0.75
    assert s["confusion"] == [[1, 0, 0, 0, 1], [0] * 5, [0] * 5, [0] * 5, [0, 0, 0, 0, 2]]


def test_mid_scale_case():
    # human [2,3,4], judge [3,3,5]: w = d^2/16. observed = (1/16 + 1/16)/3 = 1/24;
    # expected = 1/3 * (2/3*1/16 + 1/3*9/16 + 1/3*4/16 + 2/3*1/16 + 1/3*1/16) = 1/8; kappa = 2/3.
    s = agreement([(2, 3), (3, 3), (4, 5)], SCALE)
    assert s["kappa_quadratic"] == pytest.approx(2 / 3)
    assert s["exact"] == pytest.approx(1 / 3) and s["within_one"] == 1.0
    # ranks human [1,2,3], judge [1.5,1.5,3]: r = 1.5 / sqrt(2 * 1.5)
    assert s["spearman"] == pytest.approx(1.5 / math.sqrt(3))


def test_perfect_constant_and_one_sided_cases():
    assert quadratic_kappa([1, 2, 5], [1, 2, 5], SCALE) == pytest.approx(1.0)
    assert spearman([1, 2, 5], [1, 2, 5]) == pytest.approx(1.0)
    # Both raters gave one and the same score everywhere: chance explains all, kappa undefined.
    assert quadratic_kappa([5, 5, 5], [5, 5, 5], SCALE) is None
    assert spearman([5, 5, 5], [5, 5, 5]) is None
    # One rater constant: observed equals expected disagreement, kappa exactly 0.
    assert quadratic_kappa([1, 5, 5], [5, 5, 5], SCALE) == pytest.approx(0.0)
    assert quadratic_kappa([], [], SCALE) is None and spearman([1], [1]) is None


def test_ties_and_rounding():
    assert midranks([3, 1, 3, 2]) == [3.5, 1.0, 3.5, 2.0]
    assert [round_half_up(x) for x in (1.0, 2.5, 3.5, 4.49)] == [1, 3, 4, 4]


def test_unscored_is_counted_apart_never_as_agreement_or_zero():
    s = agreement([(5, 5.0), (1, None), (1, 1.0), (5, None), (5, 4.5)], SCALE)
    assert (s["n_labels"], s["n_scored"], s["n_unscored"]) == (5, 3, 2)
    assert s["exact"] == 1.0  # 4.5 rounds to 5; the two unscored are in no denominator
    assert sum(map(sum, s["confusion"])) == 3
    nothing = agreement([(5, None)], SCALE)
    assert nothing["exact"] is None and nothing["kappa_quadratic"] is None


# -- label files --------------------------------------------------------------------------------

GOOD = {"item_id": "add/add_000", "suite": "toy", "answer": "22", "human_score": 5, "who": "ana",
        "when": "2026-11-25T16:00:00+00:00"}


def test_label_file_problems_name_file_and_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    lines = [json.dumps(GOOD), "", json.dumps({**GOOD, "scroe": 4}), '{"item_id": "a", "item_id": "b"}',
             json.dumps({**GOOD, "human_score": 9}), json.dumps({**GOOD, "human_score": True}),
             json.dumps({**GOOD, "when": "yesterday"}), "not json"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        read_labels(path, SCALE)
    text = "\n".join(map(str, e.value.problems))
    assert f"{path}:3: unknown key 'scroe'" in text
    assert f"{path}:4: not a JSON object: repeated key(s): item_id" in text
    assert f"{path}:5: human_score 9 is outside the judge's scale 1..5" in text
    assert f"{path}:6: human_score must be a int" in text
    assert f"{path}:7: when must be an ISO 8601 time" in text
    assert f"{path}:8: not a JSON object" in text
    assert f"{path}:1" not in text and f"{path}:2" not in text


def test_append_label_refuses_a_bad_record(tmp_path):
    with pytest.raises(InputError):
        append_label(tmp_path / "l.jsonl", {**GOOD, "human_score": "5"})
    assert not (tmp_path / "l.jsonl").exists()


# -- end to end with the shipped toy Proctora -----------------------------------------------------


@pytest.fixture
def world(tmp_path_factory, tmp_path):
    root, run = judge_world(tmp_path_factory)
    ws = copy_world(root, tmp_path / "ws")
    return ws, ws / "reports" / run.name


def test_calibrate_from_run_measures_the_toy_judge(world):
    ws, run = world
    cache = ws / ".mergeval" / "judge-cache"
    calls_before = sorted(cache.rglob("*.json"))
    result = cli(ws, "calibrate", "--from-run", run.name)
    assert result.exit_code == 0, result.output
    labels = ws / "judge" / "calibration" / "from-runs" / f"{run.name}.jsonl"
    made = [json.loads(line) for line in labels.read_text().splitlines()]
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(made) == len(rows) == 3 * N_ITEMS
    assert [m["human_score"] for m in made] == [5 if r["checks"][0]["passed"] else 1 for r in rows]
    assert "weighted kappa" in result.output and "confusion (rows: human, columns: judge)" in result.output

    saved = json.loads(Path(result.output.strip().splitlines()[-1].removeprefix("saved: ")).read_text())
    # The judge graded exactly as in the sweep (same prompt, same settings): every call cached.
    assert sorted(cache.rglob("*.json")) == calls_before
    assert [g["judge_score"] for g in saved["graded"]] == [r["judge_score"] for r in rows]
    stats = saved["agreement"]
    assert stats["n_scored"] + stats["n_unscored"] == 3 * N_ITEMS
    pairs = [(m["human_score"], r["judge_score"]) for m, r in zip(made, rows)]
    assert stats == {**agreement(pairs, SCALE), "n_stale": 0}


def test_calibrate_counts_unscored_and_stale_labels(world):
    ws, _ = world
    from mergeval.inputs.items import load_items

    items = {it.id: it for it in load_items(ws / "items" / "toy")}
    labels = ws / "judge" / "calibration" / "labels.jsonl"
    append_label(labels, make_label(items["add/add_000"], "22", 5, "ana"))
    append_label(labels, make_label(items["rev/rev_000"], "a b", 1, "ana", note="wrong letters"))
    stale = make_label(items["add/add_001"], "21", 5, "bo")
    append_label(labels, {**stale, "item_hash": "0" * 64})
    # One verdict token: the judge writes "[RESULT]" and no number, so nothing can be scored.
    (ws / "judge" / "short.yaml").write_text("model: zoo/proctora\nmax_tokens: 1\nretries_unparseable: 0\n")
    result = cli(ws, "calibrate", "--judge", "judge/short.yaml")
    assert result.exit_code == 0, result.output
    assert "labels 3: scored 0, unscored 2, stale 1" in result.output
    assert "exact undefined" in result.output


def test_calibrate_names_a_label_whose_item_is_gone(world):
    ws, _ = world
    labels = ws / "judge" / "calibration" / "labels.jsonl"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text(json.dumps({**GOOD, "item_id": "add/nope"}) + "\n")
    result = cli(ws, "calibrate")
    assert result.exit_code == 2
    assert f"{labels}:1: no item 'add/nope'" in result.output
