"""Shared fixtures: the awkward files real photo folders hold, and a tiny model."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY = "test-tiny"


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory):
    """Cached text towers (models/text_tower.py) go to a folder of this run, not the
    user's cache; subprocesses started by tests inherit it."""
    import os

    folder = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("MMINDEX_CACHE")
    os.environ["MMINDEX_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("MMINDEX_CACHE", None)
    else:
        os.environ["MMINDEX_CACHE"] = previous


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like image: smooth gradients plus noise, so JPEG sizes are realistic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def write_bomb_png(path: Path, width: int = 60_000, height: int = 60_000) -> None:
    """A valid PNG header claiming a huge size over a tiny body: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("1", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def make_awkward_folder(root: Path) -> dict[str, list[str]]:
    """Write every kind of file a real folder holds; return which should index and which fail."""
    root.mkdir(parents=True, exist_ok=True)
    good, bad = [], []

    def keep(name):
        good.append(str(root / name))

    _photo(64, 48, 0).save(root / "plain.jpg", quality=90); keep("plain.jpg")
    _photo(64, 48, 1).save(root / "UPPER.JPG", quality=90); keep("UPPER.JPG")
    _photo(50, 40, 2).save(root / "café ünïcode 写真.jpg"); keep("café ünïcode 写真.jpg")
    _photo(40, 40, 3).convert("CMYK").save(root / "cmyk.jpg"); keep("cmyk.jpg")
    sixteen = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "sixteen.png"); keep("sixteen.png")
    frames = [Image.new("P", (30, 30), i * 40) for i in range(3)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:]); keep("anim.gif")
    rotated = _photo(80, 40, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display: the upright image is 40 wide, 80 high
    rotated.save(root / "rotated.jpg", exif=exif); keep("rotated.jpg")
    rgba = Image.new("RGBA", (30, 30), (255, 0, 0, 0))
    rgba.save(root / "clear.png"); keep("clear.png")
    (root / ".hidden").mkdir()
    _photo(20, 20, 5).save(root / ".hidden" / "secret.jpg")  # skipped, not failed
    full = io.BytesIO()
    _photo(64, 64, 6).save(full, "JPEG")
    (root / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    bad.append(str(root / "truncated.jpg"))
    (root / "empty.png").write_bytes(b""); bad.append(str(root / "empty.png"))
    (root / "notes.jpg").write_text("this is text, not a picture"); bad.append(str(root / "notes.jpg"))
    write_bomb_png(root / "bomb.png"); bad.append(str(root / "bomb.png"))
    return {"good": good, "bad": bad}


@pytest.fixture
def awkward_folder(tmp_path) -> tuple[Path, dict]:
    folder = tmp_path / "photos"
    return folder, make_awkward_folder(folder)


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Six distinct photos in two sub-folders."""
    folder = tmp_path / "album"
    for i in range(6):
        sub = folder / ("2024" if i % 2 else "2023")
        sub.mkdir(parents=True, exist_ok=True)
        _photo(60 + 20 * i, 50, 100 + i).save(sub / f"photo{i}.jpg", quality=90)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder():
    from mmindex.models.registry import load_encoder

    return load_encoder(TINY)
