"""The API and the page's filters speak the EXIF columns: taken (a date), camera, lens,
latitude, longitude; hits carry them; `sort` orders by them."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")

from fastapi.testclient import TestClient

from mmindex import IngestConfig, ingest
from mmindex.errors import UserInputError
from mmindex.serve import create_app
from mmindex.serve.answers import Answers
from mmindex.serve.filters import compile_filters
from mmindex.testing import TINY, photo, photo_exif

ALBUM = {"beach.jpg": photo_exif("2024:07:01 09:00:00", "Google", "Pixel 7", gps=(43.7, 7.26)),
         "city.jpg": photo_exif("2024:05:20 18:30:00", "Google", "Pixel 7"),
         "hills.jpg": photo_exif("2024:08:11 12:00:00", "Canon", "Canon EOS R5"),
         "scan.jpg": None}


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> TestClient:
    root = tmp_path_factory.mktemp("exif-album")
    for i, (name, exif) in enumerate(ALBUM.items()):
        photo(64, 48, 20 + i).save(root / name, **({"exif": exif} if exif else {}))
    ingest(IngestConfig(roots=(root,), index_dir=root / ".idx", model=TINY, precision="fp32"))
    return TestClient(create_app(root / ".idx", answers=Answers(find_module=lambda: None)))


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["path"].rsplit("/", 1)[-1] for h in response.json()["hits"]]


def test_filter_on_date_and_camera(client):
    params = {"q": "a photo", "k": 4, "filter": ["taken:ge:2024-06-01", "camera:contains:Pixel"]}
    response = client.get("/api/search", params=params)
    assert names(response) == ["beach.jpg"]
    [hit] = response.json()["hits"]
    assert (hit["taken"], hit["camera"]) == ("2024-07-01T09:00:00", "Google Pixel 7")
    assert hit["latitude"] == pytest.approx(43.7, abs=1e-6)


def test_sort_newest_first_unknown_last(client):
    response = client.get("/api/search", params={"q": "a photo", "k": 4, "sort": "-taken"})
    assert names(response) == ["hills.jpg", "beach.jpg", "city.jpg", "scan.jpg"]


@pytest.mark.parametrize("params,message", [
    ({"filter": "taken:ge:last summer"}, "not a date"),
    ({"filter": "taken:contains:2024"}, "taken is a date"),
    ({"sort": "when"}, "cannot sort by 'when'"),
])
def test_bad_dates_and_sorts_are_400_naming_the_value(client, params, message):
    response = client.get("/api/search", params={"q": "a photo", **params})
    assert response.status_code == 400 and message in response.json()["message"]


def test_a_date_value_cannot_carry_sql():
    assert compile_filters("images", ["taken:lt:2024-06-01"]) == \
        "taken < TIMESTAMP '2024-06-01 00:00:00'"
    with pytest.raises(UserInputError, match="not a date"):
        compile_filters("images", ["taken:ge:2024-01-01' OR 1=1 --"])
