"""The encoder contract every model in mmindex fulfils (CLIP, the starter model, test models).

Ingest, search, evaluation and fine-tuning only ever talk to this interface, so a new
backbone is one new class plus one registry entry, never a branch in the callers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class EncoderInfo:
    spec: str  # canonical model spec string; the manifest records it and compares it
    dim: int  # embedding dimension D
    image_size: int  # square input side in pixels; the decoder drafts JPEGs just above it
    fingerprint: str  # short hash of the weights, so two checkpoints with one name differ


class Encoder(Protocol):
    info: EncoderInfo

    def preprocess(self, image) -> torch.Tensor:  # noqa: F821  PIL RGB image -> (3, H, W)
        ...

    def encode_images(self, pixels) -> np.ndarray:  # (N, 3, H, W) -> (N, D) float32, L2-normalised
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:  # N strings -> (N, D), normalised
        ...


SAMPLES_PER_TENSOR = 4096


def fingerprint_state_dict(state_dict) -> str:
    """A stable 16-hex digest of a module's weights: names, shapes, dtypes and up to 4096
    evenly strided values of each tensor. Hashing every byte of ViT-B/32 took ~1 s of each
    model load; any training run, fine-tune or WiSE-FT mix changes the sampled values too."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().reshape(-1)
        stride = max(1, tensor.numel() // SAMPLES_PER_TENSOR)
        sample = tensor[::stride].to(torch.float32).contiguous()  # dtype-independent values
        digest.update(f"{name}{tuple(state_dict[name].shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
