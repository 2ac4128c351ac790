import json
import multiprocessing

import pytest

from mmindex.index import store
from mmindex.errors import IndexFormatError, IndexLockedError
from mmindex.models.encoder import EncoderInfo

MODEL = EncoderInfo("test-tiny", 64, 32, "abc")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with store.StoreWriter(tmp_path) as writer:
        writer.initialise(MODEL)
        with pytest.raises(IndexLockedError, match="process"):
            store.StoreWriter(tmp_path)
    store.StoreWriter(tmp_path).close()  # released on close


def _hold_lock_and_die(root):
    store.StoreWriter(root)  # never closed: the process exits holding it
    import os

    os._exit(0)


def test_a_dead_writers_lock_frees_itself(tmp_path):
    process = multiprocessing.get_context("fork").Process(target=_hold_lock_and_die, args=(tmp_path,))
    process.start()
    process.join()
    store.StoreWriter(tmp_path).close()


def test_newer_format_is_refused(tmp_path):
    with store.StoreWriter(tmp_path) as writer:
        writer.initialise(MODEL)
    manifest = json.loads((tmp_path / store.MANIFEST).read_text())
    manifest["format_version"] = 99
    (tmp_path / store.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="newer mmindex"):
        store.read_manifest(tmp_path)


def test_truncated_manifest_is_reported(tmp_path):
    (tmp_path / store.MANIFEST).write_text('{"format_version": 1, "gen')
    with pytest.raises(IndexFormatError, match="damaged"):
        store.read_manifest(tmp_path)


def test_no_index_says_how_to_make_one(tmp_path):
    with pytest.raises(IndexFormatError, match="mmindex ingest"):
        store.read_manifest(tmp_path)


def test_unreferenced_files_are_collected_by_the_next_writer(tmp_path):
    with store.StoreWriter(tmp_path) as writer:
        writer.initialise(MODEL)
    (tmp_path / "images").mkdir()
    orphan = tmp_path / "images" / "g000009-dead.parquet"
    orphan.write_bytes(b"left by a killed writer")
    (tmp_path / "manifest.json.123.tmp").write_text("{}")
    store.StoreWriter(tmp_path).close()
    assert not orphan.exists() and not list(tmp_path.glob("*.tmp"))
