"""(image, caption) pairs from a table file or a folder of images with sidecar captions.

Evaluation and fine-tuning both start here. A bad row never stops loading: it is skipped and
listed with its reason, so a user sees exactly what was left out; only a source with no
usable row at all is an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mmindex.core.tables import TABLE_SUFFIXES, BadRow, read_table
from mmindex.data.scan import IMAGE_EXTENSIONS
from mmindex.errors import UserInputError

IMAGE_COLUMNS = ("image", "path")
CAPTION_COLUMNS = ("caption", "text")


@dataclass(frozen=True)
class Pair:
    image: Path  # absolute
    caption: str
    attributes: str | None = None  # JSON describing the image's content, when the source has it
    style: str | None = None  # how a synthetic image was drawn (make-shapes --style), if known


@dataclass(frozen=True)
class SkippedRow:
    row: str  # "row 12" in a table, or the image's path in a folder
    reason: str


@dataclass(frozen=True)
class Pairs:
    source: Path
    rows: tuple[Pair, ...]
    skipped: tuple[SkippedRow, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.rows)


def load_pairs(path: str | Path) -> Pairs:
    """Read pairs from .parquet/.csv/.jsonl, or from a folder of images with .txt captions.

    Relative image paths resolve against the pairs file's folder. Rows whose image is
    missing or whose caption is empty are skipped and listed in `Pairs.skipped`.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise UserInputError(f"pairs file or folder not found: {source}")
    if source.is_dir():
        candidates = _folder_rows(source)
    elif source.suffix.lower() in TABLE_SUFFIXES:
        candidates = _table_rows(source)
    else:
        raise UserInputError(
            f"{source}: unsupported pairs file; use {', '.join(sorted(TABLE_SUFFIXES))} or a folder"
        )
    return _collect(source, candidates)


@dataclass(frozen=True)
class _Candidate:
    """A row as read, before it is checked."""

    label: str
    image: Path | None
    caption: str | None = None
    attributes: str | None = None
    style: str | None = None
    problem: str | None = None  # set when the row could not even be read


def _collect(source: Path, candidates: Iterable[_Candidate]) -> Pairs:
    rows, skipped = [], []
    for row in candidates:
        reason = row.problem or _problem(row.image, row.caption)
        if reason:
            skipped.append(SkippedRow(row.label, reason))
        else:
            rows.append(Pair(row.image, row.caption.strip(), row.attributes, row.style))
    if not rows:
        examples = "; ".join(f"{s.row}: {s.reason}" for s in skipped[:3])
        detail = f" (skipped {len(skipped)}: {examples})" if skipped else ""
        raise UserInputError(f"{source}: no usable (image, caption) rows{detail}")
    return Pairs(source, tuple(rows), tuple(skipped))


def _problem(image: Path | None, caption: str | None) -> str | None:
    if image is None:
        return "no image path"
    if not caption or not caption.strip():
        return "empty caption"
    if not image.is_file():
        return f"image not found: {image}"
    return None


# ---------------------------------------------------------------- tables


def _table_rows(path: Path) -> Iterator[_Candidate]:
    table = read_table(path)
    if not table.columns:
        return  # empty, or not one readable line: _collect reports no usable rows
    image_col, caption_col = table.pick(IMAGE_COLUMNS), table.pick(CAPTION_COLUMNS)
    for position, record in table.rows:
        label = f"row {position + 1}"
        if isinstance(record, BadRow):
            yield _Candidate(label, None, problem=record.reason)
            continue
        image, caption = record.get(image_col), record.get(caption_col)
        yield _Candidate(
            label,
            (path.parent / str(image)).resolve() if image not in (None, "") else None,
            None if caption is None else str(caption),
            _attributes_text(record.get("attributes")),
            str(record["style"]) if record.get("style") not in (None, "") else None,
        )


def _attributes_text(value) -> str | None:
    # JSONL may hold attributes as a list rather than a string; store one form, JSON text.
    if value is None or isinstance(value, str):
        return value or None
    return json.dumps(value)


# ---------------------------------------------------------------- folders


def _folder_rows(folder: Path) -> Iterator[_Candidate]:
    """Each image with a caption in the .txt file of the same name beside it."""
    for image in sorted(folder.rglob("*")):
        relative = image.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if image.suffix.lower() not in IMAGE_EXTENSIONS or not image.is_file():
            continue
        sidecar = image.with_suffix(".txt")
        if sidecar.is_file():
            yield _Candidate(str(relative), image.resolve(), sidecar.read_text(encoding="utf-8"))
        else:
            yield _Candidate(
                str(relative), image.resolve(), problem=f"no caption file {sidecar.name}"
            )
