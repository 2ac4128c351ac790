"""Files of indexed images, served only while they are still the file that was indexed, and
their thumbnails (decoded with the ingest decoder, kept in a small cache).

A row records the file's size, mtime and SHA-256. The bytes served are read once, checked
against all three, and are then exactly what goes out: a path re-pointed after the check
cannot slip other bytes in, and a symlink re-pointed to /etc/passwd (whatever its mtime)
can never be served, since its content is not the indexed file's."""

from __future__ import annotations

import io
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from mmindex.data.batches import decode_item
from mmindex.data.pages import page_item
from mmindex.index.files import read_indexed_file

THUMB_SIDE = 256  # px, the longer side; sharp in a 2x-density grid cell of ~128 css px
THUMB_CACHE = 2048  # ~10 kB each: at most ~20 MB




_thumbs: OrderedDict[tuple[str, int | None, int], bytes] = OrderedDict()
_thumbs_lock = threading.Lock()


def thumbnail_jpeg(row: dict, side: int = THUMB_SIDE) -> bytes:
    """JPEG bytes of the upright image (or the row's PDF page) shrunk to fit side x side, made
    from the checked bytes. Raises FileChanged, DecodeError, OSError. Cached by content hash
    and page: a file changed in place fails the check before the cache is asked."""
    data = read_indexed_file(row)
    page = row.get("page")
    key = (row["sha256"], page, side)
    with _thumbs_lock:
        if key in _thumbs:
            _thumbs.move_to_end(key)
            return _thumbs[key]
    jpeg = _make_thumbnail(data, Path(row["path"]).suffix, side, page)
    with _thumbs_lock:
        _thumbs[key] = jpeg
        while len(_thumbs) > THUMB_CACHE:
            _thumbs.popitem(last=False)
    return jpeg


def _make_thumbnail(data: bytes, suffix: str, side: int, page: int | None = None) -> bytes:
    # decode_item reads a path; a private copy of the checked bytes is one nobody can swap.
    with tempfile.NamedTemporaryFile(suffix=suffix, prefix="mmindex-thumb-") as copy:
        copy.write(data)
        copy.flush()
        item = page_item(copy.name, page) if page else copy.name
        image = decode_item(item, min_side=side).image  # draft-decoded JPEGs; pages rendered
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=82)
    return buffer.getvalue()
