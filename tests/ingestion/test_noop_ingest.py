"""An ingest that changes nothing commits nothing: the manifest, its generation and every
shard and FAISS file stay as they were, with tiles or without; a changed tile spec still
commits, even when no tile row changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmindex import IngestConfig, ingest, open_index
from mmindex.data.tiles import TileSpec
from mmindex.index import store
from mmindex.testing import TINY, photo, write_pdf


def run(folder: Path, root: Path, **kwargs):
    return ingest(IngestConfig(roots=(folder,), index_dir=root, model=TINY, precision="fp32",
                               **kwargs))


def index_state(root: Path) -> tuple:
    """The manifest's bytes (its generation, shard lists and update time) and the name and
    mtime of every file it could point to: any commit changes at least the bytes."""
    files = [root / store.MANIFEST, *store.data_files(root)]
    return (root / store.MANIFEST).read_bytes(), {f: f.stat().st_mtime_ns for f in files}


@pytest.fixture
def big_photos(tmp_path) -> Path:
    folder = tmp_path / "big"
    folder.mkdir()
    photo(400, 300, 10).save(folder / "big.png")  # tiled by TileSpec(4) and (9)
    photo(30, 24, 3).save(folder / "small.png")  # within the tiny model's 32 px: no tiles
    return folder


def test_an_unchanged_folder_reingests_without_a_commit(photo_folder, tmp_path):
    root = tmp_path / "idx"
    first = run(photo_folder, root)
    before = index_state(root)
    again = run(photo_folder, root)
    assert index_state(root) == before
    assert again.unchanged == 6 and again.generation == first.generation


def test_an_unchanged_tiled_folder_reingests_without_a_commit(big_photos, tmp_path):
    root = tmp_path / "idx"
    write_pdf(big_photos / "report.pdf", ["A page larger than the model's input"])
    first = run(big_photos, root, tiles=TileSpec(4))
    manifest = store.read_manifest(root)
    assert manifest.tables["tiles"].rows and first.tiles.encoded
    assert first.tiles.images == 2  # the photo and the PDF's page
    assert first.generation == manifest.generation  # the tiles pass's commits counted
    before = index_state(root)
    kept = run(big_photos, root)  # no --tiles: the spec the index recorded
    same = run(big_photos, root, tiles=TileSpec(4))  # the same spec, asked again
    assert index_state(root) == before
    assert kept.generation == same.generation == manifest.generation
    assert kept.tiles.encoded == same.tiles.encoded == 0


def test_a_changed_tile_spec_commits_and_retiles(big_photos, tmp_path):
    root = tmp_path / "idx"
    run(big_photos, root, tiles=TileSpec(4))
    four = open_index(root).rows("tiles").column("id").to_pylist()
    generation = store.read_manifest(root).generation
    nine = run(big_photos, root, tiles=TileSpec(9))
    manifest = store.read_manifest(root)
    assert manifest.tiling == TileSpec(9).to_dict() and nine.generation == manifest.generation
    assert manifest.generation > generation
    assert nine.tiles.removed == len(four) and nine.tiles.encoded > len(four)
    assert not set(open_index(root).rows("tiles").column("id").to_pylist()) & set(four)
    off = run(big_photos, root, tiles="off")
    assert off.tiles.removed == nine.tiles.encoded
    assert open_index(root).manifest.tiling is None and open_index(root).rows("tiles").num_rows == 0


def test_a_changed_spec_lands_even_when_no_tile_row_changes(photo_folder, tmp_path):
    """Small photos only: no image has tiles under either spec, so only the forced commit
    records the new spec (and 'off' clears it)."""
    root = tmp_path / "idx"
    run(photo_folder, root, tiles=TileSpec(4))
    assert store.read_manifest(root).tiling == TileSpec(4).to_dict()
    generation = store.read_manifest(root).generation
    nine = run(photo_folder, root, tiles=TileSpec(9))
    assert store.read_manifest(root).tiling == TileSpec(9).to_dict()
    assert nine.generation == store.read_manifest(root).generation == generation + 1
    off = run(photo_folder, root, tiles="off")
    assert store.read_manifest(root).tiling is None
    assert off.generation == store.read_manifest(root).generation == generation + 2
    before = index_state(root)
    run(photo_folder, root, tiles="off")  # off again: nothing to change
    assert index_state(root) == before
