"""The tile grid rule (data/tiles.py): coverage, overlap, budget, and the heatmap grid."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from mmindex.data.tiles import TileSpec, heat_grid, parse_tile_spec, tile_boxes
from mmindex.errors import UserInputError


@pytest.mark.parametrize("width,height,budget,overlap", [
    (512, 512, 16, 0.25), (512, 512, 49, 0.25), (768, 512, 9, 0.5), (4000, 3000, 16, 0.25),
    (2000, 300, 4, 0.25), (300, 2000, 5, 0.1), (97, 300, 3, 0.0), (1000, 600, 2, 0.3),
])
def test_boxes_cover_the_image_overlap_as_stated_and_keep_the_budget(width, height, budget,
                                                                     overlap):
    model_side = 96
    boxes = tile_boxes(width, height, TileSpec(budget, overlap), model_side)
    assert 2 <= len(boxes) <= budget
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert min(x1 - x0, y1 - y0) >= min(model_side, width, height)  # never upscaled
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    side_x, side_y = boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1]
    xs = sorted({b[0] for b in boxes})
    ys = sorted({b[1] for b in boxes})
    # neighbours share at least `overlap` of a tile: their starts are at most (1 - o) apart
    assert all(b - a <= side_x * (1 - overlap) + 1 for a, b in pairwise(xs))
    assert all(b - a <= side_y * (1 - overlap) + 1 for a, b in pairwise(ys))


def test_the_smallest_tiles_that_fit_the_budget_are_chosen():
    # 512 px, overlap 0.25, floor 96: 7 x 7 tiles of 96 px fit 49; with 48 allowed, the
    # tiles must grow until 6 a side fit (36 <= 48): bigger tiles, fewer of them
    assert len(tile_boxes(512, 512, TileSpec(49, 0.25), 96)) == 49
    grown = tile_boxes(512, 512, TileSpec(48, 0.25), 96)
    assert len(grown) == 36 and grown[0][2] > 96


def test_small_images_and_a_budget_of_one_get_no_tiles():
    assert tile_boxes(96, 80, TileSpec(16), 96) == []
    assert tile_boxes(4000, 3000, TileSpec(1), 224) == []


@pytest.mark.parametrize("make", [
    lambda: TileSpec(0), lambda: TileSpec(257), lambda: TileSpec(True),
    lambda: TileSpec(4, overlap=0.95), lambda: TileSpec(4, overlap=-0.1),
    lambda: TileSpec(4, min_side=-1), lambda: parse_tile_spec("many"), lambda: parse_tile_spec("2.5"),
])
def test_a_bad_budget_or_overlap_is_a_typed_error(make):
    with pytest.raises(UserInputError, match="tile"):
        make()


def test_heat_grid_is_highest_where_only_the_matching_tile_covers():
    boxes = tile_boxes(400, 200, TileSpec(8, 0.25), 96)
    best = 2
    scores = np.where(np.arange(len(boxes)) == best, 1.0, 0.0)
    grid = heat_grid(400, 200, boxes, scores, cells=16)
    assert grid.shape == (8, 16)  # 16 cells along the long side, the short side in proportion
    row, col = np.unravel_index(np.nanargmax(grid), grid.shape)
    x, y = (col + 0.5) * 400 / 16, (row + 0.5) * 200 / 8
    x0, y0, x1, y1 = boxes[best]
    assert x0 <= x < x1 and y0 <= y < y1


@pytest.mark.parametrize("style", ["flat", "textured"])
def test_a_canvas_scene_keeps_its_objects_small_and_inside_its_box(style):
    from mmindex.data.shapes import make_example

    example = make_example(7, 3, size=96, canvas=512, style=style)
    x0, y0, x1, y1 = example.box
    assert example.image.size == (512, 512) and (x1 - x0, y1 - y0) == (96, 96)
    pixels = np.asarray(example.image, np.float32)  # (512, 512, 3)
    grey = pixels.max(axis=2) - pixels.min(axis=2)  # the backdrops are grey; objects coloured
    inside = np.zeros(grey.shape, bool)
    inside[y0:y1, x0:x1] = True
    coloured = grey > 40
    if all(o.color not in ("white", "black") for o in example.objects):
        assert coloured[inside].any()
    assert not coloured[~inside].any()
