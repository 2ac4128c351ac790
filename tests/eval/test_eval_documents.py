"""eval documents: recall of a make-documents split's queries over an index of its page
images and page texts (the index PDF ingest writes is measured in docs/documents.md)."""

from __future__ import annotations

import pytest

pytest.importorskip("fpdf", reason="needs the documents extra")

from mmindex import IngestConfig, ingest
from mmindex.data.documents import write_documents
from mmindex.errors import UserInputError
from mmindex.eval.documents import SYSTEMS, DocumentsEvalConfig, run_documents_eval
from mmindex.testing import TINY


@pytest.mark.slow  # ~10 s: a split, an ingest, five rankings per query
def test_recall_by_text_layer_page_image_and_both(tmp_path):
    split = tmp_path / "docs"
    write_documents(split, 8, seed=2, dpi=40)
    ingest(IngestConfig(roots=(split / "images", split / "text"), index_dir=tmp_path / "idx",
                        model=TINY, precision="fp32"))
    report = run_documents_eval(DocumentsEvalConfig(split, tmp_path / "idx"))
    assert set(report.systems) == {name for name, _, _ in SYSTEMS}
    assert report.both_by == "fused in the eval"  # PNGs and a corpus: no page links
    lexical = report.systems["text, lexical"]
    assert lexical.n_queries == report.n_queries > 0
    # the queries name numbers only their document holds: BM25 finds nearly all
    assert lexical.recall_at_5 >= 0.8
    for scores in report.systems.values():
        assert 0 <= scores.recall_at_1 <= scores.recall_at_5 <= 1


@pytest.mark.slow  # a PDF ingest
def test_over_pdf_ingest_both_is_the_searchers_own_hybrid(tmp_path):
    split = tmp_path / "docs"
    write_documents(split, 4, seed=5, dpi=40)
    ingest(IngestConfig(roots=(split / "pdf",), index_dir=tmp_path / "idx", model=TINY,
                        precision="fp32"))
    report = run_documents_eval(DocumentsEvalConfig(split, tmp_path / "idx"))
    assert report.both_by == "Index.search"  # pages linked to their text rows ('p. N')
    assert report.systems["text, lexical"].recall_at_5 >= 0.8  # 'p. N' rows map to pages
    assert report.n_pages_indexed["images"] == report.n_pages_indexed["texts"]


def test_a_folder_that_is_not_a_split_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="not a make-documents split"):
        run_documents_eval(DocumentsEvalConfig(tmp_path, tmp_path / "idx"))
