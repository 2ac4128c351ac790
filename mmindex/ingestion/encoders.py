"""The batch encoders that both executors run: the in-process loop calls them directly and
Ray Data hands them to an actor pool. They receive a model *spec* and build the model inside
the worker, so no heavy object is pickled across processes."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mmindex.core import faults
from mmindex.data.batches import load_pixels
from mmindex.data.exif import NO_METADATA, PhotoMetadata

PHOTO_COLUMNS = ("taken", "camera", "lens", "latitude", "longitude")

Batch = dict[str, np.ndarray]  # Ray Data's numpy batch format: column name -> array


class ImageBatchEncoder:
    """{"path": a file or a PDF page item (data/pdf.py)} -> {"path", "ok", "reason",
    "width", "height", "format", the photo's metadata (PHOTO_COLUMNS) and "embedding"}."""

    def __init__(self, spec: str, max_pixels: int, threads: int | None = None, encoder=None,
                 precision: str = "auto", decode_threads: int = 2, device: str = "cpu",
                 pdf_dpi: float | None = None):
        self.encoder = encoder or _build(spec, threads, precision, device)
        self.max_pixels, self.pdf_dpi = max_pixels, pdf_dpi
        self.decoders = ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="decode")

    def __call__(self, batch: Batch) -> Batch:
        return self.encode(self.prepare(batch))

    def prepare(self, batch: Batch) -> dict:
        """Decode and preprocess; no model maths, so it can run in a thread beside encode()."""
        return decode_images(batch["path"], self.encoder.preprocess, self.encoder.info.image_size,
                             self.max_pixels, self.decoders, self.pdf_dpi)

    def encode(self, prepared: dict) -> Batch:
        pixels = prepared.pop("pixels")
        faults.point("encode.batch")  # a test may slow or kill a worker here (core/faults.py)
        ok = np.array(prepared["ok"], dtype=bool)
        embeddings = np.zeros((len(ok), self.encoder.info.dim), dtype=np.float32)  # (N, D)
        if pixels is not None:
            embeddings[ok] = self.encoder.encode_images(pixels)
        out = {name: np.array(values) for name, values in prepared.items()}
        out["ok"], out["embedding"] = ok, embeddings
        return out


def decode_images(paths, preprocess, image_size: int, max_pixels: int, pool=None,
                  pdf_dpi: float | None = None) -> dict:
    """The first half of ImageBatchEncoder: {"path", "ok", "reason", "width", "height",
    "format", PHOTO_COLUMNS, "pixels"}, where pixels are (N_ok, 3, H, W) or None. It needs
    only the model's preprocessing, so Ray runs it as a CPU task apart from the encoder.
    A path may be a PDF page item, rendered at `pdf_dpi` (data/pdf.py)."""
    loaded = load_pixels([str(p) for p in paths], preprocess, image_size, max_pixels, pool,
                         pdf_dpi)
    results = loaded.results
    return {"path": [r.path for r in results], "ok": [r.ok for r in results],
            "reason": [r.reason for r in results],
            "width": [r.decoded.width if r.ok else 0 for r in results],
            "height": [r.decoded.height if r.ok else 0 for r in results],
            "format": [r.decoded.format if r.ok else "" for r in results],
            **photo_columns([r.decoded.metadata if r.ok else NO_METADATA for r in results]),
            "pixels": loaded.pixels}  # (N_ok, 3, H, W) or None


class TextBatchEncoder:
    """{"text"} -> {"text", "embedding"}."""

    def __init__(self, spec: str, threads: int | None = None, encoder=None,
                 precision: str = "auto", device: str = "cpu"):
        self.encoder = encoder or _build(spec, threads, precision, device)

    def __call__(self, batch: Batch) -> Batch:
        texts = [str(t) for t in batch["text"]]
        return {**batch, "embedding": self.encoder.encode_texts(texts)}  # (N, D)


def photo_columns(found: list[PhotoMetadata]) -> dict[str, list]:
    """Metadata as plain strings and floats ("" and NaN for unknown), which every executor's
    batches carry as they are; photo_row turns them back into values and nulls."""
    return {"taken": [m.taken.isoformat() if m.taken else "" for m in found],
            "camera": [m.camera or "" for m in found], "lens": [m.lens or "" for m in found],
            "latitude": [m.latitude if m.latitude is not None else np.nan for m in found],
            "longitude": [m.longitude if m.longitude is not None else np.nan for m in found]}


def image_columns(result: dict) -> dict:
    """An image row's columns beyond the file's, from one encoder result (a batch's values at
    one index): what the local loop and the Ray shard writers both put in a row."""
    return {"width": int(result["width"]), "height": int(result["height"]),
            "format": str(result["format"])} | photo_row(result)


def photo_row(values: dict) -> dict:
    """One image's metadata for its row, from an encoder batch or a stored row: None for
    unknown, whichever way it was written."""
    from datetime import datetime

    def known(value):
        if value is None or (isinstance(value, str) and not value):
            return None
        if isinstance(value, float | np.floating) and np.isnan(value):
            return None
        return value.item() if isinstance(value, np.generic) else value

    row = {name: known(values.get(name)) for name in PHOTO_COLUMNS}
    if isinstance(row["taken"], str):
        row["taken"] = datetime.fromisoformat(row["taken"])
    return row


def _build(spec: str, threads: int | None, precision: str, device: str):
    """The model inside a worker. Ray sets a worker's OMP threads to the CPUs it holds (1), so
    the runtime is told how many to use: `threads`, or every core of the node it landed on."""
    from mmindex.models.registry import load_for_inference

    os.environ["MMINDEX_THREADS"] = str(threads or os.cpu_count() or 1)  # ONNX Runtime's
    encoder = load_for_inference(spec, precision, device)
    if hasattr(encoder, "model"):  # a torch model
        import torch

        torch.set_num_threads(int(os.environ["MMINDEX_THREADS"]))
    return encoder
