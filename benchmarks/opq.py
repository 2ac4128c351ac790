"""Would an OPQ rotation before the compressed index's PQ pay? Plain IVF-PQ (as
mmindex.index.vectors trains it) against OPQ + the same IVF-PQ, on the same vectors.

    nice -n 10 python benchmarks/opq.py              # 200k clustered 512-d vectors
    python benchmarks/opq.py --n 20000 --queries 50   # a minute

Both are trained as `_trained_ivfpq` trains (4 sqrt(n) lists, 64 one-byte codes, the same
sample); the OPQ variant learns a 512 x 512 rotation first (faiss.OPQMatrix, FAISS's
"OPQ64,IVF...,PQ64") and applies it to every vector and query. Recall@10 is against exact
search: from the PQ codes alone, and re-ranked exactly from 500 candidates at nprobe 128
(the defaults of the `ivfpq` kind). Ratios are OPQ / plain from the same run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import report
from compressed import clustered, recall_at_10

from mmindex.index import vectors as kinds


def build(data: np.ndarray, rotate: bool) -> tuple[faiss.Index, float]:
    """The ivfpq kind's FAISS index, optionally behind a learned rotation; build seconds."""
    started = time.perf_counter()
    dim, n = data.shape[1], len(data)
    nlist, codes = kinds.ideal_nlist(n), kinds._pq_codes(dim)
    bits = max(1, min(8, int(math.log2(max(2, n // 39)))))
    ivfpq = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, codes, bits,
                             faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexPreTransform(faiss.OPQMatrix(dim, codes), ivfpq) if rotate else ivfpq
    sample = data[np.random.default_rng(0).permutation(n)[:max(nlist * 64, 39 * 2**bits)]]
    index.train(np.ascontiguousarray(sample))
    index.add(data)
    faiss.extract_index_ivf(index).nprobe = kinds.COMPRESSED_NPROBE
    return index, time.perf_counter() - started


def measure(index: faiss.Index, data: np.ndarray, queries: np.ndarray, truth: np.ndarray,
            candidates: int) -> dict:
    started = time.perf_counter()
    _, found = index.search(queries, candidates)  # (Q, C) row numbers, PQ-ranked
    reranked = np.empty((len(queries), 10), dtype=found.dtype)
    for i in range(0, len(queries), 50):  # (50, C, D) of candidates at a time
        rows = found[i:i + 50]
        exact = np.einsum("qd,qcd->qc", queries[i:i + 50], data[np.maximum(rows, 0)])
        exact[rows < 0] = -np.inf
        reranked[i:i + 50] = np.take_along_axis(rows, np.argsort(-exact, axis=1)[:, :10], 1)
    seconds = time.perf_counter() - started
    return {"recall_pq_only": recall_at_10(truth, found[:, :10]),
            "recall_reranked": recall_at_10(truth, reranked),
            "ms_per_query": 1000 * seconds / len(queries),
            "index_mb": faiss.serialize_index(index).nbytes / 2**20}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(2)
    data, queries = clustered(args.n, args.dim, seed=0), clustered(args.queries, args.dim, 1)
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(data)
    truth = exact.search(queries, 10)[1]
    candidates = max(10 * kinds.RERANK_PER_RESULT, kinds.RERANK_MIN)  # what k=10 re-ranks
    results = {}
    for name, rotate in (("plain", False), ("opq", True)):
        index, seconds = build(data, rotate)
        results[name] = {"build_s": seconds, **measure(index, data, queries, truth, candidates)}
        del index
    keys = ("build_s", "index_mb", "recall_pq_only", "recall_reranked", "ms_per_query")
    rows = [("", *keys)] + [(name, *(f"{r[k]:.4g}" for k in keys)) for name, r in results.items()]
    rows.append(("opq / plain", *(f"{results['opq'][k] / results['plain'][k]:.3g}"
                                  for k in keys)))
    summary = {"n": args.n, "dim": args.dim, "queries": args.queries,
               "candidates": candidates, **results}
    report(f"OPQ before IVF-PQ ({args.n} x {args.dim}-d, clustered)", rows, summary)
    return summary


if __name__ == "__main__":
    main()
