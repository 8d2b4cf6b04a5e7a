"""Progress lines a person can read: at most one every PROGRESS_EVERY_S seconds.

    say = ProgressLines(log)
    for batch in batches:
        ...
        say(f"{model_id}: answered {done}/{total}")   # passed on only when its time has come

A stage said where it was after every batch. With one item per batch on a fast model, that
was a line per item: 2,814 lines in the toy sweep at --batch-size 1, ≈ 0.5 ms each through
Prefect's run logger (1.5 s of a 37 s sweep), and a screenful a second for whoever reads
them. On a real model a batch takes longer than the interval, and every batch is still said.
The stage's own summary line says when it is done.
"""

from __future__ import annotations

import time
from typing import Callable

PROGRESS_EVERY_S = 10.0


class ProgressLines:
    def __init__(self, log: Callable[[str], object], every_s: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.every_s, self.clock = log, every_s, clock
        self.last = clock()  # the first line comes one interval into the work

    def __call__(self, message: str) -> None:
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self.log(message)
