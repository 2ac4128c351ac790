"""Lexical (BM25) and hybrid (reciprocal rank fusion) search: search/lexical.py and the
`mode` of Index.search, over a corpus of near-identical invoices that differ by amount."""

from __future__ import annotations

import json

import pytest

from mmindex import IngestConfig, ingest, open_index
from mmindex.errors import UserInputError
from mmindex.search.lexical import RRF_K, LexicalIndex, reciprocal_rank_fusion, tokenize
from mmindex.testing import TINY

AMOUNTS = ("1,250.00", "1,350.00", "12,500.00", "125.00", "2,250.00", "1,205.00",
           "950.00", "3,125.50")


@pytest.fixture(scope="module")
def invoices(tmp_path_factory):
    """An index of texts only: one invoice passage per amount (ACME, same words) and a
    line of another company, in a .jsonl corpus; ids are ingest's."""
    root = tmp_path_factory.mktemp("invoices")
    corpus = root / "docs"
    corpus.mkdir()
    lines = [{"text": f"Invoice from ACME Corp. Total due {amount} EUR"} for amount in AMOUNTS]
    lines.append({"text": "Invoice from Globex Ltd. Total due 1,250.00 EUR"})
    (corpus / "invoices.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ingest(IngestConfig(roots=(corpus,), index_dir=root / "idx", model=TINY, precision="fp32"))
    return open_index(root / "idx")


def test_numbers_keep_their_form_and_lose_their_separators():
    assert tokenize("Total: 1,250.00.") == ["total", "1250.00", "1250"]
    assert tokenize("1.250,00") == tokenize("1250.00") == ["1250.00", "1250"]
    assert "inv-2024-0153" in tokenize("Invoice INV-2024-0153")
    assert tokenize("the invoice from ACME") == ["invoice", "acme"]


def test_a_number_query_ranks_its_passage_first_where_vectors_do_not(invoices):
    lexical_first = vector_first = 0
    for amount in AMOUNTS:
        query = f"ACME invoice {amount}"
        lexical = invoices.search(query, target="texts", k=3, mode="lexical")
        vector = invoices.search(query, target="texts", k=3, mode="vector")
        lexical_first += f"{amount} EUR" in lexical[0].text and "ACME" in lexical[0].text
        vector_first += f"{amount} EUR" in vector[0].text and "ACME" in vector[0].text
    assert lexical_first == len(AMOUNTS)
    assert vector_first < len(AMOUNTS)  # the tiny model's vectors do not read amounts


def test_bm25_scores_follow_shared_tokens():
    index = LexicalIndex([10, 11, 12], ["acme total 1,250.00", "acme total 1,350.00",
                                        "globex total 990.00"])
    scores, ids = index.search("acme 1250.00", k=3)
    assert ids.tolist() == [10, 11]  # 12 shares no token with the query: not a candidate
    assert scores[0] > scores[1] > 0
    _, ids = index.search("acme 1250.00", k=3, allowed=[11, 12])
    assert ids.tolist() == [11]
    _, ids = index.search("acme", k=3, excluded_terms=["1,350.00"])
    assert ids.tolist() == [10]
    for nothing_to_index in ([], ["the of a"]):  # no texts, or stop words only: no hits
        empty = LexicalIndex(list(range(len(nothing_to_index))), nothing_to_index)
        assert empty.search("acme", k=3)[1].tolist() == []


def _rrf_by_hand(rankings, item):
    return sum(1 / (RRF_K + r.index(item) + 1) for r in rankings if item in r)


def test_reciprocal_rank_fusion_orders_by_summed_reciprocal_ranks():
    vector, lexical = [7, 3, 9, 4], [4, 8, 7]
    fused = reciprocal_rank_fusion([vector, lexical], k=10)
    expected = sorted(set(vector) | set(lexical),
                      key=lambda i: -_rrf_by_hand([vector, lexical], i))
    assert [f.id for f in fused] == expected
    assert fused[0].id == 7  # ranks 1 and 3 beat 4's ranks 4 and 1
    assert fused[0].score == pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + 3))
    # equal fused scores and equal best ranks: the lower id first
    tied = reciprocal_rank_fusion([[1, 3], [2, 8]], k=4)
    assert [f.id for f in tied] == [1, 2, 3, 8]
    assert len(reciprocal_rank_fusion([vector, lexical], k=2)) == 2


def test_hybrid_merges_both_rankings_and_keeps_where(invoices):
    query = "ACME invoice 1,250.00"
    vector = [h.id for h in invoices.search(query, target="texts", k=100, mode="vector")]
    lexical = [h.id for h in invoices.search(query, target="texts", k=100, mode="lexical")]
    hybrid = invoices.search(query, target="texts", k=4, mode="hybrid")
    expected = sorted(set(vector) | set(lexical),
                      key=lambda i: (-_rrf_by_hand([vector, lexical], i), i))[:4]
    assert [h.id for h in hybrid] == expected
    assert [h.rank for h in hybrid] == [1, 2, 3, 4] and hybrid[0].score > hybrid[3].score
    assert invoices.search(query, target="texts", k=4)[0].id == hybrid[0].id  # the default
    filtered = invoices.search(query, target="texts", k=4, mode="hybrid",
                               where="text LIKE '%Globex%'")
    assert [h.text for h in filtered] == ["Invoice from Globex Ltd. Total due 1,250.00 EUR"]
    for mode in ("lexical", "vector"):
        hits = invoices.search(query, target="texts", k=9, mode=mode, where="text LIKE '%Globex%'")
        assert [h.text for h in hits] == [filtered[0].text]


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "bm25"}, "search mode must be one of vector, lexical, hybrid"),
    ({"mode": "lexical", "min_score": 0.2}, "--min-score"),
    ({"mode": "hybrid", "vector": [1.0] * 8, "query": None}, "searches by words"),
])
def test_bad_modes_are_typed_errors(invoices, kwargs, message):
    kwargs = {"query": "ACME"} | kwargs
    with pytest.raises(UserInputError, match=message):
        invoices.search(target="texts", **kwargs)


def test_the_lexical_index_is_kept_per_generation(invoices):
    assert invoices.lexical() is invoices.lexical()
    assert len(invoices.lexical()) == len(AMOUNTS) + 1


def test_the_cli_takes_a_mode_flag(invoices):
    from typer.testing import CliRunner

    from mmindex.cli import app

    def search(*flags):
        return CliRunner().invoke(app, ["search", "ACME 3,125.50", "--target", "texts",
                                        "--index", str(invoices.root), "--json", *flags])

    result = search("--mode", "lexical", "-k", "1")
    assert result.exit_code == 0, result.output
    assert "3,125.50" in json.loads(result.output)[0]["text"]
    result = search("--mode", "bm25")
    assert result.exit_code == 2 and "search mode must be one of" in result.output


def test_the_api_takes_a_mode_parameter(invoices):
    pytest.importorskip("fastapi", reason="needs the serve extra")
    from fastapi.testclient import TestClient

    from mmindex.serve import create_app
    from mmindex.serve.answers import Answers

    client = TestClient(create_app(invoices.root, answers=Answers(find_module=lambda: None)))
    params = {"q": "ACME 3,125.50", "target": "texts", "k": 1}
    response = client.get("/api/search", params=params | {"mode": "lexical"})
    assert response.status_code == 200, response.text
    assert "3,125.50" in response.json()["hits"][0]["text"]
    response = client.get("/api/search", params=params | {"mode": "bm25"})
    assert response.status_code == 400 and "mode" in response.json()["message"]
    response = client.get("/api/search", params=params | {"mode": "hybrid", "min_score": 0.5})
    assert response.status_code == 400 and "--min-score" in response.json()["message"]


@pytest.mark.slow  # a PDF ingest of its own
def test_pages_are_found_through_their_text_layer(tmp_path):
    """Over images, lexical ranks a PDF's page by its text rows (same path, key 'p. N');
    hybrid fuses that with the page images' vectors; --where still applies."""
    pytest.importorskip("fpdf", reason="needs fpdf2 to write the PDF")
    from mmindex.testing import photo, write_pdf

    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "a.pdf", [f"Invoice ACME total {amount}" for amount in AMOUNTS[:3]])
    photo(64, 48, 1).save(folder / "holiday.jpg")
    ingest(IngestConfig(roots=(folder,), index_dir=tmp_path / "idx", model=TINY,
                        precision="fp32"))
    index = open_index(tmp_path / "idx")
    for page, amount in enumerate(AMOUNTS[:3], start=1):
        hits = index.search(f"ACME {amount}", k=5, mode="lexical")
        assert (hits[0].path.endswith("a.pdf"), hits[0].page) == (True, page)
        assert len(hits) == 3  # the photo has no text: lexically it is never found
    query = f"ACME {AMOUNTS[1]}"
    vector = [h.id for h in index.search(query, k=100, mode="vector")]
    lexical = [h.id for h in index.search(query, k=100, mode="lexical")]
    hybrid = [h.id for h in index.search(query, k=4, mode="hybrid")]
    assert hybrid == sorted(set(vector) | set(lexical),
                            key=lambda i: (-_rrf_by_hand([vector, lexical], i), i))[:4]
    kept = index.search(query, k=4, mode="hybrid", where="page = 3")
    assert [h.page for h in kept] == [3]


@pytest.mark.slow  # two ingests
def test_a_commit_that_leaves_the_texts_alone_keeps_the_bm25_index(tmp_path):
    from mmindex.testing import photo

    folder = tmp_path / "mixed"
    (folder / "notes").mkdir(parents=True)  # (a text beside photos is not a corpus)
    (folder / "notes" / "a.txt").write_text("Invoice from ACME Corp. Total due 1,250.00 EUR")
    photo(64, 48, 1).save(folder / "one.jpg")
    ingest(IngestConfig(roots=(folder,), index_dir=tmp_path / "idx", model=TINY))
    before = open_index(tmp_path / "idx")
    bm25 = before.lexical()
    photo(64, 48, 2).save(folder / "two.jpg")  # an images-only commit
    ingest(IngestConfig(roots=(folder,), index_dir=tmp_path / "idx", model=TINY))
    after = before.reopened()
    assert after.manifest.generation > before.manifest.generation
    assert after.lexical() is bm25
    (folder / "notes" / "b.txt").write_text("Invoice from Globex Ltd. Total due 990.00 EUR")
    ingest(IngestConfig(roots=(folder,), index_dir=tmp_path / "idx", model=TINY))
    latest = after.reopened()
    assert latest.lexical() is not bm25 and len(latest.lexical()) == 2
