"""The batch encoders that both executors run: the in-process loop calls them directly and
Ray Data hands them to an actor pool. They receive a model *spec* and build the model inside
the worker, so no heavy object is pickled across processes."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mmindex.data.images import DecodeError, decode_image

Batch = dict[str, np.ndarray]  # Ray Data's numpy batch format: column name -> array


class ImageBatchEncoder:
    """{"path"} -> {"path", "ok", "reason", "width", "height", "format", "embedding"}."""

    def __init__(self, spec: str, max_pixels: int, threads: int | None = None, encoder=None,
                 precision: str = "auto", decode_threads: int = 2, device: str = "cpu"):
        self.encoder = encoder or _build(spec, threads, precision, device)
        self.max_pixels = max_pixels
        self.decoders = ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="decode")

    def __call__(self, batch: Batch) -> Batch:
        return self.encode(self.prepare(batch))

    def prepare(self, batch: Batch) -> dict:
        """Decode and preprocess; no model maths, so it can run in a thread beside encode()."""
        import torch

        rows = {"path": [], "ok": [], "reason": [], "width": [], "height": [], "format": []}
        tensors = []
        paths = [str(p) for p in batch["path"]]
        for path, (decoded, reason) in zip(paths, self.decoders.map(self._decode, paths)):
            rows["path"].append(path)
            rows["ok"].append(decoded is not None)
            rows["reason"].append(reason)
            rows["width"].append(decoded.width if decoded else 0)
            rows["height"].append(decoded.height if decoded else 0)
            rows["format"].append(decoded.format if decoded else "")
            if decoded is not None:
                tensors.append(self.encoder.preprocess(decoded.image))
        rows["pixels"] = torch.stack(tensors) if tensors else None  # (N_ok, 3, H, W)
        return rows

    def _decode(self, path: str):
        """Decode one file; (None, reason) when it cannot be used."""
        try:
            decoded = decode_image(Path(path), self.encoder.info.image_size, self.max_pixels)
            return decoded, ""
        except DecodeError as exc:
            return None, str(exc)
        except OSError as exc:  # unreadable or vanished since the scan
            return None, f"cannot read file: {exc.strerror or exc}"

    def encode(self, prepared: dict) -> Batch:
        pixels = prepared.pop("pixels")
        ok = np.array(prepared["ok"], dtype=bool)
        embeddings = np.zeros((len(ok), self.encoder.info.dim), dtype=np.float32)  # (N, D)
        if pixels is not None:
            embeddings[ok] = self.encoder.encode_images(pixels)
        out = {name: np.array(values) for name, values in prepared.items()}
        out["ok"], out["embedding"] = ok, embeddings
        return out


class TextBatchEncoder:
    """{"text"} -> {"text", "embedding"}."""

    def __init__(self, spec: str, threads: int | None = None, encoder=None,
                 precision: str = "auto", device: str = "cpu"):
        self.encoder = encoder or _build(spec, threads, precision, device)

    def __call__(self, batch: Batch) -> Batch:
        texts = [str(t) for t in batch["text"]]
        return {**batch, "embedding": self.encoder.encode_texts(texts)}  # (N, D)


def _build(spec: str, threads: int | None, precision: str, device: str):
    """The model inside a worker. Ray sets a worker's OMP threads to the CPUs it holds (1), so
    torch is told how many to use: `threads`, or every core of the node it landed on."""
    import torch

    from mmindex.models.registry import load_encoder

    torch.set_num_threads(threads or os.cpu_count() or 1)
    return load_encoder(spec, precision, device)
