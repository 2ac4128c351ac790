"""Recall per style and the transfer table (issue 28)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmindex.errors import UserInputError
from mmindex.eval.retrieval import (
    TransferRow,
    metrics_by_style,
    retrieval_metrics,
    trained_styles,
    transfer_table,
)


def perfect_then_scrambled(n_per_style: int, seed: int = 0):
    """Two styles of n images with one text each: style a's texts sit on their images,
    style b's texts point at random directions."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per_style
    images = rng.normal(size=(n, 16))  # (N, 16)
    texts = images.copy()
    texts[n_per_style:] = rng.normal(size=(n_per_style, 16))
    styles = ["a"] * n_per_style + ["b"] * n_per_style
    keys = [(i,) for i in range(n)]
    return images, texts, np.arange(n), keys, styles


def test_each_style_is_scored_alone_as_its_own_split():
    images, texts, text_image, keys, styles = perfect_then_scrambled(30)
    by_style = metrics_by_style(images, texts, text_image, keys, styles)
    assert set(by_style) == {"a", "b"}
    assert by_style["a"].strict.text_to_image.recall_at_1 == 1.0
    assert by_style["b"].strict.text_to_image.recall_at_1 < 0.5
    alone = retrieval_metrics(images[30:], texts[30:], np.arange(30), keys[30:])
    assert by_style["b"] == alone  # ranked among b's own images only
    assert by_style["a"].strict.text_to_image.n_queries == 30


def test_images_without_a_style_are_left_out_and_no_style_gives_nothing():
    images, texts, text_image, keys, styles = perfect_then_scrambled(10)
    partly = ["a"] * 10 + [None] * 10
    assert set(metrics_by_style(images, texts, text_image, keys, partly)) == {"a"}
    assert metrics_by_style(images, texts, text_image, keys, [None] * 20) == {}


def test_texts_follow_their_image_when_an_image_has_several():
    images, _, _, keys, styles = perfect_then_scrambled(10)
    texts = np.concatenate([images, images])  # two texts per image, in two blocks
    text_image = np.concatenate([np.arange(20), np.arange(20)])
    by_style = metrics_by_style(images, texts, text_image, keys, styles)
    assert by_style["b"].strict.text_to_image.n_queries == 20
    assert by_style["b"].strict.text_to_image.recall_at_1 == 1.0


def test_transfer_table_marks_unseen_styles_and_unrecorded_models():
    images, texts, text_image, keys, styles = perfect_then_scrambled(20)
    by_style = metrics_by_style(images, texts, text_image, keys, styles)
    table = transfer_table([
        TransferRow("trained-on-a", ("a",), by_style),
        TransferRow("unknown", None, by_style),
    ])
    lines = table.splitlines()
    assert lines[0] == "| model | trained on | a | b |"
    assert lines[2].startswith("| trained-on-a | a | 1.000 / 1.000 | ")
    assert lines[2].endswith(" * |") and lines[2].count("*") == 1  # b is unseen, a is not
    assert "| unknown | not recorded | 1.000 / 1.000 |" in lines[3] and "*" not in lines[3]
    with pytest.raises(UserInputError, match="make-shapes --style"):
        transfer_table([TransferRow("m", None, {})])


def test_trained_styles_come_from_the_checkpoint_record(tmp_path):
    assert trained_styles(str(tmp_path)) is None
    (tmp_path / "config.json").write_text(
        json.dumps({"finetune": {"trained_styles": ["flat", "textured"]}})
    )
    assert trained_styles(str(tmp_path)) == ("flat", "textured")
    assert trained_styles("test-tiny") is None
