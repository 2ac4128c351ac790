"""The compressed index (IVF-PQ, re-ranked exactly) beside IVF-Flat, on the same vectors.

    python benchmarks/compressed.py                  # 1M clustered 512-d vectors
    python benchmarks/compressed.py --tiny           # seconds; what the test suite runs

Both kinds are built through mmindex.index.vectors.VectorIndex, each in its own process so
its peak RSS is its own; then a fresh process opens the saved file as a search would
(store.read_vectors: an ivfpq file's exact vectors memory-mapped) and measures resident
memory, single-query p50/p99, batched queries/s and recall@10 against exact search.
Ratios are ivfpq / ivf from the same run. Peak RSS of a build includes the 2 KB x n of
generated float32 vectors it is given (2 GB at 1M x 512); a reader's RSS is split into
anonymous memory (what the index costs) and file pages (the page cache of mapped files,
which the kernel may drop). 10M x 512-d needs 20 GB of float32 to build from: more than
this 24 GB machine can spare beside its other jobs, so 10M is not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_mb, report

from mmindex.index.vectors import VectorIndex

KINDS = ("ivf", "ivfpq")
COLUMNS = ("build_s", "build_peak_rss_mb", "file_mb", "index_anon_mb", "p50_ms", "p99_ms",
           "batch_qps", "recall_at_10", "file_pages_after_queries_mb")


def clustered(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Normalised vectors around random centres, in chunks so generating 1M stays ~2 GB."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        chunk = centres[rng.integers(0, clusters, stop - start)]
        chunk += rng.normal(0, 0.6, (stop - start, dim)).astype(np.float32)
        out[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def resident_mb() -> dict:
    """This process's resident memory: anonymous (heap) and file-backed (mapped files)."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("RssAnon", "RssFile")}


def recall_at_10(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))


# -- the two phases, each run in a process of its own --------------------------------------
def build_phase(args) -> dict:
    vectors = clustered(args.n, args.dim, seed=0)
    start = time.perf_counter()
    index = VectorIndex.build(np.arange(args.n, dtype=np.int64), vectors, args.dim, kind=args.kind)
    build_s = time.perf_counter() - start
    path = Path(args.workdir) / f"{args.kind}.faiss"
    path.write_bytes(index.to_bytes())
    return {"build_s": round(build_s, 1), "build_peak_rss_mb": round(peak_rss_mb()),
            "file_mb": round(path.stat().st_size / 1e6, 1), "describe": index.describe()}


def read_phase(args) -> dict:
    workdir = Path(args.workdir)
    queries, truth = np.load(workdir / "queries.npy"), np.load(workdir / "truth.npy")
    before = resident_mb()
    start = time.perf_counter()
    index = VectorIndex.load(workdir / f"{args.kind}.faiss")  # as store.read_vectors does
    load_s = time.perf_counter() - start
    loaded = resident_mb()
    times = []
    for query in queries[: args.single]:
        start = time.perf_counter()
        index.search(query[None, :], 10)
        times.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    _, found = index.search(queries, 10)
    batch_qps = len(queries) / (time.perf_counter() - start)
    after = resident_mb()
    result = {"load_s": round(load_s, 2),
              "index_anon_mb": round(loaded["RssAnon"] - before["RssAnon"]),
              "anon_after_queries_mb": round(after["RssAnon"] - before["RssAnon"]),
              "file_pages_after_queries_mb": round(after["RssFile"] - before["RssFile"]),
              "p50_ms": round(float(np.percentile(times, 50)), 2),
              "p99_ms": round(float(np.percentile(times, 99)), 2),
              "batch_qps": round(batch_qps, 1), "recall_at_10": round(recall_at_10(truth, found), 4)}
    if index.exact is not None:  # what the PQ codes alone find, without re-ranking
        _, alone = index.index.search(queries, 10, params=index._params(None))
        result["pq_alone_recall_at_10"] = round(recall_at_10(truth, alone), 4)
        result["sweep"] = rerank_sweep(index, queries[: args.sweep], truth[: args.sweep])
    return result


def rerank_sweep(index: VectorIndex, queries: np.ndarray, truth: np.ndarray) -> list[dict]:
    """recall@10 and ms a query (batched) for other nprobe and re-rank depths."""
    from mmindex.index import vectors

    defaults = vectors.COMPRESSED_NPROBE, vectors.RERANK_MIN, vectors.RERANK_PER_RESULT
    found = []
    for nprobe in (32, 64, 128):
        for depth in (200, 500, 1000, 2000):
            vectors.COMPRESSED_NPROBE, vectors.RERANK_MIN, vectors.RERANK_PER_RESULT = \
                nprobe, depth, 1
            start = time.perf_counter()
            _, ids = index.search(queries, 10)
            found.append({"nprobe": nprobe, "rerank": depth,
                          "recall_at_10": round(recall_at_10(truth, ids), 4),
                          "ms_per_query": round((time.perf_counter() - start) * 1000
                                                / len(queries), 2)})
    vectors.COMPRESSED_NPROBE, vectors.RERANK_MIN, vectors.RERANK_PER_RESULT = defaults
    return found


def in_own_process(phase: str, kind: str, args) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--kind", kind, "--n", str(args.n),
               "--dim", str(args.dim), "--single", str(args.single), "--sweep", str(args.sweep),
               "--workdir", args.workdir]
    env = os.environ | ({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"{phase} {kind} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the run ----------------------------------------------------------------------------------
def ground_truth(args) -> float:
    """Exact top 10 of every query, saved for the readers; returns the seconds it took."""
    vectors = clustered(args.n, args.dim, seed=0)
    queries = clustered(args.queries, args.dim, seed=1)
    start = time.perf_counter()
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    np.save(Path(args.workdir) / "queries.npy", queries)
    np.save(Path(args.workdir) / "truth.npy", truth)
    return (time.perf_counter() - start) * 1000 / len(queries)


def summarise(args, exact_ms: float, runs: dict) -> dict:
    ratios = {}
    if set(KINDS) <= set(runs):  # both kinds ran (--kinds may ask for one)
        ivf, pq = runs["ivf"], runs["ivfpq"]
        ratios = {key: round(pq[key] / ivf[key], 3) for key in COLUMNS if ivf[key]}
    return {"n": args.n, "dim": args.dim, "queries": args.queries,
            "exact_ms_per_query_batched": round(exact_ms, 2), "runs": runs,
            "ratios_ivfpq_over_ivf": ratios, "cpu": _cpu(), "threads": args.threads or "all"}


def _cpu() -> str:
    try:
        found = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    fields = dict(line.split(":", 1) for line in found.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200, help="queries timed one by one")
    parser.add_argument("--sweep", type=int, default=300,
                        help="queries for the nprobe x re-rank depth sweep of ivfpq")
    parser.add_argument("--kinds", default=",".join(KINDS), help="ivf,ivfpq or one of them")
    parser.add_argument("--threads", type=int, default=0, help="FAISS's threads (0: all)")
    parser.add_argument("--tiny", action="store_true", help="5k vectors of 64-d, one thread")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--phase", choices=("build", "read"), help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps((build_phase if args.phase == "build" else read_phase)(args)))
        return {}
    if args.tiny:
        # one thread: on a busy machine OpenMP's spinning makes a tiny k-means 20x slower
        args.n, args.dim, args.queries, args.single, args.threads = 5000, 64, 100, 50, 1
        args.sweep = 20
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        args.workdir = workdir
        exact_ms = ground_truth(args)
        runs = {kind: in_own_process("build", kind, args) | in_own_process("read", kind, args)
                for kind in args.kinds.split(",")}
    summary = summarise(args, exact_ms, runs)
    rows = [("kind", "build s", "build peak MB", "file MB", "index RAM MB", "p50 ms",
             "p99 ms", "batch q/s", "recall@10", "file pages MB")]
    rows += [(kind, *(r[key] for key in COLUMNS)) for kind, r in runs.items()]
    if summary["ratios_ivfpq_over_ivf"]:
        rows.append(("ivfpq/ivf", *(summary["ratios_ivfpq_over_ivf"].get(key, "-")
                                    for key in COLUMNS)))
    report(f"compressed index ({args.n} x {args.dim}-d, clustered; {summary['cpu']})", rows,
           summary)
    return summary


if __name__ == "__main__":
    main()
