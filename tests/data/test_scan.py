import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmindex.data.scan import IMAGE_EXTENSIONS, CorpusError, read_text_documents, walk_files


def test_walk_skips_hidden_and_other_files_and_matches_any_case(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".git").mkdir()
    for name in ["a/x.JPG", "a/y.jpeg", "a/z.TIFF", "a/readme.md", ".git/k.png", "a/.dot.png"]:
        (tmp_path / name).write_bytes(b"x")
    found = sorted(os.path.basename(f.path) for f in walk_files([tmp_path], IMAGE_EXTENSIONS))
    assert found == ["x.JPG", "y.jpeg", "z.TIFF"]


def test_walk_survives_symlink_loops(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "p.png").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    found = list(walk_files([tmp_path], IMAGE_EXTENSIONS))
    assert [os.path.basename(f.path) for f in found] == ["p.png"]


def test_walk_accepts_single_files_and_reports_stat(tmp_path):
    (tmp_path / "one.png").write_bytes(b"12345")
    [stat] = walk_files([tmp_path / "one.png"], IMAGE_EXTENSIONS)
    assert stat.size == 5 and stat.path == str(tmp_path / "one.png")


def test_text_corpora_in_every_format(tmp_path):
    (tmp_path / "a.txt").write_text("  a whole document  ")
    (tmp_path / "b.jsonl").write_text("\n".join([
        json.dumps({"text": "first"}), "not json", json.dumps({"text": 3}),
        json.dumps({"other": "x"}), json.dumps({"text": "second"})]))
    (tmp_path / "c.csv").write_text('text,n\n"one, with comma",1\n,2\nthree,3\n')
    pq.write_table(pa.table({"text": ["p1", None, "p2"]}), tmp_path / "d.parquet")
    assert [d.text for d in read_text_documents(str(tmp_path / "a.txt"))] == ["a whole document"]
    assert [d.text for d in read_text_documents(str(tmp_path / "b.jsonl"))] == ["first", "second"]
    assert [d.key for d in read_text_documents(str(tmp_path / "b.jsonl"))] == ["row 0", "row 4"]
    assert [d.text for d in read_text_documents(str(tmp_path / "c.csv"))] == ["one, with comma",
                                                                              "three"]
    assert [d.text for d in read_text_documents(str(tmp_path / "d.parquet"))] == ["p1", "p2"]


def test_broken_encoding_still_reads(tmp_path):
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    assert read_text_documents(str(tmp_path / "latin.txt"))[0].text == "café"


def test_table_without_text_column_is_a_corpus_error(tmp_path):
    (tmp_path / "x.csv").write_text("caption\nhello\n")
    with pytest.raises(CorpusError, match="no 'text' column"):
        read_text_documents(str(tmp_path / "x.csv"))


def test_a_csv_corpus_reads_big_cells_and_leaves_the_process_csv_limit_alone(tmp_path):
    import csv

    (tmp_path / "big.csv").write_text("text\n" + "w" * 200_000 + "\n")  # over csv's 128 KiB
    before = csv.field_size_limit(131_072)  # csv's default, whatever ran before this test
    try:
        assert len(read_text_documents(str(tmp_path / "big.csv"))) == 1
        assert csv.field_size_limit() == 131_072
    finally:
        csv.field_size_limit(before)


# -- encodings and binary files (issue 20, D6) -------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_a_text_file_with_a_byte_order_mark_reads_as_its_text(tmp_path, encoding):
    import codecs

    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE,
           "utf-32-le": codecs.BOM_UTF32_LE, "utf-32-be": codecs.BOM_UTF32_BE}[encoding]
    (tmp_path / "wide.txt").write_bytes(bom + "hello, café ☕".encode(encoding))
    assert [d.text for d in read_text_documents(str(tmp_path / "wide.txt"))] == ["hello, café ☕"]


def _elf_like() -> bytes:
    """An ELF header, then machine-code-like bytes of every value (NULs and high bytes)."""
    return b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00" + bytes(range(256)) * 16


def test_a_binary_file_named_md_is_a_corpus_error(tmp_path):
    (tmp_path / "program.md").write_bytes(_elf_like())
    with pytest.raises(CorpusError, match="binary"):
        read_text_documents(str(tmp_path / "program.md"))


def test_a_binary_file_named_md_goes_to_the_errors_table_not_the_index(tmp_path):
    from mmindex import IngestConfig, ingest, open_index
    from mmindex.testing import TINY

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "program.md").write_bytes(_elf_like())
    (tmp_path / "docs" / "notes.txt").write_text("a real note")
    ingest(IngestConfig(roots=(tmp_path / "docs",), index_dir=tmp_path / "idx", model=TINY))
    index = open_index(tmp_path / "idx")
    indexed = [os.path.basename(p) for p in index.rows("texts").column("path").to_pylist()]
    errors = index.rows("errors").to_pylist()
    assert indexed == ["notes.txt"]
    assert [os.path.basename(e["path"]) for e in errors] == ["program.md"]
    assert "binary" in errors[0]["reason"]


def test_ascii_with_nul_bytes_is_binary_not_text(tmp_path):
    """Valid UTF-8 is not enough: text files hold no NUL bytes (a BOM-less UTF-16 aside)."""
    (tmp_path / "data.txt").write_bytes(b"ELF\x00\x01\x00plain ascii\x00")
    with pytest.raises(CorpusError, match="binary"):
        read_text_documents(str(tmp_path / "data.txt"))
