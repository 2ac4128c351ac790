import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmindex.cli import app
from mmindex.data.pairs import load_pairs
from mmindex.data.questions import read_questions

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_make_charts_and_scenes_write_tables_the_other_commands_read(tmp_path):
    for command, kinds in (("make-charts", {"largest", "absent"}),
                           ("make-scenes", {"left_right", "count_where"})):
        out = tmp_path / command
        result = invoke(command, out, "--n", 8, "--size", 48, "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert summary["n_images"] == 8 and summary["n_programs"] == 8
        assert kinds <= {k for k, n in summary["questions_by_kind"].items() if n}
        assert len(load_pairs(out / "pairs.parquet")) == 8
        rows = read_questions(out / "questions.parquet")
        assert len(rows) == summary["n_questions"] and all(r[0].is_file() for r in rows)
        assert {r[3] for r in read_questions(out / "code.parquet")} == {"code"}


def test_bad_values_are_one_line_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    result = invoke("make-charts", tmp_path / "full", "--n", 1)
    assert result.exit_code == 2 and "not empty" in result.output
    result = invoke("make-scenes", tmp_path / "s", "--n", 1, "--background", "stripes")
    assert result.exit_code == 2 and "'stripes'" in result.output
    assert "Traceback" not in result.output


def test_eval_code_scores_a_table_of_written_programs(tmp_path):
    split = tmp_path / "scenes"
    assert invoke("make-scenes", split, "--n", 4, "--size", 48).exit_code == 0
    code = pq.read_table(split / "code.parquet").to_pylist()
    written = [r["answer"] for r in code[:3]] + ["not a program"]
    pq.write_table(pa.table({"image": [r["image"] for r in code], "answer": written}),
                   split / "written.parquet")
    result = invoke("eval", "code", "--questions", split / "code.parquet", "--predictions",
                    split / "written.parquet", "--limit", 0, "--json")
    assert result.exit_code == 0, result.output
    given = json.loads(result.output)["modes"]["given"]
    assert given["n"] == 4 and given["unparseable"] == 0.25 and given["mean_score"] == 0.75
    text = invoke("eval", "code", "--questions", split / "code.parquet", "--predictions",
                  split / "written.parquet", "--limit", 0)
    assert "unparseable 0.250" in text.output


def test_eval_code_needs_one_source_of_programs(tmp_path):
    split = tmp_path / "charts"
    assert invoke("make-charts", split, "--n", 2, "--size", 48).exit_code == 0
    result = invoke("eval", "code", "--questions", split / "code.parquet")
    assert result.exit_code == 2 and "--projector" in result.output
    result = invoke("eval", "code", "--questions", split / "questions.parquet",
                    "--predictions", split / "code.parquet")
    assert result.exit_code == 2 and "no rows of kind 'code'" in result.output


@pytest.mark.slow
def test_a_projector_trained_on_a_split_answers_and_writes_programs(tmp_path):
    """The tables feed train-projector, eval vqa and eval code unchanged (tiny models: the
    scores are not the point, the wiring is)."""
    from mmindex.models.llm import TEST_TINY
    from mmindex.testing import TINY

    split = tmp_path / "charts"
    assert invoke("make-charts", split, "--n", 6, "--size", 48).exit_code == 0
    result = invoke("train-projector", "--model", TINY, "--llm", TEST_TINY, "--questions",
                    split / "qa_and_code.parquet", "--qa-steps", 2, "--batch-size", 2,
                    "--image-tokens", 4, "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    result = invoke("eval", "vqa", "--questions", split / "questions.parquet", "--projector",
                    tmp_path / "p", "--per-kind", 2, "--modes", "full", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)["per_kind"]) >= {"largest", "count", "absent"}
    result = invoke("eval", "code", "--questions", split / "code.parquet", "--projector",
                    tmp_path / "p", "--limit", 3, "--json")
    assert result.exit_code == 0, result.output
    modes = json.loads(result.output)["modes"]
    assert set(modes) == {"full", "text"} and modes["full"]["n"] == 3


def test_eval_code_options_default_to_the_config():
    import dataclasses

    import typer.main

    from mmindex.eval.code import CodeEvalConfig

    command = typer.main.get_group(app).commands["eval"].commands["code"]
    defaults = {f.name: f.default for f in dataclasses.fields(CodeEvalConfig)}
    shared = [p for p in command.params if p.name in defaults and p.name != "device"]
    assert {p.name for p in shared} >= {"limit", "batch_size", "precision"}
    for param in shared:
        if param.name not in ("modes", "questions", "llm"):
            assert param.default == defaults[param.name], param.name


def test_make_documents_writes_pdfs_pages_and_tables(tmp_path):
    pytest.importorskip("fpdf", reason="needs the documents extra")
    out = tmp_path / "docs"
    result = invoke("make-documents", out, "--count", 3, "--dpi", 40, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["n_documents"] == 3 and len(list((out / "pdf").glob("*.pdf"))) == 3
    assert summary["n_pages"] == len(list((out / "images").glob("*.png")))
    rows = read_questions(out / "questions.parquet")
    assert len(rows) == summary["n_questions"] and all(r[0].is_file() for r in rows)
    result = invoke("make-documents", out, "--count", 3)
    assert result.exit_code == 2 and "not empty" in result.output
