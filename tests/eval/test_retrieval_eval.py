import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmindex.data.pairs import Pair, Pairs, load_pairs
from mmindex.data.shapes import COLORS, POSITIONS, SHAPES, SIZES, parse_attributes, parse_caption
from mmindex.errors import ModelError, UserInputError
from mmindex.eval.retrieval import evaluate_retrieval, hit_ranks, retrieval_metrics
from mmindex.models.encoder import EncoderInfo, l2_normalise

SAMPLE_PAIRS = Path(__file__).resolve().parents[2] / "sample_data" / "shapes" / "pairs.parquet"


def unit(*rows) -> np.ndarray:
    return l2_normalise(np.array(rows, dtype=np.float32))


# ---------------------------------------------------------------- the metric on hand-made cases


def test_ranks_and_recalls_of_a_worked_example():
    images = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    # Text 1 describes image 1 but looks more like image 0: its hit comes second.
    texts = unit([1, 0, 0], [0.9, 0.1, 0], [0, 0, 1])
    ranks = hit_ranks(texts, images, np.array([0, 1, 2]), np.arange(3))
    assert ranks.tolist() == [1, 2, 1]
    strict = retrieval_metrics(images, texts, np.array([0, 1, 2])).strict
    assert strict.text_to_image.recall_at_1 == pytest.approx(2 / 3)
    assert strict.text_to_image.recall_at_5 == 1.0
    assert strict.text_to_image.median_rank == 1.0
    assert strict.image_to_text.recall_at_1 == 1.0  # image 1's best text is still text 1


def test_an_image_is_found_when_any_of_its_captions_ranks_high():
    images = unit([1, 0], [0, 1])
    texts = unit([0, 1], [1, 0], [0, 1])  # image 0 has a bad caption and a good one
    scores = retrieval_metrics(images, texts, np.array([0, 0, 1])).strict.image_to_text
    # Image 0: its good caption wins. Image 1: its caption ties with image 0's bad one.
    assert scores.n_queries == 2
    assert scores.recall_at_1 == 0.5


def test_a_collapsed_encoder_scores_nothing_because_ties_count_against_it():
    same = np.ones((20, 8), dtype=np.float32)
    scores = retrieval_metrics(same, same, np.arange(20)).strict
    assert scores.text_to_image.recall_at_10 == 0.0
    assert scores.text_to_image.median_rank == 20.0
    assert scores.image_to_text.recall_at_1 == 0.0


def test_attribute_matching_forgives_images_with_the_same_objects():
    images = unit([1, 0], [1, 0], [0, 1])  # images 0 and 1 hold the same objects
    texts = images.copy()
    metrics = retrieval_metrics(images, texts, np.arange(3), image_keys=["A", "A", "B"])
    assert metrics.strict.text_to_image.recall_at_1 == pytest.approx(1 / 3)
    assert metrics.matched.text_to_image.recall_at_1 == 1.0
    assert metrics.matched.image_to_text.recall_at_1 == 1.0
    assert retrieval_metrics(images, texts, np.arange(3), [None] * 3).matched is None


def test_images_without_captions_are_candidates_but_not_queries():
    images = unit([1, 0], [0, 1], [0.7, 0.7])
    texts = unit([1, 0], [0, 1])
    scores = retrieval_metrics(images, texts, np.array([0, 1])).strict
    assert scores.image_to_text.n_queries == 2
    assert scores.text_to_image.n_queries == 2


def test_broken_inputs_are_refused():
    good = unit([1, 0], [0, 1])
    with pytest.raises(ModelError, match="non-finite"):
        retrieval_metrics(np.full((2, 2), np.nan), good, np.arange(2))
    with pytest.raises(ModelError, match="dim"):
        retrieval_metrics(good, np.ones((2, 3)), np.arange(2))
    with pytest.raises(UserInputError, match="outside"):
        retrieval_metrics(good, good, np.array([0, 2]))


# ---------------------------------------------------------------- whole runs with test encoders


class RandomEncoder:
    """Embeddings that ignore the input: the chance baseline."""

    def __init__(self, dim: int = 64, seed: int = 0):
        self.info = EncoderInfo("test:random", dim, 32, "0" * 16)
        self.rng = np.random.default_rng(seed)

    def preprocess(self, image):
        return torch.zeros(3, 2, 2)

    def encode_images(self, pixels):
        return l2_normalise(self.rng.normal(size=(len(pixels), self.info.dim)))

    def encode_texts(self, texts):
        return l2_normalise(self.rng.normal(size=(len(texts), self.info.dim)))


OBJECT_SLOTS = {o: i for i, o in enumerate(itertools.product(SHAPES, COLORS, SIZES, POSITIONS))}


def bag_of_objects(objects) -> np.ndarray:
    vector = np.zeros(len(OBJECT_SLOTS), dtype=np.float32)  # (576,)
    for o in objects:
        vector[OBJECT_SLOTS[(o.shape, o.color, o.size, o.position)]] = 1.0
    return vector


def pixel_digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


class OracleEncoder:
    """Told the answer: an image by looking its pixels up in the ground truth, a text by
    reading the objects its caption names. Equal scenes get equal embeddings."""

    def __init__(self, pairs: Pairs):
        self.info = EncoderInfo("test:oracle", len(OBJECT_SLOTS), 32, "1" * 16)
        self.by_pixels = {
            pixel_digest(np.asarray(Image.open(p.image).convert("RGB"))): bag_of_objects(
                parse_attributes(p.attributes)
            )
            for p in pairs
        }

    def preprocess(self, image):
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, H, W) uint8

    def encode_images(self, pixels):
        hwc = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
        return l2_normalise(np.stack([self.by_pixels[pixel_digest(p)] for p in hwc]))

    def encode_texts(self, texts):
        return l2_normalise(np.stack([bag_of_objects(parse_caption(t)) for t in texts]))


@pytest.fixture(scope="module")
def sample_pairs() -> Pairs:
    return load_pairs(SAMPLE_PAIRS)  # 300 shapes images, one caption each


def test_a_random_encoder_scores_near_chance(sample_pairs):
    report = evaluate_retrieval(RandomEncoder(), sample_pairs, batch_size=128)
    assert (report.n_images, report.n_texts) == (300, 300)
    for scores in (report.metrics.strict.text_to_image, report.metrics.strict.image_to_text):
        # Chance: recall@k = k / 300, median rank ~150.
        assert scores.recall_at_1 <= 0.02
        assert scores.recall_at_10 <= 0.08
        assert 100 <= scores.median_rank <= 200
    assert report.metrics.matched.text_to_image.recall_at_10 <= 0.1


def test_an_oracle_encoder_scores_near_perfect(sample_pairs):
    report = evaluate_retrieval(OracleEncoder(sample_pairs), sample_pairs, batch_size=64)
    matched, strict = report.metrics.matched, report.metrics.strict
    assert matched.text_to_image.recall_at_1 == 1.0
    assert matched.image_to_text.recall_at_1 == 1.0
    # Strict misses only where another image holds exactly the same objects (a tie).
    assert 0.85 <= strict.text_to_image.recall_at_1 < 1.0
    assert strict.text_to_image.recall_at_10 == 1.0


def test_the_report_serialises_and_lists_undecodable_images(tmp_path, sample_pairs):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows = sample_pairs.rows[:5] + (Pair(broken, "a large red circle on the left"),)
    pairs = Pairs(tmp_path / "pairs.jsonl", rows, skipped=())
    report = evaluate_retrieval(RandomEncoder(), pairs, batch_size=2)
    assert (report.n_images, report.n_texts) == (5, 5)
    assert [s.row for s in report.skipped] == [str(broken)]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["n_skipped"] == 1 and data["model"] == "test:random"
    assert set(data["metrics"]["strict"]) == {"image_to_text", "text_to_image"}
