"""Hostile and broken input (issue #7): every case in tests/hostile/ either works or fails.

Failing means: exit status 2, every problem as `file:line: what is wrong` naming the right
file and line, no traceback, and nothing written anywhere (the workspace and a folder beside
it are snapshotted, every path with its size and mtime, before and after). The corpus's
index is tests/hostile/README.md; CASES below holds what each case must say, and
test_every_corpus_file_has_a_case keeps the two in step with the files.

`mergeval validate` runs in-process (click's CliRunner: the real command, no start-up cost);
`mergeval sweep` runs once as a subprocess on a workspace holding several bad inputs at once,
to show it stops with status 2 before Prefect starts.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mergeval.cli.main import main
from mergeval.core.workspace import Workspace
from mergeval.inputs.items import parse_item
from mergeval.inputs.recipes import read_recipe
from mergeval.inputs.text_files import MAX_BYTES
from tests import zygote
from tests.hostile_world import CORPUS, make_world, snapshot
from tests.sweep_helpers import sweep_cmd, sweep_env

WHERE = {"recipes": "merge_configs/mine", "items": "items/mine"}

# corpus file -> (the line every report must name, or None for a problem about the file as a
# whole; words the message must hold). Cases starting ok_ must validate cleanly.
CASES: dict[str, tuple[int | None, str]] = {
    "recipes/ok_clean.yaml": (None, ""),
    "recipes/ok_bom_crlf.yaml": (None, ""),
    "recipes/bad_yaml_tab.yaml": (4, "'\\t' that cannot start any token"),
    "recipes/bad_yaml_unclosed_quote.yaml": (4, "quoted scalar that starts on line 4"),
    "recipes/bad_yaml_unclosed_bracket.yaml": (7, "flow sequence that starts on line 6"),
    # several documents are a multi-stage recipe (mergekit-multi): only the final one may lack a name:
    "recipes/bad_yaml_two_documents.yaml": (4, "a second document without name: (the first is on line 2)"),
    "recipes/type_weight_string.yaml": (6, "weight must be a float, got 'abc'"),
    "recipes/type_layer_range_string.yaml": (6, "layer_range must be [start, end]"),
    "recipes/type_models_string.yaml": (3, "models: must be a list"),
    "recipes/type_weight_inf.yaml": (6, "weight must be a finite number"),
    "recipes/type_seed_too_big.yaml": (3, "random_seed must be a whole number from 0 to 2**32-1"),
    "recipes/type_huge_integer.yaml": (3, "a number with 5000 digits"),
    "recipes/type_top_level_list.yaml": (2, "a recipe is a YAML mapping"),
    "recipes/unknown_key_top.yaml": (10, "unknown key 'paramters' in the recipe (did you mean parameters?)"),
    "recipes/unknown_key_nested.yaml": (5, "unknown key 'paramters' in a models: entry"),
    "recipes/duplicate_key_top.yaml": (6, "duplicate key 'merge_method' (first set on line 2)"),
    "recipes/duplicate_key_nested.yaml": (9, "duplicate key 'density' (first set on line 8)"),
    "recipes/name_field_dotdot.yaml": (3, "unknown key 'name'"),
    "recipes/out_path_absolute.yaml": (3, "unknown key 'out_path'"),
    "recipes/source_dotdot.yaml": (4, "has no config.json"),
    "recipes/source_absolute.yaml": (4, "is a file, not a model folder"),
    "recipes/source_nul_byte.yaml": (4, "not a usable path (it holds a NUL byte)"),
    "recipes/source_name_too_long.yaml": (4, "not a usable path"),
    "recipes/alias_bomb.yaml": (8, "aliases expand to over 100,000 values"),
    "recipes/alias_recursive.yaml": (3, "alias refers to the value that contains it"),
    "recipes/deep_nesting.yaml": (1, "nested too deeply"),
    "recipes/empty.yaml": (1, "a recipe is a YAML mapping"),
    "recipes/only_comments.yaml": (1, "a recipe is a YAML mapping"),
    "recipes/enc_latin1.yaml": (1, "not UTF-8: byte 0xe9 at column 4 (Latin-1 or Windows-1252?)"),
    "recipes/enc_utf16_bom.yaml": (1, "the file is UTF-16"),
    "recipes/enc_utf16_no_bom.yaml": (1, "NUL byte in the text: a binary file, or UTF-16 without a byte order mark"),
    "recipes/binary_random.yaml": (1, "NUL byte"),
    "recipes/binary_nul.yaml": (2, "NUL byte"),
    "items/ok_clean.txt": (None, ""),
    "items/ok_bom_crlf.txt": (None, ""),
    "items/ok_cr_only.txt": (None, ""),
    "items/bad_yaml_tab.txt": (4, "'\\t' that cannot start any token"),
    "items/bad_yaml_unclosed_quote.txt": (2, "quoted scalar that starts on line 2"),
    "items/bad_yaml_unclosed_bracket.txt": (3, "flow sequence that starts on line 2"),
    "items/bad_front_never_closed.txt": (1, "never closed"),
    "items/type_weight_string.txt": (2, "weight: expected a finite number > 0, got 'abc'"),
    "items/type_weight_infinite.txt": (2, "weight: expected a finite number > 0, got inf"),
    "items/type_weight_huge_integer.txt": (2, "weight: expected a finite number > 0"),
    "items/type_checks_string.txt": (2, "checks: expected a list"),
    "items/type_regex_overflow.txt": (3, "does not compile"),
    "items/type_front_list.txt": (2, "front matter must be YAML keys and values"),
    "items/unknown_key.txt": (2, "unknown front matter key 'skil' (did you mean skill?)"),
    "items/duplicate_key.txt": (4, "duplicate key 'skill' (first set on line 2)"),
    "items/duplicate_key_nested.txt": (3, "duplicate key 'value'"),
    "items/name_id_dotdot.txt": (2, "unknown front matter key 'id' (the id is the file's path)"),
    "items/name_skill_dotdot.txt": (2, "a skill name is a label: no '/'"),
    "items/name_skill_absolute.txt": (2, "a skill name is a label: no '/'"),
    "items/name_skill_reserved.txt": (2, "'score' is a column of ranking.csv"),
    "items/alias_bomb.txt": (8, "aliases expand to over 100,000 values"),
    "items/no_question.txt": (1, "no Question section"),
    "items/no_criterion.txt": (1, "no Criterion section"),
    "items/second_question.txt": (7, "second Question section (the first is on line 1)"),
    "items/empty.txt": (1, "no Question section"),
    "items/enc_latin1.txt": (2, "not UTF-8: byte 0xe9 at column 14 (Latin-1 or Windows-1252?)"),
    "items/enc_utf16_bom.txt": (1, "the file is UTF-16"),
    "items/enc_utf16_no_bom.txt": (1, "NUL byte in the text: a binary file, or UTF-16 without a byte order mark"),
    "items/binary_random.txt": (1, "NUL byte"),
    "items/binary_nul.txt": (2, "NUL byte"),
}


def _place(ws: Path, case: str) -> Path:
    """Copy a corpus file into the workspace; returns its path there."""
    kind, name = case.split("/")
    dst = ws / WHERE[kind] / name
    shutil.copyfile(CORPUS / case, dst)
    return dst


def _validate(ws: Path, *targets: str):
    return CliRunner().invoke(main, ["--workspace", str(ws), "validate", *targets])


def _assert_refused(result, output: str, where: str, line: int | None, says: str) -> None:
    assert result.exit_code == 2, output
    assert "Traceback" not in output and (result.exception is None or isinstance(result.exception, SystemExit)), output
    prefix = f"{where}:{line}: " if line else f"{where}: "
    hits = [text for text in output.splitlines() if prefix in text]
    assert hits, f"no problem at {prefix!r} in:\n{output}"
    assert any(says in text for text in hits), f"{says!r} not said at {prefix!r}:\n{output}"


@pytest.fixture
def world(tmp_path) -> Path:
    return make_world(tmp_path)


def test_every_corpus_file_has_a_case():
    on_disk = {f"{p.parent.name}/{p.name}" for kind in WHERE for p in (CORPUS / kind).iterdir()}
    assert on_disk == set(CASES)
    index = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert [c for c in CASES if f"`{c.split('/')[1]}`" not in index] == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_corpus_case_with_validate(world, case):
    line, says = CASES[case]
    placed = _place(world, case)
    before = snapshot(world.parent)
    result = _validate(world, str(placed.parent))
    output = result.output
    if case.split("/")[1].startswith("ok_"):
        assert result.exit_code == 0 and output.startswith("ok: "), output
    else:
        _assert_refused(result, output, f"{WHERE[case.split('/')[0]]}/{placed.name}", line, says)
    assert snapshot(world.parent) == before
    assert not (world / ".mergeval").exists() and not (world / "reports").exists()


def test_bom_and_crlf_parse_exactly_like_the_clean_file(world):
    raw = {n: (CORPUS / n).read_bytes() for n in ("items/ok_bom_crlf.txt", "recipes/ok_bom_crlf.yaml")}
    assert all(b.startswith(b"\xef\xbb\xbf") and b"\r\n" in b for b in raw.values()), "the corpus lost its BOM/CRLF"
    assert b"\n" not in (CORPUS / "items/ok_cr_only.txt").read_bytes()

    ws = Workspace(world)
    clean, _ = read_recipe(_place(world, "recipes/ok_clean.yaml"), ws)
    other, _ = read_recipe(_place(world, "recipes/ok_bom_crlf.yaml"), ws)
    assert clean is not None and other is not None
    assert (other.config, other.text, other.sources) == (clean.config, clean.text, clean.sources)

    def fields(item):
        return {k: v for k, v in dataclasses.asdict(item).items() if k not in ("id", "path", "hash")}

    suite = world / "items" / "mine"
    base = parse_item(_place(world, "items/ok_clean.txt"), suite)
    assert base.skill == "arithmetic" and base.weight == 2.0 and base.score_descriptions
    for case in ("items/ok_bom_crlf.txt", "items/ok_cr_only.txt"):
        assert fields(parse_item(_place(world, case), suite)) == fields(base)


# --- cases made in the test: huge files, folders and pipes named like files, links ----------

def _huge(path: Path) -> None:
    with open(path, "wb") as f:  # sparse: 50 MB on paper, nothing on disk
        f.truncate(50 * 1024 * 1024)


def _made(ws: Path, name: str) -> tuple[str, int | None, str]:
    """Make the named case in the workspace; (the path the message names, the line it names
    (None for what is not a text file at all: a folder, a pipe, a link), what it says)."""
    items, recipes, outside = ws / "items" / "mine", ws / "merge_configs" / "mine", ws.parent / "outside"
    limit = f"at most {MAX_BYTES // 1024 // 1024} MiB"
    if name == "huge_item":
        _huge(items / "huge.txt")
        return "items/mine/huge.txt", 1, limit  # sparse zeros: no newline before the limit
    if name == "huge_recipe":
        _huge(recipes / "huge.yaml")
        return "merge_configs/mine/huge.yaml", 1, limit  # sparse zeros: no newline before the limit
    if name == "folder_named_like_item":
        (items / "q1.txt").mkdir()
        return "items/mine/q1.txt", None, "a folder named like an item file"
    if name == "folder_named_like_recipe":
        (recipes / "r.yaml").mkdir()
        return "merge_configs/mine/r.yaml", None, "a folder named like a recipe file"
    if name == "fifo_item":  # reading it would block forever
        os.mkfifo(items / "pipe.txt")
        return "items/mine/pipe.txt", None, "not a regular file"
    if name == "link_item_outside":  # a valid item, but outside the suite
        shutil.copyfile(CORPUS / "items/ok_clean.txt", outside / "secret.txt")
        (items / "leak.txt").symlink_to(outside / "secret.txt")
        return "items/mine/leak.txt", None, "outside"
    if name == "link_recipe_outside":
        shutil.copyfile(CORPUS / "recipes/ok_clean.yaml", outside / "r.yaml")
        (recipes / "r.yaml").symlink_to(outside / "r.yaml")
        return "merge_configs/mine/r.yaml", None, "outside"
    if name == "link_folder_outside":  # the walk does not enter it: reported, not skipped
        shutil.copyfile(CORPUS / "items/ok_clean.txt", outside / "q.txt")
        (items / "shared").symlink_to(outside, target_is_directory=True)
        return "items/mine/shared", None, "outside"
    if name == "link_folder_inside":  # inside the suite, but a folder: still not entered
        (items / "sub").mkdir()
        (items / "again").symlink_to(items / "sub", target_is_directory=True)
        return "items/mine/again", None, "links to folders are not followed"
    if name == "link_dangling":
        (items / "gone.txt").symlink_to(ws / "nowhere.txt")
        return "items/mine/gone.txt", None, "broken link"
    if name == "link_loop":
        (items / "loop.txt").symlink_to(items / "loop.txt")
        return "items/mine/loop.txt", None, "broken link"
    raise AssertionError(name)


MADE = ("huge_item", "huge_recipe", "folder_named_like_item", "folder_named_like_recipe", "fifo_item",
        "link_item_outside", "link_recipe_outside", "link_folder_outside", "link_folder_inside", "link_dangling",
        "link_loop")


@pytest.mark.parametrize("name", MADE)
def test_made_case_with_validate(world, name):
    where, line, says = _made(world, name)
    target = "items/mine" if where.startswith("items") else "merge_configs/mine"
    if target == "items/mine":  # a good item beside it: only the hostile entry is refused
        _place(world, "items/ok_clean.txt")
    before = snapshot(world.parent)
    result = _validate(world, target)
    _assert_refused(result, result.output, where, line, says)
    assert snapshot(world.parent) == before


def test_links_inside_the_suite_still_work(world):
    """A link to another item of the same suite is followed: only links out are refused."""
    real = _place(world, "items/ok_clean.txt")
    (real.parent / "alias.txt").symlink_to(real.name)
    result = _validate(world, "items/mine")
    assert result.exit_code == 0, result.output


def test_sweep_on_bad_input_exits_2_before_prefect_and_writes_nothing(world):
    """One subprocess (Prefect's start-up is the slow part) with several hostile inputs at once:
    every one is reported, the exit status is 2, and nothing appears in the workspace."""
    cases = ["recipes/bad_yaml_tab.yaml", "recipes/name_field_dotdot.yaml", "items/name_skill_dotdot.txt",
             "items/enc_utf16_no_bom.txt"]
    for case in cases + ["recipes/ok_clean.yaml", "items/ok_clean.txt"]:
        _place(world, case)
    made = [_made(world, n) for n in ("huge_item", "link_item_outside")]
    before = snapshot(world.parent)
    # Prefect's own home (its database) lies outside the snapshot, as ~/.prefect would: the
    # sweep may start Prefect's temporary server while it checks the inputs (early_server.py).
    env = sweep_env(world, home=world.parent.parent / f"{world.parent.name}-prefect")
    proc = zygote.run(sweep_cmd(world, "merge_configs/mine", "--items", "items/mine"),
                      env=env, capture_output=True, text=True, timeout=300, cwd=world, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output and "nothing was run" in output
    for case in cases:
        line, says = CASES[case]
        kind, name = case.split("/")
        assert f"{WHERE[kind]}/{name}:{line}: " in output and says in output, output
    for where, line, says in made:
        assert (f"{where}:{line}: " if line else f"{where}: ") in output and says in output, output
    assert snapshot(world.parent) == before
    assert not any((world / d).exists() for d in (".mergeval", "reports"))


def test_a_huge_text_file_is_refused_at_the_line_that_passes_the_limit(world):
    line = "Question: " + "x" * 49 + "\n"  # 60 bytes a line
    (world / "items" / "mine" / "long.txt").write_text(line * 20_000)  # 1.2 MB
    before = snapshot(world.parent)
    result = _validate(world, "items/mine")
    _assert_refused(result, result.output, "items/mine/long.txt", MAX_BYTES // len(line) + 1, "this line passes it")
    assert snapshot(world.parent) == before
