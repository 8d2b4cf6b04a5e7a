"""mergeval.results.load: one row per model × item, and `mergeval export` round-trips it."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from mergeval import results
from mergeval.cli.main import main
from tests.test_report import HOSTILE, MODELS, SKILLS, demo_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return demo_run(tmp_path_factory.mktemp("results"))


def test_one_row_per_model_and_item(run_dir):
    frame = results.load(run_dir)
    assert len(frame) == len(MODELS) * sum(SKILLS.values())
    assert not frame.duplicated(["model", "item_id"]).any()
    assert list(frame.columns[:9]) == ["run", "model", "model_id", "kind", "item_id", "item_hash", "skill", "weight", "score"]
    assert (frame["run"] == run_dir.name).all() and frame["model_id"].str.endswith("0123456789abcdef").all()
    unscored = frame[frame["score"].isna()]
    assert len(unscored) == 2 and unscored["unscored_reason"].str.startswith("judge:").all()
    writing = frame[frame["skill"] == "writing"]
    assert writing["checks_total"].isna().all()  # no checks: missing, not 0 of 0
    assert HOSTILE in set(frame["answer"])


def test_parquet_and_csv_round_trip(run_dir, tmp_path):
    frame = results.load(run_dir)
    path = results.export(run_dir, tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(results.load(path), frame)
    csv = results.export(run_dir, tmp_path / "r.csv", fmt="csv")
    assert len(pd.read_csv(csv)) == len(frame)


def test_export_command(run_dir):
    root = run_dir.parents[1]
    runner = CliRunner()
    out = runner.invoke(main, ["--workspace", str(root), "export", "latest", "--parquet"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == str(run_dir / "results.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "results.parquet"), results.load(run_dir))
    assert runner.invoke(main, ["--workspace", str(root), "export", run_dir.name]).exit_code == 2  # no format
    assert runner.invoke(main, ["--workspace", str(root), "export", "nope", "--csv"]).exit_code == 1
