"""`ask` with pretrained vision-language models (tiny LLaVA and Idefics3 built from configs and
loaded back by folder, the path a hub id takes with the internet): the CLI and the API."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from mmindex import IngestConfig, ingest
from mmindex.cli import app
from mmindex.testing import TINY, photo, write_tiny_idefics3, write_tiny_llava

runner = CliRunner()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    (root / "photos").mkdir()
    for i in range(4):
        photo(64 + 16 * i, 48, 300 + i).save(root / "photos" / f"p{i}.jpg")
    (root / "notes.txt").write_text("The photos were taken at the harbour in May.")
    ingest(IngestConfig(roots=(root / "photos", root / "notes.txt"), index_dir=root / "idx",
                        model=TINY))
    models = {"llava": write_tiny_llava(root / "llava"),
              "idefics3": write_tiny_idefics3(root / "idefics3")}
    return root / "idx", models


def ask(index, generator, *extra):
    result = runner.invoke(app, ["ask", "what is in the photo?", "--index", str(index),
                                 "--generator", str(generator), "--threshold", "-1",
                                 "-k", "2", "--max-new-tokens", "6", *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_each_image_answers_alone_with_citations(collection, family):
    index, models = collection
    answer = json.loads(ask(index, models[family], "--json").stdout)
    assert answer["generator"] == str(models[family]) and not answer["abstained"]
    assert [c["tag"] for c in answer["citations"]] == [1, 2]
    assert answer["text"].split("\n") == [f"[{c['tag']}] {c['answer']}"
                                          for c in answer["citations"]]
    assert answer["passages"] and answer["passages"][0]["path"].endswith("notes.txt")
    assert answer["new_tokens"] > 0


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_joint_answers_once_and_the_terminal_streams_it(collection, family):
    index, models = collection
    joint = json.loads(ask(index, models[family], "--joint", "--json").stdout)
    assert all(c["answer"] is None for c in joint["citations"]) and len(joint["citations"]) == 2
    shown = ask(index, models[family], "--joint").stdout
    assert shown.startswith(joint["text"])  # the same greedy answer, streamed to the terminal
    assert "  [1] " in shown and "  [T1] " in shown and "notes.txt" in shown


def test_caption_with_a_pretrained_model(collection):
    index, models = collection
    image = next((index.parent / "photos").glob("*.jpg"))
    result = runner.invoke(app, ["caption", str(image), "--index", str(index),
                                 "--generator", str(models["llava"])])
    assert result.exit_code == 0 and result.stdout.strip(), result.output


def test_an_uncached_hub_model_offline_is_one_line_and_fast(collection, monkeypatch):
    index, _ = collection
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    result = runner.invoke(app, ["ask", "a photo", "--index", str(index), "--threshold", "-1",
                                 "--generator", "some-org/not-downloaded-vlm"])
    assert time.monotonic() - started < 10
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert "some-org/not-downloaded-vlm" in result.output


def test_the_api_answers_and_streams_with_a_pretrained_model(collection):
    from fastapi.testclient import TestClient

    from mmindex.serve import create_app
    from mmindex.serve.answers import Answers

    index, models = collection
    client = TestClient(create_app(index, answers=Answers(generator=str(models["idefics3"]))))
    assert client.get("/api/status").json()["ask_available"] is True
    body = client.post("/api/ask", json={"question": "what is here?", "k": 2}).json()
    assert len(body["citations"]) == 2 and body["text"].startswith("[1] ")
    with client.stream("POST", "/api/ask", json={"question": "what is here?", "k": 2},
                       headers={"Accept": "text/event-stream"}) as response:
        events = [line for line in response.iter_lines() if line.startswith("event:")]
    assert "event: token" in events and events[-1] == "event: answer"
