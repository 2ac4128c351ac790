"""mmindex on a real two-node Ray cluster (conftest.py starts it on loopback): `ingest
--ray-address` and a `ray job submit` of pipelines/ingest.py store the same rows and vectors as
a local ingest, with work on both nodes; an encoder killed mid-job is survived, a job stopped
mid-way is completed by the next ingest; `finetune --workers 2 --ray-address` trains what a
single process trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmindex import IngestConfig, ingest, open_index
from mmindex.index.doctor import check_index
from mmindex.testing import TINY, photo, photo_exif

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # `mmindex` and `ray`, as conftest.py starts them
PHOTOS = 48
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def album(tmp_path_factory) -> Path:
    """48 photos in two folders, every third with a camera's EXIF (its metadata columns)."""
    root = tmp_path_factory.mktemp("cluster") / "album"
    for i in range(PHOTOS):
        folder = root / ("b" if i % 2 else "a")
        folder.mkdir(parents=True, exist_ok=True)
        exif = photo_exif(taken=f"2024:05:{1 + i % 28:02d} 10:00:00", make="Acme",
                          model=f"C{i}", gps=(48.1 + i / 100, 11.5)) if i % 3 == 0 else None
        photo(48 + 4 * i, 40 + 2 * (i % 5), i).save(
            folder / f"p{i:02d}.jpg", quality=90, **({"exif": exif} if exif else {}))
    return root


@pytest.fixture(scope="module")
def local_index(album, tmp_path_factory) -> Path:
    index = tmp_path_factory.mktemp("local") / "idx"
    ingest(IngestConfig(roots=(album,), index_dir=index, model=TINY, executor="local"))
    return index


# -- helpers ---------------------------------------------------------------------------------
def cli(cluster, *args, env: dict | None = None) -> subprocess.Popen:
    """`mmindex ARGS...` as a user runs it, in its own process (the Ray driver)."""
    return subprocess.Popen([str(BIN / "mmindex"), *map(str, args)], env=cluster.env | (env or {}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[dict, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(stdout), stderr


def contents(index_dir: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """path -> (its row without the id, its vector in the FAISS index), checking on the way
    that no path, id or vector is there twice and every row has its vector."""
    index = open_index(index_dir)
    rows = index.rows("images").to_pylist()
    vectors = index.vectors("images").index
    paths, ids = [r["path"] for r in rows], [r["id"] for r in rows]
    assert len(set(paths)) == len(paths) and len(set(ids)) == len(ids), "a row twice"
    assert vectors.ntotal == len(rows), f"{vectors.ntotal} vectors for {len(rows)} rows"
    return {r["path"]: ({k: v for k, v in r.items() if k != "id"}, vectors.reconstruct(r["id"]))
            for r in rows}


def assert_same_index(index_dir: Path, reference_dir: Path) -> None:
    got, want = contents(index_dir), contents(reference_dir)
    assert got.keys() == want.keys() and len(got) == PHOTOS
    for path, (row, vector) in want.items():
        assert got[path][0] == row, path  # size, mtime, sha256, width, height, EXIF columns
        assert float(got[path][1] @ vector) >= 0.9999, path  # unit vectors: the cosine
    findings = check_index(index_dir).findings
    assert not findings, [f"{f.severity}: {f.subject}" for f in findings]  # no orphan file


def committed_rows(index_dir: Path) -> int:
    """Rows in the live generation, read from the manifest as any reader would."""
    try:
        manifest = json.loads((index_dir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # none yet
        return 0
    return manifest["tables"]["images"]["rows"]


def wait_until(condition, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def ray_job(cluster, *, driver_pid: int | None = None, submission: str | None = None):
    from ray.util.state import list_jobs

    for job in list_jobs(address=cluster.dashboard):
        if (submission and job.submission_id == submission) or (
                driver_pid and job.driver_info and str(job.driver_info.pid) == str(driver_pid)):
            return job.job_id
    return None


def actors_of(cluster, job_id: str, class_part: str) -> list:
    from ray.util.state import list_actors

    return [a for a in list_actors(address=cluster.dashboard, detail=True, limit=10_000,
                                   filters=[("job_id", "=", job_id)])
            if class_part in a.class_name]


def nodes_that_ran_data_tasks(cluster, job_id: str) -> set[str]:
    """Nodes where the job's Ray Data map work ran (encoder actors' batches, map tasks)."""
    from ray.util.state import list_tasks

    tasks = list_tasks(address=cluster.dashboard, detail=True, limit=10_000,
                       filters=[("job_id", "=", job_id)])
    return {t.node_id for t in tasks if t.node_id and "Map" in t.name
            and not t.name.endswith((".__init__", ".get_location"))}


NOISE = ("Progress bars disabled", "execution finished", "Registered dataset logger",
         "DeprecationWarning", "concurrency")


# -- ingest ----------------------------------------------------------------------------------
def test_an_ingest_through_the_cluster_matches_a_local_one(cluster, album, local_index,
                                                           tmp_path):
    index = tmp_path / "idx"
    # Ray Data waits for the whole pool before it hands out batches, so both actors get some
    process = cli(cluster, "ingest", album, "--index", index, "--model", TINY,
                  "--ray-address", cluster.address, "--actors", 2, "--actor-cpus", 1,
                  "--batch-size", 2, "--json", env={"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120"})
    summary, stderr = finish(process)
    assert (summary["executor"], summary["added"], summary["failed"]) == ("ray", PHOTOS, 0)
    assert_same_index(index, local_index)
    job = ray_job(cluster, driver_pid=process.pid)
    assert nodes_that_ran_data_tasks(cluster, job) == {cluster.head_node, cluster.worker_node}
    noisy = [line for line in stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy


def test_submitted_jobs_an_ingest_that_matches_a_local_one_and_a_repair(
        cluster, album, local_index, tmp_path):
    index = tmp_path / "job"
    ingest_job = submit(cluster, "pipelines/ingest.py", album, "--index", index,
                        "--model", TINY, "--actors", 2, "--actor-cpus", 1)
    repair_job = submit(cluster, "pipelines/repair.py", "--index", local_index)  # meanwhile
    summary = job_summary(ingest_job)
    assert (summary["executor"], summary["added"]) == ("ray", PHOTOS)
    assert_same_index(index, local_index)
    assert job_summary(repair_job)["healthy"] is True


def submit(cluster, *args) -> subprocess.Popen:
    """`ray job submit --working-dir <checkout> -- python ARGS...`, as pipelines/README.md
    says; it waits for the job and prints its output."""
    return subprocess.Popen(
        [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir",
         str(ROOT), "--", "python", *map(str, args)],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def job_summary(process: subprocess.Popen) -> dict:
    """The job's exit status checked, and its JSON summary, from among Ray's log lines."""
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return json.JSONDecoder().raw_decode(stdout[stdout.index("{\n"):])[0]


def test_an_encoder_killed_mid_job_and_the_job_stopped_lose_no_row(cluster, album, local_index,
                                                                    tmp_path):
    """SIGKILL of the encoder on the second node while it holds batches is survived (Ray Data
    restarts it and retries them); the job stopped half-way through its commits leaves a
    consistent index, and a second ingest adds exactly the rows that were missing."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    index = tmp_path / "idx"
    client = JobSubmissionClient(cluster.dashboard)
    job = client.submit_job(
        entrypoint=f"python pipelines/ingest.py {album} --index {index} --model {TINY} "
                   "--actors 2 --actor-cpus 1 --batch-size 2 --commit-every 4",
        runtime_env={"working_dir": str(ROOT), "env_vars": {
            # each batch takes the encoders 0.5 s, each commit the driver 1 s: time to act
            "MMINDEX_FAULTS": "encode.batch=sleep:0.5;store.committed=sleep:1",
            "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120"}})
    try:
        job_id = wait_until(lambda: ray_job(cluster, submission=job), "the job's driver")
        pool = wait_until(lambda: alive_pool(cluster, job_id), "an encoder on each node")
        time.sleep(1.5)  # both encoders are now in their first batches (0.5 s each, 12 each)
        victim = next(a for a in pool if a.node_id == cluster.worker_node)
        os.kill(int(victim.pid), signal.SIGKILL)
        wait_until(lambda: committed_rows(index), "the first commit")
    finally:
        client.stop_job(job)
        wait_until(lambda: client.get_job_status(job).is_terminal(), "the job to stop", 60)
    assert client.get_job_status(job) == JobStatus.STOPPED, "it finished before the stop"
    replaced = [a for a in actors_of(cluster, job_id, "MapWorker(")
                if a.actor_id == victim.actor_id and int(a.num_restarts or 0) > 0]
    assert replaced, "Ray did not restart the killed encoder"
    kept = committed_rows(index)
    assert 0 < kept < PHOTOS
    summary, _ = finish(cli(cluster, "ingest", album, "--index", index,
                            "--ray-address", cluster.address, "--json"))
    assert (summary["added"], summary["unchanged"]) == (PHOTOS - kept, kept)
    assert_same_index(index, local_index)


def alive_pool(cluster, job_id: str) -> list:
    """The job's encoder actors once one is alive on each node, else []."""
    alive = [a for a in actors_of(cluster, job_id, "MapWorker(") if a.state == "ALIVE"]
    return alive if {a.node_id for a in alive} == {cluster.head_node, cluster.worker_node} \
        else []


# -- finetune --------------------------------------------------------------------------------
def test_finetune_with_two_workers_on_the_cluster_trains_what_one_process_trains(cluster,
                                                                                   tmp_path):
    from safetensors.numpy import load_file

    from mmindex.data.shapes import write_shapes
    from mmindex.models.registry import load_encoder
    from mmindex.train.config import FinetuneConfig
    from mmindex.train.finetune import finetune

    write_shapes(tmp_path / "shapes", 40, seed=5, size=32, background="plain")
    pairs = tmp_path / "shapes" / "pairs.parquet"
    flags = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "precision": "fp32"}
    process = cli(cluster, "finetune", "--pairs", pairs, "--model", TINY, "--out",
                  tmp_path / "cluster", "--workers", 2, "--ray-address", cluster.address,
                  *[w for k, v in flags.items() for w in (f"--{k.replace('_', '-')}", v)],
                  "--json")
    # the reference, while Ray Train starts (most of its time is spent waiting)
    finetune(FinetuneConfig(pairs=pairs, out_dir=tmp_path / "single", model=TINY, **flags))
    summary, _ = finish(process)
    assert len(summary["history"]) == 1
    job = ray_job(cluster, driver_pid=process.pid)
    workers = actors_of(cluster, job, "TrainWorker")
    assert {a.node_id for a in workers} == {cluster.head_node, cluster.worker_node}
    distributed, single = (load_file(tmp_path / d / "model.safetensors")
                           for d in ("cluster", "single"))
    start = load_encoder(TINY).model.state_dict()
    assert distributed.keys() == single.keys()
    moved = max(float(np.abs(single[k] - start[k].numpy()).max()) for k in single if k in start)
    assert moved > 1e-4  # training changed the weights, so agreeing below says something
    for name, weights in single.items():
        np.testing.assert_allclose(distributed[name], weights, atol=1e-5, err_msg=name)
    loaded = load_encoder(str(tmp_path / "cluster"))  # the checkpoint is a usable model
    assert loaded.encode_texts(["a red circle"]).shape == (1, loaded.info.dim)
