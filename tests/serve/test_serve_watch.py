"""`serve --watch`: the folder watcher runs under the app, a photo added to the watched folder
is found by a search soon after, and the watcher stops when the app shuts down."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("watchdog", reason="pip install watchdog")

from fastapi.testclient import TestClient

from mmindex import IngestConfig, ingest
from mmindex.serve import create_app
from mmindex.serve.answers import Answers
from mmindex.testing import TINY, photo

pytestmark = pytest.mark.slow  # a watcher thread and two ingests: ~20 s on two cores


def _wait_until(check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s")


def _found(client, name: str) -> bool:
    response = client.get("/api/search", params={"q": "a photo", "k": 20})
    return response.status_code == 200 and any(
        h["path"].endswith("/" + name) for h in response.json()["hits"])


def test_a_photo_added_to_a_watched_folder_is_found_and_the_watch_stops_with_the_app(tmp_path):
    folder, index_dir = tmp_path / "photos", tmp_path / "idx"
    folder.mkdir()
    for i in range(2):
        photo(64, 48, i).save(folder / f"p{i}.jpg")
    ingest(IngestConfig(roots=(folder,), index_dir=index_dir, model=TINY, precision="fp32"))
    app = create_app(index_dir, answers=Answers(find_module=lambda: None),
                     watch_roots=[folder], watch_settle_s=0.3)
    watcher = app.state.mmindex.watch
    with TestClient(app) as client:
        # the watch's first ingest finds nothing new; then the folder changes
        _wait_until(lambda: client.get("/api/status").json()["watch"]["ingests"] >= 1)
        assert not _found(client, "new.jpg")
        photo(64, 48, 7).save(folder / "new.jpg")
        _wait_until(lambda: _found(client, "new.jpg"))
        status = client.get("/api/status").json()["watch"]
        assert status["running"] and status["error"] is None
        assert status["roots"] == [str(folder)] and status["last"]["added"] == 1
        assert watcher.alive
    assert not watcher.alive  # the lifespan's shutdown stopped it
    photo(64, 48, 8).save(folder / "later.jpg")
    time.sleep(1.0)  # a stopped watch ingests nothing more
    with TestClient(create_app(index_dir, answers=Answers(find_module=lambda: None))) as client:
        assert not _found(client, "later.jpg") and _found(client, "new.jpg")


def test_without_watch_roots_status_has_no_watch(tmp_path):
    client = TestClient(create_app(tmp_path / "none", answers=Answers(find_module=lambda: None)))
    assert client.get("/api/status").json().get("watch") is None
