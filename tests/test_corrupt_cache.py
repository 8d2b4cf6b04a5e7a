"""Issue #7: a cache entry truncated or altered on disk is detected by its hash and recomputed.

Stage outputs and how each is checked:
- answers and grades (JSON-lines): every record carries a checksum of its own content;
- a built merge: its completion marker lists each file's size and sha256 (sizes are checked
  whenever the sweep asks whether it is built; hashes when it is about to be answered);
- Proctora's call cache: a file that does not read back as a whole call is a miss;
- Prefect's persisted task results: each summary is sealed; a damaged one reruns its task.
After one real sweep, every kind is damaged at once and the same command runs again: each
damage must be reported and only the damaged entries recomputed, giving the undamaged results.
"""

from __future__ import annotations

import json
import re

import pytest

from mergeval.core import store
from mergeval.engine import stages
from tests.fault_world import (
    N_ITEMS,
    baseline_run,
    fresh_copy,
    plan_of,
    same_results,
    small_world,
)
from tests.sweep_helpers import run_dir_of, run_json, run_sweep


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory)


@pytest.fixture(scope="module")
def baseline(world, tmp_path_factory):
    return baseline_run(world, tmp_path_factory)


def alter_string(path, line_no: int, field: str) -> None:
    """Change one character inside a record's string field: the line stays valid JSON."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    match = re.search(rf'"{field}": "(.)', lines[line_no])
    assert match, lines[line_no]
    swap = "Z" if match.group(1) != "Z" else "Y"
    lines[line_no] = lines[line_no][: match.start(1)] + swap + lines[line_no][match.end(1):]
    path.write_text("".join(lines), encoding="utf-8")


def test_a_sealed_record_altered_on_disk_is_dropped_and_old_records_still_read(tmp_path):
    path = tmp_path / "grades.jsonl"
    path.write_text('{"item": 0, "score": 1.0}\n')  # written before records were sealed
    store.append_jsonl(path, [{"item": 1, "score": 0.5}, {"item": 2, "score": 0.25}], sealed=True)
    path.write_text(path.read_text().replace('"score": 0.5', '"score": 0.9'))
    assert [r["item"] for r in store.read_jsonl(path)] == [0, 2]  # no checksum field comes out
    assert store.repair_jsonl(path) == [2]
    assert [r["item"] for r in store.read_jsonl(path)] == [0, 2] and store.repair_jsonl(path) == []


def test_a_record_read_intact_then_altered_is_still_caught_in_the_same_process(tmp_path):
    """Lines checked once are not checked again (store._VERIFIED): an alteration after that
    read is a different line, checked in full."""
    path = tmp_path / "answers.jsonl"
    store.append_jsonl(path, [{"item": 1, "answer": "four"}, {"item": 2, "answer": "seven"}], sealed=True)
    assert [r["answer"] for r in store.read_jsonl(path)] == ["four", "seven"]
    path.write_text(path.read_text().replace('"four"', '"five"'))
    assert [r["answer"] for r in store.read_jsonl(path)] == ["seven"]
    path.write_text(path.read_text().replace('"five"', '"four"'))  # restored byte for byte: intact again
    assert [r["answer"] for r in store.read_jsonl(path)] == ["four", "seven"]


def test_a_built_folder_is_checked_by_size_cheaply_and_by_hash_in_full(tmp_path):
    folder = tmp_path / "merge"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(bytes(range(200)))
    store.mark_complete(folder, {"recipe": "r"})
    (folder / "README.md").write_text("a model card, replaced after every run\n")
    assert store.damage(folder) is None

    (folder / "model.safetensors").write_bytes(bytes(range(199)) + b"\xff")  # one byte flipped
    assert store.is_complete(folder)  # the size still matches...
    assert "does not match its hash" in store.damage(folder)  # ...the hash does not
    (folder / "model.safetensors").write_bytes(bytes(range(100)))  # truncated
    assert not store.is_complete(folder) and "100 bytes, 200 when built" in store.damage(folder)
    (folder / store.MARKER).write_text('{"files": {"model.safe')  # a torn marker
    assert not store.is_complete(folder)


def test_every_damaged_cache_entry_is_detected_and_recomputed(world, baseline, tmp_path):
    from prefect.results import ResultRecord

    ws = fresh_copy(world, tmp_path / "ws")
    run_sweep(ws)
    state, plan = ws / ".mergeval", plan_of(ws)
    cand = {c.name: c for c in plan.candidates}

    def answers(name):
        return stages.answers_path(plan, cand[name])

    for name in ("base", "ties_d08", "task_arithmetic_w10"):  # one answer each
        alter_string(answers(name), 1, "answer")
    alter_string(stages.grades_path(plan, cand["spec_add"]), 2, "answer")  # one grade
    ties = cand["ties_d08"].path / "model.safetensors"
    with open(ties, "r+b") as f:  # a merge's weights cut short
        f.truncate(ties.stat().st_size // 2)
    ta = cand["task_arithmetic_w10"].path / "model.safetensors"
    data = bytearray(ta.read_bytes())
    data[len(data) * 3 // 4] ^= 0x01  # one bit flipped in a weight: same size
    ta.write_bytes(bytes(data))
    for call in (state / "judge-cache").rglob("*.json"):  # every judge call cut short
        call.write_bytes(call.read_bytes()[: call.stat().st_size // 2])
    results = state / "prefect-results"
    cut = results / stages.grade_stage_key(plan, cand["spec_rev"])
    cut.write_bytes(cut.read_bytes()[:150])  # Prefect alone would silently rerun this one
    altered = results / stages.answer_key(plan, cand["spec_rev"])
    record = ResultRecord.deserialize(altered.read_bytes())
    record.result = {**record.result, "cached": record.result["cached"] + 5}  # valid, but wrong
    altered.write_bytes(record.serialize())

    proc = run_sweep(ws)
    log = proc.stdout + proc.stderr
    assert "the built merge" in log and "model.safetensors is" in log  # truncated: size
    assert "does not match its hash from when it was built" in log  # bit flip: hash
    assert log.count("damaged saved answer(s) dropped") == 3
    assert "1 damaged saved grade(s) dropped" in log
    assert f"{cut.name} is damaged (unreadable" in log
    assert f"{altered.name} is damaged (its checksum does not match" in log
    run = run_json(run_dir_of(proc))["stages"]
    assert (run["build"]["executed"], run["build"]["repaired"]) == (2, 2)
    assert (run["answer"]["items_executed"], run["answer"]["repaired"]) == (3, 3)
    assert (run["grade"]["items_executed"], run["grade"]["repaired"]) == (1, 1)
    assert run["answer"]["items_cached"] + run["answer"]["items_executed"] == 5 * N_ITEMS
    judge_calls = [json.loads(p.read_text()) for p in (state / "judge-cache").rglob("*.json")
                   if p.read_text().endswith("}\n")]
    assert judge_calls  # the regraded item's judge call was made again and saved whole
    # That call ran alone, not in the batch of 8 it first ran in: the transformers judge's
    # verdict probabilities move in the 8th digit with batch padding (its verdict does not).
    same_results(run_dir_of(proc), baseline, close=("judge_weighted",))
