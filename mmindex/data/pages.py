"""How a PDF page is named, everywhere: the item string that carries it through the decode
path (`report.pdf#page=3`, 1-based), its key in the texts table (`p. 3`) and its label for a
person (`report.pdf p. 3`). Plain strings, no imports: search and the CLI use these without
loading an image library; data/pdf.py renders and reads the pages."""

from __future__ import annotations

import re
from pathlib import Path

PDF_EXTENSIONS = frozenset({".pdf"})
PAGE_KEY = "p. {page}"  # a text-layer passage's key in the texts table, as cited
_KEY = re.compile(r"p\.\s*(\d+)")
_ITEM = re.compile(r"^(?P<path>.+\.pdf)#page=(?P<page>[1-9][0-9]*)$", re.IGNORECASE)


def is_pdf(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PDF_EXTENSIONS


def page_item(path: str | Path, page: int) -> str:
    """The string that names one page (1-based) of a PDF for the decode path."""
    return f"{path}#page={int(page)}"


def split_page_item(item: str | Path) -> tuple[str, int] | None:
    """(the PDF's path, its page) for a page item; None for anything else (a photo's path).
    A walked file never looks like an item: its suffix would be `.pdf#page=3`, not `.pdf`."""
    found = _ITEM.match(str(item))
    return (found["path"], int(found["page"])) if found else None


def page_key(page: int) -> str:
    return PAGE_KEY.format(page=page)


def page_of_key(key: str | None) -> int | None:
    """page_key's inverse: the page of a text row written from a PDF page ("p. 3" -> 3),
    else None (a whole-file document's "", a table's "row N")."""
    found = _KEY.fullmatch(key or "")
    return int(found[1]) if found else None


def where_in_file(path: str, page: int | None = None, key: str | None = None) -> str:
    """How a result or a citation names its place: `report.pdf p. 3` for a page (an image
    row's page, or a text-layer passage's key), `notes.csv row 12` for a table row."""
    where = page_key(page) if page else key
    return f"{path} {where}" if where else path
