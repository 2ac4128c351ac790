"""PDF ingest: each page a row of images (with its page), its text layer rows of texts keyed
"p. N"; broken PDFs in errors; one PDF is one file to change detection; pages streamed."""

import os
import time
import weakref

import pytest

from mmindex import IngestConfig, ingest, open_index
from mmindex.data import batches
from mmindex.data.pages import page_item, split_page_item, where_in_file
from mmindex.search.searcher import Index
from mmindex.testing import TINY, photo, write_pdf

pytest.importorskip("fpdf")

PAGES = ["Invoice 1041 from ACME Corporation, total 1,250.00 EUR",
         "Delivery note for 12 crates of oranges",
         "Terms: payment within thirty days"]


def run(folder, index_dir, **kwargs):
    return ingest(IngestConfig(roots=(folder,), index_dir=index_dir, model=TINY,
                               precision="fp32", **kwargs))


def rows(index_dir, table):
    return open_index(index_dir).rows(table).to_pylist()


def count_renders(monkeypatch) -> dict:
    """Pages rendered, and the most rendered page images alive at once."""
    seen = {"renders": 0, "alive": 0, "peak": 0}
    original = batches.render_page

    def released():
        seen["alive"] -= 1

    def counting(*args, **kwargs):
        decoded = original(*args, **kwargs)
        seen["renders"] += 1
        seen["alive"] += 1
        seen["peak"] = max(seen["peak"], seen["alive"])
        weakref.finalize(decoded.image, released)
        return decoded

    monkeypatch.setattr(batches, "render_page", counting)
    return seen


def test_page_items_name_a_page_and_nothing_else():
    assert split_page_item(page_item("/d/report.pdf", 3)) == ("/d/report.pdf", 3)
    assert split_page_item("/d/Report.PDF#page=12") == ("/d/Report.PDF", 12)
    for other in ("/d/photo.jpg", "/d/report.pdf", "/d/report.pdf#page=0", "/d/a.jpg#page=2"):
        assert split_page_item(other) is None
    assert where_in_file("report.pdf", page=3) == "report.pdf p. 3"
    assert where_in_file("report.pdf", key="p. 3") == "report.pdf p. 3"
    assert where_in_file("notes.csv", key="row 12") == "notes.csv row 12"
    assert where_in_file("photo.jpg") == "photo.jpg"


def test_each_page_is_an_image_row_and_its_text_layer_passages(tmp_path, tiny_encoder):
    folder = tmp_path / "docs"
    folder.mkdir()
    pdf = write_pdf(folder / "report.pdf", PAGES)
    photo(64, 48, 1).save(folder / "photo.jpg")
    summary = run(folder, tmp_path / "idx")
    assert (summary.added, summary.failed, summary.documents) == (2, 0, 3)

    images = rows(tmp_path / "idx", "images")
    pages = sorted((r["page"], r["format"]) for r in images if r["path"] == str(pdf))
    assert pages == [(1, "PDF"), (2, "PDF"), (3, "PDF")]
    [jpeg] = [r for r in images if r["path"].endswith(".jpg")]
    assert jpeg["page"] is None
    texts = {r["key"]: r["text"] for r in rows(tmp_path / "idx", "texts")}
    assert texts == {"p. 1": PAGES[0], "p. 2": PAGES[1], "p. 3": PAGES[2]}

    index = Index(tmp_path / "idx", encoder=tiny_encoder)  # no ONNX export for two queries
    [hit] = index.search(PAGES[1], target="texts", k=1)
    assert (hit.path, hit.key) == (str(pdf), "p. 2")
    [page_hit] = index.search("a page", k=5, where="page = 3")
    assert (page_hit.path, page_hit.page) == (str(pdf), 3)


def test_encrypted_truncated_and_foreign_pdfs_go_to_errors_without_failing_the_batch(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "good.pdf", PAGES[:2])
    write_pdf(folder / "locked.pdf", PAGES, password="secret")
    whole = write_pdf(tmp_path / "whole.pdf", PAGES).read_bytes()
    (folder / "truncated.pdf").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.pdf").write_bytes(b"just some text someone named .pdf\n" * 20)
    photo(50, 40, 2).save(folder / "photo.png")

    summary = run(folder, tmp_path / "idx", batch_size=2)
    reasons = {os.path.basename(e.path): e.reason for e in summary.errors}
    assert set(reasons) == {"locked.pdf", "truncated.pdf", "notes.pdf"}
    assert "encrypted" in reasons["locked.pdf"] and "password" in reasons["locked.pdf"]
    assert "damaged or not a PDF" in reasons["truncated.pdf"]
    assert "damaged or not a PDF" in reasons["notes.pdf"]
    stored = {r["path"]: r["reason"] for r in rows(tmp_path / "idx", "errors")}
    assert {os.path.basename(p) for p in stored} == set(reasons)
    indexed = sorted((os.path.basename(r["path"]), r["page"])
                     for r in rows(tmp_path / "idx", "images"))
    assert indexed == [("good.pdf", 1), ("good.pdf", 2), ("photo.png", None)]


def test_a_pdf_over_the_page_limit_goes_to_errors_saying_how_to_raise_it(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "book.pdf", PAGES)
    summary = run(folder, tmp_path / "idx", max_pdf_pages=2)
    [error] = summary.errors
    assert "3 pages exceeds the limit of 2" in error.reason and "--max-pdf-pages" in error.reason
    assert rows(tmp_path / "idx", "images") == [] and rows(tmp_path / "idx", "texts") == []


def test_unchanged_pdf_is_not_rendered_again_and_a_changed_one_replaces_all_its_rows(
        tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    pdf = write_pdf(folder / "report.pdf", PAGES)
    (folder / "notes.txt").write_text("a text corpus beside the PDF stays indexed")
    run(folder, tmp_path / "idx")
    first_ids = {r["id"] for r in rows(tmp_path / "idx", "images")}
    seen = count_renders(monkeypatch)

    summary = run(folder, tmp_path / "idx")
    assert (summary.unchanged, summary.added, summary.executor) == (2, 0, "none")
    os.utime(pdf, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, new mtime
    summary = run(folder, tmp_path / "idx")
    assert summary.updated == 1 and seen["renders"] == 0  # stored page vectors reused
    assert len(rows(tmp_path / "idx", "images")) == 3

    write_pdf(pdf, ["A new first page", None])  # two pages now, the second without text
    summary = run(folder, tmp_path / "idx")
    assert summary.updated == 1 and seen["renders"] == 2
    images = rows(tmp_path / "idx", "images")
    assert sorted(r["page"] for r in images) == [1, 2]
    assert not first_ids & {r["id"] for r in images}
    texts = {(r["key"], r["text"]) for r in rows(tmp_path / "idx", "texts")}
    assert texts == {("p. 1", "A new first page"),
                     ("", "a text corpus beside the PDF stays indexed")}

    pdf.unlink()
    summary = run(folder, tmp_path / "idx")
    assert summary.removed == 1
    assert rows(tmp_path / "idx", "images") == []
    assert [r["key"] for r in rows(tmp_path / "idx", "texts")] == [""]


@pytest.mark.slow
def test_a_500_page_pdf_is_rendered_a_batch_at_a_time(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "long.pdf", [f"Page {n} of the annual report" for n in range(1, 501)])
    seen = count_renders(monkeypatch)
    summary = run(folder, tmp_path / "idx", batch_size=16)
    assert summary.documents == 500 and seen["renders"] == 500
    assert seen["peak"] <= 2 * 16  # the batch encoding and the next one decoding, no more
    assert open_index(tmp_path / "idx").vectors("images").count == 500


@pytest.mark.slow
def test_ray_workers_render_pages_as_the_local_loop_does_and_commit_a_pdf_whole(
        tmp_path, monkeypatch):
    from mmindex.index import store

    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "report.pdf", PAGES)
    write_pdf(folder / "locked.pdf", PAGES, password="secret")
    run(folder, tmp_path / "local", executor="local")
    committed_pages = []  # pages of report.pdf in each generation the Ray ingest commits
    original = store.StoreWriter.commit

    def spying(self, *args, **kwargs):
        manifest = original(self, *args, **kwargs)
        pages = store.read_table(self.root, manifest, "images", columns=["page"])
        committed_pages.append(pages.num_rows)
        return manifest

    monkeypatch.setattr(store.StoreWriter, "commit", spying)
    # a shard a page and a commit asked for after each: still none with part of the PDF
    summary = run(folder, tmp_path / "ray", executor="ray", pdf_dpi=20, batch_size=1,
                  commit_every=1)
    assert summary.executor == "ray" and [os.path.basename(e.path) for e in summary.errors] \
        == ["locked.pdf"]
    assert set(committed_pages) <= {0, 3} and committed_pages[-1] == 3
    local, distributed = open_index(tmp_path / "local"), open_index(tmp_path / "ray")
    by_page = {r["page"]: r for r in distributed.rows("images").to_pylist()}
    assert sorted(by_page) == [1, 2, 3]
    assert abs(by_page[1]["width"] - 595.28 * 20 / 72) <= 1  # A4 (595 pt) at --pdf-dpi 20
    assert {r["key"] for r in distributed.rows("texts").to_pylist()} == {"p. 1", "p. 2", "p. 3"}
    for row in local.rows("images").to_pylist():
        vector = local.vectors("images").index.reconstruct(row["id"])
        hit = distributed.search(vector=vector, k=1)[0]
        assert hit.page == row["page"] and hit.score > 0.9  # another resolution, same page


def test_a_pdf_is_one_file_to_duplicates(tmp_path, tiny_encoder):
    from mmindex.search.duplicates import find_duplicates

    folder = tmp_path / "docs"
    folder.mkdir()
    pdf = write_pdf(folder / "report.pdf", PAGES)
    (folder / "copy.pdf").write_bytes(pdf.read_bytes())
    run(folder, tmp_path / "idx")
    report = find_duplicates(Index(tmp_path / "idx", encoder=tiny_encoder), threshold=0.9999)
    assert report.images == 2
    [group] = report.groups
    assert group.kind == "identical" and group.reclaimable_bytes == pdf.stat().st_size
    assert sorted(os.path.basename(f.path) for f in group.files) == ["copy.pdf", "report.pdf"]


# ---------------------------------------------------------------- tiles of PDF pages


def page_tiles(index_dir) -> dict:
    """(path, page) -> [(box, embedding)] of its tiles in box order."""
    from mmindex.index import store

    index = open_index(index_dir)
    page_of = {r["id"]: (r["path"], r["page"]) for r in index.rows("images").to_pylist()}
    stored = store.read_table(index.root, index.manifest, "tiles",
                              ["id", "image_id", "x0", "y0", "x1", "y1", "embedding"]).to_pylist()
    out = {}
    for t in sorted(stored, key=lambda t: t["id"]):
        box = (t["x0"], t["y0"], t["x1"], t["y1"])
        out.setdefault(page_of[t["image_id"]], []).append((box, t["embedding"]))
    return out


def test_pdf_pages_get_tiles_cropped_from_the_page_as_ingest_renders_it(tmp_path, tiny_encoder):
    import numpy as np

    from mmindex.data.tiles import TileSpec, tile_boxes

    folder = tmp_path / "docs"
    folder.mkdir()
    pdf = write_pdf(folder / "report.pdf", PAGES[:2])
    summary = run(folder, tmp_path / "idx", tiles=TileSpec(4))
    side = tiny_encoder.info.image_size
    assert summary.tiles.images == 2 and summary.tiles.failed == 0
    tiles = page_tiles(tmp_path / "idx")
    assert sorted(tiles) == [(str(pdf), 1), (str(pdf), 2)]
    for row in rows(tmp_path / "idx", "images"):
        rendered = batches.decode_item(page_item(pdf, row["page"]), side).image
        assert rendered.size == (row["width"], row["height"])  # the boxes' space
        assert min(rendered.size) > side  # a page larger than the model's input
        boxes = tile_boxes(row["width"], row["height"], TileSpec(4), side)
        mine = tiles[str(pdf), row["page"]]
        assert [box for box, _ in mine] == boxes and len(boxes) > 1
        crops = [tiny_encoder.preprocess(rendered.crop(box)) for box in boxes]
        expected = tiny_encoder.encode_images(batches.stack_pixels(crops))  # (T, D)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        stored = np.array([vector for _, vector in mine], np.float32)
        np.testing.assert_allclose(stored, expected, atol=1e-4)


def test_page_tiles_go_with_their_pdf_and_a_copy_takes_each_pages_own(tmp_path):
    from mmindex.data.tiles import TileSpec

    folder = tmp_path / "docs"
    folder.mkdir()
    pdf = write_pdf(folder / "report.pdf", PAGES[:2])
    first = run(folder, tmp_path / "idx", tiles=TileSpec(4)).tiles
    per_pdf = first.encoded
    original = page_tiles(tmp_path / "idx")
    assert original[str(pdf), 1] != original[str(pdf), 2]  # the pages differ, box for box

    copy = folder / "copy.pdf"
    copy.write_bytes(pdf.read_bytes())
    copied = run(folder, tmp_path / "idx").tiles  # the index remembers --tiles
    assert (copied.copied, copied.encoded) == (per_pdf, 0)
    after = page_tiles(tmp_path / "idx")
    for page in (1, 2):  # the twin's same page, not another page of the same sha256
        assert after[str(copy), page] == original[str(pdf), page]

    write_pdf(pdf, ["A new first page", None])  # changed: its pages and their tiles replaced
    changed = run(folder, tmp_path / "idx").tiles
    assert changed.removed == per_pdf and changed.encoded == per_pdf
    replaced = page_tiles(tmp_path / "idx")
    assert replaced[str(pdf), 1] != original[str(pdf), 1]
    assert replaced[str(copy), 1] == original[str(pdf), 1]

    pdf.unlink()  # deleted: its pages go, and their tiles with them
    gone = run(folder, tmp_path / "idx").tiles
    assert gone.removed == per_pdf
    assert sorted(page_tiles(tmp_path / "idx")) == [(str(copy), 1), (str(copy), 2)]
