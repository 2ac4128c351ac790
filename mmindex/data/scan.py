"""Walking folders into file records, and text corpora into documents. No torch, no Ray."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mmindex.core.tables import TableFileError, read_table
from mmindex.core.text import NotTextError, decode_text

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})  # phones' photos, via pillow-heif
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
                              ".avif"}) | HEIF_EXTENSIONS
# Camera RAW: walked so that each is reported in the errors table with what to do, never
# decoded (a RAW needs demosaicing and a look chosen by the photographer) nor skipped unseen.
RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2"})
DOCUMENT_EXTENSIONS = frozenset({".txt", ".md"})  # one document per file
TABLE_EXTENSIONS = frozenset({".jsonl", ".csv", ".parquet"})  # one document per row
TEXT_EXTENSIONS = DOCUMENT_EXTENSIONS | TABLE_EXTENSIONS
MAX_DOCUMENT_CHARS = 20_000  # the encoders read ~77 tokens; more is memory without meaning


@dataclass(frozen=True)
class FileStat:
    path: str  # absolute, as stored in the tables
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class TextDocument:
    key: str  # where in the file: "" for a whole file, "row 12" for a table row
    text: str


class CorpusError(Exception):
    """A whole text file is unusable (no `text` column, unreadable); it goes to errors."""


def walk_files(roots: Iterable[Path], extensions: frozenset[str]) -> Iterator[FileStat]:
    """Files under the roots whose extension (any case) is wanted. Hidden files and folders
    are skipped; symlinked folders are followed once, so a loop cannot trap the walk."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for root in roots:
        root = Path(root).expanduser().absolute()
        if root.is_file():
            candidates = [str(root)] if root.suffix.lower() in extensions else []
        else:
            candidates = _walk_dir(root, extensions, seen_dirs)
        for path in candidates:
            if path not in seen_files:
                seen_files.add(path)
                stat = _stat(path)
                if stat is not None:
                    yield stat


def _walk_dir(root: Path, extensions: frozenset[str], seen_dirs: set) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        identity = _dir_identity(dirpath)
        if identity in seen_dirs:
            dirnames[:] = []  # a symlink brought us back somewhere we have been
            continue
        seen_dirs.add(identity)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                yield os.path.join(dirpath, name)


def _dir_identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _stat(path: str) -> FileStat | None:
    try:
        st = os.stat(path)
    except OSError:  # vanished or a dangling symlink: nothing to index
        return None
    return FileStat(path, st.st_size, st.st_mtime_ns)


def split_texts_beside_images(texts: list[FileStat], images: list[FileStat],
                              named: set[str]) -> tuple[list[FileStat], list[FileStat]]:
    """(texts to index, texts skipped): a text file in a folder that itself holds images is
    about those images (a LICENSES.md, a README, a caption list), not a corpus, and would top
    text searches; it is indexed only when named as a path to ingest. Texts in folders of
    their own (notes/, a corpus) are indexed as before."""
    photo_dirs = {os.path.dirname(f.path) for f in images}
    kept, skipped = [], []
    for f in texts:
        beside = os.path.dirname(f.path) in photo_dirs and f.path not in named
        (skipped if beside else kept).append(f)
    return kept, skipped


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def read_text_documents(path: str) -> list[TextDocument]:
    """The documents of one corpus file. Rows without a usable `text` are skipped.
    Raises CorpusError when the whole file is unusable."""
    try:
        if Path(path).suffix.lower() in DOCUMENT_EXTENSIONS:
            text = decode_text(Path(path).read_bytes(), path).strip()
            return [TextDocument("", text[:MAX_DOCUMENT_CHARS])] if text else []
        table = read_table(path)
    except (NotTextError, TableFileError) as exc:
        raise CorpusError(_without_path(str(exc), path)) from None
    if "text" not in table.columns and Path(path).suffix.lower() != ".jsonl":  # JSONL: per row
        raise CorpusError(f"no 'text' column (columns: {', '.join(table.columns) or 'none'})")
    return [TextDocument(f"row {i}", _storable(row["text"].strip()[:MAX_DOCUMENT_CHARS]))
            for i, row in table.rows
            if isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip()]


def _without_path(message: str, path: str) -> str:
    """The errors table pairs each reason with its path already."""
    return message.removeprefix(f"{path}: ")


def _storable(text: str) -> str:
    """JSON's \\ud800 escapes decode to lone surrogates, which Arrow cannot store: each becomes
    U+FFFD, pairs become their character (found by tests/data/test_fuzz.py; see its seeds)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
