"""Training data for the loop: the image-disjoint validation split, decoded pixels kept in
memory, and the global batches each worker takes its slice of."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

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

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
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
