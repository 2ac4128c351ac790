"""The documented ways to read an index with other tools work as written."""

import re
from pathlib import Path

from mmindex import IngestConfig, ingest
from mmindex.testing import TINY, photo

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"


def test_the_duckdb_example_runs_and_finds_the_query_image_first(tmp_path):
    for i in range(4):
        photo(40 + 10 * i, 30, 50 + i).save(tmp_path / f"p{i}.jpg")
    ingest(IngestConfig(roots=(tmp_path,), index_dir=tmp_path / "idx", model=TINY))
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    code = code.replace('root = "idx"', f"root = {str(tmp_path / 'idx')!r}")
    scope: dict = {}
    exec(code, scope)  # the documentation's own block
    nearest = scope["nearest"]
    assert len(nearest) == 3 and abs(nearest[0][2] - 1.0) < 1e-5
    first_id = scope["duckdb"].sql(f"SELECT min(id) FROM {scope['images']}").fetchall()[0][0]
    assert nearest[0][0] == first_id  # the query image is its own nearest neighbour
