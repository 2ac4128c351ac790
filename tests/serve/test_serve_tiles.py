"""Tiles from the edges: `ingest --tiles`, `search --rerank --heatmap`, GET /api/search's
boxes and rerank, GET /api/heatmap (the grid) and /api/heatmap.png (the picture)."""

from __future__ import annotations

import io
import json

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")

from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from mmindex.cli import app
from mmindex.serve import create_app
from mmindex.serve.answers import Answers
from mmindex.testing import photo


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiled")
    for i in range(3):
        photo(320, 200, 20 + i).save(root / f"wide{i}.png")
    result = invoke("ingest", root, "--index", root / ".idx", "--model", "test-tiny",
                    "--tiles", "6", "--tile-overlap", "0.3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tiles"]["encoded"] > 0
    return root


def test_cli_search_rerank_boxes_and_heatmap_pngs(tiled, tmp_path):
    out = tmp_path / "heat"
    result = invoke("search", "a photo", "--index", tiled / ".idx", "-k", "2", "--rerank", "3",
                    "--heatmap", out, "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 2 and all(len(h.get("box", [0] * 4)) == 4 for h in hits)
    pngs = sorted(out.glob("*.png"))
    assert [p.name[:3] for p in pngs] == ["001", "002"]
    assert Image.open(pngs[0]).size == (320, 200)
    plain = json.loads(invoke("search", "a photo", "--index", tiled / ".idx", "--no-tiles",
                              "--json").stdout)
    assert all("box" not in h for h in plain)


@pytest.mark.parametrize("budget", ["0", "many", "300"])
def test_a_bad_budget_is_one_line_and_exit_code_2(tiled, budget, tmp_path):
    result = invoke("ingest", tiled, "--index", tmp_path / "x", "--model", "test-tiny",
                    "--tiles", budget)
    assert result.exit_code == 2 and "tile budget" in result.output
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_api_search_boxes_heatmap_grid_and_png(tiled):
    client = TestClient(create_app(tiled / ".idx", answers=Answers(find_module=lambda: None)))
    found = client.get("/api/search", params={"q": "a photo", "k": 3, "rerank": 3})
    assert found.status_code == 200
    hits = found.json()["hits"]
    image_id = hits[0]["id"]
    heat = client.get("/api/heatmap", params={"id": image_id, "q": "a photo"})
    assert heat.status_code == 200
    body = heat.json()
    assert (body["width"], body["height"]) == (320, 200)
    assert len(body["grid"]) == 10 and all(len(row) == 16 for row in body["grid"])
    assert 2 <= len(body["tiles"]) <= 6
    best = max(t["score"] for t in body["tiles"])
    if "box" in hits[0]:  # the hit's score is its best tile's
        assert best == pytest.approx(hits[0]["score"], abs=1e-4)
    png = client.get("/api/heatmap.png", params={"id": image_id, "q": "a photo"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (320, 200)
    assert client.get("/api/heatmap", params={"id": 987654, "q": "x"}).status_code == 404
    assert client.get("/api/heatmap", params={"id": image_id}).status_code == 400
    assert client.get("/api/search", params={"q": "x", "rerank": -1}).status_code == 400


@pytest.fixture(scope="module")
def tiled_pdf(tmp_path_factory):
    from mmindex.testing import write_pdf

    root = tmp_path_factory.mktemp("tiled-pdf")
    pdf = write_pdf(root / "report.pdf", ["Invoice 1041 from ACME", "Terms of payment"])
    result = invoke("ingest", root, "--index", root / ".idx", "--model", "test-tiny",
                    "--tiles", "4", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tiles"]["images"] == 2  # both pages
    return pdf


def rendered_size(pdf, page):
    """The page as ingest renders it for the tiny model: the space of its tiles' boxes."""
    from mmindex.data.batches import decode_item
    from mmindex.data.pages import page_item
    from mmindex.models.registry import load_encoder

    return decode_item(page_item(pdf, page), load_encoder("test-tiny").info.image_size).image.size


def test_page_hits_rerank_with_boxes_and_their_heatmaps_draw_over_the_rendered_page(tiled_pdf,
                                                                                   tmp_path):
    index = tiled_pdf.parent / ".idx"
    out = tmp_path / "heat"
    result = invoke("search", "an invoice", "--index", index, "-k", "2", "--rerank", "2",
                    "--heatmap", out, "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert sorted(h["page"] for h in hits) == [1, 2]
    for hit, png in zip(hits, sorted(out.glob("*.png"))):
        size = rendered_size(tiled_pdf, hit["page"])
        assert (hit["width"], hit["height"]) == size
        assert Image.open(png).size == size
        if "box" in hit:
            x0, y0, x1, y1 = hit["box"]
            assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]

    client = TestClient(create_app(index, answers=Answers(find_module=lambda: None)))
    page_id = hits[0]["id"]
    body = client.get("/api/heatmap", params={"id": page_id, "q": "an invoice"}).json()
    size = rendered_size(tiled_pdf, hits[0]["page"])
    assert (body["width"], body["height"]) == size and len(body["tiles"]) == 4
    png = client.get("/api/heatmap.png", params={"id": page_id, "q": "an invoice"})
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == size
