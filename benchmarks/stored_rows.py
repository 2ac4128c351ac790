"""Finding the stored rows a re-ingest reuses (touched or moved files): store.read_matching
against the whole-table read it replaced.

    python benchmarks/stored_rows.py              # 200k x 512 in four shards, 5 files wanted
    python benchmarks/stored_rows.py --tiny       # 2k x 64; what the test suite runs

The baseline is ingest's _stored_rows before: read_table of every column (the embeddings
included), then a filter on the content hash. The wanted files were committed together (a
touched folder), so they sit in one shard; files spread over every shard would cost both
readers about the same. Both run in this process after a warm-up, best of --repeats; the
ratio is baseline / read_matching.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).parent))
from common import report
from stored_vectors import make_index

from mmindex.index import store


def whole_table(root: Path, manifest, wanted: set[str]) -> pa.Table:
    stored = store.read_table(root, manifest, "images")
    return stored.filter(pc.is_in(stored.column("sha256"), value_set=pa.array(sorted(wanted))))


def matching(root: Path, manifest, wanted: set[str]) -> pa.Table:
    return store.read_matching(root, manifest, "images", "sha256", wanted)


def best_of(reader, root: Path, manifest, wanted: set[str], repeats: int) -> tuple[float, pa.Table]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        rows = reader(root, manifest, wanted)
        times.append(time.perf_counter() - start)
    return min(times), rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--wanted", type=int, default=5, help="files whose rows are reused")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    rows, dim = (2000, 64) if args.tiny else (args.rows, args.dim)
    wanted = {f"s{rows // 2 + i}" for i in range(args.wanted)}  # make_index's hashes
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        make_index(root, rows, dim, shard_rows=max(1, rows // 4))
        for shard in sorted((root / "images").glob("*.parquet")):  # warm the page cache
            hashlib.sha256(shard.read_bytes())
        manifest = store.read_manifest(root)
        runs = {name: best_of(reader, root, manifest, wanted, args.repeats)
                for name, reader in (("whole_table", whole_table), ("read_matching", matching))}
    (base, expected), (new, found) = runs["whole_table"], runs["read_matching"]
    if not found.equals(expected) or found.num_rows != len(wanted):
        raise SystemExit("the two readers disagree: read_matching is wrong")
    summary = {"rows": rows, "dim": dim, "wanted": len(wanted),
               "seconds": {name: round(s, 4) for name, (s, _) in runs.items()},
               "speed_ratio": round(base / new, 2)}
    table = [("reader", "seconds")] + [(name, f"{s:.4f}") for name, (s, _) in runs.items()]
    report(f"stored rows of {len(wanted)} files ({rows} x {dim}, 4 shards)", table, summary)
    return summary


if __name__ == "__main__":
    main()
