"""Helpers the benchmark scripts share: photo-like inputs, timing, peak memory, reporting."""

from __future__ import annotations

import json
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

# name -> (width, height): a phone photo, a downscaled export, a web image
PHOTO_SIZES = {"12mp": (4000, 3000), "2mp": (1600, 1200), "web": (640, 480)}


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Smooth shapes plus sensor-like noise: JPEG sizes and decode costs like real photos
    (pure noise is far slower to decode than any photo; flat colour far faster)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.int16)
    noise = rng.normal(0, 10, (height, width, 1)).astype(np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_photo_set(folder: Path, counts: dict[str, int], seed: int = 0) -> list[Path]:
    """JPEGs (q90) of the given sizes, written once and reused by later runs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, count in counts.items():
        width, height = PHOTO_SIZES[name]
        for i in range(count):
            path = folder / f"{name}_{i:04d}.jpg"
            if not path.exists():
                photo_like(width, height, seed + hash(name) % 1000 + i).save(path, quality=90)
            paths.append(path)
    return paths


@contextmanager
def timed(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = results.get(key, 0.0) + time.perf_counter() - start


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def report(title: str, rows: list[tuple], summary: dict) -> None:
    """A small table for people, then one JSON line for machines."""
    print(f"\n{title}")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)))
    print(json.dumps({"benchmark": title, **summary}))
