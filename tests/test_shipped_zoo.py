"""The demo zoo is shipped trained: its files match their manifest, load and answer, and
`mergeval zoo` uses them as they are (training the same recipe on another CPU gives other
floats, and with them possibly another story in the demo)."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from mergeval.cli.main import main
from mergeval.zoo import shipped
from tests.sweep_helpers import REPO


def test_the_shipped_zoo_matches_its_manifest_and_its_models_answer():
    from mergeval.zoo import toy_tasks as tasks
    from mergeval.zoo.model_files import load_model
    from mergeval.zoo.training import generate
    from mergeval.zoo.vocab import ZOO_VOCAB, Codec

    zoo = REPO / "zoo"
    assert shipped.has_manifest(zoo)
    assert shipped.differences(zoo) == []
    assert {p.parent.name for p in zoo.glob("*/config.json")} == set(shipped.MODELS)
    questions = [tasks.add_question(3, 4), tasks.add_question(12, 15)]
    prompts = [tasks.prompt(q) for q in questions]
    assert generate(load_model(zoo / "spec_add"), Codec(ZOO_VOCAB), prompts) == ["7", "27"]
    assert generate(load_model(zoo / "base"), Codec(ZOO_VOCAB), prompts)[1] != "27"  # the hard sum is the specialist's


def test_mergeval_zoo_uses_the_shipped_zoo_and_names_a_damaged_file(tmp_path):
    ws = tmp_path / "ws"
    (ws / "merge_configs").mkdir(parents=True)
    shutil.copytree(REPO / "zoo", ws / "zoo")
    result = CliRunner().invoke(main, ["--workspace", str(ws), "zoo"])
    assert result.exit_code == 0, result.output
    assert "match MANIFEST.json; nothing to train" in result.output

    weights = ws / "zoo" / "spec_rev" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["--workspace", str(ws), "zoo"])
    assert result.exit_code == 2
    assert f"{weights}: its sha256 differs from MANIFEST.json" in result.output
    assert "mergeval zoo --train" in result.output
