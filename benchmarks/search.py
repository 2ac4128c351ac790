"""Vector search at scale: recall against exact search, latency, throughput, build cost.

    python benchmarks/search.py                      # 100k and 1M clustered 512-d vectors
    python benchmarks/search.py --tiny               # seconds; what the test suite runs

For each size, the index kind mmindex chooses (exact below 100k, IVF-Flat above) is built
through mmindex.index.vectors.VectorIndex, and exact inner-product search on the same vectors is
the baseline: recall@10, p50/p99 of single queries, batched queries/s, build time, size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import report

from mmindex.index.vectors import VectorIndex, choose_kind


def clustered(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Normalised vectors around random centres: real embeddings cluster, uniform ones don't."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.6, (n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def latencies_ms(index, queries: np.ndarray, k: int) -> np.ndarray:
    times = []
    for query in queries:
        start = time.perf_counter()
        index.search(query[None, :], k)
        times.append((time.perf_counter() - start) * 1000)
    return np.array(times)


def measure(n: int, dim: int, n_queries: int, kind: str | None) -> dict:
    vectors = clustered(n, dim, seed=0)
    queries = clustered(n_queries, dim, seed=1)
    ids = np.arange(n, dtype=np.int64)
    start = time.perf_counter()
    index = VectorIndex.build(ids, vectors, dim, kind=kind)
    build_s = time.perf_counter() - start
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    single = latencies_ms(index, queries[:200], 10)
    start = time.perf_counter()
    index.search(queries, 10)
    qps = len(queries) / (time.perf_counter() - start)
    return {"n": n, "kind": index.kind, "recall_at_10": round(float(recall), 4),
            "p50_ms": round(float(np.percentile(single, 50)), 3),
            "p99_ms": round(float(np.percentile(single, 99)), 3), "batch_qps": round(qps, 1),
            "build_s": round(build_s, 2), "index_mb": round(len(index.to_bytes()) / 1e6, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--tiny", action="store_true", help="2k flat + 5k IVF, 64-d")
    args = parser.parse_args(argv)
    plans = [(int(s), None) for s in args.sizes.split(",")]
    if args.tiny:
        args.dim, args.queries, plans = 64, 100, [(2000, "flat"), (5000, "ivf")]
    results = [measure(n, args.dim, args.queries, kind) for n, kind in plans]
    rows = [("vectors", "kind", "recall@10", "p50 ms", "p99 ms", "batch q/s", "build s", "MB")]
    rows += [(r["n"], r["kind"], r["recall_at_10"], r["p50_ms"], r["p99_ms"], r["batch_qps"],
              r["build_s"], r["index_mb"]) for r in results]
    summary = {"dim": args.dim, "results": results,
               "chosen_kinds": {r["n"]: choose_kind(r["n"]) for r in results}}
    report(f"search ({args.dim}-d, clustered)", rows, summary)
    return summary


if __name__ == "__main__":
    main()
