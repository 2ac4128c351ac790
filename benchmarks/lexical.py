"""Lexical search cost: building BM25 over N passages (search/lexical.py) and querying it,
against exact vector search over the same N as the baseline.

    python benchmarks/lexical.py                    # 10k and 100k passages
    python benchmarks/lexical.py --tiny             # seconds; what the test suite runs

The BM25 index is built from the stored texts on a generation's first lexical or hybrid
query and kept in memory with that generation (docs/decisions.md, "Lexical search"), so its
build time is what that first query pays; later queries pay the query time.
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

from mmindex.search.lexical import LexicalIndex

WORDS = ("invoice", "total", "amount", "due", "payment", "order", "customer", "street",
         "service", "hours", "consulting", "delivery", "tax", "net", "gross", "date",
         "account", "bank", "reference", "quantity", "unit", "price", "description")


def passages(n: int, seed: int) -> list[str]:
    """Invoice-like passages of ~40 tokens: words of a small vocabulary, names and amounts."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS + tuple(f"name{i}" for i in range(5000)))
    texts = []
    for _ in range(n):
        chosen = rng.choice(words, 30)
        amounts = [f"{rng.integers(1, 99_999):,}.{rng.integers(0, 100):02d}" for _ in range(6)]
        texts.append(" ".join([*chosen, *amounts]))
    return texts


def median_ms(run, queries) -> float:
    times = []
    for query in queries:
        start = time.perf_counter()
        run(query)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def measure(n: int, n_queries: int, dim: int) -> dict:
    texts = passages(n, seed=0)
    start = time.perf_counter()
    index = LexicalIndex(np.arange(n), texts)
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(1)
    queries = [" ".join(texts[int(i)].split()[-2:]) for i in rng.integers(0, n, n_queries)]
    lexical_ms = median_ms(lambda q: index.search(q, 10), queries)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    vector_ms = median_ms(lambda q: exact.search(q[None, :], 10), vectors[:n_queries])
    return {"passages": n, "build_s": round(build_s, 2), "lexical_query_ms": round(lexical_ms, 3),
            "vector_query_ms": round(vector_ms, 2),
            "lexical_vs_vector": round(lexical_ms / max(vector_ms, 1e-6), 4)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--tiny", action="store_true", help="500 passages, 64-d")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.tiny:
        sizes, args.queries, args.dim = [500], 20, 64
    results = [measure(n, args.queries, args.dim) for n in sizes]
    rows = [("passages", "BM25 build s", "BM25 query ms", "flat vector query ms", "ratio")]
    rows += [(r["passages"], r["build_s"], r["lexical_query_ms"], r["vector_query_ms"],
              r["lexical_vs_vector"]) for r in results]
    summary = {"results": results}
    report("BM25 over passages (search/lexical.py) vs exact vector search", rows, summary)
    return summary


if __name__ == "__main__":
    main()
