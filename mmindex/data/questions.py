"""Question tables: (image, question, answer, kind) rows that train and measure `ask`."""

from __future__ import annotations

import warnings
from pathlib import Path

from mmindex.core.tables import BadRow, read_table
from mmindex.errors import MmindexWarning

QUESTION_COLUMNS = ("image", "question", "answer")


def read_questions(path: str | Path) -> list[tuple[Path, str, str, str]]:
    """(image, question, answer, kind) rows of a Parquet/CSV/JSONL table; images resolve
    against the table's folder; `kind` is optional ("" when absent). Rows that are not
    records or lack a value are skipped with one warning that counts them."""
    path = Path(path).expanduser()
    table = read_table(path)
    table.require(QUESTION_COLUMNS, "a questions table")
    rows, skipped = [], []
    for position, row in table.rows:
        if isinstance(row, BadRow) or any(row.get(c) in (None, "") for c in QUESTION_COLUMNS):
            skipped.append(position + 1)
            continue
        rows.append((path.parent / str(row["image"]), str(row["question"]),
                     str(row["answer"]), str(row.get("kind") or "")))
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} unusable row(s), the first row "
                      f"{skipped[0]}", MmindexWarning, stacklevel=2)
    return rows
