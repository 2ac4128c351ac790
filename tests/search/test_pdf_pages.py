"""PDF pages after ingest: the CLI and the API name them `report.pdf p. 3`, the page's
thumbnail is the page, and `ask` is shown the rendered page and cites it."""

from __future__ import annotations

import io
import os

import pytest

pytest.importorskip("fpdf")
from PIL import Image
from typer.testing import CliRunner

from mmindex import IngestConfig, ingest
from mmindex.ask.config import AskConfig
from mmindex.ask.generator import Generator
from mmindex.cli import app
from mmindex.data.batches import read_image
from mmindex.search.searcher import Index
from mmindex.testing import TINY, write_pdf

PAGES = ["Invoice 1041 from ACME Corporation, total 1,250.00 EUR",
         "Delivery note for 12 crates of oranges",
         "Terms: payment within thirty days"]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    (root / "docs").mkdir()
    write_pdf(root / "docs" / "report.pdf", PAGES)
    ingest(IngestConfig(roots=(root / "docs",), index_dir=root / "idx", model=TINY,
                        precision="fp32"))
    return root / "idx"


def test_the_cli_prints_the_document_and_its_page(indexed):
    runner = CliRunner(env={"COLUMNS": "400"})  # rich would fold the long temporary path
    images = runner.invoke(app, ["search", "an invoice", "--index", str(indexed),
                                 "--where", "page = 3"])
    assert images.exit_code == 0, images.output
    assert "report.pdf p. 3" in images.output
    texts = runner.invoke(app, ["search", PAGES[1], "--index", str(indexed), "--target",
                                "texts", "-k", "1", "--mode", "vector"])
    assert texts.exit_code == 0, texts.output
    assert "report.pdf p. 2" in texts.output and "oranges" in texts.output


def test_the_api_returns_the_page_and_its_thumbnail_is_that_page(indexed):
    pytest.importorskip("fastapi", reason="needs the serve extra")
    from fastapi.testclient import TestClient

    from mmindex.serve import create_app
    from mmindex.serve.answers import Answers

    client = TestClient(create_app(indexed, answers=Answers(find_module=lambda: None)))
    thumbs = {}
    for page in (1, 2):
        response = client.get("/api/search", params={"q": "a page", "k": 5,
                                                     "filter": f"page:eq:{page}"})
        assert response.status_code == 200, response.text
        [hit] = response.json()["hits"]
        assert hit["page"] == page and hit["path"].endswith("report.pdf")
        assert hit["image_url"].endswith(f"#page={page}")
        thumb = client.get(hit["thumb_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(thumb.content))
        assert max(image.size) == 256 and image.size[0] < image.size[1]  # an A4 page
        thumbs[page] = thumb.content
    assert thumbs[1] != thumbs[2]  # each page's own, not one thumbnail a document


class PageRenderingAnswerer:
    """Loads every image it is shown through the one decode path, as the real answerers do."""

    name = "rendering"

    def __init__(self):
        self.shown = []

    def answer(self, prompt, images, max_new_tokens, on_text=None):
        for image in images:
            self.shown.append(read_image(image, 32).require().image.size)
        return "seen", 1


def test_ask_is_shown_the_rendered_page_and_cites_it(indexed, tiny_encoder):
    answerer = PageRenderingAnswerer()
    answer = Generator(Index(indexed, encoder=tiny_encoder), answerer).ask(
        PAGES[2], AskConfig(k=2, threshold=-1.0, texts=1, where="page >= 2"))
    assert sorted(c.page for c in answer.citations) == [2, 3]
    assert {os.path.basename(c.label) for c in answer.citations} == {"report.pdf p. 2",
                                                                    "report.pdf p. 3"}
    assert len(answerer.shown) == 2
    assert all(width < height for width, height in answerer.shown)  # pages, rendered
    [passage] = answer.passages
    assert passage.label.endswith("report.pdf p. 3") and passage.text == PAGES[2]
