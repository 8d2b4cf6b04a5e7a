"""The judge goes down, slow, or returns 500s and garbage in the middle of a real sweep.

The judge is the toy Proctora served by a real `transformers serve`, reached through
tests/flaky_proxy.py, whose injected faults are the only fake. What must hold:
- a sweep that starts while the judge is down stops before any merge, saying so;
- a short outage is absorbed by retries: the results equal an unflaky sweep's;
- a long outage fails the grade stages it hits, caches no transport failure as a grade, and
  the same command once the judge is back asks only what the outage spoiled and ends
  identical to the unflaky sweep;
- a well-formed reply with no verdict is a real grade: unscored (never 0), kept, not re-asked.
"""

from __future__ import annotations

import json
import math

import pytest

from mergeval.core import store
from tests import serve
from tests.flaky_proxy import NO_VERDICT_TEXT, FlakyProxy
from tests.sweep_helpers import (
    copy_world,
    make_toy_world,
    results,
    run_dir_of,
    run_json,
    run_sweep,
    shrink_world,
)

ITEMS_PER_SKILL = 6
N_MODELS = 4  # base, spec_add, spec_rev and one merge
N_GRADES = N_MODELS * 2 * ITEMS_PER_SKILL
JUDGE = "judge/remote.yaml"
# Back-off is 0.5, 1, 2, 4 s between the 5 tries: any outage under ~7 s is absorbed.
REMOTE_JUDGE = """backend: openai
endpoint: {url}
model: {model}
max_tokens: 8
timeout_s: 3
http_retries: 4
concurrency: 2
"""


@pytest.fixture(scope="module")
def served_judge(tmp_path_factory):
    """The world, `transformers serve` on its toy Proctora, and the proxy in front of it."""
    root = tmp_path_factory.mktemp("outage")
    world = shrink_world(make_toy_world(root / "ws"), ("ties_d08.yaml",), ITEMS_PER_SKILL)
    with serve.transformers_serve([str(world / "zoo" / "proctora")], root / "serve.log") as url:
        proxy = FlakyProxy(url.removesuffix("/v1"), slow_s=4.0)
        # One item the judge cannot grade in every sweep here, flaky or not: its unscored grade
        # is part of the reference, and must be neither re-asked nor turned into a zero.
        proxy.no_verdict_for = json.dumps("\n" + question_of(world / "items/toy/add/add_000.txt") + "\n")[1:-1]
        (world / JUDGE).write_text(REMOTE_JUDGE.format(url=proxy.url, model=world / "zoo" / "proctora"))
        yield world, proxy
        proxy.close()


@pytest.fixture
def proxy(served_judge):
    proxy = served_judge[1]
    proxy.heal()
    proxy.counts.clear()
    proxy.calls.clear()
    return proxy


@pytest.fixture(scope="module")
def unflaky(served_judge):
    """The reference: the same sweep through the proxy with no fault; its run folder and calls."""
    world, proxy = served_judge
    proxy.heal()
    proxy.calls.clear()
    run_dir = run_dir_of(run_sweep(world, "--judge", JUDGE, "--max-new-tokens", "8"))
    return run_dir, {what: proxy.bodies(what) for what in ("passed", "no_verdict")}


def question_of(item_file) -> str:
    text = item_file.read_text(encoding="utf-8")
    return text.split("Question:\n", 1)[1].split("\n", 1)[0]


def sweep(ws, *args, check=True):
    return run_sweep(ws, "--judge", JUDGE, "--max-new-tokens", "8", *args, check=check)


def saved_grades(ws) -> list[dict]:
    return [r for f in sorted((ws / ".mergeval" / "grades").rglob("*.jsonl")) for r in store.read_jsonl(f)]


def test_unflaky_reference_grades_everything_but_the_unreadable_item(unflaky):
    run_dir, counts = unflaky
    rows = results(run_dir)
    assert len(rows) == N_GRADES
    unscored = [r for r in rows if r["score"] is None]
    assert [r["item_id"] for r in unscored] == ["add/add_000"] * N_MODELS  # never a zero
    assert all(r["judge_replies"] == [NO_VERDICT_TEXT] and "no verdict" in r["unscored_reason"] for r in unscored)
    # Equal prompts (two models giving the same answer) share one call: each distinct prompt is
    # one request, three for the unreadable item (asked, then re-asked twice). Counted as sets:
    # two models graded at once may both miss the call cache for the same prompt.
    assert len(counts["no_verdict"]) == 3 * len({r["judge_prompt"] for r in unscored})
    assert len(counts["passed"]) == len({r["judge_prompt"] for r in rows if r["score"] is not None})


def test_sweep_refuses_to_start_while_the_judge_is_down(served_judge, proxy, tmp_path):
    ws = copy_world(served_judge[0], tmp_path / "ws", with_state=False)
    proxy.down()
    proc = sweep(ws, check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"judge endpoint {proxy.url} is not reachable" in proc.stderr
    assert "Traceback" not in proc.stderr  # checked before Prefect starts: one clear line
    state = ws / ".mergeval"
    assert not any((state / "models").glob("*"))  # nothing merged
    assert not (state / "answers").exists() and not (ws / "reports").exists()


def test_short_outage_is_absorbed_by_retries(served_judge, proxy, unflaky, tmp_path):
    ws = copy_world(served_judge[0], tmp_path / "ws", with_state=False)
    # Refused for 0.25 s, then one 500, one garbage body, one reply slower than timeout_s: at
    # most four failed tries for any one request, and it has five.
    proxy.outage([("refuse", 0.25), ("500", 1), ("garbage", 1), ("slow", 1)], after=5)
    run_dir = run_dir_of(sweep(ws))
    assert all(proxy.counts[kind] > 0 for kind in ("refuse", "500", "garbage", "slow")), proxy.counts
    reference, reference_calls = unflaky
    assert results(run_dir) == results(reference)
    assert (run_dir / "ranking.csv").read_text() == (reference / "ranking.csv").read_text()
    assert proxy.bodies("passed") == reference_calls["passed"]  # the same requests reached the judge
    assert run_json(run_dir)["stages"]["grade"]["failed"] == 0


def test_long_outage_fails_grading_and_the_same_command_resumes_it(served_judge, proxy, unflaky, tmp_path):
    ws = copy_world(served_judge[0], tmp_path / "ws", with_state=False)
    # 15 calls pass, then two 500s, two garbage bodies, and a refused socket until healed.
    # Sequential, so that the first model is wholly graded before the outage: a remote judge
    # otherwise grades two models at once, and both would be cut.
    proxy.outage([("500", 2), ("garbage", 2), ("refuse", math.inf)], after=15)
    first = sweep(ws, "--sequential", check=False)
    assert first.returncode == 1, first.stdout[-2000:] + first.stderr[-3000:]
    assert proxy.counts["500"] and proxy.counts["garbage"], proxy.counts
    failures = run_json(run_dir_of(first))["failures"]  # the report is written all the same
    assert failures and {f["stage"] for f in failures} == {"grade"}
    assert all("judge endpoint" in f["error"] for f in failures), failures
    # No transport failure is saved as a grade: the only unscored grades are the unreadable item's.
    saved = saved_grades(ws)
    assert 0 < len(saved) < N_GRADES
    assert all(g["score"] is not None or g["judge_replies"] == [NO_VERDICT_TEXT] for g in saved), \
        [g["unscored_reason"] for g in saved if g["score"] is None]
    asked_before = proxy.bodies("passed") | proxy.bodies("no_verdict")
    first_run_calls = len(proxy.calls)

    proxy.heal()
    second = run_dir_of(sweep(ws))
    grade = run_json(second)["stages"]["grade"]
    assert grade["items_executed"] == N_GRADES - len(saved)  # exactly what the outage spoiled
    reference, reference_calls = unflaky
    # the re-run asked nothing the judge had already answered (its replies are cached), the
    # unreadable item included, and both runs together asked what the unflaky sweep asked
    asked_again = proxy.bodies("passed", first_run_calls) | proxy.bodies("no_verdict", first_run_calls)
    assert not asked_again & asked_before
    assert proxy.bodies("passed") == reference_calls["passed"]
    assert proxy.bodies("no_verdict") == reference_calls["no_verdict"]
    assert results(second) == results(reference)
    assert (second / "ranking.csv").read_text() == (reference / "ranking.csv").read_text()
