"""README.md's "Your own models and recipes", walked through as written, on the realistic world.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_readme_walkthrough.py

The section is parsed, not copied, so the test follows the README: its layout block says what
the workspace holds, its command block is run line by line as subprocesses from the workspace
(`.venv/bin/` is the folder of sys.executable), its sweep file and its item example are written
as shown. The recipes name tests/real_world.py's models by hub id: one plain, one mergekit-multi
whose stages name their sources by hub id, one pinned to an older revision. The judge is the
shipped judge/proctora.yaml edited only as its comments say for a served judge, pointed at
`transformers serve` on 127.0.0.1, which serves a realistic-world Llama 3 judge by hub id (a
feedback-first chain, tests/scripted_judge.py) and, for the served-models command, the models
under test by the name `--served-model` makes. Only the endpoint's port is the test's own.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests import serve
from tests.real_world import MULTI_STAGE_RECIPES, RECIPES, build_real_world, publish
from tests.scripted_judge import SUBWORD_FEEDBACK_FIRST, make_family_scripted_judge
from tests.sweep_helpers import run_dir_of, sweep_env

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Your own models and recipes"
JUDGE_ID = "prometheus-eval/prometheus-7b-v2.0"  # the judge the shipped file's comments name
GEMMA = ("google/gemma-2-2b-it", "google/gemma-2-2b")  # the only sources the two recipes name
RECIPE_STEMS = ("gemma-linear", "gemma-two-stage")
PLAIN_ITEM = ("Question:\nwhere did the cat sit ?\n\nCriterion:\nThe answer says where the cat sat.\n"
              "Score 1: it does not say.\nScore 5: it says the cat sat on a mat.\n")


def section_blocks() -> list[str]:
    """The fenced code blocks of the README's section (up to the next `## ` heading)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + len(SECTION) + 2)
    return re.findall(r"^```[^\n]*\n(.*?)^```", text[start:end if end > 0 else None], re.M | re.S)


def block(blocks: list[str], what: str, test) -> str:
    found = [b for b in blocks if test(b)]
    assert len(found) == 1, f"README's {SECTION!r} should have one {what} block, has {len(found)}"
    return found[0]


def layout(blocks: list[str]) -> list[str]:
    """The paths the layout block lists (its first column)."""
    text = block(blocks, "layout", lambda b: b.startswith("merge_configs/"))
    return [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith(" ")]


def commands(blocks: list[str]) -> list[list[str]]:
    """The command block's commands, continuation lines joined, comments dropped, as argv."""
    text = block(blocks, "command", lambda b: b.startswith(".venv/bin/mergeval"))
    joined = re.sub(r"\\\n\s*", " ", text)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def sweep_file(blocks: list[str]) -> tuple[str, str]:
    """(its path, its text): the block whose first line is `# sweeps/<name>.yaml`."""
    text = block(blocks, "sweep file", lambda b: b.startswith("# sweeps/"))
    return text.splitlines()[0].removeprefix("# ").strip(), text


def item_example(blocks: list[str]) -> str:
    # the one-question example (the section's Conversations part shows a two-question one)
    return block(blocks, "item", lambda b: b.startswith("---\n") and b.count("\nQuestion:\n") == 1)


def lay_out(ws: Path, blocks: list[str], world, endpoint: str) -> None:
    """The workspace as the layout block says, each path filled with the realistic world's."""
    old = world.pinned[1]
    writers = {
        "merge_configs/mine/*.yaml": lambda: [
            write(ws / "merge_configs" / "mine" / f"{stem}.yaml", text.format(old=old))
            for stem, text in (("gemma-linear", RECIPES["gemma-linear"]), *MULTI_STAGE_RECIPES.items())],
        "items/mine/<skill>/*.txt": lambda: [write(ws / "items" / "mine" / "arithmetic" / "sum.txt", item_example(blocks)),
                                             write(ws / "items" / "mine" / "chat" / "cat.txt", PLAIN_ITEM)],
        "items/mine/suite.yaml": lambda: write(ws / "items" / "mine" / "suite.yaml", "max_new_tokens: 8\n"),
        "judge/proctora.yaml": lambda: serve.shipped_judge_for_server(ws / "judge", endpoint, JUDGE_ID),
    }
    path, text = sweep_file(blocks)
    writers[path] = lambda: write(ws / path, text)
    listed = layout(blocks)
    assert set(listed) == set(writers), f"the README's layout lists {listed}: lay out what it lists"
    for path in listed:
        writers[path]()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run(ws: Path, argv: list[str], endpoint: str) -> subprocess.CompletedProcess:
    """One README command, as written: the venv's executable, from the workspace, only the
    endpoint's port changed to the test server's."""
    assert argv[0] == ".venv/bin/mergeval", argv
    exe = Path(sys.executable).parent / "mergeval"
    assert exe.is_file(), f"no {exe}: the venv lacks mergeval's command (pip install -e .)"
    argv = [str(exe), *(re.sub(r"^http://127\.0\.0\.1:\d+/v1$", endpoint, a) for a in argv[1:])]
    env = sweep_env(ws)
    env.pop("MERGEVAL_WORKSPACE", None)  # found as the README says: the folder holding merge_configs/
    return subprocess.run(argv, cwd=ws, env=env, capture_output=True, text=True, timeout=600)


def ranking(run_dir: Path) -> dict[str, dict]:
    with open(run_dir / "ranking.csv", newline="") as f:
        return {row["model"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The Gemma models of the realistic world, and the judge, in this session's hub cache."""
    from huggingface_hub import constants

    hub = Path(os.environ["HF_HUB_CACHE"])
    constants.HF_HUB_CACHE = str(hub)  # as test_real_world.py: whatever imported huggingface_hub first
    world = build_real_world(tmp_path_factory.mktemp("real") / "world", hub, only=GEMMA)
    publish(hub, JUDGE_ID, make_family_scripted_judge(tmp_path_factory.mktemp("judge") / "j", SUBWORD_FEEDBACK_FIRST))
    return world


def test_the_readme_section_works_as_written(world, tmp_path):
    blocks = section_blocks()
    cmds = commands(blocks)
    assert [c[1] for c in cmds] == ["validate", "sweep", "sweep", "sweep"], cmds  # what this test checks
    ws = tmp_path / "ws"
    repo_id, old, _ = world.pinned
    models = {f"{repo_id}@{old}", *GEMMA, *RECIPE_STEMS}
    with serve.transformers_serve(["--dtype", "float32"], tmp_path / "serve.log") as url:
        lay_out(ws, blocks, world, url)
        validate, by_flags, by_file, served = cmds

        checked = run(ws, validate, url)
        assert checked.returncode == 0 and checked.stdout.startswith("ok: "), checked.stderr[-3000:]

        # The sweep, graded by the served judge: every model under its hub id or recipe stem.
        first = run(ws, by_flags, url)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
        run_dir = run_dir_of(first)
        ranked = ranking(run_dir)
        assert set(ranked) == models
        assert ranked["gemma-two-stage"]["parents"] == f"{repo_id}@{old} + google/gemma-2-2b + google/gemma-2-2b-it"
        assert ranked["gemma-two-stage"]["method"] == "linear → slerp"
        rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
        assert len(rows) == len(models) * 2 and {r["model"] for r in rows} == models
        unscored = [r for r in rows if r["judge_score"] is None]
        assert not unscored, unscored[0]  # the shipped judge file, edited as it says, reads every verdict
        assert {r["judge_score"] for r in rows} == {4.0}
        folded = {r["model"] for r in rows if r["chat_fold"]}  # the README's item has a system prompt
        assert folded == models, folded  # Gemma's template refuses it: every model here is a Gemma
        assert len([p for p in (ws / ".mergeval" / "stages").iterdir() if p.is_dir()]) == 1  # stage 1: its own build
        assert {"arithmetic", "chat"} <= set(ranked["gemma-linear"])  # skills: front matter, else the folder
        card = next(m for m in json.loads((run_dir / "run.json").read_text())["models"] if m["name"] == "gemma-two-stage")
        assert card["on_disk"] and f"`{repo_id}@{old}`" in (Path(card["path"]) / "README.md").read_text()  # kept: top-3
        report = (run_dir / "report.md").read_text()
        assert f"{repo_id}@{old}" in report and "## Chat templates" in report and "gemma-two-stage" in report

        # The same sweep from the README's sweep file: nothing left to do, the same ranking.
        again = run(ws, by_file, url)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-4000:]
        assert {m: r["score"] for m, r in ranking(run_dir_of(again)).items()} == {
            m: r["score"] for m, r in ranked.items()}

        # Served models: every model under test answered by the server, by the name the flag makes.
        assert "--served-model" in served and "--endpoint" in served
        by_server = run(ws, served, url)
        assert by_server.returncode == 0, by_server.stdout[-2000:] + by_server.stderr[-4000:]
        served_dir = run_dir_of(by_server)
        assert set(ranking(served_dir)) == models
        run_json = json.loads((served_dir / "run.json").read_text())
        assert run_json["settings"]["generation"]["backend"] == "openai"
        assert re.search(r'"answer": \{[^}]*"items_executed": 10', (served_dir / "run.json").read_text())
        served_rows = [json.loads(line) for line in (served_dir / "results.jsonl").read_text().splitlines()]
        assert all(r["judge_score"] == 4.0 for r in served_rows)

        # What the README says of {name}: a hub id is served from the cache, a recipe stem is not.
        assert ask(url, "google/gemma-2-2b") == 200 and ask(url, f"{repo_id}@{old}") == 200
        assert ask(url, "gemma-linear") >= 400
    log = (tmp_path / "serve.log").read_text(errors="replace")
    for stem in RECIPE_STEMS:  # {path}: the merges' own folders, once built
        assert f"/.mergeval/models/{stem}-" in log, stem
    assert f"{JUDGE_ID}@main" in log  # the judge, by the hub id its file names


def ask(endpoint: str, model: str) -> int:
    """The HTTP status of one short chat completion asked of `model`."""
    import urllib.error
    import urllib.request

    body = json.dumps({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(f"{endpoint}/chat/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
