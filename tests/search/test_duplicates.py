"""mmindex duplicates: identical files by their stored SHA-256, near-identical images (a
resized copy, a re-encoded copy) by embedding, with sizes."""

import json

import pytest
from typer.testing import CliRunner

from mmindex import IngestConfig, ingest, open_index
from mmindex.cli import app
from mmindex.errors import UserInputError
from mmindex.search.duplicates import find_duplicates
from mmindex.testing import TINY, TINY_DUPLICATE_THRESHOLD, write_duplicate_album


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("dups")
    write_duplicate_album(root, scenes=5)
    ingest(IngestConfig(roots=(root,), index_dir=root / ".idx", model=TINY, precision="fp32"))
    return open_index(root / ".idx")


def names(group):
    """Base names, with copies/ for the copy in that sub-folder."""
    return sorted(("copies/" if "/copies/" in f.path else "") + f.path.rsplit("/", 1)[-1]
                  for f in group.files)


def test_identical_and_near_groups(index):
    report = find_duplicates(index, TINY_DUPLICATE_THRESHOLD)
    by_kind = {g.kind: g for g in report.groups}
    assert [g.kind for g in report.groups] == ["identical", "near"]
    identical = by_kind["identical"]
    assert names(identical) == ["copies/s1.jpg", "s1.jpg"]
    assert identical.reclaimable_bytes == identical.files[0].size > 0
    near = by_kind["near"]
    assert names(near) == ["s0.jpg", "s0_q40.jpg", "s0_small.jpg"]
    assert TINY_DUPLICATE_THRESHOLD <= near.similarity <= 1.0
    assert {f.width for f in near.files} == {160, 80}
    assert report.images == 8


def test_a_lower_threshold_joins_more_and_1_keeps_only_identical(index):
    loose = find_duplicates(index, 0.9)  # every scene of the tiny model is this close
    [near] = [g for g in loose.groups if g.kind == "near"]
    assert len(near.files) == 7  # s0-s4 and the two s0 copies; s1's twin counts once
    assert sum("/copies/" in f.path for f in near.files) + sum(
        f.path.endswith("/s1.jpg") for f in near.files) == 1
    strict = find_duplicates(index, 1.0)
    assert [g.kind for g in strict.groups] == ["identical"]


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_a_threshold_outside_0_1_is_refused(index, bad):
    with pytest.raises(UserInputError, match="threshold"):
        find_duplicates(index, bad)


def test_cli_json_and_text(index):
    runner = CliRunner()
    result = runner.invoke(app, ["duplicates", "--index", str(index.root), "--json",
                                 "--threshold", str(TINY_DUPLICATE_THRESHOLD)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [len(g["files"]) for g in report["groups"]] == [2, 3]
    assert all(f["size"] > 0 for g in report["groups"] for f in g["files"])
    text = runner.invoke(app, ["duplicates", "--index", str(index.root), "--threshold", "1"])
    assert text.exit_code == 0 and "identical: 2 files" in text.output
    assert "near:" not in text.output
