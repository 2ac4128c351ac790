"""Caption-preserving augmentation (issue 28): after any augmentation every object a
caption names is still in the picture, in its own third, with its colour name right."""

from __future__ import annotations

import json

import numpy as np
import pytest

from PIL import Image, ImageFilter

from mmindex.data.augment import (
    POLICIES,
    Region,
    augment_image,
    augment_policy,
    crop_window,
    scene_regions,
)
from mmindex.data.shapes import COLORS, POSITIONS, attributes_json, make_example
from mmindex.errors import UserInputError

SIDE = 96  # at 64 px a small shape is ~30 pixels, and a blur leaves few of them pure
CHROMATIC = {name: rgb for name, rgb in COLORS.items() if name not in ("white", "black")}


def hsv(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) int HSV, each channel 0-255 (Pillow's scale)."""
    return np.asarray(Image.fromarray(pixels, "RGB").convert("HSV")).astype(int)


PALETTE_HUES = {name: hsv(np.array([[rgb]], dtype=np.uint8))[0, 0, 0]
                for name, rgb in CHROMATIC.items()}


def named_mask(pixels: np.ndarray, color: str) -> np.ndarray:
    """Pixels a person would call `color`: for a hue, saturated pixels whose nearest palette
    hue is its own (brightness and contrast scale a colour but must not turn its hue);
    white and black, grey pixels clearly lighter or darker than the background."""
    # a 3x3 median first: per-pixel noise on a tinted background makes single pixels
    # look saturated, and those are no object
    pixels = np.asarray(Image.fromarray(pixels, "RGB").filter(ImageFilter.MedianFilter(3)))
    h, s, v = np.moveaxis(hsv(pixels), -1, 0)  # each (H, W)
    if color in ("white", "black"):
        background = np.median(np.concatenate([v[0], v[-1], v[:, 0], v[:, -1]]))
        if color == "white":
            return (s < 40) & (v > background + 35)
        return (v < background - 35) & (v < 100)
    names = list(PALETTE_HUES)
    hues = np.array([PALETTE_HUES[n] for n in names])  # (6,)
    apart = np.abs(h[..., None] - hues)  # (H, W, 6), circular on 0-255
    nearest = np.minimum(apart, 256 - apart).argmin(axis=-1)
    return (s > 90) & (v > 60) & (nearest == names.index(color))


def distinct_colour_objects(example):
    # two objects of one colour would make "its pixels" ambiguous
    return [o for o in example.objects
            if sum(other.color == o.color for other in example.objects) == 1]


@pytest.mark.parametrize("style", ["flat", "textured", "rotated"])
def test_a_caption_still_matches_its_strongly_augmented_image(style):
    """For many scenes and draws: each object's colour is still there, not much less of it
    than before (kept whole), and centred in its own grid cell (its position word)."""
    policy = POLICIES["strong"]
    checked = 0
    for index in range(25):
        example = make_example(21, index, size=SIDE, style=style)
        regions = scene_regions(attributes_json(example.objects))
        before = np.asarray(example.image)
        for draw in range(4):
            after = np.asarray(augment_image(example.image, policy,
                                             np.random.default_rng([index, draw]), regions))
            assert after.shape == before.shape
            for obj in distinct_colour_objects(example):
                was = named_mask(before, obj.color).sum()
                now = named_mask(after, obj.color)
                assert now.sum() >= 0.5 * was, (style, index, draw, obj)
                ys, xs = np.nonzero(now)
                centre = (int(ys.mean() * 3 // SIDE), int(xs.mean() * 3 // SIDE))  # (row, col)
                assert centre == divmod(POSITIONS.index(obj.position), 3), (index, draw, obj)
                checked += 1
    assert checked > 100


def test_brightness_and_contrast_never_rename_a_colour():
    """Every object colour on a mid-grey background, at the policy's extremes of light,
    is still named by its own colour."""
    import torchvision.transforms.v2.functional as F

    policy = POLICIES["strong"]
    for name, rgb in COLORS.items():
        scene = Image.new("RGB", (24, 24), (128, 128, 128))
        scene.paste(Image.new("RGB", (8, 8), rgb), (8, 8))
        for brightness in (1 - policy.brightness, 1 + policy.brightness):
            for contrast in (1 - policy.contrast, 1 + policy.contrast):
                changed = F.adjust_contrast(F.adjust_brightness(scene, brightness), contrast)
                mask = named_mask(np.asarray(changed), name)
                inside = mask[9:15, 9:15].all()  # the median filter rounds the corners
                outside = mask.sum() - mask[8:16, 8:16].sum()
                assert inside and outside == 0, (name, brightness, contrast)


def test_crop_window_keeps_every_box_inside_and_each_centre_area_in_its_third():
    rng = np.random.default_rng(0)
    for _ in range(300):
        cells = rng.choice(9, size=int(rng.integers(1, 4)), replace=False)
        regions = scene_regions(json.dumps([{"position": POSITIONS[c]} for c in cells]))
        left, top, side = crop_window(regions, 0.7, rng)
        assert 0.7 <= side <= 1.0 and min(left, top) >= -1e-9
        assert max(left, top) + side <= 1 + 1e-9
        for region in regions:
            for axis, offset in ((0, left), (1, top)):
                start, end = region.box[axis], region.box[axis + 2]
                assert offset - 1e-9 <= start and end <= offset + side + 1e-9
                first, last = region.centre[axis], region.centre[axis + 2]
                third = int((first + last) / 2 * 3)
                assert (first - offset) / side >= third / 3 - 1e-9
                assert (last - offset) / side <= (third + 1) / 3 + 1e-9


def test_crop_window_falls_back_to_the_whole_image_when_no_crop_keeps_the_regions():
    corners = (Region((0.0, 0.0, 0.1, 0.1), (0.05, 0.05, 0.05, 0.05)),
               Region((0.9, 0.9, 1.0, 1.0), (0.95, 0.95, 0.95, 0.95)))  # only side 1 fits
    assert crop_window(corners, 0.5, np.random.default_rng(1)) == (0.0, 0.0, 1.0)
    left, top, side = crop_window(None, 0.5, np.random.default_rng(1))  # nothing to keep
    assert side < 1.0


def test_augmentation_is_a_function_of_the_generator_and_really_varies():
    example = make_example(5, 0, size=48)
    regions = scene_regions(attributes_json(example.objects))
    policy = POLICIES["light"]

    def run(seed):
        return np.asarray(augment_image(example.image, policy, np.random.default_rng(seed), regions))

    assert np.array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))
    assert not np.array_equal(run(3), np.asarray(example.image))


def test_policy_names():
    assert augment_policy("none") is None
    assert augment_policy("strong").min_crop_side < augment_policy("light").min_crop_side
    with pytest.raises(UserInputError, match="'heavy'.*none, light, strong"):
        augment_policy("heavy")


def test_scene_regions_from_shapes_positions_and_explicit_boxes():
    shapes = json.dumps([{"shape": "star", "color": "red", "size": "small",
                          "position": "bottom right"}])
    (region,) = scene_regions(shapes)
    assert region.box == (2 / 3, 2 / 3, 1.0, 1.0)
    assert 2 / 3 < region.centre[0] < region.centre[2] < 1.0  # inside the cell, not all of it
    (explicit,) = scene_regions(json.dumps([{"box": [0.1, 0.2, 0.3, 0.4]}]))
    assert explicit.box == (0.1, 0.2, 0.3, 0.4)
    assert explicit.centre[0] <= 0.2 <= explicit.centre[2] and explicit.centre[3] <= 1 / 3
    assert scene_regions(json.dumps([{"label": "dog"}])) is None  # no place: a plain crop
    assert scene_regions("not json") is None and scene_regions(None) is None
