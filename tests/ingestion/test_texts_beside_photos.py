"""A photo folder's LICENSES.md or README is not a text corpus: texts beside photos are
indexed only when named; texts in folders of their own are indexed as before."""

from typer.testing import CliRunner

from mmindex import IngestConfig, ingest, open_index
from mmindex.cli import app
from mmindex.testing import TINY, photo


def make_album(tmp_path):
    root = tmp_path / "album"  # the index beside it, not inside
    (root / "photos").mkdir(parents=True)
    photo(64, 48, 1).save(root / "photos" / "a.jpg")
    (root / "photos" / "LICENSES.md").write_text("a.jpg: CC BY 4.0, by someone")
    (root / "notes").mkdir()
    (root / "notes" / "trip.txt").write_text("a red bicycle by the canal")
    return root


def text_paths(index_dir):
    return sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1]
                  for p in open_index(index_dir).rows("texts").column("path").to_pylist())


def test_texts_beside_photos_are_skipped_and_listed(tmp_path):
    album = make_album(tmp_path)
    summary = ingest(IngestConfig(roots=(album,), index_dir=tmp_path / "idx", model=TINY))
    assert text_paths(tmp_path / "idx") == ["notes/trip.txt"]
    assert summary.texts_beside_images == (str(album / "photos" / "LICENSES.md"),)
    assert summary.failed == 0  # skipped by choice, not a failure


def test_a_text_named_on_the_command_line_is_indexed(tmp_path):
    album = make_album(tmp_path)
    result = CliRunner().invoke(app, ["ingest", str(album), "--index", str(tmp_path / "idx"),
                                      "--model", "test-tiny"])
    assert result.exit_code == 0, result.output
    assert "sits beside photos" in result.output and "LICENSES.md" in result.output
    named = IngestConfig(roots=(album, album / "photos" / "LICENSES.md"),
                         index_dir=tmp_path / "idx", model=TINY)
    summary = ingest(named)
    assert summary.texts_beside_images == () and summary.added == 1
    assert text_paths(tmp_path / "idx") == ["notes/trip.txt", "photos/LICENSES.md"]
