"""Training-time image augmentation that keeps the caption true (issue 28).

A contrastive model trained on one renderer learns the renderer; varying what the caption
does not describe (framing, a slight tilt, blur, noise, JPEG artefacts, light) makes it
learn the content instead. Nothing here may change what a caption says:

- crops keep every object whole and its centre in the same third of the image, so "at the
  top left" stays true, and zoom at most 1/min_crop_side, so "small" and "large" stay apart
  (shapes' large radius is 1.9x the small one, jitter included more than 1.4x);
- rotations are a few degrees, filled with the border's own colour (black corners would
  look like a black object);
- brightness and contrast only: no hue or saturation change, so colour names stay right.

The geometry is ours (it needs the scene's regions); the pixel operations are torchvision's
and Pillow's.
Randomness comes from the caller's numpy Generator, so a run is reproducible and a resumed
run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageFilter

from mmindex.errors import UserInputError

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width and height


@dataclass(frozen=True)
class Region:
    """What a crop must respect of one described object."""

    box: Box  # stays whole inside the crop
    centre: Box  # where the object's centre may be: stays inside its own third of the image


AUGMENT_LEVELS = ("none", "light", "strong")
GENERIC_CENTRE = 1 / 24  # an explicit box's centre, give or take this, must keep its third
CROP_TRIES = 8  # crop sides tried before falling back to the whole image


@dataclass(frozen=True)
class AugmentPolicy:
    level: str
    min_crop_side: float  # a crop keeps at least this fraction of each side
    max_rotation: float  # degrees, the whole image
    blur_p: float  # chance of a Gaussian blur
    max_blur_sigma: float  # pixels
    noise_p: float
    max_noise_sigma: float  # grey levels of 255
    jpeg_p: float
    min_jpeg_quality: int
    brightness: float  # factor drawn from 1 ± this
    contrast: float

    def to_dict(self) -> dict:
        return asdict(self)


POLICIES = {
    "light": AugmentPolicy("light", 0.9, 4.0, 0.25, 0.8, 0.25, 4.0, 0.25, 60, 0.1, 0.1),
    "strong": AugmentPolicy("strong", 0.8, 8.0, 0.5, 1.2, 0.5, 8.0, 0.5, 35, 0.2, 0.2),
}


def augment_policy(level: str) -> AugmentPolicy | None:
    """The named policy; None for 'none'. An unknown name is the user's error."""
    if level == "none":
        return None
    if level not in POLICIES:
        raise UserInputError(
            f"unknown --augment {level!r}; choose one of {', '.join(AUGMENT_LEVELS)} "
            "(none: as before, light: mild, strong: more crop, tilt, blur, noise and JPEG)"
        )
    return POLICIES[level]


# ---------------------------------------------------------------- what must stay in view


def scene_regions(attributes: str | None) -> tuple[Region, ...] | None:
    """The regions an image's caption depends on, from its attributes JSON.

    A shapes object lies inside its grid cell, its centre at least CENTRE_INSET cells from
    the cell's edges (the renderer guarantees both). An object with a "box" [x0, y0, x1, y1]
    (fractions) uses that box and its centre. None when the attributes name no place: the
    image then gets a plain mild crop.
    """
    if not attributes:
        return None
    try:
        items = json.loads(attributes)
    except json.JSONDecodeError:
        return None
    regions = [_region(item) for item in (items if isinstance(items, list) else [items])]
    if not regions or any(region is None for region in regions):
        return None
    return tuple(regions)


def _region(item) -> Region | None:
    from mmindex.data.shapes import CENTRE_INSET, POSITIONS

    if not isinstance(item, dict):
        return None
    if item.get("position") in POSITIONS:
        row, col = divmod(POSITIONS.index(item["position"]), 3)
        cell = (col / 3, row / 3, (col + 1) / 3, (row + 1) / 3)
        inset = CENTRE_INSET / 3
        return Region(cell, (cell[0] + inset, cell[1] + inset, cell[2] - inset, cell[3] - inset))
    box = item.get("box")
    if isinstance(box, list) and len(box) == 4:
        x0, y0, x1, y1 = (float(v) for v in box)
        (left, right), (top, bottom) = _near((x0 + x1) / 2), _near((y0 + y1) / 2)
        return Region((x0, y0, x1, y1), (left, top, right, bottom))
    return None


def _near(centre: float) -> tuple[float, float]:
    """centre ± GENERIC_CENTRE, clipped to the centre's own third."""
    third = min(int(centre * 3), 2)
    return max(centre - GENERIC_CENTRE, third / 3), min(centre + GENERIC_CENTRE, (third + 1) / 3)


def crop_window(
    regions: Sequence[Region] | None, min_side: float, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(left, top, side) of a square crop, as fractions, that keeps every region's box inside
    and its centre area inside its own third. The whole image always qualifies, so after
    CROP_TRIES sides that fit nothing the answer is (0, 0, 1)."""
    for _ in range(CROP_TRIES):
        side = float(rng.uniform(min_side, 1.0))
        spans = [_feasible_offsets(regions or (), side, axis) for axis in (0, 1)]
        if all(low <= high for low, high in spans):
            left, top = (float(rng.uniform(low, high)) for low, high in spans)
            return left, top, side
    return 0.0, 0.0, 1.0


def _feasible_offsets(regions: Sequence[Region], side: float, axis: int) -> tuple[float, float]:
    """The interval of crop starts along one axis that satisfies every region."""
    low, high = 0.0, 1.0 - side
    for region in regions:
        start, end = region.box[axis], region.box[axis + 2]
        low, high = max(low, end - side), min(high, start)  # the box stays inside
        first, last = region.centre[axis], region.centre[axis + 2]
        third = min(int((first + last) / 2 * 3), 2)
        # (first - offset) / side >= third / 3 and (last - offset) / side <= (third + 1) / 3
        low = max(low, last - (third + 1) / 3 * side)
        high = min(high, first - third / 3 * side)
    return low, high


# ---------------------------------------------------------------- the pixels


def augment_image(
    image: Image.Image,
    policy: AugmentPolicy,
    rng: np.random.Generator,
    regions: Sequence[Region] | None = None,
) -> Image.Image:
    """One random caption-preserving variant of `image`, the same size, RGB."""
    image = _crop_and_tilt(image.convert("RGB"), policy, rng, regions)
    image = _light(image, policy, rng)
    return _degrade(image, policy, rng)


def _crop_and_tilt(image, policy, rng, regions) -> Image.Image:
    import torchvision.transforms.v2.functional as F

    width, height = image.size
    left, top, side = crop_window(regions, policy.min_crop_side, rng)
    image = F.resized_crop(
        image,
        round(top * height), round(left * width), round(side * height), round(side * width),
        [height, width], antialias=True,
    )  # fmt: skip
    angle = float(rng.uniform(-policy.max_rotation, policy.max_rotation))
    fill = [int(v) for v in border_colour(image)]
    return F.rotate(image, angle, interpolation=F.InterpolationMode.BILINEAR, fill=fill)


def border_colour(image: Image.Image) -> np.ndarray:
    """The median colour of the outermost pixels: what a tilt uncovers is filled with it."""
    pixels = np.asarray(image)  # (H, W, 3)
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])  # (2H+2W, 3)
    return np.median(edge, axis=0)  # (3,)


def _light(image, policy, rng) -> Image.Image:
    import torchvision.transforms.v2.functional as F

    brightness = float(rng.uniform(1 - policy.brightness, 1 + policy.brightness))
    contrast = float(rng.uniform(1 - policy.contrast, 1 + policy.contrast))
    return F.adjust_contrast(F.adjust_brightness(image, brightness), contrast)


def _degrade(image, policy, rng) -> Image.Image:
    """Blur, JPEG re-encoding and sensor-like noise, each with its own chance."""
    draws = rng.random(3)  # always three draws, so one chance does not shift the others
    if draws[0] < policy.blur_p:
        # Pillow's blur: torchvision's on a PIL image took 40 ms here, Pillow's 0.2 ms
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, policy.max_blur_sigma))))
    if draws[1] < policy.jpeg_p:  # Pillow's codec: torchvision's image encoders are deprecated
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(policy.min_jpeg_quality, 96)))
        image = Image.open(buffer).convert("RGB")
    if draws[2] < policy.noise_p:
        # numpy's noise, not torchvision's: that one draws from torch's global generator,
        # which the caller's seed does not reach
        sigma = float(rng.uniform(1.0, policy.max_noise_sigma))
        pixels = np.asarray(image, dtype=np.float32)  # (H, W, 3)
        noisy = pixels + rng.normal(0.0, sigma, size=pixels.shape)
        image = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), "RGB")
    return image
