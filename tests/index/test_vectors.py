import numpy as np
import pytest

from mmindex.index import vectors as vector_index
from mmindex.index.vectors import VectorIndex


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_flat_search_is_exact_and_ids_are_row_ids():
    vectors = unit_vectors(50)
    index = VectorIndex.build(np.arange(100, 150), vectors, 16)
    scores, ids = index.search(vectors[:3], 1)
    assert ids[:, 0].tolist() == [100, 101, 102] and np.allclose(scores[:, 0], 1, atol=1e-5)


def test_selector_restricts_results_to_allowed_ids():
    index = VectorIndex.build(np.arange(50), unit_vectors(50), 16)
    _, ids = index.search(unit_vectors(1, seed=9), 5, allowed_ids=np.array([3, 7]))
    assert sorted(i for i in ids[0] if i >= 0) == [3, 7]


def test_remove_and_serialise_round_trip():
    index = VectorIndex.build(np.arange(20), unit_vectors(20), 16)
    assert index.remove([0, 1, 99]) == 2
    again = VectorIndex.from_bytes(index.to_bytes())
    assert again.count == 18 and again.kind == "flat"


def test_kind_follows_size_and_ivf_rebuilds_only_when_outgrown(monkeypatch):
    monkeypatch.setattr(vector_index, "IVF_THRESHOLD", 1000)
    index = VectorIndex.build(np.arange(2000), unit_vectors(2000), 16)
    assert index.kind == "ivf" and not index.needs_rebuild()
    index.add(np.arange(2000, 3000), unit_vectors(1000, seed=1))  # 1.5x: keep the lists
    assert not index.needs_rebuild()
    index.add(np.arange(3000, 10000), unit_vectors(7000, seed=2))  # 5x: retrain
    assert index.needs_rebuild()
    small = VectorIndex.build(np.arange(10), unit_vectors(10), 16)
    small.add(np.arange(10, 1500), unit_vectors(1490, seed=3))
    assert small.kind == "flat" and small.needs_rebuild()


@pytest.mark.parametrize("count", [1, 5])
def test_k_larger_than_the_index_is_fine(count):
    index = VectorIndex.build(np.arange(count), unit_vectors(count), 16)
    _, ids = index.search(unit_vectors(1, seed=4), 10)
    assert sorted(ids[0]) == list(range(count))
