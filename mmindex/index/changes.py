"""Change detection: which scanned files are new, changed, unchanged or gone.

A file is unchanged when its path, size and mtime match a stored row; otherwise its content
hash decides (a touched-but-identical file keeps its embedding). Only rows under the roots
being ingested can be deleted, so ingesting folder B never drops folder A.

One file may own many rows: a PDF is one file whose pages are rows of images and whose text
layer is rows of texts (`text_layer`); all of them are replaced or removed together."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from mmindex.data.scan import FileStat, file_sha256

FILE_COLUMNS = ["id", "path", "size", "mtime_ns", "sha256"]


@dataclass(frozen=True)
class Candidate:
    """A new or changed file, with the rows its new rows replace."""

    stat: FileStat
    sha256: str
    old_ids: tuple[int, ...] = ()  # rows of this path in the data table
    old_error_ids: tuple[int, ...] = ()  # rows of this path in the errors table
    old_text_ids: tuple[int, ...] = ()  # rows of this path in text_layer (a PDF's passages)


@dataclass
class ChangePlan:
    candidates: list[Candidate] = field(default_factory=list)
    gone_ids: list[int] = field(default_factory=list)  # data rows of deleted files
    gone_error_ids: list[int] = field(default_factory=list)
    gone_text_ids: list[int] = field(default_factory=list)  # text_layer rows of deleted files
    unchanged: int = 0
    removed_files: int = 0


def plan_changes(scanned: list[FileStat], known: pa.Table, known_errors: pa.Table,
                 roots: list[str], text_layer: pa.Table | None = None) -> ChangePlan:
    """`text_layer`: rows of another table that the scanned files own beside their rows in
    `known` (a PDF's passages in texts); they go with their file and never decide whether it
    changed (a page without text has none)."""
    rows_by_path = _rows_by_path(known)
    errors_by_path = _rows_by_path(known_errors)
    texts_by_path = _rows_by_path(text_layer) if text_layer is not None else {}
    plan = ChangePlan()
    seen = set()
    for stat in scanned:
        seen.add(stat.path)
        rows = rows_by_path.get(stat.path, []) or errors_by_path.get(stat.path, [])
        if rows and all(_same_stat(row, stat) for row in rows):
            plan.unchanged += 1
            continue
        plan.candidates.append(Candidate(
            stat, file_sha256(stat.path),
            tuple(r["id"] for r in rows_by_path.get(stat.path, [])),
            tuple(r["id"] for r in errors_by_path.get(stat.path, [])),
            tuple(r["id"] for r in texts_by_path.get(stat.path, [])),
        ))
    for path in (set(rows_by_path) | set(errors_by_path)) - seen:
        if _under_any(path, roots):
            plan.removed_files += 1
            plan.gone_ids += [r["id"] for r in rows_by_path.get(path, [])]
            plan.gone_error_ids += [r["id"] for r in errors_by_path.get(path, [])]
            plan.gone_text_ids += [r["id"] for r in texts_by_path.get(path, [])]
    for path in set(texts_by_path) - seen - set(rows_by_path) - set(errors_by_path):
        if _under_any(path, roots):  # passages left without their file's rows
            plan.gone_text_ids += [r["id"] for r in texts_by_path[path]]
    return plan


def _rows_by_path(table: pa.Table) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in table.select(FILE_COLUMNS).to_pylist():
        grouped.setdefault(row["path"], []).append(row)
    return grouped


def _same_stat(row: dict, stat: FileStat) -> bool:
    return row["size"] == stat.size and row["mtime_ns"] == stat.mtime_ns


def _under_any(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def errors_for(errors: pa.Table, table: str) -> pa.Table:
    """The errors table's rows about files meant for `table`."""
    return errors.filter(pc.equal(errors.column("table"), table))
