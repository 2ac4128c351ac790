"""Reading a table file (Parquet, CSV, JSON Lines) into rows, one way for every reader:
text corpora, pairs files and question tables.

A bad row never stops the read: it comes back as a `BadRow` with its reason, and the caller
decides whether to skip it, list it or refuse. A file that cannot be read at all (damaged
Parquet, malformed CSV) raises `TableFileError`, which names the file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmindex.core.text import decode_text
from mmindex.errors import UserInputError

TABLE_SUFFIXES = frozenset({".parquet", ".csv", ".jsonl", ".ndjson"})
CSV_FIELD_LIMIT = 1 << 24  # a 16 MB cell; bigger is a malformed file, reported as such


class TableFileError(UserInputError):
    """A whole table file is unreadable, or lacks a column every row needs."""


@dataclass(frozen=True)
class BadRow:
    reason: str


@dataclass(frozen=True)
class Table:
    path: Path
    columns: tuple[str, ...]
    # (position, row): the position counts data rows from 0 (in JSON Lines, physical lines,
    # blank ones included), so it names the same row on every read of an unchanged file
    rows: list[tuple[int, dict | BadRow]]

    def require(self, names: Sequence[str], what: str = "") -> None:
        """Refuse a table that lacks any of `names`, naming the file and what it has."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise TableFileError(
                f"{self.path}: {what or 'the table'} needs the column(s) {', '.join(missing)}; "
                f"found {', '.join(self.columns) or 'none'}")

    def pick(self, choices: Sequence[str]) -> str:
        """The first of `choices` that is a column (e.g. `image` or `path`)."""
        for name in choices:
            if name in self.columns:
                return name
        raise TableFileError(f"{self.path}: needs a column named {' or '.join(choices)}; "
                             f"found {', '.join(self.columns) or 'none'}")


def read_table(path: str | Path) -> Table:
    """Every row of a .parquet, .csv, .jsonl or .ndjson file. Raises TableFileError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TableFileError(f"{path}: not a table file ({', '.join(sorted(TABLE_SUFFIXES))})")
    reader = {".parquet": _read_parquet, ".csv": _read_csv}.get(suffix, _read_jsonl)
    try:
        columns, rows = reader(path)
    except OSError as exc:
        raise TableFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return Table(path, tuple(columns), rows)


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except OSError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid and others for a damaged file
        raise TableFileError(f"{path}: cannot be read as Parquet ({exc})") from exc
    return table.column_names, list(enumerate(table.to_pylist()))


def _read_csv(path: Path):
    # csv's field limit is process-wide: raised for this file only, then given back
    previous = csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(decode_text(path.read_bytes(), path).splitlines())
    try:
        rows = list(enumerate(reader))
        return reader.fieldnames or [], rows
    except csv.Error as exc:  # e.g. a field over the size limit (an enormous line)
        raise TableFileError(f"{path}: malformed CSV near line {reader.line_num}: {exc}") from None
    finally:
        csv.field_size_limit(previous)


def _read_jsonl(path: Path):
    lines = decode_text(path.read_bytes(), path).splitlines()
    rows = [(i, _parse_line(line)) for i, line in enumerate(lines) if line.strip()]
    columns: dict[str, None] = {}  # every key any row has, in first-seen order
    for _, row in rows:
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
    return list(columns), rows


def _parse_line(line: str) -> dict | BadRow:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadRow(f"invalid JSON ({exc.msg})")
    except RecursionError:  # deep nesting (fuzz seed deep_nesting)
        return BadRow("JSON nested too deeply")
    return record if isinstance(record, dict) else BadRow("not a JSON object")
