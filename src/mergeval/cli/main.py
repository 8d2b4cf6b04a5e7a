"""mergeval's command line: the group, and every command added to it by name.

    mergeval zoo                 # build the offline toy zoo (tiny real models) once
    mergeval sweep               # merge → answer → grade → rank the toy recipes

Each command lives in the module of its family (sweep.py, search.py, judge.py, runs.py, canary.py,
orchestration.py) and never imports this one: the group imports them, and adds them here
explicitly (no registration by import).
"""

from __future__ import annotations

from pathlib import Path

import click

from mergeval.cli.canary import canary
from mergeval.cli.judge import calibrate, regrade, rubric
from mergeval.cli.orchestration import schedule, server, worker
from mergeval.cli.runs import export, leaderboard
from mergeval.cli.search import expand, search
from mergeval.cli.sweep import build_cmd, sweep, validate, zoo
from mergeval.core.exiting import exit_without_teardown
from mergeval.core.workspace import Workspace


@click.group(
    epilog="""\b
Quick start (offline, on a CPU):
  mergeval zoo          # train the toy zoo: base, two specialists, the toy Proctora
  mergeval sweep        # merge every recipe in merge_configs/toy, grade, rank
\b
Your own models:
  mergeval validate merge_configs/mine items/mine
  mergeval sweep merge_configs/mine --items items/mine --judge judge/proctora.yaml
"""
)
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path),
              help="Workspace folder (default: the nearest folder upward with merge_configs/).")
@click.pass_context
def main(ctx: click.Context, workspace: Path | None) -> None:
    """Merge LLMs with mergekit and grade every merge on your private item suite."""
    ctx.ensure_object(dict)
    ctx.obj["workspace"] = Workspace(workspace.resolve()) if workspace else Workspace.find()



for command in (zoo, validate, build_cmd, sweep, search, expand, regrade, calibrate, rubric, leaderboard, export, canary,
                server, schedule, worker):
    main.add_command(command)


def run() -> None:
    """The `mergeval` command: the group, then exit_without_teardown (core/exiting.py). An
    exception other than SystemExit ends the way Python ends it."""
    code = 0
    try:
        main()  # click's standalone mode ends in SystemExit
    except SystemExit as e:
        code = e.code
    exit_without_teardown(code)


if __name__ == "__main__":
    run()
