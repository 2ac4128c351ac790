"""The compressed kind (IVF-PQ whose candidates are re-ranked with exact vectors), built on a
few thousand vectors by lowering the thresholds that keep it for large collections."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest

from mmindex.errors import IndexFormatError
from mmindex.index import store
from mmindex.index import vectors as vector_index
from mmindex.index.doctor import check_index, repair_index
from mmindex.index.schema import images_schema
from mmindex.index.vectors import VectorIndex
from mmindex.models.encoder import EncoderInfo
from mmindex.search.searcher import Index

DIM, COUNT = 64, 3000


def compressed_from_2000(patch: pytest.MonkeyPatch) -> None:
    """The compressed kind from 2000 vectors, IVF-Flat from 1000."""
    patch.setattr(vector_index, "IVF_THRESHOLD", 1000)
    patch.setattr(vector_index, "COMPRESSED_THRESHOLD", 2000)


@contextmanager
def one_faiss_thread():
    """On a busy 2-core machine OpenMP's spinning threads make k-means ~20x slower."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch):
    compressed_from_2000(monkeypatch)
    with one_faiss_thread():
        yield


def clustered(n: int, seed: int, clusters: int = 40) -> np.ndarray:
    """Unit vectors around random centres, as real embeddings cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.6, (n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


VECTORS = clustered(COUNT, seed=0)
IDS = np.arange(COUNT, dtype=np.int64) * 3 + 5  # row ids are not positions


@pytest.fixture(scope="module")
def built() -> bytes:
    """One compressed index, built once (as a blob, so each test gets its own copy)."""
    with pytest.MonkeyPatch.context() as patch, one_faiss_thread():
        compressed_from_2000(patch)
        return bytes(VectorIndex.build(IDS, VECTORS, DIM).to_bytes())


def exact_top(queries: np.ndarray, k: int = 10) -> np.ndarray:
    exact = faiss.IndexFlatIP(DIM)
    exact.add(VECTORS)
    return IDS[exact.search(queries, k)[1]]


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(t) & set(f)) / len(t) for t, f in zip(truth, found)]))


def test_the_size_chooses_the_compressed_kind_and_the_manifest_describes_it(built):
    index = VectorIndex.from_bytes(built)
    assert vector_index.choose_kind(COUNT) == index.kind == "ivfpq"
    described = index.describe()
    assert described["kind"] == "ivfpq" and described["pq_m"] == DIM // 8
    assert described["nlist"] >= 1 and described["nprobe"] == vector_index.COMPRESSED_NPROBE
    assert not index.needs_rebuild()
    assert vector_index.choose_kind(1500) == "ivf" and vector_index.choose_kind(999) == "flat"


def test_recall_at_10_against_exact_search_is_at_least_095(built):
    queries = clustered(100, seed=1)
    _, found = VectorIndex.from_bytes(built).search(queries, 10)
    assert recall(exact_top(queries), found) >= 0.95


def test_re_ranking_is_what_makes_it_exact(built):
    """Scores are the exact inner products, not PQ's estimates."""
    index = VectorIndex.from_bytes(built)
    scores, found = index.search(VECTORS[:5], 3)
    assert found[:, 0].tolist() == IDS[:5].tolist()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_a_file_is_read_memory_mapped_and_answers_alike(built, tmp_path):
    path = tmp_path / "images.faiss"
    path.write_bytes(built)
    mapped = VectorIndex.load(path)
    assert isinstance(mapped.exact.vectors, np.memmap)
    queries = clustered(20, seed=2)
    in_memory = VectorIndex.from_bytes(built).search(queries, 10)
    assert np.array_equal(mapped.search(queries, 10)[1], in_memory[1])


def test_a_filter_returns_only_allowed_ids(built):
    allowed = IDS[::7]
    _, found = VectorIndex.from_bytes(built).search(clustered(10, seed=3), 10, allowed)
    returned = found[found >= 0]
    assert len(returned) and np.isin(returned, allowed).all()


def test_a_delete_removes_from_the_codes_and_the_exact_vectors(built):
    index = VectorIndex.from_bytes(built)
    assert index.remove(IDS[:10].tolist() + [10**9]) == 10
    _, found = index.search(VECTORS[:10], 5)
    assert not np.isin(found, IDS[:10]).any()
    assert index.count == COUNT - 10 and len(index.exact.ids) == COUNT - 10
    assert index.internal_problem() is None


def test_added_vectors_are_found_and_survive_a_round_trip(built):
    index = VectorIndex.from_bytes(built)
    index.add(np.array([1, 10**6]), clustered(2, seed=4))
    again = VectorIndex.from_bytes(index.to_bytes())
    _, found = again.search(clustered(2, seed=4), 1)
    assert found[:, 0].tolist() == [1, 10**6]
    assert np.array_equal(again.exact.ids, np.sort(again.ids()))


# -- in an index directory: store, search, doctor ---------------------------------------------
def commit_index(root: Path, built: bytes) -> Path:
    """An images table of the clustered vectors, committed with its compressed FAISS file."""
    schema = images_schema(DIM)
    given = {"id": IDS, "path": [f"/photos/{i}.jpg" for i in IDS], "width": IDS % 90,
             "embedding": list(VECTORS)}
    table = pa.table({f.name: pa.array(given[f.name], f.type) if f.name in given
                      else pa.nulls(COUNT, f.type) for f in schema}, schema=schema)
    with store.StoreWriter(root) as writer:
        writer.initialise(EncoderInfo("test-tiny", DIM, 32, "synthetic"))
        writer.manifest = store.replace(writer.manifest, next_id=int(IDS[-1]) + 1)
        index = VectorIndex.from_bytes(built)
        writer.commit({"images": store.TableChange(add=table)}, {"images": index.to_bytes()},
                      {"images": index.describe()})
    return root


def faiss_path(root: Path) -> Path:
    return root / store.read_manifest(root).tables["images"].faiss


def test_search_with_where_on_a_compressed_index(built, tmp_path):
    root = commit_index(tmp_path / "idx", built)
    assert store.read_manifest(root).tables["images"].index["kind"] == "ivfpq"
    assert check_index(root).healthy
    hits = Index(root).search(vector=VECTORS[0], k=10, where="width < 30")
    assert hits and all(hit.width < 30 for hit in hits)


def test_a_truncated_file_is_a_typed_error_and_doctor_rebuilds_the_same_kind(built, tmp_path):
    root = commit_index(tmp_path / "idx", built)
    path = faiss_path(root)
    path.write_bytes(path.read_bytes()[:-4096])
    with pytest.raises(IndexFormatError, match="truncated"):
        store.read_vectors(root, store.read_manifest(root), "images")
    assert not check_index(root).healthy
    assert repair_index(root).healthy
    manifest = store.read_manifest(root)
    assert manifest.tables["images"].index["kind"] == "ivfpq"
    assert store.read_vectors(root, manifest, "images").kind == "ivfpq"


def test_doctor_notices_exact_vectors_damaged_in_place(built, tmp_path):
    """Same size, so only comparing with the shards' embeddings shows it."""
    root = commit_index(tmp_path / "idx", built)
    data = bytearray(faiss_path(root).read_bytes())
    data[-COUNT * DIM * 4:] = np.zeros(COUNT * DIM, np.float32).tobytes()
    faiss_path(root).write_bytes(bytes(data))
    report = check_index(root)
    assert any("not the stored one" in f.problem for f in report.findings)
    assert repair_index(root).healthy
