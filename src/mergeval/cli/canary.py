"""`mergeval canary MODEL`: does a model complete the item suite's canary strings?

    mergeval canary ~/models/some-merge --items items/roleplay
    # exit 0: no canary completed; 1: at least one was (the suite likely leaked into its
    # training data); 2: bad input (no such model, an invalid item, no canary in the items)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mergeval.cli.common import EXIT_BAD_INPUT, fail_on_input
from mergeval.core.errors import InputError


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--items", "items_dir", default="items", show_default=True,
              help="Item folder whose `canary:` strings are checked (every suite below it).")
@click.option("--trust-remote-code", is_flag=True, help="Let MODEL run the Python in its folder (off by default).")
@click.option("--device", default="cpu", show_default=True, help="Where the model runs: cpu, cuda, cuda:1, mps.")
@click.pass_context
def canary(ctx: click.Context, model: Path, items_dir: str, trust_remote_code: bool, device: str) -> None:
    """Give MODEL each canary's first half and see whether it writes the rest (exit 1 if so).

    \b
    A canary counts as completed when greedy decoding writes back at least 80 % of its
    second half, from the start, ignoring whitespace and case.
    """
    from mergeval.audit import canary as canaries
    from mergeval.inputs.items import load_items

    ws = ctx.obj["workspace"]
    folder, model_dir = ws.resolve(items_dir), ws.resolve(model)
    try:
        found = canaries.distinct_canaries(load_items(folder))
    except InputError as e:
        fail_on_input(e)
    if not found:
        click.echo(f"{folder}: no item carries a canary (add `canary: <string>` to an item's front matter)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if not (model_dir / "config.json").is_file():
        click.echo(f"{model_dir}: not a model folder (no config.json)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        verdicts = canaries.check_model(model_dir, found, trust_remote_code=trust_remote_code, device=device)
    except (OSError, ValueError) as e:  # an unloadable folder, or its own code refused (trust off)
        click.echo(f"{model_dir}: cannot load the model: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    for v in verdicts:
        click.echo(f"{'COMPLETED' if v.leaked else 'clean':9}  {v.reproduced:4.0%} of the rest  {v.canary}")
    leaked = sum(v.leaked for v in verdicts)
    if leaked:
        click.echo(f"{leaked} of {len(verdicts)} canaries completed: {model} has likely seen these items "
                   "in training; its scores on them are not an unseen exam.")
        sys.exit(1)
    click.echo(f"none of {len(verdicts)} canaries completed.")
