"""ask's parts that do not depend on the answering model: texts as evidence, the abstain
rule over images and texts, choosing a generator, and the error without one."""

from __future__ import annotations

import pytest

from mmindex import IngestConfig, ingest, open_index
from mmindex.ask.answerers import SUGGESTED, load_answerer, resolve_generator
from mmindex.ask.config import AskConfig
from mmindex.ask.generator import NOT_FOUND, Generator
from mmindex.errors import UserInputError
from mmindex.testing import TINY, photo


class RecordingAnswerer:
    """Answers with the number of images it was shown; keeps every prompt."""

    name = "recording"

    def __init__(self):
        self.prompts: list[tuple[str, int]] = []

    def answer(self, prompt, images, max_new_tokens, on_text=None):
        self.prompts.append((prompt, len(images)))
        text = f"saw {len(images)}"
        if on_text:
            on_text(text)
        return text, 2


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    (root / "photos").mkdir()
    for i in range(3):
        photo(60 + 10 * i, 40, i).save(root / "photos" / f"p{i}.jpg")
    (root / "notes").mkdir()
    (root / "notes" / "trip.txt").write_text("The red bicycle was bought in Utrecht in 2019.")
    (root / "notes" / "recipe.md").write_text("Lentil soup needs an onion and two carrots.")
    ingest(IngestConfig(roots=(root / "photos", root / "notes"), index_dir=root / "idx",
                        model=TINY))
    return open_index(root / "idx")


def test_passages_that_pass_go_into_the_prompt_and_are_cited(index):
    answerer = RecordingAnswerer()
    answer = Generator(index, answerer).ask("where was the bicycle bought?",
                                            AskConfig(k=2, threshold=-1.0, texts=2))
    assert [p.tag for p in answer.passages] == ["T1", "T2"]
    assert {p.path.rsplit("/", 1)[-1] for p in answer.passages} == {"trip.txt", "recipe.md"}
    prompt, shown = answerer.prompts[0]
    assert "[T1] " in prompt and "Utrecht" in prompt and prompt.endswith("bought?")
    assert shown == 1 and len(answer.citations) == 2  # each image alone, passages in each
    assert answer.generator == "recording"


def test_no_texts_means_the_plain_question(index):
    answerer = RecordingAnswerer()
    answer = Generator(index, answerer).ask("a photo", AskConfig(k=1, threshold=-1.0, texts=0))
    assert answer.passages == () and answerer.prompts == [("a photo", 1)]


def test_texts_alone_answer_when_no_image_is_relevant(index):
    answerer = RecordingAnswerer()
    answer = Generator(index, answerer).ask(
        "lentil soup", AskConfig(k=3, threshold=2.0, text_threshold=-1.0))
    assert not answer.abstained and answer.citations == () and answer.passages
    assert answerer.prompts and all(shown == 0 for _, shown in answerer.prompts)
    assert answer.text == "saw 0"


def test_nothing_relevant_abstains_without_asking_the_model(index):
    answerer = RecordingAnswerer()
    answer = Generator(index, answerer).ask("lentil soup", AskConfig(k=3, threshold=2.0))
    assert answer.abstained and answer.text == NOT_FOUND and answerer.prompts == []


def test_without_a_generator_the_error_says_how_to_get_one(index, monkeypatch):
    monkeypatch.delenv("MMINDEX_GENERATOR", raising=False)
    monkeypatch.delenv("MMINDEX_PROJECTOR", raising=False)
    with pytest.raises(UserInputError, match=f"--generator {SUGGESTED}"):
        load_answerer(index)
    monkeypatch.setenv("MMINDEX_GENERATOR", "/some/vlm")
    assert resolve_generator(index) == "/some/vlm"
    assert resolve_generator(index, "org/name") == "org/name"  # named beats configured


def test_a_folder_that_is_no_projector_is_refused_by_name(index, tmp_path):
    with pytest.raises(UserInputError, match=f"no projector checkpoint at {tmp_path}"):
        load_answerer(index, projector=tmp_path)


def test_a_text_threshold_is_compared_with_cosine_scores(index):
    """A threshold is a cosine similarity, so the passages it admits are ranked by the
    vectors, not by the hybrid default whose scores are fused ranks."""
    vector = index.search("lentil soup", target="texts", k=2, mode="vector")
    answer = Generator(index, RecordingAnswerer()).ask(
        "lentil soup", AskConfig(k=3, threshold=2.0, texts=2,
                                 text_threshold=min(h.score for h in vector)))
    assert [(p.id, p.score) for p in answer.passages] == [(h.id, h.score) for h in vector]
