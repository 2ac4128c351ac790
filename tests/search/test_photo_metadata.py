"""EXIF columns of `images` end to end: stored by ingest, filtered by --where, sorted by
--sort, and an index written before the columns existed still read, searched, checked and
grown without re-encoding."""

import json
from datetime import datetime

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmindex import IngestConfig, ingest, open_index
from mmindex.cli import app
from mmindex.data.scan import file_sha256
from mmindex.errors import UserInputError
from mmindex.index.doctor import check_index
from mmindex.index.schema import PHOTO_FIELDS
from mmindex.testing import TINY, photo, photo_exif

PHOTOS = {  # name: EXIF (None: a photo without any)
    "beach.jpg": photo_exif("2024:07:01 09:00:00", "Google", "Pixel 7", "main", (43.7, 7.26)),
    "city.jpg": photo_exif("2024:05:20 18:30:00", "Google", "Pixel 7"),
    "hills.jpg": photo_exif("2024:08:11 12:00:00", "Canon", "Canon EOS R5", "RF 24-105mm"),
    "scan.jpg": None,
}


def make_photos(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, exif) in enumerate(PHOTOS.items()):
        photo(64, 48, 10 + i).save(folder / name, **({"exif": exif} if exif else {}))


def run(folder, index_dir):
    return ingest(IngestConfig(roots=(folder,), index_dir=index_dir, model=TINY,
                               precision="fp32"))


@pytest.fixture
def index(tmp_path):
    make_photos(tmp_path / "photos")
    run(tmp_path / "photos", tmp_path / "idx")
    return open_index(tmp_path / "idx")


def names(hits):
    return [h.path.rsplit("/", 1)[-1] for h in hits]


def test_ingest_stores_when_and_where(index):
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in index.rows("images").to_pylist()}
    assert rows["beach.jpg"]["taken"] == datetime(2024, 7, 1, 9)
    assert rows["beach.jpg"]["camera"] == "Google Pixel 7" and rows["beach.jpg"]["lens"] == "main"
    assert rows["beach.jpg"]["latitude"] == pytest.approx(43.7, abs=1e-6)
    assert rows["beach.jpg"]["longitude"] == pytest.approx(7.26, abs=1e-6)
    assert rows["hills.jpg"]["camera"] == "Canon EOS R5"
    assert [rows["scan.jpg"][c] for c in ("taken", "camera", "lens", "latitude")] == [None] * 4


def test_where_filters_on_date_and_camera(index):
    hits = index.search("a photo", k=4, where="taken >= '2024-06-01' AND camera LIKE '%Pixel%'")
    assert names(hits) == ["beach.jpg"]
    assert hits[0].taken == "2024-07-01T09:00:00" and hits[0].camera == "Google Pixel 7"
    near = index.search("a photo", k=4, where="latitude BETWEEN 43 AND 44")
    assert names(near) == ["beach.jpg"]


def test_sort_by_taken_both_ways_unknown_last(index):
    oldest_first = index.search("a photo", k=4, sort="taken")
    assert names(oldest_first) == ["city.jpg", "beach.jpg", "hills.jpg", "scan.jpg"]
    newest_first = index.search("a photo", k=4, sort="-taken")
    assert names(newest_first) == ["hills.jpg", "beach.jpg", "city.jpg", "scan.jpg"]
    by_score = index.search("a photo", k=4)
    assert sorted(h.rank for h in oldest_first) == [h.rank for h in by_score]  # ranks kept


def test_sort_by_an_unknown_column_names_the_columns(index):
    with pytest.raises(UserInputError, match="cannot sort by 'when'.*taken"):
        index.search("a photo", sort="when")


def test_cli_filters_and_sorts(index):
    result = CliRunner().invoke(app, [
        "search", "a photo", "--index", str(index.root), "--json", "--sort", "-taken",
        "--where", "camera LIKE '%Pixel%'"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert [h["path"].rsplit("/", 1)[-1] for h in hits] == ["beach.jpg", "city.jpg"]
    assert hits[0]["latitude"] == pytest.approx(43.7, abs=1e-6)


def strip_photo_columns(index_dir):
    """Make the index one written before the EXIF columns: its images shards lack them
    (their checksums recorded anew, as that mmindex recorded them)."""
    manifest_path = index_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    images = manifest["tables"]["images"]
    for shard in images["shards"]:
        table = pq.read_table(index_dir / shard)
        old = table.drop_columns([f.name for f in PHOTO_FIELDS])
        pq.write_table(old.replace_schema_metadata(table.schema.metadata), index_dir / shard,
                       write_page_checksum=True)
        images["checksums"][shard] = file_sha256(index_dir / shard)
    manifest_path.write_text(json.dumps(manifest, indent=2))


def test_an_index_from_before_the_columns_keeps_working(tmp_path, monkeypatch):
    folder, index_dir = tmp_path / "photos", tmp_path / "idx"
    make_photos(folder)
    run(folder, index_dir)
    strip_photo_columns(index_dir)
    assert "taken" not in pq.read_schema(next((index_dir / "images").glob("*.parquet"))).names

    old = open_index(index_dir)
    assert old.rows("images").column("taken").null_count == 4  # read as unknown
    assert old.search("a photo", k=4, where="taken >= '2024-01-01'") == []
    assert len(old.search("a photo", k=4, sort="-taken")) == 4
    assert check_index(index_dir).healthy, check_index(index_dir).findings

    # grows and shrinks without re-encoding what it holds: one new photo, one removed
    from mmindex.ingestion.encoders import ImageBatchEncoder
    encoded = []
    original = ImageBatchEncoder.encode
    monkeypatch.setattr(ImageBatchEncoder, "encode",
                        lambda self, p: encoded.append(sum(p["ok"])) or original(self, p))
    photo(64, 48, 99).save(folder / "new.jpg", exif=photo_exif("2025:01:01 00:00:00", "Apple",
                                                               "iPhone 15"))
    (folder / "scan.jpg").unlink()
    summary = run(folder, index_dir)
    assert (summary.added, summary.removed, sum(encoded)) == (1, 1, 1)
    grown = open_index(index_dir)
    assert names(grown.search("a photo", k=5, where="taken IS NOT NULL")) == ["new.jpg"]
    assert grown.rows("images").num_rows == 4
    assert check_index(index_dir).healthy, check_index(index_dir).findings


@pytest.mark.slow  # starts Ray
def test_the_ray_executor_stores_the_same_metadata(tmp_path, index):
    make_photos(tmp_path / "photos")
    ingest(IngestConfig(roots=(tmp_path / "photos",), index_dir=tmp_path / "ray", model=TINY,
                        precision="fp32", executor="ray"))
    columns = ["taken", "camera", "lens", "latitude", "longitude"]

    def by_name(ix):
        return {r["path"].rsplit("/", 1)[-1]: [r[c] for c in columns]
                for r in ix.rows("images").to_pylist()}

    assert by_name(open_index(tmp_path / "ray")) == by_name(index)
