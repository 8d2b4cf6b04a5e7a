"""Finding a finished run: the one lookup behind regrade, calibrate, export and leaderboard.

    find_run(ws, "latest")                      # the newest finished run under reports/
    find_run(ws, "20261125T154355Z_65d51f")     # by name, or a path to a run folder
"""

from __future__ import annotations

from pathlib import Path

from mergeval.core.workspace import Workspace


class RunNotFound(LookupError):
    """No run folder by that name, or no finished run at all."""


def finished_runs(reports: Path) -> list[Path]:
    """Run folders with a run.json, oldest first (names start with their UTC time). A
    `.tmp-<run>` folder is a run still being written, or left by a killed sweep: not a run."""
    if not reports.is_dir():
        return []
    return sorted(p for p in reports.iterdir() if not p.name.startswith(".") and (p / "run.json").is_file())


def find_run(ws: Workspace, run: str) -> Path:
    """A run folder: a path (as given, or relative to the workspace), a run name under
    reports/, or `latest`."""
    if run == "latest":
        runs = finished_runs(ws.reports)
        if not runs:
            raise RunNotFound(f"no finished run in {ws.reports}")
        return runs[-1]
    for path in (Path(run), ws.resolve(run), ws.reports / run):
        if not path.name.startswith(".tmp-") and (path / "run.json").is_file():
            return path
    raise RunNotFound(f"{run}: not a run folder (no run.json there or in {ws.reports / run})")
