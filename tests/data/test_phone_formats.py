"""What phones and cameras write: HEIC (pillow-heif) and AVIF decode like JPEG, EXIF
included; camera RAW is reported with what to do, not decoded and not skipped unseen."""

from datetime import datetime

import pytest
from PIL import Image, features

from mmindex import IngestConfig, ingest, open_index
from mmindex.data.images import DecodeError, decode_image
from mmindex.testing import TINY, photo, photo_exif

pillow_heif = pytest.importorskip("pillow_heif", reason="pip install pillow-heif")
needs_avif = pytest.mark.skipif(not features.check("avif"), reason="Pillow without AVIF")


def save_heic(path, seed=1, **kwargs):
    pillow_heif.register_heif_opener()  # to write; decode_image registers it to read
    photo(64, 48, seed).save(path, format="HEIF", **kwargs)


def test_a_heic_decodes_with_its_exif(tmp_path):
    path = tmp_path / "IMG_0001.HEIC"
    save_heic(path, exif=photo_exif("2024:06:15 10:30:05", "Apple", "iPhone 15 Pro"))
    decoded = decode_image(path, 16)
    assert (decoded.width, decoded.height, decoded.format) == (64, 48, "HEIF")
    assert decoded.image.mode == "RGB"
    assert decoded.metadata.taken == datetime(2024, 6, 15, 10, 30, 5)
    assert decoded.metadata.camera == "Apple iPhone 15 Pro"


@needs_avif
def test_an_avif_decodes(tmp_path):
    path = tmp_path / "photo.avif"
    photo(64, 48, 2).save(path, exif=photo_exif(make="Google", model="Pixel 8"))
    decoded = decode_image(path, 16)
    assert (decoded.width, decoded.format, decoded.metadata.camera) == (64, "AVIF",
                                                                        "Google Pixel 8")


@pytest.mark.parametrize("name", ["DSC_0001.NEF", "IMG_0001.CR2", "a.arw", "b.dng", "c.raf",
                                  "d.orf", "e.rw2"])
def test_raw_is_refused_with_what_to_do(tmp_path, name):
    path = tmp_path / name
    photo(32, 32, 3).save(path, format="TIFF")  # a DNG is a TIFF: readable, still refused
    with pytest.raises(DecodeError, match=r"RAW .* is not decoded; export a JPEG"):
        decode_image(path, 16)


def test_heic_without_pillow_heif_says_what_to_install(tmp_path, monkeypatch):
    from mmindex.data import images

    path = tmp_path / "x.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)  # not registered: unknown
    monkeypatch.setattr(images, "_heif_registered", False)
    monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if k != "HEIF"})
    monkeypatch.setattr(Image, "ID", [i for i in Image.ID if i != "HEIF"])
    with pytest.raises(DecodeError, match="pip install pillow-heif"):
        decode_image(path, 16)


def test_ingest_indexes_heic_and_avif_and_lists_raw_as_failed(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    photo(64, 48, 4).save(folder / "a.jpg")
    save_heic(folder / "b.heic", seed=5)
    if features.check("avif"):
        photo(64, 48, 6).save(folder / "c.avif")
    (folder / "d.cr2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + b"\x00" * 100)
    summary = ingest(IngestConfig(roots=(folder,), index_dir=tmp_path / "idx", model=TINY,
                                  precision="fp32"))
    index = open_index(tmp_path / "idx")
    formats = {p.rsplit("/", 1)[-1]: f for p, f in zip(
        index.rows("images").column("path").to_pylist(),
        index.rows("images").column("format").to_pylist())}
    expected = {"a.jpg": "JPEG", "b.heic": "HEIF"} | (
        {"c.avif": "AVIF"} if features.check("avif") else {})
    assert formats == expected
    [failed] = summary.errors
    assert failed.path.endswith("d.cr2") and "RAW (.cr2) is not decoded" in failed.reason
    assert index.rows("errors").column("path").to_pylist() == [failed.path]
