"""Augmentation in `finetune` (issue 28): the flag, the pixels each step sees, and what
the checkpoint records (the augmentation and the styles trained on)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmindex.data.augment import augment_policy
from mmindex.data.pairs import load_pairs
from mmindex.data.shapes import write_shapes
from mmindex.errors import UserInputError
from mmindex.models.registry import load_encoder
from mmindex.train.config import FinetuneConfig
from mmindex.train.data import AugmentedPixelSource, PixelSource
from mmindex.train.checkpoints import merge_styles, pair_styles, recorded_styles
from mmindex.train.finetune import finetune


@pytest.fixture(scope="module")
def styled(tmp_path_factory) -> Path:
    """40 small shapes images, flat and textured in turn."""
    out = tmp_path_factory.mktemp("styled")
    write_shapes(out, 40, seed=6, size=32, style="flat,textured")
    return out / "pairs.parquet"


def config(pairs: Path, out: Path, **overrides) -> FinetuneConfig:
    base = {"pairs": pairs, "out_dir": out, "model": "test-tiny", "epochs": 1,
            "batch_size": 16, "val_fraction": 0.25, "precision": "fp32"}
    return FinetuneConfig(**(base | overrides))


def test_an_unknown_augment_level_is_refused_before_any_work(styled, tmp_path):
    with pytest.raises(UserInputError, match="'heavy'.*none, light, strong"):
        config(styled, tmp_path / "run", augment="heavy")
    assert not (tmp_path / "run").exists()


def test_augmented_batches_depend_on_seed_step_and_row_only(styled):
    encoder = load_encoder("test-tiny")
    rows = load_pairs(styled).rows
    source = AugmentedPixelSource(encoder, rows, augment_policy("strong"), seed=0)
    assert source.usable() == list(range(len(rows)))
    whole = source.batch([0, 1, 2, 3], step=5)  # (4, 3, H, W)
    assert torch.equal(whole, source.batch([0, 1, 2, 3], step=5))
    # a worker holding half the batch sees exactly its rows' pixels
    assert torch.equal(whole[2:], source.batch([2, 3], step=5))
    assert not torch.equal(whole, source.batch([0, 1, 2, 3], step=6))  # a new step, new views
    plain = PixelSource(encoder, [r.image for r in rows]).batch([0, 1, 2, 3])
    assert whole.shape == plain.shape and not torch.equal(whole, plain)


def test_style_records_merge_and_unknown_stays_unknown(tmp_path):
    assert pair_styles(("flat", "textured", "flat")) == ["flat", "textured"]
    assert pair_styles(("flat", None)) is None  # one unknown pair: do not claim a style set
    assert merge_styles(["flat"], ["textured"]) == ["flat", "textured"]
    assert merge_styles(None, ["textured"]) is None
    assert recorded_styles(None) == []  # random weights have seen nothing
    assert recorded_styles("test-tiny") is None
    (tmp_path / "config.json").write_text(json.dumps({"finetune": {"trained_styles": ["flat"]}}))
    assert recorded_styles(str(tmp_path)) == ["flat"]


@pytest.mark.slow
def test_checkpoint_records_augmentation_and_every_style_trained_on(styled, tmp_path):
    first = tmp_path / "first"
    during = []  # each epoch's checkpoint says it too, not only the finished one

    def read_epoch_record(metrics):
        during.append(json.loads((first / "config.json").read_text())["finetune"])

    finetune(config(styled, first, augment="light"), on_epoch=read_epoch_record)
    assert during[0]["epoch"] == 1 and during[0]["augment"]["level"] == "light"
    assert during[0]["styles"] == ["flat", "textured"]
    record = json.loads((first / "config.json").read_text())["finetune"]
    assert record["augment"]["level"] == "light" and record["augment"]["min_crop_side"] == 0.9
    assert record["styles"] == ["flat", "textured"]
    assert record["trained_styles"] is None  # test-tiny's own training is not recorded
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["config"]["augment"] == "light"
    rotated = tmp_path / "rotated"
    write_shapes(rotated, 32, seed=7, size=32, style="rotated")
    second = tmp_path / "second"
    finetune(config(rotated / "pairs.parquet", second, model=str(first)))
    record = json.loads((second / "config.json").read_text())["finetune"]
    assert record["augment"] == {"level": "none"} and record["styles"] == ["rotated"]
    assert record["trained_styles"] is None  # first's base was unknown, so the sum is too
    # from random weights the record is complete: the styles are exactly those trained on
    scratch = tmp_path / "scratch"
    finetune(config(styled, scratch, model=None, from_scratch="mmindex-tiny", augment="strong"))
    third = tmp_path / "third"
    finetune(config(rotated / "pairs.parquet", third, model=str(scratch)))
    record = json.loads((third / "config.json").read_text())["finetune"]
    assert record["trained_styles"] == ["flat", "rotated", "textured"]
    assert np.isfinite(load_encoder(str(third)).encode_texts(["a small red circle"])).all()
