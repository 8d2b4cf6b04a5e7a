"""Remembered recipe checks (check_memo.py): reused only while nothing they read has changed.

The memo exists to skip importing mergekit (and with it peft, transformers and torch) when a
sweep runs again; these tests hold it to the other half of the bargain: an edited source
model, a moved one or bad input elsewhere is never hidden by a memo.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from hostile_world import make_world

from mergeval.core.errors import InputError
from mergeval.core.workspace import Workspace
from mergeval.inputs.check_memo import remember
from mergeval.inputs.recipes import load_recipes, read_recipes

FRANKEN = """\
merge_method: passthrough
slices:
  - sources:
      - model: zoo/spec_add
        layer_range: [0, 2]
  - sources:
      - model: zoo/spec_rev
        layer_range: [2, 4]
dtype: float32
"""


def world(tmp_path):
    ws = Workspace(make_world(tmp_path))
    (ws.configs / "mine" / "franken.yaml").write_text(FRANKEN)
    return ws


def remembered(ws: Workspace):
    memos = []
    recipes = load_recipes([ws.configs / "mine"], ws, memos)
    remember(memos)
    return recipes


def memo_files(ws: Workspace):
    return sorted((ws.state / "recipe-checks").glob("*.json"))


def test_a_remembered_check_gives_the_same_recipe_without_importing_mergekit(tmp_path):
    ws = world(tmp_path)
    [fresh] = remembered(ws)
    assert len(memo_files(ws)) == 1
    probe = textwrap.dedent(f"""
        import sys
        from mergeval.inputs.recipes import load_recipes
        from mergeval.core.workspace import Workspace
        from pathlib import Path
        ws = Workspace(Path({str(ws.root)!r}))
        [r] = load_recipes([ws.configs / "mine"], ws)
        print({{"config": r.config, "sources": [str(p) for p in r.sources],
               "mergekit": "mergekit" in sys.modules, "torch": "torch" in sys.modules}})
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    seen = eval(out.stdout.strip())  # a dict literal printed by the probe above
    assert seen == {"config": fresh.config, "sources": [str(p) for p in fresh.sources],
                    "mergekit": False, "torch": False}


def test_an_edited_source_config_is_checked_again(tmp_path):
    ws = world(tmp_path)
    remembered(ws)
    config = ws.root / "zoo" / "spec_rev" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_hidden_layers": 2}))
    _, problems = read_recipes([ws.configs / "mine"], ws)
    assert any("layer" in p.message and p.line == 8 for p in problems), problems


def test_a_source_that_is_gone_is_reported_despite_the_memo(tmp_path):
    ws = world(tmp_path)
    remembered(ws)
    (ws.root / "zoo" / "spec_add" / "config.json").unlink()
    _, problems = read_recipes([ws.configs / "mine"], ws)
    assert any("spec_add" in p.message and p.line == 4 for p in problems), problems


def test_nothing_is_remembered_when_other_input_is_bad(tmp_path):
    from mergeval.engine.plan import plan_sweep

    ws = world(tmp_path)
    (ws.items / "mine" / "broken.txt").write_text("Question:\nwhat?\n")  # no Criterion, no checks
    try:
        plan_sweep(ws, ws.configs / "mine", ws.items / "mine", ws.judge_file)
    except InputError as e:
        assert any("broken.txt" in str(p.path) for p in e.problems)
    else:
        raise AssertionError("an item without a criterion or checks must be refused")
    assert not ws.state.exists()  # the good recipe's passing check was not written either


def test_validate_reads_memos_but_never_writes_one(tmp_path):
    ws = world(tmp_path)
    assert read_recipes([ws.configs / "mine"], ws)[1] == []
    assert not ws.state.exists()
