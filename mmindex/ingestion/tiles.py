"""The tiles pass: after an ingest has committed its images, give every large image its tile
vectors (data/tiles.py's rule) and drop the tiles of images that went or changed.

It runs once at the end of `ingest`, in process, and only reads what the images table
already says (id, path, page, sha256, size), so it is the same whichever executor encoded
the images. It is idempotent and resumable: a tile row names its image's id and sha256, so
an image whose tiles are there and current is skipped, a killed pass keeps what it
committed, and an image replaced in place (same id, new content) or removed loses its old
tiles. An image moved or copied (same sha256, same spec) gets the tiles of its twin without
encoding.

A PDF page is an images row of its own (its id, the PDF's path and sha256, its `page`), so
it is tiled like a photo: from the page rendered as ingest renders it (its page item through
data/batches.py), with boxes in that rendering's pixels (the row's width x height). A changed
or deleted PDF replaces or drops its page rows, and so their tiles; a copy takes the tiles of
its twin's same page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from mmindex.core.progress import Progress, no_progress
from mmindex.data.batches import read_image, stack_pixels
from mmindex.data.images import DEFAULT_MAX_PIXELS
from mmindex.data.pages import page_item
from mmindex.data.tiles import TileSpec, crop_tiles, decode_side, tile_boxes
from mmindex.index import store
from mmindex.ingestion.commits import CommitBuffer

TILE = "tiles"
OFF = "off"  # IngestConfig.tiles: remove the index's tiles and stop tiling
_KEY_COLUMNS = ["id", "path", "size", "mtime_ns", "sha256"]
_BOX = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class TilesSummary:
    images: int  # images given tiles in this pass
    encoded: int  # tile vectors computed
    copied: int  # tile vectors taken from an identical image's tiles
    removed: int  # stale tiles removed
    failed: int  # images that could not be decoded now (they keep their whole vector)


def requested_spec(asked: TileSpec | str | None, manifest: store.Manifest) -> TileSpec | None:
    """The spec this ingest tiles with: the one asked for, else the one the index recorded."""
    if asked == OFF:
        return None
    if asked is not None:
        return asked
    return _recorded_spec(manifest)


def _recorded_spec(manifest: store.Manifest) -> TileSpec | None:
    return TileSpec.from_dict(manifest.tiling) if manifest.tiling else None


def update_tiles(writer: store.StoreWriter, asked: TileSpec | str | None, encoder_of: Callable,
                 progress: Progress = no_progress, batch_size: int = 32,
                 commit_every: int = 2048, max_pixels: int = DEFAULT_MAX_PIXELS,
                 commit_seconds: float = 60.0, pdf_dpi: float | None = None) -> TilesSummary:
    """Bring the tiles table in line with the images table and the spec; commit as it goes
    (as the images do: every `commit_every` rows or `commit_seconds`, an image's tiles
    together). `encoder_of()` gives the index's encoder (loaded only when something is
    encoded); PDF pages are rendered at `pdf_dpi` as ingest renders them."""
    manifest = writer.manifest
    spec = requested_spec(asked, manifest) if manifest else None
    if manifest is None or (spec is None and not manifest.tiling and
                            not manifest.tables[TILE].rows):
        return TilesSummary(0, 0, 0, 0, 0)
    plan = _plan(writer, spec)
    writer.manifest = replace(writer.manifest, tiling=spec.to_dict() if spec else None)
    commits = CommitBuffer(writer, (TILE,), commit_every, commit_seconds)
    commits.open_indexes()
    commits.remove(TILE, plan.stale_ids)
    side = manifest.model.image_size
    encoded = copied = failed = done = 0
    for image in plan.todo:
        boxes = tile_boxes(image["width"], image["height"], spec, side)
        twin = plan.twins.get((image["sha256"], image["page"], tuple(boxes)))
        if twin is not None:
            _add_tiles(commits, image, boxes, twin)
            copied += len(boxes)
        else:
            vectors = _encode_tiles(encoder_of(), image, boxes, batch_size, max_pixels,
                                    pdf_dpi)
            if vectors is None:
                failed += 1
            else:
                _add_tiles(commits, image, boxes, vectors)
                encoded += len(boxes)
        done += 1
        progress("encoding tiles", done, len(plan.todo))
        commits.maybe_commit()  # between images: an image's tiles commit together
    # a changed spec lands with the pass's first commit; with none, in one of its own (and
    # an unchanged index gets no commit at all: a no-op ingest rewrites nothing)
    spec_changed = spec != _recorded_spec(manifest)
    commits.finish(force=spec_changed and writer.manifest.generation == manifest.generation)
    return TilesSummary(done - failed, encoded, copied, len(plan.stale_ids), failed)


@dataclass(frozen=True)
class _Plan:
    todo: list[dict]  # image rows (id, path, size, mtime_ns, sha256, width, height, page)
    stale_ids: set[int]  # tile ids to remove
    twins: dict  # (sha256, page, boxes) -> (T, D) vectors of current tiles of identical content


def _plan(writer: store.StoreWriter, spec: TileSpec | None) -> _Plan:
    root, manifest = writer.root, writer.manifest
    images = store.read_table(root, manifest, "images",
                              _KEY_COLUMNS + ["width", "height", "page"]).to_pylist()
    # the keys only: an ingest with nothing to tile must not read every tile's embedding
    keys = store.read_table(root, manifest, TILE, ["id", "image_id", "sha256", *_BOX]).to_pylist()
    recorded = _recorded_spec(manifest)
    live = {(row["id"], row["sha256"]) for row in images}
    same_spec = spec is not None and spec == recorded
    current = [t for t in keys if same_spec and (t["image_id"], t["sha256"]) in live]
    stale = {t["id"] for t in keys} - {t["id"] for t in current}
    tiled = {t["image_id"] for t in current}
    if spec is None:
        return _Plan([], stale, {})
    side = manifest.model.image_size
    todo = [row for row in images if row["id"] not in tiled
            and tile_boxes(row["width"], row["height"], spec, side)]
    wanted = {row["sha256"] for row in todo}
    page_of = {row["id"]: row["page"] for row in images}
    return _Plan(todo, stale, _twins(writer, [t for t in current if t["sha256"] in wanted],
                                     page_of))


def _twins(writer: store.StoreWriter, current: list[dict], page_of: dict) -> dict:
    """(sha256, page, boxes) -> the vectors of one image's current tiles, in box order, for
    the current tiles of content that an image to tile shares (a copy, a move; the pages of
    one PDF share its sha256, so the page is in the key): rare, so the embeddings are read
    only then, and only from the shards that hold those tiles (store.read_matching)."""
    if not current:
        return {}
    stored, vectors = store.read_matching_vectors(writer.root, writer.manifest, TILE, "id",
                                                  {t["id"] for t in current},
                                                  ["id", "embedding"])  # (T, D)
    position = {tile_id: i for i, tile_id in enumerate(stored.column("id").to_pylist())}
    grouped: dict[int, list[dict]] = {}
    for t in current:
        grouped.setdefault(t["image_id"], []).append(t)
    twins = {}
    for rows in grouped.values():
        rows.sort(key=lambda t: t["id"])  # ids ascend in box order when written
        boxes = tuple(tuple(t[c] for c in _BOX) for t in rows)
        positions = [position[t["id"]] for t in rows]
        key = (rows[0]["sha256"], page_of[rows[0]["image_id"]], boxes)
        twins.setdefault(key, vectors[positions])
    return twins


def _encode_tiles(encoder, image: dict, boxes, batch_size: int, max_pixels: int,
                  pdf_dpi: float | None):
    """(T, D) vectors of the image's tiles, or None when the file cannot be decoded now."""
    side = encoder.info.image_size
    if image["page"]:  # rendered as ingest renders it; the boxes are in the row's size
        result = read_image(page_item(image["path"], image["page"]), side, max_pixels, pdf_dpi)
    else:  # a JPEG may be draft-decoded as long as every tile keeps the model's side
        need = decode_side(image["width"], image["height"], boxes, side)
        result = read_image(image["path"], need, max_pixels)
    if not result.ok:
        return None
    crops = crop_tiles(result.decoded.image, image["width"], image["height"], boxes)
    out = []
    for start in range(0, len(crops), batch_size):
        pixels = stack_pixels([encoder.preprocess(c) for c in crops[start:start + batch_size]])
        out.append(encoder.encode_images(pixels))  # (B, D)
    return np.concatenate(out)


def _add_tiles(commits: CommitBuffer, image: dict, boxes, vectors: np.ndarray) -> None:
    """An image's tiles as rows: its file columns and id, so a tile knows when it is stale."""
    for box, vector in zip(boxes, vectors):
        row = {c: image[c] for c in _KEY_COLUMNS} | dict(zip(_BOX, box))
        commits.add(TILE, row | {"id": commits.writer.new_id(), "image_id": image["id"]}, vector)
