"""Overlapping tiles of a large image: the grid rule, the crops, and the heatmap grid.

A model sees an image at its input side (224 px for ViT-B/32, 96 px for the shapes model),
so a small object in a 4000-pixel photo shrinks to a few pixels in the one whole-image
vector. Tiles are squares of the image, each encoded at the model's input side, so an
object keeps more of its pixels. The rule, for an image W x H, a stated overlap o and a
budget of at most B tiles (the "token budget": each tile is one more vector, and one more
grid of image tokens for `ask`):

- a tile is a square of side t, at least the model's input side (a smaller tile would be
  upscaled: no detail gained) and at most the image's short side;
- along an axis of length L, n tiles of side t with neighbours overlapping by at least o*t
  need n = 1 + ceil((L - t) / (t * (1 - o))); they are spread evenly, the first at 0 and
  the last ending at L, so the actual overlap is o or more and the tiles cover the image;
- t is the smallest side whose grid holds at most B tiles (found by bisection: the count
  only falls as t grows). When even the short side cannot fit B (an image far longer than
  wide), the tiles grow past the short side into rectangles of the full height (or width):
  the budget is never exceeded.

An image whose both sides fit in the model's input, or whose budget allows one tile only,
gets no tiles: its whole-image vector already sees all of it. Pure functions, no torch: the ingest pass, the search, the
heatmap and `ask` all call them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmindex.errors import UserInputError

# x0, y0, x1, y1 (x1, y1 exclusive) in the image's pixels: a photo's full resolution, a PDF
# page's rendering at ingest (the images row's width x height)
Box = tuple[int, int, int, int]

MAX_BUDGET = 256  # tiles per image; beyond this an index grows 257x for no measured gain
DEFAULT_BUDGET = 16
DEFAULT_OVERLAP = 0.25


@dataclass(frozen=True)
class TileSpec:
    """How an index tiles its images; recorded in the manifest so later ingests keep it."""

    max_tiles: int = DEFAULT_BUDGET  # the budget: tiles per image, at most
    overlap: float = DEFAULT_OVERLAP  # neighbouring tiles share at least this fraction
    min_side: int = 0  # smallest tile side in pixels; 0: the model's input side

    def __post_init__(self):
        if isinstance(self.max_tiles, bool) or not isinstance(self.max_tiles, int) or \
                not 1 <= self.max_tiles <= MAX_BUDGET:
            raise UserInputError(f"the tile budget must be a whole number from 1 to "
                                 f"{MAX_BUDGET}, not {self.max_tiles!r} (e.g. --tiles 16)")
        if not 0.0 <= self.overlap < 0.9:
            raise UserInputError(f"the tile overlap must be at least 0 and below 0.9, not "
                                 f"{self.overlap!r} (e.g. --tile-overlap 0.25)")
        if self.min_side < 0:
            raise UserInputError(f"the smallest tile side must be 0 (the model's input) or "
                                 f"a number of pixels, not {self.min_side!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TileSpec:
        return cls(int(data["max_tiles"]), float(data["overlap"]), int(data.get("min_side", 0)))


@dataclass(frozen=True)
class View:
    """A box of an image file or PDF page item, shown to a model as an image of its own
    (`ask` gives it the whole image and its best tiles); data/batches.py reads it wherever a
    path is read."""

    path: Path
    box: Box  # in the pixels of `space`
    # (width, height) the box is measured in: a PDF page's, its rendering at ingest (the
    # images row's size; a page has no "full size"); None: the file's full resolution
    space: tuple[int, int] | None = None


def parse_tile_spec(budget: str | int, overlap: float = DEFAULT_OVERLAP,
                    min_side: int = 0) -> TileSpec:
    """`--tiles 16` -> TileSpec(16, ...); a budget that is not a whole number is refused."""
    try:
        value = int(str(budget).strip())
    except ValueError:
        raise UserInputError(f"the tile budget must be a whole number of tiles per image "
                             f"(1 to {MAX_BUDGET}), not {budget!r}") from None
    return TileSpec(value, float(overlap), int(min_side))


def axis_count(length: int, side: int, overlap: float) -> int:
    """Tiles of `side` along an axis of `length` that overlap by at least `overlap`."""
    if length <= side:
        return 1
    stride = side * (1.0 - overlap)
    return 1 + math.ceil((length - side) / stride - 1e-9)


def axis_starts(length: int, side: int, count: int) -> list[int]:
    """`count` starts spread evenly from 0 to length - side (whole pixels)."""
    if count == 1:
        return [0]
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def tile_boxes(width: int, height: int, spec: TileSpec, model_side: int) -> list[Box]:
    """The tiles of a width x height image under `spec` (see the module's rule), row-major;
    [] when the image fits in the model's input."""
    floor = spec.min_side or model_side
    if width <= floor and height <= floor:
        return []
    side = _smallest_side(width, height, spec, floor)
    tw, th = min(side, width), min(side, height)
    cols, rows = axis_count(width, tw, spec.overlap), axis_count(height, th, spec.overlap)
    if cols * rows == 1:
        return []  # one tile of the whole image is the whole-image vector again
    return [(x, y, x + tw, y + th)
            for y in axis_starts(height, th, rows) for x in axis_starts(width, tw, cols)]


def _count(width: int, height: int, side: int, overlap: float) -> int:
    return axis_count(width, min(side, width), overlap) * axis_count(height, min(side, height),
                                                                     overlap)


def _smallest_side(width: int, height: int, spec: TileSpec, floor: int) -> int:
    low, high = min(floor, max(width, height)), max(width, height)
    if _count(width, height, low, spec.overlap) <= spec.max_tiles:
        return low
    while high - low > 1:  # invariant: count(low) > budget >= count(high)
        middle = (low + high) // 2
        if _count(width, height, middle, spec.overlap) <= spec.max_tiles:
            high = middle
        else:
            low = middle
    return high


def decode_side(width: int, height: int, boxes: list[Box], model_side: int) -> int:
    """The short side a JPEG may be draft-decoded to and still give every tile at least the
    model's input side: the tiles' scale applied to the image's short side."""
    if not boxes:
        return model_side
    smallest = min(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes)
    return math.ceil(min(width, height) * model_side / max(smallest, 1))


def crop_tiles(image, width: int, height: int, boxes: list[Box]) -> list:
    """PIL crops of `boxes` (in full-resolution pixels) from `image`, which may have been
    decoded smaller than width x height (JPEG draft): the boxes are scaled to it."""
    sx, sy = image.width / width, image.height / height
    return [image.crop((round(x0 * sx), round(y0 * sy), max(round(x1 * sx), round(x0 * sx) + 1),
                        max(round(y1 * sy), round(y0 * sy) + 1)))
            for x0, y0, x1, y1 in boxes]


def heat_grid(width: int, height: int, boxes: list[Box], scores: np.ndarray,
              cells: int = 16) -> np.ndarray:
    """(rows, cols) grid over the image, `cells` along its long side: each cell holds the
    mean score of the tiles that contain its centre (overlaps sharpen where the detail is,
    as the mean of two half-covering tiles falls off on either side of it)."""
    scores = np.asarray(scores, dtype=np.float32)  # (T,)
    long = max(width, height)
    cols = max(1, round(cells * width / long))
    rows = max(1, round(cells * height / long))
    xs = (np.arange(cols) + 0.5) * width / cols  # (cols,) cell centres
    ys = (np.arange(rows) + 0.5) * height / rows  # (rows,)
    total = np.zeros((rows, cols), np.float32)
    count = np.zeros((rows, cols), np.float32)
    for (x0, y0, x1, y1), score in zip(boxes, scores):
        inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
        total += inside * score
        count += inside
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
