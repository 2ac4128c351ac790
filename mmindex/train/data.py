"""Training data for the loop: the image-disjoint validation split, decoded pixels kept in
memory, and the global batches each worker takes its slice of."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmindex.data.augment import AugmentPolicy, augment_image, scene_regions
from mmindex.data.pairs import Pair, SkippedRow

PIXEL_CACHE_BYTES = 2 * 1024**3  # decoded training images kept in memory up to this size


def split_by_image(
    rows: Sequence[Pair], fraction: float, seed: int
) -> tuple[tuple[Pair, ...], tuple[Pair, ...]]:
    """Hold out a fraction of the distinct images with all their captions (no leak via
    a second caption of a training image)."""
    images = sorted({row.image for row in rows})
    n_val = round(len(images) * fraction)
    if n_val == 0:
        return tuple(rows), ()
    order = np.random.default_rng(seed).permutation(len(images))
    held = {images[i] for i in order[:n_val]}
    return (
        tuple(r for r in rows if r.image not in held),
        tuple(r for r in rows if r.image in held),
    )


class PixelSource:
    """Preprocessed image tensors by row index; kept in memory when they fit the budget.

    The first pass decodes every image, so an undecodable file is found before training
    starts, not in the middle of epoch three.
    """

    def __init__(self, encoder, paths: Sequence[Path], budget_bytes: int = PIXEL_CACHE_BYTES):
        self.encoder = encoder
        self.paths = list(paths)
        side = encoder.info.image_size
        self.cached = len(self.paths) * 3 * side * side * 2 <= budget_bytes  # float16
        self.tensors: list[torch.Tensor | None] = [None] * len(self.paths)
        self.failed: list[SkippedRow] = []
        for i in range(len(self.paths)):
            pixels = self._decode(i)
            if pixels is None:
                continue
            if self.cached:
                self.tensors[i] = pixels.to(torch.float16)  # half the memory; ample precision

    def usable(self) -> list[int]:
        bad = {s.row for s in self.failed}
        return [i for i, p in enumerate(self.paths) if str(p) not in bad]

    def batch(self, indices: Sequence[int], step: int = 0) -> torch.Tensor:
        """The rows' pixels; `step` is unused here (the augmented source varies by it)."""
        tensors = [self.tensors[i] if self.cached else self._decode(i) for i in indices]
        return torch.stack(tensors).float()  # (B, 3, H, W)

    def _decode(self, i: int) -> torch.Tensor | None:
        from mmindex.data.batches import load_pixels

        loaded = load_pixels([self.paths[i]], self.encoder.preprocess,
                             self.encoder.info.image_size)
        if loaded.failures:
            self.failed.append(SkippedRow(str(self.paths[i]),
                                          f"cannot decode: {loaded.failures[0].reason}"))
            return None
        return loaded.pixels[0]  # (3, H, W)


class AugmentedPixelSource:
    """Decoded images (shrunk to the model's side) from which every batch is augmented
    afresh; each image's variant depends only on (seed, step, row), so a resumed run and a
    run split over workers see the same pixels as one uninterrupted process."""

    def __init__(self, encoder, rows: Sequence[Pair], policy: AugmentPolicy, seed: int,
                 budget_bytes: int = PIXEL_CACHE_BYTES):
        self.encoder, self.policy, self.seed = encoder, policy, seed
        self.paths = [row.image for row in rows]
        self.regions = [scene_regions(row.attributes) for row in rows]  # what crops must keep
        side = encoder.info.image_size
        # an image shrunk to side x side (or less on one axis), RGB bytes
        self.cached = len(self.paths) * 3 * side * side <= budget_bytes
        self.images: list[Image.Image | None] = [None] * len(self.paths)
        self.failed: list[SkippedRow] = []
        for i in range(len(self.paths)):
            image = self._read(i)
            if self.cached:
                self.images[i] = image

    def usable(self) -> list[int]:
        bad = {s.row for s in self.failed}
        return [i for i, p in enumerate(self.paths) if str(p) not in bad]

    def batch(self, indices: Sequence[int], step: int) -> torch.Tensor:
        tensors = [
            self.encoder.preprocess(
                augment_image(self._image(i), self.policy,
                              np.random.default_rng([self.seed, step, int(i)]), self.regions[i])
            )
            for i in indices
        ]
        return torch.stack(tensors).float()  # (B, 3, H, W)

    def _image(self, i: int) -> Image.Image:
        return self.images[i] if self.cached else self._read(i)

    def _read(self, i: int) -> Image.Image | None:
        from mmindex.data.batches import read_image

        side = self.encoder.info.image_size
        result = read_image(self.paths[i], side)
        if not result.ok:
            self.failed.append(SkippedRow(str(self.paths[i]), f"cannot decode: {result.reason}"))
            return None
        image = result.decoded.image.convert("RGB")
        # Preprocessing resizes to the model's side anyway; augmenting at that size is cheap
        # and keeps the cache small. reducing_gap: a fast, still anti-aliased shrink.
        scale = side / min(image.size)
        if scale < 1:
            size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        return image


def epoch_batches(n_rows: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Shuffled full batches of row indices; the order depends only on (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one."""
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    for start in range(0, n_rows - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def local_slice(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This worker's contiguous share of a global batch, in rank order (as gathered)."""
    share = len(batch) // world_size
    return batch[rank * share : (rank + 1) * share]
