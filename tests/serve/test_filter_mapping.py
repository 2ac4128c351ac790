"""docs/serve.md's table of filters and their --where SQL: each documented filter selects the
same rows as each of its SQL forms, and every operator the API accepts is in the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")

from mmindex import IngestConfig, ingest, open_index
from mmindex.serve import filters
from mmindex.serve.filters import compile_filters
from mmindex.testing import TINY, photo, photo_exif

DOC = Path(__file__).resolve().parents[2] / "docs" / "serve.md"
# | `op` | `column:op:value` | `sql` | `sql` or nothing |
_ROW = re.compile(r"^\| `(\w+)`[^|]* \| `([^`]+)` \| `([^`]+)` \| (?:`([^`]+)`)? *\|$")

ALBUM = {"beach.jpg": (64, photo_exif("2024:07:01 09:00:00", "Google", "Pixel 7")),
         "city.jpg": (80, photo_exif("2024:05:20 18:30:00", "Google", "Pixel 7")),
         "hills.jpg": (96, photo_exif("2024:08:11 12:00:00", "Canon", "Canon EOS R5")),
         "scans.jpg": (112, None)}


def documented() -> list[tuple[str, str, list[str]]]:
    rows = [_ROW.match(line) for line in DOC.read_text("utf-8").splitlines()]
    return [(m[1], m[2], [sql for sql in (m[3], m[4]) if sql]) for m in rows if m]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("mapping")
    for i, (name, (width, exif)) in enumerate(ALBUM.items()):
        photo(width, 48, 30 + i).save(root / name, **({"exif": exif} if exif else {}))
    ingest(IngestConfig(roots=(root,), index_dir=root / ".idx", model=TINY, precision="fp32"))
    return open_index(root / ".idx")


def test_the_table_documents_every_operator():
    table = documented()
    assert len(table) >= 15, "the table in docs/serve.md was not found"
    ops = {op for op, _, _ in table}
    assert ops == set(filters._TEXT_OPERATORS) | set(filters._NUMBER_OPERATORS)
    for op, filter_text, _ in table:
        assert filter_text.split(":")[1] == op


@pytest.mark.parametrize("op, filter_text, sql_forms", documented(),
                         ids=[row[1] for row in documented()])
def test_each_filter_selects_the_rows_of_its_sql(index, op, filter_text, sql_forms):
    def ids(where: str) -> set[int]:
        return set(index.filter_ids("images", where).tolist())

    selected = ids(compile_filters("images", [filter_text]))
    everything = set(index.rows("images").column("id").to_pylist())
    assert selected and selected != everything, f"{filter_text} tells no rows apart here"
    for sql in sql_forms:
        assert ids(sql) == selected, f"{filter_text} and {sql} differ"
