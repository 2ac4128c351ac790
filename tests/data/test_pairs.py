import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmindex.data.pairs import load_pairs
from mmindex.errors import UserInputError

SAMPLE_SHAPES = Path(__file__).resolve().parents[2] / "sample_data" / "shapes"


@pytest.fixture
def folder(tmp_path):
    """Two images under images/; rows point at them, at a missing file, and at empty text."""
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / name)
    return tmp_path


ROWS = [
    {"image": "images/a.png", "caption": "a red square", "attributes": '[{"shape": "square"}]'},
    {"image": "images/b.png", "caption": "another red square", "attributes": None},
    {"image": "images/missing.png", "caption": "nothing here", "attributes": None},
    {"image": "images/a.png", "caption": "   ", "attributes": None},
]


def write_rows(path: Path, rows: list[dict], image_col="image", caption_col="caption") -> Path:
    renamed = [
        {image_col: r["image"], caption_col: r["caption"], "attributes": r["attributes"]}
        for r in rows
    ]
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(renamed), path)
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(renamed[0]))
            writer.writeheader()
            writer.writerows(renamed)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in renamed))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
@pytest.mark.parametrize("columns", [("image", "caption"), ("path", "text")])
def test_tables_load_good_rows_and_report_bad_ones(folder, suffix, columns):
    pairs = load_pairs(write_rows(folder / f"pairs{suffix}", ROWS, *columns))
    assert [p.image for p in pairs] == [folder / "images" / "a.png", folder / "images" / "b.png"]
    assert [p.caption for p in pairs] == ["a red square", "another red square"]
    assert pairs.rows[0].attributes == '[{"shape": "square"}]'
    assert pairs.rows[1].attributes is None
    reasons = {s.row: s.reason for s in pairs.skipped}
    assert reasons["row 3"].startswith("image not found")
    assert reasons["row 4"] == "empty caption"


def test_relative_paths_resolve_against_the_pairs_file_not_the_working_dir(folder, monkeypatch):
    table = write_rows(folder / "pairs.csv", ROWS[:1])
    monkeypatch.chdir(folder / "images")
    assert load_pairs(table).rows[0].image == folder / "images" / "a.png"


def test_jsonl_keeps_list_attributes_and_skips_broken_lines(folder):
    path = folder / "pairs.jsonl"
    lines = [
        json.dumps({"image": "images/a.png", "caption": "red", "attributes": [{"color": "red"}]}),
        "{not json",
        json.dumps(["a", "list"]),
    ]
    path.write_text("\n".join(lines) + "\n")
    pairs = load_pairs(path)
    assert json.loads(pairs.rows[0].attributes) == [{"color": "red"}]
    assert [s.reason.split(" ")[0] for s in pairs.skipped] == ["invalid", "not"]


def test_folder_of_images_with_sidecar_captions(folder):
    (folder / "images" / "a.txt").write_text("a red square\n")
    (folder / ".hidden").mkdir()
    Image.new("RGB", (4, 4)).save(folder / ".hidden" / "c.png")
    pairs = load_pairs(folder)
    assert [(p.image.name, p.caption) for p in pairs] == [("a.png", "a red square")]
    assert [(s.row, s.reason) for s in pairs.skipped] == [("images/b.png", "no caption file b.txt")]


def test_no_usable_rows_is_a_user_error_naming_the_file(folder):
    path = write_rows(folder / "bad.parquet", ROWS[2:])
    with pytest.raises(UserInputError, match="bad.parquet.*no usable"):
        load_pairs(path)


def test_missing_columns_and_unknown_formats_are_user_errors(folder):
    (folder / "x.csv").write_text("file,words\nimages/a.png,red\n")
    with pytest.raises(UserInputError, match="image or path"):
        load_pairs(folder / "x.csv")
    (folder / "x.xlsx").write_text("")
    with pytest.raises(UserInputError, match="unsupported"):
        load_pairs(folder / "x.xlsx")
    with pytest.raises(UserInputError, match="not found"):
        load_pairs(folder / "nope.parquet")


def test_the_sample_shapes_split_loads_whole():
    pairs = load_pairs(SAMPLE_SHAPES / "pairs.parquet")
    assert len(pairs) == 300 and not pairs.skipped
    assert all(p.image.is_file() and p.attributes for p in pairs)
