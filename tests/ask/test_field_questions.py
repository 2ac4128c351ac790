"""Field questions of the document domain answered through ask's code (ask/field_questions.py):
the scoring on hand-made answers, the conditions over a small split with answerers that
read text only or images too, and the CLI."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("fpdf", reason="needs the documents extra")
pytest.importorskip("transformers")

from typer.testing import CliRunner

from mmindex import IngestConfig, ingest, open_index
from mmindex.ask.config import AskConfig
from mmindex.ask.field_questions import (
    ASK,
    BOTH,
    PAGE_IMAGE,
    TEXT_LAYER,
    FieldAnswer,
    FieldQuestionsConfig,
    document_names,
    run_field_questions,
    sample_per_kind,
    score,
)
from mmindex.ask.generator import Generator
from mmindex.cli import app
from mmindex.core.tables import read_table
from mmindex.data.documents import write_documents
from mmindex.errors import UserInputError
from mmindex.search.lexical import normalized
from mmindex.testing import TINY

runner = CliRunner()


def answered(reply, answer="1,250.00", kind="total", cited=(), abstained=False):
    return FieldAnswer(ASK, kind, "q", answer, reply, "pdf/a.pdf", 2, 3, abstained, cited)


def test_normalisation_reads_numbers_as_the_lexical_index_does():
    assert normalized("1,250.00") == normalized("1250.00") == normalized("1.250,00")
    assert normalized("The total is 1,250.00 USD.") == "the total is 1250.00 usd"
    assert normalized("-1,250.00") != normalized("1,250.00")  # a sign is kept
    assert normalized("INV-2022-2994") == normalized("inv 2022 2994")
    assert normalized("1,250.00") != normalized("1,350.00")


def test_exact_and_contained_answers_by_kind():
    answers = [answered("1250.00"), answered("The total is 1,250.00."),
               answered("1,250"), answered("Olga Eriksen", "Olga Eriksen", "customer"),
               answered("Olga", "Olga Eriksen", "customer")]
    assert [a.exact for a in answers] == [True, False, False, True, False]
    assert [a.contains for a in answers] == [True, True, False, True, False]
    scores = score(answers)
    assert scores.n == 5 and scores.exact == pytest.approx(2 / 5)
    assert scores.contains == pytest.approx(3 / 5)
    assert scores.by_kind["total"] == {"n": 3, "exact": pytest.approx(1 / 3),
                                       "contains": pytest.approx(2 / 3)}
    assert scores.cited_page is None and scores.new_tokens == 15


def test_a_number_inside_a_longer_number_is_not_contained():
    assert not answered("The total is 11,250.00", "1,250.00").contains
    assert not answered("INV-2022-29941", "INV-2022-2994", "number").contains


def test_citations_count_the_first_passage_and_abstentions():
    answers = [answered("x", cited=(("pdf/a.pdf", 2), ("pdf/b.pdf", 1))),  # right page
               answered("x", cited=(("pdf/a.pdf", 1), ("pdf/a.pdf", 2))),  # right doc, 2nd
               answered("x", cited=(("pdf/b.pdf", 2), None)),  # another document
               answered("x", cited=(), abstained=True)]
    scores = score(answers, cited=True)
    assert scores.cited_page == pytest.approx(1 / 4)
    assert scores.cited_document == pytest.approx(2 / 4)
    assert scores.page_in_passages == pytest.approx(2 / 4)
    assert scores.abstained == 1


def test_sampling_keeps_at_most_n_per_kind_in_order():
    rows = [{"kind": k, "i": i} for i, k in enumerate("aabbbbc")]
    chosen = sample_per_kind(rows, 2, seed=3)
    assert [r["kind"] for r in chosen] == ["a", "a", "b", "b", "c"]
    assert [r["i"] for r in chosen] == sorted(r["i"] for r in chosen)
    assert chosen == sample_per_kind(rows, 2, seed=3) and sample_per_kind(rows, None, 0) == rows


def test_a_document_is_named_by_a_query_that_does_not_hold_the_answer():
    names = document_names([
        {"pdf": "a.pdf", "query": "the invoice from ACME for 1,250.00"},
        {"pdf": "a.pdf", "query": "invoice INV-2024-0001"}])
    assert names["a.pdf"]("1250.00") == "invoice INV-2024-0001"
    assert names["a.pdf"]("INV-2024-0001") == "the invoice from ACME for 1,250.00"
    with pytest.raises(UserInputError, match="a.pdf"):
        document_names([{"pdf": "a.pdf", "query": "ACME"}])["a.pdf"]("ACME")


class Reader:
    """Replies with the first value of the question's kind that its [T1] passage holds
    (the split's answers, longest first): a perfect reader of the right page, and wrong
    when given the wrong one. Records what it is shown."""

    name = "reader"

    def __init__(self, answers: dict, reads_images: bool):
        self.answers, self.reads_images, self.shown = answers, reads_images, []

    def answer(self, prompt, images, max_new_tokens, on_text=None):
        self.shown.append((prompt, list(images)))
        passage = re.search(r"\[T1\] (.*?)(?:\n\[T2\]|\n\nAnswer from)", prompt, re.DOTALL)
        question = prompt.rsplit(". ", 1)[-1] if passage else prompt
        for answer in self.answers.get(question.split(": ")[-1], ()):
            if passage and answer in passage.group(1):
                return answer, 1
        return "I cannot tell", 3


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("fields")
    write_documents(root / "docs", 6, seed=4, dpi=40)
    ingest(IngestConfig(roots=(root / "docs" / "pdf",), index_dir=root / "idx", model=TINY,
                        precision="fp32"))
    answers: dict[str, list[str]] = {}
    for _, row in read_table(root / "docs" / "questions.parquet").rows:
        answers.setdefault(row["question"], []).append(row["answer"])
    return root, {q: sorted(set(a), key=len, reverse=True) for q, a in answers.items()}


def test_the_oracle_page_is_read_and_ask_cites_what_it_retrieved(split):
    root, answers = split
    reader = Reader(answers, reads_images=False)
    config = FieldQuestionsConfig(root / "docs", per_kind=2, ask_config=AskConfig(
        texts=2, joint=True, passage_mode="lexical", threshold=-1.0))
    report = run_field_questions(Generator(open_index(root / "idx"), reader), config)
    assert list(report.conditions) == [TEXT_LAYER, ASK]
    assert set(report.not_measured) == {PAGE_IMAGE, BOTH}
    assert all(images == [] for _, images in reader.shown)  # never shown a page
    oracle, asked = report.conditions[TEXT_LAYER], report.conditions[ASK]
    assert oracle.n == asked.n == report.n_questions > 0
    assert oracle.exact == 1.0  # the right page's text layer holds every answer
    # BM25 finds the named document's page: the citations map back to (pdf, page)
    assert asked.cited_document >= 0.8 and 0 <= asked.cited_page <= asked.cited_document
    rows = [a for a in report.answers if a["condition"] == ASK]
    for row in rows:
        assert normalized(row["answer"]) not in normalized(row["question"].split(": ")[0])
        assert row["cited"] and all(c[0].startswith("pdf/") for c in row["cited"])
    # the reader reads [T1] perfectly: whenever [T1] is the answer's page, the reply is exact
    right = [row for row in rows if tuple(row["cited"][0]) == (row["pdf"], row["page"])]
    assert right and all(row["exact"] for row in right)
    assert asked.cited_page == len(right) / len(rows)


def test_an_answerer_that_reads_images_gets_the_page_in_both_image_conditions(split):
    root, answers = split
    reader = Reader(answers, reads_images=True)
    config = FieldQuestionsConfig(root / "docs", per_kind=1, ask=False)
    report = run_field_questions(Generator(open_index(root / "idx"), reader), config)
    assert list(report.conditions) == [TEXT_LAYER, PAGE_IMAGE, BOTH] and not report.not_measured
    shown = reader.shown
    assert [len(images) for _, images in shown[:3]] == [0, 1, 1]
    assert shown[1][0].startswith("What") and "[T1]" in shown[2][0]  # the image alone, both
    asked = report.answers[0]
    first = next(row for _, row in read_table(root / "docs" / "questions.parquet").rows
                 if (row["pdf"], row["question"]) == (asked["pdf"], asked["question"]))
    assert shown[1][1] == shown[2][1] == [root / "docs" / first["image"]]  # its page's PNG
    assert report.conditions[PAGE_IMAGE].exact == 0.0  # no passage: this reader cannot tell
    assert report.conditions[BOTH].exact == 1.0


def test_kinds_are_chosen_by_name_and_an_unknown_one_is_refused(split):
    root, answers = split
    generator = Generator(open_index(root / "idx"), Reader(answers, False))
    report = run_field_questions(generator, FieldQuestionsConfig(
        root / "docs", kinds=("total", "number"), ask=False))
    assert {a["kind"] for a in report.answers} == {"total", "number"}
    with pytest.raises(UserInputError, match="no question kind totals"):
        run_field_questions(generator, FieldQuestionsConfig(root / "docs", kinds=("totals",)))


def test_a_folder_that_is_not_a_split_is_refused(split, tmp_path):
    root, answers = split
    with pytest.raises(UserInputError, match="not a make-documents split"):
        run_field_questions(Generator(open_index(root / "idx"), Reader(answers, False)),
                            FieldQuestionsConfig(tmp_path))


@pytest.mark.slow  # ~15 s under load: two runs of the CLI with the tiny LLM
def test_the_cli_runs_the_text_only_generator_and_reports_json(split, tmp_path):
    root, _ = split
    report = tmp_path / "report.json"
    result = runner.invoke(app, [
        "eval", "document-questions", "--split", str(root / "docs"), "--index",
        str(root / "idx"), "--generator", "llm", "--llm", TINY, "--per-kind", "1",
        "--max-new-tokens", "2", "--passage-mode", "lexical", "--threshold", "-1",
        "--report", str(report), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["generator"] == f"llm {TINY}" and set(data["conditions"]) == {TEXT_LAYER, ASK}
    assert data["conditions"][ASK]["cited_document"] is not None
    assert json.loads(report.read_text())["answers"] == data["answers"]
    assert all(a["new_tokens"] > 0 for a in data["answers"])
    shown = runner.invoke(app, [
        "eval", "document-questions", "--split", str(root / "docs"), "--index",
        str(root / "idx"), "--generator", "llm", "--llm", TINY, "--per-kind", "1",
        "--max-new-tokens", "1", "--skip", "ask"])
    assert shown.exit_code == 0 and "not measured" in shown.stdout, shown.output
    assert "text layer, oracle page" in shown.stdout and "\nask " not in shown.stdout


def test_the_cli_refuses_an_unknown_skip(split):
    root, _ = split
    result = runner.invoke(app, ["eval", "document-questions", "--split", str(root / "docs"),
                                 "--index", str(root / "idx"), "--generator", "llm",
                                 "--llm", TINY, "--skip", "images"])
    assert result.exit_code == 2 and "--skip" in result.output


@pytest.mark.slow  # a tiny random Idefics3 (SmolVLM's architecture) reading page images
def test_a_pretrained_vision_language_model_takes_every_condition(split):
    from mmindex.ask.answerers import load_answerer
    from mmindex.testing import write_tiny_idefics3

    root, _ = split
    index = open_index(root / "idx")
    answerer = load_answerer(index, str(write_tiny_idefics3(root / "idefics3")))
    config = FieldQuestionsConfig(root / "docs", per_kind=1, kinds=("total",),
                                  ask_config=AskConfig(k=1, texts=1, joint=True, max_new_tokens=2,
                                                       threshold=-1.0, passage_mode="lexical"))
    report = run_field_questions(Generator(index, answerer), config)
    assert list(report.conditions) == [TEXT_LAYER, PAGE_IMAGE, BOTH, ASK]
    assert report.n_questions == 1 and report.answers[0]["kind"] == "total"
    assert not report.not_measured and report.generator == str(root / "idefics3")
    for scores in report.conditions.values():
        assert scores.n == report.n_questions and scores.new_tokens > 0
    assert report.conditions[ASK].cited_document is not None
