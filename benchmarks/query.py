"""Query latency: a cold `mmindex search` process, and a warm query through the Python API.

    python benchmarks/query.py --model starter       # the sample index, as the README builds it
    python benchmarks/query.py --tiny                # seconds; what the test suite runs

Cold: the wall time of the whole command (interpreter, imports, model load, search), the
median of three runs, beside `mmindex --help` as the floor of a process start and the same
search in torch (MMINDEX_RUNTIME=torch: the full model, both towers, as before the
export existed): their ratio is the export's gain. The cache is a
temporary folder, filled by the ingest as a user's would be. Warm: one open Index, split
into text encoding and index search, median over 20 queries.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import report

from mmindex import IngestConfig, ingest, open_index

REPO = Path(__file__).resolve().parents[1]
QUERIES = ["a cat", "a cup of coffee", "a rocket", "an astronaut", "a clock", "coins",
           "a flower", "a horse", "stars in deep space", "a temple"]


def wall_seconds(command: list[str], runs: int = 3, env: dict | None = None) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def warm_split(index_dir: Path, queries: list[str]) -> dict:
    index = open_index(index_dir)
    index.search(queries[0], k=5)  # loads the model once
    encode, search = [], []
    for query in queries * 2:
        start = time.perf_counter()
        vector = index.embed_text(query)
        middle = time.perf_counter()
        index.search(vector=vector, k=10)
        encode.append(middle - start)
        search.append(time.perf_counter() - middle)
    return {"encode_ms": statistics.median(encode) * 1000,
            "search_ms": statistics.median(search) * 1000}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starter")
    parser.add_argument("--photos", type=Path, default=REPO / "sample_data" / "photos")
    parser.add_argument("--tiny", action="store_true", help="test-tiny model")
    args = parser.parse_args(argv)
    if args.tiny:
        args.model = "test-tiny"
    previous_cache = os.environ.get("MMINDEX_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MMINDEX_CACHE"] = str(Path(tmp) / "cache")  # this process and the cold ones
        index_dir = Path(tmp) / "index"
        ingest(IngestConfig(roots=(args.photos,), index_dir=index_dir, model=args.model))
        mmindex = [sys.executable, "-m", "mmindex.cli"]
        search = mmindex + ["search", "a cat", "--index", str(index_dir), "--json"]
        cold = wall_seconds(search)
        full = wall_seconds(search, env={**os.environ, "MMINDEX_RUNTIME": "torch"})
        floor = wall_seconds(mmindex + ["--help"])
        warm = warm_split(index_dir, QUERIES)
    if previous_cache is None:
        os.environ.pop("MMINDEX_CACHE")
    else:
        os.environ["MMINDEX_CACHE"] = previous_cache
    rows = [("measure", "value"), ("cold `mmindex search` s", f"{cold:.2f}"),
            ("cold search, torch model s", f"{full:.2f}"),
            ("torch / exported", f"{full / cold:.2f}x"),
            ("cold `mmindex --help` s", f"{floor:.2f}"),
            ("warm text encode ms", f"{warm['encode_ms']:.1f}"),
            ("warm index search ms", f"{warm['search_ms']:.2f}")]
    summary = {"model": args.model, "cold_search_s": round(cold, 3),
               "cold_search_full_model_s": round(full, 3), "tower_speedup": round(full / cold, 2),
               "cold_help_s": round(floor, 3), **{k: round(v, 3) for k, v in warm.items()}}
    report(f"query ({args.model})", rows, summary)
    return summary


if __name__ == "__main__":
    main()
