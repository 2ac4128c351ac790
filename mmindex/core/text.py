"""Bytes of a text file -> str: byte-order marks honoured, other encodings detected by
charset-normalizer, and binary files refused rather than indexed as mojibake."""

from __future__ import annotations

import codecs
from pathlib import Path

from mmindex.errors import UserInputError

# longest first: UTF-32 LE's mark begins with UTF-16 LE's
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
DETECT_BYTES = 1 << 16  # enough to tell an encoding; detecting over a whole file costs seconds
# Below this, a detector cannot tell one 8-bit code page from another ("caf\xe9" scores the
# same in cp1006 as in cp1252): take the most common one, Windows-1252, a superset of Latin-1.
MIN_DETECT_BYTES = 32
WIDE = ["utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le"]  # need a BOM


class NotTextError(UserInputError):
    """A file that should hold text holds binary data (or no encoding fits it)."""


def decode_text(raw: bytes, path: str | Path = "") -> str:
    """The text of a file's bytes. Raises NotTextError for binary data."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return raw.decode(encoding, errors="replace")
    if b"\x00" in raw[:DETECT_BYTES]:  # no text encoding without a BOM puts NULs in text
        raise NotTextError(f"{path}: binary data, not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if len(raw) < MIN_DETECT_BYTES:
        return raw.decode("cp1252", errors="replace")
    from charset_normalizer import from_bytes

    best = from_bytes(raw[:DETECT_BYTES], cp_exclusion=WIDE).best()
    if best is None:
        raise NotTextError(f"{path}: no text encoding fits its bytes (binary data?)")
    return raw.decode(best.encoding, errors="replace")
