import os
import shutil
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mmindex.testing import TINY, photo
from mmindex import IngestConfig, ingest, open_index
from mmindex.errors import ModelMismatchError, UserInputError

HAS_CUDA = torch.cuda.is_available()


def run(folder, index_dir, **kwargs):
    kwargs.setdefault("model", TINY)
    kwargs.setdefault("precision", "fp32")  # exact scores; bf16 is covered in test_models
    return ingest(IngestConfig(roots=(folder,), index_dir=index_dir, **kwargs))


def count_encoded(monkeypatch):
    """Count images that reach the model, to prove what incremental ingest skips."""
    from mmindex.ingestion.encoders import ImageBatchEncoder

    calls = {"images": 0}
    original = ImageBatchEncoder.encode

    def counting(self, prepared):
        calls["images"] += sum(prepared["ok"])
        return original(self, prepared)

    monkeypatch.setattr(ImageBatchEncoder, "encode", counting)
    return calls


def test_awkward_folder_indexes_every_decodable_image_and_reports_the_rest(awkward_folder,
                                                                           tmp_path):
    folder, expected = awkward_folder
    summary = run(folder, tmp_path / "idx")
    index = open_index(tmp_path / "idx")
    indexed = set(index.rows("images").column("path").to_pylist())
    failed = {e["path"]: e["reason"] for e in index.rows("errors").to_pylist()}
    assert indexed == set(expected["good"])
    assert set(failed) == set(expected["bad"])
    assert summary.added == len(expected["good"]) and summary.failed == len(expected["bad"])
    assert index.vectors("images").count == len(expected["good"])
    [rotated] = [r for r in index.rows("images").to_pylist() if r["path"].endswith("rotated.jpg")]
    assert (rotated["width"], rotated["height"]) == (40, 80)


def test_unchanged_reingest_does_not_load_the_model(photo_folder, tmp_path, monkeypatch):
    run(photo_folder, tmp_path / "idx")

    def refuse(spec):
        raise AssertionError("the model was loaded for an unchanged folder")

    monkeypatch.setattr(sys.modules["mmindex.ingestion.run"], "load_for_inference", refuse)
    summary = run(photo_folder, tmp_path / "idx")
    assert (summary.unchanged, summary.added, summary.executor) == (6, 0, "none")


def test_incremental_add_modify_delete(photo_folder, tmp_path, monkeypatch):
    index_dir = tmp_path / "idx"
    run(photo_folder, index_dir)
    before = {r["path"]: r["id"] for r in open_index(index_dir).rows("images").to_pylist()}
    calls = count_encoded(monkeypatch)
    new = photo_folder / "2024" / "new.jpg"
    photo(70, 70, 999).save(new)
    modified = photo_folder / "2023" / "photo0.jpg"
    photo(90, 30, 555).save(modified)
    deleted = photo_folder / "2024" / "photo1.jpg"
    deleted.unlink()
    touched = photo_folder / "2023" / "photo2.jpg"
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, new mtime

    summary = run(photo_folder, index_dir)
    assert (summary.added, summary.updated, summary.removed) == (1, 2, 1)
    assert calls["images"] == 2  # the new and the modified file; the touched one is reused
    index = open_index(index_dir)
    after = {r["path"]: r for r in index.rows("images").to_pylist()}
    assert str(deleted) not in after and str(new) in after
    assert after[str(modified)]["id"] == before[str(modified)]  # ids are stable
    assert after[str(modified)]["width"] == 90
    assert index.vectors("images").count == len(after) == 6
    hit = index.search(image=modified, k=1)[0]
    assert hit.path == str(modified) and hit.score > 0.99


def test_a_touched_file_reads_the_embeddings_of_its_own_shard_only(photo_folder, tmp_path,
                                                                    monkeypatch):
    """The stored rows a touched-but-identical file reuses are found by their key column;
    the other columns (the embeddings) are read only from the shard that holds them."""
    from mmindex.index import store

    index_dir = tmp_path / "idx"
    run(photo_folder, index_dir, commit_every=2, batch_size=2)  # three shards of two
    manifest = store.read_manifest(index_dir)
    assert len(manifest.tables["images"].shards) == 3
    touched = photo_folder / "2023" / "photo2.jpg"
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, new mtime
    [holder] = [s for s in manifest.tables["images"].shards
                if str(touched) in store.read_shard(index_dir, s, ["path"])["path"].to_pylist()]
    read_shard, whole_reads = store.read_shard, []

    def spying(root, relative, columns=None):
        if relative.startswith("images/") and (columns is None or "embedding" in columns):
            whole_reads.append(relative)
        return read_shard(root, relative, columns)

    monkeypatch.setattr(store, "read_shard", spying)
    calls = count_encoded(monkeypatch)
    summary = run(photo_folder, index_dir)
    assert (summary.updated, calls["images"]) == (1, 0)  # reused, not encoded
    assert set(whole_reads) == {holder}  # the reuse, and the commit's rewrite of it
    hit = open_index(index_dir).search(image=touched, k=1)[0]
    assert hit.path == str(touched) and hit.score > 0.99


def test_identical_files_are_encoded_once_and_both_findable(photo_folder, tmp_path, monkeypatch):
    shutil.copy(photo_folder / "2023" / "photo0.jpg", photo_folder / "2024" / "copy.jpg")
    calls = count_encoded(monkeypatch)
    run(photo_folder, tmp_path / "idx")
    assert calls["images"] == 6
    hits = open_index(tmp_path / "idx").search(image=photo_folder / "2024" / "copy.jpg", k=2)
    assert {h.path for h in hits} == {str(photo_folder / "2023" / "photo0.jpg"),
                                      str(photo_folder / "2024" / "copy.jpg")}


def test_ingesting_another_folder_keeps_the_first(photo_folder, tmp_path, awkward_folder):
    run(photo_folder, tmp_path / "idx")
    run(awkward_folder[0], tmp_path / "idx")
    paths = open_index(tmp_path / "idx").rows("images").column("path").to_pylist()
    assert sum(str(photo_folder) in p for p in paths) == 6


def test_fixed_broken_file_leaves_the_errors_table(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "later.png").write_bytes(b"")
    run(folder, tmp_path / "idx")
    assert open_index(tmp_path / "idx").rows("errors").num_rows == 1
    photo(20, 20, 3).save(folder / "later.png")
    summary = run(folder, tmp_path / "idx")
    index = open_index(tmp_path / "idx")
    assert summary.updated == 1 and index.rows("errors").num_rows == 0
    assert index.rows("images").num_rows == 1


def test_other_model_is_refused_naming_both(photo_folder, tmp_path):
    run(photo_folder, tmp_path / "idx")
    with pytest.raises(ModelMismatchError, match="test-tiny.*mmindex-tiny:random"):
        run(photo_folder, tmp_path / "idx", model="mmindex-tiny:random")


def test_missing_root_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        run(tmp_path / "nope", tmp_path / "idx")


def test_embeddings_are_fixed_size_lists_readable_by_duckdb(photo_folder, tmp_path):
    import duckdb

    run(photo_folder, tmp_path / "idx")
    shards = list((tmp_path / "idx" / "images").glob("*.parquet"))
    assert str(pq.read_schema(shards[0]).field("embedding").type) == "fixed_size_list<element: float>[64]"
    norms = duckdb.sql(f"SELECT list_dot_product(embedding::FLOAT[], embedding::FLOAT[]) AS n "
                       f"FROM read_parquet('{shards[0]}')").fetchnumpy()["n"]
    assert np.allclose(norms, 1.0, atol=1e-4)


def test_texts_are_searchable_from_text_and_image(tmp_path, photo_folder):
    corpus = photo_folder / "notes"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a red bicycle by the canal")
    (corpus / "b.jsonl").write_text('{"text": "mountains at dawn"}\n{"text": "a cat asleep"}\n')
    summary = run(photo_folder, tmp_path / "idx")
    assert summary.documents == 3
    index = open_index(tmp_path / "idx")
    hit = index.search("a cat asleep", target="texts", k=1, mode="vector")[0]
    assert hit.text == "a cat asleep" and hit.key == "row 1" and hit.score > 0.99
    assert index.search("a cat asleep", target="texts", k=1)[0].id == hit.id  # hybrid
    assert len(index.search(image=photo_folder / "2023" / "photo0.jpg", target="texts", k=5)) == 3
    (corpus / "b.jsonl").write_text('{"text": "a cat asleep"}\n')
    run(photo_folder, tmp_path / "idx")
    texts = open_index(tmp_path / "idx").rows("texts").column("text").to_pylist()
    assert sorted(texts) == ["a cat asleep", "a red bicycle by the canal"]


def test_an_empty_corpus_file_is_reported_once_then_unchanged(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a red bicycle by the canal")
    (corpus / "empty.txt").write_text("")
    (corpus / "blank.csv").write_text("text\n   \n")
    first = run(corpus, tmp_path / "idx")
    assert (first.added, first.failed, first.documents) == (1, 2, 1)
    assert {(e.path.rsplit("/", 1)[-1], "no text" in e.reason) for e in first.errors} == {
        ("empty.txt", True), ("blank.csv", True)}
    again = run(corpus, tmp_path / "idx")
    assert (again.added, again.unchanged, again.failed) == (0, 3, 0)
    (corpus / "empty.txt").write_text("now it has words")
    filled = run(corpus, tmp_path / "idx")
    assert (filled.updated, filled.documents) == (1, 1)
    texts = open_index(tmp_path / "idx").rows("texts").column("text").to_pylist()
    assert sorted(texts) == ["a red bicycle by the canal", "now it has words"]


def test_commits_in_chunks_so_a_killed_run_keeps_its_work(photo_folder, tmp_path):
    summary = run(photo_folder, tmp_path / "idx", commit_every=2, batch_size=2)
    assert summary.generation >= 3
    assert open_index(tmp_path / "idx").rows("images").num_rows == 6


@pytest.mark.slow
def test_ray_executor_gives_the_same_embeddings_as_local(photo_folder, tmp_path):
    local = run(photo_folder, tmp_path / "local", executor="local")
    distributed = run(photo_folder, tmp_path / "ray", executor="ray")
    assert (local.executor, distributed.executor) == ("local", "ray")
    a, b = open_index(tmp_path / "local"), open_index(tmp_path / "ray")
    assert b.rows("images").num_rows == 6
    for row in a.rows("images").to_pylist():
        vector = a.vectors("images").index.reconstruct(row["id"])
        hit = b.search(vector=vector, k=1)[0]
        assert hit.path == row["path"] and hit.score > 0.999


@pytest.mark.slow
def test_a_pool_of_two_ray_actors_gives_the_same_embeddings(photo_folder, tmp_path):
    import ray

    local = run(photo_folder, tmp_path / "local", executor="local")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)  # reads keep a CPU
    try:
        pooled = run(photo_folder, tmp_path / "ray", actors=2, actor_cpus=1, batch_size=2)
    finally:
        ray.shutdown()
    assert (local.executor, pooled.executor, pooled.failed) == ("local", "ray", 0)  # auto
    a, b = open_index(tmp_path / "local"), open_index(tmp_path / "ray")
    assert b.rows("images").num_rows == a.rows("images").num_rows == 6
    for row in a.rows("images").to_pylist():
        hit = b.search(vector=a.vectors("images").index.reconstruct(row["id"]), k=1)[0]
        assert hit.path == row["path"] and hit.score > 0.999


def test_actor_pool_holds_a_gpu_only_for_a_cuda_model():
    import ray

    from mmindex.ingestion.ray_job import ActorPool

    def described(options: dict) -> dict:
        pool = options.pop("compute")
        return options | {"actors": (pool.min_size, pool.max_size)}

    assert described(ActorPool().map_batches_options(ray)) == {"actors": (1, 1), "num_cpus": 1}
    assert described(ActorPool(4, 8, gpu=True).map_batches_options(ray)) == {
        "actors": (4, 4), "num_cpus": 8, "num_gpus": 1}


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_refused_before_the_index_is_touched(photo_folder,
                                                                         tmp_path):
    with pytest.raises(UserInputError, match="no CUDA device"):
        run(photo_folder, tmp_path / "idx", device="cuda")
    assert not (tmp_path / "idx").exists()
    with pytest.raises(UserInputError, match="cpu or cuda, not 'tpu'"):
        run(photo_folder, tmp_path / "idx", device="tpu")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_ingest_matches_cpu_ingest(photo_folder, tmp_path):
    run(photo_folder, tmp_path / "cpu")
    run(photo_folder, tmp_path / "gpu", device="cuda")
    a, b = open_index(tmp_path / "cpu"), open_index(tmp_path / "gpu")
    for row in a.rows("images").to_pylist():
        hit = b.search(vector=a.vectors("images").index.reconstruct(row["id"]), k=1)[0]
        assert hit.path == row["path"] and hit.score > 0.999


def test_manifest_records_the_index_kind_and_a_grown_index_is_rebuilt(photo_folder, tmp_path,
                                                                     monkeypatch):
    import json

    from mmindex.index import vectors as vector_index

    run(photo_folder, tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["tables"]["images"]["index"]["kind"] == "flat"
    monkeypatch.setattr(vector_index, "IVF_THRESHOLD", 7)  # the 7th image crosses it
    photo(30, 30, 31).save(photo_folder / "seventh.jpg")
    run(photo_folder, tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["tables"]["images"]["index"]["kind"] == "ivf"
    index = open_index(tmp_path / "idx")
    assert index.vectors("images").kind == "ivf" and index.vectors("images").count == 7


def test_a_damaged_stored_embedding_is_never_copied_to_an_identical_file(tmp_path,
                                                                          monkeypatch):
    """A byte-identical new file reuses the stored embedding of its twin, unless that vector
    is not a finite unit vector: then the new file is encoded from disk."""
    import pyarrow as pa

    from mmindex.index import store

    folder = tmp_path / "photos"
    folder.mkdir()
    photo(60, 40, 5).save(folder / "a.jpg")
    run(folder, tmp_path / "idx")
    (folder / "copy.jpg").write_bytes((folder / "a.jpg").read_bytes())
    read_matching = store.read_matching

    def damaged(root, manifest, table, *args, **kwargs):
        rows = read_matching(root, manifest, table, *args, **kwargs)
        assert table == "images" and rows.num_rows == 1  # the twin's row, read for its vector
        nan = pa.array([[float("nan")] * len(rows.column("embedding")[0])] * rows.num_rows,
                       type=rows.schema.field("embedding").type)
        return rows.set_column(rows.column_names.index("embedding"), "embedding", nan)

    monkeypatch.setattr(store, "read_matching", damaged)
    run(folder, tmp_path / "idx")
    monkeypatch.undo()
    rows = store.read_table(tmp_path / "idx", store.read_manifest(tmp_path / "idx"), "images")
    stored = {r["path"].rsplit("/", 1)[-1]: np.asarray(r["embedding"]) for r in rows.to_pylist()}
    assert np.isfinite(stored["copy.jpg"]).all()  # encoded from disk, not copied
    assert np.allclose(stored["copy.jpg"], stored["a.jpg"], atol=1e-5)


def test_a_null_stored_embedding_is_a_typed_error_naming_the_table(tmp_path, monkeypatch):
    """Damage, not a vector: the copy's ingest stops with what to run, and commits nothing."""
    import pyarrow as pa

    from mmindex.errors import IndexFormatError
    from mmindex.index import store

    folder = tmp_path / "photos"
    folder.mkdir()
    photo(60, 40, 5).save(folder / "a.jpg")
    run(folder, tmp_path / "idx")
    generation = store.read_manifest(tmp_path / "idx").generation
    (folder / "copy.jpg").write_bytes((folder / "a.jpg").read_bytes())
    read_matching = store.read_matching

    def nulled(*args, **kwargs):
        rows = read_matching(*args, **kwargs)
        column = rows.column_names.index("embedding")
        return rows.set_column(column, "embedding",
                               pa.nulls(rows.num_rows, rows.schema.field("embedding").type))

    monkeypatch.setattr(store, "read_matching", nulled)
    with pytest.raises(IndexFormatError, match="images table of .*null.*mmindex doctor"):
        run(folder, tmp_path / "idx")
    assert store.read_manifest(tmp_path / "idx").generation == generation
