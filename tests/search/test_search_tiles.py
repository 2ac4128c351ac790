"""Tiles in the index (ingestion/tiles.py) and in the search (search/tiles.py): constructed
embeddings where the right order follows by hand, and the real pipeline with the tiny model."""

from __future__ import annotations

import json
import shutil

import faiss
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from mmindex import IngestConfig, ingest, open_index
from mmindex.core import faults
from mmindex.data.tiles import TileSpec, tile_boxes
from mmindex.errors import UserInputError
from mmindex.index import store
from mmindex.index import vectors as vector_index
from mmindex.index.schema import table_schema
from mmindex.index.vectors import VectorIndex
from mmindex.models.encoder import EncoderInfo
from mmindex.search import tiles as search_tiles
from mmindex.search.tiles import heatmap
from mmindex.testing import TINY, photo

DIM = 8
SIDE = 96  # the constructed model's input side


def unit(*values) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def constructed_index(root, images, tiles):
    """images: [(width, height, whole vector)]; tiles: [(image number, box, vector)]. Ids:
    image i is i, tile j is 100 + j. Written through the store's own commit."""
    info = EncoderInfo("constructed", DIM, SIDE, "0" * 16)
    image_rows = [{"id": i, "path": f"/nowhere/{i}.png", "size": 1, "mtime_ns": 1, "sha256": f"s{i}",
                   "width": w, "height": h, "format": "PNG", "embedding": v.tolist()}
                  for i, (w, h, v) in enumerate(images)]
    tile_rows = [{"id": 100 + j, "path": f"/nowhere/{i}.png", "size": 1, "mtime_ns": 1,
                  "sha256": f"s{i}", "image_id": i, "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3],
                  "embedding": v.tolist()} for j, (i, b, v) in enumerate(tiles)]
    with store.StoreWriter(root) as writer:
        writer.initialise(info)
        writer.manifest = type(writer.manifest)(**{**writer.manifest.__dict__, "next_id": 1000})
        changes, blobs = {}, {}
        for name, rows in (("images", image_rows), ("tiles", tile_rows)):
            table = pa.Table.from_pylist(rows, schema=table_schema(name, DIM))
            changes[name] = store.TableChange(table)
            vectors = VectorIndex.build(np.array([r["id"] for r in rows]),
                                        np.array([r["embedding"] for r in rows], np.float32), DIM)
            blobs[name] = vectors.to_bytes()
        writer.commit(changes, blobs)
    return open_index(root)


def test_a_small_object_ranks_its_image_first_only_through_its_tile(tmp_path):
    q = unit(1)
    index = constructed_index(tmp_path / "idx", [
        (512, 512, unit(0, 1)),  # A: the whole image is empty canvas, orthogonal to q
        (512, 512, unit(1, 1)),  # B: half like q everywhere, cos 0.707
        (512, 512, unit(0, 0, 1)),
    ], [
        (0, (0, 0, 160, 160), unit(0, 1)), (0, (352, 352, 512, 512), unit(9, 1)),  # A's object
        (1, (0, 0, 160, 160), unit(1, 2)),  # cos 0.447: below B's whole
    ])
    plain = index.search(vector=q, k=3, tiles=False)
    tiled = index.search(vector=q, k=3)  # the index has tiles: used by default
    assert plain[0].id == 1 and plain[0].score == pytest.approx(float(unit(1, 1) @ q))
    assert tiled[0].id == 0 and tiled[0].box == (352, 352, 512, 512)
    assert tiled[0].score == pytest.approx(float(unit(9, 1) @ q))
    assert tiled[1].id == 1 and tiled[1].box is None  # its whole vector beat its tile


def test_rerank_orders_the_candidates_by_maxsim_over_whole_and_tiles(tmp_path):
    q = unit(1)
    wholes = [unit(3, 1), unit(2, 1), unit(1, 1), unit(1, 3)]  # plain order 0, 1, 2, 3
    tiles = [(1, (0, 0, 100, 100), unit(1, 0.1)), (1, (50, 0, 150, 100), unit(1, 2)),
             (2, (0, 0, 100, 100), unit(6, 1)), (3, (0, 0, 100, 100), unit(4, 1))]
    index = constructed_index(tmp_path / "idx", [(150, 100, v) for v in wholes], tiles)
    # by hand: MaxSim(image) = max(q.whole, max over its tiles of q.tile)
    expected = {i: max([float(w @ q)] + [float(v @ q) for j, _, v in tiles if j == i])
                for i, w in enumerate(wholes)}
    order = sorted(expected, key=lambda i: -expected[i])
    assert order == [1, 2, 3, 0]  # not the plain order: the re-rank has work to do
    plain = index.search(vector=q, k=4, tiles=False)
    assert [h.id for h in plain] == [0, 1, 2, 3]
    reranked = index.search(vector=q, k=4, tiles=False, rerank=4)
    assert [h.id for h in reranked] == order
    assert [h.score for h in reranked] == pytest.approx([expected[i] for i in order])
    assert reranked[0].box == (0, 0, 100, 100)  # image 1's first tile
    # only the top 2 of the plain search are re-ranked; the rest keep their places after them
    assert [h.id for h in index.search(vector=q, k=4, tiles=False, rerank=2)] == [1, 0, 2, 3]


def test_heatmap_peaks_in_the_tile_that_holds_the_object(tmp_path):
    q = unit(1)
    boxes = tile_boxes(480, 320, TileSpec(12, 0.25), SIDE)
    holder = 7
    tiles = [(0, b, unit(1, 0.2) if t == holder else unit(0.1, 1)) for t, b in enumerate(boxes)]
    index = constructed_index(tmp_path / "idx", [(480, 320, unit(1, 3))], tiles)
    heat = heatmap(index, 0, q, cells=12)
    assert heat.grid.shape == (8, 12)
    assert np.isclose(heat.scores.max(), float(unit(1, 0.2) @ q))
    row, col = np.unravel_index(np.nanargmax(heat.grid), heat.grid.shape)
    x, y = (col + 0.5) * 480 / 12, (row + 0.5) * 320 / 8
    x0, y0, x1, y1 = boxes[holder]
    assert x0 <= x < x1 and y0 <= y < y1
    with pytest.raises(UserInputError, match="no image with id 5"):
        heatmap(index, 5, q)


# ---------------------------------------------------------------- the real pipeline


@pytest.fixture
def big_photos(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(2):
        photo(400, 300, 10 + i).save(folder / f"big{i}.png")
    photo(30, 24, 3).save(folder / "small.png")  # within the tiny model's 32 px: no tiles
    return folder


def tiles_of(root):
    index = open_index(root)
    return index.rows("tiles").select(["id", "image_id", "sha256", "x0", "y0", "x1", "y1"]).to_pylist()


def test_ingest_tiles_large_images_and_a_tile_vector_finds_its_box(big_photos, tmp_path):
    root = tmp_path / "idx"
    summary = ingest(IngestConfig(roots=(big_photos,), index_dir=root, model=TINY,
                                  precision="fp32", tiles=TileSpec(4, 0.25)))
    side = open_index(root).manifest.model.image_size
    expected = len(tile_boxes(400, 300, TileSpec(4, 0.25), side))
    assert summary.tiles.encoded == 2 * expected and 2 <= expected <= 4
    index = open_index(root)
    assert index.manifest.tiling == TileSpec(4, 0.25).to_dict()
    stored = store.read_table(root, index.manifest, "tiles", ["id", "x0", "y0", "x1", "y1",
                                                              "embedding"]).to_pylist()
    pick = stored[1]
    hits = index.search(vector=np.array(pick["embedding"], np.float32), k=1)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].box == (pick["x0"], pick["y0"], pick["x1"], pick["y1"])


def test_tiles_go_with_their_image_and_follow_its_content(big_photos, tmp_path):
    root = tmp_path / "idx"
    config = IngestConfig(roots=(big_photos,), index_dir=root, model=TINY, precision="fp32",
                          tiles=TileSpec(4))
    ingest(config)
    before = tiles_of(root)
    per_image = len(before) // 2
    (big_photos / "big0.png").unlink()
    photo(400, 300, 99).save(big_photos / "big1.png")  # replaced in place: same path, new bytes
    again = ingest(IngestConfig(roots=(big_photos,), index_dir=root, model=TINY,
                                precision="fp32"))  # no --tiles: the index remembers
    after = tiles_of(root)
    images = open_index(root).rows("images").to_pylist()
    big1 = next(r for r in images if r["path"].endswith("big1.png"))
    assert len(after) == per_image and {t["image_id"] for t in after} == {big1["id"]}
    assert {t["sha256"] for t in after} == {big1["sha256"]}
    assert not {t["id"] for t in after} & {t["id"] for t in before}
    assert again.tiles.removed == len(before)
    shutil.copy(big_photos / "big1.png", big_photos / "copy.png")  # same bytes: no encoding
    copied = ingest(IngestConfig(roots=(big_photos,), index_dir=root)).tiles
    assert (copied.copied, copied.encoded) == (per_image, 0)
    index = open_index(root)
    stored = store.read_table(root, index.manifest, "tiles", ["path", "embedding"]).to_pylist()
    vectors = {p: [r["embedding"] for r in stored if r["path"].endswith(p)]
               for p in ("big1.png", "copy.png")}
    assert vectors["big1.png"] == vectors["copy.png"] and len(vectors["copy.png"]) == per_image
    ingest(IngestConfig(roots=(big_photos,), index_dir=root, tiles="off"))
    assert tiles_of(root) == [] and open_index(root).manifest.tiling is None


def test_an_index_from_before_tiles_opens_searches_and_takes_them(photo_folder, tmp_path):
    root = tmp_path / "idx"
    ingest(IngestConfig(roots=(photo_folder,), index_dir=root, model=TINY, precision="fp32"))
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["tables"]["tiles"], manifest["tiling"]  # as an older mmindex wrote it
    (root / "manifest.json").write_text(json.dumps(manifest))
    index = open_index(root)
    assert index.info().tables["tiles"].rows == 0
    assert len(index.search("a photo", k=3)) == 3
    with pytest.raises(UserInputError, match="--tiles N"):
        index.search("a photo", rerank=5)
    shutil.copytree(photo_folder, tmp_path / "more")
    Image.new("RGB", (300, 300), (200, 10, 10)).save(tmp_path / "more" / "big.png")
    summary = ingest(IngestConfig(roots=(tmp_path / "more",), index_dir=root,
                                  tiles=TileSpec(4)))
    assert summary.tiles.images >= 1 and open_index(root).info().tables["tiles"].rows > 0


def crash_once_tiles_are_committed(root):
    """A fault action for `store.committed`: the process dies right after the first commit
    that leaves tiles in the index."""
    def action(name: str) -> None:
        if store.read_manifest(root).tables["tiles"].rows:
            raise faults.SimulatedCrash(name)
    return action


def assert_tiles_match_their_index(root):
    """The tiles FAISS index holds exactly the stored tile ids, each with its stored vector
    (IVF lists keep the vectors too; a direct map finds them by id)."""
    index = open_index(root)
    stored = store.read_table(root, index.manifest, "tiles", ["id", "embedding"])
    ids = stored.column("id").to_numpy()
    vectors = index.vectors("tiles")
    assert np.array_equal(np.sort(vectors.ids()), np.sort(ids))
    held = faiss.extract_index_ivf(vectors.index) if vectors.kind == "ivf" else vectors.index
    if vectors.kind == "ivf":
        held.set_direct_map_type(faiss.DirectMap.Hashtable)
    found = np.stack([held.reconstruct(int(i)) for i in ids])
    expected = np.stack(stored.column("embedding").to_numpy(zero_copy_only=False))
    assert found.shape == expected.shape and np.array_equal(found, expected)


def test_a_crash_between_tile_commits_keeps_them_and_a_rerun_completes_the_pass(big_photos,
                                                                               tmp_path):
    """The tiles pass commits like the images: here by time (commit_seconds=0), so each
    image's tiles are a commit of their own, and the process dies after the first."""
    root = tmp_path / "idx"
    config = IngestConfig(roots=(big_photos,), index_dir=root, model=TINY, precision="fp32",
                          tiles=TileSpec(4), commit_seconds=0)
    with (faults.REGISTRY.armed("store.committed", crash_once_tiles_are_committed(root)),
          pytest.raises(faults.SimulatedCrash)):
        ingest(config)
    kept = tiles_of(root)
    per_image = len(tile_boxes(400, 300, TileSpec(4), open_index(root).manifest.model.image_size))
    assert len(kept) == per_image and len({t["image_id"] for t in kept}) == 1  # one, whole
    assert_tiles_match_their_index(root)
    again = ingest(config).tiles
    assert (again.images, again.encoded, again.removed) == (1, per_image, 0)
    after = tiles_of(root)
    assert len(after) == 2 * per_image and all(t in after for t in kept)
    assert len({t["image_id"] for t in after}) == 2
    assert_tiles_match_their_index(root)


def test_an_outgrown_tiles_index_is_rebuilt_in_a_commit_after_its_rows(big_photos, tmp_path,
                                                                       monkeypatch):
    """Rows first, then the rebuild from the stored vectors: a crash between the two leaves
    a usable flat index, and the next ingest, with nothing to tile, rebuilds it."""
    monkeypatch.setattr(vector_index, "IVF_THRESHOLD", 4)  # the tiles cross it, 3 images not
    root = tmp_path / "idx"
    config = IngestConfig(roots=(big_photos,), index_dir=root, model=TINY, precision="fp32",
                          tiles=TileSpec(4))
    with (faults.REGISTRY.armed("store.committed", crash_once_tiles_are_committed(root)),
          pytest.raises(faults.SimulatedCrash)):
        ingest(config)
    manifest = store.read_manifest(root)
    assert manifest.tables["tiles"].rows >= 4
    assert manifest.tables["tiles"].index["kind"] == "flat"
    assert_tiles_match_their_index(root)
    assert ingest(config).tiles.encoded == 0
    assert store.read_manifest(root).tables["tiles"].index["kind"] == "ivf"
    assert_tiles_match_their_index(root)
    # IVF-Flat keeps no direct map: the search side reads the stored vectors, by id
    index = open_index(root)
    stored = store.read_table(root, index.manifest, "tiles", ["id", "embedding"]).to_pylist()
    wanted = [r["id"] for r in stored][::-1]  # not in table order
    expected = {r["id"]: r["embedding"] for r in stored}
    found = search_tiles._vectors(index, "tiles", np.array(wanted))
    assert np.array_equal(found, np.array([expected[i] for i in wanted], np.float32))
