"""make-shapes --style, finetune --augment and eval retrieval per style from the CLI."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from mmindex.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_make_shapes_style_mix_then_eval_reports_each_style_and_a_transfer_table(tmp_path):
    out = tmp_path / "mixed"
    result = invoke("make-shapes", out, "--n", 12, "--size", 32, "--style", "flat,rotated",
                    "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["styles"] == ["flat", "rotated"]
    assert pq.read_table(out / "pairs.parquet").column("style").to_pylist() == [
        "flat", "rotated"] * 6
    result = invoke("eval", "retrieval", "--pairs", out / "pairs.parquet",
                    "--model", "test-tiny", "--model", "test-tiny")
    assert result.exit_code == 0, result.output
    assert "flat: strict" in result.output and "rotated: matched" in result.output
    assert "| model | trained on | flat | rotated |" in result.output
    assert result.output.count("| test-tiny | not recorded |") == 2
    report = json.loads(invoke("eval", "retrieval", "--pairs", out / "pairs.parquet",
                               "--model", "test-tiny", "--json").output)
    assert set(report["by_style"]) == {"flat", "rotated"} and report["trained_styles"] is None
    assert report["by_style"]["flat"]["strict"]["text_to_image"]["n_queries"] == 6


def test_bad_style_and_bad_augment_are_one_line_errors_naming_the_value(tmp_path):
    result = invoke("make-shapes", tmp_path / "x", "--n", 2, "--style", "flat,wobbly")
    assert result.exit_code == 2 and "'wobbly'" in result.output and "textured" in result.output
    invoke("make-shapes", tmp_path / "ok", "--n", 20, "--size", 32)
    result = invoke("finetune", "--pairs", tmp_path / "ok" / "pairs.parquet", "--model",
                    "test-tiny", "--out", tmp_path / "run", "--augment", "heavy")
    assert result.exit_code == 2 and "'heavy'" in result.output and "light" in result.output
    assert not (tmp_path / "run").exists()
