"""FAISS indexes keyed by row id: build, update, search with an id filter, (de)serialise.

The index kind follows the collection's size (autofaiss's rule of thumb, criteo/autofaiss):
exact inner product below IVF_THRESHOLD vectors, IVF-Flat up to COMPRESSED_THRESHOLD, and
above it IVF-PQ whose candidates are re-ranked exactly ("ivfpq", see ExactVectors). Every
kind keeps the row ids, so deletions are remove_ids and a filter is an id selector inside
the search."""

from __future__ import annotations

import math
import mmap
import struct
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from mmindex.errors import IndexFormatError

IVF_THRESHOLD = 100_000
IVF_NPROBE = 32
# Above this many vectors the float32 copies (2 KB each at 512-d: 4 GB here) leave RAM for
# a memory-mapped file and the index keeps 64-byte PQ codes (docs/decisions.md, "compressed").
COMPRESSED_THRESHOLD = 2_000_000
COMPRESSED_NPROBE = 128  # PQ lists are cheap to scan; IVF probing is what bounds recall
PQ_DIMS_PER_CODE = 8  # one 8-bit code per 8 dimensions: 64 bytes a 512-d vector
# PQ candidates re-ranked exactly, per result asked for and at least. At 1M clustered 512-d
# vectors and nprobe 128, recall@10 was 0.90 with 200, 0.973 with 500, 0.991 with 1000
# (PQ alone: 0.31), each candidate a page read: benchmarks/compressed.py's sweep.
RERANK_PER_RESULT = 50
RERANK_MIN = 500
# Below this many (query x vector) products one thread wins: OpenMP's start-up and, on a busy
# machine, waiting for a descheduled thread cost more than the scan (15 vectors: 4 ms -> 0.1).
SINGLE_THREAD_WORK = 200_000  # recall@10 ~0.995 at 1M vectors, ~1 ms a query (2-core Zen 5 EPYC)


def choose_kind(count: int) -> str:
    if count < IVF_THRESHOLD:
        return "flat"
    return "ivf" if count < COMPRESSED_THRESHOLD else "ivfpq"


def ideal_nlist(count: int) -> int:
    """~4k lists at 1M vectors; never more than k-means can train (39 points per list)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


class ExactVectors:
    """The float32 embeddings of an ivfpq index, sorted by id, for re-ranking its PQ
    candidates. Read from a file they are np.memmap views: only the pages of candidates
    ever touched are resident, and the kernel may drop them again."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        self.ids, self.vectors = ids, vectors  # (N,) int64 ascending, (N, D) float32

    @classmethod
    def empty(cls, dim: int) -> ExactVectors:
        return cls(np.empty(0, np.int64), np.empty((0, dim), np.float32))

    def with_added(self, ids: np.ndarray, vectors: np.ndarray) -> ExactVectors:
        ids = np.concatenate([self.ids, ids])
        vectors = np.concatenate([self.vectors, vectors])
        if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():  # ingest ids ascend: rarely taken
            order = np.argsort(ids, kind="stable")
            ids, vectors = ids[order], vectors[order]
        return ExactVectors(ids, vectors)

    def without(self, ids: np.ndarray) -> ExactVectors:
        keep = ~np.isin(self.ids, ids)
        return ExactVectors(self.ids[keep], self.vectors[keep])

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), D) float32 for ids this copy holds."""
        positions = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        if len(ids) and not np.array_equal(self.ids[positions], ids):
            raise IndexFormatError("the index's PQ lists name ids its exact vectors lack; "
                                   "run `mmindex doctor --repair`")
        unique, back = np.unique(positions, return_inverse=True)  # ascending: fewer page faults
        return np.asarray(self.vectors[unique])[back]

    def rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int):
        """Exact top-k (scores, ids) among each query's candidate ids, (Q, k) each."""
        scores = np.full((len(queries), k), -np.finfo(np.float32).max, np.float32)  # as FAISS pads
        ids = np.full((len(queries), k), -1, np.int64)
        for row, (query, found) in enumerate(zip(queries, candidates)):
            found = found[found >= 0]
            exact = self.lookup(found) @ query  # (C,)
            best = np.argsort(-exact, kind="stable")[:k]
            scores[row, : len(best)], ids[row, : len(best)] = exact[best], found[best]
        return scores, ids


# An ivfpq file: MAGIC, a header (FAISS bytes, count, dim), the FAISS IVF-PQ index, then the
# ids and float32 vectors of ExactVectors, each part starting on a 64-byte boundary so the
# vectors can be memory-mapped in place.
COMPRESSED_MAGIC = b"MMINDEX-IVFPQ-1\n"
_HEADER = struct.Struct("<QQQ")
_ALIGN = 64


class VectorIndex:
    """One table's vectors; inner product on L2-normalised embeddings is cosine similarity."""

    def __init__(self, index: faiss.Index, exact: ExactVectors | None = None):
        self.index = index
        self.exact = exact  # ivfpq only: what its candidates are re-ranked with

    @classmethod
    def empty(cls, dim: int) -> VectorIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)))

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int,
              kind: str | None = None) -> VectorIndex:
        """A fresh index of the kind the count calls for (or the kind asked for)."""
        kind = kind or choose_kind(len(ids))
        if kind == "flat":
            built = cls.empty(dim)
        elif kind == "ivf":
            built = cls(_trained_ivf(vectors, dim))
        else:
            built = cls(_trained_ivfpq(vectors, dim), ExactVectors.empty(dim))
        built.add(ids, vectors)
        return built

    @classmethod
    def from_bytes(cls, blob: bytes) -> VectorIndex:
        """What to_bytes wrote; damage a parser notices raises IndexFormatError or, from
        FAISS's own reader, RuntimeError."""
        if blob[: len(COMPRESSED_MAGIC)] == COMPRESSED_MAGIC:
            return cls._from_compressed(np.frombuffer(blob, dtype=np.uint8))
        return cls(faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8)))

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        """A FAISS file; an ivfpq one keeps its exact vectors memory-mapped, not read."""
        with open(path, "rb") as handle:
            compressed = handle.read(len(COMPRESSED_MAGIC)) == COMPRESSED_MAGIC
        if not compressed:
            return cls.from_bytes(Path(path).read_bytes())
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
        if hasattr(mapped._mmap, "madvise"):
            # candidates are scattered rows: a page fault should read its page, not a
            # readahead window of neighbours no query asked for
            mapped._mmap.madvise(mmap.MADV_RANDOM)
        return cls._from_compressed(mapped)

    @classmethod
    def _from_compressed(cls, data: np.ndarray) -> VectorIndex:
        """Views into `data` (bytes or a memmap): only the PQ index is copied out."""
        start = len(COMPRESSED_MAGIC)
        if len(data) < start + _HEADER.size:
            raise IndexFormatError("the file ends inside its header")
        faiss_bytes, count, dim = _HEADER.unpack(data[start: start + _HEADER.size].tobytes())
        faiss_at, ids_at, vectors_at, expected = _compressed_layout(faiss_bytes, count, dim)
        if len(data) != expected:
            raise IndexFormatError(f"it holds {len(data)} bytes where its header promises "
                                   f"{expected} (truncated or overwritten)")
        index = faiss.deserialize_index(np.array(data[faiss_at: faiss_at + faiss_bytes]))
        ids = data[ids_at: ids_at + 8 * count].view(np.int64)
        vectors = data[vectors_at:expected].view(np.float32).reshape(count, dim)
        return cls(index, ExactVectors(ids, vectors))

    def to_bytes(self) -> bytes:
        """The FAISS file's bytes (for ivfpq a bytearray, filled in place: at 1M x 512-d a
        joined copy would hold another 2 GB)."""
        if self.exact is None:
            return faiss.serialize_index(self.index).tobytes()
        pq_index = faiss.serialize_index(self.index).tobytes()
        count, dim = len(self.exact.ids), self.index.d
        faiss_at, ids_at, vectors_at, end = _compressed_layout(len(pq_index), count, dim)
        out = bytearray(end)
        header = COMPRESSED_MAGIC + _HEADER.pack(len(pq_index), count, dim)
        out[: len(header)] = header
        out[faiss_at: faiss_at + len(pq_index)] = pq_index
        np.frombuffer(out, np.int64, count, ids_at)[:] = self.exact.ids
        np.frombuffer(out, np.float32, count * dim, vectors_at).reshape(count, dim)[:] = \
            self.exact.vectors
        return out

    @property
    def kind(self) -> str:
        if self.exact is not None:
            return "ivfpq"
        return "ivf" if isinstance(faiss.downcast_index(self.index), faiss.IndexIVF) else "flat"

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def describe(self) -> dict:
        """Kind and parameters, as the manifest records them."""
        if self.kind == "flat":
            return {"kind": "flat", "metric": "inner_product"}
        ivf = faiss.extract_index_ivf(self.index)
        if self.kind == "ivf":
            return {"kind": "ivf", "metric": "inner_product", "nlist": int(ivf.nlist),
                    "nprobe": IVF_NPROBE}
        pq = faiss.downcast_index(self.index).pq
        return {"kind": "ivfpq", "metric": "inner_product", "nlist": int(ivf.nlist),
                "nprobe": COMPRESSED_NPROBE, "pq_m": int(pq.M), "pq_bits": int(pq.nbits),
                "rerank_per_result": RERANK_PER_RESULT, "rerank_min": RERANK_MIN,
                "exact_vectors": "float32, memory-mapped from the FAISS file"}

    def needs_rebuild(self) -> bool:
        """True when the collection outgrew (or shrank out of) this index: the wrong kind for
        its size, or IVF lists trained for a size 4x off. New vectors are added to the
        trained lists until then; retraining on every ingest would cost minutes at 1M."""
        if choose_kind(self.count) != self.kind:
            return True
        if self.kind != "flat":
            nlist = faiss.extract_index_ivf(self.index).nlist
            return not 0.5 <= nlist / ideal_nlist(self.count) <= 2.0
        return False

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D)
            ids = np.asarray(ids, dtype=np.int64)
            self.index.add_with_ids(vectors, ids)
            if self.exact is not None:
                self.exact = self.exact.with_added(ids, vectors)

    def remove(self, ids) -> int:
        ids = np.fromiter(ids, dtype=np.int64)
        if not len(ids):
            return 0
        if self.exact is not None:
            self.exact = self.exact.without(ids)
        return int(self.index.remove_ids(ids))

    def ids(self) -> np.ndarray:
        """Every id the index holds, in no particular order."""
        index = faiss.downcast_index(self.index)
        if hasattr(index, "id_map"):
            return faiss.vector_to_array(index.id_map).astype(np.int64)
        lists = index.invlists  # IVF: the ids live in the inverted lists
        return np.concatenate([faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                               for i in range(index.nlist)] or [np.array([], np.int64)])

    def exact_vector(self, row_id: int) -> np.ndarray | None:
        """The float32 vector kept for a row, or None where the kind keeps none (IVF-Flat
        keeps them, but reconstructing needs a direct map it does not build)."""
        if self.kind == "flat":
            return self.index.reconstruct(int(row_id))
        if self.kind == "ivfpq":
            return self.exact.lookup(np.array([row_id], np.int64))[0]
        return None

    def internal_problem(self) -> str | None:
        """Why the parts of one index disagree with each other, or None."""
        if self.kind != "ivfpq":
            return None
        if not np.array_equal(np.sort(self.ids()), np.asarray(self.exact.ids)):
            return ("its PQ lists and its exact vectors hold different ids "
                    f"({self.count} and {len(self.exact.ids)})")
        return None

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None):
        """Top-k (scores, ids) per query, (Q, k) each; -1 ids pad missing results.
        With allowed_ids the search runs over those rows only, so a filter never starves k."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)  # (Q, D)
        k = max(1, min(k, self.count)) if self.count else 1
        params = self._params(allowed_ids)
        work = len(queries) * self._scanned_per_query()
        threads = 1 if work < SINGLE_THREAD_WORK else faiss.omp_get_max_threads()
        if self.exact is None:
            with _omp_threads(threads):
                return self.index.search(queries, k, params=params)
        # PQ scores rank the true top k only roughly (recall@10 ~0.4 alone): take many
        # candidates and order them by their exact float32 vectors.
        candidates = min(self.count, max(k * RERANK_PER_RESULT, RERANK_MIN))
        with _omp_threads(threads):
            _, found = self.index.search(queries, candidates, params=params)
        return self.exact.rerank(queries, found, k)

    def _nprobe(self) -> int:
        return COMPRESSED_NPROBE if self.kind == "ivfpq" else IVF_NPROBE

    def _scanned_per_query(self) -> int:
        """Vectors one query compares against: all of them, or the probed IVF lists."""
        if self.kind == "flat":
            return self.count
        nlist = faiss.extract_index_ivf(self.index).nlist
        return self.count * min(self._nprobe(), nlist) // nlist

    def _params(self, allowed_ids):
        selector = None
        if allowed_ids is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed_ids, dtype=np.int64))
        if self.kind != "flat":
            return faiss.SearchParametersIVF(sel=selector, nprobe=self._nprobe())
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


def _trained_ivfpq(vectors: np.ndarray, dim: int) -> faiss.Index:
    """IVF lists of PQ codes of the residuals, trained on a sample (PQ's k-means needs
    ~39 points per centroid, the coarse one 64 per list: 256k at 4k lists)."""
    nlist = ideal_nlist(len(vectors))
    code_count = _pq_codes(dim)
    bits = max(1, min(8, int(math.log2(max(2, len(vectors) // 39)))))  # small test indexes
    quantizer = faiss.IndexFlatIP(dim)
    ivfpq = faiss.IndexIVFPQ(quantizer, dim, nlist, code_count, bits, faiss.METRIC_INNER_PRODUCT)
    sample_size = max(nlist * 64, 39 * 2**bits)
    sample = vectors[np.random.default_rng(0).permutation(len(vectors))[:sample_size]]
    ivfpq.train(np.ascontiguousarray(sample, dtype=np.float32))
    ivfpq.nprobe = COMPRESSED_NPROBE
    return ivfpq


def _pq_codes(dim: int) -> int:
    """Sub-quantizers: one per PQ_DIMS_PER_CODE dimensions, and a divisor of dim."""
    count = max(1, dim // PQ_DIMS_PER_CODE)
    while dim % count:
        count -= 1
    return count


def _compressed_layout(faiss_bytes: int, count: int, dim: int) -> tuple[int, int, int, int]:
    """Where an ivfpq file's FAISS index, ids and vectors start, and where it ends."""
    faiss_at = _aligned(len(COMPRESSED_MAGIC) + _HEADER.size)
    ids_at = _aligned(faiss_at + faiss_bytes)
    vectors_at = _aligned(ids_at + 8 * count)
    return faiss_at, ids_at, vectors_at, vectors_at + 4 * count * dim


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


NORM_TOLERANCE = 1e-3  # embeddings are L2-normalised float32: |norm - 1| is ~1e-7


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Per row of (N, D): finite and of unit norm, as every stored embedding must be."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    return np.isfinite(vectors).all(axis=1) & (np.abs(norms - 1.0) < NORM_TOLERANCE)
