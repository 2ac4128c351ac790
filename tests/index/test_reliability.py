"""Reliability: crashes at every step of a commit, full disks, concurrent readers and writers,
damaged index files, format versions, hostile corpora and --where predicates, and pickle.

The fault points of mmindex.core.faults make the crash trials fast and deterministic: each one
stops an ingest at the n-th visit of a named step, then checks that the index opens, agrees
with its FAISS files, and that a re-ingest reaches exactly what an uninterrupted run gives."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmindex.testing import TINY, photo
from mmindex import IngestConfig, ingest, open_index
from mmindex.core import faults
from mmindex.index import store
from mmindex.cli import app
from mmindex.index.doctor import _faiss_ids, check_index, repair_index
from mmindex.errors import (
    IndexFormatError,
    IndexLockedError,
    MmindexError,
    ModelError,
    UserInputError,
)
from mmindex.index.vectors import VectorIndex
from mmindex.index.schema import TABLES, VECTOR_TABLES

runner = CliRunner()
QUERY = np.ones(64, np.float32)  # a query vector of test-tiny's dimension
FORK = multiprocessing.get_context("fork")


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


# -- a corpus, a fast ingest and what "the same contents" means --------------------------------
def make_corpus(root: Path, photos: int = 7) -> Path:
    """Photos (one a byte-identical copy, one broken) and three kinds of text corpus."""
    for i in range(photos):
        sub = root / ("b" if i % 2 else "a")
        sub.mkdir(parents=True, exist_ok=True)
        photo(40 + 8 * i, 32, 200 + i).save(sub / f"p{i}.jpg", quality=85)
    (root / "a" / "copy.jpg").write_bytes((root / "a" / "p0.jpg").read_bytes())
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in
                                                ["a red square", "a blue circle", "a red square",
                                                 "green triangles"]))
    (root / "readme.txt").write_text("a whole document about shapes")
    (root / "table.csv").write_text("text,n\nfirst row,1\nsecond row,2\n")
    return root


@pytest.fixture(scope="module")
def fast_model(tiny_encoder):
    """Every ingest reuses one tiny encoder instead of building it, and fsync is skipped: a
    killed process leaves the page cache behind, so fsync matters only for power loss, which
    no trial here simulates (the slow tests, in their own processes, keep it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys.modules["mmindex.ingestion.run"], "load_for_inference",
                      lambda *a: tiny_encoder)
        patch.setattr(store, "_fsync", lambda path: None)
        patch.setattr(store.os, "fsync", lambda fd: None)
        yield tiny_encoder


@pytest.fixture(autouse=True)
def no_faults_left_armed():
    faults.REGISTRY.disarm()
    yield
    faults.REGISTRY.disarm()


def run_ingest(folder: Path, index_dir: Path):
    """Small batches and a commit per batch: many commits, so many places to crash."""
    return ingest(IngestConfig(roots=(folder,), index_dir=index_dir, model=TINY, batch_size=2,
                               commit_every=1, executor="local"))


def contents(index_dir: Path) -> dict[str, list]:
    """Every live row without its id (ids of lost work may be handed out again)."""
    manifest = store.read_manifest(index_dir)
    found = {}
    for table in TABLES:
        rows = store.read_table(index_dir, manifest, table).drop_columns(["id"]).to_pylist()
        for row in rows:
            if "embedding" in row:
                row["embedding"] = tuple(np.round(row["embedding"], 5))
        found[table] = sorted(rows, key=repr)
    return found


def assert_consistent(index_dir: Path) -> None:
    """The index opens, each FAISS file holds exactly its table's ids, and doctor agrees."""
    index = open_index(index_dir)
    for table in VECTOR_TABLES:
        ids = np.sort(index.rows(table).column("id").to_numpy())
        assert index.rows(table).num_rows == index.manifest.tables[table].rows
        assert np.array_equal(ids, np.sort(_faiss_ids(index.vectors(table))))
    errors = [f for f in check_index(index_dir).findings if f.severity == "error"]
    assert errors == []


def orphans(index_dir: Path) -> list[str]:
    return [f.subject for f in check_index(index_dir).findings if f.severity == "warning"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Shared by the module's tests, so never changed by one: see fresh_corpus."""
    return make_corpus(tmp_path_factory.mktemp("shared") / "corpus")


@pytest.fixture
def fresh_corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "corpus")


@pytest.fixture
def extra(tmp_path) -> Path:
    """One new photo: an ingest of it has to open the FAISS files."""
    (tmp_path / "extra").mkdir()
    photo(50, 50, 777).save(tmp_path / "extra" / "new.jpg")
    return tmp_path / "extra"


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory, fast_model) -> dict:
    """What an uninterrupted ingest of the corpus stores, and how often it visits each point."""
    visits = {name: 0 for name in faults.POINTS}

    def count(name):
        visits[name] += 1

    for name in faults.POINTS:
        faults.REGISTRY.arm(name, count)
    index_dir = tmp_path_factory.mktemp("reference") / "idx"
    run_ingest(corpus, index_dir)
    faults.REGISTRY.disarm()
    return {"contents": contents(index_dir), "visits": visits, "index": index_dir}


# -- crash safety ----------------------------------------------------------------------------
def crash_positions(visits: int) -> list[int]:
    """First, thirds and last visit of a point: deterministic, and spread over the run."""
    return sorted({0, visits // 3, 2 * visits // 3, visits - 1})


def test_every_point_is_visited_by_an_ingest(reference):
    assert all(reference["visits"][name] > 0 for name in faults.POINTS), reference["visits"]
    trials = sum(len(crash_positions(n)) for n in reference["visits"].values())
    assert trials >= 20


@pytest.mark.parametrize("point", faults.POINTS)
def test_a_crash_at_any_step_leaves_a_consistent_index_that_reingest_completes(
        point, reference, corpus, tmp_path):
    for skip in crash_positions(reference["visits"][point]):
        index_dir = tmp_path / f"crash-{skip}"
        with (faults.REGISTRY.armed(point, faults.crash(after=skip)),
              pytest.raises(faults.SimulatedCrash)):
            run_ingest(corpus, index_dir)
        if (index_dir / store.MANIFEST).exists():
            assert_consistent(index_dir)  # what the crash left is usable as it is
        else:  # killed while writing the very first manifest: nothing was committed
            assert not store.data_files(index_dir)
        run_ingest(corpus, index_dir)
        assert contents(index_dir) == reference["contents"], f"{point} after {skip}"
        assert_consistent(index_dir)
        assert orphans(index_dir) == []


def _ingest_and_die(point: str, skip: int, corpus: Path, index_dir: Path) -> None:
    import torch

    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP pool
    faults.REGISTRY.arm(point, faults.die(after=skip))
    run_ingest(corpus, index_dir)
    os._exit(0)  # reached only if the point never fired


@pytest.mark.parametrize("point", faults.POINTS)
def test_a_process_that_dies_at_a_step_without_any_cleanup(point, reference, corpus, tmp_path):
    """os._exit in a forked child: no finally, no lock release, no flush; like SIGKILL."""
    index_dir = tmp_path / "died"
    skip = reference["visits"][point] // 2
    child = FORK.Process(target=_ingest_and_die, args=(point, skip, corpus, index_dir))
    child.start()
    child.join(120)
    assert child.exitcode == 137
    assert_consistent(index_dir)
    assert f"process {child.pid}" in (index_dir / store.LOCK).read_text()  # its stale lock
    run_ingest(corpus, index_dir)  # ...is recovered
    assert contents(index_dir) == reference["contents"]
    assert orphans(index_dir) == []


KILL_SCRIPT = """
import sys
from mmindex import IngestConfig, ingest
from mmindex.core import faults
point, skip, corpus, index_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if point != "none":
    faults.REGISTRY.arm(point, faults.sigkill(after=skip))
ingest(IngestConfig(roots=(corpus,), index_dir=index_dir, model="test-tiny", batch_size=2,
                    commit_every=1, executor="local"))
"""


def _ingest_process(tmp_path, corpus, index_dir, point="none", skip=0) -> subprocess.Popen:
    script = tmp_path / "kill_script.py"
    script.write_text(KILL_SCRIPT)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), point, str(skip), str(corpus),
                             str(index_dir)], env=env, stderr=subprocess.PIPE)


def ingest_in_process(tmp_path, corpus, index_dir) -> None:
    """The slow tests ingest only in real processes: the very model and code a user runs."""
    process = _ingest_process(tmp_path, corpus, index_dir)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()


@pytest.fixture(scope="module")
def process_reference(corpus, tmp_path_factory) -> dict:
    index_dir = tmp_path_factory.mktemp("process-reference") / "idx"
    ingest_in_process(index_dir.parent, corpus, index_dir)
    return contents(index_dir)


@pytest.mark.slow
@pytest.mark.parametrize("point", faults.POINTS)
def test_real_sigkill_at_each_step(point, reference, process_reference, corpus, tmp_path):
    index_dir = tmp_path / "killed"
    process = _ingest_process(tmp_path, corpus, index_dir, point, reference["visits"][point] // 2)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    assert_consistent(index_dir)
    ingest_in_process(tmp_path, corpus, index_dir)
    assert contents(index_dir) == process_reference
    assert orphans(index_dir) == []


def _wait_for_first_manifest(process, index_dir) -> None:
    while not (index_dir / store.MANIFEST).exists() and process.poll() is None:
        time.sleep(0.01)  # the model is loaded and the first manifest written: writes begin


def _wait_for_first_rows(process, index_dir) -> None:
    """Until the first rows are committed (generation 1): the random moments fall among the
    row commits, not in the model's warm-up before them (an exported model opens its image
    graph on the first batch, after the first manifest)."""
    _wait_for_first_manifest(process, index_dir)
    while process.poll() is None and _generation(index_dir) < 1:
        time.sleep(0.01)


def _generation(index_dir) -> int:
    try:
        return store.read_manifest(index_dir).generation
    except MmindexError:  # between a writer's rename and our read: look again
        return -1


def _writing_window(tmp_path, corpus, index_dir) -> float:
    """Seconds from an ingest's first committed rows to its exit, uninterrupted."""
    process = _ingest_process(tmp_path, corpus, index_dir)
    _wait_for_first_rows(process, index_dir)
    start = time.monotonic()
    process.wait(timeout=300)
    return time.monotonic() - start


@pytest.mark.slow
def test_real_sigkill_at_random_moments(process_reference, corpus, tmp_path):
    """An outside SIGKILL at a seeded random moment after the ingest starts writing. The
    moments are fractions of this machine's own writing window, timed on an uninterrupted
    run, so a fast machine is not let finish before the kill lands."""
    window = _writing_window(tmp_path, corpus, tmp_path / "timed")
    delays = window * np.random.default_rng(8).uniform(0.0, 0.9, size=6)
    killed, generations = 0, []
    for trial, delay in enumerate(delays):
        index_dir = tmp_path / f"random-{trial}"
        process = _ingest_process(tmp_path, corpus, index_dir)
        _wait_for_first_rows(process, index_dir)
        time.sleep(delay)
        killed += process.poll() is None
        process.kill()
        process.wait()
        if (index_dir / store.MANIFEST).exists():
            generations.append(store.read_manifest(index_dir).generation)
            assert_consistent(index_dir)
        ingest_in_process(tmp_path, corpus, index_dir)
        # rows and their embeddings (contents rounds them) as the uninterrupted run stored
        assert contents(index_dir) == process_reference, f"trial {trial}, {delay:.2f} s"
        assert orphans(index_dir) == []
    assert killed >= 4  # most kills landed while the ingest was writing
    # and not only before the first commits: some after several committed generations
    assert sum(g >= 3 for g in generations) >= 2, generations


# -- failed writes ---------------------------------------------------------------------------
@pytest.mark.parametrize("point,skip", [("store.write.midway", 0), ("store.write.midway", 4),
                                        ("store.shard.written", 0), ("store.write.synced", 3)])
def test_a_full_disk_keeps_the_previous_generation_and_names_the_cause(
        point, skip, fresh_corpus, tmp_path, fast_model):
    corpus = fresh_corpus
    index_dir = tmp_path / "idx"
    (corpus / "later").mkdir()
    photo(50, 50, 999).save(corpus / "later" / "new.jpg")
    run_ingest(corpus / "a", index_dir)  # a first generation, from part of the corpus
    before_text = (index_dir / store.MANIFEST).read_bytes()
    with (faults.REGISTRY.armed(point, faults.disk_full(after=skip)),
          pytest.raises(store.IndexWriteError, match="No space left on device") as failure):
        run_ingest(corpus, index_dir)
    assert isinstance(failure.value, MmindexError)
    live = store.read_manifest(index_dir).generation
    assert f"unchanged at generation {live}" in str(failure.value)
    if skip == 0:  # the run's first commit failed: the manifest is byte for byte the old one
        assert (index_dir / store.MANIFEST).read_bytes() == before_text
    assert_consistent(index_dir)
    assert orphans(index_dir) == []  # the failed commit's files are already removed
    run_ingest(corpus, index_dir)  # with space again, the ingest completes
    assert_consistent(index_dir)


def test_a_full_disk_is_one_line_from_the_cli(corpus, tmp_path, fast_model):
    with faults.REGISTRY.armed("store.write.midway", faults.disk_full(after=2)):
        result = cli("ingest", corpus, "--index", tmp_path / "idx", "--model", TINY)
    assert result.exit_code == 1 and "No space left on device" in result.output


def test_a_full_disk_before_the_first_manifest(corpus, tmp_path, fast_model):
    with (faults.REGISTRY.armed("store.write.midway", faults.disk_full()),
          pytest.raises(store.IndexWriteError, match="No space left on device")):
        run_ingest(corpus, tmp_path / "idx")
    run_ingest(corpus, tmp_path / "idx")
    assert_consistent(tmp_path / "idx")



def _ingest_under_a_file_size_limit(corpus: Path, index_dir: Path, connection) -> None:
    import resource

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, not a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
    try:
        run_ingest(corpus, index_dir)
        connection.send("no error")
    except BaseException as exc:  # noqa: BLE001  (the test wants to see whatever it was)
        connection.send(f"{type(exc).__name__}: {exc}")
    os._exit(0)


def test_a_write_the_kernel_refuses_keeps_the_previous_generation(corpus, tmp_path, fast_model):
    """No hook: RLIMIT_FSIZE makes the kernel fail the writes (EFBIG), as a full disk would."""
    index_dir = tmp_path / "idx"
    run_ingest(corpus / "b", index_dir)
    before = (index_dir / store.MANIFEST).read_bytes()
    ours, theirs = FORK.Pipe()
    child = FORK.Process(target=_ingest_under_a_file_size_limit, args=(corpus, index_dir, theirs))
    child.start()
    message = ours.recv()
    child.join(60)
    assert message.startswith("IndexWriteError") and "File too large" in message, message
    assert (index_dir / store.MANIFEST).read_bytes() == before
    assert_consistent(index_dir)
    assert orphans(index_dir) == []

# -- concurrency -----------------------------------------------------------------------------
def _ingest_in_child(corpus: Path, index_dir: Path) -> None:
    import torch

    torch.set_num_threads(1)
    # Pauses between commit steps spread the generations out, so the reader surely meets
    # several, and some just after a manifest rename, while the old files are being deleted.
    faults.REGISTRY.arm("store.manifest.renamed", lambda name: time.sleep(0.05))
    faults.REGISTRY.arm("store.committed", lambda name: time.sleep(0.15))
    run_ingest(corpus, index_dir)
    os._exit(0)


def test_searches_during_commits_see_whole_generations(fresh_corpus, tmp_path, fast_model):
    """A writer process commits after every batch while this process opens and searches."""
    corpus = fresh_corpus
    index_dir = tmp_path / "idx"
    for i in range(12):
        photo(30 + i, 30, 300 + i).save(corpus / "a" / f"more{i}.jpg")
    run_ingest(corpus / "b", index_dir)
    writer = FORK.Process(target=_ingest_in_child, args=(corpus, index_dir))
    writer.start()
    seen, query = set(), np.ones(fast_model.info.dim, np.float32)
    while writer.is_alive() or len(seen) < 2:
        index = open_index(index_dir)  # must never raise, whatever the writer is doing
        for table in VECTOR_TABLES:
            rows = index.rows(table)
            assert rows.num_rows == index.manifest.tables[table].rows
            assert np.array_equal(np.sort(rows.column("id").to_numpy()),
                                  np.sort(_faiss_ids(index.vectors(table))))
        hits = index.search(vector=query, k=50)
        assert len(hits) == index.rows("images").num_rows
        report = check_index(index_dir)
        assert report.healthy, [f for f in report.findings if f.severity == "error"]
        seen.add(index.manifest.generation)
    writer.join()
    assert writer.exitcode == 0 and len(seen) >= 3, seen


def _hold_the_lock(index_dir: Path, connection) -> None:
    with store.StoreWriter(index_dir):
        connection.send("holding")
        connection.recv()  # until the test is done
    os._exit(0)


def test_a_second_writer_is_refused_with_the_holder_named(corpus, tmp_path, fast_model):
    index_dir = tmp_path / "idx"
    run_ingest(corpus / "a", index_dir)
    ours, theirs = FORK.Pipe()
    holder = FORK.Process(target=_hold_the_lock, args=(index_dir, theirs))
    holder.start()
    try:
        assert ours.recv() == "holding"
        with pytest.raises(IndexLockedError, match=f"process {holder.pid} "):
            run_ingest(corpus, index_dir)
        result = cli("ingest", corpus, "--index", index_dir, "--model", TINY)
        assert result.exit_code == 5 and f"process {holder.pid}" in result.output
    finally:
        ours.send("done")
        holder.join(30)
    run_ingest(corpus, index_dir)  # released: the next writer goes ahead


@pytest.mark.parametrize("damaged", [True, False])
def test_a_repair_waits_for_no_writer(built, damaged):
    """A healthy index too: repair used to check first and return 'healthy' without the
    lock, during an ingest."""
    if damaged:
        corrupt_faiss(built)
    ours, theirs = FORK.Pipe()
    holder = FORK.Process(target=_hold_the_lock, args=(built, theirs))
    holder.start()
    try:
        assert ours.recv() == "holding"
        result = cli("doctor", "--index", built, "--repair")
        assert result.exit_code == 5 and f"process {holder.pid}" in result.output
    finally:
        ours.send("done")
        holder.join(30)
    assert repair_index(built).healthy


@pytest.mark.slow
def test_the_lock_of_a_sigkilled_ingest_is_recovered(process_reference, corpus, tmp_path):
    index_dir = tmp_path / "idx"
    process = _ingest_process(tmp_path, corpus, index_dir, "store.manifest.renamed", 2)
    process.wait(timeout=300)
    assert process.returncode == -signal.SIGKILL
    assert f"process {process.pid}" in (index_dir / store.LOCK).read_text()
    ingest_in_process(tmp_path, corpus, index_dir)
    assert contents(index_dir) == process_reference


# -- damaged indexes -------------------------------------------------------------------------
@pytest.fixture
def built(reference, tmp_path) -> Path:
    """A copy of the reference index of the shared corpus, to damage."""
    return Path(shutil.copytree(reference["index"], tmp_path / "idx"))


def first_shard(index_dir: Path, table: str = "images") -> Path:
    return index_dir / store.read_manifest(index_dir).tables[table].shards[0]


def faiss_file(index_dir: Path, table: str = "images") -> Path:
    return index_dir / store.read_manifest(index_dir).tables[table].faiss


def truncate_manifest(index_dir):
    path = index_dir / store.MANIFEST
    path.write_bytes(path.read_bytes()[:100])


def delete_manifest(index_dir):
    (index_dir / store.MANIFEST).unlink()


def delete_shard(index_dir):
    first_shard(index_dir).unlink()


def corrupt_shard(index_dir):
    path = first_shard(index_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2:] = b"\x00" * (len(data) - len(data) // 2)
    path.write_bytes(bytes(data))


def swap_faiss(index_dir):
    faiss_file(index_dir, "images").write_bytes(faiss_file(index_dir, "texts").read_bytes())


def corrupt_faiss(index_dir):
    faiss_file(index_dir).write_bytes(b"not a faiss index at all")


def delete_faiss(index_dir):
    faiss_file(index_dir).unlink()


DAMAGE = {  # damage -> what every command must say about it
    "truncated manifest": (truncate_manifest, "damaged"),
    "missing shard": (delete_shard, "missing"),
    "corrupt shard": (corrupt_shard, "damaged"),
    "mismatched FAISS": (swap_faiss, "does not match"),
    "corrupt FAISS": (corrupt_faiss, "damaged"),
    "missing FAISS": (delete_faiss, "missing"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_is_reported_clearly_by_every_command(damage, built, extra):
    make, words = DAMAGE[damage]
    make(built)
    for command in (["search", "a photo"], ["info"], ["ingest", extra, "--model", TINY]):
        result = cli(*command, "--index", built)
        assert result.exit_code == 4, (command, result.output)
        assert words in result.output and "mmindex doctor" in result.output, result.output
    with pytest.raises(IndexFormatError, match=words):
        open_index(built)
    result = cli("doctor", "--index", built)
    assert result.exit_code == 4 and words in result.output and "--repair" in result.output


def refuse_to_encode(monkeypatch):
    """Repairs must come from stored embeddings: building a model would mean re-encoding."""
    from mmindex.models import registry

    def refuse(spec):
        raise AssertionError("doctor tried to load a model")

    monkeypatch.setattr(registry, "load_encoder", refuse)


@pytest.mark.parametrize("damage", ["mismatched FAISS", "corrupt FAISS", "missing FAISS",
                                    "truncated manifest"])
def test_repair_restores_exactly_what_was_lost_without_encoding(damage, built, monkeypatch):
    before = contents(built)
    hits_before = [h.to_dict() for h in open_index(built).search(vector=QUERY, k=5)]
    DAMAGE[damage][0](built)
    refuse_to_encode(monkeypatch)
    result = cli("doctor", "--index", built, "--repair", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["healthy"] and report["repaired"] and report["findings"] == []
    assert contents(built) == before
    assert [h.to_dict() for h in open_index(built).search(vector=QUERY, k=5)] == hits_before


def test_a_deleted_manifest_is_not_silently_replaced_by_an_empty_index(built, corpus,
                                                                       monkeypatch):
    before = contents(built)
    delete_manifest(built)
    with pytest.raises(IndexFormatError, match="doctor --repair"):
        run_ingest(corpus, built)  # a fresh index would have collected every shard as garbage
    refuse_to_encode(monkeypatch)
    assert repair_index(built).healthy
    assert contents(built) == before


def test_manifest_rebuild_prefers_the_newest_rows_over_a_killed_writers_leftovers(
        fresh_corpus, tmp_path, fast_model):
    """A killed commit left a rewritten shard beside the live one; the manifest is then lost."""
    corpus, built = fresh_corpus, tmp_path / "idx"
    run_ingest(corpus, built)
    photo(90, 20, 4242).save(corpus / "a" / "p0.jpg")  # changed: its row is rewritten
    with (faults.REGISTRY.armed("store.write.synced", faults.crash(after=2)),
          pytest.raises(faults.SimulatedCrash)):
        run_ingest(corpus, built)
    delete_manifest(built)
    assert repair_index(built).healthy
    assert_consistent(built)
    rows = open_index(built).rows("images").to_pylist()
    assert len({r["path"] for r in rows}) == len(rows)  # no file twice
    run_ingest(corpus, built)
    run_ingest(corpus, built.parent / "fresh")
    assert contents(built) == contents(built.parent / "fresh")


@pytest.mark.parametrize("damage", ["missing shard", "corrupt shard"])
def test_a_lost_shard_is_dropped_and_its_files_reencoded_by_the_next_ingest(
        damage, built, corpus, fast_model):
    before = contents(built)
    DAMAGE[damage][0](built)
    report = repair_index(built)
    assert report.healthy and any("re-encodes" in action for action in report.repaired)
    assert_consistent(built)
    summary = run_ingest(corpus, built)
    assert summary.added > 0
    assert contents(built) == before
    if damage == "corrupt shard":
        assert list((built / "damaged").iterdir())  # kept for a person to look at


def test_doctor_notices_a_faiss_file_with_the_right_ids_but_wrong_vectors(built):
    manifest = store.read_manifest(built)
    ids = store.read_table(built, manifest, "images", ["id"]).column("id").to_numpy()
    impostor = VectorIndex.empty(manifest.model.dim)
    impostor.add(ids, np.random.default_rng(0).normal(size=(len(ids), manifest.model.dim)))
    faiss_file(built).write_bytes(impostor.to_bytes())
    report = check_index(built)
    assert not report.healthy and "not the stored one" in report.findings[0].problem
    assert repair_index(built).healthy


def test_doctor_on_a_healthy_index_and_on_no_index(built, tmp_path):
    result = cli("doctor", "--index", built)
    assert result.exit_code == 0 and "healthy" in result.output
    assert cli("doctor", "--index", tmp_path / "nothing").exit_code == 4


# -- format versions -------------------------------------------------------------------------
def set_format_version(index_dir: Path, version) -> None:
    data = json.loads((index_dir / store.MANIFEST).read_text())
    data["format_version"] = version
    (index_dir / store.MANIFEST).write_text(json.dumps(data))


def test_a_newer_format_is_refused_by_every_command(built, extra):
    set_format_version(built, 99)
    for command in (["search", "x"], ["info"], ["ingest", extra, "--model", TINY], ["doctor"]):
        result = cli(*command, "--index", built)
        assert result.exit_code == 4 and "newer mmindex (format 99" in result.output, command


@pytest.mark.parametrize("version", [0, -1, "1", 1.5, True, None])
def test_an_invalid_format_version_is_refused_not_guessed(built, version):
    set_format_version(built, version)
    result = cli("info", "--index", built)
    assert result.exit_code == 4 and "format version" in result.output


def test_an_older_format_is_migrated_step_by_step_or_refused(built, monkeypatch, extra):
    monkeypatch.setattr(store, "FORMAT_VERSION", 3)  # pretend this mmindex reads format 3
    result = cli("info", "--index", built)
    assert result.exit_code == 4 and "cannot migrate" in result.output
    steps = []

    def step(version):
        def migrate(data):
            steps.append(version)
            return data | {"format_version": version + 1}
        return migrate

    monkeypatch.setattr(store, "MIGRATIONS", {1: step(1), 2: step(2)})
    assert store.read_manifest(built).format_version == 3 and steps == [1, 2]
    run_ingest(extra, built)  # the next commit saves the migrated manifest in the new format
    assert json.loads((built / store.MANIFEST).read_text())["format_version"] == 3


# -- hostile corpora -------------------------------------------------------------------------
def write_hostile_corpus(root: Path) -> None:
    root.mkdir()
    (root / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    (root / "broken.jsonl").write_bytes(b'{"text": "caf\xe9"}\n\xff\xfe\n{"text": "ok"}\n')
    (root / "types.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in
                                                [None, 3, ["a"], {"a": 1}, True, "", "  ",
                                                 "typed"]) + "\n[1, 2]\n\"text\"\n")
    (root / "surrogate.jsonl").write_text('{"text": "half \\ud800 a pair"}\n')
    (root / "nested.jsonl").write_text('{"text": "kept"}\n' + "[" * 50_000 + "\n")
    (root / "missing.csv").write_text("caption\nhello\n")
    (root / "sparse.csv").write_text("n,text\n1\n2,\n3,present\n")
    (root / "long.jsonl").write_text(json.dumps({"text": "word " * 1_000_000}))  # a 5 MB line
    (root / "huge.csv").write_text("text\n" + "x" * (17 << 20))  # past csv's field limit
    for name in ["empty.txt", "empty.md", "empty.jsonl", "empty.csv", "empty.parquet"]:
        (root / name).write_bytes(b"")
    pq.write_table(pa.table({"text": [1, 2]}), root / "numbers.parquet")


def test_hostile_corpora_ingest_what_is_usable_and_report_the_rest(tmp_path, fast_model):
    write_hostile_corpus(tmp_path / "texts")
    summary = run_ingest(tmp_path / "texts", tmp_path / "idx")
    index = open_index(tmp_path / "idx")
    texts = {Path(r["path"]).name: r["text"] for r in index.rows("texts").to_pylist()
             if r["path"].endswith(("latin1.txt", "surrogate.jsonl", "nested.jsonl"))}
    assert texts == {"latin1.txt": "café crème", "surrogate.jsonl": "half \ufffd a pair",
                     "nested.jsonl": "kept"}
    by_file = {}
    for row in index.rows("texts").to_pylist():
        by_file.setdefault(Path(row["path"]).name, []).append(row["text"])
    assert by_file["types.jsonl"] == ["typed"] and by_file["sparse.csv"] == ["present"]
    assert sorted(by_file["broken.jsonl"]) == ["café", "ok"]
    assert len(by_file["long.jsonl"][0]) == 20_000  # MAX_DOCUMENT_CHARS
    failed = {Path(e.path).name: e.reason for e in summary.errors}
    no_text = {"empty.txt", "empty.md", "empty.jsonl", "numbers.parquet"}  # reported once
    assert set(failed) == {"missing.csv", "huge.csv", "empty.csv", "empty.parquet"} | no_text
    assert "no 'text' column" in failed["missing.csv"] and "malformed CSV" in failed["huge.csv"]
    assert all("holds no text" in failed[name] for name in no_text)
    assert_consistent(tmp_path / "idx")


# -- --where ---------------------------------------------------------------------------------
@pytest.mark.parametrize("where,message", [
    ("width >", "not a usable predicate"),
    ("no_such_column = 1", "not a usable predicate"),
    ("id IN (SELECT 1 FROM read_csv('/etc/passwd'))", "not a usable predicate"),
    ("(SELECT count(*) FROM read_text('/etc/hostname')) > 0", "not a usable predicate"),
    ("(SELECT count(*) FROM glob('/etc/*')) > 0", "not a usable predicate"),
    ("id IN (SELECT 1 FROM read_parquet('/tmp/*.parquet'))", "not a usable predicate"),
    ("id IN (SELECT 1 FROM 'manifest.json')", "not a usable predicate"),
    ("1=1; DROP TABLE images", "not a usable predicate"),
    ("1=1); DROP TABLE images; SELECT (1", "not statements"),
])
def test_where_predicates_that_are_invalid_or_reach_files_are_refused(where, message, built):
    with pytest.raises(UserInputError, match=message) as refused:
        open_index(built).search(vector=QUERY, where=where)
    assert "root:" not in str(refused.value)  # nothing of /etc/passwd leaks into the message
    result = cli("search", "x", "--where", where, "--index", built)
    assert result.exit_code == 2 and "--where" in result.output


def test_a_plain_where_still_filters(built):
    hits = open_index(built).search(vector=QUERY, k=20, where="path LIKE '%/b/%'")
    assert hits and all("/b/" in h.path for h in hits)


# -- nothing is unpickled --------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}))
    return path


def test_weights_files_are_loaded_without_running_pickled_code(tmp_path):
    from mmindex.models.registry import load_encoder

    marker = tmp_path / "pwned"
    weights = evil_pickle(tmp_path / "weights.pt", marker)
    with pytest.raises(ModelError):
        load_encoder(f"mmindex-tiny:{weights}")
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"format": "mmindex-clip-checkpoint/1"}))
    evil_pickle(checkpoint / "model.safetensors", marker)
    with pytest.raises(ModelError):
        load_encoder(str(checkpoint))
    assert not marker.exists()


def test_index_files_are_loaded_without_running_pickled_code(built, tmp_path):
    marker = tmp_path / "pwned"
    evil_pickle(faiss_file(built), marker)
    evil_pickle(first_shard(built, "texts"), marker)
    with pytest.raises(IndexFormatError):
        open_index(built)
    assert not check_index(built).healthy and not marker.exists()


def test_no_source_file_calls_an_unpickler():
    """torch.load only with weights_only=True; no pickle/joblib/dill; np.load without pickle."""
    import ast

    source = Path(__file__).parents[2] / "mmindex"
    offences = []
    for path in source.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if any(n.split(".")[0] in {"pickle", "dill", "joblib", "cloudpickle"}
                       for n in names):
                    offences.append(f"{path.name}:{node.lineno} imports an unpickler")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                call = ast.unparse(node.func)
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if call == "torch.load" and keywords.get("weights_only") != "True":
                    offences.append(f"{path.name}:{node.lineno} torch.load without weights_only")
                if call == "np.load" and keywords.get("allow_pickle", "False") != "False":
                    offences.append(f"{path.name}:{node.lineno} np.load allows pickle")
    assert offences == []


def test_fault_points_cost_nothing_when_unset():
    assert not faults.REGISTRY._actions
    started = time.perf_counter()
    for _ in range(100_000):
        faults.point("store.committed")
    assert time.perf_counter() - started < 0.5
    with pytest.raises(KeyError, match="unknown fault point"):
        faults.REGISTRY.arm("store.no-such-step", faults.crash())



def test_doctor_reads_the_ids_of_an_ivf_index_too(monkeypatch):
    import mmindex.index.vectors

    monkeypatch.setattr(mmindex.index.vectors, "IVF_THRESHOLD", 100)
    ids = np.arange(1000, 1400)
    vectors = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
    built = VectorIndex.build(ids, vectors, 16)
    assert built.kind == "ivf"
    assert np.array_equal(np.sort(_faiss_ids(built)), ids)


def test_a_repaired_faiss_file_is_described_in_the_manifest(built):
    corrupt_faiss(built)
    assert repair_index(built).healthy
    assert store.read_manifest(built).tables["images"].index == {"kind": "flat",
                                                                  "metric": "inner_product"}


def test_an_open_index_still_describes_itself_after_a_commit_collects_its_files(
        fresh_corpus, tmp_path, fast_model):
    run_ingest(fresh_corpus, tmp_path / "idx")
    index = open_index(tmp_path / "idx")
    (fresh_corpus / "a" / "p2.jpg").unlink()  # its shard is rewritten, the old one collected
    run_ingest(fresh_corpus, tmp_path / "idx")
    assert not (tmp_path / "idx" / index.manifest.tables["images"].shards[0]).exists()
    assert index.info().tables["images"].rows == index.manifest.tables["images"].rows
    assert index.search(vector=QUERY, k=3)


# -- a shard damaged in the middle, its size kept (issue 20, D2) -------------------------------
def _synthetic_index(root: Path, rows: int = 300) -> Path:
    """One images shard of `rows` random unit vectors (big enough that its middle is data),
    committed through the writer like an ingest's, with its FAISS file."""
    from mmindex.index.schema import PHOTO_FIELDS, images_schema
    from mmindex.models.encoder import EncoderInfo

    model = EncoderInfo("test-tiny", 64, 32, "synthetic")
    vectors = np.random.default_rng(0).normal(size=(rows, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(rows)
    table = pa.table({"id": ids, "path": [f"/photos/{i}.jpg" for i in ids],
                      "size": ids * 10, "mtime_ns": ids, "sha256": [f"{i:064x}" for i in ids],
                      "width": ids % 90, "height": ids % 70, "format": ["JPEG"] * rows,
                      **{field.name: [None] * rows for field in PHOTO_FIELDS},
                      "page": [None] * rows, "embedding": list(vectors)}, schema=images_schema(64))
    faiss_index = VectorIndex.build(ids, vectors, 64)
    with store.StoreWriter(root) as writer:
        writer.initialise(model)
        for _ in range(rows):
            writer.new_id()
        writer.commit({"images": store.TableChange(add=table)},
                      {"images": faiss_index.to_bytes()}, {"images": faiss_index.describe()})
    return root


def _as_an_older_writer_wrote_it(root: Path, keep_checksum: bool) -> Path:
    """Rewrite the shard as mmindex did before issue 20 (no page CRCs; uncompressed, so
    damage in the middle still parses, as in the issue), with or without a checksum."""
    shard = first_shard(root)
    pq.write_table(pq.read_table(shard), shard, compression="none", use_dictionary=False)
    manifest = json.loads((root / store.MANIFEST).read_text())
    images = manifest["tables"]["images"]
    if keep_checksum:
        images["checksums"] = {images["shards"][0]: store.file_sha256(shard)}
    else:
        images.pop("checksums", None)  # a manifest from before checksums still reads
    (root / store.MANIFEST).write_text(json.dumps(manifest))
    return shard


def _overwrite_the_middle(path: Path, count: int = 2000) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = b"\xff\xff\x7f\x7f" * (count // 4)  # float32 3.4e38
    path.write_bytes(bytes(data))
    assert path.stat().st_size == len(data)


@pytest.mark.parametrize("found_by", ["page CRC", "commit checksum", "values"])
def test_a_shard_damaged_in_the_middle_is_blamed_and_never_installed_in_faiss(tmp_path,
                                                                              found_by):
    root = _synthetic_index(tmp_path / "idx")
    shard = first_shard(root)
    if found_by != "page CRC":
        shard = _as_an_older_writer_wrote_it(root, keep_checksum=found_by == "commit checksum")
    assert check_index(root).healthy
    relative = shard.relative_to(root).as_posix()
    faiss_path = store.read_manifest(root).tables["images"].faiss
    _overwrite_the_middle(shard)

    report = check_index(root)
    blamed = {f.subject for f in report.findings if f.severity == "error"}
    assert not report.healthy and relative in blamed and faiss_path not in blamed, report

    repaired = repair_index(root)
    assert repaired.healthy and any("re-encodes" in r for r in repaired.repaired)
    index = open_index(root)
    vectors = index.vectors("images")
    for row_id in index.rows("images").column("id").to_pylist():
        held = vectors.index.reconstruct(int(row_id))
        assert np.isfinite(held).all() and abs(np.linalg.norm(held) - 1) < 1e-3
    hits = index.search(vector=QUERY, k=10)
    assert all(-1.001 <= h.score <= 1.001 for h in hits)
    assert check_index(root).healthy


def test_every_committed_shard_has_its_checksum_in_the_manifest(built):
    manifest = store.read_manifest(built)
    for name, state in manifest.tables.items():
        assert set(state.checksums or {}) == set(state.shards), name
        for shard in state.shards:
            assert state.checksums[shard] == store.file_sha256(built / shard)
