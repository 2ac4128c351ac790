"""mmindex watch: files added, moved and deleted while it runs reach the index in batched
ingests; a move keeps its embedding (nothing re-encoded)."""

import os
import queue
import shutil
import threading
import time

import pytest

from mmindex import IngestConfig, open_index
from mmindex.testing import TINY, photo

pytest.importorskip("watchdog", reason="pip install watchdog")
pytestmark = pytest.mark.slow  # a watcher thread and several ingests: ~1 min on two cores


def names(index_dir):
    return sorted(p.rsplit("/", 1)[-1]
                  for p in open_index(index_dir).rows("images").column("path").to_pylist())


@pytest.fixture
def watching(tmp_path, monkeypatch):
    from mmindex.ingestion.encoders import ImageBatchEncoder
    from mmindex.ingestion.watch import watch

    folder = tmp_path / "photos"
    (folder / "old").mkdir(parents=True)
    for i in range(3):
        photo(64, 48, i).save(folder / "old" / f"p{i}.jpg")
    encoded = []
    original = ImageBatchEncoder.encode
    monkeypatch.setattr(ImageBatchEncoder, "encode",
                        lambda self, p: encoded.append(sum(p["ok"])) or original(self, p))
    summaries, errors, stop = queue.Queue(), [], threading.Event()
    config = IngestConfig(roots=(folder,), index_dir=tmp_path / "idx", model=TINY,
                          precision="fp32")
    thread = threading.Thread(target=watch, args=(config, stop), kwargs={
        "on_ingest": summaries.put, "on_error": errors.append, "settle_s": 0.5})
    thread.start()
    first = summaries.get(timeout=120)
    assert first.added == 3
    yield folder, tmp_path / "idx", summaries, encoded, errors
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def test_adds_moves_and_deletes_reach_the_index(watching):
    folder, index_dir, summaries, encoded, errors = watching
    encoded.clear()
    for i in range(5):  # a burst: one ingest, not five
        photo(64, 48, 10 + i).save(folder / f"new{i}.jpg")
    burst = summaries.get(timeout=120)
    assert (burst.added, sum(encoded)) == (5, 5)
    assert len(names(index_dir)) == 8

    encoded.clear()
    shutil.move(folder / "old" / "p0.jpg", folder / "moved.jpg")
    moved = summaries.get(timeout=120)
    assert (moved.added, moved.removed, sum(encoded)) == (1, 1, 0)  # the embedding is kept
    assert "moved.jpg" in names(index_dir) and "p0.jpg" not in names(index_dir)

    shutil.rmtree(folder / "old")  # a deleted folder
    deleted = summaries.get(timeout=120)
    assert deleted.removed == 2
    assert "p1.jpg" not in names(index_dir) and len(names(index_dir)) == 6
    time.sleep(1.5)  # the index's own commits are not changes: no further ingest
    assert summaries.empty() and errors == []


def test_staleness_settles_and_ignores_the_index_folder(tmp_path):
    from types import SimpleNamespace

    from mmindex.ingestion.watch import _Staleness

    stale = _Staleness(tmp_path / "idx")
    stale.dispatch(SimpleNamespace(src_path=str(tmp_path / "idx" / "manifest.json")))
    stale.dispatch(SimpleNamespace(src_path=str(tmp_path / "a.jpg"), event_type="opened"))
    stale.dispatch(SimpleNamespace(src_path=str(tmp_path / "a.jpg"),
                                   event_type="closed_no_write"))
    assert not stale.due(0.0, 10.0)  # the index writing itself, ingest reading a photo
    stale.dispatch(SimpleNamespace(src_path=str(tmp_path / "a.jpg")))
    assert not stale.due(5.0, 10.0)  # not settled yet
    assert stale.due(0.0, 10.0) and not stale.due(0.0, 10.0)  # once per burst
    stale.dispatch(SimpleNamespace(src_path=str(tmp_path / "b.jpg")))
    assert stale.due(5.0, 0.0)  # a stream that never settles still ingests


def test_a_missing_root_is_the_first_ingests_error(tmp_path):
    from mmindex.errors import UserInputError
    from mmindex.ingestion.watch import watch

    config = IngestConfig(roots=(tmp_path / "nowhere",), index_dir=tmp_path / "idx", model=TINY)
    with pytest.raises(UserInputError, match="nowhere"):
        watch(config, threading.Event())


# A script's background job (`mmindex watch photos &`) starts with SIGINT ignored; the
# shell's `trap '' INT` + exec gives the watch that inheritance whatever pytest's own is.
@pytest.mark.parametrize("stop_signal, inherited", [
    ("SIGINT", ""), ("SIGINT", "trap '' INT; "), ("SIGTERM", "")])
def test_the_cli_prints_one_summary_per_burst_and_stops_on_a_signal(tmp_path, stop_signal,
                                                                     inherited):
    import json
    import shlex
    import signal
    import subprocess
    import sys

    folder = tmp_path / "photos"
    folder.mkdir()
    photo(64, 48, 1).save(folder / "a.jpg")
    command = [sys.executable, "-m", "mmindex.cli", "watch", str(folder), "--index",
               str(tmp_path / "idx"), "--model", "test-tiny", "--settle", "0.5", "--json"]
    # faulthandler: a watch that does not stop is made to print every thread's stack (SIGABRT)
    # so the failure says where it hung, and is then killed rather than left running
    process = subprocess.Popen(
        ["sh", "-c", f"{inherited}exec {shlex.join(command)}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        first = json.loads(process.stdout.readline())
        photo(64, 48, 2).save(folder / "b.jpg")
        second = json.loads(process.stdout.readline())  # JSON Lines: one per ingest
        assert (first["added"], second["added"], second["unchanged"]) == (1, 1, 1)
    finally:
        process.send_signal(getattr(signal, stop_signal))
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, stderr = process.communicate(timeout=30)
            pytest.fail(f"watch did not stop within 60 s of {stop_signal}; its threads:\n"
                        f"{stderr}")
    assert process.returncode == 0 and "Traceback" not in stderr
    assert stderr.rstrip().endswith("stopped")


# The burst, as 16x16 PNGs: measured on this busy two-core machine (load 5-8), all
# 10,000 were indexed by one ingest 23-31 s after the burst; the whole test takes 45-65 s.
BURST = 10_000


def test_a_burst_of_new_files_is_a_few_ingests_and_a_deleted_folder_goes(tmp_path):
    """BURST new files appear at once (renamed in from a folder beside the watched one, so
    the burst takes well under a second); the index must end with every one of them in a
    few batched ingests, not one per file, and then lose a deleted folder's rows."""
    import os

    from PIL import Image

    from mmindex.ingestion.watch import watch

    folder, staging, index_dir = tmp_path / "photos", tmp_path / "staging", tmp_path / "idx"
    folder.mkdir()
    staging.mkdir()
    photo(64, 48, 0).save(folder / "first.jpg")
    for i in range(BURST):  # distinct pixels: identical bytes would still be rows, but be sure
        Image.new("RGB", (16, 16), (i % 256, i // 256 % 256, 7)).save(staging / f"f{i}.png")
    summaries, errors, stop = queue.Queue(), [], threading.Event()
    config = IngestConfig(roots=(folder,), index_dir=index_dir, model=TINY, precision="fp32")
    thread = threading.Thread(target=watch, args=(config, stop), kwargs={
        "on_ingest": summaries.put, "on_error": errors.append, "settle_s": 1.0})
    thread.start()
    try:
        assert summaries.get(timeout=120).added == 1
        started = time.monotonic()
        for half in ("a", "b"):
            (folder / half).mkdir()
        for i in range(BURST):
            os.replace(staging / f"f{i}.png", folder / ("a" if i % 2 else "b") / f"f{i}.png")
        ingests = _ingests_until(summaries, lambda: len(names(index_dir)) == BURST + 1)
        took = time.monotonic() - started
        assert sum(s.added for s in ingests) == BURST, ingests
        assert len(ingests) <= 3, f"{len(ingests)} ingests for a burst of {BURST}"
        print(f"burst of {BURST}: {len(ingests)} ingest(s) in {took:.1f} s")

        shutil.rmtree(folder / "a")
        gone = _ingests_until(summaries, lambda: len(names(index_dir)) == BURST // 2 + 1)
        assert sum(s.removed for s in gone) == BURST // 2 and len(gone) <= 2
        print(f"deleted folder of {BURST // 2}: {len(gone)} ingest(s)")
        assert not any("/a/" in p for p in
                       open_index(index_dir).rows("images").column("path").to_pylist())
        assert errors == []
    finally:
        stop.set()
        thread.join(60)


def _ingests_until(summaries, done, timeout: float = 300.0) -> list:
    """The summaries of the ingests the watch runs until `done()` holds after one of them;
    queue.Empty (a failure) if the watch stops ingesting first, e.g. having missed events."""
    got, deadline = [], time.monotonic() + timeout
    while True:
        got.append(summaries.get(timeout=max(1.0, deadline - time.monotonic())))
        if done():
            return got
