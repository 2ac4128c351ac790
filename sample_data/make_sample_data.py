"""Rebuild sample_data/photos/ (and, with --shapes, sample_data/shapes/) from packaged sources.

The photos come from scikit-image's `skimage.data` and scikit-learn's sample images, which
ship inside those packages; neither is an mmindex dependency, so install them first:

    pip install scikit-image scikit-learn
    python sample_data/make_sample_data.py [--shapes]

Licences are in photos/LICENSES.md. The texts in texts/ are written by hand, not generated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
PHOTOS = HERE / "photos"
JPEG_QUALITY = 90
MAX_SIDE = 800  # keeps the largest source (retina, 1411 px) small in the repository
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_ON_DISPLAY = 6  # EXIF orientation: the viewer turns the stored pixels 90° clockwise

# skimage.data function -> file name that says what the picture shows
SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.jpg",
    "chelsea": "cat.jpg",
    "coffee": "coffee.jpg",
    "rocket": "rocket.jpg",
    "camera": "photographer.jpg",
    "coins": "greek_coins.jpg",
    "clock": "wall_clock_blurred.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "tissue_microscopy.jpg",
    "retina": "retina.jpg",
}
# scikit-learn sample image -> file name
SKLEARN_PHOTOS = {"china.jpg": "chinese_pagoda.jpg", "flower.jpg": "orange_flower.jpg"}


def save_jpeg(image: Image.Image, name: str, **extra) -> Path:
    image = image.copy()
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    path = PHOTOS / name
    image.save(path, "JPEG", quality=JPEG_QUALITY, **extra)
    return path


def skimage_photos() -> dict[str, Image.Image]:
    import skimage.data

    # Greyscale sources (camera, coins, clock) stay greyscale: the decoder must handle "L".
    return {
        name: Image.fromarray(getattr(skimage.data, fn)()) for fn, name in SKIMAGE_PHOTOS.items()
    }


def sklearn_photos() -> dict[str, Image.Image]:
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return {
        SKLEARN_PHOTOS[Path(path).name]: Image.fromarray(pixels)
        for path, pixels in zip(bunch.filenames, bunch.images)
    }


def write_exif_rotated(upright: Image.Image, name: str) -> Path:
    """Pixels stored turned 90° anticlockwise with an Orientation tag that turns them back.

    A viewer (or a decoder that honours EXIF) shows the photo upright; one that ignores
    the tag shows it lying on its side, which is what the decoder tests look for.
    """
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_ON_DISPLAY
    path = save_jpeg(upright.rotate(90, expand=True), name, exif=exif.tobytes())
    shown = ImageOps.exif_transpose(Image.open(path))
    assert shown.size == Image.open(PHOTOS / "rocket.jpg").size, "EXIF rotation did not round-trip"
    return path


def write_transparent_horse(name: str) -> Path:
    """The horse silhouette in brown on a fully transparent background.

    Transparent pixels hold black RGB, as many real PNGs do: a decoder that drops alpha
    without compositing shows a brown horse on black instead of on white.
    """
    import skimage.data

    background = skimage.data.horse()  # (328, 400) bool, True outside the horse
    rgba = np.zeros(background.shape + (4,), dtype=np.uint8)  # (H, W, 4)
    rgba[~background] = (120, 72, 40, 255)
    path = PHOTOS / name
    Image.fromarray(rgba, "RGBA").save(path, optimize=True)
    return path


def make_photos() -> list[Path]:
    PHOTOS.mkdir(parents=True, exist_ok=True)
    photos = skimage_photos() | sklearn_photos()
    written = [save_jpeg(image, name) for name, image in sorted(photos.items())]
    written.append(write_exif_rotated(photos["rocket.jpg"], "rocket_exif_rotated.jpg"))
    written.append(write_transparent_horse("horse_transparent.png"))
    return written


def make_shapes() -> None:
    from mmindex.data.shapes import write_shapes

    print(write_shapes(HERE / "shapes", n=300, seed=1000, overwrite=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", action="store_true", help="also rebuild shapes/ (seed 1000)")
    args = parser.parse_args()
    for path in make_photos():
        print(f"{path.relative_to(HERE)}  {path.stat().st_size // 1024} KiB")
    if args.shapes:
        make_shapes()


if __name__ == "__main__":
    main()
