"""FAISS indexes keyed by row id: build, update, search with an id filter, (de)serialise.

The index kind follows the collection's size (autofaiss's rule of thumb, criteo/autofaiss):
exact inner product below IVF_THRESHOLD vectors, IVF-Flat above it. Both keep the row ids,
so deletions are remove_ids and a filter is an id selector inside the search."""

from __future__ import annotations

import math
from contextlib import contextmanager

import faiss
import numpy as np

IVF_THRESHOLD = 100_000
IVF_NPROBE = 32
# Below this many (query x vector) products one thread wins: OpenMP's start-up and, on a busy
# machine, waiting for a descheduled thread cost more than the scan (15 vectors: 4 ms -> 0.1).
SINGLE_THREAD_WORK = 200_000  # recall@10 ~0.995 at 1M vectors, ~1 ms a query (2-core Zen 5 EPYC)


def choose_kind(count: int) -> str:
    return "flat" if count < IVF_THRESHOLD else "ivf"


def ideal_nlist(count: int) -> int:
    """~4k lists at 1M vectors; never more than k-means can train (39 points per list)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


class VectorIndex:
    """One table's vectors; inner product on L2-normalised embeddings is cosine similarity."""

    def __init__(self, index: faiss.Index):
        self.index = index

    @classmethod
    def empty(cls, dim: int) -> VectorIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)))

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int,
              kind: str | None = None) -> VectorIndex:
        """A fresh index of the kind the count calls for (or the kind asked for)."""
        if (kind or choose_kind(len(ids))) == "flat":
            built = cls.empty(dim)
        else:
            built = cls(_trained_ivf(vectors, dim))
        built.add(ids, vectors)
        return built

    @classmethod
    def from_bytes(cls, blob: bytes) -> VectorIndex:
        return cls(faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8)))

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self.index).tobytes()

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(faiss.downcast_index(self.index), faiss.IndexIVF) else "flat"

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def describe(self) -> dict:
        """Kind and parameters, as the manifest records them."""
        if self.kind == "flat":
            return {"kind": "flat", "metric": "inner_product"}
        ivf = faiss.extract_index_ivf(self.index)
        return {"kind": "ivf", "metric": "inner_product", "nlist": int(ivf.nlist),
                "nprobe": IVF_NPROBE}

    def needs_rebuild(self) -> bool:
        """True when the collection outgrew (or shrank out of) this index: the wrong kind for
        its size, or IVF lists trained for a size 4x off. New vectors are added to the
        trained lists until then; retraining on every ingest would cost minutes at 1M."""
        if choose_kind(self.count) != self.kind:
            return True
        if self.kind == "ivf":
            nlist = faiss.extract_index_ivf(self.index).nlist
            return not 0.5 <= nlist / ideal_nlist(self.count) <= 2.0
        return False

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D)
            self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids) -> int:
        ids = np.fromiter(ids, dtype=np.int64)
        return int(self.index.remove_ids(ids)) if len(ids) else 0

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None):
        """Top-k (scores, ids) per query, (Q, k) each; -1 ids pad missing results.
        With allowed_ids the search runs over those rows only, so a filter never starves k."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)  # (Q, D)
        k = max(1, min(k, self.count)) if self.count else 1
        params = self._params(allowed_ids)
        work = len(queries) * self._scanned_per_query()
        threads = 1 if work < SINGLE_THREAD_WORK else faiss.omp_get_max_threads()
        with _omp_threads(threads):
            return self.index.search(queries, k, params=params)

    def _scanned_per_query(self) -> int:
        """Vectors one query compares against: all of them, or the probed IVF lists."""
        if self.kind == "flat":
            return self.count
        nlist = faiss.extract_index_ivf(self.index).nlist
        return self.count * min(IVF_NPROBE, nlist) // nlist

    def _params(self, allowed_ids):
        selector = None
        if allowed_ids is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed_ids, dtype=np.int64))
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=IVF_NPROBE)
        return faiss.SearchParameters(sel=selector) if selector is not None else None


@contextmanager
def _omp_threads(count: int):
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _trained_ivf(vectors: np.ndarray, dim: int) -> faiss.Index:
    nlist = ideal_nlist(len(vectors))
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = vectors[np.random.default_rng(0).permutation(len(vectors))[: nlist * 64]]
    ivf.train(np.ascontiguousarray(sample, dtype=np.float32))
    ivf.nprobe = IVF_NPROBE
    return ivf


NORM_TOLERANCE = 1e-3  # embeddings are L2-normalised float32: |norm - 1| is ~1e-7


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Per row of (N, D): finite and of unit norm, as every stored embedding must be."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    return np.isfinite(vectors).all(axis=1) & (np.abs(norms - 1.0) < NORM_TOLERANCE)
