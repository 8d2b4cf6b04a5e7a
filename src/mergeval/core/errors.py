"""Errors about the user's input: each names the file, the line and what was expected.

The CLI prints every Problem as `file:line: message` and exits with status 2; nothing is
written or merged when any problem is found (validate first, then spend GPU time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int | None  # 1-based; None when the problem is about the file as a whole
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        return f"{where}: {self.message}"


class InputError(Exception):
    """One or more problems with the user's files (recipes, items, judge settings)."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def raise_if_any(problems: list[Problem]) -> None:
    if problems:
        raise InputError(problems)


class SweepFailed(RuntimeError):
    """Some models failed; the run folder was still written for everything else."""

    def __init__(self, run_dir: str, failures: int):
        super().__init__(run_dir, failures)
        self.run_dir = run_dir
        self.failures = failures

    def __str__(self) -> str:
        return f"{self.failures} model(s) failed; see {self.run_dir}/report.md"


class MostlyUnscored(SweepFailed):
    """More than half the grades are unscored: the run folder is written, but its ranking
    says little or nothing (an all-NaN ranking is never a success)."""

    def __init__(self, run_dir: str, unscored: int, total: int, first_reason: str):
        super().__init__(run_dir, 0)
        self.args = (run_dir, unscored, total, first_reason)  # what pickle rebuilds it from
        self.unscored, self.total, self.first_reason = unscored, total, first_reason

    def __str__(self) -> str:
        return (f"{self.unscored} of {self.total} grades are unscored; the first: {self.first_reason}\n"
                f"see {self.run_dir}/report.md")
