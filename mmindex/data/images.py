"""Robust image decoding: whatever a real photo folder holds becomes an RGB image or a
DecodeError with a reason a person can act on. No torch here, so workers stay light."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmindex.data.exif import NO_METADATA, PhotoMetadata, photo_metadata
from mmindex.data.scan import HEIF_EXTENSIONS, RAW_EXTENSIONS

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: larger than any camera, smaller than a bomb
_ROTATING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


class DecodeError(Exception):
    """One file could not be decoded; ingest records it in the errors table and goes on."""


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, upright, possibly reduced by JPEG draft decoding
    width: int  # full-resolution size after EXIF rotation
    height: int
    format: str
    metadata: PhotoMetadata = NO_METADATA  # when and where, from EXIF


def decode_image(path: Path, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Open, check, draft-decode, rotate upright and convert to RGB.

    `min_side` is the model's input side: JPEGs decode at the smallest DCT scale whose
    short side is still at least that, which is several times faster on large photos."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    if path.suffix.lower() in RAW_EXTENSIONS:
        raise DecodeError(f"camera RAW ({path.suffix.lower()}) is not decoded; export a JPEG "
                          "(or HEIC) of it from your photo editor and index that")
    _register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return _decode_open(img, min_side, max_pixels)
    except UnidentifiedImageError:
        raise DecodeError(_unidentified_reason(path.suffix.lower())) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"decompression bomb refused by Pillow ({exc}); if the file is "
                          "genuine, raise --max-pixels and Pillow's Image.MAX_IMAGE_PIXELS") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated / corrupt data
        raise DecodeError(f"corrupt or truncated image: {exc}") from None


def _register_heif() -> bool:
    """Teach Pillow HEIC/HEIF once, on the first decode (importing pillow-heif costs ~0.1 s,
    which a text search does not need to pay). False when pillow-heif is not installed."""
    global _heif_registered
    if _heif_registered is None:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            _heif_registered = False
        else:
            register_heif_opener()
            _heif_registered = True
    return _heif_registered


_heif_registered: bool | None = None


def _unidentified_reason(suffix: str) -> str:
    if suffix in HEIF_EXTENSIONS and not _register_heif():
        return "HEIC/HEIF needs pillow-heif, which is not installed: pip install pillow-heif"
    if suffix == ".avif":
        from PIL import features

        if not features.check("avif"):
            return ("this Pillow was built without AVIF; upgrade it (pip install -U pillow: "
                    "its wheels read AVIF from 11.3)")
    return "not an image that Pillow can identify"


def _decode_open(img: Image.Image, min_side: int, max_pixels: int) -> DecodedImage:
    width, height = img.size
    if width * height > max_pixels:
        raise DecodeError(
            f"{width}x{height} pixels exceeds the limit of {max_pixels} "
            "(a decompression bomb?); raise it with --max-pixels if the file is genuine"
        )
    fmt = img.format or "unknown"
    if img.getexif().get(_EXIF_ORIENTATION) in _ROTATING_ORIENTATIONS:
        width, height = height, width
    if fmt == "JPEG" and min_side > 0:
        img.draft("RGB", (min_side, min_side))  # the decoder keeps both sides >= min_side
    img.load()
    metadata = photo_metadata(img)  # read before exif_transpose, which drops orientation
    upright = ImageOps.exif_transpose(img)
    return DecodedImage(to_rgb(upright), width, height, fmt, metadata)


def to_rgb(img: Image.Image) -> Image.Image:
    """Every Pillow mode to 8-bit RGB: 16-bit and float scaled (not clipped), and transparency
    composited on white, so logos on clear backgrounds do not turn black."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _scale_to_8bit(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float64)  # (H, W)
    top = 65535.0 if img.mode.startswith("I") and pixels.max() > 255 else max(pixels.max(), 1.0)
    if img.mode == "F":
        top = max(float(pixels.max()), 1e-12)
    scaled = np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")
