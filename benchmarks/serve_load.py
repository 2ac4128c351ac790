"""Load on `mmindex serve`: bursts of concurrent text searches from a local client.

    python benchmarks/serve_load.py                          # sample_data/photos, test-tiny
    python benchmarks/serve_load.py --concurrency 100 --rounds 5
    python benchmarks/serve_load.py --index DIR              # an existing index instead

Builds an index of the photos (unless --index), starts the real server with the CLI
(`mmindex serve`) in its own process on a free loopback port, then sends --rounds bursts of
--concurrency simultaneous GET /api/search requests (varied queries, k=10) from one asyncio
client, after --sequential searches sent one at a time (the latency without queueing). Prints failures (any non-200 or transport error), latency percentiles and
throughput, then one JSON line. The client shares the machine's cores with the server, so
the figures are an upper bound on what a remote client would see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
QUERIES = ["a cat", "a rocket launch", "a cup of coffee", "an astronaut", "old coins",
           "a flower", "a photographer with a camera", "a pagoda", "stars in deep space",
           "a wall clock", "a horse", "cells under a microscope"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=REPO / "sample_data" / "photos")
    parser.add_argument("--model", default="test-tiny")
    parser.add_argument("--index", type=Path, help="use this index instead of building one")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--sequential", type=int, default=100,
                        help="first, this many searches one at a time: the uncontended latency")
    return parser.parse_args()


def build_index(photos: Path, model: str, where: Path) -> Path:
    from mmindex import IngestConfig, ingest

    summary = ingest(IngestConfig(roots=(photos,), index_dir=where, model=model,
                                  executor="local"))
    print(f"indexed {summary.added} files of {photos} with {model} -> {where}")
    return where


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(index: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "mmindex.cli", "serve", "--index", str(index),
               "--port", str(port)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_until_ready(base: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/api/status", timeout=2).json().get("ready"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not become ready")


async def one_search(client: httpx.AsyncClient, query: str, k: int) -> tuple[float, str | None]:
    started = time.perf_counter()
    try:
        response = await client.get("/api/search", params={"q": query, "k": k})
        failure = None if response.status_code == 200 and response.json()["hits"] else (
            f"{response.status_code}: {response.text[:200]}")
    except httpx.HTTPError as exc:
        failure = f"{type(exc).__name__}: {exc}"
    return time.perf_counter() - started, failure


async def bursts(base: str, concurrency: int, rounds: int, k: int, sequential: int):
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        for query in QUERIES[:3]:  # warm-up: model, DuckDB, first connections
            await one_search(client, query, k)
        alone = [await one_search(client, QUERIES[i % len(QUERIES)], k) for i in range(sequential)]
        results, started = [], time.perf_counter()
        for _ in range(rounds):
            burst = [one_search(client, QUERIES[i % len(QUERIES)], k) for i in range(concurrency)]
            results += await asyncio.gather(*burst)
        return alone, results, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(alone, results, seconds: float, args) -> dict:
    latencies = [latency * 1000 for latency, _ in results]
    failures = [failure for _, failure in alone + results if failure]
    alone_ms = [latency * 1000 for latency, _ in alone] or [float("nan")]
    summary = {"requests": len(results), "failures": len(failures),
               "concurrency": args.concurrency, "rounds": args.rounds,
               "p50_ms": round(percentile(latencies, 50), 1),
               "p90_ms": round(percentile(latencies, 90), 1),
               "p99_ms": round(percentile(latencies, 99), 1),
               "max_ms": round(max(latencies), 1),
               "mean_ms": round(statistics.fmean(latencies), 1),
               "requests_per_s": round(len(results) / seconds, 1), "cpus": os.cpu_count(),
               "sequential": len(alone), "sequential_p50_ms": round(percentile(alone_ms, 50), 1),
               "sequential_p99_ms": round(percentile(alone_ms, 99), 1),
               "load_average_1m": round(os.getloadavg()[0], 1)}
    print(f"{summary['requests']} searches in bursts of {args.concurrency}: "
          f"{summary['failures']} failed; latency p50 {summary['p50_ms']} ms, "
          f"p90 {summary['p90_ms']} ms, p99 {summary['p99_ms']} ms, max {summary['max_ms']} ms; "
          f"{summary['requests_per_s']} searches/s on {summary['cpus']} CPUs "
          f"(load average {summary['load_average_1m']}); one at a time: p50 "
          f"{summary['sequential_p50_ms']} ms, p99 {summary['sequential_p99_ms']} ms")
    for failure in failures[:5]:
        print(f"  failed: {failure}")
    return summary


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="mmindex-load-") as scratch:
        index = args.index or build_index(args.photos, args.model, Path(scratch) / "idx")
        port = free_port()
        server = start_server(index, port)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_ready(base, server)
            alone, results, seconds = asyncio.run(
                bursts(base, args.concurrency, args.rounds, args.k, args.sequential))
            print(json.dumps(report(alone, results, seconds, args)))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
