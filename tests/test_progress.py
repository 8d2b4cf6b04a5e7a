"""Progress lines (core/progress.py): a stage says where it is at most once per interval."""

from __future__ import annotations

from mergeval.core.progress import ProgressLines


def test_lines_within_an_interval_are_not_said():
    now = [100.0]
    said = []
    say = ProgressLines(said.append, every_s=10.0, clock=lambda: now[0])
    for done in range(1, 201):  # 200 batches of one item, 0.01 s each: 2 s of work
        now[0] += 0.01
        say(f"answered {done}/200")
    assert said == []  # the stage's summary line says it is done; nothing else was due
    now[0] += 8.0  # 10 s into the work
    say("answered 201/400")
    now[0] += 9.9
    say("answered 300/400")
    now[0] += 0.1
    say("answered 301/400")
    assert said == ["answered 201/400", "answered 301/400"]


def test_a_slow_batch_is_always_said():
    now = [0.0]
    said = []
    say = ProgressLines(said.append, every_s=10.0, clock=lambda: now[0])
    for done in (32, 64, 96):  # a real model: 30 s a batch
        now[0] += 30.0
        say(f"answered {done}/96")
    assert said == ["answered 32/96", "answered 64/96", "answered 96/96"]
