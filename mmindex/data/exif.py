"""When and where a photo was taken, from its EXIF, through Pillow's own reader.

Every field is optional: a photo without EXIF, or with a field that is missing, malformed or
impossible (a date of 0000:00:00, a latitude of 200°, a zero denominator), gives None for that
field and never an error, so one odd camera cannot fail an ingest."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import datetime

from PIL import ExifTags, Image

# EXIF writes "YYYY:MM:DD HH:MM:SS"; some tools write dashes, or stop after the date
_DATE_FORMATS = ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d", "%Y-%m-%d")


@dataclass(frozen=True)
class PhotoMetadata:
    taken: datetime | None = None  # the camera's clock (EXIF has no time zone): naive
    camera: str | None = None  # "Make Model", the make once: "Google Pixel 7", "Canon EOS R5"
    lens: str | None = None
    latitude: float | None = None  # degrees, north positive
    longitude: float | None = None  # degrees, east positive


NO_METADATA = PhotoMetadata()


def photo_metadata(img: Image.Image) -> PhotoMetadata:
    """The photo's capture time, camera, lens and GPS position, each None when unknown."""
    try:
        with warnings.catch_warnings():  # "Corrupt EXIF data": the answer below says it
            warnings.simplefilter("ignore", UserWarning)
            exif = img.getexif()
            details = _ifd(exif, ExifTags.IFD.Exif)
            gps = _ifd(exif, ExifTags.IFD.GPSInfo)
    except Exception:  # noqa: BLE001 - Pillow raises many kinds on damaged EXIF; none matter
        return NO_METADATA
    return PhotoMetadata(
        taken=_first_date(details.get(ExifTags.Base.DateTimeOriginal),
                          details.get(ExifTags.Base.DateTimeDigitized),
                          exif.get(ExifTags.Base.DateTime)),
        camera=_camera(_text(exif.get(ExifTags.Base.Make)), _text(exif.get(ExifTags.Base.Model))),
        lens=_text(details.get(ExifTags.Base.LensModel)),
        latitude=_coordinate(gps.get(ExifTags.GPS.GPSLatitude),
                             gps.get(ExifTags.GPS.GPSLatitudeRef), "S", 90.0),
        longitude=_coordinate(gps.get(ExifTags.GPS.GPSLongitude),
                              gps.get(ExifTags.GPS.GPSLongitudeRef), "W", 180.0),
    )


def _ifd(exif: Image.Exif, which: int) -> dict:
    try:
        found = exif.get_ifd(which)
    except Exception:  # noqa: BLE001 - a broken pointer to a sub-IFD: that IFD is unknown
        return {}
    return found if isinstance(found, dict) else {}


def _text(value) -> str | None:
    """EXIF ASCII fields arrive as str (sometimes padded with NULs) or bytes."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = value.replace("\x00", " ").strip()
    return cleaned or None


def _camera(make: str | None, model: str | None) -> str | None:
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model  # "Canon" + "Canon EOS R5": the model says it already
    return " ".join(part for part in (make, model) if part) or None


def _first_date(*candidates) -> datetime | None:
    for value in candidates:
        parsed = _date(_text(value))
        if parsed is not None:
            return parsed
    return None


def _date(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
    return None


def _coordinate(value, ref, negative_ref: str, limit: float) -> float | None:
    """Degrees, minutes, seconds (three rationals) and a hemisphere letter -> signed degrees."""
    try:
        degrees, minutes, seconds = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    result = degrees + minutes / 60.0 + seconds / 3600.0
    if not math.isfinite(result) or not 0.0 <= result <= limit:
        return None
    return -result if _text(ref) and _text(ref).upper().startswith(negative_ref) else result
