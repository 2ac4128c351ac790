"""Searching an index whose images also have tile vectors (ingestion/tiles.py), the
late-interaction re-rank, and the "where in the image" heatmap.

How image and tile scores merge: an image scores the **maximum** cosine similarity of the
query over its whole-image vector and its tiles' vectors, and the hit carries the box of
the tile that gave it (no box when the whole image scored best). The maximum, not a mean
or a sum: an image with one tile showing the small red star is exactly as good an answer
to "a small red star" as a close-up of it, and the empty rest of a large canvas must not
dilute it. Scores stay cosines of one model, so they compare across images, with or
without tiles, and --min-score keeps its meaning.

The first stage searches both FAISS indexes (the images' and the tiles') and keeps, per
image, the best score it saw. The re-rank (`rerank=N`, ColBERT/ColPali's MaxSim with one
query vector) then takes the N best images and recomputes each one's maximum over *all*
its tiles and its whole vector from the stored vectors, so an image that reached the
candidates through its whole vector, or through a tile that was not its best, gets its
true maximum. Without tiles in the first stage (`tiles=False`) it is the classic shape:
the cheap one-vector search proposes N candidates and the tiles decide their order.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmindex.data.tiles import Box, heat_grid
from mmindex.errors import UserInputError

TILE = "tiles"
TILES_PER_IMAGE_SEARCHED = 8  # tile hits asked for per image wanted: overlapping tiles of
# one image tend to score alike and fill the list, so it goes deeper than k


@dataclass(frozen=True)
class Scored:
    id: int  # the image's row id
    score: float
    box: Box | None = None  # the tile that gave the score; None: the whole image


@dataclass(frozen=True)
class Heatmap:
    image_id: int
    width: int  # the image's full-resolution size
    height: int
    grid: np.ndarray  # (rows, cols) mean tile score per cell; NaN where no tile covers it
    boxes: list[Box]  # the image's tiles
    scores: np.ndarray  # (T,) cosine of the query with each tile
    whole: float  # cosine of the query with the whole-image vector

    def to_dict(self) -> dict:
        grid = [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in self.grid]
        return {"id": self.image_id, "width": self.width, "height": self.height, "grid": grid,
                "tiles": [{"box": list(b), "score": round(float(s), 4)}
                          for b, s in zip(self.boxes, self.scores)],
                "whole": round(self.whole, 4)}


def has_tiles(index) -> bool:
    return index.manifest.tables[TILE].rows > 0


def require_tiles(index, what: str) -> None:
    if not has_tiles(index):
        raise UserInputError(f"{what} needs tile vectors and index {index.root} has none; "
                             "ingest with --tiles N (e.g. --tiles 16) to add them")


def search_images(index, vector: np.ndarray, k: int, allowed: np.ndarray | None,
                  use_tiles: bool, rerank: int) -> list[Scored]:
    """The top k images for a unit query vector: whole vectors, tiles (max per image) when
    `use_tiles`, then the best `rerank` re-scored by MaxSim over all their tiles."""
    depth = max(k, rerank)
    scores, ids = index.vectors("images").search(vector[None, :], depth, allowed)  # (1, depth)
    best = {int(i): Scored(int(i), float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0}
    if use_tiles:
        for found in _tile_hits(index, vector, depth, allowed):
            if found.id not in best or found.score > best[found.id].score:
                best[found.id] = found
    ranked = sorted(best.values(), key=lambda s: -s.score)
    if rerank:
        head = sorted(maxsim(index, vector, [s.id for s in ranked[:rerank]]),
                      key=lambda s: -s.score)
        ranked = head + ranked[rerank:]
    return ranked[:k]


def _tile_hits(index, vector, depth: int, allowed) -> list[Scored]:
    lookup = _lookup(index)
    tile_allowed = None
    if allowed is not None:
        tile_allowed = lookup.ids[np.isin(lookup.image_ids, allowed)]
        if not len(tile_allowed):
            return []
    wanted = depth * TILES_PER_IMAGE_SEARCHED
    scores, ids = index.vectors(TILE).search(vector[None, :], wanted, tile_allowed)
    valid = ids[0] >= 0
    positions = lookup.positions(ids[0][valid])
    return [Scored(int(lookup.image_ids[p]), float(s), tuple(int(v) for v in lookup.boxes[p]))
            for p, s in zip(positions, scores[0][valid])]


def maxsim(index, vector: np.ndarray, image_ids: list[int]) -> list[Scored]:
    """Each image's maximum cosine with the query over its whole vector and all its tiles."""
    out = []
    for image_id in image_ids:
        whole = float(_vectors(index, "images", np.array([image_id]))[0] @ vector)
        boxes, tile_scores = tile_scores_of(index, vector, image_id)
        if len(tile_scores) and tile_scores.max() > whole:
            top = int(tile_scores.argmax())
            out.append(Scored(image_id, float(tile_scores[top]), boxes[top]))
        else:
            out.append(Scored(image_id, whole))
    return out


def tile_scores_of(index, vector: np.ndarray, image_id: int) -> tuple[list[Box], np.ndarray]:
    """The image's tile boxes and the query's cosine with each, (T,)."""
    lookup = _lookup(index)
    mine = np.flatnonzero(lookup.image_ids == image_id)
    if not len(mine):
        return [], np.zeros(0, np.float32)
    vectors = _vectors(index, TILE, lookup.ids[mine])  # (T, D)
    return [tuple(int(v) for v in lookup.boxes[p]) for p in mine], vectors @ vector


def best_tiles(index, vector: np.ndarray, image_id: int, n: int) -> list[Box]:
    """The boxes of the image's `n` tiles most like the query, best first (fewer when it has
    fewer; none for an image without tiles): what `ask --tiles n` shows beside the whole."""
    if n <= 0:
        return []
    boxes, scores = tile_scores_of(index, vector, image_id)
    return [boxes[i] for i in np.argsort(-scores, kind="stable")[:n]]


def question_tiles(index, items: Sequence[tuple[Path, str]], n: int) -> list[list[Box]]:
    """For each (image file, question): best_tiles of that image of the index for the
    question, so a projector is trained and measured on the views `ask --tiles` shows."""
    require_tiles(index, "--tiles")
    paths = index.rows("images").select(["id", "path"]).to_pydict()
    id_of = {str(Path(p).resolve()): i for i, p in zip(paths["id"], paths["path"])}
    vectors: dict[str, np.ndarray] = {}  # a question text is encoded once
    out = []
    for image, question in items:
        image_id = id_of.get(str(Path(image).resolve()))
        if image_id is None:
            raise UserInputError(f"{image} is not in the index at {index.root}: ingest the "
                                 f"questions' images there with --tiles first")
        if question not in vectors:
            vectors[question] = index.query_vector(question)
        out.append(best_tiles(index, vectors[question], image_id, n))
    return out


def heatmap(index, image_id: int, vector: np.ndarray, cells: int = 16) -> Heatmap:
    """Where in image `image_id` the query matches: its tiles' scores on a grid."""
    row = index.row("images", image_id)
    if row is None:
        raise UserInputError(f"no image with id {image_id} in index {index.root}")
    boxes, scores = tile_scores_of(index, vector, image_id)
    whole = float(_vectors(index, "images", np.array([image_id]))[0] @ vector)
    width, height = int(row["width"]), int(row["height"])
    if not boxes:  # a small image (or an index without tiles): one cell, the whole image
        boxes, scores = [(0, 0, width, height)], np.array([whole], np.float32)
    grid = heat_grid(width, height, boxes, scores, cells)
    return Heatmap(image_id, width, height, grid, boxes, scores, whole)


def heatmap_png(image, heat: Heatmap, max_side: int) -> bytes:
    """The image with the heatmap drawn over it (red where the query matches best), PNG, at
    the heatmap's size (its boxes' space: a photo's, or a PDF page's rendering at ingest)
    shrunk to fit `max_side`; `image` (a thumbnail, a page rendered at another scale) is
    resized to that, so the grid lies where its boxes are."""
    import io

    from PIL import Image

    scale = min(1.0, max_side / max(heat.width, heat.height))
    size = (max(1, round(heat.width * scale)), max(1, round(heat.height * scale)))
    image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    grid = np.nan_to_num(heat.grid, nan=float(np.nanmin(heat.grid)))
    low, high = float(grid.min()), float(grid.max())
    level = (grid - low) / (high - low) if high > low else np.zeros_like(grid)  # (rows, cols)
    mask = Image.fromarray((level * 255).astype(np.uint8), "L").resize(
        image.size, Image.Resampling.BILINEAR)
    red = Image.new("RGB", image.size, (255, 0, 0))
    alpha = mask.point(lambda v: int(v * 0.6))  # at most 60% red: the picture stays visible
    shown = Image.composite(red, image, alpha)
    out = io.BytesIO()
    shown.save(out, format="PNG")
    return out.getvalue()


def write_heatmaps(index, hits, vector: np.ndarray, out_dir, max_side: int = 1024) -> list:
    """One PNG per image hit, `<rank>-<file stem>.png` in out_dir: the image (at most
    `max_side`; a PDF page as ingest rendered it) with the query's heatmap over it. Returns
    the paths written."""
    from pathlib import Path

    from mmindex.core.atomic import atomic_path
    from mmindex.data.batches import read_image
    from mmindex.data.pages import page_item

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for hit in (h for h in hits if h.table == "images"):
        if getattr(hit, "page", None):  # rendered at the model's side, as ingest renders it
            picture = read_image(page_item(hit.path, hit.page),
                                 index.manifest.model.image_size).require().image
        else:
            picture = read_image(hit.path, max_side).require().image
        target = out / f"{hit.rank:03d}-{Path(hit.path).stem}.png"
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(heatmap_png(picture, heatmap(index, hit.id, vector), max_side))
        written.append(target)
    return written


# -- the tiles table, held per index snapshot -----------------------------------------------
@dataclass(frozen=True)
class _Lookup:
    ids: np.ndarray  # (T,) tile ids, ascending
    image_ids: np.ndarray  # (T,)
    boxes: np.ndarray  # (T, 4) int32

    def positions(self, tile_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ids, tile_ids)


_LOOKUPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_EMBEDDINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _lookup(index) -> _Lookup:
    """Tile id -> image id and box, built once per Index (a snapshot never changes)."""
    if index not in _LOOKUPS:
        rows = index.rows(TILE)
        ids = rows.column("id").to_numpy()
        order = np.argsort(ids, kind="stable")
        boxes = np.stack([rows.column(c).to_numpy() for c in ("x0", "y0", "x1", "y1")], axis=1)
        _LOOKUPS[index] = _Lookup(ids[order], rows.column("image_id").to_numpy()[order],
                                  boxes[order] if len(ids) else np.zeros((0, 4), np.int32))
    return _LOOKUPS[index]


def _vectors(index, table: str, ids: np.ndarray) -> np.ndarray:
    """(len(ids), D) stored vectors: FAISS's exact copy where it keeps one (flat, ivfpq),
    else the table's embeddings read once per snapshot (IVF-Flat has no direct map)."""
    vectors = index.vectors(table)
    if vectors.kind != "ivf":
        return np.stack([vectors.exact_vector(int(i)) for i in ids])
    cache = _EMBEDDINGS.setdefault(index, {})
    if table not in cache:
        from mmindex.index import store

        all_ids, matrix = store.stored_vectors(index.root, index.manifest, table)
        order = np.argsort(all_ids)
        cache[table] = (all_ids[order], matrix[order])
    all_ids, matrix = cache[table]
    return matrix[np.searchsorted(all_ids, ids)]
