"""Image files and PDF pages -> decoded -> preprocessed -> one stacked tensor: the one way a batch of images
becomes model input (ingest, image queries, evaluation, training, vision tokens), with one
error policy: a file that cannot be decoded or read becomes a reason beside its path, never
an exception, and each caller decides whether that skips the file or stops the work."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmindex.data.images import DEFAULT_MAX_PIXELS, DecodedImage, DecodeError, decode_image
from mmindex.data.pages import split_page_item
from mmindex.data.pdf import render_page
from mmindex.data.tiles import View, crop_tiles
from mmindex.errors import UserInputError


@dataclass(frozen=True)
class ImageResult:
    path: str
    decoded: DecodedImage | None  # None when the file cannot be used
    reason: str = ""  # why not, for a person

    @property
    def ok(self) -> bool:
        return self.decoded is not None

    def require(self) -> DecodedImage:
        """The decoded image, for a caller that cannot do without it."""
        if self.decoded is None:
            raise UserInputError(f"cannot read image {self.path}: {self.reason}")
        return self.decoded


@dataclass(frozen=True)
class PixelBatch:
    results: list[ImageResult]  # one per path, in order
    pixels: object  # (N_ok, 3, H, W) of the usable images in order (numpy or torch), or None

    @property
    def failures(self) -> list[ImageResult]:
        return [r for r in self.results if not r.ok]

    def every_image(self):
        """The pixels, when every image was asked for: a gap would shift the rest."""
        for result in self.failures[:1]:
            result.require()
        return self.pixels


def decode_item(item: str | Path, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                pdf_dpi: float | None = None) -> DecodedImage:
    """An image file, or a PDF page named by its page item (`report.pdf#page=3`, data/pdf.py)
    rendered at `pdf_dpi` (None: twice `min_side`). Every image load goes through here, so
    ingest, queries, thumbnails and `ask` all understand pages. Raises DecodeError, OSError."""
    page = split_page_item(item)
    if page is not None:
        return render_page(page[0], page[1], min_side, max_pixels, pdf_dpi)
    return decode_image(Path(item), min_side, max_pixels)


def read_image(path: str | Path, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS,
               pdf_dpi: float | None = None) -> ImageResult:
    """Decode one file or page (decode_item); a bad or unreadable one is a reason."""
    try:
        return ImageResult(str(path), decode_item(path, min_side, max_pixels, pdf_dpi))
    except DecodeError as exc:
        return ImageResult(str(path), None, str(exc))
    except OSError as exc:  # unreadable, or vanished since it was listed
        return ImageResult(str(path), None, f"cannot read file: {exc.strerror or exc}")


def read_view(item: str | Path | View, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS,
              pdf_dpi: float | None = None) -> ImageResult:
    """read_image of a path, or of a View: the file decoded at full size (the box's pixels
    count), or the page rendered as every load renders it, and cropped to the box, scaled
    from the View's space to the pixels decoded (the result's size is the box's)."""
    if not isinstance(item, View):
        return read_image(item, min_side, max_pixels, pdf_dpi)
    page = split_page_item(item.path) is not None  # a page has no full size: min_side scales it
    whole = read_image(item.path, min_side if page else 0, max_pixels, pdf_dpi)
    if not whole.ok:
        return whole
    full = whole.decoded
    space_width, space_height = item.space or (full.width, full.height)
    x0, y0, x1, y1 = item.box
    if not (0 <= x0 < x1 <= space_width and 0 <= y0 < y1 <= space_height):
        return ImageResult(str(item.path), None, f"the box {item.box} is outside the "
                           f"{space_width}x{space_height} image")
    crop = crop_tiles(full.image, space_width, space_height, [item.box])[0]
    return ImageResult(str(item.path), DecodedImage(crop, x1 - x0, y1 - y0, full.format))


def load_pixels(paths: Sequence[str | Path | View], preprocess: Callable, min_side: int,
                max_pixels: int = DEFAULT_MAX_PIXELS,
                pool: Executor | None = None, pdf_dpi: float | None = None) -> PixelBatch:
    """Decode `paths` (files, page items or Views, in `pool`'s threads when given: Pillow
    releases the GIL) and stack the preprocessed usable ones: a numpy array when
    `preprocess` gives arrays (an exported model's), else a torch tensor. A View is its box
    of the file (read_view)."""

    def read(path):
        return read_view(path, min_side, max_pixels, pdf_dpi)

    results = list(pool.map(read, paths) if pool else map(read, paths))
    arrays = [preprocess(r.decoded.image) for r in results if r.ok]  # each (3, H, W)
    return PixelBatch(results, stack_pixels(arrays) if arrays else None)


def stack_pixels(arrays: list):
    """Preprocessed images, each (3, H, W), as one (N, 3, H, W) numpy array or tensor."""
    if isinstance(arrays[0], np.ndarray):
        return np.stack(arrays)
    import torch

    return torch.stack(arrays)
