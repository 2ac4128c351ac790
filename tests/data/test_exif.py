"""EXIF capture time, camera, lens and GPS, written by Pillow and read back; every odd or
missing field is None, never an error."""

from datetime import datetime

import pytest
from PIL import ExifTags, Image

from mmindex.data.exif import NO_METADATA, photo_metadata
from mmindex.data.images import decode_image
from mmindex.testing import photo, photo_exif


def saved(tmp_path, exif, name="p.jpg", **kwargs):
    path = tmp_path / name
    photo(48, 32, 1).save(path, exif=exif, **kwargs)
    return path


def test_a_camera_photo_gives_every_field(tmp_path):
    exif = photo_exif("2024:06:15 10:30:05", "Google", "Pixel 7", "Pixel 7 back camera f/1.85",
                      gps=(-33.8651, 151.2099))
    found = decode_image(saved(tmp_path, exif), 16).metadata
    assert found.taken == datetime(2024, 6, 15, 10, 30, 5)
    assert found.camera == "Google Pixel 7"
    assert found.lens == "Pixel 7 back camera f/1.85"
    assert found.latitude == pytest.approx(-33.8651, abs=1e-6)
    assert found.longitude == pytest.approx(151.2099, abs=1e-6)


def test_a_model_that_names_its_make_is_not_doubled(tmp_path):
    found = decode_image(saved(tmp_path, photo_exif(make="Canon", model="Canon EOS R5")), 16)
    assert found.metadata.camera == "Canon EOS R5"


@pytest.mark.parametrize("fmt,name", [("PNG", "p.png"), ("WEBP", "p.webp")])
def test_other_formats_carry_exif_too(tmp_path, fmt, name):
    path = saved(tmp_path, photo_exif("2023:01:02 03:04:05", "Sony", "ILCE-7M4"), name,
                 format=fmt)
    found = decode_image(path, 16).metadata
    assert (found.taken, found.camera) == (datetime(2023, 1, 2, 3, 4, 5), "Sony ILCE-7M4")


def test_no_exif_is_all_none(tmp_path):
    path = tmp_path / "plain.jpg"
    photo(48, 32, 2).save(path)
    assert decode_image(path, 16).metadata == NO_METADATA


@pytest.mark.parametrize("taken", ["0000:00:00 00:00:00", "    :  :     :  :  ", "yesterday",
                                   "2024:13:45 99:99:99", ""])
def test_impossible_dates_are_none(tmp_path, taken):
    found = decode_image(saved(tmp_path, photo_exif(taken, "Nikon", "Z6")), 16).metadata
    assert found.taken is None and found.camera == "Nikon Z6"  # the rest is still read


def test_impossible_or_broken_gps_is_none(tmp_path):
    exif = photo_exif("2024:06:15 10:30:05", gps=(10.0, 20.0))
    where = exif.get_ifd(ExifTags.IFD.GPSInfo)
    where[ExifTags.GPS.GPSLatitude] = (200.0, 0.0, 0.0)  # beyond the pole
    where[ExifTags.GPS.GPSLongitude] = (20.0, 1.0)  # two parts, not three
    found = decode_image(saved(tmp_path, exif), 16).metadata
    assert (found.latitude, found.longitude) == (None, None)
    assert found.taken == datetime(2024, 6, 15, 10, 30, 5)


def test_a_date_only_in_ifd0_is_used(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.DateTime] = "2020:02:29 12:00:00"
    assert decode_image(saved(tmp_path, exif), 16).metadata.taken == datetime(2020, 2, 29, 12)


def test_garbage_exif_bytes_are_no_metadata_not_an_error(tmp_path):
    path = tmp_path / "garbage.jpg"
    photo(48, 32, 3).save(path, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01")
    decoded = decode_image(path, 16)  # the pixels are fine; the EXIF is not
    assert decoded.width == 48
    assert photo_metadata(Image.open(path)) == NO_METADATA
