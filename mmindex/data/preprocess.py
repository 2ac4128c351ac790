"""PIL image -> model input as a numpy array, without torch or torchvision: the preprocessing
an exported model (models/exported.py) runs, so ingest and image queries need neither.

`ResizeCropNormalise` restates what open_clip's evaluation transform does (torchvision's
Resize of the shorter side, CenterCrop, ToTensor, Normalize) with Pillow and numpy; a test
compares the two on odd sizes and both orientations. `SquareResize` is the starter model's
(the whole image squashed to a square, scaled to [-1, 1])."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class ResizeCropNormalise:
    resize: int  # the shorter side becomes this many pixels
    crop: int  # then the centre square of this side is kept
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __call__(self, image: Image.Image) -> np.ndarray:
        """(3, crop, crop) float32."""
        image = _resize_shorter(image.convert("RGB"), self.resize, _FILTERS[self.interpolation])
        width, height = image.size
        # torchvision rounds the offsets the same way (so a 1-pixel slack goes right/down)
        left, top = int(round((width - self.crop) / 2.0)), int(round((height - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32) / 255.0  # (S, S, 3)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def to_dict(self) -> dict:
        return {"kind": "resize-crop", **asdict(self)}


@dataclass(frozen=True)
class SquareResize:
    size: int

    def __call__(self, image: Image.Image) -> np.ndarray:
        """(3, size, size) float32 in [-1, 1] (TF-Lite's input scaling)."""
        square = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        pixels = np.asarray(square, dtype=np.float32) / 127.5 - 1.0  # (S, S, 3)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def to_dict(self) -> dict:
        return {"kind": "square", **asdict(self)}


def from_dict(cfg: dict):
    """The transform a `to_dict()` described (as stored beside an exported model)."""
    cfg = dict(cfg)
    kind = cfg.pop("kind")
    if kind == "resize-crop":
        return ResizeCropNormalise(cfg["resize"], cfg["crop"], tuple(cfg["mean"]),
                                   tuple(cfg["std"]), cfg.get("interpolation", "bicubic"))
    if kind == "square":
        return SquareResize(cfg["size"])
    raise ValueError(f"unknown preprocessing {kind!r}")


def _resize_shorter(image: Image.Image, side: int, resample) -> Image.Image:
    """The shorter side to `side`, the longer scaled and truncated, as torchvision does."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(side * long / short)
    size = (side, new_long) if width <= height else (new_long, side)
    return image if size == image.size else image.resize(size, resample)
