"""Thumbnails of indexed images, decoded with the ingest decoder and kept in a small cache."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from mmindex.data.images import decode_image

THUMB_SIDE = 256  # px, the longer side; sharp in a 2x-density grid cell of ~128 css px


def thumbnail_jpeg(path: Path, side: int = THUMB_SIDE) -> bytes:
    """JPEG bytes of the upright image shrunk to fit side x side. Raises DecodeError, OSError."""
    st = path.stat()
    # The key holds size and mtime, so a file changed in place is never served stale.
    return _cached_thumbnail(str(path), st.st_size, st.st_mtime_ns, side)


@lru_cache(maxsize=2048)  # ~10 kB each: at most ~20 MB
def _cached_thumbnail(path: str, size: int, mtime_ns: int, side: int) -> bytes:
    image = decode_image(Path(path), min_side=side).image  # draft-decoded JPEGs: fast
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=82)
    return buffer.getvalue()
