"""The document domain (data/documents.py): fields stored are the PDF's text, page images
are the PDF's pages, the same seed writes the same bytes."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("fpdf", reason="needs the documents extra")
pdfium = pytest.importorskip("pypdfium2", reason="needs the documents extra")

from PIL import Image

from mmindex.data.documents import write_documents
from mmindex.errors import UserInputError

COUNT = 14
DPI = 50  # small pages: the test renders each one again


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("documents") / "split"
    write_documents(out, COUNT, seed=3, dpi=DPI)
    return out


def _rows(split, table):
    return pq.read_table(split / table).to_pylist()


def _page_texts(path) -> list[str]:
    """Each page's text layer as pdfium reads it, whitespace collapsed."""
    document = pdfium.PdfDocument(str(path))
    texts = [" ".join(page.get_textpage().get_text_range().split()) for page in document]
    document.close()
    return texts


def test_every_stored_field_is_in_the_text_layer_of_its_page(split):
    documents = _rows(split, "documents.parquet")
    assert len(documents) == COUNT
    assert {d["kind"] for d in documents} == {"invoice", "form", "statement"}
    for document in documents:
        fields = json.loads(document["fields"])
        pages = _page_texts(split / document["pdf"])
        assert len(pages) == int(document["pages"]) and 1 <= len(pages) <= 3
        for name, page in fields.pop("pages").items():
            assert fields[name] in pages[page - 1], (document["pdf"], name)
        rows = fields.get("items") or fields.get("transactions") or []
        whole = " ".join(pages)
        for row in rows:
            assert all(value in whole for value in row.values()), (document["pdf"], row)


def test_amounts_add_up(split):
    def cents(text):
        return int(re.sub(r"[,.]", "", text))

    for document in _rows(split, "documents.parquet"):
        fields = json.loads(document["fields"])
        if document["kind"] == "invoice":
            subtotal = sum(cents(i["amount"]) for i in fields["items"])
            assert cents(fields["subtotal"]) == subtotal
            assert cents(fields["total"]) == subtotal + cents(fields["tax"])
            assert all(cents(i["amount"]) == int(i["quantity"]) * cents(i["unit_price"])
                       for i in fields["items"])


def test_page_images_are_the_rendered_pdf_pages(split):
    for page in _rows(split, "pages.parquet"):
        document = pdfium.PdfDocument(str(split / page["pdf"]))
        rendered = document[int(page["page"]) - 1].render(scale=DPI / 72).to_pil()
        stored = Image.open(split / page["image"])
        assert stored.size == rendered.size
        assert np.array_equal(np.asarray(stored.convert("RGB")),
                              np.asarray(rendered.convert("RGB")))
        document.close()


def test_queries_and_questions_point_at_the_page_that_holds_their_answer(split):
    pages = {(p["pdf"], p["page"]): p for p in _rows(split, "pages.parquet")}
    questions = _rows(split, "questions.parquet")
    assert {"total", "number", "last_name", "closing_balance"} <= {q["kind"] for q in questions}
    for question in questions:
        page = pages[(question["pdf"], question["page"])]
        assert question["image"] == page["image"] and question["answer"] in page["text"]
    queries = _rows(split, "queries.parquet")
    assert len({q["query"] for q in queries}) == len(queries)  # near duplicates differ
    for query in queries:
        assert (query["pdf"], query["page"]) in pages


def test_the_same_seed_writes_the_same_bytes(split, tmp_path):
    again = tmp_path / "again"
    write_documents(again, COUNT, seed=3, dpi=DPI)
    files = sorted(p.relative_to(split) for p in split.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((split / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = tmp_path / "other"
    write_documents(other, 3, seed=4, dpi=DPI)
    assert (other / "pdf" / "d4_00000.pdf").read_bytes() != (split / "pdf" /
                                                               "d3_00000.pdf").read_bytes()


def test_bad_arguments_and_a_full_folder_are_refused(split, tmp_path):
    with pytest.raises(UserInputError, match="not empty"):
        write_documents(split, 1)
    with pytest.raises(UserInputError, match="--dpi"):
        write_documents(tmp_path / "x", 1, dpi=1000)
