"""`ask --tiles N` on the tiny trained stack: each retrieved image is shown whole and with its
N tiles that best match the question, each tile a crop of the file."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # trains a tiny projector: ~2 min on the shared CPU

from mmindex import IngestConfig, ingest, open_index
from mmindex.ask.answerers import ProjectorAnswerer
from mmindex.ask.generator import AskConfig, Generator
from mmindex.data.batches import read_view
from mmindex.data.tiles import TileSpec, View
from mmindex.errors import UserInputError
from mmindex.models.llm import TEST_TINY, load_llm
from mmindex.models.vlm import load_vlm
from mmindex.search.tiles import tile_scores_of
from mmindex.testing import TINY
from mmindex.train.projector import TrainProjectorConfig, train_projector


class Recording(ProjectorAnswerer):
    """The real answerer, keeping what each call was shown."""

    shown: list

    def answer(self, prompt, images, max_new_tokens, on_text=None):
        self.shown.append(list(images))
        return super().answer(prompt, images, max_new_tokens, on_text)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from mmindex.data.shapes import write_shapes

    root = tmp_path_factory.mktemp("ask-tiles")
    write_shapes(root / "data", n=6, seed=3, size=32, canvas=96)
    ingest(IngestConfig(roots=(root / "data" / "images",), index_dir=root / "idx", model=TINY,
                        precision="fp32", tiles=TileSpec(4)))
    train_projector(TrainProjectorConfig(
        vision_model=TINY, out_dir=root / "projector", captions=root / "data" / "pairs.parquet",
        questions=root / "data" / "questions.parquet", llm=TEST_TINY, image_tokens=4,
        caption_steps=2, qa_steps=2, batch_size=4))
    index = open_index(root / "idx")
    vlm = load_vlm(root / "projector", load_llm(TEST_TINY), index.encoder.info.fingerprint)
    answerer = Recording(vlm, index.encoder)
    answerer.shown = []
    return Generator(index, answerer)


def test_each_image_is_shown_whole_then_its_best_tiles(stack):
    question = "What color is the circle?"
    answer = stack.ask(question, AskConfig(k=2, threshold=-1.0, max_new_tokens=3, tiles=2,
                                           texts=0))
    assert len(answer.citations) == 2 and len(stack.answerer.shown) == 2
    vector = stack.index.query_vector(question)
    for citation, views in zip(answer.citations, stack.answerer.shown):
        assert str(views[0]) == citation.path and len(views) == 3
        boxes, scores = tile_scores_of(stack.index, vector, citation.id)
        best = [boxes[i] for i in np.argsort(-scores, kind="stable")[:2]]
        assert [v.box for v in views[1:]] == best
        whole = read_view(views[0], 0).require().image
        crop = read_view(views[1], 0).require().image
        x0, y0, x1, y1 = views[1].box
        assert np.array_equal(np.asarray(crop), np.asarray(whole.crop((x0, y0, x1, y1))))


def test_tiles_refused_with_joint_or_a_negative_count(stack):
    with pytest.raises(UserInputError, match="joint"):
        stack.ask("a circle", AskConfig(k=1, threshold=-1.0, tiles=1, joint=True))
    with pytest.raises(UserInputError, match="--tiles"):
        stack.ask("a circle", AskConfig(k=1, threshold=-1.0, tiles=-1))
    assert not read_view(View(stack.answerer.shown[0][0], (0, 0, 500, 10)), 0).ok


def asks_pick(index, image, question, n):
    """The tiles `ask --tiles n` shows of `image` for `question`, worked out from the scores."""
    paths = index.rows("images").to_pydict()
    image_id = dict(zip(map(str, paths["path"]), paths["id"]))[str(image.resolve())]
    boxes, scores = tile_scores_of(index, index.query_vector(question), image_id)
    return [boxes[i] for i in np.argsort(-scores, kind="stable")[:n]]


def test_a_projector_is_trained_on_the_tiles_ask_would_show(stack, tmp_path, monkeypatch):
    import mmindex.train.projector as training
    from mmindex.train.projector import read_samples, with_best_tiles

    data = stack.index.root.parent / "data"
    _, questions, paths = read_samples(None, data / "questions.parquet")
    shown, views = with_best_tiles(questions, paths, stack.index.root, 2)
    assert views[:len(paths)] == paths  # the images keep their rows; tiles come after
    for sample in shown[::5]:
        image = paths[sample.image]
        assert [views[row].box for row in sample.tiles] == \
            asks_pick(stack.index, image, sample.prompt, 2)
        assert all(views[row].path == image for row in sample.tiles)

    seen = []
    real_step = training.train_step
    monkeypatch.setattr(training, "train_step", lambda vlm, features, picked, images, *rest:
                        seen.extend(map(len, images)) or real_step(vlm, features, picked,
                                                                   images, *rest))
    train_projector(TrainProjectorConfig(
        vision_model=TINY, out_dir=tmp_path / "p", questions=data / "questions.parquet",
        llm=TEST_TINY, image_tokens=4, qa_steps=6, batch_size=8, tiles=2,
        index=stack.index.root))
    assert set(seen) == {1, 2, 3}  # the whole image alone, and with one or two tiles


def test_vqa_is_measured_per_tile_budget_on_the_views_ask_shows(stack, monkeypatch):
    import mmindex.eval.vqa as vqa
    from mmindex.eval.config import VqaConfig

    shown = {}
    real = vqa._run_prompts
    monkeypatch.setattr(vqa, "_run_prompts", lambda vlm, features, rows, images, size, **kw:
                        shown.setdefault(len(shown), (rows, images, features)) and
                        real(vlm, features, rows, images, size, **kw))
    data = stack.index.root.parent / "data"
    counted = {}
    report = vqa.run_vqa(VqaConfig(
        questions=data / "questions.parquet", checkpoint=stack.index.root.parent / "projector",
        llm=TEST_TINY, per_kind=2, tiles=(0, 2), index=stack.index.root, precision="fp32",
        batch_size=4), progress=lambda stage, done, total: counted.setdefault(stage, []).append(
            (done, total)))
    assert list(report.modes) == ["0 tiles", "2 tiles"]
    n = report.n_questions  # progress: every batch of every budget, up to all questions
    assert {stage: steps[-1] for stage, steps in counted.items()} == \
        {"0 tiles": (n, n), "2 tiles": (n, n)}
    assert len(counted["0 tiles"]) == -(-n // 4)
    (rows, whole, _), (same_rows, tiled, _) = shown[0], shown[1]
    assert rows == same_rows and all(len(images) == 1 for images in whole)
    assert [images[0] for images in tiled] == [images[0] for images in whole]
    assert all(len(images) == 3 for images in tiled)  # every 96-px canvas has 4 tiles


def test_tiles_for_training_or_measuring_need_an_index_that_holds_the_images(stack, tmp_path):
    from mmindex.search.tiles import question_tiles

    with pytest.raises(UserInputError, match="--index"):
        train_projector(TrainProjectorConfig(vision_model=TINY, out_dir=tmp_path / "p",
                                             questions=tmp_path / "q.parquet", tiles=2))
    with pytest.raises(UserInputError, match="elsewhere.png"):
        question_tiles(stack.index, [(tmp_path / "elsewhere.png", "a circle")], 2)


def test_a_pdf_page_is_shown_whole_then_its_best_tiles_cropped_from_the_rendered_page(
        stack, tmp_path):
    from pathlib import Path

    from mmindex.data.pages import page_item
    from mmindex.testing import write_pdf

    folder = tmp_path / "docs"
    folder.mkdir()
    pdf = write_pdf(folder / "report.pdf", ["Invoice 1041 from ACME", "Terms of payment"])
    ingest(IngestConfig(roots=(folder,), index_dir=tmp_path / "idx", model=TINY,
                        precision="fp32", tiles=TileSpec(4)))
    index = open_index(tmp_path / "idx")
    answerer = Recording(stack.answerer.vlm, index.encoder)  # the stack's projector, same CLIP
    answerer.shown = []
    question = "What is the total of the invoice?"
    answer = Generator(index, answerer).ask(question, AskConfig(
        k=2, threshold=-1.0, max_new_tokens=3, tiles=2, texts=0))
    assert sorted(c.page for c in answer.citations) == [1, 2]
    side = index.manifest.model.image_size
    vector = index.query_vector(question)
    for citation, views in zip(answer.citations, answerer.shown):
        assert views[0] == Path(page_item(pdf, citation.page)) and len(views) == 3
        boxes, scores = tile_scores_of(index, vector, citation.id)
        best = [boxes[i] for i in np.argsort(-scores, kind="stable")[:2]]
        assert [v.box for v in views[1:]] == best
        page = read_view(views[0], side).require()  # the page as ingest rendered it
        row = index.row("images", citation.id)
        assert (page.width, page.height) == (row["width"], row["height"])
        for view in views[1:]:
            crop = read_view(view, side).require().image
            assert np.array_equal(np.asarray(crop), np.asarray(page.image.crop(view.box)))
            # a generator with a larger input: the page rendered larger, the box scaled to it
            larger = read_view(view, 2 * side).require()
            x0, y0, x1, y1 = view.box
            assert (larger.width, larger.height) == (x1 - x0, y1 - y0)
            assert abs(larger.image.width - 2 * (x1 - x0)) <= 2
