"""The committed sample data is what the docs say it is: licensed, decodable, as described."""

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
PHOTOS = SAMPLE / "photos"


def photo_files() -> list[Path]:
    return sorted(p for p in PHOTOS.iterdir() if p.suffix in {".jpg", ".png"})


def test_every_photo_has_a_licence_entry():
    licences = (PHOTOS / "LICENSES.md").read_text()
    assert len(photo_files()) >= 12
    for photo in photo_files():
        assert f"`{photo.name}`" in licences, photo.name


def test_the_exif_rotated_photo_decodes_upright_to_the_original():
    rotated = Image.open(PHOTOS / "rocket_exif_rotated.jpg")
    assert rotated.getexif().get(0x0112) == 6
    upright = np.asarray(ImageOps.exif_transpose(rotated).convert("RGB"), dtype=float)
    original = np.asarray(Image.open(PHOTOS / "rocket.jpg").convert("RGB"), dtype=float)
    assert upright.shape == original.shape
    assert np.abs(upright - original).mean() < 3  # only JPEG re-encoding differences


def test_the_transparent_png_hides_black_under_clear_pixels():
    rgba = np.asarray(Image.open(PHOTOS / "horse_transparent.png"))
    assert rgba.shape[2] == 4
    clear = rgba[..., 3] == 0
    assert 0.3 < clear.mean() < 0.9
    assert (rgba[clear][:, :3] == 0).all()


def test_text_corpus_has_documents_and_valid_photo_links():
    texts = SAMPLE / "texts"
    docs = [json.loads(line) for line in (texts / "documents.jsonl").read_text().splitlines()]
    assert len(docs) + len(list(texts.glob("*.txt"))) >= 30
    assert all(d["text"].strip() for d in docs)
    assert {d["photo"] for d in docs if d["photo"]} <= {p.name for p in photo_files()}
    assert any(d["photo"] is None for d in docs)  # some documents match no photo
