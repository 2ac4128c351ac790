"""Walking folders into file records, and text corpora into documents. No torch, no Ray."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
DOCUMENT_EXTENSIONS = frozenset({".txt", ".md"})  # one document per file
TABLE_EXTENSIONS = frozenset({".jsonl", ".csv", ".parquet"})  # one document per row
TEXT_EXTENSIONS = DOCUMENT_EXTENSIONS | TABLE_EXTENSIONS
MAX_DOCUMENT_CHARS = 20_000  # the encoders read ~77 tokens; more is memory without meaning
CSV_FIELD_LIMIT = 1 << 24  # a 16 MB cell; bigger is a malformed file, reported as such


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


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def read_text_documents(path: str) -> list[TextDocument]:
    """The documents of one corpus file. Rows without a usable `text` are skipped."""
    suffix = Path(path).suffix.lower()
    if suffix in DOCUMENT_EXTENSIONS:
        text = _read_text(path).strip()
        return [TextDocument("", text[:MAX_DOCUMENT_CHARS])] if text else []
    rows = {".jsonl": _jsonl_texts, ".csv": _csv_texts, ".parquet": _parquet_texts}[suffix](path)
    return [TextDocument(f"row {i}", _storable(t.strip()[:MAX_DOCUMENT_CHARS]))
            for i, t in rows if isinstance(t, str) and t.strip()]


def _storable(text: str) -> str:
    """JSON's \\ud800 escapes decode to lone surrogates, which Arrow cannot store: each becomes
    U+FFFD, pairs become their character (found by tests/test_fuzz.py; see tests/fuzz_seeds)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _read_text(path: str) -> str:
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # every byte decodes; better a few odd letters than nothing


def _jsonl_texts(path: str) -> Iterator[tuple[int, object]]:
    for i, line in enumerate(_read_text(path).splitlines()):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # deep nesting (fuzz seed deep_nesting)
            continue
        if isinstance(row, dict):
            yield i, row.get("text")


def _csv_texts(path: str) -> Iterator[tuple[int, object]]:
    # csv's field limit is process-wide: raised for this file only, then given back
    previous = csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(_read_text(path).splitlines())
    try:
        if "text" not in (reader.fieldnames or []):
            raise CorpusError(f"no 'text' column (columns: {reader.fieldnames})")
        for i, row in enumerate(reader):
            yield i, row.get("text")
    except csv.Error as exc:  # e.g. a field over the size limit (an enormous line)
        raise CorpusError(f"malformed CSV near line {reader.line_num}: {exc}") from None
    finally:
        csv.field_size_limit(previous)


def _parquet_texts(path: str) -> Iterator[tuple[int, object]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise CorpusError(f"unreadable Parquet: {exc}") from None
    if "text" not in table.column_names:
        raise CorpusError(f"no 'text' column (columns: {table.column_names})")
    yield from enumerate(table.column("text").to_pylist())
