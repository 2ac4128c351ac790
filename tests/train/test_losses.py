"""The contrastive losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmindex.train.losses import clip_loss, gather_features, siglip_loss

EYE = torch.eye(2)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))  # -log(sigmoid(-x))


def test_clip_loss_of_matching_pairs():
    # logits = [[1, 0], [0, 1]]: each row's cross-entropy is log(1 + e^-1), both directions.
    loss = clip_loss(EYE, EYE, torch.tensor(1.0))
    assert loss.item() == pytest.approx(softplus(-1.0), abs=1e-6)


def test_clip_loss_scales_the_logits():
    loss = clip_loss(EYE, EYE, torch.tensor(2.0))
    assert loss.item() == pytest.approx(softplus(-2.0), abs=1e-6)


def test_clip_loss_is_the_mean_of_both_directions():
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # logits = [[1, 1], [0, 0]]. image→text: log 2 for both rows.
    # text→image (the transpose, [[1, 0], [1, 0]]): log(1 + e^-1) and log(1 + e).
    image_to_text = math.log(2)
    text_to_image = (softplus(-1.0) + softplus(1.0)) / 2
    loss = clip_loss(EYE, texts, torch.tensor(1.0))
    assert loss.item() == pytest.approx((image_to_text + text_to_image) / 2, abs=1e-6)


def test_siglip_loss_counts_every_cell_divided_by_batch():
    # logits = I: the diagonal cells cost log(1 + e^-1), the off-diagonal ones log 2.
    loss = siglip_loss(EYE, EYE, torch.tensor(1.0), torch.tensor(0.0))
    assert loss.item() == pytest.approx((2 * softplus(-1.0) + 2 * math.log(2)) / 2, abs=1e-6)


def test_siglip_loss_applies_scale_and_bias():
    # logits = 2I - 1: +1 on positives and -1 on negatives, every cell costs log(1 + e^-1).
    loss = siglip_loss(EYE, EYE, torch.tensor(2.0), torch.tensor(-1.0))
    assert loss.item() == pytest.approx(4 * softplus(-1.0) / 2, abs=1e-6)


def test_losses_fall_as_pairs_align():
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    noise = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    assert clip_loss(images, images, scale) < clip_loss(images, noise, scale)
    assert siglip_loss(images, images, scale, bias) < siglip_loss(images, noise, scale, bias)


def test_losses_refuse_unpaired_features():
    with pytest.raises(ValueError):
        clip_loss(torch.zeros(3, 4), torch.zeros(2, 4), torch.tensor(1.0))


def test_gather_is_identity_for_one_worker():
    features = torch.randn(4, 3, requires_grad=True)
    assert gather_features(features, 0, 1) is features
