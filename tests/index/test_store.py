import json
import multiprocessing
import os

import pyarrow as pa
import pytest

from mmindex.errors import IndexFormatError, IndexLockedError, IndexNotWritableError
from mmindex.index import store
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


# -- a read-only index directory (issue 20, D4) -------------------------------------------------
@pytest.fixture
def read_only_index(tmp_path):
    """An index directory that cannot be written: a read-only bind mount where this process
    may mount (root in a container, where permissions would not stop it), else chmod."""
    import subprocess

    source, mounted = tmp_path / "source", tmp_path / "ro"
    with store.StoreWriter(source) as writer:
        writer.initialise(MODEL)
    mounted.mkdir()
    bind = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(mounted)],
                          capture_output=True)
    if bind.returncode == 0:
        yield mounted
        subprocess.run(["umount", str(mounted)], check=True)
        return
    if os.geteuid() == 0:
        pytest.skip("root without mount: nothing here can make a directory read-only")
    (source / store.LOCK).chmod(0o444)
    source.chmod(0o555)
    yield source
    source.chmod(0o755)


def test_a_read_only_index_is_a_typed_error_naming_the_directory(read_only_index):
    with pytest.raises(IndexNotWritableError, match=f"{read_only_index}.*writable --index"):
        store.StoreWriter(read_only_index)
    assert store.read_manifest(read_only_index).model == MODEL  # reading still works


def test_ingest_into_a_read_only_index_is_one_line_and_exit_7(read_only_index, tmp_path):
    from typer.testing import CliRunner

    from mmindex.cli import app

    (tmp_path / "photos").mkdir()
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "photos"), "--index",
                                      str(read_only_index)])
    assert result.exit_code == 7, result.output
    assert "Traceback" not in result.output and str(read_only_index) in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- shards written by workers, adopted by the writer's commit --------------------------------
def _worker_shard(root, prefix, ids, model=MODEL, table="images", folder="images"):
    """What a Ray worker does: write a shard of `ids` under the writer's prefix."""
    import numpy as np

    rows = [{"id": i, "path": f"/p/{i}.jpg", "size": 1, "mtime_ns": 1, "sha256": f"s{i}"}
            for i in ids]
    vectors = np.eye(len(ids), model.dim, dtype=np.float32)  # unit rows
    relative = store.shard_name(folder, prefix)
    sha = store.write_shard(str(root), relative,
                            store.rows_to_table(table, rows, vectors, model.dim), model)
    return store.WrittenShard(relative, len(ids), sha)


def test_a_worker_written_shard_is_adopted_and_spared_until_then(tmp_path):
    with store.StoreWriter(tmp_path) as writer:
        writer.initialise(MODEL)
        prefix = writer.worker_prefix()
        first = _worker_shard(str(tmp_path), prefix, [0, 1])  # a path or a URI
        waiting = _worker_shard(tmp_path.as_uri(), prefix, [2])  # not yet reported
        writer.commit({"images": store.TableChange(adopt=(first,))}, {})
        assert (tmp_path / waiting.relative).exists()  # in flight: this writer's GC spares it
        writer.commit({"images": store.TableChange(adopt=(waiting,))}, {})
        partial = _worker_shard(tmp_path.as_uri(), prefix, [3])  # a retried task's first try
        writer.end_worker_writes(prefix)
        assert not (tmp_path / partial.relative).exists()
    manifest = store.read_manifest(tmp_path)
    assert manifest.tables["images"].shards == (first.relative, waiting.relative)
    assert manifest.tables["images"].rows == 3
    assert manifest.tables["images"].checksums[first.relative] == first.sha256
    ids = [i for ids, _ in store.shard_vectors(tmp_path, first.relative, chunk_rows=1) for i in ids]
    assert ids == [0, 1]


def test_an_orphan_of_a_crashed_run_is_collected_by_the_next_writer(tmp_path):
    with store.StoreWriter(tmp_path) as writer:
        writer.initialise(MODEL)
        orphan = _worker_shard(tmp_path.as_uri(), writer.worker_prefix(), [0])
    assert (tmp_path / orphan.relative).exists()  # the writer died before adopting it
    store.StoreWriter(tmp_path).close()
    assert not (tmp_path / orphan.relative).exists()


@pytest.mark.parametrize("damage, message", [
    ("rows", "holds 2 rows, its worker reported 3"),
    ("sha", "SHA-256 differs"),
    ("model", "another model"),
    ("table", "column key"),
    ("name", "not a shard name"),
    ("twice", "already holds it"),
])
def test_a_shard_that_is_not_what_its_worker_reported_commits_nothing(tmp_path, damage, message):
    from dataclasses import replace

    with store.StoreWriter(tmp_path) as writer:
        writer.initialise(MODEL)
        prefix = writer.worker_prefix()
        shard = _worker_shard(tmp_path.as_uri(), prefix, [0, 1])
        if damage == "twice":
            writer.commit({"images": store.TableChange(adopt=(shard,))}, {})
        bad = {"rows": replace(shard, rows=3), "sha": replace(shard, sha256="0" * 64),
               "model": _worker_shard(tmp_path.as_uri(), prefix, [2, 3],
                                      model=EncoderInfo("other", 64, 32, "def")),
               "table": _worker_shard(tmp_path.as_uri(), prefix, [4, 5], table="texts"),
               "name": replace(shard, relative="faiss/" + shard.relative.split("/")[1]),
               "twice": shard}[damage]
        generation = writer.manifest.generation
        with pytest.raises(store.IndexWriteError, match=message):
            writer.commit({"images": store.TableChange(adopt=(bad,))}, {})
    assert store.read_manifest(tmp_path).generation == generation


# -- reading the stored embeddings ------------------------------------------------------------
def test_stored_vectors_are_the_tables_rows_in_order_across_shards_and_removals(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    with store.StoreWriter(tmp_path) as writer:
        writer.initialise(MODEL)
        for first in (20, 0, 10):  # a shard per commit, ids not in table order
            rows = [{"id": i, "path": f"/p/{i}.jpg", "size": 1, "mtime_ns": 1, "sha256": f"s{i}"}
                    for i in range(first, first + 10)]
            vectors = rng.standard_normal((10, MODEL.dim)).astype(np.float32)
            writer.commit({"images": store.TableChange(
                add=store.rows_to_table("images", rows, vectors, MODEL.dim))}, {})
        # copy-on-write: the last shard is rewritten without two rows, the first without one
        writer.commit({"images": store.TableChange(remove_ids={23, 12, 17})}, {})
    manifest = store.read_manifest(tmp_path)
    assert len(manifest.tables["images"].shards) == 3
    expected_ids, expected = [], []
    for shard in manifest.tables["images"].shards:  # a plain pyarrow read, row by row
        table = pq.read_table(tmp_path / shard, columns=["id", "embedding"])
        expected_ids += table.column("id").to_pylist()
        expected += table.column("embedding").to_pylist()
    ids, vectors = store.stored_vectors(tmp_path, manifest, "images", chunk_rows=4)
    assert ids.tolist() == expected_ids and len(expected_ids) == 27
    assert ids[0] == 20  # the table's order, not the ids'
    assert vectors.dtype == np.float32 and vectors.shape == (27, MODEL.dim)
    np.testing.assert_array_equal(vectors, np.array(expected, np.float32))
    empty_ids, empty = store.stored_vectors(tmp_path, manifest, "texts")
    assert empty_ids.shape == (0,) and empty.shape == (0, MODEL.dim)


def test_read_matching_is_read_table_filtered_by_key_in_table_order(tmp_path):
    import numpy as np
    import pyarrow.compute as pc

    rng = np.random.default_rng(1)
    with store.StoreWriter(tmp_path) as writer:
        writer.initialise(MODEL)
        for first in (20, 0, 10):  # a shard per commit, ids not in table order
            rows = [{"id": i, "path": f"/p/{i}.jpg", "size": 1, "mtime_ns": 1,
                     "sha256": f"s{i % 7}"} for i in range(first, first + 10)]
            vectors = rng.standard_normal((10, MODEL.dim)).astype(np.float32)
            writer.commit({"images": store.TableChange(
                add=store.rows_to_table("images", rows, vectors, MODEL.dim))}, {})
    manifest = store.read_manifest(tmp_path)
    whole = store.read_table(tmp_path, manifest, "images")
    for wanted in ({"s3", "absent"}, {"s0", "s6"}, {"absent"}):
        matching = store.read_matching(tmp_path, manifest, "images", "sha256", wanted)
        expected = whole.filter(pc.is_in(whole.column("sha256"),
                                         value_set=pa.array(sorted(wanted))))
        assert matching.schema == whole.schema and matching.equals(expected)
    some = store.read_matching(tmp_path, manifest, "images", "sha256", {"s1"}, ["id", "path"])
    assert some.column_names == ["id", "path"]
    assert some.column("id").to_pylist() == [22, 29, 1, 8, 15]  # table order


def test_a_null_embedding_is_damage_not_a_shifted_row():
    import numpy as np
    import pyarrow as pa

    dim = 2
    column = pa.chunked_array([pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32(), dim)),
                               pa.array([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]],
                                        pa.list_(pa.float32(), dim)).slice(1)])
    np.testing.assert_array_equal(store.embedding_matrix(column),
                                  [[1, 0], [0, 1], [0, 1], [1, 0]])
    for damaged in ([[1.0, 0.0], None, [0.0, 1.0]], [[1.0, None], [0.0, 1.0]]):
        with pytest.raises(IndexFormatError, match="null"):
            store.embedding_matrix(pa.array(damaged, pa.list_(pa.float32(), dim)))
