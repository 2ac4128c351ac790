"""GET /api/duplicates: the groups of `mmindex duplicates --json` (an identical copy by hash, a
resized and a re-encoded copy by embedding), bounded by `limit`, each file with a thumbnail
that the thumbnail route serves; a threshold outside (0, 1] is a 400."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")

from fastapi.testclient import TestClient

from mmindex import IngestConfig, ingest
from mmindex.serve import create_app
from mmindex.serve.answers import Answers
from mmindex.testing import TINY, TINY_DUPLICATE_THRESHOLD, write_duplicate_album


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> TestClient:
    root = tmp_path_factory.mktemp("serve-dups")
    write_duplicate_album(root, scenes=4)
    ingest(IngestConfig(roots=(root,), index_dir=root / ".idx", model=TINY, precision="fp32"))
    return TestClient(create_app(root / ".idx", answers=Answers(find_module=lambda: None)))


def _names(group: dict) -> list[str]:
    return sorted(("copies/" if "/copies/" in f["path"] else "") + f["path"].rsplit("/", 1)[-1]
                  for f in group["files"])


def test_groups_identical_and_resized_copies_with_sizes_and_thumbnails(client):
    response = client.get("/api/duplicates", params={"threshold": TINY_DUPLICATE_THRESHOLD})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["images"] == 7 and report["threshold"] == TINY_DUPLICATE_THRESHOLD
    assert [g["kind"] for g in report["groups"]] == ["identical", "near"]
    identical, near = report["groups"]
    assert _names(identical) == ["copies/s1.jpg", "s1.jpg"]
    assert identical["reclaimable_bytes"] == identical["files"][0]["size"] > 0
    assert _names(near) == ["s0.jpg", "s0_q40.jpg", "s0_small.jpg"]
    assert {f["width"] for f in near["files"]} == {160, 80}
    assert report["total_groups"] == 2
    thumb = client.get(near["files"][0]["thumb_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def test_limit_bounds_the_groups_and_total_says_how_many(client):
    report = client.get("/api/duplicates", params={"threshold": TINY_DUPLICATE_THRESHOLD,
                                                   "limit": 1}).json()
    assert [g["kind"] for g in report["groups"]] == ["identical"]
    assert report["total_groups"] == 2
    assert client.get("/api/duplicates", params={"limit": 0}).status_code == 400
    assert client.get("/api/duplicates", params={"limit": 501}).status_code == 400


def test_threshold_1_keeps_only_identical_files(client):
    report = client.get("/api/duplicates", params={"threshold": 1}).json()
    assert [g["kind"] for g in report["groups"]] == ["identical"]


@pytest.mark.parametrize("bad", ["0", "-0.5", "1.5", "nan"])
def test_a_threshold_outside_0_1_is_a_400_with_the_reason(client, bad):
    response = client.get("/api/duplicates", params={"threshold": bad})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert "threshold" in response.json()["message"]
