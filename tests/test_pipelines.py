"""pipelines/ingest.py submitted with `ray job submit` to a real Ray cluster on loopback
(`ray start --head`) indexes the same rows, with the same embeddings, as a local ingest."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmindex import IngestConfig, ingest
from mmindex.testing import TINY, photo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # ray, and the python the cluster's jobs run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if (Path.home() / ".ray" / "auth_token").exists():
        env["RAY_AUTH_MODE"] = "token"  # a head started with a token wants it from everyone
    gcs, dashboard = free_port(), free_port()
    subprocess.run([BIN / "ray", "start", "--head", "--node-ip-address=127.0.0.1",
                    f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True,
                   timeout=120)
    try:
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True,
                       timeout=120)


def submit(cluster, *args: str) -> dict:
    env, address = cluster
    result = subprocess.run(
        [BIN / "ray", "job", "submit", "--address", address, "--working-dir", str(ROOT),
         "--", "python", *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    start = result.stdout.index("{\n")  # the command's JSON summary, among Ray's log lines
    return json.JSONDecoder().raw_decode(result.stdout[start:])[0]


@pytest.mark.slow
def test_a_submitted_ingest_matches_a_local_one(cluster, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        photo(64 + 8 * i, 48, i).save(photos / f"p{i}.jpg")
    summary = submit(cluster, "pipelines/ingest.py", str(photos), "--index",
                     str(tmp_path / "job"), "--model", TINY)
    assert summary["executor"] == "ray" and summary["added"] == 6
    ingest(IngestConfig(roots=(photos,), index_dir=tmp_path / "local", model=TINY,
                        executor="local"))
    job, local = (embeddings(tmp_path / name) for name in ("job", "local"))
    assert job.keys() == local.keys() and len(job) == 6
    for path in job:
        assert float(job[path] @ local[path]) > 0.9999  # the same vector, up to float noise


@pytest.mark.slow
def test_a_submitted_repair_reports_the_index(cluster, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(64, 48, 0).save(photos / "p.jpg")
    ingest(IngestConfig(roots=(photos,), index_dir=tmp_path / "idx", model=TINY,
                        executor="local"))
    report = submit(cluster, "pipelines/repair.py", "--index", str(tmp_path / "idx"))
    assert report["healthy"] is True


def embeddings(index_dir: Path) -> dict[str, np.ndarray]:
    """path -> stored embedding, read from the Parquet shards as any client would."""
    import duckdb

    shards = [str(p) for p in (index_dir / "images").glob("*.parquet")]
    rows = duckdb.sql(f"SELECT path, embedding FROM read_parquet({shards!r})").fetchall()
    return {path: np.asarray(vector, dtype=np.float32) for path, vector in rows}
