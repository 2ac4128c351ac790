"""PDF pages as images and passages, with pypdfium2 (PDFium, the engine of Chrome's viewer).

A page travels through the decode path as a plain string, a *page item*: `report.pdf#page=3`
(1-based; data/pages.py names pages), so every batch of paths (the local loop, Ray workers,
vision tokens, `ask`) can carry pages unchanged. Nothing else of a document is kept: each
page is opened, rendered or read, and closed on its own, so a 2000-page PDF costs the
memory of one page.

PDFium is not thread-safe, not even across different documents: every call into it holds
one process-wide lock (Pillow's decoding of photos still runs beside it in other threads).
Every PDFium object is closed explicitly inside that lock, never left to the garbage
collector, whose finalizers could run in another thread at any time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmindex.data.images import DecodedImage, DecodeError
from mmindex.data.scan import MAX_DOCUMENT_CHARS

DEFAULT_MAX_PAGES = 2000  # a book; more is usually a scan archive that wants splitting
_POINTS_PER_INCH = 72.0
_PDFIUM_LOCK = threading.RLock()


def page_count(path: str | Path, max_pages: int = DEFAULT_MAX_PAGES) -> int:
    """How many pages the PDF has, once it is known to open and to be within `max_pages`.
    Raises DecodeError with what to do (encrypted, damaged, empty, too many pages)."""
    with _document(path) as document:
        pages = len(document)
    if pages == 0:
        raise DecodeError("a PDF with no pages")
    if pages > max_pages:
        raise DecodeError(f"{pages} pages exceeds the limit of {max_pages} pages a PDF; split "
                          "it, or raise the limit with --max-pdf-pages if it is one document")
    return pages


def render_page(path: str | Path, page: int, min_side: int, max_pixels: int,
                dpi: float | None = None) -> DecodedImage:
    """One page as an RGB image: at `dpi` when given, else at the scale whose short side is
    twice `min_side` (the model's input: text stays legible after its resize), and never
    more than `max_pixels` (a poster-sized page is scaled down, not refused)."""
    with _document(path) as document, _page(document, page) as opened:
        width_pt, height_pt = opened.get_size()
        if min(width_pt, height_pt) <= 0:
            raise DecodeError(f"page {page} has no area ({width_pt:g} x {height_pt:g} pt)")
        scale = dpi / _POINTS_PER_INCH if dpi else 2 * min_side / min(width_pt, height_pt)
        scale = min(scale, (max_pixels / (width_pt * height_pt)) ** 0.5)
        bitmap = opened.render(scale=scale)
        try:
            image = bitmap.to_pil().convert("RGB")  # a copy: the bitmap's memory is PDFium's
        finally:
            bitmap.close()
    return DecodedImage(image, image.width, image.height, "PDF")


def page_texts(path: str | Path) -> Iterator[tuple[int, str]]:
    """(page, its text layer) for each page with text, one page open at a time. A scanned
    page without a text layer yields nothing (its image is still indexed). Raises
    DecodeError when the PDF does not open."""
    for page in range(1, page_count(path, max_pages=1 << 31) + 1):
        try:
            with _document(path) as document, _page(document, page) as opened:
                text_page = opened.get_textpage()
                try:
                    text = text_page.get_text_bounded()
                finally:
                    text_page.close()
        except DecodeError:
            continue  # a damaged page: rendering it reports why, in errors
        text = " ".join(text.split())[:MAX_DOCUMENT_CHARS]  # layout lines -> one passage
        if text:
            yield page, text


@contextmanager
def _document(path: str | Path):
    """The open document, holding the PDFium lock until it is closed."""
    import pypdfium2 as pdfium

    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            raise DecodeError(_open_reason(exc)) from None
        except FileNotFoundError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        try:
            yield document
        finally:
            document.close()


@contextmanager
def _page(document, page: int):
    import pypdfium2 as pdfium

    if not 1 <= page <= len(document):
        raise DecodeError(f"no page {page}: the PDF has {len(document)} pages")
    try:
        opened = document[page - 1]
    except pdfium.PdfiumError as exc:
        raise DecodeError(f"page {page} is damaged ({exc}); repair the PDF (e.g. `qpdf "
                          "in.pdf out.pdf`) or print it to a new PDF") from None
    try:
        yield opened
    finally:
        opened.close()


def _open_reason(exc) -> str:
    from pypdfium2 import raw

    code = getattr(exc, "err_code", None)
    if code == raw.FPDF_ERR_PASSWORD:
        return ("encrypted PDF: it needs a password to open; save a copy without one (open "
                "it and print or export to PDF) and index that")
    if code == raw.FPDF_ERR_SECURITY:
        return ("PDF protected by a security handler PDFium does not support; save an "
                "unprotected copy from the program that made it and index that")
    if code == raw.FPDF_ERR_FORMAT:
        return ("damaged or not a PDF (truncated, or another kind of file named .pdf); "
                "download or export it again, or repair it (e.g. `qpdf in.pdf out.pdf`)")
    return f"PDFium cannot open this PDF ({exc}); re-export it from the program that made it"
