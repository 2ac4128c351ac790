"""The Ray path of ingest: workers decode, encode and write the images shards; the driver
plans, adopts their shards and commits (ingestion/ray_job.py, docs/scaling.md)."""

import shutil

import numpy as np
import pytest

from mmindex import IngestConfig, ingest, open_index
from mmindex.core import faults
from mmindex.errors import UserInputError
from mmindex.index import store
from mmindex.index.doctor import check_index
from mmindex.index.storage import UnsupportedStorageError
from mmindex.testing import TINY


def run(folder, index_dir, **kwargs):
    kwargs.setdefault("model", TINY)
    kwargs.setdefault("precision", "fp32")
    return ingest(IngestConfig(roots=(folder,), index_dir=index_dir, **kwargs))


@pytest.fixture
def album(awkward_folder):
    """The awkward folder (8 good images, 4 broken) plus identical copies of a good and of a
    broken file: 14 files, 10 rows of images and 5 of errors expected."""
    folder, _ = awkward_folder
    shutil.copy(folder / "plain.jpg", folder / "plain copy.jpg")
    shutil.copy(folder / "plain.jpg", folder / "plain copy 2.jpg")
    shutil.copy(folder / "truncated.jpg", folder / "truncated copy.jpg")
    return folder


def by_path(index, table):
    return {r["path"]: r for r in index.rows(table).to_pylist()}


def embeddings(index) -> dict[str, np.ndarray]:
    rows = store.read_table(index.root, store.read_manifest(index.root), "images")
    return {r["path"]: np.asarray(r["embedding"]) for r in rows.to_pylist()}


def test_object_stores_are_refused_with_what_works(album, tmp_path):
    with pytest.raises(UnsupportedStorageError, match="atomically.*NFS"):
        run(album, "s3://bucket/idx")
    with pytest.raises(UserInputError, match="gs://"):
        run(album, "gs://bucket/idx")
    from typer.testing import CliRunner

    from mmindex.cli import app

    result = CliRunner().invoke(app, ["ingest", str(album), "--index", "s3://bucket/idx"])
    assert result.exit_code == 2 and "NFS" in result.output, result.output
    assert not list(tmp_path.glob("**/manifest.json"))


def test_a_file_uri_root_is_the_same_directory(photo_folder, tmp_path):
    summary = run(photo_folder, (tmp_path / "an index").as_uri(), executor="local")
    assert summary.added == 6 and (tmp_path / "an index" / "manifest.json").is_file()
    assert open_index((tmp_path / "an index").as_uri()).rows("images").num_rows == 6


def test_a_pool_that_holds_every_cpu_is_refused_rather_than_stalling():
    from mmindex.ingestion.ray_job import ActorPool

    class TwoCpus:
        @staticmethod
        def cluster_resources():
            return {"CPU": 2.0}

    ActorPool(1, 1).check_fits(TwoCpus)
    with pytest.raises(UserInputError, match="leave none to decode"):
        ActorPool(2, 1).check_fits(TwoCpus)


@pytest.mark.slow
def test_workers_write_the_shards_and_the_rows_match_the_local_loop(album, tmp_path,
                                                                    monkeypatch):
    """Same rows (broken files and identical copies included) and embeddings as the local
    loop; every images shard was written by a worker, and only small summaries came back."""
    from mmindex.ingestion import ray_job

    local = run(album, tmp_path / "local", executor="local")
    driver_shards, summaries = [], []
    write_shard, write_image_shards = store.write_shard, ray_job.write_image_shards

    def driver_writes(root, relative, *args):  # this process; Ray's workers are others
        driver_shards.append(relative)
        return write_shard(root, relative, *args)

    def recorded(*args, **kwargs):
        for summary in write_image_shards(*args, **kwargs):
            summaries.append(summary)
            yield summary

    monkeypatch.setattr(store, "write_shard", driver_writes)
    monkeypatch.setattr(ray_job, "write_image_shards", recorded)
    root = (tmp_path / "ray").as_uri()  # workers and driver agree on a file:// root
    distributed = run(album, root, executor="ray", batch_size=3, commit_every=4)

    assert (distributed.executor, distributed.added, distributed.failed) == ("ray", 10, 5)
    assert (local.added, local.failed) == (10, 5)
    a, b = open_index(tmp_path / "local"), open_index(root)
    rows_a, rows_b = by_path(a, "images"), by_path(b, "images")
    assert set(rows_a) == set(rows_b) and len(rows_b) == 10
    for path, row in rows_a.items():
        assert {k: v for k, v in rows_b[path].items() if k != "id"} == \
            {k: v for k, v in row.items() if k != "id"}
    assert set(by_path(a, "errors")) == set(by_path(b, "errors"))
    vectors_a, vectors_b = embeddings(a), embeddings(b)
    for path, vector in vectors_a.items():
        assert float(vector @ vectors_b[path]) >= 0.9999
    ids = [r["id"] for r in rows_b.values()] + [r["id"] for r in by_path(b, "errors").values()]
    assert len(set(ids)) == len(ids)
    assert b.vectors("images").count == 10
    hit = b.search(image=album / "plain copy.jpg", k=3)
    assert {h.path for h in hit} == {str(album / n) for n in ("plain.jpg", "plain copy.jpg",
                                                              "plain copy 2.jpg")}

    report = check_index(tmp_path / "ray")
    assert report.healthy and not report.findings, report.findings  # no orphan either
    shards = store.read_manifest(tmp_path / "ray").tables["images"].shards
    assert len(shards) >= 2 and not set(shards) & set(driver_shards)  # commit_every=4
    assert all("-w" in s for s in shards)
    assert all(set(s) == {"shard", "rows", "sha256", "failures"} for s in summaries)
    assert sum(s["rows"] for s in summaries) == 10
    assert sum(len(f["files"]) for s in summaries for f in s["failures"]) == 5


@pytest.mark.slow
def test_a_crash_between_worker_writes_and_a_commit_leaves_orphans_the_next_ingest_removes(
        photo_folder, tmp_path):
    """The driver dies in its second commit: the first commit's rows stay, the shards the
    workers wrote since are orphans, and the next ingest collects them and finishes."""
    index_dir = tmp_path / "idx"
    # one write to create the index, then 3 per commit (two FAISS files and the manifest):
    # the 5th visit is the first write of the second commit
    with (faults.REGISTRY.armed("store.write.midway", faults.crash(after=4)),
          pytest.raises(faults.SimulatedCrash)):
        run(photo_folder, index_dir, executor="ray", batch_size=2, commit_every=2)
    manifest = store.read_manifest(index_dir)
    committed = {r["path"]: r["id"] for r in open_index(index_dir).rows("images").to_pylist()}
    assert manifest.generation == 1 and len(committed) == 2
    orphans = [p for p in store.data_files(index_dir)
               if p.relative_to(index_dir).as_posix() not in manifest.files()]
    assert any(p.parent.name == "images" for p in orphans)

    summary = run(photo_folder, index_dir, executor="local")
    assert (summary.added, summary.unchanged) == (4, 2)
    index = open_index(index_dir)
    rows = index.rows("images").to_pylist()
    assert len(rows) == len({r["path"] for r in rows}) == len({r["id"] for r in rows}) == 6
    assert {r["path"]: r["id"] for r in rows if r["path"] in committed} == committed
    assert index.vectors("images").count == 6
    live = store.read_manifest(index_dir).files()
    assert all(p.relative_to(index_dir).as_posix() in live for p in store.data_files(index_dir))
