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
