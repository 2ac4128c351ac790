"""Reading a table's stored embeddings: store.stored_vectors against the per-row read.

    python benchmarks/stored_vectors.py              # 200k x 512 in four shards
    python benchmarks/stored_vectors.py --tiny       # 2k x 64; what the test suite runs

The baseline is how duplicates, the search side's tiles and ingest's copies of tiles read
the embeddings before: read_table, then np.stack over a per-row object array. Each reader
runs in a fresh child process (peak RSS is per process) after a warm-up (the files read
once into the page cache, a little of one shard by both paths in the child); the ratios are
baseline / stored_vectors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import report

CHILD = """
import hashlib, json, sys, time
from pathlib import Path
sys.path.insert(0, {bench!r})
import numpy as np
from common import peak_rss_mb
from mmindex.index import store
root = Path({index!r})
manifest = store.read_manifest(root)
first = manifest.tables["images"].shards[0]  # warm-up: first-call costs out of both timings
store.read_shard(root, first, ["id"])
next(store.shard_vectors(root, first, 1))
start = time.perf_counter()
if {reader!r} == "per_row":
    stored = store.read_table(root, manifest, "images", ["id", "embedding"])
    ids = stored.column("id").to_numpy()
    vectors = np.stack(stored.column("embedding").to_numpy(zero_copy_only=False))
else:
    ids, vectors = store.stored_vectors(root, manifest, "images")
seconds, peak = time.perf_counter() - start, peak_rss_mb()  # before the digest's buffers
digest = hashlib.sha256(np.ascontiguousarray(ids, np.int64))
digest.update(np.ascontiguousarray(vectors, np.float32))
print(json.dumps({{"seconds": seconds, "peak_rss_mb": peak, "sha256": digest.hexdigest()}}))
"""


def make_index(root: Path, rows: int, dim: int, shard_rows: int) -> None:
    """`rows` random unit vectors in shards of `shard_rows`, through the store's commit."""
    from mmindex.index import store
    from mmindex.models.encoder import EncoderInfo

    rng = np.random.default_rng(0)
    with store.StoreWriter(root) as writer:
        writer.initialise(EncoderInfo("bench", dim, 32, "0" * 16))
        for start in range(0, rows, shard_rows):
            ids = range(start, min(start + shard_rows, rows))
            meta = [{"id": i, "path": f"/p/{i}.jpg", "size": 1, "mtime_ns": 1, "sha256": f"s{i}"}
                    for i in ids]
            vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            table = store.rows_to_table("images", meta, vectors, dim)
            writer.commit({"images": store.TableChange(add=table)}, {})


def read_in_child(index: Path, reader: str) -> dict:
    code = CHILD.format(bench=str(Path(__file__).parent), index=str(index), reader=reader)
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    rows, dim = (2000, 64) if args.tiny else (args.rows, args.dim)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        make_index(index, rows, dim, shard_rows=max(1, rows // 4))
        for shard in sorted((index / "images").glob("*.parquet")):  # warm the page cache
            hashlib.sha256(shard.read_bytes())
        runs = {reader: read_in_child(index, reader) for reader in ("per_row", "stored_vectors")}
    if runs["per_row"]["sha256"] != runs["stored_vectors"]["sha256"]:
        raise SystemExit("the two readers disagree: stored_vectors is wrong")
    base, new = runs["per_row"], runs["stored_vectors"]
    summary = {"rows": rows, "dim": dim,
               "seconds": {r: round(v["seconds"], 3) for r, v in runs.items()},
               "peak_rss_mb": {r: round(v["peak_rss_mb"], 1) for r, v in runs.items()},
               "speed_ratio": round(base["seconds"] / new["seconds"], 2),
               "memory_ratio": round(base["peak_rss_mb"] / new["peak_rss_mb"], 2)}
    table = [("reader", "seconds", "peak RSS MB")] + [
        (r, f"{v['seconds']:.2f}", f"{v['peak_rss_mb']:.0f}") for r, v in runs.items()]
    report(f"stored embeddings ({rows} x {dim}, 4 shards)", table, summary)
    return summary


if __name__ == "__main__":
    main()
